/*
 * async_engine.c -- the engine thread, its inbox, and per-request outboxes.
 *
 * See async_engine.h for the contract. Locks: ae->mu guards the inbox, the
 * counters, the stats copy and the heartbeat; r->mu guards one request's
 * outbox, flags and notify pointer. Lock order: a request's lock is never held
 * while taking ae->mu, except in pl_async_request_abort, which takes r->mu,
 * reads, releases it and only then takes ae->mu. The id -> request table is
 * touched by the engine thread only.
 * Deltas are the engine's struct pl_request_output, moved from the poll
 * buffer (ae->poll_buf, sized at creation) into a heap struct per delta --
 * the request's reserved one (r->final) for its last -- and queued.
 */
#include "engine/sampling_params.h"
#include "engine/async_engine.h"

#include "util/clock.h"
#include "util/debug_env.h"
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
    char *name, *prompt_text;       /* or NULL */
    double t_arrival;
    /* outbox (guarded by mu) */
    pthread_cond_t cv;              /* signalled when a delta is queued */
    struct pl_request_output **q;   /* [q_cap], live entries q_head..q_len */
    int q_head, q_len, q_cap;
    bool finished;                  /* finished delta routed */
    bool abort_sent;
    pl_async_notify_fn notify;      /* NULL after release */
    void *notify_user;
    /* engine thread only */
    struct pl_request_output *final; /* reserved at submit for the last delta; NULL once used */
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
    struct pl_llm_stats stats;
    double beat_time;               /* monotonic seconds of the last heartbeat */
    uint64_t beat_steps;
    struct pl_request_output *poll_buf; /* engine thread: [POLL_CAP] */

    /* engine thread only: id -> request */
    struct pl_async_request **table;
    size_t table_cap;               /* power of two */
    size_t table_len;
};

/* Deltas taken from the engine per poll call (more are taken by calling again). */
#define POLL_CAP 64

