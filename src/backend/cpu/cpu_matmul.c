/*
 * cpu_matmul.c -- the CPU weight matmul: out = x @ W^T (+ bias), fp32 out.
 *
 * Owns: the kernels behind the matmul and logits ops. W is [rows, cols] in
 * F32, F16 or BF16 (as HF stores it, one output feature per row); x and out
 * are fp32. Half-precision weights are widened to fp32 on the fly, so the
 * weights stay in the mmap untouched.
 *
 * Shape of the work (why it is fast):
 *   - threads split the output rows (features) into contiguous ranges; each
 *     thread streams only its own slice of W;
 *   - inside a range, a tile of NT input rows (tokens) x NR weight rows keeps
 *     NT*NR 8-lane fp32 accumulators in registers: each weight vector loaded
 *     (and widened) once feeds NT tokens, so prefill reuses every weight load
 *     across tokens while decode (NT = 1) is a pure stream over W;
 *   - tokens are walked in blocks whose x slice fits in L2, so W is re-read
 *     from memory once per block, not once per token tile.
 * The AVX2+FMA(+F16C) kernels are compiled with target attributes and chosen
 * at run time (the build is not -march=native); the scalar loop is the
 * fallback and the readable statement of what the kernels compute.
 *
 * Invariant (batch invariance): every output element is one dot product
 * accumulated in the same order (8 lanes over k ascending, a fixed lane
 * reduction, then the scalar tail, then + bias) whatever the tile shape, the
 * token block or the thread split. So a token's result does not depend on
 * which other tokens share the batch.
 */
#include "backend/cpu/cpu_backend.h"

#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define PL_HAVE_X86 1
#else
#define PL_HAVE_X86 0
#endif

/* Bytes of x per token block: about half of a typical L2. */
#define X_BLOCK_BYTES (256 * 1024)

bool pl_cpu_has_avx2(void)
{
#if PL_HAVE_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
        return false;
    /* F16C (CPUID.1:ECX bit 29); not every compiler's __builtin_cpu_supports knows it */
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
#else
    return false;
#endif
}

/* ---- scalar reference kernel ---------------------------------------------------------- */

static void tile_scalar(const float *x, size_t ldx, const void *w, enum pl_dtype wt, size_t row0,
                        size_t ldw, int K, float *out, size_t ldo, const float *bias, int nt,
                        int nr)
{
    for (int i = 0; i < nt; i++) {
        for (int j = 0; j < nr; j++) {
            size_t base = (row0 + (size_t)j) * ldw;
            float s = 0.0f;
            for (int k = 0; k < K; k++)
                s += x[(size_t)i * ldx + (size_t)k] * pl_dtype_get_f32(w, wt, base + (size_t)k);
            out[(size_t)i * ldo + (size_t)j] = bias ? s + bias[j] : s;
        }
    }
}

/* ---- AVX2 kernels --------------------------------------------------------------------- */

#if PL_HAVE_X86
#define TGT __attribute__((target("avx2,fma,f16c")))
#define TGT_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

TGT_INLINE __m256 load8_f32(const void *w, size_t i)
{
    return _mm256_loadu_ps((const float *)w + i);
}
TGT_INLINE __m256 load8_bf16(const void *w, size_t i)
{
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)w + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
TGT_INLINE __m256 load8_f16(const void *w, size_t i)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
}

/* A fixed reduction order for the 8 lanes: ((0+4)+(2+6)) + ((1+5)+(3+7)). */
TGT_INLINE float hsum8(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v);
    __m128 hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One NT x NR tile; NT and NR are compile-time constants at every call site,
 * so the accumulator array lives in registers after unrolling. */
