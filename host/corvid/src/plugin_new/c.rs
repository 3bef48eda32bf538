//! The C template: plugin.c (the world's exports, on `wit-bindgen c`'s bindings), policy.c
//! (the logic, plain C11) with a test main for the machine's compiler (`make test`), and
//! `./build.sh` (wit-bindgen, clang for wasm32-wasi, wasm-component-ld), as
//! examples/greylist/c builds.

use super::{fill, Spec};

const BUILD: &str = include_str!("../../templates/c/build.sh.in");
const PLUGIN: &str = include_str!("../../templates/c/plugin.c.in");
const POLICY_H: &str = include_str!("../../templates/c/policy.h.in");
const POLICY_C: &str = include_str!("../../templates/c/policy.c.in");
const TEST: &str = include_str!("../../templates/c/test_policy.c.in");
const MAKEFILE: &str = include_str!("../../templates/c/Makefile.in");
const README: &str = include_str!("../../templates/c/README.md.in");

/// The wit-bindgen-cli the C example pins (examples/greylist/c/build.sh); a test keeps the two
/// equal, so the examples' installed toolchain serves new projects too.
pub(super) const WIT_BINDGEN: &str = "0.46.0";

pub(super) fn project(spec: &Spec, toolchains: &str) -> Vec<(&'static str, String)> {
    let stages: Vec<String> = spec
        .stages
        .iter()
        .map(|s| format!("CORVID_PLUGIN_TYPES_STAGE_{}", s.to_ascii_uppercase()))
        .collect();
    // NULL-terminated: C has no empty arrays.
    let mut keys: Vec<String> = spec.keys().iter().map(|k| format!("\"{k}\"")).collect();
    keys.push("NULL".into());
    let mut vars = super::template_vars(spec, &stages, &keys, hook, default_hook);
    vars.push(("toolchains", toolchains.to_string()));
    vars.push(("wit_bindgen_version", WIT_BINDGEN.to_string()));
    vec![
        ("build.sh", fill(BUILD, &vars)),
        ("plugin.c", fill(PLUGIN, &vars)),
        ("policy.h", fill(POLICY_H, &vars)),
        ("policy.c", fill(POLICY_C, &vars)),
        ("test_policy.c", fill(TEST, &vars)),
        ("Makefile", fill(MAKEFILE, &vars)),
        ("README.md", fill(README, &vars)),
        ("plugin-test.toml", super::script(spec)),
        (
            ".gitignore",
            format!("/target\n/{0}.wasm\n/{0}.wasm.tmp\n", spec.name),
        ),
    ]
}

