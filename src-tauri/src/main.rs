//! berth-desktop: Berth's desktop app.
//!
//!   berth-desktop                      the window and the tray icon
//!   berth-desktop --serve-ui ADDR      no window: serve ui/ and its commands over
//!                                      HTTP/WebSocket on ADDR (127.0.0.1:PORT), so
//!                                      the same UI runs in a browser (e2e tests)
//!   berth-desktop --ui-dir DIR         the built UI for --serve-ui (default: ui/dist)
//!
//! The engine is the one the docker CLI would use (`DOCKER_HOST`, else
//! /run/berth/docker.sock), unless Settings name another.

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod tray;
#[cfg(target_os = "linux")]
mod webkit;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_host::{Host, HostError};
use serde_json::{json, Value};
use tauri::ipc::Channel;
use tauri::{Manager, State, WindowEvent};

struct App {
    host: Arc<Host>,
    /// Streams opened by the page; closed when it reloads.
    streams: Mutex<Vec<u64>>,
    tray: Mutex<bool>,
}

#[tauri::command]
async fn call(state: State<'_, App>, cmd: String, args: Option<Value>) -> Result<Value, HostError> {
    let host = state.host.clone();
    host.call(&cmd, args.unwrap_or_else(|| json!({}))).await
}

#[tauri::command]
async fn open(
    state: State<'_, App>,
    kind: String,
    args: Option<Value>,
    on_message: Channel<Value>,
) -> Result<u64, HostError> {
    let host = state.host.clone();
    let sink: berth_host::Sink = Arc::new(move |m: Value| on_message.send(m).is_ok());
    let id = host
        .open_stream(&kind, args.unwrap_or_else(|| json!({})), sink)
        .await?;
    state.streams.lock().unwrap().push(id);
    Ok(id)
}

fn default_ui_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BERTH_UI_DIR") {
        return PathBuf::from(d);
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_path_buf()))
    {
        let installed = dir.join("../share/berth-desktop/ui");
        if installed.join("index.html").exists() {
            return installed;
        }
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../ui/dist"))
}

fn serve_ui(addr: &str, ui_dir: PathBuf) -> anyhow::Result<()> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("--serve-ui {addr}: {e}"))?;
    let token = std::env::var("BERTH_UI_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(berth_host::serve::random_token);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let host = Host::with_default_settings();
        // Start the hub now so the first page sees the engine's state at once.
        drop(host.subscribe());
        let t2 = token.clone();
        berth_host::serve::serve(host, addr, ui_dir.clone(), token, move |bound| {
            println!(
                "berth-desktop: serving {} at http://{bound}/?token={t2}",
                ui_dir.display()
            );
            use std::io::Write;
            let _ = std::io::stdout().flush();
        })
        .await
    })?;
    Ok(())
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    // Before anything starts a thread or touches GTK/WebKit: WebKit reads
    // these when it initialises, and its helper processes inherit them.
    #[cfg(target_os = "linux")]
    webkit::set_env_defaults();
    let args: Vec<String> = std::env::args().collect();
    let mut serve = None;
    let mut ui_dir = None;
    let mut hidden = false;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--serve-ui" => {
                serve = args.get(i + 1).cloned();
                i += 1;
            }
            // Started at login (autostart entry): the tray only, no window.
            "--hidden" => hidden = true,
            "--ui-dir" => {
                ui_dir = args.get(i + 1).map(PathBuf::from);
                i += 1;
            }
            "-h" | "--help" => {
                println!(
                    "usage: berth-desktop [--hidden] [--serve-ui 127.0.0.1:PORT [--ui-dir DIR]]"
                );
                return;
            }
            "--version" => {
                println!("berth-desktop {}", env!("CARGO_PKG_VERSION"));
                return;
            }
            other => {
                eprintln!("berth-desktop: unknown argument {other:?} (see --help)");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    if let Some(addr) = serve {
        if let Err(e) = serve_ui(&addr, ui_dir.unwrap_or_else(default_ui_dir)) {
            eprintln!("berth-desktop: {e}");
            std::process::exit(1);
        }
        return;
    }
    run_app(hidden);
}

fn run_app(hidden: bool) {
    let host = Host::with_default_settings();
    tauri::Builder::default()
        .manage(App {
            host: host.clone(),
            streams: Mutex::new(Vec::new()),
            tray: Mutex::new(false),
        })
        .invoke_handler(tauri::generate_handler![call, open])
        .on_page_load(|webview, _payload| {
            // A reload leaves the old page's streams without a reader.
            let app = webview.app_handle().state::<App>();
            let ids: Vec<u64> = std::mem::take(&mut *app.streams.lock().unwrap());
            app.host.close_streams(&ids);
        })
        .setup(move |app| {
            #[cfg(target_os = "linux")]
            for w in app.webview_windows().values() {
                webkit::tune(w);
            }
            let handle = app.handle().clone();
            let h = host.clone();
            tauri::async_runtime::spawn(async move {
                drop(h.subscribe());
                // Start the engine when it is not running (Settings → start engine).
                if h.settings().start_engine {
                    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
                    if h.engine_state().state != "running" {
                        if let Err(e) = h.start_engine(false).await {
                            tracing::warn!("could not start the engine: {}", e.message);
                        }
                    }
                }
            });
            match tray::install(&handle, host.clone()) {
                Ok(_) => *app.state::<App>().tray.lock().unwrap() = true,
                Err(e) => tracing::warn!("no tray icon: {e}"),
            }
            // Hidden only when a tray icon can bring the window back.
            if hidden && *app.state::<App>().tray.lock().unwrap() {
                for w in app.webview_windows().values() {
                    let _ = w.hide();
                }
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            if let WindowEvent::CloseRequested { api, .. } = event {
                let app = window.app_handle().state::<App>();
                let has_tray = *app.tray.lock().unwrap();
                if has_tray && app.host.settings().close_to_tray {
                    api.prevent_close();
                    let _ = window.hide();
                }
            }
        })
        .run(tauri::generate_context!())
        .expect("error while running the Berth desktop app");
}
