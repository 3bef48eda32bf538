//! Constructors for decisions and replies, so a hook reads like the policy it implements.
//!
//! The host checks every reply: `reject` needs a 5xx code, `tempfail` a 4xx code,
//! `disconnect` either; the enhanced code's class must match the first digit. A reply that
//! does not fit is refused and the plugin's failure policy applies instead.

use crate::{Address, Decision, HeaderChange, HeaderField, HeaderInsert, HeaderRef};
use crate::{Modification, RcptParams, Reply, Verdict};

/// A reply with `code`, enhanced status `enhanced` (e.g. `"5.7.1"`, or `""`) and `text`
/// (`\n` separates the lines of a multi-line reply).
pub fn reply(code: u16, enhanced: &str, text: &str) -> Reply {
    Reply {
        code,
        enhanced: enhanced.to_string(),
        text: text.to_string(),
    }
}

/// No opinion: the next plugin, then the server's own rules, decide.
pub fn proceed() -> Decision {
    Decision::of(Verdict::Continue)
}

/// Accept at this stage and skip the rest of the chain.
pub fn accept() -> Decision {
    Decision::of(Verdict::Accept)
}

/// Refuse permanently, e.g. `reject(550, "5.7.1", "Relaying denied")`.
pub fn reject(code: u16, enhanced: &str, text: &str) -> Decision {
    Decision::of(Verdict::Reject(reply(code, enhanced, text)))
}

/// Refuse for now, e.g. `tempfail(451, "4.7.1", "Try again later")`.
pub fn tempfail(code: u16, enhanced: &str, text: &str) -> Decision {
    Decision::of(Verdict::Tempfail(reply(code, enhanced, text)))
}

/// Reply and close the connection, e.g. `disconnect(554, "5.7.1", "Go away")`.
pub fn disconnect(code: u16, enhanced: &str, text: &str) -> Decision {
    Decision::of(Verdict::Disconnect(reply(code, enhanced, text)))
}

/// Accept the message and drop it silently (at `data`).
pub fn discard() -> Decision {
    Decision::of(Verdict::Discard)
}

/// Accept the message and hold it for an administrator.
pub fn quarantine(reason: &str) -> Decision {
    Decision::of(Verdict::Quarantine(reason.to_string()))
}

impl Decision {
    /// A decision with this verdict and no modifications.
    pub fn of(verdict: Verdict) -> Self {
        Decision {
            verdict,
            modifications: Vec::new(),
        }
    }

    /// Adds a modification.
    pub fn with(mut self, modification: Modification) -> Self {
        self.modifications.push(modification);
        self
    }

    /// Appends a header field.
    pub fn add_header(self, name: &str, value: &str) -> Self {
        self.with(Modification::AddHeader(HeaderField {
            name: name.to_string(),
            value: value.to_string(),
        }))
    }

    /// Inserts a header field before the field at `index` (0 = first).
    pub fn insert_header(self, index: u32, name: &str, value: &str) -> Self {
        self.with(Modification::InsertHeader(HeaderInsert {
            index,
            name: name.to_string(),
            value: value.to_string(),
        }))
    }

    /// Changes the `index`-th field called `name`.
    pub fn change_header(self, name: &str, index: u32, value: &str) -> Self {
        self.with(Modification::ChangeHeader(HeaderChange {
            name: name.to_string(),
            index,
            value: value.to_string(),
        }))
    }

    /// Removes the `index`-th field called `name`.
    pub fn remove_header(self, name: &str, index: u32) -> Self {
        self.with(Modification::RemoveHeader(HeaderRef {
            name: name.to_string(),
            index,
        }))
    }

    /// Replaces the reverse-path (`None`: the null sender).
    pub fn change_sender(self, sender: Option<Address>) -> Self {
        self.with(Modification::ChangeSender(sender))
    }

    /// Adds a recipient.
    pub fn add_recipient(self, rcpt: Address) -> Self {
        self.with(Modification::AddRecipient(rcpt))
    }

    /// Adds a recipient with the RCPT TO parameters a client could give it (RFC 3461):
    /// `NOTIFY=` (`never` alone, or any of `success`, `failure`, `delay`) and `ORCPT=`
    /// (`addr-type;xtext`, e.g. `rfc822;alice+40example.org`).
    ///
    /// The parameters go to the host at once (`added-recipients.set-dsn-params`), for the
    /// decision of the hook being called: return this decision from that hook. The host
    /// checks them as a client's RCPT parameters; invalid ones, or ones for a recipient the
    /// returned decision does not add, make the decision invalid (the failure policy applies).
    /// Like [`Self::add_recipient`], the recipient is added only when the stage accepts and
    /// the client's own rules allow it. The queued recipient then gets the delivery reports
    /// it asks for: `NOTIFY=NEVER`, none at all.
    pub fn add_recipient_with(self, rcpt: Address, params: RcptParams) -> Self {
        crate::added::set_dsn_params(&rcpt, &params);
        self.with(Modification::AddRecipient(rcpt))
    }

    /// Removes a recipient.
    pub fn remove_recipient(self, rcpt: Address) -> Self {
        self.with(Modification::RemoveRecipient(rcpt))
    }

    /// Replaces the body (needs the `replace-body` capability).
    pub fn replace_body(self, body: Vec<u8>) -> Self {
        self.with(Modification::ReplaceBody(body))
    }

    /// True for `continue`.
    pub fn is_continue(&self) -> bool {
        matches!(self.verdict, Verdict::Continue)
    }
}

impl Address {
    /// Parses `local@domain` at the last `@`; `None` without one.
    pub fn parse(s: &str) -> Option<Address> {
        let (local, domain) = s.rsplit_once('@')?;
        Some(Address {
            local: local.to_string(),
            domain: domain.to_string(),
        })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}
