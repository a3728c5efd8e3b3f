/*
 * test_safetensors.c -- safetensors open / validate / lookup, single and sharded.
 *
 * Files are written by tests/unit/st_write.h following the format's published
 * description (8-byte LE header length, JSON header, data section, offsets
 * relative to the data section). Element values are checked against their
 * IEEE bit patterns (bf16 0x3FC0 = 1.5, f16 0x3C00 = 1.0, ...), computed by
 * hand, not by the code under test. Every refusal is checked for its status
 * and for a message naming the file and, where one is at fault, the tensor.
 */
#include "model/safetensors.h"

#include "st_write.h"
#include "test.h"

#include <stdint.h>

static char *g_dir;

static void test_valid_file(void)
{
    const float a[6] = {0.f, 1.f, 2.f, 3.f, 4.f, 5.f};
    const uint16_t b[4] = {0x3FC0 /* 1.5 */, 0xC000 /* -2 */, 0x0000, 0x7F80 /* +inf */};
    const uint16_t c[1] = {0xC200 /* f16 -3.0 */};
    struct tw_tensor t[] = {
        {"model.b", "BF16", 1, {4}, b, sizeof(b)},
        {"model.a", "F32", 2, {2, 3}, a, sizeof(a)},
        {"model.c", "F16", 0, {0}, c, sizeof(c)}, /* a scalar: shape [] */
        {"model.empty", "F32", 2, {0, 5}, NULL, 0},
    };
    const char *path = tw_path(g_dir, "valid.safetensors");
    REQUIRE(tw_write_tensors(path, t, 4) == 0);

    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    pl_status s = pl_safetensors_open_file(path, &st, &err);
    CHECKF(s == PL_STATUS_OK, "%s", err.msg);
    REQUIRE(st);
    CHECK(pl_safetensors_count(st) == 4);

    const struct pl_tensor_info *ta = pl_safetensors_find(st, "model.a");
    REQUIRE(ta);
    CHECK(ta->dtype == PL_DTYPE_F32);
    CHECK(ta->n_dims == 2 && ta->shape[0] == 2 && ta->shape[1] == 3);
    CHECK(ta->n_elements == 6 && ta->n_bytes == 24);
    CHECK(strcmp(ta->file, path) == 0);
    for (int i = 0; i < 6; i++)
        CHECK(pl_dtype_get_f32(ta->data, ta->dtype, (size_t)i) == (float)i);

    const struct pl_tensor_info *tb = pl_safetensors_find(st, "model.b");
    REQUIRE(tb);
    CHECK(tb->dtype == PL_DTYPE_BF16 && tb->n_dims == 1 && tb->shape[0] == 4);
    CHECK(pl_dtype_get_f32(tb->data, tb->dtype, 0) == 1.5f);
    CHECK(pl_dtype_get_f32(tb->data, tb->dtype, 1) == -2.0f);
    CHECK(pl_dtype_get_f32(tb->data, tb->dtype, 2) == 0.0f);
    CHECK(isinf(pl_dtype_get_f32(tb->data, tb->dtype, 3)));
    /* b was written first (8 bytes at the start of the data section), a right after */
    CHECK((const char *)ta->data == (const char *)tb->data + 8);

    const struct pl_tensor_info *tc = pl_safetensors_find(st, "model.c");
    REQUIRE(tc);
    CHECK(tc->dtype == PL_DTYPE_F16 && tc->n_dims == 0 && tc->n_elements == 1);
    CHECK(pl_dtype_get_f32(tc->data, tc->dtype, 0) == -3.0f);

    const struct pl_tensor_info *te = pl_safetensors_find(st, "model.empty");
    REQUIRE(te);
    CHECK(te->n_elements == 0 && te->n_bytes == 0);

    CHECK(pl_safetensors_find(st, "model.d") == NULL);
    CHECK(pl_safetensors_find(st, "") == NULL);
    CHECK(pl_safetensors_find(st, "__metadata__") == NULL);
    CHECK(pl_safetensors_at(st, 4) == NULL && pl_safetensors_at(st, -1) == NULL);
    /* every index is reachable and findable by its own name */
    for (int i = 0; i < pl_safetensors_count(st); i++) {
        const struct pl_tensor_info *ti = pl_safetensors_at(st, i);
        REQUIRE(ti);
        CHECK(pl_safetensors_find(st, ti->name) == ti);
    }
    pl_safetensors_free(st);
    pl_safetensors_free(NULL);
}

