//! The tray icon (StatusNotifier/AppIndicator on Linux, the menu bar on
//! macOS, the notification area on Windows): the engine's state, each
//! running container with stop / restart / open in browser / show logs,
//! start or restart the engine, open the dashboard, quit.  It is rebuilt
//! when the hub reports a container event or an engine state change.

use std::sync::Arc;
use std::time::Duration;

use berth_host::Host;
use serde_json::{json, Value};
use tauri::image::Image;
use tauri::menu::{IsMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Emitter, Manager, Wry};

const ICON_ON: &[u8] = include_bytes!("../../assets/icons/tray.png");
const ICON_OFF: &[u8] = include_bytes!("../../assets/icons/tray-off.png");

/// What the tray shows, independent of the toolkit (unit-tested).
#[derive(Debug, Clone, PartialEq)]
pub struct TrayModel {
    pub engine_line: String,
    pub running: bool,
    pub containers: Vec<TrayContainer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrayContainer {
    pub id: String,
    pub name: String,
    pub image: String,
    /// `http://localhost:PORT` of the first published TCP port.
    pub url: Option<String>,
}

pub fn model(engine: &Value, containers: &[Value]) -> TrayModel {
    let state = engine["state"].as_str().unwrap_or("unknown");
    let running = state == "running";
    let engine_line = match state {
        "running" => format!(
            "Engine running{}",
            engine["version"]
                .as_str()
                .map(|v| format!(" ({v})"))
                .unwrap_or_default()
        ),
        "starting" => "Engine starting…".to_string(),
        "stopped" => "Engine stopped".to_string(),
        _ => "Engine: connecting…".to_string(),
    };
    let mut list: Vec<TrayContainer> = containers
        .iter()
        .filter(|c| c["State"] == "running" || c["State"] == "paused")
        .map(|c| {
            let url = c["Ports"].as_array().and_then(|ps| {
                ps.iter()
                    .filter(|p| p["Type"] == "tcp" && p["PublicPort"].as_u64().unwrap_or(0) > 0)
                    .map(|p| format!("http://localhost:{}", p["PublicPort"]))
                    .next()
            });
            TrayContainer {
                id: c["Id"].as_str().unwrap_or("").to_string(),
                name: c["Names"][0]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches('/')
                    .to_string(),
                image: c["Image"].as_str().unwrap_or("").to_string(),
                url,
            }
        })
        .collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    TrayModel {
        engine_line,
        running,
        containers: list,
    }
}

fn build_menu(app: &AppHandle, m: &TrayModel) -> tauri::Result<Menu<Wry>> {
    let menu = Menu::new(app)?;
    menu.append(&MenuItem::with_id(
        app,
        "engine-state",
        &m.engine_line,
        false,
        None::<&str>,
    )?)?;
    menu.append(&PredefinedMenuItem::separator(app)?)?;
    if m.running {
        if m.containers.is_empty() {
            menu.append(&MenuItem::with_id(
                app,
                "none",
                "No running containers",
                false,
                None::<&str>,
            )?)?;
        }
        for c in m.containers.iter().take(30) {
            let stop =
                MenuItem::with_id(app, format!("c|stop|{}", c.id), "Stop", true, None::<&str>)?;
            let restart = MenuItem::with_id(
                app,
                format!("c|restart|{}", c.id),
                "Restart",
                true,
                None::<&str>,
            )?;
            let open = MenuItem::with_id(
                app,
                format!("c|open|{}|{}", c.id, c.url.clone().unwrap_or_default()),
                match &c.url {
                    Some(u) => format!("Open {u}"),
                    None => "Open in browser (no published port)".into(),
                },
                c.url.is_some(),
                None::<&str>,
            )?;
            let logs = MenuItem::with_id(
                app,
                format!("c|logs|{}", c.id),
                "Show logs",
                true,
                None::<&str>,
            )?;
            let items: [&dyn IsMenuItem<Wry>; 4] = [&stop, &restart, &open, &logs];
            let sub = Submenu::with_items(app, format!("{}  ({})", c.name, c.image), true, &items)?;
            menu.append(&sub)?;
        }
        menu.append(&PredefinedMenuItem::separator(app)?)?;
        menu.append(&MenuItem::with_id(
            app,
            "engine-restart",
            "Restart engine",
            true,
            None::<&str>,
        )?)?;
        menu.append(&MenuItem::with_id(
            app,
            "engine-stop",
            "Stop engine",
            true,
            None::<&str>,
        )?)?;
    } else {
        menu.append(&MenuItem::with_id(
            app,
            "engine-start",
            "Start engine",
            true,
            None::<&str>,
        )?)?;
    }
    menu.append(&MenuItem::with_id(
        app,
        "open",
        "Open dashboard",
        true,
        None::<&str>,
    )?)?;
    menu.append(&MenuItem::with_id(
        app,
        "quit",
        "Quit Berth",
        true,
        None::<&str>,
    )?)?;
    Ok(menu)
}

pub fn show_dashboard(app: &AppHandle, route: Option<String>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
    if let Some(r) = route {
        let _ = app.emit("berth://navigate", r);
    }
}

fn on_menu(app: &AppHandle, id: &str, host: Arc<Host>) {
    let parts: Vec<&str> = id.split('|').collect();
    match parts.as_slice() {
        ["open"] => show_dashboard(app, None),
        ["quit"] => app.exit(0),
        ["engine-start"] | ["engine-restart"] => {
            let restart = id == "engine-restart";
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(e) = host.start_engine(restart).await {
                    let _ = app.emit(
                        "berth://error",
                        json!({"title": "The engine did not start", "error": e}),
                    );
                    show_dashboard(&app, None);
                }
            });
        }
        ["engine-stop"] => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(e) = host.stop_engine().await {
                    let _ = app.emit(
                        "berth://error",
                        json!({"title": "The engine did not stop", "error": e}),
                    );
                    show_dashboard(&app, None);
                }
            });
        }
        ["c", "open", _, url] if !url.is_empty() => {
            if let Err(e) = berth_host::commands::open_url(url) {
                let _ = app.emit(
                    "berth://error",
                    json!({"title": "Cannot open the browser", "error": e}),
                );
            }
        }
        ["c", "logs", cid] => show_dashboard(app, Some(format!("#/containers/{cid}/logs"))),
        ["c", action @ ("stop" | "restart"), cid] => {
            let cmd = format!("container.{action}");
            let cid = cid.to_string();
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(e) = host.call(&cmd, json!({"id": cid})).await {
                    let _ = app.emit("berth://error", json!({"title": format!("Could not {} the container", cmd.trim_start_matches("container.")), "error": e}));
                    show_dashboard(&app, None);
                }
            });
        }
        _ => {}
    }
}

