/*
 * shard.h -- Megatron-style tensor parallelism: which dimensions are split
 * across the ranks, and one rank's share of the config and of each tensor.
 *
 * Owns the sharding rule, in one place (the loader and the model runner ask it):
 *   - split dimensions: attention heads (PL_DIM_Q), KV heads (PL_DIM_KV), the MLP
 *     width (PL_DIM_INTER, the experts' PL_DIM_MOE_INTER, the shared expert's
 *     PL_DIM_SHARED_INTER) and the vocabulary (PL_DIM_VOCAB); everything else
 *     (hidden, head_dim, the router's experts) is whole on every rank;
 *   - a tensor whose rows are a split dimension is column-parallel (q/k/v,
 *     gate/up and their biases, the embedding and the LM head: a contiguous row
 *     range of the checkpoint); one whose columns are is row-parallel (o_proj,
 *     down: a column range, gathered on the host); the rest is replicated;
 *   - rank r holds heads [r H/N, (r+1) H/N) and KV heads [r KV/N, ...) when N
 *     divides KV; when N exceeds KV (N a multiple of KV), one KV head each, head
 *     r KV / N (the one its query heads read: replicated over N/KV ranks);
 *   - vocabulary rows [r V/N, (r+1) V/N): the embedding gives zero rows for ids
 *     outside them (the all-reduce adds the owner's row), the LM head gives that
 *     slice of the logits.
 * Invariant: a sharded config is an ordinary config (every check of the model
 * runner holds for it) whose split dimensions are the rank's share.
 */
#ifndef PL_MODEL_SHARD_H
#define PL_MODEL_SHARD_H

#include "model/arch.h"

struct pl_shard {
    int rank, size;                     /* size 1: the whole model */
    const struct pl_model_config *full; /* the unsharded config (the checkpoint's shapes) */
};

/* Whether tensor parallelism splits dimension d. */
bool pl_shard_dim_split(enum pl_dim d);

/* out = rank's share of full for `size` ranks. PL_STATUS_INVALID_ARGUMENT naming the
 * dimension when size does not divide it (heads, KV heads or, when size exceeds them,
 * size not a multiple of them, intermediate sizes, the vocabulary). */
pl_status pl_shard_config(const struct pl_model_config *full, int rank, int size,
                          struct pl_model_config *out, struct pl_err *err);

/* The first index of the rank's share along d, counted in the full dimension (0 for a
 * dimension that is not split). local: the rank's sharded config. */
int64_t pl_shard_start(const struct pl_shard *s, const struct pl_model_config *local,
                       enum pl_dim d);

#endif
