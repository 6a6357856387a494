//! `berth engine start|stop|restart|status|logs`: the native engine (berthd).

use crate::client::{self, exit, Target};
use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct Paths {
    /// Engine API socket
    #[arg(long, env = "BERTH_SOCKET", default_value = "/run/berth/docker.sock")]
    socket: PathBuf,
    /// Engine data root
    #[arg(long, env = "BERTH_DATA_ROOT", default_value = "/var/lib/berth")]
    data_root: PathBuf,
    /// Engine pid file
    #[arg(long, env = "BERTH_PIDFILE", default_value = "/run/berth/berthd.pid")]
    pidfile: PathBuf,
    /// Engine log file
    #[arg(long, env = "BERTH_LOG", default_value = "/var/log/berth/berthd.log")]
    log: PathBuf,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    #[command(flatten)]
    paths: Paths,
    /// Registry mirror for docker.io (repeatable)
    #[arg(long = "registry-mirror")]
    registry_mirror: Vec<String>,
    /// Seconds to wait for the engine to answer
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Run the engine in Berth's Linux VM instead (same as `berth vm start`)
    #[arg(long)]
    vm: bool,
    /// More arguments for berthd
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    #[command(flatten)]
    paths: Paths,
    /// Seconds to wait for the engine to exit
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// The engine in Berth's Linux VM (same as `berth vm stop|status`)
    #[arg(long)]
    vm: bool,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    paths: Paths,
    /// Follow the log
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines to show from the end
    #[arg(short = 'n', long)]
    tail: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum EngineCmd {
    /// Start berthd in the background and wait until it answers
    Start(StartArgs),
    /// Stop berthd (SIGTERM) and wait for it to exit
    Stop(StopArgs),
    /// Stop and start berthd
    Restart(StartArgs),
    /// Say whether berthd runs, with version, pid, socket and data root
    Status(StopArgs),
    /// Print (or follow) the engine log
    Logs(LogsArgs),
}

pub async fn run(c: EngineCmd) -> Result<i32> {
    use crate::vm::{VmCmd, VmStartArgs, VmStatusArgs};
    let vm_start = |a: &StartArgs| VmStartArgs {
        registry_mirror: a.registry_mirror.clone(),
        timeout: a.timeout.max(300),
        ..Default::default()
    };
    match c {
        EngineCmd::Start(a) if a.vm => crate::vm::run(VmCmd::Start(vm_start(&a))).await,
        EngineCmd::Stop(a) if a.vm => crate::vm::run(VmCmd::Stop { timeout: a.timeout }).await,
        EngineCmd::Restart(a) if a.vm => {
            crate::vm::run(VmCmd::Stop { timeout: a.timeout }).await?;
            crate::vm::run(VmCmd::Start(vm_start(&a))).await
        }
        EngineCmd::Status(a) if a.vm => {
            crate::vm::run(VmCmd::Status(VmStatusArgs { json: false })).await
        }
        EngineCmd::Start(a) => start(&a).await,
        EngineCmd::Stop(a) => stop(&a.paths, a.timeout).await,
        EngineCmd::Restart(a) => {
            stop(&a.paths, a.timeout).await?;
            start(&a).await
        }
        EngineCmd::Status(a) => status(&a.paths).await,
        EngineCmd::Logs(a) => logs(&a).await,
    }
}

fn target(p: &Paths) -> Target {
    Target {
        host: format!("unix://{}", p.socket.display()),
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // A zombie (exited, not reaped) counts as gone.
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(state) = s
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
        {
            return state != "Z" && state != "X";
        }
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

pub async fn ping(t: &Target) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(3), client::raw(t, "GET", "/_ping")).await,
        Ok(Ok((200, _)))
    )
}

fn find_berthd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTHD_BIN") {
        return Some(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join("berthd");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("berthd"))
        .find(|p| p.is_file())
}

