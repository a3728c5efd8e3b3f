/*
 * serving_log.c -- the periodic stats line and per-request lines (see serving_log.h).
 */
#include "server/serving_log.h"

#include "server/http.h"
#include "util/log.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HIT_WINDOW 1000 /* requests in the prefix-cache hit rate (vLLM v1's window) */

struct pl_serving_log {
    struct pl_serving_log_params p;
    pthread_mutex_t mu;
    /* counters since the last tick (engine thread adds, tick takes) */
    unsigned long long prompt_tokens, generation_tokens;
    /* the hit-rate window: per request, prompt tokens looked up and served from cache */
    long long win_queries[HIT_WINDOW], win_hits[HIT_WINDOW];
    int win_next, win_n;
    long long sum_queries, sum_hits;
    /* tick state */
    double last_tick;
    double last_prompt_tps, last_gen_tps;
    /* the thread */
    pthread_t thread;
    bool thread_started;
    bool stop;
    pthread_cond_t cv;
};

void pl_serving_log_params_default(struct pl_serving_log_params *p)
{
    memset(p, 0, sizeof(*p));
    p->interval_s = 10.0;
    p->stats = true;
}

void pl_serving_log_observe(void *user, const struct pl_request_output *o)
{
    struct pl_serving_log *s = user;
    if (!s)
        return;
    unsigned long long gen = 0;
    for (int i = 0; i < o->n_outputs; i++)
        gen += (unsigned long long)o->outputs[i].n_token_ids;
    pthread_mutex_lock(&s->mu);
    s->generation_tokens += gen;
    if ((o->prompt_token_ids != NULL) && !o->error) {
        s->prompt_tokens += (unsigned long long)o->n_prompt_token_ids;
        if (s->win_n == HIT_WINDOW) {
            s->sum_queries -= s->win_queries[s->win_next];
            s->sum_hits -= s->win_hits[s->win_next];
        } else {
            s->win_n++;
        }
        s->win_queries[s->win_next] = o->n_prompt_token_ids;
        s->win_hits[s->win_next] = o->num_cached_tokens;
        s->sum_queries += o->n_prompt_token_ids;
        s->sum_hits += o->num_cached_tokens;
        s->win_next = (s->win_next + 1) % HIT_WINDOW;
    }
    pthread_mutex_unlock(&s->mu);
}

void pl_serving_log_format(char *buf, size_t cap, double prompt_tps, double gen_tps, int running,
                           int swapped, int pending, double kv_usage_pct, double hit_rate_pct)
{
    snprintf(buf, cap,
             "Avg prompt throughput: %.1f tokens/s, Avg generation throughput: %.1f tokens/s, "
             "Running: %d reqs, Swapped: %d reqs, Pending: %d reqs, GPU KV cache usage: %.1f%%, "
             "Prefix cache hit rate: %.1f%%",
             prompt_tps, gen_tps, running, swapped, pending, kv_usage_pct, hit_rate_pct);
}

bool pl_serving_log_tick(struct pl_serving_log *s, double now, char *buf, size_t cap)
{
    pthread_mutex_lock(&s->mu);
    double dt = now - s->last_tick;
    unsigned long long pt = s->prompt_tokens, gt = s->generation_tokens;
    double hit = s->sum_queries > 0 ? 100.0 * (double)s->sum_hits / (double)s->sum_queries : 0.0;
    s->prompt_tokens = s->generation_tokens = 0;
    s->last_tick = now;
    struct pl_async_engine *ae = s->p.ae;
    pthread_mutex_unlock(&s->mu);
    double prompt_tps = dt > 0 ? (double)pt / dt : 0.0;
    double gen_tps = dt > 0 ? (double)gt / dt : 0.0;
    bool due = pt > 0 || gt > 0 || s->last_prompt_tps > 0 || s->last_gen_tps > 0;
    s->last_prompt_tps = prompt_tps;
    s->last_gen_tps = gen_tps;
    if (!due)
        return false;
    struct pl_llm_stats st;
    memset(&st, 0, sizeof(st));
    if (ae)
        pl_async_engine_stats(ae, &st);
    double kv = st.kv_blocks_total > 0 ? 100.0 * st.kv_blocks_used / st.kv_blocks_total : 0.0;
    pl_serving_log_format(buf, cap, prompt_tps, gen_tps, st.num_running, 0, st.num_waiting, kv,
                          hit);
    return true;
}

static void *stats_main(void *arg)
{
    struct pl_serving_log *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        double due = s->last_tick + s->p.interval_s; /* the condition waits on CLOCK_MONOTONIC */
        struct timespec ts;
        ts.tv_sec = (time_t)due;
        ts.tv_nsec = (long)((due - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->stop)
            break;
        if (pl_async_now() < due) /* woken early: wait again */
            continue;
        pthread_mutex_unlock(&s->mu);
        char line[512];
        if (pl_serving_log_tick(s, pl_async_now(), line, sizeof(line)))
            PL_INFO("%s", line);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void pl_serving_log_set_engine(struct pl_serving_log *s, struct pl_async_engine *ae)
{
    pthread_mutex_lock(&s->mu);
    s->p.ae = ae;
    pthread_mutex_unlock(&s->mu);
}

pl_status pl_serving_log_new(const struct pl_serving_log_params *p, struct pl_serving_log **out,
                             struct pl_err *err)
{
    *out = NULL;
    if (!(p->interval_s > 0) || p->interval_s > 1e6)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "the stats interval must be a positive number of seconds, got %g",
                          p->interval_s);
    struct pl_serving_log *s = calloc(1, sizeof(*s));
    if (!s)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    s->p = *p;
    s->last_tick = pl_async_now();
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (p->stats) {
        int rc = pthread_create(&s->thread, NULL, stats_main, s);
        if (rc) {
            pl_serving_log_free(s);
            return pl_err_set(err, PL_STATUS_INTERNAL, "cannot start the stats logger: %s",
                              strerror(rc));
        }
        s->thread_started = true;
    }
    *out = s;
    return PL_STATUS_OK;
}

void pl_serving_log_free(struct pl_serving_log *s)
{
    if (!s)
        return;
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* ---- per-request lines ---------------------------------------------------------- */

void pl_serving_log_received(const char *id, const char *route, int n_prompts,
                             long long prompt_tokens, const char *params, const char *prompt,
                             size_t prompt_len, int max_log_len)
{
    char *shown = NULL;
    if (prompt && max_log_len >= 0) {
        size_t n = prompt_len < (size_t)max_log_len ? prompt_len : (size_t)max_log_len;
        while (n > 0 && n < prompt_len && ((unsigned char)prompt[n] & 0xC0) == 0x80)
            n--; /* never cut a UTF-8 sequence */
        json_t *j = pl_http_json_string_lossy(prompt, n);
        shown = j ? json_dumps(j, JSON_ENCODE_ANY) : NULL;
        json_decref(j);
    }
    PL_INFO("Received request %s: route %s, prompts %d, prompt_tokens %lld, params %s%s%s%s", id,
            route, n_prompts, prompt_tokens, params ? params : "{}", shown ? ", prompt: " : "",
            shown ? shown : "", shown && n_prompts > 1 ? " (the first)" : "");
    free(shown);
}

void pl_serving_log_finished(const char *id, const char *outcome, long long prompt_tokens,
                             long long completion_tokens, double seconds)
{
    PL_INFO("Finished request %s: %s, prompt_tokens %lld, completion_tokens %lld, %.3f s", id,
            outcome, prompt_tokens, completion_tokens, seconds);
}
