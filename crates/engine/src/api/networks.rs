//! Network endpoints.

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
use crate::networks::{validate_ipam, Ipam, NetworkRecord};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect))
}

async fn view(e: &Engine, n: &NetworkRecord) -> Value {
    let mut m = serde_json::Map::new();
    for (id, v) in e.containers.network_users(n).await {
        m.insert(id, v);
    }
    e.networks.to_json(n, Value::Object(m))
}

async fn list(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Vec<Value>>> {
    let f = p.filters()?;
    f.only(&["dangling", "driver", "id", "label", "name", "scope", "type"])?;
    let mut out = Vec::new();
    for n in e.networks.list().await? {
        if !f.get("name").is_empty() && !f.get("name").iter().any(|x| n.name.contains(x.as_str())) {
            continue;
        }
        if !f.get("id").is_empty() && !f.get("id").iter().any(|x| n.id.starts_with(x.as_str())) {
            continue;
        }
        if !f.get("driver").is_empty() && !f.get("driver").contains(&n.driver) {
            continue;
        }
        let builtin = matches!(n.name.as_str(), "bridge" | "host" | "none");
        if let Some(t) = f.get("type").first() {
            if (t == "builtin") != builtin {
                continue;
            }
        }
        if !f.labels_match("label", &n.labels()) {
            continue;
        }
        let users = e.containers.network_users(&n).await;
        if let Some(d) = f.get("dangling").first() {
            let want = d == "true" || d == "1";
            if want != (users.is_empty() && !builtin) {
                continue;
            }
        }
        out.push(view(&e, &n).await);
    }
    Ok(Json(out))
}

async fn inspect(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<Json<Value>> {
    let n = e.networks.get(&id).await?;
    Ok(Json(view(&e, &n).await))
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    name: String,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    internal: bool,
    #[serde(default, rename = "IPAM")]
    ipam: Option<Ipam>,
    #[serde(default)]
    options: Option<HashMap<String, String>>,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    #[serde(default, rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
}

async fn create(State(e): State<Arc<Engine>>, Json(b): Json<CreateBody>) -> Result<Response> {
    let ipam = b.ipam.unwrap_or_default();
    let enable_ipv6 = b.enable_ipv6 == Some(true);
    validate_ipam(&ipam, enable_ipv6)?;
    if enable_ipv6 {
        return Err(EngineError::invalid("IPv6 networks are not supported yet"));
    }
    // `CheckDuplicate` (deprecated in API 1.44) is not read: names are always unique, as with
    // dockerd 25 and later whatever the API version.
    let n = e
        .networks
        .create(
            &b.name,
            b.driver.as_deref(),
            ipam,
            b.internal,
            b.labels.unwrap_or_default(),
            b.options.unwrap_or_default(),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": n.id, "Warning": ""})),
    )
        .into_response())
}

async fn remove(State(e): State<Arc<Engine>>, Path(id): Path<String>) -> Result<StatusCode> {
    let n = e.networks.get(&id).await?;
    let in_use = !e.containers.network_users(&n).await.is_empty();
    e.networks.remove(&n, in_use).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Value>> {
    let f = p.filters()?;
    f.only(&["until", "label", "label!"])?;
    let mut deleted = Vec::new();
    for n in e.networks.list().await? {
        if matches!(n.name.as_str(), "bridge" | "host" | "none")
            || !f.labels_match("label", &n.labels())
        {
            continue;
        }
        if !e.containers.network_users(&n).await.is_empty() {
            continue;
        }
        if e.networks.remove(&n, false).await.is_ok() {
            deleted.push(n.name.clone());
        }
    }
    Ok(Json(
        json!({"NetworksDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) }}),
    ))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectBody {
    container: String,
    #[serde(default)]
    endpoint_config: Option<Value>,
    #[serde(default)]
    force: bool,
}

async fn connect(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Json(b): Json<ConnectBody>,
) -> Result<StatusCode> {
    let n = e.networks.get(&id).await?;
    let c = e.containers.get(&b.container).await?;
    e.containers
        .connect(&c, &n, b.endpoint_config.unwrap_or(Value::Null))
        .await?;
    Ok(StatusCode::OK)
}

async fn disconnect(
    State(e): State<Arc<Engine>>,
    Path(id): Path<String>,
    Json(b): Json<ConnectBody>,
) -> Result<StatusCode> {
    let n = e.networks.get(&id).await?;
    let c = e.containers.get(&b.container).await?;
    e.containers.disconnect(&c, &n, b.force).await?;
    Ok(StatusCode::OK)
}
