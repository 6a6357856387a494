//! How a container joins networks: a named network namespace with one veth endpoint per
//! network (address from the network's subnet, and its IPv6 pool when enabled), published
//! ports through the proxy, names and link aliases in the network's DNS; `host` shares the
//! host's namespace; `container:<id>` joins another's.
//!
//! Which networks a container joins: its NetworkMode's network and the create request's
//! `EndpointsConfig` until a `network connect`/`disconnect` changes that; from then on the
//! ordered list under [`JOINED`] in the record's `networking` (so disconnecting the mode's own
//! network leaves NetworkMode alone, as with dockerd). Each network's endpoint configuration
//! (IPAMConfig, Aliases, Links, MacAddress, DriverOpts) stays in `EndpointsConfig` by name.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde_json::{json, Value};

use super::fs::NetConfig;
use super::spec::Namespace;
use super::{Container, ContainerService, Record};
use crate::error::{EngineError, Result};
use crate::networks::proxy::{bindings_from, Binding};
use crate::networks::{allocate_v6, ipv6, link, NetworkRecord};

/// Key of the ordered list of joined networks in a record's `networking`.
const JOINED: &str = "BerthJoined";

fn netns_name(id: &str) -> String {
    format!("berth-{}", &id[..12])
}

fn veth_name(cid: &str, nid: &str) -> String {
    let h = crate::util::sha256_digest(format!("{cid}{nid}").as_bytes());
    format!("vb{}", &crate::util::digest_hex(&h)[..10])
}

fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// A MAC address as Go's `net.ParseMAC` takes a 6-byte one (`:` or `-` separated), written
/// back lower-case with `:`.
fn parse_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A request's value as shown in inspect: null when absent or empty.
fn or_null(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        v => v.clone(),
    }
}

/// The networks a container is attached to, in order: its NetworkMode first, then any other
/// networks from EndpointsConfig (create) and `network connect` — or, once connect or
/// disconnect changed them, the list they left.
fn wanted_networks(r: &Record) -> Vec<String> {
    let mode = r.host_config.network_mode.clone().unwrap_or_default();
    let mut v = Vec::new();
    match mode.as_str() {
        "" | "default" | "bridge" => v.push("bridge".to_string()),
        "host" | "none" => return v,
        m if m.starts_with("container:") => return v,
        m => v.push(m.to_string()),
    }
    if let Some(list) = r.networking.get(JOINED).filter(|l| l.is_array()) {
        return strings(list);
    }
    if let Some(eps) = r
        .networking
        .get("EndpointsConfig")
        .and_then(|e| e.as_object())
    {
        for k in eps.keys() {
            // The CLI names the mode's own network "default".
            let k = if k == "default" {
                v[0].clone()
            } else {
                k.clone()
            };
            if !v.contains(&k) {
                v.push(k);
            }
        }
    }
    v
}

fn endpoint_config<'a>(r: &'a Record, net: &NetworkRecord) -> Option<&'a Value> {
    let eps = r.networking.get("EndpointsConfig")?.as_object()?;
    let primary = matches!(
        r.host_config.network_mode.as_deref(),
        Some(m) if m == net.name || (net.is_default_bridge() && matches!(m, "default" | "bridge"))
    );
    eps.get(&net.name).or_else(|| eps.get(&net.id)).or_else(|| {
        if primary {
            eps.get("default")
        } else {
            None
        }
    })
}

/// dockerd's checks of an endpoint's configuration against its network.
fn validate_endpoint(net: &NetworkRecord, epc: Option<&Value>) -> Result<()> {
    let Some(e) = epc else { return Ok(()) };
    let addr = |k: &str| {
        e["IPAMConfig"][k]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from)
    };
    let (v4, v6) = (addr("IPv4Address"), addr("IPv6Address"));
    if let Some(a) = &v4 {
        if a.parse::<Ipv4Addr>().is_err() {
            return Err(EngineError::invalid(format!("invalid IPv4 address: {a}")));
        }
    }
    if let Some(a) = &v6 {
        if a.parse::<Ipv6Addr>().is_err() {
            return Err(EngineError::invalid(format!("invalid IPv6 address: {a}")));
        }
    }
    if net.is_default_bridge() && (v4.is_some() || v6.is_some()) {
        return Err(EngineError::invalid(
            "user specified IP address is supported on user defined networks only",
        ));
    }
    let pools = net.ipam().config;
    let has_pool = |v6: bool| {
        pools
            .iter()
            .filter_map(|c| c.subnet.split('/').next()?.parse::<std::net::IpAddr>().ok())
            .any(|a| a.is_ipv6() == v6)
    };
    if (v4.is_some() && !has_pool(false)) || (v6.is_some() && !has_pool(true)) {
        return Err(EngineError::invalid(
            "user specified IP address is supported only when connecting to networks with user configured subnets",
        ));
    }
    if let Some(m) = e["MacAddress"].as_str().filter(|m| !m.is_empty()) {
        if parse_mac(m).is_none() {
            return Err(EngineError::invalid(format!("invalid MAC address: {m}")));
        }
    }
    Ok(())
}

