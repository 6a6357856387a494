"""The seed walkthrough: the real docker CLI through every command in
shared/seed/docker-notes.md that an engine serves, against berthd.

Adaptations (the notes use Docker Hub and port 80):
- Hub images (redis, postgres, ubuntu, debian, golang, nigelpoulton/ddd-book,
  jadedjelly/...) are busybox stand-ins pushed into a private local registry
  that berthd uses as its --registry-mirror; the "server" stand-ins (redis,
  postgres, ddd-book) print a banner and serve HTTP with busybox httpd, and
  exit on SIGTERM.
- /bin/bash -> /bin/sh (busybox has no bash); `-p 80:8080` -> a free high
  port; `-restart` (a typo in the notes) -> `--restart`; `docker image
  --filter` (not a command) -> `docker images --filter`; `Wit-demo`
  (uppercase: invalid reference) is checked to be refused, then pulled in
  lower case; `gcr.io/...` -> the local registry's host:port.
- Registry-only commands use the local registry: `docker manifest inspect`
  (the CLI talks to the registry itself), `docker push`, `docker search`.
- `nsenter -t 1` (the host's PID 1) -> `nsenter -t <berthd's pid>`: this
  sandbox refuses even root on the host access to PID 1's namespaces.
- Not engine commands, not run: `docker buildx create --driver
  docker-container` (a BuildKit container driver), `docker plugin install`
  (needs Docker Hub; `docker plugin ls` is run).

Every section has its own engine, so the file runs under pytest-xdist.

The sections are plain functions of an engine (``step_*``, listed in
``STEPS``), so the same walkthrough runs against other Docker hosts:
tests/test_vm_seed.py runs it through the VM's host socket.  An engine
passed to a step has ``docker(*args, check=, timeout=, input=)``,
``docker_env()`` (with ``DOCKER_HOST``), ``tmp`` (a working directory),
``reg`` (the seed Registry, as the host reaches it: ``docker manifest
inspect`` and the checks of pushed tags), ``ref_host`` (the registry's
host:port as the engine reaches it, for image references) and
``nsenter_pid`` (a process in the engine's host namespaces, for
``nsenter -t``).  ``TIME_SCALE`` stretches the helpers' waits (slow engines).
An engine may also have ``cli``, the client program the steps run where they
spawn it themselves (``-it`` on a pseudo-terminal, ``build``, an attached
``run``; default: the docker CLI): tests/compat/test_seed_berth_cli.py runs
the walkthrough with the bundled ``berth`` CLI in place of ``docker``.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import build as image_build  # tests/images/build.py
from lib.berthd import docker_cli
from lib.ports import free_port
from lib.registry import Registry

# --------------------------------------------------------------------------
# stand-in images
# --------------------------------------------------------------------------

SERVER_SH = ('trap "echo shutting down; exit 0" TERM INT; '
             'echo "{banner}"; httpd -p {port} -h /srv; '
             'while :; do sleep 1; done')


def _standin(name, tag, cmd, files=(), exposed=None, env=()):
    layers = [image_build.busybox_layer()]
    if files:
        entries = []
        dirs = set()
        for path, data in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                p = "/".join(parts[:i])
                if p not in dirs:
                    dirs.add(p)
                    entries.append(image_build.d(p))
            entries.append(image_build.f(path, data))
        layers.append(image_build.make_layer(entries, f"/bin/sh -c #(nop) COPY dir:{name} in / "))
    extra = {}
    if exposed:
        extra["ExposedPorts"] = {f"{exposed}/tcp": {}}
    cfg = image_build.base_config(cmd, **extra)
    cfg["Env"] = cfg["Env"] + list(env)
    m = image_build.make_manifest(layers, cfg, "2024-01-01T00:00:00Z",
                                  extra_history=[(len(layers) - 1, image_build.cmd_history(cmd))])
    return image_build.Image(name, tag, [m], description=f"stand-in for {name}:{tag}")


def _server(name, tag, banner, port, env=()):
    return _standin(name, tag, ["sh", "-c", SERVER_SH.format(banner=banner, port=port)],
                    files=[("srv/index.html", f"{name}:{tag} stand-in\n")], exposed=port, env=env)


WEB_PAGE = "Hello from the ddd-book web0.1 stand-in"


def _images():
    return [
        _server("library/redis", "latest", "* Ready to accept connections tcp", 6379),
        _server("library/redis", "7.2.3-alpine", "* Ready to accept connections tcp", 6379),
        _server("library/redis", "6.2", "* Ready to accept connections", 6379),
        _server("library/postgres", "13.10", "database system is ready to accept connections", 5432,
                env=["PG_MAJOR=13"]),
        _server("library/postgres", "14.7", "database system is ready to accept connections", 5432,
                env=["PG_MAJOR=14"]),
        _standin("library/ubuntu", "latest", ["/bin/sh"],
                 files=[("etc/lsb-release", "DISTRIB_ID=Ubuntu (Berth stand-in)\n")]),
        _standin("library/debian", "latest", ["/bin/sh"],
                 files=[("etc/debian_version", "12.0 (Berth stand-in)\n")]),
        _standin("jadedjelly/wit-demo", "v2", ["echo", "wit-demo v2"]),
        _standin("google-containers/ubuntu", "19.23", ["/bin/sh"],
                 files=[("etc/lsb-release", "DISTRIB_ID=Ubuntu 19.23 (Berth stand-in)\n")]),
        _standin("nigelpoulton/ddd-book", "web0.1", ["httpd", "-f", "-p", "8080", "-h", "/src"],
                 files=[("src/index.html", WEB_PAGE + "\n")], exposed=8080),
    ]


@pytest.fixture(scope="module")
def seedreg(images):
    """A private registry with the stand-ins, plus the project's alpine and
    busybox images, and golang as a copy of the multi-platform busybox."""
    reg = Registry().start()
    try:
        image_build.push_all(images.store, reg.host)
        image_build.push_described(images.store, reg.host, images.desc("library/busybox"),
                                   repo="library/golang", tag="latest")
        for img in _images():
            image_build.push_image(reg.host, img)
        yield reg
    finally:
        reg.cleanup()


@pytest.fixture
def engine(berthd_factory, seedreg):
    e = berthd_factory(registry_host=seedreg.host)
    e.reg = seedreg
    e.ref_host = seedreg.host
    # The notes' `nsenter -t 1`: this sandbox refuses even root on the host access to PID 1's
    # namespaces, so berthd's (also in the host's namespaces).
    e.nsenter_pid = e.pid
    return e


# Multiplies the waits below (prompts, ports, state changes); tests/test_vm_seed.py raises it
# for the VM under QEMU's TCG emulation.
TIME_SCALE = 1.0


def _t(seconds):
    return seconds * TIME_SCALE


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _cli(engine) -> str:
    """The client program the engine's steps run (the docker CLI unless it says otherwise)."""
    return getattr(engine, "cli", None) or docker_cli()


