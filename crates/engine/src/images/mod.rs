//! The image service: resolve, list, inspect, history, tag, remove, prune; pull/push/import live
//! in their own modules.

pub mod archive;
pub mod distribution;
pub mod import;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::config::Config;
use crate::content::Content;
use crate::error::{EngineError, Result};
use crate::events::Events;
use crate::store::images::{ImageRecord, LayerRecord};
use crate::store::Store;
use crate::util::short_id;
use reference::{familiarize, ImageRef};

pub struct ImageService {
    pub cfg: Arc<Config>,
    pub store: Store,
    pub content: Content,
    pub events: Arc<Events>,
    /// Serializes work on one layer (by blob digest) across concurrent pulls.
    layer_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A resolved local image with everything inspect and list need.
#[derive(Debug, Clone)]
pub struct Image {
    pub rec: ImageRecord,
    pub config: Value,
    pub tags: Vec<String>,
    pub digests: Vec<String>,
}

impl Image {
    pub fn id(&self) -> &str {
        &self.rec.id
    }

    /// The runtime config (`config` of the image config JSON).
    pub fn run_config(&self) -> &Value {
        &self.config["config"]
    }

    pub fn labels(&self) -> HashMap<String, String> {
        self.run_config()["Labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn familiar_tags(&self) -> Vec<String> {
        self.tags.iter().map(|t| familiarize(t)).collect()
    }

    pub fn familiar_digests(&self) -> Vec<String> {
        self.digests.iter().map(|t| familiarize(t)).collect()
    }
}

/// Who uses an image, as the container service reports it: (container id, running).
pub type ImageUsers = Vec<(String, bool)>;

impl ImageService {
    pub fn new(cfg: Arc<Config>, store: Store, content: Content, events: Arc<Events>) -> Self {
        Self {
            cfg,
            store,
            content,
            events,
            layer_locks: Default::default(),
        }
    }

    pub(crate) fn layer_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.layer_locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(key.to_string()).or_default().clone()
    }

    async fn hydrate(&self, rec: ImageRecord) -> Result<Image> {
        let config: Value = serde_json::from_str(&rec.config)?;
        let tags = sqlx::query_as::<_, (String,)>(
            "SELECT name FROM tags WHERE image_id = ? ORDER BY name",
        )
        .bind(&rec.id)
        .fetch_all(&self.store.pool)
        .await?
        .into_iter()
        .map(|r| r.0)
        .collect();
        let digests = sqlx::query_as::<_, (String,)>(
            "SELECT name FROM repo_digests WHERE image_id = ? ORDER BY name",
        )
        .bind(&rec.id)
        .fetch_all(&self.store.pool)
        .await?
        .into_iter()
        .map(|r| r.0)
        .collect();
        Ok(Image {
            rec,
            config,
            tags,
            digests,
        })
    }

    pub async fn get_by_id(&self, id: &str) -> Result<Option<Image>> {
        match self.store.get_image(id).await? {
            Some(r) => Ok(Some(self.hydrate(r).await?)),
            None => Ok(None),
        }
    }

    /// Find an image the way dockerd does: full id, reference (tag or digest), then id prefix.
    pub async fn resolve(&self, name: &str) -> Result<Image> {
        if !is_hexish(name) {
            ImageRef::parse(name)?;
        }
        match self.try_resolve(name).await? {
            Some(i) => Ok(i),
            None => Err(self.not_found(name)),
        }
    }

    pub fn not_found(&self, name: &str) -> EngineError {
        let shown = match ImageRef::parse_default_tag(name) {
            Ok(r) if !is_hexish(name) => r.familiar(),
            _ => name.to_string(),
        };
        EngineError::no_such_image(&shown)
    }

