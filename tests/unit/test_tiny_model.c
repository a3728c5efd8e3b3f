/*
 * test_tiny_model.c -- the tiny model generator: reproducible, well-formed files.
 *
 * Checks that each preset written twice gives byte-identical files; that the
 * safetensors files follow the format (read here independently of the
 * project's loader: 8-byte little-endian header length, header padded with
 * spaces to 8 bytes, names sorted, data laid out contiguously, the dtype the
 * preset says, the tensor set and shapes the architecture needs, plausible
 * value statistics); that config.json says what the preset says, both read as
 * plain JSON and through pl_model_config_load, and that pl_safetensors_open_dir
 * accepts every preset (sharded included); and that the default model's
 * tokenizer files have the Llama 3 byte-level BPE structure with vocab_size
 * covering every id.
 */
#include "test.h"

#include "model/config.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"
#include "util/dtype.h"
#include "util/sha256.h"

#include <dirent.h>
#include <sys/stat.h>
#include <jansson.h>
#include <stdint.h>
#include <unistd.h>

static char g_tmp[] = "/tmp/pl_tiny_XXXXXX";

/* Writes preset into g_tmp/<sub>/<preset>; returns the directory (static buffer). */
static const char *write_preset(const char *preset, const char *sub)
{
    static char dir[2][1024];
    static int which;
    char *d = dir[which ^= 1];
    snprintf(d, sizeof(dir[0]), "%s/%s/%s", g_tmp, sub, preset);
    struct pl_err err = {0};
    pl_status st = pl_tiny_model_write(preset, d, &err);
    CHECKF(st == PL_STATUS_OK, "%s: %s", preset, err.msg);
    return st == PL_STATUS_OK ? d : NULL;
}

static json_t *load_json(const char *dir, const char *name)
{
    char path[2048];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    CHECKF(j != NULL, "%s: %s", path, jerr.text);
    return j;
}

static int jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

static void test_preset_list(void)
{
    int n = 0;
    const char *const *names = pl_tiny_model_list_presets(&n);
    CHECK(n >= 15);
    CHECK(names[n] == NULL);
    int golden = 0;
    for (int i = 0; i < n; i++) {
        CHECKF(pl_tiny_model_describe(names[i]) != NULL, "%s", names[i]);
        golden += pl_tiny_model_is_golden(names[i]);
        CHECKF(pl_tiny_model_family(names[i]) != NULL, "%s", names[i]);
    }
    CHECK(golden == 20); /* 13 Llama-family presets, 2 Phi-3, 2 Gemma, 3 MoE */
    CHECK(!strcmp(pl_tiny_model_family("phi3-partial"), "phi3"));
    CHECK(pl_tiny_model_family("no-such-preset") == NULL);
    CHECK(!pl_tiny_model_is_golden("default") && !pl_tiny_model_is_golden("bench-100m"));
    struct pl_err err = {0};
    CHECK(pl_tiny_model_write("no-such-preset", "/tmp/unused", &err) == PL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "no-such-preset") != NULL);
    CHECK(pl_tiny_model_describe("no-such-preset") == NULL);
    struct pl_tiny_prompt p[PL_TINY_MAX_PROMPTS];
    int np = 0;
    CHECK(pl_tiny_model_prompts("default", p, &np, &err) == PL_STATUS_NOT_FOUND);
}

static void test_prompts(void)
{
    int n = 0;
    const char *const *names = pl_tiny_model_list_presets(&n);
    for (int i = 0; i < n; i++) {
        if (!pl_tiny_model_is_golden(names[i]))
            continue;
        struct pl_tiny_prompt a[PL_TINY_MAX_PROMPTS], b[PL_TINY_MAX_PROMPTS];
        int na = 0, nb = 0;
        REQUIRE(pl_tiny_model_prompts(names[i], a, &na, NULL) == PL_STATUS_OK);
        REQUIRE(pl_tiny_model_prompts(names[i], b, &nb, NULL) == PL_STATUS_OK);
        CHECK(na >= 4 && na <= 6 && na == nb);
        CHECK(!memcmp(a, b, sizeof(a[0]) * (size_t)na)); /* deterministic */
        int shortest = 1000, longest = 0, beyond_window = 0;
        for (int k = 0; k < na; k++) {
            shortest = a[k].n_ids < shortest ? a[k].n_ids : shortest;
            longest = a[k].n_ids > longest ? a[k].n_ids : longest;
            beyond_window += a[k].n_ids > 8;
            CHECK(a[k].max_tokens >= 8 && a[k].max_tokens <= 16);
            for (int t = 0; t < a[k].n_ids; t++)
                CHECK(a[k].ids[t] >= 0 && a[k].ids[t] < 512);
        }
        CHECK(shortest == 1 && longest >= 32 && longest <= 64 && beyond_window >= 2);
    }
}

