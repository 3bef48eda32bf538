//! Envelope modifications asked for by a policy (change-sender, add-recipient with or without
//! DSN parameters, remove-recipient), applied only once the stage's final verdict accepts.
//!
//! A plugin's change goes through the same rules as the client's own command: an added
//! recipient must pass the built-in rule (a local mailbox, or relay rights for this client:
//! RFC 5321 3.6.2 and 7.1, no open relay), the SMTPUTF8 rule (RFC 6531 3.4) and
//! `limits.max_recipients` (RFC 5321 4.5.3.1.8); a new sender must pass `auth.restrict_sender`
//! (RFC 6409 6.1) and the SMTPUTF8 rule. A change that fails is dropped with a warning: the
//! client's command was already judged on its own, and a plugin's mistake must not turn into
//! mail sent where nobody allowed it.

use super::Session;
use corvid_types::{Address, Envelope, Modification, Recipient};
use tracing::{info, warn};

/// An envelope being changed, with its count towards `limits.max_recipients`.
pub(super) struct Target<'a> {
    pub(super) envelope: &'a mut Envelope,
    /// RCPT commands and added recipients so far in the transaction.
    pub(super) counted: &'a mut usize,
}

impl Session {
    /// Applies the envelope modifications in `mods` to `target`, checking each; content
    /// modifications are ignored here (they are applied at DATA). Returns how many added
    /// recipients were refused, so that DATA never answers 250 for a message whose only
    /// recipients were ones nobody may send to (that would be silent loss).
    pub(super) fn apply_envelope_mods(&self, target: Target<'_>, mods: &[Modification]) -> usize {
        let Target { envelope, counted } = target;
        let mut refused = 0;
        for m in mods {
            match m {
                Modification::ChangeSender(sender) => {
                    match self.sender_change_refusal(envelope, sender.as_ref()) {
                        None => envelope.sender = sender.clone(),
                        Some(why) => {
                            warn!(session = self.conn.session_id, sender = %shown(sender.as_ref()), why, "policy change-sender dropped")
                        }
                    }
                }
                Modification::AddRecipient(a) => {
                    let added = Recipient {
                        address: a.clone(),
                        params: Default::default(),
                    };
                    refused += self.add_recipient(envelope, counted, added);
                }
                // DSN parameters checked by the plugin host as a client's RCPT parameters.
                Modification::AddRecipientWithParams(r) => {
                    refused += self.add_recipient(envelope, counted, r.clone());
                }
                Modification::RemoveRecipient(a) => {
                    let before = envelope.recipients.len();
                    envelope.recipients.retain(|r| &r.address != a);
                    if envelope.recipients.len() != before {
                        info!(session = self.conn.session_id, rcpt = %a, "recipient removed by policy");
                    }
                }
                _ => {}
            }
        }
        refused
    }

    /// Adds `r` when the client's rules allow it; 1 when they refuse it. A recipient already
    /// in the envelope is left as it is, with its own parameters.
    fn add_recipient(&self, envelope: &mut Envelope, counted: &mut usize, r: Recipient) -> usize {
        let a = &r.address;
        if envelope.recipients.iter().any(|have| &have.address == a) {
            return 0;
        }
        match self.added_recipient_refusal(envelope, *counted, a) {
            None => {
                *counted += 1;
                info!(session = self.conn.session_id, rcpt = %a, dsn = ?r.params, "recipient added by policy");
                envelope.recipients.push(r);
                0
            }
            Some(why) => {
                warn!(session = self.conn.session_id, rcpt = %a, why = %why, "policy add-recipient dropped");
                1
            }
        }
    }

    /// Why a plugin may not make `sender` the envelope sender, if it may not.
    fn sender_change_refusal(
        &self,
        envelope: &Envelope,
        sender: Option<&Address>,
    ) -> Option<&'static str> {
        if sender.is_some_and(|s| s.is_utf8()) && !envelope.params.smtputf8 {
            // RFC 6531 3.4: a non-ASCII address needs the SMTPUTF8 parameter.
            return Some("non-ASCII address without SMTPUTF8");
        }
        self.sender_not_owned(sender)
            .map(|_| "sender not owned by the authenticated user")
    }

    /// Why a plugin may not add `address`, if it may not: the client's own RCPT rules.
    fn added_recipient_refusal(
        &self,
        envelope: &Envelope,
        counted: usize,
        address: &Address,
    ) -> Option<String> {
        if counted >= self.shared.limits.max_recipients {
            return Some("too many recipients".into());
        }
        if address.is_utf8() && !envelope.params.smtputf8 {
            return Some("non-ASCII address without SMTPUTF8".into());
        }
        self.builtin_rcpt_rule(address).map(|r| r.to_string())
    }
}

fn shown(a: Option<&Address>) -> String {
    a.map(ToString::to_string).unwrap_or_default()
}
