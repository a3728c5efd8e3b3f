/*
 * test_http_server.c -- the real transport and routes on loopback, with the fake engine
 * behind the async engine, talked to over raw sockets.
 *
 * Checks against the HTTP/1.1 and SSE wire formats and the OpenAI shapes:
 * statuses and error objects (404, 405 + Allow, 413, 401, 400), CORS preflight,
 * non-streamed and streamed completions / chat (role chunk first, [DONE] last,
 * usage chunk with empty choices), text equal to what the fake engine is known
 * to produce, a client disconnecting mid-stream aborting its request (KV usage
 * back to 0 in /metrics, an "abort" in request_success_total), /health turning
 * 503 while the engine loop is stalled, a slow partial request timing out while
 * others are served, 200 concurrent streams, idle keep-alive connections, and
 * draining; and hostile clients: requests refused from their headers alone
 * (401 before 404/405 under /v1/, no body read), NUL bytes that C strings would
 * cut at, transfer codings (chunked bodies bounded, others 501), 431 at the
 * exact header limit, a trickled header cut at the header deadline, the
 * connection limit not held by connections that never finish a header, and
 * handlers kept off the event loop.
 */
#include "fake_engine.h"
#include "http_client.h"
#include "model/tiny_tokenizer.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "test.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

static struct pl_tokenizer *tok;

struct fixture {
    struct fake_engine fake;
    struct pl_async_engine *ae;
    struct pl_metrics *metrics;
    struct pl_openai *oai;
    struct pl_http_server *http;
    int port;
};

