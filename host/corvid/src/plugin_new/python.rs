//! The Python template: app.py (the world's exports, on componentize-py's bindings), policy.py
//! (the logic, plain Python) with its unittest, and `./build.sh` (componentize-py).

use super::{fill, Spec};

const BUILD: &str = include_str!("../../templates/python/build.sh.in");
const APP: &str = include_str!("../../templates/python/app.py.in");
const POLICY: &str = include_str!("../../templates/python/policy.py.in");
const TEST: &str = include_str!("../../templates/python/test_policy.py.in");
const README: &str = include_str!("../../templates/python/README.md.in");

/// The componentize-py the Python example pins (examples/greylist/python/build.sh); a test
/// keeps the two equal, so the examples' installed toolchain serves new projects too.
pub(super) const COMPONENTIZE_PY: &str = "0.25.1";

pub(super) fn project(spec: &Spec, toolchains: &str) -> Vec<(&'static str, String)> {
    let stages: Vec<String> = spec
        .stages
        .iter()
        .map(|s| format!("types.Stage.{}", s.to_ascii_uppercase()))
        .collect();
    let keys: Vec<String> = spec.keys().iter().map(|k| format!("\"{k}\"")).collect();
    let mut vars = super::template_vars(spec, &stages, &keys, hook, default_hook);
    vars.push(("toolchains", toolchains.to_string()));
    vars.push(("cpy_version", COMPONENTIZE_PY.to_string()));
    vec![
        ("build.sh", fill(BUILD, &vars)),
        ("app.py", fill(APP, &vars)),
        ("policy.py", fill(POLICY, &vars)),
        ("test_policy.py", fill(TEST, &vars)),
        ("README.md", fill(README, &vars)),
        ("plugin-test.toml", super::script(spec)),
        (
            ".gitignore",
            format!(
                "/target\n/{0}.wasm\n/{0}.wasm.tmp\n__pycache__/\n",
                spec.name
            ),
        ),
    ]
}

fn hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\n    def on_connect(self, conn: types.ConnectionInfo) -> types.Decision:\n        log.log(log.Level.DEBUG, f\"connection from {conn.client_ip}\")\n        return proceed()\n",
        "helo" => "\n    def on_helo(self, conn: types.ConnectionInfo) -> types.Decision:\n        return proceed()\n",
        "auth" => "\n    def on_auth(self, conn: types.ConnectionInfo, auth: types.AuthInfo) -> types.Decision:\n        # proceed() lets the next plugin, then the users file, decide. Never log a password.\n        return proceed()\n",
        "mail" => "\n    def on_mail(self, conn: types.ConnectionInfo, env: types.Envelope) -> types.Decision:\n        domain = env.sender.domain if env.sender is not None else None\n        reply = policy.sender_reply(settings(), domain)\n        return refuse(reply) if reply else proceed()\n",
        "rcpt" => "\n    def on_rcpt(\n        self, conn: types.ConnectionInfo, env: types.Envelope, rcpt: types.Recipient\n    ) -> types.Decision:\n        reply = policy.recipient_reply(settings(), rcpt.address.domain)\n        return refuse(reply) if reply else proceed()\n",
        "data" => "\n    def on_data(\n        self, conn: types.ConnectionInfo, env: types.Envelope, msg: message.Message\n    ) -> types.Decision:\n        # `msg` is borrowed for this call only: never keep it.\n        field = types.HeaderField(settings().header, \"checked\")\n        return proceed(types.Modification_AddHeader(field))\n",
        "route" => "\n    def on_route(self, req: types.RouteRequest) -> types.RouteDecision:\n        return types.RouteDecision_Continue()\n",
        "deferred" => "\n    def on_deferred(self, info: types.DeliveryInfo) -> types.DeferredDecision:\n        return types.DeferredDecision_Continue()\n",
        "bounced" => "\n    def on_bounced(self, info: types.DeliveryInfo) -> types.BounceDecision:\n        return types.BounceDecision_Continue()\n",
        _ => "\n    def on_delivered(self, info: types.DeliveryInfo) -> None:\n        log.log(log.Level.DEBUG, f\"delivered to {mailbox(info.recipient)}\")\n",
    }
}

fn default_hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\n    def on_connect(self, conn: types.ConnectionInfo) -> types.Decision:\n        return proceed()\n",
        "helo" => "\n    def on_helo(self, conn: types.ConnectionInfo) -> types.Decision:\n        return proceed()\n",
        "auth" => "\n    def on_auth(self, conn: types.ConnectionInfo, auth: types.AuthInfo) -> types.Decision:\n        return proceed()\n",
        "mail" => "\n    def on_mail(self, conn: types.ConnectionInfo, env: types.Envelope) -> types.Decision:\n        return proceed()\n",
        "rcpt" => "\n    def on_rcpt(\n        self, conn: types.ConnectionInfo, env: types.Envelope, rcpt: types.Recipient\n    ) -> types.Decision:\n        return proceed()\n",
        "data" => "\n    def on_data(\n        self, conn: types.ConnectionInfo, env: types.Envelope, msg: message.Message\n    ) -> types.Decision:\n        return proceed()\n",
        "delivered" => "\n    def on_delivered(self, info: types.DeliveryInfo) -> None:\n        return None\n",
        // route, deferred and bounced have no behaviour of their own: the same body.
        other => hook(other),
    }
}
