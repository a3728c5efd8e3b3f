/*
 * handlers.c -- job input forms -> engine requests -> output JSON (spec 5.3,
 * 4.2-4.5): the simple batch and streaming forms, worker-vllm's classic
 * native form and the OpenAI-route form.
 *
 * Owns: mode selection (rules R1-R9), sampling parameters from the input
 * (mode defaults < top-level keys < "sampling_params"), the chunk builder
 * that follows the batch-size schedule, and the result of one job.
 * Chunk content depends only on the engine's deltas, never on how fast
 * chunks are posted: the async engine queues each request's deltas and this
 * runner (on the job's thread) turns them into chunks in order.
 *
 * The engine is reached as the OpenAI server reaches it: prompts are
 * tokenized here, on the job's thread, through the OpenAI layer (its chat
 * template, its tokenizer), and token ids go to the async engine. The
 * OpenAI-route form is the server's request handling itself
 * (pl_openai_gen_*): same validation and errors, logprobs, n, usage, the same
 * SSE events, which are then grouped into stream chunks (spec 4.4).
 * A stopped job aborts its engine requests (their KV blocks are freed at the
 * engine's next step) and returns without waiting for them.
 */
#include "engine/sampling_params.h"
#include "worker/runpod.h"

#include "engine/async_engine.h"
#include "server/openai.h"
#include "util/err.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool pl_rp_mode_is_generator(enum pl_rp_mode m)
{
    return m == PL_RP_MODE_SIMPLE_STREAM || m == PL_RP_MODE_VLLM_NATIVE || m == PL_RP_MODE_OPENAI;
}

static bool has(const json_t *o, const char *k)
{
    return json_object_get(o, k) != NULL;
}

enum pl_rp_mode pl_rp_choose_mode(const json_t *input, enum pl_rp_profile profile,
                                  const char **error)
{
    *error = NULL;
    if (!json_is_object(input)) {
        *error = "Job input must be a JSON object";
        return PL_RP_MODE_NONE;
    }
    const json_t *route = json_object_get(input, "openai_route");
    const json_t *oin = json_object_get(input, "openai_input");
    if ((json_is_string(route) && json_string_length(route) > 0) ||
        (json_is_object(oin) && json_object_size(oin) > 0))
        return PL_RP_MODE_OPENAI;
    if (has(input, "route"))
        return PL_RP_MODE_OPENAI;
    if (has(input, "prompts"))
        return PL_RP_MODE_SIMPLE_BATCH;
    if (has(input, "messages"))
        return PL_RP_MODE_VLLM_NATIVE;
    if (has(input, "prompt")) {
        const char *fmt = json_string_value(json_object_get(input, "engine_format"));
        if (fmt && !strcmp(fmt, "simple"))
            return PL_RP_MODE_SIMPLE_STREAM;
        if (fmt && !strcmp(fmt, "vllm"))
            return PL_RP_MODE_VLLM_NATIVE;
        static const char *const native_keys[] = {"sampling_params", "stream", "apply_chat_template",
                                                  "max_batch_size", "min_batch_size",
                                                  "batch_size_growth_factor", "use_openai_format"};
        for (size_t i = 0; i < sizeof(native_keys) / sizeof(native_keys[0]); i++)
            if (has(input, native_keys[i]))
                return PL_RP_MODE_VLLM_NATIVE;
        if (has(input, "temperature") || has(input, "top_p") || has(input, "max_tokens"))
            return PL_RP_MODE_SIMPLE_STREAM;
        return profile == PL_RP_PROFILE_SIMPLE_STREAM ? PL_RP_MODE_SIMPLE_STREAM
                                                      : PL_RP_MODE_VLLM_NATIVE;
    }
    *error = profile == PL_RP_PROFILE_SIMPLE_STREAM ? "Missing 'prompt' in input"
                                                    : "Missing 'prompts' in input";
    return PL_RP_MODE_NONE;
}

void pl_rp_result_fini(struct pl_rp_result *res)
{
    json_decref(res->output);
    free(res->error);
    memset(res, 0, sizeof(*res));
}

