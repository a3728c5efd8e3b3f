/*
 * test_weights.c -- HF tensor names -> struct pl_weights slots.
 *
 * A tiny checkpoint (config.json + model.safetensors) is written to a temp dir
 * and loaded through the real config and safetensors loaders. Each tensor's
 * first element holds a distinct tag, so a slot is proven to hold the right
 * tensor by reading its first element, and its shape by rows/cols. The names
 * and shapes are those of transformers' modeling_llama.py / modular_qwen2.py /
 * modular_qwen3.py modules (nn.Linear weights are [out_features, in_features]).
 * A fake backend (map_weight returns the host pointer, counts maps/unmaps)
 * keeps the test independent of the real backends.
 */
#include "model/weights.h"

#include "st_write.h"
#include "test.h"

#include <math.h>

/* ---- fake backend ---- */

struct fake_backend {
    struct pl_backend base; /* first, as backend.h requires */
    int n_mapped, n_unmapped;
    bool refuse_bf16_matmul;
};

static void *fake_map(struct pl_backend *be, const void *host, size_t n)
{
    (void)n;
    ((struct fake_backend *)be)->n_mapped++;
    return (void *)host;
}

static void fake_unmap(struct pl_backend *be, void *p)
{
    (void)p;
    ((struct fake_backend *)be)->n_unmapped++;
}

static bool fake_supports(struct pl_backend *be, enum pl_op op, enum pl_dtype dt)
{
    return !(((struct fake_backend *)be)->refuse_bf16_matmul && op == PL_OP_MATMUL &&
             dt == PL_DTYPE_BF16);
}

static const struct pl_backend_ops fake_ops = {
    .version = PL_BACKEND_OPS_VERSION,
    .name = "fake",
    .act_dtype = PL_DTYPE_F32,
    .map_weight = fake_map,
    .unmap_weight = fake_unmap,
    .supports = fake_supports,
};

/* ---- tiny checkpoint ---- */

enum { HIDDEN = 8, INTER = 12, LAYERS = 2, HEADS = 4, KV_HEADS = 2, HEAD_DIM = 4, VOCAB = 10 };

struct ckpt {
    int n;
    struct tw_tensor t[64];
    char names[64][80];
    float *bufs[64];
};

static void add(struct ckpt *c, const char *name, int64_t rows, int64_t cols)
{
    int i = c->n++;
    snprintf(c->names[i], sizeof(c->names[i]), "%s", name);
    int64_t n = rows ? rows * cols : cols;
    c->bufs[i] = calloc((size_t)n, sizeof(float));
    c->bufs[i][0] = 100.0f + (float)i; /* the tag */
    c->t[i] = (struct tw_tensor){c->names[i], "F32", rows ? 2 : 1, {rows ? rows : cols, cols},
                                 c->bufs[i], (size_t)n * sizeof(float)};
}

static void add_layer(struct ckpt *c, int l, const char *suffix, int64_t rows, int64_t cols)
{
    char name[80];
    snprintf(name, sizeof(name), "model.layers.%d.%s", l, suffix);
    add(c, name, rows, cols);
}

/* The tensors of a model with the given optional parts (Llama: none; Qwen2: q/k/v
 * biases; Llama attention_bias: q/k/v/o; mlp_bias: gate/up/down; Qwen3: qk norms). */
