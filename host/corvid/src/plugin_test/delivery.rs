//! The delivery hooks of a script (`[[route]]`, `[[deferred]]`, `[[bounced]]`,
//! `[[delivered]]`), run after the SMTP session, each after its step's `advance`.

use super::clock::ScriptClock;
use super::report::{self, Outcome};
use super::script::{address, DeliveryStep, Script};
use anyhow::{bail, Result};
use corvid_plugin_host::{DeliveryInfo, DeliveryPolicy, PluginHost};
use corvid_types::{Deferral, Reply, Route, RouteRequest};

/// The delivery hooks: route, deferred, bounced, delivered.
pub(super) async fn delivery(
    host: &PluginHost,
    script: &Script,
    clock: &ScriptClock,
    out: &mut Vec<Outcome>,
) -> Result<()> {
    for step in &script.route {
        clock.advance(step.advance)?;
        let req = RouteRequest {
            queue_id: step.queue_id.clone(),
            sender: address(&step.sender)?,
            recipient: recipient(&step.recipient)?,
        };
        let got = match host.route(&req).await {
            Route::Continue => "continue".to_string(),
            Route::Local => "local".into(),
            Route::Mx(d) => format!("mx {d}"),
            Route::Relay { host, port } => format!("relay {host}:{port}"),
            Route::Drop => "drop".into(),
        };
        out.push(report::text(
            format!("route <{}>", step.recipient),
            step.expect.as_deref(),
            got,
        ));
    }
    for step in &script.deferred {
        clock.advance(step.advance)?;
        let got = match host.deferred(&info(step)?).await {
            Deferral::Continue => "continue".to_string(),
            Deferral::RetryAfter(d) => format!("retry-after {}s", d.as_secs()),
            Deferral::Bounce => "bounce".into(),
        };
        let name = format!("deferred <{}>", step.recipient);
        out.push(report::text(name, step.expect.as_deref(), got));
    }
    for step in &script.bounced {
        clock.advance(step.advance)?;
        let got = match host.bounced(&info(step)?).await {
            corvid_types::BounceAction::Continue => "continue".to_string(),
            corvid_types::BounceAction::Suppress => "suppress".into(),
            corvid_types::BounceAction::Annotate(t) => format!("annotate {t}"),
        };
        let name = format!("bounced <{}>", step.recipient);
        out.push(report::text(name, step.expect.as_deref(), got));
    }
    for step in &script.delivered {
        clock.advance(step.advance)?;
        if step.expect.is_some() {
            bail!("[[delivered]] takes no `expect`: the hook decides nothing");
        }
        host.delivered(&info(step)?).await;
        let name = format!("delivered <{}>", step.recipient);
        out.push(report::text(name, None, "done".into()));
    }
    Ok(())
}

fn recipient(text: &str) -> Result<corvid_types::Address> {
    match address(text)? {
        Some(a) => Ok(a),
        None => bail!("a delivery step needs a recipient"),
    }
}

fn info(step: &DeliveryStep) -> Result<DeliveryInfo> {
    let reply = match &step.reply {
        None => None,
        Some(text) => {
            let mut parts = text.splitn(3, ' ');
            let code: u16 = match parts.next().map(str::parse) {
                Some(Ok(c)) => c,
                _ => bail!("reply {text:?}: expected `CODE [X.Y.Z] text`"),
            };
            let second = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("");
            Some(match corvid_types::EnhancedCode::parse(second) {
                Some(_) => Reply::new(code, second, rest),
                None => Reply::new(code, "", format!("{second} {rest}").trim()),
            })
        }
    };
    Ok(DeliveryInfo {
        queue_id: step.queue_id.clone(),
        sender: address(&step.sender)?,
        recipient: recipient(&step.recipient)?,
        attempt: step.attempt,
        remote_host: step.remote_host.clone(),
        reply,
        reason: step.reason.clone(),
        quarantined: step.quarantined.clone(),
    })
}
