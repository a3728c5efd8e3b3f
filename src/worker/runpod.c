/*
 * runpod.c -- the RunPod Serverless job protocol over libcurl (spec 1):
 * configuration from the environment, the protocol's pure rules, and the
 * production worker: a taker (the main thread), a stop-channel poller, a
 * heartbeat thread and one thread per accepted job.
 *
 * Owns: the held-job registry (ids of every accepted, unfinished job; guarded
 * by reg_mu, which no engine code ever takes, so the heartbeat cannot be
 * starved by decoding), the shutdown flag, and every HTTP call to RunPod.
 * Invariants: the worker never holds more than max_concurrency jobs; exactly
 * one take request is outstanding; a job's posts go out in order and its
 * final post after its last chunk; a stopped job posts nothing more; a result
 * that cannot be posted is logged with the job id.
 */
#include "worker/runpod.h"

#include "engine/async_engine.h"

#include "util/err.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- configuration ---- */

static char *env_dup(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        v = dflt;
    return v ? strdup(v) : NULL;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    return (errno || *end) ? dflt : x;
}

static double env_double2(const char *a, const char *b, double dflt)
{
    const char *v = getenv(a);
    if (!v || !*v)
        v = getenv(b);
    if (!v || !*v)
        return dflt;
    char *end;
    double x = strtod(v, &end);
    return *end ? dflt : x;
}

static bool env_bool(const char *name, bool dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    return !strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") ||
           !strcasecmp(v, "on");
}

char *pl_rp_uuid4(void)
{
    static atomic_ulong counter; /* without /dev/urandom: ids of one second still differ */
    unsigned char b[16];
    FILE *f = fopen("/dev/urandom", "rb");
    size_t got = f ? fread(b, 1, sizeof(b), f) : 0;
    if (f)
        fclose(f);
    if (got != sizeof(b)) {
        uint64_t x = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^
                     ((uint64_t)atomic_fetch_add(&counter, 1) << 20);
        for (int i = 0; i < 16; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            b[i] = (unsigned char)(x >> 56);
        }
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    char *s = malloc(37);
    if (s)
        snprintf(s, 37,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
                 b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                 b[14], b[15]);
    return s;
}

pl_status pl_rp_config_from_env(struct pl_rp_config *c, struct pl_err *err)
{
    memset(c, 0, sizeof(*c));
    c->get_job = env_dup("RUNPOD_WEBHOOK_GET_JOB", NULL);
    c->post_output = env_dup("RUNPOD_WEBHOOK_POST_OUTPUT", NULL);
    c->post_stream = env_dup("RUNPOD_WEBHOOK_POST_STREAM", NULL);
    if (!c->post_stream)
        c->post_stream = env_dup("RUNPOD_WEBHOOK_JOB_STREAM", NULL);
    c->ping = env_dup("RUNPOD_WEBHOOK_PING", NULL);
    c->api_key = env_dup("RUNPOD_AI_API_KEY", "");
    c->worker_id = getenv("RUNPOD_POD_ID") && *getenv("RUNPOD_POD_ID")
                       ? strdup(getenv("RUNPOD_POD_ID"))
                       : pl_rp_uuid4();
    c->endpoint_id = env_dup("RUNPOD_ENDPOINT_ID", NULL);
    c->hostname = env_dup("RUNPOD_POD_HOSTNAME", "unknown");
    long ping = env_long("RUNPOD_PING_INTERVAL", 10000);
    /* whole seconds like the SDK, at least 1 s; the test knob allows finer periods */
    long test_ping = env_long("PL_RUNPOD_PING_MS", 0);
    c->ping_interval_ms = test_ping > 0 ? (int)test_ping : (int)(ping / 1000 < 1 ? 1000 : ping / 1000 * 1000);
    c->realtime_port = (int)env_long("RUNPOD_REALTIME_PORT", 0);
    c->max_concurrency = (int)env_long("MAX_CONCURRENCY", 30);
    if (c->max_concurrency < 1)
        c->max_concurrency = 1;
    c->batch_max = env_double2("DEFAULT_BATCH_SIZE", "DEFAULT_BATCH_SIZE", 50);
    c->batch_min = env_double2("MIN_BATCH_SIZE", "DEFAULT_MIN_BATCH_SIZE", 1);
    c->batch_growth = env_double2("BATCH_SIZE_GROWTH_FACTOR", "DEFAULT_BATCH_SIZE_GROWTH_FACTOR", 3);
    c->raw_openai_output = env_bool("RAW_OPENAI_OUTPUT", true);
    c->served_model_name = env_dup("OPENAI_SERVED_MODEL_NAME_OVERRIDE", NULL);
    c->response_role = env_dup("OPENAI_RESPONSE_ROLE", "assistant");
    c->custom_chat_template = env_dup("CUSTOM_CHAT_TEMPLATE", NULL);
    const char *prof = getenv("ENGINE_COMPAT_PROFILE");
    c->profile = PL_RP_PROFILE_VLLM;
    if (prof && !strcmp(prof, "simple-stream"))
        c->profile = PL_RP_PROFILE_SIMPLE_STREAM;
    else if (prof && !strcmp(prof, "simple-batch"))
        c->profile = PL_RP_PROFILE_SIMPLE_BATCH;
    else if (prof && *prof && strcmp(prof, "vllm"))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "ENGINE_COMPAT_PROFILE: '%s' (use vllm, simple-batch or simple-stream)",
                          prof);
    c->refresh_worker = env_bool("RP_REFRESH_WORKER", false);
    c->return_aggregate = env_bool("RP_RETURN_AGGREGATE_STREAM", true);
    c->take_timeout_ms = (int)env_long("PL_RUNPOD_TAKE_TIMEOUT_MS", 90000);
    c->backoff_429_ms = (int)env_long("PL_RUNPOD_BACKOFF_MS", 5000);
    c->retry_scale_pct = (int)env_long("PL_RUNPOD_RETRY_SCALE_PCT", 100);
    if (!c->api_key || !c->worker_id || !c->hostname || !c->response_role)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    return PL_STATUS_OK;
}

