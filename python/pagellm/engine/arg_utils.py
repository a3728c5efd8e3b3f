"""arg_utils -- vLLM's EngineArgs / AsyncEngineArgs: what an engine is created with.

Owns: the engine options with vLLM's names and defaults, which values pagellm
refuses (with a message saying why), and their translation into the C struct
pl_llm_params. A default of None means "the C library's default"
(pl_llm_params_default), so each default lives in one place.
"""
import ctypes
import json
from dataclasses import dataclass, fields
from typing import Any, Dict, Optional

from .. import _hub, _lib

_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")


@dataclass
class EngineArgs:
    """Options of LLM(...) and AsyncLLMEngine.from_engine_args(AsyncEngineArgs(...)).

    model: a model directory or a Hugging Face Hub id (looked up in the Hub cache, else
    downloaded with `pagellm download`). tokenizer: a tokenizer directory (None: the
    model's). dtype: "auto", "bfloat16", "float16"/"half", "float32"/"float".
    max_model_len (None: the model's), max_num_seqs, max_num_batched_tokens, block_size,
    enable_prefix_caching, enable_chunked_prefill (None: pagellm's defaults).
    seed: the generator of unseeded requests. device: "auto", "cpu" or "cuda".
    gpu_memory_utilization: CUDA's share of GPU memory. load_format: "auto",
    "safetensors" or "dummy". generation_config: "auto" or "vllm";
    override_generation_config: a dict of sampling defaults. enforce_eager: no CUDA
    graphs. pagellm's own: kv_cache_bytes (KV memory on the CPU backend), n_threads (CPU
    threads, 0: one per core), allow_long_max_model_len, and the reference paths
    host_sampling, cpu_scalar_kernels, cuda_cublas_only (docs/library.md). Options pagellm cannot honour (tensor parallelism,
    LoRA, ...) are refused when the engine is created; quantization and kv_cache_dtype go
    to the library (docs/quantization.md).
    """
    model: str = "facebook/opt-125m"
    tokenizer: Optional[str] = None
    tokenizer_mode: str = "auto"
    skip_tokenizer_init: bool = False
    trust_remote_code: bool = False
    download_dir: Optional[str] = None
    load_format: str = "auto"
    dtype: Any = "auto"
    kv_cache_dtype: str = "auto"
    seed: Optional[int] = 0
    max_model_len: Optional[int] = None
    distributed_executor_backend: Optional[str] = None
    pipeline_parallel_size: int = 1
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    block_size: Optional[int] = None
    enable_prefix_caching: Optional[bool] = None
    swap_space: float = 4
    cpu_offload_gb: float = 0
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: Optional[int] = None
    max_num_seqs: Optional[int] = None
    max_logprobs: int = 20
    disable_log_stats: bool = False
    revision: Optional[str] = None
    tokenizer_revision: Optional[str] = None
    quantization: Optional[str] = None
    enforce_eager: bool = False
    max_seq_len_to_capture: int = 8192
    disable_custom_all_reduce: bool = False
    device: str = "auto"
    num_gpu_blocks_override: Optional[int] = None
    enable_chunked_prefill: Optional[bool] = None
    long_prefill_token_threshold: int = 0
    generation_config: str = "auto"
    override_generation_config: Optional[Dict[str, Any]] = None
    enable_lora: bool = False
    task: str = "auto"
    hf_token: Optional[str] = None
    hf_overrides: Optional[Dict[str, Any]] = None
    compilation_config: Any = None
    # pagellm's own
    kv_cache_bytes: Optional[int] = None
    n_threads: int = 0
    allow_long_max_model_len: bool = False
    host_sampling: bool = False
    cpu_scalar_kernels: bool = False
    cuda_cublas_only: bool = False

    def _check(self):
        """Refuses what pagellm cannot do, naming the option."""
        def refuse(name, why):
            raise ValueError("%s=%r is not supported by pagellm: %s"
                             % (name, getattr(self, name), why))
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("model must be a model directory or a Hub id (a non-empty str)")
        tp = self.tensor_parallel_size
        if tp is not None and (isinstance(tp, bool) or not isinstance(tp, int) or tp < 1):
            raise ValueError("tensor_parallel_size must be a positive int, got %r" % (tp,))
        for name in ("pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, name) not in (1, None):
                refuse(name, "only tensor parallelism is implemented (docs/parallel.md)")
        if self.distributed_executor_backend not in (None, "mp", "uni"):
            refuse("distributed_executor_backend", "a model runs on one device")
        for name in ("quantization", "kv_cache_dtype"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, str):
                raise ValueError("%s must be a str or None, got %r" % (name, v))
        if self.tokenizer_mode not in ("auto", "hf"):
            refuse("tokenizer_mode", "pagellm reads tokenizer.json (tokenizer_mode 'auto')")
        if self.skip_tokenizer_init:
            refuse("skip_tokenizer_init", "the tokenizer is always loaded when present")
        if self.cpu_offload_gb:
            refuse("cpu_offload_gb", "weights stay on the device")
        if self.enable_lora:
            refuse("enable_lora", "LoRA adapters are not implemented")
        if self.max_logprobs != 20:
            refuse("max_logprobs", "the limit is fixed at vLLM's default, 20")
        if self.task not in ("auto", "generate"):
            refuse("task", "the Python package runs generation only")
        if self.hf_overrides:
            refuse("hf_overrides", "config.json is read as it is")
        dtype = str(self.dtype)
        if dtype.startswith("torch."):
            dtype = dtype[len("torch."):]
        if dtype not in _DTYPES:
            refuse("dtype", "use one of %s" % ", ".join(_DTYPES))
        self.dtype = dtype
        for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "block_size",
                     "num_gpu_blocks_override", "kv_cache_bytes"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise ValueError("%s must be a non-negative int or None, got %r" % (name, v))
        if self.seed is not None and not 0 <= int(self.seed) < 1 << 64:
            raise ValueError("seed must fit in 64 bits unsigned, got %r" % self.seed)

    def _to_c(self, model_dir, tokenizer_dir):
        """(struct pl_llm_params, keep-alive list) for these options."""
        lib = _lib.load()
        p = _lib.CLLMParams()
        lib.pl_llm_params_default(ctypes.byref(p))
        keep = []

        def s(v):
            b = v.encode("utf-8")
            keep.append(b)
            return b
        p.model = s(model_dir)
        if tokenizer_dir:
            p.tokenizer = s(tokenizer_dir)
        p.dtype = s(self.dtype)
        p.device = s(self.device)
        p.load_format = s(self.load_format)
        p.generation_config = s(self.generation_config)
        if self.override_generation_config:
            p.override_generation_config = s(json.dumps(self.override_generation_config))
        for name, cname in (("max_model_len", "max_model_len"), ("max_num_seqs", "max_num_seqs"),
                            ("max_num_batched_tokens", "max_num_batched_tokens"),
                            ("block_size", "block_size"),
                            ("num_gpu_blocks_override", "num_kv_blocks"),
                            ("kv_cache_bytes", "kv_cache_bytes"),
                            ("enable_prefix_caching", "enable_prefix_caching"),
                            ("enable_chunked_prefill", "enable_chunked_prefill")):
            v = getattr(self, name)
            if v is not None:
                setattr(p, cname, v)
        p.long_prefill_token_threshold = self.long_prefill_token_threshold
        p.seed = int(self.seed or 0)
        p.gpu_memory_utilization = float(self.gpu_memory_utilization)
        p.n_threads = int(self.n_threads)
        p.tensor_parallel_size = int(self.tensor_parallel_size or 1)
        if self.quantization is not None:
            p.quantization = s(self.quantization)
        if self.kv_cache_dtype is not None:
            p.kv_cache_dtype = s(self.kv_cache_dtype)
        for name in ("allow_long_max_model_len", "enforce_eager", "host_sampling",
                     "cpu_scalar_kernels", "cuda_cublas_only"):
            setattr(p, name, bool(getattr(self, name)))
        return p, keep

    def _create_core(self):
        """Resolves the model and starts an engine (pagellm._engine.EngineCore)."""
        from .._engine import EngineCore
        self._check()
        lib_path = _lib.library_path()
        model_dir = _hub.resolve_model(self.model, self.revision, self.download_dir, lib_path)
        tok_dir = None
        if self.tokenizer and self.tokenizer != self.model:
            tok_dir = _hub.resolve_model(self.tokenizer, self.tokenizer_revision,
                                         self.download_dir, lib_path)
        cparams, keep = self._to_c(model_dir, tok_dir)
        return EngineCore(cparams, keep)

    @classmethod
    def _names(cls):
        return {f.name for f in fields(cls)}


@dataclass
class AsyncEngineArgs(EngineArgs):
    """EngineArgs of AsyncLLMEngine (vLLM's AsyncEngineArgs)."""
    disable_log_requests: bool = False
