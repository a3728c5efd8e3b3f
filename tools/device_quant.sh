#!/usr/bin/env bash
# device_quant.sh -- quantized models on the GPU machine (device tool), from binaries built on
# the development machine and carried in .carry/bin (shared libraries the GPU image lacks in
# .carry/libs), as tools/device_e2e.sh does:
#   1. test_cuda_quant: the packed int4 matmul (GEMV n <= 8, the tensor-core GEMM and
#      dequantize + GEMM above) against the dequantizing reference, every int4 format and
#      group size, shapes up to 28672 (`test_cuda_quant --bench` times the paths: run it
#      on its own);
#   2. every int4 test format of llama-quant through `pagellm generate`, cuda against cpu
#      (the CPU path is the reference): greedy tokens compared;
#   3. figures with dummy weights (bench/models/*/config.json) in the same call: Llama-3-8B
#      bf16 against AWQ int4 at batch 1 (128 in / 256 out) and offline (S1=0 skips it;
#      S1_PROMPTS, 256 by default, of 512 in / 256 out), and Llama-3-70B AWQ at batch 1.
# Prepare (development machine):
#   ./scripts/build.sh build && mkdir -p .carry/bin .carry/libs &&
#   cp build/pl-mkmodel build/pagellm build/bench_throughput build/test_cuda_quant .carry/bin/ &&
#   cp /lib/x86_64-linux-gnu/libjansson.so.4 /lib/x86_64-linux-gnu/libpcre2-8.so.0 \
#     /lib/x86_64-linux-gnu/libutf8proc.so.2 .carry/libs/
# Run (device tool, carry [".carry"]): tools/device_quant.sh   (about 5 minutes)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.carry/bin
OUT=${OUT:-/tmp/pl_quant}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT PAGELLM_LOG_LEVEL=warn
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 360 "$B/test_cuda_quant" >"$OUT/parity.log" 2>&1
echo "test_cuda_quant rc=$? $(grep -A4 -- '----' "$OUT/parity.log")"
grep -m5 "CHECK failed" "$OUT/parity.log"
M=/tmp/pl_quant_models
summary=""
for f in awq_g32 awq_g128 gptq_g128 gptq_g32_act gptq_v2_g128_asym_act ct_w4a16_g32_asym_act ct_w4a16_channel; do
  "$B/pl-mkmodel" --preset llama-quant --quant "$f" --out "$M/$f" >/dev/null || { echo "mkmodel $f failed"; continue; }
  for d in cpu cuda; do
    "$B/pagellm" generate --model "$M/$f" --prompt-ids 1,17,230,5,88,301,42,7 --prompt-ids 2,99,100 \
      --max-tokens 24 --temperature 0 --ignore-eos --max-model-len 256 --device $d --json \
      --no-progress >"$OUT/gen_${f}_$d.jsonl" 2>"$OUT/gen_${f}_$d.err"
  done
  r=$(python3 "$ROOT/tools/cmp_greedy.py" "$OUT/gen_${f}_cpu.jsonl" "$OUT/gen_${f}_cuda.jsonl")
  summary+="$f: $r"$'\n'
done
echo "==== llama-quant int4 formats, cuda vs cpu greedy"; printf "%s" "$summary"
# figures: Llama-3-8B shape with dummy weights, bf16 against AWQ int4 (packed dummies), and
# the 70B AWQ shape at batch 1 (one card), in this one call
BM=$ROOT/bench/models
bench() { # name model extra-args...
  local name=$1 model=$2; shift 2
  PAGELLM_LOG_LEVEL=info timeout 150 "$B/bench_throughput" --model "$BM/$model" --load-format dummy --device cuda \
    --warmup 1 "$@" >"$OUT/$name.log" 2>&1
  echo "$name: $(awk '/output tokens\/s/ {print $3}' "$OUT/$name.log") output tok/s" \
    "($(grep -m1 -o 'weights [0-9.]* MiB' "$OUT/$name.log" || true))"
}
echo "==== figures (dummy weights, cuda)"
bench s2_8b_bf16 llama-3-8b --num-prompts 1 --input-len 128 --output-len 256
bench s2_8b_awq llama-3-8b-awq --num-prompts 1 --input-len 128 --output-len 256
if [ "${S1:-1}" = 1 ]; then
  bench s1_8b_bf16 llama-3-8b --num-prompts "${S1_PROMPTS:-256}" --input-len 512 --output-len 256 \
    --max-num-seqs 256 --max-num-batched-tokens 8192
  bench s1_8b_awq llama-3-8b-awq --num-prompts "${S1_PROMPTS:-256}" --input-len 512 \
    --output-len 256 --max-num-seqs 256 --max-num-batched-tokens 8192
fi
bench s2_70b_awq llama-3-70b-awq --num-prompts 1 --input-len 128 --output-len 256 \
  --gpu-memory-utilization 0.95
