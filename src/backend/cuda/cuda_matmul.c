/*
 * cuda_matmul.c -- the CUDA backend's weight GEMMs through cuBLASLt.
 *
 * Owns: struct pl_cuda_matmul (the cuBLASLt handle, a preallocated workspace,
 * a plan cache, and the scratch of the fp16-weight path).
 *
 * Layout: row-major out[n, M] = x[n, K] @ W[M, K]^T is, read column-major,
 * D (M x n, ld = ld_out) = op(A) B with A = W stored (K x M, ld K) and
 * transa = T, B = x (K x n, ld K): the "TN" GEMM cuBLASLt runs best. Inputs are
 * bf16 (or fp16), accumulation fp32, output bf16 (or fp32 for logits). A bias
 * goes through CUBLASLT_EPILOGUE_BIAS; if no algorithm takes the epilogue for
 * a shape, a separate add kernel does it.
 *
 * Plans: a plan (descriptors + the heuristic's algorithm) is built once per
 * key (n, M, K, ld_out, types, bias, pointer alignments) and kept in a small
 * open-addressing table, so a steady-state step does no heavy set-up: the
 * only per-call work is setting the bias pointer and cublasLtMatmul.
 *
 * fp16 weights: cuBLASLt has no bf16 x fp16 GEMM, so x is converted to fp16
 * and the product lands in fp32 scratch before the bias + bf16 conversion.
 * That scratch grows on demand (cudaMalloc), which happens only in the first
 * forward of the largest batch; bf16 models never touch it.
 *
 * Small n (decode): bf16 weights with n <= pl_cuk_gemv_max_n() rows of x go to
 * the GEMV kernels (kernels/gemv.cu), which stream each weight once at close
 * to the memory bandwidth where cuBLASLt's small-n tiles do not (docs/cuda.md,
 * "Skinny GEMMs"); shapes they refuse (K % 8, alignment) stay on cuBLASLt. The
 * grouped forms (matmul_group: q, k, v in one launch; gate_up_act: both MLP
 * products and the activation in one launch) use them too, and otherwise fall
 * back to cuBLASLt GEMMs (+ the silu_mul kernel), so every n is served. The
 * gate-up fallback needs one [rows, dim] buffer for the up product: it uses a
 * scratch allocated here at creation and walks the rows in chunks that fit it,
 * so no op allocates (each chunk is still a compute-bound GEMM of >= 1000 rows
 * for Llama-sized dims).
 *
 * Packed int4 weights (PL_DTYPE_Q4, quantized checkpoints): n <= PL_Q4_GEMV_MAX_N rows go
 * to the int4 GEMV (kernels/qgemv.cu: weights dequantized in registers); up to
 * q4_gemm_max_n rows (Q4_GEMM_MAX_N, or PAGELLM_Q4_GEMM_MAX_N) to the int4 tensor-core GEMM
 * (kernels/qgemm.cu: weights read packed, dequantized in registers into mma fragments; it
 * splits K through the cuBLASLt workspace and a small counter array allocated here, so it
 * allocates nothing either); larger n (prefill chunks, where one dequantization is spread
 * over many rows) expand the weight into a bf16 scratch (grown on demand like the fp16
 * path's, to the largest weight) and run the bf16 GEMM. While the stream records a graph,
 * every int4 product takes the GEMV or the GEMM whatever the threshold, so decode graphs of
 * int4 models record up to PL_Q4_SCRATCHLESS_N rows (backend.h).
 *
 * Packed FP8 W8A8 weights (PL_DTYPE_F8W, backend.h's pl_f8w_layout): per chunk of rows of
 * x, kernels/fp8.cu quantizes the chunk to e4m3 with its per-token (or the weight's static)
 * scales into f8_x / f8_sx, then one cuBLASLt FP8 GEMM (e4m3 x e4m3, fp32 accumulation,
 * bf16 D; "TN" as above, which is the layout FP8 requires: A = the weight's codes, k-major
 * with ld K; B = x8, k-major) applies the scales through
 * CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F: the A scale vector has M elements (the
 * weight's per-channel scales), the B scale vector n (the tokens'), and D[i][j] =
 * a_scale[i] b_scale[j] (A B)[i][j]. Where cuBLASLt refuses that mode for a shape, the same
 * GEMM runs with unit scales and kernels/fp8.cu's scale_out applies both vectors (and the
 * bias) to the bf16 product in place. f8_x (F8_X_BYTES) and f8_sx are made with the
 * backend, so FP8 products allocate nothing and may be recorded into decode graphs at any
 * batch size; a chunk holds min(F8_MAX_ROWS, F8_X_BYTES / K) rows (1170 for K = 14336: still
 * a compute-bound GEMM). matmul_group and gate_up_act take FP8 weights through these
 * plain products (each product quantizes x itself: a weight's static input scale lives in
 * device memory, so two weights cannot be assumed to share one).
 */
#include "backend/cuda/cuda_backend.h"

