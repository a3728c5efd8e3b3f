/* tokenizer.c -- placeholder (tokenizer work replaces it). */
#include "tokenizer/tokenizer.h"

#include <stddef.h>

pl_status pl_tokenizer_load(const char *dir, struct pl_tokenizer **out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
pl_status pl_tokenizer_load_files(const char *tokenizer_json_path, const char *config_path,
                                  struct pl_tokenizer **out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
pl_status pl_tokenizer_load_mem(const char *tokenizer_json, size_t len, const char *config_json,
                                size_t config_len, struct pl_tokenizer **out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
void pl_tokenizer_free(struct pl_tokenizer *tok) {}
pl_status pl_tokenizer_encode(const struct pl_tokenizer *tok, const char *text, size_t len,
                              bool add_special_tokens, int32_t **ids, int *n_ids,
                              struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
pl_status pl_tokenizer_decode(const struct pl_tokenizer *tok, const int32_t *ids, int n_ids,
                              bool skip_special_tokens, char **text, size_t *len,
                              struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
int pl_tokenizer_vocab_size(const struct pl_tokenizer *tok) { return 0; }
int32_t pl_tokenizer_token_to_id(const struct pl_tokenizer *tok, const char *s) { return -1; }
const char *pl_tokenizer_id_to_token(const struct pl_tokenizer *tok, int32_t id) { return NULL; }
bool pl_tokenizer_is_special(const struct pl_tokenizer *tok, int32_t id) { return false; }
const char *pl_tokenizer_bos_token(const struct pl_tokenizer *tok) { return NULL; }
const char *pl_tokenizer_eos_token(const struct pl_tokenizer *tok) { return NULL; }
int32_t pl_tokenizer_bos_id(const struct pl_tokenizer *tok) { return -1; }
int32_t pl_tokenizer_eos_id(const struct pl_tokenizer *tok) { return -1; }
const char *pl_tokenizer_chat_template(const struct pl_tokenizer *tok) { return NULL; }
pl_status pl_detok_init(struct pl_detok *d, const struct pl_tokenizer *tok,
                        const int32_t *prompt_ids, int n_prompt, bool skip_special_tokens,
                        struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
pl_status pl_detok_push(struct pl_detok *d, int32_t id, char **out, size_t *out_len,
                        struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
pl_status pl_detok_flush(struct pl_detok *d, char **out, size_t *out_len, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "tokenizers are not built yet");
}
void pl_detok_fini(struct pl_detok *d) {}
