"""pagellm -- vLLM's Python API over the pagellm C engine (libpagellm.so, through ctypes).

    from pagellm import LLM, SamplingParams
    llm = LLM(model="path/to/model")
    outputs = llm.generate(["Hello"], SamplingParams(temperature=0.7, max_tokens=32))

The library is found in the source tree's build directory, installed, or at
$PAGELLM_LIBRARY (pagellm._lib). Documentation: docs/python.md.
"""
__version__ = "0.1.0"

from ._lib import (InvalidArgumentError, LibraryNotFoundError, NotFoundError,  # noqa: E402
                   OutOfMemoryError, PagellmError, UnsupportedError, library_path)
from .engine.arg_utils import AsyncEngineArgs, EngineArgs  # noqa: E402
from .engine.async_llm_engine import AsyncLLMEngine  # noqa: E402
from .llm import LLM  # noqa: E402
from .outputs import CompletionOutput, Logprob, RequestMetrics, RequestOutput  # noqa: E402
from .sampling_params import (GuidedDecodingParams, RequestOutputKind,  # noqa: E402
                              SamplingParams, StructuredOutputsParams)
from .tokenizer import Tokenizer  # noqa: E402

__all__ = [
    "LLM", "SamplingParams", "StructuredOutputsParams", "GuidedDecodingParams",
    "RequestOutputKind", "AsyncLLMEngine", "AsyncEngineArgs",
    "EngineArgs", "RequestOutput", "CompletionOutput", "Logprob", "RequestMetrics", "Tokenizer",
    "PagellmError", "InvalidArgumentError", "UnsupportedError", "NotFoundError",
    "OutOfMemoryError", "LibraryNotFoundError", "library_path", "__version__",
]
