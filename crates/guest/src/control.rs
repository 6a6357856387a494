//! The control channel to the host (vsock CID 2, port 1025; JSON lines both ways) and
//! berthd's port announcements on /run/berth-guest/ports.sock, which become `bind`/`unbind`
//! requests to the host.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::engine::EngineState;
use crate::power::Shutdown;
use crate::relay::read_line_limited;
use crate::vsock::{VsockStream, CID_HOST};

pub const CONTROL_PORT: u32 = 1025;
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
pub const NO_ANSWER: &str = "the host did not answer";
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Control messages (docs/VM.md, "Control messages").
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Ready {
        version: String,
    },
    Bind {
        id: u64,
        proto: String,
        host_ip: String,
        port: u16,
    },
    Unbind {
        id: u64,
        proto: String,
        host_ip: String,
        port: u16,
    },
    Reply {
        id: u64,
        #[serde(default)]
        error: Option<String>,
    },
    Shutdown,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Bind,
    Unbind,
}

/// One request from berthd on ports.sock.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PortRequest {
    pub op: Op,
    pub proto: String,
    pub host_ip: String,
    pub port: u16,
}

/// The answer to berthd.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PortReply {
    pub error: Option<String>,
}

impl PortRequest {
    pub fn to_message(&self, id: u64) -> Message {
        let (proto, host_ip, port) = (self.proto.clone(), self.host_ip.clone(), self.port);
        match self.op {
            Op::Bind => Message::Bind {
                id,
                proto,
                host_ip,
                port,
            },
            Op::Unbind => Message::Unbind {
                id,
                proto,
                host_ip,
                port,
            },
        }
    }

    fn key(&self) -> PortKey {
        (self.proto.clone(), self.host_ip.clone(), self.port)
    }
}

/// Serialise a message as one line.
pub fn encode(m: &Message) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty object would be dropped by the host.
    let mut v = serde_json::to_vec(m).unwrap_or_else(|_| b"{}".to_vec());
    v.push(b'\n');
    v
}

type PortKey = (String, String, u16);

