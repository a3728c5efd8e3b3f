/*
 * test_sampling_params.c -- struct pl_sampling_params against vLLM.
 *
 * References: vllm/sampling_params.py (class SamplingParams: field defaults;
 * __post_init__, _verify_args, _verify_greedy_sampling, _validate_logprobs,
 * _validate_stop_token_ids, _validate_logit_bias, _validate_allowed_token_ids
 * and their messages; from_optional's logit_bias clamp to [-100, 100]) and
 * vllm/config/model.py (get_diff_sampling_param: the generation_config.json
 * keys vLLM applies, taken from transformers' GenerationConfig.to_diff_dict).
 */
#include "engine/sampling_params.h"
#include "model/config.h"
#include "pagellm.h"
#include "test.h"
#include "util/err.h"

#include <jansson.h>

static void test_defaults_match_vllm(void)
{
    struct pl_sampling_params p;
    memset(&p, 0x5a, sizeof(p));
    pl_sampling_params_default(&p);
    /* SamplingParams: n=1, presence_penalty=0.0, frequency_penalty=0.0,
     * repetition_penalty=1.0, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
     * seed=None, stop=None, stop_token_ids=None, ignore_eos=False,
     * max_tokens=16, min_tokens=0, logprobs=None, prompt_logprobs=None,
     * skip_special_tokens=True, spaces_between_special_tokens=True,
     * include_stop_str_in_output=False, logit_bias=None, allowed_token_ids=None;
     * BeamSearchParams: length_penalty=1.0, early_stopping=False */
    CHECK(p.n == 1);
    CHECK(p.presence_penalty == 0.0f);
    CHECK(p.frequency_penalty == 0.0f);
    CHECK(p.repetition_penalty == 1.0f);
    CHECK(p.temperature == 1.0f);
    CHECK(p.top_p == 1.0f);
    CHECK(p.top_k == 0);
    CHECK(p.min_p == 0.0f);
    CHECK(!p.has_seed);
    CHECK(p.n_stop == 0 && p.stop == NULL);
    CHECK(p.n_stop_token_ids == 0 && p.stop_token_ids == NULL);
    CHECK(!p.ignore_eos);
    CHECK(p.max_tokens == 16);
    CHECK(p.min_tokens == 0);
    CHECK(p.logprobs == -1);
    CHECK(p.prompt_logprobs == -1);
    CHECK(p.skip_special_tokens);
    CHECK(p.spaces_between_special_tokens);
    CHECK(!p.include_stop_str_in_output);
    CHECK(p.n_logit_bias == 0 && p.logit_bias == NULL);
    CHECK(p.allowed_token_ids == NULL);
    CHECK(!p.use_beam_search);
    CHECK(p.length_penalty == 1.0f);
    CHECK(!p.early_stopping);
    CHECK(p.owned == NULL);

    struct pl_err e;
    pl_err_clear(&e);
    CHECK(pl_sampling_params_validate(&p, 1000, &e) == PL_STATUS_OK);
    pl_sampling_params_fini(&p); /* borrowed: a no-op */
    CHECK(p.n == 1);
}

/* One invalid value, the status and message words expected. */
struct bad_case {
    const char *what;
    void (*set)(struct pl_sampling_params *p);
    const char *msg1, *msg2; /* both must occur in the message */
};

static const char *const empty_stop[] = {"ok", ""};
static const int32_t ids_oob[] = {3, 1000};
static const int32_t ids_neg[] = {-1};
static const struct pl_logit_bias bias_oob[] = {{5, 1.0f}, {1000, 2.0f}};
static const struct pl_logit_bias bias_nan[] = {{5, NAN}};
static const int32_t one_id[] = {7};

