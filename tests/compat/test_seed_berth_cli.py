"""The seed walkthrough (tests/compat/test_seed_walkthrough.py: every command of
shared/seed/docker-notes.md that an engine serves) with the bundled ``berth`` CLI in place of
``docker`` (issue #7): the same steps, the same assertions, against a fresh berthd each.

The steps are the walkthrough's own functions (``STEPS``), given an engine whose ``docker(...)``
runs ``berth`` with the same arguments, and whose ``cli`` is ``berth`` for what the steps spawn
themselves (``run -it`` / ``exec -it`` on a pseudo-terminal, ``build``, the attached ``run``
interrupted with Ctrl-C).  ``berth`` finds the engine through ``DOCKER_HOST``, as docker does.

Registry-side commands stay on the docker CLI: they are not engine commands, and ``berth`` has
none of them:

- ``docker manifest inspect`` (the CLI talks to the registry itself),
- ``docker search`` (a search of Docker Hub's index),
- ``docker plugin ls`` / ``plugin install`` (the Hub's plugin store),
- ``docker buildx create`` (not run by the walkthrough either).

Everything else -- pull, images, inspect, history, rmi, ps, run, start, stop, rm, exec, port,
pause, unpause, logs, build, tag, push, volume, version -- is ``berth``.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from lib.berthd import REPO, TARGET_DIR, CommandFailed

import test_seed_walkthrough as seed  # tests/compat, next to this file
from test_seed_walkthrough import seedreg  # noqa: F401  (the fixture)

BERTH = os.environ.get("BERTH_CLI_BIN", os.path.join(TARGET_DIR, "debug", "berth"))

# First arguments that stay on the docker CLI (see the docstring).
REGISTRY_SIDE = {"manifest", "search", "plugin", "buildx"}


class BerthCliEngine:
    """A berthd (lib.berthd.Berthd) whose walkthrough commands run ``berth``."""

    cli = BERTH

    def __init__(self, berthd, reg):
        self.berthd = berthd
        self.reg = reg
        self.ref_host = reg.host
        self.nsenter_pid = berthd.pid
        self.tmp = berthd.tmp

    def docker_env(self) -> dict:
        return self.berthd.docker_env()

    def docker(self, *args, input=None, check: bool = True, timeout: float = 120,
               binary_input: bool = False) -> subprocess.CompletedProcess:
        """``berth ARGS...`` (``docker ARGS...`` for registry-side commands) against the
        engine; stdout/stderr are text (bytes with binary_input)."""
        if args and args[0] in REGISTRY_SIDE:
            return self.berthd.docker(*args, input=input, check=check, timeout=timeout,
                                      binary_input=binary_input)
        cmd = [BERTH, *map(str, args)]
        try:
            cp = subprocess.run(cmd, input=input, capture_output=True, text=not binary_input,
                                env=self.docker_env(), timeout=timeout, cwd=self.tmp)
        except subprocess.TimeoutExpired as e:
            raise CommandFailed(f"`berth {shlex.join(cmd[1:])}` timed out after {timeout}s\n"
                                f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
        if check and cp.returncode != 0:
            raise CommandFailed(f"`berth {shlex.join(cmd[1:])}` exited {cp.returncode}\n"
                                f"stdout:\n{cp.stdout}\nstderr:\n{cp.stderr}")
        return cp


@pytest.fixture(scope="session")
def berth_bin():
    if not os.path.exists(BERTH):
        subprocess.run(["cargo", "build", "-q", "-p", "berth-cli"], cwd=REPO, check=True)
    return BERTH


@pytest.fixture
def berth_engine(berthd_factory, seedreg, berth_bin):  # noqa: F811
    return BerthCliEngine(berthd_factory(registry_host=seedreg.host), seedreg)


@pytest.mark.parametrize("step", [
    pytest.param(step, id=name,
                 marks=[pytest.mark.xfail(reason=xfail, strict=False)] if xfail else [])
    for name, step, xfail in seed.STEPS
])
def test_seed_walkthrough_with_berth(berth_engine, tmp_path, step):
    step(berth_engine, tmp_path)
