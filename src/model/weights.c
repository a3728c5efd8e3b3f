/*
 * weights.c -- Hugging Face tensor names -> struct pl_weights slots (see weights.h).
 *
 * Owns the weight table of one model: which tensor fills which slot, the
 * shape each slot must have for the config, and the backend mapping of each.
 * Invariants:
 *   1. A slot is either {NULL} (the config does not use it) or holds a pointer
 *      the backend returned from map_weight for exactly one tensor; the only
 *      shared pointer is lm_head == embed when the embeddings are tied, and
 *      pl_weights_free unmaps every mapping exactly once.
 *   2. A filled slot's tensor had exactly the shape the config implies and a
 *      dtype the backend supports for the op that reads it.
 * Conversion (vLLM's --dtype): with a target dtype, a tensor stored in another
 * dtype is converted on the host one tensor at a time and copied into memory
 * from the backend's alloc; its pointer is listed in `converted` so that free
 * releases it with the backend's free instead of unmapping it.
 * Tied embeddings: transformers' tie_weights() makes the output projection
 * share the input embedding's parameter, so when tie_word_embeddings is true
 * the embedding is used even if the checkpoint also carries lm_head.weight.
 */
#include "model/weights.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loader {
    const struct pl_safetensors *st; /* NULL: dummy weights */
    struct pl_backend *be;
    struct pl_weights *w;
    struct pl_err *err;
    enum pl_dtype dummy_dtype;
    uint64_t seed;                   /* dummy: advanced once per tensor */
    int want;                        /* target dtype, or PL_WEIGHTS_DTYPE_AS_STORED */
    int max_converted;               /* capacity of w->converted */
};

/* A tensor stored as `from`, converted to `to` into backend memory (see the top). */
static pl_status convert_slot(struct loader *L, const struct pl_tensor_info *t, const char *name,
                              enum pl_dtype to, void **out, size_t *out_bytes)
{
    const struct pl_backend_ops *ops = L->be->ops;
    const size_t n = t->n_bytes / pl_dtype_size(t->dtype);
    const size_t n_bytes = n * pl_dtype_size(to);
    if (L->w->n_converted >= L->max_converted)
        return pl_err_set(L->err, PL_STATUS_INTERNAL, "weights: conversion table full at '%s'",
                          name);
    void *host = malloc(n_bytes ? n_bytes : 1);
    void *p = host ? ops->alloc(L->be, n_bytes) : NULL;
    if (!p) {
        free(host);
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY,
                          "tensor '%s': out of memory converting %zu bytes to %s", name, n_bytes,
                          pl_dtype_torch_name(to));
    }
    pl_status st = PL_STATUS_OK;
    if (!pl_dtype_convert(host, to, t->data, t->dtype, n))
        st = pl_err_set(L->err, PL_STATUS_UNSUPPORTED, "%s: tensor '%s' of dtype %s cannot be "
                        "converted to %s", t->file, name, pl_dtype_name(t->dtype),
                        pl_dtype_torch_name(to));
    /* sync: the host copy is freed next, so the upload must have read it */
    else if (ops->upload(L->be, p, host, n_bytes) != PL_STATUS_OK ||
             ops->sync(L->be) != PL_STATUS_OK)
        st = pl_err_set(L->err, PL_STATUS_INTERNAL, "tensor '%s': the %s backend failed to take "
                        "%zu bytes", name, ops->name, n_bytes);
    free(host);
    if (st != PL_STATUS_OK) {
        ops->free(L->be, p);
        return st;
    }
    L->w->converted[L->w->n_converted++] = p;
    *out = p;
    *out_bytes = n_bytes;
    return PL_STATUS_OK;
}

/* A dummy tensor: allocated on the backend and filled there (no host copy), values as
 * below; each tensor gets its own seed so no two tensors repeat each other. */
