/*
 * test_openai_kinds.c -- the reasoning parser, and the chat / Responses /
 * embeddings request kinds assembled from engine deltas (the generation
 * interface of server/openai.h, as the HTTP routes and the worker drive it).
 *
 * References: the parser rules of reasoning.h checked on hand-made texts and
 * on every split of them into two and three pieces and byte by byte; a
 * scripted engine whose outputs are known text pieces (tags cut across
 * pieces), so chat and Responses answers, full and streamed, can be checked
 * against the script's split; the fake engine's embedding function
 * (fake_engine.h) for /v1/embeddings, with base64 decoded here independently.
 * Responses tools and text.format are checked against the chat route itself:
 * the same conversation and tools sent as a chat request must give the same
 * prompt and the same constraint, and the same refusal text.
 */
#include "engine/async_engine.h"
#include "fake_engine.h"
#include "openai_fixture.h"
#include "server/reasoning.h"
#include "server/serving_log.h"
#include "test.h"

#include <jansson.h>
#include <pthread.h>
#include <time.h>

#define MAX_MODEL_LEN 256

/* ---- the parser -------------------------------------------------------------- */

struct split {
    char r[512], c[512];
};

static void split_pieces(enum pl_reasoning_kind k, const char *text, const size_t *cuts, int n_cuts,
                         struct split *out)
{
    struct pl_reasoning p;
    pl_reasoning_init(&p, k);
    struct pl_sbuf r = {0}, c = {0};
    size_t prev = 0, len = strlen(text);
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        pl_reasoning_feed(&p, text + prev, end - prev, &r, &c);
        prev = end;
    }
    pl_reasoning_finish(&p, &r, &c);
    snprintf(out->r, sizeof(out->r), "%s", r.data ? r.data : "");
    snprintf(out->c, sizeof(out->c), "%s", c.data ? c.data : "");
    pl_sbuf_fini(&r);
    pl_sbuf_fini(&c);
}

static void expect_split(enum pl_reasoning_kind k, const char *text, const char *want_r,
                         const char *want_c)
{
    struct split whole;
    split_pieces(k, text, NULL, 0, &whole);
    CHECKF(!strcmp(whole.r, want_r) && !strcmp(whole.c, want_c),
           "'%s': reasoning '%s' content '%s', want '%s' / '%s'", text, whole.r, whole.c, want_r,
           want_c);
    size_t len = strlen(text);
    int bad = 0;
    for (size_t a = 0; a <= len; a++) {
        for (size_t b = a; b <= len; b++) {
            size_t cuts[2] = {a, b};
            struct split s;
            split_pieces(k, text, cuts, 2, &s);
            bad += strcmp(s.r, whole.r) != 0 || strcmp(s.c, whole.c) != 0;
        }
    }
    size_t bytes[512];
    for (size_t i = 0; i < len; i++)
        bytes[i] = i + 1;
    struct split s;
    split_pieces(k, text, bytes, len ? (int)len - 1 : 0, &s);
    bad += strcmp(s.r, whole.r) != 0 || strcmp(s.c, whole.c) != 0;
    CHECKF(bad == 0, "'%s': %d splits into pieces disagree with the whole", text, bad);
}

static void test_parser(void)
{
    enum pl_reasoning_kind k;
    CHECK(pl_reasoning_kind_from_name("qwen3", &k) && k == PL_REASONING_QWEN3);
    CHECK(pl_reasoning_kind_from_name("deepseek_r1", &k) && k == PL_REASONING_DEEPSEEK_R1);
    CHECK(pl_reasoning_kind_from_name(NULL, &k) && k == PL_REASONING_NONE);
    CHECK(!pl_reasoning_kind_from_name("granite", &k));

    const enum pl_reasoning_kind Q = PL_REASONING_QWEN3, D = PL_REASONING_DEEPSEEK_R1;
    /* qwen3: only an opened block is reasoning */
    expect_split(Q, "<think>\nabc\n</think>\n\nThe answer.", "\nabc\n", "\n\nThe answer.");
    expect_split(Q, "no tags here", "", "no tags here");
    expect_split(Q, "abc</think>def", "", "abc</think>def");
    expect_split(Q, "pre<think>in</think>post", "in", "prepost");
    expect_split(Q, "<think>cut off", "cut off", "");
    expect_split(Q, "<thin", "", "<thin");
    expect_split(Q, "a<<think>>b</think></think>c", ">b", "a<</think>c");
    /* deepseek_r1: the block is open from the start */
    expect_split(D, "reasoning</think>content", "reasoning", "content");
    expect_split(D, "<think>r</think>c", "r", "c");
    expect_split(D, "all reasoning", "all reasoning", "");
    expect_split(D, "x<think>y</think>z", "x<think>y", "z");
    expect_split(D, "</think>", "", "");
    expect_split(D, "<thi", "<thi", "");
    expect_split(D, "r</th", "r</th", "");
    expect_split(D, "</think><think>after", "", "<think>after");
    /* NONE: everything is content */
    expect_split(PL_REASONING_NONE, "<think>x</think>", "", "<think>x</think>");
}

/* ---- a scripted engine: each sample emits the script's pieces, one per step -------- */

#define SCRIPT_MAX 16

struct script_req {
    uint64_t id;
    int n, max_tokens, step;
    bool aborted, done;
};

struct script_engine {
    const char *pieces[SCRIPT_MAX];
    int n_pieces;
    struct script_req reqs[64];
    int n_reqs;
    char last_prompt[8192]; /* the decoded prompt of the last request */
    int last_constraint_kind; /* the last request's structured-output constraint */
    char last_constraint[4096];
};

static struct script_engine se;
static struct pl_tokenizer *tok;

static pl_status se_add(void *e, const struct pl_engine_request *rq, struct pl_err *err)
{
    struct script_engine *s = e;
    uint64_t id = rq->request_id;
    const int32_t *prompt = rq->prompt;
    int n_prompt = rq->n_prompt;
    const struct pl_sampling_params *sp = rq->params;
    if (!sp)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "the script engine does not pool");
    if (s->n_reqs == 64)
        return pl_err_set(err, PL_STATUS_LIMIT, "script engine full");
    char *text = NULL;
    size_t len = 0;
    if (pl_tokenizer_decode(tok, prompt, n_prompt, false, &text, &len, NULL) == PL_STATUS_OK)
        snprintf(s->last_prompt, sizeof(s->last_prompt), "%s", text);
    free(text);
    s->last_constraint_kind = sp->constraint_kind;
    snprintf(s->last_constraint, sizeof(s->last_constraint), "%s",
             sp->constraint ? sp->constraint : "");
    struct script_req *r = &s->reqs[s->n_reqs++];
    memset(r, 0, sizeof(*r));
    r->id = id;
    r->n = sp->n;
    r->max_tokens = sp->max_tokens > 0 ? sp->max_tokens : 1000;
    return PL_STATUS_OK;
}

static pl_status se_step(void *e, struct pl_err *err)
{
    return PL_STATUS_OK;
}

static bool se_has_unfinished(void *e)
{
    struct script_engine *s = e;
    return s->n_reqs > 0;
}

static int se_poll(void *e, struct pl_request_output *items, int cap)
{
    struct script_engine *s = e;
    int n_outs = 0;
    for (int i = 0; i < s->n_reqs && n_outs < cap;) {
        struct script_req *r = &s->reqs[i];
        struct pl_request_output *o = &items[n_outs++];
        memset(o, 0, sizeof(*o));
        o->request_num = r->id;
        if (r->step == 0) {
            o->prompt_token_ids = calloc(3, sizeof(int32_t));
            o->n_prompt_token_ids = 3;
        }
        o->outputs = calloc((size_t)r->n, sizeof(*o->outputs));
        o->n_outputs = r->n;
        bool last = r->aborted || r->step + 1 >= s->n_pieces || r->step + 1 >= r->max_tokens;
        for (int j = 0; j < r->n; j++) {
            struct pl_completion_output *sm = &o->outputs[j];
            sm->index = j;
            sm->stop_token_id = -1;
            if (!r->aborted) {
                sm->text = strdup(s->pieces[r->step]);
                sm->text_len = strlen(sm->text);
                sm->token_ids = malloc(sizeof(int32_t));
                sm->token_ids[0] = 5;
                sm->n_token_ids = 1;
            }
            sm->finish_reason = !last                     ? PL_FINISH_NONE
                         : r->aborted              ? PL_FINISH_ABORT
                         : r->step + 1 >= s->n_pieces ? PL_FINISH_STOP
                                                      : PL_FINISH_LENGTH;
        }
        o->finished = last;
        o->finish_reason = last ? o->outputs[0].finish_reason : PL_FINISH_NONE;
        r->step++;
        if (last)
            s->reqs[i] = s->reqs[--s->n_reqs];
        else
            i++;
    }
    return n_outs;
}

