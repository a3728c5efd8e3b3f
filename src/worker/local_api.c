/*
 * local_api.c -- the RunPod SDK's local test API (spec 3.2-3.6), also what
 * RUNPOD_REALTIME_PORT serves on 0.0.0.0: /run stashes a job, /runsync runs
 * one, /status/{id} and /stream/{id} run a stashed job and forget it, plus the
 * proposed extensions GET on /status and /stream, POST /cancel/{id}, GET
 * /health and POST /<RUNPOD_ENDPOINT_ID>/realtime.
 *
 * Transport: the OpenAI server's (src/server/http.c: epoll event-loop
 * threads, bounded bodies, early 413 for a body announced far too large,
 * timeouts), with one fallback handler doing this API's routing. A call that
 * blocks until its job is done (/runsync, /status, /stream, /realtime) is an
 * asynchronous reply: its connection is suspended, no thread waits on it, so
 * thousands of connections cost no threads.
 *
 * Jobs run on a pool of MAX_CONCURRENCY runner threads (pl_rp_run_job blocks
 * its caller) through the same engine thread as production jobs, so
 * concurrent jobs are batched together; more jobs wait their turn in FIFO
 * order.
 *
 * Owns, under one mutex (a->mu, never held while a job runs): the stash of
 * /run jobs, the FIFO of jobs waiting for a runner, the list of running jobs
 * (for /cancel and /health), each blocked call's reply state (struct pend),
 * and the counters. Invariants: a job is in exactly one of stash, waiting or
 * running until it is freed; stash + waiting never exceed max_queue jobs nor
 * max_queue_bytes of request bodies (a call that would is answered 429);
 * a struct pend is freed by whichever of its runner (done) and its
 * connection (closed) finishes last; a runner wakes a connection only before
 * it is closed.
 *
 * As the SDK does (spec 3.6), the heartbeat runs when RUNPOD_AI_API_KEY and
 * RUNPOD_POD_ID are set, listing every job held; /health answers 503 (same
 * body) while the engine loop is stalled, as the server's /health does.
 * Job ids are "test-<uuid4>".
 */
#include "worker/runpod.h"

#include "engine/async_engine.h"
#include "server/http.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

/* Request bodies above this are refused (413) by the transport. */
#define LOCAL_API_MAX_BODY ((size_t)16 << 20)

enum reply_kind {
    REPLY_STATUS,   /* /runsync, /status: {"id", "status", "output" | "error"} */
    REPLY_STREAM,   /* /stream: {"id", "status", "stream": [{"output": chunk}, ...]} */
    REPLY_REALTIME  /* /<ep>/realtime: {"output"} or {"error"} */
};

struct pend;

struct ljob {
    struct ljob *next;
    char *id;
    json_t *input;
    char *webhook;
    size_t bytes;          /* its request body's size: what it counts against the bound */
    volatile int stop;
    struct pend *pend;     /* waiting or running: the blocked call to answer */
};

/* A blocked call's reply (see the header comment for its lifetime). */
struct pend {
    struct api *a;
    struct pl_http_async *async;
    enum reply_kind kind;
    struct ljob *j;        /* the job, until a runner is done with it */
    bool done, gone;       /* under a->mu */
    char *body;            /* the JSON reply, once done (NULL: out of memory) */
};

struct api {
    struct pl_rp_ctx *ctx;
    const struct pl_rp_api_opts *o;
    pthread_mutex_t mu;
    pthread_cond_t cv;            /* runners: a job is waiting, or quit */
    struct ljob *stash;           /* /run jobs not yet asked for */
    struct ljob *wait_head, *wait_tail; /* jobs waiting for a runner, FIFO */
    struct ljob *running;
    long n_stash, n_waiting, n_running;
    size_t queued_bytes;          /* bytes of the stashed and waiting jobs */
    long completed, failed;
    bool quit;                    /* runners: finish the queue, then exit */
};