static void build(struct ckpt *c, bool with_lm_head, bool qkv_bias, bool o_bias, bool mlp_bias,
                  bool qk_norm)
{
    memset(c, 0, sizeof(*c));
    add(c, "model.embed_tokens.weight", VOCAB, HIDDEN);
    for (int l = 0; l < LAYERS; l++) {
        add_layer(c, l, "input_layernorm.weight", 0, HIDDEN);
        add_layer(c, l, "self_attn.q_proj.weight", HEADS * HEAD_DIM, HIDDEN);
        add_layer(c, l, "self_attn.k_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN);
        add_layer(c, l, "self_attn.v_proj.weight", KV_HEADS * HEAD_DIM, HIDDEN);
        add_layer(c, l, "self_attn.o_proj.weight", HIDDEN, HEADS * HEAD_DIM);
        if (qkv_bias) {
            add_layer(c, l, "self_attn.q_proj.bias", 0, HEADS * HEAD_DIM);
            add_layer(c, l, "self_attn.k_proj.bias", 0, KV_HEADS * HEAD_DIM);
            add_layer(c, l, "self_attn.v_proj.bias", 0, KV_HEADS * HEAD_DIM);
        }
        if (o_bias)
            add_layer(c, l, "self_attn.o_proj.bias", 0, HIDDEN);
        if (qk_norm) {
            add_layer(c, l, "self_attn.q_norm.weight", 0, HEAD_DIM);
            add_layer(c, l, "self_attn.k_norm.weight", 0, HEAD_DIM);
        }
        add_layer(c, l, "post_attention_layernorm.weight", 0, HIDDEN);
        add_layer(c, l, "mlp.gate_proj.weight", INTER, HIDDEN);
        add_layer(c, l, "mlp.up_proj.weight", INTER, HIDDEN);
        add_layer(c, l, "mlp.down_proj.weight", HIDDEN, INTER);
        if (mlp_bias) {
            add_layer(c, l, "mlp.gate_proj.bias", 0, INTER);
            add_layer(c, l, "mlp.up_proj.bias", 0, INTER);
            add_layer(c, l, "mlp.down_proj.bias", 0, HIDDEN);
        }
    }
    add(c, "model.norm.weight", 0, HIDDEN);
    if (with_lm_head)
        add(c, "lm_head.weight", VOCAB, HIDDEN);
}

static void ckpt_free(struct ckpt *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->bufs[i]);
}

static int find_idx(const struct ckpt *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->names[i], name) == 0)
            return i;
    return -1;
}

static void drop(struct ckpt *c, const char *name)
{
    int i = find_idx(c, name);
    if (i < 0)
        return;
    free(c->bufs[i]);
    for (int j = i; j + 1 < c->n; j++) {
        c->t[j] = c->t[j + 1];
        c->bufs[j] = c->bufs[j + 1];
        memcpy(c->names[j], c->names[j + 1], sizeof(c->names[j]));
        c->t[j].name = c->names[j];
    }
    c->n--;
}

static char *write_model(struct ckpt *c, const char *arch, const char *extra_json)
{
    char *dir = tw_mkdtemp();
    if (!dir)
        return NULL;
    char cfg[1024];
    snprintf(cfg, sizeof(cfg),
             "{\"architectures\": [\"%s\"], \"hidden_size\": %d, \"intermediate_size\": %d, "
             "\"num_hidden_layers\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
             "\"head_dim\": %d, \"vocab_size\": %d, \"rms_norm_eps\": 1e-5, "
             "\"torch_dtype\": \"float32\"%s%s}",
             arch, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB,
             extra_json ? ", " : "", extra_json ? extra_json : "");
    tw_write_text(tw_path(dir, "config.json"), cfg);
    tw_write_tensors(tw_path(dir, "model.safetensors"), c->t, c->n);
    return dir;
}

struct loaded {
    struct pl_model_config cfg;
    struct pl_safetensors *st;
    struct pl_weights *w;
    struct fake_backend be;
    struct pl_err err;
    pl_status status;
};

static struct loaded g; /* big config struct: static */

static pl_status load(const char *dir, bool refuse_bf16)
{
    memset(&g, 0, sizeof(g));
    g.be.base.ops = &fake_ops;
    g.be.refuse_bf16_matmul = refuse_bf16;
    g.status = pl_model_config_load(dir, &g.cfg, &g.err);
    if (g.status == PL_STATUS_OK)
        g.status = pl_safetensors_open_dir(dir, &g.st, &g.err);
    if (g.status == PL_STATUS_OK)
        g.status = pl_weights_load(&g.cfg, g.st, &g.be.base, &g.w, &g.err);
    return g.status;
}

static void unload(void)
{
    pl_weights_free(g.w);
    pl_safetensors_free(g.st);
    g.w = NULL;
    g.st = NULL;
}

/* The slot holds tensor `name` of checkpoint c with shape [rows, cols]. */
static void check_slot(const struct ckpt *c, const struct pl_weight *s, const char *name,
                       int64_t rows, int64_t cols)
{
    int i = find_idx(c, name);
    CHECKF(i >= 0, "no tensor %s in the checkpoint", name);
    if (i < 0)
        return;
    CHECKF(s->data != NULL, "%s: slot empty", name);
    if (!s->data)
        return;
    CHECKF(((const float *)s->data)[0] == 100.0f + (float)i, "%s: slot holds tag %g", name,
           ((const float *)s->data)[0]);
    CHECKF(s->rows == rows && s->cols == cols, "%s: [%lld, %lld]", name, (long long)s->rows,
           (long long)s->cols);
    CHECK(s->dtype == PL_DTYPE_F32);
}

