use super::*;

fn mailbox(local: &str, domain: &str) -> Path {
    Path::Mailbox(Address::new(local, domain))
}

#[test]
fn accepted_paths() {
    let long_local = "l".repeat(64);
    let long_label = "d".repeat(63);
    let cases: Vec<(String, Path, &str)> = vec![
        ("<a@b.test>".into(), mailbox("a", "b.test"), ""),
        ("<>".into(), Path::Null, ""),
        ("<postmaster>".into(), Path::Postmaster, ""),
        ("<PostMaster>".into(), Path::Postmaster, ""),
        (" <a@b>".into(), mailbox("a", "b"), ""),
        ("   <a@b>".into(), mailbox("a", "b"), ""),
        ("<a@b> SIZE=10".into(), mailbox("a", "b"), "SIZE=10"),
        (
            "<a@b>   SIZE=10 BODY=8BITMIME".into(),
            mailbox("a", "b"),
            "SIZE=10 BODY=8BITMIME",
        ),
        ("<a@b> ".into(), mailbox("a", "b"), ""),
        (
            "<First.Last+tag@Sub.Example.COM>".into(),
            mailbox("First.Last+tag", "Sub.Example.COM"),
            "",
        ),
        (
            "<!#$%&'*+-/=?^_`{|}~@x>".into(),
            mailbox("!#$%&'*+-/=?^_`{|}~", "x"),
            "",
        ),
        ("<a..b@x>".into(), mailbox("a..b", "x"), ""),
        (
            "<\"john doe\"@x.test>".into(),
            mailbox("john doe", "x.test"),
            "",
        ),
        ("<\"a\\\"b\\\\c\"@x>".into(), mailbox("a\"b\\c", "x"), ""),
        ("<\"a>b<c\"@x>".into(), mailbox("a>b<c", "x"), ""),
        ("<\"a@b\"@x>".into(), mailbox("a@b", "x"), ""),
        (
            "<@r1.test,@r2.test:u@d.test>".into(),
            mailbox("u", "d.test"),
            "",
        ),
        ("<@[1.2.3.4]:u@d>".into(), mailbox("u", "d"), ""),
        ("<@[IPv6:::1],@r:u@d>".into(), mailbox("u", "d"), ""),
        ("<u@[192.0.2.1]>".into(), mailbox("u", "[192.0.2.1]"), ""),
        (
            "<u@[IPv6:2001:db8::1]>".into(),
            mailbox("u", "[IPv6:2001:db8::1]"),
            "",
        ),
        ("<u@[ipv6:::1]>".into(), mailbox("u", "[ipv6:::1]"), ""),
        ("<u@123.test>".into(), mailbox("u", "123.test"), ""),
        ("<u@a-b.c>".into(), mailbox("u", "a-b.c"), ""),
        (
            "<jörg@bücher.example>".into(),
            mailbox("jörg", "bücher.example"),
            "",
        ),
        ("<用户@例子.广告>".into(), mailbox("用户", "例子.广告"), ""),
        ("<\"jö rg\"@x>".into(), mailbox("jö rg", "x"), ""),
        (format!("<{long_local}@x>"), mailbox(&long_local, "x"), ""),
        (
            format!("<a@{long_label}.x>"),
            mailbox("a", &format!("{long_label}.x")),
            "",
        ),
    ];
    for (input, want, rest) in cases {
        assert_eq!(parse_path(&input), Ok((want, rest)), "input {input:?}");
    }
}

