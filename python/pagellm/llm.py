"""llm -- vLLM's LLM class: offline batch generation, chat and streaming over one engine.

Owns: LLM, its request ids (a counter, like vLLM's), the batch collector behind
generate/chat (with the progress bar) and the synchronous streaming generator. The
engine itself (thread, C handle) is pagellm._engine.EngineCore: any number of
threads may call one LLM at the same time; their requests are batched together.
"""
import itertools
import sys
import threading
import weakref
from typing import Any, Iterator, List, Optional, Sequence, Union

from . import _lib
from ._engine import _Request
from .engine.arg_utils import EngineArgs
from .inputs import parse_conversations, parse_prompts
from .outputs import RequestOutput
from .sampling_params import RequestOutputKind, SamplingParams
from .tokenizer import Tokenizer


class LLM:
    """An LLM for offline inference (vLLM's LLM).

    LLM(model, tokenizer=None, **options): model is a model directory or a Hugging Face
    Hub id; the options are EngineArgs' (pagellm.engine.arg_utils), with vLLM's names and
    defaults: dtype="auto", max_model_len=None, gpu_memory_utilization=0.9,
    max_num_seqs=None, enable_prefix_caching=None, seed=0, quantization=None,
    tensor_parallel_size=1, load_format="auto", device="auto", ... Values pagellm
    cannot honour raise ValueError; unknown options raise TypeError.
    """

    def __init__(self, model: str, tokenizer: Optional[str] = None, **kwargs: Any):
        names = EngineArgs._names()
        unknown = sorted(k for k in kwargs if k not in names)
        if unknown:
            raise TypeError("LLM() got unexpected keyword argument(s): %s" % ", ".join(unknown))
        self.engine_args = EngineArgs(model=model, tokenizer=tokenizer, **kwargs)
        self._core = self.engine_args._create_core()
        self._finalizer = weakref.finalize(self, self._core.close)
        self._counter = itertools.count()
        self._counter_lock = threading.Lock()
        self._tokenizer = Tokenizer(self._core, tokenizer or model)

    # ---- vLLM's API ----

    def get_tokenizer(self) -> Tokenizer:
        if not self._core.has_tokenizer:
            raise _lib.UnsupportedError("the model has no tokenizer (tokenizer.json)",
                                        _lib.PL_STATUS_UNSUPPORTED)
        return self._tokenizer

    def get_default_sampling_params(self) -> SamplingParams:
        """vLLM's defaults, then the model's generation_config.json (generation_config
        "auto") and override_generation_config: what a request without params gets."""
        return self._core.default_sampling_params()

    def generate(self, prompts: Any = None,
                 sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None,
                 use_tqdm: Any = True, lora_request: Any = None,
                 prompt_token_ids: Optional[List[List[int]]] = None,
                 priority: Optional[List[int]] = None) -> List[RequestOutput]:
        """Generates for every prompt and returns their RequestOutputs in prompt order.

        prompts: a str, a list of str, token ids (a list of int, or a list of them),
        dicts with "prompt" or "prompt_token_ids", or a list mixing these.
        sampling_params: one SamplingParams for all, one per prompt, or None (the model's
        defaults, get_default_sampling_params()). A bad prompt or params raises before
        anything runs; a request the engine fails raises PagellmError with its message."""
        if lora_request is not None:
            raise NotImplementedError("LoRA adapters are not supported by pagellm")
        if prompt_token_ids is not None:
            if prompts is not None:
                raise ValueError("give prompts or prompt_token_ids, not both")
            prompts = [{"prompt_token_ids": ids} for ids in (
                [prompt_token_ids] if prompt_token_ids and isinstance(prompt_token_ids[0], int)
                else prompt_token_ids)]
        if prompts is None:
            raise ValueError("no prompts given")
        return self._run(parse_prompts(prompts), sampling_params, use_tqdm)

    def chat(self, messages: Any,
             sampling_params: Union[None, SamplingParams, Sequence[SamplingParams]] = None,
             use_tqdm: Any = True, lora_request: Any = None, chat_template: Optional[str] = None,
             chat_template_content_format: str = "auto", add_generation_prompt: bool = True,
             continue_final_message: bool = False, tools: Optional[list] = None,
             chat_template_kwargs: Optional[dict] = None,
             mm_processor_kwargs: Optional[dict] = None) -> List[RequestOutput]:
        """Renders each conversation with the chat template (the model's, or
        chat_template's source), then generates as generate() does. messages: a list of
        {"role", "content"} dicts, or a list of such conversations."""
        if lora_request is not None:
            raise NotImplementedError("LoRA adapters are not supported by pagellm")
        if mm_processor_kwargs:
            raise NotImplementedError("multimodal inputs are not supported by pagellm")
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both "
                             "be true (pass add_generation_prompt=False)")
        kwargs = dict(chat_template_kwargs or {})
        if tools is not None:
            kwargs["tools"] = tools
        rendered = self._core.apply_chat_template(
            parse_conversations(messages), add_generation_prompt, continue_final_message,
            chat_template, kwargs, tokenize=True)
        return self._run([(text, ids) for text, ids in rendered], sampling_params, use_tqdm)

    def stream(self, prompt: Any, sampling_params: Optional[SamplingParams] = None,
               request_id: Optional[str] = None) -> Iterator[RequestOutput]:
        """Streams one prompt: yields a RequestOutput as tokens arrive (text cumulative,
        or per sampling_params.output_kind), the last with finished=True. Stopping the
        iteration early (break, close()) aborts the request."""
        parsed = parse_prompts(prompt)
        if len(parsed) != 1:
            raise ValueError("stream() takes one prompt, got %d" % len(parsed))
        (text, ids), = parsed
        rid = request_id if request_id is not None else self._next_id()
        req = _Request(rid, text, ids, sampling_params, True)
        text, ids = self._truncate(text, ids, sampling_params)
        stream, = self._core.submit([(req, text, ids, sampling_params)])
        try:
            while True:
                out, err = stream.read()
                if out is not None:
                    yield out
                if err is not None:
                    raise err
                if req.finished:
                    return
        finally:
            stream.free()  # aborts the request when the consumer left early

    def get_stats(self) -> dict:
        """The engine's counters (struct pl_llm_stats: KV blocks, tokens, steps, ...)."""
        return self._core.stats()

    def close(self):
        """Stops the engine thread and frees the model (also done when the LLM is
        garbage-collected or the interpreter exits)."""
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- internals ----

    def _next_id(self):
        with self._counter_lock:
            return str(next(self._counter))

    def _truncate(self, text, ids, params):
        k = params.truncate_prompt_tokens if params is not None else None
        if k is None:
            return text, ids
        if ids is None:
            ids = self._core.encode(text, True)
        return text, ids[-k:]

    def _run(self, prompts, sampling_params, use_tqdm) -> List[RequestOutput]:
        n = len(prompts)
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params] * n
        else:
            params = list(sampling_params)
            if len(params) != n:
                raise ValueError("The lengths of prompts and sampling_params must be the same "
                                 "(%d prompts, %d sampling_params)" % (n, len(params)))
        for p in params:
            if p is not None and not isinstance(p, SamplingParams):
                raise TypeError("sampling_params must be SamplingParams, got %s"
                                % type(p).__name__)
        if n == 0:
            return []
        items = []
        for (text, ids), p in zip(prompts, params):
            if p is not None and p.output_kind != RequestOutputKind.CUMULATIVE:
                p = p.clone()  # generate() returns whole outputs whatever the kind
                p.output_kind = RequestOutputKind.CUMULATIVE
            req = _Request(self._next_id(), text, ids, p, False)
            text, ids = self._truncate(text, ids, p)
            items.append((req, text, ids, p))
        if any(p is not None and p.use_beam_search for p in params):
            # beam search runs through pl_llm_generate: whole outputs, no stream
            return self._core.generate_complete(items)
        streams = self._core.submit(items)
        bar = None
        results = []
        failed = None
        try:
            bar = _progress_bar(use_tqdm, n)
            # in prompt order: the others' deltas wait in their streams meanwhile
            for i, s in enumerate(streams):
                out = None
                while not s.req.finished:
                    out, err = s.read()
                    if err is not None:
                        if failed is None:
                            failed = (i, err)
                        if out is None:
                            break
                results.append(out)
                s.free()
                if bar is not None:
                    bar.update(1)
        finally:
            for s in streams:
                s.free()
            if bar is not None:
                bar.close()
        if failed is not None:
            i, e = failed
            if n > 1:
                e.args = ("prompt %d: %s" % (i, e.args[0] if e.args else ""),) + e.args[1:]
            raise e
        return results


def _progress_bar(use_tqdm, total):
    """A tqdm bar (vLLM's "Processed prompts") when use_tqdm asks for one and tqdm is
    installed; use_tqdm may also be a tqdm-like class."""
    if not use_tqdm:
        return None
    cls = use_tqdm if callable(use_tqdm) else None
    if cls is None:
        try:
            from tqdm.auto import tqdm as cls
        except ImportError:
            return None
    return cls(total=total, desc="Processed prompts", dynamic_ncols=True, file=sys.stderr)
