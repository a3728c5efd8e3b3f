/*
 * handlers.c -- job input forms -> engine requests -> output JSON (spec 5.3,
 * 4.2-4.5): the simple batch and streaming forms, worker-vllm's classic
 * native form and the OpenAI-route form.
 *
 * Owns: mode selection (rules R1-R9), sampling parameters from the input
 * (mode defaults < top-level keys < "sampling_params"), the chunk builder
 * that follows the batch-size schedule, and the result of one job.
 * Chunk content depends only on the engine's deltas, never on how fast
 * chunks are posted: the engine thread queues deltas in the job's box and
 * this runner turns them into chunks in order.
 */
#include "worker/engine_loop.h"
#include "worker/runpod.h"

#include "util/err.h"

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

/* The JSON text of an OpenAI error object (spec 4.6's recommendation). */
static char *openai_error_text(const char *message, const char *type, int code)
{
    json_t *o = json_pack("{s:s, s:s, s:n, s:i}", "message", message, "type", type, "param",
                          "code", code);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

/* ---- sampling parameters ---- */

/*
 * mode defaults, then top-level temperature/top_p/max_tokens, then the
 * "sampling_params" object; validated. On error *msg (malloc'd) says why.
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
    struct pl_wbox *box;
    const char *job_id;
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

/* Submits one request of the job; false (error set) when it could not be queued. */
static bool submit(struct run *r, size_t idx, const char *text, const char *messages,
                   const struct pl_sampling_params *sp)
{
    char rid[600];
    snprintf(rid, sizeof(rid), "%s#%zu", r->job_id, idx);
    const char *tmpl = r->ctx->cfg ? r->ctx->cfg->custom_chat_template : NULL;
    if (pl_wbox_submit(r->box, rid, text, messages, tmpl, sp) != PL_STATUS_OK) {
        set_error(r->res, "out of memory");
        return false;
    }
    return true;
}

/* The request index from "<job>#<i>". */
static size_t rid_index(const char *rid)
{
    const char *h = strrchr(rid, '#');
    return h ? (size_t)strtoull(h + 1, NULL, 10) : 0;
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
    /* every prompt goes into the scheduler at once */
    for (size_t i = 0; good && i < n; i++)
        good = submit(r, i, json_string_value(json_array_get(prompts, i)), NULL, &sp);
    pl_sampling_params_fini(&sp);
    char errbuf[512];
    struct pl_request_output o;
    int ev;
    while (good && (ev = pl_wbox_next(r->box, &o, errbuf, sizeof(errbuf))) != 0) {
        if (ev < 0) {
            set_error(r->res, errbuf);
            good = false;
            break;
        }
        size_t i = rid_index(o.request_id);
        for (int k = 0; k < o.n_outputs && i < n; k++)
            if (o.outputs[k].index == 0 && o.outputs[k].text_len > 0 &&
                !append_text(&texts[i], &lens[i], o.outputs[k].text, o.outputs[k].text_len))
                good = false;
        pl_request_output_fini(&o);
        if (stopped(r)) {
            r->res->stopped = true;
            good = false;
        }
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
    char *messages_text = NULL;
    if (native && messages) {
        if (!json_is_array(messages)) {
            set_error(r->res, "Input must be a string or a list of messages");
            return;
        }
        messages_text = json_dumps(messages, JSON_COMPACT);
    } else if (!json_is_string(prompt) || json_string_length(prompt) == 0) {
        set_error(r->res, json_is_string(prompt) || json_is_null(prompt) || !prompt
                              ? "Missing 'prompt' in input"
                              : "Input must be a string or a list of messages");
        return;
    } else if (native && json_is_true(json_object_get(input, "apply_chat_template"))) {
        json_t *m = json_pack("[{s:s, s:O}]", "role", "user", "content", prompt);
        messages_text = m ? json_dumps(m, JSON_COMPACT) : NULL;
        json_decref(m);
    }
    struct pl_sampling_params sp;
    char *msg = NULL;
    if (!build_params(r->ctx, mode, input, &sp, &msg)) {
        set_error(r->res, msg);
        free(msg);
        free(messages_text);
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
    if (good)
        good = submit(r, 0, messages_text ? NULL : json_string_value(prompt), messages_text, &sp);
    pl_sampling_params_fini(&sp);
    free(messages_text);
    char errbuf[512];
    struct pl_request_output o;
    int ev;
    while (good && (ev = pl_wbox_next(r->box, &o, errbuf, sizeof(errbuf))) != 0) {
        if (ev < 0) {
            char *t = native ? openai_error_text(errbuf, "BadRequestError", 400) : NULL;
            set_error(r->res, t ? t : errbuf);
            free(t);
            good = false;
            break;
        }
        if (o.prompt_token_ids)
            c.n_prompt = o.n_prompt_token_ids;
        for (int k = 0; k < o.n_outputs && good; k++) {
            const struct pl_completion_output *co = &o.outputs[k];
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
        pl_request_output_fini(&o);
        if (stopped(r)) {
            r->res->stopped = true;
            good = false;
        }
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

/* Fails an OpenAI-route job with the JSON text of an OpenAI error object. */
static void openai_fail(struct run *r, const char *message, const char *type, int code)
{
    char *t = openai_error_text(message, type, code);
    set_error(r->res, t ? t : message);
    free(t);
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

/* Appends one SSE event ("data: <json>\n\n") of obj (stolen) to the batcher. */
static bool openai_event(struct pl_rp_sse_batcher *b, json_t *obj, json_t *ready)
{
    char *s = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (!s)
        return false;
    bool ok = pl_rp_sse_feed(b, "data: ", 6, ready) && pl_rp_sse_feed(b, s, strlen(s), ready) &&
              pl_rp_sse_feed(b, "\n\n", 2, ready);
    free(s);
    return ok;
}

/*
 * /v1/chat/completions and /v1/completions on the worker's engine thread: a
 * stop-gap until the OpenAI server's request handling (src/server/openai.c)
 * is merged, covering the common fields (model check, messages / prompt,
 * sampling fields, n, stream with stream_options.include_usage).
 */
static void run_openai_generate(struct run *r, const json_t *body, bool chat)
{
    const struct pl_rp_config *cfg = r->ctx->cfg;
    if (!json_is_object(body)) {
        openai_fail(r, "The request body must be a JSON object", "BadRequestError", 400);
        return;
    }
    const char *model = json_string_value(json_object_get(body, "model"));
    if (model && strcmp(model, cfg->served_model_name) != 0) {
        char msg[600];
        snprintf(msg, sizeof(msg), "The model `%s` does not exist.", model);
        openai_fail(r, msg, "NotFoundError", 404);
        return;
    }
    const json_t *messages = json_object_get(body, "messages");
    const json_t *prompt = json_object_get(body, "prompt");
    if (json_is_array(prompt) && json_array_size(prompt) == 1)
        prompt = json_array_get(prompt, 0);
    if (chat ? !json_is_array(messages) : !json_is_string(prompt)) {
        openai_fail(r, chat ? "messages: a list of messages is required"
                            : "prompt: a string (or a list of one string) is required",
                    "BadRequestError", 400);
        return;
    }
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(r->ctx->llm, &sp);
    sp.max_tokens = chat ? -1 : 16; /* vLLM: completions 16, chat up to the context */
    static const char *const extra[] = {"model", "messages", "prompt", "stream", "stream_options",
                                        "user", "echo", "suffix", "response_format", "tools",
                                        "tool_choice", "parallel_tool_calls", NULL};
    struct pl_err err;
    pl_err_clear(&err);
    pl_status st = pl_sampling_params_from_json(body, extra, &sp, &err);
    if (st == PL_STATUS_OK)
        st = pl_sampling_params_validate(&sp, pl_llm_vocab_size(r->ctx->llm), &err);
    if (st != PL_STATUS_OK) {
        openai_fail(r, err.msg, "BadRequestError", 400);
        return;
    }
    int n = sp.n > 0 ? sp.n : 1;
    bool stream = json_is_true(json_object_get(body, "stream"));
    bool usage_in_stream = json_is_true(
        json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    char *msgs = chat ? json_dumps(messages, JSON_COMPACT) : NULL;
    bool good = submit(r, 0, chat ? NULL : json_string_value(prompt), msgs, &sp);
    free(msgs);
    pl_sampling_params_fini(&sp);
    char id[96];
    snprintf(id, sizeof(id), "%s-%s", chat ? "chatcmpl" : "cmpl", r->job_id);
    json_int_t created = (json_int_t)time(NULL);
    const char *object = chat ? (stream ? "chat.completion.chunk" : "chat.completion")
                              : "text_completion";
    struct pl_rp_schedule sched;
    pl_rp_schedule_init(&sched, cfg->batch_max, cfg->batch_min, cfg->batch_growth);
    struct pl_rp_sse_batcher sse;
    pl_rp_sse_init(&sse, &sched, cfg->raw_openai_output);
    json_t *ready = json_array();
    char **text = calloc((size_t)n, sizeof(char *));
    size_t *tlen = calloc((size_t)n, sizeof(size_t));
    const char **finish = calloc((size_t)n, sizeof(char *));
    json_t **stop_reason = calloc((size_t)n, sizeof(json_t *));
    bool *started = calloc((size_t)n, sizeof(bool));
    good = good && ready && text && tlen && finish && stop_reason && started;
    long n_prompt = 0, n_gen = 0;
    char errbuf[512];
    struct pl_request_output o;
    int ev;
    while (good && (ev = pl_wbox_next(r->box, &o, errbuf, sizeof(errbuf))) != 0) {
        if (ev < 0) {
            openai_fail(r, errbuf, "BadRequestError", 400);
            good = false;
            break;
        }
        if (o.prompt_token_ids)
            n_prompt = o.n_prompt_token_ids;
        for (int k = 0; k < o.n_outputs && good; k++) {
            const struct pl_completion_output *co = &o.outputs[k];
            int i = co->index;
            if (i < 0 || i >= n)
                continue;
            n_gen += co->n_token_ids;
            const char *fr = pl_finish_reason_str(co->finish_reason);
            json_t *sr = co->stop_reason_kind == PL_STOP_REASON_STRING ? json_string(co->stop_str)
                         : co->stop_reason_kind == PL_STOP_REASON_TOKEN
                             ? json_integer(co->stop_token_id)
                             : json_null();
            if (fr) {
                finish[i] = fr;
                json_decref(stop_reason[i]);
                stop_reason[i] = json_incref(sr);
            }
            if (!stream) {
                if (co->text_len)
                    good = append_text(&text[i], &tlen[i], co->text, co->text_len);
                json_decref(sr);
                continue;
            }
            if (chat && !started[i]) {
                started[i] = true;
                good = openai_event(&sse, json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s}, s:n, s:n}]}",
                                                    "id", id, "object", object, "created", created,
                                                    "model", cfg->served_model_name, "choices",
                                                    "index", i, "delta", "role",
                                                    cfg->response_role, "content", "",
                                                    "logprobs", "finish_reason"),
                                    ready);
            }
            if (good && (co->text_len || fr)) {
                json_t *choice = chat ? json_pack("{s:i, s:{s:s%}, s:n}", "index", i, "delta",
                                                  "content", co->text ? co->text : "",
                                                  co->text_len, "logprobs")
                                      : json_pack("{s:i, s:s%, s:n}", "index", i, "text",
                                                  co->text ? co->text : "", co->text_len,
                                                  "logprobs");
                if (choice) {
                    json_object_set_new(choice, "finish_reason", fr ? json_string(fr) : json_null());
                    json_object_set(choice, "stop_reason", fr ? sr : json_null());
                }
                good = choice && openai_event(&sse, json_pack("{s:s, s:s, s:I, s:s, s:[o]}", "id", id,
                                                              "object", object, "created", created,
                                                              "model", cfg->served_model_name,
                                                              "choices", choice),
                                              ready);
            }
            json_decref(sr);
        }
        pl_request_output_fini(&o);
        if (good && stream)
            good = openai_emit_ready(r, ready);
        if (stopped(r)) {
            r->res->stopped = true;
            good = false;
        }
    }
    json_t *usage = json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)n_prompt,
                              "completion_tokens", (json_int_t)n_gen, "total_tokens",
                              (json_int_t)(n_prompt + n_gen));
    if (good && stream) {
        if (usage_in_stream)
            good = openai_event(&sse, json_pack("{s:s, s:s, s:I, s:s, s:[], s:O}", "id", id, "object",
                                                object, "created", created, "model",
                                                cfg->served_model_name, "choices", "usage", usage),
                                ready);
        good = good && pl_rp_sse_feed(&sse, "data: [DONE]\n\n", 14, ready) &&
               pl_rp_sse_finish(&sse, ready) && openai_emit_ready(r, ready);
    } else if (good) {
        json_t *choices = json_array();
        for (int i = 0; i < n; i++) {
            json_t *c = chat ? json_pack("{s:i, s:{s:s, s:s}, s:n}", "index", i, "message", "role",
                                         cfg->response_role, "content", text[i] ? text[i] : "",
                                         "logprobs")
                             : json_pack("{s:i, s:s, s:n}", "index", i, "text",
                                         text[i] ? text[i] : "", "logprobs");
            if (c) {
                json_object_set_new(c, "finish_reason",
                                    finish[i] ? json_string(finish[i]) : json_null());
                json_object_set(c, "stop_reason", stop_reason[i] ? stop_reason[i] : json_null());
            }
            json_array_append_new(choices, c);
        }
        json_t *resp = json_pack("{s:s, s:s, s:I, s:s, s:o, s:O}", "id", id, "object", object,
                                 "created", created, "model", cfg->served_model_name, "choices",
                                 choices, "usage", usage);
        good = resp && emit(r, resp);
    }
    if (!good && !r->res->error && !r->res->stopped)
        set_error(r->res, "out of memory");
    json_decref(usage);
    for (int i = 0; text && i < n; i++)
        free(text[i]);
    for (int i = 0; stop_reason && i < n; i++)
        json_decref(stop_reason[i]);
    free(text);
    free(tlen);
    free(finish);
    free(stop_reason);
    free(started);
    json_decref(ready);
    pl_rp_sse_fini(&sse);
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
        const struct pl_rp_config *cfg = r->ctx->cfg;
        json_t *perm = json_array();
        json_t *list = json_pack("{s:s, s:[{s:s, s:s, s:I, s:s, s:s, s:n, s:i, s:o}]}", "object",
                                 "list", "data", "id", cfg->served_model_name, "object", "model",
                                 "created", (json_int_t)time(NULL), "owned_by", "pagellm", "root",
                                 cfg->served_model_name, "parent", "max_model_len",
                                 pl_llm_max_model_len(r->ctx->llm), "permission", perm);
        if (list)
            emit(r, list);
        return;
    }
    if (!strcmp(route, "/v1/chat/completions") || !strcmp(route, "/v1/completions")) {
        run_openai_generate(r, body, !strcmp(route, "/v1/chat/completions"));
        return;
    }
    openai_fail(r, "Invalid route", "BadRequestError", 400);
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
    struct run r = {ctx, res, on_chunk, user, stop_flag, pl_wbox_new(ctx->eng), job_id};
    if (!r.box) {
        set_error(res, "out of memory");
        return;
    }
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
    pl_wbox_free(r.box);
}
