/*
 * test_cpu_vec.c -- the CPU backend's element-wise kernels per ISA (cpu_vec.c) and the
 * ops built on them (rmsnorm with residual, silu_mul, gelu_tanh_mul, rope, attention).
 *
 * Every ISA this CPU has against the scalar path (the specification) within a few fp32
 * roundings, over lengths 1-40 and odd sizes (not multiples of 8 or 16), all weight dtypes
 * for rmsnorm, and silu/gelu inputs out to +-100; batch invariance in each ISA: a token's
 * rows bit-identical alone and inside a batch of 17, on 1 and 2 threads, and attention's
 * output for a sequence bit-identical alone and among 16 others (prefill and decode,
 * head_dim 8, 37, 64 and 80, grouped-query heads). An ISA the CPU lacks prints "skip".
 */
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "test.h"

#include <stdint.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static float rnd_f(void) { return (float)((double)rnd_u32() / 2147483648.0 - 1.0); } /* [-1, 1) */

static void fill(float *x, size_t n, float amp)
{
    for (size_t i = 0; i < n; i++)
        x[i] = amp * rnd_f();
}

static const enum pl_cpu_isa isas[3] = {PL_CPU_ISA_SCALAR, PL_CPU_ISA_AVX2, PL_CPU_ISA_AVX512};

static bool cpu_has(enum pl_cpu_isa isa, const char *what)
{
    if (pl_cpu_best_isa() < isa) {
        printf("skip %s on %s: this CPU lacks it\n", what, pl_cpu_isa_name(isa));
        return false;
    }
    return true;
}

static struct pl_backend *new_backend(int n_threads)
{
    struct pl_backend *be = NULL;
    struct pl_err err;
    if (pl_backend_cpu_new(n_threads, &be, &err) != PL_STATUS_OK) {
        fprintf(stderr, "backend: %s\n", err.msg);
        exit(1);
    }
    return be;
}

/* |a - b| <= rel * |b| + abs, element by element; reports the first miss. */
static bool close_all(const float *a, const float *b, int n, double rel, double abs_tol,
                      const char *what, enum pl_cpu_isa isa)
{
    for (int i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= rel * fabs((double)b[i]) + abs_tol)) {
            fprintf(stderr, "%s %s n=%d [%d]: %.9g vs scalar %.9g\n", what,
                    pl_cpu_isa_name(isa), n, i, a[i], b[i]);
            return false;
        }
    }
    return true;
}

static const int sizes[] = {1,  2,  3,  5,  7,  8,  9,  15, 16, 17, 23, 31, 32,
                            33, 37, 40, 63, 64, 80, 100, 128, 2048, 2053};
#define N_SIZES (int)(sizeof(sizes) / sizeof(sizes[0]))
#define MAXN 2053

/* ---- the kernels, each ISA against scalar ----------------------------------------------- */

