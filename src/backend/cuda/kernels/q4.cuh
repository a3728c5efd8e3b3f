/*
 * q4.cuh -- the device view of a packed int4 weight (backend.h's PL_DTYPE_Q4 buffer,
 * pl_q4_layout_of), shared by the int4 GEMV / dequantizer (qgemv.cu) and the int4
 * tensor-core GEMM (qgemm.cu). Device code only.
 *
 * The buffer's header carries group, n_groups and has_gidx, so the host needs nothing
 * but the weight's shape: the section offsets are recomputed here exactly as
 * pl_q4_layout_of does (every section 16-byte aligned).
 */
#ifndef PL_BACKEND_CUDA_Q4_CUH
#define PL_BACKEND_CUDA_Q4_CUH

#include <stdint.h>

struct q4_view {
    const uint32_t *codes; /* [rows, cols / 8]: input k at bits 4 (k % 8) of word k / 8 */
    const float *scales;   /* [rows, n_groups] */
    const uint8_t *zeros;  /* [rows, n_groups] */
    const int32_t *gidx;   /* [cols]: input k's group (act-order); NULL: group k / group */
    int group, n_groups;
};

static __device__ __forceinline__ q4_view q4_view_of(const void *buf, int64_t rows, int64_t cols)
{
    const int32_t *h = (const int32_t *)buf;
    q4_view v;
    v.group = h[0];
    v.n_groups = h[1];
    const int64_t scale_off = 16 + ((rows * (cols / 8) * 4 + 15) & ~(int64_t)15);
    const int64_t zero_off = scale_off + ((rows * (int64_t)v.n_groups * 4 + 15) & ~(int64_t)15);
    const int64_t gidx_off = zero_off + ((rows * (int64_t)v.n_groups + 15) & ~(int64_t)15);
    v.codes = (const uint32_t *)((const char *)buf + 16);
    v.scales = (const float *)((const char *)buf + scale_off);
    v.zeros = (const uint8_t *)buf + zero_off;
    v.gidx = h[2] ? (const int32_t *)((const char *)buf + gidx_off) : nullptr;
    return v;
}

#endif
