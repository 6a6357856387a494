//! The command set of the desktop UI: one function, [`Host::call`], that the
//! Tauri commands and the HTTP/WebSocket transport both use, so the UI runs
//! the same code against the same engine in the app and in a browser.
//!
//! Arguments and results are JSON.  Engine objects keep Docker's wire shape
//! (`Id`, `Names`, `State`...), which the UI types mirror.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters as qp;
use serde_json::{json, Value};

use crate::error::{HostError, Result};
use crate::host::Host;
use crate::launcher;
use crate::settings::Settings;

pub const COMMANDS: &[&str] = &[
    "engine.status",
    "engine.start",
    "engine.restart",
    "engine.stop",
    "engine.log",
    "settings.get",
    "settings.set",
    "system.info",
    "system.df",
    "system.prune",
    "containers.list",
    "containers.prune",
    "container.inspect",
    "container.start",
    "container.stop",
    "container.restart",
    "container.pause",
    "container.unpause",
    "container.kill",
    "container.remove",
    "container.top",
    "container.rename",
    "container.run",
    "images.list",
    "images.prune",
    "image.inspect",
    "image.history",
    "image.tag",
    "image.remove",
    "volumes.list",
    "volumes.prune",
    "volume.create",
    "volume.remove",
    "volume.inspect",
    "volume.browse",
    "networks.list",
    "networks.prune",
    "network.create",
    "network.remove",
    "network.inspect",
    "stream.close",
    "stream.input",
    "stream.resize",
    "open.url",
    "vm.status",
    "vm.settings.set",
    "app.mark",
];

// ---- argument helpers --------------------------------------------------------

pub fn arg_str(args: &Value, key: &str) -> Result<String> {
    match args.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(HostError::invalid(format!("missing argument {key:?}"))),
    }
}
pub fn opt_str(args: &Value, key: &str) -> Option<String> {
    args.get(key)
        .and_then(|v| v.as_str())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}
pub fn arg_bool(args: &Value, key: &str, default: bool) -> bool {
    args.get(key).and_then(|v| v.as_bool()).unwrap_or(default)
}
pub fn arg_u64(args: &Value, key: &str, default: u64) -> u64 {
    args.get(key).and_then(|v| v.as_u64()).unwrap_or(default)
}
fn to_value<T: serde::Serialize>(v: T) -> Result<Value> {
    serde_json::to_value(v)
        .map_err(|e| HostError::io(format!("cannot encode the engine's answer: {e}")))
}

