/*
 * test_families.c -- the newer architectures on the CPU backend, checked by
 * construction against the Llama decoder (whose golden fixtures pin it to
 * transformers).
 *
 * Phi-3: a Llama checkpoint rewritten the way Phi-3 stores it (q|k|v rows in one
 * qkv_proj, gate|up rows in one gate_up_proj, Phi3ForCausalLM) must generate the
 * very same tokens and logprobs: the fused tensors' row ranges map onto the same
 * slots. (Phi-3's own features -- longrope, partial rotary -- are checked in
 * test_cpu_backend against their formulas and by the golden fixtures of the
 * phi3 presets once those are made.)
 * --dtype: conversion at load walks the same tensor table, so fused row ranges,
 * (1 + w) norms and per-expert tensors are converted (or kept fp32) slot by slot.
 */
#include "engine/greedy.h"
#include "engine/model_runner.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "util/dtype.h"
#include "model/tiny_model.h"
#include "st_write.h"
#include "test.h"

#include <jansson.h>

#define MAX_TENSORS 64
#define N_PROMPTS 3

/* Runs the same prompts through model_dir (weights converted to *dtype when not NULL);
 * fills tokens and logprobs. */
static bool run_model_as(const char *model_dir, const enum pl_dtype *dtype,
                         int32_t tokens[N_PROMPTS][12], float lps[N_PROMPTS][12 * 3])
{
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.model_dir = model_dir;
    p.convert_dtype = dtype != NULL;
    p.dtype = dtype ? *dtype : PL_DTYPE_F32;
    p.n_threads = 1;
    p.num_kv_blocks = 64;
    p.max_model_len = 64;
    p.max_num_seqs = 4;
    p.max_num_batched_tokens = 128;
    struct pl_model_runner *r = NULL;
    struct pl_err err = {0};
    if (pl_model_runner_new(&p, &r, &err) != PL_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", model_dir, err.msg);
        return false;
    }
    static const int32_t prompts[N_PROMPTS][8] = {
        {3, 17, 99, 4, 250, 7, 1, 42}, {11}, {300, 301, 5, 9, 77}};
    static const int lens[N_PROMPTS] = {8, 1, 5};
    struct pl_greedy_seq s[N_PROMPTS];
    memset(s, 0, sizeof(s));
    for (int i = 0; i < N_PROMPTS; i++) {
        s[i].prompt = prompts[i];
        s[i].n_prompt = lens[i];
        s[i].max_tokens = 12;
        s[i].n_logprobs = 3;
    }
    bool ok = pl_greedy_generate(r, s, N_PROMPTS, 3, &err) == PL_STATUS_OK;
    if (!ok)
        fprintf(stderr, "%s: %s\n", model_dir, err.msg);
    for (int i = 0; ok && i < N_PROMPTS; i++) {
        ok = s[i].n_out == 12;
        memcpy(tokens[i], s[i].out_tokens, sizeof(int32_t) * 12);
        memcpy(lps[i], s[i].top_logprobs, sizeof(float) * 12 * 3);
    }
    for (int i = 0; i < N_PROMPTS; i++)
        pl_greedy_seq_fini(&s[i]);
    pl_model_runner_free(r);
    return ok;
}

static bool run_model(const char *model_dir, int32_t tokens[N_PROMPTS][12],
                      float lps[N_PROMPTS][12 * 3])
{
    return run_model_as(model_dir, NULL, tokens, lps);
}

/* Concatenates the rows of two or three same-width tensors into one buffer. */
static void *concat_rows(const struct pl_tensor_info *const *parts, int n, int64_t *rows,
                         size_t *n_bytes)
{
    *rows = 0;
    *n_bytes = 0;
    for (int i = 0; i < n; i++) {
        *rows += parts[i]->shape[0];
        *n_bytes += parts[i]->n_bytes;
    }
    char *buf = malloc(*n_bytes);
    size_t off = 0;
    for (int i = 0; buf && i < n; i++) {
        memcpy(buf + off, parts[i]->data, parts[i]->n_bytes);
        off += parts[i]->n_bytes;
    }
    return buf;
}

