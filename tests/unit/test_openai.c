/*
 * test_openai.c -- request parsing and validation of the OpenAI routes, SSE
 * framing and the error object.
 *
 * References: the OpenAI API reference and vLLM's protocol.py for field names,
 * defaults (completions max_tokens 16, chat: the rest of the context) and
 * error statuses; the ChatML template of the tiny model rendered by hand
 * (the string a transformers apply_chat_template call gives for it); prompt ids
 * from the tokenizer module (itself checked against Hugging Face tokenizers).
 */
#include "openai_fixture.h"
#include "test.h"

#include <jansson.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_MODEL_LEN 64

static struct pl_tokenizer *tok;
static struct pl_openai *oai;

static void setup(void)
{
    oai = openai_fixture_new(700, "tiny-alias", "/models/tiny", MAX_MODEL_LEN, &tok);
}

static pl_status parse(enum pl_openai_kind kind, const char *body, struct pl_openai_request *r,
                       struct pl_openai_error *e)
{
    return pl_openai_parse(oai, kind, body, strlen(body), r, e);
}

/* Expects a failure with this status and param ("" = none); the message must contain needle. */
static void expect_error(enum pl_openai_kind kind, const char *body, int status,
                         const char *param, const char *needle)
{
    struct pl_openai_request r;
    struct pl_openai_error e;
    pl_status st = parse(kind, body, &r, &e);
    CHECKF(st != PL_STATUS_OK, "accepted: %s", body);
    if (st == PL_STATUS_OK) {
        pl_openai_request_fini(&r);
        return;
    }
    CHECKF(e.status == status, "%s: status %d, want %d (%s)", body, e.status, status, e.message);
    CHECKF(!strcmp(e.param, param), "%s: param '%s', want '%s'", body, e.param, param);
    CHECKF(strstr(e.message, needle) != NULL, "%s: message '%s' lacks '%s'", body, e.message,
           needle);
}

static void encode(const char *text, bool special, int32_t **ids, int *n)
{
    if (pl_tokenizer_encode(tok, text, strlen(text), special, ids, n, NULL) != PL_STATUS_OK)
        abort();
}

static void test_bad_bodies(void)
{
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\": ", 400, "", "invalid JSON");
    expect_error(PL_OPENAI_COMPLETION, "[1,2]", 400, "", "JSON object");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"prompt\":\"b\"}", 400, "", "duplicate");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"temperature\":\"hot\"}", 400,
                 "temperature", "temperature");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"temperature\":7}", 400,
                 "temperature", "temperature");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"top_p\":0}", 400, "top_p", "top_p");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"n\":0}", 400, "n", "n");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"max_tokens\":-3}", 400, "max_tokens",
                 "max_tokens");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":true}", 400, "logprobs",
                 "integer");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"logprobs\":50}", 400, "logprobs",
                 "logprobs");
    expect_error(PL_OPENAI_COMPLETION, "{\"model\":\"gpt-4\",\"prompt\":\"a\"}", 404, "model",
                 "does not exist");
    expect_error(PL_OPENAI_COMPLETION, "{\"model\":7,\"prompt\":\"a\"}", 400, "model", "string");
    expect_error(PL_OPENAI_COMPLETION, "{\"model\":\"tiny\"}", 400, "prompt", "required");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":[]}", 400, "prompt", "empty");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":[[]]}", 400, "prompt", "empty");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":[\"a\", 3]}", 400, "prompt", "prompt[1]");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":[1, \"a\"]}", 400, "prompt", "integers");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":[1, 960]}", 400, "prompt", "vocabulary");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":[-1]}", 400, "prompt", "vocabulary");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":{\"a\":1}}", 400, "prompt", "got object");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"suffix\":\"b\"}", 400, "suffix",
                 "suffix");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"stream_options\":{\"include_usage\":true}}",
                 400, "stream_options", "stream=True");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"stream\":\"yes\"}", 400, "stream",
                 "boolean");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"max_completion_tokens\":3}", 400,
                 "max_completion_tokens", "max_completion_tokens");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"stop_token_ids\":[5000]}", 400,
                 "stop_token_ids", "stop_token_ids");
}