/// An endpoint not made yet: its configuration, no addresses.
fn configured_endpoint(epc: Option<&Value>, net: Option<&NetworkRecord>) -> Value {
    let e = epc.cloned().unwrap_or(Value::Null);
    json!({
        "IPAMConfig": or_null(&e["IPAMConfig"]),
        "Links": or_null(&e["Links"]),
        "Aliases": or_null(&e["Aliases"]),
        "MacAddress": e["MacAddress"].as_str().unwrap_or(""),
        "DriverOpts": or_null(&e["DriverOpts"]),
        "NetworkID": net.map(|n| n.id.clone()).unwrap_or_default(),
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": null,
    })
}

impl ContainerService {
    /// The addresses (IPv4, IPv6) of running containers' endpoints on a network.
    async fn used_addresses(&self, net_id: &str, except: &str) -> (Vec<Ipv4Addr>, Vec<Ipv6Addr>) {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for c in self.all() {
            let r = c.rec.read().await;
            if r.id == except || !r.state.status.is_alive() {
                continue;
            }
            if let Some(nets) = r
                .network_settings
                .get("Networks")
                .and_then(|n| n.as_object())
            {
                for ep in nets.values() {
                    if ep["NetworkID"] == net_id {
                        if let Some(ip) = ep["IPAddress"].as_str().and_then(|s| s.parse().ok()) {
                            v4.push(ip);
                        }
                        if let Some(ip) = ep["GlobalIPv6Address"]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                        {
                            v6.push(ip);
                        }
                    }
                }
            }
        }
        (v4, v6)
    }

