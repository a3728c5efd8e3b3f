"""_engine -- a pl_llm handle and the streams of its requests.

Owns: the C handle's lifetime, the submission of requests through the library's
streaming interface (pl_llm_submit), the reading of each request's deltas
(pl_llm_stream_next) and their merging into vLLM's RequestOutputs.

Threading: the library runs its own engine thread, started on the first submit,
which steps the engine without the GIL; every call used here is thread-safe,
and error messages are per thread (pl_llm_errmsg right after the failed call,
in the same thread). Each stream is read by one thread at a time: the caller's
own (LLM.generate, LLM.stream) or, for asyncio, a reader thread per request that
hands outputs to the event loop. So any number of Python threads and tasks may
share one engine. Another thread may ask for a stream's abort while its reader
waits (pl_llm_stream_abort posts to the engine; the reader then gets the
finished delta).

Request life: submit -> _Stream (a C stream plus a _Request accumulating its
deltas) -> read() until the delta with finished set -> free. Freeing an
unfinished stream aborts its request. close() asks every live stream's abort,
waits for its reader to let go, frees it, then frees the handle.
"""
import ctypes
import itertools
import json
import threading
import time

from . import _lib
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from .sampling_params import RequestOutputKind


def _check(lib, h, status):
    if status != _lib.PL_STATUS_OK:
        raise _lib.make_error(status, lib.pl_llm_errmsg(h).decode("utf-8", "replace"))


class _Sample:
    __slots__ = ("index", "text", "token_ids", "logprobs", "cum", "finish", "stop",
                 "text_sent", "tok_sent")

    def __init__(self, index):
        self.index = index
        self.text = bytearray()
        self.token_ids = []
        self.logprobs = None
        self.cum = None
        self.finish = None
        self.stop = None
        self.text_sent = 0  # text characters already delivered (DELTA outputs)
        self.tok_sent = 0


class _Request:
    """A request in flight: what its deltas added up to so far, and what its consumer
    sees: every output when streaming (per output_kind), else only the final one."""

    def __init__(self, request_id, prompt, prompt_token_ids, params, stream):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = None
        self.num_cached_tokens = None
        self.n = params.n if params is not None else 1
        self.detokenize = params.detokenize if params is not None else True
        self.kind = params.output_kind if (params is not None and stream) else (
            RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY)
        self.samples = {}
        self.finished = False
        now = time.time()
        self.metrics = RequestMetrics(arrival_time=now, last_token_time=now)

    def output(self):
        """The RequestOutput for the consumer now (cumulative or delta per output_kind)."""
        outs = []
        delta = self.kind == RequestOutputKind.DELTA
        for i in sorted(self.samples):
            s = self.samples[i]
            text = s.text.decode("utf-8", "replace") if self.detokenize else ""
            if delta:
                t0, k0 = s.text_sent, s.tok_sent
                s.text_sent, s.tok_sent = len(text), len(s.token_ids)
                if t0 == len(text) and k0 == len(s.token_ids) and s.finish is None:
                    continue
                text, toks = text[t0:], s.token_ids[k0:]
                lps = s.logprobs[k0:] if s.logprobs is not None else None
            else:
                toks = list(s.token_ids)
                lps = list(s.logprobs) if s.logprobs is not None else None
            outs.append(CompletionOutput(index=s.index, text=text, token_ids=toks,
                                         cumulative_logprob=s.cum, logprobs=lps,
                                         finish_reason=s.finish, stop_reason=s.stop))
        return RequestOutput(
            request_id=self.request_id, prompt=self.prompt,
            prompt_token_ids=list(self.prompt_token_ids or []),
            prompt_logprobs=self.prompt_logprobs, outputs=outs, finished=self.finished,
            metrics=RequestMetrics(**self.metrics.__dict__),
            num_cached_tokens=self.num_cached_tokens, error=None)


