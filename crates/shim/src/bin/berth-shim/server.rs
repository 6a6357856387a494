//! The shim proper: creates the container, pumps its output to the log and attachers,
//! serves the control socket, and records the exit.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use berth_shim::protocol::{
    exec_error_code, frame_header, parse_header, parse_resize, ExitFrame, ExitInfo, Request,
    Response, Status, EXIT_FILE, INIT_PID_FILE, MAX_FRAME, MAX_REQUEST, SHIM_PID_FILE, SOCKET_NAME,
    STREAM_CLOSE_STDIN, STREAM_EXIT, STREAM_RESIZE, STREAM_STDERR, STREAM_STDIN, STREAM_STDOUT,
};

use crate::jsonlog::{rfc3339_nano, JsonLog};
use crate::reaper::{decode_status, Reaper};
use crate::runtime::{Runc, Runtime, Stdio3};
use crate::{spawn_thread, sys, Args};

/// Chunks queued per attacher (at most).
const SUB_QUEUE: usize = 1024;
/// Bytes queued per attacher before it is considered too slow and dropped.
const SUB_MAX_PENDING: usize = 1 << 20;
/// Read size for output pumps.
const CHUNK: usize = 32 * 1024;
/// How long to wait for output to drain after a process exited.
const DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for attachers/waiters to be told before the shim exits.
const FLUSH: Duration = Duration::from_secs(5);
/// End-of-transmission, written to a pty when the client closes stdin.
const EOT: u8 = 0x04;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

enum Msg {
    Data(u8, Arc<[u8]>),
    Eof,
    Exit(ExitFrame),
}

struct Sub {
    tx: SyncSender<Msg>,
    stdout: bool,
    stderr: bool,
    /// Shut down when the attacher is dropped for being too slow, to unblock its writer.
    sock: Option<UnixStream>,
    /// Bytes queued and not yet written to the attacher.
    pending: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Bus {
    subs: Vec<Sub>,
    exit: Option<ExitFrame>,
}

enum StdinTarget {
    None,
    Pipe(Mutex<Option<File>>),
    Pty(Arc<File>),
}

struct St {
    status: Status,
    exit: Option<ExitInfo>,
}

/// Counts work that must finish (or time out) before something proceeds.
#[derive(Default)]
struct Counter {
    n: Mutex<usize>,
    cv: Condvar,
}

impl Counter {
    fn guard(self: &Arc<Self>) -> CountGuard {
        *lock(&self.n) += 1;
        CountGuard(self.clone())
    }

