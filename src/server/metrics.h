/*
 * metrics.h -- the server's Prometheus metrics under vLLM's names.
 *
 * Owns: counters and histograms fed by the engine thread (one observation per
 * routed delta, see pl_metrics_observe) and their rendering in Prometheus'
 * text exposition format 0.0.4, so vLLM dashboards work unchanged. Names,
 * labels (model_name, engine) and histogram buckets are vLLM v1's
 * (vllm/v1/metrics/loggers.py). Gauges (running, waiting, KV usage) and the
 * preemption counter come from the engine stats passed to the renderer.
 * Thread-safe: one mutex around all state.
 */
#ifndef PL_SERVER_METRICS_H
#define PL_SERVER_METRICS_H

#include "engine/async_engine.h"

#include <stddef.h>

struct pl_metrics;

/* model_name labels every series. NULL on out-of-memory. */
struct pl_metrics *pl_metrics_new(const char *model_name);
void pl_metrics_free(struct pl_metrics *m); /* NULL is a no-op */

/* Records one routed delta (use as the async engine's observe callback). */
void pl_metrics_observe(void *metrics, const struct pl_request_output *o);

/* Renders the text exposition into *out (malloc'ed, NUL-terminated). */
pl_status pl_metrics_render(struct pl_metrics *m, const struct pl_llm_stats *st, char **out,
                            size_t *len, struct pl_err *err);

#endif