/* Many tensors: lookup must find each one (exercises the sorted index). */
static void test_many_tensors(void)
{
    enum { N = 3000 };
    static float vals[N];
    static struct tw_tensor t[N];
    static char names[N][48];
    for (int i = 0; i < N; i++) {
        vals[i] = (float)i;
        snprintf(names[i], sizeof(names[i]), "model.layers.%d.w", (i * 7919) % N);
        t[i] = (struct tw_tensor){names[i], "F32", 1, {1}, &vals[i], 4};
    }
    const char *path = tw_path(g_dir, "many.safetensors");
    REQUIRE(tw_write_tensors(path, t, N) == 0);
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK);
    CHECK(pl_safetensors_count(st) == N);
    for (int i = 0; i < N; i++) {
        const struct pl_tensor_info *ti = pl_safetensors_find(st, names[i]);
        CHECKF(ti && pl_dtype_get_f32(ti->data, ti->dtype, 0) == (float)i, "%s", names[i]);
    }
    pl_safetensors_free(st);
}

struct bad_case {
    const char *what;
    const char *header;  /* NULL: see raw fields */
    size_t data_len;     /* zero bytes of data after the header */
    pl_status want;
    const char *tensor;  /* must appear in the message (NULL: only the file) */
};

static void check_bad_file(const char *path, pl_status want, const char *tensor, const char *what)
{
    struct pl_safetensors *st = (struct pl_safetensors *)&st; /* must be reset to NULL */
    struct pl_err err = {0};
    pl_status s = pl_safetensors_open_file(path, &st, &err);
    CHECKF(s == want, "%s: got status %d (%s), want %d", what, s, err.msg, want);
    CHECKF(st == NULL, "%s: out not cleared", what);
    CHECKF(strstr(err.msg, path) != NULL, "%s: message does not name the file: %s", what,
           err.msg);
    if (tensor)
        CHECKF(strstr(err.msg, tensor) != NULL, "%s: message does not name '%s': %s", what,
               tensor, err.msg);
}