static const char *st_dtype(enum pl_dtype d)
{
    return d == PL_DTYPE_F32 ? "F32" : d == PL_DTYPE_F16 ? "F16" : "BF16";
}

/* Writes llama_dir's model as a Phi-3 checkpoint into phi_dir. */
static bool write_as_phi3(const char *llama_dir, const char *phi_dir, int n_layers)
{
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    if (pl_safetensors_open_dir(llama_dir, &st, &err) != PL_STATUS_OK)
        return false;
    struct tw_tensor t[MAX_TENSORS];
    void *owned[MAX_TENSORS];
    char names[MAX_TENSORS][96];
    int n = 0, n_owned = 0;
    for (int i = 0; i < pl_safetensors_count(st); i++) {
        const struct pl_tensor_info *ti = pl_safetensors_at(st, i);
        if (strstr(ti->name, "q_proj") || strstr(ti->name, "k_proj") ||
            strstr(ti->name, "v_proj") || strstr(ti->name, "gate_proj") ||
            strstr(ti->name, "up_proj"))
            continue; /* fused below */
        t[n++] = (struct tw_tensor){ti->name, st_dtype(ti->dtype), ti->n_dims,
                                    {ti->shape[0], ti->shape[1]}, ti->data, ti->n_bytes};
    }
    for (int l = 0; l < n_layers; l++) {
        static const char *const groups[2][4] = {
            {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.qkv_proj"},
            {"mlp.gate_proj", "mlp.up_proj", NULL, "mlp.gate_up_proj"}};
        for (int g = 0; g < 2; g++) {
            const struct pl_tensor_info *parts[3];
            int np = 0;
            for (int k = 0; k < 3 && groups[g][k]; k++) {
                char nm[96];
                snprintf(nm, sizeof(nm), "model.layers.%d.%s.weight", l, groups[g][k]);
                parts[np++] = pl_safetensors_find(st, nm);
                if (!parts[np - 1])
                    return false;
            }
            int64_t rows;
            size_t nb;
            owned[n_owned] = concat_rows(parts, np, &rows, &nb);
            snprintf(names[n], sizeof(names[n]), "model.layers.%d.%s.weight", l, groups[g][3]);
            t[n] = (struct tw_tensor){names[n], st_dtype(parts[0]->dtype), 2,
                                      {rows, parts[0]->shape[1]}, owned[n_owned], nb};
            n++, n_owned++;
        }
    }
    bool ok = tw_write_tensors(tw_path(phi_dir, "model.safetensors"), t, n) == 0;
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    pl_safetensors_free(st);
    /* the same config, as Phi-3 */
    json_t *cfg = json_load_file(tw_path(llama_dir, "config.json"), 0, NULL);
    ok = ok && cfg;
    if (ok) {
        json_object_set_new(cfg, "architectures", json_pack("[s]", "Phi3ForCausalLM"));
        json_object_set_new(cfg, "model_type", json_string("phi3"));
        json_object_set_new(cfg, "sliding_window", json_null());
        ok = json_dump_file(cfg, tw_path(phi_dir, "config.json"), 0) == 0;
    }
    json_decref(cfg);
    return ok;
}

static void test_phi3_is_llama_with_fused_tensors(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    char llama_dir[600], phi_dir[600];
    snprintf(llama_dir, sizeof(llama_dir), "%s/llama", dir);
    snprintf(phi_dir, sizeof(phi_dir), "%s/phi3", dir);
    struct pl_err err = {0};
    REQUIRE(pl_tiny_model_write("llama", llama_dir, &err) == PL_STATUS_OK);
    REQUIRE(mkdir(phi_dir, 0777) == 0);
    REQUIRE(write_as_phi3(llama_dir, phi_dir, 2));
    static int32_t ta[N_PROMPTS][12], tb[N_PROMPTS][12];
    static float la[N_PROMPTS][36], lb[N_PROMPTS][36];
    REQUIRE(run_model(llama_dir, ta, la));
    REQUIRE(run_model(phi_dir, tb, lb));
    CHECK(!memcmp(ta, tb, sizeof(ta)));
    CHECK(!memcmp(la, lb, sizeof(la)));
    tw_rmdir(dir);
}

/* Gemma's configs as transformers reads them, and its (1 + w) norms loaded as fp32. */
static void test_gemma_load(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    struct pl_err err = {0};
    static struct pl_model_config c2, c3;
    char d2[600], d3[600];
    snprintf(d2, sizeof(d2), "%s/g2", dir);
    snprintf(d3, sizeof(d3), "%s/g3", dir);
    REQUIRE(pl_tiny_model_write("gemma2", d2, &err) == PL_STATUS_OK);
    REQUIRE(pl_tiny_model_write("gemma3", d3, &err) == PL_STATUS_OK);
    REQUIRE(pl_model_config_load(d2, &c2, &err) == PL_STATUS_OK);
    REQUIRE(pl_model_config_load(d3, &c3, &err) == PL_STATUS_OK);
    /* Gemma 2: layers sliding, global, sliding; caps; scale 24^-0.5; sqrt(64) */
    CHECK(c2.layer_sliding_window[0] == 8 && c2.layer_sliding_window[1] == 0 &&
          c2.layer_sliding_window[2] == 8);
    CHECK(c2.attn_softcap == 5.0f && c2.final_softcap == 10.0f);
    CHECK(fabsf(c2.attn_scale - 1.0f / sqrtf(24.0f)) < 1e-7f && c2.embed_scale == 8.0f);
    CHECK(c2.act == PL_ACT_GELU_TANH && !c2.qk_norm && !c2.has_local_rope);
    /* Gemma 3: pattern 2, no caps, q/k norms, local rope 10000 default, global 1e6 linear 2 */
    CHECK(c3.layer_sliding_window[0] == 8 && c3.layer_sliding_window[1] == 0);
    CHECK(c3.attn_softcap == 0 && c3.final_softcap == 0 && c3.qk_norm && c3.has_local_rope);
    CHECK(c3.rope.theta == 1e6 && c3.rope.type == PL_ROPE_LINEAR && c3.rope.factor == 2.0);
    CHECK(c3.rope_local.theta == 10000.0 && c3.rope_local.type == PL_ROPE_DEFAULT);
    /* the norms: fp32 copies of 1 + w */
    struct pl_safetensors *st = NULL;
    struct pl_backend *be = NULL;
    struct pl_weights *w = NULL;
    REQUIRE(pl_safetensors_open_dir(d3, &st, &err) == PL_STATUS_OK);
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    REQUIRE(pl_weights_load(&c3, st, be, &w, &err) == PL_STATUS_OK);
    static const char *const names[] = {"model.layers.1.post_feedforward_layernorm.weight",
                                        "model.layers.0.self_attn.k_norm.weight",
                                        "model.norm.weight"};
    const struct pl_weight *slots[] = {&w->layers[1].ffn_post_norm, &w->layers[0].k_norm,
                                       &w->final_norm};
    for (int i = 0; i < 3; i++) {
        const struct pl_tensor_info *ti = pl_safetensors_find(st, names[i]);
        REQUIRE(ti);
        CHECK(slots[i]->dtype == PL_DTYPE_F32 && slots[i]->cols == ti->shape[0]);
        for (int64_t k = 0; k < ti->shape[0]; k++)
            CHECKF(((const float *)slots[i]->data)[k] ==
                       1.0f + pl_dtype_get_f32(ti->data, ti->dtype, (size_t)k),
                   "%s[%lld]", names[i], (long long)k);
    }
    pl_weights_free(w);
    pl_backend_free(be);
    pl_safetensors_free(st);
    tw_rmdir(dir);
}

/* The MoE presets: which layers are sparse, routing flags, experts read per expert. */
static void test_moe_load(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    static const struct {
        const char *preset;
        int n_experts, top_k, shared;
        bool norm;
        int n_layers;
        unsigned sparse; /* bit l: layer l has the sparse block */
    } cases[] = {
        {"mixtral", 4, 2, 0, true, 2, 0x3},
        {"qwen2moe", 8, 2, 64, false, 2, 0x1}, /* mlp_only_layers [1] */
        /* decoder_sparse_step 2 (layers 1 and 3), mlp_only_layers [3]: only layer 1 */
        {"qwen3moe", 8, 3, 0, true, 4, 0x2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char d[600];
        snprintf(d, sizeof(d), "%s/%s", dir, cases[i].preset);
        struct pl_err err = {0};
        static struct pl_model_config c;
        REQUIRE(pl_tiny_model_write(cases[i].preset, d, &err) == PL_STATUS_OK);
        REQUIRE(pl_model_config_load(d, &c, &err) == PL_STATUS_OK);
        CHECKF(c.n_experts == cases[i].n_experts && c.n_experts_per_tok == cases[i].top_k &&
                   c.norm_topk_prob == cases[i].norm &&
                   c.shared_expert_intermediate_size == cases[i].shared,
               "%s", cases[i].preset);
        CHECKF(c.n_layers == cases[i].n_layers, "%s: %d layers", cases[i].preset, c.n_layers);
        for (int l = 0; l < c.n_layers && l < cases[i].n_layers; l++)
            CHECKF(c.layer_moe[l] == ((cases[i].sparse >> l & 1u) != 0), "%s layer %d",
                   cases[i].preset, l);
        struct pl_safetensors *st = NULL;
        struct pl_backend *be = NULL;
        struct pl_weights *w = NULL;
        REQUIRE(pl_safetensors_open_dir(d, &st, &err) == PL_STATUS_OK);
        REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
        CHECKF(pl_weights_load(&c, st, be, &w, &err) == PL_STATUS_OK, "%s", err.msg);
        for (int l = 0; w && l < c.n_layers; l++) {
            const struct pl_layer_weights *L = &w->layers[l];
            if (c.layer_moe[l]) {
                CHECK(L->experts && L->router.rows == c.n_experts && !L->w_gate.data);
                const struct pl_expert_weights *e = &L->experts[c.n_experts - 1];
                CHECK(e->w_gate.rows == c.moe_intermediate_size && e->w_down.cols ==
                                                                   c.moe_intermediate_size);
                CHECK((L->sh_gate.data != NULL) == (cases[i].shared > 0));
            } else {
                CHECK(!L->experts && L->w_gate.rows == c.intermediate_size);
            }
        }
        pl_weights_free(w);
        pl_backend_free(be);
        pl_safetensors_free(st);
    }
    tw_rmdir(dir);
}

/* What the conversion walk saw: every slot in the target dtype ((1 + w) norms in fp32)
 * holding its checkpoint tensor's values (its row range when fused) converted. */
struct conv_check {
    const struct pl_model_config *cfg;
    const struct pl_safetensors *st;
    enum pl_dtype want;
    int n_slots, n_plus_one, n_bad;
    char first_bad[192];
};

static void conv_slot(void *ctx, const struct pl_tensor_spec *t, int layer, int expert,
                      const struct pl_weight *w)
{
    struct conv_check *k = ctx;
    char name[192];
    pl_tensor_spec_name(t, layer, expert, name, sizeof(name));
    const struct pl_tensor_info *ti = pl_safetensors_find(k->st, name);
    const bool plus_one = t->flags & PL_TENSOR_PLUS_ONE;
    bool ok = w && w->data && ti && w->dtype == (plus_one ? PL_DTYPE_F32 : k->want);
    /* a fused tensor's slot is rows [row_off, row_off + rows) of it */
    const size_t first = t->src_rows != PL_DIM_NONE
                             ? (size_t)pl_arch_dim(k->cfg, t->row_off) * (size_t)w->cols
                             : 0;
    const size_t n = ok ? (size_t)w->rows * (size_t)w->cols : 0;
    for (size_t i = 0; ok && i < n; i += n / 7 + 1) {
        float src = pl_dtype_get_f32(ti->data, ti->dtype, first + i), want;
        if (plus_one) {
            want = 1.0f + src;
        } else { /* the source element converted on its own */
            unsigned char one[4];
            ok = pl_dtype_convert(one, k->want, (const char *)ti->data +
                                                    (first + i) * pl_dtype_size(ti->dtype),
                                  ti->dtype, 1);
            want = pl_dtype_get_f32(one, k->want, 0);
        }
        ok = ok && pl_dtype_get_f32(w->data, w->dtype, i) == want;
    }
    k->n_slots++;
    k->n_plus_one += plus_one;
    if (!ok && k->n_bad++ == 0)
        snprintf(k->first_bad, sizeof(k->first_bad), "%s", name);
}

/* --dtype through the tensor table (weights.c load_slot): fused row ranges (Phi-3), (1 + w)
 * norms that stay fp32 (Gemma), per-expert tensors (MoE) are all converted and freed as
 * converted memory (ASan: no leak, no unmap of an allocation); a converted model runs. */
static void test_dtype_conversion(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    static const struct {
        const char *preset;
        enum pl_dtype want;
    } cases[] = {
        {"phi3", PL_DTYPE_F32},   {"gemma3", PL_DTYPE_F32}, {"qwen3moe", PL_DTYPE_F32},
        {"qwen2moe", PL_DTYPE_F16}, {"gemma2", PL_DTYPE_F16},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char d[600];
        snprintf(d, sizeof(d), "%s/%s", dir, cases[i].preset);
        struct pl_err err = {0};
        static struct pl_model_config c;
        REQUIRE(pl_tiny_model_write(cases[i].preset, d, &err) == PL_STATUS_OK);
        REQUIRE(pl_model_config_load(d, &c, &err) == PL_STATUS_OK);
        REQUIRE(c.dtype == PL_DTYPE_BF16); /* every tensor differs from the target */
        struct pl_safetensors *st = NULL;
        struct pl_backend *be = NULL;
        struct pl_weights *w = NULL;
        REQUIRE(pl_safetensors_open_dir(d, &st, &err) == PL_STATUS_OK);
        REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
        CHECKF(pl_weights_load_as(&c, st, be, (int)cases[i].want, &w, &err) == PL_STATUS_OK,
               "%s: %s", cases[i].preset, err.msg);
        if (w) {
            struct conv_check k = {.cfg = &c, .st = st, .want = cases[i].want};
            pl_weights_foreach(&c, w, conv_slot, &k);
            CHECKF(k.n_bad == 0, "%s: %d of %d slots wrong, first %s", cases[i].preset,
                   k.n_bad, k.n_slots, k.first_bad);
            /* every slot but the (1 + w) norms (their own fp32 copies) was converted */
            CHECKF(w->n_converted == k.n_slots - k.n_plus_one, "%s: %d converted of %d slots "
                   "(%d plus-one norms)", cases[i].preset, w->n_converted, k.n_slots,
                   k.n_plus_one);
            CHECK(w->embed.dtype == cases[i].want);
        }
        pl_weights_free(w);
        pl_backend_free(be);
        pl_safetensors_free(st);
    }
    /* the runner with --dtype float32 on a bf16 Phi-3 (fused tensors): the conversion is
     * exact, so the model computes what the bf16 weights give */
    char d[600];
    snprintf(d, sizeof(d), "%s/phi3", dir);
    static int32_t ta[N_PROMPTS][12], tb[N_PROMPTS][12];
    static float la[N_PROMPTS][36], lb[N_PROMPTS][36];
    const enum pl_dtype f32 = PL_DTYPE_F32;
    REQUIRE(run_model(d, ta, la));
    REQUIRE(run_model_as(d, &f32, tb, lb));
    CHECK(!memcmp(ta, tb, sizeof(ta)));
    float max_diff = 0;
    for (int p = 0; p < N_PROMPTS; p++)
        for (int j = 0; j < 36; j++)
            max_diff = fmaxf(max_diff, fabsf(la[p][j] - lb[p][j]));
    CHECKF(max_diff < 1e-4f, "phi3 bf16 vs converted f32: logprobs differ by %g", max_diff);
    tw_rmdir(dir);
}

int main(void)
{
    PL_RUN(test_phi3_is_llama_with_fused_tensors);
    PL_RUN(test_gemma_load);
    PL_RUN(test_moe_load);
    PL_RUN(test_dtype_conversion);
    return pl_test_summary();
}
