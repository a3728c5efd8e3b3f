/*
 * fuzz_openai_request.c -- request bodies through the OpenAI route parser
 * (pl_openai_parse) for completions and chat, with the tiny model's tokenizer
 * and ChatML template: no crash, no leak, and the invariants that a failure
 * always carries a 4xx status and a message, and a success has at least one
 * prompt whose ids and max_tokens fit the context. The error object and SSE
 * framing of whatever message comes out are built too.
 * The first byte picks the route (even: completions, odd: chat).
 */
#include "../unit/openai_fixture.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
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
