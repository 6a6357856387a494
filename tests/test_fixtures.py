"""The test harness itself: the offline images, the registry, the proxy.
These need no engine and must always pass."""

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import urllib.request

import build as image_build
from lib.registry import ACCEPT_ALL

REPOS = ["library/busybox", "library/alpine", "library/hello-world", "berth-test/multilayer"]


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_members(registry, repo, digest):
    status, _, blob = registry.get(f"/v2/{repo}/blobs/{digest}")
    assert status == 200
    assert sha(blob) == digest
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {m.name: m for m in tar.getmembers()}, tar


def test_registry_serves_catalog(registry):
    assert set(REPOS) <= set(registry.catalog())
    assert sorted(registry.tags("library/alpine")) == ["3.10", "latest"]


def test_busybox_is_a_manifest_list(registry, images):
    status, headers, body = registry.get("/v2/library/busybox/manifests/latest")
    assert status == 200
    assert headers["Content-Type"] == image_build.MT_DOCKER_LIST
    assert headers["Docker-Content-Digest"] == sha(body) == images.desc("library/busybox")["digest"]
    idx = json.loads(body)
    plats = [(m["platform"]["os"], m["platform"]["architecture"]) for m in idx["manifests"]]
    assert plats == [("linux", "arm64"), ("linux", "amd64")]
    for m in idx["manifests"]:
        status, _, mbody = registry.get(f"/v2/library/busybox/manifests/{m['digest']}")
        assert status == 200 and sha(mbody) == m["digest"]
        man = json.loads(mbody)
        status, _, cfg = registry.get(f"/v2/library/busybox/blobs/{man['config']['digest']}")
        assert json.loads(cfg)["architecture"] == m["platform"]["architecture"]


def test_busybox_rootfs(registry, images):
    m = images.amd64("library/busybox")
    members, _ = layer_members(registry, "library/busybox", m["layers"][0])
    assert members["bin/busybox"].isreg() and members["bin/busybox"].mode & 0o111
    for applet in ["sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "wc",
                   "httpd", "nc", "top", "ps"]:
        assert members["bin/" + applet].islnk(), applet
        assert members["bin/" + applet].linkname == "bin/busybox"
    assert members["tmp"].mode == 0o1777
    assert "root" in members and "etc/passwd" in members and "etc/group" in members
    cfg = images.config("library/busybox")
    assert cfg["config"]["Cmd"] == ["sh"]
    assert cfg["config"]["Env"][0].startswith("PATH=")
    assert cfg["rootfs"]["diff_ids"] == m["diff_ids"]


def test_multilayer_whiteouts(registry, images):
    m = images.amd64("berth-test/multilayer")
    assert len(m["layers"]) == 4
    status, headers, _ = registry.get(f"/v2/berth-test/multilayer/manifests/latest")
    assert headers["Content-Type"] == image_build.MT_DOCKER_MANIFEST
    members, _ = layer_members(registry, "berth-test/multilayer", m["layers"][2])
    assert "app/.wh.deleteme" in members
    assert "data/opaque/.wh..wh..opq" in members
    assert "data/opaque/new" in members
    cfg = images.config("berth-test/multilayer")["config"]
    assert cfg["WorkingDir"] == "/app" and cfg["Entrypoint"] == ["/app/entry.sh"]
    assert cfg["Labels"]["com.example.k"] == "v"
    assert set(cfg["ExposedPorts"]) == {"8080/tcp", "9090/udp"}
    hist = images.config("berth-test/multilayer")["history"]
    assert len([h for h in hist if not h.get("empty_layer")]) == 4 and len(hist) == 10


def test_alpine_latest_is_oci(registry):
    status, headers, body = registry.get("/v2/library/alpine/manifests/latest")
    assert status == 200 and headers["Content-Type"] == image_build.MT_OCI_MANIFEST


def test_build_is_reproducible(tmp_path, images):
    """A second build from scratch gives the same digests."""
    other = image_build.ensure_built(str(tmp_path / "cache"))
    assert other.images() == images.store.images()


def test_busybox_layer_runs_under_chroot(registry, images, tmp_path):
    """The rootfs is usable: unpack it and run sh from it with chroot."""
    m = images.amd64("library/busybox")
    blob = images.store.read_blob(m["layers"][0])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as t:
        t.extractall(tmp_path / "rootfs")
    out = subprocess.run(["chroot", str(tmp_path / "rootfs"), "/bin/sh", "-c",
                          "echo hi; id -un; ls /bin | wc -l"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == "hi" and lines[1] == "root" and int(lines[2]) > 100


def test_throttled_proxy(registry, throttled_registry, images):
    m = images.amd64("library/busybox")
    url = f"http://{throttled_registry.host}/v2/library/busybox/blobs/{m['layers'][0]}"
    with urllib.request.urlopen(url, timeout=30) as r:
        data = r.read()
    assert sha(data) == m["layers"][0]


def test_push_adhoc_image(registry):
    """Tests can make and push images of their own."""
    layer = image_build.make_layer([image_build.f("hello.txt", "hi\n")], "ADD hello.txt /")
    man = image_build.make_manifest([layer], {"Cmd": ["cat", "/hello.txt"]}, "2024-01-01T00:00:00Z")
    img = image_build.Image("adhoc/one", "v1", [man])
    digest = image_build.push_image(registry.host, img)
    assert digest == man.digest == registry.manifest_digest("adhoc/one", "v1")
