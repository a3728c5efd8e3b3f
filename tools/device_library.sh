#!/usr/bin/env bash
# device_library.sh -- libpagellm.so with the CUDA backend, used as an outside program uses it,
# on the GPU machine (the device tool). Two steps:
#
#   tools/device_library.sh prepare    # here, after ./scripts/build.sh build (with nvcc):
#                                      # installs the library into .carry/lib-prefix, builds
#                                      # examples/c against it (pkg-config), and copies the
#                                      # binaries and the shared libraries they need to .carry/
#   tools/device_library.sh            # on the GPU machine, with .carry carried over
#
# On the device: (1) the out-of-tree example (examples/c/stream.c, dynamically linked against
# the installed libpagellm.so.0) on the tiny default model with --device auto, i.e. CUDA:
# streamed deltas must equal pl_llm_generate's output; (2) `pagellm generate --device cuda`
# greedy on the golden llama preset with CUDA graphs (default), with --enforce-eager and with
# PAGELLM_CUDA_GEMV=0 (cuda_cublas_only): the same tokens. Logs under $OUT, a summary last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C=$ROOT/.carry

if [ "${1:-}" = prepare ]; then
  set -e
  rm -rf "$C/lib-prefix" "$C/libbin" && mkdir -p "$C/libbin" "$C/libs"
  cmake --install "$ROOT/build" --prefix "$C/lib-prefix" >/dev/null
  pc=$(dirname "$(find "$C/lib-prefix" -name pagellm.pc)")
  rm -rf "$C/ex" && cp -r "$ROOT/examples/c" "$C/ex"
  PKG_CONFIG_PATH=$pc make -C "$C/ex" >/dev/null
  cp "$C/ex/stream" "$ROOT/build/pagellm" "$ROOT/build/pl-mkmodel" "$C/libbin/"
  rm -f "$C/lib-prefix/lib/libpagellm.a" # not needed there; keeps the carry small
  # the libraries the GPU image may lack (not libc, CUDA or the C++ runtime)
  for b in "$C/libbin/"*; do
    ldd "$b" | awk '/=> \// {print $3}'
  done | sort -u | grep -vE '/(libc|libm|libdl|libpthread|librt|ld-linux|libcuda|libcudart|libcublas|libcublasLt|libstdc\+\+|libgcc_s)[.-]' |
    grep -v "$C" | while read -r l; do cp -L "$l" "$C/libs/"; done
  du -sh "$C"
  exit 0
fi

OUT=${OUT:-/tmp/pl_device_library}
mkdir -p "$OUT"
B=$C/libbin
export LD_LIBRARY_PATH=$C/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PAGELLM_LOG_LEVEL=warn
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
summary=""
M=/tmp/pl_models
"$B/pl-mkmodel" --preset default --out "$M/default" >/dev/null
"$B/pl-mkmodel" --preset llama --out "$M/llama" >/dev/null

# 1. the outside program on CUDA, against the installed library
ldd "$B/stream" | grep pagellm >"$OUT/stream_ldd.txt"
if timeout 120 "$B/stream" "$M/default" "The capital of France is" >"$OUT/stream.log" 2>&1; then
  summary+="stream example on cuda: ok ($(tail -1 "$OUT/stream.log"))"$'\n'
else
  summary+="stream example on cuda: FAILED (rc $?, $OUT/stream.log)"$'\n'
fi
grep -q "$C/lib-prefix" "$OUT/stream_ldd.txt" || summary+="  (note: loaded $(cat "$OUT/stream_ldd.txt"))"$'\n'

# 2. enforce_eager / cuda_cublas_only give the same greedy tokens
gen() { timeout 120 "$B/pagellm" generate --model "$M/llama" --device cuda --temperature 0 \
          --max-tokens 48 --ignore-eos --prompt-ids 1,2,3,4,5 --prompt-ids 9,8,7 --json --no-progress "$@"; }
gen >"$OUT/graphs.json" 2>"$OUT/graphs.log"
gen --enforce-eager >"$OUT/eager.json" 2>"$OUT/eager.log"
PAGELLM_CUDA_GEMV=0 gen >"$OUT/cublas.json" 2>"$OUT/cublas.log"
ids() { python3 -c "import json,sys; print([json.loads(l)['outputs'][0]['token_ids'] for l in open(sys.argv[1])])" "$1" 2>/dev/null; }
g=$(ids "$OUT/graphs.json"); e=$(ids "$OUT/eager.json"); u=$(ids "$OUT/cublas.json")
[ -n "$g" ] && [ "$g" = "$e" ] && summary+="--enforce-eager: same tokens as graphs: ok"$'\n' ||
  summary+="--enforce-eager: DIFFERENT or failed (see $OUT/*.log)"$'\n'
[ -n "$g" ] && [ "$g" = "$u" ] && summary+="PAGELLM_CUDA_GEMV=0: same tokens: ok"$'\n' ||
  summary+="PAGELLM_CUDA_GEMV=0: DIFFERENT or failed (near ties can flip; see $OUT/*.json)"$'\n'
printf '%s' "$summary" | tee "$OUT/summary.txt"
