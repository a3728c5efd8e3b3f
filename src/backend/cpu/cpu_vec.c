/*
 * cpu_vec.c -- the CPU backend's element-wise row kernels, per instruction set.
 *
 * Owns: the vector loops behind rmsnorm (with its residual add), silu_mul,
 * gelu_tanh_mul, rope's rotation and attention's p*v accumulation and
 * rescaling (cpu_backend.c calls them one row at a time). Each kernel has a
 * scalar form (the specification: the loops cpu_backend.c had before) and
 * AVX2 / AVX-512 forms compiled with target attributes and chosen at run
 * time by the ISA the backend uses (cpu_backend.h), as cpu_matmul.c's are.
 *
 * What the SIMD forms change, and what they keep:
 *   - add, scale and the rmsnorm weight multiply (w * (x * inv)) and rope's
 *     rotation compute the same rounded operations as the scalar loops;
 *   - axpy (y += a x) uses one fused multiply-add per element;
 *   - rmsnorm's sum of squares is still in double, but in 16 lanes (lane =
 *     i mod 16) reduced in a fixed order, not sequentially;
 *   - silu and gelu_tanh use a polynomial exp (Cephes' expf: about 1 ulp on
 *     its reduced range) instead of libm's expf, and gelu_tanh is computed
 *     as x * sigmoid(2 y), the same function as 0.5 x (1 + tanh y).
 * Invariant (batch invariance): every kernel works on one row and every
 * element goes through the vector path (tails by masked loads where the
 * result could differ from a full vector's), so an element's result depends
 * only on its row and the ISA, never on the batch or the thread split.
 */
#include "backend/cpu/cpu_backend.h"

#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define PL_HAVE_X86 1
#else
#define PL_HAVE_X86 0
#endif

/* ---- scalar: the specification -------------------------------------------------------- */

static void axpy_scalar(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale_scalar(float *y, float a, int n)
{
    for (int i = 0; i < n; i++)
        y[i] *= a;
}

static void add_scalar(float *y, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += x[i];
}

static double sum_sq_scalar(const float *x, int n)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * (double)x[i];
    return ss;
}

static void mul_weight_scalar(float *out, const float *x, const struct pl_weight *w, float inv,
                              int i0, int n)
{
    for (int i = i0; i < n; i++)
        out[i] = pl_dtype_get_f32(w->data, w->dtype, (size_t)i) * (x[i] * inv);
}

static void silu_mul_scalar(float *out, const float *gate, const float *up, int n)
{
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* gelu_tanh(x) * up, PyTorch's gelu(approximate="tanh"):
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
static void gelu_mul_scalar(float *out, const float *gate, const float *up, int n)
{
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        float inner = k0 * (g + k1 * g * g * g);
        out[i] = 0.5f * g * (1.0f + tanhf(inner)) * up[i];
    }
}

static void rotate_scalar(float *x1, float *x2, const float *c, const float *s, int n)
{
    for (int i = 0; i < n; i++) {
        float a = x1[i], b = x2[i];
        x1[i] = a * c[i] - b * s[i];
        x2[i] = b * c[i] + a * s[i];
    }
}

#if PL_HAVE_X86
/* Cephes expf's constants: exp(x) = 2^n exp(r), r = x - n ln2 in [-ln2/2, ln2/2]. */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO (-2.12194440e-4f)
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f
#define GELU_K0 0.7978845608028654f
#define GELU_K1 0.044715f

/* ---- AVX2 ------------------------------------------------------------------------------ */

#define TGT2 __attribute__((target("avx2,fma,f16c")))
#define TGT2_INLINE static inline __attribute__((always_inline, target("avx2,fma,f16c")))

/* Lanes [0, n) of 8 set, for the masked tail loads and stores. */
TGT2_INLINE __m256i mask8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* exp(x) for x clamped to [-87.3, 88.3] (2^n stays a normal number). */
TGT2_INLINE __m256 exp8(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* x / (1 + exp(-z)) */
TGT2_INLINE __m256 sigmoid_mul8(__m256 x, __m256 z)
{
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(x, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), z))));
}

