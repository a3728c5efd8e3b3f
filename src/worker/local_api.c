/*
 * local_api.c -- the RunPod SDK's local test API (spec 3.2-3.6) over
 * libmicrohttpd: /run stashes a job, /runsync runs one, /status/{id} and
 * /stream/{id} run a stashed job and forget it, plus the proposed
 * extensions GET on /status and /stream, POST /cancel/{id} and GET /health.
 *
 * Owns: the stash of /run jobs and the list of running jobs (for /cancel and
 * /health), both under one mutex that is never held while a job runs.
 * Jobs run through the same engine thread as production jobs, so concurrent
 * requests are batched together. Job ids are "test-<uuid4>". As the SDK does
 * (spec 3.6), the heartbeat runs when RUNPOD_AI_API_KEY and RUNPOD_POD_ID are
 * set, listing stashed and running jobs; /health answers 503 (same body)
 * while the engine loop is stalled, as the server's /health does.
 */
#include "worker/runpod.h"

#include "engine/async_engine.h"

#include <curl/curl.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ljob {
    struct ljob *next;
    char *id;
    json_t *input;
    char *webhook;
    volatile int stop;
};

struct api {
    struct pl_rp_ctx *ctx;
    pthread_mutex_t mu;
    struct ljob *stash;           /* /run jobs not yet run */
    struct ljob *running;
    long completed, failed;
};

struct conn {
    char *body;
    size_t len;
    bool too_big;
};

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

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *ctype,
                                  const char *text, const char *location)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", ctype);
    if (location)
        MHD_add_response_header(r, "Location", location);
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

/* Replies with a JSON value (stolen). */
static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned code, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    enum MHD_Result r = reply_text(c, s ? code : 500, "application/json",
                                   s ? s : "{\"detail\":\"out of memory\"}", NULL);
    free(s);
    return r;
}

static enum MHD_Result not_found_job(struct MHD_Connection *c, const char *id)
{
    return reply_json(c, 200, json_pack("{s:s, s:s, s:s}", "id", id, "status", "FAILED", "error",
                                        "Job ID not found"));
}

struct hook {
    char *url, *body;
};