static pl_status dummy_slot(struct loader *L, const char *name, enum pl_op op, int64_t rows,
                            int64_t cols, struct pl_weight *slot)
{
    const bool is_vector = rows == 0;
    const size_t n = (size_t)(is_vector ? 1 : rows) * (size_t)cols;
    const size_t n_bytes = n * pl_dtype_size(L->dummy_dtype);
    void *p = L->be->ops->alloc(L->be, n_bytes);
    if (!p)
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY,
                          "dummy tensor '%s': the backend could not allocate %zu bytes", name,
                          n_bytes);
    /* norm weights 1 (a real model's start), embeddings U(-1, 1), matrices and biases
     * U(-a, a) with a = 1/sqrt(in_features), so activations keep their scale layer to
     * layer and the logits stay finite */
    float lo, hi;
    if (op == PL_OP_RMSNORM) {
        lo = hi = 1.0f;
    } else if (op == PL_OP_EMBED) {
        lo = -1.0f;
        hi = 1.0f;
    } else {
        hi = 1.0f / sqrtf((float)cols);
        lo = -hi;
    }
    L->be->ops->fill(L->be, p, L->dummy_dtype, n, L->seed++ * 0x632BE59BD9B4E019ull, lo, hi);
    *slot = (struct pl_weight){
        .data = p, .dtype = L->dummy_dtype, .rows = is_vector ? 1 : rows, .cols = cols};
    L->w->n_bytes += n_bytes;
    return PL_STATUS_OK;
}

/* Maps tensor `name` into *slot after checking its shape ([rows, cols] for a
 * matrix, [cols] for a vector when rows == 0) and that the backend runs `op`
 * on its dtype. */
static pl_status load_slot(struct loader *L, const char *name, enum pl_op op, int64_t rows,
                           int64_t cols, struct pl_weight *slot)
{
    if (!L->st)
        return dummy_slot(L, name, op, rows, cols, slot);
    const struct pl_tensor_info *t = pl_safetensors_find(L->st, name);
    if (!t)
        return pl_err_set(L->err, PL_STATUS_NOT_FOUND, "tensor '%s' is missing from the checkpoint",
                          name);
    bool is_vector = rows == 0;
    bool ok = is_vector ? (t->n_dims == 1 && t->shape[0] == cols)
                        : (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        char got[160];
        int at = snprintf(got, sizeof(got), "[");
        for (int d = 0; d < t->n_dims && at > 0 && (size_t)at < sizeof(got); d++)
            at += snprintf(got + at, sizeof(got) - (size_t)at, "%s%lld", d ? ", " : "",
                           (long long)t->shape[d]);
        if (at > 0 && (size_t)at < sizeof(got))
            snprintf(got + at, sizeof(got) - (size_t)at, "]");
        if (is_vector)
            return pl_err_set(L->err, PL_STATUS_FORMAT,
                              "%s: tensor '%s' has shape %s, the config needs [%lld]", t->file,
                              name, got, (long long)cols);
        return pl_err_set(L->err, PL_STATUS_FORMAT,
                          "%s: tensor '%s' has shape %s, the config needs [%lld, %lld]", t->file,
                          name, got, (long long)rows, (long long)cols);
    }
    const struct pl_backend_ops *ops = L->be->ops;
    const enum pl_dtype dtype = L->want >= 0 ? (enum pl_dtype)L->want : t->dtype;
    if (!ops->supports(L->be, op, dtype)) {
        if (dtype != t->dtype)
            return pl_err_set(L->err, PL_STATUS_UNSUPPORTED,
                              "dtype %s: the %s backend does not run %s weights (tensor '%s')",
                              pl_dtype_torch_name(dtype), ops->name ? ops->name : "?",
                              pl_dtype_torch_name(dtype), name);
        return pl_err_set(L->err, PL_STATUS_UNSUPPORTED,
                          "%s: tensor '%s' has dtype %s, which the %s backend does not support "
                          "for this op (--dtype can convert it at load)",
                          t->file, name, pl_dtype_name(t->dtype), ops->name ? ops->name : "?");
    }
    void *p = NULL;
    size_t n_bytes = t->n_bytes;
    if (dtype != t->dtype) {
        pl_status st = convert_slot(L, t, name, dtype, &p, &n_bytes);
        if (st != PL_STATUS_OK)
            return st;
    } else if (!(p = ops->map_weight(L->be, t->data, t->n_bytes))) {
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY,
                          "tensor '%s': the backend could not map %zu bytes", name, t->n_bytes);
    }
    *slot = (struct pl_weight){
        .data = p, .dtype = dtype, .rows = is_vector ? 1 : rows, .cols = cols};
    L->w->n_bytes += n_bytes;
    return PL_STATUS_OK;
}