/* Every file in dir a has an identical twin in dir b (and the counts match). */
static void check_same_dirs(const char *a, const char *b)
{
    DIR *d = opendir(a);
    REQUIRE(d);
    int files = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char pa[2048], pb[2048], ha[PL_SHA256_HEX_LEN], hb[PL_SHA256_HEX_LEN];
        snprintf(pa, sizeof(pa), "%s/%s", a, e->d_name);
        snprintf(pb, sizeof(pb), "%s/%s", b, e->d_name);
        CHECK(pl_sha256_file_hex(pa, ha, NULL) == PL_STATUS_OK);
        CHECKF(pl_sha256_file_hex(pb, hb, NULL) == PL_STATUS_OK && !strcmp(ha, hb), "%s", pa);
        files++;
    }
    closedir(d);
    CHECK(files >= 3);
}

static void test_reproducible(void)
{
    int n = 0;
    const char *const *names = pl_tiny_model_list_presets(&n);
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], "bench-100m"))
            continue; /* 200 MB: listed, written by benchmarks, not rewritten here */
        const char *a = write_preset(names[i], "a");
        const char *b = write_preset(names[i], "b");
        if (a && b)
            check_same_dirs(a, b);
    }
    /* writing over an existing directory gives the same files again */
    const char *a = write_preset("llama", "a");
    const char *b = write_preset("llama", "b");
    if (a && b)
        check_same_dirs(a, b);
}

struct expect {
    const char *preset;
    const char *arch, *model_type, *dtype;
    int hidden, layers, heads, kv_heads, head_dim, vocab;
    bool tied, qkv_bias, qk_norm;
    int n_shards;
};

static const struct expect EXPECT[] = {
    {"llama", "LlamaForCausalLM", "llama", "BF16", 64, 2, 4, 2, 16, 512, false, false, false, 1},
    {"llama-mha-tied", "LlamaForCausalLM", "llama", "BF16", 64, 2, 4, 4, 16, 512, true, false,
     false, 1},
    {"llama3-rope", "LlamaForCausalLM", "llama", "BF16", 64, 2, 4, 2, 32, 512, false, false, false,
     1},
    {"llama-f16", "LlamaForCausalLM", "llama", "F16", 64, 2, 4, 2, 16, 512, false, false, false, 1},
    {"llama-f32", "LlamaForCausalLM", "llama", "F32", 64, 2, 4, 2, 16, 512, false, false, false, 1},
    {"llama-sharded", "LlamaForCausalLM", "llama", "BF16", 64, 3, 4, 2, 16, 512, false, false,
     false, 2},
    {"mistral-swa", "MistralForCausalLM", "mistral", "BF16", 128, 2, 8, 2, 16, 512, false, false,
     false, 1},
    {"qwen2", "Qwen2ForCausalLM", "qwen2", "BF16", 64, 2, 4, 2, 16, 512, true, true, false, 1},
    {"qwen3", "Qwen3ForCausalLM", "qwen3", "BF16", 64, 2, 4, 2, 32, 512, false, false, true, 1},
    {"qwen2-swa", "Qwen2ForCausalLM", "qwen2", "BF16", 64, 3, 4, 2, 16, 512, true, true, false, 1},
    {"default", "LlamaForCausalLM", "llama", "BF16", 256, 4, 8, 4, 32, 960, false, false, false, 1},
};

struct seen_tensor {
    char name[96];
    int64_t shape[2];
    int n_dims;
};

