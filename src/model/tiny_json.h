/*
 * tiny_json.h -- a growable text buffer that emits JSON text byte-exactly.
 *
 * Owns: struct pl_tjson, used by the tiny-model writers (tiny_model.c,
 * tiny_tokenizer.c) to produce config/tokenizer files whose bytes never depend
 * on a JSON library's formatting choices. An allocation failure is sticky:
 * every later append is a no-op and pl_tjson_failed() reports it once at the end.
 */
#ifndef PL_MODEL_TINY_JSON_H
#define PL_MODEL_TINY_JSON_H

#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>

struct pl_tjson {
    char *p;     /* NUL-terminated text, [n] bytes */
    size_t n;
    size_t cap;
    bool oom;    /* an append failed to allocate */
};

void pl_tjson_init(struct pl_tjson *b);
void pl_tjson_fini(struct pl_tjson *b);
void pl_tjson_put(struct pl_tjson *b, const char *s);
void pl_tjson_putn(struct pl_tjson *b, const char *s, size_t n);
void pl_tjson_printf(struct pl_tjson *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a JSON string literal: quotes, with ", \ and control bytes escaped;
 * other bytes (UTF-8) are copied as they are. */
void pl_tjson_str(struct pl_tjson *b, const char *s, size_t n);
bool pl_tjson_failed(const struct pl_tjson *b);

/* Writes the buffer to dir/name; PL_STATUS_NO_MEMORY if the buffer overflowed
 * memory earlier, PL_STATUS_IO when the file cannot be written. */
pl_status pl_tjson_write_file(const struct pl_tjson *b, const char *dir, const char *name,
                              struct pl_err *err);

#endif
