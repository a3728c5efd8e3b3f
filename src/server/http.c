/*
 * http.c -- the HTTP transport over libmicrohttpd (see http.h for the contract).
 *
 * Threads: MHD runs n_threads event-loop threads (epoll), each owning its
 * connections; GET handlers run on them. Handlers of requests with a body run
 * on n_handler_threads pool workers while the connection is suspended; a
 * sweeper thread enforces the header deadline. Any other thread only ever
 * calls pl_http_async_wake.
 *
 * A request's life (struct request_ctx, from the URI log callback, which sees
 * the request line, to the request-completed callback):
 *
 *   request line -> headers -> first access-handler call: every check that
 *   needs no body (431, 400, 501, 401, 404/405, 413 by Content-Length);
 *   GET routes answer here -> body bytes (bounded) -> final call: the job
 *   goes to the pool, the connection is suspended -> the worker runs the
 *   handler, resumes -> the response (or an async reply) is delivered.
 *
 * An asynchronous reply's states (a->mu guards them):
 *
 *   RUNNING --no news--> SUSPENDED --wake--> RUNNING (MHD resumes, asks again)
 *      |  wake while RUNNING sets wake_pending, so the next "no news" check
 *      |  sees it and does not suspend (no lost wake-ups)
 *      +--> closed (request-completed callback): ops.closed, then no resumes
 *
 * An async reply is referenced by its request_ctx and, for streams, by the
 * MHD response's reader; the last reference frees it.
 *
 * Connections (struct conn_rec, from MHD's connection-started to -closed
 * notification) waiting for a request's header sit in a list, oldest first;
 * the sweeper shuts down (shutdown(2); MHD then sees EOF and closes) those
 * past the header deadline, and the oldest ones when the connection limit is
 * nearly reached. conns_mu is held from taking a record off the list to the
 * shutdown call, and MHD notifies the close before closing the descriptor,
 * so the sweeper never touches a descriptor number that was reused.
 */
#include "server/http.h"

#include "util/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if MHD_VERSION < 0x00097002
typedef int MHD_RESULT;
#else
typedef enum MHD_Result MHD_RESULT;
#endif

struct route {
    char *method;
    char *path;
    bool auth;
    pl_http_handler_fn fn;
    void *user;
};

/* A route path matches the URL exactly; one ending in a slash and an asterisk matches its
 * prefix (up to the slash) plus one or more bytes. */
static bool path_matches(const char *route, const char *url)
{
    size_t n = strlen(route);
    if (n >= 2 && route[n - 1] == '*' && route[n - 2] == '/')
        return !strncmp(route, url, n - 1) && url[n - 1] != '\0';
    return !strcmp(route, url);
}
struct conn_rec {
    struct conn_rec *prev, *next; /* in the waiting list while listed */
    int fd;
    double since;                 /* when its wait for a request's header began */
    bool listed;                  /* waiting for a header (new or idle keep-alive) */
    bool evicted;                 /* shut down by the sweeper; MHD closes it */
};

struct request_ctx;

struct pl_http_server {
    struct pl_http_params p;
    char *api_key;
    char *allowed_origins, *allowed_methods, *allowed_headers;
    struct route *routes;
    int n_routes;
    struct route fallback;   /* fn NULL: none (404/405) */
    struct MHD_Daemon *daemon;
    int listen_fd; /* ours before the daemon starts and after it is quiesced (drain); -1 else */
    int port;
    atomic_bool draining;
    atomic_int n_active;     /* requests in the pool plus async replies not yet closed */
    atomic_int n_suspended;  /* connections suspended right now */

    /* connections waiting for a header (see the top comment) */
    pthread_mutex_t conns_mu;
    pthread_cond_t conns_cv;         /* wakes the sweeper */
    struct conn_rec *wait_head, *wait_tail; /* oldest first */
    unsigned n_open;                 /* connections MHD has open (tracked ones) */
    unsigned n_evicting;             /* shut down, not yet closed by MHD */
    unsigned max_open;               /* the connection limit in force */
    unsigned room;                   /* free slots kept by closing waiting connections */
    bool sweeper_stop;
    bool sweeper_running;
    pthread_t sweeper;

    /* the handler pool */
    pthread_mutex_t jobs_mu;
    pthread_cond_t jobs_cv;
    struct request_ctx *jobs_head, *jobs_tail;
    bool jobs_closing;               /* no new jobs; workers finish the queue and exit */
    pthread_t *workers;
    unsigned n_workers;
    bool sync_ready;                 /* the mutexes above exist */
};

struct pl_http_async {
    pthread_mutex_t mu;
    int refs;                       /* guarded by mu */
    const struct pl_http_async_ops *ops;
    void *user;
    bool is_stream;
    const char *content_type;
    struct pl_http_server *srv;     /* set when attached to a connection */
    struct MHD_Connection *conn;
    bool suspended, wake_pending, closed;
    struct pl_sbuf pending;         /* stream bytes not yet handed to MHD */
    bool ended;                     /* produce() said the stream is over */
};

struct request_ctx {
    struct pl_sbuf body;
    bool headers_checked;           /* the first access-handler call happened */
    bool too_large;
    unsigned long long body_seen;   /* body bytes received, kept or dropped */
    bool responded;                 /* a response was queued before the body was read */
    bool started;                   /* the body is complete and the handler was started */
    bool preflight;                 /* a CORS preflight, answered at the final call */
    const struct route *route;      /* the matched route (set by the first call) */
    /* the raw request line as the URI log callback saw it (in MHD's buffer) */
    const char *raw_uri;
    size_t raw_uri_len;
    bool nul_in_uri;                /* %00 in the path: a NUL would cut it */
    /* handler pool */
    struct request_ctx *job_next;
    struct MHD_Connection *conn;
    const char *method, *url;       /* MHD's strings, valid while the request lives */
    bool inline_route;              /* GET (or the fallback's GET / HEAD): run on the event loop */
    atomic_bool job_done;           /* the worker filled job_resp */
    bool job_queued, job_delivered;
    struct pl_http_response job_resp;
    struct pl_http_async *async;
    struct pl_http_server *srv;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- small helpers ------------------------------------------------------- */

void pl_http_params_default(struct pl_http_params *p)
{
    memset(p, 0, sizeof(*p));
    p->host = "127.0.0.1";
    p->port = 8000;
    p->allowed_origins = "*";
    p->allowed_methods = "*";
    p->allowed_headers = "*";
    p->max_body_bytes = 32u << 20;
    p->max_header_bytes = 64u << 10;
    p->timeout_keep_alive_s = 5;
    p->timeout_idle_s = 60;
    p->max_connections = 10000;
    p->n_threads = 2;
    p->n_handler_threads = 4;
    p->backlog = 1024;
}

bool pl_http_secure_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    /* walk the longer one completely; any difference (length included) sticks */
    size_t n = la > lb ? la : lb;
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < n; i++) {
        unsigned char ca = i < la ? (unsigned char)a[i] : 0;
        unsigned char cb = i < lb ? (unsigned char)b[i] : 0;
        diff |= (unsigned char)(ca ^ cb);
    }
    return diff == 0;
}

