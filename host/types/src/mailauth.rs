//! Mail authentication as data: the typed results of the inbound SPF (RFC 7208), DKIM
//! (RFC 6376), DMARC (RFC 7489) and ARC (RFC 8617) checks, the signing choice for outbound DKIM,
//! and the [`MailAuth`] seam through which the server asks for them without resolving DNS or
//! knowing the library that does it (`corvid-auth`, wired by the binary).
//!
//! The result types are plain serde data, so that plugins (through the WIT `auth-results`
//! interface) and logs see exactly what the host computed.

use crate::{Address, ConnectionInfo, Verdict};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// SPF result codes (RFC 7208 section 2.6).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpfVerdict {
    Pass,
    Fail,
    Softfail,
    Neutral,
    None,
    Temperror,
    Permerror,
}

/// Which identity SPF checked (RFC 7208 section 2.3 and 2.4).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpfIdentity {
    /// The MAIL FROM domain.
    Mailfrom,
    /// The HELO/EHLO name, for the null reverse-path `<>` (RFC 7208 section 2.4).
    Helo,
}

/// SPF for one transaction, computed at MAIL.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpfCheck {
    pub result: SpfVerdict,
    pub identity: SpfIdentity,
    /// The domain whose record was evaluated.
    pub domain: String,
    /// The MAIL FROM address, empty for `<>`.
    pub mail_from: String,
    pub helo: String,
    pub client_ip: IpAddr,
    /// The domain's explanation (`exp=`) on fail, if any.
    #[serde(default)]
    pub explanation: Option<String>,
}

/// DKIM result codes (RFC 8601 section 2.7.1), plus `not_checked` for a signature beyond
/// `auth_checks.max_dkim_signatures`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DkimVerdict {
    Pass,
    Fail,
    Neutral,
    Temperror,
    Permerror,
    NotChecked,
}

/// One `DKIM-Signature:` field and its result, in header order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DkimCheck {
    pub result: DkimVerdict,
    /// `d=`, empty when the signature could not be parsed.
    pub domain: String,
    /// `s=`
    pub selector: String,
    /// `a=`: `rsa-sha256`, `ed25519-sha256`, `rsa-sha1`; empty when unknown.
    pub algorithm: String,
    /// `i=`, if present.
    #[serde(default)]
    pub identity: Option<String>,
    /// `l=`: the signature covers only this many body octets (RFC 6376 section 8.2).
    #[serde(default)]
    pub body_length: Option<u64>,
    /// The first 8 characters of `b=` (RFC 6008), to tell signatures apart.
    pub header_b: String,
    /// Why it did not pass, for humans.
    #[serde(default)]
    pub reason: Option<String>,
}

/// DMARC result codes (RFC 7489 section 11.2).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DmarcVerdict {
    Pass,
    Fail,
    None,
    Temperror,
    Permerror,
}

/// A DMARC policy (RFC 7489 section 6.3, `p=` and `sp=`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DmarcPolicy {
    None,
    Quarantine,
    Reject,
}

/// DMARC for the RFC 5322.From domain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DmarcCheck {
    pub result: DmarcVerdict,
    /// The RFC 5322.From domain (empty: none, or several different ones: exempt).
    pub from_domain: String,
    /// The policy that applies to this message: `p=`, or `sp=` when the record was found
    /// at the organisational domain of a subdomain (RFC 7489 section 6.6.3).
    pub policy: DmarcPolicy,
    /// `pct=` of the record (RFC 7489 section 6.6.4), 100 without a record.
    pub pct: u8,
    /// An aligned SPF pass (RFC 7489 section 3.1.2).
    pub spf_aligned: bool,
    /// An aligned DKIM pass (RFC 7489 section 3.1.1).
    pub dkim_aligned: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// ARC chain validation (RFC 8617 section 5.2).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArcVerdict {
    Pass,
    Fail,
    None,
    Temperror,
    Permerror,
}

/// ARC for the message.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArcCheck {
    pub result: ArcVerdict,
    /// Number of ARC sets found.
    pub sets: u32,
    #[serde(default)]
    pub reason: Option<String>,
}

/// All results of one message, at end of DATA.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthResults {
    /// From MAIL (absent when SPF was not checked, e.g. the checks are off for the session).
    #[serde(default)]
    pub spf: Option<SpfCheck>,
    pub dkim: Vec<DkimCheck>,
    pub dmarc: DmarcCheck,
    pub arc: ArcCheck,
}

impl SpfVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            SpfVerdict::Pass => "pass",
            SpfVerdict::Fail => "fail",
            SpfVerdict::Softfail => "softfail",
            SpfVerdict::Neutral => "neutral",
            SpfVerdict::None => "none",
            SpfVerdict::Temperror => "temperror",
            SpfVerdict::Permerror => "permerror",
        }
    }
}

