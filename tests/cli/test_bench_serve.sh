#!/usr/bin/env bash
# test_bench_serve.sh -- `pagellm bench serve` counts only complete requests (issue 11):
#   1. against a fake server (tests/cli/fake_openai_stream.py) whose replies are, in
#      arrival order, complete / aborted / complete / short: 8 requests -> 4 successful,
#      4 failed (2 aborted, 2 short), the generated-token total and the result file count
#      the successful ones only, exit status 1;
#   2. against `pagellm serve` with the tiny model: every request complete, exit 0.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v python3 >/dev/null || { echo "test_bench_serve: python3 missing; skipped"; exit 0; }
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "test_bench_serve: FAIL: $*"; exit 1; }
field() { sed -n "s/^$1 *//p" "$dir/bench.out"; }

# 1. the fake server
python3 "$src/tests/cli/fake_openai_stream.py" "$dir/port" &
pids+=($!)
for _ in $(seq 1 600); do [ -s "$dir/port" ] && break; sleep 0.1; done  # hang guard only
[ -s "$dir/port" ] || fail "the fake server did not start"
set +e
"$PAGELLM" bench serve --port "$(cat "$dir/port")" --num-prompts 8 --input-len 4 --output-len 10 \
  --max-concurrency 1 --result-file "$dir/r.jsonl" >"$dir/bench.out" 2>"$dir/bench.err"
rc=$?
set -e
[ $rc -eq 1 ] || { cat "$dir/bench.out" "$dir/bench.err"; fail "exit $rc with failed requests (want 1)"; }
[ "$(field 'Successful requests:')" = 4 ] || { cat "$dir/bench.out"; fail "successful"; }
[ "$(field 'Failed requests:')" = 4 ] || { cat "$dir/bench.out"; fail "failed"; }
[ "$(field '  aborted (finish_reason abort):')" = 2 ] || { cat "$dir/bench.out"; fail "aborted"; }
[ "$(field '  short (fewer tokens than asked):')" = 2 ] || { cat "$dir/bench.out"; fail "short"; }
[ "$(field 'Total generated tokens:')" = 40 ] || { cat "$dir/bench.out"; fail "generated tokens: successful ones only"; }
[ "$(field '  tokens they generated (not counted):')" = 10 ] || { cat "$dir/bench.out"; fail "failed requests' tokens"; }
grep -q "aborted (finish_reason abort) after 2 of 10 tokens" "$dir/bench.err" || { cat "$dir/bench.err"; fail "abort message"; }
grep -q "short: 3 of 10 tokens (finish_reason length)" "$dir/bench.err" || { cat "$dir/bench.err"; fail "short message"; }
python3 - "$dir/r.jsonl" <<'PY' || fail "result file"
import json, sys
r = json.loads(open(sys.argv[1]).read())
assert (r["completed"], r["failed"], r["failed_aborted"], r["failed_short"], r["failed_error"]) == (4, 4, 2, 2, 0), r
PY

# 2. pagellm serve: all complete
"$(dirname "$PAGELLM")/pl-mkmodel" --preset default --out "$dir/m" >/dev/null
: >"$dir/serve.log" # exists before the poll reads it (under set -e a failed sed ends the test)
"$PAGELLM" serve --model "$dir/m" --port 0 --threads 1 >"$dir/serve.log" 2>&1 &
pids+=($!)
port=
for _ in $(seq 1 1200); do  # hang guard only
  port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/serve.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$dir/serve.log"; fail "pagellm serve did not start"; }
"$PAGELLM" bench serve --port "$port" --num-prompts 6 --input-len 8 --output-len 5 --vocab-size 900 \
  >"$dir/bench.out" 2>"$dir/bench.err" || { cat "$dir/bench.out" "$dir/bench.err"; fail "bench against pagellm serve"; }
[ "$(field 'Successful requests:')" = 6 ] && [ "$(field 'Failed requests:')" = 0 ] &&
  [ "$(field 'Total generated tokens:')" = 30 ] || { cat "$dir/bench.out"; fail "pagellm serve run"; }
echo "test_bench_serve: passed"