static void test_malformed_headers(void)
{
    static const struct bad_case cases[] = {
        {"not json", "{\"w\": {\"dtype\": ", 0, PL_STATUS_FORMAT, NULL},
        {"not an object", "[1, 2, 3]", 0, PL_STATUS_FORMAT, NULL},
        {"entry not object", "{\"w\": 5}", 0, PL_STATUS_FORMAT, "'w'"},
        {"dtype missing", "{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"dtype not string", "{\"w\": {\"dtype\": 7, \"shape\": [1], \"data_offsets\": [0, 4]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"dtype unknown", "{\"w\": {\"dtype\": \"Q4_K\", \"shape\": [1], \"data_offsets\": [0, 4]}}",
         8, PL_STATUS_FORMAT, "Q4_K"},
        {"dtype U64", "{\"pos\": {\"dtype\": \"U64\", \"shape\": [1], \"data_offsets\": [0, 8]}}", 8,
         PL_STATUS_UNSUPPORTED, "'pos'"},
        {"dtype F8 e5m2", "{\"w8\": {\"dtype\": \"F8_E5M2\", \"shape\": [4], \"data_offsets\": [0, 4]}}",
         8, PL_STATUS_UNSUPPORTED, "F8_E5M2"},
        {"shape missing", "{\"w\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"shape not array", "{\"w\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}",
         16, PL_STATUS_FORMAT, "'w'"},
        {"negative dim", "{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}",
         8, PL_STATUS_FORMAT, "'w'"},
        {"non-integer dim",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"too many dims",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}",
         8, PL_STATUS_FORMAT, "'w'"},
        {"element count overflow",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 2], "
         "\"data_offsets\": [0, 0]}}",
         8, PL_STATUS_FORMAT, "'w'"},
        {"byte size overflow",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 1], "
         "\"data_offsets\": [0, 0]}}",
         8, PL_STATUS_FORMAT, "'w'"},
        {"offsets missing", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1]}}", 8, PL_STATUS_FORMAT,
         "'w'"},
        {"offsets wrong length",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"offsets negative",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"offsets not integers",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\"0\", 4]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"begin after end", "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}",
         8, PL_STATUS_FORMAT, "'w'"},
        {"end beyond data",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8,
         PL_STATUS_FORMAT, "'w'"},
        {"size mismatch", "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}",
         16, PL_STATUS_FORMAT, "'w'"},
        {"overlap",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
         " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
         16, PL_STATUS_FORMAT, "'b'"},
        {"overlap listed in reverse",
         "{\"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [12, 20]},"
         " \"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}",
         24, PL_STATUS_FORMAT, "'a'"},
        {"duplicate name",
         "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
         " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
         8, PL_STATUS_FORMAT, NULL},
        {"metadata not object", "{\"__metadata__\": [1]}", 0, PL_STATUS_FORMAT, "__metadata__"},
        {"metadata value not string", "{\"__metadata__\": {\"format\": 1}}", 0, PL_STATUS_FORMAT,
         "format"},
        {"misaligned F32",
         "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [2, 6]}}", 8,
         PL_STATUS_UNSUPPORTED, "'w'"},
    };
    static const unsigned char zeros[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *path = tw_path(g_dir, "bad.safetensors");
        REQUIRE(tw_write_raw(path, cases[i].header, UINT64_MAX, zeros, cases[i].data_len) == 0);
        check_bad_file(path, cases[i].want, cases[i].tensor, cases[i].what);
    }
}

static void test_zero_size_tensors_do_not_overlap(void)
{
    /* An empty tensor at an offset inside another one owns no bytes. */
    static const unsigned char zeros[16];
    const char *path = tw_path(g_dir, "empty.safetensors");
    REQUIRE(tw_write_raw(path,
                         "{\"a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
                         " \"e\": {\"dtype\": \"BF16\", \"shape\": [0], \"data_offsets\": [8, 8]}}",
                         UINT64_MAX, zeros, 16) == 0);
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    CHECKF(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK, "%s", err.msg);
    CHECK(pl_safetensors_count(st) == 2);
    pl_safetensors_free(st);
}

static void test_bad_lengths(void)
{
    const char *path = tw_path(g_dir, "short.safetensors");
    /* shorter than the 8-byte length field */
    REQUIRE(tw_write_file(path, "\x02\0\0\0\0", 5) == 0);
    check_bad_file(path, PL_STATUS_FORMAT, NULL, "5-byte file");
    REQUIRE(tw_write_file(path, "", 0) == 0);
    check_bad_file(path, PL_STATUS_FORMAT, NULL, "empty file");
    /* N larger than the limit */
    REQUIRE(tw_write_raw(path, "{}", (uint64_t)PL_SAFETENSORS_MAX_HEADER + 1, NULL, 0) == 0);
    check_bad_file(path, PL_STATUS_FORMAT, NULL, "N over the limit");
    /* N larger than the file */
    REQUIRE(tw_write_raw(path, "{}", 4096, NULL, 0) == 0);
    check_bad_file(path, PL_STATUS_FORMAT, NULL, "N beyond the file");
    REQUIRE(tw_write_raw(path, "{}", UINT64_MAX - 1, NULL, 0) == 0);
    check_bad_file(path, PL_STATUS_FORMAT, NULL, "N near 2^64");
    /* an empty header object with nothing after it is a valid, empty file */
    REQUIRE(tw_write_raw(path, "{}", UINT64_MAX, NULL, 0) == 0);
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    CHECKF(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK, "%s", err.msg);
    CHECK(pl_safetensors_count(st) == 0 && pl_safetensors_find(st, "x") == NULL);
    pl_safetensors_free(st);
    /* a file that does not exist, and a directory */
    struct pl_err err2 = {0};
    st = NULL;
    CHECK(pl_safetensors_open_file(tw_path(g_dir, "nope.safetensors"), &st, &err2) ==
          PL_STATUS_NOT_FOUND);
    CHECK(strstr(err2.msg, "nope.safetensors") != NULL);
    CHECK(pl_safetensors_open_file(g_dir, &st, &err2) == PL_STATUS_IO);
}

