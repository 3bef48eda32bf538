//! Applies the modifications a policy asked for. Policies never touch the message themselves:
//! everything is validated here, so a plugin cannot inject header lines or bare line endings.

use corvid_types::Modification;

/// Header and body modifications, in the order given.
pub(super) fn apply_to_content(content: &mut Vec<u8>, mods: &[Modification]) {
    if !mods.iter().any(is_content_change) {
        return;
    }
    let mut msg = Parsed::split(content);
    let mut new_body: Option<Vec<u8>> = None;
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
            Modification::ReplaceBody(body) => new_body = Some(normalise_line_endings(body)),
            _ => {}
        }
    }
    let body = match &new_body {
        Some(b) => b.as_slice(),
        None => content.get(msg.body_start..).unwrap_or_default(),
    };
    *content = msg.join(body);
}

fn is_content_change(m: &Modification) -> bool {
    !matches!(
        m,
        Modification::ChangeSender(_)
            | Modification::AddRecipient(_)
            | Modification::AddRecipientWithParams(_)
            | Modification::RemoveRecipient(_)
    )
}

/// A message cut into header fields (each with its folded continuation lines and CRLF) and
/// where its body starts (after the empty line): the body is copied once, into the joined
/// message, not into a buffer of its own first (a 100 KB message cost two copies).
struct Parsed {
    fields: Vec<Vec<u8>>,
    body_start: usize,
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
                    body_start: end,
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
            body_start: content.len(),
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

    /// The fields, the empty line and `body`, in one allocation of the final size.
    fn join(self, body: &[u8]) -> Vec<u8> {
        let header: usize = self.fields.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(header + 2 + body.len());
        for f in &self.fields {
            out.extend_from_slice(f);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    &field[..end]
}

/// RFC 5322 2.1.1: lines SHOULD be at most 78 octets and MUST be at most 998, without CRLF.
const FOLD_AT: usize = 78;
const MAX_LINE: usize = 998;

/// `Name: value\r\n`, folded, or `None` when the name is not an RFC 5322 3.6.8 field name or
/// the value cannot be folded within 998 octets a line. Line breaks in the value become spaces:
/// a plugin cannot smuggle in extra header lines. A modification refused here is dropped with
/// a warning; the message itself is still accepted (the plugin's mistake is not the sender's).
fn field(name: &str, value: &str) -> Option<Vec<u8>> {
    let valid = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !valid {
        tracing::warn!(field = %name.escape_debug(), "policy header modification dropped: invalid field name");
        return None;
    }
    let value: String = value
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let folded = fold(&format!("{name}: {value}"));
    if folded.is_none() {
        tracing::warn!(field = %name, "policy header modification dropped: a line would pass 998 octets (RFC 5322 2.1.1)");
    }
    folded
}

/// Folds an unfolded field (RFC 5322 2.2.3) before white space so that lines stay within 78
/// octets where the text allows it; `None` when a line would still pass 998. Each continuation
/// line starts with the white space run it was folded at, so no line is only white space and
/// unfolding gives back the field exactly.
fn fold(unfolded: &str) -> Option<Vec<u8>> {
    let bytes = unfolded.as_bytes();
    let is_wsp = |b: u8| b == b' ' || b == b'\t';
    // Pieces start where a white space run begins (after a non-space).
    let mut starts = vec![0];
    for i in 1..bytes.len() {
        if is_wsp(bytes[i]) && !is_wsp(bytes[i - 1]) {
            starts.push(i);
        }
    }
    starts.push(bytes.len());
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut line_len = 0;
    for w in starts.windows(2) {
        let piece = &bytes[w[0]..w[1]];
        if line_len > 0 && line_len + piece.len() > FOLD_AT {
            out.extend_from_slice(b"\r\n");
            line_len = 0;
        }
        out.extend_from_slice(piece);
        line_len += piece.len();
        if line_len > MAX_LINE {
            return None;
        }
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
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
    fn the_body_is_kept_byte_for_byte_or_replaced_with_crlf_line_ends() {
        let add = || Modification::AddHeader {
            name: "X-A".into(),
            value: "1".into(),
        };
        let msg = "A: 1\r\n\r\nline\r\n\r\n.dots\r\nlast";
        assert_eq!(
            run(msg, vec![add()]),
            "A: 1\r\nX-A: 1\r\n\r\nline\r\n\r\n.dots\r\nlast"
        );
        let replaced = run(
            msg,
            vec![add(), Modification::ReplaceBody(b"new\nbody\r\n".to_vec())],
        );
        assert_eq!(replaced, "A: 1\r\nX-A: 1\r\n\r\nnew\r\nbody\r\n");
        // Header fields only, no empty line: the joined message gets one and an empty body.
        assert_eq!(run("A: 1\r\n", vec![add()]), "A: 1\r\nX-A: 1\r\n\r\n");
    }

    #[test]
    fn long_values_are_folded_at_white_space_within_78_octets() {
        let words: Vec<String> = (0..60).map(|i| format!("word{i}")).collect();
        let value = words.join(" ");
        let out = run("A: 1\r\n\r\nx\r\n", vec![add("X-Long", &value)]);
        let header = out.split("\r\n\r\n").next().unwrap();
        for line in header.split("\r\n") {
            assert!(line.len() <= 78, "{line:?}");
        }
        // Unfolding (RFC 5322 2.2.3: remove each CRLF before white space) gives the value back.
        let field = header.strip_prefix("A: 1\r\n").unwrap();
        assert_eq!(field.replace("\r\n", ""), format!("X-Long: {value}"));
        assert!(field.lines().count() > 3, "{field}");
    }

    #[test]
    fn a_word_that_cannot_fit_in_998_octets_is_refused_and_one_that_can_is_kept() {
        let word = "x".repeat(1000);
        let out = run("A: 1\r\n\r\nx\r\n", vec![add("X-Big", &word)]);
        assert_eq!(out, "A: 1\r\n\r\nx\r\n");
        let word = "y".repeat(900);
        let out = run(
            "A: 1\r\n\r\nx\r\n",
            vec![add("X-Ok", &format!("a {word} b"))],
        );
        assert_eq!(
            out,
            format!("A: 1\r\nX-Ok: a\r\n {word}\r\n b\r\n\r\nx\r\n")
        );
    }

    fn add(name: &str, value: &str) -> Modification {
        Modification::AddHeader {
            name: name.into(),
            value: value.into(),
        }
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
