//! Test harness: a private docker-registry with the test images pushed, a
//! private berthd using it as its docker.io mirror, and helpers that run
//! `berth` and the real `docker` CLI against that engine.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn berth_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berth"))
}

fn target_debug() -> PathBuf {
    berth_bin().parent().expect("target dir").to_path_buf()
}

pub fn docker_bin() -> PathBuf {
    std::env::var_os("DOCKER_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/docker"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 32];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf[9..12] == *b"200")
}

pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub struct Registry {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let cfg = dir.path().join("config.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new(
            std::env::var("BERTH_REGISTRY_BIN")
                .unwrap_or_else(|_| "/usr/bin/docker-registry".into()),
        )
        .arg("serve")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("docker-registry (Debian package docker-registry) must be installed");
        let reg = Registry {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http_get_ok(port, "/v2/") {
            assert!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let st = Command::new("python3")
            .arg(repo_root().join("tests/images/build.py"))
            .arg("--push")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .status()
            .expect("python3");
        assert!(st.success(), "tests/images/build.py --push failed");
        reg
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private engine (and, by default, its registry).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub host: String,
    pub docker_config: PathBuf,
    pub registry: Option<Registry>,
    berthd: Option<Child>,
}

impl Env {
    pub fn new() -> Env {
        Self::with_registry(Some(Registry::start()))
    }

    pub fn with_registry(registry: Option<Registry>) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("berth-cli-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let sock = dir.path().join("docker.sock");
        let docker_config = dir.path().join("docker-config");
        std::fs::create_dir_all(&docker_config).expect("docker config dir");
        let mut env = Env {
            host: format!("unix://{}", sock.display()),
            sock,
            docker_config,
            registry,
            berthd: None,
            dir,
        };
        env.start_engine();
        env
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start_engine(&mut self) {
        let log = std::fs::File::create(self.path("berthd.log")).expect("log");
        let mut cmd = Command::new(target_debug().join("berthd"));
        cmd.arg("-H")
            .arg(&self.host)
            .arg("--data-root")
            .arg(self.path("root"))
            .arg("--pidfile")
            .arg(self.path("berthd.pid"));
        if let Some(r) = &self.registry {
            cmd.arg("--registry-mirror")
                .arg(format!("http://127.0.0.1:{}", r.port));
        }
        let child = cmd
            .env("BERTH_SHIM_BIN", target_debug().join("berth-shim"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("berthd must be built (cargo build --workspace)");
        self.berthd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut s) = std::os::unix::net::UnixStream::connect(&self.sock) {
                let _ = s.write_all(b"GET /_ping HTTP/1.0\r\n\r\n");
                let mut b = String::new();
                let _ = s.read_to_string(&mut b);
                if b.contains("200") {
                    return;
                }
            }
            if let Some(c) = self.berthd.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("berthd exited: {st}\n{}", self.log());
                }
            }
            assert!(Instant::now() < deadline, "berthd did not answer");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("berthd.log")).unwrap_or_default()
    }

    pub fn mirror(&self) -> String {
        format!(
            "http://127.0.0.1:{}",
            self.registry.as_ref().map(|r| r.port).unwrap_or(0)
        )
    }

    fn command(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("DOCKER_") || k.starts_with("BERTH_") {
                c.env_remove(k);
            }
        }
        c.env("DOCKER_HOST", &self.host)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env("DOCKER_CLI_HINTS", "false")
            .stdin(Stdio::null());
        c
    }

    pub fn run_cmd(mut c: Command) -> Out {
        let o = c.output().expect("spawn");
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn berth(&self, args: &[&str]) -> Out {
        Self::run_cmd(self.command(&berth_bin(), args))
    }

    pub fn berth_cmd(&self, args: &[&str]) -> Command {
        self.command(&berth_bin(), args)
    }

    pub fn docker(&self, args: &[&str]) -> Out {
        Self::run_cmd(self.command(&docker_bin(), args))
    }

    pub fn docker_cmd(&self, args: &[&str]) -> Command {
        self.command(&docker_bin(), args)
    }

    /// Run the same call with both CLIs: same exit code, same stdout, and the
    /// same stderr once "docker" is read as "berth". Returns berth's output.
    pub fn same(&self, args: &[&str]) -> Out {
        let d = self.docker(args);
        let b = self.berth(args);
        assert_eq!(
            b.code, d.code,
            "exit codes differ for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert_eq!(
            b.stdout, d.stdout,
            "stdout differs for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert_eq!(
            norm_err(&b.stderr),
            norm_err(&d.stderr),
            "stderr differs for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        b
    }

    /// For a call that changes state: docker runs first, then `reset`
    /// restores the state, then berth runs; the outputs must be the same.
    pub fn same_after(&self, args: &[&str], reset: &[&[&str]]) -> Out {
        let d = self.docker(args);
        for r in reset {
            let o = self.berth(r);
            assert_eq!(o.code, 0, "reset {r:?} failed: {o:?}");
        }
        let b = self.berth(args);
        assert_eq!(
            b.code, d.code,
            "exit codes differ for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert_eq!(
            ids(&b.stdout),
            ids(&d.stdout),
            "stdout differs for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert_eq!(
            ids(&norm_err(&b.stderr)),
            ids(&norm_err(&d.stderr)),
            "stderr differs for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        b
    }

    /// Like `same` but comparing outputs after `f` (for IDs, times).
    pub fn same_with(&self, args: &[&str], f: impl Fn(&str) -> String) -> Out {
        let d = self.docker(args);
        let b = self.berth(args);
        assert_eq!(
            b.code, d.code,
            "exit codes differ for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert_eq!(
            f(&b.stdout),
            f(&d.stdout),
            "stdout differs for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        assert_eq!(
            f(&norm_err(&b.stderr)),
            f(&norm_err(&d.stderr)),
            "stderr differs for {args:?}\nberth: {b:?}\ndocker: {d:?}"
        );
        b
    }

    pub fn stop_engine(&mut self) {
        if let Some(mut c) = self.berthd.take() {
            // Containers first, so the engine does not leave them running.
            let _ = Command::new(berth_bin())
                .args(["-H", &self.host, "rm", "-f"])
                .args(
                    self.berth(&["ps", "-aq"])
                        .stdout
                        .split_whitespace()
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                )
                .output();
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_engine();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("----- berthd log tail -----");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Docker's hint lines and program name differ; the rest must match.
pub fn norm_err(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("time=") && *l != "exit status 1")
        .map(|l| l.replace("docker", "berth"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Replace 64- and 12-hex IDs with "ID".
pub fn ids(s: &str) -> String {
    let mut out = String::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let mut j = i;
        while j < b.len() && b[j].is_ascii_hexdigit() && !b[j].is_ascii_uppercase() {
            j += 1;
        }
        if j - i == 64 || j - i == 12 {
            out.push_str("ID");
            i = j;
        } else if j > i {
            out.extend(&b[i..j]);
            i = j;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