static void test_parse_header_in_memory(void)
{
    const char *h = "{\"x\": {\"dtype\": \"BF16\", \"shape\": [2, 2], \"data_offsets\": [8, 16]},"
                    " \"y\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}";
    _Alignas(8) unsigned char data[16] = {0};
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_safetensors_parse_header(h, strlen(h), data, sizeof(data), "mem", &st, &err) ==
            PL_STATUS_OK);
    const struct pl_tensor_info *x = pl_safetensors_find(st, "x");
    REQUIRE(x);
    CHECK((const unsigned char *)x->data == data + 8 && x->n_bytes == 8);
    CHECK(strcmp(x->file, "mem") == 0);
    pl_safetensors_free(st);

    /* validation only: no data, out may be NULL */
    CHECK(pl_safetensors_parse_header(h, strlen(h), NULL, 16, "mem", NULL, &err) == PL_STATUS_OK);
    st = NULL;
    REQUIRE(pl_safetensors_parse_header(h, strlen(h), NULL, 16, NULL, &st, &err) == PL_STATUS_OK);
    CHECK(pl_safetensors_find(st, "y")->data == NULL);
    pl_safetensors_free(st);
    /* the data section is one byte too short for x */
    CHECK(pl_safetensors_parse_header(h, strlen(h), NULL, 15, "mem", NULL, &err) ==
          PL_STATUS_FORMAT);
    CHECK(strstr(err.msg, "mem") && strstr(err.msg, "'x'"));
}

/* ---- sharded checkpoints ---- */

static const float s1a[2] = {1.f, 2.f}, s1b[3] = {3.f, 4.f, 5.f}, s2c[1] = {6.f};

static char *make_sharded(const char *index_json)
{
    char *dir = tw_mkdtemp();
    if (!dir)
        return NULL;
    struct tw_tensor sh1[] = {{"a", "F32", 1, {2}, s1a, 8}, {"b", "F32", 1, {3}, s1b, 12}};
    struct tw_tensor sh2[] = {{"c", "F32", 1, {1}, s2c, 4}};
    tw_write_tensors(tw_path(dir, "model-00001-of-00002.safetensors"), sh1, 2);
    tw_write_tensors(tw_path(dir, "model-00002-of-00002.safetensors"), sh2, 1);
    tw_write_text(tw_path(dir, "model.safetensors.index.json"), index_json);
    return dir;
}

static void check_bad_dir(const char *index_json, pl_status want, const char *n1, const char *n2,
                          const char *what)
{
    char *dir = make_sharded(index_json);
    REQUIRE(dir);
    struct pl_safetensors *st = (struct pl_safetensors *)&st;
    struct pl_err err = {0};
    pl_status s = pl_safetensors_open_dir(dir, &st, &err);
    CHECKF(s == want, "%s: status %d (%s)", what, s, err.msg);
    CHECKF(st == NULL, "%s: out not cleared", what);
    if (n1)
        CHECKF(strstr(err.msg, n1) != NULL, "%s: message lacks '%s': %s", what, n1, err.msg);
    if (n2)
        CHECKF(strstr(err.msg, n2) != NULL, "%s: message lacks '%s': %s", what, n2, err.msg);
    tw_rmdir(dir);
}

#define SH1 "model-00001-of-00002.safetensors"
#define SH2 "model-00002-of-00002.safetensors"

