/*
 * test_cpu_backend.c -- every CPU op against a naive double-precision
 * reference written here, on random shapes and bf16/f16/f32 weights, with
 * the best SIMD kernels the CPU has and the scalar fallback (test_cpu_matmul.c
 * covers each ISA and the BF16 mode of the matmul). Attention is checked as
 * plain contiguous softmax attention (no paging) against the paged op with
 * shuffled block tables, chunked prefill, GQA and sliding windows; rope
 * against the direct rotate-half formula and pl_rope_build against the
 * transformers formulas re-derived here in double. map_weight: a large weight is
 * copied (byte for byte, 2 MiB-aligned) unless PAGELLM_CPU_WEIGHTS=mmap, a small
 * one is borrowed, and a matmul over the copy equals one over the mapping. The pool
 * counts the CPUs of the affinity mask and, with PAGELLM_CPU_AFFINITY=1, runs
 * thread ith on the ith of them.
 */
#include <sched.h>
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/threadpool.h"
#include "model/rope.h"
#include "test.h"

#include <float.h>
#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd_u32() % (uint32_t)(hi - lo + 1)); }
static float rnd_f(void) { return (float)((double)rnd_u32() / 2147483648.0 - 1.0); } /* [-1, 1) */

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rnd_f();
}

/* A random weight of dtype dt; *vals gets the exact fp32 values it holds. */
static void *make_weight(enum pl_dtype dt, size_t n, float **vals)
{
    *vals = malloc(n * sizeof(float));
    void *w = malloc(n * pl_dtype_size(dt) + 1);
    for (size_t i = 0; i < n; i++) {
        float f = rnd_f();
        if (dt == PL_DTYPE_F32) {
            ((float *)w)[i] = f;
        } else if (dt == PL_DTYPE_BF16) {
            ((uint16_t *)w)[i] = pl_f32_to_bf16(f);
        } else {
            ((uint16_t *)w)[i] = pl_f32_to_f16(f);
        }
        (*vals)[i] = pl_dtype_get_f32(w, dt, i);
    }
    return w;
}

static const enum pl_dtype dtypes[3] = {PL_DTYPE_F32, PL_DTYPE_BF16, PL_DTYPE_F16};

static struct pl_backend *new_backend(int n_threads)
{
    struct pl_backend *be = NULL;
    struct pl_err err;
    pl_status st = pl_backend_cpu_new(n_threads, &be, &err);
    if (st != PL_STATUS_OK) {
        fprintf(stderr, "backend: %s\n", err.msg);
        exit(1);
    }
    return be;
}

/* Relative error against the reference, scaled by the magnitude of the terms summed. */
#define CHECK_REL(got, ref, mag, rel)                                                         \
    CHECKF(fabs((double)(got) - (double)(ref)) <= (rel) * ((mag) + 1e-30) + 1e-30,         \
           "%.9g vs %.9g (scale %g)", (double)(got), (double)(ref), (double)(mag))

static void test_matmul_against_reference(void)
{
    struct pl_backend *be = new_backend(2);
    for (int simd = 1; simd >= 0; simd--) {
        pl_backend_cpu_set_simd(be, simd);
        for (int iter = 0; iter < 60; iter++) {
            enum pl_dtype dt = dtypes[iter % 3];
            int n = rnd_int(1, 11), rows = rnd_int(1, 41), cols = rnd_int(1, 90);
            if (iter % 4 == 0)
                cols = 8 * rnd_int(1, 12); /* no scalar tail */
            int ld_out = rows + rnd_int(0, 3);
            bool with_bias = iter % 2;
            float *wv, *bv = NULL;
            void *w = make_weight(dt, (size_t)rows * cols, &wv);
            void *b = with_bias ? make_weight(dt, (size_t)rows, &bv) : NULL;
            float *x = malloc(sizeof(float) * n * cols);
            float *out = malloc(sizeof(float) * n * ld_out);
            fill(x, (size_t)n * cols);
            for (int i = 0; i < n * ld_out; i++)
                out[i] = 12345.0f;
            struct pl_weight W = {w, dt, rows, cols}, B = {b, dt, 1, rows};
            be->ops->matmul(be, out, ld_out, x, &W, with_bias ? &B : NULL, n);
            for (int t = 0; t < n; t++) {
                for (int r = 0; r < rows; r++) {
                    double ref = with_bias ? bv[r] : 0.0, mag = fabs(ref);
                    for (int k = 0; k < cols; k++) {
                        ref += (double)x[t * cols + k] * wv[r * cols + k];
                        mag += fabs((double)x[t * cols + k] * wv[r * cols + k]);
                    }
                    CHECK_REL(out[t * ld_out + r], ref, mag, 1e-5);
                }
                for (int r = rows; r < ld_out; r++)
                    CHECK(out[t * ld_out + r] == 12345.0f); /* padding columns untouched */
            }
            free(w), free(wv), free(b), free(bv), free(x), free(out);
        }
    }
    pl_backend_free(be);
}

