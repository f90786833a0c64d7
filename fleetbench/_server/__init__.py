"""The gRPC server behind ``fleetbench serve``: the ``fleetbench.v1`` API over the engine.

Layers, from the wire inwards:

- ``_app``: assembles the ``grpc.aio`` server (health, reflection, auth, TLS) and owns
  its lifecycle: start-up recovery, readiness, graceful shutdown on SIGTERM/SIGINT.
- ``_auth``: the optional bearer-token interceptor.
- ``_service``: the servicer; translates requests and errors, nothing more.
- ``_convert``: records ⇄ protobuf, the one module that builds ``fleetbench_client.v1``
  messages (the servicer reads request fields; ``_app`` registers the generated service).
- ``_runs``: the run manager (prepare, start, resume, cancel, interrupt, views of runs).
- ``_channel``: a run's live fan-out to streams, and snapshots aligned to its ``seq``.
- ``_stream``: one ``StreamResults`` call: replay from the store, then follow live.
- ``_replay``: stored results encoded for the wire by windows of seqs, shared by every
  stream, converted in a worker process as the server's runs complete them.
- ``_encoded``: the server's own SQLite file, where those windows are kept.
- ``_summaries``: exact summaries of runs not executing, computed from the store.
- ``_artifacts``: reading an artifact in chunks.
- ``_intake``: manifest text → checked plan, the same for start, validate and resume.
- ``_paths``: the data-root policy for manifests submitted to the server.
- ``_config`` and ``_errors``: the server's settings and its refusals (no gRPC in either).

The package imports nothing itself, so the CLI can read ``_config`` without loading
grpc: ``fleetbench._server._app`` has :class:`FleetBenchServer` and ``serve``.
"""

from __future__ import annotations
