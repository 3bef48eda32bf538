//! The `Received:` trace header added when a message is accepted (RFC 5321 4.4).

use corvid_types::{ConnectionInfo, Envelope, QueueId};

/// The `with` protocol name of RFC 3848 (and RFC 6531 3.7.3 for SMTPUTF8).
fn protocol(conn: &ConnectionInfo, env: &Envelope) -> String {
    let base = match (env.params.smtputf8, conn.esmtp) {
        (true, _) => "UTF8SMTP",
        (false, true) => "ESMTP",
        (false, false) => "SMTP",
    };
    let mut p = base.to_string();
    if conn.tls.is_some() {
        p.push('S');
    }
    if conn.auth_user.is_some() {
        p.push('A');
    }
    p
}

/// Builds the header, folded over several lines, ending in CRLF. The HELO name was validated as
/// a domain or address literal at EHLO, and addresses by the codec, so nothing here can inject
/// header lines.
pub fn received_header(
    conn: &ConnectionInfo,
    env: &Envelope,
    hostname: &str,
    id: &QueueId,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<u8> {
    let helo = conn.helo.as_deref().unwrap_or("unknown");
    let ip = conn.peer_addr.ip();
    let rdns = conn.peer_rdns.as_deref().unwrap_or("unknown");
    let mut h = format!("Received: from {helo} ({rdns} [{ip}])\r\n\tby {hostname} (Corvid)");
    if let Some(tls) = &conn.tls {
        h.push_str(&format!(
            "\r\n\t(using {} with cipher {})",
            tls.version, tls.cipher
        ));
    }
    h.push_str(&format!("\r\n\twith {} id {id}", protocol(conn, env)));
    // Naming the recipient only when there is one keeps Bcc recipients private (RFC 5321 7.2).
    if let [only] = env.recipients.as_slice() {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!("; {}\r\n", now.format("%a, %d %b %Y %H:%M:%S %z")));
    h.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use corvid_types::{Address, Recipient};

    #[test]
    fn header_names_client_protocol_id_and_single_recipient() {
        let conn = ConnectionInfo {
            session_id: 1,
            listener: "smtp".into(),
            local_addr: "127.0.0.1:25".parse().unwrap(),
            peer_addr: "127.0.0.9:4000".parse().unwrap(),
            peer_rdns: None,
            helo: Some("client.test".into()),
            esmtp: true,
            tls: None,
            auth_user: None,
        };
        let env = Envelope {
            sender: Some(Address::new("a", "b.test")),
            recipients: vec![Recipient {
                address: Address::new("c", "d.test"),
                params: Default::default(),
            }],
            ..Default::default()
        };
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 11, 22, 6, 41, 53)
            .unwrap();
        let h = received_header(&conn, &env, "mx.test", &QueueId("ABC".into()), now);
        assert_eq!(
            String::from_utf8(h).unwrap(),
            "Received: from client.test (unknown [127.0.0.9])\r\n\tby mx.test (Corvid)\r\n\t\
             with ESMTP id ABC\r\n\tfor <c@d.test>; Sun, 22 Nov 2026 06:41:53 +0000\r\n"
        );
    }
}