#include "backend/cuda/kernels/gemv.h"
#include "backend/cuda/kernels/qgemm.h"
#include "backend/cuda/kernels/qgemv.h"
#include "backend/cuda/kernels/kernels.h"
#include "util/debug_env.h"

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define WORKSPACE_BYTES ((size_t)32 << 20)
#define N_PLANS 512 /* power of two */
/* The gate-up fallback's buffer for the up product (see the file comment). */
#define GLU_SCRATCH_BYTES ((size_t)32 << 20)
/* Products of at most this many output elements (M x N) allow only fp32 split-K reductions
 * (plan_build). */
#define SMALL_PRODUCT ((int64_t)1 << 19)
/* The FP8 path's e4m3 activations and the rows a chunk may hold (see the file comment). */
#define F8_X_BYTES ((size_t)16 << 20)
#define F8_MAX_ROWS 8192

/* plan_key.scale_mode: how an FP8 GEMM applies its scales. */
enum scale_mode {
    SCALE_NONE = 0, /* not an FP8 GEMM */
    SCALE_OUTER,    /* CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F on A and B */
    SCALE_UNIT,     /* no scales: scale_out applies them afterwards */
};
/* int4 products of up to this many rows run the int4 GEMM, larger ones dequantize +
 * cuBLASLt. Measured on the H100 (test_cuda_quant --bench, 2026-12-07, Llama-3-8B shapes,
 * group 128): the GEMM takes 44.5 / 60.7 / 97.4 / 156.4 us at n = 16 / 64 / 128 / 256 on
 * gate/up (dequantize + cuBLASLt: 169 / 167 / 168 / 178), 34.8 against 52.2 on q/o at 128
 * but 57.0 against 55.9 at 256, and loses everywhere above 256. Its disagreements with the
 * dequantize path were that path's (its rounding before the bias kernel, and act-order
 * shapes where it is off the exact bf16-weight sum while the GEMM is on it).
 * PAGELLM_Q4_GEMM_MAX_N moves it. */
#define Q4_GEMM_MAX_N 128
/* The int4 GEMM's split-K tile counters (one per output tile of a split launch; a launch
 * splits only when its tiles are fewer than the GPU holds, far fewer than this). */
#define Q4_GEMM_COUNTERS 4096

_Static_assert(Q4_GEMM_MAX_N >= PL_Q4_SCRATCHLESS_N,
               "eager int4 products up to the graphs' size take the same kernels as recorded ones");

struct plan_key {
    int64_t n, m, k, ld_out;
    int a_type, b_type, d_type; /* cudaDataType */
    int bias_type;              /* cudaDataType of the epilogue bias, -1 = none */
    int align_a, align_b, align_d;
    int scale_mode;             /* enum scale_mode */
};

struct plan {
    bool used;
    bool has_algo;      /* false: cuBLASLt has no algorithm for the key (remembered, so a
                           refused shape is not asked about again at every call) */
    cublasStatus_t why; /* ... and why */
    bool epilogue_bias; /* the plan applies the bias itself */
    struct plan_key key;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d;
    cublasLtMatmulAlgo_t algo;
};

struct pl_cuda_matmul {
    cublasLtHandle_t lt;
    cudaStream_t stream;
    void *workspace;
    struct plan plans[N_PLANS];
    int next_evict;
    void *x16;       /* fp16 copy of x (fp16-weight path) */
    size_t x16_bytes;
    float *y32;      /* fp32 product before the bf16 conversion (fp16-weight path) */
    size_t y32_bytes;
    void *glu_up;    /* GLU_SCRATCH_BYTES: the up product of the gate-up fallback */
    void *q4_deq;    /* bf16 copy of a packed int4 weight (n > q4_gemm_max_n) */
    size_t q4_deq_bytes;
    uint8_t *f8_x;   /* F8_X_BYTES: a chunk of x in e4m3 (FP8 weights) */
    float *f8_sx;    /* [F8_MAX_ROWS]: the chunk's per-token scales */
    bool f8_force_epilogue; /* test knob: every FP8 product takes the epilogue path */
    long f8_epilogues;      /* FP8 chunks that took it */
    int32_t *q4_counters; /* Q4_GEMM_COUNTERS, zero between launches (the int4 GEMM) */
    int n_sms;
    int q4_gemm_max_n;    /* int4 GEMM up to this n, dequantize + GEMM above */
    int q4_splits;        /* the int4 GEMM's K slices, 0: chosen per shape (tests) */
    uint32_t reduction_mask; /* cuBLASLt split-K reductions allowed (see plan_build) */
};

void pl_cuda_matmul_set_fp8_epilogue(struct pl_cuda_matmul *mm, bool on)
{
    mm->f8_force_epilogue = on;
}

long pl_cuda_matmul_fp8_epilogue_count(const struct pl_cuda_matmul *mm)
{
    return mm->f8_epilogues;
}

