//! The admin socket: a Unix socket in data_dir, owner-only, one JSON request and one JSON
//! response per line. It exists because sled admits one process: while the server runs, the
//! queue commands go through it.

use anyhow::{bail, Context as _, Result};
use corvid_queue::{SledSpool, Spool};
use corvid_types::QueueId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Longest request line accepted; requests are tiny.
const MAX_REQUEST: usize = 4096;

/// Operations are named `area-verb` on the wire; plugin operations join the queue ones later.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    QueueList {
        /// Only held (quarantined) messages.
        #[serde(default)]
        held: bool,
    },
    QueueShow {
        id: String,
    },
    QueueDelete {
        id: String,
    },
    QueueFlush,
    QueueHold {
        id: String,
        reason: Option<String>,
    },
    QueueRelease {
        id: String,
    },
    QueueBounce {
        id: String,
    },
    KvList {
        plugin: String,
        #[serde(default)]
        prefix: String,
        limit: usize,
    },
    KvGet {
        plugin: String,
        key: String,
    },
    KvDelete {
        plugin: String,
        key: String,
    },
    PluginsList,
    PluginsStats,
    PluginsReload,
    /// A shadow plugin's counters and recent differences (`corvid plugins diff`).
    PluginsDiff {
        name: String,
    },
}

/// What admin requests act on.
pub struct Context {
    pub spool: Arc<SledSpool>,
    /// The configured kv store (`[kv]`), for `corvid kv`.
    pub kv: crate::kv_backend::AdminKv,
    /// `None` when the queue is opened offline (no server running).
    pub plugins: Option<Arc<crate::plugins::Plugins>>,
}

/// Runs a request: queue operations on a blocking thread (they touch the disk), plugin
/// operations on the running host.
pub async fn handle_async(ctx: Arc<Context>, req: Request) -> Result<Value> {
    let plugins = || {
        ctx.plugins
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the server is not running"))
    };
    match req {
        Request::PluginsList => Ok(plugins()?.list()),
        Request::PluginsStats => Ok(plugins()?.stats()),
        Request::PluginsReload => plugins()?.reload().await,
        Request::PluginsDiff { name } => crate::plugins_cmd::diff(&plugins()?.host, &name),
        Request::QueueBounce { id } => {
            let id = QueueId(id);
            let dsn = ctx
                .spool
                .bounce(&id, "5.7.1 returned to the sender by the administrator")
                .await?;
            Ok(json!({ "bounced": id, "dsn": dsn }))
        }
        req @ (Request::KvList { .. } | Request::KvGet { .. } | Request::KvDelete { .. }) => {
            let kv = ctx.kv.clone();
            tokio::task::spawn_blocking(move || crate::kv_cmd::handle(&kv, req)).await?
        }
        req => {
            let spool = Arc::clone(&ctx.spool);
            tokio::task::spawn_blocking(move || handle(spool.as_ref(), req)).await?
        }
    }
}

/// Runs a request against the spool, on a blocking thread.
fn handle(spool: &SledSpool, req: Request) -> Result<Value> {
    Ok(match req {
        Request::QueueList { held } => {
            let mut list = spool.list()?;
            list.retain(|m| !held || m.quarantined.is_some());
            json!(list)
        }
        Request::QueueShow { id } => {
            let id = QueueId(id);
            let Some(msg) = spool.get(&id)? else {
                bail!("no message {id} in the queue")
            };
            let content = spool.content(&id)?.unwrap_or_default();
            let headers = corvid_types::MessageView { content: &content }.header_section();
            json!({ "message": msg, "headers": String::from_utf8_lossy(headers) })
        }
        Request::QueueDelete { id } => {
            let id = QueueId(id);
            if !spool.remove(&id)? {
                bail!("no message {id} in the queue");
            }
            json!({ "deleted": id })
        }
        Request::QueueFlush => json!({ "scheduled": spool.flush_all()? }),
        Request::QueueHold { id, reason } => {
            let reason = reason.unwrap_or_else(|| "held by the administrator".into());
            json!(spool.hold(&QueueId(id), &reason)?)
        }
        Request::QueueRelease { id } => json!(spool.release(&QueueId(id))?),
        Request::KvList { .. }
        | Request::KvGet { .. }
        | Request::KvDelete { .. }
        | Request::QueueBounce { .. }
        | Request::PluginsList
        | Request::PluginsStats
        | Request::PluginsReload
        | Request::PluginsDiff { .. } => {
            bail!("not a queue request")
        }
    })
}

/// Binds the socket with mode 0600 from the start: the umask is set around `bind`, so there is
/// no moment at which another user could connect (a `chmod` after `bind` leaves one). A stale
/// socket from a crashed server is replaced; a live one means another server runs on this
/// data_dir, which is refused.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another corvid server is running with {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // SAFETY: umask(2) cannot fail and touches no memory. It is process-wide: a file another
    // thread creates meanwhile gets 0600-or-stricter permissions too, never wider ones.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    bound.with_context(|| format!("binding {}", path.display()))
}

pub async fn serve(listener: UnixListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { warn!(error = %e, "admin accept failed"); continue; }
            },
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, ctx).await {
                warn!(error = %e, "admin request failed");
            }
        });
    }
}

async fn serve_one(stream: UnixStream, ctx: Arc<Context>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(MAX_REQUEST as u64)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            info!(request = ?req, "admin request");
            match handle_async(ctx, req).await {
                Ok(data) => json!({ "ok": true, "data": data }),
                Err(e) => json!({ "ok": false, "error": format!("{e:#}") }),
            }
        }
        Err(e) => json!({ "ok": false, "error": format!("bad request: {e}") }),
    };
    write.write_all(format!("{response}\n").as_bytes()).await?;
    Ok(())
}

/// Sends one request to a running server. `Ok(None)` when no server listens there.
pub async fn request(path: &Path, req: &Request) -> Result<Option<Value>> {
    let Ok(stream) = UnixStream::connect(path).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    write
        .write_all(format!("{}\n", serde_json::to_string(req)?).as_bytes())
        .await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let resp: Value = serde_json::from_str(&line).context("bad answer from the server")?;
    if resp["ok"].as_bool() != Some(true) {
        bail!(
            "{}",
            resp["error"]
                .as_str()
                .unwrap_or("the server refused the request")
        );
    }
    Ok(Some(resp["data"].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn the_socket_is_bound_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(listener);
        // A stale socket is replaced, with the same permissions.
        let _again = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
