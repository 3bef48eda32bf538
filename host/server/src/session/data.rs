//! A complete message from DATA or BDAT (received in `transfer.rs`): checks, the data
//! policy, and queueing it.

use super::{Disposition, Flow, Session, Step};
use crate::received::received_header;
use corvid_smtp::DataOutcome;
use corvid_types::{MessageView, Reply, SubmitOptions, Verdict};
use tracing::{info, warn};

impl Session {
    pub(super) async fn finish_message(&mut self, outcome: DataOutcome) -> Step {
        match outcome {
            DataOutcome::TooBig => {
                self.reset_transaction();
                corvid_types::metrics::observer().transaction(&self.conn.listener, &too_big());
                Ok(self.fail(too_big()))
            }
            DataOutcome::BareLineEnding => {
                self.reset_transaction();
                // RFC 5321 2.3.8: CR and LF only as CRLF. Accepting bare ones is what SMTP
                // smuggling exploits (CVE-2023-51764), so the whole message is refused.
                let r = Reply::new(
                    554,
                    "5.5.2",
                    "Message refused: bare CR or LF in content (RFC 5321 2.3.8)",
                );
                corvid_types::metrics::observer().transaction(&self.conn.listener, &r);
                Ok(self.fail(r))
            }
            DataOutcome::Complete(content) => self.accept_message(content).await,
        }
    }

    async fn accept_message(&mut self, mut content: Vec<u8>) -> Step {
        // The content stays charged to the memory budget until it is queued or dropped.
        let mut charge = self.tx.as_mut().and_then(|t| t.charge.take());
        let Some(tx) = self.tx.as_ref() else {
            return Ok(self.fail(Reply::new(503, "5.5.1", "No transaction")));
        };
        let mut env = tx.envelope.clone();
        let mut counted = tx.counted;
        let mut disposition = tx.disposition.clone();
        let started = tx.started;
        let limits = &self.shared.limits;
        let checked =
            super::header_limits::refusal(&content, limits.max_header_fields, limits.max_hops);
        if let Some(r) = checked.or_else(|| self.header_from_not_owned(&content)) {
            self.log_transaction(&env, None, content.len(), &r, started);
            self.reset_transaction();
            return Ok(self.fail(r));
        }
        if !self.charge_auth_copy(charge.as_mut(), content.len()) {
            let r = memory_full();
            self.log_transaction(&env, None, content.len(), &r, started);
            self.reset_transaction();
            return Ok(self.fail(r));
        }
        let auth = self.auth_at_data(&mut content).await;
        let auth_default = auth.as_ref().map(|(default, _)| default.clone());
        let decision = self
            .policy
            .data(&self.conn, &env, MessageView { content: &content })
            .await;
        // A refusal discards the modifications; they apply only to a message accepted.
        match super::auth_checks::with_default(decision.verdict, auth_default) {
            Verdict::Reject(r) | Verdict::Tempfail(r) => {
                self.log_transaction(&env, None, content.len(), &r, started);
                self.reset_transaction();
                return Ok(self.fail(r));
            }
            Verdict::Disconnect(r) => {
                self.log_transaction(&env, None, content.len(), &r, started);
                self.reset_transaction();
                self.push(&r);
                return Ok(Flow::Close);
            }
            Verdict::Discard => disposition = Some(Disposition::Discard),
            Verdict::Quarantine(why) => disposition = Some(Disposition::Quarantine(why)),
            Verdict::Continue | Verdict::Accept => {}
        }
        let target = super::envelope_mods::Target {
            envelope: &mut env,
            counted: &mut counted,
        };
        let refused_adds = self.apply_envelope_mods(target, &decision.modifications);
        super::modify::apply_to_content(&mut content, &decision.modifications);
        if env.recipients.is_empty() && refused_adds > 0 {
            // Every recipient left is one a policy added and the relay rules refused (e.g. an
            // alias to another domain for a client without relay rights): refuse the message
            // rather than answer 250 and deliver it nowhere (RFC 5321 7.1, RFC 3463 5.7.1).
            let r = Reply::new(
                550,
                "5.7.1",
                "Relaying denied for the recipients a policy added",
            );
            self.log_transaction(&env, None, content.len(), &r, started);
            self.reset_transaction();
            return Ok(self.fail(r));
        }
        if env.recipients.is_empty() && disposition.is_none() {
            // Policy removed every recipient: nothing to deliver, the client is told 250.
            info!(
                session = self.conn.session_id,
                "every recipient removed by policy"
            );
            disposition = Some(Disposition::Discard);
        }
        self.sign_for_trusted(&mut content);
        if let Some((_, results)) = &auth {
            self.seal_forwarded(&env, results, &mut content).await;
        }
        self.reset_transaction();
        let reply = self.enqueue(&env, &content, disposition, started).await;
        Ok(if reply.is_positive() {
            self.reply(reply)
        } else {
            self.fail(reply)
        })
    }

