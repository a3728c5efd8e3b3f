/*
 * test_chat_template.c -- the chat template interpreter against references.
 *
 * 1. Fixtures (the JSON files in tests/fixtures/chat_template): real model templates (Llama 3,
 *    Qwen3, Gemma 3) and synthetic feature templates, each case rendered by Python
 *    jinja2 the way transformers' apply_chat_template renders it (made by
 *    tools/template_refs.mjs with @huggingface/jinja, settled by
 *    tools/template_refs_check.py). Every case must render byte-identically, or fail
 *    with a message containing the reference's raise_exception text.
 * 2. Errors: malformed templates and bad operations fail with a status and a
 *    "line L, column C" position; limits (iterations, depth, output) are enforced.
 */
#include "tokenizer/chat_template/chat_template.h"

#include "test.h"

#include <dirent.h>

static char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, f) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[len] = '\0';
        *n = (size_t)len;
    }
    return buf;
}

static void show_diff(const char *want, const char *got, size_t got_n)
{
    size_t i = 0;
    while (want[i] && i < got_n && want[i] == got[i])
        i++;
    size_t from = i > 40 ? i - 40 : 0;
    fprintf(stderr, "    first difference at byte %zu\n    want: %.120s\n    got:  %.*s\n", i, want + from,
            (int)(got_n - from < 120 ? got_n - from : 120), got + from);
}

static int n_cases_run;

static void run_fixture(const char *path)
{
    json_error_t jerr;
    json_t *fx = json_load_file(path, 0, &jerr);
    REQUIRE(fx);
    const char *tfile = json_string_value(json_object_get(fx, "template_file"));
    REQUIRE(tfile);
    size_t n;
    char *src = slurp(pl_test_path(tfile), &n);
    CHECKF(src, "cannot read %s", tfile);
    if (!src) {
        json_decref(fx);
        return;
    }
    struct pl_err err = {0};
    struct pl_chat_template *t = NULL;
    pl_status st = pl_chat_template_parse(src, n, &t, &err);
    CHECKF(st == PL_STATUS_OK, "%s: parse failed: %s", tfile, err.msg);
    json_t *cases = json_object_get(fx, "cases");
    size_t i;
    json_t *c;
    json_array_foreach(cases, i, c) {
        if (!t)
            break;
        const char *name = json_string_value(json_object_get(c, "name"));
        const char *want = json_string_value(json_object_get(c, "expected"));
        const char *want_err = json_string_value(json_object_get(c, "error"));
        char *out = NULL;
        size_t out_n = 0;
        st = pl_chat_template_render(t, json_object_get(c, "context"), NULL, &out, &out_n, &err);
        n_cases_run++;
        if (want) {
            bool ok = st == PL_STATUS_OK && out_n == strlen(want) && memcmp(out, want, out_n) == 0;
            CHECKF(ok, "%s case %s: %s", path, name, st ? err.msg : "output differs");
            if (!ok && st == PL_STATUS_OK)
                show_diff(want, out, out_n);
        } else {
            CHECKF(st != PL_STATUS_OK && want_err && strstr(err.msg, want_err),
                   "%s case %s: expected error containing '%s', got status %d '%s'", path, name,
                   want_err ? want_err : "?", (int)st, st ? err.msg : "");
            CHECKF(st == PL_STATUS_OK || strstr(err.msg, "line "), "error without position: %s", err.msg);
        }
        free(out);
    }
    pl_chat_template_free(t);
    free(src);
    json_decref(fx);
}

static void test_fixtures(void)
{
    const char *dir = pl_test_path("tests/fixtures/chat_template");
    char dirbuf[4096];
    snprintf(dirbuf, sizeof(dirbuf), "%s", dir);
    DIR *d = opendir(dirbuf);
    REQUIRE(d);
    struct dirent *e;
    int n_files = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        char path[4096 + 256];
        snprintf(path, sizeof(path), "%s/%s", dirbuf, e->d_name);
        run_fixture(path);
        n_files++;
    }
    closedir(d);
    CHECK(n_files >= 10);
    CHECK(n_cases_run >= 40);
    fprintf(stderr, "    %d fixture files, %d cases\n", n_files, n_cases_run);
}