fn tail_lines(path: &Path, n: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn start(a: &StartArgs) -> Result<i32> {
    let p = &a.paths;
    let t = target(p);
    if let Some(pid) = read_pid(&p.pidfile).filter(|&pid| alive(pid)) {
        if ping(&t).await {
            println!("Engine is already running (pid {pid}): {}", t.host);
            return Ok(0);
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(exit(
            1,
            "berth engine start: the engine runs as root: try `sudo berth engine start`",
        ));
    }
    let bin = find_berthd().ok_or_else(|| {
        exit(
            1,
            "berthd not found next to berth nor on PATH (set BERTHD_BIN to its path)",
        )
    })?;
    for d in [p.socket.parent(), p.pidfile.parent(), p.log.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .with_context(|| format!("opening {}", p.log.display()))?;
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("-H")
        .arg(&t.host)
        .arg("--data-root")
        .arg(&p.data_root)
        .arg("--pidfile")
        .arg(&p.pidfile);
    for m in &a.registry_mirror {
        cmd.arg("--registry-mirror").arg(m);
    }
    cmd.args(&a.extra)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if std::env::var_os("BERTH_SHIM_BIN").is_none() {
        if let Some(shim) = bin
            .parent()
            .map(|d| d.join("berth-shim"))
            .filter(|s| s.is_file())
        {
            cmd.env("BERTH_SHIM_BIN", shim);
        }
    }
    // Own session: the engine outlives this command and its terminal.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(exit(
                1,
                format!(
                    "berthd exited ({status}) before answering; last log lines ({}):\n{}",
                    p.log.display(),
                    tail_lines(&p.log, 20)
                ),
            ));
        }
        if ping(&t).await {
            break;
        }
        if Instant::now() > deadline {
            return Err(exit(
                1,
                format!(
                    "berthd (pid {pid}) did not answer on {} within {}s; see {}",
                    t.host,
                    a.timeout,
                    p.log.display()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("Engine started (pid {pid}): {}", t.host);
    Ok(0)
}

async fn stop(p: &Paths, timeout: u64) -> Result<i32> {
    let Some(pid) = read_pid(&p.pidfile).filter(|&pid| alive(pid)) else {
        println!("Engine is not running");
        return Ok(0);
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .with_context(|| format!("signalling berthd (pid {pid})"))?;
    let deadline = Instant::now() + Duration::from_secs(timeout);
    while alive(pid) {
        if Instant::now() > deadline {
            return Err(exit(
                1,
                format!("berthd (pid {pid}) did not exit within {timeout}s"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("Engine stopped");
    Ok(0)
}

async fn status(p: &Paths) -> Result<i32> {
    let t = target(p);
    let pid = read_pid(&p.pidfile).filter(|&pid| alive(pid));
    if !ping(&t).await {
        println!("Engine:    stopped");
        if let Some(pid) = pid {
            println!("PID:       {pid} (not answering on {})", t.host);
        }
        println!("Socket:    {}", t.host);
        return Ok(3);
    }
    let version = client::get_json(&t, "/version").await.ok().flatten();
    let info = client::get_json(&t, "/info").await.ok().flatten();
    let s = |v: &Option<serde_json::Value>, k: &str| {
        v.as_ref()
            .and_then(|v| v.pointer(k))
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    let berth_version = version
        .as_ref()
        .and_then(|v| v.get("Components"))
        .and_then(|c| c.as_array())
        .and_then(|c| {
            c.iter()
                .find(|x| x.get("Name").and_then(|n| n.as_str()) == Some("berthd"))
        })
        .and_then(|x| x.get("Version"))
        .and_then(|x| x.as_str())
        .map(str::to_string)
        .unwrap_or_else(|| s(&version, "/Version"));
    println!("Engine:    running");
    println!(
        "Version:   {} (API {})",
        berth_version,
        s(&version, "/ApiVersion")
    );
    match pid {
        Some(pid) => println!("PID:       {pid}"),
        None => println!(
            "PID:       unknown (no pid file at {})",
            p.pidfile.display()
        ),
    }
    println!("Socket:    {}", t.host);
    let root = s(&info, "/DockerRootDir");
    println!(
        "Data root: {}",
        if root.is_empty() {
            p.data_root.display().to_string()
        } else {
            root
        }
    );
    Ok(0)
}

async fn logs(a: &LogsArgs) -> Result<i32> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let path = &a.paths.log;
    let mut f = std::fs::File::open(path).map_err(|e| {
        exit(
            1,
            format!("cannot open the engine log {}: {e}", path.display()),
        )
    })?;
    let mut out = std::io::stdout();
    match a.tail {
        Some(n) => {
            let t = tail_lines(path, n);
            if !t.is_empty() {
                writeln!(out, "{t}")?;
            }
            f.seek(SeekFrom::End(0))?;
        }
        None => {
            std::io::copy(&mut f, &mut out)?;
        }
    }
    out.flush()?;
    if !a.follow {
        return Ok(0);
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            // Truncated or rotated: start again from the beginning.
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if len < f.stream_position()? {
                f = std::fs::File::open(path)?;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
}
