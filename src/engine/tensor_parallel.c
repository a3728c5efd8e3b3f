/*
 * tensor_parallel.c -- the coordinator of tensor-parallel ranks: one thread per
 * rank, a command at a time to all of them (see tensor_parallel.h).
 *
 * Owns: struct pl_tp (the rank threads and their runners, the communicator
 * group, the command slot) and the failure policy. The command slot is a
 * generation counter under one lock: the caller writes the command, bumps the
 * generation and waits until every rank has reported it done; a rank waits for
 * a generation it has not run, runs the command, reports. Only one command is
 * in flight (the engine calls from one thread).
 * Invariants: after pl_tp_new every rank has the same KV pool (the smallest
 * rank's) and max_model_len; once broken (a rank failed or a step timed out),
 * the communicator is aborted and every call returns the first failure.
 */
#include "engine/tensor_parallel.h"

#include "backend/comm.h"
#include "engine/block_manager.h"
#include "model/shard.h"
#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum tp_cmd { CMD_NONE, CMD_CREATE, CMD_RUN, CMD_SAMPLE, CMD_COPY, CMD_RESIZE, CMD_EXIT };

struct tp_rank {
    struct pl_tp *tp;
    int rank;
    pthread_t thread;
    bool started;
    struct pl_model_runner *runner;
    unsigned long done_gen; /* the last generation it finished */
    bool fail_once;         /* test hook */
    pl_status st;           /* the last command's result */
    struct pl_err err;
};

struct pl_tp {
    int n;
    const struct pl_model_runner_params *p; /* during pl_tp_new only */
    const struct pl_model_config *cfg;      /* during pl_tp_new only */
    const struct pl_safetensors *st;
    struct pl_comm_group *group;
    struct tp_rank *ranks;
    int devices[PL_TP_MAX_RANKS]; /* rank -> accelerator index */
    double step_timeout_s;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    unsigned long gen;
    int n_done;
    enum tp_cmd cmd;
    const struct pl_batch *batch;
    float *logits;
    const int32_t *row_src; /* CMD_SAMPLE */
    int n_rows;
    const struct pl_sampler_row *rows;
    const double *uniforms;
    struct pl_sample_result *out;
    const struct pl_block_copy *copies;
    int n_copies;
    int resize_blocks, resize_len;

    bool broken;
    struct pl_err broken_err;
};

static void rank_run(struct tp_rank *k)
{
    struct pl_tp *tp = k->tp;
    pl_err_clear(&k->err);
    switch (tp->cmd) {
    case CMD_CREATE: {
        const struct pl_model_runner_params *p = tp->p;
        int threads = p->n_threads > 0 ? p->n_threads / tp->n : 0;
        if (p->n_threads > 0 && threads < 1)
            threads = 1;
        k->st = pl_model_runner_new_rank(p, tp->cfg, tp->st, pl_comm_group_rank(tp->group, k->rank),
                                         tp->devices[k->rank], threads, &k->runner, &k->err);
        break;
    }
    case CMD_RUN:
    case CMD_SAMPLE:
        if (k->fail_once) {
            k->fail_once = false;
            k->st = pl_err_set(&k->err, PL_STATUS_INTERNAL, "injected failure (test)");
            break;
        }
        if (tp->cmd == CMD_SAMPLE)
            k->st = pl_model_runner_run_sample(k->runner, tp->batch, tp->row_src, tp->n_rows,
                                               tp->rows, tp->uniforms, tp->out, &k->err);
        else
            k->st = pl_model_runner_run(k->runner, tp->batch, tp->logits, &k->err);
        break;
    case CMD_COPY:
        k->st = pl_model_runner_copy_blocks(k->runner, tp->copies, tp->n_copies, &k->err);
        break;
    case CMD_RESIZE:
        k->st = pl_model_runner_resize_pool(k->runner, tp->resize_blocks, tp->resize_len,
                                            &k->err);
        break;
    case CMD_NONE:
    case CMD_EXIT:
        k->st = PL_STATUS_OK;
        break;
    }
    /* a rank that failed mid-step must not leave the others waiting in a collective;
     * a refused batch (every rank refuses it the same way, before any collective) is
     * not a failure of the group */
    if (k->st != PL_STATUS_OK && k->st != PL_STATUS_INVALID_ARGUMENT && tp->group &&
        (tp->cmd == CMD_RUN || tp->cmd == CMD_SAMPLE)) {
        char why[1100];
        snprintf(why, sizeof(why), "rank %d failed: %s", k->rank, k->err.msg);
        pl_comm_group_abort(tp->group, why);
    }
}

