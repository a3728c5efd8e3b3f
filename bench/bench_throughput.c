/*
 * bench_throughput.c -- offline throughput through the whole engine, in the spirit
 * of vLLM's benchmark_throughput: --num-prompts random prompts of --input-len
 * token ids, each generating exactly --output-len tokens (ignore_eos), all
 * submitted at once to pl_llm_generate (continuous batching, paged KV cache).
 *
 * Usage: bench_throughput --model DIR [--num-prompts 64] [--input-len 128]
 *        [--output-len 64] [--max-num-seqs 256] [--max-num-batched-tokens 2048]
 *        [--num-kv-blocks N] [--threads N] [--device cpu|cuda|auto] [--seed 0]
 *        [--tensor-parallel-size N]
 *        [--load-format auto|dummy] [--gpu-memory-utilization F] [--warmup 0|1]
 *        [--ttft 0|1] [--dtype auto|bfloat16|float16|float32]
 *        [--enforce-eager 0|1] (no decode graphs: with PAGELLM_CUDA_PROFILE=1, per-op times)
 *        [--allow-long-max-model-len 0|1]   (VLLM_ALLOW_LONG_MAX_MODEL_LEN=1 too: a context
 *        past the config's max_position_embeddings, e.g. 32K on the Llama-3-8B shape)
 *        [--quantization Q] [--kv-cache-dtype auto|fp8]   (vLLM's flags)
 * --warmup 1 runs one short request first (one-time costs such as GEMM plan
 * selection stay out of the timed run, as in vLLM's start-up).
 * --ttft 1 first times the same prompts with one output token each (the time to
 * the first token: prefill plus one step), then the full run; it also prints the
 * decode rate after the first token, (output - first tokens) / (full - first
 * seconds): for one long prompt, decode speed at that context (scenario S6).
 * Prints requests/s, total and output tokens/s, and the engine's KV statistics
 * (peak blocks, waste, preemptions) as one table; the last line is a markdown
 * row for docs/results.md.
 */
#include "cli/cli.h"
#include "pagellm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_throughput --model DIR [--num-prompts N] [--input-len N] "
                    "[--output-len N] [--max-num-seqs N] [--max-num-batched-tokens N] "
                    "[--num-kv-blocks N] [--threads N] [--device D] [--seed S] [--tensor-parallel-size N] "
                    "[--load-format F] [--gpu-memory-utilization F] [--warmup 0|1] [--ttft 0|1] [--dtype T] "
                    "[--enforce-eager 0|1] [--allow-long-max-model-len 0|1] [--quantization Q] "
                    "[--kv-cache-dtype D]\n");
    return 2;
}