    /// Make one endpoint: veth into `ns` as `ifname`, addresses (the default routes through
    /// it when `default_route`), DNS names and link aliases. Returns the endpoint JSON.
    async fn add_endpoint(
        &self,
        r: &Record,
        net: &NetworkRecord,
        ns: &str,
        ifname: &str,
        default_route: bool,
    ) -> Result<Value> {
        validate_endpoint(net, endpoint_config(r, net))?;
        self.networks.bring_up(net).await?;
        let (_, prefix) = net
            .cidr()
            .ok_or_else(|| EngineError::internal("network without subnet"))?;
        let gw = net.gw();
        let epc = endpoint_config(r, net);
        let ipam = epc.map(|e| &e["IPAMConfig"]).unwrap_or(&Value::Null);
        let want = ipam["IPv4Address"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| EngineError::invalid(format!("invalid IPv4 address: {s}")))
            })
            .transpose()?;
        let (used, used6) = self.used_addresses(&net.id, &r.id).await;
        let ip = self.networks.allocate(net, &used, want)?;
        let v6 = match net.v6() {
            Some(p) => {
                let want6 = ipam["IPv6Address"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<Ipv6Addr>()
                            .map_err(|_| EngineError::invalid(format!("invalid IPv6 address: {s}")))
                    })
                    .transpose()?;
                Some((allocate_v6(&p, &used6, want6)?, p))
            }
            None => None,
        };
        let mac = epc
            .and_then(|e| e["MacAddress"].as_str())
            .and_then(parse_mac)
            .unwrap_or_else(|| mac_for(ip));
        let host_if = veth_name(&r.id, &net.id);
        let bridge = net.bridge.clone().unwrap_or_default();
        link::add_endpoint(
            &bridge,
            &host_if,
            ns,
            ifname,
            ip,
            prefix,
            if default_route { gw } else { None },
            &mac,
        )
        .await?;
        if let Some((a, p)) = &v6 {
            let gw6 = default_route.then_some(p.gateway);
            if let Err(e) = ipv6::add_endpoint(ns, ifname, *a, p.prefix, gw6).await {
                link::delete_link(&host_if).await;
                return Err(e);
            }
        }
        let mut aliases: Vec<String> = epc.map(|e| strings(&e["Aliases"])).unwrap_or_default();
        let links: Vec<String> = epc.map(|e| strings(&e["Links"])).unwrap_or_default();
        let mut dns_names = vec![r.name.clone(), r.id[..12].to_string()];
        dns_names.append(&mut aliases.clone());
        if !net.is_default_bridge() {
            self.networks
                .names
                .register(&net.id, &r.id, dns_names.clone(), ip);
            self.networks.names.set_links(&net.id, &r.id, &links);
        }
        aliases.dedup();
        Ok(json!({
            "IPAMConfig": or_null(ipam),
            "Links": if links.is_empty() { Value::Null } else { json!(links) },
            "Aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
            "MacAddress": mac,
            "DriverOpts": epc.map(|e| or_null(&e["DriverOpts"])).unwrap_or(Value::Null),
            "NetworkID": net.id,
            "EndpointID": crate::util::random_id(),
            "Gateway": gw.map(|g| g.to_string()).unwrap_or_default(),
            "IPAddress": ip.to_string(),
            "IPPrefixLen": prefix,
            "IPv6Gateway": v6.as_ref().map(|(_, p)| p.gateway.to_string()).unwrap_or_default(),
            "GlobalIPv6Address": v6.as_ref().map(|(a, _)| a.to_string()).unwrap_or_default(),
            "GlobalIPv6PrefixLen": v6.as_ref().map(|(_, p)| p.prefix).unwrap_or(0),
            "DNSNames": if net.is_default_bridge() { Value::Null } else { json!(dns_names) },
        }))
    }

    /// The networks a container joins, resolved (each once, in order); a network that no
    /// longer exists is an error at start, as with dockerd.
    async fn joined(&self, r: &Record) -> Result<Vec<NetworkRecord>> {
        let mut out: Vec<NetworkRecord> = Vec::new();
        for name in wanted_networks(r) {
            let net = self
                .networks
                .get(&name)
                .await
                .map_err(|_| EngineError::NotFound(format!("network {name} not found")))?;
            if !out.iter().any(|n| n.id == net.id) {
                out.push(net);
            }
        }
        Ok(out)
    }

    /// [`Self::joined`] for connect/disconnect: (name, id) with the id unknown for a network
    /// that is gone (kept: starting the container will say so).
    async fn joined_lenient(&self, r: &Record) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for name in wanted_networks(r) {
            match self.networks.get(&name).await {
                Ok(n) => {
                    if !out
                        .iter()
                        .any(|(_, id)| id.as_deref() == Some(n.id.as_str()))
                    {
                        out.push((n.name, Some(n.id)));
                    }
                }
                Err(_) => out.push((name, None)),
            }
        }
        out
    }

    /// NetworkSettings of a container that is not running: every network it will join with
    /// its endpoint configuration and no addresses (what dockerd shows after create or a
    /// connect of a stopped container).
    pub(crate) async fn configured_network_settings(&self, r: &Record) -> Value {
        let mut nets = serde_json::Map::new();
        let mut names = wanted_networks(r);
        let mode = r.host_config.network_mode.clone().unwrap_or_default();
        if mode == "host" || mode == "none" {
            // As dockerd: the host or none network is listed for such containers.
            names.push(mode);
        }
        for name in names {
            let net = self.networks.get(&name).await.ok();
            let key = net.as_ref().map(|n| n.name.clone()).unwrap_or(name);
            let epc = net.as_ref().and_then(|n| endpoint_config(r, n));
            nets.insert(key, configured_endpoint(epc, net.as_ref()));
        }
        let mut base = if r.network_settings.is_object() {
            r.network_settings.clone()
        } else {
            json!({
                "Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": false,
                "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "Ports": {},
                "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null, "EndpointID": "",
                "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
            })
        };
        base["Networks"] = Value::Object(nets);
        base
    }

    pub(crate) async fn net_setup(&self, c: &Arc<Container>) -> Result<NetConfig> {
        let r = c.rec.read().await.clone();
        let mode = r.host_config.network_mode.clone().unwrap_or_default();
        if mode == "host" {
            return Ok(NetConfig {
                netns: Namespace::Host,
                ..Default::default()
            });
        }
        if let Some(other) = mode.strip_prefix("container:") {
            let o = self.get(other).await?;
            let or = o.rec.read().await;
            if !or.state.status.is_alive() {
                return Err(EngineError::Conflict(format!(
                    "cannot join network of a non running container: {}",
                    or.id
                )));
            }
            return Ok(NetConfig {
                netns: Namespace::Path(format!("/proc/{}/ns/net", or.state.pid).into()),
                ..Default::default()
            });
        }
        let nets = if mode == "none" {
            Vec::new()
        } else {
            self.joined(&r).await?
        };
        if nets.is_empty() {
            return Ok(NetConfig {
                netns: Namespace::New,
                ..Default::default()
            });
        }
        let ns = netns_name(&r.id);
        link::netns_add(&ns).await?;
        match self.wire(&r, &ns, &nets).await {
            Ok(cfg) => Ok(cfg),
            Err(e) => {
                self.net_teardown(&r.id).await;
                Err(e)
            }
        }
    }

    async fn wire(&self, r: &Record, ns: &str, nets: &[NetworkRecord]) -> Result<NetConfig> {
        let mut endpoints = serde_json::Map::new();
        let mut cfg = NetConfig {
            netns: Namespace::Path(link::netns_path(ns)),
            ..Default::default()
        };
        let mut first: Option<(NetworkRecord, Ipv4Addr)> = None;
        // The default routes go through the first network that is not internal.
        let mut routed = false;
        for (i, net) in nets.iter().enumerate() {
            if !net.is_bridge() {
                return Err(EngineError::invalid(format!(
                    "container cannot be connected to network {} of driver {}",
                    net.name, net.driver
                )));
            }
            let route = !routed && net.internal == 0;
            routed |= route;
            let ep = self
                .add_endpoint(r, net, ns, &format!("eth{i}"), route)
                .await?;
            let ip: Ipv4Addr = ep["IPAddress"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(Ipv4Addr::UNSPECIFIED);
            if i == 0 {
                first = Some((net.clone(), ip));
            }
            endpoints.insert(net.name.clone(), ep);
        }
        let Some((primary, ip)) = first else {
            return Ok(cfg);
        };
        let hostname = r.config.hostname.clone().unwrap_or_default();
        cfg.hosts.push((ip.to_string(), hostname.clone()));
        if let Some(a) = endpoints[&primary.name]["GlobalIPv6Address"]
            .as_str()
            .filter(|a| !a.is_empty())
        {
            cfg.hosts.push((a.to_string(), hostname));
        }
        if !primary.is_default_bridge() {
            if let Some(gw) = primary.gw() {
                cfg.nameservers = vec![gw.to_string()];
            }
        }
        // Ports on the primary network.
        let empty = Default::default();
        let pb = r.host_config.port_bindings.as_ref().unwrap_or(&empty);
        let bindings = bindings_from(
            pb,
            &r.config.exposed_ports.clone().unwrap_or_default(),
            r.host_config.publish_all_ports.unwrap_or(false),
        )?;
        let bound = self
            .networks
            .proxies
            .start(&r.id, &r.name, ip, &bindings)
            .await?;
        if let Err(e) = self.networks.announcer.announce(&r.id, &bound).await {
            self.networks.proxies.stop(&r.id).await;
            return Err(e);
        }
        self.networks.nat.add(&r.id, ip, &bound).await;
        let ports = ports_json(&r.config.exposed_ports.clone().unwrap_or_default(), &bound);
        let primary_ep = endpoints.get(&primary.name).cloned().unwrap_or(Value::Null);
        let settings = json!({
            "Bridge": "",
            "SandboxID": crate::util::digest_hex(&crate::util::sha256_digest(ns.as_bytes())),
            "SandboxKey": link::netns_path(ns),
            "HairpinMode": false,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": ports,
            "SecondaryIPAddresses": null, "SecondaryIPv6Addresses": null,
            "EndpointID": if primary.is_default_bridge() { primary_ep["EndpointID"].clone() } else { json!("") },
            "Gateway": if primary.is_default_bridge() { primary_ep["Gateway"].clone() } else { json!("") },
            "GlobalIPv6Address": if primary.is_default_bridge() { primary_ep["GlobalIPv6Address"].clone() } else { json!("") },
            "GlobalIPv6PrefixLen": if primary.is_default_bridge() { primary_ep["GlobalIPv6PrefixLen"].clone() } else { json!(0) },
            "IPAddress": if primary.is_default_bridge() { primary_ep["IPAddress"].clone() } else { json!("") },
            "IPPrefixLen": if primary.is_default_bridge() { primary_ep["IPPrefixLen"].clone() } else { json!(0) },
            "IPv6Gateway": if primary.is_default_bridge() { primary_ep["IPv6Gateway"].clone() } else { json!("") },
            "MacAddress": if primary.is_default_bridge() { primary_ep["MacAddress"].clone() } else { json!("") },
            "Networks": Value::Object(endpoints),
        });
        if let Ok(c) = self.get(&r.id).await {
            let mut w = c.rec.write().await;
            w.network_settings = settings;
            let snap = w.clone();
            drop(w);
            self.save(&snap).await?;
        }
        Ok(cfg)
    }

    pub(crate) async fn net_teardown(&self, id: &str) {
        self.networks.nat.remove(id).await;
        self.networks.proxies.stop(id).await;
        self.networks.announcer.withdraw(id).await;
        // Only a container on a network has a namespace of its own to delete (no `ip` to
        // run for `--network none`, host or container:<id>).
        let ns = netns_name(id);
        let has_ns = link::netns_path(&ns).exists();
        let Ok(c) = self.get(id).await else {
            if has_ns {
                link::netns_del(&ns).await;
            }
            return;
        };
        let r = c.rec.read().await.clone();
        let mut links = Vec::new();
        if let Some(nets) = r
            .network_settings
            .get("Networks")
            .and_then(|n| n.as_object())
        {
            for ep in nets.values() {
                if let Some(nid) = ep["NetworkID"].as_str() {
                    // An endpoint without an address was torn down already (at the exit,
                    // before this removal).
                    if ep["IPAddress"].as_str().is_some_and(|a| !a.is_empty()) {
                        links.push(veth_name(id, nid));
                    }
                    self.networks.names.unregister(nid, id);
                }
            }
        }
        // The links and the namespace go at once: each is an `ip` to run.
        let del_links = futures::future::join_all(links.iter().map(|l| link::delete_link(l)));
        let del_ns = async {
            if has_ns {
                link::netns_del(&ns).await;
            }
        };
        tokio::join!(del_links, del_ns);
        if r.network_settings.is_object() {
            let mut w = c.rec.write().await;
            // As Docker: the networks stay listed, without addresses or ports, once stopped.
            let mut ns = w.network_settings.clone();
            ns["Ports"] = json!({});
            for k in [
                "IPAddress",
                "Gateway",
                "MacAddress",
                "EndpointID",
                "SandboxKey",
                "SandboxID",
                "GlobalIPv6Address",
                "IPv6Gateway",
            ] {
                ns[k] = json!("");
            }
            ns["IPPrefixLen"] = json!(0);
            ns["GlobalIPv6PrefixLen"] = json!(0);
            if let Some(nets) = ns.get_mut("Networks").and_then(|n| n.as_object_mut()) {
                for ep in nets.values_mut() {
                    for k in [
                        "IPAddress",
                        "Gateway",
                        "MacAddress",
                        "EndpointID",
                        "GlobalIPv6Address",
                        "IPv6Gateway",
                    ] {
                        ep[k] = json!("");
                    }
                    ep["IPPrefixLen"] = json!(0);
                    ep["GlobalIPv6PrefixLen"] = json!(0);
                }
            }
            w.network_settings = ns;
            let snap = w.clone();
            drop(w);
            let _ = self.save(&snap).await;
        }
    }

    /// After berthd restarts: bring running containers' proxies and DNS names back.
    pub(crate) async fn net_restore(&self, c: &Arc<Container>) {
        let r = c.rec.read().await.clone();
        let Some(nets) = r
            .network_settings
            .get("Networks")
            .and_then(|n| n.as_object())
        else {
            return;
        };
        let mut primary_ip = None;
        // The ports are on the first network the container joined (the map is by name).
        let first = wanted_networks(&r).into_iter().next();
        for (name, ep) in nets {
            let key = ep["NetworkID"].as_str().unwrap_or(name);
            let Ok(net) = self.networks.get(key).await else {
                continue;
            };
            let _ = self.networks.bring_up(&net).await;
            let Some(ip) = ep["IPAddress"]
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let is_first = first
                .as_deref()
                .is_some_and(|f| f == net.name || f == net.id);
            if primary_ip.is_none() || is_first {
                primary_ip = Some(ip);
            }
            if !net.is_default_bridge() {
                let names: Vec<String> = ep["DNSNames"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                self.networks.names.register(&net.id, &r.id, names, ip);
                self.networks
                    .names
                    .set_links(&net.id, &r.id, &strings(&ep["Links"]));
            }
        }
        let Some(ip) = primary_ip else { return };
        let mut bindings = Vec::new();
        if let Some(ports) = r.network_settings.get("Ports").and_then(|p| p.as_object()) {
            for (k, v) in ports {
                let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
                for b in v.as_array().into_iter().flatten() {
                    if let (Ok(cp), Some(hp), Some(hip)) = (
                        p.parse::<u16>(),
                        b["HostPort"].as_str().and_then(|s| s.parse::<u16>().ok()),
                        b["HostIp"].as_str().and_then(|s| s.parse().ok()),
                    ) {
                        bindings.push(Binding {
                            host_ip: hip,
                            host_port: hp,
                            host_port_end: hp,
                            proto: proto.to_string(),
                            container_port: cp,
                        });
                    }
                }
            }
        }
        match self
            .networks
            .proxies
            .start(&r.id, &r.name, ip, &bindings)
            .await
        {
            Ok(bound) => {
                if let Err(e) = self.networks.announcer.announce(&r.id, &bound).await {
                    tracing::warn!(container = %r.id, error = %e, "host refused restored ports");
                }
                self.networks.nat.add(&r.id, ip, &bound).await;
            }
            Err(e) => {
                tracing::warn!(container = %r.id, error = %e, "could not restore published ports")
            }
        }
    }

    /// `docker network connect`: a running container gets its endpoint at once; a created or
    /// stopped one keeps the configuration (shown in inspect) and joins at its next start.
    pub async fn connect(
        &self,
        c: &Arc<Container>,
        net: &NetworkRecord,
        config: Value,
    ) -> Result<()> {
        let r = c.rec.read().await.clone();
        let mode = r.host_config.network_mode.clone().unwrap_or_default();
        if mode == "host" || mode.starts_with("container:") {
            return Err(EngineError::invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network",
            ));
        }
        if mode == "none" || net.driver == "null" {
            return Err(EngineError::invalid(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode",
            ));
        }
        if !net.is_bridge() {
            return Err(EngineError::invalid(
                "container cannot be disconnected from host network or connected to host network",
            ));
        }
        let alive = r.state.status.is_alive();
        let joined = self.joined_lenient(&r).await;
        if alive
            && r.network_settings["Networks"]
                .get(&net.name)
                .is_some_and(|e| e["NetworkID"] == net.id.as_str())
        {
            return Err(EngineError::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                r.name, net.name
            )));
        }
        let config = if config.is_object() {
            config
        } else {
            json!({})
        };
        validate_endpoint(net, Some(&config))?;
        let mut names: Vec<String> = joined.iter().map(|(n, _)| n.clone()).collect();
        if !joined
            .iter()
            .any(|(_, id)| id.as_deref() == Some(net.id.as_str()))
        {
            names.push(net.name.clone());
        }
        let mut w = c.rec.write().await;
        if !w.networking.is_object() {
            w.networking = json!({});
        }
        if !w.networking["EndpointsConfig"].is_object() {
            w.networking["EndpointsConfig"] = json!({});
        }
        if let Some(m) = w.networking["EndpointsConfig"].as_object_mut() {
            // One entry per network, under its name.
            m.remove(&net.id);
            m.insert(net.name.clone(), config);
        }
        w.networking[JOINED] = json!(names);
        let before = w.networking.clone();
        let snap = w.clone();
        // No lock on the record while the endpoint is made: address allocation reads every
        // container's record, this one's too.
        drop(w);
        let made = if alive {
            let ns = netns_name(&snap.id);
            let ifname = free_ifname(&ns).await;
            // The default routes come with this network if no other gives them.
            let routed = snap.network_settings["Networks"]
                .as_object()
                .is_some_and(|m| {
                    m.values()
                        .any(|e| e["Gateway"].as_str().is_some_and(|g| !g.is_empty()))
                });
            match self
                .add_endpoint(&snap, net, &ns, &ifname, !routed && net.internal == 0)
                .await
            {
                Ok(ep) => Some(ep),
                Err(e) => {
                    // The container is not connected after all.
                    let mut w = c.rec.write().await;
                    if w.networking == before {
                        w.networking = r.networking.clone();
                    }
                    return Err(e);
                }
            }
        } else {
            None
        };
        let settings = if alive {
            None
        } else {
            Some(self.configured_network_settings(&snap).await)
        };
        let mut w = c.rec.write().await;
        w.networking = before;
        if let Some(ep) = made {
            if !w.network_settings.is_object() {
                w.network_settings = json!({});
            }
            if !w.network_settings["Networks"].is_object() {
                w.network_settings["Networks"] = json!({});
            }
            w.network_settings["Networks"][&net.name] = ep;
        } else if let Some(s) = settings {
            w.network_settings = s;
        }
        let snap = w.clone();
        drop(w);
        self.save(&snap).await?;
        self.networks
            .emit("connect", net, &[("container", r.id.clone())]);
        Ok(())
    }

    /// `docker network disconnect`, with dockerd's errors: a container that is not connected
    /// is refused, with `force` too. Disconnecting the NetworkMode's own network leaves
    /// NetworkMode as it is; the container simply no longer joins that network.
    pub async fn disconnect(
        &self,
        c: &Arc<Container>,
        net: &NetworkRecord,
        force: bool,
    ) -> Result<()> {
        let r = c.rec.read().await.clone();
        let joined = self.joined_lenient(&r).await;
        let configured = joined
            .iter()
            .any(|(_, id)| id.as_deref() == Some(net.id.as_str()));
        if r.state.status.is_alive() {
            let has_ep = r.network_settings["Networks"]
                .get(&net.name)
                .is_some_and(|e| e["NetworkID"] == net.id.as_str());
            if !has_ep {
                if force {
                    return Err(EngineError::NotFound(format!(
                        "endpoint {} not found",
                        r.name
                    )));
                }
                return Err(EngineError::Forbidden(format!(
                    "container {} is not connected to network {}",
                    r.id, net.name
                )));
            }
            link::delete_link(&veth_name(&r.id, &net.id)).await;
            self.networks.names.unregister(&net.id, &r.id);
        } else if !configured {
            return Err(EngineError::Forbidden(format!(
                "container {} is not connected to the network {}",
                r.id, net.name
            )));
        }
        let names: Vec<String> = joined
            .into_iter()
            .filter(|(_, id)| id.as_deref() != Some(net.id.as_str()))
            .map(|(n, _)| n)
            .collect();
        let mut w = c.rec.write().await;
        if !w.networking.is_object() {
            w.networking = json!({});
        }
        if let Some(m) = w
            .networking
            .get_mut("EndpointsConfig")
            .and_then(|e| e.as_object_mut())
        {
            m.remove(&net.name);
            m.remove(&net.id);
        }
        w.networking[JOINED] = json!(names);
        if let Some(m) = w
            .network_settings
            .get_mut("Networks")
            .and_then(|e| e.as_object_mut())
        {
            m.remove(&net.name);
        }
        let snap = w.clone();
        drop(w);
        self.save(&snap).await?;
        self.networks
            .emit("disconnect", net, &[("container", r.id.clone())]);
        Ok(())
    }

    /// Containers with an endpoint (running) or a configured attachment to `net`.
    pub async fn network_users(&self, net: &NetworkRecord) -> Vec<(String, Value)> {
        let mut v = Vec::new();
        for c in self.all() {
            let r = c.rec.read().await;
            if !r.state.status.is_alive() {
                continue;
            }
            if let Some(ep) = r.network_settings["Networks"].get(&net.name) {
                if ep["NetworkID"] == net.id.as_str() {
                    v.push((r.id.clone(), json!({
                        "Name": r.name,
                        "EndpointID": ep["EndpointID"],
                        "MacAddress": ep["MacAddress"],
                        "IPv4Address": format!("{}/{}", ep["IPAddress"].as_str().unwrap_or(""), ep["IPPrefixLen"]),
                        "IPv6Address": match ep["GlobalIPv6Address"].as_str() {
                            Some(a) if !a.is_empty() => format!("{a}/{}", ep["GlobalIPv6PrefixLen"]),
                            _ => String::new(),
                        },
                    })));
                }
            }
        }
        v
    }
}

