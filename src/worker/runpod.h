/*
 * runpod.h -- the RunPod Serverless worker (docs/runpod.md; the protocol
 * reference is docs/runpod-protocol.md, cited as "spec N.M"): configuration, the protocol's pure rules
 * (URL templating, the stream chunk schedule, the result-post retry policy,
 * take-response classification, input-mode selection), the job runner that
 * turns one job input into chunks and a final result through the engine
 * thread, and the production job loop.
 *
 * Files: runpod.c (config, pure rules, HTTP job loop, heartbeat, stop
 * channel), handlers.c (input forms -> engine requests -> output JSON),
 * local_api.c (the SDK's local test API). The engine is driven exactly as
 * the OpenAI server drives it: one async engine thread
 * (src/engine/async_engine.h) and, for the OpenAI-route form, the server's
 * transport-independent request layer (src/server/openai.h).
 */
#ifndef PL_WORKER_RUNPOD_H
#define PL_WORKER_RUNPOD_H

#include "pagellm.h"
#include "util/err.h"

#include <curl/curl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* The SDK version whose behaviour the worker mirrors (sent as runpod_version). */
#define PL_RP_SDK_VERSION "1.12.0"

/* ---- configuration (spec 1.2, 4.7) ---- */

enum pl_rp_profile { PL_RP_PROFILE_VLLM, PL_RP_PROFILE_SIMPLE_BATCH, PL_RP_PROFILE_SIMPLE_STREAM };

struct pl_rp_config {
    /* platform */
    char *get_job, *post_output, *post_stream, *ping; /* URL templates; NULL: unset */
    char *api_key;             /* "" when unset */
    char *worker_id;           /* RUNPOD_POD_ID or a random UUID4 */
    char *endpoint_id;         /* NULL: unset (plain log lines) */
    char *hostname;            /* RUNPOD_POD_HOSTNAME or "unknown" */
    int ping_interval_ms;      /* RUNPOD_PING_INTERVAL, clamped >= 1000 unless a test knob */
    int realtime_port;         /* RUNPOD_REALTIME_PORT (0 off) */
    /* worker */
    int max_concurrency;       /* MAX_CONCURRENCY (30) */
    double batch_max, batch_min, batch_growth; /* DEFAULT_BATCH_SIZE 50, MIN_BATCH_SIZE 1, growth 3 */
    bool raw_openai_output;    /* RAW_OPENAI_OUTPUT (true) */
    char *served_model_name;   /* OPENAI_SERVED_MODEL_NAME_OVERRIDE, else the model path */
    char *response_role;       /* OPENAI_RESPONSE_ROLE ("assistant") */
    char *custom_chat_template;/* CUSTOM_CHAT_TEMPLATE (template source), or NULL */
    enum pl_rp_profile profile;/* ENGINE_COMPAT_PROFILE */
    bool refresh_worker;       /* RP_REFRESH_WORKER */
    bool return_aggregate;     /* aggregate stream chunks in the final post (true, as worker-vllm) */
    /* test knobs (docs/runpod.md "Testing") */
    int take_timeout_ms;       /* PL_RUNPOD_TAKE_TIMEOUT_MS: long-poll abandonment (90000) */
    int backoff_429_ms;        /* PL_RUNPOD_BACKOFF_MS: 429 back-off (5000) */
    int retry_scale_pct;       /* PL_RUNPOD_RETRY_SCALE_PCT: scales the 2 s / 3 s post waits (100) */
};

/* Reads the environment into c (every string owned; pl_rp_config_fini). */
pl_status pl_rp_config_from_env(struct pl_rp_config *c, struct pl_err *err);
void pl_rp_config_fini(struct pl_rp_config *c);

/* A random UUID4 string (RUNPOD_POD_ID's default, local job ids). malloc'd; NULL: out of memory. */
char *pl_rp_uuid4(void);

/* ---- pure protocol rules ---- */

/*
 * Expands a URL template (spec 1.3): "$RUNPOD_POD_ID" -> worker_id first, then
 * "$ID" -> id (the worker id in the take URL, the job id in result URLs).
 * Job ids are percent-encoded outside the URL-unreserved set. Returns a
 * malloc'd string or NULL (out of memory).
 */
char *pl_rp_url_expand(const char *tmpl, const char *worker_id, const char *id);
/* url + "&" + query, or "?" when url has none. malloc'd. */
char *pl_rp_url_append(const char *url, const char *query);
/* url with the first occurrence of from replaced by to (NULL when absent). malloc'd. */
char *pl_rp_url_replace(const char *url, const char *from, const char *to);

/*
 * worker-vllm's stream batch-size schedule (spec 4.5): dynamic iff growth > 1,
 * min >= 1 and max > min; then sizes min, min*g, ... capped at max; else max.
 */
struct pl_rp_schedule {
    double max, min, growth, size;
    bool dynamic;
};
void pl_rp_schedule_init(struct pl_rp_schedule *s, double max, double min, double growth);
/* The current chunk's size (elements). */
double pl_rp_schedule_size(const struct pl_rp_schedule *s);
/* Call after each emitted chunk. */
void pl_rp_schedule_next(struct pl_rp_schedule *s);

