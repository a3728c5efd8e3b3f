/*
 * fuzz_tokenizer_load.c -- tokenizer.json (+ tokenizer_config.json) bytes -> loader.
 *
 * The input is a tokenizer.json, optionally followed by "\n\x01\n" and a
 * tokenizer_config.json. A file that loads is then used once: encode a fixed
 * text with and without special tokens, decode the ids both ways. Anything
 * other than a clean error or success (crash, leak, UB) is a finding.
 */
#include "tokenizer/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *sep = size >= 3 ? memmem(text, size, "\n\x01\n", 3) : NULL;
    size_t tj_len = sep ? (size_t)(sep - text) : size;
    const char *cfg = sep ? sep + 3 : NULL;
    size_t cfg_len = sep ? size - tj_len - 3 : 0;
    struct pl_err err = {0};
    struct pl_tokenizer *tok = NULL;
    if (pl_tokenizer_load_mem(text, tj_len, cfg, cfg_len, &tok, &err) != PL_STATUS_OK)
        return 0;
    static const char sample[] = "Hello wörld <s> 12345 日本 😀  \n\t<|im_start|>x";
    for (int special = 0; special <= 1; special++) {
        int32_t *ids = NULL;
        int n = 0;
        if (pl_tokenizer_encode(tok, sample, sizeof(sample) - 1, special, &ids, &n, &err) ==
            PL_STATUS_OK) {
            for (int skip = 0; skip <= 1; skip++) {
                char *out = NULL;
                size_t len = 0;
                if (pl_tokenizer_decode(tok, ids, n, skip, &out, &len, &err) == PL_STATUS_OK)
                    free(out);
            }
            free(ids);
        }
    }
    pl_tokenizer_free(tok);
    return 0;
}
