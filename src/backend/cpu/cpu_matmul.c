/*
 * cpu_matmul.c -- the CPU weight matmul: out = x @ W^T (+ bias), fp32 out.
 *
 * Owns: the kernels behind the matmul and logits ops. W is [rows, cols] in
 * F32, F16 or BF16 (as HF stores it, one output feature per row); x and out
 * are fp32. Half-precision weights are widened to fp32 on the fly, so the
 * weights stay in the mmap untouched. Packed int4 weights (PL_DTYPE_Q4) are
 * expanded to the fp32 values of the dequantizing reference, a tile of rows
 * into a scratch for prefill or in registers for decode (the section below).
 *
 * Shape of the work (why it is fast):
 *   - threads split the output rows (features) into contiguous ranges; each
 *     thread streams only its own slice of W;
 *   - inside a range, a tile of NT input rows (tokens) x NR weight rows keeps
 *     NT*NR vector accumulators in registers: each weight vector loaded (and
 *     widened) once feeds NT tokens, so prefill reuses every weight load
 *     across tokens while decode (NT = 1) is a pure stream over W;
 *   - tokens are walked in blocks whose x slice fits in L2, so W is re-read
 *     from memory once per block, not once per token tile.
 * Three instruction sets (cpu_backend.h): the scalar loop (the fallback and
 * the readable statement of what the kernels compute), AVX2+FMA+F16C (8
 * lanes, tiles up to 4 tokens x 3 rows / 1 x 8) and AVX-512 (16 lanes and 32
 * registers: tiles up to 4 tokens x 6 rows / 1 x 16). Both SIMD sets are
 * compiled with target attributes and chosen at run time (the build is not
 * -march=native). With AVX512-BF16 the opt-in BF16 mode multiplies bf16
 * weights by activations rounded to bf16 once per call (into the calling
 * thread's scratch), 32 products per vdpbf16ps, fp32 accumulation.
 *
 * Invariant (batch invariance): within one ISA and mode, every output element
 * is one dot product accumulated in the same order whatever the tile shape,
 * the token block or the thread split, so a token's result does not depend on
 * which other tokens share the batch:
 *   scalar   k ascending, then + bias;
 *   AVX2     8 lanes over k ascending (lane = k mod 8), a fixed lane
 *            reduction, then the scalar tail, then + bias;
 *   AVX-512  16 lanes over k ascending (lane = k mod 16), the last partial
 *            vector by masked loads, a fixed lane reduction, then + bias;
 *   BF16     16 lanes of pairs (lane = (k / 2) mod 16), vdpbf16ps over k
 *            ascending, the tail by masked loads, the same lane reduction,
 *            then + bias.
 * Partial tiles (fewer rows left than NR) repeat their last row instead of
 * using another kernel, so one kernel per tile shape covers every row count.
 */
#include "backend/cpu/cpu_backend.h"

#include <assert.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#include <immintrin.h>
#define PL_HAVE_X86 1
#else
#define PL_HAVE_X86 0
#endif

/* Bytes of x per token block: about half of a typical L2. */
#define X_BLOCK_BYTES ((size_t)256 * 1024)
/* Packed int4 weights: at least this many tokens a block, whatever K. A block dequantizes
 * each tile of rows again, which at 4 tokens (K = 14336) cost more than its products; 64
 * re-reads x from the outer caches instead. Measured on the Llama-3.2-1B AWQ shape: prefill
 * of 128 tokens 1.13x, of 512 tokens 1.24x against the L2-sized block (32: 1.10x, 1.17x). */
#define Q4_TOKEN_BLOCK 64

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

bool pl_cpu_has_avx512(void)
{
#if PL_HAVE_X86
    /* __builtin_cpu_supports checks that the OS saves the zmm state (XCR0) too */
    return pl_cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq");
#else
    return false;
#endif
}

bool pl_cpu_has_avx512_bf16(void)
{
#if PL_HAVE_X86
    /* AVX512_BF16: CPUID.(EAX=7, ECX=1):EAX bit 5 */
    unsigned a, b, c, d;
    return pl_cpu_has_avx512() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
#else
    return false;
#endif
}

enum pl_cpu_isa pl_cpu_best_isa(void)
{
    return pl_cpu_has_avx512() ? PL_CPU_ISA_AVX512
           : pl_cpu_has_avx2() ? PL_CPU_ISA_AVX2
                               : PL_CPU_ISA_SCALAR;
}