/*
 * The result/stream post retry policy: given attempts made so far (>= 1), how
 * many of them were answered >= 500 (the last one included), the last outcome
 * (HTTP status, or 0 for a network failure) and a 429's Retry-After in seconds
 * (0: none), the wait in ms before the next attempt, or -1 to stop (the
 * caller then logs the job id: the result is dropped).
 *  - >= 500: the SDK's FibonacciRetry(attempts=3) (spec 1.7, RS14/RS15): the
 *    third such answer is final; waits 2000 then 3000 ms.
 *  - 429 and network failures (connection refused or reset mid-post, a job
 *    server restarting): an improvement over the SDK, which drops the result
 *    at once: the Fibonacci waits go on (2, 3, 5, 8, 13, 21 s, then 30 s) for
 *    up to PL_RP_POST_MAX_ATTEMPTS attempts (about 2.5 minutes in all); a
 *    longer Retry-After is honoured, up to 60 s.
 *  - any other answer (2xx-4xx): final.
 * The Fibonacci waits are scaled by scale_pct (a test knob); Retry-After is not.
 */
#define PL_RP_POST_MAX_ATTEMPTS 10
int pl_rp_post_retry_delay_ms(int attempts, int server_errors, long status, long retry_after_s,
                              int scale_pct);

/*
 * OpenAI-route streaming (spec 4.4): Server-Sent Events from the OpenAI layer
 * are grouped into stream chunks of k events, k following the batch schedule.
 * raw: each chunk is one string, the events' text as emitted ("data: ...\n\n",
 * the last chunk ending with "data: [DONE]\n\n"); else each chunk is an array
 * of the parsed event objects and [DONE] is dropped. Feed bytes in any pieces;
 * complete chunks are appended to out (a JSON array).
 */
struct pl_rp_sse_batcher {
    struct pl_rp_schedule sched;
    bool raw;
    char *pending;             /* bytes of an incomplete event */
    size_t n_pending;
    char *chunk;               /* raw: the current chunk's text */
    size_t n_chunk;
    json_t *events;            /* parsed: the current chunk's events */
    double count;              /* events in the current chunk */
};
void pl_rp_sse_init(struct pl_rp_sse_batcher *b, const struct pl_rp_schedule *sched, bool raw);
/* false: out of memory. */
bool pl_rp_sse_feed(struct pl_rp_sse_batcher *b, const char *data, size_t len, json_t *out);
/* Emits the remainder (a final incomplete event counts as one). */
bool pl_rp_sse_finish(struct pl_rp_sse_batcher *b, json_t *out);
void pl_rp_sse_fini(struct pl_rp_sse_batcher *b);

/* What to do with a take (or stop) response (spec 1.5). */
enum pl_rp_take_verdict {
    PL_RP_TAKE_NONE,        /* 204 / 400: poll again at once */
    PL_RP_TAKE_BACKOFF_429, /* back off (5 s) */
    PL_RP_TAKE_ERROR,       /* other >= 400 or network: sleep >= 1 s */
    PL_RP_TAKE_ERROR_AUTH,  /* 401/403/404: sleep 5 s */
    PL_RP_TAKE_IGNORED,     /* 2xx but not a JSON body: poll again */
    PL_RP_TAKE_JOBS         /* 2xx JSON: parse jobs */
};
enum pl_rp_take_verdict pl_rp_take_classify(long status, const char *content_type, size_t body_len);

/*
 * How long the taker waits before its next take (spec 1.5, TK1/TK6/TK7/TK12):
 * 0 -- poll again at once -- after 204/400, an ignored body, jobs, and a long
 * poll abandoned after take_timeout_ms (timed_out); backoff_429_ms after a
 * 429; 5000 after 401/403/404; 1000 after any other error.
 */
long pl_rp_take_wait_ms(enum pl_rp_take_verdict v, bool timed_out, int backoff_429_ms);

/*
 * Parses a take body into jobs: an object (one job) or an array. Every job
 * must be an object with a string "id" and an "input"; bad entries are
 * skipped with a message in *why (static text). Returns a new array of the
 * valid job objects (possibly empty), or NULL when the body is not JSON.
 */
json_t *pl_rp_parse_jobs(const char *body, size_t len, const char **why);

/* ---- the job runner (handlers.c) ---- */

enum pl_rp_mode {
    PL_RP_MODE_NONE,          /* an error before a mode was chosen */
    PL_RP_MODE_SIMPLE_BATCH,
    PL_RP_MODE_SIMPLE_STREAM,
    PL_RP_MODE_VLLM_NATIVE,
    PL_RP_MODE_OPENAI
};

/*
 * Spec 5.3's mode rules R1-R9. On PL_RP_MODE_NONE *error is the static
 * message to fail the job with.
 */
enum pl_rp_mode pl_rp_choose_mode(const json_t *input, enum pl_rp_profile profile,
                                  const char **error);

