//! Host networking: bridges, veth pairs, network namespaces, addresses and routes through
//! netlink in-process ([`super::netlink`]; no `ip` process), and the bridges' iptables rules,
//! read with one `iptables-save` and written with one `iptables-restore --noflush`.
//!
//! Every function that takes `ns: Option<&str>` acts in the named namespace
//! (`/run/netns/<ns>`, see [`netns_add`]) when given, on the host otherwise. Addresses and
//! routes take an [`IpAddr`], so IPv4 and IPv6 go through the same calls:
//!
//! | call | iproute2 equivalent |
//! |---|---|
//! | [`ensure_bridge`] / [`ensure_bridge_addr`] | `ip link add NAME type bridge; ip addr replace A/P dev NAME; ip link set NAME up` |
//! | [`add_endpoint`] | `ip link add H type veth peer name IF netns NS address MAC; ip link set H master BR up; ip -n NS addr add A/P dev IF; ip -n NS link set IF up; ip -n NS route replace default via GW` |
//! | [`addr_add`] / [`addr_del`] | `ip [-n NS] addr replace / del A/P dev IF` (IPv6: `nodad`) |
//! | [`route_replace`] / [`default_route`] | `ip [-n NS] route replace DST\|default [via GW] [dev IF]` |
//! | [`link_up`], [`link_set_mac`], [`link_names`], [`link_exists`], [`delete_link`] | `ip [-n NS] link set IF up / address MAC`, `ip -o link`, `ip link show`, `ip link del` |
//! | [`netns_add`] / [`netns_del`] | `ip netns add NS` (+ `lo` up) / `ip netns del NS` |
//! | [`host_routes`] / [`host_routes6`] | `ip -4 / -6 route show table all` (unicast destinations) |
//!
//! At start-up berthd defers the iptables work ([`defer_rules`]): [`ensure_bridge_rules`]
//! then returns at once and the rules are written in the background; [`add_endpoint`] (every
//! container start) waits for the rules of its bridge first, so no container runs before its
//! NAT does. [`rules_ready`] waits for them explicitly.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};

use super::netlink;
use crate::error::{EngineError, Result};
use netlink::{LinkChange, Socket};

/// Runs a helper program and returns its stdout; a failure carries its stderr.
pub(crate) async fn run(prog: &str, args: &[&str]) -> Result<String> {
    run_with_input(prog, args, None).await
}

async fn run_with_input(prog: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| EngineError::Internal(format!("running {prog}: {e}")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| EngineError::Internal(format!("writing to {prog}: {e}")))?;
    }
    let out = child
        .wait_with_output()
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

/// Run `f` (netlink calls: short, but blocking) off the async threads; its error becomes
/// "`what`: <why>".
async fn blocking<T, F>(what: String, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> netlink::Result<T> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(EngineError::Internal(format!("{what}: {e}"))),
        Err(e) => Err(EngineError::Internal(format!("{what}: {e}"))),
    }
}

#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
fn socket_in(ns: Option<&str>) -> netlink::Result<Socket> {
    match ns {
        Some(n) => Socket::in_netns(&netns_path(n)),
        None => Socket::open(),
    }
}

#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
fn in_ns(ns: Option<&str>) -> String {
    ns.map(|n| format!(" in {n}")).unwrap_or_default()
}

#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn link_exists(name: &str) -> bool {
    let n = name.to_string();
    blocking(String::new(), move || Socket::open()?.link_index(&n))
        .await
        .is_ok_and(|i| i.is_some())
}

/// Names of the links in `ns` (the host's when `None`), `ip -o link`'s names.
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn link_names(ns: Option<&str>) -> Result<Vec<String>> {
    let nso = ns.map(String::from);
    blocking(format!("listing links{}", in_ns(ns)), move || {
        socket_in(nso.as_deref())?.link_names()
    })
    .await
}

/// Create (or adopt) a bridge with `gw/prefix` and bring it up.
pub async fn ensure_bridge(name: &str, gw: Ipv4Addr, prefix: u8) -> Result<()> {
    ensure_bridge_addr(name, IpAddr::V4(gw), prefix).await
}

