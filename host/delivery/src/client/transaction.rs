//! One mail transaction on an open session: MAIL, RCPT, DATA (RFC 5321 3.3), pipelined when
//! the server offers it (RFC 2920), with per-recipient replies after DATA for LMTP (RFC 2033
//! 4.2).

use super::session::{Protocol, Session};
use super::ClientError;
use crate::Outcome;
use corvid_smtp::{encode_data, is_8bit, Reply};
use corvid_types::{BodyType, Envelope, MessageView, Notify, Recipient, Ret};

/// A message to send: the envelope's reverse-path and parameters, the recipients for this
/// next hop, and the content (CRLF line endings, not dot-stuffed).
pub struct Outbound<'a> {
    pub envelope: &'a Envelope,
    pub recipients: Vec<&'a Recipient>,
    pub content: &'a [u8],
}

impl Outbound<'_> {
    /// RFC 6531 3.4: SMTPUTF8 is needed when an address is UTF-8, or the client declared it
    /// and the header section is not ASCII.
    pub fn needs_smtputf8(&self) -> bool {
        self.envelope.sender.as_ref().is_some_and(|a| a.is_utf8())
            || self.recipients.iter().any(|r| r.address.is_utf8())
            || (self.envelope.params.smtputf8
                && !MessageView {
                    content: self.content,
                }
                .header_section()
                .is_ascii())
    }
}

/// What a transaction produced.
pub struct TransactionResult {
    /// Per recipient, in order: the final reply and the command it answered, or `None` when
    /// `error` ended the transaction before one came.
    pub replies: Vec<Option<(&'static str, Reply)>>,
    pub error: Option<ClientError>,
    /// The peer offers DSN and got the NOTIFY/ORCPT/RET/ENVID parameters: it is now
    /// responsible for success and delay notices (RFC 3461 5.2.2 and 6.2).
    pub dsn_passed: bool,
    /// The session may carry another transaction.
    pub reusable: bool,
}

impl Session {
    /// Refusals decided before sending anything: a message the next hop cannot take as it is,
    /// and which Corvid does not convert.
    pub fn precheck(&self, msg: &Outbound<'_>) -> Result<(), Outcome> {
        let peer = self.peer();
        if msg.envelope.params.requiretls && !(self.tls && self.verified && self.requiretls) {
            // RFC 8689 4.2.1 and 5.7.30: the next hop must offer REQUIRETLS over verified TLS.
            return Err(Outcome::Permanent(format!(
                "5.7.30 REQUIRETLS: {peer} does not offer REQUIRETLS over verified TLS"
            )));
        }
        let size = msg.content.len() as u64;
        if self.caps.too_big(size) {
            // RFC 1870 6.1: over the server's fixed maximum is a permanent failure.
            return Err(Outcome::Permanent(format!(
                "5.3.4 message size {size} exceeds the limit of {peer}"
            )));
        }
        if msg.needs_smtputf8() && !self.caps.smtputf8 {
            // RFC 6531 3.2 / RFC 6533 3: X.6.7 non-ASCII addresses not permitted.
            return Err(Outcome::Permanent(format!(
                "5.6.7 message needs SMTPUTF8 (UTF-8 addresses or headers), which {peer} does not offer"
            )));
        }
        if is_8bit(msg.content) && !self.caps.eight_bit_mime {
            // RFC 6152 3 and RFC 3463 X.6.3: conversion required but not supported.
            return Err(Outcome::Permanent(format!(
                "5.6.3 cannot convert 8-bit message for {peer}, which does not offer 8BITMIME"
            )));
        }
        Ok(())
    }

    /// Runs MAIL, RCPT and DATA. Never panics on what the server sends; every recipient ends
    /// with a reply or the error explains why not.
    pub async fn transaction(&mut self, msg: &Outbound<'_>) -> TransactionResult {
        let n = msg.recipients.len();
        let mut out = TransactionResult {
            replies: vec![None; n],
            error: None,
            dsn_passed: self.caps.dsn,
            reusable: false,
        };
        match self.run(msg, &mut out.replies).await {
            Ok(reusable) => {
                out.reusable = reusable;
                if reusable {
                    self.messages += 1;
                }
            }
            Err(e) => out.error = Some(e),
        }
        out
    }

