/*
 * ref_forward.h -- an independent naive forward of the tiny in-memory models
 * (tiny_model.h), in double: full causal attention over contiguous K/V (no
 * paging, no KV cache), rope from the textbook formula. The reference of
 * test_llama.c (logits) and test_pooling.c (final hidden states).
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
    int half = hd / 2;
    for (int i = 0; i < half; i++) {
        double a = pos / pow(theta, 2.0 * i / hd);
        double x1 = v[i], x2 = v[i + half];
        v[i] = x1 * cos(a) - x2 * sin(a);
        v[i + half] = x2 * cos(a) + x1 * sin(a);
    }
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
    for (int t = 0; t < len; t++)
        for (int i = 0; i < hid; i++)
            X[t * hid + i] = wget(&tm->w.embed, (size_t)toks[t] * hid + i);
    for (int l = 0; l < c->n_layers; l++) {
        const struct pl_layer_weights *L = &tm->w.layers[l];
        int window = c->layer_sliding_window[l];
        for (int t = 0; t < len; t++) {
            ref_rmsnorm(xn, X + t * hid, hid, &L->attn_norm, c->rms_norm_eps);
            ref_linear(Q + t * qd, xn, &L->wq, c->attention_bias ? &L->bq : NULL);
            ref_linear(K + t * kvd, xn, &L->wk, c->attention_bias ? &L->bk : NULL);
            ref_linear(V + t * kvd, xn, &L->wv, c->attention_bias ? &L->bv : NULL);
            for (int h = 0; h < nh; h++) {
                if (c->qk_norm)
                    ref_rmsnorm(Q + t * qd + h * hd, Q + t * qd + h * hd, hd, &L->q_norm, c->rms_norm_eps);
                ref_rope(Q + t * qd + h * hd, hd, t, c->rope.theta);
            }
            for (int h = 0; h < nkv; h++) {
                if (c->qk_norm)
                    ref_rmsnorm(K + t * kvd + h * hd, K + t * kvd + h * hd, hd, &L->k_norm, c->rms_norm_eps);
                ref_rope(K + t * kvd + h * hd, hd, t, c->rope.theta);
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
                    sc[s] = d / sqrt((double)hd);
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
            for (int i = 0; i < hid; i++)
                X[t * hid + i] += o[i];
        }
        for (int t = 0; t < len; t++) {
            ref_rmsnorm(xn, X + t * hid, hid, &L->ffn_norm, c->rms_norm_eps);
            ref_linear(g, xn, &L->w_gate, NULL);
            ref_linear(u, xn, &L->w_up, NULL);
            for (int i = 0; i < inter; i++)
                g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
            ref_linear(o, g, &L->w_down, NULL);
            for (int i = 0; i < hid; i++)
                X[t * hid + i] += o[i];
        }
    }
    for (int t = 0; t < len; t++) {
        ref_rmsnorm(xn, X + t * hid, hid, &tm->w.final_norm, c->rms_norm_eps);
        if (hidden)
            memcpy(hidden + (size_t)t * hid, xn, sizeof(double) * (size_t)hid);
        if (logits)
            ref_linear(logits + (size_t)t * c->vocab_size, xn, &tm->w.lm_head, NULL);
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
