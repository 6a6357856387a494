//! berth-guest: PID 1 of Berth's VM (docs/VM.md).
//!
//! Boot, as fast as possible and without sleeping: re-root off the initramfs, API filesystems,
//! cgroups, clock, hostname and network, data disk and share, then berthd; meanwhile the vsock
//! listeners (2375 API, 1026 published ports) and ports.sock are up. Once berthd answers
//! `_ping` it prints `berth-guest: ready in <ms> ms` and opens the control channel to the
//! host. It reaps orphans, restarts berthd when it dies, and powers off cleanly on request.

mod cmdline;
mod control;
mod disk;
mod engine;
mod init;
mod net;
mod power;
mod reaper;
mod relay;
mod shell;
mod vsock;

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use cmdline::BootParams;
use engine::EngineState;
use power::Shutdown;
use reaper::Reaper;

fn main() {
    let started = Instant::now();
    if let Some(a) = std::env::args().nth(1) {
        if a == "--version" || a == "-V" {
            println!("berth-guest {}", env!("CARGO_PKG_VERSION"));
            return;
        }
    }
    if let Err(e) = init::require_pid1() {
        eprintln!("berth-guest: {e:#}");
        std::process::exit(2);
    }
    // PID 1 must never exit: a fatal error powers the VM off instead.
    let params = match early_boot() {
        Ok(p) => p,
        Err(e) => fatal(e),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal(anyhow::Error::from(e).context("starting the async runtime")),
    };
    let e = rt.block_on(run(params, started));
    fatal(e)
}

fn fatal(e: anyhow::Error) -> ! {
    init::console_line(&format!("berth-guest: fatal: {e:#}"));
    nix::unistd::sync();
    power::reboot_now()
}

/// Synchronous setup before any thread exists.
fn early_boot() -> anyhow::Result<BootParams> {
    // Before anything is mounted, so the mounts below land in the new root.
    let reroot = init::reroot_if_initramfs();
    init::mount_base()?;
    let cmdline = init::read_cmdline();
    let params = BootParams::parse(&cmdline);
    init_logging(params.debug);
    match reroot {
        Ok(true) => tracing::debug!("re-rooted onto a bind mount of the initramfs"),
        Ok(false) => {}
        Err(e) => tracing::warn!(
            "could not re-root off the initramfs (containers will fail to pivot_root): {e:#}"
        ),
    }
    if params.debug {
        tracing::debug!("kernel command line: {}", cmdline.trim());
    }
    // Before anything runs a program: berthd, runc and the tools live there.
    match disk::mount_system_disk() {
        Ok(Some(dev)) => tracing::debug!("system disk {dev} mounted at {}", disk::SYSTEM_MOUNT),
        Ok(None) => {}
        Err(e) => tracing::error!("{e:#}"),
    }
    if let Some(t) = params.time {
        if let Err(e) = init::set_clock(t) {
            tracing::warn!("{e:#}");
        }
    }
    // Process-wide, so done while no other thread exists.
    std::env::set_var("PATH", engine::PATH);
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        tracing::debug!("disabling ctrl-alt-del: {e}");
    }
    if let Err(e) = init::set_hostname() {
        tracing::warn!("{e:#}");
    }
    if let Err(e) = net::loopback() {
        tracing::warn!("lo: {e:#}");
    }
    if params.net_user {
        if let Err(e) = net::user_network() {
            tracing::warn!("user network: {e:#}");
        }
    }
    init::set_sysctls();
    init::raise_limits();
    init::mount_cgroups()?;
    init::runtime_dirs()?;
    tracing::debug!("early boot done");
    Ok(params)
}

static LOG_INIT: std::sync::Once = std::sync::Once::new();

fn init_logging(debug: bool) {
    LOG_INIT.call_once(|| {
        let level = if debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_target(false)
            .with_timer(tracing_subscriber::fmt::time::uptime())
            .init();
    });
}

/// Milliseconds since the kernel started.
fn since_boot_ms() -> u128 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| Duration::from(t).as_millis())
        .unwrap_or(0)
}

