/*
 * moe.c -- the mixture-of-experts decoders and their records: Mixtral
 * (MixtralForCausalLM), Qwen2-MoE (Qwen2MoeForCausalLM) and Qwen3-MoE
 * (Qwen3MoeForCausalLM).
 *
 * Owns: the MoE forward (the Llama layer with a sparse MoE block in place of the
 * MLP on the layers that have one) and the three records. The block is the
 * backend's moe op (backend.h, struct pl_moe_args), routing as transformers does
 * it (modeling_mixtral.py / modeling_qwen2_moe.py / modeling_qwen3_moe.py):
 *   p = softmax(x Wr^T) in fp32; the top_k experts by p; p renormalised over
 *   them when norm_topk_prob (always for Mixtral); out = sum_k p_k * expert_k(x)
 *   (+ sigmoid(x Wsg^T) * shared_expert(x), Qwen2-MoE).
 * Which layers are sparse (config.c's fix-up below): Mixtral every layer; the
 * Qwen MoEs layer l when l is not in mlp_only_layers and (l + 1) %
 * decoder_sparse_step == 0, the others a dense MLP of intermediate_size.
 * Expert weights are read in the per-expert layout of the Hub's checkpoints
 * (mlp.experts.E.{gate,up,down}_proj, block_sparse_moe.experts.E.w1/w2/w3).
 */
#include "model/llama.h"

#include "model/config_json.h"

#include <stddef.h>

enum { MOE_SCRATCH = PL_LLAMA_N_SCRATCH, MOE_N_SCRATCH };

static struct pl_moe_args moe_args(const struct pl_model_config *c,
                                   const struct pl_layer_weights *L)
{
    struct pl_moe_args a = {
        .n_experts = c->n_experts,
        .top_k = c->n_experts_per_tok,
        .norm_topk_prob = c->norm_topk_prob,
        .gelu_tanh = c->act == PL_ACT_GELU_TANH,
        .router = &L->router,
        .w_gate = L->experts ? &L->experts[0].w_gate : NULL,
        .w_up = L->experts ? &L->experts[0].w_up : NULL,
        .w_down = L->experts ? &L->experts[0].w_down : NULL,
        .expert_stride = sizeof(struct pl_expert_weights),
        .inter = c->moe_intermediate_size,
        .hidden = c->hidden_size,
    };
    if (c->shared_expert_intermediate_size > 0) {
        a.sh_gate = &L->sh_gate;
        a.sh_up = &L->sh_up;
        a.sh_down = &L->sh_down;
        a.sh_router = &L->sh_router;
        a.sh_inter = c->shared_expert_intermediate_size;
    }
    return a;
}

static int moe_scratch(const struct pl_model_config *c, size_t per_token[PL_MAX_SCRATCH])
{
    int n = pl_llama_scratch(c, per_token);
    struct pl_moe_args a = {.n_experts = c->n_experts,
                            .top_k = c->n_experts_per_tok,
                            .hidden = c->hidden_size,
                            .inter = c->moe_intermediate_size,
                            .sh_inter = c->shared_expert_intermediate_size};
    per_token[n] = pl_moe_scratch_elems(&a, 1);
    return MOE_N_SCRATCH;
}

static void moe_forward(const struct pl_fwd *f)
{
    const struct pl_backend_ops *op = f->be->ops;
    struct pl_backend *be = f->be;
    const struct pl_model_config *c = f->cfg;
    void *const *s = f->scratch;
    const int n = f->n_tokens, hid = c->hidden_size;

    pl_fwd_embed(f, s[PL_LLAMA_RES]);
    for (int l = 0; l < c->n_layers; l++) {
        const struct pl_layer_weights *L = &f->w->layers[l];
        if (l == 0)
            op->rmsnorm(be, s[PL_LLAMA_X], NULL, s[PL_LLAMA_RES], &L->attn_norm, n, hid,
                        c->rms_norm_eps);
        else
            op->rmsnorm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->attn_norm, n, hid,
                        c->rms_norm_eps);
        pl_llama_attention(f, l);
        op->rmsnorm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->ffn_norm, n, hid,
                    c->rms_norm_eps);
        if (c->layer_moe[l]) {
            const struct pl_moe_args a = moe_args(c, L);
            op->moe(be, s[PL_LLAMA_H], s[PL_LLAMA_X], n, hid, &a, s[MOE_SCRATCH]);
            /* each rank's experts hold its share of every expert's width (and of the
             * shared expert's): the block is linear in those partial down products */
            pl_fwd_all_reduce(f, s[PL_LLAMA_H], (size_t)n * (size_t)hid);
        } else {
            pl_llama_mlp(f, l);
        }
    }
}

