//! Start-up and shutdown: data root, pid file, store, services, the API socket, signals.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::extract::Request;
use tower::ServiceExt as _;

use crate::config::Config;
use crate::containers::ContainerService;
use crate::content::Content;
use crate::error::Result;
use crate::events::Events;
use crate::images::{ImageService, ImageUsers};
use crate::store::Store;
use crate::volumes::VolumeService;

pub struct Engine {
    pub cfg: Arc<Config>,
    pub engine_id: String,
    pub events: Arc<Events>,
    pub images: Arc<ImageService>,
    pub containers: Arc<ContainerService>,
    pub volumes: Arc<VolumeService>,
    pub networks: Arc<crate::networks::NetworkService>,
}

impl Engine {
    /// Containers that use image `id`: (container id, running).
    pub async fn image_users(&self, id: &str) -> Result<ImageUsers> {
        Ok(self.containers.users_of(id).await)
    }

    /// Number of containers per image id.
    pub async fn image_users_all(&self) -> Result<HashMap<String, i64>> {
        let mut m = HashMap::new();
        for c in self.containers.all() {
            *m.entry(c.rec.read().await.image_id.clone()).or_insert(0) += 1;
        }
        Ok(m)
    }

    /// (running, paused, stopped) container counts.
    pub async fn container_counts(&self) -> Result<(usize, usize, usize)> {
        let (mut r, mut p, mut s) = (0, 0, 0);
        for c in self.containers.all() {
            match c.rec.read().await.state.status {
                crate::containers::Status::Running | crate::containers::Status::Restarting => {
                    r += 1
                }
                crate::containers::Status::Paused => p += 1,
                _ => s += 1,
            }
        }
        Ok((r, p, s))
    }

    pub async fn containers_df(&self) -> Result<Vec<serde_json::Value>> {
        let mut v = Vec::new();
        for c in self.containers.all() {
            let mut j = crate::api::containers::inspect_value(self, &c, false).await;
            let r = c.rec.read().await.clone();
            let (rw, root) = self.containers.sizes(&r).await;
            j = serde_json::json!({
                "Id": r.id, "Names": [format!("/{}", r.name)], "Image": r.image, "ImageID": r.image_id,
                "Command": format!("{} {}", r.path, r.args.join(" ")).trim().to_string(),
                "Created": chrono::DateTime::parse_from_rfc3339(&r.created).map(|t| t.timestamp()).unwrap_or(0),
                "State": r.state.status.as_str(), "Status": j["State"]["Status"].clone(),
                "SizeRw": rw, "SizeRootFs": root, "Labels": r.config.labels.clone().unwrap_or_default(),
                "Mounts": j["Mounts"].clone(),
            });
            v.push(j);
        }
        Ok(v)
    }

    pub async fn volumes_df(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for v in self.volumes.list().await? {
            let refs = self.containers.volume_users(&v.name).await.len() as i64;
            out.push(
                self.volumes
                    .to_json(&v, Some((self.volumes.size_of(&v.name), refs))),
            );
        }
        Ok(out)
    }
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn write_pidfile(path: &Path) -> anyhow::Result<()> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if let Ok(pid) = s.trim().parse::<i32>() {
            if pid != std::process::id() as i32 && pid_alive(pid) {
                bail!(
                    "pid file found, ensure berthd is not running or delete {}",
                    path.display()
                );
            }
        }
    }
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    crate::util::write_atomic(path, format!("{}\n", std::process::id()).as_bytes())
        .with_context(|| format!("writing pid file {}", path.display()))
}

/// Bind the API socket: `root:GROUP`, mode 0660, as dockerd does (root:root if the group is missing).
/// The listening socket systemd passed us (`LISTEN_PID`/`LISTEN_FDS`, first fd is 3).
fn activated_socket() -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::fd::FromRawFd;
    let pid: u32 = std::env::var("LISTEN_PID")
        .context("-H fd:// needs socket activation (LISTEN_PID is not set)")?
        .parse()
        .context("invalid LISTEN_PID")?;
    let n: i32 = std::env::var("LISTEN_FDS")
        .context("LISTEN_FDS is not set")?
        .parse()
        .context("invalid LISTEN_FDS")?;
    if pid != std::process::id() || n < 1 {
        bail!("no socket was passed to this process (LISTEN_PID={pid}, LISTEN_FDS={n})");
    }
    // SAFETY: systemd hands over fd 3 as an open listening socket owned by this process from
    // now on; nothing else in berthd uses fd 3 this early.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(3) };
    std_listener.set_nonblocking(true)?;
    Ok(tokio::net::UnixListener::from_std(std_listener)?)
}