    fn wait_zero(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut n = lock(&self.n);
        while *n > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            n = self
                .cv
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

struct CountGuard(Arc<Counter>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        let mut n = lock(&self.0.n);
        *n = n.saturating_sub(1);
        self.0.cv.notify_all();
    }
}

pub struct Shim {
    id: String,
    state_dir: PathBuf,
    pid: i32,
    runtime: Box<dyn Runtime>,
    reaper: Arc<Reaper>,
    st: Mutex<St>,
    st_cv: Condvar,
    bus: Mutex<Bus>,
    stdin: StdinTarget,
    console: Option<Arc<File>>,
    log: Mutex<JsonLog>,
    /// Output pumps of the container still running.
    pumps: Arc<Counter>,
    /// Connections to answer before exiting (attach, wait, exec).
    flush: Arc<Counter>,
    /// pty masters of running exec processes, for exec_resize.
    execs: Mutex<HashMap<String, Arc<File>>>,
    seq: AtomicU64,
    oom_files: Vec<PathBuf>,
    init_reaped: AtomicBool,
    /// The container has a PID namespace of its own: nothing of it outlives its init.
    own_pid_ns: bool,
    /// ... and no hooks, and cgroups of the runtime's own (no systemd unit): once the init is
    /// reaped, deleting it only removes state.
    plain: bool,
    /// Answered `wait` connections, held open until the shim exits: their end of stream tells
    /// the client that the runtime's state is gone too.
    held: Mutex<Vec<UnixStream>>,
}

/// Sets up and runs the shim. `ready` is taken (and "OK" written to it) once the container
/// is created and the socket listens; an error before that is reported through it by main.
pub fn run(args: Args, ready: &mut Option<File>) -> Result<()> {
    let sd = args.state_dir.clone();
    let sock_path = sd.join(SOCKET_NAME);
    let _ = fs::remove_file(&sock_path);
    let _ = fs::remove_file(sd.join(EXIT_FILE));
    let listener = UnixListener::bind(&sock_path)
        .with_context(|| format!("listening on {}", sock_path.display()))?;
    let logf = File::options()
        .create(true)
        .append(true)
        .open(&args.log)
        .with_context(|| format!("opening log {}", args.log.display()))?;
    let bundle_cfg: Option<serde_json::Value> = fs::read(args.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let oom_files = oom_files(bundle_cfg.as_ref(), &args.id);
    let own_pid_ns = own_pid_ns(bundle_cfg.as_ref());
    let plain = own_pid_ns && plain_cleanup(bundle_cfg.as_ref());
    drop(bundle_cfg);
    let reaper = Reaper::start().context("starting reaper")?;
    crate::timing::note("listening");
    fs::create_dir_all(&args.runtime_root)
        .with_context(|| format!("creating {}", args.runtime_root.display()))?;
    let runtime: Box<dyn Runtime> = Box::new(Runc::new(
        args.runtime.clone(),
        args.runtime_root.clone(),
        sd.clone(),
        reaper.clone(),
    ));
    let pid_file = sd.join(INIT_PID_FILE);
    let _ = fs::remove_file(&pid_file);

    let fail = |runtime: &dyn Runtime, msg: String| -> anyhow::Error {
        let _ = runtime.delete(&args.id, true);
        let _ = fs::remove_file(&sock_path);
        anyhow!(msg)
    };

    let mut outs: Vec<(File, u8)> = Vec::new();
    let mut stdin_w = None;
    let mut console = None;
    if args.tty {
        let csock = sd.join("console.sock");
        let _ = fs::remove_file(&csock);
        let cl = UnixListener::bind(&csock)
            .with_context(|| format!("listening on {}", csock.display()))?;
        let r = runtime.create(
            &args.id,
            &args.bundle,
            &pid_file,
            Some(&csock),
            Stdio3::null(),
        );
        let master = r.and_then(|()| sys::recv_console(&cl).map_err(|e| e.to_string()));
        let _ = fs::remove_file(&csock);
        let master = master.map_err(|m| fail(&*runtime, m))?;
        outs.push((master.try_clone()?, STREAM_STDOUT));
        console = Some(Arc::new(master));
    } else {
        let (or, ow) = sys::pipe()?;
        let (er, ew) = sys::pipe()?;
        let stdin = if args.stdin {
            let (ir, iw) = sys::pipe()?;
            stdin_w = Some(iw);
            Stdio::from(ir)
        } else {
            Stdio::null()
        };
        let stdio = Stdio3 {
            stdin,
            stdout: Stdio::from(ow),
            stderr: Stdio::from(ew),
        };
        crate::timing::note("runc create");
        runtime
            .create(&args.id, &args.bundle, &pid_file, None, stdio)
            .map_err(|m| fail(&*runtime, m))?;
        crate::timing::note("runc create done");
        outs.push((or, STREAM_STDOUT));
        outs.push((er, STREAM_STDERR));
    }
    let pid = match read_pid(&pid_file) {
        Ok(p) => p,
        Err(e) => return Err(fail(&*runtime, format!("reading init pid: {e}"))),
    };
    let stdin = match (&console, stdin_w) {
        (Some(m), _) if args.stdin => StdinTarget::Pty(m.clone()),
        (None, Some(w)) => StdinTarget::Pipe(Mutex::new(Some(w))),
        _ => StdinTarget::None,
    };
    let shim = Arc::new(Shim {
        id: args.id.clone(),
        state_dir: sd.clone(),
        pid,
        runtime,
        reaper,
        st: Mutex::new(St {
            status: Status::Created,
            exit: None,
        }),
        st_cv: Condvar::new(),
        bus: Mutex::new(Bus::default()),
        stdin,
        console,
        log: Mutex::new(JsonLog::new(logf)),
        pumps: Arc::new(Counter::default()),
        flush: Arc::new(Counter::default()),
        execs: Mutex::new(HashMap::new()),
        seq: AtomicU64::new(0),
        oom_files,
        init_reaped: AtomicBool::new(false),
        own_pid_ns,
        plain,
        held: Mutex::new(Vec::new()),
    });
    for (f, stream) in outs {
        let g = shim.pumps.guard();
        let sh = shim.clone();
        spawn_thread("pump", move || {
            sh.pump(f, stream);
            drop(g);
        })?;
    }
    let sh = shim.clone();
    spawn_thread("monitor", move || sh.monitor())?;

    if let Some(mut r) = ready.take() {
        let _ = r.write_all(b"OK\n");
    }
    crate::timing::note("ready");

    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                let sh = shim.clone();
                if let Err(e) = spawn_thread("conn", move || sh.handle_conn(c)) {
                    eprintln!("berth-shim: spawning connection thread: {e}");
                }
            }
            Err(e) => {
                eprintln!("berth-shim: accept: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    Ok(())
}

fn read_pid(path: &Path) -> Result<i32> {
    let s = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    s.trim()
        .parse()
        .with_context(|| format!("bad pid {s:?} in {}", path.display()))
}

/// Where to read the container's OOM kill count: the memory cgroup v1 `memory.oom_control`,
/// or cgroup v2 `memory.events`, for `linux.cgroupsPath` of the bundle's config.json.
fn oom_files(cfg: Option<&serde_json::Value>, id: &str) -> Vec<PathBuf> {
    let cg = cfg
        .and_then(|c| c.pointer("/linux/cgroupsPath"))
        .and_then(|v| v.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| format!("/{id}"));
    if cg.contains(':') {
        // systemd "slice:prefix:name" notation; not used by berthd.
        return Vec::new();
    }
    let rel = cg.trim_start_matches('/');
    vec![
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ]
}

/// Whether config.json gives the container a new PID namespace (one without a `path`).
fn own_pid_ns(cfg: Option<&serde_json::Value>) -> bool {
    cfg.and_then(|c| c.pointer("/linux/namespaces"))
        .and_then(|n| n.as_array())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n["type"] == "pid" && n.get("path").is_none_or(|p| p.is_null()))
        })
}

/// No hooks in config.json and a plain cgroups path (not systemd's `slice:prefix:name`).
fn plain_cleanup(cfg: Option<&serde_json::Value>) -> bool {
    let Some(cfg) = cfg else {
        return false;
    };
    let no_hooks = cfg.get("hooks").is_none_or(|h| {
        h.is_null()
            || h.as_object().is_some_and(|o| {
                o.values()
                    .all(|v| v.as_array().is_none_or(|a| a.is_empty()))
            })
    });
    let cg_plain = cfg
        .pointer("/linux/cgroupsPath")
        .and_then(|v| v.as_str())
        .is_none_or(|p| !p.contains(':'));
    no_hooks && cg_plain
}

fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Reads one request line byte by byte, so no frame bytes after it are consumed.
fn read_line(mut s: &UnixStream) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::with_capacity(128);
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return Ok(None),
            Ok(_) if b[0] == b'\n' => return Ok(Some(line)),
            Ok(_) => {
                if line.len() >= MAX_REQUEST {
                    return Err(io::Error::other("request too long"));
                }
                line.push(b[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn reply(mut s: &UnixStream, r: &Response) -> io::Result<()> {
    let mut b = serde_json::to_vec(r).map_err(io::Error::other)?;
    b.push(b'\n');
    s.write_all(&b)
}

fn write_frame(mut s: &UnixStream, stream: u8, data: &[u8]) -> io::Result<()> {
    let len = u32::try_from(data.len()).map_err(io::Error::other)?;
    let mut b = Vec::with_capacity(8 + data.len());
    b.extend_from_slice(&frame_header(stream, len));
    b.extend_from_slice(data);
    s.write_all(&b)
}

fn write_exit_frame(s: &UnixStream, f: &ExitFrame) -> io::Result<()> {
    let payload = serde_json::to_vec(f).map_err(io::Error::other)?;
    write_frame(s, STREAM_EXIT, &payload)
}

/// Reads client frames until EOF or error, calling `f(stream, payload)` for each.
fn read_frames(mut s: &UnixStream, mut f: impl FnMut(u8, &[u8])) {
    let mut h = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        if s.read_exact(&mut h).is_err() {
            return;
        }
        let (stream, len) = parse_header(&h);
        let len = len as usize;
        if len > MAX_FRAME {
            return;
        }
        payload.resize(len, 0);
        if s.read_exact(&mut payload).is_err() {
            return;
        }
        f(stream, &payload);
    }
}

fn result_resp(r: Result<(), String>) -> Response {
    match r {
        Ok(()) => Response::ok(),
        Err(e) => Response::err(e),
    }
}

/// Output of one process read into a channel (exec streams).
fn chan_pump(mut f: File, stream: u8, tx: Sender<Msg>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send(Msg::Data(stream, buf[..n].into())).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // EIO on a pty master once the slave side is closed
        }
    }
    let _ = tx.send(Msg::Eof);
}

/// Where client stdin frames of an exec go.
enum ExecIn {
    None,
    Pipe(File),
    Pty(Arc<File>),
}

struct ExecSetup {
    pid: i32,
    outs: Vec<(File, u8)>,
    input: ExecIn,
    master: Option<Arc<File>>,
}

impl Shim {
    fn status(&self) -> Status {
        lock(&self.st).status
    }

