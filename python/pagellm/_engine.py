"""_engine -- one background thread that owns a pl_llm handle and drives it.

Owns: the C handle's lifetime, the engine thread, the requests in flight and the
turning of the C library's per-request deltas into RequestOutputs.

Threading: only the engine thread calls into the handle. Other threads (and asyncio
tasks) reach it through a command queue: a command is a function the engine thread
runs between two steps, with its result or exception handed back through a Future.
So any number of threads may share one LLM; the C library sees a single owner, as
its request interface requires. While requests are in flight the thread loops
step -> poll -> deliver; when none are, it sleeps on a condition variable.

Request life: add() registers a _Request (a sink for deltas) under an internal id
unique in this engine, queues the C request, and returns. Each poll merges the
request's delta into the _Request, which hands RequestOutputs to its consumer's
callback (on the engine thread: callbacks only hand over, never block). The delta
with finished set is the last one; the _Request is then forgotten.
"""
import concurrent.futures
import ctypes
import itertools
import json
import threading
import time

from . import _lib
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput
from .sampling_params import RequestOutputKind

# Steps that fail in a row without any request finishing before the engine gives up
# on every request in flight (the C library finishes the requests of a failed step
# with an error, so this only guards against a library that breaks that promise).
_MAX_FRUITLESS_FAILURES = 3


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
    """A request in flight: what its deltas added up to so far, and who gets outputs.

    callback(output, error) is called on the engine thread with a RequestOutput for
    each output the consumer should see (every delta when streaming, else only the
    final one). error is None, except with the final output of a request the engine
    failed (a PagellmError carrying the C message), or with output None when the
    request ends without a final output (the engine failed or closed)."""

    def __init__(self, request_id, prompt, prompt_token_ids, params, stream, callback):
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.prompt_logprobs = None
        self.num_cached_tokens = None
        self.n = params.n if params is not None else 1
        self.detokenize = params.detokenize if params is not None else True
        self.kind = params.output_kind if (params is not None and stream) else (
            RequestOutputKind.CUMULATIVE if stream else RequestOutputKind.FINAL_ONLY)
        self.callback = callback
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