/// Splits a command line the way a POSIX shell splits words (quotes and
/// backslashes; no expansion).
pub fn shell_split(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => match chars.next() {
                Some(n @ ('"' | '\\' | '$' | '`')) => cur.push(n),
                Some(n) => {
                    cur.push('\\');
                    cur.push(n)
                }
                None => return Err(HostError::invalid("unfinished escape in the command")),
            },
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(HostError::invalid("unbalanced quotes in the command"));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The run dialog's form, turned into Docker's create body (wire shape).
///
/// spec: `{image, name?, cmd? (string or array), env?: ["K=V"], ports?: [{host?, container, proto?, ip?}],
///         volumes?: [{source, target, readOnly?}], restart?: "no|always|unless-stopped|on-failure[:N]",
///         autoRemove?, labels?: {}}`
pub fn run_spec_to_body(spec: &Value) -> Result<Value> {
    let image = arg_str(spec, "image")?;
    let mut body = json!({"Image": image, "HostConfig": {}});
    match spec.get("cmd") {
        Some(Value::String(s)) if !s.trim().is_empty() => body["Cmd"] = json!(shell_split(s)?),
        Some(Value::Array(a)) if !a.is_empty() => body["Cmd"] = json!(a),
        _ => {}
    }
    if let Some(env) = spec.get("env").and_then(|v| v.as_array()) {
        let mut list = Vec::new();
        for e in env {
            let s = e.as_str().unwrap_or("").trim();
            if s.is_empty() {
                continue;
            }
            if s.starts_with('=') {
                return Err(HostError::invalid(format!(
                    "environment variable {s:?} has no name"
                )));
            }
            list.push(s.to_string());
        }
        if !list.is_empty() {
            body["Env"] = json!(list);
        }
    }
    if let Some(ports) = spec.get("ports").and_then(|v| v.as_array()) {
        let mut exposed = serde_json::Map::new();
        let mut bindings = serde_json::Map::new();
        for p in ports {
            let cport = match p.get("container") {
                Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
                Some(Value::String(s)) => s.trim().parse().unwrap_or(0),
                _ => 0,
            };
            if cport == 0 || cport > 65535 {
                return Err(HostError::invalid(format!(
                    "container port {} is not a port number",
                    p.get("container").unwrap_or(&Value::Null)
                )));
            }
            let proto = opt_str(p, "proto").unwrap_or_else(|| "tcp".into());
            if proto != "tcp" && proto != "udp" {
                return Err(HostError::invalid(format!(
                    "protocol {proto:?} must be tcp or udp"
                )));
            }
            let host = match p.get("host") {
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::String(s)) => s.trim().to_string(),
                _ => String::new(),
            };
            if !host.is_empty() && host.parse::<u16>().is_err() {
                return Err(HostError::invalid(format!(
                    "host port {host:?} is not a port number"
                )));
            }
            let key = format!("{cport}/{proto}");
            exposed.insert(key.clone(), json!({}));
            let entry = bindings.entry(key).or_insert_with(|| json!([]));
            entry
                .as_array_mut()
                .unwrap()
                .push(json!({"HostIp": opt_str(p, "ip").unwrap_or_default(), "HostPort": host}));
        }
        if !exposed.is_empty() {
            body["ExposedPorts"] = Value::Object(exposed);
            body["HostConfig"]["PortBindings"] = Value::Object(bindings);
        }
    }
    if let Some(vols) = spec.get("volumes").and_then(|v| v.as_array()) {
        let mut binds = Vec::new();
        for v in vols {
            let source = opt_str(v, "source").unwrap_or_default();
            let target = opt_str(v, "target").unwrap_or_default();
            if source.is_empty() && target.is_empty() {
                continue;
            }
            if !target.starts_with('/') {
                return Err(HostError::invalid(format!(
                    "mount target {target:?} must be an absolute path in the container"
                )));
            }
            let mut b = if source.is_empty() {
                target.clone()
            } else {
                format!("{source}:{target}")
            };
            if arg_bool(v, "readOnly", false) {
                b.push_str(":ro");
            }
            binds.push(b);
        }
        if !binds.is_empty() {
            body["HostConfig"]["Binds"] = json!(binds);
        }
    }
    if let Some(r) = opt_str(spec, "restart") {
        let (name, max) = match r.split_once(':') {
            Some((n, m)) => (
                n.to_string(),
                m.parse::<i64>().map_err(|_| {
                    HostError::invalid(format!(
                        "restart policy {r:?}: retry count must be a number"
                    ))
                })?,
            ),
            None => (r.clone(), 0),
        };
        if !["no", "always", "unless-stopped", "on-failure"].contains(&name.as_str()) {
            return Err(HostError::invalid(format!(
                "unknown restart policy {name:?}"
            )));
        }
        body["HostConfig"]["RestartPolicy"] = json!({"Name": name, "MaximumRetryCount": max});
    }
    if arg_bool(spec, "autoRemove", false) {
        body["HostConfig"]["AutoRemove"] = json!(true);
    }
    if let Some(l) = spec.get("labels").filter(|l| l.is_object()) {
        body["Labels"] = l.clone();
    }
    if arg_bool(spec, "tty", false) {
        body["Tty"] = json!(true);
        body["OpenStdin"] = json!(true);
    }
    Ok(body)
}

/// Adds `UsedBy: [container names]` to images (by image id) and
/// `Containers` counts, from a container list.
pub fn annotate_images(images: &mut [Value], containers: &[Value]) {
    let mut by_image: HashMap<String, Vec<String>> = HashMap::new();
    for c in containers {
        let id = c["ImageID"].as_str().unwrap_or("").to_string();
        let name = c["Names"][0]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        by_image.entry(id).or_default().push(name);
    }
    for i in images.iter_mut() {
        let used = by_image
            .get(i["Id"].as_str().unwrap_or(""))
            .cloned()
            .unwrap_or_default();
        i["Containers"] = json!(used.len());
        i["UsedBy"] = json!(used);
        let tags = i["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| t.as_str() != Some("<none>:<none>"))
                    .count()
            })
            .unwrap_or(0);
        i["Dangling"] = json!(tags == 0);
    }
}

/// Adds `UsedBy` to volumes (by volume name) from a container list.
pub fn annotate_volumes(volumes: &mut [Value], containers: &[Value]) {
    let mut by_vol: HashMap<String, Vec<String>> = HashMap::new();
    for c in containers {
        let name = c["Names"][0]
            .as_str()
            .unwrap_or("")
            .trim_start_matches('/')
            .to_string();
        for m in c["Mounts"].as_array().into_iter().flatten() {
            if m["Type"] == "volume" {
                if let Some(v) = m["Name"].as_str() {
                    by_vol.entry(v.to_string()).or_default().push(name.clone());
                }
            }
        }
    }
    for v in volumes.iter_mut() {
        let used = by_vol
            .get(v["Name"].as_str().unwrap_or(""))
            .cloned()
            .unwrap_or_default();
        v["UsedBy"] = json!(used);
    }
}

/// Adds `Attached: [container names]` to networks (by id or name).
pub fn annotate_networks(networks: &mut [Value], containers: &[Value]) {
    for n in networks.iter_mut() {
        let id = n["Id"].as_str().unwrap_or("").to_string();
        let name = n["Name"].as_str().unwrap_or("").to_string();
        let mut attached = Vec::new();
        for c in containers {
            if let Some(nets) = c["NetworkSettings"]["Networks"].as_object() {
                let hit = nets.iter().any(|(k, v)| {
                    *k == name || (!id.is_empty() && v["NetworkID"].as_str() == Some(&id))
                });
                if hit {
                    attached.push(
                        c["Names"][0]
                            .as_str()
                            .unwrap_or("")
                            .trim_start_matches('/')
                            .to_string(),
                    );
                }
            }
        }
        n["Attached"] = json!(attached);
    }
}

