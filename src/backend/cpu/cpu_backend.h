/*
 * cpu_backend.h -- CPU-backend specifics beyond the op table (backend.h).
 *
 * Owns: the knobs and internal entry points shared by the CPU backend's
 * files (cpu_backend.c: memory, elementwise ops, attention; cpu_matmul.c:
 * the weight matmuls). Tests and benchmarks may use the two public knobs;
 * model code never does (it sees only struct pl_backend_ops).
 */
#ifndef PL_BACKEND_CPU_BACKEND_H
#define PL_BACKEND_CPU_BACKEND_H

#include "backend/backend.h"
#include "backend/cpu/threadpool.h"

#include <stdbool.h>

/* Turns the AVX2+FMA kernels on or off (on by default where the CPU has
 * AVX2, FMA and F16C). Returns whether they are in use afterwards. */
bool pl_backend_cpu_set_simd(struct pl_backend *be, bool enable);

/* The number of threads of the backend's pool. */
int pl_backend_cpu_n_threads(const struct pl_backend *be);

/* Whether this CPU can run the AVX2+FMA+F16C kernels. */
bool pl_cpu_has_avx2(void);

/* Internal: the matmul shared by the matmul and logits ops.
 * out[n, w->rows] (row stride ld_out) = x[n, w->cols] @ w^T (+ bias). */
void pl_cpu_matmul(struct pl_threadpool *pool, bool simd, float *out, int ld_out, const float *x,
                   const struct pl_weight *w, const struct pl_weight *bias, int n);

/* Internal: q . k over n floats (SIMD when asked), used by attention. */
float pl_cpu_dot(bool simd, const float *a, const float *b, int n);

#endif