const char *pl_cpu_isa_name(enum pl_cpu_isa isa)
{
    switch (isa) {
    case PL_CPU_ISA_SCALAR: return "scalar";
    case PL_CPU_ISA_AVX2: return "avx2";
    case PL_CPU_ISA_AVX512: return "avx512";
    }
    return "?";
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

/* ---- AVX-512 kernels ------------------------------------------------------------------ */

#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define TGT512_INLINE                                                                         \
    static inline __attribute__((always_inline,                                              \
                                 target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

/* Rows per tile: decode (1 token) streams NR1 rows at once (independent FMA chains to
 * cover the latency, and few calls for a vocabulary of short rows); 2 tokens x NR2;
 * prefill 4 tokens x NR4 (24 accumulators + 6 weight vectors + 1 x of the 32 registers;
 * the last token tile of a block, 1-3 tokens, keeps NR4). */
#define NR1_512 16
#define NR2_512 8
#define NR4_512 6

/* 16 weights from w[i..i+16) widened to fp32; the masked forms read only the lanes in m
 * (the rest are 0) and never touch memory past them. */
TGT512_INLINE __m512 load16_f32(const void *w, size_t i)
{
    return _mm512_loadu_ps((const float *)w + i);
}
TGT512_INLINE __m512 loadm16_f32(const void *w, size_t i, __mmask16 m)
{
    return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}
TGT512_INLINE __m512 widen16_bf16(__m256i h)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
TGT512_INLINE __m512 load16_bf16(const void *w, size_t i)
{
    return widen16_bf16(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
}
TGT512_INLINE __m512 loadm16_bf16(const void *w, size_t i, __mmask16 m)
{
    return widen16_bf16(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
}
TGT512_INLINE __m512 load16_f16(const void *w, size_t i)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
}
TGT512_INLINE __m512 loadm16_f16(const void *w, size_t i, __mmask16 m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
}

/* A fixed reduction order for the 16 lanes: lane i + lane i+8, then i + i+4, i + i+2,
 * i + i+1. */
TGT512_INLINE float hsum16(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

/* The tiles below name every accumulator (a<i>_<j>: token i, row j) and weight vector
 * (w<j>) as its own variable, expanded by these macros for i < 4, j < 16; those past the
 * tile's NT x NR are never used and vanish. (An array of accumulators indexed in unrolled
 * loops is not reliably kept in registers: GCC kept a 4 x 6 tile's on the stack, a load and
 * a store around every FMA.) */
#define FOR_J16(M, A) M(A, 0) M(A, 1) M(A, 2) M(A, 3) M(A, 4) M(A, 5) M(A, 6) M(A, 7)        \
    M(A, 8) M(A, 9) M(A, 10) M(A, 11) M(A, 12) M(A, 13) M(A, 14) M(A, 15)
#define FOR_I4J16(M) FOR_J16(M, 0) FOR_J16(M, 1) FOR_J16(M, 2) FOR_J16(M, 3)
#define FOR_I4(M, A) M(0, A) M(1, A) M(2, A) M(3, A)

/* Row offsets: rows past row_last repeat it (a partial tile). */
#define ROW_OFF(_, j)                                                                         \
    const size_t o##j = (row0 + (size_t)(j) < row_last ? row0 + (size_t)(j) : row_last) * ldw;
#define ACC_ZERO(i, j) __m512 a##i##_##j = _mm512_setzero_ps();
/* The sums out: out[i, j] = hsum16(a<i>_<j>) (+ bias[j]) for i < NT, j < nr. */
#define ACC_STORE(i, j)                                                                       \
    if ((i) < NT && (j) < NR && (j) < nr) {                                                   \
        float s_ = hsum16(a##i##_##j);                                                        \
        out[(size_t)(i) * ldo + (j)] = bias ? s_ + bias[j] : s_;                              \
    }

TGT512_INLINE __m512 load16(const void *w, size_t i, const enum pl_dtype DT)
{
    return DT == PL_DTYPE_F32 ? load16_f32(w, i) : DT == PL_DTYPE_BF16 ? load16_bf16(w, i)
                                                                        : load16_f16(w, i);
}
TGT512_INLINE __m512 loadm16(const void *w, size_t i, __mmask16 m, const enum pl_dtype DT)
{
    return DT == PL_DTYPE_F32    ? loadm16_f32(w, i, m)
           : DT == PL_DTYPE_BF16 ? loadm16_bf16(w, i, m)
                                 : loadm16_f16(w, i, m);
}

/* One NT x NR tile of weights of dtype DT (NT, NR, DT compile-time constants at every call
 * site) over weight rows row0.. ; only the first nr rows are written. */
TGT512_INLINE void tile512(const float *x, size_t ldx, const void *w, size_t row0,
                           size_t row_last, size_t ldw, int K, float *out, size_t ldo,
                           const float *bias, int nr, const enum pl_dtype DT, const int NT,
                           const int NR)
{
    FOR_J16(ROW_OFF, _)
    FOR_I4J16(ACC_ZERO)
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        if (NT == 1) { /* decode: each weight vector feeds one FMA */
            const __m512 x0 = _mm512_loadu_ps(x + (size_t)k);
#define FMA_STREAM(_, j)                                                                      \
    if ((j) < NR)                                                                             \
        a0_##j = _mm512_fmadd_ps(x0, load16(w, o##j + (size_t)k, DT), a0_##j);
            FOR_J16(FMA_STREAM, _)
#undef FMA_STREAM
        } else {
#define LOAD_W(_, j) const __m512 w##j = (j) < NR ? load16(w, o##j + (size_t)k, DT) : _mm512_setzero_ps();
            FOR_J16(LOAD_W, _)
#undef LOAD_W
#define FMA_IJ(i, j)                                                                          \
    if ((j) < NR)                                                                             \
        a##i##_##j = _mm512_fmadd_ps(xv, w##j, a##i##_##j);
#define FMA_ROW(i, _)                                                                         \
    if ((i) < NT) {                                                                           \
        const __m512 xv = _mm512_loadu_ps(x + (size_t)(i) * ldx + (size_t)k);                 \
        FOR_J16(FMA_IJ, i)                                                                    \
    }
            FOR_I4(FMA_ROW, _)
        }
    }
    if (k < K) {
        const __mmask16 m = (__mmask16)((1u << (K - k)) - 1u);
#define LOADM_W(_, j) const __m512 w##j = (j) < NR ? loadm16(w, o##j + (size_t)k, m, DT) : _mm512_setzero_ps();
        FOR_J16(LOADM_W, _)
#undef LOADM_W
#define FMAM_ROW(i, _)                                                                        \
    if ((i) < NT) {                                                                           \
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)(i) * ldx + (size_t)k);       \
        FOR_J16(FMA_IJ, i)                                                                    \
    }
        FOR_I4(FMAM_ROW, _)
#undef FMAM_ROW
    }
    FOR_I4J16(ACC_STORE)
}

#define DEFINE_TILES512(SUFFIX, DT)                                                            \
    static TGT512 void tiles512_##SUFFIX(const float *x, size_t ldx, const void *w, size_t row0, \
                                         size_t row_last, size_t ldw, int K, float *out,        \
                                         size_t ldo, const float *bias, int nt, int nr,         \
                                         int nr_tile)                                          \
    {                                                                                          \
        switch (nt * 32 + nr_tile) {                                                           \
        case 1 * 32 + NR1_512:                                                                 \
            tile512(x, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, DT, 1, NR1_512);   \
            break;                                                                             \
        case 2 * 32 + NR2_512:                                                                 \
            tile512(x, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, DT, 2, NR2_512);   \
            break;                                                                             \
        case 1 * 32 + NR4_512:                                                                 \
            tile512(x, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, DT, 1, NR4_512);   \
            break;                                                                             \
        case 2 * 32 + NR4_512:                                                                 \
            tile512(x, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, DT, 2, NR4_512);   \
            break;                                                                             \
        case 3 * 32 + NR4_512:                                                                 \
            tile512(x, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, DT, 3, NR4_512);   \
            break;                                                                             \
        case 4 * 32 + NR4_512:                                                                 \
            tile512(x, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, DT, 4, NR4_512);   \
            break;                                                                             \
        default: assert(!"tiles512: no kernel for this tile shape"); break;                    \
        }                                                                                      \
    }

DEFINE_TILES512(f32, PL_DTYPE_F32)
DEFINE_TILES512(bf16, PL_DTYPE_BF16)
DEFINE_TILES512(f16, PL_DTYPE_F16)

static TGT512 float dot_avx512(const float *a, const float *b, int n)
{
    __m512 acc = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= n; k += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc);
    if (k < n) {
        __mmask16 m = (__mmask16)((1u << (n - k)) - 1u);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k),
                              acc);
    }
    return hsum16(acc);
}

