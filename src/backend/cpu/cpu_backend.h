/*
 * cpu_backend.h -- CPU-backend specifics beyond the op table (backend.h).
 *
 * Owns: the knobs and internal entry points shared by the CPU backend's
 * files (cpu_backend.c: memory, elementwise ops, attention; cpu_matmul.c:
 * the weight matmuls). Tests and benchmarks may use the public knobs; model
 * code never does (it sees only struct pl_backend_ops).
 *
 * Two independent choices decide how a matmul computes:
 *   - the instruction set (enum pl_cpu_isa): scalar, AVX2+FMA+F16C or AVX-512
 *     (F/BW/VL/DQ), the best the CPU has unless capped (PAGELLM_CPU_ISA or
 *     pl_backend_cpu_set_isa). Each sums a dot product in its own fixed order,
 *     so the ISAs agree to fp32 rounding, not bit for bit;
 *   - the matmul mode (enum pl_cpu_matmul_mode): FP32 (the default, the
 *     specification: fp32 products, fp32 accumulation) or BF16, opt-in
 *     (PAGELLM_CPU_MATMUL=bf16): bf16 weights multiply activations rounded
 *     to bf16 with AVX512-BF16 dot products (two products per fp32 lane), as
 *     llama.cpp does for bf16 models. BF16 applies only to bf16 weights and
 *     only where the ISA is AVX-512 and the CPU has AVX512-BF16; other
 *     weights, and other CPUs, keep the FP32 path.
 * Within one ISA and mode every output element is summed in one order
 * whatever the batch, tile or thread split (batch invariance).
 */
#ifndef PL_BACKEND_CPU_BACKEND_H
#define PL_BACKEND_CPU_BACKEND_H

#include "backend/backend.h"
#include "backend/cpu/threadpool.h"

#include <stdbool.h>
#include <stdint.h>

enum pl_cpu_isa {
    PL_CPU_ISA_SCALAR, /* the plain loops: the readable reference */
    PL_CPU_ISA_AVX2,   /* AVX2 + FMA + F16C, 8 lanes */
    PL_CPU_ISA_AVX512, /* AVX-512 F/BW/VL/DQ, 16 lanes */
};

enum pl_cpu_matmul_mode {
    PL_CPU_MATMUL_FP32, /* exact: fp32 products and sums (default) */
    PL_CPU_MATMUL_BF16, /* bf16 weights: bf16-rounded activations, AVX512-BF16 dot products */
};

/* Turns the SIMD kernels on (the best ISA the CPU has) or off (scalar). Returns
 * whether SIMD kernels are in use afterwards. */
bool pl_backend_cpu_set_simd(struct pl_backend *be, bool enable);

/* Caps the kernels' ISA at isa (lowered to what the CPU has); returns the ISA in use. */
enum pl_cpu_isa pl_backend_cpu_set_isa(struct pl_backend *be, enum pl_cpu_isa isa);

/* Selects the matmul mode; returns the mode bf16 weights will actually get (BF16 only
 * where the ISA in use is AVX-512 and the CPU has AVX512-BF16). */
enum pl_cpu_matmul_mode pl_backend_cpu_set_matmul_mode(struct pl_backend *be,
                                                       enum pl_cpu_matmul_mode mode);

/* The ISA the kernels use now, and the mode bf16 weights get now. */
enum pl_cpu_isa pl_backend_cpu_isa(const struct pl_backend *be);
enum pl_cpu_matmul_mode pl_backend_cpu_matmul_mode(const struct pl_backend *be);

/* The number of threads of the backend's pool. */
int pl_backend_cpu_n_threads(const struct pl_backend *be);

/* Whether this CPU (and OS) can run the AVX2+FMA+F16C kernels, the AVX-512 ones, and
 * the AVX512-BF16 dot products. */
bool pl_cpu_has_avx2(void);
bool pl_cpu_has_avx512(void);
bool pl_cpu_has_avx512_bf16(void);