static void test_kernels_vs_scalar(void)
{
    static float x[MAXN], y[MAXN], c[MAXN], s[MAXN], a0[MAXN], a1[MAXN], b0[MAXN], b1[MAXN];
    for (int ii = 1; ii < 3; ii++) {
        enum pl_cpu_isa isa = isas[ii];
        if (!cpu_has(isa, "kernels"))
            continue;
        for (int si = 0; si < N_SIZES; si++) {
            int n = sizes[si];
            fill(x, n, 2.0f), fill(y, n, 2.0f), fill(c, n, 1.0f), fill(s, n, 1.0f);
            /* add, scale: the same single rounding per element */
            memcpy(a0, y, sizeof(float) * n), memcpy(a1, y, sizeof(float) * n);
            pl_cpu_vec_add(PL_CPU_ISA_SCALAR, a0, x, n), pl_cpu_vec_add(isa, a1, x, n);
            CHECK(memcmp(a0, a1, sizeof(float) * n) == 0);
            pl_cpu_vec_scale(PL_CPU_ISA_SCALAR, a0, 0.37f, n), pl_cpu_vec_scale(isa, a1, 0.37f, n);
            CHECK(memcmp(a0, a1, sizeof(float) * n) == 0);
            /* axpy: fused in SIMD, so within one rounding of the sum */
            memcpy(a0, y, sizeof(float) * n), memcpy(a1, y, sizeof(float) * n);
            pl_cpu_vec_axpy(PL_CPU_ISA_SCALAR, a0, -1.3f, x, n), pl_cpu_vec_axpy(isa, a1, -1.3f, x, n);
            CHECK(close_all(a1, a0, n, 1e-6, 1e-6, "axpy", isa));
            /* rotate */
            memcpy(a0, x, sizeof(float) * n), memcpy(b0, y, sizeof(float) * n);
            memcpy(a1, x, sizeof(float) * n), memcpy(b1, y, sizeof(float) * n);
            pl_cpu_vec_rotate(PL_CPU_ISA_SCALAR, a0, b0, c, s, n);
            pl_cpu_vec_rotate(isa, a1, b1, c, s, n);
            CHECK(close_all(a1, a0, n, 1e-6, 1e-6, "rotate x1", isa));
            CHECK(close_all(b1, b0, n, 1e-6, 1e-6, "rotate x2", isa));
            /* silu / gelu_tanh over [-12, 12), plus the far tails */
            fill(x, n, 12.0f);
            if (n > 4)
                x[0] = -100.0f, x[1] = 100.0f, x[2] = -90.0f, x[3] = 0.0f;
            pl_cpu_vec_silu_mul(PL_CPU_ISA_SCALAR, a0, x, y, n);
            pl_cpu_vec_silu_mul(isa, a1, x, y, n);
            CHECK(close_all(a1, a0, n, 1e-6, 1e-30, "silu_mul", isa)); /* a few ulp */
            pl_cpu_vec_gelu_tanh_mul(PL_CPU_ISA_SCALAR, a0, x, y, n);
            pl_cpu_vec_gelu_tanh_mul(isa, a1, x, y, n);
            /* tanh's form and the sigmoid's differ by ~1e-7 absolute near 1 + tanh = 0 */
            CHECK(close_all(a1, a0, n, 1e-6, 2e-7 * 12.0 * 2.0, "gelu_tanh_mul", isa));
        }
    }
}

static void test_rmsnorm_vs_scalar(void)
{
    static float x[MAXN], wf[MAXN], a0[MAXN], a1[MAXN];
    static uint16_t wh[MAXN];
    const enum pl_dtype dts[3] = {PL_DTYPE_F32, PL_DTYPE_BF16, PL_DTYPE_F16};
    for (int ii = 1; ii < 3; ii++) {
        enum pl_cpu_isa isa = isas[ii];
        if (!cpu_has(isa, "rmsnorm"))
            continue;
        for (int di = 0; di < 3; di++) {
            for (int si = 0; si < N_SIZES; si++) {
                int n = sizes[si];
                fill(x, n, 3.0f), fill(wf, n, 1.5f);
                for (int i = 0; i < n; i++)
                    wh[i] = dts[di] == PL_DTYPE_BF16 ? pl_f32_to_bf16(wf[i]) : pl_f32_to_f16(wf[i]);
                struct pl_weight w = {.data = dts[di] == PL_DTYPE_F32 ? (const void *)wf : wh,
                                      .dtype = dts[di], .rows = n, .cols = 1};
                pl_cpu_vec_rmsnorm(PL_CPU_ISA_SCALAR, a0, x, &w, n, 1e-5f);
                pl_cpu_vec_rmsnorm(isa, a1, x, &w, n, 1e-5f);
                CHECK(close_all(a1, a0, n, 3e-7, 1e-30, "rmsnorm", isa));
                /* against a double reference too */
                double ss = 0.0;
                for (int i = 0; i < n; i++)
                    ss += (double)x[i] * x[i];
                double inv = 1.0 / sqrt(ss / n + 1e-5);
                for (int i = 0; i < n; i++)
                    CHECK_NEAR(a1[i], pl_dtype_get_f32(w.data, w.dtype, i) * x[i] * inv,
                               1e-6 * fabs(pl_dtype_get_f32(w.data, w.dtype, i) * x[i] * inv) + 1e-7);
            }
        }
    }
}

/* ---- the row ops: a token alone and inside a batch of 17, 1 and 2 threads --------------- */

#define BATCH 17
#define AT 5 /* the token's place in the batch */