/* A token's matmul result is bit-identical alone, in any batch, with any thread count. */
static void test_matmul_batch_invariance(void)
{
    struct pl_backend *b1 = new_backend(1), *b3 = new_backend(3);
    int rows = 37, cols = 77, n = 13;
    float *wv;
    void *w = make_weight(PL_DTYPE_BF16, (size_t)rows * cols, &wv);
    struct pl_weight W = {w, PL_DTYPE_BF16, rows, cols};
    float *x = malloc(sizeof(float) * n * cols), *all = malloc(sizeof(float) * n * rows);
    float *one = malloc(sizeof(float) * rows), *all3 = malloc(sizeof(float) * n * rows);
    fill(x, (size_t)n * cols);
    b1->ops->matmul(b1, all, rows, x, &W, NULL, n);
    b3->ops->matmul(b3, all3, rows, x, &W, NULL, n);
    CHECK(!memcmp(all, all3, sizeof(float) * n * rows));
    for (int t = 0; t < n; t++) {
        b3->ops->matmul(b3, one, rows, x + t * cols, &W, NULL, 1);
        CHECKF(!memcmp(one, all + t * rows, sizeof(float) * rows), "token %d", t);
    }
    free(w), free(wv), free(x), free(all), free(one), free(all3);
    pl_backend_free(b1);
    pl_backend_free(b3);
}

static void test_logits_and_embed(void)
{
    struct pl_backend *be = new_backend(2);
    for (int iter = 0; iter < 9; iter++) {
        enum pl_dtype dt = dtypes[iter % 3];
        int vocab = rnd_int(3, 70), d = rnd_int(1, 40), n = rnd_int(1, 6);
        float *tv;
        void *table = make_weight(dt, (size_t)vocab * d, &tv);
        struct pl_weight T = {table, dt, vocab, d};
        int32_t ids[6];
        for (int i = 0; i < n; i++)
            ids[i] = rnd_int(0, vocab - 1);
        float *x = malloc(sizeof(float) * n * d), *lg = malloc(sizeof(float) * n * vocab);
        be->ops->embed(be, x, &T, ids, n);
        for (int i = 0; i < n; i++)
            for (int c = 0; c < d; c++)
                CHECK(x[i * d + c] == tv[ids[i] * d + c]);
        be->ops->logits(be, lg, x, &T, n);
        for (int i = 0; i < n; i++)
            for (int v = 0; v < vocab; v++) {
                double ref = 0, mag = 0;
                for (int c = 0; c < d; c++) {
                    ref += (double)x[i * d + c] * tv[v * d + c];
                    mag += fabs((double)x[i * d + c] * tv[v * d + c]);
                }
                CHECK_REL(lg[i * vocab + v], ref, mag, 1e-5);
            }
        free(table), free(tv), free(x), free(lg);
    }
    pl_backend_free(be);
}

static void test_rmsnorm(void)
{
    struct pl_backend *be = new_backend(2);
    for (int iter = 0; iter < 12; iter++) {
        enum pl_dtype dt = dtypes[iter % 3];
        int n = rnd_int(1, 9), d = rnd_int(1, 100);
        if (iter == 0)
            n = 400, d = 64; /* large enough to run on the pool */
        bool with_res = iter % 2, in_place = iter % 4 >= 2;
        float eps = 1e-6f * (float)rnd_int(1, 10);
        float *wv;
        void *w = make_weight(dt, (size_t)d, &wv);
        struct pl_weight W = {w, dt, 1, d};
        size_t sz = (size_t)n * d;
        float *x = malloc(sizeof(float) * sz), *x0 = malloc(sizeof(float) * sz);
        float *res = malloc(sizeof(float) * sz), *res0 = malloc(sizeof(float) * sz);
        float *out = malloc(sizeof(float) * sz);
        fill(x, sz), fill(res, sz);
        memcpy(x0, x, sizeof(float) * sz), memcpy(res0, res, sizeof(float) * sz);
        float *dst = in_place ? x : out;
        be->ops->rmsnorm(be, dst, with_res ? res : NULL, x, &W, n, d, eps);
        for (int r = 0; r < n; r++) {
            double ss = 0, src[100];
            for (int c = 0; c < d; c++) {
                src[c] = with_res ? (double)res0[r * d + c] + x0[r * d + c] : x0[r * d + c];
                ss += src[c] * src[c];
            }
            double inv = 1.0 / sqrt(ss / d + eps);
            for (int c = 0; c < d; c++) {
                if (with_res)
                    CHECK_REL(res[r * d + c], src[c], fabs(src[c]), 1e-6);
                double ref = wv[c] * src[c] * inv;
                CHECK_REL(dst[r * d + c], ref, fabs(ref), 1e-5);
            }
        }
        free(w), free(wv), free(x), free(x0), free(res), free(res0), free(out);
    }
    pl_backend_free(be);
}

static void test_silu_mul_and_get_rows(void)
{
    struct pl_backend *be = new_backend(2);
    int n = 300, d = 70; /* n*d over the pool threshold */
    float *g = malloc(sizeof(float) * n * d), *u = malloc(sizeof(float) * n * d);
    float *o = malloc(sizeof(float) * n * d);
    fill(g, (size_t)n * d), fill(u, (size_t)n * d);
    for (int i = 0; i < n * d; i++)
        g[i] *= 8.0f;
    be->ops->silu_mul(be, o, g, u, n, d);
    for (int i = 0; i < n * d; i++) {
        double ref = (double)g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        CHECK_REL(o[i], ref, fabs(ref), 1e-5);
    }
    int32_t rows[4] = {7, 0, 299, 7};
    float *r = malloc(sizeof(float) * 4 * d);
    be->ops->get_rows(be, r, g, rows, 4, d);
    for (int i = 0; i < 4; i++)
        CHECK(!memcmp(r + i * d, g + rows[i] * d, sizeof(float) * d));
    free(g), free(u), free(o), free(r);
    pl_backend_free(be);
}

