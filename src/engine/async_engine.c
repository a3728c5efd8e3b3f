/*
 * async_engine.c -- the engine thread, its inbox, and per-request outboxes.
 *
 * See async_engine.h for the contract. Locks: ae->mu guards the inbox, the
 * counters, the stats copy and the heartbeat; r->mu guards one request's
 * outbox, flags and notify pointer. Lock order: a request's lock is never held
 * while taking ae->mu, except in pl_async_request_abort, which takes r->mu,
 * reads, releases it and only then takes ae->mu. The id -> request table is
 * touched by the engine thread only.
 */
#include "engine/async_engine.h"

#include "util/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum cmd_kind { CMD_ADD, CMD_ABORT, CMD_ABORT_ALL };

struct cmd {
    enum cmd_kind kind;
    struct pl_async_request *req; /* CMD_ADD: the engine's reference */
    uint64_t request_id;          /* CMD_ABORT */
    struct cmd *next;
};

struct pl_async_request {
    pthread_mutex_t mu;
    int refs;                       /* caller + engine; guarded by mu */
    uint64_t id;
    struct pl_async_engine *ae;
    /* until the engine thread adds it: */
    int32_t *prompt;                /* [n_prompt] */
    int n_prompt;
    struct pl_sampling_params sp;   /* owns its arrays */
    bool pooling;                   /* a pooling request: pool, not sp */
    struct pl_pooling_params pool;
    /* outbox (guarded by mu) */
    struct pl_async_output **q;     /* [q_cap], live entries q_head..q_len */
    int q_head, q_len, q_cap;
    bool finished;                  /* finished delta routed */
    bool abort_sent;
    pl_async_notify_fn notify;      /* NULL after release */
    void *notify_user;
    /* engine thread only */
    double t_arrival, t_first_token, t_last_token;
    bool routed_any;
    enum pl_async_finish finish;    /* the first sample finish routed (the request's reason) */
    struct pl_async_request *hnext; /* id table chain */
};

struct pl_async_engine {
    const struct pl_engine_ops *ops;
    void *engine;
    struct pl_async_engine_params params;
    char *stall_file;               /* PAGELLM_TEST_STALL_FILE, or NULL */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct cmd *inbox_head, *inbox_tail;
    bool stop;
    bool thread_exited;
    int n_unfinished;
    uint64_t next_id;
    struct pl_engine_stats stats;
    double beat_time;               /* monotonic seconds of the last heartbeat */
    uint64_t beat_steps;
    double t_step_start;            /* engine thread: start of the current step */
    bool repoll;                    /* engine thread: the last poll failed, outputs wait */
    /* PAGELLM_PROFILE=1 (engine thread only; logged when the thread exits): where the
     * thread's busy time goes, steps against the host work between them, which is time
     * the device idles (the gap an overlapped step would hide) */
    bool profile;
    long prof_steps;
    double prof_step, prof_route, prof_cmds, prof_other; /* seconds */
    double prof_poll; /* the engine's poll, the part of prof_route that builds the deltas */

    /* The notifier thread calls the requests' notify (waking an HTTP connection costs
     * a syscall and a thread wake-up each, per request per step) so that the engine
     * thread can start the next step: the engine thread collects the requests routed
     * in a phase in nb (each with a reference), then hands them over into nq. */
    pthread_t notifier;
    bool notifier_started;          /* engine thread: false -> notify inline */
    pthread_mutex_t nmu;            /* guards nq, nq_len, nq_cap, nstop */
    pthread_cond_t ncv;
    struct pl_async_request **nq;   /* [nq_cap], nq_len waiting for the notifier */
    size_t nq_len, nq_cap;
    bool nstop;
    struct pl_async_request **nb;   /* engine thread: [nb_cap], nb_len to hand over */
    size_t nb_len, nb_cap;

    /* engine thread only: id -> request */
    struct pl_async_request **table;
    size_t table_cap;               /* power of two */
    size_t table_len;
};

double pl_async_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