int main(int argc, char **argv)
{
    struct pl_llm_params lp;
    pl_llm_params_default(&lp);
    pl_cli_llm_params_from_env(&lp); /* PAGELLM_CUDA_GEMV=0, VLLM_ALLOW_LONG_MAX_MODEL_LEN, ... */
    int num_prompts = 64, input_len = 128, output_len = 64, warmup = 0, ttft = 0;
    uint64_t seed = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--model"))
            lp.model = v;
        else if (!strcmp(a, "--num-prompts"))
            num_prompts = atoi(v);
        else if (!strcmp(a, "--input-len"))
            input_len = atoi(v);
        else if (!strcmp(a, "--output-len"))
            output_len = atoi(v);
        else if (!strcmp(a, "--max-num-seqs"))
            lp.max_num_seqs = atoi(v);
        else if (!strcmp(a, "--max-num-batched-tokens"))
            lp.max_num_batched_tokens = atoi(v);
        else if (!strcmp(a, "--num-kv-blocks"))
            lp.num_kv_blocks = atoi(v);
        else if (!strcmp(a, "--threads"))
            lp.n_threads = atoi(v);
        else if (!strcmp(a, "--device"))
            lp.device = v;
        else if (!strcmp(a, "--load-format"))
            lp.load_format = v;
        else if (!strcmp(a, "--gpu-memory-utilization"))
            lp.gpu_memory_utilization = atof(v);
        else if (!strcmp(a, "--tensor-parallel-size"))
            lp.tensor_parallel_size = atoi(v);
        else if (!strcmp(a, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(a, "--enforce-eager"))
            lp.enforce_eager = atoi(v) != 0;
        else if (!strcmp(a, "--allow-long-max-model-len"))
            lp.allow_long_max_model_len = atoi(v) != 0;
        else if (!strcmp(a, "--dtype"))
            lp.dtype = v;
        else if (!strcmp(a, "--quantization"))
            lp.quantization = v;
        else if (!strcmp(a, "--kv-cache-dtype"))
            lp.kv_cache_dtype = v;
        else if (!strcmp(a, "--ttft"))
            ttft = atoi(v);
        else if (!strcmp(a, "--seed"))
            seed = strtoull(v, NULL, 10);
        else
            return usage();
    }
    if (!lp.model || num_prompts < 1 || input_len < 1 || output_len < 1)
        return usage();
    lp.max_model_len = input_len + output_len;
    lp.enable_prefix_caching = false; /* random prompts share nothing; measure the engine */

    struct pl_llm *llm = NULL;
    if (pl_llm_new(&lp, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "bench_throughput: %s\n", pl_llm_errmsg(llm));
        pl_llm_free(llm);
        return 1;
    }
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(llm, &sp);
    sp.temperature = 0.0f; /* greedy: the sampler's cost is the cheapest, as in vLLM's runs */
    sp.max_tokens = output_len;
    sp.min_tokens = output_len;
    sp.ignore_eos = true;

    /* Random prompt ids below the vocabulary's smallest special ids (a splitmix64 stream). */
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)num_prompts * (size_t)input_len);
    struct pl_prompt *prompts = calloc((size_t)num_prompts, sizeof(*prompts));
    if (!ids || !prompts)
        return 1;
    uint64_t x = seed + 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < (size_t)num_prompts * (size_t)input_len; i++) {
        uint64_t z = (x += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        ids[i] = (int32_t)((z ^ (z >> 31)) % 256u); /* ids below 256 exist in every vocabulary we load */
    }
    for (int p = 0; p < num_prompts; p++) {
        prompts[p].token_ids = ids + (size_t)p * (size_t)input_len;
        prompts[p].n_token_ids = input_len;
    }

    struct pl_outputs out = {0};
    if (warmup) {
        struct pl_sampling_params wp = sp;
        wp.max_tokens = wp.min_tokens = 4;
        if (pl_llm_generate(llm, prompts, num_prompts < 8 ? num_prompts : 8, &wp, 1, &out) !=
            PL_STATUS_OK) {
            fprintf(stderr, "bench_throughput: warm-up: %s\n", pl_llm_errmsg(llm));
            return 1;
        }
        pl_outputs_free(&out);
    }
    double first_s = 0.0;
    if (ttft) {
        struct pl_sampling_params fp = sp;
        fp.max_tokens = fp.min_tokens = 1;
        double t = now_s();
        if (pl_llm_generate(llm, prompts, num_prompts, &fp, 1, &out) != PL_STATUS_OK) {
            fprintf(stderr, "bench_throughput: first-token run: %s\n", pl_llm_errmsg(llm));
            return 1;
        }
        first_s = now_s() - t;
        pl_outputs_free(&out);
    }
    double t0 = now_s();
    pl_status st = pl_llm_generate(llm, prompts, num_prompts, &sp, 1, &out);
    double secs = now_s() - t0;
    if (st != PL_STATUS_OK) {
        fprintf(stderr, "bench_throughput: %s\n", pl_llm_errmsg(llm));
        return 1;
    }
    long gen = 0;
    for (int i = 0; i < out.n; i++)
        for (int k = 0; k < out.items[i].n_outputs; k++)
            gen += out.items[i].outputs[k].n_token_ids;
    struct pl_llm_stats s;
    pl_llm_get_stats(llm, &s);

    double total_tps = ((double)num_prompts * input_len + (double)gen) / secs;
    printf("bench_throughput: %s, %d prompts x (%d in / %d out), device %s\n", lp.model,
           num_prompts, input_len, output_len, lp.device ? lp.device : "auto");
    printf("  %-28s %10.2f\n", "seconds", secs);
    printf("  %-28s %10.2f\n", "requests/s", num_prompts / secs);
    printf("  %-28s %10.1f\n", "total tokens/s", total_tps);
    printf("  %-28s %10.1f\n", "output tokens/s", (double)gen / secs);
    if (ttft) {
        printf("  %-28s %10.4f\n", "time to first token (s)", first_s);
        printf("  %-28s %10.1f\n", "decode tokens/s after first",
               secs > first_s && gen > num_prompts ? (double)(gen - num_prompts) / (secs - first_s)
                                                   : 0.0);
    }
    printf("  %-28s %10d / %d\n", "KV blocks peak / total", s.kv_blocks_peak_used,
           s.kv_blocks_total);
    printf("  %-28s %10.4f\n", "KV waste (time-averaged)", s.kv_waste);
    printf("  %-28s %10llu\n", "preemptions", (unsigned long long)s.num_preemptions);
    printf("| offline throughput, %d x %d in / %d out | %.1f output tok/s | KV waste %.4f |\n",
           num_prompts, input_len, output_len, (double)gen / secs, s.kv_waste);
    pl_outputs_free(&out);
    free(prompts);
    free(ids);
    pl_llm_free(llm);
    return gen == (long)num_prompts * output_len ? 0 : 1;
}