static void set_error(struct pl_rp_result *res, const char *msg)
{
    json_decref(res->output);
    res->output = NULL;
    free(res->error);
    res->error = strdup(msg ? msg : "unknown error");
}

/* Fails the job with the JSON text of e's OpenAI error object (spec 4.6's recommendation). */
static void set_openai_error(struct pl_rp_result *res, const struct pl_openai_error *e)
{
    char *t = pl_openai_error_text(e);
    set_error(res, t ? t : e->message);
    free(t);
}

/* An OpenAI error object for a message of the worker's own (status 400 unless given). */
static void set_openai_message(struct pl_rp_result *res, int status, const char *message)
{
    struct pl_openai_error e;
    memset(&e, 0, sizeof(e));
    e.status = status;
    snprintf(e.message, sizeof(e.message), "%s", message);
    set_openai_error(res, &e);
}

/* ---- sampling parameters ---- */

/*
 * mode defaults, then the operator's overrides, then top-level
 * temperature/top_p/max_tokens, then the "sampling_params" object; validated. On error *msg (malloc'd) says why.
 */
static bool build_params(struct pl_rp_ctx *ctx, enum pl_rp_mode mode, const json_t *input,
                         struct pl_sampling_params *sp, char **msg)
{
    pl_llm_default_sampling_params(ctx->llm, sp);
    if (mode == PL_RP_MODE_SIMPLE_BATCH || mode == PL_RP_MODE_SIMPLE_STREAM) {
        sp->temperature = 0.7f;
        sp->top_p = 0.95f;
        sp->max_tokens = mode == PL_RP_MODE_SIMPLE_BATCH ? 256 : 1024;
    } else {
        sp->max_tokens = 100; /* worker-vllm's default when sampling_params lacks it */
    }
    /* the operator's --override-generation-config wins over those mode defaults */
    pl_llm_override_sampling_params(ctx->llm, sp);
    json_t *merged = json_object();
    static const char *const top[] = {"temperature", "top_p", "max_tokens"};
    for (size_t i = 0; i < 3; i++) {
        json_t *v = json_object_get(input, top[i]);
        if (v)
            json_object_set(merged, top[i], v);
    }
    const json_t *spj = json_object_get(input, "sampling_params");
    if (spj && !json_is_null(spj) && !json_is_object(spj)) {
        json_decref(merged);
        *msg = strdup("'sampling_params' must be an object");
        return false;
    }
    if (spj)
        json_object_update(merged, (json_t *)spj);
    struct pl_err err;
    pl_err_clear(&err);
    pl_status st = pl_sampling_params_from_json(merged, NULL, sp, &err);
    json_decref(merged);
    if (st == PL_STATUS_OK)
        st = pl_sampling_params_validate(sp, pl_llm_vocab_size(ctx->llm), &err);
    if (st != PL_STATUS_OK) {
        char buf[PL_ERR_MSG_MAX + 64];
        snprintf(buf, sizeof(buf), "Invalid sampling parameters: %s", err.msg);
        *msg = strdup(buf);
        pl_sampling_params_fini(sp);
        return false;
    }
    return true;
}

/* "falsy => default" per-request batch values (spec 4.2). */
static double batch_value(const json_t *input, const char *key, double dflt)
{
    const json_t *v = json_object_get(input, key);
    double d = json_is_number(v) ? json_number_value(v) : 0.0;
    return d != 0.0 ? d : dflt;
}

/* ---- the runner ---- */

struct run {
    struct pl_rp_ctx *ctx;
    struct pl_rp_result *res;
    pl_rp_chunk_fn on_chunk;
    void *user;
    volatile int *stop_flag;
    /* engine news: notify (engine thread) sets news, the job thread waits on it */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool news;
    /* the job's own engine requests (the native and simple forms) */
    struct pl_async_request **reqs; /* [n_reqs] */
    bool *done;                      /* [n_reqs] its finished delta was taken */
    int n_reqs;
};

static bool stopped(struct run *r)
{
    return r->res->stopped || (r->stop_flag && *r->stop_flag);
}

