/*
 * dtype.c -- dtype names, vLLM's --dtype spellings and whole-buffer
 * conversions (see dtype.h).
 */
#include "util/dtype.h"

const char *pl_dtype_name(enum pl_dtype t)
{
    switch (t) {
    case PL_DTYPE_F32: return "F32";
    case PL_DTYPE_F16: return "F16";
    case PL_DTYPE_BF16: return "BF16";
    case PL_DTYPE_I32: return "I32";
    case PL_DTYPE_I64: return "I64";
    case PL_DTYPE_F8_E4M3: return "F8_E4M3";
    case PL_DTYPE_I8: return "I8";
    case PL_DTYPE_U8: return "U8";
    case PL_DTYPE_Q4: return "Q4";
    case PL_DTYPE_F8W: return "F8W";
    default: return "?";
    }
}

const char *pl_dtype_torch_name(enum pl_dtype t)
{
    switch (t) {
    case PL_DTYPE_F32: return "float32";
    case PL_DTYPE_F16: return "float16";
    case PL_DTYPE_BF16: return "bfloat16";
    case PL_DTYPE_I32: return "int32";
    case PL_DTYPE_I64: return "int64";
    case PL_DTYPE_F8_E4M3: return "float8_e4m3fn";
    case PL_DTYPE_I8: return "int8";
    case PL_DTYPE_U8: return "uint8";
    case PL_DTYPE_Q4: return "int4";
    case PL_DTYPE_F8W: return "fp8";
    default: return "?";
    }
}

bool pl_dtype_parse_torch(const char *name, enum pl_dtype *out)
{
    static const struct {
        const char *name;
        enum pl_dtype t;
    } names[] = {
        {"bfloat16", PL_DTYPE_BF16}, {"float16", PL_DTYPE_F16}, {"half", PL_DTYPE_F16},
        {"float32", PL_DTYPE_F32},   {"float", PL_DTYPE_F32},
    };
    for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(name, names[i].name)) {
            *out = names[i].t;
            return true;
        }
    return false;
}

static bool is_float(enum pl_dtype t)
{
    return t == PL_DTYPE_F32 || t == PL_DTYPE_F16 || t == PL_DTYPE_BF16;
}

bool pl_dtype_convert(void *dst, enum pl_dtype dst_t, const void *src, enum pl_dtype src_t,
                      size_t n)
{
    if (!is_float(dst_t) || !is_float(src_t))
        return false;
    if (dst_t == src_t) {
        memmove(dst, src, n * pl_dtype_size(src_t));
        return true;
    }
    /* every path goes through fp32, which holds bf16 and fp16 values exactly, so
       the one rounding is the final narrowing (what torch does) */
    for (size_t i = 0; i < n; i++) {
        float x = pl_dtype_get_f32(src, src_t, i);
        switch (dst_t) {
        case PL_DTYPE_F32: ((float *)dst)[i] = x; break;
        case PL_DTYPE_F16: ((uint16_t *)dst)[i] = pl_f32_to_f16(x); break;
        case PL_DTYPE_BF16: ((uint16_t *)dst)[i] = pl_f32_to_bf16(x); break;
        default: return false;
        }
    }
    return true;
}
