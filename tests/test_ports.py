"""Published ports through berthd's userspace proxy and, for the host's own connections,
its DNAT rules (issue #4): -p, -P, ranges, UDP,
`docker port`, conflicts, ports freed on stop and brought back after an engine restart."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p {port} -h /www"


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if pred():
                return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


def http_get(port, host="127.0.0.1"):
    with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as r:
        return r.read().decode()


def listening(port, proto="tcp"):
    """Is anything bound to this local port (ss, so TIME_WAIT leftovers do not count)?"""
    flag = "-ltnH" if proto == "tcp" else "-lunH"
    out = subprocess.run(["ss", flag, f"sport = :{port}"], capture_output=True, text=True).stdout
    return out.strip() != ""


def test_webserver_seed_example(berthd):
    """The seed's example: a busybox httpd on 8080 published on the host, curl from the host."""
    port = free_port()
    berthd.docker("run", "-d", "--name", "webserver", "-p", f"{port}:8080", "busybox", "sh", "-c",
                  HTTPD.format(text="hello-berth", port=8080))
    assert wait_for(lambda: http_get(port) == "hello-berth\n")
    out = subprocess.run(["curl", "-s", f"http://127.0.0.1:{port}"], capture_output=True, text=True)
    assert out.stdout == "hello-berth\n"
    assert berthd.docker("port", "webserver").stdout.strip() == f"8080/tcp -> 0.0.0.0:{port}"
    assert berthd.docker("port", "webserver", "8080/tcp").stdout.strip() == f"0.0.0.0:{port}"
    assert f"0.0.0.0:{port}->8080/tcp" in berthd.docker("ps", "--format", "{{.Ports}}").stdout
    i = json.loads(berthd.docker("inspect", "webserver").stdout)[0]
    ns = i["NetworkSettings"]
    assert ns["Ports"]["8080/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
    assert ns["IPAddress"] and ns["Gateway"] and ns["MacAddress"]
    assert ns["Networks"]["bridge"]["IPAddress"] == ns["IPAddress"]
    assert i["HostConfig"]["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": str(port)}]}
    # Stopping frees the port (and closes proxied connections); starting binds it again.
    berthd.docker("stop", "-t", "0", "webserver")
    assert not listening(port)
    assert berthd.docker("port", "webserver").stdout.strip() == ""
    berthd.docker("start", "webserver")
    assert wait_for(lambda: http_get(port) == "hello-berth\n")
    berthd.docker("rm", "-f", "webserver")
    assert not listening(port)


def test_port_conflict_leaves_nothing_half_wired(berthd):
    port = free_port()
    berthd.docker("run", "-d", "--name", "first", "-p", f"{port}:80", "busybox", "sleep", "300")
    other = free_port()
    cp = berthd.docker("run", "-d", "--name", "clash", "-p", f"{other}:81", "-p", f"{port}:80",
                       "busybox", "sleep", "300", check=False)
    assert cp.returncode == 125, cp.stderr
    cid = berthd.docker("inspect", "-f", "{{.Id}}", "clash").stdout.strip()
    assert (f"driver failed programming external connectivity on endpoint clash ({cid}): "
            f"Bind for 0.0.0.0:{port} failed: port is already allocated") in cp.stderr
    i = json.loads(berthd.docker("inspect", "clash").stdout)[0]
    assert i["State"]["Running"] is False and i["State"]["Status"] == "created"
    # The other binding of the failed container was released, and it has no network namespace.
    assert not listening(other)
    assert f"berth-{cid[:12]}" not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                     text=True).stdout
    # Once the port is free, the same container starts.
    berthd.docker("rm", "-f", "first")
    berthd.docker("start", "clash")
    assert listening(port) and listening(other)


