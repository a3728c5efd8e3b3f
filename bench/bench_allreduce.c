/*
 * bench_allreduce.c -- the communicator's all-reduce time (backend/comm.h), as a
 * tensor-parallel decode step spends it: 2 per layer (after o_proj and down) plus
 * one for the embedding, each of batch x hidden activations.
 *
 * usage: bench_allreduce [--device cpu|cuda] [--ranks N] [--hidden 4096] [--batch 1]
 *        [--layers 32] [--steps 50]
 * One thread per rank (as the model runner runs them), each with its own backend on
 * device r; every rank enqueues the step's all-reduces on its stream, then syncs.
 * Prints the time per all-reduce and per step (the median rank-0 step).
 */
#include "backend/backend.h"
#include "backend/comm.h"
#include "util/dtype.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_RANKS 16

struct rank {
    int r;
    const char *device;
    struct pl_comm *comm;
    size_t n;
    int calls_per_step, steps;
    double *step_s; /* [steps] */
    int failed;
    char msg[1024];
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *rank_main(void *arg)
{
    struct rank *k = arg;
    struct pl_backend *be = NULL;
    struct pl_err err = {0};
    const struct pl_backend_params bp = {.n_threads = 1, .device = k->r};
    if (pl_backend_new(k->device, &bp, &be, &err) != PL_STATUS_OK) {
        k->failed = 1;
        snprintf(k->msg, sizeof(k->msg), "%s", err.msg);
        return NULL;
    }
    const enum pl_dtype dt = be->ops->act_dtype;
    void *x = be->ops->alloc(be, k->n * pl_dtype_size(dt));
    be->ops->fill(be, x, dt, k->n, 7 + (uint64_t)k->r, -1.0f, 1.0f);
    for (int s = -3; s < k->steps; s++) { /* 3 warm-up steps */
        double t0 = now();
        for (int c = 0; c < k->calls_per_step; c++)
            pl_comm_all_reduce(k->comm, be, x, k->n, dt);
        be->ops->sync(be);
        if (s >= 0)
            k->step_s[s] = now() - t0;
    }
    if (pl_comm_error(k->comm, &err) != PL_STATUS_OK) {
        k->failed = 1;
        snprintf(k->msg, sizeof(k->msg), "%s", err.msg);
    }
    be->ops->free(be, x);
    pl_backend_free(be);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *device = "cuda";
    int ranks = 2, hidden = 4096, batch = 1, layers = 32, steps = 50;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--device"))
            device = v;
        else if (!strcmp(a, "--ranks"))
            ranks = atoi(v);
        else if (!strcmp(a, "--hidden"))
            hidden = atoi(v);
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--layers"))
            layers = atoi(v);
        else if (!strcmp(a, "--steps"))
            steps = atoi(v);
        else {
            fprintf(stderr, "bench_allreduce: unknown %s\n", a);
            return 2;
        }
    }
    if (ranks < 1 || ranks > MAX_RANKS || hidden < 1 || batch < 1 || layers < 1 || steps < 1) {
        fprintf(stderr, "usage: bench_allreduce [--device D] [--ranks N] [--hidden H] "
                        "[--batch B] [--layers L] [--steps S]\n");
        return 2;
    }
    struct pl_comm_group *g = NULL;
    struct pl_err err = {0};
    struct pl_comm_params cp = {.n_ranks = ranks};
    if (pl_comm_group_new(pl_backend_resolve(device), &cp, &g, &err) != PL_STATUS_OK) {
        fprintf(stderr, "bench_allreduce: %s\n", err.msg);
        return 1;
    }
    printf("communicator: %s\n", pl_comm_group_describe(g));
    struct rank rk[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < ranks; r++) {
        rk[r] = (struct rank){.r = r, .device = device, .comm = pl_comm_group_rank(g, r),
                              .n = (size_t)batch * (size_t)hidden,
                              .calls_per_step = 2 * layers + 1, .steps = steps};
        rk[r].step_s = calloc((size_t)steps, sizeof(double));
        pthread_create(&th[r], NULL, rank_main, &rk[r]);
    }
    int failed = 0;
    for (int r = 0; r < ranks; r++) {
        pthread_join(th[r], NULL);
        if (rk[r].failed) {
            fprintf(stderr, "bench_allreduce: rank %d: %s\n", r, rk[r].msg);
            failed = 1;
        }
    }
    if (!failed) {
        qsort(rk[0].step_s, (size_t)steps, sizeof(double), cmp_d);
        double med = rk[0].step_s[steps / 2];
        printf("all-reduce: %d ranks, %d x %d elements, %d per step: %.1f us per all-reduce, "
               "%.3f ms per step (median of %d)\n",
               ranks, batch, hidden, 2 * layers + 1, med / (2 * layers + 1) * 1e6, med * 1e3,
               steps);
    }
    for (int r = 0; r < ranks; r++)
        free(rk[r].step_s);
    pl_comm_group_free(g);
    return failed;
}
