/*
 * llama.h -- the Llama-family decoder's layers, shared by the architectures
 * built from them (model/llama.c: Llama, Mistral, Qwen2, Qwen3; model/phi3.c;
 * the attention of model/moe.c).
 *
 * Owns nothing: the records live in their model files, the run-time state in
 * the model runner (engine/model_runner.c). These are the pieces of the
 * forward (struct pl_fwd, model/arch.h) other model files reuse.
 */
#ifndef PL_MODEL_LLAMA_H
#define PL_MODEL_LLAMA_H

#include "model/arch.h"

/* The Llama-family scratch buffers, in this order. */
enum pl_llama_scratch {
    PL_LLAMA_RES = PL_SCRATCH_RES, /* [hidden] residual stream */
    PL_LLAMA_H = PL_SCRATCH_H,     /* [hidden] sublayer output */
    PL_LLAMA_X,                    /* [hidden] normalised sublayer input */
    PL_LLAMA_Q,                    /* [q_dim] */
    PL_LLAMA_K,                    /* [kv_dim] */
    PL_LLAMA_V,                    /* [kv_dim] */
    PL_LLAMA_ATTN,                 /* [q_dim] */
    PL_LLAMA_GATE,                 /* [intermediate]; also act(gate) * up */
    PL_LLAMA_UP,                   /* [intermediate] */
    PL_LLAMA_N_SCRATCH
};

/* Scratch sizes of the Llama family (arch.h's scratch hook). */
int pl_llama_scratch(const struct pl_model_config *c, size_t per_token[PL_MAX_SCRATCH]);

/* x (scratch X) -> attention output projected to [hidden] in scratch H, for layer l:
 * q/k/v projections, the optional per-head q/k norms, rope, the KV store, paged
 * attention, o_proj. */
void pl_llama_attention(const struct pl_fwd *f, int l);

/* x (scratch X) -> the gated MLP's output in scratch H, for layer l (dense weights). */
void pl_llama_mlp(const struct pl_fwd *f, int l);

/* The whole Llama forward (arch.h's forward hook). */
void pl_llama_forward(const struct pl_fwd *f);

/* Tensor-table predicates shared by the families. */
bool pl_llama_has_qkv_bias(const struct pl_model_config *c, int layer);
bool pl_llama_has_o_bias(const struct pl_model_config *c, int layer);
bool pl_llama_has_mlp_bias(const struct pl_model_config *c, int layer);
bool pl_llama_has_qk_norm(const struct pl_model_config *c, int layer);

#endif
