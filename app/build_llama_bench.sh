#!/usr/bin/env bash
# Build llama.cpp's `llama-bench` (CPU only, statically linked) from the llama.cpp
# sources vendored in PyPI's llama-cpp-python sdist. The only network access is
# `pip download` (PyPI); no git/GitHub needed.
#
# Usage: app/build_llama_bench.sh [DEST]   (default: $HOME/.cache/pocket-omni/llama.cpp)
# Result: DEST/bin/llama-bench. Env: PYTHON (default: repo .venv python, else python3),
#         JOBS (default 2). Needs cmake and a C++ compiler (apt-get install cmake build-essential).
set -euo pipefail

VERSION=0.3.36                      # llama-cpp-python sdist version (vendors llama.cpp)
DEST=${1:-$HOME/.cache/pocket-omni/llama.cpp}
JOBS=${JOBS:-2}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$HERE/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

command -v cmake >/dev/null && command -v c++ >/dev/null \
  || { echo "need cmake and a C++ compiler: apt-get install -y cmake build-essential" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# 1. Fetch the sdist (source only) and unpack it.
"$PYTHON" -m pip download --quiet --no-binary :all: --no-deps \
  "llama-cpp-python==$VERSION" -d "$WORK"
tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
SRC=$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp

# 2. Configure: CPU only, native SIMD, OpenMP, static libs, only what llama-bench needs
#    (tools on; tests/examples/server/unified app and HTTPS off).
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DGGML_OPENMP=ON -DGGML_CUDA=OFF \
  -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF >/dev/null

# 3. Build only the llama-bench target, at lowest CPU priority.
nice -n 19 cmake --build "$WORK/build" --target llama-bench -j "$JOBS"

# 4. Install and smoke-test (--help only; no model is loaded).
mkdir -p "$DEST/bin"
install -m 755 "$WORK/build/bin/llama-bench" "$DEST/bin/llama-bench"
"$DEST/bin/llama-bench" --help >/dev/null
echo "$DEST/bin/llama-bench"
