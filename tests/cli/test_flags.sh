#!/usr/bin/env bash
# test_flags.sh -- the model commands' flags (issue 11, "Help and flags"):
#   1. bad values are refused before the model loads (the model path given does not
#      exist, so a check that needed the model would report that instead), exit 2, and
#      the message names the flag;
#   2. the exit codes of cli.h / docs/engine.md: 0 ok, 1 runtime (missing model,
#      unreadable file), 2 bad flags or values (also when only the model can tell);
#   3. a Hugging Face Hub id as --model says downloading is not supported yet (generate,
#      chat, serve, worker, tokenize);
#   4. no repeated prefixes ("DIR: DIR:", "chat template: chat template:"), no "''";
#   5. --max-model-len above max_position_embeddings: refused (vLLM's rule) unless
#      --allow-long-max-model-len or VLLM_ALLOW_LONG_MAX_MODEL_LEN=1;
#   6. help: generate lists --model once; serve / worker list the sampling defaults they
#      honour and not the per-request sampling flags;
#   7. serve and worker honour sampling flags as server-wide defaults (and
#      --override-generation-config): greedy by default equals `generate --temperature 0`.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
bin=$(dirname "$PAGELLM")
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
fail() { echo "test_flags: FAIL: $*"; exit 1; }
export PAGELLM_LOG_LEVEL=warn
"$bin/pl-mkmodel" --preset default --out "$dir/m" >/dev/null   # max_position_embeddings 2048
m=$dir/m
none=$dir/nowhere

# run WANT_RC GREP CMD...: exit status and a message (fixed string) on stderr
run() {
  local want=$1 msg=$2; shift 2
  set +e
  "$@" >"$dir/out" 2>"$dir/err" </dev/null
  local rc=$?
  set -e
  [ "$rc" = "$want" ] || fail "exit $rc (want $want): $* : $(cat "$dir/err")"
  [ -z "$msg" ] || grep -qF -- "$msg" "$dir/err" || fail "message '$msg' missing: $* : $(cat "$dir/err")"
}
not_loaded() { ! grep -q "no model directory" "$dir/err" || fail "checked the model before the flags: $*"; }