    /// Adds the trace header and hands the message to the intake (the queue, or delivery at
    /// intake), which returns only once the message is on disk: the 250 is never sent before
    /// that (RFC 5321 6.1).
    async fn enqueue(
        &mut self,
        env: &corvid_types::Envelope,
        content: &[u8],
        disposition: Option<Disposition>,
        started: std::time::Instant,
    ) -> Reply {
        let id = self.shared.services.intake.next_id();
        if let Some(Disposition::Discard) = disposition {
            let r = Reply::new(250, "2.0.0", format!("Ok: queued as {id}"));
            info!(session = self.conn.session_id, queue_id = %id, "message discarded by policy");
            self.messages += 1;
            self.log_transaction(env, Some(&id), content.len(), &r, started);
            return r;
        }
        // The queue keeps who sent it (for `dsn.notify_success_from`) and holds a quarantined
        // message for an administrator instead of delivering it.
        let options = SubmitOptions {
            trusted_client: self.may_relay(),
            hold: match &disposition {
                Some(Disposition::Quarantine(why)) => Some(why.clone()),
                _ => None,
            },
        };
        let mut message = received_header(
            &self.conn,
            env,
            &self.shared.hostname,
            &id,
            chrono::Utc::now(),
        );
        message.extend_from_slice(content);
        let size = message.len();
        // Given away: delivery at intake keeps it for its Maildir writes without a copy.
        let submitted = self
            .shared
            .services
            .intake
            .submit_owned(&id, env, std::sync::Arc::new(message), &options)
            .await;
        let reply = match submitted {
            Ok(()) => {
                self.messages += 1;
                if let Some(why) = &options.hold {
                    info!(session = self.conn.session_id, queue_id = %id, reason = %why, "message quarantined: held for an administrator");
                }
                Reply::new(250, "2.0.0", format!("Ok: queued as {id}"))
            }
            Err(e) => {
                warn!(session = self.conn.session_id, queue_id = %id, error = %e, "queue write failed");
                Reply::new(451, "4.3.0", "Queue write failed, try again later")
            }
        };
        self.log_transaction(env, Some(&id), size, &reply, started);
        reply
    }

    fn log_transaction(
        &self,
        env: &corvid_types::Envelope,
        id: Option<&corvid_types::QueueId>,
        size: usize,
        reply: &Reply,
        started: std::time::Instant,
    ) {
        corvid_types::metrics::observer().transaction(&self.conn.listener, reply);
        let rcpts: Vec<String> = env
            .recipients
            .iter()
            .map(|r| r.address.to_string())
            .collect();
        info!(
            session = self.conn.session_id,
            queue_id = id.map(|i| i.0.as_str()).unwrap_or("-"),
            client = %self.conn.peer_addr.ip(),
            sender = %env.sender_text(),
            recipients = %rcpts.join(","),
            size,
            reply = %reply,
            duration_ms = started.elapsed().as_millis() as u64,
            "transaction"
        );
    }
}

/// RFC 3463 X.3.1 (mail system full): too many messages are being received at once.
pub(super) fn memory_full() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
}

/// RFC 5321 4.5.3.1.10 and RFC 1870 6.2: too much mail data is a permanent 552.
pub(super) fn too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}
