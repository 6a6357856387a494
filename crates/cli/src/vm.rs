//! `berth vm start|stop|status|logs|ssh`: the engine in Berth's own Linux VM (docs/VM.md).
//! `start` runs the VM supervisor (`berth vm run`, crates/vm) detached and waits until the
//! engine in the guest answers on the host socket.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use berth_vm::supervisor::{Paths, StateFile, VmSettings};
use berth_vm::VmState;
use clap::{Args, Subcommand};

use crate::client::{exit, Target};

#[derive(Args, Debug, Clone, Default)]
pub struct VmStartArgs {
    /// Virtual CPUs (saved in the VM settings)
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory in MiB (saved)
    #[arg(long)]
    pub memory: Option<u32>,
    /// Data disk size in GiB, for a new disk (saved)
    #[arg(long)]
    pub disk: Option<u32>,
    /// Guest kernel (default: the installed VM image)
    #[arg(long, requires = "initrd")]
    pub kernel: Option<PathBuf>,
    /// Guest initramfs
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Host folder shared into the VM at the same path (default: your home)
    #[arg(long)]
    pub share: Option<PathBuf>,
    /// Registry mirror for docker.io, as the guest reaches it (the host's loopback is 10.0.2.2)
    #[arg(long = "registry-mirror")]
    pub registry_mirror: Vec<String>,
    /// Registry the guest may reach over plain HTTP
    #[arg(long = "insecure-registry")]
    pub insecure_registry: Vec<String>,
    /// QEMU accelerator: kvm:tcg, tcg, hvf
    #[arg(long)]
    pub accel: Option<String>,
    /// Seconds to wait for the engine in the VM to answer
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Args, Debug)]
pub struct VmLogsArgs {
    /// Follow the console log
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines to show from the end
    #[arg(short = 'n', long)]
    tail: Option<usize>,
}

