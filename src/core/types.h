/*
 * types.h -- the plain data types that cross the engine / model / backend
 * boundaries, in one neutral header.
 *
 * Owns: struct pl_batch (one engine step as flat arrays), struct
 * pl_sampler_row (what sampling one row needs besides its logits) and
 * struct pl_sample_result (a sampled token and its logprobs). Nothing here
 * has behaviour: the engine fills batches and sampler rows, the model runner
 * uploads and runs them, the backends' sample ops fill results. Keeping the
 * types here lets backend.h and the model headers name them without
 * including engine headers (no engine -> model -> engine or backend ->
 * engine include cycles).
 *
 * Batch invariants (checked by pl_batch_validate, engine/batch.h):
 *   - 0 = cu_seqlens_q[0] <= ... <= cu_seqlens_q[n_seqs] = n_tokens;
 *   - q_len_s = cu_seqlens_q[s+1] - cu_seqlens_q[s] >= 1 and <= context_lens[s];
 *   - positions of sequence s's tokens are context_lens[s]-q_len_s .. context_lens[s]-1;
 *   - slot_mapping[t] = block_tables[s][pos / block_size] * block_size + pos % block_size;
 *   - logits_rows are token indices (usually each sequence's last token);
 *   - hidden_rows are token indices too (pooling requests: the rows whose final
 *     hidden state, after the final norm, the run also returns in `hidden`).
 */
#ifndef PL_CORE_TYPES_H
#define PL_CORE_TYPES_H

#include "pagellm.h"

#include <stdint.h>

/* One engine step's work, host side. Sequences appear in the order of cu_seqlens_q;
 * a sequence's query tokens are contiguous. */
struct pl_batch {
    int n_tokens;
    int n_seqs;
    int32_t *token_ids;      /* [n_tokens] */
    int32_t *positions;      /* [n_tokens] */
    int32_t *seq_lens;       /* [n_tokens]: context length of the token's sequence (dynamic rope) */
    int32_t *slot_mapping;   /* [n_tokens] */
    int32_t *cu_seqlens_q;   /* [n_seqs + 1] */
    int32_t *context_lens;   /* [n_seqs] */
    int32_t *block_tables;   /* [n_seqs, max_blocks_per_seq], unused entries -1 */
    int max_blocks_per_seq;
    int max_q_len;
    int max_context_len;
    int32_t *logits_rows;    /* [n_logits] token indices whose logits are wanted */
    int n_logits;
    /* Pooling (engine.h): rows whose final hidden state is wanted, and where the run
     * writes them: hidden [n_hidden, hidden_size] fp32 host memory, rows in
     * hidden_rows order. n_hidden 0 (the default): none. */
    int32_t *hidden_rows;    /* [n_hidden] token indices */
    int n_hidden;
    float *hidden;           /* output, [n_hidden, hidden_size] */
    /* Called (when set) once per run that samples on the backend, after the forward's
     * kernels are launched and before the sample op reads the sampler rows' token masks:
     * the engine computes the masks there, on the host, while an asynchronous backend
     * runs the layers. NULL: the masks are ready. */
    void (*before_sample)(void *user);
    void *before_sample_user;
};

struct pl_rng; /* util/rng.h */

/* What one row needs besides its logits. Everything is borrowed. */
struct pl_sampler_row {
    const struct pl_sampling_params *params; /* validated (pl_sampling_params_validate) */
    const int32_t *prompt_ids;  /* [n_prompt]: for repetition_penalty */
    int n_prompt;
    const int32_t *output_ids;  /* [n_output]: tokens generated so far (penalties, min_tokens) */
    int n_output;
    const int32_t *eos_ids;     /* [n_eos]: masked with stop_token_ids while n_output < min_tokens */
    int n_eos;
    struct pl_rng *rng;         /* the request's own generator (seeded requests), advanced in
                                   place; NULL: draw from the sampler's generator */
    const uint32_t *token_mask; /* [ceil(vocab_size / 32)] packed: bit i % 32 of word i / 32
                                   set = token i may be sampled (structured output, applied
                                   with allowed_token_ids); NULL: no mask */
};

/* One sampled token and, when params->logprobs >= 0, its logprobs. Entries of top_ids and
 * top_logprobs past n_top are unspecified: the engine copies n_top of them into outputs and
 * zeroes the rest (engine.c, lp_entry), the one place that makes outputs defined in every
 * byte whichever sampler (host or device) made the result. */
struct pl_sample_result {
    int32_t token_id;
    float logprob;  /* raw log_softmax of token_id; 0 when logprobs were not requested */
    int rank;       /* vLLM's rank: how many tokens have a raw logprob >= token_id's (>= 1) */
    int n_top;      /* = params->logprobs (or vocab_size when smaller); 0 when not requested */
    int32_t top_ids[PL_MAX_LOGPROBS];  /* [n_top] most likely raw tokens, descending, ties by id */
    float top_logprobs[PL_MAX_LOGPROBS]; /* [n_top] their raw logprobs */
};

#endif