/* Reads one safetensors file by hand and checks the format rules; appends its tensors. */
static void check_safetensors_file(const char *path, const char *dtype, struct seen_tensor *seen,
                                   int *n_seen, double *norm_mean_err, double *proj_std)
{
    FILE *f = fopen(path, "rb");
    REQUIRE(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc((size_t)size);
    REQUIRE(buf && fread(buf, 1, (size_t)size, f) == (size_t)size);
    fclose(f);
    uint64_t hl = 0;
    for (int k = 0; k < 8; k++)
        hl |= (uint64_t)buf[k] << (8 * k);
    CHECK(hl % 8 == 0);
    CHECK(8 + hl <= (uint64_t)size);
    char *hdr = malloc(hl + 1);
    memcpy(hdr, buf + 8, hl);
    hdr[hl] = '\0';
    size_t end = hl;
    while (end > 0 && hdr[end - 1] == ' ')
        end--;
    CHECK(end > 0 && hdr[end - 1] == '}' && hl - end < 8); /* padding: spaces, under 8 */
    json_error_t jerr;
    json_t *h = json_loadb(hdr, hl, 0, &jerr);
    CHECKF(h != NULL, "%s: header: %s", path, jerr.text);
    const unsigned char *data = buf + 8 + hl;
    uint64_t data_len = (uint64_t)size - 8 - hl;
    json_t *meta = json_object_get(h, "__metadata__");
    CHECK(json_is_string(json_object_get(meta, "format")));
    /* names sorted and data contiguous in that order: walk names by position in the text */
    const char *prev_name = "";
    uint64_t expect_off = 0;
    size_t n = json_object_size(h) - 1;
    for (size_t i = 0; i < n; i++) {
        const char *best = NULL;
        json_t *best_v = NULL;
        const char *key;
        json_t *v;
        json_object_foreach(h, key, v) {
            if (!strcmp(key, "__metadata__") || strcmp(key, prev_name) <= 0)
                continue;
            if (!best || strcmp(key, best) < 0) {
                best = key;
                best_v = v;
            }
        }
        REQUIRE(best);
        char quoted[128];
        snprintf(quoted, sizeof(quoted), "\"%s\":", best);
        char prev_quoted[128];
        snprintf(prev_quoted, sizeof(prev_quoted), "\"%s\":", prev_name);
        if (*prev_name)
            CHECKF(strstr(hdr, prev_quoted) < strstr(hdr, quoted), "%s: %s not sorted", path, best);
        CHECK(!strcmp(json_string_value(json_object_get(best_v, "dtype")), dtype));
        json_t *offs = json_object_get(best_v, "data_offsets");
        json_t *shape = json_object_get(best_v, "shape");
        uint64_t b = (uint64_t)json_integer_value(json_array_get(offs, 0));
        uint64_t e = (uint64_t)json_integer_value(json_array_get(offs, 1));
        CHECKF(b == expect_off, "%s: %s starts at %llu, want %llu", path, best,
               (unsigned long long)b, (unsigned long long)expect_off);
        expect_off = e;
        struct seen_tensor *t = &seen[(*n_seen)++];
        snprintf(t->name, sizeof(t->name), "%s", best);
        t->n_dims = (int)json_array_size(shape);
        int64_t count = 1;
        for (int d = 0; d < t->n_dims && d < 2; d++) {
            t->shape[d] = json_integer_value(json_array_get(shape, (size_t)d));
            count *= t->shape[d];
        }
        enum pl_dtype dt = !strcmp(dtype, "F32") ? PL_DTYPE_F32
                           : !strcmp(dtype, "F16") ? PL_DTYPE_F16 : PL_DTYPE_BF16;
        CHECK((uint64_t)count * pl_dtype_size(dt) == e - b);
        /* value statistics: norms ~1, projections ~ gain/sqrt(fan_in) */
        double sum = 0, sq = 0;
        for (int64_t k = 0; k < count && e <= data_len; k++) {
            double x = pl_dtype_get_f32(data + b, dt, (size_t)k);
            sum += x;
            sq += x * x;
        }
        double mean = sum / (double)count, std = sqrt(sq / (double)count - mean * mean);
        if (strstr(best, "norm.weight")) {
            double err = fabs(mean - 1.0);
            *norm_mean_err = err > *norm_mean_err ? err : *norm_mean_err;
        }
        if (strstr(best, "v_proj.weight"))
            *proj_std = std * sqrt((double)t->shape[1]); /* gain 1 */
        prev_name = best;
    }
    CHECKF(expect_off == data_len, "%s: data section %llu bytes, tensors cover %llu", path,
           (unsigned long long)data_len, (unsigned long long)expect_off);
    json_decref(h);
    free(hdr);
    free(buf);
}

static const struct seen_tensor *find_seen(const struct seen_tensor *s, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(s[i].name, name))
            return &s[i];
    return NULL;
}

