#!/usr/bin/env bash
# device_gemv.sh -- the skinny-GEMM (kernels/gemv.cu) timing and checks on the GPU machine.
# Three processes, so that a failed check (the backend's sticky error) voids nothing else:
#   test_cuda_parity --bench-gemv   cuBLASLt vs GEMV timing table (first: nothing can void it)
#   test_cuda_parity --gemv         GEMV parity vs the CPU backend + golden fixtures on CUDA
#   compute-sanitizer memcheck test_cuda_parity --gemv-check   (with the time left)
# Env: BIN (test binary, default build/test_cuda_parity), OUT (log folder), BUDGET_S (230),
# PL_SOURCE_DIR (a source tree with tests/fixtures/golden).
cd "$(dirname "$0")/.."
B=${BIN:-build/test_cuda_parity}
OUT=${OUT:-/tmp/gemv_out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
t0=$(date +%s)
budget=${BUDGET_S:-230}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
timeout 60 "$B" --bench-gemv >"$OUT/bench.log" 2>&1
echo "bench rc $? t=$(($(date +%s) - t0))" >>"$OUT/rcs"
timeout 100 "$B" --gemv >"$OUT/gemv.log" 2>&1
echo "gemv rc $? t=$(($(date +%s) - t0))" >>"$OUT/rcs"
left=$((budget - $(date +%s) + t0))
if [ "$left" -gt 20 ]; then
    timeout "$left" compute-sanitizer --tool memcheck --leak-check no "$B" --gemv-check \
        >"$OUT/memcheck.log" 2>&1
    echo "memcheck rc $? t=$(($(date +%s) - t0))" >>"$OUT/rcs"
fi
echo "==== rcs"; cat "$OUT/rcs"
echo "==== failures"; grep -hE "CHECK failed|REQUIRE failed|FAIL" "$OUT/bench.log" "$OUT/gemv.log" | head -20
echo "==== memcheck"; grep -E "ERROR SUMMARY|Invalid|passed, " "$OUT/memcheck.log" 2>/dev/null | head -6
cat "$OUT/gpu.txt"
grep -E "^---- gemv parity|^golden on cuda|passed, " "$OUT/gemv.log"
sed -n '/^---- skinny GEMM timing/,$p' "$OUT/bench.log"
