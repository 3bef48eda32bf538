//! A scripted SMTP/LMTP next hop on loopback that records what it receives.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// What to do at the end of DATA, per connection (0-based) and, for LMTP, per recipient.
#[derive(Clone, Debug)]
pub enum DataAction {
    Reply(String),
    /// Close the connection after the first bytes of content.
    DropMidData,
}

type RcptFn = dyn Fn(usize, &str) -> String + Send + Sync;
type DataFn = dyn Fn(usize, &str) -> DataAction + Send + Sync;

#[derive(Clone)]
pub struct Script {
    pub lmtp: bool,
    /// EHLO keywords after the greeting line.
    pub extensions: Vec<String>,
    /// Offer STARTTLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Reply to EHLO with 502 (the client must fall back to HELO).
    pub no_ehlo: bool,
    pub rcpt: Arc<RcptFn>,
    pub data: Arc<DataFn>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            lmtp: false,
            extensions: [
                "PIPELINING",
                "8BITMIME",
                "SIZE 10000000",
                "ENHANCEDSTATUSCODES",
            ]
            .map(String::from)
            .to_vec(),
            tls: None,
            no_ehlo: false,
            rcpt: Arc::new(|_, _| "250 2.1.5 ok".into()),
            data: Arc::new(|_, _| DataAction::Reply("250 2.0.0 queued".into())),
        }
    }
}

/// One message the peer accepted (or was sent before a drop).
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub connection: usize,
    pub mail: String,
    /// The RCPT lines the peer accepted.
    pub rcpts: Vec<String>,
    /// The DATA bytes exactly as on the wire, dot-stuffed, up to and including `.` CRLF.
    pub raw: Vec<u8>,
    pub tls: bool,
    pub completed: bool,
}

#[derive(Debug, Default)]
pub struct PeerState {
    pub connections: usize,
    /// Every command line received, per connection.
    pub commands: Vec<Vec<String>>,
    pub messages: Vec<Received>,
}

pub struct Peer {
    pub addr: std::net::SocketAddr,
    pub state: Arc<Mutex<PeerState>>,
}

impl Peer {
    pub async fn start(script: Script) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(PeerState::default()));
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = {
                    let mut s = st.lock().unwrap();
                    s.connections += 1;
                    s.commands.push(Vec::new());
                    s.connections - 1
                };
                let conn = Conn {
                    io: Box::new(stream),
                    buf: Vec::new(),
                    index,
                    state: Arc::clone(&st),
                    script: script.clone(),
                    tls: false,
                };
                tokio::spawn(conn.run());
            }
        });
        Peer { addr, state }
    }

    pub fn completed(&self) -> Vec<Received> {
        let s = self.state.lock().unwrap();
        s.messages.iter().filter(|m| m.completed).cloned().collect()
    }

    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().commands.concat()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Conn {
    io: Box<dyn Io>,
    buf: Vec<u8>,
    index: usize,
    state: Arc<Mutex<PeerState>>,
    script: Script,
    tls: bool,
}

