/*
 * fuzz_tokenizer_encode.c -- arbitrary bytes through two small real tokenizers.
 *
 * Tokenizers: tests/fixtures/tokenizer/small_bytelevel.json (Llama 3 style:
 * regex Split + ByteLevel, added tokens with lstrip/rstrip/single_word and a
 * normalized one, template post-processor) and small_metaspace.json (Llama 2 /
 * Gemma style: Replace normalizer, byte_fallback, fuse_unk, Metaspace decoder
 * chain). The first input byte picks the tokenizer, the rest is the text.
 * Checked properties: encode never fails on any bytes; decode of the ids
 * succeeds; streaming the ids through pl_detok equals the one-shot decode,
 * also with ids past the tokenizer (a padded model vocab) pushed in between;
 * for the byte-level tokenizer (no normalizer) decode(encode(text)) == text
 * whenever text is valid UTF-8 and holds none of its lstrip/rstrip tokens
 * ("<mask>", "[NL]"), which swallow the whitespace next to them by design.
 */
#include "tokenizer/tokenizer.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static struct pl_tokenizer *toks[2];

static struct pl_tokenizer *load_fixture(const char *name)
{
    char path[4096];
    const char *src = getenv("PL_SOURCE_DIR");
    snprintf(path, sizeof(path), "%s/tests/fixtures/tokenizer/%s", src ? src : ".", name);
    struct pl_err err = {0};
    struct pl_tokenizer *t = NULL;
    if (pl_tokenizer_load_files(path, NULL, &t, &err) != PL_STATUS_OK) {
        fprintf(stderr, "fuzz_tokenizer_encode: %s (set PL_SOURCE_DIR)\n", err.msg);
        abort();
    }
    return t;
}

static int valid_utf8(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t need = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : c >= 0xE0 && c <= 0xEF ? 2
                                  : c >= 0xF0 && c <= 0xF4 ? 3 : 9;
        if (need == 9 || i + need >= n + (need ? 0 : 1))
            return 0;
        for (size_t k = 1; k <= need; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        if (need == 2 && ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] > 0x9F)))
            return 0;
        if (need == 3 && ((c == 0xF0 && s[i + 1] < 0x90) || (c == 0xF4 && s[i + 1] > 0x8F)))
            return 0;
        i += need + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!toks[0]) {
        toks[0] = load_fixture("small_bytelevel.json");
        toks[1] = load_fixture("small_metaspace.json");
    }
    if (size == 0)
        return 0;
    int which = data[0] & 1;
    const struct pl_tokenizer *t = toks[which];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    struct pl_err err = {0};
    for (int special = 0; special <= 1; special++) {
        int32_t *ids = NULL;
        int n = 0;
        if (pl_tokenizer_encode(t, text, len, special, &ids, &n, &err) != PL_STATUS_OK) {
            fprintf(stderr, "encode failed: %s\n", err.msg);
            abort();
        }
        for (int skip = 0; skip <= 1; skip++) {
            char *out = NULL;
            size_t out_len = 0;
            if (pl_tokenizer_decode(t, ids, n, skip, &out, &out_len, &err) != PL_STATUS_OK) {
                fprintf(stderr, "decode failed: %s\n", err.msg);
                abort();
            }
            if (which == 0 && !special && !skip && valid_utf8(data + 1, len) &&
                !memmem(text, len, "<mask>", 6) && !memmem(text, len, "[NL]", 4) &&
                (out_len != len || memcmp(out, text, len)))
                abort(); /* byte-level BPE must round-trip */
            struct pl_detok d;
            char *streamed = NULL;
            size_t s_len = 0;
            if (pl_detok_init(&d, t, NULL, 0, skip, &err) != PL_STATUS_OK)
                abort();
            for (int i = 0; i < n; i++)
                if (pl_detok_push(&d, ids[i], &streamed, &s_len, &err) != PL_STATUS_OK)
                    abort();
            if (pl_detok_flush(&d, &streamed, &s_len, &err) != PL_STATUS_OK)
                abort();
            if (s_len != out_len || (out_len && memcmp(streamed, out, out_len)))
                abort(); /* the stream must equal the one-shot decode */
            pl_detok_fini(&d);
            free(streamed);
            /* ids past the tokenizer (a padded model vocab) add nothing, wherever they
             * fall, even inside a character split over tokens */
            streamed = NULL;
            s_len = 0;
            int every = 1 + (data[0] >> 1) % 4;
            int32_t gap = pl_tokenizer_vocab_size(t) + (data[0] >> 3);
            if (pl_detok_init(&d, t, NULL, 0, skip, &err) != PL_STATUS_OK)
                abort();
            for (int i = 0; i < n; i++)
                if (pl_detok_push(&d, ids[i], &streamed, &s_len, &err) != PL_STATUS_OK ||
                    (i % every == 0 && pl_detok_push(&d, gap, &streamed, &s_len, &err)))
                    abort();
            if (pl_detok_flush(&d, &streamed, &s_len, &err) != PL_STATUS_OK)
                abort();
            if (s_len != out_len || (out_len && memcmp(streamed, out, out_len)))
                abort(); /* gap ids must decode to nothing */
            pl_detok_fini(&d);
            free(streamed);
            free(out);
        }
        free(ids);
    }
    return 0;
}
