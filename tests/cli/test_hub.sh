#!/usr/bin/env bash
# test_hub.sh -- models by name (src/model/hub*.c, `pagellm download`, --model ORG/NAME,
# the worker's MODEL_NAME) against a fake Hugging Face Hub on loopback
# (tests/node/fake_hub.mjs: the API, resolve with a 302 to a second host:port, Range,
# gated repos, faults). Covers: huggingface_hub's cache layout (blobs named by sha256 /
# git blob sha1, relative snapshot symlinks, refs without newline, .no_exist, .locks),
# revisions by branch and commit, include/exclude, --local-dir, --download-dir,
# HF_HUB_CACHE, tokens (HF_TOKEN, the token file, never sent to the storage host), each
# error message (gated, 404 repo/revision, pickles only, checksum, disk, offline and
# unreachable with the path looked up), resume after a cut (in process) and after a
# kill (across processes), two concurrent downloaders, `pagellm serve ORG/NAME` from an
# empty cache and again offline, tokenize fetching only the tokenizer, and the worker
# with MODEL_NAME / MODEL_REVISION / BASE_PATH. No step depends on how fast anything
# runs: held transfers are released by the test, and waits are polls with hang guards.
# Env: PAGELLM (binary; pl-mkmodel sits next to it), PL_SOURCE_DIR (set by CTest).
set -euo pipefail
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
bin=${PAGELLM:?PAGELLM must point at the pagellm binary}
mkmodel=$(dirname "$bin")/pl-mkmodel
if ! command -v node >/dev/null || ! command -v curl >/dev/null; then
  echo "SKIP: node and curl are needed"
  exit 0
fi
fail=0
ok() { echo "ok   $1"; }
bad() { echo "FAIL $1"; fail=1; }
check() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
# has FILE TEXT: FILE contains TEXT (fixed string)
has() { grep -qF -- "$2" "$1" 2>/dev/null; }

w=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  rm -rf "$w"
}
trap cleanup EXIT
export PAGELLM_LOG_LEVEL=warn PL_HUB_RETRY_BASE_MS=20
unset HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_HUB_OFFLINE TRANSFORMERS_OFFLINE HF_HUB_CACHE \
  HUGGINGFACE_HUB_CACHE HF_TOKEN_PATH XDG_CACHE_HOME HF_HUB_DISABLE_PROGRESS_BARS \
  RUNPOD_WEBHOOK_GET_JOB MODEL_NAME MODEL_REVISION BASE_PATH 2>/dev/null || true

"$mkmodel" --preset default --out "$w/m/default" >/dev/null
"$mkmodel" --preset llama-sharded --out "$w/m/sharded" >/dev/null
mkdir -p "$w/m/pickles"
cp "$w/m/default/config.json" "$w/m/pickles/"
printf 'not really a pickle' >"$w/m/pickles/pytorch_model.bin"
D=$w/m/default
cat >"$w/hub.json" <<EOF
{"tokens": ["hf_good"],
 "repos": {
  "tiny/llama": {"revisions": {
      "main": {"dir": "$D", "files": {"README.md": "# tiny", "pytorch_model.bin": "pickle"}},
      "dev": {"dir": "$D", "omit": ["generation_config.json"]}}},
  "tiny/old-name": {"renamedTo": "tiny/llama"},
  "tiny/sharded": {"revisions": {"main": {"dir": "$w/m/sharded",
      "files": {"consolidated.safetensors": "not in the index"}}}},
  "tiny/pickles": {"revisions": {"main": {"dir": "$w/m/pickles"}}},
  "tiny/gated": {"gated": true, "revisions": {"main": {"dir": "$D"}}},
  "tiny/flaky": {"revisions": {"main": {"dir": "$D"}},
      "faults": {"model.safetensors": {"cutAfter": 100000, "cutTimes": 2},
                 "tokenizer.json": {"cutAfter": 1000, "cutTimes": 1, "slow": true}}},
  "tiny/held1": {"revisions": {"main": {"dir": "$D"}},
      "faults": {"model.safetensors": {"holdAfter": 1000000}}},
  "tiny/held2": {"revisions": {"main": {"dir": "$D"}},
      "faults": {"model.safetensors": {"holdAfter": 1000000}}},
  "tiny/corrupt": {"revisions": {"main": {"dir": "$D"}},
      "faults": {"model.safetensors": {"corrupt": true}}},
  "tiny/corrupt-config": {"revisions": {"main": {"dir": "$D"}},
      "faults": {"config.json": {"corrupt": true}}},
  "tiny/huge": {"revisions": {"main": {"dir": "$D"}},
      "faults": {"model.safetensors": {"advertiseSize": 1000000000000000}}}
 }}
