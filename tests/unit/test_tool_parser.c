/*
 * test_tool_parser.c -- the tool-call parsers (src/server/tool_parser.c): every
 * format on complete answers, on the same answers cut into every piece size
 * (streamed deltas must add up to the whole answer's split, names before
 * arguments), malformed output falling back to content, max_calls, and the
 * choice of parser from a template's text.
 */
#include "server/tool_parser.h"

#include "test.h"

#include <stdbool.h>

/* The split as one string: "content" then "|name(args)" per call. Checks the stream's
 * shape on the way: a call's first delta names it, indexes go 0, 1, ... in order. */
static char *split(enum pl_tool_parser_kind kind, const char *named, int max_calls,
                   const char *text, size_t piece)
{
    struct pl_tool_parser *p = pl_tool_parser_new(kind, named, max_calls);
    if (!p)
        return NULL;
    size_t n = strlen(text);
    struct pl_sbuf content = {0};
    struct pl_sbuf calls[16] = {{0}};
    char names[16][256] = {{0}};
    int n_calls = 0;
    struct pl_tool_out out = {0};
    bool ok = true;
    for (size_t at = 0; at <= n; at += piece ? piece : n + 1) {
        size_t len = piece && at + piece < n ? piece : n - at;
        pl_tool_out_reset(&out);
        if (at < n || len)
            pl_tool_parser_feed(p, text + at, len, &out);
        if (at + len >= n)
            pl_tool_parser_finish(p, &out);
        pl_sbuf_append(&content, out.content.data ? out.content.data : "", out.content.len);
        for (int i = 0; i < out.n_calls; i++) {
            const struct pl_tool_call_delta *d = &out.calls[i];
            if (d->is_first) {
                ok &= d->index == n_calls && n_calls < 16 && d->name[0];
                if (!ok)
                    break;
                snprintf(names[n_calls], sizeof(names[0]), "%s", d->name);
                n_calls++;
            } else {
                ok &= d->index == n_calls - 1 && !d->name[0];
                if (!ok)
                    break;
            }
            pl_sbuf_append(&calls[d->index], d->args.data ? d->args.data : "", d->args.len);
        }
        if (at + len >= n)
            break;
    }
    CHECKF(ok, "stream shape broken for '%s' in pieces of %zu", text, piece);
    CHECK(pl_tool_parser_n_calls(p) == n_calls);
    struct pl_sbuf r = {0};
    pl_sbuf_append(&r, content.data ? content.data : "", content.len);
    for (int i = 0; i < n_calls; i++)
        pl_sbuf_printf(&r, "|%s(%s)", names[i], calls[i].data ? calls[i].data : "");
    for (int i = 0; i < 16; i++)
        pl_sbuf_fini(&calls[i]);
    pl_sbuf_fini(&content);
    pl_tool_out_fini(&out);
    pl_tool_parser_free(p);
    return pl_sbuf_take(&r, NULL);
}

/* The whole text and every piece size from 1 to its length give `want`. */
static void expect_named(enum pl_tool_parser_kind kind, const char *named, int max_calls,
                         const char *text, const char *want)
{
    size_t n = strlen(text);
    for (size_t piece = 0; piece <= n; piece++) {
        char *got = split(kind, named, max_calls, text, piece);
        CHECKF(got && !strcmp(got, want), "%s, pieces of %zu:\n  text: %s\n  got:  %s\n  want: %s",
               pl_tool_parser_kind_name(kind), piece, text, got ? got : "(null)", want);
        bool same = got && !strcmp(got, want);
        free(got);
        if (!same)
            return; /* one report per case */
    }
}

static void expect(enum pl_tool_parser_kind kind, const char *text, const char *want)
{
    expect_named(kind, NULL, 0, text, want);
}