static void test_store_kv_and_copy_blocks(void)
{
    struct pl_backend *be = new_backend(2);
    int n_blocks = 6, bs = 4, kv_dim = 5, n = 7;
    size_t cache_n = (size_t)n_blocks * bs * kv_dim;
    float *kc = malloc(sizeof(float) * cache_n), *vc = malloc(sizeof(float) * cache_n);
    for (size_t i = 0; i < cache_n; i++)
        kc[i] = -1.0f, vc[i] = -2.0f;
    float k[7 * 5], v[7 * 5];
    fill(k, 35), fill(v, 35);
    int32_t slots[7] = {5, -1, 0, 23, 12, -7, 6};
    be->ops->store_kv(be, kc, vc, k, v, slots, n, kv_dim);
    for (int s = 0; s < n_blocks * bs; s++) {
        int src = -1;
        for (int i = 0; i < n; i++)
            if (slots[i] == s)
                src = i;
        for (int c = 0; c < kv_dim; c++) {
            CHECK(kc[s * kv_dim + c] == (src >= 0 ? k[src * kv_dim + c] : -1.0f));
            CHECK(vc[s * kv_dim + c] == (src >= 0 ? v[src * kv_dim + c] : -2.0f));
        }
    }
    float *k0 = malloc(sizeof(float) * cache_n), *v0 = malloc(sizeof(float) * cache_n);
    memcpy(k0, kc, sizeof(float) * cache_n), memcpy(v0, vc, sizeof(float) * cache_n);
    int32_t pairs[4] = {1, 4, 5, 2};
    size_t block_elems = (size_t)bs * kv_dim;
    be->ops->copy_blocks(be, kc, vc, pairs, 2, block_elems * sizeof(float));
    for (int b = 0; b < n_blocks; b++) {
        int from = b == 4 ? 1 : b == 2 ? 5 : b;
        CHECK(!memcmp(kc + b * block_elems, k0 + from * block_elems, block_elems * 4));
        CHECK(!memcmp(vc + b * block_elems, v0 + from * block_elems, block_elems * 4));
    }
    free(kc), free(vc), free(k0), free(v0);
    pl_backend_free(be);
}

/* ---- attention ------------------------------------------------------------------------ */

/* Plain contiguous attention for one query at position pos of a sequence whose
 * keys/values are k/v [ctx, n_kv, hd]: softmax in double over allowed c. */
static void ref_attention(double *o, const float *q, const float *k, const float *v, int pos,
                          int n_kv, int hd, int kvh, float scale, int window)
{
    double sc[512], mx = -DBL_MAX, sum = 0;
    for (int c = 0; c <= pos; c++) {
        sc[c] = -DBL_MAX;
        if (window > 0 && c <= pos - window)
            continue;
        double d = 0;
        for (int i = 0; i < hd; i++)
            d += (double)q[i] * k[(c * n_kv + kvh) * hd + i];
        sc[c] = d * scale;
        if (sc[c] > mx)
            mx = sc[c];
    }
    for (int i = 0; i < hd; i++)
        o[i] = 0;
    for (int c = 0; c <= pos; c++) {
        if (sc[c] == -DBL_MAX)
            continue;
        double p = exp(sc[c] - mx);
        sum += p;
        for (int i = 0; i < hd; i++)
            o[i] += p * v[(c * n_kv + kvh) * hd + i];
    }
    for (int i = 0; i < hd; i++)
        o[i] /= sum;
}

