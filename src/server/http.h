/*
 * http.h -- the HTTP transport of the server (libmicrohttpd underneath).
 *
 * Owns: the listening socket and MHD daemon (a small pool of event-loop
 * threads, epoll; no thread per connection), routing (exact paths, or every path under a prefix; 404 for
 * unknown paths, 405 with Allow for a known path and another method), request
 * bodies (bounded: 413 past max_body_bytes; Content-Length or chunked, other
 * transfer codings get 501, both lengths 400), header bounds (431 past
 * max_header_bytes), timeouts, keep-alive, CORS, Bearer authentication
 * (constant-time compare), OpenAI-shaped error bodies, asynchronous replies (a
 * handler answers later from another thread) and streams (chunked bodies such
 * as Server-Sent Events, produced as data arrives), and draining for a
 * graceful shutdown.
 *
 * What a client can make the server hold (see docs/server.md, "Protection
 * and limits"):
 *   - Everything that decides a request's fate without its body (header size,
 *     malformed line, transfer coding, route, method, API key, announced
 *     length) is checked when the headers arrive, before any body byte is
 *     read: a client without the key never makes the server buffer a body.
 *     Under /v1/ (and on routes registered with auth) a missing or wrong key
 *     is a 401 whatever the route, so unauthenticated probing learns nothing.
 *   - The header deadline: a connection must deliver a request's whole header
 *     within timeout_keep_alive_s of being accepted or of finishing its
 *     previous request (idle keep-alive time counts), however slowly bytes
 *     trickle in; a sweeper thread closes it otherwise.
 *   - The connection limit cannot be held by connections that have not sent
 *     a complete header: when fewer than 1/16 of max_connections (1..64) are
 *     free, the longest-waiting such connections (waiting 1 s at least) are
 *     closed to make room. Connections with a request in progress are never
 *     closed for this.
 *   - Handlers of requests with a body (parsing, chat templates,
 *     tokenization) run on a pool of n_handler_threads workers while their
 *     connection is suspended, so a large prompt never stalls the event loop
 *     (/health, streams, other connections). GET routes run inline.
 *
 * Asynchronous replies: a handler that cannot answer at once creates a
 * struct pl_http_async with its ops and returns it. The connection is then
 * suspended (no thread waits on it). Producers on any thread call
 * pl_http_async_wake when there is news; the transport then resumes the
 * connection on its own thread and asks the ops for the result (deferred
 * reply) or more bytes (stream). ops.closed is called exactly once, on the
 * transport's thread, when the connection is done with the reply: normally
 * or because the client went away (completed_ok false). After closed returns
 * the producer must not call wake any more (it releases what calls wake
 * inside closed); the transport frees the async object itself.
 *
 * Invariant: every request gets a response with an OpenAI error object
 * unless it succeeds; nothing sent by a client makes the server exit or 500.
 */
#ifndef PL_SERVER_HTTP_H
#define PL_SERVER_HTTP_H

#include "pagellm.h"
#include "server/sbuf.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>

struct pl_http_server;
struct pl_http_async;
struct pl_http_conn; /* an MHD connection, opaque */

/* A request as a handler sees it; valid only during the handler call. Handlers of
 * GET routes run on an event-loop thread, the others on the handler pool. */
struct pl_http_request {
    const char *method;
    const char *path;     /* without the query string */
    const char *body;     /* [body_len] + NUL ("" when none) */
    size_t body_len;
    struct pl_http_conn *conn;
};

/* A header's value (case-insensitive name), or NULL. Handlers on the handler pool may
 * call it too: their connection is suspended, so nothing else touches its headers. */
const char *pl_http_header(const struct pl_http_request *req, const char *name);

/* What a handler answers: either a complete body or an asynchronous reply. */
struct pl_http_response {
    int status;
    const char *content_type; /* static string */
    char *body;               /* malloc'ed; the transport frees it */
    size_t body_len;
    struct pl_http_async *async; /* non-NULL: deferred or streamed reply (see above) */
    const char *location;     /* static string or NULL: a redirect's Location (no body sent) */
};

struct pl_http_async_ops {
    /* Deferred replies: fills *resp and returns true once the answer is ready. */
    bool (*result)(void *user, struct pl_http_response *resp);
    /* Streams: appends what is ready to *out; returns false once the stream has ended. */
    bool (*produce)(void *user, struct pl_sbuf *out);
    /* See the header comment. May be NULL. */
    void (*closed)(void *user, bool completed_ok);
};

/* is_stream: headers (200, content_type) go out at once and produce() fills the body;
 * otherwise result() gives the whole response later. NULL on out-of-memory. */
struct pl_http_async *pl_http_async_new(const struct pl_http_async_ops *ops, void *user,
                                        bool is_stream, const char *content_type);
