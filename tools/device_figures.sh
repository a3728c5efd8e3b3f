#!/usr/bin/env bash
# device_figures.sh -- issues 13 and 17 on the GPU machine in ONE device call (about 9
# minutes on an H100): the checks of the MoE and int4 kernels first, then the figures with
# their baselines in the same call. Steps run in this order and a step is skipped when the
# call's budget (BUDGET, 570 s) cannot hold it; the table of what ran is printed last.
#   moe      test_cuda_parity's moe op parity (grouped GEMMs and the GEMV decode path,
#            every tile variant, graph replay) and --bench-moe (both paths per n)
#   quant    test_cuda_quant: int4 GEMV / GEMM / dequantize + cuBLASLt against the CPU
#            reference and against each other, FP8 W8A8; then --bench (int4 GEMM against
#            dequantize + cuBLASLt and bf16 cuBLASLt per n: Q4_GEMM_MAX_N's measurement)
#   fig13    batch 1, 128 in / 256 out: the Qwen3-30B-A3B shape (the default MoE route, then
#            PAGELLM_MOE_GEMV_ENTRIES=0: the grouped GEMMs only, the baseline) and the
#            Gemma-3-12B shape
#   s1q      batch 1 (128 / 256) bf16 and AWQ int4 (the int4 GEMV), then
#            S1 (1024 x 512 in / 256 out) on the Llama-3-8B shape: bf16 (the baseline), FP8
#            W8A8 weights, an FP8 KV cache, AWQ int4 with the int4 GEMM on
#            (PAGELLM_Q4_GEMM_MAX_N=1024) and with it off (dequantize + cuBLASLt)
#   gdiag    golden fixtures on CUDA (GDIAG_PRESETS; gemma2's chunked shape: decode graphs over
#            a new KV cache) and test_attention
#   (quant and s1q also run with PAGELLM_CUBLASLT_REDUCTION=any: split-K in bf16 allowed)
#   pdl      batch 1 (128 / 256) on Llama-3-8B, Gemma-3-12B and Qwen3-30B-A3B (PDL_MODELS) with
#            programmatic dependent launch and the fused qk_rope_store / norm_add_norm kernels
#            (PAGELLM_CUDA_PDL=1 PAGELLM_CUDA_FUSE=1), PDL only, and neither
#   gdiag runs the golden fixtures with both on
#   golden   test_cuda_parity --golden for gemma2 and gemma3 (the fused GELU-tanh gate-up)
# Binaries from `tools/device_check_all.sh --pack` (.carry/pack.tar.xz, carried).
# Env: BUDGET (570), ONLY ("moe quant gdiag fig13 s1q golden" or a subset), S1_PROMPTS (1024),
# SKIP_LOGS (runs to leave out by log name, e.g. "b1_awq s1_kv8").
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_figures}
BUDGET=${BUDGET:-570}
mkdir -p "$OUT"
cd "$ROOT"
[ -d .carry/bin ] || tar xJf .carry/pack.tar.xz -C .carry
B=$ROOT/.carry/bin
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT PAGELLM_LOG_LEVEL=info
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
# run NEED_S TIMEOUT LOG cmd...: runs when NEED_S seconds are left, within TIMEOUT (cut to the budget)
run() {
  local need=$1 to=$2 log=$3; shift 3
  if [[ " ${SKIP_LOGS:-} " == *" ${log%.log} "* ]]; then return 98; fi
  local l; l=$(left)
  if [ "$l" -lt "$need" ]; then echo "[skip: $l s left] $log" | tee -a "$OUT/steps.txt"; return 99; fi
  [ "$to" -gt $((l - 10)) ] && to=$((l - 10))
  echo "[$(( $(date +%s) - T0 ))s] $log" >>"$OUT/steps.txt"
  timeout "$to" "$@" >"$OUT/$log" 2>&1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
BM=$ROOT/bench/models
BT=$B/bench_throughput
rate() { awk '/output tokens\/s/ {print $NF; exit}' "$OUT/$1" 2>/dev/null; }

if want moe; then
  PL_PARITY_ONLY=test_moe run 60 150 moe_parity.log "$B/test_cuda_parity"
  echo "moe parity rc=$?: $(grep -c 'rel err' "$OUT/moe_parity.log") cases; $(grep -E 'passed|failed' "$OUT/moe_parity.log" | tail -1)"
  grep -m5 "CHECK failed" "$OUT/moe_parity.log"
  run 40 90 moe_bench.log "$B/test_cuda_parity" --bench-moe
fi
if want quant; then
  run 60 240 quant.log "$B/test_cuda_quant"
  echo "test_cuda_quant rc=$?"
  grep -E "cases, max normalised|^---- " "$OUT/quant.log"
  grep -m6 "CHECK failed" "$OUT/quant.log"
  # the same with cuBLASLt free to reduce split-K partial sums in bf16 (the old default)
  PAGELLM_CUBLASLT_REDUCTION=any run 60 240 quant_anyred.log "$B/test_cuda_quant"
  echo "test_cuda_quant (PAGELLM_CUBLASLT_REDUCTION=any) rc=$?: $(grep -c 'CHECK failed' "$OUT/quant_anyred.log") failed checks"
  grep -m3 "CHECK failed" "$OUT/quant_anyred.log"
  run 40 90 quant_bench.log "$B/test_cuda_quant" --bench
fi
if want pdl; then
  # programmatic dependent launch (kernels/pdl.cuh) and the fused qk_rope_store / norm_add_norm
  # kernels, batch 1, same call: both on, PDL only, neither (the baseline)
  B1=(--load-format dummy --device cuda --warmup 1 --num-prompts 1 --input-len 128 --output-len 256)
  for m in ${PDL_MODELS:-llama-3-8b gemma-3-12b qwen3-30b-a3b}; do
    PAGELLM_CUDA_PDL=1 PAGELLM_CUDA_FUSE=1 run 40 90 new_$m.log "$BT" --model "$BM/$m" "${B1[@]}" --gpu-memory-utilization 0.95
    PAGELLM_CUDA_PDL=1 PAGELLM_CUDA_FUSE=0 run 40 90 pdlonly_$m.log "$BT" --model "$BM/$m" "${B1[@]}" --gpu-memory-utilization 0.95
    PAGELLM_CUDA_PDL=0 PAGELLM_CUDA_FUSE=0 run 40 90 base_$m.log "$BT" --model "$BM/$m" "${B1[@]}" --gpu-memory-utilization 0.95
    echo "batch 1 $m: PDL + fused $(rate new_$m.log), PDL only $(rate pdlonly_$m.log), neither $(rate base_$m.log) output tok/s"
  done
fi
if want fig13; then
  run 100 150 moe_b1.log "$BT" --model "$BM/qwen3-30b-a3b" --load-format dummy --device cuda --warmup 1 \
    --num-prompts 1 --input-len 128 --output-len 256 --gpu-memory-utilization 0.95
  PAGELLM_MOE_GEMV_ENTRIES=0 run 100 150 moe_b1_grouped.log "$BT" --model "$BM/qwen3-30b-a3b" \
    --load-format dummy --device cuda --warmup 1 --num-prompts 1 --input-len 128 --output-len 256 \
    --gpu-memory-utilization 0.95
  run 60 120 gemma_b1.log "$BT" --model "$BM/gemma-3-12b" --load-format dummy --device cuda --warmup 1 \
    --num-prompts 1 --input-len 128 --output-len 256
  # where a batch-1 step's time goes (per-op GPU time; eager, so launch gaps are not in it)
  PAGELLM_PROFILE=1 PAGELLM_CUDA_PROFILE=1 run 60 90 moe_b1_prof.log "$BT" --model "$BM/qwen3-30b-a3b" \
    --load-format dummy --device cuda --warmup 1 --num-prompts 1 --input-len 128 --output-len 64 \
    --gpu-memory-utilization 0.95 --enforce-eager 1
  PAGELLM_PROFILE=1 PAGELLM_CUDA_PROFILE=1 run 60 90 gemma_b1_prof.log "$BT" --model "$BM/gemma-3-12b" \
    --load-format dummy --device cuda --warmup 1 --num-prompts 1 --input-len 128 --output-len 64 \
    --enforce-eager 1
fi
if want s1q; then
  N=${S1_PROMPTS:-1024}
  S1=(--load-format dummy --device cuda --warmup 1 --num-prompts "$N" --input-len 512 --output-len 256
      --max-num-seqs 512 --max-num-batched-tokens 8192)
  B1=(--load-format dummy --device cuda --warmup 1 --num-prompts 1 --input-len 128 --output-len 256)
  run 40 60 b1_bf16.log "$BT" --model "$BM/llama-3-8b" "${B1[@]}"
  run 40 60 b1_awq.log "$BT" --model "$BM/llama-3-8b-awq" "${B1[@]}"
  run 60 120 s1_bf16.log "$BT" --model "$BM/llama-3-8b" "${S1[@]}"
  PAGELLM_CUBLASLT_REDUCTION=any run 60 120 s1_bf16_anyred.log "$BT" --model "$BM/llama-3-8b" "${S1[@]}"
  run 60 120 s1_fp8.log "$BT" --model "$BM/llama-3-8b-fp8" "${S1[@]}"
  run 60 120 s1_kv8.log "$BT" --model "$BM/llama-3-8b" "${S1[@]}" --kv-cache-dtype fp8
  PAGELLM_Q4_GEMM_MAX_N=1024 run 60 120 s1_awq_gemm.log "$BT" --model "$BM/llama-3-8b-awq" "${S1[@]}"
  run 60 120 s1_awq_deq.log "$BT" --model "$BM/llama-3-8b-awq" "${S1[@]}"
fi
if want gdiag; then
  # the golden fixtures on CUDA (each shape's KV cache elsewhere than the last: decode graphs
  # must be recorded again), gemma2's chunked shape among them, and the attention op
  PAGELLM_CUDA_PDL=1 PAGELLM_CUDA_FUSE=1 \
    PL_GOLDEN_ONLY=${GDIAG_PRESETS:-gemma2,gemma3,qwen3,mistral-swa,llama,qwen2-swa,phi3,mixtral,qwen3moe} \
    run 30 200 gdiag_golden.log "$B/test_cuda_parity" --golden
  echo "golden on cuda: $(grep -c 'CHECK failed' "$OUT/gdiag_golden.log") failed checks; $(grep -E 'passed|failed' "$OUT/gdiag_golden.log" | tail -1)"
  grep -m4 'CHECK failed' "$OUT/gdiag_golden.log" | cut -c1-220
  PL_PARITY_ONLY=test_attention,test_qk_rope_store,test_norm_add_norm,test_rope,test_rmsnorm,test_gemma_ops run 30 120 gdiag_attn.log "$B/test_cuda_parity"
  grep -m4 'CHECK failed' "$OUT/gdiag_attn.log" | cut -c1-220
  echo "attention / qk_rope_store parity: $(grep -c 'CHECK failed' "$OUT/gdiag_attn.log") failed checks; $(grep -E 'passed|failed' "$OUT/gdiag_attn.log" | tail -1)"
fi
if want golden; then
  PL_GOLDEN_ONLY=gemma2,gemma3 run 30 120 golden_gemma.log "$B/test_cuda_parity" --golden
  echo "gemma golden on cuda rc=$?: $(grep -E 'passed|failed' "$OUT/golden_gemma.log" | tail -1)"
  grep -m5 "CHECK failed" "$OUT/golden_gemma.log"
fi

echo "==== moe op (--bench-moe)"
grep -A20 -- "---- moe op" "$OUT/moe_bench.log" 2>/dev/null | head -22
echo "==== int4 bench (test_cuda_quant --bench)"
grep -v "^\[" "$OUT/quant_bench.log" 2>/dev/null | head -40
for l in moe_b1_prof gemma_b1_prof; do
  [ -f "$OUT/$l.log" ] && { echo "==== $l"; grep -A16 "cuda profile" "$OUT/$l.log" | head -17; }
done
echo "==== memory plans / errors"
grep -h -E "memory plan|cuda graphs|error|refused" "$OUT"/moe_b1.log "$OUT"/s1_*.log 2>/dev/null | cut -c1-200 | head -14
echo "==== figures ($(cat "$OUT/device.txt"))"
printf "%-34s %12s\n" "run" "output tok/s"
for l in moe_b1 moe_b1_grouped gemma_b1 b1_bf16 b1_awq s1_bf16 s1_bf16_anyred s1_fp8 s1_kv8 s1_awq_gemm s1_awq_deq; do
  [ -f "$OUT/$l.log" ] && printf "%-34s %12s\n" "$l" "$(rate $l.log)"
done
echo "[$(( $(date +%s) - T0 ))s] done" | tee -a "$OUT/steps.txt"