pl_status pl_cuda_matmul_new(void *stream, struct pl_cuda_matmul **out, struct pl_err *err)
{
    struct pl_cuda_matmul *mm = calloc(1, sizeof(*mm));
    if (!mm)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cuda matmul: out of memory");
    mm->stream = (cudaStream_t)stream;
    cublasStatus_t cs = cublasLtCreate(&mm->lt);
    if (cs != CUBLAS_STATUS_SUCCESS) {
        free(mm);
        return pl_err_set(err, PL_STATUS_INTERNAL, "cuda matmul: cublasLtCreate: %s",
                          cublasLtGetStatusString(cs));
    }
    cudaError_t ce = cudaMalloc(&mm->workspace, WORKSPACE_BYTES);
    if (ce != cudaSuccess) {
        cublasLtDestroy(mm->lt);
        free(mm);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cuda matmul: workspace: %s",
                          cudaGetErrorString(ce));
    }
    ce = cudaMalloc(&mm->glu_up, GLU_SCRATCH_BYTES);
    if (ce == cudaSuccess)
        ce = cudaMalloc((void **)&mm->f8_x, F8_X_BYTES);
    if (ce == cudaSuccess)
        ce = cudaMalloc((void **)&mm->f8_sx, sizeof(float) * F8_MAX_ROWS);
    if (ce != cudaSuccess) {
        cudaGetLastError();
        pl_cuda_matmul_free(mm);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cuda matmul: scratch: %s",
                          cudaGetErrorString(ce));
    }
    int dev = 0;
    ce = cudaMalloc((void **)&mm->q4_counters, sizeof(int32_t) * Q4_GEMM_COUNTERS);
    if (ce == cudaSuccess)
        ce = cudaMemsetAsync(mm->q4_counters, 0, sizeof(int32_t) * Q4_GEMM_COUNTERS, mm->stream);
    if (ce == cudaSuccess)
        ce = cudaGetDevice(&dev);
    if (ce == cudaSuccess)
        ce = cudaDeviceGetAttribute(&mm->n_sms, cudaDevAttrMultiProcessorCount, dev);
    if (ce == cudaSuccess)
        ce = (cudaError_t)pl_cuk_q4_gemm_init();
    if (ce != cudaSuccess) {
        cudaFree(mm->q4_counters);
        cudaFree(mm->glu_up);
        cudaFree(mm->workspace);
        cublasLtDestroy(mm->lt);
        free(mm);
        return pl_err_set(err, PL_STATUS_INTERNAL, "cuda matmul: int4 GEMM set-up: %s",
                          cudaGetErrorString(ce));
    }
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    mm->q4_gemm_max_n = dbg.q4_gemm_max_n >= 0 ? dbg.q4_gemm_max_n : Q4_GEMM_MAX_N;
    mm->reduction_mask = dbg.cublaslt_any_reduction ? (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK
                                                    : (uint32_t)CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    if (dbg.moe_gemv_entries >= 0) /* (the moe op's route is process-wide: a debug knob) */
        pl_cuk_moe_gemv_force(dbg.moe_gemv_entries, 0);
    *out = mm;
    return PL_STATUS_OK;
}

static void plan_destroy(struct plan *p)
{
    if (!p->used)
        return;
    if (p->desc)
        cublasLtMatmulDescDestroy(p->desc);
    if (p->a)
        cublasLtMatrixLayoutDestroy(p->a);
    if (p->b)
        cublasLtMatrixLayoutDestroy(p->b);
    if (p->d)
        cublasLtMatrixLayoutDestroy(p->d);
    memset(p, 0, sizeof(*p));
}

void pl_cuda_matmul_free(struct pl_cuda_matmul *mm)
{
    if (!mm)
        return;
    for (int i = 0; i < N_PLANS; i++)
        plan_destroy(&mm->plans[i]);
    cudaFree(mm->workspace);
    cudaFree(mm->x16);
    cudaFree(mm->y32);
    cudaFree(mm->glu_up);
    cudaFree(mm->q4_deq);
    cudaFree(mm->f8_x);
    cudaFree(mm->f8_sx);
    cudaFree(mm->q4_counters);
    cublasLtDestroy(mm->lt);
    free(mm);
}

/* Largest power of two (<= 256) dividing the address: what cuBLASLt may assume. */
static int alignment_of(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    int al = 256;
    while (al > 1 && (a & (uintptr_t)(al - 1)))
        al >>= 1;
    return al;
}