/* ---- tensor tables ---------------------------------------------------------------------- */

static bool sparse(const struct pl_model_config *c, int l) { return c->layer_moe[l]; }
static bool dense(const struct pl_model_config *c, int l) { return !c->layer_moe[l]; }
static bool shared(const struct pl_model_config *c, int l)
{
    return c->layer_moe[l] && c->shared_expert_intermediate_size > 0;
}

#define W(field) offsetof(struct pl_weights, field)
#define LW(field) offsetof(struct pl_layer_weights, field)
#define EW(field) offsetof(struct pl_expert_weights, field)
#define Q PL_TENSOR_QUANTIZABLE

/* The attention and norms every MoE family shares with the Llama decoder. */
#define MOE_COMMON                                                                                \
    {"model.embed_tokens.weight", PL_SCOPE_MODEL, W(embed), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0,   \
     PL_OP_EMBED, NULL, 0},                                                                       \
    {"model.layers.{L}.input_layernorm.weight", PL_SCOPE_LAYER, LW(attn_norm), PL_DIM_NONE,      \
     PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, 0},                                                \
    {"model.layers.{L}.self_attn.q_proj.weight", PL_SCOPE_LAYER, LW(wq), PL_DIM_Q,               \
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, NULL, Q},                                                 \
    {"model.layers.{L}.self_attn.k_proj.weight", PL_SCOPE_LAYER, LW(wk), PL_DIM_KV,              \
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, NULL, Q},                                                 \
    {"model.layers.{L}.self_attn.v_proj.weight", PL_SCOPE_LAYER, LW(wv), PL_DIM_KV,              \
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, NULL, Q},                                                 \
    {"model.layers.{L}.self_attn.o_proj.weight", PL_SCOPE_LAYER, LW(wo), PL_DIM_HIDDEN,          \
     PL_DIM_Q, 0, 0, PL_OP_MATMUL, NULL, Q},                                                      \
    {"model.layers.{L}.self_attn.q_proj.bias", PL_SCOPE_LAYER, LW(bq), PL_DIM_NONE, PL_DIM_Q, 0, \
     0, PL_OP_MATMUL, pl_llama_has_qkv_bias, 0},                                                  \
    {"model.layers.{L}.self_attn.k_proj.bias", PL_SCOPE_LAYER, LW(bk), PL_DIM_NONE, PL_DIM_KV,   \
     0, 0, PL_OP_MATMUL, pl_llama_has_qkv_bias, 0},                                               \
    {"model.layers.{L}.self_attn.v_proj.bias", PL_SCOPE_LAYER, LW(bv), PL_DIM_NONE, PL_DIM_KV,   \
     0, 0, PL_OP_MATMUL, pl_llama_has_qkv_bias, 0},                                               \
    {"model.layers.{L}.self_attn.o_proj.bias", PL_SCOPE_LAYER, LW(bo), PL_DIM_NONE,              \
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, pl_llama_has_o_bias, 0},                                  \
    {"model.layers.{L}.self_attn.q_norm.weight", PL_SCOPE_LAYER, LW(q_norm), PL_DIM_NONE,        \
     PL_DIM_HEAD, 0, 0, PL_OP_RMSNORM, pl_llama_has_qk_norm, 0},                                  \
    {"model.layers.{L}.self_attn.k_norm.weight", PL_SCOPE_LAYER, LW(k_norm), PL_DIM_NONE,        \
     PL_DIM_HEAD, 0, 0, PL_OP_RMSNORM, pl_llama_has_qk_norm, 0},                                  \
    {"model.layers.{L}.post_attention_layernorm.weight", PL_SCOPE_LAYER, LW(ffn_norm),           \
     PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, 0},                                   \
    {"model.norm.weight", PL_SCOPE_MODEL, W(final_norm), PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0,       \
     PL_OP_RMSNORM, NULL, 0},                                                                     \
    {"lm_head.weight", PL_SCOPE_MODEL, W(lm_head), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0,            \
     PL_OP_LOGITS, NULL, PL_TENSOR_TIED}

