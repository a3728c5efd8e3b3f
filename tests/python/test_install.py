"""Installation: `pip install ./python` into a fresh virtual environment, offline
(--no-index --no-build-isolation: Debian's python3-pip, python3-setuptools and
python3-wheel build it), with the library installed by `cmake --install` into a
prefix; the installed package finds the library through pkg-config, or through the
dynamic loader's LD_LIBRARY_PATH, and generates what `pagellm generate` does."""
import glob
import os
import shutil
import subprocess
import sys
import unittest

import pltest

CHECK = r"""
import os, sys, json
import pagellm
from pagellm import LLM, SamplingParams
assert os.path.realpath(pagellm.__file__).startswith(os.path.realpath(sys.prefix)), pagellm.__file__
llm = LLM(model=sys.argv[1])
out = llm.generate(["Hello"], SamplingParams(temperature=0, max_tokens=8))[0]
print(json.dumps({"lib": pagellm.library_path(), "ids": out.outputs[0].token_ids,
                  "version": pagellm.__version__}))
"""


def builder():
    """(interpreter, extra environment) that can build and install the package offline:
    this one, else Debian's /usr/bin/python3. Where something imported distutils before
    setuptools' shim could take over (a site .pth file), setuptools refuses to import;
    SETUPTOOLS_USE_DISTUTILS=stdlib (Python < 3.12 has distutils) lets it."""
    for exe in (sys.executable, "/usr/bin/python3"):
        if not exe or not os.path.exists(exe):
            continue
        for extra in ({}, {"SETUPTOOLS_USE_DISTUTILS": "stdlib"}):
            if subprocess.run([exe, "-c", "import pip, setuptools, wheel, venv"],
                              env=dict(os.environ, **extra), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0:
                return exe, extra
    return None, None


class TestInstall(unittest.TestCase):
    def test_pip_install_offline_into_a_venv(self):
        exe, extra_env = builder()
        if exe is None:
            self.skipTest("no python3 with pip, setuptools and wheel (Debian: python3-pip "
                          "python3-setuptools python3-wheel python3-venv; scripts/bootstrap.sh)")
        work = os.path.join(pltest.tmpdir(), "install")
        src = os.path.join(work, "src")
        shutil.copytree(pltest.PYTHON_DIR, src, ignore=shutil.ignore_patterns(
            "build", "*.egg-info", "__pycache__"))
        venv = os.path.join(work, "venv")
        subprocess.run([exe, "-m", "venv", "--system-site-packages", "--without-pip", venv],
                       check=True)
        vpy = os.path.join(venv, "bin", "python")
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PAGELLM_LIBRARY", "PYTHONHOME")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env.update(extra_env)
        r = subprocess.run([vpy, "-m", "pip", "install", "--no-index", "--no-build-isolation",
                            "--no-deps", src], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=work)
        self.assertEqual(r.returncode, 0, r.stdout)

        prefix = os.path.join(work, "prefix")
        subprocess.run(["cmake", "--install", pltest.BINARY, "--prefix", prefix], check=True,
                       stdout=subprocess.DEVNULL)
        pcs = glob.glob(os.path.join(prefix, "**", "pagellm.pc"), recursive=True)
        self.assertEqual(len(pcs), 1, pcs)
        libdir = os.path.dirname(os.path.dirname(pcs[0]))
        ref = pltest.cli_generate(pltest.tiny_model(), ["Hello"], "--temperature", 0,
                                  "--max-tokens", 8)[0]["outputs"][0]["token_ids"]
        ways = [{"LD_LIBRARY_PATH": libdir}]
        if shutil.which("pkg-config"):
            ways.append({"PKG_CONFIG_PATH": os.path.dirname(pcs[0])})
        for extra in ways:
            r = subprocess.run([vpy, "-c", CHECK, pltest.tiny_model()], env=dict(env, **extra),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=work)
            self.assertEqual(r.returncode, 0, r.stderr)
            import json
            got = json.loads(r.stdout.strip().splitlines()[-1])
            self.assertEqual(got["ids"], ref)
            self.assertTrue(os.path.realpath(got["lib"]).startswith(os.path.realpath(libdir)),
                            (extra, got["lib"]))


if __name__ == "__main__":
    unittest.main()