EOF
node "$src/tests/node/fake_hub.mjs" "$w/hub.json" >"$w/hub.out" 2>"$w/hub.err" &
pids+=("$!")
for _ in $(seq 1 600); do
  grep -q READY "$w/hub.out" 2>/dev/null && break
  sleep 0.1
done
read -r _ HUB_PORT CDN_PORT <"$w/hub.out" || { echo "fake hub did not start"; cat "$w/hub.err"; exit 1; }
HUB=http://127.0.0.1:$HUB_PORT
export HF_ENDPOINT=$HUB

# A port nothing listens on (asked of the OS, then closed): "no network".
DEAD_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

# log_count FILTER: requests the fake saw matching a JS predicate over r (server, method,
# url, range, auth).
log_count() {
  curl -s "$HUB/_log" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>{
    const f=(r)=>($1);console.log(JSON.parse(s).filter(f).length)})"
}
api_sha() { curl -s "$HUB/api/models/$1/revision/$2" | node -e "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>console.log(JSON.parse(s).sha))"; }
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
gitsha_of() { node -e 'const b=require("fs").readFileSync(process.argv[1]);console.log(require("crypto").createHash("sha1").update(`blob ${b.length}\0`).update(b).digest("hex"))' "$1"; }
# wait_for CMD: polls a condition (hang guard 120 s)
wait_for() { for _ in $(seq 1 1200); do eval "$1" && return 0; sleep 0.1; done; return 1; }

MAIN=$(api_sha tiny/llama main)
DEV=$(api_sha tiny/llama dev)
check '[ ${#MAIN} = 40 ] && [ ${#DEV} = 40 ] && [ "$MAIN" != "$DEV" ]' "fake hub: two revisions"

# ---- 1. download and the cache layout -------------------------------------------------
export HF_HOME=$w/home
repo=$HF_HOME/hub/models--tiny--llama
snap=$repo/snapshots/$MAIN
HF_TOKEN=hf_good "$bin" download tiny/llama >"$w/dl.out" 2>"$w/dl.err" && rc=0 || rc=$?
check '[ $rc = 0 ]' "download tiny/llama (rc $rc)"
check '[ "$(cat "$w/dl.out")" = "$snap" ]' "prints the snapshot directory"
check '[ "$(cat "$repo/refs/main")" = "$MAIN" ] && [ "$(wc -c <"$repo/refs/main")" = 40 ]' \
  "refs/main holds the commit, no newline"
for f in config.json generation_config.json tokenizer.json tokenizer_config.json; do
  want=$(gitsha_of "$D/$f")
  check '[ "$(readlink "$snap/$f")" = "../../blobs/$want" ] && cmp -s "$snap/$f" "$D/$f"' \
    "$f -> ../../blobs/<git blob sha1>"
done
want=$(sha256_of "$D/model.safetensors")
check '[ "$(readlink "$snap/model.safetensors")" = "../../blobs/$want" ] && cmp -s "$snap/model.safetensors" "$D/model.safetensors"' \
  "model.safetensors -> ../../blobs/<sha256>"
