#!/usr/bin/env python3
"""Build Berth's test images offline and push them into a registry.

Everything here is made from Debian's busybox-static (/bin/busybox) with the
Python standard library only; nothing is downloaded.  Builds are reproducible
(fixed mtimes, sorted entries, gzip with mtime 0), so digests are stable from
one run to the next and tests may rely on them staying the same within a run.

Images (see ``IMAGES`` below and the ``build_*`` functions):

  library/busybox:latest       Docker manifest list: linux/arm64/v8 + linux/amd64
  library/alpine:3.10          busybox-based stand-in, Docker v2 manifest
  library/alpine:latest        busybox-based stand-in, OCI manifest
  library/hello-world:latest   busybox-based stand-in, Cmd echo "Hello from Docker!"
  berth-test/multilayer:latest single Docker v2 manifest, 4 layers with whiteouts
  berth-test/big:latest        (only with --big / build_big()) busybox + ~50 MB random layer

The result is a content store in the cache directory:

  <cache>/blobs/sha256/<hex>   layers, configs and manifests, byte-exact
  <cache>/images.json          what was built (see ``Image.to_json``)
  <cache>/big.json             the big image, when built
  <cache>/key                  hash of this script + busybox; a change rebuilds

Command line:

  build.py [--cache DIR] [--big] [--push HOST:PORT] [--list]
"""

from __future__ import annotations

import argparse
import fcntl
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CACHE = os.path.join(os.path.dirname(HERE), ".cache", "images")
BUSYBOX = os.environ.get("BERTH_TEST_BUSYBOX", "/bin/busybox")

MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EPOCH = 1704067200  # 2024-01-01T00:00:00Z, mtime of every file in every layer

# Applets we insist on (the tests use them); the rest come from `busybox --list`.
REQUIRED_APPLETS = [
    "sh", "ls", "cat", "echo", "sleep", "true", "false", "id", "env", "wc",
    "httpd", "nc", "top", "ps", "mkdir", "rm", "touch", "hostname", "ip",
    "wget", "head", "tail", "grep", "sed", "printf", "test", "kill", "dd",
    "stat", "whoami", "date", "mount", "umount", "df", "du", "find", "xargs",
]

BIG_SIZE = 50 * 1024 * 1024


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------

@dataclass
class Entry:
    """One tar member.  kind: dir | file | symlink | hardlink."""
    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""
    uid: int = 0
    gid: int = 0


def d(path, mode=0o755):
    return Entry(path, "dir", mode=mode)


def f(path, data, mode=0o644):
    if isinstance(data, str):
        data = data.encode()
    return Entry(path, "file", data=data, mode=mode)


def whiteout(path):
    """A whiteout for `path`: an empty file named .wh.<basename>."""
    parent, name = os.path.split(path.rstrip("/"))
    return Entry(os.path.join(parent, ".wh." + name), "file", mode=0o600)


def opaque(dirpath):
    """Mark `dirpath` opaque: lower layers' contents of it are hidden."""
    return Entry(os.path.join(dirpath.rstrip("/"), ".wh..wh..opq"), "file", mode=0o600)