static void se_abort(void *e, uint64_t id)
{
    struct script_engine *s = e;
    for (int i = 0; i < s->n_reqs; i++)
        if (s->reqs[i].id == id)
            s->reqs[i].aborted = true;
}

static void se_stats(void *e, struct pl_llm_stats *st)
{
    st->num_running = ((struct script_engine *)e)->n_reqs;
}

static const struct pl_engine_ops se_ops = {se_add,  se_step,  se_has_unfinished,
                                            se_poll, se_abort, se_stats};

/* ---- driving a generation request to its end --------------------------------------- */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int news;
};

static void on_news(void *user)
{
    struct waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->news++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Waits for news (a 60 s hang guard); false when none came. */
static bool wait_news(struct waiter *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->news == 0 && rc == 0)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    bool got = w->news > 0;
    w->news = 0;
    pthread_mutex_unlock(&w->mu);
    return got;
}

/* Runs body as a request of kind: the full answer (*resp, or *e on failure) or, for a stream,
 * the SSE text (*sse, malloc'd). Returns false when parsing or submitting failed (e set). */
static bool run_gen(struct pl_openai *o, enum pl_openai_kind kind, const char *body, json_t **resp,
                    char **sse, struct pl_openai_error *e)
{
    struct pl_openai_gen *g = NULL;
    *resp = NULL;
    *sse = NULL;
    if (pl_openai_gen_new(o, kind, body, strlen(body), &g, e) != PL_STATUS_OK)
        return false;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    if (pl_openai_gen_submit(g, on_news, &w, e) != PL_STATUS_OK) {
        pl_openai_gen_free(g);
        return false;
    }
    if (pl_openai_gen_is_stream(g)) {
        struct pl_sbuf b = {0};
        while (pl_openai_gen_produce(g, &b))
            if (!wait_news(&w))
                break;
        *sse = pl_sbuf_take(&b, NULL);
    } else {
        while (!pl_openai_gen_result(g, resp, e))
            if (!wait_news(&w))
                break;
    }
    pl_openai_gen_free(g);
    return true;
}

/* The data payloads of an SSE text (each with its "event:" name or NULL), as JSON. */
static json_t *sse_events(const char *sse)
{
    json_t *list = json_array();
    const char *p = sse;
    while (p && *p) {
        const char *end = strstr(p, "\n\n");
        if (!end)
            break;
        char ev[128] = "";
        const char *data = p;
        if (!strncmp(p, "event: ", 7)) {
            const char *nl = strchr(p, '\n');
            snprintf(ev, sizeof(ev), "%.*s", (int)(nl - p - 7), p + 7);
            data = nl + 1;
        }
        json_t *item = json_object();
        json_object_set_new(item, "event", ev[0] ? json_string(ev) : json_null());
        if (!strncmp(data, "data: ", 6)) {
            json_t *j = json_loadb(data + 6, (size_t)(end - data - 6), 0, NULL);
            json_object_set_new(item, "data", j ? j : json_stringn(data + 6, (size_t)(end - data - 6)));
        }
        json_array_append_new(list, item);
        p = end + 2;
    }
    return list;
}

static const char *jstr(const json_t *j, const char *path)
{
    /* "a.b.0.c": object keys and array indexes */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const json_t *cur = j;
    for (char *tok_s = strtok(buf, "."); tok_s && cur; tok_s = strtok(NULL, "."))
        cur = json_is_array(cur) ? json_array_get(cur, (size_t)atoi(tok_s))
                                 : json_object_get(cur, tok_s);
    return json_string_value(cur);
}

static struct pl_openai *new_openai(struct pl_async_engine *ae, const char *parser,
                                    const char *tmpl)
{
    const char *names[] = {"tiny"};
    struct pl_openai_params p = {.served_names = names,
                                 .n_served_names = 1,
                                 .model_root = "/m",
                                 .max_model_len = MAX_MODEL_LEN,
                                 .tok = tok,
                                 .chat_template = tmpl,
                                 .ae = ae,
                                 .reasoning_parser = parser};
    struct pl_openai *o = NULL;
    struct pl_err err = {0};
    if (pl_openai_new(&p, &o, &err) != PL_STATUS_OK)
        fprintf(stderr, "openai: %s\n", err.msg);
    return o;
}

/* A ChatML template whose generation prompt opens the think block (DeepSeek-R1's way). */
static const char *const think_template =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

static void set_script(const char *const *pieces, int n)
{
    for (int i = 0; i < n; i++)
        se.pieces[i] = pieces[i];
    se.n_pieces = n;
}

/* Chat, full and streamed: message.reasoning_content / content and the deltas' concatenations. */
static void check_chat(struct pl_openai *o, const char *want_r, const char *want_c, int n)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"n\":%d%s}", n,
             "");
    json_t *resp;
    char *sse;
    struct pl_openai_error e;
    REQUIRE(run_gen(o, PL_OPENAI_CHAT, body, &resp, &sse, &e));
    REQUIRE(resp);
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof(path), "choices.%d.message.reasoning_content", i);
        const char *r = jstr(resp, path);
        snprintf(path, sizeof(path), "choices.%d.message.content", i);
        const char *c = jstr(resp, path);
        CHECKF(want_r[0] ? r && !strcmp(r, want_r) : r == NULL, "full: reasoning '%s', want '%s'",
               r ? r : "(null)", want_r);
        CHECKF(want_c[0] || !want_r[0] ? c && !strcmp(c, want_c) : c == NULL,
               "full: content '%s', want '%s'", c ? c : "(null)", want_c);
    }
    json_decref(resp);

    snprintf(body, sizeof(body),
             "{\"messages\":[{\"role\":\"user\",\"content\":\"What is 2+2?\"}],\"n\":%d,"
             "\"stream\":true}",
             n);
    REQUIRE(run_gen(o, PL_OPENAI_CHAT, body, &resp, &sse, &e));
    REQUIRE(sse);
    json_t *evs = sse_events(sse);
    struct pl_sbuf r[4] = {{0}}, c[4] = {{0}};
    int n_finish = 0;
    size_t i;
    json_t *ev;
    json_array_foreach(evs, i, ev)
    {
        json_t *ch = json_array_get(json_object_get(json_object_get(ev, "data"), "choices"), 0);
        if (!ch)
            continue;
        int idx = (int)json_integer_value(json_object_get(ch, "index"));
        REQUIRE(idx >= 0 && idx < n);
        json_t *d = json_object_get(ch, "delta");
        const char *dr = json_string_value(json_object_get(d, "reasoning_content"));
        const char *dc = json_string_value(json_object_get(d, "content"));
        if (dr) {
            CHECKF(dr[0], "an empty reasoning delta");
            pl_sbuf_puts(&r[idx], dr);
        }
        if (dc)
            pl_sbuf_puts(&c[idx], dc);
        n_finish += json_string_value(json_object_get(ch, "finish_reason")) != NULL;
    }
    CHECK(n_finish == n);
    for (int k = 0; k < n; k++) {
        CHECKF(!strcmp(r[k].data ? r[k].data : "", want_r), "stream %d: reasoning '%s', want '%s'",
               k, r[k].data ? r[k].data : "", want_r);
        CHECKF(!strcmp(c[k].data ? c[k].data : "", want_c), "stream %d: content '%s', want '%s'",
               k, c[k].data ? c[k].data : "", want_c);
        pl_sbuf_fini(&r[k]);
        pl_sbuf_fini(&c[k]);
    }
    json_decref(evs);
    free(sse);
}

