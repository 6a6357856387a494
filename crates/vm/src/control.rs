//! The control channel (docs/VM.md): the guest connects to host vsock port 1025 once berthd
//! answers; it says `ready`, asks to `bind`/`unbind` published ports, and the host can ask it
//! to `shutdown`. Published ports are bound here, on the host, and each connection is carried
//! to the guest over its own vsock stream (port 1026).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::hvsock;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    Ready {
        #[serde(default)]
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
        error: Option<String>,
    },
    Shutdown,
}

/// What the host knows about the guest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestStatus {
    /// The engine version the guest announced; `None` until `ready`.
    pub ready: Option<String>,
    /// Published ports bound on the host: "tcp 127.0.0.1:8080".
    pub ports: Vec<String>,
}

type Key = (String, IpAddr, u16);

/// The host end of the control channel and the port forwarder.
pub struct Control {
    vsock: Arc<PathBuf>,
    bound: Mutex<HashMap<Key, JoinHandle<()>>>,
    to_guest: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    status: watch::Sender<GuestStatus>,
}

impl Control {
    pub fn new(vsock: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            vsock: Arc::new(vsock),
            bound: Mutex::default(),
            to_guest: Mutex::default(),
            status: watch::channel(GuestStatus::default()).0,
        })
    }

    pub fn status(&self) -> watch::Receiver<GuestStatus> {
        self.status.subscribe()
    }

    /// Ask the guest to shut down cleanly; false when no guest is connected.
    pub fn request_shutdown(&self) -> bool {
        let tx = self.to_guest.lock().unwrap_or_else(|e| e.into_inner());
        tx.as_ref()
            .is_some_and(|t| t.send(Message::Shutdown).is_ok())
    }

    /// Accept the guest's control connections on `listener` (the hybrid-vsock host listener
    /// for port 1025). A new connection (the guest restarted its agent, or the VM rebooted)
    /// replaces the old one.
    pub async fn serve(self: Arc<Self>, listener: UnixListener) {
        while let Ok((s, _)) = listener.accept().await {
            let me = self.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
                *me.to_guest.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
                let writer = tokio::spawn(async move {
                    while let Some(m) = rx.recv().await {
                        let Ok(mut line) = serde_json::to_vec(&m) else {
                            continue;
                        };
                        line.push(b'\n');
                        if w.write_all(&line).await.is_err() {
                            break;
                        }
                    }
                });
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Message>(&line) {
                        Ok(m) => {
                            if let Some(reply) = me.handle(m).await {
                                let _ = tx.send(reply);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, %line, "bad control message"),
                    }
                }
                writer.abort();
                tracing::info!("guest control connection closed");
                me.status.send_modify(|s| s.ready = None);
            });
        }
    }

    async fn handle(&self, m: Message) -> Option<Message> {
        match m {
            Message::Ready { version } => {
                tracing::info!(%version, "engine in the VM is ready");
                self.status.send_modify(|s| s.ready = Some(version));
                None
            }
            Message::Bind {
                id,
                proto,
                host_ip,
                port,
            } => Some(Message::Reply {
                id,
                error: self.bind(&proto, &host_ip, port).await.err(),
            }),
            Message::Unbind {
                id,
                proto,
                host_ip,
                port,
            } => {
                self.unbind(&proto, &host_ip, port).await;
                Some(Message::Reply { id, error: None })
            }
            Message::Reply { .. } | Message::Shutdown => None,
        }
    }

    /// Bind a published port on the host. Binding a port this VM already holds succeeds (berthd
    /// re-announces its ports after it restarts).
    pub async fn bind(&self, proto: &str, host_ip: &str, port: u16) -> Result<(), String> {
        let ip: IpAddr = host_ip
            .parse()
            .map_err(|_| format!("invalid host IP {host_ip:?}"))?;
        let key = (proto.to_string(), ip, port);
        if self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return Ok(());
        }
        let addr = SocketAddr::new(ip, port);
        let clash = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("Bind for {addr} failed: port is already allocated on the host")
            } else {
                format!("Bind for {addr} failed on the host: {e}")
            }
        };
        let vsock = self.vsock.clone();
        let task = match proto {
            "udp" => {
                let u = UdpSocket::bind(addr).await.map_err(clash)?;
                tokio::spawn(forward_udp(u, vsock, port))
            }
            "tcp" => {
                let l = TcpListener::bind(addr).await.map_err(clash)?;
                tokio::spawn(forward_tcp(l, vsock, port))
            }
            other => return Err(format!("unknown protocol {other:?}")),
        };
        tracing::info!(%proto, %addr, "published port bound on the host");
        self.bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, task);
        self.publish_ports();
        Ok(())
    }

    /// Close a host listener; returns once the port is free (the aborted task has dropped it).
    pub async fn unbind(&self, proto: &str, host_ip: &str, port: u16) {
        let Ok(ip) = host_ip.parse::<IpAddr>() else {
            return;
        };
        let task = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(proto.to_string(), ip, port));
        if let Some(t) = task {
            t.abort();
            let _ = t.await;
            tracing::info!(%proto, %ip, port, "published port freed on the host");
        }
        self.publish_ports();
    }

    /// Close every host listener (the VM stopped); returns once the ports are free.
    pub async fn unbind_all(&self) {
        let tasks: Vec<JoinHandle<()>> = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, t)| t)
            .collect();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        self.publish_ports();
    }

    fn publish_ports(&self) {
        let mut ports: Vec<String> = self
            .bound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .map(|(p, ip, port)| format!("{p} {}", SocketAddr::new(*ip, *port)))
            .collect();
        ports.sort();
        self.status.send_modify(|s| s.ports = ports);
    }
}