def make_tar(entries: list[Entry]) -> bytes:
    """An uncompressed, reproducible tar of the entries, in the given order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            ti = tarfile.TarInfo(e.path.lstrip("/"))
            ti.mtime = EPOCH
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname = ti.gname = ""
            ti.mode = e.mode
            if e.kind == "dir":
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif e.kind == "file":
                ti.type = tarfile.REGTYPE
                ti.size = len(e.data)
                tar.addfile(ti, io.BytesIO(e.data))
            elif e.kind == "symlink":
                ti.type = tarfile.SYMTYPE
                ti.linkname = e.target
                ti.mode = 0o777
                tar.addfile(ti)
            elif e.kind == "hardlink":
                ti.type = tarfile.LNKTYPE
                ti.linkname = e.target.lstrip("/")
                tar.addfile(ti)
            else:
                raise ValueError(e.kind)
    return buf.getvalue()


@dataclass
class Layer:
    tar: bytes            # uncompressed
    gz: bytes             # what the registry stores
    created_by: str
    comment: str = ""

    @property
    def diff_id(self):
        return sha256(self.tar)

    @property
    def digest(self):
        return sha256(self.gz)


def make_layer(entries, created_by, level=6) -> Layer:
    tar = make_tar(entries)
    return Layer(tar, gzip.compress(tar, compresslevel=level, mtime=0), created_by)


def busybox_applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                         text=True, timeout=30).stdout.split()
    names = sorted(set(out) | set(REQUIRED_APPLETS))
    return [n for n in names if n and "/" not in n and n != "busybox"]


def busybox_rootfs_entries() -> list[Entry]:
    """The rootfs of a busybox image, laid out like Docker Hub's busybox:
    /bin/busybox with a hard link per applet, and a minimal /etc."""
    with open(BUSYBOX, "rb") as fh:
        binary = fh.read()
    entries = [
        d("bin"), d("dev"), d("etc"), d("home"), d("root", 0o700),
        d("tmp", 0o1777), d("usr"), d("usr/bin"), d("usr/sbin"), d("var"),
        d("var/spool"), d("var/spool/mail"), d("var/www"),
        f("bin/busybox", binary, 0o755),
    ]
    for name in busybox_applets():
        entries.append(Entry("bin/" + name, "hardlink", target="bin/busybox", mode=0o755))
    entries += [
        f("etc/passwd",
          "root:x:0:0:root:/root:/bin/sh\n"
          "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
          "nobody:x:65534:65534:nobody:/home:/bin/false\n"),
        f("etc/group",
          "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\nnobody:x:65534:\n"),
        f("etc/shadow", "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0o640),
        f("etc/nsswitch.conf", "hosts: files dns\n"),
    ]
    return entries


# --------------------------------------------------------------------------
# Configs and manifests
# --------------------------------------------------------------------------

@dataclass
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def to_json(self):
        p = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            p["variant"] = self.variant
        return p

    def __str__(self):
        s = f"{self.os}/{self.architecture}"
        return s + (f"/{self.variant}" if self.variant else "")


@dataclass
class Manifest:
    """One platform image: config + layers + manifest, all as exact bytes."""
    platform: Platform
    config: bytes
    manifest: bytes
    media_type: str
    layers: list[Layer]

    @property
    def digest(self):
        return sha256(self.manifest)

    @property
    def config_digest(self):
        return sha256(self.config)

    def config_json(self):
        return json.loads(self.config)


def make_manifest(layers: list[Layer], container_config: dict, created: str,
                  platform: Platform = None, oci: bool = False,
                  extra_history: list[tuple[int, dict]] = (),
                  author: str = "") -> Manifest:
    """Build config + manifest.  extra_history: (after_layer_index, entry)
    pairs: empty_layer history entries (ENV, CMD...) that follow that layer's."""
    platform = platform or Platform()
    history = []
    for i, l in enumerate(layers):
        history.append({"created": created, "created_by": l.created_by})
        for after, entry in extra_history:
            if after == i:
                h = {"created": created, "empty_layer": True}
                h.update(entry)
                history.append(h)
    config = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": history,
    }
    if platform.variant:
        config["variant"] = platform.variant
    if author:
        config["author"] = author
    config_bytes = canonical_json(config)
    layer_mt = MT_OCI_LAYER if oci else MT_DOCKER_LAYER
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST if oci else MT_DOCKER_MANIFEST,
        "config": {
            "mediaType": MT_OCI_CONFIG if oci else MT_DOCKER_CONFIG,
            "size": len(config_bytes),
            "digest": sha256(config_bytes),
        },
        "layers": [{"mediaType": layer_mt, "size": len(l.gz), "digest": l.digest}
                   for l in layers],
    }
    body = json.dumps(manifest, indent=3).encode()
    return Manifest(platform, config_bytes, body, manifest["mediaType"], layers)


