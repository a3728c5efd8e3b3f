# handler.py: The worker script for a RunPod Serverless endpoint
import runpod
from pagellm import LLM, SamplingParams

# Initialize the LLM engine globally on worker start
# This ensures the model is loaded into GPU memory only once.
llm = LLM(model="mistralai/Mistral-7B-Instruct-v0.1", trust_remote_code=True)


def handler(job):
    """
    The handler function that will be called by the RunPod serverless worker.
    """
    job_input = job['input']
    # Validate and extract prompts from the job input
    if 'prompts' not in job_input:
        return {"error": "Missing 'prompts' in input"}
    prompts = job_input['prompts']
    # Extract sampling parameters or use defaults
    # This allows users to customize generation per API call
    temperature = job_input.get('temperature', 0.7)
    top_p = job_input.get('top_p', 0.95)
    max_tokens = job_input.get('max_tokens', 256)
    sampling_params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens
    )
    # Run inference and generate outputs
    outputs = llm.generate(prompts, sampling_params)
    # Format the results to be returned as JSON
    results = []
    for output in outputs:
        results.append({
            "prompt": output.prompt,
            "text": output.outputs[0].text
        })
    return {"results": results}


# Start the RunPod serverless worker
runpod.serverless.start({"handler": handler})
