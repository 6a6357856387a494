//! Networks: the default `bridge`, `host` and `none`, and user-defined bridge networks with an
//! embedded DNS server. Endpoints (veth + address in the container's netns) are made by the
//! container service through `attach`/`detach`; published ports go through `proxy`, and the
//! host's own connections to them through `nat`'s DNAT rules.

pub mod announce;
pub mod dns;
pub mod ipv6;
pub mod isolation;
pub mod link;
pub mod nat;
pub mod netlink;
pub mod proxy;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sqlx::FromRow;

use crate::error::{EngineError, Result};
use crate::events::Events;
use crate::store::Store;

#[derive(Debug, Clone, FromRow)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub driver: String,
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    pub bridge: Option<String>,
    pub internal: i64,
    pub labels: String,
    pub options: String,
    pub created: String,
    /// The IPAM configuration given at create ([`Ipam`] as JSON).
    pub ipam: String,
    /// `EnableIPv6`: the bridge and endpoints get addresses from the IPv6 pool too.
    pub enable_ipv6: i64,
}

/// The IPv6 side of a network with `EnableIPv6`: its pool as given (host bits masked).
#[derive(Debug, Clone, PartialEq)]
pub struct V6Pool {
    pub net: Ipv6Addr,
    pub prefix: u8,
    pub gateway: Ipv6Addr,
    /// Where dynamic addresses come from (the pool's `IPRange`, else the subnet).
    pub range: (Ipv6Addr, u8),
    pub aux: Vec<Ipv6Addr>,
}

impl NetworkRecord {
    pub fn labels(&self) -> HashMap<String, String> {
        serde_json::from_str(&self.labels).unwrap_or_default()
    }
    pub fn options(&self) -> HashMap<String, String> {
        serde_json::from_str(&self.options).unwrap_or_default()
    }
    /// (network address, prefix length)
    pub fn cidr(&self) -> Option<(Ipv4Addr, u8)> {
        parse_cidr(self.subnet.as_deref()?).ok()
    }
    pub fn gw(&self) -> Option<Ipv4Addr> {
        self.gateway.as_deref()?.parse().ok()
    }
    pub fn is_bridge(&self) -> bool {
        self.driver == "bridge"
    }
    /// The default `bridge` network has no DNS by name (legacy behaviour, as in Docker).
    pub fn is_default_bridge(&self) -> bool {
        self.name == "bridge"
    }
    pub fn ipam(&self) -> Ipam {
        serde_json::from_str(&self.ipam).unwrap_or_default()
    }
    /// The user's IPv4 pool (the one the network uses), if one was given.
    fn v4_pool(&self) -> Option<IpamPool> {
        let net = self.cidr()?;
        self.ipam()
            .config
            .into_iter()
            .find(|c| parse_prefix(&c.subnet).ok() == Some((IpAddr::V4(net.0), net.1)))
    }
    /// Where dynamic addresses come from: the pool's `IPRange`, else the whole subnet.
    pub fn ip_range(&self) -> Option<(Ipv4Addr, u8)> {
        let r = self.v4_pool()?.ip_range;
        match parse_prefix(&r).ok()? {
            (IpAddr::V4(a), p) => Some((a, p)),
            _ => None,
        }
    }
    /// The IPv6 pool of a network with IPv6 enabled. As libnetwork, an address with host bits
    /// set is taken as its network; the gateway defaults to the first address of the range
    /// (of the subnet when there is no range or it starts the subnet).
    pub fn v6(&self) -> Option<V6Pool> {
        if self.enable_ipv6 == 0 {
            return None;
        }
        let c = self
            .ipam()
            .config
            .into_iter()
            .find(|c| parse_prefix(&c.subnet).is_ok_and(|p| p.0.is_ipv6()))?;
        let (IpAddr::V6(a), prefix) = parse_prefix(&c.subnet).ok()? else {
            return None;
        };
        let net = mask6(a, prefix);
        let range = match parse_prefix(&c.ip_range) {
            Ok((IpAddr::V6(r), p)) if p >= prefix && mask6(r, prefix) == net => (mask6(r, p), p),
            _ => (net, prefix),
        };
        let gateway = match c.gateway.parse::<Ipv6Addr>() {
            Ok(g) if mask6(g, prefix) == net => g,
            _ if range.0 != net => range.0,
            _ => Ipv6Addr::from(u128::from(net) + 1),
        };
        let aux = c.aux.values().filter_map(|a| a.parse().ok()).collect();
        Some(V6Pool {
            net,
            prefix,
            gateway,
            range,
            aux,
        })
    }

