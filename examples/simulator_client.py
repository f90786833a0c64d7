"""Play the simulator's part: start a fleetbench run over gRPC, follow its results as
they are produced, wait for the end and download the artifacts.

Start a server over the examples folder, then run this script::

    fleetbench serve --data-root examples          # prints: listening on 127.0.0.1:50051
    python examples/simulator_client.py --server 127.0.0.1:50051 --dest ./artifacts

It needs only the client distribution (``pip install clients/python``: grpcio and
protobuf), none of the server's dependencies. Running it twice starts nothing new: the
run id is a hash of the manifest, its datasets and ``--run-key``, so the second start
returns the same run (``created`` is false) and the stream replays its results.
docs/simulator-guide.md explains every step and field.

Exit status: 0 the run completed; 1 it failed, was cancelled or interrupted; 2 the
manifest has problems; 4 the server could not be reached or refused the call.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from fleetbench_client import (
    FleetBenchClient,
    FleetBenchError,
    InvalidManifest,
    RunStatus,
    Snapshot,
    TestStatus,
)

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("FLEETBENCH_SERVER",
                                                           "127.0.0.1:50051"))
    parser.add_argument("--manifest", type=Path, default=HERE / "quickstart.yaml",
                        help="a manifest inside the server's --data-root")
    parser.add_argument("--run-key", default=None, help="run the same manifest as a new run")
    parser.add_argument("--dest", type=Path, default=Path("simulator-artifacts"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    args = parser.parse_args(argv)

    # The token (if the server wants one) comes from the environment, never argv.
    token = os.environ.get("FLEETBENCH_AUTH_TOKEN") or None
    try:
        with FleetBenchClient(args.server, token=token) as client:
            return simulate(client, args.manifest, args.run_key, args.dest, args.timeout)
    except InvalidManifest as error:
        print(f"the manifest has {len(error.violations)} problem(s):", file=sys.stderr)
        for violation in error.violations:  # each with its location in the manifest
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 2
    except FleetBenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 4


def simulate(client: FleetBenchClient, manifest: Path, run_key: str | None, dest: Path,
             timeout_s: float) -> int:
    # 1. Start the run. A Path is read here and its absolute path is sent along, so the
    #    relative dataset paths in it resolve on the server (same machine, data root).
    run, created = client.start_run(manifest, run_key=run_key,
                                    labels={"client": "simulator-example"})
    verb = "started" if created else "found existing"
    print(f"{verb} run {run.run_id}: {run.progress.planned} tests planned")

    # 2. Follow the results. The client reconnects by itself if the connection breaks
    #    and resumes after the last seq it delivered: each result arrives exactly once.
    outcomes: Counter[str] = Counter()
    for batch in client.stream_results(run.run_id, snapshot_interval_ms=1000):
        for result in batch.results:
            outcomes[TestStatus(result.status).name.lower()] += 1
            # A simulator would act on each result here, e.g.:
            #   result.key, result.status, result.latency_ms, result.cost_usd, ...
        if batch.snapshot is not None:
            print(progress_line(batch.snapshot))
        # batch.last_seq is the position to resume from in a later process:
        #   client.stream_results(run.run_id, after_seq=saved_last_seq)

    # 3. The stream ended with the run; wait() confirms the final state.
    run = client.wait(run.run_id, timeout_s=timeout_s)
    status = RunStatus(run.status)
    print(f"run {run.run_id}: {status.name}; results received: {dict(sorted(outcomes.items()))}")
    if run.error_message:
        print(f"  ({run.error_message})")

    # 4. Download the artifacts, each checked against the SHA-256 the server announced.
    for path in client.download_artifacts(run.run_id, dest / run.run_id):
        print(f"  {path} ({path.stat().st_size} bytes)")
    return 0 if status is RunStatus.COMPLETED else 1


def progress_line(snapshot: Snapshot) -> str:
    progress, summary = snapshot.progress, snapshot.summary
    line = f"  {progress.done}/{progress.planned} done, {summary.success_rate:.1%} passed"
    if summary.latency_ms.count:
        line += f", latency p50 {summary.latency_ms.p50:.0f} ms"
    if summary.HasField("cost_usd"):
        line += f", ${summary.cost_usd:.4f} so far"
    return line


if __name__ == "__main__":
    sys.exit(main())
