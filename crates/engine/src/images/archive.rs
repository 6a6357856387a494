//! `docker save` / `docker load` in the docker-archive format (with the OCI layout Docker 25
//! writes alongside: `index.json`, `oci-layout`, `blobs/sha256/...`).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::progress::{Message, Progress};
use super::reference::{familiarize, ImageRef};
use super::{Image, ImageService};
use crate::error::{EngineError, Result};
use crate::util::digest_hex;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// What to write for one image: its config, layer blobs (gzip) with diff ids, and names.
struct SaveItem {
    config: Vec<u8>,
    config_digest: String,
    layers: Vec<(String, PathBuf)>,
    tags: Vec<String>,
}

/// A `Write` that hands chunks to the async side of the response.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::result::Result<bytes::Bytes, io::Error>>,
}

impl ChannelWriter {
    pub fn new(
        tx: tokio::sync::mpsc::Sender<std::result::Result<bytes::Bytes, io::Error>>,
    ) -> Self {
        Self { tx }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ImageService {
    /// Resolve the names to save (errors before streaming: 404 for an unknown image).
    pub async fn save_prepare(&self, names: &[String]) -> Result<Vec<(Image, Vec<String>)>> {
        let mut by_id: Vec<(Image, Vec<String>)> = Vec::new();
        for n in names {
            let img = self.resolve(n).await?;
            // A reference saves that tag; an id saves the image untagged, as dockerd does.
            let by_id_name =
                crate::util::digest_hex(img.id()).starts_with(n.trim_start_matches("sha256:"));
            let tags: Vec<String> = match ImageRef::parse_default_tag(n) {
                Ok(r) if !by_id_name => r.tagged().into_iter().collect(),
                _ => Vec::new(),
            };
            if let Some(e) = by_id.iter_mut().find(|(i, _)| i.id() == img.id()) {
                e.1.extend(tags);
            } else {
                by_id.push((img, tags));
            }
        }
        Ok(by_id)
    }

    /// Write the archive for `items` into `out` (blocking; run it on a blocking thread).
    pub async fn save_to(
        &self,
        items: Vec<(Image, Vec<String>)>,
        out: ChannelWriter,
    ) -> Result<()> {
        let mut plan = Vec::new();
        for (img, tags) in items {
            let mut layers = Vec::new();
            for l in self.layers(img.id()).await? {
                let blob = l
                    .blob_digest
                    .clone()
                    .ok_or_else(|| EngineError::internal("layer without blob"))?;
                layers.push((l.diff_id.clone(), self.content.blob_path(&blob)));
            }
            plan.push(SaveItem {
                config: img.rec.config.clone().into_bytes(),
                config_digest: img.rec.id.clone(),
                layers,
                tags,
            });
        }
        let tmp = self.content.tmp_path();
        tokio::task::spawn_blocking(move || write_archive(plan, out, &tmp))
            .await
            .map_err(EngineError::internal)?
            .map_err(|e| EngineError::Internal(format!("writing archive: {e}")))?;
        Ok(())
    }

    /// `docker load`: read a docker-archive (or plain OCI layout) tar from `tar_path`.
    pub async fn load(&self, tar_path: PathBuf, progress: &Progress) -> Result<Vec<String>> {
        let dir = self.content.tmp_path();
        let d2 = dir.clone();
        let res = tokio::task::spawn_blocking(move || -> io::Result<()> {
            std::fs::create_dir_all(&d2)?;
            let src = crate::content::layer::open_decompressed(&tar_path)?;
            let mut ar = tar::Archive::new(src);
            ar.set_preserve_permissions(false);
            ar.unpack(&d2)
        })
        .await
        .map_err(EngineError::internal)?;
        let out = match res {
            Ok(()) => self.load_dir(&dir, progress).await,
            Err(e) => Err(EngineError::invalid(format!("invalid archive: {e}"))),
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        out
    }

    async fn load_dir(&self, dir: &Path, progress: &Progress) -> Result<Vec<String>> {
        let entries: Vec<Value> = match std::fs::read(dir.join("manifest.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| EngineError::invalid(format!("invalid manifest.json: {e}")))?,
            Err(_) => oci_layout_entries(dir)?,
        };
        if entries.is_empty() {
            return Err(EngineError::invalid(
                "archive holds no images (no manifest.json or index.json)",
            ));
        }
        let mut loaded = Vec::new();
        for e in entries {
            let cfg_path = e["Config"]
                .as_str()
                .ok_or_else(|| EngineError::invalid("manifest.json entry without Config"))?;
            let cfg_bytes = std::fs::read(safe_join(dir, cfg_path)?)
                .map_err(|e| EngineError::invalid(format!("reading {cfg_path}: {e}")))?;
            let cfg: Value = serde_json::from_slice(&cfg_bytes)
                .map_err(|e| EngineError::invalid(format!("invalid image config: {e}")))?;
            let want: Vec<String> = cfg["rootfs"]["diff_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let layer_paths: Vec<String> = e["Layers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|d| d.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if want.len() != layer_paths.len() {
                return Err(EngineError::invalid(format!(
                    "image config has {} diff ids for {} layers",
                    want.len(),
                    layer_paths.len()
                )));
            }
            let mut diff_ids = Vec::new();
            for (p, w) in layer_paths.iter().zip(want.iter()) {
                if self.store.get_layer(w).await?.is_some() && self.content.has_layer(w) {
                    diff_ids.push(w.clone());
                    continue;
                }
                progress
                    .send(Message::layer(&crate::util::short_id(w), "Loading layer"))
                    .await;
                let rec = self.ingest_layer(safe_join(dir, p)?).await?;
                if rec.diff_id != *w {
                    return Err(EngineError::invalid(format!(
                        "layer {p} has diff id {} but the config says {w}",
                        rec.diff_id
                    )));
                }
                diff_ids.push(rec.diff_id);
            }
            let mut tags = Vec::new();
            for t in e["RepoTags"].as_array().into_iter().flatten() {
                if let Some(t) = t.as_str() {
                    tags.push(ImageRef::parse_default_tag(t)?.tagged().unwrap_or_default());
                }
            }
            let id = self
                .commit_config_raw(&cfg_bytes, &diff_ids, None, &tags)
                .await?;
            if tags.is_empty() {
                progress
                    .send(Message::stream(format!("Loaded image ID: {id}\n")))
                    .await;
                loaded.push(id.clone());
            }
            for t in &tags {
                let f = familiarize(t);
                progress
                    .send(Message::stream(format!("Loaded image: {f}\n")))
                    .await;
                loaded.push(f);
            }
            self.emit("load", &id, &id);
        }
        Ok(loaded)
    }
}

fn oci_layout_entries(dir: &Path) -> Result<Vec<Value>> {
    let idx: Value = match std::fs::read(dir.join("index.json")) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| EngineError::invalid(format!("invalid index.json: {e}")))?,
        Err(_) => return Ok(vec![]),
    };
    let mut out = Vec::new();
    for m in idx["manifests"].as_array().into_iter().flatten() {
        let d = m["digest"].as_str().unwrap_or_default();
        let mf: Value = serde_json::from_slice(
            &std::fs::read(dir.join("blobs/sha256").join(digest_hex(d)))
                .map_err(|e| EngineError::invalid(format!("reading manifest {d}: {e}")))?,
        )
        .map_err(|e| EngineError::invalid(format!("invalid manifest {d}: {e}")))?;
        let blob = |d: &Value| {
            format!(
                "blobs/sha256/{}",
                digest_hex(d.as_str().unwrap_or_default())
            )
        };
        let name = m["annotations"]["io.containerd.image.name"]
            .as_str()
            .map(String::from);
        out.push(json!({
            "Config": blob(&mf["config"]["digest"]),
            "Layers": mf["layers"].as_array().into_iter().flatten().map(|l| blob(&l["digest"])).collect::<Vec<_>>(),
            "RepoTags": name.into_iter().collect::<Vec<_>>(),
        }));
    }
    Ok(out)
}

fn safe_join(dir: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.components()
        .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(EngineError::invalid(format!(
            "invalid path in archive: {rel}"
        )));
    }
    Ok(dir.join(p))
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)
}

fn write_archive(items: Vec<SaveItem>, out: ChannelWriter, tmp: &Path) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    let mut written: HashMap<String, u64> = HashMap::new();
    let mut manifest_json = Vec::new();
    let mut index = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut dir_h = tar::Header::new_ustar();
    dir_h.set_entry_type(tar::EntryType::Directory);
    dir_h.set_mode(0o755);
    dir_h.set_size(0);
    dir_h.set_mtime(0);
    b.append_data(&mut dir_h.clone(), "blobs/", io::empty())?;
    b.append_data(&mut dir_h, "blobs/sha256/", io::empty())?;
    for it in items {
        let mut layer_names = Vec::new();
        let mut layer_descs = Vec::new();
        for (diff_id, blob) in &it.layers {
            let name = format!("blobs/sha256/{}", digest_hex(diff_id));
            if !written.contains_key(diff_id) {
                // docker-archive layers are uncompressed tars whose digest is the diff id.
                let mut gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(blob)?);
                let mut f = std::fs::File::create(tmp)?;
                let size = io::copy(&mut gz, &mut f)?;
                drop(f);
                let mut h = tar::Header::new_ustar();
                h.set_size(size);
                h.set_mode(0o644);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, &name, std::fs::File::open(tmp)?)?;
                std::fs::remove_file(tmp)?;
                written.insert(diff_id.clone(), size);
            }
            layer_descs
                .push(json!({"mediaType": OCI_LAYER, "digest": diff_id, "size": written[diff_id]}));
            layer_names.push(name);
        }
        let cfg_name = format!("blobs/sha256/{}", digest_hex(&it.config_digest));
        if !written.contains_key(&it.config_digest) {
            append_bytes(&mut b, &cfg_name, &it.config)?;
            written.insert(it.config_digest.clone(), it.config.len() as u64);
        }
        let mf = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": it.config_digest, "size": it.config.len()},
            "layers": layer_descs,
        }))?;
        let mf_digest = crate::util::sha256_digest(&mf);
        if !written.contains_key(&mf_digest) {
            append_bytes(
                &mut b,
                &format!("blobs/sha256/{}", digest_hex(&mf_digest)),
                &mf,
            )?;
            written.insert(mf_digest.clone(), mf.len() as u64);
        }
        let familiar: Vec<String> = it.tags.iter().map(|t| familiarize(t)).collect();
        if familiar.is_empty() {
            index.push(json!({"mediaType": OCI_MANIFEST, "digest": mf_digest, "size": mf.len()}));
        }
        for (t, f) in it.tags.iter().zip(familiar.iter()) {
            let tag = t.rsplit_once(':').map(|p| p.1).unwrap_or("latest");
            index.push(json!({"mediaType": OCI_MANIFEST, "digest": mf_digest, "size": mf.len(),
                "annotations": {"io.containerd.image.name": t, "org.opencontainers.image.ref.name": tag}}));
            if let (Some((repo, tag)), Some(top)) = (f.rsplit_once(':'), it.layers.last()) {
                repositories
                    .entry(repo.to_string())
                    .or_default()
                    .insert(tag.to_string(), digest_hex(&top.0).to_string());
            }
        }
        manifest_json.push(json!({
            "Config": cfg_name,
            "RepoTags": if familiar.is_empty() { Value::Null } else { json!(familiar) },
            "Layers": layer_names,
        }));
    }
    append_bytes(
        &mut b,
        "index.json",
        &serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index}),
        )?,
    )?;
    append_bytes(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest_json)?,
    )?;
    append_bytes(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if !repositories.is_empty() {
        append_bytes(&mut b, "repositories", &serde_json::to_vec(&repositories)?)?;
    }
    b.into_inner()?.flush()?;
    Ok(())
}