const char *pl_http_bearer_token(const char *value, size_t *token_len)
{
    if (!value)
        return NULL;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncasecmp(value, "bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return NULL;
    const char *t = value + 6;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t'))
        n--;
    if (n == 0)
        return NULL;
    *token_len = n;
    return t;
}

static const char *default_error_type(int status)
{
    switch (status) {
    case 400: return "BadRequestError";
    case 401: return "AuthenticationError";
    case 403: return "PermissionDeniedError";
    case 404: return "NotFoundError";
    case 405: return "MethodNotAllowed";
    case 413: return "RequestEntityTooLarge";
    case 422: return "UnprocessableEntityError";
    case 429: return "RateLimitError";
    case 501: return "NotImplementedError";
    case 503: return "ServiceUnavailableError";
    default: return status >= 500 ? "InternalServerError" : "BadRequestError";
    }
}

json_t *pl_http_json_string_lossy(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    /* invalid UTF-8 (or an embedded NUL): keep valid sequences, U+FFFD for the rest */
    struct pl_sbuf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        bool ok = len > 0 && i + len <= n && c != 0;
        for (size_t k = 1; ok && k < len; k++)
            ok = (u[i + k] & 0xC0) == 0x80;
        if (ok && len > 1) {
            /* overlong forms, surrogates and > U+10FFFF are invalid too */
            unsigned cp = len == 2 ? (c & 0x1Fu) : len == 3 ? (c & 0x0Fu) : (c & 0x07u);
            for (size_t k = 1; k < len; k++)
                cp = (cp << 6) | (u[i + k] & 0x3Fu);
            ok = !((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
                   (len == 4 && cp < 0x10000) || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF);
        }
        if (ok) {
            pl_sbuf_append(&b, s + i, len);
            i += len;
        } else {
            pl_sbuf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    size_t len = 0;
    char *d = pl_sbuf_take(&b, &len);
    j = d ? json_stringn(d, len) : NULL;
    free(d);
    return j ? j : json_string("");
}

char *pl_http_error_json(int status, const char *type, const char *param, const char *message,
                         size_t *len)
{
    json_t *inner = json_object();
    json_t *root = json_object();
    if (!message)
        message = "";
    json_object_set_new(inner, "message", pl_http_json_string_lossy(message, strlen(message)));
    json_object_set_new(inner, "type", json_string(type ? type : default_error_type(status)));
    json_object_set_new(inner, "param",
                        param ? pl_http_json_string_lossy(param, strlen(param)) : json_null());
    json_object_set_new(inner, "code", json_integer(status));
    json_object_set_new(root, "error", inner);
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (s && len)
        *len = strlen(s);
    return s;
}

void pl_http_set_error(struct pl_http_response *resp, int status, const char *type,
                       const char *param, const char *message)
{
    free(resp->body);
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = pl_http_error_json(status, type, param, message, &resp->body_len);
    if (!resp->body)
        resp->body_len = 0;
    resp->async = NULL;
}

void pl_http_set_json(struct pl_http_response *resp, int status, char *body, size_t len)
{
    free(resp->body);
    if (!body) {
        resp->body = NULL;
        pl_http_set_error(resp, 500, NULL, NULL, "out of memory");
        return;
    }
    resp->status = status;
    resp->content_type = "application/json";
    resp->body = body;
    resp->body_len = len;
}

const char *pl_http_header(const struct pl_http_request *req, const char *name)
{
    return MHD_lookup_connection_value((struct MHD_Connection *)req->conn, MHD_HEADER_KIND, name);
}

/* ---- asynchronous replies -------------------------------------------------- */

struct pl_http_async *pl_http_async_new(const struct pl_http_async_ops *ops, void *user,
                                        bool is_stream, const char *content_type)
{
    struct pl_http_async *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    pthread_mutex_init(&a->mu, NULL);
    a->refs = 1; /* the request_ctx's, once attached */
    a->ops = ops;
    a->user = user;
    a->is_stream = is_stream;
    a->content_type = content_type ? content_type : "text/event-stream";
    return a;
}

static void async_unref(struct pl_http_async *a)
{
    pthread_mutex_lock(&a->mu);
    int refs = --a->refs;
    pthread_mutex_unlock(&a->mu);
    if (refs > 0)
        return;
    pl_sbuf_fini(&a->pending);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

void pl_http_async_discard(struct pl_http_async *a)
{
    if (a)
        async_unref(a);
}

void pl_http_async_wake(struct pl_http_async *a)
{
    pthread_mutex_lock(&a->mu);
    if (a->suspended && !a->closed) {
        a->suspended = false;
        atomic_fetch_sub(&a->srv->n_suspended, 1);
        MHD_resume_connection(a->conn);
    } else {
        a->wake_pending = true;
    }
    pthread_mutex_unlock(&a->mu);
}

/* Clears wake_pending before the caller looks for news. */
static void async_arm(struct pl_http_async *a)
{
    pthread_mutex_lock(&a->mu);
    a->wake_pending = false;
    pthread_mutex_unlock(&a->mu);
}

/* Suspends the connection unless a wake came since async_arm. True if suspended. */
static bool async_suspend_unless_woken(struct pl_http_async *a)
{
    pthread_mutex_lock(&a->mu);
    bool suspend = !a->wake_pending && !a->closed;
    if (suspend) {
        a->suspended = true;
        atomic_fetch_add(&a->srv->n_suspended, 1);
        MHD_suspend_connection(a->conn);
    }
    pthread_mutex_unlock(&a->mu);
    return suspend;
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct pl_http_async *a = cls;
    for (;;) {
        if (a->pending.len > 0) {
            size_t n = a->pending.len < max ? a->pending.len : max;
            memcpy(buf, a->pending.data, n);
            pl_sbuf_consume(&a->pending, n);
            return (ssize_t)n;
        }
        if (a->pending.failed)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        if (a->ended)
            return MHD_CONTENT_READER_END_OF_STREAM;
        async_arm(a);
        if (!a->ops->produce(a->user, &a->pending))
            a->ended = true;
        if (a->pending.len > 0 || a->ended || a->pending.failed)
            continue;
        if (async_suspend_unless_woken(a))
            return 0;
    }
}

static void stream_reader_free(void *cls)
{
    async_unref(cls);
}

/* ---- responses ---------------------------------------------------------------- */

static bool origin_allowed(const struct pl_http_server *s, const char *origin)
{
    const char *list = s->allowed_origins;
    if (!strcmp(list, "*"))
        return true;
    size_t n = strlen(origin);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == n && !strncmp(p, origin, n))
            return true;
        p = e;
    }
    return false;
}

/* Adds the CORS headers a response to this request needs (Starlette's rules). */
static void add_cors(struct pl_http_server *s, struct MHD_Connection *conn,
                     struct MHD_Response *r)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    if (!origin || !origin_allowed(s, origin))
        return;
    bool wildcard = !strcmp(s->allowed_origins, "*") && !s->p.allow_credentials;
    MHD_add_response_header(r, "Access-Control-Allow-Origin", wildcard ? "*" : origin);
    if (!wildcard)
        MHD_add_response_header(r, "Vary", "Origin");
    if (s->p.allow_credentials)
        MHD_add_response_header(r, "Access-Control-Allow-Credentials", "true");
}

/* Tells clients how long an idle connection stays open, so that they stop reusing
 * it before the server closes it (no request lost to that race). */
static void add_keep_alive(struct pl_http_server *s, struct MHD_Response *r)
{
    char v[32];
    snprintf(v, sizeof(v), "timeout=%u", s->p.timeout_keep_alive_s);
    MHD_add_response_header(r, "Keep-Alive", v);
}

static MHD_RESULT send_buffer(struct pl_http_server *s, struct MHD_Connection *conn, int status,
                              const char *content_type, char *body, size_t len,
                              const char *allow)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE
                                                                             : MHD_RESPMEM_PERSISTENT);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    if (content_type)
        MHD_add_response_header(r, "Content-Type", content_type);
    if (allow)
        MHD_add_response_header(r, "Allow", allow);
    if (atomic_load(&s->draining))
        MHD_add_response_header(r, "Connection", "close");
    else
        add_keep_alive(s, r);
    add_cors(s, conn, r);
    MHD_RESULT ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static MHD_RESULT send_error(struct pl_http_server *s, struct MHD_Connection *conn, int status,
                             const char *type, const char *param, const char *msg,
                             const char *allow)
{
    size_t len = 0;
    char *body = pl_http_error_json(status, type, param, msg, &len);
    return send_buffer(s, conn, status, "application/json", body, len, allow);
}