/* Runs every row op over n rows of dim; outputs into out (n rows of each result). */
struct row_outs {
    float *norm, *res, *silu, *gelu, *q, *k;
};

static void run_row_ops(struct pl_backend *be, int n, int dim, const float *x, const float *res0,
                        const float *g, const float *u, const struct pl_weight *w,
                        const int32_t *pos, const struct pl_rope *rope, int hd, int nh, int nkv,
                        const float *q0, const float *k0, struct row_outs *o)
{
    memcpy(o->res, res0, sizeof(float) * n * dim);
    be->ops->rmsnorm(be, o->norm, o->res, x, w, n, dim, 1e-6f);
    be->ops->silu_mul(be, o->silu, g, u, n, dim);
    be->ops->gelu_tanh_mul(be, o->gelu, g, u, n, dim);
    memcpy(o->q, q0, sizeof(float) * n * nh * hd);
    memcpy(o->k, k0, sizeof(float) * n * nkv * hd);
    be->ops->rope(be, o->q, o->k, pos, NULL, n, nh, nkv, hd, rope);
}

static void alloc_outs(struct row_outs *o, int n, int dim, int qn, int kn)
{
    o->norm = malloc(sizeof(float) * n * dim), o->res = malloc(sizeof(float) * n * dim);
    o->silu = malloc(sizeof(float) * n * dim), o->gelu = malloc(sizeof(float) * n * dim);
    o->q = malloc(sizeof(float) * n * qn), o->k = malloc(sizeof(float) * n * kn);
}

static void free_outs(struct row_outs *o)
{
    free(o->norm), free(o->res), free(o->silu), free(o->gelu), free(o->q), free(o->k);
}

static bool same_row(const float *a, int ra, const float *b, int rb, int len)
{
    return memcmp(a + (size_t)ra * len, b + (size_t)rb * len, sizeof(float) * len) == 0;
}