    /// Addresses the pool's `AuxiliaryAddresses` reserve.
    pub fn aux_addresses(&self) -> Vec<Ipv4Addr> {
        self.v4_pool()
            .map(|p| p.aux.values().filter_map(|a| a.parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// `IPAM` of a network as the API carries it (create request and inspect).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Ipam {
    #[serde(rename = "Driver", default, deserialize_with = "null_string")]
    pub driver: String,
    #[serde(rename = "Options", default)]
    pub options: Option<std::collections::BTreeMap<String, String>>,
    #[serde(rename = "Config", default, deserialize_with = "null_vec")]
    pub config: Vec<IpamPool>,
}

/// One `IPAM.Config` entry; empty fields are left out of inspect, as dockerd's `omitempty`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IpamPool {
    #[serde(
        rename = "Subnet",
        default,
        deserialize_with = "null_string",
        skip_serializing_if = "String::is_empty"
    )]
    pub subnet: String,
    #[serde(
        rename = "IPRange",
        default,
        deserialize_with = "null_string",
        skip_serializing_if = "String::is_empty"
    )]
    pub ip_range: String,
    #[serde(
        rename = "Gateway",
        default,
        deserialize_with = "null_string",
        skip_serializing_if = "String::is_empty"
    )]
    pub gateway: String,
    #[serde(
        rename = "AuxiliaryAddresses",
        default,
        deserialize_with = "null_map",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub aux: std::collections::BTreeMap<String, String>,
}

fn null_string<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(<Option<String> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

fn null_vec<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<IpamPool>, D::Error> {
    Ok(<Option<Vec<IpamPool>> as serde::Deserialize>::deserialize(d)?.unwrap_or_default())
}

fn null_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<std::collections::BTreeMap<String, String>, D::Error> {
    Ok(
        <Option<std::collections::BTreeMap<String, String>> as serde::Deserialize>::deserialize(d)?
            .unwrap_or_default(),
    )
}

/// Parse `addr/bits` (IPv4 or IPv6) as Go's `netip.ParsePrefix`, without masking.
fn parse_prefix(s: &str) -> std::result::Result<(IpAddr, u8), ()> {
    let (a, p) = s.split_once('/').ok_or(())?;
    let a: IpAddr = a.parse().map_err(|_| ())?;
    if p.is_empty() || p.starts_with('+') || (p.len() > 1 && p.starts_with('0')) {
        return Err(());
    }
    let p: u8 = p.parse().map_err(|_| ())?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    if p > max {
        return Err(());
    }
    Ok((a, p))
}

fn mask_ip(a: IpAddr, p: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => IpAddr::V4(mask(v, p)),
        IpAddr::V6(v) => {
            let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
            IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v) & m))
        }
    }
}

pub fn mask6(a: Ipv6Addr, p: u8) -> Ipv6Addr {
    match mask_ip(IpAddr::V6(a), p) {
        IpAddr::V6(v) => v,
        IpAddr::V4(_) => a,
    }
}

/// The first free address of an IPv6 pool: from its range, never the subnet's own address
/// (the subnet-router anycast), the gateway, a reserved or a used address; a requested
/// address anywhere in the subnet.
/// An address asked for (`--ip`, `--ip6`): dockerd's errors when it is outside the subnet or
/// already taken.
fn wanted<A: std::fmt::Display>(w: A, in_subnet: bool, taken: bool) -> Result<A> {
    if !in_subnet {
        return Err(EngineError::invalid(format!(
            "no configured subnet contains IP address {w}"
        )));
    }
    if taken {
        return Err(EngineError::Conflict(format!(
            "Address already in use: {w}"
        )));
    }
    Ok(w)
}

pub fn allocate_v6(p: &V6Pool, used: &[Ipv6Addr], want: Option<Ipv6Addr>) -> Result<Ipv6Addr> {
    let taken =
        |c: Ipv6Addr| c == p.net || c == p.gateway || p.aux.contains(&c) || used.contains(&c);
    if let Some(w) = want {
        return wanted(w, mask6(w, p.prefix) == p.net, taken(w));
    }
    let start = u128::from(p.range.0);
    let size = if p.range.1 == 0 {
        u128::MAX
    } else {
        (1u128 << (128 - p.range.1)) - 1
    };
    // A bounded walk: pools are huge, the addresses in use are few.
    for i in 0..=size.min(1 << 20) {
        let Some(c) = start.checked_add(i).map(Ipv6Addr::from) else {
            break;
        };
        if !taken(c) {
            return Ok(c);
        }
    }
    Err(EngineError::Internal(
        "no available IPv6 addresses on the network".into(),
    ))
}

fn family(a: IpAddr) -> &'static str {
    if a.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn prefix_contains(net: (IpAddr, u8), a: IpAddr) -> bool {
    a.is_ipv4() == net.0.is_ipv4() && mask_ip(a, net.1) == mask_ip(net.0, net.1)
}