/* A redirect to location, without a body. */
static MHD_RESULT send_redirect(struct pl_http_server *s, struct MHD_Connection *conn, int status,
                                const char *location)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(0, (char *)"",
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Location", location);
    add_keep_alive(s, r);
    add_cors(s, conn, r);
    MHD_RESULT ret = MHD_queue_response(conn, (unsigned)status, r);
    MHD_destroy_response(r);
    return ret;
}

static MHD_RESULT send_stream_headers(struct pl_http_server *s, struct MHD_Connection *conn,
                                      struct pl_http_async *a)
{
    pthread_mutex_lock(&a->mu);
    a->refs++; /* the reader's */
    pthread_mutex_unlock(&a->mu);
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                                               stream_reader, a,
                                                               stream_reader_free);
    if (!r) {
        async_unref(a);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", a->content_type);
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    add_keep_alive(s, r);
    add_cors(s, conn, r);
    MHD_RESULT ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* Delivers a handler's (or async result's) response. */
static MHD_RESULT deliver(struct pl_http_server *s, struct MHD_Connection *conn,
                          struct request_ctx *ctx, struct pl_http_response *resp)
{
    if (resp->async) {
        struct pl_http_async *a = resp->async;
        free(resp->body);
        a->srv = s;
        a->conn = conn;
        ctx->async = a;
        atomic_fetch_add(&s->n_active, 1);
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->p.timeout_idle_s);
        if (a->is_stream)
            return send_stream_headers(s, conn, a);
        /* deferred: look once (it may be ready), else suspend until woken */
        for (;;) {
            async_arm(a);
            struct pl_http_response r = {0};
            if (a->ops->result(a->user, &r))
                return send_buffer(s, conn, r.status, r.content_type, r.body, r.body_len, NULL);
            if (async_suspend_unless_woken(a))
                return MHD_YES;
        }
    }
    if (resp->location) {
        free(resp->body);
        return send_redirect(s, conn, resp->status, resp->location);
    }
    return send_buffer(s, conn, resp->status, resp->content_type, resp->body, resp->body_len,
                       NULL);
}

/* ---- the access handler ---------------------------------------------------------- */

