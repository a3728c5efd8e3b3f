/*
 * fuzz_chat_template.c -- libFuzzer target for the chat template parser and interpreter.
 *
 * Input: template bytes, then optionally a NUL byte and a JSON context. When the
 * context is missing or not a JSON object, a small default conversation is used so
 * that templates written against messages still run deep. Small limits keep each
 * run fast; any crash, leak, sanitizer report or hang is a bug: templates are
 * untrusted and must only ever fail with a message.
 */
#include "tokenizer/chat_template/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char DEFAULT_CTX[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"}, {\"role\": \"user\", \"content\": \"hi <think>x</think>\"},"
    " {\"role\": \"assistant\", \"content\": \"yo\", \"tool_calls\": [{\"function\": {\"name\": \"f\", \"arguments\": {\"a\": 1}}}]},"
    " {\"role\": \"tool\", \"content\": \"r\"}], \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\"}}],"
    " \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": true, \"n\": 1.5}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    json_t *ctx = NULL;
    if (nul)
        ctx = json_loadb((const char *)nul + 1, size - tlen - 1, 0, NULL);
    if (!json_is_object(ctx)) {
        json_decref(ctx);
        ctx = json_loads(DEFAULT_CTX, 0, NULL);
    }
    struct pl_err err = {0};
    struct pl_chat_template *t = NULL;
    if (pl_chat_template_parse((const char *)data, tlen, &t, &err) == PL_STATUS_OK) {
        struct pl_chat_template_limits lim = {
            .max_loop_iterations = 20000, .max_depth = 16, .max_output_bytes = 1 << 16};
        char *out = NULL;
        size_t n = 0;
        if (pl_chat_template_render(t, ctx, &lim, &out, &n, &err) == PL_STATUS_OK) {
            if (!out || out[n] != '\0')
                abort(); /* the contract: NUL-terminated at out_len */
        }
        free(out);
    }
    pl_chat_template_free(t);
    json_decref(ctx);
    return 0;
}
