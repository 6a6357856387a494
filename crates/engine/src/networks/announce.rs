//! VM mode (docs/VM.md): tell the host about each published port before it is used, and when it
//! is freed, through berth-guest's `ports.sock`. The host binds the same port on its side and
//! carries connections over vsock; when it cannot (the port is taken on the host), the
//! container fails to start with that error, exactly as a clash does natively.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::proxy::Binding;
use crate::error::{EngineError, Result};

#[derive(Serialize)]
struct Request<'a> {
    op: &'a str,
    proto: &'a str,
    host_ip: String,
    port: u16,
}

#[derive(Deserialize)]
struct Reply {
    error: Option<String>,
}

/// Announces published ports to `path`; does nothing when there is no path (native mode).
#[derive(Default)]
pub struct Announcer {
    path: Option<PathBuf>,
    /// What was announced per container, so `withdraw` can undo exactly that.
    announced: Mutex<HashMap<String, Vec<Binding>>>,
}

impl Announcer {
    pub fn new(path: Option<PathBuf>) -> Self {
        Self {
            path,
            announced: Mutex::default(),
        }
    }

    /// Ask the host to publish `bound` for `container`. All or nothing: on the first refusal the
    /// ports already announced are withdrawn and the host's reason is returned.
    pub async fn announce(&self, container: &str, bound: &[Binding]) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut done = Vec::new();
        for b in bound {
            if let Err(why) = ask(path, "bind", b).await {
                for d in &done {
                    let _ = ask(path, "unbind", d).await;
                }
                return Err(EngineError::Internal(format!(
                    "driver failed programming external connectivity on the host: {why}"
                )));
            }
            done.push(b.clone());
        }
        self.announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(container.to_string())
            .or_default()
            .extend(done);
        Ok(())
    }

    /// The container's ports are freed: tell the host to close them.
    pub async fn withdraw(&self, container: &str) {
        let Some(path) = &self.path else {
            return;
        };
        let gone = self
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container)
            .unwrap_or_default();
        for b in gone {
            if let Err(e) = ask(path, "unbind", &b).await {
                tracing::warn!(port = b.host_port, error = %e, "host did not take back a port");
            }
        }
    }
}

/// One request per connection, one JSON line each way.
async fn ask(path: &PathBuf, op: &str, b: &Binding) -> std::result::Result<(), String> {
    let req = Request {
        op,
        proto: &b.proto,
        host_ip: b.host_ip.to_string(),
        port: b.host_port,
    };
    let fut = async {
        let mut s = UnixStream::connect(path)
            .await
            .map_err(|e| format!("cannot reach the port forwarder at {}: {e}", path.display()))?;
        let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
        line.push(b'\n');
        s.write_all(&line).await.map_err(|e| e.to_string())?;
        let mut reply = String::new();
        BufReader::new(s)
            .read_line(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        let r: Reply = serde_json::from_str(reply.trim())
            .map_err(|e| format!("bad reply from the port forwarder: {e}"))?;
        match r.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    };
    tokio::time::timeout(Duration::from_secs(15), fut)
        .await
        .map_err(|_| "the port forwarder did not answer".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::net::UnixListener;

    fn b(port: u16) -> Binding {
        Binding {
            host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            host_port: port,
            host_port_end: port,
            proto: "tcp".into(),
            container_port: 80,
        }
    }

    /// A forwarder that refuses port 2 and records every request.
    async fn forwarder(path: PathBuf) -> std::sync::Arc<Mutex<Vec<String>>> {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let l = UnixListener::bind(&path).unwrap();
        let s2 = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await.unwrap();
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                s2.lock()
                    .unwrap()
                    .push(format!("{} {}", v["op"].as_str().unwrap(), v["port"]));
                let reply = if v["op"] == "bind" && v["port"] == 2 {
                    "{\"error\":\"Bind for 127.0.0.1:2 failed: port is already allocated\"}\n"
                } else {
                    "{\"error\":null}\n"
                };
                w.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        seen
    }

    #[tokio::test]
    async fn refusal_withdraws_what_was_announced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ports.sock");
        let seen = forwarder(path.clone()).await;
        let a = Announcer::new(Some(path));
        let err = a.announce("c1", &[b(1), b(2)]).await.unwrap_err();
        assert!(
            err.to_string().contains("port is already allocated"),
            "{err}"
        );
        assert_eq!(*seen.lock().unwrap(), ["bind 1", "bind 2", "unbind 1"]);
        a.announce("c2", &[b(3)]).await.unwrap();
        a.withdraw("c2").await;
        a.withdraw("c2").await; // second time: nothing left to withdraw
        assert_eq!(seen.lock().unwrap()[3..], ["bind 3", "unbind 3"]);
    }

    #[tokio::test]
    async fn native_mode_does_nothing() {
        let a = Announcer::new(None);
        a.announce("c", &[b(1)]).await.unwrap();
        a.withdraw("c").await;
    }
}
