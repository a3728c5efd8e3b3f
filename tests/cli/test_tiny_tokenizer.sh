#!/usr/bin/env bash
# test_tiny_tokenizer.sh -- the default model's generated tokenizer loads and works in
# @huggingface/tokenizers (tokenizers.js), an implementation independent of pagellm:
# texts encode inside vocab_size with BOS first and decode back; specials are single ids.
set -euo pipefail
src=${PL_SOURCE_DIR:?}
bin=${PL_BINARY_DIR:?}
command -v node >/dev/null || { echo "node is required (scripts/bootstrap.sh installs it)"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin/pl-mkmodel" --preset default --out "$tmp/default" >/dev/null
node "$src/tools/check_tokenizer.mjs" "$tmp/default"