/* Renders src with a JSON context; returns status, output or message in *res (malloc'ed). */
static pl_status render(const char *src, const char *ctx_json, const struct pl_chat_template_limits *lim,
                        char **res)
{
    struct pl_err err = {0};
    struct pl_chat_template *t = NULL;
    *res = NULL;
    pl_status st = pl_chat_template_parse(src, strlen(src), &t, &err);
    if (st != PL_STATUS_OK) {
        *res = strdup(err.msg);
        return st;
    }
    json_t *ctx = json_loads(ctx_json ? ctx_json : "{}", 0, NULL);
    char *out = NULL;
    size_t n = 0;
    st = pl_chat_template_render(t, ctx, lim, &out, &n, &err);
    json_decref(ctx);
    pl_chat_template_free(t);
    *res = st == PL_STATUS_OK ? out : strdup(err.msg);
    if (st != PL_STATUS_OK)
        free(out);
    return st;
}

#define EXPECT_ERR(src, ctx, status, needle)                                                   \
    do {                                                                                       \
        char *r_;                                                                              \
        pl_status s_ = render(src, ctx, NULL, &r_);                                            \
        CHECKF(s_ == (status) && r_ && strstr(r_, needle), "%s -> %d '%s' (want %d '%s')", src, \
               (int)s_, r_ ? r_ : "", (int)(status), needle);                                  \
        free(r_);                                                                              \
    } while (0)

static void test_syntax_errors(void)
{
    EXPECT_ERR("{% if x %}abc", NULL, PL_STATUS_FORMAT, "line 1, column 14");
    EXPECT_ERR("{% if x %}abc", NULL, PL_STATUS_FORMAT, "'if' block is not closed");
    EXPECT_ERR("a\n{% for x in y %}\n{% endif %}", NULL, PL_STATUS_FORMAT, "line 3, column 4: unknown or unexpected tag 'endif'");
    EXPECT_ERR("{{ x ", NULL, PL_STATUS_FORMAT, "not closed");
    EXPECT_ERR("line1\n  {{ 1 + }}", NULL, PL_STATUS_FORMAT, "line 2, column 10");
    EXPECT_ERR("{# unterminated", NULL, PL_STATUS_FORMAT, "missing end of comment");
    EXPECT_ERR("{{ 'abc }}", NULL, PL_STATUS_FORMAT, "unterminated string");
    EXPECT_ERR("{{ (1, 2 }}", NULL, PL_STATUS_FORMAT, "unexpected '}'");
    EXPECT_ERR("{{ x ! y }}", NULL, PL_STATUS_FORMAT, "unexpected character");
    EXPECT_ERR("{% break %}", NULL, PL_STATUS_FORMAT, "outside of a loop");
    EXPECT_ERR("{% include 'x' %}", NULL, PL_STATUS_UNSUPPORTED, "unknown or unexpected tag 'include'");
    EXPECT_ERR("{% for x in y recursive %}{% endfor %}", NULL, PL_STATUS_UNSUPPORTED, "recursive");
    EXPECT_ERR("{% raw %}never closed", NULL, PL_STATUS_FORMAT, "missing end of raw");
    EXPECT_ERR("{{ 1 is odd is even }}", NULL, PL_STATUS_FORMAT, "chain multiple tests");
    /* invalid UTF-8 source */
    EXPECT_ERR("\xff\xfe", NULL, PL_STATUS_FORMAT, "not valid UTF-8");
    /* deep nesting is refused, not a stack overflow */
    char deep[4096];
    size_t k = 0;
    k += (size_t)snprintf(deep + k, sizeof(deep) - k, "{{ ");
    for (int i = 0; i < 1000; i++)
        deep[k++] = '[';
    deep[k] = '\0';
    EXPECT_ERR(deep, NULL, PL_STATUS_LIMIT, "too deeply");
}

