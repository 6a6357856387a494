//! Container and exec endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bollard_stubs::models::ContainerCreateBody;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::hijack::{content_type, hijack};
use super::{ApiVersion, Params};
use crate::containers::attach::AttachOpts;
use crate::containers::exec::ExecCreate;
use crate::containers::logs::LogOptions;
use crate::containers::{Container, Record, Status};
use crate::daemon::Engine;
use crate::error::{EngineError, Result};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/containers/json", get(list))
        .route("/containers/create", post(create))
        .route("/containers/prune", post(prune))
        .route("/containers/{id}/json", get(inspect))
        .route("/containers/{id}/start", post(start))
        .route("/containers/{id}/stop", post(stop))
        .route("/containers/{id}/restart", post(restart))
        .route("/containers/{id}/kill", post(kill))
        .route("/containers/{id}/pause", post(pause))
        .route("/containers/{id}/unpause", post(unpause))
        .route("/containers/{id}/wait", post(wait))
        .route("/containers/{id}/rename", post(rename))
        .route("/containers/{id}/logs", get(logs))
        .route("/containers/{id}/attach", post(attach))
        .route("/containers/{id}/attach/ws", get(attach_ws))
        .route("/containers/{id}/resize", post(resize))
        .route("/containers/{id}/top", get(top))
        .route("/containers/{id}/stats", get(stats))
        .route("/containers/{id}/update", post(update))
        .route("/containers/{id}/exec", post(exec_create))
        .route("/containers/{id}", delete(remove))
        // dockerd's `/containers/{name:.*}`: a link name (`parent/alias`) has a slash.
        .route("/containers/{parent}/{alias}", delete(remove_by_link_name))
        .route("/exec/{id}/start", post(exec_start))
        .route("/exec/{id}/resize", post(exec_resize))
        .route("/exec/{id}/json", get(exec_inspect))
}

/// Docker's "Up 5 minutes" style durations.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        _ if s < 48 * 3600 => format!("{} hours", s / 3600),
        _ if s < 7 * 24 * 3600 * 2 => format!("{} days", s / 86400),
        _ if s < 30 * 24 * 3600 * 3 => format!("{} weeks", s / (7 * 86400)),
        _ if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 86400)),
        _ => format!("{} years", s / (365 * 86400)),
    }
}

fn since(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|t| chrono::Utc::now().signed_duration_since(t).num_seconds())
        .unwrap_or(0)
}

fn status_text(r: &Record) -> String {
    let health = r.state.health.as_ref().map(|h| match h.status.as_str() {
        "starting" => " (health: starting)".to_string(),
        s => format!(" ({s})"),
    });
    match r.state.status {
        Status::Running => format!(
            "Up {}{}",
            human_duration(since(&r.state.started_at)),
            health.unwrap_or_default()
        ),
        Status::Paused => format!("Up {} (Paused)", human_duration(since(&r.state.started_at))),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            r.state.exit_code,
            human_duration(since(&r.state.finished_at))
        ),
        Status::Exited if r.has_been_started || !r.state.finished_at.is_empty() => format!(
            "Exited ({}) {} ago",
            r.state.exit_code,
            human_duration(since(&r.state.finished_at))
        ),
        Status::Removing => "Removal In Progress".into(),
        Status::Dead => "Dead".into(),
        _ => "Created".into(),
    }
}

fn mounts_json(r: &Record) -> Vec<Value> {
    r.mounts
        .iter()
        .map(|m| {
            let mut j = json!({
                "Type": m.kind, "Source": m.source, "Destination": m.destination,
                "Mode": m.mode, "RW": m.rw, "Propagation": m.propagation,
            });
            if let Some(n) = &m.name {
                j["Name"] = json!(n);
                j["Driver"] = json!(m.driver.clone().unwrap_or_else(|| "local".into()));
            }
            j
        })
        .collect()
}

fn network_settings(r: &Record) -> Value {
    if r.network_settings.is_object() {
        return r.network_settings.clone();
    }
    json!({
        "Bridge": "", "SandboxID": "", "HairpinMode": false, "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0, "Ports": {}, "SandboxKey": "", "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null, "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "",
        "MacAddress": "", "Networks": {},
    })
}

