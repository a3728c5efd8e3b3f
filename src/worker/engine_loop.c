/*
 * engine_loop.c -- the worker's engine thread (see engine_loop.h).
 *
 * Loop: take queued submissions and aborts under the queue lock, add/abort
 * on the pl_llm without it, step once, poll, and hand each delta to its
 * box. The queue lock is never held across a step, so submitting never
 * waits for decoding. Request ids are unique because the job runner prefixes
 * them with the job id; the route table maps each live id to its box.
 */
#include "worker/engine_loop.h"

#include "util/log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wev {
    struct wev *next;
    int kind;                      /* 1 delta, -1 error */
    struct pl_request_output out;
    char msg[512];
};

struct pl_wbox {
    struct pl_weng *eng;
    pthread_mutex_t m;
    pthread_cond_t cv;
    struct wev *head, *tail;
    int n_pending;                 /* submitted, not yet finished */
    bool aborted;
};

struct wsub {
    struct wsub *next;
    struct pl_wbox *box;
    char *rid, *text, *messages, *tmpl;
    struct pl_sampling_params sp;
};

struct wabort {
    struct wabort *next;
    struct pl_wbox *box;
};

struct route {
    char *rid;
    struct pl_wbox *box;
};

struct pl_weng {
    struct pl_llm *llm;
    pthread_t th;
    pthread_mutex_t m;
    pthread_cond_t cv;
    bool stop;
    struct wsub *subs, *subs_tail;
    struct wabort *aborts;
    struct route *routes;          /* engine thread only */
    int n_routes, cap_routes;
};

void pl_request_output_fini(struct pl_request_output *o)
{
    struct pl_outputs w = {malloc(sizeof(*o)), 1};
    if (!w.items)
        return;
    w.items[0] = *o;
    pl_outputs_free(&w);
    memset(o, 0, sizeof(*o));
}

static void box_push(struct pl_wbox *b, int kind, struct pl_request_output *o, const char *msg,
                     bool finished)
{
    struct wev *ev = calloc(1, sizeof(*ev));
    pthread_mutex_lock(&b->m);
    if (ev) {
        ev->kind = kind;
        if (o)
            ev->out = *o;
        if (msg)
            snprintf(ev->msg, sizeof(ev->msg), "%s", msg);
        if (b->tail)
            b->tail->next = ev;
        else
            b->head = ev;
        b->tail = ev;
    } else if (o) {
        pl_request_output_fini(o);
    }
    if (finished)
        b->n_pending--;
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->m);
}

static int route_find(struct pl_weng *e, const char *rid)
{
    for (int i = 0; i < e->n_routes; i++)
        if (!strcmp(e->routes[i].rid, rid))
            return i;
    return -1;
}

static void route_del(struct pl_weng *e, int i)
{
    free(e->routes[i].rid);
    e->routes[i] = e->routes[--e->n_routes];
}

static void do_submit(struct pl_weng *e, struct wsub *s)
{
    struct pl_wbox *b = s->box;
    pthread_mutex_lock(&b->m);
    bool aborted = b->aborted;
    pthread_mutex_unlock(&b->m);
    if (aborted) {
        box_push(b, -1, NULL, "aborted", true);
        return;
    }
    if (e->n_routes == e->cap_routes) {
        int cap = e->cap_routes ? e->cap_routes * 2 : 64;
        struct route *r = realloc(e->routes, (size_t)cap * sizeof(*r));
        if (!r) {
            box_push(b, -1, NULL, "out of memory", true);
            return;
        }
        e->routes = r;
        e->cap_routes = cap;
    }
    pl_status st;
    if (s->messages) {
        struct pl_chat_options o;
        pl_chat_options_default(&o);
        o.chat_template = s->tmpl;
        char *prompt = NULL;
        st = pl_llm_apply_chat_template(e->llm, s->messages, &o, &prompt);
        int32_t *ids = NULL;
        int n = 0;
        if (st == PL_STATUS_OK)
            st = pl_llm_encode(e->llm, prompt, false, &ids, &n);
        if (st == PL_STATUS_OK) {
            struct pl_prompt p = {prompt, ids, n};
            st = pl_llm_add_request(e->llm, s->rid, &p, &s->sp);
        }
        pl_free(ids);
        pl_free(prompt);
    } else {
        struct pl_prompt p = {s->text, NULL, 0};
        st = pl_llm_add_request(e->llm, s->rid, &p, &s->sp);
    }
    if (st != PL_STATUS_OK) {
        box_push(b, -1, NULL, pl_llm_errmsg(e->llm), true);
        return;
    }
    e->routes[e->n_routes].rid = s->rid;
    e->routes[e->n_routes].box = b;
    e->n_routes++;
    s->rid = NULL;
}

