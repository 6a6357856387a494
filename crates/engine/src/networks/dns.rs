//! The embedded DNS server of user-defined networks: answers A queries for container names,
//! aliases and short ids on that network, and for the link aliases of the container asking
//! (an endpoint's `Links`, `target:alias`); other names go to the host's (non-loopback)
//! resolvers, as Docker's resolver does.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

/// One container's names on a network: (container id, names, address).
type Entry = (String, Vec<String>, Ipv4Addr);

/// Link aliases of one container on one network: (alias, target container name).
type Links = Vec<(String, String)>;

/// Names per network id.
#[derive(Default)]
pub struct Table {
    inner: RwLock<HashMap<String, Vec<Entry>>>,
    /// Link aliases per (network id, container id): (alias, target container name).
    links: RwLock<HashMap<(String, String), Links>>,
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
        drop(m);
        self.links
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(net.to_string(), container.to_string()));
    }

    /// The endpoint's `Links` (`container[:alias]`): the alias names the target for this
    /// container alone. The target is found when asked, so it may come up later.
    pub fn set_links(&self, net: &str, container: &str, links: &[String]) {
        let parsed: Links = links
            .iter()
            .filter_map(|l| {
                let (target, alias) = l.split_once(':').unwrap_or((l, l));
                let target = target.trim_start_matches('/');
                (!target.is_empty() && !alias.is_empty())
                    .then(|| (alias.to_ascii_lowercase(), target.to_string()))
            })
            .collect();
        let mut m = self.links.write().unwrap_or_else(|e| e.into_inner());
        let key = (net.to_string(), container.to_string());
        if parsed.is_empty() {
            m.remove(&key);
        } else {
            m.insert(key, parsed);
        }
    }

    /// The addresses of `name` for a query on `net` from `from`: the names of the network;
    /// else a link alias of the container at `from`; else, as Docker's per-container
    /// resolver, the names and link aliases of the other networks that container is on.
    pub fn lookup(&self, net: &str, name: &str, from: Option<Ipv4Addr>) -> Vec<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let m = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let by_name = |net: &str, name: &str| -> Vec<Ipv4Addr> {
            m.get(net)
                .into_iter()
                .flatten()
                .filter(|(_, names, _)| names.iter().any(|n| n.to_ascii_lowercase() == name))
                .map(|(_, _, ip)| *ip)
                .collect()
        };
        let found = by_name(net, &name);
        if !found.is_empty() {
            return found;
        }
        let Some(asker) = from.and_then(|ip| {
            m.get(net)?
                .iter()
                .find(|(_, _, a)| *a == ip)
                .map(|(c, _, _)| c.clone())
        }) else {
            return found;
        };
        let links = self.links.read().unwrap_or_else(|e| e.into_inner());
        let via_link = |n: &str| -> Vec<Ipv4Addr> {
            links
                .get(&(n.to_string(), asker.clone()))
                .and_then(|l| l.iter().find(|(alias, _)| *alias == name))
                .map(|(_, target)| by_name(n, &target.to_ascii_lowercase()))
                .unwrap_or_default()
        };
        let found = via_link(net);
        if !found.is_empty() {
            return found;
        }
        let mut others: Vec<&String> = m
            .iter()
            .filter(|(n, v)| *n != net && v.iter().any(|(c, _, _)| *c == asker))
            .map(|(n, _)| n)
            .collect();
        others.sort();
        for n in others {
            let mut f = by_name(n, &name);
            if f.is_empty() {
                f = via_link(n);
            }
            if !f.is_empty() {
                return f;
            }
        }
        Vec::new()
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
                let from = match peer.ip() {
                    std::net::IpAddr::V4(a) => Some(a),
                    std::net::IpAddr::V6(a) => a.to_ipv4_mapped(),
                };
                tokio::spawn(async move {
                    if let Some(resp) = answer(&q, &net, from, &table, &upstreams).await {
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

async fn answer(
    q: &[u8],
    net: &str,
    from: Option<Ipv4Addr>,
    table: &Table,
    upstreams: &[SocketAddr],
) -> Option<Vec<u8>> {
    let (name, qtype, qend) = question(q)?;
    let ips = table.lookup(net, &name, from);
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
        let r = answer(&query("web", 1), "n1", None, &t, &[]).await.unwrap();
        assert_eq!(r[0..2], [0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1);
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 2]);
        let r = answer(&query("ALIAS.", 1), "n1", None, &t, &[])
            .await
            .unwrap();
        assert_eq!(&r[r.len() - 4..], &[10, 0, 0, 2]);
        let r = answer(&query("other", 1), "n1", None, &t, &[])
            .await
            .unwrap();
        assert_eq!(r[3] & 0x0f, 3);
        // Another network does not see it.
        let r = answer(&query("web", 1), "n2", None, &t, &[]).await.unwrap();
        assert_eq!(r[3] & 0x0f, 3);
        // A link alias resolves for the linking container only, to a target that came later.
        let c2 = Ipv4Addr::new(10, 0, 0, 3);
        t.register("n1", "c2", vec!["client".into()], c2);
        t.set_links("n1", "c2", &["upstream:bar".to_string()]);
        assert!(t.lookup("n1", "bar", Some(c2)).is_empty());
        t.register(
            "n1",
            "c3",
            vec!["upstream".into()],
            Ipv4Addr::new(10, 0, 0, 4),
        );
        assert_eq!(
            t.lookup("n1", "bar", Some(c2)),
            vec![Ipv4Addr::new(10, 0, 0, 4)]
        );
        assert!(t
            .lookup("n1", "bar", Some(Ipv4Addr::new(10, 0, 0, 2)))
            .is_empty());
        t.unregister("n1", "c2");
        assert!(t.lookup("n1", "bar", Some(c2)).is_empty());
        t.unregister("n1", "c1");
        assert!(t.lookup("n1", "web", None).is_empty());
        // Names of another network of the asking container resolve too; not for others.
        let a = Ipv4Addr::new(10, 0, 0, 9);
        t.register("n1", "ca", vec!["asker".into()], a);
        t.register("n2", "ca", vec!["asker".into()], Ipv4Addr::new(10, 1, 0, 9));
        t.register("n2", "cb", vec!["far".into()], Ipv4Addr::new(10, 1, 0, 7));
        assert_eq!(
            t.lookup("n1", "far", Some(a)),
            vec![Ipv4Addr::new(10, 1, 0, 7)]
        );
        assert!(t
            .lookup("n1", "far", Some(Ipv4Addr::new(10, 0, 0, 4)))
            .is_empty());
    }
}
