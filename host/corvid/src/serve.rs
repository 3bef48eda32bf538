//! `corvid serve`: wires the queue, delivery, listeners and admin socket, and handles signals.

use crate::admin;
use crate::cli::ServeArgs;
use crate::config::{Config, LogFormat};
use crate::plugins::Plugins;
use anyhow::{Context, Result};
use corvid_delivery::dns::HickoryDns;
use corvid_delivery::Dispatcher;
use corvid_queue::Spool;
use corvid_server::auth::Credentials;
use corvid_server::{BoundServer, Services};
use corvid_types::Intake;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub fn run(args: ServeArgs) -> Result<()> {
    let config = Config::load(args.config.as_deref())?;
    init_logging(
        args.log_format.unwrap_or(config.log.format),
        &config.log.level,
    );
    // Before any thread exists or any file is opened: files are created as server.user.
    let drop = crate::privdrop::begin(&crate::privdrop::Settings {
        user: config.server.user.as_deref(),
        group: config.server.group.as_deref(),
        allow_root: config.server.allow_root,
        data_dir: &config.server.data_dir,
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // Installed before anything else, so that a stop request during start-up is a clean
        // stop rather than the signal's default action.
        let signals = Signals::install()?;
        serve(config, args.config.clone(), signals, drop).await
    })
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.init(),
    }
}