/// dockerd's `ValidateIPAM` (API 1.44): every pool's subnet, ip-range, gateway and auxiliary
/// addresses, with its wording; IPv6 pools are only checked when IPv6 is enabled.
pub fn validate_ipam(ipam: &Ipam, enable_ipv6: bool) -> Result<()> {
    let mut errs: Vec<String> = Vec::new();
    for c in &ipam.config {
        let Ok(subnet) = parse_prefix(&c.subnet) else {
            errs.push(format!(
                "invalid subnet {}: invalid CIDR block notation",
                c.subnet
            ));
            continue;
        };
        let fam = family(subnet.0);
        if subnet.0.is_ipv6() && !enable_ipv6 {
            continue;
        }
        let shown = |p: (IpAddr, u8)| format!("{}/{}", p.0, p.1);
        let masked = (mask_ip(subnet.0, subnet.1), subnet.1);
        if masked != subnet {
            errs.push(format!(
                "invalid subnet {}: it should be {}",
                shown(subnet),
                shown(masked)
            ));
        }
        if !c.ip_range.is_empty() {
            match parse_prefix(&c.ip_range) {
                Err(_) => errs.push(format!(
                    "invalid ip-range {}: invalid CIDR block notation",
                    c.ip_range
                )),
                Ok(r) if r.0.is_ipv4() != subnet.0.is_ipv4() => errs.push(format!(
                    "invalid ip-range {}: parent subnet is an {fam} block",
                    c.ip_range
                )),
                Ok(r) => {
                    if r.1 < subnet.1 {
                        errs.push(format!(
                            "invalid ip-range {}: CIDR block is bigger than its parent subnet {}",
                            c.ip_range,
                            shown(subnet)
                        ));
                    }
                    let rm = (mask_ip(r.0, r.1), r.1);
                    if rm != r {
                        errs.push(format!(
                            "invalid ip-range {}: it should be {}",
                            shown(r),
                            shown(rm)
                        ));
                    }
                    let p = r.1.min(subnet.1);
                    if mask_ip(r.0, p) != mask_ip(subnet.0, p) {
                        errs.push(format!(
                            "invalid ip-range {}: parent subnet {} doesn't contain ip-range",
                            c.ip_range,
                            shown(subnet)
                        ));
                    }
                }
            }
        }
        let address = |a: &str| -> Option<String> {
            if a.is_empty() {
                return None;
            }
            let Ok(ip) = a.parse::<IpAddr>() else {
                return Some("invalid address".into());
            };
            if ip.is_ipv4() != subnet.0.is_ipv4() {
                return Some(format!("parent subnet is an {fam} block"));
            }
            if !prefix_contains(subnet, ip) {
                return Some(format!(
                    "parent subnet {} doesn't contain this address",
                    shown(subnet)
                ));
            }
            None
        };
        if let Some(e) = address(&c.gateway) {
            errs.push(format!("invalid gateway {}: {e}", c.gateway));
        }
        for (name, a) in &c.aux {
            if let Some(e) = address(a) {
                errs.push(format!("invalid auxiliary address {name}: {e}"));
            }
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(EngineError::invalid(format!(
            "invalid network config:\n{}",
            errs[0]
        ))),
        _ => Err(EngineError::invalid(format!(
            "invalid network config:\n* {}",
            errs.join("\n* ")
        ))),
    }
}

/// Parse a subnet `a.b.c.d/n` as dockerd validates an IPAM config: the address must be the
/// network's own address.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || {
        EngineError::invalid(format!(
            "invalid network config:\ninvalid subnet {s}: invalid CIDR block notation"
        ))
    };
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let p: u8 = p.parse().map_err(|_| bad())?;
    if p > 32 {
        return Err(bad());
    }
    if !(8..=30).contains(&p) {
        return Err(EngineError::invalid(format!(
            "invalid pool request: prefix length /{p} of {s} is out of range"
        )));
    }
    let net = mask(a, p);
    if net != a {
        return Err(EngineError::invalid(format!(
            "invalid network config:\ninvalid subnet {s}: it should be {net}/{p}"
        )));
    }
    Ok((net, p))
}

pub fn mask(a: Ipv4Addr, p: u8) -> Ipv4Addr {
    let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    Ipv4Addr::from(u32::from(a) & m)
}

pub fn overlaps(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    let p = a.1.min(b.1);
    mask(a.0, p) == mask(b.0, p)
}

fn nth(net: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net) + n)
}

type IsolationJob = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

pub struct NetworkService {
    pub store: Store,
    pub events: Arc<Events>,
    /// Short hash of the data root: keeps device names of parallel engines apart.
    pub tag: String,
    pub default_root: bool,
    dns: Mutex<HashMap<String, dns::Server>>,
    /// Per bridge, the job that makes its isolation rules (after the bridge's own rules):
    /// made once per bring-up; awaited by every later bring-up, so no container starts
    /// before it is done.
    isolated: Mutex<HashMap<String, IsolationJob>>,
    pub names: Arc<dns::Table>,
    pub proxies: proxy::Proxies,
    /// Published ports' kernel path for the host's own connections.
    pub nat: nat::PortNat,
    /// VM mode: published ports announced to the host (docs/VM.md).
    pub announcer: announce::Announcer,
}

