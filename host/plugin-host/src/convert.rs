//! From Corvid's types to the WIT types handed to plugins.

use crate::bindings::corvid::plugin::types as wit;
use corvid_types::{BodyType, ConnectionInfo, Envelope, Recipient, Ret};

pub(crate) fn conn(c: &ConnectionInfo, transaction: u32) -> wit::ConnectionInfo {
    wit::ConnectionInfo {
        session_id: c.session_id,
        transaction,
        listener: c.listener.clone(),
        client_ip: c.peer_addr.ip().to_string(),
        client_port: c.peer_addr.port(),
        local_ip: c.local_addr.ip().to_string(),
        local_port: c.local_addr.port(),
        client_rdns: c.peer_rdns.clone(),
        helo: c.helo.clone(),
        esmtp: c.esmtp,
        tls: c.tls.as_ref().map(|t| wit::TlsInfo {
            version: t.version.clone(),
            cipher: t.cipher.clone(),
            sni: t.sni.clone(),
        }),
        auth_user: c.auth_user.clone(),
    }
}

pub(crate) fn address(a: &corvid_types::Address) -> wit::Address {
    wit::Address {
        local: a.local.clone(),
        domain: a.domain.clone(),
    }
}

pub(crate) fn recipient(r: &Recipient) -> wit::Recipient {
    wit::Recipient {
        address: address(&r.address),
        params: wit::RcptParams {
            notify: r.params.notify.map(|n| wit::Notify {
                never: n.never,
                success: n.success,
                failure: n.failure,
                delay: n.delay,
            }),
            orcpt: r.params.orcpt.clone(),
        },
    }
}

pub(crate) fn envelope(e: &Envelope) -> wit::Envelope {
    let p = &e.params;
    wit::Envelope {
        sender: e.sender.as_ref().map(address),
        params: wit::MailParams {
            size: p.size,
            body: match p.body {
                BodyType::SevenBit => wit::BodyType::SevenBit,
                BodyType::EightBitMime => wit::BodyType::EightBitMime,
            },
            smtputf8: p.smtputf8,
            ret: p.ret.map(|r| match r {
                Ret::Full => wit::Ret::Full,
                Ret::Headers => wit::Ret::Headers,
            }),
            envid: p.envid.clone(),
            auth: p.auth.clone(),
        },
        recipients: e.recipients.iter().map(recipient).collect(),
    }
}

pub(crate) fn stage(s: wit::Stage) -> corvid_types::Stage {
    use corvid_types::Stage as S;
    match s {
        wit::Stage::Connect => S::Connect,
        wit::Stage::Helo => S::Helo,
        wit::Stage::Auth => S::Auth,
        wit::Stage::Mail => S::Mail,
        wit::Stage::Rcpt => S::Rcpt,
        wit::Stage::Data => S::Data,
        wit::Stage::Route => S::Route,
        wit::Stage::Deferred => S::Deferred,
        wit::Stage::Bounced => S::Bounced,
        wit::Stage::Delivered => S::Delivered,
    }
}
