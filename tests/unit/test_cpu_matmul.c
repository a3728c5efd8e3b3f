/*
 * test_cpu_matmul.c -- the CPU matmul's instruction sets and modes (cpu_matmul.c).
 *
 * Every ISA this CPU has (scalar, AVX2, AVX-512) against a double-precision
 * reference within an fp32 bound, for F32/BF16/F16 weights over 1-20 tokens and
 * odd sizes (K not a multiple of 8, 16 or 32, rows not a multiple of any tile);
 * batch invariance in every ISA and mode (a token's outputs bit-identical alone,
 * in a batch of 17 and in other batches, on 1 or 3 threads); the BF16 mode
 * (PAGELLM_CPU_MATMUL=bf16) against a double reference over bf16-rounded
 * activations (tight) and against the FP32 path (a bf16-level bound), untouched
 * F32/F16 weights, and the FP32 fallback for rows too long for its scratch; the
 * PAGELLM_CPU_ISA / PAGELLM_CPU_MATMUL variables. Parts that need AVX-512 or
 * AVX512-BF16 print "skip" on a CPU without them.
 */
#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "test.h"

#include <stdint.h>

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd_u32(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd_u32() % (uint32_t)(hi - lo + 1)); }
static float rnd_f(void) { return (float)((double)rnd_u32() / 2147483648.0 - 1.0); } /* [-1, 1) */

static const enum pl_dtype dtypes[3] = {PL_DTYPE_F32, PL_DTYPE_BF16, PL_DTYPE_F16};

static void fill(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rnd_f();
}

/* A random weight of dtype dt, exactly n elements (no slack: reads past the end are
 * errors under ASan); *vals gets the fp32 values it holds. */
