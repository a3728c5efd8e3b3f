"""outputs -- vLLM's output classes: RequestOutput, CompletionOutput, Logprob, RequestMetrics.

Owns: the Python shapes of a request's results (field names as vLLM's
vllm/outputs.py and vllm/sequence.py). They are plain data: the engine thread
(pagellm/_engine.py) builds them from the C library's deltas.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union


@dataclass
class Logprob:
    """One token's logprob at a position (vLLM's Logprob): the log_softmax of the raw
    logits, its rank among all tokens (1 = most likely) and the token's text."""
    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


# vLLM's shapes: a list over positions of {token_id: Logprob}; prompt logprobs start with None.
SampleLogprobs = List[Dict[int, Logprob]]
PromptLogprobs = List[Optional[Dict[int, Logprob]]]


@dataclass
class CompletionOutput:
    """One sample of a request (vLLM's CompletionOutput).

    text and token_ids are cumulative (everything generated so far) unless the request's
    SamplingParams.output_kind is DELTA. logprobs is None unless SamplingParams.logprobs
    was set; cumulative_logprob likewise. finish_reason: None while running, else "stop",
    "length", "abort" or "error"; stop_reason: the stop string or stop token id that
    ended the sample, else None."""
    index: int
    text: str
    token_ids: List[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[SampleLogprobs]
    finish_reason: Optional[str] = None
    stop_reason: Union[int, str, None] = None
    lora_request: None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestMetrics:
    """Times of a request's life (seconds since the epoch, time.time()), as vLLM's."""
    arrival_time: float
    last_token_time: float
    first_scheduled_time: Optional[float] = None
    first_token_time: Optional[float] = None
    time_in_queue: Optional[float] = None
    finished_time: Optional[float] = None


@dataclass
class RequestOutput:
    """One request's output (vLLM's RequestOutput). prompt is None for token-id prompts;
    outputs holds the n samples, by index; finished is True once every sample ended.
    prompt_logprobs is None unless SamplingParams.prompt_logprobs was set (then its first
    entry is None: the first prompt token has no logprob)."""
    request_id: str
    prompt: Optional[str]
    prompt_token_ids: Optional[List[int]]
    prompt_logprobs: Optional[PromptLogprobs]
    outputs: List[CompletionOutput]
    finished: bool
    metrics: Optional[RequestMetrics] = None
    num_cached_tokens: Optional[int] = None
    encoder_prompt: None = None
    encoder_prompt_token_ids: None = None
    lora_request: None = None
    kv_transfer_params: None = None
    # pagellm: the engine's message when it failed this request (finish_reason "error")
    error: Optional[str] = field(default=None, repr=False)
