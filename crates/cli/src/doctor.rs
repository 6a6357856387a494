//! `berth doctor`: find out what is wrong, and say it in plain words.

use crate::client::{self, Target};
use anyhow::Result;
use clap::Args;
use serde_json::Value;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Seconds to wait for each network check
    #[arg(long, default_value_t = 3)]
    timeout: u64,
}

struct Report {
    failed: bool,
}

impl Report {
    fn ok(&mut self, msg: impl AsRef<str>) {
        println!("✔ {}", msg.as_ref());
    }
    fn bad(&mut self, msg: impl AsRef<str>) {
        self.failed = true;
        println!("✘ {}", msg.as_ref());
    }
    fn note(&mut self, msg: impl AsRef<str>) {
        println!("  {}", msg.as_ref());
    }
}

fn find_on_path(name: &str) -> Option<std::path::PathBuf> {
    let p = std::path::Path::new(name);
    if p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// GET http://host/v2/ with a plain TCP connection: any HTTP answer (200 or
/// 401) means a registry listens there.
async fn registry_answers(url: &str, timeout: Duration) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://").unwrap_or(url))
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let addr = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if https { 443 } else { 80 })
    };
    let conn = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await;
    let mut s = match conn {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("cannot connect to {addr}: {e}")),
        Err(_) => {
            return Err(format!(
                "no answer from {addr} within {}s",
                timeout.as_secs()
            ))
        }
    };
    if https {
        // Without a TLS stack here, a TCP connection is the best we can check.
        return Ok(0);
    }
    let req = format!("GET /v2/ HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(timeout, s.read(&mut buf))
        .await
        .map_err(|_| format!("{addr} accepted the connection but did not answer"))?
        .map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr} did not answer with HTTP"))
}

fn free_space(path: &str) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    Some((
        st.blocks_available() as u64 * frsize,
        st.blocks() as u64 * frsize,
    ))
}