/* Loads "model.layers.<l>.<suffix>". */
static pl_status load_layer_slot(struct loader *L, int l, const char *suffix, enum pl_op op,
                                 int64_t rows, int64_t cols, struct pl_weight *slot)
{
    char name[160];
    snprintf(name, sizeof(name), "model.layers.%d.%s", l, suffix);
    return load_slot(L, name, op, rows, cols, slot);
}

static pl_status load_layer(struct loader *L, const struct pl_model_config *c, int l,
                            struct pl_layer_weights *lw)
{
    const int64_t hidden = c->hidden_size, inter = c->intermediate_size;
    const int64_t q_dim = (int64_t)c->n_heads * c->head_dim;
    const int64_t kv_dim = (int64_t)c->n_kv_heads * c->head_dim;
    pl_status st;
#define LOAD(suffix, op, rows, cols, slot)                                 \
    do {                                                                   \
        if ((st = load_layer_slot(L, l, suffix, op, rows, cols, slot)))    \
            return st;                                                     \
    } while (0)
    LOAD("input_layernorm.weight", PL_OP_RMSNORM, 0, hidden, &lw->attn_norm);
    LOAD("self_attn.q_proj.weight", PL_OP_MATMUL, q_dim, hidden, &lw->wq);
    LOAD("self_attn.k_proj.weight", PL_OP_MATMUL, kv_dim, hidden, &lw->wk);
    LOAD("self_attn.v_proj.weight", PL_OP_MATMUL, kv_dim, hidden, &lw->wv);
    LOAD("self_attn.o_proj.weight", PL_OP_MATMUL, hidden, q_dim, &lw->wo);
    if (c->attention_bias) {
        LOAD("self_attn.q_proj.bias", PL_OP_MATMUL, 0, q_dim, &lw->bq);
        LOAD("self_attn.k_proj.bias", PL_OP_MATMUL, 0, kv_dim, &lw->bk);
        LOAD("self_attn.v_proj.bias", PL_OP_MATMUL, 0, kv_dim, &lw->bv);
    }
    if (c->o_bias)
        LOAD("self_attn.o_proj.bias", PL_OP_MATMUL, 0, hidden, &lw->bo);
    if (c->qk_norm) {
        LOAD("self_attn.q_norm.weight", PL_OP_RMSNORM, 0, c->head_dim, &lw->q_norm);
        LOAD("self_attn.k_norm.weight", PL_OP_RMSNORM, 0, c->head_dim, &lw->k_norm);
    }
    LOAD("post_attention_layernorm.weight", PL_OP_RMSNORM, 0, hidden, &lw->ffn_norm);
    LOAD("mlp.gate_proj.weight", PL_OP_MATMUL, inter, hidden, &lw->w_gate);
    LOAD("mlp.up_proj.weight", PL_OP_MATMUL, inter, hidden, &lw->w_up);
    LOAD("mlp.down_proj.weight", PL_OP_MATMUL, hidden, inter, &lw->w_down);
    if (c->mlp_bias) {
        LOAD("mlp.gate_proj.bias", PL_OP_MATMUL, 0, inter, &lw->b_gate);
        LOAD("mlp.up_proj.bias", PL_OP_MATMUL, 0, inter, &lw->b_up);
        LOAD("mlp.down_proj.bias", PL_OP_MATMUL, 0, hidden, &lw->b_down);
    }
#undef LOAD
    return PL_STATUS_OK;
}

