"""Records ⇄ protobuf: the only engine-side module that imports ``fleetbench_client.v1``.

Protobuf stays at the edge (DESIGN §1): the servicer hands records in and gets
messages out. Rules the ``.proto`` sets and this module keeps:

- ``None`` becomes an absent ``optional`` field (never a made-up zero), and an empty
  string or zero where the field is not ``optional``.
- Timestamps are the records' ISO-8601 UTC strings, converted exactly (microseconds).
- A test's answer text is omitted when the run's ``output.save_responses`` is false.
- A summary's ``cost_usd`` is absent when no test of the group has a price.

The conversion of a result is on the hot path of ``StreamResults`` (hundreds of
thousands per second), so it builds each message with one constructor call, and
streams send results as bytes encoded once (:func:`encode_live`, :func:`encode_stored`):
a live result is converted once for every stream of its run, a stored one straight from
its JSON (no :class:`TestResult` in between), and a message is the concatenation of its
results' encodings and the rest of its fields (protobuf's wire format allows exactly
that), registered with a serializer that passes bytes through (:func:`add_service`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
import orjson
from fleetbench_client.v1 import fleetbench_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from fleetbench._plugins import PluginInfo
from fleetbench._server._artifacts import Chunk
from fleetbench._server._channel import LiveBatch, Snapshot
from fleetbench._server._intake import Validation
from fleetbench._server._replay import Row
from fleetbench._server._runs import RunView
from fleetbench._server._stream import StreamMessage
from fleetbench._store import RunRecord
from fleetbench.errors import Problem
from fleetbench.records import Distribution, GroupStats, RunStatus, Status, Summary, TestResult

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_SERVICE = pb.DESCRIPTOR.services_by_name["FleetBenchService"]
SERVICE_NAME: str = _SERVICE.full_name

RUN_STATUS: Mapping[RunStatus, pb.RunStatus.ValueType] = {
    RunStatus.PENDING: pb.RUN_STATUS_PENDING,
    RunStatus.RUNNING: pb.RUN_STATUS_RUNNING,
    RunStatus.COMPLETED: pb.RUN_STATUS_COMPLETED,
    RunStatus.FAILED: pb.RUN_STATUS_FAILED,
    RunStatus.CANCELLED: pb.RUN_STATUS_CANCELLED,
    RunStatus.INTERRUPTED: pb.RUN_STATUS_INTERRUPTED,
}
RUN_STATUS_OF: Mapping[int, RunStatus] = {v: k for k, v in RUN_STATUS.items()}

_TEST_STATUS: Mapping[Status, pb.TestStatus.ValueType] = {
    Status.PASSED: pb.TEST_STATUS_PASSED,
    Status.FAILED: pb.TEST_STATUS_FAILED,
    Status.ERROR: pb.TEST_STATUS_ERROR,
    Status.TIMEOUT: pb.TEST_STATUS_TIMEOUT,
    Status.SKIPPED: pb.TEST_STATUS_SKIPPED,
    Status.CANCELLED: pb.TEST_STATUS_CANCELLED,
}

_PLUGIN_KIND: Mapping[str, pb.PluginKind.ValueType] = {
    "provider": pb.PLUGIN_KIND_PROVIDER,
    "evaluator": pb.PLUGIN_KIND_EVALUATOR,
    "exporter": pb.PLUGIN_KIND_EXPORTER,
    "repository_adapter": pb.PLUGIN_KIND_REPOSITORY_ADAPTER,
    "executor": pb.PLUGIN_KIND_EXECUTOR,
    "subscriber": pb.PLUGIN_KIND_SUBSCRIBER,
}


def run_statuses(values: Iterable[int]) -> list[RunStatus]:
    """A filter's statuses; UNSPECIFIED (or unknown numbers) match nothing."""
    return [RUN_STATUS_OF[v] for v in values if v in RUN_STATUS_OF]