/// Lists a directory inside a volume's mount point; `rel` may not leave it.
pub fn browse_dir(root: &std::path::Path, rel: &str) -> Result<Value> {
    let mut path = root.to_path_buf();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(HostError::invalid("the path may not leave the volume")),
            p => path.push(p),
        }
    }
    let rd = std::fs::read_dir(&path).map_err(|e| {
        HostError::io(format!(
            "cannot list {} (the volume's files are readable by root and the engine's group): {e}",
            path.display()
        ))
    })?;
    let mut entries = Vec::new();
    for e in rd.flatten() {
        let md = match e.path().symlink_metadata() {
            Ok(m) => m,
            Err(_) => continue,
        };
        use std::os::unix::fs::PermissionsExt;
        let kind = if md.is_dir() {
            "dir"
        } else if md.file_type().is_symlink() {
            "link"
        } else {
            "file"
        };
        let mtime = md
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        entries.push(json!({
            "name": e.file_name().to_string_lossy(),
            "kind": kind,
            "size": md.len(),
            "mode": format!("{:o}", md.permissions().mode() & 0o7777),
            "mtime": mtime,
        }));
    }
    entries.sort_by(|a, b| {
        let da = a["kind"] != "dir";
        let db = b["kind"] != "dir";
        (da, a["name"].as_str()).cmp(&(db, b["name"].as_str()))
    });
    Ok(json!({"path": rel, "entries": entries}))
}

fn list_as_values<T: serde::Serialize>(v: Vec<T>) -> Result<Vec<Value>> {
    v.into_iter().map(to_value).collect()
}

impl Host {
    /// Runs one command.  Every failure comes back as a [`HostError`] whose
    /// message is meant for the user.
    pub async fn call(self: &Arc<Self>, cmd: &str, args: Value) -> Result<Value> {
        let r = self.call_inner(cmd, &args).await;
        if let Err(e) = &r {
            tracing::debug!(cmd, error = %e.message, "command failed");
            if e.is_unreachable() {
                self.poke();
            }
        }
        r
    }

