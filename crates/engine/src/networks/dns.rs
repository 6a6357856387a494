//! The embedded DNS server of user-defined networks: answers A queries for container names,
//! aliases and short ids on that network; other names go to the host's (non-loopback)
//! resolvers, as Docker's resolver does.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

/// One container's names on a network: (container id, names, address).
type Entry = (String, Vec<String>, Ipv4Addr);

/// Names per network id.
#[derive(Default)]
pub struct Table {
    inner: RwLock<HashMap<String, Vec<Entry>>>,
}

impl Table {
    pub fn register(&self, net: &str, container: &str, names: Vec<String>, ip: Ipv4Addr) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let v = m.entry(net.to_string()).or_default();
        v.retain(|(c, _, _)| c != container);
        v.push((container.to_string(), names, ip));
    }

    pub fn unregister(&self, net: &str, container: &str) {
        let mut m = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = m.get_mut(net) {
            v.retain(|(c, _, _)| c != container);
        }
    }

    pub fn lookup(&self, net: &str, name: &str) -> Vec<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let m = self.inner.read().unwrap_or_else(|e| e.into_inner());
        m.get(net)
            .map(|v| {
                v.iter()
                    .filter(|(_, names, _)| names.iter().any(|n| n.to_ascii_lowercase() == name))
                    .map(|(_, _, ip)| *ip)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A running server; dropping it stops it.
pub struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn start(ip: Ipv4Addr, net: String, table: Arc<Table>) -> std::io::Result<Self> {
        let std_sock = std::net::UdpSocket::bind(SocketAddr::from((ip, 53)))?;
        std_sock.set_nonblocking(true)?;
        let sock = Arc::new(tokio::net::UdpSocket::from_std(std_sock)?);
        let upstreams = host_resolvers();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 1500];
            loop {
                let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let q = buf[..n].to_vec();
                let sock = sock.clone();
                let table = table.clone();
                let net = net.clone();
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    if let Some(resp) = answer(&q, &net, &table, &upstreams).await {
                        let _ = sock.send_to(&resp, peer).await;
                    }
                });
            }
        });
        Ok(Self { task })
    }
}

fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|ip| !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Parse the first question: (name, qtype, end offset of the question).
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) == 0 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let l = *q.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        if l & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + l)?).into_owned());
        i += l;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    Some((labels.join("."), qtype, i + 4))
}

fn reply(q: &[u8], qend: usize, rcode: u8, answers: &[Ipv4Addr]) -> Vec<u8> {
    let mut r = Vec::with_capacity(qend + answers.len() * 16);
    r.extend_from_slice(&q[..2]);
    // QR, opcode from the query, AA, RD copied; RA set.
    r.push(0x84 | (q[2] & 0x79));
    r.push(0x80 | rcode);
    r.extend_from_slice(&1u16.to_be_bytes());
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..qend]);
    for ip in answers {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&600u32.to_be_bytes());
        r.extend_from_slice(&4u16.to_be_bytes());
        r.extend_from_slice(&ip.octets());
    }
    r
}

async fn answer(q: &[u8], net: &str, table: &Table, upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let (name, qtype, qend) = question(q)?;
    let ips = table.lookup(net, &name);
    if !ips.is_empty() {
        // A for A/ANY; an empty NOERROR for other types of a name we own (e.g. AAAA).
        let a = if qtype == 1 || qtype == 255 {
            ips
        } else {
            vec![]
        };
        return Some(reply(q, qend, 0, &a));
    }
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
            .parse()
            .ok()?;
        let Ok(s) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if s.send_to(q, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(std::time::Duration::from_secs(2), s.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    Some(reply(q, qend, 3, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.').filter(|l| !l.is_empty()) {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[tokio::test]
    async fn answers_known_names_and_nxdomain() {
        let t = Table::default();
        t.register(
            "n1",
            "c1",
            vec!["web".into(), "alias".into()],
            Ipv4Addr::new(10, 0, 0, 2),
        );
        let r = answer(&query("web", 1), "n1", &t, &[]).await.unwrap();
        assert_eq!(r[0..2], [0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 2]);
        let r = answer(&query("ALIAS.", 1), "n1", &t, &[]).await.unwrap();
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 2]);
        let r = answer(&query("other", 1), "n1", &t, &[]).await.unwrap();
        assert_eq!(r[3] & 0x0f, 3);
        // Another network does not see it.
        let r = answer(&query("web", 1), "n2", &t, &[]).await.unwrap();
        assert_eq!(r[3] & 0x0f, 3);
        t.unregister("n1", "c1");
        assert!(t.lookup("n1", "web").is_empty());
    }
}
