//! `berth context use|rm` read by the real docker CLI, `berth env`, engine
//! control with private paths, and `berth doctor`.

mod common;
use common::*;
use std::process::Command;

fn without_host(mut c: Command) -> Command {
    c.env_remove("DOCKER_HOST");
    c
}

#[test]
fn context_use_and_rm_with_the_real_docker_cli() {
    let env = Env::with_registry(None);
    let cfg = env.docker_config.join("config.json");
    std::fs::write(&cfg, r#"{"auths": {}, "psFormat": "table {{.Names}}"}"#).expect("config");
    let sock = env.sock.display().to_string();
    let out = Env::run_cmd(without_host(
        env.berth_cmd(&["context", "use", "--socket", &sock]),
    ));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "berth\n");

    // The files docker reads (the meta directory is named by the sha256 of the name).
    let meta = env.docker_config.join(
        "contexts/meta/5c2f64c7f21efd5fb5e3d6a499abe5eacb248ae6f6f0085387c9a056d10ef5fd/meta.json",
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("meta.json")).expect("json");
    assert_eq!(
        m,
        serde_json::json!({"Name":"berth","Metadata":{"Description":"Berth"},
            "Endpoints":{"docker":{"Host": format!("unix://{sock}"),"SkipTLSVerify":false}}})
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg).expect("config.json")).expect("json");
    assert_eq!(v["currentContext"], "berth");
    assert_eq!(v["psFormat"], "table {{.Names}}", "other keys are kept");

    let ls = Env::run_cmd(without_host(env.docker_cmd(&[
        "context",
        "ls",
        "--format",
        "{{.Name}} {{.Current}} {{.DockerEndpoint}}",
    ])));
    assert_eq!(ls.code, 0, "{ls:?}");
    assert!(
        ls.stdout.contains(&format!("berth true unix://{sock}")),
        "{ls:?}"
    );
    let insp = Env::run_cmd(without_host(env.docker_cmd(&[
        "context",
        "inspect",
        "berth",
        "-f",
        "{{.Endpoints.docker.Host}} {{json .Metadata}}",
    ])));
    assert_eq!(insp.code, 0, "{insp:?}");
    assert!(
        insp.stdout.starts_with(&format!("unix://{sock} ")),
        "{insp:?}"
    );
    assert!(
        insp.stdout.contains("\"Description\":\"Berth\""),
        "{insp:?}"
    );
    // docker reaches berthd through the context, and so does berth.
    let d = Env::run_cmd(without_host(env.docker_cmd(&[
        "version",
        "-f",
        "{{.Server.Platform.Name}}",
    ])));
    assert!(d.stdout.starts_with("Berth"), "{d:?}");
    let b = Env::run_cmd(without_host(env.berth_cmd(&[
        "version",
        "-f",
        "{{.Server.Platform.Name}} {{.Client.Context}}",
    ])));
    assert!(
        b.stdout.starts_with("Berth") && b.stdout.trim_end().ends_with("berth"),
        "{b:?}"
    );
    let e = Env::run_cmd(without_host(env.berth_cmd(&["env"])));
    assert_eq!(e.stdout, format!("export DOCKER_HOST=unix://{sock}\n"));

    // Using it twice updates it.
    let again = Env::run_cmd(without_host(
        env.berth_cmd(&["context", "use", "--socket", &sock]),
    ));
    assert_eq!(again.code, 0, "{again:?}");

    let rm = Env::run_cmd(without_host(env.berth_cmd(&["context", "rm"])));
    assert_eq!(rm.code, 0, "{rm:?}");
    let ls = Env::run_cmd(without_host(env.docker_cmd(&[
        "context",
        "ls",
        "--format",
        "{{.Name}} {{.Current}}",
    ])));
    assert_eq!(ls.stdout, "default true\n", "{ls:?}");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg).expect("config.json")).expect("json");
    assert!(v.get("currentContext").is_none(), "{v}");
    assert_eq!(v["psFormat"], "table {{.Names}}");
}

#[test]
fn env_prints_the_socket_in_use() {
    let env = Env::with_registry(None);
    let out = env.berth(&["env"]);
    assert_eq!(out.stdout, format!("export DOCKER_HOST={}\n", env.host));
    let out = env.berth(&["-H", "unix:///run/other.sock", "env"]);
    assert_eq!(out.stdout, "export DOCKER_HOST=unix:///run/other.sock\n");
    let mut c = Command::new(berth_bin());
    c.arg("env")
        .env_remove("DOCKER_HOST")
        .env("DOCKER_CONFIG", env.path("empty"))
        .env_remove("BERTH_SOCKET");
    assert_eq!(
        Env::run_cmd(c).stdout,
        "export DOCKER_HOST=unix:///run/berth/docker.sock\n"
    );
}