static void test_row_ops_batch_invariant(void)
{
    const int dims[] = {37, 100, 2053};
    const int hds[] = {10, 37, 64}; /* rot_dim = hd (even) or hd - 1 */
    struct pl_backend *be1 = new_backend(1), *be2 = new_backend(2);
    for (int di = 0; di < 3; di++) {
        int dim = dims[di], hd = hds[di], nh = 4, nkv = 2, rot = hd & ~1;
        int qn = nh * hd, kn = nkv * hd;
        float *x = malloc(sizeof(float) * BATCH * dim), *r0 = malloc(sizeof(float) * BATCH * dim);
        float *g = malloc(sizeof(float) * BATCH * dim), *u = malloc(sizeof(float) * BATCH * dim);
        float *q0 = malloc(sizeof(float) * BATCH * qn), *k0 = malloc(sizeof(float) * BATCH * kn);
        float *wv = malloc(sizeof(float) * dim), inv_freq[64];
        fill(x, (size_t)BATCH * dim, 2.0f), fill(r0, (size_t)BATCH * dim, 2.0f);
        fill(g, (size_t)BATCH * dim, 8.0f), fill(u, (size_t)BATCH * dim, 1.0f);
        fill(q0, (size_t)BATCH * qn, 1.0f), fill(k0, (size_t)BATCH * kn, 1.0f), fill(wv, dim, 1.0f);
        for (int i = 0; i < rot / 2; i++)
            inv_freq[i] = (float)pow(10000.0, -2.0 * i / rot);
        struct pl_weight w = {.data = wv, .dtype = PL_DTYPE_F32, .rows = dim, .cols = 1};
        struct pl_rope rope = {.rot_dim = rot, .inv_freq = inv_freq, .attn_scale = 1.0f,
                               .pos_scale = 1.0f};
        int32_t pos[BATCH];
        for (int i = 0; i < BATCH; i++)
            pos[i] = 3 + 7 * i;
        struct row_outs scalar_b;
        alloc_outs(&scalar_b, BATCH, dim, qn, kn);
        for (int ii = 0; ii < 3; ii++) {
            enum pl_cpu_isa isa = isas[ii];
            if (!cpu_has(isa, "row ops"))
                continue;
            pl_backend_cpu_set_isa(be1, isa), pl_backend_cpu_set_isa(be2, isa);
            struct row_outs one, b1, b2;
            alloc_outs(&one, 1, dim, qn, kn), alloc_outs(&b1, BATCH, dim, qn, kn);
            alloc_outs(&b2, BATCH, dim, qn, kn);
            size_t ad = (size_t)AT * dim;
            run_row_ops(be2, 1, dim, x + ad, r0 + ad, g + ad, u + ad, &w, pos + AT, &rope, hd, nh,
                        nkv, q0 + (size_t)AT * qn, k0 + (size_t)AT * kn, &one);
            run_row_ops(be1, BATCH, dim, x, r0, g, u, &w, pos, &rope, hd, nh, nkv, q0, k0, &b1);
            run_row_ops(be2, BATCH, dim, x, r0, g, u, &w, pos, &rope, hd, nh, nkv, q0, k0, &b2);
            for (int t = 0; t < BATCH; t++) {
                CHECK(same_row(b1.norm, t, b2.norm, t, dim) && same_row(b1.res, t, b2.res, t, dim));
                CHECK(same_row(b1.silu, t, b2.silu, t, dim) && same_row(b1.gelu, t, b2.gelu, t, dim));
                CHECK(same_row(b1.q, t, b2.q, t, qn) && same_row(b1.k, t, b2.k, t, kn));
            }
            CHECK(same_row(one.norm, 0, b2.norm, AT, dim) && same_row(one.res, 0, b2.res, AT, dim));
            CHECK(same_row(one.silu, 0, b2.silu, AT, dim) && same_row(one.gelu, 0, b2.gelu, AT, dim));
            CHECK(same_row(one.q, 0, b2.q, AT, qn) && same_row(one.k, 0, b2.k, AT, kn));
            if (isa == PL_CPU_ISA_SCALAR) {
                run_row_ops(be2, BATCH, dim, x, r0, g, u, &w, pos, &rope, hd, nh, nkv, q0, k0,
                            &scalar_b);
            } else {
                int nd = BATCH * dim;
                CHECK(memcmp(b2.res, scalar_b.res, sizeof(float) * nd) == 0);
                CHECK(close_all(b2.norm, scalar_b.norm, nd, 1e-6, 1e-30, "op rmsnorm", isa));
                CHECK(close_all(b2.silu, scalar_b.silu, nd, 1e-6, 1e-30, "op silu", isa));
                CHECK(close_all(b2.gelu, scalar_b.gelu, nd, 1e-6, 4e-6, "op gelu", isa));
                CHECK(close_all(b2.q, scalar_b.q, BATCH * qn, 1e-6, 1e-6, "op rope q", isa));
                CHECK(close_all(b2.k, scalar_b.k, BATCH * kn, 1e-6, 1e-6, "op rope k", isa));
            }
            free_outs(&one), free_outs(&b1), free_outs(&b2);
        }
        free_outs(&scalar_b);
        free(x), free(r0), free(g), free(u), free(q0), free(k0), free(wv);
    }
    be1->ops->destroy(be1), be2->ops->destroy(be2);
}

/* ---- attention: a sequence alone and among 16 others ------------------------------------ */

#define NSEQ 17
#define BS 16

struct attn_case {
    int n_heads, n_kv, hd;
    int ctx[NSEQ], qlen[NSEQ];
    float *kc, *vc, *q; /* cache [NSEQ * 3 blocks * BS, n_kv * hd]; q [rows, n_heads * hd] */
    int32_t tables[NSEQ * 3];
    int n_rows;
};

/* Sequence s owns blocks 3s..3s+2 (reversed, so the table matters); contexts 1..40. */
static void attn_case_init(struct attn_case *c, int nh, int nkv, int hd, bool decode)
{
    c->n_heads = nh, c->n_kv = nkv, c->hd = hd, c->n_rows = 0;
    size_t row = (size_t)nkv * hd, slots = (size_t)NSEQ * 3 * BS;
    c->kc = malloc(sizeof(float) * slots * row), c->vc = malloc(sizeof(float) * slots * row);
    fill(c->kc, slots * row, 3.0f), fill(c->vc, slots * row, 1.0f);
    for (int s = 0; s < NSEQ; s++) {
        c->ctx[s] = 1 + (int)(rnd_u32() % 40);
        c->qlen[s] = decode ? 1 : c->ctx[s];
        c->n_rows += c->qlen[s];
        for (int b = 0; b < 3; b++)
            c->tables[s * 3 + b] = 3 * s + 2 - b;
    }
    c->q = malloc(sizeof(float) * c->n_rows * nh * hd);
    fill(c->q, (size_t)c->n_rows * nh * hd, 1.0f);
}

