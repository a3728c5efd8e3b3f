/*
 * reasoning.c -- the <think> splitter behind --reasoning-parser (see reasoning.h).
 *
 * States: LEAD (deepseek_r1 before its first byte: a leading <think> is
 * dropped), CONTENT (looking for <think>), REASONING (looking for </think>),
 * FINAL (content to the end). At most strlen("</think>") - 1 bytes are held.
 */
#include "server/reasoning.h"

#include <string.h>

enum { ST_LEAD, ST_CONTENT, ST_REASONING, ST_FINAL };

static const char OPEN_TAG[] = "<think>";
static const char CLOSE_TAG[] = "</think>";

bool pl_reasoning_kind_from_name(const char *name, enum pl_reasoning_kind *out)
{
    if (!name || !*name)
        *out = PL_REASONING_NONE;
    else if (!strcmp(name, "qwen3"))
        *out = PL_REASONING_QWEN3;
    else if (!strcmp(name, "deepseek_r1"))
        *out = PL_REASONING_DEEPSEEK_R1;
    else
        return false;
    return true;
}

const char *pl_reasoning_kind_names(void)
{
    return "qwen3, deepseek_r1";
}

void pl_reasoning_init(struct pl_reasoning *r, enum pl_reasoning_kind kind)
{
    memset(r, 0, sizeof(*r));
    r->kind = kind;
    r->state = kind == PL_REASONING_DEEPSEEK_R1 ? ST_LEAD : ST_CONTENT;
}

/* The length of the longest suffix of p[0..n) that is a proper prefix of tag. */
static size_t partial_tag(const char *p, size_t n, const char *tag, size_t tl)
{
    for (size_t k = tl - 1 < n ? tl - 1 : n; k > 0; k--)
        if (!memcmp(p + n - k, tag, k))
            return k;
    return 0;
}

static void hold(struct pl_reasoning *r, const char *p, size_t n)
{
    memcpy(r->held, p, n); /* n < sizeof(held): at most a tag's length - 1 */
    r->n_held = n;
}

void pl_reasoning_feed(struct pl_reasoning *r, const char *text, size_t len,
                       struct pl_sbuf *reasoning, struct pl_sbuf *content)
{
    if (r->kind == PL_REASONING_NONE) {
        pl_sbuf_append(content, text, len);
        return;
    }
    struct pl_sbuf buf = {0};
    pl_sbuf_append(&buf, r->held, r->n_held);
    pl_sbuf_append(&buf, text, len);
    r->n_held = 0;
    if (buf.failed) { /* out of memory: nothing is held back, the text goes on as it is */
        pl_sbuf_append(r->state == ST_REASONING || r->state == ST_LEAD ? reasoning : content,
                       text, len);
        pl_sbuf_fini(&buf);
        return;
    }
    const char *p = buf.data;
    size_t n = buf.len;
    while (n > 0) {
        if (r->state == ST_FINAL) {
            pl_sbuf_append(content, p, n);
            break;
        }
        if (r->state == ST_LEAD) {
            size_t tl = sizeof(OPEN_TAG) - 1;
            if (n >= tl && !memcmp(p, OPEN_TAG, tl)) {
                p += tl, n -= tl;
                r->state = ST_REASONING;
            } else if (n < tl && !memcmp(p, OPEN_TAG, n)) {
                hold(r, p, n);
                break;
            } else {
                r->state = ST_REASONING;
            }
            continue;
        }
        bool in_content = r->state == ST_CONTENT;
        const char *tag = in_content ? OPEN_TAG : CLOSE_TAG;
        size_t tl = in_content ? sizeof(OPEN_TAG) - 1 : sizeof(CLOSE_TAG) - 1;
        struct pl_sbuf *out = in_content ? content : reasoning;
        const char *hit = memmem(p, n, tag, tl);
        if (hit) {
            pl_sbuf_append(out, p, (size_t)(hit - p));
            n -= (size_t)(hit - p) + tl;
            p = hit + tl;
            r->state = in_content ? ST_REASONING : ST_FINAL;
            continue;
        }
        size_t k = partial_tag(p, n, tag, tl);
        pl_sbuf_append(out, p, n - k);
        hold(r, p + n - k, k);
        break;
    }
    pl_sbuf_fini(&buf);
}

void pl_reasoning_finish(struct pl_reasoning *r, struct pl_sbuf *reasoning,
                         struct pl_sbuf *content)
{
    bool to_reasoning = r->state == ST_LEAD || r->state == ST_REASONING;
    pl_sbuf_append(to_reasoning ? reasoning : content, r->held, r->n_held);
    r->n_held = 0;
}

void pl_reasoning_split(enum pl_reasoning_kind kind, const char *text, size_t len,
                        struct pl_sbuf *reasoning, struct pl_sbuf *content)
{
    struct pl_reasoning r;
    pl_reasoning_init(&r, kind);
    pl_reasoning_feed(&r, text, len, reasoning, content);
    pl_reasoning_finish(&r, reasoning, content);
}
