//! The `message` resource of the `data` stage: the received content on the host, with its
//! header fields, body chunks and a MIME summary parsed by mail-parser, computed on demand.

use crate::bindings::corvid::plugin::message::{self as wit, Header, MimePart, MimeSummary};
use crate::state::HostState;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use std::sync::{Arc, OnceLock};
use wasmtime::component::Resource;

/// Largest chunk one `read-body` call returns.
const MAX_CHUNK: u32 = 1 << 20;

/// The message shared by every plugin of one `data` chain.
pub(crate) struct MessageData {
    raw: Vec<u8>,
    body_start: usize,
    parsed: OnceLock<(MimeSummary, Option<String>)>,
}

impl MessageData {
    pub(crate) fn new(raw: &[u8]) -> Arc<Self> {
        let body_start = if raw.starts_with(b"\r\n") {
            2
        } else {
            raw.windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(raw.len(), |i| i + 4)
        };
        Arc::new(MessageData {
            raw: raw.to_vec(),
            body_start,
            parsed: OnceLock::new(),
        })
    }

    fn headers(&self) -> Vec<Header> {
        let text = String::from_utf8_lossy(&self.raw[..self.body_start]);
        let mut out: Vec<Header> = Vec::new();
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with([' ', '\t']) {
                if let Some(last) = out.last_mut() {
                    last.value.push(' ');
                    last.value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                out.push(Header {
                    name: name.trim_end().to_string(),
                    value: value.trim().to_string(),
                });
            }
        }
        out
    }

    fn parsed(&self) -> &(MimeSummary, Option<String>) {
        self.parsed.get_or_init(|| parse(&self.raw))
    }
}

fn parse(raw: &[u8]) -> (MimeSummary, Option<String>) {
    let empty = MimeSummary {
        subject: None,
        from: Vec::new(),
        to: Vec::new(),
        message_id: None,
        date: None,
        parts: Vec::new(),
        has_html: false,
    };
    let Some(msg) = MessageParser::default().parse(raw) else {
        return (empty, None);
    };
    let addrs = |a: Option<&mail_parser::Address<'_>>| -> Vec<String> {
        a.map(|a| {
            a.iter()
                .filter_map(|x| x.address())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
    };
    let parts = msg
        .parts
        .iter()
        .filter(|p| !matches!(p.body, PartType::Multipart(_)))
        .map(|p| MimePart {
            content_type: p
                .content_type()
                .map(|c| match c.subtype() {
                    Some(sub) => format!("{}/{}", c.ctype(), sub),
                    None => c.ctype().to_string(),
                })
                .unwrap_or_else(|| "text/plain".to_string()),
            filename: p.attachment_name().map(str::to_string),
            size: p.len() as u64,
            is_attachment: p.content_disposition().is_some_and(|d| d.is_attachment())
                || p.attachment_name().is_some(),
        })
        .collect();
    let text = msg
        .body_text(0)
        .or_else(|| msg.body_html(0))
        .map(|c| c.into_owned());
    let summary = MimeSummary {
        subject: msg.subject().map(str::to_string),
        from: addrs(msg.from()),
        to: addrs(msg.to()),
        message_id: msg.message_id().map(str::to_string),
        date: msg.date().map(|d| d.to_timestamp()),
        parts,
        has_html: !msg.html_body.is_empty()
            && msg.html_body.iter().any(|id| {
                matches!(
                    msg.parts.get(*id as usize).map(|p| &p.body),
                    Some(PartType::Html(_))
                )
            }),
    };
    (summary, text)
}

/// The resource's host representation.
pub struct HostMessage {
    pub(crate) data: Arc<MessageData>,
}

fn get<'a>(state: &'a HostState, r: &Resource<HostMessage>) -> wasmtime::Result<&'a MessageData> {
    Ok(&state.table.get(r)?.data)
}

/// Bytes of header fields handed to the guest (charged as fuel, see [`crate::charge`]).
fn header_bytes(h: &[Header]) -> usize {
    h.iter().map(|h| h.name.len() + h.value.len()).sum()
}

/// Bytes of a MIME summary handed to the guest.
fn mime_bytes(m: &MimeSummary) -> usize {
    let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let parts: usize = m
        .parts
        .iter()
        .map(|p| p.content_type.len() + opt(&p.filename) + 16)
        .sum();
    let addrs: usize = m.from.iter().chain(&m.to).map(String::len).sum();
    opt(&m.subject) + opt(&m.message_id) + addrs + parts
}

// Each import that copies part of the message into the guest charges its bytes: the fuel of
// a plugin reading a large message grows with what it reads (see `crate::charge`). The host
// also scans the header section for `headers` and `header`, so both charge all of it.
impl wit::HostMessage for HostState {
    fn headers(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<Vec<Header>> {
        let h = get(self, &r)?.headers();
        self.charge_copy(header_bytes(&h));
        Ok(h)
    }

    fn header(&mut self, r: Resource<HostMessage>, name: String) -> wasmtime::Result<Vec<String>> {
        let h = get(self, &r)?.headers();
        self.charge_copy(header_bytes(&h));
        Ok(h.into_iter()
            .filter(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value)
            .collect())
    }

    fn size(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<u64> {
        Ok(get(self, &r)?.raw.len() as u64)
    }

    fn body_size(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<u64> {
        let m = get(self, &r)?;
        Ok((m.raw.len() - m.body_start) as u64)
    }

    fn read_body(
        &mut self,
        r: Resource<HostMessage>,
        offset: u64,
        len: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        let m = get(self, &r)?;
        let body = &m.raw[m.body_start..];
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(body.len());
        let end = start
            .saturating_add(len.min(MAX_CHUNK) as usize)
            .min(body.len());
        let chunk = body[start..end].to_vec();
        self.charge_copy(chunk.len());
        Ok(chunk)
    }

    fn mime(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<MimeSummary> {
        let m = get(self, &r)?.parsed().0.clone();
        self.charge_copy(mime_bytes(&m));
        Ok(m)
    }

    fn body_text(
        &mut self,
        r: Resource<HostMessage>,
        max_len: u32,
    ) -> wasmtime::Result<Option<String>> {
        let text = get(self, &r)?.parsed().1.as_ref();
        let text = text.map(|t| {
            let mut cut = t.len().min(max_len as usize);
            while !t.is_char_boundary(cut) {
                cut -= 1;
            }
            t[..cut].to_string()
        });
        self.charge_copy(text.as_ref().map_or(0, String::len));
        Ok(text)
    }

    fn drop(&mut self, r: Resource<HostMessage>) -> wasmtime::Result<()> {
        if r.owned() {
            self.table.delete(r)?;
        }
        Ok(())
    }
}

impl wit::Host for HostState {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_unfold_and_mime_parses() {
        let raw = b"Subject: hello\r\n world\r\nFrom: A <a@x.test>\r\nMessage-ID: <id@x>\r\n\r\nbody text\r\n";
        let m = MessageData::new(raw);
        let h = m.headers();
        assert_eq!(h[0].value, "hello world");
        assert_eq!(&m.raw[m.body_start..], b"body text\r\n");
        let (s, text) = m.parsed();
        assert_eq!(s.from, vec!["a@x.test".to_string()]);
        assert_eq!(s.message_id.as_deref(), Some("id@x"));
        assert_eq!(text.as_deref(), Some("body text\r\n"));
    }
}