/// Everything after early boot; returns only with a fatal error (shutdown never returns).
async fn run(params: BootParams, started: Instant) -> anyhow::Error {
    match boot(params, started).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn boot(params: BootParams, started: Instant) -> anyhow::Result<std::convert::Infallible> {
    let reaper = Reaper::start()?;
    let shutdown = Shutdown::new();
    watch_signals(&shutdown)?;

    // Before berthd starts: it may announce ports as soon as it restores containers.
    let control = control::Control::new(shutdown.clone());
    let ports = control::bind_ports_sock(engine::ANNOUNCE_SOCK)?;
    tokio::spawn(control.clone().serve_ports(ports));

    match relay::bind() {
        Ok((api, fwd)) => {
            tokio::spawn(relay::serve_api(api, Arc::from(relay::DOCKER_SOCK)));
            tokio::spawn(relay::serve_forward(fwd));
        }
        Err(e) => tracing::warn!("{e:#}: the engine is only reachable inside the VM"),
    }
    // `berth vm ssh`.
    match vsock::VsockListener::bind(vsock::CID_ANY, shell::SHELL_PORT) {
        Ok(l) => {
            tokio::spawn(shell::serve(l, reaper.clone()));
        }
        Err(e) => tracing::warn!("listening on vsock port {}: {e}", shell::SHELL_PORT),
    }

    tracing::debug!("listeners up");
    // The share and the data disk in parallel; berthd needs only the disk (the share matters
    // once a container bind-mounts from it), so it starts as soon as the disk is mounted.
    let share = params.share.clone();
    let share_task = tokio::task::spawn_blocking(move || match share {
        Some(p) => match disk::mount_share(&p) {
            Ok(()) => Some(p),
            Err(e) => {
                tracing::warn!("{e:#}");
                None
            }
        },
        None => None,
    });
    match disk::mount_data_disk(&reaper).await {
        Ok(d) => tracing::debug!("data disk: {d:?}"),
        Err(e) => {
            tracing::error!("{e:#}: keeping images and containers in memory instead");
            disk::mount_tmpfs()?;
        }
    }
    tracing::debug!("data disk ready");

    if !engine::installed() {
        tracing::error!("{} is missing from the image", engine::BERTHD_BIN);
    }
    let (state_tx, state_rx) = watch::channel(EngineState::Starting);
    let supervisor = engine::Supervisor {
        reaper: reaper.clone(),
        args: engine::berthd_args(&params, engine::announce_enabled()),
        state: state_tx,
        shutdown: shutdown.clone(),
        log_pipe: engine::start_log_forwarder()?,
    };
    let supervisor = tokio::spawn(supervisor.run());
    // "Ready" (console line, control message) also means the share is mounted, so nothing
    // bind-mounts from it before it is there.
    let (share_tx, share_rx) = watch::channel(None::<Option<String>>);
    tokio::spawn(async move {
        let s = share_task.await.unwrap_or(None);
        let _ = share_tx.send(Some(s));
    });
    {
        let mut share_rx = share_rx.clone();
        tokio::spawn(async move {
            let _ = share_rx.wait_for(|v| v.is_some()).await;
            tokio::spawn(report_ready(state_rx.clone(), started));
            control.run_host_channel(state_rx).await
        });
    }
    if params.debug {
        tokio::spawn(debug_shell(reaper.clone(), shutdown.clone()));
    }

    let reason = shutdown.wait().await;
    tracing::info!("shutdown requested: {reason}");
    if tokio::time::timeout(Duration::from_secs(15), supervisor)
        .await
        .is_err()
    {
        tracing::warn!("berthd's supervisor did not finish in time");
    }
    let mut share_rx = share_rx;
    let share = tokio::time::timeout(Duration::from_secs(5), share_rx.wait_for(|v| v.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|v| v.clone()))
        .flatten();
    power::power_off(&reason, share.as_deref()).await
}

/// SIGTERM / SIGINT (ctrl-alt-del once disabled in the kernel) ask for shutdown.
fn watch_signals(shutdown: &Shutdown) -> anyhow::Result<()> {
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
    ] {
        let mut s = signal(kind).with_context(|| format!("installing the {name} handler"))?;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if s.recv().await.is_some() {
                shutdown.request(&format!("{name} received"));
            }
        });
    }
    Ok(())
}

/// The console line tests and people look for, once, when berthd first answers.
async fn report_ready(mut state: watch::Receiver<EngineState>, started: Instant) {
    let mut first = true;
    loop {
        if let EngineState::Ready(version) = state.borrow_and_update().clone() {
            if first {
                init::console_line(&format!(
                    "berth-guest: ready in {} ms (berthd {version}; {} ms since berth-guest started)",
                    since_boot_ms(),
                    started.elapsed().as_millis()
                ));
                first = false;
            } else {
                tracing::info!("berthd is ready again");
            }
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

/// The console's real tty (job control needs a tty that can be a controlling terminal, which
/// /dev/console cannot).
fn console_tty() -> String {
    fs::read_to_string("/sys/class/tty/console/active")
        .ok()
        .and_then(|s| s.split_whitespace().last().map(|t| format!("/dev/{t}")))
        .filter(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| "/dev/console".to_string())
}

/// `berth.debug=1`: a root shell on the console, restarted when it exits.
async fn debug_shell(reaper: Arc<Reaper>, shutdown: Shutdown) {
    loop {
        let tty = console_tty();
        let spawned = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tty)
            .with_context(|| format!("opening {tty}"))
            .and_then(|f| {
                let mut c = Command::new("/bin/sh");
                c.env_clear()
                    .env("PATH", engine::PATH)
                    .env("HOME", "/root")
                    .env("TERM", "linux")
                    .env("PS1", "berth-vm# ")
                    .current_dir("/")
                    .stdin(Stdio::from(f.try_clone()?))
                    .stdout(Stdio::from(f.try_clone()?))
                    .stderr(Stdio::from(f));
                // SAFETY: runs in the forked child before exec and only makes async-signal-safe
                // syscalls (setsid, ioctl) on its own stdin.
                unsafe {
                    c.pre_exec(|| {
                        libc::setsid();
                        libc::ioctl(0, libc::TIOCSCTTY as _, 1);
                        Ok(())
                    });
                }
                Ok(reaper.spawn(&mut c)?)
            });
        match spawned {
            Ok((mut child, _)) => {
                tracing::info!("debug shell on {tty} (pid {})", child.pid);
                tokio::select! {
                    status = child.wait() => {
                        tracing::info!("debug shell exited ({})", reaper::describe(status));
                    }
                    _ = shutdown.wait() => {
                        // An interactive shell ignores SIGTERM: end its session right away.
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(-child.pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!("debug shell: {e:#}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait() => return,
        }
    }
}