static uint64_t key_hash(const struct plan_key *k)
{
    const unsigned char *b = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < sizeof(*k); i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static cudaDataType cuda_type(enum pl_dtype t)
{
    return t == PL_DTYPE_F16    ? CUDA_R_16F
           : t == PL_DTYPE_BF16 ? CUDA_R_16BF
           : t == PL_DTYPE_F8W  ? CUDA_R_8F_E4M3
                                : CUDA_R_32F;
}

/* Builds descriptors and asks the heuristic for one algorithm. Returns false
 * (with the reason in *why) when cuBLASLt refuses the shape outright. */
static bool plan_build(struct pl_cuda_matmul *mm, struct plan *p, const struct plan_key *k,
                       cublasStatus_t *why)
{
    memset(p, 0, sizeof(*p));
    p->used = true;
    p->key = *k;
    cublasStatus_t s = cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasOperation_t opT = CUBLAS_OP_T, opN = CUBLAS_OP_N;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opT, sizeof(opT));
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opN, sizeof(opN));
    if (s == CUBLAS_STATUS_SUCCESS && k->scale_mode == SCALE_OUTER) {
        /* per-row scales of A (M: the weight's channels) and of B (n: the tokens) */
        const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
        s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode,
                                           sizeof(mode));
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode,
                                               sizeof(mode));
    }
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&p->a, (cudaDataType)k->a_type, (uint64_t)k->k,
                                       (uint64_t)k->m, k->k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&p->b, (cudaDataType)k->b_type, (uint64_t)k->k,
                                       (uint64_t)k->n, k->k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&p->d, (cudaDataType)k->d_type, (uint64_t)k->m,
                                       (uint64_t)k->n, k->ld_out);
    cublasLtMatmulPreference_t pref = NULL;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceCreate(&pref);
    uint64_t ws = WORKSPACE_BYTES;
    uint32_t al_a = (uint32_t)k->align_a, al_b = (uint32_t)k->align_b,
             al_d = (uint32_t)k->align_d;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                 &ws, sizeof(ws));
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                 &al_a, sizeof(al_a));
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                 &al_b, sizeof(al_b));
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                 &al_d, sizeof(al_d));
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                 &al_d, sizeof(al_d));
    /* Products of small M x N (where the heuristic splits K): split-K algorithms only where the
     * partial sums are reduced in fp32 (the compute type). A reduction in the output type (in
     * place or in a bf16 buffer) rounds every partial sum to bf16, which on small products
     * with cancelling terms was 2% off the exact sum (test_cuda_quant's act-order shapes).
     * Larger products (prefill, large decode batches) keep cuBLASLt's full choice. */
    const uint32_t red_mask = (int64_t)k->m * (int64_t)k->n <= SMALL_PRODUCT
                                  ? mm->reduction_mask
                                  : (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                 &red_mask, sizeof(red_mask));
    cublasLtMatmulHeuristicResult_t res;
    int n_res = 0;
    if (s == CUBLAS_STATUS_SUCCESS && k->bias_type >= 0) {
        cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        int32_t bt = k->bias_type;
        s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                           sizeof(epi));
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bt,
                                               sizeof(bt));
        if (s == CUBLAS_STATUS_SUCCESS &&
            cublasLtMatmulAlgoGetHeuristic(mm->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res,
                                           &n_res) == CUBLAS_STATUS_SUCCESS &&
            n_res > 0) {
            p->epilogue_bias = true;
        } else if (s == CUBLAS_STATUS_SUCCESS) { /* no algorithm with the epilogue: plain GEMM */
            epi = CUBLASLT_EPILOGUE_DEFAULT;
            s = cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                               sizeof(epi));
            n_res = 0;
        }
    }
    if (s == CUBLAS_STATUS_SUCCESS && n_res == 0)
        s = cublasLtMatmulAlgoGetHeuristic(mm->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &res,
                                           &n_res);
    if (s == CUBLAS_STATUS_SUCCESS && n_res == 0 &&
        red_mask != (uint32_t)CUBLASLT_REDUCTION_SCHEME_MASK) {
        /* no algorithm with fp32 reductions only: any (a shape is never refused for it) */
        const uint32_t any = CUBLASLT_REDUCTION_SCHEME_MASK;
        s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                 &any, sizeof(any));
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulAlgoGetHeuristic(mm->lt, p->desc, p->a, p->b, p->d, p->d, pref, 1,
                                               &res, &n_res);
    }
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_SUCCESS && n_res == 0)
        s = CUBLAS_STATUS_NOT_SUPPORTED;
    if (s != CUBLAS_STATUS_SUCCESS) {
        *why = s;
        plan_destroy(p);
        return false;
    }
    p->algo = res.algo;
    p->has_algo = true;
    return true;
}

/* Builds the plan of key k into p; a refused key stays in p as used without an algorithm
 * (NULL is returned then, and on every later lookup of the key). */
static struct plan *plan_fill(struct pl_cuda_matmul *mm, struct plan *p, const struct plan_key *k,
                              cublasStatus_t *why)
{
    if (plan_build(mm, p, k, why))
        return p;
    memset(p, 0, sizeof(*p));
    p->used = true;
    p->key = *k;
    p->why = *why;
    return NULL;
}

static struct plan *plan_get(struct pl_cuda_matmul *mm, const struct plan_key *k,
                             cublasStatus_t *why)
{
    uint64_t h = key_hash(k);
    for (int probe = 0; probe < 8; probe++) {
        struct plan *p = &mm->plans[(h + (uint64_t)probe) & (N_PLANS - 1)];
        if (!p->used)
            return plan_fill(mm, p, k, why);
        if (!memcmp(&p->key, k, sizeof(*k))) {
            *why = p->why;
            return p->has_algo ? p : NULL;
        }
    }
    /* the probe window is full: replace one of its entries (round-robin) */
    struct plan *victim = &mm->plans[(h + (uint64_t)(mm->next_evict++ & 7)) & (N_PLANS - 1)];
    plan_destroy(victim);
    return plan_fill(mm, victim, k, why);
}

