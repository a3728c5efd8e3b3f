/*
 * test_runpod_rules.c -- the RunPod worker's pure protocol rules against the
 * values written in docs/runpod-protocol.md: URL templating (1.3),
 * take-response handling (1.5), the result-post retry policy (1.7), the
 * stream batch-size schedule (4.5, conformance RS7-RS9) and the input-mode
 * rules R1-R9 (5.3, RS2/RS5/RS6/RS13), and the OpenAI-route SSE chunking (4.4,
 * OA3/OA4: events per chunk follow 1, 3, 9, ...; raw strings end in [DONE]).
 */
#include "test.h"
#include "worker/runpod.h"

#include <stdlib.h>
#include <string.h>

static void check_str(char *got, const char *want)
{
    CHECKF(got && !strcmp(got, want), "got '%s' want '%s'", got ? got : "(null)", want);
    free(got);
}

static void test_url_templates(void)
{
    /* spec 1.3 table: the same $ID means the worker in take URLs, the job in result URLs */
    check_str(pl_rp_url_expand("https://api.runpod.ai/v2/ep/job-take/$ID?gpu=g", "w1", "w1"),
              "https://api.runpod.ai/v2/ep/job-take/w1?gpu=g");
    check_str(pl_rp_url_expand("http://h/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=SIM", "w1",
                               "60902e6c-08a1-426e-9cb9-9eaec90f5e2b-u1"),
              "http://h/v2/ep/job-done/w1/60902e6c-08a1-426e-9cb9-9eaec90f5e2b-u1?gpu=SIM");
    /* $RUNPOD_POD_ID in the take template (the SDK's example env file) is replaced too */
    check_str(pl_rp_url_expand("http://h/job-take/$RUNPOD_POD_ID", "w1", "w1"), "http://h/job-take/w1");
    /* job ids outside the unreserved set are percent-encoded */
    check_str(pl_rp_url_expand("http://h/job-done/$RUNPOD_POD_ID/$ID", "w1", "a b/c"),
              "http://h/job-done/w1/a%20b%2Fc");
    check_str(pl_rp_url_append("http://h/x?gpu=SIM", "isStream=false"),
              "http://h/x?gpu=SIM&isStream=false");
    check_str(pl_rp_url_append("http://h/x", "job_in_progress=0"), "http://h/x?job_in_progress=0");
    check_str(pl_rp_url_replace("http://h/v2/ep/job-take/w1?gpu=SIM", "/job-take/", "/job-stop/"),
              "http://h/v2/ep/job-stop/w1?gpu=SIM");
    check_str(pl_rp_url_replace("http://h/v2/ep/job-take/w1?gpu=SIM", "/job-take/",
                                "/job-take-batch/"),
              "http://h/v2/ep/job-take-batch/w1?gpu=SIM");
    CHECK(pl_rp_url_replace("http://h/other", "/job-take/", "/job-stop/") == NULL);
}

static void test_take_classify(void)
{
    CHECK(pl_rp_take_classify(204, NULL, 0) == PL_RP_TAKE_NONE);
    CHECK(pl_rp_take_classify(400, "application/json", 10) == PL_RP_TAKE_NONE);
    CHECK(pl_rp_take_classify(429, NULL, 0) == PL_RP_TAKE_BACKOFF_429);
    CHECK(pl_rp_take_classify(500, NULL, 0) == PL_RP_TAKE_ERROR);
    CHECK(pl_rp_take_classify(0, NULL, 0) == PL_RP_TAKE_ERROR);
    CHECK(pl_rp_take_classify(401, NULL, 0) == PL_RP_TAKE_ERROR_AUTH);
    CHECK(pl_rp_take_classify(200, "text/html", 20) == PL_RP_TAKE_IGNORED);       /* TK9 */
    CHECK(pl_rp_take_classify(200, "application/json", 0) == PL_RP_TAKE_IGNORED); /* TK11 */
    CHECK(pl_rp_take_classify(200, "application/json; charset=utf-8", 5) == PL_RP_TAKE_JOBS);
}

static void test_take_wait(void)
{
    /* TK1, TK7, TK9-TK11: poll again at once; TK12: an abandoned long poll too */
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(204, NULL, 0), false, 5000) == 0);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(400, "application/json", 9), false, 5000) == 0);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(200, "text/html", 20), false, 5000) == 0);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(200, "application/json", 5), false, 5000) == 0);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(0, NULL, 0), true, 5000) == 0);
    /* TK6: the 429 back-off; TK8: 1 s after other errors (no hot loop), 5 s on auth errors */
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(429, NULL, 0), false, 5000) == 5000);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(429, NULL, 0), false, 700) == 700);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(500, NULL, 0), false, 5000) == 1000);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(0, NULL, 0), false, 5000) == 1000);
    CHECK(pl_rp_take_wait_ms(pl_rp_take_classify(404, NULL, 0), false, 5000) == 5000);
}

