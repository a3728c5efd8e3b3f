/*
 * test_generation_override.c -- vLLM's --override-generation-config: the JSON text
 * parsed into generation-config fields (model/config.c) and applied over sampling
 * defaults (engine/sampling_params.c), unlike the file's defaults even where a value
 * equals transformers' own default.
 */
#include "engine/sampling_params.h"
#include "model/config.h"
#include "pagellm.h"
#include "test.h"
#include "util/err.h"

static void test_parse_and_apply(void)
{
    struct pl_generation_config g;
    struct pl_err err;
    REQUIRE(pl_generation_config_parse_override(
                "{\"temperature\": 1.0, \"top_p\": 0.5, \"top_k\": -1, \"min_p\": 0.1, "
                "\"repetition_penalty\": 1.2, \"max_new_tokens\": 7}",
                "x", &g, &err) == PL_STATUS_OK);
    CHECK(g.has_temperature && g.has_top_p && g.has_top_k && g.has_min_p &&
          g.has_repetition_penalty && g.has_max_new_tokens);
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.temperature = 0.3f; /* e.g. from generation_config.json */
    p.top_k = 20;
    pl_sampling_params_apply_generation_override(&p, &g);
    /* 1.0 and -1 count although they are transformers' / vLLM's "off" values */
    CHECK(p.temperature == 1.0f && p.top_k == -1);
    CHECK(p.top_p == 0.5f && p.min_p == 0.1f && p.repetition_penalty == 1.2f);
    CHECK(p.max_tokens == 7);
    /* the file's rule, by contrast, drops a temperature of 1.0 */
    struct pl_sampling_params q;
    pl_sampling_params_default(&q);
    q.temperature = 0.3f;
    pl_sampling_params_apply_generation_config(&q, &g);
    CHECK(q.temperature == 0.3f);
    /* nothing set, NULL text: no change */
    REQUIRE(pl_generation_config_parse_override(NULL, "x", &g, &err) == PL_STATUS_OK);
    pl_sampling_params_default(&q);
    pl_sampling_params_apply_generation_override(&q, &g);
    CHECK(q.temperature == 1.0f && q.max_tokens == 16);
    /* null means not set */
    REQUIRE(pl_generation_config_parse_override("{\"temperature\": null}", "x", &g, &err) ==
            PL_STATUS_OK);
    CHECK(!g.has_temperature);
}

static void test_refusals_name_the_key(void)
{
    struct pl_generation_config g;
    struct pl_err err;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"temprature\": 0.5}", "--o: unknown key 'temprature'"},
        {"{\"temperature\": \"hot\"}", "--o: temperature is not a number"},
        {"{\"top_p\": 0}", "--o: top_p = 0 is not in (0, 1]"},
        {"{\"top_k\": -2}", "--o: top_k = -2 is negative"},
        {"{\"max_new_tokens\": 0}", "--o: max_new_tokens = 0 is not positive"},
        {"{\"repetition_penalty\": 0}", "--o: repetition_penalty = 0 must be positive"},
        /* positive as a double, 0 as the float it is stored in (the fuzzer's find) */
        {"{\"repetition_penalty\": 2e-99}", "--o: repetition_penalty = 2e-99 must be positive"},
        {"{\"top_p\": 1e-60}", "--o: top_p = 1e-60 is not in (0, 1]"},
        {"[1, 2]", "--o: not a JSON object"},
        {"{", "--o: not valid JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        pl_status st = pl_generation_config_parse_override(cases[i].json, "--o", &g, &err);
        CHECKF(st == PL_STATUS_INVALID_ARGUMENT && err.status == PL_STATUS_INVALID_ARGUMENT,
               "%s: status %d", cases[i].json, (int)st);
        CHECKF(strstr(err.msg, cases[i].want) == err.msg, "%s: '%s'", cases[i].json, err.msg);
    }
}

int main(void)
{
    PL_RUN(test_parse_and_apply);
    PL_RUN(test_refusals_name_the_key);
    return pl_test_summary();
}
