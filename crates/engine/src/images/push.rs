//! `docker push`: layers (skipping those the registry has), config, then the manifest.

use serde_json::{json, Value};

use super::progress::{Message, Progress};
use super::reference::ImageRef;
use super::registry::{client_for, describe};
use super::ImageService;
use crate::error::{EngineError, Result};
use crate::util::{sha256_digest, short_id};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

impl ImageService {
    /// Check what is to be pushed before streaming starts (unknown tag → 404).
    pub async fn push_prepare(
        &self,
        name: &str,
        tag: Option<&str>,
    ) -> Result<(ImageRef, super::Image)> {
        let full = match tag.filter(|t| !t.is_empty()) {
            Some(t) => format!("{name}:{t}"),
            None => name.to_string(),
        };
        let r = ImageRef::parse_default_tag(&full)?;
        let key = r.tagged().unwrap_or_default();
        let Some(id) = self.store.tag_target(&key).await? else {
            return Err(EngineError::NotFound(format!(
                "An image does not exist locally with the tag: {}",
                r.familiar_name()
            )));
        };
        let img = self
            .get_by_id(&id)
            .await?
            .ok_or_else(|| EngineError::no_such_image(&r.familiar()))?;
        Ok((r, img))
    }

    pub async fn push_run(
        &self,
        r: &ImageRef,
        img: &super::Image,
        auth: &oci_client::secrets::RegistryAuth,
        progress: &Progress,
    ) -> Result<String> {
        let host = r.registry.clone();
        let client = client_for(&self.cfg, &host);
        let oci_ref = r.to_oci(None);
        client.store_auth_if_needed(&host, auth).await;
        progress
            .send(Message::status(format!(
                "The push refers to repository [{}]",
                r.familiar_name()
            )))
            .await;
        let layers = self.layers(img.id()).await?;
        for l in layers.iter().rev() {
            if let Some(b) = &l.blob_digest {
                progress
                    .send(Message::layer(&short_id(b), "Preparing"))
                    .await;
            }
        }
        let mut descs = Vec::new();
        for l in &layers {
            let Some(blob) = l.blob_digest.clone() else {
                return Err(EngineError::internal(format!(
                    "layer {} has no stored blob to push",
                    l.diff_id
                )));
            };
            let id = short_id(&blob);
            let media_type = l
                .media_type
                .clone()
                .unwrap_or_else(|| DOCKER_LAYER_GZIP.into());
            let size = l.blob_size.unwrap_or(0);
            let exists = client
                .blob_exists(&oci_ref, &blob)
                .await
                .map_err(|e| EngineError::Internal(describe(&host, &e)))?;
            if exists {
                progress
                    .send(Message::layer(&id, "Layer already exists"))
                    .await;
            } else {
                let data = self.content.read_blob(&blob).await?;
                progress
                    .send(Message::bytes(&id, "Pushing", 0, Some(data.len() as u64)))
                    .await;
                client
                    .push_blob(&oci_ref, data, &blob)
                    .await
                    .map_err(|e| EngineError::Internal(describe(&host, &e)))?;
                progress.send(Message::layer(&id, "Pushed")).await;
            }
            descs.push(json!({ "mediaType": media_type, "size": size, "digest": blob }));
        }
        let config = img.rec.config.as_bytes().to_vec();
        let config_digest = sha256_digest(&config);
        if !client
            .blob_exists(&oci_ref, &config_digest)
            .await
            .map_err(|e| EngineError::Internal(describe(&host, &e)))?
        {
            client
                .push_blob(&oci_ref, config.clone(), &config_digest)
                .await
                .map_err(|e| EngineError::Internal(describe(&host, &e)))?;
        }
        // A pulled image keeps its manifest so its digest survives a push to another registry.
        let stored: Option<Value> = img
            .rec
            .manifest
            .as_deref()
            .and_then(|m| serde_json::from_str(m).ok())
            .filter(|m: &Value| m["config"]["digest"] == config_digest.as_str());
        let (body, media_type) = match stored {
            Some(m) => {
                let mt = m["mediaType"]
                    .as_str()
                    .unwrap_or(oci_client::manifest::OCI_IMAGE_MEDIA_TYPE)
                    .to_string();
                (
                    img.rec.manifest.clone().unwrap_or_default().into_bytes(),
                    mt,
                )
            }
            None => {
                let m = json!({
                    "schemaVersion": 2,
                    "mediaType": DOCKER_MANIFEST,
                    "config": { "mediaType": DOCKER_CONFIG, "size": config.len(), "digest": config_digest },
                    "layers": descs,
                });
                (serde_json::to_vec_pretty(&m)?, DOCKER_MANIFEST.to_string())
            }
        };
        let digest = sha256_digest(&body);
        let ct = media_type
            .parse()
            .map_err(|_| EngineError::internal("bad media type"))?;
        client
            .push_manifest_raw(&oci_ref, body.clone(), ct)
            .await
            .map_err(|e| EngineError::Internal(describe(&host, &e)))?;
        if img.rec.manifest.is_none() {
            self.store
                .set_manifest(img.id(), &String::from_utf8_lossy(&body))
                .await?;
        }
        let dref = format!("{}@{digest}", r.name());
        self.store.put_image(&img.rec, &[], &[], &[dref]).await?;
        let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
        progress
            .send(Message::status(format!(
                "{tag}: digest: {digest} size: {}",
                body.len()
            )))
            .await;
        progress
            .send(Message::aux(
                json!({ "Tag": tag, "Digest": digest, "Size": body.len() }),
            ))
            .await;
        self.emit("push", img.id(), &r.familiar());
        Ok(digest)
    }
}
