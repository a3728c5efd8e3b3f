#!/usr/bin/env python3
"""cmp_greedy.py A.jsonl B.jsonl -- two `pagellm generate --json` runs of the same prompts
(A the reference, e.g. --device cpu; B e.g. --device cuda) compared token by token: prints
"P/N prompts identical, T/M tokens equal" (one line, for the device scripts' tables)."""
import json
import sys


def outputs(path):
    return [json.loads(line)["outputs"][0]["token_ids"] for line in open(path)]


def main(argv):
    try:
        a, b = outputs(argv[1]), outputs(argv[2])
    except Exception as e:  # a run that failed leaves no or broken output: say so in the table
        print("no output:", str(e)[:80])
        return 0
    same = sum(x == y for x, y in zip(a, b))
    tok = sum(sum(u == v for u, v in zip(x, y)) for x, y in zip(a, b))
    tot = sum(len(x) for x in a)
    extra = "" if len(a) == len(b) else f" (B has {len(b)} lines)"
    print(f"{same}/{len(a)} prompts identical, {tok}/{tot} tokens equal{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