void pl_rp_config_fini(struct pl_rp_config *c)
{
    free(c->get_job);
    free(c->post_output);
    free(c->post_stream);
    free(c->ping);
    free(c->api_key);
    free(c->worker_id);
    free(c->endpoint_id);
    free(c->hostname);
    free(c->served_model_name);
    free(c->response_role);
    free(c->custom_chat_template);
    memset(c, 0, sizeof(*c));
}

/* ---- pure rules ---- */

static bool unreserved(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_' || ch == '~';
}

/* Appends s (percent-encoded when enc) to the growing buffer. */
static bool buf_add(char **b, size_t *len, size_t *cap, const char *s, size_t n, bool enc)
{
    size_t need = *len + (enc ? 3 * n : n) + 1;
    if (need > *cap) {
        size_t nc = need * 2;
        char *nb = realloc(*b, nc);
        if (!nb)
            return false;
        *b = nb;
        *cap = nc;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (enc && !unreserved(ch)) {
            snprintf(*b + *len, 4, "%%%02X", ch);
            *len += 3;
        } else {
            (*b)[(*len)++] = (char)ch;
        }
    }
    (*b)[*len] = '\0';
    return true;
}

char *pl_rp_url_expand(const char *tmpl, const char *worker_id, const char *id)
{
    static const char pod[] = "$RUNPOD_POD_ID", jid[] = "$ID";
    char *b = NULL;
    size_t len = 0, cap = 0;
    bool ok = buf_add(&b, &len, &cap, "", 0, false);
    /* one pass, longest placeholder first: same as replacing $RUNPOD_POD_ID before $ID */
    for (const char *p = tmpl; ok && *p;) {
        if (!strncmp(p, pod, sizeof(pod) - 1)) {
            ok = buf_add(&b, &len, &cap, worker_id, strlen(worker_id), false);
            p += sizeof(pod) - 1;
        } else if (!strncmp(p, jid, sizeof(jid) - 1)) {
            ok = buf_add(&b, &len, &cap, id, strlen(id), true);
            p += sizeof(jid) - 1;
        } else {
            ok = buf_add(&b, &len, &cap, p, 1, false);
            p++;
        }
    }
    if (!ok) {
        free(b);
        return NULL;
    }
    return b;
}

char *pl_rp_url_append(const char *url, const char *query)
{
    size_t n = strlen(url) + strlen(query) + 2;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%c%s", url, strchr(url, '?') ? '&' : '?', query);
    return s;
}

char *pl_rp_url_replace(const char *url, const char *from, const char *to)
{
    const char *at = strstr(url, from);
    if (!at)
        return NULL;
    size_t n = strlen(url) - strlen(from) + strlen(to) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%.*s%s%s", (int)(at - url), url, to, at + strlen(from));
    return s;
}

void pl_rp_schedule_init(struct pl_rp_schedule *s, double max, double min, double growth)
{
    s->max = max;
    s->min = min;
    s->growth = growth;
    s->dynamic = growth > 1 && min >= 1 && max > min;
    s->size = s->dynamic ? min : max;
}

double pl_rp_schedule_size(const struct pl_rp_schedule *s)
{
    return s->size;
}

void pl_rp_schedule_next(struct pl_rp_schedule *s)
{
    if (!s->dynamic)
        return;
    s->size *= s->growth;
    if (s->size > s->max)
        s->size = s->max;
}

int pl_rp_post_retry_delay_ms(int attempts, int server_errors, long status, long retry_after_s,
                              int scale_pct)
{
    bool server_error = status >= 500;
    bool transient = status == 0 || status == 429;
    if (!server_error && !transient)
        return -1;
    if ((server_error && server_errors >= 3) || attempts >= PL_RP_POST_MAX_ATTEMPTS)
        return -1;
    /* Fibonacci steps of 1 s from 2 s (2, 3, 5, 8, ...), capped at 30 s */
    long a = 1000, b = 2000;
    for (int i = 1; i < attempts && b < 30000; i++) {
        long n = a + b;
        a = b;
        b = n;
    }
    long wait = (b < 30000 ? b : 30000) * (scale_pct > 0 ? scale_pct : 100) / 100;
    if (status == 429 && retry_after_s > 0) {
        long ra = (retry_after_s < 60 ? retry_after_s : 60) * 1000;
        if (ra > wait)
            wait = ra;
    }
    return (int)wait;
}