def test_publish_all_ephemeral_and_ranges(berthd):
    berthd.docker("run", "-d", "--name", "pa", "--expose", "8081", "--expose", "7000/udp", "-P",
                  "busybox", "sh", "-c", HTTPD.format(text="pa", port=8081))
    out = berthd.docker("port", "pa").stdout.strip().splitlines()
    assert len(out) == 2, out
    port = int(berthd.docker("port", "pa", "8081").stdout.strip().rsplit(":", 1)[1])
    udp = int(berthd.docker("port", "pa", "7000/udp").stdout.strip().rsplit(":", 1)[1])
    lo, hi = map(int, open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    assert lo <= port <= hi and lo <= udp <= hi
    assert wait_for(lambda: http_get(port) == "pa\n")
    # A host port range takes the first free port of the range; 127.0.0.1 binds only loopback.
    base = free_port()
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", base))
    blocker.listen()
    try:
        berthd.docker("run", "-d", "--name", "rng", "-p", f"127.0.0.1:{base}-{base + 3}:8080",
                      "-p", "127.0.0.1::8081", "busybox", "sh", "-c",
                      HTTPD.format(text="rng", port=8080))
        got = berthd.docker("port", "rng", "8080").stdout.strip()
        assert got.startswith("127.0.0.1:") and int(got.rsplit(":", 1)[1]) in range(base + 1, base + 4)
        assert wait_for(lambda: http_get(int(got.rsplit(":", 1)[1])) == "rng\n")
        assert berthd.docker("port", "rng", "8081").stdout.strip().startswith("127.0.0.1:")
    finally:
        blocker.close()


def free_range(n):
    for _ in range(50):
        base = free_port()
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def test_container_port_ranges(berthd):
    base = free_range(2)
    berthd.docker("run", "-d", "--name", "multi", "-p", f"{base}-{base + 1}:9000-9001", "busybox",
                  "sh", "-c", HTTPD.format(text="m", port=9001))
    ports = berthd.docker("port", "multi").stdout
    assert f"9000/tcp -> 0.0.0.0:{base}" in ports and f"9001/tcp -> 0.0.0.0:{base + 1}" in ports
    assert wait_for(lambda: http_get(base + 1) == "m\n")


UDP_ECHO_C = r"""
#include <arpa/inet.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[1])); a.sin_addr.s_addr = INADDR_ANY;
    if (bind(s, (struct sockaddr *)&a, sizeof a) < 0) return 1;
    for (;;) {
        char buf[2048]; struct sockaddr_in p; socklen_t l = sizeof p;
        ssize_t n = recvfrom(s, buf, sizeof buf, 0, (struct sockaddr *)&p, &l);
        if (n > 0) sendto(s, buf, n, 0, (struct sockaddr *)&p, l);
    }
}
"""


@pytest.fixture
def udpecho(tmp_path):
    # Debian's busybox has no UDP nc: a tiny static UDP echo server made here stands in.
    src = tmp_path / "udpecho.c"
    src.write_text(UDP_ECHO_C)
    cp = subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "udpecho"), str(src)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot build a static UDP echo server here: {cp.stderr[-300:]}")
    return tmp_path


def udp_roundtrip(port, payload):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        for _ in range(30):
            s.sendto(payload, ("127.0.0.1", port))
            try:
                return s.recv(100)
            except socket.timeout:
                continue
    finally:
        s.close()
    return None


def test_udp_port_two_clients(berthd, udpecho):
    port = free_port(socket.SOCK_DGRAM)
    berthd.docker("run", "-d", "--name", "udp", "-p", f"{port}:9999/udp", "-v", f"{udpecho}:/t:ro",
                  "busybox", "/t/udpecho", "9999")
    assert berthd.docker("port", "udp").stdout.strip() == f"9999/udp -> 0.0.0.0:{port}"
    assert udp_roundtrip(port, b"over-udp") == b"over-udp"
    assert udp_roundtrip(port, b"second-client") == b"second-client"
    berthd.docker("stop", "-t", "0", "udp")
    assert not listening(port, "udp")