fn host_config_json(r: &Record) -> Value {
    let mut h = serde_json::to_value(&r.host_config).unwrap_or_else(|_| json!({}));
    let defaults = json!({
        "Binds": null, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
        "NetworkMode": "bridge", "PortBindings": {}, "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": false, "VolumeDriver": "", "VolumesFrom": null, "CapAdd": null, "CapDrop": null,
        "CgroupnsMode": "host", "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null,
        "GroupAdd": null, "IpcMode": "private", "Cgroup": "", "Links": null, "OomScoreAdj": 0,
        "PidMode": "", "Privileged": false, "PublishAllPorts": false, "ReadonlyRootfs": false,
        "SecurityOpt": null, "UTSMode": "", "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc",
        "Isolation": "", "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "",
        "BlkioWeight": 0, "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
        "Devices": [], "DeviceCgroupRules": null, "DeviceRequests": null, "MemoryReservation": 0,
        "MemorySwap": 0, "MemorySwappiness": null, "OomKillDisable": null, "PidsLimit": null,
        "Ulimits": null, "CpuCount": 0, "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "MaskedPaths": null, "ReadonlyPaths": null, "Init": null,
    });
    if let (Some(hm), Some(dm)) = (h.as_object_mut(), defaults.as_object()) {
        for (k, v) in dm {
            let missing = hm.get(k).is_none_or(|x| x.is_null());
            if missing {
                hm.insert(k.clone(), v.clone());
            }
        }
    }
    if h["RestartPolicy"]["Name"] == "" {
        h["RestartPolicy"]["Name"] = json!("no");
    }
    h
}

fn config_json(r: &Record) -> Value {
    let mut c = serde_json::to_value(&r.config).unwrap_or_else(|_| json!({}));
    for (k, v) in [
        ("Cmd", json!(null)),
        ("Entrypoint", json!(null)),
        ("OnBuild", json!(null)),
        ("Labels", json!({})),
        ("Env", json!([])),
    ] {
        if c.get(k).is_none() {
            c[k] = v;
        }
    }
    c
}

pub async fn inspect_value(e: &Engine, c: &Container, size: bool) -> Value {
    let r = c.rec.read().await.clone();
    let dir = e.containers.dir(&r.id);
    let lowers: Vec<String> = e
        .images
        .layer_dirs(&r.image_id)
        .await
        .unwrap_or_default()
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let health = r.state.health.as_ref().map(|h| {
        json!({
            "Status": h.status, "FailingStreak": h.failing_streak,
            "Log": h.log.iter().map(|l| json!({"Start": l.start, "End": l.end, "ExitCode": l.exit_code, "Output": l.output})).collect::<Vec<_>>(),
        })
    });
    let execs = e.containers.execs.ids_for(&r.id);
    let mut host_config = host_config_json(&r);
    // As dockerd: the links as registered (`/child:/parent/alias`), not as sent.
    if legacy_links(&r) {
        let l = e.containers.links_for_inspect(&r).await;
        host_config["Links"] = if l.is_empty() { Value::Null } else { json!(l) };
    }
    let mut v = json!({
        "Id": r.id,
        "Created": r.created,
        "Path": r.path,
        "Args": r.args,
        "State": {
            "Status": r.state.status.as_str(),
            // As dockerd: a restarting container is still "running" (and restarting).
            "Running": r.state.status.is_alive() || r.state.status == Status::Restarting,
            "Paused": r.state.status == Status::Paused,
            "Restarting": r.state.status == Status::Restarting,
            "OOMKilled": r.state.oom_killed,
            "Dead": r.state.status == Status::Dead,
            "Pid": r.state.pid,
            "ExitCode": r.state.exit_code,
            "Error": r.state.error,
            "StartedAt": if r.state.started_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { r.state.started_at.clone() },
            "FinishedAt": if r.state.finished_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { r.state.finished_at.clone() },
        },
        "Image": r.image_id,
        "ResolvConfPath": dir.join("resolv.conf"),
        "HostnamePath": dir.join("hostname"),
        "HostsPath": dir.join("hosts"),
        // As dockerd: only the json-file driver exposes its file, once the logger started.
        "LogPath": if r.has_been_started
            && r.host_config.log_config.as_ref().and_then(|l| l.typ.as_deref()).unwrap_or("json-file") == "json-file"
        {
            e.containers.log_path(&r.id).display().to_string()
        } else {
            String::new()
        },
        "Name": format!("/{}", r.name),
        "RestartCount": r.restart_count,
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": if execs.is_empty() { Value::Null } else { json!(execs) },
        "HostConfig": host_config,
        "GraphDriver": {"Name": "overlay2", "Data": {
            "LowerDir": lowers.join(":"),
            "UpperDir": dir.join("upper"), "WorkDir": dir.join("work"), "MergedDir": dir.join("rootfs"),
        }},
        "Mounts": mounts_json(&r),
        "Config": config_json(&r),
        "NetworkSettings": network_settings(&r),
    });
    if let Some(h) = health {
        v["State"]["Health"] = h;
    }
    if size {
        let (rw, root) = e.containers.sizes(&r).await;
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(root);
    }
    v
}

