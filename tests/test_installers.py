"""Installer recipes: their configuration files are valid and consistent.

These checks need no Berth engine. The .deb itself is tested end to end by
installers/test/deb-chroot-test (a clean Debian 12 chroot; run by scripts/test).
"""

from __future__ import annotations

import configparser
import json
import os
import plistlib
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INST = os.path.join(REPO, "installers")
SRC_TAURI = os.path.join(REPO, "src-tauri")


def load_json(*parts):
    with open(os.path.join(*parts)) as fh:
        return json.load(fh)


def resolve(base_dir, rel):
    """Paths in a Tauri config are relative to src-tauri/."""
    return os.path.normpath(os.path.join(base_dir, rel))


def unit(name):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(os.path.join(INST, "deb", name))
    return cp


def test_systemd_socket_unit():
    s = unit("berth.socket")["Socket"]
    assert s["ListenStream"] == "/run/berth/docker.sock"
    assert s["SocketMode"] == "0660"
    assert s["SocketUser"] == "root"
    assert s["SocketGroup"] == "berth"


def test_systemd_service_unit():
    u = unit("berth.service")
    svc = u["Service"]
    exec_start = svc["ExecStart"].split()
    assert exec_start[:3] == ["/usr/bin/berthd", "-H", "fd://"]
    assert "--shim" in exec_start and exec_start[exec_start.index("--shim") + 1] == "/usr/lib/berth/berth-shim"
    assert svc["KillMode"] == "process"  # live restore: containers survive restarts
    assert svc["Delegate"] == "yes"
    assert svc["EnvironmentFile"] == "-/etc/default/berth"
    assert "LimitNOFILE" in svc
    assert "berth.socket" in u["Unit"]["Requires"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_parse_with_systemd_analyze(tmp_path):
    # Only syntax: the ExecStart binary and sysinit.target need an installed system
    # (installers/test/deb-chroot-test verifies the installed units).
    units = [os.path.join(INST, "deb", n) for n in ("berth.socket", "berth.service")]
    cp = subprocess.run(["systemd-analyze", "verify", "--man=no", *units], capture_output=True, text=True)
    bad = [ln for ln in cp.stderr.splitlines()
           if "berth." in ln and not any(k in ln for k in ("not found", "not executable", "No such file",
                                                            "Failed to create", "Failed to load"))]
    assert not bad, cp.stderr


@pytest.mark.parametrize("script", ["deb/postinst", "deb/prerm", "deb/postrm", "deb/build", "test/deb-chroot-test"])
def test_scripts_parse(script):
    path = os.path.join(INST, script)
    assert os.access(path, os.X_OK), f"{path} is not executable"
    shell = "sh" if os.path.basename(script) in ("postinst", "prerm", "postrm") else "bash"
    subprocess.run([shell, "-n", path], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-S", "warning", path], check=True)


def test_maintainer_scripts_guard_systemctl():
    for s in ("postinst", "prerm", "postrm"):
        text = open(os.path.join(INST, "deb", s)).read()
        if "deb-systemd-invoke" in text or "systemctl" in text:
            assert "/run/systemd/system" in text, f"{s} must only talk to a running systemd"
    assert "rm -rf" in open(os.path.join(INST, "deb", "postrm")).read().split("purge)")[1]


def test_desktop_entry():
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str
    cp.read(os.path.join(INST, "deb", "berth.desktop"))
    e = cp["Desktop Entry"]
    assert e["Exec"].split()[0] == "berth-desktop"
    assert e["Icon"] == "berth" and e["Type"] == "Application"
    # The binary the package installs as /usr/bin/berth-desktop.
    cargo = open(os.path.join(SRC_TAURI, "Cargo.toml")).read()
    assert 'name = "berth-desktop"' in cargo
    if shutil.which("desktop-file-validate"):
        cp = subprocess.run(["desktop-file-validate", os.path.join(INST, "deb", "berth.desktop")],
                            capture_output=True, text=True)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        # Hints are fine; errors and warnings are not (the chroot test is as strict).
        assert "error:" not in cp.stdout and "warning:" not in cp.stdout, cp.stdout


def png_size(path):
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_app_icons_fit_the_hicolor_theme():
    # installers/deb/build installs these as /usr/share/icons/hicolor/WxH/apps/berth.png.
    icons = os.path.join(REPO, "assets", "icons")
    sizes = {png_size(os.path.join(icons, f)) for f in ("32x32.png", "128x128.png", "icon.png")}
    assert sizes == {(32, 32), (128, 128), (512, 512)}, sizes
    assert os.path.isfile(os.path.join(icons, "berth.svg"))


@pytest.mark.parametrize("args", [["--compress", "bzip2"], ["--compress", "xz:x"], ["--app", "maybe"], ["--frobnicate"]])
def test_build_rejects_bad_arguments(args):
    cp = subprocess.run([os.path.join(INST, "deb", "build"), *args], capture_output=True, text=True)
    assert cp.returncode == 2, cp.stderr


def test_build_help_documents_the_options():
    out = subprocess.run([os.path.join(INST, "deb", "build"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    for opt in ("--bin-dir", "--no-cargo", "--app", "--compress", "--no-lintian", "--version", "--out"):
        assert opt in out, opt


@pytest.mark.skipif(not os.path.exists(os.path.join(SRC_TAURI, "tauri.conf.json")),
                    reason="src-tauri/tauri.conf.json does not exist yet")
def test_tauri_bundle_config():
    c = load_json(SRC_TAURI, "tauri.conf.json")
    assert c["identifier"].count(".") >= 2
    assert c["productName"] == "Berth"
    b = c["bundle"]
    assert b["active"] is True
    assert b.get("category")
    for icon in b["icon"]:
        assert os.path.isfile(resolve(SRC_TAURI, icon)), icon
    version = c.get("version")
    if version and not version.endswith(".json"):
        cargo = open(os.path.join(REPO, "Cargo.toml")).read()
        assert f'version = "{version}"' in cargo, "tauri.conf.json version differs from the workspace's"


@pytest.mark.parametrize("conf,needs", [
    ("appimage/tauri.appimage.conf.json", "appimage"),
    ("macos/tauri.macos.conf.json", "dmg"),
    ("windows/tauri.windows.conf.json", "msi"),
])
def test_platform_merge_configs(conf, needs):
    c = load_json(INST, conf)
    assert needs in c["bundle"]["targets"]
    # Files the recipe itself provides must exist (build outputs need not).
    b = c["bundle"]
    own = []
    mac = b.get("macOS", {})
    own += [mac[k] for k in ("entitlements", "infoPlist") if k in mac]
    own += b.get("windows", {}).get("wix", {}).get("fragmentPaths", [])
    for p in own:
        assert os.path.isfile(resolve(SRC_TAURI, p)), p
    for dest, src in b.get("linux", {}).get("appimage", {}).get("files", {}).items():
        assert dest.startswith("/usr/")
        if "installers/" in src:
            assert os.path.isfile(resolve(SRC_TAURI, src)), src


def test_macos_plists():
    with open(os.path.join(INST, "macos", "Entitlements.plist"), "rb") as fh:
        ent = plistlib.load(fh)
    assert ent["com.apple.security.hypervisor"] is True
    assert ent["com.apple.security.virtualization"] is True
    with open(os.path.join(INST, "macos", "Info.plist"), "rb") as fh:
        info = plistlib.load(fh)
    assert info["LSApplicationCategoryType"].startswith("public.app-category.")


def test_wix_fragment():
    ns = {"w": "http://schemas.microsoft.com/wix/2006/wi"}
    root = ET.parse(os.path.join(INST, "windows", "wix", "wsl.wxs")).getroot()
    assert root.tag == "{http://schemas.microsoft.com/wix/2006/wi}Wix"
    frag = root.find("w:Fragment", ns)
    assert frag is not None
    groups = {g.get("Id") for g in frag.findall("w:ComponentGroup", ns)}
    refs = load_json(INST, "windows", "tauri.windows.conf.json")["bundle"]["windows"]["wix"]["componentGroupRefs"]
    assert set(refs) <= groups, "componentGroupRefs must name groups of the fragment"
    assert frag.find("w:Condition", ns) is not None