def test_ports_survive_engine_restart(berthd, udpecho):
    """Live restore: the container keeps running and berthd re-creates its proxies."""
    port, uport = free_port(), free_port(socket.SOCK_DGRAM)
    berthd.docker("network", "create", "keepnet")
    berthd.docker("run", "-d", "--name", "live", "--network", "keepnet", "-p", f"{port}:80",
                  "-p", f"{uport}:9999/udp", "-v", f"{udpecho}:/t:ro", "busybox", "sh", "-c",
                  "/t/udpecho 9999 & " + HTTPD.format(text="live", port=80))
    berthd.docker("run", "-d", "--name", "peer", "--network", "keepnet", "busybox", "sleep", "300")
    assert wait_for(lambda: http_get(port) == "live\n")
    berthd.restart()
    assert berthd.docker("inspect", "-f", "{{.State.Running}}", "live").stdout.strip() == "true"
    assert wait_for(lambda: http_get(port) == "live\n")
    assert udp_roundtrip(uport, b"after-restart") == b"after-restart"
    # DNS on the user network is served again.
    assert berthd.docker("exec", "peer", "wget", "-qO-", "http://live/").stdout == "live\n"
    berthd.kill()
    assert not listening(port)
    berthd.start()
    assert wait_for(lambda: http_get(port) == "live\n")


def berthd_tag(berthd):
    """The engine's per-data-root tag (networks/mod.rs: sha256 of the data root, 8 hex)."""
    import hashlib
    return hashlib.sha256(berthd.data_root.encode()).hexdigest()[:8]


def _nat_rules(berthd):
    out = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if "DNAT" in l and l.startswith("-A BERTH-PORTS")]


def test_host_connections_take_the_kernel_path(berthd):
    """The host's own connections to a published port are DNATed straight to the container
    (networks/nat.rs): they work while berthd itself is frozen, and stop with the container."""
    port = free_port()
    berthd.docker("run", "-d", "--name", "kp", "-p", f"127.0.0.1:{port}:80", "busybox", "sh",
                  "-c", HTTPD.format(text="kernel-path", port=80))
    cid = berthd.docker("inspect", "-f", "{{.Id}}", "kp").stdout.strip()
    assert wait_for(lambda: http_get(port) == "kernel-path\n")
    mine = [l for l in _nat_rules(berthd) if cid[:12] in l]
    assert len(mine) == 1 and f"--dport {port} " in mine[0] and "-d 127.0.0.1/32" in mine[0], mine
    # The userspace proxy cannot answer while berthd is stopped; the kernel path does.
    os.kill(berthd.pid, signal.SIGSTOP)
    try:
        assert http_get(port) == "kernel-path\n"
    finally:
        os.kill(berthd.pid, signal.SIGCONT)
    berthd.docker("stop", "-t", "0", "kp")
    assert not [l for l in _nat_rules(berthd) if cid[:12] in l]
    with pytest.raises(OSError):
        http_get(port)
    # With no ports left, the engine's chain and its jump go when it stops.
    berthd.docker("rm", "kp")
    berthd.stop()
    chain = f"BERTH-PORTS-{berthd_tag(berthd)}"
    save = subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True).stdout
    assert chain not in save


def test_bad_port_specs(berthd):
    cp = berthd.docker("run", "-d", "-p", "70000:80", "busybox", "true", check=False)
    assert cp.returncode != 0 and "70000" in cp.stderr
    # Through the API the engine itself refuses it at create, and creates nothing.
    berthd.docker("pull", "-q", "busybox")
    r = berthd.api("POST", "/containers/create?name=badport", json={
        "Image": "busybox", "Cmd": ["true"],
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "70000"}]}}})
    assert r.status == 400 and b'invalid port specification: \\"70000\\"' in r.body
    r = berthd.api("POST", "/containers/create?name=badport", json={
        "Image": "busybox", "Cmd": ["true"],
        "HostConfig": {"PortBindings": {"0/tcp": [{"HostPort": "8080"}]}}})
    assert r.status == 400
    assert berthd.docker("ps", "-aq").stdout.strip() == ""


def test_docker_py_ports(berthd):
    c = berthd.client()
    port = free_port()
    ct = c.containers.run("busybox", ["sh", "-c", HTTPD.format(text="py", port=80)], detach=True,
                          ports={"80/tcp": ("127.0.0.1", port)})
    assert wait_for(lambda: http_get(port) == "py\n")
    ct.reload()
    assert ct.ports == {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    ct.remove(force=True)
    assert not listening(port)
