"""A stand-in for the runpod package (tests only): runpod.serverless.start runs the
handler on the jobs of the JSON file named by $RUNPOD_STUB_JOBS, one after another,
and prints each job's result as one JSON line on stdout, prefixed "RESULT ".
Handlers may be functions, generators, coroutines or async generators (the last two
are run with asyncio.run, one event loop per job); a generator's result is the list
of what it yielded."""
from . import serverless

__all__ = ["serverless"]
