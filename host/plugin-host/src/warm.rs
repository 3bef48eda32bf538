//! Where a plugin's live instance comes from and where it goes after use, by the manifest's
//! [`InstanceMode`]: dropped (`transaction`), or returned to the plugin's pool (`pool`, and
//! `connection`, which is the same: no connection keeps an instance between transactions,
//! so idle connections hold none; `call` returns it after each hook call, [`crate::hook`]).
//! An instance that failed is never returned: the caller drops it, so a trap or timeout
//! resets the plugin's state.

use crate::generation::LoadedPlugin;
use crate::instance::Live;
use crate::limiter::TotalMemory;
use crate::manifest::InstanceMode;
use crate::stats::Outcome;
use std::sync::{Arc, Mutex};

/// Idle warm instances of one plugin (pool mode), shared by every connection and the
/// delivery hooks. Belongs to one loaded version: a reload starts with an empty pool.
/// Each idle instance is counted in the engine's idle cap ([`TotalMemory::keep_idle`]).
pub(crate) struct Pool {
    // Boxed like the session's slots: handing an instance over moves a pointer, not the
    // bindings' hundreds of bytes of export indices.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<Live>>>,
    total: Arc<TotalMemory>,
}

impl Pool {
    pub(crate) fn new(total: Arc<TotalMemory>) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            total,
        }
    }

    fn take(&self) -> Option<Box<Live>> {
        let live = self.idle.lock().ok()?.pop()?;
        self.total.unidle(1);
        Some(live)
    }

    fn put(&self, live: Box<Live>, max: usize) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < max && self.total.keep_idle() {
                idle.push(live);
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let n = match self.idle.get_mut() {
            Ok(idle) => idle.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        };
        self.total.unidle(n);
    }
}

/// A live instance of `p` for `session`: a warm one when the mode keeps them, else a new one.
pub(crate) async fn acquire(
    p: &Arc<LoadedPlugin>,
    session: u64,
) -> Result<Box<Live>, (Outcome, String)> {
    let reused = match p.manifest.instance {
        InstanceMode::Transaction => None,
        InstanceMode::Connection | InstanceMode::Pool | InstanceMode::Call => p.pool.take(),
    };
    match reused {
        Some(mut live) => {
            live.rebind(session);
            Ok(live)
        }
        None => Live::new(p, session).await.map(Box::new),
    }
}

/// Gives back an instance that served a transaction (or a hook call) without failing.
pub(crate) fn release(p: &Arc<LoadedPlugin>, mut live: Box<Live>) {
    p.stats.memory(live.memory_peak());
    live.uses = live.uses.saturating_add(1);
    if live.uses >= p.manifest.max_reuse {
        return;
    }
    match p.manifest.instance {
        InstanceMode::Transaction => {}
        InstanceMode::Connection | InstanceMode::Pool | InstanceMode::Call => {
            p.pool.put(live, p.manifest.pool_size)
        }
    }
}
