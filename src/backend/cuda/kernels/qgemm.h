/*
 * qgemm.h -- launch wrapper of the int4 weight-only GEMM on tensor cores (qgemm.cu), C
 * linkage.
 *
 * Owns: the contract between cuda_matmul.c and qgemm.cu. w is a PL_DTYPE_Q4 buffer
 * (backend.h's pl_q4_layout_of) of a [rows, K] weight; x bf16 [n, K] (row stride K, 16-byte
 * aligned); out bf16 [n, ld_out]; bias [rows] of pl_dtype code bias_dtype (0 F32, 1 F16,
 * 2 BF16) or NULL. Like every wrapper in kernels.h: enqueues on `s`, returns the launch's
 * cudaError_t as an int, allocates and synchronises nothing, so it may be recorded into a
 * graph.
 */
#ifndef PL_BACKEND_CUDA_QGEMM_H
#define PL_BACKEND_CUDA_QGEMM_H

#include "backend/cuda/kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Caller-owned memory the GEMM splits K with (allocated once, at creation):
 *   partial: fp32 scratch of n_partial floats; its contents do not survive a launch (the
 *            cuBLASLt workspace serves: the two never run at the same time);
 *   counters: n_counters int32, zero at creation; every launch leaves them zero again.
 * A launch whose output tiles are too few to fill the GPU (n_sms multiprocessors) splits K
 * into up to 8 slices; the last CTA of a tile to finish sums the slices' fp32 partials in
 * slice order (deterministic) and writes the tile. Shapes whose split would not fit the
 * scratch run unsplit. forced_splits > 0 (tests) fixes the split count (clamped to what
 * fits). */
struct pl_cuk_q4_gemm_ws {
    float *partial;
    size_t n_partial;
    int32_t *counters;
    int n_counters;
    int n_sms;
    int forced_splits;
};

/* Sets the kernels' shared-memory limits on the current device; once, before any launch
 * there (the CUDA matmul's creation). */
int pl_cuk_q4_gemm_init(void);

/* Whether the GEMM takes this w, x, K and n (n >= 1, K % 8 == 0, w and x 16-byte aligned).
 * Every group size and act-order (g_idx) is served. */
int pl_cuk_q4_gemm_ok(const void *w, const void *x, int64_t K, int n);

/* out = x @ dequant(w)^T (+ bias): weights dequantized in registers to bf16 exactly as
 * pl_cuk_q4_dequant does (fp32 (code - zero) * scale, rounded to bf16), products on tensor
 * cores with fp32 accumulation, bias added in fp32, one rounding to bf16. Meant for n above
 * PL_Q4_GEMV_MAX_N (smaller n work, the GEMV is faster there). */
int pl_cuk_q4_gemm(pl_cuda_stream s, const void *w, int64_t rows, int64_t K, const void *x, int n,
                   const void *bias, int bias_dtype, void *out, int64_t ld_out,
                   const struct pl_cuk_q4_gemm_ws *ws);

#ifdef __cplusplus
}
#endif

#endif