/* Grows a scratch buffer (fp16 path only; see the file comment). */
static bool scratch(void **buf, size_t *have, size_t need)
{
    if (*have >= need)
        return true;
    cudaFree(*buf);
    *buf = NULL;
    *have = 0;
    if (cudaMalloc(buf, need) != cudaSuccess)
        return false;
    *have = need;
    return true;
}

/* One product D = op(A) B (+ bias): A the weight [m, k] (a_type), B x [n, k] (b_type), D out
 * [n, m] with row stride ld_out (d_type). FP8 (scale_mode SCALE_OUTER): a_scale [m] and
 * b_scale [n] are the outer-vector scales. quiet: a refused key records no failure (the
 * caller has another way). */
struct gemm_args {
    const void *a;
    cudaDataType a_type;
    int64_t m, k;
    const void *b;
    cudaDataType b_type;
    void *out;
    int64_t ld_out;
    cudaDataType d_type;
    const struct pl_weight *bias;
    int n;
    enum scale_mode scale_mode;
    const float *a_scale, *b_scale;
    bool quiet;
};

/* Runs g; false on failure, with *refused set when cuBLASLt refused the key (no algorithm,
 * or, when g->quiet, cublasLtMatmul answering NOT_SUPPORTED / INVALID_VALUE: nothing ran).
 * Every failure is recorded (pl_cuda_fail) except a refusal under g->quiet. */
static bool gemm_run(struct pl_backend *be, struct pl_cuda_matmul *mm, const struct gemm_args *g,
                     bool *refused)
{
    struct plan_key k;
    memset(&k, 0, sizeof(k)); /* padding bytes take part in hashing and memcmp */
    k.n = g->n;
    k.m = g->m;
    k.k = g->k;
    k.ld_out = g->ld_out;
    k.a_type = g->a_type;
    k.b_type = g->b_type;
    k.d_type = g->d_type;
    /* the epilogue adds a bias of D's type; other bias types go through the add kernel
     * (cuBLASLt 13.0 refused an fp32 bias on a bf16 D with CUBLAS_STATUS_INVALID_VALUE when
     * setting the descriptor, seen on the H100, which failed the whole plan) */
    const struct pl_weight *bias = g->bias;
    bool epi_ok = bias && cuda_type(bias->dtype) == g->d_type;
    k.bias_type = epi_ok ? (int)cuda_type(bias->dtype) : -1;
    k.align_a = alignment_of(g->a);
    k.align_b = alignment_of(g->b);
    k.align_d = alignment_of(g->out);
    k.scale_mode = g->scale_mode;
    cublasStatus_t why = CUBLAS_STATUS_SUCCESS;
    struct plan *p = plan_get(mm, &k, &why);
    *refused = p == NULL;
    if (!p) {
        if (!g->quiet)
            pl_cuda_fail(be, "cuBLASLt has no algorithm for [%d x %lld] @ [%lld x %lld]^T%s: %s",
                         g->n, (long long)k.k, (long long)k.m, (long long)k.k,
                         g->scale_mode != SCALE_NONE ? " (fp8)" : "",
                         cublasLtGetStatusString(why));
        return false;
    }
    if (p->epilogue_bias) {
        const void *bp = bias->data;
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp,
                                       sizeof(bp));
    }
    if (g->scale_mode == SCALE_OUTER) { /* the plan is shared by every weight of this shape */
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g->a_scale,
                                       sizeof(g->a_scale));
        cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g->b_scale,
                                       sizeof(g->b_scale));
    }
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t s = cublasLtMatmul(mm->lt, p->desc, &alpha, g->a, p->a, g->b, p->b, &beta,
                                      g->out, p->d, g->out, p->d, &p->algo, mm->workspace,
                                      WORKSPACE_BYTES, mm->stream);
    if (s != CUBLAS_STATUS_SUCCESS && g->quiet &&
        (s == CUBLAS_STATUS_NOT_SUPPORTED || s == CUBLAS_STATUS_INVALID_VALUE)) {
        /* refused when called (nothing was launched): remembered as a refused key */
        plan_destroy(p);
        p->used = true;
        p->key = k;
        p->why = s;
        *refused = true;
        return false;
    }
    if (s != CUBLAS_STATUS_SUCCESS) {
        pl_cuda_fail(be, "cublasLtMatmul [%d x %lld] @ [%lld x %lld]^T%s: %s", g->n,
                     (long long)k.k, (long long)k.m, (long long)k.k,
                     g->scale_mode != SCALE_NONE ? " (fp8)" : "", cublasLtGetStatusString(s));
        return false;
    }
    if (bias && !p->epilogue_bias) {
        int e = pl_cuk_add_bias((pl_cuda_stream)mm->stream, g->out, (int)g->ld_out, bias->data,
                                (int)bias->dtype, g->n, (int)g->m);
        if (e) {
            pl_cuda_fail(be, "bias add: %s", cudaGetErrorString((cudaError_t)e));
            return false;
        }
    }
    return true;
}

