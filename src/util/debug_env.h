/*
 * debug_env.h -- the environment variables the library itself still reads.
 *
 * Owns: the one reader of them (debug_env.c). Every engine, model and backend
 * setting is a field of struct pl_llm_params (include/pagellm.h) or of the
 * internal params under it; what is left here is for debugging and tests and
 * is documented in docs/library.md ("Environment variables"):
 *   PAGELLM_LOG_LEVEL            debug | info | warn | error | off (util/log.c)
 *   PAGELLM_PROFILE              not 0: engine wall time per step phase, printed when
 *                                the engine is freed (engine.c)
 *   PAGELLM_CUDA_PROFILE         not 0: GPU time per op label (cuda_profile.c)
 *   PAGELLM_TEST_STALL_FILE      test hook: the engine thread stalls while this file
 *                                exists (async_engine.c)
 *   PAGELLM_TEST_FAIL_STEP_FILE  test hook: model runs fail while this file exists
 *                                (llm.c)
 *   PAGELLM_CPU_WEIGHTS          mmap: the CPU backend reads weights in the file mapping
 *                                instead of copying them into huge pages (cpu_backend.c)
 *   PAGELLM_CPU_AFFINITY         not 0: the CPU thread pool pins thread i to the i-th CPU
 *                                of the affinity mask (threadpool.c)
 *   PAGELLM_CPU_MATMUL           fp32 (default) | bf16: bf16 weights multiply bf16-rounded
 *                                activations with AVX512-BF16 dot products (cpu_matmul.c)
 *   PAGELLM_CPU_ISA              scalar | avx2 | avx512: the most the CPU kernels may use
 *                                (default: the best this CPU has; for tests and A/B runs)
 *   PAGELLM_Q4_GEMM_MAX_N        a number: int4 products of up to that many rows run the
 *                                int4 tensor-core GEMM, larger ones dequantize + cuBLASLt
 *                                (cuda_matmul.c; for measuring the threshold)
 *   PAGELLM_MOE_GEMV_ENTRIES     a number: moe ops of up to that many (token, choice)
 *                                entries run the experts as GEMVs, larger ones as grouped
 *                                GEMMs (cuda_moe.c; 0: never; for measuring the threshold)
 *   PAGELLM_CUBLASLT_REDUCTION   any: cuBLASLt may pick split-K algorithms that reduce in the
 *                                output type (bf16 partial sums); by default only fp32
 *                                reductions are allowed (cuda_matmul.c; for A/B runs)
 *   PAGELLM_CUDA_PDL             1 / 0: the decode path's kernels are launched with / without
 *                                programmatic dependent launch (kernels/pdl.cuh; default in
 *                                cuda_backend.c, PL_CUDA_PDL_DEFAULT)
 *   PAGELLM_CUDA_FUSE            1 / 0: the CUDA qk_rope_store and norm_add_norm ops run
 *                                their one fused launch / the kernels they stand for
 *                                (default: PL_CUDA_FUSE_DEFAULT)
 * They are read at each call (tests change them between handles); the
 * strings point into the environment (copy them to keep them).
 */
#ifndef PL_UTIL_DEBUG_ENV_H
#define PL_UTIL_DEBUG_ENV_H

#include <stdbool.h>

struct pl_debug_env {
    const char *log_level;           /* NULL: unset */
    bool profile;
    bool cuda_profile;
    const char *test_stall_file;     /* NULL: unset or empty */
    const char *test_fail_step_file; /* NULL: unset or empty */
    bool cpu_weights_mmap;
    bool cpu_affinity;
    const char *cpu_matmul;          /* NULL: unset or empty */
    const char *cpu_isa;             /* NULL: unset or empty */
    int q4_gemm_max_n;               /* -1: unset or not a number >= 0 */
    int moe_gemv_entries;            /* -1: unset or not a number >= 0 */
    bool cublaslt_any_reduction;     /* PAGELLM_CUBLASLT_REDUCTION=any */
    int cuda_pdl;                    /* PAGELLM_CUDA_PDL: 0, 1; -1 unset */
    int cuda_fuse;                   /* PAGELLM_CUDA_FUSE: 0, 1; -1 unset */
};

void pl_debug_env_read(struct pl_debug_env *out);

#endif
