use super::*;

fn mail(f: impl FnOnce(&mut MailParams)) -> MailParams {
    let mut p = MailParams::default();
    f(&mut p);
    p
}

fn notify(never: bool, success: bool, failure: bool, delay: bool) -> Option<Notify> {
    Some(Notify {
        never,
        success,
        failure,
        delay,
    })
}

#[test]
fn mail_params_accepted() {
    let cases: Vec<(&str, MailParams)> = vec![
        ("", MailParams::default()),
        ("   ", MailParams::default()),
        ("SIZE=0", mail(|p| p.size = Some(0))),
        ("size=12345", mail(|p| p.size = Some(12345))),
        (
            "SIZE=18446744073709551615",
            mail(|p| p.size = Some(u64::MAX)),
        ),
        ("BODY=7BIT", mail(|p| p.body = BodyType::SevenBit)),
        ("body=8bitmime", mail(|p| p.body = BodyType::EightBitMime)),
        ("SMTPUTF8", mail(|p| p.smtputf8 = true)),
        ("smtputf8", mail(|p| p.smtputf8 = true)),
        ("REQUIRETLS", mail(|p| p.requiretls = true)),
        ("requiretls", mail(|p| p.requiretls = true)),
        ("RET=FULL", mail(|p| p.ret = Some(Ret::Full))),
        ("ret=hdrs", mail(|p| p.ret = Some(Ret::Headers))),
        (
            "ENVID=QQ314159",
            mail(|p| p.envid = Some("QQ314159".into())),
        ),
        ("ENVID=a+2Bb", mail(|p| p.envid = Some("a+2Bb".into()))),
        ("AUTH=<>", mail(|p| p.auth = Some("<>".into()))),
        (
            "AUTH=e+3Dmc2@example.com",
            mail(|p| p.auth = Some("e+3Dmc2@example.com".into())),
        ),
        (
            "SIZE=10  BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=y",
            mail(|p| {
                p.size = Some(10);
                p.body = BodyType::EightBitMime;
                p.smtputf8 = true;
                p.ret = Some(Ret::Headers);
                p.envid = Some("x".into());
                p.auth = Some("y".into());
            }),
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse_mail(input), Ok(want), "input {input:?}");
    }
}

#[test]
fn mail_params_refused_with_555() {
    let long_envid = format!("ENVID={}", "e".repeat(101));
    let cases: Vec<&str> = vec![
        "SIZE",
        "SIZE=",
        "SIZE=abc",
        "SIZE=-1",
        "SIZE=+1",
        "SIZE=1.5",
        "SIZE=18446744073709551616",
        "SIZE=000000000000000000001",
        "SIZE=1 SIZE=2",
        "size=1 SIZE=1",
        "BODY=BINARYMIME",
        "BODY=8BIT",
        "BODY",
        "SMTPUTF8=yes",
        "SMTPUTF8 SMTPUTF8",
        "REQUIRETLS=yes",
        "REQUIRETLS REQUIRETLS",
        "RET=NONE",
        "RET",
        "ENVID=a b",
        "ENVID=a+2b",
        "ENVID=+00",
        "ENVID=é",
        &long_envid,
        "ENVID",
        "AUTH=a=b",
        "AUTH=a+zz",
        "AUTH",
        "FOO=bar",
        "FOO",
        "NOTIFY=NEVER",
        "ORCPT=rfc822;a@b",
        "=x",
        "-X=1",
        "X_Y=1",
        "SIZE=1\0",
        "SIZE=\u{1}",
        "BODY=8BITMIME\r",
        "SIZE=1=2",
    ];
    for input in cases {
        let reply = parse_mail(input).expect_err(input);
        assert_eq!(reply.code, 555, "input {input:?}");
        assert_eq!(
            reply.enhanced.map(|e| e.to_string()).as_deref(),
            Some("5.5.4")
        );
    }
}

#[test]
fn rcpt_params() {
    let ok: Vec<(&str, RcptParams)> = vec![
        ("", RcptParams::default()),
        (
            "NOTIFY=NEVER",
            RcptParams {
                notify: notify(true, false, false, false),
                orcpt: None,
            },
        ),
        (
            "notify=success",
            RcptParams {
                notify: notify(false, true, false, false),
                orcpt: None,
            },
        ),
        (
            "NOTIFY=SUCCESS,FAILURE,DELAY",
            RcptParams {
                notify: notify(false, true, true, true),
                orcpt: None,
            },
        ),
        (
            "NOTIFY=delay,Failure",
            RcptParams {
                notify: notify(false, false, true, true),
                orcpt: None,
            },
        ),
        (
            "ORCPT=rfc822;a+40b",
            RcptParams {
                notify: None,
                orcpt: Some("rfc822;a+40b".into()),
            },
        ),
        (
            "ORCPT=rfc822;a@b",
            RcptParams {
                notify: None,
                orcpt: Some("rfc822;a@b".into()),
            },
        ),
        (
            "ORCPT=utf-8;j\\x{F6}rg@x",
            RcptParams {
                notify: None,
                orcpt: Some("utf-8;j\\x{F6}rg@x".into()),
            },
        ),
        (
            "ORCPT=rfc822;x@y NOTIFY=FAILURE",
            RcptParams {
                notify: notify(false, false, true, false),
                orcpt: Some("rfc822;x@y".into()),
            },
        ),
    ];
    for (input, want) in ok {
        assert_eq!(parse_rcpt(input), Ok(want), "input {input:?}");
    }
    let refused = [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SUCCESS,NEVER",
        "NOTIFY=",
        "NOTIFY",
        "NOTIFY=SUCCESS,",
        "NOTIFY=,DELAY",
        "NOTIFY=ALWAYS",
        "NOTIFY=NEVER NOTIFY=NEVER",
        "ORCPT=a@b",
        "ORCPT=;a@b",
        "ORCPT=rfc822;",
        "ORCPT=rfc 822;a",
        "ORCPT=rfc822;a+4",
        "ORCPT=utf-8;",
        "ORCPT",
        "SIZE=10",
        "SMTPUTF8",
        "XFOO",
    ];
    for input in refused {
        let reply = parse_rcpt(input).expect_err(input);
        assert_eq!(reply.code, 555, "input {input:?}");
    }
}

#[test]
fn reply_texts_name_the_parameter() {
    let text = |r: Result<MailParams, Reply>| r.map_err(|e| e.text()).unwrap_err();
    assert_eq!(text(parse_mail("XFOO=1")), "Unsupported parameter XFOO");
    assert_eq!(
        text(parse_mail("size=x")),
        "Invalid value for parameter SIZE"
    );
    assert_eq!(
        text(parse_mail("RET=FULL ret=hdrs")),
        "Duplicate parameter RET"
    );
    assert_eq!(text(parse_mail("X\u{1}=1")), "Malformed parameter");
}