static void expect_tensor(const struct seen_tensor *s, int n, const char *name, int64_t d0,
                          int64_t d1)
{
    const struct seen_tensor *t = find_seen(s, n, name);
    CHECKF(t != NULL, "missing %s", name);
    if (t)
        CHECKF(t->shape[0] == d0 && (d1 == 0 ? t->n_dims == 1 : t->shape[1] == d1),
               "%s shape [%lld, %lld], want [%lld, %lld]", name, (long long)t->shape[0],
               (long long)t->shape[1], (long long)d0, (long long)d1);
}

static void test_safetensors_layout(void)
{
    for (size_t i = 0; i < sizeof(EXPECT) / sizeof(EXPECT[0]); i++) {
        const struct expect *x = &EXPECT[i];
        const char *dir = write_preset(x->preset, "st");
        if (!dir)
            continue;
        struct seen_tensor *seen = calloc(512, sizeof(*seen));
        int n_seen = 0;
        double norm_err = 0, proj_std = 0;
        char path[2048];
        for (int s = 0; s < x->n_shards; s++) {
            if (x->n_shards == 1)
                snprintf(path, sizeof(path), "%s/model.safetensors", dir);
            else
                snprintf(path, sizeof(path), "%s/model-%05d-of-%05d.safetensors", dir, s + 1,
                         x->n_shards);
            check_safetensors_file(path, x->dtype, seen, &n_seen, &norm_err, &proj_std);
        }
        CHECKF(norm_err < 0.1, "%s: a norm weight's mean is %g away from 1", x->preset, norm_err);
        CHECKF(proj_std > 0.8 && proj_std < 1.2, "%s: v_proj std*sqrt(fan_in) = %g", x->preset,
               proj_std);
        const int H = x->hidden, q = x->heads * x->head_dim, kv = x->kv_heads * x->head_dim;
        const int I = H == 128 ? 256 : H == 256 ? 768 : 128;
        int per_layer = 9 + (x->qkv_bias ? 3 : 0) + (x->qk_norm ? 2 : 0);
        CHECKF(n_seen == 2 + !x->tied + x->layers * per_layer, "%s: %d tensors", x->preset,
               n_seen);
        expect_tensor(seen, n_seen, "model.embed_tokens.weight", x->vocab, H);
        expect_tensor(seen, n_seen, "model.norm.weight", H, 0);
        if (x->tied)
            CHECK(find_seen(seen, n_seen, "lm_head.weight") == NULL);
        else
            expect_tensor(seen, n_seen, "lm_head.weight", x->vocab, H);
        for (int l = 0; l < x->layers; l++) {
            char nm[128];
#define EXPECT_T(suffix, d0, d1)                                                              \
    (snprintf(nm, sizeof(nm), "model.layers.%d.%s", l, suffix), expect_tensor(seen, n_seen, nm, d0, d1))
            EXPECT_T("input_layernorm.weight", H, 0);
            EXPECT_T("post_attention_layernorm.weight", H, 0);
            EXPECT_T("self_attn.q_proj.weight", q, H);
            EXPECT_T("self_attn.k_proj.weight", kv, H);
            EXPECT_T("self_attn.v_proj.weight", kv, H);
            EXPECT_T("self_attn.o_proj.weight", H, q);
            EXPECT_T("mlp.gate_proj.weight", I, H);
            EXPECT_T("mlp.up_proj.weight", I, H);
            EXPECT_T("mlp.down_proj.weight", H, I);
            if (x->qkv_bias) {
                EXPECT_T("self_attn.q_proj.bias", q, 0);
                EXPECT_T("self_attn.k_proj.bias", kv, 0);
                EXPECT_T("self_attn.v_proj.bias", kv, 0);
            }
            if (x->qk_norm) {
                EXPECT_T("self_attn.q_norm.weight", x->head_dim, 0);
                EXPECT_T("self_attn.k_norm.weight", x->head_dim, 0);
            }
#undef EXPECT_T
        }
        if (x->n_shards > 1) {
            json_t *idx = load_json(dir, "model.safetensors.index.json");
            json_t *map = json_object_get(idx, "weight_map");
            CHECK((int)json_object_size(map) == n_seen);
            int64_t total = 0;
            for (int k = 0; k < n_seen; k++) {
                CHECKF(json_is_string(json_object_get(map, seen[k].name)), "%s", seen[k].name);
                int64_t c = seen[k].shape[0] * (seen[k].n_dims == 2 ? seen[k].shape[1] : 1);
                total += c * 2;
            }
            CHECK(jint(json_object_get(idx, "metadata"), "total_size") == total);
            json_decref(idx);
        }
        /* the project's own loader accepts it too */
        struct pl_safetensors *st = NULL;
        struct pl_err err = {0};
        CHECKF(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_OK, "%s: %s", x->preset,
               err.msg);
        if (st)
            CHECK(pl_safetensors_count(st) == n_seen);
        pl_safetensors_free(st);
        free(seen);
    }
}

