//! Facts on demand (`wit/context.wit`): the `context` import and the `hooks` export. A plugin
//! that exports `hooks` gets a [`Stamp`] per SMTP hook instead of its records; it fetches a
//! record only when the stamp names one it does not hold yet. Each record is converted once per
//! session (not per plugin or per call) and shared by reference count.

use crate::bindings::corvid::plugin::types as wit;
use crate::message::HostMessage;
use crate::state::HostState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, Instance, Linker, Lower, Resource, TypedFunc,
};
use wasmtime::{AsContextMut, StoreContextMut};

/// The interface names of `wit/context.wit` (package `corvid:plugin@0.1.0`).
const CONTEXT: &str = "corvid:plugin/context@0.1.0";
const HOOKS: &str = "corvid:plugin/hooks@0.1.0";

/// `context.stamp`: the numbers naming the facts of one call (0: not known at this stage).
#[derive(ComponentType, Lower, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[component(record)]
pub(crate) struct Stamp {
    pub(crate) lease: u64,
    pub(crate) connection: u64,
    pub(crate) envelope: u64,
    pub(crate) recipient: u64,
}

/// A new number for a record, unique in the process, never 0.
pub(crate) fn next_id() -> u64 {
    static IDS: AtomicU64 = AtomicU64::new(1);
    IDS.fetch_add(1, Ordering::Relaxed)
}

/// A record in its WIT form with the number naming it.
pub(crate) type Named<T> = (Arc<T>, u64);

/// The facts of one SMTP hook call, shared by every plugin of the chain.
#[derive(Clone)]
pub(crate) struct Facts {
    pub(crate) conn: Named<wit::ConnectionInfo>,
    pub(crate) env: Option<Named<wit::Envelope>>,
    pub(crate) rcpt: Option<Named<wit::Recipient>>,
    /// The connection's authentication results and signing choice (`auth-results`).
    pub(crate) auth: Arc<crate::auth_results::AuthShared>,
}

impl Facts {
    /// The envelope, for the `plugin` world's hooks that take it.
    pub(crate) fn envelope(&self) -> wasmtime::Result<&wit::Envelope> {
        match &self.env {
            Some(e) => Ok(&e.0),
            None => Err(wasmtime::Error::msg("no envelope at this stage")),
        }
    }

    /// The recipient, for the `plugin` world's `on-rcpt`.
    pub(crate) fn recipient(&self) -> wasmtime::Result<&wit::Recipient> {
        match &self.rcpt {
            Some(r) => Ok(&r.0),
            None => Err(wasmtime::Error::msg("no recipient at this stage")),
        }
    }

    /// The same facts: the same record numbers (unique per content) and the same
    /// authentication results.
    pub(crate) fn same(&self, other: &Facts) -> bool {
        fn id<T>(n: &Option<Named<T>>) -> u64 {
            n.as_ref().map_or(0, |r| r.1)
        }
        self.conn.1 == other.conn.1
            && id(&self.env) == id(&other.env)
            && id(&self.rcpt) == id(&other.rcpt)
            && Arc::ptr_eq(&self.auth, &other.auth)
    }

    pub(crate) fn stamp(&self, lease: u64) -> Stamp {
        Stamp {
            lease,
            connection: self.conn.1,
            envelope: self.env.as_ref().map_or(0, |e| e.1),
            recipient: self.rcpt.as_ref().map_or(0, |r| r.1),
        }
    }
}

fn facts<'a>(store: &'a StoreContextMut<'_, HostState>) -> wasmtime::Result<&'a Facts> {
    store
        .data()
        .facts
        .as_ref()
        .ok_or_else(|| wasmtime::Error::msg("context read outside an SMTP hook"))
}

fn empty_envelope() -> wit::Envelope {
    wit::Envelope {
        sender: None,
        params: wit::MailParams {
            size: None,
            body: wit::BodyType::SevenBit,
            smtputf8: false,
            ret: None,
            envid: None,
            auth: None,
        },
        recipients: Vec::new(),
    }
}

