//! berth-shim: one process per container. See the crate docs and `berth_shim::protocol`.
//!
//! ```text
//! berth-shim --id <id> --bundle <dir> --state-dir <dir> [--runtime /usr/sbin/runc]
//!            [--runtime-root <dir>] --log <container-json.log> [--tty] [--stdin]
//! ```
//!
//! The process berthd spawns forks; the child calls `setsid` and becomes the shim; the parent
//! exits 0 once the shim listens on `<state-dir>/shim.sock` and `runc create` succeeded, or
//! exits 1 with the runtime's error on stderr.
//!
//! With `BERTH_SHIM_TIMING=<file>` in its environment the shim appends a timestamped line to
//! that file at each step of the container's life (profiling; see docs/BENCHMARKS.md).

mod jsonlog;
mod reaper;
mod runtime;
mod server;
mod sys;
mod timing;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

/// Stack size for every thread the shim starts; they only shuffle bytes.
const STACK: usize = 128 * 1024;

/// Spawns a named thread with a small stack.
pub fn spawn_thread<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .stack_size(STACK)
        .spawn(f)
}

#[derive(Debug, Clone)]
pub struct Args {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    pub log: PathBuf,
    pub tty: bool,
    pub stdin: bool,
}

const USAGE: &str = "usage: berth-shim --id <id> --bundle <dir> --state-dir <dir> \
[--runtime <path, default runc>] [--runtime-root <dir, default /run/berth/runc>] \
--log <path> [--tty] [--stdin]";

fn parse_args() -> Result<Args> {
    let mut id = None;
    let mut bundle = None;
    let mut state_dir = None;
    let mut runtime = PathBuf::from("runc");
    let mut runtime_root = PathBuf::from("/run/berth/runc");
    let mut log = None;
    let mut tty = false;
    let mut stdin = false;
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy().into_owned();
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<PathBuf> {
            match inline.clone() {
                Some(v) => Ok(PathBuf::from(v)),
                None => it
                    .next()
                    .map(PathBuf::from)
                    .with_context(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "--id" => id = Some(value("--id")?.to_string_lossy().into_owned()),
            "--bundle" => bundle = Some(value("--bundle")?),
            "--state-dir" => state_dir = Some(value("--state-dir")?),
            "--runtime" => runtime = value("--runtime")?,
            "--runtime-root" => runtime_root = value("--runtime-root")?,
            "--log" => log = Some(value("--log")?),
            "--tty" => tty = true,
            "--stdin" => stdin = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let id = id.with_context(|| format!("--id is required\n{USAGE}"))?;
    if id.is_empty() || id.contains('/') {
        bail!("invalid container id {id:?}");
    }
    Ok(Args {
        id,
        bundle: bundle.with_context(|| format!("--bundle is required\n{USAGE}"))?,
        state_dir: state_dir.with_context(|| format!("--state-dir is required\n{USAGE}"))?,
        runtime,
        runtime_root,
        log: log.with_context(|| format!("--log is required\n{USAGE}"))?,
        tty,
        stdin,
    })
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("berth-shim: {e:#}");
            std::process::exit(2);
        }
    };
    timing::init(&args.id);
    timing::note("shim exec'd");
    let (ready_r, ready_w) = match sys::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("berth-shim: pipe: {e}");
            std::process::exit(1);
        }
    };
    // SAFETY: no other thread exists yet, so the child may run arbitrary code after fork.
    match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("berth-shim: fork: {e}");
            std::process::exit(1);
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(ready_w);
            let mut msg = String::new();
            let mut r = ready_r;
            let _ = r.read_to_string(&mut msg);
            if msg == "OK\n" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "shim exited before it was ready".into();
            }
            eprintln!("{}", msg.trim_end());
            std::process::exit(1);
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ready_r);
            let mut ready = ready_w;
            if let Err(e) = daemon_setup(&args) {
                let _ = write!(ready, "berth-shim: {e:#}");
                std::process::exit(1);
            }
            let mut ready = Some(ready);
            match server::run(args, &mut ready) {
                Ok(()) => std::process::exit(0),
                Err(e) => {
                    eprintln!("berth-shim: {e:#}");
                    if let Some(r) = ready.as_mut() {
                        let _ = write!(r, "{e:#}");
                    }
                    std::process::exit(1);
                }
            }
        }
    }
}

/// New session, stdio away from berthd (stderr to `<state-dir>/shim.log`), subreaper.
fn daemon_setup(args: &Args) -> Result<()> {
    nix::unistd::setsid().context("setsid")?;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating {}", args.state_dir.display()))?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .context("/dev/null")?;
    let errlog = File::options()
        .create(true)
        .append(true)
        .open(args.state_dir.join("shim.log"))
        .context("shim.log")?;
    for (src, dst) in [(&null, 0), (&null, 1), (&errlog, 2)] {
        // SAFETY: dup2 onto the standard descriptors; both descriptors are valid and the
        // standard streams are not otherwise owned by Rust objects here.
        if unsafe { libc::dup2(src.as_raw_fd(), dst) } < 0 {
            return Err(std::io::Error::last_os_error()).context("dup2");
        }
    }
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).context("PR_SET_CHILD_SUBREAPER");
    }
    // One malloc arena: the shim's threads only shuffle small buffers; keeps RSS low.
    // SAFETY: mallopt with a valid parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    std::fs::write(
        args.state_dir.join(berth_shim::protocol::SHIM_PID_FILE),
        std::process::id().to_string(),
    )
    .context("writing shim.pid")?;
    Ok(())
}
