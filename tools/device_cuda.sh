#!/usr/bin/env bash
# device_cuda.sh -- the CUDA backend's checks on the GPU machine (device tool).
#
# Runs, from a carried copy of the tree: the parity test (every op against the
# CPU backend + the golden fixtures on CUDA), the timing table
# (test_cuda_parity --bench), compute-sanitizer memcheck over the whole test and
# racecheck over the op checks.
# Logs go to $OUT (the device tool's return folder); a short table is printed
# last. The test binary is built on the development machine and carried
# (build/test_cuda_parity plus .libs/ with the jansson / pcre2 shared objects
# the GPU image lacks); without it, the script builds with CMake, which needs
# jansson, pcre2 and utf8proc development files (e.g. .debs unpacked with
# `dpkg -x` into .deps/, found through PKG_CONFIG_PATH).
# Usage: bash tools/device_cuda.sh   (env: BENCH=0, MEMCHECK=0, RACECHECK=0 skip those parts)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_cuda_out}
mkdir -p "$OUT"
export PL_SOURCE_DIR=$ROOT
export LD_LIBRARY_PATH=$ROOT/.libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
BIN=$ROOT/build/test_cuda_parity

if [ ! -x "$BIN" ]; then
    if [ -d "$ROOT/.deps" ]; then
        export PKG_CONFIG_PATH=$(find "$ROOT/.deps" -type d -name pkgconfig | tr '\n' ':')
        export LD_LIBRARY_PATH=$(find "$ROOT/.deps" -type d -name 'x86_64-linux-gnu' | tr '\n' ':')$LD_LIBRARY_PATH
    fi
    cmake -S "$ROOT" -B "$ROOT/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$OUT/build.log" 2>&1 &&
        cmake --build "$ROOT/build" -j16 --target test_cuda_parity >>"$OUT/build.log" 2>&1 ||
        { tail -30 "$OUT/build.log"; exit 1; }
fi

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv >"$OUT/gpu.txt" 2>&1
timeout "${PARITY_TIMEOUT:-300}" "$BIN" >"$OUT/parity.log" 2>&1
parity_rc=$?
bench_rc=skipped
if [ "${BENCH:-1}" = 1 ]; then
    "$BIN" --bench >"$OUT/bench.log" 2>&1
    bench_rc=$?
fi
ms_rc=skipped
rc_rc=skipped
if [ "${MEMCHECK:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    timeout 300 compute-sanitizer --tool memcheck --leak-check no "$BIN" >"$OUT/memcheck.log" 2>&1
    ms_rc=$?
fi
if [ "${RACECHECK:-1}" = 1 ] && command -v compute-sanitizer >/dev/null; then
    timeout "${RACECHECK_TIMEOUT:-200}" compute-sanitizer --tool racecheck "$BIN" --ops >"$OUT/racecheck.log" 2>&1
    rc_rc=$?
fi

echo "==== failures / notes (parity.log) ===="
grep -E "CHECK failed|REQUIRE failed|FAIL|note:|bf16 error" "$OUT/parity.log" | head -60
echo "==== memcheck (rc $ms_rc) ===="
[ -f "$OUT/memcheck.log" ] && grep -E "ERROR SUMMARY|Invalid|passed, " "$OUT/memcheck.log" | head -10
echo "==== racecheck (rc $rc_rc) ===="
[ -f "$OUT/racecheck.log" ] && grep -E "ERROR SUMMARY|RACE|hazard|passed, " "$OUT/racecheck.log" | head -10
echo "==== gpu ===="
cat "$OUT/gpu.txt"
echo "==== parity (rc $parity_rc) ===="
sed -n '/^---- parity/,$p' "$OUT/parity.log"
echo "==== timing (rc $bench_rc) ===="
[ -f "$OUT/bench.log" ] && sed -n '/^---- timing/,$p' "$OUT/bench.log"
[ -f "$OUT/bench.log" ] && [ "$bench_rc" != 0 ] && tail -5 "$OUT/bench.log"
exit $parity_rc
