//! The SMTP envelope: reverse-path, forward-paths and their ESMTP parameters.

use crate::Address;
use serde::{Deserialize, Serialize};

/// RFC 6152 / RFC 3030 `BODY=` values. `BINARYMIME` is not offered, so it is never accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyType {
    #[default]
    SevenBit,
    EightBitMime,
}

/// RFC 3461 4.3 `RET=`: what a failure DSN should return of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ret {
    Full,
    Headers,
}

/// RFC 3461 4.1 `NOTIFY=`: `NEVER`, or any of the three conditions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub never: bool,
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
}

/// Parameters of `MAIL FROM` that Corvid understands and keeps with the message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailParams {
    /// RFC 1870 `SIZE=`: the client's estimate, checked against the limit at MAIL.
    pub size: Option<u64>,
    pub body: BodyType,
    /// RFC 6531 `SMTPUTF8`.
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    /// RFC 3461 4.4 `ENVID=`, kept in its xtext form.
    pub envid: Option<String>,
    /// RFC 4954 5 `AUTH=`, kept in its xtext form.
    pub auth: Option<String>,
    /// RFC 8689 `REQUIRETLS`: the message may only travel over TLS verified through an
    /// authenticated policy (MTA-STS or DANE, or a configured smart host), to next hops that
    /// offer REQUIRETLS; otherwise it bounces (5.7.30). Set by whoever accepts the parameter.
    #[serde(default)]
    pub requiretls: bool,
}

/// Parameters of `RCPT TO`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptParams {
    pub notify: Option<Notify>,
    /// RFC 3461 4.2 `ORCPT=addr-type;xtext`, kept as sent.
    pub orcpt: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Address,
    pub params: RcptParams,
}

/// One mail transaction's envelope. `sender == None` is the null reverse-path `<>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub sender: Option<Address>,
    pub params: MailParams,
    pub recipients: Vec<Recipient>,
}

impl Envelope {
    /// The reverse-path as it is written between angle brackets (`""` for the null sender).
    pub fn sender_text(&self) -> String {
        self.sender
            .as_ref()
            .map(|a| a.to_string())
            .unwrap_or_default()
    }
}
