#!/usr/bin/env python3
"""template_refs_check.py -- re-renders the chat template fixtures with Python jinja2
the way transformers' apply_chat_template does, reports where the fixtures disagree,
and writes corrected fixtures (Python is the truth).

The fixtures (tests/fixtures/chat_template/*.json) are first made by
tools/template_refs.mjs with @huggingface/jinja; that port differs from jinja2 in places
(value printing, some filters, unsupported syntax). This script settles every case:

  python3 tools/template_refs_check.py [--models DIR] [--out OUTDIR] [FIXTURE.json ...]

  --models DIR  a folder holding model folders named llama3, qwen3, gemma3 (each with
                tokenizer_config.json, tokenizer.json): the real-template fixtures are then
                rendered by tokenizer.apply_chat_template(messages, tools=..., documents=...,
                add_generation_prompt=..., tokenize=False, **kwargs), transformers' own path.
  otherwise     each template is compiled by transformers' _compile_jinja_template when
                transformers is importable, else by an environment built exactly as
                transformers builds it (ImmutableSandboxedEnvironment, trim_blocks,
                lstrip_blocks, loopcontrols, the generation tag, raise_exception,
                strftime_now, json.dumps-based tojson), and rendered with the case context.
  --out OUTDIR  where corrected fixtures go (default: build/template_refs_python); copy them
                over tests/fixtures/chat_template/ to adopt them.

Exit status: 0 when every fixture already matched, 1 when something was corrected.
"""
import argparse
import copy
import json
import os
import sys
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXDIR = os.path.join(ROOT, "tests", "fixtures", "chat_template")


def replica_compile(source):
    """The environment of transformers.utils.chat_template_utils._compile_jinja_template."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation_support(self, context, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format):
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def compiler():
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        import transformers

        return _compile_jinja_template, "transformers %s _compile_jinja_template" % transformers.__version__
    except Exception:
        import jinja2

        return replica_compile, "jinja2 %s, environment built as transformers builds it" % jinja2.__version__


def render_with_template(compiled, context):
    try:
        return {"expected": compiled.render(**copy.deepcopy(context))}
    except Exception as e:  # TemplateError from raise_exception, or any jinja2 error
        return {"error": str(e)}


def render_with_tokenizer(tok, context):
    ctx = copy.deepcopy(context)
    messages = ctx.pop("messages")
    tools = ctx.pop("tools", None)
    documents = ctx.pop("documents", None)
    agp = ctx.pop("add_generation_prompt", False)
    for special in ("bos_token", "eos_token"):
        want = ctx.pop(special, None)
        have = getattr(tok, special, None)
        if want is not None and want != have:
            return {"error": "fixture %s %r differs from the tokenizer's %r" % (special, want, have)}
    try:
        out = tok.apply_chat_template(
            messages, tools=tools, documents=documents, add_generation_prompt=agp, tokenize=False, **ctx
        )
        return {"expected": out}
    except Exception as e:
        return {"error": str(e)}


def same(case, result):
    if "expected" in result:
        return case.get("expected") == result["expected"] and "error" not in case
    # errors: the message text must match (raise_exception text)
    return "error" in case and (result["error"] in case["error"] or case["error"] in result["error"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", help="folder with llama3/ qwen3/ gemma3/ tokenizer folders")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "template_refs_python"))
    ap.add_argument("fixtures", nargs="*")
    args = ap.parse_args()

    compile_fn, how = compiler()
    paths = args.fixtures or sorted(
        os.path.join(FIXDIR, f) for f in os.listdir(FIXDIR) if f.endswith(".json")
    )
    os.makedirs(args.out, exist_ok=True)
    n_cases = n_bad = 0
    for p in paths:
        with open(p, encoding="utf-8") as f:
            fx = json.load(f)
        name = os.path.splitext(os.path.basename(p))[0]
        with open(os.path.join(ROOT, fx["template_file"]), encoding="utf-8") as f:
            source = f.read()
        tok = None
        reference = how
        if args.models and os.path.isdir(os.path.join(args.models, name)):
            from transformers import AutoTokenizer
            import transformers

            tok = AutoTokenizer.from_pretrained(os.path.join(args.models, name))
            tok.chat_template = source
            reference = "transformers %s apply_chat_template" % transformers.__version__
        compiled = None
        if tok is None:
            try:
                compiled = compile_fn(source)
            except Exception as e:
                compiled = e
        changed = []
        new_cases = []
        for case in fx["cases"]:
            n_cases += 1
            if tok is not None:
                result = render_with_tokenizer(tok, case["context"])
            elif isinstance(compiled, Exception):
                result = {"error": str(compiled)}
            else:
                result = render_with_template(compiled, case["context"])
            nc = {"name": case["name"], "context": case["context"]}
            nc.update(result)
            if not same(case, result):
                n_bad += 1
                changed.append(case["name"])
                print("MISMATCH %s/%s" % (name, case["name"]))
                print("  fixture: %r" % (case.get("expected", "error: %s" % case.get("error")),)[:2000])
                print("  python:  %r" % (result.get("expected", "error: %s" % result.get("error")),)[:2000])
            new_cases.append(nc)
        fx_out = dict(fx)
        fx_out["reference"] = reference
        if changed:
            fx_out["differs_from_js"] = sorted(set(fx.get("differs_from_js", [])) | set(changed))
        fx_out["cases"] = new_cases
        with open(os.path.join(args.out, os.path.basename(p)), "w", encoding="utf-8") as f:
            f.write(json.dumps(fx_out, indent=1, ensure_ascii=False) + "\n")
    print("%d cases, %d corrected (reference: %s); fixtures written to %s" % (n_cases, n_bad, how, args.out))
    return 1 if n_bad else 0


if __name__ == "__main__":
    sys.exit(main())
