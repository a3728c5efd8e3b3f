#!/usr/bin/env bash
# test_structured.sh -- structured output from the CLI (docs/structured-output.md):
# `pagellm generate --json-schema FILE / --regex R / --choice A,B / --grammar FILE` on the
# default tiny model (random weights, byte-level BPE): sampled outputs match their
# constraint (checked with node's JSON.parse and RegExp as independent readers); a
# constraint the compiler refuses, two constraints, and a missing file are named errors
# with exit status 2.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
mkmodel=$(dirname "$PAGELLM")/pl-mkmodel
if ! command -v node >/dev/null; then
  echo "test_structured: node missing; skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "test_structured: FAIL: $*"; exit 1; }
"$mkmodel" --preset default --out "$dir/model" >/dev/null
gen() { "$PAGELLM" generate --model "$dir/model" --no-progress --json --temperature 1 "$@" 2>"$dir/err"; }
text() { node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{for(const l of s.trim().split("\n"))for(const o of JSON.parse(l).outputs)console.log(JSON.stringify({t:o.text,f:o.finish_reason}))})'; }

cat >"$dir/schema.json" <<'JSON'
{"type": "object", "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 500},
 "label": {"type": "string", "maxLength": 8}, "on": {"type": "boolean"},
 "xs": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
 "required": ["id", "label", "on", "xs"], "additionalProperties": false}
JSON
for seed in 1 2 3 4 5; do
  out=$(gen --prompt "JSON please:" --json-schema "$dir/schema.json" --max-tokens 300 --seed $seed | text)
  node -e '
    const o = JSON.parse(process.argv[1]);
    if (o.f !== "stop") throw new Error("finish " + o.f);
    const v = JSON.parse(o.t);
    const keys = Object.keys(v).join(",");
    if (keys !== "id,label,on,xs") throw new Error("keys " + keys);
    if (!Number.isInteger(v.id) || v.id < 1 || v.id > 500) throw new Error("id " + v.id);
    if (typeof v.label !== "string" || [...v.label].length > 8) throw new Error("label");
    if (typeof v.on !== "boolean" || !Array.isArray(v.xs) || v.xs.length > 3 ||
        !v.xs.every((x) => x === "a" || x === "b")) throw new Error("on / xs");
  ' "$out" || fail "--json-schema seed $seed: $out"
done
echo "ok   --json-schema: 5 sampled outputs parse and validate"

out=$(gen --prompt "Code:" --regex '[A-Z]{2}-[0-9]{2,4}' --max-tokens 20 --seed 7 --n 3 | text)
while IFS= read -r l; do
  node -e 'const o = JSON.parse(process.argv[1]); if (!/^[A-Z]{2}-[0-9]{2,4}$/.test(o.t) || o.f !== "stop") process.exit(1)' "$l" ||
    fail "--regex: $l"
done <<<"$out"
echo "ok   --regex: 3 samples match"

out=$(gen --prompt "Mood:" --choice 'happy,sad,in between' --max-tokens 20 --seed 3 --n 4 | text)
while IFS= read -r l; do
  node -e 'const o = JSON.parse(process.argv[1]); if (!["happy", "sad", "in between"].includes(o.t)) process.exit(1)' "$l" ||
    fail "--choice: $l"
done <<<"$out"
echo "ok   --choice: 4 samples are choices"

printf 'root ::= "(" expr ")"\nexpr ::= [0-9] | "(" expr ")" "+" [0-9]\n' >"$dir/g.gbnf"
out=$(gen --prompt "x" --grammar "$dir/g.gbnf" --max-tokens 40 --seed 5 | text)
node -e 'const o = JSON.parse(process.argv[1]); if (!/^[(0-9+)]+$/.test(o.t) || o.f !== "stop") process.exit(1)' "$out" ||
  fail "--grammar: $out"
echo "ok   --grammar"

# errors: named, exit status 2, before any model work
expect_error() {
  local want=$1; shift
  set +e
  "$PAGELLM" generate --model "$dir/model" --no-progress --prompt x "$@" >/dev/null 2>"$dir/err"
  local rc=$?
  set -e
  [ "$rc" = 2 ] && grep -q -- "$want" "$dir/err" || fail "$* -> rc $rc: $(cat "$dir/err")"
}
printf '{"type": "string", "format": "color"}' >"$dir/bad.json"
expect_error "format 'color'" --json-schema "$dir/bad.json"
expect_error "backreferences" --regex '(a)\1'
expect_error "give one structured output constraint" --regex a --choice b,c
expect_error "no-such.json" --json-schema "$dir/no-such.json"
echo "ok   refusals name what is wrong"
