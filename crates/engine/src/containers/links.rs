//! Legacy container links (`--link name:alias`) on the default bridge, as dockerd keeps them:
//! registered at create (`HostConfig.Links`), turned into `<ALIAS>_…` environment variables
//! and /etc/hosts lines at start, shown in inspect as `/child:/parent/alias`, reachable as the
//! container name `parent/alias`, and removed with `DELETE /containers/parent/alias?link=1`.
//! On user-defined networks `Links` are the network's business (endpoint links), not these.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Container, ContainerService, Record};
use crate::error::{EngineError, Result};

/// One link of a container (the parent) to another (the child).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LegacyLink {
    /// The child's id: links follow renames, as dockerd's link graph does.
    pub child: String,
    pub alias: String,
}

/// `name[:alias]` as docker's `opts.ParseLink` splits it (leading `/` dropped).
pub fn parse_link(s: &str) -> Result<(String, String)> {
    let (name, alias) = match s.split_once(':') {
        Some((n, a)) => (n, a),
        None => (s, s),
    };
    let name = name.trim_start_matches('/');
    let alias = alias.trim_start_matches('/');
    if name.is_empty() || alias.is_empty() || alias.contains(':') {
        return Err(EngineError::invalid(format!(
            "invalid format to parse. {s} should match template name:alias"
        )));
    }
    Ok((name.to_string(), alias.to_string()))
}

/// Whether a network mode gets legacy links (dockerd: all but user-defined networks).
pub fn legacy_mode(mode: &str) -> bool {
    matches!(mode, "" | "bridge" | "default" | "host" | "none") || mode.starts_with("container:")
}

/// The environment dockerd gives a container for one link (`links.Link.ToEnv`).
pub fn link_env(
    link_name: &str,
    child_ip: &str,
    child_env: &[String],
    exposed: &[String],
) -> Vec<String> {
    let base = link_name.rsplit('/').next().unwrap_or(link_name);
    let alias = base.to_uppercase().replace('-', "_");
    // (port, proto), sorted by number with tcp first on a tie, as dockerd sorts them.
    let mut ports: Vec<(u32, String)> = exposed
        .iter()
        .filter_map(|p| {
            let (n, proto) = p.split_once('/').unwrap_or((p.as_str(), "tcp"));
            Some((n.parse().ok()?, proto.to_lowercase()))
        })
        .collect();
    ports.sort_by(|a, b| a.0.cmp(&b.0).then((b.1 == "tcp").cmp(&(a.1 == "tcp"))));
    ports.dedup();
    let mut env = Vec::new();
    if let Some((n, proto)) = ports.first() {
        env.push(format!("{alias}_PORT={proto}://{child_ip}:{n}"));
    }
    // Runs of consecutive ports are also given as ranges.
    let mut i = 0;
    while i < ports.len() {
        let (start, proto) = &ports[i];
        let mut j = i;
        while j + 1 < ports.len() && ports[j + 1].0 == ports[j].0 + 1 {
            j += 1;
        }
        if j > i + 1 {
            let up = proto.to_uppercase();
            let (end, eproto) = &ports[j];
            env.push(format!(
                "{alias}_PORT_{start}_{up}_START={proto}://{child_ip}:{start}"
            ));
            env.push(format!("{alias}_PORT_{start}_{up}_ADDR={child_ip}"));
            env.push(format!("{alias}_PORT_{start}_{up}_PROTO={proto}"));
            env.push(format!("{alias}_PORT_{start}_{up}_PORT_START={start}"));
            env.push(format!(
                "{alias}_PORT_{start}_{}_END={eproto}://{child_ip}:{end}",
                eproto.to_uppercase()
            ));
            env.push(format!(
                "{alias}_PORT_{start}_{}_PORT_END={end}",
                eproto.to_uppercase()
            ));
            i = j + 1;
        } else {
            i += 1;
        }
    }
    for (n, proto) in &ports {
        let up = proto.to_uppercase();
        env.push(format!("{alias}_PORT_{n}_{up}={proto}://{child_ip}:{n}"));
        env.push(format!("{alias}_PORT_{n}_{up}_ADDR={child_ip}"));
        env.push(format!("{alias}_PORT_{n}_{up}_PORT={n}"));
        env.push(format!("{alias}_PORT_{n}_{up}_PROTO={proto}"));
    }
    env.push(format!("{alias}_NAME={link_name}"));
    for e in child_env {
        let Some((k, v)) = e.split_once('=') else {
            continue;
        };
        // dockerd leaves these out: set by build, not the linked service's.
        if k == "HOME" || k == "PATH" {
            continue;
        }
        env.push(format!("{alias}_ENV_{k}={v}"));
    }
    env
}

