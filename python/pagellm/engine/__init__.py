"""pagellm.engine -- vLLM's engine-level names: EngineArgs, AsyncEngineArgs, AsyncLLMEngine."""
from .arg_utils import AsyncEngineArgs, EngineArgs
from .async_llm_engine import AsyncLLMEngine

__all__ = ["AsyncEngineArgs", "AsyncLLMEngine", "EngineArgs"]
