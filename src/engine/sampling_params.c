/*
 * sampling_params.c -- struct pl_sampling_params: vLLM's defaults, its
 * validation rules and messages, generation_config.json defaults, deep copies,
 * and reading the sampling fields of an OpenAI / vLLM request body.
 *
 * Owns: nothing global. A params struct either borrows its arrays (owned ==
 * NULL) or owns exactly one allocation holding all of them (owned != NULL),
 * laid out as: stop pointer array | logit_bias | stop_token_ids |
 * allowed_token_ids | the stop strings' bytes. fini frees that one block.
 *
 * Reference: vllm/sampling_params.py (SamplingParams defaults, __post_init__,
 * _verify_args, _verify_greedy_sampling, verify/_validate_*), vLLM's
 * ModelConfig.get_diff_sampling_param for generation_config.json, and the
 * OpenAI request models in vllm/entrypoints/openai for the JSON names.
 */
#include "engine/sampling_params.h"
#include "model/config.h"
#include "pagellm.h"
#include "util/err.h"
#include "util/json.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* vLLM's _SAMPLING_EPS and _MAX_TEMP */
#define SAMPLING_EPS 1e-5f
#define MIN_RANDOM_TEMP 1e-2f
/* vLLM clamps logit_bias values to this magnitude when reading requests */
#define LOGIT_BIAS_MAX 100.0

void pl_sampling_params_default(struct pl_sampling_params *p)
{
    memset(p, 0, sizeof(*p));
    p->n = 1;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->repetition_penalty = 1.0f;
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->has_seed = false;
    p->include_stop_str_in_output = false;
    p->ignore_eos = false;
    p->max_tokens = 16;
    p->min_tokens = 0;
    p->logprobs = -1;
    p->prompt_logprobs = -1;
    p->skip_special_tokens = true;
    p->spaces_between_special_tokens = true;
    p->allowed_token_ids = NULL;
    p->use_beam_search = false;
    p->beam_width = 0;
    p->length_penalty = 1.0f;
    p->early_stopping = false;
    p->owned = NULL;
}

/* ---- validation ----------------------------------------------------------- */