async fn refresh(app: &AppHandle, tray: &TrayIcon, host: &Arc<Host>) {
    let engine = serde_json::to_value(host.engine_state()).unwrap_or_default();
    let containers = if engine["state"] == "running" {
        host.call("containers.list", json!({"all": false}))
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    } else {
        vec![]
    };
    let m = model(&engine, &containers);
    let app2 = app.clone();
    let tray2 = tray.clone();
    // Menus are built on the main thread.
    let _ = app.run_on_main_thread(move || {
        if let Ok(menu) = build_menu(&app2, &m) {
            let _ = tray2.set_menu(Some(menu));
        }
        let icon = if m.running { ICON_ON } else { ICON_OFF };
        if let Ok(img) = Image::from_bytes(icon) {
            let _ = tray2.set_icon(Some(img));
        }
        let tip = format!("Berth — {} · {} running", m.engine_line, m.containers.len());
        let _ = tray2.set_tooltip(Some(tip));
    });
}

/// Creates the tray icon and keeps it current.  Fails quietly (with a log
/// line) where the desktop has no tray.
pub fn install(app: &AppHandle, host: Arc<Host>) -> tauri::Result<TrayIcon> {
    let m = model(&json!({"state": "unknown"}), &[]);
    let menu = build_menu(app, &m)?;
    let h2 = host.clone();
    let tray = TrayIconBuilder::with_id("berth")
        .icon(Image::from_bytes(ICON_OFF)?)
        .tooltip("Berth")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(move |app, ev| on_menu(app, ev.id().as_ref(), h2.clone()))
        .build(app)?;
    let app2 = app.clone();
    let tray2 = tray.clone();
    tauri::async_runtime::spawn(async move {
        let mut rx = host.subscribe();
        refresh(&app2, &tray2, &host).await;
        loop {
            match rx.recv().await {
                Ok(v) => {
                    let relevant = v["type"] == "engine" || v["event"]["Type"] == "container";
                    if !relevant {
                        continue;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
            // Coalesce a burst (compose up, prune) into one rebuild.
            tokio::time::sleep(Duration::from_millis(300)).await;
            while rx.try_recv().is_ok() {}
            refresh(&app2, &tray2, &host).await;
        }
    });
    Ok(tray)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_lists_running_containers_with_their_first_web_port() {
        let engine = json!({"state": "running", "version": "0.1.0"});
        let cs = vec![
            json!({"Id": "b", "Names": ["/web"], "Image": "nginx", "State": "running",
                   "Ports": [{"PrivatePort": 53, "PublicPort": 5353, "Type": "udp"}, {"PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"}]}),
            json!({"Id": "a", "Names": ["/api"], "Image": "busybox", "State": "paused", "Ports": []}),
            json!({"Id": "c", "Names": ["/old"], "Image": "busybox", "State": "exited"}),
        ];
        let m = model(&engine, &cs);
        assert_eq!(m.engine_line, "Engine running (0.1.0)");
        assert!(m.running);
        assert_eq!(m.containers.len(), 2);
        assert_eq!(m.containers[0].name, "api");
        assert_eq!(m.containers[0].url, None);
        assert_eq!(
            m.containers[1].url.as_deref(),
            Some("http://localhost:8080")
        );
    }

    #[test]
    fn model_when_the_engine_is_down() {
        let m = model(&json!({"state": "stopped"}), &[]);
        assert!(!m.running);
        assert_eq!(m.engine_line, "Engine stopped");
    }
}
