#!/usr/bin/env bash
# device_bench8b.sh -- docs/benchmarks.md's S4, S2 and S1 on the GPU machine (device tool), on the
# Llama-3-8B shape with dummy weights (bench/models/llama-3-8b/config.json), and the Hugging
# Face transformers baseline on the same shape in the same call (bench/hf_baseline.py).
# Binaries are built on the development machine and carried in .carry/bin with the shared
# libraries the GPU image lacks in .carry/libs (see docs/cuda.md).
# Env: HF=0 skips the baseline; S1_PROMPTS (1024), S1_SEQS (max_num_seqs, 512),
#      S1_TOKENS (max_num_batched_tokens, 8192), PROFILE=1 adds PAGELLM_PROFILE phase times;
#      PARITY=1 first runs test_cuda_parity (every op against the CPU backend, the golden
#      fixtures on CUDA), MEMCHECK=1 compute-sanitizer memcheck over its op checks.
# Logs under $OUT; the table of results is printed last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.carry/bin
OUT=${OUT:-/tmp/pl_bench8b}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PAGELLM_LOG_LEVEL=info
[ "${PROFILE:-0}" = 1 ] && export PAGELLM_PROFILE=1
M=$ROOT/bench/models/llama-3-8b
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
ids=$(seq -s, 1 128)
export PL_SOURCE_DIR=$ROOT
parity="not run" memcheck="not run" gemv="on"
# the small-n GEMV kernels first: if their checks fail, every run below goes through cuBLASLt
if [ -x "$B/test_cuda_parity" ]; then
  timeout 60 "$B/test_cuda_parity" --gemv-check >"$OUT/gemv_check.log" 2>&1 ||
    { export PAGELLM_CUDA_GEMV=0; gemv="off (checks failed: $(tail -1 "$OUT/gemv_check.log"))"; }
fi

# S4: process start to the first token (the generate process exits right after it)
t0=$(date +%s.%N)
timeout 60 "$B/pagellm" generate --model "$M" --load-format dummy --device cuda --prompt-ids "$ids" \
  --max-tokens 1 --ignore-eos --temperature 0 --max-model-len 4096 --no-progress --json \
  >"$OUT/s4.jsonl" 2>"$OUT/s4.log"
s4_rc=$?
t1=$(date +%s.%N)
s4=$(python3 -c "print(f'{$t1-$t0:.2f}')")

# S4 as a server: process start to the first token of a request served over HTTP
t0=$(date +%s.%N)
"$B/pagellm" serve --model "$M" --load-format dummy --device cuda --port 18080 \
  --served-model-name m --max-model-len 4096 2>"$OUT/s4_serve.log" &
spid=$!
s4s=$(python3 - "$t0" <<'PY'
import json, sys, time, urllib.request
t0 = float(sys.argv[1])
body = json.dumps({"model": "m", "prompt": list(range(1, 129)), "max_tokens": 1}).encode()
while True:
    try:
        req = urllib.request.Request("http://127.0.0.1:18080/v1/completions", body,
                                     {"content-type": "application/json"})
        out = json.load(urllib.request.urlopen(req, timeout=60))
        assert out["usage"]["completion_tokens"] == 1
        print(f"{time.time() - t0:.2f}")
        break
    except Exception:
        if time.time() - t0 > 120:
            print("fail")
            break
        time.sleep(0.02)
PY
)
kill $spid; wait $spid 2>/dev/null

# S2: batch 1, 128 in / 256 out
timeout 60 "$B/bench_throughput" --model "$M" --load-format dummy --device cuda --warmup 1 \
  --num-prompts 1 --input-len 128 --output-len 256 >"$OUT/s2.log" 2>&1
s2=$(awk '/output tokens\/s/ {print $3}' "$OUT/s2.log")

# S2 baseline inside pagellm: every matmul through cuBLASLt
PAGELLM_CUDA_GEMV=0 timeout 60 "$B/bench_throughput" --model "$M" --load-format dummy --device cuda \
  --warmup 1 --num-prompts 1 --input-len 128 --output-len 256 >"$OUT/s2_cublas.log" 2>&1
s2c=$(awk '/output tokens\/s/ {print $3}' "$OUT/s2_cublas.log")

