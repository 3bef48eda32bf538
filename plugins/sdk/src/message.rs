//! The message at the `data` stage.

use crate::bindings::corvid::plugin::message::Message;
use crate::{Header, MimeSummary};

/// Read access to the message being received. In a plugin this is the host's message resource
/// (nothing is copied until you ask); in native tests it is a [`crate::testing::TestMessage`].
pub trait MailMessage {
    /// All header fields in order.
    fn headers(&self) -> Vec<Header>;
    /// The values of every field called `name` (case-insensitive).
    fn header(&self, name: &str) -> Vec<String>;
    /// The size of the whole message in octets.
    fn size(&self) -> u64;
    /// The size of the body in octets.
    fn body_size(&self) -> u64;
    /// Up to `len` octets of the body from `offset` (the host caps `len` at 1 MiB).
    fn read_body(&self, offset: u64, len: u32) -> Vec<u8>;
    /// The parsed MIME summary.
    fn mime(&self) -> MimeSummary;
    /// The first text part decoded, cut at `max_len` octets.
    fn body_text(&self, max_len: u32) -> Option<String>;
}

impl MailMessage for Message {
    fn headers(&self) -> Vec<Header> {
        Message::headers(self)
    }
    fn header(&self, name: &str) -> Vec<String> {
        Message::header(self, name)
    }
    fn size(&self) -> u64 {
        Message::size(self)
    }
    fn body_size(&self) -> u64 {
        Message::body_size(self)
    }
    fn read_body(&self, offset: u64, len: u32) -> Vec<u8> {
        Message::read_body(self, offset, len)
    }
    fn mime(&self) -> MimeSummary {
        Message::mime(self)
    }
    fn body_text(&self, max_len: u32) -> Option<String> {
        Message::body_text(self, max_len)
    }
}
