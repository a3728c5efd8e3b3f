#!/usr/bin/env bash
# test_runpod.sh -- the RunPod worker on loopback, on the default tiny model:
#   1. the conformance cases of docs/runpod-protocol.md (tests/node/runpod_conformance.mjs)
#      against a fake job server (tests/node/fake_runpod.mjs);
#   2. the local API against hostile clients (tests/node/runpod_local_api.mjs);
#   3. no result lost under job-server faults (tests/node/runpod_faults.mjs).
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
# thousands of client sockets (runpod_local_api.mjs C1): the soft open-file limit up to the hard one
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
fail=0
for t in runpod_conformance runpod_local_api runpod_faults; do
  echo "-- $t"
  if node "$SRC/tests/node/$t.mjs" "$PAGELLM" "$dir/model"; then echo "ok   $t"; else echo "FAIL $t"; fail=1; fi
done
exit $fail
