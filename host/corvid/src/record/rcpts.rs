//! The envelope as the replay will build it, kept next to the server's, so that a capture
//! says which recipients the server refused after the chain let them through (an unknown
//! user, relaying; RFC 5321 3.6.2) and which it took without asking the chain (the
//! postmaster, RFC 5321 4.5.1). Both show in the envelope the next hook gets.

use crate::plugin_test::envelope;
use corvid_types::{Envelope, Modification, Recipient};

/// What the next hook's envelope showed about the recipients before it.
#[derive(Debug, PartialEq)]
pub enum Fix {
    /// The recipient at this index of the transaction's `rcpt_to` is not in the server's
    /// envelope although the chain let it through.
    Refused(usize),
    /// The server took this recipient without a hook.
    Accepted(Recipient),
}

/// The replay's envelope of one transaction, and the last RCPT the chain decided.
pub struct Tracker {
    env: Envelope,
    pending: Option<Pending>,
}

struct Pending {
    index: usize,
    rcpt: Recipient,
    refused: bool,
    mods: Vec<Modification>,
}

impl Tracker {
    /// A transaction whose mail hook got `env` and decided `mods` (applied unless `refused`,
    /// as the replay does).
    pub fn new(env: &Envelope, refused: bool, mods: &[Modification]) -> Tracker {
        let mut env = env.clone();
        if !refused {
            envelope::apply(&mut env, mods);
        }
        Tracker { env, pending: None }
    }

    /// The chain's decision on the recipient at `index` of `rcpt_to`.
    pub fn decided(
        &mut self,
        index: usize,
        rcpt: &Recipient,
        refused: bool,
        mods: &[Modification],
    ) {
        self.pending = Some(Pending {
            index,
            rcpt: rcpt.clone(),
            refused,
            mods: mods.to_vec(),
        });
    }

    /// Compares the replay's envelope with `server`'s, the envelope of the hook about to run.
    pub fn settle(&mut self, server: &Envelope) -> Vec<Fix> {
        let mut fixes = Vec::new();
        if let Some(p) = self.pending.take().filter(|p| !p.refused) {
            let address = &p.rcpt.address;
            let removed = p
                .mods
                .iter()
                .any(|m| matches!(m, Modification::RemoveRecipient(a) if a == address));
            let kept = server.recipients.iter().any(|r| &r.address == address);
            if removed || kept {
                // As the replay: the recipient, then the decision's changes.
                self.env.recipients.push(p.rcpt);
                envelope::apply(&mut self.env, &p.mods);
            } else {
                fixes.push(Fix::Refused(p.index));
            }
        }
        for r in &server.recipients {
            if !self.env.recipients.iter().any(|x| x.address == r.address) {
                self.env.recipients.push(r.clone());
                fixes.push(Fix::Accepted(r.clone()));
            }
        }
        fixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corvid_types::{Address, MailParams, RcptParams};

    fn rcpt(local: &str) -> Recipient {
        Recipient {
            address: Address::new(local, "corvid.test"),
            params: RcptParams::default(),
        }
    }

    fn env(rcpts: &[&str]) -> Envelope {
        Envelope {
            sender: None,
            params: MailParams::default(),
            recipients: rcpts.iter().map(|l| rcpt(l)).collect(),
        }
    }

    #[test]
    fn refusals_after_the_chain_and_recipients_without_it_are_found() {
        let mut t = Tracker::new(&env(&[]), false, &[]);
        t.decided(0, &rcpt("nobody"), false, &[]);
        // The server refused nobody (unknown user), then took the postmaster.
        assert_eq!(
            t.settle(&env(&["postmaster"])),
            [Fix::Refused(0), Fix::Accepted(rcpt("postmaster"))]
        );
        t.decided(2, &rcpt("alice"), false, &[]);
        assert_eq!(t.settle(&env(&["postmaster", "alice"])), []);
        // A refusal by the chain, and a recipient the chain removed itself: nothing to fix.
        t.decided(3, &rcpt("x"), true, &[]);
        assert_eq!(t.settle(&env(&["postmaster", "alice"])), []);
        let gone = [Modification::RemoveRecipient(rcpt("bob").address)];
        t.decided(4, &rcpt("bob"), false, &gone);
        assert_eq!(t.settle(&env(&["postmaster", "alice"])), []);
    }
}