#define DEFINE_TILE(SUFFIX, DT)                                                                \
    TGT_INLINE void tile_##SUFFIX(const float *x, size_t ldx, const void *w, size_t row0,       \
                                  size_t ldw, int K, float *out, size_t ldo, const float *bias, \
                                  const int NT, const int NR)                                  \
    {                                                                                          \
        __m256 acc[4][8];                                                                      \
        for (int i = 0; i < NT; i++)                                                           \
            for (int j = 0; j < NR; j++)                                                       \
                acc[i][j] = _mm256_setzero_ps();                                               \
        int k = 0;                                                                             \
        for (; k + 8 <= K; k += 8) {                                                           \
            __m256 wv[8];                                                                      \
            for (int j = 0; j < NR; j++)                                                       \
                wv[j] = load8_##SUFFIX(w, (row0 + (size_t)j) * ldw + (size_t)k);               \
            for (int i = 0; i < NT; i++) {                                                     \
                __m256 xv = _mm256_loadu_ps(x + (size_t)i * ldx + (size_t)k);                  \
                for (int j = 0; j < NR; j++)                                                   \
                    acc[i][j] = _mm256_fmadd_ps(xv, wv[j], acc[i][j]);                         \
            }                                                                                  \
        }                                                                                      \
        for (int i = 0; i < NT; i++) {                                                         \
            for (int j = 0; j < NR; j++) {                                                     \
                float s = hsum8(acc[i][j]);                                                    \
                size_t base = (row0 + (size_t)j) * ldw;                                        \
                for (int kk = k; kk < K; kk++)                                                 \
                    s += x[(size_t)i * ldx + (size_t)kk] *                                     \
                         pl_dtype_get_f32(w, DT, base + (size_t)kk);                           \
                out[(size_t)i * ldo + (size_t)j] = bias ? s + bias[j] : s;                     \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    static TGT void tiles_##SUFFIX(const float *x, size_t ldx, const void *w, size_t row0,      \
                                   size_t ldw, int K, float *out, size_t ldo,                  \
                                   const float *bias, int nt, int nr)                          \
    {                                                                                          \
        switch (nt * 16 + nr) {                                                                \
        case 1 * 16 + 1: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 1); break;  \
        case 1 * 16 + 2: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 2); break;  \
        case 1 * 16 + 3: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 3); break;  \
        case 1 * 16 + 4: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 4); break;  \
        case 1 * 16 + 5: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 5); break;  \
        case 1 * 16 + 6: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 6); break;  \
        case 1 * 16 + 7: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 7); break;  \
        case 1 * 16 + 8: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 1, 8); break;  \
        case 2 * 16 + 1: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 2, 1); break;  \
        case 2 * 16 + 2: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 2, 2); break;  \
        case 2 * 16 + 3: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 2, 3); break;  \
        case 2 * 16 + 4: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 2, 4); break;  \
        case 3 * 16 + 1: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 3, 1); break;  \
        case 3 * 16 + 2: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 3, 2); break;  \
        case 3 * 16 + 3: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 3, 3); break;  \
        case 3 * 16 + 4: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 3, 4); break;  \
        case 4 * 16 + 1: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 4, 1); break;  \
        case 4 * 16 + 2: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 4, 2); break;  \
        case 4 * 16 + 3: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 4, 3); break;  \
        case 4 * 16 + 4: tile_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, 4, 4); break;  \
        default: tile_scalar(x, ldx, w, DT, row0, ldw, K, out, ldo, bias, nt, nr); break;      \
        }                                                                                      \
    }

DEFINE_TILE(f32, PL_DTYPE_F32)
DEFINE_TILE(bf16, PL_DTYPE_BF16)
DEFINE_TILE(f16, PL_DTYPE_F16)

static TGT float dot_avx2(const float *a, const float *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= n; k += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
    float s = hsum8(acc);
    for (; k < n; k++)
        s += a[k] * b[k];
    return s;
}
#endif /* PL_HAVE_X86 */

float pl_cpu_dot(bool simd, const float *a, const float *b, int n)
{
#if PL_HAVE_X86
    if (simd)
        return dot_avx2(a, b, n);
#endif
    float s = 0.0f;
    for (int k = 0; k < n; k++)
        s += a[k] * b[k];
    return s;
}

