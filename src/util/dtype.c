/*
 * dtype.c -- dtype names (see dtype.h).
 */
#include "util/dtype.h"

const char *pl_dtype_name(enum pl_dtype t)
{
    switch (t) {
    case PL_DTYPE_F32: return "F32";
    case PL_DTYPE_F16: return "F16";
    case PL_DTYPE_BF16: return "BF16";
    case PL_DTYPE_I32: return "I32";
    default: return "?";
    }
}
