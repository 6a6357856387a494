//! Container, volume, network, build and stats commands, compared with the
//! real docker CLI against the same berthd.

mod common;
use common::*;

fn pull(env: &Env) {
    let o = env.berth(&["pull", "-q", "busybox"]);
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn run_exit_codes_and_output() {
    let env = Env::new();
    pull(&env);
    env.same(&["run", "--rm", "busybox", "echo", "hello"]);
    env.same(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    env.same(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1:1",
        "--hostname",
        "box",
        "busybox",
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u) $(hostname)",
    ]);
    env.same(&[
        "run",
        "--rm",
        "--entrypoint",
        "echo",
        "busybox",
        "via",
        "entrypoint",
    ]);
    // 127: not found; 126: not executable
    env.same(&["run", "--rm", "busybox", "nonexistent-command"]);
    env.same(&["run", "--rm", "busybox", "/etc/passwd"]);
    // daemon errors: 125
    env.same(&["run", "--rm", "--restart", "always", "busybox", "true"]);
    env.same(&["run", "--rm", "nosuchrepo/nosuchimage:1", "true"]);
    let b = env.berth(&["run", "--rm", "-i", "busybox", "cat"]);
    assert_eq!(b.code, 0, "{b:?}");
}

#[test]
fn run_pulls_a_missing_image() {
    let env = Env::new();
    let b = env.berth(&["run", "--rm", "alpine:3.10", "echo", "pulled"]);
    assert_eq!(b.code, 0, "{b:?}");
    assert!(
        b.stderr
            .starts_with("Unable to find image 'alpine:3.10' locally\n"),
        "{b:?}"
    );
    assert!(
        b.stderr
            .contains("Status: Downloaded newer image for alpine:3.10"),
        "{b:?}"
    );
    assert_eq!(b.stdout, "pulled\n");
    env.same(&["images", "alpine"]);
}