/* ---- AVX512-BF16 kernels (the BF16 mode) ---------------------------------------------- */

#define TGTBF                                                                                 \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))
#define TGTBF_INLINE                                                                          \
    static inline __attribute__((                                                            \
        always_inline, target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c")))

/* x[n, K] fp32 (row stride ldx) -> xs[n, kpad] bf16, rounded to nearest even, zero-padded
 * from K to kpad (a multiple of 32). */
static TGTBF void round_rows_bf16(const float *x, size_t ldx, int n, int K, uint16_t *xs,
                                  int kpad)
{
    for (int t = 0; t < n; t++) {
        const float *xr = x + (size_t)t * ldx;
        uint16_t *d = xs + (size_t)t * (size_t)kpad;
        for (int k = 0; k < kpad; k += 16) {
            int left = K - k;
            __mmask16 m = left >= 16 ? (__mmask16)0xffff
                          : left <= 0 ? (__mmask16)0
                                      : (__mmask16)((1u << left) - 1u);
            __m256bh h = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, xr + k));
            _mm256_storeu_si256((__m256i *)(d + k), (__m256i)h);
        }
    }
}

/* One NT x NR tile of the BF16 mode: xs bf16 [NT, ldx] (zero-padded to a multiple of 32),
 * w bf16 weights; rows, accumulators and the store as in tile512. */
TGTBF_INLINE void tile_dot(const uint16_t *xs, size_t ldx, const uint16_t *w, size_t row0,
                           size_t row_last, size_t ldw, int K, float *out, size_t ldo,
                           const float *bias, int nr, const int NT, const int NR)
{
    FOR_J16(ROW_OFF, _)
    FOR_I4J16(ACC_ZERO)
    int k = 0;
#define DP_IJ(i, j)                                                                           \
    if ((j) < NR)                                                                             \
        a##i##_##j = _mm512_dpbf16_ps(a##i##_##j, xv, w##j);
#define DP_ROW(i, _)                                                                          \
    if ((i) < NT) {                                                                           \
        const __m512bh xv = (__m512bh)_mm512_loadu_si512(xs + (size_t)(i) * ldx + (size_t)k); \
        FOR_J16(DP_IJ, i)                                                                     \
    }
    for (; k + 32 <= K; k += 32) {
        if (NT == 1) {
            const __m512bh x0 = (__m512bh)_mm512_loadu_si512(xs + (size_t)k);
#define DP_STREAM(_, j)                                                                       \
    if ((j) < NR)                                                                             \
        a0_##j = _mm512_dpbf16_ps(a0_##j, x0, (__m512bh)_mm512_loadu_si512(w + o##j + (size_t)k));
            FOR_J16(DP_STREAM, _)
#undef DP_STREAM
        } else {
#define LOAD_WB(_, j)                                                                         \
    const __m512bh w##j = (__m512bh)((j) < NR ? _mm512_loadu_si512(w + o##j + (size_t)k)      \
                                              : _mm512_setzero_si512());
            FOR_J16(LOAD_WB, _)
#undef LOAD_WB
            FOR_I4(DP_ROW, _)
        }
    }
    if (k < K) { /* the activations are zero past K; the weights are read only up to K */
        const __mmask32 m = (__mmask32)((1ull << (K - k)) - 1ull);
#define LOADM_WB(_, j)                                                                        \
    const __m512bh w##j = (__m512bh)((j) < NR ? _mm512_maskz_loadu_epi16(m, w + o##j + (size_t)k) \
                                              : _mm512_setzero_si512());
        FOR_J16(LOADM_WB, _)
#undef LOADM_WB
        FOR_I4(DP_ROW, _)
    }
#undef DP_ROW
#undef DP_IJ
    FOR_I4J16(ACC_STORE)
}

static TGTBF void tiles_dot(const uint16_t *xs, size_t ldx, const uint16_t *w, size_t row0,
                            size_t row_last, size_t ldw, int K, float *out, size_t ldo,
                            const float *bias, int nt, int nr, int nr_tile)
{
#define TD(NT, NR) tile_dot(xs, ldx, w, row0, row_last, ldw, K, out, ldo, bias, nr, NT, NR)
    switch (nt * 32 + nr_tile) {
    case 1 * 32 + NR1_512: TD(1, NR1_512); break;
    case 2 * 32 + NR2_512: TD(2, NR2_512); break;
    case 1 * 32 + NR4_512: TD(1, NR4_512); break;
    case 2 * 32 + NR4_512: TD(2, NR4_512); break;
    case 3 * 32 + NR4_512: TD(3, NR4_512); break;
    case 4 * 32 + NR4_512: TD(4, NR4_512); break;
    default: assert(!"tiles_dot: no kernel for this tile shape"); break;
    }
#undef TD
}
#endif /* PL_HAVE_X86 */

float pl_cpu_dot(enum pl_cpu_isa isa, const float *a, const float *b, int n)
{
#if PL_HAVE_X86
    if (isa == PL_CPU_ISA_AVX512)
        return dot_avx512(a, b, n);
    if (isa == PL_CPU_ISA_AVX2)
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
    const struct pl_cpu_mm *mm;
};

/* A tile function: nt tokens x nr rows written; nr_tile, the kernel's row count, and
 * row_last (the last row of the thread's range, repeated by partial tiles) matter only
 * to the AVX-512 kernels. */
typedef void (*tiles_fn)(const float *x, size_t ldx, const void *w, size_t row0,
                         size_t row_last, size_t ldw, int K, float *out, size_t ldo,
                         const float *bias, int nt, int nr, int nr_tile);

static void tiles_scalar(enum pl_dtype wt, const float *x, size_t ldx, const void *w,
                         size_t row0, size_t ldw, int K, float *out, size_t ldo,
                         const float *bias, int nt, int nr)
{
    tile_scalar(x, ldx, w, wt, row0, ldw, K, out, ldo, bias, nt, nr);
}

