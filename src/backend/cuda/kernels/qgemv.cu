/*
 * qgemv.cu -- packed int4 weights (backend.h's PL_DTYPE_Q4 buffer, made once at load by
 * model/quant.h's pl_quant_repack_int4): a skinny GEMV for 1..8 rows of x that
 * dequantizes in registers, and a dequantizing kernel that expands a weight into bf16
 * for the cuBLASLt GEMM of larger batches (vLLM's AWQ path does the same above its
 * GEMV threshold).
 *
 * GEMV. A warp owns R output rows (R = 4 for weights of 2048 rows or more: each x value
 * loaded feeds R rows; R = 1 for smaller ones, which need the CTAs). The fast path (no act-order, group a multiple of 32, K a multiple of 32): lane l
 * walks 16-byte vectors of codes l, l + 32, ... of each row (32 inputs of one group; a warp
 * step reads 512 contiguous bytes of a row), U vectors of every row in flight
 * (ld.global.nc.L1::no_allocate: streamed). For each vector it sums (code - zero) * x in
 * fp32 for every x row (code - zero exact: one byte permute makes 2^23 + code, minus
 * 2^23 + zero), then adds scale * that sum: one multiply by the scale per 32 inputs instead
 * of one per input. Otherwise (act-order g_idx, odd groups) the general path walks the
 * row's 32-bit code words l, l + 32, ..., reads each input's group through the g_idx table
 * (the inputs are never permuted) and accumulates x * ((code - zero) * scale) as the
 * reference does. Both end with a shuffle reduction per (row, x row). Weights are read
 * once per launch whatever n is: decode is bandwidth bound on the weight stream.
 */
#include "backend/cuda/kernels/bf16_vec.cuh"
#include "backend/cuda/kernels/pdl.cuh"
#include "backend/cuda/kernels/q4.cuh"
#include "backend/cuda/kernels/qgemv.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

/* The general path's part of one row: lane's words l, l + 32, ...; any group, g_idx. */
template <int N>
__device__ __forceinline__ void row_general(const q4_view &v, int64_t r, int64_t K,
                                            const __nv_bfloat16 *x, int lane, float (&acc)[N])
{
    const uint32_t *cw = v.codes + r * (K / 8);
    const float *sc = v.scales + r * v.n_groups;
    const uint8_t *zr = v.zeros + r * v.n_groups;
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
}

__device__ __forceinline__ uint32_t word_of(const uint4 &q, int w)
{
    return w == 0 ? q.x : w == 1 ? q.y : w == 2 ? q.z : q.w;
}

/* R rows per warp, 4 warps per CTA; U vectors of every row in flight per lane. */
template <int N, int R, int U>
__global__ void __launch_bounds__(128) q4_gemv_kernel(const void *wbuf, int64_t rows, int64_t K,
                                                       const __nv_bfloat16 *x,
                                                       const void *bias, int bias_dtype,
                                                       __nv_bfloat16 *out, int64_t ld_out)
{
    pdl_enter();
    const int lane = threadIdx.x & 31;
    const int64_t r0 = ((int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32) * R;
    if (r0 >= rows)
        return;
    const q4_view v = q4_view_of(wbuf, rows, K);
    int64_t row[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        row[r] = r0 + r < rows ? r0 + r : rows - 1;
    float acc[R][N];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < N; j++)
            acc[r][j] = 0.0f;
    if (v.gidx || v.group % 32 != 0 || K % 32 != 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
            row_general<N>(v, row[r], K, x, lane, acc[r]);
    } else {
        const int64_t nv = K / 32; /* 16-byte code vectors per row */
        const int vpg = v.group / 32;
        const uint4 *crow[R];
        const float *srow[R];
        const uint8_t *zrow[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            crow[r] = (const uint4 *)(v.codes + row[r] * (K / 8));
            srow[r] = v.scales + row[r] * v.n_groups;
            zrow[r] = v.zeros + row[r] * v.n_groups;
        }
        for (int64_t v0 = lane; v0 < nv; v0 += 32 * U) {
            uint4 q[U][R];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++)
                    q[u][r] = v0 + 32 * u < nv ? ld_stream16(crow[r] + v0 + 32 * u)
                                               : make_uint4(0, 0, 0, 0);
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int64_t vi = v0 + 32 * u;
                if (vi >= nv)
                    break;
                const int g = (int)(vi / vpg);
                float sc[R], mz[R], ga[R][N];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    sc[r] = __ldg(srow[r] + g);
                    mz[r] = __uint_as_float(0x4B000000u | (uint32_t)__ldg(zrow[r] + g));
#pragma unroll
                    for (int j = 0; j < N; j++)
                        ga[r][j] = 0.0f;
                }
#pragma unroll
                for (int w = 0; w < 4; w++) {
                    const int64_t k0 = vi * 32 + w * 8;
                    float xf[N][8];
#pragma unroll
                    for (int j = 0; j < N; j++)
                        bf16x8_to_f32(__ldg((const uint4 *)(x + (int64_t)j * K + k0)), xf[j]);
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        const uint32_t word = word_of(q[u][r], w);
#pragma unroll
                        for (int e = 0; e < 8; e++) {
                            const float c =
                                __uint_as_float(0x4B000000u | ((word >> (4 * e)) & 15u)) - mz[r];
#pragma unroll
                            for (int j = 0; j < N; j++)
                                ga[r][j] = fmaf(c, xf[j][e], ga[r][j]);
                        }
                    }
                }
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int j = 0; j < N; j++)
                        acc[r][j] = fmaf(sc[r], ga[r][j], acc[r][j]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < N; j++) {
            float a = acc[r][j];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1)
                a += __shfl_xor_sync(0xffffffffu, a, o);
            acc[r][j] = a;
        }
    /* lane r * N + j stores (row r, x row j); R * N <= 32 */