/// Create (or adopt) a bridge, give it `addr/prefix` (either family; kept if present) and
/// bring it up. For a second (IPv6) gateway on an existing bridge, call it again.
pub async fn ensure_bridge_addr(name: &str, addr: IpAddr, prefix: u8) -> Result<()> {
    let n = name.to_string();
    blocking(
        format!("setting up bridge {name} ({addr}/{prefix})"),
        move || {
            let mut s = Socket::open()?;
            let index = match s.link_index(&n)? {
                Some(i) => i,
                None => {
                    match s.add_bridge(&n) {
                        Err(e) if e.errno() != Some(libc::EEXIST) => return Err(e),
                        _ => {}
                    }
                    s.link_index(&n)?.ok_or_else(|| {
                        netlink::Error::Invalid(format!("bridge {n} vanished after it was made"))
                    })?
                }
            };
            if !s.addrs(index)?.contains(&(addr, prefix)) {
                s.add_addr(index, addr, prefix)?;
            }
            s.set_link(
                index,
                &LinkChange {
                    up: Some(true),
                    ..Default::default()
                },
            )
        },
    )
    .await
}

pub async fn delete_link(name: &str) {
    let n = name.to_string();
    if let Err(e) = blocking(format!("deleting link {name}"), move || {
        Socket::open()?.delete_link(&n)
    })
    .await
    {
        tracing::debug!(error = %e, "delete link");
    }
}

