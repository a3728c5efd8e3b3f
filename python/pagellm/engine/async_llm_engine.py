"""async_llm_engine -- vLLM's AsyncLLMEngine: streaming generation for asyncio code.

Owns: the asyncio face of an engine: generate() as an async generator of
RequestOutputs (text cumulative, as vLLM's), abort(), and the caller's request ids
in flight. Each request's stream is read by a thread of its own, which waits on the
library without the GIL and hands outputs to the event loop through
loop.call_soon_threadsafe, so the loop never blocks on a step.
"""
import asyncio
import threading
import weakref
from typing import Any, AsyncIterator, Dict, Optional

from .._engine import _Request
from ..inputs import parse_prompts
from ..outputs import RequestOutput
from ..sampling_params import SamplingParams
from ..tokenizer import Tokenizer
from .arg_utils import EngineArgs


class _Done:
    """What abort() returns: the abort is already queued when abort() returns, so
    awaiting it (vLLM's `await engine.abort(id)`) or not are both fine."""

    def __await__(self):
        return iter(())


class _Entry:
    """A request id in flight: its stream once submitted, and whether abort() came
    before that."""
    __slots__ = ("stream", "aborted")

    def __init__(self):
        self.stream = None
        self.aborted = False


def _read(stream, loop, q):
    """A request's reader thread: waits for each output (without the GIL) and hands it
    to the event loop; frees the stream after the finished one."""
    try:
        while True:
            out, err = stream.read()
            if out is not None or err is not None:
                try:
                    loop.call_soon_threadsafe(q.put_nowait, (out, err))
                except RuntimeError:
                    pass  # the loop is gone (its consumer left and the request was aborted)
            if err is not None or stream.req.finished:
                return
    finally:
        stream.free()


class AsyncLLMEngine:
    """vLLM's AsyncLLMEngine. Create it with from_engine_args(AsyncEngineArgs(model=...))."""

    def __init__(self, engine_args: EngineArgs):
        self.engine_args = engine_args
        self._core = engine_args._create_core()
        self._finalizer = weakref.finalize(self, self._core.close)
        self._ids: Dict[str, _Entry] = {}  # the caller's request ids in flight
        self._ids_lock = threading.Lock()
        self._tokenizer = Tokenizer(self._core, engine_args.tokenizer or engine_args.model)

    @classmethod
    def from_engine_args(cls, engine_args: EngineArgs, start_engine_loop: bool = True,
                         usage_context: Any = None, **kwargs: Any) -> "AsyncLLMEngine":
        return cls(engine_args)

    @property
    def is_running(self) -> bool:
        return self._core.h is not None

    @property
    def errored(self) -> bool:
        return False

    async def generate(self, prompt: Any, sampling_params: Optional[SamplingParams],
                       request_id: str, lora_request: Any = None, trace_headers: Any = None,
                       priority: int = 0, **kwargs: Any) -> AsyncIterator[RequestOutput]:
        """Yields the request's RequestOutputs as tokens arrive: text and token_ids
        cumulative (unless sampling_params.output_kind says otherwise), the last one
        with finished=True. Leaving the loop early aborts the request. A request id
        must be unique among the requests in flight."""
        if lora_request is not None:
            raise NotImplementedError("LoRA adapters are not supported by pagellm")
        parsed = parse_prompts(prompt)
        if len(parsed) != 1:
            raise ValueError("generate() takes one prompt, got %d" % len(parsed))
        (text, ids), = parsed
        if sampling_params is not None and sampling_params.truncate_prompt_tokens is not None:
            if ids is None:
                ids = await asyncio.wrap_future(self._core.submit(
                    lambda lib, h: self._core._encode(lib, h, text, True)))
            ids = ids[-sampling_params.truncate_prompt_tokens:]
        request_id = str(request_id)
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        entry = _Entry()
        with self._ids_lock:
            if request_id in self._ids:
                raise ValueError("Request id %s already running" % request_id)
            self._ids[request_id] = entry
        req = _Request(request_id, text, ids, sampling_params, True)
        finished = False
        try:
            # submitting may wait for the engine thread's current step: not on the loop
            stream, = await loop.run_in_executor(
                None, self._core.submit, [(req, text, ids, sampling_params)])
            with self._ids_lock:
                entry.stream = stream
                if entry.aborted:
                    stream.abort()
            threading.Thread(target=_read, args=(stream, loop, q), daemon=True,
                             name="pagellm-reader").start()
            while True:
                out, err = await q.get()
                if out is not None:
                    finished = out.finished
                    yield out
                if err is not None:
                    finished = True
                    raise err
                if finished:
                    return
        finally:
            with self._ids_lock:
                if self._ids.get(request_id) is entry:
                    del self._ids[request_id]
                stream = entry.stream
            if not finished and stream is not None:
                stream.abort()  # the reader gets the finished delta and frees the stream

    def abort(self, request_id: str) -> _Done:
        """Aborts a request in flight (no-op when unknown or finished): its generator
        yields a last output with finish_reason "abort". Awaitable, as vLLM's."""
        with self._ids_lock:
            entry = self._ids.get(str(request_id))
            if entry is not None:
                entry.aborted = True
                if entry.stream is not None:
                    entry.stream.abort()
        return _Done()

    async def get_tokenizer(self, lora_request: Any = None) -> Tokenizer:
        return self._tokenizer

    async def get_default_sampling_params(self) -> SamplingParams:
        return await asyncio.get_running_loop().run_in_executor(
            None, self._core.default_sampling_params)

    async def check_health(self) -> None:
        if self._core.h is None:
            raise RuntimeError("the pagellm engine is closed")

    def shutdown_background_loop(self) -> None:
        self.shutdown()

    def shutdown(self) -> None:
        """Aborts what is in flight, stops the engine thread and frees the model."""
        self._finalizer()
