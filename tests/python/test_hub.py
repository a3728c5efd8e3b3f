"""LLM(model="org/name") with a Hub id that is not in the cache: the package downloads it
with `pagellm download` (the C Hub client) from a fake Hugging Face Hub on loopback
(tests/node/fake_hub.mjs), then loads it from huggingface_hub's cache layout; offline,
the cached copy is used without the Hub."""
import json
import os
import shutil
import subprocess
import unittest

import pltest
from pagellm import LLM, SamplingParams


class TestHubDownload(unittest.TestCase):
    def setUp(self):
        if not shutil.which("node"):
            self.skipTest("node is needed for the fake Hub")
        self.work = os.path.join(pltest.tmpdir(), "hub-download")
        os.makedirs(self.work)
        cfg = os.path.join(self.work, "hub.json")
        with open(cfg, "w") as f:
            json.dump({"tokens": [], "repos": {"tiny/llama": {"revisions": {
                "main": {"dir": pltest.tiny_model()}}}}}, f)
        self.hub = subprocess.Popen(
            ["node", os.path.join(pltest.SOURCE, "tests", "node", "fake_hub.mjs"), cfg],
            stdout=subprocess.PIPE, text=True)
        line = self.hub.stdout.readline().split()
        self.assertEqual(line[:1], ["READY"], line)
        self.port = line[1]
        self.saved = {k: os.environ.get(k) for k in
                      ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "HF_TOKEN", "PAGELLM")}

    def tearDown(self):
        self.hub.terminate()
        self.hub.wait()
        self.hub.stdout.close()
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def test_download_then_offline(self):
        cache = os.path.join(self.work, "cache")
        os.environ.update(HF_ENDPOINT="http://127.0.0.1:%s" % self.port, HF_HUB_CACHE=cache,
                          PAGELLM=pltest.PAGELLM)
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("HF_TOKEN", None)
        params = SamplingParams(temperature=0, max_tokens=6)
        ref = pltest.cli_generate(pltest.tiny_model(), ["Hello"], "--temperature", 0,
                                  "--max-tokens", 6)[0]["outputs"][0]["token_ids"]
        with LLM(model="tiny/llama") as llm:
            self.assertEqual(llm.generate(["Hello"], params)[0].outputs[0].token_ids, ref)
        self.assertTrue(os.path.isdir(os.path.join(cache, "models--tiny--llama", "snapshots")))
        # offline, with the Hub gone: the cached snapshot
        self.hub.terminate()
        self.hub.wait()
        os.environ["HF_HUB_OFFLINE"] = "1"
        with LLM(model="tiny/llama") as llm:
            self.assertEqual(llm.generate(["Hello"], params)[0].outputs[0].token_ids, ref)
        with self.assertRaisesRegex(FileNotFoundError, "models--tiny--other"):
            LLM(model="tiny/other")


if __name__ == "__main__":
    unittest.main()