static void test_chat_reasoning(void)
{
    struct pl_err err;
    struct pl_async_engine *ae = NULL;
    REQUIRE(pl_async_engine_new(&se_ops, &se, NULL, &ae, &err) == PL_STATUS_OK);

    /* deepseek_r1 with a template that opens the block: no <think> in the output */
    struct pl_openai *o = new_openai(ae, "deepseek_r1", think_template);
    REQUIRE(o);
    static const char *const ds[] = {"Two and", " two make four.</", "thi", "nk>\n\nThe ans",
                                     "wer is 4."};
    set_script(ds, 5);
    check_chat(o, "Two and two make four.", "\n\nThe answer is 4.", 1);
    size_t lp = strlen(se.last_prompt);
    CHECKF(lp > 8 && !strcmp(se.last_prompt + lp - 8, "<think>\n"), "prompt ends '%s'",
           lp > 20 ? se.last_prompt + lp - 20 : se.last_prompt);
    check_chat(o, "Two and two make four.", "\n\nThe answer is 4.", 2);
    /* cut before </think> (max_tokens): all reasoning, content null */
    static const char *const cut[] = {"still ", "thinking", " <", "/thi"};
    set_script(cut, 4);
    check_chat(o, "still thinking </thi", "", 1);
    pl_openai_free(o);

    /* qwen3: reasoning only in an opened block; text without tags is content */
    o = new_openai(ae, "qwen3", NULL);
    REQUIRE(o);
    static const char *const qw[] = {"<th", "ink>\nLet me see", ".\n</", "think>", "\n\nIt is 4."};
    set_script(qw, 5);
    check_chat(o, "\nLet me see.\n", "\n\nIt is 4.", 1);
    static const char *const plain[] = {"It is", " 4 <t", "oo>."};
    set_script(plain, 3);
    check_chat(o, "", "It is 4 <too>.", 1);
    pl_openai_free(o);

    /* no parser: the text as it is, no reasoning_content key */
    o = new_openai(ae, NULL, NULL);
    REQUIRE(o);
    set_script(qw, 5);
    json_t *resp;
    char *sse;
    struct pl_openai_error e;
    REQUIRE(run_gen(o, PL_OPENAI_CHAT, "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                    &resp, &sse, &e) && resp);
    CHECK(!json_object_get(json_object_get(json_array_get(json_object_get(resp, "choices"), 0),
                                           "message"),
                           "reasoning_content"));
    const char *c = jstr(resp, "choices.0.message.content");
    CHECK(c && !strcmp(c, "<think>\nLet me see.\n</think>\n\nIt is 4."));
    json_decref(resp);
    pl_openai_free(o);
    pl_async_engine_free(ae);
}

/* ---- Responses ------------------------------------------------------------------ */

static void test_responses(void)
{
    struct pl_err err;
    struct pl_async_engine *ae = NULL;
    REQUIRE(pl_async_engine_new(&se_ops, &se, NULL, &ae, &err) == PL_STATUS_OK);
    struct pl_openai *o = new_openai(ae, "deepseek_r1", think_template);
    REQUIRE(o);
    static const char *const ds[] = {"Two and", " two.</", "think>", "Four", "."};
    set_script(ds, 5);
    json_t *resp;
    char *sse;
    struct pl_openai_error e;
    const char *body = "{\"model\":\"tiny\",\"input\":\"What is 2+2?\",\"instructions\":\"Be "
                       "brief.\",\"store\":false,\"metadata\":{\"k\":\"v\"}}";
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, body, &resp, &sse, &e) && resp);
    CHECKF(strstr(se.last_prompt, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                                  "What is 2+2?<|im_end|>"),
           "prompt: %s", se.last_prompt);
    CHECK(!strcmp(jstr(resp, "object"), "response") && !strcmp(jstr(resp, "status"), "completed"));
    CHECK(!strncmp(jstr(resp, "id"), "resp_", 5));
    CHECK(!strcmp(jstr(resp, "output.0.type"), "reasoning"));
    CHECK(!strcmp(jstr(resp, "output.0.content.0.text"), "Two and two."));
    CHECK(!strcmp(jstr(resp, "output.1.type"), "message"));
    CHECK(!strcmp(jstr(resp, "output.1.role"), "assistant"));
    CHECK(!strcmp(jstr(resp, "output.1.content.0.type"), "output_text"));
    CHECK(!strcmp(jstr(resp, "output.1.content.0.text"), "Four."));
    CHECK(!strcmp(jstr(resp, "metadata.k"), "v") && !strcmp(jstr(resp, "instructions"), "Be brief."));
    CHECK(json_is_false(json_object_get(resp, "store")));
    json_t *usage = json_object_get(resp, "usage");
    CHECK(json_integer_value(json_object_get(usage, "output_tokens")) == 5 &&
          json_integer_value(json_object_get(usage, "input_tokens")) == 3 &&
          json_integer_value(json_object_get(usage, "total_tokens")) == 8);

    /* the stream: the event sequence, deltas agreeing with the full answer */
    const char *sbody = "{\"model\":\"tiny\",\"input\":\"What is 2+2?\",\"instructions\":\"Be "
                        "brief.\",\"store\":false,\"metadata\":{\"k\":\"v\"},\"stream\":true}";
    json_t *none;
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, sbody, &none, &sse, &e) && sse);
    json_t *evs = sse_events(sse);
    struct pl_sbuf order = {0}, rtext = {0}, ctext = {0};
    size_t i;
    json_t *ev;
    json_t *final = NULL;
    json_array_foreach(evs, i, ev)
    {
        const char *name = json_string_value(json_object_get(ev, "event"));
        json_t *d = json_object_get(ev, "data");
        REQUIRE(name && json_is_object(d));
        CHECKF(!strcmp(name, jstr(d, "type")), "event %s carries type %s", name, jstr(d, "type"));
        CHECKF(json_integer_value(json_object_get(d, "sequence_number")) == (json_int_t)i,
               "sequence_number of event %zu", i);
        if (!strcmp(name, "response.reasoning_text.delta"))
            pl_sbuf_puts(&rtext, jstr(d, "delta"));
        else if (!strcmp(name, "response.output_text.delta"))
            pl_sbuf_puts(&ctext, jstr(d, "delta"));
        else {
            pl_sbuf_printf(&order, "%s%s", order.len ? " " : "", name + strlen("response."));
            if (!strcmp(name, "response.completed"))
                final = json_object_get(d, "response");
        }
    }
    const char *want_order =
        "created in_progress output_item.added content_part.added output_item.added "
        "content_part.added reasoning_text.done content_part.done output_item.done "
        "output_text.done content_part.done output_item.done completed";
    CHECKF(order.data && !strcmp(order.data, want_order), "events: %s", order.data);
    CHECK(rtext.data && !strcmp(rtext.data, "Two and two."));
    CHECK(ctext.data && !strcmp(ctext.data, "Four."));
    REQUIRE(final);
    /* the final object equals the non-streamed one but for ids and times */
    json_t *a = json_deep_copy(final), *b = json_deep_copy(resp);
    json_t *objs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        json_object_del(objs[k], "id");
        json_object_del(objs[k], "created_at");
        json_t *out = json_object_get(objs[k], "output");
        size_t j;
        json_t *item;
        json_array_foreach(out, j, item) json_object_del(item, "id");
    }
    char *sa = json_dumps(a, JSON_SORT_KEYS), *sb = json_dumps(b, JSON_SORT_KEYS);
    CHECKF(!strcmp(sa, sb), "stream final %s\nfull %s", sa, sb);
    free(sa), free(sb);
    json_decref(a), json_decref(b);
    pl_sbuf_fini(&order), pl_sbuf_fini(&rtext), pl_sbuf_fini(&ctext);
    json_decref(evs);
    free(sse);
    json_decref(resp);

    /* cut by max_output_tokens: incomplete */
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, "{\"input\":\"x\",\"max_output_tokens\":2}", &resp,
                    &sse, &e) && resp);
    CHECK(!strcmp(jstr(resp, "status"), "incomplete"));
    CHECK(!strcmp(jstr(resp, "incomplete_details.reason"), "max_output_tokens"));
    json_decref(resp);

    /* input as a message list with content parts */
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES,
                    "{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":"
                    "\"Hi\"}]},{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":"
                    "\"output_text\",\"text\":\"Hello\"}]},{\"type\":\"reasoning\",\"summary\":[]},"
                    "{\"role\":\"user\",\"content\":\"More\"}]}",
                    &resp, &sse, &e) && resp);
    CHECKF(strstr(se.last_prompt, "user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
                                  "<|im_start|>user\nMore<|im_end|>"),
           "prompt: %s", se.last_prompt);
    json_decref(resp);

    /* refusals, named by the Responses field */
    struct {
        const char *body, *param, *needle;
    } bad[] = {
        {"{\"input\":\"x\",\"previous_response_id\":\"resp_1\"}", "previous_response_id", "stored"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", "tools", "not supported"},
        {"{\"input\":\"x\",\"background\":true}", "background", "background"},
        {"{\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\",\"image_url\":"
         "\"u\"}]}]}",
         "input", "input_image"},
        {"{\"input\":[{\"type\":\"function_call_output\",\"call_id\":\"c\",\"output\":\"o\"}]}",
         "input", "no function_call item"},
        {"{\"input\":\"x\",\"max_output_tokens\":0}", "max_output_tokens", "max_output_tokens"},
        {"{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\"}}}", "text.format",
         "text.format.name"},
        {"{\"instructions\":\"x\"}", "input", "required"},
        {"{\"input\":\"x\",\"model\":\"gpt-5\"}", "model", "does not exist"},
        {"{\"input\":\"x\",\"temperature\":\"hot\"}", "temperature", "temperature"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        bool ok = run_gen(o, PL_OPENAI_RESPONSES, bad[k].body, &resp, &sse, &e);
        CHECKF(!ok && (e.status == 400 || e.status == 404) && !strcmp(e.param, bad[k].param) &&
                   strstr(e.message, bad[k].needle),
               "%s: ok %d status %d param '%s' message '%s'", bad[k].body, ok, e.status, e.param,
               e.message);
        json_decref(resp);
        free(sse);
    }
    pl_openai_free(o);
    pl_async_engine_free(ae);
}

/* ---- Responses: function tools and text.format ------------------------------------ */

/* Function tools as the Responses API writes them, and the same tools in chat's form. */
static const char R_TOOLS[] =
    "[{\"type\":\"function\",\"name\":\"get_weather\",\"description\":\"Weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"]},\"strict\":true},{\"type\":\"function\",\"name\":\"now\"}]";