check '[ -f "$HF_HOME/hub/.locks/models--tiny--llama/$want.lock" ]' "lock file in .locks/models--tiny--llama"
check '[ ! -e "$snap/README.md" ] && [ ! -e "$snap/pytorch_model.bin" ]' "README and pickle not fetched"
check 'has "$w/dl.err" "skipping 1 pickle file"' "says it skips the pickle"
check '[ -f "$repo/.no_exist/$MAIN/chat_template.jinja" ] && [ -f "$repo/.no_exist/$MAIN/tokenizer.model" ] && [ ! -e "$repo/.no_exist/$MAIN/config.json" ]' \
  ".no_exist marks the usual files the repo lacks"
check '[ -z "$(find "$repo/blobs" -name "*.incomplete")" ]' "no .incomplete left"
check '[ "$(log_count "r.server===\"cdn\"")" -ge 1 ]' "LFS bytes came from the second host"
check '[ "$(log_count "r.server===\"cdn\" && r.auth")" = 0 ]' "the token never went to the storage host"
check '[ "$(log_count "r.server===\"hub\" && r.url.startsWith(\"/tiny/llama/resolve/\") && r.auth===\"Bearer hf_good\"")" -ge 5 ]' \
  "the Hub got the token"
"$bin" generate --model "$snap" --prompt-ids 1,2 --max-tokens 2 --temperature 0 >/dev/null 2>&1 \
  && ok "the snapshot loads" || bad "the snapshot loads"

# again: nothing transferred
before=$(log_count 'r.server==="cdn" || r.url.includes("/resolve/")')
"$bin" download tiny/llama >"$w/dl2.out" 2>"$w/dl2.err" && rc=0 || rc=$?
after=$(log_count 'r.server==="cdn" || r.url.includes("/resolve/")')
check '[ $rc = 0 ] && [ "$before" = "$after" ] && [ "$(cat "$w/dl2.out")" = "$snap" ]' \
  "a second download transfers nothing"

# ---- 2. revisions -----------------------------------------------------------------------
before=$(log_count 'r.server==="cdn"')
"$bin" download tiny/llama --revision dev >"$w/dev.out" 2>"$w/dev.err" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/dev.out")" = "$repo/snapshots/$DEV" ]' "--revision dev (a branch)"
check '[ "$(cat "$repo/refs/dev")" = "$DEV" ]' "refs/dev written"
check '[ ! -e "$repo/snapshots/$DEV/generation_config.json" ] && [ -f "$repo/.no_exist/$DEV/generation_config.json" ]' \
  "dev's missing generation_config.json is in .no_exist"
check '[ "$(log_count "r.server===\"cdn\"")" = "$before" ]' "dev shares the weights blob (not fetched again)"
check 'has "$w/dev.err" "model.safetensors is already in the cache"' "says the blob was there"
"$bin" download tiny/llama --revision "$MAIN" >"$w/c.out" 2>"$w/c.err" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/c.out")" = "$snap" ] && [ ! -e "$repo/refs/$MAIN" ]' \
  "--revision COMMIT: no ref written for a commit"
"$bin" download tiny/llama --revision nope 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "tiny/llama has no revision '"'"'nope'"'"'" && has "$w/e" "give a branch, tag or commit that exists"' \
  "unknown revision: message"
"$bin" download tiny/nothing 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "no model tiny/nothing on $HUB (401)" && has "$w/e" "a private repo needs HF_TOKEN"' \
  "unknown repo, no token: message"
HF_TOKEN=hf_good "$bin" download tiny/nothing 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "no model tiny/nothing on $HUB (404)"' "unknown repo, with a token: 404 message"
"$bin" download not-an-id 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 2 ] && has "$w/e" "'"'"'not-an-id'"'"' is not a Hub model id of the form org/name"' "not a repo id: exit 2"
"$bin" generate --model tiny/nothing --prompt-ids 1 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "pagellm generate: no model tiny/nothing on"' "generate --model ORG/NAME that does not exist"

# a renamed repo: the Hub redirects (relative Location), token and all
HF_TOKEN=hf_good "$bin" download tiny/old-name >"$w/o.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ -f "$(cat "$w/o.out")/model.safetensors" ]' "a renamed repo follows the Hub's redirect"

# ---- 3. what is fetched ---------------------------------------------------------------
"$bin" download tiny/pickles 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "tiny/pickles has only PyTorch pickle weights (pytorch_model.bin)" && has "$w/e" "never downloads pickles"' \
  "pickle-only repo: message"
