/*
 * bf16_vec.cuh -- 16-byte bf16 <-> fp32 conversions shared by the CUDA kernels
 * (eight bf16 values in one uint4, converted in pairs). Device code only.
 */
#ifndef PL_BACKEND_CUDA_BF16_VEC_CUH
#define PL_BACKEND_CUDA_BF16_VEC_CUH

#include <cuda_bf16.h>

static __device__ __forceinline__ void bf16x8_to_f32(uint4 u, float *f)
{
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x;
        f[2 * i + 1] = t.y;
    }
}

static __device__ __forceinline__ uint4 f32_to_bf16x8(const float *f)
{
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++)
        h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return u;
}

#endif