static void test_parse_jobs(void)
{
    const char *why;
    const char *one = "{\"id\":\"j\",\"input\":{\"prompt\":\"hi\"},\"webhook\":null,\"batchId\":\"B1\"}";
    json_t *jobs = pl_rp_parse_jobs(one, strlen(one), &why);
    REQUIRE(jobs);
    CHECK(json_array_size(jobs) == 1 && why == NULL);
    json_decref(jobs);
    const char *noid = "{\"input\":{\"prompt\":\"hi\"}}"; /* TK10 */
    jobs = pl_rp_parse_jobs(noid, strlen(noid), &why);
    CHECK(jobs && json_array_size(jobs) == 0 && why &&
          !strcmp(why, "Job has missing field(s): id or input."));
    json_decref(jobs);
    const char *batch = "[{\"id\":\"a\",\"input\":{}},{\"id\":5,\"input\":{}},{\"id\":\"b\"},"
                        "{\"id\":\"c\",\"input\":{}}]";
    jobs = pl_rp_parse_jobs(batch, strlen(batch), &why);
    CHECK(jobs && json_array_size(jobs) == 2);
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(jobs, 1), "id")), "c"));
    json_decref(jobs);
    CHECK(pl_rp_parse_jobs("{nope", 5, &why) == NULL);
}

static void test_retry_policy(void)
{
    /* 5xx: FibonacciRetry(attempts=3): waits 2 s then 3 s, the third 5xx is final (RS14, RS15) */
    CHECK(pl_rp_post_retry_delay_ms(1, 1, 503, 0, 100) == 2000);
    CHECK(pl_rp_post_retry_delay_ms(2, 2, 500, 0, 100) == 3000);
    CHECK(pl_rp_post_retry_delay_ms(3, 3, 500, 0, 100) == -1);
    CHECK(pl_rp_post_retry_delay_ms(2, 2, 502, 0, 10) == 300);
    /* other answers are final (RS16) */
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 404, 0, 100) == -1);
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 400, 5, 100) == -1);
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 200, 0, 100) == -1);
    /* 429 and network failures (reset mid-post, a restarting job server): the Fibonacci
     * waits go on, capped at 30 s, for PL_RP_POST_MAX_ATTEMPTS attempts */
    static const int fib[] = {2000, 3000, 5000, 8000, 13000, 21000, 30000, 30000, 30000};
    long total = 0;
    for (int a = 1; a < PL_RP_POST_MAX_ATTEMPTS; a++) {
        CHECKF(pl_rp_post_retry_delay_ms(a, 0, 0, 0, 100) == fib[a - 1], "attempt %d: %d", a,
               pl_rp_post_retry_delay_ms(a, 0, 0, 0, 100));
        CHECK(pl_rp_post_retry_delay_ms(a, 0, 429, 0, 100) == fib[a - 1]);
        total += fib[a - 1];
    }
    CHECK(total >= 120000); /* a job server down for two minutes loses no result */
    CHECK(pl_rp_post_retry_delay_ms(PL_RP_POST_MAX_ATTEMPTS, 0, 0, 0, 100) == -1);
    CHECK(pl_rp_post_retry_delay_ms(PL_RP_POST_MAX_ATTEMPTS, 0, 429, 0, 100) == -1);
    CHECK(pl_rp_post_retry_delay_ms(4, 0, 0, 0, 10) == 800);
    /* 5xx answers among other failures: only the third 5xx is final */
    CHECK(pl_rp_post_retry_delay_ms(3, 1, 503, 0, 100) == 5000);
    CHECK(pl_rp_post_retry_delay_ms(5, 2, 503, 0, 100) == 13000);
    CHECK(pl_rp_post_retry_delay_ms(5, 3, 503, 0, 100) == -1);
    CHECK(pl_rp_post_retry_delay_ms(PL_RP_POST_MAX_ATTEMPTS, 1, 503, 0, 100) == -1);
    /* Retry-After (429 only): honoured when longer, capped at 60 s, never scaled */
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 429, 7, 100) == 7000);
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 429, 1, 100) == 2000);
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 429, 1, 10) == 1000);
    CHECK(pl_rp_post_retry_delay_ms(1, 0, 429, 3600, 100) == 60000);
    CHECK(pl_rp_post_retry_delay_ms(1, 1, 503, 7, 100) == 2000);
}

