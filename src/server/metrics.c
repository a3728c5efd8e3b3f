/*
 * metrics.c -- vLLM-named Prometheus metrics (see metrics.h).
 *
 * Definitions, as vLLM v1 observes them:
 *   time_to_first_token   first token routed - request arrival (submit)
 *   inter_token_latency   between consecutive token-carrying deltas of a request
 *                         (one observation per engine step, as vLLM records it);
 *                         the same observations are exported a second time as
 *                         the older vllm:time_per_output_token_seconds
 *   e2e_request_latency   finished delta - arrival
 *   request_queue_time    start of the first step that scheduled it - arrival
 *                         (vLLM's time_in_queue)
 *   prefix_cache_queries / hits   prompt tokens looked up / served from the cache
 * Requests the engine refused or failed (error deltas) count in no success
 * counter; a request counts under the reason the engine gave its last delta
 * (pl_request_output.finish_reason), the one its client saw.
 */
#include "server/metrics.h"

#include "server/sbuf.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BUCKETS 24

struct histogram {
    const char *name;
    const char *help;
    const double *bounds; /* [n_bounds] ascending; +Inf is implicit */
    int n_bounds;
    uint64_t counts[MAX_BUCKETS + 1]; /* per bucket, not cumulative; last is +Inf */
    double sum;
    uint64_t count;
};

static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
                                     0.25,  0.5,   0.75, 1.0,  2.5,  5.0,  7.5,  10.0,
                                     20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
