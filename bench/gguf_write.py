#!/usr/bin/env python3
"""gguf_write.py -- a random-weight GGUF of a Llama-family or Qwen3-MoE shape, for llama.cpp
beside pagellm.

Writes an f16 (or --dtype bf16) GGUF (llama or qwen3moe architecture) of the shape in a Hugging
Face config.json, with
random weights and the tokenizer metadata of a tokenizer.json (+ tokenizer_config.json):
the byte-level BPE vocabulary, merges, token types, BOS/EOS and the chat template. The
weights' values do not matter to a speed benchmark, only their shapes and dtype: one
block of N(0, 0.02) noise is tiled through every matrix (the norms are ones, f32), so a
16 GB file costs the time it takes to write it, not to draw 8 billion random numbers.

Built on gguf-py (numpy only), which ships in llama.cpp's source tree: pass its folder
with --gguf-py (or put it on PYTHONPATH). pagellm's own loader never reads GGUF; this
file only feeds the peer (bench/llamacpp_cpu.sh, bench/llamacpp_gpu.sh).

Usage: gguf_write.py --config DIR/config.json --tokenizer DIR_WITH_TOKENIZER_JSON
                     --out model.gguf [--dtype f16|bf16] [--gguf-py LLAMA_CPP/gguf-py] [--check]
--check reads the written file back with gguf-py's reader and verifies every tensor's
shape and type and the vocabulary's size; it prints one summary line either way.
"""
import argparse
import json
import os
import sys


def load_tokenizer(folder):
    tok = json.load(open(os.path.join(folder, "tokenizer.json"), encoding="utf-8"))
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    tcfg = json.load(open(cfg_path, encoding="utf-8")) if os.path.exists(cfg_path) else {}
    model = tok["model"]
    if model.get("type") != "BPE":
        raise SystemExit("gguf_write: only byte-level BPE tokenizers (Llama 3, Qwen) are written")
    vocab = dict(model["vocab"])
    special = set()
    for a in tok.get("added_tokens", []):
        vocab[a["content"]] = a["id"]
        if a.get("special"):
            special.add(a["id"])
    n = max(vocab.values()) + 1
    tokens = ["[PAD%d]" % i for i in range(n)]
    types = [5] * n  # UNUSED until named
    for text, i in vocab.items():
        tokens[i] = text
        types[i] = 3 if i in special else 1  # CONTROL / NORMAL
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    def tid(key):
        v = tcfg.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return vocab.get(v) if isinstance(v, str) else None

    return tokens, types, merges, tid("bos_token"), tid("eos_token"), tcfg.get("chat_template")


