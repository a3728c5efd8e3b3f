#!/usr/bin/env bash
# llamacpp_gpu.sh -- pagellm beside llama.cpp on the GPU, in ONE device call (about 6-7 minutes
# on an H100): builds llama.cpp from its source (CUDA, sm_90, only llama-bench and
# llama-batched-bench, -j16) while bench/gguf_write.py writes an f16 GGUF of the Llama-3-8B
# shape (random weights, the Llama-3 tokenizer's metadata); pagellm's rows run first, then
# llama.cpp's, one process at a time:
#   batch-1 decode     llama-bench tg256 (flash attention on, all layers on the GPU) and
#                      llama-batched-bench B=1 | pagellm 1 x 512/256 (bf16 dummy weights)
#   batch 256          llama-batched-bench 256 x 512/256 | pagellm 256 x 512/256, output tok/s
#                      including prefill
#   32K prompt         llama-bench pp32768 (time to first token = 32768 / its rate) | pagellm
#                      time to the first token of one 32,768-token prompt
#   decode at 32K      llama-bench tg128 at depth 32768 | pagellm decode after that prompt
# Prints the table last; logs under $OUT.
#
# Prepare on the development machine:  bash bench/carry_prep.sh build --peer LLAMA_CPP_BUNDLE
#   (a git bundle of llama.cpp's source; the project keeps one beside its checkout)
# Device run:  OUT=$OUT bash bench/llamacpp_gpu.sh
#              carry: [.carry/bin, .carry/libs, .carry/tok, .carry/peers]
# Dry run on a CPU (tiny shape, a CPU build of llama.cpp):  SMALL=1 DEVICE=cpu BIN=build
#   PEER=<bundle or tar.gz> LLAMACPP_WORK=/tmp/pl_llamacpp bash bench/llamacpp_gpu.sh
# Env: PEER (.carry/peers/llama.cpp-src.tar.gz), LLAMACPP_WORK (/tmp/pl_llamacpp: the source
#      and builds; a finished build there is reused), JOBS (16), PYTHON (python3, with numpy),
#      BUDGET (570 s: every step's timeout ends before it), PREP_ONLY (1: unpack, GGUF and
#      build only, no benchmarks: a previous call's background work).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_llamacpp_gpu}
BUDGET=${BUDGET:-570}
. "$ROOT/bench/device_env.sh"
PEER=${PEER:-$ROOT/.carry/peers/llama.cpp-src.tar.gz}
WORK=${LLAMACPP_WORK:-/tmp/pl_llamacpp}
PY=${PYTHON:-python3}
mkdir -p "$WORK"
if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/device.txt" 2>&1
  NGL=(-ngl 99)
else
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores" >"$OUT/device.txt"
  NGL=()
fi
git -C "$ROOT" rev-parse --short HEAD >"$OUT/commit.txt" 2>/dev/null || echo unknown >"$OUT/commit.txt"

# the model folder: the 8B config (tiny with SMALL=1) and the tokenizer
M=$WORK/llama-3-8b$([ "$SMALL" = 1 ] && echo -small)
mkdir -p "$M"
$PY - "$ROOT/bench/models/llama-3-8b/config.json" "$M/config.json" "$SMALL" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
if sys.argv[3] == "1":
    c.update(num_hidden_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
             num_key_value_heads=2)
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" "$M/" || { echo "no tokenizer in $TOK"; exit 1; }
if [ "$SMALL" = 1 ]; then
  IN=64 OUTL=16 NB=8 CTX=1024 TG=16
else
  IN=512 OUTL=256 NB=256 CTX=32768 TG=128
fi

# ---- pagellm first, same shapes (bf16 dummy weights): a slow build cannot starve its rows
if [ "${PREP_ONLY:-0}" != 1 ]; then
note "pagellm"
ENG=(--device "$DEV" --load-format dummy)
timeout $(lim 90) "$B/bench_throughput" --model "$M" "${ENG[@]}" --warmup 1 --num-prompts 1 --input-len $IN \
  --output-len $OUTL >"$OUT/pl_b1.log" 2>&1
timeout $(lim 120) "$B/bench_throughput" --model "$M" "${ENG[@]}" --warmup 1 --num-prompts $NB --input-len $IN \
  --output-len $OUTL --max-num-seqs $NB --max-num-batched-tokens 8192 >"$OUT/pl_b$NB.log" 2>&1
VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 timeout $(lim 120) "$B/bench_throughput" --model "$M" "${ENG[@]}" \
  --warmup 1 --ttft 1 --num-prompts 1 \
  --input-len $CTX --output-len $(( TG + 1 )) --max-num-seqs 8 --max-num-batched-tokens 8192 \
  >"$OUT/pl_ctx.log" 2>&1
fi

# ---- the source, then the GGUF (background) beside the build
note "unpack + GGUF + build"
bash "$ROOT/bench/llamacpp_build.sh" "$PEER" "$WORK" src >/dev/null || exit 1
GGUF=$WORK/llama-3-8b$([ "$SMALL" = 1 ] && echo -small)-f16.gguf
gguf_pid=
if [ ! -s "$GGUF" ]; then
  $PY "$ROOT/bench/gguf_write.py" --config "$M/config.json" --tokenizer "$M" --out "$GGUF.tmp" \
    --gguf-py "$WORK/src/gguf-py" >"$OUT/gguf.log" 2>&1 && mv "$GGUF.tmp" "$GGUF" &
  # (the build below takes every core for minutes; the writer needs one and the disk)
  gguf_pid=$!
