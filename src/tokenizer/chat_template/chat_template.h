/*
 * chat_template.h -- Jinja chat templates as transformers' apply_chat_template renders them.
 *
 * Owns: struct pl_chat_template, a parsed template (immutable after parse,
 * shareable between threads) and the interpreter that renders it against a
 * JSON context. The language is the Jinja subset real model templates use;
 * rendering is bounded (loop iterations, recursion depth, output size), so an
 * untrusted template can fail but never hang or crash. Errors carry the
 * template position ("line L, column C: ...").
 * Whitespace: trim_blocks and lstrip_blocks are on, as in transformers.
 */
#ifndef PL_CHAT_TEMPLATE_H
#define PL_CHAT_TEMPLATE_H

#include "util/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct pl_chat_template;

struct pl_chat_template_limits {
    long max_loop_iterations;  /* total across the render (default 1,000,000) */
    int max_depth;             /* macro call / include nesting (default 64) */
    size_t max_output_bytes;   /* default 16 MiB */
};

pl_status pl_chat_template_parse(const char *source, size_t len,
                                 struct pl_chat_template **out, struct pl_err *err);
void pl_chat_template_free(struct pl_chat_template *t);

/* Renders with `context`, a JSON object of variables: messages, tools, bos_token,
 * eos_token, add_generation_prompt, and any chat_template_kwargs merged in.
 * limits may be NULL (defaults); a field <= 0 takes its default. *out is malloc'ed,
 * NUL-terminated (the output may itself contain NUL bytes: use *out_len). On error *out is
 * NULL and err says "line L, column C: ..." (raise_exception's message verbatim). */
pl_status pl_chat_template_render(const struct pl_chat_template *t, const json_t *context,
                                  const struct pl_chat_template_limits *limits, char **out,
                                  size_t *out_len, struct pl_err *err);

#endif
