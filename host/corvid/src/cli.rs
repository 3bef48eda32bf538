//! Command-line interface. The help texts are written for mail administrators.

use crate::config::LogFormat;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "corvid",
    version,
    about = "Corvid: a programmable mail server (SMTP receiver, queue, Maildir delivery)",
    long_about = "Corvid receives mail over SMTP, stores it durably before it answers 250 (in \
                  its queue, or for local mailboxes straight in their Maildirs), and delivers it \
                  to Maildirs that Dovecot and mail clients read.\n\n\
                  Start with `corvid serve` (a development server on 127.0.0.1:2525 with the \
                  built-in config) or `corvid serve --config /etc/corvid/corvid.toml`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the mail server until SIGTERM or SIGINT.
    #[command(
        long_about = "Run the mail server in the foreground until SIGTERM or SIGINT.\n\n\
        On shutdown it stops accepting connections, lets sessions finish for \
        limits.shutdown_grace, flushes the queue to disk and exits 0. Messages in the queue are \
        delivered again on the next start. Without --config it runs on the built-in \
        development config (127.0.0.1:2525, domain corvid.test, data under ./data)."
    )]
    Serve(ServeArgs),

    /// Check a config file as `serve` would load it (values, TLS certificates and keys, DKIM
    /// key files, server.user, plugins compiled and configured); report the first error.
    CheckConfig {
        /// The config file (TOML), e.g. /etc/corvid/corvid.toml.
        file: PathBuf,
    },

    /// Manage the users who may authenticate (the users file, argon2id password hashes).
    #[command(
        long_about = "Manage the users who may authenticate with SMTP AUTH.\n\n\
        Users live in the users file (auth.users_file, default data_dir/users), one line per \
        user with an argon2id password hash, owner-only. A running server picks changes up \
        at the next AUTH, without a restart."
    )]
    User {
        /// The server's config file (to find the users file). Default: the built-in dev config.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: UserAction,
    },

    /// Show or reload the plugin chain of the running server.
    #[command(
        long_about = "Show or reload the plugin chain of the running server (through its admin \
        socket).\n\nA reload reads the [[plugin]] tables of the config file again, compiles and \
        checks the new set off the SMTP threads, and swaps it in at once: a transaction in \
        progress finishes on the version it started with, and a plugin that fails to load keeps \
        its previous version (shown as `stale` with the error). SIGHUP and a changed component \
        file reload too."
    )]
    Plugins {
        /// The server's config file (to find its admin socket). Default: the built-in dev config.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: PluginsAction,
    },

    /// Test, replay or scaffold a plugin, without a server (`plugin test|replay|new`).
    #[command(
        long_about = "Test, replay or scaffold a plugin, without a server.\n\n\
        `corvid plugin test`: run one plugin component against a scripted SMTP session and delivery \
        events, without a server, print every hook's decision and check it against the \
        script's expectations; any mismatch prints a diff and exits with status 1.\n\n\
        The script is TOML (JSON for a .json file): [plugin] (name, config, capabilities, \
        stages), [connection] (client, local, rdns, helo, esmtp, listener, tls = { version, \
        cipher, sni }, starttls (the tls comes after connect), auth_user, expect.connect, \
        expect.helo), [auth] (mechanism, user, \
        password, authzid, expect), [[transaction]] (mail_from, mail_params, rcpt_to, data, \
        expect.mail, expect.rcpt, expect.data, advance), [dns] answers, [kv] initial contents \
        (\"k\" = \"v\" or { value, ttl }), [clock] start (the plugin's clocks and the kv TTLs \
        stand there until a step's advance), [[http]] answers (url, method, status, headers, \
        body), [[route]]/[[deferred]]/[[bounced]]/[[delivered]] delivery events (advance), \
        [expect_kv] (\"\" is absent, or { value, ttl }). An \
        expectation is { verdict, code, enhanced, text, modifications }. See \
        plugins/sdk/README.md, \"Testing a component\"."
    )]
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },

    /// Look at and manage the mail queue.
    #[command(long_about = "Look at and manage the mail queue.\n\n\
        While the server runs these talk to it over its admin socket (data_dir/admin.sock); \
        when it is stopped they open the queue directly.")]
    Queue {
        /// The server's config file (to find data_dir). Default: the built-in dev config.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: QueueAction,
    },

    /// Look at the plugins' key-value store (greylisting, rate limits), by plugin.
    #[command(
        long_about = "Look at and edit the plugins' key-value store, one plugin \
        (namespace) at a time.\n\nWhile the server runs these talk to it over its admin \
        socket; when it is stopped they open the store directly. Keys and values are printed \
        with non-printable octets escaped (\\n, \\x1b)."
    )]
    Kv {
        /// The server's config file (to find data_dir). Default: the built-in dev config.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: crate::kv_cmd::KvAction,
    },

    /// Generate a DKIM signing key and the DNS record to publish; check a published record.
    #[command(
        long_about = "Generate a DKIM signing key and the DNS record to publish, and \
        check a published record.\n\n`corvid dkim keygen DOMAIN SELECTOR` writes the private \
        key to DOMAIN.SELECTOR.pem (mode 0600, never printed) and prints the TXT record for \
        SELECTOR._domainkey.DOMAIN. `corvid dkim check DOMAIN SELECTOR` looks the record up \
        and compares it with the key."
    )]
    Dkim {
        #[command(subcommand)]
        action: crate::dkim_cmd::DkimAction,
    },

    /// Write the manual pages (corvid.1, corvid-serve.1, ...) into DIR; for packaging.
    #[command(hide = true)]
    Man {
        /// The directory to write them to (created when missing).
        dir: PathBuf,
    },
}