    async fn call_inner(self: &Arc<Self>, cmd: &str, args: &Value) -> Result<Value> {
        let id = || arg_str(args, "id");
        match cmd {
            // ---- engine & settings ----
            "engine.status" => {
                let mut s = to_value(self.engine_state())?;
                if let Ok(d) = self.docker() {
                    if let Ok(info) = d.info().await {
                        s["info"] = to_value(info)?;
                    }
                }
                s["settingsPath"] = json!(self.settings_path.display().to_string());
                s["mode"] = json!("native");
                Ok(s)
            }
            "engine.start" | "engine.restart" => self.start_engine(cmd == "engine.restart").await,
            "engine.stop" => self.stop_engine().await,
            "engine.log" => {
                let path = self.settings().engine_log;
                let lines = arg_u64(args, "lines", 400) as usize;
                let text = tokio::fs::read(&path).await.map_err(|e| {
                    HostError::io(format!("cannot read the engine log {path}: {e}"))
                })?;
                let text = strip_ansi(&String::from_utf8_lossy(&text));
                let all: Vec<&str> = text.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                Ok(json!({"path": path, "text": tail}))
            }
            "settings.get" => Ok(
                json!({"settings": self.settings(), "path": self.settings_path.display().to_string(), "dockerHost": self.docker_host()}),
            ),
            "settings.set" => {
                let mut current = to_value(self.settings())?;
                let patch = args
                    .get("settings")
                    .ok_or_else(|| HostError::invalid("missing argument \"settings\""))?;
                for (k, v) in patch.as_object().into_iter().flatten() {
                    current[k] = v.clone();
                }
                let new: Settings = serde_json::from_value(current)?;
                new.validate()?;
                if new.start_at_login != crate::autostart::is_enabled() {
                    let exe = std::env::current_exe()
                        .map_err(|e| HostError::io(format!("cannot find the app's binary: {e}")))?;
                    crate::autostart::set(new.start_at_login, &exe)?;
                }
                new.save(&self.settings_path)?;
                let host_changed = new.docker_host != self.settings().docker_host;
                *self.settings.write().unwrap() = new.clone();
                if host_changed {
                    self.poke();
                }
                Ok(
                    json!({"settings": new, "path": self.settings_path.display().to_string(), "dockerHost": self.docker_host()}),
                )
            }
            "system.info" => {
                let d = self.docker()?;
                let (info, version) = tokio::try_join!(d.info(), d.version())?;
                Ok(json!({"info": info, "version": version}))
            }
            "system.df" => to_value(self.docker()?.df(None::<qp::DataUsageOptions>).await?),
            "system.prune" => {
                let d = self.docker()?;
                let mut out = json!({});
                let mut reclaimed: i64 = 0;
                if arg_bool(args, "containers", true) {
                    let r = d
                        .prune_containers(None::<qp::PruneContainersOptions>)
                        .await?;
                    reclaimed += r.space_reclaimed.unwrap_or(0);
                    out["containers"] = json!(r.containers_deleted.unwrap_or_default());
                }
                if arg_bool(args, "networks", true) {
                    let r = d.prune_networks(None::<qp::PruneNetworksOptions>).await?;
                    out["networks"] = json!(r.networks_deleted.unwrap_or_default());
                }
                if arg_bool(args, "images", true) {
                    let all = arg_bool(args, "allImages", false);
                    let filters =
                        HashMap::from([("dangling".to_string(), vec![(!all).to_string()])]);
                    let r = d
                        .prune_images(Some(qp::PruneImagesOptions {
                            filters: Some(filters),
                        }))
                        .await?;
                    reclaimed += r.space_reclaimed.unwrap_or(0);
                    out["images"] = to_value(r.images_deleted.unwrap_or_default())?;
                }
                if arg_bool(args, "volumes", false) {
                    let r = d.prune_volumes(None::<qp::PruneVolumesOptions>).await?;
                    reclaimed += r.space_reclaimed.unwrap_or(0);
                    out["volumes"] = json!(r.volumes_deleted.unwrap_or_default());
                }
                out["spaceReclaimed"] = json!(reclaimed);
                Ok(out)
            }

            // ---- containers ----
            "containers.list" => {
                let d = self.docker()?;
                let list = d
                    .list_containers(Some(qp::ListContainersOptions {
                        all: arg_bool(args, "all", true),
                        ..Default::default()
                    }))
                    .await?;
                Ok(Value::Array(list_as_values(list)?))
            }
            "containers.prune" => to_value(
                self.docker()?
                    .prune_containers(None::<qp::PruneContainersOptions>)
                    .await?,
            ),
            "container.inspect" => to_value(
                self.docker()?
                    .inspect_container(&id()?, None::<qp::InspectContainerOptions>)
                    .await?,
            ),
            "container.start" => {
                self.docker()?
                    .start_container(&id()?, None::<qp::StartContainerOptions>)
                    .await?;
                Ok(json!({}))
            }
            "container.stop" => {
                let t = args
                    .get("timeout")
                    .and_then(|v| v.as_i64())
                    .map(|t| t as i32);
                self.docker()?
                    .stop_container(&id()?, Some(qp::StopContainerOptions { t, signal: None }))
                    .await?;
                Ok(json!({}))
            }
            "container.restart" => {
                self.docker()?
                    .restart_container(&id()?, None::<qp::RestartContainerOptions>)
                    .await?;
                Ok(json!({}))
            }
            "container.pause" => {
                self.docker()?.pause_container(&id()?).await?;
                Ok(json!({}))
            }
            "container.unpause" => {
                self.docker()?.unpause_container(&id()?).await?;
                Ok(json!({}))
            }
            "container.kill" => {
                let signal = opt_str(args, "signal").unwrap_or_else(|| "SIGKILL".into());
                self.docker()?
                    .kill_container(&id()?, Some(qp::KillContainerOptions { signal }))
                    .await?;
                Ok(json!({}))
            }
            "container.remove" => {
                let opts = qp::RemoveContainerOptions {
                    force: arg_bool(args, "force", false),
                    v: arg_bool(args, "volumes", false),
                    link: false,
                };
                self.docker()?.remove_container(&id()?, Some(opts)).await?;
                Ok(json!({}))
            }
            "container.top" => to_value(
                self.docker()?
                    .top_processes(&id()?, None::<qp::TopOptions>)
                    .await?,
            ),
            "container.rename" => {
                let name = arg_str(args, "name")?;
                self.docker()?
                    .rename_container(&id()?, qp::RenameContainerOptions { name })
                    .await?;
                Ok(json!({}))
            }
            "container.run" => {
                let spec = args
                    .get("spec")
                    .ok_or_else(|| HostError::invalid("missing argument \"spec\""))?;
                let body = run_spec_to_body(spec)?;
                let body: bollard::models::ContainerCreateBody = serde_json::from_value(body)?;
                let d = self.docker()?;
                let name = opt_str(spec, "name");
                let created = d
                    .create_container(
                        Some(qp::CreateContainerOptions {
                            name,
                            ..Default::default()
                        }),
                        body,
                    )
                    .await?;
                if arg_bool(spec, "start", true) {
                    if let Err(e) = d
                        .start_container(&created.id, None::<qp::StartContainerOptions>)
                        .await
                    {
                        let e = HostError::from(e);
                        return Err(HostError {
                            message: format!(
                                "the container was created but did not start: {}",
                                e.message
                            ),
                            ..e
                        });
                    }
                }
                Ok(json!({"Id": created.id, "Warnings": created.warnings}))
            }

            // ---- images ----
            "images.list" => {
                let d = self.docker()?;
                let (images, containers) = tokio::try_join!(
                    d.list_images(Some(qp::ListImagesOptions {
                        all: false,
                        ..Default::default()
                    })),
                    d.list_containers(Some(qp::ListContainersOptions {
                        all: true,
                        ..Default::default()
                    })),
                )?;
                let mut images = list_as_values(images)?;
                annotate_images(&mut images, &list_as_values(containers)?);
                Ok(Value::Array(images))
            }
            "images.prune" => {
                let all = arg_bool(args, "all", false);
                let filters = HashMap::from([("dangling".to_string(), vec![(!all).to_string()])]);
                to_value(
                    self.docker()?
                        .prune_images(Some(qp::PruneImagesOptions {
                            filters: Some(filters),
                        }))
                        .await?,
                )
            }
            "image.inspect" => to_value(self.docker()?.inspect_image(&id()?).await?),
            "image.history" => to_value(self.docker()?.image_history(&id()?).await?),
            "image.tag" => {
                let (repo, tag) = crate::streams::split_reference(&arg_str(args, "target")?);
                self.docker()?
                    .tag_image(
                        &id()?,
                        Some(qp::TagImageOptions {
                            repo: Some(repo),
                            tag: Some(tag),
                        }),
                    )
                    .await?;
                Ok(json!({}))
            }
            "image.remove" => {
                let opts = qp::RemoveImageOptions {
                    force: arg_bool(args, "force", false),
                    noprune: false,
                    platforms: None,
                };
                to_value(
                    self.docker()?
                        .remove_image(&id()?, Some(opts), None)
                        .await?,
                )
            }

            // ---- volumes ----
            "volumes.list" => {
                let d = self.docker()?;
                let (vols, containers) = tokio::try_join!(
                    d.list_volumes(None::<qp::ListVolumesOptions>),
                    d.list_containers(Some(qp::ListContainersOptions {
                        all: true,
                        ..Default::default()
                    })),
                )?;
                let mut vols = list_as_values(vols.volumes.unwrap_or_default())?;
                annotate_volumes(&mut vols, &list_as_values(containers)?);
                Ok(Value::Array(vols))
            }
            "volumes.prune" => to_value(
                self.docker()?
                    .prune_volumes(None::<qp::PruneVolumesOptions>)
                    .await?,
            ),
            "volume.create" => {
                let mut req = json!({"Name": opt_str(args, "name").unwrap_or_default(), "Driver": opt_str(args, "driver").unwrap_or_else(|| "local".into())});
                if let Some(l) = args.get("labels").filter(|l| l.is_object()) {
                    req["Labels"] = l.clone();
                }
                let req: bollard::models::VolumeCreateRequest = serde_json::from_value(req)?;
                to_value(self.docker()?.create_volume(req).await?)
            }
            "volume.remove" => {
                let name = arg_str(args, "name")?;
                self.docker()?
                    .remove_volume(
                        &name,
                        Some(qp::RemoveVolumeOptions {
                            force: arg_bool(args, "force", false),
                        }),
                    )
                    .await?;
                Ok(json!({}))
            }
            "volume.inspect" => to_value(
                self.docker()?
                    .inspect_volume(&arg_str(args, "name")?)
                    .await?,
            ),
            "volume.browse" => {
                let v = self
                    .docker()?
                    .inspect_volume(&arg_str(args, "name")?)
                    .await?;
                let rel = opt_str(args, "path").unwrap_or_default();
                let root = std::path::PathBuf::from(v.mountpoint);
                tokio::task::spawn_blocking(move || browse_dir(&root, &rel))
                    .await
                    .map_err(|e| HostError::io(e.to_string()))?
            }

            // ---- networks ----
            "networks.list" => {
                let d = self.docker()?;
                let (nets, containers) = tokio::try_join!(
                    d.list_networks(None::<qp::ListNetworksOptions>),
                    d.list_containers(Some(qp::ListContainersOptions {
                        all: true,
                        ..Default::default()
                    })),
                )?;
                let mut nets = list_as_values(nets)?;
                annotate_networks(&mut nets, &list_as_values(containers)?);
                Ok(Value::Array(nets))
            }
            "networks.prune" => to_value(
                self.docker()?
                    .prune_networks(None::<qp::PruneNetworksOptions>)
                    .await?,
            ),
            "network.inspect" => to_value(
                self.docker()?
                    .inspect_network(&id()?, None::<qp::InspectNetworkOptions>)
                    .await?,
            ),
            "network.create" => {
                let name = arg_str(args, "name")?;
                let mut req = json!({"Name": name, "Driver": opt_str(args, "driver").unwrap_or_else(|| "bridge".into()), "Internal": arg_bool(args, "internal", false)});
                if let Some(subnet) = opt_str(args, "subnet") {
                    let mut cfg = json!({"Subnet": subnet});
                    if let Some(gw) = opt_str(args, "gateway") {
                        cfg["Gateway"] = json!(gw);
                    }
                    req["IPAM"] = json!({"Driver": "default", "Config": [cfg]});
                }
                let req: bollard::models::NetworkCreateRequest = serde_json::from_value(req)?;
                to_value(self.docker()?.create_network(req).await?)
            }
            "network.remove" => {
                self.docker()?.remove_network(&id()?).await?;
                Ok(json!({}))
            }

            // ---- streams ----
            "stream.close" => Ok(json!({"closed": self.close_stream(arg_u64(args, "id", 0))})),
            "stream.input" => {
                let data = args.get("data").and_then(|v| v.as_str()).unwrap_or("");
                self.stream_input(
                    arg_u64(args, "id", 0),
                    bytes::Bytes::copy_from_slice(data.as_bytes()),
                )?;
                Ok(json!({}))
            }
            "stream.resize" => {
                self.stream_resize(
                    arg_u64(args, "id", 0),
                    arg_u64(args, "cols", 0) as u16,
                    arg_u64(args, "rows", 0) as u16,
                )
                .await?;
                Ok(json!({}))
            }
            "open.url" => {
                let url = arg_str(args, "url")?;
                open_url(&url)?;
                Ok(json!({}))
            }
            // A performance mark from the UI (bench/app): one line on stderr,
            // `BERTH_MARK containers-painted rows=20 t_ms=812`.
            "app.mark" => {
                let what: String = opt_str(args, "what")
                    .unwrap_or_else(|| "mark".into())
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    .take(64)
                    .collect();
                let t_ms = ms_since_process_start();
                let mut line = format!("BERTH_MARK {what}");
                if let Some(rows) = args.get("rows").and_then(Value::as_u64) {
                    line.push_str(&format!(" rows={rows}"));
                }
                if let Some(ms) = t_ms {
                    line.push_str(&format!(" t_ms={ms}"));
                }
                eprintln!("{line}");
                Ok(json!({"what": what, "tMs": t_ms}))
            }
            "vm.status" => crate::vm::status(),
            "vm.settings.set" => crate::vm::set(args),
            other => Err(HostError::invalid(format!("unknown command {other:?}"))),
        }
    }

