"""The gRPC contract: generated code in sync, conventions kept, stubs working.

``protos/fleetbench/v1/fleetbench.proto`` is a permanent public API, and its generated
Python code is committed in ``clients/python/src/fleetbench_client/v1``. These tests
fail when the committed code drifts from the .proto, when the .proto breaks its own
conventions (per-RPC ``FooRequest``/``FooResponse`` messages, ``_UNSPECIFIED`` enum zero
values, a comment on everything), and when the generated stubs stop working over a
real channel.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from fleetbench_client.v1 import fleetbench_pb2 as pb
from fleetbench_client.v1 import fleetbench_pb2_grpc as pb_grpc
from google.protobuf import descriptor_pb2

from fleetbench.records import (
    Distribution,
    GroupStats,
    RunStatus,
    Status,
    TestResult,
    Usage,
    Verdict,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_FILE = "fleetbench/v1/fleetbench.proto"
GENERATED_DIR = REPO_ROOT / "clients" / "python" / "src" / "fleetbench_client" / "v1"
GENERATED_FILES = [
    "fleetbench_pb2.py",
    "fleetbench_pb2.pyi",
    "fleetbench_pb2_grpc.py",
    "fleetbench_pb2_grpc.pyi",
]
BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"
REGENERATE = "run `python scripts/gen_protos.py` and commit the result"


@pytest.fixture(scope="module")
def gen_protos() -> ModuleType:
    """``scripts/gen_protos.py`` imported as a module (scripts/ is not a package)."""
    path = REPO_ROOT / "scripts" / "gen_protos.py"
    spec = importlib.util.spec_from_file_location("gen_protos", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------ drift


def test_committed_code_is_what_the_pinned_generator_writes(
    gen_protos: ModuleType, tmp_path: Path
) -> None:
    written = gen_protos.generate(tmp_path)

    assert sorted(path.name for path in written) == GENERATED_FILES
    committed = sorted(
        path.name
        for path in GENERATED_DIR.iterdir()
        if path.suffix in {".py", ".pyi"} and path.name != "__init__.py"
    )
    assert committed == GENERATED_FILES, f"unexpected files in {GENERATED_DIR}; {REGENERATE}"
    for name in GENERATED_FILES:
        fresh = (tmp_path / name).read_bytes()
        assert fresh == (GENERATED_DIR / name).read_bytes(), f"{name} drifts; {REGENERATE}"


def test_generated_imports_are_relative_to_the_client_package() -> None:
    grpc_module = (GENERATED_DIR / "fleetbench_pb2_grpc.py").read_text(encoding="utf-8")
    grpc_stub = (GENERATED_DIR / "fleetbench_pb2_grpc.pyi").read_text(encoding="utf-8")

    assert "\nfrom . import fleetbench_pb2 as " in grpc_module
    assert "\nfrom . import fleetbench_pb2 as " in grpc_stub
    for text in (grpc_module, grpc_stub):
        assert "from fleetbench.v1 import" not in text
        assert "import fleetbench.v1" not in text


def test_check_mode_lists_missing_differing_and_stale_files(
    gen_protos: ModuleType, tmp_path: Path
) -> None:
    committed = tmp_path / "v1"
    shutil.copytree(GENERATED_DIR, committed)
    assert gen_protos.drifted_files(committed) == []

    with (committed / "fleetbench_pb2.pyi").open("a", encoding="utf-8") as stub:
        stub.write("# edited by hand\n")
    (committed / "fleetbench_pb2_grpc.py").unlink()
    (committed / "old_pb2.py").write_text("# from a proto that was removed\n", encoding="utf-8")

    assert gen_protos.drifted_files(committed) == [
        "fleetbench_pb2.pyi (differs)",
        "fleetbench_pb2_grpc.py (missing)",
        "old_pb2.py (stale: no proto generates it)",
    ]


def test_check_command_passes_on_the_committed_tree() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "up to date" in done.stdout


def test_generator_refuses_unpinned_tool_versions(
    gen_protos: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(gen_protos.PINNED_TOOLS, "grpcio-tools", "0.0.1")

    problems = gen_protos.tool_version_problems()
    assert len(problems) == 1
    assert "grpcio-tools==0.0.1" in problems[0]
    with pytest.raises(gen_protos.GenerationError, match=r"grpcio-tools==0\.0\.1"):
        gen_protos.generate(tmp_path)
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------- lint


def _descriptor_set(
    proto_root: Path, proto_file: str, out: Path
) -> descriptor_pb2.FileDescriptorSet:
    """Compile ``proto_file`` with its comments (source info) and parse the result."""
    spec = importlib.util.find_spec("grpc_tools")
    assert spec is not None
    assert spec.submodule_search_locations
    well_known = Path(next(iter(spec.submodule_search_locations))) / "_proto"
    done = subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc",
            f"--proto_path={proto_root}", f"--proto_path={well_known}",
            "--include_source_info", f"--descriptor_set_out={out}", proto_file,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


# Field numbers of descriptor.proto, which SourceCodeInfo paths are made of.
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE = 4, 5, 6
_MESSAGE_FIELD, _MESSAGE_NESTED, _MESSAGE_ENUM, _MESSAGE_ONEOF = 2, 3, 4, 8
_ENUM_VALUE = 2
_SERVICE_METHOD = 2


def contract_problems(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Every breach of the contract's conventions in ``file``, one message each."""
    comments = {
        tuple(location.path): location.leading_comments.strip()
        for location in file.source_code_info.location
    }
    problems: list[str] = []

    def need_comment(path: tuple[int, ...], what: str) -> None:
        if not comments.get(path):
            problems.append(f"{what} has no leading comment")

    def check_enum(enum: descriptor_pb2.EnumDescriptorProto, path: tuple[int, ...],
                   prefix: str) -> None:
        need_comment(path, f"enum {prefix}{enum.name}")
        if not enum.value or enum.value[0].number != 0 or not enum.value[0].name.endswith(
            "_UNSPECIFIED"
        ):
            problems.append(f"enum {prefix}{enum.name}: the zero value must end in _UNSPECIFIED")
        value_prefix = _upper_snake(enum.name) + "_"
        for i, value in enumerate(enum.value):
            need_comment((*path, _ENUM_VALUE, i), f"enum value {value.name}")
            if not value.name.startswith(value_prefix):
                problems.append(f"enum value {value.name} must start with {value_prefix}")

    def check_message(message: descriptor_pb2.DescriptorProto, path: tuple[int, ...],
                      prefix: str) -> None:
        name = f"{prefix}{message.name}"
        need_comment(path, f"message {name}")
        for i, field in enumerate(message.field):
            need_comment((*path, _MESSAGE_FIELD, i), f"field {name}.{field.name}")
        # `optional` fields live in synthetic oneofs that cannot carry a comment.
        synthetic = {f.oneof_index for f in message.field if f.proto3_optional}
        for i, oneof in enumerate(message.oneof_decl):
            if i not in synthetic:
                need_comment((*path, _MESSAGE_ONEOF, i), f"oneof {name}.{oneof.name}")
        for i, nested in enumerate(message.nested_type):
            if not nested.options.map_entry:  # map entries are synthesized by protoc
                check_message(nested, (*path, _MESSAGE_NESTED, i), f"{name}.")
        for i, enum in enumerate(message.enum_type):
            check_enum(enum, (*path, _MESSAGE_ENUM, i), f"{name}.")

    for i, message in enumerate(file.message_type):
        check_message(message, (_FILE_MESSAGE, i), "")
    for i, enum in enumerate(file.enum_type):
        check_enum(enum, (_FILE_ENUM, i), "")
    for i, service in enumerate(file.service):
        need_comment((_FILE_SERVICE, i), f"service {service.name}")
        for j, method in enumerate(service.method):
            need_comment((_FILE_SERVICE, i, _SERVICE_METHOD, j), f"rpc {method.name}")
            for actual, expected in ((method.input_type, "Request"),
                                     (method.output_type, "Response")):
                wanted = f".{file.package}.{method.name}{expected}"
                if actual != wanted:
                    problems.append(f"rpc {method.name} must use {wanted}, not {actual}")
    return problems


