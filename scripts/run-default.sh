#!/usr/bin/env bash
# run-default.sh -- the first command to run: installs what the build needs,
# builds pagellm, writes the built-in default model (models/default) if it is
# not there yet, and generates 32 greedy tokens for four prompts with it.
#
# The default model is pagellm's own tiny test model (Llama architecture,
# 4 layers, random weights, a byte-level BPE tokenizer trained on a few KB of
# English): it shows the whole path from text to tokens to text and back on
# any machine in seconds, and its output is gibberish by design.
set -euo pipefail
cd "$(dirname "$0")/.."

PL_SKIP_NODE=1 ./scripts/bootstrap.sh
./scripts/build.sh build

model=models/default
if [ ! -f "$model/config.json" ] || [ ! -f "$model/tokenizer.json" ]; then
  build/pl-mkmodel --preset default --out "$model"
fi

prompts=(
  "The best way to learn about AI is"
  "San Francisco is a city known for"
  "What is the capital of France?"
  "Write a short story about a robot who discovers music."
)
echo "run-default: $model is a tiny random-weight test model; expect gibberish text"
args=()
for p in "${prompts[@]}"; do args+=(--prompt "$p"); done
exec build/pagellm generate --model "$model" "${args[@]}" --max-tokens 32 --temperature 0 "$@"