/// Defines the `context` import: what the current call's [`Facts`] hold. Reading it outside a
/// hook (the SDK never does) traps.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut i = linker.instance(CONTEXT)?;
    // The records are lowered into the guest from the shared `Arc` (wasmtime lowers an
    // `Arc<T>` as the `T`): a fetch copies the strings into guest memory once, with no deep
    // clone of the record on the host first.
    i.func_wrap("get-connection", |mut store, (): ()| {
        store.data_mut().count_call();
        Ok((Arc::clone(&facts(&store)?.conn.0),))
    })?;
    i.func_wrap("get-envelope", |mut store, (): ()| {
        store.data_mut().count_call();
        let e = facts(&store)?.env.as_ref();
        Ok((e.map_or_else(|| Arc::new(empty_envelope()), |e| Arc::clone(&e.0)),))
    })?;
    i.func_wrap("get-recipient", |mut store, (): ()| {
        store.data_mut().count_call();
        let r = facts(&store)?.rcpt.as_ref();
        Ok((r.map(|r| Arc::clone(&r.0)),))
    })?;
    // The imports added to the contract since (`engine.rs` links this one and
    // `auth-results`): DSN parameters of added recipients, TLS at the delivery stages.
    crate::added::add_to_linker(linker)?;
    crate::delivery_tls::add_to_linker(linker)
}

type Hook = TypedFunc<(Stamp,), (wit::Decision,)>;
type DataHook = TypedFunc<(Stamp, Resource<HostMessage>), (wit::Decision,)>;

/// Where a component's `hooks` functions are, found once per loaded component.
#[derive(Clone)]
pub(crate) struct HookIndices {
    connect: ComponentExportIndex,
    helo: ComponentExportIndex,
    mail: ComponentExportIndex,
    rcpt: ComponentExportIndex,
    data: ComponentExportIndex,
}

impl HookIndices {
    /// `None` when the component does not export `hooks` (built against the `plugin` world).
    pub(crate) fn find(component: &Component) -> Option<Self> {
        let iface = component.get_export_index(None, HOOKS)?;
        let f = |n: &str| component.get_export_index(Some(&iface), n);
        Some(HookIndices {
            connect: f("on-connect")?,
            helo: f("on-helo")?,
            mail: f("on-mail")?,
            rcpt: f("on-rcpt")?,
            data: f("on-data")?,
        })
    }

    /// The typed functions of one instance (fails when the types do not match).
    pub(crate) fn load(
        &self,
        mut store: impl AsContextMut<Data = HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Hooks> {
        let mut s = store.as_context_mut();
        Ok(Hooks {
            connect: instance.get_typed_func(&mut s, self.connect)?,
            helo: instance.get_typed_func(&mut s, self.helo)?,
            mail: instance.get_typed_func(&mut s, self.mail)?,
            rcpt: instance.get_typed_func(&mut s, self.rcpt)?,
            data: instance.get_typed_func(&mut s, self.data)?,
        })
    }
}

/// One instance's `hooks` functions.
pub(crate) struct Hooks {
    pub(crate) connect: Hook,
    pub(crate) helo: Hook,
    pub(crate) mail: Hook,
    pub(crate) rcpt: Hook,
    pub(crate) data: DataHook,
}

impl Hooks {
    /// Calls `f` with `stamp` (wasmtime runs the post-return clean-up itself).
    pub(crate) async fn call(
        f: &Hook,
        store: &mut wasmtime::Store<HostState>,
        stamp: Stamp,
    ) -> wasmtime::Result<wit::Decision> {
        let (d,) = f.call_async(&mut *store, (stamp,)).await?;
        Ok(d)
    }

    pub(crate) async fn call_data(
        &self,
        store: &mut wasmtime::Store<HostState>,
        stamp: Stamp,
        msg: Resource<HostMessage>,
    ) -> wasmtime::Result<wit::Decision> {
        let (d,) = self.data.call_async(&mut *store, (stamp, msg)).await?;
        Ok(d)
    }
}