# ---- 1. refused before loading, naming the flag ----
for args in "--temperature 3|--temperature" "--top-p 0|--top-p" "--max-tokens 0|--max-tokens" \
            "--logprobs 50|--logprobs" "--n 0|--n" "--top-k -3|--top-k" "--block-size 12|--block-size" \
            "--dtype fp8|--dtype" "--device tpu|--device" "--max-num-batched-tokens 8|--max-num-batched-tokens" \
            "--threads -1|--threads" "--gpu-memory-utilization 2|--gpu-memory-utilization" \
            "--override-generation-config {\"x\":1}|--override-generation-config" \
            "--beam-width 50|--beam-width" "--num-kv-blocks 0|--num-kv-blocks" \
            "--repetition-penalty 0|--repetition-penalty" "--max-model-len abc|--max-model-len" \
            "--seed -1|--seed" "--load-format npz|--load-format"; do
  a=${args%%|*}; want=${args##*|}
  # shellcheck disable=SC2086
  run 2 "$want" "$PAGELLM" generate --model "$none" --prompt-ids 1,2 $a
  not_loaded generate $a
done
run 2 "sampling flags: min_tokens must be less than or equal to max_tokens=2" \
  "$PAGELLM" generate --model "$none" --prompt-ids 1 --min-tokens 5 --max-tokens 2
not_loaded
# --min-tokens alone is not judged against a default max_tokens before loading
run 1 "no model directory" "$PAGELLM" generate --model "$none" --prompt-ids 1 --min-tokens 20
# chat: flags it cannot honour, and bad values, before loading
for f in "--n 2" "--logprobs 1" "--beam-width 2" "--prompt-logprobs 1" "--length-penalty 2" "--early-stopping"; do
  # shellcheck disable=SC2086
  run 2 "${f%% *} is not supported by chat" "$PAGELLM" chat --model "$none" $f
done
run 2 "--temperature" "$PAGELLM" chat --model "$none" --temperature -1
not_loaded
# serve / worker
run 2 "--n is a per-request sampling field" "$PAGELLM" serve --model "$none" --n 2
run 2 "--ignore-eos is a per-request sampling field" "$PAGELLM" serve "$none" --ignore-eos
run 2 "sampling defaults: temperature must be in [0, 2], got 3" "$PAGELLM" serve --model "$none" --temperature 3
run 2 "--port" "$PAGELLM" serve --model "$none" --port 70000
run 2 "--block-size" "$PAGELLM" serve --model "$none" --block-size 3
run 2 "--stop is a per-request sampling field" "$PAGELLM" worker --model "$none" --stop x
run 2 "--rp_api_port 'x' is not an integer" "$PAGELLM" worker --model "$none" --rp_api_port x
run 2 "--max-concurrency" "$PAGELLM" worker --model "$none" --max-concurrency 0
run 2 "--override-generation-config: top_p = 2 is not in (0, 1]" \
  "$PAGELLM" worker --model "$none" --override-generation-config '{"top_p": 2}'
OVERRIDE_GENERATION_CONFIG='{"top_p": 2}' run 2 "--override-generation-config" "$PAGELLM" worker --model "$none"

# ---- 2. exit codes ----
run 0 "" "$PAGELLM" generate --model "$m" --prompt-ids 1,2 --max-tokens 2 --no-progress
run 1 "no model directory at '$none'" "$PAGELLM" generate --model "$none" --prompt-ids 1
run 1 "cannot read $dir/none.txt" "$PAGELLM" generate --model "$m" --prompts-file "$dir/none.txt"
run 2 "unknown option '--bogus'" "$PAGELLM" generate --model "$m" --prompt-ids 1 --bogus 1
run 2 "vocabulary" "$PAGELLM" generate --model "$m" --prompt-ids 1,99999 --no-progress
run 2 "" "$PAGELLM"
run 2 "unknown command" "$PAGELLM" frobnicate
run 0 "" "$PAGELLM" help
grep -q "exit status: 0 success; 1 a runtime failure" "$dir/out" || fail "pagellm help does not state the exit codes"
# a value only the model can judge is still a bad value: 2, from every command
run 2 "max_model_len 4096 is above the model's length 2048" "$PAGELLM" generate --model "$m" --prompt-ids 1 --max-model-len 4096
run 2 "max_model_len 4096 is above the model's length 2048" "$PAGELLM" chat --model "$m" --max-model-len 4096
run 2 "max_model_len 4096 is above the model's length 2048" "$PAGELLM" serve --model "$m" --port 0 --max-model-len 4096
run 2 "max_model_len 4096 is above the model's length 2048" "$PAGELLM" worker --model "$m" --max-model-len 4096 --test_input '{"input":{"prompt":"hi"}}'
run 1 "no model directory" "$PAGELLM" chat --model "$none"
run 1 "no model directory" "$PAGELLM" serve "$none"
run 2 "no model: pass --model DIR" "$PAGELLM" chat
run 2 "no model: pass --model DIR or set MODEL_NAME" env -u MODEL_NAME "$PAGELLM" worker

# ---- 3. a Hub id: resolved through the Hub cache (offline here: the message names the path) ----
export HF_HUB_OFFLINE=1 HF_HUB_CACHE="$dir/hub-cache"
for cmd in "generate --prompt hi --model" "chat --model" "serve --model" "worker --model" "tokenize --text hi --model"; do
  # shellcheck disable=SC2086
  run 1 "Qwen/Qwen2.5-0.5B-Instruct is not in the cache (HF_HUB_OFFLINE is set)" \
    "$PAGELLM" $cmd Qwen/Qwen2.5-0.5B-Instruct
  grep -qF "$dir/hub-cache/models--Qwen--Qwen2.5-0.5B-Instruct/refs/main" "$dir/err" ||
    fail "$cmd: the cache path looked up is not named"
done
(cd "$dir" && MODEL_NAME=meta-llama/Llama-3.1-8B run 1 "is not in the cache" "$PAGELLM" worker --test_input '{"input":{}}')
unset HF_HUB_OFFLINE HF_HUB_CACHE
# a local directory shaped like an id is a directory, not an id
mkdir -p "$dir/org" && cp -r "$m" "$dir/org/name"
(cd "$dir" && run 0 "" "$PAGELLM" generate --model org/name --prompt-ids 1,2 --max-tokens 1 --no-progress)

# ---- 4. one prefix per message ----
mkdir -p "$dir/broken" && echo '{"architectures": ["LlamaForCausalLM"], ' >"$dir/broken/config.json"
for cmd in generate serve chat; do
  extra=(); [ $cmd = generate ] && extra=(--prompt-ids 1)
  run 1 "config.json: not valid JSON" "$PAGELLM" $cmd --model "$dir/broken" "${extra[@]}"
  [ "$(grep -o "$dir/broken" "$dir/err" | wc -l)" = 1 ] || fail "$cmd: the directory is named twice: $(cat "$dir/err")"
done
echo "{{ raise_exception('boom') }}" >"$dir/raise.jinja"
echo "{% if %}" >"$dir/syntax.jinja"
for t in raise syntax; do
  run 1 "chat template: line 1" "$PAGELLM" tokenize --model "$m" --messages '[{"role":"user","content":"hi"}]' \
    --chat-template "$dir/$t.jinja"
  ! grep -q "chat template: chat template" "$dir/err" || fail "tokenize: repeated prefix: $(cat "$dir/err")"
  echo hi >"$dir/in"
  set +e
  "$PAGELLM" chat --model "$m" --chat-template "$dir/$t.jinja" <"$dir/in" >/dev/null 2>"$dir/err"
  set -e
  grep -q "line 1" "$dir/err" || fail "chat: no template error: $(cat "$dir/err")"
  ! grep -qi "chat[ _]template: chat template" "$dir/err" || fail "chat: repeated prefix: $(cat "$dir/err")"
done
run 2 "no model: pass --model DIR" env -u PAGELLM_MODEL "$PAGELLM" serve
! grep -q "''" "$dir/err" || fail "serve: empty quotes in '$(cat "$dir/err")'"

# ---- 5. --max-model-len above the model's length ----
run 2 "pass --allow-long-max-model-len or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1" \
  "$PAGELLM" generate --model "$m" --prompt-ids 1 --max-model-len 2049
run 0 "" "$PAGELLM" generate --model "$m" --prompt-ids 1 --max-tokens 1 --max-model-len 2049 --allow-long-max-model-len --no-progress
VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 run 0 "" "$PAGELLM" generate --model "$m" --prompt-ids 1 --max-tokens 1 --max-model-len 4096 --no-progress
VLLM_ALLOW_LONG_MAX_MODEL_LEN=0 run 2 "above the model's length" "$PAGELLM" generate --model "$m" --prompt-ids 1 --max-model-len 4096
run 0 "" "$PAGELLM" generate --model "$m" --prompt-ids 1 --max-tokens 1 --max-model-len 2048 --no-progress

# ---- 6. help ----
run 0 "" "$PAGELLM" generate --help
[ "$(grep -c -- "^  --model " "$dir/out")" = 1 ] || fail "generate --help lists --model $(grep -c -- "^  --model " "$dir/out") times"
for cmd in serve worker; do
  run 0 "" "$PAGELLM" $cmd --help
  for f in --override-generation-config --temperature --top-p --top-k --max-tokens --dtype --max-model-len --allow-long-max-model-len; do
    grep -q -- "$f" "$dir/out" || fail "$cmd --help does not list $f"
  done
  for f in "--n N" "--logprobs K" "--stop STR" "--ignore-eos" "--beam-width"; do
    ! grep -q -- "$f" "$dir/out" || fail "$cmd --help lists the per-request $f"
  done
done
run 0 "" "$PAGELLM" chat --help
grep -q -- "--temperature" "$dir/out" || fail "chat --help"

# ---- 7. server-wide sampling defaults ----
greedy() { "$PAGELLM" generate --model "$m" --threads 1 --no-progress --json --temperature 0 --max-tokens "$1" \
  --prompt "The capital of France is" 2>/dev/null | python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["outputs"][0]["text"])'; }
want5=$(greedy 5)
want3=$(greedy 3)
# start_server NAME ARGS...: sets PID and PORT (polls the log; the loop only guards a hang)
start_server() {
  local name=$1; shift
  : >"$dir/$name.log" # exists before the poll reads it (under set -e a failed sed ends the test)
  "$PAGELLM" serve --model "$m" --port 0 --threads 1 "$@" >"$dir/$name.log" 2>&1 &
  PID=$!
  pids+=("$PID")
  for _ in $(seq 1 1200); do
    PORT=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/$name.log")
    [ -n "$PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/$name.log"; fail "server $name did not start"
}
complete() { # complete PORT BODY -> the first choice's text and completion_tokens
  curl -s --max-time 120 "http://127.0.0.1:$1/v1/completions" -H 'Content-Type: application/json' -d "$2" |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(d["choices"][0]["text"]); print(d["usage"]["completion_tokens"])'
}
start_server defaults --temperature 0 --max-tokens 5
got=$(complete "$PORT" '{"prompt": "The capital of France is"}')
[ "$got" = "$(printf '%s\n5' "$want5")" ] || fail "serve --temperature 0 --max-tokens 5: got '$got', want '$want5' (5)"
# a request's own field still wins
got=$(complete "$PORT" '{"prompt": "The capital of France is", "max_tokens": 3}')
[ "$got" = "$(printf '%s\n3' "$want3")" ] || fail "request max_tokens over the default: '$got'"
kill -TERM "$PID"; wait "$PID" || true
# the JSON form; a flag wins over the JSON's key
start_server json --override-generation-config '{"temperature": 0, "max_new_tokens": 9}' --max-tokens 3
got=$(complete "$PORT" '{"prompt": "The capital of France is"}')
[ "$got" = "$(printf '%s\n3' "$want3")" ] || fail "--override-generation-config + --max-tokens: '$got'"
kill -TERM "$PID"; wait "$PID" || true
# the worker: its per-mode defaults (temperature 0.7 for a bare prompt) yield to the operator's
out=$("$PAGELLM" worker --model "$m" --threads 1 --temperature 0 --max-tokens 5 \
  --test_input '{"input": {"prompt": "The capital of France is"}}' 2>/dev/null)
python3 - "$out" "$want5" <<'PY' || fail "worker --temperature 0 --max-tokens 5: $out"
import json, sys
d = json.loads(sys.argv[1])
(choice,) = d["output"][0]["choices"]
assert choice["tokens"] == [sys.argv[2]], choice
assert d["output"][0]["usage"]["output"] == 5, d
PY
echo "test_flags: passed"
