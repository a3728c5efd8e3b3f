#!/usr/bin/env bash
# test_dtype.sh -- `--dtype` (vLLM's values) converts the weights at load, on the CPU:
#   1. a bf16 checkpoint run with --dtype float32 gives exactly (token ids and logprobs,
#      all 17 digits) what the same weights saved as float32 give;
#   2. a float32 checkpoint with --dtype bfloat16 gives exactly what that checkpoint
#      rounded to bf16 (round to nearest even, as torch's .to(torch.bfloat16)) gives;
#   3. --dtype float16 / half on the bf16 checkpoint equals the float16 checkpoint;
#   4. bad values are refused before loading (exit 2), naming --dtype; the worker's
#      DTYPE variable takes the same values.
# The checkpoints are written here by python3's standard library.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
if ! command -v python3 >/dev/null; then
  echo "test_dtype: python3 missing; skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "test_dtype: FAIL: $*" >&2; exit 1; }
export PAGELLM_LOG_LEVEL=warn

# a tiny Llama per checkpoint; grid: values k/128 with |k| < 256 (8 significant bits: exact in
# bf16, f16 and f32); ROUND=free: full float32 values (stored as DTYPE with RNE rounding)
python3 - "$dir" <<'PY'
import json, os, struct, sys
base = sys.argv[1]
H, I, L, NH, NKV, HD, V = 32, 64, 2, 4, 2, 8, 64

def bf16_bits(f):
    u = struct.unpack("<I", struct.pack("<f", f))[0]
    u += 0x7fff + ((u >> 16) & 1)            # round to nearest even, as torch does
    return (u >> 16) & 0xffff

def encode(vals, dtype):
    if dtype == "F32":
        return struct.pack("<%df" % len(vals), *vals)
    if dtype == "F16":
        return struct.pack("<%de" % len(vals), *vals)   # IEEE half, nearest even
    return struct.pack("<%dH" % len(vals), *[bf16_bits(v) for v in vals])