    fn pump(&self, mut f: File, stream: u8) {
        let name = if stream == STREAM_STDERR {
            "stderr"
        } else {
            "stdout"
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    lock(&self.log).write(name, &buf[..n]);
                    self.broadcast(stream, &buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break, // EIO on a pty master once the container side is closed
            }
        }
    }

    /// Hands a chunk to every attacher that wants it; an attacher whose queue is full (too
    /// slow) or gone is dropped, so the container and the log never wait.
    fn broadcast(&self, stream: u8, data: &[u8]) {
        let mut bus = lock(&self.bus);
        if bus.subs.is_empty() {
            return;
        }
        let d: Arc<[u8]> = data.into();
        bus.subs.retain(|s| {
            let want = if stream == STREAM_STDERR {
                s.stderr
            } else {
                s.stdout
            };
            if !want {
                return true;
            }
            let queued = s.pending.fetch_add(d.len(), Ordering::Relaxed) + d.len();
            let sent = queued <= SUB_MAX_PENDING
                && match s.tx.try_send(Msg::Data(stream, d.clone())) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => false,
                    Err(TrySendError::Disconnected(_)) => return false,
                };
            if !sent {
                // Too slow: disconnect it rather than wait or buffer without bound.
                if let Some(sock) = &s.sock {
                    let _ = sock.shutdown(Shutdown::Both);
                }
            }
            sent
        });
    }

