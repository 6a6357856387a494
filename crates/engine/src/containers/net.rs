//! How a container joins networks: a named network namespace with one veth endpoint per
//! network (address from the network's subnet), published ports through the proxy, names in
//! the network's DNS; `host` shares the host's namespace; `container:<id>` joins another's.

use std::net::Ipv4Addr;
use std::sync::Arc;

use serde_json::{json, Value};

use super::fs::NetConfig;
use super::spec::Namespace;
use super::{Container, ContainerService, Record};
use crate::error::{EngineError, Result};
use crate::networks::proxy::{bindings_from, Binding};
use crate::networks::{link, NetworkRecord};

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

/// The networks a container is attached to, in order: its NetworkMode first, then any other
/// networks from EndpointsConfig (create) and `network connect`.
fn wanted_networks(r: &Record) -> Vec<String> {
    let mode = r.host_config.network_mode.clone().unwrap_or_default();
    let mut v = Vec::new();
    match mode.as_str() {
        "" | "default" | "bridge" => v.push("bridge".to_string()),
        "host" | "none" => return v,
        m if m.starts_with("container:") => return v,
        m => v.push(m.to_string()),
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

impl ContainerService {
    async fn used_addresses(&self, net_id: &str, except: &str) -> Vec<Ipv4Addr> {
        let mut v = Vec::new();
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
                            v.push(ip);
                        }
                    }
                }
            }
        }
        v
    }

    /// Make one endpoint: veth into `ns`, address, DNS names. Returns the endpoint JSON.
    async fn add_endpoint(
        &self,
        r: &Record,
        net: &NetworkRecord,
        ns: &str,
        ifindex: usize,
    ) -> Result<Value> {
        self.networks.bring_up(net).await?;
        let (_, prefix) = net
            .cidr()
            .ok_or_else(|| EngineError::internal("network without subnet"))?;
        let gw = net.gw();
        let epc = endpoint_config(r, net);
        let want = epc
            .and_then(|e| e["IPAMConfig"]["IPv4Address"].as_str())
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<Ipv4Addr>()
                    .map_err(|_| EngineError::invalid(format!("invalid IPv4 address: {s}")))
            })
            .transpose()?;
        let used = self.used_addresses(&net.id, &r.id).await;
        let ip = self.networks.allocate(net, &used, want)?;
        let mac = mac_for(ip);
        let host_if = veth_name(&r.id, &net.id);
        let bridge = net.bridge.clone().unwrap_or_default();
        let default_route = if ifindex == 0 && net.internal == 0 {
            gw
        } else {
            None
        };
        link::add_endpoint(
            &bridge,
            &host_if,
            ns,
            &format!("eth{ifindex}"),
            ip,
            prefix,
            default_route,
            &mac,
        )
        .await?;
        let mut aliases: Vec<String> = epc
            .and_then(|e| e["Aliases"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut dns_names = vec![r.name.clone(), r.id[..12].to_string()];
        dns_names.append(&mut aliases.clone());
        if !net.is_default_bridge() {
            self.networks
                .names
                .register(&net.id, &r.id, dns_names.clone(), ip);
        }
        aliases.dedup();
        Ok(json!({
            "IPAMConfig": epc.map(|e| e["IPAMConfig"].clone()).unwrap_or(Value::Null),
            "Links": null,
            "Aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
            "MacAddress": mac,
            "NetworkID": net.id,
            "EndpointID": crate::util::random_id(),
            "Gateway": gw.map(|g| g.to_string()).unwrap_or_default(),
            "IPAddress": ip.to_string(),
            "IPPrefixLen": prefix,
            "IPv6Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "DriverOpts": null,
            "DNSNames": if net.is_default_bridge() { Value::Null } else { json!(dns_names) },
        }))
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
        let nets = wanted_networks(&r);
        if mode == "none" || nets.is_empty() {
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

    async fn wire(&self, r: &Record, ns: &str, nets: &[String]) -> Result<NetConfig> {
        let mut endpoints = serde_json::Map::new();
        let mut cfg = NetConfig {
            netns: Namespace::Path(link::netns_path(ns)),
            ..Default::default()
        };
        let mut first: Option<(NetworkRecord, Ipv4Addr)> = None;
        for (i, name) in nets.iter().enumerate() {
            let net = self
                .networks
                .get(name)
                .await
                .map_err(|_| EngineError::NotFound(format!("network {name} not found")))?;
            if !net.is_bridge() {
                return Err(EngineError::invalid(format!(
                    "container cannot be connected to network {} of driver {}",
                    net.name, net.driver
                )));
            }
            let ep = self.add_endpoint(r, &net, ns, i).await?;
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
        cfg.hosts.push((ip.to_string(), hostname));
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
            "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": if primary.is_default_bridge() { primary_ep["IPAddress"].clone() } else { json!("") },
            "IPPrefixLen": if primary.is_default_bridge() { primary_ep["IPPrefixLen"].clone() } else { json!(0) },
            "IPv6Gateway": "",
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
            ] {
                ns[k] = json!("");
            }
            ns["IPPrefixLen"] = json!(0);
            if let Some(nets) = ns.get_mut("Networks").and_then(|n| n.as_object_mut()) {
                for ep in nets.values_mut() {
                    for k in ["IPAddress", "Gateway", "MacAddress", "EndpointID"] {
                        ep[k] = json!("");
                    }
                    ep["IPPrefixLen"] = json!(0);
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
        for (name, ep) in nets {
            let Ok(net) = self.networks.get(name).await else {
                continue;
            };
            let _ = self.networks.bring_up(&net).await;
            let Some(ip) = ep["IPAddress"]
                .as_str()
                .and_then(|s| s.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if primary_ip.is_none() {
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
            }
            Err(e) => {
                tracing::warn!(container = %r.id, error = %e, "could not restore published ports")
            }
        }
    }

    /// `docker network connect` for a running container (a stopped one joins at its next start).
    pub async fn connect(
        &self,
        c: &Arc<Container>,
        net: &NetworkRecord,
        config: Value,
    ) -> Result<()> {
        let r = c.rec.read().await.clone();
        if r.network_settings["Networks"]
            .get(&net.name)
            .is_some_and(|e| !e["NetworkID"].is_null())
            && r.state.status.is_alive()
        {
            return Err(EngineError::Forbidden(format!(
                "endpoint with name {} already exists in network {}",
                r.name, net.name
            )));
        }
        let mode = r.host_config.network_mode.clone().unwrap_or_default();
        if mode == "host" || mode == "none" || mode.starts_with("container:") {
            return Err(EngineError::invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network",
            ));
        }
        {
            let mut w = c.rec.write().await;
            if !w.networking.is_object() {
                w.networking = json!({});
            }
            if !w.networking["EndpointsConfig"].is_object() {
                w.networking["EndpointsConfig"] = json!({});
            }
            w.networking["EndpointsConfig"][&net.name] =
                if config.is_null() { json!({}) } else { config };
            let snap = w.clone();
            drop(w);
            self.save(&snap).await?;
        }
        if r.state.status.is_alive() {
            let r = c.rec.read().await.clone();
            let idx = r.network_settings["Networks"]
                .as_object()
                .map(|m| m.len())
                .unwrap_or(0);
            let ep = self.add_endpoint(&r, net, &netns_name(&r.id), idx).await?;
            let mut w = c.rec.write().await;
            w.network_settings["Networks"][&net.name] = ep;
            let snap = w.clone();
            drop(w);
            self.save(&snap).await?;
        }
        self.networks
            .emit("connect", net, &[("container", r.id.clone())]);
        Ok(())
    }

    pub async fn disconnect(
        &self,
        c: &Arc<Container>,
        net: &NetworkRecord,
        force: bool,
    ) -> Result<()> {
        let r = c.rec.read().await.clone();
        let attached = r.networking["EndpointsConfig"].get(&net.name).is_some()
            || r.network_settings["Networks"].get(&net.name).is_some()
            || r.host_config.network_mode.as_deref() == Some(net.name.as_str());
        if !attached && !force {
            return Err(EngineError::Forbidden(format!(
                "container {} is not connected to network {}",
                r.id, net.name
            )));
        }
        link::delete_link(&veth_name(&r.id, &net.id)).await;
        self.networks.names.unregister(&net.id, &r.id);
        let mut w = c.rec.write().await;
        if let Some(m) = w
            .networking
            .get_mut("EndpointsConfig")
            .and_then(|e| e.as_object_mut())
        {
            m.remove(&net.name);
        }
        if let Some(m) = w
            .network_settings
            .get_mut("Networks")
            .and_then(|e| e.as_object_mut())
        {
            m.remove(&net.name);
        }
        if w.host_config.network_mode.as_deref() == Some(net.name.as_str())
            || (net.is_default_bridge()
                && matches!(
                    w.host_config.network_mode.as_deref(),
                    Some("bridge" | "default")
                ))
        {
            w.host_config.network_mode = Some("none".into());
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
                        "IPv6Address": "",
                    })));
                }
            }
        }
        v
    }
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