static const char C_TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"]},\"strict\":true}},{\"type\":\"function\",\"function\":{\"name\":"
    "\"now\"}}]";

/* A layer with auto tool choice and the tests' Hermes-style template (tools in the system
 * turn, calls as <tool_call> blocks, results as <tool_response> turns). */
static struct pl_openai *new_tools_openai(struct pl_async_engine *ae)
{
    const char *path = "tests/fixtures/chat_template/templates/hermes_tools.jinja";
    FILE *f = fopen(pl_test_path(path), "rb");
    if (!f)
        return NULL;
    static char tmpl[16384];
    size_t n = fread(tmpl, 1, sizeof(tmpl) - 1, f);
    fclose(f);
    tmpl[n] = '\0';
    const char *names[] = {"tiny"};
    struct pl_openai_params p = {.served_names = names,
                                 .n_served_names = 1,
                                 .model_root = "/m",
                                 .max_model_len = 4096,
                                 .tok = tok,
                                 .chat_template = tmpl,
                                 .ae = ae,
                                 .enable_auto_tool_choice = true};
    struct pl_openai *o = NULL;
    struct pl_err err = {0};
    if (pl_openai_new(&p, &o, &err) != PL_STATUS_OK)
        fprintf(stderr, "openai: %s\n", err.msg);
    return o;
}

/* What the engine got for a request: its prompt and constraint. */
struct seen {
    char prompt[8192];
    int constraint_kind;
    char constraint[4096];
};

static void take_seen(struct seen *s)
{
    snprintf(s->prompt, sizeof(s->prompt), "%s", se.last_prompt);
    s->constraint_kind = se.last_constraint_kind;
    snprintf(s->constraint, sizeof(s->constraint), "%s", se.last_constraint);
}

/* Runs a Responses body (full) and a chat body: both must reach the engine with the same
 * prompt and constraint. Returns the Responses object (the caller frees it). */
static json_t *same_as_chat(struct pl_openai *o, const char *rbody, const char *cbody)
{
    json_t *resp = NULL, *chat = NULL;
    char *sse = NULL;
    struct pl_openai_error e;
    bool ok = run_gen(o, PL_OPENAI_RESPONSES, rbody, &resp, &sse, &e);
    CHECKF(ok && resp, "%s: %s", rbody, e.message);
    struct seen a, b;
    take_seen(&a);
    ok = run_gen(o, PL_OPENAI_CHAT, cbody, &chat, &sse, &e);
    CHECKF(ok && chat, "%s: %s", cbody, e.message);
    take_seen(&b);
    CHECKF(!strcmp(a.prompt, b.prompt), "prompts differ:\n  responses: %s\n  chat:      %s",
           a.prompt, b.prompt);
    CHECKF(a.constraint_kind == b.constraint_kind && !strcmp(a.constraint, b.constraint),
           "constraints differ: %d '%s' / %d '%s'", a.constraint_kind, a.constraint,
           b.constraint_kind, b.constraint);
    json_decref(chat);
    return resp;
}

/* The output items as "type" or "function_call name(arguments) status", joined by '|'. */
static void output_shape(const json_t *resp, struct pl_sbuf *b)
{
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(resp, "output"), i, item)
    {
        const char *type = jstr(item, "type");
        if (i)
            pl_sbuf_puts(b, "|");
        if (type && !strcmp(type, "function_call")) {
            const char *id = jstr(item, "id"), *call_id = jstr(item, "call_id");
            CHECKF(id && !strncmp(id, "fc_", 3) && call_id && !strncmp(call_id, "call_", 5),
                   "ids %s %s", id ? id : "-", call_id ? call_id : "-");
            pl_sbuf_printf(b, "%s(%s) %s", jstr(item, "name"), jstr(item, "arguments"),
                           jstr(item, "status"));
        } else if (type && !strcmp(type, "message")) {
            const char *t = jstr(item, "content.0.text");
            pl_sbuf_printf(b, "message '%s'", t ? t : "-");
        } else {
            pl_sbuf_puts(b, type ? type : "?");
        }
    }
}

/*
 * The stream of rbody: sequence numbers count up, every delta belongs to an opened item
 * and adds up to what its done events report, the events come in want_order (deltas left
 * out), and the final object is full's but for ids and times.
 */
static void check_stream(struct pl_openai *o, const char *rbody, const json_t *full,
                         const char *want_order)
{
    json_t *resp;
    char *sse;
    struct pl_openai_error e;
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, rbody, &resp, &sse, &e) && sse);
    json_t *evs = sse_events(sse);
    json_t *acc = json_object();  /* output_index -> the deltas so far */
    json_t *opened = json_object(); /* output_index -> the item as added */
    struct pl_sbuf order = {0};
    json_t *final = NULL;
    size_t i;
    json_t *ev;
    json_array_foreach(evs, i, ev)
    {
        const char *name = json_string_value(json_object_get(ev, "event"));
        json_t *d = json_object_get(ev, "data");
        REQUIRE(name && json_is_object(d));
        CHECKF(!strcmp(name, jstr(d, "type")), "event %s carries type %s", name, jstr(d, "type"));
        CHECKF(json_integer_value(json_object_get(d, "sequence_number")) == (json_int_t)i,
               "sequence_number of event %zu", i);
        char key[32];
        snprintf(key, sizeof(key), "%lld",
                 (long long)json_integer_value(json_object_get(d, "output_index")));
        const char *delta = jstr(d, "delta");
        if (delta) {
            json_t *item = json_object_get(opened, key);
            CHECKF(item && !strcmp(jstr(item, "id"), jstr(d, "item_id")), "%s: item %s not open",
                   name, jstr(d, "item_id"));
            const char *had = json_string_value(json_object_get(acc, key));
            char *joined = NULL;
            REQUIRE(asprintf(&joined, "%s%s", had ? had : "", delta) >= 0);
            json_object_set_new(acc, key, json_string(joined));
            free(joined);
            continue;
        }
        pl_sbuf_printf(&order, "%s%s", order.len ? " " : "", name + strlen("response."));
        if (!strcmp(name, "response.output_item.added")) {
            json_t *item = json_object_get(d, "item");
            CHECKF(!strcmp(jstr(item, "status"), "in_progress"), "added %s", jstr(item, "status"));
            json_object_set(opened, key, item);
        } else if (!strcmp(name, "response.function_call_arguments.done")) {
            const char *got = json_string_value(json_object_get(acc, key));
            CHECKF(!strcmp(jstr(d, "arguments"), got ? got : ""), "arguments %s, deltas %s",
                   jstr(d, "arguments"), got ? got : "");
            CHECKF(!strcmp(jstr(d, "name"), jstr(json_object_get(opened, key), "name")), "name");
        } else if (!strcmp(name, "response.output_item.done")) {
            json_t *item = json_object_get(d, "item"), *was = json_object_get(opened, key);
            const char *got = json_string_value(json_object_get(acc, key));
            const char *type = jstr(item, "type");
            const char *text = !strcmp(type, "function_call") ? jstr(item, "arguments")
                                                              : jstr(item, "content.0.text");
            CHECKF(was && !strcmp(jstr(was, "id"), jstr(item, "id")), "done %s not opened", key);
            CHECKF(text && !strcmp(text, got ? got : ""), "item %s: '%s', deltas '%s'", key,
                   text ? text : "-", got ? got : "");
            if (!strcmp(type, "function_call"))
                CHECK(!strcmp(jstr(item, "call_id"), jstr(was, "call_id")) &&
                      !strcmp(jstr(item, "name"), jstr(was, "name")));
        } else if (!strcmp(name, "response.completed") || !strcmp(name, "response.incomplete")) {
            final = json_object_get(d, "response");
        }
    }
    CHECKF(order.data && !strcmp(order.data, want_order), "events: %s\n  want:   %s", order.data,
           want_order);
    REQUIRE(final);
    json_t *a = json_deep_copy(final), *b = json_deep_copy(full);
    json_t *objs[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        json_object_del(objs[k], "id");
        json_object_del(objs[k], "created_at");
        size_t j;
        json_t *item;
        json_array_foreach(json_object_get(objs[k], "output"), j, item)
        {
            json_object_del(item, "id");
            json_object_del(item, "call_id");
        }
    }
    char *sa = json_dumps(a, JSON_SORT_KEYS), *sb = json_dumps(b, JSON_SORT_KEYS);
    CHECKF(!strcmp(sa, sb), "stream final %s\nfull %s", sa, sb);
    free(sa), free(sb);
    json_decref(a), json_decref(b);
    json_decref(acc);
    json_decref(opened);
    pl_sbuf_fini(&order);
    json_decref(evs);
    free(sse);
}