static void *make_weight(enum pl_dtype dt, size_t n, float **vals)
{
    *vals = malloc(n * sizeof(float));
    void *w = malloc(n * pl_dtype_size(dt));
    for (size_t i = 0; i < n; i++) {
        float f = rnd_f();
        if (dt == PL_DTYPE_F32)
            ((float *)w)[i] = f;
        else if (dt == PL_DTYPE_BF16)
            ((uint16_t *)w)[i] = pl_f32_to_bf16(f);
        else
            ((uint16_t *)w)[i] = pl_f32_to_f16(f);
        (*vals)[i] = pl_dtype_get_f32(w, dt, i);
    }
    return w;
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

static const enum pl_cpu_isa isas[3] = {PL_CPU_ISA_SCALAR, PL_CPU_ISA_AVX2, PL_CPU_ISA_AVX512};

/* Selects isa on be; false (after printing a skip line) where the CPU lacks it. */
static bool use_isa(struct pl_backend *be, enum pl_cpu_isa isa, const char *what)
{
    if (pl_backend_cpu_set_isa(be, isa) != isa) {
        printf("skip %s on %s: this CPU lacks it\n", what, pl_cpu_isa_name(isa));
        return false;
    }
    return true;
}

/* sum_k x[k] w[k] (+ bias) in double, and sum_k |x[k] w[k]| (+ |bias|): the scale of the
 * rounding error an fp32 sum of these terms may make. xr: x as the kernel sees it. */
static void ref_dot(const float *xr, const float *wv, int K, const float *bias, double *ref,
                    double *mag)
{
    double s = bias ? *bias : 0.0, m = bias ? fabs(*bias) : 0.0;
    for (int k = 0; k < K; k++) {
        s += (double)xr[k] * wv[k];
        m += fabs((double)xr[k] * wv[k]);
    }
    *ref = s, *mag = m;
}

/* An fp32 dot product of K terms summed in any order of at most K sequential additions
 * (each ISA sums lanes of ceil(K / lanes) terms, then a tree of 4 levels, then the bias)
 * errs by at most (K + 2) u mag with u = 2^-24; the bound allows twice that. */
static double fp32_bound(int K, double mag) { return 2.0 * (K + 2) * 0x1p-24 * mag + 1e-30; }

static void test_isas_against_reference(void)
{
    struct pl_backend *be = new_backend(2);
    for (int ii = 0; ii < 3; ii++) {
        if (!use_isa(be, isas[ii], "the reference comparison"))
            continue;
        int n_checked = 0;
        for (int iter = 0; iter < 90; iter++) {
            enum pl_dtype dt = dtypes[iter % 3];
            int n = 1 + iter % 20; /* every token count 1..20 (tile remainders 1-3 and the
                                       1- and 2-token decode tiles) */
            int rows = rnd_int(1, 53), K = rnd_int(1, 300);
            if (iter % 5 == 0)
                K = 16 * rnd_int(1, 12); /* no tail */
            if (iter % 7 == 0)
                K = 32 * rnd_int(1, 6) + rnd_int(1, 31); /* a BF16-mode tail */
            int ld_out = rows + rnd_int(0, 3);
            bool with_bias = iter % 2;
            float *wv, *bv = NULL;
            void *w = make_weight(dt, (size_t)rows * K, &wv);
            void *b = with_bias ? make_weight(dt, (size_t)rows, &bv) : NULL;
            float *x = malloc(sizeof(float) * n * K), *out = malloc(sizeof(float) * n * ld_out);
            fill(x, (size_t)n * K);
            for (int i = 0; i < n * ld_out; i++)
                out[i] = 12345.0f;
            struct pl_weight W = {w, dt, rows, K}, B = {b, dt, 1, rows};
            be->ops->matmul(be, out, ld_out, x, &W, with_bias ? &B : NULL, n);
            for (int t = 0; t < n; t++) {
                for (int r = 0; r < rows; r++) {
                    double ref, mag;
                    ref_dot(x + (size_t)t * K, wv + (size_t)r * K, K, with_bias ? &bv[r] : NULL,
                            &ref, &mag);
                    float got = out[t * ld_out + r];
                    CHECKF(fabs(got - ref) <= fp32_bound(K, mag),
                           "%s %s n=%d rows=%d K=%d t=%d r=%d: %.9g vs %.9g",
                           pl_cpu_isa_name(isas[ii]), pl_dtype_name(dt), n, rows, K, t, r,
                           (double)got, ref);
                    n_checked++;
                }
                for (int r = rows; r < ld_out; r++)
                    CHECK(out[t * ld_out + r] == 12345.0f); /* padding columns untouched */
            }
            free(w), free(wv), free(b), free(bv), free(x), free(out);
        }
        CHECK(n_checked > 1000);
    }
    pl_backend_free(be);
}

/* The AVX-512 kernels are the default where the CPU has them, and the ISAs really
 * differ: their sums run in different orders, so some outputs differ in the last bits. */
static void test_default_isa_and_orders_differ(void)
{
    struct pl_backend *be = new_backend(1);
    CHECK(pl_backend_cpu_isa(be) == pl_cpu_best_isa());
    CHECK(pl_backend_cpu_matmul_mode(be) == PL_CPU_MATMUL_FP32);
    if (!pl_cpu_has_avx512()) {
        printf("skip the AVX-512 default: this CPU lacks AVX-512\n");
        pl_backend_free(be);
        return;
    }
    CHECK(pl_backend_cpu_isa(be) == PL_CPU_ISA_AVX512);
    int rows = 64, K = 333, n = 3;
    float *wv, *x = malloc(sizeof(float) * n * K);
    void *w = make_weight(PL_DTYPE_BF16, (size_t)rows * K, &wv);
    fill(x, (size_t)n * K);
    struct pl_weight W = {w, PL_DTYPE_BF16, rows, K};
    float *o[3];
    for (int ii = 0; ii < 3; ii++) {
        o[ii] = malloc(sizeof(float) * n * rows);
        CHECK(pl_backend_cpu_set_isa(be, isas[ii]) == isas[ii]);
        be->ops->matmul(be, o[ii], rows, x, &W, NULL, n);
    }
    CHECK(memcmp(o[0], o[2], sizeof(float) * n * rows) != 0);
    CHECK(memcmp(o[1], o[2], sizeof(float) * n * rows) != 0);
    /* set_simd(false) is the scalar path, set_simd(true) the best ISA again */
    CHECK(!pl_backend_cpu_set_simd(be, false) && pl_backend_cpu_isa(be) == PL_CPU_ISA_SCALAR);
    CHECK(pl_backend_cpu_set_simd(be, true) && pl_backend_cpu_isa(be) == PL_CPU_ISA_AVX512);
    for (int ii = 0; ii < 3; ii++)
        free(o[ii]);
    free(w), free(wv), free(x);
    pl_backend_free(be);
}

/* One (isa, mode) on weights of dtype dt: every token of a 17-token batch computed on 3
 * threads equals, bit for bit, the same token alone on 1 thread, inside batches of 2, 3,
 * 5 and 16 at shifted offsets, and the 17-token batch on 1 thread. */
static void check_invariance(struct pl_backend *b1, struct pl_backend *b3, enum pl_dtype dt,
                             const char *what)
{
    const int rows = 53, K = 99, n = 17; /* 53 rows: no tile divides it; K % 32 = 3 */
    float *wv, *bv;
    void *w = make_weight(dt, (size_t)rows * K, &wv);
    void *b = make_weight(dt, (size_t)rows, &bv);
    struct pl_weight W = {w, dt, rows, K}, B = {b, dt, 1, rows};
    float *x = malloc(sizeof(float) * n * K);
    float *all = malloc(sizeof(float) * n * rows), *got = malloc(sizeof(float) * n * rows);
    fill(x, (size_t)n * K);
    b3->ops->matmul(b3, all, rows, x, &W, &B, n);
    b1->ops->matmul(b1, got, rows, x, &W, &B, n);
    CHECKF(!memcmp(all, got, sizeof(float) * n * rows), "%s %s: 1 vs 3 threads", what,
           pl_dtype_name(dt));
    for (int t = 0; t < n; t++) {
        b1->ops->matmul(b1, got, rows, x + (size_t)t * K, &W, &B, 1);
        CHECKF(!memcmp(got, all + (size_t)t * rows, sizeof(float) * rows), "%s %s: token %d alone",
               what, pl_dtype_name(dt), t);
    }
    static const int sizes[] = {2, 3, 5, 16};
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        int m = sizes[si];
        for (int t0 = 0; t0 + m <= n; t0 += m - 1) {
            b3->ops->matmul(b3, got, rows, x + (size_t)t0 * K, &W, &B, m);
            CHECKF(!memcmp(got, all + (size_t)t0 * rows, sizeof(float) * m * rows),
                   "%s %s: tokens %d..%d", what, pl_dtype_name(dt), t0, t0 + m - 1);
        }
    }
    free(w), free(wv), free(b), free(bv), free(x), free(all), free(got);
}