#pragma unroll
    for (int r = 0; r < R; r++) {
        if (r0 + r >= rows)
            break;
        float b = 0.0f;
        if (bias)
            b = bias_dtype == 0   ? ((const float *)bias)[r0 + r]
                : bias_dtype == 1 ? __half2float(((const __half *)bias)[r0 + r])
                                  : __bfloat162float(((const __nv_bfloat16 *)bias)[r0 + r]);
#pragma unroll
        for (int j = 0; j < N; j++)
            if (lane == r * N + j)
                out[(int64_t)j * ld_out + r0 + r] = __float2bfloat16(acc[r][j] + b);
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

int g_variant = 0; /* pl_cuk_q4_gemv_force */

template <int N, int R, int U>
cudaError_t launch_tile(cudaStream_t s, const void *w, int64_t rows, int64_t K, const void *x,
                        const void *bias, int bias_dtype, void *out, int64_t ld_out)
{
    static_assert(R * N <= 32, "a lane per (row, x row) stores");
    const int warps = 4;
    const int64_t grid = (rows + warps * R - 1) / (warps * R);
    if (grid > 0x7fffffff)
        return cudaErrorInvalidValue;
    pdl_launch(q4_gemv_kernel<N, R, U>, dim3((unsigned)grid), dim3(warps * 32), 0, s, w, rows, K,
               (const __nv_bfloat16 *)x, bias, bias_dtype, (__nv_bfloat16 *)out, ld_out);
    return cudaGetLastError();
}

/* Rows per warp and vectors in flight. On the H100 (test_cuda_quant --bench, 2026-12-07)
 * 4 rows x 2 vectors was the fastest on the Llama-3-8B shapes of 4096 rows and more (q/o
 * 8.2 us, gate/up 21.3, down 23.4 at n = 1), one row x 4 on the 1024-row k/v (5.2 us: four
 * times the CTAs). Variants for tests and --bench: 1 one row x 4, 2 four rows x 2, 3 two
 * rows x 4. */
template <int N>
cudaError_t launch_gemv(cudaStream_t s, const void *w, int64_t rows, int64_t K, const void *x,
                        const void *bias, int bias_dtype, void *out, int64_t ld_out)
{
    const int v = g_variant ? g_variant : rows >= 2048 ? 2 : 1;
    if (v == 1)
        return launch_tile<N, 1, 4>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    if (v == 3)
        return launch_tile<N, 2, 4>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
    return launch_tile<N, 4, 2>(s, w, rows, K, x, bias, bias_dtype, out, ld_out);
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

extern "C" void pl_cuk_q4_gemv_force(int variant) { g_variant = variant; }
