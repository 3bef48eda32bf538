//! Checks on the header section made before anything is built per header field (the plugins'
//! message view, header rewrites, the From: check): header bombs and mail loops.

use corvid_types::Reply;

/// What one pass over the header section found: the field count and the `Received:` count.
/// Stops counting fields once `max_fields` is passed.
fn count(content: &[u8], max_fields: usize) -> (usize, usize) {
    let (mut fields, mut received) = (0usize, 0usize);
    let mut pos = 0;
    while pos < content.len() {
        let end = content[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |i| pos + i + 1);
        let line = &content[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        // RFC 5322 2.2.3: a line starting with white space continues the field before it.
        if !matches!(line.first(), Some(b' ' | b'\t')) {
            fields += 1;
            if fields > max_fields {
                break;
            }
            if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
                received += 1;
            }
        }
        pos = end;
    }
    (fields, received)
}

/// The refusal for a message with too many header fields or too many hops, if any.
pub(super) fn refusal(content: &[u8], max_fields: usize, max_hops: usize) -> Option<Reply> {
    let (fields, received) = count(content, max_fields);
    if fields > max_fields {
        // RFC 3463 X.3.4: message too big for system.
        return Some(Reply::new(
            552,
            "5.3.4",
            format!("Too many header fields (more than {max_fields})"),
        ));
    }
    if received > max_hops {
        // RFC 5321 6.3: a message with too many Received: fields is looping; RFC 3463 X.4.6.
        return Some(Reply::new(
            554,
            "5.4.6",
            format!("Too many hops ({received} Received: fields): mail loop"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fields_not_continuations_and_stops_at_the_body() {
        let msg = b"Received: a\r\n\tb\r\nRECEIVED: c\r\nX: y\r\n\r\nReceived: body\r\n";
        assert_eq!(count(msg, 10), (3, 2));
        assert!(refusal(msg, 3, 2).is_none());
        assert_eq!(refusal(msg, 2, 2).map(|r| r.code), Some(552));
        assert_eq!(refusal(msg, 3, 1).map(|r| r.code), Some(554));
    }
}