static MHD_RESULT preflight(struct pl_http_server *s, struct MHD_Connection *conn)
{
    const char *origin = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Origin");
    const char *req_method =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Method");
    if (!origin || !req_method)
        return send_error(s, conn, 405, NULL, NULL, "OPTIONS is only answered for CORS preflight",
                          NULL);
    if (!origin_allowed(s, origin))
        return send_buffer(s, conn, 400, "text/plain", strdup("Disallowed CORS origin"),
                           strlen("Disallowed CORS origin"), NULL);
    struct MHD_Response *r = MHD_create_response_from_buffer(2, (char *)"OK",
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "text/plain");
    add_cors(s, conn, r);
    bool star_m = !strcmp(s->allowed_methods, "*");
    MHD_add_response_header(r, "Access-Control-Allow-Methods",
                            star_m ? "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
                                   : s->allowed_methods);
    const char *req_headers =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Access-Control-Request-Headers");
    if (!strcmp(s->allowed_headers, "*")) {
        if (req_headers)
            MHD_add_response_header(r, "Access-Control-Allow-Headers", req_headers);
    } else {
        MHD_add_response_header(r, "Access-Control-Allow-Headers", s->allowed_headers);
    }
    MHD_add_response_header(r, "Access-Control-Max-Age", "600");
    MHD_RESULT ret = MHD_queue_response(conn, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ---- connection records: the header deadline and the connection limit ------------------ */

/* conns_mu held. */
static void wait_push(struct pl_http_server *s, struct conn_rec *c)
{
    if (c->listed || c->evicted)
        return;
    bool was_empty = !s->wait_head;
    c->since = mono_now(); /* taken under the lock: the list stays sorted by since */
    c->prev = s->wait_tail;
    c->next = NULL;
    if (s->wait_tail)
        s->wait_tail->next = c;
    else
        s->wait_head = c;
    s->wait_tail = c;
    c->listed = true;
    if (was_empty)
        pthread_cond_signal(&s->conns_cv); /* the sweeper may be waiting without a deadline */
}

/* conns_mu held. */
static void wait_remove(struct pl_http_server *s, struct conn_rec *c)
{
    if (!c->listed)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->wait_head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        s->wait_tail = c->prev;
    c->prev = c->next = NULL;
    c->listed = false;
}

/* conns_mu held. True when the open connections leave less room than kept free. */
static bool conns_crowded(const struct pl_http_server *s)
{
    return s->n_open - s->n_evicting + s->room > s->max_open;
}

static void notify_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                              enum MHD_ConnectionNotificationCode code)
{
    struct pl_http_server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn_rec *c = ci ? calloc(1, sizeof(*c)) : NULL;
        *socket_context = c;
        if (!c)
            return; /* untracked: only MHD's own timeouts apply to it */
        c->fd = ci->connect_fd;
        pthread_mutex_lock(&s->conns_mu);
        s->n_open++;
        wait_push(s, c);
        if (conns_crowded(s))
            pthread_cond_signal(&s->conns_cv);
        pthread_mutex_unlock(&s->conns_mu);
        return;
    }
    struct conn_rec *c = *socket_context;
    *socket_context = NULL;
    if (!c)
        return;
    pthread_mutex_lock(&s->conns_mu);
    wait_remove(s, c);
    if (c->evicted)
        s->n_evicting--;
    s->n_open--;
    pthread_mutex_unlock(&s->conns_mu);
    free(c);
}

static struct conn_rec *conn_rec_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* A request's header is complete: the connection leaves the waiting list. */
static void conn_headers_arrived(struct pl_http_server *s, struct MHD_Connection *conn)
{
    struct conn_rec *c = conn_rec_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&s->conns_mu);
    wait_remove(s, c);
    pthread_mutex_unlock(&s->conns_mu);
}

/* The connection's request is over and it waits for the next one (keep-alive). */
static void conn_request_done(struct pl_http_server *s, struct MHD_Connection *conn)
{
    struct conn_rec *c = conn_rec_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&s->conns_mu);
    wait_push(s, c);
    pthread_mutex_unlock(&s->conns_mu);
}

/* conns_mu held. MHD reads EOF on the socket and closes the connection on its thread. */
static void evict(struct pl_http_server *s, struct conn_rec *c)
{
    wait_remove(s, c);
    c->evicted = true;
    s->n_evicting++;
    shutdown(c->fd, SHUT_RDWR);
}

/*
 * The sweeper: closes connections past the header deadline, and, while the
 * connection limit is nearly reached, those that have waited longest for a
 * header. A connection younger than the grace is never closed for room: a real
 * client sends its header at once, so this spares a new client that connected
 * a moment before its header while the server is busy with real requests.
 */
static void *sweeper_main(void *arg)
{
    struct pl_http_server *s = arg;
    double deadline_s = (double)s->p.timeout_keep_alive_s;
    double grace_s = deadline_s < 1.0 ? deadline_s : 1.0;
    unsigned long n_late = 0, n_crowded = 0;
    pthread_mutex_lock(&s->conns_mu);
    while (!s->sweeper_stop) {
        double now = mono_now();
        struct conn_rec *c;
        while ((c = s->wait_head) != NULL) {
            if (c->since + deadline_s <= now)
                n_late++;
            else if (c->since + grace_s <= now && conns_crowded(s))
                n_crowded++;
            else
                break;
            evict(s, c);
        }
        if (n_late + n_crowded >= 1000) {
            pl_log(PL_LOG_DEBUG, "http: closed %lu connections past the header deadline and %lu "
                                 "to keep the connection limit free",
                   n_late, n_crowded);
            n_late = n_crowded = 0;
        }
        if (!s->wait_head) {
            pthread_cond_wait(&s->conns_cv, &s->conns_mu);
            continue;
        }
        double until = s->wait_head->since + (conns_crowded(s) ? grace_s : deadline_s);
        struct timespec ts;
        ts.tv_sec = (time_t)until;
        ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&s->conns_cv, &s->conns_mu, &ts);
    }
    pthread_mutex_unlock(&s->conns_mu);
    return NULL;
}

/* ---- the handler pool ------------------------------------------------------------------- */

static void run_job(struct pl_http_server *s, struct request_ctx *ctx)
{
    struct pl_http_request req = {
        .method = ctx->method,
        .path = ctx->url,
        .body = ctx->body.data ? ctx->body.data : "",
        .body_len = ctx->body.len,
        .conn = (struct pl_http_conn *)ctx->conn,
    };
    memset(&ctx->job_resp, 0, sizeof(ctx->job_resp));
    ctx->route->fn(ctx->route->user, &req, &ctx->job_resp);
    if (!ctx->job_resp.async && !ctx->job_resp.status)
        pl_http_set_error(&ctx->job_resp, 500, NULL, NULL, "the handler gave no response");
    atomic_store(&ctx->job_done, true);
    /* the connection's thread takes it from here (access_handler, resumed) */
    atomic_fetch_sub(&s->n_suspended, 1);
    MHD_resume_connection(ctx->conn);
}

static void *worker_main(void *arg)
{
    struct pl_http_server *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->jobs_mu);
        while (!s->jobs_head && !s->jobs_closing)
            pthread_cond_wait(&s->jobs_cv, &s->jobs_mu);
        struct request_ctx *ctx = s->jobs_head;
        if (ctx) {
            s->jobs_head = ctx->job_next;
            if (!s->jobs_head)
                s->jobs_tail = NULL;
        }
        pthread_mutex_unlock(&s->jobs_mu);
        if (!ctx)
            return NULL; /* closing and the queue is empty */
        run_job(s, ctx);
    }
}

