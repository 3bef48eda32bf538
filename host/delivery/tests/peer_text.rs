//! Reply text from a next hop reaches the record and the DSN without control characters,
//! escape sequences or bare line breaks.

mod support;

use corvid_queue::RecipientStatus;
use std::sync::Arc;
use support::peer::{Peer, Script};
use support::*;

fn hostile(text: &str) -> bool {
    text.chars()
        .any(|c| c.is_control() && c != '\r' && c != '\n')
        || text.contains('\u{1b}')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_and_bare_cr_never_reach_the_record_or_the_dsn() {
    let peer = Peer::start(Script {
        rcpt: Arc::new(|_, addr| {
            if addr.starts_with("temp") {
                "451 4.3.0 \u{1b}[2J\u{1b}[31mwait\rX-Forged: 1\u{7}".into()
            } else {
                "550 5.1.1 \u{1b}]0;pwned\u{7}no such\ruser\u{1b}[0m here".into()
            }
        }),
        ..Script::default()
    })
    .await;
    let h = Harness::start(route_to(
        "far.test",
        format!("smtp://127.0.0.1:{}", peer.addr.port()),
    ));
    let id = h
        .submit(
            &envelope(Some("bob@corvid.test"), &["temp@far.test", "gone@far.test"]),
            b"Subject: t\r\n\r\nhello\r\n",
        )
        .await;
    wait_until("the first attempt is recorded", 5, || {
        h.get(&id).is_some_and(|m| m.recipients[0].attempts >= 1)
    })
    .await;
    let m = h.get(&id).unwrap();
    let temp = &m.recipients[0];
    assert_eq!(temp.status, RecipientStatus::Pending);
    let last = temp.last_reply.clone().unwrap();
    assert!(!hostile(&last) && !last.contains('\r'), "{last:?}");
    assert!(last.contains("waitX-Forged: 1"), "{last:?}");
    let diag = temp.diagnostic.clone().unwrap();
    assert!(!hostile(&diag) && !diag.contains('\r'), "{diag:?}");
    let gone = &m.recipients[1];
    assert_eq!(gone.status, RecipientStatus::Failed);
    let last = gone.last_reply.clone().unwrap();
    assert!(last.contains("no suchuser here"), "{last:?}");
    assert!(!hostile(&last) && !last.contains('\r'), "{last:?}");

    // The bounce for the 550 went to bob, without the peer's escapes or line breaks.
    let root = h.mail_root();
    wait_until("the DSN is delivered", 5, || {
        !maildir(&root, "bob").is_empty()
    })
    .await;
    let dsn = maildir(&root, "bob").concat();
    let text = String::from_utf8_lossy(&dsn);
    assert!(text.contains("no suchuser here"), "{text}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text}"
    );
    assert!(crlf_only(&dsn), "a bare CR or LF in the DSN");
    h.stop().await;
}