def _upper_snake(name: str) -> str:
    return "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pb2.FileDescriptorProto:
    out = tmp_path_factory.mktemp("descriptors") / "fleetbench.binpb"
    files = {f.name: f for f in _descriptor_set(PROTO_ROOT, PROTO_FILE, out).file}
    return files[PROTO_FILE]


def test_contract_keeps_its_conventions(contract: descriptor_pb2.FileDescriptorProto) -> None:
    assert contract.package == "fleetbench.v1"
    assert contract_problems(contract) == []


def test_contract_lint_catches_breaches(tmp_path: Path) -> None:
    proto = tmp_path / "bad" / "v1" / "bad.proto"
    proto.parent.mkdir(parents=True)
    proto.write_text(
        'syntax = "proto3";\n'
        "package bad.v1;\n"
        "// Documented.\n"
        "service BadService {\n"
        "  rpc Ping(PingRequest) returns (Pong);\n"
        "}\n"
        "// Documented.\n"
        "message PingRequest {\n"
        "  string token = 1;\n"
        "}\n"
        "// Documented.\n"
        "message Pong {\n"
        "  // Documented.\n"
        "  Color color = 1;\n"
        "  // Documented.\n"
        "  optional int64 count = 2;\n"
        "  oneof answer {\n"
        "    // Documented.\n"
        "    string text = 3;\n"
        "  }\n"
        "}\n"
        "// Documented.\n"
        "enum Color {\n"
        "  // Documented.\n"
        "  COLOR_RED = 0;\n"
        "  // Documented.\n"
        "  BLUE = 1;\n"
        "}\n",
        encoding="utf-8",
    )
    files = _descriptor_set(tmp_path, "bad/v1/bad.proto", tmp_path / "bad.binpb").file

    assert contract_problems(files[0]) == [
        "field PingRequest.token has no leading comment",
        "oneof Pong.answer has no leading comment",
        "enum Color: the zero value must end in _UNSPECIFIED",
        "enum value BLUE must start with COLOR_",
        "rpc Ping has no leading comment",
        "rpc Ping must use .bad.v1.PingResponse, not .bad.v1.Pong",
    ]


