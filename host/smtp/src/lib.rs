//! Corvid's sans-IO SMTP codec.
//!
//! Owns: parsing command lines and their ESMTP parameters ([`parse_command`]), the connection's
//! input buffer with line-length limits ([`Input`]), the DATA reader with the strict
//! `CRLF . CRLF` end and dot-unstuffing ([`DataReader`]), and the BDAT chunk reader
//! ([`BdatReader`]). Replies are [`corvid_types::Reply`], re-exported here.
//!
//! Must not: do I/O, know about sessions or their state, call plugins, or touch TLS. The server
//! feeds bytes in and gets commands, message bytes and the exact replies for bad input out.
//! Nothing here panics on peer data.

pub mod bdat;
pub mod command;
mod content;
pub mod data;
pub mod input;
mod params;
mod path;
pub mod xtext;

pub use bdat::BdatReader;
pub use command::{parse_command, Command, ParseError, RcptTo};
pub use content::DataOutcome;
pub use corvid_types::Reply;
pub use data::DataReader;
pub use input::{Input, LineError};

/// RFC 5321 4.5.3.1.4: the longest command line, CRLF included.
pub const MAX_COMMAND_LINE: usize = 512;
