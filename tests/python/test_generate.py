"""LLM.generate, chat, the tokenizer and outputs, checked against the CLI (`pagellm
generate --json`, the C library's own output path) on the tiny model."""
import json
import math
import unittest

import pltest
from pagellm import LLM, SamplingParams
from pagellm.sampling_params import RequestOutputKind

PROMPTS = ["The best way to learn about AI is", "San Francisco is a city known for",
           "What is the capital of France?", "Hello"]

llm = None


def setUpModule():
    global llm
    llm = LLM(model=pltest.tiny_model())


def tearDownModule():
    llm.close()


class TestGenerate(unittest.TestCase):
    def test_greedy_equals_cli(self):
        params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        outs = llm.generate(PROMPTS, params)
        ref = pltest.cli_generate(pltest.tiny_model(), PROMPTS, "--temperature", 0,
                                  "--max-tokens", 12, "--ignore-eos")
        self.assertEqual(len(outs), len(PROMPTS))
        for out, r, prompt in zip(outs, ref, PROMPTS):
            self.assertEqual(out.prompt, prompt)
            self.assertTrue(out.finished)
            self.assertEqual(out.prompt_token_ids, r["prompt_token_ids"])
            c = out.outputs[0]
            self.assertEqual(c.token_ids, r["outputs"][0]["token_ids"])
            self.assertEqual(c.text, r["outputs"][0]["text"])
            self.assertEqual(c.finish_reason, "length")
            self.assertIsNone(c.logprobs)
            self.assertIsNone(c.cumulative_logprob)
            self.assertEqual(len(c.token_ids), 12)
            m = out.metrics
            self.assertLessEqual(m.arrival_time, m.first_scheduled_time)
            self.assertLessEqual(m.first_scheduled_time, m.first_token_time)
            self.assertLessEqual(m.first_token_time, m.last_token_time)
            self.assertLessEqual(m.last_token_time, m.finished_time)
            self.assertAlmostEqual(m.time_in_queue, m.first_scheduled_time - m.arrival_time)

    def test_default_params_equal_cli_defaults(self):
        # no sampling_params: the model's defaults (vLLM's, generation_config.json),
        # unseeded sampling from the engine generator seeded by LLM(seed=0)
        fresh = LLM(model=pltest.tiny_model())
        try:
            out = fresh.generate(["Hello"])[0]
        finally:
            fresh.close()
        ref = pltest.cli_generate(pltest.tiny_model(), ["Hello"])[0]
        self.assertEqual(out.outputs[0].token_ids, ref["outputs"][0]["token_ids"])
        self.assertEqual(len(out.outputs[0].token_ids), 16)  # vLLM's max_tokens default

    def test_seeded_equals_cli(self):
        params = SamplingParams(temperature=0.9, top_p=0.95, seed=7, max_tokens=10,
                                ignore_eos=True)
        out = llm.generate(["San Francisco is"], params)[0]
        ref = pltest.cli_generate(pltest.tiny_model(), ["San Francisco is"], "--temperature",
                                  0.9, "--top-p", 0.95, "--seed", 7, "--max-tokens", 10,
                                  "--ignore-eos")[0]
        self.assertEqual(out.outputs[0].token_ids, ref["outputs"][0]["token_ids"])

    def test_token_id_prompts(self):
        tok = llm.get_tokenizer()
        ids = [tok.encode(p) for p in PROMPTS[:2]]
        params = SamplingParams(temperature=0, max_tokens=6)
        by_text = llm.generate(PROMPTS[:2], params)
        for prompts in (ids, [{"prompt_token_ids": i} for i in ids]):
            outs = llm.generate(prompts, params)
            for out, ref, i in zip(outs, by_text, ids):
                self.assertIsNone(out.prompt)
                self.assertEqual(out.prompt_token_ids, i)
                self.assertEqual(out.outputs[0].token_ids, ref.outputs[0].token_ids)
        one = llm.generate(ids[0], params)  # a single list of ints is one prompt
        self.assertEqual(len(one), 1)
        self.assertEqual(one[0].outputs[0].token_ids, by_text[0].outputs[0].token_ids)
        cli = pltest.cli_generate(pltest.tiny_model(), ids, "--temperature", 0,
                                  "--max-tokens", 6)
        self.assertEqual([o.outputs[0].token_ids for o in by_text],
                         [r["outputs"][0]["token_ids"] for r in cli])

    def test_n_samples_and_seed(self):
        params = SamplingParams(n=4, temperature=1.0, seed=1234, max_tokens=8, ignore_eos=True)
        a = llm.generate(["Hello"], params)[0]
        b = llm.generate(["Hello", "What is"], [params, SamplingParams(n=2, max_tokens=3)])[0]
        self.assertEqual([c.index for c in a.outputs], [0, 1, 2, 3])
        self.assertEqual([c.token_ids for c in a.outputs], [c.token_ids for c in b.outputs])
        self.assertGreater(len({tuple(c.token_ids) for c in a.outputs}), 1)
        other = llm.generate(["Hello"], SamplingParams(n=4, temperature=1.0, seed=99,
                                                       max_tokens=8, ignore_eos=True))[0]
        self.assertNotEqual([c.token_ids for c in a.outputs],
                            [c.token_ids for c in other.outputs])
        for c in a.outputs:
            self.assertEqual(c.text, llm.get_tokenizer().decode(c.token_ids))

    def test_per_prompt_params(self):
        outs = llm.generate(["a", "b"], [SamplingParams(max_tokens=2, temperature=0),
                                         SamplingParams(max_tokens=5, temperature=0)])
        self.assertEqual([len(o.outputs[0].token_ids) for o in outs], [2, 5])
        with self.assertRaisesRegex(ValueError, "lengths of prompts and sampling_params"):
            llm.generate(["a", "b"], [SamplingParams()])

    def test_logprobs(self):
        params = SamplingParams(temperature=0, max_tokens=6, logprobs=3, prompt_logprobs=2,
                                ignore_eos=True)
        out = llm.generate(["The capital of France is"], params)[0]
        c = out.outputs[0]
        self.assertEqual(len(c.logprobs), len(c.token_ids))
        total = 0.0
        for tid, pos in zip(c.token_ids, c.logprobs):
            self.assertIn(tid, pos)
            self.assertEqual(pos[tid].rank, 1)  # greedy picks the top token
            self.assertEqual(len(pos), 3)
            self.assertEqual(sorted(lp.rank for lp in pos.values()), [1, 2, 3])
            for t, lp in pos.items():
                self.assertLessEqual(lp.logprob, 0.0)
                self.assertEqual(lp.decoded_token,
                                 llm.get_tokenizer().decode([t], skip_special_tokens=False))
            total += pos[tid].logprob
        self.assertTrue(math.isclose(c.cumulative_logprob, total, rel_tol=1e-6, abs_tol=1e-6))
        self.assertIsNone(out.prompt_logprobs[0])
        self.assertEqual(len(out.prompt_logprobs), len(out.prompt_token_ids))
        for tid, pos in zip(out.prompt_token_ids[1:], out.prompt_logprobs[1:]):
            self.assertIn(tid, pos)
            self.assertLessEqual(len(pos), 3)
        ref = pltest.cli_generate(pltest.tiny_model(), ["The capital of France is"],
                                  "--temperature", 0, "--max-tokens", 6, "--logprobs", 3,
                                  "--ignore-eos")[0]["outputs"][0]
        for pos, rpos in zip(c.logprobs, ref["logprobs"]):
            self.assertEqual({e["token_id"]: e["logprob"] for e in rpos},
                             {t: lp.logprob for t, lp in pos.items()})
        self.assertTrue(math.isclose(c.cumulative_logprob, ref["cumulative_logprob"],
                                     rel_tol=1e-9))

    def test_sampled_token_outside_top_k(self):
        # logprobs=0: only the sampled token, with its true rank (vLLM's shape)
        out = llm.generate(["Hello"], SamplingParams(temperature=1.0, seed=3, max_tokens=8,
                                                     logprobs=0, ignore_eos=True))[0]
        for tid, pos in zip(out.outputs[0].token_ids, out.outputs[0].logprobs):
            self.assertEqual(list(pos), [tid])
            self.assertGreaterEqual(pos[tid].rank, 1)

    def test_stop_string_and_token(self):
        base = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=12,
                                                      ignore_eos=True))[0].outputs[0]
        stop = base.text[4:7]
        self.assertTrue(stop)
        c = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=12, stop=stop,
                                                   ignore_eos=True))[0].outputs[0]
        self.assertEqual(c.finish_reason, "stop")
        self.assertEqual(c.stop_reason, stop)
        self.assertEqual(c.text, base.text[:base.text.index(stop)])
        tid = base.token_ids[3]
        c = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=12,
                                                   stop_token_ids=[tid], ignore_eos=True))[0]
        c = c.outputs[0]
        self.assertEqual(c.finish_reason, "stop")
        self.assertEqual(c.stop_reason, tid)
        self.assertEqual(c.token_ids, base.token_ids[:base.token_ids.index(tid) + 1])

    def test_structured_outputs(self):
        # a random-weight model is the hardest case for a constraint: every output must
        # still be what the constraint says, and equal the CLI's constrained output
        from pagellm.sampling_params import GuidedDecodingParams, StructuredOutputsParams
        schema = {"type": "object", "properties": {"a": {"type": "integer"},
                                                   "b": {"enum": ["x", "y"]}},
                  "required": ["a", "b"], "additionalProperties": False}
        outs = llm.generate(PROMPTS, SamplingParams(
            temperature=1.0, seed=3, max_tokens=60,
            structured_outputs=StructuredOutputsParams(json=schema)))
        for o in outs:
            c = o.outputs[0]
            if c.finish_reason == "stop":
                v = json.loads(c.text)
                self.assertEqual(sorted(v), ["a", "b"])
                self.assertIsInstance(v["a"], int)
                self.assertIn(v["b"], ("x", "y"))
        choices = ["red", "green", "blue"]
        outs = llm.generate(PROMPTS, SamplingParams(
            temperature=1.0, seed=7, max_tokens=10,
            guided_decoding=GuidedDecodingParams(choice=choices)))
        for o in outs:
            self.assertIn(o.outputs[0].text, choices)
            self.assertEqual(o.outputs[0].finish_reason, "stop")
        # a dict works too, and the result equals the CLI's --choice
        got = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=10,
                                                     structured_outputs={"choice": choices}))
        ref = pltest.cli_generate(pltest.tiny_model(), ["Hello"], "--temperature", 0,
                                  "--max-tokens", 10, "--choice", ",".join(choices))
        self.assertEqual(got[0].outputs[0].token_ids, ref[0]["outputs"][0]["token_ids"])
        with self.assertRaises(ValueError):
            StructuredOutputsParams(regex="a", choice=["b"])
        with self.assertRaises(Exception) as cm:
            llm.generate(["Hello"], SamplingParams(structured_outputs={"json": {"not": {}}}))
        self.assertIn("not", str(cm.exception))

    def test_logit_bias_and_allowed_tokens(self):
        c = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=4,
                                                   logit_bias={300: 100.0}))[0].outputs[0]
        self.assertEqual(c.token_ids, [300] * 4)
        c = llm.generate(["Hello"], SamplingParams(temperature=1.0, seed=5, max_tokens=6,
                                                   allowed_token_ids=[400, 401]))[0].outputs[0]
        self.assertTrue(set(c.token_ids) <= {400, 401}, c.token_ids)

    def test_truncate_prompt_tokens(self):
        tok = llm.get_tokenizer()
        ids = tok.encode(PROMPTS[0])
        out = llm.generate([PROMPTS[0]], SamplingParams(max_tokens=2,
                                                        truncate_prompt_tokens=3))[0]
        self.assertEqual(out.prompt_token_ids, ids[-3:])

    def test_beam_search_equals_cli(self):
        params = SamplingParams(use_beam_search=True, beam_width=3, max_tokens=8,
                                ignore_eos=True)
        outs = llm.generate(PROMPTS[:2], params)
        ref = pltest.cli_generate(pltest.tiny_model(), PROMPTS[:2], "--beam-width", 3,
                                  "--max-tokens", 8, "--ignore-eos")
        for out, r in zip(outs, ref):
            self.assertTrue(out.finished)
            self.assertEqual([c.token_ids for c in out.outputs],
                             [o["token_ids"] for o in r["outputs"]])
            self.assertEqual([c.text for c in out.outputs], [o["text"] for o in r["outputs"]])
        # streaming does not run beam search: refused with the library's message
        with self.assertRaisesRegex(NotImplementedError, "beam"):
            next(llm.stream("Hello", params))

    def test_default_sampling_params(self):
        self.assertEqual(SamplingParams(), llm.get_default_sampling_params())
        self.assertEqual(SamplingParams().output_kind, RequestOutputKind.CUMULATIVE)


