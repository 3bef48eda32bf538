//! The client's forward-confirmed reverse DNS name in `Received:`, with a fake resolver.

#![allow(clippy::field_reassign_with_default)] // a harness, then what the test changes

mod common;

use async_trait::async_trait;
use common::*;
use corvid_types::{DnsError, DnsResolver};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

struct FakeDns {
    ptr: Vec<String>,
    a: Vec<IpAddr>,
    delay: Duration,
}

#[async_trait]
impl DnsResolver for FakeDns {
    async fn ip(&self, name: &str, _v6: bool) -> Result<Vec<IpAddr>, DnsError> {
        tokio::time::sleep(self.delay).await;
        if name == "mail.c.test" {
            Ok(self.a.clone())
        } else {
            Err(DnsError::NotFound)
        }
    }
    async fn mx(&self, _name: &str) -> Result<Vec<(u16, String)>, DnsError> {
        Err(DnsError::NotFound)
    }
    async fn txt(&self, _name: &str) -> Result<Vec<String>, DnsError> {
        Err(DnsError::NotFound)
    }
    async fn ptr(&self, _ip: IpAddr) -> Result<Vec<String>, DnsError> {
        Ok(self.ptr.clone())
    }
}

async fn received_with(dns: FakeDns, timeout: Duration) -> String {
    let mut h = Harness::default();
    h.dns = Some(Arc::new(dns));
    h.limits.rdns_timeout = timeout;
    h.peer = format!("{PEER}:5000").parse().unwrap();
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
    let content = String::from_utf8(h.intake.messages()[0].1.clone()).unwrap();
    content.lines().next().unwrap().to_string()
}

const PEER: &str = "192.0.2.10";

#[tokio::test]
async fn a_confirmed_ptr_name_is_in_received() {
    let dns = FakeDns {
        ptr: vec!["evil\r\nX: y.".into(), "Mail.C.test.".into()],
        a: vec![PEER.parse().unwrap()],
        delay: Duration::ZERO,
    };
    let first = received_with(dns, Duration::from_secs(2)).await;
    assert_eq!(first, "Received: from c.test (mail.c.test [192.0.2.10])");
}

#[tokio::test]
async fn an_unconfirmed_ptr_name_is_not_used() {
    let dns = FakeDns {
        ptr: vec!["mail.c.test.".into()],
        a: vec!["192.0.2.1".parse().unwrap()],
        delay: Duration::ZERO,
    };
    let first = received_with(dns, Duration::from_secs(2)).await;
    assert_eq!(first, "Received: from c.test (unknown [192.0.2.10])");
}

#[tokio::test]
async fn a_slow_resolver_costs_at_most_the_timeout() {
    let dns = FakeDns {
        ptr: vec!["mail.c.test.".into()],
        a: vec![PEER.parse().unwrap()],
        delay: Duration::from_secs(30),
    };
    let started = std::time::Instant::now();
    let first = received_with(dns, Duration::from_millis(200)).await;
    assert_eq!(first, "Received: from c.test (unknown [192.0.2.10])");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn loopback_clients_are_not_looked_up() {
    let mut h = Harness::default();
    h.dns = Some(Arc::new(FakeDns {
        ptr: vec!["mail.c.test.".into()],
        a: vec!["127.0.0.2".parse().unwrap()],
        delay: Duration::ZERO,
    }));
    let out = h
        .run(&[
            b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<alice@local.test>\r\nDATA\r\n",
            b"\r\nx\r\n.\r\n",
        ])
        .await;
    assert!(out.ends_with("250 2.0.0 Ok: queued as Q1\r\n"), "{out}");
    let content = String::from_utf8(h.intake.messages()[0].1.clone()).unwrap();
    assert!(content.starts_with("Received: from c.test (unknown [127.0.0.2])"));
}
