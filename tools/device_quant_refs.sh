#!/usr/bin/env bash
# device_quant_refs.sh -- the transformers references of the quantized test models, on the
# machine with torch + transformers (the GPU machine: device tool), from pl-mkmodel built on
# the development machine and carried in .carry/bin (shared libraries the GPU image lacks in
# .carry/libs: jansson, pcre2), as tools/device_e2e.sh does.
#   1. tools/quant_refs.py --self-test;
#   2. tools/quant_refs.py for every pl-mkmodel --list-quant format: packs llama-quant,
#      checks its own numpy reading of each format against pl-mkmodel's dequantized model
#      bit for bit, runs transformers fp32 on the dense dequantized model;
# Fixtures land in $OUT/quant/<format>.json: copy them to tests/fixtures/quant/.
# Prepare (development machine):
#   ./scripts/build.sh build && mkdir -p .carry/bin .carry/libs &&
#   cp build/pl-mkmodel .carry/bin/ &&
#   cp /lib/x86_64-linux-gnu/libjansson.so.4 /lib/x86_64-linux-gnu/libpcre2-8.so.0 .carry/libs/
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_quant_refs}
mkdir -p "$OUT/quant"
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
MK=${PL_MKMODEL:-$ROOT/.carry/bin/pl-mkmodel}
[ -x "$MK" ] || MK=$ROOT/build/pl-mkmodel
python3 "$ROOT/tools/quant_refs.py" --self-test
time python3 "$ROOT/tools/quant_refs.py" --mkmodel "$MK" --out "$OUT/quant" --device cpu \
  ${FORMATS:+--formats "$FORMATS"} 2>&1 | tee "$OUT/quant_refs.log"
ls "$OUT/quant" | wc -l
