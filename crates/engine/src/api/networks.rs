//! Network endpoints.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{ApiVersion, Params};
use crate::daemon::Engine;
use crate::error::Result;
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
    #[serde(default)]
    check_duplicate: Option<bool>,
}

async fn create(
    State(e): State<Arc<Engine>>,
    v: ApiVersion,
    Json(b): Json<CreateBody>,
) -> Result<Response> {
    let ipam = b.ipam.unwrap_or_default();
    let enable_ipv6 = b.enable_ipv6 == Some(true);
    // Requests below API 1.44 get what dockerd 24 (the last daemon whose API stopped below
    // 1.44) did: `CheckDuplicate` false, or absent, lets a second network take a name, with
    // a warning; and an IPv6 pool written with host bits is taken as its network rather than
    // refused. From 1.44 names are always unique and pools strictly checked (dockerd 25).
    let legacy = !v.at_least(1, 44);
    let mut warnings = Vec::new();
    if legacy && enable_ipv6 {
        let mut masked = ipam.clone();
        for c in masked.config.iter_mut() {
            if let Some(m) = masked_v6(&c.subnet) {
                warnings.push(format!("IPv6 subnet {} taken as {m}", c.subnet));
                c.subnet = m;
            }
        }
        validate_ipam(&masked, enable_ipv6)?;
    } else {
        validate_ipam(&ipam, enable_ipv6)?;
    }
    let check_duplicate = !legacy || b.check_duplicate == Some(true);
    if !check_duplicate {
        if let Some(other) = e.networks.get_by_name(&b.name).await? {
            warnings.push(format!(
                "Network with name {} (id : {}) already exists",
                b.name, other.id
            ));
        }
    }
    let n = e
        .networks
        .create(
            &b.name,
            b.driver.as_deref(),
            ipam,
            b.internal,
            b.labels.unwrap_or_default(),
            b.options.unwrap_or_default(),
            enable_ipv6,
            check_duplicate,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"Id": n.id, "Warning": warnings.join("\n")})),
    )
        .into_response())
}

/// `addr/bits` of an IPv6 subnet with host bits set, as its network; None otherwise.
fn masked_v6(subnet: &str) -> Option<String> {
    let (a, p) = subnet.split_once('/')?;
    let a: std::net::Ipv6Addr = a.parse().ok()?;
    let p: u8 = p.parse().ok().filter(|p| *p <= 128)?;
    let m = crate::networks::mask6(a, p);
    (m != a).then(|| format!("{m}/{p}"))
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
