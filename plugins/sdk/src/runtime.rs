//! Glue between the generated bindings and a [`Plugin`]; used by [`crate::export_plugin!`].

pub use crate::bindings::corvid::plugin::context::Stamp;
use crate::{Config, ConfigTable, ConnectionInfo, Envelope, Plugin, PluginInfo, Recipient};
use std::any::Any;
use std::cell::RefCell;

/// How the generated `on-data` export receives the host's message.
pub type MessageBorrow<'a> = &'a crate::bindings::corvid::plugin::message::Message;

thread_local! {
    /// The plugin value of the current transaction, with the host's lease it was made for.
    static PLUGIN: RefCell<Option<(u64, Box<dyn Any>)>> = const { RefCell::new(None) };
}

pub use crate::stages::{default_hook, probing};

/// `describe` from the trait's constants and [`Plugin::stages_for`] (an empty `VERSION` stays
/// empty).
pub fn describe<P: Plugin>() -> PluginInfo {
    describe_as::<P>("")
}

/// `describe`, with `crate_version` (the plugin crate's, from [`crate::export_plugin!`]) when
/// the plugin leaves `VERSION` empty.
pub fn describe_as<P: Plugin>(crate_version: &str) -> PluginInfo {
    let version = if P::VERSION.is_empty() {
        crate_version
    } else {
        P::VERSION
    };
    // Only what `STAGES` lists: the host never calls the others.
    let mut stages = P::stages_for(&instance_config());
    stages.retain(|s| P::STAGES.contains(s));
    PluginInfo {
        name: P::NAME.to_string(),
        version: version.to_string(),
        stages,
    }
}

/// `configure`: the configuration is valid when [`Plugin::new`] accepts it, and the plugin
/// implements no hook that its `STAGES` leaves out (see [`check_stages`]).
pub fn configure<P: Plugin>(table: ConfigTable) -> Result<(), String> {
    let config = Config::from_table(table);
    P::new(&config)?;
    crate::stages::check::<P>(&config)
}

/// Refuses a plugin that implements a hook whose stage is missing from `STAGES`, with the
/// configuration the fake host holds (the export macro's generated test uses it). A plugin
/// that refuses that configuration is probed with an empty one.
pub fn check_stages<P: Plugin>() -> Result<(), String> {
    crate::stages::check::<P>(&Config::from_table(crate::host::config_table()))
}

/// Runs `f` on the plugin value of the current transaction, creating it from the host's config
/// at the first hook of each transaction (when the host's `lifecycle.lease` changed), so the
/// value never outlives its transaction, also on a warm (pooled) instance; unless the plugin's
/// [`Plugin::reset`] cleared its per-transaction state and asked to keep it.
///
/// A configuration the plugin refuses here (it was accepted by `configure` at load time, so
/// this means the plugin is not deterministic) panics, which the host treats as a trap.
pub fn with<P: Plugin, R>(f: impl FnOnce(&mut P) -> R) -> R {
    with_lease::<P, R>(crate::host::lease(), f)
}

/// [`with`] for a lease the host already gave (in the `hooks` stamp).
pub fn with_lease<P: Plugin, R>(lease: u64, f: impl FnOnce(&mut P) -> R) -> R {
    PLUGIN.with(|cell| {
        let mut slot = cell.borrow_mut();
        // The plugin may keep its value across units of work (Plugin::reset).
        if let Some((l, b)) = slot.as_mut() {
            if *l != lease && b.downcast_mut::<P>().is_some_and(|p| p.reset()) {
                *l = lease;
            }
        }
        if slot.as_ref().is_none_or(|(l, _)| *l != lease) {
            // Drop the previous transaction's value before building the next one.
            *slot = None;
            let config = instance_config();
            match P::new(&config) {
                Ok(p) => *slot = Some((lease, Box::new(p))),
                Err(e) => panic!("{}: configuration refused: {e}", P::NAME),
            }
        }
        match slot.as_mut().and_then(|(_, b)| b.downcast_mut::<P>()) {
            Some(p) => f(p),
            None => panic!("{}: plugin state of another type", P::NAME),
        }
    })
}

/// The plugin's configuration. In a WebAssembly instance it never changes (a new
/// configuration is a new generation with new instances), so it is fetched from the host once
/// per instance, not at every transaction.
#[cfg(target_arch = "wasm32")]
fn instance_config() -> std::rc::Rc<Config> {
    thread_local! {
        static CONFIG: std::cell::OnceCell<std::rc::Rc<Config>> = const { std::cell::OnceCell::new() };
    }
    CONFIG.with(|c| {
        c.get_or_init(|| std::rc::Rc::new(Config::from_table(crate::host::config_table())))
            .clone()
    })
}

/// Native tests change the fake host's configuration between cases: no caching.
#[cfg(not(target_arch = "wasm32"))]
fn instance_config() -> std::rc::Rc<Config> {
    std::rc::Rc::new(Config::from_table(crate::host::config_table()))
}