static bool gemm(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out, int64_t ld_out,
                 cudaDataType d_type, const void *x, cudaDataType b_type,
                 const struct pl_weight *w, const struct pl_weight *bias, int n)
{
    const struct gemm_args g = {.a = w->data, .a_type = cuda_type(w->dtype), .m = w->rows,
                                .k = w->cols, .b = x, .b_type = b_type, .out = out,
                                .ld_out = ld_out, .d_type = d_type, .bias = bias, .n = n};
    bool refused;
    return gemm_run(be, mm, &g, &refused);
}

/* The FP8 W8A8 product (see the file comment): out (bf16 [n, w.rows], row stride ld_out) =
 * x (bf16 [n, w.cols]) @ w^T (+ bias), w PL_DTYPE_F8W. */
static bool f8_matmul(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out, int ld_out,
                      const void *x, const struct pl_weight *w, const struct pl_weight *bias,
                      int n)
{
    const struct pl_f8w_layout lay = pl_f8w_layout_of(w->rows, w->cols);
    const char *base = (const char *)w->data;
    const float *sw = (const float *)(base + lay.scale_off);
    const float *static_scale = (const float *)(base + lay.head_off);
    const int64_t K = w->cols, M = w->rows;
    if (!pl_f8w_shape_ok(M, K)) {
        pl_cuda_fail(be, "matmul: an fp8 weight of [%lld, %lld] (rows and columns must be "
                     "multiples of 16)", (long long)M, (long long)K);
        return false;
    }
    int64_t chunk = (int64_t)(F8_X_BYTES / (size_t)K);
    if (chunk > F8_MAX_ROWS)
        chunk = F8_MAX_ROWS;
    pl_cuda_stream st = (pl_cuda_stream)mm->stream;
    for (int r0 = 0; r0 < n; r0 += (int)chunk) {
        const int c = n - r0 < chunk ? n - r0 : (int)chunk;
        const char *xr = (const char *)x + (size_t)r0 * (size_t)K * 2;
        char *orow = (char *)out + (size_t)r0 * (size_t)ld_out * 2;
        int e = pl_cuk_f8_quant_rows(st, mm->f8_x, mm->f8_sx, xr, c, K, static_scale);
        if (e) {
            pl_cuda_fail(be, "fp8 activation quantization: %s", cudaGetErrorString((cudaError_t)e));
            return false;
        }
        struct gemm_args g = {.a = base, .a_type = CUDA_R_8F_E4M3, .m = M, .k = K,
                              .b = mm->f8_x, .b_type = CUDA_R_8F_E4M3, .out = orow,
                              .ld_out = ld_out, .d_type = CUDA_R_16BF, .bias = bias, .n = c,
                              .scale_mode = SCALE_OUTER, .a_scale = sw, .b_scale = mm->f8_sx,
                              .quiet = true};
        bool refused = true;
        if (!mm->f8_force_epilogue && gemm_run(be, mm, &g, &refused))
            continue;
        if (!refused)
            return false;
        mm->f8_epilogues++;
        /* no outer-vector algorithm for this shape: unit scales, then the epilogue kernel
         * (which adds the bias too) */
        g.scale_mode = SCALE_UNIT;
        g.bias = NULL;
        g.quiet = false;
        g.a_scale = g.b_scale = NULL;
        if (!gemm_run(be, mm, &g, &refused))
            return false;
        e = pl_cuk_f8_scale_out(st, orow, ld_out, mm->f8_sx, sw, bias ? bias->data : NULL,
                                bias ? (int)bias->dtype : 0, c, (int)M);
        if (e) {
            pl_cuda_fail(be, "fp8 scale epilogue: %s", cudaGetErrorString((cudaError_t)e));
            return false;
        }
    }
    return true;
}

/* Whether the GEMV kernels serve this product (bf16 weights, small n, shapes they take). */
static bool gemv_takes(const void *x, const struct pl_weight *w, int n)
{
    return w->dtype == PL_DTYPE_BF16 && n <= pl_cuk_gemv_max_n() &&
           pl_cuk_gemv_ok(x, w->data, w->cols, n);
}

static bool gemv_status(struct pl_backend *be, const char *what, int e)
{
    if (e)
        pl_cuda_fail(be, "cuda %s: %s", what, cudaGetErrorString((cudaError_t)e));
    return e == 0;
}

void pl_cuda_matmul_set_q4_gemm(struct pl_cuda_matmul *mm, int max_n, int splits)
{
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    mm->q4_gemm_max_n = max_n >= 0 ? max_n : dbg.q4_gemm_max_n >= 0 ? dbg.q4_gemm_max_n
                                                                    : Q4_GEMM_MAX_N;
    mm->q4_splits = splits > 0 ? splits : 0;
}