/* On the connection's thread, body complete: suspends it and queues the handler.
 * False when the pool no longer takes jobs (shutting down). */
static bool queue_job(struct pl_http_server *s, struct MHD_Connection *conn,
                      struct request_ctx *ctx)
{
    pthread_mutex_lock(&s->jobs_mu);
    if (s->jobs_closing) {
        pthread_mutex_unlock(&s->jobs_mu);
        return false;
    }
    ctx->job_queued = true;
    atomic_fetch_add(&s->n_active, 1);
    atomic_fetch_add(&s->n_suspended, 1);
    /* suspended before any worker can see the job, so its resume always follows */
    MHD_suspend_connection(conn);
    ctx->job_next = NULL;
    if (s->jobs_tail)
        s->jobs_tail->job_next = ctx;
    else
        s->jobs_head = ctx;
    s->jobs_tail = ctx;
    pthread_cond_signal(&s->jobs_cv);
    pthread_mutex_unlock(&s->jobs_mu);
    return true;
}

/* ---- request checks made when the headers arrive ------------------------------------------ */

static bool authorized(struct pl_http_server *s, struct MHD_Connection *conn)
{
    const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization");
    size_t n = 0;
    const char *tok = pl_http_bearer_token(h, &n);
    /* compare a copy of exactly the token, whatever its length, in constant time */
    char buf[1024];
    if (!tok || n >= sizeof(buf)) {
        (void)pl_http_secure_equal(s->api_key, s->api_key);
        return false;
    }
    memcpy(buf, tok, n);
    buf[n] = '\0';
    bool ok = pl_http_secure_equal(buf, s->api_key);
    memset(buf, 0, n);
    return ok;
}

/* True if s[0..n) are all NUL bytes and lo <= n <= hi. */
static bool nul_run(const char *s, size_t n, size_t lo, size_t hi)
{
    if (n < lo || n > hi)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i])
            return false;
    return true;
}

#if MHD_VERSION < 0x01000000
/*
 * libmicrohttpd 0.9 hands out the request line and header values as C strings
 * cut at the first NUL, so "Authorization: Bearer KEY\0junk" reads as the key
 * and "GET /v1/models\0x" as /v1/models (1.0 refuses such requests itself).
 * It parses them in place in the connection's read buffer, which lets us see
 * what a NUL would hide:
 *   request line  "METHOD\0 URI\0VERSION": the method is followed by its NUL
 *                 and spaces only; the URI (as the URI log callback saw it)
 *                 runs up to the NUL before VERSION;
 *   header lines  "Key\0 value" then the line end (CR LF or LF, overwritten
 *                 with NULs): between a value's end and the next key there are
 *                 1-2 NULs; after the last value, its line end and the empty
 *                 line's (2-4 NULs), up to the header size MHD reports.
 * Anything else (a NUL inside a value, a folded header line) is refused.
 */
struct header_walk {
    const char *lo, *hi;  /* the request's header block */
    const char *prev_end; /* end of the previous value */
    bool bad;
};

static MHD_RESULT walk_header(void *cls, enum MHD_ValueKind kind, const char *key,
                              size_t key_size, const char *value, size_t value_size)
{
    (void)kind;
    struct header_walk *w = cls;
    uintptr_t k = (uintptr_t)key, v = (uintptr_t)value;
    uintptr_t lo = (uintptr_t)w->lo, hi = (uintptr_t)w->hi;
    if (!key || !value || k < lo || k + key_size >= hi || v <= k + key_size ||
        v + value_size >= hi ||
        (w->prev_end && (k <= (uintptr_t)w->prev_end ||
                         !nul_run(w->prev_end, (size_t)(k - (uintptr_t)w->prev_end), 1, 2)))) {
        w->bad = true;
        return MHD_NO;
    }
    w->prev_end = value + value_size;
    return MHD_YES;
}

static bool hidden_nul(struct MHD_Connection *conn, const struct request_ctx *ctx,
                       const char *method, const char *version)
{
    const union MHD_ConnectionInfo *hi =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (!hi || !ctx->raw_uri)
        return true;
    uintptr_t m = (uintptr_t)method, u = (uintptr_t)ctx->raw_uri, v = (uintptr_t)version;
    uintptr_t end = m + hi->header_size;
    size_t ml = strlen(method);
    if (!(m + ml < u && u + ctx->raw_uri_len < v && v < end))
        return true;
    /* the method: its NUL, then only the spaces before the URI */
    for (const char *p = method + ml + 1; (uintptr_t)p < u; p++)
        if (*p != ' ')
            return true;
    /* the URI: up to the NUL before the version */
    if (u + ctx->raw_uri_len + 1 != v)
        return true;
    struct header_walk w = {.lo = version, .hi = (const char *)end};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND, walk_header, &w);
    if (w.bad)
        return true;
    if (w.prev_end && !nul_run(w.prev_end, (size_t)(end - (uintptr_t)w.prev_end), 2, 4))
        return true;
    return false;
}
#else
static bool hidden_nul(struct MHD_Connection *conn, const struct request_ctx *ctx,
                       const char *method, const char *version)
{
    (void)conn, (void)ctx, (void)method, (void)version;
    return false; /* libmicrohttpd 1.0 refuses NUL bytes in the request line and headers */
}
#endif

/* The URI log callback: the request line has arrived; the request's context starts here. */
static void *uri_logged(void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void)conn;
    struct request_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->srv = cls;
    ctx->raw_uri = uri;
    ctx->raw_uri_len = uri ? strlen(uri) : 0;
    /* the path is percent-decoded in place: %00 would cut it ("/v1/models%00x") */
    for (size_t i = 0; i + 2 < ctx->raw_uri_len && uri[i] != '?'; i++)
        if (uri[i] == '%' && uri[i + 1] == '0' && uri[i + 2] == '0')
            ctx->nul_in_uri = true;
    return ctx;
}

static bool path_is_v1(const char *url)
{
    return !strncmp(url, "/v1/", 4) || !strcmp(url, "/v1");
}

static MHD_RESULT refuse(struct pl_http_server *s, struct MHD_Connection *conn,
                         struct request_ctx *ctx, int status, const char *type, const char *msg,
                         const char *allow)
{
    ctx->responded = true;
    return send_error(s, conn, status, type, NULL, msg, allow);
}

