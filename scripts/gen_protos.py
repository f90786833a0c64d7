"""Regenerate the committed Python code of the gRPC contract from ``protos/``.

The contract lives in ``protos/fleetbench/v1/*.proto``; its generated Python code is
committed in ``clients/python/src/fleetbench_client/v1/`` (``*_pb2.py``, ``*_pb2.pyi``,
``*_pb2_grpc.py``, ``*_pb2_grpc.pyi``) so that the client installs with grpcio and
protobuf only. After editing a .proto, run from the repository root::

    python scripts/gen_protos.py            # rewrite the committed files
    python scripts/gen_protos.py --check    # exit 1, listing the files that drift
    python scripts/gen_protos.py --out DIR  # write the generated files into DIR instead

It needs exactly the generator versions pinned below (``pip install
grpcio-tools==1.85.1 mypy-protobuf==5.1.0``) and refuses to run with others, because
another version writes other bytes and a different minimum runtime into the files.
If you change a pin, also change the client's runtime pins in
``clients/python/pyproject.toml`` to match (``grpcio>=`` the grpcio-tools version,
``protobuf>=`` the gencode version printed at the top of ``*_pb2.py``, ``<`` its next
major).

Protos are compiled with ``-I protos``, so the descriptors keep the file name
``fleetbench/v1/fleetbench.proto`` and the package ``fleetbench.v1``; the generated
absolute imports (``from fleetbench.v1 import fleetbench_pb2``) are rewritten to
relative ones so the code works as the package ``fleetbench_client.v1``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_PACKAGE_DIR = "fleetbench/v1"
"""Where the protos live below ``PROTO_ROOT``; also the path protoc writes them to."""
OUTPUT_DIR = REPO_ROOT / "clients" / "python" / "src" / "fleetbench_client" / "v1"
OUTPUT_PACKAGE = "fleetbench_client.v1"

PINNED_TOOLS = {"grpcio-tools": "1.85.1", "mypy-protobuf": "5.1.0"}
"""Distribution name → the exact version the committed code was generated with."""

GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")

_ABSOLUTE_IMPORT = re.compile(r"^from fleetbench\.v1 import ", re.MULTILINE)
_MODULE_NAME = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')fleetbench\.v1\.")
_LEFTOVER = re.compile(r"^\s*(from|import) fleetbench\.v1\b", re.MULTILINE)


class GenerationError(RuntimeError):
    """The generator cannot run, or produced something this script cannot handle."""


def tool_version_problems() -> list[str]:
    """One message per pinned generator that is missing or has another version."""
    problems = []
    for dist, pinned in PINNED_TOOLS.items():
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{dist} is not installed; install {dist}=={pinned}")
            continue
        if installed != pinned:
            problems.append(
                f"{dist} {installed} is installed but the generated code is pinned to "
                f"{dist}=={pinned}; install {dist}=={pinned}"
            )
    return problems


def proto_files() -> list[str]:
    """The protos to compile, as protoc names them (relative to ``PROTO_ROOT``)."""
    found = sorted((PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto"))
    if not found:
        raise GenerationError(f"no .proto files in {PROTO_ROOT / PROTO_PACKAGE_DIR}")
    return [path.relative_to(PROTO_ROOT).as_posix() for path in found]


def generate(out_dir: Path) -> list[Path]:
    """Generate the Python code of every proto into ``out_dir``; return the files written.

    Files in ``out_dir`` that look generated (``*_pb2*.py``/``.pyi``) but that no proto
    generates any more are deleted.

    :raises GenerationError: when the pinned generators are not installed or protoc fails.
    """
    problems = tool_version_problems()
    if problems:
        raise GenerationError("\n".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="fleetbench-protoc-") as tmp:
        raw = Path(tmp)
        _run_protoc(raw)
        produced = sorted((raw / PROTO_PACKAGE_DIR).iterdir())
        unexpected = [p.name for p in produced if not p.name.endswith(GENERATED_SUFFIXES)]
        if unexpected:
            raise GenerationError(f"protoc wrote unexpected files: {', '.join(unexpected)}")
        for path in produced:
            target = out_dir / path.name
            target.write_bytes(_relocate(path.name, path.read_text(encoding="utf-8")))
            written.append(target)
    for stale in sorted(set(_generated_in(out_dir)) - set(written)):
        stale.unlink()  # generated from a proto that no longer exists
    return written


def _generated_in(directory: Path) -> list[Path]:
    """The files in ``directory`` that look generated (by their suffix)."""
    if not directory.is_dir():
        return []
    return [p for p in directory.iterdir() if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)]


def drifted_files(committed_dir: Path = OUTPUT_DIR) -> list[str]:
    """Names of the generated files whose committed copy in ``committed_dir`` is
    missing, stale (not generated any more) or differs from a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="fleetbench-gen-check-") as tmp:
        fresh_dir = Path(tmp)
        fresh = {path.name: path.read_bytes() for path in generate(fresh_dir)}
    committed = {path.name: path.read_bytes() for path in _generated_in(committed_dir)}
    drift = []
    for name in sorted(fresh.keys() | committed.keys()):
        if name not in committed:
            drift.append(f"{name} (missing)")
        elif name not in fresh:
            drift.append(f"{name} (stale: no proto generates it)")
        elif committed[name] != fresh[name]:
            drift.append(f"{name} (differs)")
    return drift