pub struct Control {
    writer: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Option<String>>>>,
    next_id: AtomicU64,
    /// Ports berthd published, re-announced to the host whenever the channel (re)connects.
    published: Mutex<BTreeSet<PortKey>>,
    shutdown: Shutdown,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Control {
    pub fn new(shutdown: Shutdown) -> Arc<Self> {
        Arc::new(Self {
            writer: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            published: Mutex::new(BTreeSet::new()),
            shutdown,
        })
    }

    fn record(&self, req: &PortRequest) {
        let mut p = lock(&self.published);
        match req.op {
            Op::Bind => p.insert(req.key()),
            Op::Unbind => p.remove(&req.key()),
        };
    }

    /// Send a request to the host and wait for its reply; `None` means success.
    async fn ask(&self, req: &PortRequest) -> Result<Option<String>, NotConnected> {
        let Some(tx) = lock(&self.writer).clone() else {
            return Err(NotConnected);
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (rtx, rrx) = oneshot::channel();
        lock(&self.pending).insert(id, rtx);
        if tx.send(req.to_message(id)).is_err() {
            lock(&self.pending).remove(&id);
            return Err(NotConnected);
        }
        Ok(match tokio::time::timeout(REPLY_TIMEOUT, rrx).await {
            Ok(Ok(error)) => error,
            Ok(Err(_)) => Some("the host control connection closed before it answered".into()),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Some(NO_ANSWER.into())
            }
        })
    }

    /// Handle one announcement from berthd.
    pub async fn port_request(&self, req: &PortRequest) -> Option<String> {
        let what = format!("{:?} {} {}:{}", req.op, req.proto, req.host_ip, req.port);
        match self.ask(req).await {
            Err(NotConnected) => {
                tracing::warn!("{what}: no host control connection yet; the host will be told when it connects");
                self.record(req);
                None
            }
            Ok(None) => {
                tracing::info!("{what}: done on the host");
                self.record(req);
                None
            }
            Ok(Some(e)) => {
                tracing::warn!("{what}: {e}");
                if req.op == Op::Unbind {
                    self.record(req);
                }
                Some(e)
            }
        }
    }

    fn handle_host_message(&self, line: &str) {
        match serde_json::from_str::<Message>(line) {
            Ok(Message::Reply { id, error }) => match lock(&self.pending).remove(&id) {
                Some(tx) => {
                    let _ = tx.send(error);
                }
                None => tracing::debug!(id, "reply to no pending request"),
            },
            Ok(Message::Shutdown) => self.shutdown.request("the host asked for shutdown"),
            Ok(other) => tracing::debug!("ignoring control message {other:?}"),
            Err(e) => tracing::warn!("bad control message {line:?}: {e}"),
        }
    }

    /// Keep a control connection to the host while berthd is up: connect once it answers
    /// `_ping`, say `ready`, reconnect with backoff when the connection fails or closes.
    pub async fn run_host_channel(self: Arc<Self>, mut engine: watch::Receiver<EngineState>) {
        let mut backoff = BACKOFF_MIN;
        let mut warned = false;
        loop {
            let version = loop {
                if let EngineState::Ready(v) = engine.borrow_and_update().clone() {
                    break v;
                }
                if engine.changed().await.is_err() {
                    return;
                }
            };
            let conn = tokio::time::timeout(
                Duration::from_secs(5),
                VsockStream::connect(CID_HOST, CONTROL_PORT),
            )
            .await;
            match conn {
                Ok(Ok(s)) => {
                    tracing::info!("control connection to the host open");
                    backoff = BACKOFF_MIN;
                    warned = false;
                    self.session(s, version, &mut engine).await;
                    tracing::warn!("control connection to the host closed; reconnecting");
                }
                Ok(Err(e)) => {
                    if !warned {
                        tracing::warn!("no control connection to the host (vsock {CID_HOST}:{CONTROL_PORT}): {e}; retrying");
                        warned = true;
                    }
                }
                Err(_) => {
                    if !warned {
                        tracing::warn!("connecting to the host's control port timed out; retrying");
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn session(
        self: &Arc<Self>,
        s: VsockStream,
        version: String,
        engine: &mut watch::Receiver<EngineState>,
    ) {
        let (r, mut w) = tokio::io::split(s);
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        let _ = tx.send(Message::Ready { version });
        *lock(&self.writer) = Some(tx.clone());
        // Tell the (possibly new) host about ports published while it was away.
        let replay: Vec<PortKey> = lock(&self.published).iter().cloned().collect();
        for (proto, host_ip, port) in replay {
            let me = self.clone();
            tokio::spawn(async move {
                let req = PortRequest {
                    op: Op::Bind,
                    proto,
                    host_ip,
                    port,
                };
                if let Ok(Some(e)) = me.ask(&req).await {
                    tracing::warn!(
                        "re-announcing {} {}:{}: {e}",
                        req.proto,
                        req.host_ip,
                        req.port
                    );
                }
            });
        }
        let writer = async {
            while let Some(m) = rx.recv().await {
                if let Err(e) = w.write_all(&encode(&m)).await {
                    tracing::debug!("control write: {e}");
                    break;
                }
            }
        };
        let reader = async {
            let mut lines = BufReader::new(r).lines();
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.trim().is_empty() => {}
                    Ok(Some(line)) => self.handle_host_message(&line),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!("control read: {e}");
                        break;
                    }
                }
            }
        };
        let ready_again = async {
            // berthd restarted: say ready again once it answers.
            while engine.changed().await.is_ok() {
                if let EngineState::Ready(version) = engine.borrow_and_update().clone() {
                    let _ = tx.send(Message::Ready { version });
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::select! {
            _ = writer => {}
            _ = reader => {}
            _ = ready_again => {}
        }
        *lock(&self.writer) = None;
        // Waiters see their sender dropped: "closed before it answered".
        lock(&self.pending).clear();
    }

    /// Serve berthd's port announcements: one JSON line in, one JSON line out per connection.
    pub async fn serve_ports(self: Arc<Self>, listener: UnixListener) {
        loop {
            let s = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("ports.sock accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.announcement(s).await {
                    tracing::warn!("port announcement: {e:#}");
                }
            });
        }
    }

    async fn announcement(&self, s: UnixStream) -> anyhow::Result<()> {
        let mut s = BufReader::new(s);
        let line = tokio::time::timeout(Duration::from_secs(10), read_line_limited(&mut s, 4096))
            .await
            .context("berthd sent no request")??;
        let error = match serde_json::from_str::<PortRequest>(&line) {
            Ok(req) => self.port_request(&req).await,
            Err(e) => Some(format!("bad port announcement {line:?}: {e}")),
        };
        let mut reply = serde_json::to_vec(&PortReply { error }).context("encoding the reply")?;
        reply.push(b'\n');
        s.get_mut().write_all(&reply).await?;
        s.get_mut().shutdown().await?;
        Ok(())
    }
}

#[derive(Debug)]
struct NotConnected;

/// Bind ports.sock (removing a stale one).
pub fn bind_ports_sock(path: &str) -> anyhow::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).with_context(|| format!("listening on {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn wire_format() {
        let cases = [
            (
                Message::Ready {
                    version: "0.1.0".into(),
                },
                r#"{"type":"ready","version":"0.1.0"}"#,
            ),
            (
                Message::Bind {
                    id: 7,
                    proto: "tcp".into(),
                    host_ip: "127.0.0.1".into(),
                    port: 8080,
                },
                r#"{"type":"bind","id":7,"proto":"tcp","host_ip":"127.0.0.1","port":8080}"#,
            ),
            (
                Message::Unbind {
                    id: 8,
                    proto: "udp".into(),
                    host_ip: "0.0.0.0".into(),
                    port: 53,
                },
                r#"{"type":"unbind","id":8,"proto":"udp","host_ip":"0.0.0.0","port":53}"#,
            ),
            (
                Message::Reply { id: 7, error: None },
                r#"{"type":"reply","id":7,"error":null}"#,
            ),
            (Message::Shutdown, r#"{"type":"shutdown"}"#),
        ];
        for (m, text) in cases {
            assert_eq!(String::from_utf8(encode(&m)).unwrap(), format!("{text}\n"));
            assert_eq!(serde_json::from_str::<Message>(text).unwrap(), m);
        }
        let r: Message = serde_json::from_str(
            r#"{"type":"reply","id":3,"error":"Bind for 127.0.0.1:8080 failed: port is already allocated"}"#,
        )
        .unwrap();
        assert!(
            matches!(r, Message::Reply { id: 3, error: Some(e) } if e.contains("already allocated"))
        );
        // A reply without "error" is a success.
        assert_eq!(
            serde_json::from_str::<Message>(r#"{"type":"reply","id":4}"#).unwrap(),
            Message::Reply { id: 4, error: None }
        );
        assert!(serde_json::from_str::<Message>(r#"{"type":"reboot"}"#).is_err());
    }

    #[test]
    fn announcements() {
        let r: PortRequest =
            serde_json::from_str(r#"{"op":"bind","proto":"tcp","host_ip":"0.0.0.0","port":8080}"#)
                .unwrap();
        assert_eq!(
            r.to_message(5),
            Message::Bind {
                id: 5,
                proto: "tcp".into(),
                host_ip: "0.0.0.0".into(),
                port: 8080
            }
        );
        let r: PortRequest =
            serde_json::from_str(r#"{"op":"unbind","proto":"udp","host_ip":"::","port":53}"#)
                .unwrap();
        assert!(matches!(
            r.to_message(6),
            Message::Unbind {
                id: 6,
                port: 53,
                ..
            }
        ));
        assert!(serde_json::from_str::<PortRequest>(
            r#"{"op":"bind","proto":"tcp","host_ip":"x","port":70000}"#
        )
        .is_err());
        assert_eq!(
            serde_json::to_string(&PortReply { error: None }).unwrap(),
            r#"{"error":null}"#
        );
        assert_eq!(
            serde_json::to_string(&PortReply {
                error: Some("no".into())
            })
            .unwrap(),
            r#"{"error":"no"}"#
        );
    }

    async fn announce(sock: &std::path::Path, line: &str) -> String {
        let mut s = UnixStream::connect(sock).await.unwrap();
        s.write_all(line.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn ports_sock_without_and_with_a_host() {
        let dir = std::env::temp_dir().join(format!("berth-guest-ports-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("ports.sock");
        let c = Control::new(Shutdown::new());
        let l = bind_ports_sock(sock.to_str().unwrap()).unwrap();
        tokio::spawn(c.clone().serve_ports(l));

        // No host yet: success, remembered for later.
        let bind = r#"{"op":"bind","proto":"tcp","host_ip":"0.0.0.0","port":8080}"#;
        assert_eq!(
            announce(&sock, &format!("{bind}\n")).await,
            "{\"error\":null}\n"
        );
        assert!(announce(&sock, "nonsense\n")
            .await
            .contains("bad port announcement"));

        // A fake host: answers binds of 9090 with an error, others with success.
        let (tx, mut rx) = mpsc::unbounded_channel();
        *lock(&c.writer) = Some(tx);
        let c2 = c.clone();
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let reply = match m {
                    Message::Bind { id, port: 9090, .. } => format!(
                        r#"{{"type":"reply","id":{id},"error":"Bind for 0.0.0.0:9090 failed: port is already allocated"}}"#
                    ),
                    Message::Bind { id, .. } | Message::Unbind { id, .. } => {
                        format!(r#"{{"type":"reply","id":{id},"error":null}}"#)
                    }
                    _ => continue,
                };
                c2.handle_host_message(&reply);
            }
        });
        let bind9090 = r#"{"op":"bind","proto":"tcp","host_ip":"0.0.0.0","port":9090}"#;
        assert_eq!(
            announce(&sock, &format!("{bind9090}\n")).await,
            "{\"error\":\"Bind for 0.0.0.0:9090 failed: port is already allocated\"}\n"
        );
        let unbind = r#"{"op":"unbind","proto":"tcp","host_ip":"0.0.0.0","port":8080}"#;
        assert_eq!(
            announce(&sock, &format!("{unbind}\n")).await,
            "{\"error\":null}\n"
        );
        assert!(lock(&c.published).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn silent_host_times_out() {
        let c = Control::new(Shutdown::new());
        let (tx, _rx) = mpsc::unbounded_channel();
        *lock(&c.writer) = Some(tx);
        let req = PortRequest {
            op: Op::Bind,
            proto: "tcp".into(),
            host_ip: "127.0.0.1".into(),
            port: 80,
        };
        assert_eq!(c.port_request(&req).await.as_deref(), Some(NO_ANSWER));
        assert!(lock(&c.pending).is_empty());
    }

    #[test]
    fn shutdown_message() {
        let s = Shutdown::new();
        let c = Control::new(s.clone());
        c.handle_host_message(r#"{"type":"shutdown"}"#);
        assert!(s.requested());
    }
}
