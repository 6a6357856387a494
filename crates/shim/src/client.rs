//! Async (tokio) client for berth-shim, used by berthd.
//!
//! ```no_run
//! # async fn f() -> Result<(), berth_shim::client::ShimError> {
//! use berth_shim::client::{spawn_shim, ShimClient, SpawnOpts};
//! let opts = SpawnOpts::new("berth-shim", "c1", "/bundle", "/state", "/c1-json.log");
//! spawn_shim(&opts).await?; // Err(ShimError::Spawn(runc's message)) when create failed
//! let shim = ShimClient::new(&opts.state_dir);
//! let out = shim.attach(false, true, true).await?;
//! shim.start().await?;
//! let exit = shim.wait().await?;
//! # drop(out); let _ = exit; Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::protocol::{
    frame_header, parse_header, resize_payload, ExitInfo, Request, Response, Status, EXIT_FILE,
    MAX_FRAME, SOCKET_NAME, STREAM_CLOSE_STDIN, STREAM_RESIZE, STREAM_STDIN,
};

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// The shim's socket could not be reached (shim not running).
    #[error("connecting to shim at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("shim i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("shim protocol: {0}")]
    Protocol(String),
    /// The shim closed the connection without answering (it is exiting).
    #[error("shim closed the connection")]
    Closed,
    /// The shim answered `{"ok":false,"error":...}`.
    #[error("{0}")]
    Shim(String),
    /// Starting the shim failed; the text is the runtime's error (e.g. runc's message).
    #[error("{0}")]
    Spawn(String),
}

/// What `state` returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimState {
    pub pid: i32,
    pub status: Status,
    pub exit: Option<ExitInfo>,
}

/// How to run berth-shim; see the binary's flags.
#[derive(Debug, Clone)]
pub struct SpawnOpts {
    /// Path of the berth-shim binary.
    pub shim_binary: PathBuf,
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log: PathBuf,
    pub tty: bool,
    pub stdin: bool,
}

impl SpawnOpts {
    /// Options with runtime `/usr/sbin/runc`, runtime root `/run/berth/runc`, no tty, no stdin.
    pub fn new(
        shim_binary: impl Into<PathBuf>,
        id: impl Into<String>,
        bundle: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        log: impl Into<PathBuf>,
    ) -> Self {
        SpawnOpts {
            shim_binary: shim_binary.into(),
            id: id.into(),
            bundle: bundle.into(),
            state_dir: state_dir.into(),
            runtime: PathBuf::from("/usr/sbin/runc"),
            runtime_root: PathBuf::from("/run/berth/runc"),
            log: log.into(),
            tty: false,
            stdin: false,
        }
    }
}

/// Runs berth-shim and waits for the process it forks to report: `Ok` once the shim listens
/// and the container is created (not started), `Err(ShimError::Spawn(msg))` with the
/// runtime's error otherwise. The shim itself keeps running detached.
pub async fn spawn_shim(opts: &SpawnOpts) -> Result<(), ShimError> {
    let mut cmd = tokio::process::Command::new(&opts.shim_binary);
    cmd.arg("--id")
        .arg(&opts.id)
        .arg("--bundle")
        .arg(&opts.bundle)
        .arg("--state-dir")
        .arg(&opts.state_dir)
        .arg("--runtime")
        .arg(&opts.runtime)
        .arg("--runtime-root")
        .arg(&opts.runtime_root)
        .arg("--log")
        .arg(&opts.log)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(false);
    if opts.tty {
        cmd.arg("--tty");
    }
    if opts.stdin {
        cmd.arg("--stdin");
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| ShimError::Spawn(format!("running {}: {e}", opts.shim_binary.display())))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(ShimError::Spawn(if msg.is_empty() {
        format!("berth-shim failed: {}", out.status)
    } else {
        msg
    }))
}

/// Talks to one shim over `<state-dir>/shim.sock`. Cheap; every call opens a connection.
#[derive(Debug, Clone)]
pub struct ShimClient {
    state_dir: PathBuf,
    socket: PathBuf,
}