/* The best ISA this CPU has. */
enum pl_cpu_isa pl_cpu_best_isa(void);

/* "scalar", "avx2", "avx512". */
const char *pl_cpu_isa_name(enum pl_cpu_isa isa);

/* Bytes of bf16 activation scratch each pool thread needs for the BF16 mode. */
#define PL_CPU_MM_SCRATCH_BYTES ((size_t)256 * 1024)

/* How pl_cpu_matmul computes (the backend fills one per call from its settings). */
/* Rows of a packed int4 weight (PL_DTYPE_Q4) dequantized at a time: the most rows of a
 * matmul tile. */
#define PL_CPU_Q4_TILE_ROWS 16

struct pl_cpu_mm {
    enum pl_cpu_isa isa;
    bool bf16_dot;      /* bf16 weights take the BF16 mode (isa is AVX-512 and the CPU
                           has AVX512-BF16) */
    uint16_t **scratch; /* [pool threads] PL_CPU_MM_SCRATCH_BYTES each, 64-byte aligned;
                           needed when bf16_dot */
    float **q4_rows;    /* [pool threads] PL_CPU_Q4_TILE_ROWS x q4_cols floats: a tile of a
                           packed int4 weight's rows dequantized (NULL: none; such weights
                           then take a slower path that needs no scratch) */
    int64_t q4_cols;
};

/* Internal: the matmul shared by the matmul and logits ops.
 * out[n, w->rows] (row stride ld_out) = x[n, w->cols] @ w^T (+ bias). A packed int4 weight
 * (PL_DTYPE_Q4, backend.h's layout) is dequantized a tile of rows at a time into mm->q4_rows
 * and multiplied by the fp32 kernels exactly as the same weight dequantized at load would
 * be (the dequantizing reference: the same values, tiles and order, so the same bits); with
 * AVX-512 and at most 8 tokens its codes are expanded in registers instead, to the same
 * bits (cpu_matmul.c). */
void pl_cpu_matmul(struct pl_threadpool *pool, const struct pl_cpu_mm *mm, float *out,
                   int ld_out, const float *x, const struct pl_weight *w,
                   const struct pl_weight *bias, int n);

/* Internal: q . k over n floats with the given ISA's kernel, used by attention. */
float pl_cpu_dot(enum pl_cpu_isa isa, const float *a, const float *b, int n);

/* Internal: the element-wise row kernels (cpu_vec.c), each in the given ISA; one call per
 * row, n elements. The ISAs agree to a few fp32 roundings (silu and gelu_tanh: a
 * polynomial exp, about 1 ulp), and within one ISA an element's result depends only on
 * its row. */
void pl_cpu_vec_axpy(enum pl_cpu_isa isa, float *y, float a, const float *x, int n); /* y += a x */
void pl_cpu_vec_scale(enum pl_cpu_isa isa, float *y, float a, int n);              /* y *= a */
void pl_cpu_vec_add(enum pl_cpu_isa isa, float *y, const float *x, int n);         /* y += x */
/* out = w * (x / sqrt(mean(x^2) + eps)), the sum of squares in double; w: n F32/F16/BF16. */
void pl_cpu_vec_rmsnorm(enum pl_cpu_isa isa, float *out, const float *x,
                        const struct pl_weight *w, int n, float eps);
/* out = silu(gate) * up; out = gelu_tanh(gate) * up. */
void pl_cpu_vec_silu_mul(enum pl_cpu_isa isa, float *out, const float *gate, const float *up,
                         int n);
void pl_cpu_vec_gelu_tanh_mul(enum pl_cpu_isa isa, float *out, const float *gate, const float *up,
                              int n);
/* Rope's rotation of the pairs (x1[i], x2[i]) by (c[i], s[i]):
 * x1' = x1 c - x2 s, x2' = x2 c + x1 s. */
void pl_cpu_vec_rotate(enum pl_cpu_isa isa, float *x1, float *x2, const float *c, const float *s,
                       int n);

#endif
