"""Debian's docker-compose 1.29 (Python, over docker-py 5) against berthd.

A two-service project: ``web`` (busybox httpd serving a page from a named
volume, port published on 127.0.0.1) and ``client`` (busybox wget fetching the
page by service name over the project network, in a loop).  Asserts
``up -d``, ``ps``, the page from the host, ``logs``, ``exec``, ``down -v``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

import pytest

from lib.ports import free_port

COMPOSE = os.environ.get("DOCKER_COMPOSE", "/usr/bin/docker-compose")
PAGE = "hello from berth compose"

COMPOSE_FILE = """\
version: "3.8"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "echo '{page}' > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
      - "127.0.0.1:{port}:8080"
    volumes:
      - pages:/www
  client:
    image: busybox:latest
    depends_on: [web]
    command: ["sh", "-c", "trap 'exit 0' TERM; while :; do wget -q -O - http://web:8080/index.html; sleep 1; done"]
volumes:
  pages: {{}}
"""

pytestmark = pytest.mark.skipif(not os.path.exists(COMPOSE),
                                reason=f"{COMPOSE} missing: scripts/setup installs docker-compose")


def _compose(engine, project_dir, project, *args, check=True, timeout=180):
    env = engine.docker_env()
    env["COMPOSE_INTERACTIVE_NO_CLI"] = "1"
    cmd = [COMPOSE, "--no-ansi", "-p", project, "-f", os.path.join(project_dir, "docker-compose.yml"),
           *args]
    cp = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=project_dir,
                        timeout=timeout)
    if check and cp.returncode != 0:
        raise AssertionError(f"`docker-compose {' '.join(args)}` exited {cp.returncode}\n"
                             f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
    return cp


def _get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode(errors="replace")


def test_compose_up_ps_logs_exec_down(berthd, tmp_path):
    port = free_port()
    project = "berthcompat"
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.format(page=PAGE, port=port))
    project_dir = str(tmp_path)

    try:
        # up -d: pulls busybox through the mirror, creates network, volume, containers
        up = _compose(berthd, project_dir, project, "up", "-d")
        out = up.stdout + up.stderr
        assert f"Creating network \"{project}_default\"" in out, out
        assert f"Creating volume \"{project}_pages\"" in out, out
        assert "done" in out or "Creating" in out, out

        # ps: both services up
        ps = _compose(berthd, project_dir, project, "ps")
        lines = [ln for ln in ps.stdout.splitlines() if ln.startswith(project + "_")]
        assert len(lines) == 2, ps.stdout
        for ln in lines:
            assert " Up " in f" {ln} ", ps.stdout
        web_line = next(ln for ln in lines if ln.startswith(f"{project}_web_1"))
        assert f"127.0.0.1:{port}->8080/tcp" in web_line, ps.stdout
        q = _compose(berthd, project_dir, project, "ps", "-q")
        assert len(q.stdout.split()) == 2, q.stdout

        # the page from the host through the published port
        deadline = time.monotonic() + 20
        body, err = None, None
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/index.html")
                if status == 200 and PAGE in body:
                    break
            except OSError as e:
                err = e
            time.sleep(0.3)
        assert body is not None and PAGE in body, f"no page on 127.0.0.1:{port}: {err!r} {body!r}"

        # logs: the client fetched the page by service name over the project network
        deadline = time.monotonic() + 20
        logs = None
        while time.monotonic() < deadline:
            logs = _compose(berthd, project_dir, project, "logs", "--no-color", "client")
            if PAGE in logs.stdout:
                break
            time.sleep(0.5)
        assert PAGE in logs.stdout, f"client logs:\n{logs.stdout}\n{logs.stderr}"
        assert "client_1" in logs.stdout, logs.stdout

        # exec (no TTY: -T), into the named volume
        ex = _compose(berthd, project_dir, project, "exec", "-T", "web", "cat", "/www/index.html")
        assert ex.stdout.strip() == PAGE, ex
        ex = _compose(berthd, project_dir, project, "exec", "-T", "web", "sh", "-c", "exit 3",
                      check=False)
        assert ex.returncode == 3, ex

        # the engine's view: labels compose relies on
        names = berthd.docker("ps", "--format", "{{.Names}}",
                              "--filter", f"label=com.docker.compose.project={project}").stdout.split()
        assert sorted(names) == [f"{project}_client_1", f"{project}_web_1"], names
        vol = json.loads(berthd.docker("volume", "inspect", f"{project}_pages").stdout)[0]
        assert vol["Labels"].get("com.docker.compose.project") == project, vol

        # down -v: containers, network and volume are gone
        down = _compose(berthd, project_dir, project, "down", "-v")
        out = down.stdout + down.stderr
        assert f"Removing network {project}_default" in out, out
        assert f"Removing volume {project}_pages" in out, out
        assert berthd.docker("ps", "-aq", "--filter",
                             f"label=com.docker.compose.project={project}").stdout.strip() == ""
        nets = berthd.docker("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert f"{project}_default" not in nets, nets
        vols = berthd.docker("volume", "ls", "-q").stdout.split()
        assert f"{project}_pages" not in vols, vols
        # the published port is closed again
        with pytest.raises(OSError):
            _get(f"http://127.0.0.1:{port}/index.html", timeout=1)
    finally:
        if shutil.which(COMPOSE) or os.path.exists(COMPOSE):
            _compose(berthd, project_dir, project, "down", "-v", "-t", "1", check=False)