/* Emits one chunk (steals it). False when the job was stopped. */
static bool emit(struct run *r, json_t *chunk)
{
    if (stopped(r)) {
        json_decref(chunk);
        r->res->stopped = true;
        return false;
    }
    json_array_append(r->res->output, chunk);
    bool go = r->on_chunk ? r->on_chunk(r->user, chunk) : true;
    json_decref(chunk);
    if (!go || stopped(r))
        r->res->stopped = true;
    return !r->res->stopped;
}

/* The async engine's notify: runs on the engine thread, so it only signals. */
static void on_news(void *user)
{
    struct run *r = user;
    pthread_mutex_lock(&r->mu);
    r->news = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/*
 * Waits for engine news. The stop flag is set by another thread (the stop
 * channel, /cancel) without a signal, so it is looked at every 50 ms.
 * False when the job was stopped.
 */
static bool wait_news(struct run *r)
{
    pthread_mutex_lock(&r->mu);
    while (!r->news && !stopped(r)) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
    }
    r->news = false;
    pthread_mutex_unlock(&r->mu);
    if (stopped(r))
        r->res->stopped = true;
    return !r->res->stopped;
}

/* Queues one engine request of the job; false (error set) when it was refused. */
static bool submit(struct run *r, const struct pl_openai_prompt *p,
                   const struct pl_sampling_params *sp)
{
    struct pl_async_request **reqs = realloc(r->reqs, sizeof(*reqs) * (size_t)(r->n_reqs + 1));
    if (reqs)
        r->reqs = reqs;
    bool *done = realloc(r->done, sizeof(*done) * (size_t)(r->n_reqs + 1));
    if (done)
        r->done = done;
    if (!reqs || !done) {
        set_error(r->res, "out of memory");
        return false;
    }
    struct pl_err err;
    pl_err_clear(&err);
    if (pl_async_engine_submit(r->ctx->ae, p->ids, p->n_ids, sp, on_news, r,
                               &r->reqs[r->n_reqs], &err) != PL_STATUS_OK) {
        set_error(r->res, err.msg);
        return false;
    }
    r->done[r->n_reqs++] = false;
    return true;
}

/*
 * The next delta of the job's requests (*which = the request's index), waiting
 * for one. NULL when every request has finished or the job was stopped.
 */
static struct pl_request_output *next_output(struct run *r, int *which)
{
    for (;;) {
        bool all_done = true;
        for (int i = 0; i < r->n_reqs; i++) {
            if (r->done[i])
                continue;
            struct pl_request_output *o = pl_async_request_pop(r->reqs[i]);
            /* finished: its last delta may have landed after the pop; look once more */
            if (!o && pl_async_request_is_finished(r->reqs[i]))
                o = pl_async_request_pop(r->reqs[i]);
            if (o) {
                r->done[i] = o->finished;
                *which = i;
                return o;
            }
            if (pl_async_request_is_finished(r->reqs[i]))
                r->done[i] = true; /* ended without a delta (out of memory) */
            else
                all_done = false;
        }
        if (all_done || !wait_news(r))
            return NULL;
    }
}

/*
 * Tokenizes a prompt through the OpenAI layer: messages with the chat
 * template (CUSTOM_CHAT_TEMPLATE or the model's), else text with special
 * tokens. false (error set) on failure: the OpenAI error object for the
 * native form (spec 4.6), the plain message for the simple forms.
 */
static bool prepare(struct run *r, const json_t *messages, const json_t *text, bool native,
                    struct pl_openai_prompt *p)
{
    json_t *root = messages ? json_pack("{s:O}", "messages", messages)
                            : json_pack("{s:O}", "prompt", text);
    struct pl_openai_error e;
    pl_status st = root ? pl_openai_prepare_prompt(r->ctx->oai,
                                                   messages ? PL_OPENAI_CHAT : PL_OPENAI_COMPLETION,
                                                   root, p, &e)
                        : PL_STATUS_NO_MEMORY;
    json_decref(root);
    if (st == PL_STATUS_OK)
        return true;
    if (!root)
        set_error(r->res, "out of memory");
    else if (native && messages && !strcmp(e.param, "chat_template"))
        /* worker-vllm's words (spec 4.2) */
        set_openai_message(r->res, 400,
                           "Chat template does not exist for this model, you must provide a "
                           "single string input instead of a list of messages");
    else if (native)
        set_openai_error(r->res, &e);
    else
        set_error(r->res, e.message);
    return false;
}

