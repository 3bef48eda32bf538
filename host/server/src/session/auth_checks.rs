//! Mail authentication in the session, through `corvid_types::MailAuth` (the server resolves
//! nothing itself; the binary wires `corvid-auth` in):
//! - SPF (RFC 7208) at MAIL, for the MAIL FROM domain or the HELO name for `<>`;
//! - DKIM (RFC 6376), ARC (RFC 8617) and DMARC (RFC 7489) at the end of DATA/BDAT, before
//!   the data hook, with the default DMARC policy as a verdict the plugins may override;
//! - `Authentication-Results:` (RFC 8601): ours in front, forged ones with our authserv-id
//!   removed;
//! - DKIM signing at queue time, after every plugin modification;
//! - ARC sealing (RFC 8617) of checked mail that Corvid forwards, also after every change.
//!
//! Who is checked and who is signed: a client that may relay (authenticated, or in
//! `server.relay_networks`) is trusted: its mail is signed, not checked. Every other client
//! (mail arriving from the Internet) is checked and never signed.

use super::Session;
use crate::memory::Charge;
use corvid_types::{
    Address, AuthResults, Envelope, Lookup, MailAuth, SigningChoice, SigningRequest, SpfCheck,
    Verdict,
};
use std::sync::Arc;

/// Room for the fields mail authentication adds (an `Authentication-Results:`, a few
/// `DKIM-Signature:` fields or an ARC set: about 1-3 KiB each).
const AUTH_FIELDS_ROOM: usize = 8 * 1024;

impl Session {
    fn mail_auth(&self) -> Option<Arc<dyn MailAuth>> {
        self.shared.mail_auth.clone()
    }

    /// The checker, when this client's mail is checked.
    fn checker(&self) -> Option<Arc<dyn MailAuth>> {
        self.mail_auth().filter(|a| a.checks(self.may_relay()))
    }

    /// At MAIL, before the mail hook: SPF, handed to the policy (the mail and rcpt hooks see
    /// it). `None` when the client is not checked.
    pub(super) async fn spf_at_mail(&mut self, sender: Option<&Address>) -> Option<SpfCheck> {
        let auth = self.checker()?;
        let spf = auth.check_spf(&self.conn, sender).await;
        self.policy.auth_results(Some(&spf), None);
        Some(spf)
    }

    /// Charges to `limits.max_inflight_bytes` the copy of the content that mail
    /// authentication makes while the original is still held: the `Authentication-Results:`
    /// stamp, a DKIM signature or an ARC seal each build the message anew in front of the
    /// added fields. False (the caller answers 452 4.3.1, RFC 3463 X.3.1) when it does not fit.
    /// Mail that is neither checked nor signed is not copied, and charges nothing.
    pub(super) fn charge_auth_copy(&self, charge: Option<&mut Charge>, len: usize) -> bool {
        let Some(auth) = self.mail_auth() else {
            return true;
        };
        let trusted = self.may_relay();
        let copies = auth.checks(trusted) || (trusted && auth.signs());
        if !copies {
            return true;
        }
        charge.is_none_or(|c| c.grow(len + AUTH_FIELDS_ROOM))
    }

    /// Keeps the SPF result for the end of DATA.
    pub(super) fn keep_spf(&mut self, spf: Option<SpfCheck>) {
        if let Some(tx) = self.tx.as_mut() {
            tx.spf = spf;
        }
    }

    /// At the end of DATA/BDAT, before the data hook: DKIM, ARC and DMARC on the content as
    /// received; the results go to the policy, the content gets our `Authentication-Results:`
    /// (forged ones of our authserv-id removed). Returns the default verdict
    /// (`auth_checks.dmarc_policy`) and the results (for the ARC seal), `None` when the client
    /// is not checked.
    pub(super) async fn auth_at_data(
        &mut self,
        content: &mut Vec<u8>,
    ) -> Option<(Verdict, AuthResults)> {
        let auth = self.checker()?;
        let spf = self.tx.as_ref().and_then(|t| t.spf.clone());
        let results: AuthResults = auth.check_message(content, spf.as_ref()).await;
        self.policy.auth_results(spf.as_ref(), Some(&results));
        *content = auth.stamp(content, &results);
        Some((auth.default_verdict(&results), results))
    }

    /// ARC-seals (RFC 8617 section 5.1) checked mail that Corvid forwards: some recipient
    /// left after every plugin change is in another domain (a policy accepted or added it),
    /// or its domain has a route to an MX or a relay host (`[[delivery.route]]`).
    /// The seal goes on the final content (after every plugin modification, like a DKIM
    /// signature), and its `cv=` is the chain's result at the end of DATA (`results`). The
    /// queue keeps one copy of the content, so a message with local recipients too carries
    /// the seal into their mailboxes as well.
    pub(super) async fn seal_forwarded(
        // `&mut`: a shared borrow held across the await would need the session to be `Sync`.
        &mut self,
        env: &Envelope,
        results: &AuthResults,
        content: &mut Vec<u8>,
    ) {
        let Some(auth) = self.mail_auth().filter(|a| a.seals()) else {
            return;
        };
        let directory = &self.shared.services.directory;
        let forwarded = env.recipients.iter().any(|r| {
            auth.routes_away(&r.address.domain_lower())
                || matches!(directory.lookup(&r.address), Lookup::NotLocal)
        });
        if !forwarded {
            return;
        }
        let set = auth
            .arc_seal(content, results, self.conn.peer_addr.ip())
            .await;
        if !set.is_empty() {
            let mut sealed = Vec::with_capacity(set.len() + content.len());
            sealed.extend_from_slice(set.as_bytes());
            sealed.extend_from_slice(content);
            *content = sealed;
        }
    }

    /// For a trusted client (not checked): removes `Authentication-Results:` fields claiming
    /// our authserv-id (RFC 8601 section 5), then DKIM-signs the final content (after every
    /// plugin modification, so that none breaks the signature) as the policy chose: the
    /// configured keys of the From: domain by default, a domain/selector a plugin picked, or
    /// not at all.
    pub(super) fn sign_for_trusted(&mut self, content: &mut Vec<u8>) {
        let Some(auth) = self.mail_auth() else {
            return;
        };
        if !self.may_relay() {
            return;
        }
        auth.strip_forged(content);
        if !auth.signs() {
            return;
        }
        let choice = match self.policy.signing() {
            SigningRequest::Suppress => return,
            SigningRequest::Default => SigningChoice::default(),
            SigningRequest::Choose(c) => c,
        };
        let fields = auth.sign(content, &choice);
        if !fields.is_empty() {
            let mut signed = Vec::with_capacity(fields.len() + content.len());
            signed.extend_from_slice(fields.as_bytes());
            signed.extend_from_slice(content);
            *content = signed;
        }
    }
}

/// The data hook's verdict with the default DMARC policy: a plugin's own verdict wins (an
/// explicit `accept` overrides a DMARC reject or quarantine); `continue` leaves the default.
pub(super) fn with_default(plugin: Verdict, default: Option<Verdict>) -> Verdict {
    match (plugin, default) {
        (Verdict::Continue, Some(d)) => d,
        (v, _) => v,
    }
}
