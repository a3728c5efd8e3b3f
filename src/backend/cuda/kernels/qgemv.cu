/*
 * qgemv.cu -- packed int4 weights (backend.h's PL_DTYPE_Q4 buffer, made once at load by
 * model/quant.h's pl_quant_repack_int4): a skinny GEMV for 1..8 rows of x that
 * dequantizes in registers, and a dequantizing kernel that expands a weight into bf16
 * for the cuBLASLt GEMM of larger batches (vLLM's AWQ path does the same above its
 * GEMV threshold).
 *
 * GEMV: one warp per output row; lane l walks the row's 32-bit code words l, l + 32, ...
 * (8 inputs each, 128 contiguous bytes per warp step), reads the group's scale and zero
 * (through the g_idx table under act-order, so the inputs are never permuted), forms
 * w = (code - zero) * scale in fp32 exactly as the reference does, and accumulates
 * x . w for every row of x in fp32; a shuffle reduction ends each row. Weights are read
 * once per launch whatever n is: decode is bandwidth bound on the weight stream.
 */
#include "backend/cuda/kernels/bf16_vec.cuh"
#include "backend/cuda/kernels/q4.cuh"
#include "backend/cuda/kernels/qgemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

template <int N>
__global__ void __launch_bounds__(128) q4_gemv_kernel(const void *wbuf, int64_t rows, int64_t K,
                                                       const __nv_bfloat16 *x,
                                                       const void *bias, int bias_dtype,
                                                       __nv_bfloat16 *out, int64_t ld_out)
{
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (r >= rows)
        return;
    const q4_view v = q4_view_of(wbuf, rows, K);
    const uint32_t *cw = v.codes + r * (K / 8);
    const float *sc = v.scales + r * v.n_groups;
    const uint8_t *zr = v.zeros + r * v.n_groups;
    float acc[N];
#pragma unroll
    for (int j = 0; j < N; j++)
        acc[j] = 0.0f;
    const int64_t n_words = K / 8;
    for (int64_t wi = lane; wi < n_words; wi += 32) {
        const uint32_t word = __ldg(cw + wi);
        const int64_t k0 = wi * 8;
        float w[8];
        if (v.gidx) {
#pragma unroll
            for (int e = 0; e < 8; e++) {
                const int g = __ldg(v.gidx + k0 + e);
                w[e] = (float)((int)((word >> (4 * e)) & 15u) - (int)zr[g]) * __ldg(sc + g);
            }
        } else {
            /* group >= 8 and a multiple of 8 in every int4 format: one group per word */
            const int g = (int)(k0 / v.group);
            const float s = __ldg(sc + g);
            const int z = zr[g];
#pragma unroll
            for (int e = 0; e < 8; e++)
                w[e] = (float)((int)((word >> (4 * e)) & 15u) - z) * s;
        }
#pragma unroll
        for (int j = 0; j < N; j++) {
            const uint4 xv = __ldg((const uint4 *)(x + (int64_t)j * K + k0));
            float xf[8];
            bf16x8_to_f32(xv, xf);
#pragma unroll
            for (int e = 0; e < 8; e++)
                acc[j] = fmaf(w[e], xf[e], acc[j]);
        }
    }
#pragma unroll
    for (int j = 0; j < N; j++) {
        float a = acc[j];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            a += __shfl_xor_sync(0xffffffffu, a, o);
        acc[j] = a;
    }
    if (lane == 0) {
        float b = 0.0f;
        if (bias)
            b = bias_dtype == 0   ? ((const float *)bias)[r]
                : bias_dtype == 1 ? __half2float(((const __half *)bias)[r])
                                  : __bfloat162float(((const __nv_bfloat16 *)bias)[r]);
#pragma unroll
        for (int j = 0; j < N; j++)
            out[(int64_t)j * ld_out + r] = __float2bfloat16(acc[j] + b);
    }
}

/* out bf16 [rows, K] = the dequantized weight, one thread per code word. */
__global__ void q4_dequant_kernel(const void *wbuf, int64_t rows, int64_t K, __nv_bfloat16 *out)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t n_words = rows * (K / 8);
    if (i >= n_words)
        return;
    const q4_view v = q4_view_of(wbuf, rows, K);
    const int64_t r = i / (K / 8), k0 = (i % (K / 8)) * 8;
    const uint32_t word = v.codes[i];
    float w[8];
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const int g = v.gidx ? v.gidx[k0 + e] : (int)((k0 + e) / v.group);
        w[e] = (float)((int)((word >> (4 * e)) & 15u) - (int)v.zeros[r * v.n_groups + g]) *
               v.scales[r * v.n_groups + g];
    }
    *(uint4 *)(out + r * K + k0) = f32_to_bf16x8(w);
}

template <int N>
cudaError_t launch_gemv(cudaStream_t s, const void *w, int64_t rows, int64_t K, const void *x,
                        const void *bias, int bias_dtype, void *out, int64_t ld_out)
{
    const int warps = 4;
    const unsigned grid = (unsigned)((rows + warps - 1) / warps);
    q4_gemv_kernel<N><<<grid, warps * 32, 0, s>>>(w, rows, K, (const __nv_bfloat16 *)x, bias,
                                                  bias_dtype, (__nv_bfloat16 *)out, ld_out);
    return cudaGetLastError();
}

} // namespace

extern "C" int pl_cuk_q4_ok(const void *x, int64_t K, int n)
{
    return n >= 1 && n <= PL_Q4_GEMV_MAX_N && K % 8 == 0 && ((uintptr_t)x & 15) == 0;
}

extern "C" int pl_cuk_q4_gemv(pl_cuda_stream st, const void *w, int64_t rows, int64_t K,
                              const void *x, int n, const void *bias, int bias_dtype, void *out,
                              int64_t ld_out)
{
    cudaStream_t s = (cudaStream_t)st;
    switch (n) {
    case 1: return launch_gemv<1>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 2: return launch_gemv<2>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 3: return launch_gemv<3>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 4: return launch_gemv<4>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 5: return launch_gemv<5>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 6: return launch_gemv<6>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 7: return launch_gemv<7>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    case 8: return launch_gemv<8>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int pl_cuk_q4_dequant(pl_cuda_stream st, const void *w, int64_t rows, int64_t K,
                                 void *out)
{
    const int64_t n_words = rows * (K / 8);
    const int threads = 256;
    q4_dequant_kernel<<<(unsigned)((n_words + threads - 1) / threads), threads, 0,
                        (cudaStream_t)st>>>(w, rows, K, (__nv_bfloat16 *)out);
    return (int)cudaGetLastError();
}