static void test_webhook_urls(void)
{
    CHECK(pl_rp_webhook_url_problem("http://127.0.0.1:8080/hook") == NULL);
    CHECK(pl_rp_webhook_url_problem("HTTPS://example.com/x?y=1") == NULL);
    /* every other scheme could make curl talk raw to a local port or read a file */
    static const char *bad[] = {"gopher://127.0.0.1:6379/_SET%20x%201", "file:///etc/passwd",
                                "dict://127.0.0.1:11211/stat", "ftp://127.0.0.1/x",
                                "smtp://127.0.0.1/", "telnet://127.0.0.1:23", "ldap://x/",
                                "127.0.0.1:8080/hook", "", "http://", "javascript:alert(1)",
                                "HTTPS:/W/example.com/hook", "http:/x", " http://x/"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECKF(pl_rp_webhook_url_problem(bad[i]) != NULL, "'%s' accepted", bad[i]);
    CHECK(strstr(pl_rp_webhook_url_problem("gopher://127.0.0.1:1/_x"), "http://") != NULL);
}

static void sizes(double max, double min, double growth, const double *want, int n)
{
    struct pl_rp_schedule s;
    pl_rp_schedule_init(&s, max, min, growth);
    for (int i = 0; i < n; i++) {
        CHECKF(pl_rp_schedule_size(&s) == want[i], "chunk %d: %g want %g", i,
               pl_rp_schedule_size(&s), want[i]);
        pl_rp_schedule_next(&s);
    }
}

static void test_schedule(void)
{
    const double dflt[] = {1, 3, 9, 27, 50, 50, 50};
    sizes(50, 1, 3, dflt, 7);                      /* spec 4.5 default sequence */
    const double rs8[] = {1, 2, 2, 2};
    sizes(2, 1, 2, rs8, 4);                        /* RS8 */
    const double rs9[] = {50, 50};
    sizes(50, 1, 1, rs9, 2);                       /* RS9: growth 1 is not dynamic */
    const double frac[] = {2, 3, 4.5, 6.75, 10, 10};
    sizes(10, 2, 1.5, frac, 6);                    /* fractional growth, compared as reals */
    const double nomin[] = {7, 7};
    sizes(7, 0, 3, nomin, 2);                      /* min < 1: not dynamic */
}

static void test_modes(void)
{
    struct {
        const char *input;
        enum pl_rp_profile profile;
        enum pl_rp_mode want;
        const char *error;
    } cases[] = {
        {"{\"openai_route\":\"/v1/models\",\"openai_input\":{}}", PL_RP_PROFILE_VLLM, PL_RP_MODE_OPENAI, NULL},
        {"{\"openai_input\":{\"messages\":[]}}", PL_RP_PROFILE_VLLM, PL_RP_MODE_OPENAI, NULL},
        {"{\"route\":\"/v1/models\"}", PL_RP_PROFILE_VLLM, PL_RP_MODE_OPENAI, NULL},
        {"{\"prompts\":[\"a\"],\"prompt\":\"x\"}", PL_RP_PROFILE_VLLM, PL_RP_MODE_SIMPLE_BATCH, NULL},
        {"{\"prompts\":[]}", PL_RP_PROFILE_VLLM, PL_RP_MODE_SIMPLE_BATCH, NULL},
        {"{\"messages\":[],\"prompt\":\"x\"}", PL_RP_PROFILE_SIMPLE_STREAM, PL_RP_MODE_VLLM_NATIVE, NULL},
        {"{\"prompt\":\"x\",\"engine_format\":\"simple\",\"stream\":true}", PL_RP_PROFILE_VLLM, PL_RP_MODE_SIMPLE_STREAM, NULL},
        {"{\"prompt\":\"x\",\"engine_format\":\"vllm\",\"max_tokens\":3}", PL_RP_PROFILE_VLLM, PL_RP_MODE_VLLM_NATIVE, NULL},
        {"{\"prompt\":\"x\",\"stream\":true,\"max_tokens\":3}", PL_RP_PROFILE_VLLM, PL_RP_MODE_VLLM_NATIVE, NULL},
        {"{\"prompt\":\"hi\",\"max_tokens\":5}", PL_RP_PROFILE_VLLM, PL_RP_MODE_SIMPLE_STREAM, NULL},
        {"{\"prompt\":\"hi\"}", PL_RP_PROFILE_VLLM, PL_RP_MODE_VLLM_NATIVE, NULL},
        {"{\"prompt\":\"hi\"}", PL_RP_PROFILE_SIMPLE_STREAM, PL_RP_MODE_SIMPLE_STREAM, NULL},
        {"{\"temperature\":0.5}", PL_RP_PROFILE_VLLM, PL_RP_MODE_NONE, "Missing 'prompts' in input"},
        {"{}", PL_RP_PROFILE_SIMPLE_STREAM, PL_RP_MODE_NONE, "Missing 'prompt' in input"},
        {"\"hello\"", PL_RP_PROFILE_VLLM, PL_RP_MODE_NONE, "Job input must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *in = json_loads(cases[i].input, JSON_DECODE_ANY, NULL);
        REQUIRE(in);
        const char *err;
        enum pl_rp_mode m = pl_rp_choose_mode(in, cases[i].profile, &err);
        CHECKF(m == cases[i].want, "case %zu (%s): mode %d want %d", i, cases[i].input, (int)m,
               (int)cases[i].want);
        if (cases[i].error)
            CHECKF(err && !strcmp(err, cases[i].error), "case %zu: error '%s'", i, err ? err : "");
        else
            CHECK(err == NULL);
        json_decref(in);
    }
    CHECK(!pl_rp_mode_is_generator(PL_RP_MODE_SIMPLE_BATCH));
    CHECK(pl_rp_mode_is_generator(PL_RP_MODE_SIMPLE_STREAM));
    CHECK(pl_rp_mode_is_generator(PL_RP_MODE_VLLM_NATIVE));
    CHECK(pl_rp_mode_is_generator(PL_RP_MODE_OPENAI));
}

/* Five chat.completion.chunk events and [DONE], fed in awkward pieces. */
static const char *const EVENTS[] = {
    "data: {\"object\":\"chat.completion.chunk\",\"i\":0}\n\n",
    "data: {\"object\":\"chat.completion.chunk\",\"i\":1}\n\n",
    "data: {\"object\":\"chat.completion.chunk\",\"i\":2}\n\n",
    "data: {\"object\":\"chat.completion.chunk\",\"i\":3}\n\n",
    "data: {\"object\":\"chat.completion.chunk\",\"i\":4}\n\n",
    "data: [DONE]\n\n",
};

static json_t *batch_events(bool raw, size_t piece)
{
    char all[2048] = "";
    for (size_t i = 0; i < 6; i++)
        strcat(all, EVENTS[i]);
    struct pl_rp_schedule s;
    pl_rp_schedule_init(&s, 50, 1, 3);
    struct pl_rp_sse_batcher b;
    pl_rp_sse_init(&b, &s, raw);
    json_t *out = json_array();
    size_t n = strlen(all);
    for (size_t off = 0; off < n; off += piece)
        CHECK(pl_rp_sse_feed(&b, all + off, off + piece <= n ? piece : n - off, out));
    CHECK(pl_rp_sse_finish(&b, out));
    pl_rp_sse_fini(&b);
    return out;
}

static void test_sse_batches(void)
{
    /* raw (RAW_OPENAI_OUTPUT=1): chunks of 1, 3, then the rest (2 events incl. [DONE]);
       their concatenation is the stream itself, ending in data: [DONE] */
    for (size_t piece = 1; piece <= 64; piece += 7) {
        json_t *raw = batch_events(true, piece);
        REQUIRE(json_array_size(raw) == 3);
        char want0[256], want1[512], want2[256];
        snprintf(want0, sizeof(want0), "%s", EVENTS[0]);
        snprintf(want1, sizeof(want1), "%s%s%s", EVENTS[1], EVENTS[2], EVENTS[3]);
        snprintf(want2, sizeof(want2), "%s%s", EVENTS[4], EVENTS[5]);
        CHECK(!strcmp(json_string_value(json_array_get(raw, 0)), want0));
        CHECK(!strcmp(json_string_value(json_array_get(raw, 1)), want1));
        CHECK(!strcmp(json_string_value(json_array_get(raw, 2)), want2));
        json_decref(raw);
    }
    /* parsed (RAW_OPENAI_OUTPUT=0): arrays of objects, sizes 1, 3, 1; no [DONE] */
    json_t *parsed = batch_events(false, 5);
    REQUIRE(json_array_size(parsed) == 3);
    CHECK(json_array_size(json_array_get(parsed, 0)) == 1);
    CHECK(json_array_size(json_array_get(parsed, 1)) == 3);
    CHECK(json_array_size(json_array_get(parsed, 2)) == 1);
    CHECK(json_integer_value(json_object_get(json_array_get(json_array_get(parsed, 2), 0), "i")) == 4);
    json_decref(parsed);
}

int main(void)
{
    PL_RUN(test_url_templates);
    PL_RUN(test_take_classify);
    PL_RUN(test_take_wait);
    PL_RUN(test_parse_jobs);
    PL_RUN(test_retry_policy);
    PL_RUN(test_webhook_urls);
    PL_RUN(test_schedule);
    PL_RUN(test_modes);
    PL_RUN(test_sse_batches);
    return pl_test_summary();
}
