//! Image endpoints. Image names may contain slashes, so `/images/{name}/...` is one catch-all
//! route dispatched on its last segment.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bollard_stubs::models::ImageSummary;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{json_lines, Params};
use crate::daemon::Engine;
use crate::error::{EngineError, Result};
use crate::images::archive::ChannelWriter;
use crate::images::progress::{Message, Progress};
use crate::images::reference::ImageRef;
use crate::images::registry::auth_from_header;
use crate::images::Image;

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/images/json", get(list))
        .route("/images/create", post(create))
        .route("/images/search", get(search))
        .route("/images/prune", post(prune))
        .route("/images/get", get(save_many))
        .route("/images/load", post(load))
        .route("/distribution/{*rest}", get(distribution))
        .route(
            "/images/{*rest}",
            get(image_get).post(image_post).delete(image_delete),
        )
}

fn split_action(rest: &str) -> (&str, &str) {
    match rest.rsplit_once('/') {
        Some((name, action)) => (name, action),
        None => (rest, ""),
    }
}

async fn image_get(
    State(e): State<Arc<Engine>>,
    Path(rest): Path<String>,
    p: Params,
) -> Result<Response> {
    match split_action(&rest) {
        (name, "json") => inspect(&e, name).await.map(IntoResponse::into_response),
        (name, "history") => history(&e, name).await.map(IntoResponse::into_response),
        (name, "get") => save(&e, vec![name.to_string()]).await,
        _ => {
            let _ = p;
            Err(EngineError::NotFound(format!(
                "page not found: /images/{rest}"
            )))
        }
    }
}

async fn image_post(
    State(e): State<Arc<Engine>>,
    Path(rest): Path<String>,
    p: Params,
    headers: HeaderMap,
) -> Result<Response> {
    match split_action(&rest) {
        (name, "tag") => {
            let repo = p.get("repo").filter(|r| !r.is_empty()).ok_or_else(|| {
                EngineError::invalid("repository name must have at least one component")
            })?;
            e.images.tag(name, repo, p.get("tag")).await?;
            Ok(StatusCode::CREATED.into_response())
        }
        (name, "push") => push(e, name, p, headers).await,
        _ => Err(EngineError::NotFound(format!(
            "page not found: /images/{rest}"
        ))),
    }
}

async fn image_delete(
    State(e): State<Arc<Engine>>,
    Path(name): Path<String>,
    p: Params,
) -> Result<Json<Vec<Value>>> {
    let img = e.images.resolve(&name).await?;
    let users = e.image_users(img.id()).await?;
    let out = e
        .images
        .remove(&name, p.bool("force"), !p.bool("noprune"), &users)
        .await?;
    Ok(Json(out))
}

fn summary(i: &Image, containers: i64) -> ImageSummary {
    ImageSummary {
        id: i.id().to_string(),
        parent_id: i.rec.parent.clone().unwrap_or_default(),
        repo_tags: i.familiar_tags(),
        repo_digests: i.familiar_digests(),
        created: i.rec.created,
        size: i.rec.size,
        shared_size: -1,
        labels: i.labels(),
        containers,
        manifests: None,
        descriptor: None,
    }
}

/// Go's path.Match-style glob (`*` never crosses `/`), used by `reference=` filters.
fn glob(pat: &str, s: &str) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && m(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => m(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
            _ => false,
        }
    }
    m(pat.as_bytes(), s.as_bytes())
}

fn reference_matches(pat: &str, i: &Image) -> bool {
    i.familiar_tags().iter().any(|t| {
        let name = t.rsplit_once(':').map_or(t.as_str(), |(n, _)| n);
        glob(pat, t) || glob(pat, name)
    })
}