static void test_render_errors(void)
{
    EXPECT_ERR("{{ x|nosuchfilter }}", NULL, PL_STATUS_UNSUPPORTED, "line 1, column 6: no filter named 'nosuchfilter'");
    EXPECT_ERR("ok{% if false %}{{ x|nosuchfilter }}{% endif %}", NULL, PL_STATUS_OK, "ok");
    EXPECT_ERR("{{ x is nosuchtest }}", NULL, PL_STATUS_UNSUPPORTED, "no test named");
    EXPECT_ERR("\n\n   {{ raise_exception('boom ' ~ 42) }}", NULL, PL_STATUS_INVALID_ARGUMENT,
               "line 3, column 7: boom 42");
    EXPECT_ERR("{{ foo.bar }}", NULL, PL_STATUS_INVALID_ARGUMENT, "'foo' is undefined");
    EXPECT_ERR("{{ m.missing.x }}", "{\"m\": {}}", PL_STATUS_INVALID_ARGUMENT, "'dict object' has no attribute 'missing'");
    EXPECT_ERR("{{ m.missing }}|{{ m['missing'] }}|{{ undefined_name }}", "{\"m\": {}}", PL_STATUS_OK, "||");
    EXPECT_ERR("{{ 1 + 'a' }}", NULL, PL_STATUS_INVALID_ARGUMENT, "unsupported operand type(s) for +: 'int' and 'str'");
    EXPECT_ERR("{{ 1 / 0 }}", NULL, PL_STATUS_INVALID_ARGUMENT, "division by zero");
    EXPECT_ERR("{{ 1 < 'a' }}", NULL, PL_STATUS_INVALID_ARGUMENT, "not supported between");
    EXPECT_ERR("{% for x in 5 %}{% endfor %}", NULL, PL_STATUS_INVALID_ARGUMENT, "'int' object is not iterable");
    EXPECT_ERR("{% for x in undefined_name %}x{% endfor %}done", NULL, PL_STATUS_OK, "done");
    EXPECT_ERR("{% set x = 1 %}{% set x.y = 2 %}", NULL, PL_STATUS_INVALID_ARGUMENT, "non-namespace");
    EXPECT_ERR("{{ [1, 2].append(3) }}", NULL, PL_STATUS_INVALID_ARGUMENT, "unsafe");
    EXPECT_ERR("{{ range(200000)|length }}", NULL, PL_STATUS_LIMIT, "MAX_RANGE");
    EXPECT_ERR("{{ {'a': 1}|tojson }}{{ x|tojson }}", NULL, PL_STATUS_INVALID_ARGUMENT, "not JSON serializable");
    EXPECT_ERR("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", NULL, PL_STATUS_INVALID_ARGUMENT, "takes not more than 1");
    EXPECT_ERR("{{ 9223372036854775807 + 1 }}", NULL, PL_STATUS_UNSUPPORTED, "overflow");
    EXPECT_ERR("{{ 'x' * 1000000000000 }}", NULL, PL_STATUS_LIMIT, "output limit");
}

