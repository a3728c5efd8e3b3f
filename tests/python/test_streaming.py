"""Streaming: LLM.stream (synchronous) and AsyncLLMEngine (asyncio), with abort; and
many threads / tasks sharing one engine."""
import asyncio
import threading
import unittest

import pltest
from pagellm import LLM, AsyncLLMEngine, SamplingParams
from pagellm.engine.arg_utils import AsyncEngineArgs
from pagellm.sampling_params import RequestOutputKind

llm = None
engine = None
GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)


def setUpModule():
    global llm, engine
    llm = LLM(model=pltest.tiny_model())
    engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=pltest.tiny_model()))


def tearDownModule():
    llm.close()
    engine.shutdown()


def check_cumulative(test, outs, final):
    """Each output extends the previous one; the last is finished and equals final."""
    prev_ids, prev_text = [], ""
    for o in outs[:-1]:
        test.assertFalse(o.finished)
    test.assertTrue(outs[-1].finished)
    for o in outs:
        c = o.outputs[0]
        test.assertEqual(c.token_ids[:len(prev_ids)], prev_ids)
        test.assertTrue(c.text.startswith(prev_text), (prev_text, c.text))
        prev_ids, prev_text = c.token_ids, c.text
    test.assertEqual(outs[-1].outputs[0].token_ids, final.outputs[0].token_ids)
    test.assertEqual(outs[-1].outputs[0].text, final.outputs[0].text)


class TestSyncStream(unittest.TestCase):
    def test_stream_is_cumulative_and_equals_generate(self):
        final = llm.generate(["Hello"], GREEDY)[0]
        outs = list(llm.stream("Hello", GREEDY))
        self.assertGreater(len(outs), 1)
        check_cumulative(self, outs, final)
        self.assertEqual(outs[0].prompt_token_ids, final.prompt_token_ids)
        self.assertEqual(outs[-1].outputs[0].finish_reason, "length")

    def test_delta_kind(self):
        final = llm.generate(["Hello"], GREEDY)[0]
        p = GREEDY.clone()
        p.output_kind = RequestOutputKind.DELTA
        outs = list(llm.stream("Hello", p))
        self.assertEqual("".join(o.outputs[0].text for o in outs if o.outputs),
                         final.outputs[0].text)
        self.assertEqual(sum((o.outputs[0].token_ids for o in outs if o.outputs), []),
                         final.outputs[0].token_ids)
        p.output_kind = RequestOutputKind.FINAL_ONLY
        outs = list(llm.stream("Hello", p))
        self.assertEqual(len(outs), 1)
        self.assertEqual(outs[0].outputs[0].token_ids, final.outputs[0].token_ids)

    def test_leaving_early_aborts(self):
        # max_tokens None: up to the context (2048), far more than the few steps the
        # abort takes to land
        long = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)
        before = llm.get_stats()["generation_tokens"]
        it = llm.stream("Hello", long)
        first = next(it)
        self.assertFalse(first.finished)
        it.close()  # aborts the request
        # the engine is free again: a request after it completes, and nothing is left
        self.assertTrue(llm.generate(["Hi"], SamplingParams(max_tokens=2))[0].finished)
        stats = llm.get_stats()
        self.assertEqual(stats["num_running"] + stats["num_waiting"], 0)
        self.assertLess(stats["generation_tokens"] - before, 2040)


class TestAsync(unittest.TestCase):
    def test_generate_streams_cumulative_text(self):
        final = llm.generate(["San Francisco is"], GREEDY)[0]

        async def run():
            return [o async for o in engine.generate("San Francisco is", GREEDY, "req-1")]
        outs = asyncio.run(run())
        self.assertGreater(len(outs), 1)
        check_cumulative(self, outs, final)
        self.assertEqual({o.request_id for o in outs}, {"req-1"})

    def test_abort(self):
        long = SamplingParams(temperature=0, max_tokens=None, ignore_eos=True)

        async def run():
            outs = []
            async for o in engine.generate("Hello", long, "to-abort"):
                outs.append(o)
                if len(outs) == 2:
                    await engine.abort("to-abort")
            return outs
        outs = asyncio.run(run())
        self.assertTrue(outs[-1].finished)
        self.assertEqual(outs[-1].outputs[0].finish_reason, "abort")
        self.assertLess(len(outs[-1].outputs[0].token_ids), 2040)
        engine.abort("no-such-request")  # a no-op, awaited or not

    def test_concurrent_requests_and_duplicate_id(self):
        prompts = ["Hello", "What is", "The best way", "San Francisco is"]
        finals = llm.generate(prompts, GREEDY)

        async def one(i, p):
            last = None
            async for o in engine.generate(p, GREEDY, "c-%d" % i):
                last = o
            return last

        async def run():
            return await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
        outs = asyncio.run(run())
        for o, f in zip(outs, finals):
            self.assertEqual(o.outputs[0].token_ids, f.outputs[0].token_ids)

        async def dup():
            g1 = engine.generate("Hello", GREEDY, "same")
            first = await g1.__anext__()
            with self.assertRaisesRegex(ValueError, "same"):
                await engine.generate("Hello", GREEDY, "same").__anext__()
            await g1.aclose()  # leaving early aborts
            return first
        self.assertFalse(asyncio.run(dup()).finished)


class TestThreads(unittest.TestCase):
    def test_many_threads_share_one_llm(self):
        prompts = ["Hello", "What is the capital of France?", "San Francisco is", "a b c"]
        params = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
        seeded = SamplingParams(temperature=1.0, seed=11, max_tokens=10, ignore_eos=True, n=2)
        ref = llm.generate(prompts, params)
        ref_seeded = llm.generate(prompts, seeded)
        errors, results = [], {}

        def worker(k):
            try:
                for r in range(3):
                    mine = prompts[k % len(prompts):] + prompts[:k % len(prompts)]
                    outs = llm.generate(mine, seeded if (k + r) % 2 else params,
                                        use_tqdm=False)
                    streamed = list(llm.stream(mine[0], params))[-1]
                    results[(k, r)] = (mine, (k + r) % 2, outs, streamed)
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 24)
        want = {p: (r, s) for p, r, s in zip(prompts, ref, ref_seeded)}
        for mine, is_seeded, outs, streamed in results.values():
            for p, o in zip(mine, outs):
                r = want[p][1 if is_seeded else 0]
                self.assertEqual(o.prompt, p)
                self.assertEqual([c.token_ids for c in o.outputs],
                                 [c.token_ids for c in r.outputs])
            self.assertEqual(streamed.outputs[0].token_ids, want[mine[0]][0].outputs[0].token_ids)


if __name__ == "__main__":
    unittest.main()
