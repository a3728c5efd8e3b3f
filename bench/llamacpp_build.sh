#!/usr/bin/env bash
# llamacpp_build.sh SOURCE WORK cpu|cuda|src [JOBS] -- builds llama.cpp, the benchmark peer,
# from a git bundle of its source (or the .tar.gz that bench/carry_prep.sh --peer makes
# from a clone of it): clones or unpacks SOURCE into WORK/src (once), configures
# WORK/build-<kind> and builds only llama-bench, llama-batched-bench and llama-quantize
# (static, Release; cuda: sm_90 with flash attention, the way the H100 runs it). Idempotent:
# a finished build is reused. Prints the directory holding the binaries on its last line (src:
# only unpacks, and prints the source directory).
# Used by bench/llamacpp_cpu.sh and bench/llamacpp_gpu.sh; never part of pagellm's build.
set -euo pipefail
bundle=$1 work=$2 kind=$3 jobs=${4:-$(nproc)}
src=$work/src build=$work/build-$kind
mkdir -p "$work"
if [ ! -f "$src/CMakeLists.txt" ]; then
  rm -rf "$src"
  case $bundle in
    *.tar.gz) mkdir -p "$src" && tar -xzf "$bundle" -C "$src" ;;
    *) git clone -q "$bundle" "$src" 2>/dev/null ;;
  esac || { echo "llamacpp_build: cannot unpack $bundle" >&2; exit 1; }
fi
if [ "$kind" = src ]; then
  echo "$src"
  exit 0
fi
if [ -x "$build/bin/llama-bench" ] && [ -x "$build/bin/llama-batched-bench" ] &&
   [ -x "$build/bin/llama-quantize" ]; then
  echo "$build/bin"
  exit 0
fi
command -v cmake >/dev/null || { echo "llamacpp_build: cmake is missing" >&2; exit 1; }
gen=()
command -v ninja >/dev/null && gen=(-G Ninja)
args=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF
      -DLLAMA_BUILD_TOOLS=ON -DLLAMA_OPENSSL=OFF)
if [ "$kind" = cuda ]; then
  export PATH=/usr/local/cuda/bin:$PATH
  args+=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF)
else
  args+=(-DGGML_NATIVE=ON) # the peer at its best on this CPU (AVX512-BF16 where present)
fi
[ -f "$build/CMakeCache.txt" ] ||
  cmake -S "$src" -B "$build" "${gen[@]}" "${args[@]}" >"$work/configure-$kind.log" 2>&1 ||
  { tail -30 "$work/configure-$kind.log" >&2; exit 1; }
cmake --build "$build" --target llama-bench llama-batched-bench llama-quantize -j"$jobs" >"$work/build-$kind.log" 2>&1 ||
  { tail -30 "$work/build-$kind.log" >&2; exit 1; }
echo "$build/bin"
