#!/usr/bin/env python3
"""golden_refs.py -- Hugging Face transformers references for pagellm's golden tests.

usage: golden_refs.py --family NAME[,NAME...] --out OUT_DIR [--device cpu|cuda] [--mkmodel PATH]
       golden_refs.py MODELS_DIR OUT_DIR [--device cpu|cuda] [--presets a,b,...]
       golden_refs.py --list-families [--mkmodel PATH]
       golden_refs.py --self-test

--family (standalone): writes every golden preset of the named families (a family
is the model_type of the preset's config.json: llama, mistral, qwen2, qwen3, phi3,
...) with pl-mkmodel into a temporary directory and makes their references into
OUT_DIR. pl-mkmodel is --mkmodel, else $PL_MKMODEL, else build/pl-mkmodel of this
checkout; when none exists it is built with CMake (./scripts/build.sh needs the
project's C dependencies). Example, on the machine with torch and transformers 5:
    python3 tools/golden_refs.py --family phi3 --out tests/fixtures/golden/

MODELS_DIR holds one directory per golden preset, as written by
tools/make_golden_models.sh (each has pagellm_prompts.json next to the model).
For every preset this loads the model with
    AutoModelForCausalLM.from_pretrained(dir, dtype=torch.float32,
                                         attn_implementation="eager")
(transformers 5 names the argument `dtype`; `torch_dtype` is its old name),
checks that every tensor of the checkpoint landed in the model unchanged, and
for each prompt runs a manual greedy loop: one prefill forward of the prompt,
then one forward per new token through the KV cache (past_key_values), exactly
the work split an inference engine does. No generate(), no logits processors,
no sampling. Per step it records the chosen id (argmax of the raw fp32 logits),
the top-5 (id, logprob) of log_softmax(logits) and the gap between the top-1 and
top-2 logprobs. The model is loaded afresh for every prompt because
dynamic-NTK rope keeps per-model state between calls.

As a self-check of the reference itself, every prompt's cached run is compared
with one full forward (no cache) over prompt + generated tokens; they must agree
(except for dynamic rope past max_position_embeddings, where the cached run's
keys keep the rope of the step that made them, which is the engine's semantics).

One JSON fixture per preset goes to OUT_DIR/<preset>.json:
  {"preset", "model_sha256": {file: sha256 for every *.safetensors and the index},
   "config_sha256", "transformers_version", "torch_version", "device", "dtype",
   "attn_implementation", "hf_config": {...}, "min_gap",
   "prompts": [{"prompt_token_ids", "max_tokens", "token_ids",
                "top_logprobs": [[[id, logprob] x5] per step], "min_gap"}]}

Needs python3 with torch, transformers (5.x) and safetensors; never touches the
network (HF_HUB_OFFLINE / local_files_only).
"""

import argparse
import hashlib
import json
import logging
import os
import sys

TOP_K = 5
PROMPTS_FILE = "pagellm_prompts.json"
FIXTURE_VERSION = 1


class GoldenError(Exception):
    """A problem that makes a reference untrustworthy: stop with a clear message."""


# ---- parts that need no torch (covered by --self-test) -------------------------------------


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_file_hashes(model_dir):
    """sha256 of every *.safetensors file and of the shard index, by file name."""
    names = sorted(
        n for n in os.listdir(model_dir)
        if n.endswith(".safetensors") or n == "model.safetensors.index.json"
    )
    if not any(n.endswith(".safetensors") for n in names):
        raise GoldenError(f"{model_dir}: no .safetensors file")
    return {n: sha256_file(os.path.join(model_dir, n)) for n in names}


