/*
 * fuzz_tool_parser.c -- libFuzzer target for the tool-call parsers (src/server/tool_parser.c),
 * which read model output: text the server does not control.
 *
 * Input: byte 0 picks the format (hermes, llama3_json, mistral, json_array, named) and
 * whether calls are limited to one, byte 1 the piece size of the streamed feed, the rest
 * is the text. Properties (a violation aborts): the text fed in pieces gives exactly the
 * split of the whole text fed at once (content and every call's name and arguments); with
 * no call found the content is the text byte for byte; call indexes run 0, 1, ... with
 * the name on each call's first delta.
 */
#include "server/tool_parser.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

struct split {
    struct pl_sbuf content;
    struct pl_sbuf calls; /* "name\x01args\x02" per call */
    int n_calls;
    int n_seen;
};

static void take(struct split *s, const struct pl_tool_out *out)
{
    pl_sbuf_append(&s->content, out->content.data ? out->content.data : "", out->content.len);
    for (int i = 0; i < out->n_calls; i++) {
        const struct pl_tool_call_delta *d = &out->calls[i];
        if (d->is_first) {
            if (d->index != s->n_seen || !d->name[0])
                abort();
            if (s->n_seen)
                pl_sbuf_append(&s->calls, "\x02", 1);
            pl_sbuf_puts(&s->calls, d->name);
            pl_sbuf_append(&s->calls, "\x01", 1);
            s->n_seen++;
        } else if (d->index != s->n_seen - 1 || d->name[0]) {
            abort();
        }
        pl_sbuf_append(&s->calls, d->args.data ? d->args.data : "", d->args.len);
    }
}

static void run(enum pl_tool_parser_kind kind, int max_calls, const char *text, size_t n,
                size_t piece, struct split *s)
{
    struct pl_tool_parser *p = pl_tool_parser_new(kind, "fn", max_calls);
    if (!p)
        abort();
    struct pl_tool_out out = {0};
    for (size_t at = 0; at < n; at += piece) {
        size_t len = n - at < piece ? n - at : piece;
        pl_tool_out_reset(&out);
        pl_tool_parser_feed(p, text + at, len, &out);
        take(s, &out);
    }
    pl_tool_out_reset(&out);
    pl_tool_parser_finish(p, &out);
    take(s, &out);
    s->n_calls = pl_tool_parser_n_calls(p);
    if (s->n_calls != s->n_seen)
        abort();
    pl_tool_out_fini(&out);
    pl_tool_parser_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    if (size < 2)
        return 0;
    static const enum pl_tool_parser_kind kinds[] = {
        PL_TOOL_PARSER_HERMES, PL_TOOL_PARSER_LLAMA3_JSON, PL_TOOL_PARSER_MISTRAL,
        PL_TOOL_PARSER_JSON_ARRAY, PL_TOOL_PARSER_NAMED};
    enum pl_tool_parser_kind kind = kinds[buf[0] % 5];
    int max_calls = (buf[0] / 5) % 2;
    size_t piece = (size_t)buf[1] % 16 + 1;
    const char *text = (const char *)buf + 2;
    size_t n = size - 2;
    struct split whole = {0}, parts = {0};
    run(kind, max_calls, text, n, n ? n : 1, &whole);
    run(kind, max_calls, text, n, piece, &parts);
    if (whole.content.len != parts.content.len || whole.calls.len != parts.calls.len ||
        whole.n_calls != parts.n_calls ||
        (whole.content.len && memcmp(whole.content.data, parts.content.data, whole.content.len)) ||
        (whole.calls.len && memcmp(whole.calls.data, parts.calls.data, whole.calls.len)))
        abort();
    if (whole.n_calls == 0 && max_calls == 0 && kind != PL_TOOL_PARSER_NAMED &&
        (whole.content.len != n || (n && memcmp(whole.content.data, text, n))))
        abort();
    pl_sbuf_fini(&whole.content);
    pl_sbuf_fini(&whole.calls);
    pl_sbuf_fini(&parts.content);
    pl_sbuf_fini(&parts.calls);
    return 0;
}
