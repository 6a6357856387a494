//! The container service: records and their persistence, name resolution, and the per-container
//! runtime handles (shim client, exit notifications). Lifecycle, logs, exec and the rest live in
//! the sibling modules.

pub mod archive;
pub mod attach;
pub mod commit;
pub mod create;
pub mod exec;
pub mod fs;
pub mod lifecycle;
pub mod links;
pub mod logs;
pub mod names;
pub mod net;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod stats;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bollard_stubs::models::{ContainerConfig, HostConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex, RwLock};

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::events::Events;
use crate::images::ImageService;
use crate::store::Store;

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
    /// The process exists (running or paused).
    pub fn is_alive(&self) -> bool {
        matches!(self, Status::Running | Status::Paused)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HealthLog {
    pub start: String,
    pub end: String,
    pub exit_code: i64,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HealthState {
    /// starting | healthy | unhealthy
    pub status: String,
    pub failing_streak: i64,
    pub log: Vec<HealthLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub status: Status,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    pub oom_killed: bool,
    pub started_at: String,
    pub finished_at: String,
    pub health: Option<HealthState>,
}

/// One mount as the container sees it (inspect `Mounts`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct MountPoint {
    /// bind | volume | tmpfs
    pub kind: String,
    pub name: Option<String>,
    pub source: String,
    pub destination: String,
    pub driver: Option<String>,
    pub mode: String,
    pub rw: bool,
    pub propagation: String,
    /// Options for the OCI mount (tmpfs size, ro, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// Everything berthd knows about a container; stored as JSON in SQLite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    pub created: String,
    /// The image as the user named it.
    pub image: String,
    pub image_id: String,
    pub path: String,
    pub args: Vec<String>,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    #[serde(default)]
    pub networking: serde_json::Value,
    pub state: State,
    pub restart_count: i64,
    /// Stopped by the user (stop/kill): `unless-stopped` stays down after an engine restart.
    pub manually_stopped: bool,
    pub has_been_started: bool,
    #[serde(default)]
    pub mounts: Vec<MountPoint>,
    /// Network state filled in by the network service (inspect `NetworkSettings`).
    #[serde(default)]
    pub network_settings: serde_json::Value,
    /// Legacy links to other containers (`HostConfig.Links` on the default bridge).
    #[serde(default)]
    pub links: Vec<links::LegacyLink>,
}

/// In-memory side of a container: the record plus notifications.
pub struct Container {
    pub rec: RwLock<Record>,
    /// Serializes lifecycle operations (start/stop/rm/...) on this container.
    pub op: Mutex<()>,
    /// Bumped on every exit; carries the exit code.
    pub exited: watch::Sender<(u64, i64)>,
    /// Bumped each time a shim has created the container and waits for attachers.
    pub created: watch::Sender<u64>,
    /// Attach requests that still have to connect before the process is started.
    pub pending_attach: std::sync::atomic::AtomicUsize,
    /// Woken each time `pending_attach` goes down.
    pub attach_done: tokio::sync::Notify,
    /// Set once the container is removed.
    pub removed: watch::Sender<bool>,
    /// No shim of this container is running: none was started, or the last one exited (and
    /// with it the runtime's state of the container). A shim reports the exit of the process
    /// before it has deleted that state; a new start or a removal waits for this.
    pub shim_done: watch::Sender<bool>,
}

impl Container {
    pub fn new(rec: Record) -> Arc<Self> {
        Arc::new(Self {
            rec: RwLock::new(rec),
            op: Mutex::new(()),
            exited: watch::channel((0, 0)).0,
            created: watch::channel(0).0,
            pending_attach: std::sync::atomic::AtomicUsize::new(0),
            attach_done: tokio::sync::Notify::new(),
            removed: watch::channel(false).0,
            shim_done: watch::channel(true).0,
        })
    }
}

pub struct ContainerService {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub images: Arc<ImageService>,
    pub volumes: Arc<crate::volumes::VolumeService>,
    pub networks: Arc<crate::networks::NetworkService>,
    pub events: Arc<Events>,
    pub root: PathBuf,
    pub shim_bin: PathBuf,
    pub runtime: PathBuf,
    pub init_bin: Option<PathBuf>,
    by_id: std::sync::RwLock<HashMap<String, Arc<Container>>>,
    pub execs: exec::Execs,
}

impl ContainerService {
    pub async fn open(
        cfg: Arc<Config>,
        store: Store,
        images: Arc<ImageService>,
        volumes: Arc<crate::volumes::VolumeService>,
        networks: Arc<crate::networks::NetworkService>,
        events: Arc<Events>,
    ) -> anyhow::Result<Arc<Self>> {
        let root = cfg.data_root.join("containers");
        std::fs::create_dir_all(&root)?;
        let shim_bin = find_binary(cfg.shim.clone(), "berth-shim")?;
        let runtime = find_binary(None, &cfg.runtime)?;
        let init_bin = ["/usr/bin/tini-static", "/usr/bin/docker-init"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let svc = Arc::new(Self {
            cfg,
            store,
            images,
            volumes,
            networks,
            events,
            root,
            shim_bin,
            runtime,
            init_bin,
            by_id: Default::default(),
            execs: Default::default(),
        });
        let mut map = HashMap::new();
        for raw in svc.store.load_containers().await? {
            match serde_json::from_str::<Record>(&raw) {
                Ok(r) => {
                    map.insert(r.id.clone(), Container::new(r));
                }
                Err(e) => tracing::error!(error = %e, "unreadable container record skipped"),
            }
        }
        *svc.by_id.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(svc)
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir(id).join(format!("{id}-json.log"))
    }

    /// Per-engine directory under /run for shim sockets and runc state: short enough for
    /// Unix socket paths (108 bytes) whatever the data root, and gone after a reboot along with
    /// the containers it describes.
    pub fn run_dir(&self) -> PathBuf {
        let h = crate::util::sha256_digest(self.cfg.data_root.display().to_string().as_bytes());
        PathBuf::from("/run/berth").join(&crate::util::digest_hex(&h)[..12])
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.run_dir().join(&id[..id.len().min(24)])
    }

    pub fn runc_root(&self) -> PathBuf {
        self.run_dir().join("runc")
    }

    pub fn shim(&self, id: &str) -> berth_shim::client::ShimClient {
        berth_shim::client::ShimClient::new(self.state_dir(id))
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(crate) fn insert(&self, c: Arc<Container>, id: &str) {
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), c);
    }

    pub(crate) fn forget(&self, id: &str) {
        self.by_id
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Find a container by full id, name (with or without `/`), or unique id prefix.
    pub async fn get(&self, name_or_id: &str) -> Result<Arc<Container>> {
        let key = name_or_id.trim_start_matches('/');
        if key.is_empty() {
            return Err(no_such(name_or_id));
        }
        let all = self.all();
        if let Some(c) = self
            .by_id
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
        {
            return Ok(c);
        }
        for c in &all {
            if c.rec.read().await.name == key {
                return Ok(c.clone());
            }
        }
        let mut found = Vec::new();
        for c in &all {
            if c.rec.read().await.id.starts_with(key) {
                found.push(c.clone());
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            // A link name (`parent/alias`) names the linked container, as in dockerd.
            0 if key.contains('/') => Box::pin(self.get_by_link_name(key))
                .await
                .ok_or_else(|| no_such(name_or_id)),
            0 => Err(no_such(name_or_id)),
            _ => Err(EngineError::InvalidParameter(format!(
                "multiple IDs found with provided prefix: {key}"
            ))),
        }
    }

    /// Persist a container's record.
    pub async fn save(&self, r: &Record) -> Result<()> {
        let raw = serde_json::to_string(r)?;
        self.store.put_container(&r.id, &r.name, &raw).await
    }

    pub fn emit(&self, action: &str, r: &Record, extra: &[(&str, String)]) {
        let mut attrs: HashMap<String, String> = r.config.labels.clone().unwrap_or_default();
        attrs.insert("name".into(), r.name.clone());
        attrs.insert("image".into(), r.image.clone());
        for (k, v) in extra {
            attrs.insert(k.to_string(), v.clone());
        }
        self.events.emit("container", action, &r.id, attrs);
    }

    /// (container id, running) for each container made from `image_id`.
    pub async fn users_of(&self, image_id: &str) -> Vec<(String, bool)> {
        let mut v = Vec::new();
        for c in self.all() {
            let r = c.rec.read().await;
            if r.image_id == image_id {
                v.push((r.id.clone(), r.state.status.is_alive()));
            }
        }
        v.sort_by_key(|(_, running)| !running);
        v
    }
}

/// Wall-clock phases of one lifecycle operation, logged as one line at debug level
/// (`--log-level debug`): where a `docker run` spends its time.
pub(crate) struct Phases {
    what: &'static str,
    id: String,
    t0: std::time::Instant,
    last: std::time::Instant,
    parts: Vec<(&'static str, std::time::Duration)>,
}

impl Phases {
    pub(crate) fn new(what: &'static str, id: &str) -> Self {
        let now = std::time::Instant::now();
        Self {
            what,
            id: id[..id.len().min(12)].to_string(),
            t0: now,
            last: now,
            parts: Vec::new(),
        }
    }

    pub(crate) fn set_id(&mut self, id: &str) {
        self.id = id[..id.len().min(12)].to_string();
    }

    /// Ends the phase `name` (started at the previous mark).
    pub(crate) fn mark(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.parts.push((name, now - self.last));
        self.last = now;
    }

    pub(crate) fn done(&self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let mut s = String::new();
        for (n, d) in &self.parts {
            s.push_str(&format!(" {n}={:.1}", d.as_secs_f64() * 1e3));
        }
        tracing::debug!(
            container = %self.id,
            total_ms = format!("{:.1}", self.t0.elapsed().as_secs_f64() * 1e3),
            "{} phases (ms):{s}",
            self.what
        );
    }
}

pub fn no_such(name: &str) -> EngineError {
    EngineError::NotFound(format!("No such container: {name}"))
}

fn find_binary(explicit: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    for d in path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"])
    {
        let p = PathBuf::from(d).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    anyhow::bail!("{name} not found (next to berthd or on PATH)")
}