static void test_completion_prompts(void)
{
    struct pl_openai_request r;
    struct pl_openai_error e;
    int32_t *ids;
    int n;

    REQUIRE(parse(PL_OPENAI_COMPLETION, "{\"model\":\"tiny-alias\",\"prompt\":\"Hello world\"}",
                  &r, &e) == PL_STATUS_OK);
    encode("Hello world", true, &ids, &n);
    CHECK(r.n_prompts == 1);
    CHECK(r.prompts[0].n_ids == n && !memcmp(r.prompts[0].ids, ids, sizeof(int32_t) * (size_t)n));
    CHECK(r.prompts[0].ids[0] == pl_tokenizer_bos_id(tok)); /* special tokens added */
    CHECK(!strcmp(r.prompts[0].text, "Hello world"));
    CHECK(!strcmp(r.model, "tiny-alias"));
    CHECK(r.prompts[0].max_tokens == 16); /* OpenAI / vLLM completions default */
    CHECK(!r.stream && !r.echo && r.logprobs == -1);
    free(ids);
    pl_openai_request_fini(&r);

    REQUIRE(parse(PL_OPENAI_COMPLETION,
                  "{\"prompt\":\"Hello\",\"add_special_tokens\":false,\"max_tokens\":null}", &r,
                  &e) == PL_STATUS_OK);
    encode("Hello", false, &ids, &n);
    CHECK(r.prompts[0].n_ids == n && !memcmp(r.prompts[0].ids, ids, sizeof(int32_t) * (size_t)n));
    CHECK(r.prompts[0].max_tokens == MAX_MODEL_LEN - n); /* null: the rest of the context */
    CHECK(!strcmp(r.model, "tiny"));                     /* no model: the first served name */
    free(ids);
    pl_openai_request_fini(&r);

    REQUIRE(parse(PL_OPENAI_COMPLETION, "{\"prompt\":[\"a b\",\"c\"],\"max_tokens\":3}", &r, &e) ==
            PL_STATUS_OK);
    CHECK(r.n_prompts == 2 && !strcmp(r.prompts[1].text, "c"));
    CHECK(r.prompts[0].max_tokens == 3 && r.prompts[1].max_tokens == 3);
    pl_openai_request_fini(&r);

    REQUIRE(parse(PL_OPENAI_COMPLETION, "{\"prompt\":[5,6,7]}", &r, &e) == PL_STATUS_OK);
    CHECK(r.n_prompts == 1 && r.prompts[0].n_ids == 3 && r.prompts[0].ids[2] == 7);
    CHECK(r.prompts[0].text == NULL);
    pl_openai_request_fini(&r);

    REQUIRE(parse(PL_OPENAI_COMPLETION, "{\"prompt\":[[5,6],[7]]}", &r, &e) == PL_STATUS_OK);
    CHECK(r.n_prompts == 2 && r.prompts[1].n_ids == 1 && r.prompts[1].ids[0] == 7);
    pl_openai_request_fini(&r);
}

