#!/usr/bin/env python3
"""hf_baseline.py -- the Hugging Face transformers baseline of docs/benchmarks.md's scenarios.

Builds the model shape of a config.json (default: bench/models/llama-3-8b) with
transformers' AutoConfig / AutoModelForCausalLM (Llama, Gemma 3, Qwen3-MoE, ...) and random
bf16 weights made on the GPU (no download, the same shape pagellm's --load-format dummy
runs), then times greedy generate() with
SDPA attention and the default dynamic cache, static batches, every sequence running
to max_new_tokens (min_new_tokens = max_new_tokens, i.e. ignore_eos):

  s4: process start (the shell passes its clock as --t0) to the first generated token
  s2: batch 1, 128 in / 256 out: output tok/s
  s1: batch B (default 256; docs/benchmarks.md's best HF batch), 512 in / 256 out: output
      tok/s. The S1 workload is 1024 prompts; static batches of B run it in 1024/B
      rounds of the same cost, so one round's rate is HF's rate for the whole workload.
  --run LABEL:B:IN:OUT (repeatable): batch B, IN in / OUT out, output tok/s, as s1 (a
      16-token warm-up of batch 1 runs once before the first of them).

Prints one JSON object per scenario (one line each) and nothing else on stdout.
Usage: python3 bench/hf_baseline.py [--config DIR] [--scenarios s4,s2,s1] [--s1-batch 256]
                                    [--t0 EPOCH_SECONDS] [--run LABEL:B:IN:OUT ...]
"""
import argparse
import json
import os
import sys
import time

T_IMPORT = time.time()


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--config", default=os.path.join(here, "models", "llama-3-8b"))
    ap.add_argument("--scenarios", default="s4,s2,s1")
    ap.add_argument("--s1-batch", type=int, default=256)
    ap.add_argument("--t0", type=float, default=None, help="process start (epoch seconds)")
    ap.add_argument("--run", action="append", default=[], help="LABEL:B:IN:OUT")
    a = ap.parse_args()
    scen = [x for x in a.scenarios.split(",") if x]
    runs = []
    for r in a.run:
        label, b, n_in, n_out = r.split(":")
        runs.append((label, int(b), int(n_in), int(n_out)))
    t0 = a.t0 if a.t0 is not None else T_IMPORT

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    import transformers

    cfg = AutoConfig.from_pretrained(a.config)
    try:
        cfg._attn_implementation = "sdpa"  # transformers' default on CUDA anyway
    except Exception as e:  # noqa: BLE001 - older/newer config classes
        print("note: could not set sdpa:", e, file=sys.stderr)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly (no fp32 copy)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg)
    torch.set_default_dtype(torch.float32)
    model.eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    t_loaded = time.time()
    gen = torch.Generator(device="cpu").manual_seed(0)

    def run(batch, n_in, n_out):
        ids = torch.randint(0, 256, (batch, n_in), generator=gen).cuda()
        torch.cuda.synchronize()
        t = time.time()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=n_out, min_new_tokens=n_out)
        torch.cuda.synchronize()
        dt = time.time() - t
        assert out.shape == (batch, n_in + n_out), out.shape
        return dt

    common = {"baseline": "transformers %s, torch %s, sdpa, dynamic cache, greedy" %
              (transformers.__version__, torch.__version__), "device": torch.cuda.get_device_name(),
              "model_type": cfg.model_type}
    if "s4" in scen:
        run(1, 128, 1)
        now = time.time()
        print(json.dumps(dict(common, scenario="S4", seconds_to_first_token=round(now - t0, 2),
                              model_build_seconds=round(t_loaded - t0, 2))), flush=True)
    if "s2" in scen:
        run(1, 16, 8)  # warm-up
        dt = run(1, 128, 256)
        print(json.dumps(dict(common, scenario="S2", batch=1, input_len=128, output_len=256,
                              seconds=round(dt, 2), output_tok_s=round(256 / dt, 1))), flush=True)
    if "s1" in scen:
        b = a.s1_batch
        dt = run(b, 512, 256)
        print(json.dumps(dict(common, scenario="S1", batch=b, input_len=512, output_len=256,
                              seconds=round(dt, 2), output_tok_s=round(b * 256 / dt, 1))),
              flush=True)
    for i, (label, b, n_in, n_out) in enumerate(runs):
        if i == 0:
            run(1, 16, 8)  # warm-up
        dt = run(b, n_in, n_out)
        print(json.dumps(dict(common, scenario=label, batch=b, input_len=n_in, output_len=n_out,
                              seconds=round(dt, 2), output_tok_s=round(b * n_out / dt, 1))),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
