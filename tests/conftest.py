"""Fixtures for Berth's end-to-end tests.

- ``images``   (session) the offline-built test images (tests/images/build.py)
- ``registry`` (session) Debian's docker-registry on 127.0.0.1 with them pushed
- ``big_image``(session) berth-test/big (~50 MB) pushed on first use
- ``berthd``   (function) a private berthd with --registry-mirror -> registry
- ``berthd_factory`` (function) make more engines, with other arguments
- ``throttled_registry`` (function) the registry behind a bandwidth-limited proxy

Each berthd has its own socket, data root and docker CLI config, so tests are
independent and pytest-xdist may run them in parallel (each worker has its
own registry).
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "images"))

import build as image_build  # noqa: E402  (tests/images/build.py)
from lib.berthd import Berthd  # noqa: E402
from lib.proxy import ThrottledProxy  # noqa: E402
from lib.registry import Registry  # noqa: E402

KEEP = os.environ.get("BERTH_KEEP_TMP") == "1"


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request) -> bool:
    node = request.node
    return any(getattr(getattr(node, "rep_" + w, None), "failed", False)
               for w in ("setup", "call"))


class ImageSet:
    """The built images: ``images.desc('library/busybox')`` gives the JSON
    description (digest, manifests with config/layers/diff_ids...)."""

    def __init__(self, store):
        self.store = store

    def desc(self, name: str, tag: str = "latest") -> dict:
        return self.store.image(name, tag)

    def amd64(self, name: str, tag: str = "latest") -> dict:
        for m in self.desc(name, tag)["manifests"]:
            if m["architecture"] == "amd64":
                return m
        raise KeyError(name)

    def image_id(self, name: str, tag: str = "latest", arch: str = "amd64") -> str:
        for m in self.desc(name, tag)["manifests"]:
            if m["architecture"] == arch:
                return m["config"]
        raise KeyError(f"{name}:{tag} {arch}")

    def config(self, name: str, tag: str = "latest", arch: str = "amd64") -> dict:
        import json
        return json.loads(self.store.read_blob(self.image_id(name, tag, arch)))


@pytest.fixture(scope="session")
def images():
    return ImageSet(image_build.ensure_built())


@pytest.fixture(scope="session")
def registry(images):
    reg = Registry().start()
    try:
        image_build.push_all(images.store, reg.host)
        reg.images = images
        yield reg
    finally:
        reg.cleanup()


@pytest.fixture(scope="session")
def big_image(registry, images):
    """berth-test/big:latest pushed into the registry; returns its description."""
    store = image_build.ensure_built(big=True)
    image_build.push_all(store, registry.host, "big.json")
    return store.image("berth-test/big", "latest")


@pytest.fixture
def throttled_registry(registry):
    """The same registry behind a proxy limited to 8 MB/s per connection."""
    proxy = ThrottledProxy(registry.port, rate=int(os.environ.get("BERTH_TEST_THROTTLE", 8 << 20)))
    proxy.start()
    yield proxy
    proxy.stop()


def _teardown(request, engines):
    failed = _failed(request)
    for e in engines:
        if failed:
            print(f"\n----- berthd log tail ({e.log_path}) -----\n{e.log_tail(120)}")
        e.cleanup(keep=KEEP)
        if KEEP:
            print(f"\nBERTH_KEEP_TMP=1: kept {e.tmp}")
        if e.leaks:
            print("\n".join(["berthd leaks:"] + e.leaks))


@pytest.fixture
def berthd_factory(request, registry):
    """make(extra_args=(), mirror=True, start=True, registry=host:port) -> Berthd"""
    engines: list[Berthd] = []

    def make(extra_args=(), mirror=True, start=True, registry_host=None, **kw):
        e = Berthd(registry=registry_host or registry.host, extra_args=extra_args,
                   mirror=mirror, **kw)
        engines.append(e)
        if start:
            e.start()
        return e

    yield make
    _teardown(request, engines)


@pytest.fixture
def berthd(request, registry):
    e = Berthd(registry=registry.host)
    try:
        e.start()
        yield e
    finally:
        _teardown(request, [e])
