"""`docker cp` both ways (archive HEAD/GET/PUT), `docker export` and `docker diff` (issue #3)."""

import base64
import io
import json
import os
import tarfile

from lib.ctr import inspect, leaks_of


def run(b, *args, **kw):
    return b.docker("run", *args, **kw)


def mounted(b, cid):
    with open("/proc/self/mountinfo") as fh:
        return any(cid in line.split()[4] for line in fh)


def test_cp_both_ways_running_and_stopped(berthd, tmp_path):
    cid = run(berthd, "-d", "--name", "cpr", "busybox", "sleep", "300").stdout.strip()
    src = tmp_path / "in.txt"
    src.write_text("from the host\n")
    os.chmod(src, 0o640)
    berthd.docker("cp", str(src), "cpr:/tmp/")
    assert berthd.docker("exec", "cpr", "cat", "/tmp/in.txt").stdout == "from the host\n"
    assert berthd.docker("exec", "cpr", "stat", "-c", "%a", "/tmp/in.txt").stdout == "640\n"
    # A file to a new name; a directory with its content.
    berthd.docker("cp", str(src), "cpr:/tmp/renamed.txt")
    assert berthd.docker("exec", "cpr", "cat", "/tmp/renamed.txt").stdout == "from the host\n"
    d = tmp_path / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "f").write_text("deep\n")
    os.symlink("sub/f", d / "link")
    berthd.docker("cp", str(d), "cpr:/root/")
    assert berthd.docker("exec", "cpr", "cat", "/root/dir/sub/f", "/root/dir/link").stdout == "deep\ndeep\n"
    assert berthd.docker("exec", "cpr", "readlink", "/root/dir/link").stdout == "sub/f\n"
    # A directory to a path that does not exist yet takes that name (the CLI's rule).
    berthd.docker("cp", str(d), "cpr:/root/newname")
    assert berthd.docker("exec", "cpr", "cat", "/root/newname/sub/f").stdout == "deep\n"
    # Out of the container: a file, a directory, and the tar stream on stdout.
    berthd.docker("exec", "cpr", "sh", "-c", "mkdir -p /data/x && echo made > /data/x/m && ln -s /etc/passwd /data/pw")
    berthd.docker("cp", "cpr:/data/x/m", str(tmp_path / "m"))
    assert (tmp_path / "m").read_text() == "made\n"
    berthd.docker("cp", "cpr:/data", str(tmp_path / "out"))
    assert (tmp_path / "out" / "x" / "m").read_text() == "made\n"
    assert os.readlink(tmp_path / "out" / "pw") == "/etc/passwd"
    cp = berthd.docker("cp", "cpr:/data/x/m", "-", binary_input=True)
    with tarfile.open(fileobj=io.BytesIO(cp.stdout)) as t:
        assert t.getnames() == ["m"] and t.extractfile("m").read() == b"made\n"
    # Into a stopped container, and out of it: the rootfs is mounted only for the copy.
    berthd.docker("stop", "-t", "0", "cpr")
    assert not mounted(berthd, cid)
    berthd.docker("cp", str(src), "cpr:/root/while-stopped")
    assert not mounted(berthd, cid)
    berthd.docker("cp", "cpr:/tmp/renamed.txt", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "from the host\n"
    assert not mounted(berthd, cid)
    berthd.docker("start", "cpr")
    assert berthd.docker("exec", "cpr", "cat", "/root/while-stopped").stdout == "from the host\n"
    berthd.docker("rm", "-f", "cpr")
    assert leaks_of(berthd, cid) == []


def test_cp_errors_and_stat_header(berthd, tmp_path):
    run(berthd, "-d", "--name", "cpe", "busybox", "sh", "-c",
        "echo hello > /tmp/h && ln -s /tmp/h /tmp/l && exec sleep 300")
    cp = berthd.docker("cp", "cpe:/nonexistent", str(tmp_path / "n"), check=False)
    assert cp.returncode != 0 and "Could not find the file /nonexistent in container cpe" in cp.stderr
    r = berthd.api("HEAD", "/containers/cpe/archive?path=/nonexistent")
    assert r.status == 404
    r = berthd.api("GET", "/containers/cpe/archive?path=/nonexistent")
    assert r.status == 404 and json.loads(r.body)["message"] == "Could not find the file /nonexistent in container cpe"
    r = berthd.api("GET", "/containers/nosuch/archive?path=/")
    assert r.status == 404 and json.loads(r.body)["message"] == "No such container: nosuch"
    r = berthd.api("GET", "/containers/cpe/archive")
    assert r.status == 400
    r = berthd.api("HEAD", "/containers/cpe/archive?path=/tmp/h")
    assert r.status == 200
    st = json.loads(base64.b64decode(r.headers["x-docker-container-path-stat"]))
    assert st["name"] == "h" and st["size"] == 6 and st["mode"] == 0o644 and st["linkTarget"] == ""
    assert st["mtime"].endswith("Z") or "+" in st["mtime"]
    r = berthd.api("HEAD", "/containers/cpe/archive?path=/tmp/l")
    st = json.loads(base64.b64decode(r.headers["x-docker-container-path-stat"]))
    assert st["linkTarget"] == "/tmp/h" and st["mode"] & (1 << 27)
    # cp copies the link itself; -L follows it.
    berthd.docker("cp", "cpe:/tmp/l", str(tmp_path / "l"))
    assert os.readlink(tmp_path / "l") == "/tmp/h"
    berthd.docker("cp", "-L", "cpe:/tmp/l", str(tmp_path / "lf"))
    assert (tmp_path / "lf").read_text() == "hello\n"
    r = berthd.api("HEAD", "/containers/cpe/archive?path=/tmp")
    st = json.loads(base64.b64decode(r.headers["x-docker-container-path-stat"]))
    assert st["mode"] & (1 << 31) and st["mode"] & 0o7777 == 0o777 | 0o1000 or st["mode"] & (1 << 20)
    # Extracting into something that is not a directory fails.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("x")
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"x"))
    r = berthd.api("PUT", "/containers/cpe/archive?path=/tmp/h", body=buf.getvalue(),
                   headers={"Content-Type": "application/x-tar"})
    assert r.status == 400
    r = berthd.api("PUT", "/containers/cpe/archive?path=/nope", body=buf.getvalue(),
                   headers={"Content-Type": "application/x-tar"})
    assert r.status == 404


