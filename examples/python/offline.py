"""offline.py -- pagellm's Python package for offline inference: batch generation,
chat, token-id prompts, logprobs and streaming, with vLLM's API.

    python3 examples/python/offline.py [MODEL]

MODEL: a model directory or a Hugging Face Hub id (default: $PAGELLM_MODEL, else
models/default, the built-in tiny model: ./scripts/run-default.sh makes it; its output
is gibberish by design). Run from a source checkout, put python/ on PYTHONPATH (or
`pip install ./python`); the package finds build/libpagellm.so by itself.
"""
import sys

from pagellm import LLM, SamplingParams

model = sys.argv[1] if len(sys.argv) > 1 else None
if model is None:
    import os
    model = os.environ.get("PAGELLM_MODEL", "models/default")

llm = LLM(model=model, seed=0)

# 1. a batch of text prompts, one SamplingParams for all
prompts = ["The best way to learn about AI is", "San Francisco is a city known for"]
for out in llm.generate(prompts, SamplingParams(temperature=0.8, top_p=0.95, max_tokens=32)):
    print("%r -> %r (%s)" % (out.prompt, out.outputs[0].text, out.outputs[0].finish_reason))

# 2. token-id prompts, greedy, with the top-3 logprobs of each generated token
tokenizer = llm.get_tokenizer()
ids = tokenizer.encode("The capital of France is")
out = llm.generate([ids], SamplingParams(temperature=0, max_tokens=4, logprobs=3))[0]
for token_id, top in zip(out.outputs[0].token_ids, out.outputs[0].logprobs):
    print(token_id, {t: (round(lp.logprob, 3), lp.decoded_token) for t, lp in top.items()})
print("cumulative logprob:", out.outputs[0].cumulative_logprob)

# 3. n samples with a seed: the same seed gives the same samples
samples = llm.generate("Once upon a time", SamplingParams(n=3, seed=42, max_tokens=16))[0]
for c in samples.outputs:
    print(c.index, repr(c.text))

# 4. chat, with the model's chat template
conversation = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a haiku about the sea."}]
print(llm.chat(conversation, SamplingParams(temperature=0.7, max_tokens=48))[0].outputs[0].text)

# 5. streaming: each output's text is cumulative; the last one is finished
for partial in llm.stream("Tell me a story:", SamplingParams(max_tokens=24)):
    print("\r" + partial.outputs[0].text, end="", flush=True)
print()