/// API < 1.44 carries a container's MAC address in `Config.MacAddress` (the create body's
/// top-level `MacAddress`); as dockerd, it becomes the MAC address of the NetworkMode
/// network's endpoint, unless that endpoint names one itself. Applied to the raw create
/// body by `api/containers.rs` before it is typed (the typed body has no such field).
pub fn legacy_mac_address(body: &mut Value) {
    let Some(mac) = body
        .get("MacAddress")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
        .map(String::from)
    else {
        return;
    };
    let mode = body["HostConfig"]["NetworkMode"]
        .as_str()
        .unwrap_or("")
        .to_string();
    if mode == "host" || mode == "none" || mode.starts_with("container:") {
        return;
    }
    let own = if matches!(mode.as_str(), "" | "default") {
        "bridge".to_string()
    } else {
        mode
    };
    if !body["NetworkingConfig"].is_object() {
        body["NetworkingConfig"] = json!({});
    }
    if !body["NetworkingConfig"]["EndpointsConfig"].is_object() {
        body["NetworkingConfig"]["EndpointsConfig"] = json!({});
    }
    let eps = &mut body["NetworkingConfig"]["EndpointsConfig"];
    let key = [own.as_str(), "default"]
        .into_iter()
        .find(|k| eps.get(*k).is_some_and(|e| e.is_object()))
        .unwrap_or(own.as_str())
        .to_string();
    if !eps[&key].is_object() {
        eps[&key] = json!({});
    }
    if eps[&key]["MacAddress"].as_str().unwrap_or("").is_empty() {
        eps[&key]["MacAddress"] = json!(mac);
    }
}

