//! Streams the UI opens: engine events, logs, stats, pull/push progress and
//! exec sessions.  Each runs as one task that ends when the UI closes it,
//! when its sink is gone, or when the engine ends it.
//!
//! Messages: `{"type":"data","data":...}`, `{"type":"end", ...}`,
//! `{"type":"error","error":{kind,message,status}}`; the events stream sends
//! the hub's `{"type":"engine"}` and `{"type":"event"}` messages.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters as qp;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::commands::{arg_bool, arg_str, arg_u64, opt_str};
use crate::error::{HostError, Result};
use crate::host::{engine_msg, Host, Sink, StreamEntry};
use crate::stats::{self, CpuCounters};

pub const KINDS: &[&str] = &[
    "events",
    "logs",
    "stats",
    "stats_all",
    "pull",
    "push",
    "exec",
];

fn data(v: Value) -> Value {
    json!({"type": "data", "data": v})
}
fn error_msg(e: &HostError) -> Value {
    json!({"type": "error", "error": e})
}

/// Splits `name[:tag]` (a digest `@sha256:...` stays in the name); the tag
/// defaults to `latest` as the docker CLI does.
pub fn split_reference(r: &str) -> (String, String) {
    let r = r.trim();
    if r.contains('@') {
        return (r.to_string(), String::new());
    }
    let slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
    match r[slash..].rfind(':') {
        Some(i) => (r[..slash + i].to_string(), r[slash + i + 1..].to_string()),
        None => (r.to_string(), "latest".to_string()),
    }
}

