//! The delivery step of an attempt: each group of recipients routed to one destination goes
//! to its courier (Maildir, or a next hop over the network), and comes back as one report
//! per recipient. Nothing here decides a recipient's state ([`crate::fate`] does).

use crate::blocking::blocking;
use crate::content::LazyContent;
use crate::outcome::uniform;
use crate::remote::Remote;
use crate::route::{Destination, NextHop};
use crate::{local, Outcome, RcptReport};
use corvid_queue::{QueuedMessage, SuccessReport};
use corvid_types::Directory;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Where recipients are delivered to.
pub(crate) struct Couriers {
    pub(crate) local: Arc<Local>,
    pub(crate) remote: Arc<Remote>,
}

/// Delivery into Maildirs under `root`, as the directory resolves the recipients.
pub(crate) struct Local {
    pub(crate) directory: Arc<Directory>,
    pub(crate) root: PathBuf,
    /// Local delivery's permits, apart from the remote ones (in [`Remote`]).
    pub(crate) permits: Arc<Semaphore>,
}

impl Local {
    /// One of local delivery's permits (the semaphore is never closed).
    pub(crate) async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.permits).acquire_owned().await.ok()
    }

    /// Delivers the recipients `idx` of `msg` on a blocking thread; the caller holds a
    /// permit.
    async fn deliver(
        self: &Arc<Self>,
        msg: Arc<QueuedMessage>,
        idx: Vec<usize>,
        content: Arc<Vec<u8>>,
    ) -> Vec<(usize, RcptReport)> {
        let local = Arc::clone(self);
        let fallback = idx.clone();
        let done =
            blocking(move || local::deliver(&local.directory, &local.root, &msg, &idx, &content))
                .await;
        done.unwrap_or_else(|| {
            uniform(
                &fallback,
                Outcome::Transient("4.3.0 local delivery failed".into()),
            )
        })
    }
}

/// Delivers every group: a message for local mailboxes only on the permit the attempt
/// holds (`held`, given back at the end); otherwise the permit is given back first and each
/// group runs in a task of its own (a local group with a permit of its own, a remote one
/// through [`Remote::deliver`]), so a slow remote MX never holds a permit Maildir delivery
/// needs.
pub(crate) async fn deliver(
    couriers: &Arc<Couriers>,
    msg: &QueuedMessage,
    groups: Vec<(Destination, Vec<usize>)>,
    content: &Arc<LazyContent>,
    held: OwnedSemaphorePermit,
) -> Vec<(usize, RcptReport)> {
    let shared = Arc::new(msg.clone());
    if groups.iter().all(|(d, _)| d.hop == NextHop::Local) {
        let idx: Vec<usize> = groups.into_iter().flat_map(|(_, idx)| idx).collect();
        let reports = match content.for_delivery().await {
            Ok(body) => couriers.local.deliver(shared, idx, body).await,
            Err(outcome) => uniform(&idx, outcome),
        };
        drop(held);
        return reports;
    }
    drop(held);
    let mut tasks = JoinSet::new();
    let mut by_task = HashMap::new();
    for (dest, idx) in groups {
        let group = idx.clone();
        let couriers = Arc::clone(couriers);
        let msg = Arc::clone(&shared);
        let content = Arc::clone(content);
        let task = async move { couriers.deliver_group(&dest, &msg, idx, &content).await };
        let handle = tasks.spawn(tracing::Instrument::in_current_span(task));
        by_task.insert(handle.id(), group);
    }
    let mut out = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, reports)) => out.extend(reports),
            Err(e) => {
                tracing::error!(queue_id = %msg.id, error = %e, "delivery task failed");
                // Its recipients are retried on the schedule, not at once.
                if let Some(group) = by_task.get(&e.id()) {
                    out.extend(uniform(
                        group,
                        Outcome::Transient("4.3.0 delivery task failed".into()),
                    ));
                }
            }
        }
    }
    out
}

impl Couriers {
    /// One destination's group: dropped, into Maildirs, or to a next hop.
    async fn deliver_group(
        &self,
        dest: &Destination,
        msg: &Arc<QueuedMessage>,
        idx: Vec<usize>,
        content: &LazyContent,
    ) -> Vec<(usize, RcptReport)> {
        match dest.hop {
            NextHop::Discard => {
                tracing::info!(queue_id = %msg.id, recipients = idx.len(), "dropped by a route decision");
                // Dropped by policy: no success notice claims a delivery that never was.
                let mut reports = uniform(&idx, Outcome::Delivered);
                for (_, r) in reports.iter_mut() {
                    r.success = SuccessReport::None;
                }
                reports
            }
            NextHop::Local => {
                let Some(_permit) = self.local.permit().await else {
                    return Vec::new();
                };
                match content.for_delivery().await {
                    Ok(body) => self.local.deliver(Arc::clone(msg), idx, body).await,
                    Err(outcome) => uniform(&idx, outcome),
                }
            }
            _ => {
                let rcpts: Vec<_> = idx
                    .iter()
                    .filter_map(|&i| msg.recipients.get(i).map(|r| (i, &r.recipient)))
                    .collect();
                self.remote
                    .deliver(dest, &msg.envelope, &rcpts, content)
                    .await
            }
        }
    }
}
