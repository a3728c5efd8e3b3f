/*
 * fuzz_openai_request.c -- request bodies through the OpenAI route parser
 * (pl_openai_parse) for completions and chat, with the tiny model's tokenizer
 * and ChatML template: no crash, no leak, and the invariants that a failure
 * always carries a 4xx status and a message, and a success has at least one
 * prompt whose ids and max_tokens fit the context. The error object and SSE
 * framing of whatever message comes out are built too.
 * The first byte picks the route: 'e' /v1/embeddings and 'r' /v1/responses
 * (through pl_openai_gen_new, which parses them; no engine), 's' the reasoning
 * splitter (next byte: the parser, then two cut positions, then the text:
 * split in three pieces it must equal the whole, and lose only tag bytes);
 * otherwise even: completions, odd: chat.
 */
#include "../unit/openai_fixture.h"
#include "server/reasoning.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_MODEL_LEN 256

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct pl_tokenizer *tok;
static struct pl_openai *oai;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    oai = openai_fixture_new(300, "other", "/m", MAX_MODEL_LEN, &tok);
    return 0;
}

static void check_error(const struct pl_openai_error *e)
{
    if (e->status < 400 || e->status >= 600 || !e->message[0])
        abort();
}

static void fuzz_reasoning(const uint8_t *data, size_t size)
{
    if (size < 3)
        return;
    enum pl_reasoning_kind kind = (data[0] & 1) ? PL_REASONING_DEEPSEEK_R1 : PL_REASONING_QWEN3;
    const char *text = (const char *)data + 3;
    size_t len = size - 3;
    size_t a = len ? data[1] % (len + 1) : 0, b = len ? data[2] % (len + 1) : 0;
    if (a > b) {
        size_t t = a;
        a = b, b = t;
    }
    struct pl_sbuf r1 = {0}, c1 = {0}, r2 = {0}, c2 = {0};
    pl_reasoning_split(kind, text, len, &r1, &c1);
    struct pl_reasoning p;
    pl_reasoning_init(&p, kind);
    pl_reasoning_feed(&p, text, a, &r2, &c2);
    pl_reasoning_feed(&p, text + a, b - a, &r2, &c2);
    pl_reasoning_feed(&p, text + b, len - b, &r2, &c2);
    pl_reasoning_finish(&p, &r2, &c2);
    if (r1.len != r2.len || c1.len != c2.len || (r1.len && memcmp(r1.data, r2.data, r1.len)) ||
        (c1.len && memcmp(c1.data, c2.data, c1.len)))
        abort(); /* the split depends on how the text was cut */
    size_t gone = len - (r1.len + c1.len);
    if (r1.len + c1.len > len || (gone != 0 && gone != 7 && gone != 8 && gone != 15))
        abort(); /* only one "<think>" (7) and one "</think>" (8) may go */
    pl_sbuf_fini(&r1), pl_sbuf_fini(&c1), pl_sbuf_fini(&r2), pl_sbuf_fini(&c2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] == 's') {
        fuzz_reasoning(data + 1, size - 1);
        return 0;
    }
    if (data[0] == 'e' || data[0] == 'r') {
        struct pl_openai_gen *g = NULL;
        struct pl_openai_error e;
        pl_status st = pl_openai_gen_new(oai, data[0] == 'e' ? PL_OPENAI_EMBEDDING
                                                             : PL_OPENAI_RESPONSES,
                                         (const char *)data + 1, size - 1, &g, &e);
        if (st == PL_STATUS_OK) {
            if (!g)
                abort();
            (void)pl_openai_gen_is_stream(g);
            pl_openai_gen_free(g);
        } else {
            check_error(&e);
        }
        return 0;
    }
    enum pl_openai_kind kind = (data[0] & 1) ? PL_OPENAI_CHAT : PL_OPENAI_COMPLETION;
    struct pl_openai_request r;
    struct pl_openai_error e;
    pl_status st = pl_openai_parse(oai, kind, (const char *)data + 1, size - 1, &r, &e);
    if (st == PL_STATUS_OK) {
        if (r.n_prompts < 1 || !r.model)
            abort();
        for (int i = 0; i < r.n_prompts; i++) {
            const struct pl_openai_prompt *p = &r.prompts[i];
            if (p->n_ids < 1 || p->max_tokens < 1 || p->n_ids + p->max_tokens > MAX_MODEL_LEN)
                abort();
            for (int k = 0; k < p->n_ids; k++)
                if (p->ids[k] < 0 || p->ids[k] >= pl_tokenizer_vocab_size(tok))
                    abort();
        }
        pl_openai_request_fini(&r);
    } else {
        if (e.status < 400 || e.status >= 600 || !e.message[0])
            abort();
        size_t len = 0;
        char *body = pl_http_error_json(e.status, e.type, e.param[0] ? e.param : NULL,
                                        e.message, &len);
        if (!body)
            abort();
        struct pl_sbuf b = {0};
        pl_openai_sse_data(&b, body, len);
        if (b.len < len + 8)
            abort();
        pl_sbuf_fini(&b);
        free(body);
    }
    return 0;
}
