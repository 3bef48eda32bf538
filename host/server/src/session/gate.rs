//! Checks made on every command before its handler runs: the junk command cap, the BDAT
//! sequence rule (RFC 3030 2), and STARTTLS before mail commands where TLS is required.

use super::{Flow, Session};
use corvid_smtp::Command;
use corvid_types::Reply;

impl Session {
    /// Counts junk commands, and ends a BDAT transaction interrupted by another command.
    pub(super) fn junk_or_bdat_sequence(&mut self, cmd: &Command) -> Option<Flow> {
        let junk = matches!(
            cmd,
            Command::Noop
                | Command::Rset
                | Command::Help(_)
                | Command::Vrfy(_)
                | Command::Expn(_)
                | Command::Etrn(_)
                | Command::NotImplemented(_)
        );
        if junk {
            self.junk += 1;
            if self.junk > self.shared.limits.max_junk_commands {
                // Postfix's smtpd_junk_command_limit: a client that only talks is let go.
                let text = format!(
                    "{} Too many commands, closing connection",
                    self.shared.hostname
                );
                self.push(&Reply::new(421, "4.7.0", text));
                return Some(Flow::Close);
            }
        }
        let in_bdat = self.tx.as_ref().is_some_and(|t| t.bdat.is_some());
        if in_bdat && !matches!(cmd, Command::Bdat { .. } | Command::Rset | Command::Quit) {
            // RFC 3030 2: after a BDAT chunk the client sends the next chunk (or RSET/QUIT).
            // Anything else, NOOP included, aborts the transaction and frees its chunks, so a
            // partial message cannot be parked in memory while the client idles.
            self.reset_transaction();
            let r = Reply::new(
                503,
                "5.5.1",
                "Only BDAT, RSET or QUIT may follow a BDAT chunk; transaction aborted",
            );
            return Some(self.fail(r));
        }
        None
    }

    pub(super) fn needs_tls_first(&self, cmd: &Command) -> bool {
        let exempt = matches!(
            cmd,
            Command::Ehlo(_)
                | Command::Helo(_)
                | Command::StartTls
                | Command::Noop
                | Command::Rset
                | Command::Quit
        );
        !exempt && self.conn.tls.is_none() && self.listener.requires_tls()
    }
}
