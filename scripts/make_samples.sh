#!/usr/bin/env bash
# Regenerate sample_reports/ with the tool itself, then render pictures to look at (not committed):
# PDF pages via pdftoppm and a full-page HTML screenshot via headless Chromium, under /tmp/attn-samples.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin/attn-report
mkdir -p sample_reports /tmp/attn-samples
for m in smollm2-135m minilm-l6; do
  "$BIN" "$m" --out "sample_reports/$m.html" --pdf "sample_reports/$m.pdf" --json "sample_reports/$m.json" \
    --markdown "sample_reports/$m.md"
done
if command -v pdftoppm >/dev/null; then
  for m in smollm2-135m minilm-l6; do pdftoppm -r 50 -png "sample_reports/$m.pdf" "/tmp/attn-samples/$m-page"; done
fi
if command -v chromium >/dev/null; then
  for m in smollm2-135m minilm-l6; do
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
      --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
      --window-size=1280,6000 --screenshot="/tmp/attn-samples/$m-html.png" "file://$PWD/sample_reports/$m.html" \
      2>/dev/null || true
  done
fi
ls -la sample_reports
