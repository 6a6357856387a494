//! `POST /build` (the classic builder) and `POST /build/prune`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{json_lines, Params};
use crate::build::{BuildOptions, Builder};
use crate::daemon::Engine;
use crate::error::{EngineError, Result};
use crate::images::progress::{Message, Progress};

pub fn routes() -> Router<Arc<Engine>> {
    Router::new()
        .route("/build", post(build))
        .route("/build/prune", post(prune))
}

fn json_map(p: &Params, k: &str) -> Result<HashMap<String, String>> {
    match p.get(k).filter(|s| !s.is_empty()) {
        None => Ok(HashMap::new()),
        Some(s) => {
            let v: HashMap<String, Option<String>> = serde_json::from_str(s)
                .map_err(|e| EngineError::invalid(format!("invalid {k}: {e}")))?;
            Ok(v.into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect())
        }
    }
}

/// A JSON array of strings (`cachefrom=["a","b"]`); empty when absent.
fn json_list(p: &Params, k: &str) -> Result<Vec<String>> {
    match p.get(k).filter(|s| !s.is_empty()) {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str::<Vec<String>>(s)
            .map_err(|e| EngineError::invalid(format!("invalid {k}: {e}"))),
    }
}

/// `extrahosts`: `name:ip` entries, repeated (docker-py) or comma-separated (the CLI), `name=ip`
/// accepted too.
fn extra_hosts(p: &Params) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in p.all("extrahosts") {
        for h in v.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (name, ip) = match (h.split_once('='), h.split_once(':')) {
                (Some((n, ip)), _) if !n.contains(':') => (n, ip),
                (_, Some((n, ip))) => (n, ip),
                _ => ("", ""),
            };
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if name.is_empty() || !(ip == "host-gateway" || ip.parse::<std::net::IpAddr>().is_ok())
            {
                return Err(EngineError::invalid(format!(
                    "invalid IP address in add-host: \"{h}\""
                )));
            }
            out.push(format!("{name}:{ip}"));
        }
    }
    Ok(out)
}

async fn build(State(e): State<Arc<Engine>>, p: Params, body: Body) -> Result<Response> {
    if let Some(r) = p.get("remote").filter(|r| !r.is_empty()) {
        return Err(EngineError::invalid(format!(
            "remote build contexts are not supported ({r}): send the context as a tar"
        )));
    }
    if p.get("version") == Some("2") {
        return Err(EngineError::invalid(
            "BuildKit is not supported by this engine: use the classic builder (DOCKER_BUILDKIT=0)",
        ));
    }
    let opts = BuildOptions {
        tags: p.all("t").into_iter().filter(|t| !t.is_empty()).collect(),
        dockerfile: p.get("dockerfile").unwrap_or("Dockerfile").to_string(),
        build_args: json_map(&p, "buildargs")?,
        target: p.get("target").map(String::from),
        no_cache: p.bool("nocache"),
        pull: p.bool("pull"),
        rm: p.bool_or("rm", true),
        force_rm: p.bool("forcerm"),
        labels: json_map(&p, "labels")?,
        quiet: p.bool("q"),
        network_mode: p.get("networkmode").map(String::from),
        platform: p.get("platform").map(String::from),
        extra_hosts: extra_hosts(&p)?,
        cache_from: json_list(&p, "cachefrom")?,
    };
    for t in &opts.tags {
        crate::images::reference::ImageRef::parse_default_tag(t)?;
    }
    // The context: spool the tar, unpack it into a private directory.
    let ctx = e.images.content.tmp_path();
    let tar_path = e.images.content.tmp_path();
    let mut f = tokio::fs::File::create(&tar_path).await?;
    let mut s = body.into_data_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk
            .map_err(|err| EngineError::invalid(format!("reading the build context: {err}")))?;
        f.write_all(&chunk).await?;
    }
    f.flush().await?;
    drop(f);
    let (c2, t2) = (ctx.clone(), tar_path.clone());
    let unpacked = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::Read;
        std::fs::create_dir_all(&c2)?;
        // A body that is not a tar is the Dockerfile itself (`docker build - < Dockerfile`).
        let mut head = Vec::with_capacity(512);
        crate::content::layer::open_decompressed(&t2)?
            .take(512)
            .read_to_end(&mut head)?;
        let is_tar = head.is_empty() || (head.len() >= 262 && &head[257..262] == b"ustar");
        if !is_tar {
            let mut text = Vec::new();
            crate::content::layer::open_decompressed(&t2)?.read_to_end(&mut text)?;
            return std::fs::write(c2.join("Dockerfile"), text);
        }
        // The CLI's context for `-f <file outside the context>` ends without the last entry's
        // padding and the end-of-archive blocks (dockerd's reader accepts that): supply them.
        let src =
            crate::content::layer::open_decompressed(&t2)?.chain(std::io::repeat(0).take(2048));
        let mut ar = tar::Archive::new(src);
        ar.set_preserve_permissions(true);
        ar.unpack(&c2)
    })
    .await
    .map_err(EngineError::internal)?;
    let _ = tokio::fs::remove_file(&tar_path).await;
    if let Err(err) = unpacked {
        let _ = tokio::fs::remove_dir_all(&ctx).await;
        return Err(EngineError::invalid(format!(
            "invalid build context: {err}"
        )));
    }
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let (vtx, vrx) = mpsc::channel::<Value>(256);
    let svc = e.containers.clone();
    tokio::spawn(async move {
        let out = Progress::new(tx);
        let quiet = opts.quiet;
        let res = Builder::new(svc, opts, ctx.clone(), out.clone())
            .run()
            .await;
        match res {
            Ok(id) if quiet => out.send(Message::stream(format!("{id}\n"))).await,
            Ok(_) => {}
            Err(err) => out.send(Message::error(err.to_string())).await,
        }
        let _ = tokio::fs::remove_dir_all(&ctx).await;
    });
    // The wire form; a failed RUN's error carries its exit code in errorDetail.code, which the
    // CLI uses as its own exit status.
    tokio::spawn(async move {
        loop {
            // The body gone (the client hung up) closes `vtx`: stop relaying, so the builder
            // sees its own channel closed and cancels.
            let m = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => break },
                _ = vtx.closed() => break,
            };
            let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
            if let Some(code) = m.error.as_deref().and_then(exit_code) {
                v["errorDetail"]["code"] = json!(code);
            }
            if vtx.send(v).await.is_err() {
                break;
            }
        }
    });
    Ok(json_lines(vrx))
}

/// The exit code in `The command '...' returned a non-zero code: N`.
fn exit_code(msg: &str) -> Option<i64> {
    msg.rsplit_once("returned a non-zero code: ")
        .and_then(|(_, n)| n.trim().parse().ok())
}

async fn prune(State(e): State<Arc<Engine>>) -> Result<Json<Value>> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT image_id FROM build_cache")
        .fetch_all(&e.images.store.pool)
        .await?;
    sqlx::query("DELETE FROM build_cache")
        .execute(&e.images.store.pool)
        .await?;
    Ok(Json(
        json!({"CachesDeleted": rows.into_iter().map(|r| r.0).collect::<Vec<_>>(), "SpaceReclaimed": 0}),
    ))
}
