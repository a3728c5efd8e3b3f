/*
 * comm_cpu.c -- the in-process communicator over the CPU backend: the ranks are
 * threads of this process and their buffers are host memory (see comm.h).
 *
 * Owns: the rendezvous (a generation-counted barrier under the group's lock,
 * with a deadline) and the all-reduce. All-reduce of n floats:
 *   1. each rank posts its buffer and meets the others;
 *   2. rank r sums elements [r n / N, (r+1) n / N) over the ranks in rank order
 *      (x0 + x1 + ... in fp32) and writes the sum into every rank's buffer;
 *   3. the ranks meet again, so none reads its buffer before every share is in.
 * Every element is summed by one thread in one fixed order, so the result is the
 * same bits on every rank and in every run (the CPU backend's rule for its ops).
 * A rank that waits at a rendezvous longer than the group's timeout aborts the
 * group (naming itself and how long it waited): the ranks still waiting wake
 * and fail, and the ranks that come later fail at once.
 * The staged communicator ("host") runs the same sums on host copies of any
 * backend's buffers (download, sum in fp32, upload, each with a sync).
 */
#include "backend/comm_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cpu_group {
    unsigned long gen;   /* rendezvous generation */
    int arrived;         /* ranks at the current rendezvous */
    unsigned long n_calls;
    float **bufs;        /* [n] posted buffers */
    size_t *lens;        /* [n] posted lengths */
    bool *hung;          /* [n] test hook: the rank never arrives */
    void **stage;        /* [n] staged: fp32 values then raw bytes (host) */
    size_t *stage_cap;   /* [n] bytes */
};

static struct cpu_group *cg(struct pl_comm_group *g) { return g->impl; }