/* Runs a GET route's handler on the connection's thread (no body). */
static MHD_RESULT run_inline(struct pl_http_server *s, struct MHD_Connection *conn,
                             struct request_ctx *ctx)
{
    struct pl_http_request req = {.method = ctx->method,
                                  .path = ctx->url,
                                  .body = "",
                                  .body_len = 0,
                                  .conn = (struct pl_http_conn *)conn};
    struct pl_http_response resp = {0};
    ctx->started = true;
    ctx->route->fn(ctx->route->user, &req, &resp);
    if (!resp.async && !resp.status) {
        free(resp.body);
        return send_error(s, conn, 500, NULL, NULL, "the handler gave no response", NULL);
    }
    return deliver(s, conn, ctx, &resp);
}

/*
 * The first access-handler call: the header is complete, no body byte has been
 * read. Everything that can refuse the request without its body does so here;
 * once a response is queued MHD discards the body (and closes the connection
 * if one was announced).
 */
static MHD_RESULT on_headers(struct pl_http_server *s, struct MHD_Connection *conn,
                             struct request_ctx *ctx, const char *url, const char *method,
                             const char *version)
{
    ctx->headers_checked = true;
    ctx->conn = conn;
    ctx->method = method;
    ctx->url = url;
    conn_headers_arrived(s, conn);
    MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->p.timeout_idle_s);

    const union MHD_ConnectionInfo *hs =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (hs && hs->header_size > s->p.max_header_bytes) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request headers over %zu bytes", s->p.max_header_bytes);
        return refuse(s, conn, ctx, 431, "RequestHeaderFieldsTooLarge", msg, NULL);
    }
    if (ctx->nul_in_uri || hidden_nul(conn, ctx, method, version))
        return refuse(s, conn, ctx, 400, NULL, "a NUL byte in the request line or a header",
                      NULL);
    /* MHD decodes chunked bodies only. A length given both ways is refused: which one
     * counts is where request smuggling between a proxy and a server starts. */
    const char *te = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Transfer-Encoding");
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
    if (te && strcasecmp(te, "chunked"))
        return refuse(s, conn, ctx, 501, NULL, "unsupported Transfer-Encoding", NULL);
    if (te && cl)
        return refuse(s, conn, ctx, 400, NULL,
                      "both Content-Length and Transfer-Encoding: send one of them", NULL);
    /* a response queued now closes the connection after it (MHD will not read a request
     * past an early response): cheap answers without a body wait for the final call */
    bool has_body = te || (cl && strspn(cl, "0") != strlen(cl));
    if (!strcmp(method, "OPTIONS")) {
        ctx->preflight = true;
        if (!has_body)
            return MHD_YES;
        ctx->responded = true;
        return preflight(s, conn);
    }
    if (atomic_load(&s->draining))
        return refuse(s, conn, ctx, 503, NULL, "the server is shutting down", NULL);

    const struct route *match = NULL;
    bool path_known = false, path_auth = false;
    char allow[128] = "";
    for (int i = 0; i < s->n_routes; i++) {
        const struct route *r = &s->routes[i];
        if (!path_matches(r->path, url))
            continue;
        path_known = true;
        path_auth |= r->auth;
        if (!match &&
            (!strcmp(r->method, method) || (!strcmp(method, "HEAD") && !strcmp(r->method, "GET")))) {
            match = r;
            continue;
        }
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "", r->method);
    }
    /* the key first: without it nothing under /v1/ (not even which routes exist) shows */
    if (s->api_key && (path_is_v1(url) || path_auth) && !authorized(s, conn))
        return refuse(s, conn, ctx, 401, "AuthenticationError",
                      "Unauthorized: a valid 'Authorization: Bearer <api key>' header is "
                      "required",
                      NULL);
    if (!match && s->fallback.fn)
        match = &s->fallback; /* a caller that routes itself (the worker's local API) */
    if (!match) {
        if (path_known)
            return refuse(s, conn, ctx, 405, NULL, "Method Not Allowed", allow);
        return refuse(s, conn, ctx, 404, NULL, "Not Found", NULL);
    }
    ctx->route = match;
    ctx->inline_route = match == &s->fallback
                            ? !strcmp(method, "GET") || !strcmp(method, "HEAD")
                            : !strcmp(match->method, "GET");

    /* GET routes take no body and are cheap: they run on this thread. One that comes
     * with a body is answered now, so the body is never read (MHD then closes the
     * connection: a response queued before the body means no keep-alive). */
    if (ctx->inline_route) {
        if (has_body) {
            ctx->responded = true;
            return run_inline(s, conn, ctx);
        }
        return MHD_YES;
    }

    /* A body announced too large is read and dropped, then refused (413), so the
     * client, still sending, can read the answer: closing on unread data resets
     * the connection. Far beyond the limit, refuse at once and close. */
    if (cl) {
        char *e;
        errno = 0;
        unsigned long long v = strtoull(cl, &e, 10);
        if (errno || e == cl || v > s->p.max_body_bytes) {
            ctx->too_large = true;
            if (errno || e == cl || v / 2 > s->p.max_body_bytes + (1u << 20))
                return refuse(s, conn, ctx, 413, NULL, "request body too large", NULL);
        }
    }
    return MHD_YES;
}

