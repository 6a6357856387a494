//! Registry access through oci-client: which host to contact (mirrors for docker.io), plain HTTP
//! for insecure registries, and credentials from `X-Registry-Auth`.

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use super::reference::{ImageRef, DOCKER_HUB};
use crate::config::Config;

pub const MANIFEST_TYPES: &[&str] = &[
    oci_client::manifest::IMAGE_MANIFEST_MEDIA_TYPE,
    oci_client::manifest::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_MEDIA_TYPE,
    oci_client::manifest::OCI_IMAGE_INDEX_MEDIA_TYPE,
];

/// Hosts to try for `r`, in order: the mirrors for docker.io images, then the registry itself.
pub fn candidates(cfg: &Config, r: &ImageRef) -> Vec<String> {
    let mut v = Vec::new();
    if r.registry == DOCKER_HUB {
        v.extend(cfg.mirrors.iter().map(|m| m.host.clone()));
    }
    v.push(r.registry.clone());
    v
}

/// A client for one registry host.
pub fn client_for(cfg: &Config, host: &str) -> Client {
    let protocol = if cfg.is_insecure(host) {
        ClientProtocol::Http
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        user_agent: concat!("berthd/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// Decode the `X-Registry-Auth` header (base64url JSON AuthConfig) into credentials.
pub fn auth_from_header(h: Option<&str>) -> RegistryAuth {
    let Some(h) = h.filter(|h| !h.is_empty()) else {
        return RegistryAuth::Anonymous;
    };
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(h.trim())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h.trim()))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(h.trim()));
    let Ok(raw) = raw else {
        return RegistryAuth::Anonymous;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) else {
        return RegistryAuth::Anonymous;
    };
    if let Some(t) = v["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return RegistryAuth::Bearer(t.to_string());
    }
    match (v["username"].as_str(), v["password"].as_str()) {
        (Some(u), Some(p)) if !u.is_empty() => RegistryAuth::Basic(u.to_string(), p.to_string()),
        _ => RegistryAuth::Anonymous,
    }
}

/// A registry failure in words a user can act on.
pub fn describe(host: &str, e: &oci_client::errors::OciDistributionError) -> String {
    let s = e.to_string();
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(x) = src {
        detail = x.to_string();
        src = x.source();
    }
    if detail.is_empty() || s.contains(&detail) {
        format!("registry {host}: {s}")
    } else {
        format!("registry {host}: {s}: {detail}")
    }
}
