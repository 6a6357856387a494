"""Volumes, binds and tmpfs (issue #4), with the real docker CLI and docker-py."""

import json
import os

import pytest


def vols(berthd, *args):
    return berthd.docker("volume", "ls", "-q", *args).stdout.split()


def test_volumes_chapter(berthd):
    """The seed's volumes chapter, as written."""
    berthd.docker("volume", "create", "bizvol")
    assert "bizvol" in vols(berthd)
    berthd.docker("run", "--name", "voltainer", "--mount", "source=bizvol,target=/vol", "busybox",
                  "sh", "-c", "echo persisted > /vol/data")
    berthd.docker("rm", "voltainer")
    assert berthd.docker("run", "--rm", "--mount", "source=bizvol,target=/vol", "busybox",
                         "cat", "/vol/data").stdout == "persisted\n"
    assert berthd.docker("run", "--rm", "-v", "bizvol:/v", "busybox", "cat", "/v/data").stdout == "persisted\n"
    v = json.loads(berthd.docker("volume", "inspect", "bizvol").stdout)[0]
    assert v["Driver"] == "local" and v["Scope"] == "local" and v["Mountpoint"].endswith("/bizvol/_data")
    with open(os.path.join(v["Mountpoint"], "data")) as fh:
        assert fh.read() == "persisted\n"
    berthd.docker("run", "-d", "--name", "user", "-v", "bizvol:/v", "busybox", "sleep", "300")
    cp = berthd.docker("volume", "rm", "bizvol", check=False)
    assert cp.returncode != 0 and "remove bizvol: volume is in use" in cp.stderr
    r = berthd.api("DELETE", "/volumes/bizvol")
    assert r.status == 409
    berthd.docker("rm", "-f", "user")
    berthd.docker("volume", "create", "unused")
    # Without -a, prune removes only anonymous volumes (API >= 1.42).
    berthd.docker("run", "--name", "anon", "-v", "/anon", "busybox", "true")
    berthd.docker("rm", "anon")
    anon = [n for n in vols(berthd) if n not in ("bizvol", "unused")]
    assert len(anon) == 1
    out = berthd.docker("volume", "prune", "-f").stdout
    assert anon[0] in out and "bizvol" not in out
    assert set(vols(berthd)) == {"bizvol", "unused"}
    out = berthd.docker("volume", "prune", "-a", "-f").stdout
    assert "unused" in out and "bizvol" in out
    assert vols(berthd) == []


def test_volume_ls_filters_and_labels(berthd):
    berthd.docker("volume", "create", "--label", "env=prod", "v-prod")
    berthd.docker("volume", "create", "v-dev")
    berthd.docker("run", "-d", "--name", "vu", "-v", "v-dev:/d", "busybox", "sleep", "300")
    assert vols(berthd, "--filter", "label=env=prod") == ["v-prod"]
    assert vols(berthd, "--filter", "label=env") == ["v-prod"]
    assert vols(berthd, "--filter", "dangling=true") == ["v-prod"]
    assert vols(berthd, "--filter", "dangling=false") == ["v-dev"]
    assert sorted(vols(berthd, "--filter", "name=v-")) == ["v-dev", "v-prod"]
    assert sorted(vols(berthd, "--filter", "driver=local")) == ["v-dev", "v-prod"]
    v = json.loads(berthd.docker("volume", "inspect", "v-prod").stdout)[0]
    assert v["Labels"] == {"env": "prod"}
    cp = berthd.docker("volume", "inspect", "nosuchvol", check=False)
    assert cp.returncode != 0 and "no such volume" in cp.stderr
    cp = berthd.docker("volume", "create", "bad/name", check=False)
    assert cp.returncode != 0 and "includes invalid characters" in cp.stderr
    mounts = json.loads(berthd.docker("inspect", "vu").stdout)[0]["Mounts"]
    assert mounts[0]["Type"] == "volume" and mounts[0]["Name"] == "v-dev" and mounts[0]["Destination"] == "/d"


def test_volume_data_survives_engine_restart(berthd):
    berthd.docker("run", "--rm", "-v", "keep:/k", "busybox", "sh", "-c", "echo k > /k/f")
    berthd.restart()
    assert "keep" in vols(berthd)
    assert berthd.docker("run", "--rm", "-v", "keep:/k", "busybox", "cat", "/k/f").stdout == "k\n"