#[test]
fn lifecycle_ps_logs_exec_stop_rm() {
    let env = Env::new();
    pull(&env);
    let c = env.berth(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        "127.0.0.1:0:80",
        "-l",
        "tier=front",
        "busybox",
        "sh",
        "-c",
        "echo started; echo oops >&2; exec sleep 300",
    ]);
    assert_eq!(c.code, 0, "{c:?}");
    assert_eq!(c.stdout.trim().len(), 64, "{c:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let created = env.berth(&["create", "--name", "idle", "busybox", "true"]);
    assert_eq!(created.code, 0, "{created:?}");
    let no_times = |s: &str| {
        s.lines()
            .map(|l| {
                let l = l
                    .replace("Less than a second ago", "X ago")
                    .replace("About a minute ago", "X ago");
                let re_words: Vec<&str> = l.split("   ").filter(|x| !x.is_empty()).collect();
                re_words.join("|")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    env.same_with(
        &[
            "ps",
            "--format",
            "{{.ID}} {{.Image}} {{.Command}} {{.Ports}} {{.Names}} {{.Labels}} {{.State}}",
        ],
        ids,
    );
    // .Labels is a string in docker's ps context: index fails in both.
    let (b, d) = (
        env.berth(&["ps", "--format", "{{index .Labels \"tier\"}}"]),
        env.docker(&["ps", "--format", "{{index .Labels \"tier\"}}"]),
    );
    assert_eq!(b.code, d.code, "{b:?} {d:?}");
    // ... and the context's method gives one label, the same in both.
    env.same_with(
        &[
            "ps",
            "--format",
            "{{.Names}}:{{.Label \"tier\"}}:{{.Label \"nope\"}}",
        ],
        ids,
    );
    env.same_with(
        &[
            "ps",
            "-a",
            "--format",
            "table {{.Names}}\\t{{.Image}}\\t{{.State}}",
        ],
        ids,
    );
    env.same_with(&["ps", "-a", "-q"], ids);
    env.same_with(&["ps", "-q", "--no-trunc"], ids);
    env.same_with(&["ps", "-l", "--format", "{{.Names}}"], ids);
    env.same_with(&["ps", "-n", "1", "--format", "{{.Names}}"], ids);
    env.same_with(
        &[
            "ps",
            "--filter",
            "label=tier=front",
            "--format",
            "{{.Names}}",
        ],
        ids,
    );
    env.same_with(
        &[
            "ps",
            "-a",
            "--filter",
            "status=created",
            "--format",
            "{{json .Names}}",
        ],
        ids,
    );
    let ps = env.berth(&["ps"]);
    assert!(
        ps.stdout
            .starts_with("CONTAINER ID   IMAGE     COMMAND                  CREATED"),
        "{ps:?}"
    );
    assert!(ps.stdout.contains("\"sh -c echo started;…\""), "{ps:?}");
    let _ = no_times;
    env.same(&["logs", "web"]);
    env.same(&["logs", "--tail", "1", "web"]);
    let ts = env.berth(&["logs", "-t", "web"]);
    assert!(ts.stdout.starts_with("20"), "{ts:?}");
    env.same(&["logs", "--since", "1h", "web"]);
    env.same(&["exec", "web", "sh", "-c", "echo in $(pwd); exit 4"]);
    env.same(&[
        "exec",
        "-w",
        "/etc",
        "-u",
        "2",
        "-e",
        "X=y",
        "web",
        "sh",
        "-c",
        "echo $X $(pwd) $(id -u)",
    ]);
    env.same(&["exec", "web", "nonexistent"]);
    env.same(&["exec", "nosuch", "true"]);
    env.same(&[
        "inspect",
        "-f",
        "{{.Name}} {{.State.Status}} {{.Config.Image}} {{json .Config.Labels}}",
        "web",
    ]);
    env.same(&[
        "inspect",
        "--type",
        "container",
        "-f",
        "{{.State.Running}}",
        "web",
        "idle",
    ]);
    env.same(&["inspect", "--type", "container", "nosuch"]);
    let mut dbg = std::process::Command::new("curl");
    dbg.args([
        "-s",
        "--unix-socket",
        &env.sock.display().to_string(),
        "http://x/v1.44/containers/web/stats?stream=false",
    ]);
    eprintln!("DBG {:?}", Env::run_cmd(dbg));
    env.same(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.PIDs}} {{.Container}}",
        "web",
    ]);
    let st = env.berth(&["stats", "--no-stream"]);
    assert!(
        st.stdout.starts_with("CONTAINER ID   NAME      CPU %"),
        "{st:?}"
    );
    env.same(&["stop", "-t", "1", "nosuch"]);
    env.same(&["kill", "nosuch"]);
    env.same(&["rm", "nosuch"]);
    env.same(&["rm", "-f", "nosuch"]);
    env.same(&["start", "nosuch"]);
    let rm_running = env.same_with(&["rm", "web"], ids);
    assert_eq!(rm_running.code, 1);
    let b = env.berth(&["stop", "-t", "1", "web"]);
    assert_eq!((b.code, b.stdout.as_str()), (0, "web\n"), "{b:?}");
    env.same_with(&["ps", "-a", "--format", "{{.Names}} {{.State}}"], ids);
    let b = env.berth(&["start", "-a", "idle"]);
    assert_eq!(b.code, 0, "{b:?}");
    let b = env.berth(&["restart", "-t", "1", "web"]);
    assert_eq!((b.code, b.stdout.as_str()), (0, "web\n"), "{b:?}");
    let b = env.berth(&["kill", "-s", "KILL", "web"]);
    assert_eq!((b.code, b.stdout.as_str()), (0, "web\n"), "{b:?}");
    let b = env.berth(&["wait", "web"]);
    assert_eq!((b.code, b.stdout.as_str()), (0, "137\n"), "{b:?}");
    let b = env.berth(&["rm", "-v", "web", "idle"]);
    assert_eq!((b.code, b.stdout.as_str()), (0, "web\nidle\n"), "{b:?}");
    env.same(&["ps", "-a"]);
}

#[test]
fn volumes() {
    let env = Env::new();
    pull(&env);
    env.same_after(&["volume", "create", "data"], &[&["volume", "rm", "data"]]);
    env.same_after(
        &["volume", "create", "--label", "k=v", "labelled"],
        &[&["volume", "rm", "labelled"]],
    );
    env.same(&["volume", "ls"]);
    env.same(&["volume", "ls", "-q"]);
    env.same(&[
        "volume",
        "ls",
        "--filter",
        "label=k",
        "--format",
        "{{.Name}} {{.Driver}} {{.Labels}}",
    ]);
    env.same(&["volume", "inspect", "data"]);
    env.same(&[
        "volume",
        "inspect",
        "-f",
        "{{.Name}} {{.Mountpoint}}",
        "data",
    ]);
    env.same(&["volume", "inspect", "nosuch"]);
    let w = env.berth(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo persisted > /data/f",
    ]);
    assert_eq!(w.code, 0, "{w:?}");
    env.same(&[
        "run",
        "--rm",
        "--mount",
        "source=data,target=/d,readonly",
        "busybox",
        "cat",
        "/d/f",
    ]);
    env.same(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,target=/t",
        "busybox",
        "sh",
        "-c",
        "mount | grep -c ' /t '",
    ]);
    let c = env.berth(&["create", "--name", "user", "-v", "data:/data", "busybox"]);
    assert_eq!(c.code, 0, "{c:?}");
    env.same(&["volume", "rm", "data"]);
    assert_eq!(env.berth(&["rm", "user"]).code, 0);
    env.same_after(&["volume", "rm", "data"], &[&["volume", "create", "data"]]);
    env.same_after(
        &["volume", "prune", "-a", "-f"],
        &[&["volume", "create", "--label", "k=v", "labelled"]],
    );
    env.same(&["volume", "ls"]);
}

