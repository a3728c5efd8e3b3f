/*
 * serve.c -- `pagellm serve`: the OpenAI-compatible HTTP server.
 *
 * Owns: the serve subcommand's flags (vLLM's names where vLLM has one), the
 * start-up order (listening socket -> model -> engine thread -> routes ->
 * serving: the port is bound first, as vLLM does, so "address in use" comes
 * at once rather than after a long model load; connections made meanwhile
 * wait in the listen backlog), the signal handling and the graceful shutdown:
 *
 *   SIGTERM / SIGINT -> stop accepting (listening socket closed, requests on
 *   open connections get 503) -> wait for in-flight requests up to
 *   --shutdown-grace-period seconds -> abort the rest (their streams end with
 *   finish_reason "abort") -> close every connection -> exit 0.
 *
 * Signals are blocked in every thread and taken synchronously by the main
 * thread with sigwait, so no handler runs inside library code.
 */
#include "cli/cli.h"
#include "engine/async_engine.h"
#include "engine/llm_internal.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/openai.h"
#include "server/reasoning.h"
#include "server/serving_log.h"
#include "tokenizer/tokenizer.h"
#include "util/log.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct serve_opts {
    struct pl_cli_flags fl;
    struct pl_http_params http;
    const char **names; /* [n_names] --served-model-name values */
    int n_names;
    const char *chat_template;
    int max_pending;
    double grace_s;
    double stall_s;
    char *origins; /* normalized --allowed-origins etc. (owned) */
    char *methods;
    char *headers;
    const char *reasoning_parser;
    struct pl_pooling_params pooling; /* type 0: the default */
    bool log_stats;
    double log_stats_interval_s;
    bool log_requests;
    int max_log_len;                  /* 0: no prompt text in request lines */
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm serve [--model] DIR|ORG/NAME [options]\n\n"
            "  --model DIR|ORG/NAME        a model directory or a Hugging Face Hub model id\n"
            "                              (or $PAGELLM_MODEL)\n\n"
            "An OpenAI-compatible HTTP server: /v1/completions, /v1/chat/completions,\n"
            "/v1/embeddings, /v1/responses, /v1/models[/ID], /tokenize, /detokenize, /health,\n"
            "/metrics, /version.\n\n"
            "server options:\n"
            "  --host HOST                 address to bind (default 127.0.0.1)\n"
            "  --port N                    port (default 8000; 0 picks a free one)\n"
            "  --served-model-name NAME... names clients use for the model (default: --model);\n"
            "                              the first is the one responses report\n"
            "  --api-key KEY               require 'Authorization: Bearer KEY' on /v1/\n"
            "                              (default: $PAGELLM_API_KEY)\n"
            "  --chat-template T           a Jinja chat template (file or inline) overriding "
            "the model's\n"
            "  --allowed-origins LIST      CORS origins: JSON list or comma-separated "
            "(default [\"*\"])\n"
            "  --allowed-methods LIST      CORS methods (default [\"*\"])\n"
            "  --allowed-headers LIST      CORS headers (default [\"*\"])\n"
            "  --allow-credentials         CORS: allow credentials\n"
            "  --timeout-keep-alive S      the header deadline: a request's whole header must "
            "arrive\n"
            "                              within S seconds of the connection opening or its\n"
            "                              previous request ending (default 5)\n"
            "  --timeout-idle S            a stalled request body or response (default 60)\n"
            "  --max-body-bytes N          413 above this (default 33554432)\n"
            "  --max-header-bytes N        431 above this (default 65536)\n"
            "  --max-connections N         open connections (default 10000)\n"
            "  --http-threads N            HTTP event-loop threads (default 2)\n"
            "  --handler-threads N         threads parsing and tokenizing request bodies "
            "(default 4)\n"
            "  --max-pending-requests N    503 when this many requests are unfinished "
            "(default 4096)\n"
            "  --shutdown-grace-period S   on SIGTERM/SIGINT, let requests finish this long "
            "(default 30)\n"
            "  --health-stall-timeout S    /health is 503 when the engine loop has not "
            "stepped for S\n"
            "                              seconds with work pending (default 30)\n"
            "  --reasoning-parser NAME     qwen3 or deepseek_r1: <think>...</think> goes to\n"
            "                              reasoning_content in chat answers and deltas\n"
            "  --pooling last|mean         /v1/embeddings: the last token's or the mean final "
            "hidden\n"
            "                              state, L2-normalized (default last)\n"
            "  --override-pooler-config J  vLLM's form: '{\"pooling_type\": \"MEAN\", "
            "\"normalize\": true}'\n"
            "  --task auto|generate|embed  accepted for vLLM compatibility (every route is "
            "served)\n"
            "  --disable-log-stats         no periodic stats line\n"
            "  --log-stats-interval S      seconds between stats lines (default 10)\n"
            "  --enable-log-requests       a log line per request received and finished "
            "(no prompt text)\n"
            "  --disable-log-requests      (the default) no per-request lines\n"
            "  --max-log-len N             with --enable-log-requests: also log the first N "
            "bytes of\n"
            "                              the prompt (default: the prompt is never logged)\n\n"
            "%s%s"
            "  -h, --help                  this help\n",
            pl_cli_flags_help_server_sampling(), pl_cli_flags_help_engine());
}

