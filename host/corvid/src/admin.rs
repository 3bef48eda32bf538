//! The admin socket: a Unix socket in data_dir, owner-only, one JSON request and one JSON
//! response per line. It exists because sled admits one process: while the server runs, the
//! queue commands go through it.

use anyhow::{bail, Context, Result};
use corvid_queue::Spool;
use corvid_types::QueueId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
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
    QueueList,
    QueueShow { id: String },
    QueueDelete { id: String },
    QueueFlush,
}

/// Runs a request against the spool; shared by the socket server and the offline path.
pub fn handle(spool: &dyn Spool, req: Request) -> Result<Value> {
    Ok(match req {
        Request::QueueList => json!(spool.list()?),
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
    })
}

/// Binds the socket (mode 0600). A stale socket from a crashed server is replaced; a live one
/// means another server runs on this data_dir, which is refused.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!("another corvid server is running with {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, spool: Arc<dyn Spool>, shutdown: CancellationToken) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => { warn!(error = %e, "admin accept failed"); continue; }
            },
        };
        let spool = Arc::clone(&spool);
        tokio::spawn(async move {
            if let Err(e) = serve_one(stream, spool).await {
                warn!(error = %e, "admin request failed");
            }
        });
    }
}

async fn serve_one(stream: UnixStream, spool: Arc<dyn Spool>) -> Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read)
        .take(MAX_REQUEST as u64)
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            info!(request = ?req, "admin request");
            let result = tokio::task::spawn_blocking(move || handle(spool.as_ref(), req)).await?;
            match result {
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