class TestChat(unittest.TestCase):
    def test_chat_renders_and_generates(self):
        conv = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is the capital of France?"}]
        tok = llm.get_tokenizer()
        rendered = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        self.assertIn("What is the capital of France?", rendered)
        ids = tok.apply_chat_template(conv, add_generation_prompt=True)
        self.assertEqual(ids, tok.encode(rendered, add_special_tokens=False))
        params = SamplingParams(temperature=0, max_tokens=8)
        out = llm.chat(conv, params)[0]
        self.assertEqual(out.prompt, rendered)
        self.assertEqual(out.prompt_token_ids, ids)
        direct = llm.generate({"prompt_token_ids": ids}, params)[0]
        self.assertEqual(out.outputs[0].token_ids, direct.outputs[0].token_ids)

    def test_chat_batch_and_options(self):
        convs = [[{"role": "user", "content": "hi"}],
                 [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]]
        outs = llm.chat(convs, SamplingParams(temperature=0, max_tokens=3))
        self.assertEqual(len(outs), 2)
        self.assertIn("hello", outs[1].prompt)
        no_gen = llm.chat(convs[0], SamplingParams(max_tokens=1), add_generation_prompt=False)
        self.assertFalse(no_gen[0].prompt.endswith("assistant\n"))
        self.assertTrue(outs[0].prompt.endswith("assistant\n"), outs[0].prompt)
        custom = llm.chat(convs[0], SamplingParams(max_tokens=1),
                          chat_template="{% for m in messages %}[{{ m.content }}]{% endfor %}")
        self.assertEqual(custom[0].prompt, "[hi]")
        kw = llm.chat(convs[0], SamplingParams(max_tokens=1),
                      chat_template="{{ greeting }}:{{ messages[0].content }}",
                      chat_template_kwargs={"greeting": "yo"})
        self.assertEqual(kw[0].prompt, "yo:hi")


class TestTokenizer(unittest.TestCase):
    def test_encode_decode(self):
        tok = llm.get_tokenizer()
        ids = tok.encode("Hello world")
        ref = pltest.cli_generate(pltest.tiny_model(), ["Hello world"], "--max-tokens", 1)[0]
        self.assertEqual(ids, ref["prompt_token_ids"])
        self.assertEqual(tok.decode(ids), "Hello world")
        self.assertNotEqual(tok.decode(ids, skip_special_tokens=False), "Hello world")
        self.assertEqual(tok.encode("Hello world", add_special_tokens=False), ids[1:])
        self.assertEqual(tok("Hello world")["input_ids"], ids)
        self.assertEqual(tok.vocab_size, 960)
        self.assertEqual(tok.decode(tok.encode("héllo ✓ 漢字", add_special_tokens=False)),
                         "héllo ✓ 漢字")


if __name__ == "__main__":
    unittest.main()