#if PL_HAVE_X86
#define DEFINE_TILES2(SUFFIX)                                                                  \
    static void tiles2_##SUFFIX(const float *x, size_t ldx, const void *w, size_t row0,         \
                                size_t row_last, size_t ldw, int K, float *out, size_t ldo,    \
                                const float *bias, int nt, int nr, int nr_tile)               \
    {                                                                                          \
        (void)row_last, (void)nr_tile;                                                         \
        tiles_##SUFFIX(x, ldx, w, row0, ldw, K, out, ldo, bias, nt, nr);                       \
    }
DEFINE_TILES2(f32)
DEFINE_TILES2(bf16)
DEFINE_TILES2(f16)
#endif

/* Rows per tile for a token block of nb tokens. */
static int rows_per_tile(enum pl_cpu_isa isa, int nb)
{
    if (isa == PL_CPU_ISA_AVX512)
        return nb >= 3 ? NR4_512 : nb == 2 ? NR2_512 : NR1_512;
    /* AVX2 and scalar: up to 12 accumulators, 4 tokens x 3 rows for prefill, 2 tokens x 4
     * rows, and 1 token x 8 rows for decode (8 independent FMA chains cover the FMA
     * latency, and short rows -- a vocabulary of 128K rows of a few hundred columns -- pay
     * one call per 8 rows) */
    return nb >= 3 ? 3 : nb == 2 ? 4 : 8;
}

/* ---- packed int4 weights (PL_DTYPE_Q4) ------------------------------------------------ */

/* The layout's sections (backend.h, pl_q4_layout_of) of a weight. */
struct q4_view {
    const uint32_t *codes; /* [rows, cols / 8] */
    const float *scales;   /* [rows, n_groups] */
    const uint8_t *zeros;  /* [rows, n_groups] */
    const int32_t *gidx;   /* [cols] or NULL: group k / group */
    int group;
    int64_t n_groups;
};

static struct q4_view q4_view_of(const struct pl_weight *w)
{
    const int32_t *h = w->data;
    struct q4_view v = {0};
    v.group = h[0];
    v.n_groups = h[1];
    const struct pl_q4_layout lay = pl_q4_layout_of(w->rows, w->cols, v.n_groups, h[2]);
    const char *base = w->data;
    v.codes = (const uint32_t *)(base + 16);
    v.scales = (const float *)(base + lay.scale_off);
    v.zeros = (const uint8_t *)(base + lay.zero_off);
    v.gidx = h[2] ? (const int32_t *)(base + lay.gidx_off) : NULL;
    return v;
}

/* w[r][k] = (code - zero) * scale, as the dequantizing reference (model/quant_dequant.c). */
static inline float q4_at(const struct q4_view *v, int64_t r, int64_t K, int64_t k)
{
    const uint32_t c = (v->codes[r * (K / 8) + k / 8] >> (4 * (k % 8))) & 15u;
    const int64_t g = v->gidx ? v->gidx[k] : k / v->group;
    return (float)((int)c - (int)v->zeros[r * v->n_groups + g]) * v->scales[r * v->n_groups + g];
}

#if PL_HAVE_X86
/* The codes of inputs k..k+15 of a row (cb: its code bytes), in input order, widened. */
TGT512_INLINE __m512i q4_codes16(const uint8_t *cb, int64_t k)
{
    const __m128i lo4 = _mm_set1_epi8(0x0f);
    const __m128i b = _mm_loadl_epi64((const __m128i *)(cb + k / 2));
    const __m128i lo = _mm_and_si128(b, lo4);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), lo4);
    return _mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi));
}

/* 16 inputs of one group: the 8 code bytes' nibbles in input order, widened, minus the
 * zero, converted (exact: small integers) and times the scale (one fp32 rounding, as
 * q4_at). */
static TGT512 void q4_row_avx512(const struct q4_view *v, int64_t r, int64_t K, float *out)
{
    const uint8_t *cb = (const uint8_t *)(v->codes + r * (K / 8));
    const uint8_t *z = v->zeros + r * v->n_groups;
    const float *sc = v->scales + r * v->n_groups;
    const int64_t group = v->group;
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += group) {
        const __m512i zv = _mm512_set1_epi32((int)z[g]);
        const __m512 sv = _mm512_set1_ps(sc[g]);
        const int64_t k1 = k0 + group < K ? k0 + group : K;
        for (int64_t k = k0; k < k1; k += 16) {
            const __m512i q = q4_codes16(cb, k);
            _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zv)), sv));
        }
    }
}

/* Act-order (a g_idx table): 16 inputs at a time, each one's zero and scale looked up by its
 * group: by permutes of the row's tables up to 128 groups, else gathered. The zeros are
 * gathered as 32-bit words at byte offsets and masked to their low byte: the last zeros' 3
 * bytes past them lie in the g_idx section that follows (present with act-order), inside
 * the buffer. */
static TGT512 void q4_row_avx512_gidx(const struct q4_view *v, int64_t r, int64_t K, float *out)
{
    const uint8_t *cb = (const uint8_t *)(v->codes + r * (K / 8));
    const uint8_t *z = v->zeros + r * v->n_groups;
    const float *sc = v->scales + r * v->n_groups;
    const __m512i byte = _mm512_set1_epi32(0xff);
    if (v->n_groups <= 128) { /* the row's zeros and scales in 16-entry tables: each pair
                                 one two-register permute (gi's low 5 bits), the pair
                                 chosen by gi / 32, instead of two gathers */
        const int64_t G = v->n_groups;
        const int pairs = (int)((G + 31) / 32);
        __m512i zt[8];
        __m512 st[8];
        for (int i = 0; i < 2 * pairs; i++) {
            const int64_t left = G - 16 * (int64_t)i;
            const __mmask16 m = left >= 16 ? (__mmask16)0xffff
                                : left <= 0 ? (__mmask16)0
                                            : (__mmask16)((1u << left) - 1u);
            zt[i] = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, z + 16 * i));
            st[i] = _mm512_maskz_loadu_ps(m, sc + 16 * i);
        }
        for (int64_t k = 0; k < K; k += 16) {
            const __m512i q = q4_codes16(cb, k);
            const __m512i gi = _mm512_loadu_si512(v->gidx + k);
            __m512i zv = _mm512_permutex2var_epi32(zt[0], gi, zt[1]);
            __m512 sv = _mm512_permutex2var_ps(st[0], gi, st[1]);
            const __m512i pair = _mm512_srli_epi32(gi, 5);
            for (int p = 1; p < pairs; p++) {
                const __mmask16 m = _mm512_cmpeq_epi32_mask(pair, _mm512_set1_epi32(p));
                zv = _mm512_mask_mov_epi32(zv, m, _mm512_permutex2var_epi32(zt[2 * p], gi,
                                                                           zt[2 * p + 1]));
                sv = _mm512_mask_mov_ps(sv, m, _mm512_permutex2var_ps(st[2 * p], gi,
                                                                      st[2 * p + 1]));
            }
            _mm512_storeu_ps(out + k,
                             _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zv)), sv));
        }
        return;
    }
    for (int64_t k = 0; k < K; k += 16) {
        const __m512i q = q4_codes16(cb, k);
        const __m512i gi = _mm512_loadu_si512(v->gidx + k);
        const __m512i zv = _mm512_and_si512(_mm512_i32gather_epi32(gi, z, 1), byte);
        const __m512 sv = _mm512_i32gather_ps(gi, sc, 4);
        _mm512_storeu_ps(out + k, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q, zv)), sv));
    }
}
#endif

