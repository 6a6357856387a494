"""The seed walkthrough (tests/compat/test_seed_walkthrough.py, every engine command of
shared/seed/docker-notes.md) through the VM: the real docker CLI on the host socket
<BERTH_HOME>/run/docker.sock of a VM booted once under QEMU/TCG (docs/VM.md), berthd inside.

The stand-in images come from the walkthrough's seed registry on the host, which the guest
reaches as its registry mirror at http://10.0.2.2:<port>; the steps are the walkthrough's own
functions (``STEPS``), given a VM engine instead of a native berthd:

- ``ref_host`` is 10.0.2.2:<port> (image references the engine resolves: pulls by host, tag +
  push); ``reg.host`` stays 127.0.0.1:<port> for what the CLI does itself (manifest inspect).
- ``nsenter -t 1`` is the notes' own command: PID 1 of the VM (berth-guest), whose namespaces
  hold berthd's volumes.
- Build contexts and the CLI's working directory are under the 9p-shared home (the
  walkthrough has no bind mounts; tests/test_vm.py covers one).
- Between steps the engine is emptied (containers, images, volumes): each native section has a
  fresh berthd, and the steps assume it.

A failing step does not stop the others: every step runs, then the failures are reported
together, with each step's time. Slow (the whole walkthrough under TCG takes several minutes):
BERTH_VM_SEED=0 skips it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest

from lib.berthd import Berthd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "compat"))
import test_seed_walkthrough as seed  # noqa: E402
import test_vm as vmlib  # noqa: E402

from test_seed_walkthrough import seedreg  # noqa: E402,F401  (the fixture)

pytestmark = [
    pytest.mark.timeout(3600),
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("BERTH_VM_SEED", "1") == "0", reason="BERTH_VM_SEED=0"),
]


class VmEngine:
    """What a walkthrough step needs of an engine, for the VM's host socket."""

    def __init__(self, vm: vmlib.Vm, reg):
        self.vm = vm
        self.reg = reg
        self.ref_host = f"10.0.2.2:{reg.port}"
        self.nsenter_pid = 1
        self.host = f"unix://{vm.socket}"
        self.tmp = os.path.join(vm.share, "work")
        os.makedirs(self.tmp, exist_ok=True)
        self.docker_config = os.path.join(vm.home, "docker-config")
        os.makedirs(self.docker_config, exist_ok=True)

    def docker_env(self) -> dict:
        env = {k: v for k, v in self.vm.env.items() if not k.startswith("DOCKER_")}
        env.update({"DOCKER_HOST": self.host, "DOCKER_CONFIG": self.docker_config,
                    "DOCKER_CLI_HINTS": "false", "NO_COLOR": "1"})
        return env

    def docker(self, *args, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
        """Berthd.docker against the VM's socket (with TCG's longer timeout)."""
        return Berthd.docker(self, *args, timeout=timeout, **kw)

    def reset(self):
        """Back to an empty engine, as each native section starts."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids)
        imgs = sorted(set(self.docker("images", "-aq").stdout.split()))
        if imgs:
            self.docker("rmi", "-f", *imgs, check=False)
        self.docker("volume", "prune", "--all", "--force")


def test_vm_seed_walkthrough(seedreg):  # noqa: F811
    if not os.path.exists(vmlib.BERTH):
        subprocess.run(["cargo", "build", "-q", "-p", "berth-cli"], cwd=vmlib.REPO, check=True)
    vm = vmlib.Vm(seedreg.port)
    scale = seed.TIME_SCALE
    seed.TIME_SCALE = float(os.environ.get("BERTH_VM_TIME_SCALE", "4"))
    timings, failures = [], []
    t_all = time.monotonic()
    try:
        t0 = time.monotonic()
        vm.start()
        st = vm.state()
        assert st["state"] == "running" and st["engine_answering"], st
        timings.append(("boot", time.monotonic() - t0))
        e = VmEngine(vm, seedreg)
        for name, step, xfail in seed.STEPS:
            tmp = Path(vm.share) / f"step-{name}"
            tmp.mkdir()
            t0 = time.monotonic()
            try:
                step(e, tmp)
                outcome = "XPASS" if xfail else "ok"
            except Exception as ex:  # noqa: BLE001 - every step runs; failures reported at the end
                if xfail:
                    outcome = "xfail"
                else:
                    outcome = "FAILED"
                    failures.append(f"--- step {name}:\n"
                                    + "".join(traceback.format_exception(ex))[-4000:])
            timings.append((f"{name} ({outcome})", time.monotonic() - t0))
            try:
                e.reset()
            except Exception as ex:  # noqa: BLE001
                failures.append(f"--- reset after {name}: {ex}")
    finally:
        seed.TIME_SCALE = scale
        total = time.monotonic() - t_all
        print("\nVM seed walkthrough timings (QEMU TCG):")
        for name, secs in timings:
            print(f"  {name:28s} {secs:7.1f} s")
        print(f"  {'total (boot + steps + resets)':28s} {total:7.1f} s")
        if failures:
            print(f"--- console tail:\n{vm.console()[-3000:]}")
        vm.cleanup()
    assert not failures, "\n".join(failures)