static void deadline_after(double s, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)s;
    long ns = (long)((s - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Waits for every rank at this rendezvous; false (the rank's error recorded) when the
 * group is or becomes aborted, or the deadline passes (which aborts it). */
static bool rendezvous(struct pl_comm *c, const char *what)
{
    struct pl_comm_group *g = c->group;
    struct cpu_group *s = cg(g);
    pthread_mutex_lock(&g->mu);
    if (s->hung[c->rank]) { /* behaves as a hung device: only an abort ends it */
        while (!atomic_load(&g->aborted))
            pthread_cond_wait(&g->cv, &g->mu);
    }
    if (atomic_load(&g->aborted)) {
        pl_comm_fail(c, "%s: the group was aborted: %s", what, g->why);
        pthread_mutex_unlock(&g->mu);
        return false;
    }
    const unsigned long gen = s->gen;
    if (++s->arrived == g->n) {
        s->arrived = 0;
        s->gen++;
        pthread_cond_broadcast(&g->cv);
        pthread_mutex_unlock(&g->mu);
        return true;
    }
    struct timespec dl;
    deadline_after(g->timeout_s, &dl);
    while (s->gen == gen && !atomic_load(&g->aborted)) {
        int rc = pthread_cond_timedwait(&g->cv, &g->mu, &dl);
        if (rc == ETIMEDOUT && s->gen == gen && !atomic_load(&g->aborted)) {
            char why[256];
            snprintf(why, sizeof(why),
                     "rank %d waited %.0f s in %s for the other ranks (%d of %d arrived): a "
                     "rank hung or died", c->rank, g->timeout_s, what, s->arrived, g->n);
            pl_comm_abort_locked(g, why);
        }
    }
    bool ok = s->gen != gen;
    if (!ok)
        pl_comm_fail(c, "%s: the group was aborted: %s", what, g->why);
    pthread_mutex_unlock(&g->mu);
    return ok;
}

static void cpu_all_reduce(struct pl_comm *c, struct pl_backend *be, void *x, size_t n,
                           enum pl_dtype dt)
{
    (void)be;
    struct pl_comm_group *g = c->group;
    struct cpu_group *s = cg(g);
    if (dt != PL_DTYPE_F32) {
        pl_comm_fail(c, "the CPU communicator sums float32 only, not %s", pl_dtype_name(dt));
        pl_comm_group_abort(g, c->msg);
        return;
    }
    if (g->n == 1)
        return;
    s->bufs[c->rank] = x;
    s->lens[c->rank] = n;
    if (!rendezvous(c, "all_reduce"))
        return;
    for (int r = 0; r < g->n; r++)
        if (s->lens[r] != n) { /* every rank runs the same forward: a bug, not an input */
            pl_comm_fail(c, "all_reduce of %zu elements, rank %d posted %zu", n, r, s->lens[r]);
            pl_comm_group_abort(g, c->msg);
            return;
        }
    const size_t lo = n * (size_t)c->rank / (size_t)g->n;
    const size_t hi = n * (size_t)(c->rank + 1) / (size_t)g->n;
    for (size_t i = lo; i < hi; i++) {
        float sum = s->bufs[0][i];
        for (int r = 1; r < g->n; r++)
            sum += s->bufs[r][i];
        for (int r = 0; r < g->n; r++)
            s->bufs[r][i] = sum;
    }
    rendezvous(c, "all_reduce");
}

/* Rank 0 copies every rank's posted buffer between two rendezvous (host memory). */
static void cpu_gather(struct pl_comm *c, struct pl_backend *be, const void *send, void *recv,
                       size_t n, enum pl_dtype dt)
{
    (void)be;
    struct pl_comm_group *g = c->group;
    struct cpu_group *s = cg(g);
    const size_t bytes = n * pl_dtype_size(dt);
    s->bufs[c->rank] = (float *)send; /* read only */
    s->lens[c->rank] = n;
    if (g->n > 1 && !rendezvous(c, "gather"))
        return;
    if (c->rank == 0)
        for (int r = 0; r < g->n; r++) {
            if (s->lens[r] != n) {
                pl_comm_fail(c, "gather of %zu elements, rank %d posted %zu", n, r, s->lens[r]);
                pl_comm_group_abort(g, c->msg);
                return;
            }
            memcpy((char *)recv + (size_t)r * bytes, s->bufs[r], bytes);
        }
    if (g->n > 1)
        rendezvous(c, "gather");
}

static void cpu_free_impl(struct pl_comm_group *g)
{
    struct cpu_group *s = cg(g);
    if (!s)
        return;
    free(s->stage);
    free(s->stage_cap);
    s->stage = NULL;
    s->stage_cap = NULL;
    free(s->bufs);
    free(s->lens);
    free(s->hung);
    free(s);
}

static const struct pl_comm_vt CPU_VT = {
    .all_reduce = cpu_all_reduce,
    .gather = cpu_gather,
    .on_abort = NULL,
    .free_impl = cpu_free_impl,
    .graph_safe = true,
};

/* ---- the staged communicator: any backend, through host copies ----------------------- */

/* Rank c's host staging of at least n elements of dt (fp32 copy + raw bytes): grown on
 * first use of a size, so a steady state allocates nothing. */
static bool stage_reserve(struct pl_comm *c, size_t n, enum pl_dtype dt)
{
    struct cpu_group *s = cg(c->group);
    const size_t need = n * (sizeof(float) + pl_dtype_size(dt)) * (size_t)c->group->n;
    if (s->stage_cap[c->rank] >= need)
        return true;
    void *p = realloc(s->stage[c->rank], need);
    if (!p) {
        pl_comm_fail(c, "out of memory staging %zu elements", n);
        pl_comm_group_abort(c->group, c->msg);
        return false;
    }
    s->stage[c->rank] = p;
    s->stage_cap[c->rank] = need;
    return true;
}

/* Downloads x[n] (dt) into the rank's fp32 staging (bufs[rank]); false on failure. */
static bool stage_down(struct pl_comm *c, struct pl_backend *be, const void *x, size_t n,
                       enum pl_dtype dt)
{
    struct cpu_group *s = cg(c->group);
    float *f = s->stage[c->rank];
    void *raw = f + n * (size_t)c->group->n;
    if (be->ops->download(be, raw, x, n * pl_dtype_size(dt)) != PL_STATUS_OK ||
        be->ops->sync(be) != PL_STATUS_OK) {
        pl_comm_fail(c, "staging: the %s backend failed to copy %zu elements", be->ops->name, n);
        pl_comm_group_abort(c->group, c->msg);
        return false;
    }
    for (size_t i = 0; i < n; i++)
        f[i] = pl_dtype_get_f32(raw, dt, i);
    s->bufs[c->rank] = f;
    s->lens[c->rank] = n;
    return true;
}

/* Uploads n fp32 values as dt into x (backend memory); false on failure. */
static bool stage_up(struct pl_comm *c, struct pl_backend *be, void *x, const float *f, size_t n,
                     enum pl_dtype dt)
{
    struct cpu_group *s = cg(c->group);
    void *raw = (float *)s->stage[c->rank] + n * (size_t)c->group->n;
    if (!pl_dtype_convert(raw, dt, f, PL_DTYPE_F32, n) ||
        be->ops->upload(be, x, raw, n * pl_dtype_size(dt)) != PL_STATUS_OK ||
        be->ops->sync(be) != PL_STATUS_OK) {
        pl_comm_fail(c, "staging: the %s backend failed to take %zu elements", be->ops->name, n);
        pl_comm_group_abort(c->group, c->msg);
        return false;
    }
    return true;
}

static void host_all_reduce(struct pl_comm *c, struct pl_backend *be, void *x, size_t n,
                            enum pl_dtype dt)
{
    struct pl_comm_group *g = c->group;
    struct cpu_group *s = cg(g);
    if (!stage_reserve(c, n, dt) || !stage_down(c, be, x, n, dt) || !rendezvous(c, "all_reduce"))
        return;
    const size_t lo = n * (size_t)c->rank / (size_t)g->n;
    const size_t hi = n * (size_t)(c->rank + 1) / (size_t)g->n;
    for (size_t i = lo; i < hi; i++) { /* as cpu_all_reduce: rank order, every rank's copy */
        float sum = s->bufs[0][i];
        for (int r = 1; r < g->n; r++)
            sum += s->bufs[r][i];
        for (int r = 0; r < g->n; r++)
            s->bufs[r][i] = sum;
    }
    if (rendezvous(c, "all_reduce"))
        stage_up(c, be, x, s->bufs[c->rank], n, dt);
}

static void host_gather(struct pl_comm *c, struct pl_backend *be, const void *send, void *recv,
                        size_t n, enum pl_dtype dt)
{
    struct pl_comm_group *g = c->group;
    struct cpu_group *s = cg(g);
    /* rank 0 needs room for everyone's values: n * size fp32 in its staging */
    if (!stage_reserve(c, n * (size_t)g->n, dt) || !stage_down(c, be, send, n, dt) ||
        !rendezvous(c, "gather"))
        return;
    if (c->rank == 0) {
        float *all = (float *)s->stage[0] + n; /* after its own values */
        for (int r = 1; r < g->n; r++)
            memcpy(all + (size_t)(r - 1) * n, s->bufs[r], sizeof(float) * n);
    }
    if (!rendezvous(c, "gather"))
        return;
    if (c->rank == 0) /* own values, then the others', contiguous from stage[0] */
        stage_up(c, be, recv, s->stage[0], n * (size_t)g->n, dt);
}

static void host_free_impl(struct pl_comm_group *g)
{
    struct cpu_group *s = cg(g);
    for (int r = 0; s && s->stage && r < g->n; r++)
        free(s->stage[r]);
    cpu_free_impl(g); /* the arrays */
}

static const struct pl_comm_vt HOST_VT = {
    .all_reduce = host_all_reduce,
    .gather = host_gather,
    .on_abort = NULL,
    .free_impl = host_free_impl,
    .graph_safe = false,
};

static pl_status group_new(const struct pl_comm_vt *vt, const struct pl_comm_params *p,
                           struct pl_comm_group **out, struct pl_err *err)
{
    pl_status st = pl_comm_group_alloc(vt, p, out, err);
    if (st != PL_STATUS_OK)
        return st;
    struct pl_comm_group *g = *out;
    struct cpu_group *s = calloc(1, sizeof(*s));
    if (s) {
        s->bufs = calloc((size_t)g->n, sizeof(*s->bufs));
        s->lens = calloc((size_t)g->n, sizeof(*s->lens));
        s->hung = calloc((size_t)g->n, sizeof(*s->hung));
        s->stage = calloc((size_t)g->n, sizeof(*s->stage));
        s->stage_cap = calloc((size_t)g->n, sizeof(*s->stage_cap));
    }
    g->impl = s;
    if (!s || !s->bufs || !s->lens || !s->hung || !s->stage || !s->stage_cap) {
        pl_comm_group_free(g);
        *out = NULL;
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "communicator: out of memory");
    }
    snprintf(g->desc, sizeof(g->desc), "%s (in-process, %d ranks)",
             vt == &CPU_VT ? "cpu" : "host-staged", g->n);
    return PL_STATUS_OK;
}

static pl_status cpu_group_new(const struct pl_comm_params *p, struct pl_comm_group **out,
                               struct pl_err *err)
{
    return group_new(&CPU_VT, p, out, err);
}

static pl_status host_group_new(const struct pl_comm_params *p, struct pl_comm_group **out,
                                struct pl_err *err)
{
    return group_new(&HOST_VT, p, out, err);
}

const struct pl_comm_impl pl_comm_cpu_impl = {"cpu", cpu_group_new};
const struct pl_comm_impl pl_comm_host_impl = {"host", host_group_new};

void pl_comm_cpu_hang_rank(struct pl_comm_group *g, int r)
{
    if (g->vt != &CPU_VT || r < 0 || r >= g->n)
        return;
    pthread_mutex_lock(&g->mu);
    cg(g)->hung[r] = true;
    pthread_mutex_unlock(&g->mu);
}