/* Attention over sequences [s0, s1) of the case; q rows and out rows from row r0. */
static void attn_run(struct pl_backend *be, const struct attn_case *c, int s0, int s1, int r0,
                     float *out)
{
    int32_t cu[NSEQ + 1], ctx[NSEQ];
    int n = 0, max_q = 0, max_ctx = 0;
    cu[0] = 0;
    for (int s = s0; s < s1; s++) {
        ctx[s - s0] = c->ctx[s];
        n += c->qlen[s];
        cu[s - s0 + 1] = n;
        max_q = c->qlen[s] > max_q ? c->qlen[s] : max_q;
        max_ctx = c->ctx[s] > max_ctx ? c->ctx[s] : max_ctx;
    }
    struct pl_attn_meta m = {
        .n_seqs = s1 - s0, .n_tokens = n, .cu_seqlens_q = cu, .context_lens = ctx,
        .block_tables = c->tables + 3 * s0, .max_blocks_per_seq = 3, .max_q_len = max_q,
        .max_context_len = max_ctx, .block_size = BS, .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv, .head_dim = c->hd, .scale = 1.0f / sqrtf((float)c->hd),
    };
    be->ops->attention(be, out, c->q + (size_t)r0 * c->n_heads * c->hd, c->kc, c->vc, &m);
}

static void test_attention_batch_invariant(void)
{
    const int hds[] = {8, 37, 64, 80};
    struct pl_backend *be1 = new_backend(1), *be2 = new_backend(2);
    for (int decode = 0; decode < 2; decode++) {
        for (int hi = 0; hi < 4; hi++) {
            struct attn_case c;
            attn_case_init(&c, 4, hi % 2 ? 1 : 2, hds[hi], decode);
            size_t rw = (size_t)c.n_heads * c.hd, total = (size_t)c.n_rows * rw;
            float *ref = malloc(sizeof(float) * total), *all1 = malloc(sizeof(float) * total);
            float *all2 = malloc(sizeof(float) * total), *alone = malloc(sizeof(float) * total);
            for (int ii = 0; ii < 3; ii++) {
                enum pl_cpu_isa isa = isas[ii];
                if (!cpu_has(isa, "attention"))
                    continue;
                pl_backend_cpu_set_isa(be1, isa), pl_backend_cpu_set_isa(be2, isa);
                attn_run(be1, &c, 0, NSEQ, 0, all1);
                attn_run(be2, &c, 0, NSEQ, 0, all2);
                CHECK(memcmp(all1, all2, sizeof(float) * total) == 0);
                int r = 0;
                for (int s = 0; s < NSEQ; s++) {
                    attn_run(be2, &c, s, s + 1, r, alone);
                    CHECKF(memcmp(alone, all2 + (size_t)r * rw, sizeof(float) * c.qlen[s] * rw) == 0,
                           "%s hd %d seq %d (ctx %d) alone vs in the batch",
                           pl_cpu_isa_name(isa), c.hd, s, c.ctx[s]);
                    r += c.qlen[s];
                }
                if (isa == PL_CPU_ISA_SCALAR)
                    memcpy(ref, all2, sizeof(float) * total);
                else
                    CHECK(close_all(all2, ref, (int)total, 1e-5, 1e-6, "attention", isa));
            }
            free(ref), free(all1), free(all2), free(alone);
            free(c.kc), free(c.vc), free(c.q);
        }
    }
    be1->ops->destroy(be1), be2->ops->destroy(be2);
}

int main(void)
{
    PL_RUN(test_kernels_vs_scalar);
    PL_RUN(test_rmsnorm_vs_scalar);
    PL_RUN(test_row_ops_batch_invariant);
    PL_RUN(test_attention_batch_invariant);
    return pl_test_summary();
}
