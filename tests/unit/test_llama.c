/*
 * test_llama.c -- the decoder on tiny in-memory models.
 *
 * 1. Against an independent naive forward written here in double: full
 *    causal attention over contiguous K/V (no paging, no KV cache), rope from
 *    the textbook formula, for Llama (bf16), Qwen2 biases (f16), Qwen3 q/k
 *    norms (f32), Mistral sliding window and tied embeddings.
 * 2. Batch invariance: one sequence's logits at every position are the same
 *    (within 1e-4) when run alone, batched with other sequences, prefilled in
 *    chunks of various sizes, decoded one token at a time, with shuffled block
 *    assignments and block sizes 8, 16 and 32.
 * 3. Bad batches (out-of-range block or token id) are refused, not run.
 */
#include "backend/backend.h"
#include "engine/model_runner.h"
#include "test.h"
#include "tiny_model.h"

#define MAX_T 256
#define MAX_S 8
#define MBPS 16

/* ---- naive reference forward (double, contiguous) --------------------------------------- */

static double wget(const struct pl_weight *w, size_t i) { return pl_dtype_get_f32(w->data, w->dtype, i); }

static void ref_rmsnorm(double *y, const double *x, int d, const struct pl_weight *w, double eps)
{
    double ss = 0;
    for (int i = 0; i < d; i++)
        ss += x[i] * x[i];
    double inv = 1.0 / sqrt(ss / d + eps);
    for (int i = 0; i < d; i++)
        y[i] = wget(w, (size_t)i) * x[i] * inv;
}

/* y[rows] = W x (+ b) */
static void ref_linear(double *y, const double *x, const struct pl_weight *w, const struct pl_weight *b)
{
    for (int64_t r = 0; r < w->rows; r++) {
        double s = b && b->data ? wget(b, (size_t)r) : 0.0;
        for (int64_t c = 0; c < w->cols; c++)
            s += wget(w, (size_t)(r * w->cols + c)) * x[c];
        y[r] = s;
    }
}

static void ref_rope(double *v, int hd, int pos, double theta)
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
static void ref_mlp(double *o, const double *xn, const struct pl_weight *wg,
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
static void ref_moe(double *o, const double *xn, const struct pl_model_config *c,
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

/* logits[len, vocab] for every position of toks. */
static void ref_forward(const struct tiny_model *tm, const int32_t *toks, int len, double *logits)
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
        double *lg = logits + (size_t)t * c->vocab_size;
        ref_linear(lg, xn, &tm->w.lm_head, NULL);
        for (int v = 0; c->final_softcap > 0 && v < c->vocab_size; v++)
            lg[v] = tanh(lg[v] / c->final_softcap) * c->final_softcap;
    }
    free(X), free(xn), free(Q), free(K), free(V), free(A), free(o), free(g), free(u), free(sc);
}

/* ---- a tiny paged driver ---------------------------------------------------------------- */

struct tseq {
    const int32_t *toks;
    int len;
    int n_cached;          /* tokens whose K/V are in the cache */
    int32_t table[MBPS];
    int n_blocks;
};

struct tpool {
    int32_t free_ids[512];
    int n_free;
};

static uint64_t trng = 12345;
static int trand(int n)
{
    trng = trng * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((trng >> 33) % (uint64_t)n);
}

