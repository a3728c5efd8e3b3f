/*
 * test_tool_call.c -- tool calling on the chat route (src/server/tool_call.c and its
 * use in openai.c): the request rules (vLLM's tool_choice semantics, the constraint
 * required and named functions set, the flags), the prompt the template gets, and
 * the answers, full and streamed, over the fake engine scripted to write what a
 * model would (fake_engine.h's script): message.tool_calls, ids, finish_reason,
 * tool_calls deltas (index, id, type and name first, then argument fragments).
 */
#include "fake_engine.h"
#include "openai_fixture.h"
#include "server/tool_call.h"
#include "test.h"
#include "tokenizer/chat_template/chat_template.h"

#include <jansson.h>
#include <pthread.h>
#include <time.h>

#define MAX_MODEL_LEN 512

static const char *OR(const char *s, const char *dflt)
{
    return s ? s : dflt;
}

static struct pl_tokenizer *tok;

/* A Hermes-style template (Qwen's way of showing tools and calls). The prompts expected
 * below are Python jinja2's renders of it (transformers' environment). */
static const char HERMES_T[] =
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n{%- for t in tools %}\n{{ t | tojson }}"
    "{%- endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", "
    "\"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>{%- endfor %}<|im_end|>\n"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}";

static const char TOOLS[] =
    "[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"description\":\"Weather\","
    "\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},"
    "\"required\":[\"city\"]}}},{\"type\":\"function\",\"function\":{\"name\":\"now\"}}]";

static struct pl_openai *new_openai(struct pl_async_engine *ae, bool auto_tools,
                                    const char *parser, const char *tmpl, struct pl_err *err)
{
    const char *names[] = {"tiny"};
    struct pl_openai_params p = {.served_names = names,
                                 .n_served_names = 1,
                                 .model_root = "/m",
                                 .max_model_len = MAX_MODEL_LEN,
                                 .tok = tok,
                                 .chat_template = tmpl,
                                 .ae = ae,
                                 .enable_auto_tool_choice = auto_tools,
                                 .tool_call_parser = parser};
    struct pl_openai *o = NULL;
    return pl_openai_new(&p, &o, err) == PL_STATUS_OK ? o : NULL;
}

/* A chat body: user message "w?", the tools, and extra fields (JSON object members). */
static char *body(const char *extra)
{
    char *b = malloc(8192);
    snprintf(b, 8192, "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"}],\"tools\":%s%s%s}",
             TOOLS, extra && *extra ? "," : "", extra ? extra : "");
    return b;
}

static pl_status parse(struct pl_openai *o, const char *extra, struct pl_openai_request *r,
                       struct pl_openai_error *e)
{
    char *b = body(extra);
    pl_status st = pl_openai_parse(o, PL_OPENAI_CHAT, b, strlen(b), r, e);
    free(b);
    return st;
}

static void expect_error(struct pl_openai *o, const char *extra, const char *param,
                         const char *needle)
{
    struct pl_openai_request r;
    struct pl_openai_error e;
    pl_status st = parse(o, extra, &r, &e);
    CHECKF(st != PL_STATUS_OK, "accepted: %s", extra);
    if (st == PL_STATUS_OK) {
        pl_openai_request_fini(&r);
        return;
    }
    CHECKF(e.status == 400 && !strcmp(e.param, param) && strstr(e.message, needle),
           "%s: %d '%s' '%s' (want '%s' '%s')", extra, e.status, e.param, e.message, param,
           needle);
}

static void test_flags(void)
{
    struct pl_err err = {0};
    /* the tiny model's ChatML template shows no call format: auto needs a parser */
    CHECK(!new_openai(NULL, true, NULL, NULL, &err) && strstr(err.msg, "--tool-call-parser"));
    CHECK(!new_openai(NULL, true, "pythonic", NULL, &err) && strstr(err.msg, "pythonic"));
    CHECK(!new_openai(NULL, false, "hermes", NULL, &err) &&
          strstr(err.msg, "--enable-auto-tool-choice"));
    struct pl_openai *o = new_openai(NULL, true, "mistral", NULL, &err);
    CHECK(o);
    pl_openai_free(o);
    o = new_openai(NULL, true, NULL, HERMES_T, &err); /* detected from the template */
    REQUIRE(o);
    struct pl_openai_request r;
    struct pl_openai_error e;
    REQUIRE(parse(o, NULL, &r, &e) == PL_STATUS_OK);
    CHECK(r.tool_parser == PL_TOOL_PARSER_HERMES && r.tool_max_calls == 0);
    CHECK(!r.sp.skip_special_tokens); /* the markers may be special tokens */
    pl_openai_request_fini(&r);
    pl_openai_free(o);
}

