//! Mounts (binds, volumes, tmpfs) and the container's /etc files; later: cp, export, diff.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::spec::{MountSpec, Namespace};
use super::{ContainerService, MountPoint, Record};
use crate::error::{EngineError, Result};

/// The network a container starts with, as the network service resolved it.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    pub netns: Namespace,
    /// (ip, hostname aliases) lines to add to /etc/hosts.
    pub hosts: Vec<(String, String)>,
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

fn parse_bind(spec: &str) -> Result<(String, String, String)> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [d] => ("", *d, ""),
        [s, d] => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => {
            return Err(EngineError::invalid(format!(
                "invalid volume specification: '{spec}'"
            )))
        }
    };
    if dst.is_empty() {
        return Err(EngineError::invalid(format!(
            "invalid volume specification: '{spec}'"
        )));
    }
    if !dst.starts_with('/') {
        let kind = if src.starts_with('/') {
            "bind"
        } else {
            "volume"
        };
        return Err(EngineError::invalid(format!(
            "invalid volume specification: '{spec}': invalid mount config for type \"{kind}\": invalid mount path: '{dst}' mount path must be absolute"
        )));
    }
    if !src.is_empty() && !src.starts_with('/') {
        super::super::volumes::validate_name(src)?;
    }
    for m in mode.split(',').filter(|m| !m.is_empty()) {
        if !matches!(
            m,
            "ro" | "rw"
                | "z"
                | "Z"
                | "nocopy"
                | "private"
                | "rprivate"
                | "shared"
                | "rshared"
                | "slave"
                | "rslave"
                | "consistent"
                | "cached"
                | "delegated"
        ) {
            return Err(EngineError::invalid(format!("invalid mode: {m}")));
        }
    }
    Ok((src.to_string(), dst.to_string(), mode.to_string()))
}