/* The dtypes of quantized checkpoints: int32 packed weights, int64 shapes, fp8 weights, a
 * scalar scale (shape []), int8/uint8 side tensors. */
static void test_quantized_dtypes(void)
{
    const char *h = "{\"qw\": {\"dtype\": \"I32\", \"shape\": [2, 2], \"data_offsets\": [0, 16]}, "
                    "\"ws\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [16, 32]}, "
                    "\"w8\": {\"dtype\": \"F8_E4M3\", \"shape\": [2, 4], \"data_offsets\": [32, 40]}, "
                    "\"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [40, 44]}, "
                    "\"z\": {\"dtype\": \"I8\", \"shape\": [2], \"data_offsets\": [44, 46]}, "
                    "\"u\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [46, 48]}}";
    static const char data[48];
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_safetensors_parse_header(h, strlen(h), data, sizeof(data), "mem", &st, &err) ==
            PL_STATUS_OK);
    CHECK(pl_safetensors_find(st, "qw")->dtype == PL_DTYPE_I32);
    CHECK(pl_safetensors_find(st, "ws")->dtype == PL_DTYPE_I64);
    CHECK(pl_safetensors_find(st, "w8")->dtype == PL_DTYPE_F8_E4M3 &&
          pl_safetensors_find(st, "w8")->n_bytes == 8);
    CHECK(pl_safetensors_find(st, "s")->n_dims == 0 && pl_safetensors_find(st, "s")->n_elements == 1);
    CHECK(pl_safetensors_find(st, "z")->dtype == PL_DTYPE_I8);
    CHECK(pl_safetensors_find(st, "u")->dtype == PL_DTYPE_U8);
    pl_safetensors_free(st);
    /* a wrong byte count for the dtype is still refused */
    const char *bad = "{\"w8\": {\"dtype\": \"F8_E4M3\", \"shape\": [2, 4], \"data_offsets\": [0, 16]}}";
    CHECK(pl_safetensors_parse_header(bad, strlen(bad), data, sizeof(data), "mem", NULL, &err) ==
          PL_STATUS_FORMAT);
}

static void test_sharded_valid(void)
{
    char *dir = make_sharded("{\"metadata\": {\"total_size\": 24}, \"weight_map\": {"
                             "\"a\": \"" SH1 "\", \"b\": \"" SH1 "\", \"c\": \"" SH2 "\"}}");
    REQUIRE(dir);
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    pl_status s = pl_safetensors_open_dir(dir, &st, &err);
    CHECKF(s == PL_STATUS_OK, "%s", err.msg);
    REQUIRE(st);
    CHECK(pl_safetensors_count(st) == 3);
    const struct pl_tensor_info *a = pl_safetensors_find(st, "a");
    const struct pl_tensor_info *b = pl_safetensors_find(st, "b");
    const struct pl_tensor_info *c = pl_safetensors_find(st, "c");
    REQUIRE(a && b && c);
    CHECK(strstr(a->file, SH1) && strstr(b->file, SH1) && strstr(c->file, SH2));
    CHECK(a->file == b->file); /* one shard, opened once */
    CHECK(pl_dtype_get_f32(a->data, a->dtype, 1) == 2.f);
    CHECK(pl_dtype_get_f32(b->data, b->dtype, 2) == 5.f);
    CHECK(pl_dtype_get_f32(c->data, c->dtype, 0) == 6.f);
    pl_safetensors_free(st);
    tw_rmdir(dir);
}