def test_service_offers_the_v1_api(contract: descriptor_pb2.FileDescriptorProto) -> None:
    (service,) = contract.service
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}

    assert service.name == "FleetBenchService"
    assert methods == {
        "StartFleetRun": (False, False),
        "StreamResults": (False, True),
        "GetRun": (False, False),
        "ListRuns": (False, False),
        "CancelRun": (False, False),
        "ValidateManifest": (False, False),
        "ListPlugins": (False, False),
        "GetArtifact": (False, True),
    }


@pytest.mark.skipif(not BUF.exists(), reason="buf is not installed: run `npm ci` at the repo root")
def test_buf_lint_passes() -> None:
    done = subprocess.run(
        [str(BUF), "lint", "protos"], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )

    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------- records ↔ proto


def test_every_record_status_has_a_test_status_and_a_counter() -> None:
    counters = {f.name for f in pb.StatusCounts.DESCRIPTOR.fields}

    for status in Status:
        assert pb.TestStatus.Value(f"TEST_STATUS_{status.name}") > 0
        assert status.value in counters
    assert len(pb.TestStatus.keys()) == len(Status) + 1  # plus _UNSPECIFIED


def test_test_result_carries_every_measured_field() -> None:
    proto_fields = {f.name for f in pb.TestResult.DESCRIPTOR.fields}
    measured = ("queue_ms", "latency_ms", "ttft_ms", "itl_ms", "total_ms", "retries",
                "cost_usd", "error", "error_kind", "cached", "started_at", "finished_at")
    verdict_fields = {f.name for f in pb.Verdict.DESCRIPTOR.fields}

    assert set(measured) <= set(TestResult.__dataclass_fields__)
    assert set(measured) <= proto_fields
    assert {"input_tokens", "output_tokens", "cached_input_tokens"} <= (
        set(Usage.__dataclass_fields__) & proto_fields
    )
    assert set(Verdict.__dataclass_fields__) <= verdict_fields
    # Timings that may be absent in the record must be able to be absent on the wire.
    for name in ("latency_ms", "ttft_ms", "itl_ms", "cost_usd"):
        assert pb.TestResult.DESCRIPTOR.fields_by_name[name].has_presence, name


def test_every_run_status_has_a_proto_value() -> None:
    for status in RunStatus:
        assert pb.RunStatus.Value(f"RUN_STATUS_{status.name}") > 0
    assert len(pb.RunStatus.keys()) == len(RunStatus) + 1  # plus _UNSPECIFIED


def test_summary_carries_every_aggregate() -> None:
    summary_fields = {f.name for f in pb.Summary.DESCRIPTOR.fields}
    counters = {f.name for f in pb.StatusCounts.DESCRIPTOR.fields}
    distribution_fields = {f.name for f in pb.Distribution.DESCRIPTOR.fields}

    missing = set(GroupStats.__dataclass_fields__) - summary_fields - counters
    assert missing == set(), f"GroupStats fields the proto Summary cannot carry: {missing}"
    assert set(Distribution.__dataclass_fields__) <= distribution_fields
    for name, field in GroupStats.__dataclass_fields__.items():
        if field.type == "Distribution":
            message_type = pb.Summary.DESCRIPTOR.fields_by_name[name].message_type
            assert message_type is not None
            assert message_type.name == "Distribution", name


# -------------------------------------------------------------------------- round trip


