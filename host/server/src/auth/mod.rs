//! SMTP AUTH support: SASL decoding, the users file, and slowing down password guessing.

mod sasl;
mod throttle;
mod users;

pub use sasl::{decode_login_field, decode_plain, SaslError};
pub use throttle::{Attempt, AuthThrottle};
pub use users::{hash_password, UsersError, UsersFile};

/// Checks passwords and knows which sender addresses a user may use. The server calls
/// `verify` from a blocking thread: password hashing is deliberately slow.
pub trait Credentials: Send + Sync {
    fn verify(&self, username: &str, password: &str) -> bool;

    /// Whether `user` may send as `address` (RFC 6409 6.1: submission servers check this).
    fn owns_address(&self, user: &str, address: &corvid_types::Address) -> bool;
}

/// `alice+tag@example.org` belongs to `alice@example.org`.
pub(crate) fn same_address(a: &str, b: &corvid_types::Address, delimiter: char) -> bool {
    let Some((local, domain)) = a.rsplit_once('@') else {
        return false;
    };
    let b_local = b
        .local
        .split_once(delimiter)
        .map_or(b.local.as_str(), |(base, _)| base);
    local.eq_ignore_ascii_case(b_local) && domain.eq_ignore_ascii_case(&b.domain)
}
