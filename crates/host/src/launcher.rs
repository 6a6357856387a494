//! Starting (and restarting) a local berthd when the app finds it stopped.
//!
//! The plan is chosen from what is installed, in the order a user expects:
//! the systemd unit installed by the package (through `pkexec` when the app
//! does not run as root, which shows the desktop's password prompt), the
//! bundled `berth` CLI (`berth engine start`), and finally the `berthd` binary
//! itself.  [`plan`] is a pure function of the facts so it can be tested.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::error::{HostError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub is_root: bool,
    pub systemd_unit: Option<String>,
    pub berth_cli: Option<PathBuf>,
    pub berthd: Option<PathBuf>,
    pub pkexec: Option<PathBuf>,
    /// The socket unit installed beside the service (stopped with it, or the next
    /// connection would start the engine again).
    pub systemd_socket: Option<String>,
    /// A live berthd's pid from the pidfile beside the socket (how the app starts it).
    pub engine_pid: Option<i32>,
    /// The socket the engine should listen on.
    pub socket: String,
    pub log: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What the user sees ("systemctl start berthd.service (asks for your password)").
    pub description: String,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Run detached (berthd itself); otherwise wait for the command to finish.
    pub detach: bool,
}

const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];
const UNITS: &[&str] = &[
    "berthd.service",
    "berth.service",
    "berthd.socket",
    "berth.socket",
];

pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Finds berthd: `$BERTHD_BIN`, next to this executable, on `PATH`, or where
/// the packages put it.
pub fn find_berthd() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTHD_BIN").map(PathBuf::from) {
        if is_executable(&p) {
            return Some(p);
        }
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let p = dir.join("berthd");
        if is_executable(&p) {
            return Some(p);
        }
    }
    which("berthd").or_else(|| {
        [
            "/usr/lib/berth/berthd",
            "/usr/libexec/berth/berthd",
            "/usr/local/bin/berthd",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
    })
}