/// Bring `ifname` (in `ns`, or on the host) up.
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn link_up(ns: Option<&str>, ifname: &str) -> Result<()> {
    let (nso, n) = (ns.map(String::from), ifname.to_string());
    blocking(format!("bringing {ifname} up{}", in_ns(ns)), move || {
        let mut s = socket_in(nso.as_deref())?;
        let i = s.link_index(&n)?.ok_or_else(|| no_link(&n))?;
        s.set_link(
            i,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
    })
    .await
}

/// Set the MAC address ("aa:bb:cc:dd:ee:ff") of `ifname` (in `ns`, or on the host).
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn link_set_mac(ns: Option<&str>, ifname: &str, mac: &str) -> Result<()> {
    let (nso, n, m) = (ns.map(String::from), ifname.to_string(), mac.to_string());
    blocking(
        format!("setting the address of {ifname}{} to {mac}", in_ns(ns)),
        move || {
            let mac = netlink::parse_mac(&m)?;
            let mut s = socket_in(nso.as_deref())?;
            let i = s.link_index(&n)?.ok_or_else(|| no_link(&n))?;
            s.set_link(
                i,
                &LinkChange {
                    mac: Some(mac),
                    ..Default::default()
                },
            )
        },
    )
    .await
}

fn no_link(name: &str) -> netlink::Error {
    netlink::Error::Kernel {
        errno: libc::ENODEV,
        ext: Some(format!("no link named {name}")),
    }
}

/// `addr/prefix` (IPv4 or IPv6) on `ifname` in `ns` (on the host when `None`). Idempotent
/// (`ip addr replace`); IPv6 addresses are added without duplicate address detection
/// (`nodad`), so they are usable at once, as dockerd does for its endpoints.
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn addr_add(ns: Option<&str>, ifname: &str, addr: IpAddr, prefix: u8) -> Result<()> {
    let (nso, n) = (ns.map(String::from), ifname.to_string());
    blocking(
        format!("adding {addr}/{prefix} to {ifname}{}", in_ns(ns)),
        move || {
            let mut s = socket_in(nso.as_deref())?;
            let i = s.link_index(&n)?.ok_or_else(|| no_link(&n))?;
            s.add_addr(i, addr, prefix)
        },
    )
    .await
}

/// Remove `addr/prefix` from `ifname` in `ns` (on the host when `None`); absent is fine.
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn addr_del(ns: Option<&str>, ifname: &str, addr: IpAddr, prefix: u8) -> Result<()> {
    let (nso, n) = (ns.map(String::from), ifname.to_string());
    blocking(
        format!("removing {addr}/{prefix} from {ifname}{}", in_ns(ns)),
        move || {
            let mut s = socket_in(nso.as_deref())?;
            match s.link_index(&n)? {
                Some(i) => s.del_addr(i, addr, prefix),
                None => Ok(()),
            }
        },
    )
    .await
}

/// `ip route replace` in `ns` (on the host when `None`), main table: to `dst` (`None`: the
/// default route of `gateway`'s family) via `gateway` and/or out of `dev`. IPv4 or IPv6.
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn route_replace(
    ns: Option<&str>,
    dst: Option<(IpAddr, u8)>,
    gateway: Option<IpAddr>,
    dev: Option<&str>,
) -> Result<()> {
    let (nso, d) = (ns.map(String::from), dev.map(String::from));
    let what = format!(
        "route {} via {} dev {}{}",
        dst.map_or("default".to_string(), |(a, p)| format!("{a}/{p}")),
        gateway.map_or("-".to_string(), |g| g.to_string()),
        dev.unwrap_or("-"),
        in_ns(ns)
    );
    blocking(what, move || {
        let mut s = socket_in(nso.as_deref())?;
        let oif = match &d {
            Some(n) => Some(s.link_index(n)?.ok_or_else(|| no_link(n))?),
            None => None,
        };
        s.replace_route(dst, gateway, oif)
    })
    .await
}

/// The default route via `gw` (IPv4 or IPv6) in `ns`, out of `dev` when given.
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn default_route(ns: Option<&str>, gw: IpAddr, dev: Option<&str>) -> Result<()> {
    route_replace(ns, None, Some(gw), dev).await
}

/// The path runc joins for a named network namespace.
pub fn netns_path(name: &str) -> std::path::PathBuf {
    Path::new(netlink::NETNS_RUN_DIR).join(name)
}

/// A named network namespace (`/run/netns/<name>`) with `lo` up; an existing one is kept.
pub async fn netns_add(name: &str) -> Result<()> {
    if netns_path(name).exists() {
        return Ok(());
    }
    let n = name.to_string();
    blocking(format!("creating network namespace {name}"), move || {
        netlink::netns_add(&n).map(|_| ())
    })
    .await
}

pub async fn netns_del(name: &str) {
    let n = name.to_string();
    if let Err(e) = blocking(format!("removing network namespace {name}"), move || {
        netlink::netns_del(&n)
    })
    .await
    {
        tracing::warn!(error = %e, "netns del");
    }
}

/// A veth pair: `host` on the bridge, the peer made in `ns` as `ifname` with `mac` and
/// `addr/prefix`, up, with the default route via `gateway` when given. Waits for the bridge's
/// iptables rules first when they are still being written ([`defer_rules`]). IPv6 addresses
/// and routes on the same interface: [`addr_add`] and [`default_route`] afterwards.
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
    rules_ready(bridge).await;
    let (br, h, n, i, m) = (
        bridge.to_string(),
        host.to_string(),
        ns.to_string(),
        ifname.to_string(),
        mac.to_string(),
    );
    blocking(
        format!("connecting {ifname} in {ns} to {bridge} ({host}, {addr}/{prefix})"),
        move || {
            let mac = netlink::parse_mac(&m)?;
            let mut s = Socket::open()?;
            let master = s.link_index(&br)?.ok_or_else(|| no_link(&br))?;
            // A leftover of an earlier attempt (its peer goes with it).
            s.delete_link(&h)?;
            let nsfd = netlink::open_netns(&netns_path(&n))?;
            s.add_veth(&h, Some(master), true, &i, Some(&nsfd), Some(mac))?;
            let inside = || -> netlink::Result<()> {
                let mut c = Socket::in_netns(&netns_path(&n))?;
                let idx = c.link_index(&i)?.ok_or_else(|| no_link(&i))?;
                c.add_addr(idx, IpAddr::V4(addr), prefix)?;
                c.set_link(
                    idx,
                    &LinkChange {
                        up: Some(true),
                        ..Default::default()
                    },
                )?;
                if let Some(gw) = gateway {
                    c.replace_route(None, Some(IpAddr::V4(gw)), None)?;
                }
                Ok(())
            };
            let r = inside();
            if r.is_err() {
                let _ = s.delete_link(&h);
            }
            r
        },
    )
    .await
}

// ---- iptables ----