# S1: 1024 prompts, 512 in / 256 out
timeout 150 "$B/bench_throughput" --model "$M" --load-format dummy --device cuda --warmup 1 \
  --num-prompts "${S1_PROMPTS:-1024}" --input-len 512 --output-len 256 \
  --max-num-seqs "${S1_SEQS:-512}" --max-num-batched-tokens "${S1_TOKENS:-8192}" >"$OUT/s1.log" 2>&1
s1=$(awk '/output tokens\/s/ {print $3}' "$OUT/s1.log")

# where the time goes: the same workload at 256 prompts with per-op GPU times
if [ "${PROFILE:-0}" = 1 ]; then
  PAGELLM_CUDA_PROFILE=1 timeout 60 "$B/bench_throughput" --model "$M" --load-format dummy \
    --device cuda --warmup 1 --num-prompts 256 --input-len 512 --output-len 256 \
    --max-num-seqs "${S1_SEQS:-512}" --max-num-batched-tokens "${S1_TOKENS:-8192}" \
    >"$OUT/s1_profile.log" 2>&1
fi

hf_s4=- hf_s2=- hf_s1=-
if [ "${HF:-1}" = 1 ]; then
  t0=$(date +%s.%N)
  PYTHONUNBUFFERED=1 timeout 170 python3 "$ROOT/bench/hf_baseline.py" --config "$M" --t0 "$t0" \
    --s1-batch "${HF_BATCH:-256}" >"$OUT/hf.jsonl" 2>"$OUT/hf.log"
  get() { python3 -c "
import json,sys
for l in open('$OUT/hf.jsonl'):
    o=json.loads(l)
    if o['scenario']=='$1': print(o['$2'])" 2>/dev/null; }
  hf_s4=$(get S4 seconds_to_first_token); hf_s2=$(get S2 output_tok_s); hf_s1=$(get S1 output_tok_s)
fi
if [ "${PARITY:-0}" = 1 ]; then
  timeout "${PARITY_TIMEOUT:-170}" "$B/test_cuda_parity" >"$OUT/parity.log" 2>&1
  parity="rc $? ($(tail -1 "$OUT/parity.log"))"
fi
if [ "${MEMCHECK:-0}" = 1 ]; then
  timeout 200 compute-sanitizer --tool memcheck --leak-check no "$B/test_cuda_parity" --ops \
    >"$OUT/memcheck.log" 2>&1
  memcheck="rc $? ($(grep -E "ERROR SUMMARY" "$OUT/memcheck.log" | tail -1))"
fi
[ "${GEMV_BENCH:-0}" = 1 ] && timeout 45 "$B/test_cuda_parity" --bench-gemv >"$OUT/gemv_bench.log" 2>&1
echo "==== S1 profile (256 prompts)"
grep -E "engine profile|output tokens/s" "$OUT/s1_profile.log" 2>/dev/null
grep -A12 "cuda profile" "$OUT/s1_profile.log" 2>/dev/null | head -13
echo "==== gemv kernels: $gemv"
tail -25 "$OUT/gemv_bench.log" 2>/dev/null
echo "==== parity: $parity"
grep -E "max rel err|golden on cuda|top-2 logprob|sample" "$OUT/parity.log" 2>/dev/null | head -20
echo "==== memcheck: $memcheck"
echo "==== logs"
grep -h -E "memory plan|weights:|engine profile|cuda graphs" "$OUT"/s4.log "$OUT"/s2.log "$OUT"/s1.log | head -20
tail -3 "$OUT/hf.log" 2>/dev/null
echo "==== results ($(cat "$OUT/gpu.txt"))"
printf "%-4s %-44s %14s %14s\n" id scenario pagellm transformers
printf "%-4s %-44s %14s %14s\n" S4 "start -> first token, generate (s)" "$s4 (rc $s4_rc)" "$hf_s4"
printf "%-4s %-44s %14s %14s\n" S4 "start -> first token served, HTTP (s)" "$s4s" "-"
printf "%-4s %-44s %14s %14s\n" S2 "batch 1, 128/256, output tok/s" "${s2:-fail}" "$hf_s2"
printf "%-4s %-44s %14s %14s\n" S2 "  same, matmuls all cuBLASLt" "${s2c:-fail}" "-"
printf "%-4s %-44s %14s %14s\n" S1 "${S1_PROMPTS:-1024} x 512/256, output tok/s" "${s1:-fail}" "$hf_s1 (b ${HF_BATCH:-256})"
