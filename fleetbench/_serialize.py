"""TestResult ⇄ plain JSON-able dicts: the one flat shape used by the run store,
``results.jsonl`` and ``fleet_results.json``, so a result read back equals the result
written (``result_from_dict(result_to_dict(r)) == r``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleetbench.records import (
    EvaluatorRef,
    GenerationSettings,
    ProviderResponse,
    Status,
    TestResult,
    Usage,
    Verdict,
    WorkItem,
)

__all__ = ["result_from_dict", "result_to_dict"]


def result_to_dict(result: TestResult) -> dict[str, Any]:
    """The result as a flat dict with stable key names (see README "Artifacts")."""
    item, usage, response = result.item, result.usage, result.response
    return {
        "key": item.key,
        "index": item.index,
        "repo_id": item.repo_id,
        "scenario": item.scenario,
        "provider": item.provider,
        "model": item.model,
        "test_id": item.test_id,
        "epoch": item.epoch,
        "category": item.category,
        "prompt": item.prompt,
        "settings": item.settings.as_dict(),
        "stream": item.stream,
        "expected": item.expected,
        "references": list(item.references),
        "metadata": dict(item.metadata),
        "tags": list(item.tags),
        "evaluators": [{"name": e.name, "options": dict(e.options)} for e in item.evaluators],
        "status": result.status.value,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "queue_ms": result.queue_ms,
        "latency_ms": result.latency_ms,
        "ttft_ms": result.ttft_ms,
        "itl_ms": result.itl_ms,
        "total_ms": result.total_ms,
        "retries": result.retries,
        "input_tokens": usage.input_tokens if usage else None,
        "output_tokens": usage.output_tokens if usage else None,
        "cached_input_tokens": usage.cached_input_tokens if usage else None,
        "tokens_estimated": usage.estimated if usage else None,
        "cost_usd": result.cost_usd,
        "response": response.text if response else None,
        "finish_reason": response.finish_reason if response else None,
        "response_model": response.model if response else None,
        "response_id": response.response_id if response else None,
        "verdicts": [
            {"evaluator": v.evaluator, "passed": v.passed, "score": v.score, "detail": v.detail,
             "error": v.error, "cost_usd": v.cost_usd, "input_tokens": v.input_tokens,
             "output_tokens": v.output_tokens}
            for v in result.verdicts
        ],
        "error": result.error,
        "error_kind": result.error_kind,
        "cached": result.cached,
    }


def result_from_dict(data: Mapping[str, Any]) -> TestResult:
    """Rebuild a :class:`TestResult` from :func:`result_to_dict`'s output."""
    settings = dict(data["settings"])
    stop = settings.get("stop")
    item = WorkItem(
        key=data["key"],
        index=data["index"],
        repo_id=data["repo_id"],
        scenario=data["scenario"],
        provider=data["provider"],
        model=data["model"],
        test_id=data["test_id"],
        epoch=data["epoch"],
        prompt=data["prompt"],
        settings=GenerationSettings(
            temperature=settings.get("temperature"),
            max_tokens=settings.get("max_tokens"),
            top_p=settings.get("top_p"),
            stop=tuple(stop) if stop is not None else None,
            system=settings.get("system"),
            params=settings.get("params", {}),
        ),
        stream=data["stream"],
        category=data["category"],
        expected=data["expected"],
        references=tuple(data["references"]),
        metadata=data["metadata"],
        tags=tuple(data["tags"]),
        evaluators=tuple(EvaluatorRef(e["name"], e["options"]) for e in data["evaluators"]),
    )
    usage = None
    if data["input_tokens"] is not None:
        usage = Usage(data["input_tokens"], data["output_tokens"], data["cached_input_tokens"],
                      data["tokens_estimated"])
    response = None
    if data["response"] is not None or data["finish_reason"] is not None:
        response = ProviderResponse(data["response"] or "", usage, data["finish_reason"],
                                    data["response_model"], data["response_id"])
    return TestResult(
        item=item,
        status=Status(data["status"]),
        started_at=data["started_at"],
        finished_at=data["finished_at"],
        queue_ms=data["queue_ms"],
        latency_ms=data["latency_ms"],
        ttft_ms=data["ttft_ms"],
        itl_ms=data["itl_ms"],
        total_ms=data["total_ms"],
        retries=data["retries"],
        usage=usage,
        cost_usd=data["cost_usd"],
        response=response,
        verdicts=tuple(Verdict(**v) for v in data["verdicts"]),
        error=data["error"],
        error_kind=data["error_kind"],
        cached=data["cached"],
    )
