//! Image references: parsing, Docker's normalization (`busybox` → `docker.io/library/busybox:latest`)
//! and the "familiar" short form Docker shows to users.

use oci_client::Reference;

use crate::error::{EngineError, Result};

pub const DOCKER_HUB: &str = "docker.io";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repo: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parse a user-given reference; `invalid reference format` on error, as dockerd says.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.starts_with("sha256:") && !s.contains('/') && s.len() != 71 {
            return Err(invalid(s));
        }
        let r: Reference = s.parse().map_err(|e: oci_client::ParseError| {
            EngineError::InvalidParameter(match e {
                oci_client::ParseError::NameContainsUppercase => {
                    format!("invalid reference format: repository name ({s}) must be lowercase")
                }
                _ => "invalid reference format".to_string(),
            })
        })?;
        let registry = match r.registry() {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
            other => other.to_string(),
        };
        Ok(Self {
            registry,
            repo: r.repository().to_string(),
            tag: r.tag().map(str::to_string),
            digest: r.digest().map(str::to_string),
        })
    }

    /// Parse, defaulting the tag to `latest` when neither tag nor digest is given.
    pub fn parse_default_tag(s: &str) -> Result<Self> {
        let mut r = Self::parse(s)?;
        if r.tag.is_none() && r.digest.is_none() {
            r.tag = Some("latest".into());
        }
        Ok(r)
    }

    /// `registry/repo`, fully qualified.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repo)
    }

    /// Docker's familiar repository name: `busybox`, `user/app`, `127.0.0.1:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DOCKER_HUB {
            self.repo
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repo)
                .to_string()
        } else {
            self.name()
        }
    }

    /// Fully qualified `registry/repo:tag` (the key tags are stored under).
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// Fully qualified `registry/repo@digest`.
    pub fn digested(&self) -> Option<String> {
        self.digest.as_ref().map(|d| format!("{}@{d}", self.name()))
    }

    /// Familiar form with tag and/or digest, for messages.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// A reference for the registry client, optionally redirected to a mirror host.
    pub fn to_oci(&self, mirror: Option<&str>) -> Reference {
        let registry = mirror.unwrap_or(&self.registry).to_string();
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(registry, self.repo.clone(), t.clone(), d.clone())
            }
            (_, Some(d)) => Reference::with_digest(registry, self.repo.clone(), d.clone()),
            (t, None) => Reference::with_tag(
                registry,
                self.repo.clone(),
                t.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }
}

/// Turn a stored fully-qualified name (`docker.io/library/busybox:latest` or `...@sha256:..`) into
/// the familiar form Docker shows (`busybox:latest`).
pub fn familiarize(stored: &str) -> String {
    match ImageRef::parse(stored) {
        Ok(r) => r.familiar(),
        Err(_) => stored.to_string(),
    }
}

fn invalid(_s: &str) -> EngineError {
    EngineError::InvalidParameter("invalid reference format".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let r = ImageRef::parse_default_tag("busybox").unwrap();
        assert_eq!(r.tagged().unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(r.familiar(), "busybox:latest");
        let r = ImageRef::parse("127.0.0.1:5000/x/y:1").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.familiar(), "127.0.0.1:5000/x/y:1");
        let r = ImageRef::parse("user/app").unwrap();
        assert_eq!(r.familiar_name(), "user/app");
        assert_eq!(familiarize("docker.io/library/alpine:3.10"), "alpine:3.10");
    }

    #[test]
    fn rejects_bad_refs() {
        assert!(ImageRef::parse("Bad:Ref").is_err());
        assert!(ImageRef::parse("a b").is_err());
        assert!(ImageRef::parse("").is_err());
    }
}
