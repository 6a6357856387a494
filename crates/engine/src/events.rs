//! The event bus behind `GET /events`: a broadcast channel plus a bounded history for `since`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

const HISTORY: usize = 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: HashMap<String, String>,
}

/// One event in Docker's wire shape (with the legacy `status`/`id`/`from` fields for containers
/// and images, which older clients still read).
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

pub struct Events {
    tx: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self {
            tx,
            history: Mutex::new(VecDeque::with_capacity(HISTORY)),
        }
    }

    /// Publish an event. `attrs` are the Actor attributes (e.g. `name`, `image`, labels).
    pub fn emit(&self, kind: &str, action: &str, id: &str, attrs: HashMap<String, String>) {
        let now = chrono::Utc::now();
        let nanos = now.timestamp_nanos_opt().unwrap_or(0);
        let legacy = matches!(kind, "container" | "image");
        let ev = Event {
            kind: kind.to_string(),
            action: action.to_string(),
            from: if kind == "container" {
                attrs.get("image").cloned()
            } else {
                None
            },
            actor: Actor {
                id: id.to_string(),
                attributes: attrs,
            },
            scope: "local".into(),
            time: now.timestamp(),
            time_nano: nanos,
            status: legacy.then(|| action.to_string()),
            id: legacy.then(|| id.to_string()),
        };
        if let Ok(mut h) = self.history.lock() {
            if h.len() == HISTORY {
                h.pop_front();
            }
            h.push_back(ev.clone());
        }
        let _ = self.tx.send(ev);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Past events with `time_nano` in `[since, until]`.
    pub fn history(&self, since_nanos: i64, until_nanos: i64) -> Vec<Event> {
        self.history
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|e| e.time_nano >= since_nanos && e.time_nano <= until_nanos)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}
