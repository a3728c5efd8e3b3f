/*
 * sampling_params.h -- the library-internal side of struct pl_sampling_params
 * (include/pagellm.h has the struct, its defaults and fini).
 *
 * Owns: nothing; declares what engine/sampling_params.c offers the engine, the
 * handle and the serving layer beyond the public API: vLLM's validation,
 * generation_config defaults and overrides, deep copies, and reading the
 * sampling fields of an OpenAI / vLLM request body (jansson). These take
 * internal types (struct pl_err, struct pl_generation_config, json_t), which
 * the public header never shows.
 */
#ifndef PL_ENGINE_SAMPLING_PARAMS_H
#define PL_ENGINE_SAMPLING_PARAMS_H

#include "model/config.h"
#include "pagellm.h"
#include "util/err.h"

#include <jansson.h>

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
 * Applies an operator's override (vLLM's --override-generation-config, parsed
 * by pl_generation_config_parse_override): every field it sets replaces p's,
 * as given (unlike the file's defaults, a value equal to transformers' default
 * still counts); max_new_tokens sets max_tokens. gen may be NULL.
 */
void pl_sampling_params_apply_generation_override(struct pl_sampling_params *p,
                                                  const struct pl_generation_config *gen);

/*
 * Deep-copies src into *dst as one allocation (dst owns it; free it with
 * pl_sampling_params_fini). dst may not alias src. PL_STATUS_NO_MEMORY on
 * allocation failure (dst is then left borrowed and empty of arrays).
 */
pl_status pl_sampling_params_copy(struct pl_sampling_params *dst,
                                  const struct pl_sampling_params *src, struct pl_err *err);

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
pl_status pl_sampling_params_from_json(const json_t *obj, const char *const *extra_keys,
                                       struct pl_sampling_params *p, struct pl_err *err);

#endif
