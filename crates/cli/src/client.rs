//! Connection to the engine (DOCKER_HOST, the selected docker context, or
//! Berth's default socket) and Docker's error reporting and exit codes.

use anyhow::{anyhow, Result};
use bollard::Docker;
use serde_json::Value;
use std::fmt;
use std::path::PathBuf;

pub const DEFAULT_SOCKET: &str = "/run/berth/docker.sock";
pub const API_VERSION: &str = "1.44";

/// An error that carries the process exit code and the text to print
/// (already in docker's words).
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub msg: String,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for Exit {}

pub fn exit(code: i32, msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit {
        code,
        msg: msg.into(),
    })
}

/// Which engine to talk to.
#[derive(Clone, Debug)]
pub struct Target {
    /// `unix:///path` or `tcp://host:port`
    pub host: String,
}

impl Target {
    pub fn resolve(flag: Option<&str>) -> Target {
        if let Some(h) = flag.filter(|h| !h.is_empty()) {
            return Target { host: h.into() };
        }
        if let Ok(h) = std::env::var("DOCKER_HOST") {
            if !h.is_empty() {
                return Target { host: h };
            }
        }
        if let Some(h) = crate::context::current_context_host() {
            return Target { host: h };
        }
        let sock = std::env::var("BERTH_SOCKET").unwrap_or_else(|_| DEFAULT_SOCKET.into());
        Target {
            host: format!("unix://{sock}"),
        }
    }

    pub fn socket_path(&self) -> Option<PathBuf> {
        self.host.strip_prefix("unix://").map(PathBuf::from)
    }

    pub fn connect(&self) -> Result<Docker> {
        let v = &bollard::API_DEFAULT_VERSION;
        let d = if let Some(p) = self.host.strip_prefix("unix://") {
            Docker::connect_with_unix(p, 600, v)
        } else if self.host.starts_with("tcp://") || self.host.starts_with("http://") {
            let h = self.host.replacen("tcp://", "http://", 1);
            Docker::connect_with_http(&h, 600, v)
        } else {
            return Err(exit(
                1,
                format!(
                    "unable to parse docker host `{}`: unsupported protocol",
                    self.host
                ),
            ));
        };
        d.map_err(|e| match e {
            bollard::errors::Error::SocketNotFoundError(_) => self.cannot_connect(),
            other => anyhow::Error::new(other).context(format!("connecting to {}", self.host)),
        })
    }

    pub fn cannot_connect(&self) -> anyhow::Error {
        exit(
            1,
            format!(
                "Cannot connect to the Docker daemon at {}. Is the docker daemon running?",
                self.host
            ),
        )
    }
}

/// Turn a bollard error into docker's message and exit code (`code` for
/// daemon errors: 1 for most commands, 125 for run/create).
pub fn daemon_err(t: &Target, e: bollard::errors::Error, code: i32) -> anyhow::Error {
    use bollard::errors::Error as E;
    match e {
        E::DockerResponseServerError { message, .. } => {
            exit(code, format!("Error response from daemon: {message}"))
        }
        E::HyperLegacyError { .. } | E::IOError { .. } | E::RequestTimeoutError => {
            t.cannot_connect()
        }
        E::DockerStreamError { error } => exit(code, error),
        other => {
            let s = other.to_string();
            if s.contains("connect") || s.contains("No such file") {
                t.cannot_connect()
            } else {
                exit(code, s)
            }
        }
    }
}

pub fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A raw HTTP/1.1 call, used where docker prints the engine's JSON as-is
/// (inspect) and by `doctor`. Returns (status, body).
pub async fn raw(t: &Target, method: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "{method} /v{API_VERSION}{path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: berth-cli\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let mut buf = Vec::new();
    if let Some(p) = t.socket_path() {
        let mut s = tokio::net::UnixStream::connect(&p)
            .await
            .map_err(|_| t.cannot_connect())?;
        s.write_all(req.as_bytes()).await?;
        s.read_to_end(&mut buf).await?;
    } else {
        let addr = t
            .host
            .trim_start_matches("tcp://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| t.cannot_connect())?;
        s.write_all(req.as_bytes()).await?;
        s.read_to_end(&mut buf).await?;
    }
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>)> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("malformed response from the engine"))?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed status line from the engine"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &buf[end + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") {
        let size_s = String::from_utf8_lossy(&rest[..nl]);
        let size =
            usize::from_str_radix(size_s.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = nl + 2;
        let stop = (start + size).min(rest.len());
        out.extend_from_slice(&rest[start..stop]);
        rest = &rest[(stop + 2).min(rest.len())..];
    }
    Ok((status, out))
}

