//! A tiny authoritative DNS responder on loopback UDP for MX tests.

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::UdpSocket;

#[derive(Default, Clone)]
pub struct Zone {
    /// Lower-case absolute name -> records of any type.
    names: HashMap<String, Vec<RData>>,
}

fn key(name: &str) -> String {
    let n = name.to_ascii_lowercase();
    if n.ends_with('.') {
        n
    } else {
        format!("{n}.")
    }
}

impl Zone {
    pub fn mx(mut self, domain: &str, pref: u16, host: &str) -> Self {
        let exchange = if host == "." {
            Name::root()
        } else {
            Name::from_ascii(key(host)).unwrap()
        };
        self.names
            .entry(key(domain))
            .or_default()
            .push(RData::MX(MX::new(pref, exchange)));
        self
    }

    pub fn addr(mut self, host: &str, ip: &str) -> Self {
        let rdata = match ip.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.names.entry(key(host)).or_default().push(rdata);
        self
    }

    /// A TXT record of one string (an `_mta-sts` record, say).
    pub fn txt(mut self, name: &str, text: &str) -> Self {
        self.names
            .entry(key(name))
            .or_default()
            .push(RData::TXT(TXT::new(vec![text.to_string()])));
        self
    }

    /// A name that exists with no records (NoData for every type).
    pub fn exists(mut self, name: &str) -> Self {
        self.names.entry(key(name)).or_default();
        self
    }

    fn answer(&self, name: &Name, rtype: RecordType) -> (ResponseCode, Vec<Record>) {
        match self.names.get(&key(&name.to_ascii())) {
            None => (ResponseCode::NXDomain, Vec::new()),
            Some(rdatas) => (
                ResponseCode::NoError,
                rdatas
                    .iter()
                    .filter(|r| r.record_type() == rtype)
                    .map(|r| Record::from_rdata(name.clone(), 60, r.clone()))
                    .collect(),
            ),
        }
    }
}

/// Serves `zone` on a loopback UDP port until the runtime ends.
pub async fn serve(zone: Zone) -> SocketAddr {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut resp = Message::new();
            resp.set_id(query.id())
                .set_message_type(MessageType::Response)
                .set_op_code(OpCode::Query)
                .set_authoritative(true)
                .set_recursion_desired(query.recursion_desired())
                .set_recursion_available(true);
            if let Some(q) = query.queries().first() {
                let (code, answers) = zone.answer(q.name(), q.query_type());
                resp.add_query(q.clone());
                resp.add_answers(answers);
                resp.set_response_code(code);
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    addr
}