static bool append_text(char **buf, size_t *len, const char *s, size_t n)
{
    char *nb = realloc(*buf, *len + n + 1);
    if (!nb)
        return false;
    memcpy(nb + *len, s, n);
    *len += n;
    nb[*len] = '\0';
    *buf = nb;
    return true;
}

static void run_simple_batch(struct run *r, const json_t *input)
{
    const json_t *prompts = json_object_get(input, "prompts");
    if (json_is_null(prompts) || (json_is_array(prompts) && json_array_size(prompts) == 0)) {
        set_error(r->res, "Missing 'prompts' in input");
        return;
    }
    size_t n = json_array_size(prompts);
    bool ok = json_is_array(prompts);
    for (size_t i = 0; ok && i < n; i++)
        ok = json_is_string(json_array_get(prompts, i));
    if (!ok) {
        set_error(r->res, "'prompts' must be a list of strings");
        return;
    }
    struct pl_sampling_params sp;
    char *msg = NULL;
    if (!build_params(r->ctx, PL_RP_MODE_SIMPLE_BATCH, input, &sp, &msg)) {
        set_error(r->res, msg);
        free(msg);
        return;
    }
    char **texts = calloc(n, sizeof(char *));
    size_t *lens = calloc(n, sizeof(size_t));
    bool good = texts && lens;
    if (!good)
        set_error(r->res, "out of memory");
    /* every prompt goes into the scheduler at once */
    for (size_t i = 0; good && i < n; i++) {
        struct pl_openai_prompt p = {0};
        good = prepare(r, NULL, json_array_get(prompts, i), false, &p) && submit(r, &p, &sp);
        free(p.ids);
        free(p.text);
    }
    pl_sampling_params_fini(&sp);
    struct pl_request_output *o;
    int which;
    while (good && (o = next_output(r, &which)) != NULL) {
        if (o->error) {
            set_error(r->res, o->error);
            good = false;
        }
        for (int k = 0; good && k < o->n_outputs; k++) {
            const struct pl_completion_output *sm = &o->outputs[k];
            if (sm->index == 0 && sm->text_len > 0 &&
                !append_text(&texts[which], &lens[which], sm->text, sm->text_len))
                good = false;
        }
        pl_request_output_free(o);
    }
    if (stopped(r)) {
        r->res->stopped = true;
        good = false;
    }
    if (good) {
        json_t *results = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(results,
                                  json_pack("{s:O, s:s}", "prompt", json_array_get(prompts, i),
                                            "text", texts[i] ? texts[i] : ""));
        json_decref(r->res->output);
        r->res->output = json_pack("{s:o}", "results", results);
    } else if (!r->res->error && !r->res->stopped) {
        set_error(r->res, "out of memory");
    }
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(lens);
}

/*
 * The streaming modes share one loop: each delta adds one element per
 * generated token to the current chunk (native: to its choice's "tokens";
 * simple: to the chunk's text); once the chunk holds size elements it is
 * emitted and the schedule advances. The remainder goes out at the end.
 */
struct chunker {
    bool native;
    int n_choices;
    json_t **tokens;          /* native: [n_choices] arrays of the current chunk */
    char *text;               /* simple: the current chunk's text */
    size_t text_len;
    char *all;                /* simple cumulative: everything so far */
    size_t all_len;
    bool cumulative;
    double count;             /* elements in the current chunk */
    int n_prompt;
    long n_generated;
    struct pl_rp_schedule sched;
    bool single;              /* native stream:false: one chunk at the end */
};