static pl_status bad(struct pl_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static pl_status bad(struct pl_err *err, const char *fmt, ...)
{
    char msg[PL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s", msg);
}

static pl_status check_array(const void *ptr, int n, const char *name, struct pl_err *err)
{
    if (n < 0)
        return bad(err, "%s: negative count %d", name, n);
    if (n > 0 && !ptr)
        return bad(err, "%s is NULL but its count is %d", name, n);
    return PL_STATUS_OK;
}

static pl_status check_ids(const int32_t *ids, int n, int vocab_size, const char *name,
                           struct pl_err *err)
{
    if (vocab_size <= 0)
        return PL_STATUS_OK;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab_size)
            return bad(err,
                       "token_id(s) [%d] in %s contain out-of-vocab token ids. "
                       "Vocabulary size: %d",
                       (int)ids[i], name, vocab_size);
    return PL_STATUS_OK;
}

static pl_status check_logprobs(int v, const char *name, const char *what, struct pl_err *err)
{
    if (v < -1)
        return bad(err, "%s must be non-negative (or -1 for none), got %d.", name, v);
    if (v > PL_MAX_LOGPROBS)
        return bad(err, "%s: requested %s logprobs of %d, which is greater than max allowed: %d",
                   name, what, v, PL_MAX_LOGPROBS);
    return PL_STATUS_OK;
}

pl_status pl_sampling_params_validate(struct pl_sampling_params *p, int vocab_size,
                                      struct pl_err *err)
{
    pl_status st;
    /* __post_init__: tiny positive temperatures overflow softmax; vLLM raises them */
    if (p->temperature > 0.0f && p->temperature < MIN_RANDOM_TEMP)
        p->temperature = MIN_RANDOM_TEMP;

    if (p->n < 1)
        return bad(err, "n must be at least 1, got %d.", p->n);
    if (p->n > PL_MAX_N_SEQUENCES)
        return bad(err, "n must be at most %d, got %d.", PL_MAX_N_SEQUENCES, p->n);
    /* written as !(in range) so that NaN fails too */
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return bad(err, "presence_penalty must be in [-2, 2], got %g.", p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return bad(err, "frequency_penalty must be in [-2, 2], got %g.", p->frequency_penalty);
    if (!isfinite(p->repetition_penalty))
        return bad(err, "repetition_penalty must be a finite number, got %g.",
                   p->repetition_penalty);
    if (p->repetition_penalty <= 0.0f)
        return bad(err, "repetition_penalty must be greater than zero, got %g.",
                   p->repetition_penalty);
    if (!isfinite(p->temperature))
        return bad(err, "temperature must be a finite number, got %g.", p->temperature);
    if (p->temperature < 0.0f)
        return bad(err, "temperature must be non-negative, got %g.", p->temperature);
    if (p->temperature > 2.0f)
        return bad(err, "temperature must be in [0, 2], got %g.", p->temperature);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return bad(err, "top_p must be in (0, 1], got %g.", p->top_p);
    if (p->top_k < -1)
        return bad(err, "top_k must be 0 (disable), or at least 1, got %d.", p->top_k);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return bad(err, "min_p must be in [0, 1], got %g.", p->min_p);
    if (p->max_tokens != -1 && p->max_tokens < 1)
        return bad(err, "max_tokens must be at least 1, got %d.", p->max_tokens);
    if (p->min_tokens < 0)
        return bad(err, "min_tokens must be greater than or equal to 0, got %d.", p->min_tokens);
    if (p->max_tokens != -1 && p->min_tokens > p->max_tokens)
        return bad(err, "min_tokens must be less than or equal to max_tokens=%d, got %d.",
                   p->max_tokens, p->min_tokens);
    if ((st = check_logprobs(p->logprobs, "logprobs", "sample", err)))
        return st;
    if ((st = check_logprobs(p->prompt_logprobs, "prompt_logprobs", "prompt", err)))
        return st;

    if ((st = check_array(p->stop, p->n_stop, "stop", err)))
        return st;
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop[i] || !p->stop[i][0])
            return bad(err, "stop cannot contain an empty string.");
    if ((st = check_array(p->stop_token_ids, p->n_stop_token_ids, "stop_token_ids", err)))
        return st;
    if ((st = check_ids(p->stop_token_ids, p->n_stop_token_ids, vocab_size, "stop_token_ids",
                        err)))
        return st;
    if ((st = check_array(p->logit_bias, p->n_logit_bias, "logit_bias", err)))
        return st;
    for (int i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias[i].token_id;
        if (vocab_size > 0 && (id < 0 || id >= vocab_size))
            return bad(err,
                       "token_id(s) [%d] in logit_bias contain out-of-vocab token ids. "
                       "Vocabulary size: %d",
                       (int)id, vocab_size);
        if (!isfinite(p->logit_bias[i].bias))
            return bad(err, "logit_bias for token %d must be a finite number, got %g.", (int)id,
                       p->logit_bias[i].bias);
    }
    if (p->allowed_token_ids) {
        if (p->n_allowed_token_ids < 0)
            return bad(err, "allowed_token_ids: negative count %d", p->n_allowed_token_ids);
        if (p->n_allowed_token_ids == 0)
            return bad(err, "allowed_token_ids is not None and empty!");
        for (int i = 0; vocab_size > 0 && i < p->n_allowed_token_ids; i++) {
            int32_t id = p->allowed_token_ids[i];
            if (id < 0 || id >= vocab_size)
                return bad(err,
                           "allowed_token_ids contains out-of-vocab token id! "
                           "(token id %d, vocabulary size %d)",
                           (int)id, vocab_size);
        }
    }
    if (p->use_beam_search) {
        if (p->beam_width < 0)
            return bad(err, "beam_width must be at least 1 (or 0 to use n), got %d.",
                       p->beam_width);
        if (!isfinite(p->length_penalty))
            return bad(err, "length_penalty must be a finite number, got %g.", p->length_penalty);
    }

    if (p->temperature < SAMPLING_EPS) {
        /* _verify_greedy_sampling; beam search is deterministic but wants n beams */
        if (p->n > 1 && !p->use_beam_search)
            return bad(err, "n must be 1 when using greedy sampling, got %d.", p->n);
        p->top_p = 1.0f;
        p->top_k = 0;
        p->min_p = 0.0f;
    }
    return PL_STATUS_OK;
}

/* ---- generation_config.json ------------------------------------------------ */

void pl_sampling_params_apply_generation_config(struct pl_sampling_params *p,
                                                const struct pl_generation_config *gen)
{
    if (!gen)
        return;
    /*
     * vLLM takes GenerationConfig.to_diff_dict(): a key the file sets to
     * transformers' own default (temperature 1.0, top_p 1.0, top_k 50,
     * repetition_penalty 1.0) is dropped, so e.g. top_k: 50 does not turn
     * top-k on. min_p and max_new_tokens default to None there, so any value
     * the file sets counts.
     */
    if (gen->has_temperature && gen->temperature != 1.0f)
        p->temperature = gen->temperature;
    if (gen->has_top_p && gen->top_p != 1.0f)
        p->top_p = gen->top_p;
    if (gen->has_top_k && gen->top_k != 50)
        p->top_k = gen->top_k;
    if (gen->has_min_p)
        p->min_p = gen->min_p;
    if (gen->has_repetition_penalty && gen->repetition_penalty != 1.0f)
        p->repetition_penalty = gen->repetition_penalty;
    if (gen->has_max_new_tokens)
        p->max_tokens = gen->max_new_tokens;
}

void pl_sampling_params_apply_generation_override(struct pl_sampling_params *p,
                                                  const struct pl_generation_config *gen)
{
    if (!gen)
        return;
    if (gen->has_temperature)
        p->temperature = gen->temperature;
    if (gen->has_top_p)
        p->top_p = gen->top_p;
    if (gen->has_top_k)
        p->top_k = gen->top_k;
    if (gen->has_min_p)
        p->min_p = gen->min_p;
    if (gen->has_repetition_penalty)
        p->repetition_penalty = gen->repetition_penalty;
    if (gen->has_max_new_tokens)
        p->max_tokens = gen->max_new_tokens;
}

/* ---- copies ------------------------------------------------------------- */

void pl_sampling_params_fini(struct pl_sampling_params *p)
{
    if (!p)
        return;
    if (p->owned) {
        free(p->owned);
        p->owned = NULL;
        p->stop = NULL;
        p->n_stop = 0;
        p->stop_token_ids = NULL;
        p->n_stop_token_ids = 0;
        p->logit_bias = NULL;
        p->n_logit_bias = 0;
        p->allowed_token_ids = NULL;
        p->n_allowed_token_ids = 0;
    }
}

pl_status pl_sampling_params_copy(struct pl_sampling_params *dst,
                                  const struct pl_sampling_params *src, struct pl_err *err)
{
    pl_status st;
    if ((st = check_array(src->stop, src->n_stop, "stop", err)) ||
        (st = check_array(src->stop_token_ids, src->n_stop_token_ids, "stop_token_ids", err)) ||
        (st = check_array(src->logit_bias, src->n_logit_bias, "logit_bias", err)) ||
        (st = check_array(src->allowed_token_ids, src->n_allowed_token_ids, "allowed_token_ids",
                          err)))
        return st;
    size_t n_str_bytes = 0;
    for (int i = 0; i < src->n_stop; i++) {
        if (!src->stop[i])
            return bad(err, "stop[%d] is NULL", i);
        n_str_bytes += strlen(src->stop[i]) + 1;
    }
    size_t off_ptrs = 0;
    size_t off_bias = off_ptrs + (size_t)src->n_stop * sizeof(char *);
    size_t off_stop_ids = off_bias + (size_t)src->n_logit_bias * sizeof(struct pl_logit_bias);
    size_t off_allowed = off_stop_ids + (size_t)src->n_stop_token_ids * sizeof(int32_t);
    size_t off_chars = off_allowed + (size_t)src->n_allowed_token_ids * sizeof(int32_t);
    size_t total = off_chars + n_str_bytes;
    /* one byte at least, so that an empty allowed_token_ids list stays non-NULL */
    char *block = malloc(total ? total : 1);
    if (!block)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "sampling params: out of memory (%zu bytes)",
                          total);

    *dst = *src;
    dst->owned = block;
    const char **ptrs = (const char **)(void *)(block + off_ptrs);
    char *chars = block + off_chars;
    for (int i = 0; i < src->n_stop; i++) {
        size_t len = strlen(src->stop[i]) + 1;
        memcpy(chars, src->stop[i], len);
        ptrs[i] = chars;
        chars += len;
    }
    dst->stop = src->n_stop ? ptrs : NULL;
    struct pl_logit_bias *bias = (struct pl_logit_bias *)(void *)(block + off_bias);
    if (src->n_logit_bias)
        memcpy(bias, src->logit_bias, (size_t)src->n_logit_bias * sizeof(*bias));
    dst->logit_bias = src->n_logit_bias ? bias : NULL;
    int32_t *stop_ids = (int32_t *)(void *)(block + off_stop_ids);
    if (src->n_stop_token_ids)
        memcpy(stop_ids, src->stop_token_ids, (size_t)src->n_stop_token_ids * sizeof(int32_t));
    dst->stop_token_ids = src->n_stop_token_ids ? stop_ids : NULL;
    int32_t *allowed = (int32_t *)(void *)(block + off_allowed);
    if (src->n_allowed_token_ids)
        memcpy(allowed, src->allowed_token_ids,
               (size_t)src->n_allowed_token_ids * sizeof(int32_t));
    dst->allowed_token_ids = src->allowed_token_ids ? allowed : NULL;
    return PL_STATUS_OK;
}

