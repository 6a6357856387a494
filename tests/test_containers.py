"""Containers through the real docker CLI and docker-py (issue #3)."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from lib.ctr import leaks_of, past_events, shim_pids


def run(b, *args, **kw):
    return b.docker("run", *args, **kw)


def inspect(b, name):
    return json.loads(b.docker("inspect", name).stdout)[0]


def wait_for(pred, timeout=20, interval=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


def test_run_echo_and_exit_codes(berthd):
    cp = run(berthd, "--rm", "busybox", "echo", "hello", "world")
    assert cp.stdout == "hello world\n"
    cp = run(berthd, "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert cp.returncode == 3
    assert cp.stdout == "out\n" and "err" in cp.stderr
    cp = run(berthd, "--rm", "busybox", "nosuchcmd", check=False)
    assert cp.returncode == 127
    assert 'executable file not found in $PATH' in cp.stderr


def test_config_merge_env_workdir_user_entrypoint(berthd):
    cp = run(berthd, "--rm", "-e", "A=1", "-w", "/tmp", "-u", "nobody", "--hostname", "h1",
             "busybox", "sh", "-c", "echo $A $(pwd) $(id -u) $(hostname)")
    assert cp.stdout.split() == ["1", "/tmp", "65534", "h1"]
    cp = run(berthd, "--rm", "--entrypoint", "echo", "busybox", "via", "entrypoint")
    assert cp.stdout == "via entrypoint\n"
    # The image's Cmd is the default command.
    cp = run(berthd, "--rm", "hello-world")
    assert "Hello from Docker!" in cp.stdout


def test_name_conflict_and_lifecycle(berthd):
    cid = run(berthd, "-d", "--name", "life", "-l", "team=a", "busybox", "sleep", "300").stdout.strip()
    cp = run(berthd, "-d", "--name", "life", "busybox", "true", check=False)
    assert cp.returncode == 125 and "is already in use" in cp.stderr
    i = inspect(berthd, "life")
    assert i["State"]["Status"] == "running" and i["State"]["Pid"] > 0
    assert i["Config"]["Labels"]["team"] == "a"
    assert i["Name"] == "/life" and i["Id"] == cid
    berthd.docker("pause", "life")
    assert inspect(berthd, "life")["State"]["Status"] == "paused"
    berthd.docker("unpause", "life")
    cp = berthd.docker("rm", "life", check=False)
    assert cp.returncode != 0 and "cannot remove a running container" in cp.stderr
    t0 = time.time()
    berthd.docker("stop", "-t", "1", "life")
    assert time.time() - t0 < 8
    i = inspect(berthd, "life")
    assert i["State"]["Status"] == "exited" and i["State"]["ExitCode"] == 137
    berthd.docker("start", "life")
    assert inspect(berthd, "life")["State"]["Running"] is True
    berthd.docker("kill", "-s", "KILL", "life")
    assert wait_for(lambda: inspect(berthd, "life")["State"]["Status"] == "exited")
    berthd.docker("rename", "life", "life2")
    assert inspect(berthd, "life2")["Name"] == "/life2"
    berthd.docker("rm", "life2")
    cp = berthd.docker("inspect", "life2", check=False)
    assert cp.returncode == 1 and "No such object" in cp.stderr or "No such container" in cp.stderr


def test_changes_persist_across_stop_start_and_go_with_rm(berthd):
    run(berthd, "--name", "bob", "busybox", "sh", "-c", "echo keep > /root/f")
    berthd.docker("start", "bob")
    berthd.docker("wait", "bob")
    run(berthd, "-d", "--name", "bob2", "busybox", "sleep", "60")
    # The seed: write a file, stop, start, exec: the file is still there.
    berthd.docker("exec", "bob2", "sh", "-c", "echo there > /tmp/x")
    berthd.docker("stop", "-t", "0", "bob2")
    berthd.docker("start", "bob2")
    assert berthd.docker("exec", "bob2", "cat", "/tmp/x").stdout == "there\n"
    berthd.docker("rm", "-f", "bob2")
    run(berthd, "-d", "--name", "bob2", "busybox", "sleep", "60")
    assert berthd.docker("exec", "bob2", "cat", "/tmp/x", check=False).returncode == 1


def test_ps_filters_and_format(berthd):
    run(berthd, "-d", "--name", "up1", "-l", "k=v", "busybox", "sleep", "300")
    run(berthd, "--name", "done0", "busybox", "true")
    run(berthd, "--name", "done3", "busybox", "sh", "-c", "exit 3", check=False)
    names = lambda *a: berthd.docker("ps", *a, "--format", "{{.Names}}").stdout.split()
    assert names() == ["up1"]
    assert set(names("-a")) == {"up1", "done0", "done3"}
    assert names("-a", "--filter", "exited=3") == ["done3"]
    assert names("-a", "--filter", "status=running") == ["up1"]
    assert names("-a", "--filter", "label=k=v") == ["up1"]
    assert set(names("-a", "--filter", "ancestor=busybox")) == {"up1", "done0", "done3"}
    assert names("-a", "--filter", "name=done0") == ["done0"]
    assert len(berthd.docker("ps", "-a", "-q").stdout.split()) == 3
    assert names("-l") == ["done3"]
    assert len(names("-a", "-n", "2")) == 2
    st = berthd.docker("ps", "--format", "{{.Status}}").stdout
    assert st.startswith("Up ")


def test_logs_options(berthd):
    # The pauses order the lines in the log: stdout and stderr are separate pipes, so lines
    # written back to back may be logged in either order (as with dockerd).
    run(berthd, "--name", "lg", "busybox", "sh", "-c",
        "for i in 1 2 3; do echo out$i; sleep 0.05; echo err$i >&2; sleep 0.05; done")
    cp = berthd.docker("logs", "lg")
    assert cp.stdout == "out1\nout2\nout3\n" and cp.stderr == "err1\nerr2\nerr3\n"
    last = berthd.docker("logs", "--tail", "1", "lg")
    # The tail counts lines of both streams together, as Docker's does.
    assert last.stdout + last.stderr in ("out3\n", "err3\n")
    ts = berthd.docker("logs", "-t", "lg").stdout.splitlines()[0]
    assert ts.split(" ", 1)[1] == "out1" and ts[:4].isdigit()
    assert berthd.docker("logs", "--since", "2030-01-01T00:00:00Z", "lg").stdout == ""
    c = berthd.client()
    ctr = c.containers.get("lg")
    assert ctr.logs(stdout=True, stderr=False) == b"out1\nout2\nout3\n"
    assert ctr.logs(stdout=False, stderr=True) == b"err1\nerr2\nerr3\n"


def test_logs_follow_and_survive_restart(berthd):
    run(berthd, "-d", "--name", "fl", "busybox", "sh", "-c", "echo first; sleep 2; echo second")
    cp = berthd.docker("logs", "-f", "fl", timeout=30)
    assert cp.stdout == "first\nsecond\n"
    berthd.restart()
    assert berthd.docker("logs", "fl").stdout == "first\nsecond\n"


def test_interactive_stdin_and_tty(berthd):
    cp = berthd.docker("run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done", input="piped\n")
    assert cp.stdout == "piped\ndone\n"
    out = subprocess.run(["script", "-qec", "docker run -it --rm busybox sh -c 'test -t 0 && echo tty-ok'", "/dev/null"],
                         env=berthd.docker_env(), capture_output=True, text=True, timeout=60)
    assert "tty-ok" in out.stdout


def test_run_it_detach_and_attach_under_tmux(berthd):
    from lib.ctr import Tmux, require_tmux
    require_tmux()
    with Tmux(berthd, "run -it --name itx busybox sh", width=100, height=30) as t:
        assert wait_for(lambda: inspect(berthd, "itx")["State"]["Running"], timeout=30)
        time.sleep(0.5)
        t.type("echo typed-$((6*7))")
        assert t.wait_screen("typed-42"), t.screen()
        t.send("C-p", "C-q")
        assert t.wait_screen("CLI-EXITED-0"), t.screen()
    time.sleep(1)
    assert inspect(berthd, "itx")["State"]["Running"] is True


def test_exec_variants(berthd):
    run(berthd, "-d", "--name", "ex", "busybox", "sleep", "300")
    assert berthd.docker("exec", "ex", "echo", "hi").stdout == "hi\n"
    assert berthd.docker("exec", "ex", "sh", "-c", "exit 7", check=False).returncode == 7
    cp = berthd.docker("exec", "ex", "nosuch", check=False)
    assert cp.returncode == 126 and "executable file not found" in cp.stdout + cp.stderr
    assert berthd.docker("exec", "-u", "nobody", "-w", "/tmp", "-e", "X=y", "ex", "sh", "-c",
                         "echo $(id -u) $(pwd) $X").stdout.split() == ["65534", "/tmp", "y"]
    berthd.docker("exec", "-d", "ex", "sh", "-c", "echo bg > /tmp/bg")
    assert wait_for(lambda: berthd.docker("exec", "ex", "cat", "/tmp/bg", check=False).stdout == "bg\n")
    c = berthd.client().containers.get("ex")
    r = c.exec_run(["sh", "-c", "echo o; echo e >&2; exit 2"], demux=True)
    assert r.exit_code == 2 and r.output == (b"o\n", b"e\n")


def test_security_defaults(berthd):
    out = run(berthd, "--rm", "busybox", "sh", "-c", "grep CapEff /proc/self/status; cat /proc/kcore | wc -c; unshare -n true; echo rc=$?").stdout
    assert "00000000a80425fb" in out
    assert "rc=1" in out
    out = run(berthd, "--rm", "--cap-drop", "CHOWN", "busybox", "grep", "CapEff", "/proc/self/status").stdout
    assert "00000000a80425fa" in out
    out = run(berthd, "--rm", "--security-opt", "no-new-privileges", "busybox", "grep", "NoNewPrivs", "/proc/self/status").stdout
    assert out.split()[-1] == "1"
    out = run(berthd, "--rm", "--privileged", "busybox", "sh", "-c", "unshare -n true && echo ok").stdout
    assert "ok" in out
    out = run(berthd, "--rm", "--read-only", "busybox", "sh", "-c", "touch /x 2>&1; echo rc=$?").stdout
    assert "Read-only file system" in out


def test_resources_and_init(berthd):
    run(berthd, "-d", "--name", "res", "--memory", "64m", "--cpus", "0.5", "--pids-limit", "50", "busybox", "sleep", "300")
    cid = inspect(berthd, "res")["Id"]
    with open(f"/sys/fs/cgroup/memory/berth/{cid}/memory.limit_in_bytes") as f:
        assert int(f.read()) == 64 * 1024 * 1024
    with open(f"/sys/fs/cgroup/pids/berth/{cid}/pids.max") as f:
        assert f.read().strip() == "50"
    with open(f"/sys/fs/cgroup/cpu/berth/{cid}/cpu.cfs_quota_us") as f:
        assert int(f.read()) == 50000
    out = run(berthd, "--rm", "--init", "busybox", "ps").stdout
    assert "docker-init" in out.splitlines()[1]


def test_oom_killed(berthd):
    cp = run(berthd, "--name", "oom", "--memory", "8m", "--memory-swap", "8m", "busybox", "sh", "-c",
             "head -c 64m /dev/zero | tail > /dev/null", check=False)
    assert cp.returncode == 137
    i = inspect(berthd, "oom")
    assert i["State"]["OOMKilled"] is True and i["State"]["ExitCode"] == 137


def test_restart_policies(berthd):
    run(berthd, "-d", "--name", "onf", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 1")
    assert wait_for(lambda: inspect(berthd, "onf")["RestartCount"] == 2 and inspect(berthd, "onf")["State"]["Status"] == "exited", timeout=30)
    run(berthd, "-d", "--name", "alw", "--restart", "always", "busybox", "sleep", "300")
    run(berthd, "-d", "--name", "uls", "--restart", "unless-stopped", "busybox", "sleep", "300")
    berthd.docker("stop", "-t", "0", "alw", "uls")
    berthd.restart()
    # The seed's difference: after an engine restart `always` comes back, `unless-stopped` not.
    assert wait_for(lambda: inspect(berthd, "alw")["State"]["Running"], timeout=20)
    assert inspect(berthd, "uls")["State"]["Running"] is False


def test_live_restore_after_sigkill(berthd):
    run(berthd, "-d", "--name", "lr", "busybox", "sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done")
    pid = inspect(berthd, "lr")["State"]["Pid"]
    berthd.kill(signal.SIGKILL)
    time.sleep(0.5)
    os.kill(pid, 0)  # still running while the engine is down
    berthd.start()
    i = inspect(berthd, "lr")
    assert i["State"]["Running"] and i["State"]["Pid"] == pid
    n1 = len(berthd.docker("logs", "lr").stdout.splitlines())
    assert wait_for(lambda: len(berthd.docker("logs", "lr").stdout.splitlines()) > n1 + 2)
    assert berthd.docker("exec", "lr", "echo", "alive").stdout == "alive\n"
    berthd.docker("stop", "-t", "0", "lr")


def test_killed_shim_marks_exit(berthd):
    run(berthd, "-d", "--name", "ks", "busybox", "sleep", "300")
    cid = inspect(berthd, "ks")["Id"]
    def cmdline(p):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                return f.read().decode(errors="ignore")
        except OSError:  # processes come and go while we look
            return ""
    shims = [p for p in os.listdir("/proc") if p.isdigit() and cid in cmdline(p) and "berth-shim" in cmdline(p)]
    assert shims, "no shim found"
    for p in shims:
        os.kill(int(p), signal.SIGKILL)
    assert wait_for(lambda: inspect(berthd, "ks")["State"]["Status"] == "exited", timeout=20)
    assert inspect(berthd, "ks")["State"]["ExitCode"] == 137
    berthd.docker("rm", "ks")


def test_top_stats_events_prune(berthd):
    run(berthd, "-d", "--name", "tp", "busybox", "sleep", "300")
    top = berthd.docker("top", "tp").stdout
    assert "sleep 300" in top and "PID" in top
    st = berthd.docker("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "tp").stdout.split()
    assert st == ["tp", "1"]
    ev = past_events(berthd, "--filter", "container=tp")
    assert "create" in ev and "start" in ev
    run(berthd, "--name", "gone", "busybox", "true")
    out = berthd.docker("container", "prune", "-f").stdout
    assert "Deleted Containers" in out
    names = berthd.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert names == ["tp"]


def test_errors_in_docker_shape(berthd):
    r = berthd.api("GET", "/containers/nosuch/json")
    assert r.status == 404 and json.loads(r.body) == {"message": "No such container: nosuch"}
    r = berthd.api("POST", "/containers/create", json={"Image": "busybox", "Cmd": ["true"]}, headers={})
    assert r.status in (201, 404)


def test_no_leaks_after_rm(berthd):
    run(berthd, "-d", "--name", "lk", "busybox", "sleep", "300")
    cid = inspect(berthd, "lk")["Id"]
    berthd.docker("rm", "-f", "lk")
    assert not os.path.exists(f"/sys/fs/cgroup/memory/berth/{cid}")
    with open("/proc/self/mountinfo") as f:
        assert cid not in f.read()
    procs = [p for p in os.listdir("/proc") if p.isdigit()]
    for p in procs:
        try:
            assert cid not in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="ignore")
        except OSError:
            pass
    assert not os.path.exists(f"/run/netns/berth-{cid[:12]}")
    assert_no_state(berthd, cid)


def assert_no_state(berthd, cid):
    """Nothing of a removed container: shim state dir, runc state, cgroups, data dir."""
    run_dir = "/run/berth/" + hashlib.sha256(berthd.data_root.encode()).hexdigest()[:12]
    left = [p for p in (f"{run_dir}/{cid[:24]}", f"{run_dir}/runc/{cid}",
                        f"/sys/fs/cgroup/memory/berth/{cid}", f"/sys/fs/cgroup/pids/berth/{cid}",
                        os.path.join(berthd.data_root, "containers", cid)) if os.path.exists(p)]
    assert not left, left


def test_no_leaks_after_run_rm(berthd, tmp_path):
    # `run --rm` returns once the container is removed (wait?condition=removed): by then the
    # shim has gone and taken the runtime's state and the cgroups with it.
    for args in ([], ["-t"], ["--pid", "host"]):
        cidfile = tmp_path / f"cid{len(args)}{args[:1]}"
        run(berthd, "--rm", "--cidfile", str(cidfile), *args, "busybox", "true")
        cid = cidfile.read_text().strip()
        assert_no_state(berthd, cid)
        with open("/proc/self/mountinfo") as f:
            assert cid not in f.read()


# --- more of issue #3: config merge, flags, security, lifecycle details -------------------



def multilayer(registry):
    return f"{registry.host}/berth-test/multilayer"


def test_image_config_merge(berthd, registry):
    img = multilayer(registry)
    out = run(berthd, "--rm", img).stdout.splitlines()
    assert out[:3] == ["args: default-arg", "cwd: /app", "APP_ENV=test"]
    # Arguments replace the image's Cmd, not its Entrypoint.
    assert run(berthd, "--rm", img, "x", "y").stdout.splitlines()[0] == "args: x y"
    out = run(berthd, "--rm", "-e", "APP_ENV=prod", "-w", "/tmp", img).stdout.splitlines()
    assert out[1:3] == ["cwd: /tmp", "APP_ENV=prod"]
    # --entrypoint drops the image's Cmd; the image's env and workdir stay.
    out = run(berthd, "--rm", "--entrypoint", "sh", img, "-c", "echo $BERTH_LAYERS $APP_ENV $(pwd)").stdout
    assert out == "4 test /app\n"
    out = run(berthd, "--rm", "--entrypoint", "pwd", img).stdout
    assert out == "/app\n"
    out = run(berthd, "--rm", "-u", "1234:5678", "busybox", "sh", "-c", "echo $(id -u) $(id -g)").stdout
    assert out == "1234 5678\n"
    run(berthd, "--name", "ml", "-l", "extra=1", img, "a")
    i = inspect(berthd, "ml")
    assert i["Config"]["Entrypoint"] == ["/app/entry.sh"] and i["Config"]["Cmd"] == ["a"]
    assert i["Path"] == "/app/entry.sh" and i["Args"] == ["a"]
    assert i["Config"]["WorkingDir"] == "/app"
    assert "APP_ENV=test" in i["Config"]["Env"]
    assert i["Config"]["Labels"]["org.berth.test"] == "multilayer" and i["Config"]["Labels"]["extra"] == "1"
    assert i["Config"]["StopSignal"] == "SIGTERM"


def test_name_conflict_api_409(berthd):
    r = berthd.api("POST", "/containers/create?name=dup", json={"Image": "busybox", "Cmd": ["true"]})
    if r.status == 404:  # pull on first use, as the CLI would
        berthd.docker("pull", "busybox")
        r = berthd.api("POST", "/containers/create?name=dup", json={"Image": "busybox", "Cmd": ["true"]})
    assert r.status == 201, r.body
    cid = json.loads(r.body)["Id"]
    r = berthd.api("POST", "/containers/create?name=dup", json={"Image": "busybox", "Cmd": ["true"]})
    assert r.status == 409
    assert json.loads(r.body)["message"] == (
        f'Conflict. The container name "/dup" is already in use by container "{cid}". '
        "You have to remove (or rename) that container to be able to reuse that name.")
    r = berthd.api("POST", "/containers/create?name=bad/name", json={"Image": "busybox"})
    assert r.status == 400


def test_rm_flag_removes_server_side(berthd):
    run(berthd, "--rm", "--name", "rm1", "busybox", "true")
    run(berthd, "--rm", "--name", "rm2", "busybox", "sh", "-c", "exit 4", check=False)
    cid = run(berthd, "-d", "--rm", "--name", "rm3", "busybox", "sleep", "0.3").stdout.strip()
    assert wait_for(lambda: berthd.docker("ps", "-aq").stdout.strip() == "", timeout=20)
    assert inspect_missing(berthd, "rm3")
    assert leaks_of(berthd, cid) == []
    # The flag is server-side: docker-py's auto_remove with detach works too.
    c = berthd.client()
    ctr = c.containers.run("busybox", ["true"], detach=True, auto_remove=True)
    assert wait_for(lambda: not c.containers.list(all=True, filters={"id": ctr.id}), timeout=20)


def inspect_missing(b, name):
    cp = b.docker("inspect", "--type", "container", name, check=False)
    return cp.returncode == 1 and "No such container" in cp.stderr


def test_healthcheck_in_ps_and_inspect(berthd):
    run(berthd, "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "500ms",
        "--health-retries", "2", "--health-timeout", "2s",
        "busybox", "sh", "-c", "sleep 2; touch /tmp/ok; exec sleep 300")
    st = lambda: inspect(berthd, "hc")["State"]["Health"]["Status"]
    assert st() == "starting"
    assert "(health: starting)" in berthd.docker("ps", "--format", "{{.Status}}").stdout
    assert wait_for(lambda: st() == "healthy", timeout=20)
    assert "(healthy)" in berthd.docker("ps", "--format", "{{.Status}}").stdout
    h = inspect(berthd, "hc")["State"]["Health"]
    assert h["FailingStreak"] == 0 and h["Log"] and h["Log"][-1]["ExitCode"] == 0
    berthd.docker("exec", "hc", "rm", "/tmp/ok")
    assert wait_for(lambda: st() == "unhealthy", timeout=20)
    assert "(unhealthy)" in berthd.docker("ps", "--format", "{{.Status}}").stdout
    assert berthd.docker("ps", "--filter", "health=unhealthy", "--format", "{{.Names}}").stdout.split() == ["hc"]
    assert inspect(berthd, "hc")["State"]["Health"]["FailingStreak"] >= 2
    ev = past_events(berthd, "--filter", "container=hc", "--filter", "event=health_status")
    assert "health_status: healthy" in ev and "health_status: unhealthy" in ev
    # --no-healthcheck on an image/flag: no Health at all.
    run(berthd, "-d", "--name", "nohc", "busybox", "sleep", "300")
    assert inspect(berthd, "nohc")["State"].get("Health") is None


def test_capabilities(berthd):
    cap = lambda *a: run(berthd, "--rm", *a, "busybox", "grep", "CapEff", "/proc/self/status").stdout.split()[1]
    assert cap() == "00000000a80425fb"
    assert cap("--cap-add", "NET_ADMIN") == "00000000a80435fb"
    assert cap("--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "NET_RAW") == "00000000a82405fb"
    assert cap("--cap-drop", "ALL") == "0000000000000000"
    assert cap("--cap-drop", "ALL", "--cap-add", "CHOWN") == "0000000000000001"
    priv = int(cap("--privileged"), 16)
    assert bin(priv).count("1") >= 38
    # A non-root user gets no effective capabilities, as with Docker.
    assert run(berthd, "--rm", "-u", "1000", "busybox", "grep", "CapEff", "/proc/self/status").stdout.split()[1] == "0000000000000000"
    out = run(berthd, "--rm", "busybox", "grep", "NoNewPrivs", "/proc/self/status").stdout
    assert out.split()[-1] == "0"


def test_masked_and_readonly_paths(berthd):
    script = ("grep -E ' /proc/(keys|timer_list|acpi|scsi) | /sys/firmware ' /proc/self/mountinfo | awk '{print $5}' | sort; "
              "echo keys=$(cat /proc/keys | wc -c); "
              "ls /sys/firmware | wc -l; "
              "echo 1 > /proc/sys/vm/drop_caches 2>&1 || echo sys-ro; "
              "echo x > /proc/sysrq-trigger 2>&1 || echo sysrq-ro")
    out = run(berthd, "--rm", "busybox", "sh", "-c", script).stdout
    for p in ["/proc/keys", "/proc/timer_list", "/proc/acpi", "/sys/firmware"]:
        assert p in out.split(), (p, out)
    assert "keys=0" in out
    assert "sys-ro" in out and "sysrq-ro" in out
    out = run(berthd, "--rm", "--privileged", "busybox", "sh", "-c",
              "grep -cE ' /proc/(keys|timer_list) ' /proc/self/mountinfo; true").stdout
    assert out.strip() == "0"
    # /sys is read-only without --privileged.
    out = run(berthd, "--rm", "busybox", "sh", "-c", "touch /sys/x 2>&1; true").stdout
    assert "Read-only file system" in out


def test_device_flag(berthd):
    assert os.path.exists("/dev/net/tun") or os.path.exists("/dev/fuse"), "no test device on this host"
    dev = "/dev/net/tun" if os.path.exists("/dev/net/tun") else "/dev/fuse"
    cid = run(berthd, "-d", "--name", "dv", "--device", f"{dev}:/dev/mydev", "--device", "/dev/zero:/dev/z2",
              "busybox", "sleep", "300").stdout.strip()
    out = berthd.docker("exec", "dv", "sh", "-c", "ls -l /dev/mydev; head -c 5 /dev/z2 | wc -c").stdout
    assert out.startswith("c") and out.split()[-1] == "5"
    st = os.stat(dev)
    with open(f"/sys/fs/cgroup/devices/berth/{cid}/devices.list") as fh:
        assert f"c {os.major(st.st_rdev)}:{os.minor(st.st_rdev)} rwm" in fh.read()
    assert run(berthd, "--rm", "busybox", "sh", "-c", "test -e /dev/mydev; echo $?").stdout == "1\n"


def test_stop_timing_and_signals(berthd):
    # A process that handles SIGTERM exits at once with its own code.
    run(berthd, "-d", "--name", "term", "busybox", "sh", "-c",
        "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done")
    time.sleep(0.3)
    t0 = time.monotonic()
    berthd.docker("stop", "term")
    assert time.monotonic() - t0 < 4
    i = inspect(berthd, "term")
    assert i["State"]["ExitCode"] == 0 and "got-term" in berthd.docker("logs", "term").stdout
    assert i["State"]["FinishedAt"] > i["State"]["StartedAt"]
    # PID 1 without a handler ignores SIGTERM: -t 2 then SIGKILL.
    run(berthd, "-d", "--name", "deaf", "busybox", "sleep", "300")
    t0 = time.monotonic()
    berthd.docker("stop", "-t", "2", "deaf")
    took = time.monotonic() - t0
    assert 1.8 <= took < 7, took
    assert inspect(berthd, "deaf")["State"]["ExitCode"] == 137
    # --stop-timeout and --stop-signal from create.
    run(berthd, "-d", "--name", "usr", "--stop-signal", "USR1", "--stop-timeout", "1", "busybox", "sh", "-c",
        "trap 'echo got-usr1; exit 9' USR1; while true; do sleep 0.1; done")
    time.sleep(0.3)
    berthd.docker("stop", "usr")
    i = inspect(berthd, "usr")
    assert i["State"]["ExitCode"] == 9 and i["Config"]["StopSignal"] == "USR1" and i["Config"]["StopTimeout"] == 1
    # Stopping a stopped container is fine (304 under the hood).
    berthd.docker("stop", "usr")


def test_kill_signal_restart_and_wait(berthd):
    run(berthd, "-d", "--name", "ks", "busybox", "sh", "-c",
        "trap 'echo got-hup' HUP; while true; do sleep 0.1; done")
    time.sleep(0.3)
    berthd.docker("kill", "-s", "HUP", "ks")
    assert wait_for(lambda: "got-hup" in berthd.docker("logs", "ks").stdout)
    assert inspect(berthd, "ks")["State"]["Running"] is True
    r = berthd.api("POST", "/containers/ks/kill?signal=NOPE")
    assert r.status == 400
    pid0 = inspect(berthd, "ks")["State"]["Pid"]
    started0 = inspect(berthd, "ks")["State"]["StartedAt"]
    berthd.docker("restart", "-t", "1", "ks")
    i = inspect(berthd, "ks")
    assert i["State"]["Running"] and i["State"]["Pid"] != pid0 and i["State"]["StartedAt"] > started0
    berthd.docker("kill", "ks")
    assert inspect(berthd, "ks")["State"]["ExitCode"] == 137
    cp = berthd.docker("kill", "ks", check=False)
    assert cp.returncode != 0 and "is not running" in cp.stderr
    # wait prints the exit code; docker-py's wait returns it.
    run(berthd, "-d", "--name", "w5", "busybox", "sh", "-c", "sleep 0.5; exit 5")
    assert berthd.docker("wait", "w5", timeout=30).stdout.strip() == "5"
    assert berthd.client().containers.get("w5").wait(timeout=30)["StatusCode"] == 5
    r = berthd.api("POST", "/containers/w5/wait?condition=bogus")
    assert r.status == 400
    # restart on a stopped container starts it.
    berthd.docker("restart", "w5")
    assert berthd.docker("wait", "w5", timeout=30).stdout.strip() == "5"


def test_pause_uses_the_freezer(berthd):
    cid = run(berthd, "-d", "--name", "pz", "busybox", "sh", "-c",
              "i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.05; done").stdout.strip()
    freezer = f"/sys/fs/cgroup/freezer/berth/{cid}/freezer.state"
    berthd.docker("pause", "pz")
    with open(freezer) as fh:
        assert fh.read().strip() == "FROZEN"
    assert inspect(berthd, "pz")["State"]["Paused"] is True
    assert berthd.docker("ps", "--filter", "status=paused", "--format", "{{.Names}} {{.Status}}").stdout.strip() == \
        "pz " + berthd.docker("ps", "--format", "{{.Status}}").stdout.strip()
    assert "(Paused)" in berthd.docker("ps", "--format", "{{.Status}}").stdout
    cp = berthd.docker("exec", "pz", "true", check=False)
    assert cp.returncode != 0 and "is paused" in cp.stderr
    cp = berthd.docker("pause", "pz", check=False)
    assert cp.returncode != 0 and "already paused" in cp.stderr
    cp = berthd.docker("rm", "pz", check=False)
    assert cp.returncode != 0 and "paused" in cp.stderr
    berthd.docker("unpause", "pz")
    with open(freezer) as fh:
        assert fh.read().strip() == "THAWED"
    n1 = berthd.docker("exec", "pz", "cat", "/tmp/n").stdout
    assert wait_for(lambda: berthd.docker("exec", "pz", "cat", "/tmp/n").stdout != n1)
    # A paused container can be stopped.
    berthd.docker("pause", "pz")
    berthd.docker("stop", "-t", "1", "pz")
    assert inspect(berthd, "pz")["State"]["Status"] == "exited"


def test_rm_force_rename_conflicts(berthd):
    run(berthd, "-d", "--name", "a1", "busybox", "sleep", "300")
    run(berthd, "-d", "--name", "a2", "busybox", "sleep", "300")
    r = berthd.api("DELETE", "/containers/a1")
    assert r.status == 409 and "Stop the container before attempting removal or force remove" in json.loads(r.body)["message"]
    cp = berthd.docker("rename", "a1", "a2", check=False)
    assert cp.returncode != 0 and "is already in use" in cp.stderr
    r = berthd.api("POST", "/containers/a1/rename?name=a2")
    assert r.status == 409
    berthd.docker("rename", "a1", "b1")
    assert berthd.docker("exec", "b1", "true").returncode == 0
    cid = inspect(berthd, "b1")["Id"]
    berthd.docker("rm", "-f", "b1")
    assert leaks_of(berthd, cid) == []
    r = berthd.api("DELETE", "/containers/b1")
    assert r.status == 404 and json.loads(r.body)["message"] == "No such container: b1"
    # A name freed by rm or rename can be used again.
    run(berthd, "-d", "--name", "a1", "busybox", "sleep", "300")
    ev = past_events(berthd, "--filter", "event=rename",
                     fmt="{{.Actor.Attributes.oldName}} {{.Actor.Attributes.name}}")
    assert "/a1 b1" in ev


def test_ps_more(berthd):
    run(berthd, "--name", "c0", "busybox", "true")
    berthd.docker("create", "--name", "cr", "-l", "only-key", "busybox", "true")
    run(berthd, "-d", "--name", "r1", "busybox", "sleep", "300")
    names = lambda *a: berthd.docker("ps", *a, "--format", "{{.Names}}").stdout.split()
    assert names("-a", "--filter", "status=created") == ["cr"]
    assert names("-a", "--filter", "status=exited") == ["c0"]
    assert names("-a", "--filter", "label=only-key") == ["cr"]
    assert names("-a", "--filter", "exited=0") == ["c0"]
    assert set(names("-a", "--filter", "name=c")) == {"c0", "cr"}  # substring, as dockerd
    assert names("-l") == ["r1"]
    assert names("-n", "1", "-a") == ["r1"]
    assert names("-a", "--filter", "status=running", "--filter", "status=created") in (["r1", "cr"], ["cr", "r1"])
    full = berthd.docker("ps", "-a", "--no-trunc", "-q").stdout.split()
    assert all(len(x) == 64 for x in full) and len(full) == 3
    table = berthd.docker("ps", "-a").stdout.splitlines()
    assert table[0].split()[:3] == ["CONTAINER", "ID", "IMAGE"]
    js = [json.loads(l) for l in berthd.docker("ps", "-a", "--format", "{{json .}}").stdout.splitlines()]
    r1 = next(j for j in js if j["Names"] == "r1")
    assert r1["Image"] == "busybox" and r1["Command"] == '"sleep 300"' and r1["State"] == "running"
    c0 = next(j for j in js if j["Names"] == "c0")
    assert c0["Status"].startswith("Exited (0)")
    cp = berthd.docker("ps", "--filter", "bogus=1", check=False)
    assert cp.returncode != 0 and "invalid filter 'bogus'" in cp.stderr


def test_inspect_fields(berthd):
    berthd.docker("volume", "create", "iv")
    run(berthd, "-d", "--name", "ins", "-v", "iv:/data", "--memory", "32m", "--restart", "on-failure:3",
        "-e", "K=V", "--hostname", "hh", "busybox", "sleep", "300")
    i = inspect(berthd, "ins")
    assert len(i["Id"]) == 64 and i["Image"].startswith("sha256:")
    st = i["State"]
    assert st["Status"] == "running" and st["Running"] and not st["Paused"] and st["Pid"] > 0
    assert st["ExitCode"] == 0 and st["StartedAt"].endswith("Z") and st["FinishedAt"].startswith("0001-")
    assert st["OOMKilled"] is False and st["Restarting"] is False and st["Dead"] is False
    assert i["Config"]["Image"] == "busybox" and i["Config"]["Hostname"] == "hh" and "K=V" in i["Config"]["Env"]
    assert i["HostConfig"]["Memory"] == 32 << 20
    assert i["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert i["RestartCount"] == 0
    m = i["Mounts"]
    assert len(m) == 1 and m[0]["Type"] == "volume" and m[0]["Name"] == "iv" and m[0]["Destination"] == "/data"
    assert m[0]["RW"] is True
    assert "NetworkSettings" in i and "Networks" in i["NetworkSettings"]
    assert i["Created"].endswith("Z") and i["Driver"] == "overlay2" or i["Driver"]
    assert i["LogPath"].endswith("-json.log")
    # docker-py sees the same.
    c = berthd.client().containers.get("ins")
    assert c.status == "running" and c.name == "ins" and c.attrs["State"]["Pid"] == st["Pid"]
    berthd.docker("stop", "-t", "0", "ins")
    st = inspect(berthd, "ins")["State"]
    assert st["Status"] == "exited" and st["Pid"] == 0 and not st["FinishedAt"].startswith("0001-")


def test_top_and_stats(berthd):
    run(berthd, "-d", "--name", "ts", "--memory", "64m", "busybox", "sh", "-c", "sleep 300 & exec sleep 301")
    top = berthd.docker("top", "ts").stdout.splitlines()
    assert top[0].split()[:2] == ["UID", "PID"]
    assert any("sleep 300" in l for l in top) and any("sleep 301" in l for l in top)
    top = berthd.docker("top", "ts", "-o", "pid,comm").stdout.splitlines()
    assert top[0].split() == ["PID", "COMMAND"] and len(top) == 3
    cp = berthd.docker("top", "nosuch", check=False)
    assert cp.returncode != 0 and "No such container: nosuch" in cp.stderr
    st = json.loads(berthd.docker("stats", "--no-stream", "--format", "{{json .}}", "ts").stdout)
    assert st["Name"] == "ts" and st["PIDs"] == "2"
    assert st["MemUsage"].endswith("64MiB")
    s = berthd.client().containers.get("ts").stats(stream=False)
    for k in ("cpu_stats", "precpu_stats", "memory_stats", "pids_stats", "blkio_stats", "read"):
        assert k in s, k
    assert s["memory_stats"]["limit"] == 64 << 20 and s["memory_stats"]["usage"] > 0
    assert s["cpu_stats"]["cpu_usage"]["total_usage"] > 0 and s["pids_stats"]["current"] == 2
    # Streaming: one object a second.
    gen = berthd.client().api.stats("ts", stream=True, decode=True)
    a, b = next(gen), next(gen)
    assert b["precpu_stats"]["cpu_usage"]["total_usage"] == a["cpu_stats"]["cpu_usage"]["total_usage"]


def test_stats_without_arguments_follows_events(berthd):
    run(berthd, "-d", "--name", "s1", "busybox", "sleep", "300")
    out = berthd.docker("stats", "--no-stream", "--format", "{{.Name}}").stdout.split()
    assert out == ["s1"]
    # The streaming form learns about new containers from /events.
    p = subprocess.Popen([__import__("lib.berthd", fromlist=["docker_cli"]).docker_cli(), "stats",
                          "--format", "{{.Name}}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=berthd.docker_env(), text=True)
    try:
        time.sleep(2)
        run(berthd, "-d", "--name", "s2", "busybox", "sleep", "300")
        time.sleep(4)
    finally:
        p.kill()
        out, err = p.communicate(timeout=10)
    assert "s1" in out and "s2" in out, (out, err)


def test_prune_with_filters(berthd):
    run(berthd, "--name", "p1", "-l", "keep=yes", "busybox", "true")
    run(berthd, "--name", "p2", "busybox", "true")
    berthd.docker("create", "--name", "p3", "busybox", "true")
    run(berthd, "-d", "--name", "p4", "busybox", "sleep", "300")
    cid2 = inspect(berthd, "p2")["Id"]
    out = berthd.docker("container", "prune", "-f", "--filter", "label!=keep=yes").stdout
    assert cid2 in out
    assert set(berthd.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()) == {"p1", "p4"}
    r = berthd.client().containers.prune()
    assert len(r["ContainersDeleted"]) == 1 and "SpaceReclaimed" in r
    assert berthd.docker("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["p4"]
    assert leaks_of(berthd, cid2) == []


def test_logs_more(berthd):
    run(berthd, "-d", "--name", "lm", "busybox", "sh", "-c",
        "echo a1; echo e1 >&2; sleep 2; echo a2; sleep 0.1; echo e2 >&2; sleep 300")
    assert wait_for(lambda: "a2" in berthd.docker("logs", "lm").stdout, timeout=15)
    lines = berthd.docker("logs", "-t", "lm").stdout.splitlines()
    t1 = lines[0].split()[0]
    t2 = lines[1].split()[0]
    assert t1 < t2 and len(t1) >= 27  # RFC3339Nano
    # a2 came 2 s after a1: a second after a1 lies between them.
    import datetime
    mid = (datetime.datetime.fromisoformat(t1[:26]) + datetime.timedelta(seconds=1)).isoformat() + "Z"
    assert berthd.docker("logs", "--since", mid, "lm").stdout == "a2\n"
    assert berthd.docker("logs", "--until", mid, "lm").stdout == "a1\n"
    assert berthd.docker("logs", "--since", t2, "lm").stdout == "a2\n"
    assert berthd.docker("logs", "--tail", "0", "lm").stdout == ""
    # follow: sees new output and stops when the container does.
    p = subprocess.Popen([__import__("lib.berthd", fromlist=["docker_cli"]).docker_cli(), "logs", "-f",
                          "--tail", "1", "lm"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=berthd.docker_env(), text=True)
    time.sleep(1)
    berthd.docker("exec", "lm", "sh", "-c", "echo late > /proc/1/fd/1")
    berthd.docker("stop", "-t", "0", "lm")
    out, err = p.communicate(timeout=20)
    assert (out, err) == ("late\n", "e2\n")  # the tail counts both streams: e2 came last
    # docker-py: separate streams, and demux on attach with logs=1.
    c = berthd.client()
    ctr = c.containers.get("lm")
    assert ctr.logs(stdout=False, stderr=True) == b"e1\ne2\n"
    assert ctr.logs(stdout=True, stderr=False, tail=1) == b"late\n"
    # (docker-py's demux of a live attach is in test_exec_attach.py: attaching with logs=1 to a
    # container that has ended races in docker-py itself, whose buffered HTTP reader may swallow
    # what follows the 101 before it takes the raw socket.)
    # A TTY container's log is raw, with the pty's CRLF.
    run(berthd, "-t", "--name", "ttylog", "busybox", "sh", "-c", "echo out; echo err >&2")
    r = berthd.api("GET", "/containers/ttylog/logs?stdout=1&stderr=1")
    assert r.body == b"out\r\nerr\r\n"
    r = berthd.api("GET", "/v1.44/containers/lm/logs?stdout=1&stderr=1&tail=1")
    assert r.headers.get("content-type") == "application/vnd.docker.multiplexed-stream"
    assert r.body == b"\x01\x00\x00\x00\x00\x00\x00\x05late\n"


def test_restart_policy_details(berthd):
    run(berthd, "-d", "--name", "alw", "--restart", "always", "busybox", "sh", "-c", "sleep 0.2; exit 0")
    assert wait_for(lambda: inspect(berthd, "alw")["RestartCount"] >= 2, timeout=30)
    # A user stop is final for `always` too (until the engine restarts).
    berthd.docker("stop", "-t", "1", "alw")
    n = inspect(berthd, "alw")["RestartCount"]
    time.sleep(2)
    i = inspect(berthd, "alw")
    assert i["State"]["Status"] == "exited" and i["RestartCount"] == n
    run(berthd, "-d", "--name", "onf0", "--restart", "on-failure", "busybox", "sh", "-c", "exit 0")
    time.sleep(1.5)
    assert inspect(berthd, "onf0")["RestartCount"] == 0
    run(berthd, "-d", "--name", "no", "--restart", "no", "busybox", "sh", "-c", "exit 3")
    berthd.docker("wait", "no", timeout=30)
    time.sleep(1)
    assert inspect(berthd, "no")["RestartCount"] == 0
    cp = berthd.docker("run", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert cp.returncode != 0 and "conflicting options" in cp.stderr.lower() or "can't" in cp.stderr.lower()
    # update changes the policy of an existing container.
    berthd.docker("update", "--restart", "on-failure:1", "no")
    assert inspect(berthd, "no")["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 1}
    berthd.docker("start", "no")
    assert wait_for(lambda: inspect(berthd, "no")["RestartCount"] == 1
                    and inspect(berthd, "no")["State"]["Status"] == "exited", timeout=30)


def test_events_stream_filters_since_until(berthd):
    import threading
    c = berthd.client()
    t0 = int(time.time()) - 1
    got = []

    def listen():
        for ev in c.events(decode=True, filters={"type": "container", "container": "evx"}):
            got.append(ev)
            if ev.get("Action") == "destroy":
                return

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    time.sleep(0.5)
    run(berthd, "-d", "--name", "evx", "busybox", "sleep", "300")
    run(berthd, "-d", "--name", "other", "busybox", "sleep", "300")
    berthd.docker("pause", "evx")
    berthd.docker("unpause", "evx")
    berthd.docker("exec", "evx", "true")
    berthd.docker("rename", "evx", "evy")
    berthd.docker("rename", "evy", "evx")
    berthd.docker("rm", "-f", "evx")
    th.join(30)
    actions = [e["Action"] for e in got]
    for a in ["create", "start", "pause", "unpause", "rename", "kill", "die", "destroy"]:
        assert a in actions, (a, actions)
    assert any(a.startswith("exec_create") for a in actions) and any(a.startswith("exec_start") for a in actions)
    assert "exec_die" in actions
    assert all(e["Actor"]["Attributes"].get("image") == "busybox" for e in got)
    e0 = got[0]
    assert e0["Type"] == "container" and e0["id"] == e0["Actor"]["ID"] and e0["timeNano"] // 10**9 == e0["time"]
    assert e0["scope"] == "local"
    # since/until replay; filters on event and label.
    t1 = int(time.time()) + 1
    ev = berthd.docker("events", "--since", str(t0), "--until", str(t1), "--filter", "event=start",
                       "--format", "{{.Actor.Attributes.name}}").stdout.split()
    assert sorted(ev) == ["evx", "other"]
    ev = berthd.docker("events", "--since", str(t1 + 100), "--until", str(t1 + 101)).stdout
    assert ev == ""
    ev = list(c.events(since=t0, until=t1, decode=True, filters={"event": "die"}))
    assert [e["Actor"]["Attributes"]["name"] for e in ev] == ["evx"]
    assert ev[0]["Actor"]["Attributes"]["exitCode"] == "137"


def test_no_leaks_after_every_kind_of_end(berthd):
    ids = []
    ids.append(run(berthd, "-d", "busybox", "sleep", "300").stdout.strip())
    ids.append(run(berthd, "-d", "busybox", "true").stdout.strip())
    ids.append(run(berthd, "-d", "--memory", "8m", "--memory-swap", "8m", "busybox", "sh", "-c",
                   "head -c 64m /dev/zero | tail > /dev/null").stdout.strip())
    berthd.docker("create", "--name", "never", "busybox", "true")
    ids.append(inspect(berthd, "never")["Id"])
    ids.append(run(berthd, "-d", "busybox", "sleep", "300").stdout.strip())
    berthd.docker("pause", ids[-1])
    for cid in ids:
        assert wait_for(lambda: True)
    for cid in ids:
        berthd.docker("rm", "-f", cid)
    for cid in ids:
        assert leaks_of(berthd, cid) == [], cid
    # The engine's own directories are empty again.
    assert os.listdir(os.path.join(berthd.data_root, "containers")) == []


def test_group_add_numeric_and_by_name(berthd):
    # Numbers are used as they are; names come from the container's /etc/group (busybox's
    # has daemon:x:1); a name it does not have is refused with libcontainer's wording.
    out = run(berthd, "--rm", "--group-add", "1000", "--group-add", "daemon", "--group-add", "1000",
              "busybox", "id", "-G").stdout.split()
    assert out[0] == "0" and "1000" in out and "1" in out and out.count("1000") == 1
    # Also for another user, and for an exec as that user.
    out = run(berthd, "--rm", "-u", "65534", "--group-add", "4242", "busybox", "id", "-G").stdout.split()
    assert out == ["65534", "4242"]
    run(berthd, "-d", "--name", "ga", "--group-add", "777", "busybox", "sleep", "300")
    assert "777" in berthd.docker("exec", "-u", "nobody", "ga", "id", "-G").stdout.split()
    cp = run(berthd, "--rm", "--group-add", "nosuchgroup", "busybox", "true", check=False)
    assert cp.returncode != 0
    assert "Unable to find group nosuchgroup: no matching entries in group file" in cp.stderr
    # docker-py sends ints and strings alike.
    c = berthd.client()
    out = c.containers.run("busybox", ["id", "-G"], group_add=[1001, "1002"], remove=True)
    assert {"1001", "1002"} <= set(out.decode().split())


def test_log_drivers(berthd):
    cp = run(berthd, "--log-driver", "asdf", "busybox", "true", check=False)
    assert cp.returncode != 0 and "logger: no log driver named 'asdf' is registered" in cp.stderr
    cp = run(berthd, "--log-opt", "bogus=1", "busybox", "true", check=False)
    assert cp.returncode != 0 and "unknown log opt 'bogus' for json-file log driver" in cp.stderr
    # An empty type is the default driver, with the options as given.
    c = berthd.client()
    import docker
    lc = docker.types.LogConfig(type="", config={"max-file": "100"})
    ctr = c.containers.create("busybox", ["echo", "kept"], log_config=lc)
    assert c.api.inspect_container(ctr.id)["HostConfig"]["LogConfig"] == {
        "Type": "json-file", "Config": {"max-file": "100"}}
    ctr.start()
    ctr.wait()
    assert ctr.logs() == b"kept\n"
    # `local` keeps logs too; `none` keeps nothing and `docker logs` says so (501).
    run(berthd, "--name", "lloc", "--log-driver", "local", "busybox", "echo", "local log")
    assert berthd.docker("logs", "lloc").stdout == "local log\n"
    run(berthd, "--name", "lnone", "--log-driver", "none", "busybox", "echo", "dropped")
    assert inspect(berthd, "lnone")["HostConfig"]["LogConfig"]["Type"] == "none"
    cp = berthd.docker("logs", "lnone", check=False)
    assert cp.returncode != 0 and "configured logging driver does not support reading" in cp.stderr
    assert berthd.api("GET", "/containers/lnone/logs?stdout=1").status == 501
    # `docker run` without -d attaches: the output still reaches the client.
    assert run(berthd, "--rm", "--log-driver", "none", "busybox", "echo", "live").stdout == "live\n"
    # As dockerd: only a started json-file container exposes its log file.
    berthd.docker("create", "--name", "nolog", "--log-driver", "none", "busybox", "true")
    berthd.docker("create", "--name", "notyet", "busybox", "true")
    assert inspect(berthd, "nolog")["LogPath"] == "" and inspect(berthd, "notyet")["LogPath"] == ""
    berthd.docker("start", "nolog", "notyet")
    assert inspect(berthd, "nolog")["LogPath"] == ""
    assert inspect(berthd, "notyet")["LogPath"].endswith("-json.log")


def test_restarting_state_and_rm(berthd):
    # A container that keeps failing is `restarting` during each back-off (100 ms doubling),
    # and only `rm -f` removes it then, which ends the loop.
    run(berthd, "-d", "--name", "rs", "--restart", "always", "busybox", "sh", "-c", "exit 3")
    assert wait_for(lambda: inspect(berthd, "rs")["RestartCount"] >= 4, timeout=30)
    assert wait_for(lambda: inspect(berthd, "rs")["State"]["Restarting"], timeout=30)
    st = inspect(berthd, "rs")["State"]
    assert st["Status"] == "restarting" and st["ExitCode"] == 3
    # As dockerd: a restarting container counts as running, with no process.
    assert st["Running"] is True and st["Pid"] == 0
    # ...so plain `docker ps` lists it, as "Restarting (3) ... ago".
    assert wait_for(lambda: berthd.docker("ps", "--filter", "name=rs", "--format", "{{.Status}}")
                    .stdout.startswith("Restarting (3) "), timeout=30)
    # Held in the back-off: `rm` without force is refused, whatever the timing.
    cid = inspect(berthd, "rs")["Id"]
    cp = berthd.docker("rm", "rs", check=False)
    assert cp.returncode != 0 and "You cannot remove a" in cp.stderr
    if inspect(berthd, "rs")["State"]["Status"] == "restarting":
        assert f"You cannot remove a restarting container {cid}. Stop the container before attempting removal or force remove" in cp.stderr
    berthd.docker("rm", "-f", "rs")
    time.sleep(2)
    assert berthd.docker("ps", "-aq", "--filter", "name=rs").stdout.strip() == ""
    assert not shim_pids(cid)
    # docker-py's order: wait for the exit, then remove at once: the container is already
    # restarting (or running again), never `exited`.
    c = berthd.client()
    ctr = c.api.create_container("busybox", ["sleep", "1"], host_config=c.api.create_host_config(
        restart_policy={"Name": "always", "MaximumRetryCount": 0}, network_mode="none"))
    c.api.start(ctr)
    c.api.wait(ctr)
    import docker
    with pytest.raises(docker.errors.APIError) as e:
        c.api.remove_container(ctr)
    assert e.value.status_code == 409 and "You cannot remove a" in e.value.explanation
    c.api.remove_container(ctr, force=True)


def test_legacy_links(berthd):
    run(berthd, "-d", "--name", "db", "-e", "FOO=bar", "--expose", "5432", "busybox", "sleep", "300")
    db = inspect(berthd, "db")
    ip = db["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    out = run(berthd, "--name", "web", "--link", "db:my-db", "busybox", "sh", "-c",
              "env; echo ===; cat /etc/hosts").stdout
    env, hosts = out.split("===\n")
    env = env.splitlines()
    for want in ["MY_DB_NAME=/web/my-db", "MY_DB_ENV_FOO=bar", f"MY_DB_PORT=tcp://{ip}:5432",
                 f"MY_DB_PORT_5432_TCP=tcp://{ip}:5432", f"MY_DB_PORT_5432_TCP_ADDR={ip}",
                 "MY_DB_PORT_5432_TCP_PORT=5432", "MY_DB_PORT_5432_TCP_PROTO=tcp"]:
        assert want in env, (want, env)
    assert not any(e.startswith("MY_DB_ENV_PATH=") for e in env)
    assert f"{ip}\tmy-db {db['Config']['Hostname']} db" in hosts.splitlines()
    assert inspect(berthd, "web")["HostConfig"]["Links"] == ["/db:/web/my-db"]
    # `docker ps` lists the link name as one of the linked container's names.
    names = {tuple(c["Names"]) for c in json.loads(berthd.api("GET", "/containers/json?all=1").body)}
    assert ("/db", "/web/my-db") in names
    # The link name names the linked container in any container path (dockerd's
    # `/containers/{name:.*}/json`).
    assert berthd.docker("inspect", "-f", "{{.Name}}", "web/my-db").stdout.strip() == "/db"
    assert berthd.docker("top", "web/my-db").stdout.count("sleep 300") == 1
    # `docker rm --link` removes the link, not a container.
    berthd.docker("rm", "--link", "web/my-db")
    assert inspect(berthd, "web")["HostConfig"]["Links"] is None
    assert len(berthd.docker("ps", "-aq").stdout.split()) == 2
    cp = berthd.docker("rm", "--link", "web/my-db", check=False)
    assert cp.returncode != 0 and "No such container: web/my-db" in cp.stderr
    # Errors as dockerd words them.
    cp = run(berthd, "--link", "nosuch:x", "busybox", "true", check=False)
    assert cp.returncode != 0 and "could not get container for nosuch" in cp.stderr
    berthd.docker("create", "--name", "down", "busybox", "true")
    cp = run(berthd, "--name", "l2", "--link", "down", "busybox", "true", check=False)
    assert cp.returncode != 0 and "Cannot link to a non running container: /down AS /l2/down" in cp.stderr
    cp = run(berthd, "--network", "host", "--link", "db", "busybox", "true", check=False)
    assert cp.returncode != 0 and "host type networking can't be used with links" in cp.stderr
