/*
 * reasoning.h -- reasoning parsers (vLLM's --reasoning-parser): a model's
 * output split into reasoning_content (the <think> ... </think> block) and
 * content.
 *
 * Owns: the parser kinds and one incremental splitter per output. Rules:
 *   qwen3        reasoning only where the output opens a block: text before
 *                <think> is content, text inside is reasoning, text after
 *                </think> is content. A block left open (the output was cut)
 *                is reasoning to the end.
 *   deepseek_r1  the output starts inside the block (DeepSeek-R1's chat
 *                template opens <think> in the prompt): text up to </think>
 *                is reasoning, the rest content; a <think> the model repeats
 *                at the very start is dropped; no </think>: all reasoning.
 * After the first </think> everything is content (tags included), as vLLM.
 *
 * Streaming: pl_reasoning_feed takes the text in any pieces; bytes that may
 * be the start of the tag being looked for are held back until the next
 * piece decides them, and pl_reasoning_finish releases them. The split
 * never depends on how the text was cut: the whole text fed at once and then
 * finished gives exactly the concatenation of the pieces' outputs (the
 * server builds full responses that way, so streamed deltas and the full
 * response agree by construction).
 */
#ifndef PL_SERVER_REASONING_H
#define PL_SERVER_REASONING_H

#include "server/sbuf.h"

#include <stdbool.h>
#include <stddef.h>

enum pl_reasoning_kind {
    PL_REASONING_NONE = 0,
    PL_REASONING_QWEN3,
    PL_REASONING_DEEPSEEK_R1
};

/* "qwen3", "deepseek_r1" (NULL or "": NONE). False for an unknown name. */
bool pl_reasoning_kind_from_name(const char *name, enum pl_reasoning_kind *out);

/* The names pl_reasoning_kind_from_name accepts, for messages: "qwen3, deepseek_r1". */
const char *pl_reasoning_kind_names(void);

struct pl_reasoning {
    enum pl_reasoning_kind kind;
    int state;       /* internal: lead, content, reasoning, final content */
    char held[16];   /* bytes that may begin the tag looked for */
    size_t n_held;
};

void pl_reasoning_init(struct pl_reasoning *r, enum pl_reasoning_kind kind);

/* Appends the decided part of text to reasoning / content (either may get nothing). */
void pl_reasoning_feed(struct pl_reasoning *r, const char *text, size_t len,
                       struct pl_sbuf *reasoning, struct pl_sbuf *content);

/* End of the output: releases the held bytes. */
void pl_reasoning_finish(struct pl_reasoning *r, struct pl_sbuf *reasoning,
                         struct pl_sbuf *content);

/* The whole text at once (feed + finish). */
void pl_reasoning_split(enum pl_reasoning_kind kind, const char *text, size_t len,
                        struct pl_sbuf *reasoning, struct pl_sbuf *content);

#endif
