/*
 * llama.c -- the Llama-family decoder's math, and the Llama, Mistral, Qwen2 and
 * Qwen3 architecture records.
 *
 * Owns: the layers' math on backend ops (struct pl_fwd; the model runner owns
 * staging, graphs, logits and sampling) and the four records: their HF names,
 * config defaults and fix-ups, their tensor table. Per layer, with the residual
 * stream `res` and vLLM's fused residual add (norm(h, res): res += h; return
 * rmsnorm(res)):
 *
 *   res = embed(ids)                       (layer 0 normalises res directly)
 *   x = norm(h, res)                       h: previous layer's MLP output
 *   q, k, v = x Wq^T (+bq), x Wk^T (+bk), x Wv^T (+bv)
 *   q, k = per-head rmsnorm (Qwen3 q_norm / k_norm)      before rope
 *   q, k = rope(q, k, positions)
 *   cache[slot_mapping] = k, v             then paged attention over the cache
 *   h = attn Wo^T (+bo);  x = norm(h, res)
 *   h = (act(x Wg^T) * x Wu^T) Wd^T
 *
 * and the runner finishes with final_norm(h, res) on the logits rows (and on the
 * hidden rows of pooling requests, for every architecture).
 * Config sources: transformers' configuration_<family>.py / modeling_<family>.py
 * (see config.c for the common keys):
 *   field                 Llama          Mistral        Qwen2          Qwen3
 *   num_key_value_heads   = heads        8              32             32      (absent)
 *   head_dim              hidden/heads   hidden/heads   hidden/heads   128     (absent)
 *   max_position_emb.     2048           131072         32768          32768
 *   bos / eos             1 / 2          1 / 2          none / none    none / none
 *   sliding_window        never          all layers     layers >= max_window_layers, only with
 *                                        (absent: 4096) use_sliding_window (layer_types decides)
 *   q/k/v bias, o bias    attention_bias never          always / never  attention_bias
 *   mlp bias              mlp_bias       never          never          never
 * Tensor parallelism (model/shard.h): q/k/v and gate/up are column-parallel (each
 * rank's heads and MLP share), o_proj and down row-parallel, followed by the sum
 * over ranks (pl_fwd_all_reduce; their biases added by rank 0 only), the
 * embedding vocab-parallel (pl_fwd_embed): the same code runs whole or sharded.
 * Invariant: the forward allocates nothing and never synchronises.
 */
#include "model/llama.h"

#include <math.h>
#include <stddef.h>

#include "model/config_json.h"

/* Batches of at most this many rows use the backend's fused gate_up_act op (CUDA routes
 * n <= 4 to its GEMV kernels, where the fused op keeps gate and up on chip). */
#define FUSED_MLP_MAX_ROWS 4

int pl_llama_scratch(const struct pl_model_config *c, size_t per_token[PL_MAX_SCRATCH])
{
    const size_t hid = (size_t)c->hidden_size, q = (size_t)c->n_heads * (size_t)c->head_dim;
    const size_t kv = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    const size_t inter = (size_t)c->intermediate_size;
    per_token[PL_LLAMA_RES] = hid;
    per_token[PL_LLAMA_H] = hid;
    per_token[PL_LLAMA_X] = hid;
    per_token[PL_LLAMA_Q] = q;
    per_token[PL_LLAMA_K] = kv;
    per_token[PL_LLAMA_V] = kv;
    per_token[PL_LLAMA_ATTN] = q;
    per_token[PL_LLAMA_GATE] = inter;
    per_token[PL_LLAMA_UP] = inter;
    return PL_LLAMA_N_SCRATCH;
}