impl Conn {
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).take(i).collect();
                let line = String::from_utf8_lossy(&line).into_owned();
                self.state.lock().unwrap().commands[self.index].push(line.clone());
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn say(&mut self, text: &str) {
        let _ = self.io.write_all(text.as_bytes()).await;
        let _ = self.io.flush().await;
    }

    async fn run(mut self) {
        let name = if self.script.lmtp {
            "lmtp.test"
        } else {
            "mx.test"
        };
        self.say(&format!("220 {name} ESMTP scripted\r\n")).await;
        let mut msg = Received {
            connection: self.index,
            ..Received::default()
        };
        while let Some(line) = self.line().await {
            let upper = line.to_ascii_uppercase();
            let verb = upper.split(' ').next().unwrap_or("").to_string();
            match verb.as_str() {
                "EHLO" | "LHLO" if self.script.no_ehlo => self.say("502 5.5.1 no EHLO\r\n").await,
                "EHLO" | "LHLO" => {
                    let mut lines = vec![name.to_string()];
                    lines.extend(self.script.extensions.iter().cloned());
                    if self.script.tls.is_some() && !self.tls {
                        lines.push("STARTTLS".into());
                    }
                    let last = lines.len() - 1;
                    let text: String = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}\r\n", if i == last { ' ' } else { '-' }))
                        .collect();
                    self.say(&text).await;
                }
                "HELO" => self.say("250 mx.test\r\n").await,
                "STARTTLS" => {
                    self.say("220 2.0.0 go ahead\r\n").await;
                    let Some(config) = self.script.tls.clone() else {
                        return;
                    };
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let plain = std::mem::replace(&mut self.io, Box::new(tokio::io::empty()));
                    match acceptor.accept(plain).await {
                        Ok(tls) => self.io = Box::new(tls),
                        Err(_) => return,
                    }
                    self.buf.clear();
                    self.tls = true;
                }
                "MAIL" => {
                    msg = Received {
                        connection: self.index,
                        mail: line.clone(),
                        tls: self.tls,
                        ..Received::default()
                    };
                    self.say("250 2.1.0 ok\r\n").await;
                }
                "RCPT" => {
                    let addr = line
                        .split('<')
                        .nth(1)
                        .and_then(|r| r.split('>').next())
                        .unwrap_or("");
                    let reply = (self.script.rcpt)(self.index, addr);
                    if reply.starts_with('2') {
                        msg.rcpts.push(line.clone());
                    }
                    self.say(&format!("{reply}\r\n")).await;
                }
                "DATA" if msg.rcpts.is_empty() => {
                    self.say("554 5.5.1 no valid recipients\r\n").await
                }
                "DATA" => {
                    self.say("354 go ahead\r\n").await;
                    if !self.data(&mut msg).await {
                        return;
                    }
                    msg = Received {
                        connection: self.index,
                        ..Received::default()
                    };
                }
                "RSET" => {
                    msg = Received {
                        connection: self.index,
                        ..Received::default()
                    };
                    self.say("250 2.0.0 ok\r\n").await;
                }
                "NOOP" => self.say("250 2.0.0 ok\r\n").await,
                // Any credentials are accepted; the command is on record in `commands`.
                "AUTH" if line.to_ascii_uppercase().starts_with("AUTH LOGIN") => {
                    self.say("334 VXNlcm5hbWU6\r\n").await;
                    let _ = self.line().await;
                    self.say("334 UGFzc3dvcmQ6\r\n").await;
                    let _ = self.line().await;
                    self.say("235 2.7.0 ok\r\n").await;
                }
                "AUTH" => self.say("235 2.7.0 ok\r\n").await,
                "QUIT" => {
                    self.say("221 2.0.0 bye\r\n").await;
                    return;
                }
                _ => self.say("500 5.5.2 what\r\n").await,
            }
        }
    }

    /// Reads the content; false when the script drops the connection.
    async fn data(&mut self, msg: &mut Received) -> bool {
        let first_rcpt = rcpt_addr(&msg.rcpts[0]);
        if let DataAction::DropMidData = (self.script.data)(self.index, &first_rcpt) {
            while self.buf.is_empty() {
                if !self.fill().await {
                    break;
                }
            }
            msg.raw = std::mem::take(&mut self.buf);
            self.state.lock().unwrap().messages.push(msg.clone());
            return false;
        }
        loop {
            let end = if self.buf.starts_with(b".\r\n") {
                Some(3)
            } else {
                self.buf
                    .windows(5)
                    .position(|w| w == b"\r\n.\r\n")
                    .map(|i| i + 5)
            };
            if let Some(end) = end {
                msg.raw = self.buf.drain(..end).collect();
                break;
            }
            if !self.fill().await {
                return false;
            }
        }
        msg.completed = true;
        self.state.lock().unwrap().messages.push(msg.clone());
        let targets: Vec<String> = if self.script.lmtp {
            msg.rcpts.iter().map(|r| rcpt_addr(r)).collect()
        } else {
            vec![first_rcpt]
        };
        for rcpt in targets {
            match (self.script.data)(self.index, &rcpt) {
                DataAction::Reply(r) => self.say(&format!("{r}\r\n")).await,
                DataAction::DropMidData => return false,
            }
        }
        true
    }
}

fn rcpt_addr(line: &str) -> String {
    line.split('<')
        .nth(1)
        .and_then(|r| r.split('>').next())
        .unwrap_or("")
        .to_string()
}

/// A self-signed server config for STARTTLS tests.
pub fn tls_config() -> Arc<rustls::ServerConfig> {
    let ck = rcgen::generate_simple_self_signed(vec!["mx.test".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    Arc::new(config)
}