static void test_batch_invariance_every_isa_and_mode(void)
{
    struct pl_backend *b1 = new_backend(1), *b3 = new_backend(3);
    for (int ii = 0; ii < 3; ii++) {
        if (!use_isa(b1, isas[ii], "batch invariance") || !use_isa(b3, isas[ii], "batch invariance"))
            continue;
        for (int di = 0; di < 3; di++)
            check_invariance(b1, b3, dtypes[di], pl_cpu_isa_name(isas[ii]));
    }
    if (pl_cpu_has_avx512_bf16()) {
        pl_backend_cpu_set_isa(b1, PL_CPU_ISA_AVX512), pl_backend_cpu_set_isa(b3, PL_CPU_ISA_AVX512);
        CHECK(pl_backend_cpu_set_matmul_mode(b1, PL_CPU_MATMUL_BF16) == PL_CPU_MATMUL_BF16);
        CHECK(pl_backend_cpu_set_matmul_mode(b3, PL_CPU_MATMUL_BF16) == PL_CPU_MATMUL_BF16);
        for (int di = 0; di < 3; di++)
            check_invariance(b1, b3, dtypes[di], "bf16 mode");
    } else {
        printf("skip batch invariance of the BF16 mode: this CPU lacks AVX512-BF16\n");
    }
    pl_backend_free(b1);
    pl_backend_free(b3);
}

/* The BF16 mode: the kernel's inputs are bf16(x) and the bf16 weights, whose products are
 * exact in fp32, so against the double sum over bf16(x) it errs like any fp32 sum; against
 * the FP32 path it differs by the rounding of x (relative 2^-9 per term). */