@dataclass
class Image:
    """A tagged image: either a single manifest or an index of manifests."""
    name: str                       # registry repository, e.g. library/busybox
    tag: str
    manifests: list[Manifest]       # one entry when there is no index
    index: bytes | None = None      # manifest list / OCI index bytes
    index_media_type: str = ""
    description: str = ""

    @property
    def top_media_type(self):
        return self.index_media_type if self.index is not None else self.manifests[0].media_type

    @property
    def top_bytes(self):
        return self.index if self.index is not None else self.manifests[0].manifest

    @property
    def digest(self):
        """The digest a pull by tag reports (index digest for multi-platform)."""
        return sha256(self.top_bytes)

    def for_platform(self, arch="amd64") -> Manifest:
        for m in self.manifests:
            if m.platform.architecture == arch:
                return m
        raise KeyError(arch)

    def blobs(self) -> dict[str, bytes]:
        out = {}
        for m in self.manifests:
            for l in m.layers:
                out[l.digest] = l.gz
            out[m.config_digest] = m.config
            out[m.digest] = m.manifest
        if self.index is not None:
            out[sha256(self.index)] = self.index
        return out

    def to_json(self):
        return {
            "name": self.name,
            "tag": self.tag,
            "description": self.description,
            "digest": self.digest,
            "media_type": self.top_media_type,
            "index": sha256(self.index) if self.index is not None else None,
            "manifests": [{
                "platform": str(m.platform),
                "architecture": m.platform.architecture,
                "digest": m.digest,
                "media_type": m.media_type,
                "config": m.config_digest,
                "layers": [l.digest for l in m.layers],
                "diff_ids": [l.diff_id for l in m.layers],
                "layer_sizes": [len(l.tar) for l in m.layers],
            } for m in self.manifests],
        }


def make_index(manifests: list[Manifest], oci: bool = False) -> bytes:
    idx = {
        "schemaVersion": 2,
        "mediaType": MT_OCI_INDEX if oci else MT_DOCKER_LIST,
        "manifests": [{
            "mediaType": m.media_type,
            "size": len(m.manifest),
            "digest": m.digest,
            "platform": m.platform.to_json(),
        } for m in manifests],
    }
    return json.dumps(idx, indent=3).encode()


# --------------------------------------------------------------------------
# The images
# --------------------------------------------------------------------------

_BASE = None


def busybox_layer() -> Layer:
    global _BASE
    if _BASE is None:
        _BASE = make_layer(busybox_rootfs_entries(),
                           '/bin/sh -c #(nop) ADD file:berth-busybox-rootfs in / ')
    return _BASE


def cmd_history(cmd: list[str]) -> dict:
    return {"created_by": "/bin/sh -c #(nop)  CMD " + json.dumps(cmd)}


def base_config(cmd=("sh",), **extra) -> dict:
    c = {"Env": [PATH_ENV], "Cmd": list(cmd)}
    c.update(extra)
    return c


def build_busybox() -> Image:
    base = busybox_layer()
    created = "2024-01-01T00:00:00Z"
    amd64 = make_manifest([base], base_config(), created, Platform("linux", "amd64"),
                          extra_history=[(0, cmd_history(["sh"]))])
    # The arm64 entry exists only to test platform selection: its config says
    # arm64/v8 but its layer is the very same amd64 busybox layer (we have no
    # arm64 binary offline).  An engine must never pick it on amd64.
    arm64 = make_manifest([base], base_config(), created, Platform("linux", "arm64", "v8"),
                          extra_history=[(0, cmd_history(["sh"]))])
    # arm64 is listed first on purpose, so "take the first entry" is caught.
    index = make_index([arm64, amd64])
    return Image("library/busybox", "latest", [arm64, amd64], index, MT_DOCKER_LIST,
                 "multi-platform manifest list (arm64 first, amd64)")