static bool flush_chunk(struct run *r, struct chunker *c)
{
    json_t *chunk;
    if (c->native) {
        json_t *choices = json_array();
        for (int i = 0; i < c->n_choices; i++) {
            json_array_append_new(choices, json_pack("{s:O}", "tokens", c->tokens[i]));
            json_decref(c->tokens[i]);
            c->tokens[i] = json_array();
        }
        chunk = json_pack("{s:o, s:{s:i, s:I}}", "choices", choices, "usage", "input", c->n_prompt,
                          "output", (json_int_t)c->n_generated);
    } else {
        chunk = json_pack("{s:s%}", "text",
                          c->cumulative ? (c->all ? c->all : "") : (c->text ? c->text : ""),
                          c->cumulative ? c->all_len : c->text_len);
        c->text_len = 0;
        if (c->text)
            c->text[0] = '\0';
    }
    c->count = 0;
    pl_rp_schedule_next(&c->sched);
    return chunk && emit(r, chunk);
}

static void run_stream(struct run *r, const json_t *input, enum pl_rp_mode mode)
{
    const json_t *messages = json_object_get(input, "messages");
    const json_t *prompt = json_object_get(input, "prompt");
    bool native = mode == PL_RP_MODE_VLLM_NATIVE;
    json_t *wrapped = NULL; /* apply_chat_template: the prompt as one user message */
    if (native && messages) {
        if (!json_is_array(messages)) {
            set_error(r->res, "Input must be a string or a list of messages");
            return;
        }
    } else if (!json_is_string(prompt) || json_string_length(prompt) == 0) {
        set_error(r->res, json_is_string(prompt) || json_is_null(prompt) || !prompt
                              ? "Missing 'prompt' in input"
                              : "Input must be a string or a list of messages");
        return;
    } else if (native && json_is_true(json_object_get(input, "apply_chat_template"))) {
        wrapped = json_pack("[{s:s, s:O}]", "role", "user", "content", prompt);
        messages = wrapped;
    } else {
        messages = NULL;
    }
    struct pl_sampling_params sp;
    char *msg = NULL;
    if (!build_params(r->ctx, mode, input, &sp, &msg)) {
        set_error(r->res, msg);
        free(msg);
        json_decref(wrapped);
        return;
    }
    struct chunker c = {0};
    c.native = native;
    c.n_choices = sp.n > 0 ? sp.n : 1;
    c.cumulative = json_is_true(json_object_get(input, "stream_cumulative"));
    c.single = native && !json_is_true(json_object_get(input, "stream"));
    const struct pl_rp_config *cfg = r->ctx->cfg;
    pl_rp_schedule_init(&c.sched, batch_value(input, "max_batch_size", cfg->batch_max),
                        batch_value(input, "min_batch_size", cfg->batch_min),
                        batch_value(input, "batch_size_growth_factor", cfg->batch_growth));
    if (native) {
        c.tokens = calloc((size_t)c.n_choices, sizeof(json_t *));
        for (int i = 0; c.tokens && i < c.n_choices; i++)
            c.tokens[i] = json_array();
    }
    char **full = c.single ? calloc((size_t)c.n_choices, sizeof(char *)) : NULL;
    size_t *full_len = c.single ? calloc((size_t)c.n_choices, sizeof(size_t)) : NULL;
    bool good = (!native || c.tokens) && (!c.single || (full && full_len));
    bool any = false;
    if (!good)
        set_error(r->res, "out of memory");
    struct pl_openai_prompt p = {0};
    good = good && prepare(r, messages, prompt, native, &p) && submit(r, &p, &sp);
    free(p.ids);
    free(p.text);
    pl_sampling_params_fini(&sp);
    json_decref(wrapped);
    struct pl_request_output *o;
    int which;
    while (good && (o = next_output(r, &which)) != NULL) {
        if (o->error) {
            /* a refusal (400) or an engine failure (500): the job fails either way,
             * never completes with its text cut short */
            if (native)
                set_openai_message(r->res, pl_openai_status_of(o->error_status), o->error);
            else
                set_error(r->res, o->error);
            good = false;
        }
        if ((o->prompt_token_ids != NULL)) /* later deltas may not repeat the prompt length */
            c.n_prompt = o->n_prompt_token_ids;
        for (int k = 0; k < o->n_outputs && good; k++) {
            const struct pl_completion_output *co = &o->outputs[k];
            int idx = co->index;
            if (idx < 0 || idx >= c.n_choices)
                continue;
            int nt = co->n_token_ids;
            c.n_generated += nt;
            if (c.single) {
                if (co->text_len)
                    good = append_text(&full[idx], &full_len[idx], co->text, co->text_len);
                continue;
            }
            if (nt == 0 && co->text_len == 0)
                continue;
            if (native) {
                /* one element per generated token; the delta's text goes in the first */
                json_array_append_new(c.tokens[idx], json_stringn(co->text ? co->text : "",
                                                                   co->text_len));
                for (int t = 1; t < nt; t++)
                    json_array_append_new(c.tokens[idx], json_string(""));
                c.count += nt > 0 ? nt : 1;
            } else {
                good = (co->text_len == 0 || append_text(&c.text, &c.text_len, co->text,
                                                         co->text_len)) &&
                       (!c.cumulative || co->text_len == 0 ||
                        append_text(&c.all, &c.all_len, co->text, co->text_len));
                c.count += nt;
            }
            any = true;
            if (good && c.count >= pl_rp_schedule_size(&c.sched)) {
                good = flush_chunk(r, &c);
                any = false;
            }
        }
        pl_request_output_free(o);
    }
    if (stopped(r)) {
        r->res->stopped = true;
        good = false;
    }
    if (good && c.single) {
        for (int i = 0; i < c.n_choices; i++)
            json_array_append_new(c.tokens[i], json_string(full[i] ? full[i] : ""));
        good = flush_chunk(r, &c);
    } else if (good && any) {
        good = flush_chunk(r, &c);
    }
    if (!good && !r->res->error && !r->res->stopped)
        set_error(r->res, "out of memory");
    for (int i = 0; c.tokens && i < c.n_choices; i++)
        json_decref(c.tokens[i]);
    for (int i = 0; full && i < c.n_choices; i++)
        free(full[i]);
    free(full);
    free(full_len);
    free(c.tokens);
    free(c.text);
    free(c.all);
}