def timestamp(text: str | None) -> Timestamp | None:
    """An ISO-8601 string (naive means UTC) as a Timestamp; ``None`` stays absent."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return Timestamp(seconds=delta.days * 86_400 + delta.seconds,
                     nanos=delta.microseconds * 1000)


_STAMP_SECONDS: dict[str, int] = {}
"""Unix seconds of ``YYYY-MM-DDTHH:MM:SS`` prefixes seen lately (a run's results share
few), for :func:`_result_timestamp`."""


def _result_timestamp(text: str | None) -> Any:
    """:func:`timestamp` for a result's time, with a fast path for the engine's own
    format (``2026-11-27T05:12:03.123456Z``, see ``fleetbench._clock``): the fields of
    the Timestamp as a dict, which a message constructor takes for a message field
    (cheaper than a Timestamp object, which it would copy)."""
    if not text:
        return None
    if len(text) != 27 or text[19] != "." or text[26] != "Z":
        return timestamp(text)
    head = text[:19]
    seconds = _STAMP_SECONDS.get(head)
    if seconds is None:
        if len(_STAMP_SECONDS) >= 4096:
            _STAMP_SECONDS.clear()
        stamp = timestamp(head)
        assert stamp is not None
        seconds = _STAMP_SECONDS[head] = stamp.seconds
    return {"seconds": seconds, "nanos": int(text[20:26]) * 1000}


# ── results ──


def result_message(seq: int, result: TestResult, *, save_responses: bool) -> pb.TestResult:
    """One result as the stream sends it."""
    item, usage, response = result.item, result.usage, result.response
    return pb.TestResult(
        seq=seq, key=item.key, index=item.index, repo_id=item.repo_id,
        scenario=item.scenario, provider=item.provider, model=item.model,
        test_id=item.test_id, epoch=item.epoch, category=item.category or "",
        status=_TEST_STATUS[result.status], queue_ms=result.queue_ms,
        latency_ms=result.latency_ms, ttft_ms=result.ttft_ms, itl_ms=result.itl_ms,
        total_ms=result.total_ms, retries=result.retries,
        input_tokens=usage.input_tokens if usage else 0,
        output_tokens=usage.output_tokens if usage else 0,
        cached_input_tokens=usage.cached_input_tokens if usage else 0,
        tokens_estimated=usage.estimated if usage else False,
        cost_usd=result.cost_usd,
        response_text=(response.text if response and save_responses else ""),
        finish_reason=(response.finish_reason or "") if response else "",
        error=result.error or "", error_kind=result.error_kind or "",
        verdicts=[pb.Verdict(evaluator=v.evaluator, passed=v.passed, score=v.score,
                             detail=v.detail, error=v.error, cost_usd=v.cost_usd,
                             input_tokens=v.input_tokens, output_tokens=v.output_tokens)
                  for v in result.verdicts],
        started_at=_result_timestamp(result.started_at),
        finished_at=_result_timestamp(result.finished_at),
        cached=result.cached,
        response_model=(response.model or "") if response else "",
        response_id=(response.response_id or "") if response else "",
        tags=item.tags,
    )


_TEST_STATUS_OF_VALUE: Mapping[str, pb.TestStatus.ValueType] = {
    status.value: number for status, number in _TEST_STATUS.items()}


def stored_result_message(seq: int, data: Mapping[str, Any], *,
                          save_responses: bool) -> pb.TestResult:
    """:func:`result_message` of a result as the run store keeps it (the dict of
    ``fleetbench._serialize.result_to_dict``), without rebuilding the record: the same
    message field for field (a test holds them equal)."""
    verdicts = data["verdicts"]
    return pb.TestResult(
        seq=seq, key=data["key"], index=data["index"], repo_id=data["repo_id"],
        scenario=data["scenario"], provider=data["provider"], model=data["model"],
        test_id=data["test_id"], epoch=data["epoch"], category=data["category"],
        status=_TEST_STATUS_OF_VALUE[data["status"]], queue_ms=data["queue_ms"],
        latency_ms=data["latency_ms"], ttft_ms=data["ttft_ms"], itl_ms=data["itl_ms"],
        total_ms=data["total_ms"], retries=data["retries"],
        input_tokens=data["input_tokens"], output_tokens=data["output_tokens"],
        cached_input_tokens=data["cached_input_tokens"],
        tokens_estimated=data["tokens_estimated"], cost_usd=data["cost_usd"],
        response_text=data["response"] if save_responses else "",
        finish_reason=data["finish_reason"], error=data["error"],
        error_kind=data["error_kind"],
        verdicts=_stored_verdicts(verdicts) if verdicts else None,
        started_at=_result_timestamp(data["started_at"]),
        finished_at=_result_timestamp(data["finished_at"]),
        cached=data["cached"], response_model=data["response_model"],
        response_id=data["response_id"], tags=data["tags"] or None,
    )  # None leaves a field unset: "" / 0 / false, or absent where it is optional


def _stored_verdicts(verdicts: Iterable[Mapping[str, Any]]) -> Any:
    """Stored verdicts as the fields of Verdict messages (dicts: a constructor takes
    them for a repeated message field, cheaper than building each message)."""
    return [{"evaluator": v["evaluator"], "passed": v["passed"], "score": v["score"],
             "detail": v["detail"], "error": v["error"], "cost_usd": v["cost_usd"],
             "input_tokens": v.get("input_tokens"), "output_tokens": v.get("output_tokens")}
            for v in verdicts]


_RESULTS_FIELD = pb.StreamResultsResponse.DESCRIPTOR.fields_by_name["results"].number
_RESULTS_TAG = _RESULTS_FIELD << 3 | 2  # wire type 2: length-delimited


def _as_result_field(payload: bytes) -> bytes:
    """A serialized TestResult as one element of ``StreamResultsResponse.results`` on the
    wire: the field's tag, the length as a varint, the bytes."""
    size = len(payload)
    if size < 0x80:
        return bytes((_RESULTS_TAG, size)) + payload
    if size < 0x4000:
        return bytes((_RESULTS_TAG, (size & 0x7F) | 0x80, size >> 7)) + payload
    head = bytearray((_RESULTS_TAG,))
    while size >= 0x80:
        head.append((size & 0x7F) | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head) + payload


