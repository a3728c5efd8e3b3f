/*
 * vocab_check.h -- which token ids a request may name: the one rule that every
 * entry point (C API, CLI, server, worker) applies at admission.
 *
 * Owns: nothing; a rule over (the model's vocab_size, the tokenizer). An id
 * exists when it is below the model's vocab_size (config.json: the rows of the
 * embedding and lm_head) and, when a tokenizer is loaded, the tokenizer has a
 * token for it. Checkpoints often pad their vocab past the tokenizer (Qwen2 and
 * Qwen3: 151936 rows for ~151670 tokens): the model can run and even sample an
 * id in that gap (it then decodes to "", see tokenizer.h), but no client means
 * one, so requests naming gap ids in their prompt, logit_bias or
 * allowed_token_ids are refused (vLLM refuses prompt ids past the tokenizer the
 * same way). Messages name the field and the id.
 */
#ifndef PL_ENGINE_VOCAB_CHECK_H
#define PL_ENGINE_VOCAB_CHECK_H

#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stdint.h>

struct pl_tokenizer;

struct pl_vocab_check {
    int vocab_size;                 /* the model's (<= 0: no bound, e.g. parsing tests) */
    const struct pl_tokenizer *tok; /* NULL: no tokenizer, every id below vocab_size exists */
};

/* True when id exists (see above). */
bool pl_vocab_check_has(const struct pl_vocab_check *v, int64_t id);

/*
 * PL_STATUS_OK when id exists, else PL_STATUS_INVALID_ARGUMENT with a message
 * "<what> token id <id> ..." saying why (out of the model's range, or in the gap
 * past the tokenizer).
 */
pl_status pl_vocab_check_id(const struct pl_vocab_check *v, int64_t id, const char *what,
                            struct pl_err *err);

/*
 * Every id of a prompt exists. PL_STATUS_INVALID_ARGUMENT naming "prompt", the
 * position and the id otherwise.
 */
pl_status pl_vocab_check_prompt(const struct pl_vocab_check *v, const int32_t *ids, int n,
                                struct pl_err *err);

/*
 * Every id of p's logit_bias and allowed_token_ids exists (stop_token_ids only
 * need to be below vocab_size, pl_sampling_params_validate's rule: a stop id the
 * model never samples is harmless). PL_STATUS_INVALID_ARGUMENT naming the field
 * and the id otherwise.
 */
pl_status pl_vocab_check_params(const struct pl_vocab_check *v,
                                const struct pl_sampling_params *p, struct pl_err *err);

#endif