static void test_config(void)
{
    for (size_t i = 0; i < sizeof(EXPECT) / sizeof(EXPECT[0]); i++) {
        const struct expect *x = &EXPECT[i];
        const char *dir = write_preset(x->preset, "cfg");
        if (!dir)
            continue;
        json_t *c = load_json(dir, "config.json");
        CHECK(!strcmp(json_string_value(json_array_get(json_object_get(c, "architectures"), 0)),
                      x->arch));
        CHECK(!strcmp(json_string_value(json_object_get(c, "model_type")), x->model_type));
        CHECK(json_is_true(json_object_get(c, "pagellm_tiny_test_model")));
        CHECK(jint(c, "hidden_size") == x->hidden && jint(c, "num_hidden_layers") == x->layers);
        CHECK(jint(c, "num_attention_heads") == x->heads);
        CHECK(jint(c, "num_key_value_heads") == x->kv_heads);
        CHECK(jint(c, "vocab_size") == x->vocab);
        CHECK(json_is_boolean(json_object_get(c, "tie_word_embeddings")) &&
              json_is_true(json_object_get(c, "tie_word_embeddings")) == x->tied);
        json_decref(c);
        c = load_json(dir, "generation_config.json");
        CHECK(json_object_get(c, "eos_token_id") != NULL);
        json_decref(c);

        struct pl_model_config cfg;
        struct pl_err err = {0};
        pl_status st = pl_model_config_load(dir, &cfg, &err);
        CHECKF(st == PL_STATUS_OK, "%s: %s", x->preset, err.msg);
        if (st != PL_STATUS_OK)
            continue;
        CHECK(!strcmp(cfg.arch_name, x->arch));
        CHECK(cfg.hidden_size == x->hidden && cfg.n_layers == x->layers);
        CHECK(cfg.n_heads == x->heads && cfg.n_kv_heads == x->kv_heads);
        CHECKF(cfg.head_dim == x->head_dim, "%s: head_dim %d", x->preset, cfg.head_dim);
        CHECK(cfg.vocab_size == x->vocab);
        CHECK(cfg.tie_word_embeddings == x->tied);
        CHECK(cfg.attention_bias == x->qkv_bias);
        CHECK(cfg.qk_norm == x->qk_norm);
        CHECK(cfg.dtype == (!strcmp(x->dtype, "F32") ? PL_DTYPE_F32
                            : !strcmp(x->dtype, "F16") ? PL_DTYPE_F16 : PL_DTYPE_BF16));
    }
}

