//! berthd: its command line, its logs, supervision (restart when it dies, stop it at shutdown)
//! and readiness (`GET /_ping` on its socket).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::cmdline::BootParams;
use crate::power::Shutdown;
use crate::reaper::{describe, Reaper};

pub const BERTHD_BIN: &str = "/usr/bin/berthd";
pub const SHIM_BIN: &str = "/usr/bin/berth-shim";
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const ANNOUNCE_SOCK: &str = "/run/berth-guest/ports.sock";
pub const LOG_FILE: &str = "/run/berth-guest/berthd.log";
const LOG_MAX: u64 = 16 << 20;
/// berthd failing this many times in a row (each within [`STABLE`]) powers the VM off.
pub const MAX_FAILURES: u32 = 5;
const STABLE: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_millis(10);

/// The fixed part of berthd's command line (docs/VM.md, "berthd in the guest").
pub fn berthd_args(p: &BootParams, announce: bool) -> Vec<String> {
    let mut a: Vec<String> = [
        "--data-root",
        crate::disk::DATA_ROOT,
        "-H",
        &format!("unix://{}", crate::relay::DOCKER_SOCK),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if announce {
        a.extend(["--port-announce".to_string(), ANNOUNCE_SOCK.to_string()]);
    }
    for m in &p.mirrors {
        a.extend(["--registry-mirror".to_string(), m.clone()]);
    }
    for i in &p.insecure {
        a.extend(["--insecure-registry".to_string(), i.clone()]);
    }
    if let Some(l) = &p.log {
        a.extend(["--log-level".to_string(), l.clone()]);
    }
    a
}

/// Where berthd is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    Starting,
    /// Answering `_ping`; the version from `GET /version`.
    Ready(String),
    Down,
}

pub struct Supervisor {
    pub reaper: Arc<Reaper>,
    pub args: Vec<String>,
    pub state: watch::Sender<EngineState>,
    pub shutdown: Shutdown,
    /// The write end of berthd's stdout/stderr pipe (kept open here across restarts).
    pub log_pipe: OwnedFd,
}

impl Supervisor {
    fn command(&self) -> anyhow::Result<Command> {
        let mut c = Command::new(BERTHD_BIN);
        c.args(&self.args)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("BERTH_SHIM_BIN", SHIM_BIN)
            // `_ping`/`version` answer as soon as the store is open; the rest of the start-up
            // (networks, containers) finishes behind them (docs/VM.md).
            .env("BERTHD_EARLY_API", "1")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::from(self.log_pipe.try_clone()?))
            .stderr(Stdio::from(self.log_pipe.try_clone()?))
            .process_group(0);
        Ok(c)
    }

    /// Run berthd until shutdown, restarting it when it dies. Returns once berthd is stopped.
    pub async fn run(self) {
        let mut failures = 0u32;
        loop {
            if self.shutdown.requested() {
                return;
            }
            let started = Instant::now();
            self.state.send_replace(EngineState::Starting);
            let spawned = self
                .command()
                .and_then(|mut c| self.reaper.spawn(&mut c).map_err(anyhow::Error::from));
            let reason = match spawned {
                Ok((mut child, _)) => {
                    tracing::info!(
                        pid = child.pid,
                        "berthd started: {BERTHD_BIN} {}",
                        self.args.join(" ")
                    );
                    let ready = wait_ready(crate::relay::DOCKER_SOCK);
                    tokio::pin!(ready);
                    let mut is_ready = false;
                    loop {
                        tokio::select! {
                            status = child.wait() => break describe(status),
                            version = &mut ready, if !is_ready => {
                                is_ready = true;
                                self.state.send_replace(EngineState::Ready(version));
                            }
                            _ = self.shutdown.wait() => {
                                stop(&mut child).await;
                                self.state.send_replace(EngineState::Down);
                                return;
                            }
                        }
                    }
                }
                Err(e) => format!("{e:#}"),
            };
            self.state.send_replace(EngineState::Down);
            if self.shutdown.requested() {
                return;
            }
            if started.elapsed() > STABLE {
                failures = 0;
            }
            failures += 1;
            tracing::error!("berthd died unexpectedly ({reason}); failure {failures} of {MAX_FAILURES} in a row");
            if failures >= MAX_FAILURES {
                self.shutdown
                    .request(&format!("berthd failed {MAX_FAILURES} times in a row"));
                return;
            }
            let backoff = restart_backoff(failures);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.shutdown.wait() => return,
            }
        }
    }
}