def encode_stored(rows: Iterable[tuple[int, bytes]], *, save_responses: bool) -> list[Row]:
    """Stored ``(seq, result JSON)`` rows as ``(seq, wire bytes)`` (see the module
    docstring). Pure CPU work, safe in any thread."""
    loads = orjson.loads
    return [(seq, _as_result_field(stored_result_message(
        seq, loads(raw), save_responses=save_responses).SerializeToString()))
        for seq, raw in rows]


def encode_live(batch: LiveBatch, *, save_responses: bool) -> list[Row]:
    """The results of a live batch as ``(seq, wire bytes)``; converted by the first
    stream that sends them and shared by every other stream of the run."""
    memo = batch.encoded.get(save_responses)
    if memo is None:
        memo = batch.encoded[save_responses] = [
            (seq, _as_result_field(result_message(
                seq, result, save_responses=save_responses).SerializeToString()))
            for seq, result in batch.rows]
    return memo


class ResultEncoder:
    """The stream's :class:`~fleetbench._server._replay.Encoder` for one run."""

    def __init__(self, *, save_responses: bool) -> None:
        self.save_responses = save_responses

    @property
    def variant(self) -> str:
        return "responses" if self.save_responses else "no-responses"

    def stored(self, rows: list[tuple[int, bytes]]) -> list[Row]:
        return encode_stored(rows, save_responses=self.save_responses)

    def live(self, batch: LiveBatch) -> list[Row]:
        return encode_live(batch, save_responses=self.save_responses)


def stream_response(message: StreamMessage) -> bytes:
    """One StreamResults message, serialized: its results' encodings, then the rest."""
    rest = pb.StreamResultsResponse(
        snapshot=snapshot(message.snapshot) if message.snapshot else None,
        status=RUN_STATUS[message.status], last_seq=message.last_seq,
        head_seq=message.head_seq).SerializeToString()
    if not message.results:
        return rest
    return b"".join([data for _, data in message.results]) + rest


def _serializer(message_type: type[Message]) -> Callable[[Message | bytes], bytes]:
    serialize = message_type.SerializeToString

    def serializer(message: Message | bytes) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    return serializer


