/*
 * cuda_backend.h -- the CUDA backend: creation and CUDA-specific helpers.
 *
 * Owns: the public entry points of src/backend/cuda beyond the op table
 * (backend.h), and the internal interface between cuda_backend.c (memory,
 * op dispatch, the error state) and cuda_matmul.c (cuBLASLt GEMMs).
 * Activations and the KV cache are bf16 device memory (the KV cache e4m3 after
 * set_kv_dtype); weights are uploaded once by map_weight and used in their own dtype
 * (BF16, F16, packed int4 or FP8 W8A8; F32 weights are refused by supports() for the
 * matmul ops and accepted for norm vectors and embeddings). Every op is enqueued on the
 * backend's one stream, allocates nothing, and records the first CUDA or cuBLAS failure in
 * a sticky error that sync() reports as PL_STATUS_INTERNAL (pl_backend_cuda_last_error
 * gives the message).
 */
#ifndef PL_BACKEND_CUDA_BACKEND_H
#define PL_BACKEND_CUDA_BACKEND_H

#include "backend/backend.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Number of CUDA devices usable here (0 when there is no driver or no GPU). */
int pl_cuda_device_count(void);

/* Creates the CUDA backend on `device`. PL_STATUS_UNSUPPORTED when there is
 * no usable GPU (the message says why), PL_STATUS_INTERNAL for other CUDA or
 * cuBLAS failures. */
pl_status pl_backend_cuda_new(int device, struct pl_backend **out, struct pl_err *err);
/* The same with activations, KV cache and products in `act`: PL_DTYPE_BF16 (the default,
 * above) or PL_DTYPE_F32, the float32 mode: every op in fp32 (cuBLASLt's fp32 compute, no
 * TF32), for checking against transformers in float32; it needs F32 weights (--dtype
 * float32) and is several times slower. */
pl_status pl_backend_cuda_new_act(int device, enum pl_dtype act, struct pl_backend **out,
                                  struct pl_err *err);

/* Free and total device memory in bytes (cudaMemGetInfo on the backend's device). */
pl_status pl_backend_cuda_mem_info(struct pl_backend *be, size_t *free_bytes,
                                   size_t *total_bytes);

/* The message of the first failure since creation ("" when none). */
const char *pl_backend_cuda_last_error(const struct pl_backend *be);

/* The device's name, e.g. "NVIDIA H100 80GB HBM3". */
const char *pl_backend_cuda_device_name(const struct pl_backend *be);

/* The backend's one stream (a cudaStream_t): the NCCL communicator enqueues its
 * collectives on it, in order with the ops (cuda/comm_nccl.c). */
void *pl_backend_cuda_stream(struct pl_backend *be);
/* The device index the backend was created on. */
int pl_backend_cuda_device(const struct pl_backend *be);

/* Forces the number of context splits of the decode attention path (0 = chosen
 * from the shape and the GPU; for tests and benchmarks). */
void pl_backend_cuda_set_decode_splits(struct pl_backend *be, int n_splits);

/* Turns the fused qk_rope_store and norm_add_norm kernels on or off (off: each op runs the
 * kernels it stands for); the default is PL_CUDA_FUSE_DEFAULT unless PAGELLM_CUDA_FUSE says
 * otherwise (for tests and A/B runs). */
void pl_backend_cuda_set_fused(struct pl_backend *be, bool on);
bool pl_backend_cuda_fused(const struct pl_backend *be);

/* Test knob: on, every FP8 W8A8 product (PL_DTYPE_F8W) takes the path of shapes that
 * cuBLASLt's outer-vector scaling refuses (a unit-scale FP8 GEMM, then the scaling
 * epilogue kernel); off (the default), that path serves only refused shapes. */
void pl_backend_cuda_set_fp8_epilogue(struct pl_backend *be, bool on);
/* FP8 W8A8 products (chunks of rows) that ran through the epilogue path since creation. */
long pl_backend_cuda_fp8_epilogue_count(const struct pl_backend *be);
/* The int4 products' paths (tests and benchmarks): packed int4 products of 9 up to max_n
 * rows run the int4 tensor-core GEMM, larger ones dequantize + cuBLASLt (max_n < 0: the
 * default, PAGELLM_Q4_GEMM_MAX_N or 1024; 8 or less: never the GEMM outside graph
 * recording); splits > 0 fixes the GEMM's K slices (0: chosen per shape). */