static void test_bf16_mode(void)
{
    struct pl_backend *be = new_backend(2);
    if (pl_backend_cpu_set_isa(be, PL_CPU_ISA_AVX512) != PL_CPU_ISA_AVX512 ||
        pl_backend_cpu_set_matmul_mode(be, PL_CPU_MATMUL_BF16) != PL_CPU_MATMUL_BF16) {
        printf("skip the BF16 mode: this CPU lacks AVX-512 or AVX512-BF16\n");
        CHECK(pl_backend_cpu_matmul_mode(be) == PL_CPU_MATMUL_FP32);
        pl_backend_free(be);
        return;
    }
    pl_backend_cpu_set_isa(be, PL_CPU_ISA_AVX2); /* the mode needs the AVX-512 kernels */
    CHECK(pl_backend_cpu_matmul_mode(be) == PL_CPU_MATMUL_FP32);
    pl_backend_cpu_set_isa(be, PL_CPU_ISA_AVX512);
    CHECK(pl_backend_cpu_matmul_mode(be) == PL_CPU_MATMUL_BF16);
    int n_differ = 0, n_checked = 0;
    for (int iter = 0; iter < 40; iter++) {
        int n = 1 + iter % 20, rows = rnd_int(1, 70), K = rnd_int(1, 400);
        if (iter % 4 == 0)
            K = 32 * rnd_int(1, 8);
        bool with_bias = iter % 3 == 0;
        float *wv, *bv = NULL;
        void *w = make_weight(PL_DTYPE_BF16, (size_t)rows * K, &wv);
        void *b = with_bias ? make_weight(PL_DTYPE_BF16, (size_t)rows, &bv) : NULL;
        float *x = malloc(sizeof(float) * n * K), *xr = malloc(sizeof(float) * n * K);
        float *out = malloc(sizeof(float) * n * rows), *exact = malloc(sizeof(float) * n * rows);
        fill(x, (size_t)n * K);
        for (int i = 0; i < n * K; i++)
            xr[i] = pl_bf16_to_f32(pl_f32_to_bf16(x[i]));
        struct pl_weight W = {w, PL_DTYPE_BF16, rows, K}, B = {b, PL_DTYPE_BF16, 1, rows};
        be->ops->matmul(be, out, rows, x, &W, with_bias ? &B : NULL, n);
        pl_backend_cpu_set_matmul_mode(be, PL_CPU_MATMUL_FP32);
        be->ops->matmul(be, exact, rows, x, &W, with_bias ? &B : NULL, n);
        pl_backend_cpu_set_matmul_mode(be, PL_CPU_MATMUL_BF16);
        for (int t = 0; t < n; t++) {
            for (int r = 0; r < rows; r++) {
                const float *bias = with_bias ? &bv[r] : NULL;
                double ref, mag, ref_x, mag_x;
                ref_dot(xr + (size_t)t * K, wv + (size_t)r * K, K, bias, &ref, &mag);
                ref_dot(x + (size_t)t * K, wv + (size_t)r * K, K, bias, &ref_x, &mag_x);
                float got = out[t * rows + r], ex = exact[t * rows + r];
                CHECKF(fabs(got - ref) <= fp32_bound(K, mag),
                       "n=%d rows=%d K=%d t=%d r=%d: %.9g vs bf16-x reference %.9g", n, rows, K,
                       t, r, (double)got, ref);
                CHECKF(fabs(got - ex) <= 0x1p-8 * mag_x + fp32_bound(K, mag_x),
                       "K=%d: %.9g vs fp32 path %.9g", K, (double)got, (double)ex);
                n_differ += got != ex;
                n_checked++;
            }
        }
        free(w), free(wv), free(b), free(bv), free(x), free(xr), free(out), free(exact);
    }
    CHECK(n_differ > n_checked / 2); /* the mode is really on: x is rounded */
    pl_backend_free(be);
}

/* The BF16 mode leaves F32 and F16 weights on the FP32 path, and rows too long for its
 * scratch (K > 128K) too: bit for bit the FP32 results. */
static void test_bf16_mode_leaves_other_paths(void)
{
    if (!pl_cpu_has_avx512_bf16()) {
        printf("skip the BF16 mode's fallbacks: this CPU lacks AVX512-BF16\n");
        return;
    }
    struct pl_backend *be = new_backend(2);
    struct {
        enum pl_dtype dt;
        int rows, K, n;
    } cases[] = {{PL_DTYPE_F32, 37, 77, 5}, {PL_DTYPE_F16, 37, 77, 5},
                 {PL_DTYPE_BF16, 3, (int)(PL_CPU_MM_SCRATCH_BYTES / 2) + 1, 2}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        int rows = cases[c].rows, K = cases[c].K, n = cases[c].n;
        float *wv, *x = malloc(sizeof(float) * (size_t)n * K);
        void *w = make_weight(cases[c].dt, (size_t)rows * K, &wv);
        fill(x, (size_t)n * K);
        struct pl_weight W = {w, cases[c].dt, rows, K};
        float *a = malloc(sizeof(float) * n * rows), *b = malloc(sizeof(float) * n * rows);
        pl_backend_cpu_set_matmul_mode(be, PL_CPU_MATMUL_FP32);
        be->ops->matmul(be, a, rows, x, &W, NULL, n);
        pl_backend_cpu_set_matmul_mode(be, PL_CPU_MATMUL_BF16);
        be->ops->matmul(be, b, rows, x, &W, NULL, n);
        CHECKF(!memcmp(a, b, sizeof(float) * n * rows), "%s K=%d", pl_dtype_name(cases[c].dt), K);
        free(w), free(wv), free(x), free(a), free(b);
    }
    pl_backend_free(be);
}