struct options {
    int vocab_size; /* the model's (0: the tokenizer's), > the tokenizer's: a padded vocab */
    const char *api_key;
    size_t max_body;
    unsigned keep_alive_s;
    unsigned idle_s;
    unsigned step_delay_us;
    double stall_s;
    int max_pending;
    unsigned max_connections;
    /* an extra POST route registered before the server starts */
    const char *extra_path;
    pl_http_handler_fn extra_fn;
    void *extra_user;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Hang guard of every wait for a condition: the waits poll every 10 ms, and only a hang
 * (or a defect) takes this long; nothing here depends on how fast the machine is. */
#define GUARD_POLLS 6000 /* 60 s */

static struct fixture *start(const struct options *opt)
{
    struct fixture *fx = calloc(1, sizeof(*fx));
    struct pl_err err = {0};
    fx->fake.step_delay_us = opt->step_delay_us;
    fx->metrics = pl_metrics_new("tiny");
    struct pl_async_engine_params ap;
    pl_async_engine_params_default(&ap);
    ap.observe = pl_metrics_observe;
    ap.observe_user = fx->metrics;
    if (opt->stall_s > 0)
        ap.stall_timeout_s = opt->stall_s;
    if (opt->max_pending > 0)
        ap.max_pending = opt->max_pending;
    if (pl_async_engine_new(&fake_engine_ops, &fx->fake, &ap, &fx->ae, &err) != PL_STATUS_OK)
        goto fail;
    const char *names[] = {"tiny"};
    struct pl_openai_params op = {.served_names = names,
                                  .n_served_names = 1,
                                  .model_root = "/models/tiny",
                                  .max_model_len = 100000,
                                  .tok = tok,
                                  .vocab_size = opt->vocab_size,
                                  .ae = fx->ae,
                                  .metrics = fx->metrics};
    if (pl_openai_new(&op, &fx->oai, &err) != PL_STATUS_OK)
        goto fail;
    struct pl_http_params hp;
    pl_http_params_default(&hp);
    hp.port = 0;
    hp.api_key = opt->api_key;
    if (opt->max_body)
        hp.max_body_bytes = opt->max_body;
    if (opt->keep_alive_s)
        hp.timeout_keep_alive_s = opt->keep_alive_s;
    if (opt->max_connections)
        hp.max_connections = opt->max_connections;
    if (opt->idle_s)
        hp.timeout_idle_s = opt->idle_s;
    if (pl_http_server_new(&hp, &fx->http, &err) != PL_STATUS_OK ||
        pl_openai_register(fx->oai, fx->http, &err) != PL_STATUS_OK ||
        (opt->extra_path && pl_http_server_route(fx->http, "POST", opt->extra_path, false,
                                                 opt->extra_fn, opt->extra_user,
                                                 &err) != PL_STATUS_OK) ||
        pl_http_server_start(fx->http, &err) != PL_STATUS_OK)
        goto fail;
    fx->port = pl_http_server_port(fx->http);
    return fx;
fail:
    fprintf(stderr, "fixture: %s\n", err.msg);
    abort();
}

static void stop(struct fixture *fx)
{
    pl_http_server_drain(fx->http);
    pl_async_engine_abort_all(fx->ae);
    for (int i = 0; i < GUARD_POLLS && pl_http_server_num_active(fx->http) > 0; i++)
        sleep_ms(10);
    pl_http_server_free(fx->http);
    pl_async_engine_free(fx->ae);
    pl_openai_free(fx->oai);
    pl_metrics_free(fx->metrics);
    free(fx);
}

static json_t *body_json(const struct http_reply *r)
{
    return json_loadb(r->body, r->body_len, 0, NULL);
}

/* Checks an OpenAI error reply: status, error.code, error.type (NULL: any), error.param. */
static void check_error(const struct http_reply *r, int status, const char *type,
                        const char *param)
{
    CHECKF(r->status == status, "status %d, want %d: %s", r->status, status, r->body);
    json_t *j = body_json(r);
    json_t *e = json_object_get(j, "error");
    CHECKF(json_is_object(e), "no error object: %s", r->body);
    CHECK(json_is_string(json_object_get(e, "message")));
    CHECK(json_integer_value(json_object_get(e, "code")) == status);
    if (type)
        CHECKF(!strcmp(json_string_value(json_object_get(e, "type")), type), "type %s",
               json_string_value(json_object_get(e, "type")));
    json_t *p = json_object_get(e, "param");
    if (param)
        CHECKF(json_is_string(p) && !strcmp(json_string_value(p), param), "param: %s", r->body);
    else
        CHECK(json_is_null(p));
    json_decref(j);
}

/* Parses an SSE body into its data payloads; false if the framing is off. */
static bool sse_events(const char *body, char ***events, int *n)
{
    *events = NULL;
    *n = 0;
    const char *p = body;
    while (*p) {
        const char *end = strstr(p, "\n\n");
        if (!end || strncmp(p, "data: ", 6))
            return false;
        const char *nl = strchr(p, '\n');
        if (nl != end) /* one data line per event */
            return false;
        *events = realloc(*events, sizeof(char *) * (size_t)(*n + 1));
        (*events)[(*n)++] = strndup(p + 6, (size_t)(end - p - 6));
        p = end + 2;
    }
    return true;
}

static void free_events(char **ev, int n)
{
    for (int i = 0; i < n; i++)
        free(ev[i]);
    free(ev);
}

static void test_routes_and_errors(void)
{
    struct options opt = {.max_body = 4096};
    struct fixture *fx = start(&opt);
    struct http_reply r;
    char h[256];

    REQUIRE(http_request(fx->port, "GET", "/v1/models", NULL, NULL, &r));
    CHECK(r.status == 200);
    json_t *j = body_json(&r);
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "list"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "id")), "tiny"));
    CHECK(!strcmp(json_string_value(json_object_get(m, "object")), "model"));
    CHECK(json_integer_value(json_object_get(m, "max_model_len")) == 100000);
    json_decref(j);
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "GET", "/version", NULL, NULL, &r));
    CHECK(r.status == 200 && strstr(r.body, PAGELLM_VERSION));
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "GET", "/nope", NULL, NULL, &r));
    check_error(&r, 404, "NotFoundError", NULL);
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "GET", "/v1/completions", NULL, NULL, &r));
    check_error(&r, 405, NULL, NULL);
    CHECK(http_header(&r, "Allow", h, sizeof(h)) && !strcmp(h, "POST"));
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL, "{\"prompt\": [1,", &r));
    check_error(&r, 400, "BadRequestError", NULL);
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\": [1], \"temperature\": -1}", &r));
    check_error(&r, 400, NULL, "temperature");
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"model\": \"gpt-4\", \"prompt\": [1]}", &r));
    check_error(&r, 404, "NotFoundError", "model");
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "POST", "/v1/chat/completions", NULL,
                         "{\"messages\": [{\"role\":\"user\",\"content\":\"x\"}], \"n\": \"2\"}", &r));
    check_error(&r, 400, NULL, "n");
    http_reply_free(&r);

    /* a body over the limit: announced by Content-Length ... */
    char *big = malloc(8192);
    memset(big, ' ', 8191);
    big[8191] = '\0';
    big[0] = '{';
    big[8190] = '}';
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL, big, &r));
    check_error(&r, 413, NULL, NULL);
    http_reply_free(&r);
    /* ... far beyond the limit: refused before any of it is read */
    int fd0 = http_connect(fx->port);
    REQUIRE(fd0 >= 0);
    const char *huge = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Content-Length: 1000000000000\r\n\r\n{";
    http_send_all(fd0, huge, strlen(huge));
    REQUIRE(http_read_reply(fd0, &r));
    close(fd0);
    check_error(&r, 413, NULL, NULL);
    http_reply_free(&r);
    /* ... or sent chunked: read and dropped past the limit, then refused (413) */
    int fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n";
    http_send_all(fd, head, strlen(head));
    for (int i = 0; i < 4; i++) {
        char chunk[2100];
        snprintf(chunk, sizeof(chunk), "800\r\n");
        size_t l = strlen(chunk);
        memset(chunk + l, ' ', 0x800);
        memcpy(chunk + l + 0x800, "\r\n", 2);
        http_send_all(fd, chunk, l + 0x800 + 2);
    }
    http_send_all(fd, "0\r\n\r\n", 5);
    REQUIRE(http_read_reply(fd, &r));
    close(fd);
    check_error(&r, 413, NULL, NULL);
    http_reply_free(&r);
    /* ... and far past the limit, cut at once: a chunked body has no announced end */
    fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    http_send_all(fd, head, strlen(head));
    {
        size_t cap = 64 * 1024 + 16, sent = 0, total = (size_t)64 << 20;
        char *chunk = malloc(cap);
        int l = snprintf(chunk, cap, "%x\r\n", 64 * 1024);
        memset(chunk + l, ' ', 64 * 1024);
        memcpy(chunk + l + 64 * 1024, "\r\n", 2);
        while (sent < total && http_send_all(fd, chunk, (size_t)l + 64 * 1024 + 2))
            sent += 64 * 1024;
        free(chunk);
        CHECKF(sent < total, "a %zu-byte chunked body was read to its end", sent);
    }
    close(fd);
    /* a chunked body within the limit is served */
    fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    head = "POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           "Transfer-Encoding: chunked\r\n\r\n"
           "5\r\n{\"pro\r\n14\r\nmpt\": \"Hello world\"}\r\n0\r\n\r\n";
    http_send_all(fd, head, strlen(head));
    REQUIRE(http_read_reply(fd, &r));
    close(fd);
    CHECKF(r.status == 200 && strstr(r.body, "\"tokens\""), "%d %s", r.status, r.body);
    http_reply_free(&r);
    /* both lengths: refused */
    fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    head = "POST /tokenize HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n";
    http_send_all(fd, head, strlen(head));
    REQUIRE(http_read_reply(fd, &r));
    close(fd);
    check_error(&r, 400, NULL, NULL);
    http_reply_free(&r);
    /* another transfer coding: 501 at once */
    fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
           "Transfer-Encoding: gzip\r\n\r\n";
    http_send_all(fd, head, strlen(head));
    REQUIRE(http_read_reply(fd, &r));
    close(fd);
    check_error(&r, 501, NULL, NULL);
    http_reply_free(&r);
    /* /tokenize has the same body limit */
    REQUIRE(http_request(fx->port, "POST", "/tokenize", NULL, big, &r));
    check_error(&r, 413, NULL, NULL);
    http_reply_free(&r);
    free(big);

    /* headers over --max-header-bytes (64 KiB): 431, exactly at the limit, whether one
     * header or many carry them; MHD's own buffer bound answers past ~96 KiB */
    {
        size_t sizes[] = {60 * 1024, 70 * 1024, 100 * 1024};
        for (int k = 0; k < 3; k++) {
            size_t hn = sizes[k];
            char *hb = malloc(hn + 256);
            int off = snprintf(hb, 256, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                        "X-Big: ");
            memset(hb + off, 'a', hn);
            memcpy(hb + off + hn, "\r\n\r\n", 5);
            int hfd = http_connect(fx->port);
            REQUIRE(hfd >= 0);
            http_send_all(hfd, hb, (size_t)off + hn + 4);
            bool got = http_read_reply(hfd, &r);
            close(hfd);
            free(hb);
            if (k == 0) {
                CHECKF(got && r.status == 200, "%zu bytes of headers: %d", hn, r.status);
            } else {
                CHECKF(got, "%zu bytes of headers: no answer", hn);
                CHECKF(r.status == 431, "%zu bytes of headers: %d", hn, r.status);
            }
            http_reply_free(&r);
        }
        /* many small headers over the limit */
        struct pl_sbuf many = {0};
        pl_sbuf_printf(&many, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for (int i = 0; i < 2000; i++)
            pl_sbuf_printf(&many, "X-H%d: %040d\r\n", i, i);
        pl_sbuf_printf(&many, "\r\n");
        int hfd = http_connect(fx->port);
        REQUIRE(hfd >= 0);
        http_send_all(hfd, many.data, many.len);
        REQUIRE(http_read_reply(hfd, &r));
        close(hfd);
        CHECKF(r.status == 431, "%zu bytes in 2000 headers: %d", many.len, r.status);
        http_reply_free(&r);
        pl_sbuf_fini(&many);
        REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
        CHECK(r.status == 200);
        http_reply_free(&r);
    }

    /* CORS */
    REQUIRE(http_request(fx->port, "OPTIONS", "/v1/chat/completions",
                         "Origin: http://example.com\r\nAccess-Control-Request-Method: POST\r\n"
                         "Access-Control-Request-Headers: authorization, content-type\r\n",
                         NULL, &r));
    CHECK(r.status == 200);
    CHECK(http_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)) && !strcmp(h, "*"));
    CHECK(http_header(&r, "Access-Control-Allow-Methods", h, sizeof(h)) && strstr(h, "POST"));
    CHECK(http_header(&r, "Access-Control-Allow-Headers", h, sizeof(h)) &&
          strstr(h, "authorization"));
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/models", "Origin: http://example.com\r\n", NULL,
                         &r));
    CHECK(http_header(&r, "Access-Control-Allow-Origin", h, sizeof(h)) && !strcmp(h, "*"));
    http_reply_free(&r);

    /* tokenize / detokenize round trip with the tokenizer as reference */
    REQUIRE(http_request(fx->port, "POST", "/tokenize", NULL, "{\"prompt\": \"Hello world\"}", &r));
    CHECK(r.status == 200);
    j = body_json(&r);
    int32_t *ids;
    int n;
    REQUIRE(pl_tokenizer_encode(tok, "Hello world", 11, true, &ids, &n, NULL) == PL_STATUS_OK);
    json_t *toks = json_object_get(j, "tokens");
    CHECK((int)json_array_size(toks) == n && json_integer_value(json_object_get(j, "count")) == n);
    for (int i = 0; i < n && i < (int)json_array_size(toks); i++)
        CHECK(json_integer_value(json_array_get(toks, (size_t)i)) == ids[i]);
    char *dt = json_dumps(toks, JSON_COMPACT);
    char body[512];
    snprintf(body, sizeof(body), "{\"tokens\": %s}", dt);
    free(dt);
    json_decref(j);
    http_reply_free(&r);
    free(ids);
    REQUIRE(http_request(fx->port, "POST", "/detokenize", NULL, body, &r));
    j = body_json(&r);
    CHECKF(!strcmp(json_string_value(json_object_get(j, "prompt")),
                   "<|begin_of_text|>Hello world"),
           "%s", r.body);
    json_decref(j);
    http_reply_free(&r);
    /* an unknown field is ignored (vLLM's leniency); a known one of the wrong type is not */
    REQUIRE(http_request(fx->port, "POST", "/tokenize", NULL, "{\"prompt\": \"x\", \"zzz\": 1}", &r));
    CHECKF(r.status == 200 && strstr(r.body, "\"count\":2"), "%d %s", r.status, r.body);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "POST", "/tokenize", NULL,
                         "{\"prompt\": \"x\", \"zzz\": 1, \"return_token_strs\": 3}", &r));
    check_error(&r, 400, NULL, "return_token_strs");
    http_reply_free(&r);

    stop(fx);
}