static void check_empty(const struct pl_weight *s, const char *what)
{
    CHECKF(s->data == NULL && s->rows == 0 && s->cols == 0, "%s should be unused", what);
}

static void check_layers(const struct ckpt *c, const struct pl_weights *w, bool qkv_bias,
                         bool o_bias, bool mlp_bias, bool qk_norm)
{
    char n[96];
#define NAME(suffix) (snprintf(n, sizeof(n), "model.layers.%d.%s", l, suffix), n)
    for (int l = 0; l < LAYERS; l++) {
        const struct pl_layer_weights *lw = &w->layers[l];
        check_slot(c, &lw->attn_norm, NAME("input_layernorm.weight"), 1, HIDDEN);
        check_slot(c, &lw->wq, NAME("self_attn.q_proj.weight"), HEADS * HEAD_DIM, HIDDEN);
        check_slot(c, &lw->wk, NAME("self_attn.k_proj.weight"), KV_HEADS * HEAD_DIM, HIDDEN);
        check_slot(c, &lw->wv, NAME("self_attn.v_proj.weight"), KV_HEADS * HEAD_DIM, HIDDEN);
        check_slot(c, &lw->wo, NAME("self_attn.o_proj.weight"), HIDDEN, HEADS * HEAD_DIM);
        check_slot(c, &lw->ffn_norm, NAME("post_attention_layernorm.weight"), 1, HIDDEN);
        check_slot(c, &lw->w_gate, NAME("mlp.gate_proj.weight"), INTER, HIDDEN);
        check_slot(c, &lw->w_up, NAME("mlp.up_proj.weight"), INTER, HIDDEN);
        check_slot(c, &lw->w_down, NAME("mlp.down_proj.weight"), HIDDEN, INTER);
        if (qkv_bias) {
            check_slot(c, &lw->bq, NAME("self_attn.q_proj.bias"), 1, HEADS * HEAD_DIM);
            check_slot(c, &lw->bk, NAME("self_attn.k_proj.bias"), 1, KV_HEADS * HEAD_DIM);
            check_slot(c, &lw->bv, NAME("self_attn.v_proj.bias"), 1, KV_HEADS * HEAD_DIM);
        } else {
            check_empty(&lw->bq, "bq");
            check_empty(&lw->bk, "bk");
            check_empty(&lw->bv, "bv");
        }
        if (o_bias)
            check_slot(c, &lw->bo, NAME("self_attn.o_proj.bias"), 1, HIDDEN);
        else
            check_empty(&lw->bo, "bo");
        if (qk_norm) {
            check_slot(c, &lw->q_norm, NAME("self_attn.q_norm.weight"), 1, HEAD_DIM);
            check_slot(c, &lw->k_norm, NAME("self_attn.k_norm.weight"), 1, HEAD_DIM);
        } else {
            check_empty(&lw->q_norm, "q_norm");
            check_empty(&lw->k_norm, "k_norm");
        }
        if (mlp_bias) {
            check_slot(c, &lw->b_gate, NAME("mlp.gate_proj.bias"), 1, INTER);
            check_slot(c, &lw->b_up, NAME("mlp.up_proj.bias"), 1, INTER);
            check_slot(c, &lw->b_down, NAME("mlp.down_proj.bias"), 1, HIDDEN);
        } else {
            check_empty(&lw->b_gate, "b_gate");
            check_empty(&lw->b_up, "b_up");
            check_empty(&lw->b_down, "b_down");
        }
    }
#undef NAME
}

static void test_llama_untied(void)
{
    static struct ckpt c;
    build(&c, true, false, false, false, false);
    char *dir = write_model(&c, "LlamaForCausalLM", "\"tie_word_embeddings\": false");
    REQUIRE(dir);
    CHECKF(load(dir, false) == PL_STATUS_OK, "%s", g.err.msg);
    if (g.w) {
        CHECK(g.w->n_layers == LAYERS && g.w->be == &g.be.base);
        check_slot(&c, &g.w->embed, "model.embed_tokens.weight", VOCAB, HIDDEN);
        check_slot(&c, &g.w->final_norm, "model.norm.weight", 1, HIDDEN);
        check_slot(&c, &g.w->lm_head, "lm_head.weight", VOCAB, HIDDEN);
        CHECK(g.w->lm_head.data != g.w->embed.data);
        check_layers(&c, g.w, false, false, false, false);
        /* on this backend the slots point straight into the mmap */
        CHECK(g.w->embed.data == pl_safetensors_find(g.st, "model.embed_tokens.weight")->data);
        size_t total = 0;
        for (int i = 0; i < c.n; i++)
            total += c.t[i].n_bytes;
        CHECK(g.w->n_bytes == total);
        CHECK(g.be.n_mapped == c.n);
    }
    unload();
    CHECK(g.be.n_unmapped == g.be.n_mapped);
    ckpt_free(&c);
    tw_rmdir(dir);
}