const char *pl_rp_webhook_url_problem(const char *url)
{
    CURLU *u = curl_url();
    if (!u)
        return "out of memory";
    const char *why = NULL;
    char *scheme = NULL, *host = NULL;
    /* the literal prefix, then curl's own reading of it (which is lenient about slashes) */
    if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8))
        why = "webhook must be an http:// or https:// URL";
    else if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
        why = "webhook must be an http:// or https:// URL (this one does not parse)";
    else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
             (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")))
        why = "webhook must be an http:// or https:// URL";
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
        why = "webhook URL has no host";
    curl_free(scheme);
    curl_free(host);
    curl_url_cleanup(u);
    return why;
}

void pl_rp_curl_http_only(CURL *c)
{
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    curl_easy_setopt(c, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
}

enum pl_rp_take_verdict pl_rp_take_classify(long status, const char *content_type, size_t body_len)
{
    if (status == 0)
        return PL_RP_TAKE_ERROR;
    if (status == 204 || status == 400)
        return PL_RP_TAKE_NONE;
    if (status == 429)
        return PL_RP_TAKE_BACKOFF_429;
    if (status == 401 || status == 403 || status == 404)
        return PL_RP_TAKE_ERROR_AUTH;
    if (status >= 400)
        return PL_RP_TAKE_ERROR;
    if (status < 200 || status >= 300)
        return PL_RP_TAKE_IGNORED;
    if (!content_type || strncasecmp(content_type, "application/json", 16) != 0)
        return PL_RP_TAKE_IGNORED;
    if (body_len == 0)
        return PL_RP_TAKE_IGNORED;
    return PL_RP_TAKE_JOBS;
}

long pl_rp_take_wait_ms(enum pl_rp_take_verdict v, bool timed_out, int backoff_429_ms)
{
    switch (v) {
    case PL_RP_TAKE_BACKOFF_429:
        return backoff_429_ms;
    case PL_RP_TAKE_ERROR_AUTH:
        return 5000;
    case PL_RP_TAKE_ERROR:
        return timed_out ? 0 : 1000;
    default:
        return 0;
    }
}

static bool job_valid(const json_t *j)
{
    return json_is_object(j) && json_is_string(json_object_get(j, "id")) &&
           json_string_length(json_object_get(j, "id")) > 0 && json_object_get(j, "input");
}

json_t *pl_rp_parse_jobs(const char *body, size_t len, const char **why)
{
    *why = NULL;
    json_t *doc = json_loadb(body, len, JSON_DECODE_ANY, NULL);
    if (!doc) {
        *why = "body is not JSON";
        return NULL;
    }
    json_t *jobs = json_array();
    if (json_is_array(doc)) {
        size_t i;
        json_t *j;
        json_array_foreach(doc, i, j) {
            if (job_valid(j))
                json_array_append(jobs, j);
            else
                *why = "Job has missing field(s): id or input.";
        }
    } else if (job_valid(doc)) {
        json_array_append(jobs, doc);
    } else {
        *why = "Job has missing field(s): id or input.";
    }
    json_decref(doc);
    return jobs;
}

/* ---- logging ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

void pl_rp_log(const struct pl_rp_config *cfg, enum pl_rp_log_level level, const char *job_id,
               const char *batch_id, const char *fmt, ...)
{
    static const char *const names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    const char *lv = getenv("RUNPOD_LOG_LEVEL");
    if (!lv)
        lv = getenv("RUNPOD_DEBUG_LEVEL");
    int min = PL_RP_LOG_INFO;
    if (lv && !strcasecmp(lv, "DEBUG"))
        min = PL_RP_LOG_DEBUG;
    else if (lv && (!strcasecmp(lv, "WARN") || !strcasecmp(lv, "WARNING")))
        min = PL_RP_LOG_WARN;
    else if (lv && !strcasecmp(lv, "ERROR"))
        min = PL_RP_LOG_ERROR;
    if ((int)level < min)
        return;
    char msg[4096 + 256];
    int off = 0;
    if (batch_id)
        off = snprintf(msg, sizeof(msg), "[batchId=%s] ", batch_id);
    va_list ap;
    va_start(ap, fmt);
    char *full = NULL;
    int n = vasprintf(&full, fmt, ap);
    va_end(ap);
    if (n < 0)
        full = NULL;
    /* the SDK cuts messages over 4096 characters in the middle */
    size_t len = full ? strlen(full) : 0;
    if (len > 4096) {
        size_t keep = 2048, cut = len - 2 * keep;
        snprintf(msg + off, sizeof(msg) - (size_t)off, "%.*s...TRUNCATED %zu CHARACTERS...%s",
                 (int)keep, full, cut, full + len - keep);
    } else {
        snprintf(msg + off, sizeof(msg) - (size_t)off, "%s", full ? full : fmt);
    }
    free(full);
    pthread_mutex_lock(&log_mu);
    if (cfg && cfg->endpoint_id) {
        json_t *o = json_pack("{s:s?, s:s, s:s}", "requestId", job_id, "message", msg, "level",
                              names[level]);
        if (o && !job_id)
            json_object_set_new(o, "requestId", json_null());
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
        if (s)
            fprintf(stdout, "%s\n", s);
        fflush(stdout);
        free(s);
        json_decref(o);
    } else {
        fprintf(stderr, "%-5s | %s | %s\n", names[level], job_id ? job_id : "-", msg);
    }
    pthread_mutex_unlock(&log_mu);
}