/* The rope and sliding-window variants read back as the presets mean them. */
static void test_config_variants(void)
{
    struct pl_model_config c;
    struct pl_err err = {0};
    const char *d;
#define LOAD(p) ((d = write_preset(p, "var")) && pl_model_config_load(d, &c, &err) == PL_STATUS_OK)
    CHECKF(LOAD("llama3-rope") && c.rope.type == PL_ROPE_LLAMA3 && c.rope.factor == 8.0 &&
               c.rope.low_freq_factor == 1.0 && c.rope.high_freq_factor == 4.0 &&
               c.rope.original_max_position == 64 && c.head_dim == 32,
           "%s", err.msg);
    CHECKF(LOAD("llama-linear-rope") && c.rope.type == PL_ROPE_LINEAR && c.rope.factor == 2.0,
           "%s", err.msg);
    CHECKF(LOAD("llama-yarn-rope") && c.rope.type == PL_ROPE_YARN && c.rope.factor == 4.0 &&
               c.rope.original_max_position == 32 && c.max_position_embeddings == 128,
           "%s", err.msg);
    CHECKF(LOAD("llama-dynamic-rope") && c.rope.type == PL_ROPE_DYNAMIC && c.rope.factor == 4.0 &&
               c.max_position_embeddings == 32,
           "%s", err.msg);
    CHECKF(LOAD("mistral-swa") && c.layer_sliding_window[0] == 8 && c.layer_sliding_window[1] == 8,
           "%s", err.msg);
    /* qwen2: a window is configured but use_sliding_window is false */
    CHECKF(LOAD("qwen2") && c.layer_sliding_window[0] == 0 && c.layer_sliding_window[1] == 0,
           "%s", err.msg);
    /* qwen2-swa: layers >= max_window_layers (1) slide */
    CHECKF(LOAD("qwen2-swa") && c.layer_sliding_window[0] == 0 && c.layer_sliding_window[1] == 8 &&
               c.layer_sliding_window[2] == 8,
           "%s", err.msg);
    CHECKF(LOAD("qwen3") && c.rope.type == PL_ROPE_DEFAULT && c.rope.theta == 1000000.0 &&
               c.layer_sliding_window[0] == 0,
           "%s", err.msg);
    CHECKF(LOAD("default") && c.rope.theta == 500000.0 && c.gen.n_eos_token_ids == 2, "%s",
           err.msg);
#undef LOAD
}

