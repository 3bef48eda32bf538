use super::*;
use corvid_types::{BodyType, Notify};

fn addr(local: &str, domain: &str) -> Address {
    Address::new(local, domain)
}

fn mail(sender: Option<Address>) -> Command {
    Command::Mail {
        sender,
        params: MailParams::default(),
    }
}

fn rcpt(recipient: RcptTo) -> Command {
    Command::Rcpt {
        recipient,
        params: RcptParams::default(),
    }
}

fn s(text: &str) -> String {
    text.to_string()
}

#[test]
fn accepted_commands() {
    let cases: Vec<(&[u8], Command)> = vec![
        (b"EHLO mx.example.com", Command::Ehlo(s("mx.example.com"))),
        (b"ehlo [192.0.2.1]", Command::Ehlo(s("[192.0.2.1]"))),
        (b"EhLo x ", Command::Ehlo(s("x"))),
        (b"HELO x", Command::Helo(s("x"))),
        (b"MAIL FROM:<a@b.test>", mail(Some(addr("a", "b.test")))),
        (b"mail from:<a@b.test>", mail(Some(addr("a", "b.test")))),
        (b"MAIL FROM: <a@b.test>", mail(Some(addr("a", "b.test")))),
        (b"MAIL FROM:  <a@b.test>  ", mail(Some(addr("a", "b.test")))),
        (b"MAIL FROM:<>", mail(None)),
        (b"MAIL FROM:<@r.test:a@b>", mail(Some(addr("a", "b")))),
        (
            b"RCPT TO:<c@d.test>",
            rcpt(RcptTo::Address(addr("c", "d.test"))),
        ),
        (b"rcpt to:<POSTMASTER>", rcpt(RcptTo::Postmaster)),
        (
            b"RCPT TO:<postmaster@d>",
            rcpt(RcptTo::Address(addr("postmaster", "d"))),
        ),
        (
            b"RCPT TO:<j\xc3\xb6rg@x>",
            rcpt(RcptTo::Address(addr("jörg", "x"))),
        ),
        (b"DATA", Command::Data),
        (b"data ", Command::Data),
        (
            b"BDAT 0 LAST",
            Command::Bdat {
                size: 0,
                last: true,
            },
        ),
        (
            b"BDAT 1000",
            Command::Bdat {
                size: 1000,
                last: false,
            },
        ),
        (
            b"bdat 18446744073709551615 last",
            Command::Bdat {
                size: u64::MAX,
                last: true,
            },
        ),
        (b"RSET", Command::Rset),
        (b"NOOP", Command::Noop),
        (b"NOOP anything at all", Command::Noop),
        (b"QUIT", Command::Quit),
        (b"HELP", Command::Help(None)),
        (b"HELP MAIL", Command::Help(Some(s("MAIL")))),
        (b"VRFY alice", Command::Vrfy(s("alice"))),
        (b"EXPN list", Command::Expn(s("list"))),
        (b"STARTTLS", Command::StartTls),
        (b"starttls", Command::StartTls),
        (
            b"AUTH plain",
            Command::Auth {
                mechanism: s("PLAIN"),
                initial: None,
            },
        ),
        (
            b"AUTH PLAIN AGFsaWNlAHNlY3JldA==",
            Command::Auth {
                mechanism: s("PLAIN"),
                initial: Some(s("AGFsaWNlAHNlY3JldA==")),
            },
        ),
        (
            b"AUTH LOGIN =",
            Command::Auth {
                mechanism: s("LOGIN"),
                initial: Some(s("=")),
            },
        ),
        (
            b"AUTH SCRAM-SHA-256",
            Command::Auth {
                mechanism: s("SCRAM-SHA-256"),
                initial: None,
            },
        ),
        (b"ETRN example.com", Command::Etrn(s("example.com"))),
        (b"TURN", Command::NotImplemented(s("TURN"))),
        (b"send FROM:<a@b>", Command::NotImplemented(s("SEND"))),
        (b"SOML", Command::NotImplemented(s("SOML"))),
        (b"SAML", Command::NotImplemented(s("SAML"))),
    ];
    for (line, want) in cases {
        assert_eq!(
            parse_command(line),
            Ok(want),
            "line {:?}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn mail_and_rcpt_with_params() {
    let got = parse_command(b"MAIL FROM:<a@b> SIZE=100 BODY=8BITMIME");
    let Ok(Command::Mail { params, .. }) = got else {
        panic!("{got:?}");
    };
    assert_eq!(params.size, Some(100));
    assert_eq!(params.body, BodyType::EightBitMime);

    let got = parse_command("MAIL FROM:<jörg@bücher.test> SMTPUTF8".as_bytes());
    let Ok(Command::Mail { sender, params }) = got else {
        panic!("{got:?}");
    };
    assert_eq!(sender, Some(addr("jörg", "bücher.test")));
    assert!(params.smtputf8);

    let got = parse_command(b"RCPT TO:<a@b> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+40b");
    let Ok(Command::Rcpt { params, .. }) = got else {
        panic!("{got:?}");
    };
    assert_eq!(
        params.notify,
        Some(Notify {
            never: false,
            success: true,
            failure: true,
            delay: false
        })
    );
    assert_eq!(params.orcpt.as_deref(), Some("rfc822;a+40b"));
}

#[test]
fn refused_commands_get_exact_replies() {
    let long_local = format!("MAIL FROM:<{}@x>", "l".repeat(65));
    let cases: Vec<(&[u8], u16, &str)> = vec![
        // RFC 5321 4.2.4: unknown, empty, not a word, not UTF-8.
        (b"", 500, "5.5.2"),
        (b" ", 500, "5.5.2"),
        (b" NOOP", 500, "5.5.2"),
        (b"FOO", 500, "5.5.2"),
        (b"GET / HTTP/1.1", 500, "5.5.2"),
        (b"NO\0OP", 500, "5.5.2"),
        (b"NOOP\r", 500, "5.5.2"),
        (b"\x1b[A", 500, "5.5.2"),
        (b"EHLO\tx", 500, "5.5.2"),
        (b"MAIL\xff FROM:<a@b>", 500, "5.5.2"),
        (b"MAIL FROM:<\xff@b>", 500, "5.5.2"),
        (b"\xc3\xa9", 500, "5.5.2"),
        (b"DATA2", 500, "5.5.2"),
        // Bad arguments: 501 5.5.4.
        (b"EHLO", 501, "5.5.4"),
        (b"EHLO  ", 501, "5.5.4"),
        (b"HELO", 501, "5.5.4"),
        (b"EHLO a b", 501, "5.5.4"),
        (b"EHLO a\0", 501, "5.5.4"),
        (b"DATA x", 501, "5.5.4"),
        (b"RSET x", 501, "5.5.4"),
        (b"QUIT now", 501, "5.5.4"),
        (b"STARTTLS x", 501, "5.5.4"),
        (b"VRFY", 501, "5.5.4"),
        (b"EXPN", 501, "5.5.4"),
        (b"ETRN", 501, "5.5.4"),
        (b"HELP \x01", 501, "5.5.4"),
        (b"BDAT", 501, "5.5.4"),
        (b"BDAT x", 501, "5.5.4"),
        (b"BDAT -1", 501, "5.5.4"),
        (b"BDAT +1", 501, "5.5.4"),
        (b"BDAT 18446744073709551616", 501, "5.5.4"),
        (b"BDAT 10 FIRST", 501, "5.5.4"),
        (b"BDAT 10 LAST x", 501, "5.5.4"),
        (b"AUTH", 501, "5.5.4"),
        (b"AUTH PL@IN", 501, "5.5.4"),
        (b"AUTH ABCDEFGHIJKLMNOPQRSTU", 501, "5.5.4"),
        (b"AUTH PLAIN a b", 501, "5.5.4"),
        (b"MAIL", 501, "5.5.4"),
        (b"MAIL <a@b>", 501, "5.5.4"),
        (b"MAIL FROM <a@b>", 501, "5.5.4"),
        (b"MAIL TO:<a@b>", 501, "5.5.4"),
        (b"RCPT", 501, "5.5.4"),
        (b"RCPT FROM:<a@b>", 501, "5.5.4"),
        (b"RCPT TO <a@b>", 501, "5.5.4"),
        // Bad sender: 501 5.1.7.
        (b"MAIL FROM:", 501, "5.1.7"),
        (b"MAIL FROM:a@b", 501, "5.1.7"),
        (b"MAIL FROM:<a@b", 501, "5.1.7"),
        (b"MAIL FROM:<a@@b>", 501, "5.1.7"),
        (b"MAIL FROM:<a@b@c>", 501, "5.1.7"),
        (b"MAIL FROM:<ab>", 501, "5.1.7"),
        (b"MAIL FROM:<<a@b>>", 501, "5.1.7"),
        (b"MAIL FROM:<a@b>x", 501, "5.1.7"),
        (b"MAIL FROM:<a b@c>", 501, "5.1.7"),
        (b"MAIL FROM:<a\0@b>", 501, "5.1.7"),
        (b"MAIL FROM:<a\r\n@b>", 501, "5.1.7"),
        (b"MAIL FROM:<@b>", 501, "5.1.7"),
        (b"MAIL FROM:<a@>", 501, "5.1.7"),
        (b"MAIL FROM:<postmaster>", 501, "5.1.7"),
        (long_local.as_bytes(), 501, "5.1.7"),
        // Bad recipient: 501 5.1.3.
        (b"RCPT TO:<>", 501, "5.1.3"),
        (b"RCPT TO:", 501, "5.1.3"),
        (b"RCPT TO:c@d", 501, "5.1.3"),
        (b"RCPT TO:<c@d", 501, "5.1.3"),
        (b"RCPT TO:<c@@d>", 501, "5.1.3"),
        (b"RCPT TO:<c@d> <e@f>", 555, "5.5.4"),
        (b"RCPT TO:<c@d>,<e@f>", 501, "5.1.3"),
        (b"RCPT TO:<c@d..e>", 501, "5.1.3"),
        (b"RCPT TO:<c@[300.1.1.1]>", 501, "5.1.3"),
        // Parameters: 555 5.5.4.
        (b"MAIL FROM:<a@b> SIZE=x", 555, "5.5.4"),
        (b"MAIL FROM:<a@b> BODY=BINARYMIME", 555, "5.5.4"),
        (b"MAIL FROM:<a@b> XFOO", 555, "5.5.4"),
        (b"MAIL FROM:<a@b> SIZE=1 SIZE=1", 555, "5.5.4"),
        (b"MAIL FROM:<a@b> SIZE=1\0", 555, "5.5.4"),
        (b"RCPT TO:<a@b> NOTIFY=NEVER,DELAY", 555, "5.5.4"),
        (b"RCPT TO:<a@b> SIZE=1", 555, "5.5.4"),
        // RFC 6531 3.4: UTF-8 sender without SMTPUTF8.
        ("MAIL FROM:<jörg@x>".as_bytes(), 553, "5.6.7"),
        ("MAIL FROM:<a@bücher.test>".as_bytes(), 553, "5.6.7"),
        ("MAIL FROM:<jörg@x> SIZE=1".as_bytes(), 553, "5.6.7"),
    ];
    for (line, code, enhanced) in cases {
        let shown = String::from_utf8_lossy(line);
        let err = parse_command(line).expect_err(&shown);
        assert_eq!(err.reply.code, code, "line {shown:?}: {}", err.reply);
        let got = err.reply.enhanced.map(|e| e.to_string());
        assert_eq!(got.as_deref(), Some(enhanced), "line {shown:?}");
    }
}

#[test]
fn exact_wire_replies() {
    let wire = |line: &[u8]| {
        parse_command(line)
            .map_err(|e| e.reply.to_wire())
            .unwrap_err()
    };
    assert_eq!(
        wire(b"FOO"),
        b"500 5.5.2 Syntax error, command unrecognized\r\n"
    );
    assert_eq!(
        wire("MAIL FROM:<ü@x>".as_bytes()),
        b"553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"
    );
    assert_eq!(
        wire(b"STARTTLS now"),
        b"501 5.5.4 No parameters allowed\r\n"
    );
}