/// Delay before restart number `failures` (1-based): 100 ms doubling, at most 5 s.
pub fn restart_backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.saturating_sub(1).min(6));
    Duration::from_millis(ms.min(5000))
}

/// SIGTERM (berthd leaves containers running under their shims), SIGKILL after the grace time.
async fn stop(child: &mut crate::reaper::Child) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    tracing::info!(pid = child.pid, "stopping berthd");
    let _ = kill(Pid::from_raw(child.pid), Signal::SIGTERM);
    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
        Ok(s) => tracing::info!("berthd stopped ({})", describe(s)),
        Err(_) => {
            tracing::warn!("berthd did not stop within {STOP_GRACE:?}: killing it");
            let _ = kill(Pid::from_raw(child.pid), Signal::SIGKILL);
            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        }
    }
}

/// Poll `GET /_ping` until it answers 200, then ask for the version.
pub async fn wait_ready(sock: &str) -> String {
    loop {
        if let Ok(Ok((200, _))) =
            tokio::time::timeout(Duration::from_secs(2), http_get(sock, "/_ping")).await
        {
            break;
        }
        tokio::time::sleep(PING_EVERY).await;
    }
    match tokio::time::timeout(Duration::from_secs(5), http_get(sock, "/version")).await {
        Ok(Ok((200, body))) => version_of(&body),
        _ => "unknown".to_string(),
    }
}

/// `Version` from a `GET /version` body, or "unknown".
pub fn version_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("Version")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// A minimal HTTP/1.0 GET over a Unix socket: status and body.
pub async fn http_get(sock: &str, path: &str) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut s = UnixStream::connect(sock).await?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: berth\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    (&mut s).take(4 << 20).read_to_end(&mut buf).await?;
    parse_response(&buf)
}

/// Parse an HTTP/1.x response (Content-Length, chunked, or read-to-close bodies).
pub fn parse_response(buf: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("incomplete HTTP response");
    };
    let head = std::str::from_utf8(&buf[..end]).context("HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let proto = parts.next().unwrap_or_default();
    if !proto.starts_with("HTTP/1.") {
        bail!("not an HTTP response: {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
        if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k == "content-length" {
            length = v.parse::<usize>().ok();
        }
    }
    let body = &buf[end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else if let Some(n) = length {
        if body.len() < n {
            bail!("HTTP body shorter than its Content-Length");
        }
        body[..n].to_vec()
    } else {
        body.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            bail!("truncated chunk header");
        };
        let size_text = std::str::from_utf8(&b[..i]).context("chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size_text, 16).context("chunk size")?;
        b = &b[i + 2..];
        if n == 0 {
            return Ok(out);
        }
        if b.len() < n + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&b[..n]);
        b = &b[n + 2..];
    }
}

/// berthd's stdout/stderr: every line goes to [`LOG_FILE`] and to the console as
/// `berthd: <line>`. Returns the pipe's write end for the children.
pub fn start_log_forwarder() -> anyhow::Result<OwnedFd> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe for berthd's logs")?;
    std::thread::Builder::new()
        .name("berthd-log".into())
        .spawn(move || forward_logs(fs::File::from(r)))
        .context("starting the log thread")?;
    Ok(w)
}

fn open_log() -> Option<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
        .ok()
}

