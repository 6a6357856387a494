//! `docker pull`: resolve the manifest (errors before any byte is streamed become HTTP errors,
//! which the CLI's run-then-pull flow depends on), then download and unpack layers in parallel
//! with Docker's progress stream. Nothing is recorded until its digest is verified.

use futures::{StreamExt, TryStreamExt};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use serde_json::Value;

use super::progress::{Message, Progress};
use super::reference::ImageRef;
use super::registry::{candidates, client_for, describe, MANIFEST_TYPES};
use super::ImageService;
use crate::error::{EngineError, Result};
use crate::store::images::{ImageRecord, LayerRecord};
use crate::util::{sha256_digest, short_id};

/// Everything phase one learned; phase two downloads from it.
pub struct PullPlan {
    pub r: ImageRef,
    client: Client,
    oci_ref: Reference,
    manifest_raw: String,
    manifest_digest: String,
    config: Vec<u8>,
    config_digest: String,
    layers: Vec<OciDescriptor>,
    diff_ids: Vec<String>,
}

/// This machine's platform, in OCI words.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    };
    ("linux", arch)
}

/// Parse `os/arch[/variant]`; empty means this machine's platform.
pub fn parse_platform(p: Option<&str>) -> Result<(String, String, Option<String>)> {
    let (os, arch) = host_platform();
    match p.filter(|p| !p.is_empty()) {
        None => Ok((os.into(), arch.into(), None)),
        Some(p) => {
            let parts: Vec<&str> = p.split('/').collect();
            match parts.as_slice() {
                [o, a] => Ok((o.to_string(), normalize_arch(a), None)),
                [o, a, v] => Ok((o.to_string(), normalize_arch(a), Some(v.to_string()))),
                [a] if *a != "linux" => Ok(("linux".into(), normalize_arch(a), None)),
                _ => Err(EngineError::invalid(format!(
                    "\"{p}\": unknown operating system or architecture: invalid argument"
                ))),
            }
        }
    }
}

fn normalize_arch(a: &str) -> String {
    match a {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        other => other.to_string(),
    }
}

/// Docker Hub's answer (through dockerd) for a repository that does not exist.
pub(crate) fn access_denied(r: &ImageRef) -> EngineError {
    EngineError::NotFound(format!(
        "pull access denied for {}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied",
        r.familiar_name()
    ))
}

pub(crate) fn not_found(
    r: &ImageRef,
    e: &oci_client::errors::OciDistributionError,
) -> Option<EngineError> {
    let s = format!("{e:?}");
    if s.contains("NAME_UNKNOWN") || s.contains("NameUnknown") {
        return Some(access_denied(r));
    }
    if s.contains("MANIFEST_UNKNOWN")
        || s.contains("ManifestUnknown")
        || matches!(
            e,
            oci_client::errors::OciDistributionError::ImageManifestNotFoundError(_)
        )
    {
        return Some(EngineError::NotFound(format!(
            "manifest for {} not found: manifest unknown: manifest unknown",
            r.familiar()
        )));
    }
    None
}

/// Whether the registry says it has no repository `oci_ref` (a tag list answered
/// `NAME_UNKNOWN` / 404): a registry answers `MANIFEST_UNKNOWN` for a manifest of an unknown
/// repository and of an unknown tag alike.
pub(crate) async fn repo_unknown(
    client: &Client,
    oci_ref: &Reference,
    auth: &oci_client::secrets::RegistryAuth,
) -> bool {
    match client.list_tags(oci_ref, auth, Some(1), None).await {
        Ok(_) => false,
        Err(oci_client::errors::OciDistributionError::ServerError { code: 404, .. }) => true,
        Err(e) => {
            let s = format!("{e:?}");
            s.contains("NAME_UNKNOWN") || s.contains("NameUnknown")
        }
    }
}

