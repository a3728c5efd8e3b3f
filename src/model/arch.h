/*
 * arch.h -- the architecture record: everything pagellm knows about one
 * model family, in one place.
 *
 * Owns: struct pl_arch and the pieces it is made of:
 *   - the Hugging Face `architectures` names (and model_type values) it answers to;
 *   - its config defaults (struct pl_arch_defaults) and fix-ups (a hook that reads
 *     the family's own config.json keys after the common ones);
 *   - its tensor-spec table: per tensor the HF name pattern, the weight slot it
 *     fills, the shape rule, the dtype rule (the op that reads it must run its
 *     dtype on the backend), whether the config needs it, whether it is
 *     quantizable. This ONE table drives loading, shape checks, dummy weights,
 *     freeing and graph eligibility (model/weights.c, engine/model_runner.c);
 *   - its scratch sizes (activation buffers per token) and its forward (the
 *     layers' math on backend ops, struct pl_fwd).
 * A model file (llama.c, phi3.c, gemma.c, moe.c) defines records; the registry
 * (registry.c) lists them. Adding an architecture is one file plus a registry line
 * (plus backend ops only where its math is new).
 *
 * The forward's contract with the model runner (engine/model_runner.c, which owns
 * staging, upload, graphs, logits and sampling): it runs the embedding and every
 * layer over f->n_tokens rows and leaves the residual stream in scratch buffer
 * PL_SCRATCH_RES and the last sublayer's output in PL_SCRATCH_H, so that the final
 * hidden state is final_norm(RES + H) (the runner's fused residual-add norm on the
 * logits rows only). It allocates nothing and never synchronises (op graphs may
 * record it).
 */
#ifndef PL_MODEL_ARCH_H
#define PL_MODEL_ARCH_H

#include "backend/backend.h"
#include "backend/comm.h"
#include "model/config.h"
#include "model/weights.h"

#include <jansson.h>
#include <stddef.h>

/* ---- shapes ------------------------------------------------------------------------ */

/* A dimension a shape rule names, resolved from the config by pl_arch_dim. */
enum pl_dim {
    PL_DIM_NONE = 0,     /* rows: the tensor is a vector [cols]; row_off: 0 */
    PL_DIM_ONE,          /* 1 */
    PL_DIM_HIDDEN,       /* hidden_size */
    PL_DIM_VOCAB,        /* vocab_size */
    PL_DIM_HEAD,         /* head_dim */
    PL_DIM_Q,            /* n_heads * head_dim */
    PL_DIM_KV,           /* n_kv_heads * head_dim */
    PL_DIM_Q_KV,         /* q + kv (where v starts in a fused qkv) */
    PL_DIM_QKV,          /* q + 2 kv (a fused qkv's rows) */
    PL_DIM_INTER,        /* intermediate_size */
    PL_DIM_GATE_UP,      /* 2 * intermediate_size (a fused gate_up's rows) */
    PL_DIM_EXPERTS,      /* n_experts */
    PL_DIM_MOE_INTER,    /* moe_intermediate_size (one expert's MLP width) */
    PL_DIM_SHARED_INTER, /* shared_expert_intermediate_size */
};

int64_t pl_arch_dim(const struct pl_model_config *c, enum pl_dim d);

/* ---- tensors ----------------------------------------------------------------------- */

enum pl_tensor_scope {
    PL_SCOPE_MODEL, /* slot: offsetof(struct pl_weights, ...) */
    PL_SCOPE_LAYER, /* slot: offsetof(struct pl_layer_weights, ...); {L} in the name */
    PL_SCOPE_EXPERT /* slot: offsetof(struct pl_expert_weights, ...); {L} and {E} */
};

enum pl_tensor_flag {
    PL_TENSOR_QUANTIZABLE = 1u << 0, /* a weight matrix a quantized checkpoint may store packed */
    PL_TENSOR_TIED = 1u << 1,        /* lm_head: the embedding itself when tie_word_embeddings */
    PL_TENSOR_PLUS_ONE = 1u << 2,    /* a norm stored as w and applied as (1 + w) computed in
                                        fp32 (Gemma): loaded as an fp32 copy of 1 + w */
};

struct pl_tensor_spec {
    const char *name;           /* HF name; "{L}" is the layer, "{E}" the expert */
    enum pl_tensor_scope scope;
    size_t slot;                /* offsetof in the scope's struct */
    enum pl_dim rows, cols;     /* the slot's shape; rows PL_DIM_NONE: a vector [cols] */
    enum pl_dim src_rows;       /* fused checkpoint tensor: its rows (this slot takes rows
                                   [row_off, row_off + rows) of it); PL_DIM_NONE: not fused */
    enum pl_dim row_off;
    enum pl_op op;              /* dtype rule: the backend must run this op on its dtype */
    bool (*when)(const struct pl_model_config *c, int layer); /* needed? NULL: always */
    unsigned flags;             /* enum pl_tensor_flag */
};

/* ---- the forward ------------------------------------------------------------------- */

struct pl_kv_cache {
    int n_layers;
    int n_blocks;
    int block_size;
    int kv_dim;        /* n_kv_heads * head_dim */
    void **k;          /* [n_layers] backend pointers, each [n_blocks, block_size, kv_dim] */
    void **v;          /* [n_layers] */
};

#define PL_MAX_SCRATCH 16
enum { PL_SCRATCH_RES = 0, PL_SCRATCH_H = 1 }; /* every arch's first two buffers ([hidden]) */

