/*
 * batch_builder.h -- a scheduler plan -> struct pl_batch (flat arrays).
 *
 * Owns: struct pl_batch_builder and its arena, sized once from the engine's
 * limits (max_num_batched_tokens, max_num_seqs, max_blocks_per_seq) and reset
 * at every build, so building a step's batch never allocates. The batch's
 * arrays point into the arena and stay valid until the next build.
 *
 * Layout: sequences in plan order (decodes first, then prefill chunks); each
 * sequence's query tokens contiguous. For plan entry s with start p0 and n
 * new tokens: positions p0 .. p0+n-1, token_ids = seq->tokens[pos],
 * context_lens[s] = seq_lens[t] = p0 + n, slot_mapping[t] from the block
 * table, block_tables row s = the sequence's block ids then -1 padding. A
 * sampling entry contributes n_samples logits rows, all equal to the index of
 * its last token (an n > 1 group's first sample repeats the row n times so
 * sampler row k feeds sequence k; pl_scheduler_update reads them in the same
 * order).
 */
#ifndef PL_ENGINE_BATCH_BUILDER_H
#define PL_ENGINE_BATCH_BUILDER_H

#include "engine/batch.h"
#include "engine/scheduler.h"
#include "util/err.h"

struct pl_batch_builder_params {
    int block_size;             /* tokens per KV block */
    int max_num_batched_tokens; /* tokens per batch */
    int max_num_seqs;           /* sequences (and logits rows) per batch */
    int max_blocks_per_seq;     /* block_tables row width: ceil(max_model_len / block_size) */
};

struct pl_batch_builder;

/* Sizes the arena from the limits. PL_STATUS_INVALID_ARGUMENT for non-positive limits. */
pl_status pl_batch_builder_new(const struct pl_batch_builder_params *p,
                               struct pl_batch_builder **out, struct pl_err *err);
void pl_batch_builder_free(struct pl_batch_builder *bb);

/*
 * Fills *b from plan (plan and its sequences unchanged). PL_STATUS_INTERNAL
 * when the plan exceeds the limits the builder was sized for or an entry
 * names positions without a slot (scheduler bug). An empty plan gives a batch
 * with n_tokens = n_seqs = 0.
 */
pl_status pl_batch_builder_build(struct pl_batch_builder *bb, const struct pl_sched_plan *plan,
                                 struct pl_batch *b, struct pl_err *err);

/* The arena's high-water mark in bytes (for the start-up log and tests). */
size_t pl_batch_builder_peak_bytes(const struct pl_batch_builder *bb);

#endif
