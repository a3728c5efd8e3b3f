#!/usr/bin/env bash
# test_generate.sh -- `pagellm generate` (on the engine) and examples/quickstart.
# Part 1, on a tiny random f32 Llama written here (config.json + model.safetensors
# from the format's published layout, by python3's standard library): JSON output
# shape, logprobs order, batch == alone == chunked, stop ids from
# generation_config.json, refusals and exit codes.
# Part 2, on the default tiny model (pl-mkmodel, with a tokenizer), checked with
# node as an independent JSON reader: text prompts, greedy twice identical, n
# samples, seeded reproducibility, --stats, a stop string, named errors, and the
# quick-start example.
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
# --temperature 0 below: the engine's defaults are vLLM's (temperature 1.0)
export PAGELLM_LOG_LEVEL=warn

# 1. two prompts in one batch, JSON lines with logprobs
"$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids "3,4,5,6" --prompt-ids "9, 10" --max-tokens 6 \
  --logprobs 3 --json --ignore-eos >"$dir/batch.jsonl" 2>"$dir/batch.err"
grep -q "tiny random-weight test model" "$dir/batch.err" || fail "no tiny-model note"
python3 - "$dir/batch.jsonl" <<'PY' || fail "JSON output shape"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 2, lines
for line, ids in zip(lines, ([3, 4, 5, 6], [9, 10])):
    d = json.loads(line)
    assert list(d) == ["prompt", "prompt_token_ids", "num_cached_tokens", "outputs"], list(d)
    assert d["prompt"] is None and d["prompt_token_ids"] == ids
    (o,) = d["outputs"]
    assert o["index"] == 0 and o["text"] is None and o["finish_reason"] == "length"
    assert o["stop_reason"] is None
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
alone=$( { "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4,5,6 --max-tokens 6 --json --ignore-eos 2>/dev/null;
           "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 9,10 --max-tokens 6 --json --ignore-eos 2>/dev/null; } | ids_of)
[ "$batch" = "$alone" ] || fail "batched tokens differ from alone: $batch vs $alone"
chunked=$("$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4,5,6 --prompt-ids 9,10 --max-tokens 6 \
  --json --ignore-eos --prefill-chunk 1 --block-size 8 --threads 1 2>/dev/null | ids_of)
[ "$batch" = "$chunked" ] || fail "chunked tokens differ: $chunked"
# tensor parallelism on the CPU backend: 2 ranks (KV heads split) and 4 (replicated)
for tp in 2 4; do
  sharded=$("$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4,5,6 --prompt-ids 9,10 \
    --max-tokens 6 --json --ignore-eos --tensor-parallel-size $tp --threads $tp 2>/dev/null | ids_of)
  [ "$batch" = "$sharded" ] || fail "--tensor-parallel-size $tp tokens differ: $sharded"
done
# seeded sampling: rank 0 samples the gathered logits with the engine's draws (and the host
# sampler on the ranks' logits columns gives the same)
sampled() { "$PAGELLM" generate --model "$model" --temperature 0.8 --top-p 0.9 --seed 3 --prompt-ids 3,4,5,6 \
  --prompt-ids 9,10 --max-tokens 6 --json --ignore-eos "$@" 2>/dev/null | ids_of; }
s1=$(sampled)
[ "$(sampled --tensor-parallel-size 2 --threads 2)" = "$s1" ] || fail "TP=2 seeded sampling differs"
[ "$(PAGELLM_SAMPLER=host sampled --tensor-parallel-size 2 --threads 2)" = "$s1" ] \
  || fail "TP=2 seeded sampling on the host differs"
set +e
"$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4 --tensor-parallel-size 3 >/dev/null 2>"$dir/tp3.err"
rc=$?
set -e
[ "$rc" != 0 ] || fail "--tensor-parallel-size 3 over 4 heads was accepted"
grep -q "tensor_parallel_size 3 does not divide num_attention_heads 4" "$dir/tp3.err" \
  || fail "--tensor-parallel-size 3 message: $(cat "$dir/tp3.err")"

# 3. stop ids: generation_config's eos list wins over config.json's
first=$(python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["outputs"][0]["token_ids"][2])' <"$dir/batch.jsonl")
echo "{\"eos_token_id\": [$first, 63]}" >"$model/generation_config.json"
"$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4,5,6 --max-tokens 6 --json 2>/dev/null >"$dir/stop.jsonl"
python3 - "$dir/stop.jsonl" "$first" <<'PY' || fail "stop at a generation_config eos id"
import json, sys
o = json.loads(open(sys.argv[1]).readline())["outputs"][0]
stop = int(sys.argv[2])
assert o["finish_reason"] == "stop" and o["token_ids"][-1] == stop, o
assert o["stop_reason"] == stop, o  # generation_config's extra eos ids act as stop_token_ids
assert stop not in o["token_ids"][:-1]
PY
n=$("$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4,5,6 --max-tokens 6 --json --ignore-eos 2>/dev/null | ids_of)
[ "$n" = "$(echo "$batch" | head -1)" ] || fail "--ignore-eos"

# 4. readable output
"$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 3,4 --max-tokens 2 --logprobs 2 2>/dev/null | grep -q "finish:" \
  || fail "readable output"

# 5. refusals and exit codes
expect_rc() { local want=$1; shift; set +e; "$@" >"$dir/out" 2>"$dir/err"; local rc=$?; set -e;
  [ "$rc" = "$want" ] || fail "exit $rc (want $want): $* : $(cat "$dir/err")"; }
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,2 --temperature -0.5
grep -q "temperature" "$dir/err" || fail "temperature message"
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,2 --bogus
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,,2
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,2 --max-tokens -3
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,2 --block-size 12
grep -q -- "--block-size '12' is not one of 8, 16, 32" "$dir/err" || fail "block size message"
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,2 --tensor-parallel-size 0
grep -q "tensor-parallel-size" "$dir/err" || fail "--tensor-parallel-size 0 message"
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,2 --num-kv-blocks 2 --max-model-len 100
grep -q "largest max_model_len that fits is 32" "$dir/err" || fail "max_model_len message"
expect_rc 2 "$PAGELLM" generate --model "$model" --temperature 0 --prompt-ids 1,99
grep -q "vocabulary" "$dir/err" || fail "out-of-vocabulary message"
expect_rc 1 "$PAGELLM" generate --model "$dir/nowhere" --prompt-ids 1,2
grep -q "no model directory at '$dir/nowhere'" "$dir/err" || fail "missing-model message"
(cd "$dir" && PAGELLM_MODEL= expect_rc 1 "$PAGELLM" generate --prompt-ids 1,2)
grep -q "models/default" "$dir/err" || fail "default model path"
grep -q "run-default.sh" "$dir/err" || fail "missing default model hint"
expect_rc 1 "$PAGELLM" generate --model "$model" --temperature 0 --prompt "hello"
grep -qi "tokenizer" "$dir/err" || fail "text prompt without a tokenizer"
expect_rc 0 "$PAGELLM" generate --help
for f in --model --prompt-ids --prompt --prompts-file --max-tokens --temperature --logprobs --json \
         --block-size --num-kv-blocks --max-num-batched-tokens --max-model-len --threads \
         --prefill-chunk --ignore-eos; do
  grep -q -- "$f" "$dir/out" || fail "--help does not list $f"
done

# ---- part 2: the default model (tokenizer), node as the JSON reader ----
command -v node >/dev/null || fail "node is required (scripts/bootstrap.sh installs it)"
pl=$PAGELLM
bin=${PL_BINARY_DIR:-$(dirname "$PAGELLM")}
tmp=$dir/part2
mkdir -p "$tmp"
"$bin/pl-mkmodel" --preset default --out "$tmp/m" >/dev/null
common=(--model "$tmp/m" --threads 1 --no-progress)

"$pl" generate "${common[@]}" --json --temperature 0 --max-tokens 12 --ignore-eos --logprobs 3 \
  --prompt "The capital of France is" --prompt-ids 1,2,3,4,5 --stats >"$tmp/a.jsonl" 2>"$tmp/a.err"
"$pl" generate "${common[@]}" --json --temperature 0 --max-tokens 12 --ignore-eos --logprobs 3 \
  --prompt "The capital of France is" --prompt-ids 1,2,3,4,5 >"$tmp/b.jsonl" 2>/dev/null
cmp "$tmp/a.jsonl" "$tmp/b.jsonl" || { echo "greedy generate is not reproducible"; exit 1; }

node - "$tmp/a.jsonl" "$tmp/a.err" <<'JS'
const fs = require('fs');
const lines = fs.readFileSync(process.argv[2], 'utf8').trim().split('\n').map(JSON.parse);
const fail = (m) => { console.error('FAIL: ' + m); process.exit(1); };
if (lines.length !== 2) fail('want 2 lines, got ' + lines.length);
if (lines[0].prompt !== 'The capital of France is') fail('prompt text');
if (lines[1].prompt !== null) fail('token-id prompt must have prompt null');
if (JSON.stringify(lines[1].prompt_token_ids) !== '[1,2,3,4,5]') fail('prompt_token_ids');
for (const l of lines) {
  for (const k of ['prompt', 'prompt_token_ids', 'num_cached_tokens', 'outputs'])
    if (!(k in l)) fail('missing ' + k);
  if (l.outputs.length !== 1) fail('one output');
  const o = l.outputs[0];
  for (const k of ['index', 'text', 'token_ids', 'logprobs', 'cumulative_logprob',
                   'finish_reason', 'stop_reason'])
    if (!(k in o)) fail('missing outputs[].' + k);
  if (o.token_ids.length !== 12 || o.finish_reason !== 'length' || o.stop_reason !== null)
    fail('12 tokens, length');
  if (o.logprobs.length !== 12) fail('a logprobs entry per token');
  let cum = 0;
  o.logprobs.forEach((step, t) => {
    if (step.length < 3) fail('top-3 logprobs');
    // greedy: the chosen token is the most likely one
    if (step[0].token_id !== o.token_ids[t]) fail('greedy token is not the top logprob');
    cum += step[0].logprob;
  });
  if (Math.abs(cum - o.cumulative_logprob) > 1e-3) fail('cumulative_logprob');
  if (typeof o.text !== 'string') fail('text');
}
const stats = JSON.parse(fs.readFileSync(process.argv[3], 'utf8').trim().split('\n').pop());
for (const k of ['kv_blocks_total', 'kv_blocks_peak_used', 'kv_waste', 'prefix_cache_hit_rate',
                 'num_preemptions', 'prompt_tokens', 'generation_tokens', 'seconds',
                 'tokens_per_second'])
  if (!(k in stats)) fail('stats: missing ' + k);
if (stats.generation_tokens !== 24) fail('stats: generation_tokens ' + stats.generation_tokens);
JS

# n samples per prompt, seeded: reproducible
"$pl" generate "${common[@]}" --json --n 3 --seed 7 --temperature 1 --max-tokens 6 --ignore-eos \
  --prompt "Hello" >"$tmp/n1.jsonl" 2>/dev/null
"$pl" generate "${common[@]}" --json --n 3 --seed 7 --temperature 1 --max-tokens 6 --ignore-eos \
  --prompt "Hello" >"$tmp/n2.jsonl" 2>/dev/null
cmp "$tmp/n1.jsonl" "$tmp/n2.jsonl" || { echo "seeded sampling is not reproducible"; exit 1; }
node -e '
const l = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
if (l.outputs.length !== 3 || l.outputs.some((o, i) => o.index !== i || o.token_ids.length !== 6))
  { console.error("FAIL: n=3 outputs"); process.exit(1); }' "$tmp/n1.jsonl"

# a stop string taken from the greedy text: the output stops right before it
node -e '
const l = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8").split("\n")[0]);
const t = l.outputs[0].text; process.stdout.write(t.length >= 6 ? t.slice(3, 6) : "");' \
  "$tmp/a.jsonl" >"$tmp/stop"
if [ -s "$tmp/stop" ]; then
  "$pl" generate "${common[@]}" --json --temperature 0 --max-tokens 12 --ignore-eos \
    --stop "$(cat "$tmp/stop")" --prompt "The capital of France is" >"$tmp/s.jsonl" 2>/dev/null
  node - "$tmp/a.jsonl" "$tmp/s.jsonl" "$tmp/stop" <<'JS'
const fs = require('fs');
const full = JSON.parse(fs.readFileSync(process.argv[2], 'utf8').split('\n')[0]).outputs[0].text;
const o = JSON.parse(fs.readFileSync(process.argv[3], 'utf8')).outputs[0];
const stop = fs.readFileSync(process.argv[4], 'utf8');
if (o.text !== full.slice(0, full.indexOf(stop)) || o.finish_reason !== 'stop' ||
    o.stop_reason !== stop) { console.error('FAIL: stop string', o); process.exit(1); }
JS
fi

# bad values: exit 2, the message names the flag or field
expect2() {
  set +e
  "$pl" generate "${common[@]}" --prompt-ids 1,2 "$@" >/dev/null 2>"$tmp/err"
  rc=$?
  set -e
  [ $rc -eq 2 ] || { echo "want exit 2 for $*, got $rc"; cat "$tmp/err"; exit 1; }
  grep -q -- "$want" "$tmp/err" || { echo "message for $* does not name $want"; cat "$tmp/err"; exit 1; }
}
want=temperature expect2 --temperature -1
want=top_p expect2 --top-p 1.5
want=--max-tokens expect2 --max-tokens abc
want=top_k expect2 --top-k -5
want=--bogus expect2 --bogus 1
want=--block-size expect2 --block-size 7

# --load-format dummy: the model directory holds config.json alone; the weights are made
# from --seed (same seed, same tokens; another seed, other weights); a bad value is refused
mkdir -p "$tmp/cfg-only"
cp "$tmp/m/config.json" "$tmp/cfg-only/"
dummy() { PAGELLM_LOG_LEVEL=info "$pl" generate --model "$tmp/cfg-only" --threads 1 --no-progress --json --temperature 0 \
  --max-tokens 6 --ignore-eos --prompt-ids 1,2,3 --load-format dummy "$@" 2>"$tmp/dummy.err"; }
dummy --seed 5 >"$tmp/d1.jsonl" || { cat "$tmp/dummy.err"; echo "dummy load failed"; exit 1; }
dummy --seed 5 >"$tmp/d2.jsonl"
dummy --seed 6 >"$tmp/d3.jsonl"
cmp -s "$tmp/d1.jsonl" "$tmp/d2.jsonl" || { echo "dummy weights: same seed, other tokens"; exit 1; }
grep -q '"token_ids":\[[0-9]*,[0-9]*,[0-9]*,[0-9]*,[0-9]*,[0-9]*\]' "$tmp/d1.jsonl" ||
  { echo "dummy weights: want 6 tokens"; cat "$tmp/d1.jsonl"; exit 1; }
grep -q "generated (dummy)" "$tmp/dummy.err" || { echo "dummy: no weights log line"; exit 1; }
want=--load-format expect2 --load-format npz
set +e
"$pl" generate --model "$tmp/cfg-only" --threads 1 --no-progress --prompt-ids 1,2 >/dev/null 2>"$tmp/err"
rc=$?
set -e
[ $rc -ne 0 ] && grep -qi "safetensors" "$tmp/err" || { echo "config-only dir without dummy must fail naming safetensors"; cat "$tmp/err"; exit 1; }

# the quick-start example
"$bin/example_quickstart" "$tmp/m" >"$tmp/q.out" 2>/dev/null
[ "$(grep -c '^Prompt: ' "$tmp/q.out")" -eq 4 ] || { echo "quickstart: want 4 prompts"; cat "$tmp/q.out"; exit 1; }
grep -q 'Prompt: "San Francisco is a city known for", Generated text: ' "$tmp/q.out"
echo "test_generate: 2 passed, 0 failed"