#if PL_HAVE_X86
/* The fused path for a few tokens (decode): the codes are expanded in registers, not through
 * the scratch. A 16-input vector is read by one 64-bit broadcast of its two code words; lane i
 * shifts its copy right by 4 * (i / 2), so it holds the nibble of input Q4_LANE_IN[i] =
 * 8 * (i % 2) + i / 2 in its low 4 bits, which index a table of the group's 16 values
 * ((code - zero) * scale, the same fp32 roundings as q4_at) through one permute. The
 * activations are permuted into the same lane order once per call, so each lane sums the
 * same products in the same order as the dense kernels' lane Q4_LANE_IN[i]; the accumulator
 * is permuted back (Q4_LANE_BACK) before the fixed lane reduction (hsum16): bit-identical to
 * tile512 on the dequantized weight. Up to 8 tokens (in tiles of at most 4, each expanding
 * the codes again): measured on the Llama-3.2-1B shape, 1.6x the scratch path's decode at 1
 * token, 1.4x at 4, 1.15x at 8 and parity at 16. */
#define Q4_FUSED_MAX_N 8
static const int32_t Q4_LANE_IN[16] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};
static const int32_t Q4_LANE_BACK[16] = {0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15};
static const int32_t Q4_LANE_SHIFT[16] = {0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28};
static const int32_t Q4_IOTA[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* x [nt, K] (row stride ldx) into xp [nt, K] with each 16-input vector in the lane order. */
static TGT512 void q4_permute_x(const float *x, size_t ldx, int nt, int64_t K, float *xp)
{
    const __m512i in = _mm512_loadu_si512(Q4_LANE_IN);
    for (int t = 0; t < nt; t++)
        for (int64_t k = 0; k < K; k += 16)
            _mm512_storeu_ps(xp + (size_t)t * (size_t)K + (size_t)k,
                             _mm512_permutexvar_ps(in, _mm512_loadu_ps(x + (size_t)t * ldx +
                                                                       (size_t)k)));
}

#define FOR_Q4J(M, A) M(A, 0) M(A, 1) M(A, 2) M(A, 3) M(A, 4) M(A, 5) M(A, 6) M(A, 7)
#define FOR_Q4IJ(M) FOR_Q4J(M, 0) FOR_Q4J(M, 1) FOR_Q4J(M, 2) FOR_Q4J(M, 3)

/* Rows [r, r + nr) (nr <= NR; rows past nr repeat row r + nr - 1 and are not written) for NT
 * tokens of permuted activations xp [NT, K]: out[i * ldo + j] (+ bias[j]). */
TGT512_INLINE void q4_fused_tile(const struct q4_view *v, const float *xp, int64_t K, int64_t r,
                                 int nr, float *out, size_t ldo, const float *bias,
                                 const int NT, const int NR)
{
    const uint8_t *cb = (const uint8_t *)v->codes;
    const size_t row_bytes = (size_t)K / 2;
    const __m512i shift = _mm512_loadu_si512(Q4_LANE_SHIFT);
    const __m512i iota = _mm512_loadu_si512(Q4_IOTA);
#define Q4_ROW(_, j)                                                                          \
    const int64_t r##j = r + ((j) < nr ? (j) : nr - 1);                                       \
    const uint8_t *c##j = cb + (size_t)r##j * row_bytes;
    FOR_Q4J(Q4_ROW, _)
#undef Q4_ROW
#define Q4_ACC(i, j) __m512 a##i##_##j = _mm512_setzero_ps();
    FOR_Q4IJ(Q4_ACC)
#undef Q4_ACC
    const int64_t group = v->group;
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += group) {
        const int64_t k1 = k0 + group < K ? k0 + group : K;
#define Q4_TABLE(_, j)                                                                        \
    const __m512 t##j = (j) < NR ? _mm512_mul_ps(                                            \
        _mm512_cvtepi32_ps(_mm512_sub_epi32(                                                 \
            iota, _mm512_set1_epi32((int)v->zeros[r##j * v->n_groups + g]))),                \
        _mm512_set1_ps(v->scales[r##j * v->n_groups + g])) : _mm512_setzero_ps();
        FOR_Q4J(Q4_TABLE, _)
#undef Q4_TABLE
        for (int64_t k = k0; k < k1; k += 16) {
#define Q4_W(_, j)                                                                            \
    __m512 w##j = _mm512_setzero_ps();                                                       \
    if ((j) < NR) {                                                                          \
        uint64_t q_;                                                                         \
        memcpy(&q_, c##j + k / 2, sizeof(q_));                                               \
        w##j = _mm512_permutexvar_ps(_mm512_srlv_epi32(_mm512_set1_epi64((long long)q_), shift), \
                                     t##j);                                                  \
    }
            FOR_Q4J(Q4_W, _)
#undef Q4_W
#define Q4_FMA(i, j)                                                                          \
    if ((i) < NT && (j) < NR)                                                                 \
        a##i##_##j = _mm512_fmadd_ps(x##i, w##j, a##i##_##j);
#define Q4_X(i, _)                                                                            \
    const __m512 x##i = (i) < NT ? _mm512_loadu_ps(xp + (size_t)(i) * (size_t)K + (size_t)k) \
                                 : _mm512_setzero_ps();
            Q4_X(0, _) Q4_X(1, _) Q4_X(2, _) Q4_X(3, _)
#undef Q4_X
            FOR_Q4IJ(Q4_FMA)
#undef Q4_FMA
        }
    }
    const __m512i back = _mm512_loadu_si512(Q4_LANE_BACK);
#define Q4_STORE(i, j)                                                                        \
    if ((i) < NT && (j) < NR && (j) < nr) {                                                   \
        const float s_ = hsum16(_mm512_permutexvar_ps(back, a##i##_##j));                     \
        out[(size_t)(i) * ldo + (j)] = bias ? s_ + bias[j] : s_;                              \
    }
    FOR_Q4IJ(Q4_STORE)
#undef Q4_STORE
}

/* Rows per fused tile for NT tokens: NR tables + NT x NR accumulators + NR weight vectors +
 * NT activations within the 32 registers. */
static int q4_fused_rows(int nt)
{
    return nt == 1 ? 8 : nt == 2 ? 6 : 4;
}

static TGT512 void q4_fused_tiles(const struct q4_view *v, const float *xp, int64_t K,
                                  int64_t r, int nr, float *out, size_t ldo, const float *bias,
                                  int nt)
{
#define QF(NT, NR) q4_fused_tile(v, xp, K, r, nr, out, ldo, bias, NT, NR)
    switch (nt) {
    case 1: QF(1, 8); break;
    case 2: QF(2, 6); break;
    case 3: QF(3, 4); break;
    case 4: QF(4, 4); break;
    default: assert(!"q4_fused_tiles: no kernel for this token count"); break;
    }
#undef QF
}

/* AVX2: 8 inputs are one code word, and lane i shifts it right by 4 * i, so the lanes are in
 * input order (the dense AVX2 kernels' lane = k mod 8) and nothing is permuted. Each weight
 * is (code - zero) converted, times the scale: q4_at's roundings. */
static const int32_t Q4_SHIFT8[8] = {0, 4, 8, 12, 16, 20, 24, 28};

TGT_INLINE __m256 q4_vec8(uint32_t word, __m256i shift, __m256i zero, __m256 scale)
{
    const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)word), shift),
                                       _mm256_set1_epi32(15));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zero)), scale);
}

/* One row into out [K] (no act-order; groups and K multiples of 8). */
static TGT void q4_row_avx2(const struct q4_view *v, int64_t r, int64_t K, float *out)
{
    const uint32_t *cw = v->codes + r * (K / 8);
    const uint8_t *z = v->zeros + r * v->n_groups;
    const float *sc = v->scales + r * v->n_groups;
    const __m256i shift = _mm256_loadu_si256((const __m256i *)Q4_SHIFT8);
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += v->group) {
        const __m256i zv = _mm256_set1_epi32((int)z[g]);
        const __m256 sv = _mm256_set1_ps(sc[g]);
        const int64_t k1 = k0 + v->group < K ? k0 + v->group : K;
        for (int64_t k = k0; k < k1; k += 8)
            _mm256_storeu_ps(out + k, q4_vec8(cw[k / 8], shift, zv, sv));
    }
}

/* Act-order with AVX2: 8 inputs at a time, zeros and scales gathered as in
 * q4_row_avx512_gidx. */
static TGT void q4_row_avx2_gidx(const struct q4_view *v, int64_t r, int64_t K, float *out)
{
    const uint32_t *cw = v->codes + r * (K / 8);
    const int *z = (const int *)(const void *)(v->zeros + r * v->n_groups);
    const float *sc = v->scales + r * v->n_groups;
    const __m256i shift = _mm256_loadu_si256((const __m256i *)Q4_SHIFT8);
    const __m256i m15 = _mm256_set1_epi32(15), byte = _mm256_set1_epi32(0xff);
    for (int64_t k = 0; k < K; k += 8) {
        const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)cw[k / 8]), shift),
                                           m15);
        const __m256i gi = _mm256_loadu_si256((const __m256i *)(v->gidx + k));
        const __m256i zv = _mm256_and_si256(_mm256_i32gather_epi32(z, gi, 1), byte);
        const __m256 sv = _mm256_i32gather_ps(sc, gi, 4);
        _mm256_storeu_ps(out + k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(q, zv)), sv));
    }
}

