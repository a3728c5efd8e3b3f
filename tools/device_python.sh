#!/usr/bin/env bash
# device_python.sh -- the Python package (python/pagellm) on the GPU machine (device tool),
# over the CUDA-enabled libpagellm.so installed into .carry by `tools/device_library.sh
# prepare` (run here after a build with nvcc): .carry/lib-prefix/lib/libpagellm.so.0,
# .carry/libbin/{pagellm,pl-mkmodel}, the shared libraries the GPU image lacks in .carry/libs.
#   1. greedy: Python's LLM.generate on --device cuda against `pagellm generate --device cuda
#      --json` (token for token) on the tiny model, 4 prompts, 32 tokens;
#   2. the same Python run on cpu (CUDA and CPU greedy tokens compared, reported only);
#   3. AsyncLLMEngine on cuda: 16 concurrent streams, each ending equal to its
#      LLM.generate output.
# Logs and results.json under $OUT; a summary last. Under a minute on one H100.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
C=$ROOT/.carry
B=$C/libbin
OUT=${OUT:-/tmp/pl_python}
mkdir -p "$OUT"
# the installed library, found by the dynamic loader (no PAGELLM_LIBRARY)
export LD_LIBRARY_PATH=$C/lib-prefix/lib:$C/libs:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
unset PAGELLM_LIBRARY
export PAGELLM=$B/pagellm
export PYTHONPATH=$ROOT/python PAGELLM_LOG_LEVEL=warn
M=/tmp/pl_python_model
"$B/pl-mkmodel" --preset default --out "$M" >/dev/null || { echo "mkmodel failed"; exit 1; }
"$B/pagellm" generate --model "$M" --device cuda --temperature 0 --max-tokens 32 --ignore-eos \
  --json --no-progress --prompt "The best way to learn about AI is" \
  --prompt "San Francisco is a city known for" --prompt "What is the capital of France?" \
  --prompt "Hello" >"$OUT/cli_cuda.jsonl" 2>"$OUT/cli_cuda.err" || echo "pagellm generate failed"
timeout 300 python3 - "$M" "$OUT" <<'PY' 2>"$OUT/python.err"
import asyncio, json, sys
from pagellm import LLM, AsyncLLMEngine, SamplingParams, library_path
from pagellm.engine.arg_utils import AsyncEngineArgs
model, out = sys.argv[1], sys.argv[2]
prompts = ["The best way to learn about AI is", "San Francisco is a city known for",
           "What is the capital of France?", "Hello"]
greedy = SamplingParams(temperature=0, max_tokens=32, ignore_eos=True)
res = {"library": library_path(),
       "library_is_installed_copy": "/.carry/lib-prefix/" in library_path()}
cli = [json.loads(l)["outputs"][0]["token_ids"] for l in open(out + "/cli_cuda.jsonl")]
ids = {}
for dev in ("cuda", "cpu"):
    llm = LLM(model=model, device=dev)
    ids[dev] = [o.outputs[0].token_ids for o in llm.generate(prompts, greedy, use_tqdm=False)]
    llm.close()
res["python_cuda_equals_cli_cuda"] = ids["cuda"] == cli
res["cuda_cpu_prompts_identical"] = sum(a == b for a, b in zip(ids["cuda"], ids["cpu"]))
engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(model=model, device="cuda"))
async def one(i):
    last = None
    async for o in engine.generate(prompts[i % 4], greedy, "r%d" % i):
        last = o
    return last.outputs[0].token_ids
async def main():
    return await asyncio.gather(*(one(i) for i in range(16)))
streams = asyncio.run(main())
res["async_cuda_streams_equal"] = all(s == ids["cuda"][i % 4] for i, s in enumerate(streams))
engine.shutdown()
json.dump(res, open(out + "/results.json", "w"), indent=1)
print(json.dumps(res))
PY
echo "python rc=$?"
tail -3 "$OUT/python.err"
