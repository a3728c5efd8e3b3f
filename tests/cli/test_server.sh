#!/usr/bin/env bash
# test_server.sh -- `pagellm serve` black-box on loopback with the built-in tiny model:
#   1. the official `openai` npm client, LangChain JS, structured output (server_structured),
#      and bad input / load / disconnect
#      tests (tests/node/server_*.mjs; references: `pagellm generate`, @huggingface/jinja),
#      tool calling on a third server (--enable-auto-tool-choice, a Hermes-style template),
#      Responses function tools and text.format on it and on a fourth (--tool-call-parser
#      llama3_json),
#      the embeddings / Responses / models.retrieve / lenient-body tests with a second
#      server running --reasoning-parser deepseek_r1 under a template that opens <think>;
#   2. the curl examples of docs/server.md;
#   3. /health turning 503 while the engine loop is stalled (test hook), 200 again after;
#   4. SIGTERM / SIGINT: in-flight streams finish within the grace period (or end with
#      finish_reason "abort" past it), new connections are refused, exit status 0;
#   5. the serving log: vLLM's stats line and its fields, the per-request lines (no prompt
#      text unless --max-log-len), --disable-log-stats, the unknown-field warning.
#   6. the port is bound before the model loads: a port in use is the error reported.
# Env: PAGELLM (binary; pl-mkmodel sits next to it), PL_SOURCE_DIR (set by CTest).
set -euo pipefail
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${PAGELLM:?PAGELLM must point at the pagellm binary}
mkmodel=$(dirname "$bin")/pl-mkmodel
if ! command -v node >/dev/null || [ ! -d "$src/tests/node/node_modules/openai" ]; then
  echo "SKIP: node and tests/node/node_modules (openai, @langchain/openai) are needed"
  exit 0
fi
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
"$mkmodel" --preset default --out "$work/model" >/dev/null

# No check here depends on how fast the machine is (CI is a loaded 2-core machine): waits
# poll a condition under a hang guard (wait_for), never sleep a fixed time expecting
# something to have happened.
# wait_for WHAT CMD...: polls CMD every 50 ms until it succeeds; exits the test after 120 s.
wait_for() {
  local what=$1; shift
  for _ in $(seq 1 2400); do "$@" && return 0; sleep 0.05; done
  echo "FAIL hang guard: $what not seen in 120 s"; exit 1
}

