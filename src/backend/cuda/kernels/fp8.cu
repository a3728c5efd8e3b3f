/*
 * fp8.cu -- the CUDA backend's FP8 kernels: the W8A8 matmul's activation quantization and
 * its scaling epilogue (cuda_matmul.c), and the store into an e4m3 KV cache.
 *
 * Owns: kernels and their extern "C" launch wrappers (kernels.h). The arithmetic is the
 * specification's, operation for operation (backend.h: pl_f8w_layout and set_kv_dtype):
 * scales and reciprocals are IEEE fp32 divisions (__fdiv_rn), every scaled value is one
 * fp32 product (__fmul_rn) rounded to e4m3 by the hardware's saturating round-to-nearest-
 * even conversion, so a host emulation with util/dtype.h's conversions gives the same bytes.
 * Every reduction (a row's absmax) is a max, whose result does not depend on its order.
 */
#include "kernels.h"
#include "bf16_vec.cuh"
#include "fp8_vec.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#define F8_MAX 448.0f
#define F8_MIN_SCALE (1.0f / (448.0f * 512.0f)) /* backend.h's PL_F8_MIN_SCALE */
#define QUANT_THREADS 256

static int launch_status(void) { return (int)cudaGetLastError(); }

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* Eight bf16 of row x at element i (16-byte loads when vec, else scalar ones). */
static __device__ __forceinline__ void load8(const __nv_bfloat16 *x, int64_t i, bool vec, float *f)
{
    if (vec) {
        bf16x8_to_f32(*(const uint4 *)(x + i), f);
    } else {
#pragma unroll
        for (int j = 0; j < 8; j++)
            f[j] = __bfloat162float(x[i + j]);
    }
}

/*
 * One CTA per row t of x [n, K] (K % 8 == 0): s_t = *static_scale when that is > 0 (device
 * memory: the weight's header), else max(absmax_t / 448, F8_MIN_SCALE); x8[t][k] =
 * e4m3(x[t][k] * (1 / s_t)); sx[t] = s_t.
 */
__global__ void __launch_bounds__(QUANT_THREADS)
f8_quant_rows_kernel(uint8_t *x8, float *sx, const __nv_bfloat16 *x, int64_t K,
                     const float *static_scale, bool vec)
{
    __shared__ float warp_max[QUANT_THREADS / 32];
    const int64_t t = blockIdx.x;
    const __nv_bfloat16 *xr = x + t * K;
    float s = static_scale ? *static_scale : 0.0f;
    if (!(s > 0.0f)) {
        float amax = 0.0f;
        for (int64_t i = (int64_t)threadIdx.x * 8; i < K; i += QUANT_THREADS * 8) {
            float f[8];
            load8(xr, i, vec, f);
#pragma unroll
            for (int j = 0; j < 8; j++)
                amax = fmaxf(amax, fabsf(f[j]));
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        if ((threadIdx.x & 31) == 0)
            warp_max[threadIdx.x / 32] = amax;
        __syncthreads();
        amax = 0.0f;
#pragma unroll
        for (int w = 0; w < QUANT_THREADS / 32; w++)
            amax = fmaxf(amax, warp_max[w]);
        s = fmaxf(__fdiv_rn(amax, F8_MAX), F8_MIN_SCALE);
    }
    const float inv = __fdiv_rn(1.0f, s);
    if (threadIdx.x == 0)
        sx[t] = s;
    uint8_t *qr = x8 + t * K;
    for (int64_t i = (int64_t)threadIdx.x * 8; i < K; i += QUANT_THREADS * 8) {
        float f[8];
        load8(xr, i, vec, f);
        *(uint2 *)(qr + i) = f32x8_to_f8x8(f, inv);
    }
}

extern "C" int pl_cuk_f8_quant_rows(pl_cuda_stream s, uint8_t *x8, float *sx, const void *x,
                                    int n, int64_t K, const float *static_scale)
{
    if (n <= 0)
        return 0;
    if (K % 8 || !aligned16(x8))
        return (int)cudaErrorInvalidValue;
    f8_quant_rows_kernel<<<n, QUANT_THREADS, 0, s>>>(x8, sx, (const __nv_bfloat16 *)x, K,
                                                     static_scale, aligned16(x));
    return launch_status();
}

/* out[t][c] (bf16, row stride ld_out) = out[t][c] * sx[t] * sw[c] (+ bias[c]): the
 * epilogue of a product computed with unit scales. */
__global__ void f8_scale_out_kernel(__nv_bfloat16 *out, int ld_out, const float *sx,
                                    const float *sw, const void *bias, int bias_dtype, int cols)
{
    const int64_t t = blockIdx.y;
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols)
        return;
    __nv_bfloat16 *o = out + t * ld_out + c;
    float v = __bfloat162float(*o) * sx[t] * sw[c];
    if (bias) {
        if (bias_dtype == 2)
            v += __bfloat162float(((const __nv_bfloat16 *)bias)[c]);
        else if (bias_dtype == 1)
            v += __half2float(((const __half *)bias)[c]);
        else
            v += ((const float *)bias)[c];
    }
    *o = __float2bfloat16(v);
}