static void test_llama_biases(void)
{
    static struct ckpt c;
    build(&c, true, true, true, true, false);
    char *dir = write_model(&c, "LlamaForCausalLM", "\"attention_bias\": true, \"mlp_bias\": true");
    REQUIRE(dir);
    CHECKF(load(dir, false) == PL_STATUS_OK, "%s", g.err.msg);
    if (g.w)
        check_layers(&c, g.w, true, true, true, false);
    unload();
    ckpt_free(&c);
    tw_rmdir(dir);
}

static void test_qwen2_and_qwen3(void)
{
    static struct ckpt c;
    /* Qwen2: q/k/v biases, no o bias; tied without lm_head in the file */
    build(&c, false, true, false, false, false);
    char *dir = write_model(&c, "Qwen2ForCausalLM", "\"tie_word_embeddings\": true");
    REQUIRE(dir);
    CHECKF(load(dir, false) == PL_STATUS_OK, "%s", g.err.msg);
    if (g.w) {
        check_layers(&c, g.w, true, false, false, false);
        CHECK(g.w->lm_head.data == g.w->embed.data);
        CHECK(g.w->lm_head.rows == VOCAB && g.w->lm_head.cols == HIDDEN);
    }
    unload();
    CHECK(g.be.n_unmapped == g.be.n_mapped);
    ckpt_free(&c);
    tw_rmdir(dir);

    /* Qwen3: q_norm / k_norm, no biases */
    build(&c, true, false, false, false, true);
    dir = write_model(&c, "Qwen3ForCausalLM", NULL);
    REQUIRE(dir);
    CHECKF(load(dir, false) == PL_STATUS_OK, "%s", g.err.msg);
    if (g.w)
        check_layers(&c, g.w, false, false, false, true);
    unload();
    ckpt_free(&c);
    tw_rmdir(dir);
}

static void test_tied_prefers_embed(void)
{
    /* transformers ties lm_head to the embedding even when the file has lm_head.weight */
    static struct ckpt c;
    build(&c, true, false, false, false, false);
    char *dir = write_model(&c, "LlamaForCausalLM", "\"tie_word_embeddings\": true");
    REQUIRE(dir);
    CHECKF(load(dir, false) == PL_STATUS_OK, "%s", g.err.msg);
    if (g.w) {
        CHECK(g.w->lm_head.data == g.w->embed.data);
        check_slot(&c, &g.w->lm_head, "model.embed_tokens.weight", VOCAB, HIDDEN);
        CHECK(g.be.n_mapped == c.n - 1); /* lm_head.weight is not mapped */
    }
    unload();
    CHECK(g.be.n_unmapped == g.be.n_mapped); /* the shared mapping is undone once */
    ckpt_free(&c);
    tw_rmdir(dir);
}

static void expect_refusal(struct ckpt *c, const char *arch, const char *extra, pl_status want,
                           const char *needle, bool refuse_bf16, const char *what)
{
    char *dir = write_model(c, arch, extra);
    REQUIRE(dir);
    pl_status s = load(dir, refuse_bf16);
    CHECKF(s == want, "%s: status %d (%s)", what, s, g.err.msg);
    CHECKF(g.w == NULL, "%s: weights returned", what);
    CHECKF(strstr(g.err.msg, needle) != NULL, "%s: message lacks '%s': %s", what, needle,
           g.err.msg);
    unload();
    CHECKF(g.be.n_unmapped == g.be.n_mapped, "%s: %d mapped, %d unmapped", what, g.be.n_mapped,
           g.be.n_unmapped);
    tw_rmdir(dir);
}

