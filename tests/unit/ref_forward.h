/*
 * ref_forward.h -- an independent naive forward of the tiny in-memory models
 * (tiny_model.h), in double: full causal attention over contiguous K/V (no
 * paging, no KV cache), rope from the textbook formula; the families' features
 * as transformers computes them (biases, q/k norms, sliding windows, Gemma's
 * sandwich norms, gelu-tanh, embedding scale, soft-capping and local rope, the
 * MoE routing). The reference of test_llama.c (logits) and test_pooling.c
 * (final hidden states).
 */
#ifndef PL_TEST_REF_FORWARD_H
#define PL_TEST_REF_FORWARD_H

#include "tiny_model.h"
#include "util/dtype.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline double wget(const struct pl_weight *w, size_t i) { return pl_dtype_get_f32(w->data, w->dtype, i); }

static inline void ref_rmsnorm(double *y, const double *x, int d, const struct pl_weight *w, double eps)
{
    double ss = 0;
    for (int i = 0; i < d; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++)
        y[i] = wget(w, (size_t)i) * x[i] * inv;
}

/* y[rows] = W x (+ b) */
static inline void ref_linear(double *y, const double *x, const struct pl_weight *w, const struct pl_weight *b)
{
    for (int64_t r = 0; r < w->rows; r++) {
        double s = b && b->data ? wget(b, (size_t)r) : 0.0;
        for (int64_t c = 0; c < w->cols; c++)
            s += wget(w, (size_t)(r * w->cols + c)) * x[c];
        y[r] = s;
    }
}

static inline void ref_rope(double *v, int hd, int pos, double theta)
{
    /* (rotates all head_dim dims: the test models use no partial rotary) */
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double a = pos / pow(theta, 2.0 * i / hd);
        double x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cos(a) - x2 * sin(a);
        v[i + half] = x2 * cos(a) + x1 * sin(a);
    }
}

/* The gated MLP (gate, up, down) of one token into o[hid]. */
static inline void ref_mlp(double *o, const double *xn, const struct pl_weight *wg,
                    const struct pl_weight *wu, const struct pl_weight *wd, int inter, bool gelu)
{
    double *g = malloc(sizeof(double) * (size_t)inter), *u = malloc(sizeof(double) * (size_t)inter);
    ref_linear(g, xn, wg, NULL);
    ref_linear(u, xn, wu, NULL);
    for (int i = 0; i < inter; i++) {
        if (gelu)
            g[i] = 0.5 * g[i] * (1.0 + tanh(sqrt(2.0 / M_PI) * (g[i] + 0.044715 * g[i] * g[i] * g[i]))) *
                   u[i];
        else
            g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
    }
    ref_linear(o, g, wd, NULL);
    free(g), free(u);
}

/* The sparse MoE block as transformers computes it: softmax, top-k, optional renorm,
 * weighted sum of the experts (+ the sigmoid-gated shared expert). */
static inline void ref_moe(double *o, const double *xn, const struct pl_model_config *c,
                    const struct pl_layer_weights *L, int hid)
{
    const int E = c->n_experts, K = c->n_experts_per_tok;
    double p[16], sum = 0, mx = -1e300, *eo = malloc(sizeof(double) * (size_t)hid);
    bool used[16] = {false};
    ref_linear(p, xn, &L->router, NULL);
    for (int e = 0; e < E; e++)
        mx = fmax(mx, p[e]);
    for (int e = 0; e < E; e++)
        sum += (p[e] = exp(p[e] - mx));
    for (int e = 0; e < E; e++)
        p[e] /= sum;
    int ids[16];
    double w[16], wsum = 0;
    for (int k = 0; k < K; k++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!used[e] && (best < 0 || p[e] > p[best]))
                best = e;
        used[best] = true;
        ids[k] = best;
        wsum += (w[k] = p[best]);
    }
    for (int i = 0; i < hid; i++)
        o[i] = 0;
    for (int k = 0; k < K; k++) {
        const struct pl_expert_weights *x = &L->experts[ids[k]];
        ref_mlp(eo, xn, &x->w_gate, &x->w_up, &x->w_down, c->moe_intermediate_size,
                c->act == PL_ACT_GELU_TANH);
        for (int i = 0; i < hid; i++)
            o[i] += (c->norm_topk_prob ? w[k] / wsum : w[k]) * eo[i];
    }
    if (c->shared_expert_intermediate_size > 0) {
        double gl;
        ref_linear(&gl, xn, &L->sh_router, NULL);
        ref_mlp(eo, xn, &L->sh_gate, &L->sh_up, &L->sh_down, c->shared_expert_intermediate_size,
                false);
        for (int i = 0; i < hid; i++)
            o[i] += eo[i] / (1.0 + exp(-gl));
    }
    free(eo);
}

/* logits[len, vocab] (may be NULL) and the final hidden states after the final norm,
 * hidden[len, hidden_size] (may be NULL), for every position of toks. */