static const double itl_bounds[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                    0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                    7.5,  10.0,  20.0, 40.0,  80.0};
static const double latency_bounds[] = {0.3,  0.5,  0.8,  1.0,   1.5,   2.0,   2.5,
                                        5.0,  10.0, 15.0, 20.0,  30.0,  40.0,  50.0,
                                        60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

enum { H_TTFT, H_ITL, H_TPOT, H_E2E, H_QUEUE, N_HIST };

struct pl_metrics {
    pthread_mutex_t mu;
    char *labels; /* model_name="...",engine="0" (escaped) */
    uint64_t prompt_tokens, generation_tokens;
    uint64_t success[3]; /* stop, length, abort */
    uint64_t prefix_queries, prefix_hits;
    struct histogram h[N_HIST];
};

static void hist_init(struct histogram *h, const char *name, const char *help,
                      const double *bounds, int n)
{
    memset(h, 0, sizeof(*h));
    h->name = name;
    h->help = help;
    h->bounds = bounds;
    h->n_bounds = n;
}

static void hist_observe(struct histogram *h, double v)
{
    int i = 0;
    while (i < h->n_bounds && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

struct pl_metrics *pl_metrics_new(const char *model_name)
{
    struct pl_metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    struct pl_sbuf b = {0};
    pl_sbuf_puts(&b, "model_name=\"");
    for (const char *c = model_name ? model_name : ""; *c; c++) {
        if (*c == '\\' || *c == '"')
            pl_sbuf_append(&b, "\\", 1);
        if (*c == '\n')
            pl_sbuf_puts(&b, "\\n");
        else
            pl_sbuf_append(&b, c, 1);
    }
    pl_sbuf_puts(&b, "\",engine=\"0\"");
    m->labels = pl_sbuf_take(&b, NULL);
    if (!m->labels) {
        free(m);
        return NULL;
    }
#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))
    hist_init(&m->h[H_TTFT], "vllm:time_to_first_token_seconds",
              "Histogram of time to first token in seconds.", ttft_bounds, N(ttft_bounds));
    hist_init(&m->h[H_ITL], "vllm:inter_token_latency_seconds",
              "Histogram of inter-token latency in seconds.", itl_bounds, N(itl_bounds));
    hist_init(&m->h[H_TPOT], "vllm:time_per_output_token_seconds",
              "Histogram of time per output token in seconds (same observations as "
              "vllm:inter_token_latency_seconds).",
              itl_bounds, N(itl_bounds));
    hist_init(&m->h[H_E2E], "vllm:e2e_request_latency_seconds",
              "Histogram of e2e request latency in seconds.", latency_bounds, N(latency_bounds));
    hist_init(&m->h[H_QUEUE], "vllm:request_queue_time_seconds",
              "Histogram of time spent in WAITING phase for request.", latency_bounds,
              N(latency_bounds));
#undef N
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void pl_metrics_free(struct pl_metrics *m)
{
    if (!m)
        return;
    pthread_mutex_destroy(&m->mu);
    free(m->labels);
    free(m);
}

void pl_metrics_observe(void *metrics, const struct pl_request_output *o)
{
    struct pl_metrics *m = metrics;
    if (!m)
        return;
    int n_tokens = 0;
    for (int i = 0; i < o->n_outputs; i++)
        n_tokens += o->outputs[i].n_token_ids;
    pthread_mutex_lock(&m->mu);
    if ((o->prompt_token_ids != NULL) && !o->error) {
        m->prompt_tokens += (uint64_t)o->n_prompt_token_ids;
        m->prefix_queries += (uint64_t)o->n_prompt_token_ids;
        m->prefix_hits += (uint64_t)o->num_cached_tokens;
    }
    m->generation_tokens += (uint64_t)n_tokens;
    const struct pl_request_metrics *t = &o->metrics;
    if (n_tokens > 0) {
        if (t->prev_token_time == 0) {
            hist_observe(&m->h[H_TTFT], t->first_token_time - t->arrival_time);
            double q = t->first_scheduled_time - t->arrival_time;
            hist_observe(&m->h[H_QUEUE], q > 0 ? q : 0);
        } else {
            hist_observe(&m->h[H_ITL], t->last_token_time - t->prev_token_time);
            hist_observe(&m->h[H_TPOT], t->last_token_time - t->prev_token_time);
        }
    }
    if (o->finished && !o->error) {
        hist_observe(&m->h[H_E2E], t->finished_time - t->arrival_time);
        /* the request's reason, as the engine reports it over all its deltas
         * (vLLM reports one per request): the last delta alone may carry no sample */
        enum pl_finish_reason f = o->finish_reason;
        if (f == PL_FINISH_STOP)
            m->success[0]++;
        else if (f == PL_FINISH_LENGTH)
            m->success[1]++;
        else if (f == PL_FINISH_ABORT)
            m->success[2]++;
    }
    pthread_mutex_unlock(&m->mu);
}

static void header(struct pl_sbuf *b, const char *name, const char *help, const char *type)
{
    pl_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u(struct pl_sbuf *b, const char *name, const char *labels, uint64_t v)
{
    pl_sbuf_printf(b, "%s{%s} %llu\n", name, labels, (unsigned long long)v);
}

static void sample_d(struct pl_sbuf *b, const char *name, const char *labels, double v)
{
    pl_sbuf_printf(b, "%s{%s} %.17g\n", name, labels, v);
}

static void render_hist(struct pl_sbuf *b, const struct histogram *h, const char *labels)
{
    header(b, h->name, h->help, "histogram");
    uint64_t cum = 0;
    for (int i = 0; i <= h->n_bounds; i++) {
        cum += h->counts[i];
        if (i < h->n_bounds)
            pl_sbuf_printf(b, "%s_bucket{%s,le=\"%.17g\"} %llu\n", h->name, labels, h->bounds[i],
                           (unsigned long long)cum);
        else
            pl_sbuf_printf(b, "%s_bucket{%s,le=\"+Inf\"} %llu\n", h->name, labels,
                           (unsigned long long)cum);
    }
    pl_sbuf_printf(b, "%s_sum{%s} %.17g\n", h->name, labels, h->sum);
    pl_sbuf_printf(b, "%s_count{%s} %llu\n", h->name, labels, (unsigned long long)h->count);
}

pl_status pl_metrics_render(struct pl_metrics *m, const struct pl_llm_stats *st, char **out,
                            size_t *len, struct pl_err *err)
{
    struct pl_sbuf b = {0};
    const char *L = m->labels;
    pthread_mutex_lock(&m->mu);
    header(&b, "vllm:num_requests_running", "Number of requests in model execution batches.",
           "gauge");
    sample_u(&b, "vllm:num_requests_running", L, (uint64_t)(st->num_running > 0 ? st->num_running : 0));
    header(&b, "vllm:num_requests_waiting", "Number of requests waiting to be processed.",
           "gauge");
    sample_u(&b, "vllm:num_requests_waiting", L, (uint64_t)(st->num_waiting > 0 ? st->num_waiting : 0));
    header(&b, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", "gauge");
    sample_d(&b, "vllm:kv_cache_usage_perc", L,
             st->kv_blocks_total > 0 ? (double)st->kv_blocks_used / st->kv_blocks_total : 0.0);
    header(&b, "vllm:num_preemptions_total", "Cumulative number of preemption from the engine.",
           "counter");
    sample_u(&b, "vllm:num_preemptions_total", L, st->num_preemptions);
    header(&b, "vllm:prompt_tokens_total", "Number of prefill tokens processed.", "counter");
    sample_u(&b, "vllm:prompt_tokens_total", L, m->prompt_tokens);
    header(&b, "vllm:generation_tokens_total", "Number of generation tokens processed.",
           "counter");
    sample_u(&b, "vllm:generation_tokens_total", L, m->generation_tokens);
    header(&b, "vllm:prefix_cache_queries_total",
           "Prefix cache queries, in terms of number of queried tokens.", "counter");
    sample_u(&b, "vllm:prefix_cache_queries_total", L, m->prefix_queries);
    header(&b, "vllm:prefix_cache_hits_total",
           "Prefix cache hits, in terms of number of cached tokens.", "counter");
    sample_u(&b, "vllm:prefix_cache_hits_total", L, m->prefix_hits);
    header(&b, "vllm:request_success_total", "Count of successfully processed requests.",
           "counter");
    static const char *const reasons[3] = {"stop", "length", "abort"};
    for (int i = 0; i < 3; i++)
        pl_sbuf_printf(&b, "vllm:request_success_total{%s,finished_reason=\"%s\"} %llu\n", L,
                       reasons[i], (unsigned long long)m->success[i]);
    for (int i = 0; i < N_HIST; i++)
        render_hist(&b, &m->h[i], L);
    pthread_mutex_unlock(&m->mu);
    *out = pl_sbuf_take(&b, len);
    if (!*out)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory rendering metrics");
    return PL_STATUS_OK;
}