static const struct pl_tensor_spec MIXTRAL_TENSORS[] = {
    MOE_COMMON,
    {"model.layers.{L}.block_sparse_moe.gate.weight", PL_SCOPE_LAYER, LW(router), PL_DIM_EXPERTS,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, sparse, 0},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight", PL_SCOPE_EXPERT, EW(w_gate),
     PL_DIM_MOE_INTER, PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, sparse, Q},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight", PL_SCOPE_EXPERT, EW(w_down),
     PL_DIM_HIDDEN, PL_DIM_MOE_INTER, 0, 0, PL_OP_MOE, sparse, Q},
    {"model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight", PL_SCOPE_EXPERT, EW(w_up),
     PL_DIM_MOE_INTER, PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, sparse, Q},
};

static const struct pl_tensor_spec QWEN_MOE_TENSORS[] = {
    MOE_COMMON,
    {"model.layers.{L}.mlp.gate.weight", PL_SCOPE_LAYER, LW(router), PL_DIM_EXPERTS,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, sparse, 0},
    {"model.layers.{L}.mlp.experts.{E}.gate_proj.weight", PL_SCOPE_EXPERT, EW(w_gate),
     PL_DIM_MOE_INTER, PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, sparse, Q},
    {"model.layers.{L}.mlp.experts.{E}.up_proj.weight", PL_SCOPE_EXPERT, EW(w_up),
     PL_DIM_MOE_INTER, PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, sparse, Q},
    {"model.layers.{L}.mlp.experts.{E}.down_proj.weight", PL_SCOPE_EXPERT, EW(w_down),
     PL_DIM_HIDDEN, PL_DIM_MOE_INTER, 0, 0, PL_OP_MOE, sparse, Q},
    {"model.layers.{L}.mlp.shared_expert.gate_proj.weight", PL_SCOPE_LAYER, LW(sh_gate),
     PL_DIM_SHARED_INTER, PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, shared, Q},
    {"model.layers.{L}.mlp.shared_expert.up_proj.weight", PL_SCOPE_LAYER, LW(sh_up),
     PL_DIM_SHARED_INTER, PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, shared, Q},
    {"model.layers.{L}.mlp.shared_expert.down_proj.weight", PL_SCOPE_LAYER, LW(sh_down),
     PL_DIM_HIDDEN, PL_DIM_SHARED_INTER, 0, 0, PL_OP_MOE, shared, Q},
    {"model.layers.{L}.mlp.shared_expert_gate.weight", PL_SCOPE_LAYER, LW(sh_router), PL_DIM_ONE,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MOE, shared, 0},
    {"model.layers.{L}.mlp.gate_proj.weight", PL_SCOPE_LAYER, LW(w_gate), PL_DIM_INTER,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, dense, Q},
    {"model.layers.{L}.mlp.up_proj.weight", PL_SCOPE_LAYER, LW(w_up), PL_DIM_INTER,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, dense, Q},
    {"model.layers.{L}.mlp.down_proj.weight", PL_SCOPE_LAYER, LW(w_down), PL_DIM_HIDDEN,
     PL_DIM_INTER, 0, 0, PL_OP_MATMUL, dense, Q},
};

/* ---- config fix-ups ---------------------------------------------------------------------- */