/* Emits the complete SSE chunks the batcher has produced so far. */
static bool openai_emit_ready(struct run *r, json_t *ready)
{
    size_t i;
    json_t *c;
    bool go = true;
    json_array_foreach(ready, i, c) {
        if (go)
            go = emit(r, json_incref(c));
    }
    json_array_clear(ready);
    return go;
}

/*
 * Streams g's Server-Sent Events (the server's, byte for byte) grouped into
 * chunks of k events, k on the env batch schedule (spec 4.4). An engine
 * failure fails the job (chunks already posted stay posted, spec 1.12).
 */
static void openai_stream(struct run *r, struct pl_openai_gen *g)
{
    const struct pl_rp_config *cfg = r->ctx->cfg;
    struct pl_rp_schedule sched;
    pl_rp_schedule_init(&sched, cfg->batch_max, cfg->batch_min, cfg->batch_growth);
    struct pl_rp_sse_batcher sse;
    pl_rp_sse_init(&sse, &sched, cfg->raw_openai_output);
    json_t *ready = json_array();
    bool good = ready != NULL, more = true;
    while (good && more) {
        struct pl_sbuf b = {0};
        more = pl_openai_gen_produce(g, &b);
        struct pl_openai_error e;
        if (!more && pl_openai_gen_failed(g, &e)) {
            set_openai_error(r->res, &e);
            good = false;
        } else {
            good = !b.failed && (b.len == 0 || pl_rp_sse_feed(&sse, b.data, b.len, ready)) &&
                   openai_emit_ready(r, ready);
        }
        pl_sbuf_fini(&b);
        if (good && more)
            good = wait_news(r);
    }
    if (good)
        good = pl_rp_sse_finish(&sse, ready) && openai_emit_ready(r, ready);
    if (!good && !r->res->error && !stopped(r))
        set_error(r->res, "out of memory");
    json_decref(ready);
    pl_rp_sse_fini(&sse);
}

/* /v1/chat/completions, /v1/completions, /v1/embeddings and /v1/responses: the OpenAI
 * server's request handling. */
