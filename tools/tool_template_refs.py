#!/usr/bin/env python3
"""tool_template_refs.py -- references for tool conversations rendered through chat templates.

A chat request's tools and messages (OpenAI form: tool_calls arguments as JSON text, null
contents, tools without description or parameters) go through vLLM's preprocessing
(entrypoints/chat_utils.py and protocol.py: arguments parsed into objects, a null content
"", each tool dumped as {"type", "function": {"name", "description", "parameters", ...}})
and then through transformers' apply_chat_template rendering (render_jinja_template, or,
without transformers, a jinja2 environment built as transformers builds it). The result is
what pagellm's server must render for the same request: tests/unit/test_tool_call.c reads
tests/fixtures/tool_calls/render.json and renders every case with pl_tool_request_parse and
pl_apply_chat_template.

  python3 tools/tool_template_refs.py [--out FILE]   writes the fixture (default: the
                                                      committed one)
  python3 tools/tool_template_refs.py --check        renders again and compares with the
                                                      committed fixture (exit 1 on a mismatch)

On the GPU machine (transformers installed), --check confirms the committed references
with transformers' own rendering code.
"""
import argparse
import copy
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "tests", "fixtures", "chat_template", "templates")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "tool_calls", "render.json")
sys.path.insert(0, os.path.join(ROOT, "tools"))

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
BARE = {"type": "function", "function": {"name": "get_time"}}  # no description, no parameters
STRICT = {"type": "function", "function": {"name": "lookup", "description": "Look up — \"x\" & <y>",
                                           "parameters": {"type": "object", "properties": {}}, "strict": True}}


def call(i, name, args):
    return {"id": "call_%d" % i, "type": "function", "function": {"name": name, "arguments": args}}


CONVERSATIONS = {
    "question": [{"role": "user", "content": "What is the weather in Paris?"}],
    "round_trip": [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call(1, "get_weather", '{"city": "Paris", "unit": "celsius"}')]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22 degrees, sunny"},
    ],
    "round_trip_answered": [
        {"role": "user", "content": "Time?"},
        {"role": "assistant", "content": "", "tool_calls": [call(2, "get_time", "")]},
        {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
        {"role": "assistant", "content": "It is noon."},
        {"role": "user", "content": "Thanks"},
    ],
    "parallel": [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking both.", "tool_calls": [
            call(3, "get_weather", '{"city": "Paris"}'), call(4, "get_weather", '{"city": "Rome", "unit": "fahrenheit"}')]},
        {"role": "tool", "tool_call_id": "call_3", "content": "22"},
        {"role": "tool", "tool_call_id": "call_4", "content": "75"},
    ],
}

# (template, conversation, tools, add_generation_prompt, extra kwargs)
CASES = [
    ("qwen3.jinja", "question", [WEATHER, BARE], True, {}),
    ("qwen3.jinja", "round_trip", [WEATHER], True, {}),
    ("qwen3.jinja", "round_trip_answered", [BARE, STRICT], True, {"enable_thinking": False}),
    ("qwen3.jinja", "parallel", [WEATHER], True, {}),
    ("qwen3.jinja", "round_trip", None, True, {}),
    ("hermes_tools.jinja", "question", [WEATHER, BARE, STRICT], True, {}),
    ("hermes_tools.jinja", "round_trip", [WEATHER], True, {}),
    ("hermes_tools.jinja", "parallel", [WEATHER], False, {}),
    ("syn_tools.jinja", "question", [WEATHER, BARE], True, {"date_string": "26 Jul 2024"}),
    ("syn_tools.jinja", "round_trip", [WEATHER], True, {"date_string": "26 Jul 2024"}),
]
BOS, EOS = "<s>", "</s>"


def vllm_messages(msgs):
    """vLLM's parse_chat_messages + _postprocess_messages for text-only messages."""
    out = copy.deepcopy(msgs)
    for m in out:
        if m.get("content") is None:
            m["content"] = ""
        if m["role"] == "assistant" and isinstance(m.get("tool_calls"), list):
            for c in m["tool_calls"]:
                a = c["function"].get("arguments")
                if a:
                    if not isinstance(a, (dict, list)):
                        c["function"]["arguments"] = json.loads(a)
                else:
                    c["function"]["arguments"] = {}
    return out


