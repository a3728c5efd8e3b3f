/*
 * serving_log.h -- vLLM-style serving logs: the periodic stats line and the
 * optional per-request lines.
 *
 * Owns: token and prefix-cache counters fed by the engine thread (one
 * observation per routed delta, like the metrics), a thread that every
 * interval turns them into vLLM's stats line:
 *
 *   Avg prompt throughput: X tokens/s, Avg generation throughput: Y tokens/s,
 *   Running: N reqs, Swapped: 0 reqs, Pending: M reqs, GPU KV cache usage: P%,
 *   Prefix cache hit rate: H%
 *
 * and the per-request line formats. Definitions: prompt throughput counts the
 * prompt tokens of requests whose first delta arrived in the interval (a
 * request's prefill ends there), generation throughput the tokens sampled in
 * it, both over the interval's length; Running / Pending / KV usage are the
 * engine's at the end of the interval (KV usage: used / total blocks; the
 * CPU backend's pool counts as "GPU" as in vLLM's line); Swapped is always 0
 * (no swapping: preemption recomputes); the prefix-cache hit rate is over the
 * most recent 1000 requests' prompts (cached tokens / prompt tokens), as
 * vLLM v1 reports it. As vLLM, a line is printed (INFO) only when this or the
 * previous interval had prompt or generation throughput, so an idle server is
 * quiet and the last line after a burst shows the zeros.
 *
 * Per-request lines (--enable-log-requests): "Received request ID: ..." with
 * the route, prompt count and tokens and the sampling parameters, and
 * "Finished request ID: ...". The prompt text is never logged unless
 * max_log_len >= 0 (--max-log-len): then at most that many bytes of it.
 *
 * Thread-safe: one mutex around the counters.
 */
#ifndef PL_SERVER_SERVING_LOG_H
#define PL_SERVER_SERVING_LOG_H

#include "engine/async_engine.h"

#include <stdbool.h>
#include <stddef.h>

struct pl_serving_log_params {
    double interval_s;          /* the stats line's period (10, vLLM's) */
    bool stats;                 /* false (--disable-log-stats): no stats thread */
    struct pl_async_engine *ae; /* borrowed: running / pending / KV; may be NULL */
};

void pl_serving_log_params_default(struct pl_serving_log_params *p);

struct pl_serving_log;

pl_status pl_serving_log_new(const struct pl_serving_log_params *p, struct pl_serving_log **out,
                             struct pl_err *err);
void pl_serving_log_free(struct pl_serving_log *s); /* stops the thread; NULL is a no-op */

/* Sets the engine whose stats the line shows (it is created after the log: the log
 * observes its deltas). */
void pl_serving_log_set_engine(struct pl_serving_log *s, struct pl_async_engine *ae);

/* Records one routed delta (an async engine observe callback; see serve.c). */
void pl_serving_log_observe(void *serving_log, const struct pl_request_output *o);

/*
 * One interval ending at `now` (monotonic seconds): true and the line in buf
 * when it is due (see above). The thread calls it; tests call it directly.
 */
bool pl_serving_log_tick(struct pl_serving_log *s, double now, char *buf, size_t cap);

/* One stats line from its numbers (no trailing newline). */
void pl_serving_log_format(char *buf, size_t cap, double prompt_tps, double gen_tps, int running,
                           int swapped, int pending, double kv_usage_pct, double hit_rate_pct);

/*
 * Per-request lines, logged at INFO. id: the response id; route: "/v1/...";
 * params: a JSON text of the request's parameters (may be NULL); prompt: the
 * prompt text (may be NULL), logged only when max_log_len >= 0, cut to that
 * many bytes (at a UTF-8 boundary) and JSON-escaped so a line stays one line.
 */
void pl_serving_log_received(const char *id, const char *route, int n_prompts,
                             long long prompt_tokens, const char *params, const char *prompt,
                             size_t prompt_len, int max_log_len);
void pl_serving_log_finished(const char *id, const char *outcome, long long prompt_tokens,
                             long long completion_tokens, double seconds);

#endif
