"""runpod.serverless.start for tests: see runpod/__init__.py."""
import asyncio
import inspect
import json
import os
import sys


async def _collect(agen):
    return [item async for item in agen]


def start(config):
    handler = config["handler"]
    with open(os.environ["RUNPOD_STUB_JOBS"]) as f:
        jobs = json.load(f)
    for job in jobs:
        if inspect.isasyncgenfunction(handler):
            result = asyncio.run(_collect(handler(job)))
        elif inspect.iscoroutinefunction(handler):
            result = asyncio.run(handler(job))
        elif inspect.isgeneratorfunction(handler):
            result = list(handler(job))
        else:
            result = handler(job)
        sys.stdout.write("RESULT " + json.dumps(result) + "\n")
        sys.stdout.flush()