TGT2_INLINE __m256 silu8(__m256 g) { return sigmoid_mul8(g, g); }

TGT2_INLINE __m256 gelu8(__m256 g)
{
    __m256 g3 = _mm256_mul_ps(_mm256_mul_ps(g, g), g);
    __m256 inner = _mm256_mul_ps(_mm256_set1_ps(GELU_K0),
                                 _mm256_fmadd_ps(_mm256_set1_ps(GELU_K1), g3, g));
    return sigmoid_mul8(g, _mm256_add_ps(inner, inner));
}

static TGT2 void axpy_avx2(float *y, float a, const float *x, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    if (i < n) {
        __m256i m = mask8(n - i);
        __m256 r = _mm256_fmadd_ps(va, _mm256_maskload_ps(x + i, m), _mm256_maskload_ps(y + i, m));
        _mm256_maskstore_ps(y + i, m, r);
    }
}

static TGT2 void scale_avx2(float *y, float a, int n)
{
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), va));
    for (; i < n; i++)
        y[i] *= a;
}

static TGT2 void add_avx2(float *y, const float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++)
        y[i] += x[i];
}

/* Lanes: i mod 8 (two 4-double accumulators), reduced ((0+4)+(2+6)) + ((1+5)+(3+7)). */
static TGT2 double sum_sq_avx2(const float *x, int n)
{
    __m256d a0 = _mm256_setzero_pd(), a1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    if (i < n) {
        __m256 v = _mm256_maskload_ps(x + i, mask8(n - i));
        __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        a0 = _mm256_fmadd_pd(lo, lo, a0);
        a1 = _mm256_fmadd_pd(hi, hi, a1);
    }
    __m256d s = _mm256_add_pd(a0, a1);
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}

static TGT2 void mul_weight_avx2(float *out, const float *x, const struct pl_weight *w, float inv,
                                 int n)
{
    __m256 vi = _mm256_set1_ps(inv);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv;
        const uint16_t *h = (const uint16_t *)w->data + i;
        if (w->dtype == PL_DTYPE_F32)
            wv = _mm256_loadu_ps((const float *)w->data + i);
        else if (w->dtype == PL_DTYPE_BF16)
            wv = _mm256_castsi256_ps(_mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)h)), 16));
        else
            wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(wv, _mm256_mul_ps(_mm256_loadu_ps(x + i), vi)));
    }
    mul_weight_scalar(out, x, w, inv, i, n); /* the same two roundings as the vector lanes */
}

static TGT2 void silu_mul_avx2(float *out, const float *gate, const float *up, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu8(_mm256_loadu_ps(gate + i)),
                                                _mm256_loadu_ps(up + i)));
    if (i < n) {
        __m256i m = mask8(n - i);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(silu8(_mm256_maskload_ps(gate + i, m)),
                                                      _mm256_maskload_ps(up + i, m)));
    }
}

static TGT2 void gelu_mul_avx2(float *out, const float *gate, const float *up, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(gelu8(_mm256_loadu_ps(gate + i)),
                                                _mm256_loadu_ps(up + i)));
    if (i < n) {
        __m256i m = mask8(n - i);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(gelu8(_mm256_maskload_ps(gate + i, m)),
                                                      _mm256_maskload_ps(up + i, m)));
    }
}

static TGT2 void rotate_avx2(float *x1, float *x2, const float *c, const float *s, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(x1 + i), b = _mm256_loadu_ps(x2 + i);
        __m256 vc = _mm256_loadu_ps(c + i), vs = _mm256_loadu_ps(s + i);
        _mm256_storeu_ps(x1 + i, _mm256_sub_ps(_mm256_mul_ps(a, vc), _mm256_mul_ps(b, vs)));
        _mm256_storeu_ps(x2 + i, _mm256_add_ps(_mm256_mul_ps(b, vc), _mm256_mul_ps(a, vs)));
    }
    rotate_scalar(x1 + i, x2 + i, c + i, s + i, n - i);
}

/* ---- AVX-512 --------------------------------------------------------------------------- */

