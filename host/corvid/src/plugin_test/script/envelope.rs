//! The envelope in a script: ESMTP MAIL parameters and recipients with their RCPT
//! parameters, as `corvid plugin test` and the captures of `[record]` write them.

use super::address;
use anyhow::{bail, Result};
use corvid_types::{BodyType, MailParams, Notify, RcptParams, Recipient, Ret};
use serde::Deserialize;

/// ESMTP MAIL parameters (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461 RET and
/// ENVID, RFC 4954 AUTH, RFC 8689 REQUIRETLS).
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailParamsSection {
    pub size: Option<u64>,
    /// `7bit` or `8bitmime`.
    pub body: Option<String>,
    pub smtputf8: bool,
    /// `full` or `hdrs`.
    pub ret: Option<String>,
    pub envid: Option<String>,
    pub auth: Option<String>,
    pub requiretls: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum RcptSpec {
    Plain(String),
    /// RFC 3461 parameters: `{ address = "a@b", notify = ["success", "failure"], orcpt = "rfc822;a@b" }`.
    Full {
        address: String,
        #[serde(default)]
        notify: Option<Vec<String>>,
        #[serde(default)]
        orcpt: Option<String>,
        /// The server refused it after the plugins let it through (an unknown user, no
        /// relaying): it is not added to the envelope. Set by `[record]` in captures.
        #[serde(default)]
        server_refused: bool,
        /// The server took it without asking the chain (the postmaster, RFC 5321 4.5.1): it
        /// joins the envelope and no hook runs for it. Set by `[record]` in captures.
        #[serde(default)]
        server_accepted: bool,
    },
}

impl MailParamsSection {
    pub fn params(&self) -> Result<MailParams> {
        Ok(MailParams {
            size: self.size,
            body: match self.body.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None | Some("7bit") => BodyType::SevenBit,
                Some("8bitmime") => BodyType::EightBitMime,
                Some(other) => bail!("mail_params.body: {other:?} is not 7bit or 8bitmime"),
            },
            smtputf8: self.smtputf8,
            ret: match self.ret.as_deref().map(str::to_ascii_lowercase).as_deref() {
                None => None,
                Some("full") => Some(Ret::Full),
                Some("hdrs") => Some(Ret::Headers),
                Some(other) => bail!("mail_params.ret: {other:?} is not full or hdrs"),
            },
            envid: self.envid.clone(),
            auth: self.auth.clone(),
            requiretls: self.requiretls,
        })
    }
}

impl RcptSpec {
    pub fn recipient(&self) -> Result<Recipient> {
        let (text, notify, orcpt) = match self {
            RcptSpec::Plain(t) => (t, None, None),
            RcptSpec::Full {
                address,
                notify,
                orcpt,
                ..
            } => (address, notify.as_ref(), orcpt.clone()),
        };
        let Some(address) = address(text)? else {
            bail!("empty recipient")
        };
        let notify = match notify {
            None => None,
            Some(words) => {
                let mut n = Notify::default();
                for w in words {
                    match w.to_ascii_lowercase().as_str() {
                        "never" => n.never = true,
                        "success" => n.success = true,
                        "failure" => n.failure = true,
                        "delay" => n.delay = true,
                        other => bail!("notify: {other:?} is not never/success/failure/delay"),
                    }
                }
                Some(n)
            }
        };
        Ok(Recipient {
            address,
            params: RcptParams { notify, orcpt },
        })
    }

    /// True when the server took it without the chain (see `server_accepted`).
    pub fn server_accepted(&self) -> bool {
        matches!(
            self,
            RcptSpec::Full {
                server_accepted: true,
                ..
            }
        )
    }

    /// True when the server refused it after the plugins (see `server_refused`).
    pub fn server_refused(&self) -> bool {
        matches!(
            self,
            RcptSpec::Full {
                server_refused: true,
                ..
            }
        )
    }

    pub fn text(&self) -> &str {
        match self {
            RcptSpec::Plain(t) => t,
            RcptSpec::Full { address, .. } => address,
        }
    }
}
