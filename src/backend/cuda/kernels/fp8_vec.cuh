/*
 * fp8_vec.cuh -- e4m3 <-> fp32 / bf16 conversions shared by the CUDA kernels (eight e4m3
 * bytes in one uint2). Device code only.
 *
 * e4m3 -> fp16 is exact (the hardware's cvt.rn.f16x2.e4m3x2 on sm_89+), and so are fp16 ->
 * fp32 and the fp32 -> bf16 of such a value (3 mantissa bits, exponents -9..8), so every
 * path below gives the exact value of util/dtype.h's pl_f8e4m3_to_f32 (NaN aside).
 * fp32 -> e4m3 rounds to nearest even and saturates at +-448 (__NV_SATFINITE), as
 * pl_f32_to_f8e4m3 does.
 */
#ifndef PL_BACKEND_CUDA_FP8_VEC_CUH
#define PL_BACKEND_CUDA_FP8_VEC_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

/* Two e4m3 bytes (low byte = first element) as two floats. */
static __device__ __forceinline__ float2 f8x2_to_f32x2(uint16_t two)
{
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)two, __NV_E4M3);
    return __half22float2(*(const __half2 *)&h);
}

/* Eight e4m3 bytes (byte i = element i) as floats. */
static __device__ __forceinline__ void f8x8_to_f32(uint2 u, float *f)
{
    const uint32_t w[2] = {u.x, u.y};
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const float2 a = f8x2_to_f32x2((uint16_t)(w[i] & 0xffffu));
        const float2 b = f8x2_to_f32x2((uint16_t)(w[i] >> 16));
        f[4 * i] = a.x;
        f[4 * i + 1] = a.y;
        f[4 * i + 2] = b.x;
        f[4 * i + 3] = b.y;
    }
}

/* Eight e4m3 bytes as eight bf16 (exact) in one uint4, element order kept. */
static __device__ __forceinline__ uint4 f8x8_to_bf16x8(uint2 u)
{
    float f[8];
    f8x8_to_f32(u, f);
    uint4 r;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&r;
#pragma unroll
    for (int i = 0; i < 4; i++)
        h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    return r;
}

/* fp32 -> e4m3 byte: round to nearest even, saturating (NaN stays NaN). */
static __device__ __forceinline__ uint32_t f32_to_f8(float x)
{
    return (uint32_t)__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
}

/* Eight floats times `mul` (each product rounded to fp32 first) as eight e4m3 bytes. */
static __device__ __forceinline__ uint2 f32x8_to_f8x8(const float *f, float mul)
{
    uint32_t w[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 8; i++)
        w[i / 4] |= f32_to_f8(__fmul_rn(f[i], mul)) << (8 * (i % 4));
    return make_uint2(w[0], w[1]);
}

#endif
