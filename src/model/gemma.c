/*
 * gemma.c -- the Gemma 2 and Gemma 3 (text) decoders and their records
 * (Gemma2ForCausalLM, Gemma3ForCausalLM).
 *
 * Owns: the Gemma forward and the two records. From transformers'
 * modeling_gemma2.py / modeling_gemma3.py, a layer is
 *
 *   x = input_layernorm(res)              res: residual stream
 *   h = post_attention_layernorm(attn(x)); res += h
 *   x = pre_feedforward_layernorm(res)
 *   h = post_feedforward_layernorm(mlp(x)); res += h      (next layer, fused)
 *
 * with every RMSNorm Gemma's (1 + w) in fp32 (the tensor table loads those weights
 * as fp32 copies of 1 + w: PL_TENSOR_PLUS_ONE), the MLP gelu_pytorch_tanh-gated,
 * the embeddings multiplied by sqrt(hidden_size) (rounded to the activation dtype,
 * like transformers' normalizer), the softmax scale query_pre_attn_scalar^-0.5, and
 *   Gemma 2: attention scores and final logits soft-capped (cap * tanh(x / cap));
 *            layers alternate sliding (even) and global (odd) attention;
 *   Gemma 3: q_norm / k_norm per head before rope; five sliding layers then one
 *            global (sliding_window_pattern 6); sliding layers use their own rope
 *            (rope_local_base_freq, or rope_parameters.sliding_attention), global
 *            layers rope_theta with rope scaling.
 * layer_types, when the config has it, decides which layers slide.
 * Only the text model: Gemma3ForConditionalGeneration checkpoints (the
 * multimodal 4B+ ones, tensors under language_model.) are not read yet.
 * Config defaults: configuration_gemma2.py / configuration_gemma3.py.
 */
#include "model/llama.h"

#include "model/config_json.h"

#include <math.h>
#include <stddef.h>

static void gemma_forward(const struct pl_fwd *f)
{
    const struct pl_backend_ops *op = f->be->ops;
    struct pl_backend *be = f->be;
    const struct pl_model_config *c = f->cfg;
    void *const *s = f->scratch;
    const int n = f->n_tokens, hid = c->hidden_size;
    const float eps = c->rms_norm_eps;

    pl_fwd_embed(f, s[PL_LLAMA_RES]);
    op->scale(be, s[PL_LLAMA_RES], (size_t)n * (size_t)hid, c->embed_scale);
    /* h = post_norm(h); res += h; x = pre_norm(res): one op where the backend fuses it */
    const bool fuse = op->norm_add_norm != NULL;
    for (int l = 0; l < c->n_layers; l++) {
        const struct pl_layer_weights *L = &f->w->layers[l];
        if (l == 0)
            op->rmsnorm(be, s[PL_LLAMA_X], NULL, s[PL_LLAMA_RES], &L->attn_norm, n, hid, eps);
        else if (!fuse) /* res += previous layer's (post-normed) MLP output; x = norm(res) */
            op->rmsnorm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->attn_norm, n, hid,
                        eps);
        pl_llama_attention(f, l);
        if (fuse) {
            op->norm_add_norm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->attn_post_norm,
                              &L->ffn_norm, n, hid, eps);
        } else {
            op->rmsnorm(be, s[PL_LLAMA_H], NULL, s[PL_LLAMA_H], &L->attn_post_norm, n, hid, eps);
            op->rmsnorm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->ffn_norm, n, hid,
                        eps);
        }
        pl_llama_mlp(f, l);
        if (fuse && l + 1 < c->n_layers) /* with the next layer's input norm */
            op->norm_add_norm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H],
                              &L->ffn_post_norm, &f->w->layers[l + 1].attn_norm, n, hid, eps);
        else /* the last layer's: the final norm adds it (the logits section) */
            op->rmsnorm(be, s[PL_LLAMA_H], NULL, s[PL_LLAMA_H], &L->ffn_post_norm, n, hid, eps);
    }
}

#define W(field) offsetof(struct pl_weights, field)
#define LW(field) offsetof(struct pl_layer_weights, field)
#define Q PL_TENSOR_QUANTIZABLE
#define P1 PL_TENSOR_PLUS_ONE

