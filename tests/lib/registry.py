"""Debian's docker-registry (Distribution 2.8) on 127.0.0.1, for the tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from .ports import free_port

REGISTRY_BIN = os.environ.get("BERTH_REGISTRY_BIN", "/usr/bin/docker-registry")

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: berth-tests-not-a-secret
  headers:
    X-Content-Type-Options: [nosniff]
"""

ACCEPT_ALL = ", ".join([
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
])


class Registry:
    def __init__(self, workdir: str | None = None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="berth-registry-")
        self._own_workdir = workdir is None
        self.storage = os.path.join(self.workdir, "storage")
        self.log_path = os.path.join(self.workdir, "registry.log")
        self.port = None
        self.proc = None

    @property
    def host(self) -> str:
        """host:port, as used in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self, timeout: float = 30):
        if not os.path.exists(REGISTRY_BIN):
            raise RuntimeError(f"{REGISTRY_BIN} missing: run scripts/setup (Debian package docker-registry)")
        os.makedirs(self.storage, exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            cfg = os.path.join(self.workdir, "config.yml")
            with open(cfg, "w") as fh:
                fh.write(CONFIG.format(storage=self.storage, port=self.port))
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", cfg], stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # port taken in the meantime, or bad config: retry
                try:
                    status, _, _ = self.get("/v2/")
                    if status == 200:
                        return self
                except OSError:
                    pass
                time.sleep(0.1)
            self.stop()
        raise RuntimeError("docker-registry did not start; log:\n" + self.log_tail())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self):
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n=40) -> str:
        try:
            with open(self.log_path, errors="replace") as fh:
                return "".join(fh.readlines()[-n:])
        except OSError:
            return ""

    # --- HTTP API ---------------------------------------------------------
    def get(self, path: str, accept: str = ACCEPT_ALL, method: str = "GET", timeout: float = 30):
        req = urllib.request.Request(self.url + path, method=method, headers={"Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def manifest_digest(self, repo: str, ref: str) -> str | None:
        status, headers, _ = self.get(f"/v2/{repo}/manifests/{ref}", method="HEAD")
        return headers.get("Docker-Content-Digest") if status == 200 else None

    def catalog(self) -> list[str]:
        status, _, body = self.get("/v2/_catalog")
        return json.loads(body)["repositories"] if status == 200 else []

    def tags(self, repo: str) -> list[str]:
        status, _, body = self.get(f"/v2/{repo}/tags/list")
        return (json.loads(body).get("tags") or []) if status == 200 else []

    def blob_data_path(self, digest: str) -> str:
        """Where the filesystem driver keeps a blob (tests corrupt it there)."""
        algo, hexd = digest.split(":", 1)
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", algo,
                            hexd[:2], hexd, "data")