/* Frees an async reply that was never returned to the transport. NULL is a no-op. */
void pl_http_async_discard(struct pl_http_async *a);
/* Any thread: there is news for this reply. */
void pl_http_async_wake(struct pl_http_async *a);

typedef void (*pl_http_handler_fn)(void *user, const struct pl_http_request *req,
                                   struct pl_http_response *resp);

struct pl_http_params {
    const char *host;           /* "127.0.0.1" */
    int port;                   /* 8000; 0: an ephemeral port (see pl_http_server_port) */
    const char *api_key;        /* NULL: no authentication */
    const char *allowed_origins; /* CORS: "*" or a comma-separated list ("*") */
    bool allow_credentials;     /* CORS: Access-Control-Allow-Credentials (false) */
    const char *allowed_methods; /* CORS preflight: "*" or a list ("*") */
    const char *allowed_headers; /* CORS preflight: "*" or a list ("*") */
    size_t max_body_bytes;      /* 413 beyond (32 MiB) */
    size_t max_header_bytes;    /* request line + headers (64 KiB): 431 beyond */
    unsigned timeout_keep_alive_s; /* the header deadline: idle keep-alive time plus the
                                   time to receive a request's whole header (5) */
    unsigned timeout_idle_s;    /* a request's body or response stalling (60) */
    unsigned max_connections;   /* open connections (10000) */
    unsigned n_threads;         /* event-loop threads (2) */
    unsigned n_handler_threads; /* workers running the handlers of requests with a body (4) */
    int backlog;                /* listen backlog (1024) */
};

void pl_http_params_default(struct pl_http_params *p);

pl_status pl_http_server_new(const struct pl_http_params *p, struct pl_http_server **out,
                             struct pl_err *err);

/* Registers a route; call before pl_http_server_start. auth: needs the API key (every
 * path under /v1/ needs it anyway, registered or not: 401 comes before 404 / 405).
 * A path ending in a slash and an asterisk matches every longer path under it (the
 * handler reads req->path, which MHD has percent-decoded): /v1/models/{id}.
 * GET routes take no body and run on an event-loop thread; keep them cheap. */
pl_status pl_http_server_route(struct pl_http_server *s, const char *method, const char *path,
                               bool auth, pl_http_handler_fn fn, void *user, struct pl_err *err);

/*
 * Requests that match no route go to fn (no API key check) instead of being
 * answered 404/405: for a caller that routes itself (the worker's local API,
 * whose paths carry ids). Call before pl_http_server_start.
 */
void pl_http_server_fallback(struct pl_http_server *s, pl_http_handler_fn fn, void *user);

/* Creates the listening socket (bind + listen) without serving yet: connections
 * wait in the backlog until pl_http_server_start. Lets a program report an
 * address in use before slow start-up work (loading a model). Optional. */
pl_status pl_http_server_listen(struct pl_http_server *s, struct pl_err *err);

/* Starts serving (listens first if pl_http_server_listen was not called). */
pl_status pl_http_server_start(struct pl_http_server *s, struct pl_err *err);

/* The bound port (after listen or start). */
int pl_http_server_port(const struct pl_http_server *s);

/* Stops accepting connections; requests on open connections get 503 from now on. */
void pl_http_server_drain(struct pl_http_server *s);

/* Asynchronous replies still open (in-flight generation requests). */
int pl_http_server_num_active(struct pl_http_server *s);

/* Stops the daemon (closes every connection) and frees. NULL is a no-op.
 * Call after every asynchronous reply has ended (num_active is 0), or they are cut. */
void pl_http_server_free(struct pl_http_server *s);

/*
 * An OpenAI error body: {"error": {"message", "type", "param", "code"}} with
 * code the HTTP status, as vLLM sends it. type NULL: derived from status.
 * param may be NULL (JSON null). Returns a malloc'ed string (NULL on OOM).
 */
char *pl_http_error_json(int status, const char *type, const char *param, const char *message,
                         size_t *len);

/* A JSON string of s[0..n), invalid UTF-8 replaced by U+FFFD (never NULL but on OOM). */
struct json_t;
struct json_t *pl_http_json_string_lossy(const char *s, size_t n);

/* Fills resp with an error (see pl_http_error_json). */
void pl_http_set_error(struct pl_http_response *resp, int status, const char *type,
                       const char *param, const char *message);

/* Fills resp with a JSON body (takes the body). */
void pl_http_set_json(struct pl_http_response *resp, int status, char *body, size_t len);

/* Constant-time equality of two strings (time depends only on the lengths). */
bool pl_http_secure_equal(const char *a, const char *b);

/*
 * Extracts the token of an "Authorization: Bearer <token>" value: the scheme
 * is case-insensitive, spaces around the token are skipped. NULL when the
 * value is not a Bearer credential. Points into value.
 */
const char *pl_http_bearer_token(const char *value, size_t *token_len);

#endif
