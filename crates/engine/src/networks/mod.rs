//! Networks: the default `bridge`, `host` and `none`, and user-defined bridge networks with an
//! embedded DNS server. Endpoints (veth + address in the container's netns) are made by the
//! container service through `attach`/`detach`; published ports go through `proxy`.

pub mod announce;
pub mod dns;
pub mod link;
pub mod proxy;

use std::collections::HashMap;
use std::net::Ipv4Addr;
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

pub struct NetworkService {
    pub store: Store,
    pub events: Arc<Events>,
    /// Short hash of the data root: keeps device names of parallel engines apart.
    pub tag: String,
    pub default_root: bool,
    dns: Mutex<HashMap<String, dns::Server>>,
    pub names: Arc<dns::Table>,
    pub proxies: proxy::Proxies,
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
            names: Arc::new(dns::Table::default()),
            proxies: Default::default(),
            announcer: announce::Announcer::new(port_announce),
        });
        {
            let _lock = link::host_lock().await?;
            svc.ensure_defaults().await?;
        }
        svc.adopt().await;
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
        for n in all.iter().filter(|n| n.is_bridge()) {
            if let Err(e) = self.bring_up(n).await {
                tracing::warn!(network = %n.name, error = %e, "could not bring the network up");
            }
        }
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
        };
        sqlx::query("INSERT INTO networks (id, name, driver, subnet, gateway, bridge, internal, labels, options, created) VALUES (?,?,?,?,?,?,?,?,?,?)")
            .bind(&rec.id).bind(&rec.name).bind(&rec.driver).bind(&rec.subnet).bind(&rec.gateway)
            .bind(&rec.bridge).bind(rec.internal).bind(&rec.labels).bind(&rec.options).bind(&rec.created)
            .execute(&self.store.pool)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    EngineError::Conflict(format!("network with name {name} already exists"))
                }
                e => e.into(),
            })?;
        Ok(rec)
    }

    pub async fn list(&self) -> Result<Vec<NetworkRecord>> {
        Ok(sqlx::query_as("SELECT * FROM networks ORDER BY created")
            .fetch_all(&self.store.pool)
            .await?)
    }

    pub async fn get_by_name(&self, name: &str) -> Result<Option<NetworkRecord>> {
        Ok(sqlx::query_as("SELECT * FROM networks WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.store.pool)
            .await?)
    }

    /// By full id, name, or unique id prefix.
    pub async fn get(&self, key: &str) -> Result<NetworkRecord> {
        let all = self.list().await?;
        if let Some(n) = all.iter().find(|n| n.id == key || n.name == key) {
            return Ok(n.clone());
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

    #[allow(clippy::too_many_arguments)]
    pub async fn create(
        &self,
        name: &str,
        driver: Option<&str>,
        subnet: Option<&str>,
        gateway: Option<&str>,
        internal: bool,
        labels: HashMap<String, String>,
        options: HashMap<String, String>,
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
        if matches!(name, "host" | "none" | "bridge") || self.get_by_name(name).await?.is_some() {
            return Err(EngineError::Conflict(format!(
                "network with name {name} already exists"
            )));
        }
        // Validate before taking the host-wide lock; choose and bring up under it.
        let wanted = subnet
            .filter(|s| !s.is_empty())
            .map(parse_cidr)
            .transpose()?;
        let _lock = link::host_lock().await?;
        let (net, prefix) = match wanted {
            Some(c) => {
                let s = subnet.unwrap_or_default();
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
        let gw = match gateway.filter(|g| !g.is_empty()) {
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
            None => nth(net, 1),
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

    /// Create the bridge device, NAT and (user networks) the DNS server. Idempotent.
    pub async fn bring_up(&self, n: &NetworkRecord) -> Result<()> {
        let (Some(br), Some((net, prefix)), Some(gw)) = (n.bridge.clone(), n.cidr(), n.gw()) else {
            return Ok(());
        };
        link::ensure_bridge(&br, gw, prefix).await?;
        link::ensure_bridge_rules(&format!("{net}/{prefix}"), &br, n.internal != 0).await;
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
        Ok(())
    }

    /// Remove the bridge device, NAT rule and DNS server (the record stays).
    pub async fn bring_down(&self, n: &NetworkRecord) {
        self.dns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&n.id);
        if let (Some(br), Some((net, prefix))) = (n.bridge.clone(), n.cidr()) {
            link::remove_bridge_rules(&format!("{net}/{prefix}"), &br).await;
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
        self.bring_down(n).await;
        sqlx::query("DELETE FROM networks WHERE id = ?")
            .bind(&n.id)
            .execute(&self.store.pool)
            .await?;
        self.emit("destroy", n, &[]);
        Ok(())
    }

    /// The first free address of `n` given the addresses in use.
    pub fn allocate(
        &self,
        n: &NetworkRecord,
        used: &[Ipv4Addr],
        want: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr> {
        let (net, prefix) = n
            .cidr()
            .ok_or_else(|| EngineError::invalid(format!("network {} has no subnet", n.name)))?;
        let gw = n.gw();
        if let Some(w) = want {
            if mask(w, prefix) != net {
                return Err(EngineError::invalid(format!(
                    "no configured subnet contains IP address {w}"
                )));
            }
            if used.contains(&w) || Some(w) == gw {
                return Err(EngineError::Conflict(format!(
                    "Address already in use: {w}"
                )));
            }
            return Ok(w);
        }
        let size = 1u32 << (32 - prefix);
        for i in 2..size - 1 {
            let c = nth(net, i);
            if Some(c) != gw && !used.contains(&c) {
                return Ok(c);
            }
        }
        Err(EngineError::Internal(format!(
            "no available IPv4 addresses on network {}",
            n.name
        )))
    }

    pub fn to_json(&self, n: &NetworkRecord, containers: Value) -> Value {
        let ipam_config = match (&n.subnet, &n.gateway) {
            (Some(s), Some(g)) => json!([{"Subnet": s, "Gateway": g}]),
            _ => json!([]),
        };
        json!({
            "Name": n.name,
            "Id": n.id,
            "Created": n.created,
            "Scope": "local",
            "Driver": n.driver,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": null, "Config": ipam_config},
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
        if let Ok(all) = self.list().await {
            for n in all {
                if n.is_bridge() && !busy.contains(&n.id) {
                    self.bring_down(&n).await;
                }
            }
        }
    }
}
