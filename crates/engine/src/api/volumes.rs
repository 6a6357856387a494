//! Volume endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::Params;
use crate::daemon::Engine;
use crate::error::{EngineError, Result};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/volumes", get(list))
        .route("/volumes/create", post(create))
        .route("/volumes/prune", post(prune))
        .route("/volumes/{name}", get(inspect).delete(remove))
}

async fn list(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Value>> {
    let f = p.filters()?;
    f.only(&["dangling", "driver", "label", "name"])?;
    let mut out = Vec::new();
    for v in e.volumes.list().await? {
        let users = e.containers.volume_users(&v.name).await;
        if let Some(d) = f.get("dangling").first() {
            let want = matches!(d.as_str(), "true" | "1");
            if want != users.is_empty() {
                continue;
            }
        }
        if !f.get("driver").is_empty() && !f.get("driver").contains(&v.driver) {
            continue;
        }
        if !f.get("name").is_empty() && !f.get("name").iter().any(|n| v.name.contains(n.as_str())) {
            continue;
        }
        if !f.labels_match("label", &v.labels()) {
            continue;
        }
        out.push(e.volumes.to_json(&v, None));
    }
    Ok(Json(json!({"Volumes": out, "Warnings": []})))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    driver_opts: Option<HashMap<String, String>>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
}

async fn create(State(e): State<Arc<Engine>>, Json(b): Json<CreateBody>) -> Result<Response> {
    let v = e
        .volumes
        .create(
            b.name.as_deref(),
            b.driver.as_deref(),
            b.labels.unwrap_or_default(),
            b.driver_opts.unwrap_or_default(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(e.volumes.to_json(&v, None))).into_response())
}

async fn inspect(State(e): State<Arc<Engine>>, Path(name): Path<String>) -> Result<Json<Value>> {
    let v = e.volumes.get(&name).await?;
    Ok(Json(e.volumes.to_json(&v, None)))
}

async fn remove(
    State(e): State<Arc<Engine>>,
    Path(name): Path<String>,
    p: Params,
) -> Result<StatusCode> {
    let users = e.containers.volume_users(&name).await;
    match e.volumes.get(&name).await {
        Err(EngineError::NotFound(_)) if p.bool("force") => return Ok(StatusCode::NO_CONTENT),
        Err(err) => return Err(err),
        Ok(_) => {}
    }
    e.volumes.remove(&name, &users).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Value>> {
    let f = p.filters()?;
    f.only(&["label", "label!", "all"])?;
    // Since API 1.42 only anonymous volumes are pruned unless all=true.
    let all = f
        .get("all")
        .first()
        .is_some_and(|a| a == "true" || a == "1");
    let mut deleted = Vec::new();
    let mut space = 0i64;
    for v in e.volumes.list().await? {
        if !all && v.anonymous == 0 {
            continue;
        }
        if !f.labels_match("label", &v.labels()) {
            continue;
        }
        if !e.containers.volume_users(&v.name).await.is_empty() {
            continue;
        }
        let size = e.volumes.size_of(&v.name);
        if e.volumes.remove(&v.name, &[]).await.is_ok() {
            deleted.push(v.name.clone());
            space += size;
        }
    }
    Ok(Json(
        json!({"VolumesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) }, "SpaceReclaimed": space}),
    ))
}