static void sub_free(struct wsub *s)
{
    free(s->rid);
    free(s->text);
    free(s->messages);
    free(s->tmpl);
    pl_sampling_params_fini(&s->sp);
    free(s);
}

static void deliver(struct pl_weng *e, struct pl_outputs *got)
{
    for (int k = 0; k < got->n; k++) {
        struct pl_request_output *o = &got->items[k];
        int i = route_find(e, o->request_id);
        if (i < 0)
            continue;
        struct pl_wbox *b = e->routes[i].box;
        bool fin = o->finished;
        if (fin)
            route_del(e, i);
        box_push(b, 1, o, NULL, fin);
        memset(o, 0, sizeof(*o)); /* moved */
    }
}

/* A failed step: fail every live request and leave the engine empty. */
static void fail_all(struct pl_weng *e, const char *msg)
{
    PL_ERROR("worker engine: step failed: %s", msg);
    for (int i = 0; i < e->n_routes; i++)
        pl_llm_abort(e->llm, e->routes[i].rid);
    for (int guard = 0; guard < 1000 && pl_llm_has_unfinished(e->llm); guard++)
        if (pl_llm_step(e->llm) != PL_STATUS_OK)
            break;
    struct pl_outputs got;
    pl_llm_poll(e->llm, &got);
    pl_outputs_free(&got);
    char buf[512];
    snprintf(buf, sizeof(buf), "engine step failed: %s", msg);
    while (e->n_routes > 0) {
        struct pl_wbox *b = e->routes[0].box;
        route_del(e, 0);
        box_push(b, -1, NULL, buf, true);
    }
}

static void *engine_main(void *arg)
{
    struct pl_weng *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->m);
        while (!e->stop && !e->subs && !e->aborts && e->n_routes == 0 &&
               !pl_llm_has_unfinished(e->llm))
            pthread_cond_wait(&e->cv, &e->m);
        if (e->stop && e->n_routes == 0 && !e->subs) {
            pthread_mutex_unlock(&e->m);
            break;
        }
        struct wsub *subs = e->subs;
        struct wabort *aborts = e->aborts;
        e->subs = e->subs_tail = NULL;
        e->aborts = NULL;
        pthread_mutex_unlock(&e->m);

        while (subs) {
            struct wsub *n = subs->next;
            do_submit(e, subs);
            sub_free(subs);
            subs = n;
        }
        while (aborts) {
            struct wabort *n = aborts->next;
            for (int i = 0; i < e->n_routes; i++)
                if (e->routes[i].box == aborts->box)
                    pl_llm_abort(e->llm, e->routes[i].rid);
            free(aborts);
            aborts = n;
        }
        if (pl_llm_has_unfinished(e->llm)) {
            if (pl_llm_step(e->llm) != PL_STATUS_OK) {
                fail_all(e, pl_llm_errmsg(e->llm));
                continue;
            }
        }
        struct pl_outputs got;
        if (pl_llm_poll(e->llm, &got) == PL_STATUS_OK)
            deliver(e, &got);
        pl_outputs_free(&got);
    }
    return NULL;
}