async fn inspect(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Json<Value>> {
    let c = e.containers.get(&id).await?;
    Ok(Json(inspect_value(&e, &c, p.bool("size")).await))
}

async fn summary(e: &Engine, c: &Container, size: bool) -> Value {
    let r = c.rec.read().await.clone();
    let mut cmd = r.path.clone();
    for a in &r.args {
        cmd.push(' ');
        cmd.push_str(a);
    }
    let created = chrono::DateTime::parse_from_rfc3339(&r.created)
        .map(|t| t.timestamp())
        .unwrap_or(0);
    let ns = network_settings(&r);
    // Also the names other containers' links give it (`/parent/alias`), as dockerd lists.
    let mut names = vec![format!("/{}", r.name)];
    names.extend(e.containers.link_names_of(&r.id).await);
    let mut v = json!({
        "Id": r.id,
        "Names": names,
        "Image": r.image,
        "ImageID": r.image_id,
        "Command": cmd,
        "Created": created,
        "Ports": e.containers.port_list(&r),
        "Labels": r.config.labels.clone().unwrap_or_default(),
        "State": r.state.status.as_str(),
        "Status": status_text(&r),
        "HostConfig": {"NetworkMode": r.host_config.network_mode.clone().unwrap_or_else(|| "bridge".into())},
        "NetworkSettings": {"Networks": ns["Networks"].clone()},
        "Mounts": mounts_json(&r),
    });
    if size {
        let (rw, root) = e.containers.sizes(&r).await;
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(root);
    }
    v
}

async fn list(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Vec<Value>>> {
    let f = p.filters()?;
    f.only(&[
        "ancestor",
        "before",
        "expose",
        "exited",
        "health",
        "id",
        "isolation",
        "is-task",
        "label",
        "name",
        "network",
        "publish",
        "since",
        "status",
        "volume",
    ])?;
    for s in f.get("status") {
        if !matches!(
            s.as_str(),
            "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
        ) {
            return Err(EngineError::invalid(format!("invalid filter 'status={s}'")));
        }
    }
    let all = p.bool("all") || !f.get("status").is_empty() || !f.get("exited").is_empty();
    let mut recs: Vec<(Arc<Container>, Record)> = Vec::new();
    for c in e.containers.all() {
        let r = c.rec.read().await.clone();
        recs.push((c, r));
    }
    recs.sort_by(|a, b| b.1.created.cmp(&a.1.created));
    let created_of = |key: &str| -> Option<String> {
        recs.iter()
            .find(|(_, r)| r.id.starts_with(key) || r.name == key.trim_start_matches('/'))
            .map(|(_, r)| r.created.clone())
    };
    let before = f
        .get("before")
        .first()
        .map(|b| created_of(b).ok_or_else(|| crate::containers::no_such(b)))
        .transpose()?;
    let since_c = f
        .get("since")
        .first()
        .map(|b| created_of(b).ok_or_else(|| crate::containers::no_such(b)))
        .transpose()?;
    let mut ancestors: Vec<String> = Vec::new();
    for a in f.get("ancestor") {
        if let Some(img) = e.images.try_resolve(a).await.ok().flatten() {
            ancestors.push(img.id().to_string());
        } else {
            ancestors.push(a.clone());
        }
    }
    let mut out = Vec::new();
    let limit = p.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    for (c, r) in &recs {
        let alive = r.state.status.is_alive() || r.state.status == Status::Restarting;
        if !all && !alive && limit.is_none() && before.is_none() && since_c.is_none() {
            continue;
        }
        if !f.get("status").is_empty()
            && !f.get("status").iter().any(|s| s == r.state.status.as_str())
        {
            continue;
        }
        let exited_match = r.state.status == Status::Exited
            && f.get("exited")
                .iter()
                .any(|x| x.parse::<i64>().ok() == Some(r.state.exit_code));
        if !f.get("exited").is_empty() && !exited_match {
            continue;
        }
        if !f.get("id").is_empty() && !f.get("id").iter().any(|x| r.id.starts_with(x.as_str())) {
            continue;
        }
        if !f.get("name").is_empty()
            && !f.get("name").iter().any(|n| {
                let n = n.trim_start_matches('/');
                regex::Regex::new(n)
                    .map(|re| re.is_match(&r.name))
                    .unwrap_or_else(|_| r.name.contains(n))
            })
        {
            continue;
        }
        if !f.labels_match("label", &r.config.labels.clone().unwrap_or_default()) {
            continue;
        }
        if !f.get("ancestor").is_empty()
            && !ancestors.iter().zip(f.get("ancestor")).any(|(id, name)| {
                r.image_id == *id || r.image == *name || r.image == format!("{name}:latest")
            })
        {
            continue;
        }
        if before.as_ref().is_some_and(|b| r.created >= *b)
            || since_c.as_ref().is_some_and(|s| r.created <= *s)
        {
            continue;
        }
        if !f.get("health").is_empty() {
            let hs = r
                .state
                .health
                .as_ref()
                .map(|h| h.status.clone())
                .unwrap_or_else(|| "none".into());
            if !f.get("health").contains(&hs) {
                continue;
            }
        }
        if !f.get("volume").is_empty()
            && !r.mounts.iter().any(|m| {
                f.get("volume")
                    .iter()
                    .any(|v| m.name.as_deref() == Some(v) || m.destination == *v || m.source == *v)
            })
        {
            continue;
        }
        if !f.get("network").is_empty() {
            let nets = network_settings(r)["Networks"].clone();
            let mode = r.host_config.network_mode.clone().unwrap_or_default();
            if !f
                .get("network")
                .iter()
                .any(|n| nets.get(n).is_some() || *n == mode)
            {
                continue;
            }
        }
        out.push(summary(&e, c, p.bool("size")).await);
        if limit.is_some_and(|l| out.len() >= l) {
            break;
        }
    }
    Ok(Json(out))
}

/// A JSON body taken raw (to be adjusted first) as its typed form; 400 when it does not fit.
fn typed<T: serde::de::DeserializeOwned>(raw: Value) -> Result<T> {
    serde_json::from_value(raw)
        .map_err(|err| EngineError::invalid(format!("Failed to deserialize the JSON body: {err}")))
}

async fn create(
    State(e): State<Arc<Engine>>,
    p: Params,
    v: ApiVersion,
    Json(mut raw): Json<Value>,
) -> Result<Response> {
    if !v.at_least(1, 44) {
        crate::containers::net::legacy_mac_address(&mut raw);
    }
    let body: ContainerCreateBody = typed(raw)?;
    let (id, warnings) = e.containers.create(p.get("name"), body).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": id, "Warnings": warnings})),
    )
        .into_response())
}

