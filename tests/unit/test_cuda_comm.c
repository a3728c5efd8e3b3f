/*
 * test_cuda_comm.c -- the NCCL communicator (backend/cuda/comm_nccl.c) on the GPU
 * machine: NCCL found and loaded at run time, all-reduce of bf16 buffers on every
 * visible GPU (up to 4; one GPU is a group of one) equal to the exact sum, the
 * gather on rank 0 (the logits of device sampling), the
 * all-reduce recorded into a CUDA graph with the backend's graph ops and replayed,
 * and an aborted group failing the next collective with a message.
 * Exit 77 (skipped) without a GPU or without NCCL (the reason is printed).
 */
#include "test.h"

#include "backend/comm.h"
#include "backend/cuda/cuda_backend.h"
#include "util/dtype.h"

#include <pthread.h>

#define MAX_RANKS 4
#define N_ELEMS 4099

struct job {
    struct pl_comm *c;
    int rank, n_ranks;
    bool graph;
    int bad;
    pl_status st;
    char msg[1024];
};

static float value(int r, int i, int round) { return (float)((i % 64) + 100 * r + round); }

static void *rank_main(void *arg)
{
    struct job *j = arg;
    struct pl_backend *be = NULL;
    struct pl_err err = {0};
    if (pl_backend_cuda_new(j->rank, &be, &err) != PL_STATUS_OK) {
        j->st = err.status;
        snprintf(j->msg, sizeof(j->msg), "%s", err.msg);
        return NULL;
    }
    uint16_t *h = malloc(sizeof(uint16_t) * N_ELEMS);
    void *d = be->ops->alloc(be, sizeof(uint16_t) * N_ELEMS);
    void *graph = NULL;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N_ELEMS; i++)
            h[i] = pl_f32_to_bf16(value(j->rank, i, round));
        be->ops->upload(be, d, h, sizeof(uint16_t) * N_ELEMS);
        if (j->graph && round == 0) { /* record once, replay every round */
            be->ops->graph_begin(be);
            pl_comm_all_reduce(j->c, be, d, N_ELEMS, PL_DTYPE_BF16);
            if (be->ops->graph_end(be, &graph) != PL_STATUS_OK) {
                j->st = PL_STATUS_INTERNAL;
                snprintf(j->msg, sizeof(j->msg), "graph_end: %s", be->ops->last_error(be));
                break;
            }
        }
        if (j->graph)
            be->ops->graph_launch(be, graph);
        else
            pl_comm_all_reduce(j->c, be, d, N_ELEMS, PL_DTYPE_BF16);
        be->ops->download(be, h, d, sizeof(uint16_t) * N_ELEMS);
        if (be->ops->sync(be) != PL_STATUS_OK) {
            j->st = PL_STATUS_INTERNAL;
            snprintf(j->msg, sizeof(j->msg), "sync: %s", be->ops->last_error(be));
            break;
        }
        for (int i = 0; i < N_ELEMS; i++) {
            float want = 0;
            for (int r = 0; r < j->n_ranks; r++)
                want += value(r, i, round); /* small integers: exact in bf16 */
            if (pl_dtype_get_f32(h, PL_DTYPE_BF16, (size_t)i) != want)
                j->bad++;
        }
    }
    /* gather on rank 0: every rank's h (its own values of round 0) in rank order */
    if (j->st == PL_STATUS_OK && !j->graph) {
        for (int i = 0; i < N_ELEMS; i++)
            h[i] = pl_f32_to_bf16(value(j->rank, i, 0));
        be->ops->upload(be, d, h, sizeof(uint16_t) * N_ELEMS);
        void *all = j->rank == 0 ? be->ops->alloc(be, sizeof(uint16_t) * N_ELEMS * j->n_ranks)
                                 : NULL;
        pl_comm_gather(j->c, be, d, all, N_ELEMS, PL_DTYPE_BF16);
        if (j->rank == 0) {
            uint16_t *hall = malloc(sizeof(uint16_t) * N_ELEMS * j->n_ranks);
            be->ops->download(be, hall, all, sizeof(uint16_t) * N_ELEMS * j->n_ranks);
            if (be->ops->sync(be) == PL_STATUS_OK)
                for (int r = 0; r < j->n_ranks; r++)
                    for (int i = 0; i < N_ELEMS; i++)
                        if (pl_bf16_to_f32(hall[(size_t)r * N_ELEMS + i]) != value(r, i, 0))
                            j->bad++;
            free(hall);
            be->ops->free(be, all);
        } else {
            be->ops->sync(be);
        }
    }
    if (j->st == PL_STATUS_OK)
        j->st = pl_comm_error(j->c, &err);
    if (j->st != PL_STATUS_OK && !j->msg[0])
        snprintf(j->msg, sizeof(j->msg), "%s", err.msg);
    if (graph)
        be->ops->graph_free(be, graph);
    be->ops->free(be, d);
    free(h);
    pl_backend_free(be);
    return NULL;
}

static int g_n_ranks;

static void run(struct pl_comm_group *g, bool graph)
{
    struct job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    memset(jobs, 0, sizeof(jobs));
    for (int r = 0; r < g_n_ranks; r++) {
        jobs[r] = (struct job){.c = pl_comm_group_rank(g, r), .rank = r, .n_ranks = g_n_ranks,
                               .graph = graph};
        pthread_create(&th[r], NULL, rank_main, &jobs[r]);
    }
    for (int r = 0; r < g_n_ranks; r++) {
        pthread_join(th[r], NULL);
        CHECKF(jobs[r].st == PL_STATUS_OK, "rank %d%s: %s", r, graph ? " (graph)" : "",
               jobs[r].msg);
        CHECKF(jobs[r].bad == 0, "rank %d%s: %d elements differ from the sum", r,
               graph ? " (graph)" : "", jobs[r].bad);
    }
}

static struct pl_comm_group *g_group;

static void test_all_reduce(void) { run(g_group, false); }
static void test_all_reduce_in_graph(void) { run(g_group, true); }

static void test_abort(void)
{
    pl_comm_group_abort(g_group, "test abort");
    struct pl_comm *c = pl_comm_group_rank(g_group, 0);
    pl_comm_all_reduce(c, NULL, NULL, 16, PL_DTYPE_BF16);
    struct pl_err err = {0};
    CHECK(pl_comm_error(c, &err) == PL_STATUS_INTERNAL);
    CHECKF(strstr(err.msg, "test abort") != NULL, "%s", err.msg);
}

int main(void)
{
    int n_dev = pl_cuda_device_count();
    if (n_dev < 1) {
        fprintf(stderr, "test_cuda_comm: no GPU; skipped\n");
        return 77;
    }
    g_n_ranks = n_dev < MAX_RANKS ? n_dev : MAX_RANKS;
    struct pl_err err = {0};
    struct pl_comm_params p = {.n_ranks = g_n_ranks};
    pl_status st = pl_comm_group_new("cuda", &p, &g_group, &err);
    if (st == PL_STATUS_UNSUPPORTED) {
        fprintf(stderr, "test_cuda_comm: %s; skipped\n", err.msg);
        return 77;
    }
    if (st != PL_STATUS_OK) {
        fprintf(stderr, "test_cuda_comm: %s\n", err.msg);
        return 1;
    }
    printf("communicator: %s\n", pl_comm_group_describe(g_group));
    PL_RUN(test_all_reduce);
    PL_RUN(test_all_reduce_in_graph);
    PL_RUN(test_abort);
    pl_comm_group_free(g_group);
    return pl_test_summary();
}
