"""RFC 5321 conversation over raw sockets: greeting, EHLO, the small verbs, reply codes for
unknown commands, syntax and sequence errors, enhanced status codes, addresses and parameters."""

import pytest

from conftest import ENHANCED, HOSTNAME, split_delivered

LENIENT = {"limits": {"max_errors": 100}}


@pytest.fixture
def srv(make_server):
    return make_server(LENIENT)


def test_greeting_names_the_host(server):
    with server.connect() as c:
        r = c.greet()
        assert r.raw.startswith(f"220 {HOSTNAME} ".encode()), r
        assert len(r.lines) == 1


def test_ehlo_lists_extensions(server):
    with server.connect() as c:
        c.greet()
        r = c.ehlo("client.test")
        assert r.lines[0].startswith(HOSTNAME), r
        keywords = [l.upper() for l in r.lines[1:]]
        size = server.config["limits"]["max_message_size"]
        for kw in ["PIPELINING", f"SIZE {size}", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]:
            assert kw in keywords, f"{kw} not advertised: {r}"
        # Only the last line has "250 ", every other "250-".
        raw_lines = r.raw.split(b"\r\n")[:-1]
        assert all(l.startswith(b"250-") for l in raw_lines[:-1]) and raw_lines[-1].startswith(b"250 ")
        # BINARYMIME is not offered (BODY=BINARYMIME gets 555), so not advertised.
        assert not any(k.startswith("BINARYMIME") for k in keywords), r


def test_helo_reply(server):
    with server.connect() as c:
        c.greet()
        r = c.expect("HELO client.test", 250)
        assert r.lines[0].startswith(HOSTNAME)
        # HELO sessions get no service extensions (RFC 5321 2.2.1)
        c.expect("MAIL FROM:<a@example.org> SIZE=100", 555)
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_small_verbs(srv):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("NOOP", 250, "2.0.0")
        c.expect("NOOP anything at all", 250, "2.0.0")
        c.expect("HELP", 214)
        c.expect("HELP MAIL", 214)
        c.expect("VRFY alice", 252)
        c.expect("VRFY <alice@corvid.test>", 252)
        c.expect("EXPN team", 502)
        c.expect("RSET", 250, "2.0.0")
        r = c.expect("QUIT", 221, "2.0.0")
        assert c.at_eof()


@pytest.mark.parametrize("line", ["TURN", "SEND FROM:<a@example.org>", "SOML FROM:<a@example.org>", "SAML FROM:<a@example.org>", "turn"])
def test_obsolete_verbs_not_implemented(srv, line):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(line, 502, "5.5.1")
        c.expect("NOOP", 250)


@pytest.mark.parametrize("line", ["FOO", "XYZZY bar", "MAILFROM:<a@example.org>", "EHL0 x", "", "  NOOP", "9", "NOOP\tx"])
def test_unknown_command(srv, line):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(line, 500, "5.5.2")
        c.expect("NOOP", 250, "2.0.0")


@pytest.mark.parametrize(
    "line",
    [
        "MAIL",
        "MAIL FROM alice@example.org",
        "MAIL TO:<a@example.org>",
        "RCPT FROM:<alice@corvid.test>",
        "EHLO",
        "HELO",
        "EHLO two words",
        "EHLO bad/name",
        "RSET now",
        "QUIT now",
        "DATA now",
        "VRFY",
        "BDAT",
        "BDAT x",
        "BDAT -1",
        "BDAT 10 NOTLAST",
        "BDAT 10 LAST x",
    ],
)
def test_syntax_errors(srv, line):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(line, 501)
        c.expect("NOOP", 250, "2.0.0")


def test_sequence_mail_before_ehlo(srv):
    with srv.connect() as c:
        c.greet()
        c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
        c.expect("RCPT TO:<alice@corvid.test>", 503, "5.5.1")
        c.expect("DATA", 503, "5.5.1")
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_sequence_rcpt_before_mail(srv):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("RCPT TO:<alice@corvid.test>", 503, "5.5.1")


