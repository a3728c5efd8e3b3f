#!/usr/bin/env bash
# device_round2.sh -- performance round 2 in ONE device call (about 7-8 minutes on an H100):
# docs/benchmarks.md's S4, S2, S1, S6, S3 and S7 on the Llama-3-8B shape (dummy bf16 weights,
# the Llama-3 tokenizer for the served runs), the model figures (Gemma-3-12B shape at batch 1
# against its bandwidth bound; the Qwen3-30B-A3B shape at batch 1 against its active-parameter
# bound and offline 1024 x 512/256), and the transformers baselines of the same shapes, all
# in the same call. Prints a short table last; logs and JSON lines under $OUT.
#
# Prepare on the development machine (a build with nvcc):  bash bench/carry_prep.sh build
# Device run:  OUT=$OUT bash bench/device_round2.sh     carry: [.carry/bin, .carry/libs, .carry/tok]
# Dry run on a CPU (tiny shapes and workloads, no transformers):  SMALL=1 DEVICE=cpu
#   BIN=build bash bench/device_round2.sh   (the Llama-3 tokenizer from .carry/tok or TOK=DIR)
#
# Env: BUDGET (seconds, 540): optional steps (the MoE transformers baseline, the profile) are
#      skipped when the time left is short; HF=0 skips every transformers baseline; FIGURES=0
#      skips the issue-13 figures; PROFILE=0 skips the per-op profile of S1 at 256 prompts;
#      ONLY="S2 S3 ..." runs only those steps (DEC S4 S2 S1 S6 S3 S7 FIG HF PROF).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_round2}
BUDGET=${BUDGET:-540}
. "$ROOT/bench/device_env.sh"
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
W=$(mktemp -d /tmp/pl_round2.XXXX)
trap 'rm -rf "$W"' EXIT
if [ "$DEV" = cuda ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/device.txt" 2>&1
else
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores" >"$OUT/device.txt"
fi
git -C "$ROOT" rev-parse --short HEAD >"$OUT/commit.txt" 2>/dev/null || echo unknown >"$OUT/commit.txt"

# ---- model folders: the bench/models configs (shrunk with SMALL=1), tokenizer beside the 8B
shape() { # shape SRC_DIR DST_DIR [tokenizer]
  mkdir -p "$2"
  python3 - "$1/config.json" "$2/config.json" "$SMALL" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
if sys.argv[3] == "1":  # a CPU dry run: the same architecture, tiny
    c.update(num_hidden_layers=2, hidden_size=256, intermediate_size=512, num_attention_heads=4,
             num_key_value_heads=2, head_dim=64)
    if "num_experts" in c:
        c.update(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128)
    if c.get("model_type") != "llama":
        c["vocab_size"] = 4096
    if "query_pre_attn_scalar" in c:
        c["query_pre_attn_scalar"] = 64
json.dump(c, open(sys.argv[2], "w"), indent=1)
PY
  if [ "${3:-}" = tokenizer ]; then
    cp "$TOK/tokenizer.json" "$TOK/tokenizer_config.json" "$2/" ||
      { echo "device_round2: no Llama-3 tokenizer in $TOK (bench/carry_prep.sh)"; exit 1; }
  fi
}
M=$W/llama-3-8b
shape "$ROOT/bench/models/llama-3-8b" "$M" tokenizer
shape "$ROOT/bench/models/gemma-3-12b" "$W/gemma-3-12b"
shape "$ROOT/bench/models/qwen3-30b-a3b" "$W/qwen3-30b-a3b"

# workloads (SMALL: minutes on a loaded 2-core CPU)
if [ "$SMALL" = 1 ]; then
  S1_N=16 S1_IN=64 S1_OUT=16 S2_OUT=16 S6_IN=8200 S6_OUT=5
  S3_IN=64 S3_OUT=8 S3_RUNS="4:8 16:8 inf:16"
  S7_ARGS="--conversations 6 --turns 3 --system-words 150 --user-words 10 --output-len 8 --clients 3"
  FIG_OUT=8 MOE_N=8 MOE_IN=32 MOE_OUT=8
else
  S1_N=1024 S1_IN=512 S1_OUT=256 S2_OUT=256 S6_IN=32768 S6_OUT=257
  S3_IN=512 S3_OUT=256 S3_RUNS="4:100 16:200 inf:1024"
  S7_ARGS="--conversations 200 --turns 5 --system-words 1000 --user-words 100 --output-len 128 --clients 64"
  FIG_OUT=256 MOE_N=1024 MOE_IN=512 MOE_OUT=256
fi
ENG=(--device "$DEV" --load-format dummy)
BT=$B/bench_throughput
num() { awk -v k="$2" 'index($0, k) { print $NF; exit }' "$1" 2>/dev/null; }

s4=- s4s=- s2= s1= s6_ttft= s6_dec=
# ---- decode attention timing (with the 32K rows of S6), a few seconds
if want DEC && [ "$DEV" = cuda ] && [ -x "$B/test_cuda_parity" ]; then
  timeout 60 "$B/test_cuda_parity" --bench-decode >"$OUT/bench_decode.log" 2>&1
fi
# ---- the GEMV kernels' checks first: if they fail, every run goes through cuBLASLt
gemv=on
if [ "$DEV" = cuda ] && [ -x "$B/test_cuda_parity" ]; then
  timeout 60 "$B/test_cuda_parity" --gemv-check >"$OUT/gemv_check.log" 2>&1 ||
    { export PAGELLM_CUDA_GEMV=0; gemv="off (checks failed)"; }
fi

# ---- S4: process start to the first token
if want S4; then
note "S4"
t=$(date +%s.%N)
timeout $(lim 60) "$B/pagellm" generate --model "$M" "${ENG[@]}" --prompt-ids "$(seq -s, 1 128)" \
  --max-tokens 1 --ignore-eos --temperature 0 --max-model-len 4096 --no-progress --json \
  >"$OUT/s4.jsonl" 2>"$OUT/s4.log"
s4_rc=$?
s4=$(python3 -c "import time; print(f'{time.time() - $t:.2f}')")
[ $s4_rc = 0 ] || s4="fail($s4_rc)"
fi

# ---- S2: batch 1, 128 / 256
if want S2; then
note "S2"
PAGELLM_PROFILE=1 timeout $(lim 90) "$BT" --model "$M" "${ENG[@]}" --warmup 1 --num-prompts 1 \
  --input-len 128 --output-len $S2_OUT >"$OUT/s2.log" 2>&1
s2=$(num "$OUT/s2.log" "output tokens/s")
fi

# ---- S1: 1024 x 512 / 256 offline
if want S1; then
note "S1"
timeout $(lim 180) "$BT" --model "$M" "${ENG[@]}" --warmup 1 --num-prompts $S1_N --input-len $S1_IN \
  --output-len $S1_OUT --max-num-seqs 512 --max-num-batched-tokens 8192 >"$OUT/s1.log" 2>&1
s1=$(num "$OUT/s1.log" "output tokens/s")
fi

# ---- S6: one 32,768-token prompt: time to the first token, then decode at that context
if want S6; then
note "S6"
# (the 8B config says 8192 positions; a 32K context is the Llama-3.1 shape's, same cost)
VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 PAGELLM_PROFILE=1 timeout $(lim 120) "$BT" --model "$M" "${ENG[@]}" \
  --warmup 1 --ttft 1 --num-prompts 1 --input-len $S6_IN \
  --output-len $S6_OUT --max-num-seqs 8 --max-num-batched-tokens 8192 >"$OUT/s6.log" 2>&1
s6_ttft=$(num "$OUT/s6.log" "time to first token")
s6_dec=$(num "$OUT/s6.log" "decode tokens/s after first")
fi

# ---- a server on the 8B shape with the Llama-3 tokenizer; S4 served = start to the first
# /v1/completions token
PORT=
server=
serve_start() { # serve_start LOG extra-flags...
  local log=$1; shift
  rm -f "$log" # (else a stale port could be read before the child truncates it)
  PAGELLM_PROFILE=1 "$B/pagellm" serve --model "$M" "${ENG[@]}" --port 0 --served-model-name m \
    --shutdown-grace-period 2 "$@" \
    >"$log" 2>&1 &
  server=$!
  PORT=
  for _ in $(seq 1 1200); do
    PORT=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -1)
    [ -n "$PORT" ] && break
    kill -0 $server 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$PORT" ]
}
serve_stop() { [ -n "$server" ] && { kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; }; server=; }
first_token() { # seconds from T to a served 1-token completion
  python3 - "$PORT" "$1" <<'PY'
import json, sys, time, urllib.request
port, t0 = sys.argv[1], float(sys.argv[2])
body = json.dumps({"model": "m", "prompt": list(range(1, 129)), "max_tokens": 1}).encode()
while time.time() - t0 < 120:
    try:
        r = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % port, body,
                                   {"content-type": "application/json"})
        if json.load(urllib.request.urlopen(r, timeout=60))["usage"]["completion_tokens"] == 1:
            print(f"{time.time() - t0:.2f}")
            sys.exit(0)
    except Exception:
        time.sleep(0.02)