    /// Stops the local engine (its containers keep running under their shims, as with
    /// dockerd's live restore) and waits until it no longer answers.
    pub async fn stop_engine(self: &Arc<Self>) -> Result<Value> {
        let addr = self.docker_host();
        let Some(sock) = addr.strip_prefix("unix://") else {
            return Err(HostError::invalid(format!(
                "{addr} is a remote engine: stop it on its machine"
            )));
        };
        let settings = self.settings();
        let facts = launcher::gather(sock, &settings.engine_log);
        let plan = launcher::plan_stop(&facts)?;
        launcher::run(&plan, &settings.engine_log).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let up = match self.docker() {
                Ok(d) => d.ping().await.is_ok(),
                Err(_) => false,
            };
            if !up {
                self.set_state("stopped", None, None);
                self.poke();
                return Ok(
                    json!({"stopped": true, "message": format!("stopped with {}", plan.description)}),
                );
            }
            if tokio::time::Instant::now() > deadline {
                return Err(HostError::io(format!(
                    "{} ran, but the engine still answers on {sock} after 30 s; see the engine log ({})",
                    plan.description, settings.engine_log
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts (or restarts) the local engine and waits until it answers.
    pub async fn start_engine(self: &Arc<Self>, restart: bool) -> Result<Value> {
        let addr = self.docker_host();
        if !restart {
            if let Ok(d) = self.docker() {
                if d.ping().await.is_ok() {
                    return Ok(
                        json!({"started": false, "message": "the engine is already running"}),
                    );
                }
            }
        }
        let Some(sock) = addr.strip_prefix("unix://") else {
            return Err(HostError::invalid(format!(
                "{addr} is a remote engine: start it on its machine"
            )));
        };
        let settings = self.settings();
        let facts = launcher::gather(sock, &settings.engine_log);
        let plan = launcher::plan(&facts, restart)?;
        self.starting.store(true, Ordering::SeqCst);
        self.set_state("starting", None, None);
        if let Err(e) = launcher::run(&plan, &settings.engine_log).await {
            self.starting.store(false, Ordering::SeqCst);
            self.set_state("stopped", None, Some(e.clone()));
            return Err(e);
        }
        if restart {
            // Let the old engine go before waiting for the new one.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(d) = self.docker() {
                if d.ping().await.is_ok() {
                    self.starting.store(false, Ordering::SeqCst);
                    self.poke();
                    return Ok(
                        json!({"started": true, "message": format!("started with {}", plan.description)}),
                    );
                }
            }
            if tokio::time::Instant::now() > deadline {
                self.starting.store(false, Ordering::SeqCst);
                let e = HostError::io(format!(
                    "{} ran, but the engine did not answer on {sock} within 30 s; see the engine log ({})",
                    plan.description, settings.engine_log
                ));
                self.set_state("stopped", None, Some(e.clone()));
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Removes terminal colour sequences (berthd's log is written for a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\u{1b}' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if ('@'..='~').contains(&d) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Opens a web page (a published port) in the default browser.
/// Milliseconds since this process was started by the kernel (`fork`/`exec`,
/// so dynamic loading and everything before `main` count): `/proc/self/stat`'s
/// start time (clock ticks since boot, so 10 ms steps) against `CLOCK_BOOTTIME`.
#[cfg(target_os = "linux")]
pub fn ms_since_process_start() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22; the command name (field 2, in parentheses) may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf and clock_gettime only write to the timespec we pass.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    if hz <= 0 || unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return None;
    }
    let now_ms = now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000;
    Some(now_ms.saturating_sub(ticks * 1000 / hz as u64))
}

#[cfg(not(target_os = "linux"))]
pub fn ms_since_process_start() -> Option<u64> {
    None
}

pub fn open_url(url: &str) -> Result<()> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(HostError::invalid(format!("{url:?} is not a web address")));
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(|_| ())
        .map_err(|e| HostError::io(format!("cannot open {url} with {opener}: {e}")))
}

/// Names of the commands, for checks in the transports.
pub fn is_command(name: &str) -> bool {
    COMMANDS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_is_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ready"),
            "2026  INFO ready"
        );
    }

    #[test]
    fn shell_words() {
        assert_eq!(
            shell_split("sh -c 'echo hi; sleep 1'").unwrap(),
            vec!["sh", "-c", "echo hi; sleep 1"]
        );
        assert_eq!(
            shell_split(r#"a "b c" d\ e """#).unwrap(),
            vec!["a", "b c", "d e", ""]
        );
        assert_eq!(shell_split("  ").unwrap(), Vec::<String>::new());
        assert!(shell_split("echo 'oops").is_err());
    }

    #[test]
    fn run_dialog_to_create_body() {
        let spec = json!({
            "image": "busybox:latest", "name": "web",
            "cmd": "httpd -f -p 8080",
            "env": ["A=1", "", "B=two words"],
            "ports": [{"host": "18080", "container": 8080}, {"container": "53", "proto": "udp", "ip": "127.0.0.1"}],
            "volumes": [{"source": "data", "target": "/data"}, {"source": "/etc", "target": "/host-etc", "readOnly": true}],
            "restart": "on-failure:3", "autoRemove": false
        });
        let b = run_spec_to_body(&spec).unwrap();
        assert_eq!(b["Image"], "busybox:latest");
        assert_eq!(b["Cmd"], json!(["httpd", "-f", "-p", "8080"]));
        assert_eq!(b["Env"], json!(["A=1", "B=two words"]));
        assert_eq!(b["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
        assert_eq!(
            b["HostConfig"]["PortBindings"]["8080/tcp"],
            json!([{"HostIp": "", "HostPort": "18080"}])
        );
        assert_eq!(
            b["HostConfig"]["PortBindings"]["53/udp"],
            json!([{"HostIp": "127.0.0.1", "HostPort": ""}])
        );
        assert_eq!(
            b["HostConfig"]["Binds"],
            json!(["data:/data", "/etc:/host-etc:ro"])
        );
        assert_eq!(
            b["HostConfig"]["RestartPolicy"],
            json!({"Name": "on-failure", "MaximumRetryCount": 3})
        );
        // bollard accepts it, and writes it back in Docker's shape.
        let typed: bollard::models::ContainerCreateBody =
            serde_json::from_value(b.clone()).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        assert_eq!(back["ExposedPorts"], b["ExposedPorts"]);
        assert_eq!(
            back["HostConfig"]["PortBindings"],
            b["HostConfig"]["PortBindings"]
        );
        assert_eq!(back["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
    }

    #[test]
    fn run_dialog_errors_are_words() {
        let e = run_spec_to_body(&json!({})).unwrap_err();
        assert_eq!(e.message, "missing argument \"image\"");
        let e =
            run_spec_to_body(&json!({"image": "x", "ports": [{"container": "http"}]})).unwrap_err();
        assert!(e.message.contains("not a port number"), "{}", e.message);
        let e =
            run_spec_to_body(&json!({"image": "x", "ports": [{"container": 80, "host": "99999"}]}))
                .unwrap_err();
        assert!(e.message.contains("host port"), "{}", e.message);
        let e = run_spec_to_body(
            &json!({"image": "x", "volumes": [{"source": "v", "target": "data"}]}),
        )
        .unwrap_err();
        assert!(e.message.contains("absolute"), "{}", e.message);
        let e = run_spec_to_body(&json!({"image": "x", "restart": "sometimes"})).unwrap_err();
        assert!(e.message.contains("restart policy"), "{}", e.message);
    }

    #[test]
    fn in_use_marks() {
        let containers = vec![
            json!({"Names": ["/web"], "ImageID": "sha256:a", "Mounts": [{"Type": "volume", "Name": "data"}, {"Type": "bind"}],
                   "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "n1"}, "front": {"NetworkID": "n2"}}}}),
            json!({"Names": ["/db"], "ImageID": "sha256:a", "Mounts": [], "NetworkSettings": {"Networks": {"bridge": {"NetworkID": "n1"}}}}),
        ];
        let mut images = vec![
            json!({"Id": "sha256:a", "RepoTags": ["busybox:latest"]}),
            json!({"Id": "sha256:b", "RepoTags": []}),
        ];
        annotate_images(&mut images, &containers);
        assert_eq!(images[0]["UsedBy"], json!(["web", "db"]));
        assert_eq!(images[0]["Dangling"], false);
        assert_eq!(images[1]["Containers"], 0);
        assert_eq!(images[1]["Dangling"], true);
        let mut vols = vec![json!({"Name": "data"}), json!({"Name": "free"})];
        annotate_volumes(&mut vols, &containers);
        assert_eq!(vols[0]["UsedBy"], json!(["web"]));
        assert_eq!(vols[1]["UsedBy"], json!([]));
        let mut nets = vec![
            json!({"Id": "n1", "Name": "bridge"}),
            json!({"Id": "n2", "Name": "front"}),
            json!({"Id": "n3", "Name": "none"}),
        ];
        annotate_networks(&mut nets, &containers);
        assert_eq!(nets[0]["Attached"], json!(["web", "db"]));
        assert_eq!(nets[1]["Attached"], json!(["web"]));
        assert_eq!(nets[2]["Attached"], json!([]));
    }

    #[test]
    fn browsing_stays_inside_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("a.txt"), "hello").unwrap();
        std::fs::write(dir.path().join("sub/b"), "").unwrap();
        let v = browse_dir(dir.path(), "").unwrap();
        let names: Vec<_> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["sub", "a.txt"]);
        assert_eq!(v["entries"][1]["size"], 5);
        assert_eq!(
            browse_dir(dir.path(), "sub").unwrap()["entries"][0]["name"],
            "b"
        );
        assert!(browse_dir(dir.path(), "../etc").is_err());
    }

    #[tokio::test]
    async fn app_mark_reports_the_time_since_the_process_started() {
        let dir = tempfile::tempdir().unwrap();
        let h = Host::new(dir.path().join("s.json"));
        let r = h
            .call(
                "app.mark",
                json!({"what": "containers-painted\nx", "rows": 3}),
            )
            .await
            .unwrap();
        assert_eq!(r["what"], "containers-paintedx");
        if cfg!(target_os = "linux") {
            let ms = r["tMs"].as_u64().unwrap();
            assert!(ms < 24 * 3600 * 1000, "{ms}");
        }
    }

    #[tokio::test]
    async fn unknown_commands_and_missing_args() {
        let dir = tempfile::tempdir().unwrap();
        let h = Host::new(dir.path().join("s.json"));
        let e = h.call("nope", json!({})).await.unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Invalid);
        let e = h
            .call("stream.input", json!({"id": 42, "data": "x"}))
            .await
            .unwrap_err();
        assert!(e.message.contains("closed"));
    }

    #[tokio::test]
    async fn a_missing_engine_is_reported_in_words() {
        let dir = tempfile::tempdir().unwrap();
        let h = Host::new(dir.path().join("s.json"));
        let sock = dir.path().join("none.sock");
        h.call(
            "settings.set",
            json!({"settings": {"dockerHost": sock.display().to_string()}}),
        )
        .await
        .unwrap();
        let e = h.call("containers.list", json!({})).await.unwrap_err();
        assert!(e.is_unreachable(), "{e:?}");
        assert!(e.message.contains("none.sock"), "{}", e.message);
        // The settings were saved.
        let s = Settings::load(&dir.path().join("s.json")).unwrap();
        assert!(s.docker_host.ends_with("none.sock"));
        let e = h
            .call("settings.set", json!({"settings": {"theme": "neon"}}))
            .await
            .unwrap_err();
        assert!(e.message.contains("theme"));
    }

    /// Settings → start at login writes the XDG autostart entry, and turning it off removes it.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn start_at_login_writes_and_removes_the_autostart_entry() {
        let dir = tempfile::tempdir().unwrap();
        // Only this test reads XDG_CONFIG_HOME (nextest runs each test in its own process).
        std::env::set_var("XDG_CONFIG_HOME", dir.path().join("config"));
        let entry = dir.path().join("config/autostart/berth.desktop");
        let h = Host::new(dir.path().join("s.json"));
        h.call("settings.set", json!({"settings": {"startAtLogin": true}}))
            .await
            .unwrap();
        let text = std::fs::read_to_string(&entry).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert!(
            text.contains(&format!("Exec=\"{}\" --hidden", exe.display())),
            "{text}"
        );
        assert!(
            Settings::load(&dir.path().join("s.json"))
                .unwrap()
                .start_at_login
        );
        h.call("settings.set", json!({"settings": {"startAtLogin": false}}))
            .await
            .unwrap();
        assert!(!entry.exists());
    }
}
