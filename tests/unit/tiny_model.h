/*
 * tiny_model.h -- a tiny random-weight Llama-family model built in memory
 * (struct pl_model_config + struct pl_weights with host pointers, no files),
 * shared by test_llama.c and test_greedy.c.
 */
#ifndef PL_TEST_TINY_MODEL_H
#define PL_TEST_TINY_MODEL_H

#include "model/config.h"
#include "test_archs.h"
#include "model/weights.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TINY_MAX_BUFS 256

struct tiny_model {
    struct pl_model_config cfg;
    struct pl_weights w;
    struct pl_layer_weights layers[4];
    void *bufs[TINY_MAX_BUFS];
    int n_bufs;
    uint64_t rng;
};

struct tiny_opts {
    const struct pl_arch *arch; /* LLAMA, MISTRAL (sliding window), QWEN2 (biases), QWEN3 (qk norm) */
    enum pl_dtype dtype;   /* weight dtype */
    bool tied;
    int window;            /* sliding window (0 = none) */
    int n_layers;          /* <= 4 */
};

static float tiny_rnd(struct tiny_model *tm)
{
    tm->rng ^= tm->rng << 13;
    tm->rng ^= tm->rng >> 7;
    tm->rng ^= tm->rng << 17;
    return (float)((double)(tm->rng >> 11) / 4503599627370496.0 - 1.0); /* [-1, 1) */
}

/* A [rows, cols] weight of uniform values in center +- spread. */
static struct pl_weight tiny_weight(struct tiny_model *tm, enum pl_dtype dt, int64_t rows,
                                    int64_t cols, float center, float spread)
{
    size_t n = (size_t)(rows * cols);
    void *p = malloc(n * pl_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float f = center + spread * tiny_rnd(tm);
        if (dt == PL_DTYPE_F32)
            ((float *)p)[i] = f;
        else if (dt == PL_DTYPE_BF16)
            ((uint16_t *)p)[i] = pl_f32_to_bf16(f);
        else
            ((uint16_t *)p)[i] = pl_f32_to_f16(f);
    }
    tm->bufs[tm->n_bufs++] = p;
    return (struct pl_weight){p, dt, rows, cols};
}