static void test_auth(void)
{
    struct options opt = {.api_key = "sk-test-123"};
    struct fixture *fx = start(&opt);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "GET", "/v1/models", NULL, NULL, &r));
    check_error(&r, 401, "AuthenticationError", NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/models", "Authorization: Bearer sk-test-124\r\n",
                         NULL, &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/models", "Authorization: Basic sk-test-123\r\n",
                         NULL, &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/models", "Authorization: Bearer sk-test-123\r\n",
                         NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    /* /health and /metrics stay open (load balancers, Prometheus) */
    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/metrics", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    stop(fx);
}

static void test_completions(void)
{
    struct options opt = {0};
    struct fixture *fx = start(&opt);
    struct http_reply r;
    int32_t prompt[] = {5, 6, 7};
    char want[256];

    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"model\":\"tiny\",\"prompt\":[5,6,7],\"max_tokens\":4,\"n\":2}", &r));
    CHECKF(r.status == 200, "%s", r.body);
    json_t *j = body_json(&r);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "text_completion"));
    CHECK(!strncmp(json_string_value(json_object_get(j, "id")), "cmpl-", 5));
    CHECK(!strcmp(json_string_value(json_object_get(j, "model")), "tiny"));
    json_t *ch = json_object_get(j, "choices");
    CHECK(json_array_size(ch) == 2);
    for (int i = 0; i < 2; i++) {
        json_t *c = json_array_get(ch, (size_t)i);
        fake_expected_text(prompt, 3, i, 4, want, sizeof(want));
        CHECK(json_integer_value(json_object_get(c, "index")) == i);
        CHECKF(!strcmp(json_string_value(json_object_get(c, "text")), want), "%s",
               json_string_value(json_object_get(c, "text")));
        CHECK(!strcmp(json_string_value(json_object_get(c, "finish_reason")), "length"));
        CHECK(json_is_null(json_object_get(c, "logprobs")));
    }
    json_t *u = json_object_get(j, "usage");
    CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == 3);
    CHECK(json_integer_value(json_object_get(u, "completion_tokens")) == 8);
    CHECK(json_integer_value(json_object_get(u, "total_tokens")) == 11);
    json_decref(j);
    http_reply_free(&r);

    /* two prompts, stop token, logprobs (completions format) */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[[5,6,7],[9,8]],\"max_tokens\":4,\"stop_token_ids\":[7],"
                         "\"logprobs\":1}",
                         &r));
    CHECKF(r.status == 200, "%s", r.body);
    j = body_json(&r);
    ch = json_object_get(j, "choices");
    REQUIRE(json_array_size(ch) == 2);
    json_t *c0 = json_array_get(ch, 0), *c1 = json_array_get(ch, 1);
    CHECK(!strcmp(json_string_value(json_object_get(c0, "text")), " t5 t6 t7"));
    CHECK(!strcmp(json_string_value(json_object_get(c0, "finish_reason")), "stop"));
    CHECK(json_integer_value(json_object_get(c0, "stop_reason")) == 7);
    CHECK(!strcmp(json_string_value(json_object_get(c1, "text")), " t9 t8 t9 t8"));
    CHECK(json_is_null(json_object_get(c1, "stop_reason")));
    json_t *lp = json_object_get(c0, "logprobs");
    CHECK(json_array_size(json_object_get(lp, "tokens")) == 3);
    CHECK(json_array_size(json_object_get(lp, "token_logprobs")) == 3);
    CHECK_NEAR(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 0)), -0.25,
               1e-6);
    CHECK(json_is_object(json_array_get(json_object_get(lp, "top_logprobs"), 0)));
    CHECK(json_integer_value(json_array_get(json_object_get(lp, "text_offset"), 0)) == 0);
    json_decref(j);
    http_reply_free(&r);

    /* echo: the prompt text before the output, streamed or not; with logprobs the prompt
     * positions come first (the first one None) and prompt_logprobs has vLLM's shape */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":\"Hi\",\"max_tokens\":2,\"echo\":true,\"logprobs\":1}", &r));
    CHECKF(r.status == 200, "%s", r.body);
    j = body_json(&r);
    c0 = json_array_get(json_object_get(j, "choices"), 0);
    {
        int32_t *hi;
        int nh;
        REQUIRE(pl_tokenizer_encode(tok, "Hi", 2, true, &hi, &nh, NULL) == PL_STATUS_OK);
        char wt[256] = "Hi";
        fake_expected_text(hi, nh, 0, 2, wt + 2, sizeof(wt) - 2);
        CHECKF(!strcmp(json_string_value(json_object_get(c0, "text")), wt), "%s", r.body);
        lp = json_object_get(c0, "logprobs");
        CHECK((int)json_array_size(json_object_get(lp, "tokens")) == nh + 2);
        CHECK(json_is_null(json_array_get(json_object_get(lp, "token_logprobs"), 0)));
        CHECK(json_is_null(json_array_get(json_object_get(lp, "top_logprobs"), 0)));
        CHECK_NEAR(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"), 1)), -1.0,
                   1e-6);
        CHECK_NEAR(json_real_value(json_array_get(json_object_get(lp, "token_logprobs"),
                                                  (size_t)nh)), -0.25, 1e-6);
        json_t *pl = json_object_get(c0, "prompt_logprobs");
        CHECK((int)json_array_size(pl) == nh && json_is_null(json_array_get(pl, 0)));
        char key[16];
        snprintf(key, sizeof(key), "%d", (int)hi[1]);
        json_t *ent = json_object_get(json_array_get(pl, 1), key);
        CHECK(json_integer_value(json_object_get(ent, "rank")) == 1);
        CHECK_NEAR(json_real_value(json_object_get(ent, "logprob")), -1.0, 1e-6);
        CHECK(json_is_string(json_object_get(ent, "decoded_token")));
        json_decref(j);
        http_reply_free(&r);
        REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                             "{\"prompt\":\"Hi\",\"max_tokens\":2,\"echo\":true,\"stream\":true}",
                             &r));
        char **eev;
        int n_eev;
        CHECK(sse_events(r.body, &eev, &n_eev));
        char st[256] = "";
        for (int i = 0; i < n_eev - 1; i++) {
            json_t *e = json_loads(eev[i], 0, NULL);
            strcat(st, json_string_value(
                           json_object_get(json_array_get(json_object_get(e, "choices"), 0), "text")));
            json_decref(e);
        }
        CHECKF(!strcmp(st, wt), "'%s' vs '%s'", st, wt);
        free_events(eev, n_eev);
        http_reply_free(&r);
        free(hi);
    }

    /* streamed, with the usage chunk */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[5,6,7],\"max_tokens\":5,\"stream\":true,"
                         "\"stream_options\":{\"include_usage\":true}}",
                         &r));
    CHECK(r.status == 200);
    char h[128];
    CHECK(http_header(&r, "Content-Type", h, sizeof(h)) && !strcmp(h, "text/event-stream"));
    char **ev;
    int n_ev;
    CHECKF(sse_events(r.body, &ev, &n_ev), "framing: %s", r.body);
    REQUIRE(n_ev >= 3);
    CHECK(!strcmp(ev[n_ev - 1], "[DONE]"));
    char text[512] = "";
    const char *finish = NULL;
    json_t *fin_chunk = NULL;
    for (int i = 0; i < n_ev - 2; i++) {
        json_t *e = json_loads(ev[i], 0, NULL);
        REQUIRE(e);
        CHECK(!strcmp(json_string_value(json_object_get(e, "object")), "text_completion"));
        json_t *cc = json_array_get(json_object_get(e, "choices"), 0);
        strcat(text, json_string_value(json_object_get(cc, "text")));
        if (json_is_string(json_object_get(cc, "finish_reason"))) {
            json_decref(fin_chunk);
            fin_chunk = e;
            finish = json_string_value(json_object_get(cc, "finish_reason"));
        } else {
            json_decref(e);
        }
    }
    fake_expected_text(prompt, 3, 0, 5, want, sizeof(want));
    CHECKF(!strcmp(text, want), "'%s' vs '%s'", text, want);
    CHECK(finish && !strcmp(finish, "length"));
    json_decref(fin_chunk);
    json_t *uc = json_loads(ev[n_ev - 2], 0, NULL);
    CHECK(json_array_size(json_object_get(uc, "choices")) == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(uc, "usage"), "completion_tokens")) == 5);
    json_decref(uc);
    free_events(ev, n_ev);
    http_reply_free(&r);
    stop(fx);
}

