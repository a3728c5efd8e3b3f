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
    PL_DTYPE_I64,     /* quantized checkpoints' index tensors (compressed-tensors weight_shape) */
    PL_DTYPE_F8_E4M3, /* OCP fp8 e4m3 ("fn": no inf, NaN 0x7f/0xff, max 448): FP8 checkpoints */
    PL_DTYPE_I8,      /* tensors quantized checkpoints carry beside the ones pagellm reads */
    PL_DTYPE_U8,      /* (compressed-tensors' unpacked zero points of symmetric schemes) */
    PL_DTYPE_Q4,      /* a backend's packed int4 weights (backend.h's struct pl_weight); no
                         element size (pl_dtype_size 0) */
    PL_DTYPE_F8W,     /* a backend's packed FP8 W8A8 weights: e4m3 codes + per-channel fp32
                         scales (backend.h's pl_f8w_layout); no element size */
    PL_DTYPE_COUNT
};

static inline size_t pl_dtype_size(enum pl_dtype t)
{
    switch (t) {
    case PL_DTYPE_F32: return 4;
    case PL_DTYPE_F16: return 2;
    case PL_DTYPE_BF16: return 2;
    case PL_DTYPE_I32: return 4;
    case PL_DTYPE_I64: return 8;
    case PL_DTYPE_F8_E4M3: return 1;
    case PL_DTYPE_I8: return 1;
    case PL_DTYPE_U8: return 1;
    default: return 0;
    }
}

/* "F32", "F16", "BF16", "I32", "I64", "F8_E4M3", "I8", "U8": the safetensors spelling. */
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

/* fp8 e4m3fn -> fp32 (exact): 4 exponent bits (bias 7), 3 mantissa bits, subnormals, no
 * infinities, S.1111.111 is NaN (torch.float8_e4m3fn). */
static inline float pl_f8e4m3_to_f32(uint8_t b)
{
    const uint32_t sign = (uint32_t)(b & 0x80u) << 24;
    const uint32_t exp = (b >> 3) & 0xfu, man = b & 0x7u;
    uint32_t u;
    if (exp == 0xfu && man == 0x7u) {
        u = sign | 0x7fc00000u;
    } else if (exp == 0) {
        if (!man) {
            u = sign;
        } else { /* subnormal: man * 2^-9 */
            float f = (float)man * (1.0f / 512.0f);
            memcpy(&u, &f, 4);
            u |= sign;
        }
    } else {
        u = sign | ((exp + 127 - 7) << 23) | (man << 20);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* fp32 -> fp8 e4m3fn, round to nearest even, saturating to +-448 as torch's
 * x.clamp(-448, 448).to(torch.float8_e4m3fn) does after the clamp that every fp8
 * quantizer applies; NaN stays NaN. */
static inline uint8_t pl_f32_to_f8e4m3(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint8_t)(sign | 0x7fu);
    float a = f < 0 ? -f : f;
    if (a >= 448.0f)
        return (uint8_t)(sign | 0x7eu);
    if (a < 1.0f / 64.0f) { /* subnormal range: multiples of 2^-9, round half even */
        float q = a * 512.0f;
        uint32_t n = (uint32_t)q;
        float frac = q - (float)n;
        if (frac > 0.5f || (frac == 0.5f && (n & 1u)))
            n++;
        return (uint8_t)(sign | n); /* n == 8 is the smallest normal, 0x08 */
    }
    memcpy(&u, &a, 4);
    /* keep 3 mantissa bits: round the 20 dropped bits to nearest even */
    uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
    uint32_t exp = (r >> 23) - 127 + 7, man = (r >> 20) & 0x7u;
    if (exp > 15 || (exp == 15 && man == 7)) /* rounded past 448 */
        return (uint8_t)(sign | 0x7eu);
    return (uint8_t)(sign | (exp << 3) | man);
}

/* Reads element i of a buffer of type t as fp32 (F32/F16/BF16/F8_E4M3 only). */
static inline float pl_dtype_get_f32(const void *p, enum pl_dtype t, size_t i)
{
    switch (t) {
    case PL_DTYPE_F32: return ((const float *)p)[i];
    case PL_DTYPE_F16: return pl_f16_to_f32(((const uint16_t *)p)[i]);
    case PL_DTYPE_BF16: return pl_bf16_to_f32(((const uint16_t *)p)[i]);
    case PL_DTYPE_F8_E4M3: return pl_f8e4m3_to_f32(((const uint8_t *)p)[i]);
    default: return 0.0f;
    }
}

#endif
