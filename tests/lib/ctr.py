"""Helpers for the container tests: inspect, polling, terminals, leak checks."""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
import time
import uuid

from .berthd import docker_cli


def inspect(b, name) -> dict:
    return json.loads(b.docker("inspect", "--type", "container", name, timeout=30).stdout)[0]


def wait_for(pred, timeout: float = 20, interval: float = 0.1, what: str = "") -> bool:
    """Polls pred() until true; exceptions count as false. Returns whether it held."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return True
        except Exception as e:  # noqa: BLE001 - the state may be in flux
            last = e
        time.sleep(interval)
    if what:
        print(f"wait_for({what}) timed out; last error: {last!r}")
    return False


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def shim_pids(cid: str) -> list[int]:
    """berth-shim processes serving container `cid`."""
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            c = cmdline(int(p))
            if "berth-shim" in c.split(" ", 1)[0] and cid in c:
                out.append(int(p))
    return out


def leaks_of(b, cid: str) -> list[str]:
    """What a removed container left behind: mounts, cgroups, shims, its directory."""
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mp = line.split()[4]
            if cid in mp or cid[:24] in mp:
                found.append(f"mount {mp}")
    for d in glob.glob(f"/sys/fs/cgroup/*/berth/{cid}"):
        found.append(f"cgroup {d}")
    for p in shim_pids(cid):
        found.append(f"shim {p}: {cmdline(p)}")
    if os.path.exists(os.path.join(b.data_root, "containers", cid)):
        found.append(f"dir {b.data_root}/containers/{cid}")
    return found


class Tmux:
    """A docker CLI command in a real terminal (a tmux pane). Each has its own tmux server
    (`-L`): sessions of parallel tests sharing one server race with its exit."""

    def __init__(self, b, command: str, width: int = 120, height: int = 40,
                 program: str | None = None):
        self.name = f"berth-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        env = b.docker_env()
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items() if k.startswith("DOCKER"))
        # `sleep` keeps the pane (and its output) after the command returns; `echo` marks it.
        prog = program or docker_cli()
        shell = f"env {envs} {prog} {command}; echo CLI-EXITED-$?; sleep 600"
        self.tmux = ["tmux", "-L", self.name]
        subprocess.run([*self.tmux, "new-session", "-d", "-s", self.name, "-x", str(width),
                        "-y", str(height), shell], check=True, timeout=20)

    def send(self, *keys: str):
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True, timeout=10)

    def type(self, text: str):
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, "-l", text], check=True, timeout=10)
        self.send("Enter")

    def screen(self) -> str:
        return subprocess.run([*self.tmux, "capture-pane", "-t", self.name, "-p", "-S", "-200"],
                              capture_output=True, text=True, timeout=10).stdout

    def wait_screen(self, text: str, timeout: float = 20) -> bool:
        return wait_for(lambda: text in self.screen(), timeout=timeout)

    def close(self):
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, timeout=10)

    def resize(self, width: int, height: int):
        subprocess.run([*self.tmux, "resize-window", "-t", self.name, "-x", str(width), "-y", str(height)],
                       check=True, timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def require_tmux():
    """The terminal tests need tmux: fail loudly rather than skip silently."""
    r = subprocess.run(["which", "tmux"], capture_output=True, timeout=10)
    assert r.returncode == 0, "tmux is not installed (scripts/setup installs it)"


def past_events(b, *args, fmt: str = "{{.Action}}") -> list[str]:
    """`docker events` from 10 minutes ago until a moment from now (a relative `--until 0s`
    is whole seconds on the CLI's side, so it would miss this second's events)."""
    until = f"{time.time() + 0.5:.9f}"
    return b.docker("events", "--since", "10m", "--until", until, *args, "--format", fmt,
                    timeout=30).stdout.splitlines()
