//! Published ports: a userspace proxy per binding (TCP and UDP), bound before the container
//! starts so a taken port fails the start cleanly, and dropped when it stops.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::error::{EngineError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub host_ip: IpAddr,
    /// 0 = choose a free port.
    pub host_port: u16,
    pub proto: String,
    pub container_port: u16,
}

/// Proxy tasks per container.
#[derive(Default)]
pub struct Proxies {
    tasks: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

enum Bound {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Proxies {
    /// Bind every binding, then start forwarding to `target`. Returns the bindings with the
    /// host ports actually bound. Nothing stays bound when one fails.
    pub async fn start(
        &self,
        container: &str,
        endpoint: &str,
        target: Ipv4Addr,
        bindings: &[Binding],
    ) -> Result<Vec<Binding>> {
        let mut bound = Vec::new();
        let mut out = Vec::new();
        for b in bindings {
            let addr = SocketAddr::new(b.host_ip, b.host_port);
            let r = match b.proto.as_str() {
                "udp" => UdpSocket::bind(addr).await.map(Bound::Udp),
                _ => TcpListener::bind(addr).await.map(Bound::Tcp),
            };
            let s = r.map_err(|e| {
                let why = if e.kind() == std::io::ErrorKind::AddrInUse {
                    "port is already allocated".to_string()
                } else {
                    e.to_string()
                };
                EngineError::Internal(format!(
                    "driver failed programming external connectivity on endpoint {endpoint} ({container}): Bind for {}:{} failed: {why}",
                    b.host_ip, b.host_port
                ))
            })?;
            let port = match &s {
                Bound::Tcp(l) => l.local_addr()?.port(),
                Bound::Udp(u) => u.local_addr()?.port(),
            };
            out.push(Binding {
                host_port: port,
                ..b.clone()
            });
            bound.push((s, b.container_port));
        }
        let mut tasks = Vec::new();
        for (s, cport) in bound {
            let dst = SocketAddr::new(IpAddr::V4(target), cport);
            tasks.push(match s {
                Bound::Tcp(l) => tokio::spawn(tcp(l, dst)),
                Bound::Udp(u) => tokio::spawn(udp(Arc::new(u), dst)),
            });
        }
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(container.to_string())
            .or_default()
            .extend(tasks);
        Ok(out)
    }

    /// Stop forwarding; returns once the host ports are closed (a task's listener is dropped
    /// only when the aborted task has been reaped).
    pub async fn stop(&self, container: &str) {
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container);
        for t in tasks.unwrap_or_default() {
            t.abort();
            let _ = t.await;
        }
    }
}

async fn tcp(l: TcpListener, dst: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            match TcpStream::connect(dst).await {
                Ok(mut out) => {
                    let _ = out.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
                Err(e) => tracing::debug!(%dst, error = %e, "proxy: container port unreachable"),
            }
        });
    }
}

/// One upstream socket per client address; flows idle for 90 s are dropped.
async fn udp(sock: Arc<UdpSocket>, dst: SocketAddr) {
    let flows: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Default::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let existing = flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&client)
            .cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                let Ok(u) = UdpSocket::bind("0.0.0.0:0").await else {
                    continue;
                };
                if u.connect(dst).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                flows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(client, u.clone());
                let (u2, s2, f2) = (u.clone(), sock.clone(), flows.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok(Ok(m)) =
                        tokio::time::timeout(Duration::from_secs(90), u2.recv(&mut b)).await
                    {
                        let _ = s2.send_to(&b[..m], client).await;
                    }
                    f2.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]).await;
    }
}

/// Parse the record's PortBindings (+ PublishAllPorts over ExposedPorts) into bindings.
pub fn bindings_from(
    port_bindings: &HashMap<String, Option<Vec<bollard_stubs::models::PortBinding>>>,
    exposed: &[String],
    publish_all: bool,
) -> Result<Vec<Binding>> {
    let mut out = Vec::new();
    let parse_key = |k: &str| -> Result<(u16, String)> {
        let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
        let port: u16 = p
            .parse()
            .map_err(|_| EngineError::invalid(format!("invalid port specification: \"{k}\"")))?;
        Ok((port, proto.to_string()))
    };
    for (k, v) in port_bindings {
        let (cport, proto) = parse_key(k)?;
        for pb in v.clone().unwrap_or_default() {
            let ip = pb
                .host_ip
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            let host_ip: IpAddr = ip
                .parse()
                .map_err(|_| EngineError::invalid(format!("invalid IP address: {ip}")))?;
            let hp = pb.host_port.clone().unwrap_or_default();
            let host_port: u16 = if hp.is_empty() {
                0
            } else {
                hp.parse().map_err(|_| {
                    EngineError::invalid(format!("invalid port specification: \"{hp}\""))
                })?
            };
            out.push(Binding {
                host_ip,
                host_port,
                proto: proto.clone(),
                container_port: cport,
            });
        }
    }
    if publish_all {
        for k in exposed {
            let (cport, proto) = parse_key(k)?;
            if !out
                .iter()
                .any(|b| b.container_port == cport && b.proto == proto)
            {
                out.push(Binding {
                    host_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    host_port: 0,
                    proto,
                    container_port: cport,
                });
            }
        }
    }
    Ok(out)
}