def test_paths_stay_inside_the_container(berthd, tmp_path):
    # Absolute and climbing symlinks resolve inside the container's root, never the host's.
    run(berthd, "-d", "--name", "esc", "busybox", "sh", "-c",
        "ln -s / /rootlink && ln -s ../../../../../../etc /tmp/up && echo inside > /etc/berth-marker && exec sleep 300")
    berthd.docker("cp", "esc:/rootlink/etc/berth-marker", str(tmp_path / "a"))
    assert (tmp_path / "a").read_text() == "inside\n"
    berthd.docker("cp", "esc:/tmp/up/berth-marker", str(tmp_path / "b"))
    assert (tmp_path / "b").read_text() == "inside\n"
    assert not os.path.exists("/etc/berth-marker")
    src = tmp_path / "evil"
    src.write_text("x\n")
    berthd.docker("cp", str(src), "esc:/tmp/up/")
    assert not os.path.exists("/etc/evil")
    assert berthd.docker("exec", "esc", "cat", "/etc/evil").stdout == "x\n"


def test_docker_py_archives_and_export(berthd):
    c = berthd.client()
    ctr = c.containers.run("busybox", ["sleep", "300"], detach=True, name="pyar")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = b"put by docker-py\n"
        ti = tarfile.TarInfo("py/file.txt")
        ti.size = len(data)
        ti.mode = 0o600
        ti.uid = 1234
        t.addfile(ti, io.BytesIO(data))
    import docker
    try:
        ctr.put_archive("/srv", buf.getvalue())
        raise AssertionError("put_archive into a missing directory succeeded")
    except docker.errors.NotFound as e:
        assert "Could not find the file /srv in container pyar" in str(e)
    ctr.exec_run(["mkdir", "/srv"])
    assert ctr.put_archive("/srv", buf.getvalue()) is True
    assert ctr.exec_run(["stat", "-c", "%a %u", "/srv/py/file.txt"]).output == b"600 1234\n"
    bits, stat = ctr.get_archive("/srv/py")
    assert stat["name"] == "py"
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as t:
        assert t.extractfile("py/file.txt").read() == b"put by docker-py\n"
    names = set()
    with tarfile.open(fileobj=io.BytesIO(b"".join(ctr.export())), mode="r|") as t:
        for m in t:
            names.add(m.name.lstrip("./").rstrip("/"))
    assert {"bin/busybox", "srv/py/file.txt", "etc/passwd"} <= names
    # The CLI: `export -o` and to stdout; a stopped container exports too.
    ctr.stop(timeout=0)
    cp = berthd.docker("export", "pyar", binary_input=True)
    with tarfile.open(fileobj=io.BytesIO(cp.stdout)) as t:
        assert t.extractfile(next(m for m in t.getmembers() if m.name.lstrip("./") == "srv/py/file.txt")).read() \
            == b"put by docker-py\n"
    assert not mounted(berthd, ctr.id)
    r = berthd.api("GET", "/containers/nosuch/export")
    assert r.status == 404