static void test_sampling_extras(void)
{
    struct pl_openai_request r;
    struct pl_openai_error e;
    const char *body =
        "{\"prompt\":[1,2],\"n\":3,\"temperature\":0.5,\"top_p\":0.9,\"top_k\":5,\"min_p\":0.1,"
        "\"repetition_penalty\":1.2,\"stop_token_ids\":[7,8],\"ignore_eos\":true,"
        "\"min_tokens\":2,\"skip_special_tokens\":false,\"include_stop_str_in_output\":true,"
        "\"seed\":42,\"prompt_logprobs\":1,\"stop\":[\"x\",\"yz\"],\"logprobs\":2,"
        "\"presence_penalty\":0.5,\"frequency_penalty\":-0.5,\"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},\"user\":\"u1\",\"echo\":false}";
    REQUIRE(parse(PL_OPENAI_COMPLETION, body, &r, &e) == PL_STATUS_OK);
    CHECK(r.sp.n == 3);
    CHECK_NEAR(r.sp.temperature, 0.5, 1e-6);
    CHECK_NEAR(r.sp.top_p, 0.9, 1e-6);
    CHECK(r.sp.top_k == 5);
    CHECK_NEAR(r.sp.min_p, 0.1, 1e-6);
    CHECK_NEAR(r.sp.repetition_penalty, 1.2, 1e-6);
    CHECK(r.sp.n_stop_token_ids == 2 && r.sp.stop_token_ids[1] == 8);
    CHECK(r.sp.ignore_eos && r.sp.min_tokens == 2 && !r.sp.skip_special_tokens);
    CHECK(r.sp.include_stop_str_in_output && r.sp.has_seed && r.sp.seed == 42);
    CHECK(r.sp.prompt_logprobs == 1 && r.sp.logprobs == 2 && r.logprobs == 2);
    CHECK(r.sp.n_stop == 2 && !strcmp(r.sp.stop[1], "yz"));
    CHECK(r.stream && r.include_usage && !r.continuous_usage);
    pl_openai_request_fini(&r);

    /* echo with logprobs asks the engine for the prompt's logprobs too (as vLLM does) */
    REQUIRE(parse(PL_OPENAI_COMPLETION, "{\"prompt\":[1,2],\"echo\":true,\"logprobs\":2}", &r,
                  &e) == PL_STATUS_OK);
    CHECK(r.echo && r.logprobs == 2 && r.sp.prompt_logprobs == 2);
    pl_openai_request_fini(&r);

    /* "stop" as a single string */
    REQUIRE(parse(PL_OPENAI_COMPLETION, "{\"prompt\":[1],\"stop\":\"\\n\"}", &r, &e) ==
            PL_STATUS_OK);
    CHECK(r.sp.n_stop == 1 && !strcmp(r.sp.stop[0], "\n"));
    pl_openai_request_fini(&r);
}

static void test_lengths(void)
{
    struct pl_openai_request r;
    struct pl_openai_error e;
    /* 60 prompt tokens + 16 > 64 */
    char body[1024] = "{\"prompt\":[";
    for (int i = 0; i < 60; i++)
        snprintf(body + strlen(body), sizeof(body) - strlen(body), "%s%d", i ? "," : "", 10 + i);
    strcat(body, "]}");
    CHECK(parse(PL_OPENAI_COMPLETION, body, &r, &e) != PL_STATUS_OK);
    CHECK(e.status == 400 && !strcmp(e.param, "max_tokens"));
    CHECK(strstr(e.message, "maximum context length is 64") != NULL);
    body[strlen(body) - 1] = '\0';
    strcat(body, ",\"max_tokens\":4}");
    CHECK(parse(PL_OPENAI_COMPLETION, body, &r, &e) == PL_STATUS_OK);
    if (e.status == 0)
        pl_openai_request_fini(&r);
    /* a prompt that fills the context leaves no room */
    char big[2048] = "{\"prompt\":[";
    for (int i = 0; i < 64; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "%s%d", i ? "," : "", 10 + i);
    strcat(big, "],\"max_tokens\":1}");
    CHECK(parse(PL_OPENAI_COMPLETION, big, &r, &e) != PL_STATUS_OK);
    CHECK(e.status == 400 && strstr(e.message, "64 input tokens") != NULL);
}