static void test_chat_stream(void)
{
    struct options opt = {0};
    struct fixture *fx = start(&opt);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "POST", "/v1/chat/completions", NULL,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":3,"
                         "\"stream\":true,\"n\":2,\"logprobs\":true,\"top_logprobs\":2}",
                         &r));
    CHECK(r.status == 200);
    char **ev;
    int n_ev;
    CHECKF(sse_events(r.body, &ev, &n_ev), "framing: %s", r.body);
    REQUIRE(n_ev >= 4);
    /* role chunks first, one per choice */
    for (int i = 0; i < 2; i++) {
        json_t *e = json_loads(ev[i], 0, NULL);
        json_t *c = json_array_get(json_object_get(e, "choices"), 0);
        CHECK(!strcmp(json_string_value(json_object_get(e, "object")), "chat.completion.chunk"));
        CHECK(json_integer_value(json_object_get(c, "index")) == i);
        CHECK(!strcmp(json_string_value(json_object_get(json_object_get(c, "delta"), "role")),
                      "assistant"));
        json_decref(e);
    }
    CHECK(!strcmp(ev[n_ev - 1], "[DONE]"));
    int n_content = 0, n_finish = 0, n_lp = 0;
    for (int i = 2; i < n_ev - 1; i++) {
        json_t *e = json_loads(ev[i], 0, NULL);
        json_t *c = json_array_get(json_object_get(e, "choices"), 0);
        json_t *d = json_object_get(c, "delta");
        CHECK(json_object_get(d, "role") == NULL);
        if (json_object_get(d, "content"))
            n_content++;
        if (json_is_string(json_object_get(c, "finish_reason")))
            n_finish++;
        json_t *lc = json_object_get(json_object_get(c, "logprobs"), "content");
        for (size_t k = 0; k < json_array_size(lc); k++) {
            json_t *t = json_array_get(lc, k);
            n_lp++;
            CHECK(json_is_string(json_object_get(t, "token")));
            CHECK(json_is_array(json_object_get(t, "bytes")));
            CHECK(json_array_size(json_object_get(t, "top_logprobs")) == 2);
        }
        json_decref(e);
    }
    CHECK(n_content == 6); /* 3 tokens x 2 choices, one per step */
    CHECK(n_finish == 2);
    CHECK(n_lp == 6);
    free_events(ev, n_ev);
    http_reply_free(&r);

    REQUIRE(http_request(fx->port, "POST", "/v1/chat/completions", NULL,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":3}",
                         &r));
    CHECKF(r.status == 200, "%s", r.body);
    json_t *j = body_json(&r);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    CHECK(!strcmp(json_string_value(json_object_get(j, "object")), "chat.completion"));
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(c, "message"), "role")),
                  "assistant"));
    /* the fake repeats the prompt: the rendered chat's first tokens */
    int32_t *ids;
    int n;
    const char *rendered = "<|begin_of_text|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    REQUIRE(pl_tokenizer_encode(tok, rendered, strlen(rendered), false, &ids, &n, NULL) ==
            PL_STATUS_OK);
    char want[256];
    fake_expected_text(ids, n, 0, 3, want, sizeof(want));
    CHECKF(!strcmp(json_string_value(json_object_get(json_object_get(c, "message"), "content")),
                   want),
           "%s", r.body);
    CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")) == n);
    free(ids);
    json_decref(j);
    http_reply_free(&r);
    stop(fx);
}

static double metric(int port, const char *name)
{
    struct http_reply r;
    if (!http_request(port, "GET", "/metrics", NULL, NULL, &r))
        return -1;
    double v = -1;
    for (char *p = r.body; (p = strstr(p, name)) != NULL; p++) {
        if (p != r.body && p[-1] != '\n')
            continue;
        char *sp = strchr(p, ' ');
        if (sp)
            v = strtod(sp + 1, NULL);
        break;
    }
    http_reply_free(&r);
    return v;
}

static void test_disconnect_aborts(void)
{
    struct options opt = {.step_delay_us = 2000};
    struct fixture *fx = start(&opt);
    int fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    REQUIRE(http_send_request(fd, "POST", "/v1/completions", NULL,
                              "{\"prompt\":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"
                              "\"max_tokens\":50000,\"stream\":true}"));
    char buf[4096];
    size_t got = 0;
    while (got < 600) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        REQUIRE(n > 0);
        got += (size_t)n;
    }
    CHECK(metric(fx->port, "vllm:num_requests_running{") == 1);
    CHECK(metric(fx->port, "vllm:kv_cache_usage_perc{") > 0);
    close(fd); /* the client goes away mid-stream */
    double running = 1, usage = 1;
    for (int i = 0; i < GUARD_POLLS && (running != 0 || usage != 0); i++) {
        sleep_ms(10);
        running = metric(fx->port, "vllm:num_requests_running{");
        usage = metric(fx->port, "vllm:kv_cache_usage_perc{");
    }
    CHECK(running == 0);
    CHECK(usage == 0);
    CHECK(metric(fx->port, "vllm:request_success_total{model_name=\"tiny\",engine=\"0\","
                           "finished_reason=\"abort\"}") == 1);
    CHECK(pl_async_engine_num_unfinished(fx->ae) == 0);
    CHECK(metric(fx->port, "vllm:time_to_first_token_seconds_count{") == 1);
    stop(fx);
}

struct bg_request {
    int port;
    const char *body;
    struct http_reply reply;
    bool ok;
};

static void *bg(void *arg)
{
    struct bg_request *b = arg;
    b->ok = http_request(b->port, "POST", "/v1/completions", NULL, b->body, &b->reply);
    return NULL;
}

static void test_health_stall(void)
{
    char path[] = "/tmp/pl_stall_http_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    setenv("PAGELLM_TEST_STALL_FILE", path, 1);
    struct options opt = {.stall_s = 0.3};
    struct fixture *fx = start(&opt);
    unsetenv("PAGELLM_TEST_STALL_FILE");
    struct http_reply r;
    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200); /* idle */
    http_reply_free(&r);
    struct bg_request b = {fx->port, "{\"prompt\":[1,2],\"max_tokens\":3}", {0}, false};
    pthread_t th;
    pthread_create(&th, NULL, bg, &b);
    /* the request cannot finish while stalled: /health must turn 503 */
    bool seen = false;
    for (int i = 0; i < GUARD_POLLS && !seen; i++) {
        REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
        seen = r.status == 503;
        if (seen)
            check_error(&r, 503, NULL, NULL);
        http_reply_free(&r);
        if (!seen)
            sleep_ms(10);
    }
    CHECK(seen);
    unlink(path); /* the loop moves again */
    pthread_join(th, NULL);
    CHECK(b.ok && b.reply.status == 200);
    http_reply_free(&b.reply);
    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    stop(fx);
}

static void test_slow_partial_request(void)
{
    struct options opt = {.keep_alive_s = 1, .idle_s = 1};
    struct fixture *fx = start(&opt);
    int fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    const char *partial = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le";
    http_send_all(fd, partial, strlen(partial));
    /* others are served meanwhile */
    struct http_reply r;
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[3],\"max_tokens\":2}", &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    /* and the slow one is cut after the header timeout: closed, reset or answered 4xx. The
     * receive timeout is a hang guard (60 s), not the deadline: running into it fails. */
    struct timeval tv = {60, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof(buf), 0);
    bool timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    CHECKF(!timed_out && (n <= 0 || !strncmp(buf, "HTTP/1.1 4", 10)), "got %zd bytes", n);
    close(fd);
    /* a request whose body never completes is cut too */
    fd = http_connect(fx->port);
    const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pr";
    http_send_all(fd, head, strlen(head));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = recv(fd, buf, sizeof(buf), 0);
    timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    CHECK(!timed_out && (n <= 0 || !strncmp(buf, "HTTP/1.1 4", 10)));
    close(fd);
    stop(fx);
}