static void set_n0(struct pl_sampling_params *p) { p->n = 0; }
static void set_n_big(struct pl_sampling_params *p) { p->n = PL_MAX_N_SEQUENCES + 1; }
static void set_pres(struct pl_sampling_params *p) { p->presence_penalty = 2.5f; }
static void set_pres_nan(struct pl_sampling_params *p) { p->presence_penalty = NAN; }
static void set_freq(struct pl_sampling_params *p) { p->frequency_penalty = -2.01f; }
static void set_rep0(struct pl_sampling_params *p) { p->repetition_penalty = 0.0f; }
static void set_rep_inf(struct pl_sampling_params *p) { p->repetition_penalty = INFINITY; }
static void set_temp_neg(struct pl_sampling_params *p) { p->temperature = -1.0f; }
static void set_temp_big(struct pl_sampling_params *p) { p->temperature = 2.5f; }
static void set_temp_nan(struct pl_sampling_params *p) { p->temperature = NAN; }
static void set_top_p0(struct pl_sampling_params *p) { p->top_p = 0.0f; }
static void set_top_p_big(struct pl_sampling_params *p) { p->top_p = 1.01f; }
static void set_top_k(struct pl_sampling_params *p) { p->top_k = -2; }
static void set_min_p(struct pl_sampling_params *p) { p->min_p = 1.5f; }
static void set_min_p_neg(struct pl_sampling_params *p) { p->min_p = -0.1f; }
static void set_max_tokens(struct pl_sampling_params *p) { p->max_tokens = 0; }
static void set_min_tokens_neg(struct pl_sampling_params *p) { p->min_tokens = -1; }
static void set_min_gt_max(struct pl_sampling_params *p) { p->min_tokens = 17; }
static void set_logprobs_big(struct pl_sampling_params *p) { p->logprobs = 21; }
static void set_logprobs_neg(struct pl_sampling_params *p) { p->logprobs = -2; }
static void set_plogprobs_big(struct pl_sampling_params *p) { p->prompt_logprobs = 21; }
static void set_stop_empty(struct pl_sampling_params *p)
{
    p->stop = empty_stop;
    p->n_stop = 2;
}
static void set_stop_ids(struct pl_sampling_params *p)
{
    p->stop_token_ids = ids_oob;
    p->n_stop_token_ids = 2;
}
static void set_stop_ids_neg(struct pl_sampling_params *p)
{
    p->stop_token_ids = ids_neg;
    p->n_stop_token_ids = 1;
}
static void set_bias_oob(struct pl_sampling_params *p)
{
    p->logit_bias = bias_oob;
    p->n_logit_bias = 2;
}
static void set_bias_nan(struct pl_sampling_params *p)
{
    p->logit_bias = bias_nan;
    p->n_logit_bias = 1;
}
static void set_allowed_empty(struct pl_sampling_params *p)
{
    p->allowed_token_ids = one_id;
    p->n_allowed_token_ids = 0;
}
static void set_allowed_oob(struct pl_sampling_params *p)
{
    p->allowed_token_ids = ids_oob;
    p->n_allowed_token_ids = 2;
}
static void set_greedy_n(struct pl_sampling_params *p)
{
    p->temperature = 0.0f;
    p->n = 2;
}
static void set_stop_null(struct pl_sampling_params *p)
{
    p->stop = NULL;
    p->n_stop = 1;
}