def vllm_tools(tools):
    """ChatCompletionToolsParam.model_dump(): declared fields first (None when absent)."""
    if tools is None:
        return None
    out = []
    for t in tools:
        f = t["function"]
        fn = {"name": f["name"], "description": f.get("description"), "parameters": f.get("parameters")}
        fn.update({k: v for k, v in f.items() if k not in fn})
        d = {"type": "function", "function": fn}
        d.update({k: v for k, v in t.items() if k not in d})
        out.append(d)
    return out


def renderer():
    """transformers' render_jinja_template when it is there and callable as in 4.5x / 5.x,
    else transformers' _compile_jinja_template, else the jinja2 replica."""
    try:
        import transformers
        from transformers.utils import chat_template_utils as ctu

        def render_rjt(source, messages, tools, agp, kwargs):
            rendered, _ = ctu.render_jinja_template(conversations=[messages], tools=tools, documents=None,
                                                    chat_template=source, add_generation_prompt=agp,
                                                    bos_token=BOS, eos_token=EOS, **kwargs)
            return rendered[0]

        def render_compiled(source, messages, tools, agp, kwargs):
            return ctu._compile_jinja_template(source).render(
                messages=messages, tools=tools, documents=None, add_generation_prompt=agp,
                bos_token=BOS, eos_token=EOS, **kwargs)

        probe = [{"role": "user", "content": "x"}]
        for fn, what in ((render_rjt, "render_jinja_template"), (render_compiled, "_compile_jinja_template")):
            try:
                if fn("{{ messages[0].content }}", probe, None, False, {}) == "x":
                    return fn, "transformers %s %s" % (transformers.__version__, what)
            except Exception:
                pass
    except Exception:
        pass
    import jinja2
    from template_refs_check import replica_compile

    def render(source, messages, tools, agp, kwargs):
        return replica_compile(source).render(messages=messages, tools=tools, documents=None,
                                              add_generation_prompt=agp, bos_token=BOS,
                                              eos_token=EOS, **kwargs)

    return render, "jinja2 %s, environment built as transformers builds it" % jinja2.__version__


def build():
    render, how = renderer()
    cases = []
    for tmpl, conv, tools, agp, kwargs in CASES:
        with open(os.path.join(TEMPLATES, tmpl), encoding="utf-8") as f:
            source = f.read()
        request = {"messages": CONVERSATIONS[conv]}
        if tools is not None:
            request["tools"] = tools
        expected = render(source, vllm_messages(request["messages"]), vllm_tools(tools), agp, dict(kwargs))
        cases.append({
            "name": "%s/%s%s" % (os.path.splitext(tmpl)[0], conv, "" if tools is not None else "_no_tools"),
            "template_file": "tests/fixtures/chat_template/templates/" + tmpl,
            "request": request,
            "add_generation_prompt": agp,
            "chat_template_kwargs": kwargs,
            "bos_token": BOS,
            "eos_token": EOS,
            "expected": expected,
        })
    return {"reference": how, "cases": cases}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=FIXTURE)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    fx = build()
    if args.check:
        with open(FIXTURE, encoding="utf-8") as f:
            have = json.load(f)
        bad = 0
        for a, b in zip(have["cases"], fx["cases"]):
            if a["expected"] != b["expected"] or a["request"] != b["request"]:
                bad += 1
                print("MISMATCH %s\n  fixture: %r\n  now:     %r" % (a["name"], a["expected"], b["expected"]))
        if len(have["cases"]) != len(fx["cases"]):
            bad += 1
            print("MISMATCH: %d cases in the fixture, %d now" % (len(have["cases"]), len(fx["cases"])))
        print("%d cases, %d mismatches (reference: %s)" % (len(fx["cases"]), bad, fx["reference"]))
        return 1 if bad else 0
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(json.dumps(fx, indent=1, ensure_ascii=False) + "\n")
    print("%d cases written to %s (reference: %s)" % (len(fx["cases"]), args.out, fx["reference"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
