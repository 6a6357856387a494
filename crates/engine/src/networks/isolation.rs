//! Isolation between bridge networks, as dockerd's DOCKER-ISOLATION-STAGE-1/2 chains do it:
//! a packet that enters from one engine bridge and leaves by another is dropped, so containers
//! on different networks cannot reach each other while those on one network can (bridged
//! traffic never leaves the bridge). An `--internal` network drops everything that enters or
//! leaves it through the host.
//!
//! The chains are shared by every berthd on the host (each adds and removes only its own
//! bridges' rules); the FORWARD jump to stage 1 is kept first in FORWARD so that no ACCEPT
//! rule of a bridge lets cross-network traffic through. IPv6 networks get the same rules in
//! ip6tables, with their bridge's forwarding rules.

use crate::error::Result;

pub const STAGE1: &str = "BERTH-ISOLATION-STAGE-1";
pub const STAGE2: &str = "BERTH-ISOLATION-STAGE-2";

async fn tables(prog: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["-w", "5"];
    all.extend_from_slice(args);
    super::link::run(prog, &all).await
}

/// One rule: (chain, match and target).
type Rule = (&'static str, Vec<String>);

fn v(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The isolation rules of one bridge.
fn rules(bridge: &str, internal: bool) -> Vec<Rule> {
    if internal {
        vec![
            (STAGE1, v(&["-i", bridge, "!", "-o", bridge, "-j", "DROP"])),
            (STAGE1, v(&["!", "-i", bridge, "-o", bridge, "-j", "DROP"])),
        ]
    } else {
        vec![
            (STAGE1, v(&["-i", bridge, "!", "-o", bridge, "-j", STAGE2])),
            (STAGE2, v(&["-o", bridge, "-j", "DROP"])),
        ]
    }
}

/// The FORWARD rules of an IPv6 bridge (`link.rs` makes the IPv4 ones): its own traffic, and
/// for a non-internal network traffic out and the replies.
fn forward_v6(bridge: &str, internal: bool) -> Vec<Rule> {
    let mut r = vec![("FORWARD", v(&["-i", bridge, "-o", bridge, "-j", "ACCEPT"]))];
    if !internal {
        r.push((
            "FORWARD",
            v(&["-i", bridge, "!", "-o", bridge, "-j", "ACCEPT"]),
        ));
        r.push((
            "FORWARD",
            v(&[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-j",
                "ACCEPT",
            ]),
        ));
    }
    r
}

async fn has(prog: &str, chain: &str, rule: &[String]) -> bool {
    let mut a = vec!["-C", chain];
    a.extend(rule.iter().map(|s| s.as_str()));
    tables(prog, &a).await.is_ok()
}

async fn add(prog: &str, op: &str, chain: &str, rule: &[String]) {
    if has(prog, chain, rule).await {
        return;
    }
    let mut a = vec![op, chain];
    a.extend(rule.iter().map(|s| s.as_str()));
    if let Err(e) = tables(prog, &a).await {
        tracing::warn!(error = %e, chain, "could not add an isolation rule");
    }
}

async fn delete_all(prog: &str, chain: &str, rule: &[String]) {
    let mut a = vec!["-D", chain];
    a.extend(rule.iter().map(|s| s.as_str()));
    for _ in 0..8 {
        if tables(prog, &a).await.is_err() {
            break;
        }
    }
}

/// Make the chains (if missing) and keep the jump to stage 1 first in FORWARD: bridges'
/// ACCEPT rules are inserted at the top, so a jump that sat first may no longer be.
async fn ensure_jump(prog: &str) {
    for c in [STAGE1, STAGE2] {
        // Fails when the chain exists, which is the usual case.
        let _ = tables(prog, &["-N", c]).await;
    }
    let jump = format!("-A FORWARD -j {STAGE1}");
    let listed = tables(prog, &["-S", "FORWARD"]).await.unwrap_or_default();
    let rules: Vec<&str> = listed
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    let at: Vec<usize> = rules
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == jump)
        .map(|(i, _)| i + 1)
        .collect();
    if at == [1] {
        return;
    }
    // Insert first, then drop the older copies (numbered after the insert), highest first:
    // the jump is never missing in between.
    if let Err(e) = tables(prog, &["-I", "FORWARD", "1", "-j", STAGE1]).await {
        tracing::warn!(error = %e, "could not add the network isolation jump");
        return;
    }
    for n in at.iter().rev() {
        let _ = tables(prog, &["-D", "FORWARD", &(n + 1).to_string()]).await;
    }
}

/// Put the jump to stage 1 back first in FORWARD (after bridges' rules were inserted).
pub async fn ensure_first(v6: bool) {
    ensure_jump("iptables").await;
    if v6 {
        ensure_jump("ip6tables").await;
    }
}

/// Add one bridge's isolation rules (idempotent); `v6` also in ip6tables.
pub async fn ensure(bridge: &str, internal: bool, v6: bool) {
    let progs: &[&str] = if v6 {
        &["iptables", "ip6tables"]
    } else {
        &["iptables"]
    };
    for prog in progs {
        if *prog == "ip6tables" {
            for (chain, r) in forward_v6(bridge, internal) {
                add(prog, "-I", chain, &r).await;
            }
        }
        ensure_jump(prog).await;
        for (chain, r) in rules(bridge, internal) {
            // An internal network's drops go ahead of the other bridges' jumps to stage 2.
            let op = if chain == STAGE1 && internal {
                "-I"
            } else {
                "-A"
            };
            add(prog, op, chain, &r).await;
        }
    }
}

/// Remove one bridge's rules, whatever `internal` was; once no bridge of any engine is left
/// in the chains, the chains and the jump go too. Run under the host-wide lock.
pub async fn remove(bridge: &str, v6: bool) {
    let progs: &[&str] = if v6 {
        &["iptables", "ip6tables"]
    } else {
        &["iptables"]
    };
    for prog in progs {
        for internal in [false, true] {
            for (chain, r) in rules(bridge, internal) {
                delete_all(prog, chain, &r).await;
            }
            if *prog == "ip6tables" {
                for (chain, r) in forward_v6(bridge, internal) {
                    delete_all(prog, chain, &r).await;
                }
            }
        }
        let mut empty = true;
        for c in [STAGE1, STAGE2] {
            if let Ok(out) = tables(prog, &["-S", c]).await {
                empty &= out.lines().all(|l| l.starts_with("-N "));
            }
        }
        if empty {
            delete_all(prog, "FORWARD", &v(&["-j", STAGE1])).await;
            for c in [STAGE1, STAGE2] {
                let _ = tables(prog, &["-X", c]).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_per_kind_of_network() {
        let r = rules("br-x", false);
        assert_eq!(r[0].0, STAGE1);
        assert_eq!(
            r[0].1.join(" "),
            "-i br-x ! -o br-x -j BERTH-ISOLATION-STAGE-2"
        );
        assert_eq!(r[1].1.join(" "), "-o br-x -j DROP");
        let r = rules("br-x", true);
        assert!(r
            .iter()
            .all(|(c, x)| *c == STAGE1 && x.last().unwrap() == "DROP"));
        assert_eq!(forward_v6("br-x", true).len(), 1);
    }
}
