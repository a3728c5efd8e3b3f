#!/usr/bin/env bash
# test_faults.sh -- one request must never hurt another (docs/engine.md "Faults"),
# black-box on loopback:
#   1. a model whose vocab is padded past its tokenizer (pl-mkmodel default-padded:
#      1024 embedding rows, 960 token ids, as Qwen checkpoints are):
#      - serve: logit_bias, allowed_token_ids and prompt ids in the gap get a 400
#        naming the field and the id; ids the tokenizer has are served;
#      - generate: sampling at temperature 2 reaches gap ids (random weights); they
#        decode to "" and every prompt finishes normally;
#   2. a backend failure (test hook PAGELLM_TEST_FAIL_STEP_FILE: while the file
#      exists, model runs fail -- all, or those whose batch holds the token id the
#      file names):
#      - serve: a 500 error object, or an SSE error event then [DONE]; never a
#        normal or "abort" finish; the reply comes without another request
#        arriving; /health stays 200; served again once the backend is back;
#        SIGTERM exits 0;
#      - generate: the prompts that completed are printed, the failed one is
#        marked with its error, exit status 1;
#      - worker (--test_input): the job fails with "error", exit status 1.
# No timing assumptions: curl --max-time and `timeout` are hang guards only.
# Env: PAGELLM (binary; pl-mkmodel sits next to it).
set -euo pipefail
bin=${PAGELLM:?PAGELLM must point at the pagellm binary}
mkmodel=$(dirname "$bin")/pl-mkmodel
if ! command -v python3 >/dev/null || ! command -v curl >/dev/null; then
  echo "SKIP: python3 and curl are needed"
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
export PAGELLM_LOG_LEVEL=warn
"$mkmodel" --preset default-padded --out "$work/padded" >/dev/null
"$mkmodel" --preset default --out "$work/model" >/dev/null