def load_prompts(model_dir):
    """Reads and validates pagellm_prompts.json; returns (preset, [(ids, max_tokens)])."""
    path = os.path.join(model_dir, PROMPTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except OSError as e:
        raise GoldenError(f"{path}: cannot read ({e.strerror})")
    except json.JSONDecodeError as e:
        raise GoldenError(f"{path}: not JSON ({e})")
    if not isinstance(doc, dict) or not isinstance(doc.get("preset"), str):
        raise GoldenError(f"{path}: no \"preset\" string")
    prompts = doc.get("prompts")
    if not isinstance(prompts, list) or not prompts:
        raise GoldenError(f"{path}: \"prompts\" must be a non-empty list")
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        vocab = json.load(f).get("vocab_size")
    if not isinstance(vocab, int) or vocab <= 0:
        raise GoldenError(f"{model_dir}/config.json: bad vocab_size {vocab!r}")
    out = []
    for i, p in enumerate(prompts):
        ids = p.get("prompt_token_ids") if isinstance(p, dict) else None
        n = p.get("max_tokens") if isinstance(p, dict) else None
        if (not isinstance(ids, list) or not ids
                or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab
                           for t in ids)):
            raise GoldenError(f"{path}: prompt {i}: prompt_token_ids must be ids in [0, {vocab})")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 64:
            raise GoldenError(f"{path}: prompt {i}: max_tokens must be an int in [1, 64]")
        out.append((ids, n))
    return doc["preset"], out


def step_record(top_ids, top_lps):
    """[[id, logprob] x K] with plain Python types, and the top-1/top-2 gap."""
    if len(top_ids) < 2 or len(top_ids) != len(top_lps):
        raise GoldenError("need at least two top entries per step")
    pairs = [[int(i), float(lp)] for i, lp in zip(top_ids, top_lps)]
    for a, b in zip(pairs, pairs[1:]):
        if a[1] < b[1]:
            raise GoldenError("top logprobs are not in descending order")
    return pairs[:TOP_K], pairs[0][1] - pairs[1][1]


def build_fixture(preset, model_dir, versions, hf_config, prompt_results, device):
    """prompt_results: [(prompt_ids, max_tokens, token_ids, [top pairs per step], [gaps])]."""
    prompts = []
    for ids, n, toks, tops, gaps in prompt_results:
        if len(toks) != n or len(tops) != n or len(gaps) != n:
            raise GoldenError(f"{preset}: a prompt produced {len(toks)} tokens, wanted {n}")
        prompts.append({
            "prompt_token_ids": list(ids),
            "max_tokens": n,
            "token_ids": list(toks),
            "top_logprobs": tops,
            "min_gap": min(gaps),
        })
    return {
        "fixture_version": FIXTURE_VERSION,
        "preset": preset,
        "model_sha256": model_file_hashes(model_dir),
        "config_sha256": sha256_file(os.path.join(model_dir, "config.json")),
        "transformers_version": versions["transformers"],
        "torch_version": versions["torch"],
        "device": device,
        "dtype": "float32",
        "attn_implementation": "eager",
        "hf_config": hf_config,
        "min_gap": min(p["min_gap"] for p in prompts),
        "prompts": prompts,
    }