async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    signals: Signals,
    drop: Option<crate::privdrop::PendingDrop>,
) -> Result<()> {
    let data_dir = &config.server.data_dir;
    // The metrics endpoint comes up first, so that /healthz answers 503 while the rest starts.
    let stop_metrics = CancellationToken::new();
    let metrics = match config.metrics.listen {
        Some(address) => Some(start_metrics(address, stop_metrics.clone()).await?),
        None => None,
    };
    crate::queue_cmd::ensure_data_dir(&config)?;
    let spool = corvid_queue::SledSpool::open_with_cache(
        &config.queue_dir(),
        crate::queue_cmd::spool_settings(&config),
        config.queue.cache_bytes(),
    )
    .with_context(|| format!("opening the queue in {}", config.queue_dir().display()))?;
    let directory = Arc::new(config.directory()?);
    let admin_path = config.admin_socket();
    let admin_listener = admin::bind(&admin_path).await?;

    let mut intake: Arc<dyn Intake> = spool.clone();
    // Local-only messages go into their Maildirs at the end of DATA once the dispatcher
    // below hands over its pipeline; everything else, and everything before that, is queued.
    let direct = corvid_delivery::DirectHandle::default();
    if config.delivery.local_at_intake {
        intake = Arc::new(corvid_delivery::DirectIntake::new(intake, direct.clone()));
    }
    if let Some(m) = &metrics {
        intake = m.intake(intake);
    }
    let tls = crate::tls_setup::load(&config)?;
    let credentials: Arc<dyn Credentials> = corvid_server::auth::credentials(
        &config.auth,
        &config.users_file(),
        config.local.recipient_delimiter.unwrap_or('+'),
    )?;
    let dns = HickoryDns::new(&config.delivery.nameservers)
        .map_err(|e| anyhow::anyhow!("setting up the DNS resolver: {e}"))?;
    let dns: Arc<dyn corvid_types::DnsResolver> = Arc::new(dns);
    let admin_kv = config.kv.open_admin(&spool)?;
    let plugin_services = corvid_plugin_host::Services {
        kv: admin_kv.store(),
        dns: Arc::clone(&dns),
    };
    // SIGHUP compares a new file with this one (a second parse: `Config` is not `Clone`).
    let started = Config::load(config_path.as_deref())?;
    let plugins = Arc::new(Plugins::start(&config, config_path.clone(), plugin_services).await?);
    if let Some(m) = &metrics {
        m.set_plugins(plugins.host.clone(), plugins.engine.clone());
    }
    let mut policy: Arc<dyn corvid_types::Policy> = Arc::new(plugins.host.clone());
    let recorder = match &config.record {
        Some(r) => {
            let host = plugins.host.clone();
            let chain: crate::record::Chain = Box::new(move || active_chain(&host.plugins()));
            let rec = Arc::new(crate::record::Recorder::new(r, data_dir, chain));
            crate::record::prepare(rec.dir())
                .with_context(|| format!("creating {}", rec.dir().display()))?;
            policy = Arc::new(crate::record::RecordPolicy {
                inner: policy,
                recorder: Arc::clone(&rec),
            });
            Some((rec.dir().to_path_buf(), r.retention))
        }
        None => None,
    };
    let services = Services {
        policy,
        intake,
        directory: Arc::clone(&directory),
        tls: Some(Arc::clone(&tls)),
        credentials: Some(credentials),
        queue_control: Some(spool.clone()),
        dns: Some(dns),
    };
    // Root again, as the effective id only, for ports below 1024; then dropped for good.
    if let Some(d) = &drop {
        d.regain()?;
    }
    let bound = BoundServer::bind(config.server_config(), services).await;
    if let Some(d) = drop {
        d.finish()?;
    }
    let server = bound?.with_mail_auth(crate::mail_auth::build(&config)?);
    for (name, address) in server.local_addrs() {
        info!(listener = %name, %address, "listening");
    }
    let pending = spool.list().map(|l| l.len()).unwrap_or(0);
    info!(hostname = %config.server.hostname, data_dir = %data_dir.display(), queued = pending, "corvid started");

    let shutdown = CancellationToken::new();
    let stop_delivery = CancellationToken::new();
    let spool_dyn: Arc<dyn Spool> = spool.clone();
    // SIGHUP swaps the domains of this one directory, which the server holds too.
    let reload_directory = Arc::clone(&directory);
    let mut dispatcher = Dispatcher::new(
        Arc::clone(&spool_dyn),
        directory,
        config.maildir_root(),
        config.queue.retry.clone(),
    );
    if let Some(n) = config.queue.delivery_concurrency {
        dispatcher = dispatcher.with_concurrency(n);
    }
    let mut dsn_intake: Arc<dyn Intake> = spool.clone();
    if let Some(m) = &metrics {
        dsn_intake = m.dsn_intake(dsn_intake);
        tokio::spawn(Arc::clone(m).sample_queue(Arc::clone(&spool), stop_delivery.clone()));
    }
    dispatcher = dispatcher
        .with_config(config.delivery.clone())
        .with_hostname(config.server.hostname.clone())
        // An MX resolving to one of these is a mail loop (5.4.6).
        .with_listening_addrs(server.local_addrs().into_iter().map(|(_, a)| a))
        // The same limit as at the end of DATA: a loop is refused there, or bounced here.
        .with_max_hops(config.limits.max_hops)
        .with_intake(dsn_intake)
        .with_policy(Arc::new(plugins.host.clone()));
    if config.delivery.local_at_intake {
        dispatcher = dispatcher.with_direct(direct.clone());
    }
    let route_table = dispatcher.route_table();
    let delivery = tokio::spawn(dispatcher.run(stop_delivery.clone()));
    if let Some((dir, retention)) = recorder {
        tokio::spawn(crate::record::retain(dir, retention, stop_delivery.clone()));
    }
    // Held mail expiry and the kv sweep; a pass in progress finishes before shutdown.
    tokio::spawn(trim_memory(stop_delivery.clone()));
    let maintenance = tokio::spawn(Arc::clone(&spool).maintain(
        corvid_queue::MAINTENANCE_INTERVAL,
        stop_delivery.clone().cancelled_owned(),
    ));
    let admin = admin::Context {
        spool: Arc::clone(&spool),
        kv: admin_kv,
        plugins: Some(Arc::clone(&plugins)),
    };
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        Arc::new(admin),
        shutdown.clone(),
    ));
    tokio::spawn(Arc::clone(&plugins).watch(shutdown.clone()));
    let reloader = crate::reload::Reloader::new(
        config_path,
        started,
        tls,
        Arc::clone(&plugins),
        reload_directory,
        crate::reload::Live {
            settings: server.live_settings(),
            routes: route_table,
        },
    );
    tokio::spawn(signals.watch(shutdown.clone(), reloader));
    if let Some(m) = metrics.clone() {
        // Ready: the queue is open and the listeners are bound. Not ready again as soon as a
        // shutdown starts, so that a load balancer stops sending new clients.
        m.set_ready(true);
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            m.set_ready(false);
        });
    }
    // The same moment for systemd (Type=notify).
    crate::sd_notify::notify("READY=1");
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        crate::sd_notify::notify("STOPPING=1");
    });

    server.run(shutdown.clone()).await;
    stop_delivery.cancel();
    if let Err(e) = delivery.await {
        warn!(error = %e, "delivery task ended abnormally");
    }
    if let Err(e) = maintenance.await {
        warn!(error = %e, "queue maintenance task ended abnormally");
    }
    admin_task.abort();
    // Sessions the grace period left delivering at intake record what they leave pending
    // before the queue closes; after this every message is queued (and a closed queue
    // refuses it before anything is written).
    let left = direct.close(std::time::Duration::from_secs(5)).await;
    if left > 0 {
        warn!(
            left,
            "abandoning deliveries at intake still running; their clients got no 250"
        );
    }
    spool.close();
    spool.sync().await.context("flushing the queue")?;
    let _ = std::fs::remove_file(&admin_path);
    stop_metrics.cancel();
    info!("corvid stopped");
    Ok(())
}

