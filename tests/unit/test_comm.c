/*
 * test_comm.c -- the in-process communicator (backend/comm_cpu.c): all-reduce
 * sums in rank order and gives every rank the same bits; a rank that hangs or
 * a group that is aborted fails the collectives of every rank with a message,
 * never a hang.
 */
#include "test.h"

#include "backend/comm.h"

#include <pthread.h>
#include <string.h>

#define MAX_RANKS 4
#define N_ELEMS 1001 /* not a multiple of the rank count: uneven shares */

struct rank_job {
    struct pl_comm *c;
    float *x;
    size_t n;
    int n_calls;
    pl_status st;
    char msg[1024];
};

static void *rank_main(void *arg)
{
    struct rank_job *j = arg;
    for (int i = 0; i < j->n_calls; i++)
        pl_comm_all_reduce(j->c, NULL, j->x, j->n, PL_DTYPE_F32);
    struct pl_err err = {0};
    j->st = pl_comm_error(j->c, &err);
    snprintf(j->msg, sizeof(j->msg), "%s", err.msg);
    return NULL;
}

/* Runs n_calls all-reduces on every rank of g, each rank on its own thread. */
static void run_ranks(struct pl_comm_group *g, struct rank_job *jobs, int n_calls)
{
    pthread_t th[MAX_RANKS];
    int n = pl_comm_group_size(g);
    for (int r = 0; r < n; r++) {
        jobs[r].c = pl_comm_group_rank(g, r);
        jobs[r].n_calls = n_calls;
        REQUIRE(pthread_create(&th[r], NULL, rank_main, &jobs[r]) == 0);
    }
    for (int r = 0; r < n; r++)
        pthread_join(th[r], NULL);
}

static float value(int r, size_t i) { return (float)((double)(i % 97) * 0.1 + r * 1e-3 + 1.0 / (r + 3)); }

static void test_all_reduce_sums_in_rank_order(void)
{
    for (int n = 1; n <= MAX_RANKS; n++) {
        struct pl_comm_group *g = NULL;
        struct pl_err err = {0};
        struct pl_comm_params p = {.n_ranks = n};
        REQUIRE(pl_comm_group_new("cpu", &p, &g, &err) == PL_STATUS_OK);
        CHECK(pl_comm_group_size(g) == n);
        CHECK(strstr(pl_comm_group_describe(g), "cpu") != NULL);
        static float bufs[MAX_RANKS][N_ELEMS];
        struct rank_job jobs[MAX_RANKS];
        memset(jobs, 0, sizeof(jobs));
        for (int r = 0; r < n; r++) {
            for (size_t i = 0; i < N_ELEMS; i++)
                bufs[r][i] = value(r, i);
            jobs[r].x = bufs[r];
            jobs[r].n = N_ELEMS;
        }
        run_ranks(g, jobs, 1);
        for (int r = 0; r < n; r++) {
            CHECKF(jobs[r].st == PL_STATUS_OK, "n=%d rank %d: %s", n, r, jobs[r].msg);
            CHECK(pl_comm_rank(pl_comm_group_rank(g, r)) == r);
            CHECK(pl_comm_size(pl_comm_group_rank(g, r)) == n);
        }
        int bad = 0;
        for (size_t i = 0; i < N_ELEMS; i++) {
            float want = value(0, i); /* the specification: fp32, rank order */
            for (int r = 1; r < n; r++)
                want += value(r, i);
            for (int r = 0; r < n; r++)
                if (memcmp(&bufs[r][i], &want, sizeof(float)))
                    bad++;
        }
        CHECKF(bad == 0, "n=%d: %d elements differ from the rank-order fp32 sum", n, bad);
        /* repeated calls keep working (the rendezvous generations advance) */
        run_ranks(g, jobs, 3);
        for (int r = 0; r < n; r++)
            CHECKF(jobs[r].st == PL_STATUS_OK, "n=%d rank %d after 4 calls: %s", n, r,
                   jobs[r].msg);
        for (int r = 1; r < n; r++)
            CHECK(!memcmp(bufs[0], bufs[r], sizeof(bufs[0])));
        pl_comm_group_free(g);
    }
}

/* A rank that never arrives: the others give up after the group's timeout and every
 * rank reports the failure (a hang guard, not a timing assumption: the rank never
 * comes, so the deadline always passes). */
static void test_hung_rank_fails_everyone(void)
{
    struct pl_comm_group *g = NULL;
    struct pl_err err = {0};
    struct pl_comm_params p = {.n_ranks = 3, .timeout_s = 0.2};
    REQUIRE(pl_comm_group_new("cpu", &p, &g, &err) == PL_STATUS_OK);
    pl_comm_cpu_hang_rank(g, 1);
    static float bufs[3][16];
    struct rank_job jobs[3];
    memset(jobs, 0, sizeof(jobs));
    for (int r = 0; r < 3; r++) {
        jobs[r].x = bufs[r];
        jobs[r].n = 16;
    }
    run_ranks(g, jobs, 2);
    for (int r = 0; r < 3; r++) {
        CHECKF(jobs[r].st != PL_STATUS_OK, "rank %d did not fail", r);
        CHECKF(strstr(jobs[r].msg, "rank 1 hung") || strstr(jobs[r].msg, "hung or died"),
               "rank %d: %s", r, jobs[r].msg);
        CHECKF(strstr(jobs[r].msg, "tensor parallel rank") != NULL, "rank %d: %s", r,
               jobs[r].msg);
    }
    CHECK(pl_comm_group_aborted(g));
    pl_comm_group_free(g);
}