# /etc/passwd and /etc/group of alpine:3.10 (alpine-baselayout), verbatim but for
# root's shell (/bin/ash is a busybox applet here too).
ALPINE_PASSWD = """\
root:x:0:0:root:/root:/bin/ash
bin:x:1:1:bin:/bin:/sbin/nologin
daemon:x:2:2:daemon:/sbin:/sbin/nologin
adm:x:3:4:adm:/var/adm:/sbin/nologin
lp:x:4:7:lp:/var/spool/lpd:/sbin/nologin
sync:x:5:0:sync:/sbin:/bin/sync
shutdown:x:6:0:shutdown:/sbin:/sbin/shutdown
halt:x:7:0:halt:/sbin:/sbin/halt
mail:x:8:12:mail:/var/spool/mail:/sbin/nologin
news:x:9:13:news:/usr/lib/news:/sbin/nologin
uucp:x:10:14:uucp:/var/spool/uucppublic:/sbin/nologin
operator:x:11:0:operator:/root:/sbin/nologin
man:x:13:15:man:/usr/man:/sbin/nologin
postmaster:x:14:12:postmaster:/var/spool/mail:/sbin/nologin
cron:x:16:16:cron:/var/spool/cron:/sbin/nologin
ftp:x:21:21::/var/lib/ftp:/sbin/nologin
sshd:x:22:22:sshd:/dev/null:/sbin/nologin
at:x:25:25:at:/var/spool/cron/atjobs:/sbin/nologin
squid:x:31:31:Squid:/var/cache/squid:/sbin/nologin
xfs:x:33:33:X Font Server:/etc/X11/fs:/sbin/nologin
games:x:35:35:games:/usr/games:/sbin/nologin
postgres:x:70:70::/var/lib/postgresql:/bin/sh
cyrus:x:85:12::/usr/cyrus:/sbin/nologin
vpopmail:x:89:89::/var/vpopmail:/sbin/nologin
ntp:x:123:123:NTP:/var/empty:/sbin/nologin
smmsp:x:209:209:smmsp:/var/spool/mqueue:/sbin/nologin
guest:x:405:100:guest:/dev/null:/sbin/nologin
nobody:x:65534:65534:nobody:/:/sbin/nologin
"""
ALPINE_GROUP = """\
root:x:0:root
bin:x:1:root,bin,daemon
daemon:x:2:root,bin,daemon
sys:x:3:root,bin,adm
adm:x:4:root,adm,daemon
tty:x:5:
disk:x:6:root,adm
lp:x:7:lp
mem:x:8:
kmem:x:9:
wheel:x:10:root
floppy:x:11:root
mail:x:12:mail
news:x:13:news
uucp:x:14:uucp
man:x:15:man
cron:x:16:cron
console:x:17:
audio:x:18:
cdrom:x:19:
dialout:x:20:root
ftp:x:21:
sshd:x:22:
input:x:23:
at:x:25:at
tape:x:26:root
video:x:27:root
netdev:x:28:
readproc:x:30:
squid:x:31:squid
xfs:x:33:xfs
kvm:x:34:kvm
games:x:35:
shadow:x:42:
postgres:x:70:
cdrw:x:80:
usb:x:85:
vpopmail:x:89:
users:x:100:games
ntp:x:123:
nofiles:x:200:
smmsp:x:209:smmsp
locate:x:245:
abuild:x:300:
utmp:x:406:
ping:x:999:
nogroup:x:65533:
nobody:x:65534:
"""
ALPINE_DIRS = ["media", "mnt", "opt", "run", "sbin", "srv", "var", "var/cache", "var/empty",
               "var/lib", "var/local", "var/log", "var/mail", "var/opt"]