impl NetworkService {
    pub async fn open(
        store: Store,
        events: Arc<Events>,
        data_root: &std::path::Path,
        port_announce: Option<std::path::PathBuf>,
    ) -> Result<Arc<Self>> {
        let h = crate::util::sha256_digest(data_root.display().to_string().as_bytes());
        let svc = Arc::new(Self {
            store,
            events,
            tag: crate::util::digest_hex(&h)[..8].to_string(),
            default_root: data_root == std::path::Path::new("/var/lib/berth"),
            dns: Mutex::new(HashMap::new()),
            isolated: Mutex::new(Default::default()),
            names: Arc::new(dns::Table::default()),
            proxies: Default::default(),
            nat: nat::PortNat::new(
                &crate::util::digest_hex(&h)[..8],
                data_root == std::path::Path::new("/var/lib/berth"),
            ),
            announcer: announce::Announcer::new(port_announce),
        });
        {
            let _lock = link::host_lock().await?;
            svc.ensure_defaults().await?;
        }
        svc.adopt().await;
        // Empty this engine's port chain before any port comes back (off the start-up path:
        // the first container with ports waits for it).
        let s = svc.clone();
        tokio::spawn(async move { s.nat.init().await });
        Ok(svc)
    }

    async fn ensure_defaults(&self) -> Result<()> {
        for (name, driver) in [("host", "host"), ("none", "null")] {
            if self.get_by_name(name).await?.is_none() {
                self.insert(
                    name,
                    driver,
                    None,
                    None,
                    None,
                    false,
                    HashMap::new(),
                    HashMap::new(),
                    &Ipam::default(),
                    false,
                )
                .await?;
            }
        }
        if self.get_by_name("bridge").await?.is_none() {
            let (subnet, prefix) = self.default_subnet().await;
            let bridge = if self.default_root {
                "berth0".to_string()
            } else {
                format!("bb{}", self.tag)
            };
            let mut opts = HashMap::new();
            opts.insert(
                "com.docker.network.bridge.default_bridge".to_string(),
                "true".to_string(),
            );
            opts.insert("com.docker.network.bridge.name".to_string(), bridge.clone());
            self.insert(
                "bridge",
                "bridge",
                Some(format!("{subnet}/{prefix}")),
                Some(nth(subnet, 1).to_string()),
                Some(bridge),
                false,
                HashMap::new(),
                opts,
                &Ipam::default(),
                false,
            )
            .await?;
        }
        Ok(())
    }

    /// On start: every bridge network gets its device, rules and DNS server back (a clean
    /// shutdown removed the idle ones; a crash may have left them, which is adopted).
    async fn adopt(&self) {
        let Ok(all) = self.list().await else { return };
        let _lock = link::host_lock().await;
        let mut jobs = Vec::new();
        for n in all.iter().filter(|n| n.is_bridge()) {
            match self.bring_up_with(n, true).await {
                Ok(j) => jobs.extend(j),
                Err(e) => {
                    tracing::warn!(network = %n.name, error = %e, "could not bring the network up")
                }
            }
        }
        // The bridges' rules are written in the background at start-up (link.rs), each
        // inserted first in FORWARD: once all are in, the isolation jump goes back on top.
        let v6 = all.iter().any(|n| n.v6().is_some());
        tokio::spawn(async move {
            futures::future::join_all(jobs).await;
            isolation::ensure_first(v6).await;
        });
    }

    /// Docker's 172.17.0.0/16 for the default data root; a /20 derived from the data root
    /// otherwise, so engines side by side (tests) do not collide.
    async fn default_subnet(&self) -> (Ipv4Addr, u8) {
        let routes = link::host_routes().await;
        let free = |c: (Ipv4Addr, u8)| !routes.iter().any(|r| r.1 > 0 && overlaps(*r, c));
        if self.default_root {
            for b in 17..32u8 {
                let c = (Ipv4Addr::new(172, b, 0, 0), 16);
                if free(c) {
                    return c;
                }
            }
        }
        let seed = u32::from_str_radix(&self.tag[..6], 16).unwrap_or(0);
        for i in 0..4096u32 {
            let slot = (seed + i) % 4096;
            let c = (
                Ipv4Addr::new(10, 64 + (slot / 16) as u8 % 64, ((slot % 16) * 16) as u8, 0),
                20,
            );
            if free(c) {
                return c;
            }
        }
        (Ipv4Addr::new(172, 17, 0, 0), 16)
    }

