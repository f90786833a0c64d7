"""Python client of the fleetbench gRPC API (``fleetbench.v1``).

Start fleet benchmark runs on a ``fleetbench serve`` server, stream their per-test
results (resumed automatically when the connection breaks), wait for them to end and
download their artifacts::

    from pathlib import Path
    from fleetbench_client import FleetBenchClient

    with FleetBenchClient("127.0.0.1:50051") as client:
        run, created = client.start_run(Path("fleet.yaml"))
        for batch in client.stream_results(run.run_id):
            for result in batch.results:
                print(result.seq, result.key, result.status)
        run = client.wait(run.run_id)
        client.download_artifacts(run.run_id, "artifacts/")

:class:`FleetBenchClient` blocks; :class:`AsyncFleetBenchClient` has the same operations
for asyncio. Failures raise :class:`FleetBenchError` subclasses. Runs, results and
snapshots are the generated protobuf messages of ``fleetbench_client.v1``
(``protos/fleetbench/v1/fleetbench.proto`` documents every field), re-exported here.
This distribution depends on ``grpcio`` and ``protobuf`` only.
"""

from __future__ import annotations

from fleetbench_client._aio import AsyncFleetBenchClient
from fleetbench_client._core import DEFAULT_RECONNECT_TIMEOUT_S, DEFAULT_TIMEOUT_S, Manifest
from fleetbench_client._errors import (
    ChecksumMismatch,
    DeadlineExceeded,
    FleetBenchError,
    InvalidArgument,
    InvalidManifest,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from fleetbench_client._json import to_dict
from fleetbench_client._status import FieldViolation
from fleetbench_client._sync import FleetBenchClient, StartedRun
from fleetbench_client._types import (
    TERMINAL_STATUSES,
    GroupDimension,
    ResultBatch,
    RunStatus,
    TestStatus,
)
from fleetbench_client.v1.fleetbench_pb2 import (
    Artifact,
    Distribution,
    GroupSummary,
    PluginInfo,
    Problem,
    Progress,
    Run,
    Snapshot,
    StatusCounts,
    Summary,
    TestResult,
    ValidateManifestResponse,
    Verdict,
)

__all__ = [
    "DEFAULT_RECONNECT_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "TERMINAL_STATUSES",
    "Artifact",
    "AsyncFleetBenchClient",
    "ChecksumMismatch",
    "DeadlineExceeded",
    "Distribution",
    "FieldViolation",
    "FleetBenchClient",
    "FleetBenchError",
    "GroupDimension",
    "GroupSummary",
    "InvalidArgument",
    "InvalidManifest",
    "Manifest",
    "NotFound",
    "PermissionDenied",
    "PluginInfo",
    "Problem",
    "Progress",
    "ResourceExhausted",
    "ResultBatch",
    "Run",
    "RunStatus",
    "Snapshot",
    "StartedRun",
    "StatusCounts",
    "Summary",
    "TestResult",
    "TestStatus",
    "Unauthenticated",
    "Unavailable",
    "ValidateManifestResponse",
    "Verdict",
    "__version__",
    "to_dict",
]

__version__ = "0.1.0"
