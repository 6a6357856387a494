//! Local volumes: a directory `<data-root>/volumes/<name>/_data` per volume, recorded in SQLite.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{json, Value};
use sqlx::FromRow;

use crate::error::{EngineError, Result};
use crate::events::Events;
use crate::store::Store;

#[derive(Debug, Clone, FromRow)]
pub struct VolumeRecord {
    pub name: String,
    pub driver: String,
    pub labels: String,
    pub options: String,
    pub anonymous: i64,
    pub created: String,
}

impl VolumeRecord {
    /// The volume's labels; anonymous volumes carry `com.docker.volume.anonymous` as in
    /// Docker ≥ 23 (clients and `volume prune` tell them apart by it).
    pub fn labels(&self) -> HashMap<String, String> {
        let mut l: HashMap<String, String> = serde_json::from_str(&self.labels).unwrap_or_default();
        if self.anonymous != 0 {
            l.insert("com.docker.volume.anonymous".into(), String::new());
        }
        l
    }
    pub fn options(&self) -> HashMap<String, String> {
        serde_json::from_str(&self.options).unwrap_or_default()
    }
}

pub struct VolumeService {
    pub store: Store,
    pub root: PathBuf,
    pub events: std::sync::Arc<Events>,
}

/// Docker's volume name rule.
pub fn validate_name(n: &str) -> Result<()> {
    let mut c = n.chars();
    let ok = n.len() >= 2
        && c.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && c.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        return Err(EngineError::invalid(format!(
            "create {n}: \"{n}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    Ok(())
}

impl VolumeService {
    pub fn new(
        store: Store,
        data_root: &std::path::Path,
        events: std::sync::Arc<Events>,
    ) -> std::io::Result<Self> {
        let root = data_root.join("volumes");
        std::fs::create_dir_all(&root)?;
        Ok(Self {
            store,
            root,
            events,
        })
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    pub async fn get(&self, name: &str) -> Result<VolumeRecord> {
        sqlx::query_as("SELECT * FROM volumes WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.store.pool)
            .await?
            .ok_or_else(|| EngineError::NotFound(format!("get {name}: no such volume")))
    }

    pub async fn list(&self) -> Result<Vec<VolumeRecord>> {
        Ok(sqlx::query_as("SELECT * FROM volumes ORDER BY name")
            .fetch_all(&self.store.pool)
            .await?)
    }

    /// Create (or return the existing) volume. An empty name makes an anonymous one.
    pub async fn create(
        &self,
        name: Option<&str>,
        driver: Option<&str>,
        labels: HashMap<String, String>,
        options: HashMap<String, String>,
    ) -> Result<VolumeRecord> {
        let driver = driver.filter(|d| !d.is_empty()).unwrap_or("local");
        if driver != "local" {
            return Err(EngineError::NotFound(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        let (name, anonymous) = match name.filter(|n| !n.is_empty()) {
            Some(n) => {
                validate_name(n)?;
                (n.to_string(), false)
            }
            None => (crate::util::random_id(), true),
        };
        if let Ok(v) = self.get(&name).await {
            return Ok(v);
        }
        for k in options.keys() {
            if !matches!(k.as_str(), "type" | "device" | "o" | "size") {
                return Err(EngineError::invalid(format!("invalid option: {k:?}")));
            }
        }
        std::fs::create_dir_all(self.data_dir(&name))?;
        let rec = VolumeRecord {
            name: name.clone(),
            driver: driver.into(),
            labels: serde_json::to_string(&labels)?,
            options: serde_json::to_string(&options)?,
            anonymous: anonymous as i64,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        sqlx::query("INSERT OR IGNORE INTO volumes (name, driver, labels, options, anonymous, created) VALUES (?,?,?,?,?,?)")
            .bind(&rec.name)
            .bind(&rec.driver)
            .bind(&rec.labels)
            .bind(&rec.options)
            .bind(rec.anonymous)
            .bind(&rec.created)
            .execute(&self.store.pool)
            .await?;
        self.emit("create", &name);
        Ok(rec)
    }

    pub fn emit(&self, action: &str, name: &str) {
        let mut a = HashMap::new();
        a.insert("driver".to_string(), "local".to_string());
        self.events.emit("volume", action, name, a);
    }

    /// Remove a volume; `in_use` lists the containers using it (409 unless empty).
    pub async fn remove(&self, name: &str, in_use: &[String]) -> Result<()> {
        self.get(name).await?;
        if !in_use.is_empty() {
            return Err(EngineError::Conflict(format!(
                "remove {name}: volume is in use - [{}]",
                in_use.join(", ")
            )));
        }
        sqlx::query("DELETE FROM volumes WHERE name = ?")
            .bind(name)
            .execute(&self.store.pool)
            .await?;
        let dir = self.root.join(name);
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        self.emit("destroy", name);
        Ok(())
    }

    pub fn size_of(&self, name: &str) -> i64 {
        fn walk(p: &std::path::Path) -> u64 {
            let mut n = 0;
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if let Ok(md) = e.path().symlink_metadata() {
                        if md.is_dir() {
                            n += walk(&e.path());
                        } else {
                            n += md.len();
                        }
                    }
                }
            }
            n
        }
        walk(&self.data_dir(name)) as i64
    }

    pub fn to_json(&self, v: &VolumeRecord, usage: Option<(i64, i64)>) -> Value {
        let mut j = json!({
            "Name": v.name,
            "Driver": v.driver,
            "Mountpoint": self.data_dir(&v.name),
            "CreatedAt": v.created,
            "Labels": v.labels(),
            "Scope": "local",
            "Options": if v.options == "{}" { Value::Null } else { json!(v.options()) },
        });
        if let Some((size, refs)) = usage {
            j["UsageData"] = json!({"Size": size, "RefCount": refs});
        }
        j
    }
}
