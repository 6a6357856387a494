"""Containers through the real docker CLI and docker-py (issue #3)."""

import json
import os
import signal
import subprocess
import time

import pytest


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
    run(berthd, "--name", "lg", "busybox", "sh", "-c", "for i in 1 2 3; do echo out$i; echo err$i >&2; done")
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
    if subprocess.run(["which", "tmux"], capture_output=True).returncode != 0:
        pytest.skip("tmux is not installed")
    sess = f"berth-{os.getpid()}-{int(time.time()*1000)}"
    env = berthd.docker_env()
    envs = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("DOCKER"))
    from lib.berthd import docker_cli
    subprocess.run(["tmux", "new-session", "-d", "-s", sess, "-x", "100", "-y", "30",
                    f"env {envs} {docker_cli()} run -it --name itx busybox sh; sleep 30"], check=True, timeout=20)
    try:
        assert wait_for(lambda: inspect(berthd, "itx")["State"]["Running"], timeout=20)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", sess, "echo typed-$((6*7))", "Enter"], check=True)
        assert wait_for(lambda: "typed-42" in subprocess.run(["tmux", "capture-pane", "-t", sess, "-p"],
                                                             capture_output=True, text=True).stdout)
        subprocess.run(["tmux", "send-keys", "-t", sess, "C-p", "C-q"], check=True)
        time.sleep(1)
        assert inspect(berthd, "itx")["State"]["Running"] is True
    finally:
        subprocess.run(["tmux", "kill-session", "-t", sess], capture_output=True)


def test_exec_variants(berthd):
    run(berthd, "-d", "--name", "ex", "busybox", "sleep", "300")
    assert berthd.docker("exec", "ex", "echo", "hi").stdout == "hi\n"
    assert berthd.docker("exec", "ex", "sh", "-c", "exit 7", check=False).returncode == 7
    cp = berthd.docker("exec", "ex", "nosuch", check=False)
    assert cp.returncode == 127 and "executable file not found" in cp.stdout + cp.stderr
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
    shims = [p for p in os.listdir("/proc") if p.isdigit() and cid in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="ignore") and b"berth-shim" in open(f"/proc/{p}/cmdline", "rb").read()]
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
    ev = berthd.docker("events", "--since", "5m", "--until", "0s", "--filter", "container=tp", "--format", "{{.Action}}").stdout.split()
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