static void run_openai_generate(struct run *r, const json_t *body, enum pl_openai_kind kind)
{
    /* an absent body is sent as JSON null: the server's answer to a body "null" */
    char *text = json_dumps(body ? body : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) {
        set_error(r->res, "out of memory");
        return;
    }
    struct pl_openai_error e;
    struct pl_openai_gen *g = NULL;
    pl_status st = pl_openai_gen_new(r->ctx->oai, kind, text, strlen(text), &g, &e);
    free(text);
    if (st == PL_STATUS_OK)
        st = pl_openai_gen_submit(g, on_news, r, &e);
    if (st != PL_STATUS_OK) {
        set_openai_error(r->res, &e);
    } else if (pl_openai_gen_is_stream(g)) {
        openai_stream(r, g);
    } else {
        json_t *resp = NULL;
        bool done;
        while (!(done = pl_openai_gen_result(g, &resp, &e)) && wait_news(r))
            ;
        if (done && resp)
            emit(r, resp);
        else if (done)
            set_openai_error(r->res, &e);
    }
    pl_openai_gen_free(g); /* a stopped job's requests are aborted here */
}

static void run_openai(struct run *r, const json_t *input)
{
    const char *route = json_string_value(json_object_get(input, "openai_route"));
    const json_t *body = json_object_get(input, "openai_input");
    if (!route && json_object_get(input, "route")) {
        route = json_string_value(json_object_get(input, "route"));
        body = json_object_get(input, "body");
    }
    if (!route || !*route)
        route = "/v1/chat/completions";
    if (!strcmp(route, "/v1/models")) {
        json_t *list = pl_openai_models_json(r->ctx->oai);
        if (list)
            emit(r, list);
        else
            set_error(r->res, "out of memory");
    } else if (!strncmp(route, "/v1/models/", 11) && route[11]) {
        struct pl_openai_error e;
        json_t *m = pl_openai_model_json(r->ctx->oai, route + 11, &e);
        if (m)
            emit(r, m);
        else
            set_openai_error(r->res, &e);
    } else if (!strcmp(route, "/v1/chat/completions")) {
        run_openai_generate(r, body, PL_OPENAI_CHAT);
    } else if (!strcmp(route, "/v1/completions")) {
        run_openai_generate(r, body, PL_OPENAI_COMPLETION);
    } else if (!strcmp(route, "/v1/embeddings")) {
        /* the server's request kinds: the same layer, so the same answers and errors */
        run_openai_generate(r, body, PL_OPENAI_EMBEDDING);
    } else if (!strcmp(route, "/v1/responses")) {
        run_openai_generate(r, body, PL_OPENAI_RESPONSES);
    } else {
        set_openai_message(r->res, 400, "Invalid route");
    }
}

void pl_rp_run_job(struct pl_rp_ctx *ctx, const char *job_id, const json_t *input,
                   pl_rp_chunk_fn on_chunk, void *user, volatile int *stop_flag,
                   struct pl_rp_result *res)
{
    memset(res, 0, sizeof(*res));
    const char *why = NULL;
    enum pl_rp_mode mode = pl_rp_choose_mode(input, ctx->cfg->profile, &why);
    res->mode = mode;
    res->generator = pl_rp_mode_is_generator(mode);
    if (mode == PL_RP_MODE_NONE) {
        set_error(res, why);
        return;
    }
    if (res->generator)
        res->output = json_array();
    struct run r;
    memset(&r, 0, sizeof(r));
    r.ctx = ctx;
    r.res = res;
    r.on_chunk = on_chunk;
    r.user = user;
    r.stop_flag = stop_flag;
    (void)job_id; /* engine requests are numbered by the async engine; logs name the job */
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    switch (mode) {
    case PL_RP_MODE_SIMPLE_BATCH:
        run_simple_batch(&r, input);
        break;
    case PL_RP_MODE_SIMPLE_STREAM:
    case PL_RP_MODE_VLLM_NATIVE:
        run_stream(&r, input, mode);
        break;
    case PL_RP_MODE_OPENAI:
        run_openai(&r, input);
        break;
    default:
        break;
    }
    /* unfinished requests (a stop, an error) are aborted: the engine frees their blocks;
     * after release no notify can reach r */
    for (int i = 0; i < r.n_reqs; i++) {
        if (!r.done[i])
            pl_async_request_abort(r.reqs[i]);
        pl_async_request_release(r.reqs[i]);
    }
    free(r.reqs);
    free(r.done);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
}
