/*
 * vocab_check.c -- the admission rule for token ids (see vocab_check.h).
 */
#include "engine/vocab_check.h"

#include "tokenizer/tokenizer.h"

#include <stdint.h>
#include <stdio.h>

bool pl_vocab_check_has(const struct pl_vocab_check *v, int64_t id)
{
    if (id < 0 || id > INT32_MAX)
        return false;
    if (v->vocab_size > 0 && id >= v->vocab_size)
        return false;
    return !v->tok || pl_tokenizer_has_id(v->tok, (int32_t)id);
}

pl_status pl_vocab_check_id(const struct pl_vocab_check *v, int64_t id, const char *what,
                            struct pl_err *err)
{
    if (pl_vocab_check_has(v, id))
        return PL_STATUS_OK;
    if (id < 0 || id > INT32_MAX || (v->vocab_size > 0 && id >= v->vocab_size))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "%s token id %lld is out of vocabulary (the model's vocab_size is %d)",
                          what, (long long)id, v->vocab_size);
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                      "%s token id %lld has no token: the tokenizer has %d ids (the model's "
                      "vocab_size %d is padded past them)",
                      what, (long long)id, pl_tokenizer_vocab_size(v->tok), v->vocab_size);
}

pl_status pl_vocab_check_prompt(const struct pl_vocab_check *v, const int32_t *ids, int n,
                                struct pl_err *err)
{
    for (int i = 0; i < n; i++)
        if (!pl_vocab_check_has(v, ids[i])) {
            char what[48];
            snprintf(what, sizeof(what), "prompt: position %d:", i);
            return pl_vocab_check_id(v, ids[i], what, err);
        }
    return PL_STATUS_OK;
}

pl_status pl_vocab_check_params(const struct pl_vocab_check *v,
                                const struct pl_sampling_params *p, struct pl_err *err)
{
    for (int i = 0; i < p->n_logit_bias; i++)
        if (!pl_vocab_check_has(v, p->logit_bias[i].token_id))
            return pl_vocab_check_id(v, p->logit_bias[i].token_id, "logit_bias:", err);
    for (int i = 0; p->allowed_token_ids && i < p->n_allowed_token_ids; i++)
        if (!pl_vocab_check_has(v, p->allowed_token_ids[i]))
            return pl_vocab_check_id(v, p->allowed_token_ids[i], "allowed_token_ids:", err);
    return PL_STATUS_OK;
}