static void test_request_rules(void)
{
    struct pl_err err = {0};
    struct pl_openai *o = new_openai(NULL, false, NULL, HERMES_T, &err);
    REQUIRE(o);
    struct pl_openai_request r;
    struct pl_openai_error e;
    /* tools without tool_choice mean auto, which needs the flag (vLLM's message) */
    expect_error(o, NULL, "tool_choice", "--enable-auto-tool-choice");
    expect_error(o, "\"tool_choice\":\"auto\"", "tool_choice", "--enable-auto-tool-choice");
    expect_error(o, "\"tool_choice\":\"sometimes\"", "tool_choice", "Invalid value");
    expect_error(o, "\"tool_choice\":7", "tool_choice", "expected");
    expect_error(o, "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"nope\"}}",
                 "tool_choice", "does not match");
    expect_error(o, "\"tool_choice\":{\"type\":\"function\"}", "tool_choice", "Correct usage");
    expect_error(o, "\"tool_choice\":\"required\",\"guided_json\":{\"type\":\"object\"}",
                 "tool_choice", "cannot be combined");
    expect_error(o, "\"tool_choice\":\"required\",\"parallel_tool_calls\":1",
                 "parallel_tool_calls", "boolean");
    expect_error(o, "\"functions\":[]", "functions", "tools");
    const char *bad_tools[][2] = {
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":{}}", "list"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[1]}", "tools[0]"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":\"retrieval\","
         "\"function\":{\"name\":\"f\"}}]}",
         "function"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"function\":{\"name\":"
         "\"\"}}]}",
         "name"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"function\":{\"name\":"
         "\"f\",\"parameters\":[]}}]}",
         "parameters"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"required\"}",
         "`tools` must be set"},
    };
    for (size_t i = 0; i < sizeof(bad_tools) / sizeof(bad_tools[0]); i++) {
        pl_status st = pl_openai_parse(o, PL_OPENAI_CHAT, bad_tools[i][0],
                                       strlen(bad_tools[i][0]), &r, &e);
        CHECKF(st != PL_STATUS_OK && e.status == 400 && strstr(e.message, bad_tools[i][1]),
               "%s: %s", bad_tools[i][0], e.message);
        if (st == PL_STATUS_OK)
            pl_openai_request_fini(&r);
    }

    /* none: the tools still reach the template (vLLM's default), the answer is content */
    REQUIRE(parse(o, "\"tool_choice\":\"none\"", &r, &e) == PL_STATUS_OK);
    CHECK(r.tool_parser == PL_TOOL_PARSER_NONE && r.sp.constraint_kind == PL_CONSTRAINT_NONE);
    CHECKF(!strcmp(r.prompts[0].text,
                   "<|im_start|>system\n# Tools\n<tools>{\"type\": \"function\", \"function\": "
                   "{\"name\": \"get_weather\", \"description\": \"Weather\", \"parameters\": "
                   "{\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\"}}, "
                   "\"required\": [\"city\"]}}}{\"type\": \"function\", \"function\": {\"name\": "
                   "\"now\", \"description\": null, \"parameters\": null}}</tools><|im_end|>"
                   "<|im_start|>user\nw?<|im_end|><|im_start|>assistant"),
           "prompt: %s", r.prompts[0].text);
    pl_openai_request_fini(&r);

    /* required: vLLM's list-of-calls schema from the tools' parameters */
    REQUIRE(parse(o, "\"tool_choice\":\"required\"", &r, &e) == PL_STATUS_OK);
    CHECK(r.tool_parser == PL_TOOL_PARSER_JSON_ARRAY && r.tool_max_calls == 0);
    REQUIRE(r.sp.constraint_kind == PL_CONSTRAINT_JSON && r.sp.constraint);
    json_t *s = json_loads(r.sp.constraint, 0, NULL);
    json_t *want = json_loads(
        "{\"type\":\"array\",\"minItems\":1,\"items\":{\"anyOf\":["
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"enum\":["
        "\"get_weather\"]},\"parameters\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
        "\"string\"}},\"required\":[\"city\"]}},\"required\":[\"name\",\"parameters\"],"
        "\"additionalProperties\":false},"
        "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"enum\":[\"now\"]},"
        "\"parameters\":{\"type\":\"object\",\"properties\":{}}},\"required\":[\"name\","
        "\"parameters\"],\"additionalProperties\":false}]}}",
        0, NULL);
    CHECKF(json_equal(s, want), "schema %s", r.sp.constraint);
    json_decref(s);
    json_decref(want);
    CHECK(r.sp.skip_special_tokens);
    pl_openai_request_fini(&r);

    /* parallel_tool_calls false: one call at most */
    REQUIRE(parse(o, "\"tool_choice\":\"required\",\"parallel_tool_calls\":false", &r, &e) ==
            PL_STATUS_OK);
    CHECK(r.tool_max_calls == 1);
    s = json_loads(r.sp.constraint, 0, NULL);
    CHECK(json_integer_value(json_object_get(s, "maxItems")) == 1);
    json_decref(s);
    pl_openai_request_fini(&r);

    /* a named function: its parameters are the schema */
    REQUIRE(parse(o, "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}",
                  &r, &e) == PL_STATUS_OK);
    CHECK(r.tool_parser == PL_TOOL_PARSER_NAMED && !strcmp(r.tool_named, "get_weather"));
    CHECKF(r.sp.constraint_kind == PL_CONSTRAINT_JSON &&
               !strcmp(r.sp.constraint, "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
                                        "\"string\"}},\"required\":[\"city\"]}"),
           "%s", r.sp.constraint ? r.sp.constraint : "(none)");
    pl_openai_request_fini(&r);
    REQUIRE(parse(o, "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"now\"}}", &r,
                  &e) == PL_STATUS_OK);
    CHECK(!strcmp(r.sp.constraint, "{\"type\":\"object\",\"properties\":{}}"));
    pl_openai_request_fini(&r);

    /* required with no tools behaves as none (OpenAI) */
    const char *empty = "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[],"
                        "\"tool_choice\":\"required\"}";
    REQUIRE(pl_openai_parse(o, PL_OPENAI_CHAT, empty, strlen(empty), &r, &e) == PL_STATUS_OK);
    CHECK(r.tool_parser == PL_TOOL_PARSER_NONE && r.sp.constraint_kind == PL_CONSTRAINT_NONE);
    pl_openai_request_fini(&r);

    /* a tool round trip renders: arguments text parsed, tool results with their ids */
    const char *trip =
        "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"},{\"role\":\"assistant\",\"content\":"
        "null,\"tool_calls\":[{\"id\":\"chatcmpl-tool-1\",\"type\":\"function\",\"function\":{"
        "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]},{\"role\":"
        "\"tool\",\"tool_call_id\":\"chatcmpl-tool-1\",\"content\":\"sunny\"}],"
        "\"tool_choice\":\"none\"}";
    REQUIRE(pl_openai_parse(o, PL_OPENAI_CHAT, trip, strlen(trip), &r, &e) == PL_STATUS_OK);
    CHECKF(!strcmp(r.prompts[0].text,
                   "<|im_start|>user\nw?<|im_end|><|im_start|>assistant\n<tool_call>\n{\"name\": "
                   "\"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call><|im_end|>"
                   "<|im_start|>tool\nsunny<|im_end|><|im_start|>assistant"),
           "prompt: %s", r.prompts[0].text);
    pl_openai_request_fini(&r);
    pl_openai_free(o);
}

