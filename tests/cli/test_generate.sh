#!/usr/bin/env bash
# test_generate.sh -- `pagellm generate` end to end on a tiny random f32 Llama
# written here (config.json + model.safetensors from the format's published
# layout, by python3's standard library): JSON output shape, logprobs order,
# batch == alone == chunked, stop ids from generation_config.json, refusals
# and exit codes.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
if ! command -v python3 >/dev/null; then
  echo "test_generate: python3 missing; skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
model=$dir/model
mkdir -p "$model"

python3 - "$model" <<'PY'
import json, struct, sys
out = sys.argv[1]
H, I, L, NH, NKV, HD, V = 32, 64, 2, 4, 2, 8, 64
cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
       "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": NH,
       "num_key_value_heads": NKV, "head_dim": HD, "vocab_size": V, "rms_norm_eps": 1e-5,
       "rope_theta": 10000.0, "max_position_embeddings": 128, "bos_token_id": 1,
       "eos_token_id": 2, "tie_word_embeddings": False, "torch_dtype": "float32",
       "pagellm_tiny_test_model": True}
json.dump(cfg, open(out + "/config.json", "w"))
state = [12345]
def rnd():
    state[0] = (state[0] * 6364136223846793005 + 1442695040888963407) % (1 << 64)
    return ((state[0] >> 11) / float(1 << 53)) * 2 - 1
tensors = []
def t(name, shape, center=0.0, spread=0.5):
    n = 1
    for s in shape: n *= s
    tensors.append((name, shape, struct.pack("<%df" % n, *[center + spread * rnd() for _ in range(n)])))
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
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + len(data)]}
    off += len(data)
hj = json.dumps(header).encode()
hj += b" " * ((8 - len(hj) % 8) % 8)
with open(out + "/model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(hj)) + hj + b"".join(d for _, _, d in tensors))
PY

fail() { echo "test_generate: FAIL: $*"; exit 1; }
export PAGELLM_LOG_LEVEL=warn

# 1. two prompts in one batch, JSON lines with logprobs
"$PAGELLM" generate --model "$model" --prompt-ids "3,4,5,6" --prompt-ids "9, 10" --max-tokens 6 \
  --logprobs 3 --json --ignore-eos >"$dir/batch.jsonl" 2>"$dir/batch.err"
grep -q "tiny random-weight test model" "$dir/batch.err" || fail "no tiny-model note"
python3 - "$dir/batch.jsonl" <<'PY' || fail "JSON output shape"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 2, lines
for line, ids in zip(lines, ([3, 4, 5, 6], [9, 10])):
    d = json.loads(line)
    assert list(d) == ["prompt", "prompt_token_ids", "outputs"], list(d)
    assert d["prompt"] is None and d["prompt_token_ids"] == ids
    (o,) = d["outputs"]
    assert o["index"] == 0 and o["text"] is None and o["finish_reason"] == "length"
    assert len(o["token_ids"]) == 6 and len(o["logprobs"]) == 6
    total = 0.0
    for tok, top in zip(o["token_ids"], o["logprobs"]):
        assert len(top) == 3
        lps = [e["logprob"] for e in top]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        assert top[0]["token_id"] == tok   # greedy: the chosen token is the most likely
        total += top[0]["logprob"]
    assert abs(total - o["cumulative_logprob"]) < 1e-4
PY

# 2. each prompt alone, and with chunked prefill / another block size: same tokens
ids_of() { python3 -c 'import json,sys; [print(json.loads(l)["outputs"][0]["token_ids"]) for l in sys.stdin]'; }
batch=$(ids_of <"$dir/batch.jsonl")
alone=$( { "$PAGELLM" generate --model "$model" --prompt-ids 3,4,5,6 --max-tokens 6 --json --ignore-eos 2>/dev/null;
           "$PAGELLM" generate --model "$model" --prompt-ids 9,10 --max-tokens 6 --json --ignore-eos 2>/dev/null; } | ids_of)
[ "$batch" = "$alone" ] || fail "batched tokens differ from alone: $batch vs $alone"
chunked=$("$PAGELLM" generate --model "$model" --prompt-ids 3,4,5,6 --prompt-ids 9,10 --max-tokens 6 \
  --json --ignore-eos --prefill-chunk 1 --block-size 8 --threads 1 2>/dev/null | ids_of)
[ "$batch" = "$chunked" ] || fail "chunked tokens differ: $chunked"

# 3. stop ids: generation_config's eos list wins over config.json's
first=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["outputs"][0]["token_ids"][2])' <"$dir/batch.jsonl")
echo "{\"eos_token_id\": [$first, 63]}" >"$model/generation_config.json"
"$PAGELLM" generate --model "$model" --prompt-ids 3,4,5,6 --max-tokens 6 --json 2>/dev/null >"$dir/stop.jsonl"
python3 - "$dir/stop.jsonl" "$first" <<'PY' || fail "stop at a generation_config eos id"
import json, sys
o = json.loads(open(sys.argv[1]).readline())["outputs"][0]
stop = int(sys.argv[2])
assert o["finish_reason"] == "stop" and o["token_ids"][-1] == stop, o
assert stop not in o["token_ids"][:-1]
PY
n=$("$PAGELLM" generate --model "$model" --prompt-ids 3,4,5,6 --max-tokens 6 --json --ignore-eos 2>/dev/null | ids_of)
[ "$n" = "$(echo "$batch" | head -1)" ] || fail "--ignore-eos"

