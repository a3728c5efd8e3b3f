#!/usr/bin/env python3
"""quant_refs.py -- transformers references for pagellm's quantized test models.

usage: quant_refs.py --out OUT_DIR [--formats a,b,...] [--device cpu|cuda] [--mkmodel PATH]
       quant_refs.py --self-test

For every test format (pl-mkmodel --list-quant: AWQ, GPTQ v1/v2, compressed-tensors
pack-quantized and FP8, fp8) this
  1. writes the llama-quant preset packed in that format with pl-mkmodel --quant
     (deterministic: the CI test regenerates it byte for byte and checks the sha256);
  2. dequantizes the packed tensors with this file's own numpy/torch reading of the
     formats' public definitions (AutoAWQ's GEMM packing and nibble order, GPTQ's
     input-dim packing with v1's stored zero - 1, compressed-tensors' pack_to_int32
     with its 2^(b-1) offset and dim-0 packed zero points, e4m3 via torch.float8_e4m3fn)
     -- an implementation independent of pagellm's C dequantizer;
  3. requires that reading to equal, bit for bit, the dense model pl-mkmodel writes with
     --dequant-out (so the C packer, the C dequantizer and this reading agree);
  4. loads the dense dequantized model in transformers (fp32, eager attention) and runs
     a manual greedy loop with the KV cache over fixed prompts (golden_refs.py's loop),
     recording the greedy ids and the top-5 logprobs per step.
One fixture per format goes to OUT_DIR/<format>.json; tests/unit/test_quant_golden.c
compares pagellm's CPU path with it (tokens exact, logprobs within 1e-3).

--self-test checks the packers/unpackers of this file against each other and against
worked examples, without torch models or pl-mkmodel.

Needs python3 with numpy, torch, transformers (5.x) and safetensors; no network.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden_refs as G  # noqa: E402  (the greedy loop, model loading, mkmodel lookup)

PRESET = "llama-quant"
PROMPTS = [
    ([1, 17, 230, 5, 88, 301, 42, 7, 19, 400, 11, 3], 12),
    ([2, 99, 100, 101, 7], 10),
    ([5], 8),
    ([300 + (i * 37) % 200 for i in range(28)], 8),
]
FIXTURE_VERSION = 1

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ: nibble i of a word holds column ORDER[i]


# ---- the formats, in numpy --------------------------------------------------------------


def unpack_rows(np, words, bits):
    """int32 [R, C] packed along the last dim -> uint codes [R, C * 32/bits] (value j of a
    word at bits j*bits: GPTQ's qzeros, compressed-tensors' weight_packed)."""
    w = words.astype(np.uint32)
    per = 32 // bits
    mask = (1 << bits) - 1
    out = np.stack([(w >> (bits * j)) & mask for j in range(per)], axis=-1)
    return out.reshape(w.shape[0], w.shape[1] * per).astype(np.int64)


def unpack_cols(np, words, bits):
    """int32 [R, C] packed along the first dim -> codes [R * 32/bits, C] (GPTQ's qweight,
    compressed-tensors' weight_zero_point)."""
    w = words.astype(np.uint32)
    per = 32 // bits
    mask = (1 << bits) - 1
    out = np.stack([(w >> (bits * j)) & mask for j in range(per)], axis=1)
    return out.reshape(w.shape[0] * per, w.shape[1]).astype(np.int64)


def unpack_awq(np, words):
    """AutoAWQ GEMM int32 [R, C] -> codes [R, 8C]: column 8c + ORDER[i] from nibble i."""
    w = words.astype(np.uint32)
    out = np.zeros((w.shape[0], w.shape[1] * 8), dtype=np.int64)
    for i, col in enumerate(AWQ_ORDER):
        out[:, col::8] = (w >> (4 * i)) & 15
    return out


def pack_awq(np, codes):
    """The inverse of unpack_awq (AutoAWQ's pack loop)."""
    r, c = codes.shape
    out = np.zeros((r, c // 8), dtype=np.uint32)
    for i, col in enumerate(AWQ_ORDER):
        out |= codes[:, col::8].astype(np.uint32) << (4 * i)
    return out.view(np.int32)


def pack_rows(np, codes, bits):
    per = 32 // bits
    r, c = codes.shape
    out = np.zeros((r, c // per), dtype=np.uint32)
    for j in range(per):
        out |= codes[:, j::per].astype(np.uint32) << (bits * j)
    return out.view(np.int32)


def pack_cols(np, codes, bits):
    return pack_rows(np, codes.T.copy(), bits).T.copy()


def f32(np, t):
    return t.float().numpy().astype(np.float32) if hasattr(t, "float") else t.astype(np.float32)


def dequant_module(np, q, T, module, n, k):
    """fp32 w [n, k] of one module from the checkpoint tensors T (name -> torch tensor)."""
    def get(suffix):
        name = f"{module}.{suffix}"
        if name not in T:
            raise G.GoldenError(f"{name} missing")
        return T[name]

    m = q["quant_method"]
    if m == "awq":
        g = q.get("group_size", q.get("q_group_size", 128))
        qw = unpack_awq(np, get("qweight").numpy())            # [k, n]
        qz = unpack_awq(np, get("qzeros").numpy())             # [k/g, n]
        s = f32(np, get("scales"))                             # [k/g, n]
        grp = np.arange(k) // g
        w = (qw - qz[grp]).astype(np.float32) * s[grp]
        return w.T.copy()
    if m == "gptq":
        bits = q.get("bits", 4)
        v2 = q.get("checkpoint_format", q.get("format", "gptq")) == "gptq_v2"
        qw = unpack_cols(np, get("qweight").numpy(), bits)      # [k, n]
        qz = unpack_rows(np, get("qzeros").numpy(), bits)       # [groups, n]
        if not v2:
            qz = qz + 1
        s = f32(np, get("scales"))
        gs = q.get("group_size", 128)
        if q.get("desc_act", False):
            grp = get("g_idx").numpy().astype(np.int64)
        else:
            grp = np.zeros(k, dtype=np.int64) if gs == -1 else np.arange(k) // gs
        w = (qw - qz[grp]).astype(np.float32) * s[grp]
        return w.T.copy()
    if m == "compressed-tensors":
        fmt = q["format"]
        wq = next(iter(q["config_groups"].values()))["weights"]
        if fmt == "pack-quantized":
            bits = wq["num_bits"]
            off = 1 << (bits - 1)
            shape = [int(x) for x in get("weight_shape").tolist()]
            if shape != [n, k]:
                raise G.GoldenError(f"{module}: weight_shape {shape}")
            codes = unpack_rows(np, get("weight_packed").numpy(), bits)[:, :k] - off
            s = f32(np, get("weight_scale"))                  # [n, groups]
            if wq.get("strategy") == "channel":
                grp = np.zeros(k, dtype=np.int64)
            elif f"{module}.weight_g_idx" in T:
                grp = T[f"{module}.weight_g_idx"].numpy().astype(np.int64)
            else:
                grp = np.arange(k) // wq["group_size"]
            zp = 0
            if not wq.get("symmetric", True):
                zp = unpack_cols(np, get("weight_zero_point").numpy(), bits)[:n] - off
                zp = zp[:, grp]
            return (codes - zp).astype(np.float32) * s[:, grp]
        w = f32(np, get("weight"))                               # torch's e4m3 decoding
        s = f32(np, get("weight_scale")).reshape(-1)
        return (w * (s.reshape(n, 1) if s.size == n and s.size > 1 else s[0])).astype(np.float32)
    if m == "fp8":
        w = f32(np, get("weight"))
        if "weight_block_size" in q:
            bn, bk = q["weight_block_size"]
            s = f32(np, get("weight_scale_inv"))
            return (w * np.repeat(np.repeat(s, bn, 0), bk, 1)[:n, :k]).astype(np.float32)
        return (w * f32(np, get("weight_scale")).reshape(-1)[0]).astype(np.float32)
    raise G.GoldenError(f"unknown quant_method {m}")


def quantizable(name):
    return name.startswith("model.layers.") and name.endswith("_proj.weight")


def is_ignored(q, module):
    import re
    lst = q.get("ignore") or q.get("ignored_layers") or q.get("modules_to_not_convert") or []
    for e in lst:
        if e.startswith("re:"):
            if re.match(e[3:], module):
                return True
        elif module == e or module.startswith(e + "."):
            return True
    return False


def dequantized_state(np, torch, load_file, model_dir):
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    q = cfg["quantization_config"]
    T = load_file(os.path.join(model_dir, "model.safetensors"))
    H, I = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg.get("head_dim") or H // cfg["num_attention_heads"]
    dims = {"q_proj": (cfg["num_attention_heads"] * hd, H),
            "k_proj": (cfg["num_key_value_heads"] * hd, H),
            "v_proj": (cfg["num_key_value_heads"] * hd, H),
            "o_proj": (H, cfg["num_attention_heads"] * hd),
            "gate_proj": (I, H), "up_proj": (I, H), "down_proj": (H, I)}
    out = {}
    for layer in range(cfg["num_hidden_layers"]):
        for part, (n, k) in dims.items():
            sub = "self_attn" if part[0] in "qkvo" and part != "gate_proj" else "mlp"
            module = f"model.layers.{layer}.{sub}.{part}"
            if is_ignored(q, module):
                out[module + ".weight"] = T[module + ".weight"].float()
                continue
            out[module + ".weight"] = torch.from_numpy(dequant_module(np, q, T, module, n, k))
    for name, t in T.items():
        if not name.startswith("model.layers.") or name.endswith("layernorm.weight"):
            out[name] = t.float() if t.is_floating_point() else t
    return cfg, out


def run_format(np, torch, transformers, load_file, mkmodel, fmt, work, device, versions):
    qdir, ddir, hdir = (os.path.join(work, fmt + s) for s in ("", ".pl-dense", ".hf"))
    subprocess.run([mkmodel, "--preset", PRESET, "--quant", fmt, "--out", qdir, "--dequant-out",
                    ddir], check=True, stdout=subprocess.DEVNULL)
    cfg, state = dequantized_state(np, torch, load_file, qdir)
    # 3. bit-for-bit agreement with pl-mkmodel's own dequantized model
    pl_dense = load_file(os.path.join(ddir, "model.safetensors"))
    for name, t in state.items():
        a = t.float().numpy()
        b = pl_dense[name].float().numpy()
        if a.shape != b.shape or not np.array_equal(a.view(np.uint32), b.view(np.uint32)):
            raise G.GoldenError(f"{fmt}: {name}: this reading and pl-mkmodel's dequantized "
                                f"model differ (max |diff| {np.abs(a - b).max()})")
    # 4. transformers on the dense dequantized model
    os.makedirs(hdir, exist_ok=True)
    dense_cfg = dict(cfg)
    dense_cfg.pop("quantization_config")
    with open(os.path.join(hdir, "config.json"), "w", encoding="utf-8") as f:
        json.dump(dense_cfg, f, indent=2, sort_keys=True)
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()},
              os.path.join(hdir, "model.safetensors"), metadata={"format": "pt"})
    model, _ = G.load_model(torch, transformers, hdir, device)
    prompts = []
    for ids, n_new in PROMPTS:
        toks, tops, gaps, _ = G.greedy_cached(torch, model, ids, n_new, device)
        prompts.append({"prompt_token_ids": ids, "max_tokens": n_new, "token_ids": toks,
                        "top_logprobs": tops, "min_gap": min(gaps)})
    return {
        "version": FIXTURE_VERSION, "preset": PRESET, "format": fmt,
        "quantization_config": cfg["quantization_config"],
        "model_sha256": G.sha256_file(os.path.join(qdir, "model.safetensors")),
        "config_sha256": G.sha256_file(os.path.join(qdir, "config.json")),
        "reference": "transformers fp32 eager, dense model of the dequantized weights",
        "device": device, **versions,
        "min_gap": min(p["min_gap"] for p in prompts),
        "prompts": prompts,
    }


def self_test():
    import numpy as np
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 16, size=(4, 16))
    assert np.array_equal(unpack_awq(np, pack_awq(np, codes)), codes)
    assert np.array_equal(unpack_rows(np, pack_rows(np, codes, 4), 4), codes)
    assert np.array_equal(unpack_cols(np, pack_cols(np, codes.T.copy(), 4), 4), codes.T)
    c8 = rng.integers(0, 256, size=(8, 8))
    assert np.array_equal(unpack_rows(np, pack_rows(np, c8, 8), 8), c8)
    # worked example: AWQ word 0x76543210 -> columns 0..7 hold codes 0 4 1 5 2 6 3 7
    w = np.array([[0x76543210]], dtype=np.uint32).view(np.int32)
    assert unpack_awq(np, w).tolist() == [[0, 4, 1, 5, 2, 6, 3, 7]]
    # compressed-tensors: pack_to_int32 puts value i of a row at bits 4i
    assert unpack_rows(np, w, 4).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    print("quant_refs: self-test passed")
    return 0


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out")
    ap.add_argument("--formats", default="")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--mkmodel", default="")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args(argv)
    if a.self_test:
        return self_test()
    if not a.out:
        ap.error("--out is required")
    import numpy as np
    torch, transformers, load_file = G.import_stack()
    mkmodel = G.find_mkmodel(a.mkmodel)
    listed = subprocess.run([mkmodel, "--list-quant"], check=True, capture_output=True,
                            text=True).stdout.split("\n")
    formats = [ln.split()[0] for ln in listed if ln.strip()]
    if a.formats:
        want = a.formats.split(",")
        unknown = [f for f in want if f not in formats]
        if unknown:
            raise G.GoldenError(f"unknown formats {unknown}; pl-mkmodel lists {formats}")
        formats = want
    versions = {"transformers_version": transformers.__version__,
                "torch_version": torch.__version__}
    os.makedirs(a.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for fmt in formats:
            fx = run_format(np, torch, transformers, load_file, mkmodel, fmt, work, a.device,
                            versions)
            path = os.path.join(a.out, fmt + ".json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(fx, f, indent=1, sort_keys=True)
                f.write("\n")
            print(f"quant_refs: {fmt}: min top-1/top-2 gap {fx['min_gap']:.2e} -> {path}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except G.GoldenError as e:
        print(f"quant_refs: {e}", file=sys.stderr)
        sys.exit(1)