static void run_attention_case(struct pl_backend *be, int n_seqs, int n_heads, int n_kv, int hd,
                               int bs, int window, bool decode_only)
{
    int ctx[8], qlen[8], cu[9];
    float *kseq[8], *vseq[8];
    int n_tokens = 0, max_q = 0, max_ctx = 0, mbps = 0, total_blocks = 0;
    cu[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        ctx[s] = rnd_int(1, 90);
        qlen[s] = decode_only ? 1 : rnd_int(1, ctx[s]); /* q_len < ctx: chunked prefill */
        n_tokens += qlen[s];
        cu[s + 1] = n_tokens;
        if (qlen[s] > max_q)
            max_q = qlen[s];
        if (ctx[s] > max_ctx)
            max_ctx = ctx[s];
        int nb = (ctx[s] + bs - 1) / bs;
        if (nb > mbps)
            mbps = nb;
        total_blocks += nb;
        size_t kvn = (size_t)ctx[s] * n_kv * hd;
        kseq[s] = malloc(sizeof(float) * kvn), vseq[s] = malloc(sizeof(float) * kvn);
        fill(kseq[s], kvn), fill(vseq[s], kvn);
        for (size_t i = 0; i < kvn; i++)
            kseq[s][i] *= 3.0f; /* sharper softmax */
    }
    int pool = total_blocks + 3;
    int *perm = malloc(sizeof(int) * pool);
    for (int i = 0; i < pool; i++)
        perm[i] = i;
    for (int i = pool - 1; i > 0; i--) { /* shuffle: blocks land anywhere in the pool */
        int j = rnd_int(0, i), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    int32_t *tables = malloc(sizeof(int32_t) * n_seqs * mbps);
    size_t row = (size_t)n_kv * hd;
    float *kc = malloc(sizeof(float) * pool * bs * row), *vc = malloc(sizeof(float) * pool * bs * row);
    for (size_t i = 0; i < (size_t)pool * bs * row; i++)
        kc[i] = NAN, vc[i] = NAN; /* a read of an unused slot poisons the result */
    int next = 0;
    for (int s = 0; s < n_seqs; s++) {
        for (int i = 0; i < mbps; i++)
            tables[s * mbps + i] = i * bs < ctx[s] ? perm[next++] : -1;
        for (int c = 0; c < ctx[s]; c++) {
            size_t slot = (size_t)tables[s * mbps + c / bs] * bs + c % bs;
            memcpy(kc + slot * row, kseq[s] + c * row, sizeof(float) * row);
            memcpy(vc + slot * row, vseq[s] + c * row, sizeof(float) * row);
        }
    }
    float *q = malloc(sizeof(float) * n_tokens * n_heads * hd);
    float *out = malloc(sizeof(float) * n_tokens * n_heads * hd);
    fill(q, (size_t)n_tokens * n_heads * hd);
    float scale = 1.0f / sqrtf((float)hd);
    struct pl_attn_meta m = {
        .n_seqs = n_seqs, .n_tokens = n_tokens, .cu_seqlens_q = cu, .context_lens = ctx,
        .block_tables = tables, .max_blocks_per_seq = mbps, .max_q_len = max_q,
        .max_context_len = max_ctx, .block_size = bs, .n_heads = n_heads, .n_kv_heads = n_kv,
        .head_dim = hd, .scale = scale, .window = window,
    };
    be->ops->attention(be, out, q, kc, vc, &m);
    double ref[256];
    for (int s = 0; s < n_seqs; s++)
        for (int t = cu[s]; t < cu[s + 1]; t++) {
            int pos = ctx[s] - qlen[s] + (t - cu[s]);
            for (int h = 0; h < n_heads; h++) {
                int kvh = h / (n_heads / n_kv);
                ref_attention(ref, q + (t * n_heads + h) * hd, kseq[s], vseq[s], pos, n_kv, hd,
                              kvh, scale, window);
                for (int i = 0; i < hd; i++)
                    CHECK_REL(out[(t * n_heads + h) * hd + i], ref[i], 1.0, 2e-5);
            }
        }
    for (int s = 0; s < n_seqs; s++)
        free(kseq[s]), free(vseq[s]);
    free(perm), free(tables), free(kc), free(vc), free(q), free(out);
}

static void test_attention_paged(void)
{
    struct pl_backend *be = new_backend(2);
    const int bss[3] = {8, 16, 32};
    for (int simd = 1; simd >= 0; simd--) {
        pl_backend_cpu_set_simd(be, simd);
        for (int iter = 0; iter < 12; iter++) {
            int n_kv = rnd_int(1, 2), group = rnd_int(1, 3); /* group > 1: GQA */
            int hd = 2 * rnd_int(2, 20);
            int window = iter % 3 == 2 ? rnd_int(1, 20) : 0;
            run_attention_case(be, rnd_int(1, 5), n_kv * group, n_kv, hd, bss[iter % 3], window,
                               iter % 4 == 3);
        }
    }
    pl_backend_free(be);
}

/* ---- rope ----------------------------------------------------------------------------- */

/* Direct rotate-half rope on a copy, in double, from an explicit inv_freq. */
static void ref_rope_row(double *out, const float *x, int hd, int rot, const double *inv,
                         double pos, double attn)
{
    int half = rot / 2;
    for (int i = 0; i < hd; i++)
        out[i] = x[i];
    for (int i = 0; i < half; i++) {
        double a = pos * inv[i], c = cos(a) * attn, s = sin(a) * attn;
        out[i] = x[i] * c - x[i + half] * s;
        out[i + half] = x[i + half] * c + x[i] * s;
    }
}

static void test_rope_op(void)
{
    struct pl_backend *be = new_backend(2);
    for (int iter = 0; iter < 8; iter++) {
        int n = rnd_int(1, 9), nh = rnd_int(1, 4), nkv = rnd_int(1, 2), hd = 2 * rnd_int(1, 16);
        int rot = 2 * rnd_int(1, hd / 2); /* partial rotary when rot < hd */
        float inv[64];
        double invd[64];
        for (int i = 0; i < rot / 2; i++)
            inv[i] = (float)pow(10000.0, -2.0 * i / rot), invd[i] = inv[i];
        struct pl_rope r = {.rot_dim = rot, .inv_freq = inv, .attn_scale = 1.0f + 0.1f * (iter % 3),
                            .pos_scale = iter % 2 ? 0.25f : 1.0f};
        bool dyn = iter >= 4;
        if (dyn) {
            r.dyn_original_max = 20;
            r.dyn_factor = 2.0f;
            r.dyn_theta = 10000.0f;
        }
        int32_t pos[9], lens[9];
        for (int t = 0; t < n; t++)
            pos[t] = rnd_int(0, 60), lens[t] = pos[t] + rnd_int(1, 5);
        float *q = malloc(sizeof(float) * n * nh * hd), *k = malloc(sizeof(float) * n * nkv * hd);
        float *q0 = malloc(sizeof(float) * n * nh * hd), *k0 = malloc(sizeof(float) * n * nkv * hd);
        fill(q, (size_t)n * nh * hd), fill(k, (size_t)n * nkv * hd);
        memcpy(q0, q, sizeof(float) * n * nh * hd), memcpy(k0, k, sizeof(float) * n * nkv * hd);
        be->ops->rope(be, q, k, pos, dyn ? lens : NULL, n, nh, nkv, hd, &r);
        double o[32];
        for (int t = 0; t < n; t++) {
            double tinv[64];
            for (int i = 0; i < rot / 2; i++) {
                tinv[i] = invd[i];
                if (dyn && lens[t] > 20) { /* HF dynamic NTK: a larger base */
                    double base = 10000.0 * pow(2.0 * lens[t] / 20.0 - 1.0, (double)rot / (rot - 2));
                    tinv[i] = 1.0 / pow(base, 2.0 * i / rot);
                }
            }
            double p = (double)pos[t] * r.pos_scale;
            for (int h = 0; h < nh; h++) {
                ref_rope_row(o, q0 + (t * nh + h) * hd, hd, rot, tinv, p, r.attn_scale);
                for (int i = 0; i < hd; i++) /* fp32 angles: error grows with the angle */
                    CHECK_NEAR(q[(t * nh + h) * hd + i], o[i], 2e-5 * (1 + pos[t]));
            }
            for (int h = 0; h < nkv; h++) {
                ref_rope_row(o, k0 + (t * nkv + h) * hd, hd, rot, tinv, p, r.attn_scale);
                for (int i = 0; i < hd; i++)
                    CHECK_NEAR(k[(t * nkv + h) * hd + i], o[i], 2e-5 * (1 + pos[t]));
            }
        }
        free(q), free(k), free(q0), free(k0);
    }
    pl_backend_free(be);
}

/* pl_rope_build for each scaling type against the formulas, recomputed in double. */
static void check_inv(const float *got, const double *ref, int half)
{
    for (int i = 0; i < half; i++)
        CHECKF(fabs(got[i] - ref[i]) <= 1e-6 * fabs(ref[i]), "pair %d: %.9g vs %.9g", i,
               (double)got[i], ref[i]);
}

static void test_rope_build(void)
{
    struct pl_model_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.head_dim = 64;
    cfg.max_position_embeddings = 2048;
    cfg.rope.theta = 10000.0;
    cfg.rope.partial_rotary_factor = 1.0;
    cfg.rope.truncate = true;
    float inv[32];
    double ref[32];
    struct pl_rope r;
    struct pl_err err;
    int d = 64, half = 32;
    double def[32];
    for (int i = 0; i < half; i++)
        def[i] = 1.0 / pow(10000.0, 2.0 * i / d);

    cfg.rope.type = PL_ROPE_DEFAULT;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    CHECK(r.rot_dim == 64 && r.attn_scale == 1.0f && r.pos_scale == 1.0f && !r.dyn_original_max);
    check_inv(inv, def, half);

    cfg.rope.type = PL_ROPE_LINEAR;
    cfg.rope.factor = 4.0;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    for (int i = 0; i < half; i++)
        ref[i] = def[i] / 4.0;
    check_inv(inv, ref, half);

    cfg.rope.type = PL_ROPE_DYNAMIC;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    check_inv(inv, def, half);
    CHECK(r.dyn_original_max == 2048 && r.dyn_factor == 4.0f && r.dyn_theta == 10000.0f);

    /* yarn: factor 4, original 2048, beta 32/1 -> correction dims from the paper's formula */
    cfg.rope.type = PL_ROPE_YARN;
    cfg.rope.original_max_position = 2048;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    double lo = floor(d * log(2048 / (32 * 2 * M_PI)) / (2 * log(10000.0)));
    double hi = ceil(d * log(2048 / (1 * 2 * M_PI)) / (2 * log(10000.0)));
    for (int i = 0; i < half; i++) {
        double ramp = fmin(1.0, fmax(0.0, (i - lo) / (hi - lo)));
        ref[i] = def[i] / 4.0 * ramp + def[i] * (1.0 - ramp);
    }
    check_inv(inv, ref, half);
    CHECK_NEAR(r.attn_scale, 0.1 * log(4.0) + 1.0, 1e-6);
    cfg.rope.mscale = 1.0, cfg.rope.mscale_all_dim = 0.5;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    CHECK_NEAR(r.attn_scale, (0.1 * log(4.0) + 1.0) / (0.05 * log(4.0) + 1.0), 1e-6);
    cfg.rope.attention_factor = 0.7;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    CHECK_NEAR(r.attn_scale, 0.7, 1e-7);

    /* llama3: Llama 3.1's parameters (factor 8, 1, 4, 8192) with theta 500000 */
    memset(&cfg.rope, 0, sizeof(cfg.rope));
    cfg.rope.type = PL_ROPE_LLAMA3;
    cfg.rope.theta = 500000.0;
    cfg.rope.factor = 8.0;
    cfg.rope.low_freq_factor = 1.0;
    cfg.rope.high_freq_factor = 4.0;
    cfg.rope.original_max_position = 8192;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    int n_low = 0, n_mid = 0, n_high = 0;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(500000.0, 2.0 * i / d), wl = 2 * M_PI / f;
        if (wl < 8192 / 4.0) {
            ref[i] = f, n_high++;
        } else if (wl > 8192 / 1.0) {
            ref[i] = f / 8.0, n_low++;
        } else {
            double sm = (8192 / wl - 1.0) / (4.0 - 1.0);
            ref[i] = (1 - sm) * f / 8.0 + sm * f, n_mid++;
        }
    }
    CHECK(n_low > 0 && n_mid > 0 && n_high > 0); /* all three bands exercised */
    check_inv(inv, ref, half);

    /* partial rotary: only the first 16 dims rotate */
    memset(&cfg.rope, 0, sizeof(cfg.rope));
    cfg.rope.theta = 10000.0;
    cfg.rope.partial_rotary_factor = 0.25;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_OK);
    CHECK(r.rot_dim == 16);
    for (int i = 0; i < 8; i++)
        ref[i] = 1.0 / pow(10000.0, 2.0 * i / 16);
    check_inv(inv, ref, 8);
    cfg.rope.partial_rotary_factor = 0.3; /* 19.2 -> 19: odd, refused */
    CHECK(pl_rope_build(&cfg, &cfg.rope, inv, NULL, &r, &err) == PL_STATUS_UNSUPPORTED);

    /* longrope (Phi-3): inv = 1 / (ext[i] * theta^(2i/d)), short and long tables, the
     * attention factor sqrt(1 + ln(f) / ln(orig)) with f = max_pos / orig */
    memset(&cfg.rope, 0, sizeof(cfg.rope));
    cfg.rope.type = PL_ROPE_LONGROPE;
    cfg.rope.theta = 10000.0;
    cfg.rope.partial_rotary_factor = 1.0;
    cfg.rope.original_max_position = 512;
    cfg.rope.factor = 2048.0 / 512.0;
    cfg.rope.n_factors = half;
    for (int i = 0; i < half; i++) {
        cfg.rope.short_factor[i] = 1.0 + 0.01 * i;
        cfg.rope.long_factor[i] = 2.0 + 0.5 * i;
    }
    float long_inv[32];
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, long_inv, &r, &err) == PL_STATUS_OK);
    for (int i = 0; i < half; i++)
        ref[i] = def[i] / (1.0 + 0.01 * i);
    check_inv(inv, ref, half);
    for (int i = 0; i < half; i++)
        ref[i] = def[i] / (2.0 + 0.5 * i);
    check_inv(long_inv, ref, half);
    CHECK(r.long_original_max == 512);
    CHECK_NEAR(r.attn_scale, sqrt(1.0 + log(4.0) / log(512.0)), 1e-6);
    cfg.rope.attention_factor = 1.25;
    REQUIRE(pl_rope_build(&cfg, &cfg.rope, inv, long_inv, &r, &err) == PL_STATUS_OK);
    CHECK_NEAR(r.attn_scale, 1.25, 1e-7);
    cfg.rope.n_factors = 3; /* one factor per pair, or refused */
    CHECK(pl_rope_build(&cfg, &cfg.rope, inv, long_inv, &r, &err) == PL_STATUS_UNSUPPORTED);
}

