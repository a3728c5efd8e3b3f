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

/* ---- apply_chat_template (render.c): the one place a conversation becomes a prompt ---- */

/* What a caller knows besides the template and the messages. */
struct pl_chat_apply {
    const char *bos_token, *eos_token;  /* the tokenizer's, "" when NULL */
    bool add_generation_prompt;
    bool continue_final_message;        /* cut after the final message (both true: refused) */
    const json_t *kwargs;               /* chat_template_kwargs: a JSON object, or NULL */
    const json_t *tools;                /* the request's tools (a JSON array of
                                           {type, function}), or NULL: the template's
                                           `tools` is then None */
};

/*
 * transformers' apply_chat_template(tokenize=False) as vLLM calls it, used by the C API,
 * the CLI, the OpenAI server and the RunPod worker alike:
 *   - messages: a non-empty JSON array of objects with a string "role"; a "content" that is
 *     a list of parts is joined with "\n" from its text parts, a null or absent content is
 *     "" (vLLM's "string" content format; other part types are refused); an assistant
 *     message's tool_calls[].function.arguments given as a JSON text is parsed into its
 *     value, and a missing, null or empty one is {} (vLLM: templates expect a mapping);
 *     other keys pass through;
 *   - the context: bos_token, eos_token, add_generation_prompt, tools and documents (None
 *     unless given, as transformers always passes both), then chat_template_kwargs merged
 *     over them (the request's kwargs win, as in vLLM), then the request's tools when
 *     given, then messages;
 *   - continue_final_message: the render is cut after the final message's content exactly
 *     as transformers does (its last occurrence of the stripped content; the content's
 *     trailing whitespace kept only when the template kept it).
 * On failure *out is NULL, err says why and *param (may be NULL) names the request field
 * at fault: "messages", "chat_template_kwargs" or "continue_final_message".
 */
pl_status pl_apply_chat_template(const struct pl_chat_template *t, const json_t *messages,
                                 const struct pl_chat_apply *opts, char **out, size_t *out_len,
                                 const char **param, struct pl_err *err);

#endif