def write(out, dtype, grid):
    os.makedirs(out)
    torch_dtype = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH,
           "num_key_value_heads": NKV, "head_dim": HD, "vocab_size": V, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "max_position_embeddings": 128, "bos_token_id": 1,
           "eos_token_id": 2, "tie_word_embeddings": False, "torch_dtype": torch_dtype}
    json.dump(cfg, open(out + "/config.json", "w"))
    state = [777]
    def rnd():
        state[0] = (state[0] * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        x = ((state[0] >> 11) / float(1 << 53)) * 2 - 1
        return round(x * 128) / 128 if grid else struct.unpack("<f", struct.pack("<f", x))[0]
    tensors = []
    def t(name, shape, center=0.0, spread=0.5):
        n = 1
        for s in shape: n *= s
        vals = [center + spread * rnd() for _ in range(n)]
        if grid:  # keep centered values on the grid too
            vals = [round(v * 128) / 128 for v in vals]
        tensors.append((name, shape, encode(vals, dtype)))
    t("model.embed_tokens.weight", [V, H], 0, 1)
    for l in range(L):
        p = "model.layers.%d." % l
        t(p + "input_layernorm.weight", [H], 1, 0.2)
        t(p + "self_attn.q_proj.weight", [NH * HD, H])
        t(p + "self_attn.k_proj.weight", [NKV * HD, H])
        t(p + "self_attn.v_proj.weight", [NKV * HD, H])
        t(p + "self_attn.o_proj.weight", [H, NH * HD])
        t(p + "post_attention_layernorm.weight", [H], 1, 0.2)
        t(p + "mlp.gate_proj.weight", [I, H])
        t(p + "mlp.up_proj.weight", [I, H])
        t(p + "mlp.down_proj.weight", [H, I])
    t("model.norm.weight", [H], 1, 0.2)
    t("lm_head.weight", [V, H], 0, 1)
    header, off = {}, 0
    for name, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
    hj = json.dumps(header).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(out + "/model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(d for _, _, d in tensors))

for dt in ("F32", "F16", "BF16"):
    write("%s/grid-%s" % (base, dt.lower()), dt, True)
write(base + "/free-f32", "F32", False)
write(base + "/free-bf16", "BF16", False)
PY

run() { # run MODEL [flags...]: greedy tokens with their top-5 logprobs, as JSON lines
  local m=$1; shift
  "$PAGELLM" generate --model "$m" --threads 1 --no-progress --json --temperature 0 --ignore-eos \
    --max-tokens 12 --logprobs 5 --prompt-ids 3,4,5,6 --prompt-ids 9,10,11 "$@" 2>"$dir/err" ||
    { cat "$dir/err" >&2; fail "generate $m $*"; }
}

# 1. bf16 + --dtype float32 == the float32 checkpoint of the same values
run "$dir/grid-bf16" --dtype float32 >"$dir/a"
run "$dir/grid-f32" >"$dir/b"
cmp -s "$dir/a" "$dir/b" || { diff "$dir/a" "$dir/b" | head -5; fail "bf16 --dtype float32 != f32"; }
run "$dir/grid-bf16" --dtype float >"$dir/a2"
cmp -s "$dir/a" "$dir/a2" || fail "--dtype float is not float32"
grep -q '"logprob"' "$dir/a" || fail "no logprobs in the output"

# 2. float32 + --dtype bfloat16 == the checkpoint rounded to bf16
run "$dir/free-f32" --dtype bfloat16 >"$dir/c"
run "$dir/free-bf16" >"$dir/d"
cmp -s "$dir/c" "$dir/d" || { diff "$dir/c" "$dir/d" | head -5; fail "f32 --dtype bfloat16 != bf16"; }
# ... and the rounding matters: the float32 weights give other logprobs
run "$dir/free-f32" >"$dir/e"
cmp -s "$dir/c" "$dir/e" && fail "--dtype bfloat16 did not change the float32 model's output"

# 3. bf16 + --dtype float16 (and half) == the float16 checkpoint
run "$dir/grid-bf16" --dtype float16 >"$dir/f"
run "$dir/grid-f16" >"$dir/g"
cmp -s "$dir/f" "$dir/g" || fail "bf16 --dtype float16 != f16"
run "$dir/grid-bf16" --dtype half >"$dir/h"
cmp -s "$dir/f" "$dir/h" || fail "--dtype half is not float16"
# auto: the checkpoint's own dtype, as before
run "$dir/grid-bf16" --dtype auto >"$dir/i"
run "$dir/grid-bf16" >"$dir/j"
cmp -s "$dir/i" "$dir/j" || fail "--dtype auto differs from no --dtype"

# the load log says what happened
PAGELLM_LOG_LEVEL=info "$PAGELLM" generate --model "$dir/grid-bf16" --threads 1 --no-progress \
  --prompt-ids 3,4 --max-tokens 1 --dtype float32 >/dev/null 2>"$dir/log"
grep -q "float32, converted from the checkpoint's bfloat16" "$dir/log" ||
  { cat "$dir/log"; fail "no conversion in the load log"; }

# 4. refusals before the model loads: exit 2, naming the flag / variable
set +e
"$PAGELLM" generate --model "$dir/nowhere" --prompt-ids 1 --dtype fp8 >/dev/null 2>"$dir/err"
rc=$?
set -e
[ $rc -eq 2 ] || fail "--dtype fp8: exit $rc"
grep -q -- "--dtype 'fp8' is not one of auto, bfloat16, float16, half, float32, float" "$dir/err" ||
  { cat "$dir/err"; fail "--dtype message"; }
set +e
DTYPE=int8 "$PAGELLM" worker --model "$dir/nowhere" --test_input '{"input":{}}' >/dev/null 2>"$dir/err"
rc=$?
set -e
[ $rc -eq 2 ] && grep -q "DTYPE='int8'" "$dir/err" || { cat "$dir/err"; fail "DTYPE=int8: exit $rc"; }
# the worker takes DTYPE=float32 (one job on the default bf16 model, converted at load)
"$(dirname "$PAGELLM")/pl-mkmodel" --preset default --out "$dir/default" >/dev/null
DTYPE=float32 PAGELLM_LOG_LEVEL=info "$PAGELLM" worker --model "$dir/default" \
  --test_input '{"input":{"prompt":"hi","sampling_params":{"max_tokens":2,"temperature":0}}}' \
  >"$dir/w.out" 2>"$dir/w.err" || { cat "$dir/w.err"; fail "worker DTYPE=float32"; }
grep -q "converted from the checkpoint's bfloat16" "$dir/w.err" || { cat "$dir/w.err"; fail "worker: no conversion"; }
echo "test_dtype: passed"
