/*
 * greedy.h -- a static-batch greedy generator over the paged KV cache.
 *
 * Owns: pl_greedy_generate, the interim driver the CLI and golden tests use
 * until the continuous-batching engine lands: every sequence gets its own
 * blocks from the runner's pool (a simple free list), prompts are prefilled
 * together in chunks of at most prefill_chunk tokens per sequence per step
 * (all sequences share one flat batch), then all unfinished sequences decode
 * together one token per step. Logprobs are log_softmax of the raw logits.
 */
#ifndef PL_ENGINE_GREEDY_H
#define PL_ENGINE_GREEDY_H

#include "engine/model_runner.h"

#include <stdbool.h>
#include <stdint.h>

struct pl_greedy_seq {
    /* inputs */
    const int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int n_logprobs;            /* top-K logprobs per generated token (0 = none) */
    const int32_t *stop_ids;   /* generation stops after emitting one of these */
    int n_stop_ids;
    /* outputs (malloc'ed by pl_greedy_generate; free with pl_greedy_seq_fini) */
    int32_t *out_tokens;       /* [n_out] */
    int n_out;
    int32_t *top_ids;          /* [n_out * n_logprobs], descending logprob */
    float *top_logprobs;       /* [n_out * n_logprobs] */
    double cumulative_logprob; /* sum of the chosen tokens' logprobs */
    bool finished_by_stop;     /* true: "stop", false: "length" */
};

/* prefill_chunk <= 0 means no chunking (whole prompts, within max_num_batched_tokens). */
pl_status pl_greedy_generate(struct pl_model_runner *r, struct pl_greedy_seq *seqs, int n_seqs,
                             int prefill_chunk, struct pl_err *err);

void pl_greedy_seq_fini(struct pl_greedy_seq *s);

#endif