def add_service(servicer: object, server: grpc.aio.Server) -> None:
    """Register ``servicer`` for every method of ``fleetbench.v1.FleetBenchService`` as
    the generated ``add_FleetBenchServiceServicer_to_server`` does, except that a
    handler may also yield or return an already serialized message (``bytes``)."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in _SERVICE.methods:
        request_type = getattr(pb, method.input_type.name)
        response_type = getattr(pb, method.output_type.name)
        assert not method.client_streaming, "fleetbench.v1 has no client streaming"
        make = (grpc.unary_stream_rpc_method_handler if method.server_streaming
                else grpc.unary_unary_rpc_method_handler)
        handlers[method.name] = make(getattr(servicer, method.name),
                                     request_deserializer=request_type.FromString,
                                     response_serializer=_serializer(response_type))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME,
                                                                         handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


def saves_responses(record: RunRecord) -> bool:
    """The run's ``output.save_responses`` (default true), from its stored manifest."""
    output = json.loads(record.manifest_json).get("output") or {}
    return bool(output.get("save_responses", True))


# ── summaries ──


def _distribution(d: Distribution, method: pb.PercentileMethod.ValueType) -> pb.Distribution:
    if d.count == 0:
        return pb.Distribution()
    return pb.Distribution(count=d.count, mean=d.mean or 0.0, min=d.min or 0.0,
                           max=d.max or 0.0, p50=d.p50 or 0.0, p90=d.p90 or 0.0,
                           p95=d.p95 or 0.0, p99=d.p99 or 0.0, method=method)


def _counts(values: Mapping[str, int]) -> pb.StatusCounts:
    return pb.StatusCounts(**{s.value: int(values.get(s.value, 0)) for s in Status})


def group_summary(stats: GroupStats, exact: bool) -> pb.Summary:
    """One group's statistics."""
    method = pb.PERCENTILE_METHOD_LINEAR if exact else pb.PERCENTILE_METHOD_DDSKETCH
    priced = stats.cost_usd != 0.0 or (stats.total > 0 and stats.unpriced_tests == 0)
    return pb.Summary(
        total=stats.total,
        counts=pb.StatusCounts(passed=stats.passed, failed=stats.failed, error=stats.error,
                               timeout=stats.timeout, skipped=stats.skipped,
                               cancelled=stats.cancelled),
        success_rate=stats.success_rate, error_rate=stats.error_rate,
        latency_ms=_distribution(stats.latency_ms, method),
        ttft_ms=_distribution(stats.ttft_ms, method),
        itl_ms=_distribution(stats.itl_ms, method),
        duration_ms=_distribution(stats.duration_ms, method),
        queue_ms=_distribution(stats.queue_ms, method),
        retries=stats.retries, input_tokens=stats.input_tokens,
        output_tokens=stats.output_tokens, cached_input_tokens=stats.cached_input_tokens,
        cost_usd=stats.cost_usd if priced else None, unpriced_tests=stats.unpriced_tests,
        output_tokens_per_s=stats.output_tokens_per_s,
        evaluation_cost_usd=stats.evaluation_cost_usd,
    )


def counts_summary(counts: Mapping[str, int]) -> pb.Summary:
    """A summary from stored per-status counts only (when no aggregate is at hand)."""
    total = sum(counts.values())
    passed = counts.get(Status.PASSED.value, 0)
    bad = counts.get(Status.ERROR.value, 0) + counts.get(Status.TIMEOUT.value, 0)
    return pb.Summary(total=total, counts=_counts(counts),
                      success_rate=passed / total if total else 0.0,
                      error_rate=bad / total if total else 0.0)


def groups(summary: Summary) -> list[pb.GroupSummary]:
    """Every breakdown, ordered by dimension, then by the group's fields."""
    out: list[pb.GroupSummary] = []
    exact = summary.exact
    for key, stats in summary.by_provider.items():
        provider, _, model = key.partition(":")
        out.append(pb.GroupSummary(dimension=pb.GROUP_DIMENSION_PROVIDER, provider=provider,
                                   model=model, summary=group_summary(stats, exact)))
    for repo, stats in summary.by_repository.items():
        out.append(pb.GroupSummary(dimension=pb.GROUP_DIMENSION_REPOSITORY, repo_id=repo,
                                   summary=group_summary(stats, exact)))
    for category, stats in summary.by_category.items():
        out.append(pb.GroupSummary(dimension=pb.GROUP_DIMENSION_CATEGORY,
                                   category=category or "",
                                   summary=group_summary(stats, exact)))
    for scenario, stats in summary.by_scenario.items():
        out.append(pb.GroupSummary(dimension=pb.GROUP_DIMENSION_SCENARIO, scenario=scenario,
                                   summary=group_summary(stats, exact)))
    for (repo, key), stats in summary.by_repository_provider.items():
        provider, _, model = key.partition(":")
        out.append(pb.GroupSummary(dimension=pb.GROUP_DIMENSION_REPOSITORY_PROVIDER,
                                   repo_id=repo, provider=provider, model=model,
                                   summary=group_summary(stats, exact)))
    return out