def write_fixture(fixture, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, fixture["preset"] + ".json")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(fixture, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    return path


def find_preset_dirs(models_dir, only):
    if not os.path.isdir(models_dir):
        raise GoldenError(f"{models_dir}: not a directory")
    dirs = []
    for name in sorted(os.listdir(models_dir)):
        d = os.path.join(models_dir, name)
        if os.path.isfile(os.path.join(d, PROMPTS_FILE)) and (not only or name in only):
            dirs.append((name, d))
    if not dirs:
        raise GoldenError(f"{models_dir}: no preset directory with {PROMPTS_FILE} "
                          "(run tools/make_golden_models.sh first)")
    if only:
        missing = set(only) - {n for n, _ in dirs}
        if missing:
            raise GoldenError(f"presets not found in {models_dir}: {sorted(missing)}")
    return dirs


# ---- standalone: presets from pl-mkmodel (no torch needed) ----------------------------------


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def find_mkmodel(explicit):
    """The pl-mkmodel binary: --mkmodel, $PL_MKMODEL, build/pl-mkmodel, else built now."""
    import shutil
    import subprocess
    for cand in (explicit, os.environ.get("PL_MKMODEL", ""),
                 os.path.join(REPO, "build", "pl-mkmodel")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    if explicit:
        raise GoldenError(f"--mkmodel {explicit}: not an executable")
    if not shutil.which("cmake"):
        raise GoldenError("pl-mkmodel not found and cmake is missing: build pagellm first "
                          "(./scripts/build.sh build) or pass --mkmodel PATH")
    print("golden_refs: building pl-mkmodel with CMake", file=sys.stderr)
    build = os.path.join(REPO, "build")
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    for cmd in (["cmake", "-S", REPO, "-B", build, *gen, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
                ["cmake", "--build", build, "--target", "pl-mkmodel"]):
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise GoldenError(f"building pl-mkmodel failed ({' '.join(cmd)}):\n{r.stdout[-2000:]}")
    return os.path.join(build, "pl-mkmodel")


def golden_presets(mkmodel):
    import subprocess
    r = subprocess.run([mkmodel, "--list"], stdout=subprocess.PIPE, text=True, check=True)
    names = [ln.split()[0] for ln in r.stdout.splitlines()
             if len(ln.split()) > 1 and ln.split()[1] == "[golden]"]
    if not names:
        raise GoldenError(f"{mkmodel} --list shows no golden preset")
    return names


def write_preset(mkmodel, name, out):
    import subprocess
    r = subprocess.run([mkmodel, "--preset", name, "--out", out], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise GoldenError(f"pl-mkmodel --preset {name} failed: {r.stdout.strip()}")
    with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
        return json.load(f).get("model_type")


def preset_families(mkmodel):
    import tempfile
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in golden_presets(mkmodel):
            out.append((name, write_preset(mkmodel, name, os.path.join(tmp, name))))
    return out


def write_family_presets(mkmodel, families, models_dir):
    """Writes the golden presets whose model_type is in families; returns (dir, names)."""
    names, seen = set(), set()
    for name in golden_presets(mkmodel):
        d = os.path.join(models_dir, name)
        fam = write_preset(mkmodel, name, d)
        seen.add(fam)
        if fam in families:
            names.add(name)
        else:
            import shutil
            shutil.rmtree(d)
    missing = families - seen
    if missing:
        raise GoldenError(f"no golden preset of family {sorted(missing)} (families: "
                          f"{sorted(seen)})")
    return models_dir, names


# ---- the transformers part -----------------------------------------------------------------


class LogCollector(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def import_stack():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import torch
        import transformers
        from safetensors.torch import load_file
    except ImportError as e:
        raise GoldenError(f"missing Python package: {e.name} (needs torch, transformers 5.x, "
                          "safetensors)")
    try:
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:
        pass
    major = int(transformers.__version__.split(".")[0])
    if major < 5:
        print(f"golden_refs: warning: transformers {transformers.__version__} is older than 5.x",
              file=sys.stderr)
    return torch, transformers, load_file


def load_model(torch, transformers, model_dir, device):
    collector = LogCollector()
    tlog = logging.getLogger("transformers")
    tlog.addHandler(collector)
    try:
        kwargs = dict(attn_implementation="eager", local_files_only=True, output_loading_info=True)
        try:
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, dtype=torch.float32, **kwargs)
        except TypeError:  # transformers 4.x spelling
            model, info = transformers.AutoModelForCausalLM.from_pretrained(
                model_dir, torch_dtype=torch.float32, **kwargs)
    finally:
        tlog.removeHandler(collector)
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if info.get("error_msgs"):
        problems["error_msgs"] = info["error_msgs"]
    if problems:
        raise GoldenError(f"{model_dir}: transformers loading info is not clean: {problems}")
    bad = [m for m in collector.messages
           if any(w in m.lower() for w in ("newly initialized", "not initialized", "missing",
                                            "unexpected", "not used"))]
    if bad:  # loading info and check_weights() are the hard checks; these are for the log
        print(f"golden_refs: warning: transformers said while loading {model_dir}: {bad}",
              file=sys.stderr)
    model.to(device)
    model.eval()
    return model, collector.messages


def check_weights(torch, load_file, model, model_dir):
    """Every checkpoint tensor must sit in the model unchanged (no silent re-init)."""
    state = model.state_dict()
    n = 0
    converted = []
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        for key, t in load_file(os.path.join(model_dir, name)).items():
            if key not in state:
                # transformers 5 converts some checkpoint layouts on load (per-expert MoE
                # tensors into fused expert parameters, renamed MoE blocks); for those the
                # clean loading info (no missing, unexpected or mismatched keys, checked by
                # load_model) is the check
                converted.append(key)
                n += 1
                continue
            got = state[key].detach().to("cpu", torch.float32)
            if got.shape != t.shape or not torch.equal(got, t.to(torch.float32)):
                raise GoldenError(f"{model_dir}: tensor {key} differs from the checkpoint")
            n += 1
    if converted:
        print(f"golden_refs: {model_dir}: {len(converted)} checkpoint tensors were converted by "
              f"transformers on load (e.g. {converted[0]})", file=sys.stderr)
    cfg = model.config
    if getattr(cfg, "tie_word_embeddings", False):
        if model.get_output_embeddings().weight.data_ptr() != \
                model.get_input_embeddings().weight.data_ptr():
            raise GoldenError(f"{model_dir}: tie_word_embeddings but lm_head is not tied")
    return n


def hf_config_summary(model):
    c = model.config
    out = {}
    for key in ("model_type", "head_dim", "sliding_window", "use_sliding_window",
                "max_window_layers", "layer_types", "rope_parameters", "rope_scaling",
                "rope_theta", "max_position_embeddings", "tie_word_embeddings",
                "attention_bias", "rms_norm_eps", "original_max_position_embeddings",
                "partial_rotary_factor", "hidden_activation", "query_pre_attn_scalar",
                "attn_logit_softcapping", "final_logit_softcapping", "rope_local_base_freq",
                "num_experts", "num_local_experts", "num_experts_per_tok", "norm_topk_prob",
                "moe_intermediate_size", "shared_expert_intermediate_size",
                "decoder_sparse_step", "mlp_only_layers"):
        if hasattr(c, key):
            v = getattr(c, key)
            try:
                json.dumps(v)
            except TypeError:
                v = repr(v)
            out[key] = v
    return out


def rope_dict(model):
    c = model.config
    rp = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
    if isinstance(rp, dict) and isinstance(rp.get("full_attention"), dict):
        rp = rp["full_attention"]  # per-layer-type parameters (Gemma 3)
    return rp if isinstance(rp, dict) else {}


def rope_type(model):
    rp = rope_dict(model)
    return rp.get("rope_type", rp.get("type", "default"))


def comparable_length(model):
    """How much of a sequence one uncached forward computes like the cached run: all of it,
    except for rope whose tables depend on the forward's length (dynamic NTK grows its base
    past max_position_embeddings; longrope switches to its long factors past
    original_max_position_embeddings)."""
    kind = rope_type(model)
    c = model.config
    if "dynamic" in kind:
        return c.max_position_embeddings
    if kind in ("longrope", "su"):
        orig = rope_dict(model).get("original_max_position_embeddings")
        return orig or getattr(c, "original_max_position_embeddings", None) or \
            c.max_position_embeddings
    return None


def topk_of(torch, logits):
    lp = torch.log_softmax(logits.to(torch.float32), dim=-1)
    vals, idx = torch.topk(lp, TOP_K + 1)
    return lp, idx.tolist(), vals.tolist()


def greedy_cached(torch, model, prompt, n_new, device):
    toks, tops, gaps, rows = [], [], [], []
    with torch.no_grad():
        ids = torch.tensor([prompt], dtype=torch.long, device=device)
        out = model(input_ids=ids, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1]
        for step in range(n_new):
            lp, top_ids, top_vals = topk_of(torch, logits)
            tok = int(torch.argmax(logits).item())
            if tok != top_ids[0] and top_vals[0] != top_vals[1]:
                raise GoldenError("argmax disagrees with topk")
            pairs, gap = step_record(top_ids, top_vals)
            toks.append(tok)
            tops.append(pairs)
            gaps.append(gap)
            rows.append(lp.cpu())
            if step + 1 == n_new:
                break
            pos = len(prompt) + step
            out = model(input_ids=torch.tensor([[tok]], dtype=torch.long, device=device),
                        position_ids=torch.tensor([[pos]], dtype=torch.long, device=device),
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            logits = out.logits[0, -1]
    return toks, tops, gaps, rows


def full_forward_rows(torch, model, prompt, toks, device, max_len=None):
    """log_softmax rows of one uncached forward over prompt + toks[:-1], for the steps whose
    logits lie within the first max_len positions (all when None)."""
    seq = (list(prompt) + toks[:-1])[:max_len]
    with torch.no_grad():
        out = model(input_ids=torch.tensor([seq], dtype=torch.long, device=device),
                    use_cache=False)
    logits = out.logits[0]
    n_steps = len(seq) - len(prompt) + 1
    return [torch.log_softmax(logits[len(prompt) - 1 + s].to(torch.float32), -1).cpu()
            for s in range(max(0, n_steps))]


def run_preset(torch, transformers, load_file, name, model_dir, device, versions):
    preset, prompts = load_prompts(model_dir)
    if preset != name:
        raise GoldenError(f"{model_dir}: {PROMPTS_FILE} says preset {preset!r}")
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        if json.load(f).get("pagellm_tiny_test_model") is not True:
            raise GoldenError(f"{model_dir}: not a pagellm tiny test model")
    results = []
    hf_config, n_tensors, warnings_seen, max_check = None, 0, [], 0.0
    for i, (ids, n_new) in enumerate(prompts):
        model, msgs = load_model(torch, transformers, model_dir, device)
        if hf_config is None:
            hf_config = hf_config_summary(model)
            n_tensors = check_weights(torch, load_file, model, model_dir)
            warnings_seen = msgs
        toks, tops, gaps, rows = greedy_cached(torch, model, ids, n_new, device)
        # self-check against one uncached forward over the same tokens; dynamic rope rescales
        # every position once a forward is longer than max_position_embeddings, so there
        # only the part of the sequence within that length is comparable
        limit = comparable_length(model)
        if limit is not None:
            # the cached run left its grown (or long) rope frequencies in the module
            del model
            model, _ = load_model(torch, transformers, model_dir, device)
        full = full_forward_rows(torch, model, ids, toks, device, limit)
        for s, (a, b) in enumerate(zip(rows, full)):
            d = float((a - b).abs().max())
            max_check = max(max_check, d)
            if d > 1e-3:
                raise GoldenError(f"{name}: prompt {i} step {s}: cached and uncached forwards "
                                  f"differ by {d:.3g} in logprob")
        results.append((ids, n_new, toks, tops, gaps))
        del model
    fixture = build_fixture(name, model_dir, versions, hf_config, results, device)
    fixture["load_warnings"] = warnings_seen
    return fixture, n_tensors, max_check


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models_dir", nargs="?")
    ap.add_argument("out_dir", nargs="?")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu: fp32, exact)")
    ap.add_argument("--presets", default="", help="comma-separated subset")
    ap.add_argument("--self-test", action="store_true", help="test the parts that need no torch")
    ap.add_argument("--family", default="", help="comma-separated families (model_type) to make "
                    "standalone, with pl-mkmodel")
    ap.add_argument("--out", default="", help="fixture directory (with --family)")
    ap.add_argument("--mkmodel", default="", help="the pl-mkmodel binary")
    ap.add_argument("--list-families", action="store_true",
                    help="print each golden preset's family")
    args = ap.parse_args(argv)
    if args.self_test:
        return self_test()
    tmp = None
    try:
        if args.list_families:
            for name, fam in preset_families(find_mkmodel(args.mkmodel)):
                print(f"{fam:12s} {name}")
            return 0
        if args.family:
            out_dir = args.out or args.out_dir or args.models_dir
            if not out_dir:
                ap.error("--family needs --out OUT_DIR")
            import tempfile
            tmp = tempfile.TemporaryDirectory(prefix="pl_golden_")
            models_dir, only = write_family_presets(find_mkmodel(args.mkmodel),
                                                    set(args.family.split(",")), tmp.name)
            args.models_dir, args.out_dir = models_dir, out_dir
        elif not args.models_dir or not args.out_dir:
            ap.error("MODELS_DIR and OUT_DIR (or --family NAME --out OUT_DIR) are required")
        else:
            only = {p for p in args.presets.split(",") if p}
    except GoldenError as e:
        print(f"golden_refs: error: {e}", file=sys.stderr)
        return 1
    try:
        dirs = find_preset_dirs(args.models_dir, only)
        torch, transformers, load_file = import_stack()
        if args.device.startswith("cuda"):
            # fp32 means fp32: no TF32 shortcuts in matmuls
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        torch.manual_seed(0)
        versions = {"transformers": transformers.__version__, "torch": torch.__version__}
        print(f"golden_refs: transformers {versions['transformers']}, torch {versions['torch']}, "
              f"device {args.device}, {len(dirs)} presets")
        summary = []
        for name, d in dirs:
            fixture, n_tensors, check = run_preset(torch, transformers, load_file, name, d,
                                                   args.device, versions)
            path = write_fixture(fixture, args.out_dir)
            summary.append((name, fixture["min_gap"], n_tensors, check, path))
            print(f"  {name:20s} min_gap {fixture['min_gap']:.3e}  tensors {n_tensors:3d}  "
                  f"cache-vs-full {check:.1e}  -> {path}", flush=True)
    except GoldenError as e:
        print(f"golden_refs: error: {e}", file=sys.stderr)
        return 1
    finally:
        if tmp is not None:
            tmp.cleanup()
    small = [(n, g) for n, g, *_ in summary if g < 1e-3]
    print("golden_refs: summary (min top-1/top-2 logprob gap per preset):")
    for name, gap, *_ in summary:
        print(f"  {name:20s} {gap:.4e}{'   <-- below 1e-3' if gap < 1e-3 else ''}")
    if small:
        print(f"golden_refs: note: {len(small)} preset(s) have a near-tie; the golden test stops "
              "comparing a prompt's tokens after a step whose gap is tiny", file=sys.stderr)
    return 0


def self_test():
    """Checks the JSON / sha256 / validation logic without torch."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "models", "toy")
        os.makedirs(d)
        with open(os.path.join(d, "model.safetensors"), "wb") as f:
            f.write(b"abc")
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"vocab_size": 10, "pagellm_tiny_test_model": True}, f)
        with open(os.path.join(d, PROMPTS_FILE), "w") as f:
            json.dump({"preset": "toy", "prompts": [{"prompt_token_ids": [1, 2], "max_tokens": 2}]},
                      f)
        # FIPS 180-2 example: sha256("abc")
        assert model_file_hashes(d) == {
            "model.safetensors":
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
        assert find_preset_dirs(os.path.join(tmp, "models"), set()) == [("toy", d)]
        preset, prompts = load_prompts(d)
        assert preset == "toy" and prompts == [([1, 2], 2)]
        for bad in ([{"prompt_token_ids": [10], "max_tokens": 2}],
                    [{"prompt_token_ids": [], "max_tokens": 2}],
                    [{"prompt_token_ids": [True], "max_tokens": 2}],
                    [{"prompt_token_ids": [1], "max_tokens": 0}], []):
            with open(os.path.join(d, PROMPTS_FILE), "w") as f:
                json.dump({"preset": "toy", "prompts": bad}, f)
            try:
                load_prompts(d)
                raise AssertionError(f"accepted bad prompts {bad}")
            except GoldenError:
                pass
        pairs, gap = step_record([3, 1, 4, 1, 5, 9], [-0.1, -2.6, -3.0, -3.5, -4.0, -4.5])
        assert pairs == [[3, -0.1], [1, -2.6], [4, -3.0], [1, -3.5], [5, -4.0]]
        assert abs(gap - 2.5) < 1e-12
        try:
            step_record([1, 2], [-3.0, -1.0])
            raise AssertionError("accepted ascending logprobs")
        except GoldenError:
            pass
        fx = build_fixture("toy", d, {"transformers": "5.0", "torch": "2.0"}, {"x": 1},
                           [([1, 2], 2, [7, 8], [pairs, pairs], [2.5, 0.5])], "cpu")
        assert fx["min_gap"] == 0.5 and fx["prompts"][0]["min_gap"] == 0.5
        path = write_fixture(fx, os.path.join(tmp, "out"))
        with open(path) as f:
            back = json.load(f)
        assert back == json.loads(json.dumps(fx))
        assert back["config_sha256"] == sha256_file(os.path.join(d, "config.json"))
        try:
            build_fixture("toy", d, {"transformers": "5", "torch": "2"}, {},
                          [([1], 3, [1], [pairs], [1.0])], "cpu")
            raise AssertionError("accepted a short generation")
        except GoldenError:
            pass
        try:
            find_preset_dirs(os.path.join(tmp, "nothing"), set())
            raise AssertionError("accepted a missing directory")
        except GoldenError:
            pass
    print("golden_refs: self-test ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
