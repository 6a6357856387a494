//! Commands of the seed walkthrough (shared/seed/docker-notes.md,
//! tests/compat/test_seed_berth_cli.py) where `berth` once differed from docker:
//! `port`, `run --pid`, signals proxied to an attached container, and image
//! reference errors. Each compared with the real docker CLI against the same berthd.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn pull(env: &Env, image: &str) {
    let o = env.berth(&["pull", "-q", image]);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn port_lists_and_looks_up_mappings() {
    let env = Env::new();
    pull(&env, "busybox");
    let p = free_port().to_string();
    let o = env.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &format!("{p}:8080"),
        "-p",
        "127.0.0.1::81/udp",
        "-p",
        "9000",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = env.berth(&["run", "-d", "--name", "plain", "busybox", "sleep", "300"]);
    assert_eq!(o.code, 0, "{o:?}");

    // the notes' `docker port webserver`
    let all = env.same(&["port", "web"]);
    assert!(
        all.stdout.contains(&format!("8080/tcp -> 0.0.0.0:{p}\n")),
        "{all:?}"
    );
    env.same(&["port", "web", ""]);
    env.same(&["port", "web", "8080"]);
    env.same(&["port", "web", "8080/tcp"]);
    env.same(&["port", "web", "81/udp"]);
    env.same(&["port", "web", "9000"]);
    // not published, not a port, no such container, no mappings
    env.same(&["port", "web", "81"]);
    env.same(&["port", "web", "8080/udp"]);
    env.same(&["port", "web", "abc"]);
    env.same(&["port", "web", "99999"]);
    env.same(&["port", "web", "/udp"]);
    env.same(&["port", "nosuch"]);
    env.same(&["port", "plain"]);
    let o = env.berth(&["rm", "-f", "web", "plain"]);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn run_pid_host() {
    let env = Env::new();
    pull(&env, "busybox");
    // the notes' `docker run -it --privileged --pid=host debian nsenter -t 1 ...`: the host's
    // processes are visible (many more than the container's own)
    let o = env.same(&[
        "run",
        "--rm",
        "--privileged",
        "--pid=host",
        "busybox",
        "sh",
        "-c",
        "echo $(( $(ls -d /proc/[0-9]* | wc -l) > 5 ))",
    ]);
    assert_eq!(o.stdout, "1\n", "{o:?}");
    env.same(&["run", "--rm", "busybox", "sh", "-c", "echo $$"]);
    env.same(&["run", "--rm", "--pid", "bogus", "busybox", "true"]);
    env.same(&["run", "--rm", "--pid=container:", "busybox", "true"]);
}

const TRAP: &str = "trap 'echo got INT; exit 7' INT; echo ready; while :; do sleep 0.2; done";

/// Start `cmd`, wait for "ready" on its stdout, send it SIGINT, and return its exit code
/// (-1: killed by the signal) and everything it printed.
fn interrupt(mut cmd: Command) -> (i32, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("read");
    assert_eq!(first, "ready\n");
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("kill");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the CLI did not exit after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    (status.code().unwrap_or(-1), first + &rest)
}

fn state(env: &Env, name: &str) -> String {
    env.berth(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        name,
    ])
    .stdout
}

