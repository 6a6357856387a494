//! The OCI runtime behind a trait; [`Runc`] drives any runc-compatible CLI (runc, crun).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::reaper::{decode_status, Reaper};

/// The three standard streams handed to the runtime process (and, without a console socket,
/// passed through by it to the container process).
pub struct Stdio3 {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

impl Stdio3 {
    pub fn null() -> Self {
        Stdio3 {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// Errors are the runtime's own message (what docker shows to the user).
pub type RtResult = Result<(), String>;

pub trait Runtime: Send + Sync {
    /// Creates the container without starting the user process.
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: Stdio3,
    ) -> RtResult;
    fn start(&self, id: &str) -> RtResult;
    /// Starts an additional process detached; its pid is written to `pid_file`.
    fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: Stdio3,
    ) -> RtResult;
    fn kill(&self, id: &str, signal: i32) -> RtResult;
    fn pause(&self, id: &str) -> RtResult;
    fn resume(&self, id: &str) -> RtResult;
    fn delete(&self, id: &str, force: bool) -> RtResult;
}

/// A runc-compatible command line runtime.
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    /// Where per-invocation `--log` files go (the state dir).
    log_dir: PathBuf,
    reaper: Arc<Reaper>,
    seq: AtomicU64,
}

impl Runc {
    pub fn new(binary: PathBuf, root: PathBuf, log_dir: PathBuf, reaper: Arc<Reaper>) -> Self {
        Runc {
            binary,
            root,
            log_dir,
            reaper,
            seq: AtomicU64::new(0),
        }
    }

    fn run(&self, args: Vec<OsString>, stdio: Stdio3) -> RtResult {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let log = self.log_dir.join(format!("runc-{n}.log"));
        let op = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(&log)
            .arg("--log-format")
            .arg("json")
            .args(args)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let child = cmd.spawn();
        // Close our copies of the stdio handed to the runtime right away, so pipes to the
        // container see EOF once the container side closes them.
        drop(cmd);
        let child = match child {
            Ok(c) => c,
            Err(e) => return Err(format!("{}: {e}", self.binary.display())),
        };
        let pid = child.id() as i32;
        // The reaper thread collects the status; `child` is dropped without waiting.
        drop(child);
        let status = self.reaper.wait(pid);
        let (code, sig) = decode_status(status);
        let result = if code == 0 && sig.is_none() {
            Ok(())
        } else {
            Err(last_error(&log).unwrap_or_else(|| {
                format!("{} {op} failed: exit status {code}", self.binary.display())
            }))
        };
        let _ = std::fs::remove_file(&log);
        result
    }
}

/// The last error message in a runc `--log-format json` log.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        if v.get("level")?.as_str()? == "error" {
            Some(v.get("msg")?.as_str()?.to_string())
        } else {
            None
        }
    })
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

impl Runtime for Runc {
    fn create(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: Stdio3,
    ) -> RtResult {
        let mut a = vec![
            os("create"),
            os("--bundle"),
            os(bundle),
            os("--pid-file"),
            os(pid_file),
        ];
        if let Some(c) = console_socket {
            a.push(os("--console-socket"));
            a.push(os(c));
        }
        a.push(os(id));
        self.run(a, stdio)
    }

    fn start(&self, id: &str) -> RtResult {
        self.run(vec![os("start"), os(id)], Stdio3::null())
    }

    fn exec(
        &self,
        id: &str,
        process_file: &Path,
        pid_file: &Path,
        console_socket: Option<&Path>,
        stdio: Stdio3,
    ) -> RtResult {
        let mut a = vec![
            os("exec"),
            os("--detach"),
            os("--process"),
            os(process_file),
            os("--pid-file"),
            os(pid_file),
        ];
        if let Some(c) = console_socket {
            a.push(os("--tty"));
            a.push(os("--console-socket"));
            a.push(os(c));
        }
        a.push(os(id));
        self.run(a, stdio)
    }

    fn kill(&self, id: &str, signal: i32) -> RtResult {
        self.run(
            vec![os("kill"), os(id), os(signal.to_string())],
            Stdio3::null(),
        )
    }

    fn pause(&self, id: &str) -> RtResult {
        self.run(vec![os("pause"), os(id)], Stdio3::null())
    }

    fn resume(&self, id: &str) -> RtResult {
        self.run(vec![os("resume"), os(id)], Stdio3::null())
    }

    fn delete(&self, id: &str, force: bool) -> RtResult {
        let mut a = vec![os("delete")];
        if force {
            a.push(os("--force"));
        }
        a.push(os(id));
        self.run(a, Stdio3::null())
    }
}