static pl_status read_int(const json_t *root, const char *key, int def, int min, int *out,
                          struct pl_err *err)
{
    bool present;
    *out = def;
    pl_status st = pl_cfg_get_int(PL_CONFIG_FILE, "", root, key, out, &present, err);
    if (st == PL_STATUS_OK && *out < min)
        st = pl_err_set(err, PL_STATUS_FORMAT, "%s: %s = %d must be at least %d", PL_CONFIG_FILE,
                        key, *out, min);
    return st;
}

static pl_status check_routing(struct pl_model_config *c, struct pl_err *err)
{
    if (c->n_experts_per_tok > c->n_experts || c->n_experts_per_tok > 64)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "%s: num_experts_per_tok = %d must be at most num_experts (%d) and 64",
                          PL_CONFIG_FILE, c->n_experts_per_tok, c->n_experts);
    return PL_STATUS_OK;
}

/* Mixtral: every layer sparse, the experts intermediate_size wide, always renormalised. */
static pl_status mixtral_fixup(const json_t *root, struct pl_model_config *c, struct pl_err *err)
{
    pl_status st = read_int(root, "num_local_experts", 8, 1, &c->n_experts, err);
    if (st == PL_STATUS_OK)
        st = read_int(root, "num_experts_per_tok", 2, 1, &c->n_experts_per_tok, err);
    if (st != PL_STATUS_OK)
        return st;
    c->moe_intermediate_size = c->intermediate_size;
    c->norm_topk_prob = true;
    for (int l = 0; l < c->n_layers; l++)
        c->layer_moe[l] = true;
    return check_routing(c, err);
}

/* The Qwen MoEs: num_experts, num_experts_per_tok, moe_intermediate_size, norm_topk_prob,
 * decoder_sparse_step, mlp_only_layers (+ the shared expert for Qwen2-MoE). */
static pl_status qwen_moe_common(const json_t *root, struct pl_model_config *c, int def_experts,
                                 int def_topk, int def_inter, struct pl_err *err)
{
    const char *file = PL_CONFIG_FILE;
    int step = 1;
    bool present;
    pl_status st = read_int(root, "num_experts", def_experts, 0, &c->n_experts, err);
    if (st == PL_STATUS_OK)
        st = read_int(root, "num_experts_per_tok", def_topk, 1, &c->n_experts_per_tok, err);
    if (st == PL_STATUS_OK)
        st = read_int(root, "moe_intermediate_size", def_inter, 1, &c->moe_intermediate_size,
                      err);
    if (st == PL_STATUS_OK)
        st = read_int(root, "decoder_sparse_step", 1, 1, &step, err);
    c->norm_topk_prob = false;
    if (st == PL_STATUS_OK)
        st = pl_cfg_get_bool(file, "", root, "norm_topk_prob", &c->norm_topk_prob, &present, err);
    if (st != PL_STATUS_OK)
        return st;
    for (int l = 0; l < c->n_layers; l++)
        c->layer_moe[l] = c->n_experts > 0 && (l + 1) % step == 0;
    const json_t *only = json_object_get(root, "mlp_only_layers");
    if (only && !json_is_null(only)) {
        if (!json_is_array(only))
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: mlp_only_layers is not a list", file);
        for (size_t i = 0; i < json_array_size(only); i++) {
            const json_t *v = json_array_get(only, i);
            if (!json_is_integer(v))
                return pl_err_set(err, PL_STATUS_FORMAT, "%s: mlp_only_layers[%zu] is not an "
                                  "integer", file, i);
            json_int_t l = json_integer_value(v);
            if (l >= 0 && l < c->n_layers)
                c->layer_moe[l] = false;
        }
    }
    return c->n_experts > 0 ? check_routing(c, err) : PL_STATUS_OK;
}

