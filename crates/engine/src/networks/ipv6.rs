//! IPv6 on bridge networks with `EnableIPv6`: the host check, the bridge's gateway address and
//! the container side of an endpoint (through `link.rs`'s netlink calls, which take either
//! family).

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use super::link;
use crate::error::{EngineError, Result};

/// Whether the host can carry IPv6 networks: a kernel with IPv6 whose `all` interfaces are
/// not disabled by sysctl. The error says which and what to do.
pub fn host_check() -> Result<()> {
    check_in(Path::new("/proc/sys/net/ipv6"))
}

fn check_in(root: &Path) -> Result<()> {
    if !root.is_dir() {
        return Err(EngineError::invalid(
            "cannot create an IPv6 network: this host's kernel has no IPv6 (/proc/sys/net/ipv6 is missing)",
        ));
    }
    let disabled = std::fs::read_to_string(root.join("conf/all/disable_ipv6"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false);
    if disabled {
        return Err(EngineError::invalid(
            "cannot create an IPv6 network: IPv6 is disabled on this host (sysctl net.ipv6.conf.all.disable_ipv6=1); enable it or create the network without IPv6",
        ));
    }
    Ok(())
}

/// Give the bridge its IPv6 gateway address (idempotent; without duplicate address
/// detection, which would leave it unusable for a second).
pub async fn ensure_bridge(bridge: &str, gw: Ipv6Addr, prefix: u8) -> Result<()> {
    // A bridge made while `default.disable_ipv6` is 1 starts with IPv6 off.
    let knob = format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6");
    if std::fs::read_to_string(&knob).is_ok_and(|s| s.trim() == "1") {
        tokio::fs::write(&knob, "0")
            .await
            .map_err(|e| EngineError::Internal(format!("enabling IPv6 on {bridge}: {e}")))?;
    }
    link::ensure_bridge_addr(bridge, IpAddr::V6(gw), prefix).await
}

/// The container side of an IPv6 endpoint: `addr/prefix` on `ifname` in `ns` and, when
/// `gateway` is given, the default IPv6 route through it.
pub async fn add_endpoint(
    ns: &str,
    ifname: &str,
    addr: Ipv6Addr,
    prefix: u8,
    gateway: Option<Ipv6Addr>,
) -> Result<()> {
    link::addr_add(Some(ns), ifname, IpAddr::V6(addr), prefix).await?;
    if let Some(gw) = gateway {
        link::default_route(Some(ns), IpAddr::V6(gw), Some(ifname)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_check_says_why() {
        let d = tempfile::tempdir().unwrap();
        let missing = check_in(&d.path().join("nope")).unwrap_err().to_string();
        assert!(missing.contains("no IPv6"), "{missing}");
        std::fs::create_dir_all(d.path().join("conf/all")).unwrap();
        std::fs::write(d.path().join("conf/all/disable_ipv6"), "0\n").unwrap();
        assert!(check_in(d.path()).is_ok());
        std::fs::write(d.path().join("conf/all/disable_ipv6"), "1\n").unwrap();
        let off = check_in(d.path()).unwrap_err().to_string();
        assert!(off.contains("net.ipv6.conf.all.disable_ipv6=1"), "{off}");
    }
}
