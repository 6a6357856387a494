"""The bundled `berth` CLI in a real terminal (tmux), issue #7: `berth run -it` with a TTY,
resize and Ctrl-P Ctrl-Q detach, `berth exec -it`, and `berth pull` drawing per-layer progress
bars — the same sessions test_exec_attach.py runs with the real docker CLI."""

from __future__ import annotations

import os
import time

from lib.berthd import TARGET_DIR
from lib.ctr import Tmux, inspect, require_tmux, wait_for

BERTH = os.environ.get("BERTH_CLI_BIN", os.path.join(TARGET_DIR, "debug", "berth"))


def test_berth_run_it_exec_it_and_detach(berthd):
    require_tmux()
    berthd.docker("pull", "busybox")
    with Tmux(berthd, "run -it --name bt busybox sh", program=BERTH) as t:
        assert wait_for(lambda: inspect(berthd, "bt")["State"]["Running"], timeout=30)
        time.sleep(0.5)
        t.type("echo typed-$((6*7)); stty size")
        assert t.wait_screen("typed-42"), t.screen()
        assert t.wait_screen("40 120"), t.screen()
        t.resize(100, 30)
        time.sleep(0.5)
        t.type("stty size")
        assert t.wait_screen("30 100"), t.screen()
        t.send("C-p", "C-q")
        assert t.wait_screen("CLI-EXITED-0"), t.screen()
    assert inspect(berthd, "bt")["State"]["Running"] is True
    with Tmux(berthd, "exec -it -e X=yes bt sh", program=BERTH) as t:
        time.sleep(1)
        t.type("echo x=$X tty=$(tty)")
        assert t.wait_screen("x=yes tty=/dev/pts/"), t.screen()
        t.type("exit 4")
        assert t.wait_screen("CLI-EXITED-4"), t.screen()
    # `exit` in the container's own shell ends it with that code, through `berth attach`-less
    # `berth start -ai`.
    berthd.docker("stop", "-t", "1", "bt")
    with Tmux(berthd, "start -ai bt", program=BERTH) as t:
        time.sleep(1)
        t.type("exit 6")
        assert t.wait_screen("CLI-EXITED-6"), t.screen()
    assert inspect(berthd, "bt")["State"]["ExitCode"] == 6


def test_berth_pull_draws_progress_bars(berthd_factory, big_image, throttled_registry):
    require_tmux()
    # The big image through a bandwidth-limited proxy: long enough to see bars move.
    b = berthd_factory()
    ref = f"{throttled_registry.host}/berth-test/big"
    layer = big_image["manifests"][0]["layers"][1][7:19]
    with Tmux(b, f"pull {ref}", program=BERTH) as t:
        assert t.wait_screen(f"{layer}: Downloading ["), t.screen()
        assert t.wait_screen("CLI-EXITED-0", timeout=120), t.screen()
        screen = t.screen()
    assert f"{layer}: Pull complete" in screen, screen
    assert "Digest: sha256:" in screen and "Status: Downloaded newer image" in screen, screen