/// Each accepted connection gets its own vsock stream to the guest, which connects to the
/// port berthd's proxy holds there. Connections live in this task's JoinSet, so unbinding
/// closes them as stopping a container does natively.
async fn forward_tcp(l: TcpListener, vsock: Arc<PathBuf>, port: u16) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            acc = l.accept() => {
                let Ok((mut inbound, _)) = acc else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = inbound.set_nodelay(true);
                let vsock = vsock.clone();
                conns.spawn(async move {
                    let Ok(mut g) = hvsock::connect(&vsock, hvsock::FORWARD_PORT).await else {
                        return;
                    };
                    if g.write_all(format!("tcp {port}\n").as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = berth_vsock_proto::pipe(&mut inbound, &mut g).await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// UDP: one vsock stream per client address, datagrams framed by a 2-byte big-endian length.
/// A flow idle for a minute is dropped, as conntrack forgets a UDP flow.
async fn forward_udp(u: UdpSocket, vsock: Arc<PathBuf>, port: u16) {
    let u = Arc::new(u);
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = tokio::select! {
            r = u.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                flows.retain(|_, tx| !tx.is_closed());
                continue;
            }
        };
        let dgram = buf[..n].to_vec();
        if let Some(tx) = flows.get(&peer) {
            if tx.send(dgram.clone()).await.is_ok() {
                continue;
            }
        }
        let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
        let _ = tx.send(dgram).await;
        flows.insert(peer, tx);
        tasks.spawn(udp_flow(u.clone(), vsock.clone(), port, peer, rx));
    }
}

async fn udp_flow(
    u: Arc<UdpSocket>,
    vsock: Arc<PathBuf>,
    port: u16,
    peer: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let Ok(g) = hvsock::connect(&vsock, hvsock::FORWARD_PORT).await else {
        return;
    };
    let (mut gr, mut gw) = g.into_split();
    if gw
        .write_all(format!("udp {port}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let up = async {
        loop {
            let d = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
            let Ok(Some(d)) = d else { break };
            let Ok(len) = u16::try_from(d.len()) else {
                continue;
            };
            if gw.write_all(&len.to_be_bytes()).await.is_err() || gw.write_all(&d).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut d = vec![0u8; 65536];
        while let Ok(len) = gr.read_u16().await {
            let d = &mut d[..len as usize];
            if gr.read_exact(d).await.is_err() {
                break;
            }
            let _ = u.send_to(d, peer).await;
        }
    };
    tokio::select! { _ = up => {}, _ = down => {} }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_documented_wire_format() {
        let m: Message = serde_json::from_str(
            r#"{"type":"bind","id":7,"proto":"tcp","host_ip":"127.0.0.1","port":8080}"#,
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Bind {
                id: 7,
                proto: "tcp".into(),
                host_ip: "127.0.0.1".into(),
                port: 8080
            }
        );
        assert_eq!(
            serde_json::to_string(&Message::Reply { id: 7, error: None }).unwrap(),
            r#"{"type":"reply","id":7,"error":null}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::Shutdown).unwrap(),
            r#"{"type":"shutdown"}"#
        );
    }

    #[tokio::test]
    async fn bind_clash_is_reported_and_rebind_is_idempotent() {
        let c = Control::new(PathBuf::from("/nonexistent"));
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let e = c.bind("tcp", "127.0.0.1", port).await.unwrap_err();
        assert!(e.contains("port is already allocated"), "{e}");
        drop(taken);
        c.bind("tcp", "127.0.0.1", port).await.unwrap();
        c.bind("tcp", "127.0.0.1", port).await.unwrap();
        assert_eq!(c.status().borrow().ports, [format!("tcp 127.0.0.1:{port}")]);
        c.unbind("tcp", "127.0.0.1", port).await;
        // Freed at once: binding it again from outside works.
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        assert!(c.status().borrow().ports.is_empty());
    }
}
