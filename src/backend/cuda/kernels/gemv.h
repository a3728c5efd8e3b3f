/*
 * gemv.h -- launch wrappers of the skinny-GEMM ("GEMV") kernels (gemv.cu), C linkage.
 *
 * Owns: the contract between cuda_matmul.c and gemv.cu. out[n, M] = x[n, K] @ W[M, K]^T for
 * 1 <= n <= PL_GEMV_MAX_N rows of x, W bf16 row-major (as HF stores it), x bf16 with row
 * stride K, fp32 accumulation in a fixed order (results are bitwise repeatable), bf16 or fp32
 * out with row stride ld_out, optional bias of dtype F32 / F16 / BF16 (pl_dtype codes 0/1/2).
 * Preconditions, checked by pl_cuk_gemv_ok (callers fall back to cuBLASLt otherwise):
 * K % 8 == 0 and x, every W 16-byte aligned (rows are read with 16-byte loads). Like every
 * wrapper in kernels.h: enqueues on `s`, returns the launch's cudaError_t as an int,
 * allocates and synchronises nothing (recordable into CUDA graphs).
 */
#ifndef PL_BACKEND_CUDA_GEMV_H
#define PL_BACKEND_CUDA_GEMV_H

#include "backend/cuda/kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PL_GEMV_MAX_N 8
#define PL_GEMV_MAX_MATS 3
/* Warps of the default tile: warp w sums K's 256-element chunks [w*nc/W, (w+1)*nc/W) and the
 * last warp the K % 256 tail (the order a bit-exact emulation must follow). */
#define PL_GEMV_WARPS 4

/* One weight of a launch and where its product goes. */
struct pl_gemv_mat {
    const void *w;    /* bf16 [rows, K] */
    const void *bias; /* [rows] of bias_dtype, or NULL */
    int bias_dtype;   /* pl_dtype code: 0 F32, 1 F16, 2 BF16 */
    void *out;        /* [n, ld_out] bf16 (fp32 with out_f32) */
    int64_t rows;
    int64_t ld_out;
};

/* Whether the kernels take x / w with this K and n (see the preconditions above). */
int pl_cuk_gemv_ok(const void *x, const void *w, int64_t K, int n);

/* For each of the n_mats (1..3) weights sharing x: mats[i].out = x @ mats[i].w^T (+ bias),
 * all in one launch. out_f32: fp32 outputs (the LM head), bias ignored. */
int pl_cuk_gemv(pl_cuda_stream s, const struct pl_gemv_mat *mats, int n_mats, const void *x,
                int64_t K, int n, int out_f32);

/* out[n, ld_out] (bf16, first dim columns) = act(x @ gate.w^T + gate.bias) * (x @ up.w^T +
 * up.bias) with act silu, or gelu-tanh when gelu_tanh; gate.rows == up.rows == dim; gate
 * and up of output column i are computed by the same CTA, in fp32, and rounded once.
 * gate.out / up.out are ignored. */
int pl_cuk_gemv_gate_up_act(pl_cuda_stream s, void *out, int64_t ld_out,
                            const struct pl_gemv_mat *gate, const struct pl_gemv_mat *up,
                            const void *x, int64_t K, int n, int gelu_tanh);

/* Test and benchmark knobs, process-wide, not thread-safe (like
 * pl_cuk_attention_prefill_force). max_n: the largest n the backend routes to these kernels
 * (default PL_GEMV_MAX_N; 0 = never, i.e. cuBLASLt everywhere: the baseline). variant:
 * the tile of the plain bf16-out kernel for n in {1, 4, 8} (0 = default 4 warps x 4 rows x 2
 * chunks in flight; 1 = 4 warps x 2 rows x 4 chunks; 2 = 8 warps x 4 rows x 2 chunks;
 * 3 = 4 warps x 8 rows x 1 chunk); other n and the fp32 / gate-up kernels keep the default. */
void pl_cuk_gemv_force(int max_n, int variant);
int pl_cuk_gemv_max_n(void);

#ifdef __cplusplus
}
#endif

#endif
