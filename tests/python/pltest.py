"""pltest -- shared helpers of the Python suite: paths, the tiny model, the CLI.

Paths come from ctest's environment (PL_SOURCE_DIR, PL_BINARY_DIR, PAGELLM,
PAGELLM_LIBRARY); run by hand, they default to the source tree and build/.
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

SOURCE = os.environ.get("PL_SOURCE_DIR") or os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("PL_BINARY_DIR") or os.path.join(SOURCE, "build")
PAGELLM = os.environ.get("PAGELLM") or os.path.join(BINARY, "pagellm")
MKMODEL = os.path.join(os.path.dirname(PAGELLM), "pl-mkmodel")
PYTHON_DIR = os.path.join(SOURCE, "python")
STUBS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stubs")
EXAMPLES = os.path.join(SOURCE, "examples", "python")

if PYTHON_DIR not in sys.path:
    sys.path.insert(0, PYTHON_DIR)
os.environ.setdefault("PAGELLM_LOG_LEVEL", "warn")

_tmp = None
_models = {}


def tmpdir():
    """A directory removed when the process exits."""
    global _tmp
    if _tmp is None:
        _tmp = tempfile.mkdtemp(prefix="pl-pytest-")
        atexit.register(shutil.rmtree, _tmp, True)
    return _tmp


def tiny_model(preset="default"):
    """The directory of a pl-mkmodel preset (made once per process): a tiny Llama with
    deterministic random weights, a byte-level BPE tokenizer and a chat template."""
    if preset not in _models:
        out = os.path.join(tmpdir(), "model-" + preset)
        subprocess.run([MKMODEL, "--preset", preset, "--out", out], check=True,
                       stdout=subprocess.DEVNULL)
        _models[preset] = out
    return _models[preset]


def fake_hub(repo_id, model_dir):
    """A Hugging Face cache (huggingface_hub's layout) holding model_dir as repo_id's
    main revision; returns the cache root (for HF_HUB_CACHE)."""
    root = os.path.join(tmpdir(), "hub")
    repo = os.path.join(root, "models--" + repo_id.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    snap = os.path.join(repo, "snapshots", sha)
    if not os.path.isdir(snap):
        os.makedirs(os.path.join(repo, "refs"))
        shutil.copytree(model_dir, snap)
        with open(os.path.join(repo, "refs", "main"), "w") as f:
            f.write(sha)
    return root


def cli_generate(model, prompts, *args):
    """`pagellm generate --json` on prompts (str or list of ids): its JSON lines."""
    argv = [PAGELLM, "generate", "--model", model, "--json", "--no-progress"]
    for p in prompts:
        if isinstance(p, str):
            argv += ["--prompt", p]
        else:
            argv += ["--prompt-ids", ",".join(str(i) for i in p)]
    argv += [str(a) for a in args]
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise AssertionError("pagellm generate failed (%d): %s" % (r.returncode, r.stderr))
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
