//! DATA (RFC 5321 4.1.1.4) and BDAT (RFC 3030), and queueing the accepted message.

use super::{Disposition, Flow, Session, Step};
use crate::received::received_header;
use corvid_smtp::{BdatReader, DataOutcome, DataReader};
use corvid_types::{MessageView, Reply, SubmitOptions, Verdict};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// RFC 5321 4.1.4: DATA needs a transaction with at least one accepted recipient.
    fn data_refusal(&self) -> Option<Reply> {
        match &self.tx {
            None => Some(Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA")),
            Some(tx) if tx.envelope.recipients.is_empty() => {
                Some(Reply::new(503, "5.5.1", "No valid recipients"))
            }
            Some(tx) if tx.bdat.is_some() => {
                // RFC 3030 3: DATA and BDAT are not mixed in one transaction.
                Some(Reply::new(503, "5.5.1", "DATA not allowed after BDAT"))
            }
            Some(_) => None,
        }
    }

    pub(super) async fn data(&mut self) -> Step {
        if let Some(r) = self.data_refusal() {
            return Ok(self.fail(r));
        }
        if !self.input.is_empty() {
            // RFC 2920 3.1: DATA ends a pipelined group; the client must wait for 354. Bytes
            // already here were sent blind: refusing DATA would leave them to be read as
            // commands, so the session ends (Postfix's reject_unauth_pipelining does the same).
            self.reset_transaction();
            let r = Reply::new(
                554,
                "5.5.0",
                "Protocol synchronization error: data sent before 354",
            );
            self.push(&r);
            return Ok(Flow::Close);
        }
        if self.shared.memory.exhausted() {
            return Ok(self.fail(memory_full()));
        }
        self.push(&Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        let mut reader = DataReader::new(self.shared.limits.max_message_size);
        let mut charge = self.shared.memory.charge();
        let mut over_budget = false;
        let mut meter = self.rate_meter();
        // Bytes pipelined with the DATA line are already here (and counted as they are used).
        let mut pending = self.input.len();
        loop {
            if !over_budget && !charge.grow(pending) {
                over_budget = true;
                reader.abandon();
            }
            if reader.consume(&mut self.input) {
                break;
            }
            self.flush().await?;
            pending = self.fill_data(meter.deadline()).await?;
            meter.record(pending);
        }
        if over_budget {
            self.reset_transaction();
            return Ok(self.fail(memory_full()));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.charge = Some(charge);
        }
        self.finish_message(reader.finish()).await
    }

    fn rate_meter(&self) -> super::rate::RateMeter {
        let l = &self.shared.limits;
        super::rate::RateMeter::new(l.data_timeout, l.min_data_rate, l.data_rate_window)
    }

    pub(super) async fn bdat(&mut self, size: u64, last: bool) -> Step {
        let refusal = match &self.tx {
            None => Some(Reply::new(503, "5.5.1", "Need MAIL and RCPT before BDAT")),
            Some(tx) if tx.envelope.recipients.is_empty() => {
                Some(Reply::new(503, "5.5.1", "No valid recipients"))
            }
            Some(_) if self.shared.memory.exhausted() => Some(memory_full()),
            Some(_) => None,
        };
        let max = self.shared.limits.max_message_size;
        let mut reader = match (&refusal, self.tx.as_mut()) {
            (None, Some(tx)) => tx.bdat.take().unwrap_or_else(|| BdatReader::new(max)),
            // RFC 3030 2: the chunk is read and thrown away even when the command is refused,
            // or its bytes would be taken for commands.
            _ => BdatReader::new(0),
        };
        reader.begin_chunk(size);
        let mut charge = match self.tx.as_mut().and_then(|tx| tx.charge.take()) {
            Some(c) if refusal.is_none() => c,
            _ => self.shared.memory.charge(),
        };
        let mut over_budget = false;
        let mut meter = self.rate_meter();
        loop {
            let before = reader.remaining();
            let done = reader.consume(&mut self.input);
            let took = usize::try_from(before - reader.remaining()).unwrap_or(usize::MAX);
            if refusal.is_none() && !over_budget && !charge.grow(took) {
                over_budget = true;
                reader.abandon();
            }
            if done {
                break;
            }
            let n = self.fill_data(meter.deadline()).await?;
            meter.record(n);
        }
        if let Some(r) = refusal {
            if r.code == 452 {
                self.reset_transaction();
            }
            return Ok(self.fail(r));
        }
        if over_budget {
            self.reset_transaction();
            return Ok(self.fail(memory_full()));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.charge = Some(charge);
        }
        if last {
            return self.finish_message(reader.finish()).await;
        }
        if reader.received() > max as u64 {
            self.reset_transaction();
            return Ok(self.fail(too_big()));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.bdat = Some(reader);
        }
        Ok(self.reply(Reply::new(250, "2.0.0", format!("{size} octets received"))))
    }

    async fn finish_message(&mut self, outcome: DataOutcome) -> Step {
        match outcome {
            DataOutcome::TooBig => {
                self.reset_transaction();
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
                Ok(self.fail(r))
            }
            DataOutcome::Complete(content) => self.accept_message(content).await,
        }
    }

    async fn accept_message(&mut self, mut content: Vec<u8>) -> Step {
        // The content stays charged to the memory budget until it is queued or dropped.
        let _charge = self.tx.as_mut().and_then(|t| t.charge.take());
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
        let decision = self
            .policy
            .data(&self.conn, &env, MessageView { content: &content })
            .await;
        // A refusal discards the modifications; they apply only to a message accepted.
        match decision.verdict {
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
        self.reset_transaction();
        let reply = self.enqueue(&env, &content, disposition, started).await;
        Ok(if reply.is_positive() {
            self.reply(reply)
        } else {
            self.fail(reply)
        })
    }

    /// Adds the trace header and hands the message to the queue, which returns only once the
    /// message is on disk: the 250 is never sent before that (RFC 5321 6.1).
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
        let submitted = self
            .shared
            .services
            .intake
            .submit_with(&id, env, &message, &options)
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
        self.log_transaction(env, Some(&id), message.len(), &reply, started);
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
fn memory_full() -> Reply {
    Reply::new(452, "4.3.1", "Insufficient system storage, try again later")
}

/// RFC 5321 4.5.3.1.10 and RFC 1870 6.2: too much mail data is a permanent 552.
fn too_big() -> Reply {
    Reply::new(
        552,
        "5.3.4",
        "Message size exceeds fixed maximum message size",
    )
}