static int bad(const char *what, const char *val)
{
    fprintf(stderr, "pagellm serve: %s '%s'\n(see pagellm serve --help)\n", what, val ? val : "");
    return 2;
}

static bool parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
    char *end;
    errno = 0;
    if (!s || *s == '-')
        return false;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0) || v > 1e7)
        return false;
    *out = v;
    return true;
}

/* '["a", "b"]' (vLLM's JSON form) or 'a,b' -> "a,b"; '["*"]' -> "*". */
static char *normalize_list(const char *v)
{
    size_t n = strlen(v);
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (const char *p = v; *p; p++) {
        if (*p == '[' || *p == ']' || *p == '"' || *p == '\'')
            continue;
        out[o++] = *p;
    }
    out[o] = '\0';
    return out;
}

/* --pooling: "last" / "mean" (vLLM's pooling_type names too, any case). */
static bool pooling_type_from(const char *v, enum pl_pooling_type *t)
{
    if (!strcasecmp(v, "last"))
        *t = PL_POOLING_LAST;
    else if (!strcasecmp(v, "mean"))
        *t = PL_POOLING_MEAN;
    else
        return false;
    return true;
}

/* vLLM's --override-pooler-config '{"pooling_type": "MEAN", "normalize": true}'. */
static int parse_pooler_config(const char *v, struct pl_pooling_params *pp)
{
    json_error_t je;
    json_t *j = json_loads(v, 0, &je);
    int rc = 0;
    if (!json_is_object(j)) {
        rc = bad("--override-pooler-config is not a JSON object:", v);
        goto out;
    }
    if (!pp->type)
        pl_pooling_params_default(pp);
    const char *k;
    json_t *x;
    json_object_foreach(j, k, x)
    {
        if (!strcmp(k, "pooling_type") && json_is_string(x) &&
            pooling_type_from(json_string_value(x), &pp->type))
            continue;
        if (!strcmp(k, "normalize") && json_is_boolean(x)) {
            pp->normalize = json_is_true(x);
            continue;
        }
        rc = bad(!strcmp(k, "pooling_type")
                     ? "--override-pooler-config: pooling_type must be \"LAST\" or \"MEAN\" "
                       "(decoder models):"
                 : !strcmp(k, "normalize")
                     ? "--override-pooler-config: normalize must be true or false:"
                     : "--override-pooler-config: unsupported key (pooling_type, normalize):",
                 k);
        goto out;
    }
out:
    json_decref(j);
    return rc;
}