check '[ "$(log_count "r.url.includes(\"tiny/pickles/resolve\")")" = 0 ] && [ ! -e "$HF_HOME/hub/models--tiny--pickles" ]' \
  "nothing of it fetched, no repo folder left (huggingface_hub calls one without snapshots/ corrupted)"
"$bin" download tiny/sharded >"$w/s.out" 2>"$w/e" && rc=0 || rc=$?
s=$(cat "$w/s.out")
check '[ $rc = 0 ] && [ -f "$s/model-00001-of-00002.safetensors" ] && [ -f "$s/model-00002-of-00002.safetensors" ] && [ -f "$s/model.safetensors.index.json" ]' \
  "sharded: the index and its shards"
check '[ -f "$s/config.json" ] && [ -f "$s/generation_config.json" ]' \
  "sharded: the small files too (after the index was fetched on its own)"
check '[ ! -e "$s/consolidated.safetensors" ]' "sharded: a .safetensors the index does not name is not fetched"
"$bin" generate --model tiny/sharded --prompt-ids 1,2 --max-tokens 2 --temperature 0 >/dev/null 2>&1 \
  && ok "generate --model tiny/sharded (from the cache)" || bad "generate --model tiny/sharded"
"$bin" download tiny/llama --include '*.json' --exclude 'tokenizer*' --download-dir "$w/inc" >"$w/i.out" 2>"$w/e" && rc=0 || rc=$?
i=$(cat "$w/i.out")
check '[ $rc = 0 ] && [ "$(cd "$i" && ls | tr "\n" " ")" = "config.json generation_config.json " ]' \
  "--include/--exclude (and --download-dir: $i)"
check '[ "${i#$w/inc/models--tiny--llama/snapshots/}" = "$MAIN" ]' "--download-dir is the cache root"
"$bin" download tiny/llama --include '*.bin' --download-dir "$w/inc" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "match --include are pickles"' "--include of pickles refused"
"$bin" download tiny/llama --include 'nothing*' --download-dir "$w/inc" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "no file of tiny/llama matches --include"' "--include matching nothing"
HF_HUB_CACHE=$w/hc "$bin" download tiny/llama --quiet >"$w/h.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/h.out")" = "$w/hc/models--tiny--llama/snapshots/$MAIN" ] && [ ! -s "$w/e" ]' \
  "HF_HUB_CACHE places the cache; --quiet prints nothing else"
"$bin" download tiny/llama --local-dir "$w/plain" >"$w/l.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/l.out")" = "$w/plain" ] && [ -f "$w/plain/model.safetensors" ] && [ ! -L "$w/plain/model.safetensors" ] && cmp -s "$w/plain/config.json" "$D/config.json"' \
  "--local-dir: plain files"
check '[ "$(head -1 "$w/plain/.cache/huggingface/download/config.json.metadata")" = "$MAIN" ]' \
  "--local-dir: huggingface_hub's metadata"
"$bin" download tiny/llama --include 'config.json' --local-dir "$w/plain2" >/dev/null 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(ls "$w/plain2")" = config.json ]' "--local-dir gets only the files asked for (the snapshot has more)"
HF_HUB_OFFLINE=1 "$bin" download tiny/llama --include 'tokenizer*' --local-dir "$w/plain3" >/dev/null 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(ls "$w/plain3" | tr "\n" " ")" = "tokenizer.json tokenizer_config.json " ]' \
  "--local-dir from the cache offline: only the files asked for"
"$bin" generate --model "$w/plain" --prompt-ids 1,2 --max-tokens 2 --temperature 0 >/dev/null 2>&1 \
  && ok "the local dir loads" || bad "the local dir loads"
"$bin" download tiny/llama --progress --download-dir "$w/prog" >/dev/null 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && grep -qE "5/5 files .*/s" "$w/e" && has "$w/e" $'"'"'\r'"'"'' "--progress draws a bar with bytes and speed"

