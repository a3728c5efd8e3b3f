#!/usr/bin/env bash
# test_chat.sh -- `pagellm chat` as a user meets it (issue 11, "Chat UX"):
#   1. on a terminal (tests/cli/chat_pty.py, a pseudo-terminal): Ctrl-C during a reply
#      ends the reply, not the session; /reset confirms; Ctrl-C at the prompt says how
#      to leave; Ctrl-D ends the session on a new line, exit 0;
#   2. with piped input: a reply cut by --max-tokens is marked as cut, a reply that fills
#      the context says so, a turn that no longer fits is refused without ending the
#      session (the third turn still gets its reply), and the notes stay off stdout.
set -euo pipefail
PAGELLM=${PAGELLM:-build/pagellm}
PAGELLM=$(cd "$(dirname "$PAGELLM")" && pwd)/$(basename "$PAGELLM")
src=${PL_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
command -v python3 >/dev/null || { echo "test_chat: python3 missing; skipped"; exit 0; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "test_chat: FAIL: $*"; exit 1; }
export PAGELLM_LOG_LEVEL=warn
"$(dirname "$PAGELLM")/pl-mkmodel" --preset default --out "$dir/m" >/dev/null

# 1. the terminal session
python3 "$src/tests/cli/chat_pty.py" "$PAGELLM" "$dir/m" || fail "terminal session"

# 2. --max-tokens: each reply marked as cut; the replies alone on stdout
printf 'hi\nthere\n' | "$PAGELLM" chat --model "$dir/m" --threads 1 --ignore-eos --max-tokens 3 \
  >"$dir/out" 2>"$dir/err" || { cat "$dir/err"; fail "chat --max-tokens 3"; }
[ "$(grep -c '^\[cut at --max-tokens 3\]$' "$dir/err")" = 2 ] || { cat "$dir/err"; fail "no cut marks"; }
[ -s "$dir/out" ] || fail "no reply on stdout"
! grep -q "cut at" "$dir/out" || fail "the mark went to stdout"

# the context fills: marked, the next turn is refused, the session goes on; /reset confirms
printf 'hi\nsecond turn\n/reset\nthird\n' | "$PAGELLM" chat --model "$dir/m" --threads 1 --ignore-eos \
  --max-model-len 48 >"$dir/out" 2>"$dir/err" || { cat "$dir/err"; fail "small context"; }
[ "$(grep -c '^\[cut: the conversation fills the context (max_model_len 48); /reset to start over\]$' "$dir/err")" = 2 ] ||
  { cat "$dir/err"; fail "want a context-full mark for turns 1 and 3"; }
grep -q "^pagellm chat: .*max_model_len (48)" "$dir/err" ||
  { cat "$dir/err"; fail "the second turn was not refused with a message"; }
grep -q '^\[conversation reset\]$' "$dir/err" || { cat "$dir/err"; fail "/reset did not confirm"; }
! grep -q '^\[' "$dir/out" || fail "a note went to stdout"
echo "test_chat: passed"