/* out = x @ dequant(w)^T (+ bias) for packed int4 weights (see the file comment). */
static bool q4_matmul(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out, int ld_out,
                      const void *x, const struct pl_weight *w, const struct pl_weight *bias,
                      int n)
{
    pl_cuda_stream st = (pl_cuda_stream)mm->stream;
    const void *bp = bias ? bias->data : NULL;
    const int bt = bias ? (int)bias->dtype : 0;
    if (pl_cuk_q4_ok(x, w->cols, n))
        return gemv_status(be, "int4 gemv", pl_cuk_q4_gemv(st, w->data, w->rows, w->cols, x, n,
                                                          bp, bt, out, ld_out));
    if (pl_cuk_q4_gemm_ok(w->data, x, w->cols, n) &&
        (n <= mm->q4_gemm_max_n || pl_cuda_capturing(be))) {
        const struct pl_cuk_q4_gemm_ws ws = {(float *)mm->workspace, WORKSPACE_BYTES / 4,
                                             mm->q4_counters, Q4_GEMM_COUNTERS, mm->n_sms,
                                             mm->q4_splits};
        return gemv_status(be, "int4 gemm", pl_cuk_q4_gemm(st, w->data, w->rows, w->cols, x, n,
                                                          bp, bt, out, ld_out, &ws));
    }
    if (pl_cuda_capturing(be)) {
        pl_cuda_fail(be, "matmul: an int4 product of %d rows with an unaligned input cannot be "
                         "recorded into a graph", n);
        return false;
    }
    if (!scratch(&mm->q4_deq, &mm->q4_deq_bytes, (size_t)w->rows * (size_t)w->cols * 2)) {
        pl_cuda_fail(be, "matmul: cannot allocate the int4 dequantization scratch");
        return false;
    }
    if (!gemv_status(be, "int4 dequant",
                     pl_cuk_q4_dequant(st, w->data, w->rows, w->cols, mm->q4_deq)))
        return false;
    const struct pl_weight d = {mm->q4_deq, PL_DTYPE_BF16, w->rows, w->cols};
    return gemm(be, mm, out, ld_out, CUDA_R_16BF, x, CUDA_R_16BF, &d, bias, n);
}

bool pl_cuda_matmul_run(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out, int ld_out,
                        bool out_f32, const void *x, const struct pl_weight *w,
                        const struct pl_weight *bias, int n)
{
    if (n <= 0)
        return true;
    if (w->dtype == PL_DTYPE_F8W) {
        if (out_f32) {
            pl_cuda_fail(be, "matmul: an fp32 product of fp8 weights is not supported");
            return false;
        }
        return f8_matmul(be, mm, out, ld_out, x, w, bias, n);
    }
    if (w->dtype == PL_DTYPE_Q4) {
        if (out_f32) {
            pl_cuda_fail(be, "matmul: an fp32 product of int4 weights is not supported");
            return false;
        }
        return q4_matmul(be, mm, out, ld_out, x, w, bias, n);
    }
    if (gemv_takes(x, w, n)) {
        struct pl_gemv_mat g = {w->data, out_f32 ? NULL : bias ? bias->data : NULL,
                                bias ? (int)bias->dtype : 0, out, w->rows, ld_out};
        return gemv_status(be, "gemv", pl_cuk_gemv((pl_cuda_stream)mm->stream, &g, 1, x, w->cols,
                                                   n, out_f32));
    }
    if (w->dtype == PL_DTYPE_BF16)
        return gemm(be, mm, out, ld_out, out_f32 ? CUDA_R_32F : CUDA_R_16BF, x, CUDA_R_16BF, w,
                    out_f32 ? NULL : bias, n);
    if (w->dtype != PL_DTYPE_F16) {
        pl_cuda_fail(be, "matmul: weights of dtype %s are not supported", pl_dtype_name(w->dtype));
        return false;
    }
    /* fp16 weights: x -> fp16, product in fp32, then bias and bf16 */
    pl_cuda_stream st = (pl_cuda_stream)mm->stream;
    if (!scratch(&mm->x16, &mm->x16_bytes, (size_t)n * (size_t)w->cols * 2)) {
        pl_cuda_fail(be, "matmul: cannot allocate fp16 scratch");
        return false;
    }
    int e = pl_cuk_bf16_to_f16(st, mm->x16, x, (int64_t)n * w->cols);
    if (e) {
        pl_cuda_fail(be, "bf16 -> fp16: %s", cudaGetErrorString((cudaError_t)e));
        return false;
    }
    if (out_f32)
        return gemm(be, mm, out, ld_out, CUDA_R_32F, mm->x16, CUDA_R_16F, w, NULL, n);
    if (!scratch((void **)&mm->y32, &mm->y32_bytes, (size_t)n * (size_t)w->rows * 4)) {
        pl_cuda_fail(be, "matmul: cannot allocate fp32 scratch");
        return false;
    }
    if (!gemm(be, mm, mm->y32, w->rows, CUDA_R_32F, mm->x16, CUDA_R_16F, w, NULL, n))
        return false;
    e = pl_cuk_f32_to_bf16_bias(st, out, ld_out, mm->y32, bias ? bias->data : NULL,
                                bias ? (int)bias->dtype : 0, n, (int)w->rows);
    if (e) {
        pl_cuda_fail(be, "fp32 -> bf16: %s", cudaGetErrorString((cudaError_t)e));
        return false;
    }
    return true;
}