static void test_hermes(void)
{
    const enum pl_tool_parser_kind H = PL_TOOL_PARSER_HERMES;
    expect(H, "Hello, world.", "Hello, world.");
    expect(H, "", "");
    expect(H, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n"
              "</tool_call>",
           "|get_weather({\"city\": \"Paris\"})");
    /* content before, two calls, whitespace between and after dropped */
    expect(H, "Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": [1, {\"y\": "
              "\"}\"}]}}\n</tool_call>\n<tool_call>{\"name\":\"b\",\"arguments\":{}}</tool_call>\n",
           "Let me check.\n|a({\"x\": [1, {\"y\": \"}\"}]})|b({})");
    /* "parameters" also names the arguments; strings with escapes and braces */
    expect(H, "<tool_call>{\"name\": \"f\", \"parameters\": {\"q\": \"a\\\"}{b\"}}</tool_call>",
           "|f({\"q\": \"a\\\"}{b\"})");
    /* keys in another order: parsed whole, arguments re-serialised as json.dumps does */
    expect(H, "<tool_call>{\"arguments\": {\"b\":1,\"a\":[true,null]}, \"name\": \"g\"}</tool_call>",
           "|g({\"b\": 1, \"a\": [true, null]})");
    /* a name alone: no arguments -> {} */
    expect(H, "<tool_call>{\"name\": \"now\"}</tool_call>", "|now({})");
    /* cut off inside the arguments: the call keeps what it got */
    expect(H, "<tool_call>{\"name\": \"f\", \"arguments\": {\"city\": \"Par",
           "|f({\"city\": \"Par)");
    /* text after a call is content */
    expect(H, "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> done", "done|f({})");
    /* malformed: falls back to content byte for byte */
    expect(H, "<tool_call>not json</tool_call>", "<tool_call>not json</tool_call>");
    expect(H, "<tool_call>{\"nam\": 1}</tool_call>", "<tool_call>{\"nam\": 1}</tool_call>");
    expect(H, "<tool_call>{\"name\": 5, \"arguments\": {}}</tool_call>",
           "<tool_call>{\"name\": 5, \"arguments\": {}}</tool_call>");
    expect(H, "<tool_call>{\"name\": \"f\", \"argu", "<tool_call>{\"name\": \"f\", \"argu");
    expect(H, "a <tool_cal b", "a <tool_cal b");
    expect(H, "<<tool_call>{\"name\": \"f\", \"arguments\": 1}</tool_call>", "<|f(1)");
    expect(H, "<tool_call", "<tool_call");
    /* literal and string values */
    expect(H, "<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>", "|f(\"{}\")");
    expect(H, "<tool_call>{\"name\": \"f\", \"arguments\": 12 }</tool_call>", "|f(12)");
    /* unicode in names and arguments */
    expect(H, "<tool_call>{\"name\": \"m\\u00e9t\u00e9o\", \"arguments\": {\"v\": \"\u00e9\"}}</tool_call>",
           "|m\u00e9t\u00e9o({\"v\": \"\u00e9\"})");
}

static void test_llama3(void)
{
    const enum pl_tool_parser_kind L = PL_TOOL_PARSER_LLAMA3_JSON;
    expect(L, "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
           "|get_weather({\"city\": \"Paris\"})");
    expect(L, "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"a\": 1}}", "|f({\"a\": 1})");
    expect(L, "\n {\"name\": \"f\", \"parameters\": {}}; {\"name\": \"g\", \"arguments\": {\"b\": 2}}",
           "|f({})|g({\"b\": 2})");
    /* plain answers stay content, leading whitespace included */
    expect(L, "  The weather is fine.", "  The weather is fine.");
    expect(L, "The {\"name\": \"f\"}", "The {\"name\": \"f\"}");
    expect(L, "{not a call} and more", "{not a call} and more");
    expect(L, "<|python_tag|>brave_search.call(query=\"x\")",
           "<|python_tag|>brave_search.call(query=\"x\")");
    expect(L, "<|other|>", "<|other|>");
    /* a second call that is not one: its text is content */
    expect(L, "{\"name\": \"f\", \"parameters\": {}}; oops", "; oops|f({})");
    expect(L, "{\"name\": \"f\", \"parameters\": {}} trailing", "trailing|f({})");
}

static void test_mistral(void)
{
    const enum pl_tool_parser_kind M = PL_TOOL_PARSER_MISTRAL;
    expect(M, "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"id\": \"abcdef123\"}, "
              "{\"name\": \"g\", \"arguments\": {}}]",
           "|f({\"a\": 1})|g({})");
    expect(M, "Sure. [TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}}]", "Sure. |f({})");
    /* v11: name[ARGS]{...}, repeated; [CALL_ID] skipped */
    expect(M, "[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]g[CALL_ID]abc123XYZ"
              "[ARGS]{}",
           "|get_weather({\"city\": \"Paris\"})|g({})");
    expect(M, "no calls [TOOL", "no calls [TOOL");
    expect(M, "[TOOL_CALLS]bad name![ARGS]{}", "[TOOL_CALLS]bad name![ARGS]{}");
    expect(M, "[TOOL_CALLS][oops]", "[TOOL_CALLS][oops]");
    expect(M, "[TOOL_CALLS]f", "[TOOL_CALLS]f");
}

static void test_json_array_and_named(void)
{
    const enum pl_tool_parser_kind A = PL_TOOL_PARSER_JSON_ARRAY;
    expect(A, "[{\"name\": \"f\", \"parameters\": {\"a\": \"x\"}}, {\"name\": \"g\", "
              "\"parameters\": {}}]",
           "|f({\"a\": \"x\"})|g({})");
    expect(A, " [ {\"name\":\"f\",\"parameters\":{}} ] ", "|f({})");
    expect(A, "nope", "nope");
    /* a bare object (no list) is one call; what follows it is content */
    expect(A, " {\"name\": \"a\", \"parameters\": {}}, {\"name\": \"b\"}]",
           ", {\"name\": \"b\"}]|a({})");
    expect(A, "[1]", "[1]");
    expect_named(PL_TOOL_PARSER_NAMED, "get_weather", 0, "{\"city\": \"Paris\"}",
                 "|get_weather({\"city\": \"Paris\"})");
    /* an empty answer is still the named call */
    char *s = split(PL_TOOL_PARSER_NAMED, "f", 0, "", 0);
    CHECK(s && !strcmp(s, "|f()"));
    free(s);
}

static void test_max_calls(void)
{
    expect_named(PL_TOOL_PARSER_HERMES, NULL, 1,
                 "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\":"
                 " \"b\", \"arguments\": {\"x\": 1}}</tool_call>",
                 "|a({})");
    expect_named(PL_TOOL_PARSER_JSON_ARRAY, NULL, 1,
                 "[{\"name\": \"a\", \"parameters\": {}}, {\"arguments\": {}, \"name\": \"b\"}]",
                 "|a({})");
}

static void test_names_and_detect(void)
{
    enum pl_tool_parser_kind k;
    CHECK(pl_tool_parser_kind_from_name("hermes", &k) && k == PL_TOOL_PARSER_HERMES);
    CHECK(pl_tool_parser_kind_from_name("llama3_json", &k) && k == PL_TOOL_PARSER_LLAMA3_JSON);
    CHECK(pl_tool_parser_kind_from_name("mistral", &k) && k == PL_TOOL_PARSER_MISTRAL);
    CHECK(pl_tool_parser_kind_from_name(NULL, &k) && k == PL_TOOL_PARSER_NONE);
    CHECK(!pl_tool_parser_kind_from_name("json_array", &k));
    CHECK(!pl_tool_parser_kind_from_name("pythonic", &k));
    CHECK(!strcmp(pl_tool_parser_kind_name(PL_TOOL_PARSER_LLAMA3_JSON), "llama3_json"));
    CHECK(pl_tool_parser_detect("{% for m in messages %}<tool_call>{% endfor %}") ==
          PL_TOOL_PARSER_HERMES);
    CHECK(pl_tool_parser_detect("{{ '[TOOL_CALLS]' }}") == PL_TOOL_PARSER_MISTRAL);
    CHECK(pl_tool_parser_detect("{{- '<|python_tag|>' }}") == PL_TOOL_PARSER_LLAMA3_JSON);
    CHECK(pl_tool_parser_detect("{{ messages }}") == PL_TOOL_PARSER_NONE);
    CHECK(pl_tool_parser_detect(NULL) == PL_TOOL_PARSER_NONE);
    CHECK(pl_tool_parser_new(PL_TOOL_PARSER_NONE, NULL, 0) == NULL);
    pl_tool_parser_free(NULL);
    /* the qwen3 fixture template renders hermes calls */
    FILE *f = fopen(pl_test_path("tests/fixtures/chat_template/templates/qwen3.jinja"), "rb");
    REQUIRE(f);
    char buf[16384];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    CHECK(pl_tool_parser_detect(buf) == PL_TOOL_PARSER_HERMES);
}

/* Feeding after finish, and finishing twice, change nothing. */
static void test_after_finish(void)
{
    struct pl_tool_parser *p = pl_tool_parser_new(PL_TOOL_PARSER_HERMES, NULL, 0);
    REQUIRE(p);
    struct pl_tool_out out = {0};
    pl_tool_parser_feed(p, "<tool_ca", 8, &out);
    CHECK(out.content.len == 0);
    pl_tool_parser_finish(p, &out);
    CHECK(out.content.len == 8);
    pl_tool_out_reset(&out);
    pl_tool_parser_feed(p, "x", 1, &out);
    pl_tool_parser_finish(p, &out);
    CHECK(out.content.len == 0 && out.n_calls == 0);
    pl_tool_out_fini(&out);
    pl_tool_parser_free(p);
}

int main(void)
{
    PL_RUN(test_hermes);
    PL_RUN(test_llama3);
    PL_RUN(test_mistral);
    PL_RUN(test_json_array_and_named);
    PL_RUN(test_max_calls);
    PL_RUN(test_names_and_detect);
    PL_RUN(test_after_finish);
    return pl_test_summary();
}
