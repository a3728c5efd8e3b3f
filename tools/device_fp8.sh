#!/usr/bin/env bash
# device_fp8.sh -- FP8 on the GPU machine (device tool), from binaries built on the development
# machine and carried in .carry/bin (shared libraries the GPU image lacks in .carry/libs), as
# tools/device_quant.sh does:
#   1. test_cuda_quant's FP8 tests: the activation quantization kernel (exact), the W8A8
#      matmul on every FP8 format and the issue's shapes, both scale routes, the fused ops;
#   2. test_cuda_parity --fp8: store_kv / copy_blocks into e4m3 caches, every attention case
#      over e4m3 caches, the golden fixtures with an e4m3 KV cache and under
#      --quantization fp8 (GOLDEN_ONLY picks the fixtures, by default
#      "llama,qwen2,mistral-swa,phi3,gemma2": the whole set takes longer than one call);
#   3. every FP8 format of llama-quant (and --quantization fp8, and an e4m3 KV cache) through
#      `pagellm generate`, cuda against cpu (the CPU is the dequantizing reference, with float
#      activations: W8A8 may flip a near tie), greedy tokens compared;
#   4. figures with dummy weights (bench/models/*/config.json) in the same call: Llama-3-8B
#      bf16 against FP8 weights and against an FP8 KV cache, at batch 1 (128 in / 256 out)
#      and offline (S1=0 skips it; S1_PROMPTS, 256 by default, of 512 in / 256 out).
# Prepare (development machine):
#   ./scripts/build.sh build && mkdir -p .carry/bin .carry/libs &&
#   cp build/pl-mkmodel build/pagellm build/bench_throughput build/test_cuda_quant \
#     build/test_cuda_parity .carry/bin/ &&
#   cp /lib/x86_64-linux-gnu/libjansson.so.4 /lib/x86_64-linux-gnu/libpcre2-8.so.0 \
#     /lib/x86_64-linux-gnu/libutf8proc.so.2 .carry/libs/
# Run (device tool, carry [".carry"]): tools/device_fp8.sh   (STEPS=12 runs 1 and 2 only)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.carry/bin
OUT=${OUT:-/tmp/pl_fp8}
STEPS=${STEPS:-1234}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT PAGELLM_LOG_LEVEL=warn
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
if [[ $STEPS == *1* ]]; then
  PL_PARITY_ONLY=test_fp8_quant_rows,test_fp8_matmul_formats,test_fp8_matmul_real_shapes,test_fp8_fused_ops \
    timeout 300 "$B/test_cuda_quant" >"$OUT/quant.log" 2>&1
  echo "test_cuda_quant (fp8) rc=$? $(grep -- '---- fp8' "$OUT/quant.log")"
  echo "  $(grep -c 'PASS' "$OUT/quant.log") PASS lines, $(grep -c 'FAIL' "$OUT/quant.log") FAIL lines"
  grep -m8 "CHECK failed\|FAIL\|refused the outer" "$OUT/quant.log"
fi
if [[ $STEPS == *2* ]]; then
  PL_GOLDEN_ONLY=${GOLDEN_ONLY:-llama,qwen2,mistral-swa,phi3,gemma2} timeout 500 "$B/test_cuda_parity" --fp8 \
    >"$OUT/parity.log" 2>&1
  echo "test_cuda_parity --fp8 rc=$?"
  grep -- "---- \|^golden on cuda with\|passed, " "$OUT/parity.log"
  grep -m8 "CHECK failed" "$OUT/parity.log"
fi
if [[ $STEPS == *3* ]]; then
  M=/tmp/pl_fp8_models
  summary=""
  gen() { # name model device extra-args...
    local name=$1 model=$2 d=$3; shift 3
    "$B/pagellm" generate --model "$model" --prompt-ids 1,17,230,5,88,301,42,7 --prompt-ids 2,99,100 \
      --max-tokens 24 --temperature 0 --ignore-eos --max-model-len 256 --device "$d" --json \
      --no-progress "$@" >"$OUT/gen_${name}_$d.jsonl" 2>"$OUT/gen_${name}_$d.err"
  }
  for f in ct_fp8_channel_dynamic ct_fp8_tensor_static fp8_dynamic fp8_static; do
    "$B/pl-mkmodel" --preset llama-quant --quant "$f" --out "$M/$f" >/dev/null || { echo "mkmodel $f failed"; continue; }
    gen "$f" "$M/$f" cpu
    gen "$f" "$M/$f" cuda
    summary+="$f: $(python3 "$ROOT/tools/cmp_greedy.py" "$OUT/gen_${f}_cpu.jsonl" "$OUT/gen_${f}_cuda.jsonl")"$'\n'
  done
  "$B/pl-mkmodel" --preset llama-quant --out "$M/plain" >/dev/null
  gen online "$M/plain" cpu --quantization fp8
  gen online "$M/plain" cuda --quantization fp8
  summary+="--quantization fp8: $(python3 "$ROOT/tools/cmp_greedy.py" "$OUT/gen_online_cpu.jsonl" "$OUT/gen_online_cuda.jsonl")"$'\n'
  gen kv8 "$M/plain" cpu --kv-cache-dtype fp8
  gen kv8 "$M/plain" cuda --kv-cache-dtype fp8
  summary+="--kv-cache-dtype fp8: $(python3 "$ROOT/tools/cmp_greedy.py" "$OUT/gen_kv8_cpu.jsonl" "$OUT/gen_kv8_cuda.jsonl")"$'\n'
  echo "==== llama-quant FP8, cuda vs cpu greedy"; printf "%s" "$summary"
  grep -h -m2 "error\|failed" "$OUT"/gen_*_cuda.err
fi
if [[ $STEPS == *4* ]]; then
  BM=$ROOT/bench/models
  bench() { # name model extra-args...
    local name=$1 model=$2; shift 2
    PAGELLM_LOG_LEVEL=info timeout 150 "$B/bench_throughput" --model "$BM/$model" --load-format dummy --device cuda \
      --warmup 1 "$@" >"$OUT/$name.log" 2>&1
    echo "$name: $(awk '/output tokens\/s/ {print $3}' "$OUT/$name.log") output tok/s" \
      "($(grep -m1 -o 'weights [0-9.]* MiB ([a-z0-9]*)' "$OUT/$name.log" || true);" \
      "$(grep -m1 -o '= [0-9]* tokens ([0-9.]* KiB/token[^)]*)' "$OUT/$name.log" || true))"
  }
  echo "==== figures (dummy weights, cuda)"
  bench s2_8b_bf16 llama-3-8b --num-prompts 1 --input-len 128 --output-len 256
  bench s2_8b_fp8 llama-3-8b-fp8 --num-prompts 1 --input-len 128 --output-len 256
  bench s2_8b_kv8 llama-3-8b --num-prompts 1 --input-len 128 --output-len 256 --kv-cache-dtype fp8
  if [ "${S1:-1}" = 1 ]; then
    for v in "s1_8b_bf16 llama-3-8b" "s1_8b_fp8 llama-3-8b-fp8" "s1_8b_kv8 llama-3-8b --kv-cache-dtype fp8"; do
      # shellcheck disable=SC2086
      bench $v --num-prompts "${S1_PROMPTS:-256}" --input-len 512 --output-len 256 \
        --max-num-seqs 256 --max-num-batched-tokens 8192
    done
  fi
fi
