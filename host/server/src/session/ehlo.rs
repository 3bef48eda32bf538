//! The greeting and EHLO/HELO (RFC 5321 4.1.1.1, 4.3.1).

use super::envelope::Judged;
use super::{Closed, Flow, Session, Step};
use crate::connection::READ_CHUNK;
use corvid_types::Reply;
use std::future::Future;
use std::task::Poll;
use tracing::info;

impl Session {
    /// Runs the connect hook, then sends the 220 greeting (RFC 5321 4.3.1). A refusal here
    /// closes the connection with 554 (or 421 when temporary), the two codes 4.3.1 allows.
    pub(super) async fn greet(&mut self) -> Result<Flow, Closed> {
        let decision = self.policy.connect(&self.conn).await;
        if let Some(mut refusal) = self.refusal(&decision.verdict) {
            refusal.code = if refusal.is_transient() { 421 } else { 554 };
            self.push(&refusal);
            return Ok(Flow::Close);
        }
        if self.pregreeted().await? {
            info!(session = self.conn.session_id, client = %self.conn.peer_addr.ip(), "pregreet: client talked before the greeting");
            // RFC 5321 4.3.1: the client waits for the 220. One that does not is a bot.
            self.push(&Reply::new(
                554,
                "5.5.0",
                "Protocol error: client sent data before the greeting",
            ));
            return Ok(Flow::Close);
        }
        let greeting = Reply::new(220, "", format!("{} ESMTP Corvid", self.shared.hostname));
        Ok(self.reply(greeting))
    }

    /// Whether the client sent anything before the greeting: waits `limits.greet_delay`, or
    /// with no delay only looks at bytes already there (a read polled once, no waiting).
    async fn pregreeted(&mut self) -> Result<bool, Closed> {
        let wait = self.shared.limits.greet_delay;
        let read = if wait.is_zero() {
            // Not a zero timeout: tokio's timer fires on its next 1 ms tick, so every
            // connection waited about a millisecond for its greeting (a fifth of a message's
            // time at 10 sessions). One yield lets the reactor note bytes already sent; then
            // the read is polled once.
            tokio::task::yield_now().await;
            let mut read = std::pin::pin!(self.io.read_more(READ_CHUNK));
            match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
                Poll::Ready(r) => Ok(r),
                Poll::Pending => return Ok(false),
            }
        } else {
            tokio::time::timeout(wait, self.io.read_more(READ_CHUNK)).await
        };
        match read {
            // Nothing within the delay: the client waited, as it should.
            Err(_) => Ok(false),
            Ok(Ok(0)) => Err(Closed::Eof),
            Ok(Ok(_)) => Ok(true),
            Ok(Err(e)) => Err(Closed::Io(e)),
        }
    }

    pub(super) async fn ehlo(&mut self, name: String, esmtp: bool) -> Step {
        if !valid_helo(&name) {
            return Ok(self.fail(Reply::new(501, "5.5.4", "Invalid EHLO/HELO domain")));
        }
        // RFC 5321 4.1.4: EHLO/HELO in the middle of a transaction resets it, as RSET does.
        self.reset_transaction();
        self.conn.helo = Some(name);
        self.conn.esmtp = esmtp;
        let decision = self.policy.helo(&self.conn).await;
        match self.judge(decision.verdict) {
            Judged::Refused(flow) => {
                self.conn.helo = None;
                return Ok(flow);
            }
            Judged::Continue | Judged::Accept | Judged::Dispose(_) => {}
        }
        let reply = if esmtp {
            self.ehlo_reply()
        } else {
            Reply::new(250, "", &self.shared.hostname)
        };
        Ok(self.reply(reply))
    }

    /// The EHLO reply lists the extensions (RFC 5321 4.1.1.1). RFC 2034 3 exempts the greeting
    /// and the EHLO/HELO replies from enhanced status codes.
    fn ehlo_reply(&self) -> Reply {
        let ip = self.conn.peer_addr.ip();
        let helo = self.conn.helo.as_deref().unwrap_or("");
        let lines = [
            format!("{} Hello {helo} [{ip}]", self.shared.hostname),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.shared.limits.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "CHUNKING".into(),
            "DSN".into(),
            "HELP".into(),
        ];
        let mut lines = lines.to_vec();
        if self.offers_starttls() {
            lines.push("STARTTLS".into());
        }
        if self.conn.tls.is_some() {
            // RFC 8689 2: REQUIRETLS is offered only once the session is protected by TLS.
            lines.push("REQUIRETLS".into());
        }
        if self.offers_etrn() {
            lines.push("ETRN".into());
        }
        if self.offers_auth() && self.conn.auth_user.is_none() {
            lines.push(format!("AUTH {}", super::auth::MECHANISMS));
        }
        Reply::new(250, "", lines.join("\n"))
    }
}

/// A HELO name must be a domain or an address literal (RFC 5321 4.1.1.1, 4.1.3); anything else
/// (spaces, control characters, over-long) is refused so it can never disturb a trace header.
pub(super) fn valid_helo(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    if let Some(inner) = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-'));
    }
    name.split('.').enumerate().all(|(i, label)| {
        // A trailing dot (fully qualified form) leaves one empty last label; allow it.
        (label.is_empty() && i > 0 && name.ends_with('.'))
            || (!label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    })
}

#[cfg(test)]
mod tests {
    use super::valid_helo;

    #[test]
    fn helo_names() {
        for ok in [
            "mx.test",
            "localhost",
            "a-b.c_d.test",
            "[127.0.0.1]",
            "[IPv6:::1]",
            "x.test.",
        ] {
            assert!(valid_helo(ok), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a..b",
            "[",
            "[]",
            "x\r\n",
            "bad/name",
            ".x",
            &"a".repeat(64),
        ] {
            assert!(!valid_helo(bad), "{bad:?}");
        }
    }
}