void pl_rp_api_opts_default(struct pl_rp_api_opts *o)
{
    o->host = "localhost";
    o->port = 8000;
    o->concurrency = 1;
    o->max_queue = 1024;
    o->max_queue_bytes = (size_t)256 << 20;
}

/* "test-<uuid4>", as the SDK's local API names jobs. */
static char *new_id(void)
{
    char *u = pl_rp_uuid4();
    char *s = u ? malloc(strlen(u) + 6) : NULL;
    if (s)
        sprintf(s, "test-%s", u);
    free(u);
    return s;
}

static void ljob_free(struct ljob *j)
{
    if (!j)
        return;
    free(j->id);
    json_decref(j->input);
    free(j->webhook);
    free(j);
}

/* A JSON reply (v stolen); 500 when it cannot be serialized. */
static void set_json(struct pl_http_response *resp, int status, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!s) {
        s = strdup("{\"detail\":\"out of memory\"}");
        status = 500;
    }
    pl_http_set_json(resp, status, s, s ? strlen(s) : 0);
}

static void set_detail(struct pl_http_response *resp, int status, const char *detail)
{
    set_json(resp, status, json_pack("{s:s}", "detail", detail));
}

static void set_text(struct pl_http_response *resp, int status, const char *ctype,
                     const char *text)
{
    resp->status = status;
    resp->content_type = ctype;
    resp->body = strdup(text);
    resp->body_len = resp->body ? strlen(text) : 0;
}

static void not_found_job(struct pl_http_response *resp, const char *id)
{
    set_json(resp, 200, json_pack("{s:s, s:s, s:s}", "id", id, "status", "FAILED", "error",
                                  "Job ID not found"));
}

/* FastAPI's validation error shape: {"detail": [{"type", "loc": ["body", field], "msg"}]}. */
static void set_422(struct pl_http_response *resp, const char *type, const char *field,
                    const char *msg)
{
    set_json(resp, 422, json_pack("{s:[{s:s, s:[s,s], s:s}]}", "detail", "type", type, "loc",
                                  "body", field, "msg", msg));
}

/* ---- webhooks ---------------------------------------------------------------------- */

struct hook {
    char *url, *body;
};

static void *hook_main(void *arg)
{
    struct hook *h = arg;
    CURL *c = curl_easy_init();
    if (c) {
        struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
        pl_rp_curl_http_only(c);
        curl_easy_setopt(c, CURLOPT_URL, h->url);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hd);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, h->body);
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK)
            pl_rp_log(NULL, PL_RP_LOG_WARN, NULL, NULL, "webhook %s: %s", h->url,
                      curl_easy_strerror(rc));
        curl_slist_free_all(hd);
        curl_easy_cleanup(c);
    }
    free(h->url);
    free(h->body);
    free(h);
    return NULL;
}

/* Fire-and-forget webhook POST of v (not stolen); url was checked at the request. */
static void send_webhook(const char *url, const json_t *v)
{
    struct hook *h = calloc(1, sizeof(*h));
    if (!h)
        return;
    h->url = strdup(url);
    h->body = json_dumps(v, JSON_COMPACT);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (!h->url || !h->body || pthread_create(&th, &at, hook_main, h) != 0) {
        free(h->url);
        free(h->body);
        free(h);
    }
    pthread_attr_destroy(&at);
}

/* ---- the queue and the runners ---------------------------------------------------- */

/* Whether one more job of `bytes` fits the bound (a->mu held). */
static bool queue_has_room(const struct api *a, size_t bytes)
{
    return a->n_stash + a->n_waiting < a->o->max_queue &&
           a->queued_bytes + bytes <= a->o->max_queue_bytes;
}