# start_server NAME MODEL ARGS...: starts it in the background; sets PID and PORT.
start_server() {
  local name=$1 model=$2; shift 2
  : >"$work/$name.log" # exists before the poll reads it (under set -e a failed sed ends the test)
  "$bin" serve --model "$model" --port 0 --threads 1 "$@" >"$work/$name.log" 2>&1 &
  PID=$!
  pids+=("$PID")
  for _ in $(seq 1 600); do
    PORT=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/$name.log")
    [ -n "$PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; cat "$work/$name.log"; exit 1
}

# post PATH BODY OUT: POSTs JSON, writes the body to OUT, prints the status.
post() {
  curl -sS --max-time 120 -o "$3" -w '%{http_code}' "http://127.0.0.1:$PORT$1" \
    -H "Content-Type: application/json" -d "$2" || echo "curl-failed"
}

# check_error FILE STATUS PARAM NEEDLE: an OpenAI error object with that code and param.
check_error() {
  python3 - "$@" <<'PY'
import json, sys
f, status, param, needle = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
e = json.load(open(f))["error"]
assert e["code"] == status, e
assert (e["param"] or "") == param, e
assert needle in e["message"], e
PY
}

# ---- 1a. serve: ids in the gap are refused at admission -------------------------------
start_server padded "$work/padded"
for case in \
  'logit_bias|{"prompt":"hi","max_tokens":1,"logit_bias":{"1000":100}}|1000' \
  'logit_bias|{"prompt":"hi","max_tokens":1,"logit_bias":{"960":5}}|960' \
  'allowed_token_ids|{"prompt":"hi","max_tokens":1,"allowed_token_ids":[5,1023]}|1023' \
  'prompt|{"prompt":[5,1000],"max_tokens":1}|1000' \
  'prompt|{"prompt":[5,1024],"max_tokens":1}|1024'; do
  IFS='|' read -r param body needle <<<"$case"
  code=$(post /v1/completions "$body" "$work/r")
  if [ "$code" = 400 ] && check_error "$work/r" 400 "$param" "$needle" 2>"$work/err"; then
    ok "padded vocab: $param $needle refused with a 400"
  else
    bad "padded vocab: $body -> $code $(cat "$work/r") $(cat "$work/err")"
  fi
done
code=$(post /v1/chat/completions \
  '{"messages":[{"role":"user","content":"hi"}],"max_tokens":1,"logit_bias":{"1000":100}}' "$work/r")
[ "$code" = 400 ] && check_error "$work/r" 400 logit_bias 1000 \
  && ok "padded vocab: chat logit_bias refused" || bad "padded vocab chat: $code $(cat "$work/r")"
code=$(post /v1/completions \
  '{"prompt":[5,959],"max_tokens":2,"logit_bias":{"959":1},"allowed_token_ids":[7,959]}' "$work/r")
[ "$code" = 200 ] && grep -q '"finish_reason":"length"' "$work/r" \
  && ok "padded vocab: ids the tokenizer has are served" || bad "padded vocab ok ids: $code $(cat "$work/r")"
kill -TERM "$PID"; wait "$PID" || true

# ---- 1b. generate: sampled gap ids decode to "" ----------------------------------------
if timeout 300 "$bin" generate --model "$work/padded" --threads 1 --prompt hi --prompt "Once upon" \
     --temperature 2 --seed 3 --n 4 --max-tokens 100 --ignore-eos --json --no-progress \
     >"$work/gen" 2>"$work/gen.err" \
   && python3 - "$work/gen" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
assert len(lines) == 2, lines
gap = 0
for j in lines:
    assert "error" not in j, j
    assert len(j["outputs"]) == 4
    for o in j["outputs"]:
        assert o["finish_reason"] == "length" and len(o["token_ids"]) == 100, o
        gap += sum(1 for t in o["token_ids"] if t >= 960)
assert gap > 0, "no gap id sampled"
PY
then
  ok "generate: gap ids sampled at temperature 2 decode to \"\", every prompt finishes"
else
  bad "generate on the padded vocab: $(tail -c 400 "$work/gen.err")"
fi

# ---- 2a. serve: a backend failure reaches every client as an error ---------------------
hook=$work/fail-step
PAGELLM_TEST_FAIL_STEP_FILE=$hook start_server failing "$work/model"
code=$(post /v1/completions '{"prompt":"hi","max_tokens":2}' "$work/r")
[ "$code" = 200 ] && ok "backend failure: served while the backend works" || bad "before: $code $(cat "$work/r")"
: >"$hook"
code=$(post /v1/completions '{"prompt":"hi","max_tokens":1}' "$work/r")
[ "$code" = 500 ] && check_error "$work/r" 500 "" "backend failure" \
  && ok "backend failure: non-streaming reply is a 500 error object" \
  || bad "backend failure non-stream: $code $(cat "$work/r")"
code=$(post /v1/completions '{"prompt":"hi","max_tokens":1,"stream":true}' "$work/s")
if [ "$code" = 200 ] && python3 - "$work/s" <<'PY'
import json, sys
events = [e[len("data: "):] for e in open(sys.argv[1]).read().split("\n\n") if e]
assert events[-1] == "[DONE]", events
err = json.loads(events[-2])["error"]
assert err["code"] == 500 and "backend failure" in err["message"], err
for e in events[:-2]:
    for c in json.loads(e).get("choices", []):
        assert c.get("finish_reason") is None, e
PY
then
  ok "backend failure: a stream gets an SSE error event, then [DONE], no finish_reason"
else
  bad "backend failure stream: $code $(cat "$work/s")"
fi
code=$(post /v1/chat/completions \
  '{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true}' "$work/s")
[ "$code" = 200 ] && grep -q '"error":{' "$work/s" && tail -c 16 "$work/s" | grep -q 'data: \[DONE\]' \
  && ! grep -q '"finish_reason":"abort"' "$work/s" \
  && ok "backend failure: a chat stream too" || bad "backend failure chat: $code $(cat "$work/s")"
code=$(curl -s --max-time 60 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/health")
[ "$code" = 200 ] && ok "backend failure: /health 200 (nothing left hanging)" || bad "health: $code"
metrics=$(curl -s --max-time 60 "http://127.0.0.1:$PORT/metrics")
grep -q '^vllm:num_requests_running{model_name="[^"]*",engine="0"} 0$' <<<"$metrics" \
  && grep -q 'finished_reason="abort"} 0$' <<<"$metrics" \
  && ok "backend failure: nothing running, no abort counted" || bad "metrics: $metrics"
rm -f "$hook"
code=$(post /v1/completions '{"prompt":"hi","max_tokens":2}' "$work/r")
[ "$code" = 200 ] && grep -q '"finish_reason":"length"' "$work/r" \
  && ok "backend failure: served again once the backend is back" || bad "after: $code $(cat "$work/r")"
kill -TERM "$PID"
rc=0; timeout 120 tail --pid="$PID" -f /dev/null || rc=$?
[ "$rc" = 0 ] && ok "backend failure: SIGTERM exits" || bad "SIGTERM: still running"
wait "$PID" && ok "backend failure: exit status 0" || bad "backend failure: exit status $?"

# ---- 2b. generate: the failed prompt is marked, the other completes ---------------------
echo 77 >"$hook" # runs whose batch holds token 77 fail: prompt 0's prefill
rc=0
PAGELLM_TEST_FAIL_STEP_FILE=$hook timeout 300 "$bin" generate --model "$work/model" --threads 1 \
  --prompt-ids 10,77,12 --prompt-ids 10,11,12 --max-num-seqs 1 --temperature 0 --ignore-eos \
  --max-tokens 4 --json --no-progress >"$work/gen" 2>"$work/gen.err" || rc=$?
if [ "$rc" = 1 ] && grep -q "prompt 0 failed: .*backend failure" "$work/gen.err" \
   && python3 - "$work/gen" <<'PY'
import json, sys
a, b = [json.loads(l) for l in open(sys.argv[1])]
assert "backend failure" in a["error"] and a["outputs"][0]["finish_reason"] == "error", a
assert "error" not in b and b["outputs"][0]["finish_reason"] == "length", b
assert len(b["outputs"][0]["token_ids"]) == 4, b
PY
then
  ok "generate: the completed prompt is printed, the failed one marked, exit 1"
else
  bad "generate with a failing prompt: rc $rc $(cat "$work/gen") $(tail -c 300 "$work/gen.err")"
fi

# ---- 2c. worker: the job fails --------------------------------------------------------
: >"$hook"
rc=0
PAGELLM_TEST_FAIL_STEP_FILE=$hook timeout 300 "$bin" worker --model "$work/model" --threads 1 \
  --test_input '{"input": {"prompts": ["hi", "there"], "max_tokens": 4}}' >"$work/job" 2>&1 || rc=$?
if [ "$rc" = 1 ] && grep -q '^{"error":".*backend failure' "$work/job" && ! grep -q '"output"' "$work/job"; then
  ok "worker: the job fails with the error, exit 1"
else
  bad "worker job: rc $rc $(cat "$work/job")"
fi

exit $fail