/// The first `ethN` not in use in a running container's namespace.
async fn free_ifname(ns: &str) -> String {
    let used = link::link_names(Some(ns)).await.unwrap_or_default();
    (0..)
        .map(|i| format!("eth{i}"))
        .find(|n| !used.contains(n))
        .unwrap_or_else(|| "eth0".into())
}

fn ports_json(exposed: &[String], bound: &[Binding]) -> Value {
    let mut m = serde_json::Map::new();
    for e in exposed {
        let k = if e.contains('/') {
            e.clone()
        } else {
            format!("{e}/tcp")
        };
        m.insert(k, Value::Null);
    }
    for b in bound {
        let k = format!("{}/{}", b.container_port, b.proto);
        let entry = m.entry(k).or_insert(Value::Null);
        if !entry.is_array() {
            *entry = json!([]);
        }
        if let Some(a) = entry.as_array_mut() {
            a.push(json!({"HostIp": b.host_ip.to_string(), "HostPort": b.host_port.to_string()}));
        }
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_as_go_does() {
        assert_eq!(
            parse_mac("02:42:AC:11:00:02").as_deref(),
            Some("02:42:ac:11:00:02")
        );
        assert_eq!(
            parse_mac("02-42-ac-11-00-0a").as_deref(),
            Some("02:42:ac:11:00:0a")
        );
        assert!(parse_mac("02:42:ac:11:00").is_none());
        assert!(parse_mac("zz:42:ac:11:00:02").is_none());
    }

    #[test]
    fn legacy_mac_goes_to_the_mode_network() {
        let mut b = json!({"MacAddress": "02:42:ac:11:00:0a", "HostConfig": {}});
        legacy_mac_address(&mut b);
        assert_eq!(
            b["NetworkingConfig"]["EndpointsConfig"]["bridge"]["MacAddress"],
            "02:42:ac:11:00:0a"
        );
        let mut b = json!({"MacAddress": "02:42:ac:11:00:0a",
            "HostConfig": {"NetworkMode": "n1"},
            "NetworkingConfig": {"EndpointsConfig": {"n1": {"MacAddress": "02:42:ac:11:00:0b"}}}});
        legacy_mac_address(&mut b);
        assert_eq!(
            b["NetworkingConfig"]["EndpointsConfig"]["n1"]["MacAddress"],
            "02:42:ac:11:00:0b"
        );
        let mut b =
            json!({"MacAddress": "02:42:ac:11:00:0a", "HostConfig": {"NetworkMode": "host"}});
        legacy_mac_address(&mut b);
        assert!(b.get("NetworkingConfig").is_none());
    }
}