static void test_chat(void)
{
    struct pl_openai_request r;
    struct pl_openai_error e;
    int32_t *ids;
    int n;
    /* the ChatML rendering of the tiny model's template, written out by hand */
    const char *want = "<|begin_of_text|><|im_start|>system\nBe brief.<|im_end|>\n"
                       "<|im_start|>user\nHi there\nfriend<|im_end|>\n<|im_start|>assistant\n";
    REQUIRE(parse(PL_OPENAI_CHAT,
                  "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"Be "
                  "brief.\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi "
                  "there\"},{\"type\":\"text\",\"text\":\"friend\"}]}]}",
                  &r, &e) == PL_STATUS_OK);
    encode(want, false, &ids, &n); /* chat prompts: the template places the special tokens */
    CHECKF(!strcmp(r.prompts[0].text, want), "rendered '%s'", r.prompts[0].text);
    CHECK(r.prompts[0].n_ids == n && !memcmp(r.prompts[0].ids, ids, sizeof(int32_t) * (size_t)n));
    CHECK(r.prompts[0].max_tokens == MAX_MODEL_LEN - n); /* chat default: the rest */
    free(ids);
    pl_openai_request_fini(&r);

    REQUIRE(parse(PL_OPENAI_CHAT,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":\"assistant\","
                  "\"content\":\"Hello\"}],\"add_generation_prompt\":false,"
                  "\"continue_final_message\":true,\"max_completion_tokens\":5,\"max_tokens\":9,"
                  "\"logprobs\":true,\"top_logprobs\":3}",
                  &r, &e) == PL_STATUS_OK);
    CHECKF(!strcmp(r.prompts[0].text, "<|begin_of_text|><|im_start|>user\nHi<|im_end|>\n"
                                      "<|im_start|>assistant\nHello"),
           "continued '%s'", r.prompts[0].text);
    CHECK(r.prompts[0].max_tokens == 5); /* max_completion_tokens wins */
    CHECK(r.logprobs == 3);
    pl_openai_request_fini(&r);

    REQUIRE(parse(PL_OPENAI_CHAT,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                  "{\"type\":\"text\"},\"tools\":[],\"tool_choice\":\"none\"}",
                  &r, &e) == PL_STATUS_OK);
    pl_openai_request_fini(&r);

    expect_error(PL_OPENAI_CHAT, "{\"messages\":[]}", 400, "messages", "empty");
    expect_error(PL_OPENAI_CHAT, "{\"messages\":\"hi\"}", 400, "messages", "list");
    expect_error(PL_OPENAI_CHAT, "{\"messages\":[{\"content\":\"hi\"}]}", 400, "messages", "role");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                 "\"image_url\":{\"url\":\"x\"}}]}]}",
                 400, "messages", "image_url");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                 "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"schema\":"
                 "{\"type\":\"object\",\"properties\":{\"a\":{\"not\":{}}}}}}}",
                 400, "response_format", "'not'");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                 "{\"type\":\"json_object\"},\"guided_regex\":\"a\"}",
                 400, "response_format", "already");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"guided_grammar\":"
                 "\"root ::= nope\"}",
                 400, "structured_outputs", "nope");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                 "{\"type\":\"yaml\"}}",
                 400, "response_format", "yaml");
    REQUIRE(parse(PL_OPENAI_CHAT,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"response_format\":"
                  "{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",\"strict\":true,"
                  "\"schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"}},"
                  "\"required\":[\"a\"]}}}}",
                  &r, &e) == PL_STATUS_OK);
    CHECK(r.sp.constraint_kind == PL_CONSTRAINT_JSON && strstr(r.sp.constraint, "integer"));
    pl_openai_request_fini(&r);
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
                 "\"function\",\"function\":{\"name\":\"f\"}}]}",
                 400, "tool_choice", "--enable-auto-tool-choice");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logprobs\":2}", 400,
                 "logprobs", "boolean");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"top_logprobs\":2}", 400,
                 "top_logprobs", "logprobs must be set to true");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"add_generation_prompt\":"
                 "true,\"continue_final_message\":true}",
                 400, "continue_final_message", "cannot both");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"chat_template\":"
                 "\"{% for %}\"}",
                 400, "chat_template", "chat_template");
}

/* Runs fn with stderr going to a temporary file; returns what was written (malloc'd). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char path[] = "/tmp/pl_openai_stderr_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0)
        abort();
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 65536);
    size_t n = f ? fread(buf, 1, 65535, f) : 0;
    buf[n] = '\0';
    if (f)
        fclose(f);
    close(fd);
    unlink(path);
    return buf;
}

struct parse_job {
    enum pl_openai_kind kind;
    const char *body;
    struct pl_openai_request r;
    struct pl_openai_error e;
    pl_status st;
};

static void run_parse(void *arg)
{
    struct parse_job *j = arg;
    j->st = parse(j->kind, j->body, &j->r, &j->e);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* vLLM's leniency: fields the request model does not know are ignored with one warning per
 * request naming them; known fields keep their type checks. */