#[test]
fn engine_start_status_logs_stop_with_private_paths() {
    let dir = tempfile::Builder::new()
        .prefix("berth-eng-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let p = |s: &str| dir.path().join(s).display().to_string();
    let run = |args: &[&str]| {
        let mut c = Command::new(berth_bin());
        c.args(args)
            .env("BERTH_SOCKET", p("s.sock"))
            .env("BERTH_DATA_ROOT", p("root"))
            .env("BERTH_PIDFILE", p("run/berthd.pid"))
            .env("BERTH_LOG", p("log/berthd.log"))
            .env_remove("DOCKER_HOST");
        Env::run_cmd(c)
    };
    let st = run(&["engine", "status"]);
    assert_eq!(st.code, 3, "{st:?}");
    assert!(st.stdout.contains("Engine:    stopped"), "{st:?}");

    let start = run(&["engine", "start"]);
    struct Stop<'a>(&'a dyn Fn());
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            (self.0)()
        }
    }
    let stop_fn = || {
        let _ = run(&["engine", "stop"]);
    };
    let _guard = Stop(&stop_fn);
    assert_eq!(start.code, 0, "{start:?}");
    assert!(
        start.stdout.contains(&format!("unix://{}", p("s.sock"))),
        "{start:?}"
    );
    let pid: i32 = std::fs::read_to_string(p("run/berthd.pid"))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");

    let again = run(&["engine", "start"]);
    assert!(again.stdout.contains("already running"), "{again:?}");

    let st = run(&["engine", "status"]);
    assert_eq!(st.code, 0, "{st:?}");
    assert!(st.stdout.contains("Engine:    running"), "{st:?}");
    assert!(st.stdout.contains("(API 1.44)"), "{st:?}");
    assert!(st.stdout.contains(&format!("PID:       {pid}")), "{st:?}");
    assert!(
        st.stdout.contains(&format!("Data root: {}", p("root"))),
        "{st:?}"
    );

    let logs = run(&["engine", "logs"]);
    assert!(logs.stdout.contains("berthd ready"), "{logs:?}");
    let tail = run(&["engine", "logs", "-n", "1"]);
    assert_eq!(tail.stdout.lines().count(), 1, "{tail:?}");

    let stop = run(&["engine", "stop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(stop.stdout, "Engine stopped\n");
    // Gone, or a zombie waiting for its (test harness) parent to reap it.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        state.is_empty() || state.contains(") Z"),
        "berthd still runs: {state}"
    );
    let st = run(&["engine", "status"]);
    assert_eq!(st.code, 3, "{st:?}");
    let stop = run(&["engine", "stop"]);
    assert_eq!(stop.stdout, "Engine is not running\n");
}

#[test]
fn doctor_healthy_engine() {
    let env = Env::new();
    let out = env.berth(&["doctor"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("✔ The engine socket"), "{out:?}");
    assert!(
        out.stdout.contains("✔ The engine answers /_ping"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains("✔ The container runtime runc is installed"),
        "{out:?}"
    );
    assert!(
        out.stdout
            .contains(&format!("✔ Registry mirror {}/ answers", env.mirror())),
        "{out:?}"
    );
    assert!(out.stdout.contains("free in the data root"), "{out:?}");
    assert!(out.stdout.contains("✔ no containers"), "{out:?}");
    assert!(!out.stdout.contains('✘'), "{out:?}");

    // A published port that works is checked.
    let run = env.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1::8080",
        "busybox",
        "nc",
        "-ll",
        "-p",
        "8080",
        "-e",
        "true",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    // busybox `nc -ll -e` is a persistent server; it starts listening a moment
    // after `run -d` returns: give it a few seconds to pass the port check.
    let mut out = env.berth(&["doctor"]);
    for _ in 0..50 {
        if out.code == 0 && out.stdout.contains("Container web: port") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        out = env.berth(&["doctor"]);
    }
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("Container web: port"), "{out:?}");
}

#[test]
fn doctor_reports_problems() {
    // A mirror nobody listens on.
    let dead = free_port();
    let mut env = Env::with_registry(None);
    env.stop_engine();
    let out = env.berth(&["doctor"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains('✘'), "{out:?}");

    let no_sock = env.berth(&["-H", "unix:///tmp/berth-no-such.sock", "doctor"]);
    assert_eq!(no_sock.code, 1, "{no_sock:?}");
    assert!(
        no_sock
            .stdout
            .contains("✘ The engine socket /tmp/berth-no-such.sock does not exist"),
        "{no_sock:?}"
    );

    // Engine with an unreachable mirror.
    let dir = tempfile::Builder::new()
        .prefix("berth-doc-")
        .tempdir_in("/tmp")
        .expect("tmp");
    let p = |s: &str| dir.path().join(s).display().to_string();
    let mut c = Command::new(berth_bin());
    c.args([
        "engine",
        "start",
        "--socket",
        &p("s.sock"),
        "--data-root",
        &p("root"),
        "--pidfile",
        &p("pid"),
        "--log",
        &p("log"),
        "--registry-mirror",
        &format!("http://127.0.0.1:{dead}"),
    ]);
    let st = Env::run_cmd(c);
    assert_eq!(st.code, 0, "{st:?}");
    let mut c = Command::new(berth_bin());
    c.args(["-H", &format!("unix://{}", p("s.sock")), "doctor"]);
    let out = Env::run_cmd(c);
    let mut c = Command::new(berth_bin());
    c.args([
        "engine",
        "stop",
        "--socket",
        &p("s.sock"),
        "--pidfile",
        &p("pid"),
    ]);
    let stop = Env::run_cmd(c);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "✘ Registry mirror http://127.0.0.1:{dead}/ is unreachable"
        )),
        "{out:?}"
    );
}

#[test]
fn completions_and_man_pages() {
    for sh in ["bash", "zsh", "fish"] {
        let mut c = Command::new(berth_bin());
        c.args(["completion", sh]);
        let out = Env::run_cmd(c);
        assert_eq!(out.code, 0, "{out:?}");
        assert!(out.stdout.contains("berth"), "{sh}");
        assert!(out.stdout.contains("engine"), "{sh}");
    }
    let dir = tempfile::tempdir().expect("tmp");
    let mut c = Command::new(berth_bin());
    c.arg("man").arg(dir.path());
    let out = Env::run_cmd(c);
    assert_eq!(out.code, 0, "{out:?}");
    for page in [
        "berth.1",
        "berth-run.1",
        "berth-engine-start.1",
        "berth-volume-ls.1",
        "berth-context-use.1",
    ] {
        let text =
            std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|_| panic!("{page}"));
        assert!(text.contains(".TH"), "{page}");
    }
}
