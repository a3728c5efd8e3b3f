#!/usr/bin/env bash
# test_runpod.sh -- the RunPod worker's conformance cases (docs/runpod-protocol.md
# section 6) against a fake job server on loopback (tests/node/fake_runpod.mjs),
# on the default tiny model; see tests/node/runpod_conformance.mjs.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
SRC=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
MKMODEL=$(dirname "$PAGELLM")/pl-mkmodel
if ! command -v node >/dev/null; then
  echo "test_runpod: node missing; skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$MKMODEL" --preset default --out "$dir/model" >/dev/null
export PAGELLM_LOG_LEVEL=warn
node "$SRC/tests/node/runpod_conformance.mjs" "$PAGELLM" "$dir/model"