struct stream_arg {
    int port;
    int id;
    bool ok;
};

static void *stream_client(void *arg)
{
    struct stream_arg *a = arg;
    char body[256];
    int32_t prompt[3] = {a->id % 900, (a->id * 7) % 900, 11};
    snprintf(body, sizeof(body), "{\"prompt\":[%d,%d,%d],\"max_tokens\":%d,\"stream\":true}",
             prompt[0], prompt[1], prompt[2], 4 + a->id % 5);
    struct http_reply r;
    if (!http_request(a->port, "POST", "/v1/completions", NULL, body, &r))
        return NULL;
    char **ev;
    int n_ev;
    char text[512] = "";
    if (r.status == 200 && sse_events(r.body, &ev, &n_ev)) {
        for (int i = 0; i < n_ev - 1; i++) {
            json_t *e = json_loads(ev[i], 0, NULL);
            const char *t = json_string_value(
                json_object_get(json_array_get(json_object_get(e, "choices"), 0), "text"));
            if (t)
                strcat(text, t);
            json_decref(e);
        }
        char want[512];
        fake_expected_text(prompt, 3, 0, 4 + a->id % 5, want, sizeof(want));
        a->ok = !strcmp(text, want) && !strcmp(ev[n_ev - 1], "[DONE]");
        free_events(ev, n_ev);
    }
    http_reply_free(&r);
    return NULL;
}

static void test_many_streams_and_idle_connections(void)
{
    /* keep-alive far beyond the run: an idle connection must not time out however slowly
     * a loaded machine runs the streams */
    struct options opt = {.step_delay_us = 1000, .keep_alive_s = 3600};
    struct fixture *fx = start(&opt);
    /* 1000 idle keep-alive connections stay open while 200 streams run */
    enum { N_IDLE = 1000, N_STREAMS = 200 };
    int *idle = malloc(sizeof(int) * N_IDLE);
    int n_idle = 0;
    for (int i = 0; i < N_IDLE; i++) {
        idle[i] = http_connect(fx->port);
        if (idle[i] >= 0)
            n_idle++;
    }
    CHECK(n_idle == N_IDLE);
    pthread_t th[N_STREAMS];
    struct stream_arg args[N_STREAMS];
    for (int i = 0; i < N_STREAMS; i++) {
        args[i] = (struct stream_arg){fx->port, i, false};
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        pthread_create(&th[i], &attr, stream_client, &args[i]);
        pthread_attr_destroy(&attr);
    }
    int ok = 0;
    for (int i = 0; i < N_STREAMS; i++) {
        pthread_join(th[i], NULL);
        ok += args[i].ok;
    }
    CHECKF(ok == N_STREAMS, "%d of %d streams right", ok, N_STREAMS);
    /* an idle connection is still usable */
    REQUIRE(http_send_request(idle[0], "GET", "/health", NULL, NULL));
    struct http_reply r;
    REQUIRE(http_read_reply(idle[0], &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    for (int i = 0; i < N_IDLE; i++)
        if (idle[i] >= 0)
            close(idle[i]);
    free(idle);
    CHECK(metric(fx->port, "vllm:request_success_total{model_name=\"tiny\",engine=\"0\","
                           "finished_reason=\"length\"}") == N_STREAMS);
    stop(fx);
}

static void test_overload_503(void)
{
    /* the engine loop is stalled (test hook) while the two admitted requests are pending,
     * so they cannot finish before the third arrives, however the threads are scheduled */
    char path[] = "/tmp/pl_stall_503_XXXXXX";
    int sfd = mkstemp(path);
    REQUIRE(sfd >= 0);
    close(sfd);
    setenv("PAGELLM_TEST_STALL_FILE", path, 1);
    struct options opt = {.step_delay_us = 2000, .max_pending = 2};
    struct fixture *fx = start(&opt);
    unsetenv("PAGELLM_TEST_STALL_FILE");
    struct bg_request a = {fx->port, "{\"prompt\":[1,2],\"max_tokens\":200}", {0}, false};
    struct bg_request b = a;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, bg, &a);
    pthread_create(&tb, NULL, bg, &b);
    for (int i = 0; i < GUARD_POLLS && pl_async_engine_num_unfinished(fx->ae) < 2; i++)
        sleep_ms(10);
    CHECK(pl_async_engine_num_unfinished(fx->ae) == 2);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[1,2],\"max_tokens\":2}", &r));
    check_error(&r, 503, NULL, NULL);
    CHECK(strstr(r.body, "overloaded") != NULL);
    http_reply_free(&r);
    unlink(path); /* the loop moves again */
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.ok && a.reply.status == 200 && b.ok && b.reply.status == 200);
    http_reply_free(&a.reply);
    http_reply_free(&b.reply);
    /* served again once they are done */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[1,2],\"max_tokens\":2}", &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    stop(fx);
}

static void test_drain(void)
{
    struct options opt = {.step_delay_us = 2000};
    struct fixture *fx = start(&opt);
    struct bg_request b = {fx->port, "{\"prompt\":[1,2],\"max_tokens\":100,\"stream\":true}", {0},
                           false};
    pthread_t th;
    pthread_create(&th, NULL, bg, &b);
    for (int i = 0; i < GUARD_POLLS && pl_http_server_num_active(fx->http) == 0; i++)
        sleep_ms(10);
    REQUIRE(pl_http_server_num_active(fx->http) == 1);
    pl_http_server_drain(fx->http);
    CHECK(http_connect(fx->port) < 0); /* no longer accepting */
    pthread_join(th, NULL);            /* the in-flight stream finishes normally */
    CHECK(b.ok && b.reply.status == 200);
    CHECK(b.reply.body && strstr(b.reply.body, "\"finish_reason\":\"length\"") &&
          strstr(b.reply.body, "data: [DONE]\n\n"));
    http_reply_free(&b.reply);
    stop(fx);
}

/* A fallback handler (the worker's local API routes ids itself): echoes the method and
 * path; "/r" is a redirect. */
static void echo_fallback(void *user, const struct pl_http_request *req,
                          struct pl_http_response *resp)
{
    (void)user;
    if (!strcmp(req->path, "/r")) {
        resp->status = 307;
        resp->location = "/";
        return;
    }
    char *b = malloc(256);
    snprintf(b, 256, "{\"fallback\":\"%s %s\"}", req->method, req->path);
    pl_http_set_json(resp, 200, b, strlen(b));
}

static void route_a(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    (void)user;
    (void)req;
    pl_http_set_json(resp, 200, strdup("{\"route\":\"a\"}"), 13);
}

static void test_fallback_and_redirect(void)
{
    struct pl_http_params hp;
    pl_http_params_default(&hp);
    hp.port = 0;
    struct pl_http_server *s = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_http_server_new(&hp, &s, &err) == PL_STATUS_OK);
    REQUIRE(pl_http_server_route(s, "GET", "/a", false, route_a, NULL, &err) == PL_STATUS_OK);
    pl_http_server_fallback(s, echo_fallback, NULL);
    REQUIRE(pl_http_server_start(s, &err) == PL_STATUS_OK);
    int port = pl_http_server_port(s);
    struct http_reply r;
    REQUIRE(http_request(port, "GET", "/a", NULL, NULL, &r));
    CHECK(r.status == 200 && !strcmp(r.body, "{\"route\":\"a\"}"));
    http_reply_free(&r);
    /* no route: the fallback, not 404; a routed path with another method too, not 405 */
    REQUIRE(http_request(port, "GET", "/status/x-1", NULL, NULL, &r));
    CHECKF(r.status == 200 && !strcmp(r.body, "{\"fallback\":\"GET /status/x-1\"}"), "%s", r.body);
    http_reply_free(&r);
    REQUIRE(http_request(port, "POST", "/a", NULL, "{}", &r));
    CHECKF(r.status == 200 && !strcmp(r.body, "{\"fallback\":\"POST /a\"}"), "%s", r.body);
    http_reply_free(&r);
    REQUIRE(http_request(port, "GET", "/r", NULL, NULL, &r));
    CHECK(r.status == 307 && r.headers && strstr(r.headers, "Location: /\r\n"));
    http_reply_free(&r);
    pl_http_server_free(s);
}