static void test_validation_rules(void)
{
    static const struct bad_case cases[] = {
        {"n=0", set_n0, "n must be at least 1", "got 0"},
        {"n too big", set_n_big, "n must be at most 16384", "16385"},
        {"presence", set_pres, "presence_penalty must be in [-2, 2]", "got 2.5"},
        {"presence nan", set_pres_nan, "presence_penalty must be in [-2, 2]", "nan"},
        {"frequency", set_freq, "frequency_penalty must be in [-2, 2]", "got -2.01"},
        {"repetition 0", set_rep0, "repetition_penalty must be greater than zero", "got 0"},
        {"repetition inf", set_rep_inf, "repetition_penalty must be a finite number", "inf"},
        {"temperature -1", set_temp_neg, "temperature must be non-negative", "got -1"},
        {"temperature 2.5", set_temp_big, "temperature must be in [0, 2]", "got 2.5"},
        {"temperature nan", set_temp_nan, "temperature must be a finite number", "nan"},
        {"top_p 0", set_top_p0, "top_p must be in (0, 1]", "got 0"},
        {"top_p 1.01", set_top_p_big, "top_p must be in (0, 1]", "got 1.01"},
        {"top_k -2", set_top_k, "top_k must be 0 (disable), or at least 1", "got -2"},
        {"min_p 1.5", set_min_p, "min_p must be in [0, 1]", "got 1.5"},
        {"min_p -0.1", set_min_p_neg, "min_p must be in [0, 1]", "got -0.1"},
        {"max_tokens 0", set_max_tokens, "max_tokens must be at least 1", "got 0"},
        {"min_tokens -1", set_min_tokens_neg, "min_tokens must be greater than or equal to 0",
         "got -1"},
        {"min > max", set_min_gt_max, "min_tokens must be less than or equal to max_tokens=16",
         "got 17"},
        {"logprobs 21", set_logprobs_big, "logprobs", "greater than max allowed: 20"},
        {"logprobs -2", set_logprobs_neg, "logprobs must be non-negative", "-2"},
        {"prompt_logprobs 21", set_plogprobs_big, "prompt_logprobs",
         "greater than max allowed: 20"},
        {"stop empty", set_stop_empty, "stop cannot contain an empty string", ""},
        {"stop NULL", set_stop_null, "stop", "NULL"},
        {"stop_token_ids oob", set_stop_ids, "[1000] in stop_token_ids", "Vocabulary size: 1000"},
        {"stop_token_ids neg", set_stop_ids_neg, "[-1] in stop_token_ids", "out-of-vocab"},
        {"logit_bias oob", set_bias_oob, "[1000] in logit_bias", "out-of-vocab"},
        {"logit_bias nan", set_bias_nan, "logit_bias", "finite"},
        {"allowed empty", set_allowed_empty, "allowed_token_ids is not None and empty", ""},
        {"allowed oob", set_allowed_oob, "allowed_token_ids contains out-of-vocab token id",
         "1000"},
        {"greedy n=2", set_greedy_n, "n must be 1 when using greedy sampling", "got 2"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_sampling_params p;
        pl_sampling_params_default(&p);
        cases[i].set(&p);
        struct pl_err e;
        pl_err_clear(&e);
        pl_status st = pl_sampling_params_validate(&p, 1000, &e);
        CHECKF(st == PL_STATUS_INVALID_ARGUMENT, "%s: status %d", cases[i].what, st);
        CHECKF(strstr(e.msg, cases[i].msg1) && strstr(e.msg, cases[i].msg2), "%s: message '%s'",
               cases[i].what, e.msg);
    }
}

static void test_valid_edges_and_normalization(void)
{
    struct pl_err e;
    struct pl_sampling_params p;
    /* the closed ends of every range are accepted */
    pl_sampling_params_default(&p);
    p.presence_penalty = -2.0f;
    p.frequency_penalty = 2.0f;
    p.temperature = 2.0f;
    p.top_p = 1.0f;
    p.top_k = -1; /* vLLM quietly accepts -1 as off */
    p.min_p = 1.0f;
    p.logprobs = PL_MAX_LOGPROBS;
    p.prompt_logprobs = 0;
    p.max_tokens = -1; /* None */
    p.min_tokens = 1000;
    CHECKF(pl_sampling_params_validate(&p, 50, &e) == PL_STATUS_OK, "%s", e.msg);
    CHECK(p.top_k == -1 && p.min_p == 1.0f && p.temperature == 2.0f);

    /* __post_init__: 0 < temperature < 0.01 is raised to 0.01 */
    pl_sampling_params_default(&p);
    p.temperature = 0.001f;
    CHECK(pl_sampling_params_validate(&p, 50, &e) == PL_STATUS_OK);
    CHECK(p.temperature == 0.01f);

    /* greedy: top_p, top_k, min_p reset to neutral */
    pl_sampling_params_default(&p);
    p.temperature = 0.0f;
    p.top_p = 0.5f;
    p.top_k = 3;
    p.min_p = 0.2f;
    CHECK(pl_sampling_params_validate(&p, 50, &e) == PL_STATUS_OK);
    CHECK(p.top_p == 1.0f && p.top_k == 0 && p.min_p == 0.0f && p.temperature == 0.0f);

    /* beam search is greedy with n beams: allowed */
    pl_sampling_params_default(&p);
    p.temperature = 0.0f;
    p.n = 4;
    p.use_beam_search = true;
    CHECK(pl_sampling_params_validate(&p, 50, &e) == PL_STATUS_OK);

    /* vocab_size <= 0 skips the token range checks */
    pl_sampling_params_default(&p);
    p.stop_token_ids = ids_oob;
    p.n_stop_token_ids = 2;
    CHECK(pl_sampling_params_validate(&p, 0, &e) == PL_STATUS_OK);
    CHECK(pl_sampling_params_validate(&p, 1001, &e) == PL_STATUS_OK);
}

static void test_generation_config(void)
{
    struct pl_generation_config g;
    memset(&g, 0, sizeof(g));
    struct pl_sampling_params p;

    /* nothing set: vLLM's defaults stay */
    pl_sampling_params_default(&p);
    pl_sampling_params_apply_generation_config(&p, &g);
    CHECK(p.temperature == 1.0f && p.top_p == 1.0f && p.top_k == 0 && p.max_tokens == 16);
    pl_sampling_params_apply_generation_config(&p, NULL);
    CHECK(p.temperature == 1.0f);

    /* Qwen-style generation_config.json */
    g.has_temperature = true;
    g.temperature = 0.7f;
    g.has_top_p = true;
    g.top_p = 0.8f;
    g.has_top_k = true;
    g.top_k = 20;
    g.has_repetition_penalty = true;
    g.repetition_penalty = 1.05f;
    g.has_min_p = true;
    g.min_p = 0.05f;
    g.has_max_new_tokens = true;
    g.max_new_tokens = 2048;
    g.has_do_sample = true;
    g.do_sample = false; /* vLLM does not read do_sample */
    pl_sampling_params_default(&p);
    pl_sampling_params_apply_generation_config(&p, &g);
    CHECK(p.temperature == 0.7f);
    CHECK(p.top_p == 0.8f);
    CHECK(p.top_k == 20);
    CHECK(p.repetition_penalty == 1.05f);
    CHECK(p.min_p == 0.05f);
    CHECK(p.max_tokens == 2048);
    /* untouched fields */
    CHECK(p.presence_penalty == 0.0f && p.n == 1 && p.min_tokens == 0);

    /* to_diff_dict drops values equal to transformers' defaults: top_k 50 stays off */
    memset(&g, 0, sizeof(g));
    g.has_top_k = true;
    g.top_k = 50;
    g.has_temperature = true;
    g.temperature = 1.0f;
    pl_sampling_params_default(&p);
    p.temperature = 0.3f; /* e.g. an earlier setting: 1.0 in the file does not reset it */
    pl_sampling_params_apply_generation_config(&p, &g);
    CHECK(p.top_k == 0);
    CHECK(p.temperature == 0.3f);

    /* the request's own values win: they are read after the generation config */
    memset(&g, 0, sizeof(g));
    g.has_temperature = true;
    g.temperature = 0.6f;
    pl_sampling_params_default(&p);
    pl_sampling_params_apply_generation_config(&p, &g);
    json_t *body = json_loads("{\"top_p\": 0.5}", 0, NULL);
    struct pl_err e;
    CHECK(pl_sampling_params_from_json(body, NULL, &p, &e) == PL_STATUS_OK);
    CHECK(p.temperature == 0.6f && p.top_p == 0.5f);
    json_decref(body);
    body = json_loads("{\"temperature\": 0.2}", 0, NULL);
    CHECK(pl_sampling_params_from_json(body, NULL, &p, &e) == PL_STATUS_OK);
    CHECK(p.temperature == 0.2f && p.top_p == 0.5f);
    json_decref(body);
    pl_sampling_params_fini(&p);
}

static void test_copy_and_fini(void)
{
    char s0[] = "###", s1[] = "\xe2\x9c\x93 done";
    const char *stops[] = {s0, s1};
    int32_t stop_ids[] = {2, 9};
    struct pl_logit_bias bias[] = {{4, -3.5f}};
    int32_t allowed[] = {1, 2, 3};
    struct pl_sampling_params src;
    pl_sampling_params_default(&src);
    src.stop = stops;
    src.n_stop = 2;
    src.stop_token_ids = stop_ids;
    src.n_stop_token_ids = 2;
    src.logit_bias = bias;
    src.n_logit_bias = 1;
    src.allowed_token_ids = allowed;
    src.n_allowed_token_ids = 3;
    src.temperature = 0.4f;
    src.has_seed = true;
    src.seed = 0xdeadbeefcafeULL;

    struct pl_sampling_params dst;
    struct pl_err e;
    REQUIRE(pl_sampling_params_copy(&dst, &src, &e) == PL_STATUS_OK);
    REQUIRE(dst.owned != NULL);
    /* change the source buffers: the copy must not see it */
    s0[0] = 'X';
    s1[0] = 'Y';
    stop_ids[0] = 77;
    bias[0].bias = 9.0f;
    allowed[2] = 55;
    CHECK(dst.n_stop == 2 && !strcmp(dst.stop[0], "###") &&
          !strcmp(dst.stop[1], "\xe2\x9c\x93 done"));
    CHECK(dst.n_stop_token_ids == 2 && dst.stop_token_ids[0] == 2 && dst.stop_token_ids[1] == 9);
    CHECK(dst.n_logit_bias == 1 && dst.logit_bias[0].token_id == 4 &&
          dst.logit_bias[0].bias == -3.5f);
    CHECK(dst.n_allowed_token_ids == 3 && dst.allowed_token_ids[2] == 3);
    CHECK(dst.temperature == 0.4f && dst.has_seed && dst.seed == 0xdeadbeefcafeULL);

    /* a copy of a copy, then free both (ASan checks the frees) */
    struct pl_sampling_params again;
    REQUIRE(pl_sampling_params_copy(&again, &dst, &e) == PL_STATUS_OK);
    CHECK(again.owned != dst.owned && !strcmp(again.stop[0], "###"));
    pl_sampling_params_fini(&dst);
    CHECK(dst.owned == NULL && dst.n_stop == 0 && dst.stop == NULL);
    pl_sampling_params_fini(&dst); /* twice is harmless */
    CHECK(again.stop_token_ids[1] == 9);
    pl_sampling_params_fini(&again);

    /* an empty allowed_token_ids list stays non-NULL so validation still refuses it */
    pl_sampling_params_default(&src);
    src.allowed_token_ids = allowed;
    src.n_allowed_token_ids = 0;
    REQUIRE(pl_sampling_params_copy(&dst, &src, &e) == PL_STATUS_OK);
    CHECK(dst.allowed_token_ids != NULL && dst.n_allowed_token_ids == 0);
    CHECK(pl_sampling_params_validate(&dst, 10, &e) == PL_STATUS_INVALID_ARGUMENT);
    pl_sampling_params_fini(&dst);

    /* a bad source is refused */
    pl_sampling_params_default(&src);
    src.n_stop = 1;
    CHECK(pl_sampling_params_copy(&dst, &src, &e) == PL_STATUS_INVALID_ARGUMENT);
}

/* Parses body into fresh defaults; returns the status; *p owns its arrays on success. */
static pl_status parse(const char *body, struct pl_sampling_params *p, struct pl_err *e)
{
    pl_sampling_params_default(p);
    json_error_t je;
    json_t *j = json_loads(body, JSON_ALLOW_NUL, &je);
    if (!j) {
        fprintf(stderr, "bad test JSON: %s: %s\n", body, je.text);
        return PL_STATUS_INTERNAL;
    }
    pl_err_clear(e);
    pl_status st = pl_sampling_params_from_json(j, NULL, p, e);
    json_decref(j);
    return st;
}

static void test_json_full_request(void)
{
    struct pl_sampling_params p;
    struct pl_err e;
    const char *body = "{\"n\": 3, \"presence_penalty\": 0.5, \"frequency_penalty\": -0.25,"
                       " \"repetition_penalty\": 1.1, \"temperature\": 0.7, \"top_p\": 0.95,"
                       " \"top_k\": 40, \"min_p\": 0.05, \"seed\": 1234,"
                       " \"stop\": [\"\\n\\n\", \"END\"], \"stop_token_ids\": [5, 7, 5],"
                       " \"include_stop_str_in_output\": true, \"ignore_eos\": true,"
                       " \"max_tokens\": 100, \"min_tokens\": 2, \"logprobs\": 5,"
                       " \"prompt_logprobs\": 1, \"skip_special_tokens\": false,"
                       " \"spaces_between_special_tokens\": false,"
                       " \"logit_bias\": {\"10\": 5, \"11\": -250.5, \"12\": 1e9},"
                       " \"allowed_token_ids\": [10, 11, 12, 13], \"use_beam_search\": false,"
                       " \"length_penalty\": 0.8, \"early_stopping\": true}";
    REQUIRE(parse(body, &p, &e) == PL_STATUS_OK);
    CHECK(p.owned != NULL);
    CHECK(p.n == 3);
    CHECK(p.presence_penalty == 0.5f && p.frequency_penalty == -0.25f);
    CHECK(p.repetition_penalty == 1.1f && p.temperature == 0.7f && p.top_p == 0.95f);
    CHECK(p.top_k == 40 && p.min_p == 0.05f);
    CHECK(p.has_seed && p.seed == 1234);
    REQUIRE(p.n_stop == 2);
    CHECK(!strcmp(p.stop[0], "\n\n") && !strcmp(p.stop[1], "END"));
    /* vLLM dedups stop_token_ids (dict.fromkeys keeps first occurrences) */
    CHECK(p.n_stop_token_ids == 2 && p.stop_token_ids[0] == 5 && p.stop_token_ids[1] == 7);
    CHECK(p.include_stop_str_in_output && p.ignore_eos);
    CHECK(p.max_tokens == 100 && p.min_tokens == 2);
    CHECK(p.logprobs == 5 && p.prompt_logprobs == 1);
    CHECK(!p.skip_special_tokens && !p.spaces_between_special_tokens);
    REQUIRE(p.n_logit_bias == 3);
    /* from_optional clamps biases to [-100, 100] */
    for (int i = 0; i < 3; i++) {
        int32_t id = p.logit_bias[i].token_id;
        float b = p.logit_bias[i].bias;
        CHECK((id == 10 && b == 5.0f) || (id == 11 && b == -100.0f) ||
              (id == 12 && b == 100.0f));
    }
    CHECK(p.n_allowed_token_ids == 4 && p.allowed_token_ids[3] == 13);
    CHECK(p.length_penalty == 0.8f && p.early_stopping);
    CHECKF(pl_sampling_params_validate(&p, 100, &e) == PL_STATUS_OK, "%s", e.msg);
    /* a second request read into the same struct replaces the owned arrays */
    json_t *j = json_loads("{\"stop\": \"x\"}", 0, NULL);
    CHECK(pl_sampling_params_from_json(j, NULL, &p, &e) == PL_STATUS_OK);
    json_decref(j);
    CHECK(p.n_stop == 1 && !strcmp(p.stop[0], "x") && p.n_stop_token_ids == 2);
    pl_sampling_params_fini(&p);
}

static void test_json_types_and_unknown_fields(void)
{
    static const struct {
        const char *body;
        pl_status st;
        const char *msg1, *msg2;
    } cases[] = {
        {"{\"temperature\": \"hot\"}", PL_STATUS_INVALID_ARGUMENT, "temperature must be a number",
         "string"},
        {"{\"top_p\": true}", PL_STATUS_INVALID_ARGUMENT, "top_p must be a number", "boolean"},
        {"{\"top_k\": 1.5}", PL_STATUS_INVALID_ARGUMENT, "top_k must be an integer", "1.5"},
        {"{\"n\": [1]}", PL_STATUS_INVALID_ARGUMENT, "n must be an integer", "array"},
        {"{\"n\": 3000000000}", PL_STATUS_INVALID_ARGUMENT, "n is out of range", ""},
        {"{\"ignore_eos\": 1}", PL_STATUS_INVALID_ARGUMENT, "ignore_eos must be a boolean",
         "integer"},
        {"{\"seed\": \"42\"}", PL_STATUS_INVALID_ARGUMENT, "seed must be an integer", "string"},
        {"{\"stop\": 5}", PL_STATUS_INVALID_ARGUMENT, "stop must be a string or an array",
         "integer"},
        {"{\"stop\": [\"a\", 3]}", PL_STATUS_INVALID_ARGUMENT, "stop[1] must be a string",
         "integer"},
        {"{\"stop\": \"a\\u0000b\"}", PL_STATUS_INVALID_ARGUMENT, "stop", "NUL"},
        {"{\"stop_token_ids\": [1, \"2\"]}", PL_STATUS_INVALID_ARGUMENT,
         "stop_token_ids[1] must be an integer", "string"},
        {"{\"stop_token_ids\": 4}", PL_STATUS_INVALID_ARGUMENT, "stop_token_ids must be an array",
         ""},
        {"{\"allowed_token_ids\": [1e20]}", PL_STATUS_INVALID_ARGUMENT, "allowed_token_ids[0]",
         ""},
        {"{\"logit_bias\": [1, 2]}", PL_STATUS_INVALID_ARGUMENT, "logit_bias must be an object",
         "array"},
        {"{\"logit_bias\": {\"abc\": 1}}", PL_STATUS_INVALID_ARGUMENT,
         "logit_bias contains key(s) that cannot be converted to integer token IDs", "abc"},
        {"{\"logit_bias\": {\"5\": \"high\"}}", PL_STATUS_INVALID_ARGUMENT, "logit_bias[\"5\"]",
         "number"},
        {"{\"max_tokens\": 0}", PL_STATUS_INVALID_ARGUMENT, "max_tokens must be at least 1",
         "got 0"},
        {"{\"max_completion_tokens\": -3}", PL_STATUS_INVALID_ARGUMENT,
         "max_completion_tokens must be at least 1", "-3"},
        {"{\"logprobs\": -1}", PL_STATUS_INVALID_ARGUMENT, "logprobs", "max allowed: 20"},
        {"{\"logprobs\": -5}", PL_STATUS_INVALID_ARGUMENT, "logprobs must be non-negative", "-5"},
        {"{\"top_logprobs\": 3}", PL_STATUS_INVALID_ARGUMENT, "top_logprobs",
         "logprobs must be set to true"},
        {"{\"top_logprobs\": 30, \"logprobs\": true}", PL_STATUS_INVALID_ARGUMENT,
         "top_logprobs must be in [0, 20]", "30"},
        {"{\"temprature\": 0.5}", PL_STATUS_INVALID_ARGUMENT, "unknown field", "temprature"},
        {"{\"model\": \"m\"}", PL_STATUS_INVALID_ARGUMENT, "unknown field", "model"},
        {"{\"bad_words\": [\"x\"]}", PL_STATUS_UNSUPPORTED, "bad_words", "not supported"},
        {"{\"best_of\": 2}", PL_STATUS_UNSUPPORTED, "best_of", "not supported"},
        {"[1, 2]", PL_STATUS_INVALID_ARGUMENT, "must be a JSON object", "array"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pl_sampling_params p;
        struct pl_err e;
        pl_status st = parse(cases[i].body, &p, &e);
        CHECKF(st == cases[i].st, "%s: status %d (%s)", cases[i].body, st, e.msg);
        CHECKF(strstr(e.msg, cases[i].msg1) && strstr(e.msg, cases[i].msg2), "%s: message '%s'",
               cases[i].body, e.msg);
        /* on error p is unchanged: still the borrowed defaults */
        CHECK(p.owned == NULL && p.temperature == 1.0f && p.n == 1);
        pl_sampling_params_fini(&p);
    }
}

static void test_json_openai_shapes(void)
{
    struct pl_sampling_params p;
    struct pl_err e;

    /* null means "not given" */
    REQUIRE(parse("{\"temperature\": null, \"stop\": null, \"seed\": null, \"max_tokens\": null}",
                  &p, &e) == PL_STATUS_OK);
    CHECK(p.temperature == 1.0f && p.n_stop == 0 && !p.has_seed && p.max_tokens == 16);
    pl_sampling_params_fini(&p);

    /* stop as one string; integer temperature; integral real for an int field */
    REQUIRE(parse("{\"stop\": \"User:\", \"temperature\": 1, \"top_k\": 5.0}", &p, &e) ==
            PL_STATUS_OK);
    CHECK(p.n_stop == 1 && !strcmp(p.stop[0], "User:") && p.temperature == 1.0f && p.top_k == 5);
    pl_sampling_params_fini(&p);

    /* seed -1 means None (SamplingParams.__post_init__); other values are kept */
    REQUIRE(parse("{\"seed\": -1}", &p, &e) == PL_STATUS_OK);
    CHECK(!p.has_seed);
    pl_sampling_params_fini(&p);
    REQUIRE(parse("{\"seed\": 0}", &p, &e) == PL_STATUS_OK);
    CHECK(p.has_seed && p.seed == 0);
    pl_sampling_params_fini(&p);

    /* chat: max_completion_tokens wins over max_tokens */
    REQUIRE(parse("{\"max_tokens\": 10, \"max_completion_tokens\": 20}", &p, &e) == PL_STATUS_OK);
    CHECK(p.max_tokens == 20);
    pl_sampling_params_fini(&p);
    REQUIRE(parse("{\"max_tokens\": 10}", &p, &e) == PL_STATUS_OK);
    CHECK(p.max_tokens == 10);
    pl_sampling_params_fini(&p);

    /* chat logprobs: boolean plus top_logprobs */
    REQUIRE(parse("{\"logprobs\": true, \"top_logprobs\": 4}", &p, &e) == PL_STATUS_OK);
    CHECK(p.logprobs == 4);
    pl_sampling_params_fini(&p);
    REQUIRE(parse("{\"logprobs\": true}", &p, &e) == PL_STATUS_OK);
    CHECK(p.logprobs == 0);
    pl_sampling_params_fini(&p);
    REQUIRE(parse("{\"logprobs\": false, \"top_logprobs\": 0}", &p, &e) == PL_STATUS_OK);
    CHECK(p.logprobs == -1);
    pl_sampling_params_fini(&p);
    /* completions logprobs: an integer */
    REQUIRE(parse("{\"logprobs\": 3, \"prompt_logprobs\": true}", &p, &e) == PL_STATUS_OK);
    CHECK(p.logprobs == 3 && p.prompt_logprobs == 1);
    pl_sampling_params_fini(&p);

    /* "7" and "07" are the same token id: the later one wins, like a Python dict */
    REQUIRE(parse("{\"logit_bias\": {\"7\": 1, \" 07\": 2}}", &p, &e) == PL_STATUS_OK);
    CHECK(p.n_logit_bias == 1 && p.logit_bias[0].token_id == 7 && p.logit_bias[0].bias == 2.0f);
    pl_sampling_params_fini(&p);

    /* [] parses, and validation refuses it as vLLM does */
    REQUIRE(parse("{\"allowed_token_ids\": []}", &p, &e) == PL_STATUS_OK);
    CHECK(p.allowed_token_ids != NULL && p.n_allowed_token_ids == 0);
    CHECK(pl_sampling_params_validate(&p, 10, &e) == PL_STATUS_INVALID_ARGUMENT);
    pl_sampling_params_fini(&p);

    /* beam search fields */
    REQUIRE(parse("{\"use_beam_search\": true, \"n\": 4, \"beam_width\": 4, \"best_of\": 1}", &p,
                  &e) == PL_STATUS_OK);
    CHECK(p.use_beam_search && p.n == 4 && p.beam_width == 4);
    pl_sampling_params_fini(&p);

    /* the caller's own keys are skipped when listed */
    static const char *const extra[] = {"model", "prompt", "stream", NULL};
    json_t *j = json_loads("{\"model\": \"m\", \"prompt\": [1, 2], \"stream\": true,"
                           " \"temperature\": 0}",
                           0, NULL);
    pl_sampling_params_default(&p);
    CHECK(pl_sampling_params_from_json(j, extra, &p, &e) == PL_STATUS_OK);
    CHECK(p.temperature == 0.0f);
    json_decref(j);
    pl_sampling_params_fini(&p);
}

int main(void)
{
    PL_RUN(test_defaults_match_vllm);
    PL_RUN(test_validation_rules);
    PL_RUN(test_valid_edges_and_normalization);
    PL_RUN(test_generation_config);
    PL_RUN(test_copy_and_fini);
    PL_RUN(test_json_full_request);
    PL_RUN(test_json_types_and_unknown_fields);
    PL_RUN(test_json_openai_shapes);
    return pl_test_summary();
}