# ---- 4. tokens and gated repos -----------------------------------------------------------
export HF_HOME=$w/gated-home
"$bin" download tiny/gated 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "tiny/gated is a gated model (401" && has "$w/e" "accept its licence on the model page $HUB/tiny/gated" && has "$w/e" "set HF_TOKEN" && has "$w/e" "(no token is set)"' \
  "gated, no token: message"
HF_TOKEN=hf_bad "$bin" download tiny/gated 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "tiny/gated is a gated model (403" && has "$w/e" "the token in use has no access to it yet"' \
  "gated, refused token: message"
mkdir -p "$HF_HOME" && printf 'hf_good\n' >"$HF_HOME/token"
cdn_auth=$(log_count 'r.server==="cdn" && r.auth')
"$bin" download tiny/gated >/dev/null 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ]' "gated, token from \$HF_HOME/token: downloaded"
check '[ "$(log_count "r.server===\"cdn\" && r.auth")" = "$cdn_auth" ]' "gated: the token stayed on the Hub"

# ---- 5. transfers: cuts, resume, concurrency, checksums, disk ----------------------------
export HF_HOME=$w/t-home
"$bin" download tiny/flaky --no-progress >"$w/f.out" 2>"$w/f.err" && rc=0 || rc=$?
check '[ $rc = 0 ] && cmp -s "$(cat "$w/f.out")/model.safetensors" "$D/model.safetensors" && cmp -s "$(cat "$w/f.out")/tokenizer.json" "$D/tokenizer.json"' \
  "cut connections: the files arrive whole"
check '[ "$(log_count "r.server===\"cdn\" && r.url.includes(\"tiny%2Fflaky\") && /^bytes=[1-9][0-9]*-$/.test(r.range||\"\")")" -ge 2 ]' \
  "LFS: resumed with Range after each cut"
check '[ "$(log_count "r.url.startsWith(\"/tiny/flaky/resolve/\") && r.url.endsWith(\"tokenizer.json\") && /^bytes=[1-9]/.test(r.range||\"\")")" -ge 1 ]' \
  "a file kept in git: resumed with Range too"
check 'has "$w/f.err" "transfer broke at"' "the break is reported"

# resume across processes: the first process is killed mid-file
held=$HF_HOME/hub/models--tiny--held1/blobs/$(sha256_of "$D/model.safetensors").incomplete
"$bin" download tiny/held1 >/dev/null 2>"$w/h1.err" &
p1=$!
pids+=("$p1")
if wait_for '[ "$(stat -c %s "$held" 2>/dev/null || echo 0)" = 1000000 ]'; then
  kill -KILL "$p1"; wait "$p1" 2>/dev/null || true
  ok "killed mid-file with 1000000 bytes in .incomplete"
  curl -s "$HUB/_release?repo=tiny%2Fheld1" >/dev/null
  "$bin" download tiny/held1 >"$w/h1.out" 2>"$w/h1b.err" && rc=0 || rc=$?
  check '[ $rc = 0 ] && cmp -s "$(cat "$w/h1.out")/model.safetensors" "$D/model.safetensors" && [ ! -e "$held" ]' \
    "the next run completes it"
  check '[ "$(log_count "r.server===\"cdn\" && r.url.includes(\"tiny%2Fheld1\") && r.range===\"bytes=1000000-\"")" = 1 ]' \
    "... asking only for the rest (Range: bytes=1000000-)"
  check 'has "$w/h1b.err" "resuming model.safetensors at"' "... and says so"
else
  bad "the held transfer never reached 1000000 bytes"; cat "$w/h1.err"
fi

