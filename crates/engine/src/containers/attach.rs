//! Piping a hijacked client connection to a shim stream: attach and exec share this.
//! Output frames pass through (raw payloads for a TTY); client bytes become stdin frames, with
//! Docker's detach keys (default Ctrl-P Ctrl-Q) handled here, server-side.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use berth_shim::client::{close_stdin, read_frame, send_stdin};
use berth_shim::protocol::ExitFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use super::logs::{frame, LogOptions};
use super::{Container, ContainerService};
use crate::error::{EngineError, Result};

#[derive(Debug, Clone, Default)]
pub struct AttachOpts {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub logs: bool,
    pub stream: bool,
    pub detach_keys: Option<String>,
    /// Never multiplex (the websocket attach): raw output even without a TTY.
    pub raw: bool,
}

/// Parse Docker's detach key spec (`ctrl-p,ctrl-q`, `a`, `ctrl-@`).
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>> {
    let s = if s.trim().is_empty() {
        "ctrl-p,ctrl-q"
    } else {
        s
    };
    let mut out = Vec::new();
    for k in s.split(',') {
        let k = k.trim();
        if let Some(c) = k.strip_prefix("ctrl-") {
            let ch = c
                .chars()
                .next()
                .filter(|_| c.len() == 1)
                .ok_or_else(|| EngineError::invalid(format!("Unknown character: '{k}'")))?;
            let b = match ch {
                'a'..='z' => ch as u8 - b'a' + 1,
                '@' => 0,
                '[' => 27,
                '\\' => 28,
                ']' => 29,
                '^' => 30,
                '_' => 31,
                _ => return Err(EngineError::invalid(format!("Unknown character: '{k}'"))),
            };
            out.push(b);
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            return Err(EngineError::invalid(format!("Unknown character: '{k}'")));
        }
    }
    Ok(out)
}

/// Outcome of a piped session.
pub enum Ended {
    /// The process exited (with its exit frame).
    Exited(Option<ExitFrame>),
    /// The client typed the detach keys.
    Detached,
    /// The client went away.
    ClientGone,
}

/// How a session pipes: which streams, and what stdin EOF and the detach keys do.
pub struct PipeOpts {
    pub tty: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub stdin: bool,
    /// Close the process's stdin when the client half-closes (StdinOnce, exec).
    pub close_on_eof: bool,
    pub detach: Vec<u8>,
}

/// Pump between a client connection and a shim stream until the process ends, the client
/// detaches, or the client goes away.
pub async fn pipe<IO>(client: IO, shim: UnixStream, o: PipeOpts) -> Ended
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let PipeOpts {
        tty,
        stdout: want_stdout,
        stderr: want_stderr,
        stdin,
        close_on_eof,
        detach,
    } = o;
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = shim.into_split();
    let input = async move {
        if !stdin {
            // No stdin: a client half-close means nothing; a gone client shows up as a write
            // error on the output side.
            let mut buf = [0u8; 1024];
            loop {
                match cr.read(&mut buf).await {
                    Ok(0) | Err(_) => std::future::pending::<()>().await,
                    Ok(_) => {}
                }
            }
        }
        let mut buf = vec![0u8; 32 * 1024];
        let mut held: Vec<u8> = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    if !held.is_empty() {
                        let _ = send_stdin(&mut sw, &held).await;
                    }
                    if close_on_eof {
                        let _ = close_stdin(&mut sw).await;
                    }
                    // Half-close: output keeps flowing until the process exits.
                    std::future::pending::<()>().await;
                    return false;
                }
                Ok(n) => n,
            };
            let mut out = Vec::with_capacity(n);
            for &b in &buf[..n] {
                if !detach.is_empty() && b == detach[held.len()] {
                    held.push(b);
                    if held.len() == detach.len() {
                        if !out.is_empty() {
                            let _ = send_stdin(&mut sw, &out).await;
                        }
                        return true;
                    }
                    continue;
                }
                out.append(&mut held);
                if !detach.is_empty() && b == detach[0] {
                    held.push(b);
                } else {
                    out.push(b);
                }
            }
            if !out.is_empty() && send_stdin(&mut sw, &out).await.is_err() {
                return false;
            }
        }
    };
    let output = async move {
        loop {
            match read_frame(&mut sr).await {
                Ok(Some((3, payload))) => {
                    let _ = cw.flush().await;
                    let _ = cw.shutdown().await;
                    return serde_json::from_slice::<ExitFrame>(&payload).ok();
                }
                Ok(Some((s, payload))) => {
                    if (s == 1 && !want_stdout) || (s == 2 && !want_stderr) {
                        continue;
                    }
                    let bytes = if tty { payload } else { frame(s, &payload) };
                    if cw.write_all(&bytes).await.is_err() {
                        return None;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = cw.shutdown().await;
                    return None;
                }
            }
        }
    };
    tokio::pin!(input);
    tokio::pin!(output);
    tokio::select! {
        e = &mut output => Ended::Exited(e),
        detached = &mut input => if detached { Ended::Detached } else { Ended::ClientGone },
    }
}