def snapshot(snap: Snapshot) -> pb.Snapshot:
    fleet = group_summary(snap.summary.fleet, snap.summary.exact)
    return pb.Snapshot(
        progress=pb.Progress(planned=snap.planned, done=fleet.total, counts=fleet.counts),
        summary=fleet, groups=groups(snap.summary), as_of_seq=snap.as_of_seq,
        taken_at=timestamp(snap.taken_at))


# ── runs ──


def run(view: RunView) -> pb.Run:
    record = view.record
    summary = (group_summary(view.summary.fleet, view.summary.exact) if view.summary
               else counts_summary(record.counts))
    return pb.Run(
        run_id=record.run_id, fleet_id=record.fleet_id, status=RUN_STATUS[view.status],
        created_at=timestamp(record.created_at), started_at=timestamp(record.started_at),
        finished_at=timestamp(record.finished_at) if view.status in _ENDED else None,
        progress=pb.Progress(planned=record.planned, done=record.done,
                             counts=_counts(record.counts)),
        summary=summary,
        artifacts=[pb.Artifact(name=a.name, size_bytes=a.size_bytes, sha256=a.sha256,
                               media_type=a.media_type) for a in record.artifacts],
        error_message=record.error or "", labels=record.labels,
        pricing_version=record.pricing_version or "", last_seq=record.last_seq,
        warnings=view.warnings,
    )


_ENDED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED,
                    RunStatus.INTERRUPTED})


def start_response(view: RunView, created: bool) -> pb.StartFleetRunResponse:
    return pb.StartFleetRunResponse(run=run(view), created=created)


def get_run_response(view: RunView) -> pb.GetRunResponse:
    return pb.GetRunResponse(run=run(view))


def list_runs_response(views: Iterable[RunView], token: str | None) -> pb.ListRunsResponse:
    return pb.ListRunsResponse(runs=[run(v) for v in views], next_page_token=token or "")


def cancel_response(view: RunView) -> pb.CancelRunResponse:
    return pb.CancelRunResponse(run=run(view))


# ── validation, plugins, artifacts ──


def problems(found: Sequence[Problem]) -> list[pb.Problem]:
    return [pb.Problem(location=p.location, message=p.message) for p in found]


def validation(result: Validation) -> pb.ValidateManifestResponse:
    response = pb.ValidateManifestResponse(problems=problems(result.problems),
                                           fleet_id=result.fleet_id,
                                           warnings=result.warnings)
    if result.prepared is not None:
        plan = result.prepared.plan
        response.planned_tests = len(plan)
        response.run_id = plan.run_id
        for (repo, scenario, provider), count in plan.counts().items():
            response.tests_per_repository[repo] += count
            response.tests_per_scenario[scenario] += count
            response.tests_per_provider[provider] += count
    return response


def plugins(infos: Iterable[PluginInfo]) -> pb.ListPluginsResponse:
    return pb.ListPluginsResponse(plugins=[
        pb.PluginInfo(name=i.name, kind=_PLUGIN_KIND.get(i.kind, pb.PLUGIN_KIND_UNSPECIFIED),
                      version=i.version, distribution=i.distribution, plugin=i.plugin,
                      description=i.description)
        for i in infos])


def artifact_chunk(name: str, chunk: Chunk) -> pb.GetArtifactResponse:
    return pb.GetArtifactResponse(name=name, offset=chunk.offset, data=chunk.data,
                                  total_size_bytes=chunk.total_size, sha256=chunk.sha256)
