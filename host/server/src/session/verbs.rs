//! The small verbs: RSET, QUIT, HELP, VRFY, and those Corvid does not offer.

use super::{Flow, Session};
use corvid_types::Reply;

impl Session {
    /// RFC 5321 4.1.1.5: abort the transaction, keep the EHLO state.
    pub(super) fn rset(&mut self) -> Flow {
        self.reset_transaction();
        self.reply(Reply::new(250, "2.0.0", "Ok"))
    }

    /// RFC 5321 4.1.1.10.
    pub(super) fn quit(&mut self) -> Flow {
        self.reset_transaction();
        let bye = Reply::new(
            221,
            "2.0.0",
            format!("{} closing connection", self.shared.hostname),
        );
        self.push(&bye);
        Flow::Close
    }

    /// RFC 5321 4.1.1.8: 214 with help text.
    pub(super) fn help(&mut self) -> Flow {
        let text = "Corvid SMTP server\n\
                    Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY\n\
                    See RFC 5321 for their use";
        self.reply(Reply::new(214, "2.0.0", text))
    }

    /// RFC 5321 3.5.3: 252 when the server will not verify but will try to deliver; verifying
    /// would hand address harvesters a directory (RFC 5321 7.3).
    pub(super) fn vrfy(&mut self) -> Flow {
        self.reply(Reply::new(
            252,
            "2.5.0",
            "Cannot VRFY user, but will accept message and attempt delivery",
        ))
    }

    /// ETRN is offered only to the configured trusted clients.
    pub(super) fn offers_etrn(&self) -> bool {
        let ip = self.conn.peer_addr.ip();
        self.shared.services.queue_control.is_some()
            && self.shared.etrn_networks.iter().any(|n| n.contains(&ip))
    }

    /// RFC 1985: start a queue run for a domain (`@domain`: with its subdomains). The codes are
    /// RFC 1985's: 251 nothing waiting, 253 n messages started, 458 cannot queue, 501 syntax.
    pub(super) async fn etrn(&mut self, node: &str) -> Flow {
        let Some(control) = self
            .shared
            .services
            .queue_control
            .clone()
            .filter(|_| self.offers_etrn())
        else {
            return self.not_offered("ETRN");
        };
        let domain = node.strip_prefix('@').unwrap_or(node);
        if node.starts_with('#') || !super::ehlo::valid_helo(domain) || domain.starts_with('[') {
            return self.fail(Reply::new(
                501,
                "5.5.4",
                "Syntax: ETRN domain or ETRN @domain",
            ));
        }
        // The run scans the queue and fsyncs what it changed: a blocking thread's work, not
        // a runtime thread's (the other sessions on it would wait).
        let run = {
            let node = node.to_string();
            tokio::task::spawn_blocking(move || control.start_run(&node)).await
        };
        let run = run.unwrap_or_else(|e| {
            Err(corvid_types::IntakeError::Storage(format!(
                "queue run task: {e}"
            )))
        });
        match run {
            Ok(0) => self.reply(Reply::new(
                251,
                "2.0.0",
                format!("OK, no messages waiting for node {node}"),
            )),
            Ok(n) => self.reply(Reply::new(
                253,
                "2.0.0",
                format!("OK, {n} pending messages for node {node} started"),
            )),
            Err(e) => {
                tracing::warn!(session = self.conn.session_id, error = %e, "ETRN queue run failed");
                self.fail(Reply::new(
                    458,
                    "4.3.0",
                    format!("Unable to queue messages for node {node}"),
                ))
            }
        }
    }

    /// 502: recognised but not implemented or not offered on this listener (RFC 5321 4.2.4).
    pub(super) fn not_offered(&mut self, verb: &str) -> Flow {
        let verb: String = verb
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        self.fail(Reply::new(
            502,
            "5.5.1",
            format!("{verb} command not implemented"),
        ))
    }
}
