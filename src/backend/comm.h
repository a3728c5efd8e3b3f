/*
 * comm.h -- the communicator of tensor parallelism: collectives among the ranks
 * of one process, one thread per rank (docs/parallel.md says why).
 *
 * Owns: struct pl_comm_group (N ranks created together) and struct pl_comm (one
 * rank's handle), the table of implementations (comm.c: "cpu" -> the in-process
 * one of comm_cpu.c, "cuda" -> NCCL in cuda/comm_nccl.c, loaded at run time).
 * A rank's collectives take that rank's backend: the buffers are its backend
 * memory, and on CUDA the collective is enqueued on the backend's stream (so it
 * runs in order with the ops around it and can be recorded into a CUDA graph).
 *
 * Errors are sticky, like a backend's: all_reduce is called from inside a
 * forward (which cannot fail midway), so it records the first failure of its
 * rank, and the caller asks pl_comm_error after the forward. A group that is
 * aborted (pl_comm_group_abort: a rank failed, or one did not arrive before the
 * timeout) fails every pending and later collective at once on every rank:
 * a failing rank takes the others down with it, never leaves them waiting.
 *
 * Determinism: the CPU implementation sums in rank order (x0 + x1 + ... in
 * fp32) and gives every rank the same bits; NCCL sums in its own order (the
 * same on every rank for one call), as vLLM's all-reduce does.
 */
#ifndef PL_BACKEND_COMM_H
#define PL_BACKEND_COMM_H

#include "backend/backend.h"

#include <stdbool.h>
#include <stddef.h>

struct pl_comm_group;
struct pl_comm;

struct pl_comm_params {
    int n_ranks;        /* >= 1 */
    const int *devices; /* [n_ranks] accelerator index of each rank (NULL: rank r -> r) */
    double timeout_s;   /* a collective waiting longer for the other ranks aborts the group
                           (0: PL_COMM_DEFAULT_TIMEOUT_S); CPU: checked in the collective,
                           NCCL: by the caller's step deadline (pl_comm_group_abort) */
};

#define PL_COMM_DEFAULT_TIMEOUT_S 600.0

/* Creates the communicators of the backend named `backend` ("cpu" or "cuda") for
 * p->n_ranks ranks. PL_STATUS_UNSUPPORTED (with why) when this build or machine has
 * no implementation for it (e.g. NCCL absent). "host" (any backend): the staged
 * communicator of comm_cpu.c, which copies each buffer to the host, sums there in rank
 * order and copies it back: slow, synchronous (never in a CUDA graph), but needs no
 * NCCL and lets several ranks share one GPU (a check of the sharded CUDA path on one
 * card: PAGELLM_TP_COMM=host PAGELLM_TP_DEVICES=0,0). */
pl_status pl_comm_group_new(const char *backend, const struct pl_comm_params *p,
                            struct pl_comm_group **out, struct pl_err *err);
/* Frees every rank's communicator (no collective may be running). NULL: nothing. */
void pl_comm_group_free(struct pl_comm_group *g);
int pl_comm_group_size(const struct pl_comm_group *g);
/* Rank r's handle (owned by the group). */
struct pl_comm *pl_comm_group_rank(struct pl_comm_group *g, int r);
/* Fails every pending and later collective of every rank, recording `why` (the first
 * reason wins). Callable from any thread; idempotent. */
void pl_comm_group_abort(struct pl_comm_group *g, const char *why);
/* Whether the group's collectives may be recorded into op graphs (NCCL, CPU: yes; the
 * staged one synchronises: no). */
bool pl_comm_group_graph_safe(const struct pl_comm_group *g);
bool pl_comm_graph_safe(const struct pl_comm *c);
/* Whether the group was aborted. */
bool pl_comm_group_aborted(struct pl_comm_group *g);
/* The implementation's name ("cpu", "nccl") and, for NCCL, its version and library. */
const char *pl_comm_group_describe(const struct pl_comm_group *g);

/* x[n] (backend memory of be, dtype dt) = the sum of every rank's x[n], in place, on
 * every rank. Enqueued like an op (CPU: done when it returns). A failure (the group
 * aborted, a timeout, an NCCL error) is recorded and the call returns; pl_comm_error
 * reports it. */
void pl_comm_all_reduce(struct pl_comm *c, struct pl_backend *be, void *x, size_t n,
                        enum pl_dtype dt);
/* recv[size][n] (on rank 0; NULL elsewhere) = every rank's send[n], in rank order: the
 * vocab-parallel logits of a step, gathered on rank 0 for its sampler. Backend memory of
 * be, dtype dt; enqueued like all_reduce, failures recorded the same way. */
void pl_comm_gather(struct pl_comm *c, struct pl_backend *be, const void *send, void *recv,
                    size_t n, enum pl_dtype dt);
/* The rank's first failure (PL_STATUS_OK when none), its message into err. */
pl_status pl_comm_error(struct pl_comm *c, struct pl_err *err);
int pl_comm_rank(const struct pl_comm *c);
int pl_comm_size(const struct pl_comm *c);

/* ---- implementations (comm.c's table) ------------------------------------------------- */

struct pl_comm_impl {
    const char *name;
    pl_status (*group_new)(const struct pl_comm_params *p, struct pl_comm_group **out,
                           struct pl_err *err);
};

/* The in-process implementation over the CPU backend, and the staged one over any
 * backend (comm_cpu.c). */
extern const struct pl_comm_impl pl_comm_cpu_impl;
extern const struct pl_comm_impl pl_comm_host_impl;
/* NCCL, loaded at run time (cuda/comm_nccl.c; only in builds with CUDA). */
extern const struct pl_comm_impl pl_comm_nccl_impl;
/* Test hook of the CPU implementation: rank r's next collectives never arrive (the
 * rank behaves as hung), so the others time out or are aborted. */
void pl_comm_cpu_hang_rank(struct pl_comm_group *g, int r);

#endif
