//! `auth.restrict_from_header`: the From: addresses (RFC 5322 3.6.2) of an authenticated
//! user's message must be its own, as for MAIL FROM with `auth.restrict_sender` (RFC 6409 6.1
//! lets a submission server enforce this; Postfix does it with
//! `reject_sender_login_mismatch` on the envelope only). A message without From: passes: the
//! check is about impersonation, not about header completeness.

use super::Session;
use corvid_types::{Address, Reply};
use mail_parser::MessageParser;

impl Session {
    /// The refusal for a message whose From: names an address the user does not own.
    pub(super) fn header_from_not_owned(&self, content: &[u8]) -> Option<Reply> {
        let user = self.conn.auth_user.as_deref()?;
        if !self.shared.auth.restrict_from_header {
            return None;
        }
        let headers = MessageParser::new().parse_headers(content)?;
        let from = headers.from()?;
        let stranger = from.iter().find_map(|a| {
            let text = a.address()?;
            let owned = parse(text).is_some_and(|addr| self.owns(user, &addr));
            (!owned).then(|| text.to_string())
        })?;
        // RFC 3463 X.7.1: delivery not authorized.
        Some(Reply::new(
            550,
            "5.7.1",
            format!("From: <{stranger}> is not an address of user {user}"),
        ))
    }
}

/// `local@domain` as written in a header (already unquoted by the parser).
fn parse(text: &str) -> Option<Address> {
    let (local, domain) = text.rsplit_once('@')?;
    (!local.is_empty() && !domain.is_empty()).then(|| Address::new(local, domain))
}