/* Returns 0, -1 for --help, or an exit code. */
static int parse_args(int argc, char **argv, struct serve_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        char name[64];
        const char *flag = pl_cli_split_flag(argv[i], name, sizeof(name), &val);
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help"))
            return -1;
        if (flag[0] != '-') {
            if (o->fl.llm.model)
                return bad("unexpected argument", flag);
            o->fl.llm.model = flag; /* `pagellm serve DIR`, as `vllm serve MODEL` */
            continue;
        }
        if (!strcmp(flag, "--allow-credentials")) {
            o->http.allow_credentials = true;
            continue;
        }
        if (!strcmp(flag, "--disable-log-stats") || !strcmp(flag, "--enable-log-requests") ||
            !strcmp(flag, "--disable-log-requests")) {
            if (val)
                return bad("this flag takes no value:", argv[i]);
            if (!strcmp(flag, "--disable-log-stats"))
                o->log_stats = false;
            else
                o->log_requests = !strcmp(flag, "--enable-log-requests");
            continue;
        }
        if (!val && pl_cli_flags_bool(&o->fl, flag))
            continue; /* per-request ones are refused by pl_cli_flags_check */
        if (!val) {
            if (i + 1 >= argc)
                return bad("missing value for", flag);
            val = argv[++i];
        }
        unsigned long u;
        if (!strcmp(flag, "--served-model-name")) {
            /* one or more names: this value and the non-flag arguments after it */
            for (;;) {
                const char **names = realloc(o->names, sizeof(char *) * (size_t)(o->n_names + 1));
                if (!names)
                    return 1;
                o->names = names;
                o->names[o->n_names++] = val;
                if (i + 1 < argc && argv[i + 1][0] != '-')
                    val = argv[++i];
                else
                    break;
            }
        } else if (!strcmp(flag, "--host")) {
            o->http.host = val;
        } else if (!strcmp(flag, "--port")) {
            if (!parse_uint(val, 0, 65535, &u))
                return bad("--port is not a port number:", val);
            o->http.port = (int)u;
        } else if (!strcmp(flag, "--api-key")) {
            o->http.api_key = val;
        } else if (!strcmp(flag, "--chat-template")) {
            o->chat_template = val;
        } else if (!strcmp(flag, "--allowed-origins")) {
            free(o->origins);
            o->http.allowed_origins = o->origins = normalize_list(val);
        } else if (!strcmp(flag, "--allowed-methods")) {
            free(o->methods);
            o->http.allowed_methods = o->methods = normalize_list(val);
        } else if (!strcmp(flag, "--allowed-headers")) {
            free(o->headers);
            o->http.allowed_headers = o->headers = normalize_list(val);
        } else if (!strcmp(flag, "--timeout-keep-alive")) {
            if (!parse_uint(val, 1, 86400, &u))
                return bad("--timeout-keep-alive is not a number of seconds:", val);
            o->http.timeout_keep_alive_s = (unsigned)u;
        } else if (!strcmp(flag, "--timeout-idle")) {
            if (!parse_uint(val, 1, 86400, &u))
                return bad("--timeout-idle is not a number of seconds:", val);
            o->http.timeout_idle_s = (unsigned)u;
        } else if (!strcmp(flag, "--max-body-bytes")) {
            if (!parse_uint(val, 1024, 1ul << 40, &u))
                return bad("--max-body-bytes is not a size in bytes (>= 1024):", val);
            o->http.max_body_bytes = u;
        } else if (!strcmp(flag, "--max-header-bytes")) {
            if (!parse_uint(val, 1024, 1ul << 24, &u))
                return bad("--max-header-bytes is not a size in bytes (>= 1024):", val);
            o->http.max_header_bytes = u;
        } else if (!strcmp(flag, "--max-connections")) {
            if (!parse_uint(val, 1, 1000000, &u))
                return bad("--max-connections is not a count:", val);
            o->http.max_connections = (unsigned)u;
        } else if (!strcmp(flag, "--http-threads")) {
            if (!parse_uint(val, 1, 256, &u))
                return bad("--http-threads is not a count (1..256):", val);
            o->http.n_threads = (unsigned)u;
        } else if (!strcmp(flag, "--handler-threads")) {
            if (!parse_uint(val, 1, 256, &u))
                return bad("--handler-threads is not a count (1..256):", val);
            o->http.n_handler_threads = (unsigned)u;
        } else if (!strcmp(flag, "--max-pending-requests")) {
            if (!parse_uint(val, 1, 1000000, &u))
                return bad("--max-pending-requests is not a count:", val);
            o->max_pending = (int)u;
        } else if (!strcmp(flag, "--shutdown-grace-period")) {
            if (!parse_seconds(val, &o->grace_s))
                return bad("--shutdown-grace-period is not a number of seconds:", val);
        } else if (!strcmp(flag, "--health-stall-timeout")) {
            if (!parse_seconds(val, &o->stall_s) || o->stall_s <= 0)
                return bad("--health-stall-timeout is not a positive number of seconds:", val);
        } else if (!strcmp(flag, "--reasoning-parser")) {
            enum pl_reasoning_kind rk;
            if (!pl_reasoning_kind_from_name(val, &rk) || rk == PL_REASONING_NONE)
                return bad("--reasoning-parser must be qwen3 or deepseek_r1, not", val);
            o->reasoning_parser = val;
        } else if (!strcmp(flag, "--pooling")) {
            bool norm = o->pooling.type ? o->pooling.normalize : true;
            if (!pooling_type_from(val, &o->pooling.type))
                return bad("--pooling must be last or mean, not", val);
            o->pooling.normalize = norm;
        } else if (!strcmp(flag, "--override-pooler-config")) {
            int rc = parse_pooler_config(val, &o->pooling);
            if (rc)
                return rc;
        } else if (!strcmp(flag, "--task")) {
            if (strcmp(val, "auto") && strcmp(val, "generate") && strcmp(val, "embed") &&
                strcmp(val, "embedding"))
                return bad("--task must be auto, generate or embed (every route is served "
                           "either way), not",
                           val);
        } else if (!strcmp(flag, "--log-stats-interval")) {
            if (!parse_seconds(val, &o->log_stats_interval_s) || o->log_stats_interval_s < 0.01)
                return bad("--log-stats-interval is not a number of seconds (>= 0.01):", val);
        } else if (!strcmp(flag, "--max-log-len")) {
            if (!parse_uint(val, 0, 1ul << 30, &u))
                return bad("--max-log-len is not a number of bytes:", val);
            o->max_log_len = (int)u;
        } else {
            int rv = pl_cli_flags_value(&o->fl, "serve", flag, val);
            if (rv < 0)
                return 2;
            if (rv == 0)
                return bad("unknown option", argv[i]);
        }
    }
    int rc = pl_cli_flags_check(&o->fl, "serve", PL_CLI_SAMPLING_SERVER);
    if (rc)
        return rc;
    if (!o->fl.llm.model) {
        const char *env = getenv("PAGELLM_MODEL");
        o->fl.llm.model = env && *env ? env : NULL;
    }
    if (!o->fl.llm.model) {
        fprintf(stderr, "pagellm serve: no model: pass --model DIR (or DIR alone, or set "
                        "$PAGELLM_MODEL)\n(see pagellm serve --help)\n");
        return 2;
    }
    if (!o->http.api_key) {
        const char *env = getenv("PAGELLM_API_KEY");
        if (env && *env)
            o->http.api_key = env;
    }
    return 0;
}

