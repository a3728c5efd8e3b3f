# main.py: A simple script to demonstrate vLLM's core API
from pagellm import LLM, SamplingParams

# A list of prompts to process in a batch
prompts = [
    "The best way to learn about AI is",
    "San Francisco is a city known for",
    "What is the capital of France?",
    "Write a short story about a robot who discovers music.",
]
# Define the sampling parameters for generation
# These control the creativity and determinism of the output
sampling_params = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=100)
# Initialize the LLM engine with a model from the Hugging Face Hub
# This could be a model from Mistral AI, Meta AI (Llama), etc.
# vLLM will automatically download the model if not cached.
print("Loading the LLM model...")
llm = LLM(model="mistralai/Mistral-7B-Instruct-v0.1")
print("Model loaded successfully.")
# Run the inference on the batch of prompts
print("Generating outputs...")
outputs = llm.generate(prompts, sampling_params)
print("Generation complete.")
# Print the generated text for each prompt
for output in outputs:
    prompt = output.prompt
    generated_text = output.outputs[0].text
    print(f"---")
    print(f"Prompt: {prompt!r}")
    print(f"Generated: {generated_text!r}")