static void test_unknown_fields_ignored(void)
{
    struct parse_job plain = {.kind = PL_OPENAI_COMPLETION,
                              .body = "{\"prompt\":\"abc\",\"max_tokens\":5,\"temperature\":0.5}"};
    struct parse_job extra = {
        .kind = PL_OPENAI_COMPLETION,
        .body = "{\"prompt\":\"abc\",\"store\":false,\"metadata\":{\"k\":\"v\"},"
                "\"service_tier\":\"auto\",\"max_tokens\":5,\"bogus\":[1,2],"
                "\"temperature\":0.5,\"user\":\"u1\"}"};
    char *log_plain = capture_stderr(run_parse, &plain);
    char *log_extra = capture_stderr(run_parse, &extra);
    CHECKF(plain.st == PL_STATUS_OK && extra.st == PL_STATUS_OK, "%s / %s", plain.e.message,
           extra.e.message);
    if (plain.st == PL_STATUS_OK && extra.st == PL_STATUS_OK) {
        CHECK(extra.r.n_prompts == 1 && extra.r.prompts[0].n_ids == plain.r.prompts[0].n_ids &&
              !memcmp(extra.r.prompts[0].ids, plain.r.prompts[0].ids,
                      sizeof(int32_t) * (size_t)plain.r.prompts[0].n_ids));
        CHECK(extra.r.prompts[0].max_tokens == 5 && extra.r.sp.temperature == 0.5f);
    }
    CHECKF(!strstr(log_plain, "ignored"), "warned without unknown fields: %s", log_plain);
    CHECKF(count_of(log_extra, "The following fields were present in the request but ignored") ==
               1,
           "one warning per request: %s", log_extra);
    CHECKF(strstr(log_extra, "'store'") && strstr(log_extra, "'metadata'") &&
               strstr(log_extra, "'service_tier'") && strstr(log_extra, "'bogus'"),
           "%s", log_extra);
    CHECKF(count_of(log_extra, "'store'") == 1 && !strstr(log_extra, "'user'") &&
               !strstr(log_extra, "'temperature'") && !strstr(log_extra, "'max_tokens'"),
           "known fields named: %s", log_extra);
    pl_openai_request_fini(&plain.r);
    pl_openai_request_fini(&extra.r);
    free(log_plain);
    free(log_extra);

    /* known fields of the wrong type are still refused, unknown ones beside them or not */
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"store\":true,\"temperature\":\"hot\"}",
                 400, "temperature", "temperature");
    expect_error(PL_OPENAI_COMPLETION, "{\"prompt\":\"a\",\"metadata\":1,\"user\":5}", 400, "user",
                 "string");
    expect_error(PL_OPENAI_CHAT,
                 "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"store\":false,"
                 "\"max_completion_tokens\":\"many\"}",
                 400, "max_completion_tokens", "max_completion_tokens");
    /* unknown stream_options keys too; the known one still counts */
    struct pl_openai_request r;
    struct pl_openai_error e;
    REQUIRE(parse(PL_OPENAI_COMPLETION,
                  "{\"prompt\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":true,"
                  "\"bogus\":true}}",
                  &r, &e) == PL_STATUS_OK);
    CHECK(r.include_usage);
    pl_openai_request_fini(&r);
    /* chat with a completions field: ignored, as vLLM's ChatCompletionRequest does */
    REQUIRE(parse(PL_OPENAI_CHAT,
                  "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"prompt\":\"y\","
                  "\"store\":false,\"service_tier\":\"default\"}",
                  &r, &e) == PL_STATUS_OK);
    pl_openai_request_fini(&r);
}

static void test_sse_and_errors(void)
{
    struct pl_sbuf b = {0};
    pl_openai_sse_data(&b, "{\"a\":1}", 7);
    CHECK(!strcmp(b.data, "data: {\"a\":1}\n\n"));
    pl_sbuf_fini(&b);
    pl_openai_sse_data(&b, "x\ny\r\nz", 6);
    CHECK(!strcmp(b.data, "data: x\ndata: y\ndata: z\n\n"));
    pl_sbuf_fini(&b);

    size_t len = 0;
    char *s = pl_http_error_json(404, NULL, "model", "The model `x` does not exist.", &len);
    json_t *j = json_loads(s, 0, NULL);
    REQUIRE(j);
    json_t *err = json_object_get(j, "error");
    CHECK(!strcmp(json_string_value(json_object_get(err, "message")),
                  "The model `x` does not exist."));
    CHECK(!strcmp(json_string_value(json_object_get(err, "type")), "NotFoundError"));
    CHECK(!strcmp(json_string_value(json_object_get(err, "param")), "model"));
    CHECK(json_integer_value(json_object_get(err, "code")) == 404);
    CHECK(len == strlen(s));
    json_decref(j);
    free(s);
    /* invalid UTF-8 in a message still gives valid JSON */
    s = pl_http_error_json(400, NULL, NULL, "bad \xff\xfe byte", &len);
    j = json_loads(s, 0, NULL);
    CHECK(j != NULL);
    json_decref(j);
    free(s);

    size_t n;
    CHECK(pl_http_bearer_token("Bearer abc", &n) && n == 3);
    CHECK(pl_http_bearer_token("bearer   abc  ", &n) && n == 3);
    CHECK(pl_http_bearer_token("Basic abc", &n) == NULL);
    CHECK(pl_http_bearer_token("Bearer ", &n) == NULL);
    CHECK(pl_http_bearer_token("Bearerabc", &n) == NULL);
    CHECK(pl_http_secure_equal("secret", "secret"));
    CHECK(!pl_http_secure_equal("secret", "secreT"));
    CHECK(!pl_http_secure_equal("secret", "secret2"));
    CHECK(!pl_http_secure_equal("", "x"));
    CHECK(pl_http_secure_equal("", ""));
}