/* The rope op takes longrope's long table for tokens of sequences longer than the
 * original length, the short one otherwise (transformers decides per forward from the
 * largest position, i.e. the sequence's length at that step). */
static void test_rope_longrope_switch(void)
{
    struct pl_backend *be = new_backend(1);
    const int hd = 8, half = 4;
    float short_inv[4] = {1.0f, 0.5f, 0.25f, 0.125f}, long_inv[4] = {0.1f, 0.05f, 0.02f, 0.01f};
    struct pl_rope r = {.rot_dim = hd, .inv_freq = short_inv, .attn_scale = 1.5f,
                        .pos_scale = 1.0f, .long_original_max = 16, .long_inv_freq = long_inv};
    int32_t pos[2] = {7, 7}, lens[2] = {16, 17};
    float q[2 * 8], k[2 * 8];
    for (int i = 0; i < 16; i++)
        q[i] = k[i] = (float)(i % 8) + 1.0f;
    be->ops->rope(be, q, k, pos, lens, 2, 1, 1, hd, &r);
    for (int t = 0; t < 2; t++) {
        const float *inv = lens[t] > 16 ? long_inv : short_inv;
        for (int i = 0; i < half; i++) {
            float x1 = (float)i + 1.0f, x2 = (float)(i + half) + 1.0f;
            float a = 7.0f * inv[i], c = cosf(a) * 1.5f, s = sinf(a) * 1.5f;
            CHECK_NEAR(q[t * 8 + i], x1 * c - x2 * s, 1e-5);
            CHECK_NEAR(q[t * 8 + i + half], x2 * c + x1 * s, 1e-5);
        }
    }
    pl_backend_free(be);
}