fn bind_socket(cfg: &Config) -> anyhow::Result<tokio::net::UnixListener> {
    if cfg.socket.as_os_str().is_empty() {
        return activated_socket();
    }
    let path = &cfg.socket;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{} is in use by another engine", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    let l = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("binding {}", path.display()))?;
    let gid = match nix::unistd::Group::from_name(&cfg.group) {
        Ok(Some(g)) => g.gid,
        _ => {
            tracing::warn!(group = %cfg.group, "socket group not found; socket is root:root");
            nix::unistd::Gid::from_raw(0)
        }
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(l)
}

fn engine_id(data_root: &Path) -> anyhow::Result<String> {
    let p = data_root.join("engine-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let id = uuid_like();
    crate::util::write_atomic(&p, id.as_bytes())?;
    Ok(id)
}

fn uuid_like() -> String {
    let h = crate::util::random_id();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Everything behind the API once the store is open: images (checked), volumes and networks
/// (in parallel; the networks' iptables rules are finished in the background, container
/// starts wait for them), then containers.
async fn open_engine(
    cfg: &Arc<Config>,
    store: Store,
    t0: std::time::Instant,
    t_store: u64,
) -> anyhow::Result<Arc<Engine>> {
    let content = Content::open(&cfg.data_root).context("opening content")?;
    let events = Arc::new(Events::new());
    let images = Arc::new(ImageService::new(
        cfg.clone(),
        store.clone(),
        content,
        events.clone(),
    ));
    let volumes = Arc::new(VolumeService::new(
        store.clone(),
        &cfg.data_root,
        events.clone(),
    )?);
    let images_phase = async {
        let t = std::time::Instant::now();
        images.repair().await.context("repairing the image store")?;
        Ok::<u64, anyhow::Error>(ms(t))
    };
    let networks_phase = async {
        let t = std::time::Instant::now();
        crate::networks::link::defer_rules(true);
        let n = crate::networks::NetworkService::open(
            store.clone(),
            events.clone(),
            &cfg.data_root,
            cfg.port_announce.clone(),
        )
        .await
        .context("opening the network service");
        crate::networks::link::defer_rules(false);
        Ok::<_, anyhow::Error>((n?, ms(t)))
    };
    let (t_images, (networks, t_networks)) = tokio::try_join!(images_phase, networks_phase)?;
    let t = std::time::Instant::now();
    let containers = ContainerService::open(
        cfg.clone(),
        store.clone(),
        images.clone(),
        volumes.clone(),
        networks.clone(),
        events.clone(),
    )
    .await
    .context("opening the container service")?;
    let t_containers = ms(t);
    tracing::info!(
        store_ms = t_store,
        images_ms = t_images,
        networks_ms = t_networks,
        containers_ms = t_containers,
        total_ms = ms(t0),
        "start-up phases"
    );
    Ok(Arc::new(Engine {
        engine_id: engine_id(&cfg.data_root)?,
        cfg: cfg.clone(),
        events,
        images,
        containers,
        volumes,
        networks,
    }))
}

/// The engine once it is up, for the requests that arrived before (see [`early_service`]).
type Ready = tokio::sync::watch::Receiver<Option<axum::Router>>;

/// The API while the engine starts: with `early`, `_ping` and `version` answer at once (they
/// need nothing but the binary); every other request waits until the engine is up, then goes
/// to its router. Once up, everything goes to the engine's router. Under the version middleware, so
/// `/vX.Y` prefixes and dockerd's headers are handled as always.
fn early_service(ready: Ready, early: bool) -> axum::Router {
    axum::Router::new().fallback(move |req: Request| {
        let mut ready = ready.clone();
        async move {
            use axum::response::IntoResponse;
            let up = ready.borrow().clone();
            let router = match up {
                Some(r) => r,
                None => {
                    let path = req.uri().path();
                    let get = req.method() == axum::http::Method::GET;
                    let head = req.method() == axum::http::Method::HEAD;
                    if early && path == "/_ping" && (get || head) {
                        return crate::api::system::ping().await;
                    }
                    if early && path == "/version" && get {
                        return crate::api::system::version().await.into_response();
                    }
                    match ready.wait_for(|r| r.is_some()).await {
                        Ok(r) => r.clone().unwrap_or_default(),
                        Err(_) => {
                            return crate::error::EngineError::Internal(
                                "the engine is shutting down".into(),
                            )
                            .into_response()
                        }
                    }
                }
            };
            match router.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    })
}

/// Milliseconds since `t`, for the start-up phases log line.
fn ms(t: std::time::Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let cfg = Arc::new(cfg);
    if !nix::unistd::Uid::effective().is_root() {
        bail!("berthd must run as root");
    }
    std::fs::create_dir_all(&cfg.data_root)
        .with_context(|| format!("creating {}", cfg.data_root.display()))?;
    std::fs::set_permissions(&cfg.data_root, std::fs::Permissions::from_mode(0o710))?;
    write_pidfile(&cfg.pidfile)?;
    // With BERTHD_EARLY_API=1 (berth-guest sets it) the API answers from here on, before the
    // store is even open (under emulation that alone takes a second): `_ping` and `version` at
    // once, the rest once the engine is up. Without it the socket is bound here
    // too but `_ping` waits like everything else, so a client that saw `_ping` also sees the
    // default bridge (as with dockerd; tests and scripts rely on it).
    let early = std::env::var_os("BERTHD_EARLY_API").is_some_and(|v| v == "1");
    let listener = match bind_socket(&cfg) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&cfg.pidfile);
            return Err(e);
        }
    };
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(None);
    let svc = axum::middleware::from_fn(crate::api::version_middleware);
    let svc = tower::Layer::layer(&svc, early_service(ready_rx, early));
    let make = axum::ServiceExt::<Request>::into_make_service(svc.map_request(|r: Request| r));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, make).with_graceful_shutdown(async move {
        let _ = stop_rx.wait_for(|v| *v).await;
    });
    let server = tokio::spawn(async move { server.await });
    tracing::info!(ms = ms(t0), early, "API socket bound");

    // A failed start stops the early API server and removes what it made.
    let stop_early = |e| {
        let _ = stop_tx.send(true);
        server.abort();
        if !cfg.socket.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&cfg.socket);
        }
        let _ = std::fs::remove_file(&cfg.pidfile);
        e
    };
    let store = match Store::open(&cfg.data_root.join("berth.db"))
        .await
        .context("opening the store")
    {
        Ok(s) => s,
        Err(e) => return Err(stop_early(e)),
    };
    let t_store = ms(t0);

    let engine = match open_engine(&cfg, store, t0, t_store).await {
        Ok(e) => e,
        Err(e) => return Err(stop_early(e)),
    };
    // Containers that ran while berthd was down: reattach, record exits, apply restart policies.
    let restoring = engine.containers.clone();
    tokio::spawn(async move { restoring.restore().await });
    let _ = ready_tx.send(Some(crate::api::router(engine.clone())));
    tracing::info!(socket = %cfg.socket.display(), data_root = %cfg.data_root.display(), ms = ms(t0), "berthd ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    let _ = stop_tx.send(true);
    drop(ready_tx);
    // Bridges nobody running uses are removed; running containers keep theirs (live restore).
    let mut busy = Vec::new();
    for c in engine.containers.all() {
        let r = c.rec.read().await;
        if r.state.status.is_alive() {
            if let Some(n) = r
                .network_settings
                .get("Networks")
                .and_then(|n| n.as_object())
            {
                busy.extend(
                    n.values()
                        .filter_map(|e| e["NetworkID"].as_str().map(String::from)),
                );
            }
        }
    }
    engine.networks.shutdown(&busy).await;
    // Long streams (events, logs -f, attach) would hold graceful shutdown forever; give them 3 s.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), server).await;
    if !cfg.socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&cfg.socket);
    }
    let _ = std::fs::remove_file(&cfg.pidfile);
    engine.images.store.pool.close().await;
    tracing::info!("berthd stopped");
    Ok(())
}