    fn oom_kills(&self) -> u64 {
        for f in &self.oom_files {
            if let Ok(t) = fs::read_to_string(f) {
                return t
                    .lines()
                    .find_map(|l| l.strip_prefix("oom_kill "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            }
        }
        0
    }

    /// Waits for the init to exit, records it, cleans up and exits the shim.
    fn monitor(self: Arc<Self>) {
        let status = self.reaper.wait_keep(self.pid);
        crate::timing::note("init reaped");
        self.init_reaped.store(true, Ordering::SeqCst);
        let finished_at = rfc3339_nano(SystemTime::now());
        let (exit_code, signal) = decode_status(status);
        let oom_killed = self.oom_kills() > 0;
        self.pumps.wait_zero(DRAIN);
        let exit = ExitInfo {
            exit_code,
            signal,
            oom_killed,
            finished_at,
        };
        match serde_json::to_vec(&exit) {
            Ok(b) => {
                if let Err(e) = write_atomic(&self.state_dir.join(EXIT_FILE), &b) {
                    eprintln!("berth-shim: writing exit.json: {e}");
                }
            }
            Err(e) => eprintln!("berth-shim: encoding exit: {e}"),
        }
        // With its own PID namespace nothing of the container is left once its init is
        // reaped: waiters and attachers hear of the exit now, while the runtime deletes its
        // state (the held `wait` connections end when that is done). Without one, leftover
        // processes live until the delete kills them, so the exit is told after it.
        if self.own_pid_ns {
            self.publish_exit(exit.clone());
        }
        crate::timing::note("runc delete");
        let deleted = if self.plain {
            self.runtime.delete_stopped(&self.id)
        } else {
            self.runtime.delete(&self.id, true)
        };
        if let Err(e) = deleted {
            eprintln!("berth-shim: runtime delete: {e}");
        }
        crate::timing::note("runc delete done");
        if !self.own_pid_ns {
            // Leftover processes held the pipes until the delete.
            self.pumps.wait_zero(Duration::from_secs(1));
            self.publish_exit(exit);
        }
        // New clients now find no socket and read exit.json instead.
        let _ = fs::remove_file(self.state_dir.join(SOCKET_NAME));
        self.flush.wait_zero(FLUSH);
        crate::timing::note("exiting");
        for f in [SHIM_PID_FILE, "console.sock"] {
            let _ = fs::remove_file(self.state_dir.join(f));
        }
        std::process::exit(0);
    }

    /// Records the exit: `state` and `wait` answer with it, attachers get their exit frame.
    fn publish_exit(&self, exit: ExitInfo) {
        let frame = ExitFrame {
            exit_code: exit.exit_code,
            error: None,
        };
        {
            let mut st = lock(&self.st);
            st.status = Status::Exited;
            st.exit = Some(exit);
        }
        self.st_cv.notify_all();
        {
            let mut bus = lock(&self.bus);
            bus.exit = Some(frame.clone());
            for s in bus.subs.drain(..) {
                let _ = s.tx.try_send(Msg::Exit(frame.clone()));
            }
        }
        crate::timing::note("waiters told");
    }

    fn handle_conn(self: Arc<Self>, stream: UnixStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let line = match read_line(&stream) {
            Ok(Some(l)) => l,
            _ => return,
        };
        let _ = stream.set_read_timeout(None);
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => {
                if crate::timing::enabled() {
                    crate::timing::note(&format!("request {}", String::from_utf8_lossy(&line)));
                }
                r
            }
            Err(e) => {
                let _ = reply(&stream, &Response::err(format!("bad request: {e}")));
                return;
            }
        };
        let resp = match req {
            Request::State => {
                let st = lock(&self.st);
                Response {
                    ok: true,
                    pid: Some(self.pid),
                    status: Some(st.status),
                    exit: st.exit.clone(),
                    ..Default::default()
                }
            }
            Request::Start => result_resp(self.start()),
            Request::Attach {
                stdin,
                stdout,
                stderr,
            } => return self.attach(stream, stdin, stdout, stderr),
            Request::Resize { height, width } => result_resp(match &self.console {
                Some(m) => sys::set_winsize(m, height, width).map_err(|e| e.to_string()),
                None => Err("container has no tty".into()),
            }),
            Request::Kill { signal } => result_resp(self.kill(signal)),
            Request::Pause => result_resp(self.pause(true)),
            Request::Resume => result_resp(self.pause(false)),
            Request::Wait => {
                let _g = self.flush.guard();
                let mut st = lock(&self.st);
                while st.exit.is_none() {
                    st = self.st_cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                let exit = st.exit.clone();
                drop(st);
                let sent = reply(
                    &stream,
                    &Response {
                        ok: true,
                        exit,
                        ..Default::default()
                    },
                );
                if sent.is_ok() {
                    // Closed by the exit of the shim, after the runtime's delete.
                    lock(&self.held).push(stream);
                }
                return;
            }
            Request::Exec {
                exec_id,
                process,
                tty,
                stdin,
            } => return self.exec(stream, exec_id, process, tty, stdin),
            Request::ExecResize {
                exec_id,
                height,
                width,
            } => {
                let m = lock(&self.execs).get(&exec_id).cloned();
                result_resp(match m {
                    Some(m) => sys::set_winsize(&m, height, width).map_err(|e| e.to_string()),
                    None => Err(format!("no such exec with a tty: {exec_id}")),
                })
            }
        };
        let _ = reply(&stream, &resp);
    }

    fn start(&self) -> Result<(), String> {
        match self.status() {
            Status::Created => {}
            s => return Err(format!("cannot start a container in state {s:?}")),
        }
        crate::timing::note("runc start");
        self.runtime.start(&self.id, self.pid)?;
        crate::timing::note("runc start done");
        let mut st = lock(&self.st);
        if st.status == Status::Created {
            st.status = Status::Running;
        }
        Ok(())
    }

    fn kill(&self, signal: i32) -> Result<(), String> {
        let st = lock(&self.st);
        if st.status == Status::Exited
            || self.init_reaped.load(Ordering::SeqCst)
            || self.reaper.reaped(self.pid)
        {
            return Err("container is not running".into());
        }
        // SAFETY: kill(2) with plain integers. The init has not been reaped (the shim is its
        // reaper), so the pid still names the container's init and cannot have been reused.
        if unsafe { libc::kill(self.pid, signal) } < 0 {
            let e = io::Error::last_os_error();
            drop(st);
            // Let the runtime try (and word the error) when a plain kill is not allowed.
            return self
                .runtime
                .kill(&self.id, signal)
                .map_err(|m| format!("{m} ({e})"));
        }
        Ok(())
    }

    fn pause(&self, pause: bool) -> Result<(), String> {
        let (from, to) = if pause {
            (Status::Running, Status::Paused)
        } else {
            (Status::Paused, Status::Running)
        };
        let s = self.status();
        if s != from {
            return Err(format!("container is {s:?}, not {from:?}").to_lowercase());
        }
        if pause {
            self.runtime.pause(&self.id)?;
        } else {
            self.runtime.resume(&self.id)?;
        }
        let mut st = lock(&self.st);
        if st.status == from {
            st.status = to;
        }
        Ok(())
    }

    fn write_stdin(&self, data: &[u8]) {
        match &self.stdin {
            StdinTarget::None => {}
            StdinTarget::Pipe(m) => {
                let mut g = lock(m);
                if let Some(f) = g.as_mut() {
                    if f.write_all(data).is_err() {
                        *g = None;
                    }
                }
            }
            StdinTarget::Pty(f) => {
                let _ = (&**f).write_all(data);
            }
        }
    }

    fn close_stdin(&self) {
        match &self.stdin {
            StdinTarget::None => {}
            StdinTarget::Pipe(m) => {
                lock(m).take();
            }
            StdinTarget::Pty(f) => {
                let _ = (&**f).write_all(&[EOT]);
            }
        }
    }

    fn attach(self: Arc<Self>, stream: UnixStream, stdin: bool, stdout: bool, stderr: bool) {
        let _g = self.flush.guard();
        let (tx, rx) = mpsc::sync_channel(SUB_QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        {
            let mut bus = lock(&self.bus);
            match &bus.exit {
                Some(f) => {
                    let _ = tx.try_send(Msg::Exit(f.clone()));
                }
                None => bus.subs.push(Sub {
                    tx,
                    stdout,
                    stderr,
                    sock: stream.try_clone().ok(),
                    pending: pending.clone(),
                }),
            }
        }
        if reply(&stream, &Response::ok()).is_err() {
            return;
        }
        match stream.try_clone() {
            Ok(input) => {
                let sh = self.clone();
                let r = spawn_thread("attach-in", move || {
                    read_frames(&input, |s, p| match s {
                        STREAM_STDIN if stdin => sh.write_stdin(p),
                        STREAM_CLOSE_STDIN if stdin => sh.close_stdin(),
                        STREAM_RESIZE => {
                            if let (Some(m), Some((h, w))) = (&sh.console, parse_resize(p)) {
                                let _ = sys::set_winsize(m, h, w);
                            }
                        }
                        _ => {}
                    })
                });
                if let Err(e) = r {
                    eprintln!("berth-shim: spawning attach input thread: {e}");
                }
            }
            Err(e) => eprintln!("berth-shim: cloning attach stream: {e}"),
        }
        for msg in rx {
            match msg {
                Msg::Data(s, d) => {
                    if write_frame(&stream, s, &d).is_err() {
                        break;
                    }
                    pending.fetch_sub(d.len(), Ordering::Relaxed);
                }
                Msg::Exit(f) => {
                    let _ = write_exit_frame(&stream, &f);
                    break;
                }
                Msg::Eof => {}
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
    }

    fn exec_setup(
        &self,
        mut process: serde_json::Value,
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSetup, String> {
        let obj = process
            .as_object_mut()
            .ok_or("process must be a JSON object")?;
        obj.insert("terminal".into(), serde_json::Value::Bool(tty));
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let pfile = self.state_dir.join(format!("exec-{n}.json"));
        let pidf = self.state_dir.join(format!("exec-{n}.pid"));
        let body = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
        fs::write(&pfile, body).map_err(|e| format!("writing {}: {e}", pfile.display()))?;
        let res = if tty {
            // A short name: the state dir path plus this must fit in sun_path.
            let csock = self.state_dir.join(format!("e{n}.sock"));
            let _ = fs::remove_file(&csock);
            let r = UnixListener::bind(&csock)
                .map_err(|e| format!("console socket: {e}"))
                .and_then(|l| {
                    self.runtime
                        .exec(&self.id, &pfile, &pidf, Some(&csock), Stdio3::null())?;
                    sys::recv_console(&l).map_err(|e| e.to_string())
                });
            let _ = fs::remove_file(&csock);
            r.and_then(|m| {
                let m = Arc::new(m);
                let reader = m.try_clone().map_err(|e| e.to_string())?;
                let input = if stdin {
                    ExecIn::Pty(m.clone())
                } else {
                    ExecIn::None
                };
                Ok((vec![(reader, STREAM_STDOUT)], input, Some(m)))
            })
        } else {
            (|| {
                let (or, ow) = sys::pipe().map_err(|e| e.to_string())?;
                let (er, ew) = sys::pipe().map_err(|e| e.to_string())?;
                let (sin, input) = if stdin {
                    let (ir, iw) = sys::pipe().map_err(|e| e.to_string())?;
                    (Stdio::from(ir), ExecIn::Pipe(iw))
                } else {
                    (Stdio::null(), ExecIn::None)
                };
                let stdio = Stdio3 {
                    stdin: sin,
                    stdout: Stdio::from(ow),
                    stderr: Stdio::from(ew),
                };
                self.runtime.exec(&self.id, &pfile, &pidf, None, stdio)?;
                Ok((vec![(or, STREAM_STDOUT), (er, STREAM_STDERR)], input, None))
            })()
        };
        let _ = fs::remove_file(&pfile);
        let (outs, input, master) = res?;
        let pid = read_pid(&pidf).map_err(|e| format!("{e:#}"));
        let _ = fs::remove_file(&pidf);
        Ok(ExecSetup {
            pid: pid?,
            outs,
            input,
            master,
        })
    }

    fn exec(
        self: Arc<Self>,
        stream: UnixStream,
        exec_id: String,
        process: serde_json::Value,
        tty: bool,
        stdin: bool,
    ) {
        let _g = self.flush.guard();
        if !matches!(self.status(), Status::Running | Status::Paused) {
            let _ = reply(&stream, &Response::err("container is not running"));
            return;
        }
        let setup = match self.exec_setup(process, tty, stdin) {
            Ok(s) => s,
            Err(msg) => {
                let _ = reply(
                    &stream,
                    &Response {
                        ok: true,
                        pid: Some(0),
                        ..Default::default()
                    },
                );
                let f = ExitFrame {
                    exit_code: exec_error_code(&msg),
                    error: Some(msg),
                };
                let _ = write_exit_frame(&stream, &f);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
        };
        let ExecSetup {
            pid,
            outs,
            input,
            master,
        } = setup;
        if let Some(m) = &master {
            lock(&self.execs).insert(exec_id.clone(), m.clone());
        }
        // A client that already left (detached exec) is fine: the process goes on.
        let mut client_ok = reply(
            &stream,
            &Response {
                ok: true,
                pid: Some(pid),
                ..Default::default()
            },
        )
        .is_ok();
        let (tx, rx) = mpsc::channel();
        let npumps = outs.len();
        for (f, s) in outs {
            let tx = tx.clone();
            if let Err(e) = spawn_thread("exec-out", move || chan_pump(f, s, tx)) {
                eprintln!("berth-shim: spawning exec pump: {e}");
            }
        }
        {
            let tx = tx.clone();
            let reaper = self.reaper.clone();
            let r = spawn_thread("exec-wait", move || {
                let (exit_code, _) = decode_status(reaper.wait(pid));
                let _ = tx.send(Msg::Exit(ExitFrame {
                    exit_code,
                    error: None,
                }));
            });
            if let Err(e) = r {
                eprintln!("berth-shim: spawning exec waiter: {e}");
            }
        }
        drop(tx);
        if let Ok(sock) = stream.try_clone() {
            let r = spawn_thread("exec-in", move || {
                let mut input = input;
                read_frames(&sock, |s, p| match (s, &mut input) {
                    (STREAM_STDIN, ExecIn::Pipe(f)) => {
                        let _ = f.write_all(p);
                    }
                    (STREAM_STDIN, ExecIn::Pty(f)) => {
                        let _ = (&**f).write_all(p);
                    }
                    (STREAM_CLOSE_STDIN, ExecIn::Pipe(_)) => input = ExecIn::None,
                    (STREAM_CLOSE_STDIN, ExecIn::Pty(f)) => {
                        let _ = (&**f).write_all(&[EOT]);
                    }
                    (STREAM_RESIZE, ExecIn::Pty(f)) => {
                        if let Some((h, w)) = parse_resize(p) {
                            let _ = sys::set_winsize(f, h, w);
                        }
                    }
                    _ => {}
                });
                // Client gone: a pipe stdin is closed by dropping `input` here.
            });
            if let Err(e) = r {
                eprintln!("berth-shim: spawning exec input thread: {e}");
            }
        }
        let mut eofs = 0;
        let mut exit: Option<ExitFrame> = None;
        let mut deadline: Option<Instant> = None;
        loop {
            let msg = match deadline {
                None => rx.recv().ok(),
                Some(d) => rx
                    .recv_timeout(d.saturating_duration_since(Instant::now()))
                    .ok(),
            };
            match msg {
                Some(Msg::Data(s, d)) => {
                    if client_ok && write_frame(&stream, s, &d).is_err() {
                        client_ok = false;
                    }
                }
                Some(Msg::Eof) => eofs += 1,
                Some(Msg::Exit(f)) => {
                    exit = Some(f);
                    deadline = Some(Instant::now() + DRAIN);
                }
                None => break,
            }
            if exit.is_some() && eofs >= npumps {
                break;
            }
        }
        lock(&self.execs).remove(&exec_id);
        if client_ok {
            if let Some(f) = exit {
                let _ = write_exit_frame(&stream, &f);
            }
        }
        let _ = stream.shutdown(Shutdown::Both);
    }
}