def test_diff(berthd, registry):
    img = f"{registry.host}/berth-test/multilayer"
    run(berthd, "-d", "--name", "df", "--entrypoint", "sh", img, "-c",
        "rm /etc/berth/version && echo changed > /app/keep.txt && mkdir -p /new/dir && echo n > /new/dir/f "
        "&& rm -rf /data/keep && exec sleep 300")
    import time
    from lib.ctr import wait_for
    assert wait_for(lambda: "D /data/keep" in berthd.docker("diff", "df").stdout, timeout=15)
    lines = berthd.docker("diff", "df").stdout.splitlines()
    for want in ["C /etc", "C /etc/berth", "D /etc/berth/version", "C /app", "C /app/keep.txt",
                 "A /new", "A /new/dir", "A /new/dir/f", "C /data", "D /data/keep"]:
        assert want in lines, (want, lines)
    # Nothing the engine mounts shows up (hosts, resolv.conf, hostname, /proc, /dev...).
    for l in lines:
        assert l.split()[1] not in ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf", "/proc", "/dev", "/sys"), lines
    assert "/data/keep/x" not in " ".join(lines)
    ch = berthd.client().containers.get("df").diff()
    kinds = {x["Path"]: x["Kind"] for x in ch}
    assert kinds["/etc/berth/version"] == 2 and kinds["/new/dir/f"] == 1 and kinds["/app/keep.txt"] == 0
    # A fresh container has no changes; a stopped one still has its own.
    run(berthd, "--name", "fresh", "busybox", "true")
    assert berthd.docker("diff", "fresh").stdout == ""
    berthd.docker("stop", "-t", "0", "df")
    assert "A /new/dir/f" in berthd.docker("diff", "df").stdout.splitlines()
    cid = inspect(berthd, "df")["Id"]
    assert not mounted(berthd, cid)
    r = berthd.api("GET", "/containers/nosuch/changes")
    assert r.status == 404
    time.sleep(0)


def _copy_views_mounted(cid):
    with open("/proc/self/mountinfo") as fh:
        return [ln.split()[4] for ln in fh if f"/cp/{cid[:12]}-" in ln.split()[4]]