fn hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\nvoid exports_plugin_on_connect(plugin_connection_info_t *conn, plugin_decision_t *ret) {\n    static const char prefix[] = \"connection from \";\n    char *line = malloc(sizeof prefix + conn->client_ip.len);\n    if (!line) abort();\n    memcpy(line, prefix, sizeof prefix - 1);\n    memcpy(line + sizeof prefix - 1, conn->client_ip.ptr, conn->client_ip.len);\n    line[sizeof prefix - 1 + conn->client_ip.len] = '\\0';\n    log_text(CORVID_PLUGIN_LOG_LEVEL_DEBUG, line);\n    free(line);\n    proceed(ret);\n    plugin_connection_info_free(conn);\n}\n",
        "helo" => "\nvoid exports_plugin_on_helo(plugin_connection_info_t *conn, plugin_decision_t *ret) {\n    proceed(ret);\n    plugin_connection_info_free(conn);\n}\n",
        "auth" => "\n// proceed() lets the next plugin, then the users file, decide.\nvoid exports_plugin_on_auth(plugin_connection_info_t *conn, plugin_auth_info_t *auth,\n                            plugin_decision_t *ret) {\n    proceed(ret);\n    // A password arrives only with the `credentials` capability: wipe it before freeing.\n    if (auth->password.is_some) {\n        volatile uint8_t *p = auth->password.val.ptr;\n        for (size_t i = 0; i < auth->password.val.len; i++) p[i] = 0;\n    }\n    plugin_auth_info_free(auth);\n    plugin_connection_info_free(conn);\n}\n",
        "mail" => "\nvoid exports_plugin_on_mail(plugin_connection_info_t *conn, plugin_envelope_t *env,\n                            plugin_decision_t *ret) {\n    policy_str domain;\n    const policy_str *sender = NULL;  // the null sender\n    if (env->sender.is_some) {\n        domain = view(&env->sender.val.domain);\n        sender = &domain;\n    }\n    const policy_reply *r = policy_sender(settings(), sender);\n    if (r) refuse(ret, r);\n    else proceed(ret);\n    plugin_connection_info_free(conn);\n    plugin_envelope_free(env);\n}\n",
        "rcpt" => "\nvoid exports_plugin_on_rcpt(plugin_connection_info_t *conn, plugin_envelope_t *env,\n                            plugin_recipient_t *rcpt, plugin_decision_t *ret) {\n    const policy_reply *r = policy_recipient(settings(), view(&rcpt->address.domain));\n    if (r) refuse(ret, r);\n    else proceed(ret);\n    plugin_connection_info_free(conn);\n    plugin_envelope_free(env);\n    plugin_recipient_free(rcpt);\n}\n",
        "data" => "\nvoid exports_plugin_on_data(plugin_connection_info_t *conn, plugin_envelope_t *env,\n                            plugin_borrow_message_t msg, plugin_decision_t *ret) {\n    proceed(ret);\n    add_header(ret, settings()->header, \"checked\");\n    corvid_plugin_message_message_drop_borrow(msg);  // before returning: wasmtime checks\n    plugin_connection_info_free(conn);\n    plugin_envelope_free(env);\n}\n",
        "route" => "\nvoid exports_plugin_on_route(plugin_route_request_t *req, plugin_route_decision_t *ret) {\n    memset(ret, 0, sizeof *ret);\n    ret->tag = CORVID_PLUGIN_TYPES_ROUTE_DECISION_CONTINUE;\n    plugin_route_request_free(req);\n}\n",
        "deferred" => "\nvoid exports_plugin_on_deferred(plugin_delivery_info_t *info, plugin_deferred_decision_t *ret) {\n    memset(ret, 0, sizeof *ret);\n    ret->tag = CORVID_PLUGIN_TYPES_DEFERRED_DECISION_CONTINUE;\n    plugin_delivery_info_free(info);\n}\n",
        "bounced" => "\nvoid exports_plugin_on_bounced(plugin_delivery_info_t *info, plugin_bounce_decision_t *ret) {\n    memset(ret, 0, sizeof *ret);\n    ret->tag = CORVID_PLUGIN_TYPES_BOUNCE_DECISION_CONTINUE;\n    plugin_delivery_info_free(info);\n}\n",
        _ => "\nvoid exports_plugin_on_delivered(plugin_delivery_info_t *info) {\n    static const char prefix[] = \"delivered to \";\n    const plugin_string_t *l = &info->recipient.local, *d = &info->recipient.domain;\n    char *line = malloc(sizeof prefix + l->len + 1 + d->len);\n    if (!line) abort();\n    size_t n = sizeof prefix - 1;\n    memcpy(line, prefix, n);\n    memcpy(line + n, l->ptr, l->len);\n    line[n + l->len] = '@';\n    memcpy(line + n + l->len + 1, d->ptr, d->len);\n    line[n + l->len + 1 + d->len] = '\\0';\n    log_text(CORVID_PLUGIN_LOG_LEVEL_DEBUG, line);\n    free(line);\n    plugin_delivery_info_free(info);\n}\n",
    }
}

fn default_hook(stage: &str) -> &'static str {
    match stage {
        "connect" => "\nvoid exports_plugin_on_connect(plugin_connection_info_t *conn, plugin_decision_t *ret) {\n    proceed(ret);\n    plugin_connection_info_free(conn);\n}\n",
        "mail" => "\nvoid exports_plugin_on_mail(plugin_connection_info_t *conn, plugin_envelope_t *env,\n                            plugin_decision_t *ret) {\n    proceed(ret);\n    plugin_connection_info_free(conn);\n    plugin_envelope_free(env);\n}\n",
        "rcpt" => "\nvoid exports_plugin_on_rcpt(plugin_connection_info_t *conn, plugin_envelope_t *env,\n                            plugin_recipient_t *rcpt, plugin_decision_t *ret) {\n    proceed(ret);\n    plugin_connection_info_free(conn);\n    plugin_envelope_free(env);\n    plugin_recipient_free(rcpt);\n}\n",
        "data" => "\nvoid exports_plugin_on_data(plugin_connection_info_t *conn, plugin_envelope_t *env,\n                            plugin_borrow_message_t msg, plugin_decision_t *ret) {\n    proceed(ret);\n    corvid_plugin_message_message_drop_borrow(msg);\n    plugin_connection_info_free(conn);\n    plugin_envelope_free(env);\n}\n",
        "delivered" => "\nvoid exports_plugin_on_delivered(plugin_delivery_info_t *info) {\n    plugin_delivery_info_free(info);\n}\n",
        // helo, auth, route, deferred and bounced have no behaviour of their own.
        other => hook(other),
    }
}