/* PAGELLM_CPU_ISA caps the kernels; PAGELLM_CPU_MATMUL picks the mode; unknown values
 * fail the backend's creation with a message naming the variable. */
static void test_env(void)
{
    struct pl_backend *be = NULL;
    struct pl_err err;
    setenv("PAGELLM_CPU_ISA", "avx2", 1);
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    CHECK(pl_backend_cpu_isa(be) == (pl_cpu_has_avx2() ? PL_CPU_ISA_AVX2 : PL_CPU_ISA_SCALAR));
    pl_backend_cpu_set_simd(be, false);
    CHECK(pl_backend_cpu_set_simd(be, true) == pl_cpu_has_avx2());
    CHECK(pl_backend_cpu_isa(be) != PL_CPU_ISA_AVX512); /* the cap holds */
    pl_backend_free(be);
    setenv("PAGELLM_CPU_ISA", "scalar", 1);
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    CHECK(pl_backend_cpu_isa(be) == PL_CPU_ISA_SCALAR);
    pl_backend_free(be);
    setenv("PAGELLM_CPU_ISA", "sse9", 1);
    CHECK(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "PAGELLM_CPU_ISA=sse9") != NULL);
    unsetenv("PAGELLM_CPU_ISA");

    setenv("PAGELLM_CPU_MATMUL", "bf16", 1);
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    CHECK(pl_backend_cpu_matmul_mode(be) ==
          (pl_cpu_has_avx512_bf16() ? PL_CPU_MATMUL_BF16 : PL_CPU_MATMUL_FP32));
    pl_backend_free(be);
    setenv("PAGELLM_CPU_MATMUL", "fp32", 1);
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    CHECK(pl_backend_cpu_matmul_mode(be) == PL_CPU_MATMUL_FP32);
    pl_backend_free(be);
    setenv("PAGELLM_CPU_MATMUL", "int8", 1);
    CHECK(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "PAGELLM_CPU_MATMUL=int8") != NULL);
    unsetenv("PAGELLM_CPU_MATMUL");
}

/* pl_cpu_dot (attention's q . k) in every ISA, against double. */
static void test_dot(void)
{
    for (int ii = 0; ii < 3; ii++) {
        if (pl_cpu_best_isa() < isas[ii])
            continue;
        for (int n = 1; n <= 70; n += 3) {
            float a[70], b[70];
            fill(a, (size_t)n), fill(b, (size_t)n);
            double ref, mag;
            ref_dot(a, b, n, NULL, &ref, &mag);
            float got = pl_cpu_dot(isas[ii], a, b, n);
            CHECKF(fabs(got - ref) <= fp32_bound(n, mag), "%s n=%d", pl_cpu_isa_name(isas[ii]), n);
        }
    }
}

/* A packed int4 weight (backend.h's PL_DTYPE_Q4 layout: random codes, zeros and scales;
 * act-order g_idx when gidx) into a malloc'ed buffer, and its values dequantized as the
 * reference does, (code - zero) * scale in fp32, into *vals. */
static void *make_q4(int rows, int K, int group, bool gidx, float **vals)
{
    const int G = gidx ? (K + group - 1) / group : K / group;
    const struct pl_q4_layout lay = pl_q4_layout_of(rows, K, G, gidx);
    char *buf = calloc(1, (size_t)lay.n_bytes);
    int32_t *h = (int32_t *)buf;
    h[0] = group, h[1] = G, h[2] = gidx;
    uint32_t *codes = (uint32_t *)(buf + 16);
    float *sc = (float *)(buf + lay.scale_off);
    uint8_t *z = (uint8_t *)(buf + lay.zero_off);
    int32_t *gi = (int32_t *)(buf + lay.gidx_off);
    if (gidx)
        for (int k = 0; k < K; k++)
            gi[k] = rnd_int(0, G - 1); /* act-order: any group per input */
    for (int i = 0; i < rows * G; i++) {
        sc[i] = rnd_f() * 0.05f + 0.001f;
        z[i] = (uint8_t)rnd_int(0, 15);
    }
    *vals = malloc(sizeof(float) * (size_t)rows * K);
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < K; k++) {
            const uint32_t c = rnd_u32() & 15u;
            codes[(size_t)r * (K / 8) + k / 8] |= c << (4 * (k % 8));
            const int g = gidx ? gi[k] : k / group;
            (*vals)[(size_t)r * K + k] = (float)((int)c - (int)z[r * G + g]) * sc[r * G + g];
        }
    return buf;
}