def _run_protoc(out_dir: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={_well_known_protos()}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *proto_files(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GenerationError(f"protoc failed (exit {done.returncode}):\n{done.stderr}")


def _well_known_protos() -> Path:
    """grpcio-tools' copy of ``google/protobuf/*.proto`` (Timestamp and friends)."""
    spec = importlib.util.find_spec("grpc_tools")
    if spec is None or not spec.submodule_search_locations:
        raise GenerationError("grpcio-tools is not importable")
    include = Path(next(iter(spec.submodule_search_locations))) / "_proto"
    if not (include / "google" / "protobuf" / "timestamp.proto").is_file():
        raise GenerationError(f"grpcio-tools has no well-known protos in {include}")
    return include


def _plugin(name: str) -> str:
    """The protoc plugin executable installed by mypy-protobuf next to this Python."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found is None:
        pin = PINNED_TOOLS["mypy-protobuf"]
        raise GenerationError(f"{name} not found; install mypy-protobuf=={pin}")
    return found


def _relocate(name: str, text: str) -> bytes:
    """Make code generated for ``fleetbench.v1`` work as the ``OUTPUT_PACKAGE`` package."""
    text = _ABSOLUTE_IMPORT.sub("from . import ", text)
    if name.endswith("_pb2.py"):
        # The module name protobuf gives the message classes (their ``__module__``,
        # used by pickle and repr) must be importable.
        text, count = _MODULE_NAME.subn(rf"\g<1>{OUTPUT_PACKAGE}.", text)
        if count != 1:
            raise GenerationError(f"{name}: cannot find the module name to rewrite")
    leftover = _LEFTOVER.search(text)
    if leftover:
        raise GenerationError(f"{name}: an import of fleetbench.v1 was not rewritten: "
                              f"{leftover.group(0).strip()!r}")
    return text.encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Regenerate the committed Python code of protos/fleetbench/v1.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="regenerate into a temporary directory and exit 1 if the committed files drift",
    )
    mode.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"write the generated files into DIR instead of {OUTPUT_DIR.relative_to(REPO_ROOT)}",
    )
    args = parser.parse_args(argv)
    try:
        if args.check:
            drift = drifted_files()
            if drift:
                print("generated code drifts from protos/; run `python scripts/gen_protos.py`:")
                for entry in drift:
                    print(f"  {OUTPUT_DIR.relative_to(REPO_ROOT) / entry}")
                return 1
            print("generated code is up to date")
            return 0
        out_dir = args.out if args.out is not None else OUTPUT_DIR
        for path in generate(out_dir):
            print(f"wrote {path}")
        return 0
    except GenerationError as exc:
        print(f"gen_protos: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