static void tiny_model_init(struct tiny_model *tm, const struct tiny_opts *o, uint64_t seed)
{
    memset(tm, 0, sizeof(*tm));
    tm->rng = seed * 0x9e3779b97f4a7c15ull + 1;
    struct pl_model_config *c = &tm->cfg;
    c->arch = o->arch;
    c->hidden_size = 32;
    c->intermediate_size = 48;
    c->n_layers = o->n_layers > 0 ? o->n_layers : 2;
    c->n_heads = 4;
    c->n_kv_heads = 2;
    c->head_dim = 8;
    c->vocab_size = 64;
    c->rms_norm_eps = 1e-6f;
    c->rope.type = PL_ROPE_DEFAULT;
    c->rope.theta = 10000.0;
    c->rope.partial_rotary_factor = 1.0;
    c->rope.truncate = true;
    c->max_position_embeddings = 512;
    c->sliding_window = o->window;
    for (int l = 0; l < c->n_layers; l++)
        c->layer_sliding_window[l] = o->window;
    c->tie_word_embeddings = o->tied;
    c->attention_bias = o->arch == PL_TEST_ARCH_QWEN2 || o->arch == PL_TEST_ARCH_QWEN2_MOE;
    c->qk_norm = o->arch == PL_TEST_ARCH_QWEN3 || o->arch == PL_TEST_ARCH_GEMMA3 ||
                 o->arch == PL_TEST_ARCH_QWEN3_MOE;
    if (o->arch == PL_TEST_ARCH_MIXTRAL || o->arch == PL_TEST_ARCH_QWEN2_MOE ||
        o->arch == PL_TEST_ARCH_QWEN3_MOE) { /* 4 experts, top 2 (qwen3: 3) */
        c->n_experts = 4;
        c->n_experts_per_tok = o->arch == PL_TEST_ARCH_QWEN3_MOE ? 3 : 2;
        c->moe_intermediate_size = 24;
        c->norm_topk_prob = o->arch != PL_TEST_ARCH_QWEN2_MOE;
        c->shared_expert_intermediate_size = o->arch == PL_TEST_ARCH_QWEN2_MOE ? 20 : 0;
        for (int l = 0; l < c->n_layers; l++) /* mixtral all; qwen2: even; qwen3: odd */
            c->layer_moe[l] = o->arch == PL_TEST_ARCH_MIXTRAL ||
                              (o->arch == PL_TEST_ARCH_QWEN2_MOE ? l % 2 == 0 : l % 2 == 1);
    }
    const bool gemma = o->arch == PL_TEST_ARCH_GEMMA2 || o->arch == PL_TEST_ARCH_GEMMA3;
    if (gemma) { /* the Gemma features, at values that change the result */
        c->act = PL_ACT_GELU_TANH;
        c->embed_scale = sqrtf((float)c->hidden_size);
        c->attn_scale = 1.0f / sqrtf(6.0f);
        for (int l = 0; l < c->n_layers; l++) /* sliding, global, sliding, ... */
            c->layer_sliding_window[l] = l % 2 ? 0 : (o->window > 0 ? o->window : 4);
    }
    if (o->arch == PL_TEST_ARCH_GEMMA2) {
        c->attn_softcap = 3.0f;
        c->final_softcap = 8.0f;
    }
    if (o->arch == PL_TEST_ARCH_GEMMA3) {
        c->rope.theta = 1e6;
        c->has_local_rope = true;
        c->rope_local = c->rope;
        c->rope_local.theta = 500.0;
    }
    c->dtype = o->dtype;
    c->bos_token_id = 1;
    c->eos_token_ids[0] = 2;
    c->n_eos_token_ids = 1;
    c->pad_token_id = -1;
    c->gen.bos_token_id = -1;

    enum pl_dtype dt = o->dtype;
    int hid = c->hidden_size, qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int inter = c->intermediate_size;
    tm->w.embed = tiny_weight(tm, dt, c->vocab_size, hid, 0.0f, 1.0f);
    tm->w.final_norm = tiny_weight(tm, dt, 1, hid, 1.0f, 0.2f);
    tm->w.lm_head = o->tied ? tm->w.embed : tiny_weight(tm, dt, c->vocab_size, hid, 0.0f, 0.5f);
    for (int l = 0; l < c->n_layers; l++) {
        struct pl_layer_weights *L = &tm->layers[l];
        L->attn_norm = tiny_weight(tm, dt, 1, hid, 1.0f, 0.2f);
        L->wq = tiny_weight(tm, dt, qd, hid, 0.0f, 0.4f);
        L->wk = tiny_weight(tm, dt, kvd, hid, 0.0f, 0.4f);
        L->wv = tiny_weight(tm, dt, kvd, hid, 0.0f, 0.4f);
        L->wo = tiny_weight(tm, dt, hid, qd, 0.0f, 0.3f);
        if (c->attention_bias) {
            L->bq = tiny_weight(tm, dt, 1, qd, 0.0f, 0.3f);
            L->bk = tiny_weight(tm, dt, 1, kvd, 0.0f, 0.3f);
            L->bv = tiny_weight(tm, dt, 1, kvd, 0.0f, 0.3f);
        }
        if (c->qk_norm) {
            L->q_norm = tiny_weight(tm, dt, 1, c->head_dim, 1.0f, 0.3f);
            L->k_norm = tiny_weight(tm, dt, 1, c->head_dim, 1.0f, 0.3f);
        }
        L->ffn_norm = tiny_weight(tm, dt, 1, hid, 1.0f, 0.2f);
        if (gemma) {
            L->attn_post_norm = tiny_weight(tm, dt, 1, hid, 2.0f, 0.3f);
            L->ffn_post_norm = tiny_weight(tm, dt, 1, hid, 2.0f, 0.3f);
        }
        if (c->layer_moe[l]) {
            const int E = c->n_experts, mi = c->moe_intermediate_size;
            L->router = tiny_weight(tm, dt, E, hid, 0.0f, 1.5f);
            L->experts = calloc((size_t)E, sizeof(*L->experts));
            tm->bufs[tm->n_bufs++] = L->experts;
            for (int e = 0; e < E; e++) {
                L->experts[e].w_gate = tiny_weight(tm, dt, mi, hid, 0.0f, 0.4f);
                L->experts[e].w_up = tiny_weight(tm, dt, mi, hid, 0.0f, 0.4f);
                L->experts[e].w_down = tiny_weight(tm, dt, hid, mi, 0.0f, 0.3f);
            }
            if (c->shared_expert_intermediate_size > 0) {
                const int si = c->shared_expert_intermediate_size;
                L->sh_gate = tiny_weight(tm, dt, si, hid, 0.0f, 0.4f);
                L->sh_up = tiny_weight(tm, dt, si, hid, 0.0f, 0.4f);
                L->sh_down = tiny_weight(tm, dt, hid, si, 0.0f, 0.3f);
                L->sh_router = tiny_weight(tm, dt, 1, hid, 0.0f, 0.5f);
            }
            continue;
        }
        L->w_gate = tiny_weight(tm, dt, inter, hid, 0.0f, 0.4f);
        L->w_up = tiny_weight(tm, dt, inter, hid, 0.0f, 0.4f);
        L->w_down = tiny_weight(tm, dt, hid, inter, 0.0f, 0.3f);
    }
    tm->w.layers = tm->layers;
    tm->w.n_layers = c->n_layers;
    tm->w.n_experts = c->n_experts;
    tm->w.be = NULL;
}

static void tiny_model_fini(struct tiny_model *tm)
{
    for (int i = 0; i < tm->n_bufs; i++)
        free(tm->bufs[i]);
    tm->n_bufs = 0;
}

#endif
