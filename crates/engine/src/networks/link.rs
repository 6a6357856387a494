//! Host networking through iproute2 and iptables: bridges, veth pairs, network namespaces, NAT.
//! Commands rather than netlink keep each step visible and its error readable.

use std::net::Ipv4Addr;

use crate::error::{EngineError, Result};

async fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new(prog)
        .args(args)
        .output()
        .await
        .map_err(|e| EngineError::Internal(format!("running {prog}: {e}")))?;
    if !out.status.success() {
        return Err(EngineError::Internal(format!(
            "{prog} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn ip(args: &[&str]) -> Result<String> {
    run("ip", args).await
}

pub async fn link_exists(name: &str) -> bool {
    ip(&["link", "show", "dev", name]).await.is_ok()
}

/// Create (or adopt) a bridge with `gw/prefix` and bring it up.
pub async fn ensure_bridge(name: &str, gw: Ipv4Addr, prefix: u8) -> Result<()> {
    if !link_exists(name).await {
        ip(&["link", "add", "name", name, "type", "bridge"]).await?;
    }
    let addr = format!("{gw}/{prefix}");
    let shown = ip(&["-4", "addr", "show", "dev", name])
        .await
        .unwrap_or_default();
    if !shown.contains(&addr) {
        ip(&["addr", "add", &addr, "dev", name]).await?;
    }
    ip(&["link", "set", name, "up"]).await?;
    Ok(())
}

pub async fn delete_link(name: &str) {
    let _ = ip(&["link", "del", name]).await;
}

/// The path runc joins for a named network namespace.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from("/run/netns").join(name)
}

pub async fn netns_add(name: &str) -> Result<()> {
    if netns_path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "add", name]).await?;
    ip(&["-n", name, "link", "set", "lo", "up"]).await?;
    Ok(())
}

pub async fn netns_del(name: &str) {
    let _ = ip(&["netns", "del", name]).await;
}

/// A veth pair: `host` on the bridge, the peer moved into `ns` as `ifname` with `addr/prefix`.
#[allow(clippy::too_many_arguments)]
pub async fn add_endpoint(
    bridge: &str,
    host: &str,
    ns: &str,
    ifname: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    mac: &str,
) -> Result<()> {
    let peer = format!("{host}p");
    delete_link(host).await;
    ip(&["link", "add", host, "type", "veth", "peer", "name", &peer]).await?;
    let r = async {
        ip(&["link", "set", host, "master", bridge]).await?;
        ip(&["link", "set", host, "up"]).await?;
        ip(&["link", "set", &peer, "netns", ns]).await?;
        ip(&["-n", ns, "link", "set", &peer, "name", ifname]).await?;
        ip(&["-n", ns, "link", "set", ifname, "address", mac]).await?;
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/{prefix}"),
            "dev",
            ifname,
        ])
        .await?;
        ip(&["-n", ns, "link", "set", ifname, "up"]).await?;
        if let Some(gw) = gateway {
            ip(&[
                "-n",
                ns,
                "route",
                "replace",
                "default",
                "via",
                &gw.to_string(),
            ])
            .await?;
        }
        Ok::<(), EngineError>(())
    }
    .await;
    if r.is_err() {
        delete_link(host).await;
    }
    r
}

/// The iptables rules of one bridge network, as Docker makes them: traffic between the
/// bridge's own ports is accepted (a host whose FORWARD policy is DROP, as dockerd leaves it,
/// would otherwise cut containers off from each other), and for non-internal networks outbound
/// traffic is accepted and masqueraded, with replies let back in.
fn bridge_rules(subnet: &str, bridge: &str, internal: bool) -> Vec<Vec<String>> {
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut r = vec![v(&[
        "filter", "FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT",
    ])];
    if !internal {
        r.push(v(&[
            "filter", "FORWARD", "-i", bridge, "!", "-o", bridge, "-j", "ACCEPT",
        ]));
        r.push(v(&[
            "filter",
            "FORWARD",
            "-o",
            bridge,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ]));
        r.push(v(&[
            "nat",
            "POSTROUTING",
            "-s",
            subnet,
            "!",
            "-o",
            bridge,
            "-j",
            "MASQUERADE",
        ]));
    }
    r
}

async fn iptables(op: &str, rule: &[String]) -> Result<String> {
    let mut args: Vec<&str> = vec!["-w", "5", "-t", &rule[0], op, &rule[1]];
    args.extend(rule[2..].iter().map(|s| s.as_str()));
    run("iptables", &args).await
}

/// Add the bridge's rules (idempotent).
pub async fn ensure_bridge_rules(subnet: &str, bridge: &str, internal: bool) {
    for rule in bridge_rules(subnet, bridge, internal) {
        if iptables("-C", &rule).await.is_ok() {
            continue;
        }
        // FORWARD rules go first, ahead of a DROP a host firewall may have.
        let op = if rule[1] == "FORWARD" { "-I" } else { "-A" };
        if let Err(e) = iptables(op, &rule).await {
            tracing::warn!(error = %e, bridge, "could not add an iptables rule");
        }
    }
    if !internal {
        let _ = tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1").await;
    }
}

/// Remove the bridge's rules (every copy, whatever `internal` was).
pub async fn remove_bridge_rules(subnet: &str, bridge: &str) {
    for rule in bridge_rules(subnet, bridge, false) {
        for _ in 0..8 {
            if iptables("-D", &rule).await.is_err() {
                break;
            }
        }
    }
}

/// A host-wide lock held while a subnet is chosen and its bridge made, so engines running
/// side by side (tests) never pick the same subnet.
pub struct HostLock(#[allow(dead_code)] std::fs::File);

pub async fn host_lock() -> Result<HostLock> {
    tokio::task::spawn_blocking(|| {
        use std::os::fd::AsRawFd;
        let _ = std::fs::create_dir_all("/run/berth");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/berth/ipam.lock")?;
        // SAFETY: flock on a file descriptor we own; released when the file is closed.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(HostLock(f))
    })
    .await
    .map_err(|e| EngineError::Internal(format!("ipam lock: {e}")))?
    .map_err(|e| EngineError::Internal(format!("ipam lock: {e}")))
}

/// IPv4 routes on the host (destination networks), to avoid subnets already in use.
pub async fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    let out = ip(&["-4", "route", "show", "table", "all"])
        .await
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|d| {
            let (a, p) = d.split_once('/').unwrap_or((d, "32"));
            Some((a.parse().ok()?, p.parse().ok()?))
        })
        .collect()
}