/* The AVX2 fused tile: rows [r, r + nr) (nr <= NR, rows past nr repeat the last and are not
 * written) for NT tokens of x (row stride ldx), the dense AVX2 tile's order (8 lanes over k
 * ascending, hsum8, + bias). */
TGT_INLINE void q4_fused_tile2(const struct q4_view *v, const float *x, size_t ldx, int64_t K,
                               int64_t r, int nr, float *out, size_t ldo, const float *bias,
                               const int NT, const int NR)
{
    const __m256i shift = _mm256_loadu_si256((const __m256i *)Q4_SHIFT8);
#define Q4_ROW2(_, j)                                                                         \
    const int64_t r##j = r + ((j) < nr ? (j) : nr - 1);                                       \
    const uint32_t *c##j = v->codes + r##j * (K / 8);
    FOR_Q4J(Q4_ROW2, _)
#undef Q4_ROW2
#define Q4_ACC2(i, j) __m256 a##i##_##j = _mm256_setzero_ps();
    FOR_Q4IJ(Q4_ACC2)
#undef Q4_ACC2
    for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += v->group) {
        const int64_t k1 = k0 + v->group < K ? k0 + v->group : K;
#define Q4_ZS2(_, j)                                                                          \
    const __m256i z##j = _mm256_set1_epi32((j) < NR ? (int)v->zeros[r##j * v->n_groups + g] : 0); \
    const __m256 s##j = _mm256_set1_ps((j) < NR ? v->scales[r##j * v->n_groups + g] : 0.0f);
        FOR_Q4J(Q4_ZS2, _)
#undef Q4_ZS2
        for (int64_t k = k0; k < k1; k += 8) {
#define Q4_W2(_, j)                                                                           \
    const __m256 w##j = (j) < NR ? q4_vec8(c##j[k / 8], shift, z##j, s##j) : _mm256_setzero_ps();
            FOR_Q4J(Q4_W2, _)
#undef Q4_W2
#define Q4_X2(i, _)                                                                           \
    const __m256 x##i = (i) < NT ? _mm256_loadu_ps(x + (size_t)(i) * ldx + (size_t)k)        \
                                 : _mm256_setzero_ps();
            Q4_X2(0, _) Q4_X2(1, _) Q4_X2(2, _) Q4_X2(3, _)
#undef Q4_X2
#define Q4_FMA2(i, j)                                                                         \
    if ((i) < NT && (j) < NR)                                                                 \
        a##i##_##j = _mm256_fmadd_ps(x##i, w##j, a##i##_##j);
            FOR_Q4IJ(Q4_FMA2)
#undef Q4_FMA2
        }
    }