/* One forward's inputs, made by the model runner. Every pointer is backend memory. */
struct pl_fwd {
    const struct pl_model_config *cfg;
    const struct pl_weights *w;
    struct pl_backend *be;
    const struct pl_kv_cache *kv;
    int n_tokens, n_seqs, max_blocks_per_seq, max_q_len, max_context_len;
    const int32_t *ids, *pos, *seq_lens, *slots;  /* [n_tokens] */
    const int32_t *cu_seqlens_q;                  /* [n_seqs + 1] */
    const int32_t *context_lens;                  /* [n_seqs] */
    const int32_t *block_tables;                  /* [n_seqs, max_blocks_per_seq] */
    const struct pl_rope *rope;        /* [2]: global layers, sliding (local) layers */
    void *const *scratch;              /* the arch's buffers, [n_tokens, per_token[i]] each */
    /* tensor parallelism (model/shard.h): cfg and w are this rank's share; comm NULL when
     * the model is whole */
    struct pl_comm *comm;
    int tp_rank;
};

/* Sums x[n] (activations) over the tensor-parallel ranks, in place: after a
 * row-parallel product (o_proj, down, the experts) and the vocab-parallel embedding.
 * Nothing when the model is whole. */
static inline void pl_fwd_all_reduce(const struct pl_fwd *f, void *x, size_t n)
{
    if (f->comm)
        pl_comm_all_reduce(f->comm, f->be, x, n, f->be->ops->act_dtype);
}

/* A row-parallel product's bias: added by rank 0 only, so the all-reduce adds it once. */
static inline const struct pl_weight *pl_fwd_row_bias(const struct pl_fwd *f,
                                                      const struct pl_weight *b)
{
    return b->data && f->tp_rank == 0 ? b : NULL;
}

/* out[n, hidden] = the embedding rows of f->ids (vocab-parallel: each rank's rows, ids it
 * does not hold give zero rows, then the sum over ranks). */
static inline void pl_fwd_embed(const struct pl_fwd *f, void *out)
{
    f->be->ops->embed(f->be, out, &f->w->embed, f->ids, f->n_tokens);
    pl_fwd_all_reduce(f, out, (size_t)f->n_tokens * (size_t)f->cfg->hidden_size);
}

/* ---- the record -------------------------------------------------------------------- */

/* How sliding windows are assigned to layers (config.c). */
enum pl_window_rule {
    PL_WINDOW_NONE = 0, /* no sliding window (or the fix-up assigns it) */
    PL_WINDOW_ALL,      /* every layer uses sliding_window (Mistral) */
    PL_WINDOW_QWEN,     /* use_sliding_window, then layer_types or max_window_layers (Qwen2/3) */
};

struct pl_arch_defaults {
    int n_kv_heads;              /* when num_key_value_heads is missing; 0: num_attention_heads */
    int head_dim;                /* when head_dim is missing; 0: hidden_size / heads */
    int max_position_embeddings;
    int bos_token_id, eos_token_id; /* when missing; -1: none */
    enum pl_window_rule window_rule;
    int sliding_window;          /* when sliding_window is missing */
    int max_window_layers;       /* PL_WINDOW_QWEN, when missing */
    const char *const *hidden_acts; /* the accepted hidden_act values (NULL-terminated);
                                       the first is the default; NULL: silu */
    bool tie_word_embeddings;    /* when missing */
    double rope_theta;           /* when missing; 0: 10000 */
    bool layer_type_rope;        /* rope_parameters may hold per-layer-type dicts (the
                                    fix-up reads "sliding_attention") */
};

struct pl_arch {
    const char *name;                   /* short name, for messages and docs: "llama" */
    const char *const *hf_names;        /* `architectures` values (NULL-terminated) */
    const char *model_type;             /* model_type written when the file has none */
    const char *const *model_types;     /* model_type values that select it without an
                                           architectures list (NULL-terminated) */
    struct pl_arch_defaults defaults;
    /* Reads the family's own keys after the common ones (biases, norms, MoE sizes...). */
    pl_status (*fixup)(const json_t *root, struct pl_model_config *c, struct pl_err *err);
    const struct pl_tensor_spec *tensors;
    int n_tensors;
    /* Elements per token of each scratch buffer (activation dtype); returns the count
     * (<= PL_MAX_SCRATCH). Buffers 0 and 1 are RES and H ([hidden]). */
    int (*scratch)(const struct pl_model_config *c, size_t per_token[PL_MAX_SCRATCH]);
    void (*forward)(const struct pl_fwd *f);
    /* Optional: load-time needs beyond the tensors' ops (an op the backend may lack, a
     * shape its kernels may not take); sets the reason. NULL: nothing more. */
    pl_status (*check)(const struct pl_model_config *c, struct pl_backend *be, struct pl_err *err);
};

/* The HF name of spec t for a layer and an expert ("{L}", "{E}" substituted). */
void pl_tensor_spec_name(const struct pl_tensor_spec *t, int layer, int expert, char *out,
                         size_t cap);

/* Calls fn on every slot of the config's table that the config needs (weights.c), with
 * its spec, layer (-1: model scope) and expert; slot is NULL for the experts of a layer
 * whose experts array is missing. The model runner's load-time checks and graph
 * eligibility walk the table through this. */
void pl_weights_foreach(const struct pl_model_config *c, const struct pl_weights *w,
                        void (*fn)(void *ctx, const struct pl_tensor_spec *t, int layer,
                                   int expert, const struct pl_weight *slot),
                        void *ctx);

/* ---- the registry (registry.c) ----------------------------------------------------- */

/* The architecture whose `architectures` name or (by_model_type) model_type is `name`;
 * NULL when none. */
const struct pl_arch *pl_arch_find(const char *name, bool by_model_type);
/* Every registered architecture, in registry order; *n receives the count. */
const struct pl_arch *const *pl_arch_list(int *n);
/* "LlamaForCausalLM, MistralForCausalLM, ..." (static storage). */
const char *pl_arch_supported_names(void);

#endif
