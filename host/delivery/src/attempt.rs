//! One delivery attempt of one queued message, recipient by recipient as chasquid's
//! `sendOneRcpt`: route → deliver → decide → notify → record. Every recipient goes through
//! the same steps whether it is delivered into a Maildir or to a next hop; recipients with
//! the same destination share a delivery (one SMTP transaction), and the message is recorded
//! once, after all its recipients were decided.
//!
//! Maildir writes block on disk, so they run on blocking threads; the spool is read on the
//! runtime (sled's cache; content over 64 KiB on a blocking thread, see `content.rs`) and the
//! outcome recorded by awaiting its group commit; network delivery runs on the runtime. The
//! destinations of one message are served concurrently.

use crate::content::LazyContent;
use crate::deliver::{self, Couriers};
use crate::fate::{self, Hooks};
use crate::notify::{self, Notifier};
use crate::record::record;
use crate::route::{self, Destination, NextHop, Router};
use corvid_queue::{unix_secs, QueuedMessage, RetrySchedule, Spool};
use corvid_types::delivery_call::{self, CallFacts};
use corvid_types::{DeliveryPolicy, QueueId, RouteRequest, Stage};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::sync::OwnedSemaphorePermit;

/// The parts of the pipeline, built once by the dispatcher; each step gets only the parts it
/// uses.
pub(crate) struct Pipeline {
    pub(crate) spool: Arc<dyn Spool>,
    pub(crate) schedule: RetrySchedule,
    pub(crate) router: Router,
    /// The `route` stage, and the lifecycle stages [`fate::decide`] asks.
    pub(crate) policy: Option<Arc<dyn DeliveryPolicy>>,
    pub(crate) couriers: Arc<Couriers>,
    pub(crate) notifier: Notifier,
    /// More `Received:` fields than this: a loop (RFC 5321 6.3).
    pub(crate) max_hops: usize,
}

/// Attempts every due recipient of message `id` and records the outcomes durably.
///
/// Reading and routing run under a local permit, which [`deliver::deliver`] keeps for a
/// message delivered only locally and gives back before any network work.
pub(crate) async fn process(p: Arc<Pipeline>, id: QueueId) {
    let Some(permit) = p.couriers.local.permit().await else {
        return;
    };
    let now = unix_secs(SystemTime::now());
    let Some((mut msg, due)) = load(&p.spool, &id, now).await else {
        return;
    };
    // Route.
    let groups = route_all(p.policy.as_ref(), &p.router, &msg, &due).await;
    mark_routes(&mut msg, &groups);
    // Deliver.
    let content = Arc::new(LazyContent::new(
        Arc::clone(&p.spool),
        id,
        msg.size,
        p.max_hops,
    ));
    let fates = deliver_decide_notify(&p, &mut msg, groups, &content, permit, now).await;
    // Record.
    if record(p.spool.as_ref(), &msg).await {
        fate::tell(p.policy.as_ref(), fates);
    }
}

/// Deliver → decide → notify, for an attempt from the queue or at intake: the recipients'
/// states are final on return, with the DSNs due queued; recording is the caller's.
pub(crate) async fn deliver_decide_notify(
    p: &Pipeline,
    msg: &mut QueuedMessage,
    groups: Vec<(Destination, Vec<usize>)>,
    content: &Arc<LazyContent>,
    permit: OwnedSemaphorePermit,
    now: u64,
) -> Vec<fate::Fate> {
    let reports = deliver::deliver(&p.couriers, msg, groups, content, permit).await;
    // Decide, with the policy's lifecycle stages; then the recipients' states are final.
    let hooks = Hooks::new(p.policy.as_ref());
    let fates = fate::decide(hooks, &p.schedule, msg, reports, now).await;
    fate::write(msg, &fates);
    // Notify: the DSNs due are queued before the marks that say so are recorded.
    notify::send_reports(&p.notifier, msg, content, now).await;
    fates
}

/// Records each recipient's next hop in its state (`corvid queue show`, DSNs).
pub(crate) fn mark_routes(msg: &mut QueuedMessage, groups: &[(Destination, Vec<usize>)]) {
    for (dest, idx) in groups {
        for &i in idx {
            if let Some(r) = msg.recipients.get_mut(i) {
                r.route = Some(dest.hop.to_string());
            }
        }
    }
}

/// The message and its recipients due at `now`; `None` when it is gone or was handled since
/// the runner listed it.
async fn load(
    spool: &Arc<dyn Spool>,
    id: &QueueId,
    now: u64,
) -> Option<(QueuedMessage, Vec<usize>)> {
    // A read of sled's cache (see `Spool::get`): no hand-off to a blocking thread and back.
    let msg = match spool.get(id) {
        Ok(Some(msg)) => msg,
        Ok(None) => return None,
        Err(e) => {
            tracing::error!(queue_id = %id, error = %e, "cannot read message");
            return None;
        }
    };
    if msg.next_due().is_none_or(|t| t > now) {
        return None;
    }
    let due = (0..msg.recipients.len())
        .filter(|&i| msg.recipients[i].is_pending() && msg.recipients[i].next_attempt <= now)
        .collect();
    Some((msg, due))
}

/// Routes each due recipient (the policy's `route` stage first, else the router) and groups
/// them by destination, in first-seen order.
pub(crate) async fn route_all(
    policy: Option<&Arc<dyn DeliveryPolicy>>,
    router: &Router,
    msg: &QueuedMessage,
    due: &[usize],
) -> Vec<(Destination, Vec<usize>)> {
    let mut groups: Vec<(Destination, Vec<usize>)> = Vec::new();
    let policy = policy.filter(|p| p.observes(Stage::Route));
    for &i in due {
        let addr = &msg.recipients[i].recipient.address;
        let (hooked, asked_tls) = match policy {
            Some(p) => {
                let req = RouteRequest {
                    queue_id: msg.id.0.clone(),
                    sender: msg.envelope.sender.clone(),
                    recipient: addr.clone(),
                };
                // The TLS policy a plugin asks for comes back beside the route.
                let facts = CallFacts::attempt(None);
                let route = delivery_call::within(Arc::clone(&facts), p.route(&req)).await;
                (route::from_policy(route), facts.route_tls())
            }
            None => (None, None),
        };
        let dest = match hooked {
            // A plugin's route has the recipient domain's configured TLS policy.
            Some(d) => Destination {
                tls: router.domain_tls(&addr.domain_lower()),
                policy_domain: matches!(d.hop, NextHop::Mx(_)).then(|| addr.domain_lower()),
                ..d
            },
            None => router.route(addr),
        };
        // Whatever decided the hop, a plugin may have asked for stricter TLS.
        let dest = dest.with_plugin_tls(asked_tls);
        match groups.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((dest, vec![i])),
        }
    }
    groups
}
