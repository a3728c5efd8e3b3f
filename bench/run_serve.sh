#!/usr/bin/env bash
# run_serve.sh [BUILD_DIR] -- scenario S3 of docs/benchmarks.md: serving over HTTP with
# Poisson arrivals at 4, 16 and unlimited requests/s (`pagellm bench serve` against
# `pagellm serve`), and as the baseline measured in the same run, the offline engine
# (`pagellm generate`) on the same workload shape. Appends one row per rate to
# docs/results_serve.md (date, commit, device, settings, TTFT / TPOT / ITL p50 and p99,
# output tok/s, the offline baseline and the ratio).
# Env: MODEL (default: the built-in tiny model), N (prompts, 100), IN (128), OUT (64),
#      RATES ("4 16 inf"), VOCAB (prompt ids drawn from [0, VOCAB), 256), SERVE_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
bin=$build/pagellm
n=${N:-100}; in=${IN:-128}; out=${OUT:-64}; rates=${RATES:-"4 16 inf"}; vocab=${VOCAB:-256}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
model=${MODEL:-}
if [ -z "$model" ]; then
  model=$work/model
  "$build/pl-mkmodel" --preset default --out "$model" >/dev/null
fi
# shellcheck disable=SC2086
"$bin" serve --model "$model" --port 0 ${SERVE_ARGS:-} >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 1 600); do
  port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/serve.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "${port:-}" ] || { cat "$work/serve.log"; exit 1; }

for rate in $rates; do
  "$bin" bench serve --port "$port" --num-prompts "$n" --input-len "$in" --output-len "$out" \
    --vocab-size "$vocab" --request-rate "$rate" --result-file "$work/serve.jsonl" --label "$rate"
done
kill "$server"; wait "$server" || true; server=

# baseline: the same shape offline, all prompts in one generate call
python3 - "$n" "$in" "$vocab" >"$work/args" <<'PY'
import random, sys
n, length, vocab = map(int, sys.argv[1:])
rng = random.Random(0)
for _ in range(n):
    print("--prompt-ids")
    print(",".join(str(rng.randrange(vocab)) for _ in range(length)))
PY
mapfile -t gen_args <"$work/args"
t0=$(date +%s.%N)
"$bin" generate --model "$model" --max-tokens "$out" --temperature 0 --ignore-eos --no-progress --json \
  "${gen_args[@]}" >/dev/null 2>&1
t1=$(date +%s.%N)
offline=$(python3 -c "print(f'{$n * $out / ($t1 - $t0):.1f}')")

date=$(date -u +%Y-%m-%d)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
device="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores"
results=docs/results_serve.md
if [ ! -f "$results" ]; then
  cat >"$results" <<'MD'
# Serving benchmark results (scenario S3)

`bench/run_serve.sh`: `pagellm bench serve` against `pagellm serve` (streaming
/v1/completions, random token-id prompts, ignore_eos, greedy), Poisson arrivals; the baseline is
the offline engine (`pagellm generate`, all prompts in one call) on the same workload shape,
measured in the same run. Times in ms; throughput in output tokens/s.

| date | commit | device | model | n | in/out | rate | TTFT p50 | TTFT p99 | TPOT p50 | TPOT p99 | ITL p50 | ITL p99 | out tok/s | offline tok/s | ratio |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
MD
fi
label=${MODEL:+$(basename "$MODEL")}
python3 - "$work/serve.jsonl" "$date" "$commit" "$device" "${label:-tiny default}" "$offline" >>"$results" <<'PY'
import json, sys
path, date, commit, device, model, offline = sys.argv[1:]
for line in open(path):
    r = json.loads(line)
    out = r["output_throughput"]
    print(f"| {date} | {commit} | {device} | {model} | {r['num_prompts']} | {r['input_len']}/{r['output_len']} "
          f"| {r['label']} | {r['median_ttft_ms']:.1f} | {r['p99_ttft_ms']:.1f} | {r['median_tpot_ms']:.2f} "
          f"| {r['p99_tpot_ms']:.2f} | {r['median_itl_ms']:.2f} | {r['p99_itl_ms']:.2f} | {out:.1f} "
          f"| {offline} | {out / float(offline):.2f} |")
PY
tail -n "$(echo $rates | wc -w)" "$results"
