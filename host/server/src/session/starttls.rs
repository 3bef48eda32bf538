//! STARTTLS (RFC 3207): the command, the upgrade of the connection in place, and the reset of
//! the SMTP state that must follow it.

use super::{Closed, Flow, Session};
use corvid_types::Reply;
use tracing::info;

impl Session {
    pub(super) fn offers_starttls(&self) -> bool {
        self.shared.services.tls.is_some() && self.conn.tls.is_none()
    }

    pub(super) fn starttls(&mut self) -> Flow {
        if self.conn.tls.is_some() {
            return self.fail(Reply::new(503, "5.5.1", "TLS already active"));
        }
        if !self.offers_starttls() {
            return self.fail(Reply::new(502, "5.5.1", "STARTTLS not available"));
        }
        self.push(&Reply::new(220, "2.0.0", "Ready to start TLS"));
        Flow::StartTls
    }

    /// The TLS handshake, bounded by the command timeout. The connection drops whatever the
    /// client pipelined before it (RFC 3207 4.2, CVE-2011-0411); the negotiated parameters are
    /// recorded for `Received:` and policy.
    pub(super) async fn start_tls(&mut self) -> Result<(), Closed> {
        let Some(tls) = self.shared.services.tls.as_ref() else {
            return Err(Closed::Handshake);
        };
        let upgrade = self.io.upgrade(tls.acceptor());
        let client = self.conn.peer_addr.ip();
        match tokio::time::timeout(self.shared.limits.command_timeout, upgrade).await {
            Ok(Ok(info)) => {
                corvid_types::metrics::observer().tls_handshake(&self.conn.listener, &info.version);
                self.conn.tls = Some(info);
                Ok(())
            }
            Ok(Err(e)) => {
                corvid_types::metrics::observer().tls_handshake(&self.conn.listener, "failed");
                info!(session = self.conn.session_id, client = %client, error = %e, "TLS handshake failed");
                Err(Closed::Handshake)
            }
            Err(_) => {
                corvid_types::metrics::observer().tls_handshake(&self.conn.listener, "failed");
                info!(session = self.conn.session_id, client = %client, "TLS handshake timed out");
                Err(Closed::Handshake)
            }
        }
    }

    /// RFC 3207 4.2: after the handshake the server forgets everything the client told it
    /// before: the EHLO (the client must send it again), any transaction, and AUTH. STARTTLS is
    /// no longer offered, since `conn.tls` is set.
    pub(super) fn forget_after_starttls(&mut self) {
        self.reset_transaction();
        self.conn.helo = None;
        self.conn.esmtp = false;
        self.conn.auth_user = None;
        self.command_deadline = None;
    }
}