/* ---- answers over the scripted fake engine ------------------------------------------------ */

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

static bool wait_news(struct waiter *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60; /* a hang guard only */
    pthread_mutex_lock(&w->mu);
    int rc = 0;
    while (w->news == 0 && rc == 0)
        rc = pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    bool got = w->news > 0;
    w->news = 0;
    pthread_mutex_unlock(&w->mu);
    return got;
}

/* The full answer (stream false) or the stream's chunks as a JSON list (stream true). */
static json_t *run(struct pl_openai *o, const char *b, bool stream)
{
    char *full = malloc(strlen(b) + 32);
    size_t n = strlen(b);
    memcpy(full, b, n - 1);
    snprintf(full + n - 1, 32, ",\"stream\":%s}", stream ? "true" : "false");
    struct pl_openai_gen *g = NULL;
    struct pl_openai_error e;
    json_t *res = NULL;
    if (pl_openai_gen_new(o, PL_OPENAI_CHAT, full, strlen(full), &g, &e) != PL_STATUS_OK) {
        fprintf(stderr, "refused: %s\n", e.message);
        free(full);
        return NULL;
    }
    free(full);
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    if (pl_openai_gen_submit(g, on_news, &w, &e) != PL_STATUS_OK) {
        pl_openai_gen_free(g);
        return NULL;
    }
    if (stream) {
        struct pl_sbuf sb = {0};
        while (pl_openai_gen_produce(g, &sb))
            if (!wait_news(&w))
                break;
        res = json_array();
        for (const char *p = sb.data; p && (p = strstr(p, "data: ")); p += 6) {
            const char *end = strstr(p, "\n\n");
            json_t *j = json_loadb(p + 6, (size_t)(end - p - 6), 0, NULL);
            if (j)
                json_array_append_new(res, j);
        }
        pl_sbuf_fini(&sb);
    } else {
        while (!pl_openai_gen_result(g, &res, &e))
            if (!wait_news(&w))
                break;
    }
    pl_openai_gen_free(g);
    return res;
}