/* ---- the threaded driver -------------------------------------------------------------- */

struct mm_job {
    float *out;
    size_t ld_out;
    const float *x;
    const struct pl_weight *w;
    const struct pl_weight *bias_w;
    int n;
    bool simd;
};

typedef void (*tiles_fn)(const float *x, size_t ldx, const void *w, size_t row0, size_t ldw,
                         int K, float *out, size_t ldo, const float *bias, int nt, int nr);

static void mm_worker(void *ctx, int ith, int nth)
{
    const struct mm_job *job = ctx;
    const struct pl_weight *w = job->w;
    const int64_t R = w->rows;
    const int K = (int)w->cols;
    const size_t ldx = (size_t)K;
    int64_t r0 = R * ith / nth;
    int64_t r1 = R * (ith + 1) / nth;
    if (r0 >= r1)
        return;

    tiles_fn tiles = NULL;
#if PL_HAVE_X86
    if (job->simd) {
        switch (w->dtype) {
        case PL_DTYPE_F32: tiles = tiles_f32; break;
        case PL_DTYPE_BF16: tiles = tiles_bf16; break;
        case PL_DTYPE_F16: tiles = tiles_f16; break;
        default: break;
        }
    }
#endif

    /* Tokens per block: x block within X_BLOCK_BYTES, a multiple of 4, at least 4. */
    int tb = (int)(X_BLOCK_BYTES / ((size_t)K * sizeof(float)));
    tb = tb < 4 ? 4 : tb & ~3;
    /* Up to 12 accumulators: 4 tokens x 3 rows for prefill, 2 tokens x 4 rows, and 1 token x
     * 8 rows for decode (8 independent FMA chains cover the FMA latency, and short rows -- a
     * vocabulary of 128K rows of a few hundred columns -- pay one call per 8 rows). */
    const int n = job->n;
    float bias_buf[8];
    for (int t0 = 0; t0 < n; t0 += tb) {
        int t_end = t0 + tb < n ? t0 + tb : n;
        int nr_max = (t_end - t0) >= 3 ? 3 : (t_end - t0) == 2 ? 4 : 8;
        for (int64_t r = r0; r < r1; r += nr_max) {
            int nr = (int)(r1 - r < nr_max ? r1 - r : nr_max);
            const float *bias = NULL;
            if (job->bias_w) {
                for (int j = 0; j < nr; j++)
                    bias_buf[j] = pl_dtype_get_f32(job->bias_w->data, job->bias_w->dtype,
                                                   (size_t)(r + j));
                bias = bias_buf;
            }
            for (int t = t0; t < t_end; t += 4) {
                int nt = t_end - t < 4 ? t_end - t : 4;
                const float *xt = job->x + (size_t)t * ldx;
                float *ot = job->out + (size_t)t * job->ld_out + (size_t)r;
                if (tiles)
                    tiles(xt, ldx, w->data, (size_t)r, (size_t)K, K, ot, job->ld_out, bias, nt,
                          nr);
                else
                    tile_scalar(xt, ldx, w->data, w->dtype, (size_t)r, (size_t)K, K, ot,
                                job->ld_out, bias, nt, nr);
            }
        }
    }
}

void pl_cpu_matmul(struct pl_threadpool *pool, bool simd, float *out, int ld_out, const float *x,
                   const struct pl_weight *w, const struct pl_weight *bias, int n)
{
    if (n <= 0 || w->rows <= 0)
        return;
    struct mm_job job = {
        .out = out,
        .ld_out = (size_t)ld_out,
        .x = x,
        .w = w,
        .bias_w = (bias && bias->data) ? bias : NULL,
        .n = n,
        .simd = simd,
    };
    pl_threadpool_run(pool, mm_worker, &job);
}