/* ---- HTTP ---- */

struct resp {
    long status;                  /* 0: network failure */
    long retry_after_s;           /* a Retry-After header in seconds (0: none) */
    char *body;
    size_t len;
    char ctype[128];
    char err[CURL_ERROR_SIZE];
};

static size_t on_body(char *p, size_t sz, size_t n, void *user)
{
    struct resp *r = user;
    size_t k = sz * n;
    if (r->len + k > ((size_t)64 << 20))
        return 0; /* refuse absurd bodies */
    char *nb = realloc(r->body, r->len + k + 1);
    if (!nb)
        return 0;
    memcpy(nb + r->len, p, k);
    r->len += k;
    nb[r->len] = '\0';
    r->body = nb;
    return k;
}

static volatile sig_atomic_t g_shutdown;

static int on_progress(void *user, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    /* only the long polls that may be dropped (stop channel, heartbeat) abort on shutdown */
    return user && g_shutdown ? 1 : 0;
}

/*
 * One request. body NULL: GET. form: the result-post headers. abortable: the
 * request gives up when shutdown begins.
 */
static void http_do(CURL *c, const struct pl_rp_config *cfg, const char *url, const char *body,
                    const char *job_id, bool minimal_headers, long timeout_ms, bool abortable,
                    struct resp *r)
{
    memset(r, 0, sizeof(*r));
    curl_easy_reset(c);
    pl_rp_curl_http_only(c);
    struct curl_slist *h = NULL;
    char line[1024];
    /* "Name;" is curl's way to send a header with an empty value (the SDK sends "") */
    if (*cfg->api_key)
        snprintf(line, sizeof(line), "Authorization: %s", cfg->api_key);
    else
        snprintf(line, sizeof(line), "Authorization;");
    h = curl_slist_append(h, line);
    if (!minimal_headers) {
        if (body) {
            h = curl_slist_append(h, "Content-Type: application/x-www-form-urlencoded");
            h = curl_slist_append(h, "charset: utf-8");
            snprintf(line, sizeof(line), "X-Request-ID: %s", job_id);
            h = curl_slist_append(h, line);
        } else {
            h = curl_slist_append(h, "Content-Type: application/json");
        }
        /* through curl's option, not a raw header, so compressed answers are decoded */
        curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "gzip, deflate");
    }
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pagellm/" PAGELLM_VERSION " (Linux; x86_64)");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 10000 ? timeout_ms : 10000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->err);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, abortable ? (void *)c : NULL);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_off_t ra = 0;
        if (curl_easy_getinfo(c, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK && ra > 0)
            r->retry_after_s = ra > 3600 ? 3600 : (long)ra;
        char *ct = NULL;
        curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct);
        if (ct)
            snprintf(r->ctype, sizeof(r->ctype), "%s", ct);
    } else {
        r->status = 0;
        if (!r->err[0])
            snprintf(r->err, sizeof(r->err), "%s", curl_easy_strerror(rc));
    }
    curl_slist_free_all(h);
}