#[test]
fn refused_paths() {
    let long_local = "l".repeat(65);
    let long_label = "d".repeat(64);
    let long_path = format!("<{}@{}>", "l".repeat(64), vec!["d".repeat(47); 4].join("."));
    let cases: Vec<(String, &str)> = vec![
        ("a@b".into(), "angle brackets required"),
        ("".into(), "angle brackets required"),
        ("<a@b".into(), "unbalanced angle bracket"),
        ("<<a@b>>".into(), "nested angle bracket"),
        ("<a<b@c>".into(), "nested angle bracket"),
        ("<a@b>x".into(), "garbage after path"),
        ("<a@b>>".into(), "garbage after path"),
        ("<a@b>,<c@d>".into(), "garbage after path"),
        ("<ab>".into(), "missing @"),
        ("<a@b@c>".into(), "invalid character in domain"),
        ("<@a@b>".into(), "bad source route"),
        ("<@b>".into(), "bad source route"),
        ("<@r:>".into(), "missing @"),
        ("<@r,u@d>".into(), "bad source route"),
        ("<@r u@d>".into(), "bad source route"),
        ("<a b@c>".into(), "invalid character in local part"),
        ("<a@b c>".into(), "invalid character in domain"),
        ("<a\0@b>".into(), "invalid character in local part"),
        ("<a@b\0>".into(), "invalid character in domain"),
        ("<a\r\n@b>".into(), "invalid character in local part"),
        ("<a\u{85}@b>".into(), "invalid character in local part"),
        ("<a\u{a0}@b>".into(), "invalid character in local part"),
        ("<a\t@b>".into(), "invalid character in local part"),
        ("<a(c)@b>".into(), "invalid character in local part"),
        ("<\"\"@b>".into(), "empty local part"),
        ("<@b.test>".into(), "bad source route"),
        ("<\"a\"b@c>".into(), "missing @"),
        (
            "<\"a\0\"@b>".into(),
            "invalid character in quoted local part",
        ),
        ("<\"a\\\u{1}\"@b>".into(), "bad quoted pair"),
        ("<\"ab@c>".into(), "unbalanced angle bracket"),
        ("<a@>".into(), "empty domain"),
        ("<a@.b>".into(), "empty domain label"),
        ("<a@b.>".into(), "empty domain label"),
        ("<a@b..c>".into(), "empty domain label"),
        ("<a@-b.c>".into(), "hyphen at label edge"),
        ("<a@b-.c>".into(), "hyphen at label edge"),
        ("<a@b_c.d>".into(), "invalid character in domain"),
        ("<a@[1.2.3]>".into(), "bad address literal"),
        ("<a@[1.2.3.4>".into(), "bad address literal"),
        ("<a@[1.2.3.4]x>".into(), "bad address literal"),
        ("<a@[IPv6:1.2.3.4]>".into(), "bad address literal"),
        ("<a@[tag:stuff]>".into(), "bad address literal"),
        ("<a@[[1.2.3.4]]>".into(), "bad address literal"),
        ("<a@[]>".into(), "bad address literal"),
        ("<a@x[1.2.3.4]>".into(), "invalid character in domain"),
        (format!("<{long_local}@x>"), "local part too long"),
        (format!("<a@{long_label}.x>"), "domain label too long"),
        (long_path, "path too long"),
    ];
    for (input, want) in cases {
        assert_eq!(parse_path(&input), Err(want), "input {input:?}");
    }
}

#[test]
fn path_limit_is_exact() {
    // "<" + 64 + "@" + 189 + ">" = 256 octets: allowed.
    let domain = format!("{}.{}.{}", "a".repeat(63), "b".repeat(63), "c".repeat(61));
    let fits = format!("<{}@{}>", "l".repeat(64), domain);
    assert_eq!(fits.len(), 256);
    assert!(parse_path(&fits).is_ok());
    let over = format!("<{}@{}x>", "l".repeat(64), domain);
    assert_eq!(parse_path(&over), Err("path too long"));
}

#[test]
fn domain_limit() {
    // A path cannot carry a domain over 255 octets (the path limit is reached first), but the
    // domain check stands on its own too: 4 labels of 63 + 3 dots = 255.
    let max = vec!["d".repeat(63); 4].join(".");
    assert_eq!(check_domain(&max), Ok(()));
    assert_eq!(check_domain(&(max + ".x")), Err("domain too long"));
}
