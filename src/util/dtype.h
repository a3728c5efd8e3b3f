/*
 * dtype.h -- element types and scalar conversions.
 *
 * Owns: enum pl_dtype (the element types of weights, activations and the KV
 * cache) and the bf16 / fp16 <-> fp32 conversions the CPU backend uses.
 * bf16 -> fp32 is exact; fp32 -> bf16 rounds to nearest even (NaN stays NaN),
 * as torch does.
 */
#ifndef PL_UTIL_DTYPE_H
#define PL_UTIL_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum pl_dtype {
    PL_DTYPE_F32 = 0,
    PL_DTYPE_F16,
    PL_DTYPE_BF16,
    PL_DTYPE_I32,
    PL_DTYPE_COUNT
};

static inline size_t pl_dtype_size(enum pl_dtype t)
{
    switch (t) {
    case PL_DTYPE_F32: return 4;
    case PL_DTYPE_F16: return 2;
    case PL_DTYPE_BF16: return 2;
    case PL_DTYPE_I32: return 4;
    default: return 0;
    }
}

/* "F32", "F16", "BF16", "I32": the safetensors spelling. */
const char *pl_dtype_name(enum pl_dtype t);

/* "float32", "float16", "bfloat16", "int32": torch's spelling (messages, --dtype). */
const char *pl_dtype_torch_name(enum pl_dtype t);

/*
 * vLLM's --dtype values other than "auto": bfloat16; float16 and half; float32
 * and float. Sets *out and returns true for one of them, false for anything
 * else ("auto" included: the caller decides what auto means).
 */
bool pl_dtype_parse_torch(const char *name, enum pl_dtype *out);

/*
 * Converts n floating-point elements (F32, F16 or BF16) from src into dst,
 * as torch's Tensor.to(dtype) does: widening is exact, narrowing rounds to
 * nearest even (fp16 overflow gives inf, NaN stays NaN). dst and src must not
 * overlap unless the types are equal. Returns false for other dtypes.
 */
bool pl_dtype_convert(void *dst, enum pl_dtype dst_t, const void *src, enum pl_dtype src_t,
                      size_t n);

static inline float pl_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t pl_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it quiet NaN */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float pl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400u)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ffu;
            u = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t pl_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xffu) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xffu) == 0xffu) /* inf / nan */
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1);
        uint32_t rounded = (man + half - 1 + ((man >> shift) & 1u)) >> shift;
        return (uint16_t)(sign | rounded);
    }
    uint32_t r = (man + 0xfffu + ((man >> 13) & 1u)) >> 13;
    uint32_t out = sign | ((uint32_t)exp << 10);
    return (uint16_t)(out + r); /* carry into the exponent is correct rounding */
}

/* Reads element i of a buffer of type t as fp32 (F32/F16/BF16 only). */
static inline float pl_dtype_get_f32(const void *p, enum pl_dtype t, size_t i)
{
    switch (t) {
    case PL_DTYPE_F32: return ((const float *)p)[i];
    case PL_DTYPE_F16: return pl_f16_to_f32(((const uint16_t *)p)[i]);
    case PL_DTYPE_BF16: return pl_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return 0.0f;
    }
}

#endif