static void test_limits(void)
{
    struct pl_chat_template_limits lim = {.max_loop_iterations = 1000, .max_depth = 8, .max_output_bytes = 4096};
    char *r;
    /* nested range loops: 100000^3 iterations would never finish */
    pl_status st = render("{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
                          "{% endfor %}{% endfor %}{% endfor %}",
                          NULL, NULL, &r);
    CHECKF(st == PL_STATUS_LIMIT && strstr(r, "iterations"), "%d %s", (int)st, r);
    free(r);
    st = render("{% for i in range(10) %}{% for j in range(200) %}{% endfor %}{% endfor %}", NULL, &lim, &r);
    CHECKF(st == PL_STATUS_LIMIT && strstr(r, "exceed 1000"), "%d %s", (int)st, r);
    free(r);
    st = render("{% for i in range(10) %}{% for j in range(90) %}{% endfor %}{% endfor %}ok", NULL, &lim, &r);
    CHECKF(st == PL_STATUS_OK && strcmp(r, "ok") == 0, "%d %s", (int)st, r);
    free(r);
    /* unbounded recursion hits the depth bound */
    st = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, &lim, &r);
    CHECKF(st == PL_STATUS_LIMIT && strstr(r, "nested deeper than 8"), "%d %s", (int)st, r);
    free(r);
    st = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, NULL, &r);
    CHECKF(st == PL_STATUS_LIMIT && strstr(r, "deeper than 64"), "%d %s", (int)st, r);
    free(r);
    /* exponential recursion within the depth bound is stopped by the call count */
    st = render("{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}",
                NULL, NULL, &r);
    CHECKF(st == PL_STATUS_LIMIT, "%d %s", (int)st, r);
    free(r);
    /* output bound */
    st = render("{% for i in range(1000) %}0123456789{% endfor %}", NULL, &lim, &r);
    CHECKF(st == PL_STATUS_LIMIT && strstr(r, "4096 bytes"), "%d %s", (int)st, r);
    free(r);
    st = render("{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", NULL,
                NULL, &r);
    CHECKF(st == PL_STATUS_LIMIT, "%d %s", (int)st, r);
    free(r);
    /* work budget: quadratic scans without many loop iterations */
    st = render("{% set l = range(100000)|list %}{% for i in range(100000) %}{% if i in l %}{% endif %}{% endfor %}",
                NULL, NULL, &r);
    CHECKF(st == PL_STATUS_LIMIT && strstr(r, "work budget"), "%d %s", (int)st, r);
    free(r);
}