static const struct pl_tensor_spec GEMMA_TENSORS[] = {
    {"model.embed_tokens.weight", PL_SCOPE_MODEL, W(embed), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0,
     PL_OP_EMBED, NULL, 0},
    {"model.layers.{L}.input_layernorm.weight", PL_SCOPE_LAYER, LW(attn_norm), PL_DIM_NONE,
     PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, P1},
    {"model.layers.{L}.self_attn.q_proj.weight", PL_SCOPE_LAYER, LW(wq), PL_DIM_Q, PL_DIM_HIDDEN,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.k_proj.weight", PL_SCOPE_LAYER, LW(wk), PL_DIM_KV, PL_DIM_HIDDEN,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.v_proj.weight", PL_SCOPE_LAYER, LW(wv), PL_DIM_KV, PL_DIM_HIDDEN,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.o_proj.weight", PL_SCOPE_LAYER, LW(wo), PL_DIM_HIDDEN, PL_DIM_Q,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.q_proj.bias", PL_SCOPE_LAYER, LW(bq), PL_DIM_NONE, PL_DIM_Q, 0,
     0, PL_OP_MATMUL, pl_llama_has_qkv_bias, 0},
    {"model.layers.{L}.self_attn.k_proj.bias", PL_SCOPE_LAYER, LW(bk), PL_DIM_NONE, PL_DIM_KV, 0,
     0, PL_OP_MATMUL, pl_llama_has_qkv_bias, 0},
    {"model.layers.{L}.self_attn.v_proj.bias", PL_SCOPE_LAYER, LW(bv), PL_DIM_NONE, PL_DIM_KV, 0,
     0, PL_OP_MATMUL, pl_llama_has_qkv_bias, 0},
    {"model.layers.{L}.self_attn.o_proj.bias", PL_SCOPE_LAYER, LW(bo), PL_DIM_NONE, PL_DIM_HIDDEN,
     0, 0, PL_OP_MATMUL, pl_llama_has_o_bias, 0},
    {"model.layers.{L}.self_attn.q_norm.weight", PL_SCOPE_LAYER, LW(q_norm), PL_DIM_NONE,
     PL_DIM_HEAD, 0, 0, PL_OP_RMSNORM, pl_llama_has_qk_norm, P1},
    {"model.layers.{L}.self_attn.k_norm.weight", PL_SCOPE_LAYER, LW(k_norm), PL_DIM_NONE,
     PL_DIM_HEAD, 0, 0, PL_OP_RMSNORM, pl_llama_has_qk_norm, P1},
    {"model.layers.{L}.post_attention_layernorm.weight", PL_SCOPE_LAYER, LW(attn_post_norm),
     PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, P1},
    {"model.layers.{L}.pre_feedforward_layernorm.weight", PL_SCOPE_LAYER, LW(ffn_norm),
     PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, P1},
    {"model.layers.{L}.post_feedforward_layernorm.weight", PL_SCOPE_LAYER, LW(ffn_post_norm),
     PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, P1},
    {"model.layers.{L}.mlp.gate_proj.weight", PL_SCOPE_LAYER, LW(w_gate), PL_DIM_INTER,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.up_proj.weight", PL_SCOPE_LAYER, LW(w_up), PL_DIM_INTER, PL_DIM_HIDDEN,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.down_proj.weight", PL_SCOPE_LAYER, LW(w_down), PL_DIM_HIDDEN,
     PL_DIM_INTER, 0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.norm.weight", PL_SCOPE_MODEL, W(final_norm), PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0,
     PL_OP_RMSNORM, NULL, P1},
    {"lm_head.weight", PL_SCOPE_MODEL, W(lm_head), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0, PL_OP_LOGITS,
     NULL, PL_TENSOR_TIED},
};

/* A cap: a positive number, or null / 0 for none; `def` when the key is missing. */
static pl_status read_cap(const json_t *root, const char *key, double def, float *out,
                          struct pl_err *err)
{
    double v = def;
    bool present;
    pl_status st = pl_cfg_get_num(PL_CONFIG_FILE, "", root, key, &v, &present, err);
    if (st != PL_STATUS_OK)
        return st;
    if (!present && json_object_get(root, key)) /* explicit null */
        v = 0;
    if (v < 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s = %g must not be negative",
                          PL_CONFIG_FILE, key, v);
    *out = (float)v;
    return PL_STATUS_OK;
}

/* What Gemma 2 and 3 share: biases, scales, windows. pattern: every pattern-th layer is
 * global when layer_types is absent (Gemma 2: 2, Gemma 3: sliding_window_pattern). */