    pub async fn try_resolve(&self, name: &str) -> Result<Option<Image>> {
        let hex = name.strip_prefix("sha256:").unwrap_or(name);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            if let Some(i) = self.get_by_id(&format!("sha256:{hex}")).await? {
                return Ok(Some(i));
            }
        }
        if let Ok(r) = ImageRef::parse_default_tag(name) {
            let target = if let Some(d) = r.digested() {
                self.store.digest_target(&d).await?
            } else if let Some(t) = r.tagged() {
                self.store.tag_target(&t).await?
            } else {
                None
            };
            if let Some(id) = target {
                return self.get_by_id(&id).await;
            }
        }
        if !hex.is_empty() && hex.len() < 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let ids = self
                .store
                .image_ids_with_prefix(&hex.to_ascii_lowercase())
                .await?;
            match ids.len() {
                0 => {}
                1 => return self.get_by_id(&ids[0]).await,
                _ => {
                    return Err(EngineError::InvalidParameter(format!(
                        "ambiguous image id prefix: {name}"
                    )))
                }
            }
        }
        Ok(None)
    }

    pub async fn list_all(&self) -> Result<Vec<Image>> {
        let recs = self.store.list_images().await?;
        let tags = self.store.all_tags().await?;
        let digests = self.store.all_repo_digests().await?;
        let mut tmap: HashMap<String, Vec<String>> = HashMap::new();
        for (n, id) in tags {
            tmap.entry(id).or_default().push(n);
        }
        let mut dmap: HashMap<String, Vec<String>> = HashMap::new();
        for (n, id) in digests {
            dmap.entry(id).or_default().push(n);
        }
        let mut out = Vec::with_capacity(recs.len());
        for rec in recs {
            let config: Value = serde_json::from_str(&rec.config)?;
            out.push(Image {
                tags: tmap.remove(&rec.id).unwrap_or_default(),
                digests: dmap.remove(&rec.id).unwrap_or_default(),
                rec,
                config,
            });
        }
        Ok(out)
    }

    pub async fn layers(&self, id: &str) -> Result<Vec<LayerRecord>> {
        self.store.image_layers(id).await
    }

    /// Directories of an image's layers, lowest first (for overlayfs lowerdir, reversed).
    pub async fn layer_dirs(&self, id: &str) -> Result<Vec<std::path::PathBuf>> {
        Ok(self
            .layers(id)
            .await?
            .iter()
            .map(|l| self.content.layer_dir(&l.diff_id))
            .collect())
    }

    /// `docker tag SOURCE TARGET`.
    pub async fn tag(&self, source: &str, repo: &str, tag: Option<&str>) -> Result<()> {
        let img = self.resolve(source).await?;
        let target = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{repo}:{t}"),
            None => repo.to_string(),
        };
        let r = ImageRef::parse_default_tag(&target)?;
        if r.digest.is_some() {
            return Err(EngineError::invalid(
                "refusing to create a tag with a digest reference",
            ));
        }
        let key = r.tagged().unwrap_or_default();
        self.store.set_tag(&key, img.id()).await?;
        self.emit("tag", img.id(), &r.familiar());
        Ok(())
    }

    pub fn emit(&self, action: &str, id: &str, name: &str) {
        let mut attrs = HashMap::new();
        attrs.insert("name".to_string(), name.to_string());
        self.events.emit("image", action, id, attrs);
    }

    /// `docker rmi`. `users` are the containers that use the image (from the container service).
    pub async fn remove(
        &self,
        name: &str,
        force: bool,
        prune_parents: bool,
        users: &ImageUsers,
    ) -> Result<Vec<Value>> {
        let img = self.resolve(name).await?;
        let mut out = Vec::new();
        let by_ref = !is_id_like(name, img.id());
        let sid = short_id(img.id());
        if by_ref {
            let r = ImageRef::parse_default_tag(name)?;
            let key = r.digested().or(r.tagged()).unwrap_or_default();
            let repo = r.name();
            // Once a repository's last tag goes, its digests go with it, as in dockerd.
            let mut removing = vec![key.clone()];
            let other_tag_in_repo = img.tags.iter().any(|t| *t != key && repo_of(t) == repo);
            if r.digest.is_none() && !other_tag_in_repo {
                removing.extend(img.digests.iter().filter(|d| repo_of(d) == repo).cloned());
            }
            let remaining = img
                .tags
                .iter()
                .chain(img.digests.iter())
                .filter(|t| !removing.contains(t))
                .count();
            if remaining > 0 {
                for k in &removing {
                    self.untag_one(&img, k, &mut out).await?;
                }
                return Ok(out);
            }
            if let Some((cid, _running)) = users.first() {
                if !force {
                    return Err(EngineError::Conflict(format!(
                        "conflict: unable to remove repository reference \"{name}\" (must force) - container {} is using its referenced image {sid}",
                        short_id(cid)
                    )));
                }
                // Forced: untag, but keep the image the container still needs.
                for t in img.tags.iter().chain(img.digests.iter()) {
                    self.untag_one(&img, t, &mut out).await?;
                }
                return Ok(out);
            }
        } else {
            let repos: HashSet<String> = img
                .tags
                .iter()
                .chain(img.digests.iter())
                .map(|t| repo_of(t))
                .collect();
            if repos.len() > 1 && !force {
                return Err(EngineError::Conflict(format!(
                    "conflict: unable to delete {sid} (must be forced) - image is referenced in multiple repositories"
                )));
            }
            if let Some((cid, running)) = users.first() {
                if *running {
                    return Err(EngineError::Conflict(format!(
                        "conflict: unable to delete {sid} (cannot be forced) - image is being used by running container {}",
                        short_id(cid)
                    )));
                }
                if !force {
                    return Err(EngineError::Conflict(format!(
                        "conflict: unable to delete {sid} (must be forced) - image is being used by stopped container {}",
                        short_id(cid)
                    )));
                }
                // Forced: the image loses its names but stays while the container needs it.
                for t in img.tags.iter().chain(img.digests.iter()) {
                    self.untag_one(&img, t, &mut out).await?;
                }
                return Ok(out);
            }
        }
        if !self.store.children_of(img.id()).await?.is_empty() {
            if by_ref {
                for t in img.tags.iter().chain(img.digests.iter()) {
                    self.untag_one(&img, t, &mut out).await?;
                }
                return Ok(out);
            }
            return Err(EngineError::Conflict(format!(
                "conflict: unable to delete {sid} (cannot be forced) - image has dependent child images"
            )));
        }
        self.delete_image(&img, &mut out).await?;
        if prune_parents {
            let mut parent = img.rec.parent.clone();
            while let Some(p) = parent {
                let Some(pi) = self.get_by_id(&p).await? else {
                    break;
                };
                if !pi.tags.is_empty() || !self.store.children_of(&p).await?.is_empty() {
                    break;
                }
                parent = pi.rec.parent.clone();
                self.delete_image(&pi, &mut out).await?;
            }
        }
        Ok(out)
    }

    async fn untag_one(&self, img: &Image, key: &str, out: &mut Vec<Value>) -> Result<()> {
        let removed = if key.contains('@') {
            self.store.remove_repo_digest(key).await?
        } else {
            self.store.remove_tag(key).await?
        };
        if removed {
            let f = familiarize(key);
            out.push(serde_json::json!({ "Untagged": f }));
            self.emit("untag", img.id(), &f);
        }
        Ok(())
    }

    /// Untag everything and delete the image; then collect layers no image uses.
    pub async fn delete_image(&self, img: &Image, out: &mut Vec<Value>) -> Result<()> {
        for t in img.tags.iter().chain(img.digests.iter()) {
            out.push(serde_json::json!({ "Untagged": familiarize(t) }));
        }
        self.store.delete_image(img.id()).await?;
        for t in &img.tags {
            self.emit("untag", img.id(), &familiarize(t));
        }
        out.push(serde_json::json!({ "Deleted": img.id() }));
        self.emit("delete", img.id(), img.id());
        for l in self.gc_layers().await? {
            out.push(serde_json::json!({ "Deleted": l }));
        }
        Ok(())
    }

    /// Remove layers (and their blobs) that no image refers to. Returns their diff ids.
    pub async fn gc_layers(&self) -> Result<Vec<String>> {
        let orphans = self.store.orphan_layers().await?;
        let mut removed = Vec::new();
        for l in orphans {
            self.store.delete_layer(&l.diff_id).await?;
            self.content.remove_layer(&l.diff_id).await;
            if let Some(b) = &l.blob_digest {
                self.content.remove_blob(b).await;
            }
            removed.push(l.diff_id);
        }
        Ok(removed)
    }

    /// Make the store and the content directories agree after a crash: layer rows whose directory
    /// vanished are dropped (and images using them), directories nothing refers to are removed.
    pub async fn repair(&self) -> Result<()> {
        let known: HashSet<String> = sqlx::query_as::<_, (String,)>("SELECT diff_id FROM layers")
            .fetch_all(&self.store.pool)
            .await?
            .into_iter()
            .map(|r| crate::util::digest_hex(&r.0).to_string())
            .collect();
        if let Ok(rd) = std::fs::read_dir(self.content.root().join("layers")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !known.contains(&n) {
                    tracing::info!(layer = %n, "removing unreferenced layer directory");
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        for hex in &known {
            let diff = format!("sha256:{hex}");
            if !self.content.has_layer(&diff) {
                tracing::warn!(layer = %diff, "layer directory missing; dropping images that use it");
                let users: Vec<(String,)> =
                    sqlx::query_as("SELECT DISTINCT image_id FROM image_layers WHERE diff_id = ?")
                        .bind(&diff)
                        .fetch_all(&self.store.pool)
                        .await?;
                for (id,) in users {
                    self.store.delete_image(&id).await?;
                }
                self.store.delete_layer(&diff).await?;
            }
        }
        let blobs: HashSet<String> = self
            .store
            .referenced_blobs()
            .await?
            .into_iter()
            .map(|b| crate::util::digest_hex(&b).to_string())
            .collect();
        // Config and manifest blobs are referenced by images; keep those too.
        let mut keep = blobs;
        for img in self.store.list_images().await? {
            keep.insert(crate::util::digest_hex(&img.id).to_string());
        }
        if let Ok(rd) = std::fs::read_dir(self.content.root().join("blobs/sha256")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if !keep.contains(&n) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }

    /// Store an image config (+ layers already recorded) under `tags`. Returns the image id.
    pub async fn commit_config(
        &self,
        config: &Value,
        diff_ids: &[String],
        parent: Option<String>,
        tags: &[String],
    ) -> Result<String> {
        let bytes = serde_json::to_vec(config)?;
        self.commit_config_raw(&bytes, diff_ids, parent, tags).await
    }

    /// As `commit_config`, keeping the config bytes verbatim (its digest is the image id).
    pub async fn commit_config_raw(
        &self,
        bytes: &[u8],
        diff_ids: &[String],
        parent: Option<String>,
        tags: &[String],
    ) -> Result<String> {
        let config: Value = serde_json::from_slice(bytes)
            .map_err(|e| EngineError::invalid(format!("invalid image config: {e}")))?;
        let id = self.content.put_blob(bytes).await?;
        let mut size = 0i64;
        for d in diff_ids {
            if let Some(l) = self.store.get_layer(d).await? {
                size += l.size;
            }
        }
        let created = config["created"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp())
            .unwrap_or_else(|| chrono::Utc::now().timestamp());
        let rec = ImageRecord {
            id: id.clone(),
            config: String::from_utf8_lossy(bytes).into_owned(),
            created,
            size,
            parent,
            manifest: None,
            added_at: chrono::Utc::now().timestamp(),
        };
        self.store.put_image(&rec, diff_ids, tags, &[]).await?;
        Ok(id)
    }

    /// Ingest a layer tar made locally (import, load, commit, build) and record it.
    pub async fn ingest_layer(&self, tar_path: std::path::PathBuf) -> Result<LayerRecord> {
        let content = self.content.clone();
        let (rec, _) = tokio::task::spawn_blocking(move || -> Result<(LayerRecord, ())> {
            let tmp_dir = content.tmp_path();
            std::fs::create_dir_all(&tmp_dir)?;
            let gz_tmp = content.tmp_path();
            let src = crate::content::layer::open_decompressed(&tar_path)?;
            let ing = match crate::content::layer::ingest(src, &tmp_dir, &gz_tmp) {
                Ok(i) => i,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp_dir);
                    let _ = std::fs::remove_file(&gz_tmp);
                    return Err(EngineError::invalid(format!("invalid layer archive: {e}")));
                }
            };
            let dest = content.layer_dir(&ing.unpacked.diff_id);
            if dest.exists() {
                let _ = std::fs::remove_dir_all(&tmp_dir);
            } else {
                std::fs::rename(&tmp_dir, &dest)?;
            }
            std::fs::rename(&gz_tmp, content.blob_path(&ing.blob_digest))?;
            Ok((
                LayerRecord {
                    diff_id: ing.unpacked.diff_id,
                    blob_digest: Some(ing.blob_digest),
                    blob_size: Some(ing.blob_size as i64),
                    media_type: Some(
                        "application/vnd.docker.image.rootfs.diff.tar.gzip".to_string(),
                    ),
                    size: ing.unpacked.size as i64,
                },
                (),
            ))
        })
        .await
        .map_err(EngineError::internal)??;
        self.store.put_layer(&rec).await?;
        Ok(rec)
    }
}

fn is_hexish(s: &str) -> bool {
    let h = s.strip_prefix("sha256:").unwrap_or(s);
    !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `name` designates the image by (a prefix of) its id rather than by a reference.
fn is_id_like(name: &str, id: &str) -> bool {
    let h = name.strip_prefix("sha256:").unwrap_or(name);
    is_hexish(h) && crate::util::digest_hex(id).starts_with(&h.to_ascii_lowercase())
}

/// The repository part of a stored `registry/repo:tag` or `registry/repo@digest`.
fn repo_of(stored: &str) -> String {
    if let Some((repo, _)) = stored.split_once('@') {
        return repo.to_string();
    }
    match stored.rsplit_once(':') {
        // A colon after the last slash separates the tag; before it, it is a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo.to_string(),
        _ => stored.to_string(),
    }
}