/* ---- JSON --------------------------------------------------------------- */

static pl_status get_number(const json_t *v, const char *key, float *out, struct pl_err *err)
{
    if (!json_is_number(v))
        return bad(err, "%s must be a number, got %s", key, pl_json_type_name(v));
    double d = json_number_value(v);
    /* keep out-of-float-range values out of range rather than undefined */
    if (d > 3.0e38)
        d = INFINITY;
    else if (d < -3.0e38)
        d = -INFINITY;
    *out = (float)d;
    return PL_STATUS_OK;
}

/* Integers; a real with an integral value is accepted (pydantic's lax mode). */
static pl_status get_int64(const json_t *v, const char *key, long long *out, struct pl_err *err)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return PL_STATUS_OK;
    }
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && d >= -9.2e18 && d <= 9.2e18) {
            *out = (long long)d;
            return PL_STATUS_OK;
        }
        return bad(err, "%s must be an integer, got %g", key, d);
    }
    return bad(err, "%s must be an integer, got %s", key, pl_json_type_name(v));
}

static pl_status get_int(const json_t *v, const char *key, int *out, struct pl_err *err)
{
    long long x = 0;
    pl_status st = get_int64(v, key, &x, err);
    if (st)
        return st;
    if (x < INT32_MIN || x > INT32_MAX)
        return bad(err, "%s is out of range, got %lld", key, x);
    *out = (int)x;
    return PL_STATUS_OK;
}

