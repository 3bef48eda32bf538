//! SMTP commands (RFC 5321 4.1) and the exact reply for each way a line can be wrong.

use crate::params;
use crate::path::{self, Path};
use corvid_types::{Address, MailParams, RcptParams, Reply};

/// RFC 4422 3.1: `sasl-mech = 1*20mech-char`.
const MAX_MECHANISM: usize = 20;

/// One parsed command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// RFC 5321 4.1.1.1; the argument is the client's name as sent.
    Ehlo(String),
    Helo(String),
    /// RFC 5321 4.1.1.2; `sender == None` is the null reverse-path `<>`.
    Mail {
        sender: Option<Address>,
        params: MailParams,
    },
    /// RFC 5321 4.1.1.3.
    Rcpt {
        recipient: RcptTo,
        params: RcptParams,
    },
    /// RFC 5321 4.1.1.4.
    Data,
    /// RFC 3030 2: `BDAT size [LAST]`.
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    /// RFC 5321 4.1.1.8; the optional topic.
    Help(Option<String>),
    /// RFC 5321 4.1.1.6.
    Vrfy(String),
    /// RFC 5321 4.1.1.7.
    Expn(String),
    /// RFC 3207 4.
    StartTls,
    /// RFC 4954 4: mechanism upper-cased, initial response as sent (base64 or `=`).
    Auth {
        mechanism: String,
        initial: Option<String>,
    },
    /// RFC 1985: the queue or domain to start.
    Etrn(String),
    /// A verb that exists but is not implemented: TURN, SEND, SOML, SAML (the server answers
    /// 502 5.5.1, RFC 5321 4.2.4). The verb is upper-cased.
    NotImplemented(String),
}

/// The forward-path of RCPT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RcptTo {
    /// `<postmaster>` without a domain, any case (RFC 5321 4.5.1).
    Postmaster,
    Address(Address),
}

/// A line that is not a valid command, with the exact reply to send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reply}")]
pub struct ParseError {
    pub reply: Reply,
}

impl ParseError {
    fn new(code: u16, enhanced: &str, text: &str) -> Self {
        ParseError {
            reply: Reply::new(code, enhanced, text),
        }
    }
}

impl From<Reply> for ParseError {
    fn from(reply: Reply) -> Self {
        ParseError { reply }
    }
}

/// RFC 5321 4.2.4: unknown verb, empty line, or a verb that is not a word.
fn unrecognized() -> ParseError {
    ParseError::new(500, "5.5.2", "Syntax error, command unrecognized")
}

/// RFC 5321 4.3.2: 501 for bad arguments; RFC 3463 3.6: 5.5.4 invalid command arguments.
fn bad_args(text: &str) -> ParseError {
    ParseError::new(501, "5.5.4", text)
}

/// Parses one command line (without its CRLF). Verbs are case-insensitive (RFC 5321 2.4).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| unrecognized())?;
    let (verb, args) = match line.split_once(' ') {
        Some((verb, args)) => (verb, args.trim_matches(' ')),
        None => (line, ""),
    };
    if verb.is_empty() || !verb.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(unrecognized());
    }
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "MAIL" => parse_mail(args),
        "RCPT" => parse_rcpt(args),
        _ if args.chars().any(char::is_control) => Err(bad_args("Invalid character in arguments")),
        _ => parse_simple(&verb, args),
    }
}

/// Every verb but MAIL and RCPT; `args` has no control characters.
fn parse_simple(verb: &str, args: &str) -> Result<Command, ParseError> {
    match verb {
        "EHLO" => hello(args).map(Command::Ehlo),
        "HELO" => hello(args).map(Command::Helo),
        "DATA" => no_args(args, Command::Data),
        "BDAT" => parse_bdat(args),
        "RSET" => no_args(args, Command::Rset),
        // RFC 5321 4.1.1.9: NOOP may carry a string, which is ignored.
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(args, Command::Quit),
        "HELP" => Ok(Command::Help((!args.is_empty()).then(|| args.to_string()))),
        "VRFY" => required(args, "VRFY").map(Command::Vrfy),
        "EXPN" => required(args, "EXPN").map(Command::Expn),
        "ETRN" => required(args, "ETRN").map(Command::Etrn),
        // RFC 3207 4: "501 Syntax error (no parameters allowed)".
        "STARTTLS" => no_args(args, Command::StartTls),
        "AUTH" => parse_auth(args),
        "TURN" | "SEND" | "SOML" | "SAML" => Ok(Command::NotImplemented(verb.to_string())),
        _ => Err(unrecognized()),
    }
}