/// GET a JSON document; Ok(None) on 404.
pub async fn get_json(t: &Target, path: &str) -> Result<Option<Value>> {
    let (status, body) = raw(t, "GET", path).await?;
    if status == 404 {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status >= 400 {
        let msg = v
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).to_string());
        return Err(exit(1, format!("Error response from daemon: {msg}")));
    }
    Ok(Some(v))
}

/// Percent-encode a path segment.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parse docker's `--filter key=value` flags into the API's map.
pub fn filters(list: &[String]) -> Result<std::collections::HashMap<String, Vec<String>>> {
    let mut m: std::collections::HashMap<String, Vec<String>> = Default::default();
    for f in list {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| {
                exit(
                    125,
                    format!("invalid argument \"{f}\" for \"-f, --filter\" flag: bad format of filter (expected name=value)"),
                )
            })?;
        m.entry(k.trim().to_lowercase())
            .or_default()
            .push(v.to_string());
    }
    Ok(m)
}

/// A streaming call whose body is newline-delimited JSON (push): calls `f`
/// for every message. Returns the HTTP status; on >= 400 the error message.
pub async fn raw_stream_json(
    t: &Target,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    mut f: impl FnMut(Value) -> Result<()>,
) -> Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut req = format!(
        "{method} /v{API_VERSION}{path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: berth-cli\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if let Some(p) = t.socket_path() {
        let mut s = tokio::net::UnixStream::connect(&p)
            .await
            .map_err(|_| t.cannot_connect())?;
        s.write_all(req.as_bytes()).await?;
        Box::new(s)
    } else {
        let addr = t
            .host
            .trim_start_matches("tcp://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|_| t.cannot_connect())?;
        s.write_all(req.as_bytes()).await?;
        Box::new(s)
    };
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("malformed response from the engine"))?;
    let mut chunked = false;
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            break;
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
    }
    let mut pending = Vec::<u8>::new();
    let mut body_all = Vec::<u8>::new();
    let emit = |pending: &mut Vec<u8>, f: &mut dyn FnMut(Value) -> Result<()>| -> Result<()> {
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let l: Vec<u8> = pending.drain(..=nl).collect();
            let l = String::from_utf8_lossy(&l);
            let l = l.trim();
            if l.is_empty() {
                continue;
            }
            if let Ok(v) = serde_json::from_str::<Value>(l) {
                f(v)?;
            }
        }
        Ok(())
    };
    loop {
        let mut data = Vec::new();
        if chunked {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                break;
            }
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if size == 0 {
                break;
            }
            data.resize(size, 0);
            r.read_exact(&mut data).await?;
            let mut crlf = [0u8; 2];
            let _ = r.read_exact(&mut crlf).await;
        } else {
            let mut buf = [0u8; 8192];
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            data.extend_from_slice(&buf[..n]);
        }
        if status >= 400 {
            body_all.extend_from_slice(&data);
            continue;
        }
        pending.extend_from_slice(&data);
        emit(&mut pending, &mut f)?;
    }
    if status >= 400 {
        let v: Value = serde_json::from_slice(&body_all).unwrap_or(Value::Null);
        let msg = v
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body_all).trim().to_string());
        return Err(exit(1, format!("Error response from daemon: {msg}")));
    }
    pending.push(b'\n');
    emit(&mut pending, &mut f)?;
    Ok(())
}

/// GET a JSON document; Ok(Err(message)) when the engine says it is not there.
pub async fn get_json_or_msg(t: &Target, path: &str) -> Result<std::result::Result<Value, String>> {
    let (status, body) = raw(t, "GET", path).await?;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status >= 400 {
        let msg = v
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        if status == 404 {
            return Ok(Err(msg));
        }
        return Err(exit(1, format!("Error response from daemon: {msg}")));
    }
    Ok(Ok(v))
}