/* What a stream says for choice 0: content, calls as [{id, name, arguments}], finish. */
static void fold_stream(const json_t *chunks, struct pl_sbuf *content, json_t *calls,
                        const char **finish, bool *shape_ok)
{
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        json_t *ch = json_array_get(json_object_get(c, "choices"), 0);
        if (!ch)
            continue;
        json_t *d = json_object_get(ch, "delta");
        json_t *t = json_object_get(d, "content");
        if (json_is_string(t))
            pl_sbuf_puts(content, json_string_value(t));
        json_t *tc = json_object_get(d, "tool_calls");
        if (tc && t && json_string_length(t) == 0)
            *shape_ok = false; /* tool-call chunks carry no empty content */
        size_t k;
        json_t *x;
        json_array_foreach(tc, k, x)
        {
            int idx = (int)json_integer_value(json_object_get(x, "index"));
            json_t *fn = json_object_get(x, "function");
            json_t *args = json_object_get(fn, "arguments");
            if (idx == (int)json_array_size(calls)) { /* opens: id, type, name first */
                if (!json_is_string(json_object_get(x, "id")) ||
                    strcmp(OR(json_string_value(json_object_get(x, "type")), ""), "function") ||
                    !json_is_string(json_object_get(fn, "name")))
                    *shape_ok = false;
                json_array_append_new(
                    calls, json_pack("{s:O, s:O, s:s}", "id", json_object_get(x, "id"), "name",
                                     json_object_get(fn, "name"), "arguments", ""));
            } else if (idx != (int)json_array_size(calls) - 1 || json_object_get(x, "id") ||
                       json_object_get(fn, "name")) {
                *shape_ok = false;
                continue;
            }
            json_t *call = json_array_get(calls, (size_t)idx);
            char *joined = NULL;
            if (asprintf(&joined, "%s%s", json_string_value(json_object_get(call, "arguments")),
                         OR(json_string_value(args), "")) >= 0)
                json_object_set_new(call, "arguments", json_string(joined));
            free(joined);
        }
        json_t *f = json_object_get(ch, "finish_reason");
        if (json_is_string(f))
            *finish = json_string_value(f);
    }
}