class _Stream:
    """A submitted request: its C stream, read by one thread at a time (lock), and
    what its deltas added up to (req)."""

    def __init__(self, core, ptr, req):
        self.core = core
        self.ptr = ptr
        self.req = req
        self.lock = threading.Lock()
        self.freed = False

    def read(self, timeout=-1.0):
        """Waits for the next delta and merges it: (output or None, error or None).
        output is what the consumer should see now (None while a FINAL_ONLY request
        runs, or when the timeout passed); error comes with the final output when the
        engine failed the request, or alone when the engine was closed."""
        lib = self.core.lib
        with self.lock:
            if self.freed:
                return None, RuntimeError("the pagellm engine is closed")
            d = ctypes.POINTER(_lib.CRequestOutput)()
            lib.pl_llm_stream_next(self.ptr, timeout, ctypes.byref(d))
            if not d:
                return None, None
            try:
                err = self.core._merge(self.req, d.contents)
            finally:
                lib.pl_request_output_free(d)
        req = self.req
        if req.kind == RequestOutputKind.FINAL_ONLY and not req.finished:
            return None, None
        return req.output(), err

    def abort(self):
        """Asks for the request's abort (any thread): it still ends with a finished
        output, finish_reason "abort"."""
        with self.core._streams_lock:
            if not self.freed:
                self.core.lib.pl_llm_stream_abort(self.ptr)

    def free(self):
        """Frees the stream, aborting the request if unfinished (waits for a reader
        inside read() to let go). Idempotent."""
        with self.lock:
            with self.core._streams_lock:
                if self.freed:
                    return
                self.freed = True
                self.core._streams.discard(self)
            self.core.lib.pl_llm_stream_free(self.ptr)