static void *rank_main(void *arg)
{
    struct tp_rank *k = arg;
    struct pl_tp *tp = k->tp;
    for (;;) {
        pthread_mutex_lock(&tp->mu);
        while (tp->gen == k->done_gen)
            pthread_cond_wait(&tp->cv, &tp->mu);
        const unsigned long gen = tp->gen;
        const enum tp_cmd cmd = tp->cmd;
        pthread_mutex_unlock(&tp->mu);
        if (cmd != CMD_EXIT)
            rank_run(k);
        else
            k->st = PL_STATUS_OK;
        pthread_mutex_lock(&tp->mu);
        k->done_gen = gen;
        tp->n_done++;
        pthread_cond_broadcast(&tp->cv);
        pthread_mutex_unlock(&tp->mu);
        if (cmd == CMD_EXIT)
            return NULL;
    }
}

static void deadline_after(double s, struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)s;
    ts->tv_sec += whole;
    ts->tv_nsec += (long)((s - (double)whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Marks the coordinator broken with err's message (the first one stays). */
static void set_broken(struct pl_tp *tp, const struct pl_err *err)
{
    if (tp->broken)
        return;
    tp->broken = true;
    tp->broken_err = *err;
    if (tp->group)
        pl_comm_group_abort(tp->group, err->msg);
}

/* Posts cmd to every rank and waits (timeout_s <= 0: without a deadline). On a timeout
 * the group is aborted and the ranks get a grace period to notice; a rank still busy
 * after it is left behind (the coordinator is broken; pl_tp_free detaches it). */
static pl_status dispatch(struct pl_tp *tp, enum tp_cmd cmd, double timeout_s, struct pl_err *err)
{
    pthread_mutex_lock(&tp->mu);
    tp->cmd = cmd;
    tp->n_done = 0;
    tp->gen++;
    pthread_cond_broadcast(&tp->cv);
    struct timespec dl;
    if (timeout_s > 0)
        deadline_after(timeout_s, &dl);
    bool timed_out = false;
    while (tp->n_done < tp->n) {
        if (timeout_s <= 0) {
            pthread_cond_wait(&tp->cv, &tp->mu);
            continue;
        }
        if (pthread_cond_timedwait(&tp->cv, &tp->mu, &dl) == ETIMEDOUT && tp->n_done < tp->n) {
            if (timed_out)
                break; /* the grace period is over too */
            timed_out = true;
            char late[256] = "";
            size_t at = 0;
            for (int r = 0; r < tp->n && at + 8 < sizeof(late); r++)
                if (tp->ranks[r].done_gen != tp->gen)
                    at += (size_t)snprintf(late + at, sizeof(late) - at, "%s%d", at ? ", " : "", r);
            struct pl_err e = {0};
            pl_err_set(&e, PL_STATUS_INTERNAL,
                       "tensor parallel: rank(s) %s did not finish the step within %.0f s (a hung "
                       "GPU or collective; PAGELLM_TP_TIMEOUT_S sets the limit): the engine stops",
                       late, timeout_s);
            pthread_mutex_unlock(&tp->mu);
            set_broken(tp, &e);
            pthread_mutex_lock(&tp->mu);
            deadline_after(timeout_s < 30 ? timeout_s : 30, &dl);
        }
    }
    pthread_mutex_unlock(&tp->mu);
    if (timed_out)
        return pl_err_set(err, PL_STATUS_INTERNAL, "%s", tp->broken_err.msg);
    /* the first failure by rank order, preferring the cause over "the group was aborted" */
    int first = -1;
    for (int r = 0; r < tp->n; r++)
        if (tp->ranks[r].st != PL_STATUS_OK &&
            (first < 0 || (strstr(tp->ranks[first].err.msg, "was aborted") &&
                           !strstr(tp->ranks[r].err.msg, "was aborted"))))
            first = r;
    if (first < 0)
        return PL_STATUS_OK;
    struct tp_rank *k = &tp->ranks[first];
    pl_err_set(err, k->st, "%s", k->err.msg);
    if (!strstr(k->err.msg, "tensor parallel rank"))
        pl_err_prefix(err, "tensor parallel rank %d", first);
    if ((cmd == CMD_RUN || cmd == CMD_SAMPLE) && k->st != PL_STATUS_INVALID_ARGUMENT)
        set_broken(tp, err);
    return k->st;
}

/* Rank r's accelerator: r, or the r-th entry of PAGELLM_TP_DEVICES ("0,0": two ranks on
 * GPU 0, with the staged communicator; a check of the sharded path on one card). */
static pl_status parse_devices(int n, int n_dev, int *devices, struct pl_err *err)
{
    const char *e = getenv("PAGELLM_TP_DEVICES");
    for (int r = 0; r < n; r++)
        devices[r] = r;
    if (!e || !*e)
        return PL_STATUS_OK;
    const char *p = e;
    for (int r = 0; r < n; r++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || (n_dev > 0 && v >= n_dev) || (*end && *end != ','))
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "PAGELLM_TP_DEVICES='%s': want %d device indices below %d, "
                              "comma-separated", e, n, n_dev);
        devices[r] = (int)v;
        p = *end ? end + 1 : end;
    }
    return PL_STATUS_OK;
}