const char *pl_async_finish_str(enum pl_async_finish f)
{
    switch (f) {
    case PL_ASYNC_FINISH_STOP: return "stop";
    case PL_ASYNC_FINISH_LENGTH: return "length";
    case PL_ASYNC_FINISH_ABORT: return "abort";
    case PL_ASYNC_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

void pl_async_output_free(struct pl_async_output *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n_samples; i++) {
        free(o->samples[i].text);
        free(o->samples[i].token_ids);
        free(o->samples[i].logprobs);
        free(o->samples[i].stop_str);
    }
    free(o->samples);
    free(o->prompt_logprobs);
    free(o->error_msg);
    free(o->embedding);
    free(o);
}

void pl_async_engine_params_default(struct pl_async_engine_params *p)
{
    memset(p, 0, sizeof(*p));
    p->max_pending = 1024;
    p->stall_timeout_s = 10.0;
}

/* ---- requests ------------------------------------------------------------ */

static void request_unref(struct pl_async_request *r)
{
    pthread_mutex_lock(&r->mu);
    int refs = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (refs > 0)
        return;
    for (int i = r->q_head; i < r->q_len; i++)
        pl_async_output_free(r->q[i]);
    free(r->q);
    free(r->prompt);
    pl_sampling_params_fini(&r->sp);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

uint64_t pl_async_request_id(const struct pl_async_request *r)
{
    return r->id;
}

struct pl_async_output *pl_async_request_pop(struct pl_async_request *r)
{
    struct pl_async_output *o = NULL;
    pthread_mutex_lock(&r->mu);
    if (r->q_head < r->q_len) {
        o = r->q[r->q_head++];
        if (r->q_head == r->q_len)
            r->q_head = r->q_len = 0;
    }
    pthread_mutex_unlock(&r->mu);
    return o;
}

bool pl_async_request_is_finished(struct pl_async_request *r)
{
    pthread_mutex_lock(&r->mu);
    bool f = r->finished;
    pthread_mutex_unlock(&r->mu);
    return f;
}

static void post(struct pl_async_engine *ae, struct cmd *c)
{
    c->next = NULL;
    if (ae->inbox_tail)
        ae->inbox_tail->next = c;
    else
        ae->inbox_head = c;
    ae->inbox_tail = c;
    pthread_cond_signal(&ae->cv);
}

void pl_async_request_abort(struct pl_async_request *r)
{
    pthread_mutex_lock(&r->mu);
    bool send = !r->finished && !r->abort_sent;
    r->abort_sent = true;
    pthread_mutex_unlock(&r->mu);
    if (!send)
        return;
    struct cmd *c = calloc(1, sizeof(*c));
    if (!c)
        return; /* the request then runs to its end: a waste, not a leak */
    c->kind = CMD_ABORT;
    c->request_id = r->id;
    pthread_mutex_lock(&r->ae->mu);
    post(r->ae, c);
    pthread_mutex_unlock(&r->ae->mu);
}

void pl_async_request_release(struct pl_async_request *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->notify = NULL;
    r->notify_user = NULL;
    pthread_mutex_unlock(&r->mu);
    request_unref(r);
}

/* ---- the id table (engine thread) ----------------------------------------- */

static size_t slot_of(uint64_t id, size_t cap)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

static bool table_put(struct pl_async_engine *ae, struct pl_async_request *r)
{
    if (ae->table_len + 1 > ae->table_cap) {
        size_t cap = ae->table_cap ? ae->table_cap * 2 : 256;
        struct pl_async_request **t = calloc(cap, sizeof(*t));
        if (!t)
            return false;
        for (size_t i = 0; i < ae->table_cap; i++) {
            for (struct pl_async_request *e = ae->table[i], *next; e; e = next) {
                next = e->hnext;
                size_t s = slot_of(e->id, cap);
                e->hnext = t[s];
                t[s] = e;
            }
        }
        free(ae->table);
        ae->table = t;
        ae->table_cap = cap;
    }
    size_t s = slot_of(r->id, ae->table_cap);
    r->hnext = ae->table[s];
    ae->table[s] = r;
    ae->table_len++;
    return true;
}

static struct pl_async_request *table_get(struct pl_async_engine *ae, uint64_t id)
{
    if (!ae->table_cap)
        return NULL;
    for (struct pl_async_request *e = ae->table[slot_of(id, ae->table_cap)]; e; e = e->hnext)
        if (e->id == id)
            return e;
    return NULL;
}

static void table_del(struct pl_async_engine *ae, struct pl_async_request *r)
{
    if (!ae->table_cap)
        return;
    struct pl_async_request **p = &ae->table[slot_of(r->id, ae->table_cap)];
    while (*p && *p != r)
        p = &(*p)->hnext;
    if (*p) {
        *p = r->hnext;
        ae->table_len--;
    }
}

/* ---- the notifier thread -------------------------------------------------- */

/* Notifies each request of list and drops the reference the engine thread took. */
static void notify_all(struct pl_async_request **list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct pl_async_request *r = list[i];
        pthread_mutex_lock(&r->mu);
        if (r->notify)
            r->notify(r->notify_user);
        pthread_mutex_unlock(&r->mu);
        request_unref(r);
    }
}

static void *notifier_main(void *arg)
{
    struct pl_async_engine *ae = arg;
    struct pl_async_request **work = NULL;
    size_t work_cap = 0;
    for (;;) {
        pthread_mutex_lock(&ae->nmu);
        while (!ae->nq_len && !ae->nstop)
            pthread_cond_wait(&ae->ncv, &ae->nmu);
        if (!ae->nq_len) { /* stopping, and nothing is left */
            pthread_mutex_unlock(&ae->nmu);
            break;
        }
        /* swap the buffers: the engine thread appends to the other one meanwhile */
        struct pl_async_request **list = ae->nq;
        size_t n = ae->nq_len, list_cap = ae->nq_cap;
        ae->nq = work;
        ae->nq_cap = work_cap;
        ae->nq_len = 0;
        work = list;
        work_cap = list_cap;
        pthread_mutex_unlock(&ae->nmu);
        notify_all(work, n);
    }
    free(work);
    return NULL;
}

/* Engine thread: queues r's notify for the notifier (r->mu held). False when it
 * must be called inline (no notifier, or no memory for the list). */
static bool defer_notify(struct pl_async_engine *ae, struct pl_async_request *r)
{
    if (!ae->notifier_started)
        return false;
    if (ae->nb_len == ae->nb_cap) {
        size_t cap = ae->nb_cap ? 2 * ae->nb_cap : 64;
        struct pl_async_request **nb = realloc(ae->nb, sizeof(*nb) * cap);
        if (!nb)
            return false;
        ae->nb = nb;
        ae->nb_cap = cap;
    }
    r->refs++; /* dropped by the notifier */
    ae->nb[ae->nb_len++] = r;
    return true;
}

/* Engine thread: hands the phase's notifies to the notifier (inline on no memory). */
static void flush_notifies(struct pl_async_engine *ae)
{
    if (!ae->nb_len)
        return;
    pthread_mutex_lock(&ae->nmu);
    bool ok = true;
    if (ae->nq_len + ae->nb_len > ae->nq_cap) {
        size_t cap = ae->nq_cap ? 2 * ae->nq_cap : 64;
        while (cap < ae->nq_len + ae->nb_len)
            cap *= 2;
        struct pl_async_request **nq = realloc(ae->nq, sizeof(*nq) * cap);
        if (nq) {
            ae->nq = nq;
            ae->nq_cap = cap;
        } else {
            ok = false;
        }
    }
    if (ok) {
        memcpy(ae->nq + ae->nq_len, ae->nb, sizeof(*ae->nb) * ae->nb_len);
        ae->nq_len += ae->nb_len;
        pthread_cond_signal(&ae->ncv);
    }
    pthread_mutex_unlock(&ae->nmu);
    if (!ok) /* a late wake-up is still a wake-up: its deltas are already queued */
        notify_all(ae->nb, ae->nb_len);
    ae->nb_len = 0;
}

/* ---- routing (engine thread) ---------------------------------------------- */

/* Queues o on r (takes ownership), notifies, and on the finished delta drops
 * the engine's reference. */
static void route(struct pl_async_engine *ae, struct pl_async_request *r, struct pl_async_output *o)
{
    double now = pl_async_now();
    bool has_tokens = false;
    for (int i = 0; i < o->n_samples; i++)
        has_tokens |= o->samples[i].n_token_ids > 0;
    if (has_tokens && r->t_first_token == 0)
        r->t_first_token = now;
    o->t_arrival = r->t_arrival;
    o->t_first_token = r->t_first_token;
    o->t_prev_token = r->t_last_token;
    o->t_step_start = ae->t_step_start ? ae->t_step_start : now;
    o->t_now = now;
    o->is_first = !r->routed_any;
    r->routed_any = true;
    if (has_tokens)
        r->t_last_token = now;
    /* the request's reason is the first sample finish it routed, whichever delta
     * carried it (the last delta may hold no sample at all); an error wins */
    for (int i = 0; i < o->n_samples && r->finish == PL_ASYNC_FINISH_NONE; i++)
        r->finish = o->samples[i].finish;
    if (o->error_msg)
        r->finish = PL_ASYNC_FINISH_ERROR;
    if (o->finished)
        o->finish = r->finish != PL_ASYNC_FINISH_NONE ? r->finish : PL_ASYNC_FINISH_ABORT;
    if (ae->params.observe)
        ae->params.observe(ae->params.observe_user, o);
    bool finished = o->finished;
    if (finished) {
        /* counted out before the waiter can see its last delta */
        pthread_mutex_lock(&ae->mu);
        ae->n_unfinished--;
        pthread_mutex_unlock(&ae->mu);
    }

    pthread_mutex_lock(&r->mu);
    if (r->q_len == r->q_cap) {
        int cap = r->q_cap ? r->q_cap * 2 : 8;
        struct pl_async_output **q = realloc(r->q, sizeof(*q) * (size_t)cap);
        if (!q) {
            /* drop a non-final delta rather than fail: its text is lost, the
             * request still ends (the final delta is forced through below) */
            pthread_mutex_unlock(&r->mu);
            pl_log(PL_LOG_ERROR, "async engine: out of memory routing a delta");
            if (!finished) {
                pl_async_output_free(o);
                return;
            }
            o->n_samples = 0;
            pthread_mutex_lock(&r->mu);
            /* reuse the slot of the oldest unread delta for the final one */
            if (r->q_len > r->q_head) {
                pl_async_output_free(r->q[r->q_len - 1]);
                r->q_len--;
            }
        } else {
            r->q = q;
            r->q_cap = cap;
        }
    }
    if (r->q_len < r->q_cap)
        r->q[r->q_len++] = o;
    else
        pl_async_output_free(o);
    if (finished)
        r->finished = true;
    if (r->notify && !defer_notify(ae, r))
        r->notify(r->notify_user);
    pthread_mutex_unlock(&r->mu);

    if (finished) {
        table_del(ae, r);
        request_unref(r);
    }
}

/* A finished delta carrying an error, for a request the engine refused or lost. */
static void route_error(struct pl_async_engine *ae, struct pl_async_request *r, pl_status st,
                        const char *msg)
{
    struct pl_async_output *o = calloc(1, sizeof(*o));
    if (!o) {
        /* last resort: mark finished without a delta so the waiter can end */
        pthread_mutex_lock(&r->mu);
        r->finished = true;
        if (r->notify)
            r->notify(r->notify_user);
        pthread_mutex_unlock(&r->mu);
        table_del(ae, r);
        pthread_mutex_lock(&ae->mu);
        ae->n_unfinished--;
        pthread_mutex_unlock(&ae->mu);
        request_unref(r);
        return;
    }
    o->request_id = r->id;
    o->n_prompt_tokens = r->n_prompt;
    o->finished = true;
    o->error_status = st;
    o->error_msg = strdup(msg ? msg : "engine error");
    route(ae, r, o);
}

static void heartbeat(struct pl_async_engine *ae, bool stepped)
{
    double now = pl_async_now();
    pthread_mutex_lock(&ae->mu);
    ae->beat_time = now;
    if (stepped)
        ae->beat_steps++;
    pthread_mutex_unlock(&ae->mu);
}

static bool stalled_by_test_hook(const struct pl_async_engine *ae)
{
    struct stat sb;
    return ae->stall_file && stat(ae->stall_file, &sb) == 0;
}

static void apply(struct pl_async_engine *ae, struct cmd *c)
{
    struct pl_err err = {0};
    switch (c->kind) {
    case CMD_ADD: {
        struct pl_async_request *r = c->req;
        if (!table_put(ae, r)) {
            /* not in the table: route_error's table_del finds nothing */
            route_error(ae, r, PL_STATUS_NO_MEMORY, "out of memory");
            break;
        }
        pl_status st;
        if (!r->pooling)
            st = ae->ops->add_request(ae->engine, r->id, r->prompt, r->n_prompt, &r->sp, &err);
        else if (ae->ops->add_pooling_request)
            st = ae->ops->add_pooling_request(ae->engine, r->id, r->prompt, r->n_prompt, &r->pool,
                                              &err);
        else
            st = pl_err_set(&err, PL_STATUS_UNSUPPORTED, "this engine cannot run pooling requests");
        free(r->prompt);
        r->prompt = NULL;
        pl_sampling_params_fini(&r->sp);
        if (st != PL_STATUS_OK)
            route_error(ae, r, st, err.msg);
        break;
    }
    case CMD_ABORT:
        if (table_get(ae, c->request_id))
            ae->ops->abort_request(ae->engine, c->request_id);
        break;
    case CMD_ABORT_ALL:
        for (size_t i = 0; i < ae->table_cap; i++)
            for (struct pl_async_request *e = ae->table[i]; e; e = e->hnext)
                ae->ops->abort_request(ae->engine, e->id);
        break;
    }
}

/* Routes everything the engine has; returns how many requests it finished. A
 * failed poll (out of memory: nothing is lost) is retried by the loop. */
static int poll_and_route(struct pl_async_engine *ae)
{
    struct pl_err err = {0};
    struct pl_async_output **outs = NULL;
    int n = 0, n_finished = 0;
    double t0 = ae->profile ? pl_async_now() : 0.0;
    pl_status pst = ae->ops->poll(ae->engine, &outs, &n, &err);
    if (ae->profile)
        ae->prof_poll += pl_async_now() - t0;
    if (pst != PL_STATUS_OK) {
        pl_log(PL_LOG_ERROR, "engine poll failed (retrying): %s", err.msg);
        ae->repoll = true;
        return 0;
    }
    ae->repoll = false;
    for (int i = 0; i < n; i++) {
        struct pl_async_request *r = table_get(ae, outs[i]->request_id);
        n_finished += r && outs[i]->finished;
        if (r)
            route(ae, r, outs[i]);
        else
            pl_async_output_free(outs[i]);
    }
    free(outs);
    flush_notifies(ae);
    return n_finished;
}

/* Ends every request still in the table with an error (the engine will not). */
static void fail_all(struct pl_async_engine *ae, pl_status st, const char *msg)
{
    for (size_t i = 0; i < ae->table_cap; i++) {
        while (ae->table[i]) {
            ae->ops->abort_request(ae->engine, ae->table[i]->id); /* frees its blocks */
            route_error(ae, ae->table[i], st, msg);
        }
    }
    flush_notifies(ae);
}

static void *engine_main(void *arg)
{
    struct pl_async_engine *ae = arg;
    struct pl_err err = {0};
    /* without a notifier thread, notify runs inline: slower, never wrong */
    ae->notifier_started = pthread_create(&ae->notifier, NULL, notifier_main, ae) == 0;
    for (;;) {
        pthread_mutex_lock(&ae->mu);
        while (!ae->stop && !ae->inbox_head && !ae->repoll &&
               !ae->ops->has_unfinished(ae->engine)) {
            pthread_cond_wait(&ae->cv, &ae->mu);
            ae->beat_time = pl_async_now(); /* waking up is progress */
        }
        struct cmd *cmds = ae->inbox_head;
        ae->inbox_head = ae->inbox_tail = NULL;
        bool stop = ae->stop;
        pthread_mutex_unlock(&ae->mu);

        double t_cmds = ae->profile ? pl_async_now() : 0.0;
        while (cmds) {
            struct cmd *next = cmds->next;
            apply(ae, cmds);
            free(cmds);
            cmds = next;
        }
        flush_notifies(ae);
        if (ae->profile)
            ae->prof_cmds += pl_async_now() - t_cmds;
        if (stop)
            break;
        if (ae->repoll) {
            poll_and_route(ae);
            if (ae->repoll) { /* still out of memory: give the rest of the process a moment */
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
        }
        if (!ae->ops->has_unfinished(ae->engine)) {
            /* Nothing runs and every output was taken: a request still waiting here
             * was lost by the engine (out of memory on its way out). End it rather
             * than let its client wait for ever. */
            if (!ae->repoll && ae->table_len > 0) {
                pl_log(PL_LOG_ERROR, "async engine: %zu requests ended without a last delta",
                       ae->table_len);
                fail_all(ae, PL_STATUS_INTERNAL, "the engine lost this request");
            }
            continue;
        }
        if (stalled_by_test_hook(ae)) {
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL);
            continue;
        }
        ae->t_step_start = pl_async_now();
        pl_status step_st = ae->ops->step(ae->engine, &err);
        double t_route = ae->profile ? pl_async_now() : 0.0;
        if (step_st != PL_STATUS_OK)
            pl_log(PL_LOG_ERROR, "engine step failed: %s", err.msg);
        /* the step's ends -- normal or failed -- go out now, not with a later step */
        int n_finished = poll_and_route(ae);
        double t_other = ae->profile ? pl_async_now() : 0.0;
        if (step_st != PL_STATUS_OK && n_finished == 0 && !ae->repoll) {
            /* The engine failed the step but ended nothing: it cannot tell which
             * requests the failure touched, so all of them fail, with the error
             * (never a normal finish), rather than spin on it. */
            char msg[PL_ERR_MSG_MAX + 32];
            snprintf(msg, sizeof(msg), "engine step failed: %s", err.msg);
            fail_all(ae, step_st, msg);
        }
        struct pl_engine_stats st;
        memset(&st, 0, sizeof(st));
        ae->ops->get_stats(ae->engine, &st);
        pthread_mutex_lock(&ae->mu);
        ae->stats = st;
        pthread_mutex_unlock(&ae->mu);
        heartbeat(ae, true);
        if (ae->profile) {
            ae->prof_steps++;
            ae->prof_step += t_route - ae->t_step_start;
            ae->prof_route += t_other - t_route;
            ae->prof_other += pl_async_now() - t_other;
        }
    }
    if (ae->profile && ae->prof_steps > 0) {
        const double n = (double)ae->prof_steps, ms = 1e3;
        PL_INFO("async engine profile: %ld steps, %.3f ms per step in the engine; between "
                "steps (the device idles): routing outputs %.3f ms (of which the engine's "
                "poll %.3f ms), applying commands %.3f ms, stats and heartbeat %.3f ms per step",
                ae->prof_steps, ae->prof_step / n * ms, ae->prof_route / n * ms,
                ae->prof_poll / n * ms,
                ae->prof_cmds / n * ms, ae->prof_other / n * ms);
    }

    /* shutting down: abort what runs, let the engine report it, end the rest */
    for (size_t i = 0; i < ae->table_cap; i++)
        for (struct pl_async_request *e = ae->table[i]; e; e = e->hnext)
            ae->ops->abort_request(ae->engine, e->id);
    for (int guard = 0; guard < 1000 && ae->ops->has_unfinished(ae->engine); guard++) {
        ae->ops->step(ae->engine, &err); /* a failed step ends its requests too */
        poll_and_route(ae);
    }
    poll_and_route(ae);
    for (size_t i = 0; i < ae->table_cap; i++) {
        while (ae->table[i])
            route_error(ae, ae->table[i], PL_STATUS_ABORTED, "server shutting down");
    }
    flush_notifies(ae);
    if (ae->notifier_started) { /* every wake-up is delivered before the thread counts as gone */
        pthread_mutex_lock(&ae->nmu);
        ae->nstop = true;
        pthread_cond_signal(&ae->ncv);
        pthread_mutex_unlock(&ae->nmu);
        pthread_join(ae->notifier, NULL);
        ae->notifier_started = false;
    }
    pthread_mutex_lock(&ae->mu);
    ae->thread_exited = true;
    pthread_mutex_unlock(&ae->mu);
    return NULL;
}

/* ---- public -------------------------------------------------------------- */

pl_status pl_async_engine_new(const struct pl_engine_ops *ops, void *engine,
                              const struct pl_async_engine_params *params,
                              struct pl_async_engine **out, struct pl_err *err)
{
    *out = NULL;
    struct pl_async_engine *ae = calloc(1, sizeof(*ae));
    if (!ae)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    ae->ops = ops;
    ae->engine = engine;
    if (params)
        ae->params = *params;
    else
        pl_async_engine_params_default(&ae->params);
    const char *prof = getenv("PAGELLM_PROFILE");
    ae->profile = prof && strcmp(prof, "0");
    const char *stall = getenv("PAGELLM_TEST_STALL_FILE");
    if (stall && *stall)
        ae->stall_file = strdup(stall);
    ae->next_id = 1;
    ae->beat_time = pl_async_now();
    pthread_mutex_init(&ae->mu, NULL);
    pthread_cond_init(&ae->cv, NULL);
    pthread_mutex_init(&ae->nmu, NULL);
    pthread_cond_init(&ae->ncv, NULL);
    int rc = pthread_create(&ae->thread, NULL, engine_main, ae);
    if (rc) {
        pl_async_engine_free(ae);
        return pl_err_set(err, PL_STATUS_INTERNAL, "cannot start the engine thread: %s",
                          strerror(rc));
    }
    ae->thread_started = true;
    *out = ae;
    return PL_STATUS_OK;
}

void pl_async_engine_free(struct pl_async_engine *ae)
{
    if (!ae)
        return;
    if (ae->thread_started) {
        pthread_mutex_lock(&ae->mu);
        ae->stop = true;
        pthread_cond_signal(&ae->cv);
        pthread_mutex_unlock(&ae->mu);
        pthread_join(ae->thread, NULL);
    }
    /* commands posted after the thread left (aborts) */
    for (struct cmd *c = ae->inbox_head, *next; c; c = next) {
        next = c->next;
        if (c->kind == CMD_ADD)
            request_unref(c->req);
        free(c);
    }
    free(ae->table);
    free(ae->stall_file);
    free(ae->nq);
    free(ae->nb);
    pthread_cond_destroy(&ae->ncv);
    pthread_mutex_destroy(&ae->nmu);
    pthread_cond_destroy(&ae->cv);
    pthread_mutex_destroy(&ae->mu);
    free(ae);
}

/* A request handle (*out) and its add command (*cmd_out), not yet posted. */
static pl_status request_new(const struct pl_async_submission *sub, pl_async_notify_fn notify,
                             void *notify_user, struct pl_async_request **out,
                             struct cmd **cmd_out, struct pl_err *err)
{
    *out = NULL;
    *cmd_out = NULL;
    if (sub->n_prompt < 0 || (sub->n_prompt > 0 && !sub->prompt_ids))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompt: bad token ids");
    struct pl_async_request *r = calloc(1, sizeof(*r));
    struct cmd *c = calloc(1, sizeof(*c));
    if (r)
        r->prompt = malloc(sizeof(int32_t) * (size_t)(sub->n_prompt > 0 ? sub->n_prompt : 1));
    if (!r || !c || !r->prompt) {
        if (r)
            free(r->prompt);
        free(r);
        free(c);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    if (sub->n_prompt)
        memcpy(r->prompt, sub->prompt_ids, sizeof(int32_t) * (size_t)sub->n_prompt);
    r->n_prompt = sub->n_prompt;
    pl_sampling_params_default(&r->sp);
    if (sub->pooling) {
        r->pooling = true;
        r->pool = *sub->pooling;
    }
    if (sub->params && pl_sampling_params_copy(&r->sp, sub->params, err) != PL_STATUS_OK) {
        free(r->prompt);
        free(r);
        free(c);
        return PL_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&r->mu, NULL);
    r->refs = 2;
    r->notify = notify;
    r->notify_user = notify_user;
    r->t_arrival = pl_async_now();
    c->kind = CMD_ADD;
    c->req = r;
    *out = r;
    *cmd_out = c;
    return PL_STATUS_OK;
}

pl_status pl_async_engine_submit_all(struct pl_async_engine *ae,
                                     const struct pl_async_submission *subs, int n,
                                     pl_async_notify_fn notify, void *notify_user,
                                     struct pl_async_request **out, struct pl_err *err)
{
    if (n < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "nothing to submit");
    for (int i = 0; i < n; i++)
        out[i] = NULL;
    /* a request larger than the whole admission limit can never be admitted:
     * refuse it before building anything (not a retryable overload) */
    if (n > 1 && n > ae->params.max_pending)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "this request has %d prompts; the server admits at most %d pending "
                          "requests at once (--max-pending-requests)",
                          n, ae->params.max_pending);
    struct cmd **cmds = calloc((size_t)n, sizeof(*cmds));
    if (!cmds)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    pl_status st = PL_STATUS_OK;
    for (int i = 0; i < n && st == PL_STATUS_OK; i++)
        st = request_new(&subs[i], notify, notify_user, &out[i], &cmds[i], err);
    if (st == PL_STATUS_OK) {
        /* all or nothing, under one lock: nobody else is admitted or refused
         * because of half of this request */
        pthread_mutex_lock(&ae->mu);
        if (ae->stop || ae->thread_exited)
            st = pl_err_set(err, PL_STATUS_ABORTED, "the server is shutting down");
        else if (ae->n_unfinished + n > ae->params.max_pending)
            st = pl_err_set(err, PL_STATUS_LIMIT,
                            "the server is overloaded: %d requests are already pending",
                            ae->n_unfinished);
        if (st == PL_STATUS_OK) {
            if (ae->n_unfinished == 0)
                ae->beat_time = out[0]->t_arrival; /* idle time is not a stall */
            for (int i = 0; i < n; i++) {
                out[i]->id = ae->next_id++;
                out[i]->ae = ae;
                ae->n_unfinished++;
                post(ae, cmds[i]);
            }
        }
        pthread_mutex_unlock(&ae->mu);
    }
    if (st != PL_STATUS_OK) {
        for (int i = 0; i < n; i++) {
            free(cmds[i]);
            if (out[i]) {
                out[i]->refs = 1;
                request_unref(out[i]);
                out[i] = NULL;
            }
        }
    }
    free(cmds);
    return st;
}

pl_status pl_async_engine_submit(struct pl_async_engine *ae, const int32_t *prompt_ids,
                                 int n_prompt, const struct pl_sampling_params *params,
                                 pl_async_notify_fn notify, void *notify_user,
                                 struct pl_async_request **out, struct pl_err *err)
{
    struct pl_async_submission sub = {prompt_ids, n_prompt, params, NULL};
    return pl_async_engine_submit_all(ae, &sub, 1, notify, notify_user, out, err);
}

pl_status pl_async_engine_submit_pooling(struct pl_async_engine *ae, const int32_t *prompt_ids,
                                         int n_prompt, const struct pl_pooling_params *params,
                                         pl_async_notify_fn notify, void *notify_user,
                                         struct pl_async_request **out, struct pl_err *err)
{
    struct pl_pooling_params dflt;
    pl_pooling_params_default(&dflt);
    struct pl_async_submission sub = {prompt_ids, n_prompt, NULL, params ? params : &dflt};
    return pl_async_engine_submit_all(ae, &sub, 1, notify, notify_user, out, err);
}

void pl_async_engine_abort_all(struct pl_async_engine *ae)
{
    struct cmd *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->kind = CMD_ABORT_ALL;
    pthread_mutex_lock(&ae->mu);
    post(ae, c);
    pthread_mutex_unlock(&ae->mu);
}

int pl_async_engine_num_unfinished(struct pl_async_engine *ae)
{
    pthread_mutex_lock(&ae->mu);
    int n = ae->n_unfinished;
    pthread_mutex_unlock(&ae->mu);
    return n;
}

void pl_async_engine_stats(struct pl_async_engine *ae, struct pl_engine_stats *out)
{
    pthread_mutex_lock(&ae->mu);
    *out = ae->stats;
    pthread_mutex_unlock(&ae->mu);
}

bool pl_async_engine_is_healthy(struct pl_async_engine *ae, double *age_s)
{
    double now = pl_async_now();
    pthread_mutex_lock(&ae->mu);
    double age = now - ae->beat_time;
    bool ok = !ae->thread_exited &&
              !(ae->n_unfinished > 0 && age > ae->params.stall_timeout_s);
    pthread_mutex_unlock(&ae->mu);
    if (age_s)
        *age_s = age;
    return ok;
}