static pl_status get_bool(const json_t *v, const char *key, bool *out, struct pl_err *err)
{
    if (!json_is_boolean(v))
        return bad(err, "%s must be a boolean, got %s", key, pl_json_type_name(v));
    *out = json_is_true(v);
    return PL_STATUS_OK;
}

/* A list of token ids (int32 range; vocabulary bounds are validate's job). */
static pl_status get_ids(const json_t *v, const char *key, int32_t **out, int *n_out,
                         struct pl_err *err)
{
    if (!json_is_array(v))
        return bad(err, "%s must be an array of integers, got %s", key, pl_json_type_name(v));
    size_t n = json_array_size(v);
    if (n > INT_MAX / 2)
        return bad(err, "%s has too many entries (%zu)", key, n);
    int32_t *ids = malloc((n ? n : 1) * sizeof(int32_t));
    if (!ids)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", key);
    for (size_t i = 0; i < n; i++) {
        char name[96];
        snprintf(name, sizeof(name), "%s[%zu]", key, i);
        int x = 0;
        pl_status st = get_int(json_array_get(v, i), name, &x, err);
        if (st) {
            free(ids);
            return st;
        }
        ids[i] = x;
    }
    *out = ids;
    *n_out = (int)n;
    return PL_STATUS_OK;
}