static void tpool_init(struct tpool *p, int n_blocks, bool shuffle)
{
    p->n_free = n_blocks;
    for (int i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i; /* pops 0, 1, 2, ... */
    if (shuffle)
        for (int i = n_blocks - 1; i > 0; i--) {
            int j = trand(i + 1);
            int32_t t = p->free_ids[i];
            p->free_ids[i] = p->free_ids[j], p->free_ids[j] = t;
        }
}

/* One forward over seqs[i] advancing by n_new[i] tokens; logits for every new token. */
static pl_status tstep(struct pl_model *m, struct pl_kv_cache *kv, struct tpool *pool,
                       struct tseq **seqs, const int *n_new, int n, float *logits)
{
    static int32_t ids[MAX_T], pos[MAX_T], slots[MAX_T], lens[MAX_T], rows[MAX_T];
    static int32_t cu[MAX_S + 1], ctx[MAX_S], tables[MAX_S * MBPS];
    int bs = kv->block_size, T = 0, max_q = 0, max_ctx = 0;
    cu[0] = 0;
    for (int s = 0; s < n; s++) {
        struct tseq *q = seqs[s];
        int end = q->n_cached + n_new[s];
        while (q->n_blocks * bs < end)
            q->table[q->n_blocks++] = pool->free_ids[--pool->n_free];
        for (int p = q->n_cached; p < end; p++, T++) {
            ids[T] = q->toks[p];
            pos[T] = p;
            lens[T] = end;
            slots[T] = q->table[p / bs] * bs + p % bs;
            rows[T] = T;
        }
        cu[s + 1] = T;
        ctx[s] = end;
        for (int i = 0; i < MBPS; i++)
            tables[s * MBPS + i] = i < q->n_blocks ? q->table[i] : -1;
        if (n_new[s] > max_q)
            max_q = n_new[s];
        if (end > max_ctx)
            max_ctx = end;
        q->n_cached = end;
    }
    struct pl_batch b = {
        .n_tokens = T, .n_seqs = n, .token_ids = ids, .positions = pos, .seq_lens = lens,
        .slot_mapping = slots, .cu_seqlens_q = cu, .context_lens = ctx, .block_tables = tables,
        .max_blocks_per_seq = MBPS, .max_q_len = max_q, .max_context_len = max_ctx,
        .logits_rows = rows, .n_logits = T,
    };
    struct pl_err err;
    pl_status st = pl_model_forward(m, &b, kv, logits, &err);
    if (st != PL_STATUS_OK)
        fprintf(stderr, "forward: %s\n", err.msg);
    return st;
}

struct rig {
    struct tiny_model tm;
    struct pl_backend *be;
    struct pl_model *m;
    struct pl_kv_cache kv;
    struct tpool pool;
};

static bool rig_init(struct rig *r, const struct tiny_opts *o, uint64_t seed, int bs, bool shuffle)
{
    struct pl_err err;
    tiny_model_init(&r->tm, o, seed);
    if (pl_backend_cpu_new(2, &r->be, &err) != PL_STATUS_OK ||
        pl_model_new(&r->tm.cfg, &r->tm.w, r->be, MAX_T, MAX_S, MBPS, &r->m, &err) != PL_STATUS_OK ||
        pl_kv_cache_init(&r->kv, r->be, &r->tm.cfg, 96, bs, &err) != PL_STATUS_OK) {
        fprintf(stderr, "rig: %s\n", err.msg);
        return false;
    }
    tpool_init(&r->pool, 96, shuffle);
    return true;
}

static void rig_fini(struct rig *r)
{
    pl_kv_cache_fini(&r->kv, r->be);
    pl_model_free(r->m);
    pl_backend_free(r->be);
    tiny_model_fini(&r->tm);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void check_against_naive(const struct tiny_opts *o, const char *name)
{
    struct rig r;
    REQUIRE(rig_init(&r, o, 7, 16, true));
    int32_t toks[37];
    for (int i = 0; i < 37; i++)
        toks[i] = trand(r.tm.cfg.vocab_size);
    int V = r.tm.cfg.vocab_size;
    float *got = malloc(sizeof(float) * 37 * V);
    double *ref = malloc(sizeof(double) * 37 * V);
    struct tseq s = {toks, 37, 0, {0}, 0};
    struct tseq *sp = &s;
    int n_new = 37;
    REQUIRE(tstep(r.m, &r.kv, &r.pool, &sp, &n_new, 1, got) == PL_STATUS_OK);
    ref_forward(&r.tm, toks, 37, ref);
    double max_err = 0;
    for (int i = 0; i < 37 * V; i++) {
        double e = fabs(got[i] - ref[i]) / (1.0 + fabs(ref[i]));
        if (e > max_err)
            max_err = e;
    }
    CHECKF(max_err < 1e-4, "%s: max relative logit error %g", name, max_err);
    free(got), free(ref);
    rig_fini(&r);
}

static void test_forward_against_naive(void)
{
    struct tiny_opts llama = {PL_TEST_ARCH_LLAMA, PL_DTYPE_BF16, false, 0, 2};
    struct tiny_opts qwen2 = {PL_TEST_ARCH_QWEN2, PL_DTYPE_F16, false, 0, 2};
    struct tiny_opts qwen3 = {PL_TEST_ARCH_QWEN3, PL_DTYPE_F32, true, 0, 3};
    struct tiny_opts mistral = {PL_TEST_ARCH_MISTRAL, PL_DTYPE_BF16, false, 5, 2};
    check_against_naive(&llama, "llama bf16");
    check_against_naive(&qwen2, "qwen2 f16 biases");
    check_against_naive(&qwen3, "qwen3 f32 qk-norm tied");
    check_against_naive(&mistral, "mistral sliding window 5");
    struct tiny_opts gemma2 = {PL_TEST_ARCH_GEMMA2, PL_DTYPE_BF16, false, 5, 3};
    struct tiny_opts gemma3 = {PL_TEST_ARCH_GEMMA3, PL_DTYPE_F32, true, 6, 3};
    check_against_naive(&gemma2, "gemma2 sandwich softcap gelu window 5");
    check_against_naive(&gemma3, "gemma3 qk-norm local rope window 6 tied");
    struct tiny_opts mixtral = {PL_TEST_ARCH_MIXTRAL, PL_DTYPE_BF16, false, 0, 2};
    struct tiny_opts qwen2moe = {PL_TEST_ARCH_QWEN2_MOE, PL_DTYPE_F16, false, 0, 2};
    struct tiny_opts qwen3moe = {PL_TEST_ARCH_QWEN3_MOE, PL_DTYPE_F32, false, 0, 3};
    check_against_naive(&mixtral, "mixtral top-2 renormalised");
    check_against_naive(&qwen2moe, "qwen2-moe shared expert, dense layer 1");
    check_against_naive(&qwen3moe, "qwen3-moe top-3 norm_topk_prob, dense layers 0 and 2");
}

/* Runs the target (and optional companions) with per-step chunk sizes; collects the
 * target's logits for every position into out [len, vocab]. */
static bool run_schedule(const struct tiny_opts *o, int bs, bool shuffle, const int32_t *toks,
                         int len, int n_comp, int chunk, float *out)
{
    struct rig r;
    if (!rig_init(&r, o, 99, bs, shuffle))
        return false;
    int V = r.tm.cfg.vocab_size;
    static int32_t comp_toks[3][64];
    struct tseq seqs[4];
    int comp_len[3] = {23, 9, 41};
    for (int c = 0; c < n_comp; c++) {
        for (int i = 0; i < comp_len[c]; i++)
            comp_toks[c][i] = trand(V);
        seqs[c] = (struct tseq){comp_toks[c], comp_len[c], 0, {0}, 0};
    }
    int target = n_comp > 0 ? trand(n_comp + 1) : 0; /* the target sits anywhere in the batch */
    struct tseq tgt = {toks, len, 0, {0}, 0};
    float *lg = malloc(sizeof(float) * MAX_T * V);
    bool ok = true;
    for (;;) {
        struct tseq *order[4];
        int n_new[4], n = 0, tgt_row = -1, row = 0;
        for (int i = 0, c = 0; i < n_comp + 1; i++) {
            struct tseq *q = i == target ? &tgt : &seqs[c++];
            int left = q->len - q->n_cached;
            if (left <= 0)
                continue;
            /* companions use other chunk sizes so batches mix prefill and decode rows */
            int want = q == &tgt ? chunk : (chunk <= 0 ? left : chunk + 2 * (i + 1));
            int k = want <= 0 || want > left ? left : want;
            if (q == &tgt)
                tgt_row = row;
            order[n] = q;
            n_new[n++] = k;
            row += k;
        }
        if (n == 0)
            break;
        int tgt_start = tgt.n_cached, tgt_new = 0;
        for (int i = 0; i < n; i++)
            if (order[i] == &tgt)
                tgt_new = n_new[i];
        if (tstep(r.m, &r.kv, &r.pool, order, n_new, n, lg) != PL_STATUS_OK) {
            ok = false;
            break;
        }
        if (tgt_row >= 0)
            memcpy(out + (size_t)tgt_start * V, lg + (size_t)tgt_row * V, sizeof(float) * tgt_new * V);
    }
    free(lg);
    rig_fini(&r);
    return ok;
}

static void check_invariance(const struct tiny_opts *o, const char *name)
{
    int len = 45, V = 64;
    int32_t toks[45];
    for (int i = 0; i < len; i++)
        toks[i] = trand(V);
    float *ref = malloc(sizeof(float) * len * V), *got = malloc(sizeof(float) * len * V);
    REQUIRE(run_schedule(o, 16, false, toks, len, 0, 0, ref)); /* alone, whole prompt */
    const int bss[3] = {8, 16, 32};
    const int chunks[5] = {0, 1, 3, 7, 16}; /* 0 = whole prompt; 1 = token-by-token decode */
    for (int bi = 0; bi < 3; bi++)
        for (int ci = 0; ci < 5; ci++)
            for (int n_comp = 0; n_comp <= 3; n_comp += 3) {
                REQUIRE(run_schedule(o, bss[bi], true, toks, len, n_comp, chunks[ci], got));
                double max_diff = 0;
                for (int i = 0; i < len * V; i++)
                    max_diff = fmax(max_diff, fabs((double)got[i] - ref[i]));
                CHECKF(max_diff <= 1e-4, "%s: block %d chunk %d companions %d: max diff %g", name,
                       bss[bi], chunks[ci], n_comp, max_diff);
            }
    free(ref), free(got);
}

static void test_batch_invariance(void)
{
    struct tiny_opts qwen2 = {PL_TEST_ARCH_QWEN2, PL_DTYPE_BF16, false, 0, 2};
    struct tiny_opts mistral = {PL_TEST_ARCH_MISTRAL, PL_DTYPE_F16, true, 6, 2};
    check_invariance(&qwen2, "qwen2");
    check_invariance(&mistral, "mistral window 6");
}

static void test_bad_batches_refused(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_LLAMA, PL_DTYPE_F32, false, 0, 1};
    struct rig r;
    REQUIRE(rig_init(&r, &o, 3, 16, false));
    int32_t ids[2] = {5, 6}, pos[2] = {0, 1}, slots[2] = {0, 1}, cu[2] = {0, 2}, ctx[1] = {2};
    int32_t table[MBPS], rows[1] = {1};
    for (int i = 0; i < MBPS; i++)
        table[i] = -1;
    table[0] = 0;
    struct pl_batch b = {
        .n_tokens = 2, .n_seqs = 1, .token_ids = ids, .positions = pos, .slot_mapping = slots,
        .cu_seqlens_q = cu, .context_lens = ctx, .block_tables = table, .max_blocks_per_seq = MBPS,
        .max_q_len = 2, .max_context_len = 2, .logits_rows = rows, .n_logits = 1,
    };
    float logits[64];
    struct pl_err err;
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_OK);
    ids[1] = 64; /* outside the vocabulary */
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INVALID_ARGUMENT);
    ids[1] = 6;
    table[0] = 96, slots[0] = 96 * 16, slots[1] = 96 * 16 + 1; /* past the pool */
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INVALID_ARGUMENT);
    table[0] = 0, slots[0] = 0, slots[1] = 2; /* slot does not match the block table */
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INTERNAL);
    CHECK(strstr(err.msg, "slot") != NULL);
    rig_fini(&r);
}

static void test_missing_weight_refused(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_QWEN3, PL_DTYPE_BF16, false, 0, 1};
    struct tiny_model tm;
    tiny_model_init(&tm, &o, 1);
    tm.layers[0].k_norm.data = NULL;
    struct pl_backend *be;
    struct pl_model *m = NULL;
    struct pl_err err;
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    CHECK(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "k_norm") != NULL);
    tm.layers[0].k_norm.data = tm.layers[0].q_norm.data;
    tm.layers[0].wq.rows = 31;
    CHECK(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_FORMAT);
    CHECK(m == NULL);
    pl_backend_free(be);
    tiny_model_fini(&tm);
}

int main(void)
{
    PL_RUN(test_forward_against_naive);
    PL_RUN(test_batch_invariance);
    PL_RUN(test_bad_batches_refused);
    PL_RUN(test_missing_weight_refused);
    return pl_test_summary();
}