async fn start(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    match e.containers.start(&c).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(EngineError::NotModified(_)) => Ok(StatusCode::NOT_MODIFIED),
        Err(err) => Err(err),
    }
}

async fn stop(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    match e.containers.stop(&c, p.int("t")?, p.get("signal")).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(EngineError::NotModified(_)) => Ok(StatusCode::NOT_MODIFIED),
        Err(err) => Err(err),
    }
}

async fn restart(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    e.containers
        .restart(&c, p.int("t")?, p.get("signal"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn kill(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    e.containers.kill(&c, p.get("signal")).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn pause(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    e.containers.pause(&c, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unpause(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    e.containers.pause(&c, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rename(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    let name = p.get("name").unwrap_or_default();
    e.containers.rename(&c, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    if p.bool("link") {
        e.containers.remove_link(&id).await?;
        return Ok(StatusCode::NO_CONTENT);
    }
    let c = e.containers.get(&id).await?;
    e.containers
        .remove(&c, p.bool("force"), p.bool("v"))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_by_link_name(
    State(e): State<Arc<Engine>>,
    Path((parent, alias)): Path<(String, String)>,
    p: Params,
) -> Result<StatusCode> {
    remove(State(e), Path(format!("{parent}/{alias}")), p).await
}

/// Whether the record's `HostConfig.Links` are legacy links (not a user-defined network's).
fn legacy_links(r: &Record) -> bool {
    crate::containers::links::legacy_mode(r.host_config.network_mode.as_deref().unwrap_or(""))
}

/// Headers go out at once; the body comes when the condition holds.
async fn wait(State(e): State<Arc<Engine>>, Path(id): Path<String>, p: Params) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let cond = p.get("condition").unwrap_or("not-running").to_string();
    if !matches!(cond.as_str(), "" | "not-running" | "next-exit" | "removed") {
        return Err(EngineError::invalid(format!(
            "invalid condition: \"{cond}\""
        )));
    }
    let (tx, rx) = mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(1);
    let svc = e.containers.clone();
    tokio::spawn(async move {
        let code = svc.wait(&c, &cond).await.unwrap_or(-1);
        let err = c.rec.read().await.state.error.clone();
        let body = json!({"StatusCode": code, "Error": if err.is_empty() { Value::Null } else { json!({"Message": err}) }});
        let _ = tx.send(Ok(bytes::Bytes::from(format!("{body}\n")))).await;
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(Body::from_stream(super::tokio_stream_from(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn logs(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
    v: ApiVersion,
) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let now = chrono::Utc::now();
    let t = |k: &str| -> Result<Option<f64>> {
        match p.get(k).filter(|s| !s.is_empty() && *s != "0") {
            None => Ok(None),
            Some(s) => crate::util::parse_time_arg(s, now)
                .map(Some)
                .ok_or_else(|| EngineError::invalid(format!("invalid value for {k}: {s}"))),
        }
    };
    let o = LogOptions {
        stdout: p.bool("stdout"),
        stderr: p.bool("stderr"),
        follow: p.bool("follow"),
        timestamps: p.bool("timestamps"),
        tail: match p.get("tail") {
            None | Some("all") | Some("") => None,
            Some(n) => Some(
                n.parse::<i64>()
                    .map_err(|_| EngineError::invalid(format!("invalid tail: {n}")))?
                    .max(0) as usize,
            ),
        },
        since: t("since")?,
        until: t("until")?,
        raw: false,
    };
    if !o.stdout && !o.stderr {
        return Err(EngineError::invalid(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let (tty, driver) = {
        let r = c.rec.read().await;
        let lc = r.host_config.log_config.as_ref();
        (
            r.config.tty.unwrap_or(false),
            lc.and_then(|l| l.typ.clone()).unwrap_or_default(),
        )
    };
    if driver == "none" {
        // dockerd's ErrReadLogsNotSupported is a NotImplemented error: 501.
        return Ok((
            axum::http::StatusCode::NOT_IMPLEMENTED,
            Json(json!({"message": "configured logging driver does not support reading"})),
        )
            .into_response());
    }
    let (tx, rx) = mpsc::channel(64);
    let svc = e.containers.clone();
    tokio::spawn(async move { svc.logs(&c, o, tx).await });
    Ok(Response::builder()
        .header("Content-Type", content_type(!tty, v))
        .body(Body::from_stream(super::tokio_stream_from(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn attach(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
    v: ApiVersion,
    req: Request,
) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let tty = c.rec.read().await.config.tty.unwrap_or(false);
    let o = attach_opts(&p, false, false)?;
    let svc = e.containers.clone();
    let pending = crate::containers::attach::PendingAttach::register(&c);
    Ok(hijack(req, content_type(!tty, v), move |io| async move {
        if let Err(err) = svc.attach(c, io, o, pending).await {
            tracing::debug!(error = %err, "attach ended");
        }
    }))
}

/// The attach query of both attach endpoints; `all` selects every stream whatever the query
/// says, `raw` never multiplexes.
fn attach_opts(p: &Params, all: bool, raw: bool) -> Result<AttachOpts> {
    let detach_keys = p.get("detachKeys").filter(|k| !k.is_empty());
    if let Some(k) = detach_keys {
        crate::containers::attach::parse_detach_keys(k)?;
    }
    Ok(AttachOpts {
        stdin: all || p.bool("stdin"),
        stdout: all || p.bool("stdout"),
        stderr: all || p.bool("stderr"),
        logs: p.bool("logs"),
        stream: p.bool("stream"),
        detach_keys: detach_keys.map(String::from),
        raw,
    })
}

/// `GET /containers/{id}/attach/ws`: attach over a WebSocket, as dockerd serves it: stdin
/// from the client's messages, output raw (never multiplexed) in binary messages (text before
/// API 1.28); before API 1.42 all three streams whatever the query says.
async fn attach_ws(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
    v: ApiVersion,
    req: Request,
) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let o = attach_opts(&p, !v.at_least(1, 42), true)?;
    let svc = e.containers.clone();
    let pending = crate::containers::attach::PendingAttach::register(&c);
    Ok(super::hijack::websocket(
        req,
        v.at_least(1, 28),
        move |io| async move {
            if let Err(err) = svc.attach(c, io, o, pending).await {
                tracing::debug!(error = %err, "websocket attach ended");
            }
        },
    ))
}

async fn resize(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    let r = c.rec.read().await.clone();
    if !r.state.status.is_alive() {
        return Err(EngineError::Conflict(format!(
            "Container {} is not running",
            r.id
        )));
    }
    let h = p.int("h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let w = p.int("w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    e.containers
        .shim(&r.id)
        .resize(h, w)
        .await
        .map_err(|err| EngineError::Internal(err.to_string()))?;
    Ok(StatusCode::OK)
}

async fn top(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Json<Value>> {
    let c = e.containers.get(&id).await?;
    Ok(Json(
        e.containers
            .top(&c, p.get("ps_args").unwrap_or("-ef"))
            .await?,
    ))
}

async fn stats(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let stream = p.bool_or("stream", true);
    let one_shot = p.bool("one-shot");
    let (tx, rx) = mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(4);
    let svc = e.containers.clone();
    tokio::spawn(async move {
        let mut prev = Default::default();
        if !stream && !one_shot {
            // precpu_stats needs a sample one second earlier, as dockerd provides.
            let (_, s) = svc.stats_sample(&c, &prev).await;
            prev = s;
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        loop {
            let (v, s) = svc.stats_sample(&c, &prev).await;
            prev = s;
            if tx
                .send(Ok(bytes::Bytes::from(format!("{v}\n"))))
                .await
                .is_err()
                || !stream
            {
                return;
            }
            if *c.removed.borrow() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/json")
        .body(Body::from_stream(super::tokio_stream_from(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn update(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Value>> {
    let c = e.containers.get(&id).await?;
    e.containers.update(&c, body).await?;
    Ok(Json(json!({"Warnings": []})))
}

async fn prune(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Value>> {
    let f = p.filters()?;
    f.only(&["until", "label", "label!"])?;
    let now = chrono::Utc::now();
    let until = f
        .get("until")
        .first()
        .and_then(|u| crate::util::parse_time_arg(u, now));
    let mut deleted = Vec::new();
    let mut space = 0i64;
    for c in e.containers.all() {
        let r = c.rec.read().await.clone();
        if !matches!(
            r.state.status,
            Status::Exited | Status::Created | Status::Dead
        ) {
            continue;
        }
        let labels = r.config.labels.clone().unwrap_or_default();
        if !f.labels_match("label", &labels) {
            continue;
        }
        if f.get("label!").iter().any(|l| match l.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(l.as_str()),
        }) {
            continue;
        }
        if let Some(u) = until {
            let created = chrono::DateTime::parse_from_rfc3339(&r.created)
                .map(|t| t.timestamp() as f64)
                .unwrap_or(0.0);
            if created > u {
                continue;
            }
        }
        let (rw, _) = e.containers.sizes(&r).await;
        if e.containers.remove(&c, false, false).await.is_ok() {
            deleted.push(r.id.clone());
            space += rw;
        }
    }
    Ok(Json(
        json!({"ContainersDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) }, "SpaceReclaimed": space}),
    ))
}

/// Go's encoding/json matches object keys case-insensitively (docker-py sends `detachKeys`):
/// rename the top-level keys that differ from `fields` only in case.
fn fold_keys(v: &mut Value, fields: &[&str]) {
    let Some(m) = v.as_object_mut() else { return };
    for f in fields {
        if m.contains_key(*f) {
            continue;
        }
        let other = m.keys().find(|k| k.eq_ignore_ascii_case(f)).cloned();
        if let Some(k) = other {
            if let Some(x) = m.remove(&k) {
                m.insert((*f).to_string(), x);
            }
        }
    }
}

async fn exec_create(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Json(mut raw): Json<Value>,
) -> Result<Response> {
    fold_keys(
        &mut raw,
        &[
            "AttachStdin",
            "AttachStdout",
            "AttachStderr",
            "DetachKeys",
            "Tty",
            "Env",
            "Cmd",
            "Privileged",
            "User",
            "WorkingDir",
            "ConsoleSize",
        ],
    );
    let body: ExecCreate = typed(raw)?;
    let c = e.containers.get(&id).await?;
    let eid = e.containers.exec_create(&c, body).await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": eid}))).into_response())
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct ExecStartBody {
    #[serde(default)]
    detach: bool,
    #[serde(default)]
    tty: Option<bool>,
}

async fn exec_start(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    v: ApiVersion,
    req: Request,
) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|err| EngineError::invalid(err.to_string()))?;
    let b: ExecStartBody = if bytes.is_empty() {
        ExecStartBody::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|err| EngineError::invalid(err.to_string()))?
    };
    let st = e.containers.execs.get(&id)?;
    if st.started {
        return Err(EngineError::Conflict(format!(
            "Error: Exec command {id} has already run"
        )));
    }
    let svc = e.containers.clone();
    if b.detach {
        svc.exec_start::<tokio::io::DuplexStream>(&id, true, b.tty, None)
            .await?;
        return Ok(StatusCode::OK.into_response());
    }
    let c = e.containers.get(&st.container_id).await?;
    if !c.rec.read().await.state.status.is_alive() {
        return Err(EngineError::Conflict(format!(
            "Container {} is not running",
            st.container_id
        )));
    }
    let tty = b.tty.unwrap_or(st.cfg.tty);
    let req = Request::from_parts(parts, Body::empty());
    Ok(hijack(req, content_type(!tty, v), move |io| async move {
        if let Err(err) = svc.exec_start(&id, false, b.tty, Some(io)).await {
            tracing::debug!(error = %err, "exec start failed");
        }
    }))
}

async fn exec_resize(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let st = e.containers.execs.get(&id)?;
    let h = p.int("h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let w = p.int("w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    e.containers
        .shim(&st.container_id)
        .exec_resize(&id, h, w)
        .await
        .map_err(|err| EngineError::Internal(err.to_string()))?;
    Ok(StatusCode::OK)
}

async fn exec_inspect(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(e.containers.exec_inspect(&id)?))
}