/// How often freed heap memory is handed back to the system.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Hands freed heap memory back to the system every [`TRIM_INTERVAL`] until `stop`. glibc
/// returns only the top of an arena by itself; the buffers of a burst of messages, freed in
/// any order by dozens of threads, otherwise stay resident (at concurrency 50 with 100 KB
/// messages, 70 MB of 226 MB after the queue had drained). A pass takes milliseconds.
async fn trim_memory(stop: CancellationToken) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free pages; it takes each arena's own lock.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}

/// Binds the metrics endpoint and serves it until `stop`.
async fn start_metrics(
    address: std::net::SocketAddr,
    stop: CancellationToken,
) -> Result<Arc<crate::metrics::Metrics>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("key `metrics.listen`: cannot listen on {address}"))?;
    let metrics = crate::metrics::Metrics::new();
    info!(address = %listener.local_addr()?, "metrics endpoint listening");
    tokio::spawn(crate::metrics::serve_http(
        listener,
        Arc::clone(&metrics),
        stop,
    ));
    Ok(metrics)
}

/// The signals the server acts on. Registered at start: a signal that arrives before `watch`
/// runs is kept and acted on then.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// SIGTERM and SIGINT start a graceful shutdown (the grace period bounds it). SIGHUP
    /// reads the config file again (see reload.rs).
    async fn watch(mut self, shutdown: CancellationToken, reloader: crate::reload::Reloader) {
        loop {
            let name = tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
                _ = self.hup.recv() => {
                    info!(signal = "SIGHUP", "reloading");
                    // Logged there: refused, applied, or what needs a restart.
                    let _ = reloader.reload().await;
                    continue;
                }
            };
            info!(signal = name, "shutting down");
            shutdown.cancel();
            return;
        }
    }
}

/// The names of the chain's active plugins in the order they run (by `order`, ties in config
/// order), as a capture lists them; a plugin that failed to load is not in the chain.
fn active_chain(plugins: &[corvid_plugin_host::PluginStatus]) -> Vec<String> {
    use corvid_plugin_host::{PluginMode, PluginState};
    let mut active: Vec<&corvid_plugin_host::PluginStatus> = plugins
        .iter()
        .filter(|p| p.mode == PluginMode::Active && !matches!(p.state, PluginState::Failed { .. }))
        .collect();
    active.sort_by_key(|m| m.order);
    active.into_iter().map(|m| m.name.clone()).collect()
}
