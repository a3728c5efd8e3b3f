/*
 * tokenizer.h -- Hugging Face tokenizers (tokenizer.json + tokenizer_config.json).
 *
 * Owns: struct pl_tokenizer (immutable after load, safe to share between
 * threads for encode/decode) and struct pl_detok (per-sequence incremental
 * detokenizer state). Behaviour matches Hugging Face transformers'
 * AutoTokenizer for the same files: encode(text, add_special_tokens) gives the
 * same ids, decode(ids, skip_special_tokens) the same text.
 * Untrusted input: a malformed tokenizer.json is refused with a message naming
 * the field; encode/decode accept any bytes (invalid UTF-8 is handled as HF does).
 */
#ifndef PL_TOKENIZER_H
#define PL_TOKENIZER_H

#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pl_tokenizer;

/* Loads <dir>/tokenizer.json and, if present, <dir>/tokenizer_config.json; the model_type
 * of <dir>/config.json, if present, selects the class rules (tokenizer.c, rule 5). */
pl_status pl_tokenizer_load(const char *dir, struct pl_tokenizer **out, struct pl_err *err);

/* Loads from explicit paths; config_path may be NULL. */
pl_status pl_tokenizer_load_files(const char *tokenizer_json_path, const char *config_path,
                                  struct pl_tokenizer **out, struct pl_err *err);

/* Loads from JSON text in memory; config_json may be NULL. */
pl_status pl_tokenizer_load_mem(const char *tokenizer_json, size_t len, const char *config_json,
                                size_t config_len, struct pl_tokenizer **out, struct pl_err *err);

/* The same, as inside a model directory whose config.json names model_type (NULL: none):
 * transformers ignores tokenizer_class for a few model types (tokenizer.c, rule 5). */
pl_status pl_tokenizer_load_mem_as(const char *tokenizer_json, size_t len, const char *config_json,
                                   size_t config_len, const char *model_type,
                                   struct pl_tokenizer **out, struct pl_err *err);

void pl_tokenizer_free(struct pl_tokenizer *tok);

/* Encodes text (len bytes). add_special_tokens applies the post-processor /
 * add_bos_token / add_eos_token as transformers does. *ids is malloc'ed (caller frees). */
pl_status pl_tokenizer_encode(const struct pl_tokenizer *tok, const char *text, size_t len,
                              bool add_special_tokens, int32_t **ids, int *n_ids,
                              struct pl_err *err);

/* Decodes ids to text (malloc'ed, NUL-terminated; caller frees). An id with no
 * token (past the tokenizer's size, or a hole in its vocab) decodes to "", as in
 * transformers and vLLM; a negative id is PL_STATUS_INVALID_ARGUMENT. */
pl_status pl_tokenizer_decode(const struct pl_tokenizer *tok, const int32_t *ids, int n_ids,
                              bool skip_special_tokens, char **text, size_t *len,
                              struct pl_err *err);

int pl_tokenizer_vocab_size(const struct pl_tokenizer *tok); /* max id + 1 (added tokens incl.) */
/* Token id of an exact vocab/added-token string; -1 when absent. */
int32_t pl_tokenizer_token_to_id(const struct pl_tokenizer *tok, const char *s);
/* The token's string as stored in the vocab (e.g. "Ġthe"), NULL when out of range. */
const char *pl_tokenizer_id_to_token(const struct pl_tokenizer *tok, int32_t id);
/* True when some token (vocab or added) has this id. */
bool pl_tokenizer_has_id(const struct pl_tokenizer *tok, int32_t id);
bool pl_tokenizer_is_special(const struct pl_tokenizer *tok, int32_t id);

/* From tokenizer_config.json (NULL / -1 when absent). */
const char *pl_tokenizer_bos_token(const struct pl_tokenizer *tok);
const char *pl_tokenizer_eos_token(const struct pl_tokenizer *tok);
int32_t pl_tokenizer_bos_id(const struct pl_tokenizer *tok);
int32_t pl_tokenizer_eos_id(const struct pl_tokenizer *tok);
/* The default chat template (the string form, or the entry named "default"); NULL when none. */
const char *pl_tokenizer_chat_template(const struct pl_tokenizer *tok);

/*
 * Incremental detokenization for streaming (vLLM's algorithm): text is emitted
 * only once it is complete UTF-8 and will not change when more tokens arrive.
 * The concatenation of all deltas (and the final flush) equals
 * pl_tokenizer_decode of all generated ids.
 */
struct pl_detok {
    const struct pl_tokenizer *tok;
    bool skip_special_tokens;
    int32_t *ids;      /* all ids so far (prompt tail for context + generated) */
    int n_ids, cap_ids;
    int prefix_offset; /* start of the window decoded for context */
    int read_offset;   /* ids before this have had their text emitted */
    int n_prompt;      /* how many leading ids came from the prompt */
    size_t emitted;    /* bytes of generated text emitted so far */
};

/* prompt_ids gives context (e.g. so a leading space decodes right); may be NULL. */
pl_status pl_detok_init(struct pl_detok *d, const struct pl_tokenizer *tok,
                        const int32_t *prompt_ids, int n_prompt, bool skip_special_tokens,
                        struct pl_err *err);
/* Adds one generated token; appends newly stable text to *out (malloc'ed or
 * realloc'ed by the callee; *out_len updated). An id >= the tokenizer's size (a
 * padded model vocab) has no token and adds "" (as pl_tokenizer_decode); a
 * negative id is PL_STATUS_INVALID_ARGUMENT. */
pl_status pl_detok_push(struct pl_detok *d, int32_t id, char **out, size_t *out_len,
                        struct pl_err *err);
/* Emits whatever is left at the end of the sequence. */
pl_status pl_detok_flush(struct pl_detok *d, char **out, size_t *out_len, struct pl_err *err);
void pl_detok_fini(struct pl_detok *d);

#endif
