"""VM mode end to end (docs/VM.md, issue #8): the real vm-image booted under QEMU/TCG with
berth-guest as PID 1 and berthd inside, driven by the real docker CLI through the host socket
~/.berth/run/docker.sock (a private BERTH_HOME here), vsock by vhost-device-vsock.

What it shows: boot to API-ready, pull from the host's local registry (the guest reaches the
host's loopback as 10.0.2.2), run/logs/exec, a published port reached with curl from the host
and freed when the container stops, a host port clash reported to the user, a bind mount of a
host folder (9p), clean stop that keeps images, restart, and a crashed VM detected.

The image is built by vm-image/build (the kernel is cached in /var/cache/berth-vm); scripts/test
builds it before pytest and passes BERTH_VM_KERNEL/BERTH_VM_INITRD.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

import pytest

from lib.berthd import REPO, TARGET_DIR, docker_cli

BERTH = os.environ.get("BERTH_CLI_BIN", os.path.join(TARGET_DIR, "debug", "berth"))
pytestmark = pytest.mark.timeout(1500)


def _vm_image() -> tuple[str, str]:
    k, i = os.environ.get("BERTH_VM_KERNEL"), os.environ.get("BERTH_VM_INITRD")
    if k and i:
        return k, i
    guest = os.path.join(TARGET_DIR, "x86_64-unknown-linux-musl", "release", "berth-guest")
    if not os.path.exists(guest):
        subprocess.run(
            ["cargo", "build", "-q", "-p", "berth-guest", "--release",
             "--target", "x86_64-unknown-linux-musl"], cwd=REPO, check=True)
    env = dict(os.environ, BERTH_GUEST_BIN=guest,
               BERTHD_BIN=os.environ.get("BERTHD_BIN", os.path.join(TARGET_DIR, "debug", "berthd")),
               BERTH_SHIM_BIN=os.environ.get("BERTH_SHIM_BIN",
                                             os.path.join(TARGET_DIR, "debug", "berth-shim")))
    out = subprocess.run([os.path.join(REPO, "vm-image", "build")], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    vals = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
    return vals["KERNEL"], vals["INITRD"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Vm:
    def __init__(self, registry_port: int | None, image: tuple[str, str] | None = None):
        self.home = tempfile.mkdtemp(prefix="berth-vm-")
        self.share = os.path.join(self.home, "share")
        os.makedirs(self.share)
        self.kernel, self.initrd = image or _vm_image()
        self.env = dict(os.environ, BERTH_HOME=os.path.join(self.home, ".berth"),
                        DOCKER_CONFIG=os.path.join(self.home, "docker-config"))
        self.env.pop("DOCKER_HOST", None)
        self.registry_port = registry_port
        self.socket = os.path.join(self.home, ".berth", "run", "docker.sock")

    def berth(self, *args, check=True, timeout=600):
        r = subprocess.run([BERTH, *args], env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"berth {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
                                 f"\n--- console:\n{self.console()[-3000:]}")
        return r

    def start(self, *extra):
        registry = [] if self.registry_port is None else [
            "--registry-mirror", f"http://10.0.2.2:{self.registry_port}",
            "--insecure-registry", f"10.0.2.2:{self.registry_port}"]
        return self.berth(
            "vm", "start", "--kernel", self.kernel, "--initrd", self.initrd,
            "--cpus", "2", "--memory", "1536", "--disk", "8", "--accel", "tcg",
            "--share", self.share, *registry, "--timeout", "400", *extra)

    def docker(self, *args, check=True, timeout=300, input=None):
        r = subprocess.run([docker_cli(), "-H", f"unix://{self.socket}", *args], env=self.env,
                           capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def state(self) -> dict:
        return json.loads(self.berth("vm", "status", "--json", check=False).stdout)

    def console(self) -> str:
        try:
            with open(os.path.join(self.env["BERTH_HOME"], "vm", "run", "console.log"),
                      errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        st = self.state()
        if st.get("state") in ("running", "starting", "stopping"):
            self.berth("vm", "stop", "--timeout", "60", check=False)
        pid = self.state().get("supervisor_pid") or 0
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        # Nothing of this VM may outlive the test.
        subprocess.run(["pkill", "-f", self.home], check=False)
        shutil.rmtree(self.home, ignore_errors=True)


def _port_free(port: int, timeout: float = 10) -> bool:
    """Whether a server could listen on 127.0.0.1:port (SO_REUSEADDR, as servers do: the
    forwarded connections leave TIME_WAIT entries behind)."""
    deadline = time.time() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
                return True
            except OSError:
                if time.time() > deadline:
                    return False
        time.sleep(0.2)


def _get(url: str, timeout: float = 30) -> str:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.read().decode()
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_vm_end_to_end(registry):
    if not os.path.exists(BERTH):
        subprocess.run(["cargo", "build", "-q", "-p", "berth-cli"], cwd=REPO, check=True)
    vm = Vm(int(registry.host.rsplit(":", 1)[1]))
    try:
        # -- boot to API-ready, the docker CLI through the host socket
        out = vm.start().stdout
        assert "VM started" in out, out
        st = vm.state()
        assert st["state"] == "running" and st["engine_answering"], st
        print(f"boot to engine ready: {st['boot_ms']} ms (QEMU TCG)")
        assert "berth-guest: ready" in vm.console()
        v = json.loads(vm.docker("version", "--format", "{{json .Server}}").stdout)
        assert v["Os"] == "linux", v
        info = vm.docker("info", "--format", "{{.Name}} {{.DockerRootDir}}").stdout.split()
        assert info == ["berth-vm", "/var/lib/berth"], info
        # `berth vm ssh`: a command in the VM, its output byte-exact and its exit code.
        r = vm.berth("vm", "ssh", "--", "sh", "-c", "uname -n; mount | grep -c ' /var/lib/berth '; exit 3",
                     check=False)
        assert (r.returncode, r.stdout) == (3, "berth-vm\n1\n"), (r.returncode, r.stdout, r.stderr)

        # -- pull from the host's registry through the mirror, run, logs, exec
        vm.docker("pull", "busybox")
        r = vm.docker("run", "--rm", "busybox", "sh", "-c", "echo hello from the vm; uname -n")
        assert r.stdout.startswith("hello from the vm\n"), r.stdout
        vm.docker("run", "-d", "--name", "web", "-p", f"127.0.0.1:{(port := _free_port())}:80",
                  "busybox", "sh", "-c",
                  "mkdir -p /www && echo served-from-vm > /www/index.html && "
                  "echo web up && exec httpd -f -p 80 -h /www")
        # -- the published port, bound on the host by the VM forwarder
        assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "served-from-vm"
        assert f"tcp 127.0.0.1:{port}" in vm.state()["ports"]
        assert vm.docker("port", "web", "80").stdout.strip() == f"127.0.0.1:{port}"
        assert "web up" in vm.docker("logs", "web").stdout
        r = vm.docker("exec", "web", "sh", "-c", "cat /www/index.html; exit 3", check=False)
        assert r.returncode == 3 and r.stdout.strip() == "served-from-vm", (r.returncode, r.stdout)
        # Freed on the host when the container stops.
        vm.docker("stop", "-t", "1", "web")
        assert _port_free(port), f"127.0.0.1:{port} still bound after the container stopped"
        assert f"tcp 127.0.0.1:{port}" not in vm.state()["ports"]

        # -- a port taken on the host: the user is told, the container does not start
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        tport = taken.getsockname()[1]
        r = vm.docker("run", "-d", "--name", "clash", "-p", f"127.0.0.1:{tport}:80", "busybox",
                      "sleep", "60", check=False)
        taken.close()
        assert r.returncode != 0 and "port is already allocated" in r.stderr, r.stderr
        assert vm.docker("inspect", "-f", "{{.State.Running}}", "clash").stdout.strip() == "false"
        vm.docker("rm", "-f", "clash")

        # -- a bind mount of a host folder (9p share at the same path)
        app = os.path.join(vm.share, "app")
        os.makedirs(app)
        with open(os.path.join(app, "msg.txt"), "w") as f:
            f.write("written on the host\n")
        r = vm.docker("run", "--rm", "-v", f"{app}:/app", "busybox", "sh", "-c",
                      "cat /app/msg.txt && echo written in the vm > /app/back.txt")
        assert r.stdout == "written on the host\n", r.stdout
        with open(os.path.join(app, "back.txt")) as f:
            assert f.read() == "written in the vm\n"

        # -- clean stop keeps data; restart finds the image and the stopped container
        vm.docker("volume", "create", "keep")
        vm.docker("run", "--rm", "-v", "keep:/data", "busybox", "sh", "-c", "echo kept > /data/f")
        r = vm.berth("vm", "stop")
        assert "VM stopped" in r.stdout
        assert vm.state()["state"] == "stopped"
        assert "powered off cleanly" in vm.console()
        assert not os.path.exists(vm.socket)
        vm.start()
        assert "busybox" in vm.docker("images", "--format", "{{.Repository}}").stdout
        assert vm.docker("ps", "-a", "--format", "{{.Names}}").stdout.split() == ["web"]
        r = vm.docker("run", "--rm", "-v", "keep:/data", "busybox", "cat", "/data/f")
        assert r.stdout == "kept\n"
        # berthd's start restored port bindings are re-announced (idempotent on the host).
        vm.docker("start", "web")
        assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "served-from-vm"

        # -- a crash of the VM is detected and reported
        qemu_pid = vm.state()["vm_pid"]
        os.kill(qemu_pid, signal.SIGKILL)
        deadline = time.time() + 30
        while vm.state()["state"] != "crashed":
            assert time.time() < deadline, vm.state()
            time.sleep(0.2)
        st = vm.state()
        assert "stopped unexpectedly" in (st.get("message") or ""), st
        r = vm.berth("vm", "status", check=False)
        assert r.returncode != 0 and "crashed" in r.stdout, r.stdout
        # The host listener of the running container went away with the VM.
        assert _port_free(port), f"127.0.0.1:{port} still bound after the VM crashed"
    finally:
        vm.cleanup()


def test_vm_start_without_image_says_why(tmp_path):
    if not os.path.exists(BERTH):
        pytest.skip(f"{BERTH} not built")
    env = dict(os.environ, BERTH_HOME=str(tmp_path), BERTH_VM_IMAGE_DIR=str(tmp_path / "none"))
    r = subprocess.run([BERTH, "vm", "start", "--kernel", str(tmp_path / "nokernel"),
                        "--initrd", str(tmp_path / "noinitrd"), "--timeout", "20"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "nokernel does not exist" in r.stderr, r.stderr
    r = subprocess.run([BERTH, "vm", "status"], env=env, capture_output=True, text=True)
    assert r.returncode in (1, 3) and "State:" in r.stdout


# ---- the arm64 image (docs/VM.md "aarch64") ---------------------------------------------------

VM_CACHE = os.environ.get("BERTH_VM_CACHE", "/var/cache/berth-vm")


def _aarch64_image() -> tuple[tuple[str, str] | None, str]:
    """The arm64 kernel `Image` and initramfs to boot, or None and why not. Never builds a
    kernel: BERTH_VM_AARCH64_KERNEL/_INITRD, else (BERTH_VM_AARCH64_BUILD=1) vm-image/build
    --arch aarch64 when the kernel for kernel/aarch64.config is already cached (it then only
    cross-builds berth-guest/berthd and packs the initramfs), else the newest aarch64 image in
    the cache as last built (its berthd may be older than the tree)."""
    k, i = os.environ.get("BERTH_VM_AARCH64_KERNEL"), os.environ.get("BERTH_VM_AARCH64_INITRD")
    if k and i:
        return (k, i), "from BERTH_VM_AARCH64_KERNEL/_INITRD"
    if os.environ.get("BERTH_VM_AARCH64_BUILD") == "1":
        with open(os.path.join(REPO, "vm-image", "kernel", "aarch64.config"), "rb") as f:
            fragment = f.read()
        cached = False
        for d in glob.glob(os.path.join(VM_CACHE, "kernel-*")):
            try:
                with open(os.path.join(d, "arch")) as a, \
                        open(os.path.join(d, "fragment.config"), "rb") as fr:
                    cached |= a.read().strip() == "aarch64" and fr.read() == fragment \
                        and os.path.exists(os.path.join(d, "Image"))
            except OSError:
                pass
        if not cached:
            return None, ("no cached aarch64 kernel for vm-image/kernel/aarch64.config: build it "
                          "once with `vm-image/build --arch aarch64` (~30 min); a test run never does")
        out = subprocess.run([os.path.join(REPO, "vm-image", "build"), "--arch", "aarch64"],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        vals = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
        return (vals["KERNEL"], vals["INITRD"]), "vm-image/build --arch aarch64 (cached kernel)"
    found = []
    for d in glob.glob(os.path.join(VM_CACHE, "image-*")):
        try:
            with open(os.path.join(d, ".arch")) as a:
                if a.read().strip() != "aarch64":
                    continue
        except OSError:
            continue
        k, i = os.path.join(d, "Image"), os.path.join(d, "initrd.img")
        if os.path.exists(k) and os.path.exists(i):
            found.append((os.path.getmtime(i), k, i))
    if not found:
        return None, (f"no aarch64 VM image in {VM_CACHE} (vm-image/build --arch aarch64 builds "
                      "one, ~30 min the first time; set BERTH_VM_AARCH64_KERNEL/_INITRD to use another)")
    _, k, i = max(found)
    return (k, i), f"newest cached aarch64 image {os.path.dirname(k)}"


@pytest.mark.slow
def test_vm_aarch64_image_under_tcg():
    """`berth vm start` boots the cross-built arm64 image with qemu-system-aarch64 -M virt (TCG
    on this x86_64 host): the API over vsock (/_ping, docker version), a container built and run
    in the VM (stdin's EOF crosses the framed vsock stream), a published port, 9p, clean stop."""
    if os.environ.get("BERTH_VM_AARCH64") == "0":
        pytest.skip("BERTH_VM_AARCH64=0")
    if not shutil.which("qemu-system-aarch64"):
        pytest.skip("qemu-system-aarch64 is not installed (apt-get install qemu-system-arm)")
    image, how = _aarch64_image()
    if image is None:
        print(f"skipping the aarch64 VM test: {how}")
        pytest.skip(how)
    print(f"aarch64 image: {how}: {image[0]} {image[1]}")
    if not os.path.exists(BERTH):
        subprocess.run(["cargo", "build", "-q", "-p", "berth-cli"], cwd=REPO, check=True)
    vm = Vm(None, image)
    try:
        t0 = time.time()
        out = vm.start().stdout
        assert "VM started" in out, out
        st = vm.state()
        assert st["state"] == "running" and st["engine_answering"], st
        print(f"aarch64: boot to engine ready {st['boot_ms']} ms, `berth vm start` "
              f"{time.time() - t0:.1f} s (QEMU TCG)")
        with open(f"/proc/{st['vm_pid']}/cmdline", "rb") as f:
            argv = f.read().decode().split("\0")
        assert os.path.basename(argv[0]) == "qemu-system-aarch64", argv
        assert argv[argv.index("-M") + 1].startswith("virt,"), argv
        assert "vhost-user-vsock-device,chardev=vsock" in argv, argv

        # -- the Docker API over vsock: _ping and version through the host socket
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(vm.socket)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            resp = b""
            while chunk := s.recv(4096):
                resp += chunk
        assert resp.startswith(b"HTTP/1.1 200") and resp.endswith(b"\r\n\r\nOK"), resp
        v = json.loads(vm.docker("version", "--format", "{{json .Server}}").stdout)
        assert (v["Os"], v["Arch"]) == ("linux", "arm64"), v
        assert vm.docker("info", "--format", "{{.Architecture}}").stdout.strip() == "aarch64"
        r = vm.berth("vm", "ssh", "--", "uname", "-m")
        assert r.stdout == "aarch64\n", r.stdout

        # -- an arm64 image made from the guest's own static busybox, over the 9p share
        ctx = os.path.join(vm.share, "ctx")
        os.makedirs(ctx)
        vm.berth("vm", "ssh", "--", "cp", "/usr/bin/busybox", os.path.join(ctx, "busybox"))
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write('FROM scratch\nCOPY busybox /bin/busybox\n'
                    'RUN ["/bin/busybox", "--install", "-s", "/bin"]\nCMD ["/bin/sh"]\n')
        vm.docker("build", "-q", "-t", "bb-arm64", ctx, timeout=300)
        assert vm.docker("run", "--rm", "bb-arm64", "uname", "-m").stdout == "aarch64\n"
        r = vm.docker("run", "--rm", "-i", "bb-arm64", "sh", "-c", "cat; echo after-eof",
                      input="through vsock\n")
        assert r.stdout == "through vsock\nafter-eof\n", r.stdout

        # -- a published port, forwarded over vsock and freed when the container stops
        port = _free_port()
        vm.docker("run", "-d", "--name", "web", "-p", f"127.0.0.1:{port}:8080", "bb-arm64",
                  "sh", "-c", "mkdir -p /www && echo served-from-arm64 > /www/index.html && "
                  "exec httpd -f -p 8080 -h /www")
        assert _get(f"http://127.0.0.1:{port}/index.html").strip() == "served-from-arm64"
        vm.docker("rm", "-f", "web")
        assert _port_free(port), f"127.0.0.1:{port} still bound after the container went"

        # -- clean stop
        r = vm.berth("vm", "stop")
        assert "VM stopped" in r.stdout
        assert vm.state()["state"] == "stopped"
        assert "powered off cleanly" in vm.console()
    finally:
        vm.cleanup()