static inline void ref_forward_ex(const struct tiny_model *tm, const int32_t *toks, int len,
                                  double *logits, double *hidden)
{
    const struct pl_model_config *c = &tm->cfg;
    int hid = c->hidden_size, hd = c->head_dim, nh = c->n_heads, nkv = c->n_kv_heads;
    int qd = nh * hd, kvd = nkv * hd, inter = c->intermediate_size;
    double *X = calloc((size_t)len * hid, sizeof(double)), *xn = malloc(sizeof(double) * hid);
    double *Q = malloc(sizeof(double) * len * qd), *K = malloc(sizeof(double) * len * kvd);
    double *V = malloc(sizeof(double) * len * kvd), *A = malloc(sizeof(double) * qd);
    double *o = malloc(sizeof(double) * hid), *g = malloc(sizeof(double) * inter);
    double *u = malloc(sizeof(double) * inter), *sc = malloc(sizeof(double) * len);
    const bool sandwich = c->arch == PL_TEST_ARCH_GEMMA2 || c->arch == PL_TEST_ARCH_GEMMA3;
    for (int t = 0; t < len; t++)
        for (int i = 0; i < hid; i++) {
            X[t * hid + i] = wget(&tm->w.embed, (size_t)toks[t] * hid + i);
            if (c->embed_scale != 0) /* Gemma: rounded to fp32 like the activations */
                X[t * hid + i] = (float)X[t * hid + i] * c->embed_scale;
        }
    for (int l = 0; l < c->n_layers; l++) {
        const struct pl_layer_weights *L = &tm->w.layers[l];
        int window = c->layer_sliding_window[l];
        double theta = window > 0 && c->has_local_rope ? c->rope_local.theta : c->rope.theta;
        double scale = c->attn_scale > 0 ? c->attn_scale : 1.0 / sqrt((double)hd);
        for (int t = 0; t < len; t++) {
            ref_rmsnorm(xn, X + t * hid, hid, &L->attn_norm, c->rms_norm_eps);
            ref_linear(Q + t * qd, xn, &L->wq, c->attention_bias ? &L->bq : NULL);
            ref_linear(K + t * kvd, xn, &L->wk, c->attention_bias ? &L->bk : NULL);
            ref_linear(V + t * kvd, xn, &L->wv, c->attention_bias ? &L->bv : NULL);
            for (int h = 0; h < nh; h++) {
                if (c->qk_norm)
                    ref_rmsnorm(Q + t * qd + h * hd, Q + t * qd + h * hd, hd, &L->q_norm, c->rms_norm_eps);
                ref_rope(Q + t * qd + h * hd, hd, t, theta);
            }
            for (int h = 0; h < nkv; h++) {
                if (c->qk_norm)
                    ref_rmsnorm(K + t * kvd + h * hd, K + t * kvd + h * hd, hd, &L->k_norm, c->rms_norm_eps);
                ref_rope(K + t * kvd + h * hd, hd, t, theta);
            }
        }
        for (int t = 0; t < len; t++) {
            for (int h = 0; h < nh; h++) {
                int kh = h / (nh / nkv);
                double mx = -1e300, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < hd; i++)
                        d += Q[t * qd + h * hd + i] * K[s * kvd + kh * hd + i];
                    sc[s] = d * scale;
                    if (c->attn_softcap > 0)
                        sc[s] = tanh(sc[s] / c->attn_softcap) * c->attn_softcap;
                    bool in_window = window == 0 || s > t - window;
                    if (!in_window)
                        sc[s] = -INFINITY;
                    if (sc[s] > mx)
                        mx = sc[s];
                }
                for (int i = 0; i < hd; i++)
                    A[h * hd + i] = 0;
                for (int s = 0; s <= t; s++) {
                    double p = exp(sc[s] - mx);
                    sum += p;
                    for (int i = 0; i < hd; i++)
                        A[h * hd + i] += p * V[s * kvd + kh * hd + i];
                }
                for (int i = 0; i < hd; i++)
                    A[h * hd + i] /= sum;
            }
            ref_linear(o, A, &L->wo, NULL);
            if (sandwich)
                ref_rmsnorm(o, o, hid, &L->attn_post_norm, c->rms_norm_eps);
            for (int i = 0; i < hid; i++)
                X[t * hid + i] += o[i];
        }
        for (int t = 0; t < len; t++) {
            ref_rmsnorm(xn, X + t * hid, hid, &L->ffn_norm, c->rms_norm_eps);
            if (c->layer_moe[l]) {
                ref_moe(o, xn, c, L, hid);
                for (int i = 0; i < hid; i++)
                    X[t * hid + i] += o[i];
                continue;
            }
            ref_linear(g, xn, &L->w_gate, NULL);
            ref_linear(u, xn, &L->w_up, NULL);
            for (int i = 0; i < inter; i++) {
                if (c->act == PL_ACT_GELU_TANH)
                    g[i] = 0.5 * g[i] *
                           (1.0 + tanh(sqrt(2.0 / M_PI) * (g[i] + 0.044715 * g[i] * g[i] * g[i]))) *
                           u[i];
                else
                    g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            }
            ref_linear(o, g, &L->w_down, NULL);
            if (sandwich)
                ref_rmsnorm(o, o, hid, &L->ffn_post_norm, c->rms_norm_eps);
            for (int i = 0; i < hid; i++)
                X[t * hid + i] += o[i];
        }
    }
    for (int t = 0; t < len; t++) {
        ref_rmsnorm(xn, X + t * hid, hid, &tm->w.final_norm, c->rms_norm_eps);
        if (hidden)
            memcpy(hidden + (size_t)t * hid, xn, sizeof(double) * (size_t)hid);
        if (!logits)
            continue;
        double *lg = logits + (size_t)t * c->vocab_size;
        ref_linear(lg, xn, &tm->w.lm_head, NULL);
        for (int v = 0; c->final_softcap > 0 && v < c->vocab_size; v++)
            lg[v] = tanh(lg[v] / c->final_softcap) * c->final_softcap;
    }
    free(X), free(xn), free(Q), free(K), free(V), free(A), free(o), free(g), free(u), free(sc);
}

/* logits[len, vocab] for every position of toks. */
static inline void ref_forward(const struct tiny_model *tm, const int32_t *toks, int len,
                               double *logits)
{
    ref_forward_ex(tm, toks, len, logits, NULL);
}

#endif