impl Host {
    /// Opens a stream of `kind`; its messages go to `sink`.  Returns its id
    /// (for `stream.close`, `stream.input`, `stream.resize`).
    pub async fn open_stream(self: &Arc<Self>, kind: &str, args: Value, sink: Sink) -> Result<u64> {
        let id = self.new_stream_id();
        let me = self.clone();
        let mut input = None;
        let mut exec_id = None;
        let fut: futures::future::BoxFuture<'static, ()> = match kind {
            "events" => {
                let rx = self.subscribe();
                Box::pin(async move { me.run_events(rx, sink).await })
            }
            "logs" => {
                let cid = arg_str(&args, "id")?;
                let opts = qp::LogsOptions {
                    follow: arg_bool(&args, "follow", true),
                    stdout: true,
                    stderr: true,
                    timestamps: arg_bool(&args, "timestamps", false),
                    tail: opt_str(&args, "tail").unwrap_or_else(|| "1000".into()),
                    ..Default::default()
                };
                let d = self.docker()?;
                Box::pin(async move { run_logs(d, cid, opts, sink).await })
            }
            "stats" => {
                let cid = arg_str(&args, "id")?;
                let d = self.docker()?;
                Box::pin(async move { run_stats(d, cid, sink).await })
            }
            "stats_all" => {
                let every =
                    Duration::from_millis(arg_u64(&args, "intervalMs", 3000).clamp(1000, 60_000));
                Box::pin(async move { me.run_stats_all(every, sink).await })
            }
            "pull" => {
                let (image, tag) = split_reference(&arg_str(&args, "image")?);
                if image.is_empty() {
                    return Err(HostError::invalid(
                        "which image? (for example busybox:latest)",
                    ));
                }
                let d = self.docker()?;
                let opts = qp::CreateImageOptions {
                    from_image: Some(image),
                    tag: if tag.is_empty() { None } else { Some(tag) },
                    ..Default::default()
                };
                Box::pin(async move {
                    run_progress(d.create_image(Some(opts), None, None).boxed(), sink).await
                })
            }
            "push" => {
                let (image, tag) = split_reference(&arg_str(&args, "image")?);
                let d = self.docker()?;
                let opts = qp::PushImageOptions {
                    tag: if tag.is_empty() { None } else { Some(tag) },
                    ..Default::default()
                };
                let creds = bollard::auth::DockerCredentials::default();
                Box::pin(async move {
                    let s = d.push_image(&image, Some(opts), Some(creds)).boxed();
                    run_progress(s, sink).await
                })
            }
            "exec" => {
                let cid = arg_str(&args, "id")?;
                let cmd: Vec<String> = match args.get("cmd") {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                    Some(Value::String(s)) if !s.trim().is_empty() => {
                        crate::commands::shell_split(s)?
                    }
                    _ => vec!["sh".into()],
                };
                let tty = arg_bool(&args, "tty", true);
                let d = self.docker()?;
                let created = d
                    .create_exec(
                        &cid,
                        CreateExecOptions {
                            attach_stdin: Some(true),
                            attach_stdout: Some(true),
                            attach_stderr: Some(true),
                            tty: Some(tty),
                            env: Some(vec!["TERM=xterm-256color".to_string()]),
                            cmd: Some(cmd),
                            user: opt_str(&args, "user"),
                            working_dir: opt_str(&args, "workdir"),
                            ..Default::default()
                        },
                    )
                    .await?;
                let started = d
                    .start_exec(
                        &created.id,
                        Some(StartExecOptions {
                            detach: false,
                            tty,
                            output_capacity: None,
                        }),
                    )
                    .await?;
                let (output, mut writer) = match started {
                    StartExecResults::Attached { output, input } => (output, input),
                    StartExecResults::Detached => {
                        return Err(HostError::invalid("the exec session did not attach"))
                    }
                };
                let cols = arg_u64(&args, "cols", 0) as u16;
                let rows = arg_u64(&args, "rows", 0) as u16;
                if cols > 0 && rows > 0 && tty {
                    let _ = d
                        .resize_exec(
                            &created.id,
                            ResizeExecOptions {
                                width: cols,
                                height: rows,
                            },
                        )
                        .await;
                }
                let (tx, mut rx) = mpsc::unbounded_channel::<Bytes>();
                input = Some(tx);
                exec_id = Some(created.id.clone());
                let exec = created.id.clone();
                Box::pin(async move {
                    let writer_task = tokio::spawn(async move {
                        while let Some(b) = rx.recv().await {
                            if writer.write_all(&b).await.is_err() || writer.flush().await.is_err()
                            {
                                break;
                            }
                        }
                        let _ = writer.shutdown().await;
                    });
                    let mut output = output.ready_chunks(64);
                    let mut failed = None;
                    while let Some(items) = output.next().await {
                        let mut buf = Vec::new();
                        for item in items {
                            match item {
                                Ok(o) => buf.extend_from_slice(&o.into_bytes()),
                                Err(e) => failed = Some(HostError::from(e)),
                            }
                        }
                        if !buf.is_empty() {
                            let b64 = base64::engine::general_purpose::STANDARD.encode(&buf);
                            if !sink(data(json!(b64))) {
                                writer_task.abort();
                                return;
                            }
                        }
                        if failed.is_some() {
                            break;
                        }
                    }
                    writer_task.abort();
                    if let Some(e) = failed {
                        sink(error_msg(&e));
                        return;
                    }
                    let code = d.inspect_exec(&exec).await.ok().and_then(|i| i.exit_code);
                    sink(json!({"type": "end", "exitCode": code}));
                })
            }
            other => {
                return Err(HostError::invalid(format!(
                    "unknown stream {other:?} (known: {})",
                    KINDS.join(", ")
                )))
            }
        };
        let me2 = self.clone();
        // Register before the task can finish, so it can remove itself.
        let mut map = self.streams.lock().unwrap();
        let handle = tokio::spawn(async move {
            fut.await;
            me2.streams.lock().unwrap().remove(&id);
        });
        map.insert(
            id,
            StreamEntry {
                task: handle.abort_handle(),
                input,
                exec_id,
            },
        );
        Ok(id)
    }

    /// Keystrokes for an exec session.
    pub fn stream_input(&self, id: u64, data: Bytes) -> Result<()> {
        let map = self.streams.lock().unwrap();
        let e = map
            .get(&id)
            .ok_or_else(|| HostError::invalid(format!("stream {id} is closed")))?;
        let tx = e
            .input
            .as_ref()
            .ok_or_else(|| HostError::invalid(format!("stream {id} takes no input")))?;
        tx.send(data)
            .map_err(|_| HostError::invalid("the session has ended"))
    }

    /// Resizes an exec session's TTY.
    pub async fn stream_resize(&self, id: u64, cols: u16, rows: u16) -> Result<()> {
        let exec = {
            let map = self.streams.lock().unwrap();
            let e = map
                .get(&id)
                .ok_or_else(|| HostError::invalid(format!("stream {id} is closed")))?;
            e.exec_id
                .clone()
                .ok_or_else(|| HostError::invalid(format!("stream {id} has no terminal")))?
        };
        if cols == 0 || rows == 0 {
            return Ok(());
        }
        self.docker()?
            .resize_exec(
                &exec,
                ResizeExecOptions {
                    width: cols,
                    height: rows,
                },
            )
            .await?;
        Ok(())
    }

    async fn run_events(
        self: Arc<Self>,
        mut rx: tokio::sync::broadcast::Receiver<Value>,
        sink: Sink,
    ) {
        if !sink(engine_msg(&self.engine_state())) {
            return;
        }
        loop {
            match rx.recv().await {
                Ok(v) => {
                    if !sink(v) {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    // Too slow a reader: tell it to reload everything.
                    if !sink(json!({"type": "lagged", "missed": n})) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// CPU and memory of every running container, one round every `every`,
    /// for the containers list (open only while the list is on screen).
    async fn run_stats_all(self: Arc<Self>, every: Duration, sink: Sink) {
        let mut prev: HashMap<String, CpuCounters> = HashMap::new();
        loop {
            let round: Result<Value> = async {
                let d = self.docker()?;
                let list = d
                    .list_containers(Some(qp::ListContainersOptions {
                        filters: Some(HashMap::from([(
                            "status".to_string(),
                            vec!["running".to_string()],
                        )])),
                        ..Default::default()
                    }))
                    .await?;
                let ids: Vec<String> = list.into_iter().filter_map(|c| c.id).collect();
                let futs = ids.iter().map(|id| {
                    let d = d.clone();
                    let id = id.clone();
                    async move {
                        let opts = qp::StatsOptions {
                            stream: false,
                            one_shot: true,
                        };
                        let mut s = d.stats(&id, Some(opts));
                        let r = s.next().await;
                        (id, r)
                    }
                });
                let results = futures::future::join_all(futs).await;
                let mut out = serde_json::Map::new();
                let mut next = HashMap::new();
                for (id, r) in results {
                    if let Some(Ok(st)) = r {
                        let v = serde_json::to_value(&st).unwrap_or(Value::Null);
                        let sample = stats::sample(&v, prev.get(&id).copied());
                        next.insert(id.clone(), stats::cpu_counters(&v, "cpu_stats"));
                        out.insert(id, serde_json::to_value(sample).unwrap());
                    }
                }
                prev = next;
                Ok(Value::Object(out))
            }
            .await;
            let ok = match round {
                Ok(v) => sink(data(v)),
                Err(e) => sink(error_msg(&e)),
            };
            if !ok {
                return;
            }
            tokio::time::sleep(every).await;
        }
    }
}

async fn run_logs(d: bollard::Docker, id: String, opts: qp::LogsOptions, sink: Sink) {
    let mut s = d.logs(&id, Some(opts)).ready_chunks(512);
    while let Some(items) = s.next().await {
        let mut chunks = Vec::with_capacity(items.len());
        let mut failed = None;
        for item in items {
            match item {
                Ok(o) => {
                    let stream = match &o {
                        LogOutput::StdErr { .. } => "stderr",
                        LogOutput::StdOut { .. } => "stdout",
                        LogOutput::StdIn { .. } => "stdin",
                        LogOutput::Console { .. } => "console",
                    };
                    let text = String::from_utf8_lossy(&o.into_bytes()).into_owned();
                    chunks.push(json!({"s": stream, "t": text}));
                }
                Err(e) => failed = Some(HostError::from(e)),
            }
        }
        if !chunks.is_empty() && !sink(data(Value::Array(chunks))) {
            return;
        }
        if let Some(e) = failed {
            sink(error_msg(&e));
            return;
        }
    }
    sink(json!({"type": "end"}));
}

async fn run_stats(d: bollard::Docker, id: String, sink: Sink) {
    let mut s = d.stats(
        &id,
        Some(qp::StatsOptions {
            stream: true,
            one_shot: false,
        }),
    );
    let mut prev = None;
    while let Some(item) = s.next().await {
        match item {
            Ok(st) => {
                let v = serde_json::to_value(&st).unwrap_or(Value::Null);
                let sample = stats::sample(&v, prev);
                prev = Some(stats::cpu_counters(&v, "cpu_stats"));
                if !sink(data(serde_json::to_value(sample).unwrap())) {
                    return;
                }
            }
            Err(e) => {
                sink(error_msg(&HostError::from(e)));
                return;
            }
        }
    }
    sink(json!({"type": "end"}));
}

/// Pull and push progress: Docker's JSON messages, as they come, in batches.
async fn run_progress<T: serde::Serialize>(
    s: futures::stream::BoxStream<'static, std::result::Result<T, bollard::errors::Error>>,
    sink: Sink,
) {
    let mut s = s.ready_chunks(128);
    while let Some(items) = s.next().await {
        let mut batch = Vec::new();
        let mut failed = None;
        for item in items {
            match item {
                Ok(m) => {
                    let v = serde_json::to_value(&m).unwrap_or(Value::Null);
                    if let Some(err) = v
                        .get("error")
                        .and_then(|e| e.as_str())
                        .filter(|e| !e.is_empty())
                    {
                        failed = Some(HostError::new(crate::error::ErrorKind::Engine, err));
                    } else if let Some(err) = v
                        .pointer("/errorDetail/message")
                        .and_then(|e| e.as_str())
                        .filter(|e| !e.is_empty())
                    {
                        failed = Some(HostError::new(crate::error::ErrorKind::Engine, err));
                    }
                    batch.push(v);
                }
                Err(e) => failed = Some(HostError::from(e)),
            }
        }
        if !batch.is_empty() && !sink(data(Value::Array(batch))) {
            return;
        }
        if let Some(e) = failed {
            sink(error_msg(&e));
            return;
        }
    }
    sink(json!({"type": "end"}));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            split_reference("busybox"),
            ("busybox".into(), "latest".into())
        );
        assert_eq!(
            split_reference("busybox:1.36"),
            ("busybox".into(), "1.36".into())
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/x/y"),
            ("127.0.0.1:5000/x/y".into(), "latest".into())
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/x/y:v2"),
            ("127.0.0.1:5000/x/y".into(), "v2".into())
        );
        assert_eq!(
            split_reference("a@sha256:abc"),
            ("a@sha256:abc".into(), "".into())
        );
    }
}