/* True for the generator kinds (chunks, then a final post with isStream=true). */
bool pl_rp_mode_is_generator(enum pl_rp_mode m);

struct pl_async_engine; /* engine/async_engine.h */
struct pl_openai;       /* server/openai.h */

struct pl_rp_ctx {
    const struct pl_rp_config *cfg;
    struct pl_llm *llm;        /* read-only use off the engine thread (defaults, vocab) */
    struct pl_async_engine *ae; /* the engine thread that owns llm */
    struct pl_openai *oai;     /* the OpenAI layer over ae: OpenAI-route jobs, prompt
                                  tokenization and chat templates for every form */
};

/*
 * Receives one job's stream chunks in order. Returns false when the job was
 * stopped (the runner aborts its requests and returns at once).
 */
typedef bool (*pl_rp_chunk_fn)(void *user, json_t *chunk);

struct pl_rp_result {
    enum pl_rp_mode mode;
    bool generator;            /* final post with isStream=true, output = chunk list */
    bool stopped;              /* the job was stopped: post nothing */
    json_t *output;            /* non-generator: the output; generator: array of chunks */
    char *error;               /* malloc'd string: the job failed (output NULL) */
};

/*
 * Runs one job input to completion. Chunks go to on_chunk (may be NULL) as
 * they are produced; the result is filled in either way (free with
 * pl_rp_result_fini). job_id is the job's id (for the caller's logs). When
 * *stop_flag becomes non-zero (any thread may set it) the job's engine
 * requests are aborted within about 50 ms and res->stopped is set.
 */
void pl_rp_run_job(struct pl_rp_ctx *ctx, const char *job_id, const json_t *input,
                   pl_rp_chunk_fn on_chunk, void *user, volatile int *stop_flag,
                   struct pl_rp_result *res);
void pl_rp_result_fini(struct pl_rp_result *res);

/* ---- logging (spec 1.11) ---- */

enum pl_rp_log_level { PL_RP_LOG_DEBUG, PL_RP_LOG_INFO, PL_RP_LOG_WARN, PL_RP_LOG_ERROR };
/* JSON lines on stdout when RUNPOD_ENDPOINT_ID is set, else "LEVEL | id | msg" on stderr. */
void pl_rp_log(const struct pl_rp_config *cfg, enum pl_rp_log_level level, const char *job_id,
               const char *batch_id, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- the production worker (runpod.c) ---- */

/* Runs the job loop until shutdown (SIGTERM/SIGINT) or refresh; returns the exit code. */
int pl_rp_worker_run(struct pl_rp_ctx *ctx);

/*
 * The heartbeat (spec 1.8): a thread that pings every ping_interval_ms with
 * the ids held_ids(user) returns (malloc'd, comma-separated, not encoded; ""
 * when none). It never takes a lock the engine thread holds. While the engine
 * loop is stalled (pl_async_engine_is_healthy false, as the server's /health
 * says 503) no ping is sent, so the platform sees the worker as unhealthy;
 * pings resume when the loop moves again. NULL when the heartbeat is not
 * configured (ping URL, RUNPOD_AI_API_KEY and RUNPOD_POD_ID all needed).
 */
struct pl_rp_heartbeat;
struct pl_rp_heartbeat *pl_rp_heartbeat_start(struct pl_rp_ctx *ctx,
                                              char *(*held_ids)(void *user), void *user);
void pl_rp_heartbeat_stop(struct pl_rp_heartbeat *h); /* joins; NULL is a no-op */

/* The unhealthy report (spec 1.8) before exiting on a failed model load. */
void pl_rp_report_unhealthy(const struct pl_rp_config *cfg, const char *check, const char *reason);

/* ---- the local test API (local_api.c) ---- */

struct pl_rp_api_opts {
    const char *host;          /* "localhost" */
    int port;                  /* 8000; 0: an ephemeral port (logged) */
    int concurrency;           /* HTTP event-loop threads (1: the SDK's default; at least 2 run) */
    long max_queue;            /* jobs waiting to run (/run stash + blocked calls), 1024 */
    size_t max_queue_bytes;    /* their request bodies' bytes, 256 MiB */
};

/* The defaults above (the flags' defaults in docs/runpod.md). */
void pl_rp_api_opts_default(struct pl_rp_api_opts *o);

/*
 * A webhook URL the local API accepts: http:// or https:// only (any other
 * scheme, e.g. gopher:// or file://, could make libcurl send raw bytes to a
 * local port). NULL when url is acceptable, else the static reason.
 */
const char *pl_rp_webhook_url_problem(const char *url);

/*
 * Restricts a curl handle to HTTP(S), redirects included; every curl handle
 * given a URL from outside (job server, webhook) goes through it.
 */
void pl_rp_curl_http_only(CURL *curl);

/* Serves the SDK's local API until SIGTERM/SIGINT; returns the exit code. */
int pl_rp_local_api_run(struct pl_rp_ctx *ctx, const struct pl_rp_api_opts *o);

#endif