static void set_queue_full(const struct api *a, struct pl_http_response *resp)
{
    char msg[256];
    snprintf(msg, sizeof(msg),
             "the job queue is full (%ld jobs, %zu bytes waiting; limits --rp_api_max_queue %ld, "
             "--rp_api_max_queue_bytes %zu): retry later",
             a->n_stash + a->n_waiting, a->queued_bytes, a->o->max_queue, a->o->max_queue_bytes);
    set_detail(resp, 429, msg);
}

static void pend_free(struct pend *p)
{
    free(p->body);
    free(p);
}

/* The reply of a finished job (the webhook goes out here too). */
static json_t *reply_value(const struct ljob *j, enum reply_kind kind,
                           const struct pl_rp_result *res)
{
    if (kind == REPLY_REALTIME)
        return res->error ? json_pack("{s:s}", "error", res->error)
               : res->stopped ? json_pack("{s:s}", "error", "Job cancelled")
                              : json_pack("{s:O}", "output", res->output ? res->output
                                                                         : json_null());
    if (res->stopped)
        return json_pack("{s:s, s:s}", "id", j->id, "status", "CANCELLED");
    if (res->error)
        return json_pack("{s:s, s:s, s:s}", "id", j->id, "status", "FAILED", "error", res->error);
    if (kind == REPLY_STREAM) {
        json_t *list = json_array();
        size_t i;
        json_t *ch;
        json_array_foreach(res->output, i, ch)
            json_array_append_new(list, json_pack("{s:O}", "output", ch));
        if (j->webhook)
            send_webhook(j->webhook, list);
        return json_pack("{s:s, s:s, s:o}", "id", j->id, "status", "COMPLETED", "stream", list);
    }
    json_t *out = res->output ? res->output : json_null();
    if (j->webhook) {
        json_t *w = json_pack("{s:O}", "output", out);
        send_webhook(j->webhook, w);
        json_decref(w);
    }
    return json_pack("{s:s, s:s, s:O}", "id", j->id, "status", "COMPLETED", "output", out);
}

static void list_remove(struct ljob **head, struct ljob *j)
{
    for (struct ljob **p = head; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            j->next = NULL;
            return;
        }
}

static void *runner_main(void *arg)
{
    struct api *a = arg;
    pthread_mutex_lock(&a->mu);
    for (;;) {
        while (!a->wait_head && !a->quit)
            pthread_cond_wait(&a->cv, &a->mu);
        struct ljob *j = a->wait_head;
        if (!j)
            break; /* quit, and nothing left to run */
        a->wait_head = j->next;
        if (!a->wait_head)
            a->wait_tail = NULL;
        a->n_waiting--;
        a->queued_bytes -= j->bytes;
        j->next = a->running;
        a->running = j;
        a->n_running++;
        struct pend *p = j->pend;
        pthread_mutex_unlock(&a->mu);

        struct pl_rp_result res;
        memset(&res, 0, sizeof(res));
        if (j->stop) /* cancelled, or its client went away, while it waited */
            res.stopped = true;
        else
            pl_rp_run_job(a->ctx, j->id, j->input, NULL, NULL, &j->stop, &res);
        json_t *v = reply_value(j, p->kind, &res);
        char *body = v ? json_dumps(v, JSON_COMPACT) : NULL;
        json_decref(v);

        pthread_mutex_lock(&a->mu);
        list_remove(&a->running, j);
        a->n_running--;
        if (res.error)
            a->failed++;
        else if (!res.stopped)
            a->completed++;
        pl_rp_result_fini(&res);
        p->body = body;
        p->done = true;
        p->j = NULL;
        if (p->gone)
            pend_free(p);
        else
            pl_http_async_wake(p->async);
        ljob_free(j);
    }
    pthread_mutex_unlock(&a->mu);
    return NULL;
}

/* The transport asks for the reply (on its thread, after a wake). */
static bool pend_result(void *user, struct pl_http_response *resp)
{
    struct pend *p = user;
    struct api *a = p->a;
    pthread_mutex_lock(&a->mu);
    bool done = p->done;
    char *body = p->body;
    p->body = NULL;
    pthread_mutex_unlock(&a->mu);
    if (!done)
        return false;
    if (!body) {
        set_detail(resp, 500, "out of memory");
        return true;
    }
    pl_http_set_json(resp, 200, body, strlen(body));
    return true;
}