/// The iptables rules of one bridge network, as Docker makes them: traffic between the
/// bridge's own ports is accepted (a host whose FORWARD policy is DROP, as dockerd leaves it,
/// would otherwise cut containers off from each other), and for non-internal networks outbound
/// traffic is accepted and masqueraded, with replies let back in.
/// Each rule is (table, chain, spec) with the spec as `iptables-save` prints it.
fn bridge_rules(
    subnet: &str,
    bridge: &str,
    internal: bool,
) -> Vec<(&'static str, &'static str, String)> {
    let mut r = vec![(
        "filter",
        "FORWARD",
        format!("-i {bridge} -o {bridge} -j ACCEPT"),
    )];
    if !internal {
        r.push((
            "filter",
            "FORWARD",
            format!("-i {bridge} ! -o {bridge} -j ACCEPT"),
        ));
        r.push((
            "filter",
            "FORWARD",
            format!("-o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
        ));
        r.push((
            "nat",
            "POSTROUTING",
            format!("-s {subnet} ! -o {bridge} -j MASQUERADE"),
        ));
        // Host connections DNATed to a container (published ports, `super::nat`) leave with
        // the host's source address, 127.0.0.1 included: the container sees the gateway's.
        r.push((
            "nat",
            "POSTROUTING",
            format!("-o {bridge} -m addrtype --src-type LOCAL -j MASQUERADE"),
        ));
    }
    r
}

/// `iptables-save` output as (table, "-A CHAIN spec") lines.
fn saved_rules(save: &str) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for l in save.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.trim().to_string();
        } else if l.starts_with("-A ") {
            out.push((table.clone(), l.trim_end().to_string()));
        }
    }
    out
}

