"""berthd as a process and the API's version negotiation (issue #2).

Wording and status codes follow dockerd (moby), which clients rely on."""

import grp
import json
import os
import re
import signal
import stat
import time

import pytest

API_VERSION = "1.44"
MIN_API_VERSION = "1.24"


# --- /_ping --------------------------------------------------------------

def test_ping_get(berthd):
    r = berthd.api("GET", "/_ping")
    assert r.status == 200
    assert r.body == b"OK"
    assert r.headers["Api-Version"] == API_VERSION
    assert r.headers["OSType"] == "linux"
    assert "no-cache" in (r.headers.get("Cache-Control") or "")


def test_ping_head(berthd):
    r = berthd.api("HEAD", "/_ping")
    assert r.status == 200
    assert r.body == b""
    assert r.headers["Api-Version"] == API_VERSION
    assert r.headers["OSType"] == "linux"


def test_ping_versioned_path(berthd):
    r = berthd.api("GET", f"/v{API_VERSION}/_ping")
    assert r.status == 200 and r.body == b"OK"


# --- /version and /info --------------------------------------------------

def test_version(berthd):
    for path in ["/version", f"/v{API_VERSION}/version", "/v1.24/version", "/v1.41/version"]:
        r = berthd.api("GET", path)
        assert r.status == 200, (path, r)
        assert r.headers["Content-Type"].startswith("application/json")
        v = r.json()
        assert v["ApiVersion"] == API_VERSION
        assert v["MinAPIVersion"] == MIN_API_VERSION
        assert v["Os"] == "linux"
        assert v["Arch"] == "amd64"
        assert v["KernelVersion"] == os.uname().release
        assert v["Version"]
        assert isinstance(v.get("Components", []), list)


def test_version_too_new(berthd):
    r = berthd.api("GET", "/v1.99/version")
    assert r.status == 400
    msg = r.json()["message"]
    # dockerd: "client version 1.99 is too new. Maximum supported API version is 1.44"
    assert "is too new" in msg
    assert "1.44" in msg


def test_version_too_old(berthd):
    r = berthd.api("GET", "/v1.12/version")
    assert r.status == 400
    # dockerd: "client version 1.12 is too old. Minimum supported API version is 1.24, ..."
    assert "is too old" in r.json()["message"]


def test_unknown_path_is_404(berthd):
    r = berthd.api("GET", "/no/such/endpoint")
    assert r.status == 404
    assert r.json()["message"] == "page not found"


def _meminfo_total():
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def test_info(berthd):
    r = berthd.api("GET", "/info")
    assert r.status == 200
    info = r.json()
    assert info["NCPU"] == os.cpu_count()
    mem = _meminfo_total()
    assert abs(info["MemTotal"] - mem) <= mem * 0.02, (info["MemTotal"], mem)
    assert info["DockerRootDir"] == berthd.data_root
    assert info["OSType"] == "linux"
    assert info["Architecture"] == "x86_64"
    assert info["KernelVersion"] == os.uname().release
    assert info["Images"] == 0
    assert info["Containers"] == 0
    assert info["ID"]
    assert info["Name"] == os.uname().nodename
    assert info["OperatingSystem"]
    assert info["Driver"]
    mirrors = info.get("RegistryConfig", {}).get("Mirrors") or []
    assert any(berthd.registry in m for m in mirrors), info.get("RegistryConfig")


def test_info_versioned_path(berthd):
    r = berthd.api("GET", f"/v{API_VERSION}/info")
    assert r.status == 200 and r.json()["NCPU"] == os.cpu_count()


# --- the docker CLI -------------------------------------------------------

def test_docker_version(berthd):
    cp = berthd.docker("version", "--format", "{{json .}}")
    v = json.loads(cp.stdout)
    assert v["Server"]["ApiVersion"] == API_VERSION
    assert v["Server"]["Os"] == "linux"
    assert v["Client"]["Version"]
    assert cp.stderr.strip() == ""


def test_version_engine_component(berthd):
    """`docker version` prints the server section from Components[Engine]."""
    comps = berthd.api("GET", "/version").json().get("Components") or []
    engine = [c for c in comps if c.get("Name") == "Engine"]
    assert engine, comps
    assert engine[0]["Details"]["ApiVersion"] == API_VERSION
    assert engine[0]["Details"]["MinAPIVersion"] == MIN_API_VERSION