static double step_timeout(void)
{
    const char *e = getenv("PAGELLM_TP_TIMEOUT_S");
    double v = e ? strtod(e, NULL) : 0;
    return v > 0 ? v : 300.0;
}

pl_status pl_tp_new(const struct pl_model_runner_params *p, const struct pl_model_config *cfg,
                    const struct pl_safetensors *st, struct pl_tp **out, struct pl_err *err)
{
    *out = NULL;
    const int n = p->tensor_parallel_size;
    const char *backend = pl_backend_resolve(p->device ? p->device : "cpu");
    struct pl_model_config probe;
    for (int r = 0; r < n; r++) { /* refuse a split the model does not allow, naming it */
        pl_status s = pl_shard_config(cfg, r, n, &probe, err);
        if (s != PL_STATUS_OK)
            return s;
    }
    const int n_dev = pl_backend_device_count(backend);
    int devices[PL_TP_MAX_RANKS];
    pl_status s = parse_devices(n, strcmp(backend, "cpu") ? n_dev : 0, devices, err);
    if (s != PL_STATUS_OK)
        return s;
    if (strcmp(backend, "cpu") && n_dev < n && !getenv("PAGELLM_TP_DEVICES")) {
        const char *vis = getenv("CUDA_VISIBLE_DEVICES");
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "tensor_parallel_size %d needs %d %s devices, %d visible%s%s%s", n, n,
                          backend, n_dev, vis ? " (CUDA_VISIBLE_DEVICES=" : "", vis ? vis : "",
                          vis ? ")" : "");
    }
    struct pl_tp *tp = calloc(1, sizeof(*tp));
    struct tp_rank *ranks = calloc((size_t)n, sizeof(*ranks));
    pthread_condattr_t ca;
    if (!tp || !ranks || pthread_condattr_init(&ca)) {
        free(tp);
        free(ranks);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tensor parallel: out of memory");
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&tp->mu, NULL);
    pthread_cond_init(&tp->cv, &ca);
    pthread_condattr_destroy(&ca);
    tp->n = n;
    tp->ranks = ranks;
    tp->p = p;
    tp->cfg = cfg;
    tp->st = st;
    tp->step_timeout_s = step_timeout();
    memcpy(tp->devices, devices, sizeof(devices));
    const char *comm = getenv("PAGELLM_TP_COMM");
    struct pl_comm_params cp = {.n_ranks = n, .devices = devices,
                                .timeout_s = tp->step_timeout_s};
    s = pl_comm_group_new(comm && !strcmp(comm, "host") ? "host" : backend, &cp, &tp->group,
                          err);
    for (int r = 0; s == PL_STATUS_OK && r < n; r++) {
        ranks[r].tp = tp;
        ranks[r].rank = r;
        if (pthread_create(&ranks[r].thread, NULL, rank_main, &ranks[r]) != 0)
            s = pl_err_set(err, PL_STATUS_INTERNAL, "tensor parallel: cannot start rank %d's "
                           "thread", r);
        else
            ranks[r].started = true;
    }
    /* every rank loads its share at once (no collective: nothing to time out) */
    if (s == PL_STATUS_OK)
        s = dispatch(tp, CMD_CREATE, 0, err);
    if (s == PL_STATUS_OK) { /* the pool of the smallest rank, on every rank */
        int min_blocks = ranks[0].runner ? pl_model_runner_num_blocks(ranks[0].runner) : 0;
        int min_len = ranks[0].runner ? pl_model_runner_max_model_len(ranks[0].runner) : 0;
        int at = 0;
        for (int r = 1; r < n; r++) {
            int b = pl_model_runner_num_blocks(ranks[r].runner);
            int len = pl_model_runner_max_model_len(ranks[r].runner);
            if (b < min_blocks) {
                min_blocks = b;
                at = r;
            }
            if (len < min_len)
                min_len = len;
        }
        if (min_len > min_blocks * pl_model_runner_block_size(ranks[0].runner))
            min_len = min_blocks * pl_model_runner_block_size(ranks[0].runner);
        tp->resize_blocks = min_blocks;
        tp->resize_len = min_len;
        s = dispatch(tp, CMD_RESIZE, 0, err);
        if (s == PL_STATUS_OK)
            PL_INFO("tensor parallel: %d ranks, one thread each, communicator %s; KV pool %d "
                    "blocks per rank (sized on rank %d), max_model_len %d",
                    n, pl_comm_group_describe(tp->group), min_blocks, at, min_len);
    }
    tp->p = NULL;
    tp->cfg = NULL;
    if (s != PL_STATUS_OK) {
        pl_tp_free(tp);
        return s;
    }
    *out = tp;
    return PL_STATUS_OK;
}