# 4. readable output
"$PAGELLM" generate --model "$model" --prompt-ids 3,4 --max-tokens 2 --logprobs 2 2>/dev/null | grep -q "finish:" \
  || fail "readable output"

# 5. refusals and exit codes
expect_rc() { local want=$1; shift; set +e; "$@" >"$dir/out" 2>"$dir/err"; local rc=$?; set -e;
  [ "$rc" = "$want" ] || fail "exit $rc (want $want): $* : $(cat "$dir/err")"; }
expect_rc 2 "$PAGELLM" generate --model "$model" --prompt-ids 1,2 --temperature 0.8
grep -q "sampling arrives with the engine" "$dir/err" || fail "temperature message"
expect_rc 2 "$PAGELLM" generate --model "$model" --prompt-ids 1,2 --bogus
expect_rc 2 "$PAGELLM" generate --model "$model" --prompt-ids 1,,2
expect_rc 2 "$PAGELLM" generate --model "$model" --prompt-ids 1,2 --max-tokens -3
expect_rc 2 "$PAGELLM" generate --model "$model"
expect_rc 1 "$PAGELLM" generate --model "$model" --prompt-ids 1,2 --block-size 12
grep -q "block size 12" "$dir/err" || fail "block size message"
expect_rc 1 "$PAGELLM" generate --model "$model" --prompt-ids 1,2 --num-kv-blocks 2 --max-model-len 100
grep -q "largest max_model_len that fits is 32" "$dir/err" || fail "max_model_len message"
expect_rc 1 "$PAGELLM" generate --model "$model" --prompt-ids 1,99
grep -q "vocabulary" "$dir/err" || fail "out-of-vocabulary message"
expect_rc 1 "$PAGELLM" generate --model "$dir/nowhere" --prompt-ids 1,2
grep -q "run-default.sh" "$dir/err" || fail "missing-model hint"
(cd "$dir" && PAGELLM_MODEL= expect_rc 1 "$PAGELLM" generate --prompt-ids 1,2)
grep -q "models/default" "$dir/err" || fail "default model path"
expect_rc 1 "$PAGELLM" generate --model "$model" --prompt "hello"
grep -qi "tokenizer" "$dir/err" || fail "text prompt without a tokenizer"
expect_rc 0 "$PAGELLM" generate --help
for f in --model --prompt-ids --prompt --prompts-file --max-tokens --temperature --logprobs --json \
         --block-size --num-kv-blocks --max-num-batched-tokens --max-model-len --threads \
         --prefill-chunk --ignore-eos; do
  grep -q -- "$f" "$dir/out" || fail "--help does not list $f"
done
echo "test_generate: 1 passed, 0 failed"