pub async fn run(t: &Target, a: DoctorArgs) -> Result<i32> {
    let timeout = Duration::from_secs(a.timeout.max(1));
    let mut r = Report { failed: false };

    // 1. The socket
    if let Some(sock) = t.socket_path() {
        if !sock.exists() {
            r.bad(format!(
                "The engine socket {} does not exist: the engine is not running. Start it with `sudo berth engine start`.",
                sock.display()
            ));
            return finish(r);
        }
        match tokio::net::UnixStream::connect(&sock).await {
            Ok(_) => r.ok(format!(
                "The engine socket {} accepts connections",
                sock.display()
            )),
            Err(e) => {
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    " (permission denied: run as root or join the socket's group)"
                } else if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    " (nobody listens: the engine stopped without removing it; `sudo berth engine start`)"
                } else {
                    ""
                };
                r.bad(format!("Cannot connect to {}: {e}{hint}", sock.display()));
                return finish(r);
            }
        }
    } else {
        r.ok(format!("Engine address: {}", t.host));
    }

    // 2. The engine answers
    match tokio::time::timeout(timeout, client::raw(t, "GET", "/_ping")).await {
        Ok(Ok((200, _))) => r.ok("The engine answers /_ping"),
        Ok(Ok((code, _))) => r.bad(format!("The engine answered /_ping with HTTP {code}")),
        Ok(Err(e)) => {
            r.bad(format!("The engine does not answer: {e}"));
            return finish(r);
        }
        Err(_) => {
            r.bad(format!("The engine did not answer /_ping within {}s: it may be stuck; see `berth engine logs`", timeout.as_secs()));
            return finish(r);
        }
    }
    let version = client::get_json(t, "/version").await.ok().flatten();
    match &version {
        Some(v) => r.ok(format!(
            "Engine {} (API {})",
            v.get("Platform")
                .and_then(|p| p.get("Name"))
                .and_then(|x| x.as_str())
                .unwrap_or_else(|| v.get("Version").and_then(|x| x.as_str()).unwrap_or("?")),
            v.get("ApiVersion").and_then(|x| x.as_str()).unwrap_or("?")
        )),
        None => r.bad("The engine does not report its version (/version)"),
    }
    let info = client::get_json(t, "/info")
        .await
        .ok()
        .flatten()
        .unwrap_or(Value::Null);

    // 3. The OCI runtime
    let runtime = info
        .get("DefaultRuntime")
        .and_then(|x| x.as_str())
        .unwrap_or("runc")
        .to_string();
    let runtime_path = info
        .pointer(&format!("/Runtimes/{runtime}/path"))
        .and_then(|x| x.as_str())
        .unwrap_or(&runtime)
        .to_string();
    let local = t.socket_path().is_some();
    if local {
        match find_on_path(&runtime_path) {
            Some(p) => r.ok(format!("The container runtime {runtime} is installed ({})", p.display())),
            None => r.bad(format!(
                "The container runtime {runtime} ({runtime_path}) is not installed: containers cannot start. Install it (Debian: `apt-get install runc`)."
            )),
        }
    }

    // 4. Registry mirrors
    let mirrors: Vec<String> = info
        .pointer("/RegistryConfig/Mirrors")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if mirrors.is_empty() {
        r.ok("No registry mirrors configured");
    }
    for m in mirrors {
        let url = format!("{}/v2/", m.trim_end_matches('/'));
        match registry_answers(&m, timeout).await {
            Ok(0) => r.ok(format!("Registry mirror {m} accepts connections")),
            Ok(code) if code == 200 || code == 401 => r.ok(format!("Registry mirror {m} answers ({url}: HTTP {code})")),
            Ok(code) => r.bad(format!("Registry mirror {m} answers {url} with HTTP {code}: it does not look like a registry")),
            Err(e) => r.bad(format!("Registry mirror {m} is unreachable: {e}; pulls from Docker Hub will fail or be slow")),
        }
    }

    // 5. Free space in the data root
    let root = info
        .get("DockerRootDir")
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string();
    if local && !root.is_empty() {
        match free_space(&root) {
            Some((free, total)) => {
                let free_s = crate::format::human_size(free as f64);
                let pct = (free * 100).checked_div(total).unwrap_or(100);
                if free < 1_000_000_000 || pct < 5 {
                    r.bad(format!("Only {free_s} free in the data root {root} ({pct}%): pulls and builds may fail; run `berth system prune`"));
                } else {
                    r.ok(format!("{free_s} free in the data root {root} ({pct}%)"));
                }
            }
            None => r.bad(format!(
                "Cannot read the free space of the data root {root}"
            )),
        }
    }

    // 6. Published ports of running containers
    match client::get_json(t, "/containers/json").await {
        Ok(Some(Value::Array(list))) if list.is_empty() => r.ok("no containers"),
        Ok(Some(Value::Array(list))) => {
            let mut checked = 0;
            for c in &list {
                let name = c
                    .get("Names")
                    .and_then(|n| n.as_array())
                    .and_then(|n| n.first())
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
                    .trim_start_matches('/')
                    .to_string();
                let ports = c
                    .get("Ports")
                    .and_then(|p| p.as_array())
                    .cloned()
                    .unwrap_or_default();
                let mut seen = std::collections::BTreeSet::new();
                for p in ports {
                    let public = p.get("PublicPort").and_then(|x| x.as_u64()).unwrap_or(0);
                    let private = p.get("PrivatePort").and_then(|x| x.as_u64()).unwrap_or(0);
                    let ty = p.get("Type").and_then(|x| x.as_str()).unwrap_or("tcp");
                    if public == 0 || ty != "tcp" || !seen.insert(public) {
                        continue;
                    }
                    checked += 1;
                    let addr = format!("127.0.0.1:{public}");
                    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(&addr)).await {
                        Ok(Ok(_)) => r.ok(format!("Container {name}: port {public} -> {private}/tcp accepts connections on {addr}")),
                        Ok(Err(e)) => r.bad(format!("Container {name}: published port {public} -> {private}/tcp does not accept connections on {addr} ({e})")),
                        Err(_) => r.bad(format!("Container {name}: published port {public} -> {private}/tcp does not answer on {addr}")),
                    }
                }
            }
            if checked == 0 {
                r.ok(format!(
                    "{} running container(s), no published TCP ports",
                    list.len()
                ));
            }
        }
        // The container endpoints may not exist on this engine yet.
        Ok(_) => r.ok("no containers"),
        Err(e) => r.note(format!("Could not list containers: {e}")),
    }
    finish(r)
}

fn finish(r: Report) -> Result<i32> {
    if r.failed {
        println!("\nSomething is wrong: see the ✘ lines above.");
        Ok(1)
    } else {
        println!("\nEverything looks fine.");
        Ok(0)
    }
}