/// The `iptables-restore --noflush` input for `lines` of (table, command line).
fn restore_input(lines: &[(&str, String)]) -> String {
    let mut s = String::new();
    for t in ["filter", "nat"] {
        let mine: Vec<&String> = lines
            .iter()
            .filter(|(tt, _)| *tt == t)
            .map(|(_, l)| l)
            .collect();
        if mine.is_empty() {
            continue;
        }
        s.push_str(&format!("*{t}\n"));
        for l in mine {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
    }
    s
}

/// What to add for `rules` given `iptables-save`'s output: FORWARD rules go first (`-I`),
/// ahead of a DROP a host firewall may have; NAT rules are appended.
fn missing_rules(
    rules: &[(&'static str, &'static str, String)],
    save: &str,
) -> Vec<(&'static str, String)> {
    let have = saved_rules(save);
    rules
        .iter()
        .filter(|(t, c, spec)| {
            let line = format!("-A {c} {spec}");
            !have.iter().any(|(ht, hl)| ht == t && *hl == line)
        })
        .map(|(t, c, spec)| {
            let op = if *c == "FORWARD" { "-I" } else { "-A" };
            (*t, format!("{op} {c} {spec}"))
        })
        .collect()
}

/// Every copy of `rules` present in `iptables-save`'s output, as delete commands.
fn present_rules(
    rules: &[(&'static str, &'static str, String)],
    save: &str,
) -> Vec<(&'static str, String)> {
    let have = saved_rules(save);
    let mut out = Vec::new();
    for (t, c, spec) in rules {
        let line = format!("-A {c} {spec}");
        let n = have
            .iter()
            .filter(|(ht, hl)| ht == t && *hl == line)
            .count();
        for _ in 0..n {
            out.push((*t, format!("-D {c} {spec}")));
        }
    }
    out
}

/// The tables' rules, one program run (tables not loaded yet are simply absent).
/// `iptables-restore --noflush` of a prepared input (tables, commands, `COMMIT`s).
pub(crate) async fn iptables_restore_text(input: &str) -> Result<()> {
    tracing::debug!(rules = %input, "iptables-restore --noflush");
    run_with_input("iptables-restore", &["-w", "5", "--noflush"], Some(input))
        .await
        .map(|_| ())
}

async fn iptables_save() -> Result<String> {
    run("iptables-save", &[]).await
}

async fn iptables_restore(lines: &[(&str, String)]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let input = restore_input(lines);
    tracing::debug!(rules = %input, "iptables-restore --noflush");
    run_with_input("iptables-restore", &["-w", "5", "--noflush"], Some(&input))
        .await
        .map(|_| ())
}

/// Per-rule fallback (no `iptables-save`/`-restore`): `-C`, then `-I`/`-A`.
async fn iptables_one_by_one(rules: &[(&'static str, &'static str, String)]) {
    for (t, c, spec) in rules {
        let mut args: Vec<&str> = vec!["-w", "5", "-t", t, "-C", c];
        args.extend(spec.split(' '));
        if run("iptables", &args).await.is_ok() {
            continue;
        }
        args[4] = if *c == "FORWARD" { "-I" } else { "-A" };
        if let Err(e) = run("iptables", &args).await {
            tracing::warn!(error = %e, "could not add an iptables rule");
        }
    }
}

async fn install_rules(subnet: String, bridge: String, internal: bool) {
    let t = std::time::Instant::now();
    let rules = bridge_rules(&subnet, &bridge, internal);
    match iptables_save().await {
        Ok(save) => {
            let add = missing_rules(&rules, &save);
            if let Err(e) = iptables_restore(&add).await {
                tracing::warn!(error = %e, bridge, "could not add the bridge's iptables rules");
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "iptables-save: adding rules one by one");
            iptables_one_by_one(&rules).await;
        }
    }
    tracing::debug!(
        bridge,
        ms = t.elapsed().as_millis() as u64,
        "iptables rules in place"
    );
}

async fn uninstall_rules(subnet: String, bridge: String) {
    let rules = bridge_rules(&subnet, &bridge, false);
    match iptables_save().await {
        Ok(save) => {
            if let Err(e) = iptables_restore(&present_rules(&rules, &save)).await {
                tracing::warn!(error = %e, bridge, "could not remove the bridge's iptables rules");
            }
        }
        Err(_) => {
            for (t, c, spec) in &rules {
                let mut args: Vec<&str> = vec!["-w", "5", "-t", t, "-D", c];
                args.extend(spec.split(' '));
                for _ in 0..8 {
                    if run("iptables", &args).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}

type Job = Shared<BoxFuture<'static, ()>>;

/// Per bridge: the last rule job (install or removal), chained so they run in order.
static RULE_JOBS: LazyLock<Mutex<HashMap<String, Job>>> = LazyLock::new(Default::default);
/// Per bridge: the rules this process has put in place ((subnet, internal)), so container
/// starts do not read the tables again.
static RULES_DONE: LazyLock<Mutex<HashMap<String, (String, bool)>>> =
    LazyLock::new(Default::default);
static DEFER: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// While on, [`ensure_bridge_rules`] schedules the rules and returns at once (berthd's
/// start-up: the API answers sooner; container starts wait through [`rules_ready`]).
pub fn defer_rules(on: bool) {
    DEFER.store(on, Ordering::SeqCst);
}

/// Queue `job` for `bridge` after its earlier jobs; returns the chained job.
fn chain(bridge: &str, job: BoxFuture<'static, ()>) -> Job {
    let mut jobs = lock(&RULE_JOBS);
    let prev = jobs.remove(bridge);
    let j: Job = async move {
        if let Some(p) = prev {
            p.await;
        }
        job.await;
    }
    .boxed()
    .shared();
    jobs.insert(bridge.to_string(), j.clone());
    j
}

/// Wait until the rule jobs queued for `bridge` so far are done.
pub async fn rules_ready(bridge: &str) {
    let job = lock(&RULE_JOBS).get(bridge).cloned();
    if let Some(j) = job {
        j.await;
    }
}

/// Add the bridge's rules (idempotent: what is there already is not added again; once this
/// process made them, later calls return at once).
pub async fn ensure_bridge_rules(subnet: &str, bridge: &str, internal: bool) {
    if !internal {
        let _ = tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1").await;
        // 127.0.0.1 DNATed to a container may leave on the bridge (`super::nat`).
        let _ = tokio::fs::write(
            format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "1",
        )
        .await;
    }
    let key = (subnet.to_string(), internal);
    if lock(&RULES_DONE).get(bridge) == Some(&key) {
        rules_ready(bridge).await;
        return;
    }
    lock(&RULES_DONE).insert(bridge.to_string(), key);
    let job = chain(
        bridge,
        install_rules(subnet.to_string(), bridge.to_string(), internal).boxed(),
    );
    if DEFER.load(Ordering::SeqCst) {
        tokio::spawn(job);
    } else {
        job.await;
    }
}

/// Remove the bridge's rules (every copy, whatever `internal` was).
pub async fn remove_bridge_rules(subnet: &str, bridge: &str) {
    lock(&RULES_DONE).remove(bridge);
    chain(
        bridge,
        uninstall_rules(subnet.to_string(), bridge.to_string()).boxed(),
    )
    .await;
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

/// IPv4 routes on the host (unicast destinations of every table), to avoid subnets already
/// in use. The default route is (0.0.0.0, 0).
pub async fn host_routes() -> Vec<(Ipv4Addr, u8)> {
    routes_of(libc::AF_INET as u8)
        .await
        .into_iter()
        .filter_map(|(a, p)| match a {
            IpAddr::V4(a) => Some((a, p)),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// IPv6 routes on the host, as [`host_routes`].
#[allow(dead_code)] // API for the IPv6 side and callers still on `ip` (module docs)
pub async fn host_routes6() -> Vec<(Ipv6Addr, u8)> {
    routes_of(libc::AF_INET6 as u8)
        .await
        .into_iter()
        .filter_map(|(a, p)| match a {
            IpAddr::V6(a) => Some((a, p)),
            IpAddr::V4(_) => None,
        })
        .collect()
}

async fn routes_of(family: u8) -> Vec<(IpAddr, u8)> {
    blocking("listing routes".into(), move || {
        Socket::open()?.routes(family)
    })
    .await
    .unwrap_or_else(|e| {
        tracing::warn!(error = %e, "could not list the host's routes");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SAVE: &str = "# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
-A FORWARD -i br0 -o br0 -j ACCEPT
-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.17.0.0/16 ! -o br0 -j MASQUERADE
COMMIT
";

    #[test]
    fn adds_only_what_is_missing() {
        let rules = bridge_rules("172.17.0.0/16", "br0", false);
        let add = missing_rules(&rules, SAVE);
        let local = "-A POSTROUTING -o br0 -m addrtype --src-type LOCAL -j MASQUERADE";
        assert_eq!(
            add,
            vec![
                ("filter", "-I FORWARD -i br0 ! -o br0 -j ACCEPT".to_string()),
                ("nat", local.to_string())
            ]
        );
        assert_eq!(
            restore_input(&add),
            format!(
                "*filter\n-I FORWARD -i br0 ! -o br0 -j ACCEPT\nCOMMIT\n*nat\n{local}\nCOMMIT\n"
            )
        );
        assert!(missing_rules(&rules, SAVE).len() == 2);
        // Another subnet's MASQUERADE is not ours; a rule in the wrong table does not count.
        let other = bridge_rules("10.64.0.0/20", "br0", false);
        assert!(missing_rules(&other, SAVE)
            .iter()
            .any(|(t, l)| *t == "nat"
                && l == "-A POSTROUTING -s 10.64.0.0/20 ! -o br0 -j MASQUERADE"));
        assert_eq!(missing_rules(&rules, "").len(), 5);
        assert_eq!(bridge_rules("10.0.0.0/8", "b", true).len(), 1);
    }

    #[test]
    fn removes_every_copy() {
        let rules = bridge_rules("172.17.0.0/16", "br0", false);
        let del = present_rules(&rules, SAVE);
        assert_eq!(del.len(), 4);
        assert_eq!(
            restore_input(&del),
            "*filter\n-D FORWARD -i br0 -o br0 -j ACCEPT\n\
             -D FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -D FORWARD -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\nCOMMIT\n\
             *nat\n-D POSTROUTING -s 172.17.0.0/16 ! -o br0 -j MASQUERADE\nCOMMIT\n"
        );
        assert!(present_rules(&bridge_rules("172.17.0.0/16", "br1", false), SAVE).is_empty());
    }

    #[tokio::test]
    async fn jobs_run_in_order_and_can_be_awaited() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (l1, l2) = (log.clone(), log.clone());
        let j1 = chain(
            "test-br-order",
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                lock(&l1).push(1);
            }
            .boxed(),
        );
        tokio::spawn(j1);
        let _j2 = chain(
            "test-br-order",
            async move {
                lock(&l2).push(2);
            }
            .boxed(),
        );
        rules_ready("test-br-order").await;
        assert_eq!(*lock(&log), vec![1, 2]);
        rules_ready("no-such-bridge").await;
    }
}
