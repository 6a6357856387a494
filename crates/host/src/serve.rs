//! The UI's commands over HTTP and a WebSocket on 127.0.0.1, so the same
//! `ui/` runs in a browser against a real engine (`berth-desktop --serve-ui`).
//!
//! - `GET /...` serves the built UI (`ui/dist`);
//! - `GET /api/ws?token=T` upgrades to a WebSocket carrying JSON:
//!   `{"op":"call","ref":1,"cmd":"containers.list","args":{}}` →
//!   `{"ref":1,"ok":[...]}` or `{"ref":1,"error":{kind,message}}`;
//!   `{"op":"open","ref":2,"kind":"logs","args":{"id":"web"}}` →
//!   `{"ref":2,"ok":{"id":7}}` then `{"ref":2,"msg":{...}}` for each message.
//!   Streams end with the connection.
//!
//! The engine's socket is root's: the server listens on loopback only, wants
//! the random token it prints (or `BERTH_UI_TOKEN`), and checks the `Host`
//! header so a web page cannot reach it through DNS rebinding.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::error::{HostError, Result};
use crate::host::{Host, Sink};

#[derive(Clone)]
struct Ctx {
    host: Arc<Host>,
    ui_dir: PathBuf,
    token: String,
    port: u16,
}

pub fn random_token() -> String {
    let mut buf = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        buf[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Listens on `addr` (loopback only) and serves until the process ends.
/// `ready` gets the bound address (port 0 picks one).
pub async fn serve(
    host: Arc<Host>,
    addr: SocketAddr,
    ui_dir: PathBuf,
    token: String,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    if !addr.ip().is_loopback() {
        return Err(HostError::invalid(format!(
            "--serve-ui listens on loopback only, not {addr}"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| HostError::io(format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let ctx = Ctx {
        host,
        ui_dir,
        token,
        port: bound.port(),
    };
    let app = Router::new()
        .route("/api/ws", get(ws_handler))
        .fallback(get(static_file))
        .with_state(ctx);
    ready(bound);
    axum::serve(listener, app)
        .await
        .map_err(|e| HostError::io(e.to_string()))
}

fn host_ok(headers: &HeaderMap, port: u16) -> bool {
    let Some(h) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
    .iter()
    .any(|ok| ok == h)
}

async fn ws_handler(
    State(ctx): State<Ctx>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !host_ok(&headers, ctx.port) {
        return (StatusCode::FORBIDDEN, "bad Host header").into_response();
    }
    if q.get("token").map(String::as_str) != Some(ctx.token.as_str()) {
        return (StatusCode::UNAUTHORIZED, "missing or wrong token").into_response();
    }
    ws.on_upgrade(move |socket| connection(ctx.host, socket))
}

async fn connection(host: Arc<Host>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    let (out, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(v) = out_rx.recv().await {
            if tx.send(Message::Text(v.to_string().into())).await.is_err() {
                break;
            }
        }
    });
    let opened: Arc<Mutex<Vec<u64>>> = Arc::default();
    while let Some(Ok(msg)) = rx.next().await {
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(_) => break,
            _ => continue,
        };
        let req: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                let _ = out.send(json!({"error": HostError::invalid(format!("bad message: {e}"))}));
                continue;
            }
        };
        let r = req.get("ref").cloned().unwrap_or(Value::Null);
        let args = req.get("args").cloned().unwrap_or_else(|| json!({}));
        let op = req["op"].as_str().unwrap_or("").to_string();
        if op == "call" && req["cmd"] == "stream.input" {
            // Keystrokes keep their order: handled here, not in a task of their own.
            let reply = match host.call("stream.input", args).await {
                Ok(v) => json!({"ref": r, "ok": v}),
                Err(e) => json!({"ref": r, "error": e}),
            };
            let _ = out.send(reply);
            continue;
        }
        let host = host.clone();
        let out = out.clone();
        let opened = opened.clone();
        tokio::spawn(async move {
            let reply = match op.as_str() {
                "call" => {
                    let cmd = req["cmd"].as_str().unwrap_or("");
                    host.call(cmd, args).await
                }
                "open" => {
                    let kind = req["kind"].as_str().unwrap_or("");
                    let out2 = out.clone();
                    let r2 = r.clone();
                    let sink: Sink =
                        Arc::new(move |m: Value| out2.send(json!({"ref": r2, "msg": m})).is_ok());
                    match host.open_stream(kind, args, sink).await {
                        Ok(id) => {
                            opened.lock().unwrap().push(id);
                            Ok(json!({"id": id}))
                        }
                        Err(e) => Err(e),
                    }
                }
                other => Err(HostError::invalid(format!("unknown op {other:?}"))),
            };
            let _ = out.send(match reply {
                Ok(v) => json!({"ref": r, "ok": v}),
                Err(e) => json!({"ref": r, "error": e}),
            });
        });
    }
    let ids = opened.lock().unwrap().clone();
    host.close_streams(&ids);
    writer.abort();
}

fn mime(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" | "map" => "application/json",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}

async fn static_file(State(ctx): State<Ctx>, headers: HeaderMap, uri: Uri) -> Response {
    if !host_ok(&headers, ctx.port) {
        return (StatusCode::FORBIDDEN, "bad Host header").into_response();
    }
    let rel = uri.path().trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return (StatusCode::BAD_REQUEST, "bad path").into_response();
    }
    let mut path = ctx
        .ui_dir
        .join(if rel.is_empty() { "index.html" } else { rel });
    if !path.is_file() {
        path = ctx.ui_dir.join("index.html");
    }
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, mime(&path)),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => (
            StatusCode::NOT_FOUND,
            format!(
                "{}: {e} (build the UI: cd ui && npm run build)",
                path.display()
            ),
        )
            .into_response(),
    }
}
