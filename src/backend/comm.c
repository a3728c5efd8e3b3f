/*
 * comm.c -- the communicator's common part: selection by backend name, the
 * group's lifetime, abort and the sticky per-rank errors (see comm.h).
 *
 * Owns: the table backend name -> implementation ("cpu" -> comm_cpu.c, "cuda"
 * -> cuda/comm_nccl.c when the build has CUDA).
 */
#include "backend/comm_impl.h"

#ifdef PL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *backend;
    const struct pl_comm_impl *impl;
} IMPLS[] = {
    {"cpu", &pl_comm_cpu_impl},
    {"host", &pl_comm_host_impl},
#ifdef PL_HAVE_CUDA
    {"cuda", &pl_comm_nccl_impl},
#endif
};

pl_status pl_comm_group_new(const char *backend, const struct pl_comm_params *p,
                            struct pl_comm_group **out, struct pl_err *err)
{
    *out = NULL;
    if (!p || p->n_ranks < 1 || p->n_ranks > 1024)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "communicator: %d ranks",
                          p ? p->n_ranks : 0);
    for (size_t i = 0; i < sizeof(IMPLS) / sizeof(IMPLS[0]); i++)
        if (backend && !strcmp(backend, IMPLS[i].backend))
            return IMPLS[i].impl->group_new(p, out, err);
    return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                      "tensor parallelism: the %s backend has no communicator in this build",
                      backend ? backend : "(null)");
}

pl_status pl_comm_group_alloc(const struct pl_comm_vt *vt, const struct pl_comm_params *p,
                              struct pl_comm_group **out, struct pl_err *err)
{
    struct pl_comm_group *g = calloc(1, sizeof(*g));
    struct pl_comm *ranks = calloc((size_t)p->n_ranks, sizeof(*ranks));
    pthread_condattr_t ca;
    if (!g || !ranks || pthread_condattr_init(&ca)) {
        free(g);
        free(ranks);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "communicator: out of memory");
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, &ca);
    pthread_condattr_destroy(&ca);
    g->vt = vt;
    g->n = p->n_ranks;
    g->ranks = ranks;
    g->timeout_s = p->timeout_s > 0 ? p->timeout_s : PL_COMM_DEFAULT_TIMEOUT_S;
    atomic_init(&g->aborted, false);
    for (int r = 0; r < g->n; r++) {
        ranks[r].group = g;
        ranks[r].rank = r;
    }
    *out = g;
    return PL_STATUS_OK;
}

void pl_comm_group_free(struct pl_comm_group *g)
{
    if (!g)
        return;
    if (g->vt->free_impl)
        g->vt->free_impl(g);
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
    free(g->ranks);
    free(g);
}

int pl_comm_group_size(const struct pl_comm_group *g) { return g->n; }

struct pl_comm *pl_comm_group_rank(struct pl_comm_group *g, int r)
{
    return r >= 0 && r < g->n ? &g->ranks[r] : NULL;
}

const char *pl_comm_group_describe(const struct pl_comm_group *g) { return g->desc; }

void pl_comm_abort_locked(struct pl_comm_group *g, const char *why)
{
    if (!atomic_load(&g->aborted)) {
        snprintf(g->why, sizeof(g->why), "%s", why);
        atomic_store(&g->aborted, true);
    }
    pthread_cond_broadcast(&g->cv);
}

void pl_comm_group_abort(struct pl_comm_group *g, const char *why)
{
    pthread_mutex_lock(&g->mu);
    bool first = !atomic_load(&g->aborted);
    pl_comm_abort_locked(g, why);
    pthread_mutex_unlock(&g->mu);
    if (first && g->vt->on_abort)
        g->vt->on_abort(g);
}

bool pl_comm_group_graph_safe(const struct pl_comm_group *g) { return g->vt->graph_safe; }
bool pl_comm_graph_safe(const struct pl_comm *c) { return c->group->vt->graph_safe; }

bool pl_comm_group_aborted(struct pl_comm_group *g) { return atomic_load(&g->aborted); }

void pl_comm_fail(struct pl_comm *c, const char *fmt, ...)
{
    if (c->status != PL_STATUS_OK)
        return;
    c->status = PL_STATUS_INTERNAL;
    int at = snprintf(c->msg, sizeof(c->msg), "tensor parallel rank %d: ", c->rank);
    va_list ap;
    va_start(ap, fmt);
    if (at > 0 && (size_t)at < sizeof(c->msg))
        vsnprintf(c->msg + at, sizeof(c->msg) - (size_t)at, fmt, ap);
    va_end(ap);
}

void pl_comm_all_reduce(struct pl_comm *c, struct pl_backend *be, void *x, size_t n,
                        enum pl_dtype dt)
{
    if (c->status != PL_STATUS_OK)
        return; /* the rank already failed: its results are void anyway */
    if (atomic_load(&c->group->aborted)) {
        pthread_mutex_lock(&c->group->mu);
        pl_comm_fail(c, "the group was aborted: %s", c->group->why);
        pthread_mutex_unlock(&c->group->mu);
        return;
    }
    if (n > 0)
        c->group->vt->all_reduce(c, be, x, n, dt);
}

void pl_comm_gather(struct pl_comm *c, struct pl_backend *be, const void *send, void *recv,
                    size_t n, enum pl_dtype dt)
{
    if (c->status != PL_STATUS_OK)
        return;
    if (atomic_load(&c->group->aborted)) {
        pthread_mutex_lock(&c->group->mu);
        pl_comm_fail(c, "the group was aborted: %s", c->group->why);
        pthread_mutex_unlock(&c->group->mu);
        return;
    }
    if (n > 0)
        c->group->vt->gather(c, be, send, recv, n, dt);
}

pl_status pl_comm_error(struct pl_comm *c, struct pl_err *err)
{
    if (c->status == PL_STATUS_OK)
        return PL_STATUS_OK;
    return pl_err_set(err, c->status, "%s", c->msg);
}

int pl_comm_rank(const struct pl_comm *c) { return c->rank; }
int pl_comm_size(const struct pl_comm *c) { return c->group->n; }