/* Packed int4 weights against the same values dequantized into an F32 weight (what the
 * reference path held before the CPU kept them packed): bit-identical in every ISA, token
 * count (1-8 tokens take AVX-512's fused path, which permutes the lanes), group size and
 * with act-order, with and without a bias, on 1 and 3 threads. */
static void test_q4_equals_dequantized(void)
{
    for (int th = 1; th <= 3; th += 2) {
        struct pl_backend *be = new_backend(th);
        REQUIRE(be->ops->supports(be, PL_OP_MATMUL, PL_DTYPE_Q4));
        for (int ii = 0; ii < 3; ii++) {
            if (!use_isa(be, isas[ii], "int4"))
                continue;
            long n_diff = 0, n_vals = 0;
            for (int iter = 0; iter < 40; iter++) {
                /* from iteration 24: 1-8 tokens on whole groups (the fused decode path) */
                static const int groups[4] = {32, 64, 128, 16};
                const bool few = iter >= 24;
                const int group = groups[iter % 4];
                const bool gidx = !few && iter % 5 == 2;
                /* act-order over many groups: iteration 7 33-40 (AVX-512 looks them up by
                 * several permutes), iteration 12 129-136 (past its 128: the gathers) */
                const int n_groups = !gidx       ? rnd_int(1, 6)
                                     : iter == 7  ? rnd_int(33, 40)
                                     : iter == 12 ? rnd_int(129, 136)
                                                  : rnd_int(1, 6);
                const int K = group * n_groups + (!few && iter % 6 == 5 ? 8 : 0); /* a tail */
                const int rows = rnd_int(1, 45), n = few ? 1 + iter % 8 : 1 + (iter * 7) % 19;
                float *vals;
                void *q = make_q4(rows, K, group, gidx || K % group != 0, &vals);
                float *bv = NULL;
                void *b = iter % 2 ? make_weight(PL_DTYPE_BF16, (size_t)rows, &bv) : NULL;
                float *x = malloc(sizeof(float) * (size_t)n * K);
                fill(x, (size_t)n * K);
                float *o1 = malloc(sizeof(float) * (size_t)n * rows);
                float *o2 = malloc(sizeof(float) * (size_t)n * rows);
                struct pl_weight Wq = {q, PL_DTYPE_Q4, rows, K}, Wf = {vals, PL_DTYPE_F32, rows, K};
                struct pl_weight B = {b, PL_DTYPE_BF16, 1, rows};
                be->ops->matmul(be, o1, rows, x, &Wq, b ? &B : NULL, n);
                be->ops->matmul(be, o2, rows, x, &Wf, b ? &B : NULL, n);
                for (int i = 0; i < n * rows; i++)
                    n_diff += memcmp(&o1[i], &o2[i], sizeof(float)) != 0;
                n_vals += (long)n * rows;
                free(q), free(vals), free(b), free(bv), free(x), free(o1), free(o2);
            }
            CHECKF(n_diff == 0, "%s, %d threads: %ld of %ld int4 outputs differ from the "
                   "dequantized weight's", pl_cpu_isa_name(isas[ii]), th, n_diff, n_vals);
        }
        pl_backend_free(be);
    }
}

int main(void)
{
    unsetenv("PAGELLM_CPU_ISA");
    unsetenv("PAGELLM_CPU_MATMUL");
    printf("cpu: best ISA %s, AVX512-BF16 %s\n", pl_cpu_isa_name(pl_cpu_best_isa()),
           pl_cpu_has_avx512_bf16() ? "yes" : "no");
    PL_RUN(test_isas_against_reference);
    PL_RUN(test_default_isa_and_orders_differ);
    PL_RUN(test_batch_invariance_every_isa_and_mode);
    PL_RUN(test_bf16_mode);
    PL_RUN(test_bf16_mode_leaves_other_paths);
    PL_RUN(test_env);
    PL_RUN(test_dot);
    PL_RUN(test_q4_equals_dequantized);
    return pl_test_summary();
}