/* The loader behind pl_weights_load (st != NULL) and pl_weights_dummy (st == NULL). */
static pl_status weights_build(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                               struct pl_backend *be, uint64_t seed, int want,
                               struct pl_weights **out, struct pl_err *err)
{
    if (want != PL_WEIGHTS_DTYPE_AS_STORED && want != PL_DTYPE_F32 && want != PL_DTYPE_F16 &&
        want != PL_DTYPE_BF16) {
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: dtype %d is not a float type",
                          want);
    }
    *out = NULL;
    if (cfg->n_layers <= 0 || cfg->n_layers > PL_MAX_LAYERS)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: config has %d layers",
                          cfg->n_layers);
    struct pl_weights *w = calloc(1, sizeof(*w));
    if (!w)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "weights: out of memory");
    w->be = be;
    w->layers = calloc((size_t)cfg->n_layers, sizeof(*w->layers));
    if (!w->layers) {
        free(w);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "weights: out of memory");
    }
    /* Set before loading so that pl_weights_free can undo a partial load. */
    w->n_layers = cfg->n_layers;
    w->allocated = st == NULL;
    struct loader L = {.st = st, .be = be, .w = w, .err = err, .seed = seed, .want = want};
    if (want != PL_WEIGHTS_DTYPE_AS_STORED) {
        /* refuse up front, before converting anything, a dtype the backend cannot run */
        static const enum pl_op ops[] = {PL_OP_EMBED, PL_OP_RMSNORM, PL_OP_MATMUL, PL_OP_LOGITS};
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
            if (!be->ops->supports(be, ops[i], (enum pl_dtype)want)) {
                pl_weights_free(w);
                return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                  "dtype %s: the %s backend does not run %s weights (it "
                                  "computes in %s)",
                                  pl_dtype_torch_name((enum pl_dtype)want), be->ops->name,
                                  pl_dtype_torch_name((enum pl_dtype)want),
                                  pl_dtype_torch_name(be->ops->act_dtype));
            }
    }
    if (st && want != PL_WEIGHTS_DTYPE_AS_STORED) {
        /* every slot at most once: embed, final norm, lm_head and 18 per layer */
        L.max_converted = 3 + 18 * cfg->n_layers;
        w->converted = calloc((size_t)L.max_converted, sizeof(*w->converted));
        if (!w->converted) {
            pl_weights_free(w);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "weights: out of memory");
        }
    }
    if (!st && want != PL_WEIGHTS_DTYPE_AS_STORED) {
        L.dummy_dtype = (enum pl_dtype)want;
        if (!be->ops->supports(be, PL_OP_FILL, L.dummy_dtype)) {
            pl_weights_free(w);
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "dummy weights: the %s backend cannot fill %s tensors",
                              be->ops->name, pl_dtype_torch_name(L.dummy_dtype));
        }
    } else if (!st) {
        /* the checkpoint's dtype where the backend's matmul runs it, else bf16 */
        L.dummy_dtype = cfg->dtype;
        if (!be->ops->supports(be, PL_OP_MATMUL, L.dummy_dtype) ||
            !be->ops->supports(be, PL_OP_FILL, L.dummy_dtype))
            L.dummy_dtype = PL_DTYPE_BF16;
        if (!be->ops->supports(be, PL_OP_FILL, L.dummy_dtype))
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "dummy weights: the %s backend cannot fill %s tensors",
                              be->ops->name, pl_dtype_name(L.dummy_dtype));
    }
    const int64_t vocab = cfg->vocab_size, hidden = cfg->hidden_size;
    pl_status status;
    if ((status = load_slot(&L, "model.embed_tokens.weight", PL_OP_EMBED, vocab, hidden,
                            &w->embed)))
        goto fail;
    for (int l = 0; l < cfg->n_layers; l++)
        if ((status = load_layer(&L, cfg, l, &w->layers[l])))
            goto fail;
    if ((status = load_slot(&L, "model.norm.weight", PL_OP_RMSNORM, 0, hidden, &w->final_norm)))
        goto fail;
    if (cfg->tie_word_embeddings) {
        if (!be->ops->supports(be, PL_OP_LOGITS, w->embed.dtype)) {
            status = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                "tensor 'model.embed_tokens.weight' (tied lm_head) has dtype %s, "
                                "which the %s backend does not support for logits",
                                pl_dtype_name(w->embed.dtype),
                                be->ops->name ? be->ops->name : "?");
            goto fail;
        }
        w->lm_head = w->embed;
    } else if ((status = load_slot(&L, "lm_head.weight", PL_OP_LOGITS, vocab, hidden,
                                   &w->lm_head))) {
        goto fail;
    }
    *out = w;
    return PL_STATUS_OK;
