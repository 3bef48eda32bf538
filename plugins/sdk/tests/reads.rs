//! `Plugin::reads`: the `hooks` glue fetches from the host only the records a hook reads, and
//! hands it empty ones for the others. Natively the fetches are unreachable (they panic), so
//! a hook that gets its records without a panic fetched none.

use corvid_plugin_sdk::runtime::{with_facts, Stamp};
use corvid_plugin_sdk::*;

struct RcptOnly;

impl Plugin for RcptOnly {
    const NAME: &'static str = "rcpt-only";
    const STAGES: &'static [Stage] = &[Stage::Rcpt];

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(RcptOnly)
    }

    fn reads(&self, _stage: Stage) -> Reads {
        Reads::NONE
    }
}

struct ReadsAll;

impl Plugin for ReadsAll {
    const NAME: &'static str = "reads-all";
    const STAGES: &'static [Stage] = &[Stage::Mail];

    fn new(_config: &Config) -> Result<Self, String> {
        Ok(ReadsAll)
    }
}

/// Numbers of records the host holds (no recipient: natively it could not be fetched).
fn stamp() -> Stamp {
    Stamp {
        lease: 1,
        connection: 7,
        envelope: 8,
        recipient: 0,
    }
}

#[test]
fn records_a_hook_does_not_read_are_not_fetched_and_are_empty() {
    testing::reset();
    let seen = with_facts::<RcptOnly, _>(stamp(), Stage::Rcpt, |_, conn, env, rcpt| {
        (
            conn.session_id,
            conn.client_ip.clone(),
            env.sender.is_none(),
            rcpt.is_none(),
        )
    });
    assert_eq!(seen, (0, String::new(), true, true));
}

#[test]
#[should_panic(expected = "context is only read in a WebAssembly build")]
fn the_default_reads_every_record() {
    testing::reset();
    with_facts::<ReadsAll, _>(stamp(), Stage::Mail, |_, _, _, _| ());
}