static void test_supports(void)
{
    struct pl_backend *be = new_backend(1);
    CHECK(be->ops->version == PL_BACKEND_OPS_VERSION);
    CHECK(be->ops->act_dtype == PL_DTYPE_F32);
    CHECK(be->ops->supports(be, PL_OP_MATMUL, PL_DTYPE_BF16));
    CHECK(be->ops->supports(be, PL_OP_MATMUL, PL_DTYPE_F16));
    CHECK(!be->ops->supports(be, PL_OP_MATMUL, PL_DTYPE_I32));
    CHECK(!be->ops->supports(be, PL_OP_ATTENTION, PL_DTYPE_BF16));
    int x = 5;
    CHECK(be->ops->map_weight(be, &x, sizeof(x)) == &x); /* no copy */
    CHECK(pl_backend_cpu_n_threads(be) == 1);
    pl_backend_free(be);
    pl_backend_free(NULL);
}

/* map_weight's placement: a copy of a large weight, the mapping itself for a small one or
 * with PAGELLM_CPU_WEIGHTS=mmap; the copy computes exactly what the mapping does. */
static void test_map_weight_copies(void)
{
    const int rows = 640, cols = 4096; /* 5 MiB of bf16: over the copy threshold */
    float *vals;
    void *host = make_weight(PL_DTYPE_BF16, (size_t)rows * cols, &vals);
    const size_t n_bytes = (size_t)rows * cols * 2;
    for (int mode = 0; mode < 2; mode++) {
        if (mode == 1)
            setenv("PAGELLM_CPU_WEIGHTS", "mmap", 1);
        struct pl_backend *be = NULL;
        struct pl_err err;
        REQUIRE(pl_backend_cpu_new(2, &be, &err) == PL_STATUS_OK);
        void *w = be->ops->map_weight(be, host, n_bytes);
        REQUIRE(w);
        if (mode == 0) {
            CHECK(w != host);
            CHECK(((uintptr_t)w & ((2u << 20) - 1)) == 0);
            CHECK(memcmp(w, host, n_bytes) == 0);
        } else {
            CHECK(w == host);
        }
        void *small = be->ops->map_weight(be, host, 4096);
        CHECK(small == host);
        /* the same product through the placed weight and through the caller's bytes */
        float x[2 * 4096], y0[2 * 640], y1[2 * 640];
        fill(x, 2 * (size_t)cols);
        struct pl_weight wa = {.data = w, .dtype = PL_DTYPE_BF16, .rows = rows, .cols = cols};
        struct pl_weight wb = {.data = host, .dtype = PL_DTYPE_BF16, .rows = rows, .cols = cols};
        be->ops->matmul(be, y0, rows, x, &wa, NULL, 2);
        be->ops->matmul(be, y1, rows, x, &wb, NULL, 2);
        CHECK(memcmp(y0, y1, sizeof(y0)) == 0);
        be->ops->unmap_weight(be, small);
        be->ops->unmap_weight(be, w); /* frees the copy (ASan: no leak, no double free) */
        be->ops->destroy(be);
    }
    unsetenv("PAGELLM_CPU_WEIGHTS");
    free(host);
    free(vals);
}

