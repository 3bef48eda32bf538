//! The client's timeouts (`[delivery.timeouts]`).

use serde::Deserialize;
use std::time::Duration;

/// Client timeouts. The defaults are RFC 5321 4.5.3.2's minimums.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// TCP connect (not in the RFC; Postfix's `smtp_connect_timeout` is 30s).
    #[serde(with = "humantime_serde")]
    pub connect: Duration,
    /// 4.5.3.2.1 initial 220 message: 5 minutes.
    #[serde(with = "humantime_serde")]
    pub greeting: Duration,
    /// EHLO, STARTTLS, AUTH, RSET, QUIT replies (4.5.3.2.2's 5 minutes for MAIL, reused).
    #[serde(with = "humantime_serde")]
    pub command: Duration,
    /// 4.5.3.2.2 MAIL and 4.5.3.2.3 RCPT: 5 minutes.
    #[serde(with = "humantime_serde")]
    pub envelope: Duration,
    /// 4.5.3.2.4 DATA initiation: 2 minutes.
    #[serde(with = "humantime_serde")]
    pub data_init: Duration,
    /// 4.5.3.2.5 data block: 3 minutes for each write of content.
    #[serde(with = "humantime_serde")]
    pub data_block: Duration,
    /// 4.5.3.2.6 DATA termination: 10 minutes for the reply to the final dot.
    #[serde(with = "humantime_serde")]
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Timeouts {
            connect: Duration::from_secs(30),
            greeting: min(5),
            command: min(5),
            envelope: min(5),
            data_init: min(2),
            data_block: min(3),
            data_end: min(10),
        }
    }
}
