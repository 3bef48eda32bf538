//! MAIL and RCPT (RFC 5321 4.1.1.2, 4.1.1.3), and how policy verdicts are applied to them.

use super::{Disposition, Flow, Session, Step, Transaction};
use corvid_smtp::RcptTo;
use corvid_types::{Address, Envelope, Lookup, MailParams, RcptParams, Recipient, Reply, Verdict};
use tracing::info;

/// What a policy decision means for the command being handled.
pub(super) enum Judged {
    /// No opinion: the built-in rules decide.
    Continue,
    /// Explicitly accepted.
    Accept,
    /// Accepted, with the message to be discarded or held at the end of DATA.
    Dispose(Disposition),
    /// Refused; the reply was sent.
    Refused(Flow),
}

impl Session {
    /// What a verdict means for the command. Modifications are not applied here: they wait
    /// for the stage's final answer, so that a refusal discards them (a plugin answering
    /// `continue` + `add-recipient` next to a refused RCPT must not open a relay path).
    pub(super) fn judge(&mut self, verdict: Verdict) -> Judged {
        match verdict {
            Verdict::Continue => Judged::Continue,
            Verdict::Accept => Judged::Accept,
            Verdict::Discard => Judged::Dispose(Disposition::Discard),
            Verdict::Quarantine(why) => Judged::Dispose(Disposition::Quarantine(why)),
            Verdict::Disconnect(reply) => {
                self.push(&reply);
                Judged::Refused(Flow::Close)
            }
            Verdict::Reject(reply) | Verdict::Tempfail(reply) => Judged::Refused(self.fail(reply)),
        }
    }

    /// The reply of a refusing verdict, if it refuses.
    pub(super) fn refusal(&self, verdict: &Verdict) -> Option<Reply> {
        match verdict {
            Verdict::Reject(r) | Verdict::Tempfail(r) | Verdict::Disconnect(r) => Some(r.clone()),
            _ => None,
        }
    }

