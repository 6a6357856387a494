//! `docker cp`, `docker export`, `docker diff` and `docker commit` endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::Params;
use crate::containers::ContainerService;
use crate::daemon::Engine;
use crate::error::{EngineError, Result};
use crate::images::archive::ChannelWriter;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route(
            "/containers/{id}/archive",
            get(archive_get).head(archive_head).put(archive_put),
        )
        .route("/containers/{id}/export", get(export))
        .route("/containers/{id}/changes", get(changes))
        .route("/commit", post(commit))
}

fn stat_header(v: &Value) -> HeaderValue {
    let b = base64::engine::general_purpose::STANDARD.encode(v.to_string());
    HeaderValue::from_str(&b).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn archive_head(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let path = p
        .get("path")
        .filter(|x| !x.is_empty())
        .ok_or_else(|| EngineError::invalid("path is required"))?;
    let (_g, _, stat) = e.containers.path_stat(&c, path).await?;
    let mut r = StatusCode::OK.into_response();
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&stat));
    Ok(r)
}

fn tar_stream<F>(f: F) -> Body
where
    F: FnOnce(ChannelWriter) -> std::io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::result::Result<bytes::Bytes, std::io::Error>>(16);
    let errtx = tx.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(err) = f(ChannelWriter::new(tx)) {
            let _ = errtx.blocking_send(Err(err));
        }
    });
    Body::from_stream(super::tokio_stream_from(rx))
}

async fn archive_get(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let path = p
        .get("path")
        .filter(|x| !x.is_empty())
        .ok_or_else(|| EngineError::invalid("path is required"))?;
    let (g, host, stat) = e.containers.path_stat(&c, path).await?;
    let name = stat["name"].as_str().unwrap_or("file").to_string();
    let body = tar_stream(move |w| {
        let _keep = g;
        ContainerService::archive_path(&host, &name, w)
    });
    let mut r = Response::builder()
        .header("Content-Type", "application/x-tar")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    r.headers_mut()
        .insert("X-Docker-Container-Path-Stat", stat_header(&stat));
    Ok(r)
}

async fn archive_put(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    p: Params,
    body: Body,
) -> Result<StatusCode> {
    let c = e.containers.get(&id).await?;
    let path = p
        .get("path")
        .filter(|x| !x.is_empty())
        .ok_or_else(|| EngineError::invalid("path is required"))?
        .to_string();
    let tmp = e.images.content.tmp_path();
    let mut f = tokio::fs::File::create(&tmp).await?;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|err| EngineError::invalid(err.to_string()))?;
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    let r = e.containers.extract_into(&c, &path, tmp.clone()).await;
    let _ = tokio::fs::remove_file(&tmp).await;
    r?;
    Ok(StatusCode::OK)
}

async fn export(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<Response> {
    let c = e.containers.get(&id).await?;
    let g = e.containers.root_for_copy(&c).await?;
    let body = tar_stream(move |w| {
        let root = g.root.clone();
        let _keep = g;
        crate::content::layer::pack_dir(&root, w).map(|_| ())
    });
    Ok(Response::builder()
        .header("Content-Type", "application/x-tar")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn changes(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<Json<Vec<Value>>> {
    let c = e.containers.get(&id).await?;
    Ok(Json(e.containers.changes(&c).await?))
}

async fn commit(
    State(e): State<Arc<Engine>>,
    p: Params,
    body: axum::body::Bytes,
) -> Result<Response> {
    let cid = p
        .get("container")
        .filter(|x| !x.is_empty())
        .ok_or_else(|| EngineError::invalid("container is required"))?;
    let c = e.containers.get(cid).await?;
    let over: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    let id = e
        .containers
        .commit(
            &c,
            p.get("repo"),
            p.get("tag"),
            p.get("comment"),
            p.get("author"),
            &p.all("changes"),
            p.bool_or("pause", true),
            Some(over),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"Id": id}))).into_response())
}
