#!/usr/bin/env bash
# make_golden_models.sh DIR -- writes every golden tiny-model preset into DIR/<preset>/
# with build/pl-mkmodel (or $PL_MKMODEL). The result is what tools/golden_refs.py
# reads on the GPU machine to compute the Hugging Face transformers references.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/make_golden_models.sh DIR}
mk=${PL_MKMODEL:-build/pl-mkmodel}
if [ ! -x "$mk" ]; then
  echo "make_golden_models: $mk not found; build first (./scripts/build.sh build)" >&2
  exit 1
fi
n=0
while read -r name tag _; do
  [ "$tag" = "[golden]" ] || continue
  "$mk" --preset "$name" --out "$out/$name" >/dev/null
  n=$((n + 1))
done < <("$mk" --list)
if [ "$n" -eq 0 ]; then
  echo "make_golden_models: no golden presets listed by $mk --list" >&2
  exit 1
fi
echo "make_golden_models: wrote $n golden presets to $out"