static void record_cpu(void *ctx, int ith, int nth)
{
    ((int *)ctx)[ith] = sched_getcpu();
}

static void test_thread_placement(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    REQUIRE(sched_getaffinity(0, sizeof(set), &set) == 0);
    CHECK(pl_cpu_count() == CPU_COUNT(&set));
    int allowed[8], n_allowed = 0;
    for (int c = 0; c < CPU_SETSIZE && n_allowed < 8; c++)
        if (CPU_ISSET(c, &set))
            allowed[n_allowed++] = c;
    setenv("PAGELLM_CPU_AFFINITY", "1", 1);
    struct pl_threadpool *tp = NULL;
    struct pl_err err;
    const int n = n_allowed < 4 ? n_allowed : 4;
    REQUIRE(pl_threadpool_new(n, &tp, &err) == PL_STATUS_OK);
    int where[8];
    for (int rep = 0; rep < 3; rep++) { /* pinned: the same CPU every time */
        pl_threadpool_run(tp, record_cpu, where);
        for (int i = 0; i < n; i++)
            CHECKF(where[i] == allowed[i], "thread %d ran on cpu %d, pinned to %d", i, where[i],
                   allowed[i]);
    }
    pl_threadpool_free(tp);
    unsetenv("PAGELLM_CPU_AFFINITY");
    /* the test's own thread was pinned as thread 0: give it its whole mask back */
    sched_setaffinity(0, sizeof(set), &set);
}

/* out[r] = sum_c w[r, c] x[c] in double. */
static void matvec_d(double *out, const float *w, int rows, int cols, const double *x)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)w[(size_t)r * cols + c] * x[c];
        out[r] = s;
    }
}

static double act_d(bool gelu, double g)
{
    return gelu ? 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)))
                : g / (1.0 + exp(-g));
}

/* One expert's (or the shared one's) MLP of x in double, times w, added into out. */
static void expert_d(const float *g, const float *u, const float *d, int hid, int inter,
                     bool gelu, double w, const double *x, double *out)
{
    double *gv = malloc(sizeof(double) * inter), *uv = malloc(sizeof(double) * inter);
    double *o = malloc(sizeof(double) * hid);
    matvec_d(gv, g, inter, hid, x);
    matvec_d(uv, u, inter, hid, x);
    for (int i = 0; i < inter; i++)
        gv[i] = act_d(gelu, gv[i]) * uv[i];
    matvec_d(o, d, hid, inter, gv);
    for (int r = 0; r < hid; r++)
        out[r] += w * o[r];
    free(gv), free(uv), free(o);
}

/* The moe op: in a scratch of exactly pl_moe_scratch_elems(a, n) elements (ASan sees any
 * overrun: test_cuda_parity crashed on one when the CPU strided its rows wider than the
 * size promised); each token's output independent of the batch around it (bit for bit);
 * and equal to transformers' block computed here in double (softmax, top-k, renormalised
 * weights, each chosen expert's MLP, the sigmoid-gated shared expert) within fp32
 * rounding (2e-5 of the largest output; measured 3e-6 scalar, 6e-7 SIMD), for silu and
 * gelu_tanh experts, with the SIMD and the scalar kernels. */