async fn list(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Vec<ImageSummary>>> {
    let f = p.filters()?;
    f.only(&["dangling", "label", "before", "since", "reference", "until"])?;
    let all = e.images.list_all().await?;
    let users = e.image_users_all().await?;
    let time_of = |name: &str| -> Option<i64> {
        all.iter()
            .find(|i| {
                i.id() == name
                    || crate::util::digest_hex(i.id())
                        .starts_with(name.trim_start_matches("sha256:"))
                    || i.familiar_tags()
                        .iter()
                        .any(|t| t == name || t == &format!("{name}:latest"))
            })
            .map(|i| i.rec.created)
    };
    let mut before = None;
    for b in f.get("before") {
        before = Some(time_of(b).ok_or_else(|| EngineError::no_such_image(b))?);
    }
    let mut since = None;
    for s in f.get("since") {
        since = Some(time_of(s).ok_or_else(|| EngineError::no_such_image(s))?);
    }
    let now = chrono::Utc::now();
    let until = match f.get("until").first() {
        Some(u) => Some(
            crate::util::parse_time_arg(u, now)
                .ok_or_else(|| EngineError::invalid(format!("invalid until: {u}")))?
                as i64,
        ),
        None => None,
    };
    let dangling = match f.get("dangling").first().map(String::as_str) {
        None => None,
        Some("true" | "1") => Some(true),
        Some("false" | "0") => Some(false),
        Some(v) => {
            return Err(EngineError::invalid(format!(
                "invalid filter 'dangling={v}'"
            )))
        }
    };
    let parents: std::collections::HashSet<String> =
        all.iter().filter_map(|i| i.rec.parent.clone()).collect();
    let mut out = Vec::new();
    for i in &all {
        let is_dangling = i.tags.is_empty() && i.digests.is_empty() || i.tags.is_empty();
        // Untagged parents of other images are intermediate build layers: hidden without -a.
        if !p.bool("all") && i.tags.is_empty() && parents.contains(i.id()) {
            continue;
        }
        if dangling.is_some_and(|d| d != is_dangling) {
            continue;
        }
        if !f.labels_match("label", &i.labels()) {
            continue;
        }
        if before.is_some_and(|b| i.rec.created >= b) || since.is_some_and(|s| i.rec.created <= s) {
            continue;
        }
        if until.is_some_and(|u| i.rec.created > u) {
            continue;
        }
        let refs = f.get("reference");
        if !refs.is_empty() && !refs.iter().any(|r| reference_matches(r, i)) {
            continue;
        }
        out.push(summary(i, users.get(i.id()).copied().unwrap_or(0)));
    }
    Ok(Json(out))
}

/// A container config as dockerd's Go `container.Config` marshals it: every plain field present
/// (`OnBuild`, `Labels`, `Entrypoint`... as `null` when unset), the `omitempty` ones only when set.
/// Image inspect shows `Config` and `ContainerConfig` this way.
pub fn go_container_config(v: &Value) -> Value {
    let mut m = serde_json::Map::new();
    let s = |k: &str| json!(v[k].as_str().unwrap_or_default());
    let b = |k: &str| json!(v[k].as_bool().unwrap_or(false));
    // null unless an array / object (Go's nil slices and maps).
    let list = |k: &str| match &v[k] {
        Value::Array(a) => json!(a),
        _ => Value::Null,
    };
    let map = |k: &str| match &v[k] {
        Value::Object(o) => json!(o),
        _ => Value::Null,
    };
    for k in ["Hostname", "Domainname", "User"] {
        m.insert(k.into(), s(k));
    }
    for k in ["AttachStdin", "AttachStdout", "AttachStderr"] {
        m.insert(k.into(), b(k));
    }
    if v["ExposedPorts"].as_object().is_some_and(|o| !o.is_empty()) {
        m.insert("ExposedPorts".into(), v["ExposedPorts"].clone());
    }
    for k in ["Tty", "OpenStdin", "StdinOnce"] {
        m.insert(k.into(), b(k));
    }
    m.insert("Env".into(), list("Env"));
    m.insert("Cmd".into(), list("Cmd"));
    if v["Healthcheck"].is_object() {
        m.insert("Healthcheck".into(), v["Healthcheck"].clone());
    }
    if v["ArgsEscaped"].as_bool() == Some(true) {
        m.insert("ArgsEscaped".into(), json!(true));
    }
    m.insert("Image".into(), s("Image"));
    m.insert("Volumes".into(), map("Volumes"));
    m.insert("WorkingDir".into(), s("WorkingDir"));
    m.insert("Entrypoint".into(), list("Entrypoint"));
    if v["NetworkDisabled"].as_bool() == Some(true) {
        m.insert("NetworkDisabled".into(), json!(true));
    }
    if v["MacAddress"].as_str().is_some_and(|x| !x.is_empty()) {
        m.insert("MacAddress".into(), v["MacAddress"].clone());
    }
    m.insert("OnBuild".into(), list("OnBuild"));
    m.insert("Labels".into(), map("Labels"));
    if v["StopSignal"].as_str().is_some_and(|x| !x.is_empty()) {
        m.insert("StopSignal".into(), v["StopSignal"].clone());
    }
    if v["StopTimeout"].is_number() {
        m.insert("StopTimeout".into(), v["StopTimeout"].clone());
    }
    if v["Shell"].as_array().is_some_and(|a| !a.is_empty()) {
        m.insert("Shell".into(), v["Shell"].clone());
    }
    Value::Object(m)
}

/// `ContainerConfig` of image inspect (API < 1.45): the config of the container an image was
/// committed from, as recorded in the image config (`container_config`), else as that container
/// still has it; an empty config for images not made from a container, as dockerd shows.
async fn container_config(e: &Engine, c: &Value) -> Result<Value> {
    if c["container_config"].is_object() {
        return Ok(go_container_config(&c["container_config"]));
    }
    let cid = c["container"].as_str().unwrap_or_default();
    if !cid.is_empty() {
        if let Ok(ctr) = e.containers.get(cid).await {
            let r = ctr.rec.read().await;
            if r.id == cid {
                return Ok(go_container_config(&serde_json::to_value(&r.config)?));
            }
        }
    }
    Ok(go_container_config(&Value::Null))
}

pub async fn inspect_value(e: &Engine, i: &Image) -> Result<Value> {
    let layers = e.images.layers(i.id()).await?;
    let c = &i.config;
    let dirs: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| e.images.content.layer_dir(&l.diff_id).display().to_string())
        .collect();
    let mut v = json!({
        "Id": i.id(),
        "RepoTags": i.familiar_tags(),
        "RepoDigests": i.familiar_digests(),
        "Parent": i.rec.parent.clone().unwrap_or_default(),
        "Comment": c["comment"].as_str().unwrap_or_default(),
        "Created": c["created"].as_str().unwrap_or("1970-01-01T00:00:00Z"),
        "Container": c["container"].as_str().unwrap_or_default(),
        "ContainerConfig": container_config(e, c).await?,
        "DockerVersion": c["docker_version"].as_str().unwrap_or_default(),
        "Author": c["author"].as_str().unwrap_or_default(),
        "Config": if c["config"].is_object() { go_container_config(&c["config"]) } else { Value::Null },
        "Architecture": c["architecture"].as_str().unwrap_or_default(),
        "Os": c["os"].as_str().unwrap_or("linux"),
        "Size": i.rec.size,
        "VirtualSize": i.rec.size,
        "GraphDriver": {
            "Name": "overlay2",
            "Data": { "LowerDir": dirs.join(":") },
        },
        "RootFS": {
            "Type": "layers",
            "Layers": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": "0001-01-01T00:00:00Z" },
    });
    // `omitempty` in dockerd's ImageInspect.
    for (k, src) in [("Variant", "variant"), ("OsVersion", "os.version")] {
        if let Some(x) = c[src].as_str().filter(|x| !x.is_empty()) {
            v[k] = json!(x);
        }
    }
    Ok(v)
}

async fn inspect(e: &Engine, name: &str) -> Result<Json<Value>> {
    let i = e.images.resolve(name).await?;
    Ok(Json(inspect_value(e, &i).await?))
}

async fn history(e: &Engine, name: &str) -> Result<Json<Vec<Value>>> {
    let i = e.images.resolve(name).await?;
    let layers = e.images.layers(i.id()).await?;
    let mut sizes = layers.iter().map(|l| l.size);
    let mut rows = Vec::new();
    let hist = i.config["history"].as_array().cloned().unwrap_or_default();
    let tags = i.familiar_tags();
    for h in &hist {
        let empty = h["empty_layer"].as_bool().unwrap_or(false);
        let size = if empty { 0 } else { sizes.next().unwrap_or(0) };
        let created = h["created"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.timestamp())
            .unwrap_or(0);
        rows.push(json!({
            "Id": "<missing>",
            "Created": created,
            "CreatedBy": h["created_by"].as_str().unwrap_or_default(),
            "Tags": null,
            "Size": size,
            "Comment": h["comment"].as_str().unwrap_or_default(),
        }));
    }
    if hist.is_empty() {
        for s in sizes {
            rows.push(json!({"Id": "<missing>", "Created": i.rec.created, "CreatedBy": "", "Tags": null, "Size": s, "Comment": ""}));
        }
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["Id"] = json!(i.id());
        top["Tags"] = json!(tags);
    }
    // Local parents (from builds/commits) own the rows below the top one.
    let mut parent = i.rec.parent.clone();
    let mut idx = 1;
    while let Some(pid) = parent {
        let Some(pi) = e.images.get_by_id(&pid).await? else {
            break;
        };
        let n = pi.config["history"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        let pos = hist.len().saturating_sub(n);
        if pos < rows.len() && pos >= idx {
            rows[pos]["Id"] = json!(pi.id());
            rows[pos]["Tags"] = json!(pi.familiar_tags());
            idx = pos + 1;
        }
        parent = pi.rec.parent.clone();
    }
    Ok(Json(rows))
}

/// Spool a request body to a temp file (for import and load).
async fn spool(e: &Engine, body: Body) -> Result<std::path::PathBuf> {
    let path = e.images.content.tmp_path();
    let mut f = tokio::fs::File::create(&path).await?;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk =
            chunk.map_err(|e| EngineError::invalid(format!("reading request body: {e}")))?;
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    Ok(path)
}

async fn create(
    State(e): State<Arc<Engine>>,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    if let Some(src) = p.get("fromSrc") {
        if src != "-" {
            return Err(EngineError::invalid(format!(
                "importing from a URL ({src}) is not supported; pipe the tarball: docker import - < file"
            )));
        }
        let path = spool(&e, body).await?;
        let changes = p.all("changes");
        let res = e
            .images
            .import(
                path.clone(),
                p.get("repo"),
                p.get("tag"),
                &changes,
                p.get("message"),
                src,
            )
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        let id = res?;
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(Message::status(id)).await;
        drop(tx);
        return Ok(json_lines(rx));
    }
    let from = p
        .get("fromImage")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| EngineError::invalid("fromImage or fromSrc is required"))?;
    let full = match p.get("tag").filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.to_string(),
    };
    let r = ImageRef::parse_default_tag(&full)?;
    let auth = auth_from_header(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()));
    let plan = e.images.pull_prepare(&r, p.get("platform"), &auth).await?;
    let (tx, rx) = mpsc::channel(64);
    let e2 = e.clone();
    tokio::spawn(async move {
        let prog = Progress::new(tx);
        if let Err(err) = e2.images.pull_run(plan, &prog).await {
            tracing::warn!(error = %err, "pull failed");
            prog.send(Message::error(err.to_string())).await;
        }
    });
    Ok(json_lines(rx))
}