/* Sends raw bytes (NULs allowed) on a new connection and reads the reply until the
 * server closes. The request must ask for "Connection: close" or be refused. */
static bool raw_request(int port, const char *data, size_t len, struct http_reply *r)
{
    int fd = http_connect(port);
    if (fd < 0)
        return false;
    bool ok = http_send_all(fd, data, len) && http_read_reply(fd, r);
    close(fd);
    return ok;
}

/* Sends only the header of a request announcing a body and reads the reply: it can
 * only come if the server decided without reading the body. */
static bool headers_only(int port, const char *method, const char *path, const char *extra,
                         struct http_reply *r)
{
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s"
                     "Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
                     method, path, extra ? extra : "");
    return raw_request(port, head, (size_t)n, r);
}

/* A client without the key is refused when its headers arrive: no body is read (the
 * server answers while the announced megabyte has not been sent), and nothing under
 * /v1/ tells it which routes exist. */
static void test_refused_before_body(void)
{
    struct options opt = {.api_key = "sk-test-123"};
    struct fixture *fx = start(&opt);
    const char *key = "Authorization: Bearer sk-test-123\r\n";
    struct http_reply r;

    REQUIRE(headers_only(fx->port, "POST", "/v1/completions", NULL, &r));
    check_error(&r, 401, "AuthenticationError", NULL);
    http_reply_free(&r);
    REQUIRE(headers_only(fx->port, "POST", "/v1/completions",
                         "Authorization: Bearer sk-test-124\r\n", &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    /* unknown routes and wrong methods under /v1/: 401 first ... */
    REQUIRE(headers_only(fx->port, "POST", "/v1/no-such-route", NULL, &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/no-such-route", NULL, NULL, &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/completions", NULL, NULL, &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    /* ... 404 / 405 with the key, still without reading the body */
    REQUIRE(headers_only(fx->port, "POST", "/v1/no-such-route", key, &r));
    check_error(&r, 404, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(headers_only(fx->port, "PUT", "/v1/completions", key, &r));
    check_error(&r, 405, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(headers_only(fx->port, "POST", "/nope", NULL, &r));
    check_error(&r, 404, NULL, NULL);
    http_reply_free(&r);
    /* open GET routes answer at once, whatever body is announced */
    REQUIRE(headers_only(fx->port, "GET", "/health", NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    /* /tokenize and /detokenize need the key too */
    REQUIRE(headers_only(fx->port, "POST", "/tokenize", NULL, &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "POST", "/detokenize", NULL, "{\"tokens\": [1]}", &r));
    check_error(&r, 401, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "POST", "/tokenize", key, "{\"prompt\": \"Hello\"}", &r));
    CHECKF(r.status == 200, "%s", r.body);
    http_reply_free(&r);
    /* with the key and a body, served as before */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", key,
                         "{\"prompt\":[3],\"max_tokens\":2}", &r));
    CHECKF(r.status == 200, "%s", r.body);
    http_reply_free(&r);
    stop(fx);
}

/* NUL bytes that libmicrohttpd's C strings would silently cut at, and header framing. */
static void test_nul_bytes_and_framing(void)
{
    struct options opt = {.api_key = "sk-test-123"};
    struct fixture *fx = start(&opt);
    struct http_reply r;
    static const char nul_auth[] = "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                   "Authorization: Bearer sk-test-123\0junk\r\n\r\n";
    REQUIRE(raw_request(fx->port, nul_auth, sizeof(nul_auth) - 1, &r));
    CHECKF(r.status == 400 || r.status == 401, "a NUL in Authorization: %d", r.status);
    http_reply_free(&r);
    static const char nul_other[] = "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                    "Authorization: Bearer sk-test-123\r\nX-A: b\0c\r\n\r\n";
    REQUIRE(raw_request(fx->port, nul_other, sizeof(nul_other) - 1, &r));
    check_error(&r, 400, NULL, NULL);
    http_reply_free(&r);
    static const char nul_url[] = "GET /v1/models\0x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  "Authorization: Bearer sk-test-123\r\n\r\n";
    REQUIRE(raw_request(fx->port, nul_url, sizeof(nul_url) - 1, &r));
    CHECKF(r.status == 400, "a NUL in the URL: %d", r.status);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/models%00", "Authorization: Bearer sk-test-123\r\n",
                         NULL, &r));
    check_error(&r, 400, NULL, NULL);
    http_reply_free(&r);
    REQUIRE(http_request(fx->port, "GET", "/v1/models%00x", "Authorization: Bearer sk-test-123\r\n",
                         NULL, &r));
    check_error(&r, 400, NULL, NULL);
    http_reply_free(&r);
    /* well-formed variants still pass: bare LF line ends, empty values, spaces, a query */
    static const char lf[] = "GET /v1/models?x=%00 HTTP/1.1\nHost: x\nConnection: close\n"
                             "X-Empty:\nX-Spaces:    v  \nAuthorization:Bearer sk-test-123\n\n";
    REQUIRE(raw_request(fx->port, lf, sizeof(lf) - 1, &r));
    CHECKF(r.status == 200, "bare LF request: %d %s", r.status, r.body);
    http_reply_free(&r);
    static const char spaces[] = "GET  /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                 "Authorization: Bearer sk-test-123\r\nX-Empty:\r\n\r\n";
    REQUIRE(raw_request(fx->port, spaces, sizeof(spaces) - 1, &r));
    CHECKF(r.status == 200, "extra spaces: %d %s", r.status, r.body);
    http_reply_free(&r);
    /* a folded header line (obsolete) could hide text the same way: refused */
    static const char folded[] = "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                 "Authorization: Bearer sk-test-123\r\nX-A: b\r\n c\r\n\r\n";
    REQUIRE(raw_request(fx->port, folded, sizeof(folded) - 1, &r));
    check_error(&r, 400, NULL, NULL);
    http_reply_free(&r);
    /* keep-alive: two requests on one connection, then a close */
    {
        int fd = http_connect(fx->port);
        REQUIRE(fd >= 0);
        static const char two[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  "Authorization: Bearer sk-test-123\r\n\r\n";
        http_send_all(fd, two, sizeof(two) - 1);
        REQUIRE(http_read_reply(fd, &r));
        close(fd);
        CHECKF(r.status == 200 && strstr(r.body, "HTTP/1.1 200") && strstr(r.body, "\"tiny\""),
               "%s", r.body);
        http_reply_free(&r);
    }
    stop(fx);
}

/* Slowloris: a header trickled byte by byte (each byte resets libmicrohttpd's idle
 * timeout) is cut at the header deadline (--timeout-keep-alive). */
static void test_header_deadline(void)
{
    struct options opt = {.keep_alive_s = 1};
    struct fixture *fx = start(&opt);
    int fd = http_connect(fx->port);
    REQUIRE(fd >= 0);
    const char *line = "GET /health HTTP/1.1\r\nHost: x\r\n";
    http_send_all(fd, line, strlen(line));
    bool closed = false;
    /* one byte every 100 ms, far inside the idle timeout; bounded: 60 s at most */
    static const char trickle[] = "X-Trickle: abcdefghijklmnopqrstuvwxyz\r\n";
    for (int i = 0; i < 600 && !closed; i++) {
        sleep_ms(100);
        char c = trickle[(size_t)i % (sizeof(trickle) - 1)];
        if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        char buf[256];
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            closed = true;
        else if (n > 0)
            CHECKF(false, "an answer to a header that never ended: %.*s", (int)n, buf);
    }
    CHECK(closed);
    close(fd);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    stop(fx);
}

/* The connection limit cannot be held by connections that never finish a header:
 * with every slot taken by them (the deadline far away), a new client is served. */
static void test_connection_limit_not_held(void)
{
    enum { MAX_CONN = 16, N_SLOW = 3 * MAX_CONN };
    struct options opt = {.keep_alive_s = 600, .max_connections = MAX_CONN};
    struct fixture *fx = start(&opt);
    int slow[N_SLOW];
    for (int i = 0; i < N_SLOW; i++) {
        slow[i] = http_connect(fx->port); /* past the limit they wait in the backlog */
        REQUIRE(slow[i] >= 0);
        const char *part = "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1";
        http_send_all(slow[i], part, strlen(part));
    }
    struct http_reply r;
    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    /* the longest-waiting ones made room: at least all but MAX_CONN are closed */
    int n_closed = 0;
    bool seen[N_SLOW] = {false};
    for (int round = 0; round < 600 && n_closed < N_SLOW - MAX_CONN; round++) {
        for (int i = 0; i < N_SLOW; i++) {
            char buf[64];
            if (seen[i])
                continue;
            ssize_t n = recv(slow[i], buf, sizeof(buf), MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
                seen[i] = true;
                n_closed++;
            }
        }
        if (n_closed < N_SLOW - MAX_CONN)
            sleep_ms(100);
    }
    CHECKF(n_closed >= N_SLOW - MAX_CONN, "%d closed", n_closed);
    for (int i = 0; i < N_SLOW; i++)
        close(slow[i]);
    stop(fx);
}

/* A handler that waits until released: stands for a long tokenization. */
struct blocker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered;
    bool released;
};

static void h_block(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    struct blocker *b = user;
    pthread_mutex_lock(&b->mu);
    b->entered++;
    pthread_cond_broadcast(&b->cv);
    while (!b->released)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    char *body = strdup("{\"ok\":true}");
    pl_http_set_json(resp, 200, body, strlen(body));
}

struct block_client {
    int port;
    int status;
};

static void *block_client_main(void *arg)
{
    struct block_client *c = arg;
    struct http_reply r;
    if (http_request(c->port, "POST", "/test/block", NULL, "{\"prompt\": \"x\"}", &r)) {
        c->status = r.status;
        http_reply_free(&r);
    }
    return NULL;
}

/* Handlers of requests with a body run off the event loop: while several are busy
 * (as many as there are event-loop threads, or more), /health is answered and a
 * running stream goes on. (Requests with a body queue for the handler threads.) */
static void test_handlers_off_event_loop(void)
{
    struct blocker b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct options opt = {.extra_path = "/test/block", .extra_fn = h_block, .extra_user = &b,
                          .step_delay_us = 1000};
    struct fixture *fx = start(&opt);
    /* a long stream, running */
    int sfd = http_connect(fx->port);
    REQUIRE(sfd >= 0);
    REQUIRE(http_send_request(sfd, "POST", "/v1/completions", NULL,
                              "{\"prompt\":[1,2,3],\"max_tokens\":50000,\"stream\":true}"));
    char buf[4096];
    size_t got = 0;
    while (got < 600) {
        ssize_t n = recv(sfd, buf, sizeof(buf), 0);
        REQUIRE(n > 0);
        got += (size_t)n;
    }
    enum { N = 8 };
    pthread_t th[N];
    struct block_client cl[N];
    for (int i = 0; i < N; i++) {
        cl[i] = (struct block_client){fx->port, 0};
        pthread_create(&th[i], NULL, block_client_main, &cl[i]);
    }
    /* wait until as many handlers are stuck as there are event-loop threads (2) */
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&b.mu);
    while (b.entered < 2)
        if (pthread_cond_timedwait(&b.cv, &b.mu, &until) != 0)
            break;
    int entered = b.entered;
    pthread_mutex_unlock(&b.mu);
    CHECK(entered >= 2);
    struct http_reply r;
    CHECK(http_request(fx->port, "GET", "/health", NULL, NULL, &r) && r.status == 200);
    http_reply_free(&r);
    /* the stream keeps coming */
    got = 0;
    while (got < 8192) {
        ssize_t n = recv(sfd, buf, sizeof(buf), 0);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    CHECKF(got >= 8192, "the stream stalled after %zu bytes", got);
    close(sfd);
    pthread_mutex_lock(&b.mu);
    b.released = true;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        CHECKF(cl[i].status == 200, "blocked request %d: %d", i, cl[i].status);
    }
    stop(fx);
}

/* Clients that leave while their requests wait for a handler thread: nothing stays
 * behind (engine requests, in-flight counts; ASan checks the memory). */
static void test_client_gone_while_queued(void)
{
    struct blocker b = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    struct options opt = {.extra_path = "/test/block", .extra_fn = h_block, .extra_user = &b};
    struct fixture *fx = start(&opt);
    enum { N_BLOCK = 4, N_GONE = 6 }; /* 4: every handler thread busy */
    int gone[N_GONE];
    pthread_t th[N_BLOCK];
    struct block_client cl[N_BLOCK];
    for (int i = 0; i < N_BLOCK; i++) {
        cl[i] = (struct block_client){fx->port, 0};
        pthread_create(&th[i], NULL, block_client_main, &cl[i]);
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 60;
    pthread_mutex_lock(&b.mu);
    while (b.entered < N_BLOCK)
        if (pthread_cond_timedwait(&b.cv, &b.mu, &until) != 0)
            break;
    pthread_mutex_unlock(&b.mu);
    /* requests queued behind them, streamed or not, whose clients then leave */
    for (int i = 0; i < N_GONE; i++) {
        int fd = http_connect(fx->port);
        REQUIRE(fd >= 0);
        http_send_request(fd, "POST", i % 2 ? "/v1/completions" : "/tokenize", NULL,
                          i % 3 ? "{\"prompt\":[1,2],\"max_tokens\":5}"
                                : "{\"prompt\":[1,2],\"max_tokens\":5,\"stream\":true}");
        if (i < N_GONE / 2)
            shutdown(fd, SHUT_WR); /* half-closed: the server sees the end of input */
        else
            close(fd);
        gone[i] = fd;
    }
    /* ... and pipelined behind an answered request, the client leaving after that answer */
    for (int i = 0; i < N_GONE; i++) {
        int fd = http_connect(fx->port);
        REQUIRE(fd >= 0);
        static const char two[] = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                  "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Length: 31\r\n\r\n{\"prompt\":[1,2],\"max_tokens\":5}";
        http_send_all(fd, two, sizeof(two) - 1);
        shutdown(fd, SHUT_WR);
        char buf[512] = "";
        size_t got = 0;
        while (got < sizeof(buf) - 1 && !strstr(buf, "Content-Length: 0\r\n\r\n")) {
            ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
            buf[got] = '\0';
        }
        close(fd);
    }
    pthread_mutex_lock(&b.mu);
    b.released = true;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    for (int i = 0; i < N_BLOCK; i++) {
        pthread_join(th[i], NULL);
        CHECK(cl[i].status == 200);
    }
    for (int i = 0; i < N_GONE / 2; i++)
        close(gone[i]);
    for (int i = 0; i < 6000 && (pl_http_server_num_active(fx->http) > 0 ||
                                 pl_async_engine_num_unfinished(fx->ae) > 0);
         i++)
        sleep_ms(10);
    CHECK(pl_http_server_num_active(fx->http) == 0);
    CHECK(pl_async_engine_num_unfinished(fx->ae) == 0);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[3],\"max_tokens\":2}", &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    stop(fx);
}

/*
 * An engine step that fails -- here one that ends nothing itself, so the async
 * engine fails its requests -- reaches every client as an error: a 500 error
 * object, or an SSE error event then [DONE]; never a normal or "abort" finish,
 * never a request that waits for the next one. The server goes on serving.
 */
/* Arms the fake engine's next step to fail once the engine thread is idle: after a failed
 * request's reply, the engine thread still runs one step to retire the aborted request
 * (fail_all aborts it in the engine), and a fault armed before that step would be spent
 * on it instead of on the next request. Polls; 60 s is only a hang guard. */
static void arm_failing_step(struct fixture *fx)
{
    for (int i = 0; i < 6000 && __atomic_load_n(&fx->fake.n_reqs, __ATOMIC_SEQ_CST) > 0; i++)
        sleep_ms(10);
    REQUIRE(__atomic_load_n(&fx->fake.n_reqs, __ATOMIC_SEQ_CST) == 0);
    /* read by the engine thread after the next submit */
    __atomic_store_n(&fx->fake.fail_steps, 1, __ATOMIC_SEQ_CST);
}

static void test_engine_failure_errors(void)
{
    struct options opt = {0};
    struct fixture *fx = start(&opt);
    fx->fake.fail_silently = true;
    arm_failing_step(fx);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[5,6],\"max_tokens\":3}", &r));
    check_error(&r, 500, NULL, NULL);
    CHECKF(strstr(r.body, "device lost"), "%s", r.body);
    http_reply_free(&r);

    arm_failing_step(fx);
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[5,6],\"max_tokens\":3,\"stream\":true}", &r));
    CHECK(r.status == 200);
    char **ev;
    int n_ev;
    REQUIRE(sse_events(r.body, &ev, &n_ev));
    REQUIRE(n_ev >= 2);
    CHECK(!strcmp(ev[n_ev - 1], "[DONE]"));
    json_t *e = json_loads(ev[n_ev - 2], 0, NULL);
    json_t *eo = json_object_get(e, "error");
    CHECKF(json_is_object(eo) && json_integer_value(json_object_get(eo, "code")) == 500 &&
               strstr(json_string_value(json_object_get(eo, "message")), "device lost"),
           "no error event before [DONE]: %s", r.body);
    json_decref(e);
    CHECKF(!strstr(r.body, "\"finish_reason\":\"abort\"") &&
               !strstr(r.body, "\"finish_reason\":\"length\"") &&
               !strstr(r.body, "\"finish_reason\":\"error\""),
           "a failed request got a finish_reason: %s", r.body);
    free_events(ev, n_ev);
    http_reply_free(&r);

    /* chat, streamed: the role chunk, then the error event, then [DONE] */
    arm_failing_step(fx);
    REQUIRE(http_request(fx->port, "POST", "/v1/chat/completions", NULL,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                         "\"max_tokens\":3,\"stream\":true}",
                         &r));
    CHECK(r.status == 200 && strstr(r.body, "\"error\":{") &&
          strstr(r.body, "data: [DONE]\n\n") && !strstr(r.body, "\"finish_reason\":\"abort\""));
    http_reply_free(&r);

    /* served again */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[5,6],\"max_tokens\":3}", &r));
    CHECKF(r.status == 200 && strstr(r.body, "\"finish_reason\":\"length\""), "%s", r.body);
    http_reply_free(&r);
    CHECK(metric(fx->port, "vllm:request_success_total{model_name=\"tiny\",engine=\"0\","
                           "finished_reason=\"abort\"}") == 0);
    CHECK(metric(fx->port, "vllm:request_success_total{model_name=\"tiny\",engine=\"0\","
                           "finished_reason=\"length\"}") == 1);
    CHECK(pl_async_engine_num_unfinished(fx->ae) == 0);
    REQUIRE(http_request(fx->port, "GET", "/health", NULL, NULL, &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    stop(fx);
}

/*
 * A request with more prompts than the server ever admits at once is a 400
 * before anything is queued; one that does not fit beside the running ones is a
 * 503, and none of its prompts is queued meanwhile.
 */
static void test_prompts_beyond_admission(void)
{
    struct options opt = {.step_delay_us = 2000, .max_pending = 4};
    struct fixture *fx = start(&opt);
    struct http_reply r;
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[[1],[2],[3],[4],[5]],\"max_tokens\":2}", &r));
    check_error(&r, 400, NULL, "prompt");
    CHECKF(strstr(r.body, "5 prompts"), "%s", r.body);
    http_reply_free(&r);
    CHECK(atomic_load(&fx->fake.n_added) == 0);
    struct bg_request a = {fx->port, "{\"prompt\":[1,2],\"max_tokens\":200}", {0}, false};
    struct bg_request b = a;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, bg, &a);
    pthread_create(&tb, NULL, bg, &b);
    for (int i = 0; i < 4000 && atomic_load(&fx->fake.n_added) < 2; i++)
        sleep_ms(5);
    REQUIRE(atomic_load(&fx->fake.n_added) == 2);
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[[1],[2],[3]],\"max_tokens\":2}", &r));
    check_error(&r, 503, NULL, NULL);
    http_reply_free(&r);
    /* one more fits; once it is done every add the engine saw is known */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[3],\"max_tokens\":2}", &r));
    CHECK(r.status == 200);
    http_reply_free(&r);
    CHECKF(atomic_load(&fx->fake.n_added) == 3, "%d engine requests added, want 3",
           atomic_load(&fx->fake.n_added));
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(a.ok && a.reply.status == 200 && b.ok && b.reply.status == 200);
    http_reply_free(&a.reply);
    http_reply_free(&b.reply);
    stop(fx);
}

