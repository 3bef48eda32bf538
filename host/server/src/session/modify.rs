//! Applies the modifications a policy asked for. Policies never touch the message themselves:
//! everything is validated here, so a plugin cannot inject header lines or bare line endings.

use corvid_types::Modification;

/// Header and body modifications, in the order given.
pub(super) fn apply_to_content(content: &mut Vec<u8>, mods: &[Modification]) {
    if !mods.iter().any(is_content_change) {
        return;
    }
    let mut msg = Parsed::split(content);
    for m in mods {
        match m {
            Modification::AddHeader { name, value } => msg.insert(msg.fields.len(), name, value),
            Modification::InsertHeader { index, name, value } => {
                msg.insert((*index as usize).min(msg.fields.len()), name, value)
            }
            Modification::ChangeHeader { name, index, value } => {
                if let Some(i) = msg.nth(name, *index) {
                    if let Some(field) = field(name, value) {
                        msg.fields[i] = field;
                    }
                }
            }
            Modification::RemoveHeader { name, index } => {
                if let Some(i) = msg.nth(name, *index) {
                    msg.fields.remove(i);
                }
            }
            Modification::ReplaceBody(body) => msg.body = normalise_line_endings(body),
            _ => {}
        }
    }
    *content = msg.join();
}

fn is_content_change(m: &Modification) -> bool {
    !matches!(
        m,
        Modification::ChangeSender(_)
            | Modification::AddRecipient(_)
            | Modification::RemoveRecipient(_)
    )
}

/// A message cut into header fields (each with its folded continuation lines and CRLF) and
/// the body (everything after the empty line).
struct Parsed {
    fields: Vec<Vec<u8>>,
    body: Vec<u8>,
}

impl Parsed {
    fn split(content: &[u8]) -> Parsed {
        let mut fields: Vec<Vec<u8>> = Vec::new();
        let mut pos = 0;
        while pos < content.len() {
            let end = content[pos..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(content.len(), |i| pos + i + 2);
            let line = &content[pos..end];
            if line == b"\r\n" {
                return Parsed {
                    fields,
                    body: content[end..].to_vec(),
                };
            }
            match (line.first(), fields.last_mut()) {
                // RFC 5322 2.2.3: a line starting with white space continues the field.
                (Some(b' ' | b'\t'), Some(last)) => last.extend_from_slice(line),
                _ => fields.push(line.to_vec()),
            }
            pos = end;
        }
        Parsed {
            fields,
            body: Vec::new(),
        }
    }

    fn nth(&self, name: &str, index: u32) -> Option<usize> {
        self.fields
            .iter()
            .enumerate()
            .filter(|(_, f)| field_name(f).eq_ignore_ascii_case(name.as_bytes()))
            .nth(index as usize)
            .map(|(i, _)| i)
    }

    fn insert(&mut self, at: usize, name: &str, value: &str) {
        if let Some(f) = field(name, value) {
            self.fields.insert(at, f);
        }
    }

    fn join(self) -> Vec<u8> {
        let mut out: Vec<u8> = self.fields.concat();
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    &field[..end]
}

/// `Name: value\r\n`, or `None` when the name is not an RFC 5322 3.6.8 field name. Line breaks
/// in the value become spaces: a plugin cannot smuggle in extra header lines.
fn field(name: &str, value: &str) -> Option<Vec<u8>> {
    let valid = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !valid {
        return None;
    }
    let value: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    Some(format!("{name}: {value}\r\n").into_bytes())
}

/// Every line ending becomes CRLF, and the body ends with one, so that no bare CR or LF enters
/// the queue from a plugin (RFC 5321 2.3.8).
fn normalise_line_endings(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / 32);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(content: &str, mods: Vec<Modification>) -> String {
        let mut c = content.as_bytes().to_vec();
        apply_to_content(&mut c, &mods);
        String::from_utf8(c).unwrap()
    }

    #[test]
    fn header_operations_follow_index_and_case() {
        let msg = "A: 1\r\nB: 2\r\n folded\r\nb: 3\r\n\r\nbody\r\n";
        let out = run(
            msg,
            vec![
                Modification::AddHeader {
                    name: "X-End".into(),
                    value: "e".into(),
                },
                Modification::InsertHeader {
                    index: 0,
                    name: "X-First".into(),
                    value: "f".into(),
                },
                Modification::ChangeHeader {
                    name: "b".into(),
                    index: 1,
                    value: "three".into(),
                },
                Modification::RemoveHeader {
                    name: "B".into(),
                    index: 0,
                },
            ],
        );
        assert_eq!(
            out,
            "X-First: f\r\nA: 1\r\nb: three\r\nX-End: e\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn injection_and_bad_names_are_neutralised() {
        let out = run(
            "A: 1\r\n\r\nx\r\n",
            vec![
                Modification::AddHeader {
                    name: "X".into(),
                    value: "a\r\nBcc: evil".into(),
                },
                Modification::AddHeader {
                    name: "Bad Name".into(),
                    value: "v".into(),
                },
                Modification::ReplaceBody(b"one\ntwo\rthree".to_vec()),
            ],
        );
        assert_eq!(
            out,
            "A: 1\r\nX: a  Bcc: evil\r\n\r\none\r\ntwo\r\nthree\r\n"
        );
    }
}
