"""Live restore (issue #3): containers outlive berthd (SIGKILL or SIGTERM); on start it
reattaches to every shim, records exits that happened meanwhile and applies restart
policies. A killed shim ends its container as exited 137."""

import os
import signal
import time

from lib.ctr import Tmux, inspect, leaks_of, past_events, require_tmux, shim_pids, wait_for


def run(b, *args, **kw):
    return b.docker("run", *args, **kw)


TICKER = "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done"


def ticks(b, name):
    return [int(l[4:]) for l in b.docker("logs", name).stdout.split() if l.startswith("tick")]


def test_sigkill_engine_while_containers_run(berthd):
    require_tmux()
    run(berthd, "-d", "--name", "tick", "busybox", "sh", "-c", TICKER)
    run(berthd, "-d", "--name", "paused", "busybox", "sleep", "300")
    berthd.docker("pause", "paused")
    run(berthd, "-d", "--name", "ends7", "busybox", "sh", "-c", "sleep 2; exit 7")
    run(berthd, "-d", "--name", "bounce", "--restart", "always", "busybox", "sh", "-c", "sleep 2; exit 1")
    run(berthd, "-d", "--name", "onf", "--restart", "on-failure:5", "busybox", "sh", "-c", "sleep 2; exit 0")
    run(berthd, "-dit", "--name", "shell", "busybox", "sh")
    pid = inspect(berthd, "tick")["State"]["Pid"]
    shell_pid = inspect(berthd, "shell")["State"]["Pid"]
    assert wait_for(lambda: len(ticks(berthd, "tick")) > 3)

    berthd.kill(signal.SIGKILL)
    t_down = time.monotonic()
    time.sleep(3)  # ends7, bounce and onf end while the engine is down
    os.kill(pid, 0)
    os.kill(shell_pid, 0)
    berthd.start()
    down = time.monotonic() - t_down

    i = inspect(berthd, "tick")
    assert i["State"]["Running"] and i["State"]["Pid"] == pid
    # The shim kept logging while berthd was down: no gap in the ticks.
    assert wait_for(lambda: len(ticks(berthd, "tick")) > down / 0.2)
    t = ticks(berthd, "tick")
    assert t == list(range(len(t))), "ticks missing from the log"
    n = len(t)
    assert wait_for(lambda: len(ticks(berthd, "tick")) > n + 3), "not logging after the restart"

    i = inspect(berthd, "ends7")
    assert i["State"]["Status"] == "exited" and i["State"]["ExitCode"] == 7
    assert not i["State"]["FinishedAt"].startswith("0001-")
    assert wait_for(lambda: inspect(berthd, "bounce")["RestartCount"] >= 1, timeout=15)
    onf = inspect(berthd, "onf")
    assert onf["State"]["Status"] == "exited" and onf["State"]["ExitCode"] == 0 and onf["RestartCount"] == 0

    assert inspect(berthd, "paused")["State"]["Status"] == "paused"
    berthd.docker("unpause", "paused")
    assert berthd.docker("exec", "paused", "echo", "thawed").stdout == "thawed\n"

    # Attachable: a new terminal reaches the very same shell.
    assert inspect(berthd, "shell")["State"]["Pid"] == shell_pid
    with Tmux(berthd, "attach shell") as tm:
        time.sleep(1)
        tm.type("echo restored-$((40+2))")
        assert tm.wait_screen("restored-42"), tm.screen()
        tm.send("C-p", "C-q")
        assert tm.wait_screen("read escape sequence\nCLI-EXITED-1"), tm.screen()
    assert berthd.docker("exec", "tick", "echo", "alive").stdout == "alive\n"
    # Stop and wait work on restored containers; nothing is left behind.
    cid = inspect(berthd, "tick")["Id"]
    t0 = time.monotonic()
    berthd.docker("stop", "-t", "1", "tick")
    assert time.monotonic() - t0 < 6
    assert inspect(berthd, "tick")["State"]["ExitCode"] == 137
    berthd.docker("rm", "tick")
    assert leaks_of(berthd, cid) == []


