"""Errors: refusals arrive as Python exceptions carrying the C library's message, before
anything runs; an engine failure fails only its request; bad options and a missing
library are named."""
import os
import subprocess
import sys
import tempfile
import unittest

import pltest
import pagellm
from pagellm import LLM, SamplingParams

llm = None


def setUpModule():
    global llm
    llm = LLM(model=pltest.tiny_model())


def tearDownModule():
    llm.close()


class TestRequestErrors(unittest.TestCase):
    def test_bad_sampling_params_name_the_field(self):
        for params, field in ((SamplingParams(temperature=-1.0), "temperature"),
                              (SamplingParams(top_p=0.0), "top_p"),
                              (SamplingParams(logprobs=21), "logprobs"),
                              (SamplingParams(n=0), "n"),
                              (SamplingParams(max_tokens=0), "max_tokens"),
                              (SamplingParams(stop_token_ids=[5000]), "stop_token_ids"),
                              (SamplingParams(allowed_token_ids=[]), "allowed_token_ids")):
            with self.assertRaises(pagellm.InvalidArgumentError) as cm:
                llm.generate(["Hello"], params)
            self.assertIsInstance(cm.exception, ValueError)
            self.assertIn(field, str(cm.exception))
            self.assertEqual(cm.exception.status_name, "invalid argument")

    def test_batch_is_all_or_nothing(self):
        before = llm.get_stats()
        with self.assertRaisesRegex(ValueError, "prompt 1: .*temperature"):
            llm.generate(["Hello", "World"], [SamplingParams(), SamplingParams(temperature=9)])
        after = llm.get_stats()
        self.assertEqual(after["num_steps"], before["num_steps"])
        self.assertEqual(after["generation_tokens"], before["generation_tokens"])
        with self.assertRaisesRegex(ValueError, "prompt 2: .*token"):
            llm.generate([[1, 2], [3, 4], [5, 99999]], SamplingParams(max_tokens=2))
        # still usable
        self.assertTrue(llm.generate(["Hello"], SamplingParams(max_tokens=2))[0].finished)

    def test_prompt_errors(self):
        with self.assertRaises(pagellm.PagellmError) as cm:
            llm.generate([[5] * 2100], SamplingParams(max_tokens=2))
        self.assertIn("2048", str(cm.exception))
        with self.assertRaises(TypeError):
            llm.generate([3.5])
        with self.assertRaises(TypeError):
            llm.generate(["ok"], sampling_params={"temperature": 0})
        with self.assertRaises(NotImplementedError):
            llm.generate({"prompt": "x", "multi_modal_data": {}})
        with self.assertRaises(NotImplementedError):
            SamplingParams(bad_words=["x"])

    def test_stream_errors(self):
        with self.assertRaisesRegex(ValueError, "temperature"):
            next(llm.stream("Hello", SamplingParams(temperature=-2)))


class TestEngineFailure(unittest.TestCase):
    def test_failed_step_raises_and_others_go_on(self):
        fd, path = tempfile.mkstemp()
        os.write(fd, b"777")
        os.close(fd)
        os.environ["PAGELLM_TEST_FAIL_STEP_FILE"] = path
        try:
            failing = LLM(model=pltest.tiny_model())
        finally:
            del os.environ["PAGELLM_TEST_FAIL_STEP_FILE"]
        try:
            with self.assertRaises(pagellm.PagellmError) as cm:
                failing.generate([[956, 777, 5]], SamplingParams(max_tokens=3))
            self.assertIn("backend failure", str(cm.exception))
            with self.assertRaisesRegex(pagellm.PagellmError, "backend failure"):
                for _ in failing.stream([956, 777, 6], SamplingParams(max_tokens=3)):
                    pass
            ok = failing.generate([[956, 5, 6]], SamplingParams(max_tokens=3, temperature=0,
                                                                logit_bias={777: -100}))
            self.assertEqual(len(ok[0].outputs[0].token_ids), 3)
        finally:
            failing.close()
            os.unlink(path)


