"""Networks, published ports and volumes (issue #4), with the real docker CLI."""

import json
import socket
import subprocess
import time
import urllib.request

import pytest


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


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


def http_get(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return r.read().decode()


HTTPD = "mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p {port} -h /www"


def links():
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def test_webserver_published_port(berthd):
    port = free_port()
    berthd.docker("run", "-d", "--name", "webserver", "-p", f"{port}:8080", "busybox", "sh", "-c",
                  HTTPD.format(text="hello-berth", port=8080))
    assert wait_for(lambda: http_get(port) == "hello-berth\n")
    assert berthd.docker("port", "webserver").stdout.strip() == f"8080/tcp -> 0.0.0.0:{port}"
    assert f"0.0.0.0:{port}->8080/tcp" in berthd.docker("ps", "--format", "{{.Ports}}").stdout
    i = json.loads(berthd.docker("inspect", "webserver").stdout)[0]
    assert i["NetworkSettings"]["Ports"]["8080/tcp"] == [{"HostIp": "0.0.0.0", "HostPort": str(port)}]
    assert i["NetworkSettings"]["IPAddress"]
    # A taken port: Docker's error, and the second container does not start half-wired.
    cp = berthd.docker("run", "-d", "--name", "clash", "-p", f"{port}:8080", "busybox", "sleep", "30", check=False)
    assert cp.returncode == 125 and "port is already allocated" in cp.stderr
    assert json.loads(berthd.docker("inspect", "clash").stdout)[0]["State"]["Running"] is False
    # Stopping frees the port.
    berthd.docker("stop", "-t", "0", "webserver")
    s = socket.socket()
    # TIME_WAIT leftovers of the test's own connection are fine; a listener would not be.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    s.close()


def test_publish_all_and_random_port(berthd):
    berthd.docker("run", "-d", "--name", "pa", "--expose", "8081", "-P", "busybox", "sh", "-c",
                  HTTPD.format(text="pa", port=8081))
    out = berthd.docker("port", "pa", "8081").stdout.strip()
    port = int(out.rsplit(":", 1)[1])
    assert wait_for(lambda: http_get(port) == "pa\n")


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


def test_udp_port(berthd, tmp_path):
    # Debian's busybox has no UDP nc: a tiny static UDP echo server made here stands in.
    src = tmp_path / "udpecho.c"
    src.write_text(UDP_ECHO_C)
    cp = subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp_path / "udpecho"), str(src)],
                        capture_output=True, text=True)
    if cp.returncode != 0:
        pytest.skip(f"cannot build a static UDP echo server here: {cp.stderr[-300:]}")
    port = free_port(socket.SOCK_DGRAM)
    berthd.docker("run", "-d", "--name", "udp", "-p", f"{port}:9999/udp", "-v", f"{tmp_path}:/t:ro",
                  "busybox", "/t/udpecho", "9999")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    got = None
    for _ in range(20):
        s.sendto(b"over-udp", ("127.0.0.1", port))
        try:
            got = s.recv(100)
            break
        except socket.timeout:
            continue
    s.close()
    assert got == b"over-udp"


def test_user_network_dns_and_aliases(berthd):
    berthd.docker("network", "create", "--label", "t=1", "appnet")
    berthd.docker("run", "-d", "--name", "srv", "--network", "appnet", "--network-alias", "backend",
                  "busybox", "sh", "-c", HTTPD.format(text="from-srv", port=80))
    out = berthd.docker("run", "--rm", "--network", "appnet", "busybox", "sh", "-c",
                        "sleep 0.5; wget -qO- http://srv/; wget -qO- http://backend/").stdout
    assert out == "from-srv\nfrom-srv\n"
    net = json.loads(berthd.docker("network", "inspect", "appnet").stdout)[0]
    assert net["Labels"] == {"t": "1"} and len(net["Containers"]) == 1
    cp = berthd.docker("network", "rm", "appnet", check=False)
    assert cp.returncode != 0 and "has active endpoints" in cp.stderr
    berthd.docker("rm", "-f", "srv")
    berthd.docker("network", "rm", "appnet")
    assert "br-" + net["Id"][:12] not in links()


def test_connect_disconnect_and_two_endpoints(berthd):
    berthd.docker("network", "create", "--subnet", "10.213.7.0/24", "n1")
    berthd.docker("network", "create", "n2")
    berthd.docker("run", "-d", "--name", "two", "--network", "n1", "busybox", "sleep", "300")
    berthd.docker("network", "connect", "n2", "two")
    nets = json.loads(berthd.docker("inspect", "two").stdout)[0]["NetworkSettings"]["Networks"]
    assert set(nets) == {"n1", "n2"}
    assert nets["n1"]["IPAddress"].startswith("10.213.7.")
    ifaces = berthd.docker("exec", "two", "ip", "-o", "-4", "addr").stdout
    assert "eth0" in ifaces and "eth1" in ifaces
    berthd.docker("network", "disconnect", "n2", "two")
    assert "eth1" not in berthd.docker("exec", "two", "ip", "-o", "link").stdout


