//! The WASI context of a plugin's store: no files, environment, arguments or network, and
//! clocks and randomness only as the manifest grants them.
//!
//! - Without `clock`, both WASI clocks are frozen at the Unix epoch (wall clock 0, monotonic
//!   clock 0), like the `clock` import's `now-ms`, so a plugin cannot time anything. With
//!   `clock` they read the clock the embedder installed ([`crate::clock::install`]: `corvid
//!   plugin test`'s scripted clock), else the system's.
//! - Without `random`, both WASI random sources (`random` and `insecure`, and the insecure
//!   seed) come from a ChaCha generator seeded from the plugin's name and the instance's
//!   serial number: deterministic (a reload or restart replays the same sequences), never the
//!   operating system's entropy.

use crate::manifest::Capability;
use crate::state::PluginEnv;
use rand::{Rng as _, SeedableRng};
use sha2::{Digest, Sha256};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx};

/// A clock stopped at the Unix epoch.
struct Frozen;

impl HostWallClock for Frozen {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }

    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for Frozen {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }

    fn now(&self) -> u64 {
        0
    }
}

/// The seed of instance number `serial` of the plugin called `name`.
pub(crate) fn seed(name: &str, serial: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"corvid-plugin-random\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(serial.to_le_bytes());
    h.finalize().into()
}

/// The WASI context for one instance (`serial` numbers the plugin's instances).
pub(crate) fn wasi(env: &PluginEnv, serial: u64) -> WasiCtx {
    let mut b = WasiCtx::builder();
    b.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if !env.grants(Capability::Clock) {
        b.wall_clock(Frozen).monotonic_clock(Frozen);
    } else if let Some(clock) = crate::clock::installed() {
        b.wall_clock(crate::clock::Wasi(clock.clone()))
            .monotonic_clock(crate::clock::Wasi(clock.clone()));
    }
    if !env.grants(Capability::Random) {
        let mut seeded = rand::rngs::StdRng::from_seed(seed(&env.name, serial));
        let insecure = rand::rngs::StdRng::from_seed(seed(&env.name, !serial));
        let insecure_seed = u128::from(seeded.next_u64()) << 64 | u128::from(seeded.next_u64());
        b.secure_random(seeded)
            .insecure_random(insecure)
            .insecure_random_seed(insecure_seed);
    }
    b.build()
}