def test_sequence_data_before_rcpt(srv):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("DATA", 503, "5.5.1")
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("DATA", 503, "5.5.1")
        # a refused recipient does not open DATA either
        c.expect("RCPT TO:<nobody@corvid.test>", 550, "5.1.1")
        c.expect("DATA", 503, "5.5.1")
        # the transaction is still usable
        c.expect("RCPT TO:<alice@corvid.test>", 250, "2.1.5")
        c.expect("DATA", 354)
        c.send(b"Subject: seq\r\n\r\nok\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
    srv.wait_mail("alice")


def test_nested_mail_and_rset(srv):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect("MAIL FROM:<b@example.org>", 503, "5.5.1")
        c.expect("RSET", 250)
        c.expect("RCPT TO:<alice@corvid.test>", 503, "5.5.1")
        c.expect("MAIL FROM:<b@example.org>", 250)
        # EHLO resets the transaction too (RFC 5321 4.1.4)
        c.ehlo()
        c.expect("RCPT TO:<alice@corvid.test>", 503, "5.5.1")


def test_every_reply_has_an_enhanced_code(srv):
    """RFC 2034: every reply but the greeting, the EHLO/HELO reply and 354 carries an
    enhanced status code, on every line."""
    commands = [
        "NOOP", "HELP", "HELP DATA", "VRFY alice", "EXPN team", "TURN", "FOO", "MAIL TO:<x>",
        "RCPT TO:<alice@corvid.test>", "DATA", "BDAT 0", "STARTTLS now", "ETRN corvid.test",
        "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME", "MAIL FROM:<a@example.org>",
        "RCPT TO:<nobody@corvid.test>", "RCPT TO:<x@example.com>", "RCPT TO:<alice@corvid.test> FOO=1",
        "RCPT TO:<a@@corvid.test>", "RCPT TO:<alice@corvid.test>", "RSET x", "RSET",
        "MAIL FROM:<a@example.org> FOO=1", "MAIL FROM:<a@@example.org>", "MAIL FROM:<a@example.org> SIZE=999999999999",
        "MAIL FROM:<a@example.org>", "RCPT TO:<bob@corvid.test>", "DATA",
    ]
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        checked = 0
        for line in commands:
            r = c.cmd(line)
            if r.code == 354:
                c.send(b"Subject: codes\r\n\r\nbody\r\n.\r\n")
                r = c.reply()
                assert r.code == 250, r
            for text in r.lines:
                assert ENHANCED.match(text), f"{line!r}: reply without enhanced code: {r}"
            checked += 1
        r = c.cmd("QUIT")
        assert r.code == 221 and ENHANCED.match(r.lines[0]), r
    assert checked == len(commands)


@pytest.mark.parametrize("params", ["FOO=BAR", "XFOO", "BODY=BINARYMIME", "SIZE=abc", "SIZE=1 SIZE=2", "RET=SOME", "SMTPUTF8=yes", "BODY=8BITMIME BODY=7BIT", "=x"])
def test_unknown_or_bad_mail_parameter(srv, params):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(f"MAIL FROM:<a@example.org> {params}", 555, "5.5.4")
        # no transaction was opened
        c.expect("RCPT TO:<alice@corvid.test>", 503, "5.5.1")


@pytest.mark.parametrize("params", ["FOO=BAR", "XFOO", "NOTIFY=NEVER,SUCCESS", "NOTIFY=SOMETIMES", "ORCPT=nosemicolon", "SIZE=100"])
def test_unknown_or_bad_rcpt_parameter(srv, params):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect(f"RCPT TO:<alice@corvid.test> {params}", 555, "5.5.4")
        c.expect("DATA", 503, "5.5.1")


def test_dsn_and_other_parameters_accepted(srv):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org> RET=HDRS ENVID=x", 250, "2.1.0")
        c.expect("RCPT TO:<alice@corvid.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@b", 250, "2.1.5")
        c.expect("RCPT TO:<bob@corvid.test> NOTIFY=NEVER", 250, "2.1.5")
        c.expect("RSET", 250)
        c.expect("MAIL FROM:<a@example.org> RET=FULL ENVID=QQ+2B123 SIZE=1000 BODY=8BITMIME", 250, "2.1.0")
        c.expect("RCPT TO:<alice@corvid.test> ORCPT=rfc822;alice+2Bx@corvid.test NOTIFY=DELAY", 250, "2.1.5")
        c.expect("DATA", 354)
        c.send(b"Subject: dsn\r\n\r\nbody\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
        # keywords and values are case-insensitive
        c.expect("mail from:<a@example.org> ret=hdrs body=7bit", 250, "2.1.0")
        c.expect("rcpt to:<bob@corvid.test> notify=failure", 250, "2.1.5")
    srv.wait_mail("alice")


def test_binarymime_refused(server):
    with server.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org> BODY=BINARYMIME", 555, "5.5.4")


MALFORMED = [
    pytest.param(b"<a@@corvid.test>", id="double-at"),
    pytest.param(b"<a@b@corvid.test>", id="two-ats"),
    pytest.param(b"<<alice@corvid.test>>", id="nested-brackets"),
    pytest.param(b"<alice<x>@corvid.test>", id="bracket-inside"),
    pytest.param(b"<alice@corvid.test", id="unclosed"),
    pytest.param(b"alice@corvid.test", id="no-brackets"),
    pytest.param(b"<alice@corvid.test>>", id="extra-bracket"),
    pytest.param(b"<ali\x01ce@corvid.test>", id="ctrl-01"),
    pytest.param(b"<ali\x1bce@corvid.test>", id="ctrl-esc"),
    pytest.param(b"<alice\x7f@corvid.test>", id="ctrl-del"),
    pytest.param(b"<ali\tce@corvid.test>", id="tab"),
    pytest.param(b"<alice@corvid.te\x01st>", id="ctrl-in-domain"),
    pytest.param(b"<ali\x00ce@corvid.test>", id="nul-local"),
    pytest.param(b"<alice@corvid.test\x00>", id="nul-domain"),
    pytest.param(b"<ali ce@corvid.test>", id="space"),
    pytest.param(b"<@corvid.test>", id="empty-local"),
    pytest.param(b'<""@corvid.test>', id="empty-quoted-local"),
    pytest.param(b"<alice@>", id="empty-domain"),
    pytest.param(b"<alice>", id="no-domain"),
    pytest.param(b"<alice@corvid..test>", id="empty-label"),
    pytest.param(b"<alice@.corvid.test>", id="leading-dot-domain"),
    pytest.param(b"<alice@-corvid.test>", id="hyphen-label"),
    pytest.param(b'<"alice@corvid.test>', id="unterminated-quote"),
    pytest.param(b"<" + b"a" * 65 + b"@corvid.test>", id="local-65"),
    pytest.param(b"<alice@" + b"a" * 64 + b".test>", id="label-64"),
    pytest.param(b"<a@" + b".".join([b"b" * 63] * 4) + b".test>", id="domain-260"),
    pytest.param(b"<alice@[300.1.1.1]>", id="bad-ip-literal"),
    pytest.param(b"<alice@[127.0.0.1>", id="unclosed-literal"),
    pytest.param(b"<@:alice@corvid.test>", id="empty-route"),
]


@pytest.mark.parametrize("addr", MALFORMED)
def test_malformed_sender(srv, addr):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect(b"MAIL FROM:" + addr, 501, "5.1.7")
        c.expect("NOOP", 250, "2.0.0")


@pytest.mark.parametrize("addr", MALFORMED + [pytest.param(b"<>", id="null")])
def test_malformed_recipient(srv, addr):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250)
        c.expect(b"RCPT TO:" + addr, 501, "5.1.3")
        c.expect("DATA", 503, "5.5.1")
        c.expect("NOOP", 250, "2.0.0")


def test_length_boundaries(srv):
    """64 octets of local part are fine (the refusal is then about the user, not the syntax)."""
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        c.expect("MAIL FROM:<" + "s" * 64 + "@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<" + "a" * 64 + "@corvid.test>", 550, "5.1.1")
        c.expect("RCPT TO:<alice@" + "a" * 63 + ".test>", 550, "5.7.1")


def test_quoted_local_part_and_source_route(srv):
    with srv.connect() as c:
        c.greet()
        c.ehlo()
        r = c.expect('MAIL FROM:<"john doe"@example.org>', 250, "2.1.0")
        assert '<"john doe"@example.org>' in r.text, r
        c.expect('RCPT TO:<"alice"@corvid.test>', 250, "2.1.5")
        r = c.expect("RCPT TO:<@relay.example,@[10.0.0.1]:bob@corvid.test>", 250, "2.1.5")
        assert "<bob@corvid.test>" in r.text, r
        c.expect("DATA", 354)
        c.send(b"Subject: quoted\r\n\r\nbody\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
        c.expect("MAIL FROM:<@a.example:bob@example.org>", 250, "2.1.0")
        c.expect('RCPT TO:<"Alice"@CORVID.TEST>', 250, "2.1.5")
    [a] = srv.wait_mail("alice")
    [b] = srv.wait_mail("bob")
    assert split_delivered(a).return_path == b'Return-Path: <"john doe"@example.org>\r\n'
    assert split_delivered(b).content == b"Subject: quoted\r\n\r\nbody\r\n"


def test_case_insensitive_verbs_and_domain(srv):
    with srv.connect() as c:
        c.greet()
        c.expect("ehlo client.test", 250)
        c.expect("mail from:<a@example.org>", 250, "2.1.0")
        c.expect("Rcpt To:<Alice@Corvid.Test>", 250, "2.1.5")
        c.expect("data", 354)
        c.send(b"Subject: case\r\n\r\nbody\r\n.\r\n")
        c.expect(None, 250, "2.0.0")
    srv.wait_mail("alice")


def test_pipelined_commands_get_replies_in_order(srv):
    with srv.connect() as c:
        c.greet()
        c.send(
            b"EHLO client.test\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@corvid.test>\r\n"
            b"RCPT TO:<nobody@corvid.test>\r\nRCPT TO:<bob@corvid.test>\r\nDATA\r\n"
        )
        assert c.reply().code == 250  # EHLO
        assert c.reply().code == 250
        assert c.reply().code == 250
        assert c.reply().code == 550
        assert c.reply().code == 250
        assert c.reply().code == 354
        c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@example.org>\r\nRCPT TO:<bob@corvid.test>\r\nDATA\r\n")
        assert c.reply().code == 250
        assert c.reply().code == 250
        assert c.reply().code == 250
        assert c.reply().code == 354
        c.send(b"Subject: second\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        replies = c.replies_until_eof()
        assert [r.code for r in replies] == [250, 221], replies
    srv.wait_mail("alice", 1)
    srv.wait_mail("bob", 2)
