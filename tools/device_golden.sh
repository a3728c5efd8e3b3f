#!/usr/bin/env bash
# device_golden.sh -- makes the transformers golden fixtures on the GPU machine (device tool).
#
# The machine has torch + transformers 5 and no network; the tiny presets are written by
# pl-mkmodel, built on the development machine and carried in .carry/bin with the shared
# libraries the GPU image lacks in .carry/libs (jansson, pcre2), e.g.
#   mkdir -p .carry/bin .carry/libs && cp build/pl-mkmodel .carry/bin/ &&
#   cp -L /lib/x86_64-linux-gnu/libjansson.so.4 /lib/x86_64-linux-gnu/libpcre2-8.so.0 .carry/libs/
# (without them tools/golden_refs.py builds pl-mkmodel with CMake).
# Writes $OUT/golden/<preset>.json for the families in $FAMILIES (default: the families
# added after the first 13 fixtures); copy them to tests/fixtures/golden/ and commit.
# CPU float32 with eager attention, as the existing fixtures: about a minute.
# Usage: OUT=DIR bash tools/device_golden.sh   (env FAMILIES=phi3,gemma2,... to choose)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_golden_out}
FAMILIES=${FAMILIES:-phi3,gemma2,gemma3_text,mixtral,qwen2_moe,qwen3_moe}
mkdir -p "$OUT/golden"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:${LD_LIBRARY_PATH:-}
mk=${PL_MKMODEL:-}
[ -z "$mk" ] && [ -x "$ROOT/.carry/bin/pl-mkmodel" ] && mk=$ROOT/.carry/bin/pl-mkmodel
args=()
[ -n "$mk" ] && args=(--mkmodel "$mk")
start=$(date +%s)
python3 "$ROOT/tools/golden_refs.py" --family "$FAMILIES" --out "$OUT/golden" "${args[@]}" \
    2>&1 | tee "$OUT/golden_refs.log"
echo "device_golden: $(ls "$OUT/golden" | wc -l) fixtures in $OUT/golden, $(( $(date +%s) - start )) s"