void pl_llama_attention(const struct pl_fwd *f, int l)
{
    const struct pl_backend_ops *op = f->be->ops;
    struct pl_backend *be = f->be;
    const struct pl_model_config *c = f->cfg;
    const struct pl_layer_weights *L = &f->w->layers[l];
    void *const *s = f->scratch;
    const int n = f->n_tokens;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    const struct pl_weight *no_bias = NULL;
    const bool qkv_bias = L->bq.data != NULL;

    if (op->matmul_group) { /* q, k, v in one op (one launch on CUDA at decode sizes) */
        void *outs[3] = {s[PL_LLAMA_Q], s[PL_LLAMA_K], s[PL_LLAMA_V]};
        const int lds[3] = {q_dim, kv_dim, kv_dim};
        const struct pl_weight *ws[3] = {&L->wq, &L->wk, &L->wv};
        const struct pl_weight *bs[3] = {no_bias, no_bias, no_bias};
        if (qkv_bias) {
            bs[0] = &L->bq;
            bs[1] = &L->bk;
            bs[2] = &L->bv;
        }
        op->matmul_group(be, 3, outs, lds, s[PL_LLAMA_X], ws, bs, n);
    } else {
        op->matmul(be, s[PL_LLAMA_Q], q_dim, s[PL_LLAMA_X], &L->wq, qkv_bias ? &L->bq : no_bias,
                   n);
        op->matmul(be, s[PL_LLAMA_K], kv_dim, s[PL_LLAMA_X], &L->wk, qkv_bias ? &L->bk : no_bias,
                   n);
        op->matmul(be, s[PL_LLAMA_V], kv_dim, s[PL_LLAMA_X], &L->wv, qkv_bias ? &L->bv : no_bias,
                   n);
    }
    const int window = c->layer_sliding_window[l];
    const struct pl_rope *rope = &f->rope[window > 0 && c->has_local_rope ? 1 : 0];
    /* Qwen3, Gemma 3: RMSNorm over each head's values, before rope */
    const bool qk_norm = L->q_norm.data != NULL;
    if (op->qk_rope_store) {
        op->qk_rope_store(be, s[PL_LLAMA_Q], s[PL_LLAMA_K], s[PL_LLAMA_V],
                          qk_norm ? &L->q_norm : NULL, qk_norm ? &L->k_norm : NULL,
                          c->rms_norm_eps, f->pos, f->seq_lens, n, c->n_heads, c->n_kv_heads,
                          c->head_dim, rope, f->kv->k[l], f->kv->v[l], f->slots);
    } else {
        if (qk_norm) {
            op->rmsnorm(be, s[PL_LLAMA_Q], NULL, s[PL_LLAMA_Q], &L->q_norm, n * c->n_heads,
                        c->head_dim, c->rms_norm_eps);
            op->rmsnorm(be, s[PL_LLAMA_K], NULL, s[PL_LLAMA_K], &L->k_norm, n * c->n_kv_heads,
                        c->head_dim, c->rms_norm_eps);
        }
        op->rope(be, s[PL_LLAMA_Q], s[PL_LLAMA_K], f->pos, f->seq_lens, n, c->n_heads,
                 c->n_kv_heads, c->head_dim, rope);
        op->store_kv(be, f->kv->k[l], f->kv->v[l], s[PL_LLAMA_K], s[PL_LLAMA_V], f->slots, n,
                     kv_dim);
    }
    struct pl_attn_meta meta = {
        .n_seqs = f->n_seqs,
        .n_tokens = n,
        .cu_seqlens_q = f->cu_seqlens_q,
        .context_lens = f->context_lens,
        .block_tables = f->block_tables,
        .max_blocks_per_seq = f->max_blocks_per_seq,
        .max_q_len = f->max_q_len,
        .max_context_len = f->max_context_len,
        .block_size = f->kv->block_size,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .scale = c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)c->head_dim),
        .window = window,
        .softcap = c->attn_softcap,
    };
    op->attention(be, s[PL_LLAMA_ATTN], s[PL_LLAMA_Q], f->kv->k[l], f->kv->v[l], &meta);
    op->matmul(be, s[PL_LLAMA_H], c->hidden_size, s[PL_LLAMA_ATTN], &L->wo,
               pl_fwd_row_bias(f, &L->bo), n);
    pl_fwd_all_reduce(f, s[PL_LLAMA_H], (size_t)n * (size_t)c->hidden_size);
}

void pl_llama_mlp(const struct pl_fwd *f, int l)
{
    const struct pl_backend_ops *op = f->be->ops;
    struct pl_backend *be = f->be;
    const struct pl_model_config *c = f->cfg;
    const struct pl_layer_weights *L = &f->w->layers[l];
    void *const *s = f->scratch;
    const int n = f->n_tokens, inter = c->intermediate_size;
    const bool bias = L->b_gate.data != NULL;
    const struct pl_weight *no_bias = NULL;
    /* the fused op at decode sizes only: there gate and up stay on chip (CUDA); larger
     * batches run the two GEMMs at the tensor cores' rate into the activation scratch */
    if ((c->act == PL_ACT_SILU || c->act == PL_ACT_GELU_TANH) && op->gate_up_act &&
        n <= FUSED_MLP_MAX_ROWS) {
        op->gate_up_act(be, s[PL_LLAMA_GATE], s[PL_LLAMA_X], &L->w_gate, &L->w_up,
                        bias ? &L->b_gate : no_bias, bias ? &L->b_up : no_bias, n, inter,
                        c->act == PL_ACT_GELU_TANH);
    } else {
        op->matmul(be, s[PL_LLAMA_GATE], inter, s[PL_LLAMA_X], &L->w_gate,
                   bias ? &L->b_gate : no_bias, n);
        op->matmul(be, s[PL_LLAMA_UP], inter, s[PL_LLAMA_X], &L->w_up, bias ? &L->b_up : no_bias,
                   n);
        if (c->act == PL_ACT_GELU_TANH) /* may alias */
            op->gelu_tanh_mul(be, s[PL_LLAMA_GATE], s[PL_LLAMA_GATE], s[PL_LLAMA_UP], n, inter);
        else
            op->silu_mul(be, s[PL_LLAMA_GATE], s[PL_LLAMA_GATE], s[PL_LLAMA_UP], n, inter);
    }
    op->matmul(be, s[PL_LLAMA_H], c->hidden_size, s[PL_LLAMA_GATE], &L->w_down,
               pl_fwd_row_bias(f, &L->b_down), n);
    pl_fwd_all_reduce(f, s[PL_LLAMA_H], (size_t)n * (size_t)c->hidden_size);
}