    async fn run(
        &mut self,
        msg: &Outbound<'_>,
        replies: &mut [Option<(&'static str, Reply)>],
    ) -> Result<bool, ClientError> {
        let t = self.timeouts.clone();
        let mail = self.mail_line(msg);
        let rcpts: Vec<String> = msg.recipients.iter().map(|r| self.rcpt_line(r)).collect();
        let (mail_reply, rcpt_replies, data_reply) = if self.caps.pipelining {
            // RFC 2920 3.1: MAIL, RCPTs and DATA may go in one group, DATA last.
            let mut batch = format!("{mail}\r\n");
            for r in &rcpts {
                batch.push_str(r);
                batch.push_str("\r\n");
            }
            batch.push_str("DATA\r\n");
            self.conn.send(batch.as_bytes(), t.envelope, "MAIL").await?;
            let mail_reply = self.conn.read_reply(t.envelope, "MAIL").await?;
            let mut rr = Vec::with_capacity(rcpts.len());
            for _ in &rcpts {
                rr.push(self.conn.read_reply(t.envelope, "RCPT").await?);
            }
            let data = self.conn.read_reply(t.data_init, "DATA").await?;
            (mail_reply, rr, Some(data))
        } else {
            let mail_reply = self.conn.command(&mail, t.envelope, "MAIL").await?;
            let mut rr = Vec::new();
            if mail_reply.is_positive() {
                for r in &rcpts {
                    rr.push(self.conn.command(r, t.envelope, "RCPT").await?);
                }
            }
            let data = if rr.iter().any(Reply::is_positive) {
                Some(self.conn.command("DATA", t.data_init, "DATA").await?)
            } else {
                None
            };
            (mail_reply, rr, data)
        };
        if !mail_reply.is_positive() {
            replies
                .iter_mut()
                .for_each(|r| *r = Some(("MAIL", mail_reply.clone())));
            return self.abandon(data_reply).await;
        }
        let mut accepted = Vec::new();
        for (i, reply) in rcpt_replies.into_iter().enumerate() {
            if reply.is_positive() {
                accepted.push(i);
            } else if let Some(slot) = replies.get_mut(i) {
                *slot = Some(("RCPT", reply));
            }
        }
        let data_reply = match data_reply {
            Some(d) if !accepted.is_empty() => d,
            other => return self.abandon(other).await,
        };
        if data_reply.code != 354 {
            for &i in &accepted {
                replies[i] = Some(("DATA", data_reply.clone()));
            }
            return Ok(self.reset().await);
        }
        self.conn
            .send(&encode_data(msg.content), t.data_block, "DATA")
            .await?;
        // RFC 2033 4.2: LMTP answers once per accepted recipient, in RCPT order.
        let finals = match self.protocol {
            Protocol::Smtp => 1,
            Protocol::Lmtp => accepted.len(),
        };
        for k in 0..finals {
            let reply = self.conn.read_reply(t.data_end, "end of DATA").await?;
            let targets: &[usize] = match self.protocol {
                Protocol::Smtp => &accepted,
                Protocol::Lmtp => std::slice::from_ref(&accepted[k]),
            };
            for &i in targets {
                replies[i] = Some(("end of DATA", reply.clone()));
            }
        }
        Ok(true)
    }

    /// Ends a transaction that will not send content: a pipelined DATA that a broken server
    /// accepted anyway gets an empty message (RFC 2920 3.1), then RSET.
    async fn abandon(&mut self, data_reply: Option<Reply>) -> Result<bool, ClientError> {
        if data_reply.is_some_and(|d| d.code == 354) {
            let t = self.timeouts.data_end;
            self.conn.send(b".\r\n", t, "DATA").await?;
            self.conn.read_reply(t, "end of DATA").await?;
        }
        Ok(self.reset().await)
    }

    fn mail_line(&self, msg: &Outbound<'_>) -> String {
        let env = msg.envelope;
        let mut line = format!("MAIL FROM:<{}>", env.sender_text());
        if self.caps.size.is_some() {
            line.push_str(&format!(" SIZE={}", msg.content.len()));
        }
        let eight_bit = is_8bit(msg.content) || env.params.body == BodyType::EightBitMime;
        if eight_bit && self.caps.eight_bit_mime {
            line.push_str(" BODY=8BITMIME");
        }
        if self.caps.smtputf8 && (env.params.smtputf8 || msg.needs_smtputf8()) {
            line.push_str(" SMTPUTF8");
        }
        // RFC 8689 4.2.1: passed on; delivery never sends such a message to a server that
        // does not offer it (see `Remote::precheck`).
        if env.params.requiretls && self.requiretls {
            line.push_str(" REQUIRETLS");
        }
        if self.caps.dsn {
            match env.params.ret {
                Some(Ret::Full) => line.push_str(" RET=FULL"),
                Some(Ret::Headers) => line.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &env.params.envid {
                line.push_str(&format!(" ENVID={envid}"));
            }
        }
        line
    }

    fn rcpt_line(&self, r: &Recipient) -> String {
        let mut line = format!("RCPT TO:<{}>", r.address);
        if self.caps.dsn {
            if let Some(n) = r.params.notify.as_ref().and_then(notify_value) {
                line.push_str(&format!(" NOTIFY={n}"));
            }
            if let Some(orcpt) = &r.params.orcpt {
                line.push_str(&format!(" ORCPT={orcpt}"));
            }
        }
        line
    }
}

/// RFC 3461 4.1; `None` for a value that names nothing (never produced by the parser).
fn notify_value(n: &Notify) -> Option<String> {
    if n.never {
        return Some("NEVER".into());
    }
    let parts: Vec<&str> = [
        (n.success, "SUCCESS"),
        (n.failure, "FAILURE"),
        (n.delay, "DELAY"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| *name)
    .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}
