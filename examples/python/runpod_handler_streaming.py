# handler_streaming.py: A modified handler for streaming responses
import runpod
import time
from pagellm import LLM, SamplingParams, AsyncLLMEngine
from pagellm.engine.arg_utils import AsyncEngineArgs

# Use the Async engine for efficient streaming
engine_args = AsyncEngineArgs(model="mistralai/Mistral-7B-Instruct-v0.1")
engine = AsyncLLMEngine.from_engine_args(engine_args)


async def handler_streaming(job):
    """
    A streaming handler for RunPod Serverless.
    """
    job_input = job['input']
    prompt = job_input.get('prompt')
    if not prompt:
        yield {"error": "Missing 'prompt' in input"}
        return
    sampling_params = SamplingParams(
        temperature=job_input.get('temperature', 0.7),
        top_p=job_input.get('top_p', 0.95),
        max_tokens=job_input.get('max_tokens', 1024)
    )
    request_id = f"rp-{int(time.time())}"
    results_generator = engine.generate(prompt, sampling_params, request_id)
    # Stream tokens as they are generated
    async for request_output in results_generator:
        # For simplicity, we yield the new text chunk
        # In a real app, you might send just the delta
        yield {"text": request_output.outputs[0].text}

# Start the worker with the async handler
runpod.serverless.start({"handler": handler_streaming})
