//! The SMTP and LMTP client, on tokio, reusing the codec of `corvid-smtp` for replies, EHLO
//! keywords and the DATA payload.

mod conn;
mod error;
mod sanitize;
mod session;
mod timeouts;
pub mod tls;
mod transaction;

pub use error::ClientError;
pub use session::{Endpoint, Protocol, Session, SessionOptions, TlsPolicy};
pub use timeouts::Timeouts;
pub use transaction::{Outbound, TransactionResult};