/* Full and streamed: rbody's output is want (output_shape's form); with a chat body, the
 * prompt and the constraint are the chat route's. */
static void expect_output(struct pl_openai *o, const char *rbody, const char *cbody,
                          const char *want, const char *want_order)
{
    json_t *resp = same_as_chat(o, rbody, cbody);
    REQUIRE(resp);
    struct pl_sbuf got = {0};
    output_shape(resp, &got);
    CHECKF(got.data && !strcmp(got.data, want), "%s:\n  output %s\n  want   %s", rbody, got.data,
           want);
    pl_sbuf_fini(&got);
    char *sbody = malloc(strlen(rbody) + 32);
    snprintf(sbody, strlen(rbody) + 32, "%.*s,\"stream\":true}", (int)strlen(rbody) - 1, rbody);
    check_stream(o, sbody, resp, want_order);
    free(sbody);
    json_decref(resp);
}

static void test_responses_tools(void)
{
    struct pl_err err;
    struct pl_async_engine *ae = NULL;
    REQUIRE(pl_async_engine_new(&se_ops, &se, NULL, &ae, &err) == PL_STATUS_OK);
    struct pl_openai *o = new_tools_openai(ae);
    REQUIRE(o);
    char rb[4096], cb[4096];
    const char *user_c = "\"messages\":[{\"role\":\"user\",\"content\":\"w?\"}]";

    /* auto (the Hermes parser the template shows): content, then the call */
    static const char *const hermes[] = {"Let me look.\n<tool",
                                         "_call>\n{\"name\": \"get_weather\", \"argu",
                                         "ments\": {\"city\": \"Pa", "ris\"}}\n</tool_call>"};
    set_script(hermes, 4);
    snprintf(rb, sizeof(rb), "{\"input\":\"w?\",\"tools\":%s}", R_TOOLS);
    snprintf(cb, sizeof(cb), "{%s,\"tools\":%s}", user_c, C_TOOLS);
    expect_output(o, rb, cb,
                  "message 'Let me look.\n'|get_weather({\"city\": \"Paris\"}) completed",
                  "created in_progress output_item.added content_part.added output_item.added "
                  "output_text.done content_part.done output_item.done "
                  "function_call_arguments.done output_item.done completed");
    /* the template saw the tools in chat's form (vLLM's dump: name, description, parameters,
     * then the other keys) */
    CHECKF(strstr(se.last_prompt, "{\"type\": \"function\", \"function\": {\"name\": "
                                  "\"get_weather\", \"description\": \"Weather\", \"parameters\": "
                                  "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": "
                                  "\"string\"}}, \"required\": [\"city\"]}, \"strict\": true}}"),
           "prompt: %s", se.last_prompt);
    /* the response reports the request's tools, tool_choice and text.format */
    json_t *resp;
    char *sse;
    struct pl_openai_error e;
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, rb, &resp, &sse, &e) && resp);
    json_t *want_tools = json_loads(R_TOOLS, 0, NULL);
    CHECK(json_equal(json_object_get(resp, "tools"), want_tools));
    json_decref(want_tools);
    CHECK(!strcmp(jstr(resp, "tool_choice"), "auto") &&
          !strcmp(jstr(resp, "text.format.type"), "text"));
    CHECK(!strcmp(jstr(resp, "status"), "completed"));
    json_decref(resp);

    /* tool_choice none: the same text is plain content */
    snprintf(rb, sizeof(rb), "{\"input\":\"w?\",\"tools\":%s,\"tool_choice\":\"none\"}", R_TOOLS);
    snprintf(cb, sizeof(cb), "{%s,\"tools\":%s,\"tool_choice\":\"none\"}", user_c, C_TOOLS);
    expect_output(o, rb, cb,
                  "message 'Let me look.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": "
                  "{\"city\": \"Paris\"}}\n</tool_call>'",
                  "created in_progress output_item.added content_part.added output_text.done "
                  "content_part.done output_item.done completed");

    /* required: vLLM's list of calls under the chat route's grammar; no message item */
    static const char *const list[] = {"[{\"name\": \"get_weather\", \"param",
                                       "eters\": {\"city\": \"Oslo\"}}, ",
                                       "{\"name\": \"now\", \"parameters\": {}}]"};
    set_script(list, 3);
    snprintf(rb, sizeof(rb), "{\"input\":\"w?\",\"tools\":%s,\"tool_choice\":\"required\"}",
             R_TOOLS);
    snprintf(cb, sizeof(cb), "{%s,\"tools\":%s,\"tool_choice\":\"required\"}", user_c, C_TOOLS);
    expect_output(o, rb, cb,
                  "get_weather({\"city\": \"Oslo\"}) completed|now({}) completed",
                  "created in_progress output_item.added output_item.added "
                  "function_call_arguments.done output_item.done function_call_arguments.done "
                  "output_item.done completed");
    CHECK(se.last_constraint_kind == PL_CONSTRAINT_JSON && strstr(se.last_constraint, "anyOf"));
    /* parallel_tool_calls false: one call (the grammar's maxItems, the parser's limit) */
    snprintf(rb, sizeof(rb),
             "{\"input\":\"w?\",\"tools\":%s,\"tool_choice\":\"required\",\"parallel_tool_calls\":"
             "false}",
             R_TOOLS);
    snprintf(cb, sizeof(cb),
             "{%s,\"tools\":%s,\"tool_choice\":\"required\",\"parallel_tool_calls\":false}", user_c,
             C_TOOLS);
    expect_output(o, rb, cb, "get_weather({\"city\": \"Oslo\"}) completed",
                  "created in_progress output_item.added function_call_arguments.done "
                  "output_item.done completed");
    CHECK(strstr(se.last_constraint, "\"maxItems\":1"));

    /* a named function: the whole answer is its arguments */
    static const char *const args[] = {"{\"city\"", ": \"Li", "ma\"}"};
    set_script(args, 3);
    snprintf(rb, sizeof(rb),
             "{\"input\":\"w?\",\"tools\":%s,\"tool_choice\":{\"type\":\"function\",\"name\":"
             "\"get_weather\"}}",
             R_TOOLS);
    snprintf(cb, sizeof(cb),
             "{%s,\"tools\":%s,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
             "\"get_weather\"}}}",
             user_c, C_TOOLS);
    expect_output(o, rb, cb, "get_weather({\"city\": \"Lima\"}) completed",
                  "created in_progress output_item.added function_call_arguments.done "
                  "output_item.done completed");
    CHECK(se.last_constraint_kind == PL_CONSTRAINT_JSON &&
          !strncmp(se.last_constraint, "{\"type\":\"object\"", 16));
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, rb, &resp, &sse, &e) && resp);
    CHECK(!strcmp(jstr(resp, "tool_choice.name"), "get_weather"));
    json_decref(resp);
    /* cut by max_output_tokens: the call keeps what it got, and it is incomplete */
    snprintf(rb, sizeof(rb),
             "{\"input\":\"w?\",\"tools\":%s,\"tool_choice\":{\"type\":\"function\",\"name\":"
             "\"get_weather\"},\"max_output_tokens\":2}",
             R_TOOLS);
    snprintf(cb, sizeof(cb),
             "{%s,\"tools\":%s,\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":"
             "\"get_weather\"}},\"max_tokens\":2}",
             user_c, C_TOOLS);
    expect_output(o, rb, cb, "get_weather({\"city\": \"Li) incomplete",
                  "created in_progress output_item.added function_call_arguments.done "
                  "output_item.done incomplete");

    /* text.format: the chat route's response_format constraint */
    static const char *const json_text[] = {"{\"n\":", " 4}"};
    set_script(json_text, 2);
    const char *schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\"}},"
                         "\"required\":[\"n\"]}";
    snprintf(rb, sizeof(rb),
             "{\"input\":\"w?\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"n\","
             "\"schema\":%s,\"strict\":true}}}",
             schema);
    snprintf(cb, sizeof(cb),
             "{%s,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"n\","
             "\"schema\":%s,\"strict\":true}}}",
             user_c, schema);
    expect_output(o, rb, cb, "message '{\"n\": 4}'",
                  "created in_progress output_item.added content_part.added output_text.done "
                  "content_part.done output_item.done completed");
    CHECK(se.last_constraint_kind == PL_CONSTRAINT_JSON && !strcmp(se.last_constraint, schema));
    REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, rb, &resp, &sse, &e) && resp);
    CHECK(!strcmp(jstr(resp, "text.format.type"), "json_schema") &&
          !strcmp(jstr(resp, "text.format.name"), "n"));
    json_decref(resp);
    snprintf(rb, sizeof(rb), "{\"input\":\"w?\",\"text\":{\"format\":{\"type\":\"json_object\"}}}");
    snprintf(cb, sizeof(cb), "{%s,\"response_format\":{\"type\":\"json_object\"}}", user_c);
    resp = same_as_chat(o, rb, cb);
    CHECK(se.last_constraint_kind == PL_CONSTRAINT_JSON_OBJECT);
    json_decref(resp);
    snprintf(rb, sizeof(rb), "{\"input\":\"w?\",\"text\":{\"format\":{\"type\":\"text\"}}}");
    resp = same_as_chat(o, rb, "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"}]}");
    CHECK(se.last_constraint_kind == PL_CONSTRAINT_NONE);
    json_decref(resp);
    /* auto with a constraint: the constraint shapes the text the parser reads */
    set_script(hermes, 4);
    snprintf(rb, sizeof(rb),
             "{\"input\":\"w?\",\"tools\":%s,\"text\":{\"format\":{\"type\":\"json_object\"}}}",
             R_TOOLS);
    snprintf(cb, sizeof(cb), "{%s,\"tools\":%s,\"response_format\":{\"type\":\"json_object\"}}",
             user_c, C_TOOLS);
    resp = same_as_chat(o, rb, cb);
    json_decref(resp);

    /* input: earlier calls and their results become the chat messages the template gets */
    const char *r_input =
        "\"input\":[{\"role\":\"user\",\"content\":\"w?\"},{\"type\":\"message\",\"role\":"
        "\"assistant\",\"content\":[{\"type\":\"output_text\",\"text\":\"Let me look.\"}]},"
        "{\"type\":\"function_call\",\"id\":\"fc_1\",\"call_id\":\"call_a\",\"name\":"
        "\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\",\"status\":"
        "\"completed\"},{\"type\":\"function_call\",\"call_id\":\"call_b\",\"name\":\"now\","
        "\"arguments\":\"\"},{\"type\":\"reasoning\",\"summary\":[]},{\"type\":"
        "\"function_call_output\",\"call_id\":\"call_a\",\"output\":\"22 C\"},{\"type\":"
        "\"function_call_output\",\"call_id\":\"call_b\",\"output\":[{\"type\":\"input_text\","
        "\"text\":\"noon\"}]},{\"role\":\"user\",\"content\":\"And now?\"}]";
    const char *c_msgs =
        "\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\",\"content\":"
        "\"Let me look.\",\"tool_calls\":[{\"id\":\"call_a\",\"type\":\"function\",\"function\":{"
        "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},{\"id\":"
        "\"call_b\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_a\",\"content\":\"22 C\"},{\"role\":\"tool\","
        "\"tool_call_id\":\"call_b\",\"content\":\"noon\"},{\"role\":\"user\",\"content\":"
        "\"And now?\"}]";
    set_script(json_text, 2);
    snprintf(rb, sizeof(rb),
             "{\"instructions\":\"Be brief.\",%s,\"tools\":%s,\"tool_choice\":\"none\"}", r_input,
             R_TOOLS);
    snprintf(cb, sizeof(cb),
             "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},%s,\"tools\":%s,"
             "\"tool_choice\":\"none\"}",
             c_msgs + strlen("\"messages\":["), C_TOOLS);
    resp = same_as_chat(o, rb, cb);
    json_decref(resp);
    CHECKF(strstr(se.last_prompt,
                  "<|im_start|>assistant\nLet me look.\n<tool_call>\n{\"name\": \"get_weather\", "
                  "\"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": "
                  "\"now\", \"arguments\": {}}\n</tool_call><|im_end|>\n<|im_start|>user\n"
                  "<tool_response>\n22 C\n</tool_response><|im_end|>\n<|im_start|>user\n"
                  "<tool_response>\nnoon\n</tool_response><|im_end|>\n<|im_start|>user\nAnd now?"),
           "prompt: %s", se.last_prompt);
    /* a call with no text before it opens its own assistant message */
    snprintf(rb, sizeof(rb),
             "{\"input\":[{\"role\":\"user\",\"content\":\"w?\"},{\"type\":\"function_call\","
             "\"call_id\":\"c1\",\"name\":\"now\",\"arguments\":\"{}\"},{\"type\":"
             "\"function_call_output\",\"call_id\":\"c1\",\"output\":\"noon\"}],\"tools\":%s,"
             "\"tool_choice\":\"none\"}",
             R_TOOLS);
    snprintf(cb, sizeof(cb),
             "{%.*s,{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
             "\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},"
             "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"noon\"}],\"tools\":%s,"
             "\"tool_choice\":\"none\"}",
             (int)strlen(user_c) - 1, user_c, C_TOOLS);
    resp = same_as_chat(o, rb, cb);
    json_decref(resp);

    /* refusals: a 400 naming the Responses field */
    struct {
        const char *body, *param, *needle;
    } bad[] = {
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"web_search\"}]}", "tools",
         "tools[0].type: 'web_search' tools are not supported"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"},{\"type\":"
         "\"file_search\",\"vector_store_ids\":[]}]}",
         "tools", "tools[1].type: 'file_search'"},
        {"{\"input\":\"x\",\"tools\":{}}", "tools", "list"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\"}]}", "tools", "tools[0].name"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
         "tools", "tools[0].name"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":[]}]}",
         "tools", "tools[0].parameters"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":{"
         "\"type\":\"function\",\"name\":\"g\"}}",
         "tool_choice", "does not match"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":{"
         "\"type\":\"function\"}}",
         "tool_choice", "tool_choice.name"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":{"
         "\"type\":\"mcp\",\"server_label\":\"s\"}}",
         "tool_choice", "'mcp' is not supported"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":"
         "\"sometimes\"}",
         "tool_choice", "Invalid value"},
        {"{\"input\":\"x\",\"tool_choice\":\"required\"}", "tool_choice", "`tools` must be set"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}],\"tool_choice\":"
         "\"required\",\"text\":{\"format\":{\"type\":\"json_object\"}}}",
         "tool_choice", "(text.format)"},
        {"{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\",\"parameters\":{"
         "\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"array\",\"uniqueItems\":true}}}}],"
         "\"tool_choice\":\"required\"}",
         "tools", "uniqueItems"},
        {"{\"input\":\"x\",\"tools\":[],\"parallel_tool_calls\":\"yes\"}", "parallel_tool_calls",
         "boolean"},
        {"{\"input\":\"x\",\"text\":\"json\"}", "text", "text: expected an object"},
        {"{\"input\":\"x\",\"text\":{\"format\":\"json\"}}", "text.format",
         "text.format: expected"},
        {"{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"xml\"}}}", "text.format",
         "text.format type 'xml' is not supported"},
        {"{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"p\"}}}",
         "text.format", "text.format.schema"},
        {"{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"p\","
         "\"schema\":{},\"strict\":\"yes\"}}}",
         "text.format", "text.format.strict"},
        {"{\"input\":[{\"type\":\"function_call_output\",\"output\":\"o\"}]}", "input",
         "input[0].call_id: field required"},
        {"{\"input\":[{\"type\":\"function_call_output\",\"call_id\":7,\"output\":\"o\"}]}",
         "input", "input[0].call_id: expected a string"},
        {"{\"input\":[{\"type\":\"function_call\",\"call_id\":\"a\",\"name\":\"f\",\"arguments\":"
         "\"{}\"},{\"type\":\"function_call_output\",\"call_id\":\"b\",\"output\":\"o\"}]}",
         "input", "input[1].call_id: no function_call item before it has call_id 'b'"},
        {"{\"input\":[{\"type\":\"function_call\",\"call_id\":\"a\",\"name\":\"f\",\"arguments\":"
         "\"{}\"},{\"type\":\"function_call_output\",\"call_id\":\"a\"}]}",
         "input", "input[1].output: field required"},
        {"{\"input\":[{\"type\":\"function_call\",\"call_id\":\"a\",\"name\":\"f\",\"arguments\":"
         "\"{}\"},{\"type\":\"function_call_output\",\"call_id\":\"a\",\"output\":[{\"type\":"
         "\"input_image\",\"image_url\":\"u\"}]}]}",
         "input", "input[1].output[0]: content parts of type 'input_image'"},
        {"{\"input\":[{\"type\":\"function_call\",\"call_id\":\"a\",\"arguments\":\"{}\"}]}",
         "input", "input[0].name: field required"},
        {"{\"input\":[{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"{}\"}]}", "input",
         "input[0].call_id: field required"},
        {"{\"input\":[{\"type\":\"function_call\",\"call_id\":\"a\",\"name\":\"f\",\"arguments\":"
         "{}}]}",
         "input", "input[0].arguments: expected a string"},
        {"{\"input\":[{\"type\":\"function_call\",\"call_id\":\"a\",\"name\":\"f\",\"arguments\":"
         "\"{x\"}]}",
         "input", "input[0].arguments: not valid JSON"},
        {"{\"input\":[{\"type\":\"web_search_call\",\"id\":\"ws_1\"}]}", "input",
         "items of type 'web_search_call' are not supported"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        bool ok = run_gen(o, PL_OPENAI_RESPONSES, bad[k].body, &resp, &sse, &e);
        CHECKF(!ok && e.status == 400 && !strcmp(e.param, bad[k].param) &&
                   strstr(e.message, bad[k].needle),
               "%s: ok %d status %d param '%s' message '%s'", bad[k].body, ok, e.status, e.param,
               e.message);
        json_decref(resp);
        free(sse);
    }
    /* a schema the compiler refuses: chat's message, named text.format */
    struct pl_openai_error ce;
    const char *bad_schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"integer\","
                             "\"multipleOf\":3}}}";
    snprintf(rb, sizeof(rb),
             "{\"input\":\"x\",\"text\":{\"format\":{\"type\":\"json_schema\",\"name\":\"p\","
             "\"schema\":%s}}}",
             bad_schema);
    snprintf(cb, sizeof(cb),
             "{%s,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"p\","
             "\"schema\":%s}}}",
             user_c, bad_schema);
    CHECK(!run_gen(o, PL_OPENAI_RESPONSES, rb, &resp, &sse, &e) &&
          !run_gen(o, PL_OPENAI_CHAT, cb, &resp, &sse, &ce));
    CHECKF(e.status == 400 && !strcmp(e.param, "text.format") &&
               !strncmp(e.message, "text.format: ", 13) &&
               !strncmp(ce.message, "response_format: ", 17) &&
               !strcmp(e.message + 13, ce.message + 17) && strstr(e.message, "multipleOf"),
           "'%s' / '%s'", e.message, ce.message);
    pl_openai_free(o);

    /* without --enable-auto-tool-choice: tools need a tool_choice other than auto (as chat);
     * auto or none with nothing to call is plain text */
    o = new_openai(ae, NULL, NULL);
    REQUIRE(o);
    CHECK(!run_gen(o, PL_OPENAI_RESPONSES,
                   "{\"input\":\"x\",\"tools\":[{\"type\":\"function\",\"name\":\"f\"}]}", &resp,
                   &sse, &e) &&
          !strcmp(e.param, "tool_choice") && strstr(e.message, "--enable-auto-tool-choice"));
    set_script(json_text, 2);
    const char *plain[] = {"{\"input\":\"x\",\"tool_choice\":\"auto\"}",
                           "{\"input\":\"x\",\"tools\":[],\"tool_choice\":\"auto\"}",
                           "{\"input\":\"x\",\"tool_choice\":\"none\"}"};
    for (int k = 0; k < 3; k++) {
        REQUIRE(run_gen(o, PL_OPENAI_RESPONSES, plain[k], &resp, &sse, &e) && resp);
        CHECKF(!strcmp(jstr(resp, "output.0.content.0.text"), "{\"n\": 4}"), "%s", plain[k]);
        json_decref(resp);
    }
    pl_openai_free(o);
    pl_async_engine_free(ae);
}