/* Python's int(key) for logit_bias keys: optional blanks, sign, decimal digits. */
static bool parse_token_key(const char *s, int32_t *out)
{
    while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
        s++;
    if (!*s)
        return false;
    errno = 0;
    char *end;
    long long x = strtoll(s, &end, 10);
    if (end == s || errno)
        return false;
    while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
        end++;
    if (*end || x < INT32_MIN || x > INT32_MAX)
        return false;
    *out = (int32_t)x;
    return true;
}

/* vLLM fields pagellm does not implement: refused, not silently ignored. */
static const char *const unsupported_keys[] = {
    "bad_words",       "structured_outputs", "guided_json",       "guided_regex",
    "guided_choice",   "guided_grammar",     "guided_decoding_backend", "logits_processors",
    "logprob_token_ids", "prompt_logprob_token_ids", "thinking_token_budget", NULL};

struct json_scratch {
    const char **stop;
    int32_t *stop_ids;
    struct pl_logit_bias *bias;
    int32_t *allowed;
};

static void scratch_free(struct json_scratch *s)
{
    free(s->stop);
    free(s->stop_ids);
    free(s->bias);
    free(s->allowed);
}

static pl_status read_stop(const json_t *v, struct pl_sampling_params *t, struct json_scratch *s,
                           struct pl_err *err)
{
    if (json_is_string(v)) {
        s->stop = malloc(sizeof(char *));
        if (!s->stop)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "stop: out of memory");
        if (strlen(json_string_value(v)) != json_string_length(v))
            return bad(err, "stop must not contain a NUL character");
        s->stop[0] = json_string_value(v);
        t->stop = s->stop;
        t->n_stop = 1;
        return PL_STATUS_OK;
    }
    if (!json_is_array(v))
        return bad(err, "stop must be a string or an array of strings, got %s",
                   pl_json_type_name(v));
    size_t n = json_array_size(v);
    if (n > INT_MAX / 16)
        return bad(err, "stop has too many entries (%zu)", n);
    s->stop = malloc((n ? n : 1) * sizeof(char *));
    if (!s->stop)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "stop: out of memory");
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e))
            return bad(err, "stop[%zu] must be a string, got %s", i, pl_json_type_name(e));
        if (strlen(json_string_value(e)) != json_string_length(e))
            return bad(err, "stop[%zu] must not contain a NUL character", i);
        s->stop[i] = json_string_value(e);
    }
    t->stop = n ? s->stop : NULL;
    t->n_stop = (int)n;
    return PL_STATUS_OK;
}

static pl_status read_logit_bias(const json_t *v, struct pl_sampling_params *t,
                                 struct json_scratch *s, struct pl_err *err)
{
    if (!json_is_object(v))
        return bad(err, "logit_bias must be an object mapping token ids to numbers, got %s",
                   pl_json_type_name(v));
    size_t n = json_object_size(v);
    s->bias = malloc((n ? n : 1) * sizeof(*s->bias));
    if (!s->bias)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "logit_bias: out of memory");
    int count = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        int32_t id;
        if (!parse_token_key(key, &id))
            return bad(err,
                       "logit_bias contains key(s) that cannot be converted to integer "
                       "token IDs: '%.200s'",
                       key);
        if (!json_is_number(val))
            return bad(err, "logit_bias[\"%.200s\"] must be a number, got %s", key,
                       pl_json_type_name(val));
        double b = json_number_value(val);
        b = b > LOGIT_BIAS_MAX ? LOGIT_BIAS_MAX : b < -LOGIT_BIAS_MAX ? -LOGIT_BIAS_MAX : b;
        /* "7" and "07" are one token in vLLM's dict: the later entry wins */
        int j;
        for (j = 0; j < count && s->bias[j].token_id != id; j++)
            ;
        s->bias[j].token_id = id;
        s->bias[j].bias = (float)b;
        if (j == count)
            count++;
    }
    t->logit_bias = count ? s->bias : NULL;
    t->n_logit_bias = count;
    return PL_STATUS_OK;
}

