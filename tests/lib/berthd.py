"""Start and drive a private berthd for one test.

Every instance has its own temporary directory (socket, data root, pid file,
log, docker CLI config), so tests are independent and may run in parallel.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

from . import unixhttp

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", "/var/cache/berth-target")
BERTHD_BIN = os.environ.get("BERTHD_BIN", os.path.join(TARGET_DIR, "debug", "berthd"))
SHIM_BIN = os.environ.get("BERTH_SHIM_BIN", os.path.join(TARGET_DIR, "debug", "berth-shim"))


def docker_cli() -> str:
    cli = os.environ.get("DOCKER_CLI", "/usr/local/bin/docker")
    if os.path.exists(cli):
        return cli
    return shutil.which("docker") or cli


class CommandFailed(AssertionError):
    pass


def _tail(path: str, n: int = 80) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(fh.readlines()[-n:])
    except OSError as e:
        return f"(no log: {e})"


class Berthd:
    def __init__(self, registry: str | None = None, extra_args=(), mirror: bool = True,
                 binary: str = BERTHD_BIN, env: dict | None = None):
        # /tmp keeps the socket path well under the 108-byte limit of sun_path.
        self.tmp = tempfile.mkdtemp(prefix="berth-t-", dir=os.environ.get("BERTH_TEST_TMP", "/tmp"))
        self.sock = os.path.join(self.tmp, "docker.sock")
        self.host = "unix://" + self.sock
        self.data_root = os.path.join(self.tmp, "root")
        self.pidfile = os.path.join(self.tmp, "berthd.pid")
        self.log_path = os.path.join(self.tmp, "berthd.log")
        self.docker_config = os.path.join(self.tmp, "docker-config")
        os.makedirs(self.docker_config)
        self.registry = registry
        self.binary = binary
        self.args = [binary, "-H", self.host, "--data-root", self.data_root,
                     "--pidfile", self.pidfile, "--log-level", "debug"]
        if registry and mirror:
            self.args += ["--registry-mirror", f"http://{registry}"]
        self.args += list(extra_args)
        # BERTHD_EXTRA_ARGS: more flags for every engine the tests start;
        # "{tmp}" stands for the instance's private directory.
        extra = os.environ.get("BERTHD_EXTRA_ARGS", "")
        self.args += [a.replace("{tmp}", self.tmp) for a in shlex.split(extra)]
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("DOCKER_"):
                del self.env[k]
        self.env.update({"BERTH_SHIM_BIN": SHIM_BIN, "RUST_BACKTRACE": "1"})
        self.env.update(env or {})
        self.proc: subprocess.Popen | None = None
        self.leaks: list[str] = []
        self._clients = []

    # --- lifecycle --------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30, wait: bool = True):
        if not os.path.exists(self.binary):
            raise RuntimeError(
                f"berthd binary not found at {self.binary}: run `cargo build --workspace` "
                "(or scripts/test), or set BERTHD_BIN")
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== test harness: starting {shlex.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=self.env)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"berthd exited with {self.proc.returncode} before answering "
                                   f"/_ping; log:\n{_tail(self.log_path)}")
            try:
                r = self.api("GET", "/_ping", timeout=2)
                if r.status == 200 and r.body == b"OK":
                    return
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError(f"berthd did not answer /_ping within {timeout}s (last: {last!r}); "
                           f"log:\n{_tail(self.log_path)}")

    def kill(self, sig=signal.SIGKILL, wait: float | None = 20) -> int | None:
        """Send a signal; for SIGKILL/SIGTERM (or when wait is set) wait for the exit."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        if wait and sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            return self.proc.wait(wait)
        return None

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, wait, SIGKILL if it does not go.  Returns the exit code."""
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.leaks.append(f"berthd {self.proc.pid} ignored SIGTERM for {timeout}s; SIGKILLed")
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def restart(self, timeout: float = 30):
        """Stop (if running) and start again on the same data root."""
        self.stop()
        return self.start(timeout)

    def log(self) -> str:
        return _tail(self.log_path, 10**9)

    def log_tail(self, n: int = 80) -> str:
        return _tail(self.log_path, n)

    # --- clients ----------------------------------------------------------
    def docker_env(self) -> dict:
        env = dict(self.env)
        env.update({"DOCKER_HOST": self.host, "DOCKER_CONFIG": self.docker_config,
                    "DOCKER_CLI_HINTS": "false", "NO_COLOR": "1"})
        return env

    def docker(self, *args, input=None, check: bool = True, timeout: float = 120,
               binary_input: bool = False) -> subprocess.CompletedProcess:
        """Run the real docker CLI against this engine.  stdout/stderr are text
        (unless binary_input, which also makes the output bytes)."""
        cmd = [docker_cli(), *map(str, args)]
        try:
            cp = subprocess.run(cmd, input=input, capture_output=True, text=not binary_input,
                                env=self.docker_env(), timeout=timeout, cwd=self.tmp)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(f"`{shlex.join(cmd[1:])}` timed out after {timeout}s\n"
                                f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
        if check and cp.returncode != 0:
            raise CommandFailed(f"`docker {shlex.join(cmd[1:])}` exited {cp.returncode}\n"
                                f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
        return cp

    def client(self, **kw):
        """A docker-py DockerClient for this engine."""
        import docker
        kw.setdefault("timeout", 120)
        c = docker.DockerClient(base_url=self.host, **kw)
        self._clients.append(c)
        return c

    def api(self, method: str, path: str, body=None, json=None, headers=None,
            timeout: float = 60) -> unixhttp.Response:
        """Raw HTTP on the socket: returns Response (status, headers, body)."""
        return unixhttp.request(self.sock, method, path, body=body, json=json,
                                headers=headers, timeout=timeout)

    def stream(self, method: str, path: str, body=None, headers=None, timeout: float = 60):
        return unixhttp.stream(self.sock, method, path, body=body, headers=headers, timeout=timeout)

    # --- teardown ---------------------------------------------------------
    def _procs_under_tmp(self) -> list[int]:
        """Processes that belong to this engine but outlived it: shims and
        container processes (their root or cmdline is under our tmp dir)."""
        found = []
        me = os.getpid()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            pid = int(name)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                continue
            if self.tmp in cmdline or root.startswith(self.tmp):
                found.append(pid)
        return found

    def _mounts_under_tmp(self) -> list[str]:
        out = []
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                mp = line.split()[4].encode().decode("unicode_escape")
                if mp == self.tmp or mp.startswith(self.tmp + "/"):
                    out.append(mp)
        return out

    def _remove_everything(self):
        """Remove containers and user networks through the engine, so it tears down what it
        made on the host (netns, veths, bridges, proxies) before it stops."""
        import json as _json
        try:
            r = self.api("GET", "/containers/json?all=1", timeout=20)
            for c in _json.loads(r.body or b"[]"):
                self.api("DELETE", f"/containers/{c['Id']}?force=1&v=1", timeout=60)
            r = self.api("GET", "/networks", timeout=20)
            for n in _json.loads(r.body or b"[]"):
                if n.get("Name") not in ("bridge", "host", "none"):
                    self.api("DELETE", f"/networks/{n['Id']}", timeout=20)
        except Exception as e:  # the engine may be gone; what it left is reported below
            self.leaks.append(f"could not remove containers/networks before stopping: {e}")

    def cleanup(self, keep: bool = False):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        if self.proc is not None and self.proc.poll() is not None and os.path.exists(self.data_root):
            # Killed by the test: bring it back once so it can clean up its containers.
            try:
                self.start()
            except Exception:
                pass
        if self.proc is not None and self.proc.poll() is None:
            self._remove_everything()
        self.stop()
        for pid in self._procs_under_tmp():
            self.leaks.append(f"process {pid} left behind: {_cmdline(pid)}")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        mounts = self._mounts_under_tmp()
        for mp in sorted(mounts, key=len, reverse=True):
            self.leaks.append(f"mount left behind: {mp}")
            subprocess.run(["umount", "-l", mp], capture_output=True, timeout=30)
        if keep:
            return
        if self._mounts_under_tmp():
            self.leaks.append(f"mounts remain under {self.tmp}; not removing it")
            return
        shutil.rmtree(self.tmp, ignore_errors=True)


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"
