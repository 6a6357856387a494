//! [`Host`]: the app's single connection to the engine.
//!
//! - connects with bollard to the engine's socket (API v1.44, Berth's level),
//! - keeps the engine state and one `/events` subscription shared by the UI
//!   and the tray (the "hub"): no polling while the engine runs; while it is
//!   down the hub retries with a backoff capped at 3 s and tells everyone when
//!   it is back,
//! - runs streams (logs, stats, pull/push progress, exec sessions) for the UI,
//!   each one ending when the UI closes it or its page goes away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bollard::{ClientVersion, Docker};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};

use crate::error::{HostError, Result};
use crate::settings::{resolve_docker_host, Settings};

/// Berth serves the Docker Engine API v1.44; bollard would otherwise ask for
/// its own newer default, which the engine rejects as dockerd does.
pub const API_VERSION: ClientVersion = ClientVersion {
    major_version: 1,
    minor_version: 44,
};

/// Where messages of a stream go.  Returns false when nobody listens any more.
pub type Sink = Arc<dyn Fn(Value) -> bool + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    /// "unknown", "running", "stopped" or "starting".
    pub state: String,
    /// `unix:///run/berth/docker.sock`...
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<HostError>,
}

pub(crate) struct StreamEntry {
    pub task: tokio::task::AbortHandle,
    pub input: Option<mpsc::UnboundedSender<Bytes>>,
    pub exec_id: Option<String>,
}

pub struct Host {
    pub(crate) settings_path: PathBuf,
    pub(crate) settings: RwLock<Settings>,
    docker: Mutex<Option<(String, Docker)>>,
    state: Mutex<EngineState>,
    events: broadcast::Sender<Value>,
    hub_started: AtomicBool,
    pub(crate) wake: Notify,
    next_stream: AtomicU64,
    pub(crate) streams: Mutex<HashMap<u64, StreamEntry>>,
    pub(crate) starting: AtomicBool,
}

impl Host {
    /// A host with the settings at `settings_path` (a broken file falls back
    /// to the defaults, with a warning in the log; saving rewrites it).
    pub fn new(settings_path: PathBuf) -> Arc<Host> {
        let settings = Settings::load(&settings_path).unwrap_or_else(|e| {
            tracing::warn!("{e}; using default settings");
            Settings::default()
        });
        let host = resolve_docker_host(
            &settings.docker_host,
            std::env::var("DOCKER_HOST").ok().as_deref(),
        );
        let (events, _) = broadcast::channel(1024);
        Arc::new(Host {
            settings_path,
            settings: RwLock::new(settings),
            docker: Mutex::new(None),
            state: Mutex::new(EngineState {
                state: "unknown".into(),
                host,
                version: None,
                api_version: None,
                error: None,
            }),
            events,
            hub_started: AtomicBool::new(false),
            wake: Notify::new(),
            next_stream: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
            starting: AtomicBool::new(false),
        })
    }

    pub fn with_default_settings() -> Arc<Host> {
        Host::new(Settings::default_path())
    }

    pub fn settings(&self) -> Settings {
        self.settings.read().unwrap().clone()
    }

    /// The engine address in use (`unix:///...`).
    pub fn docker_host(&self) -> String {
        resolve_docker_host(
            &self.settings.read().unwrap().docker_host,
            std::env::var("DOCKER_HOST").ok().as_deref(),
        )
    }

    /// A bollard client for the engine (cheap to clone).  Fails with
    /// `EngineUnreachable` when the socket does not exist.
    pub fn docker(&self) -> Result<Docker> {
        let addr = self.docker_host();
        let mut g = self.docker.lock().unwrap();
        if let Some((a, d)) = &*g {
            if *a == addr {
                return Ok(d.clone());
            }
        }
        let d = if let Some(path) = addr.strip_prefix("unix://") {
            Docker::connect_with_unix(path, 120, &API_VERSION)?
        } else if addr.starts_with("tcp://") || addr.starts_with("http://") {
            Docker::connect_with_http(&addr, 120, &API_VERSION)?
        } else {
            return Err(HostError::invalid(format!(
                "unsupported engine address {addr}"
            )));
        };
        *g = Some((addr, d.clone()));
        Ok(d)
    }

    pub fn engine_state(&self) -> EngineState {
        self.state.lock().unwrap().clone()
    }

