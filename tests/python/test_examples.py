"""The examples run for real on the tiny model: the seed's RunPod handlers and main.py
(examples/python, the seed's code with only its imports changed: they name
mistralai/Mistral-7B-Instruct-v0.1, which a fake Hugging Face cache maps to the tiny
model) under a stand-in runpod module (stubs/runpod), and offline.py. Their outputs
are checked against `pagellm generate --json`."""
import json
import os
import subprocess
import sys
import unittest

import pltest

SEED_MODEL = "mistralai/Mistral-7B-Instruct-v0.1"


def run_example(name, jobs=None, args=()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([pltest.STUBS, pltest.PYTHON_DIR])
    env["HF_HUB_CACHE"] = pltest.fake_hub(SEED_MODEL, pltest.tiny_model())
    env["HF_HUB_OFFLINE"] = "1"
    if jobs is not None:
        path = os.path.join(pltest.tmpdir(), name + ".jobs.json")
        with open(path, "w") as f:
            json.dump(jobs, f)
        env["RUNPOD_STUB_JOBS"] = path
    r = subprocess.run([sys.executable, os.path.join(pltest.EXAMPLES, name)] + list(args),
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       cwd=pltest.tmpdir())
    if r.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s\n%s" % (name, r.returncode, r.stdout,
                                                          r.stderr))
    results = [json.loads(line[len("RESULT "):]) for line in r.stdout.splitlines()
               if line.startswith("RESULT ")]
    return r.stdout, results


class TestRunpodHandlers(unittest.TestCase):
    def test_batch_handler(self):
        jobs = [{"id": "j1", "input": {"prompts": ["Hi"]}},  # the handler's defaults
                {"id": "j2", "input": {"prompts": ["Hello", "San Francisco is"],
                                       "temperature": 0, "max_tokens": 8}},
                {"id": "j3", "input": {"prompt": "no prompts key"}}]
        _, results = run_example("runpod_handler.py", jobs)
        self.assertEqual(len(results), 3)
        model = pltest.tiny_model()
        ref1 = pltest.cli_generate(model, ["Hi"], "--temperature", 0.7, "--top-p", 0.95,
                                   "--max-tokens", 256)
        self.assertEqual(results[0], {"results": [
            {"prompt": "Hi", "text": ref1[0]["outputs"][0]["text"]}]})
        ref2 = pltest.cli_generate(model, ["Hello", "San Francisco is"], "--temperature", 0,
                                   "--max-tokens", 8)
        self.assertEqual(results[1], {"results": [
            {"prompt": r["prompt"], "text": r["outputs"][0]["text"]} for r in ref2]})
        self.assertEqual(results[2], {"error": "Missing 'prompts' in input"})

    def test_streaming_handler(self):
        jobs = [{"id": "s1", "input": {"prompt": "Hello", "temperature": 0, "max_tokens": 12}},
                {"id": "s2", "input": {}}]
        _, results = run_example("runpod_handler_streaming.py", jobs)
        self.assertEqual(len(results), 2)
        chunks = results[0]
        self.assertGreater(len(chunks), 1)
        texts = [c["text"] for c in chunks]
        for a, b in zip(texts, texts[1:]):
            self.assertTrue(b.startswith(a), (a, b))  # cumulative, as vLLM's
        ref = pltest.cli_generate(pltest.tiny_model(), ["Hello"], "--temperature", 0,
                                  "--max-tokens", 12)
        self.assertEqual(texts[-1], ref[0]["outputs"][0]["text"])
        self.assertEqual(results[1], [{"error": "Missing 'prompt' in input"}])


class TestScripts(unittest.TestCase):
    def test_seed_main(self):
        out, _ = run_example("main.py")
        prompts = ["The best way to learn about AI is", "San Francisco is a city known for",
                   "What is the capital of France?",
                   "Write a short story about a robot who discovers music."]
        ref = pltest.cli_generate(pltest.tiny_model(), prompts, "--temperature", 0.7,
                                  "--top-p", 0.95, "--max-tokens", 100)
        expected = "".join("---\nPrompt: %r\nGenerated: %r\n" % (p, r["outputs"][0]["text"])
                           for p, r in zip(prompts, ref))
        self.assertIn("Model loaded successfully.\n", out)
        self.assertTrue(out.endswith("Generation complete.\n" + expected), out)

    def test_offline_example(self):
        out, _ = run_example("offline.py", args=[pltest.tiny_model()])
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("'The best way to learn about AI is' -> "), lines)
        self.assertIn("cumulative logprob:", out)


if __name__ == "__main__":
    unittest.main()