/* The connection is done with the reply: a job still waiting or running is stopped. */
static void pend_closed(void *user, bool completed_ok)
{
    (void)completed_ok;
    struct pend *p = user;
    struct api *a = p->a;
    pthread_mutex_lock(&a->mu);
    p->gone = true;
    bool free_now = p->done;
    if (!p->done && p->j)
        p->j->stop = 1;
    pthread_mutex_unlock(&a->mu);
    if (free_now)
        pend_free(p);
}

static const struct pl_http_async_ops pend_ops = {pend_result, NULL, pend_closed};

/*
 * Queues j (owned) for a runner and makes resp the blocked reply. stashed: j
 * comes from the stash and is already counted against the bound (a->mu held
 * by the caller in that case); else the bound is checked here.
 */
static void enqueue_locked(struct api *a, struct ljob *j, enum reply_kind kind, bool stashed,
                           struct pl_http_response *resp)
{
    if (a->quit) {
        if (stashed) {
            a->n_stash--;
            a->queued_bytes -= j->bytes;
        }
        ljob_free(j);
        set_detail(resp, 503, "the worker is shutting down");
        return;
    }
    if (!stashed && !queue_has_room(a, j->bytes)) {
        ljob_free(j);
        set_queue_full(a, resp);
        return;
    }
    struct pend *p = calloc(1, sizeof(*p));
    struct pl_http_async *as = p ? pl_http_async_new(&pend_ops, p, false, "application/json")
                                 : NULL;
    if (!as) {
        free(p);
        if (stashed) {
            a->n_stash--;
            a->queued_bytes -= j->bytes;
        }
        ljob_free(j);
        set_detail(resp, 500, "out of memory");
        return;
    }
    p->a = a;
    p->async = as;
    p->kind = kind;
    p->j = j;
    j->pend = p;
    j->next = NULL;
    if (stashed)
        a->n_stash--;
    else
        a->queued_bytes += j->bytes;
    a->n_waiting++;
    if (a->wait_tail)
        a->wait_tail->next = j;
    else
        a->wait_head = j;
    a->wait_tail = j;
    pthread_cond_signal(&a->cv);
    resp->async = as;
}

static void enqueue(struct api *a, struct ljob *j, enum reply_kind kind,
                    struct pl_http_response *resp)
{
    pthread_mutex_lock(&a->mu);
    enqueue_locked(a, j, kind, false, resp);
    pthread_mutex_unlock(&a->mu);
}

/* ---- routes -------------------------------------------------------------------------- */

/*
 * The body of /run and /runsync: {"input": {...}, "webhook"?: "http(s)://..."}.
 * NULL after an error reply (422: not a job; 500: out of memory).
 */
static struct ljob *parse_job(const struct pl_http_request *req, struct pl_http_response *resp)
{
    json_t *doc = req->body_len ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
    json_t *input = json_object_get(doc, "input");
    if (!json_is_object(input)) {
        set_422(resp, !doc ? "json_invalid" : input ? "dict_type" : "missing", "input",
                !doc ? "JSON decode error" : input ? "Input should be a valid dictionary"
                                                   : "Field required");
        json_decref(doc);
        return NULL;
    }
    json_t *hook = json_object_get(doc, "webhook");
    const char *w = json_string_value(hook);
    if (hook && !json_is_null(hook)) {
        const char *why = w ? pl_rp_webhook_url_problem(w) : "webhook must be an http:// or https:// URL string";
        if (why) {
            set_422(resp, "value_error", "webhook", why);
            json_decref(doc);
            return NULL;
        }
    }
    struct ljob *j = calloc(1, sizeof(*j));
    if (j) {
        j->id = new_id();
        j->input = json_incref(input);
        j->webhook = w ? strdup(w) : NULL;
        j->bytes = req->body_len;
    }
    json_decref(doc);
    if (!j || !j->id || (w && !j->webhook)) {
        ljob_free(j);
        set_detail(resp, 500, "out of memory");
        return NULL;
    }
    return j;
}

