#!/usr/bin/env bash
# build-runtime.sh [BUILD_DIR] [OUT_DIR] -- builds pagellm and assembles what the
# container's runtime stage holds (docker/Dockerfile copies OUT_DIR to /opt/pagellm):
#   OUT_DIR/bin/pagellm            the binary
#   OUT_DIR/lib/*.so*              every shared library it needs (ldd) that the
#                                  runtime base image does not provide
#                                  (docker/base-libs.txt)
#   OUT_DIR/runtime-files.txt      the list of those files
# Then checks the result: every library ldd names is either in OUT_DIR/lib or in
# the base list, and none is "not found". CI runs this (tests/cli/test_build_runtime.sh,
# with PL_SKIP_BUILD=1 and PAGELLM pointing at an already built binary).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
out=${2:-$root/out/runtime}
if [ "${PL_SKIP_BUILD:-0}" != 1 ]; then
  # only the binary: tests, tools and benchmarks are not part of the image
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=${BUILD_TYPE:-RelWithDebInfo} >/dev/null
  cmake --build "$build" --target pagellm -j"$(nproc)"
fi
bin=${PAGELLM:-$build/pagellm}
[ -x "$bin" ] || { echo "build-runtime: no binary at $bin" >&2; exit 1; }
base="$root/docker/base-libs.txt"

in_base() {
  local name=$1 prefix
  while read -r prefix; do
    case "$prefix" in ''|'#'*) continue ;; esac
    case "$name" in "$prefix"*) return 0 ;; esac
  done <"$base"
  return 1
}

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib"
cp "$bin" "$out/bin/pagellm"
: >"$out/runtime-files.txt"
echo "bin/pagellm" >>"$out/runtime-files.txt"

# ldd lines: "libx.so.1 => /path/libx.so.1 (0x...)", "/lib64/ld-linux... (0x...)",
# "linux-vdso.so.1 (0x...)", or "libx.so.1 => not found".
missing=0
while read -r line; do
  name=$(echo "$line" | awk '{print $1}')
  path=$(echo "$line" | awk '$2 == "=>" {print $3}')
  soname=$(basename "$name")
  if echo "$line" | grep -q "not found"; then
    echo "build-runtime: $soname: not found" >&2
    missing=1
    continue
  fi
  in_base "$soname" && continue
  [ -n "$path" ] || { echo "build-runtime: $soname has no path" >&2; missing=1; continue; }
  cp -L "$path" "$out/lib/$soname"
  echo "lib/$soname" >>"$out/runtime-files.txt"
done < <(ldd "$bin")
[ "$missing" = 0 ] || exit 1

# check: resolve again with only the runtime lib directory added
while read -r line; do
  soname=$(basename "$(echo "$line" | awk '{print $1}')")
  in_base "$soname" && continue
  if [ ! -f "$out/lib/$soname" ]; then
    echo "build-runtime: $soname is needed but not in the runtime list" >&2
    exit 1
  fi
done < <(LD_LIBRARY_PATH="$out/lib" ldd "$out/bin/pagellm")
n=$(wc -l <"$out/runtime-files.txt")
size=$(du -sh "$out" | awk '{print $1}')
echo "build-runtime: $n files, $size in $out"
