//! Integration tests: real runc, a busybox bundle, the shim spawned through the client.
//! Run as root: `cargo nextest run -p berth-shim`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_shim::client::{
    close_stdin, read_frame, send_resize, send_stdin, spawn_shim, ShimClient, ShimError, SpawnOpts,
};
use berth_shim::protocol::{Status, STREAM_EXIT, STREAM_STDERR, STREAM_STDOUT};
use serde_json::{json, Value};
use tokio::net::UnixStream;
use tokio::time::timeout;

const RUNC: &str = "/usr/sbin/runc";
const T: Duration = Duration::from_secs(30);

struct Env {
    _dir: tempfile::TempDir,
    id: String,
    bundle: PathBuf,
    state: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Leave nothing behind when a test fails half-way.
        let _ = Command::new(RUNC)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn setup(name: &str, args: &[&str], tty: bool, pid_ns: bool) -> Env {
    let dir = tempfile::Builder::new()
        .prefix("bshim")
        .tempdir()
        .expect("tempdir");
    let id = format!("bst-{name}-{}", std::process::id());
    let bundle = dir.path().join("bundle");
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin).expect("mkdir rootfs");
    std::fs::copy("/usr/bin/busybox", bin.join("busybox")).expect("copy busybox");
    for l in ["sh", "echo", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(l)).expect("symlink");
    }
    let st = Command::new(RUNC)
        .arg("spec")
        .current_dir(&bundle)
        .status()
        .expect("runc spec");
    assert!(st.success());
    let cfg_path = bundle.join("config.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read config")).expect("json");
    cfg["process"]["args"] = json!(args);
    cfg["process"]["terminal"] = json!(tty);
    cfg["linux"]["cgroupsPath"] = json!(format!("/berth-test/{id}"));
    if !pid_ns {
        if let Some(ns) = cfg["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "pid");
        }
    }
    std::fs::write(&cfg_path, serde_json::to_vec_pretty(&cfg).expect("json")).expect("write");
    Env {
        id,
        bundle,
        state: dir.path().join("state"),
        root: dir.path().join("runc-root"),
        log: dir.path().join("container-json.log"),
        _dir: dir,
    }
}

fn opts(env: &Env, tty: bool, stdin: bool) -> SpawnOpts {
    let mut o = SpawnOpts::new(
        env!("CARGO_BIN_EXE_berth-shim"),
        env.id.clone(),
        &env.bundle,
        &env.state,
        &env.log,
    );
    o.runtime = RUNC.into();
    o.runtime_root = env.root.clone();
    o.tty = tty;
    o.stdin = stdin;
    o
}

async fn spawn(env: &Env, tty: bool, stdin: bool) -> ShimClient {
    timeout(T, spawn_shim(&opts(env, tty, stdin)))
        .await
        .expect("spawn timed out")
        .expect("spawn_shim");
    ShimClient::new(&env.state)
}

#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit: Option<Value>,
}

async fn collect(s: &mut UnixStream) -> Collected {
    let mut c = Collected::default();
    timeout(T, async {
        while let Some((stream, p)) = read_frame(s).await.expect("read frame") {
            match stream {
                STREAM_STDOUT => c.stdout.extend_from_slice(&p),
                STREAM_STDERR => c.stderr.extend_from_slice(&p),
                STREAM_EXIT => {
                    c.exit = Some(serde_json::from_slice(&p).expect("exit json"));
                }
                other => panic!("unexpected stream {other}"),
            }
        }
    })
    .await
    .expect("collect timed out");
    c
}

