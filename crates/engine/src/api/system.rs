//! System endpoints: `_ping`, `version`, `info`, `events`, `system/df`, `auth`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bollard_stubs::models::{SystemVersion, SystemVersionComponents, SystemVersionPlatform};
use serde_json::{json, Value};

use super::{json_lines, Params, API_VERSION, MIN_API_VERSION};
use crate::daemon::Engine;
use crate::error::{EngineError, Result};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/events", get(events))
        .route("/system/df", get(df))
        .route("/auth", post(auth))
        .route("/plugins", get(plugins))
        .route("/swarm", get(not_swarm))
        .route("/swarm/{*rest}", get(not_swarm).post(not_swarm))
        .route("/nodes", get(not_swarm))
        .route("/services", get(not_swarm))
        .route("/tasks", get(not_swarm))
        .route("/secrets", get(not_swarm))
        .route("/configs", get(not_swarm))
}

pub(crate) async fn ping() -> Response {
    let mut h = HeaderMap::new();
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    h.insert("Swarm", HeaderValue::from_static("inactive"));
    h.insert(
        "Cache-Control",
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert(
        "Content-Type",
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    (StatusCode::OK, h, "OK").into_response()
}

/// The Docker release whose API level we implement (API 1.44 = Docker 25.0).
pub const DOCKER_COMPAT_VERSION: &str = "25.0.0";

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(crate) async fn version() -> Json<SystemVersion> {
    let (os, arch) = crate::images::pull::host_platform();
    Json(SystemVersion {
        platform: Some(SystemVersionPlatform {
            name: format!("Berth {}", env!("CARGO_PKG_VERSION")),
        }),
        components: Some(vec![
            SystemVersionComponents {
                name: "Engine".into(),
                version: DOCKER_COMPAT_VERSION.into(),
                details: Some(
                    [
                        ("ApiVersion".to_string(), API_VERSION.to_string()),
                        ("MinAPIVersion".to_string(), MIN_API_VERSION.to_string()),
                        ("Os".to_string(), os.to_string()),
                        ("Arch".to_string(), arch.to_string()),
                        ("KernelVersion".to_string(), kernel_version()),
                    ]
                    .into(),
                ),
            },
            SystemVersionComponents {
                name: "berthd".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                details: None,
            },
        ]),
        version: Some(DOCKER_COMPAT_VERSION.into()),
        api_version: Some(API_VERSION.into()),
        min_api_version: Some(MIN_API_VERSION.into()),
        git_commit: Some(option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown").into()),
        go_version: Some(format!("rust (berthd {})", env!("CARGO_PKG_VERSION"))),
        os: Some(os.into()),
        arch: Some(arch.into()),
        kernel_version: Some(kernel_version()),
        experimental: Some(false),
        build_time: None,
    })
}

fn meminfo_total() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn os_pretty_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

async fn info(State(e): State<Arc<Engine>>) -> Result<Json<Value>> {
    let images = e.images.store.list_images().await?.len();
    let counts = e.container_counts().await?;
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mirrors: Vec<String> = e
        .cfg
        .mirrors
        .iter()
        .map(|m| {
            format!(
                "{}://{}/",
                if m.insecure { "http" } else { "https" },
                m.host
            )
        })
        .collect();
    let mut index_configs = serde_json::Map::new();
    index_configs.insert(
        "docker.io".into(),
        json!({"Name": "docker.io", "Mirrors": mirrors, "Secure": true, "Official": true}),
    );
    for r in &e.cfg.insecure_registries {
        index_configs.insert(
            r.clone(),
            json!({"Name": r, "Mirrors": [], "Secure": false, "Official": false}),
        );
    }
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Ok(Json(json!({
        "ID": e.engine_id,
        "Containers": counts.0 + counts.1 + counts.2,
        "ContainersRunning": counts.0,
        "ContainersPaused": counts.1,
        "ContainersStopped": counts.2,
        "Images": images,
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"], ["Using metacopy", "false"], ["Native Overlay Diff", "true"]],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "null"], "Authorization": null, "Log": ["json-file"]},
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").map(|s| s.trim() == "1").unwrap_or(false),
        "BridgeNfIptables": true,
        "BridgeNfIp6tables": true,
        "Debug": e.cfg.log_level == "debug",
        "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": crate::util::rfc3339_nano(chrono::Utc::now()),
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "2" } else { "1" },
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": os_pretty_name(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": null,
            "AllowNondistributableArtifactsHostnames": null,
            "InsecureRegistryCIDRs": ["127.0.0.0/8", "::1/128"],
            "IndexConfigs": index_configs,
            "Mirrors": mirrors,
        },
        "NCPU": ncpu,
        "MemTotal": meminfo_total(),
        "GenericResources": null,
        "DockerRootDir": e.cfg.data_root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": DOCKER_COMPAT_VERSION,
        "Runtimes": {"runc": {"path": e.cfg.runtime}},
        "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "berth-init",
        "ContainerdCommit": {"ID": ""},
        "RuncCommit": {"ID": ""},
        "InitCommit": {"ID": ""},
        "SecurityOptions": ["name=seccomp,profile=builtin"],
        "CDISpecDirs": [],
        "Warnings": [],
    })))
}

/// `GET /events`: history in [since, until], then live events until `until` or disconnect.
async fn events(State(e): State<Arc<Engine>>, p: Params) -> Result<Response> {
    let filters = p.filters()?;
    filters.only(&[
        "config",
        "container",
        "daemon",
        "event",
        "image",
        "label",
        "network",
        "node",
        "plugin",
        "scope",
        "secret",
        "service",
        "type",
        "volume",
    ])?;
    let now = chrono::Utc::now();
    let to_nanos = |s: &str| {
        crate::util::parse_time_arg(s, now)
            .map(|f| (f * 1e9) as i64)
            .ok_or_else(|| EngineError::invalid(format!("invalid timestamp: {s}")))
    };
    let since = p
        .get("since")
        .filter(|s| !s.is_empty())
        .map(to_nanos)
        .transpose()?;
    let until = p
        .get("until")
        .filter(|s| !s.is_empty())
        .map(to_nanos)
        .transpose()?;
    let mut live = e.events.subscribe();
    let past = match since {
        Some(s) => e.events.history(s, until.unwrap_or(i64::MAX)),
        None => vec![],
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for ev in past {
            if event_matches(&filters, &ev) && tx.send(ev).await.is_err() {
                return;
            }
        }
        let deadline = until.map(|u| {
            let d = (u - chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)).max(0);
            tokio::time::Instant::now() + std::time::Duration::from_nanos(d as u64)
        });
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, live.recv()).await.ok(),
                    None => Some(live.recv().await),
                }
            };
            tokio::select! {
                r = next => match r {
                    None => return,
                    Some(Ok(ev)) => {
                        if event_matches(&filters, &ev) && tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    Some(Err(_)) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(json_lines(rx))
}

fn event_matches(f: &super::Filters, ev: &crate::events::Event) -> bool {
    let attrs = &ev.actor.attributes;
    let any = |key: &str, pred: &dyn Fn(&str) -> bool| {
        let v = f.get(key);
        v.is_empty() || v.iter().any(|x| pred(x))
    };
    any("type", &|t| t == ev.kind)
        && any("event", &|a| {
            a == ev.action || ev.action.starts_with(&format!("{a}:"))
        })
        && any("container", &|c| {
            ev.kind == "container"
                && (ev.actor.id.starts_with(c) || attrs.get("name").is_some_and(|n| n == c))
        })
        && any("image", &|i| {
            attrs.get("image").is_some_and(|x| x == i)
                || attrs.get("name").is_some_and(|x| x == i) && ev.kind == "image"
                || ev.actor.id == i
        })
        && any("volume", &|v| ev.kind == "volume" && ev.actor.id == v)
        && any("network", &|n| {
            ev.kind == "network"
                && (ev.actor.id.starts_with(n) || attrs.get("name").is_some_and(|x| x == n))
        })
        && any("scope", &|s| s == ev.scope)
        && f.labels_match("label", attrs)
}

async fn df(State(e): State<Arc<Engine>>) -> Result<Json<Value>> {
    let imgs = e.images.list_all().await?;
    let users = e.image_users_all().await?;
    let mut layers_size = 0i64;
    let mut seen = std::collections::HashSet::new();
    let mut images = Vec::new();
    for i in &imgs {
        for l in e.images.layers(i.id()).await? {
            if seen.insert(l.diff_id.clone()) {
                layers_size += l.size;
            }
        }
        let n = users.get(i.id()).copied().unwrap_or(0);
        images.push(json!({
            "Id": i.id(), "ParentId": i.rec.parent.clone().unwrap_or_default(),
            "RepoTags": i.familiar_tags(), "RepoDigests": i.familiar_digests(),
            "Created": i.rec.created, "Size": i.rec.size, "SharedSize": -1,
            "VirtualSize": i.rec.size, "Labels": i.labels(), "Containers": n,
        }));
    }
    Ok(Json(json!({
        "LayersSize": layers_size,
        "Images": images,
        "Containers": e.containers_df().await?,
        "Volumes": e.volumes_df().await?,
        "BuildCache": [],
    })))
}

/// `docker login`: credentials are checked by the registry at pull/push time; accept them here.
async fn auth(Json(body): Json<Value>) -> Result<Json<Value>> {
    if body["username"].as_str().unwrap_or_default().is_empty() {
        return Err(EngineError::invalid("username is required"));
    }
    Ok(Json(
        json!({"Status": "Login Succeeded", "IdentityToken": ""}),
    ))
}

/// No plugins are installed (volume `local` and network `bridge` are built in).
async fn plugins() -> Json<Vec<Value>> {
    Json(vec![])
}

/// Berth has no swarm mode; dockerd answers the same way when the node is not in a swarm.
async fn not_swarm() -> EngineError {
    EngineError::Unavailable(
        "This node is not a swarm manager. Use \"docker swarm init\" or \"docker swarm join\" to connect this node to swarm and try again.".into(),
    )
}