/* A --chat-template value: a readable file's contents, else the text itself (as vLLM). */
static char *load_template(const char *v)
{
    struct stat sb;
    if (stat(v, &sb) == 0 && S_ISREG(sb.st_mode)) {
        FILE *f = fopen(v, "rb");
        if (!f)
            return NULL;
        char *buf = malloc((size_t)sb.st_size + 1);
        size_t n = buf ? fread(buf, 1, (size_t)sb.st_size, f) : 0;
        fclose(f);
        if (!buf)
            return NULL;
        buf[n] = '\0';
        return buf;
    }
    return strdup(v);
}

static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The engine's deltas go to the metrics and the serving log. */
struct observers {
    struct pl_metrics *metrics;
    struct pl_serving_log *log;
};

static void observe_all(void *user, const struct pl_request_output *o)
{
    struct observers *obs = user;
    pl_metrics_observe(obs->metrics, o);
    pl_serving_log_observe(obs->log, o);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int pl_cli_serve(int argc, char **argv)
{
    struct serve_opts o;
    memset(&o, 0, sizeof(o));
    pl_cli_flags_init(&o.fl);
    pl_http_params_default(&o.http);
    o.max_pending = 4096;
    o.grace_s = 30;
    o.stall_s = 30;
    o.log_stats = true;
    o.log_stats_interval_s = 10;
    const char *model_arg = NULL;
    char *model_dir = NULL;
    int rc = parse_args(argc, argv, &o);
    if (rc == -1) {
        usage(stdout);
        rc = 0;
        goto out_opts;
    }
    if (rc)
        goto out_opts;
    /* the port first: a port in use is reported before the model is looked at (or
     * downloaded) */
    struct pl_http_server *http = NULL;
    struct pl_err err = {0};
    if (pl_http_server_new(&o.http, &http, &err) != PL_STATUS_OK ||
        pl_http_server_listen(http, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm serve: %s\n", err.msg);
        pl_http_server_free(http);
        rc = 1;
        goto out_opts;
    }
    /* --model as given (a directory or a Hub id) names the model to clients, as in vLLM.
     * Resolved before signals are blocked, so Ctrl-C stops a download. */
    model_arg = o.fl.llm.model;
    if (pl_cli_check_model_dir("serve", model_arg) ||
        pl_cli_hub_model("serve", model_arg, o.fl.revision, o.fl.download_dir, false,
                         &model_dir, NULL)) {
        pl_http_server_free(http);
        rc = 1;
        goto out_opts;
    }
    o.fl.llm.model = model_dir;

    /* every thread created from here on inherits the blocked signals */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    rc = 1;
    struct pl_llm *llm = NULL;
    struct pl_tokenizer *tok = NULL;
    struct pl_metrics *metrics = NULL;
    struct pl_serving_log *slog = NULL;
    struct pl_async_engine *ae = NULL;
    struct pl_openai *oai = NULL;
    char *tmpl = NULL;
    struct pl_sampling_params defaults;
    pl_sampling_params_default(&defaults);

    pl_status lst = pl_llm_new(&o.fl.llm, &llm);
    if (lst != PL_STATUS_OK) {
        /* the library's messages name the file or field at fault */
        fprintf(stderr, "pagellm serve: %s\n", pl_llm_errmsg(llm));
        rc = pl_cli_exit_code(lst);
        goto out;
    }
    const char *tok_dir = o.fl.llm.tokenizer ? o.fl.llm.tokenizer : o.fl.llm.model;
    if (pl_tokenizer_load(tok_dir, &tok, &err) != PL_STATUS_OK) {
        tok = NULL;
        fprintf(stderr, "pagellm serve: note: no tokenizer (%s): only token-id prompts work\n",
                err.msg);
    }
    if (o.chat_template && !(tmpl = load_template(o.chat_template))) {
        fprintf(stderr, "pagellm serve: cannot read --chat-template %s\n", o.chat_template);
        goto out;
    }
    const char *model_name = o.n_names ? o.names[0] : model_arg;
    const char *const *names = o.n_names ? o.names : &model_arg;
    int n_names = o.n_names ? o.n_names : 1;
    metrics = pl_metrics_new(model_name);
    if (!metrics) {
        fprintf(stderr, "pagellm serve: out of memory\n");
        goto out;
    }
    struct pl_serving_log_params slp;
    pl_serving_log_params_default(&slp);
    slp.stats = o.log_stats;
    slp.interval_s = o.log_stats_interval_s;
    if (pl_serving_log_new(&slp, &slog, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm serve: %s\n", err.msg);
        goto out;
    }
    struct observers obs = {metrics, slog};
    struct pl_async_engine_params ap;
    pl_async_engine_params_default(&ap);
    ap.max_pending = o.max_pending;
    ap.stall_timeout_s = o.stall_s;
    ap.observe = observe_all;
    ap.observe_user = &obs;
    if (pl_llm_start_async(llm, &ap, &ae, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm serve: %s\n", err.msg);
        goto out;
    }
    pl_serving_log_set_engine(slog, ae);
    pl_llm_default_sampling_params(llm, &defaults);
    struct pl_openai_params op = {.served_names = names,
                                  .n_served_names = n_names,
                                  .model_root = model_arg,
                                  .max_model_len = pl_llm_max_model_len(llm),
                                  .tok = tok,
                                  .chat_template = tmpl,
                                  .defaults = &defaults,
                                  .vocab_size = pl_llm_vocab_size(llm),
                                  .ae = ae,
                                  .metrics = metrics,
                                  .reasoning_parser = o.reasoning_parser,
                                  .pooling = o.pooling,
                                  .log_requests = o.log_requests,
                                  .max_log_len = o.max_log_len};
    if (pl_openai_new(&op, &oai, &err) != PL_STATUS_OK ||
        pl_openai_register(oai, http, &err) != PL_STATUS_OK ||
        pl_http_server_start(http, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm serve: %s\n", err.msg);
        goto out;
    }
    fprintf(stderr,
            "pagellm serve: serving %s as '%s' (max_model_len %d) on http://%s:%d%s\n",
            o.fl.llm.model, model_name, pl_llm_max_model_len(llm), o.http.host,
            pl_http_server_port(http), o.http.api_key ? " (API key required)" : "");
    fflush(stderr);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "pagellm serve: %s: draining (grace period %.0f s)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", o.grace_s);
    pl_http_server_drain(http);
    double deadline = now_s() + o.grace_s;
    while (pl_http_server_num_active(http) > 0 && now_s() < deadline)
        sleep_ms(20);
    if (pl_http_server_num_active(http) > 0) {
        fprintf(stderr, "pagellm serve: aborting %d requests still running\n",
                pl_http_server_num_active(http));
        pl_async_engine_abort_all(ae);
        for (int i = 0; i < 500 && pl_http_server_num_active(http) > 0; i++)
            sleep_ms(10);
    }
    rc = 0;
    fprintf(stderr, "pagellm serve: stopped\n");
out:
    pl_http_server_free(http);
    if (llm)
        pl_llm_stop_async(llm); /* the engine thread (ae) */
    pl_serving_log_free(slog); /* after the engine thread: it observes into the log */
    pl_openai_free(oai);
    pl_metrics_free(metrics);
    pl_sampling_params_fini(&defaults);
    pl_tokenizer_free(tok);
    pl_llm_free(llm);
    free(tmpl);
out_opts:
    free(model_dir);
    free(o.names);
    free(o.origins);
    free(o.methods);
    free(o.headers);
    pl_cli_flags_fini(&o.fl);
    return rc;
}
