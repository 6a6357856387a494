"""The tray icon of the real app, read over D-Bus as a desktop's panel would.

On Linux the tray is a StatusNotifierItem (libayatana-appindicator) whose menu is
exported with com.canonical.dbusmenu.  Xvfb has no panel, so this test brings
its own: a private session bus (``dbus-daemon``), a minimal
``org.kde.StatusNotifierWatcher`` (and host) written here with jeepney, then the
real ``berth-desktop`` under Xvfb against a real berthd with running containers.
It reads the menu (``GetLayout`` on the item's ``Menu`` path) and checks:

- the engine's state, one submenu per running container with Stop, Restart,
  Open http://localhost:PORT (enabled only with a published port) and Show logs,
  Restart engine, Stop engine, Open dashboard, Quit;
- a container stopped from the CLI leaves the menu (``LayoutUpdated``);
- Stop clicked in the menu (``Event(id, "clicked", …)``) stops the container in
  the engine;
- Stop engine clicked: berthd exits cleanly, the menu says "Engine stopped" and
  offers "Start engine"; berthd back: running again, its container still there;
- the engine killed: "Engine stopped" and "Start engine"; back: running again;
- Quit clicked: the app exits 0.

Needs berth-desktop built (cargo build -p berth-desktop), Xvfb, dbus-daemon and
jeepney (tests/requirements.txt).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

from lib.berthd import TARGET_DIR

jeepney = pytest.importorskip("jeepney")
from jeepney import (  # noqa: E402
    DBusAddress,
    HeaderFields,
    MatchRule,
    MessageType,
    message_bus,
    new_error,
    new_method_call,
    new_method_return,
    new_signal,
)
from jeepney.io.blocking import open_dbus_connection  # noqa: E402

DESKTOP = os.environ.get("BERTH_DESKTOP_BIN", os.path.join(TARGET_DIR, "debug", "berth-desktop"))
WATCHER = "org.kde.StatusNotifierWatcher"
WATCHER_PATH = "/StatusNotifierWatcher"
ITEM_IFACE = "org.kde.StatusNotifierItem"
MENU_IFACE = "com.canonical.dbusmenu"
PROPS = "org.freedesktop.DBus.Properties"

WATCHER_XML = """<node>
 <interface name="org.kde.StatusNotifierWatcher">
  <method name="RegisterStatusNotifierItem"><arg name="service" type="s" direction="in"/></method>
  <method name="RegisterStatusNotifierHost"><arg name="service" type="s" direction="in"/></method>
  <property name="RegisteredStatusNotifierItems" type="as" access="read"/>
  <property name="IsStatusNotifierHostRegistered" type="b" access="read"/>
  <property name="ProtocolVersion" type="i" access="read"/>
  <signal name="StatusNotifierItemRegistered"><arg type="s"/></signal>
  <signal name="StatusNotifierItemUnregistered"><arg type="s"/></signal>
  <signal name="StatusNotifierHostRegistered"/>
 </interface>