    /// Records the engine's state and tells every subscriber when it changed.
    pub(crate) fn set_state(
        &self,
        state: &str,
        version: Option<(String, String)>,
        error: Option<HostError>,
    ) {
        let host = self.docker_host();
        let mut g = self.state.lock().unwrap();
        let (version, api_version) = match version {
            Some((v, a)) => (Some(v), Some(a)),
            None if state == "running" => (g.version.clone(), g.api_version.clone()),
            None => (None, None),
        };
        let new = EngineState {
            state: state.into(),
            host,
            version,
            api_version,
            error,
        };
        if *g != new {
            *g = new.clone();
            drop(g);
            tracing::info!(state = %new.state, error = ?new.error.as_ref().map(|e| &e.message), "engine state");
            let _ = self.events.send(engine_msg(&new));
        }
    }

    /// Subscribes to engine state changes and engine events:
    /// `{"type":"engine", ...EngineState}` and `{"type":"event","event":{...}}`.
    /// The first subscriber starts the hub.
    pub fn subscribe(self: &Arc<Self>) -> broadcast::Receiver<Value> {
        let rx = self.events.subscribe();
        if !self.hub_started.swap(true, Ordering::SeqCst) {
            let me = self.clone();
            tokio::spawn(async move { me.hub().await });
        }
        rx
    }

    async fn hub(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let res: Result<()> = async {
                let d = self.docker()?;
                let v = d.version().await?;
                backoff = Duration::from_millis(250);
                self.starting.store(false, Ordering::SeqCst);
                self.set_state(
                    "running",
                    Some((
                        v.version.unwrap_or_default(),
                        v.api_version.unwrap_or_default(),
                    )),
                    None,
                );
                let mut since: Option<String> = None;
                loop {
                    let opts = bollard::query_parameters::EventsOptions {
                        since: since.clone(),
                        ..Default::default()
                    };
                    let mut s = d.events(Some(opts));
                    let end: Option<HostError> = loop {
                        tokio::select! {
                            item = s.next() => match item {
                                Some(Ok(ev)) => {
                                    if let Some(t) = ev.time {
                                        // Resume from the last one seen; a repeated event
                                        // only refreshes a list once more.
                                        since = Some(t.to_string());
                                    }
                                    let _ = self.events.send(json!({"type": "event", "event": ev}));
                                }
                                Some(Err(e)) => break Some(e.into()),
                                None => break None,
                            },
                            _ = self.wake.notified() => break None,
                        }
                    };
                    // The stream ended: a restart, the engine's own end, or a
                    // settings change.  Carry on when the engine still answers.
                    if self.docker_host_changed(&d) {
                        return Ok(());
                    }
                    if let Err(e) = d.ping().await {
                        return Err(end.unwrap_or_else(|| e.into()));
                    }
                }
            }
            .await;
            match res {
                Ok(()) => continue,
                Err(e) => {
                    if self.starting.load(Ordering::SeqCst) {
                        self.set_state("starting", None, None);
                    } else {
                        self.set_state("stopped", None, Some(e));
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.wake.notified() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(3));
        }
    }

    fn docker_host_changed(&self, _d: &Docker) -> bool {
        let g = self.docker.lock().unwrap();
        match &*g {
            Some((a, _)) => *a != self.docker_host(),
            None => true,
        }
    }

    /// Wakes the hub (after a settings change or an engine start).
    pub fn poke(&self) {
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    pub(crate) fn new_stream_id(&self) -> u64 {
        self.next_stream.fetch_add(1, Ordering::SeqCst)
    }

    /// Stops a stream (the UI left the page); unknown ids are fine.
    pub fn close_stream(&self, id: u64) -> bool {
        match self.streams.lock().unwrap().remove(&id) {
            Some(e) => {
                e.task.abort();
                true
            }
            None => false,
        }
    }

    /// Stops several streams (a window or WebSocket went away).
    pub fn close_streams(&self, ids: &[u64]) {
        for id in ids {
            self.close_stream(*id);
        }
    }

    pub fn open_stream_count(&self) -> usize {
        self.streams.lock().unwrap().len()
    }
}

pub(crate) fn engine_msg(s: &EngineState) -> Value {
    let mut v = serde_json::to_value(s).unwrap();
    v["type"] = json!("engine");
    v
}
