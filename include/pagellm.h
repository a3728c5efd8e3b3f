/*
 * pagellm.h -- the public C API of pagellm.
 *
 * Owns: the status codes every action returns, and (from the engine issue on)
 * the LLM handle, sampling params and outputs that mirror vLLM's offline API.
 * Conventions: actions return pl_status; details go to a per-handle message
 * (pl_llm_errmsg); handles are opaque; the creator frees; *_free(NULL) is a no-op.
 */
#ifndef PAGELLM_H
#define PAGELLM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PAGELLM_VERSION "0.1.0"

typedef enum pl_status {
    PL_STATUS_OK = 0,
    PL_STATUS_INVALID_ARGUMENT, /* a caller passed a bad value (request data included) */
    PL_STATUS_IO,               /* open/read/mmap/write failed */
    PL_STATUS_FORMAT,           /* outside data (file, JSON, template) is malformed */
    PL_STATUS_UNSUPPORTED,      /* well-formed but not supported (architecture, dtype, feature) */
    PL_STATUS_NO_MEMORY,        /* allocation failed or a pool is exhausted */
    PL_STATUS_NOT_FOUND,        /* a named thing (tensor, file, token, request) does not exist */
    PL_STATUS_LIMIT,            /* a bound was hit (size, depth, loop count, length) */
    PL_STATUS_ABORTED,          /* the operation was cancelled */
    PL_STATUS_INTERNAL          /* a bug or backend failure */
} pl_status;

/* A static English name for a status ("ok", "invalid argument", ...). */
const char *pl_status_str(pl_status s);

/* ------------------------------------------------------------------------ */
/* Sampling parameters (vLLM's SamplingParams, same names and defaults)      */
/* ------------------------------------------------------------------------ */

struct pl_err;               /* src/util/err.h: a status plus a message buffer */
struct pl_generation_config; /* src/model/config.h: generation_config.json fields */
struct json_t;               /* jansson's json_t */

/* vLLM's default --max-logprobs: the most logprobs a request may ask for. */
#define PL_MAX_LOGPROBS 20
/* vLLM's VLLM_MAX_N_SEQUENCES default: the largest n. */
#define PL_MAX_N_SEQUENCES 16384

/* One logit_bias entry: added to the token's logit before sampling. */
struct pl_logit_bias {
    int32_t token_id;
    float bias;
};

/*
 * Per-request sampling parameters, field for field vLLM's SamplingParams
 * (vllm/sampling_params.py); pl_sampling_params_default gives vLLM's defaults.
 *
 * Memory: the arrays (stop, stop_token_ids, logit_bias, allowed_token_ids) are
 * borrowed pointers with counts unless the params own them. A params struct
 * owns its arrays only when it came from pl_sampling_params_copy or
 * pl_sampling_params_from_json: then `owned` points at the single allocation
 * holding every array and string, and pl_sampling_params_fini frees it. For
 * borrowed params fini is a no-op, so calling it is always safe.
 *
 * Optional values: seed has has_seed; max_tokens, logprobs and
 * prompt_logprobs use -1 for vLLM's None; allowed_token_ids uses NULL for
 * None (a non-NULL pointer with a count of 0 is vLLM's empty list, which
 * validation refuses).
 */
struct pl_sampling_params {
    int n;                     /* outputs per prompt (1) */
    float presence_penalty;    /* [-2, 2] (0): subtracted once from every token in the output */
    float frequency_penalty;   /* [-2, 2] (0): subtracted per occurrence in the output */
    float repetition_penalty;  /* > 0 (1): tokens in prompt or output: positive logits /=, negative *= */
    float temperature;         /* [0, 2] (1); below 1e-5 means greedy */
    float top_p;               /* (0, 1] (1) */
    int top_k;                 /* 0 or -1: off (0); else keep the k most likely */
    float min_p;               /* [0, 1] (0): drop tokens below min_p * the top probability */
    bool has_seed;             /* false (vLLM seed=None): draw from the engine's generator */
    uint64_t seed;             /* the request's own generator seed when has_seed */
    const char *const *stop;   /* [n_stop] NUL-terminated stop strings (none) */
    int n_stop;
    const int32_t *stop_token_ids; /* [n_stop_token_ids] (none) */
    int n_stop_token_ids;
    bool include_stop_str_in_output; /* false */
    bool ignore_eos;           /* false */
    int max_tokens;            /* >= 1 (16); -1: None, i.e. up to the context length */
    int min_tokens;            /* >= 0 (0): eos and stop_token_ids are masked until reached */
    int logprobs;              /* -1: None (-1); else 0..PL_MAX_LOGPROBS top logprobs per token */
    int prompt_logprobs;       /* -1: None (-1); else 0..PL_MAX_LOGPROBS per prompt token */
    bool skip_special_tokens;  /* true */
    bool spaces_between_special_tokens; /* true */
    const struct pl_logit_bias *logit_bias; /* [n_logit_bias] (none) */
    int n_logit_bias;
    const int32_t *allowed_token_ids; /* [n_allowed_token_ids]; NULL: every token allowed */
    int n_allowed_token_ids;
    /* Beam search (vLLM's BeamSearchParams; the OpenAI server's use_beam_search). */
    bool use_beam_search;      /* false */
    int beam_width;            /* beams when use_beam_search; 0: take n (vLLM's server does) */
    float length_penalty;      /* 1.0 */
    bool early_stopping;       /* false */