static void test_moe(void)
{
    struct pl_backend *be = new_backend(2);
    enum { E = 8, K = 2, HID = 64, INTER = 96, SH = 80, N = 37 };
    struct ew {
        struct pl_weight g, u, d;
    } ex[E];
    float *ev[E][3];
    void *bufs[32];
    int nb = 0;
    for (int e = 0; e < E; e++) {
        ex[e].g = (struct pl_weight){bufs[nb++] = make_weight(PL_DTYPE_BF16, (size_t)INTER * HID, &ev[e][0]),
                                     PL_DTYPE_BF16, INTER, HID};
        ex[e].u = (struct pl_weight){bufs[nb++] = make_weight(PL_DTYPE_BF16, (size_t)INTER * HID, &ev[e][1]),
                                     PL_DTYPE_BF16, INTER, HID};
        ex[e].d = (struct pl_weight){bufs[nb++] = make_weight(PL_DTYPE_BF16, (size_t)HID * INTER, &ev[e][2]),
                                     PL_DTYPE_BF16, HID, INTER};
    }
    float *rv, *shv[4];
    struct pl_weight router = {bufs[nb++] = make_weight(PL_DTYPE_BF16, (size_t)E * HID, &rv),
                               PL_DTYPE_BF16, E, HID};
    for (int i = 0; i < E * HID; i++) /* a decisive router: no near-ties in the top-k */
        rv[i] *= 8.0f;
    for (int i = 0; i < E * HID; i++)
        ((uint16_t *)router.data)[i] = pl_f32_to_bf16(rv[i]), rv[i] = pl_bf16_to_f32(((uint16_t *)router.data)[i]);
    struct pl_weight shw[4];
    const int64_t shape[4][2] = {{SH, HID}, {SH, HID}, {HID, SH}, {1, HID}};
    for (int i = 0; i < 4; i++)
        shw[i] = (struct pl_weight){
            bufs[nb++] = make_weight(PL_DTYPE_BF16, (size_t)(shape[i][0] * shape[i][1]), &shv[i]),
            PL_DTYPE_BF16, shape[i][0], shape[i][1]};
    float *x = malloc(sizeof(float) * (size_t)N * HID), *out = malloc(sizeof(float) * (size_t)N * HID);
    fill(x, (size_t)N * HID);
    double *xd = malloc(sizeof(double) * HID), *ref = malloc(sizeof(double) * HID);
    for (int variant = 0; variant < 6; variant++) {
        const bool gelu = variant & 1, shared = variant & 2, simd = variant < 4;
        pl_backend_cpu_use_simd(be, simd);
        struct pl_moe_args a = {.n_experts = E, .top_k = K, .hidden = HID,
                                .norm_topk_prob = !shared, .gelu_tanh = gelu,
                                .router = &router, .w_gate = &ex[0].g, .w_up = &ex[0].u,
                                .w_down = &ex[0].d, .expert_stride = sizeof(struct ew),
                                .inter = INTER};
        if (shared) {
            a.sh_gate = &shw[0], a.sh_up = &shw[1], a.sh_down = &shw[2], a.sh_router = &shw[3];
            a.sh_inter = SH;
        }
        CHECK(pl_moe_scratch_elems(&a, N) == (size_t)N * pl_moe_scratch_elems(&a, 1));
        float *scratch = malloc(sizeof(float) * pl_moe_scratch_elems(&a, N));
        be->ops->moe(be, out, x, N, HID, &a, scratch);
        float one[HID], *s1 = malloc(sizeof(float) * pl_moe_scratch_elems(&a, 1));
        for (int t = 0; t < N; t += 12) {
            be->ops->moe(be, one, x + (size_t)t * HID, 1, HID, &a, s1);
            for (int i = 0; i < HID; i++)
                CHECKF(one[i] == out[(size_t)t * HID + i],
                       "variant %d token %d [%d]: %g alone, %g in the batch", variant, t, i,
                       (double)one[i], (double)out[(size_t)t * HID + i]);
        }
        double max_err = 0, max_ref = 0;
        for (int t = 0; t < N; t++) {
            for (int i = 0; i < HID; i++)
                xd[i] = x[(size_t)t * HID + i], ref[i] = 0;
            double p[E], mx = -1e300, sum = 0;
            matvec_d(p, rv, E, HID, xd);
            for (int e = 0; e < E; e++)
                mx = p[e] > mx ? p[e] : mx;
            for (int e = 0; e < E; e++)
                sum += (p[e] = exp(p[e] - mx));
            int id[K];
            double w[K], wsum = 0;
            for (int i = 0; i < K; i++) {
                int best = -1;
                for (int e = 0; e < E; e++) {
                    bool taken = false;
                    for (int q = 0; q < i; q++)
                        taken |= id[q] == e;
                    if (!taken && (best < 0 || p[e] > p[best]))
                        best = e;
                }
                id[i] = best, w[i] = p[best] / sum, wsum += w[i];
            }
            for (int i = 0; i < K; i++)
                expert_d(ev[id[i]][0], ev[id[i]][1], ev[id[i]][2], HID, INTER, gelu,
                         a.norm_topk_prob ? w[i] / wsum : w[i], xd, ref);
            if (shared) {
                double gl;
                matvec_d(&gl, shv[3], 1, HID, xd);
                expert_d(shv[0], shv[1], shv[2], HID, SH, gelu, 1.0 / (1.0 + exp(-gl)), xd, ref);
            }
            for (int i = 0; i < HID; i++) {
                max_err = fmax(max_err, fabs(out[(size_t)t * HID + i] - ref[i]));
                max_ref = fmax(max_ref, fabs(ref[i]));
            }
        }
        CHECKF(max_err <= 2e-5 * fmax(max_ref, 1.0), "variant %d (gelu %d, shared %d, simd %d): "
               "max error %g against the double reference (max |ref| %g)", variant, gelu, shared,
               simd, max_err, max_ref);
        free(s1);
        free(scratch);
    }
    pl_backend_cpu_use_simd(be, true);
    free(x), free(out), free(xd), free(ref);
    for (int e = 0; e < E; e++)
        for (int i = 0; i < 3; i++)
            free(ev[e][i]);
    free(rv);
    for (int i = 0; i < 4; i++)
        free(shv[i]);
    for (int i = 0; i < nb; i++)
        free(bufs[i]);
    pl_backend_free(be);
}

int main(void)
{
    PL_RUN(test_matmul_against_reference);
    PL_RUN(test_matmul_batch_invariance);
    PL_RUN(test_logits_and_embed);
    PL_RUN(test_rmsnorm);
    PL_RUN(test_silu_mul_and_get_rows);
    PL_RUN(test_store_kv_and_copy_blocks);
    PL_RUN(test_attention_paged);
    PL_RUN(test_rope_op);
    PL_RUN(test_rope_build);
    PL_RUN(test_rope_longrope_switch);
    PL_RUN(test_supports);
    PL_RUN(test_map_weight_copies);
    PL_RUN(test_thread_placement);
    PL_RUN(test_moe);
    return pl_test_summary();
}