fn forward_logs(r: fs::File) {
    let mut file = open_log();
    let mut written = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .map_or(0, |m| m.len());
    let mut reader = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") {
            line.push(b'\n');
        }
        if written + line.len() as u64 > LOG_MAX {
            let _ = fs::rename(LOG_FILE, format!("{LOG_FILE}.1"));
            file = open_log();
            written = 0;
        }
        if let Some(f) = file.as_mut() {
            if f.write_all(&line).is_ok() {
                written += line.len() as u64;
            }
        }
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(b"berthd: ");
        let _ = e.write_all(&line);
    }
}

/// Whether berthd gets `--port-announce` (BERTH_GUEST_NO_ANNOUNCE=1 drops it, for a berthd
/// without the flag).
pub fn announce_enabled() -> bool {
    std::env::var_os("BERTH_GUEST_NO_ANNOUNCE").is_none_or(|v| v != "1")
}

/// True when berthd is installed where we start it from.
pub fn installed() -> bool {
    Path::new(BERTHD_BIN).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let p = BootParams::parse(
            "berth.mirror=https://m1,https://m2 berth.insecure=reg:5000 berth.log=debug",
        );
        assert_eq!(
            berthd_args(&p, true).join(" "),
            "--data-root /var/lib/berth -H unix:///run/berth/docker.sock \
             --port-announce /run/berth-guest/ports.sock \
             --registry-mirror https://m1 --registry-mirror https://m2 \
             --insecure-registry reg:5000 --log-level debug"
        );
        assert_eq!(
            berthd_args(&BootParams::default(), false).join(" "),
            "--data-root /var/lib/berth -H unix:///run/berth/docker.sock"
        );
    }

    #[test]
    fn backoff() {
        assert_eq!(restart_backoff(1), Duration::from_millis(100));
        assert_eq!(restart_backoff(2), Duration::from_millis(200));
        assert_eq!(restart_backoff(4), Duration::from_millis(800));
        assert_eq!(restart_backoff(60), Duration::from_millis(5000));
        assert_eq!(restart_backoff(0), Duration::from_millis(100));
    }

    #[test]
    fn responses() {
        let (s, b) = parse_response(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nOKxx",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"OK"[..]));
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"Ve\r\nf;x=y\r\nrsion\":\"1.2.3\"}\r\n0\r\n\r\n").unwrap();
        assert_eq!(s, 200);
        assert_eq!(version_of(&b), "1.2.3");
        let (s, b) = parse_response(b"HTTP/1.0 500 Internal\r\n\r\nboom").unwrap();
        assert_eq!((s, b.as_slice()), (500, &b"boom"[..]));
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").is_err()
        );
    }

    #[test]
    fn versions() {
        assert_eq!(
            version_of(br#"{"Version":"0.1.0","ApiVersion":"1.47"}"#),
            "0.1.0"
        );
        assert_eq!(version_of(b"{}"), "unknown");
        assert_eq!(version_of(b"not json"), "unknown");
        assert_eq!(version_of(br#"{"Version":5}"#), "unknown");
    }

    #[tokio::test]
    async fn ready_against_a_fake_engine() {
        let dir = std::env::temp_dir().join(format!("berth-guest-ping-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("d.sock");
        let sock_s = sock.to_str().unwrap().to_string();
        // Nothing listens yet: wait_ready keeps polling; start the server a bit later.
        let s2 = sock.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let l = tokio::net::UnixListener::bind(&s2).unwrap();
            loop {
                let (mut c, _) = l.accept().await.unwrap();
                let mut req = vec![0u8; 1024];
                let n = c.read(&mut req).await.unwrap();
                let req = String::from_utf8_lossy(&req[..n]).to_string();
                let body = if req.starts_with("GET /_ping") {
                    "OK"
                } else {
                    r#"{"Version":"9.9"}"#
                };
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                c.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let v = tokio::time::timeout(Duration::from_secs(5), wait_ready(&sock_s))
            .await
            .unwrap();
        assert_eq!(v, "9.9");
        fs::remove_dir_all(&dir).unwrap();
    }
}
