//! The envelope changes a hook's decision asks for, applied as the server applies them once
//! the stage accepts (host/server/src/session/envelope_mods.rs), so that the later hooks of
//! the script see the envelope a server would give them. The server's own checks on an added
//! recipient or a new sender (no open relay, SMTPUTF8, `limits.max_recipients`) are not made
//! here: a script has no directory.

use corvid_types::{Envelope, Modification, Recipient};

pub fn apply(env: &mut Envelope, mods: &[Modification]) {
    for m in mods {
        let added = match m {
            Modification::ChangeSender(s) => {
                env.sender = s.clone();
                continue;
            }
            Modification::AddRecipient(a) => Recipient {
                address: a.clone(),
                params: Default::default(),
            },
            Modification::AddRecipientWithParams(r) => r.clone(),
            Modification::RemoveRecipient(a) => {
                env.recipients.retain(|r| &r.address != a);
                continue;
            }
            _ => continue,
        };
        // A recipient already there keeps its own parameters.
        if !env.recipients.iter().any(|r| r.address == added.address) {
            env.recipients.push(added);
        }
    }
}
