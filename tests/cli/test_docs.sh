#!/usr/bin/env bash
# test_docs.sh -- the documentation is self-contained and its commands work (issue 11):
#   1. nothing in the repository points at the planning folder outside it (../shared,
#      shared/specs, ...), and every relative Markdown link of README.md and docs/ resolves;
#   2. docs/server.md's client example runs as documented: from the repository root, with
#      the packages linked next to the examples, against a live `pagellm serve`.
set -euo pipefail
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
PAGELLM=${PAGELLM:-$src/build/pagellm}
fail() { echo "test_docs: FAIL: $*"; exit 1; }

# 1. no pointers outside the repository
cd "$src"
pattern='(\.\./shared|shared/(specs|DESIGN|STYLE|BENCHMARKS|peers|hooks|seed-examples))'
if hits=$(grep -rnE "$pattern" README.md docs src tests tools bench docker scripts examples include \
            CMakeLists.txt --exclude=test_docs.sh --exclude-dir=node_modules 2>/dev/null); then
  echo "$hits"
  fail "references to files outside the repository"
fi
# relative links in Markdown: [text](target) with no scheme must name an existing file
for f in README.md docs/*.md; do
  d=$(dirname "$f")
  while IFS= read -r target; do
    t=${target%%#*}
    [ -z "$t" ] && continue
    [ -e "$d/$t" ] || fail "$f links to $target, which does not exist"
  done < <(grep -oE '\]\([^)]+\)' "$f" | sed 's/^](//; s/)$//' | grep -vE '^[a-z]+:' || true)
done

# 2. the client example of docs/server.md
if ! command -v node >/dev/null || [ ! -d "$src/tests/node/node_modules/openai" ]; then
  echo "test_docs: node or tests/node/node_modules missing; the client example was not run"
  echo "test_docs: passed"
  exit 0
fi
work=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
"$(dirname "$PAGELLM")/pl-mkmodel" --preset default --out "$work/model" >/dev/null
: >"$work/serve.log" # exists before the poll reads it (under set -e a failed sed ends the test)
"$PAGELLM" serve --model "$work/model" --port 0 --threads 1 >"$work/serve.log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 1200); do  # a hang guard only: the loop ends as soon as the port is known
  port=$(sed -n 's/.* on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/serve.log")
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/serve.log"; fail "pagellm serve did not start"; }
# a copy of the repository's docs/examples, set up as docs/server.md says (the link form)
mkdir -p "$work/repo/docs"
cp -r "$src/docs/examples" "$work/repo/docs/"
ln -s "$src/tests/node/node_modules" "$work/repo/docs/examples/node_modules"
out=$(cd "$work/repo" && PAGELLM_BASE_URL=http://127.0.0.1:$port/v1 PAGELLM_API_KEY= \
        node docs/examples/openai_client.mjs 2>&1) || { echo "$out"; fail "openai_client.mjs as documented"; }
echo "$out" | grep -q '^completion: ' || { echo "$out"; fail "no completion from the example"; }
# without the packages next to it, the same command fails the way the issue saw
rm "$work/repo/docs/examples/node_modules"
if out=$(cd "$work/repo" && node docs/examples/openai_client.mjs 2>&1); then
  fail "the example ran without its packages: the check above proves nothing"
fi
echo "$out" | grep -q "ERR_MODULE_NOT_FOUND" || { echo "$out"; fail "unexpected failure without packages"; }
echo "test_docs: passed"
