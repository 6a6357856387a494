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

/// Outbound NAT for a bridge subnet, as Docker sets it up (idempotent).
pub async fn ensure_masquerade(subnet: &str, bridge: &str) {
    let rule = [
        "-t",
        "nat",
        "-C",
        "POSTROUTING",
        "-s",
        subnet,
        "!",
        "-o",
        bridge,
        "-j",
        "MASQUERADE",
    ];
    if run("iptables", &rule).await.is_err() {
        let mut add = rule;
        add[2] = "-A";
        if let Err(e) = run("iptables", &add).await {
            tracing::warn!(error = %e, "could not add the NAT rule; containers have no outbound access");
        }
    }
    let _ = tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1").await;
}

pub async fn remove_masquerade(subnet: &str, bridge: &str) {
    let _ = run(
        "iptables",
        &[
            "-t",
            "nat",
            "-D",
            "POSTROUTING",
            "-s",
            subnet,
            "!",
            "-o",
            bridge,
            "-j",
            "MASQUERADE",
        ],
    )
    .await;
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