    void *owned;               /* the allocation behind the arrays, or NULL when borrowed */
};

/* Fills p with vLLM's SamplingParams defaults (borrowed, empty arrays). */
void pl_sampling_params_default(struct pl_sampling_params *p);

/*
 * Checks p against vLLM's rules (SamplingParams._verify_args and verify(),
 * with max_logprobs = PL_MAX_LOGPROBS) and applies vLLM's normalizations:
 * a temperature in (0, 0.01) is raised to 0.01, and greedy requests
 * (temperature < 1e-5) get top_p = 1, top_k = 0, min_p = 0.
 * vocab_size bounds the token ids of stop_token_ids, logit_bias and
 * allowed_token_ids (pass <= 0 to skip those checks).
 * Returns PL_STATUS_INVALID_ARGUMENT with a message naming the field.
 */
pl_status pl_sampling_params_validate(struct pl_sampling_params *p, int vocab_size,
                                      struct pl_err *err);

/*
 * Applies a model's generation_config.json defaults the way vLLM does with
 * --generation-config auto (ModelConfig.get_diff_sampling_param): temperature,
 * top_p, top_k, min_p, repetition_penalty and max_new_tokens (-> max_tokens),
 * each only when the file sets it to a value other than transformers'
 * GenerationConfig default (vLLM reads to_diff_dict()). Call it on defaults,
 * before the request's own fields are read (pl_sampling_params_from_json).
 * gen may be NULL (nothing to apply).
 */
void pl_sampling_params_apply_generation_config(struct pl_sampling_params *p,
                                                const struct pl_generation_config *gen);

/*
 * Deep-copies src into *dst as one allocation (dst owns it; free it with
 * pl_sampling_params_fini). dst may not alias src. PL_STATUS_NO_MEMORY on
 * allocation failure (dst is then left borrowed and empty of arrays).
 */
pl_status pl_sampling_params_copy(struct pl_sampling_params *dst,
                                  const struct pl_sampling_params *src, struct pl_err *err);

/* Frees what p owns (if anything) and leaves p with empty borrowed arrays. */
void pl_sampling_params_fini(struct pl_sampling_params *p);

/*
 * Reads the sampling fields of a vLLM / OpenAI request body (completions or
 * chat) into *p, which the caller has initialized (defaults, then the
 * generation config): only the keys present change p; JSON null means "not
 * given" as in vLLM's request models. Names: every pl_sampling_params field,
 * plus "max_completion_tokens" (chat, preferred over max_tokens),
 * "top_logprobs" with boolean "logprobs" (chat), and "beam_width".
 * Keys listed in extra_keys (NULL-terminated, may be NULL) are the caller's
 * and skipped; any other key is an error naming it. On success p owns its
 * arrays (pl_sampling_params_fini). Types are checked, not ranges: call
 * pl_sampling_params_validate afterwards. Errors: PL_STATUS_INVALID_ARGUMENT
 * naming the key and what was wrong; PL_STATUS_UNSUPPORTED for vLLM fields
 * pagellm does not implement (bad_words, structured outputs, ...); on error
 * *p is unchanged.
 */
pl_status pl_sampling_params_from_json(const struct json_t *obj, const char *const *extra_keys,
                                       struct pl_sampling_params *p, struct pl_err *err);

#ifdef __cplusplus
}
#endif
#endif