static MHD_RESULT access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    struct pl_http_server *s = cls;
    struct request_ctx *ctx = *req_cls;
    if (!ctx)
        return MHD_NO; /* out of memory in the URI log callback */
    if (!ctx->headers_checked)
        return on_headers(s, conn, ctx, url, method, version);
    if (ctx->async) {
        /* resumed: a deferred reply has news */
        struct pl_http_async *a = ctx->async;
        if (a->is_stream)
            return MHD_YES;
        for (;;) {
            async_arm(a);
            struct pl_http_response r = {0};
            if (a->ops->result(a->user, &r))
                return send_buffer(s, conn, r.status, r.content_type, r.body, r.body_len, NULL);
            if (async_suspend_unless_woken(a))
                return MHD_YES;
        }
    }
    if (ctx->responded) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        ctx->body_seen += n;
        if (!ctx->too_large && ctx->body.len + n <= s->p.max_body_bytes) {
            pl_sbuf_append(&ctx->body, upload_data, n);
            return MHD_YES;
        }
        /* over the limit: dropped (the 413 comes at the end), but only so far; a chunked
         * body has no announced end, and one far past the limit is cut at once */
        ctx->too_large = true;
        return ctx->body_seen / 2 > s->p.max_body_bytes + (1u << 20) ? MHD_NO : MHD_YES;
    }
    if (ctx->job_queued) {
        /* resumed by the worker that ran the handler */
        if (!atomic_load(&ctx->job_done) || ctx->job_delivered)
            return MHD_YES;
        ctx->job_delivered = true;
        atomic_fetch_sub(&s->n_active, 1);
        return deliver(s, conn, ctx, &ctx->job_resp);
    }
    if (ctx->started)
        return MHD_YES;
    ctx->started = true;
    if (ctx->preflight)
        return preflight(s, conn);
    if (ctx->too_large)
        return send_error(s, conn, 413, NULL, NULL, "request body too large", NULL);
    if (ctx->body.failed)
        return send_error(s, conn, 503, NULL, NULL, "out of memory reading the request", NULL);
    if (ctx->inline_route)
        return run_inline(s, conn, ctx);
    if (!queue_job(s, conn, ctx))
        return send_error(s, conn, 503, NULL, NULL, "the server is shutting down", NULL);
    return MHD_YES;
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct pl_http_server *s = cls;
    struct request_ctx *ctx = *req_cls;
    *req_cls = NULL;
    if (!ctx)
        return;
    if (ctx->job_queued && !ctx->job_delivered) {
        /* the client went away while its handler ran: the connection closed on resuming,
         * before the answer could be delivered. (A queued job keeps its connection
         * suspended, so it is done by now.) */
        struct pl_http_response *r = &ctx->job_resp;
        if (r->async) {
            struct pl_http_async *a = r->async;
            pthread_mutex_lock(&a->mu);
            a->closed = true;
            pthread_mutex_unlock(&a->mu);
            if (a->ops->closed)
                a->ops->closed(a->user, false); /* the producer stops and releases its side */
            async_unref(a);
        }
        free(r->body);
        atomic_fetch_sub(&s->n_active, 1);
    }
    if (ctx->async) {
        struct pl_http_async *a = ctx->async;
        pthread_mutex_lock(&a->mu);
        a->closed = true;
        if (a->suspended) {
            /* cannot happen for a completed request, but never leave one behind */
            a->suspended = false;
            atomic_fetch_sub(&s->n_suspended, 1);
        }
        pthread_mutex_unlock(&a->mu);
        if (a->ops->closed)
            a->ops->closed(a->user, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK);
        atomic_fetch_sub(&s->n_active, 1);
        async_unref(a);
    }
    pl_sbuf_fini(&ctx->body);
    free(ctx);
    /* the connection waits for its next request: back to the keep-alive timeout and the
     * header deadline (a connection that is closing is left alone) */
    if (s->daemon && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK) {
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->p.timeout_keep_alive_s);
        conn_request_done(s, conn);
    }
}

static void panic_handler(void *cls, const char *file, unsigned int line, const char *reason)
{
    pl_log(PL_LOG_ERROR, "libmicrohttpd: %s:%u: %s", file ? file : "?", line,
           reason ? reason : "");
    abort(); /* MHD's own invariant broke: continuing would corrupt its state */
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    pl_log(PL_LOG_DEBUG, "libmicrohttpd: %s", msg);
}

/* ---- the server --------------------------------------------------------------------- */

pl_status pl_http_server_new(const struct pl_http_params *p, struct pl_http_server **out,
                             struct pl_err *err)
{
    *out = NULL;
    struct pl_http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    pl_http_params_default(&s->p);
    if (p)
        s->p = *p;
    s->listen_fd = -1;
    s->api_key = s->p.api_key && *s->p.api_key ? strdup(s->p.api_key) : NULL;
    s->allowed_origins = strdup(s->p.allowed_origins ? s->p.allowed_origins : "*");
    s->allowed_methods = strdup(s->p.allowed_methods ? s->p.allowed_methods : "*");
    s->allowed_headers = strdup(s->p.allowed_headers ? s->p.allowed_headers : "*");
    if (!s->allowed_origins || !s->allowed_methods || !s->allowed_headers ||
        (s->p.api_key && *s->p.api_key && !s->api_key)) {
        pl_http_server_free(s);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    if (!s->p.n_threads)
        s->p.n_threads = 1;
    if (!s->p.n_handler_threads)
        s->p.n_handler_threads = 1;
    if (!s->p.timeout_keep_alive_s)
        s->p.timeout_keep_alive_s = 1;
    if (!s->p.max_connections)
        s->p.max_connections = 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* the sweeper's deadlines */
    pthread_mutex_init(&s->conns_mu, NULL);
    pthread_cond_init(&s->conns_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&s->jobs_mu, NULL);
    pthread_cond_init(&s->jobs_cv, NULL);
    s->sync_ready = true;
    *out = s;
    return PL_STATUS_OK;
}

pl_status pl_http_server_route(struct pl_http_server *s, const char *method, const char *path,
                               bool auth, pl_http_handler_fn fn, void *user, struct pl_err *err)
{
    struct route *r = realloc(s->routes, sizeof(*r) * (size_t)(s->n_routes + 1));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    s->routes = r;
    r = &s->routes[s->n_routes];
    r->method = strdup(method);
    r->path = strdup(path);
    if (!r->method || !r->path) {
        free(r->method);
        free(r->path);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    r->auth = auth;
    r->fn = fn;
    r->user = user;
    s->n_routes++;
    return PL_STATUS_OK;
}

void pl_http_server_fallback(struct pl_http_server *s, pl_http_handler_fn fn, void *user)
{
    s->fallback.fn = fn;
    s->fallback.user = user;
}

static pl_status open_listener(struct pl_http_server *s, struct pl_err *err)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", s->p.port);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    const char *host = s->p.host && *s->p.host ? s->p.host : NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "--host %s: %s", host ? host : "",
                          gai_strerror(rc));
    int fd = -1;
    int saved = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, s->p.backlog) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return pl_err_set(err, PL_STATUS_IO, "cannot listen on %s:%d: %s", host ? host : "*",
                          s->p.port, strerror(saved));
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                           : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->listen_fd = fd;
    return PL_STATUS_OK;
}

pl_status pl_http_server_listen(struct pl_http_server *s, struct pl_err *err)
{
    if (s->listen_fd >= 0 || s->daemon)
        return PL_STATUS_OK;
    return open_listener(s, err);
}