class EngineCore:
    """The handle plus its thread. Create with the C params; close() ends both."""

    def __init__(self, cparams, keep):
        self.lib = _lib.load()
        self._keep = keep
        self._cv = threading.Condition()
        self._cmds = []
        self._reqs = {}        # internal id -> _Request (touched by the engine thread only)
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
        self._thread = threading.Thread(target=self._run, name="pagellm-engine", daemon=True)
        self._thread.start()

    # ---- commands (any thread) ----

    def submit(self, fn):
        """Queues fn(lib, handle) to run on the engine thread between steps (commands run
        in the order they were submitted); returns a concurrent.futures.Future."""
        fut = concurrent.futures.Future()
        if threading.current_thread() is self._thread:
            try:
                fut.set_result(fn(self.lib, self.h))
            except BaseException as e:
                fut.set_exception(e)
            return fut
        with self._cv:
            if self._closed:
                raise RuntimeError("the pagellm engine is closed")
            self._cmds.append((fn, fut))
            self._cv.notify()
        return fut

    def call(self, fn):
        """submit(fn) and wait: fn's result, or its exception raised here."""
        return self.submit(fn).result()

    def new_id(self):
        return "py-%d" % next(self._ids)

    def add(self, items):
        self.submit_add(items).result()

    def submit_add(self, items):
        """Queues requests: items are (internal_id, _Request, prompt_text, token_ids,
        SamplingParams or None). All or none: on the first refusal, the ones already
        queued are aborted and the refusal is raised (naming the prompt when several)."""
        def fn(lib, h):
            done = []
            try:
                for k, (rid, req, text, ids, params) in enumerate(items):
                    cprompt = _lib.CPrompt()
                    keep = []
                    if ids is not None:
                        arr = (ctypes.c_int32 * max(len(ids), 1))(*ids)
                        keep.append(arr)
                        cprompt.token_ids = arr
                        cprompt.n_token_ids = len(ids)
                    else:
                        cprompt.text = text.encode("utf-8")
                    cp = None
                    if params is not None:
                        cp, pkeep = params._to_c()
                        keep.append(pkeep)
                    st = lib.pl_llm_add_request(h, rid.encode(), ctypes.byref(cprompt),
                                                ctypes.byref(cp) if cp is not None else None)
                    if st != _lib.PL_STATUS_OK:
                        msg = lib.pl_llm_errmsg(h).decode("utf-8", "replace")
                        if len(items) > 1:
                            msg = "prompt %d: %s" % (k, msg)
                        raise _lib.make_error(st, msg)
                    self._reqs[rid] = req
                    done.append(rid)
            except BaseException:
                for rid in done:
                    self._reqs.pop(rid, None)
                    lib.pl_llm_abort(h, rid.encode())
                raise
        return self.submit(fn)

    def abort(self, internal_id):
        """Queues the abort of a request in flight (no-op once it finished) and returns
        without waiting. Its consumer gets a final output with finish_reason "abort"."""
        def fn(lib, h):
            if internal_id in self._reqs:
                lib.pl_llm_abort(h, internal_id.encode())
        try:
            self.submit(fn)
        except RuntimeError:
            pass  # closed: every request was already ended

    def close(self):
        """Aborts what is in flight, stops the thread and frees the handle (idempotent)."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # ---- tokenizer and templates (any thread, run on the engine thread) ----

    def encode(self, text, add_special_tokens=True):
        return self.call(lambda lib, h: self._encode(lib, h, text, add_special_tokens))

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
        ids = [int(i) for i in ids]

        def fn(lib, h):
            return self._decode(lib, h, ids, skip_special_tokens)
        return self.call(fn)

    def _decode(self, lib, h, ids, skip_special_tokens):
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
        (tokenize) their token ids, encoded without special tokens as vLLM's LLM.chat
        does (the template places them)."""
        texts = [json.dumps(c, ensure_ascii=False).encode("utf-8") for c in conversations]
        kwargs = (json.dumps(chat_template_kwargs, ensure_ascii=False).encode("utf-8")
                  if chat_template_kwargs else None)

        def fn(lib, h):
            opts = _lib.CChatOptions()
            lib.pl_chat_options_default(ctypes.byref(opts))
            opts.add_generation_prompt = add_generation_prompt
            opts.continue_final_message = continue_final_message
            opts.chat_template = chat_template.encode("utf-8") if chat_template else None
            opts.chat_template_kwargs = kwargs
            out = []
            for t in texts:
                p = ctypes.c_void_p()
                _check(lib, h, lib.pl_llm_apply_chat_template(h, t, ctypes.byref(opts),
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
        return self.call(fn)

    def default_sampling_params(self):
        def fn(lib, h):
            c = _lib.CSamplingParams()
            lib.pl_llm_default_sampling_params(h, ctypes.byref(c))
            from .sampling_params import SamplingParams
            return SamplingParams._from_c(c)
        return self.call(fn)

    def stats(self):
        def fn(lib, h):
            s = _lib.CLLMStats()
            lib.pl_llm_get_stats(h, ctypes.byref(s))
            return {name: getattr(s, name) for name, _ in s._fields_}
        return self.call(fn)

    # ---- the engine thread ----

    def _run(self):
        lib, h = self.lib, self.h
        fruitless = 0
        try:
            while True:
                with self._cv:
                    while not self._cmds and not self._reqs and not self._closed:
                        self._cv.wait()
                    cmds, self._cmds = self._cmds, []
                    closing = self._closed
                for fn, fut in cmds:
                    if not fut.set_running_or_notify_cancel():
                        continue
                    try:
                        fut.set_result(fn(lib, h))
                    except BaseException as e:  # handed to the caller
                        fut.set_exception(e)
                if closing:
                    for rid in list(self._reqs):
                        lib.pl_llm_abort(h, rid.encode())
                if not self._reqs:
                    if closing:
                        break
                    continue
                st = lib.pl_llm_step(h) if lib.pl_llm_has_unfinished(h) else _lib.PL_STATUS_OK
                step_msg = (lib.pl_llm_errmsg(h).decode("utf-8", "replace")
                            if st != _lib.PL_STATUS_OK else None)
                n_finished = self._poll(lib, h)
                if st != _lib.PL_STATUS_OK and n_finished == 0:
                    fruitless += 1
                    if fruitless >= _MAX_FRUITLESS_FAILURES:
                        self._fail_all(lib, h, _lib.make_error(st, step_msg))
                        fruitless = 0
                else:
                    fruitless = 0
                if self._reqs and not lib.pl_llm_has_unfinished(h) and n_finished == 0:
                    # the library has no request left but some never got a final delta
                    self._fail_all(lib, h, _lib.make_error(
                        _lib.PL_STATUS_INTERNAL,
                        "pagellm: the engine lost a request's final output"))
        finally:
            with self._cv:
                self._closed = True
                cmds, self._cmds = self._cmds, []
            for fn, fut in cmds:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(RuntimeError("the pagellm engine is closed"))
            for req in self._reqs.values():
                _deliver(req, None, RuntimeError("the pagellm engine is closed"))
            self._reqs.clear()
            lib.pl_llm_free(h)
            self.h = None

    def _fail_all(self, lib, h, err):
        for rid, req in list(self._reqs.items()):
            lib.pl_llm_abort(h, rid.encode())
            _deliver(req, None, err)
        self._reqs.clear()

    def _poll(self, lib, h):
        """Takes the deltas, merges each into its request, delivers; returns how many
        requests finished."""
        outs = _lib.COutputs()
        st = lib.pl_llm_poll(h, ctypes.byref(outs))
        if st != _lib.PL_STATUS_OK:
            err = _lib.make_error(st, lib.pl_llm_errmsg(h).decode("utf-8", "replace"))
            lib.pl_outputs_free(ctypes.byref(outs))
            self._fail_all(lib, h, err)
            return 0
        ready = []
        try:
            for i in range(outs.n):
                item = outs.items[i]
                rid = item.request_id.decode()
                req = self._reqs.get(rid)
                if req is None:
                    continue  # refused in add() after queueing, or failed: nobody waits
                err = self._merge(lib, h, req, item)
                if req.finished:
                    del self._reqs[rid]
                ready.append((req, err))
        finally:
            lib.pl_outputs_free(ctypes.byref(outs))
        n_finished = 0
        for req, err in ready:
            if req.finished:
                n_finished += 1
            if req.kind != RequestOutputKind.FINAL_ONLY or req.finished:
                _deliver(req, req.output(), err)
        return n_finished

    def _merge(self, lib, h, req, item):
        now = time.time()
        m = req.metrics
        cm = item.metrics
        if cm.arrival_time > 0:
            # the library's times are CLOCK_MONOTONIC (time.monotonic); vLLM's are time.time()
            off = now - time.monotonic()
            m.arrival_time = cm.arrival_time + off
            for name in ("first_scheduled_time", "first_token_time", "last_token_time",
                         "finished_time"):
                v = getattr(cm, name)
                setattr(m, name, v + off if v > 0 else (m.arrival_time if
                                                        name == "last_token_time" else None))
            if m.first_scheduled_time is not None:
                m.time_in_queue = m.first_scheduled_time - m.arrival_time
        elif m.first_scheduled_time is None:
            m.first_scheduled_time = now
            m.time_in_queue = now - m.arrival_time
        if item.n_prompt_token_ids > 0 and item.prompt_token_ids:
            req.prompt_token_ids = item.prompt_token_ids[:item.n_prompt_token_ids]
            req.num_cached_tokens = item.num_cached_tokens
            if item.has_prompt_logprobs:
                req.prompt_logprobs = [self._logprobs(lib, h, item.prompt_logprobs[j])
                                       for j in range(item.n_prompt_token_ids)]
        if req.num_cached_tokens is None:
            req.num_cached_tokens = item.num_cached_tokens
        for j in range(item.n_outputs):
            c = item.outputs[j]
            s = req.samples.get(c.index)
            if s is None:
                s = req.samples[c.index] = _Sample(c.index)
            if c.text_len:
                s.text += ctypes.string_at(c.text, c.text_len)
            if c.n_token_ids > 0:
                s.token_ids.extend(c.token_ids[:c.n_token_ids])
                if cm.arrival_time <= 0:
                    if m.first_token_time is None:
                        m.first_token_time = now
                    m.last_token_time = now
            if c.has_logprobs:
                if s.logprobs is None:
                    s.logprobs = []
                s.logprobs.extend(self._logprobs(lib, h, c.logprobs[k])
                                  for k in range(c.n_token_ids))
                s.cum = c.cumulative_logprob
            s.finish = _lib.FINISH_REASONS.get(c.finish_reason)
            if c.stop_reason_kind == _lib.PL_STOP_REASON_STRING and c.stop_str is not None:
                s.stop = c.stop_str.decode("utf-8", "replace")
            elif c.stop_reason_kind == _lib.PL_STOP_REASON_TOKEN:
                s.stop = c.stop_token_id
        for k in range(req.n):
            if k not in req.samples:
                req.samples[k] = _Sample(k)
        err = None
        if item.finished:
            req.finished = True
            if m.finished_time is None:
                m.finished_time = now
            if item.error:
                err = _lib.make_error(item.error_status or _lib.PL_STATUS_INTERNAL,
                                      item.error.decode("utf-8", "replace"))
        return err

    def _token_str(self, lib, h, tid):
        s = self._token_text.get(tid)
        if s is None:
            try:
                s = self._decode(lib, h, [tid], False) if self.has_tokenizer else None
            except _lib.PagellmError:
                s = None
            self._token_text[tid] = s
        return s

    def _logprobs(self, lib, h, e):
        """vLLM's {token_id: Logprob} at one position: the chosen token first, then the
        top tokens by rank; None for the first prompt position."""
        if e.n_top < 0:
            return None
        d = {e.token_id: Logprob(e.logprob, e.rank, self._token_str(lib, h, e.token_id))}
        for k in range(e.n_top):
            tid = e.top_ids[k]
            if tid not in d:
                d[tid] = Logprob(e.top_logprobs[k], k + 1, self._token_str(lib, h, tid))
        return d


def _deliver(req, output, error):
    try:
        req.callback(output, error)
    except Exception:  # a consumer's bug must not stop the engine thread
        import traceback
        traceback.print_exc()
