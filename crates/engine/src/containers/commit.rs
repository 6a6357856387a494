//! Snapshots of a container's filesystem changes as an image layer: `docker commit`, and each
//! RUN/COPY step of the builder.

use std::sync::Arc;

use serde_json::{json, Value};

use super::rootfs::Rootfs;
use super::{Container, ContainerService};
use crate::error::{EngineError, Result};
use crate::store::images::LayerRecord;

/// Files runc creates as mount points for the per-container /etc files: not the user's changes.
const MOUNT_STUBS: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf", ".dockerenv"];

/// Remove empty mount-point stubs from a copy of the change set before it becomes a layer.
fn is_stub(rel: &std::path::Path, md: &std::fs::Metadata) -> bool {
    let s = rel.to_string_lossy();
    (MOUNT_STUBS.contains(&s.as_ref()) && md.is_file() && md.len() == 0)
        || ((s == "dev" || s == "proc" || s == "sys") && md.is_dir())
}

/// Whether an upper dir holds a change worth a layer: anything but mount-point stubs and
/// directories copied up unchanged (same mode and owner as in the image, not opaque).
pub fn has_changes(upper: &std::path::Path, lowers: &[std::path::PathBuf]) -> bool {
    fn walk(upper: &std::path::Path, rel: &std::path::Path, lowers: &[std::path::PathBuf]) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(rd) = std::fs::read_dir(upper.join(rel)) else {
            return true;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let Ok(md) = std::fs::symlink_metadata(e.path()) else {
                return true;
            };
            if is_stub(&r, &md) {
                continue;
            }
            if !md.is_dir() {
                return true;
            }
            let same = lowers
                .iter()
                .rev()
                .find_map(|l| std::fs::symlink_metadata(l.join(&r)).ok());
            let unchanged = same.is_some_and(|l| {
                l.is_dir() && l.mode() == md.mode() && l.uid() == md.uid() && l.gid() == md.gid()
            });
            let opaque = crate::content::layer::get_xattr(&e.path(), "trusted.overlay.opaque")
                .as_deref()
                == Some(b"y");
            if !unchanged || opaque || walk(upper, &r, lowers) {
                return true;
            }
        }
        false
    }
    walk(upper, std::path::Path::new(""), lowers)
}

impl ContainerService {
    /// Pack the container's changes (its overlay upper dir) into a new layer.
    pub async fn snapshot_layer(&self, id: &str) -> Result<LayerRecord> {
        let rootfs = Rootfs::new(&self.dir(id));
        let upper = rootfs.upper.clone();
        let tmp = self.images.content.tmp_path();
        let tmp2 = tmp.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&upper)?;
            let f = std::fs::File::create(&tmp2)?;
            crate::content::layer::pack_dir_filtered(&upper, std::io::BufWriter::new(f), &is_stub)
                .map_err(|e| {
                    EngineError::Internal(format!("packing the container's changes: {e}"))
                })?;
            Ok(())
        })
        .await
        .map_err(EngineError::internal)??;
        let rec = self.images.ingest_layer(tmp.clone()).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        rec
    }

    /// `docker commit`: the container's changes on top of its image, with its config.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        &self,
        c: &Arc<Container>,
        repo: Option<&str>,
        tag: Option<&str>,
        comment: Option<&str>,
        author: Option<&str>,
        changes: &[String],
        pause: bool,
        config_override: Option<Value>,
    ) -> Result<String> {
        let r = c.rec.read().await.clone();
        let img = self
            .images
            .get_by_id(&r.image_id)
            .await?
            .ok_or_else(|| EngineError::no_such_image(&r.image))?;
        let tags = match repo.filter(|x| !x.is_empty()) {
            Some(repo) => {
                let full = match tag.filter(|t| !t.is_empty()) {
                    Some(t) => format!("{repo}:{t}"),
                    None => repo.to_string(),
                };
                vec![
                    crate::images::reference::ImageRef::parse_default_tag(&full)?
                        .tagged()
                        .unwrap_or_default(),
                ]
            }
            None => vec![],
        };
        let paused_here = pause && r.state.status == super::Status::Running;
        if paused_here {
            let _ = self.shim(&r.id).pause().await;
        }
        let layer = self.snapshot_layer(&r.id).await;
        if paused_here {
            let _ = self.shim(&r.id).resume().await;
        }
        let layer = layer?;
        let mut run = serde_json::to_value(&r.config)?;
        if let Some(Value::Object(o)) = config_override {
            for (k, v) in o {
                if !v.is_null() {
                    run[k] = v;
                }
            }
        }
        for ch in changes {
            for line in ch.lines().filter(|l| !l.trim().is_empty()) {
                crate::images::import::apply_change(&mut run, line)?;
            }
        }
        // Per-container settings do not belong to the image.
        if let Some(o) = run.as_object_mut() {
            for k in [
                "Hostname",
                "Domainname",
                "AttachStdin",
                "AttachStdout",
                "AttachStderr",
                "OpenStdin",
                "StdinOnce",
                "Tty",
            ] {
                o.remove(k);
            }
            o.insert("Image".into(), json!(r.image_id));
        }
        let now = crate::util::rfc3339_nano(chrono::Utc::now());
        let mut cfg = img.config.clone();
        cfg["config"] = run;
        cfg["created"] = json!(now);
        cfg["container"] = json!(r.id);
        if let Some(a) = author.filter(|a| !a.is_empty()) {
            cfg["author"] = json!(a);
        }
        match comment.filter(|c| !c.is_empty()) {
            Some(cm) => cfg["comment"] = json!(cm),
            None => {
                if let Some(o) = cfg.as_object_mut() {
                    o.remove("comment");
                }
            }
        }
        let mut diff_ids: Vec<String> = self
            .images
            .layers(img.id())
            .await?
            .into_iter()
            .map(|l| l.diff_id)
            .collect();
        diff_ids.push(layer.diff_id.clone());
        cfg["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        let mut hist = cfg["history"].as_array().cloned().unwrap_or_default();
        let mut cmd = r.path.clone();
        for a in &r.args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        let mut h = json!({"created": now, "created_by": cmd});
        if let Some(a) = author.filter(|a| !a.is_empty()) {
            h["author"] = json!(a);
        }
        if let Some(cm) = comment.filter(|c| !c.is_empty()) {
            h["comment"] = json!(cm);
        }
        hist.push(h);
        cfg["history"] = json!(hist);
        let id = self
            .images
            .commit_config(&cfg, &diff_ids, Some(img.id().to_string()), &tags)
            .await?;
        self.emit(
            "commit",
            &r,
            &[("comment", comment.unwrap_or_default().to_string())],
        );
        Ok(id)
    }
}