    pub(super) async fn mail(&mut self, sender: Option<Address>, params: MailParams) -> Step {
        let limits = &self.shared.limits;
        if self.conn.helo.is_none() {
            return Ok(self.fail(Reply::new(503, "5.5.1", "Send EHLO or HELO first")));
        }
        if self.tx.is_some() {
            return Ok(self.fail(Reply::new(503, "5.5.1", "Nested MAIL command")));
        }
        if self.listener.requires_auth() && self.conn.auth_user.is_none() {
            // RFC 4954 6 and RFC 6409 4.3: submission requires authentication.
            return Ok(self.fail(Reply::new(530, "5.7.0", "Authentication required")));
        }
        if let Some(refusal) = self.sender_not_owned(sender.as_ref()) {
            return Ok(self.fail(refusal));
        }
        if self.messages >= limits.max_messages_per_connection {
            let r = Reply::new(
                421,
                "4.7.0",
                "Too many messages in this session, reconnect to continue",
            );
            return Ok(self.fail(r));
        }
        if params
            .size
            .is_some_and(|s| s > limits.max_message_size as u64)
        {
            // RFC 1870 6.1: a declared size over the fixed limit is refused at MAIL.
            let r = Reply::new(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
            return Ok(self.fail(r));
        }
        if params.size.is_some_and(|s| !self.shared.memory.fits(s)) {
            // RFC 1870 6.1: a size the server cannot take now is a temporary 452 at MAIL, not
            // a refusal at the end of a transfer. The size is checked, not reserved: a
            // reservation would let a few idle clients declaring large sizes hold the whole
            // `limits.max_inflight_bytes` without sending a byte.
            let r = Reply::new(452, "4.3.1", "Insufficient system storage, try again later");
            return Ok(self.fail(r));
        }
        if !self.conn.esmtp && params != MailParams::default() {
            // Service extensions are only negotiated by EHLO (RFC 5321 2.2.1).
            return Ok(self.fail(Reply::new(555, "5.5.4", "MAIL parameters require EHLO")));
        }
        if params.requiretls && self.conn.tls.is_none() {
            // RFC 8689 2 and 4.1: REQUIRETLS is only offered, and only valid, in a TLS session.
            // 530 with 5.7.10 "Encryption needed" (RFC 3207 4, RFC 5248): the client must
            // STARTTLS first.
            return Ok(self.fail(Reply::new(
                530,
                "5.7.10",
                "REQUIRETLS needs a TLS session, issue STARTTLS first",
            )));
        }
        if let Some(refused) = self.flow_control().await {
            return Ok(refused);
        }
        let envelope = Envelope {
            sender,
            params,
            recipients: Vec::new(),
        };
        let spf = self.spf_at_mail(envelope.sender.as_ref()).await;
        let decision = self.policy.mail(&self.conn, &envelope).await;
        // The transaction exists before the verdict is read, so that a refusal ends it for
        // the policy too (`end_transaction`).
        self.tx = Some(Transaction::new(envelope));
        self.keep_spf(spf);
        match self.judge(decision.verdict) {
            Judged::Refused(flow) => {
                self.reset_transaction();
                Ok(flow)
            }
            judged => {
                self.set_disposition(judged);
                self.apply_to_transaction(&decision.modifications);
                let sender = self
                    .tx
                    .as_ref()
                    .map(|t| t.envelope.sender_text())
                    .unwrap_or_default();
                Ok(self.reply(Reply::new(250, "2.1.0", format!("Sender <{sender}> OK"))))
            }
        }
    }

    pub(super) async fn rcpt(&mut self, to: RcptTo, params: RcptParams) -> Step {
        let Some(tx) = &self.tx else {
            return Ok(self.fail(Reply::new(503, "5.5.1", "Need MAIL before RCPT")));
        };
        if tx.counted >= self.shared.limits.max_recipients {
            // RFC 5321 4.5.3.1.8 and 4.5.3.1.10: 452 for too many recipients; the client sends
            // the rest later. Every RCPT command counts, duplicates and refused ones included,
            // so repeating an address cannot make the server do unbounded work per message.
            return Ok(self.fail(Reply::new(452, "4.5.3", "Too many recipients")));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.counted += 1;
        }
        let Some(tx) = &self.tx else {
            return Ok(self.fail(Reply::new(503, "5.5.1", "Need MAIL before RCPT")));
        };
        let (address, postmaster) = match to {
            RcptTo::Postmaster => match self.shared.services.directory.postmaster() {
                Some(pm) => (pm.clone(), true),
                None => return Ok(self.fail(Reply::new(550, "5.1.1", "No postmaster configured"))),
            },
            RcptTo::Address(a) => {
                let pm = a.local.eq_ignore_ascii_case("postmaster")
                    && self.shared.services.directory.is_local_domain(&a.domain);
                (a, pm)
            }
        };
        if address.is_utf8() && !tx.envelope.params.smtputf8 {
            let r = Reply::new(
                553,
                "5.6.7",
                "Non-ASCII address requires SMTPUTF8 (RFC 6531)",
            );
            return Ok(self.fail(r));
        }
        if tx.envelope.recipients.iter().any(|r| r.address == address) {
            return Ok(self.reply(Reply::new(
                250,
                "2.1.5",
                format!("Recipient <{address}> OK"),
            )));
        }
        let rcpt = Recipient { address, params };
        // RFC 5321 4.5.1: mail to the postmaster of a local domain is always accepted.
        let (judged, mods) = if postmaster {
            (Judged::Accept, Vec::new())
        } else {
            let decision = self.policy.rcpt(&self.conn, &tx.envelope, &rcpt).await;
            (self.judge(decision.verdict), decision.modifications)
        };
        let disposition = match judged {
            Judged::Refused(flow) => return Ok(flow),
            Judged::Accept => None,
            other => {
                if let Some(refusal) = self.builtin_rcpt_rule(&rcpt.address) {
                    info!(session = self.conn.session_id, rcpt = %rcpt.address, reply = %refusal, "recipient refused");
                    return Ok(self.fail(refusal));
                }
                Some(other)
            }
        };
        // Accepted: only now do the verdict's side effects and modifications take hold.
        if let Some(judged) = disposition {
            self.set_disposition(judged);
        }
        let text = format!("Recipient <{}> OK", rcpt.address);
        if let Some(tx) = self.tx.as_mut() {
            tx.envelope.recipients.push(rcpt);
        }
        // May remove the recipient just accepted: it is then answered 250 but not delivered.
        self.apply_to_transaction(&mods);
        Ok(self.reply(Reply::new(250, "2.1.5", text)))
    }

    /// Applies envelope modifications to the open transaction, each checked like a command.
    fn apply_to_transaction(&mut self, mods: &[corvid_types::Modification]) {
        if mods.is_empty() {
            return;
        }
        let Some(mut tx) = self.tx.take() else {
            return;
        };
        let target = super::envelope_mods::Target {
            envelope: &mut tx.envelope,
            counted: &mut tx.counted,
        };
        self.apply_envelope_mods(target, mods);
        self.tx = Some(tx);
    }

    /// The rule no policy can forget: local recipients must exist, and mail for other domains
    /// is relayed only for authenticated clients (no open relay, RFC 5321 3.6.2 and 7.1).
    pub(super) fn builtin_rcpt_rule(&self, address: &Address) -> Option<Reply> {
        match self.shared.services.directory.lookup(address) {
            Lookup::Mailboxes(_) => None,
            Lookup::UnknownUser => Some(Reply::new(
                550,
                "5.1.1",
                format!("<{address}>: Recipient address rejected: User unknown"),
            )),
            Lookup::NotLocal if self.may_relay() => None,
            Lookup::NotLocal => Some(Reply::new(
                550,
                "5.7.1",
                format!("<{address}>: Relay access denied"),
            )),
        }
    }

    /// Authenticated clients and the configured relay networks may send to other domains.
    pub(super) fn may_relay(&self) -> bool {
        let ip = self.conn.peer_addr.ip();
        self.conn.auth_user.is_some() || self.shared.relay_networks.iter().any(|n| n.contains(&ip))
    }

    /// With `auth.restrict_sender`, an authenticated user may only send as its own addresses
    /// (RFC 6409 6.1). The null sender is allowed: it is how users send notifications.
    pub(super) fn sender_not_owned(&self, sender: Option<&Address>) -> Option<Reply> {
        let (Some(user), Some(sender)) = (self.conn.auth_user.as_deref(), sender) else {
            return None;
        };
        if !self.shared.auth.restrict_sender {
            return None;
        }
        (!self.owns(user, sender)).then(|| {
            Reply::new(
                553,
                "5.7.1",
                format!("<{sender}>: Sender address not owned by user {user}"),
            )
        })
    }

    /// Whether `user` may use `addr`: its login name, name+tag, or an address listed for it
    /// in the users file.
    pub(super) fn owns(&self, user: &str, addr: &Address) -> bool {
        match &self.shared.services.credentials {
            Some(store) => store.owns_address(user, addr),
            None => crate::auth::same_address(user, addr, '+'),
        }
    }

    fn set_disposition(&mut self, judged: Judged) {
        if let (Judged::Dispose(d), Some(tx)) = (judged, self.tx.as_mut()) {
            tx.disposition = Some(d);
        }
    }
}