double pl_async_now(void)
{
    return pl_clock_seconds();
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
        pl_request_output_free(r->q[i]);
    free(r->q);
    free(r->final);
    free(r->prompt);
    free(r->name);
    free(r->prompt_text);
    pl_sampling_params_fini(&r->sp);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

uint64_t pl_async_request_id(const struct pl_async_request *r)
{
    return r->id;
}

/* With r->mu held. */
static struct pl_request_output *pop_locked(struct pl_async_request *r)
{
    struct pl_request_output *o = NULL;
    if (r->q_head < r->q_len) {
        o = r->q[r->q_head++];
        if (r->q_head == r->q_len)
            r->q_head = r->q_len = 0;
    }
    return o;
}

struct pl_request_output *pl_async_request_pop(struct pl_async_request *r)
{
    pthread_mutex_lock(&r->mu);
    struct pl_request_output *o = pop_locked(r);
    pthread_mutex_unlock(&r->mu);
    return o;
}

struct pl_request_output *pl_async_request_wait(struct pl_async_request *r, double timeout_s)
{
    struct timespec deadline;
    if (timeout_s > 0) {
        clock_gettime(CLOCK_REALTIME, &deadline); /* pthread_cond_timedwait's clock */
        double t = (double)deadline.tv_sec + (double)deadline.tv_nsec * 1e-9 + timeout_s;
        deadline.tv_sec = (time_t)t;
        deadline.tv_nsec = (long)((t - (double)deadline.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&r->mu);
    struct pl_request_output *o = pop_locked(r);
    while (!o && !r->finished && timeout_s != 0) {
        if (timeout_s < 0)
            pthread_cond_wait(&r->cv, &r->mu);
        else if (pthread_cond_timedwait(&r->cv, &r->mu, &deadline) == ETIMEDOUT)
            timeout_s = 0;
        o = pop_locked(r);
    }
    if (!o)
        o = pop_locked(r);
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

/* ---- routing (engine thread) ---------------------------------------------- */

/* Moves *item (zeroed afterwards) to r's outbox, notifies, and on the finished
 * delta drops the engine's reference. The last delta goes into the struct and
 * outbox slot reserved at submit: it is never dropped. */
static void route(struct pl_async_engine *ae, struct pl_async_request *r,
                  struct pl_request_output *item)
{
    bool finished = item->finished;
    struct pl_request_output *o;
    if (finished && r->final) {
        o = r->final;
        r->final = NULL;
    } else {
        o = malloc(sizeof(*o));
    }
    if (!o) {
        /* a non-final delta: its news is lost, the request still ends */
        pl_log(PL_LOG_ERROR, "async engine: out of memory routing a delta");
        pl_request_output_fini(item);
        return;
    }
    *o = *item;
    memset(item, 0, sizeof(*item));
    if (ae->params.observe)
        ae->params.observe(ae->params.observe_user, o);
    if (finished) {
        /* counted out before the waiter can see its last delta */
        pthread_mutex_lock(&ae->mu);
        ae->n_unfinished--;
        pthread_mutex_unlock(&ae->mu);
    }

    pthread_mutex_lock(&r->mu);
    if (r->q_len == r->q_cap) {
        int cap = r->q_cap * 2;
        struct pl_request_output **q = realloc(r->q, sizeof(*q) * (size_t)cap);
        if (q) {
            r->q = q;
            r->q_cap = cap;
        } else if (!finished) {
            pthread_mutex_unlock(&r->mu);
            pl_log(PL_LOG_ERROR, "async engine: out of memory queueing a delta");
            pl_request_output_free(o);
            return;
        } else {
            /* the last delta takes the newest unread one's slot (its news is lost) */
            pl_log(PL_LOG_ERROR, "async engine: out of memory queueing a delta");
            pl_request_output_free(r->q[--r->q_len]);
        }
    }
    r->q[r->q_len++] = o;
    if (finished)
        r->finished = true;
    if (r->notify)
        r->notify(r->notify_user);
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);

    if (finished) {
        table_del(ae, r);
        request_unref(r);
    }
}

/* A finished delta carrying an error, for a request the engine refused or lost
 * (built in the reserved struct: only its texts may be missing). */
static void route_error(struct pl_async_engine *ae, struct pl_async_request *r, pl_status st,
                        const char *msg)
{
    struct pl_request_output o;
    memset(&o, 0, sizeof(o));
    char num[24];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)r->id);
    o.request_num = r->id;
    o.request_id = strdup(r->name ? r->name : num);
    o.finished = true;
    o.finish_reason = PL_FINISH_ERROR;
    o.error_status = st != PL_STATUS_OK ? st : PL_STATUS_INTERNAL;
    o.error = strdup(msg ? msg : "engine error");
    o.metrics.arrival_time = r->t_arrival;
    o.metrics.finished_time = pl_async_now();
    route(ae, r, &o);
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
        struct pl_engine_request er = {0};
        er.request_id = r->id;
        er.name = r->name;
        er.prompt_text = r->prompt_text;
        er.prompt = r->prompt;
        er.n_prompt = r->n_prompt;
        er.params = r->pooling ? NULL : &r->sp;
        er.pooling = r->pooling ? &r->pool : NULL;
        er.arrival_time = r->t_arrival;
        pl_status st = ae->ops->add_request(ae->engine, &er, &err);
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

/* Routes everything the engine has; returns how many requests it finished. */
static int poll_and_route(struct pl_async_engine *ae)
{
    int n, n_finished = 0;
    do {
        n = ae->ops->poll(ae->engine, ae->poll_buf, POLL_CAP);
        for (int i = 0; i < n; i++) {
            struct pl_request_output *o = &ae->poll_buf[i];
            struct pl_async_request *r = table_get(ae, o->request_num);
            n_finished += r && o->finished;
            if (r)
                route(ae, r, o);
            else
                pl_request_output_fini(o);
        }
    } while (n == POLL_CAP);
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
}

static void *engine_main(void *arg)
{
    struct pl_async_engine *ae = arg;
    struct pl_err err = {0};
    for (;;) {
        pthread_mutex_lock(&ae->mu);
        while (!ae->stop && !ae->inbox_head && !ae->ops->has_unfinished(ae->engine)) {
            pthread_cond_wait(&ae->cv, &ae->mu);
            ae->beat_time = pl_async_now(); /* waking up is progress */
        }
        struct cmd *cmds = ae->inbox_head;
        ae->inbox_head = ae->inbox_tail = NULL;
        bool stop = ae->stop;
        pthread_mutex_unlock(&ae->mu);

        while (cmds) {
            struct cmd *next = cmds->next;
            apply(ae, cmds);
            free(cmds);
            cmds = next;
        }
        if (stop)
            break;
        if (!ae->ops->has_unfinished(ae->engine)) {
            /* Nothing runs: a request still waiting here was lost by the engine
             * (which breaks its contract). End it rather than let its client
             * wait for ever. */
            poll_and_route(ae);
            if (ae->table_len > 0) {
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
        pl_status step_st = ae->ops->step(ae->engine, &err);
        if (step_st != PL_STATUS_OK)
            pl_log(PL_LOG_ERROR, "engine step failed: %s", err.msg);
        /* the step's ends -- normal or failed -- go out now, not with a later step */
        int n_finished = poll_and_route(ae);
        if (step_st != PL_STATUS_OK && n_finished == 0) {
            /* The engine failed the step but ended nothing: it cannot tell which
             * requests the failure touched, so all of them fail, with the error
             * (never a normal finish), rather than spin on it. */
            char msg[PL_ERR_MSG_MAX + 32];
            snprintf(msg, sizeof(msg), "engine step failed: %s", err.msg);
            fail_all(ae, step_st, msg);
        }
        struct pl_llm_stats st;
        memset(&st, 0, sizeof(st));
        ae->ops->get_stats(ae->engine, &st);
        pthread_mutex_lock(&ae->mu);
        ae->stats = st;
        pthread_mutex_unlock(&ae->mu);
        heartbeat(ae, true);
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
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    if (dbg.test_stall_file)
        ae->stall_file = strdup(dbg.test_stall_file);
    ae->next_id = 1;
    ae->beat_time = pl_async_now();
    ae->poll_buf = calloc(POLL_CAP, sizeof(*ae->poll_buf));
    if (!ae->poll_buf) {
        free(ae->stall_file);
        free(ae);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    pthread_mutex_init(&ae->mu, NULL);
    pthread_cond_init(&ae->cv, NULL);
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
    free(ae->poll_buf);
    free(ae->stall_file);
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
    bool ok = r && c;
    if (ok) {
        r->prompt = malloc(sizeof(int32_t) * (size_t)(sub->n_prompt > 0 ? sub->n_prompt : 1));
        r->final = calloc(1, sizeof(*r->final));
        r->q_cap = 4;
        r->q = malloc(sizeof(*r->q) * (size_t)r->q_cap);
        r->name = sub->name ? strdup(sub->name) : NULL;
        r->prompt_text = sub->prompt_text ? strdup(sub->prompt_text) : NULL;
        pl_sampling_params_default(&r->sp);
        ok = r->prompt && r->final && r->q && (!sub->name || r->name) &&
             (!sub->prompt_text || r->prompt_text) &&
             (!sub->params || pl_sampling_params_copy(&r->sp, sub->params, err) == PL_STATUS_OK);
    }
    if (!ok) {
        if (r) {
            free(r->prompt);
            free(r->final);
            free(r->q);
            free(r->name);
            free(r->prompt_text);
            pl_sampling_params_fini(&r->sp);
        }
        free(r);
        free(c);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    if (sub->n_prompt)
        memcpy(r->prompt, sub->prompt_ids, sizeof(int32_t) * (size_t)sub->n_prompt);
    r->n_prompt = sub->n_prompt;
    if (sub->pooling) {
        r->pooling = true;
        r->pool = *sub->pooling;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
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
    struct pl_async_submission sub = {prompt_ids, n_prompt, params, NULL, NULL, NULL};
    return pl_async_engine_submit_all(ae, &sub, 1, notify, notify_user, out, err);
}

pl_status pl_async_engine_submit_pooling(struct pl_async_engine *ae, const int32_t *prompt_ids,
                                         int n_prompt, const struct pl_pooling_params *params,
                                         pl_async_notify_fn notify, void *notify_user,
                                         struct pl_async_request **out, struct pl_err *err)
{
    struct pl_pooling_params dflt;
    pl_pooling_params_default(&dflt);
    struct pl_async_submission sub = {prompt_ids, n_prompt, NULL, params ? params : &dflt, NULL,
                                      NULL};
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

void pl_async_engine_stats(struct pl_async_engine *ae, struct pl_llm_stats *out)
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