extern "C" int pl_cuk_f8_scale_out(pl_cuda_stream s, void *out, int ld_out, const float *sx,
                                   const float *sw, const void *bias, int bias_dtype, int n,
                                   int cols)
{
    if (n <= 0 || cols <= 0)
        return 0;
    dim3 grid((unsigned)((cols + 255) / 256), (unsigned)n);
    f8_scale_out_kernel<<<grid, 256, 0, s>>>((__nv_bfloat16 *)out, ld_out, sx, sw, bias,
                                             bias_dtype, cols);
    return launch_status();
}

/* blockIdx.x: the token, blockIdx.y: 0 = K, 1 = V. Row i goes to slot slots[i] (skipped
 * when < 0) as e4m3(x * inv_scale); kv_dim % 8 == 0. */
__global__ void store_kv_f8_kernel(uint8_t *k_cache, uint8_t *v_cache, const __nv_bfloat16 *k,
                                   const __nv_bfloat16 *v, const int32_t *slots, int kv_dim,
                                   float inv_k, float inv_v, bool vec)
{
    const int64_t i = blockIdx.x, slot = slots[i];
    if (slot < 0)
        return;
    const bool is_v = blockIdx.y == 1;
    const __nv_bfloat16 *src = (is_v ? v : k) + i * kv_dim;
    uint8_t *dst = (is_v ? v_cache : k_cache) + slot * kv_dim;
    const float inv = is_v ? inv_v : inv_k;
    for (int64_t c = (int64_t)threadIdx.x * 8; c < kv_dim; c += (int64_t)blockDim.x * 8) {
        float f[8];
        load8(src, c, vec, f);
        *(uint2 *)(dst + c) = f32x8_to_f8x8(f, inv);
    }
}

extern "C" int pl_cuk_store_kv_f8(pl_cuda_stream s, void *k_cache, void *v_cache, const void *k,
                                  const void *v, const int32_t *slots, int n, int kv_dim,
                                  float inv_k, float inv_v)
{
    if (n <= 0)
        return 0;
    if (kv_dim % 8 || !aligned16(k_cache) || !aligned16(v_cache))
        return (int)cudaErrorInvalidValue;
    const int threads = kv_dim / 8 >= 128 ? 128 : (kv_dim / 8 + 31) / 32 * 32;
    dim3 grid((unsigned)n, 2);
    store_kv_f8_kernel<<<grid, threads, 0, s>>>((uint8_t *)k_cache, (uint8_t *)v_cache,
                                                (const __nv_bfloat16 *)k,
                                                (const __nv_bfloat16 *)v, slots, kv_dim, inv_k,
                                                inv_v, aligned16(k) && aligned16(v));
    return launch_status();
}