def test_graceful_engine_stop_keeps_containers(berthd):
    run(berthd, "-d", "--name", "keep", "busybox", "sh", "-c", TICKER)
    pid = inspect(berthd, "keep")["State"]["Pid"]
    assert berthd.stop() == 0
    os.kill(pid, 0)
    berthd.start()
    assert inspect(berthd, "keep")["State"]["Pid"] == pid
    # logs -f follows the restored container.
    import subprocess
    from lib.berthd import docker_cli
    p = subprocess.Popen([docker_cli(), "logs", "-f", "--tail", "0", "keep"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=berthd.docker_env(), text=True)
    time.sleep(1.5)
    berthd.docker("stop", "-t", "0", "keep")
    out, _ = p.communicate(timeout=20)
    assert len(out.split()) >= 5 and all(l.startswith("tick") for l in out.split())


def test_always_vs_unless_stopped_across_engine_restarts(berthd):
    run(berthd, "-d", "--name", "alw", "--restart", "always", "busybox", "sleep", "300")
    run(berthd, "-d", "--name", "uls", "--restart", "unless-stopped", "busybox", "sleep", "300")
    # Both running when the engine dies: both still running after.
    berthd.kill(signal.SIGKILL)
    berthd.start()
    assert inspect(berthd, "alw")["State"]["Running"] and inspect(berthd, "uls")["State"]["Running"]
    # The seed: stop both, restart the engine: only `always` comes back.
    berthd.docker("stop", "-t", "0", "alw", "uls")
    berthd.restart()
    assert wait_for(lambda: inspect(berthd, "alw")["State"]["Running"], timeout=20)
    assert inspect(berthd, "uls")["State"]["Running"] is False
    assert inspect(berthd, "uls")["State"]["Status"] == "exited"
    # Started again by the user, unless-stopped comes back after a crash too.
    berthd.docker("start", "uls")
    berthd.docker("stop", "-t", "0", "alw")
    berthd.kill(signal.SIGKILL)
    berthd.start()
    assert wait_for(lambda: inspect(berthd, "alw")["State"]["Running"], timeout=20)
    assert inspect(berthd, "uls")["State"]["Running"] is True


def test_killed_shim(berthd):
    run(berthd, "-d", "--name", "ks", "busybox", "sleep", "300")
    cid = inspect(berthd, "ks")["Id"]
    pid = inspect(berthd, "ks")["State"]["Pid"]
    shims = shim_pids(cid)
    assert len(shims) == 1, shims
    os.kill(shims[0], signal.SIGKILL)
    assert wait_for(lambda: inspect(berthd, "ks")["State"]["Status"] == "exited", timeout=20)
    i = inspect(berthd, "ks")
    assert i["State"]["ExitCode"] == 137 and i["State"]["Pid"] == 0
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10), "container process survived"
    ev = past_events(berthd, "--filter", "event=die", fmt="{{.Actor.Attributes.exitCode}}")
    assert ev == ["137"]
    # The engine stays consistent: the container starts again with a new shim, and goes cleanly.
    berthd.docker("start", "ks")
    assert berthd.docker("exec", "ks", "echo", "ok").stdout == "ok\n"
    assert len(shim_pids(cid)) == 1
    berthd.docker("rm", "-f", "ks")
    assert leaks_of(berthd, cid) == []
    # A restart policy brings a container back after its shim was killed.
    run(berthd, "-d", "--name", "ksa", "--restart", "always", "busybox", "sleep", "300")
    cid = inspect(berthd, "ksa")["Id"]
    os.kill(shim_pids(cid)[0], signal.SIGKILL)
    assert wait_for(lambda: inspect(berthd, "ksa")["RestartCount"] == 1
                    and inspect(berthd, "ksa")["State"]["Status"] == "running", timeout=20)
    assert berthd.docker("exec", "ksa", "true").returncode == 0


def test_shim_killed_while_engine_down(berthd):
    run(berthd, "-d", "--name", "kd", "busybox", "sleep", "300")
    cid = inspect(berthd, "kd")["Id"]
    pid = inspect(berthd, "kd")["State"]["Pid"]
    berthd.kill(signal.SIGKILL)
    for s in shim_pids(cid):
        os.kill(s, signal.SIGKILL)
    berthd.start()
    assert wait_for(lambda: inspect(berthd, "kd")["State"]["Status"] == "exited", timeout=20)
    assert inspect(berthd, "kd")["State"]["ExitCode"] == 137
    assert wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
    berthd.docker("rm", "kd")
    assert leaks_of(berthd, cid) == []
