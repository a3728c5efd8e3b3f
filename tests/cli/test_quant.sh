#!/usr/bin/env bash
# test_quant.sh -- quantized models through the commands (docs/quantization.md):
#   1. `generate` on a pl-mkmodel --quant model gives the dense dequantized model's tokens,
#      for an int4 (AWQ), a GPTQ act-order and an FP8 format;
#   2. --quantization fp8 quantizes an unquantized model at load; a method the checkpoint
#      does not have is refused; an unknown value is a usage error (exit 2);
#   3. --kv-cache-dtype fp8 runs on the CPU backend (the memory plan names the e4m3 cache);
#   4. the worker's QUANTIZATION / KV_CACHE_DTYPE are checked like the flags.
set -euo pipefail
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${PL_BINARY_DIR:-$src/build}
PAGELLM=${PAGELLM:-$bin/pagellm}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "test_quant: FAIL: $*"; exit 1; }
gen() { "$PAGELLM" generate --device cpu --threads 1 --no-progress --max-tokens 6 \
          --prompt-ids 1,17,230,5 "$@" 2>"$dir/err"; }

for f in awq_g128 gptq_g32_act ct_fp8_channel_dynamic; do
  "$bin/pl-mkmodel" --preset llama-quant --quant "$f" --out "$dir/$f" --dequant-out "$dir/$f.dense" \
    >/dev/null
  q=$(gen --model "$dir/$f") || fail "$f: $(cat "$dir/err")"
  d=$(gen --model "$dir/$f.dense") || fail "$f dense: $(cat "$dir/err")"
  [ "$q" = "$d" ] || fail "$f: '$q' differs from the dequantized model's '$d'"
done

"$bin/pl-mkmodel" --preset llama-quant --out "$dir/plain" >/dev/null
gen --model "$dir/plain" --quantization fp8 >/dev/null || fail "--quantization fp8: $(cat "$dir/err")"
grep -q "FP8 quantized at load" "$dir/err" || fail "--quantization fp8 log: $(cat "$dir/err")"
set +e
gen --model "$dir/plain" --quantization awq >/dev/null; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "the checkpoint is not quantized" "$dir/err" ||
  fail "--quantization awq on a bf16 model: rc $rc, $(cat "$dir/err")"
set +e
gen --model "$dir/awq_g128" --quantization gptq >/dev/null; rc=$?
set -e
[ $rc -ne 0 ] && grep -q "does not match the checkpoint" "$dir/err" ||
  fail "--quantization gptq on AWQ: rc $rc, $(cat "$dir/err")"
set +e
gen --model "$dir/plain" --quantization int3 >/dev/null; rc=$?
set -e
[ $rc -eq 2 ] && grep -q -- "--quantization 'int3' is not one of" "$dir/err" ||
  fail "--quantization int3: rc $rc, $(cat "$dir/err")"
gen --model "$dir/plain" --kv-cache-dtype fp8 --kv-cache-bytes 1048576 >/dev/null ||
  fail "--kv-cache-dtype fp8: $(cat "$dir/err")"
grep -q "KiB/token, float8_e4m3fn)" "$dir/err" || fail "memory plan of an fp8 KV cache: $(cat "$dir/err")"
set +e
gen --model "$dir/plain" --kv-cache-dtype fp8_e5m2 >/dev/null; rc=$?
set -e
[ $rc -eq 2 ] || fail "--kv-cache-dtype fp8_e5m2: rc $rc"

set +e
QUANTIZATION=bogus "$PAGELLM" worker --model "$dir/plain" --test_input '{}' >/dev/null 2>"$dir/err"
rc=$?
KV_CACHE_DTYPE=fp8_e5m2 "$PAGELLM" worker --model "$dir/plain" --test_input '{}' >/dev/null \
  2>"$dir/err2"
rc2=$?
set -e
[ $rc -ne 0 ] && grep -q "QUANTIZATION='bogus'" "$dir/err" || fail "QUANTIZATION=bogus: $(cat "$dir/err")"
[ $rc2 -ne 0 ] && grep -q "KV_CACHE_DTYPE='fp8_e5m2'" "$dir/err2" ||
  fail "KV_CACHE_DTYPE=fp8_e5m2: $(cat "$dir/err2")"
echo "test_quant: passed"