/* An abort (the runner's answer to a failed rank) fails the waiting and later calls. */
static void test_abort_fails_later_calls(void)
{
    struct pl_comm_group *g = NULL;
    struct pl_err err = {0};
    struct pl_comm_params p = {.n_ranks = 2};
    REQUIRE(pl_comm_group_new("cpu", &p, &g, &err) == PL_STATUS_OK);
    pl_comm_group_abort(g, "rank 1 failed: injected");
    pl_comm_group_abort(g, "second reason"); /* the first reason stays */
    static float bufs[2][8];
    struct rank_job jobs[2];
    memset(jobs, 0, sizeof(jobs));
    for (int r = 0; r < 2; r++) {
        jobs[r].x = bufs[r];
        jobs[r].n = 8;
    }
    run_ranks(g, jobs, 1);
    for (int r = 0; r < 2; r++) {
        CHECK(jobs[r].st == PL_STATUS_INTERNAL);
        CHECKF(strstr(jobs[r].msg, "injected") != NULL, "rank %d: %s", r, jobs[r].msg);
    }
    pl_comm_group_free(g);
}

struct gather_job {
    struct pl_comm *c;
    const float *send;
    float *recv;
    pl_status st;
};

static void *gather_main(void *arg)
{
    struct gather_job *j = arg;
    pl_comm_gather(j->c, NULL, j->send, j->recv, 37, PL_DTYPE_F32);
    j->st = pl_comm_error(j->c, NULL);
    return NULL;
}

/* Rank 0 receives every rank's buffer in rank order; the others' buffers are untouched. */
static void test_gather(void)
{
    for (int n = 1; n <= MAX_RANKS; n++) {
        struct pl_comm_group *g = NULL;
        struct pl_err err = {0};
        struct pl_comm_params p = {.n_ranks = n};
        REQUIRE(pl_comm_group_new("cpu", &p, &g, &err) == PL_STATUS_OK);
        static float send[MAX_RANKS][37], recv[MAX_RANKS * 37];
        for (int r = 0; r < n; r++)
            for (int i = 0; i < 37; i++)
                send[r][i] = value(r, (size_t)i);
        memset(recv, 0, sizeof(recv));
        struct gather_job jobs[MAX_RANKS];
        pthread_t th[MAX_RANKS];
        for (int r = 0; r < n; r++) {
            jobs[r] = (struct gather_job){pl_comm_group_rank(g, r), send[r], r ? NULL : recv,
                                          PL_STATUS_OK};
            REQUIRE(pthread_create(&th[r], NULL, gather_main, &jobs[r]) == 0);
        }
        for (int r = 0; r < n; r++) {
            pthread_join(th[r], NULL);
            CHECK(jobs[r].st == PL_STATUS_OK);
        }
        for (int r = 0; r < n; r++)
            CHECKF(!memcmp(recv + r * 37, send[r], sizeof(send[r])), "n=%d: rank %d's share", n,
                   r);
        for (int i = 0; i < 37; i++) /* unchanged */
            CHECK(send[n - 1][i] == value(n - 1, (size_t)i));
        pl_comm_group_free(g);
    }
}

static void test_bad_arguments(void)
{
    struct pl_comm_group *g = NULL;
    struct pl_err err = {0};
    struct pl_comm_params p = {.n_ranks = 0};
    CHECK(pl_comm_group_new("cpu", &p, &g, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(g == NULL);
    p.n_ranks = 2;
    CHECK(pl_comm_group_new("tpu", &p, &g, &err) == PL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "tpu") != NULL);
    pl_comm_group_free(NULL);
    /* a dtype the CPU communicator does not sum: refused and the group aborted */
    REQUIRE(pl_comm_group_new("cpu", &p, &g, &err) == PL_STATUS_OK);
    uint16_t h[4] = {0};
    struct pl_comm *c = pl_comm_group_rank(g, 0);
    pl_comm_all_reduce(c, NULL, h, 4, PL_DTYPE_BF16);
    CHECK(pl_comm_error(c, &err) == PL_STATUS_INTERNAL);
    CHECK(strstr(err.msg, "float32") != NULL);
    CHECK(pl_comm_group_aborted(g));
    pl_comm_group_free(g);
}

int main(void)
{
    PL_RUN(test_all_reduce_sums_in_rank_order);
    PL_RUN(test_gather);
    PL_RUN(test_hung_rank_fails_everyone);
    PL_RUN(test_abort_fails_later_calls);
    PL_RUN(test_bad_arguments);
    return pl_test_summary();
}