# start_server NAME ARGS...: starts it in the background; sets PID and PORT.
start_server() {
  local name=$1; shift
  # the log exists before the poll below reads it (the child opens it after the fork, and
  # under set -e a failed sed would end the test)
  : >"$work/$name.log"
  "$bin" serve --model "$work/model" --port 0 "$@" >"$work/$name.log" 2>&1 &
  PID=$!
  pids+=("$PID")
  for _ in $(seq 1 2400); do
    PORT=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$name.log")
    [ -n "$PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; cat "$work/$name.log"; exit 1
}

# ---- 1. real clients ---------------------------------------------------------------
KEY=sk-pagellm-test
start_server main --served-model-name tiny tiny-alias --api-key "$KEY" --max-body-bytes 65536 \
  --timeout-keep-alive 2 --shutdown-grace-period 600
MAIN_PID=$PID
MAIN_PORT=$PORT
# a chat template whose generation prompt opens the think block (DeepSeek-R1's way)
THINK_TEMPLATE='{% for m in messages %}<|im_start|>{{ m.role }}
{{ m.content }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
<think>
{% endif %}'
printf '%s' "$THINK_TEMPLATE" >"$work/think.jinja"
start_server reason --served-model-name tiny --reasoning-parser deepseek_r1 \
  --chat-template "$work/think.jinja"
REASON_PID=$PID
REASON_PORT=$PORT
# tool calling: --enable-auto-tool-choice, the parser taken from a Hermes-style template
TOOLS_TEMPLATE=$src/tests/fixtures/chat_template/templates/hermes_tools.jinja
start_server tools --served-model-name tiny --api-key "$KEY" --enable-auto-tool-choice \
  --chat-template "$TOOLS_TEMPLATE"
TOOLS_PORT=$PORT
# the same with the llama3_json parser (its calls are plain JSON, which text.format can force)
start_server llama3 --served-model-name tiny --api-key "$KEY" --enable-auto-tool-choice \
  --tool-call-parser llama3_json
export PL_LLAMA3_TOOLS_BASE_URL=http://127.0.0.1:$PORT
export PL_TOOLS_BASE_URL=http://127.0.0.1:$TOOLS_PORT PL_TOOLS_TEMPLATE=$TOOLS_TEMPLATE
export PL_BASE_URL=http://127.0.0.1:$MAIN_PORT PL_API_KEY=$KEY PL_MODEL_NAME=tiny PAGELLM=$bin \
  PL_MODEL_DIR=$work/model PL_MAX_BODY_BYTES=65536 PL_KEEP_ALIVE_S=2 \
  PL_REASONING_BASE_URL=http://127.0.0.1:$REASON_PORT PL_THINK_TEMPLATE=$THINK_TEMPLATE
PORT=$MAIN_PORT
for t in server_openai server_langchain server_robustness server_api server_structured server_tools \
         server_responses_tools; do
  echo "-- $t"
  if node "$src/tests/node/$t.mjs"; then ok "$t"; else bad "$t"; fi
done

# ---- 5. a port in use is reported before the model is even looked at -----------------------
rc=0
out=$("$bin" serve --model "$work/no-such-model" --port "$MAIN_PORT" 2>&1) || rc=$?
if [ "$rc" != 0 ] && grep -q "cannot listen on .*:$MAIN_PORT" <<<"$out" && ! grep -q "no-such-model" <<<"$out"; then
  ok "port in use: reported before loading the model"
else
  bad "port in use: rc $rc: $out"
fi

# ---- 2. the curl examples of docs/server.md ----------------------------------------------
export PAGELLM_API_KEY=$KEY
base=http://127.0.0.1:$PORT
out=$(curl -sS "$base/v1/completions" -H "Authorization: Bearer $PAGELLM_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"model": "tiny", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}')
want=$("$bin" generate --model "$work/model" --prompt "The capital of France is" --max-tokens 8 \
  --temperature 0 --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).outputs[0].text))')
got=$(printf '%s' "$out" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).choices[0].text))')
[ "$got" = "$want" ] && ok "docs: curl completion equals pagellm generate" || bad "docs: curl completion: '$got' vs '$want'"
out=$(curl -sS -N "$base/v1/chat/completions" -H "Authorization: Bearer $PAGELLM_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "stream": true}')
case "$out" in
  "data: {"*'"delta":{"role":"assistant"'*'data: [DONE]') ok "docs: curl streaming chat" ;;
  *) bad "docs: curl streaming chat: $out" ;;
esac
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/health")
[ "$code" = 200 ] && ok "docs: curl /health" || bad "docs: /health $code"
metrics=$(curl -s "$base/metrics")
grep -q '^vllm:num_requests_running{model_name="tiny",engine="0"} 0$' <<<"$metrics" \
  && ok "docs: curl /metrics" || bad "docs: /metrics"