impl DkimVerdict {
    /// The RFC 8601 result keyword; a signature not checked is reported `neutral`.
    pub fn as_str(self) -> &'static str {
        match self {
            DkimVerdict::Pass => "pass",
            DkimVerdict::Fail => "fail",
            DkimVerdict::Neutral | DkimVerdict::NotChecked => "neutral",
            DkimVerdict::Temperror => "temperror",
            DkimVerdict::Permerror => "permerror",
        }
    }
}

impl DmarcVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcVerdict::Pass => "pass",
            DmarcVerdict::Fail => "fail",
            DmarcVerdict::None => "none",
            DmarcVerdict::Temperror => "temperror",
            DmarcVerdict::Permerror => "permerror",
        }
    }
}

impl DmarcPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcPolicy::None => "none",
            DmarcPolicy::Quarantine => "quarantine",
            DmarcPolicy::Reject => "reject",
        }
    }
}

impl ArcVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ArcVerdict::Pass => "pass",
            ArcVerdict::Fail => "fail",
            ArcVerdict::None => "none",
            ArcVerdict::Temperror => "temperror",
            ArcVerdict::Permerror => "permerror",
        }
    }
}

/// What a plugin may choose for the DKIM signature of one message; the default signs for the
/// From: domain with every active key of that domain.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SigningChoice {
    /// Sign for this domain instead of the From: domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Only the key with this selector.
    #[serde(default)]
    pub selector: Option<String>,
}

/// Whether and how the message of a transaction is DKIM-signed at queue time (clients that may
/// relay only: authenticated users and `server.relay_networks`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "signing", rename_all = "lowercase")]
pub enum SigningRequest {
    /// The configured keys of the From: domain.
    #[default]
    Default,
    /// A domain and/or selector a plugin chose.
    Choose(SigningChoice),
    /// A plugin asked that this message not be signed.
    Suppress,
}

/// The inbound checks and outbound signing, as the SMTP server sees them. Implemented by the
/// binary on top of `corvid-auth`; the server never resolves DNS itself. Every method returns
/// a value: DNS trouble is a `temperror` result, never an error or a hang (the implementation
/// bounds its time).
#[async_trait]
pub trait MailAuth: Send + Sync {
    /// Whether a session with this client is checked at all (inbound). `trusted` is true for
    /// authenticated clients and relay networks, whose mail is signed instead of checked.
    fn checks(&self, trusted: bool) -> bool;

    /// Whether any DKIM key is configured (outbound signing for trusted clients).
    fn signs(&self) -> bool;

    /// SPF at MAIL: the MAIL FROM domain, or the HELO name for the null sender `<>`
    /// (RFC 7208 section 2.4).
    async fn check_spf(&self, conn: &ConnectionInfo, sender: Option<&Address>) -> SpfCheck;

    /// DKIM, ARC and DMARC of the complete message as received, with the SPF result from MAIL.
    async fn check_message(&self, content: &[u8], spf: Option<&SpfCheck>) -> AuthResults;

    /// The default policy without a plugin (`auth_checks.dmarc_policy`): `Continue`, a
    /// `Quarantine(reason)` or a `Reject(550 5.7.1)`.
    fn default_verdict(&self, results: &AuthResults) -> Verdict;

    /// `header_section` (or the whole content) with every `Authentication-Results:` field of
    /// our authserv-id removed (RFC 8601 section 5), and ours in front of it
    /// (`Authentication-Results: ...\r\n`).
    fn stamp(&self, content: &[u8], results: &AuthResults) -> Vec<u8>;

    /// Removes from `content`'s header section the `Authentication-Results:` fields of our
    /// authserv-id (RFC 8601 section 5), for mail that is not checked (trusted clients):
    /// nobody may hand us results in our name. In place: the usual message has none, and is
    /// then left untouched (no copy of the message per submission).
    fn strip_forged(&self, content: &mut Vec<u8>);

    /// The `DKIM-Signature:` fields to put in front of `content` (empty: no key applies, or
    /// signing failed and was logged).
    fn sign(&self, content: &[u8], choice: &SigningChoice) -> String;

    /// Whether checked mail that Corvid forwards is ARC-sealed (RFC 8617 section 5.1): a
    /// sealing domain with a key is configured. Default: no.
    fn seals(&self) -> bool {
        false
    }

    /// Whether mail for `domain`, though it may be a local domain, leaves this server by a
    /// configured route (an MX or a relay host): its mail is forwarded. Default: no.
    fn routes_away(&self, _domain: &str) -> bool {
        false
    }

    /// The ARC set (`ARC-Seal:`, `ARC-Message-Signature:`, `ARC-Authentication-Results:`,
    /// CRLF-terminated) to put in front of `content`, the message as it will be forwarded;
    /// `results` are the checks made when it was received (the seal's `cv=` is their ARC
    /// result). Empty: not sealed (no key, a chain that already failed, or an error, logged).
    async fn arc_seal(
        &self,
        _content: &[u8],
        _results: &AuthResults,
        _remote_ip: IpAddr,
    ) -> String {
        String::new()
    }
}
