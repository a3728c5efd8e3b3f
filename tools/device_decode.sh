#!/usr/bin/env bash
# device_decode.sh -- decode-attention checks and timing on the GPU machine (device tool).
#
# From a carried folder holding bin/test_cuda_parity (built on the development
# machine): the attention parity cases, the decode timing table
# (test_cuda_parity --bench-decode) once per PL_DEC_VARIANTS entry (plus a
# repeat of the first, to show the run-to-run spread), then compute-sanitizer
# racecheck and memcheck over the attention cases. FULL=1 also runs the whole
# parity test (every op + golden fixtures; needs PL_SOURCE_DIR) and --bench.
# Logs go to $OUT; a short table is printed last.
# PL_DEC_VARIANT=v is exported to each run: a tuning build may read it to pick a
# kernel variant (the committed kernel has one, so the runs are repeats).
# Usage: bash tools/device_decode.sh DIR   (DIR holds bin/; env PL_DEC_VARIANTS="0 1")
set -uo pipefail
DIR=$(cd "${1:-.}" && pwd)
OUT=${OUT:-/tmp/pl_decode_out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
BIN=$DIR/bin/test_cuda_parity
VARIANTS=${PL_DEC_VARIANTS:-0}

nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu --format=csv >"$OUT/gpu.txt" 2>&1
timeout 120 "$BIN" --attention >"$OUT/parity_attention.log" 2>&1
echo "parity --attention rc $?" >"$OUT/summary.txt"
first=
for v in $VARIANTS; do
    PL_DEC_VARIANT=$v timeout 60 "$BIN" --attention >"$OUT/parity_attention_v$v.log" 2>&1
    echo "parity --attention v$v rc $?" >>"$OUT/summary.txt"
    PL_DEC_VARIANT=$v timeout 60 "$BIN" --bench-decode >"$OUT/bench_v$v.log" 2>&1
    echo "bench v$v rc $?" >>"$OUT/summary.txt"
    [ -z "$first" ] && first=$v
done
PL_DEC_VARIANT=$first timeout 60 "$BIN" --bench-decode >"$OUT/bench_v${first}_again.log" 2>&1
if command -v compute-sanitizer >/dev/null; then
    timeout "${RACECHECK_TIMEOUT:-100}" compute-sanitizer --tool racecheck "$BIN" --attention >"$OUT/racecheck.log" 2>&1
    echo "racecheck rc $?" >>"$OUT/summary.txt"
    timeout "${MEMCHECK_TIMEOUT:-60}" compute-sanitizer --tool memcheck --leak-check no "$BIN" --attention >"$OUT/memcheck.log" 2>&1
    echo "memcheck rc $?" >>"$OUT/summary.txt"
fi
if [ "${FULL:-0}" = 1 ]; then
    timeout 120 "$BIN" >"$OUT/parity_full.log" 2>&1
    echo "parity full rc $?" >>"$OUT/summary.txt"
    timeout 60 "$BIN" --bench >"$OUT/bench_full.log" 2>&1
    echo "bench full rc $?" >>"$OUT/summary.txt"
fi

echo "==== gpu ===="; cat "$OUT/gpu.txt"
echo "==== sanitizers ===="
grep -hE "ERROR SUMMARY|RACECHECK SUMMARY|hazard" "$OUT"/racecheck.log "$OUT"/memcheck.log 2>/dev/null | sort | uniq -c | head -12
echo "==== parity ===="
grep -hE "CHECK failed|REQUIRE failed|FAIL|max rel err|passed|golden on cuda|top-2" "$OUT"/parity_*.log | head -40
echo "==== summary ===="; cat "$OUT/summary.txt"
[ -f "$OUT/bench_full.log" ] && grep -E "^(matmul|attention prefill)" "$OUT/bench_full.log"
echo "==== decode timing: us and GB/s per variant (${VARIANTS}; last column: v$first again) ===="
logs=""
for v in $VARIANTS; do logs="$logs $OUT/bench_v$v.log"; done
logs="$logs $OUT/bench_v${first}_again.log"
awk '/^attention decode/ { key = FNR; lab[key] = $0; sub(/^attention decode /, "", lab[key]); sub(/ +[0-9.]+ us .*$/, "", lab[key]);
        val[key] = val[key] sprintf(" | %7.1f %5.0f", $(NF-3), $(NF-1)); if (key > n) n = key }
     END { for (k = 1; k <= n; k++) if (k in lab) printf "%-46s%s\n", lab[k], val[k] }' $logs