# two downloaders share the cache: B waits on A's lock, then uses A's blob
"$bin" download tiny/held2 >"$w/a.out" 2>"$w/a.err" &
pa=$!
pids+=("$pa")
held=$HF_HOME/hub/models--tiny--held2/blobs/$(sha256_of "$D/model.safetensors").incomplete
if wait_for '[ "$(stat -c %s "$held" 2>/dev/null || echo 0)" = 1000000 ]'; then
  "$bin" download tiny/held2 >"$w/b.out" 2>"$w/b.err" &
  pb=$!
  pids+=("$pb")
  wait_for 'has "$w/b.err" "waiting for another download of model.safetensors"' \
    && ok "the second downloader waits on the lock" || bad "the second downloader did not wait"
  curl -s "$HUB/_release?repo=tiny%2Fheld2" >/dev/null
  wait "$pa" && ra=0 || ra=$?
  wait "$pb" && rb=0 || rb=$?
  check '[ $ra = 0 ] && [ $rb = 0 ] && [ "$(cat "$w/a.out")" = "$(cat "$w/b.out")" ] && cmp -s "$(cat "$w/b.out")/model.safetensors" "$D/model.safetensors"' \
    "both succeed with the same snapshot"
  check 'has "$w/b.err" "model.safetensors is already in the cache" && ! has "$w/b.err" "fetched model.safetensors"' \
    "the second one took the first one's blob"
  check '[ -z "$(find "$HF_HOME/hub/models--tiny--held2" -name "*.incomplete")" ]' "no .incomplete left"
else
  bad "the first downloader never reached the hold"; cat "$w/a.err"
fi

"$bin" download tiny/corrupt 2>"$w/e" && rc=0 || rc=$?
c=$HF_HOME/hub/models--tiny--corrupt
check '[ $rc = 1 ] && has "$w/e" "tiny/corrupt: checksum mismatch for model.safetensors: the Hub says sha256 $(sha256_of "$D/model.safetensors")" && has "$w/e" "the file was removed and not used"' \
  "bytes that do not match the sha256: refused, message"
check '[ -z "$(find "$c/blobs" -name "$(sha256_of "$D/model.safetensors")*")" ] && [ ! -e "$c/snapshots/$(api_sha tiny/corrupt main)/model.safetensors" ]' \
  "... nothing of it in blobs (not even .incomplete) or the snapshot"
"$bin" download tiny/corrupt-config 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "checksum mismatch for config.json: the Hub says git blob sha1 $(gitsha_of "$D/config.json")"' \
  "a file kept in git checked against its git blob sha1"
"$bin" download tiny/huge 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "not enough disk space for tiny/huge" && has "$w/e" "$HF_HOME/hub/models--tiny--huge/blobs" && has "$w/e" "--download-dir"' \
  "disk too small: said before downloading"
check '[ "$(log_count "r.url.includes(\"tiny/huge/resolve\") || r.url.includes(\"tiny%2Fhuge\")")" = 0 ]' \
  "... and nothing was fetched"

# ---- 6. offline, and no network ------------------------------------------------------------
export HF_HOME=$w/home
n=$(log_count 'true')
HF_HUB_OFFLINE=1 "$bin" download tiny/llama >"$w/off.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/off.out")" = "$snap" ] && [ "$(log_count true)" = "$((n + 1))" ]' \
  "HF_HUB_OFFLINE=1: from the cache, no request (the one counted is the log's)"
HF_HUB_OFFLINE=1 "$bin" download tiny/llama --revision dev >"$w/off.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/off.out")" = "$repo/snapshots/$DEV" ]' "offline by branch (refs/dev)"
HF_HUB_OFFLINE=1 "$bin" download tiny/llama --revision "$DEV" >"$w/off.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/off.out")" = "$repo/snapshots/$DEV" ]' "offline by commit"
HF_HOME=$w/empty HF_HUB_OFFLINE=1 "$bin" download tiny/llama 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "tiny/llama is not in the cache (HF_HUB_OFFLINE is set): looked for $w/empty/hub/models--tiny--llama/refs/main, which does not exist"' \
  "offline, nothing cached: the exact path looked up"
HF_HOME=$w/empty HF_ENDPOINT=http://127.0.0.1:$DEAD_PORT "$bin" download tiny/llama 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "the Hub at http://127.0.0.1:$DEAD_PORT could not be reached" && has "$w/e" "looked for $w/empty/hub/models--tiny--llama/refs/main"' \
  "no network, nothing cached: the exact path looked up"
