/*
 * shard.c -- the tensor-parallel sharding rule (see shard.h).
 */
#include "model/shard.h"

bool pl_shard_dim_split(enum pl_dim d)
{
    switch (d) {
    case PL_DIM_Q:
    case PL_DIM_KV:
    case PL_DIM_INTER:
    case PL_DIM_MOE_INTER:
    case PL_DIM_SHARED_INTER:
    case PL_DIM_VOCAB:
        return true;
    default:
        return false;
    }
}

static pl_status divides(int size, int n, const char *what, struct pl_err *err)
{
    if (n % size == 0)
        return PL_STATUS_OK;
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                      "tensor_parallel_size %d does not divide %s %d (each rank takes an equal "
                      "share)", size, what, n);
}

pl_status pl_shard_config(const struct pl_model_config *full, int rank, int size,
                          struct pl_model_config *out, struct pl_err *err)
{
    if (size < 1 || rank < 0 || rank >= size)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "tensor parallel rank %d of %d",
                          rank, size);
    *out = *full;
    if (size == 1)
        return PL_STATUS_OK;
    pl_status st = divides(size, full->n_heads, "num_attention_heads", err);
    if (st == PL_STATUS_OK && size <= full->n_kv_heads)
        st = divides(size, full->n_kv_heads, "num_key_value_heads", err);
    if (st == PL_STATUS_OK && size > full->n_kv_heads && size % full->n_kv_heads != 0)
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "tensor_parallel_size %d is larger than num_key_value_heads %d but not a "
                        "multiple of it (the KV heads are replicated over an equal number of "
                        "ranks each)", size, full->n_kv_heads);
    if (st == PL_STATUS_OK && full->intermediate_size > 0)
        st = divides(size, full->intermediate_size, "intermediate_size", err);
    if (st == PL_STATUS_OK && full->n_experts > 0)
        st = divides(size, full->moe_intermediate_size, "moe_intermediate_size", err);
    if (st == PL_STATUS_OK && full->shared_expert_intermediate_size > 0)
        st = divides(size, full->shared_expert_intermediate_size,
                     "shared_expert_intermediate_size", err);
    if (st == PL_STATUS_OK)
        st = divides(size, full->vocab_size, "vocab_size", err);
    if (st != PL_STATUS_OK)
        return st;
    out->n_heads = full->n_heads / size;
    out->n_kv_heads = size <= full->n_kv_heads ? full->n_kv_heads / size : 1;
    out->intermediate_size = full->intermediate_size / size;
    out->moe_intermediate_size = full->moe_intermediate_size / size;
    out->shared_expert_intermediate_size = full->shared_expert_intermediate_size / size;
    out->vocab_size = full->vocab_size / size;
    return PL_STATUS_OK;
}

int64_t pl_shard_start(const struct pl_shard *s, const struct pl_model_config *local,
                       enum pl_dim d)
{
    if (!s || s->size <= 1 || !pl_shard_dim_split(d))
        return 0;
    if (d == PL_DIM_KV) /* covers replication: r KV / N is the head rank r's queries read */
        return (int64_t)s->rank * s->full->n_kv_heads / s->size * s->full->head_dim;
    return (int64_t)s->rank * pl_arch_dim(local, d);
}
