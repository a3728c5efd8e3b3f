"""sampling_params -- vLLM's SamplingParams, field for field the C struct pl_sampling_params.

Owns: the Python side of per-request sampling parameters: vLLM's names and defaults
(vllm/sampling_params.py), the types each field takes, and the conversion to and from
the C struct. The value rules (ranges, greedy normalization) live in the C library,
which checks every request when it is submitted and names the field at fault.
"""
import ctypes
import enum
import json
from typing import Any, Dict, List, Optional, Union

from . import _lib


class RequestOutputKind(enum.IntEnum):
    """What a streaming request yields (vLLM's RequestOutputKind)."""
    CUMULATIVE = 0  # everything so far
    DELTA = 1       # only what is new since the previous output
    FINAL_ONLY = 2  # only the finished output


# vLLM fields pagellm does not implement: allowed only at their "off" value.
_UNSUPPORTED = ("bad_words", "logits_processors")


class StructuredOutputsParams:
    """vLLM's StructuredOutputsParams (older name: GuidedDecodingParams): exactly one of
    json (a JSON Schema: dict or JSON text), regex, choice (list of str), grammar
    (GBNF/EBNF text, start rule "root"), json_object=True; whitespace_pattern (a regex for
    the whitespace between JSON tokens). The output is constrained to match it; the C
    library compiles it when the request is submitted and names what it cannot express."""

    def __init__(self, json: Any = None, regex: Optional[str] = None,
                 choice: Optional[List[str]] = None, grammar: Optional[str] = None,
                 json_object: Optional[bool] = None, whitespace_pattern: Optional[str] = None,
                 **unsupported: Any):
        bad = sorted(k for k, v in unsupported.items() if v not in (None, False, ""))
        if bad:
            raise ValueError("structured outputs: %s not supported by pagellm" % ", ".join(bad))
        self.json, self.regex, self.choice = json, regex, choice
        self.grammar, self.json_object = grammar, json_object
        self.whitespace_pattern = whitespace_pattern
        given = [k for k in ("json", "regex", "choice", "grammar", "json_object")
                 if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError("structured outputs: give exactly one of json, regex, choice, "
                             "grammar, json_object (got %s)" % (", ".join(given) or "none"))

    @classmethod
    def _of(cls, v: Any) -> Optional["StructuredOutputsParams"]:
        if v is None or isinstance(v, cls):
            return v
        if isinstance(v, dict):
            return cls(**v)
        # another library's object of the same shape (vLLM's own dataclass)
        names = ("json", "regex", "choice", "grammar", "json_object", "whitespace_pattern")
        if any(hasattr(v, k) for k in names):
            return cls(**{k: getattr(v, k, None) for k in names})
        raise TypeError("structured outputs: expected StructuredOutputsParams or a dict, got %r"
                        % (v,))

    def _kind_text(self):
        if self.json is not None:
            text = self.json if isinstance(self.json, str) else json.dumps(self.json)
            return _lib.PL_CONSTRAINT_JSON, text
        if self.regex is not None:
            return _lib.PL_CONSTRAINT_REGEX, str(self.regex)
        if self.choice is not None:
            if isinstance(self.choice, str) or not all(isinstance(c, str) for c in self.choice):
                raise TypeError("structured outputs: choice must be a list of str")
            return _lib.PL_CONSTRAINT_CHOICE, json.dumps(list(self.choice))
        if self.grammar is not None:
            return _lib.PL_CONSTRAINT_GRAMMAR, str(self.grammar)
        return _lib.PL_CONSTRAINT_JSON_OBJECT, None

    def __eq__(self, other):
        return isinstance(other, StructuredOutputsParams) and self.__dict__ == other.__dict__

    def __repr__(self):
        return "StructuredOutputsParams(%s)" % ", ".join(
            "%s=%r" % kv for kv in self.__dict__.items() if kv[1] is not None)


GuidedDecodingParams = StructuredOutputsParams  # vLLM's earlier name


class SamplingParams:
    """Sampling parameters of one request (vLLM's SamplingParams, same names and defaults).

    n: samples per prompt. best_of: only None or n. presence_penalty, frequency_penalty
    ([-2, 2]), repetition_penalty (> 0). temperature ([0, 2]; 0 is greedy), top_p
    ((0, 1]), top_k (0 or -1: off), min_p ([0, 1]). seed: the request's own generator
    (None: the engine's). stop (str or list of str), stop_token_ids,
    include_stop_str_in_output, ignore_eos. max_tokens (None: up to the context length),
    min_tokens. logprobs, prompt_logprobs: how many top logprobs per position (None: none;
    at most 20). detokenize (False: text stays ""), skip_special_tokens,
    spaces_between_special_tokens. logit_bias ({token_id: bias}), allowed_token_ids.
    truncate_prompt_tokens: keep only the last k prompt tokens. output_kind (streaming).
    Beam search: use_beam_search, beam_width (0: n), length_penalty, early_stopping.
    """

    def __init__(self, n: int = 1, best_of: Optional[int] = None,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 repetition_penalty: float = 1.0, temperature: float = 1.0,
                 top_p: float = 1.0, top_k: int = 0, min_p: float = 0.0,
                 seed: Optional[int] = None, stop: Union[None, str, List[str]] = None,
                 stop_token_ids: Optional[List[int]] = None, bad_words: Optional[List[str]] = None,
                 include_stop_str_in_output: bool = False, ignore_eos: bool = False,
                 max_tokens: Optional[int] = 16, min_tokens: int = 0,
                 logprobs: Optional[int] = None, prompt_logprobs: Optional[int] = None,
                 detokenize: bool = True, skip_special_tokens: bool = True,
                 spaces_between_special_tokens: bool = True, logits_processors: Any = None,
                 truncate_prompt_tokens: Optional[int] = None,
                 output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE,
                 guided_decoding: Any = None, structured_outputs: Any = None,
                 logit_bias: Optional[Dict[int, float]] = None,
                 allowed_token_ids: Optional[List[int]] = None,
                 extra_args: Optional[Dict[str, Any]] = None,
                 use_beam_search: bool = False, beam_width: int = 0,
                 length_penalty: float = 1.0, early_stopping: bool = False):
        for name in _UNSUPPORTED:
            if locals()[name]:
                raise NotImplementedError("SamplingParams.%s is not supported by pagellm" % name)
        if best_of is not None and best_of != n:
            raise NotImplementedError(
                "SamplingParams.best_of (%r) other than n is not supported by pagellm" % best_of)
        self.n = _int("n", n)
        self.best_of = best_of
        self.presence_penalty = _float("presence_penalty", presence_penalty)
        self.frequency_penalty = _float("frequency_penalty", frequency_penalty)
        self.repetition_penalty = _float("repetition_penalty", repetition_penalty)
        self.temperature = _float("temperature", temperature)
        self.top_p = _float("top_p", top_p)
        self.top_k = _int("top_k", top_k)
        self.min_p = _float("min_p", min_p)
        self.seed = None if seed is None else _int("seed", seed)
        if self.seed is not None and not 0 <= self.seed < 1 << 64:
            raise ValueError("SamplingParams.seed must fit in 64 bits unsigned, got %d" % seed)
        if stop is None:
            stop = []
        elif isinstance(stop, str):
            stop = [stop]
        elif not all(isinstance(s, str) for s in stop):
            raise TypeError("SamplingParams.stop must be a str or a list of str")
        self.stop = list(stop)
        self.stop_token_ids = _ints("stop_token_ids", stop_token_ids or [])
        self.bad_words = None
        self.include_stop_str_in_output = bool(include_stop_str_in_output)
        self.ignore_eos = bool(ignore_eos)
        self.max_tokens = None if max_tokens is None else _int("max_tokens", max_tokens)
        self.min_tokens = _int("min_tokens", min_tokens)
        self.logprobs = None if logprobs is None else _int("logprobs", logprobs)
        self.prompt_logprobs = (None if prompt_logprobs is None
                                else _int("prompt_logprobs", prompt_logprobs))
        self.detokenize = bool(detokenize)
        self.skip_special_tokens = bool(skip_special_tokens)
        self.spaces_between_special_tokens = bool(spaces_between_special_tokens)
        self.logits_processors = None
        if truncate_prompt_tokens is not None:
            truncate_prompt_tokens = _int("truncate_prompt_tokens", truncate_prompt_tokens)
            if truncate_prompt_tokens < 1:
                raise ValueError("SamplingParams.truncate_prompt_tokens must be >= 1, got %d"
                                 % truncate_prompt_tokens)
        self.truncate_prompt_tokens = truncate_prompt_tokens
        self.output_kind = RequestOutputKind(output_kind)
        if guided_decoding is not None and structured_outputs is not None:
            raise ValueError("SamplingParams: give structured_outputs or guided_decoding, "
                             "not both")
        self.structured_outputs = StructuredOutputsParams._of(
            structured_outputs if structured_outputs is not None else guided_decoding)
        self.guided_decoding = self.structured_outputs
        if logit_bias is None:
            logit_bias = {}
        if not isinstance(logit_bias, dict):
            raise TypeError("SamplingParams.logit_bias must be a dict {token_id: bias}")
        self.logit_bias = {_int("logit_bias key", int(k) if isinstance(k, str) else k):
                           _float("logit_bias value", v) for k, v in logit_bias.items()}
        self.allowed_token_ids = (None if allowed_token_ids is None
                                  else _ints("allowed_token_ids", allowed_token_ids))
        self.extra_args = extra_args
        self.use_beam_search = bool(use_beam_search)
        self.beam_width = _int("beam_width", beam_width)
        self.length_penalty = _float("length_penalty", length_penalty)
        self.early_stopping = bool(early_stopping)

    # ---- vLLM's helpers ----

    @staticmethod
    def from_optional(**kwargs) -> "SamplingParams":
        """Like the constructor, with None meaning "the default" for every field."""
        return SamplingParams(**{k: v for k, v in kwargs.items() if v is not None})

    def clone(self) -> "SamplingParams":
        p = SamplingParams.__new__(SamplingParams)
        p.__dict__.update({k: (list(v) if isinstance(v, list) else
                               dict(v) if isinstance(v, dict) else v)
                           for k, v in self.__dict__.items()})
        return p

    @property
    def sampling_type(self) -> str:
        return "greedy" if self.temperature < 1e-5 else "random"

    def __repr__(self):
        keys = ("n", "presence_penalty", "frequency_penalty", "repetition_penalty",
                "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
                "include_stop_str_in_output", "ignore_eos", "max_tokens", "min_tokens",
                "logprobs", "prompt_logprobs", "skip_special_tokens",
                "spaces_between_special_tokens", "truncate_prompt_tokens", "logit_bias",
                "allowed_token_ids", "use_beam_search", "structured_outputs")
        return "SamplingParams(%s)" % ", ".join("%s=%r" % (k, getattr(self, k)) for k in keys)

    def __eq__(self, other):
        return isinstance(other, SamplingParams) and self.__dict__ == other.__dict__

    # ---- the C struct ----

    def _to_c(self):
        """(struct pl_sampling_params, keep-alive list): the arrays point into ctypes
        objects in the list, which must outlive the struct's use."""
        c = _lib.CSamplingParams()
        _lib.load().pl_sampling_params_default(ctypes.byref(c))
        keep = []
        for name in ("n", "presence_penalty", "frequency_penalty", "repetition_penalty",
                     "temperature", "top_p", "top_k", "min_p", "include_stop_str_in_output",
                     "ignore_eos", "min_tokens", "skip_special_tokens",
                     "spaces_between_special_tokens", "use_beam_search", "beam_width",
                     "length_penalty", "early_stopping"):
            v = getattr(self, name)
            if isinstance(v, int) and not isinstance(v, bool):
                _c_int(name, v)
            setattr(c, name, v)
        c.has_seed = self.seed is not None
        c.seed = self.seed or 0
        c.max_tokens = -1 if self.max_tokens is None else _c_int("max_tokens", self.max_tokens)
        c.logprobs = -1 if self.logprobs is None else _c_int("logprobs", self.logprobs)
        c.prompt_logprobs = (-1 if self.prompt_logprobs is None
                             else _c_int("prompt_logprobs", self.prompt_logprobs))
        if self.stop:
            arr = (ctypes.c_char_p * len(self.stop))(*[s.encode() for s in self.stop])
            keep.append(arr)
            c.stop, c.n_stop = arr, len(self.stop)
        if self.stop_token_ids:
            arr = _int32_array("stop_token_ids", self.stop_token_ids)
            keep.append(arr)
            c.stop_token_ids, c.n_stop_token_ids = arr, len(self.stop_token_ids)
        if self.logit_bias:
            arr = (_lib.LogitBias * len(self.logit_bias))()
            for i, (tid, bias) in enumerate(self.logit_bias.items()):
                _c_int("logit_bias key", tid)
                arr[i].token_id, arr[i].bias = tid, bias
            keep.append(arr)
            c.logit_bias, c.n_logit_bias = arr, len(self.logit_bias)
        if self.allowed_token_ids is not None:
            # a non-NULL pointer with count 0 is vLLM's empty list (refused by validation)
            arr = _int32_array("allowed_token_ids", self.allowed_token_ids or [0])
            keep.append(arr)
            c.allowed_token_ids = arr
            c.n_allowed_token_ids = len(self.allowed_token_ids)
        if self.structured_outputs is not None:
            kind, text = self.structured_outputs._kind_text()
            c.constraint_kind = kind
            if text is not None:
                b = text.encode("utf-8")
                keep.append(b)
                c.constraint = b
            ws = self.structured_outputs.whitespace_pattern
            if ws is not None:
                b = str(ws).encode("utf-8")
                keep.append(b)
                c.whitespace_pattern = b
        return c, keep

    @classmethod
    def _from_c(cls, c) -> "SamplingParams":
        """A SamplingParams with the scalar fields (and arrays) of a C struct."""
        def arr(ptr, n):
            return [ptr[i] for i in range(n)] if n > 0 and ptr else []
        return cls(
            n=c.n, presence_penalty=c.presence_penalty, frequency_penalty=c.frequency_penalty,
            repetition_penalty=c.repetition_penalty, temperature=c.temperature, top_p=c.top_p,
            top_k=c.top_k, min_p=c.min_p, seed=c.seed if c.has_seed else None,
            stop=[s.decode() for s in arr(c.stop, c.n_stop)],
            stop_token_ids=arr(c.stop_token_ids, c.n_stop_token_ids),
            include_stop_str_in_output=c.include_stop_str_in_output, ignore_eos=c.ignore_eos,
            max_tokens=None if c.max_tokens < 0 else c.max_tokens, min_tokens=c.min_tokens,
            logprobs=None if c.logprobs < 0 else c.logprobs,
            prompt_logprobs=None if c.prompt_logprobs < 0 else c.prompt_logprobs,
            skip_special_tokens=c.skip_special_tokens,
            spaces_between_special_tokens=c.spaces_between_special_tokens,
            logit_bias={b.token_id: b.bias for b in arr(c.logit_bias, c.n_logit_bias)},
            allowed_token_ids=(arr(c.allowed_token_ids, c.n_allowed_token_ids)
                               if c.allowed_token_ids else None),
            use_beam_search=c.use_beam_search, beam_width=c.beam_width,
            length_penalty=c.length_penalty, early_stopping=c.early_stopping,
            structured_outputs=_structured_from_c(c))


def _structured_from_c(c) -> Optional[StructuredOutputsParams]:
    kind = c.constraint_kind
    if kind == _lib.PL_CONSTRAINT_NONE:
        return None
    text = c.constraint.decode("utf-8") if c.constraint else None
    ws = c.whitespace_pattern.decode("utf-8") if c.whitespace_pattern else None
    if kind == _lib.PL_CONSTRAINT_JSON:
        return StructuredOutputsParams(json=text, whitespace_pattern=ws)
    if kind == _lib.PL_CONSTRAINT_REGEX:
        return StructuredOutputsParams(regex=text)
    if kind == _lib.PL_CONSTRAINT_CHOICE:
        return StructuredOutputsParams(choice=json.loads(text or "[]"))
    if kind == _lib.PL_CONSTRAINT_GRAMMAR:
        return StructuredOutputsParams(grammar=text)
    return StructuredOutputsParams(json_object=True, whitespace_pattern=ws)


def _int(name, v):
    if isinstance(v, bool) or not isinstance(v, int):
        if hasattr(v, "__index__") and not isinstance(v, bool):
            return v.__index__()
        raise TypeError("SamplingParams.%s must be an int, got %r" % (name, v))
    return v


def _float(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            return float(v)
        except (TypeError, ValueError):
            raise TypeError("SamplingParams.%s must be a number, got %r" % (name, v)) from None
    return float(v)


def _ints(name, vs):
    return [_int(name, v) for v in vs]


def _c_int(name, v):
    if not -(1 << 31) <= v < 1 << 31:
        raise ValueError("SamplingParams.%s is out of range: %d" % (name, v))
    return v


def _int32_array(name, vs):
    for v in vs:
        _c_int(name, v)
    return (ctypes.c_int32 * len(vs))(*vs)