/* POST /<RUNPOD_ENDPOINT_ID>/realtime (spec 3.9): {"id"?, "input"} -> the raw result object. */
static void realtime(struct api *a, const struct pl_http_request *req,
                     struct pl_http_response *resp)
{
    json_t *doc = req->body_len ? json_loadb(req->body, req->body_len, 0, NULL) : NULL;
    json_t *input = json_object_get(doc, "input");
    if (!input) {
        json_decref(doc);
        set_422(resp, "missing", "input", "Field required");
        return;
    }
    const char *jid = json_string_value(json_object_get(doc, "id"));
    struct ljob *j = calloc(1, sizeof(*j));
    if (j) {
        j->id = jid ? strdup(jid) : new_id();
        j->input = json_incref(input);
        j->bytes = req->body_len;
    }
    json_decref(doc);
    if (!j || !j->id) {
        ljob_free(j);
        set_detail(resp, 500, "out of memory");
        return;
    }
    enqueue(a, j, REPLY_REALTIME, resp);
}

static void health(struct api *a, struct pl_http_response *resp)
{
    pthread_mutex_lock(&a->mu);
    long running = a->n_running;
    json_t *v = json_pack("{s:{s:I, s:I, s:I, s:I, s:i}, s:{s:i, s:i}}", "jobs", "completed",
                          (json_int_t)a->completed, "failed", (json_int_t)a->failed, "inProgress",
                          (json_int_t)running, "inQueue",
                          (json_int_t)(a->n_stash + a->n_waiting), "retried", 0, "workers",
                          "idle", running ? 0 : 1, "running", running ? 1 : 0);
    pthread_mutex_unlock(&a->mu);
    bool healthy = pl_async_engine_is_healthy(a->ctx->ae, NULL);
    set_json(resp, healthy ? 200 : 503, v);
}

static struct ljob *stash_find(struct api *a, const char *id)
{
    for (struct ljob *j = a->stash; j; j = j->next)
        if (!strcmp(j->id, id))
            return j;
    return NULL;
}

/* /status/{id} (which 1), /stream/{id} (2), /cancel/{id} (3). */
static void by_id(struct api *a, int which, const char *id, struct pl_http_response *resp)
{
    pthread_mutex_lock(&a->mu);
    struct ljob *j = stash_find(a, id);
    if (which == 1 || which == 2) {
        if (!j) {
            pthread_mutex_unlock(&a->mu);
            not_found_job(resp, id);
            return;
        }
        if (which == 2) {
            const char *why;
            bool gen = pl_rp_mode_is_generator(
                pl_rp_choose_mode(j->input, a->ctx->cfg->profile, &why));
            if (!gen) { /* the job stays stashed */
                pthread_mutex_unlock(&a->mu);
                set_json(resp, 200, json_pack("{s:s, s:s, s:s}", "id", id, "status", "FAILED",
                                              "error",
                                              "Stream not supported, handler must be a "
                                              "generator."));
                return;
            }
        }
        list_remove(&a->stash, j);
        enqueue_locked(a, j, which == 2 ? REPLY_STREAM : REPLY_STATUS, true, resp);
        pthread_mutex_unlock(&a->mu);
        return;
    }
    /* cancel: a stashed job is forgotten, a waiting or running one stopped */
    bool found = j != NULL;
    if (j) {
        list_remove(&a->stash, j);
        a->n_stash--;
        a->queued_bytes -= j->bytes;
        ljob_free(j);
    }
    for (int pass = 0; pass < 2 && !found; pass++)
        for (struct ljob *k = pass ? a->running : a->wait_head; k; k = k->next)
            if (!strcmp(k->id, id)) {
                k->stop = 1;
                found = true;
            }
    pthread_mutex_unlock(&a->mu);
    if (!found)
        not_found_job(resp, id);
    else
        set_json(resp, 200, json_pack("{s:s, s:s}", "id", id, "status", "CANCELLED"));
}