def test_cp_through_volumes_and_binds(berthd, tmp_path):
    """`docker cp` sees the container's mounts, as dockerd's does: named and anonymous
    volumes and binds, in a created, a running and a stopped container."""
    bind = tmp_path / "bind"
    bind.mkdir()
    (bind / "on-host").write_text("host file\n")
    ro = tmp_path / "ro"
    ro.mkdir()
    src = tmp_path / "f.txt"
    src.write_text("copied\n")
    berthd.docker("volume", "create", "named")
    cid = berthd.docker("create", "--name", "cv", "-v", "named:/data", "-v", "/anon",
                        "-v", f"{bind}:/bind", "-v", f"{ro}:/ro:ro", "busybox",
                        "sh", "-c", "cat /data/f.txt /anon/f.txt; ls /bind; sleep 300").stdout.strip()
    # Created: into the named and the anonymous volume, out of the bind.
    berthd.docker("cp", str(src), "cv:/data/")
    berthd.docker("cp", str(src), "cv:/anon/f.txt")
    berthd.docker("cp", "cv:/bind/on-host", str(tmp_path / "back"))
    assert (tmp_path / "back").read_text() == "host file\n"
    vol = json.loads(berthd.docker("volume", "inspect", "named").stdout)[0]["Mountpoint"]
    assert open(os.path.join(vol, "f.txt")).read() == "copied\n"
    # The stat header of a volume's mount point is the volume's root.
    r = berthd.api("HEAD", f"/containers/{cid}/archive?path=/data")
    st = json.loads(base64.b64decode(r.headers["x-docker-container-path-stat"]))
    assert r.status == 200 and st["name"] == "data" and st["mode"] & (1 << 31)
    # A read-only mount stays read-only.
    cp = berthd.docker("cp", str(src), "cv:/ro/", check=False)
    assert cp.returncode != 0 and not (ro / "f.txt").exists()
    berthd.docker("start", "cv")
    assert berthd.docker("logs", "cv").stdout.startswith("copied\ncopied\non-host\n") or \
        wait_for_logs(berthd, "cv", "copied\ncopied\non-host\n")
    # Running: what the container wrote to a volume comes out; a copy in reaches it at once.
    berthd.docker("exec", "cv", "sh", "-c", "echo from-ctr > /anon/made")
    berthd.docker("cp", "cv:/anon/made", str(tmp_path / "made"))
    assert (tmp_path / "made").read_text() == "from-ctr\n"
    berthd.docker("cp", str(src), "cv:/bind/in.txt")
    assert (bind / "in.txt").read_text() == "copied\n"
    assert berthd.docker("exec", "cv", "cat", "/bind/in.txt").stdout == "copied\n"
    # A directory holding a mount point comes with the mount's content (docker cp c:/ -).
    cp = berthd.docker("cp", "cv:/bind", "-", binary_input=True)
    with tarfile.open(fileobj=io.BytesIO(cp.stdout)) as t:
        assert "bind/on-host" in t.getnames()
    # Nothing leaks into the container's own mounts: it still sees one mount at /bind.
    assert berthd.docker("exec", "cv", "sh", "-c", "grep -c ' /bind ' /proc/self/mountinfo").stdout == "1\n"
    # Stopped.
    berthd.docker("stop", "-t", "0", "cv")
    berthd.docker("cp", "cv:/data/f.txt", str(tmp_path / "stopped"))
    assert (tmp_path / "stopped").read_text() == "copied\n"
    assert not mounted(berthd, cid) and not _copy_views_mounted(cid)
    # docker-py's way (put_archive / get_archive) on a VOLUME of the request.
    c = berthd.client()
    ctr = c.containers.create("busybox", "ls /vol1", volumes=["/vol1"])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        ti = tarfile.TarInfo("a.py")
        ti.size = 3
        t.addfile(ti, io.BytesIO(b"a=1"))
    assert ctr.put_archive("/vol1", buf.getvalue())
    bits, stat = ctr.get_archive("/vol1/a.py")
    assert stat["name"] == "a.py" and stat["size"] == 3
    # Started while that archive is still unread: the copy does not take the rootfs away.
    ctr.start()
    with tarfile.open(fileobj=io.BytesIO(b"".join(bits))) as t:
        assert t.extractfile("a.py").read() == b"a=1"
    ctr.wait()
    assert ctr.logs() == b"a.py\n"
    assert not _copy_views_mounted(ctr.id)
    berthd.docker("rm", "-f", "cv")
    assert leaks_of(berthd, cid) == []


def wait_for_logs(b, name, want, timeout=10):
    import time
    deadline = time.time() + timeout
    while time.time() < deadline:
        if b.docker("logs", name).stdout.startswith(want):
            return True
        time.sleep(0.2)
    return False