/* The script answered in full and streamed: both must say content, the calls (name(args)
 * joined with '|') and finish_reason as wanted. */
static void expect_answer(struct pl_openai *o, struct fake_engine *fe, const char *script,
                          const char *extra, const char *content, const char *calls,
                          const char *finish)
{
    fe->script = script;
    char *b = body(extra);
    for (int piece = 0; piece < 3; piece++) {
        fe->script_piece = piece == 0 ? 0 : piece == 1 ? 1 : 7;
        /* full */
        json_t *r = run(o, b, false);
        REQUIRE(r);
        json_t *ch = json_array_get(json_object_get(r, "choices"), 0);
        json_t *msg = json_object_get(ch, "message");
        json_t *jc = json_object_get(msg, "content");
        CHECKF(content ? json_is_string(jc) && !strcmp(json_string_value(jc), content)
                       : json_is_null(jc),
               "%s: content %s, want %s", script, OR(json_string_value(jc), "null"),
               OR(content, "null"));
        struct pl_sbuf got = {0};
        size_t k;
        json_t *x;
        json_array_foreach(json_object_get(msg, "tool_calls"), k, x)
        {
            const char *id = json_string_value(json_object_get(x, "id"));
            CHECKF(id && !strncmp(id, "chatcmpl-tool-", 14), "id %s", OR(id, "(none)"));
            CHECK(!strcmp(OR(json_string_value(json_object_get(x, "type")), ""), "function"));
            json_t *fn = json_object_get(x, "function");
            pl_sbuf_printf(&got, "%s%s(%s)", k ? "|" : "", json_string_value(json_object_get(fn, "name")),
                           json_string_value(json_object_get(fn, "arguments")));
        }
        CHECKF(!strcmp(OR(got.data, ""), calls), "%s: calls %s, want %s", script, OR(got.data, ""),
               calls);
        CHECKF(!json_object_get(msg, "tool_calls") == !*calls, "tool_calls present: %s", script);
        CHECKF(!strcmp(OR(json_string_value(json_object_get(ch, "finish_reason")), ""), finish),
               "%s: finish %s", script, json_string_value(json_object_get(ch, "finish_reason")));
        pl_sbuf_fini(&got);
        json_decref(r);
        /* streamed */
        r = run(o, b, true);
        REQUIRE(r);
        struct pl_sbuf sc = {0};
        json_t *scalls = json_array();
        const char *sfin = NULL;
        bool shape = true;
        fold_stream(r, &sc, scalls, &sfin, &shape);
        CHECKF(shape, "%s: stream shape (piece %d)", script, fe->script_piece);
        CHECKF(!strcmp(OR(sc.data, ""), OR(content, "")), "%s: streamed content '%s'", script,
               OR(sc.data, ""));
        json_array_foreach(scalls, k, x)
        {
            pl_sbuf_printf(&got, "%s%s(%s)", k ? "|" : "", json_string_value(json_object_get(x, "name")),
                           json_string_value(json_object_get(x, "arguments")));
            CHECK(!strncmp(OR(json_string_value(json_object_get(x, "id")), ""), "chatcmpl-tool-", 14));
        }
        CHECKF(!strcmp(OR(got.data, ""), calls), "%s: streamed calls %s (piece %d)", script,
               OR(got.data, ""), fe->script_piece);
        CHECKF(sfin && !strcmp(sfin, finish), "%s: streamed finish %s", script, OR(sfin, "none"));
        pl_sbuf_fini(&got);
        pl_sbuf_fini(&sc);
        json_decref(scalls);
        json_decref(r);
    }
    free(b);
}