void pl_tp_free(struct pl_tp *tp)
{
    if (!tp)
        return;
    bool any = false;
    for (int r = 0; r < tp->n; r++)
        any = any || tp->ranks[r].started;
    bool stuck = false;
    if (any) {
        struct pl_err e = {0};
        /* ranks left behind by a timed-out step cannot take a command: abort first */
        if (tp->broken && tp->group)
            pl_comm_group_abort(tp->group, "the engine is shutting down");
        dispatch(tp, CMD_EXIT, tp->broken ? 30.0 : 0, &e);
        pthread_mutex_lock(&tp->mu);
        for (int r = 0; r < tp->n; r++)
            stuck = stuck || (tp->ranks[r].started && tp->ranks[r].done_gen != tp->gen);
        pthread_mutex_unlock(&tp->mu);
    }
    for (int r = 0; r < tp->n; r++) {
        struct tp_rank *k = &tp->ranks[r];
        if (!k->started)
            continue;
        if (stuck && k->done_gen != tp->gen) {
            pthread_detach(k->thread); /* still inside the device: left to the process */
            continue;
        }
        pthread_join(k->thread, NULL);
        pl_model_runner_free(k->runner);
    }
    if (!stuck)
        pl_comm_group_free(tp->group);
    pthread_cond_destroy(&tp->cv);
    pthread_mutex_destroy(&tp->mu);
    if (!stuck) {
        free(tp->ranks);
        free(tp);
    }
}

int pl_tp_size(const struct pl_tp *tp) { return tp->n; }

const struct pl_model_runner *pl_tp_rank_runner(const struct pl_tp *tp, int r)
{
    return tp->ranks[r].runner;
}

pl_status pl_tp_run(struct pl_tp *tp, const struct pl_batch *b, float *logits,
                    struct pl_err *err)
{
    if (tp->broken)
        return pl_err_set(err, PL_STATUS_INTERNAL, "%s", tp->broken_err.msg);
    tp->batch = b;
    tp->logits = logits;
    pl_status st = dispatch(tp, CMD_RUN, tp->step_timeout_s, err);
    tp->batch = NULL;
    tp->logits = NULL;
    return st;
}

pl_status pl_tp_run_sample(struct pl_tp *tp, const struct pl_batch *b, const int32_t *row_src,
                           int n_rows, const struct pl_sampler_row *rows, const double *uniforms,
                           struct pl_sample_result *out, struct pl_err *err)
{
    if (tp->broken)
        return pl_err_set(err, PL_STATUS_INTERNAL, "%s", tp->broken_err.msg);
    tp->batch = b;
    tp->row_src = row_src;
    tp->n_rows = n_rows;
    tp->rows = rows;
    tp->uniforms = uniforms;
    tp->out = out;
    pl_status st = dispatch(tp, CMD_SAMPLE, tp->step_timeout_s, err);
    tp->batch = NULL;
    tp->out = NULL;
    return st;
}

pl_status pl_tp_copy_blocks(struct pl_tp *tp, const struct pl_block_copy *copies, int n_copies,
                            struct pl_err *err)
{
    if (tp->broken)
        return pl_err_set(err, PL_STATUS_INTERNAL, "%s", tp->broken_err.msg);
    tp->copies = copies;
    tp->n_copies = n_copies;
    pl_status st = dispatch(tp, CMD_COPY, tp->step_timeout_s, err);
    tp->copies = NULL;
    return st;
}

void pl_tp_hang_rank(struct pl_tp *tp, int r)
{
    pl_comm_cpu_hang_rank(tp->group, r);
}

void pl_tp_fail_rank_once(struct pl_tp *tp, int r)
{
    if (r >= 0 && r < tp->n)
        tp->ranks[r].fail_once = true;
}