#define TGT512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define TGT512_INLINE                                                                         \
    static inline __attribute__((always_inline,                                              \
                                 target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))

TGT512_INLINE __mmask16 mask16(int n) { return (__mmask16)((1u << n) - 1u); }

/* exp(x); scalef takes 2^n to 0 or infinity past the float range, as expf does. */
TGT512_INLINE __m512 exp16(__m512 x)
{
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_set1_ps(EXP_P0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

TGT512_INLINE __m512 sigmoid_mul16(__m512 x, __m512 z)
{
    __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(x, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), z))));
}

TGT512_INLINE __m512 silu16(__m512 g) { return sigmoid_mul16(g, g); }

TGT512_INLINE __m512 gelu16(__m512 g)
{
    __m512 g3 = _mm512_mul_ps(_mm512_mul_ps(g, g), g);
    __m512 inner = _mm512_mul_ps(_mm512_set1_ps(GELU_K0),
                                 _mm512_fmadd_ps(_mm512_set1_ps(GELU_K1), g3, g));
    return sigmoid_mul16(g, _mm512_add_ps(inner, inner));
}

static TGT512 void axpy_avx512(float *y, float a, const float *x, int n)
{
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = mask16(n - i);
        __m512 r = _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

static TGT512 void scale_avx512(float *y, float a, int n)
{
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), va));
    if (i < n) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, y + i), va));
    }
}

static TGT512 void add_avx512(float *y, const float *x, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_add_ps(_mm512_loadu_ps(y + i), _mm512_loadu_ps(x + i)));
    if (i < n) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m,
                              _mm512_add_ps(_mm512_maskz_loadu_ps(m, y + i), _mm512_maskz_loadu_ps(m, x + i)));
    }
}

/* Lanes: i mod 16 (two 8-double accumulators), reduced lane i + lane i+8, then halves. */
static TGT512 double sum_sq_avx512(const float *x, int n)
{
    __m512d a0 = _mm512_setzero_pd(), a1 = _mm512_setzero_pd();
    int i = 0;
    for (; i < n; i += 16) {
        __m512 v = i + 16 <= n ? _mm512_loadu_ps(x + i) : _mm512_maskz_loadu_ps(mask16(n - i), x + i);
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1));
        a0 = _mm512_fmadd_pd(lo, lo, a0);
        a1 = _mm512_fmadd_pd(hi, hi, a1);
    }
    __m512d s = _mm512_add_pd(a0, a1);
    __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(s), _mm512_extractf64x4_pd(s, 1));
    __m128d s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s2, _mm_unpackhi_pd(s2, s2)));
}

TGT512_INLINE __m512 load_weight16(const struct pl_weight *w, int i, __mmask16 m)
{
    const uint16_t *h = (const uint16_t *)w->data + i;
    if (w->dtype == PL_DTYPE_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)w->data + i);
    __m256i v = _mm256_maskz_loadu_epi16(m, h);
    if (w->dtype == PL_DTYPE_BF16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
    return _mm512_cvtph_ps(v);
}

static TGT512 void mul_weight_avx512(float *out, const float *x, const struct pl_weight *w,
                                     float inv, int n)
{
    __m512 vi = _mm512_set1_ps(inv);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = i + 16 <= n ? (__mmask16)0xffff : mask16(n - i);
        __m512 r = _mm512_mul_ps(load_weight16(w, i, m),
                                 _mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vi));
        _mm512_mask_storeu_ps(out + i, m, r);
    }
}

static TGT512 void silu_mul_avx512(float *out, const float *gate, const float *up, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(silu16(_mm512_loadu_ps(gate + i)),
                                                _mm512_loadu_ps(up + i)));
    if (i < n) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_mul_ps(silu16(_mm512_maskz_loadu_ps(m, gate + i)),
                                            _mm512_maskz_loadu_ps(m, up + i)));
    }
}

