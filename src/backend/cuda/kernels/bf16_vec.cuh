/*
 * bf16_vec.cuh -- 16-byte bf16 <-> fp32 conversions shared by the CUDA kernels
 * (eight bf16 values in one uint4, converted in pairs), and the streamed 16-byte load of
 * the GEMV kernels. Device code only.
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

/* A 16-byte load that bypasses L1 (weights read once per launch: the GEMV kernels). */
static __device__ __forceinline__ uint4 ld_stream16(const void *p)
{
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

#endif