/* Sleeps up to ms, waking early on shutdown when wake_on_shutdown. */
static void nap(long ms, bool wake_on_shutdown)
{
    while (ms > 0 && !(wake_on_shutdown && g_shutdown)) {
        long step = ms < 50 ? ms : 50;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* ---- the worker ---- */

struct job;

struct worker {
    struct pl_rp_ctx *ctx;
    const struct pl_rp_config *cfg;
    pthread_mutex_t reg_mu;
    pthread_cond_t reg_cv;
    struct job *jobs;            /* held jobs */
    int held;
    bool refresh_done;           /* refresh_worker: a job finished, stop taking */
    bool stop_threads;           /* the stop poller: exit */
};

struct job {
    struct job *next;
    struct worker *w;
    char *id;
    char *batch_id;
    json_t *job;
    volatile int stop;
    pthread_t th;
};

static void reg_remove(struct worker *w, struct job *j)
{
    pthread_mutex_lock(&w->reg_mu);
    for (struct job **p = &w->jobs; *p; p = &(*p)->next)
        if (*p == j) {
            *p = j->next;
            break;
        }
    w->held--;
    if (w->cfg->refresh_worker)
        w->refresh_done = true;
    pthread_cond_broadcast(&w->reg_cv);
    pthread_mutex_unlock(&w->reg_mu);
}

/*
 * Posts body with the result-post retry policy (pl_rp_post_retry_delay_ms);
 * true when a 2xx came back. On false, why (n bytes) says how the last
 * attempt ended, for the caller's log line.
 */
static bool post_with_retry(CURL *c, struct job *j, const char *url, const char *body,
                            char *why, size_t n)
{
    const struct pl_rp_config *cfg = j->w->cfg;
    snprintf(why, n, "the job was stopped");
    int server_errors = 0;
    for (int attempt = 1;; attempt++) {
        if (j->stop)
            return false;
        struct resp r;
        http_do(c, cfg, url, body, j->id, false, 600000, false, &r);
        free(r.body);
        if (r.status >= 200 && r.status < 300)
            return true;
        server_errors += r.status >= 500;
        int wait = pl_rp_post_retry_delay_ms(attempt, server_errors, r.status, r.retry_after_s,
                                             cfg->retry_scale_pct);
        if (r.status)
            snprintf(why, n, "%d attempt(s), the last answered HTTP %ld", attempt, r.status);
        else
            snprintf(why, n, "%d attempt(s), the last failed: %s", attempt, r.err);
        const char *after = wait < 0 ? " (giving up)" : "";
        if (r.status)
            pl_rp_log(cfg, PL_RP_LOG_WARN, j->id, j->batch_id, "post attempt %d: HTTP %ld%s",
                      attempt, r.status, after);
        else
            pl_rp_log(cfg, PL_RP_LOG_WARN, j->id, j->batch_id, "post attempt %d: %s%s", attempt,
                      r.err, after);
        if (wait < 0)
            return false;
        nap(wait, false);
    }
}

struct job_post {
    struct job *j;
    CURL *c;
    char *stream_url;
};

static bool on_chunk(void *user, json_t *chunk)
{
    struct job_post *p = user;
    struct job *j = p->j;
    if (j->stop)
        return false;
    if (!p->stream_url)
        return true; /* no stream URL: the final result still carries everything */
    json_t *body = json_pack("{s:O}", "output", chunk);
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    char why[CURL_ERROR_SIZE + 64];
    if (s && !post_with_retry(p->c, j, p->stream_url, s, why, sizeof(why)) && !j->stop)
        pl_rp_log(j->w->cfg, PL_RP_LOG_ERROR, j->id, j->batch_id,
                  "a stream chunk of job %s could not be posted (%s)%s", j->id, why,
                  j->w->cfg->return_aggregate ? "; the final result still carries it" : "");
    free(s);
    return !j->stop;
}

static void *job_main(void *arg)
{
    struct job *j = arg;
    struct worker *w = j->w;
    const struct pl_rp_config *cfg = w->cfg;
    CURL *c = curl_easy_init();
    struct job_post p = {j, c, NULL};
    if (cfg->post_stream) {
        char *u = pl_rp_url_expand(cfg->post_stream, cfg->worker_id, j->id);
        p.stream_url = u ? pl_rp_url_append(u, "isStream=false") : NULL;
        free(u);
    }
    pl_rp_log(cfg, PL_RP_LOG_INFO, j->id, j->batch_id, "Started.");
    struct pl_rp_result res;
    pl_rp_run_job(w->ctx, j->id, json_object_get(j->job, "input"), on_chunk, &p, &j->stop, &res);
    if (j->stop || res.stopped) {
        pl_rp_log(cfg, PL_RP_LOG_INFO, j->id, j->batch_id, "Stopped; nothing more is posted.");
    } else {
        json_t *body = json_object();
        if (res.error)
            json_object_set_new(body, "error", json_string(res.error));
        else if (res.generator && !cfg->return_aggregate)
            json_object_set_new(body, "output", json_array());
        else
            json_object_set(body, "output", res.output ? res.output : json_null());
        if (cfg->refresh_worker)
            json_object_set_new(body, "stopPod", json_true());
        char *s = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        char *u = cfg->post_output ? pl_rp_url_expand(cfg->post_output, cfg->worker_id, j->id)
                                   : NULL;
        char *url = u ? pl_rp_url_append(u, res.generator ? "isStream=true" : "isStream=false")
                      : NULL;
        free(u);
        char why[CURL_ERROR_SIZE + 64];
        snprintf(why, sizeof(why), "out of memory");
        bool ok = s && url && post_with_retry(c, j, url, s, why, sizeof(why));
        if (!ok)
            pl_rp_log(cfg, PL_RP_LOG_ERROR, j->id, j->batch_id,
                      "the result of job %s could not be posted (%s) and is dropped", j->id, why);
        else
            pl_rp_log(cfg, PL_RP_LOG_INFO, j->id, j->batch_id, "Finished%s.",
                      res.error ? " (failed)" : "");
        free(url);
        free(s);
    }
    pl_rp_result_fini(&res);
    free(p.stream_url);
    curl_easy_cleanup(c);
    reg_remove(w, j);
    json_decref(j->job);
    free(j->id);
    free(j->batch_id);
    free(j);
    return NULL;
}

static void accept_job(struct worker *w, json_t *jobj)
{
    const char *id = json_string_value(json_object_get(jobj, "id"));
    const char *b = json_string_value(json_object_get(jobj, "batchId"));
    struct job *j = calloc(1, sizeof(*j));
    if (j) {
        j->id = strdup(id);
        j->batch_id = b ? strdup(b) : NULL;
    }
    if (!j || !j->id || (b && !j->batch_id)) {
        /* taken from the job server, so never dropped silently */
        pl_rp_log(w->cfg, PL_RP_LOG_ERROR, id, b, "out of memory: job %s is dropped", id);
        if (j) {
            free(j->id);
            free(j->batch_id);
            free(j);
        }
        return;
    }
    j->w = w;
    j->job = json_incref(jobj);
    pthread_mutex_lock(&w->reg_mu);
    j->next = w->jobs;
    w->jobs = j;
    w->held++;
    pthread_mutex_unlock(&w->reg_mu);
    pl_rp_log(w->cfg, PL_RP_LOG_DEBUG, j->id, j->batch_id, "Accepted.");
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&j->th, &at, job_main, j) != 0) {
        pl_rp_log(w->cfg, PL_RP_LOG_ERROR, j->id, j->batch_id,
                  "could not start a thread for job %s; it is dropped", j->id);
        reg_remove(w, j);
        json_decref(j->job);
        free(j->id);
        free(j->batch_id);
        free(j);
    }
    pthread_attr_destroy(&at);
}