/* The connection limit in force: --max-connections, or less when the process may not
 * open that many descriptors (past it accept() fails and MHD stops accepting, which
 * the sweeper could not relieve). */
static unsigned effective_max_connections(const struct pl_http_server *s)
{
    unsigned max = s->p.max_connections;
    struct rlimit rl;
    /* descriptors kept for everything else: model files, the engine, logs, pipes */
    const rlim_t reserve = 128;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)max + reserve) {
        unsigned fit = rl.rlim_cur > 2 * reserve ? (unsigned)(rl.rlim_cur - reserve)
                                                 : (unsigned)(rl.rlim_cur / 2);
        if (fit < 1)
            fit = 1;
        pl_log(PL_LOG_WARN, "http: --max-connections %u lowered to %u: the open-file limit is "
                            "%llu (raise it with ulimit -n)",
               max, fit, (unsigned long long)rl.rlim_cur);
        max = fit;
    }
    return max;
}

static void stop_threads(struct pl_http_server *s)
{
    if (!s->sync_ready)
        return;
    /* the pool: no new jobs; the queue is finished, so every suspended job resumes */
    pthread_mutex_lock(&s->jobs_mu);
    s->jobs_closing = true;
    pthread_cond_broadcast(&s->jobs_cv);
    pthread_mutex_unlock(&s->jobs_mu);
    for (unsigned i = 0; i < s->n_workers; i++)
        pthread_join(s->workers[i], NULL);
    s->n_workers = 0;
    free(s->workers);
    s->workers = NULL;
}

static void stop_sweeper(struct pl_http_server *s)
{
    if (!s->sweeper_running)
        return;
    pthread_mutex_lock(&s->conns_mu);
    s->sweeper_stop = true;
    pthread_cond_signal(&s->conns_cv);
    pthread_mutex_unlock(&s->conns_mu);
    pthread_join(s->sweeper, NULL);
    s->sweeper_running = false;
}

pl_status pl_http_server_start(struct pl_http_server *s, struct pl_err *err)
{
    pl_status st = pl_http_server_listen(s, err);
    if (st != PL_STATUS_OK)
        return st;
    s->max_open = effective_max_connections(s);
    s->room = s->max_open / 16;
    s->room = s->room < 1 ? 1 : s->room > 64 ? 64 : s->room;
    if (s->room >= s->max_open)
        s->room = s->max_open > 1 ? s->max_open - 1 : 0;
    s->workers = calloc(s->p.n_handler_threads, sizeof(pthread_t));
    if (!s->workers)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    for (unsigned i = 0; i < s->p.n_handler_threads; i++) {
        if (pthread_create(&s->workers[i], NULL, worker_main, s) != 0) {
            stop_threads(s);
            return pl_err_set(err, PL_STATUS_IO, "cannot start the HTTP handler threads");
        }
        s->n_workers++;
    }
    if (pthread_create(&s->sweeper, NULL, sweeper_main, s) != 0) {
        stop_threads(s);
        return pl_err_set(err, PL_STATUS_IO, "cannot start the HTTP connection sweeper");
    }
    s->sweeper_running = true;
    MHD_set_panic_func(panic_handler, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    /* the memory pool holds the request line and headers plus MHD's write buffer; the
     * exact header limit is checked when the headers arrive (431), this only bounds
     * what MHD buffers before that */
    size_t pool = s->p.max_header_bytes + 32 * 1024;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_URI_LOG_CALLBACK, uri_logged, s, MHD_OPTION_NOTIFY_CONNECTION,
        notify_connection, s, MHD_OPTION_NOTIFY_COMPLETED, request_completed, s,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->p.timeout_keep_alive_s,
        MHD_OPTION_CONNECTION_LIMIT, s->max_open, MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->p.n_threads, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_END);
    if (!s->daemon) {
        stop_threads(s);
        stop_sweeper(s);
        close(s->listen_fd);
        s->listen_fd = -1;
        return pl_err_set(err, PL_STATUS_IO, "cannot start the HTTP daemon (libmicrohttpd)");
    }
    s->listen_fd = -1; /* the daemon owns it now (closes it, or hands it back on quiesce) */
    return PL_STATUS_OK;
}

int pl_http_server_port(const struct pl_http_server *s)
{
    return s->port;
}

void pl_http_server_drain(struct pl_http_server *s)
{
    if (atomic_exchange(&s->draining, true))
        return;
    if (s->daemon) {
        /* The daemon's threads may still hold the socket (in their epoll set) until
         * MHD_stop_daemon, so it is not closed here (its number could be reused under
         * them): shutdown takes it out of the listening state, so new connections are
         * refused at once, and pl_http_server_free closes it after the stop. */
        MHD_socket fd = MHD_quiesce_daemon(s->daemon);
        if (fd != MHD_INVALID_SOCKET) {
            shutdown(fd, SHUT_RDWR);
            s->listen_fd = fd;
        }
    } else if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }
}

int pl_http_server_num_active(struct pl_http_server *s)
{
    return atomic_load(&s->n_active);
}

void pl_http_server_free(struct pl_http_server *s)
{
    if (!s)
        return;
    stop_threads(s); /* handlers still queued run now; their connections resume */
    if (s->daemon) {
        /* MHD must not stop with suspended connections: give wakes a moment */
        for (int i = 0; i < 500 && atomic_load(&s->n_suspended) > 0; i++)
            usleep(10 * 1000);
        if (atomic_load(&s->n_suspended) > 0) {
            /* stopping would break MHD's invariants and freeing would leave its threads
             * with freed memory: leave both to the process exit */
            pl_log(PL_LOG_WARN, "http: %d connections still suspended at shutdown; leaving "
                                "the daemon running",
                   atomic_load(&s->n_suspended));
            return;
        }
        MHD_stop_daemon(s->daemon); /* closes every connection (their notifications first) */
        s->daemon = NULL;
    }
    stop_sweeper(s);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    for (int i = 0; i < s->n_routes; i++) {
        free(s->routes[i].method);
        free(s->routes[i].path);
    }
    free(s->routes);
    free(s->api_key);
    free(s->allowed_origins);
    free(s->allowed_methods);
    free(s->allowed_headers);
    if (s->sync_ready) {
        pthread_mutex_destroy(&s->conns_mu);
        pthread_cond_destroy(&s->conns_cv);
        pthread_mutex_destroy(&s->jobs_mu);
        pthread_cond_destroy(&s->jobs_cv);
    }
    free(s);
}