static void test_sharded_errors(void)
{
    check_bad_dir("{\"weight_map\": {\"a\": \"" SH1 "\", \"z\": \"model-00003-of-00003.safetensors\"}}",
                  PL_STATUS_NOT_FOUND, "model-00003-of-00003.safetensors", NULL, "missing shard");
    check_bad_dir("{\"weight_map\": {\"a\": \"" SH1 "\", \"d\": \"" SH1 "\"}}", PL_STATUS_FORMAT,
                  "'d'", SH1, "tensor missing from its shard");
    check_bad_dir("{\"weight_map\": {\"a\": \"" SH1 "\", \"c\": \"" SH1 "\", \"x\": \"" SH2 "\"}}",
                  PL_STATUS_FORMAT, "'c'", SH2, "tensor in the other shard");
    check_bad_dir("{\"weight_map\": {\"a\": \"../" SH1 "\"}}", PL_STATUS_FORMAT, "../" SH1, "'a'",
                  "parent traversal");
    check_bad_dir("{\"weight_map\": {\"a\": \"/etc/passwd\"}}", PL_STATUS_FORMAT, "/etc/passwd",
                  NULL, "absolute path");
    check_bad_dir("{\"weight_map\": {\"a\": \"sub/../../x.safetensors\"}}", PL_STATUS_FORMAT,
                  "sub/../../x", NULL, "inner traversal");
    check_bad_dir("{\"weight_map\": {\"a\": \"sub/..\"}}", PL_STATUS_FORMAT, "sub/..", NULL,
                  "trailing ..");
    check_bad_dir("{\"weight_map\": {\"a\": 5}}", PL_STATUS_FORMAT, "'a'", NULL,
                  "shard not a string");
    check_bad_dir("{\"weight_map\": []}", PL_STATUS_FORMAT, "weight_map", NULL,
                  "weight_map not object");
    check_bad_dir("{\"metadata\": {}}", PL_STATUS_FORMAT, "weight_map", NULL, "no weight_map");
    check_bad_dir("{\"weight_map\": {}}", PL_STATUS_FORMAT, "weight_map", NULL, "empty weight_map");
    check_bad_dir("{\"weight_map\": {", PL_STATUS_FORMAT, "model.safetensors.index.json", NULL,
                  "index not JSON");
}

static void test_duplicate_across_shards(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    struct tw_tensor sh1[] = {{"a", "F32", 1, {2}, s1a, 8}};
    struct tw_tensor sh2[] = {{"a", "F32", 1, {1}, s2c, 4}, {"c", "F32", 1, {1}, s2c, 4}};
    tw_write_tensors(tw_path(dir, SH1), sh1, 1);
    tw_write_tensors(tw_path(dir, SH2), sh2, 2);
    tw_write_text(tw_path(dir, "model.safetensors.index.json"),
                  "{\"weight_map\": {\"a\": \"" SH1 "\", \"c\": \"" SH2 "\"}}");
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    CHECK(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_FORMAT);
    CHECK(st == NULL);
    CHECKF(strstr(err.msg, "'a'") && strstr(err.msg, SH1) && strstr(err.msg, SH2), "%s", err.msg);
    tw_rmdir(dir);
}

static void test_open_dir_single_and_missing(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    CHECK(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "model.safetensors") != NULL);
    struct tw_tensor t[] = {{"a", "F32", 1, {2}, s1a, 8}};
    REQUIRE(tw_write_tensors(tw_path(dir, "model.safetensors"), t, 1) == 0);
    CHECK(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_OK);
    CHECK(pl_safetensors_count(st) == 1);
    const struct pl_tensor_info *a = pl_safetensors_find(st, "a");
    CHECK(a && pl_dtype_get_f32(a->data, a->dtype, 0) == 1.f);
    pl_safetensors_free(st);
    tw_rmdir(dir);
}

int main(void)
{
    g_dir = tw_mkdtemp();
    if (!g_dir) {
        fprintf(stderr, "mkdtemp failed\n");
        return 1;
    }
    PL_RUN(test_valid_file);
    PL_RUN(test_many_tensors);
    PL_RUN(test_malformed_headers);
    PL_RUN(test_zero_size_tensors_do_not_overlap);
    PL_RUN(test_bad_lengths);
    PL_RUN(test_parse_header_in_memory);
    PL_RUN(test_quantized_dtypes);
    PL_RUN(test_sharded_valid);
    PL_RUN(test_sharded_errors);
    PL_RUN(test_duplicate_across_shards);
    PL_RUN(test_open_dir_single_and_missing);
    tw_rmdir(g_dir);
    return pl_test_summary();
}