fi
bin=$(timeout $(lim 480) bash "$ROOT/bench/llamacpp_build.sh" "$PEER" "$WORK" "$DEV" "${JOBS:-16}" 2>"$OUT/build.err" | tail -1)
[ -n "$gguf_pid" ] && wait $gguf_pid
note "built: ${bin:-FAILED ($(tail -3 "$OUT/build.err" | tr '\n' ' '))}; gguf: $(tail -1 "$OUT/gguf.log" 2>/dev/null)"
cp "$WORK"/build-"$DEV".log "$OUT/" 2>/dev/null
# PREP_ONLY=1: only the source, the GGUF and the build (in the background of another call's
# GPU work, on a machine that stays warm for the next call; LLAMACPP_WORK inside the
# checkout keeps them there)
[ "${PREP_ONLY:-0}" = 1 ] && { note "prepared"; exit 0; }

# ---- llama.cpp
if [ -n "$bin" ] && [ -x "$bin/llama-bench" ] && [ -s "$GGUF" ]; then
  note "llama-bench 512/256"
  timeout $(lim 120) "$bin/llama-bench" -m "$GGUF" "${NGL[@]}" -fa 1 -p $IN -n $OUTL -r 3 -o jsonl \
    >"$OUT/lb_short.jsonl" 2>"$OUT/lb_short.log"
  note "llama-batched-bench B=1,$NB"
  timeout $(lim 180) "$bin/llama-batched-bench" -m "$GGUF" "${NGL[@]}" -fa on -c $(( NB * (IN + OUTL) + 256 )) \
    -b 2048 -ub 512 -npp $IN -ntg $OUTL -npl 1,$NB --output-format jsonl >"$OUT/bb.log" 2>&1
  note "llama-bench pp$CTX, tg$TG at depth $CTX"
  timeout $(lim 150) "$bin/llama-bench" -m "$GGUF" "${NGL[@]}" -fa 1 -p $CTX -n 0 -ub 512,2048 -r 1 -o jsonl \
    >"$OUT/lb_pp.jsonl" 2>"$OUT/lb_pp.log"
  timeout $(lim 150) "$bin/llama-bench" -m "$GGUF" "${NGL[@]}" -fa 1 -p 0 -n $TG -d $CTX -r 2 -o jsonl \
    >"$OUT/lb_depth.jsonl" 2>"$OUT/lb_depth.log"
fi

note "done"

$PY - "$OUT" "$IN" "$OUTL" "$NB" "$CTX" "$TG" <<'PY' | tee "$OUT/table.txt"
import json, os, sys
out, IN, OUTL, NB, CTX, TG = sys.argv[1], *map(int, sys.argv[2:])

def jl(name):
    p = os.path.join(out, name)
    rows = []
    if os.path.exists(p):
        for line in open(p):
            line = line.strip()
            if line.startswith("{"):
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass
    return rows

def num(log, key):
    p = os.path.join(out, log)
    if os.path.exists(p):
        for line in open(p):
            if key in line:
                try:
                    return float(line.split()[-1])
                except ValueError:
                    return None
    return None

def lb(name, **want):
    best = None
    for r in jl(name):
        if all(r.get(k) == v for k, v in want.items()):
            if best is None or r.get("avg_ts", 0) > best.get("avg_ts", 0):
                best = r
    return best or {}

def f(x, d=1):
    return "-" if x is None else f"{x:,.{d}f}"

def ratio(a, b, inverse=False):
    if not a or not b:
        return "-"
    return f"{(b / a if inverse else a / b):.2f}x"

tg = lb("lb_short.jsonl", n_prompt=0, n_gen=OUTL).get("avg_ts")
bb = {r.get("pl"): r for r in jl("bb.log")}
bb1 = bb.get(1, {}).get("speed_tg")
bbn = bb.get(NB, {})
bbn_out = NB * OUTL / bbn["t"] if bbn.get("t") else None
pp = lb("lb_pp.jsonl", n_prompt=CTX)
pp_ttft = CTX / pp["avg_ts"] if pp.get("avg_ts") else None
dtg = lb("lb_depth.jsonl", n_gen=TG, n_depth=CTX).get("avg_ts")
pl_b1 = num("pl_b1.log", "output tokens/s")
pl_bn = num("pl_b%d.log" % NB, "output tokens/s")
pl_ttft = num("pl_ctx.log", "time to first token")
pl_dec = num("pl_ctx.log", "decode tokens/s after first")
dev = open(os.path.join(out, "device.txt")).read().strip()
commit = open(os.path.join(out, "commit.txt")).read().strip()
print(f"==== pagellm vs llama.cpp ({dev}; commit {commit}; llama.cpp f16 GGUF, flash attention on; pagellm bf16 dummy)")
print(f"{'scenario':<58} {'pagellm':>12} {'llama.cpp':>30} {'ratio':>7}")
rows = [
    (f"batch-1 decode (llama-bench tg{OUTL}; pagellm 1 x {IN}/{OUTL})", f(pl_b1),
     f"{f(tg)} (bench), {f(bb1)} (B=1)", ratio(pl_b1, tg)),
    (f"{NB} x {IN}/{OUTL}, output tok/s incl. prefill", f(pl_bn),
     f"{f(bbn_out)} (batched-bench)", ratio(pl_bn, bbn_out)),
    (f"one {CTX}-token prompt, time to first token (s)", f(pl_ttft, 3),
     f"{f(pp_ttft, 3)} (pp{CTX} {f(pp.get('avg_ts'))} tok/s, ub {pp.get('n_ubatch', '-')})",
     ratio(pl_ttft, pp_ttft, inverse=True)),
    (f"decode at {CTX} context, tok/s", f(pl_dec), f"{f(dtg)} (tg{TG} @ d{CTX})", ratio(pl_dec, dtg)),
]
for r in rows:
    print(f"{r[0]:<58} {r[1]:>12} {r[2]:>30} {r[3]:>7}")
PY