class TestOptions(unittest.TestCase):
    def test_unsupported_options_are_refused(self):
        model = pltest.tiny_model()
        for kwargs, word in (({"pipeline_parallel_size": 2}, "pipeline_parallel_size"),
                             ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
                             ({"dtype": "int8"}, "dtype"),
                             ({"enable_lora": True}, "LoRA")):
            with self.assertRaisesRegex(ValueError, word):
                LLM(model=model, **kwargs)
        with self.assertRaisesRegex(TypeError, "no_such_option"):
            LLM(model=model, no_such_option=1)

    def test_quantization_options_reach_the_library(self):
        model = pltest.tiny_model()
        # awq named for an unquantized checkpoint: the library's refusal, naming it
        with self.assertRaises(pagellm.PagellmError) as cm:
            LLM(model=model, device="cpu", quantization="awq")
        self.assertIn("awq", str(cm.exception))
        with self.assertRaises(pagellm.PagellmError) as cm:
            LLM(model=model, device="cpu", kv_cache_dtype="int3")
        self.assertIn("kv_cache_dtype", str(cm.exception))
        # an FP8 KV cache on the CPU backend (its reference implementation) generates
        fp8 = LLM(model=model, device="cpu", kv_cache_dtype="fp8")
        out = fp8.generate([[1, 2, 3]], SamplingParams(temperature=0, max_tokens=4))
        self.assertEqual(len(out[0].outputs[0].token_ids), 4)

    def test_tensor_parallel_gives_tp1_tokens(self):
        # tensor_parallel_size reaches the C engine: on the CPU backend 2 ranks of the
        # tiny model must give the greedy tokens of one
        model = pltest.tiny_model()
        sp = SamplingParams(temperature=0, max_tokens=8)
        prompts = [[1, 2, 3, 4], [5, 6, 7]]
        one = LLM(model=model, device="cpu")
        want = [o.outputs[0].token_ids for o in one.generate(prompts, sp, use_tqdm=False)]
        del one
        two = LLM(model=model, device="cpu", tensor_parallel_size=2)
        got = [o.outputs[0].token_ids for o in two.generate(prompts, sp, use_tqdm=False)]
        self.assertEqual(got, want)
        with self.assertRaises(pagellm.PagellmError) as cm:  # 8 heads do not split 3 ways
            LLM(model=model, device="cpu", tensor_parallel_size=3)
        self.assertIn("3", str(cm.exception))

    def test_model_errors_carry_the_c_message(self):
        with self.assertRaisesRegex(ValueError, "no such directory"):
            LLM(model="/no/such/model/dir")
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(pagellm.PagellmError) as cm:
                LLM(model=d)
            self.assertIn("config.json", str(cm.exception))
        with tempfile.TemporaryDirectory() as d:
            os.environ["HF_HUB_CACHE"], os.environ["HF_HUB_OFFLINE"] = d, "1"
            try:
                with self.assertRaisesRegex(FileNotFoundError, "not in the Hugging Face cache"):
                    LLM(model="someorg/somemodel")
            finally:
                del os.environ["HF_HUB_CACHE"], os.environ["HF_HUB_OFFLINE"]

    def test_options_reach_the_engine(self):
        small = LLM(model=pltest.tiny_model(), max_model_len=64, max_num_seqs=2, seed=5,
                    dtype="float32", enable_prefix_caching=False, device="cpu",
                    trust_remote_code=True, gpu_memory_utilization=0.5)
        try:
            with self.assertRaisesRegex(pagellm.PagellmError, "64"):
                small.generate([[5] * 100], SamplingParams(max_tokens=2))
            with self.assertRaisesRegex(pagellm.PagellmError, r"max_model_len \(?64"):
                small.generate(["Hello"], SamplingParams(max_tokens=80))
            out = small.generate(["Hello"] * 4, SamplingParams(max_tokens=None, ignore_eos=True))
            for o in out:
                self.assertEqual(len(o.prompt_token_ids) + len(o.outputs[0].token_ids), 64)
                self.assertEqual(o.outputs[0].finish_reason, "length")
        finally:
            small.close()

    def test_reference_paths_agree(self):
        # the reference paths (scalar kernels, host sampling) give the same greedy tokens
        ref = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8))[0]
        other = LLM(model=pltest.tiny_model(), enforce_eager=True, host_sampling=True,
                    cpu_scalar_kernels=True)
        try:
            out = other.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8))[0]
        finally:
            other.close()
        self.assertEqual(out.outputs[0].token_ids, ref.outputs[0].token_ids)

    def test_library_not_found(self):
        env = dict(os.environ, PAGELLM_LIBRARY="/no/such/libpagellm.so",
                   PYTHONPATH=pltest.PYTHON_DIR)
        code = ("import pagellm\n"
                "try:\n    pagellm.LLM(model='x')\n"
                "except pagellm.LibraryNotFoundError as e:\n    print('ERR', e)\n")
        r = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        self.assertIn("ERR PAGELLM_LIBRARY=/no/such/libpagellm.so cannot be loaded", r.stdout)


if __name__ == "__main__":
    unittest.main()