static pl_status gemma_common(const json_t *root, struct pl_model_config *c, int pattern,
                              struct pl_err *err)
{
    const char *file = PL_CONFIG_FILE;
    bool present, bias = false;
    pl_status st = pl_cfg_get_bool(file, "", root, "attention_bias", &bias, &present, err);
    if (st != PL_STATUS_OK)
        return st;
    c->attention_bias = c->o_bias = bias;
    double qpas = 256;
    if ((st = pl_cfg_get_num(file, "", root, "query_pre_attn_scalar", &qpas, &present, err)))
        return st;
    if (!(qpas > 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: query_pre_attn_scalar = %g must be positive",
                          file, qpas);
    c->attn_scale = (float)(1.0 / sqrt(qpas));
    c->embed_scale = (float)sqrt((double)c->hidden_size);
    int window = 4096;
    if ((st = pl_cfg_get_int(file, "", root, "sliding_window", &window, &present, err)))
        return st;
    if (!present && json_object_get(root, "sliding_window"))
        window = 0; /* null: no window */
    if (window < 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: sliding_window = %d must not be negative",
                          file, window);
    c->sliding_window = window;
    bool have_types;
    if ((st = pl_cfg_layer_types(root, c, window, &have_types, err)) || have_types)
        return st;
    for (int l = 0; l < c->n_layers; l++)
        c->layer_sliding_window[l] = (l + 1) % pattern ? window : 0;
    return PL_STATUS_OK;
}

static pl_status gemma2_fixup(const json_t *root, struct pl_model_config *c, struct pl_err *err)
{
    pl_status st = read_cap(root, "attn_logit_softcapping", 50.0, &c->attn_softcap, err);
    if (st == PL_STATUS_OK)
        st = read_cap(root, "final_logit_softcapping", 30.0, &c->final_softcap, err);
    if (st == PL_STATUS_OK)
        st = gemma_common(root, c, 2, err);
    return st;
}

/* Gemma 3: the local rope is rope_parameters.sliding_attention (transformers 5), else the
 * default rope at rope_local_base_freq (older configs; rope_scaling is the global's). */
static pl_status gemma3_fixup(const json_t *root, struct pl_model_config *c, struct pl_err *err)
{
    const char *file = PL_CONFIG_FILE;
    pl_status st = read_cap(root, "attn_logit_softcapping", 0.0, &c->attn_softcap, err);
    if (st == PL_STATUS_OK)
        st = read_cap(root, "final_logit_softcapping", 0.0, &c->final_softcap, err);
    int pattern = 6;
    bool present;
    if (st == PL_STATUS_OK)
        st = pl_cfg_get_int(file, "", root, "sliding_window_pattern", &pattern, &present, err);
    if (st == PL_STATUS_OK && pattern < 1)
        st = pl_err_set(err, PL_STATUS_FORMAT, "%s: sliding_window_pattern = %d must be positive",
                        file, pattern);
    if (st == PL_STATUS_OK)
        st = gemma_common(root, c, pattern, err);
    if (st != PL_STATUS_OK)
        return st;
    c->qk_norm = true;
    c->has_local_rope = true;
    const json_t *params = json_object_get(root, "rope_parameters");
    const json_t *local = json_is_object(params) ? json_object_get(params, "sliding_attention")
                                                 : NULL;
    if (local && json_is_object(local))
        return pl_cfg_parse_rope(file, root, local, "rope_parameters.sliding_attention.", c,
                                 &c->rope_local, err);
    /* the default rope with the local base; the top-level keys must not leak in */
    json_t *only = json_object();
    double base = 10000.0;
    st = pl_cfg_get_num(file, "", root, "rope_local_base_freq", &base, &present, err);
    json_object_set_new(only, "rope_type", json_string("default"));
    json_object_set_new(only, "rope_theta", json_real(base));
    const json_t *prf = json_object_get(root, "partial_rotary_factor");
    if (prf)
        json_object_set(only, "partial_rotary_factor", (json_t *)prf);
    if (st == PL_STATUS_OK)
        st = pl_cfg_parse_rope(file, only, only, "", c, &c->rope_local, err);
    json_decref(only);
    return st;
}

static const char *const GEMMA_ACTS[] = {"gelu_pytorch_tanh", NULL};
static const char *const GEMMA2_NAMES[] = {"Gemma2ForCausalLM", NULL};
static const char *const GEMMA2_TYPES[] = {"gemma2", NULL};
static const char *const GEMMA3_NAMES[] = {"Gemma3ForCausalLM", NULL};
static const char *const GEMMA3_TYPES[] = {"gemma3_text", NULL};

static int gemma_scratch(const struct pl_model_config *c, size_t per_token[PL_MAX_SCRATCH])
{
    return pl_llama_scratch(c, per_token);
}

const struct pl_arch pl_arch_gemma2 = {
    .name = "gemma2",
    .hf_names = GEMMA2_NAMES,
    .model_type = "gemma2",
    .model_types = GEMMA2_TYPES,
    .defaults = {.n_kv_heads = 4, .head_dim = 256, .max_position_embeddings = 8192,
                 .bos_token_id = 2, .eos_token_id = 1, .hidden_acts = GEMMA_ACTS,
                 .tie_word_embeddings = true},
    .fixup = gemma2_fixup,
    .tensors = GEMMA_TENSORS,
    .n_tensors = (int)(sizeof(GEMMA_TENSORS) / sizeof(GEMMA_TENSORS[0])),
    .scratch = gemma_scratch,
    .forward = gemma_forward,
};

const struct pl_arch pl_arch_gemma3 = {
    .name = "gemma3",
    .hf_names = GEMMA3_NAMES,
    .model_type = "gemma3_text",
    .model_types = GEMMA3_TYPES,
    .defaults = {.n_kv_heads = 4, .head_dim = 256, .max_position_embeddings = 131072,
                 .bos_token_id = 2, .eos_token_id = 1, .hidden_acts = GEMMA_ACTS,
                 .tie_word_embeddings = true, .layer_type_rope = true, .rope_theta = 1e6},
    .fixup = gemma3_fixup,
    .tensors = GEMMA_TENSORS,
    .n_tensors = (int)(sizeof(GEMMA_TENSORS) / sizeof(GEMMA_TENSORS[0])),
    .scratch = gemma_scratch,
    .forward = gemma_forward,
};