#[derive(Args, Debug)]
pub struct VmStatusArgs {
    /// Print the state as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum VmCmd {
    /// Boot the VM and wait until its engine answers on ~/.berth/run/docker.sock
    Start(VmStartArgs),
    /// Shut the VM down cleanly (containers and data are kept on its disk)
    Stop {
        /// Seconds to wait for the VM to power off
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Say whether the VM runs: state, boot time, socket, published ports
    Status(VmStatusArgs),
    /// Print (or follow) the VM's serial console log
    Logs(VmLogsArgs),
    /// A shell in the VM (as root), or run COMMAND there and return its exit code
    Ssh {
        /// Command and arguments (default: an interactive login shell)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run the VM supervisor in the foreground (what `start` runs detached)
    #[command(hide = true)]
    Run,
}

pub async fn run(c: VmCmd) -> Result<i32> {
    let paths = Paths::from_env();
    match c {
        VmCmd::Start(a) => start(&paths, &a).await,
        VmCmd::Stop { timeout } => stop(&paths, timeout).await,
        VmCmd::Status(a) => status(&paths, &a).await,
        VmCmd::Logs(a) => logs(&paths, &a).await,
        VmCmd::Ssh { command } => ssh(&paths, command).await,
        VmCmd::Run => supervise(paths).await,
    }
}

fn vm_target(paths: &Paths) -> Target {
    Target {
        host: format!("unix://{}", paths.socket().display()),
    }
}

fn merge(mut s: VmSettings, a: &VmStartArgs) -> VmSettings {
    if let Some(v) = a.cpus {
        s.cpus = v;
    }
    if let Some(v) = a.memory {
        s.memory_mib = v;
    }
    if let Some(v) = a.disk {
        s.disk_gib = v;
    }
    if a.kernel.is_some() {
        s.kernel = a.kernel.clone();
        s.initrd = a.initrd.clone();
    }
    if a.share.is_some() {
        s.share = a.share.clone();
    }
    if !a.registry_mirror.is_empty() {
        s.registry_mirrors = a.registry_mirror.clone();
    }
    if !a.insecure_registry.is_empty() {
        s.insecure_registries = a.insecure_registry.clone();
    }
    if let Some(v) = &a.accel {
        s.accel = v.clone();
    }
    s
}

pub async fn start(paths: &Paths, a: &VmStartArgs) -> Result<i32> {
    let t = vm_target(paths);
    if let Some(st) = StateFile::read(paths) {
        if st.effective_state() == VmState::Running && crate::engine::ping(&t).await {
            println!("The VM is already running: {}", t.host);
            return Ok(0);
        }
    }
    let settings = merge(VmSettings::load(paths), a);
    settings.save(paths)?;
    // Fail here, in words, rather than in the detached supervisor's log.
    berth_vm::supervisor::find_image(paths, &settings).map_err(|e| exit(1, e.to_string()))?;
    std::fs::create_dir_all(paths.vm_dir())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.supervisor_log())
        .with_context(|| format!("opening {}", paths.supervisor_log().display()))?;
    let exe = std::env::current_exe().context("finding the berth binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["vm", "run"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid() is async-signal-safe and touches no memory of the parent; it gives the
    // supervisor its own session so it outlives this command and its terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the VM supervisor")?;
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(a.timeout);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let why = StateFile::read(paths)
                .and_then(|s| s.message)
                .unwrap_or_else(|| format!("the supervisor exited ({st})"));
            return Err(exit(
                1,
                format!(
                    "the VM did not start: {why}\nsupervisor log ({}):\n{}",
                    paths.supervisor_log().display(),
                    tail(&paths.supervisor_log(), 15)
                ),
            ));
        }
        let st = StateFile::read(paths).unwrap_or_default();
        if st.state == Some(VmState::Running) && crate::engine::ping(&t).await {
            println!(
                "VM started (boot to engine ready {:.2} s): {}",
                st.boot_ms.unwrap_or_default() as f64 / 1000.0,
                t.host
            );
            println!("Use it with: export DOCKER_HOST={}", t.host);
            return Ok(0);
        }
        if Instant::now() > deadline {
            return Err(exit(
                1,
                format!(
                    "the VM's engine did not answer within {}s; console log: {}\n{}",
                    a.timeout,
                    paths.console_log().display(),
                    tail(&paths.console_log(), 15)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stop(paths: &Paths, timeout: u64) -> Result<i32> {
    let Some(st) = StateFile::read(paths) else {
        println!("The VM is not running");
        return Ok(0);
    };
    let pid = st.supervisor_pid;
    if !berth_vm::supervisor::pid_alive(pid) {
        println!("The VM is not running");
        return Ok(0);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("signalling the VM supervisor (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while berth_vm::supervisor::pid_alive(pid) && !is_zombie(pid) {
        if Instant::now() > deadline {
            return Err(exit(1, format!("the VM did not stop within {timeout}s")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("VM stopped");
    Ok(0)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        })
        .unwrap_or(true)
}

async fn status(paths: &Paths, a: &VmStatusArgs) -> Result<i32> {
    let st = StateFile::read(paths).unwrap_or_default();
    let state = st.effective_state();
    let answering = state == VmState::Running && crate::engine::ping(&vm_target(paths)).await;
    if a.json {
        let mut v = serde_json::to_value(&st)?;
        v["state"] = serde_json::to_value(state)?;
        v["engine_answering"] = answering.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let s = VmSettings::load(paths);
        println!(
            "State:      {}",
            serde_json::to_value(state)?.as_str().unwrap_or("?")
        );
        if state == VmState::Running {
            println!(
                "Engine:     {} ({})",
                st.engine_version.as_deref().unwrap_or("?"),
                if answering {
                    "answering"
                } else {
                    "not answering"
                }
            );
            println!("Socket:     unix://{}", st.socket.display());
            println!(
                "Backend:    {} (pid {})",
                st.backend,
                st.vm_pid.map(|p| p.to_string()).unwrap_or_default()
            );
            if let Some(ms) = st.boot_ms {
                println!("Boot:       {:.2} s to engine ready", ms as f64 / 1000.0);
            }
            println!(
                "Ports:      {}",
                if st.ports.is_empty() {
                    "-".to_string()
                } else {
                    st.ports.join(", ")
                }
            );
        }
        println!(
            "Resources:  {} CPUs, {} MiB memory, {} GiB disk",
            s.cpus, s.memory_mib, s.disk_gib
        );
        if let Some(m) = &st.message {
            println!("Last error: {m}");
        }
    }
    Ok(match state {
        VmState::Running if answering => 0,
        VmState::Stopped => 3,
        _ => 1,
    })
}

async fn logs(paths: &Paths, a: &VmLogsArgs) -> Result<i32> {
    let p = paths.console_log();
    let text = std::fs::read(&p)
        .map_err(|e| exit(1, format!("no console log at {}: {e}", p.display())))?;
    let s = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = s.lines().collect();
    let from = a.tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    for l in &lines[from..] {
        println!("{l}");
    }
    if a.follow {
        let mut pos = text.len() as u64;
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(b) = std::fs::read(&p) else { continue };
            if (b.len() as u64) < pos {
                pos = 0; // a new boot truncated it
            }
            if (b.len() as u64) > pos {
                print!("{}", String::from_utf8_lossy(&b[pos as usize..]));
                use std::io::Write;
                let _ = std::io::stdout().flush();
                pos = b.len() as u64;
            }
        }
    }
    Ok(0)
}

/// `berth vm ssh`: guest vsock port 1027 (docs/VM.md): a JSON request line, then frames both
/// ways; after the guest's end-of-data frame comes the command's exit code.
async fn ssh(paths: &Paths, command: Vec<String>) -> Result<i32> {
    use std::io::{IsTerminal, Read, Write};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let st = StateFile::read(paths).unwrap_or_default();
    if st.effective_state() != VmState::Running {
        return Err(exit(
            1,
            "the VM is not running: start it with `berth vm start`",
        ));
    }
    let sock = paths.state_dir().join("vsock.sock");
    let s = berth_vm::hvsock::connect(&sock, 1027)
        .await
        .map_err(|e| exit(1, format!("cannot reach the VM's shell service: {e}")))?;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (rows, cols) = crate::container::term_size().unwrap_or((24, 80));
    let req = serde_json::json!({"tty": tty, "rows": rows, "cols": cols, "cmd": command});
    // Not `into_split`: dropping an OwnedWriteHalf half-closes the socket, which the vsock
    // transport turns into a full close (docs/VM.md).
    let (mut r, mut w) = tokio::io::split(s);
    w.write_all(format!("{req}\n").as_bytes()).await?;
    let raw = tty.then(crate::container::RawMode::enable);
    // stdin → frames, on a thread (stdin reads block); EOF → an end-of-data frame.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let input = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write_all(&(b.len() as u32).to_be_bytes()).await.is_err()
                || w.write_all(&b).await.is_err()
            {
                return;
            }
        }
        let _ = w.write_all(&0u32.to_be_bytes()).await;
    });
    let mut out = std::io::stdout();
    let mut buf = vec![0u8; 64 << 10];
    let code = loop {
        let len = match r.read_u32().await {
            Ok(l) => l as usize,
            Err(_) => break 255,
        };
        if len == 0 {
            break r.read_i32().await.unwrap_or(255);
        }
        if len > buf.len() {
            break 255;
        }
        if r.read_exact(&mut buf[..len]).await.is_err() {
            break 255;
        }
        let _ = out.write_all(&buf[..len]);
        let _ = out.flush();
    };
    input.abort();
    drop(raw);
    Ok(code)
}

fn tail(p: &std::path::Path, n: usize) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The detached supervisor: logs to stderr (the supervisor log file).
async fn supervise(paths: Paths) -> Result<i32> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG_LEVEL")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let settings = VmSettings::load(&paths);
    let backend = Arc::new(berth_vm::qemu::QemuBackend::new(settings.accel.clone()));
    match berth_vm::supervisor::run(paths, settings, backend).await {
        Ok(()) => Ok(0),
        Err(e) => {
            tracing::error!("{e:#}");
            Ok(1)
        }
    }
}