/*
 * The model's vocab (1024 rows) padded past the tokenizer (960 ids): token ids
 * in the gap are refused in logit_bias, allowed_token_ids and prompts with a 400
 * naming the field and the id; ids past the model are refused too; nothing
 * reaches the engine.
 */
static void test_vocab_gap_validation(void)
{
    struct options opt = {.vocab_size = 1024};
    struct fixture *fx = start(&opt);
    REQUIRE(pl_tokenizer_vocab_size(tok) == 960);
    struct {
        const char *body, *param, *needle;
    } bad[] = {
        {"{\"prompt\":\"hi\",\"max_tokens\":1,\"logit_bias\":{\"1000\":100}}", "logit_bias",
         "1000"},
        {"{\"prompt\":\"hi\",\"max_tokens\":1,\"logit_bias\":{\"5\":1,\"960\":100}}",
         "logit_bias", "960"},
        {"{\"prompt\":\"hi\",\"max_tokens\":1,\"allowed_token_ids\":[5,1023]}",
         "allowed_token_ids", "1023"},
        {"{\"prompt\":[5,1000],\"max_tokens\":1}", "prompt", "1000"},
        {"{\"prompt\":[[5],[7,961]],\"max_tokens\":1}", "prompt", "961"},
        {"{\"prompt\":[5,1024],\"max_tokens\":1}", "prompt", "1024"},
        {"{\"prompt\":\"hi\",\"max_tokens\":1,\"logit_bias\":{\"1024\":1}}", "logit_bias",
         "1024"},
    };
    struct http_reply r;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL, bad[i].body, &r));
        check_error(&r, 400, NULL, bad[i].param);
        CHECKF(strstr(r.body, bad[i].needle), "%s -> %s", bad[i].body, r.body);
        http_reply_free(&r);
    }
    REQUIRE(http_request(fx->port, "POST", "/v1/chat/completions", NULL,
                         "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                         "\"max_tokens\":1,\"logit_bias\":{\"1000\":100}}",
                         &r));
    check_error(&r, 400, NULL, "logit_bias");
    http_reply_free(&r);
    CHECK(atomic_load(&fx->fake.n_added) == 0);
    /* the last id the tokenizer has is fine */
    REQUIRE(http_request(fx->port, "POST", "/v1/completions", NULL,
                         "{\"prompt\":[5,959],\"max_tokens\":1,\"logit_bias\":{\"959\":1},"
                         "\"allowed_token_ids\":[959]}",
                         &r));
    CHECKF(r.status == 200, "%s", r.body);
    http_reply_free(&r);
    stop(fx);
}