/* ---- embeddings over the fake engine ---------------------------------------------------- */

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Decodes base64 of little-endian float32 values; returns the count. */
static int decode_floats(const char *s, float *out, int cap)
{
    unsigned char bytes[1024];
    size_t nb = 0, len = strlen(s);
    for (size_t i = 0; i + 3 < len + 3 && i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++)
            v[k] = s[i + k] == '=' ? 0 : b64val(s[i + k]);
        unsigned x = (unsigned)v[0] << 18 | (unsigned)v[1] << 12 | (unsigned)v[2] << 6 | (unsigned)v[3];
        bytes[nb++] = (unsigned char)(x >> 16);
        if (s[i + 2] != '=')
            bytes[nb++] = (unsigned char)(x >> 8);
        if (s[i + 3] != '=')
            bytes[nb++] = (unsigned char)x;
    }
    int n = (int)(nb / 4);
    for (int k = 0; k < n && k < cap; k++) {
        uint32_t u = (uint32_t)bytes[4 * k] | (uint32_t)bytes[4 * k + 1] << 8 |
                     (uint32_t)bytes[4 * k + 2] << 16 | (uint32_t)bytes[4 * k + 3] << 24;
        memcpy(&out[k], &u, sizeof(float));
    }
    return n;
}

static void test_embeddings(void)
{
    struct fake_engine *fe = calloc(1, sizeof(*fe));
    struct pl_err err;
    struct pl_async_engine *ae = NULL;
    REQUIRE(pl_async_engine_new(&fake_engine_ops, fe, NULL, &ae, &err) == PL_STATUS_OK);
    struct pl_openai *o = new_openai(ae, NULL, NULL);
    REQUIRE(o);
    json_t *resp;
    char *sse;
    struct pl_openai_error e;
    const char *inputs[2] = {"ab", "c d"};
    int32_t *ids[2];
    int n_ids[2];
    for (int i = 0; i < 2; i++)
        REQUIRE(pl_tokenizer_encode(tok, inputs[i], strlen(inputs[i]), true, &ids[i], &n_ids[i],
                                    NULL) == PL_STATUS_OK);
    for (int fmt = 0; fmt < 2; fmt++) {
        char body[256];
        snprintf(body, sizeof(body),
                 "{\"model\":\"tiny\",\"input\":[\"ab\",\"c d\"],\"encoding_format\":\"%s\","
                 "\"user\":\"u\",\"store\":false}",
                 fmt ? "base64" : "float");
        REQUIRE(run_gen(o, PL_OPENAI_EMBEDDING, body, &resp, &sse, &e) && resp);
        CHECK(!strcmp(jstr(resp, "object"), "list") && !strcmp(jstr(resp, "model"), "tiny"));
        json_t *data = json_object_get(resp, "data");
        REQUIRE(json_array_size(data) == 2);
        for (int i = 0; i < 2; i++) {
            json_t *item = json_array_get(data, (size_t)i);
            CHECK(json_integer_value(json_object_get(item, "index")) == i);
            CHECK(!strcmp(jstr(item, "object"), "embedding"));
            float want[FAKE_EMBED_DIM], got[FAKE_EMBED_DIM + 4];
            fake_embedding(ids[i], n_ids[i], want);
            json_t *emb = json_object_get(item, "embedding");
            int n;
            if (fmt) {
                REQUIRE(json_is_string(emb));
                n = decode_floats(json_string_value(emb), got, FAKE_EMBED_DIM + 4);
            } else {
                REQUIRE(json_is_array(emb));
                n = (int)json_array_size(emb);
                for (int k = 0; k < n && k < FAKE_EMBED_DIM + 4; k++)
                    got[k] = (float)json_real_value(json_array_get(emb, (size_t)k));
            }
            CHECKF(n == FAKE_EMBED_DIM, "%d values", n);
            for (int k = 0; k < FAKE_EMBED_DIM && k < n; k++)
                CHECKF(got[k] == want[k], "input %d value %d: %g vs %g (%s)", i, k, got[k],
                       want[k], fmt ? "base64" : "float");
        }
        json_t *u = json_object_get(resp, "usage");
        CHECK(json_integer_value(json_object_get(u, "prompt_tokens")) == n_ids[0] + n_ids[1]);
        CHECK(json_integer_value(json_object_get(u, "total_tokens")) == n_ids[0] + n_ids[1]);
        json_decref(resp);
    }
    /* token-id inputs */
    REQUIRE(run_gen(o, PL_OPENAI_EMBEDDING, "{\"input\":[[7,8,9],[4]]}", &resp, &sse, &e) && resp);
    json_t *v = json_object_get(json_array_get(json_object_get(resp, "data"), 1), "embedding");
    CHECK(json_real_value(json_array_get(v, 0)) == 4.0 && json_real_value(json_array_get(v, 3)) == 5.5);
    json_decref(resp);
    /* truncate_prompt_tokens keeps the last tokens */
    REQUIRE(run_gen(o, PL_OPENAI_EMBEDDING, "{\"input\":[7,8,9],\"truncate_prompt_tokens\":2}",
                    &resp, &sse, &e) && resp);
    v = json_object_get(json_array_get(json_object_get(resp, "data"), 0), "embedding");
    CHECK(json_real_value(json_array_get(v, 0)) == 8.0 &&
          json_integer_value(json_object_get(json_object_get(resp, "usage"), "prompt_tokens")) == 2);
    json_decref(resp);

    struct {
        const char *body, *param, *needle;
    } bad[] = {
        {"{\"input\":\"x\",\"dimensions\":8}", "dimensions", "fixed size"},
        {"{\"input\":\"x\",\"encoding_format\":\"hex\"}", "encoding_format", "base64"},
        {"{\"input\":[]}", "input", "empty"},
        {"{\"model\":\"tiny\"}", "input", "required"},
        {"{\"input\":[1,99999]}", "input", "vocabulary"},
        {"{\"input\":{\"a\":1}}", "input", "got object"},
        {"{\"input\":\"x\",\"model\":\"nope\"}", "model", "does not exist"},
        {"{\"input\":\"x\",\"user\":3}", "user", "string"},
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        bool ok = run_gen(o, PL_OPENAI_EMBEDDING, bad[k].body, &resp, &sse, &e);
        CHECKF(!ok && !strcmp(e.param, bad[k].param) && strstr(e.message, bad[k].needle),
               "%s: ok %d param '%s' message '%s'", bad[k].body, ok, e.param, e.message);
        json_decref(resp);
    }
    /* too long for the context */
    struct pl_sbuf big = {0};
    pl_sbuf_puts(&big, "{\"input\":[");
    for (int i = 0; i < MAX_MODEL_LEN; i++)
        pl_sbuf_printf(&big, "%s7", i ? "," : "");
    pl_sbuf_puts(&big, "]}");
    CHECK(!run_gen(o, PL_OPENAI_EMBEDDING, big.data, &resp, &sse, &e) &&
          strstr(e.message, "maximum context length"));
    pl_sbuf_fini(&big);
    for (int i = 0; i < 2; i++)
        free(ids[i]);
    pl_openai_free(o);
    pl_async_engine_free(ae);
    free(fe);
}

