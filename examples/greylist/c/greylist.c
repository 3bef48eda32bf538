// greylist: the example mail policy of examples/README.md, in C.
//
//   rcpt: greylisting on the kv store, keyed by (client IP, sender, recipient)
//   data: refuse a Subject containing `reject_subject`, else stamp `<header>: pass`
//
// Built against the C bindings that wit-bindgen generates from wit/ (world `plugin`), see
// build.sh. Memory rules of those bindings, which every function below follows (README.md
// has the full table):
//
//   * Export arguments (conn, env, rcpt, ...) are OWNED by the callee, i.e. by this file:
//     every export frees each of its record arguments with the generated `*_free` function
//     before it returns, whatever path it takes.
//   * Export results (`*ret`, `*err`) are freed by the generated post-return function with
//     free(), after the host has copied them. So every string and list put into a result must
//     come from malloc (plugin_string_dup, xmalloc), never a literal or a stack buffer; an
//     empty string (len 0) is never freed.
//   * Import arguments stay owned by the caller (this file): the host copies them during the
//     call, so literals and stack buffers are fine and nothing is handed over.
//   * Import results are allocated in our memory (through cabi_realloc, i.e. malloc) and
//     OWNED by the caller: free them with the generated `*_free` functions.
//   * A `borrow<message>` handed to on-data is a handle into the host's table that must be
//     released before the export returns: wasmtime traps with "borrow handles still remain at
//     the end of the call" otherwise. Release it with `..._message_drop_borrow` (this only
//     ends the borrow; the message itself stays the host's). An `own<message>` (none in this
//     world) would be dropped with `..._message_drop_own` when done.

#include "plugin.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------------------------------
// The policy's constants (byte for byte the same in every language of examples/).

#define PLUGIN_NAME "greylist"
#define PLUGIN_VERSION "1.0.0"

#define DEFAULT_DELAY_SECONDS 300u
#define DEFAULT_REJECT_SUBJECT "BUY NOW"
#define DEFAULT_HEADER "X-Greylist"
#define HEADER_NAME_MAX 64u

#define TRIPLET_TTL_SECONDS 86400u

#define TEMPFAIL_CODE 451
#define TEMPFAIL_ENHANCED "4.7.1"
#define TEMPFAIL_TEXT "Greylisted, please try again later"
#define REJECT_CODE 550
#define REJECT_ENHANCED "5.7.1"
#define REJECT_TEXT "Message refused by content policy"
#define STAMP_VALUE "pass"

// ---------------------------------------------------------------------------------------
// Small helpers: allocation, a bounded growable byte buffer, ASCII case folding.

// Out of memory in a wasm instance has no sensible recovery: trap, and the host applies the
// plugin's failure policy (451 4.3.0 by default) for this one call.
static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

// A string that owns a malloc'd copy of `bytes[0..len)`, as results must (see top).
static plugin_string_t string_dup_bytes(const uint8_t *bytes, size_t len) {
    plugin_string_t s = {NULL, 0};
    if (len == 0) return s;  // never freed by the bindings, so no allocation either
    s.ptr = xmalloc(len);
    memcpy(s.ptr, bytes, len);
    s.len = len;
    return s;
}

// Growable buffer for keys, log lines and error texts. Every append checks for size_t
// overflow and grows the allocation first, so no write can go past `cap`.
typedef struct {
    uint8_t *ptr;
    size_t len;
    size_t cap;
} buf_t;

static void buf_reserve(buf_t *b, size_t extra) {
    if (extra > SIZE_MAX - b->len) abort();
    size_t need = b->len + extra;
    if (need <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = realloc(b->ptr, cap);
    if (!p) abort();
    b->ptr = p;
    b->cap = cap;
}

static void buf_put(buf_t *b, const uint8_t *bytes, size_t len) {
    if (len == 0) return;
    buf_reserve(b, len);
    memcpy(b->ptr + b->len, bytes, len);
    b->len += len;
}

static void buf_puts(buf_t *b, const char *s) { buf_put(b, (const uint8_t *)s, strlen(s)); }
static void buf_put_str(buf_t *b, const plugin_string_t *s) { buf_put(b, s->ptr, s->len); }

static uint8_t ascii_lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

static void buf_put_lower(buf_t *b, const plugin_string_t *s) {
    buf_reserve(b, s->len);
    for (size_t i = 0; i < s->len; i++) b->ptr[b->len + i] = ascii_lower(s->ptr[i]);
    b->len += s->len;
}

static void buf_put_u64(buf_t *b, uint64_t v) {
    char digits[20];  // 2^64 - 1 has 20 decimal digits
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n] = (char)('0' + v % 10);
        v /= 10;
        n++;
    } while (v != 0 && n < sizeof digits);
    buf_put(b, (const uint8_t *)digits + sizeof digits - n, n);
}

