//! Receiving message content: DATA (RFC 5321 4.1.1.4) and BDAT chunks (RFC 3030). Every read
//! is charged to `limits.max_inflight_bytes` before it is made; what to do with a complete
//! message is in `data.rs`.

use super::data::{memory_full, too_big};
use super::{Flow, Session, Step};
use crate::connection::READ_CHUNK;
use crate::memory::Metered;
use corvid_smtp::{BdatReader, DataReader};
use corvid_types::Reply;

impl Session {
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
        if !self.io.input.is_empty() {
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
        let mut budget = Metered::new(self.shared.memory.charge());
        let mut meter = self.rate_meter();
        loop {
            let before = self.io.input.len();
            let done = reader.consume(&mut self.io.input);
            budget.took(before - self.io.input.len());
            if done {
                break;
            }
            self.flush().await?;
            let room = budget.room(READ_CHUNK);
            if budget.over() {
                reader.abandon();
            }
            let n = self.fill_data(meter.deadline(), room).await?;
            meter.record(n);
        }
        if budget.over() {
            self.reset_transaction();
            return Ok(self.fail(memory_full()));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.charge = Some(budget.into_charge());
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
        let charge = match self.tx.as_mut().and_then(|tx| tx.charge.take()) {
            Some(c) if refusal.is_none() => c,
            _ => self.shared.memory.charge(),
        };
        let mut budget = Metered::new(charge);
        let mut meter = self.rate_meter();
        loop {
            let before = reader.remaining();
            let done = reader.consume(&mut self.io.input);
            let took = usize::try_from(before - reader.remaining()).unwrap_or(usize::MAX);
            if refusal.is_none() {
                budget.took(took);
            }
            if done {
                break;
            }
            // Reads stop at the end of the chunk: what follows it is the next command.
            let want =
                usize::try_from(reader.remaining()).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
            let room = match refusal {
                None => budget.room(want),
                Some(_) => want,
            };
            if budget.over() {
                reader.abandon();
            }
            let n = self.fill_data(meter.deadline(), room).await?;
            meter.record(n);
        }
        if let Some(r) = refusal {
            if r.code == 452 {
                self.reset_transaction();
            }
            return Ok(self.fail(r));
        }
        if budget.over() {
            self.reset_transaction();
            return Ok(self.fail(memory_full()));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.charge = Some(budget.into_charge());
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
}
