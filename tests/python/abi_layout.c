/*
 * abi_layout.c -- prints the size and field offsets of every public struct the
 * Python package mirrors (python/pagellm/_lib.py), as the C compiler lays them
 * out: one "struct NAME SIZE" line per struct, then "field NAME.FIELD OFFSET".
 * test_abi.py compares them with ctypes' layout, so a change to
 * include/pagellm.h that the mirrors miss fails the suite.
 */
#include "pagellm.h"

#include <stddef.h>
#include <stdio.h>

#define S(type) printf("struct %s %zu\n", #type, sizeof(struct type))
#define F(type, field) printf("field %s.%s %zu\n", #type, #field, offsetof(struct type, field))

int main(void)
{
    S(pl_logit_bias);
    F(pl_logit_bias, token_id); F(pl_logit_bias, bias);

    S(pl_sampling_params);
    F(pl_sampling_params, n); F(pl_sampling_params, presence_penalty);
    F(pl_sampling_params, frequency_penalty); F(pl_sampling_params, repetition_penalty);
    F(pl_sampling_params, temperature); F(pl_sampling_params, top_p);
    F(pl_sampling_params, top_k); F(pl_sampling_params, min_p);
    F(pl_sampling_params, has_seed); F(pl_sampling_params, seed);
    F(pl_sampling_params, stop); F(pl_sampling_params, n_stop);
    F(pl_sampling_params, stop_token_ids); F(pl_sampling_params, n_stop_token_ids);
    F(pl_sampling_params, include_stop_str_in_output); F(pl_sampling_params, ignore_eos);
    F(pl_sampling_params, max_tokens); F(pl_sampling_params, min_tokens);
    F(pl_sampling_params, logprobs); F(pl_sampling_params, prompt_logprobs);
    F(pl_sampling_params, skip_special_tokens);
    F(pl_sampling_params, spaces_between_special_tokens);
    F(pl_sampling_params, logit_bias); F(pl_sampling_params, n_logit_bias);
    F(pl_sampling_params, allowed_token_ids); F(pl_sampling_params, n_allowed_token_ids);
    F(pl_sampling_params, use_beam_search); F(pl_sampling_params, beam_width);
    F(pl_sampling_params, length_penalty); F(pl_sampling_params, early_stopping);
    F(pl_sampling_params, constraint_kind); F(pl_sampling_params, constraint);
    F(pl_sampling_params, whitespace_pattern);
    F(pl_sampling_params, owned);

    S(pl_logprob_entry);
    F(pl_logprob_entry, token_id); F(pl_logprob_entry, logprob); F(pl_logprob_entry, rank);
    F(pl_logprob_entry, n_top); F(pl_logprob_entry, top_ids); F(pl_logprob_entry, top_logprobs);

    S(pl_completion_output);
    F(pl_completion_output, index); F(pl_completion_output, text);
    F(pl_completion_output, text_len); F(pl_completion_output, token_ids);
    F(pl_completion_output, n_token_ids); F(pl_completion_output, has_logprobs);
    F(pl_completion_output, cumulative_logprob); F(pl_completion_output, logprobs);
    F(pl_completion_output, finish_reason); F(pl_completion_output, stop_reason_kind);
    F(pl_completion_output, stop_str); F(pl_completion_output, stop_token_id);

    S(pl_request_metrics);
    F(pl_request_metrics, arrival_time); F(pl_request_metrics, first_scheduled_time);
    F(pl_request_metrics, first_token_time); F(pl_request_metrics, last_token_time);
    F(pl_request_metrics, prev_token_time); F(pl_request_metrics, finished_time);

    S(pl_request_output);
    F(pl_request_output, request_id); F(pl_request_output, prompt);
    F(pl_request_output, prompt_token_ids); F(pl_request_output, n_prompt_token_ids);
    F(pl_request_output, num_cached_tokens); F(pl_request_output, has_prompt_logprobs);
    F(pl_request_output, prompt_logprobs); F(pl_request_output, outputs);
    F(pl_request_output, n_outputs); F(pl_request_output, finished);
    F(pl_request_output, embedding); F(pl_request_output, n_embedding);
    F(pl_request_output, error); F(pl_request_output, error_status);
    F(pl_request_output, request_num); F(pl_request_output, finish_reason);
    F(pl_request_output, metrics);

    S(pl_outputs);
    F(pl_outputs, items); F(pl_outputs, n);

    S(pl_llm_params);
    F(pl_llm_params, model); F(pl_llm_params, tokenizer); F(pl_llm_params, dtype);
    F(pl_llm_params, max_model_len); F(pl_llm_params, max_num_seqs);
    F(pl_llm_params, max_num_batched_tokens); F(pl_llm_params, block_size);
    F(pl_llm_params, num_kv_blocks); F(pl_llm_params, kv_cache_bytes);
    F(pl_llm_params, enable_prefix_caching); F(pl_llm_params, enable_chunked_prefill);
    F(pl_llm_params, long_prefill_token_threshold); F(pl_llm_params, seed);
    F(pl_llm_params, device); F(pl_llm_params, gpu_memory_utilization);
    F(pl_llm_params, n_threads); F(pl_llm_params, generation_config);
    F(pl_llm_params, load_format); F(pl_llm_params, override_generation_config);
    F(pl_llm_params, allow_long_max_model_len); F(pl_llm_params, enforce_eager);
    F(pl_llm_params, host_sampling); F(pl_llm_params, cpu_scalar_kernels);
    F(pl_llm_params, cuda_cublas_only); F(pl_llm_params, tensor_parallel_size);
    F(pl_llm_params, quantization); F(pl_llm_params, kv_cache_dtype);

    S(pl_prompt);
    F(pl_prompt, text); F(pl_prompt, token_ids); F(pl_prompt, n_token_ids);

    S(pl_chat_options);
    F(pl_chat_options, add_generation_prompt); F(pl_chat_options, continue_final_message);
    F(pl_chat_options, chat_template); F(pl_chat_options, chat_template_kwargs);

    S(pl_llm_stats);
    F(pl_llm_stats, kv_blocks_total); F(pl_llm_stats, kv_blocks_used);
    F(pl_llm_stats, kv_blocks_peak_used); F(pl_llm_stats, kv_blocks_cached_free);
    F(pl_llm_stats, kv_waste); F(pl_llm_stats, prefix_cache_hit_rate);
    F(pl_llm_stats, num_preemptions); F(pl_llm_stats, num_steps);
    F(pl_llm_stats, prompt_tokens); F(pl_llm_stats, generation_tokens);
    F(pl_llm_stats, num_waiting); F(pl_llm_stats, num_running);
    F(pl_llm_stats, seconds); F(pl_llm_stats, tokens_per_second);
    return 0;
}