static void test_api(void)
{
    struct pl_err err = {0};
    struct pl_chat_template *t = NULL;
    pl_chat_template_free(NULL);
    REQUIRE(pl_chat_template_parse("a{{ x }}b\r\nc\n", 12, &t, &err) == PL_STATUS_OK);
    json_t *ctx = json_pack("{s:i}", "x", 5);
    char *out = NULL;
    size_t n = 0;
    /* newlines normalized, one trailing newline dropped (keep_trailing_newline=False) */
    CHECK(pl_chat_template_render(t, ctx, NULL, &out, &n, &err) == PL_STATUS_OK);
    CHECK(out && n == 5 && strcmp(out, "a5b\nc") == 0);
    free(out);
    /* NULL context renders with no variables */
    CHECK(pl_chat_template_render(t, NULL, NULL, &out, &n, &err) == PL_STATUS_OK);
    CHECK(out && strcmp(out, "ab\nc") == 0);
    free(out);
    json_t *arr = json_array();
    CHECK(pl_chat_template_render(t, arr, NULL, &out, &n, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(out == NULL);
    json_decref(arr);
    json_decref(ctx);
    pl_chat_template_free(t);
}

/* pl_apply_chat_template: one rendering for every front end (render.c). */
static char *apply(const char *tmpl, const char *msgs, const char *kwargs, bool gen, bool cont,
                   const char **param, struct pl_err *err)
{
    struct pl_chat_template *t = NULL;
    if (pl_chat_template_parse(tmpl, strlen(tmpl), &t, err) != PL_STATUS_OK)
        return NULL;
    json_t *m = json_loads(msgs, 0, NULL), *kw = kwargs ? json_loads(kwargs, 0, NULL) : NULL;
    const struct pl_chat_apply o = {.bos_token = "<s>", .eos_token = "</s>",
                                    .add_generation_prompt = gen, .continue_final_message = cont,
                                    .kwargs = kw};
    char *out = NULL;
    size_t len = 0;
    pl_apply_chat_template(t, m, &o, &out, &len, param, err);
    if (out)
        CHECK(strlen(out) == len);
    json_decref(m);
    json_decref(kw);
    pl_chat_template_free(t);
    return out;
}

static void test_apply_chat_template(void)
{
    const char *T = "{{ bos_token }}{% for m in messages %}[{{ m.role }}:{{ m.content }}]"
                    "{% endfor %}{% if add_generation_prompt %}[assistant:{% endif %}";
    struct pl_err err = {0};
    const char *param = NULL;
    char *s = apply(T, "[{\"role\":\"user\",\"content\":\"hi\"}]", NULL, true, false, &param,
                    &err);
    CHECK(s && !strcmp(s, "<s>[user:hi][assistant:"));
    free(s);
    /* text parts are joined with a newline */
    s = apply(T, "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                 "{\"type\":\"text\",\"text\":\"b\"}]}]",
              NULL, false, false, &param, &err);
    CHECK(s && !strcmp(s, "<s>[user:a\nb]"));
    free(s);
    /* chat_template_kwargs are merged over the defaults, as vLLM does */
    s = apply(T, "[{\"role\":\"user\",\"content\":\"hi\"}]",
              "{\"add_generation_prompt\": false, \"bos_token\": \"B\"}", true, false, &param,
              &err);
    CHECK(s && !strcmp(s, "B[user:hi]"));
    free(s);
    /* continue_final_message as transformers: leading whitespace never kept in the length,
     * trailing whitespace kept only when the message has no leading whitespace */
    s = apply(T, "[{\"role\":\"assistant\",\"content\":\"  hi \"}]", NULL, false, true,
              &param, &err);
    CHECKF(s && !strcmp(s, "<s>[assistant:  hi"), "%s", s ? s : err.msg);
    free(s);
    s = apply(T, "[{\"role\":\"assistant\",\"content\":\"hi \"}]", NULL, false, true, &param,
              &err);
    CHECKF(s && !strcmp(s, "<s>[assistant:hi "), "%s", s ? s : err.msg);
    free(s);
    s = apply("{% for m in messages %}{{ m.content | trim }}|{% endfor %}",
              "[{\"role\":\"assistant\",\"content\":\"hi \"}]", NULL, false, true, &param,
              &err);
    CHECKF(s && !strcmp(s, "hi"), "%s", s ? s : err.msg);
    free(s);
    /* refusals name the request field */
    s = apply(T, "[{\"role\":\"assistant\",\"content\":\"hi\"}]", NULL, true, true, &param,
              &err);
    CHECK(!s && param && !strcmp(param, "continue_final_message"));
    s = apply(T, "[]", NULL, true, false, &param, &err);
    CHECK(!s && param && !strcmp(param, "messages") && strstr(err.msg, "empty"));
    s = apply(T, "[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]", NULL, true,
              false, &param, &err);
    CHECK(!s && param && !strcmp(param, "messages") && strstr(err.msg, "image_url"));
    s = apply(T, "[{\"role\":\"user\",\"content\":\"hi\"}]", "[1]", true, false, &param, &err);
    CHECK(!s && param && !strcmp(param, "chat_template_kwargs"));
    s = apply(T, "[{\"role\":\"assistant\",\"content\":\"zz\"}]", NULL, false, true, &param,
              &err);
    CHECKF(s && !strcmp(s, "<s>[assistant:zz"), "%s", s ? s : err.msg);
    free(s);
}

/* Tools and tool calls reach the template as transformers passes them after vLLM's
 * message preprocessing (render.c). */
static void test_apply_tools(void)
{
    const char *T = "{{ tools is none }}|{{ documents is none }}|{% if tools %}{{ tools | tojson }}"
                    "{% endif %}{% for m in messages %}[{{ m.role }}:{{ m.content }}"
                    "{% for c in m.tool_calls or [] %} {{ c.function.name }}"
                    "{{ c.function.arguments | tojson }}{{ c.function.arguments is mapping }}"
                    "{% endfor %}{% if m.tool_call_id %} id={{ m.tool_call_id }}{% endif %}]"
                    "{% endfor %}";
    struct pl_err err = {0};
    const char *param = NULL;
    /* no tools: tools and documents are None (defined), as transformers passes them */
    char *s = apply(T, "[{\"role\":\"user\",\"content\":\"hi\"}]", NULL, false, false, &param,
                    &err);
    CHECKF(s && !strcmp(s, "True|True|[user:hi]"), "%s", s ? s : err.msg);
    free(s);
    /* arguments as JSON text become a mapping; null content is "" (vLLM's string format) */
    const char *msgs =
        "[{\"role\":\"user\",\"content\":\"w?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}},"
        "{\"id\":\"c2\",\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"c1\",\"content\":\"sunny\"}]";
    struct pl_chat_template *t = NULL;
    REQUIRE(pl_chat_template_parse(T, strlen(T), &t, &err) == PL_STATUS_OK);
    json_t *m = json_loads(msgs, 0, NULL);
    REQUIRE(m);
    json_t *tools = json_loads("[{\"type\":\"function\",\"function\":{\"name\":\"get\"}}]",
                               0, NULL);
    const struct pl_chat_apply o = {.bos_token = "<s>", .eos_token = "</s>", .tools = tools};
    size_t len = 0;
    CHECK(pl_apply_chat_template(t, m, &o, &s, &len, &param, &err) == PL_STATUS_OK);
    CHECKF(s && !strcmp(s, "False|True|[{\"type\": \"function\", \"function\": {\"name\": "
                           "\"get\"}}][user:w?][assistant: get{\"city\": \"Paris\"}True now{}True]"
                           "[tool:sunny id=c1]"),
           "%s", s ? s : err.msg);
    free(s);
    /* the caller's messages are not changed */
    json_t *args = json_object_get(
        json_object_get(json_array_get(json_object_get(json_array_get(m, 1), "tool_calls"), 0),
                        "function"),
        "arguments");
    CHECK(json_is_string(args));
    /* arguments that are not JSON are refused naming the message */
    json_object_set_new(
        json_object_get(json_array_get(json_object_get(json_array_get(m, 1), "tool_calls"), 0),
                        "function"),
        "arguments", json_string("{oops"));
    CHECK(pl_apply_chat_template(t, m, &o, &s, &len, &param, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECKF(!s && param && !strcmp(param, "messages") &&
               strstr(err.msg, "messages[1].tool_calls[0].function.arguments"),
           "%s", err.msg);
    json_decref(m);
    /* the request's tools win over chat_template_kwargs' */
    m = json_loads("[{\"role\":\"user\",\"content\":\"x\"}]", 0, NULL);
    json_t *kw = json_loads("{\"tools\": [1]}", 0, NULL);
    const struct pl_chat_apply o2 = {.kwargs = kw, .tools = tools};
    CHECK(pl_apply_chat_template(t, m, &o2, &s, &len, &param, &err) == PL_STATUS_OK);
    CHECKF(s && strstr(s, "\"get\""), "%s", s ? s : err.msg);
    free(s);
    const struct pl_chat_apply o3 = {.kwargs = kw};
    CHECK(pl_apply_chat_template(t, m, &o3, &s, &len, &param, &err) == PL_STATUS_OK);
    CHECKF(s && !strncmp(s, "False|True|[1]", 14), "%s", s ? s : err.msg);
    free(s);
    json_decref(kw);
    json_decref(m);
    json_decref(tools);
    pl_chat_template_free(t);
}

int main(void)
{
    PL_RUN(test_fixtures);
    PL_RUN(test_syntax_errors);
    PL_RUN(test_render_errors);
    PL_RUN(test_limits);
    PL_RUN(test_api);
    PL_RUN(test_apply_chat_template);
    PL_RUN(test_apply_tools);
    return pl_test_summary();
}