def build_alpine(version: str, created: str, oci: bool) -> Image:
    """Not Alpine: busybox plus /etc/alpine-release and /etc/os-release, so
    clients that expect `alpine` find a shell and the usual applets."""
    rel = make_layer([
        d("etc"),
        f("etc/alpine-release", version + "\n"),
        f("etc/os-release",
          'NAME="Alpine Linux (Berth test stand-in)"\nID=alpine\n'
          f'VERSION_ID={version}\nPRETTY_NAME="Berth stand-in for alpine {version}"\n'),
        d("lib"), d("lib/apk"), d("lib/apk/db"), f("lib/apk/db/installed", ""),
        # alpine-baselayout's users, groups and directories: clients rely on them
        # (docker-py's exec tests run `whoami` as `postgres` and `pwd` in /var/opt).
        f("etc/passwd", ALPINE_PASSWD), f("etc/group", ALPINE_GROUP),
        *[d(p) for p in ALPINE_DIRS], d("var/tmp", 0o1777),
    ], f"/bin/sh -c #(nop) ADD file:alpine-{version}-release in /etc ")
    m = make_manifest([busybox_layer(), rel], base_config(["/bin/sh"]), created,
                      extra_history=[(1, cmd_history(["/bin/sh"]))], oci=oci)
    tag = "latest" if version.startswith("3.20") else ".".join(version.split(".")[:2])
    return Image("library/alpine", tag, [m],
                 description=("OCI" if oci else "Docker v2") + f" manifest, alpine {version} stand-in")


def build_hello_world() -> Image:
    cmd = ["echo", "Hello from Docker!"]
    m = make_manifest([busybox_layer()], base_config(cmd), "2023-05-02T16:49:27Z",
                      extra_history=[(0, cmd_history(cmd))])
    return Image("library/hello-world", "latest", [m], description="busybox, Cmd echo")


ENTRY_SH = """#!/bin/sh
# entrypoint of berth-test/multilayer: prints its arguments and what the
# whiteouts must have done to the lower layers.
echo "args: $*"
echo "cwd: $(pwd)"
echo "APP_ENV=$APP_ENV"
for p in /app/deleteme /data/opaque/old1 /data/opaque/old2 /data/opaque/new /data/keep/x; do
  if [ -e "$p" ]; then echo "present: $p"; else echo "absent: $p"; fi
done
"""

MULTILAYER_LABELS = {"org.berth.test": "multilayer", "com.example.k": "v"}


def build_multilayer() -> Image:
    base = busybox_layer()
    l2 = make_layer([
        d("app"), f("app/deleteme", "this file is deleted by a whiteout in layer 3\n"),
        f("app/keep.txt", "kept\n"),
        d("data"), d("data/keep"), f("data/keep/x", "x\n"),
        d("data/opaque"), f("data/opaque/old1", "old1\n"), f("data/opaque/old2", "old2\n"),
        d("etc/berth"), f("etc/berth/version", "1\n"),
    ], "/bin/sh -c #(nop) COPY dir:app-and-data in / ")
    l3 = make_layer([
        d("app"), whiteout("app/deleteme"),
        d("data"), d("data/opaque"), opaque("data/opaque"), f("data/opaque/new", "new\n"),
        d("etc"), d("etc/berth"), f("etc/berth/version", "2\n"),
    ], "/bin/sh -c rm /app/deleteme && rm -rf /data/opaque && mkdir /data/opaque && echo new > /data/opaque/new")
    l4 = make_layer([
        d("app"), f("app/entry.sh", ENTRY_SH, 0o755),
        d("data/vol"), f("data/vol/seed.txt", "seeded from the image\n"),
    ], "/bin/sh -c #(nop) COPY file:entry.sh in /app/entry.sh ")
    config = {
        "Env": [PATH_ENV, "APP_ENV=test", "BERTH_LAYERS=4"],
        "Cmd": ["default-arg"],
        "Entrypoint": ["/app/entry.sh"],
        "WorkingDir": "/app",
        "Labels": dict(MULTILAYER_LABELS),
        "ExposedPorts": {"8080/tcp": {}, "9090/udp": {}},
        "Volumes": {"/data/vol": {}},
        "StopSignal": "SIGTERM",
    }
    extra = [
        (0, {"created_by": '/bin/sh -c #(nop)  ENV APP_ENV=test BERTH_LAYERS=4'}),
        (0, {"created_by": '/bin/sh -c #(nop)  LABEL org.berth.test=multilayer com.example.k=v'}),
        (0, {"created_by": '/bin/sh -c #(nop)  EXPOSE 8080/tcp 9090/udp'}),
        (0, {"created_by": '/bin/sh -c #(nop) WORKDIR /app'}),
        (3, {"created_by": '/bin/sh -c #(nop)  ENTRYPOINT ["/app/entry.sh"]'}),
        (3, {"created_by": '/bin/sh -c #(nop)  CMD ["default-arg"]'}),
    ]
    m = make_manifest([base, l2, l3, l4], config, "2024-06-01T12:00:00Z",
                      extra_history=extra, author="Berth tests")
    return Image("berth-test/multilayer", "latest", [m],
                 description="single Docker v2 manifest, 4 layers, whiteout + opaque dir")


