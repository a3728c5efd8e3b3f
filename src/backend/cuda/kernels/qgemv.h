/*
 * qgemv.h -- launch wrappers of the packed int4 kernels (qgemv.cu), C linkage.
 *
 * Owns: the contract between cuda_matmul.c and qgemv.cu. w is a PL_DTYPE_Q4 buffer
 * (backend.h's pl_q4_layout_of) of a [rows, K] weight; x bf16 [n, K] (row stride K,
 * 16-byte aligned); out bf16 [n, ld_out]; bias [rows] of pl_dtype code bias_dtype (0 F32,
 * 1 F16, 2 BF16) or NULL. Like every wrapper in kernels.h: enqueues on `s`, returns the
 * launch's cudaError_t as an int, allocates and synchronises nothing.
 */
#ifndef PL_BACKEND_CUDA_QGEMV_H
#define PL_BACKEND_CUDA_QGEMV_H

#include "backend/cuda/kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PL_Q4_GEMV_MAX_N 8

/* Whether the GEMV takes this x, K and n (1..PL_Q4_GEMV_MAX_N, K % 8, x aligned). */
int pl_cuk_q4_ok(const void *x, int64_t K, int n);

/* out = x @ dequant(w)^T (+ bias), fp32 accumulation: per 32 inputs of a group, scale x the
 * sum of x * (code - zero) (act-order and odd groups: x * ((code - zero) * scale) each). */
int pl_cuk_q4_gemv(pl_cuda_stream s, const void *w, int64_t rows, int64_t K, const void *x,
                   int n, const void *bias, int bias_dtype, void *out, int64_t ld_out);

/* The GEMV's tile, for tests and --bench: 0 the default (by the weight's rows), 1 one row a
 * warp, 2 four rows a warp, 3 two rows a warp (qgemv.cu). Process-wide, not thread-safe. */
void pl_cuk_q4_gemv_force(int variant);

/* out bf16 [rows, K] = dequant(w), rounded to bf16 (the larger batches' GEMM input). */
int pl_cuk_q4_dequant(pl_cuda_stream s, const void *w, int64_t rows, int64_t K, void *out);

#ifdef __cplusplus
}
#endif

#endif