/// The IP of a container on the default bridge, from its network settings.
fn bridge_ip(r: &Record) -> Option<String> {
    r.network_settings["Networks"]["bridge"]["IPAddress"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// What a container's links give it at start.
#[derive(Debug, Default)]
pub struct LinkSetup {
    pub env: Vec<String>,
    /// (ip, names) lines for /etc/hosts.
    pub hosts: Vec<(String, String)>,
}

impl ContainerService {
    /// At create: resolve `HostConfig.Links` into the record's links, as dockerd's
    /// `registerLinks` does.
    pub(crate) async fn register_links(&self, rec: &mut Record) -> Result<()> {
        let mode = rec.host_config.network_mode.clone().unwrap_or_default();
        let wanted = rec.host_config.links.clone().unwrap_or_default();
        if wanted.is_empty() || !legacy_mode(&mode) {
            return Ok(());
        }
        if mode == "host" {
            return Err(EngineError::invalid(
                "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
            ));
        }
        let mut out: Vec<LegacyLink> = Vec::new();
        for l in &wanted {
            let (name, alias) = parse_link(l)?;
            let child = self.get(&name).await.map_err(|e| match e {
                // dockerd: a missing link target is an invalid parameter, not a 404 (which
                // clients would read as a missing image).
                EngineError::NotFound(m) => {
                    EngineError::invalid(format!("could not get container for {name}: {m}"))
                }
                other => other,
            })?;
            let c = child.rec.read().await;
            if c.host_config.network_mode.as_deref() == Some("host") {
                return Err(EngineError::invalid(
                    "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
                ));
            }
            if c.id == rec.id {
                return Err(EngineError::invalid("cannot link a container to itself"));
            }
            out.retain(|x| x.alias != alias);
            out.push(LegacyLink {
                child: c.id.clone(),
                alias,
            });
        }
        rec.links = out;
        Ok(())
    }

    /// The links whose child still exists: (alias, child).
    async fn children(&self, r: &Record) -> Vec<(String, Arc<Container>)> {
        let mut v = Vec::new();
        for l in &r.links {
            if let Ok(c) = self.get(&l.child).await {
                v.push((l.alias.clone(), c));
            }
        }
        v
    }

    /// `HostConfig.Links` as dockerd's inspect shows them: `/child:/parent/alias`.
    pub async fn links_for_inspect(&self, r: &Record) -> Vec<String> {
        let mut v = Vec::new();
        for (alias, c) in self.children(r).await {
            let child = c.rec.read().await.name.clone();
            v.push(format!("/{child}:/{}/{alias}", r.name));
        }
        v.sort();
        v
    }

    /// The names a container is known by through other containers' links (`/parent/alias`),
    /// listed in `Names` by `docker ps` as dockerd does.
    pub async fn link_names_of(&self, id: &str) -> Vec<String> {
        let mut v = Vec::new();
        for p in self.all() {
            let Ok(r) = p.rec.try_read() else { continue };
            for l in r.links.iter().filter(|l| l.child == id) {
                v.push(format!("/{}/{}", r.name, l.alias));
            }
        }
        v.sort();
        v
    }

    /// The child a link name (`parent/alias`) refers to.
    pub(crate) async fn get_by_link_name(&self, key: &str) -> Option<Arc<Container>> {
        let (parent, alias) = key.trim_start_matches('/').rsplit_once('/')?;
        let p = self.get(parent).await.ok()?;
        let child = {
            let r = p.rec.read().await;
            if r.name != parent.trim_start_matches('/') {
                return None;
            }
            r.links.iter().find(|l| l.alias == alias)?.child.clone()
        };
        self.get(&child).await.ok()
    }

    /// At start, once the container's networks are up: the environment and hosts entries of
    /// its links (dockerd's `setupLinkedContainers`). Only with an endpoint on the default
    /// bridge; every child must be running.
    pub(crate) async fn link_setup(&self, c: &Arc<Container>) -> Result<LinkSetup> {
        let r = c.rec.read().await.clone();
        let mut out = LinkSetup::default();
        if r.links.is_empty() || bridge_ip(&r).is_none() {
            return Ok(out);
        }
        for (alias, child) in self.children(&r).await {
            let cr = child.rec.read().await.clone();
            let link_name = format!("/{}/{alias}", r.name);
            if !cr.state.status.is_alive() {
                return Err(EngineError::invalid(format!(
                    "Cannot link to a non running container: /{} AS {link_name}",
                    cr.name
                )));
            }
            let Some(ip) = bridge_ip(&cr) else {
                return Err(EngineError::invalid(format!(
                    "container {} not attached to default bridge network",
                    cr.id
                )));
            };
            out.env.extend(link_env(
                &link_name,
                &ip,
                cr.config.env.as_deref().unwrap_or_default(),
                cr.config.exposed_ports.as_deref().unwrap_or_default(),
            ));
            // The alias, the child's hostname, and its name when that differs from the alias.
            let mut names = format!("{alias} {}", cr.config.hostname.clone().unwrap_or_default());
            if alias != cr.name {
                names.push(' ');
                names.push_str(&cr.name);
            }
            out.hosts.push((ip, names));
        }
        Ok(out)
    }

    /// `DELETE /containers/{parent}/{alias}?link=1` (dockerd's `rmLink`).
    pub async fn remove_link(&self, name: &str) -> Result<()> {
        let full = format!("/{}", name.trim_start_matches('/'));
        let (parent, alias) = full.rsplit_once('/').unwrap_or(("", &full));
        if parent.is_empty() {
            return Err(EngineError::Internal(
                "Conflict, cannot remove the default link name of the container".into(),
            ));
        }
        if self.get_by_link_name(&full).await.is_none() {
            return Err(super::no_such(name));
        }
        let p = self.get(parent).await.map_err(|_| {
            EngineError::Internal(format!("Cannot get parent {parent} for link name {full}"))
        })?;
        let snap = {
            let mut r = p.rec.write().await;
            r.links.retain(|l| l.alias != alias);
            r.clone()
        };
        self.save(&snap).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_as_dockerd() {
        let env = link_env(
            "/web/db-1",
            "172.17.0.3",
            &[
                "PATH=/bin".into(),
                "FOO=1".into(),
                "HOME=/root".into(),
                "X=a=b".into(),
            ],
            &["6379/tcp".into(), "53/udp".into(), "53/tcp".into()],
        );
        assert_eq!(
            env,
            vec![
                "DB_1_PORT=tcp://172.17.0.3:53",
                "DB_1_PORT_53_TCP=tcp://172.17.0.3:53",
                "DB_1_PORT_53_TCP_ADDR=172.17.0.3",
                "DB_1_PORT_53_TCP_PORT=53",
                "DB_1_PORT_53_TCP_PROTO=tcp",
                "DB_1_PORT_53_UDP=udp://172.17.0.3:53",
                "DB_1_PORT_53_UDP_ADDR=172.17.0.3",
                "DB_1_PORT_53_UDP_PORT=53",
                "DB_1_PORT_53_UDP_PROTO=udp",
                "DB_1_PORT_6379_TCP=tcp://172.17.0.3:6379",
                "DB_1_PORT_6379_TCP_ADDR=172.17.0.3",
                "DB_1_PORT_6379_TCP_PORT=6379",
                "DB_1_PORT_6379_TCP_PROTO=tcp",
                "DB_1_NAME=/web/db-1",
                "DB_1_ENV_FOO=1",
                "DB_1_ENV_X=a=b",
            ]
        );
    }

    #[test]
    fn port_ranges() {
        let env = link_env(
            "/p/a",
            "10.0.0.2",
            &[],
            &["8000/tcp".into(), "8001/tcp".into(), "8002/tcp".into()],
        );
        assert!(env.contains(&"A_PORT_8000_TCP_START=tcp://10.0.0.2:8000".to_string()));
        assert!(env.contains(&"A_PORT_8000_TCP_END=tcp://10.0.0.2:8002".to_string()));
        assert!(env.contains(&"A_PORT_8000_TCP_PORT_END=8002".to_string()));
        assert!(env.contains(&"A_PORT_8001_TCP_ADDR=10.0.0.2".to_string()));
    }

    #[test]
    fn parse() {
        assert_eq!(
            parse_link("/db:d").ok(),
            Some(("db".to_string(), "d".to_string()))
        );
        assert_eq!(
            parse_link("db").ok(),
            Some(("db".to_string(), "db".to_string()))
        );
        assert!(parse_link("a:b:c").is_err());
    }
}
