//! The OCI runtime behind a trait; [`Runc`] drives any runc-compatible CLI (runc, crun).

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
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
    /// Starts the user process of a created container whose init has pid `init_pid`.
    fn start(&self, id: &str, init_pid: i32) -> RtResult;
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
    /// Deletes what is left of a container whose processes are all gone (its init was
    /// reaped, it had its own PID namespace) and which has no hooks to run.
    fn delete_stopped(&self, id: &str) -> RtResult {
        self.delete(id, true)
    }
}

/// A runc-compatible command line runtime.
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    /// Where per-invocation `--log` files go (the state dir).
    log_dir: PathBuf,
    reaper: Arc<Reaper>,
    seq: AtomicU64,
    /// The binary is runc itself, whose `start` the shim can do without running it.
    is_runc: bool,
}

impl Runc {
    pub fn new(binary: PathBuf, root: PathBuf, log_dir: PathBuf, reaper: Arc<Reaper>) -> Self {
        let is_runc = binary.file_name().is_some_and(|n| n == "runc");
        Runc {
            binary,
            root,
            log_dir,
            reaper,
            seq: AtomicU64::new(0),
            is_runc,
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
        self.reaper.spawned();
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

/// What `runc start` does (libcontainer's `exec()`), without the cost of starting runc (a Go
/// program: several milliseconds): the created container's init waits, blocked opening the
/// state dir's `exec.fifo` for writing; open it for reading, read until the init closes it
/// (it writes one byte, then its close-on-exec descriptor goes with the exec of the user
/// process), and remove the fifo, which is how runc tells a created container from a running
/// one. `dead` says whether the init has exited meanwhile (runc checks every 100 ms too).
fn start_through_fifo(fifo: &Path, dead: impl Fn() -> bool) -> RtResult {
    // Non-blocking open: succeeds at once; poll then waits for the init's write (a fifo
    // reports no hang-up before a writer has come and gone).
    let mut f = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .map_err(|e| format!("opening {}: {e}", fifo.display()))?;
    let mut got = 0usize;
    let mut buf = [0u8; 64];
    loop {
        let mut pfd = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 100) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("waiting on {}: {e}", fifo.display()));
        }
        if n == 0 {
            if !dead() {
                continue;
            }
            // The init is gone; it may still have written before it went.
            if let Ok(k) = f.read(&mut buf) {
                got += k;
            }
            if got == 0 {
                return Err("container process is already dead".into());
            }
            break;
        }
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading {}: {e}", fifo.display())),
        }
    }
    if got == 0 {
        return Err("cannot start an already running container".into());
    }
    std::fs::remove_file(fifo).map_err(|e| format!("removing {}: {e}", fifo.display()))
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

    fn start(&self, id: &str, init_pid: i32) -> RtResult {
        let fifo = self.root.join(id).join("exec.fifo");
        if self.is_runc && fifo.exists() {
            return start_through_fifo(&fifo, || self.reaper.reaped(init_pid));
        }
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

    fn delete_stopped(&self, id: &str) -> RtResult {
        if self.is_runc {
            match delete_stopped_runc(&self.root.join(id)) {
                Ok(()) => return Ok(()),
                Err(e) => eprintln!("berth-shim: {e}; running runc delete"),
            }
        }
        self.delete(id, true)
    }
}

/// What `runc delete` does for a stopped container (libcontainer's `destroy()`) when there is
/// no process left to kill and no hook to run, without the cost of starting runc: remove the
/// container's cgroups (runc's `state.json` lists them) and runc's state dir. Anything
/// unexpected (no state, Intel RDT, a cgroup that stays busy) is an error, and the caller
/// runs `runc delete` instead.
fn delete_stopped_runc(state_dir: &Path) -> Result<(), String> {
    let raw = std::fs::read(state_dir.join("state.json"))
        .map_err(|e| format!("reading runc state: {e}"))?;
    let st: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| format!("runc state: {e}"))?;
    if st["intel_rdt_path"].as_str().is_some_and(|p| !p.is_empty()) {
        return Err("the container has an Intel RDT group".into());
    }
    let mut paths: Vec<&str> = st["cgroup_paths"]
        .as_object()
        .ok_or("runc state without cgroup_paths")?
        .values()
        .filter_map(|v| v.as_str())
        .filter(|p| p.starts_with("/sys/fs/cgroup/"))
        .collect();
    paths.sort_unstable();
    paths.dedup();
    for p in paths {
        remove_cgroup(Path::new(p))?;
    }
    match std::fs::remove_dir_all(state_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {}: {e}", state_dir.display())),
    }
}

/// Removes a cgroup and any sub-cgroup, retrying a while as runc does: a cgroup can stay
/// busy for a moment after its last task was reaped.
fn remove_cgroup(p: &Path) -> Result<(), String> {
    let mut delay = std::time::Duration::from_millis(1);
    let mut attempt = 0;
    loop {
        match rmdir_tree(p) {
            Ok(()) => return Ok(()),
            Err(e) if attempt == 5 => return Err(format!("removing {}: {e}", p.display())),
            Err(_) => {
                std::thread::sleep(delay);
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

fn rmdir_tree(p: &Path) -> std::io::Result<()> {
    let err = match std::fs::remove_dir(p) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => e,
    };
    // A cgroup's own files go with it; only sub-cgroups (directories) must go first.
    let mut subs = false;
    if let Ok(rd) = std::fs::read_dir(p) {
        for ent in rd.flatten() {
            if ent.file_type().is_ok_and(|t| t.is_dir()) {
                rmdir_tree(&ent.path())?;
                subs = true;
            }
        }
    }
    if !subs {
        return Err(err);
    }
    match std::fs::remove_dir(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