/// `GET /distribution/{name}/json`: the registry's descriptor and platforms for a reference.
async fn distribution(
    State(e): State<Arc<Engine>>,
    Path(rest): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let Some(name) = rest.strip_suffix("/json") else {
        return Err(EngineError::NotFound("page not found".into()));
    };
    let r = ImageRef::parse_default_tag(name)?;
    let auth = auth_from_header(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()));
    Ok(Json(e.images.inspect_distribution(&r, &auth).await?))
}

async fn push(e: Arc<Engine>, name: &str, p: Params, headers: HeaderMap) -> Result<Response> {
    let auth = auth_from_header(headers.get("X-Registry-Auth").and_then(|v| v.to_str().ok()));
    let (r, img) = e.images.push_prepare(name, p.get("tag")).await?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let prog = Progress::new(tx);
        if let Err(err) = e.images.push_run(&r, &img, &auth, &prog).await {
            prog.send(Message::error(err.to_string())).await;
        }
    });
    Ok(json_lines(rx))
}

async fn save_many(State(e): State<Arc<Engine>>, p: Params) -> Result<Response> {
    save(&e, p.all("names")).await
}

async fn save(e: &Arc<Engine>, names: Vec<String>) -> Result<Response> {
    if names.is_empty() {
        return Err(EngineError::invalid("no image names given"));
    }
    let items = e.images.save_prepare(&names).await?;
    let (tx, rx) = mpsc::channel(16);
    let e2 = e.clone();
    tokio::spawn(async move {
        let errtx = tx.clone();
        if let Err(err) = e2.images.save_to(items, ChannelWriter::new(tx)).await {
            tracing::warn!(error = %err, "save failed");
            let _ = errtx
                .send(Err(std::io::Error::other(err.to_string())))
                .await;
        }
        for n in &names {
            e2.images.emit("save", n, n);
        }
    });
    Ok(Response::builder()
        .header("Content-Type", "application/x-tar")
        .body(Body::from_stream(super::tokio_stream_from(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

async fn load(State(e): State<Arc<Engine>>, p: Params, body: Body) -> Result<Response> {
    let path = spool(&e, body).await?;
    let (tx, rx) = mpsc::channel(64);
    let quiet = p.bool("quiet");
    tokio::spawn(async move {
        let prog = Progress::new(tx.clone());
        let silent = Progress::none();
        let res = e
            .images
            .load(path.clone(), if quiet { &silent } else { &prog })
            .await;
        let _ = tokio::fs::remove_file(&path).await;
        match res {
            Ok(loaded) if quiet => {
                for l in loaded {
                    let line = if l.starts_with("sha256:") {
                        format!("Loaded image ID: {l}\n")
                    } else {
                        format!("Loaded image: {l}\n")
                    };
                    prog.send(Message::stream(line)).await;
                }
            }
            Ok(_) => {}
            Err(err) => prog.send(Message::error(err.to_string())).await,
        }
    });
    Ok(json_lines(rx))
}

async fn prune(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Value>> {
    let f = p.filters()?;
    f.only(&["dangling", "label", "label!", "until"])?;
    let only_dangling = !matches!(
        f.get("dangling").first().map(String::as_str),
        Some("false" | "0")
    );
    let now = chrono::Utc::now();
    let until = match f.get("until").first() {
        Some(u) => Some(
            crate::util::parse_time_arg(u, now)
                .ok_or_else(|| EngineError::invalid(format!("invalid until: {u}")))?
                as i64,
        ),
        None => None,
    };
    let users = e.image_users_all().await?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0i64;
    let before_layers: i64 = layer_total(&e).await?;
    for i in e.images.list_all().await? {
        if users.get(i.id()).copied().unwrap_or(0) > 0 {
            continue;
        }
        if only_dangling && !i.tags.is_empty() {
            continue;
        }
        if until.is_some_and(|u| i.rec.created > u) {
            continue;
        }
        if !f.labels_match("label", &i.labels()) {
            continue;
        }
        if f.get("label!").iter().any(|l| {
            let labels = i.labels();
            match l.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                None => labels.contains_key(l.as_str()),
            }
        }) {
            continue;
        }
        if !e.images.store.children_of(i.id()).await?.is_empty() {
            continue;
        }
        // The image may have gone with an earlier one's parents.
        if e.images.get_by_id(i.id()).await?.is_none() {
            continue;
        }
        let mut out = Vec::new();
        e.images.delete_image(&i, &mut out).await?;
        deleted.extend(out);
    }
    reclaimed += before_layers - layer_total(&e).await?;
    Ok(Json(json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": reclaimed.max(0),
    })))
}

async fn layer_total(e: &Engine) -> Result<i64> {
    let r: (Option<i64>,) = sqlx::query_as("SELECT SUM(size) FROM layers")
        .fetch_one(&e.images.store.pool)
        .await?;
    Ok(r.0.unwrap_or(0))
}

/// `docker search`: the named registry's catalog (or the mirror's for docker.io names).
async fn search(State(e): State<Arc<Engine>>, p: Params) -> Result<Json<Vec<Value>>> {
    let term = p
        .get("term")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| EngineError::invalid("term is required"))?;
    let limit = p.int("limit")?.unwrap_or(25).clamp(1, 100) as usize;
    let first = term.split('/').next().unwrap_or("");
    let explicit =
        term.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let (host, needle) = if explicit {
        (first.to_string(), term[first.len() + 1..].to_string())
    } else if let Some(m) = e.cfg.mirrors.first() {
        (m.host.clone(), term.to_string())
    } else {
        return Err(EngineError::Unavailable(format!(
            "cannot search Docker Hub for {term:?} from this engine: name a registry (docker search HOST:PORT/{term}) or configure --registry-mirror"
        )));
    };
    let client = crate::images::registry::client_for(&e.cfg, &host);
    let probe: oci_client::Reference = format!("{host}/x")
        .parse()
        .map_err(|_| EngineError::invalid("invalid reference format"))?;
    let cat = client
        .catalog(
            &probe,
            &oci_client::secrets::RegistryAuth::Anonymous,
            Some(1000),
            None,
        )
        .await
        .map_err(|err| {
            EngineError::Internal(format!(
                "Error response from registry {host}: search unavailable: {}",
                crate::images::registry::describe(&host, &err)
            ))
        })?;
    let official = |r: &str| !explicit && r.starts_with("library/");
    let mut out: Vec<Value> = cat
        .repositories
        .iter()
        .filter(|r| r.contains(&needle))
        .map(|r| {
            let shown = if explicit {
                format!("{host}/{r}")
            } else {
                r.strip_prefix("library/").unwrap_or(r).to_string()
            };
            json!({
                "name": shown,
                "description": "",
                "star_count": 0,
                "is_official": official(r),
                "is_automated": false,
            })
        })
        .collect();
    let f = p.filters()?;
    if let Some(v) = f.get("is-official").first() {
        let want = v == "true";
        out.retain(|x| x["is_official"] == want);
    }
    out.truncate(limit);
    Ok(Json(out))
}