def test_generated_modules_live_in_the_client_package() -> None:
    assert pb.DESCRIPTOR.name == PROTO_FILE
    assert pb.DESCRIPTOR.package == "fleetbench.v1"
    assert pb.TestResult.__module__ == "fleetbench_client.v1.fleetbench_pb2"
    # The rewritten relative import resolves to the very module the client imports.
    assert vars(pb_grpc)["fleetbench_dot_v1_dot_fleetbench__pb2"] is pb
    assert pb_grpc.FleetBenchServiceStub.__module__ == "fleetbench_client.v1.fleetbench_pb2_grpc"


def test_test_result_survives_the_wire() -> None:
    result = pb.TestResult(
        seq=42,
        key="repo-a/coding/simulated:fast/t1#r2",
        index=7,
        repo_id="repo-a",
        scenario="coding",
        provider="simulated",
        model="fast",
        test_id="t1",
        epoch=2,
        status=pb.TEST_STATUS_FAILED,
        queue_ms=1.5,
        latency_ms=120.25,
        ttft_ms=0.0,
        total_ms=130.0,
        retries=1,
        input_tokens=12,
        output_tokens=34,
        tokens_estimated=True,
        response_text="héllo ✓",
        finish_reason="stop",
        verdicts=[pb.Verdict(evaluator="contains", passed=False, score=0.25, detail="no 'x'")],
    )
    result.started_at.FromJsonString("2025-01-02T03:04:05.123Z")

    parsed = pb.TestResult.FromString(result.SerializeToString())

    assert parsed == result
    assert parsed.HasField("ttft_ms")  # present although zero
    assert not parsed.HasField("itl_ms")
    assert not parsed.HasField("cost_usd")
    assert parsed.verdicts[0].score == 0.25
    assert parsed.started_at.ToJsonString() == "2025-01-02T03:04:05.123Z"
    assert pb.TestStatus.Name(parsed.status) == "TEST_STATUS_FAILED"


# ------------------------------------------------------------------------ live server


class _CannedServicer(pb_grpc.FleetBenchServiceServicer):
    """Implements two RPCs with canned answers; the others stay UNIMPLEMENTED."""

    async def ValidateManifest(
        self, request: pb.ValidateManifestRequest, context: Any
    ) -> pb.ValidateManifestResponse:
        return pb.ValidateManifestResponse(
            run_id=f"demo-{request.run_key}",
            fleet_id="demo",
            planned_tests=len(request.manifest),
            tests_per_provider={"simulated:fast": len(request.manifest)},
            problems=[pb.Problem(location="providers[0]", message="unknown provider 'x'")],
        )

    async def StreamResults(
        self, request: pb.StreamResultsRequest, context: Any
    ) -> AsyncIterator[pb.StreamResultsResponse]:
        for seq in range(request.after_seq + 1, request.after_seq + 3):
            yield pb.StreamResultsResponse(
                results=[pb.TestResult(seq=seq, key=f"r/s/p:m/t{seq}")],
                status=pb.RUN_STATUS_RUNNING,
                last_seq=seq,
            )


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    server = grpc.aio.server()
    # The stubs declare every RPC abstract; leaving most unimplemented is the point here.
    servicer = _CannedServicer()  # type: ignore[abstract]
    pb_grpc.add_FleetBenchServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
            yield chan
    finally:
        await server.stop(None)


async def test_stub_calls_a_live_servicer(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.FleetBenchServiceStub(channel)

    answer = await stub.ValidateManifest(
        pb.ValidateManifestRequest(manifest="fleet_id: demo\n", run_key="k1"), timeout=10
    )

    assert answer.run_id == "demo-k1"
    assert answer.planned_tests == len("fleet_id: demo\n")
    assert dict(answer.tests_per_provider) == {"simulated:fast": 15}
    assert [(p.location, p.message) for p in answer.problems] == [
        ("providers[0]", "unknown provider 'x'")
    ]


async def test_stub_streams_from_a_live_servicer(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.FleetBenchServiceStub(channel)

    messages = [m async for m in stub.StreamResults(
        pb.StreamResultsRequest(run_id="demo-k1", after_seq=40), timeout=10
    )]

    assert [m.last_seq for m in messages] == [41, 42]
    assert [r.key for m in messages for r in m.results] == ["r/s/p:m/t41", "r/s/p:m/t42"]


async def test_unimplemented_rpcs_say_so(channel: grpc.aio.Channel) -> None:
    stub = pb_grpc.FleetBenchServiceStub(channel)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetRun(pb.GetRunRequest(run_id="demo-k1"), timeout=10)

    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