static void test_default_tokenizer(void)
{
    const char *dir = write_preset("default", "tok");
    REQUIRE(dir);
    json_t *t = load_json(dir, "tokenizer.json");
    json_t *tc = load_json(dir, "tokenizer_config.json");
    json_t *cfg = load_json(dir, "config.json");
    REQUIRE(t && tc && cfg);
    json_t *model = json_object_get(t, "model");
    CHECK(!strcmp(json_string_value(json_object_get(model, "type")), "BPE"));
    CHECK(json_is_true(json_object_get(model, "ignore_merges")));
    CHECK(json_is_false(json_object_get(model, "byte_fallback")));
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    CHECK(json_object_size(vocab) == 956);
    CHECK(json_array_size(merges) == 700);
    /* ids 0..955 each used once */
    char *used = calloc(1024, 1);
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        int id = (int)json_integer_value(v);
        CHECK(id >= 0 && id < 956 && !used[id]);
        if (id >= 0 && id < 1024)
            used[id] = 1;
    }
    free(used);
    /* every merge is "left right" of vocab tokens whose concatenation is a vocab token */
    size_t i;
    json_array_foreach(merges, i, v) {
        const char *m = json_string_value(v);
        const char *sp = m ? strchr(m, ' ') : NULL;
        CHECKF(sp && !strchr(sp + 1, ' '), "merge %zu", i);
        if (!sp)
            continue;
        char left[256], joined[512];
        snprintf(left, sizeof(left), "%.*s", (int)(sp - m), m);
        snprintf(joined, sizeof(joined), "%s%s", left, sp + 1);
        CHECKF(json_object_get(vocab, left) && json_object_get(vocab, sp + 1) &&
                   json_object_get(vocab, joined),
               "merge '%s'", m);
    }
    json_t *added = json_object_get(t, "added_tokens");
    CHECK(json_array_size(added) == 4);
    static const char *const specials[] = {"<|begin_of_text|>", "<|end_of_text|>",
                                           "<|im_start|>", "<|im_end|>"};
    for (int k = 0; k < 4; k++) {
        json_t *a = json_array_get(added, (size_t)k);
        CHECK(!strcmp(json_string_value(json_object_get(a, "content")), specials[k]));
        CHECK(jint(a, "id") == 956 + k);
        CHECK(json_is_true(json_object_get(a, "special")));
    }
    json_t *pre = json_object_get(t, "pre_tokenizer");
    CHECK(!strcmp(json_string_value(json_object_get(pre, "type")), "Sequence"));
    json_t *pres = json_object_get(pre, "pretokenizers");
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(pres, 0), "type")), "Split"));
    CHECK(!strcmp(json_string_value(json_object_get(json_array_get(pres, 1), "type")),
                  "ByteLevel"));
    CHECK(!strcmp(json_string_value(json_object_get(json_object_get(t, "decoder"), "type")),
                  "ByteLevel"));
    json_t *post = json_object_get(json_object_get(t, "post_processor"), "processors");
    json_t *tp = json_array_get(post, 1);
    CHECK(!strcmp(json_string_value(json_object_get(tp, "type")), "TemplateProcessing"));
    CHECK(jint(json_object_get(json_object_get(tp, "special_tokens"), "<|begin_of_text|>"),
               "id") == -1); /* its "id" is the token's name, not a number */
    CHECK(json_integer_value(json_array_get(json_object_get(json_object_get(json_object_get(
        tp, "special_tokens"), "<|begin_of_text|>"), "ids"), 0)) == 956);
    /* tokenizer_config */
    CHECK(!strcmp(json_string_value(json_object_get(tc, "bos_token")), "<|begin_of_text|>"));
    CHECK(json_is_string(json_object_get(tc, "eos_token")));
    CHECK(json_is_true(json_object_get(tc, "add_bos_token")));
    const char *tmpl = json_string_value(json_object_get(tc, "chat_template"));
    CHECK(tmpl && strstr(tmpl, "<|im_start|>") && strstr(tmpl, "<|im_end|>") &&
          strstr(tmpl, "add_generation_prompt"));
    /* config covers every id and names the special ids */
    CHECK(jint(cfg, "vocab_size") == 960);
    CHECK(jint(cfg, "bos_token_id") == 956 && jint(cfg, "eos_token_id") == 957);
    CHECK(pl_tiny_model_dir_is_tiny(dir));
    CHECK(!pl_tiny_model_dir_is_tiny("/nonexistent/dir"));
    CHECK(!pl_tiny_model_dir_is_tiny(NULL));
    char plain[1100];
    snprintf(plain, sizeof(plain), "%s/plain", g_tmp);
    CHECK(mkdir(plain, 0777) == 0);
    snprintf(plain, sizeof(plain), "%s/plain/config.json", g_tmp);
    FILE *f = fopen(plain, "w");
    if (f) {
        fputs("{\"model_type\": \"llama\", \"pagellm_tiny_test_model\": 1}", f);
        fclose(f);
    }
    snprintf(plain, sizeof(plain), "%s/plain", g_tmp);
    CHECK(!pl_tiny_model_dir_is_tiny(plain)); /* only the JSON literal true counts */
    json_decref(t);
    json_decref(tc);
    json_decref(cfg);
}

int main(void)
{
    if (!mkdtemp(g_tmp)) {
        perror("mkdtemp");
        return 1;
    }
    PL_RUN(test_preset_list);
    PL_RUN(test_prompts);
    PL_RUN(test_reproducible);
    PL_RUN(test_safetensors_layout);
    PL_RUN(test_config);
    PL_RUN(test_config_variants);
    PL_RUN(test_default_tokenizer);
    pl_test_rm_tree(g_tmp);
    return pl_test_summary();
}
