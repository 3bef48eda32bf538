//! Typed results of the inbound checks: plain serde data, no `mail-auth` type, so the WIT
//! contract can mirror them and plugins can read them. They live in `corvid-types` (the server
//! carries them without depending on this crate) and are re-exported here.

pub use corvid_types::mailauth::{
    ArcCheck, ArcVerdict, AuthResults, DkimCheck, DkimVerdict, DmarcCheck, DmarcPolicy,
    DmarcVerdict, SpfCheck, SpfIdentity, SpfVerdict,
};
