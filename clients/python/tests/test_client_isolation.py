"""The client distribution needs grpcio and protobuf only.

A fresh interpreter (``python -I -S``: no site-packages, no PYTHONPATH) gets a folder
holding exactly the files of ``fleetbench-client``'s declared requirements and of
their own requirements (as their installed RECORDs list them), plus the client's
package. An import guard fails at once if the fleetbench core, googleapis-common-protos
(``google.rpc``) or grpcio-status is imported. In there the client talks to a real
server: lists plugins, decodes an INVALID_ARGUMENT's BadRequest, streams a run, waits
and downloads its artifacts.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from importlib import metadata
from pathlib import Path

import fleetbench_client

from tests.conftest import FleetDir
from tests.server_support import DEADLINE_S, Server, fast_fleet

CLIENT_DISTRIBUTION = "fleetbench-client"

SCRIPT = r"""
import importlib.abc, json, sys
from pathlib import Path

site, address, manifest, bad_manifest, dest = sys.argv[1:6]
FORBIDDEN = ("fleetbench", "google.rpc", "grpc_status")

class Guard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
            raise ImportError(f"the client imported {name}")
        return None

sys.meta_path.insert(0, Guard())
sys.path.insert(0, site)

import fleetbench_client
from fleetbench_client import FleetBenchClient, InvalidManifest, RunStatus

report = {"client_file": fleetbench_client.__file__}
with FleetBenchClient(address) as client:
    report["plugins"] = sorted(p.name for p in client.list_plugins())
    try:
        client.start_run(Path(bad_manifest))
    except InvalidManifest as error:
        report["violations"] = [v.field for v in error.violations]
    run, created = client.start_run(Path(manifest))
    report["results"] = sum(len(b.results) for b in client.stream_results(run.run_id))
    report["status"] = RunStatus(client.wait(run.run_id, timeout_s=60).status).name
    report["artifacts"] = len(client.download_artifacts(run.run_id, dest))
report["modules"] = sorted({m.split(".")[0] for m in sys.modules})
print(json.dumps(report))
"""


def _requirement_closure(name: str) -> list[metadata.Distribution]:
    """``name``'s distribution and everything it requires (markers honoured, extras
    not requested)."""
    seen: dict[str, metadata.Distribution] = {}
    pending = [name]
    while pending:
        dist = metadata.distribution(pending.pop())
        key = _canonical(dist.metadata["Name"])
        if key in seen:
            continue
        seen[key] = dist
        for requirement in dist.requires or ():
            spec, _, marker = requirement.partition(";")
            if marker and not _marker_holds(marker):
                continue
            pending.append(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0])
    return list(seen.values())


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _marker_holds(marker: str) -> bool:
    """The environment markers our pinned requirements use: ``extra == ...`` (never
    requested here) and ``python_version`` comparisons."""
    if "extra" in marker:
        return False
    match = re.fullmatch(r"\s*python_version\s*(<=|>=|<|>|==|!=)\s*['\"]([\d.]+)['\"]\s*",
                         marker)
    if match is None:
        raise AssertionError(f"unexpected marker {marker!r}: teach this test about it")
    have = sys.version_info[:2]
    want = tuple(int(part) for part in match.group(2).split("."))
    return {"<": have < want, "<=": have <= want, ">": have > want, ">=": have >= want,
            "==": have == want, "!=": have != want}[match.group(1)]


def _mirror(dists: list[metadata.Distribution], site: Path) -> None:
    """Link every installed file of ``dists`` into ``site`` (namespace folders such as
    ``google/`` are real folders, so only these distributions' parts appear in them)."""
    for dist in dists:
        if _canonical(dist.metadata["Name"]) == CLIENT_DISTRIBUTION:
            continue  # an editable install: its files are linked below
        for file in dist.files or ():
            if file.parts[0] == ".." or file.parts[0].endswith(".dist-info") \
                    or "__pycache__" in file.parts:
                continue
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(Path(str(dist.locate_file(file))).resolve())
    (site / "fleetbench_client").symlink_to(Path(fleetbench_client.__file__).parent)


async def test_the_client_needs_only_grpcio_and_protobuf(fleet_dir: FleetDir, served: Server,
                                                         tmp_path: Path) -> None:
    dists = _requirement_closure(CLIENT_DISTRIBUTION)
    names = {_canonical(d.metadata["Name"]) for d in dists}
    assert names <= {"fleetbench-client", "grpcio", "protobuf", "typing-extensions"}, names
    site = tmp_path / "isolated-site"
    _mirror(dists, site)
    manifest = fast_fleet(fleet_dir).write()
    fleet_dir.manifest["version"] = "2.0"
    bad = fleet_dir.write("bad.json")

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", SCRIPT, str(site), served.server.address,
        str(manifest), str(bad), str(tmp_path / "dl"), cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE_S * 2)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["client_file"].startswith(str(site))
    assert {"simulated", "json"} <= set(report["plugins"])
    assert "version" in report["violations"]
    assert report["results"] == 32
    assert report["status"] == "COMPLETED"
    assert report["artifacts"] >= 3
    assert "fleetbench" not in report["modules"]
