//! The script's clock: `[clock] start` and the steps' `advance`, and in captures the time each
//! hook ran (`at`), installed as the plugins' clock (the `clock` import, WASI's clocks) and
//! the kv store's.

use anyhow::{bail, Result};
use corvid_plugin_host::clock::{Clock, ScriptedClock, SystemClock};
use humantime_serde::re::humantime;
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// `[clock] start = "2026-12-07T13:00:00Z"`: the plugin's clocks stand at `start` until a
/// step's `advance` moves them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    pub start: Instant,
}

/// An RFC 3339 time, quoted or as a TOML datetime.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Instant {
    Text(String),
    Toml(toml::value::Datetime),
}

impl Instant {
    /// Time since the Unix epoch.
    pub fn since_epoch(&self) -> Result<Duration> {
        let text = match self {
            Instant::Text(t) => t.clone(),
            Instant::Toml(d) => d.to_string(),
        };
        let Ok(t) = humantime::parse_rfc3339_weak(&text) else {
            bail!("clock.start: {text:?} is not an RFC 3339 time (2026-12-07T13:00:00Z)")
        };
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Ok(d),
            Err(_) => bail!("clock.start: {text:?} is before 1970"),
        }
    }
}

/// The script's clock: scripted (and installed as the plugins' clock) with `[clock]`, the
/// system's without.
pub enum ScriptClock {
    Scripted(Arc<ScriptedClock>),
    System,
}

impl ScriptClock {
    /// Installs the script's clock for the plugins, in place of an earlier script's (a
    /// replay of several captures runs each on its own clock); without `[clock]`, the
    /// system's.
    pub fn new(section: Option<&ClockSection>) -> Result<ScriptClock> {
        let Some(c) = section else {
            corvid_plugin_host::clock::install(None);
            return Ok(ScriptClock::System);
        };
        let clock = Arc::new(ScriptedClock::new(c.start.since_epoch()?));
        corvid_plugin_host::clock::install(Some(clock.clone()));
        Ok(ScriptClock::Scripted(clock))
    }

    pub fn shared(&self) -> Arc<dyn Clock> {
        match self {
            ScriptClock::Scripted(c) => c.clone(),
            ScriptClock::System => Arc::new(SystemClock),
        }
    }

    /// A step's `advance`; `Err` without `[clock]` (the system clock cannot be moved).
    pub fn advance(&self, by: Option<Duration>) -> Result<()> {
        match (self, by) {
            (_, None) => Ok(()),
            (ScriptClock::Scripted(c), Some(by)) => {
                c.advance(by);
                Ok(())
            }
            (ScriptClock::System, Some(_)) => {
                bail!("`advance` needs a scripted clock: add [clock] start = \"...\"")
            }
        }
    }

    /// The time a hook ran in the server (`at`, milliseconds since the Unix epoch, written
    /// by `[record]`): the clock is set to it, whatever `advance` made of it.
    pub fn at(&self, ms: Option<u64>) -> Result<()> {
        match (self, ms) {
            (_, None) => Ok(()),
            (ScriptClock::Scripted(c), Some(ms)) => {
                c.set(Duration::from_millis(ms));
                Ok(())
            }
            (ScriptClock::System, Some(_)) => {
                bail!("`at` needs a scripted clock: add [clock] start = \"...\"")
            }
        }
    }
}

/// When the hooks of a session ran in the server, in milliseconds since the Unix epoch
/// (`[record]` writes them; a replay sets the clock to each before its hook). `rcpt` has one
/// per `rcpt_to` entry.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HookTimes {
    pub connect: Option<u64>,
    pub helo: Option<u64>,
    pub auth: Option<u64>,
    pub mail: Option<u64>,
    pub rcpt: Vec<u64>,
    pub data: Option<u64>,
}

/// Held by the unit tests that install a scripted clock or read the plugins' clock: it is
/// process-wide, and the test harness runs tests in parallel threads.
#[cfg(test)]
pub(crate) static GLOBAL_CLOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_parse_quoted_or_as_toml_datetimes() {
        #[derive(Deserialize)]
        struct S {
            clock: ClockSection,
        }
        let quoted: S = toml::from_str("clock.start = \"2026-12-07T13:00:00Z\"").unwrap();
        let bare: S = toml::from_str("clock.start = 2026-12-07T13:00:00Z").unwrap();
        let want = Duration::from_secs(1_796_648_400);
        assert_eq!(quoted.clock.start.since_epoch().unwrap(), want);
        assert_eq!(bare.clock.start.since_epoch().unwrap(), want);
        let bad: S = toml::from_str("clock.start = \"tomorrow\"").unwrap();
        let e = bad.clock.start.since_epoch().unwrap_err().to_string();
        assert!(e.contains("not an RFC 3339 time"), "{e}");
        assert!(toml::from_str::<S>("clock.begin = \"2026-12-07T13:00:00Z\"").is_err());
    }

    #[test]
    fn a_hook_time_sets_the_clock_after_an_advance() {
        let _clock = GLOBAL_CLOCK.lock().unwrap_or_else(|p| p.into_inner());
        let section: ClockSection = toml::from_str("start = \"2026-12-07T13:00:00Z\"").unwrap();
        let clock = ScriptClock::new(Some(&section)).unwrap();
        let shared = clock.shared();
        clock.advance(Some(Duration::from_secs(60))).unwrap();
        clock.at(Some(1_796_648_402_500)).unwrap();
        assert_eq!(shared.wall(), Duration::from_millis(1_796_648_402_500));
        clock.at(None).unwrap();
        assert_eq!(shared.wall(), Duration::from_millis(1_796_648_402_500));
        // The plugins read the script's clock (now_ms is the clock import's answer).
        assert_eq!(corvid_plugin_host::clock::now_ms(), 1_796_648_402_500);
        let system = ScriptClock::new(None).unwrap();
        assert!(system.at(Some(1)).is_err());
        assert!(
            corvid_plugin_host::clock::now_ms() > 1_796_648_402_500,
            "the system's again"
        );
    }
}
