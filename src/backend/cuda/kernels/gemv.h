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

/* The moe op's decode path (cuda_moe.c): the chosen experts' products as GEMVs, reading
 * each entry's expert through the weight table of p (kernels.h's struct pl_cuk_moe_gemm,
 * passed by value like the grouped GEMMs'; offsets, counts, tiles and a_rows are not read).
 * moe_gemv_ok: whether the path takes hidden states x (16-byte aligned) of n_tokens x
 * top_k entries (at most the routed limit, 16 entries by default) of these widths; the
 * experts' weights are 16-byte aligned (the backend's allocations are).
 * gate_up: g[i, :p->n] (bf16, row stride p->n) = act(x_t W0e^T) * (x_t W1e^T) for entry
 * i = (token t = i / top_k, choice i % top_k) with e = ids[i], x_t row t of p->a (bf16,
 * stride p->k); act silu or gelu-tanh. p->out = g.
 * down: out[t, :p->n] (bf16, stride p->n) = sum_i wt[t, i] * (g_(t,i) W0e^T) over the
 * token's choices in choice order (+ sigmoid(shared_gate_logit[t]) * shared_out[t] when
 * shared_out is set), fp32, rounded once; p->a = g (the gate-up output), p->w0 the down
 * weights, p->out = out. */
int pl_cuk_moe_gemv_ok(const void *x, int n_tokens, int top_k, int hidden, int inter);
int pl_cuk_moe_gemv_gate_up(pl_cuda_stream s, const struct pl_cuk_moe_gemm *p,
                            const int32_t *ids, int n_entries, int top_k, int gelu);
int pl_cuk_moe_gemv_down(pl_cuda_stream s, const struct pl_cuk_moe_gemm *p, const int32_t *ids,
                         const float *wt, int n_tokens, int top_k,
                         const float *shared_gate_logit, const void *shared_out);
/* max_entries: the largest n_tokens x top_k routed to the GEMV path (-1: the default 16,
 * 0: never); variant: the tiles (0 default; 1, 2 alternatives timed by --bench-moe). */
void pl_cuk_moe_gemv_force(int max_entries, int variant);

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