static void *hook_main(void *arg)
{
    struct hook *h = arg;
    CURL *c = curl_easy_init();
    if (c) {
        struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
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

/* Fire-and-forget webhook POST of v (not stolen). */
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

/* Runs j (owned; freed here) and replies; stream: the /stream shape. */
static enum MHD_Result run_and_reply(struct api *a, struct MHD_Connection *c, struct ljob *j,
                                     bool stream)
{
    pthread_mutex_lock(&a->mu);
    j->next = a->running;
    a->running = j;
    pthread_mutex_unlock(&a->mu);
    struct pl_rp_result res;
    pl_rp_run_job(a->ctx, j->id, j->input, NULL, NULL, &j->stop, &res);
    pthread_mutex_lock(&a->mu);
    for (struct ljob **p = &a->running; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    if (res.error)
        a->failed++;
    else if (!res.stopped)
        a->completed++;
    pthread_mutex_unlock(&a->mu);
    json_t *v;
    if (res.stopped) {
        v = json_pack("{s:s, s:s}", "id", j->id, "status", "CANCELLED");
    } else if (res.error) {
        v = json_pack("{s:s, s:s, s:s}", "id", j->id, "status", "FAILED", "error", res.error);
    } else if (stream) {
        json_t *list = json_array();
        size_t i;
        json_t *ch;
        json_array_foreach(res.output, i, ch) json_array_append_new(list, json_pack("{s:O}", "output", ch));
        if (j->webhook)
            send_webhook(j->webhook, list);
        v = json_pack("{s:s, s:s, s:o}", "id", j->id, "status", "COMPLETED", "stream", list);
    } else {
        json_t *out = res.output ? res.output : json_null();
        if (j->webhook) {
            json_t *w = json_pack("{s:O}", "output", out);
            send_webhook(j->webhook, w);
            json_decref(w);
        }
        v = json_pack("{s:s, s:s, s:O}", "id", j->id, "status", "COMPLETED", "output", out);
    }
    pl_rp_result_fini(&res);
    ljob_free(j);
    return reply_json(c, 200, v);
}

/* The body of /run and /runsync: {"input": {...}, "webhook"?}; NULL after a 422 reply. */
static struct ljob *parse_job(struct MHD_Connection *c, const struct conn *cn, enum MHD_Result *r)
{
    json_t *doc = cn->len ? json_loadb(cn->body, cn->len, 0, NULL) : NULL;
    json_t *input = json_object_get(doc, "input");
    if (!json_is_object(input)) {
        const char *msg = !doc ? "JSON decode error" : input ? "Input should be a valid dictionary"
                                                              : "Field required";
        *r = reply_json(c, 422,
                        json_pack("{s:[{s:s, s:[s,s], s:s}]}", "detail", "type",
                                  !doc ? "json_invalid" : input ? "dict_type" : "missing", "loc",
                                  "body", "input", "msg", msg));
        json_decref(doc);
        return NULL;
    }
    struct ljob *j = calloc(1, sizeof(*j));
    if (j) {
        j->id = new_id();
        j->input = json_incref(input);
        const char *w = json_string_value(json_object_get(doc, "webhook"));
        j->webhook = w ? strdup(w) : NULL;
    }
    json_decref(doc);
    if (!j || !j->id) {
        ljob_free(j);
        *r = reply_json(c, 500, json_pack("{s:s}", "detail", "out of memory"));
        return NULL;
    }
    return j;
}

/* POST /<RUNPOD_ENDPOINT_ID>/realtime (spec 3.9): {"id", "input"} -> the raw result object. */
static enum MHD_Result realtime(struct api *a, struct MHD_Connection *c, const struct conn *cn)
{
    json_t *doc = cn->len ? json_loadb(cn->body, cn->len, 0, NULL) : NULL;
    json_t *input = json_object_get(doc, "input");
    if (!input) {
        json_decref(doc);
        return reply_json(c, 422, json_pack("{s:[{s:s, s:[s,s], s:s}]}", "detail", "type",
                                            "missing", "loc", "body", "input", "msg",
                                            "Field required"));
    }
    const char *jid = json_string_value(json_object_get(doc, "id"));
    char *own = jid ? NULL : new_id();
    struct pl_rp_result res;
    pl_rp_run_job(a->ctx, jid ? jid : own ? own : "realtime", input, NULL, NULL, NULL, &res);
    json_t *v = res.error ? json_pack("{s:s}", "error", res.error)
                          : json_pack("{s:O}", "output", res.output ? res.output : json_null());
    pl_rp_result_fini(&res);
    free(own);
    json_decref(doc);
    return reply_json(c, 200, v);
}

static struct ljob *stash_take(struct api *a, const char *id, bool remove)
{
    pthread_mutex_lock(&a->mu);
    struct ljob *found = NULL;
    for (struct ljob **p = &a->stash; *p; p = &(*p)->next)
        if (!strcmp((*p)->id, id)) {
            found = *p;
            if (remove) {
                *p = found->next;
                found->next = NULL;
            }
            break;
        }
    pthread_mutex_unlock(&a->mu);
    return found;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    struct api *a = cls;
    struct conn *cn = *con_cls;
    if (!cn) {
        cn = calloc(1, sizeof(*cn));
        if (!cn)
            return MHD_NO;
        *con_cls = cn;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cn->len + *upload_size > ((size_t)16 << 20)) {
            cn->too_big = true;
        } else {
            char *nb = realloc(cn->body, cn->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            memcpy(nb + cn->len, upload, *upload_size);
            cn->len += *upload_size;
            nb[cn->len] = '\0';
            cn->body = nb;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (cn->too_big)
        return reply_json(c, 413, json_pack("{s:s}", "detail", "Request body too large"));
    bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    enum MHD_Result r = MHD_NO;
    if (!strcmp(url, "/")) {
        if (!get)
            return reply_json(c, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
        return reply_text(c, 200, "text/html; charset=utf-8",
                          "<!doctype html><title>pagellm worker</title><h1>pagellm RunPod worker: "
                          "local test API</h1><ul><li>POST /run</li><li>POST /runsync</li>"
                          "<li>POST /status/{job_id}</li><li>POST /stream/{job_id}</li>"
                          "<li>POST /cancel/{job_id}</li><li>GET /health</li></ul>"
                          "<p>See docs/runpod.md.</p>",
                          NULL);
    }
    if (!strcmp(url, "/docs"))
        return reply_text(c, 307, "text/plain", "", "/");
    if (!strcmp(url, "/health")) {
        if (!get)
            return reply_json(c, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
        pthread_mutex_lock(&a->mu);
        long queued = 0, running = 0;
        for (struct ljob *j = a->stash; j; j = j->next)
            queued++;
        for (struct ljob *j = a->running; j; j = j->next)
            running++;
        json_t *v = json_pack("{s:{s:I, s:I, s:I, s:I, s:i}, s:{s:i, s:i}}", "jobs", "completed",
                              (json_int_t)a->completed, "failed", (json_int_t)a->failed,
                              "inProgress", (json_int_t)running, "inQueue", (json_int_t)queued,
                              "retried", 0, "workers", "idle", running ? 0 : 1, "running",
                              running ? 1 : 0);
        pthread_mutex_unlock(&a->mu);
        bool healthy = pl_async_engine_is_healthy(a->ctx->ae, NULL);
        return reply_json(c, healthy ? 200 : 503, v);
    }
    if (!strcmp(url, "/run") || !strcmp(url, "/runsync")) {
        if (!post)
            return reply_json(c, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
        struct ljob *j = parse_job(c, cn, &r);
        if (!j)
            return r;
        if (!strcmp(url, "/runsync"))
            return run_and_reply(a, c, j, false);
        json_t *v = json_pack("{s:s, s:s}", "id", j->id, "status", "IN_PROGRESS");
        pthread_mutex_lock(&a->mu);
        j->next = a->stash;
        a->stash = j;
        pthread_mutex_unlock(&a->mu);
        return reply_json(c, 200, v);
    }
    const char *ep = a->ctx->cfg->endpoint_id;
    size_t epn = ep ? strlen(ep) : 0;
    if (ep && url[0] == '/' && !strncmp(url + 1, ep, epn) && !strcmp(url + 1 + epn, "/realtime")) {
        if (!post)
            return reply_json(c, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
        return realtime(a, c, cn);
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
        return reply_json(c, 404, json_pack("{s:s}", "detail", "Not Found"));
    if (!(post || (get && which != 3)))
        return reply_json(c, 405, json_pack("{s:s}", "detail", "Method Not Allowed"));
    if (which == 1) {
        struct ljob *j = stash_take(a, id, true);
        return j ? run_and_reply(a, c, j, false) : not_found_job(c, id);
    }
    if (which == 2) {
        pthread_mutex_lock(&a->mu);
        struct ljob *j = NULL;
        bool gen = false;
        for (struct ljob **p = &a->stash; *p; p = &(*p)->next)
            if (!strcmp((*p)->id, id)) {
                const char *why;
                gen = pl_rp_mode_is_generator(
                    pl_rp_choose_mode((*p)->input, a->ctx->cfg->profile, &why));
                j = *p;
                if (gen) {
                    *p = j->next;
                    j->next = NULL;
                }
                break;
            }
        pthread_mutex_unlock(&a->mu);
        if (!j)
            return not_found_job(c, id);
        if (!gen)
            return reply_json(c, 200, json_pack("{s:s, s:s, s:s}", "id", id, "status", "FAILED",
                                                "error",
                                                "Stream not supported, handler must be a generator."));
        return run_and_reply(a, c, j, true);
    }
    /* cancel: a stashed job is forgotten, a running one stopped */
    struct ljob *j = stash_take(a, id, true);
    bool found = j != NULL;
    ljob_free(j);
    if (!found) {
        pthread_mutex_lock(&a->mu);
        for (struct ljob *k = a->running; k; k = k->next)
            if (!strcmp(k->id, id)) {
                k->stop = 1;
                found = true;
            }
        pthread_mutex_unlock(&a->mu);
    }
    if (!found)
        return not_found_job(c, id);
    return reply_json(c, 200, json_pack("{s:s, s:s}", "id", id, "status", "CANCELLED"));
}

/* The heartbeat's job list: stashed and running ids, comma-separated. */
static char *held_ids(void *user)
{
    struct api *a = user;
    size_t n = 1;
    pthread_mutex_lock(&a->mu);
    for (int pass = 0; pass < 2; pass++)
        for (struct ljob *j = pass ? a->running : a->stash; j; j = j->next)
            n += strlen(j->id) + 1;
    char *s = malloc(n);
    if (s) {
        s[0] = '\0';
        for (int pass = 0; pass < 2; pass++)
            for (struct ljob *j = pass ? a->running : a->stash; j; j = j->next) {
                if (s[0])
                    strcat(s, ",");
                strcat(s, j->id);
            }
    }
    pthread_mutex_unlock(&a->mu);
    return s;
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    struct conn *cn = *con_cls;
    if (cn) {
        free(cn->body);
        free(cn);
    }
    *con_cls = NULL;
}

int pl_rp_local_api_run(struct pl_rp_ctx *ctx, const struct pl_rp_api_opts *o)
{
    struct api a = {0};
    a.ctx = ctx;
    pthread_mutex_init(&a.mu, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* threads started below inherit the mask */
    signal(SIGPIPE, SIG_IGN);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    const char *host = o->host;
    if (!strcmp(host, "localhost"))
        host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        pl_rp_log(ctx->cfg, PL_RP_LOG_ERROR, NULL, NULL, "--rp_api_host '%s' is not an IPv4 address",
                  o->host);
        pthread_mutex_destroy(&a.mu);
        return 2;
    }
    /* a thread per connection: /runsync and /status block until their job is done */
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG,
        (uint16_t)o->port, NULL, NULL, handle, &a, MHD_OPTION_SOCK_ADDR, &addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_CONNECTION_TIMEOUT, 600u,
        MHD_OPTION_END);
    if (!d) {
        pl_rp_log(ctx->cfg, PL_RP_LOG_ERROR, NULL, NULL, "cannot listen on %s:%d", o->host,
                  o->port);
        pthread_mutex_destroy(&a.mu);
        return 1;
    }
    pl_rp_log(ctx->cfg, PL_RP_LOG_INFO, NULL, NULL, "local test API on http://%s:%d", o->host,
              o->port);
    struct pl_rp_heartbeat *hb = pl_rp_heartbeat_start(ctx, held_ids, &a);
    int sig;
    sigwait(&set, &sig);
    pl_rp_log(ctx->cfg, PL_RP_LOG_INFO, NULL, NULL, "local test API: shutting down");
    MHD_stop_daemon(d);
    pl_rp_heartbeat_stop(hb);
    while (a.stash) {
        struct ljob *n = a.stash->next;
        ljob_free(a.stash);
        a.stash = n;
    }
    pthread_mutex_destroy(&a.mu);
    return 0;
}