struct pl_weng *pl_weng_start(struct pl_llm *llm)
{
    struct pl_weng *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->llm = llm;
    pthread_mutex_init(&e->m, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (pthread_create(&e->th, NULL, engine_main, e) != 0) {
        pthread_mutex_destroy(&e->m);
        pthread_cond_destroy(&e->cv);
        free(e);
        return NULL;
    }
    return e;
}

void pl_weng_stop(struct pl_weng *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->m);
    e->stop = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->m);
    pthread_join(e->th, NULL);
    for (int i = 0; i < e->n_routes; i++)
        free(e->routes[i].rid);
    free(e->routes);
    pthread_mutex_destroy(&e->m);
    pthread_cond_destroy(&e->cv);
    free(e);
}

struct pl_wbox *pl_wbox_new(struct pl_weng *e)
{
    struct pl_wbox *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->eng = e;
    pthread_mutex_init(&b->m, NULL);
    pthread_cond_init(&b->cv, NULL);
    return b;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

pl_status pl_wbox_submit(struct pl_wbox *b, const char *request_id, const char *text,
                         const char *messages_json, const char *chat_template,
                         const struct pl_sampling_params *params)
{
    struct wsub *s = calloc(1, sizeof(*s));
    if (!s)
        return PL_STATUS_NO_MEMORY;
    s->box = b;
    s->rid = strdup(request_id);
    s->text = dup_or_null(text);
    s->messages = dup_or_null(messages_json);
    s->tmpl = dup_or_null(chat_template);
    if (!s->rid || (text && !s->text) || (messages_json && !s->messages) ||
        (chat_template && !s->tmpl) || pl_sampling_params_copy(&s->sp, params, NULL) != PL_STATUS_OK) {
        sub_free(s);
        return PL_STATUS_NO_MEMORY;
    }
    pthread_mutex_lock(&b->m);
    b->n_pending++;
    pthread_mutex_unlock(&b->m);
    struct pl_weng *e = b->eng;
    pthread_mutex_lock(&e->m);
    if (e->subs_tail)
        e->subs_tail->next = s;
    else
        e->subs = s;
    e->subs_tail = s;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->m);
    return PL_STATUS_OK;
}

int pl_wbox_next(struct pl_wbox *b, struct pl_request_output *out, char *errbuf, size_t n)
{
    pthread_mutex_lock(&b->m);
    while (!b->head && b->n_pending > 0)
        pthread_cond_wait(&b->cv, &b->m);
    struct wev *ev = b->head;
    if (!ev) {
        pthread_mutex_unlock(&b->m);
        return 0;
    }
    b->head = ev->next;
    if (!b->head)
        b->tail = NULL;
    pthread_mutex_unlock(&b->m);
    int kind = ev->kind;
    if (kind == 1)
        *out = ev->out;
    else if (errbuf && n)
        snprintf(errbuf, n, "%s", ev->msg);
    free(ev);
    return kind;
}

void pl_wbox_abort(struct pl_wbox *b)
{
    struct wabort *a = calloc(1, sizeof(*a));
    pthread_mutex_lock(&b->m);
    b->aborted = true;
    pthread_mutex_unlock(&b->m);
    if (!a)
        return;
    a->box = b;
    struct pl_weng *e = b->eng;
    pthread_mutex_lock(&e->m);
    a->next = e->aborts;
    e->aborts = a;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->m);
}

void pl_wbox_free(struct pl_wbox *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->m);
    bool busy = b->n_pending > 0;
    pthread_mutex_unlock(&b->m);
    if (busy)
        pl_wbox_abort(b);
    struct pl_request_output o;
    int r;
    while ((r = pl_wbox_next(b, &o, NULL, 0)) != 0)
        if (r == 1)
            pl_request_output_fini(&o);
    pthread_mutex_destroy(&b->m);
    pthread_cond_destroy(&b->cv);
    free(b);
}
