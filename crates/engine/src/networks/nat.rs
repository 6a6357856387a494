//! Published ports' kernel path for connections made on the host itself (`curl
//! localhost:8080`, the desktop's own tools, the VM's port relay): an iptables DNAT rule per
//! IPv4 binding in a chain of this engine's own, jumped to from `nat OUTPUT` for local
//! destinations, so such a connection goes straight to the container with no process in the
//! path (dockerd's `userland-proxy: false` path). The userspace proxy ([`super::proxy`]) keeps
//! the host port bound (a taken port still fails the start), serves IPv6 and traffic arriving
//! from other hosts, and carries everything when iptables cannot be used.
//!
//! A packet from 127.0.0.1 DNATed to a container leaves on the bridge, which needs the bridge's
//! `route_localnet` and a MASQUERADE of locally sourced traffic (both made with the bridge's
//! rules, [`super::link`]).
//!
//! The chain is emptied when the engine starts (before running containers' ports come back),
//! so a crashed engine's rules never route a port that now belongs to someone else.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;

use tokio::sync::OnceCell;

use super::link::run;
use super::proxy::Binding;

pub struct PortNat {
    chain: String,
    /// Whether the chain and its jump are in place (made once; false: no iptables here).
    ready: OnceCell<bool>,
    /// Per container, the rule specs it added (for removal).
    rules: Mutex<HashMap<String, Vec<String>>>,
}

impl PortNat {
    /// `tag` keeps the chains of engines running side by side (tests) apart.
    pub fn new(tag: &str, default_root: bool) -> Self {
        Self {
            chain: if default_root {
                "BERTH-PORTS".into()
            } else {
                format!("BERTH-PORTS-{tag}")
            },
            ready: OnceCell::new(),
            rules: Mutex::new(HashMap::new()),
        }
    }

    /// `iptables` arguments to check (`-C`), add (`-A`) or delete (`-D`) the jump from `nat
    /// OUTPUT` to this engine's chain, for local destinations.
    fn jump<'a>(&'a self, op: &'a str) -> [&'a str; 12] {
        [
            "-w",
            "5",
            "-t",
            "nat",
            op,
            "OUTPUT",
            "-m",
            "addrtype",
            "--dst-type",
            "LOCAL",
            "-j",
            &self.chain,
        ]
    }

    /// Make the chain (empty) and its jump from `OUTPUT`; called at start-up, and by the first
    /// `add` in any case. Nothing fails when iptables is missing: the proxy carries the ports.
    pub async fn init(&self) -> bool {
        *self
            .ready
            .get_or_init(|| async {
                let c = self.chain.as_str();
                // -N fails when the chain exists; -F empties it either way.
                let _ = run("iptables", &["-w", "5", "-t", "nat", "-N", c]).await;
                if let Err(e) = run("iptables", &["-w", "5", "-t", "nat", "-F", c]).await {
                    tracing::info!(error = %e, "published ports: no iptables NAT, userspace proxy only");
                    return false;
                }
                if run("iptables", &self.jump("-C")).await.is_err() {
                    if let Err(e) = run("iptables", &self.jump("-A")).await {
                        tracing::info!(error = %e, "published ports: no OUTPUT jump, userspace proxy only");
                        return false;
                    }
                }
                true
            })
            .await
    }

    /// Route local connections to `bound`'s host ports straight to `target`.
    pub async fn add(&self, container: &str, target: Ipv4Addr, bound: &[Binding]) {
        let specs = specs(&self.chain, container, target, bound);
        if specs.is_empty() || !self.init().await {
            return;
        }
        let input = restore_input(&specs, "-A");
        match super::link::iptables_restore_text(&input).await {
            Ok(()) => {
                lock(&self.rules)
                    .entry(container.to_string())
                    .or_default()
                    .extend(specs);
            }
            Err(e) => {
                tracing::warn!(container, error = %e, "published ports: no DNAT rules, userspace proxy only")
            }
        }
    }

    /// Drop `container`'s rules (its ports then go nowhere but to the proxy, which stops too).
    pub async fn remove(&self, container: &str) {
        let Some(specs) = lock(&self.rules).remove(container) else {
            return;
        };
        if let Err(e) = super::link::iptables_restore_text(&restore_input(&specs, "-D")).await {
            tracing::warn!(container, error = %e, "published ports: could not remove DNAT rules");
        }
    }

    /// On engine stop: with no container's ports left, the chain and its jump go too (dockerd
    /// leaves its own; an engine per test data root would leave one each). Ports of containers
    /// that keep running (live restore) keep theirs until the engine is back.
    pub async fn shutdown(&self) {
        // Waits for a start-up `init` still under way (it would make the chain after us).
        if !lock(&self.rules).is_empty() || !self.init().await {
            return;
        }
        let c = self.chain.as_str();
        while run("iptables", &self.jump("-D")).await.is_ok() {}
        let _ = run("iptables", &["-w", "5", "-t", "nat", "-F", c]).await;
        if let Err(e) = run("iptables", &["-w", "5", "-t", "nat", "-X", c]).await {
            tracing::debug!(error = %e, chain = c, "could not delete the port chain");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One `-A`/`-D` line body per IPv4 binding (`CHAIN spec`).
fn specs(chain: &str, container: &str, target: Ipv4Addr, bound: &[Binding]) -> Vec<String> {
    let short = &container[..container.len().min(12)];
    bound
        .iter()
        .filter(|b| matches!(b.proto.as_str(), "tcp" | "udp" | "sctp"))
        .filter_map(|b| {
            let dst = match b.host_ip {
                IpAddr::V4(ip) if ip.is_unspecified() => String::new(),
                IpAddr::V4(ip) => format!("-d {ip}/32 "),
                IpAddr::V6(_) => return None,
            };
            Some(format!(
                "{chain} {dst}-p {p} -m {p} --dport {hp} -m comment --comment {short} -j DNAT --to-destination {target}:{cp}",
                p = b.proto,
                hp = b.host_port,
                cp = b.container_port,
            ))
        })
        .collect()
}

fn restore_input(specs: &[String], op: &str) -> String {
    let mut s = String::from("*nat\n");
    for spec in specs {
        s.push_str(op);
        s.push(' ');
        s.push_str(spec);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(ip: &str, hp: u16, proto: &str, cp: u16) -> Binding {
        Binding {
            host_ip: ip.parse().expect("ip"),
            host_port: hp,
            host_port_end: hp,
            proto: proto.into(),
            container_port: cp,
        }
    }

    #[test]
    fn rules_per_binding() {
        let s = specs(
            "BERTH-PORTS",
            "0123456789abcdef",
            Ipv4Addr::new(172, 17, 0, 2),
            &[
                b("127.0.0.1", 8080, "tcp", 80),
                b("0.0.0.0", 5353, "udp", 53),
                b("::1", 8080, "tcp", 80),
            ],
        );
        assert_eq!(
            s,
            vec![
                "BERTH-PORTS -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -m comment --comment 0123456789ab -j DNAT --to-destination 172.17.0.2:80",
                "BERTH-PORTS -p udp -m udp --dport 5353 -m comment --comment 0123456789ab -j DNAT --to-destination 172.17.0.2:53",
            ]
        );
        assert_eq!(
            restore_input(&s[..1], "-D"),
            format!("*nat\n-D {}\nCOMMIT\n", s[0])
        );
    }
}