HF_HOME=$w/empty HF_HUB_OFFLINE=1 "$bin" download tiny/llama --revision "$DEV" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "looked for $w/empty/hub/models--tiny--llama/snapshots/$DEV, which does not exist"' \
  "offline by commit, not cached: the snapshot path looked up"
HF_ENDPOINT=http://127.0.0.1:$DEAD_PORT "$bin" download tiny/llama >"$w/off.out" 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ "$(cat "$w/off.out")" = "$snap" ] && has "$w/e" "using the cached snapshot"' \
  "no network, cached: the cache is used (and said)"
# a snapshot another tool left half done
mkdir -p "$w/half/hub" && cp -a "$repo" "$w/half/hub/" && rm "$w/half/hub/models--tiny--llama/snapshots/$MAIN/model.safetensors"
HF_HOME=$w/half HF_HUB_OFFLINE=1 "$bin" download tiny/llama 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "tiny/llama is only partly in the cache" && has "$w/e" "$w/half/hub/models--tiny--llama/snapshots/$MAIN/model.safetensors does not exist"' \
  "offline, half a snapshot: names the missing file"

# ---- 7. commands with --model ORG/NAME -------------------------------------------------------
export HF_HOME=$w/tok-home
out=$("$bin" tokenize --model tiny/llama --text hello 2>"$w/e") && rc=0 || rc=$?
want=$("$bin" tokenize --model "$D" --text hello 2>/dev/null)
tsnap=$HF_HOME/hub/models--tiny--llama/snapshots/$MAIN
check '[ $rc = 0 ] && [ "$out" = "$want" ] && [ -e "$tsnap/tokenizer.json" ] && [ ! -e "$tsnap/model.safetensors" ]' \
  "tokenize --model ORG/NAME fetches only the tokenizer files"

out=$(printf 'hi\n' | HF_HOME=$w/home HF_HUB_OFFLINE=1 "$bin" chat --model tiny/llama --max-tokens 3 2>"$w/e") && rc=0 || rc=$?
check '[ $rc = 0 ] && [ -n "$out" ]' "chat --model ORG/NAME (from the cache)"

export HF_HOME=$w/serve-home
start_server() {
  local name=$1; shift
  : >"$w/$name.log" # exists before the poll reads it
  "$bin" serve "$@" --port 0 >"$w/$name.log" 2>&1 &
  PID=$!
  pids+=("$PID")
  PORT=
  for _ in $(seq 1 1200); do
    PORT=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$w/$name.log" 2>/dev/null)
    [ -n "$PORT" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "server $name did not start:"; cat "$w/$name.log"; return 1
}
completion() {
  curl -s "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model": "tiny/llama", "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}' |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).choices[0].text))'
}
want=$("$bin" generate --model "$D" --prompt "The capital of France is" --max-tokens 6 --temperature 0 --json 2>/dev/null |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).outputs[0].text))')
if start_server serve1 tiny/llama; then
  models=$(curl -s "http://127.0.0.1:$PORT/v1/models")
  check '[[ "$models" == *"\"id\":\"tiny/llama\""* ]] && [[ "$models" == *"\"root\":\"tiny/llama\""* ]]' \
    "serve ORG/NAME from an empty cache: /v1/models names it"
  got=$(completion)
  check '[ "$got" = "$want" ]' "serve ORG/NAME: a completion as from the local model"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
else
  bad "serve ORG/NAME from an empty cache"
fi
n=$(log_count 'true')
if HF_HUB_OFFLINE=1 start_server serve2 tiny/llama; then
  got=$(completion)
  check '[ "$got" = "$want" ] && [ "$(log_count true)" = "$((n + 1))" ]' "serve ORG/NAME again offline: no request to the Hub"
  kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
else
  bad "serve ORG/NAME offline"
fi