void pl_backend_cuda_set_q4_gemm(struct pl_backend *be, int max_n, int splits);

/* ---- internal: shared by cuda_backend.c and cuda_matmul.c --------------------------- */

struct pl_cuda_matmul; /* cuBLASLt handle, workspace, plan cache */

/* Records the first failure (later ones are dropped: the first is the cause). */
void pl_cuda_fail(struct pl_backend *be, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

pl_status pl_cuda_matmul_new(void *stream, struct pl_cuda_matmul **out, struct pl_err *err);
void pl_cuda_matmul_free(struct pl_cuda_matmul *mm);
/* pl_backend_cuda_set_fp8_epilogue / _fp8_epilogue_count on the matmul state. */
void pl_cuda_matmul_set_fp8_epilogue(struct pl_cuda_matmul *mm, bool on);
long pl_cuda_matmul_fp8_epilogue_count(const struct pl_cuda_matmul *mm);

/* pl_backend_cuda_set_q4_gemm's settings. */
void pl_cuda_matmul_set_q4_gemm(struct pl_cuda_matmul *mm, int max_n, int splits);

/* out (bf16 [n, w.rows], row stride ld_out; or fp32 when out_f32) = x (bf16) @ w^T (+ bias).
 * Returns false after recording the failure with pl_cuda_fail. */
bool pl_cuda_matmul_run(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out, int ld_out,
                        bool out_f32, const void *x, const struct pl_weight *w,
                        const struct pl_weight *bias, int n);

/* The matmul_group and gate_up_act ops of backend.h: one GEMV launch (kernels/gemv.h) at
 * small n with bf16 weights, cuBLASLt GEMMs (+ silu_mul) otherwise. Return false after
 * recording the failure with pl_cuda_fail. */
/* The float32 mode's products: out (fp32 [n, w.rows], row stride ld_out) = x (fp32) @ w^T
 * (+ bias), w and bias F32. */
bool pl_cuda_matmul_run_f32(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out,
                            int ld_out, const void *x, const struct pl_weight *w,
                            const struct pl_weight *bias, int n);

bool pl_cuda_matmul_group_run(struct pl_backend *be, struct pl_cuda_matmul *mm, int n_mats,
                              void *outs[], const int ld_outs[], const void *x,
                              const struct pl_weight *ws[], const struct pl_weight *biases[],
                              int n);
bool pl_cuda_gate_up_act_run(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out,
                             const void *x, const struct pl_weight *wg,
                             const struct pl_weight *wu, const struct pl_weight *bg,
                             const struct pl_weight *bu, int n, int dim, bool gelu_tanh);

/* The backend's stream (a cudaStream_t). */
void *pl_cuda_stream_of(struct pl_backend *be);
/* Whether the backend's stream is recording a graph (an op that must synchronise
 * cannot run then). */
bool pl_cuda_capturing(struct pl_backend *be);

/* The moe op (cuda_moe.c) and the pinned host array of PL_CUDA_MOE_MAX_EXPERTS counts it
 * reads the experts' token counts into. */
#define PL_CUDA_MOE_MAX_EXPERTS 1024
void pl_cuda_moe(struct pl_backend *be, void *out, const void *x, int n, int hidden,
                 const struct pl_moe_args *a, void *scratch);
int32_t *pl_cuda_moe_host_counts(struct pl_backend *be);

/* Per-op GPU time (cuda_profile.c): NULL unless PAGELLM_CUDA_PROFILE is set and not 0;
 * every function accepts NULL. mark records an event labelled by fmt before an op;
 * flush reads the events (the stream is synchronised by it); free prints the table. */
struct pl_cuda_profile;
struct pl_cuda_profile *pl_cuda_profile_new(void *stream);
void pl_cuda_profile_mark(struct pl_cuda_profile *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pl_cuda_profile_flush(struct pl_cuda_profile *p);
void pl_cuda_profile_free(struct pl_cuda_profile *p);

#endif
