/*
 * fp8_ref.h -- the host emulation of the FP8 W8A8 matmul of backend.h's pl_f8w_layout,
 * shared by the CPU tests (test_quant_fp8.c checks it against the dequantizing reference)
 * and the CUDA parity test (test_cuda_quant.c holds the GPU to it).
 *
 * It follows the specification in backend.h operation for operation: the token's scale
 * (the static input_scale, or max(absmax / 448, PL_F8_MIN_SCALE) in fp32), its fp32
 * reciprocal, e4m3(x * reciprocal) through util/dtype.h's conversion, then the product of
 * the exact e4m3 values in double with both scales applied after the sum. What a GPU may
 * differ by is only its fp32 summation order and the final bf16 rounding.
 */
#ifndef PL_TEST_FP8_REF_H
#define PL_TEST_FP8_REF_H

#include "backend/backend.h"
#include "util/dtype.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

/* The scale of one row x[K] (the activation's values, e.g. bf16 ones as floats). */
static inline float pl_fp8_ref_token_scale(const float *x, int64_t K, float static_scale)
{
    if (static_scale > 0.0f)
        return static_scale;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; k++)
        amax = fmaxf(amax, fabsf(x[k]));
    return fmaxf(amax / 448.0f, PL_F8_MIN_SCALE);
}

/* q[k] = e4m3(x[k] * (1 / s)). */
static inline void pl_fp8_ref_quant_row(const float *x, int64_t K, float s, uint8_t *q)
{
    const float inv = 1.0f / s;
    for (int64_t k = 0; k < K; k++) {
        const float y = x[k] * inv; /* one fp32 rounding, as __fmul_rn */
        q[k] = pl_f32_to_f8e4m3(y);
    }
}

/* out[t * M + r] (double, before any rounding) and mag[t * M + r] = sum_k |term| (the scale
 * of the summation error) for the PL_DTYPE_F8W buffer buf (host copy) of a [M, K] weight and
 * x [n, K] (floats); bias (floats [M]) may be NULL; mag may be NULL. */
static inline void pl_fp8_ref_matmul(const void *buf, int64_t M, int64_t K, const float *x, int n,
                                     const float *bias, double *out, double *mag)
{
    const struct pl_f8w_layout lay = pl_f8w_layout_of(M, K);
    const uint8_t *codes = buf;
    const float *sw = (const float *)((const char *)buf + lay.scale_off);
    const float static_scale = *(const float *)((const char *)buf + lay.head_off);
    uint8_t *xq = malloc((size_t)K);
    double *xv = malloc(sizeof(double) * (size_t)K);
    double wv[256];
    for (int i = 0; i < 256; i++)
        wv[i] = i == 0x7f || i == 0xff ? NAN : (double)pl_f8e4m3_to_f32((uint8_t)i);
    for (int t = 0; t < n; t++) {
        const float *xr = x + (int64_t)t * K;
        const float s = pl_fp8_ref_token_scale(xr, K, static_scale);
        pl_fp8_ref_quant_row(xr, K, s, xq);
        for (int64_t k = 0; k < K; k++)
            xv[k] = wv[xq[k]];
        for (int64_t r = 0; r < M; r++) {
            const uint8_t *w = codes + r * K;
            double acc = 0.0, m = 0.0;
            for (int64_t k = 0; k < K; k++) {
                const double p = xv[k] * wv[w[k]];
                acc += p;
                m += fabs(p);
            }
            const double sc = (double)s * (double)sw[r];
            out[(int64_t)t * M + r] = acc * sc + (bias ? (double)bias[r] : 0.0);
            if (mag)
                mag[(int64_t)t * M + r] = m * sc + (bias ? fabs((double)bias[r]) : 0.0);
        }
    }
    free(xq);
    free(xv);
}

#endif