/* The ids of every held job, comma-separated ("" when none). */
static char *held_ids(void *user)
{
    struct worker *w = user;
    char *b = NULL;
    size_t len = 0, cap = 0;
    buf_add(&b, &len, &cap, "", 0, false);
    pthread_mutex_lock(&w->reg_mu);
    for (struct job *j = w->jobs; j && b; j = j->next) {
        if (len)
            buf_add(&b, &len, &cap, ",", 1, false);
        buf_add(&b, &len, &cap, j->id, strlen(j->id), false);
    }
    pthread_mutex_unlock(&w->reg_mu);
    return b;
}

struct pl_rp_heartbeat {
    struct pl_rp_ctx *ctx;
    char *(*held_ids)(void *user);
    void *user;
    volatile bool stop;
    pthread_t th;
};

/* The ping URL with job_id (percent-encoded: "," is "%2C") when ids is not empty. */
static char *ping_url(const char *base, const char *ids)
{
    char q[64];
    snprintf(q, sizeof(q), "runpod_version=%s", PL_RP_SDK_VERSION);
    if (!ids || !*ids)
        return pl_rp_url_append(base, q);
    char *b = NULL;
    size_t len = 0, cap = 0;
    bool ok = buf_add(&b, &len, &cap, "job_id=", 7, false) &&
              buf_add(&b, &len, &cap, ids, strlen(ids), true);
    char *t = ok ? pl_rp_url_append(base, b) : NULL;
    char *u = t ? pl_rp_url_append(t, q) : NULL;
    free(t);
    free(b);
    return u;
}

static void *heartbeat_main(void *arg)
{
    struct pl_rp_heartbeat *h = arg;
    const struct pl_rp_config *cfg = h->ctx->cfg;
    CURL *c = curl_easy_init();
    char *base = pl_rp_url_expand(cfg->ping, cfg->worker_id, cfg->worker_id);
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    bool stalled = false;
    while (c && base && !h->stop) {
        double age = 0;
        bool healthy = !h->ctx->ae || pl_async_engine_is_healthy(h->ctx->ae, &age);
        if (healthy != !stalled)
            pl_rp_log(cfg, healthy ? PL_RP_LOG_INFO : PL_RP_LOG_ERROR, NULL, NULL,
                      healthy ? "the engine loop moves again: heartbeat resumed"
                              : "the engine loop is not making progress (last step %.1f s ago "
                                "with requests pending): heartbeat paused",
                      age);
        stalled = !healthy;
        char *ids = healthy ? h->held_ids(h->user) : NULL;
        char *u1 = ids ? ping_url(base, ids) : NULL;
        free(ids);
        /* retries on 429/5xx/network: 0 s, then 2 s, 4 s (the SDK's session) */
        for (int attempt = 0; u1 && attempt < 4 && !h->stop; attempt++) {
            struct resp r;
            http_do(c, cfg, u1, NULL, NULL, true, 2L * cfg->ping_interval_ms, true, &r);
            free(r.body);
            bool retry = r.status == 0 || r.status == 429 || r.status == 500 ||
                         r.status == 502 || r.status == 503 || r.status == 504;
            if (!retry)
                break;
            pl_rp_log(cfg, PL_RP_LOG_WARN, NULL, NULL, "heartbeat failed (%s%ld)",
                      r.status ? "HTTP " : "", r.status);
            if (attempt > 0)
                nap(attempt * 2000L, true);
        }
        free(u1);
        next.tv_nsec += (long)(cfg->ping_interval_ms % 1000) * 1000000L;
        next.tv_sec += cfg->ping_interval_ms / 1000 + next.tv_nsec / 1000000000L;
        next.tv_nsec %= 1000000000L;
        for (;;) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long left = (next.tv_sec - now.tv_sec) * 1000L +
                        (next.tv_nsec - now.tv_nsec) / 1000000L;
            if (left <= 0 || h->stop)
                break;
            nap(left < 50 ? left : 50, false);
        }
    }
    free(base);
    curl_easy_cleanup(c);
    return NULL;
}