/// Reads stdout frames until `needle` has been seen; returns everything read.
async fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let mut out = Vec::new();
    timeout(T, async {
        loop {
            let (stream, p) = read_frame(s).await.expect("read frame").unwrap_or_else(|| {
                panic!(
                    "EOF waiting for {needle:?}: {:?}",
                    String::from_utf8_lossy(&out)
                )
            });
            assert_ne!(stream, STREAM_EXIT, "exited waiting for {needle:?}");
            out.extend_from_slice(&p);
            if String::from_utf8_lossy(&out).contains(needle) {
                break;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}"));
    String::from_utf8_lossy(&out).into_owned()
}

fn shim_pid(env: &Env) -> i32 {
    std::fs::read_to_string(env.state.join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid")
}

/// The shim process, its socket, the runc state and the cgroup are all gone.
async fn assert_cleaned(env: &Env, pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let cgroup = PathBuf::from(format!("/sys/fs/cgroup/memory/berth-test/{}", env.id));
    loop {
        let alive = Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        let left = [
            (alive, "shim process"),
            (env.state.join("shim.sock").exists(), "shim.sock"),
            (env.root.join(&env.id).exists(), "runc state"),
            (cgroup.exists(), "memory cgroup"),
        ];
        let remaining: Vec<_> = left.iter().filter(|(b, _)| *b).map(|(_, n)| *n).collect();
        if remaining.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: {remaining:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let exit: Value =
        serde_json::from_slice(&std::fs::read(env.state.join("exit.json")).expect("exit.json"))
            .expect("exit.json is json");
    assert!(exit["finished_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
}

fn log_entries(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(&env.log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("log line is json"))
        .collect()
}

#[tokio::test]
async fn output_log_and_exit_code() {
    let env = setup(
        "out",
        &["sh", "-c", "echo out1; echo err1 >&2; echo out2; exit 3"],
        false,
        true,
    );
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    let st = shim.state().await.expect("state");
    assert_eq!(st.status, Status::Created);
    assert!(st.pid > 0);
    assert!(st.exit.is_none());
    // Two attachers, both see everything.
    let mut a1 = shim.attach(false, true, true).await.expect("attach");
    let mut a2 = shim.attach(false, true, true).await.expect("attach");
    // Only stderr.
    let mut a3 = shim.attach(false, false, true).await.expect("attach");
    shim.start().await.expect("start");
    let (c1, c2, c3) = tokio::join!(collect(&mut a1), collect(&mut a2), collect(&mut a3));
    for c in [&c1, &c2] {
        assert_eq!(String::from_utf8_lossy(&c.stdout), "out1\nout2\n");
        assert_eq!(String::from_utf8_lossy(&c.stderr), "err1\n");
        assert_eq!(c.exit.as_ref().expect("exit frame")["exit_code"], 3);
    }
    assert!(c3.stdout.is_empty());
    assert_eq!(String::from_utf8_lossy(&c3.stderr), "err1\n");
    let exit = shim.wait().await.expect("wait");
    assert_eq!(exit.exit_code, 3);
    assert_eq!(exit.signal, None);
    assert!(!exit.oom_killed);
    assert_cleaned(&env, pid).await;

    let entries = log_entries(&env);
    let by = |s: &str| -> String {
        entries
            .iter()
            .filter(|e| e["stream"] == s)
            .map(|e| e["log"].as_str().expect("log").to_string())
            .collect()
    };
    assert_eq!(by("stdout"), "out1\nout2\n");
    assert_eq!(by("stderr"), "err1\n");
    assert_eq!(entries.len(), 3);
    for e in &entries {
        let t = e["time"].as_str().expect("time");
        assert_eq!(t.len(), "2026-11-28T13:00:00.123456789Z".len(), "{t}");
    }
    // The shim is gone: wait falls back to exit.json.
    assert_eq!(shim.wait().await.expect("wait after exit").exit_code, 3);
    assert!(matches!(shim.state().await, Err(ShimError::Connect { .. })));
}

#[tokio::test]
async fn stdin_through_cat() {
    let env = setup("cat", &["cat"], false, true);
    let shim = spawn(&env, false, true).await;
    let pid = shim_pid(&env);
    let mut s = shim.attach(true, true, true).await.expect("attach");
    shim.start().await.expect("start");
    send_stdin(&mut s, b"hello\n").await.expect("stdin");
    read_until(&mut s, "hello\n").await;
    send_stdin(&mut s, b"partial").await.expect("stdin");
    read_until(&mut s, "partial").await;
    close_stdin(&mut s).await.expect("close");
    let c = collect(&mut s).await;
    assert_eq!(c.exit.expect("exit")["exit_code"], 0);
    assert_cleaned(&env, pid).await;
    let logs: String = log_entries(&env)
        .iter()
        .map(|e| e["log"].as_str().expect("log").to_string())
        .collect();
    assert_eq!(logs, "hello\npartial");
}

#[tokio::test]
async fn tty_output_and_resize() {
    let env = setup("tty", &["sh"], true, true);
    let shim = spawn(&env, true, true).await;
    let pid = shim_pid(&env);
    let mut s = shim.attach(true, true, true).await.expect("attach");
    shim.start().await.expect("start");
    shim.resize(20, 80).await.expect("resize");
    send_stdin(&mut s, b"busybox stty size; echo E$((1+1))RR >&2\n")
        .await
        .expect("stdin");
    // stderr goes through the pty too, as stream 1.
    let out = read_until(&mut s, "E2RR").await;
    assert!(out.contains("20 80"), "{out}");
    send_resize(&mut s, 30, 100).await.expect("resize frame");
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_stdin(&mut s, b"busybox stty size\n")
        .await
        .expect("stdin");
    read_until(&mut s, "30 100").await;
    send_stdin(&mut s, b"exit 5\n").await.expect("stdin");
    let c = collect(&mut s).await;
    assert!(c.stderr.is_empty());
    assert_eq!(c.exit.expect("exit")["exit_code"], 5);
    assert_cleaned(&env, pid).await;
    let entries = log_entries(&env);
    assert!(entries.iter().all(|e| e["stream"] == "stdout"));
    let all: String = entries
        .iter()
        .map(|e| e["log"].as_str().expect("log").to_string())
        .collect();
    assert!(all.contains("30 100"), "{all}");
}

#[tokio::test]
async fn kill_sigterm_is_143() {
    // Without a PID namespace `sleep` is not an init and dies from SIGTERM's default action.
    let env = setup("term", &["sleep", "100"], false, false);
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    shim.start().await.expect("start");
    assert_eq!(shim.state().await.expect("state").status, Status::Running);
    shim.kill(libc::SIGTERM).await.expect("kill");
    let exit = timeout(T, shim.wait())
        .await
        .expect("wait timeout")
        .expect("wait");
    assert_eq!(exit.exit_code, 143);
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert_cleaned(&env, pid).await;
}

#[tokio::test]
async fn pause_resume_kill9() {
    let env = setup("pause", &["sleep", "100"], false, true);
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    shim.start().await.expect("start");
    shim.pause().await.expect("pause");
    assert_eq!(shim.state().await.expect("state").status, Status::Paused);
    shim.resume().await.expect("resume");
    assert_eq!(shim.state().await.expect("state").status, Status::Running);
    let waiter = {
        let shim = shim.clone();
        tokio::spawn(async move { shim.wait().await })
    };
    shim.kill(libc::SIGKILL).await.expect("kill");
    let exit = timeout(T, waiter)
        .await
        .expect("wait timeout")
        .expect("join")
        .expect("wait");
    assert_eq!(exit.exit_code, 137);
    assert_eq!(exit.signal, Some(9));
    assert_cleaned(&env, pid).await;
}

fn process(args: &[&str]) -> Value {
    json!({
        "args": args,
        "cwd": "/",
        "env": ["PATH=/bin", "TERM=xterm"],
        "user": {"uid": 0, "gid": 0},
    })
}

#[tokio::test]
async fn exec_in_running_container() {
    let env = setup("exec", &["sleep", "100"], false, true);
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    shim.start().await.expect("start");

    let (epid, mut s) = shim
        .exec("e1", process(&["echo", "hi"]), false, false)
        .await
        .expect("exec");
    assert!(epid > 0);
    let c = collect(&mut s).await;
    assert_eq!(String::from_utf8_lossy(&c.stdout), "hi\n");
    assert_eq!(c.exit.expect("exit")["exit_code"], 0);

    let (_, mut s) = shim
        .exec(
            "e2",
            process(&["sh", "-c", "echo oops >&2; exit 7"]),
            false,
            false,
        )
        .await
        .expect("exec");
    let c = collect(&mut s).await;
    assert_eq!(String::from_utf8_lossy(&c.stderr), "oops\n");
    assert_eq!(c.exit.expect("exit")["exit_code"], 7);

    // stdin through an exec'd cat
    let (_, mut s) = shim
        .exec("e3", process(&["cat"]), false, true)
        .await
        .expect("exec");
    send_stdin(&mut s, b"ping\n").await.expect("stdin");
    read_until(&mut s, "ping\n").await;
    close_stdin(&mut s).await.expect("close");
    let c = collect(&mut s).await;
    assert_eq!(c.exit.expect("exit")["exit_code"], 0);

    // missing binary
    let (epid, mut s) = shim
        .exec("e4", process(&["nosuchbin"]), false, false)
        .await
        .expect("exec");
    assert_eq!(epid, 0);
    let c = collect(&mut s).await;
    let exit = c.exit.expect("exit");
    assert_eq!(exit["exit_code"], 127);
    let err = exit["error"].as_str().expect("error");
    assert!(
        err.contains(r#"exec: "nosuchbin": executable file not found in $PATH"#),
        "{err}"
    );

    // tty exec with resize
    let (_, mut s) = shim
        .exec("e5", process(&["sh"]), true, true)
        .await
        .expect("exec");
    shim.exec_resize("e5", 33, 111).await.expect("exec_resize");
    send_stdin(&mut s, b"busybox stty size\n")
        .await
        .expect("stdin");
    read_until(&mut s, "33 111").await;
    send_resize(&mut s, 44, 122).await.expect("resize");
    tokio::time::sleep(Duration::from_millis(100)).await;
    send_stdin(&mut s, b"busybox stty size; exit 4\n")
        .await
        .expect("stdin");
    read_until(&mut s, "44 122").await;
    let c = collect(&mut s).await;
    assert_eq!(c.exit.expect("exit")["exit_code"], 4);
    assert!(shim.exec_resize("e5", 1, 1).await.is_err());

    // detached exec: the client leaves at once, the process runs and is reaped
    let (_, s) = shim
        .exec("e6", process(&["sleep", "0.2"]), false, false)
        .await
        .expect("exec");
    drop(s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(shim.state().await.expect("state").status, Status::Running);

    // Exec output is not in the container log.
    assert!(std::fs::read_to_string(&env.log).expect("log").is_empty());

    shim.kill(libc::SIGKILL).await.expect("kill");
    assert_eq!(shim.wait().await.expect("wait").exit_code, 137);
    assert_cleaned(&env, pid).await;
    let zombies = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ps -eo stat,args | grep -c '^Z.*{}' || true",
            env.id
        ))
        .output()
        .expect("ps");
    assert_eq!(String::from_utf8_lossy(&zombies.stdout).trim(), "0");
}

#[tokio::test]
async fn survives_client_disconnect() {
    let env = setup(
        "detach",
        &["sh", "-c", "echo before; sleep 1; echo after; exit 2"],
        false,
        true,
    );
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    let mut s = shim.attach(false, true, true).await.expect("attach");
    shim.start().await.expect("start");
    read_until(&mut s, "before").await;
    drop(s);
    // A fresh client (as after a berthd restart) finds it running.
    let shim2 = ShimClient::new(&env.state);
    assert_eq!(shim2.state().await.expect("state").status, Status::Running);
    let mut s = shim2.attach(false, true, true).await.expect("re-attach");
    let c = collect(&mut s).await;
    assert_eq!(String::from_utf8_lossy(&c.stdout), "after\n");
    assert_eq!(c.exit.expect("exit")["exit_code"], 2);
    assert_cleaned(&env, pid).await;
    let logs: String = log_entries(&env)
        .iter()
        .map(|e| e["log"].as_str().expect("log").to_string())
        .collect();
    assert_eq!(logs, "before\nafter\n");
}

#[tokio::test]
async fn create_error_is_reported() {
    let env = setup("enoent", &["nosuchbin"], false, true);
    let err = timeout(T, spawn_shim(&opts(&env, false, false)))
        .await
        .expect("timeout")
        .expect_err("create must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(r#"exec: "nosuchbin": executable file not found in $PATH"#),
        "{msg}"
    );
    assert!(matches!(err, ShimError::Spawn(_)));
    assert!(!env.state.join("shim.sock").exists());
    assert!(!env.root.join(&env.id).exists());
}

#[tokio::test]
async fn slow_attacher_does_not_block() {
    let env = setup(
        "slow",
        &[
            "sh",
            "-c",
            "X=$(busybox head -c 1000 /dev/zero | busybox tr '\\0' a); \
             busybox yes $X | busybox head -c 4000000; echo end",
        ],
        false,
        true,
    );
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    // Never read from this one.
    let _stuck = shim.attach(false, true, true).await.expect("attach");
    let mut reader = shim.attach(false, true, true).await.expect("attach");
    shim.start().await.expect("start");
    let c = collect(&mut reader).await;
    let exit = timeout(T, shim.wait())
        .await
        .expect("wait timeout")
        .expect("wait");
    assert_eq!(exit.exit_code, 0);
    // The reading attacher may itself be dropped if the test machine is slow, but whatever
    // it got is a prefix of the output.
    assert!(c.stdout.iter().all(|b| b"aend\n".contains(b)));
    assert_cleaned(&env, pid).await;
    // Lines split across reads are logged as partial entries, so compare the content.
    let all: String = log_entries(&env)
        .iter()
        .map(|e| e["log"].as_str().expect("log").to_string())
        .collect();
    assert_eq!(all.len(), 4_000_004);
    assert!(all.ends_with("aaend\n"));
}

#[tokio::test]
async fn oom_kill_is_recorded() {
    let env = setup(
        "oom",
        &[
            "sh",
            "-c",
            "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
        ],
        false,
        true,
    );
    let cfg_path = env.bundle.join("config.json");
    let mut cfg: Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).expect("read")).expect("json");
    let limit = 16 * 1024 * 1024;
    cfg["linux"]["resources"]["memory"] = json!({"limit": limit, "swap": limit});
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    shim.start().await.expect("start");
    let exit = timeout(T, shim.wait())
        .await
        .expect("wait timeout")
        .expect("wait");
    assert_eq!(exit.exit_code, 137);
    assert!(exit.oom_killed, "{exit:?}");
    assert_cleaned(&env, pid).await;
}

/// `wait` answers at the exit; the answered connection ends when the shim has exited, and by
/// then the runtime's state and the cgroups are gone (the shim's own clean-up, no runc run).
#[tokio::test]
async fn wait_then_shim_gone() {
    for pid_ns in [true, false] {
        let name = if pid_ns { "gone" } else { "gonehost" };
        let env = setup(name, &["sh", "-c", "true"], false, pid_ns);
        let shim = spawn(&env, false, false).await;
        let pid = shim_pid(&env);
        assert!(
            env.root.join(&env.id).join("exec.fifo").exists(),
            "created container without runc's exec.fifo"
        );
        shim.start().await.expect("start");
        assert!(
            !env.root.join(&env.id).join("exec.fifo").exists(),
            "exec.fifo left after start"
        );
        let (exit, gone) = timeout(T, shim.wait_exit())
            .await
            .expect("wait timed out")
            .expect("wait");
        assert_eq!(exit.exit_code, 0);
        timeout(T, gone.wait()).await.expect("shim did not exit");
        assert!(!env.root.join(&env.id).exists(), "runc state left");
        assert_cleaned(&env, pid).await;
    }
}

/// A start through the exec fifo of a process that cannot run: the failure is the exit.
#[tokio::test]
async fn start_of_a_failing_process() {
    let env = setup("fail", &["sh", "-c", "exit 7"], false, true);
    let shim = spawn(&env, false, false).await;
    let pid = shim_pid(&env);
    shim.start().await.expect("start");
    let exit = timeout(T, shim.wait())
        .await
        .expect("wait timed out")
        .expect("wait");
    assert_eq!(exit.exit_code, 7);
    assert_cleaned(&env, pid).await;
}