int main(void)
{
    char dir[] = "/tmp/pl_test_http_XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    struct pl_tiny_tokenizer_info info;
    struct pl_err err = {0};
    if (pl_tiny_tokenizer_write(dir, 700, &info, &err) != PL_STATUS_OK ||
        pl_tokenizer_load(dir, &tok, &err) != PL_STATUS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    char path[512];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
    PL_RUN(test_routes_and_errors);
    PL_RUN(test_auth);
    PL_RUN(test_completions);
    PL_RUN(test_chat_stream);
    PL_RUN(test_disconnect_aborts);
    PL_RUN(test_health_stall);
    PL_RUN(test_slow_partial_request);
    PL_RUN(test_many_streams_and_idle_connections);
    PL_RUN(test_overload_503);
    PL_RUN(test_drain);
    PL_RUN(test_engine_failure_errors);
    PL_RUN(test_prompts_beyond_admission);
    PL_RUN(test_vocab_gap_validation);
    PL_RUN(test_refused_before_body);
    PL_RUN(test_nul_bytes_and_framing);
    PL_RUN(test_header_deadline);
    PL_RUN(test_connection_limit_not_held);
    PL_RUN(test_handlers_off_event_loop);
    PL_RUN(test_client_gone_while_queued);
    PL_RUN(test_fallback_and_redirect);
    pl_tokenizer_free(tok);
    return pl_test_summary();
}
