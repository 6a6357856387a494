//! `docker logs`: read the shim's json-file log with Docker's options; follow until the
//! container stops. Frames are Docker's stdcopy frames unless the container has a TTY.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;

use super::{Container, ContainerService};

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub stdout: bool,
    pub stderr: bool,
    pub follow: bool,
    pub timestamps: bool,
    /// None = all.
    pub tail: Option<usize>,
    pub since: Option<f64>,
    pub until: Option<f64>,
    /// Raw payloads even without a TTY (the websocket attach's logs).
    pub raw: bool,
}

#[derive(serde::Deserialize)]
struct Line {
    log: String,
    stream: String,
    time: String,
}

pub fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 8);
    v.extend_from_slice(&[stream, 0, 0, 0]);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn ts(t: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp() as f64 + f64::from(d.timestamp_subsec_nanos()) / 1e9)
        .unwrap_or(0.0)
}

/// Turn one stored line into the bytes the client gets, or None when filtered out.
fn render(raw: &str, o: &LogOptions, tty: bool) -> Option<Vec<u8>> {
    let l: Line = serde_json::from_str(raw).ok()?;
    let stream = if l.stream == "stderr" { 2 } else { 1 };
    if (stream == 1 && !o.stdout) || (stream == 2 && !o.stderr) {
        return None;
    }
    if o.since.is_some() || o.until.is_some() {
        let t = ts(&l.time);
        if o.since.is_some_and(|s| t < s) || o.until.is_some_and(|u| t > u) {
            return None;
        }
    }
    let mut payload = Vec::new();
    if o.timestamps {
        payload.extend_from_slice(l.time.as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(l.log.as_bytes());
    Some(if tty {
        payload
    } else {
        frame(stream, &payload)
    })
}

impl ContainerService {
    /// Stream the logs into `tx` (bytes ready for the wire).
    pub async fn logs(
        self: &Arc<Self>,
        c: &Arc<Container>,
        o: LogOptions,
        tx: mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    ) {
        let (id, tty) = {
            let r = c.rec.read().await;
            (r.id.clone(), r.config.tty.unwrap_or(false) || o.raw)
        };
        let path = self.log_path(&id);
        if !o.follow {
            settle_after_start(c).await;
        }
        let mut exited = c.exited.subscribe();
        let mut removed = c.removed.subscribe();
        let mut pos = 0u64;
        // One handle for the whole request: a client may remove the container (and its log)
        // right after the exit, before a follower has read the last lines (docker-py's `run`
        // does: logs(follow) → wait → remove → read the stream); dockerd reads from an open
        // file too.
        let mut file = tokio::fs::File::open(&path).await.ok();
        if let Some(f) = file.as_mut() {
            let mut lines = BufReader::new(f).lines();
            let mut all: Vec<String> = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                pos += l.len() as u64 + 1;
                all.push(l);
            }
            let start = match o.tail {
                Some(n) => all.len().saturating_sub(n),
                None => 0,
            };
            for l in &all[start..] {
                if let Some(b) = render(l, &o, tty) {
                    if tx.send(Ok(b.into())).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !o.follow {
            return;
        }
        let alive = |c: &Container| {
            let r = c
                .rec
                .try_read()
                .map(|r| r.state.status.is_alive() || r.state.status == super::Status::Restarting);
            r.unwrap_or(true)
        };
        // No early return for a stopped container: the loop reads what was appended since the
        // first read (a process that wrote and exited in between) before it checks liveness.
        let mut partial = String::new();
        loop {
            // Read what was appended since.
            if file.is_none() {
                file = tokio::fs::File::open(&path).await.ok();
            }
            if let Some(f) = file.as_mut() {
                let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                if len < pos {
                    pos = 0;
                }
                if len > pos && f.seek(std::io::SeekFrom::Start(pos)).await.is_ok() {
                    let mut r = BufReader::new(f);
                    loop {
                        let mut buf = String::new();
                        match r.read_line(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                pos += n as u64;
                                partial.push_str(&buf);
                                if partial.ends_with('\n') {
                                    let line = std::mem::take(&mut partial);
                                    if let Some(b) = render(line.trim_end_matches('\n'), &o, tty) {
                                        if tx.send(Ok(b.into())).await.is_err() {
                                            return;
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if o.until
                .is_some_and(|u| chrono::Utc::now().timestamp() as f64 > u)
            {
                return;
            }
            if !alive(c) || *removed.borrow() {
                // One last read happened above after the exit was recorded.
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = exited.changed() => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                _ = removed.changed() => {}
                _ = tx.closed() => return,
            }
        }
    }
}

/// How long after its start a one-shot `logs` of a running container waits for it (or for its
/// exit, if sooner).
const SETTLE_MS: i64 = 100;

/// `create` → `start` → `logs` in a row (docker-py's build tests, scripts) expects the output of
/// a short command: berthd's `start` answers a few ms after `runc start`, before the process
/// has written anything, where dockerd's slower start hides that race. So a one-shot read in
/// the first [`SETTLE_MS`] of a container's life waits until then, or until it exits.
async fn settle_after_start(c: &Container) {
    let mut exited = c.exited.subscribe();
    let left = {
        let r = c.rec.read().await;
        if !r.state.status.is_alive() {
            return;
        }
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(&r.state.started_at) else {
            return;
        };
        SETTLE_MS
            - chrono::Utc::now()
                .signed_duration_since(t)
                .num_milliseconds()
    };
    if left > 0 {
        let _ = tokio::time::timeout(
            std::time::Duration::from_millis(left as u64),
            exited.changed(),
        )
        .await;
    }
}