class Pty:
    """The docker CLI (or the engine's ``cli``) on a pseudo-terminal, for `-it`."""

    def __init__(self, engine, *args):
        import pty
        import fcntl
        import struct
        import termios
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.proc = subprocess.Popen([_cli(engine), *args], stdin=slave, stdout=slave, stderr=slave,
                                     env=engine.docker_env(), cwd=engine.tmp, start_new_session=True,
                                     close_fds=True)
        os.close(slave)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        os.write(self.master, data)

    def expect(self, pattern, timeout=20):
        timeout = _t(timeout)
        rx = re.compile(pattern.encode() if isinstance(pattern, str) else pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {pattern!r}; screen so far: {self.buf[-2000:]!r}")
            r, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if r:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    chunk = b""
                if not chunk and self.proc.poll() is not None:
                    raise AssertionError(f"CLI exited {self.proc.returncode} before {pattern!r}; "
                                         f"screen: {self.buf[-2000:]!r}")
                self.buf += chunk

    def wait(self, timeout=20) -> int:
        timeout = _t(timeout)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            r, _, _ = select.select([self.master], [], [], 0.2)
            if r:
                try:
                    self.buf += os.read(self.master, 65536)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.close()
            raise AssertionError(f"CLI did not exit; screen: {self.buf[-2000:]!r}")
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        try:
            os.close(self.master)
        except OSError:
            pass


def _get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode(errors="replace")


def _get_eventually(url, want, timeout=15):
    timeout = _t(timeout)
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            status, body = _get(url)
            if want in body:
                return body
            last = (status, body[:200])
        except (OSError, urllib.error.URLError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{url}: {want!r} not served within {timeout}s (last: {last!r})")


def _inspect(engine, *args):
    return json.loads(engine.docker("inspect", *args).stdout)


def _wait_for(cond, timeout=15, what="condition"):
    timeout = _t(timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _unique_prefix(full_id, others, n=3):
    full_id = full_id.split(":")[-1]
    others = [o.split(":")[-1] for o in others if o.split(":")[-1] != full_id]
    while any(o.startswith(full_id[:n]) for o in others):
        n += 1
    return full_id[:n]


# --------------------------------------------------------------------------
# "Commands" and "Images"
# --------------------------------------------------------------------------

def step_images(engine, tmp_path):
    d = engine.docker
    reg = engine.ref_host

    out = d("pull", "redis").stdout
    assert "Using default tag: latest" in out and "docker.io/library/redis:latest" in out, out
    assert "Status: Downloaded newer image for redis:latest" in out, out
    out = d("pull", "redis:7.2.3-alpine").stdout
    assert "Downloaded newer image for redis:7.2.3-alpine" in out, out

    # `docker pull jadedjelly/Wit-demo:v2`: refused, repository names are lower case
    cp = d("pull", "jadedjelly/Wit-demo:v2", check=False)
    assert cp.returncode != 0 and "must be lowercase" in cp.stderr, cp
    d("pull", "jadedjelly/wit-demo:v2")

    # `docker pull gcr.io/google-containers/ubuntu:19.23`: another registry, by host
    out = d("pull", f"{reg}/google-containers/ubuntu:19.23").stdout
    assert f"{reg}/google-containers/ubuntu:19.23" in out, out

    d("pull", "ubuntu:latest")
    out = d("images", "--filter=reference=ubun*").stdout
    lines = out.strip().splitlines()
    assert lines[0].split()[:2] == ["REPOSITORY", "TAG"], out
    assert [ln.split()[0] for ln in lines[1:]] == ["ubuntu"], out

    out = d("images", "--format", "{{.Repository}}: {{.Tag}}: {{.Size}}").stdout
    rows = set(out.strip().splitlines())
    for want in ("redis: latest: ", "redis: 7.2.3-alpine: ", "ubuntu: latest: ",
                 "jadedjelly/wit-demo: v2: ", f"{reg}/google-containers/ubuntu: 19.23: "):
        assert any(r.startswith(want) and re.search(r"\d(\.\d+)?[kMG]?B$", r) for r in rows), (want, out)

    info = _inspect(engine, "ubuntu:latest")
    assert len(info) == 1 and "ubuntu:latest" in info[0]["RepoTags"], info
    assert info[0]["RootFS"]["Type"] == "layers" and len(info[0]["RootFS"]["Layers"]) == 2, info
    assert info[0]["Config"]["Cmd"] == ["/bin/sh"], info

    hist = d("history", "ubuntu:latest").stdout
    assert "IMAGE" in hist.splitlines()[0] and "CREATED BY" in hist.splitlines()[0], hist
    assert "CMD" in hist and "COPY dir:library/ubuntu" in hist.replace("…", ""), hist

    # pull by digest
    digest = info[0]["RepoDigests"][0].split("@")[1]
    out = d("pull", f"ubuntu@{digest}").stdout
    assert f"Digest: {digest}" in out, out
    assert any(r.endswith("@" + digest) for r in _inspect(engine, "ubuntu:latest")[0]["RepoDigests"])

    # rmi by the first characters of the id
    ids = d("images", "-q", "--no-trunc").stdout.split()
    wit = _inspect(engine, "jadedjelly/wit-demo:v2")[0]["Id"]
    prefix = _unique_prefix(wit, ids)
    out = d("rmi", prefix).stdout
    assert "Untagged: jadedjelly/wit-demo:v2" in out and f"Deleted: {wit}" in out, out

    # `docker images -q`, then delete them all
    short = d("images", "-q").stdout.split()
    assert short and all(re.fullmatch(r"[0-9a-f]{12}", s) for s in short), short
    d("rmi", "-f", *sorted(set(short)))
    assert d("images", "-q").stdout.strip() == ""


def step_manifest_search(engine, tmp_path):
    """Registry-only commands, pointed at the local registry."""
    # `docker manifest inspect` is the CLI talking to the registry itself (from this host).
    out = engine.docker("manifest", "inspect", "--insecure", f"{engine.reg.host}/library/golang").stdout
    arches = re.findall(r'"architecture":\s*"([^"]+)"', out)
    assert sorted(arches) == ["amd64", "arm64"], out
    assert '"os": "linux"' in out, out

    cp = engine.docker("search", f"{engine.ref_host}/redis", check=False)
    # Distribution (the local registry) has no /v1/search: dockerd answers
    # with an error too; the engine must relay a clean error, not hang/crash.
    if cp.returncode == 0:
        assert "redis" in cp.stdout, cp
    else:
        assert "Error" in cp.stderr or "error" in cp.stderr, cp
    engine.docker("version")  # still serving


# --------------------------------------------------------------------------
# "Containers": running, lifecycle
# --------------------------------------------------------------------------

def step_lifecycle(engine, tmp_path):
    d = engine.docker
    d("pull", "ubuntu:latest")

    # docker run -it ubuntu:latest /bin/bash ; exit
    t = Pty(engine, "run", "-it", "ubuntu:latest", "/bin/sh")
    try:
        t.expect(r"# ")
        t.send("ps; touch /tmp/x; echo made-$((20+22))\r")
        t.expect(r"made-42")
        t.send("exit\r")
        assert t.wait() == 0
    finally:
        t.close()
    cid = d("ps", "-alq").stdout.strip()
    assert "Exited (0)" in d("ps", "-a", "--filter", f"id={cid}").stdout
    d("stop", cid)   # stopping a stopped container is fine
    d("rm", cid)

    # docker run --name bob -it ubuntu:latest /bin/bash ; Ctrl-PQ
    t = Pty(engine, "run", "--name", "bob", "-it", "ubuntu:latest", "/bin/sh")
    try:
        t.expect(r"# ")
        t.send("cd /tmp && echo 'DevOps FTW' > newfile && cat newfile\r")
        t.expect(r"DevOps FTW\r?\n")
        t.send(b"\x10\x11")  # Ctrl-P Ctrl-Q
        assert t.wait() == 0
    finally:
        t.close()
    assert "bob" in d("ps", "--format", "{{.Names}}").stdout.split()
    assert _inspect(engine, "bob")[0]["State"]["Running"] is True

    d("stop", "bob")
    assert "bob" not in d("ps", "--format", "{{.Names}}").stdout.split()
    psa = d("ps", "-a", "--filter", "name=bob").stdout
    assert "Exited" in psa, psa

    d("start", "bob")
    assert d("exec", "bob", "cat", "/tmp/newfile").stdout == "DevOps FTW\n"
    t = Pty(engine, "exec", "-it", "bob", "sh")
    try:
        t.expect(r"# ")
        t.send("cat /tmp/newfile; exit\r")
        t.expect(r"DevOps FTW")
        assert t.wait() == 0
    finally:
        t.close()

    d("stop", "bob")
    d("rm", "bob")
    assert "bob" not in d("ps", "-a", "--format", "{{.Names}}").stdout.split()
    # docker inspect on a container (Chapter commands)
    cid = d("run", "-d", "ubuntu:latest", "sleep", "60").stdout.strip()
    info = _inspect(engine, cid[:5])[0]
    assert info["Id"] == cid and info["Config"]["Cmd"] == ["sleep", "60"], info
    # `docker rm -f` sends SIGKILL
    d("rm", "-f", cid[:5])


def step_restart(engine, tmp_path):
    d = engine.docker
    d("pull", "ubuntu")
    t = Pty(engine, "run", "--name", "bob", "-it", "--restart", "always", "ubuntu", "sh")
    try:
        t.expect(r"# ")
        t.send("exit\r")
        assert t.wait() == 0
    finally:
        t.close()
    # Restarted: running again after at least one restart.  (State.Running is already true
    # while the engine waits to restart it, Status "restarting": a slow engine -- the VM under
    # emulation -- shows that window, so it is not enough.)
    state = _wait_for(lambda: (lambda i: i["State"] if i["State"]["Status"] == "running"
                               and i["RestartCount"] >= 1 else None)(_inspect(engine, "bob")[0]),
                      what="bob restarted")
    info = _inspect(engine, "bob")[0]
    assert info["RestartCount"] >= 1 and info["HostConfig"]["RestartPolicy"]["Name"] == "always", info
    ps = d("ps", "--filter", "name=bob", "--format", "{{.Status}}|{{.RunningFor}}").stdout
    assert ps.startswith("Up "), ps
    assert state["Running"]
    d("rm", "-f", "bob")

    # unless-stopped and on-failure
    d("run", "-d", "--name", "us", "--restart", "unless-stopped", "ubuntu", "sleep", "300")
    d("stop", "-t", "1", "us")
    time.sleep(1)
    assert _inspect(engine, "us")[0]["State"]["Running"] is False
    d("run", "-d", "--name", "of", "--restart", "on-failure:2", "ubuntu", "sh", "-c", "exit 3")
    _wait_for(lambda: _inspect(engine, "of")[0]["RestartCount"] == 2
              and not _inspect(engine, "of")[0]["State"]["Running"], timeout=30,
              what="on-failure:2 to give up after 2 restarts")
    assert _inspect(engine, "of")[0]["State"]["ExitCode"] == 3


# --------------------------------------------------------------------------
# "Webserver example"
# --------------------------------------------------------------------------

def step_webserver(engine, tmp_path):
    d = engine.docker
    port = free_port()
    # docker run --name webserver -d -p 80:8080 nigelpoulton/ddd-book:web0.1
    cp = d("run", "--name", "webserver", "-d", "-p", f"{port}:8080", "nigelpoulton/ddd-book:web0.1")
    assert "Downloaded newer image for nigelpoulton/ddd-book:web0.1" in cp.stderr, cp
    ps = d("ps").stdout
    assert "webserver" in ps and f"0.0.0.0:{port}->8080/tcp" in ps, ps
    assert WEB_PAGE in _get_eventually(f"http://localhost:{port}/", WEB_PAGE)
    assert d("port", "webserver").stdout.splitlines()[0] == f"8080/tcp -> 0.0.0.0:{port}"

    img = _inspect(engine, "nigelpoulton/ddd-book:web0.1")[0]
    assert img["Config"]["Cmd"] == ["httpd", "-f", "-p", "8080", "-h", "/src"], img
    assert "8080/tcp" in img["Config"]["ExposedPorts"], img

    d("pause", "webserver")
    assert _inspect(engine, "webserver")[0]["State"]["Status"] == "paused"
    assert "(Paused)" in d("ps", "--filter", "name=webserver").stdout
    d("unpause", "webserver")
    assert WEB_PAGE in _get_eventually(f"http://localhost:{port}/", WEB_PAGE)
    d("stop", "webserver")
    with pytest.raises(OSError):
        _get(f"http://127.0.0.1:{port}/", timeout=1)
    d("start", "webserver")
    assert WEB_PAGE in _get_eventually(f"http://localhost:{port}/", WEB_PAGE)

    # Nigel's clean-up: docker rm $(docker ps -aq) -f
    all_ids = d("ps", "-aq").stdout.split()
    d("rm", *all_ids, "-f")
    assert d("ps", "-aq").stdout.strip() == ""


# --------------------------------------------------------------------------
# "Containerizing an app" and multi-stage builds
# --------------------------------------------------------------------------

DOCKERFILE = """\
FROM alpine
LABEL maintainer="nigelpoulton@hotmail.com"
RUN mkdir -p /usr/lib/node_modules && echo "apk add nodejs npm (stand-in)" > /usr/lib/node_modules/README
COPY . /src
WORKDIR /src
RUN echo "npm install (stand-in)" > npm-install.log
EXPOSE 8080
ENTRYPOINT ["httpd", "-f", "-p", "8080", "-h", "/src/views"]
"""

MULTISTAGE = """\
FROM busybox AS base
WORKDIR /src
COPY go.mod ./
RUN echo "go mod download (stand-in)" > deps

FROM base AS build-client
RUN echo '#!/bin/sh' > /bin/client && echo 'echo client' >> /bin/client && chmod +x /bin/client

FROM base AS build-server
RUN echo '#!/bin/sh' > /bin/server && echo 'echo server' >> /bin/server && chmod +x /bin/server

FROM scratch AS prod
COPY --from=base /bin/busybox /bin/sh
COPY --from=build-client /bin/client /bin/
COPY --from=build-server /bin/server /bin/
ENTRYPOINT ["/bin/server"]
"""


def step_containerize(engine, tmp_path):
    d = engine.docker
    reg = engine.ref_host
    app = tmp_path / "web-app"
    (app / "views").mkdir(parents=True)
    (app / "Dockerfile").write_text(DOCKERFILE)
    (app / "views" / "index.html").write_text("<h1>ddd-book ch8.1</h1>\n")
    (app / "package.json").write_text('{"name": "ddd-book"}\n')

    cp = subprocess.run([_cli(engine), "build", "-t", "ddd-book:ch8.1", "."], cwd=app,
                        capture_output=True, text=True, env=engine.docker_env(), timeout=_t(300))
    assert cp.returncode == 0, cp
    rows = d("images", "ddd-book").stdout.splitlines()
    assert len(rows) == 2 and rows[1].split()[:2] == ["ddd-book", "ch8.1"], rows
    iid = rows[1].split()[2]
    info = _inspect(engine, iid[:4])[0]
    cfg = info["Config"]
    assert cfg["WorkingDir"] == "/src" and "8080/tcp" in cfg["ExposedPorts"], cfg
    assert cfg["Entrypoint"] == ["httpd", "-f", "-p", "8080", "-h", "/src/views"], cfg
    assert cfg["Labels"]["maintainer"] == "nigelpoulton@hotmail.com", cfg

    # docker tag + docker push (to the local registry instead of Docker Hub)
    d("tag", "ddd-book:ch8.1", f"{reg}/jadedjelly/ddd-book:ch8.1")
    out = d("push", f"{reg}/jadedjelly/ddd-book:ch8.1").stdout
    assert "ch8.1: digest: sha256:" in out, out
    assert "ch8.1" in engine.reg.tags("jadedjelly/ddd-book")

    port = free_port()
    d("run", "-d", "--name", "c1", "-p", f"{port}:8080", "ddd-book:ch8.1")
    assert "ddd-book ch8.1" in _get_eventually(f"http://127.0.0.1:{port}/", "ddd-book ch8.1")

    # multi-stage
    ms = tmp_path / "multi-stage"
    ms.mkdir()
    (ms / "Dockerfile").write_text(MULTISTAGE)
    (ms / "go.mod").write_text("module example.com/multi\n")
    cp = subprocess.run([_cli(engine), "build", "-t", "multi:full", "."], cwd=ms,
                        capture_output=True, text=True, env=engine.docker_env(), timeout=_t(300))
    assert cp.returncode == 0, cp
    img = _inspect(engine, "multi:full")[0]
    assert len(img["RootFS"]["Layers"]) == 3, img
    assert d("run", "--rm", "multi:full").stdout == "server\n"
    cp = subprocess.run([_cli(engine), "build", "--target", "build-client", "-t", "multi:client", "."],
                        cwd=ms, capture_output=True, text=True, env=engine.docker_env(), timeout=_t(300))
    assert cp.returncode == 0, cp
    assert d("run", "--rm", "multi:client", "cat", "/src/deps").stdout == "go mod download (stand-in)\n"


# --------------------------------------------------------------------------
# "Volumes and persistent data"
# --------------------------------------------------------------------------

def step_volumes(engine, tmp_path):
    d = engine.docker
    assert d("volume", "create", "myvol").stdout.strip() == "myvol"
    assert "myvol" in d("volume", "ls").stdout
    vi = json.loads(d("volume", "inspect", "myvol").stdout)[0]
    assert vi["Driver"] == "local" and vi["Scope"] == "local" and vi["Mountpoint"], vi
    d("volume", "rm", "myvol")
    d("volume", "create", "unused")
    out = d("volume", "prune", "--all", "--force").stdout
    assert "unused" in out, out
    assert d("volume", "ls", "-q").stdout.strip() == ""

    # docker run -it --name voltainer --mount source=bizvol,target=/vol alpine
    t = Pty(engine, "run", "-it", "--name", "voltainer", "--mount", "source=bizvol,target=/vol",
            "alpine")
    try:
        t.expect(r"# ")
        t.send("echo 'I promise to write a review of the book' > /vol/file1 && cat /vol/file1\r")
        t.expect(r"I promise to write a review of the book\r?\n")
        t.send(b"\x10\x11")
        assert t.wait() == 0
    finally:
        t.close()
    cp = d("volume", "rm", "bizvol", check=False)
    assert cp.returncode != 0 and "in use" in cp.stderr, cp
    d("rm", "voltainer", "-f")
    assert "voltainer" not in d("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert "bizvol" in d("volume", "ls").stdout
    mp = json.loads(d("volume", "inspect", "bizvol").stdout)[0]["Mountpoint"]

    # docker run -it --privileged --pid=host debian nsenter -t 1 -m -u -n -i sh
    # then ls the volume's directory.  This sandbox denies even the host's root
    # access to PID 1's namespaces, so we enter those of another host process
    # (berthd's, in the host's namespaces) -- the same path through --pid=host.
    out = d("run", "--rm", "--privileged", "--pid=host", "debian", "nsenter", "-t", str(engine.nsenter_pid),
            "-m", "-u", "-n", "-i", "sh", "-c", f"ls {mp} && cat {mp}/file1").stdout
    assert out == "file1\nI promise to write a review of the book\n", out
    d("volume", "rm", "bizvol")


def step_plugin_ls(engine, tmp_path):
    """`docker plugin ls` (the notes' `plugin install` needs Docker Hub)."""
    out = engine.docker("plugin", "ls").stdout
    assert out.split()[:2] == ["ID", "NAME"], out


# --------------------------------------------------------------------------
# Nana's demos: postgres, redis, ports, debug commands
# --------------------------------------------------------------------------

def step_nana(engine, tmp_path):
    d = engine.docker
    pg13 = d("run", "-e", "POSTGRES_PASSWORD=mysecretpassword", "-d", "postgres:13.10").stdout.strip()
    pg14 = d("run", "-e", "POSTGRES_PASSWORD=mysecretpassword", "-d", "postgres:14.7").stdout.strip()
    ps = d("ps").stdout
    assert "postgres:13.10" in ps and "postgres:14.7" in ps, ps
    assert "PG_MAJOR=13" in d("exec", pg13, "env").stdout
    assert "POSTGRES_PASSWORD=mysecretpassword" in d("exec", pg14, "env").stdout
    _wait_for(lambda: "ready to accept connections" in d("logs", pg13).stdout, what="pg13 banner")

    out = d("pull", "redis").stdout
    assert "redis:latest" in out

    # docker run redis: attached; Ctrl-C (SIGINT) is proxied to the container
    p = subprocess.Popen([_cli(engine), "run", "--name", "fg", "redis"], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=engine.docker_env(), text=True)
    try:
        line = p.stdout.readline()
        assert "Ready to accept connections" in line, line
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        rest = p.communicate(timeout=_t(20))[0]
        assert "shutting down" in rest and p.returncode == 0, (p.returncode, rest)
    finally:
        if p.poll() is None:
            p.kill()
    assert _inspect(engine, "fg")[0]["State"]["Status"] == "exited"

    cid = d("run", "-d", "redis").stdout.strip()
    assert cid[:12] in d("ps").stdout
    all_ids = lambda: d("ps", "-aq", "--no-trunc").stdout.split()  # noqa: E731
    d("stop", _unique_prefix(cid, all_ids(), 3))
    assert cid[:12] not in d("ps", "-q").stdout
    d("start", _unique_prefix(cid, all_ids(), 4))
    assert cid[:12] in d("ps", "-q").stdout
    assert cid[:12] in d("ps", "-a").stdout

    d("run", "-d", "redis:6.2")
    p1, p2 = free_port(), free_port()
    d("stop", cid)
    r1 = d("run", "-p", f"{p1}:6379", "-d", "redis").stdout.strip()
    r2 = d("run", "-p", f"{p2}:6379", "-d", "redis:6.2").stdout.strip()
    ps = d("ps").stdout
    assert f"0.0.0.0:{p1}->6379/tcp" in ps and f"0.0.0.0:{p2}->6379/tcp" in ps, ps
    assert "library/redis:latest stand-in" in _get_eventually(f"http://127.0.0.1:{p1}/index.html",
                                                             "stand-in")
    assert "library/redis:6.2 stand-in" in _get_eventually(f"http://127.0.0.1:{p2}/index.html",
                                                          "stand-in")
    # a second container on a host port in use fails
    cp = d("run", "-p", f"{p1}:6379", "-d", "redis", check=False)
    assert cp.returncode != 0 and ("already allocated" in cp.stderr or "in use" in cp.stderr), cp

    # docker logs <name/id>; docker exec -it <id> /bin/sh
    logs = d("logs", _unique_prefix(r1, all_ids(), 3)).stdout
    assert "Ready to accept connections" in logs, logs
    t = Pty(engine, "exec", "-it", _unique_prefix(r2, all_ids(), 3), "/bin/sh")
    try:
        t.expect(r"# ")
        t.send("ls /srv; exit\r")
        t.expect(r"index\.html")
        assert t.wait() == 0
    finally:
        t.close()


# --------------------------------------------------------------------------
# the walkthrough, in the notes' order, and the native tests
# --------------------------------------------------------------------------

# (name, step, expected failure reason or None)
STEPS = [
    ("images", step_images, None),
    ("manifest_search", step_manifest_search, None),
    ("lifecycle", step_lifecycle, None),
    ("restart", step_restart, None),
    ("webserver", step_webserver, None),
    ("containerize", step_containerize, None),
    ("volumes", step_volumes, None),
    ("plugin_ls", step_plugin_ls, None),
    ("nana", step_nana, None),
]


def test_images_pull_filter_format_inspect_history_digest_rmi(engine, tmp_path):
    step_images(engine, tmp_path)


def test_manifest_inspect_and_search_against_local_registry(engine, tmp_path):
    step_manifest_search(engine, tmp_path)


def test_container_lifecycle_it_detach_stop_start_exec_rm(engine, tmp_path):
    step_lifecycle(engine, tmp_path)


def test_restart_policy_always_brings_it_back(engine, tmp_path):
    step_restart(engine, tmp_path)


def test_webserver_example(engine, tmp_path):
    step_webserver(engine, tmp_path)


def test_containerize_build_tag_push_run(engine, tmp_path):
    step_containerize(engine, tmp_path)


def test_volumes(engine, tmp_path):
    step_volumes(engine, tmp_path)


def test_plugin_ls(engine, tmp_path):
    step_plugin_ls(engine, tmp_path)


def test_nana_demo_commands(engine, tmp_path):
    step_nana(engine, tmp_path)