// Borrowed view of the buffer for import arguments (the host copies it during the call).
static plugin_string_t buf_view(const buf_t *b) {
    plugin_string_t s = {b->ptr, b->len};
    return s;
}

// Hands the bytes over as an owned result string; the buffer is empty afterwards.
static plugin_string_t buf_take(buf_t *b) {
    plugin_string_t s = {b->ptr, b->len};
    if (b->len == 0) {
        free(b->ptr);  // an empty result string is never freed by the post-return
        s.ptr = NULL;
    }
    b->ptr = NULL;
    b->len = b->cap = 0;
    return s;
}

static void buf_free(buf_t *b) {
    free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

static bool str_eq(const plugin_string_t *s, const char *lit) {
    size_t n = strlen(lit);
    return s->len == n && memcmp(s->ptr, lit, n) == 0;
}

// ASCII case-insensitive substring search; an empty needle never matches (it disables).
static bool contains_ignore_ascii_case(const plugin_string_t *hay, const plugin_string_t *needle) {
    if (needle->len == 0 || needle->len > hay->len) return false;
    for (size_t i = 0; i + needle->len <= hay->len; i++) {
        size_t j = 0;
        while (j < needle->len && ascii_lower(hay->ptr[i + j]) == ascii_lower(needle->ptr[j])) j++;
        if (j == needle->len) return true;
    }
    return false;
}

// A non-negative decimal integer that fits in u64 (TOML integers reach us as decimal text).
static bool parse_u64(const uint8_t *p, size_t len, uint64_t *out) {
    if (len == 0) return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9') return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static void log_line(corvid_plugin_log_level_t level, const buf_t *line) {
    plugin_string_t msg = buf_view(line);  // import argument: borrowed, host copies it
    corvid_plugin_log_log(level, &msg);
}

static void log_text(corvid_plugin_log_level_t level, const char *text) {
    plugin_string_t msg;
    plugin_string_set(&msg, text);  // points at the literal: fine for an import argument
    corvid_plugin_log_log(level, &msg);
}

// ---------------------------------------------------------------------------------------
// Configuration.

typedef struct {
    uint64_t delay_seconds;
    plugin_string_t reject_subject;  // owned (malloc'd) copy; empty disables the filter
    char header[HEADER_NAME_MAX + 1];  // validated: 1..64 bytes of 0x21..0x7e without ':'
} settings_t;

static void settings_free(settings_t *s) { plugin_string_free(&s->reject_subject); }

static bool valid_header_name(const plugin_string_t *v) {
    if (v->len == 0 || v->len > HEADER_NAME_MAX) return false;
    for (size_t i = 0; i < v->len; i++) {
        uint8_t c = v->ptr[i];
        if (c < 0x21 || c > 0x7e || c == ':') return false;
    }
    return true;
}

// Reads the top-level entries (values: strings as they are, other TOML values in TOML
// syntax). On failure returns false and appends the reason, naming the key, to `why`.
static bool parse_settings(const plugin_list_tuple2_string_string_t *entries, settings_t *out,
                           buf_t *why) {
    out->delay_seconds = DEFAULT_DELAY_SECONDS;
    plugin_string_t subject;
    plugin_string_set(&subject, DEFAULT_REJECT_SUBJECT);
    plugin_string_t header;
    plugin_string_set(&header, DEFAULT_HEADER);

    for (size_t i = 0; i < entries->len; i++) {
        const plugin_string_t *key = &entries->ptr[i].f0;
        const plugin_string_t *value = &entries->ptr[i].f1;
        if (str_eq(key, "delay_seconds")) {
            if (!parse_u64(value->ptr, value->len, &out->delay_seconds)) {
                buf_puts(why, "delay_seconds must be a non-negative integer");
                return false;
            }
        } else if (str_eq(key, "reject_subject")) {
            subject = *value;  // borrowed until copied below
        } else if (str_eq(key, "header")) {
            if (!valid_header_name(value)) {
                buf_puts(why, "header must be a header field name "
                              "(1-64 printable ASCII characters, no ':' or space)");
                return false;
            }
            header = *value;
        } else {
            buf_puts(why, "unknown config key ");
            buf_put_str(why, key);
            buf_puts(why, " (known: delay_seconds, reject_subject, header)");
            return false;
        }
    }
    // Copies, because the entries belong to whoever passed them in and are freed soon.
    out->reject_subject = string_dup_bytes(subject.ptr, subject.len);
    memcpy(out->header, header.ptr, header.len);  // header.len <= HEADER_NAME_MAX, checked
    out->header[header.len] = '\0';
    return true;
}

// The settings for hooks. `configure` runs on an instance of its own, so hooks read the table
// again through the `config` import, once per instance (= per transaction, or per warm
// instance with `instance = "pool"`).
static settings_t g_settings;
static bool g_settings_loaded;

static const settings_t *settings(void) {
    if (g_settings_loaded) return &g_settings;
    corvid_plugin_config_config_table_t table;
    corvid_plugin_config_table(&table);  // import result: ours to free
    buf_t why = {0};
    bool ok = parse_settings(&table.entries, &g_settings, &why);
    corvid_plugin_config_config_table_free(&table);
    if (!ok) {
        // `configure` accepted this very table at load time, so this cannot happen unless the
        // host changed it under us: log and trap (the failure policy applies), as the Rust
        // SDK does.
        log_line(CORVID_PLUGIN_LOG_LEVEL_ERROR, &why);
        buf_free(&why);
        abort();
    }
    g_settings_loaded = true;
    return &g_settings;
}

// ---------------------------------------------------------------------------------------
// Decisions (export results: every string and list malloc'd, freed by the post-return).

static void decide_continue(plugin_decision_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->verdict.tag = CORVID_PLUGIN_TYPES_VERDICT_CONTINUE;
    ret->modifications.ptr = NULL;
    ret->modifications.len = 0;
}

static corvid_plugin_types_reply_t make_reply(uint16_t code, const char *enhanced, const char *text) {
    corvid_plugin_types_reply_t r;
    r.code = code;
    plugin_string_dup(&r.enhanced, enhanced);  // dup, not set: the post-return frees these
    plugin_string_dup(&r.text, text);
    return r;
}

static void decide_tempfail(plugin_decision_t *ret) {
    decide_continue(ret);
    ret->verdict.tag = CORVID_PLUGIN_TYPES_VERDICT_TEMPFAIL;
    ret->verdict.val.tempfail = make_reply(TEMPFAIL_CODE, TEMPFAIL_ENHANCED, TEMPFAIL_TEXT);
}

static void decide_reject(plugin_decision_t *ret) {
    decide_continue(ret);
    ret->verdict.tag = CORVID_PLUGIN_TYPES_VERDICT_REJECT;
    ret->verdict.val.reject = make_reply(REJECT_CODE, REJECT_ENHANCED, REJECT_TEXT);
}

static void decide_continue_with_header(plugin_decision_t *ret, const char *name, const char *value) {
    decide_continue(ret);
    corvid_plugin_types_modification_t *m = xmalloc(sizeof *m);
    memset(m, 0, sizeof *m);
    m->tag = CORVID_PLUGIN_TYPES_MODIFICATION_ADD_HEADER;
    plugin_string_dup(&m->val.add_header.name, name);
    plugin_string_dup(&m->val.add_header.value, value);
    ret->modifications.ptr = m;  // the list and its strings are freed by the post-return
    ret->modifications.len = 1;
}

// ---------------------------------------------------------------------------------------
// Exports: describe and configure.

void exports_plugin_describe(plugin_plugin_info_t *ret) {
    plugin_string_dup(&ret->name, PLUGIN_NAME);
    plugin_string_dup(&ret->version, PLUGIN_VERSION);
    corvid_plugin_types_stage_t *stages = xmalloc(2 * sizeof *stages);
    stages[0] = CORVID_PLUGIN_TYPES_STAGE_RCPT;
    stages[1] = CORVID_PLUGIN_TYPES_STAGE_DATA;
    ret->stages.ptr = stages;
    ret->stages.len = 2;
}

bool exports_plugin_configure(plugin_config_table_t *config, plugin_string_t *err) {
    settings_t s = {0};
    buf_t why = {0};
    bool ok = parse_settings(&config->entries, &s, &why);
    settings_free(&s);
    plugin_config_table_free(config);  // argument: ours to free
    if (!ok) {
        *err = buf_take(&why);  // result: malloc'd, freed by the post-return
        return false;
    }
    buf_free(&why);
    return true;
}

// ---------------------------------------------------------------------------------------
// on-rcpt: greylisting.

// `local@domain` with the domain lower-cased, or `<>` for the null sender.
static void put_address(buf_t *b, const corvid_plugin_types_address_t *a) {
    buf_put_str(b, &a->local);
    buf_puts(b, "@");
    buf_put_lower(b, &a->domain);
}

static void put_sender(buf_t *b, const plugin_envelope_t *env) {
    if (env->sender.is_some)
        put_address(b, &env->sender.val);
    else
        buf_puts(b, "<>");
}

static void put_kv_error(buf_t *b, const corvid_plugin_kv_error_t *e) {
    switch (e->tag) {
        case CORVID_PLUGIN_KV_ERROR_DENIED: buf_puts(b, "denied (grant the kv capability)"); break;
        case CORVID_PLUGIN_KV_ERROR_TOO_LARGE: buf_puts(b, "key or value too large"); break;
        case CORVID_PLUGIN_KV_ERROR_NOT_A_NUMBER: buf_puts(b, "not a number"); break;
        case CORVID_PLUGIN_KV_ERROR_STORAGE:
            buf_puts(b, "storage: ");
            buf_put_str(b, &e->val.storage);
            break;
        default: buf_puts(b, "unknown error"); break;
    }
}

// Logs a kv failure at warn; the caller then fails open (continue). Frees the error, an
// import result that may own a string (`storage`).
static void warn_kv_error(const char *op, corvid_plugin_kv_error_t *e) {
    buf_t line = {0};
    buf_puts(&line, "kv ");
    buf_puts(&line, op);
    buf_puts(&line, " failed, not greylisting: ");
    put_kv_error(&line, e);
    log_line(CORVID_PLUGIN_LOG_LEVEL_WARN, &line);
    buf_free(&line);
    corvid_plugin_kv_error_free(e);
}

// The verdict for one RCPT; fills `ret`. Borrows its arguments (the export frees them).
static void greylist(const plugin_connection_info_t *conn, const plugin_envelope_t *env,
                     const plugin_recipient_t *rcpt, plugin_decision_t *ret) {
    if (conn->auth_user.is_some) {  // authenticated clients are never greylisted
        decide_continue(ret);
        return;
    }
    const settings_t *s = settings();

    buf_t key = {0};
    buf_puts(&key, "grey/");
    buf_put_str(&key, &conn->client_ip);
    buf_puts(&key, "/");
    put_sender(&key, env);
    buf_puts(&key, "/");
    put_address(&key, &rcpt->address);
    plugin_string_t key_arg = buf_view(&key);  // import argument: borrowed

    uint64_t now = corvid_plugin_clock_now_ms();
    plugin_option_list_u8_t seen;
    corvid_plugin_kv_error_t kv_err;
    if (!corvid_plugin_kv_get(&key_arg, &seen, &kv_err)) {
        warn_kv_error("get", &kv_err);
        buf_free(&key);
        decide_continue(ret);
        return;
    }

    bool hold;
    uint64_t first_seen = 0;
    if (seen.is_some && !parse_u64(seen.val.ptr, seen.val.len, &first_seen)) {
        // Only this plugin writes its keys, so this does not happen; if it does, the entry
        // is useless and letting the mail through is the safe side (as for a kv error).
        buf_t line = {0};
        buf_puts(&line, "unreadable kv value at ");
        buf_put_str(&line, &key_arg);
        buf_puts(&line, ", not greylisting");
        log_line(CORVID_PLUGIN_LOG_LEVEL_WARN, &line);
        buf_free(&line);
        hold = false;
    } else if (seen.is_some) {
        uint64_t elapsed = now >= first_seen ? now - first_seen : 0;  // clock went back: 0
        uint64_t delay_ms = s->delay_seconds > UINT64_MAX / 1000 ? UINT64_MAX : s->delay_seconds * 1000;
        hold = elapsed < delay_ms;
    } else {
        buf_t value = {0};
        buf_put_u64(&value, now);
        plugin_list_u8_t value_arg = {value.ptr, value.len};  // import argument: borrowed
        uint32_t ttl = TRIPLET_TTL_SECONDS;
        hold = true;
        if (!corvid_plugin_kv_set(&key_arg, &value_arg, &ttl, &kv_err)) {
            warn_kv_error("set", &kv_err);
            hold = false;  // fail open
        }
        buf_free(&value);
    }
    plugin_option_list_u8_free(&seen);  // import result: ours to free
    buf_free(&key);

    if (!hold) {
        decide_continue(ret);
        return;
    }
    buf_t line = {0};
    buf_puts(&line, "greylisted ");
    buf_put_str(&line, &conn->client_ip);
    buf_puts(&line, " ");
    put_sender(&line, env);
    buf_puts(&line, " -> ");
    put_address(&line, &rcpt->address);
    log_line(CORVID_PLUGIN_LOG_LEVEL_INFO, &line);
    buf_free(&line);
    decide_tempfail(ret);
}

void exports_plugin_on_rcpt(plugin_connection_info_t *conn, plugin_envelope_t *env,
                            plugin_recipient_t *rcpt, plugin_decision_t *ret) {
    greylist(conn, env, rcpt, ret);
    plugin_connection_info_free(conn);  // arguments: ours to free
    plugin_envelope_free(env);
    plugin_recipient_free(rcpt);
}

// ---------------------------------------------------------------------------------------
// on-data: subject filter and header stamp.

void exports_plugin_on_data(plugin_connection_info_t *conn, plugin_envelope_t *env,
                            plugin_borrow_message_t msg, plugin_decision_t *ret) {
    const settings_t *s = settings();
    bool refused = false;
    if (s->reject_subject.len > 0) {
        plugin_string_t name;
        plugin_string_set(&name, "subject");  // import argument: a literal is fine
        plugin_list_string_t subjects;
        corvid_plugin_message_method_message_header(msg, &name, &subjects);
        for (size_t i = 0; i < subjects.len && !refused; i++)
            refused = contains_ignore_ascii_case(&subjects.ptr[i], &s->reject_subject);
        plugin_list_string_free(&subjects);  // import result: ours (list and each string)
    }
    if (refused) {
        log_text(CORVID_PLUGIN_LOG_LEVEL_INFO, "subject refused");
        decide_reject(ret);
    } else {
        decide_continue_with_header(ret, s->header, STAMP_VALUE);
    }
    // End the borrow before returning (wasmtime checks); the message stays the host's.
    corvid_plugin_message_message_drop_borrow(msg);
    plugin_connection_info_free(conn);
    plugin_envelope_free(env);
}

// ---------------------------------------------------------------------------------------
// The stages this plugin does not list in `describe`: the host does not call them, but the
// world exports them all, so each answers "no opinion" and frees its arguments.

void exports_plugin_on_connect(plugin_connection_info_t *conn, plugin_decision_t *ret) {
    decide_continue(ret);
    plugin_connection_info_free(conn);
}

void exports_plugin_on_helo(plugin_connection_info_t *conn, plugin_decision_t *ret) {
    decide_continue(ret);
    plugin_connection_info_free(conn);
}

void exports_plugin_on_auth(plugin_connection_info_t *conn, plugin_auth_info_t *auth,
                            plugin_decision_t *ret) {
    decide_continue(ret);
    // A password only arrives with the `credentials` capability, which this plugin does not
    // ask for; wipe it anyway before the memory goes back to the allocator.
    if (auth->password.is_some && auth->password.val.len > 0) {
        volatile uint8_t *p = auth->password.val.ptr;
        for (size_t i = 0; i < auth->password.val.len; i++) p[i] = 0;
    }
    plugin_auth_info_free(auth);
    plugin_connection_info_free(conn);
}

void exports_plugin_on_mail(plugin_connection_info_t *conn, plugin_envelope_t *env,
                            plugin_decision_t *ret) {
    decide_continue(ret);
    plugin_connection_info_free(conn);
    plugin_envelope_free(env);
}

void exports_plugin_on_route(plugin_route_request_t *req, plugin_route_decision_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->tag = CORVID_PLUGIN_TYPES_ROUTE_DECISION_CONTINUE;
    plugin_route_request_free(req);
}

void exports_plugin_on_deferred(plugin_delivery_info_t *info, plugin_deferred_decision_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->tag = CORVID_PLUGIN_TYPES_DEFERRED_DECISION_CONTINUE;
    plugin_delivery_info_free(info);
}

void exports_plugin_on_bounced(plugin_delivery_info_t *info, plugin_bounce_decision_t *ret) {
    memset(ret, 0, sizeof *ret);
    ret->tag = CORVID_PLUGIN_TYPES_BOUNCE_DECISION_CONTINUE;
    plugin_delivery_info_free(info);
}

void exports_plugin_on_delivered(plugin_delivery_info_t *info) {
    plugin_delivery_info_free(info);  // notification only: nothing to do but free
}
