"""The ctypes mirrors (pagellm._lib) against the C compiler's layout of include/pagellm.h,
and SamplingParams' Python defaults against the library's (pl_sampling_params_default)."""
import ctypes
import os
import subprocess
import unittest

import pltest  # noqa: F401 (sys.path)
from pagellm import SamplingParams, _lib


class TestLayout(unittest.TestCase):
    def test_struct_layouts_match_c(self):
        exe = os.environ.get("PL_PY_ABI_LAYOUT") or os.path.join(
            pltest.BINARY, "tests", "python", "py_abi_layout")
        text = subprocess.run([exe], check=True, stdout=subprocess.PIPE, text=True).stdout
        sizes, offsets = {}, {}
        for line in text.splitlines():
            kind, name, value = line.split()
            (sizes if kind == "struct" else offsets)[name] = int(value)
        self.assertEqual(set(sizes), set(_lib.STRUCTS))
        for cname, cls in _lib.STRUCTS.items():
            self.assertEqual(ctypes.sizeof(cls), sizes[cname], cname)
            fields = {k.split(".", 1)[1]: v for k, v in offsets.items()
                      if k.split(".", 1)[0] == cname}
            self.assertEqual(set(fields), {f[0] for f in cls._fields_}, cname)
            for fname, off in fields.items():
                self.assertEqual(getattr(cls, fname).offset, off, "%s.%s" % (cname, fname))

    def test_python_defaults_are_the_libraries(self):
        c = _lib.CSamplingParams()
        _lib.load().pl_sampling_params_default(ctypes.byref(c))
        self.assertEqual(SamplingParams._from_c(c), SamplingParams())
        # and every C field has a Python name
        names = {f[0] for f in _lib.CSamplingParams._fields_} - {"owned"}
        py = set(vars(SamplingParams()))
        for f in names:
            base = {"has_seed": "seed", "n_stop": "stop", "n_stop_token_ids": "stop_token_ids",
                    "n_logit_bias": "logit_bias",
                    "n_allowed_token_ids": "allowed_token_ids",
                    "constraint_kind": "structured_outputs",
                    "constraint": "structured_outputs",
                    "whitespace_pattern": "structured_outputs"}.get(f, f)
            self.assertIn(base, py, f)

    def test_round_trip_through_c(self):
        p = SamplingParams(n=3, presence_penalty=0.5, frequency_penalty=-0.5,
                           repetition_penalty=1.2, temperature=0.7, top_p=0.9, top_k=40,
                           min_p=0.05, seed=2 ** 63 + 5, stop=["a", "bc"],
                           stop_token_ids=[7, 8], include_stop_str_in_output=True,
                           ignore_eos=True, max_tokens=None, min_tokens=2, logprobs=5,
                           prompt_logprobs=0, skip_special_tokens=False,
                           spaces_between_special_tokens=False, logit_bias={3: 1.5},
                           allowed_token_ids=[1, 2, 3], use_beam_search=True, beam_width=4,
                           length_penalty=0.5, early_stopping=True)
        c, keep = p._to_c()
        q = SamplingParams._from_c(c)
        for k, v in vars(p).items():
            got = getattr(q, k)
            if isinstance(v, float):
                self.assertAlmostEqual(got, v, places=6, msg=k)
            elif k == "logit_bias":
                self.assertEqual(list(got), list(v))
            else:
                self.assertEqual(got, v, k)


if __name__ == "__main__":
    unittest.main()
