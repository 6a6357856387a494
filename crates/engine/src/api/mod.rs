//! The Docker Engine API over HTTP/1.1: routing, version negotiation, query parsing, streams.

pub mod build;
pub mod container_fs;
pub mod containers;
pub mod hijack;
pub mod images;
pub mod networks;
pub mod system;
pub mod volumes;

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::daemon::Engine;
use crate::error::EngineError;

pub const API_VERSION: &str = "1.44";
pub const MIN_API_VERSION: &str = "1.24";

/// The API version a request asked for (its path prefix), or ours when unversioned.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct ApiVersion(pub u32, pub u32);

impl ApiVersion {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(Self(a.parse().ok()?, b.parse().ok()?))
    }
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.0, self.1) >= (major, minor)
    }
}

pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .merge(system::routes())
        .merge(images::routes())
        .merge(containers::routes())
        .merge(volumes::routes())
        .merge(networks::routes())
        .merge(container_fs::routes())
        .merge(build::routes())
        .fallback(not_found)
        .with_state(engine)
}

async fn not_found(req: Request) -> EngineError {
    tracing::debug!(path = %req.uri().path(), "no route");
    EngineError::NotFound("page not found".into())
}

/// Strip `/vX.Y` from the path (refusing versions we do not speak, as dockerd does) and stamp
/// every response with dockerd's headers.
pub async fn version_middleware(mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let mut version = ApiVersion::parse(API_VERSION).unwrap_or(ApiVersion(1, 44));
    if let Some(rest) = path.strip_prefix("/v") {
        let (ver, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some(v) = ApiVersion::parse(ver) {
            let max = ApiVersion::parse(API_VERSION).unwrap_or(version);
            let min = ApiVersion::parse(MIN_API_VERSION).unwrap_or(version);
            if v > max {
                return with_headers(
                    EngineError::InvalidParameter(format!(
                        "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
                    ))
                    .into_response(),
                );
            }
            if v < min {
                return with_headers(
                    EngineError::InvalidParameter(format!(
                        "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                    ))
                    .into_response(),
                );
            }
            version = v;
            let new_path = if tail.is_empty() { "/" } else { tail };
            let pq = match req.uri().query() {
                Some(q) => format!("{new_path}?{q}"),
                None => new_path.to_string(),
            };
            if let Ok(uri) = pq.parse() {
                *req.uri_mut() = uri;
            }
        }
    }
    if let Some(pq) = link_name_path(req.uri().path(), req.uri().query()) {
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
    }
    req.extensions_mut().insert(version);
    tracing::debug!(method = %req.method(), uri = %req.uri(), "request");
    with_headers(next.run(req).await)
}

/// A container named by its link name (`parent/alias`) in a path, as dockerd's
/// `/containers/{name:.*}/json` routes take it: `/containers/web/db/json` becomes
/// `/containers/web%2Fdb/json`, so the one-segment routes see the whole name.
fn link_name_path(path: &str, query: Option<&str>) -> Option<String> {
    const OPS: &[&str] = &[
        "json", "logs", "top", "stats", "changes", "export", "archive", "wait", "start", "stop",
        "restart", "kill", "pause", "unpause", "rename", "resize", "exec", "update", "attach",
    ];
    let rest = path.strip_prefix("/containers/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [parent, alias, op] = parts[..] else {
        return None;
    };
    if parent.is_empty() || alias.is_empty() || alias == "attach" || !OPS.contains(&op) {
        return None;
    }
    let p = format!("/containers/{parent}%2F{alias}/{op}");
    Some(match query {
        Some(q) => format!("{p}?{q}"),
        None => p,
    })
}

fn with_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        "Server",
        HeaderValue::from_static(concat!("Berth/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
    resp
}

impl<S: Send + Sync> FromRequestParts<S> for ApiVersion {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<ApiVersion>()
            .copied()
            .unwrap_or(ApiVersion(1, 44)))
    }
}

/// Query parameters with Docker's conventions: repeated keys, `1`/`true` booleans, JSON filters.
#[derive(Debug, Default, Clone)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, k: &str) -> Option<&str> {
        // The first value wins, as with Go's FormValue.
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    pub fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn bool(&self, k: &str) -> bool {
        matches!(self.get(k), Some(v) if !matches!(v, "" | "0" | "false" | "False" | "FALSE" | "no"))
    }
    pub fn bool_or(&self, k: &str, default: bool) -> bool {
        if self.get(k).is_some() {
            self.bool(k)
        } else {
            default
        }
    }
    pub fn int(&self, k: &str) -> Result<Option<i64>, EngineError> {
        match self.get(k).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| EngineError::invalid(format!("invalid value for {k}: {v}"))),
        }
    }
    pub fn filters(&self) -> Result<Filters, EngineError> {
        Filters::parse(self.get("filters"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let q = parts.uri.query().unwrap_or("");
        Ok(Params(
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }
}

/// `filters` as sent by clients: `{"key":["v1","v2"]}` or the older `{"key":{"v1":true}}`.
#[derive(Debug, Default, Clone)]
pub struct Filters(pub std::collections::BTreeMap<String, Vec<String>>);

impl Filters {
    pub fn parse(s: Option<&str>) -> Result<Self, EngineError> {
        let Some(s) = s.filter(|s| !s.is_empty()) else {
            return Ok(Self::default());
        };
        let v: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| EngineError::invalid(format!("invalid filter: {e}")))?;
        let mut out = std::collections::BTreeMap::new();
        for (k, val) in v.as_object().into_iter().flatten() {
            let vals: Vec<String> = match val {
                serde_json::Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect(),
                serde_json::Value::Object(m) => m
                    .iter()
                    .filter(|(_, b)| b.as_bool().unwrap_or(true))
                    .map(|(k, _)| k.clone())
                    .collect(),
                serde_json::Value::String(s) => vec![s.clone()],
                _ => vec![],
            };
            out.insert(k.clone(), vals);
        }
        Ok(Self(out))
    }
    pub fn get(&self, k: &str) -> &[String] {
        self.0.get(k).map(|v| v.as_slice()).unwrap_or(&[])
    }
    /// Refuse keys this endpoint does not know, as dockerd does.
    pub fn only(&self, allowed: &[&str]) -> Result<(), EngineError> {
        for k in self.0.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(EngineError::invalid(format!("invalid filter '{k}'")));
            }
        }
        Ok(())
    }
    /// Docker's label filter: every `key` or `key=value` must match.
    pub fn labels_match(
        &self,
        key: &str,
        labels: &std::collections::HashMap<String, String>,
    ) -> bool {
        self.get(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

/// A streaming response of JSON objects, one per line, flushed as they come.
pub fn json_lines<T: Serialize + Send + 'static>(rx: mpsc::Receiver<T>) -> Response {
    let stream = tokio_stream_from(rx).map(|m| {
        let mut v = serde_json::to_vec(&m).unwrap_or_default();
        v.extend_from_slice(b"\r\n");
        Ok::<_, Infallible>(bytes::Bytes::from(v))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

pub fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    #[test]
    fn link_names_in_container_paths() {
        assert_eq!(
            super::link_name_path("/containers/web/db/json", Some("size=1")).as_deref(),
            Some("/containers/web%2Fdb/json?size=1")
        );
        assert_eq!(super::link_name_path("/containers/web/json", None), None);
        assert_eq!(
            super::link_name_path("/containers/web/attach/ws", None),
            None
        );
        assert_eq!(super::link_name_path("/containers/web/db", None), None);
        assert_eq!(super::link_name_path("/images/a/b/json", None), None);
    }
}