def test_host_and_none_modes(berthd):
    out = berthd.docker("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link").stdout
    assert "lo" in out and "eth0" not in out
    host_lo = berthd.docker("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev").stdout
    assert "lo:" in host_lo


def test_invalid_subnet_creates_nothing(berthd):
    cp = berthd.docker("network", "create", "--subnet", "300.1.1.0/24", "bad", check=False)
    assert cp.returncode != 0
    assert "bad" not in berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()


def test_add_host_and_dns_files(berthd):
    out = berthd.docker("run", "--rm", "--add-host", "myhost:10.1.2.3", "--dns", "10.9.9.9", "--hostname", "hn",
                        "busybox", "sh", "-c", "cat /etc/hosts /etc/resolv.conf /etc/hostname").stdout
    assert "10.1.2.3\tmyhost" in out and "nameserver 10.9.9.9" in out and "hn" in out


def test_volumes_chapter(berthd):
    berthd.docker("volume", "create", "bizvol")
    berthd.docker("run", "--name", "voltainer", "--mount", "source=bizvol,target=/vol", "busybox",
                  "sh", "-c", "echo persisted > /vol/data")
    berthd.docker("rm", "voltainer")
    assert berthd.docker("run", "--rm", "-v", "bizvol:/v", "busybox", "cat", "/v/data").stdout == "persisted\n"
    v = json.loads(berthd.docker("volume", "inspect", "bizvol").stdout)[0]
    assert v["Driver"] == "local" and v["Mountpoint"].endswith("/bizvol/_data")
    berthd.docker("run", "-d", "--name", "user", "-v", "bizvol:/v", "busybox", "sleep", "300")
    cp = berthd.docker("volume", "rm", "bizvol", check=False)
    assert cp.returncode != 0 and "volume is in use" in cp.stderr
    berthd.docker("rm", "-f", "user")
    berthd.docker("volume", "create", "unused")
    out = berthd.docker("volume", "prune", "-a", "-f").stdout
    assert "unused" in out and "bizvol" in out


def test_volume_data_survives_engine_restart(berthd):
    berthd.docker("run", "--rm", "-v", "keep:/k", "busybox", "sh", "-c", "echo k > /k/f")
    berthd.restart()
    assert berthd.docker("run", "--rm", "-v", "keep:/k", "busybox", "cat", "/k/f").stdout == "k\n"


def test_binds_tmpfs_and_copy_up(berthd, tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    (d / "in.txt").write_text("from-host\n")
    out = berthd.docker("run", "--rm", "-v", f"{d}:/h:ro", "busybox", "sh", "-c",
                        "cat /h/in.txt; touch /h/x 2>&1 | grep -c Read-only").stdout
    assert out == "from-host\n1\n"
    berthd.docker("run", "--rm", "-v", f"{d}:/h", "busybox", "sh", "-c", "echo back > /h/out.txt")
    assert (d / "out.txt").read_text() == "back\n"
    out = berthd.docker("run", "--rm", "--tmpfs", "/scratch", "busybox", "sh", "-c", "grep /scratch /proc/mounts").stdout
    assert "tmpfs" in out
    # A new volume over an image directory starts with the image's content.
    out = berthd.docker("run", "--rm", "-v", "etcvol:/etc", "busybox", "cat", "/etc/passwd").stdout
    assert "root:" in out
    cp = berthd.docker("run", "--rm", "--mount", "type=bind,source=/nonexistent/x,target=/x", "busybox", "true", check=False)
    assert cp.returncode != 0 and "does not exist" in cp.stderr


def test_anonymous_volume_removed_with_rm_v(berthd):
    berthd.docker("run", "--name", "anon", "-v", "/data", "busybox", "true")
    vols = berthd.docker("volume", "ls", "-q").stdout.split()
    assert len(vols) == 1
    berthd.docker("rm", "-v", "anon")
    assert berthd.docker("volume", "ls", "-q").stdout.split() == []


def test_volumes_from(berthd):
    berthd.docker("run", "--name", "src", "-v", "shared:/s", "busybox", "sh", "-c", "echo vf > /s/f")
    assert berthd.docker("run", "--rm", "--volumes-from", "src", "busybox", "cat", "/s/f").stdout == "vf\n"