#define Q4_STORE2(i, j)                                                                       \
    if ((i) < NT && (j) < NR && (j) < nr) {                                                   \
        const float s_ = hsum8(a##i##_##j);                                                   \
        out[(size_t)(i) * ldo + (j)] = bias ? s_ + bias[j] : s_;                              \
    }
    FOR_Q4IJ(Q4_STORE2)
#undef Q4_STORE2
}

static int q4_fused_rows2(int nt)
{
    return nt == 1 ? 4 : nt == 2 ? 3 : 2;
}

static TGT void q4_fused_tiles2(const struct q4_view *v, const float *x, size_t ldx, int64_t K,
                                int64_t r, int nr, float *out, size_t ldo, const float *bias,
                                int nt)
{
#define QF2(NT, NR) q4_fused_tile2(v, x, ldx, K, r, nr, out, ldo, bias, NT, NR)
    switch (nt) {
    case 1: QF2(1, 4); break;
    case 2: QF2(2, 3); break;
    case 3: QF2(3, 2); break;
    case 4: QF2(4, 2); break;
    default: assert(!"q4_fused_tiles2: no kernel for this token count"); break;
    }
#undef QF2
}

/* Rows [r0, r1) for n <= Q4_FUSED_MAX_N tokens by the fused tiles, 4 tokens at a time; xp:
 * the thread's scratch (at least 4 x K floats). */
static void q4_fused(const struct q4_view *v, enum pl_cpu_isa isa, const float *x, size_t ldx,
                     int64_t K, int n, float *xp, float *out, size_t ldo,
                     const struct pl_weight *bias, int64_t r0, int64_t r1)
{
    if (n > 4) {
        for (int t = 0; t < n; t += 4)
            q4_fused(v, isa, x + (size_t)t * ldx, ldx, K, n - t < 4 ? n - t : 4, xp,
                     out + (size_t)t * ldo, ldo, bias, r0, r1);
        return;
    }
    const bool avx512 = isa == PL_CPU_ISA_AVX512;
    if (avx512)
        q4_permute_x(x, ldx, n, K, xp);
    const int nr_max = avx512 ? q4_fused_rows(n) : q4_fused_rows2(n);
    float bias_buf[8];
    for (int64_t r = r0; r < r1; r += nr_max) {
        const int nr = (int)(r1 - r < nr_max ? r1 - r : nr_max);
        const float *b = NULL;
        if (bias) {
            for (int j = 0; j < nr; j++)
                bias_buf[j] = pl_dtype_get_f32(bias->data, bias->dtype, (size_t)(r + j));
            b = bias_buf;
        }
        if (avx512)
            q4_fused_tiles(v, xp, K, r, nr, out + r, ldo, b, n);
        else
            q4_fused_tiles2(v, x, ldx, K, r, nr, out + r, ldo, b, n);
    }
}

/* The vector paths (the fused tiles and the rows into the scratch) serve this weight in this
 * ISA: AVX-512 or AVX2, no act-order, whole vectors (16 or 8 inputs) in every group. */
static bool q4_vector_ok(const struct q4_view *v, int64_t K, enum pl_cpu_isa isa)
{
    const int lanes = isa == PL_CPU_ISA_AVX512 ? 16 : isa == PL_CPU_ISA_AVX2 ? 8 : 0;
    return lanes && !v->gidx && v->group > 0 && v->group % lanes == 0 && K % lanes == 0;
}
#endif

/* Rows [r, r + nr) of a packed int4 weight into out [nr, K] floats. */
static void q4_rows(const struct q4_view *v, int64_t r, int nr, int64_t K, enum pl_cpu_isa isa,
                    float *out)
{
#if PL_HAVE_X86
    if (q4_vector_ok(v, K, isa)) {
        for (int j = 0; j < nr; j++) {
            if (isa == PL_CPU_ISA_AVX512)
                q4_row_avx512(v, r + j, K, out + (size_t)j * (size_t)K);
            else
                q4_row_avx2(v, r + j, K, out + (size_t)j * (size_t)K);
        }
        return;
    }
    if (v->gidx && ((isa == PL_CPU_ISA_AVX512 && K % 16 == 0) || isa == PL_CPU_ISA_AVX2)) {
        for (int j = 0; j < nr; j++) {
            if (isa == PL_CPU_ISA_AVX512)
                q4_row_avx512_gidx(v, r + j, K, out + (size_t)j * (size_t)K);
            else
                q4_row_avx2_gidx(v, r + j, K, out + (size_t)j * (size_t)K);
        }
        return;
    }
#endif
    (void)isa;
    for (int j = 0; j < nr; j++) {
        float *o = out + (size_t)j * (size_t)K;
        if (v->gidx || v->group <= 0) {
            for (int64_t k = 0; k < K; k++)
                o[k] = q4_at(v, r + j, K, k);
            continue;
        }
        /* a group at a time: q4_at's values without a division per input */
        const uint32_t *cw = v->codes + (r + j) * (K / 8);
        for (int64_t g = 0, k0 = 0; k0 < K; g++, k0 += v->group) {
            const int zero = v->zeros[(r + j) * v->n_groups + g];
            const float scale = v->scales[(r + j) * v->n_groups + g];
            const int64_t k1 = k0 + v->group < K ? k0 + v->group : K;
            for (int64_t k = k0; k < k1; k++)
                o[k] = (float)((int)((cw[k / 8] >> (4 * (k % 8))) & 15u) - zero) * scale;
        }
    }
}

/* Without a scratch (its allocation failed): each output a plain fp32 sum over k in order
 * (the same products, another summation order than the tiles). */
