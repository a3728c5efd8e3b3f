/*
 * threadpool.h -- a persistent worker pool for the CPU backend's data-parallel ops.
 *
 * Owns: struct pl_threadpool, n_threads - 1 worker threads created once at
 * start-up (the calling thread is worker 0), so an op costs a wake-up and a
 * join, never a thread creation. run() executes fn(ctx, ith, nth) for every
 * ith in [0, nth) and returns when all have finished; the split of work over
 * ith is the op's business (usually contiguous ranges of output rows).
 * Invariants: one run() at a time (the model runner owns the backend from
 * one thread); runs never nest. Workers spin briefly after a job, because
 * ops come back-to-back within a forward pass, then sleep on a condition
 * variable so an idle engine uses no CPU.
 */
#ifndef PL_BACKEND_CPU_THREADPOOL_H
#define PL_BACKEND_CPU_THREADPOOL_H

#include "util/err.h"

typedef void (*pl_threadpool_fn)(void *ctx, int ith, int nth);

struct pl_threadpool;

/* n_threads >= 1 (the caller counts as one). */
pl_status pl_threadpool_new(int n_threads, struct pl_threadpool **out, struct pl_err *err);
void pl_threadpool_free(struct pl_threadpool *tp);

int pl_threadpool_size(const struct pl_threadpool *tp);

/* Runs fn on every thread of the pool (the caller included) and waits. */
void pl_threadpool_run(struct pl_threadpool *tp, pl_threadpool_fn fn, void *ctx);

/* The number of online CPUs (at least 1). */
int pl_cpu_count(void);

#endif