    /// A free subnet for a new user network, from Docker's pools.
    async fn pick_subnet(&self) -> Result<(Ipv4Addr, u8)> {
        let routes = link::host_routes().await;
        let mine: Vec<(Ipv4Addr, u8)> =
            self.list().await?.iter().filter_map(|n| n.cidr()).collect();
        let taken = |c: (Ipv4Addr, u8)| {
            routes.iter().any(|r| r.1 > 0 && overlaps(*r, c))
                || mine.iter().any(|m| overlaps(*m, c))
        };
        let candidates = (18..32u8)
            .map(|b| (Ipv4Addr::new(172, b, 0, 0), 16))
            .chain((0..16u8).map(|i| (Ipv4Addr::new(192, 168, i * 16, 0), 20)));
        for c in candidates {
            if !taken(c) {
                return Ok(c);
            }
        }
        Err(EngineError::Forbidden(
            "could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network".into(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        name: &str,
        driver: &str,
        subnet: Option<String>,
        gateway: Option<String>,
        bridge: Option<String>,
        internal: bool,
        labels: HashMap<String, String>,
        options: HashMap<String, String>,
        ipam: &Ipam,
        enable_ipv6: bool,
    ) -> Result<NetworkRecord> {
        let rec = NetworkRecord {
            id: crate::util::random_id(),
            name: name.to_string(),
            driver: driver.to_string(),
            subnet,
            gateway,
            bridge,
            internal: internal as i64,
            labels: serde_json::to_string(&labels)?,
            options: serde_json::to_string(&options)?,
            created: crate::util::rfc3339_nano(chrono::Utc::now()),
            ipam: serde_json::to_string(ipam)?,
            enable_ipv6: enable_ipv6 as i64,
        };
        sqlx::query("INSERT INTO networks (id, name, driver, subnet, gateway, bridge, internal, labels, options, created, ipam, enable_ipv6) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
            .bind(&rec.id).bind(&rec.name).bind(&rec.driver).bind(&rec.subnet).bind(&rec.gateway)
            .bind(&rec.bridge).bind(rec.internal).bind(&rec.labels).bind(&rec.options).bind(&rec.created)
            .bind(&rec.ipam).bind(rec.enable_ipv6)
            .execute(&self.store.pool)
            .await?;
        Ok(rec)
    }

    pub async fn list(&self) -> Result<Vec<NetworkRecord>> {
        Ok(sqlx::query_as("SELECT * FROM networks ORDER BY created")
            .fetch_all(&self.store.pool)
            .await?)
    }

    pub async fn get_by_name(&self, name: &str) -> Result<Option<NetworkRecord>> {
        Ok(
            sqlx::query_as("SELECT * FROM networks WHERE name = ? ORDER BY created")
                .bind(name)
                .fetch_optional(&self.store.pool)
                .await?,
        )
    }

    /// By full id, name, or unique id prefix (dockerd's `FindNetwork`: a name two networks
    /// share is ambiguous).
    pub async fn get(&self, key: &str) -> Result<NetworkRecord> {
        let all = self.list().await?;
        if let Some(n) = all.iter().find(|n| n.id == key) {
            return Ok(n.clone());
        }
        let by_name: Vec<&NetworkRecord> = all.iter().filter(|n| n.name == key).collect();
        match by_name.len() {
            0 => {}
            1 => return Ok(by_name[0].clone()),
            k => {
                return Err(EngineError::invalid(format!(
                    "network {key} is ambiguous ({k} matches found on name)"
                )))
            }
        }
        let m: Vec<&NetworkRecord> = all.iter().filter(|n| n.id.starts_with(key)).collect();
        match m.len() {
            1 => Ok(m[0].clone()),
            0 => Err(EngineError::NotFound(format!("network {key} not found"))),
            _ => Err(EngineError::NotFound(format!(
                "network {key} is ambiguous ({} matches found based on ID prefix)",
                m.len()
            ))),
        }
    }

    pub fn emit(&self, action: &str, n: &NetworkRecord, extra: &[(&str, String)]) {
        let mut a = HashMap::new();
        a.insert("name".to_string(), n.name.clone());
        a.insert("type".to_string(), n.driver.clone());
        for (k, v) in extra {
            a.insert(k.to_string(), v.clone());
        }
        self.events.emit("network", action, &n.id, a);
    }

    /// Create a bridge network. `ipam` is the request's `IPAM` (checked as dockerd does); its
    /// IPv4 pool, if any, gives the subnet, gateway, range for dynamic addresses and reserved
    /// addresses; without one the engine picks a free subnet.
    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        name: &str,
        driver: Option<&str>,
        ipam: Ipam,
        internal: bool,
        labels: HashMap<String, String>,
        options: HashMap<String, String>,
        enable_ipv6: bool,
        check_duplicate: bool,
    ) -> Result<NetworkRecord> {
        if name.is_empty() {
            return Err(EngineError::invalid("network name is required"));
        }
        let driver = driver.filter(|d| !d.is_empty()).unwrap_or("bridge");
        if driver != "bridge" {
            return Err(EngineError::NotFound(format!(
                "plugin \"{driver}\" not found"
            )));
        }
        if !matches!(ipam.driver.as_str(), "" | "default") {
            return Err(EngineError::NotFound(format!(
                "plugin \"{}\" not found",
                ipam.driver
            )));
        }
        if matches!(name, "host" | "none" | "bridge") {
            return Err(EngineError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let v4: Vec<&IpamPool> = ipam
            .config
            .iter()
            .filter(|c| parse_prefix(&c.subnet).is_ok_and(|p| p.0.is_ipv4()))
            .collect();
        if v4.len() > 1 {
            return Err(EngineError::invalid(
                "more than one IPv4 pool on a network is not supported",
            ));
        }
        let pool = v4.first().map(|c| (*c).clone());
        if enable_ipv6 {
            ipv6::host_check()?;
            if !ipam
                .config
                .iter()
                .any(|c| parse_prefix(&c.subnet).is_ok_and(|p| p.0.is_ipv6()))
            {
                // dockerd before 27 has no default IPv6 pools either.
                return Err(EngineError::Forbidden(
                    "could not find an available, non-overlapping IPv6 address pool among the defaults to assign to the network".into(),
                ));
            }
        }
        // Validate before taking the host-wide lock; choose and bring up under it.
        let wanted = pool.as_ref().map(|c| parse_cidr(&c.subnet)).transpose()?;
        let subnet = pool.as_ref().map(|c| c.subnet.clone());
        let gateway = pool.as_ref().map(|c| c.gateway.clone());
        let _lock = link::host_lock().await?;
        // Checked under the lock: two creates of one name cannot both pass.
        if check_duplicate && self.get_by_name(name).await?.is_some() {
            return Err(EngineError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        let (net, prefix) = match wanted {
            Some(c) => {
                let s = subnet.clone().unwrap_or_default();
                let routes = link::host_routes().await;
                if routes.iter().any(|r| r.1 > 0 && overlaps(*r, c)) {
                    return Err(EngineError::Forbidden(format!(
                        "invalid pool request: Pool overlaps with other one on this address space ({s} is routed on this host)"
                    )));
                }
                for n in self.list().await? {
                    if n.cidr().is_some_and(|o| overlaps(o, c)) {
                        return Err(EngineError::Forbidden(
                            "invalid pool request: Pool overlaps with other one on this address space"
                                .into(),
                        ));
                    }
                }
                c
            }
            None => self.pick_subnet().await?,
        };
        if enable_ipv6 {
            let mine = ipam
                .config
                .iter()
                .find_map(|c| match parse_prefix(&c.subnet) {
                    Ok((IpAddr::V6(a), p)) => Some((a, p)),
                    _ => None,
                });
            if let Some((a, p)) = mine {
                for n in self.list().await? {
                    if let Some(o) = n.v6() {
                        let q = p.min(o.prefix);
                        if mask6(a, q) == mask6(o.net, q) {
                            return Err(EngineError::Forbidden(
                                "invalid pool request: Pool overlaps with other one on this address space"
                                    .into(),
                            ));
                        }
                    }
                }
            }
        }
        let gw = match gateway.as_deref().filter(|g| !g.is_empty()) {
            Some(g) => {
                let ip: Ipv4Addr = g
                    .parse()
                    .map_err(|_| EngineError::invalid(format!("invalid gateway address {g}")))?;
                if mask(ip, prefix) != net {
                    return Err(EngineError::Forbidden(format!(
                        "no matching subnet for gateway {g}"
                    )));
                }
                ip
            }
            None => match pool.as_ref().map(|p| p.ip_range.as_str()) {
                // As libnetwork: the gateway is the first address of the pool's range.
                Some(r) => match parse_prefix(r) {
                    Ok((IpAddr::V4(rn), _)) if rn != net => rn,
                    _ => nth(net, 1),
                },
                _ => nth(net, 1),
            },
        };
        let id_hint = crate::util::random_id();
        let bridge = options
            .get("com.docker.network.bridge.name")
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &id_hint[..12]));
        let mut rec = self
            .insert(
                name,
                driver,
                Some(format!("{net}/{prefix}")),
                Some(gw.to_string()),
                Some(bridge),
                internal,
                labels,
                options,
                &ipam,
                enable_ipv6,
            )
            .await?;
        // The device name follows the id, as Docker names it.
        if !rec.options().contains_key("com.docker.network.bridge.name") {
            let b = format!("br-{}", &rec.id[..12]);
            sqlx::query("UPDATE networks SET bridge = ? WHERE id = ?")
                .bind(&b)
                .bind(&rec.id)
                .execute(&self.store.pool)
                .await?;
            rec.bridge = Some(b);
        }
        if let Err(e) = self.bring_up(&rec).await {
            let _ = sqlx::query("DELETE FROM networks WHERE id = ?")
                .bind(&rec.id)
                .execute(&self.store.pool)
                .await;
            return Err(e);
        }
        self.emit("create", &rec, &[]);
        Ok(rec)
    }

    /// Create the bridge device, its IPv6 address, NAT, isolation from the other networks and
    /// (user networks) the DNS server. Idempotent; returns once the rules are in.
    pub async fn bring_up(&self, n: &NetworkRecord) -> Result<()> {
        if let Some(job) = self.bring_up_with(n, false).await? {
            job.await;
        }
        Ok(())
    }

    /// [`Self::bring_up`]; with `defer` (start-up) the isolation rules are left to a
    /// background job, returned to be awaited.
    async fn bring_up_with(&self, n: &NetworkRecord, defer: bool) -> Result<Option<IsolationJob>> {
        use futures::FutureExt;
        let (Some(br), Some((net, prefix)), Some(gw)) = (n.bridge.clone(), n.cidr(), n.gw()) else {
            return Ok(None);
        };
        link::ensure_bridge(&br, gw, prefix).await?;
        if let Some(p) = n.v6() {
            ipv6::ensure_bridge(&br, p.gateway, p.prefix).await?;
        }
        link::ensure_bridge_rules(&format!("{net}/{prefix}"), &br, n.internal != 0).await;
        let job = {
            let mut m = self.isolated.lock().unwrap_or_else(|e| e.into_inner());
            m.entry(br.clone())
                .or_insert_with(|| {
                    let (b, internal, v6) = (br.clone(), n.internal != 0, n.v6().is_some());
                    async move {
                        // After the bridge's own FORWARD rules, which go in first.
                        link::rules_ready(&b).await;
                        isolation::ensure(&b, internal, v6).await;
                    }
                    .boxed()
                    .shared()
                })
                .clone()
        };
        if defer {
            tokio::spawn(job.clone());
        }
        if !n.is_default_bridge() {
            let mut d = self.dns.lock().unwrap_or_else(|e| e.into_inner());
            if !d.contains_key(&n.id) {
                match dns::Server::start(gw, n.id.clone(), self.names.clone()) {
                    Ok(s) => {
                        d.insert(n.id.clone(), s);
                    }
                    Err(e) => {
                        tracing::warn!(network = %n.name, error = %e, "embedded DNS unavailable")
                    }
                }
            }
        }
        Ok(Some(job))
    }

    /// Remove the bridge device, NAT rule and DNS server (the record stays).
    pub async fn bring_down(&self, n: &NetworkRecord) {
        self.dns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n.id);
        if let (Some(br), Some((net, prefix))) = (n.bridge.clone(), n.cidr()) {
            let job = self
                .isolated
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&br);
            if let Some(j) = job {
                // Not while its rules may still be going in.
                j.await;
            }
            link::remove_bridge_rules(&format!("{net}/{prefix}"), &br).await;
            isolation::remove(&br, n.enable_ipv6 != 0).await;
            link::delete_link(&br).await;
        }
    }

    pub async fn remove(&self, n: &NetworkRecord, in_use: bool) -> Result<()> {
        if matches!(n.name.as_str(), "bridge" | "host" | "none") {
            return Err(EngineError::Forbidden(format!(
                "{} is a pre-defined network and cannot be removed",
                n.name
            )));
        }
        if in_use {
            return Err(EngineError::Conflict(format!(
                "error while removing network: network {} id {} has active endpoints",
                n.name, n.id
            )));
        }
        {
            // Rules in chains shared by every engine on the host are removed under the lock.
            let _lock = link::host_lock().await?;
            self.bring_down(n).await;
        }
        sqlx::query("DELETE FROM networks WHERE id = ?")
            .bind(&n.id)
            .execute(&self.store.pool)
            .await?;
        self.emit("destroy", n, &[]);
        Ok(())
    }

    /// The first free address of `n` given the addresses in use: from the pool's `IPRange`
    /// when it has one, never the subnet's own or broadcast address, the gateway or an auxiliary
    /// address. A requested address may be anywhere in the subnet (as with dockerd, outside the
    /// range too).
    pub fn allocate(
        &self,
        n: &NetworkRecord,
        used: &[Ipv4Addr],
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        allocate_in(n, used, want)
    }

    pub fn to_json(&self, n: &NetworkRecord, containers: Value) -> Value {
        // As dockerd: the pools as the user gave them; the subnet and gateway the engine chose
        // when no IPv4 pool was given.
        let ipam = n.ipam();
        let mut pools: Vec<&IpamPool> = ipam
            .config
            .iter()
            .filter(|c| !c.subnet.is_empty())
            .collect();
        pools.sort_by_key(|c| !parse_prefix(&c.subnet).is_ok_and(|p| p.0.is_ipv4()));
        let mut ipam_config: Vec<Value> = pools.into_iter().map(|c| json!(c)).collect();
        let has_v4 = ipam
            .config
            .iter()
            .any(|c| parse_prefix(&c.subnet).is_ok_and(|p| p.0.is_ipv4()));
        if !has_v4 {
            if let (Some(s), Some(g)) = (&n.subnet, &n.gateway) {
                ipam_config.insert(0, json!({"Subnet": s, "Gateway": g}));
            }
        }
        json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv6": n.enable_ipv6 != 0,
            "IPAM": {
                "Driver": if ipam.driver.is_empty() { "default" } else { ipam.driver.as_str() },
                "Options": ipam.options,
                "Config": ipam_config,
            },
            "Internal": n.internal != 0,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": n.options(),
            "Labels": n.labels(),
        })
    }

    /// On engine stop: bridges without running endpoints are removed (made again on demand).
    pub async fn shutdown(&self, busy: &[String]) {
        self.nat.shutdown().await;
        if let Ok(all) = self.list().await {
            let _lock = link::host_lock().await;
            for n in all {
                if n.is_bridge() && !busy.contains(&n.id) {
                    self.bring_down(&n).await;
                }
            }
        }
    }
}

/// [`NetworkService::allocate`].
fn allocate_in(n: &NetworkRecord, used: &[Ipv4Addr], want: Option<Ipv4Addr>) -> Result<Ipv4Addr> {
    let (net, prefix) = n
        .cidr()
        .ok_or_else(|| EngineError::invalid(format!("network {} has no subnet", n.name)))?;
    let gw = n.gw();
    let aux = n.aux_addresses();
    let size = 1u32 << (32 - prefix);
    let broadcast = nth(net, size - 1);
    let taken = |c: Ipv4Addr| {
        c == net || c == broadcast || Some(c) == gw || aux.contains(&c) || used.contains(&c)
    };
    if let Some(w) = want {
        return wanted(w, mask(w, prefix) == net, taken(w));
    }
    let (start, end) = match n.ip_range() {
        Some((r, p)) if mask(r, prefix) == net && p >= prefix => {
            (u32::from(r), u32::from(r) + ((1u32 << (32 - p)) - 1))
        }
        _ => (u32::from(net), u32::from(broadcast)),
    };
    for i in start..=end {
        let c = Ipv4Addr::from(i);
        if !taken(c) {
            return Ok(c);
        }
    }
    Err(EngineError::Internal(format!(
        "no available IPv4 addresses on network {}",
        n.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, range: &str, gw: &str, aux: &[(&str, &str)]) -> Ipam {
        Ipam {
            config: vec![IpamPool {
                subnet: subnet.into(),
                ip_range: range.into(),
                gateway: gw.into(),
                aux: aux
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }],
            ..Default::default()
        }
    }

    fn err(ipam: &Ipam, v6: bool) -> String {
        validate_ipam(ipam, v6).unwrap_err().to_string()
    }

    #[test]
    fn validates_pools_with_dockerd_wording() {
        assert!(validate_ipam(
            &pool(
                "172.28.0.0/16",
                "172.28.5.0/24",
                "172.28.5.254",
                &[("a", "172.28.1.5")]
            ),
            false
        )
        .is_ok());
        assert_eq!(
            err(&pool("300.1.1.0/24", "", "", &[]), false),
            "invalid network config:\ninvalid subnet 300.1.1.0/24: invalid CIDR block notation"
        );
        assert_eq!(
            err(&pool("10.1.1.5/24", "", "", &[]), false),
            "invalid network config:\ninvalid subnet 10.1.1.5/24: it should be 10.1.1.0/24"
        );
        assert_eq!(
            err(&pool("10.1.1.0/24", "10.1.2.0/24", "2001::1", &[]), false),
            "invalid network config:\n* invalid ip-range 10.1.2.0/24: parent subnet 10.1.1.0/24 doesn't contain ip-range\n* invalid gateway 2001::1: parent subnet is an IPv4 block"
        );
        // IPv6 pools only matter for IPv6 networks.
        assert!(validate_ipam(&pool("2001:389::1/64", "", "", &[]), false).is_ok());
        assert_eq!(
            err(&pool("2001:389::1/64", "", "", &[]), true),
            "invalid network config:\ninvalid subnet 2001:389::1/64: it should be 2001:389::/64"
        );
        // JSON as docker-py sends it (nulls for what is not given).
        let v: Ipam = serde_json::from_str(
            r#"{"Driver":"default","Options":null,"Config":[{"Subnet":"10.1.0.0/16","IPRange":null,"Gateway":null,"AuxiliaryAddresses":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&v.config[0]).unwrap(),
            json!({"Subnet": "10.1.0.0/16"})
        );
    }

    #[test]
    fn allocates_from_the_range_around_reserved_addresses() {
        let ipam = pool(
            "10.1.0.0/16",
            "10.1.5.0/30",
            "10.1.5.254",
            &[("a", "10.1.5.1")],
        );
        let n = NetworkRecord {
            id: "x".into(),
            name: "n".into(),
            driver: "bridge".into(),
            subnet: Some("10.1.0.0/16".into()),
            gateway: Some("10.1.5.254".into()),
            bridge: None,
            internal: 0,
            labels: "{}".into(),
            options: "{}".into(),
            created: String::new(),
            ipam: serde_json::to_string(&ipam).unwrap(),
            enable_ipv6: 0,
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(n.ip_range(), Some((ip("10.1.5.0"), 30)));
        let pick = |used: &[Ipv4Addr], want: Option<Ipv4Addr>| allocate_in(&n, used, want);
        assert_eq!(pick(&[], None).unwrap(), ip("10.1.5.0"));
        assert_eq!(pick(&[ip("10.1.5.0")], None).unwrap(), ip("10.1.5.2"));
        assert!(pick(&[ip("10.1.5.0"), ip("10.1.5.2"), ip("10.1.5.3")], None).is_err());
        assert_eq!(pick(&[], Some(ip("10.1.9.9"))).unwrap(), ip("10.1.9.9"));
        assert!(pick(&[], Some(ip("10.1.5.1"))).is_err());
        assert!(pick(&[], Some(ip("10.1.5.254"))).is_err());
        assert!(pick(&[], Some(ip("10.2.0.1"))).is_err());
    }
}