class EngineCore:
    """The handle. Create with the C params; close() frees it."""

    def __init__(self, cparams, keep):
        self.lib = _lib.load()
        self._keep = keep
        self._streams = set()
        self._streams_lock = threading.Lock()
        self._closed = False
        self._ids = itertools.count()
        self._token_text = {}  # decoded_token cache for logprobs
        h = ctypes.c_void_p()
        st = self.lib.pl_llm_new(ctypes.byref(cparams), ctypes.byref(h))
        if st != _lib.PL_STATUS_OK:
            msg = (self.lib.pl_llm_errmsg(h).decode("utf-8", "replace") if h.value
                   else "out of memory")
            self.lib.pl_llm_free(h)
            raise _lib.make_error(st, msg)
        self.h = h
        self.has_tokenizer = self.lib.pl_llm_has_tokenizer(h)
        self.vocab_size = self.lib.pl_llm_vocab_size(h)
        self.max_model_len = self.lib.pl_llm_max_model_len(h)

    def _handle(self):
        h = self.h
        if h is None:
            raise RuntimeError("the pagellm engine is closed")
        return h

    def new_id(self):
        return str(next(self._ids))

    # ---- requests (any thread) ----

    def _c_requests(self, items):
        """(prompts, params or None, keep-alive) C arrays for items (see submit); a None
        params beside explicit ones gets the handle's defaults, as alone."""
        lib, h = self.lib, self._handle()
        n = len(items)
        prompts = (_lib.CPrompt * n)()
        keep = []
        any_params = any(p is not None for _, _, _, p in items)
        cparams = (_lib.CSamplingParams * n)() if any_params else None
        for k, (req, text, ids, params) in enumerate(items):
            if ids is not None:
                arr = (ctypes.c_int32 * max(len(ids), 1))(*ids)
                keep.append(arr)
                prompts[k].token_ids = arr
                prompts[k].n_token_ids = len(ids)
            else:
                b = text.encode("utf-8")
                keep.append(b)
                prompts[k].text = b
            if params is not None:
                cp, pkeep = params._to_c()
                keep.append(pkeep)
                cparams[k] = cp
            elif any_params:
                lib.pl_llm_default_sampling_params(h, ctypes.byref(cparams[k]))
        return prompts, cparams, keep

    def generate_complete(self, items):
        """Runs items through pl_llm_generate (beam search, which the streaming interface
        does not run): waits for all and returns their RequestOutputs. The library
        refuses while streamed requests are unfinished."""
        lib, h = self.lib, self._handle()
        n = len(items)
        prompts, cparams, keep = self._c_requests(items)
        outs = _lib.COutputs()
        st = lib.pl_llm_generate(h, prompts, n, cparams, n if cparams is not None else 0,
                                 ctypes.byref(outs))
        try:
            if st != _lib.PL_STATUS_OK:
                raise _lib.make_error(st, lib.pl_llm_errmsg(h).decode("utf-8", "replace"))
            results = []
            for k in range(outs.n):
                req = items[k][0]
                self._merge(req, outs.items[k])
                results.append(req.output())
            return results
        finally:
            lib.pl_outputs_free(ctypes.byref(outs))

    def submit(self, items):
        """Submits requests: items are (_Request, prompt_text, token_ids, SamplingParams
        or None). Returns their _Streams. All or none, and admitted together
        (pl_llm_submit_all), so a batch's unseeded sampling is reproducible; a refusal
        is raised with the library's message (naming the prompt when there are several)."""
        lib = self.lib
        h = self._handle()
        n = len(items)
        prompts, cparams, keep = self._c_requests(items)
        any_params = cparams is not None
        # the outputs carry the consumer's request ids (names need not be unique)
        names = (ctypes.c_char_p * n)(*[str(it[0].request_id).encode("utf-8") for it in items])
        ptrs = (ctypes.c_void_p * n)()
        st = lib.pl_llm_submit_all(h, names, prompts, n, cparams, n if any_params else 0, ptrs)
        if st != _lib.PL_STATUS_OK:
            raise _lib.make_error(st, lib.pl_llm_errmsg(h).decode("utf-8", "replace"))
        streams = [_Stream(self, ctypes.c_void_p(ptrs[k]), items[k][0]) for k in range(n)]
        with self._streams_lock:
            closed = self._closed
            if not closed:
                self._streams.update(streams)
        if closed:
            for s in streams:
                lib.pl_llm_stream_free(s.ptr)
            raise RuntimeError("the pagellm engine is closed")
        return streams

    def close(self):
        """Asks every live stream's abort, frees each once its reader lets go, then
        frees the handle (idempotent)."""
        with self._streams_lock:
            if self._closed:
                return
            self._closed = True
            live = list(self._streams)
            for s in live:
                self.lib.pl_llm_stream_abort(s.ptr)
        for s in live:
            s.free()
        h, self.h = self.h, None
        if h is not None:
            self.lib.pl_llm_free(h)

    # ---- tokenizer, templates, defaults, stats (any thread) ----

    def encode(self, text, add_special_tokens=True):
        return self._encode(self.lib, self._handle(), text, add_special_tokens)

    @staticmethod
    def _encode(lib, h, text, add_special_tokens):
        if isinstance(text, str):
            text = text.encode("utf-8")
        if b"\0" in text:
            raise ValueError("text to encode contains a NUL character")
        ids = ctypes.POINTER(ctypes.c_int32)()
        n = ctypes.c_int()
        _check(lib, h, lib.pl_llm_encode(h, text, add_special_tokens, ctypes.byref(ids),
                                         ctypes.byref(n)))
        try:
            return ids[:n.value]
        finally:
            lib.pl_free(ctypes.cast(ids, ctypes.c_void_p))

    def decode(self, ids, skip_special_tokens=True):
        return self._decode([int(i) for i in ids], skip_special_tokens)

    def _decode(self, ids, skip_special_tokens):
        lib, h = self.lib, self._handle()
        arr = (ctypes.c_int32 * max(len(ids), 1))(*ids)
        out = ctypes.c_void_p()
        _check(lib, h, lib.pl_llm_decode(h, arr, len(ids), skip_special_tokens,
                                         ctypes.byref(out)))
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            lib.pl_free(out)

    def apply_chat_template(self, conversations, add_generation_prompt=True,
                            continue_final_message=False, chat_template=None,
                            chat_template_kwargs=None, tokenize=False):
        """Renders each conversation (a list of message dicts); returns the prompts, or
        (tokenize) (prompt, token ids) pairs, encoded without special tokens as vLLM's
        LLM.chat does (the template places them)."""
        lib, h = self.lib, self._handle()
        opts = _lib.CChatOptions()
        lib.pl_chat_options_default(ctypes.byref(opts))
        opts.add_generation_prompt = add_generation_prompt
        opts.continue_final_message = continue_final_message
        opts.chat_template = chat_template.encode("utf-8") if chat_template else None
        opts.chat_template_kwargs = (json.dumps(chat_template_kwargs, ensure_ascii=False)
                                     .encode("utf-8") if chat_template_kwargs else None)
        out = []
        for conv in conversations:
            text = json.dumps(conv, ensure_ascii=False).encode("utf-8")
            p = ctypes.c_void_p()
            _check(lib, h, lib.pl_llm_apply_chat_template(h, text, ctypes.byref(opts),
                                                          ctypes.byref(p)))
            try:
                rendered = ctypes.string_at(p.value)
            finally:
                lib.pl_free(p)
            if tokenize:
                out.append((rendered.decode("utf-8", "replace"),
                            self._encode(lib, h, rendered, False)))
            else:
                out.append(rendered.decode("utf-8", "replace"))
        return out

    def default_sampling_params(self):
        from .sampling_params import SamplingParams
        c = _lib.CSamplingParams()
        self.lib.pl_llm_default_sampling_params(self._handle(), ctypes.byref(c))
        return SamplingParams._from_c(c)

    def stats(self):
        s = _lib.CLLMStats()
        self.lib.pl_llm_get_stats(self._handle(), ctypes.byref(s))
        return {name: getattr(s, name) for name, _ in s._fields_}

    # ---- deltas -> RequestOutputs ----

    def _merge(self, req, item):
        """Merges one delta into req; returns the request's error (a PagellmError) when
        this is its final delta and the engine failed it, else None."""
        now = time.time()
        m = req.metrics
        cm = item.metrics
        if cm.arrival_time > 0:
            # the library's times are CLOCK_MONOTONIC (time.monotonic); vLLM's time.time()
            off = now - time.monotonic()
            m.arrival_time = cm.arrival_time + off
            for name in ("first_scheduled_time", "first_token_time", "last_token_time",
                         "finished_time"):
                v = getattr(cm, name)
                setattr(m, name, v + off if v > 0 else (
                    m.arrival_time if name == "last_token_time" else None))
            if m.first_scheduled_time is not None:
                m.time_in_queue = m.first_scheduled_time - m.arrival_time
        if item.n_prompt_token_ids > 0 and item.prompt_token_ids:
            req.prompt_token_ids = item.prompt_token_ids[:item.n_prompt_token_ids]
            req.num_cached_tokens = item.num_cached_tokens
            if item.has_prompt_logprobs:
                req.prompt_logprobs = [self._logprobs(item.prompt_logprobs[j])
                                       for j in range(item.n_prompt_token_ids)]
        for j in range(item.n_outputs):
            c = item.outputs[j]
            s = req.samples.get(c.index)
            if s is None:
                s = req.samples[c.index] = _Sample(c.index)
            if c.text_len:
                s.text += ctypes.string_at(c.text, c.text_len)
            if c.n_token_ids > 0:
                s.token_ids.extend(c.token_ids[:c.n_token_ids])
            if c.has_logprobs:
                if s.logprobs is None:
                    s.logprobs = []
                s.logprobs.extend(self._logprobs(c.logprobs[k]) for k in range(c.n_token_ids))
                s.cum = c.cumulative_logprob
            s.finish = _lib.FINISH_REASONS.get(c.finish_reason)
            if c.stop_reason_kind == _lib.PL_STOP_REASON_STRING and c.stop_str is not None:
                s.stop = c.stop_str.decode("utf-8", "replace")
            elif c.stop_reason_kind == _lib.PL_STOP_REASON_TOKEN:
                s.stop = c.stop_token_id
        for k in range(req.n):
            if k not in req.samples:
                req.samples[k] = _Sample(k)
        if not item.finished:
            return None
        req.finished = True
        if m.finished_time is None:
            m.finished_time = now
        # a request can end with samples that never had a delta (an abort before the
        # first token): they take the request's finish reason
        reason = _lib.FINISH_REASONS.get(item.finish_reason) or "abort"
        for smp in req.samples.values():
            if smp.finish is None:
                smp.finish = reason
        if item.error:
            return _lib.make_error(item.error_status or _lib.PL_STATUS_INTERNAL,
                                   item.error.decode("utf-8", "replace"))
        return None

    def _token_str(self, tid):
        if tid in self._token_text:
            return self._token_text[tid]
        try:
            s = self._decode([tid], False) if self.has_tokenizer else None
        except _lib.PagellmError:
            s = None
        self._token_text[tid] = s
        return s

    def _logprobs(self, e):
        """vLLM's {token_id: Logprob} at one position: the chosen token first, then the
        top tokens by rank; None for the first prompt position."""
        if e.n_top < 0:
            return None
        d = {e.token_id: Logprob(e.logprob, e.rank, self._token_str(e.token_id))}
        for k in range(e.n_top):
            tid = e.top_ids[k]
            if tid not in d:
                d[tid] = Logprob(e.top_logprobs[k], k + 1, self._token_str(tid))
        return d