def build_big() -> Image:
    """busybox + one layer of ~50 MB of (seeded, reproducible) random bytes,
    which do not compress: a pull that lasts long enough to be interrupted."""
    data = random.Random(20240101).randbytes(BIG_SIZE)
    big = make_layer([d("big"), f("big/random.bin", data)],
                     "/bin/sh -c #(nop) ADD file:random.bin in /big/", level=1)
    m = make_manifest([busybox_layer(), big], base_config(), "2024-07-01T00:00:00Z",
                      extra_history=[(1, cmd_history(["sh"]))])
    return Image("berth-test/big", "latest", [m], description="busybox + 50 MB random layer")


def build_all() -> list[Image]:
    return [
        build_busybox(),
        build_alpine("3.10.9", "2019-10-21T17:21:42Z", oci=False),
        build_alpine("3.20.3", "2024-03-01T00:00:00Z", oci=True),
        build_hello_world(),
        build_multilayer(),
    ]


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------

def cache_key() -> str:
    h = hashlib.sha256()
    with open(os.path.abspath(__file__), "rb") as fh:
        h.update(fh.read())
    with open(BUSYBOX, "rb") as fh:
        h.update(fh.read())
    return h.hexdigest()


class Store:
    """The built images on disk: byte-exact blobs and a JSON description."""

    def __init__(self, root: str):
        self.root = root

    def blob_path(self, digest: str) -> str:
        algo, hexd = digest.split(":", 1)
        return os.path.join(self.root, "blobs", algo, hexd)

    def read_blob(self, digest: str) -> bytes:
        with open(self.blob_path(digest), "rb") as fh:
            return fh.read()

    def write_blob(self, digest: str, data: bytes):
        p = self.blob_path(digest)
        if os.path.exists(p):
            return
        os.makedirs(os.path.dirname(p), exist_ok=True)
        tmp = p + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.rename(tmp, p)

    def add(self, images: list[Image], listing: str):
        for img in images:
            for dg, data in img.blobs().items():
                self.write_blob(dg, data)
        tmp = os.path.join(self.root, listing + ".tmp")
        with open(tmp, "w") as fh:
            json.dump([i.to_json() for i in images], fh, indent=2)
        os.rename(tmp, os.path.join(self.root, listing))

    def images(self, listing="images.json") -> list[dict]:
        with open(os.path.join(self.root, listing)) as fh:
            return json.load(fh)

    def image(self, name: str, tag="latest") -> dict:
        for listing in ("images.json", "big.json"):
            p = os.path.join(self.root, listing)
            if os.path.exists(p):
                for i in self.images(listing):
                    if i["name"] == name and i["tag"] == tag:
                        return i
        raise KeyError(f"{name}:{tag}")


def ensure_built(cache: str = DEFAULT_CACHE, big: bool = False) -> Store:
    """Build the images into `cache` unless they are there for this script
    version already.  Safe against concurrent callers (pytest-xdist)."""
    os.makedirs(cache, exist_ok=True)
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = cache_key()
        key_path = os.path.join(cache, "key")
        current = open(key_path).read().strip() if os.path.exists(key_path) else ""
        store = Store(cache)
        if current != key:
            for name in ("blobs", "images.json", "big.json", "key"):
                p = os.path.join(cache, name)
                if os.path.isdir(p):
                    shutil.rmtree(p)
                elif os.path.exists(p):
                    os.unlink(p)
            store.add(build_all(), "images.json")
            with open(key_path, "w") as fh:
                fh.write(key + "\n")
        if big and not os.path.exists(os.path.join(cache, "big.json")):
            store.add([build_big()], "big.json")
        return store


