#!/usr/bin/env bash
# device_structured.sh -- structured output on the GPU machine (device tool): the token-mask
# parity of the CUDA sample op (test_cuda_parity --sample), then bench_structured on the
# Llama-3-8B shape with dummy weights (bench/models/llama-3-8b/config.json) and the Llama 3
# tokenizer: per-output-token cost of a nested JSON schema against free requests at batch 64
# in one process, and grammar compile time for a 50-property schema.
# Binaries are built on the development machine and carried (docs/structured-output.md):
#   .carry/bin/{bench_structured,test_cuda_parity}, .carry/libs/ (libjansson, libpcre2-8,
#   libutf8proc), .carry/tok/llama3/{tokenizer.json,tokenizer_config.json}.
# Env: BATCH (64), OUTPUT_LEN (256), ROUNDS (3). Logs under $OUT.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.carry/bin
OUT=${OUT:-/tmp/pl_structured}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 180 "$B/test_cuda_parity" --sample >"$OUT/parity.log" 2>&1
echo "parity (rc $?): $(grep -E 'passed|sample:' "$OUT/parity.log" | tr '\n' ' ')"
timeout 480 "$B/bench_structured" --model "$ROOT/bench/models/llama-3-8b" --load-format dummy \
  --device cuda --tokenizer "$ROOT/.carry/tok/llama3" --batch "${BATCH:-64}" --input-len 32 \
  --output-len "${OUTPUT_LEN:-256}" --rounds "${ROUNDS:-3}" --max-model-len 1024 \
  >"$OUT/bench.log" 2>&1
echo "bench (rc $?):"
grep -v INFO "$OUT/bench.log" | tail -8
