"""The Node client's own test suite (``node --test clients/node/test/``), run from pytest
so that ``python -m pytest`` covers it: the suite starts ``fleetbench serve`` with this
interpreter (``FLEETBENCH_PYTHON``) and exercises the client against it.

``.ci/run`` installs the client's dependencies (``npm ci`` in ``clients/node``), so in
CI this never skips; locally it skips, saying why, without Node or without that
install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NODE_CLIENT = ROOT / "clients" / "node"
TIMEOUT_S = 600


def test_node_client_suite_passes_against_a_live_server() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (the Node client's tests need Node 20+)")
    if not (NODE_CLIENT / "node_modules").is_dir():
        pytest.skip("clients/node/node_modules is missing: run `npm ci` in clients/node")
    env = {**os.environ, "FLEETBENCH_PYTHON": sys.executable}
    env.pop("FLEETBENCH_AUTH_TOKEN", None)
    completed = subprocess.run(
        [node, "--test", "clients/node/test/"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=TIMEOUT_S, check=False)
    if completed.returncode != 0:
        pytest.fail(f"node --test exited with {completed.returncode}\n"
                    f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}",
                    pytrace=False)
    assert "# fail 0" in completed.stdout, completed.stdout