</node>"""


def _need(paths):
    for p, what in paths:
        if not os.path.exists(p):
            pytest.skip(f"{what} missing ({p})")


class Watcher(threading.Thread):
    """org.kde.StatusNotifierWatcher on the private bus: records the items that
    register (bus name, object path) and says a host is there."""

    def __init__(self, bus_addr: str):
        super().__init__(daemon=True)
        self.conn = open_dbus_connection(bus=bus_addr)
        reply = self.conn.send_and_get_reply(message_bus.RequestName(WATCHER, 4), timeout=5)
        assert reply.body[0] == 1, f"could not own {WATCHER}: {reply.body}"
        self.items: list[tuple[str, str]] = []
        self.registered = threading.Event()
        self.stopping = False
        self.error: str | None = None

    def run(self):
        while not self.stopping:
            try:
                msg = self.conn.receive(timeout=0.2)
            except TimeoutError:
                continue
            except Exception as ex:  # noqa: BLE001  (the bus went away at the end)
                if not self.stopping:
                    self.error = repr(ex)
                return
            try:
                self.handle(msg)
            except Exception as ex:  # noqa: BLE001
                self.error = repr(ex)

    def handle(self, msg):
        h = msg.header
        if h.message_type != MessageType.method_call:
            return
        iface = h.fields.get(HeaderFields.interface)
        member = h.fields.get(HeaderFields.member)
        sender = h.fields.get(HeaderFields.sender)
        if member == "Introspect":
            self.conn.send(new_method_return(msg, "s", (WATCHER_XML,)))
        elif member == "RegisterStatusNotifierItem":
            arg = msg.body[0]
            # appindicator sends its object path; others send a bus name.
            item = (sender, arg) if arg.startswith("/") else (arg, "/StatusNotifierItem")
            self.items.append(item)
            self.conn.send(new_method_return(msg))
            sig = new_signal(DBusAddress(WATCHER_PATH, interface=WATCHER), "StatusNotifierItemRegistered",
                             "s", (item[0] + item[1],))
            self.conn.send(sig)
            self.registered.set()
        elif member == "RegisterStatusNotifierHost":
            self.conn.send(new_method_return(msg))
        elif iface == PROPS and member in ("Get", "GetAll"):
            props = {
                "RegisteredStatusNotifierItems": ("as", [a + p for a, p in self.items]),
                "IsStatusNotifierHostRegistered": ("b", True),
                "ProtocolVersion": ("i", 0),
            }
            if member == "Get":
                name = msg.body[1]
                if name in props:
                    self.conn.send(new_method_return(msg, "v", (props[name],)))
                else:
                    self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownProperty", "s", (name,)))
            else:
                self.conn.send(new_method_return(msg, "a{sv}", (props,)))
        else:
            self.conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod", "s",
                                     (f"{iface}.{member} is not implemented here",)))

    def stop(self):
        self.stopping = True
        self.join(5)
        self.conn.close()


def _node(layout) -> dict:
    """(id, {props}, [children as variants]) -> {'id', 'label', 'enabled', 'children'}."""
    ident, props, children = layout
    label = props.get("label", ("s", ""))[1]
    return {
        "id": ident,
        # GTK mnemonics: "_" marks an access key, "__" is a literal underscore.
        "label": label.replace("__", "\0").replace("_", "").replace("\0", "_"),
        "enabled": props.get("enabled", ("b", True))[1],
        "visible": props.get("visible", ("b", True))[1],
        "type": props.get("type", ("s", "standard"))[1],
        "children": [_node(c[1]) for c in children],
    }


class Tray:
    """A client of the item: reads its menu and clicks in it."""

    def __init__(self, bus_addr: str, name: str, path: str):
        self.conn = open_dbus_connection(bus=bus_addr)
        self.item = DBusAddress(path, bus_name=name, interface=ITEM_IFACE)
        reply = self.call(new_method_call(DBusAddress(path, bus_name=name, interface=PROPS), "Get", "ss",
                                          (ITEM_IFACE, "Menu")))
        self.menu_path = reply.body[0][1]
        self.menu = DBusAddress(self.menu_path, bus_name=name, interface=MENU_IFACE)
        rule = MatchRule(type="signal", sender=name, interface=MENU_IFACE, member="LayoutUpdated",
                         path=self.menu_path)
        self.call(message_bus.AddMatch(rule))
        self.updates = self.conn.filter(rule, bufsize=16).__enter__()

    def call(self, msg, timeout=10):
        reply = self.conn.send_and_get_reply(msg, timeout=timeout)
        assert reply.header.message_type != MessageType.error, f"D-Bus error: {reply.header.fields} {reply.body}"
        return reply

    def prop(self, name):
        reply = self.call(new_method_call(DBusAddress(self.item.object_path, bus_name=self.item.bus_name,
                                                      interface=PROPS), "Get", "ss", (ITEM_IFACE, name)))
        return reply.body[0][1]

    def layout(self) -> dict:
        reply = self.call(new_method_call(self.menu, "GetLayout", "iias", (0, -1, [])))
        return _node(reply.body[1])

    def visible(self) -> list[dict]:
        return [c for c in self.layout()["children"] if c["visible"] and c["type"] != "separator"]

    def click(self, ident: int):
        self.call(new_method_call(self.menu, "Event", "isvu", (ident, "clicked", ("i", 0), int(time.time()))))

    def wait_update(self, timeout: float) -> bool:
        """True when a LayoutUpdated arrived (or had arrived) within timeout."""
        if self.updates:
            self.updates.clear()
            return True
        try:
            self.conn.recv_until_filtered(self.updates, timeout=timeout)
        except TimeoutError:
            return False
        self.updates.clear()
        return True

    def wait_for(self, pred, what: str, timeout: float = 30):
        deadline = time.monotonic() + timeout
        items = []
        while time.monotonic() < deadline:
            items = self.visible()
            if pred(items):
                return items
            self.wait_update(min(1.0, max(0.05, deadline - time.monotonic())))
        raise AssertionError(f"tray menu never showed {what}; last: {[i['label'] for i in items]}")

    def close(self):
        self.conn.close()


def _labels(items):
    return [i["label"] for i in items]


def _find(items, prefix):
    for i in items:
        if i["label"].startswith(prefix):
            return i
    return None


def _free_display() -> int:
    for n in range(140, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display")


def _running(berthd, name) -> bool:
    cp = berthd.docker("inspect", "-f", "{{.State.Running}}", name)
    return cp.stdout.strip() == "true"


def test_tray_menu_over_dbus(berthd, tmp_path):
    _need([(DESKTOP, "berth-desktop (cargo build -p berth-desktop)"), ("/usr/bin/Xvfb", "xvfb"),
           ("/usr/bin/dbus-daemon", "dbus-daemon")])
    berthd.docker("run", "-d", "--name", "tray-web", "-p", "127.0.0.1::80", "busybox", "httpd", "-f", "-p", "80")
    berthd.docker("run", "-d", "--name", "tray-a", "busybox", "sleep", "600")
    berthd.docker("run", "-d", "--name", "tray-b", "busybox", "sleep", "600")
    port = berthd.docker("port", "tray-web", "80/tcp").stdout.strip().rsplit(":", 1)[1]

    procs: list[subprocess.Popen] = []
    watcher = tray = None
    app = None
    log = tmp_path / "app.log"
    try:
        bus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", "--nosyslog", "--print-address=1"],
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "dbus.log", "wb"), text=True)
        procs.append(bus)
        addr = bus.stdout.readline().strip()
        assert addr.startswith("unix:"), f"dbus-daemon said {addr!r}"
        watcher = Watcher(addr)
        watcher.start()

        for _ in range(5):  # another test may take the same free display at the same moment
            n = _free_display()
            xvfb = subprocess.Popen(["/usr/bin/Xvfb", f":{n}", "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(xvfb)
            for _ in range(200):
                if os.path.exists(f"/tmp/.X11-unix/X{n}") or xvfb.poll() is not None:
                    break
                time.sleep(0.05)
            if xvfb.poll() is None:
                break
        assert xvfb.poll() is None, "Xvfb did not start"

        cfg = tmp_path / "desktop.json"
        cfg.write_text(json.dumps({"startEngine": False, "closeToTray": True}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "DBUS_", "WAYLAND_"))}
        env.update({"DISPLAY": f":{n}", "DOCKER_HOST": berthd.host, "BERTH_DESKTOP_CONFIG": str(cfg),
                    "DBUS_SESSION_BUS_ADDRESS": addr, "NO_AT_BRIDGE": "1", "BERTH_LOG": "info",
                    "XDG_RUNTIME_DIR": str(tmp_path / "run"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
                    "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")})
        os.makedirs(tmp_path / "run", mode=0o700)
        app = subprocess.Popen([DESKTOP], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)

        def app_log():
            return log.read_text(errors="replace")[-4000:]

        for _ in range(600):
            if watcher.registered.is_set():
                break
            assert app.poll() is None, f"berth-desktop exited {app.returncode}: {app_log()}"
            time.sleep(0.05)
        assert watcher.registered.is_set(), f"no StatusNotifierItem registered (watcher: {watcher.error}); {app_log()}"
        name, path = watcher.items[0]
        tray = Tray(addr, name, path)
        assert tray.prop("Id"), "the item has no Id"
        assert tray.prop("Status") in ("Active", "Passive")

        # --- the menu with the engine running and three containers -------------------
        want = {"tray-a", "tray-b", "tray-web"}

        def containers(items):
            return {i["label"].split("  (", 1)[0]: i for i in items if "  (" in i["label"] and i["children"]}

        items = tray.wait_for(lambda it: _labels(it)[:1] and _labels(it)[0].startswith("Engine running")
                              and set(containers(it)) == want, "the engine running and tray-a/b/web")
        labels = _labels(items)
        print("tray menu:", json.dumps([{"label": i["label"], "children": _labels(i["children"])} for i in items]))
        assert not items[0]["enabled"], "the engine line is information, not an action"
        cs = containers(items)
        assert cs["tray-a"]["label"] == "tray-a  (busybox)"
        for cname, sub in cs.items():
            kids = [c for c in sub["children"] if c["visible"]]
            assert [k["label"] for k in kids][:2] == ["Stop", "Restart"], kids
            assert kids[3]["label"] == "Show logs"
            if cname == "tray-web":
                assert kids[2]["label"] == f"Open http://localhost:{port}" and kids[2]["enabled"]
            else:
                assert kids[2]["label"].startswith("Open in browser") and not kids[2]["enabled"]
        for entry in ("Restart engine", "Stop engine", "Open dashboard", "Quit Berth"):
            assert entry in labels, f"{entry!r} not in {labels}"
        # containers before the engine actions, quit last
        assert labels.index("Restart engine") > max(labels.index(c["label"]) for c in cs.values())
        assert labels[-1] == "Quit Berth"

        # --- a container stopped from the CLI leaves the menu ---------------------------
        tray.wait_update(0)  # forget earlier updates
        berthd.docker("stop", "-t", "1", "tray-b")
        assert tray.wait_update(20), "no LayoutUpdated after docker stop"
        tray.wait_for(lambda it: set(containers(it)) == {"tray-a", "tray-web"}, "tray-b gone")

        # --- Stop clicked in the tray stops the container in the engine ------------------
        items = tray.visible()
        stop = containers(items)["tray-a"]["children"][0]
        assert stop["label"] == "Stop"
        tray.click(stop["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _running(berthd, "tray-a"):
            time.sleep(0.2)
        assert not _running(berthd, "tray-a"), f"tray-a still running after Stop in the tray; {app_log()}"
        tray.wait_for(lambda it: set(containers(it)) == {"tray-web"}, "tray-a gone after the click")

        # --- Stop engine in the tray stops berthd (SIGTERM through its pidfile) ------------
        assert "Stop engine" in _labels(tray.visible())
        engine_proc = berthd.proc
        tray.click(_find(tray.visible(), "Stop engine")["id"])
        try:
            rc = engine_proc.wait(30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"berthd still running 30 s after Stop engine; {app_log()}")
        assert rc == 0, f"berthd exited {rc} after Stop engine (a clean stop exits 0)"
        tray.wait_for(lambda it: _labels(it)[:1] == ["Engine stopped"] and "Start engine" in _labels(it),
                      "Engine stopped after Stop engine")
        # live restore: the published container outlived the engine's stop
        berthd.start()
        tray.wait_for(lambda it: _labels(it)[:1] and _labels(it)[0].startswith("Engine running")
                      and set(containers(it)) == {"tray-web"} and "Stop engine" in _labels(it),
                      "the engine running again after Stop engine", timeout=40)

        # --- the engine goes away and comes back -----------------------------------------
        berthd.kill(signal.SIGKILL)
        items = tray.wait_for(lambda it: _labels(it)[:1] == ["Engine stopped"] and "Start engine" in _labels(it),
                              "Engine stopped / Start engine")
        assert not containers(items) and "Restart engine" not in _labels(items)
        berthd.start()
        tray.wait_for(lambda it: _labels(it)[:1] and _labels(it)[0].startswith("Engine running")
                      and set(containers(it)) == {"tray-web"} and "Restart engine" in _labels(it),
                      "the engine running again", timeout=40)

        # --- Quit ----------------------------------------------------------------------
        quit_item = _find(tray.visible(), "Quit Berth")
        tray.click(quit_item["id"])
        try:
            rc = app.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"berth-desktop still running 15 s after Quit; {app_log()}")
        assert rc == 0, f"berth-desktop exited {rc} after Quit; {app_log()}"
        assert watcher.error is None, watcher.error
        assert re.search(r"panicked", log.read_text(errors="replace")) is None, app_log()
    finally:
        if tray:
            tray.close()
        if app and app.poll() is None:
            os.killpg(app.pid, signal.SIGTERM)
            try:
                app.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(app.pid, signal.SIGKILL)
                app.wait(10)
        if app:
            # WebKit's helpers are in the app's session; they end with it, but make sure.
            try:
                os.killpg(app.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if watcher:
            watcher.stop()
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