void pl_llama_forward(const struct pl_fwd *f)
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
        else /* res += previous MLP output; x = norm(res) */
            op->rmsnorm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->attn_norm, n, hid,
                        c->rms_norm_eps);
        pl_llama_attention(f, l);
        op->rmsnorm(be, s[PL_LLAMA_X], s[PL_LLAMA_RES], s[PL_LLAMA_H], &L->ffn_norm, n, hid,
                    c->rms_norm_eps);
        pl_llama_mlp(f, l);
    }
}

/* ---- the records ------------------------------------------------------------------------ */

bool pl_llama_has_qkv_bias(const struct pl_model_config *c, int layer)
{
    return c->attention_bias;
}
bool pl_llama_has_o_bias(const struct pl_model_config *c, int layer) { return c->o_bias; }
bool pl_llama_has_mlp_bias(const struct pl_model_config *c, int layer) { return c->mlp_bias; }
bool pl_llama_has_qk_norm(const struct pl_model_config *c, int layer) { return c->qk_norm; }

#define W(field) offsetof(struct pl_weights, field)
#define LW(field) offsetof(struct pl_layer_weights, field)
#define Q PL_TENSOR_QUANTIZABLE

/* HF names: model.embed_tokens.weight, model.layers.N.{input_layernorm,
 * self_attn.{q,k,v,o}_proj (+ .bias), self_attn.{q,k}_norm, post_attention_layernorm,
 * mlp.{gate,up,down}_proj (+ .bias)}.weight, model.norm.weight, lm_head.weight. */
static const struct pl_tensor_spec LLAMA_TENSORS[] = {
    {"model.embed_tokens.weight", PL_SCOPE_MODEL, W(embed), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0,
     PL_OP_EMBED, NULL, 0},
    {"model.layers.{L}.input_layernorm.weight", PL_SCOPE_LAYER, LW(attn_norm), PL_DIM_NONE,
     PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, 0},
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
     PL_DIM_HEAD, 0, 0, PL_OP_RMSNORM, pl_llama_has_qk_norm, 0},
    {"model.layers.{L}.self_attn.k_norm.weight", PL_SCOPE_LAYER, LW(k_norm), PL_DIM_NONE,
     PL_DIM_HEAD, 0, 0, PL_OP_RMSNORM, pl_llama_has_qk_norm, 0},
    {"model.layers.{L}.post_attention_layernorm.weight", PL_SCOPE_LAYER, LW(ffn_norm),
     PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, 0},
    {"model.layers.{L}.mlp.gate_proj.weight", PL_SCOPE_LAYER, LW(w_gate), PL_DIM_INTER,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.up_proj.weight", PL_SCOPE_LAYER, LW(w_up), PL_DIM_INTER, PL_DIM_HIDDEN,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.down_proj.weight", PL_SCOPE_LAYER, LW(w_down), PL_DIM_HIDDEN,
     PL_DIM_INTER, 0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.gate_proj.bias", PL_SCOPE_LAYER, LW(b_gate), PL_DIM_NONE, PL_DIM_INTER,
     0, 0, PL_OP_MATMUL, pl_llama_has_mlp_bias, 0},
    {"model.layers.{L}.mlp.up_proj.bias", PL_SCOPE_LAYER, LW(b_up), PL_DIM_NONE, PL_DIM_INTER, 0,
     0, PL_OP_MATMUL, pl_llama_has_mlp_bias, 0},
    {"model.layers.{L}.mlp.down_proj.bias", PL_SCOPE_LAYER, LW(b_down), PL_DIM_NONE,
     PL_DIM_HIDDEN, 0, 0, PL_OP_MATMUL, pl_llama_has_mlp_bias, 0},
    {"model.norm.weight", PL_SCOPE_MODEL, W(final_norm), PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0,
     PL_OP_RMSNORM, NULL, 0},
    {"lm_head.weight", PL_SCOPE_MODEL, W(lm_head), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0, PL_OP_LOGITS,
     NULL, PL_TENSOR_TIED},
};
#define N_LLAMA_TENSORS ((int)(sizeof(LLAMA_TENSORS) / sizeof(LLAMA_TENSORS[0])))