static void handle(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    struct api *a = user;
    const char *url = req->path, *method = req->method;
    bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    if (!strcmp(url, "/")) {
        if (!get)
            return set_detail(resp, 405, "Method Not Allowed");
        return set_text(resp, 200, "text/html; charset=utf-8",
                        "<!doctype html><title>pagellm worker</title><h1>pagellm RunPod worker: "
                        "local test API</h1><ul><li>POST /run</li><li>POST /runsync</li>"
                        "<li>POST /status/{job_id}</li><li>POST /stream/{job_id}</li>"
                        "<li>POST /cancel/{job_id}</li><li>GET /health</li></ul>"
                        "<p>See docs/runpod.md.</p>");
    }
    if (!strcmp(url, "/docs")) {
        resp->status = 307;
        resp->location = "/";
        return;
    }
    if (!strcmp(url, "/health")) {
        if (!get)
            return set_detail(resp, 405, "Method Not Allowed");
        return health(a, resp);
    }
    if (!strcmp(url, "/run") || !strcmp(url, "/runsync")) {
        if (!post)
            return set_detail(resp, 405, "Method Not Allowed");
        struct ljob *j = parse_job(req, resp);
        if (!j)
            return;
        if (!strcmp(url, "/runsync"))
            return enqueue(a, j, REPLY_STATUS, resp);
        pthread_mutex_lock(&a->mu);
        if (!queue_has_room(a, j->bytes)) {
            set_queue_full(a, resp);
            pthread_mutex_unlock(&a->mu);
            ljob_free(j);
            return;
        }
        json_t *v = json_pack("{s:s, s:s}", "id", j->id, "status", "IN_PROGRESS");
        j->next = a->stash;
        a->stash = j;
        a->n_stash++;
        a->queued_bytes += j->bytes;
        pthread_mutex_unlock(&a->mu);
        return set_json(resp, 200, v);
    }
    const char *ep = a->ctx->cfg->endpoint_id;
    size_t epn = ep ? strlen(ep) : 0;
    if (ep && url[0] == '/' && !strncmp(url + 1, ep, epn) && !strcmp(url + 1 + epn, "/realtime")) {
        if (!post)
            return set_detail(resp, 405, "Method Not Allowed");
        return realtime(a, req, resp);
    }
    const char *id = NULL;
    int which = 0;
    if (!strncmp(url, "/status/", 8))
        id = url + 8, which = 1;
    else if (!strncmp(url, "/stream/", 8))
        id = url + 8, which = 2;
    else if (!strncmp(url, "/cancel/", 8))
        id = url + 8, which = 3;
    if (!id || !*id || strchr(id, '/'))
        return set_detail(resp, 404, "Not Found");
    if (!(post || (get && which != 3)))
        return set_detail(resp, 405, "Method Not Allowed");
    by_id(a, which, id, resp);
}

/* The heartbeat's job list: every job held (stashed, waiting, running), comma-separated. */
static char *held_ids(void *user)
{
    struct api *a = user;
    size_t n = 1;
    pthread_mutex_lock(&a->mu);
    struct ljob *lists[3] = {a->stash, a->wait_head, a->running};
    for (int pass = 0; pass < 3; pass++)
        for (struct ljob *j = lists[pass]; j; j = j->next)
            n += strlen(j->id) + 1;
    char *s = malloc(n);
    if (s) {
        s[0] = '\0';
        for (int pass = 0; pass < 3; pass++)
            for (struct ljob *j = lists[pass]; j; j = j->next) {
                if (s[0])
                    strcat(s, ",");
                strcat(s, j->id);
            }
    }
    pthread_mutex_unlock(&a->mu);
    return s;
}