struct pl_rp_heartbeat *pl_rp_heartbeat_start(struct pl_rp_ctx *ctx,
                                              char *(*ids_fn)(void *user), void *user)
{
    const struct pl_rp_config *cfg = ctx->cfg;
    const char *pod = getenv("RUNPOD_POD_ID");
    if (!cfg->ping || !strcmp(cfg->ping, "PING_NOT_SET") || !*cfg->api_key || !pod || !*pod)
        return NULL;
    struct pl_rp_heartbeat *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->ctx = ctx;
    h->held_ids = ids_fn;
    h->user = user;
    if (pthread_create(&h->th, NULL, heartbeat_main, h) != 0) {
        pl_rp_log(cfg, PL_RP_LOG_ERROR, NULL, NULL, "could not start the heartbeat thread");
        free(h);
        return NULL;
    }
    return h;
}

void pl_rp_heartbeat_stop(struct pl_rp_heartbeat *h)
{
    if (!h)
        return;
    h->stop = true;
    pthread_join(h->th, NULL);
    free(h);
}

static void stop_jobs(struct worker *w, const json_t *list)
{
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v) {
        const char *id = json_string_value(v);
        if (!id)
            continue;
        pthread_mutex_lock(&w->reg_mu);
        for (struct job *j = w->jobs; j; j = j->next)
            if (!strcmp(j->id, id)) {
                j->stop = 1;
                pl_rp_log(w->cfg, PL_RP_LOG_INFO, j->id, j->batch_id, "Stop signal received.");
            }
        pthread_mutex_unlock(&w->reg_mu);
    }
}

static void *stop_main(void *arg)
{
    struct worker *w = arg;
    const struct pl_rp_config *cfg = w->cfg;
    CURL *c = curl_easy_init();
    char *t = pl_rp_url_expand(cfg->get_job, cfg->worker_id, cfg->worker_id);
    char *url = t ? pl_rp_url_replace(t, "/job-take/", "/job-stop/") : NULL;
    free(t);
    int n404 = 0;
    while (c && url && !w->stop_threads) {
        struct resp r;
        http_do(c, cfg, url, NULL, NULL, false, cfg->take_timeout_ms, true, &r);
        long wait = 0;
        if (r.status == 204) {
            wait = 1000;
        } else if (r.status == 429) {
            wait = cfg->backoff_429_ms;
        } else if (r.status == 404) {
            wait = ++n404 >= 5 ? 30000 : 1000;
        } else if (r.status >= 400 || r.status == 0) {
            wait = 1000;
        } else {
            n404 = 0;
            wait = 1000;
            json_t *doc = r.len ? json_loadb(r.body, r.len, 0, NULL) : NULL;
            json_t *list = json_object_get(doc, "jobsToStop");
            if (json_is_array(list) && json_array_size(list) > 0) {
                stop_jobs(w, list);
                wait = 0;
            }
            json_decref(doc);
        }
        free(r.body);
        for (long left = wait; left > 0 && !w->stop_threads; left -= 50)
            nap(left < 50 ? left : 50, false);
    }
    free(url);
    curl_easy_cleanup(c);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    g_shutdown = 1;
}