pub fn gather(socket: &str, log: &str) -> Facts {
    let systemd_unit = if Path::new("/run/systemd/system").exists() {
        UNITS
            .iter()
            .find(|u| UNIT_DIRS.iter().any(|d| Path::new(d).join(u).exists()))
            .map(|u| u.to_string())
    } else {
        None
    };
    let systemd_socket = systemd_unit.as_ref().and_then(|u| {
        let sock = format!(
            "{}.socket",
            u.trim_end_matches(".service").trim_end_matches(".socket")
        );
        UNIT_DIRS
            .iter()
            .any(|d| Path::new(d).join(&sock).exists())
            .then_some(sock)
    });
    let engine_pid = Path::new(socket.trim_start_matches("unix://"))
        .parent()
        .and_then(|d| std::fs::read_to_string(d.join("berthd.pid")).ok())
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|&pid| pid > 0 && alive(pid));
    Facts {
        is_root: nix_is_root(),
        systemd_unit,
        systemd_socket,
        engine_pid,
        berth_cli: which("berth"),
        berthd: find_berthd(),
        pkexec: which("pkexec"),
        socket: socket.to_string(),
        log: log.to_string(),
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists; no memory is involved.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `program` as is when the app is root, else through pkexec (the desktop's password
/// prompt).
fn elevate(
    f: &Facts,
    program: PathBuf,
    args: Vec<String>,
    what: String,
    detach: bool,
) -> Result<Plan> {
    if f.is_root {
        Ok(Plan {
            description: what,
            program,
            args,
            detach,
        })
    } else if let Some(pk) = &f.pkexec {
        let mut a = vec![program.to_string_lossy().into_owned()];
        a.extend(args);
        Ok(Plan {
            description: format!("{what} (asks for your password)"),
            program: pk.clone(),
            args: a,
            detach,
        })
    } else {
        Err(HostError::io(format!(
            "{what} needs administrator rights and pkexec is not installed: run it as root"
        )))
    }
}

/// How to stop the engine: the systemd units (socket first, so no connection starts it
/// again), the berthd whose pidfile is beside the socket, or `berth engine stop`.
pub fn plan_stop(f: &Facts) -> Result<Plan> {
    if let Some(unit) = &f.systemd_unit {
        let mut args = vec!["stop".to_string()];
        args.extend(f.systemd_socket.iter().cloned());
        args.push(unit.clone());
        let what = format!("systemctl {}", args.join(" "));
        return elevate(f, PathBuf::from("systemctl"), args, what, false);
    }
    if let Some(pid) = f.engine_pid {
        return elevate(
            f,
            PathBuf::from("kill"),
            vec!["-TERM".into(), pid.to_string()],
            format!("kill -TERM {pid} (berthd)"),
            false,
        );
    }
    if let Some(cli) = &f.berth_cli {
        return Ok(Plan {
            description: "berth engine stop".into(),
            program: cli.clone(),
            args: vec!["engine".into(), "stop".into()],
            detach: false,
        });
    }
    Err(HostError::io(format!(
        "no way to stop the engine on {} was found: no systemd unit, no live pid in berthd.pid \
         beside the socket, and no berth CLI on PATH",
        f.socket
    )))
}

/// How to start the engine, or why it cannot be started from here.
pub fn plan(f: &Facts, restart: bool) -> Result<Plan> {
    let verb = if restart { "restart" } else { "start" };
    let elevate = |program: PathBuf, args: Vec<String>, what: String, detach: bool| {
        elevate(f, program, args, what, detach)
    };
    if let Some(unit) = &f.systemd_unit {
        return elevate(
            PathBuf::from("systemctl"),
            vec![verb.into(), unit.clone()],
            format!("systemctl {verb} {unit}"),
            false,
        );
    }
    if let Some(cli) = &f.berth_cli {
        return Ok(Plan {
            description: format!("berth engine {verb}"),
            program: cli.clone(),
            args: vec!["engine".into(), verb.into()],
            detach: false,
        });
    }
    if let Some(berthd) = &f.berthd {
        let sock = f.socket.trim_start_matches("unix://").to_string();
        let dir = Path::new(&sock)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/run/berth".into());
        let args = vec![
            "-H".to_string(),
            format!("unix://{sock}"),
            "--pidfile".into(),
            format!("{dir}/berthd.pid"),
        ];
        return elevate(
            berthd.clone(),
            args,
            format!("{} (socket {sock})", berthd.display()),
            true,
        );
    }
    Err(HostError::io(
        "berthd was not found (looked at $BERTHD_BIN, next to the app, on PATH and in /usr/lib/berth): \
         install Berth, or start the engine with scripts/up",
    ))
}

/// Runs a plan.  A detached berthd writes to the log file.
pub async fn run(plan: &Plan, log: &str) -> Result<()> {
    let mut cmd = tokio::process::Command::new(&plan.program);
    cmd.args(&plan.args).stdin(Stdio::null());
    if plan.detach {
        if let Some(dir) = Path::new(log).parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        match out {
            Ok(f) => {
                let f2 = f.try_clone()?;
                cmd.stdout(f).stderr(f2);
            }
            Err(_) => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        // The engine must outlive the app: its own session, not our child's fate.
        // SAFETY: the closure runs in the forked child before exec and only calls setsid,
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| HostError::io(format!("{}: {e}", plan.description)))?;
        drop(child);
        Ok(())
    } else {
        let out = cmd
            .output()
            .await
            .map_err(|e| HostError::io(format!("{}: {e}", plan.description)))?;
        if out.status.success() {
            Ok(())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(HostError::io(format!(
                "{} failed ({}): {}",
                plan.description,
                out.status,
                err.trim()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            is_root: false,
            systemd_unit: None,
            berth_cli: None,
            berthd: None,
            pkexec: Some("/usr/bin/pkexec".into()),
            systemd_socket: None,
            engine_pid: None,
            socket: "unix:///run/berth/docker.sock".into(),
            log: "/var/log/berth/berthd.log".into(),
        }
    }

    #[test]
    fn systemd_unit_first_through_pkexec() {
        let mut f = facts();
        f.systemd_unit = Some("berthd.service".into());
        f.berth_cli = Some("/usr/bin/berth".into());
        let p = plan(&f, false).unwrap();
        assert_eq!(p.program, PathBuf::from("/usr/bin/pkexec"));
        assert_eq!(p.args, vec!["systemctl", "start", "berthd.service"]);
        assert!(p.description.contains("password"));
        f.is_root = true;
        let p = plan(&f, true).unwrap();
        assert_eq!(p.program, PathBuf::from("systemctl"));
        assert_eq!(p.args, vec!["restart", "berthd.service"]);
    }

    #[test]
    fn cli_then_binary() {
        let mut f = facts();
        f.berth_cli = Some("/usr/bin/berth".into());
        f.berthd = Some("/usr/bin/berthd".into());
        assert_eq!(plan(&f, false).unwrap().args, vec!["engine", "start"]);
        f.berth_cli = None;
        f.is_root = true;
        let p = plan(&f, false).unwrap();
        assert_eq!(p.program, PathBuf::from("/usr/bin/berthd"));
        assert!(p.detach);
        assert_eq!(
            p.args[..2],
            [
                "-H".to_string(),
                "unix:///run/berth/docker.sock".to_string()
            ]
        );
        assert_eq!(p.args[3], "/run/berth/berthd.pid");
    }

    #[test]
    fn nothing_installed_is_explained() {
        let e = plan(&facts(), false).unwrap_err();
        assert!(e.message.contains("berthd was not found"));
        let mut f = facts();
        f.berthd = Some("/usr/bin/berthd".into());
        f.pkexec = None;
        let e = plan(&f, false).unwrap_err();
        assert!(e.message.contains("administrator"), "{}", e.message);
    }

    #[test]
    fn stop_plans() {
        let mut f = facts();
        f.berth_cli = Some("/usr/bin/berth".into());
        assert_eq!(plan_stop(&f).unwrap().args, vec!["engine", "stop"]);
        f.engine_pid = Some(4242);
        f.is_root = true;
        let p = plan_stop(&f).unwrap();
        assert_eq!(p.program, PathBuf::from("kill"));
        assert_eq!(p.args, vec!["-TERM", "4242"]);
        f.systemd_unit = Some("berth.service".into());
        f.systemd_socket = Some("berth.socket".into());
        f.is_root = false;
        let p = plan_stop(&f).unwrap();
        assert_eq!(p.program, PathBuf::from("/usr/bin/pkexec"));
        assert_eq!(
            p.args,
            vec!["systemctl", "stop", "berth.socket", "berth.service"]
        );
        let e = plan_stop(&facts()).unwrap_err();
        assert!(e.message.contains("no way to stop"), "{}", e.message);
    }
}