# --------------------------------------------------------------------------
# Pushing over the Distribution HTTP API
# --------------------------------------------------------------------------

class RegistryError(Exception):
    pass


def _request(method, url, data=None, headers=None, timeout=120):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def push_blob(registry: str, repo: str, digest: str, data: bytes):
    base = f"http://{registry}/v2/{repo}"
    status, _, _ = _request("HEAD", f"{base}/blobs/{digest}")
    if status == 200:
        return
    status, headers, body = _request("POST", f"{base}/blobs/uploads/", data=b"")
    if status != 202:
        raise RegistryError(f"start upload {repo}: {status} {body[:300]!r}")
    loc = urllib.parse.urljoin(f"http://{registry}/", headers["Location"])
    sep = "&" if "?" in loc else "?"
    status, _, body = _request(
        "PUT", f"{loc}{sep}digest={urllib.parse.quote(digest)}", data=data,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))})
    if status != 201:
        raise RegistryError(f"upload {digest} to {repo}: {status} {body[:300]!r}")


def push_manifest(registry: str, repo: str, ref: str, media_type: str, data: bytes) -> str:
    status, headers, body = _request(
        "PUT", f"http://{registry}/v2/{repo}/manifests/{ref}", data=data,
        headers={"Content-Type": media_type})
    if status != 201:
        raise RegistryError(f"put manifest {repo}:{ref}: {status} {body[:300]!r}")
    return headers.get("Docker-Content-Digest", sha256(data))


def push_described(store: Store, registry: str, desc: dict, repo: str = None, tag: str = None) -> str:
    """Push an image described in images.json (or big.json) under repo:tag
    (default: its own name and tag).  Returns the top-level digest."""
    repo = repo or desc["name"]
    tag = tag or desc["tag"]
    for m in desc["manifests"]:
        for dg in m["layers"] + [m["config"]]:
            push_blob(registry, repo, dg, store.read_blob(dg))
        if desc["index"]:
            push_manifest(registry, repo, m["digest"], m["media_type"], store.read_blob(m["digest"]))
    top = desc["index"] or desc["manifests"][0]["digest"]
    return push_manifest(registry, repo, tag, desc["media_type"], store.read_blob(top))


def push_image(registry: str, img: Image, repo: str = None, tag: str = None) -> str:
    """Push an in-memory Image (for images made by a test on the fly)."""
    repo = repo or img.name
    tag = tag or img.tag
    for m in img.manifests:
        for l in m.layers:
            push_blob(registry, repo, l.digest, l.gz)
        push_blob(registry, repo, m.config_digest, m.config)
        if img.index is not None:
            push_manifest(registry, repo, m.digest, m.media_type, m.manifest)
    return push_manifest(registry, repo, tag, img.top_media_type, img.top_bytes)


def push_all(store: Store, registry: str, listing="images.json"):
    for desc in store.images(listing):
        push_described(store, registry, desc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=DEFAULT_CACHE)
    ap.add_argument("--big", action="store_true", help="also build berth-test/big (~50 MB)")
    ap.add_argument("--push", metavar="HOST:PORT", help="push the images into this registry")
    ap.add_argument("--list", action="store_true", help="print what was built")
    args = ap.parse_args(argv)
    store = ensure_built(args.cache, big=args.big)
    if args.push:
        push_all(store, args.push)
        if args.big:
            push_all(store, args.push, "big.json")
    if args.list or not args.push:
        listings = ["images.json"] + (["big.json"] if args.big else [])
        for listing in listings:
            for i in store.images(listing):
                print(f"{i['name']}:{i['tag']}  {i['digest']}  {i['description']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