bool pl_cuda_matmul_run_f32(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out,
                            int ld_out, const void *x, const struct pl_weight *w,
                            const struct pl_weight *bias, int n)
{
    if (n <= 0)
        return true;
    if (w->dtype != PL_DTYPE_F32 || (bias && bias->dtype != PL_DTYPE_F32)) {
        pl_cuda_fail(be, "matmul (float32 mode): weights of dtype %s (the mode needs float32)",
                     pl_dtype_name(w->dtype));
        return false;
    }
    return gemm(be, mm, out, ld_out, CUDA_R_32F, x, CUDA_R_32F, w, bias, n);
}

bool pl_cuda_matmul_group_run(struct pl_backend *be, struct pl_cuda_matmul *mm, int n_mats,
                              void *outs[], const int ld_outs[], const void *x,
                              const struct pl_weight *ws[], const struct pl_weight *biases[],
                              int n)
{
    if (n <= 0)
        return true;
    bool fused = n_mats >= 1 && n_mats <= PL_GEMV_MAX_MATS;
    for (int i = 0; fused && i < n_mats; i++)
        fused = gemv_takes(x, ws[i], n) && ws[i]->cols == ws[0]->cols;
    if (fused) {
        struct pl_gemv_mat g[PL_GEMV_MAX_MATS];
        for (int i = 0; i < n_mats; i++) {
            const struct pl_weight *b = biases ? biases[i] : NULL;
            g[i] = (struct pl_gemv_mat){ws[i]->data, b ? b->data : NULL, b ? (int)b->dtype : 0,
                                        outs[i], ws[i]->rows, ld_outs[i]};
        }
        return gemv_status(be, "gemv (group)", pl_cuk_gemv((pl_cuda_stream)mm->stream, g, n_mats,
                                                           x, ws[0]->cols, n, 0));
    }
    for (int i = 0; i < n_mats; i++)
        if (!pl_cuda_matmul_run(be, mm, outs[i], ld_outs[i], false, x, ws[i],
                                biases ? biases[i] : NULL, n))
            return false;
    return true;
}

bool pl_cuda_gate_up_act_run(struct pl_backend *be, struct pl_cuda_matmul *mm, void *out,
                             const void *x, const struct pl_weight *wg,
                             const struct pl_weight *wu, const struct pl_weight *bg,
                             const struct pl_weight *bu, int n, int dim, bool gelu_tanh)
{
    if (n <= 0)
        return true;
    pl_cuda_stream st = (pl_cuda_stream)mm->stream;
    if (gemv_takes(x, wg, n) && gemv_takes(x, wu, n) && wg->cols == wu->cols &&
        wg->rows == dim && wu->rows == dim) {
        struct pl_gemv_mat g = {wg->data, bg ? bg->data : NULL, bg ? (int)bg->dtype : 0, NULL,
                                wg->rows, dim};
        struct pl_gemv_mat u = {wu->data, bu ? bu->data : NULL, bu ? (int)bu->dtype : 0, NULL,
                                wu->rows, dim};
        return gemv_status(be, "gemv (gate-up-act)",
                           pl_cuk_gemv_gate_up_act(st, out, dim, &g, &u, x, wg->cols, n,
                                                   gelu_tanh));
    }
    /* gate straight into out, up into the scratch a chunk of rows at a time */
    const int64_t chunk = (int64_t)(GLU_SCRATCH_BYTES / ((size_t)dim * 2));
    if (chunk < 1) {
        pl_cuda_fail(be, "cuda gate_up_act: intermediate size %d exceeds the scratch", dim);
        return false;
    }
    if (!pl_cuda_matmul_run(be, mm, out, dim, false, x, wg, bg, n))
        return false;
    for (int r0 = 0; r0 < n; r0 += (int)chunk) {
        const int c = n - r0 < chunk ? n - r0 : (int)chunk;
        const char *xr = (const char *)x + (size_t)r0 * (size_t)wu->cols * 2;
        char *orow = (char *)out + (size_t)r0 * (size_t)dim * 2;
        if (!pl_cuda_matmul_run(be, mm, mm->glu_up, dim, false, xr, wu, bu, c))
            return false;
        const int e = gelu_tanh ? pl_cuk_gelu_tanh_mul(st, orow, orow, mm->glu_up, (int64_t)c * dim)
                                : pl_cuk_silu_mul(st, orow, orow, mm->glu_up, (int64_t)c * dim);
        if (!gemv_status(be, gelu_tanh ? "gelu_tanh_mul" : "silu_mul", e))
            return false;
    }
    return true;
}