#[derive(Subcommand, Clone)]
pub enum UserAction {
    /// Add a user who may authenticate (SMTP AUTH) and send mail through Corvid.
    Add {
        /// The login name, usually the user's address (alice@example.org).
        name: String,
        /// Further sender addresses this user may use in MAIL FROM (repeatable). The name
        /// itself, and name+anything, are always allowed.
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// Read the password from standard input instead of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's password.
    Passwd {
        name: String,
        /// Read the password from standard input instead of asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user.
    Del { name: String },
    /// List users and their extra sender addresses (never passwords).
    List,
}

#[derive(Subcommand, Clone)]
pub enum PluginsAction {
    /// Name, version, stages, generation and state of each plugin.
    List {
        /// Per plugin and stage counters from the running server instead: calls, verdicts,
        /// traps, timeouts, memory and CPU-budget failures, breaker trips, latency, instances
        /// made and peak memory (the same numbers as /metrics).
        #[arg(long)]
        stats: bool,
    },
    /// Read the [[plugin]] tables again and swap in the new chain.
    Reload,
    /// A shadow plugin's (`mode = "shadow"`) agreement with the chain per stage, and its
    /// recent decisions that differed from the chain's (the last 100).
    Diff {
        /// The plugin's name.
        name: String,
        /// Show at most this many differences (the most recent).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

#[derive(Subcommand, Clone)]
pub enum PluginAction {
    /// Run COMPONENT (a .wasm file) through the transactions of a script.
    Test {
        /// The plugin component, built for wasm32-wasip2.
        component: PathBuf,
        /// The script: TOML, or JSON when the name ends in .json.
        #[arg(long)]
        script: PathBuf,
        /// Output: text (a diff under each failure), tap (TAP 13) or junit (JUnit XML).
        #[arg(long, value_enum, default_value_t)]
        format: crate::plugin_test::Format,
        /// Keep the compiled component in DIR (by content hash), as the server's
        /// `plugin_cache` does, so the next run skips compiling it.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Replay sessions recorded by `[record]` (capture files) offline through the recorded
    /// chain, or through new builds of some of its plugins, and show every decision that
    /// differs from the recorded one (exit status 1 when any does).
    Replay {
        /// The capture files (JSON), from `[record] dir` (default data_dir/captures), or
        /// directories of them; each is replayed on its own clock, kv store and answers.
        #[arg(required = true, value_name = "CAPTURE")]
        capture: Vec<PathBuf>,
        /// The server's config file: where the chain's components and their `[plugin.config]`
        /// come from. Without it, every plugin of the capture needs a --plugin.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// NAME=PATH.wasm: run this component as the plugin NAME (a new build of a recorded
        /// plugin, or a plugin added at the end of the chain). Repeatable.
        #[arg(long = "plugin", value_name = "NAME=PATH.wasm")]
        plugins: Vec<String>,
        /// Output: text (a diff under each differing decision), tap or junit.
        #[arg(long, value_enum, default_value_t)]
        format: crate::plugin_test::Format,
        /// Keep compiled components in DIR (by content hash), as `plugin test --cache` does.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Write a new plugin project: it builds into a component with one command, has passing
    /// unit tests and a `plugin test` script, and a README saying how to run it in a server.
    New {
        /// The plugin's name: lower-case letters, digits and -.
        name: String,
        /// The language: rust, python, javascript or c.
        #[arg(long, value_enum, default_value = "rust")]
        lang: crate::plugin_new::Lang,
        /// The stages to implement, comma-separated. Default: mail,rcpt,data.
        #[arg(long, value_delimiter = ',')]
        stages: Vec<String>,
        /// Where to write it. Default: ./NAME.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The SDK (plugins/sdk of the Corvid sources). Default: the one this binary was
        /// built from, when it is still there.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// The config file (TOML). Default: the built-in development config.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Log format, overriding log.format in the config.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Subcommand, Clone)]
pub enum QueueAction {
    /// One line per queued message: id, arrival, size, sender, recipients and their state,
    /// and `[held: reason]` for held (quarantined) mail.
    List {
        /// Only messages held for an administrator.
        #[arg(long)]
        held: bool,
    },
    /// Everything about one message: envelope, per-recipient state, attempts, next try, last
    /// reply, and its header section.
    Show {
        /// The queue id (as in the 250 reply and the logs).
        id: String,
    },
    /// Remove a message from the queue without delivering it.
    Delete {
        /// The queue id.
        id: String,
    },
    /// Try every deferred message now instead of waiting for its next retry time.
    Flush,
    /// Hold a message for an administrator: it stays queued and is not delivered until
    /// released (held mail expires after queue.quarantine_max_age).
    Hold {
        /// The queue id.
        id: String,
        /// Why, shown by `queue list` and `queue show`.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Release a held message: it is delivered now.
    Release {
        /// The queue id.
        id: String,
    },
    /// Return a held message to its sender: a failure report (DSN) is queued for the sender
    /// and the message is removed.
    Bounce {
        /// The queue id.
        id: String,
    },
}