/* Open connections are file descriptors: allow as many as the hard limit does. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int pl_rp_local_api_run(struct pl_rp_ctx *ctx, const struct pl_rp_api_opts *o)
{
    const struct pl_rp_config *cfg = ctx->cfg;
    struct api a;
    memset(&a, 0, sizeof(a));
    a.ctx = ctx;
    a.o = o;
    pthread_mutex_init(&a.mu, NULL);
    pthread_cond_init(&a.cv, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads started below inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    struct pl_http_params hp;
    pl_http_params_default(&hp);
    /* "localhost" as the SDK means it: the IPv4 loopback */
    hp.host = !strcmp(o->host, "localhost") ? "127.0.0.1" : o->host;
    hp.port = o->port;
    hp.max_body_bytes = LOCAL_API_MAX_BODY;
    /* event-loop threads; at least two (libmicrohttpd warns about a pool of one) */
    hp.n_threads = o->concurrency > 2 ? (unsigned)o->concurrency : 2;
    struct pl_http_server *srv = NULL;
    struct pl_err err = {0};
    pl_status st = pl_http_server_new(&hp, &srv, &err);
    if (st == PL_STATUS_OK) {
        pl_http_server_fallback(srv, handle, &a);
        st = pl_http_server_start(srv, &err);
    }
    int n_runners = cfg->max_concurrency > 0 ? cfg->max_concurrency : 1;
    pthread_t *runners = st == PL_STATUS_OK ? calloc((size_t)n_runners, sizeof(*runners)) : NULL;
    int started = 0;
    while (runners && started < n_runners &&
           pthread_create(&runners[started], NULL, runner_main, &a) == 0)
        started++;
    int rc = 0;
    if (st != PL_STATUS_OK || started == 0) {
        pl_rp_log(cfg, PL_RP_LOG_ERROR, NULL, NULL, "local test API on %s:%d: %s", o->host,
                  o->port, st != PL_STATUS_OK ? err.msg : "cannot start the job threads");
        rc = st == PL_STATUS_INVALID_ARGUMENT ? 2 : 1;
    } else {
        pl_rp_log(cfg, PL_RP_LOG_INFO, NULL, NULL,
                  "local test API on http://%s:%d (%d job threads, queue bound %ld jobs / %zu "
                  "bytes)",
                  o->host, pl_http_server_port(srv), started, o->max_queue, o->max_queue_bytes);
        struct pl_rp_heartbeat *hb = pl_rp_heartbeat_start(ctx, held_ids, &a);
        int sig;
        sigwait(&set, &sig);
        pl_rp_log(cfg, PL_RP_LOG_INFO, NULL, NULL, "local test API: shutting down");
        /* no new connections; jobs already waiting or running finish and are answered */
        pl_http_server_drain(srv);
        pthread_mutex_lock(&a.mu);
        a.quit = true;
        pthread_cond_broadcast(&a.cv);
        pthread_mutex_unlock(&a.mu);
        for (int i = 0; i < started; i++)
            pthread_join(runners[i], NULL);
        pl_rp_heartbeat_stop(hb);
    }
    if (started == 0 || st != PL_STATUS_OK) {
        pthread_mutex_lock(&a.mu);
        a.quit = true;
        pthread_cond_broadcast(&a.cv);
        pthread_mutex_unlock(&a.mu);
        for (int i = 0; i < started; i++)
            pthread_join(runners[i], NULL);
    }
    pl_http_server_free(srv);
    free(runners);
    while (a.stash) {
        struct ljob *n = a.stash->next;
        ljob_free(a.stash);
        a.stash = n;
    }
    pthread_cond_destroy(&a.cv);
    pthread_mutex_destroy(&a.mu);
    return rc;
}