/* -1 for logprobs means "every token" in vLLM; with max_logprobs 20 it is refused. */
static pl_status read_logprobs_int(const json_t *v, const char *key, int *out, struct pl_err *err)
{
    int x = 0;
    pl_status st;
    if (json_is_boolean(v)) {
        x = json_is_true(v) ? 1 : -1; /* SamplingParams: True -> 1 */
    } else if ((st = get_int(v, key, &x, err))) {
        return st;
    } else if (x == -1) {
        return bad(err, "%s: -1 requests every token's logprob, which is greater than max "
                   "allowed: %d", key, PL_MAX_LOGPROBS);
    } else if (x < 0) {
        return bad(err, "%s must be non-negative or -1, got %d.", key, x);
    }
    *out = x;
    return PL_STATUS_OK;
}

static bool in_list(const char *key, const char *const *list)
{
    for (int i = 0; list && list[i]; i++)
        if (!strcmp(key, list[i]))
            return true;
    return false;
}

static pl_status read_key(const char *key, const json_t *v, struct pl_sampling_params *t,
                          struct json_scratch *s, int *max_tokens, int *max_completion_tokens,
                          int *logprobs_bool, int *top_logprobs, struct pl_err *err)
{
    long long x64 = 0;
    pl_status st;
    if (!strcmp(key, "n"))
        return get_int(v, key, &t->n, err);
    if (!strcmp(key, "presence_penalty"))
        return get_number(v, key, &t->presence_penalty, err);
    if (!strcmp(key, "frequency_penalty"))
        return get_number(v, key, &t->frequency_penalty, err);
    if (!strcmp(key, "repetition_penalty"))
        return get_number(v, key, &t->repetition_penalty, err);
    if (!strcmp(key, "temperature"))
        return get_number(v, key, &t->temperature, err);
    if (!strcmp(key, "top_p"))
        return get_number(v, key, &t->top_p, err);
    if (!strcmp(key, "top_k"))
        return get_int(v, key, &t->top_k, err);
    if (!strcmp(key, "min_p"))
        return get_number(v, key, &t->min_p, err);
    if (!strcmp(key, "seed")) {
        if ((st = get_int64(v, key, &x64, err)))
            return st;
        /* SamplingParams.__post_init__: seed -1 means None */
        t->has_seed = x64 != -1;
        t->seed = t->has_seed ? (uint64_t)x64 : 0;
        return PL_STATUS_OK;
    }
    if (!strcmp(key, "stop"))
        return read_stop(v, t, s, err);
    if (!strcmp(key, "stop_token_ids")) {
        int n = 0;
        if ((st = get_ids(v, key, &s->stop_ids, &n, err)))
            return st;
        /* vLLM dedups stop_token_ids keeping first occurrences */
        int m = 0;
        for (int i = 0; i < n; i++) {
            int j;
            for (j = 0; j < m && s->stop_ids[j] != s->stop_ids[i]; j++)
                ;
            if (j == m)
                s->stop_ids[m++] = s->stop_ids[i];
        }
        t->stop_token_ids = m ? s->stop_ids : NULL;
        t->n_stop_token_ids = m;
        return PL_STATUS_OK;
    }
    if (!strcmp(key, "include_stop_str_in_output"))
        return get_bool(v, key, &t->include_stop_str_in_output, err);
    if (!strcmp(key, "ignore_eos"))
        return get_bool(v, key, &t->ignore_eos, err);
    if (!strcmp(key, "max_tokens") || !strcmp(key, "max_completion_tokens")) {
        int x = 0;
        if ((st = get_int(v, key, &x, err)))
            return st;
        if (x < 1)
            return bad(err, "%s must be at least 1, got %d.", key, x);
        if (!strcmp(key, "max_tokens"))
            *max_tokens = x;
        else
            *max_completion_tokens = x;
        return PL_STATUS_OK;
    }
    if (!strcmp(key, "min_tokens"))
        return get_int(v, key, &t->min_tokens, err);
    if (!strcmp(key, "logprobs")) {
        if (json_is_boolean(v)) {
            *logprobs_bool = json_is_true(v);
            return PL_STATUS_OK;
        }
        return read_logprobs_int(v, key, &t->logprobs, err);
    }
    if (!strcmp(key, "top_logprobs")) {
        int x = 0;
        if ((st = get_int(v, key, &x, err)))
            return st;
        if (x < 0 || x > PL_MAX_LOGPROBS)
            return bad(err, "top_logprobs must be in [0, %d], got %d.", PL_MAX_LOGPROBS, x);
        *top_logprobs = x;
        return PL_STATUS_OK;
    }
    if (!strcmp(key, "prompt_logprobs"))
        return read_logprobs_int(v, key, &t->prompt_logprobs, err);
    if (!strcmp(key, "skip_special_tokens"))
        return get_bool(v, key, &t->skip_special_tokens, err);
    if (!strcmp(key, "spaces_between_special_tokens"))
        return get_bool(v, key, &t->spaces_between_special_tokens, err);
    if (!strcmp(key, "logit_bias"))
        return read_logit_bias(v, t, s, err);
    if (!strcmp(key, "allowed_token_ids")) {
        int n = 0;
        if ((st = get_ids(v, key, &s->allowed, &n, err)))
            return st;
        t->allowed_token_ids = s->allowed; /* non-NULL even when empty: validate refuses [] */
        t->n_allowed_token_ids = n;
        return PL_STATUS_OK;
    }
    if (!strcmp(key, "use_beam_search"))
        return get_bool(v, key, &t->use_beam_search, err);
    if (!strcmp(key, "beam_width"))
        return get_int(v, key, &t->beam_width, err);
    if (!strcmp(key, "length_penalty"))
        return get_number(v, key, &t->length_penalty, err);
    if (!strcmp(key, "early_stopping"))
        return get_bool(v, key, &t->early_stopping, err);
    if (!strcmp(key, "best_of")) {
        int x = 0;
        if ((st = get_int(v, key, &x, err)))
            return st;
        if (x != 1)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "best_of is not supported (vLLM V1 removed it), got %d", x);
        return PL_STATUS_OK;
    }
    if (in_list(key, unsupported_keys))
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s is not supported by pagellm", key);
    return bad(err, "unknown field '%.200s'", key);
}

