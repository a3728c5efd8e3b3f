/*
 * weights.h -- Hugging Face tensors -> the model's weight slots.
 *
 * Owns: struct pl_weights, every weight of a decoder as a struct pl_weight in
 * backend memory (made with the backend's map_weight, so on CPU they point
 * straight into the safetensors mmap: no copy). Which HF tensor fills which slot,
 * with which shape, is the architecture's tensor-spec table (model/arch.h): the
 * loader, the dummy generator and pl_weights_free all walk that one table.
 * Invariants after a successful load:
 *   - every slot the config needs is present with the exact shape the config
 *     implies (a missing or mis-shaped tensor is refused, naming the tensor);
 *   - slots the config does not use are {NULL}; lm_head == embed when tied;
 *   - every dtype is one the backend supports for the op that reads it.
 */
#ifndef PL_MODEL_WEIGHTS_H
#define PL_MODEL_WEIGHTS_H

#include "backend/backend.h"
#include "model/config.h"
#include "model/safetensors.h"

/* One expert's MLP (MoE layers). */
struct pl_expert_weights {
    struct pl_weight w_gate;     /* [moe_intermediate, hidden] */
    struct pl_weight w_up;       /* [moe_intermediate, hidden] */
    struct pl_weight w_down;     /* [hidden, moe_intermediate] */
};

struct pl_layer_weights {
    struct pl_weight attn_norm;  /* [hidden] */
    struct pl_weight wq;         /* [n_heads*head_dim, hidden] */
    struct pl_weight wk;         /* [n_kv_heads*head_dim, hidden] */
    struct pl_weight wv;         /* [n_kv_heads*head_dim, hidden] */
    struct pl_weight wo;         /* [hidden, n_heads*head_dim] */
    struct pl_weight bq, bk, bv; /* [q_dim], [kv_dim], [kv_dim] when attention_bias */
    struct pl_weight bo;         /* [hidden] when o_bias */
    struct pl_weight q_norm;     /* [head_dim] when qk_norm */
    struct pl_weight k_norm;     /* [head_dim] when qk_norm */
    struct pl_weight ffn_norm;   /* [hidden] */
    struct pl_weight w_gate;     /* [intermediate, hidden] */
    struct pl_weight w_up;       /* [intermediate, hidden] */
    struct pl_weight w_down;     /* [hidden, intermediate] */
    struct pl_weight b_gate, b_up, b_down; /* when mlp_bias */
    struct pl_weight attn_post_norm; /* [hidden] sandwich norm after attention (Gemma) */
    struct pl_weight ffn_post_norm;  /* [hidden] sandwich norm after the MLP (Gemma) */
    /* mixture of experts (layer_moe[l]) */
    struct pl_weight router;     /* [n_experts, hidden] */
    struct pl_expert_weights *experts; /* [n_experts] (owned by struct pl_weights) */
    struct pl_weight sh_gate, sh_up; /* [shared_inter, hidden] Qwen2-MoE shared expert */
    struct pl_weight sh_down;        /* [hidden, shared_inter] */
    struct pl_weight sh_router;      /* [1, hidden] shared_expert_gate */
};

struct pl_weights {
    struct pl_weight embed;      /* [vocab, hidden] */
    struct pl_weight final_norm; /* [hidden] */
    struct pl_weight lm_head;    /* [vocab, hidden]; same data as embed when tied */
    struct pl_layer_weights *layers; /* [n_layers] */
    int n_layers;
    struct pl_backend *be;       /* borrowed; used to unmap on free */
    size_t n_bytes;              /* total weight bytes (tied counted once) */
    bool allocated;              /* slots come from alloc (dummy weights), not map_weight */
    const struct pl_arch *arch;  /* whose tensor table filled the slots (set by the loaders) */
    int n_experts;               /* experts per MoE layer (each layer's experts array) */
    const void **converted;      /* [n_converted] slot data allocated for a dtype conversion
                                    or a gathered shard (freed, not unmapped); NULL when none */
    int n_converted;
};

/* The dtype to hold the weights in: as stored (the checkpoint's, auto) or one dtype
 * for every tensor, converted at load as torch's Tensor.to does (vLLM's --dtype). */
#define PL_WEIGHTS_DTYPE_AS_STORED (-1)

/* Maps every tensor the config's architecture needs (its tensor table) from st into
 * backend memory. st must outlive the weights when the backend maps without copying
 * (CPU). */
pl_status pl_weights_load(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                          struct pl_backend *be, struct pl_weights **out, struct pl_err *err);

/* As pl_weights_load, with every tensor in `dtype` (an enum pl_dtype, or
 * PL_WEIGHTS_DTYPE_AS_STORED): a tensor of another dtype is converted on the host and
 * copied into backend memory (the others are mapped as usual; (1 + w) norms stay fp32).
 * The backend must run every op on that dtype, else PL_STATUS_UNSUPPORTED naming it. */
pl_status pl_weights_load_as(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                             struct pl_backend *be, int dtype, struct pl_weights **out,
                             struct pl_err *err);

/* Dummy weights (vLLM's --load-format dummy): every tensor the config needs, with its
 * shape, allocated and filled on the backend from `seed` (norm weights 1, embeddings
 * U(-1, 1), matrices and biases U(-a, a), a = 1/sqrt(in_features)), in the config's dtype
 * when the backend's matmul runs it, else bf16. For benchmarks without a download. */
pl_status pl_weights_dummy(const struct pl_model_config *cfg, struct pl_backend *be,
                           uint64_t seed, struct pl_weights **out, struct pl_err *err);

/* As pl_weights_dummy, in `dtype` (PL_WEIGHTS_DTYPE_AS_STORED: the rule above). */
pl_status pl_weights_dummy_as(const struct pl_model_config *cfg, struct pl_backend *be,
                              uint64_t seed, int dtype, struct pl_weights **out,
                              struct pl_err *err);

/* Tensor parallelism: rank shard->rank's share of the model (model/shard.h), cfg being
 * that rank's sharded config (pl_shard_config); from st, or dummy (st NULL, from seed and
 * the rank). Each rank reads only its share of the checkpoint: column-parallel slots map
 * their rows, row-parallel slots gather their columns. dtype as in pl_weights_load_as.
 * shard NULL or of size 1: the whole model. */
struct pl_shard;
pl_status pl_weights_load_shard(const struct pl_model_config *cfg, const struct pl_shard *shard,
                                const struct pl_safetensors *st, struct pl_backend *be, int dtype,
                                uint64_t seed, struct pl_weights **out, struct pl_err *err);

void pl_weights_free(struct pl_weights *w);

#endif