#[test]
fn attached_run_and_start_proxy_signals() {
    let env = Env::new();
    pull(&env, "busybox");
    // the notes' `docker run redis` then Ctrl-C: SIGINT goes to the container
    let d = interrupt(env.docker_cmd(&["run", "--name", "d1", "busybox", "sh", "-c", TRAP]));
    let b = interrupt(env.berth_cmd(&["run", "--name", "b1", "busybox", "sh", "-c", TRAP]));
    assert_eq!(b, d);
    assert_eq!(b, (7, "ready\ngot INT\n".to_string()));
    assert_eq!(state(&env, "b1"), state(&env, "d1"));

    // `start -a` forwards them too when the container has no TTY ("Attach STDOUT/STDERR and
    // forward signals").  Not compared: docker 28.2's CLI ends on the SIGINT before its
    // forwarder sends it (exit 0, the container runs on), which is not what it documents.
    let b = interrupt(env.berth_cmd(&["start", "-a", "b1"]));
    assert_eq!(b, (7, "ready\ngot INT\n".to_string()));
    assert_eq!(state(&env, "b1"), "exited 7\n");

    // --sig-proxy=false: the signal is not forwarded; it ends the CLI, the container runs on.
    // (Not compared either: docker 28.2 ignores a first SIGINT there.)
    let b = interrupt(env.berth_cmd(&[
        "run",
        "--sig-proxy=false",
        "--name",
        "b2",
        "busybox",
        "sh",
        "-c",
        TRAP,
    ]));
    assert_eq!(b, (-1, "ready\n".to_string()));
    assert_eq!(state(&env, "b2"), "running 0\n");
    let o = env.berth(&["rm", "-f", "d1", "b1", "b2"]);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn reference_format_errors_match_docker() {
    let env = Env::new();
    // the notes' `docker pull jadedjelly/Wit-demo:v2`
    let upper_digest = format!("busybox@sha256:{}", "A".repeat(64));
    let md5 = format!("busybox@md5:{}", "a".repeat(64));
    for r in [
        "jadedjelly/Wit-demo:v2",
        "Redis",
        "localhost:5000/Foo:v1",
        "index.docker.io/Foo",
        "redis:",
        "a b",
        "",
        "Foo@sha256:abc",
        "busybox@sha256:abc",
        &upper_digest,
        &md5,
    ] {
        env.same(&["pull", r]);
    }
    // upper case is fine in a tag
    pull(&env, "busybox");
    env.same(&["tag", "busybox", "mybox:V1"]);
    // (one image, two repositories: docker's row order between them is Go map order)
    let sorted = |s: &str| {
        let mut l: Vec<&str> = s.lines().collect();
        l.sort();
        l.join("\n")
    };
    env.same_with(&["images", "mybox"], sorted);
    env.same(&["tag", "busybox", "jadedjelly/Wit-demo:v2"]);
    env.same(&["tag", "Busybox", "x:1"]);
    env.same(&["tag", "busybox", "x:"]);
    let digest = format!("x@sha256:{}", "a".repeat(64));
    env.same(&["tag", "busybox", &digest]);
    env.same(&["run", "--rm", "jadedjelly/Wit-demo:v2", "true"]);
    env.same(&["run", "--rm", "mybox:V1", "echo", "ran"]);
}

#[test]
fn errors_before_connecting() {
    // docker parses the reference before it talks to the engine
    let no_engine = Command::new(berth_bin())
        .args([
            "-H",
            "unix:///nonexistent/docker.sock",
            "pull",
            "jadedjelly/Wit-demo:v2",
        ])
        .output()
        .expect("berth");
    let docker = Command::new(docker_bin())
        .args([
            "-H",
            "unix:///nonexistent/docker.sock",
            "pull",
            "jadedjelly/Wit-demo:v2",
        ])
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("berth-cli-seed-no-config"),
        )
        .output()
        .expect("docker");
    assert_eq!(no_engine.status.code(), docker.status.code());
    assert_eq!(
        String::from_utf8_lossy(&no_engine.stderr),
        String::from_utf8_lossy(&docker.stderr)
    );
}

const DOCKERFILE: &str = "\
FROM busybox AS base
LABEL maintainer=\"nigelpoulton@hotmail.com\"
COPY . /src
WORKDIR /src
RUN echo \"npm install (stand-in)\" > npm-install.log

FROM base AS build-client
RUN echo client > /client

FROM scratch AS prod
COPY --from=build-client /client /
EXPOSE 8080
ENTRYPOINT [\"/bin/server\"]
";

#[test]
fn build_output_matches_docker() {
    // the notes' `docker build -t ddd-book:ch8.1 .` and `docker build --target ...`: once
    // cached (the first build's "Running in <id>" lines name random containers), the output is
    // the same, bytes and all ("Sending build context ...\r\r\n")
    let env = Env::new();
    pull(&env, "busybox");
    let ctx = env.path("app");
    std::fs::create_dir_all(ctx.join("views")).expect("mkdir");
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).expect("Dockerfile");
    std::fs::write(ctx.join("views/index.html"), "<h1>ddd-book</h1>\n").expect("index");
    let ctx = ctx.to_str().expect("utf-8 path").to_string();
    for args in [
        &["build", "-t", "ddd-book:ch8.1", &ctx][..],
        &[
            "build",
            "--target",
            "build-client",
            "-t",
            "multi:client",
            &ctx,
        ],
    ] {
        let first = env.docker(args);
        assert_eq!(first.code, 0, "{first:?}");
        let b = env.same(args);
        assert!(
            b.stdout
                .starts_with("Sending build context to Docker daemon  "),
            "{b:?}"
        );
        assert!(b.stdout.contains(" ---> Using cache\n"), "{b:?}");
    }
    env.same(&["images", "--format", "{{.Repository}}:{{.Tag}}", "ddd-book"]);
}