fail:
    pl_weights_free(w);
    return status;
}

pl_status pl_weights_load(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                          struct pl_backend *be, struct pl_weights **out, struct pl_err *err)
{
    if (!st) {
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: no checkpoint");
    }
    return weights_build(cfg, st, be, 0, PL_WEIGHTS_DTYPE_AS_STORED, out, err);
}

pl_status pl_weights_load_as(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                             struct pl_backend *be, int dtype, struct pl_weights **out,
                             struct pl_err *err)
{
    if (!st) {
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: no checkpoint");
    }
    return weights_build(cfg, st, be, 0, dtype, out, err);
}

pl_status pl_weights_dummy(const struct pl_model_config *cfg, struct pl_backend *be,
                           uint64_t seed, struct pl_weights **out, struct pl_err *err)
{
    return pl_weights_dummy_as(cfg, be, seed, PL_WEIGHTS_DTYPE_AS_STORED, out, err);
}

pl_status pl_weights_dummy_as(const struct pl_model_config *cfg, struct pl_backend *be,
                              uint64_t seed, int dtype, struct pl_weights **out,
                              struct pl_err *err)
{
    pl_status st = weights_build(cfg, NULL, be, seed, dtype, out, err);
    if (st == PL_STATUS_OK && be->ops->sync(be) != PL_STATUS_OK) {
        pl_weights_free(*out);
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INTERNAL, "dummy weights: the %s backend failed",
                          be->ops->name);
    }
    return st;
}

static bool was_converted(const struct pl_weights *w, const void *p)
{
    for (int i = 0; i < w->n_converted; i++)
        if (w->converted[i] == p)
            return true;
    return false;
}

static void unmap(struct pl_backend *be, const struct pl_weights *w, struct pl_weight *s)
{
    if (s->data && (w->allocated || was_converted(w, s->data)))
        be->ops->free(be, (void *)s->data);
    else if (s->data)
        be->ops->unmap_weight(be, (void *)s->data);
    *s = (struct pl_weight){0};
}

void pl_weights_free(struct pl_weights *w)
{
    if (!w)
        return;
    struct pl_backend *be = w->be;
    if (w->lm_head.data == w->embed.data) /* tied: one mapping */
        w->lm_head = (struct pl_weight){0};
    unmap(be, w, &w->embed);
    unmap(be, w, &w->lm_head);
    unmap(be, w, &w->final_norm);
    for (int l = 0; w->layers && l < w->n_layers; l++) {
        struct pl_layer_weights *lw = &w->layers[l];
        struct pl_weight *slots[] = {
            &lw->attn_norm, &lw->wq,     &lw->wk,     &lw->wv,     &lw->wo,
            &lw->bq,        &lw->bk,     &lw->bv,     &lw->bo,     &lw->q_norm,
            &lw->k_norm,    &lw->ffn_norm, &lw->w_gate, &lw->w_up, &lw->w_down,
            &lw->b_gate,    &lw->b_up,   &lw->b_down,
        };
        for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++)
            unmap(be, w, slots[i]);
    }
    free(w->converted);
    free(w->layers);
    free(w);
}