# the JS examples of docs/server.md, with the test packages next to them
mkdir -p "$work/examples"
cp "$src"/docs/examples/*.mjs "$work/examples/"
ln -s "$src/tests/node/node_modules" "$work/examples/node_modules"
if out=$(PAGELLM_BASE_URL=$base/v1 node "$work/examples/openai_client.mjs" 2>&1) \
   && printf '%s\n' "$out" | grep -q '^chat: "' \
   && [ "$(printf '%s\n' "$out" | sed -n 's/^completion: //p' | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s)))')" \
        = "$("$bin" generate --model "$work/model" --prompt "The capital of France is" --max-tokens 16 --temperature 0 --json 2>/dev/null | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>process.stdout.write(JSON.parse(s).outputs[0].text))')" ]; then
  ok "docs: examples/openai_client.mjs"
else
  bad "docs: examples/openai_client.mjs: $out"
fi
if out=$(PAGELLM_BASE_URL=$base/v1 PAGELLM_MODEL=tiny node "$work/examples/langchain_rag.mjs" 2>&1) \
   && printf '%s\n' "$out" | grep -q '^answer: "'; then
  ok "docs: examples/langchain_rag.mjs"
else
  bad "docs: examples/langchain_rag.mjs: $out"
fi
unset PAGELLM_API_KEY
kill -TERM "$REASON_PID"; wait "$REASON_PID" || true
grep -q "The following fields were present in the request but ignored: {.*'store'.*}" "$work/main.log" \
  && ok "log: unknown fields warned" || bad "log: no warning about ignored fields"
grep -q 'Received request' "$work/main.log" && bad "log: request lines without --enable-log-requests" \
  || ok "log: no request lines by default"

# ---- 4a. SIGTERM with a stream in flight: it finishes, then exit 0 ---------------------------
curl -sS -N "$base/v1/completions" -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
  -d '{"model": "tiny", "prompt": "Once", "max_tokens": 300, "ignore_eos": true, "stream": true}' \
  >"$work/stream1" 2>/dev/null &
curl_pid=$!
wait_for "the first bytes of the stream" test -s "$work/stream1"
kill -TERM "$MAIN_PID"
refused() { ! curl -s -o /dev/null "$base/health"; }
wait_for "the listener closed after SIGTERM" refused
ok "SIGTERM: stops accepting"
wait "$curl_pid" || true
rc=0; wait "$MAIN_PID" || rc=$?
[ "$rc" = 0 ] && ok "SIGTERM: exit status 0" || bad "SIGTERM: exit status $rc"
if tail -c 200 "$work/stream1" | grep -q '"finish_reason":"length"' && [ "$(tail -n 2 "$work/stream1" | head -n 1)" = "data: [DONE]" ]; then
  ok "SIGTERM: the in-flight stream finished"
else
  bad "SIGTERM: stream cut: $(tail -c 300 "$work/stream1")"
fi

# ---- 4b. SIGINT past the grace period: the stream ends with "abort", exit 0 --------------------
start_server grace --shutdown-grace-period 0.3
curl -sS -N "http://127.0.0.1:$PORT/v1/completions" -H "Content-Type: application/json" \
  -d '{"prompt": "Once", "max_tokens": 1900, "ignore_eos": true, "stream": true}' \
  >"$work/stream2" 2>/dev/null &
curl_pid=$!
wait_for "the first bytes of the stream" test -s "$work/stream2"
kill -INT "$PID"
wait "$curl_pid" || true
rc=0; wait "$PID" || rc=$?
[ "$rc" = 0 ] && ok "SIGINT: exit status 0" || bad "SIGINT: exit status $rc"
if grep -q '"finish_reason":"abort"' "$work/stream2" && [ "$(tail -n 2 "$work/stream2" | head -n 1)" = "data: [DONE]" ]; then
  ok "SIGINT: past the grace period the stream ends with abort and [DONE]"
else
  bad "SIGINT: $(tail -c 300 "$work/stream2")"
fi

# ---- 5. serving logs ---------------------------------------------------------------------------
# wait_log FILE REGEX: polls the server log (hang guard 60 s)
wait_log() {
  for _ in $(seq 1 600); do grep -qE "$2" "$1" && return 0; sleep 0.1; done
  return 1
}
start_server logs --log-stats-interval 0.5 --enable-log-requests
base=http://127.0.0.1:$PORT
curl -sS "$base/v1/completions" -H "Content-Type: application/json" \
  -d '{"prompt": "Secret prompt text", "max_tokens": 6, "temperature": 0}' >/dev/null
num='[0-9]+\.[0-9]'
line_re="Avg prompt throughput: $num tokens/s, Avg generation throughput: $num tokens/s, Running: [0-9]+ reqs, Swapped: 0 reqs, Pending: [0-9]+ reqs, GPU KV cache usage: $num%, Prefix cache hit rate: $num%"
if wait_log "$work/logs.log" "$line_re"; then
  ok "log: the stats line has every field"
else
  bad "log: no stats line: $(cat "$work/logs.log")"
fi
# the line that saw the request counts its tokens (the prompt is several tokens, 6 generated)
if wait_log "$work/logs.log" "Avg prompt throughput: [1-9][0-9]*\.[0-9] tokens/s" \
   && grep -E "$line_re" "$work/logs.log" | grep -qE "Avg generation throughput: [1-9][0-9]*\.[0-9]"; then
  ok "log: throughput counted"
else
  bad "log: throughput: $(grep -E 'Avg prompt' "$work/logs.log")"
fi
# quiet when idle: after the trailing zero line no more lines come
n1=$(grep -cE "$line_re" "$work/logs.log")
wait_log "$work/logs.log" "Avg prompt throughput: 0\.0 tokens/s, Avg generation throughput: 0\.0" || true
sleep 2
n2=$(grep -cE "$line_re" "$work/logs.log"); sleep 2; n3=$(grep -cE "$line_re" "$work/logs.log")
[ "$n3" = "$n2" ] && [ "$n2" -ge "$n1" ] && ok "log: quiet while idle" || bad "log: lines while idle ($n1 $n2 $n3)"
if wait_log "$work/logs.log" 'Received request cmpl-[0-9a-f-]+: route /v1/completions, prompts 1, prompt_tokens [0-9]+, params \{' \
   && wait_log "$work/logs.log" 'Finished request cmpl-[0-9a-f-]+: completed, prompt_tokens [0-9]+, completion_tokens 6'; then
  ok "log: request lines"
else
  bad "log: request lines: $(cat "$work/logs.log")"
fi
grep -q "Secret" "$work/logs.log" && bad "log: the prompt text was logged" || ok "log: no prompt text"
kill -TERM "$PID"; wait "$PID" || true
start_server logs2 --enable-log-requests --max-log-len 6 --disable-log-stats --log-stats-interval 0.2
base=http://127.0.0.1:$PORT
curl -sS "$base/v1/embeddings" -H "Content-Type: application/json" -d '{"input": "Secret prompt text"}' >/dev/null
if wait_log "$work/logs2.log" 'Received request embd-[0-9a-f-]+: route /v1/embeddings, prompts 1, prompt_tokens [0-9]+, params \{"pooling":"last","normalize":true\}, prompt: "Secret"$'; then
  ok "log: --max-log-len shows that many bytes of the prompt"
else
  bad "log: --max-log-len: $(cat "$work/logs2.log")"
fi
sleep 1.5
grep -q "Avg prompt throughput" "$work/logs2.log" && bad "log: --disable-log-stats printed stats" \
  || ok "log: --disable-log-stats"
kill -TERM "$PID"; wait "$PID" || true
# bad flag values are refused
timeout 60 "$bin" serve --model "$work/model" --reasoning-parser granite >/dev/null 2>&1 && bad "flags: bad --reasoning-parser accepted" || ok "flags: bad --reasoning-parser refused"
timeout 60 "$bin" serve --model "$work/model" --tool-call-parser pythonic --enable-auto-tool-choice \
  >/dev/null 2>&1 && bad "flags: bad --tool-call-parser accepted" || ok "flags: bad --tool-call-parser refused"
# the tiny model's ChatML template shows no tool-call format: auto needs --tool-call-parser
out=$(timeout 60 "$bin" serve --model "$work/model" --port 0 --enable-auto-tool-choice 2>&1) \
  && bad "flags: --enable-auto-tool-choice with no format started" \
  || { grep -q -- "--tool-call-parser" <<<"$out" && ok "flags: --enable-auto-tool-choice needs a format" \
       || bad "flags: --enable-auto-tool-choice: $out"; }
timeout 60 "$bin" serve --model "$work/model" --override-pooler-config '{"pooling_type":"CLS"}' >/dev/null 2>&1 \
  && bad "flags: CLS pooling accepted" || ok "flags: unsupported pooling refused"

# ---- 3. /health when the engine loop is stalled ------------------------------------------
touch "$work/stall"
PAGELLM_TEST_STALL_FILE=$work/stall start_server stall --health-stall-timeout 0.5
base=http://127.0.0.1:$PORT
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/health")
[ "$code" = 200 ] && ok "health: 200 while idle" || bad "health idle: $code"
curl -sS "$base/v1/completions" -H "Content-Type: application/json" \
  -d '{"prompt": "x", "max_tokens": 3}' >"$work/stalled" 2>/dev/null &
curl_pid=$!
health_503() { [ "$(curl -s -o "$work/health" -w '%{http_code}' "$base/health")" = 503 ]; }
wait_for "/health 503 while the loop is stalled" health_503
grep -q '"error"' "$work/health" && ok "health: 503 while the loop is stalled" \
  || bad "health stalled: $(cat "$work/health")"
rm -f "$work/stall"
wait "$curl_pid" || true
grep -q '"finish_reason"' "$work/stalled" && ok "health: the stalled request completes after" \
  || bad "stalled request: $(cat "$work/stalled")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$base/health")
[ "$code" = 200 ] && ok "health: 200 again" || bad "health after: $code"
kill -TERM "$PID"; wait "$PID" || true

exit $fail