impl ImageService {
    /// Phase one: find the manifest for this platform and the config.
    pub async fn pull_prepare(
        &self,
        r: &ImageRef,
        platform: Option<&str>,
        auth: &oci_client::secrets::RegistryAuth,
    ) -> Result<PullPlan> {
        let (os, arch, variant) = parse_platform(platform)?;
        let mut last_err = None;
        for host in candidates(&self.cfg, r) {
            let mirror = (host != r.registry).then_some(host.as_str());
            let client = client_for(&self.cfg, &host);
            let oci_ref = r.to_oci(mirror);
            match self
                .resolve_manifest(&client, &oci_ref, r, auth, &os, &arch, variant.as_deref())
                .await
            {
                Ok((manifest_raw, manifest_digest, manifest)) => {
                    let config_desc: OciDescriptor =
                        serde_json::from_value(manifest["config"].clone()).map_err(|e| {
                            EngineError::internal(format!("invalid manifest from {host}: {e}"))
                        })?;
                    let layers: Vec<OciDescriptor> =
                        serde_json::from_value(manifest["layers"].clone()).map_err(|e| {
                            EngineError::internal(format!("invalid manifest from {host}: {e}"))
                        })?;
                    // An image we already have needs no config download (its id is the
                    // config's digest, verified when it was stored).
                    let config = match self.store.get_image(&config_desc.digest).await? {
                        Some(rec) => rec.config.into_bytes(),
                        None => {
                            let mut config = Vec::new();
                            client
                                .pull_blob(&oci_ref, &config_desc, &mut config)
                                .await
                                .map_err(|e| EngineError::Internal(describe(&host, &e)))?;
                            config
                        }
                    };
                    let cfg_json: Value = serde_json::from_slice(&config)
                        .map_err(|e| EngineError::internal(format!("invalid image config: {e}")))?;
                    let diff_ids: Vec<String> = cfg_json["rootfs"]["diff_ids"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|d| d.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default();
                    if diff_ids.len() != layers.len() {
                        return Err(EngineError::internal(format!(
                            "image config has {} diff ids for {} layers",
                            diff_ids.len(),
                            layers.len()
                        )));
                    }
                    return Ok(PullPlan {
                        r: r.clone(),
                        client,
                        oci_ref,
                        manifest_raw,
                        manifest_digest,
                        config_digest: config_desc.digest.clone(),
                        config,
                        layers,
                        diff_ids,
                    });
                }
                // A mirror that answers "not found" is believed: going on to Docker Hub would
                // only repeat the question outside (and the hub may not be reachable at all).
                // It stands in for the hub, so a repository it does not have gets the hub's
                // answer, which clients read as "no such image".
                Err(e @ EngineError::NotFound(_)) => {
                    if mirror.is_some() && repo_unknown(&client, &oci_ref, auth).await {
                        return Err(access_denied(r));
                    }
                    return Err(e);
                }
                Err(e) => {
                    tracing::info!(registry = %host, error = %e, "pull attempt failed");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| EngineError::internal("no registry to pull from")))
    }

    #[allow(clippy::too_many_arguments)]
    async fn resolve_manifest(
        &self,
        client: &Client,
        oci_ref: &Reference,
        r: &ImageRef,
        auth: &oci_client::secrets::RegistryAuth,
        os: &str,
        arch: &str,
        variant: Option<&str>,
    ) -> Result<(String, String, Value)> {
        let host = oci_ref.resolve_registry().to_string();
        let fetch = |rf: Reference| {
            let host = host.clone();
            async move {
                client
                    .pull_manifest_raw(&rf, auth, MANIFEST_TYPES)
                    .await
                    .map_err(|e| {
                        not_found(r, &e)
                            .unwrap_or_else(|| EngineError::Internal(describe(&host, &e)))
                    })
            }
        };
        let (raw, _) = fetch(oci_ref.clone()).await?;
        let digest = sha256_digest(&raw);
        if let Some(want) = &r.digest {
            if *want != digest {
                return Err(EngineError::Internal(format!(
                    "manifest verification failed for digest {want}"
                )));
            }
        }
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|e| EngineError::internal(format!("invalid manifest: {e}")))?;
        if v["manifests"].is_array() {
            let entry = v["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| {
                    let p = &m["platform"];
                    p["os"] == os
                        && p["architecture"] == arch
                        && variant.is_none_or(|va| p["variant"] == va)
                })
                .ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "no matching manifest for {os}/{arch} in the manifest list entries"
                    ))
                })?;
            let d = entry["digest"]
                .as_str()
                .ok_or_else(|| EngineError::internal("index entry without digest"))?
                .to_string();
            let (raw2, _) = fetch(oci_ref.clone_with_digest(d.clone())).await?;
            if sha256_digest(&raw2) != d {
                return Err(EngineError::Internal(format!(
                    "manifest verification failed for digest {d}"
                )));
            }
            let v2: Value = serde_json::from_slice(&raw2)
                .map_err(|e| EngineError::internal(format!("invalid manifest: {e}")))?;
            // The repo digest users see is the index's, as with Docker.
            return Ok((String::from_utf8_lossy(&raw2).into_owned(), digest, v2));
        }
        Ok((String::from_utf8_lossy(&raw).into_owned(), digest, v))
    }

    /// Phase two: layers, then the image record. Returns the image id.
    pub async fn pull_run(&self, plan: PullPlan, progress: &Progress) -> Result<String> {
        let r = &plan.r;
        let shown = r
            .tag
            .clone()
            .unwrap_or_else(|| r.digest.clone().unwrap_or_default());
        progress
            .send(Message {
                status: Some(format!("Pulling from {}", r.repo)),
                id: Some(shown),
                ..Default::default()
            })
            .await;
        let image_id = plan.config_digest.clone();
        let existing = self.store.get_image(&image_id).await?;
        let mut todo = Vec::new();
        for (desc, diff) in plan.layers.iter().zip(plan.diff_ids.iter()) {
            let id = short_id(&desc.digest);
            if self.store.get_layer(diff).await?.is_some() && self.content.has_layer(diff) {
                progress.send(Message::layer(&id, "Already exists")).await;
            } else {
                progress.send(Message::layer(&id, "Pulling fs layer")).await;
                todo.push((desc.clone(), diff.clone()));
            }
        }
        futures::stream::iter(
            todo.into_iter()
                .map(|(d, diff)| self.pull_layer(&plan, d, diff, progress)),
        )
        .buffer_unordered(3)
        .try_collect::<Vec<_>>()
        .await?;

        let config_digest = self.content.put_blob(&plan.config).await?;
        if config_digest != image_id {
            return Err(EngineError::internal("config digest mismatch"));
        }
        let cfg: Value = serde_json::from_slice(&plan.config)?;
        let mut size = 0i64;
        for d in &plan.diff_ids {
            size += self.store.get_layer(d).await?.map(|l| l.size).unwrap_or(0);
        }
        let created = cfg["created"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0);
        let tags: Vec<String> = r.tagged().into_iter().collect();
        let digest_ref = format!("{}@{}", r.name(), plan.manifest_digest);
        let prev_tag_target = match r.tagged() {
            Some(t) => self.store.tag_target(&t).await?,
            None => None,
        };
        let rec = ImageRecord {
            id: image_id.clone(),
            config: String::from_utf8_lossy(&plan.config).into_owned(),
            created,
            size,
            parent: None,
            manifest: Some(plan.manifest_raw.clone()),
            added_at: chrono::Utc::now().timestamp(),
        };
        self.store
            .put_image(&rec, &plan.diff_ids, &tags, &[digest_ref])
            .await?;
        progress
            .send(Message::status(format!("Digest: {}", plan.manifest_digest)))
            .await;
        let up_to_date = existing.is_some()
            && (r.tag.is_none() || prev_tag_target.as_deref() == Some(image_id.as_str()));
        let word = if up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        progress
            .send(Message::status(format!("Status: {word} {}", r.familiar())))
            .await;
        self.emit("pull", &image_id, &r.familiar());
        Ok(image_id)
    }

    async fn pull_layer(
        &self,
        plan: &PullPlan,
        desc: OciDescriptor,
        diff_id: String,
        progress: &Progress,
    ) -> Result<()> {
        let id = short_id(&desc.digest);
        let lock = self.layer_lock(&diff_id);
        let _g = lock.lock().await;
        if self.store.get_layer(&diff_id).await?.is_some() && self.content.has_layer(&diff_id) {
            progress.send(Message::layer(&id, "Already exists")).await;
            return Ok(());
        }
        let host = plan.oci_ref.resolve_registry().to_string();
        if !self.content.has_blob(&desc.digest) {
            let mut stream = plan
                .client
                .pull_blob_stream(&plan.oci_ref, &desc)
                .await
                .map_err(|e| EngineError::Internal(describe(&host, &e)))?;
            let total = stream
                .content_length
                .or((desc.size > 0).then_some(desc.size as u64));
            let mut w = self.content.blob_writer()?;
            let mut last = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    EngineError::Internal(format!("registry {host}: reading layer {id}: {e}"))
                })?;
                w.write(&chunk).await?;
                if w.size() - last >= 512 * 1024 {
                    last = w.size();
                    progress
                        .send(Message::bytes(&id, "Downloading", last, total))
                        .await;
                }
            }
            progress
                .send(Message::layer(&id, "Verifying Checksum"))
                .await;
            w.commit(&self.content, Some(&desc.digest))
                .await
                .map_err(|_| {
                    EngineError::Internal(format!(
                        "filesystem layer verification failed for digest {}",
                        desc.digest
                    ))
                })?;
        }
        progress
            .send(Message::layer(&id, "Download complete"))
            .await;
        progress
            .send(Message::bytes(
                &id,
                "Extracting",
                0,
                Some(desc.size.max(0) as u64),
            ))
            .await;
        let content = self.content.clone();
        let blob = content.blob_path(&desc.digest);
        let want = diff_id.clone();
        let size = tokio::task::spawn_blocking(move || -> Result<u64> {
            let tmp = content.tmp_path();
            std::fs::create_dir_all(&tmp)?;
            let res = crate::content::layer::open_decompressed(&blob)
                .and_then(|src| crate::content::layer::unpack(src, &tmp));
            match res {
                Ok(u) if u.diff_id == want => {
                    let dest = content.layer_dir(&want);
                    if dest.exists() {
                        let _ = std::fs::remove_dir_all(&tmp);
                    } else {
                        std::fs::rename(&tmp, &dest)?;
                    }
                    Ok(u.size)
                }
                Ok(u) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    let _ = std::fs::remove_file(&blob);
                    Err(EngineError::Internal(format!(
                        "layer diff id mismatch: expected {want}, got {}",
                        u.diff_id
                    )))
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&tmp);
                    Err(EngineError::Internal(format!(
                        "failed to register layer: {e}"
                    )))
                }
            }
        })
        .await
        .map_err(EngineError::internal)??;
        self.store
            .put_layer(&LayerRecord {
                diff_id,
                blob_digest: Some(desc.digest.clone()),
                blob_size: Some(desc.size),
                media_type: Some(desc.media_type.clone()),
                size: size as i64,
            })
            .await?;
        progress.send(Message::layer(&id, "Pull complete")).await;
        Ok(())
    }
}