/// Registers an attacher that `start` must wait for; taken before the 101 reply goes out, so
/// the client's following `start` cannot outrun it.
pub struct PendingAttach(Arc<Container>);

impl PendingAttach {
    pub fn register(c: &Arc<Container>) -> Self {
        c.pending_attach.fetch_add(1, Ordering::SeqCst);
        Self(c.clone())
    }
}

impl Drop for PendingAttach {
    fn drop(&mut self) {
        self.0.pending_attach.fetch_sub(1, Ordering::SeqCst);
        self.0.attach_done.notify_waiters();
    }
}

impl ContainerService {
    /// Connect to the container's shim for attaching, waiting for it to be started if needed.
    async fn attach_stream(
        &self,
        c: &Arc<Container>,
        o: &AttachOpts,
        _pending: PendingAttach,
    ) -> Option<UnixStream> {
        let mut created = c.created.subscribe();
        let mut removed = c.removed.subscribe();
        let id = c.rec.read().await.id.clone();
        loop {
            let shim = self.shim(&id);
            if let Ok(st) = shim.state().await {
                use berth_shim::protocol::Status as S;
                if matches!(st.status, S::Created | S::Running | S::Paused) {
                    if let Ok(s) = shim.attach(o.stdin, o.stdout, o.stderr).await {
                        tracing::debug!(container = %&id[..12], "attached to the shim");
                        return Some(s);
                    }
                }
            }
            tokio::select! {
                r = created.changed() => if r.is_err() { return None },
                _ = removed.changed() => return None,
            }
        }
    }

    /// `POST /containers/{id}/attach` after the hijack.
    pub async fn attach<IO>(
        self: &Arc<Self>,
        c: Arc<Container>,
        mut io: IO,
        o: AttachOpts,
        pending: PendingAttach,
    ) -> Result<()>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (tty, stdin_once, detach_default) = {
            let r = c.rec.read().await;
            (
                r.config.tty.unwrap_or(false),
                r.config.stdin_once.unwrap_or(false),
                o.detach_keys.clone(),
            )
        };
        let detach = parse_detach_keys(detach_default.as_deref().unwrap_or("ctrl-p,ctrl-q"))?;
        if o.logs && !o.stream {
            // A one-shot read of the logs over an upgraded connection: docker-py reads the 101
            // through a buffered reader, then the raw socket, so bytes that arrive with the
            // response head are lost to it (5 in 100 here). dockerd's slower log reader hides
            // that race; give the client a moment to take the head alone.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if o.logs {
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let svc = self.clone();
            let c2 = c.clone();
            let lo = LogOptions {
                stdout: o.stdout,
                stderr: o.stderr,
                raw: o.raw,
                ..Default::default()
            };
            tokio::spawn(async move { svc.logs(&c2, lo, tx).await });
            while let Some(Ok(b)) = rx.recv().await {
                if io.write_all(&b).await.is_err() {
                    return Ok(());
                }
            }
        }
        if !o.stream {
            let _ = io.shutdown().await;
            return Ok(());
        }
        let Some(stream) = self.attach_stream(&c, &o, pending).await else {
            let _ = io.shutdown().await;
            return Ok(());
        };
        let opts = PipeOpts {
            tty: tty || o.raw,
            stdout: o.stdout,
            stderr: o.stderr,
            stdin: o.stdin,
            // As dockerd: a client's EOF closes stdin only without a TTY (with one, a detaching
            // CLI just goes away and the shell must live on).
            close_on_eof: stdin_once && !tty,
            detach: if o.stdin { detach } else { vec![] },
        };
        let ended = pipe(io, stream, opts).await;
        if let Ended::Detached = ended {
            let r = c.rec.read().await.clone();
            self.emit("detach", &r, &[]);
        }
        Ok(())
    }
}