int pl_rp_worker_run(struct pl_rp_ctx *ctx)
{
    const struct pl_rp_config *cfg = ctx->cfg;
    struct worker w = {0};
    w.ctx = ctx;
    w.cfg = cfg;
    pthread_mutex_init(&w.reg_mu, NULL);
    pthread_cond_init(&w.reg_cv, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    pthread_t st;
    struct pl_rp_heartbeat *hb = pl_rp_heartbeat_start(ctx, held_ids, &w);
    bool have_stop = strstr(cfg->get_job, "/job-take/") != NULL;
    have_stop = have_stop && pthread_create(&st, NULL, stop_main, &w) == 0;
    if (!cfg->post_stream)
        pl_rp_log(cfg, PL_RP_LOG_WARN, NULL, NULL,
                  "RUNPOD_WEBHOOK_POST_STREAM is unset: stream chunks are not posted (final "
                  "results still are)");

    CURL *c = curl_easy_init();
    char *take = pl_rp_url_expand(cfg->get_job, cfg->worker_id, cfg->worker_id);
    char *take_batch = take ? pl_rp_url_replace(take, "/job-take/", "/job-take-batch/") : NULL;
    pl_rp_log(cfg, PL_RP_LOG_INFO, NULL, NULL, "worker %s: taking jobs (concurrency %d)",
              cfg->worker_id, cfg->max_concurrency);
    while (c && take && !g_shutdown) {
        pthread_mutex_lock(&w.reg_mu);
        while (!g_shutdown && !w.refresh_done && w.held >= cfg->max_concurrency) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            pthread_cond_timedwait(&w.reg_cv, &w.reg_mu, &ts);
        }
        int needed = cfg->max_concurrency - w.held;
        bool in_progress = w.held > 0;
        bool done = w.refresh_done;
        pthread_mutex_unlock(&w.reg_mu);
        if (g_shutdown || done)
            break;
        char q[96];
        char *url;
        if (needed > 1 && take_batch) {
            snprintf(q, sizeof(q), "batch_size=%d&job_in_progress=%d", needed, in_progress);
            url = pl_rp_url_append(take_batch, q);
        } else {
            needed = 1;
            snprintf(q, sizeof(q), "job_in_progress=%d", in_progress);
            url = pl_rp_url_append(take, q);
        }
        struct resp r;
        if (!url)
            break;
        /* not abortable: a job handed out during shutdown must still run */
        http_do(c, cfg, url, NULL, NULL, false, cfg->take_timeout_ms, false, &r);
        free(url);
        enum pl_rp_take_verdict v = pl_rp_take_classify(r.status, r.ctype, r.len);
        bool timed_out = !r.status && (strstr(r.err, "imed out") || strstr(r.err, "Timeout"));
        switch (v) {
        case PL_RP_TAKE_NONE:
        case PL_RP_TAKE_IGNORED:
            break;
        case PL_RP_TAKE_BACKOFF_429:
            pl_rp_log(cfg, PL_RP_LOG_WARN, NULL, NULL, "job take: 429, backing off");
            break;
        case PL_RP_TAKE_ERROR_AUTH:
        case PL_RP_TAKE_ERROR:
            if (r.status)
                pl_rp_log(cfg, PL_RP_LOG_ERROR, NULL, NULL, "job take: HTTP %ld", r.status);
            else if (!timed_out)
                pl_rp_log(cfg, PL_RP_LOG_ERROR, NULL, NULL, "job take: %s", r.err);
            break;
        case PL_RP_TAKE_JOBS: {
            const char *why = NULL;
            json_t *jobs = pl_rp_parse_jobs(r.body, r.len, &why);
            if (why)
                pl_rp_log(cfg, PL_RP_LOG_ERROR, NULL, NULL, "job take: %s", why);
            size_t i;
            json_t *jj;
            json_array_foreach(jobs, i, jj) {
                /* never hold more than the concurrency (spec 1.9): extra jobs are refused */
                if ((int)i >= needed) {
                    const char *xid = json_string_value(json_object_get(jj, "id"));
                    pl_rp_log(cfg, PL_RP_LOG_ERROR, xid, NULL,
                              "job %s refused: the job server returned more jobs than the %d "
                              "asked for", xid, needed);
                    continue;
                }
                accept_job(&w, jj);
            }
            json_decref(jobs);
            break;
        }
        }
        nap(pl_rp_take_wait_ms(v, timed_out, cfg->backoff_429_ms), true);
        free(r.body);
    }
    pl_rp_log(cfg, PL_RP_LOG_INFO, NULL, NULL, "no more takes; draining %d job(s)", w.held);
    pthread_mutex_lock(&w.reg_mu);
    while (w.held > 0)
        pthread_cond_wait(&w.reg_cv, &w.reg_mu);
    w.stop_threads = true;
    pthread_mutex_unlock(&w.reg_mu);
    if (have_stop)
        pthread_join(st, NULL);
    pl_rp_heartbeat_stop(hb);
    free(take);
    free(take_batch);
    curl_easy_cleanup(c);
    pthread_mutex_destroy(&w.reg_mu);
    pthread_cond_destroy(&w.reg_cv);
    return 0;
}

void pl_rp_report_unhealthy(const struct pl_rp_config *cfg, const char *check, const char *reason)
{
    if (!cfg->ping || !strcmp(cfg->ping, "PING_NOT_SET"))
        return;
    CURL *c = curl_easy_init();
    if (!c)
        return;
    char r256[257];
    snprintf(r256, sizeof(r256), "%s", reason);
    char *er = curl_easy_escape(c, r256, 0);
    char *ec = curl_easy_escape(c, check, 0);
    char *base = pl_rp_url_expand(cfg->ping, cfg->worker_id, cfg->worker_id);
    size_t n = (er ? strlen(er) : 0) + (ec ? strlen(ec) : 0) + 128;
    char *q = malloc(n);
    if (q && er && ec && base) {
        snprintf(q, n, "status=unhealthy&check=%s&reason=%s&runpod_version=%s", ec, er,
                 PL_RP_SDK_VERSION);
        char *url = pl_rp_url_append(base, q);
        if (url) {
            struct resp r;
            http_do(c, cfg, url, NULL, NULL, true, 2000, false, &r);
            free(r.body);
        }
        free(url);
    }
    free(q);
    free(base);
    curl_free(er);
    curl_free(ec);
    curl_easy_cleanup(c);
}
