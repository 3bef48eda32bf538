//! Flow control at MAIL (`crate::flow`): before the 250, so that no data already accepted
//! is at risk, the reply waits while the queue's backlog is over `flow_delay_backlog` and is
//! a 451 over `flow_hard_backlog`.

use super::{Flow, Session};
use crate::flow::FlowLevel;
use corvid_types::Reply;

impl Session {
    /// `Some(flow)` when MAIL was refused (the reply was sent); `None` to go on, perhaps
    /// after a wait.
    pub(super) async fn flow_control(&mut self) -> Option<Flow> {
        let shared = &self.shared;
        let backlog = shared.services.intake.backlog();
        match shared.flow_gate.assess(&shared.flow, backlog) {
            FlowLevel::Open => None,
            FlowLevel::Delayed => {
                // Bounded by the command timeout: the client waits for this reply as for
                // any other (RFC 5321 4.5.3.2.7 gives it at least 5 minutes for MAIL).
                let delay = shared.flow.delay.min(shared.limits.command_timeout);
                let abort = shared.abort.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = abort.cancelled() => {}
                }
                None
            }
            // RFC 5321 4.2.3 / 4.5.3.1.10: 451 local error, try later; RFC 3463 X.3.1 mail
            // system full. A transient reply: the client keeps the message and retries, and
            // the session goes on (RSET, QUIT, a later MAIL).
            FlowLevel::Refused => Some(self.fail(Reply::new(
                451,
                "4.3.1",
                "Insufficient system resources, try again later",
            ))),
        }
    }
}