impl ShimClient {
    pub fn new(state_dir: impl AsRef<Path>) -> Self {
        let state_dir = state_dir.as_ref().to_path_buf();
        ShimClient {
            socket: state_dir.join(SOCKET_NAME),
            state_dir,
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The exit record the shim left in the state dir, if the container has exited.
    pub async fn read_exit_file(&self) -> Option<ExitInfo> {
        let b = tokio::fs::read(self.state_dir.join(EXIT_FILE)).await.ok()?;
        serde_json::from_slice(&b).ok()
    }

    async fn call(&self, req: &Request) -> Result<(UnixStream, Response), ShimError> {
        let mut s =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ShimError::Connect {
                    path: self.socket.clone(),
                    source,
                })?;
        let mut line = serde_json::to_vec(req).map_err(|e| ShimError::Protocol(e.to_string()))?;
        line.push(b'\n');
        s.write_all(&line).await?;
        let resp = read_line(&mut s).await?;
        let r: Response = serde_json::from_slice(&resp)
            .map_err(|e| ShimError::Protocol(format!("bad reply: {e}")))?;
        if !r.ok {
            return Err(ShimError::Shim(r.error.unwrap_or_else(|| "error".into())));
        }
        Ok((s, r))
    }

    async fn simple(&self, req: Request) -> Result<(), ShimError> {
        self.call(&req).await.map(|_| ())
    }

    pub async fn state(&self) -> Result<ShimState, ShimError> {
        let (_, r) = self.call(&Request::State).await?;
        Ok(ShimState {
            pid: r.pid.unwrap_or(0),
            status: r
                .status
                .ok_or_else(|| ShimError::Protocol("state reply without status".into()))?,
            exit: r.exit,
        })
    }

    pub async fn start(&self) -> Result<(), ShimError> {
        self.simple(Request::Start).await
    }

    /// Attaches; the returned stream carries frames (see [`crate::protocol`]): read output
    /// with [`read_frame`], send input with [`send_stdin`], [`close_stdin`], [`send_resize`].
    pub async fn attach(
        &self,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> Result<UnixStream, ShimError> {
        let (s, _) = self
            .call(&Request::Attach {
                stdin,
                stdout,
                stderr,
            })
            .await?;
        Ok(s)
    }

    pub async fn resize(&self, height: u16, width: u16) -> Result<(), ShimError> {
        self.simple(Request::Resize { height, width }).await
    }

    pub async fn kill(&self, signal: i32) -> Result<(), ShimError> {
        self.simple(Request::Kill { signal }).await
    }

    pub async fn pause(&self) -> Result<(), ShimError> {
        self.simple(Request::Pause).await
    }

    pub async fn resume(&self) -> Result<(), ShimError> {
        self.simple(Request::Resume).await
    }

    /// Waits for the container to exit. When the shim is already gone (or goes away while
    /// waiting) the exit record it left in the state dir is returned instead.
    pub async fn wait(&self) -> Result<ExitInfo, ShimError> {
        self.wait_exit().await.map(|(e, _)| e)
    }

    /// Like [`ShimClient::wait`], and also returns what tells when the shim is gone: a shim
    /// answers `wait` as soon as the container's process has exited, possibly while the
    /// runtime still deletes the container's state, and exits itself after that.
    pub async fn wait_exit(&self) -> Result<(ExitInfo, ShimGone), ShimError> {
        match self.call(&Request::Wait).await {
            Ok((s, r)) => match r.exit {
                Some(e) => Ok((e, ShimGone(Some(s)))),
                None => Err(ShimError::Protocol("wait reply without exit".into())),
            },
            Err(e @ (ShimError::Connect { .. } | ShimError::Io(_) | ShimError::Closed)) => {
                match self.read_exit_file().await {
                    Some(x) => Ok((x, ShimGone(None))),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Runs an additional process; `process` is an OCI runtime-spec `Process` object (its
    /// `terminal` is set from `tty`). Returns the pid (0 when it could not be started: the
    /// stream then only carries the exit frame with `exit_code` 126/127 and `error`) and the
    /// framed stream. Dropping the stream detaches; the process goes on.
    pub async fn exec(
        &self,
        exec_id: &str,
        process: serde_json::Value,
        tty: bool,
        stdin: bool,
    ) -> Result<(i32, UnixStream), ShimError> {
        let (s, r) = self
            .call(&Request::Exec {
                exec_id: exec_id.to_string(),
                process,
                tty,
                stdin,
            })
            .await?;
        Ok((r.pid.unwrap_or(0), s))
    }

    pub async fn exec_resize(
        &self,
        exec_id: &str,
        height: u16,
        width: u16,
    ) -> Result<(), ShimError> {
        self.simple(Request::ExecResize {
            exec_id: exec_id.to_string(),
            height,
            width,
        })
        .await
    }
}

/// The connection of an answered `wait`: the shim holds it open until it exits.
#[derive(Debug)]
pub struct ShimGone(Option<UnixStream>);

impl ShimGone {
    /// Resolves once the shim process has exited (at once if it already had).
    pub async fn wait(self) {
        if let Some(mut s) = self.0 {
            let mut b = [0u8; 64];
            while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
        }
    }
}

/// Reads the reply line byte by byte so frame bytes behind it stay in the socket.
async fn read_line(s: &mut UnixStream) -> Result<Vec<u8>, ShimError> {
    let mut line = Vec::with_capacity(128);
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 {
            return Err(ShimError::Closed);
        }
        if b[0] == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_FRAME {
            return Err(ShimError::Protocol("reply too long".into()));
        }
        line.push(b[0]);
    }
}

/// Reads one frame: `Ok(None)` at a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 8];
    match r.read_exact(&mut h).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let (stream, len) = parse_header(&h);
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!("frame of {len} bytes")));
    }
    let mut p = vec![0u8; len];
    r.read_exact(&mut p).await?;
    Ok(Some((stream, p)))
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    stream: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&frame_header(stream, len));
    b.extend_from_slice(payload);
    w.write_all(&b).await
}

/// Sends stdin data on an attach/exec stream.
pub async fn send_stdin<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    write_frame(w, STREAM_STDIN, data).await
}

/// Closes the process's stdin.
pub async fn close_stdin<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    write_frame(w, STREAM_CLOSE_STDIN, &[]).await
}

/// Resizes the TTY of an attach/exec stream.
pub async fn send_resize<W: AsyncWrite + Unpin>(
    w: &mut W,
    height: u16,
    width: u16,
) -> std::io::Result<()> {
    write_frame(w, STREAM_RESIZE, &resize_payload(height, width)).await
}