/// Drops this thread's plugin value (native tests use it between cases).
pub fn reset() {
    PLUGIN.with(|cell| *cell.borrow_mut() = None);
}

/// The records this instance holds, by the host's number for each (`context.stamp`). The
/// numbers are unique in the host process for their content, so a record with the same number
/// is still right on a warm instance serving another connection.
#[derive(Default)]
struct Held {
    conn: Option<(u64, ConnectionInfo)>,
    env: Option<(u64, Envelope)>,
    rcpt: Option<(u64, Recipient)>,
}

thread_local! {
    static HELD: RefCell<Held> = RefCell::new(Held::default());
}

/// Replaces `slot` by `fetch()` unless it already holds record number `id`.
fn refresh<T>(slot: &mut Option<(u64, T)>, id: u64, fetch: impl FnOnce() -> T) {
    if slot.as_ref().is_none_or(|(held, _)| *held != id) {
        *slot = Some((id, fetch()));
    }
}

fn empty_envelope() -> Envelope {
    Envelope {
        sender: None,
        params: crate::MailParams {
            size: None,
            body: crate::BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            auth: None,
        },
        recipients: Vec::new(),
    }
}

/// The records a hook reads besides its recipient ([`Plugin::reads`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reads {
    /// The [`ConnectionInfo`].
    pub connection: bool,
    /// The [`Envelope`] (at `mail`, `rcpt` and `data`).
    pub envelope: bool,
}

impl Reads {
    /// Every record: the default.
    pub const ALL: Reads = Reads {
        connection: true,
        envelope: true,
    };
    /// Neither record (an `on_rcpt` that looks only at its recipient).
    pub const NONE: Reads = Reads {
        connection: false,
        envelope: false,
    };
}

fn empty_connection() -> ConnectionInfo {
    ConnectionInfo {
        session_id: 0,
        transaction: 0,
        listener: String::new(),
        client_ip: String::new(),
        client_port: 0,
        local_ip: String::new(),
        local_port: 0,
        client_rdns: None,
        helo: None,
        esmtp: false,
        tls: None,
        auth_user: None,
    }
}

/// Runs a `hooks` export of `stage`: brings the held records the plugin reads there
/// ([`Plugin::reads`]) up to `s` (fetching only those whose number changed), then calls `f` on
/// the transaction's plugin value with them, and empty records for those it does not read.
pub fn with_facts<P: Plugin, R>(
    s: Stamp,
    stage: crate::Stage,
    f: impl FnOnce(&mut P, &ConnectionInfo, &Envelope, Option<&Recipient>) -> R,
) -> R {
    with_lease::<P, R>(s.lease, |p| {
        let reads = p.reads(stage);
        HELD.with(|cell| {
            {
                let mut held = cell.borrow_mut();
                if reads.connection {
                    refresh(&mut held.conn, s.connection, fetch::connection);
                }
                if s.envelope != 0 && reads.envelope {
                    refresh(&mut held.env, s.envelope, fetch::envelope);
                }
                if s.recipient != 0 {
                    refresh(&mut held.rcpt, s.recipient, fetch::recipient);
                }
            }
            let held = cell.borrow();
            let (empty, no_conn);
            let conn = match &held.conn {
                _ if !reads.connection => {
                    no_conn = empty_connection();
                    &no_conn
                }
                Some((_, c)) => c,
                None => panic!("{}: no connection facts", P::NAME),
            };
            let env = match (&held.env, s.envelope) {
                (Some((_, e)), id) if id != 0 && reads.envelope => e,
                _ => {
                    empty = empty_envelope();
                    &empty
                }
            };
            let rcpt = match (&held.rcpt, s.recipient) {
                (Some((_, r)), id) if id != 0 => Some(r),
                _ => None,
            };
            f(p, conn, env, rcpt)
        })
    })
}

#[cfg(target_arch = "wasm32")]
mod fetch {
    use crate::bindings::corvid::plugin::context;
    pub(super) fn connection() -> crate::ConnectionInfo {
        context::get_connection()
    }
    pub(super) fn envelope() -> crate::Envelope {
        context::get_envelope()
    }
    pub(super) fn recipient() -> crate::Recipient {
        match context::get_recipient() {
            Some(r) => r,
            None => panic!("the host named a recipient it does not have"),
        }
    }
}

/// Native builds (tests) call the hooks directly, never through `hooks`.
#[cfg(not(target_arch = "wasm32"))]
mod fetch {
    pub(super) fn connection() -> crate::ConnectionInfo {
        unreachable!("context is only read in a WebAssembly build")
    }
    pub(super) fn envelope() -> crate::Envelope {
        unreachable!("context is only read in a WebAssembly build")
    }
    pub(super) fn recipient() -> crate::Recipient {
        unreachable!("context is only read in a WebAssembly build")
    }
}
