"""The desktop app end to end.

- ``test_gui_in_chromium``: ui/ in Debian's chromium (playwright-core, ui/e2e/run.mjs)
  through ``berth-desktop --serve-ui`` -- the same commands the Tauri app uses --
  against a real berthd and the test registry: live list from /events, stop from the
  GUI, pull with per-layer progress, logs follow and search, exec, stats, delete
  conflict, run dialog, volumes, networks, settings, reconnect after an engine
  restart.  Screenshots go to docs/screenshots/ (BERTH_SCREENSHOTS to change).
- ``test_app_window_under_xvfb``: the real Tauri window (WebKitGTK) under Xvfb shows
  the containers view; screenshot docs/screenshots/app-window.png.

Both need the UI built (cd ui && npm ci && npm run build; scripts/test does it)
and berth-desktop built after it (cargo build --workspace).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lib.berthd import REPO, TARGET_DIR

DESKTOP = os.environ.get("BERTH_DESKTOP_BIN", os.path.join(TARGET_DIR, "debug", "berth-desktop"))
UI = os.path.join(REPO, "ui")
SHOTS = os.environ.get("BERTH_SCREENSHOTS", os.path.join(REPO, "docs", "screenshots"))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _need(paths):
    for p, what in paths:
        if not os.path.exists(p):
            pytest.skip(f"{what} missing ({p})")


@pytest.fixture
def ui_server(berthd, tmp_path):
    _need([(DESKTOP, "berth-desktop (cargo build --workspace)"),
           (os.path.join(UI, "dist", "index.html"), "the built UI (cd ui && npm run build)")])
    env = dict(os.environ)
    env.update({"DOCKER_HOST": berthd.host, "BERTH_DESKTOP_CONFIG": str(tmp_path / "desktop.json"),
                "BERTH_UI_TOKEN": os.urandom(12).hex(), "BERTH_UI_DIR": os.path.join(UI, "dist")})
    proc = subprocess.Popen([DESKTOP, "--serve-ui", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE,
                            stderr=open(tmp_path / "desktop.log", "wb"), text=True)
    try:
        line = proc.stdout.readline()
        assert "http://" in line, f"berth-desktop --serve-ui said {line!r}; log: {(tmp_path / 'desktop.log').read_text()}"
        yield line.split(" at ", 1)[1].strip()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


class _Control(BaseHTTPRequestHandler):
    engine = None

    def do_POST(self):  # noqa: N802
        if self.path == "/kill":
            self.engine.kill(signal.SIGKILL)
        elif self.path == "/start":
            self.engine.start()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_gui_in_chromium(berthd, registry, ui_server, tmp_path):
    _need([(CHROMIUM, "chromium"), (os.path.join(UI, "node_modules", "playwright-core"), "playwright-core (cd ui && npm ci)")])
    _Control.engine = berthd
    control = ThreadingHTTPServer(("127.0.0.1", 0), _Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    env = berthd.docker_env()
    env.update({"BERTH_UI_URL": ui_server, "BERTH_REGISTRY": registry.host, "BERTH_SCREENSHOTS": SHOTS,
                "BERTH_E2E_CONTROL": f"http://127.0.0.1:{control.server_address[1]}", "PATH": os.environ["PATH"]})
    try:
        r = subprocess.run(["node", os.path.join(UI, "e2e", "run.mjs")], cwd=UI, env=env,
                           capture_output=True, text=True, timeout=280)
    finally:
        control.shutdown()
    print(r.stdout)
    print(r.stderr)
    assert r.returncode == 0, f"e2e failed:\n{r.stdout}\n{r.stderr}"


def _free_display() -> int:
    for n in range(90, 140):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display")


def test_app_window_under_xvfb(berthd, tmp_path):
    _need([(DESKTOP, "berth-desktop"), ("/usr/bin/Xvfb", "xvfb"), ("/usr/bin/import", "imagemagick"),
           ("/usr/bin/xdotool", "xdotool")])
    berthd.docker("run", "-d", "--name", "window-web", "-p", "127.0.0.1::80", "busybox", "httpd", "-f", "-p", "80")
    berthd.docker("run", "-d", "--name", "window-worker", "--label", "com.docker.compose.project=demo",
                  "busybox", "sleep", "600")
    n = _free_display()
    xvfb = subprocess.Popen(["/usr/bin/Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = dict(os.environ)
    env.update({"DISPLAY": f":{n}", "DOCKER_HOST": berthd.host, "BERTH_DESKTOP_CONFIG": str(tmp_path / "desktop.json"),
                "NO_AT_BRIDGE": "1"})
    (tmp_path / "desktop.json").write_text(json.dumps({"startEngine": False, "closeToTray": False}))
    app = None
    try:
        for _ in range(100):
            if os.path.exists(f"/tmp/.X11-unix/X{n}"):
                break
            time.sleep(0.05)
        t0 = time.monotonic()
        app = subprocess.Popen([DESKTOP], env=env, stdout=open(tmp_path / "app.log", "wb"), stderr=subprocess.STDOUT)
        wid = None
        for _ in range(200):
            r = subprocess.run(["/usr/bin/xdotool", "search", "--onlyvisible", "--name", "^Berth$"], env=env,
                               capture_output=True, text=True)
            if r.stdout.strip():
                wid = r.stdout.split()[0]
                break
            assert app.poll() is None, f"berth-desktop exited: {(tmp_path / 'app.log').read_text()}"
            time.sleep(0.05)
        assert wid, f"no Berth window; log: {(tmp_path / 'app.log').read_text()}"
        mapped = time.monotonic() - t0
        os.makedirs(SHOTS, exist_ok=True)
        out = os.path.join(SHOTS, "app-window.png")
        # Wait for the page to paint the list (many colours), not a blank window.
        colours = 0
        for _ in range(60):
            time.sleep(0.25)
            subprocess.run(["/usr/bin/import", "-display", f":{n}", "-window", "root", str(tmp_path / "w.png")],
                           env=env, check=True)
            colours = int(subprocess.run(["/usr/bin/convert", str(tmp_path / "w.png"), "-format", "%k", "info:"],
                                         capture_output=True, text=True).stdout or 0)
            if colours > 200:
                break
        painted = time.monotonic() - t0
        print(f"window mapped after {mapped:.2f}s, painted after {painted:.2f}s ({colours} colours)")
        time.sleep(1.5)  # let live stats arrive
        subprocess.run(["/usr/bin/import", "-display", f":{n}", "-window", "root", out], env=env, check=True)
        assert colours > 200, f"the window looks blank ({colours} colours); log: {(tmp_path / 'app.log').read_text()}"
        assert app.poll() is None
        # Images is imported when first shown (ui/src/lazy.tsx): Alt+2 must paint it in WebKit too.
        subprocess.run(["/usr/bin/xdotool", "windowfocus", "--sync", wid], env=env, check=True)
        subprocess.run(["/usr/bin/xdotool", "key", "alt+2"], env=env, check=True)
        diff = 0
        for _ in range(40):
            time.sleep(0.25)
            subprocess.run(["/usr/bin/import", "-display", f":{n}", "-window", "root", str(tmp_path / "images.png")],
                           env=env, check=True)
            r = subprocess.run(["/usr/bin/compare", "-metric", "AE", out, str(tmp_path / "images.png"), "null:"],
                               capture_output=True, text=True)
            diff = int(float((r.stderr.split() or ["0"])[0]))
            if diff > 20000:
                break
        assert diff > 20000, f"Alt+2 did not change the window ({diff} pixels); log: {(tmp_path / 'app.log').read_text()}"
        assert app.poll() is None
    finally:
        if app:
            app.terminate()
            try:
                app.wait(10)
            except subprocess.TimeoutExpired:
                app.kill()
        xvfb.terminate()
        xvfb.wait(10)


if shutil.which("node") is None:  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="node is not installed")
