//! `GET /distribution/{name}/json`: what the registry has for a reference (the manifest's
//! descriptor and the platforms it serves), without pulling. Registries are chosen as for a pull
//! (mirrors first for docker.io names), with the request's credentials.

use oci_client::secrets::RegistryAuth;
use serde_json::{json, Map, Value};

use super::pull::{access_denied, not_found, repo_unknown};
use super::reference::ImageRef;
use super::registry::{candidates, client_for, describe, MANIFEST_TYPES};
use super::ImageService;
use crate::error::{EngineError, Result};
use crate::util::sha256_digest;

/// An OCI platform as dockerd marshals `ocispec.Platform`: `architecture` and `os`, the others
/// only when set.
fn platform(p: &Value) -> Value {
    let mut m = Map::new();
    m.insert(
        "architecture".into(),
        json!(p["architecture"].as_str().unwrap_or_default()),
    );
    m.insert("os".into(), json!(p["os"].as_str().unwrap_or_default()));
    if let Some(v) = p["os.version"].as_str().filter(|v| !v.is_empty()) {
        m.insert("os.version".into(), json!(v));
    }
    if let Some(f) = p["os.features"].as_array().filter(|f| !f.is_empty()) {
        m.insert("os.features".into(), json!(f));
    }
    if let Some(v) = p["variant"].as_str().filter(|v| !v.is_empty()) {
        m.insert("variant".into(), json!(v));
    }
    Value::Object(m)
}

/// The media type of a manifest: its `mediaType`, else what its shape says (OCI manifests and
/// indexes may leave the field out).
fn media_type(v: &Value) -> String {
    match v["mediaType"].as_str() {
        Some(t) if !t.is_empty() => t.to_string(),
        _ if v["manifests"].is_array() => oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE.into(),
        _ => oci_client::manifest::OCI_IMAGE_MEDIA_TYPE.into(),
    }
}

impl ImageService {
    /// dockerd's `DistributionInspect`: `Descriptor` {mediaType, digest, size} of the manifest
    /// the reference names, and `Platforms`: each entry of an index, or the platform of a
    /// single manifest's config.
    pub async fn inspect_distribution(&self, r: &ImageRef, auth: &RegistryAuth) -> Result<Value> {
        let mut last_err = None;
        for host in candidates(&self.cfg, r) {
            let mirror = (host != r.registry).then_some(host.as_str());
            let client = client_for(&self.cfg, &host);
            let oci_ref = r.to_oci(mirror);
            let raw = match client
                .pull_manifest_raw(&oci_ref, auth, MANIFEST_TYPES)
                .await
            {
                Ok((raw, _)) => raw,
                Err(e) => match not_found(r, &e) {
                    // As with pull: a mirror's "not found" is believed.
                    Some(nf) => {
                        if mirror.is_some() && repo_unknown(&client, &oci_ref, auth).await {
                            return Err(access_denied(r));
                        }
                        return Err(nf);
                    }
                    None => {
                        let err = EngineError::Internal(describe(&host, &e));
                        tracing::info!(registry = %host, error = %err, "distribution inspect attempt failed");
                        last_err = Some(err);
                        continue;
                    }
                },
            };
            let digest = sha256_digest(&raw);
            if let Some(want) = &r.digest {
                if *want != digest {
                    return Err(EngineError::Internal(format!(
                        "manifest verification failed for digest {want}"
                    )));
                }
            }
            let v: Value = serde_json::from_slice(&raw)
                .map_err(|e| EngineError::internal(format!("invalid manifest from {host}: {e}")))?;
            let mut platforms = Vec::new();
            if let Some(entries) = v["manifests"].as_array() {
                platforms.extend(entries.iter().map(|m| platform(&m["platform"])));
            } else if let Ok(cd) =
                serde_json::from_value::<oci_client::manifest::OciDescriptor>(v["config"].clone())
            {
                let mut config = Vec::new();
                if client.pull_blob(&oci_ref, &cd, &mut config).await.is_ok() {
                    if let Ok(c) = serde_json::from_slice::<Value>(&config) {
                        let p = platform(&c);
                        if p["os"] != "" || p["architecture"] != "" {
                            platforms.push(p);
                        }
                    }
                }
            }
            return Ok(json!({
                "Descriptor": {
                    "mediaType": media_type(&v),
                    "digest": digest,
                    "size": raw.len(),
                },
                "Platforms": platforms,
            }));
        }
        Err(last_err.unwrap_or_else(|| EngineError::internal("no registry to ask")))
    }
}