static void test_answers(void)
{
    struct fake_engine *fe = calloc(1, sizeof(*fe));
    struct pl_err err = {0};
    struct pl_async_engine *ae = NULL;
    REQUIRE(pl_async_engine_new(&fake_engine_ops, fe, NULL, &ae, &err) == PL_STATUS_OK);
    struct pl_openai *o = new_openai(ae, true, NULL, HERMES_T, &err);
    REQUIRE(o);
    /* auto, hermes: content before the call, the call's arguments verbatim */
    expect_answer(o, fe,
                  "Let me see.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": "
                  "\"Paris\"}}\n</tool_call>",
                  NULL, "Let me see.\n", "get_weather({\"city\": \"Paris\"})", "tool_calls");
    expect_answer(o, fe,
                  "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>\n<tool_call>"
                  "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>",
                  NULL, NULL, "now({})|get_weather({\"city\": \"Rome\"})", "tool_calls");
    expect_answer(o, fe,
                  "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>\n<tool_call>"
                  "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Rome\"}}</tool_call>",
                  "\"parallel_tool_calls\":false", NULL, "now({})", "tool_calls");
    /* no call: plain content, finish stop; malformed calls are content */
    expect_answer(o, fe, "It is sunny.", NULL, "It is sunny.", "", "stop");
    expect_answer(o, fe, "<tool_call>oops</tool_call>", NULL, "<tool_call>oops</tool_call>", "",
                  "stop");
    CHECK(!fe->last_skip_special && fe->last_constraint_kind == PL_CONSTRAINT_NONE);
    /* none: the same text is content */
    expect_answer(o, fe, "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>",
                  "\"tool_choice\":\"none\"",
                  "<tool_call>{\"name\": \"now\", \"arguments\": {}}</tool_call>", "", "stop");
    /* required: vLLM's list of calls, under the constraint */
    expect_answer(o, fe,
                  "[{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}, {\"name\": "
                  "\"now\", \"parameters\": {}}]",
                  "\"tool_choice\":\"required\"", NULL,
                  "get_weather({\"city\": \"Oslo\"})|now({})", "tool_calls");
    CHECK(fe->last_constraint_kind == PL_CONSTRAINT_JSON && strstr(fe->last_constraint, "anyOf"));
    /* named: the whole answer is the arguments; finish stays stop (OpenAI, vLLM) */
    expect_answer(o, fe, "{\"city\": \"Lima\"}",
                  "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_weather\"}}",
                  NULL, "get_weather({\"city\": \"Lima\"})", "stop");
    CHECK(fe->last_constraint_kind == PL_CONSTRAINT_JSON &&
          !strncmp(fe->last_constraint, "{\"type\":\"object\"", 16));
    /* cut by max_tokens: the call keeps what it got, finish_reason length */
    fe->script_piece = 2;
    json_t *r = run(o,
                    "{\"messages\":[{\"role\":\"user\",\"content\":\"w?\"}],\"max_tokens\":3,"
                    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}],"
                    "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}}",
                    false);
    REQUIRE(r);
    json_t *ch = json_array_get(json_object_get(r, "choices"), 0);
    CHECK(!strcmp(OR(json_string_value(json_object_get(ch, "finish_reason")), ""), "length"));
    CHECK(!strcmp(OR(json_string_value(json_object_get(
                      json_object_get(json_array_get(json_object_get(json_object_get(ch, "message"),
                                                                     "tool_calls"),
                                                     0),
                                      "function"),
                      "arguments")), ""),
                  "{\"city"));
    json_decref(r);
    pl_openai_free(o);
    pl_async_engine_free(ae);
    free(fe);
}

/* Tool conversations render as transformers renders them after vLLM's preprocessing
 * (tests/fixtures/tool_calls/render.json, from tools/tool_template_refs.py): the server's
 * tools normalisation (pl_tool_request_parse) and pl_apply_chat_template together. */