pl_status pl_sampling_params_from_json(const struct json_t *obj, const char *const *extra_keys,
                                       struct pl_sampling_params *p, struct pl_err *err)
{
    if (!obj || !json_is_object(obj))
        return bad(err, "sampling parameters must be a JSON object, got %s",
                   obj ? pl_json_type_name(obj) : "nothing");
    struct pl_sampling_params t = *p; /* borrows p's arrays until replaced */
    struct json_scratch s = {0};
    int max_tokens = -1, max_completion_tokens = -1, logprobs_bool = -1, top_logprobs = -1;
    pl_status st = PL_STATUS_OK;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (in_list(key, extra_keys) || json_is_null(v))
            continue;
        st = read_key(key, v, &t, &s, &max_tokens, &max_completion_tokens, &logprobs_bool,
                      &top_logprobs, err);
        if (st)
            goto out;
    }
    /* chat: max_completion_tokens supersedes the deprecated max_tokens */
    if (max_completion_tokens != -1)
        t.max_tokens = max_completion_tokens;
    else if (max_tokens != -1)
        t.max_tokens = max_tokens;
    /* chat: logprobs is a boolean and top_logprobs the count */
    if (logprobs_bool == 1) {
        t.logprobs = top_logprobs >= 0 ? top_logprobs : 0;
    } else if (top_logprobs > 0) {
        st = bad(err, "when using top_logprobs, logprobs must be set to true.");
        goto out;
    } else if (logprobs_bool == 0) {
        t.logprobs = -1;
    }

    struct pl_sampling_params copy;
    if ((st = pl_sampling_params_copy(&copy, &t, err)))
        goto out;
    pl_sampling_params_fini(p);
    *p = copy;
out:
    scratch_free(&s);
    return st;
}