static pl_status read_bias(const json_t *root, const char *key, bool *out, struct pl_err *err)
{
    bool present;
    *out = false;
    return pl_cfg_get_bool(PL_CONFIG_FILE, "", root, key, out, &present, err);
}

/* modeling_llama.py: q/k/v/o use attention_bias, the MLP mlp_bias. */
static pl_status llama_fixup(const json_t *root, struct pl_model_config *c, struct pl_err *err)
{
    bool attn = false, mlp = false;
    pl_status st = read_bias(root, "attention_bias", &attn, err);
    if (st == PL_STATUS_OK)
        st = read_bias(root, "mlp_bias", &mlp, err);
    c->attention_bias = c->o_bias = attn;
    c->mlp_bias = mlp;
    return st;
}

/* modular_qwen2.py: q/k/v bias=True, o bias=False, MLP without bias. */
static pl_status qwen2_fixup(const json_t *root, struct pl_model_config *c, struct pl_err *err)
{
    c->attention_bias = true;
    return PL_STATUS_OK;
}

/* modular_qwen3.py: LlamaAttention (attention_bias on q/k/v/o) plus q_norm / k_norm. */
static pl_status qwen3_fixup(const json_t *root, struct pl_model_config *c, struct pl_err *err)
{
    bool attn = false;
    pl_status st = read_bias(root, "attention_bias", &attn, err);
    c->attention_bias = c->o_bias = attn;
    c->qk_norm = true;
    return st;
}

static const char *const LLAMA_NAMES[] = {"LlamaForCausalLM", NULL};
static const char *const LLAMA_TYPES[] = {"llama", NULL};
static const char *const MISTRAL_NAMES[] = {"MistralForCausalLM", NULL};
static const char *const MISTRAL_TYPES[] = {"mistral", NULL};
static const char *const QWEN2_NAMES[] = {"Qwen2ForCausalLM", NULL};
static const char *const QWEN2_TYPES[] = {"qwen2", NULL};
static const char *const QWEN3_NAMES[] = {"Qwen3ForCausalLM", NULL};
static const char *const QWEN3_TYPES[] = {"qwen3", NULL};

const struct pl_arch pl_arch_llama = {
    .name = "llama",
    .hf_names = LLAMA_NAMES,
    .model_type = "llama",
    .model_types = LLAMA_TYPES,
    .defaults = {.max_position_embeddings = 2048, .bos_token_id = 1, .eos_token_id = 2},
    .fixup = llama_fixup,
    .tensors = LLAMA_TENSORS,
    .n_tensors = N_LLAMA_TENSORS,
    .scratch = pl_llama_scratch,
    .forward = pl_llama_forward,
};

const struct pl_arch pl_arch_mistral = {
    .name = "mistral",
    .hf_names = MISTRAL_NAMES,
    .model_type = "mistral",
    .model_types = MISTRAL_TYPES,
    .defaults = {.n_kv_heads = 8, .max_position_embeddings = 4096 * 32, .bos_token_id = 1,
                 .eos_token_id = 2, .window_rule = PL_WINDOW_ALL, .sliding_window = 4096},
    .tensors = LLAMA_TENSORS,
    .n_tensors = N_LLAMA_TENSORS,
    .scratch = pl_llama_scratch,
    .forward = pl_llama_forward,
};

const struct pl_arch pl_arch_qwen2 = {
    .name = "qwen2",
    .hf_names = QWEN2_NAMES,
    .model_type = "qwen2",
    .model_types = QWEN2_TYPES,
    .defaults = {.n_kv_heads = 32, .max_position_embeddings = 32768, .bos_token_id = -1,
                 .eos_token_id = -1, .window_rule = PL_WINDOW_QWEN, .sliding_window = 4096,
                 .max_window_layers = 28},
    .fixup = qwen2_fixup,
    .tensors = LLAMA_TENSORS,
    .n_tensors = N_LLAMA_TENSORS,
    .scratch = pl_llama_scratch,
    .forward = pl_llama_forward,
};

const struct pl_arch pl_arch_qwen3 = {
    .name = "qwen3",
    .hf_names = QWEN3_NAMES,
    .model_type = "qwen3",
    .model_types = QWEN3_TYPES,
    .defaults = {.n_kv_heads = 32, .head_dim = 128, .max_position_embeddings = 32768,
                 .bos_token_id = -1, .eos_token_id = -1, .window_rule = PL_WINDOW_QWEN,
                 .sliding_window = 4096, .max_window_layers = 28},
    .fixup = qwen3_fixup,
    .tensors = LLAMA_TENSORS,
    .n_tensors = N_LLAMA_TENSORS,
    .scratch = pl_llama_scratch,
    .forward = pl_llama_forward,
};