static void test_render_references(void)
{
    json_error_t je;
    json_t *fx = json_load_file(pl_test_path("tests/fixtures/tool_calls/render.json"), 0, &je);
    REQUIRE(fx);
    size_t i;
    json_t *c;
    int n = 0;
    json_array_foreach(json_object_get(fx, "cases"), i, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        FILE *f = fopen(pl_test_path(json_string_value(json_object_get(c, "template_file"))), "rb");
        REQUIRE(f);
        static char src[65536];
        size_t len = fread(src, 1, sizeof(src) - 1, f);
        fclose(f);
        src[len] = '\0';
        struct pl_err err = {0};
        struct pl_chat_template *t = NULL;
        REQUIRE(pl_chat_template_parse(src, len, &t, &err) == PL_STATUS_OK);
        json_t *root = json_deep_copy(json_object_get(c, "request"));
        json_object_set_new(root, "tool_choice", json_string("none"));
        struct pl_sampling_params sp;
        pl_sampling_params_default(&sp);
        struct pl_tool_request tr;
        struct pl_openai_error e;
        REQUIRE(pl_tool_request_parse(root, PL_OPENAI_LAYOUT_CHAT, PL_TOOL_PARSER_NONE, &sp, &tr,
                                      &e) == PL_STATUS_OK);
        const struct pl_chat_apply apply = {
            .bos_token = json_string_value(json_object_get(c, "bos_token")),
            .eos_token = json_string_value(json_object_get(c, "eos_token")),
            .add_generation_prompt = json_is_true(json_object_get(c, "add_generation_prompt")),
            .kwargs = json_object_get(c, "chat_template_kwargs"),
            .tools = tr.tools,
        };
        char *out = NULL;
        size_t n_out = 0;
        pl_status st = pl_apply_chat_template(t, json_object_get(root, "messages"), &apply, &out,
                                              &n_out, NULL, &err);
        const char *want = json_string_value(json_object_get(c, "expected"));
        CHECKF(st == PL_STATUS_OK && out && !strcmp(out, want), "%s:\n  got:  %s\n  want: %s",
               name, out ? out : err.msg, want);
        n++;
        free(out);
        pl_tool_request_fini(&tr);
        pl_sampling_params_fini(&sp);
        json_decref(root);
        pl_chat_template_free(t);
    }
    CHECK(n >= 10);
    json_decref(fx);
}

/* With the mistral parser the ids are nine letters and digits (Mistral's templates), in
 * either layout; otherwise chatcmpl-tool-<hex> (chat) or call_<hex> (Responses). */
static void test_ids(void)
{
    struct pl_err err = {0};
    struct pl_openai *o = new_openai(NULL, true, "mistral", NULL, &err);
    REQUIRE(o);
    char a[64], b[64];
    for (int layout = 0; layout < 2; layout++) {
        pl_tool_call_id(o, PL_TOOL_PARSER_MISTRAL, layout, a, sizeof(a));
        pl_tool_call_id(o, PL_TOOL_PARSER_MISTRAL, layout, b, sizeof(b));
        CHECK(strlen(a) == 9 && strcmp(a, b));
        for (int i = 0; i < 9; i++)
            CHECK((a[i] >= '0' && a[i] <= '9') || (a[i] >= 'a' && a[i] <= 'z') ||
                  (a[i] >= 'A' && a[i] <= 'Z'));
    }
    pl_tool_call_id(o, PL_TOOL_PARSER_HERMES, PL_OPENAI_LAYOUT_CHAT, a, sizeof(a));
    pl_tool_call_id(o, PL_TOOL_PARSER_HERMES, PL_OPENAI_LAYOUT_CHAT, b, sizeof(b));
    CHECK(!strncmp(a, "chatcmpl-tool-", 14) && strcmp(a, b));
    pl_tool_call_id(o, PL_TOOL_PARSER_HERMES, PL_OPENAI_LAYOUT_RESPONSES, a, sizeof(a));
    pl_tool_call_id(o, PL_TOOL_PARSER_HERMES, PL_OPENAI_LAYOUT_RESPONSES, b, sizeof(b));
    CHECKF(!strncmp(a, "call_", 5) && strlen(a) > 5 && !strchr(a, '-') && strcmp(a, b), "%s", a);
    pl_openai_free(o);
}

int main(void)
{
    struct pl_openai *fx = openai_fixture_new(700, "alias", "/m", MAX_MODEL_LEN, &tok);
    pl_openai_free(fx); /* only its tokenizer */
    PL_RUN(test_flags);
    PL_RUN(test_request_rules);
    PL_RUN(test_answers);
    PL_RUN(test_ids);
    PL_RUN(test_render_references);
    pl_tokenizer_free(tok);
    return pl_test_summary();
}