static void test_refusals(void)
{
    static struct ckpt c;
    build(&c, true, false, false, false, false);
    drop(&c, "model.layers.1.mlp.up_proj.weight");
    expect_refusal(&c, "LlamaForCausalLM", NULL, PL_STATUS_NOT_FOUND,
                   "model.layers.1.mlp.up_proj.weight", false, "missing tensor");
    ckpt_free(&c);

    build(&c, false, false, false, false, false);
    expect_refusal(&c, "LlamaForCausalLM", "\"tie_word_embeddings\": false", PL_STATUS_NOT_FOUND,
                   "lm_head.weight", false, "untied without lm_head");
    ckpt_free(&c);

    build(&c, true, false, false, false, false);
    expect_refusal(&c, "Qwen2ForCausalLM", NULL, PL_STATUS_NOT_FOUND,
                   "model.layers.0.self_attn.q_proj.bias", false, "Qwen2 without biases");
    ckpt_free(&c);

    build(&c, true, false, false, false, false);
    expect_refusal(&c, "Qwen3ForCausalLM", NULL, PL_STATUS_NOT_FOUND,
                   "model.layers.0.self_attn.q_norm.weight", false, "Qwen3 without qk norm");
    ckpt_free(&c);

    /* wrong shape: k_proj as if kv heads were 4 */
    build(&c, true, false, false, false, false);
    int i = find_idx(&c, "model.layers.1.self_attn.k_proj.weight");
    REQUIRE(i >= 0);
    free(c.bufs[i]);
    c.bufs[i] = calloc(HEADS * HEAD_DIM * HIDDEN, sizeof(float));
    c.t[i].data = c.bufs[i];
    c.t[i].shape[0] = HEADS * HEAD_DIM;
    c.t[i].n_bytes = HEADS * HEAD_DIM * HIDDEN * sizeof(float);
    expect_refusal(&c, "LlamaForCausalLM", NULL, PL_STATUS_FORMAT,
                   "model.layers.1.self_attn.k_proj.weight", false, "wrong shape");
    expect_refusal(&c, "LlamaForCausalLM", NULL, PL_STATUS_FORMAT, "[16, 8]", false,
                   "wrong shape (got)");
    expect_refusal(&c, "LlamaForCausalLM", NULL, PL_STATUS_FORMAT, "[8, 8]", false,
                   "wrong shape (want)");
    ckpt_free(&c);

    /* a norm stored as a matrix */
    build(&c, true, false, false, false, false);
    i = find_idx(&c, "model.norm.weight");
    c.t[i].n_dims = 2;
    c.t[i].shape[0] = 1;
    c.t[i].shape[1] = HIDDEN;
    expect_refusal(&c, "LlamaForCausalLM", NULL, PL_STATUS_FORMAT, "model.norm.weight", false,
                   "vector as matrix");
    ckpt_free(&c);

    /* the backend does not run BF16 matmuls: refused at load, naming the tensor */
    build(&c, true, false, false, false, false);
    i = find_idx(&c, "model.layers.0.self_attn.q_proj.weight");
    c.t[i].dtype = "BF16";
    c.t[i].n_bytes /= 2;
    expect_refusal(&c, "LlamaForCausalLM", NULL, PL_STATUS_UNSUPPORTED,
                   "model.layers.0.self_attn.q_proj.weight", true, "unsupported dtype");
    ckpt_free(&c);
}

/* Dummy weights on the real CPU backend: every slot with its shape and dtype, values in
 * the documented ranges, deterministic in the seed, distinct per tensor. */
static void check_range(const struct pl_weight *w, float lo, float hi, const char *what)
{
    size_t n = (size_t)w->rows * (size_t)w->cols;
    float mn = 1e30f, mx = -1e30f;
    for (size_t i = 0; i < n; i++) {
        float x = pl_dtype_get_f32(w->data, w->dtype, i);
        mn = x < mn ? x : mn;
        mx = x > mx ? x : mx;
    }
    CHECKF(mn >= lo && mx <= hi, "%s: values in [%g, %g], expected within [%g, %g]", what, mn, mx,
           lo, hi);
    if (lo < hi) /* random, not constant: both halves of the range are hit */
        CHECKF(mn < lo + 0.25f * (hi - lo) && mx > hi - 0.25f * (hi - lo),
               "%s: values [%g, %g] do not spread over [%g, %g]", what, mn, mx, lo, hi);
}