# the worker: MODEL_NAME, MODEL_REVISION, BASE_PATH (worker-vllm's network-volume cache)
unset HF_HOME
mkdir -p "$w/volume"
job='{"input": {"prompt": "The capital of France is", "sampling_params": {"max_tokens": 4, "temperature": 0}}}'
HOME=$w/worker-home BASE_PATH=$w/volume MODEL_NAME=tiny/llama MODEL_REVISION=dev \
  "$bin" worker --test_input "$job" --threads 1 >"$w/wk.out" 2>"$w/wk.err" && rc=0 || rc=$?
vol=$w/volume/huggingface-cache/hub/models--tiny--llama
check '[ $rc = 0 ] && grep -q "\"output\"" "$w/wk.out" && [ "$(cat "$vol/refs/dev")" = "$DEV" ] && [ -e "$vol/snapshots/$DEV/model.safetensors" ]' \
  "worker with MODEL_NAME/MODEL_REVISION: into \$BASE_PATH/huggingface-cache/hub"
check '[ ! -e "$w/worker-home/.cache/huggingface" ]' "... not into the container's home"
HOME=$w/worker-home BASE_PATH=$w/volume MODEL_NAME=tiny/llama MODEL_REVISION=dev HF_HUB_OFFLINE=1 \
  "$bin" worker --test_input "$job" --threads 1 >"$w/wk2.out" 2>"$w/wk2.err" && rc=0 || rc=$?
check '[ $rc = 0 ] && cmp -s "$w/wk.out" "$w/wk2.out"' "worker again from the volume, offline: the same answer"
HOME=$w/worker-home BASE_PATH=$w/volume MODEL_NAME=tiny/nothing \
  "$bin" worker --test_input "$job" >/dev/null 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 1 ] && has "$w/e" "pagellm worker: no model tiny/nothing on $HUB"' "worker with a MODEL_NAME the Hub lacks: message, exit 1"
HOME=$w/worker-home BASE_PATH=$w/no-volume MODEL_NAME=tiny/llama \
  "$bin" worker --test_input "$job" --threads 1 >/dev/null 2>"$w/e" && rc=0 || rc=$?
check '[ $rc = 0 ] && [ -e "$w/worker-home/.cache/huggingface/hub/models--tiny--llama/refs/main" ]' \
  "worker without a volume: huggingface_hub's default cache"

# the production job loop (fake RunPod job server): download at start, and a gated model
if node "$src/tests/node/hub_worker.mjs" "$bin" "$w"; then ok "worker job loop with MODEL_NAME"; else bad "worker job loop with MODEL_NAME"; fi

# ---- 8. optional: huggingface_hub itself reads our cache and we read its (not in CI) -------
if [ -n "${PL_HF_PYTHON:-}" ]; then
  HF_HOME=$w/home HF_HUB_OFFLINE=1 $PL_HF_PYTHON - "$snap" <<'PY' && ok "huggingface_hub reads our cache" || bad "huggingface_hub reads our cache"
import sys
from huggingface_hub import snapshot_download, scan_cache_dir, try_to_load_from_cache
from huggingface_hub.file_download import _CACHED_NO_EXIST
assert snapshot_download("tiny/llama") == sys.argv[1]
assert snapshot_download("tiny/llama", revision="dev").endswith("/snapshots/" + open(sys.argv[1] + "/../../refs/dev").read())
assert try_to_load_from_cache("tiny/llama", "chat_template.jinja") is _CACHED_NO_EXIST
info = scan_cache_dir()
assert not info.warnings, info.warnings
PY
  HF_HOME=$w/py-home $PL_HF_PYTHON -c 'from huggingface_hub import snapshot_download; snapshot_download("tiny/llama", allow_patterns=["*.json", "*.safetensors"])' >/dev/null 2>&1
  HF_HOME=$w/py-home HF_HUB_OFFLINE=1 "$bin" generate --model tiny/llama --prompt-ids 1,2 --max-tokens 2 >/dev/null 2>&1 \
    && ok "we read huggingface_hub's cache" || bad "we read huggingface_hub's cache"
else
  echo "note: set PL_HF_PYTHON to a python with huggingface_hub to cross-check with it"
fi

[ "$fail" = 0 ] && echo "test_hub: all passed" || echo "test_hub: FAILED"
exit "$fail"
