#!/usr/bin/env python3
"""check_default_hf.py MODEL_DIR -- the default tiny model in Hugging Face transformers.

Loads MODEL_DIR (pl-mkmodel --preset default) with AutoTokenizer and
AutoModelForCausalLM (offline, fp32) and checks: the model loads with no
missing/unexpected weights; the tokenizer puts <|begin_of_text|> first, encodes
the run-default prompts to ids inside vocab_size and decodes them back; the
chat template renders ChatML with the generation prompt; special tokens are
single ids. Prints the encodings (they match tools/check_tokenizer.mjs, the
tokenizers.js check) and a few greedy tokens. Exits 1 on the first failure.
"""
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PROMPTS = [
    "The best way to learn about AI is",
    "San Francisco is a city known for",
    "What is the capital of France?",
    "Write a short story about a robot who discovers music.",
]


def fail(msg):
    print(f"check_default_hf: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main(model_dir):
    import torch
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, local_files_only=True, output_loading_info=True)
    if any(v for v in info.values()):
        fail(f"loading info not clean: {info}")
    vocab = model.config.vocab_size
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    print(f"transformers {transformers.__version__}, tokenizer {type(tok).__name__}, "
          f"vocab_size {vocab}, len(tokenizer) {len(tok)}")
    if len(tok) != vocab:
        fail(f"len(tokenizer) {len(tok)} != vocab_size {vocab}")
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        print(f"{p!r} -> {ids}")
        if ids[0] != bos or ids.count(bos) != 1:
            fail(f"{p!r}: BOS {bos} not first exactly once: {ids}")
        if not all(0 <= i < vocab for i in ids):
            fail(f"{p!r}: id outside vocab")
        if tok.decode(ids, skip_special_tokens=True) != p:
            fail(f"{p!r}: decodes to {tok.decode(ids, skip_special_tokens=True)!r}")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want = ("<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n"
            "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n")
    print(f"chat template -> {text!r}")
    if text != want:
        fail(f"chat template gave {text!r}")
    chat_ids = tok(text, add_special_tokens=False)["input_ids"]
    for s in ("<|im_start|>", "<|im_end|>"):
        if tok.convert_tokens_to_ids(s) not in chat_ids:
            fail(f"{s} is not a single token in the chat encoding")
    ids = torch.tensor([tok(PROMPTS[0])["input_ids"]])
    with torch.no_grad():
        out = []
        for _ in range(8):
            nxt = int(model(input_ids=ids).logits[0, -1].argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    print(f"greedy 8 tokens after prompt 0: {out} -> {tok.decode(out)!r}")
    print("check_default_hf: ok")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(sys.argv[1])
