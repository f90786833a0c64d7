"""examples/simulator_client.py runs as documented against a ``fleetbench serve``."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from client_support import sha256

from tests.server_support import DEADLINE_S, ROOT, start_serve

EXAMPLE = ROOT / "examples" / "simulator_client.py"


async def _simulate(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), *args, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE_S * 2)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_simulator_example_runs_the_quickstart(tmp_path: Path) -> None:
    # The quickstart with its repositories, in a data root of its own (its output goes
    # next to it, not into the repository's examples folder).
    shutil.copy(ROOT / "examples" / "quickstart.yaml", tmp_path / "quickstart.yaml")
    shutil.copytree(ROOT / "examples" / "repos", tmp_path / "repos")
    serve = await start_serve(tmp_path)
    try:
        dest = tmp_path / "artifacts"
        args = ("--server", serve.address, "--manifest", str(tmp_path / "quickstart.yaml"),
                "--dest", str(dest))
        code, out, err = await _simulate(*args)
        assert code == 0, out + err + serve.log.read_text()[-3000:]
        first = out.splitlines()[0]
        assert first.startswith("started run quickstart-")
        assert first.endswith(": 69 tests planned")
        run_id = first.split()[2].rstrip(":")
        assert "69/69 done" in out
        assert f"run {run_id}: COMPLETED" in out
        downloaded = {p.name: p for p in (dest / run_id).iterdir()}
        assert {"fleet_results.json", "results.jsonl", "providers.csv"} <= set(downloaded)
        produced = tmp_path / "results" / run_id  # the server's own output folder
        for name, path in downloaded.items():
            assert sha256(path) == sha256(produced / name)

        code, out, err = await _simulate(*args)  # idempotent: the same run again
        assert code == 0, err
        assert out.startswith(f"found existing run {run_id}")

        code, _, err = await _simulate("--server", serve.address, "--manifest",
                                       str(tmp_path / "repos"), "--dest", str(dest))
        assert code != 0
    finally:
        await serve.kill()