def tensor_list(c):
    """(gguf name, numpy shape as HF stores it ([rows, cols]; experts stacked as [E, rows,
    cols]), is_norm) of a Llama model, or of a Qwen3-MoE one (q/k norms; every layer sparse)."""
    moe = c.get("model_type") == "qwen3_moe"
    h, inter, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    nh = c["num_attention_heads"]
    nkv = c.get("num_key_value_heads", nh)
    hd = c.get("head_dim") or h // nh
    vocab = c["vocab_size"]
    out = [("token_embd.weight", (vocab, h), False), ("output_norm.weight", (h,), True)]
    if not c.get("tie_word_embeddings", False):
        out.append(("output.weight", (vocab, h), False))
    for i in range(L):
        b = "blk.%d." % i
        out += [(b + "attn_norm.weight", (h,), True),
                (b + "attn_q.weight", (nh * hd, h), False),
                (b + "attn_k.weight", (nkv * hd, h), False),
                (b + "attn_v.weight", (nkv * hd, h), False),
                (b + "attn_output.weight", (h, nh * hd), False),
                (b + "ffn_norm.weight", (h,), True)]
        if not moe:
            out += [(b + "ffn_gate.weight", (inter, h), False),
                    (b + "ffn_up.weight", (inter, h), False),
                    (b + "ffn_down.weight", (h, inter), False)]
            continue
        E, mi = c["num_experts"], c["moe_intermediate_size"]
        out += [(b + "attn_q_norm.weight", (hd,), True),
                (b + "attn_k_norm.weight", (hd,), True),
                (b + "ffn_gate_inp.weight", (E, h), False),
                (b + "ffn_gate_exps.weight", (E, mi, h), False),
                (b + "ffn_up_exps.weight", (E, mi, h), False),
                (b + "ffn_down_exps.weight", (E, h, mi), False)]
    return out, hd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--tokenizer", required=True, help="folder with tokenizer.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--gguf-py", default=None)
    ap.add_argument("--dtype", choices=("f16", "bf16"), default="f16")
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    if a.gguf_py:
        sys.path.insert(0, a.gguf_py)
    import numpy as np
    import gguf

    c = json.load(open(a.config))
    if c.get("model_type") not in ("llama", "mistral", "qwen3_moe"):
        raise SystemExit("gguf_write: %s is not a Llama-family or Qwen3-MoE config" % a.config)
    moe = c["model_type"] == "qwen3_moe"
    if moe and (c.get("mlp_only_layers") or c.get("decoder_sparse_step", 1) != 1):
        raise SystemExit("gguf_write: only Qwen3-MoE configs with every layer sparse are written")
    tokens, types, merges, bos, eos, template = load_tokenizer(a.tokenizer)
    if len(tokens) > c["vocab_size"]:
        raise SystemExit("gguf_write: the tokenizer has %d ids, the config's vocabulary %d"
                         % (len(tokens), c["vocab_size"]))
    while len(tokens) < c["vocab_size"]:  # embedding rows past the tokenizer (Qwen-style padding)
        tokens.append("[PAD%d]" % len(tokens))
        types.append(5)
    tensors, hd = tensor_list(c)

    w = gguf.GGUFWriter(a.out, "qwen3moe" if moe else "llama")
    w.add_name("pagellm-bench random %s" % os.path.basename(os.path.dirname(os.path.abspath(a.config))))
    bf16 = a.dtype == "bf16"
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if bf16 else gguf.LlamaFileType.MOSTLY_F16)
    w.add_context_length(c.get("max_position_embeddings", 8192))
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c.get("num_key_value_heads", c["num_attention_heads"]))
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-5)))
    w.add_vocab_size(c["vocab_size"])
    if moe:
        w.add_expert_count(c["num_experts"])
        w.add_expert_used_count(c["num_experts_per_tok"])
        w.add_expert_feed_forward_length(c["moe_intermediate_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    if bos is not None:
        w.add_bos_token_id(bos)
    if eos is not None:
        w.add_eos_token_id(eos)
    if template:
        w.add_chat_template(template)
    for name, shape, is_norm in tensors:
        n = int(np.prod(shape))
        if is_norm:
            w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * n)
        elif bf16:  # raw 16-bit words, typed BF16
            w.add_tensor_info(name, shape, np.dtype(np.uint16), 2 * n,
                              raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor_info(name, shape, np.dtype(np.float16), 2 * n)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(1 << 22, dtype=np.float32) * 0.02
    if bf16:  # round to nearest even on the upper 16 bits
        u = noise.view(np.uint32)
        block = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    else:
        block = noise.astype(np.float16)
    for name, shape, is_norm in tensors:
        if is_norm:
            w.write_tensor_data(np.ones(shape, dtype=np.float32))
        else:
            n = int(np.prod(shape))
            reps = -(-n // block.size)
            w.write_tensor_data(np.tile(block, reps)[:n].reshape(shape))
    w.close()
    size = os.path.getsize(a.out)
    msg = "gguf_write: %s: %d tensors, %.2f GiB, vocab %d" % (a.out, len(tensors), size / 2**30,
                                                            len(tokens))
    if a.check:
        r = gguf.GGUFReader(a.out)
        got = {t.name: t for t in r.tensors}
        for name, shape, is_norm in tensors:
            t = got.get(name)
            want = (gguf.GGMLQuantizationType.F32 if is_norm else
                    gguf.GGMLQuantizationType.BF16 if bf16 else gguf.GGMLQuantizationType.F16)
            if t is None or list(t.shape) != list(reversed(shape)) or t.tensor_type != want:
                raise SystemExit("gguf_write: check failed on %s" % name)
        toks = r.fields["tokenizer.ggml.tokens"]
        if len(toks.data) != c["vocab_size"]:
            raise SystemExit("gguf_write: check failed: %d tokens" % len(toks.data))
        msg += ", read back ok"
    print(msg)


if __name__ == "__main__":
    main()