static void test_dummy(void)
{
    static struct ckpt c;
    build(&c, true, true, false, false, true);
    char *dir = write_model(&c, "LlamaForCausalLM", "\"tie_word_embeddings\": false, "
                                                    "\"attention_bias\": true, "
                                                    "\"torch_dtype\": \"bfloat16\"");
    REQUIRE(dir);
    struct pl_model_config cfg;
    struct pl_err err = {0};
    REQUIRE(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_OK);
    cfg.qk_norm = true;
    struct pl_backend *be = NULL;
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    struct pl_weights *w = NULL, *w2 = NULL, *w3 = NULL;
    CHECKF(pl_weights_dummy(&cfg, be, 7, &w, &err) == PL_STATUS_OK, "%s", err.msg);
    REQUIRE(w);
    CHECK(w->allocated && w->n_layers == LAYERS);
    CHECK(w->embed.dtype == PL_DTYPE_BF16 && w->embed.rows == VOCAB && w->embed.cols == HIDDEN);
    CHECK(w->lm_head.data != w->embed.data && w->lm_head.rows == VOCAB);
    check_range(&w->embed, -1.0f, 1.0f, "embed");
    check_range(&w->final_norm, 1.0f, 1.0f, "final norm");
    const float a_h = 1.0f / sqrtf((float)HIDDEN) * 1.01f, a_i = 1.0f / sqrtf((float)INTER) * 1.01f;
    for (int l = 0; l < LAYERS; l++) {
        const struct pl_layer_weights *L = &w->layers[l];
        CHECK(L->wq.rows == HEADS * HEAD_DIM && L->wq.cols == HIDDEN);
        CHECK(L->wk.rows == KV_HEADS * HEAD_DIM && L->wo.cols == HEADS * HEAD_DIM);
        CHECK(L->w_down.rows == HIDDEN && L->w_down.cols == INTER);
        CHECK(L->bq.data && L->bq.cols == HEADS * HEAD_DIM && L->bo.data && !L->b_gate.data);
        CHECK(L->q_norm.data && L->q_norm.cols == HEAD_DIM);
        check_range(&L->attn_norm, 1.0f, 1.0f, "attn norm");
        check_range(&L->q_norm, 1.0f, 1.0f, "q norm");
        check_range(&L->wq, -a_h, a_h, "q_proj");
        check_range(&L->w_down, -a_i, a_i, "down_proj");
    }
    /* distinct tensors of one shape differ */
    CHECK(memcmp(w->layers[0].wq.data, w->layers[1].wq.data,
                 (size_t)HEADS * HEAD_DIM * HIDDEN * 2) != 0);
    /* the seed decides every bit */
    REQUIRE(pl_weights_dummy(&cfg, be, 7, &w2, &err) == PL_STATUS_OK);
    REQUIRE(pl_weights_dummy(&cfg, be, 8, &w3, &err) == PL_STATUS_OK);
    size_t nb = (size_t)INTER * HIDDEN * 2;
    CHECK(memcmp(w->layers[1].w_up.data, w2->layers[1].w_up.data, nb) == 0);
    CHECK(memcmp(w->layers[1].w_up.data, w3->layers[1].w_up.data, nb) != 0);
    CHECK(w->n_bytes == w2->n_bytes && w->n_bytes > 0);
    pl_weights_free(w);
    pl_weights_free(w2);
    pl_weights_free(w3);
    pl_backend_free(be);
    ckpt_free(&c);
    tw_rmdir(dir);
}

/* The Llama-3-8B config kept for the benchmarks parses to the shape docs/benchmarks.md names. */
static void test_bench_8b_config(void)
{
    struct pl_model_config cfg;
    struct pl_err err = {0};
    REQUIRE(pl_model_config_load(pl_test_path("bench/models/llama-3-8b"), &cfg, &err) ==
            PL_STATUS_OK);
    CHECK(cfg.hidden_size == 4096 && cfg.intermediate_size == 14336 && cfg.n_layers == 32);
    CHECK(cfg.n_heads == 32 && cfg.n_kv_heads == 8 && cfg.head_dim == 128);
    CHECK(cfg.vocab_size == 128256 && cfg.dtype == PL_DTYPE_BF16 && !cfg.tie_word_embeddings);
    CHECK(fabs(cfg.rope.theta - 500000.0) < 1.0);
}

int main(void)
{
    PL_RUN(test_llama_untied);
    PL_RUN(test_llama_biases);
    PL_RUN(test_qwen2_and_qwen3);
    PL_RUN(test_tied_prefers_embed);
    PL_RUN(test_refusals);
    PL_RUN(test_dummy);
    PL_RUN(test_bench_8b_config);
    return pl_test_summary();
}
