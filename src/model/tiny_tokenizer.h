/*
 * tiny_tokenizer.h -- the built-in default model's tokenizer (internal to tiny_model.c).
 *
 * Owns: pl_tiny_tokenizer_write, which trains a byte-level BPE on an embedded
 * English text and writes tokenizer.json + tokenizer_config.json (Llama 3
 * layout, ChatML chat template). Deterministic: same files on every machine.
 */
#ifndef PL_MODEL_TINY_TOKENIZER_H
#define PL_MODEL_TINY_TOKENIZER_H

#include "util/err.h"

#define PL_TINY_TOK_N_SPECIAL 4

struct pl_tiny_tokenizer_info {
    int n_vocab;     /* every id: 256 bytes + merged tokens + specials */
    int n_merges;    /* entries in "merges" (>= merged tokens) */
    int bos_id;      /* <|begin_of_text|> */
    int eos_id;      /* <|end_of_text|> */
    int im_start_id; /* <|im_start|> */
    int im_end_id;   /* <|im_end|> */
};

/* Trains n_new_tokens merged tokens and writes the two files into dir (which
 * must exist; dir NULL only trains and fills info). */
pl_status pl_tiny_tokenizer_write(const char *dir, int n_new_tokens,
                                  struct pl_tiny_tokenizer_info *info, struct pl_err *err);

#endif
