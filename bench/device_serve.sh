#!/usr/bin/env bash
# device_serve.sh -- serving figures on the GPU machine (device tool): `pagellm serve --device
# cuda` under `pagellm bench serve` at several Poisson rates, and as the baseline in the same
# call the offline engine (`pagellm generate --device cuda`) on the same workload shape.
# Binaries come built from the development machine (a CUDA build: nvcc present) in .carry/bin
# (pagellm, pl-mkmodel) with the shared libraries the GPU image lacks in .carry/libs: jansson,
# pcre2-8, utf8proc, microhttpd and its gnutls chain (gnutls, p11-kit, idn2, unistring, tasn1,
# nettle, hogweed, gmp, ffi); `ldd build/pagellm` lists them. Device run, from the checkout the
# device tool copies: OUT=$OUT bash bench/device_serve.sh   (carry: .carry) Env: PRESET (bench-100m), N (100), IN (512), OUT_LEN (256),
# RATES ("4 16 inf"), VOCAB (32000). Results: $OUT/serve.jsonl, $OUT/offline.json, logs.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.carry/bin
OUT=${OUT:-/tmp/pl_serve_out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
preset=${PRESET:-bench-100m}; n=${N:-100}; in=${IN:-512}; out=${OUT_LEN:-256}
rates=${RATES:-"4 16 inf"}; vocab=${VOCAB:-32000}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
M=/tmp/pl_models/$preset
"$B/pl-mkmodel" --preset "$preset" --out "$M" >/dev/null || exit 1
"$B/pagellm" serve --model "$M" --device cuda --port 0 --served-model-name "$preset" \
  >"$OUT/serve.log" 2>&1 &
server=$!
port=
for _ in $(seq 1 600); do
  port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/serve.log")
  [ -n "$port" ] && break
  kill -0 $server 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { tail -20 "$OUT/serve.log"; exit 1; }
for rate in $rates; do
  "$B/pagellm" bench serve --port "$port" --num-prompts "$n" --input-len "$in" --output-len "$out" \
    --vocab-size "$vocab" --request-rate "$rate" --result-file "$OUT/serve.jsonl" --label "$rate" \
    >"$OUT/bench_$rate.log" 2>&1
  grep -E "Output token throughput|Median TTFT|Median TPOT" "$OUT/bench_$rate.log" | tr -s ' ' | paste -sd ' '
done
kill -TERM $server; wait $server
python3 - "$n" "$in" "$vocab" >"$OUT/args" <<'PY'
import random, sys
n, length, vocab = map(int, sys.argv[1:])
rng = random.Random(0)
for _ in range(n):
    print("--prompt-ids")
    print(",".join(str(rng.randrange(vocab)) for _ in range(length)))
PY
mapfile -t gen_args <"$OUT/args"
t0=$(date +%s.%N)
"$B/pagellm" generate --model "$M" --device cuda --max-tokens "$out" --temperature 0 --ignore-eos \
  --no-progress --stats --json "${gen_args[@]}" >/dev/null 2>"$OUT/offline.err"
t1=$(date +%s.%N)
python3 -c "print('{\"seconds\": %.3f, \"output_tok_s\": %.1f}' % ($t1 - $t0, $n * $out / ($t1 - $t0)))" \
  | tee "$OUT/offline.json"
tail -1 "$OUT/offline.err"
rm -f "$OUT/args"