static void q4_direct(const struct q4_view *v, const float *x, size_t ldx, int64_t K,
                      float *out, size_t ldo, const struct pl_weight *bias, int n, int64_t r0,
                      int64_t r1)
{
    for (int t = 0; t < n; t++)
        for (int64_t r = r0; r < r1; r++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++)
                acc += x[(size_t)t * ldx + (size_t)k] * q4_at(v, r, K, k);
            if (bias)
                acc += pl_dtype_get_f32(bias->data, bias->dtype, (size_t)r);
            out[(size_t)t * ldo + (size_t)r] = acc;
        }
}

static void mm_worker(void *ctx, int ith, int nth)
{
    const struct mm_job *job = ctx;
    const struct pl_cpu_mm *mm = job->mm;
    const struct pl_weight *w = job->w;
    const int64_t R = w->rows;
    const int K = (int)w->cols;
    const size_t ldx = (size_t)K;
    int64_t r0 = R * ith / nth;
    int64_t r1 = R * (ith + 1) / nth;
    if (r0 >= r1)
        return;

    /* packed int4: a tile of rows dequantized into this thread's scratch, then the fp32
     * kernels on it */
    const bool q4 = w->dtype == PL_DTYPE_Q4;
    struct q4_view qv = {0};
    float *qrows = NULL;
    if (q4) {
        qv = q4_view_of(w);
        if (!mm->q4_rows || mm->q4_cols < K) {
            q4_direct(&qv, job->x, ldx, K, job->out, job->ld_out, job->bias_w, job->n, r0, r1);
            return;
        }
        qrows = mm->q4_rows[ith];
#if PL_HAVE_X86
        if (job->n <= Q4_FUSED_MAX_N && q4_vector_ok(&qv, K, mm->isa)) {
            q4_fused(&qv, mm->isa, job->x, ldx, K, job->n, qrows, job->out, job->ld_out,
                     job->bias_w, r0, r1);
            return;
        }
#endif
    }
    const enum pl_dtype wt = q4 ? PL_DTYPE_F32 : w->dtype; /* what the kernels read */

    tiles_fn tiles = NULL;
    enum pl_cpu_isa isa = mm->isa;
    /* The BF16 mode: bf16 weights, and a token block's activations rounded into this
     * thread's scratch (kpad bf16 per token: K rounded up to 32, zero-padded). */
    const int kpad = (K + 31) & ~31;
    bool dot = false;
    uint16_t *xs = NULL;
    int tb_dot = 0;
#if PL_HAVE_X86
    if (isa == PL_CPU_ISA_AVX512 && mm->bf16_dot && w->dtype == PL_DTYPE_BF16 && mm->scratch) {
        tb_dot = (int)(PL_CPU_MM_SCRATCH_BYTES / ((size_t)kpad * sizeof(uint16_t)));
        dot = tb_dot >= 1; /* rows longer than the scratch (K > 128K) keep the fp32 path */
        xs = mm->scratch[ith];
    }
    if (isa == PL_CPU_ISA_AVX512) {
        switch (wt) {
        case PL_DTYPE_F32: tiles = tiles512_f32; break;
        case PL_DTYPE_BF16: tiles = tiles512_bf16; break;
        case PL_DTYPE_F16: tiles = tiles512_f16; break;
        default: isa = PL_CPU_ISA_SCALAR; break;
        }
    } else if (isa == PL_CPU_ISA_AVX2) {
        switch (wt) {
        case PL_DTYPE_F32: tiles = tiles2_f32; break;
        case PL_DTYPE_BF16: tiles = tiles2_bf16; break;
        case PL_DTYPE_F16: tiles = tiles2_f16; break;
        default: isa = PL_CPU_ISA_SCALAR; break;
        }
    }
#else
    isa = PL_CPU_ISA_SCALAR;
#endif

    /* Tokens per block: the x block as the kernels read it (fp32, or bf16 in the BF16 mode)
     * within X_BLOCK_BYTES, a multiple of 4, at least 4. */
    size_t token_bytes = dot ? (size_t)kpad * sizeof(uint16_t) : (size_t)K * sizeof(float);
    int tb = (int)(X_BLOCK_BYTES / token_bytes);
    tb = tb < 4 ? 4 : tb & ~3;
    if (q4 && tb < Q4_TOKEN_BLOCK) /* each block dequantizes every tile again */
        tb = Q4_TOKEN_BLOCK;
    if (dot && tb_dot < tb)
        tb = tb_dot < 4 ? tb_dot : tb_dot & ~3;
    const int n = job->n;
    float bias_buf[NR1_512];
    for (int t0 = 0; t0 < n; t0 += tb) {
        int t_end = t0 + tb < n ? t0 + tb : n;
        int nr_max = rows_per_tile(isa, t_end - t0);
#if PL_HAVE_X86
        if (dot)
            round_rows_bf16(job->x + (size_t)t0 * ldx, ldx, t_end - t0, K, xs, kpad);
#endif
        for (int64_t r = r0; r < r1; r += nr_max) {
            int nr = (int)(r1 - r < nr_max ? r1 - r : nr_max);
            /* the weight rows the kernels read: the matrix's, or this tile's dequantized */
            const void *wd = w->data;
            size_t wr = (size_t)r, wlast = (size_t)(r1 - 1);
            if (q4) {
                q4_rows(&qv, r, nr, K, mm->isa, qrows);
                wd = qrows;
                wr = 0;
                wlast = (size_t)nr - 1; /* = r1 - 1 when the tile is partial */
            }
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
#if PL_HAVE_X86
                if (dot) {
                    tiles_dot(xs + (size_t)(t - t0) * (size_t)kpad, (size_t)kpad, w->data,
                              (size_t)r, (size_t)(r1 - 1), (size_t)K, K, ot, job->ld_out, bias,
                              nt, nr, nr_max);
                    continue;
                }
#endif
                if (tiles)
                    tiles(xt, ldx, wd, wr, wlast, (size_t)K, K, ot, job->ld_out, bias, nt, nr,
                          nr_max);
                else
                    tiles_scalar(wt, xt, ldx, wd, wr, (size_t)K, K, ot, job->ld_out, bias, nt,
                                 nr);
            }
        }
    }
}

void pl_cpu_matmul(struct pl_threadpool *pool, const struct pl_cpu_mm *mm, float *out,
                   int ld_out, const float *x, const struct pl_weight *w,
                   const struct pl_weight *bias, int n)
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
        .mm = mm,
    };
    pl_threadpool_run(pool, mm_worker, &job);
}