def test_binds_ro_rw(berthd, tmp_path):
    d = tmp_path / "host"
    d.mkdir()
    (d / "in.txt").write_text("from-host\n")
    out = berthd.docker("run", "--rm", "-v", f"{d}:/h:ro", "busybox", "sh", "-c",
                        "cat /h/in.txt; touch /h/x 2>&1 | grep -c Read-only").stdout
    assert out == "from-host\n1\n"
    berthd.docker("run", "--rm", "-v", f"{d}:/h", "busybox", "sh", "-c", "echo back > /h/out.txt")
    assert (d / "out.txt").read_text() == "back\n"
    out = berthd.docker("run", "--rm", "--mount", f"type=bind,source={d},target=/m,readonly",
                        "busybox", "sh", "-c", "cat /m/in.txt; touch /m/y 2>&1 | grep -c Read-only").stdout
    assert out == "from-host\n1\n"
    # -v creates a missing host directory (as dockerd does); --mount refuses it and creates nothing.
    made = tmp_path / "made" / "here"
    berthd.docker("run", "--rm", "-v", f"{made}:/x", "busybox", "true")
    assert made.is_dir()
    cp = berthd.docker("run", "--rm", "--mount", "type=bind,source=/nonexistent/x,target=/x",
                       "busybox", "true", check=False)
    assert cp.returncode != 0
    assert "invalid mount config for type \"bind\": bind source path does not exist: /nonexistent/x" in cp.stderr
    assert berthd.docker("ps", "-aq").stdout.strip() == ""


def test_tmpfs(berthd):
    out = berthd.docker("run", "--rm", "--tmpfs", "/scratch:size=1m", "busybox", "sh", "-c",
                        "grep /scratch /proc/mounts; echo x > /scratch/f && cat /scratch/f").stdout
    assert "tmpfs /scratch tmpfs" in out and "size=1024k" in out and out.endswith("x\n")
    out = berthd.docker("run", "--rm", "--mount", "type=tmpfs,target=/t,tmpfs-size=2m", "busybox",
                        "grep", "/t ", "/proc/mounts").stdout
    assert "tmpfs" in out and "size=2048k" in out


def test_copy_up_and_image_volume(berthd):
    # A new volume over an image directory starts with the image's content.
    out = berthd.docker("run", "--rm", "-v", "etcvol:/etc", "busybox", "cat", "/etc/passwd").stdout
    assert "root:" in out
    # nocopy leaves it empty.
    out = berthd.docker("run", "--rm", "--mount", "source=emptyvol,target=/etc,volume-nocopy",
                        "busybox", "ls", "/etc").stdout
    assert "passwd" not in out


def test_malformed_specs_create_nothing(berthd):
    before = vols(berthd)
    cp = berthd.docker("run", "--rm", "-v", "newvol:relative", "busybox", "true", check=False)
    assert cp.returncode != 0 and "invalid volume specification" in cp.stderr
    cp = berthd.docker("run", "--rm", "-v", "newvol:/a:bogus", "busybox", "true", check=False)
    assert cp.returncode != 0 and "invalid mode: bogus" in cp.stderr
    # A named volume followed by a bad bind source: the volume is not left behind.
    cp = berthd.docker("run", "--rm", "-v", "newvol:/a", "--mount", "type=bind,source=/nonexistent/y,target=/y",
                       "busybox", "true", check=False)
    assert cp.returncode != 0
    assert vols(berthd) == before
    assert berthd.docker("ps", "-aq").stdout.strip() == ""


def test_anonymous_volume_removed_with_rm_v(berthd):
    berthd.docker("run", "--name", "anon", "-v", "/data", "busybox", "true")
    vs = vols(berthd)
    assert len(vs) == 1 and len(vs[0]) == 64
    v = json.loads(berthd.docker("volume", "inspect", vs[0]).stdout)[0]
    assert "com.docker.volume.anonymous" in v["Labels"]
    berthd.docker("rm", "-v", "anon")
    assert vols(berthd) == []
    # Without -v it stays; a named volume always stays.
    berthd.docker("run", "--name", "anon2", "-v", "/data", "-v", "named:/n", "busybox", "true")
    berthd.docker("rm", "anon2")
    assert len(vols(berthd)) == 2
    berthd.docker("run", "--name", "anon3", "-v", "named:/n", "busybox", "true")
    berthd.docker("rm", "-v", "anon3")
    assert "named" in vols(berthd)


def test_volumes_from(berthd):
    berthd.docker("run", "--name", "src", "-v", "shared:/s", "busybox", "sh", "-c", "echo vf > /s/f")
    assert berthd.docker("run", "--rm", "--volumes-from", "src", "busybox", "cat", "/s/f").stdout == "vf\n"
    out = berthd.docker("run", "--rm", "--volumes-from", "src:ro", "busybox", "sh", "-c",
                        "touch /s/g 2>&1 | grep -c Read-only").stdout
    assert out == "1\n"
    cp = berthd.docker("volume", "rm", "shared", check=False)
    assert cp.returncode != 0 and "volume is in use" in cp.stderr


def test_docker_py_volumes(berthd):
    c = berthd.client()
    v = c.volumes.create("pyvol", labels={"k": "v"})
    assert v.attrs["Labels"] == {"k": "v"}
    out = c.containers.run("busybox", ["sh", "-c", "echo py > /p/f; cat /p/f"],
                           volumes={"pyvol": {"bind": "/p", "mode": "rw"}}, remove=True)
    assert out == b"py\n"
    assert [x.name for x in c.volumes.list(filters={"label": "k=v"})] == ["pyvol"]
    res = c.volumes.prune(filters={"all": "true"})
    assert res["VolumesDeleted"] == ["pyvol"]
    with pytest.raises(Exception):
        c.volumes.get("pyvol")