static pl_status qwen2_moe_fixup(const json_t *root, struct pl_model_config *c,
                                 struct pl_err *err)
{
    bool present, qkv_bias = true;
    pl_status st = pl_cfg_get_bool(PL_CONFIG_FILE, "", root, "qkv_bias", &qkv_bias, &present,
                                   err);
    c->attention_bias = qkv_bias; /* q/k/v biases, o_proj none */
    if (st == PL_STATUS_OK)
        st = qwen_moe_common(root, c, 60, 4, 1408, err);
    if (st == PL_STATUS_OK)
        st = read_int(root, "shared_expert_intermediate_size", 5632, 0,
                      &c->shared_expert_intermediate_size, err);
    return st;
}

static pl_status qwen3_moe_fixup(const json_t *root, struct pl_model_config *c,
                                 struct pl_err *err)
{
    bool present, bias = false;
    pl_status st = pl_cfg_get_bool(PL_CONFIG_FILE, "", root, "attention_bias", &bias, &present,
                                   err);
    c->attention_bias = c->o_bias = bias;
    c->qk_norm = true;
    if (st == PL_STATUS_OK)
        st = qwen_moe_common(root, c, 128, 8, 768, err);
    return st;
}

static const char *const MIXTRAL_NAMES[] = {"MixtralForCausalLM", NULL};
static const char *const MIXTRAL_TYPES[] = {"mixtral", NULL};
static const char *const QWEN2_MOE_NAMES[] = {"Qwen2MoeForCausalLM", NULL};
static const char *const QWEN2_MOE_TYPES[] = {"qwen2_moe", NULL};
static const char *const QWEN3_MOE_NAMES[] = {"Qwen3MoeForCausalLM", NULL};
static const char *const QWEN3_MOE_TYPES[] = {"qwen3_moe", NULL};

const struct pl_arch pl_arch_mixtral = {
    .name = "mixtral",
    .hf_names = MIXTRAL_NAMES,
    .model_type = "mixtral",
    .model_types = MIXTRAL_TYPES,
    .defaults = {.n_kv_heads = 8, .max_position_embeddings = 4096 * 32, .bos_token_id = 1,
                 .eos_token_id = 2, .window_rule = PL_WINDOW_ALL, .sliding_window = 0,
                 .rope_theta = 1e6},
    .fixup = mixtral_fixup,
    .tensors = MIXTRAL_TENSORS,
    .n_tensors = (int)(sizeof(MIXTRAL_TENSORS) / sizeof(MIXTRAL_TENSORS[0])),
    .scratch = moe_scratch,
    .forward = moe_forward,
};

const struct pl_arch pl_arch_qwen2_moe = {
    .name = "qwen2_moe",
    .hf_names = QWEN2_MOE_NAMES,
    .model_type = "qwen2_moe",
    .model_types = QWEN2_MOE_TYPES,
    .defaults = {.n_kv_heads = 16, .max_position_embeddings = 32768, .bos_token_id = -1,
                 .eos_token_id = -1, .window_rule = PL_WINDOW_QWEN, .sliding_window = 4096,
                 .max_window_layers = 28},
    .fixup = qwen2_moe_fixup,
    .tensors = QWEN_MOE_TENSORS,
    .n_tensors = (int)(sizeof(QWEN_MOE_TENSORS) / sizeof(QWEN_MOE_TENSORS[0])),
    .scratch = moe_scratch,
    .forward = moe_forward,
};

const struct pl_arch pl_arch_qwen3_moe = {
    .name = "qwen3_moe",
    .hf_names = QWEN3_MOE_NAMES,
    .model_type = "qwen3_moe",
    .model_types = QWEN3_MOE_TYPES,
    .defaults = {.n_kv_heads = 4, .head_dim = 128, .max_position_embeddings = 32768,
                 .bos_token_id = -1, .eos_token_id = -1, .window_rule = PL_WINDOW_QWEN,
                 .sliding_window = 4096, .max_window_layers = 28},
    .fixup = qwen3_moe_fixup,
    .tensors = QWEN_MOE_TENSORS,
    .n_tensors = (int)(sizeof(QWEN_MOE_TENSORS) / sizeof(QWEN_MOE_TENSORS[0])),
    .scratch = moe_scratch,
    .forward = moe_forward,
};