/* The helpers the RunPod worker shares with the routes: prompt preparation, error objects,
 * /v1/models; expected ids from the tokenizer module, the ChatML text written by hand. */
static void test_shared_helpers(void)
{
    struct pl_openai_prompt p;
    struct pl_openai_error e;
    int32_t *ids;
    int n;
    json_t *root = json_pack("{s:s}", "prompt", "Hello world");
    REQUIRE(pl_openai_prepare_prompt(oai, PL_OPENAI_COMPLETION, root, &p, &e) == PL_STATUS_OK);
    encode("Hello world", true, &ids, &n);
    CHECK(p.n_ids == n && !memcmp(p.ids, ids, sizeof(int32_t) * (size_t)n));
    CHECK(p.text && !strcmp(p.text, "Hello world"));
    free(ids);
    free(p.ids);
    free(p.text);
    json_decref(root);

    root = json_loads("{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}", 0, NULL);
    REQUIRE(pl_openai_prepare_prompt(oai, PL_OPENAI_CHAT, root, &p, &e) == PL_STATUS_OK);
    encode("<|begin_of_text|><|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false,
           &ids, &n);
    CHECK(p.n_ids == n && !memcmp(p.ids, ids, sizeof(int32_t) * (size_t)n));
    free(ids);
    free(p.ids);
    free(p.text);
    json_decref(root);

    root = json_loads("{\"messages\":\"hi\"}", 0, NULL);
    CHECK(pl_openai_prepare_prompt(oai, PL_OPENAI_CHAT, root, &p, &e) != PL_STATUS_OK);
    CHECK(e.status == 400 && !strcmp(e.param, "messages") && p.ids == NULL);
    /* the error object is the "error" member of the routes' error body */
    char *text = pl_openai_error_text(&e);
    char *full = pl_http_error_json(e.status, e.type, e.param, e.message, NULL);
    json_t *a = json_loads(text, 0, NULL), *b = json_loads(full, 0, NULL);
    CHECK(a && b && json_equal(a, json_object_get(b, "error")));
    CHECK(!strcmp(json_string_value(json_object_get(a, "type")), "BadRequestError"));
    json_decref(a);
    json_decref(b);
    free(text);
    free(full);
    json_decref(root);

    json_t *m = pl_openai_models_json(oai);
    json_t *data = json_object_get(m, "data");
    CHECK(!strcmp(json_string_value(json_object_get(m, "object")), "list"));
    CHECK(json_array_size(data) == 2);
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(data, 1), "id")), "tiny-alias"));
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(data, 0), "root")),
                  "/models/tiny"));
    json_decref(m);
}

int main(void)
{
    setup();
    PL_RUN(test_shared_helpers);
    PL_RUN(test_bad_bodies);
    PL_RUN(test_completion_prompts);
    PL_RUN(test_sampling_extras);
    PL_RUN(test_lengths);
    PL_RUN(test_chat);
    PL_RUN(test_unknown_fields_ignored);
    PL_RUN(test_sse_and_errors);
    pl_openai_free(oai);
    pl_tokenizer_free(tok);
    return pl_test_summary();
}