fn no_args(args: &str, command: Command) -> Result<Command, ParseError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(bad_args("No parameters allowed"))
    }
}

fn required(args: &str, verb: &str) -> Result<String, ParseError> {
    if args.is_empty() {
        Err(bad_args(&format!("{verb} requires an argument")))
    } else {
        Ok(args.to_string())
    }
}

/// RFC 5321 4.1.1.1: `EHLO domain / address-literal`. The name is not checked further (many
/// clients send names that are not domains); it must be one word.
fn hello(args: &str) -> Result<String, ParseError> {
    if args.is_empty() {
        return Err(bad_args("Domain name required"));
    }
    if args.contains(' ') {
        return Err(bad_args("Invalid domain name"));
    }
    Ok(args.to_string())
}

/// RFC 3030 2: `BDAT 1*DIGIT [ SP "LAST" ]`.
fn parse_bdat(args: &str) -> Result<Command, ParseError> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| bad_args("Syntax: BDAT size [LAST]"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(bad_args("Syntax: BDAT size [LAST]")),
    };
    if words.next().is_some() {
        return Err(bad_args("Syntax: BDAT size [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

/// RFC 4954 4: `AUTH mechanism [initial-response]`.
fn parse_auth(args: &str) -> Result<Command, ParseError> {
    let mut words = args.split(' ').filter(|w| !w.is_empty());
    let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
    let mech_ok = !mechanism.is_empty()
        && mechanism.len() <= MAX_MECHANISM
        && mechanism
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !mech_ok {
        return Err(bad_args("Syntax: AUTH mechanism [initial-response]"));
    }
    let initial = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(bad_args("Syntax: AUTH mechanism [initial-response]"));
    }
    Ok(Command::Auth { mechanism, initial })
}

/// Strips a case-insensitive `FROM:` / `TO:` prefix.
fn strip_keyword<'a>(args: &'a str, keyword: &str) -> Option<&'a str> {
    let head = args.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| &args[keyword.len()..])
}

/// RFC 5321 4.1.1.2: `MAIL FROM:<reverse-path> [SP Mail-parameters]`.
fn parse_mail(args: &str) -> Result<Command, ParseError> {
    let rest =
        strip_keyword(args, "FROM:").ok_or_else(|| bad_args("Syntax: MAIL FROM:<address>"))?;
    let bad_sender = || ParseError::new(501, "5.1.7", "Bad sender address syntax");
    let (path, param_text) = path::parse_path(rest).map_err(|_| bad_sender())?;
    let sender = match path {
        Path::Null => None,
        Path::Mailbox(address) => Some(address),
        Path::Postmaster => return Err(bad_sender()),
    };
    let params = params::parse_mail(param_text)?;
    // RFC 6531 3.4: a UTF-8 address needs the SMTPUTF8 parameter.
    if sender.as_ref().is_some_and(Address::is_utf8) && !params.smtputf8 {
        return Err(ParseError::new(
            553,
            "5.6.7",
            "Non-ASCII address requires SMTPUTF8",
        ));
    }
    Ok(Command::Mail { sender, params })
}

/// RFC 5321 4.1.1.3: `RCPT TO:( "<Postmaster@" Domain ">" / "<Postmaster>" / Forward-path )
/// [SP Rcpt-parameters]`.
fn parse_rcpt(args: &str) -> Result<Command, ParseError> {
    let rest = strip_keyword(args, "TO:").ok_or_else(|| bad_args("Syntax: RCPT TO:<address>"))?;
    let bad_recipient = || ParseError::new(501, "5.1.3", "Bad recipient address syntax");
    let (path, param_text) = path::parse_path(rest).map_err(|_| bad_recipient())?;
    let recipient = match path {
        Path::Null => return Err(bad_recipient()),
        Path::Postmaster => RcptTo::Postmaster,
        Path::Mailbox(address) => RcptTo::Address(address),
    };
    let params = params::parse_rcpt(param_text)?;
    Ok(Command::Rcpt { recipient, params })
}

#[cfg(test)]
mod tests;
