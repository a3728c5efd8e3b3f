#!/usr/bin/env bash
# device_e2e.sh -- end-to-end CUDA checks on the GPU machine (device tool), from binaries
# built on the development machine and carried in .carry/bin with the shared libraries the
# GPU image lacks in .carry/libs (jansson, pcre2, utf8proc).
#   1. test_cuda_parity --ops: every op against the CPU backend;
#   2. the golden presets through `pagellm generate --device cuda` against `--device cpu`
#      (the CPU path equals the transformers references exactly): greedy tokens compared;
#   3. bench_throughput on bench-100m, cuda against cpu, in the same call.
# Logs under $OUT; a short table last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=$ROOT/.carry/bin
OUT=${OUT:-/tmp/pl_e2e}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT PAGELLM_LOG_LEVEL=warn
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 240 "$B/test_cuda_parity" --ops >"$OUT/parity_ops.log" 2>&1
echo "parity --ops rc=$? ($(tail -1 "$OUT/parity_ops.log"))"
M=/tmp/pl_models
summary=""
for p in llama llama-mha-tied llama3-rope llama-f16 llama-sharded mistral-swa qwen2 qwen2-swa qwen3 llama-yarn-rope llama-linear-rope; do
  "$B/pl-mkmodel" --preset "$p" --out "$M/$p" >/dev/null || { echo "mkmodel $p failed"; continue; }
  args=$(python3 -c "
import json,sys
f=json.load(open('$ROOT/tests/fixtures/golden/$p.json'))
print(' '.join('--prompt-ids '+','.join(map(str,q['prompt_token_ids'])) for q in f['prompts']))
print(max(q['max_tokens'] for q in f['prompts']))")
  ids=$(echo "$args" | head -1); n=$(echo "$args" | tail -1)
  for d in cpu cuda; do
    "$B/pagellm" generate --model "$M/$p" $ids --max-tokens "$n" --temperature 0 --ignore-eos \
      --max-model-len 256 --device $d --json --no-progress >"$OUT/gen_${p}_$d.jsonl" 2>"$OUT/gen_${p}_$d.err"
  done
  r=$(python3 "$ROOT/tools/cmp_greedy.py" "$OUT/gen_${p}_cpu.jsonl" "$OUT/gen_${p}_cuda.jsonl")
  summary+="$p: $r"$'\n'
done
"$B/pl-mkmodel" --preset bench-100m --out "$M/bench-100m" >/dev/null
for d in cpu cuda; do
  timeout 200 "$B/bench_throughput" --model "$M/bench-100m" --device $d --num-prompts 64 \
    --input-len 128 --output-len 64 >"$OUT/tput_$d.log" 2>&1
done
echo "==== golden presets, cuda vs cpu greedy"; printf "%s" "$summary"
echo "==== bench_throughput bench-100m, 64 x 128/64"; tail -1 "$OUT/tput_cpu.log"; tail -1 "$OUT/tput_cuda.log"