/* ---- the serving log's line ---------------------------------------------------------- */

static void test_serving_log(void)
{
    struct pl_serving_log_params p;
    pl_serving_log_params_default(&p);
    CHECK(p.interval_s == 10.0 && p.stats);
    p.stats = false; /* no thread: the test ticks */
    struct pl_serving_log *s = NULL;
    struct pl_err err;
    REQUIRE(pl_serving_log_new(&p, &s, &err) == PL_STATUS_OK);
    char line[512];
    double t0 = pl_async_now() + 1000; /* ticks at made-up times after creation */
    CHECK(!pl_serving_log_tick(s, t0, line, sizeof(line))); /* idle: quiet */
    /* a request of 40 prompt tokens (10 cached) and 30 generated tokens in the interval */
    struct pl_completion_output smp = {.n_token_ids = 10};
    int32_t ids[40] = {0};
    struct pl_request_output o1 = {.prompt_token_ids = ids, .n_prompt_token_ids = 40,
                                   .num_cached_tokens = 10, .outputs = &smp, .n_outputs = 1};
    struct pl_request_output o2 = {.outputs = &smp, .n_outputs = 1};
    pl_serving_log_observe(s, &o1);
    pl_serving_log_observe(s, &o2);
    pl_serving_log_observe(s, &o2);
    REQUIRE(pl_serving_log_tick(s, t0 + 10, line, sizeof(line)));
    CHECKF(!strcmp(line, "Avg prompt throughput: 4.0 tokens/s, Avg generation throughput: 3.0 "
                         "tokens/s, Running: 0 reqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV "
                         "cache usage: 0.0%, Prefix cache hit rate: 25.0%"),
           "%s", line);
    /* the interval after a busy one is printed (with zeros), then quiet again */
    CHECK(pl_serving_log_tick(s, t0 + 20, line, sizeof(line)));
    CHECKF(strstr(line, "Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 0.0"),
           "%s", line);
    CHECK(!pl_serving_log_tick(s, t0 + 30, line, sizeof(line)));
    /* a refused request counts nothing */
    int32_t ids99[99] = {0};
    struct pl_request_output bad = {.prompt_token_ids = ids99, .n_prompt_token_ids = 99,
                                    .error = "no"};
    pl_serving_log_observe(s, &bad);
    CHECK(!pl_serving_log_tick(s, t0 + 40, line, sizeof(line)));
    pl_serving_log_format(line, sizeof(line), 1.25, 2, 3, 0, 4, 56.78, 9);
    CHECKF(!strcmp(line, "Avg prompt throughput: 1.2 tokens/s, Avg generation throughput: 2.0 "
                         "tokens/s, Running: 3 reqs, Swapped: 0 reqs, Pending: 4 reqs, GPU KV "
                         "cache usage: 56.8%, Prefix cache hit rate: 9.0%"),
           "%s", line);
    pl_serving_log_free(s);
    pl_serving_log_free(NULL);
    CHECK(pl_serving_log_new(&(struct pl_serving_log_params){.interval_s = 0}, &s, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
}

int main(void)
{
    struct pl_openai *fx = openai_fixture_new(700, "alias", "/m", MAX_MODEL_LEN, &tok);
    pl_openai_free(fx); /* only its tokenizer: every test opens its own layer */
    PL_RUN(test_parser);
    PL_RUN(test_chat_reasoning);
    PL_RUN(test_responses);
    PL_RUN(test_responses_tools);
    PL_RUN(test_embeddings);
    PL_RUN(test_serving_log);
    pl_tokenizer_free(tok);
    return pl_test_summary();
}