#[test]
fn networks() {
    let env = Env::new();
    pull(&env);
    let n = env.berth(&["network", "create", "appnet"]);
    assert_eq!(n.code, 0, "{n:?}");
    assert_eq!(n.stdout.trim().len(), 64, "{n:?}");
    env.same(&["network", "create", "appnet"]);
    env.same(&["network", "ls"]);
    env.same(&["network", "ls", "-q", "--no-trunc"]);
    env.same(&[
        "network",
        "ls",
        "--filter",
        "name=appnet",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    env.same(&[
        "network",
        "inspect",
        "-f",
        "{{.Name}} {{.Driver}}",
        "appnet",
        "bridge",
    ]);
    env.same(&["network", "inspect", "nosuch"]);
    let srv = env.berth(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "appnet",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(srv.code, 0, "{srv:?}");
    env.same(&[
        "run",
        "--rm",
        "--network",
        "appnet",
        "busybox",
        "sh",
        "-c",
        "ping -c1 -W2 srv >/dev/null && echo reachable",
    ]);
    env.same_with(&["network", "rm", "appnet"], ids);
    assert_eq!(env.berth(&["rm", "-f", "srv"]).code, 0);
    env.same_after(
        &["network", "rm", "appnet"],
        &[&["network", "create", "appnet"]],
    );
    env.same(&["network", "rm", "appnet"]);
}

#[test]
fn build_with_dockerignore() {
    let env = Env::new();
    pull(&env);
    let ctx = env.path("ctx");
    std::fs::create_dir_all(ctx.join("sub")).expect("ctx");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox AS base\nARG GREETING=hi\nCOPY . /app/\nRUN echo $GREETING > /app/greeting\nFROM base AS final\nCMD [\"ls\", \"/app\"]\n").expect("Dockerfile");
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\nsub/*.log\n").expect("ignore");
    std::fs::write(ctx.join("secret.txt"), "no").expect("f");
    std::fs::write(ctx.join("keep.txt"), "yes").expect("f");
    std::fs::write(ctx.join("sub/a.log"), "no").expect("f");
    std::fs::write(ctx.join("sub/b.txt"), "yes").expect("f");
    let c = ctx.display().to_string();
    let b = env.berth(&[
        "build",
        "-t",
        "app:1",
        "-t",
        "app:latest",
        "--build-arg",
        "GREETING=hello",
        &c,
    ]);
    assert_eq!(b.code, 0, "{b:?}");
    assert!(b.stdout.contains("Step 1/"), "{b:?}");
    assert!(b.stdout.contains("Successfully built"), "{b:?}");
    assert!(b.stdout.contains("Successfully tagged app:1"), "{b:?}");
    env.same(&[
        "run",
        "--rm",
        "app:1",
        "sh",
        "-c",
        "ls -R /app; cat /app/greeting",
    ]);
    env.same(&["run", "--rm", "app:latest"]);
    let q = env.berth(&["build", "-q", "--target", "base", "-t", "app:base", &c]);
    assert_eq!(q.code, 0, "{q:?}");
    assert!(
        q.stdout.trim().starts_with("sha256:") && q.stdout.lines().count() == 1,
        "{q:?}"
    );
    let nc = env.berth(&[
        "build",
        "--no-cache",
        "-f",
        &ctx.join("Dockerfile").display().to_string(),
        &c,
    ]);
    assert_eq!(nc.code, 0, "{nc:?}");
    assert!(!nc.stdout.contains("Using cache"), "{nc:?}");
    std::fs::write(ctx.join("Bad"), "FROM busybox\nRUN exit 7\n").expect("f");
    let missing = ctx.join("Missing").display().to_string();
    env.same(&["build", "-q", "-f", &missing, &c]);
    let badf = ctx.join("Bad").display().to_string();
    let bad = env.berth(&["build", "-f", &badf, &c]);
    let bad_d = env.docker(&["build", "-f", &badf, &c]);
    assert_eq!(bad.code, bad_d.code, "{bad:?} {bad_d:?}");
    assert_eq!(
        bad.stderr.lines().last(),
        bad_d.stderr.lines().last(),
        "{bad:?} {bad_d:?}"
    );
}

#[test]
fn system_df_and_prune() {
    let env = Env::new();
    pull(&env);
    assert_eq!(
        env.berth(&["create", "--name", "stopped", "busybox"]).code,
        0
    );
    env.same(&["system", "df"]);
    env.same(&[
        "system",
        "df",
        "--format",
        "{{.Type}}: {{.TotalCount}} {{.Size}}",
    ]);
    env.same_after(
        &["system", "prune", "-f"],
        &[&["create", "--name", "stopped", "busybox"]],
    );
    env.same(&["system", "df"]);
}
