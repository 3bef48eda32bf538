//! Corvid's sans-IO SMTP codec.
//!
//! Owns: parsing command lines and their ESMTP parameters ([`parse_command`]), the connection's
//! input buffer with line-length limits ([`Input`]), the DATA reader with the strict
//! `CRLF . CRLF` end and dot-unstuffing ([`DataReader`]), and the BDAT chunk reader
//! ([`BdatReader`]). Replies are [`corvid_types::Reply`], re-exported here.
//!
//! Client side (for delivery): reply parsing ([`ReplyBuilder`], [`parse_reply_line`]), EHLO
//! keywords ([`Capabilities`]) and the DATA payload with dot-stuffing and CRLF-only line endings
//! ([`encode_data`]).
//!
//! Must not: do I/O, know about sessions or their state, call plugins, or touch TLS. The server
//! feeds bytes in and gets commands, message bytes and the exact replies for bad input out.
//! Nothing here panics on peer data.

pub mod bdat;
pub mod capabilities;
pub mod command;
mod content;
pub mod data;
pub mod dot_stuff;
pub mod input;
mod params;
mod path;
pub mod reply_parse;
pub mod xtext;

pub use bdat::BdatReader;
pub use capabilities::Capabilities;
pub use command::{parse_command, Command, ParseError, RcptTo};
pub use content::DataOutcome;
pub use corvid_types::Reply;
pub use data::DataReader;
pub use dot_stuff::{encode_data, is_8bit};
pub use input::{Input, LineError};
pub use reply_parse::{parse_reply_line, ReplyBuilder, ReplyError, ReplyLine};

/// RFC 5321 4.5.3.1.4: the longest command line, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;