static TGT512 void gelu_mul_avx512(float *out, const float *gate, const float *up, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(gelu16(_mm512_loadu_ps(gate + i)),
                                                _mm512_loadu_ps(up + i)));
    if (i < n) {
        __mmask16 m = mask16(n - i);
        _mm512_mask_storeu_ps(out + i, m,
                              _mm512_mul_ps(gelu16(_mm512_maskz_loadu_ps(m, gate + i)),
                                            _mm512_maskz_loadu_ps(m, up + i)));
    }
}

static TGT512 void rotate_avx512(float *x1, float *x2, const float *c, const float *s, int n)
{
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = i + 16 <= n ? (__mmask16)0xffff : mask16(n - i);
        __m512 a = _mm512_maskz_loadu_ps(m, x1 + i), b = _mm512_maskz_loadu_ps(m, x2 + i);
        __m512 vc = _mm512_maskz_loadu_ps(m, c + i), vs = _mm512_maskz_loadu_ps(m, s + i);
        _mm512_mask_storeu_ps(x1 + i, m, _mm512_sub_ps(_mm512_mul_ps(a, vc), _mm512_mul_ps(b, vs)));
        _mm512_mask_storeu_ps(x2 + i, m, _mm512_add_ps(_mm512_mul_ps(b, vc), _mm512_mul_ps(a, vs)));
    }
}
#endif /* PL_HAVE_X86 */

/* ---- dispatch -------------------------------------------------------------------------- */

#if PL_HAVE_X86
#define DISPATCH(isa, name, ...)                                                               \
    do {                                                                                       \
        if ((isa) == PL_CPU_ISA_AVX512)                                                        \
            name##_avx512(__VA_ARGS__);                                                        \
        else if ((isa) == PL_CPU_ISA_AVX2)                                                     \
            name##_avx2(__VA_ARGS__);                                                          \
        else                                                                                   \
            name##_scalar(__VA_ARGS__);                                                        \
    } while (0)
#else
#define DISPATCH(isa, name, ...) ((void)(isa), name##_scalar(__VA_ARGS__))
#endif

void pl_cpu_vec_axpy(enum pl_cpu_isa isa, float *y, float a, const float *x, int n)
{
    DISPATCH(isa, axpy, y, a, x, n);
}

void pl_cpu_vec_scale(enum pl_cpu_isa isa, float *y, float a, int n)
{
    DISPATCH(isa, scale, y, a, n);
}

void pl_cpu_vec_add(enum pl_cpu_isa isa, float *y, const float *x, int n)
{
    DISPATCH(isa, add, y, x, n);
}

void pl_cpu_vec_rmsnorm(enum pl_cpu_isa isa, float *out, const float *x,
                        const struct pl_weight *w, int n, float eps)
{
    double ss;
#if PL_HAVE_X86
    if (isa == PL_CPU_ISA_AVX512)
        ss = sum_sq_avx512(x, n);
    else if (isa == PL_CPU_ISA_AVX2)
        ss = sum_sq_avx2(x, n);
    else
#endif
        ss = sum_sq_scalar(x, n);
    float inv = (float)(1.0 / sqrt(ss / (double)n + (double)eps));
#if PL_HAVE_X86
    if (isa == PL_CPU_ISA_AVX512) {
        mul_weight_avx512(out, x, w, inv, n);
        return;
    }
    if (isa == PL_CPU_ISA_AVX2) {
        mul_weight_avx2(out, x, w, inv, n);
        return;
    }
#endif
    mul_weight_scalar(out, x, w, inv, 0, n);
}

void pl_cpu_vec_silu_mul(enum pl_cpu_isa isa, float *out, const float *gate, const float *up,
                         int n)
{
    DISPATCH(isa, silu_mul, out, gate, up, n);
}

void pl_cpu_vec_gelu_tanh_mul(enum pl_cpu_isa isa, float *out, const float *gate, const float *up,
                              int n)
{
    DISPATCH(isa, gelu_mul, out, gate, up, n);
}

void pl_cpu_vec_rotate(enum pl_cpu_isa isa, float *x1, float *x2, const float *c, const float *s,
                       int n)
{
    DISPATCH(isa, rotate, x1, x2, c, s, n);
}
