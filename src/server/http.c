/*
 * http.c -- the HTTP transport over libmicrohttpd (see http.h for the contract).
 *
 * Threads: MHD runs n_threads event-loop threads (epoll), each owning its
 * connections; handlers run on them. Any other thread only ever calls
 * pl_http_async_wake.
 *
 * An asynchronous reply's states (a->mu guards them):
 *
 *   RUNNING --no news--> SUSPENDED --wake--> RUNNING (MHD resumes, asks again)
 *      |  wake while RUNNING sets wake_pending, so the next "no news" check
 *      |  sees it and does not suspend (no lost wake-ups)
 *      +--> closed (request-completed callback): ops.closed, then no resumes
 *
 * Per request, MHD keeps a struct request_ctx in *req_cls from the first call
 * of the access handler to the request-completed callback. An async reply is
 * referenced by its request_ctx and, for streams, by the MHD response's
 * reader; the last reference frees it.
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
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
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

struct pl_http_server {
    struct pl_http_params p;
    char *api_key;
    char *allowed_origins, *allowed_methods, *allowed_headers;
    struct route *routes;
    int n_routes;
    struct route fallback;   /* fn NULL: none (404/405) */
    struct MHD_Daemon *daemon;
    int listen_fd;
    int port;
    atomic_bool draining;
    atomic_int n_active;     /* async replies not yet closed */
    atomic_int n_suspended;  /* connections suspended right now */
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
    bool too_large;
    bool responded;                 /* a response was queued before the body was read */
    bool started;                   /* the handler ran */
    struct pl_http_async *async;
    struct pl_http_server *srv;
};

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

static MHD_RESULT access_handler(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **req_cls)
{
    struct pl_http_server *s = cls;
    struct request_ctx *ctx = *req_cls;
    if (!ctx) {
        ctx = calloc(1, sizeof(*ctx));
        if (!ctx)
            return MHD_NO;
        ctx->srv = s;
        *req_cls = ctx;
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->p.timeout_idle_s);
        /* A body announced too large is read and dropped, then refused (413), so the
         * client, still sending, can read the answer: closing on unread data resets
         * the connection. Far beyond the limit, refuse at once and close. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(cl, &end, 10);
            if (errno || end == cl || v > s->p.max_body_bytes) {
                ctx->too_large = true;
                if (errno || end == cl || v / 2 > s->p.max_body_bytes + (1u << 20)) {
                    ctx->responded = true;
                    return send_error(s, conn, 413, NULL, NULL, "request body too large", NULL);
                }
            }
        }
        return MHD_YES;
    }
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
        if (!ctx->too_large && ctx->body.len + *upload_data_size <= s->p.max_body_bytes)
            pl_sbuf_append(&ctx->body, upload_data, *upload_data_size);
        else
            ctx->too_large = true;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (ctx->started)
        return MHD_YES;
    ctx->started = true;
    if (ctx->too_large)
        return send_error(s, conn, 413, NULL, NULL, "request body too large", NULL);
    if (ctx->body.failed)
        return send_error(s, conn, 503, NULL, NULL, "out of memory reading the request", NULL);
    if (!strcmp(method, "OPTIONS"))
        return preflight(s, conn);
    if (atomic_load(&s->draining))
        return send_error(s, conn, 503, NULL, NULL, "the server is shutting down", NULL);

    const struct route *match = NULL;
    char allow[128] = "";
    for (int i = 0; i < s->n_routes; i++) {
        const struct route *r = &s->routes[i];
        if (strcmp(r->path, url))
            continue;
        if (!strcmp(r->method, method) || (!strcmp(method, "HEAD") && !strcmp(r->method, "GET"))) {
            match = r;
            break;
        }
        size_t used = strlen(allow);
        snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "", r->method);
    }
    if (!match && s->fallback.fn)
        match = &s->fallback;
    if (!match) {
        if (allow[0])
            return send_error(s, conn, 405, NULL, NULL, "Method Not Allowed", allow);
        return send_error(s, conn, 404, NULL, NULL, "Not Found", NULL);
    }
    if (match->auth && s->api_key && !authorized(s, conn))
        return send_error(s, conn, 401, "AuthenticationError", NULL,
                          "Unauthorized: a valid 'Authorization: Bearer <api key>' header is "
                          "required",
                          NULL);

    struct pl_http_request req = {
        .method = method,
        .path = url,
        .body = ctx->body.data ? ctx->body.data : "",
        .body_len = ctx->body.len,
        .conn = (struct pl_http_conn *)conn,
    };
    struct pl_http_response resp = {0};
    match->fn(match->user, &req, &resp);
    if (!resp.async && !resp.status) {
        free(resp.body);
        return send_error(s, conn, 500, NULL, NULL, "the handler gave no response", NULL);
    }
    return deliver(s, conn, ctx, &resp);
}

static void request_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                              enum MHD_RequestTerminationCode toe)
{
    struct pl_http_server *s = cls;
    struct request_ctx *ctx = *req_cls;
    *req_cls = NULL;
    if (!ctx)
        return;
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
    /* the connection waits for its next request: back to the keep-alive timeout (a
     * connection that is closing is left alone) */
    if (s->daemon && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        MHD_set_connection_option(conn, MHD_CONNECTION_OPTION_TIMEOUT, s->p.timeout_keep_alive_s);
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

pl_status pl_http_server_start(struct pl_http_server *s, struct pl_err *err)
{
    pl_status st = open_listener(s, err);
    if (st != PL_STATUS_OK)
        return st;
    MHD_set_panic_func(panic_handler, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ERROR_LOG;
    /* the memory pool holds the request line and headers plus MHD's write buffer */
    size_t pool = s->p.max_header_bytes + 32 * 1024;
    s->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, access_handler, s, MHD_OPTION_LISTEN_SOCKET, s->listen_fd,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, s, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)s->p.timeout_keep_alive_s, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)s->p.max_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)s->p.n_threads, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_log, NULL, MHD_OPTION_END);
    if (!s->daemon) {
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
        MHD_socket fd = MHD_quiesce_daemon(s->daemon);
        if (fd != MHD_INVALID_SOCKET)
            close(fd);
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
    if (s->daemon) {
        /* MHD must not stop with suspended connections: give wakes a moment */
        for (int i = 0; i < 500 && atomic_load(&s->n_suspended) > 0; i++)
            usleep(10 * 1000);
        if (atomic_load(&s->n_suspended) > 0)
            pl_log(PL_LOG_WARN, "http: %d connections still suspended at shutdown; leaving "
                                "the daemon running",
                   atomic_load(&s->n_suspended));
        else
            MHD_stop_daemon(s->daemon);
        s->daemon = NULL;
    }
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
    free(s);
}
