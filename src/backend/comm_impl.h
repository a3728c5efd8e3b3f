/*
 * comm_impl.h -- what the communicator implementations share (comm.c,
 * comm_cpu.c, cuda/comm_nccl.c); nothing outside src/backend includes it.
 *
 * Owns: the layout of struct pl_comm_group and struct pl_comm, the sticky
 * per-rank error, and the abort flag with its lock (the CPU implementation's
 * rendezvous uses the same lock and condition variable, so an abort wakes
 * every waiter).
 */
#ifndef PL_BACKEND_COMM_IMPL_H
#define PL_BACKEND_COMM_IMPL_H

#include "backend/comm.h"

#include <pthread.h>
#include <stdatomic.h>

struct pl_comm_vt {
    void (*all_reduce)(struct pl_comm *c, struct pl_backend *be, void *x, size_t n,
                       enum pl_dtype dt);
    void (*gather)(struct pl_comm *c, struct pl_backend *be, const void *send, void *recv,
                   size_t n, enum pl_dtype dt);
    /* after the group is marked aborted (outside the lock): unblock what the lock and
     * condition variable cannot (NCCL: ncclCommAbort) */
    void (*on_abort)(struct pl_comm_group *g);
    void (*free_impl)(struct pl_comm_group *g);
    bool graph_safe; /* collectives may be recorded into op graphs */
};

struct pl_comm {
    struct pl_comm_group *group;
    int rank;
    pl_status status;  /* the first failure of this rank */
    char msg[512];
    void *impl;        /* per-rank implementation state */
};

struct pl_comm_group {
    const struct pl_comm_vt *vt;
    int n;
    struct pl_comm *ranks; /* [n] */
    double timeout_s;
    pthread_mutex_t mu;
    pthread_cond_t cv;     /* CLOCK_MONOTONIC */
    atomic_bool aborted;
    char why[512];         /* the abort's reason (under mu) */
    char desc[256];
    void *impl;
};

/* Records rank c's first failure ("tensor parallel rank R: ..."). */
void pl_comm_fail(struct pl_comm *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Allocates the common part for n ranks (impl fields NULL). */
pl_status pl_comm_group_alloc(const struct pl_comm_vt *vt, const struct pl_comm_params *p,
                              struct pl_comm_group **out, struct pl_err *err);
/* pl_comm_group_abort with mu already held (the CPU rendezvous' timeout); returns with
 * mu held. on_abort is not called (the CPU implementation has none). */
void pl_comm_abort_locked(struct pl_comm_group *g, const char *why);

#endif