print("fail")
PY
}

if want S3; then
note "S3"
t=$(date +%s.%N)
if serve_start "$OUT/s3_serve.log" --max-model-len 2048 --max-num-seqs 512 --max-num-batched-tokens 8192; then
  s4s=$(first_token "$t")
  rm -f "$OUT/s3.jsonl"
  for run in $S3_RUNS; do
    rate=${run%:*} n=${run#*:}
    timeout $(lim 150) "$B/pagellm" bench serve --port "$PORT" --model m --num-prompts "$n" \
      --input-len $S3_IN --output-len $S3_OUT --vocab-size 128000 --request-rate "$rate" \
      --result-file "$OUT/s3.jsonl" --label "$rate" >"$OUT/s3_$rate.log" 2>&1
  done
fi
serve_stop
fi

# ---- the transformers baseline of S4, S2 and S1 (after pagellm's runs, its own process)
hf_ok=0
if [ "${HF:-1}" = 1 ] && want HF && python3 -c "import torch, transformers" 2>/dev/null; then
  hf_ok=1
  note "transformers 8B"
  t=$(date +%s.%N)
  PYTHONUNBUFFERED=1 timeout $(lim 200) python3 "$ROOT/bench/hf_baseline.py" --config "$M" --t0 "$t" \
    --s1-batch 256 >"$OUT/hf_8b.jsonl" 2>"$OUT/hf_8b.log"
fi

# ---- S7: multi-turn chat, prefix caching on, then off (same workload, fresh servers)
if want S7; then
for pc in on off; do
  note "S7 prefix caching $pc"
  flag=--enable-prefix-caching
  [ $pc = off ] && flag=--no-enable-prefix-caching
  if serve_start "$OUT/s7_serve_$pc.log" $flag --max-model-len 4096 --max-num-seqs 256 \
       --max-num-batched-tokens 8192; then
    # shellcheck disable=SC2086
    timeout $(lim 150) python3 "$ROOT/bench/multiturn.py" --port "$PORT" --model m $S7_ARGS --label "$pc" \
      >"$OUT/s7_$pc.json" 2>"$OUT/s7_$pc.err"
  fi
  serve_stop
done
fi

# ---- issue 13's figures: Gemma-3-12B batch 1; Qwen3-30B-A3B batch 1 and offline
moe_ok=0
if [ "${FIGURES:-1}" = 1 ] && want FIG; then
  note "figures"
  timeout $(lim 120) "$BT" --model "$W/gemma-3-12b" "${ENG[@]}" --warmup 1 --num-prompts 1 --input-len 128 \
    --output-len $FIG_OUT >"$OUT/gemma_b1.log" 2>&1
  # 61 GB of bf16 weights: the default 0.90 of an 80 GB card leaves no KV room
  timeout $(lim 120) "$BT" --model "$W/qwen3-30b-a3b" "${ENG[@]}" --warmup 1 --num-prompts 1 --input-len 128 \
    --output-len $FIG_OUT --gpu-memory-utilization 0.97 >"$OUT/moe_b1.log" 2>&1 && moe_ok=1
  if [ $moe_ok = 1 ]; then
    timeout $(lim 200) "$BT" --model "$W/qwen3-30b-a3b" "${ENG[@]}" --warmup 1 --num-prompts $MOE_N \
      --input-len $MOE_IN --output-len $MOE_OUT --max-num-seqs 512 --max-num-batched-tokens 8192 \
      --gpu-memory-utilization 0.97 >"$OUT/moe_offline.log" 2>&1
  fi
fi

# ---- the transformers baselines of the figures (after pagellm's runs, one process per shape)
if [ $hf_ok = 1 ]; then
  if [ "${FIGURES:-1}" = 1 ] && [ "$(left)" -gt 90 ]; then
    note "transformers Gemma-3-12B"
    PYTHONUNBUFFERED=1 timeout $(( $(left) > 150 ? 120 : $(left) - 30 )) python3 "$ROOT/bench/hf_baseline.py" \
      --config "$W/gemma-3-12b" --scenarios "" --run b1:1:128:$FIG_OUT >"$OUT/hf_gemma.jsonl" 2>"$OUT/hf_gemma.log"
  fi
  if [ $moe_ok = 1 ] && [ "$(left)" -gt 150 ]; then
    note "transformers Qwen3-30B-A3B"
    PYTHONUNBUFFERED=1 timeout $(( $(left) - 30 )) python3 "$ROOT/bench/hf_baseline.py" \
      --config "$W/qwen3-30b-a3b" --scenarios "" --run b1:1:128:$FIG_OUT \
      --run offline:64:$MOE_IN:$MOE_OUT >"$OUT/hf_moe.jsonl" 2>"$OUT/hf_moe.log"
  fi
fi

# ---- where S1's time goes (optional)
if [ "${PROFILE:-1}" = 1 ] && want PROF && [ "$(left)" -gt 60 ]; then
  note "profile"
  PAGELLM_PROFILE=1 PAGELLM_CUDA_PROFILE=1 timeout $(lim 60) "$BT" --model "$M" "${ENG[@]}" --warmup 1 \
    --num-prompts $(( S1_N / 4 )) --input-len $S1_IN --output-len $S1_OUT --max-num-seqs 512 \
    --max-num-batched-tokens 8192 >"$OUT/s1_profile.log" 2>&1
fi
note "done"
if [ -f "$OUT/s1_profile.log" ]; then
  echo "==== S1 profile ($(( S1_N / 4 )) prompts)"
  grep -E "engine profile|output tokens/s" "$OUT/s1_profile.log"
  grep -A14 "cuda profile" "$OUT/s1_profile.log" | head -15
fi
if [ -f "$OUT/bench_decode.log" ]; then
  echo "==== decode attention (test_cuda_parity --bench-decode)"
  grep -E "ctx (8192|32768)|batch 256 ctx  640 splits auto  " "$OUT/bench_decode.log"
fi
echo "==== offline engine profiles (S2, S6)"
grep -h "engine profile" "$OUT"/s2.log "$OUT"/s6.log 2>/dev/null | sed 's/^\[pagellm INFO\] //' | cut -c1-260
echo "==== served: engine-thread profiles (S3 at all rates, then S7 on / off)"
grep -h -E "async engine profile|engine profile" "$OUT"/s3_serve.log "$OUT"/s7_serve_on.log \
  "$OUT"/s7_serve_off.log 2>/dev/null | sed 's/^\[pagellm INFO\] //' | cut -c1-260
echo "==== logs"
grep -h -E "memory plan|cuda graphs|error|refused" "$OUT"/s1.log "$OUT"/s6.log "$OUT"/gemma_b1.log \
  "$OUT"/moe_b1.log 2>/dev/null | cut -c1-220 | head -12
tail -2 "$OUT"/hf_*.log 2>/dev/null | cut -c1-220

# ---- the table
python3 - "$OUT" "$M" "$W" "$s4" "$s4s" "${s2:-}" "${s1:-}" "${s6_ttft:-}" "${s6_dec:-}" "$moe_ok" "$gemv" <<'PY' | tee "$OUT/table.txt"
import json, os, re, sys
out, m8, w, s4, s4s, s2, s1, s6t, s6d, moe_ok, gemv = sys.argv[1:]

def jl(name):
    p = os.path.join(out, name)
    rows = []
    if os.path.exists(p):
        for line in open(p):
            try:
                rows.append(json.loads(line))
            except ValueError:
                pass
    return rows

def hf(name, scen):
    for r in jl(name):
        if r.get("scenario") == scen:
            return r
    return {}

def num(log, key):
    p = os.path.join(out, log)
    if not os.path.exists(p):
        return None
    for line in open(p):
        if key in line:
            try:
                return float(line.split()[-1])
            except ValueError:
                return None
    return None

def f(x, d=1):
    try:
        return f"{float(x):,.{d}f}"
    except (TypeError, ValueError):
        return "-" if x in (None, "") else str(x)

def ratio(a, b):
    try:
        return f"{float(a) / float(b):.2f}x"
    except (TypeError, ValueError, ZeroDivisionError):
        return "-"

def weight_bytes(cfg_dir, active):
    """bf16 bytes a decode step reads: every weight (active: only the routed experts)."""
    c = json.load(open(os.path.join(cfg_dir, "config.json")))
    h, L, v = c["hidden_size"], c["num_hidden_layers"], c["vocab_size"]
    nh, nkv = c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"])
    hd = c.get("head_dim") or h // nh
    attn = h * hd * (2 * nh + 2 * nkv)
    if c.get("num_experts"):
        e = c["num_experts_per_tok"] if active else c["num_experts"]
        mlp = 3 * h * c["moe_intermediate_size"] * e + h * c["num_experts"]
    else:
        mlp = 3 * h * c["intermediate_size"]
    head = v * h  # the LM head (tied or not) is read every step; the embedding row is not
    return 2 * (L * (attn + mlp) + head)

BW = 3.0e12  # H100 copy ceiling measured (docs/benchmarks.md: 3.01 TB/s)
dev = open(os.path.join(out, "device.txt")).read().strip()
commit = open(os.path.join(out, "commit.txt")).read().strip()
h8 = {s: hf("hf_8b.jsonl", s) for s in ("S4", "S2", "S1")}
s3 = {str(r.get("label")): r for r in jl("s3.jsonl")}
s7 = {k: (jl("s7_%s.json" % k) or [{}])[0] for k in ("on", "off")}
rows = []
rows.append(("S4", "start -> first token, generate (s)", s4, f(h8["S4"].get("seconds_to_first_token"), 2), "<= 1 s"))
rows.append(("S4", "start -> first token served (s)", s4s, "-", "<= 1 s"))
rows.append(("S2", "batch 1, 128/256, output tok/s", f(s2), f(h8["S2"].get("output_tok_s")),
             "178 (%s of the %.0f tok/s bound)" % (ratio(s2, BW / weight_bytes(m8, False)), BW / weight_bytes(m8, False))))
rows.append(("S1", "1024 x 512/256 offline, output tok/s", f(s1), f(h8["S1"].get("output_tok_s")) + " (b256)", ">= 12,000"))
rows.append(("S6", "32K prompt: time to first token (s)", f(s6t, 3), "-", "<= 1.6"))
rows.append(("S6", "decode at 32K context, tok/s", f(s6d), "-", ">= 140"))
for rate in ("4", "16", "inf"):
    r = s3.get(rate, {})
    fail = r.get("failed")
    extra = "" if not fail else f", {fail} failed"
    rows.append(("S3", f"serve @ {rate} req/s: TTFT p50 / TPOT p50 (ms)",
                 f"{f(r.get('median_ttft_ms'))} / {f(r.get('median_tpot_ms'), 2)}{extra}", "-",
                 {"4": "TTFT <= 15", "16": "TPOT <= 7", "inf": ""}[rate]))
    rows.append(("S3", f"serve @ {rate} req/s: output tok/s", f(r.get("output_throughput")),
                 f"S1 {f(s1)}" if rate == "inf" else "-",
                 ratio(r.get("output_throughput"), s1) + " of S1 (goal >= 0.90)" if rate == "inf" else ""))
on, off = s7["on"], s7["off"]
rows.append(("S7", "multi-turn, prefix caching on vs off, output tok/s", f(on.get("output_tok_s")),
             f(off.get("output_tok_s")) + " (off)", ratio(on.get("output_tok_s"), off.get("output_tok_s")) + " (goal >= 2x)"))
rows.append(("S7", "prefix hit rate (on / off), failed turns", f"{f(on.get('prefix_hit_rate'), 3)} / {f(off.get('prefix_hit_rate'), 3)}, {on.get('failed', '-')}+{off.get('failed', '-')}",
             "-", ">= 0.80"))
g_b1 = num("gemma_b1.log", "output tokens/s")
g_bound = BW / weight_bytes(os.path.join(w, "gemma-3-12b"), False)
rows.append(("G3", "Gemma-3-12B batch 1, 128/256, output tok/s", f(g_b1), f(hf("hf_gemma.jsonl", "b1").get("output_tok_s")),
             "%s of the %.0f tok/s bound (goal 0.85)" % (ratio(g_b1, g_bound), g_bound)))
m_b1 = num("moe_b1.log", "output tokens/s")
m_bound = BW / weight_bytes(os.path.join(w, "qwen3-30b-a3b"), True)
if moe_ok == "1":
    rows.append(("MoE", "Qwen3-30B-A3B batch 1, output tok/s", f(m_b1), f(hf("hf_moe.jsonl", "b1").get("output_tok_s")),
                 "%s of the %.0f tok/s active bound (goal 0.70)" % (ratio(m_b1, m_bound), m_bound)))
    mo = num("moe_offline.log", "output tokens/s")
    rows.append(("MoE", "Qwen3-30B-A3B 1024 x 512/256, output tok/s", f(mo), f(hf("hf_moe.jsonl", "offline").get("output_tok_s")) + " (b64)",
                 ratio(mo, hf("hf_moe.jsonl", "offline").get("output_tok_s")) + " (goal 5x)"))
else:
    why = ""
    p = os.path.join(out, "moe_b1.log")
    if os.path.exists(p):
        errs = [l.strip() for l in open(p) if "bench_throughput:" in l and "prompts x" not in l]
        why = errs[-1][:110] if errs else ""
    rows.append(("MoE", "Qwen3-30B-A3B: not run", why or "-", "-", "bound %.0f tok/s" % m_bound))
print(f"==== round 2 ({dev}; commit {commit}; GEMV kernels {gemv})")
print(f"{'id':<4} {'scenario':<52} {'pagellm':>26} {'baseline':>22}  note")
for r in rows:
    print(f"{r[0]:<4} {r[1]:<52} {str(r[2]):>26} {str(r[3]):>22}  {r[4]}")
PY