/// Create-time checks of what `net_setup` needs at start, so a bad request fails `create`
/// (400/404) as with dockerd, rather than leaving a container that can never start.
async fn validate_networking(svc: &ContainerService, rec: &Record) -> Result<()> {
    let hc = &rec.host_config;
    crate::networks::proxy::bindings_from(
        hc.port_bindings.as_ref().unwrap_or(&HashMap::new()),
        &rec.config.exposed_ports.clone().unwrap_or_default(),
        hc.publish_all_ports.unwrap_or(false),
    )?;
    let mode = hc.network_mode.clone().unwrap_or_default();
    let mut nets: Vec<String> = Vec::new();
    match mode.as_str() {
        "" | "default" | "bridge" | "host" | "none" => {}
        m if m.starts_with("container:") => {
            let other = &m["container:".len()..];
            if other.is_empty() {
                return Err(EngineError::invalid(
                    "invalid network mode: container: requires a container name or ID",
                ));
            }
            svc.get(other).await?;
        }
        m => nets.push(m.to_string()),
    }
    if let Some(eps) = rec
        .networking
        .get("EndpointsConfig")
        .and_then(|e| e.as_object())
    {
        nets.extend(eps.keys().filter(|k| *k != "default").cloned());
    }
    for n in nets {
        let net = svc.networks.get(&n).await?;
        if !net.is_bridge() && mode != net.name {
            return Err(EngineError::invalid(
                "container cannot be disconnected from host network or connected to host network",
            ));
        }
    }
    for h in hc.extra_hosts.clone().unwrap_or_default() {
        let ok = h.split_once(':').is_some_and(|(n, ip)| {
            !n.is_empty() && (ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
        });
        if !ok {
            return Err(EngineError::invalid(format!(
                "invalid IP address in add-host: \"{h}\""
            )));
        }
    }
    Ok(())
}

/// A named or anonymous volume for a mount; `created` collects the ones this request made,
/// so a failed create can take them back.
async fn volume_for(
    svc: &ContainerService,
    name: Option<&str>,
    created: &mut Vec<String>,
) -> Result<crate::volumes::VolumeRecord> {
    let name = name.filter(|n| !n.is_empty());
    let existed = match name {
        Some(n) => svc.volumes.get(n).await.is_ok(),
        None => false,
    };
    let v = svc
        .volumes
        .create(name, None, HashMap::new(), HashMap::new())
        .await?;
    if !existed {
        created.push(v.name.clone());
    }
    Ok(v)
}

/// Resolve the request's binds, mounts, tmpfs and volumes into the record's mount list,
/// creating named/anonymous volumes as needed. On error nothing stays created.
pub async fn prepare_mounts(svc: &ContainerService, rec: Record) -> Result<Record> {
    validate_networking(svc, &rec).await?;
    let mut created = Vec::new();
    match resolve_mounts(svc, rec, &mut created).await {
        Ok(r) => Ok(r),
        Err(e) => {
            for v in created {
                let _ = svc.volumes.remove(&v, &[]).await;
            }
            Err(e)
        }
    }
}

async fn resolve_mounts(
    svc: &ContainerService,
    mut rec: Record,
    created: &mut Vec<String>,
) -> Result<Record> {
    let hc = rec.host_config.clone();
    let mut mounts: Vec<MountPoint> = Vec::new();
    let add = |m: MountPoint, mounts: &mut Vec<MountPoint>| -> Result<()> {
        if mounts.iter().any(|x| x.destination == m.destination) {
            return Err(EngineError::invalid(format!(
                "Duplicate mount point: {}",
                m.destination
            )));
        }
        mounts.push(m);
        Ok(())
    };
    // --volumes-from first: explicit mounts may override them.
    for vf in hc.volumes_from.clone().unwrap_or_default() {
        let (cname, mode) = vf.split_once(':').unwrap_or((&vf, ""));
        let other = svc.get(cname).await?;
        for m in other.rec.read().await.mounts.clone() {
            let mut m = m;
            if mode == "ro" {
                m.rw = false;
                m.mode = "ro".into();
            }
            mounts.push(m);
        }
    }
    for b in hc.binds.clone().unwrap_or_default() {
        let (src, dst, mode) = parse_bind(&b)?;
        mounts.retain(|m| m.destination != dst);
        let ro = mode.split(',').any(|m| m == "ro");
        if src.starts_with('/') {
            if !Path::new(&src).exists() {
                // dockerd creates a missing bind source for -v (not for --mount).
                std::fs::create_dir_all(&src).map_err(|e| {
                    EngineError::invalid(format!(
                        "error while creating mount source path '{src}': {e}"
                    ))
                })?;
            }
            add(
                MountPoint {
                    kind: "bind".into(),
                    name: None,
                    source: src,
                    destination: dst,
                    driver: None,
                    mode: mode.clone(),
                    rw: !ro,
                    propagation: "rprivate".into(),
                    options: vec![],
                },
                &mut mounts,
            )?;
        } else {
            let v = volume_for(svc, Some(src.as_str()), created).await?;
            add(
                MountPoint {
                    kind: "volume".into(),
                    name: Some(v.name.clone()),
                    source: svc.volumes.data_dir(&v.name).display().to_string(),
                    destination: dst,
                    driver: Some("local".into()),
                    mode: if mode.is_empty() {
                        "z".into()
                    } else {
                        mode.clone()
                    },
                    rw: !ro,
                    propagation: String::new(),
                    options: if mode.contains("nocopy") {
                        vec!["nocopy".into()]
                    } else {
                        vec![]
                    },
                },
                &mut mounts,
            )?;
        }
    }
    for m in hc.mounts.clone().unwrap_or_default() {
        use bollard_stubs::models::MountType as T;
        let dst = m.target.clone().unwrap_or_default();
        if !dst.starts_with('/') {
            return Err(EngineError::invalid(format!(
                "invalid mount config: mount path must be absolute: '{dst}'"
            )));
        }
        let ro = m.read_only.unwrap_or(false);
        let mp = match m.typ {
            Some(T::BIND) => {
                let src = m.source.clone().unwrap_or_default();
                if !Path::new(&src).exists() {
                    return Err(EngineError::invalid(format!(
                        "invalid mount config for type \"bind\": bind source path does not exist: {src}"
                    )));
                }
                MountPoint {
                    kind: "bind".into(),
                    name: None,
                    source: src,
                    destination: dst,
                    driver: None,
                    mode: String::new(),
                    rw: !ro,
                    propagation: "rprivate".into(),
                    options: vec![],
                }
            }
            Some(T::VOLUME) | None => {
                let v = volume_for(svc, m.source.as_deref(), created).await?;
                let nocopy = m
                    .volume_options
                    .as_ref()
                    .and_then(|o| o.no_copy)
                    .unwrap_or(false);
                MountPoint {
                    kind: "volume".into(),
                    name: Some(v.name.clone()),
                    source: svc.volumes.data_dir(&v.name).display().to_string(),
                    destination: dst,
                    driver: Some("local".into()),
                    mode: "z".into(),
                    rw: !ro,
                    propagation: String::new(),
                    options: if nocopy {
                        vec!["nocopy".into()]
                    } else {
                        vec![]
                    },
                }
            }
            Some(T::TMPFS) => {
                let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
                if let Some(o) = &m.tmpfs_options {
                    if let Some(sz) = o.size_bytes.filter(|s| *s > 0) {
                        opts.push(format!("size={sz}"));
                    }
                    if let Some(md) = o.mode.filter(|m| *m > 0) {
                        opts.push(format!("mode={md:o}"));
                    }
                }
                MountPoint {
                    kind: "tmpfs".into(),
                    name: None,
                    source: String::new(),
                    destination: dst,
                    driver: None,
                    mode: String::new(),
                    rw: !ro,
                    propagation: String::new(),
                    options: opts,
                }
            }
            Some(other) => {
                return Err(EngineError::invalid(format!(
                    "mount type {other} is not supported"
                )))
            }
        };
        mounts.retain(|x| x.destination != mp.destination);
        add(mp, &mut mounts)?;
    }
    for (dst, opts) in hc.tmpfs.clone().unwrap_or_default() {
        let mut o = vec![
            "nosuid".to_string(),
            "nodev".to_string(),
            "noexec".to_string(),
        ];
        o.extend(opts.split(',').filter(|s| !s.is_empty()).map(String::from));
        mounts.retain(|x| x.destination != dst);
        add(
            MountPoint {
                kind: "tmpfs".into(),
                name: None,
                source: String::new(),
                destination: dst,
                driver: None,
                mode: opts.clone(),
                rw: true,
                propagation: String::new(),
                options: o,
            },
            &mut mounts,
        )?;
    }
    // The image's and the request's VOLUME paths not covered above get anonymous volumes.
    for dst in rec.config.volumes.clone().unwrap_or_default() {
        if mounts.iter().any(|m| m.destination == dst) {
            continue;
        }
        let v = volume_for(svc, None, created).await?;
        mounts.push(MountPoint {
            kind: "volume".into(),
            name: Some(v.name.clone()),
            source: svc.volumes.data_dir(&v.name).display().to_string(),
            destination: dst,
            driver: Some("local".into()),
            mode: String::new(),
            rw: true,
            propagation: String::new(),
            options: vec!["anonymous".into()],
        });
    }
    rec.mounts = mounts;
    Ok(rec)
}

impl ContainerService {
    /// OCI mounts for the record's binds/volumes/tmpfs; copies image content into empty volumes.
    pub(crate) fn volume_mounts(&self, rec: &Record) -> Result<Vec<MountSpec>> {
        let rootfs = super::rootfs::Rootfs::new(&self.dir(&rec.id)).merged;
        let mut out = Vec::new();
        for m in &rec.mounts {
            match m.kind.as_str() {
                "tmpfs" => {
                    let mut o = m.options.clone();
                    if !m.rw {
                        o.push("ro".into());
                    }
                    out.push(MountSpec {
                        destination: m.destination.clone(),
                        kind: "tmpfs".into(),
                        source: "tmpfs".into(),
                        options: o,
                    })
                }
                _ => {
                    if m.kind == "volume" && !m.options.iter().any(|o| o == "nocopy") {
                        copy_up(&rootfs, &m.destination, Path::new(&m.source));
                    }
                    let mut o = vec!["rbind".to_string()];
                    o.push(if m.propagation.is_empty() {
                        "rprivate".into()
                    } else {
                        m.propagation.clone()
                    });
                    if !m.rw {
                        o.push("ro".into());
                    }
                    out.push(MountSpec {
                        destination: m.destination.clone(),
                        kind: "bind".into(),
                        source: m.source.clone(),
                        options: o,
                    })
                }
            }
        }
        Ok(out)
    }

    /// /etc/hostname, /etc/hosts, /etc/resolv.conf written per container and bind-mounted.
    pub(crate) async fn etc_mounts(&self, rec: &Record, net: &NetConfig) -> Result<Vec<MountSpec>> {
        let extra_hosts = rec.host_config.extra_hosts.clone().unwrap_or_default();
        // A look-up of the bridge network only for `--add-host NAME:host-gateway`.
        let host_gateway = if extra_hosts.iter().any(|h| h.ends_with(":host-gateway")) {
            self.host_gateway_ip().await
        } else {
            String::new()
        };
        let dir = self.dir(&rec.id);
        let hostname = rec.config.hostname.clone().unwrap_or_default();
        std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
        let mut hosts = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
        for h in extra_hosts {
            if let Some((name, ip)) = h.split_once(':') {
                let ip = if ip == "host-gateway" {
                    host_gateway.clone()
                } else {
                    ip.to_string()
                };
                hosts.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        for (ip, names) in &net.hosts {
            hosts.push_str(&format!("{ip}\t{names}\n"));
        }
        std::fs::write(dir.join("hosts"), hosts)?;
        let resolv = self.resolv_conf(rec, net);
        std::fs::write(dir.join("resolv.conf"), resolv)?;
        let bind = |name: &str, dst: &str| MountSpec {
            destination: dst.into(),
            kind: "bind".into(),
            source: dir.join(name).display().to_string(),
            options: vec!["rbind".into(), "rprivate".into()],
        };
        Ok(vec![
            bind("hostname", "/etc/hostname"),
            bind("hosts", "/etc/hosts"),
            bind("resolv.conf", "/etc/resolv.conf"),
        ])
    }

    fn resolv_conf(&self, rec: &Record, net: &NetConfig) -> String {
        let hc = &rec.host_config;
        let mut ns: Vec<String> = hc.dns.clone().unwrap_or_default();
        if ns.is_empty() {
            ns = net.nameservers.clone();
        }
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let mut search: Vec<String> = hc.dns_search.clone().unwrap_or_default();
        let mut options: Vec<String> = hc.dns_options.clone().unwrap_or_default();
        if ns.is_empty() {
            for l in host.lines() {
                let mut w = l.split_whitespace();
                match w.next() {
                    Some("nameserver") => {
                        if let Some(a) = w.next() {
                            // A loopback resolver of the host is unreachable from the container.
                            let lo = a.starts_with("127.") || a == "::1";
                            if !lo || matches!(net.netns, Namespace::Host) {
                                ns.push(a.to_string());
                            }
                        }
                    }
                    Some("search") if search.is_empty() => search = w.map(String::from).collect(),
                    Some("options") if options.is_empty() => {
                        options = w.map(String::from).collect()
                    }
                    _ => {}
                }
            }
            if ns.is_empty() {
                ns = vec!["8.8.8.8".into(), "8.8.4.4".into()];
            }
        }
        if !net.search.is_empty() && search.is_empty() {
            search = net.search.clone();
        }
        options.extend(net.options.iter().cloned());
        let mut out = String::new();
        for n in ns {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !search.is_empty() {
            out.push_str(&format!("search {}\n", search.join(" ")));
        }
        if !options.is_empty() {
            out.push_str(&format!("options {}\n", options.join(" ")));
        }
        out
    }

    pub(crate) async fn host_gateway_ip(&self) -> String {
        match self.networks.get_by_name("bridge").await {
            Ok(Some(n)) => n.gateway.unwrap_or_default(),
            _ => "172.17.0.1".into(),
        }
    }

    /// On removal: anonymous volumes go with `-v`, as in Docker.
    pub(crate) async fn release_volumes(&self, rec: &Record, remove_anonymous: bool) {
        if !remove_anonymous {
            return;
        }
        for m in &rec.mounts {
            if let Some(name) = &m.name {
                if let Ok(v) = self.volumes.get(name).await {
                    if v.anonymous == 1 && self.volume_users(name).await.is_empty() {
                        let _ = self.volumes.remove(name, &[]).await;
                    }
                }
            }
        }
    }

    /// Containers that mount volume `name`.
    pub async fn volume_users(&self, name: &str) -> Vec<String> {
        let mut v = Vec::new();
        for c in self.all() {
            let r = c.rec.read().await;
            if r.mounts.iter().any(|m| m.name.as_deref() == Some(name)) {
                v.push(r.id.clone());
            }
        }
        v
    }
}

/// Docker copies the image's content at a volume's mount point into the volume when the
/// volume is empty.
fn copy_up(rootfs: &Path, dest: &str, vol: &Path) {
    let src: PathBuf = super::rootfs::resolve_in_root(rootfs, dest);
    let empty = std::fs::read_dir(vol)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !empty || !src.is_dir() {
        return;
    }
    let has = std::fs::read_dir(&src)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if !has {
        return;
    }
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", src.display()))
        .arg(vol)
        .status();
    if !matches!(st, Ok(s) if s.success()) {
        tracing::warn!(src = %src.display(), "volume copy-up failed");
    }
}