def test_docker_version_plain(berthd):
    cp = berthd.docker("version")
    server = cp.stdout.split("Server:", 1)[1]
    assert "Engine:" in server
    assert re.search(r"API version:\s+1\.44 \(minimum version 1\.24\)", server), cp.stdout


def test_docker_info(berthd):
    cp = berthd.docker("info", "--format", "{{json .}}")
    info = json.loads(cp.stdout)
    assert info["NCPU"] == os.cpu_count()
    assert info["DockerRootDir"] == berthd.data_root
    assert not info.get("ServerErrors"), info.get("ServerErrors")
    cp = berthd.docker("info")
    assert "Server:" in cp.stdout
    assert "ERROR" not in cp.stdout + cp.stderr


# --- docker-py ------------------------------------------------------------

def test_dockerpy_version_and_info(berthd):
    c = berthd.client()
    assert c.ping() is True
    v = c.version()
    assert v["ApiVersion"] == API_VERSION
    info = c.info()
    assert info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0


def test_dockerpy_api_version_auto(berthd):
    c = berthd.client(version="auto")
    assert c.api.api_version == API_VERSION


# --- the process: pid file, socket, signals -------------------------------

def test_pidfile(berthd):
    with open(berthd.pidfile) as fh:
        assert int(fh.read().strip()) == berthd.pid


def test_socket_mode_root_root(berthd):
    st = os.stat(berthd.sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660, oct(st.st_mode)
    assert st.st_uid == 0
    # Without -G the group is root, or "docker" when that group exists (dockerd's default).
    allowed = {0}
    try:
        allowed.add(grp.getgrnam("docker").gr_gid)
    except KeyError:
        pass
    assert st.st_gid in allowed


def test_socket_group(berthd_factory):
    group = "adm"  # exists on every Debian system
    gid = grp.getgrnam(group).gr_gid
    e = berthd_factory(extra_args=["-G", group])
    st = os.stat(e.sock)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, gid)


def test_sigterm_stops_cleanly(berthd):
    t0 = time.monotonic()
    rc = berthd.kill(signal.SIGTERM, wait=20)
    assert rc == 0, f"exit status {rc}"
    assert time.monotonic() - t0 < 10
    assert not os.path.exists(berthd.sock), "socket left behind"
    assert not os.path.exists(berthd.pidfile), "pid file left behind"


def test_sigint_stops_cleanly(berthd):
    rc = berthd.kill(signal.SIGINT, wait=20)
    assert rc == 0
    assert not os.path.exists(berthd.pidfile)


def test_restart_same_data_root(berthd):
    berthd.docker("pull", "busybox", timeout=120)
    old_pid = berthd.pid
    berthd.restart()
    assert berthd.pid != old_pid
    with open(berthd.pidfile) as fh:
        assert int(fh.read()) == berthd.pid
    cp = berthd.docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert cp.stdout.split() == ["busybox:latest"]


def test_stale_pidfile_and_socket_are_replaced(berthd):
    """After a crash (SIGKILL) the pid file and socket remain; start must cope."""
    berthd.kill(signal.SIGKILL)
    berthd.start()
    assert berthd.api("GET", "/_ping").body == b"OK"


def test_log_written(berthd):
    berthd.api("GET", "/version")
    assert os.path.getsize(berthd.log_path) > 0


# --- socket activation (-H fd://), as the systemd unit starts berthd ---------

def test_socket_activation(tmp_path):
    from lib.berthd import BERTHD_BIN
    import shutil
    import subprocess
    act = shutil.which("systemd-socket-activate")
    if act is None:
        pytest.skip("systemd-socket-activate is not installed (package systemd)")
    sock = tmp_path / "d.sock"
    proc = subprocess.Popen(
        [act, "-l", str(sock), BERTHD_BIN, "-H", "fd://", "--data-root", str(tmp_path / "root"),
         "--pidfile", str(tmp_path / "pid")],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    try:
        deadline = time.time() + 20
        out = None
        while time.time() < deadline:
            cp = subprocess.run(["docker", "version", "--format", "{{.Server.APIVersion}}"],
                                env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
                                capture_output=True, text=True, timeout=20)
            if cp.returncode == 0:
                out = cp.stdout.strip()
                break
            time.sleep(0.2)
        assert out == API_VERSION, (tmp_path / "log").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
