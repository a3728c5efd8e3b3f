/*
 * test_quant.c -- quantized checkpoints (model/quant.h, quant_dequant.c,
 * quant_pack.c) on the CPU backend, the specification.
 *
 *   1. quantization_config as each producer writes it is read into the fields the
 *      loader needs; other methods and values are refused naming them;
 *   2. the bit layouts, checked against words worked out by hand from the formats'
 *      definitions (AutoAWQ's nibble order, GPTQ's v1 zero - 1, compressed-tensors'
 *      offset storage, e4m3 values), independently of the packer;
 *   3. every test format of pl-mkmodel --quant: the quantized model's greedy tokens
 *      and top-5 logprobs equal those of the dense model built from its dequantized
 *      weights (the reference: transformers runs that dense model);
 *   4. bad files: a missing scale, a mis-shaped packed tensor, a g_idx out of range
 *      are refused naming the tensor;
 *   5. --quantization (agreement with the checkpoint, fp8 at load);
 *   6. the FP8 KV cache on the CPU backend (the specification): attention over e4m3
 *      equals attention over the same values rounded in fp32; 4x the fp32 tokens.
 */
#include "test.h"

#include "engine/greedy.h"
#include "engine/model_runner.h"
#include "model/quant.h"
#include "model/quant_pack.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct pl_quant_config parse_ok(const char *text)
{
    struct pl_quant_config q;
    struct pl_err err = {0};
    pl_status st = pl_quant_config_parse_text(text, strlen(text), &q, &err);
    CHECKF(st == PL_STATUS_OK, "%s -> %s", text, err.msg);
    return q;
}

static void parse_fails(const char *text, pl_status want, const char *needle)
{
    struct pl_quant_config q;
    struct pl_err err = {0};
    pl_status st = pl_quant_config_parse_text(text, strlen(text), &q, &err);
    CHECKF(st == want, "%s: status %d, want %d (%s)", text, st, want, err.msg);
    CHECKF(strstr(err.msg, needle) != NULL, "%s: message '%s' lacks '%s'", text, err.msg, needle);
    CHECK(q.method == PL_QUANT_NONE);
}

static void test_parse_producers(void)
{
    struct pl_quant_config q = parse_ok(
        "{\"bits\": 4, \"group_size\": 128, \"modules_to_not_convert\": null, \"quant_method\": "
        "\"awq\", \"version\": \"gemm\", \"zero_point\": true}");
    CHECK(q.method == PL_QUANT_AWQ && q.bits == 4 && q.group_size == 128 && !q.sym);
    /* AutoAWQ's own quant_config.json spelling */
    q = parse_ok("{\"quant_method\": \"awq\", \"w_bit\": 4, \"q_group_size\": 64, \"version\": "
                 "\"GEMM\", \"zero_point\": true}");
    CHECK(q.method == PL_QUANT_AWQ && q.group_size == 64);
    q = parse_ok("{\"bits\": 8, \"checkpoint_format\": \"gptq_v2\", \"desc_act\": true, "
                 "\"dynamic\": {}, \"group_size\": -1, \"lm_head\": false, \"meta\": {\"quantizer\": "
                 "[\"gptqmodel:1.4.5\"]}, \"pack_dtype\": \"int32\", \"quant_method\": \"gptq\", "
                 "\"sym\": false}");
    CHECK(q.method == PL_QUANT_GPTQ && q.bits == 8 && q.group_size == -1 && q.desc_act &&
          !q.sym && q.gptq_v2 && q.weight_strategy == PL_QSTRAT_CHANNEL);
    q = parse_ok("{\"bits\": 4, \"group_size\": 32, \"desc_act\": false, \"quant_method\": "
                 "\"gptq\"}");
    CHECK(q.sym && !q.gptq_v2 && !q.desc_act && q.group_size == 32); /* AutoGPTQ defaults */
    int n = 0;
    const char *const *formats = pl_quant_format_list(&n);
    CHECK(n >= 15);
    for (int i = 0; i < n; i++) {
        q = parse_ok(pl_quant_format_config(formats[i]));
        CHECKF(q.method != PL_QUANT_NONE, "%s", formats[i]);
    }
    q = parse_ok(pl_quant_format_config("ct_w4a16_g32_asym_act"));
    CHECK(q.method == PL_QUANT_CT_PACKED && q.group_size == 32 && !q.sym && q.desc_act &&
          q.n_ignore == 1 && !strcmp(q.ignore[0], "lm_head"));
    q = parse_ok(pl_quant_format_config("ct_fp8_channel_dynamic"));
    CHECK(q.method == PL_QUANT_CT_FP8 && q.weight_strategy == PL_QSTRAT_CHANNEL && q.act_quant &&
          q.act_dynamic && q.act_strategy == PL_QSTRAT_TOKEN);
    q = parse_ok(pl_quant_format_config("ct_fp8_tensor_static"));
    CHECK(q.weight_strategy == PL_QSTRAT_TENSOR && q.act_quant && !q.act_dynamic);
    q = parse_ok(pl_quant_format_config("fp8_block"));
    CHECK(q.method == PL_QUANT_FP8 && q.weight_strategy == PL_QSTRAT_BLOCK && q.block_n == 64 &&
          q.block_k == 64);
    q = parse_ok(pl_quant_format_config("fp8_static"));
    CHECK(q.method == PL_QUANT_FP8 && !q.act_dynamic && q.n_ignore == 1);
}

static void test_parse_refusals(void)
{
    parse_fails("{\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true}",
                PL_STATUS_UNSUPPORTED, "quant_method bitsandbytes; fields: quant_method, "
                                       "load_in_4bit");
    parse_fails("{\"bits\": 4}", PL_STATUS_UNSUPPORTED, "quant_method is missing");
    parse_fails("{\"quant_method\": \"awq\", \"version\": \"gemv\"}", PL_STATUS_UNSUPPORTED,
                "gemm");
    parse_fails("{\"quant_method\": \"awq\", \"zero_point\": false}", PL_STATUS_UNSUPPORTED,
                "zero_point");
    parse_fails("{\"quant_method\": \"awq\", \"group_size\": -1}", PL_STATUS_UNSUPPORTED,
                "group_size");
    parse_fails("{\"quant_method\": \"gptq\", \"bits\": 3}", PL_STATUS_UNSUPPORTED,
                "bits must be 4 or 8");
    parse_fails("{\"quant_method\": \"gptq\", \"group_size\": 16}", PL_STATUS_UNSUPPORTED,
                "group_size");
    parse_fails("{\"quant_method\": \"gptq\", \"checkpoint_format\": \"marlin\"}",
                PL_STATUS_UNSUPPORTED, "checkpoint_format");
    parse_fails("{\"quant_method\": \"gptq\", \"lm_head\": true}", PL_STATUS_UNSUPPORTED,
                "lm_head");
    parse_fails("{\"quant_method\": \"gptq\", \"dynamic\": {\"-:.*\": {}}}", PL_STATUS_UNSUPPORTED,
                "dynamic");
    parse_fails("{\"quant_method\": \"gptq\", \"bits\": \"4\"}", PL_STATUS_FORMAT, "bits");
    parse_fails("{\"quant_method\": \"fp8\", \"activation_scheme\": \"weird\"}",
                PL_STATUS_UNSUPPORTED, "activation_scheme");
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": \"lm_head\"}", PL_STATUS_FORMAT,
                "ignored_layers");
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": [\"re:[\"]}",
                PL_STATUS_UNSUPPORTED, "re:[");
    /* nested repetitions make glibc's regcomp copy subtrees without bound (fuzzer-found) */
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": [\"re:a+++++++++\"]}",
                PL_STATUS_UNSUPPORTED, "at most 16 repetitions");
    /* repetitions nested deep make its epsilon closures explode: this one (fuzzer-found,
     * 16 repetitions, none adjacent) ran for minutes */
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": "
                "[\"re:((((((((((a*)*)*)*)*)*)*(((a*)*)*)*))*)+)*\"]}",
                PL_STATUS_UNSUPPORTED, "nested at most two deep");
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": [\"re:((a*)*)*\"]}",
                PL_STATUS_UNSUPPORTED, "nested at most two deep");
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": [\"re:(a{1,255}){2}\"]}",
                PL_STATUS_UNSUPPORTED, "counts up to 64");
    parse_fails("{\"quant_method\": \"fp8\", \"ignored_layers\": [\"re:[a-z\"]}",
                PL_STATUS_UNSUPPORTED, "re:[a-z");
    /* two deep, bracket contents literal, groups of alternatives: read */
    const struct pl_quant_config q = parse_ok(
        "{\"quant_method\": \"fp8\", \"ignored_layers\": [\"re:(a*)*\", \"re:[*(]+x{2,64}\", "
        "\"re:model\\\\.layers\\\\.[0-9]+\\\\.(self_attn|mlp)\\\\..*\"]}");
    CHECK(q.n_ignore == 3);
    parse_fails("{\"quant_method\": \"compressed-tensors\", \"format\": \"int-quantized\", "
                "\"config_groups\": {\"g\": {\"targets\": [\"Linear\"], \"weights\": {\"num_bits\": "
                "8, \"type\": \"int\", \"strategy\": \"channel\"}}}}",
                PL_STATUS_UNSUPPORTED, "int-quantized");
    parse_fails("{\"quant_method\": \"compressed-tensors\", \"format\": \"float-quantized\", "
                "\"kv_cache_scheme\": {\"num_bits\": 8}, \"config_groups\": {}}",
                PL_STATUS_UNSUPPORTED, "kv_cache_scheme");
    parse_fails("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", "
                "\"config_groups\": {\"a\": {}, \"b\": {}}}",
                PL_STATUS_UNSUPPORTED, "exactly one scheme");
    parse_fails("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", "
                "\"config_groups\": {\"g\": {\"targets\": [\"Embedding\"], \"weights\": {}}}}",
                PL_STATUS_UNSUPPORTED, "Embedding");
    parse_fails("[1]", PL_STATUS_FORMAT, "not an object");
}

static void test_targets_and_flags(void)
{
    struct pl_quant_config q = parse_ok(
        "{\"quant_method\": \"awq\", \"modules_to_not_convert\": [\"lm_head\", "
        "\"re:.*mlp\\\\.down_proj$\", \"layers.1.self_attn\"]}");
    CHECK(!pl_quant_module_is_quantized(&q, "lm_head"));
    CHECK(!pl_quant_module_is_quantized(&q, "model.layers.0.mlp.down_proj"));
    CHECK(pl_quant_module_is_quantized(&q, "model.layers.0.mlp.up_proj"));
    CHECK(!pl_quant_module_is_quantized(&q, "model.layers.1.self_attn.q_proj"));
    CHECK(pl_quant_module_is_quantized(&q, "model.layers.11.self_attn.q_proj"));
    struct pl_quant_config none = {0};
    CHECK(!pl_quant_module_is_quantized(&none, "model.layers.0.mlp.up_proj"));
    /* compressed-tensors targets given as regexes */
    q = parse_ok("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", "
                 "\"config_groups\": {\"g\": {\"targets\": [\"re:.*self_attn\\\\.(q|k)_proj$\"], "
                 "\"weights\": {\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"group\", "
                 "\"group_size\": 128, \"symmetric\": true}}}}");
    CHECK(pl_quant_module_is_quantized(&q, "model.layers.3.self_attn.k_proj"));
    CHECK(!pl_quant_module_is_quantized(&q, "model.layers.3.self_attn.v_proj"));
    /* --quantization */
    struct pl_err err = {0};
    struct pl_quant_config awq = parse_ok(pl_quant_format_config("awq_g128"));
    struct pl_quant_config c = awq;
    CHECK(pl_quant_config_apply_flag(&c, "awq_marlin", &err) == PL_STATUS_OK);
    CHECK(pl_quant_config_apply_flag(&c, NULL, &err) == PL_STATUS_OK && c.method == PL_QUANT_AWQ);
    CHECK(pl_quant_config_apply_flag(&c, "gptq", &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "quant_method awq") != NULL);
    c = none;
    CHECK(pl_quant_config_apply_flag(&c, "awq", &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "not quantized") != NULL);
    CHECK(pl_quant_config_apply_flag(&c, "fp8", &err) == PL_STATUS_OK);
    CHECK(c.method == PL_QUANT_FP8 && c.online && !pl_quant_module_is_quantized(&c, "lm_head"));
    CHECK(pl_quant_config_apply_flag(&c, "bogus", &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(!pl_quant_flag_known("bogus") && pl_quant_flag_known("gptq_marlin") &&
          pl_quant_flag_known(NULL));
    enum pl_kv_cache_dtype kd;
    CHECK(pl_kv_cache_dtype_parse("fp8", &kd) && kd == PL_KV_CACHE_FP8_E4M3);
    CHECK(pl_kv_cache_dtype_parse("auto", &kd) && kd == PL_KV_CACHE_AUTO);
    CHECK(!pl_kv_cache_dtype_parse("fp8_e5m2", &kd) && !pl_kv_cache_dtype_parse("int8", &kd));
}

static void test_fp8_e4m3(void)
{
    /* values worked out from the e4m3fn definition (bias 7, no inf, 0x7e = 448) */
    CHECK(pl_f8e4m3_to_f32(0x00) == 0.0f && pl_f8e4m3_to_f32(0x38) == 1.0f);
    CHECK(pl_f8e4m3_to_f32(0x7e) == 448.0f && pl_f8e4m3_to_f32(0xfe) == -448.0f);
    CHECK(pl_f8e4m3_to_f32(0x01) == 1.0f / 512.0f);      /* smallest subnormal */
    CHECK(pl_f8e4m3_to_f32(0x08) == 1.0f / 64.0f);       /* smallest normal */
    CHECK(pl_f8e4m3_to_f32(0x3c) == 1.5f && pl_f8e4m3_to_f32(0xc0) == -2.0f);
    CHECK(isnan(pl_f8e4m3_to_f32(0x7f)));
    CHECK(pl_f32_to_f8e4m3(1.0f) == 0x38 && pl_f32_to_f8e4m3(-2.0f) == 0xc0);
    CHECK(pl_f32_to_f8e4m3(1000.0f) == 0x7e && pl_f32_to_f8e4m3(-1e9f) == 0xfe);
    CHECK(pl_f32_to_f8e4m3(1.0625f) == 0x38); /* halfway 1 .. 1.125: to even (1) */
    CHECK(pl_f32_to_f8e4m3(1.1875f) == 0x3a); /* halfway 1.125 .. 1.25: to even (1.25) */
    CHECK(pl_f32_to_f8e4m3(3.0f / 1024.0f) == 0x02); /* 1.5 subnormal steps: to even (2) */
    /* every code round-trips */
    for (int b = 0; b < 256; b++)
        if ((b & 0x7f) != 0x7f)
            CHECKF(pl_f32_to_f8e4m3(pl_f8e4m3_to_f32((uint8_t)b)) == (b == 0x80 ? 0x80 : b),
                   "code %#x", b);
}

/* ---- hand-made layouts ---------------------------------------------------------------- */

/* A one-tensor-set checkpoint written by the test's own writer. */
static struct pl_safetensors *open_list(const char *dir, struct pl_qt_list *l)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    struct pl_err err = {0};
    struct pl_safetensors *st = NULL;
    if (pl_qt_write_safetensors(path, l, &err) != PL_STATUS_OK ||
        pl_safetensors_open_file(path, &st, &err) != PL_STATUS_OK) {
        fprintf(stderr, "open_list: %s\n", err.msg);
        exit(1);
    }
    return st;
}

static void test_layouts_by_hand(void)
{
    char tmpl[] = "/tmp/pl_quant_XXXXXX";
    char *dir = mkdtemp(tmpl);
    REQUIRE(dir);
    struct pl_err err = {0};
    float out[8 * 8];
    /* AWQ, K = 32 (one group of 32), N = 8: word 0x76543210 holds nibble i = i, so column j
     * (at nibble REVERSE[j] = 0 4 1 5 2 6 3 7) has code REVERSE[j]; zeros word 0x11111111
     * (zero 1 everywhere), scale of column j = j + 1 (fp16). */
    {
        struct pl_qt_list l = {0};
        struct pl_qt_tensor *t = pl_qt_add(&l, "m.qweight", PL_DTYPE_I32, 2, 32, 1);
        for (int i = 0; i < 32; i++)
            ((uint32_t *)t->data)[i] = 0x76543210u;
        t = pl_qt_add(&l, "m.qzeros", PL_DTYPE_I32, 2, 1, 1);
        ((uint32_t *)t->data)[0] = 0x11111111u;
        t = pl_qt_add(&l, "m.scales", PL_DTYPE_F16, 2, 1, 8);
        for (int j = 0; j < 8; j++)
            ((uint16_t *)t->data)[j] = pl_f32_to_f16((float)(j + 1));
        struct pl_safetensors *st = open_list(dir, &l);
        struct pl_quant_config q = parse_ok("{\"quant_method\": \"awq\", \"group_size\": 32}");
        float w[8 * 32];
        REQUIRE(pl_quant_dequant(&q, st, "m", 8, 32, 0, 8, w, &err) == PL_STATUS_OK);
        static const int rev[8] = {0, 4, 1, 5, 2, 6, 3, 7};
        for (int j = 0; j < 8; j++)
            CHECKF(w[j * 32 + 5] == (float)((rev[j] - 1) * (j + 1)), "AWQ column %d: %g", j,
                   w[j * 32 + 5]);
        /* rows 2..4 only (a fused slot's range) */
        REQUIRE(pl_quant_dequant(&q, st, "m", 8, 32, 2, 4, w, &err) == PL_STATUS_OK);
        CHECK(w[0] == (float)((1 - 1) * 3) && w[32] == (float)((5 - 1) * 4));
        pl_safetensors_free(st);
        pl_qt_list_free(&l);
    }
    /* GPTQ 4-bit v1, K = 8, N = 8, per channel: qweight row 0 word for column r holds input i
     * at bits 4i: code i + r (masked); qzeros word 0x76543210: stored z = r, zero r + 1;
     * scale 0.5. v2 reads the same zeros as r. */
    for (int v2 = 0; v2 < 2; v2++) {
        struct pl_qt_list l = {0};
        struct pl_qt_tensor *t = pl_qt_add(&l, "m.qweight", PL_DTYPE_I32, 2, 1, 8);
        for (int r = 0; r < 8; r++) {
            uint32_t wd = 0;
            for (int i = 0; i < 8; i++)
                wd |= (uint32_t)((i + r) & 15) << (4 * i);
            ((uint32_t *)t->data)[r] = wd;
        }
        t = pl_qt_add(&l, "m.qzeros", PL_DTYPE_I32, 2, 1, 1);
        ((uint32_t *)t->data)[0] = 0x76543210u;
        t = pl_qt_add(&l, "m.scales", PL_DTYPE_F16, 2, 1, 8);
        for (int j = 0; j < 8; j++)
            ((uint16_t *)t->data)[j] = pl_f32_to_f16(0.5f);
        struct pl_safetensors *st = open_list(dir, &l);
        struct pl_quant_config q = parse_ok(
            v2 ? "{\"quant_method\": \"gptq\", \"group_size\": -1, \"checkpoint_format\": "
                 "\"gptq_v2\"}"
               : "{\"quant_method\": \"gptq\", \"group_size\": -1}");
        float w[64];
        REQUIRE(pl_quant_dequant(&q, st, "m", 8, 8, 0, 8, w, &err) == PL_STATUS_OK);
        for (int r = 0; r < 8; r++)
            for (int i = 0; i < 8; i++)
                CHECKF(w[r * 8 + i] == 0.5f * (float)(((i + r) & 15) - (r + (v2 ? 0 : 1))),
                       "GPTQ v%d [%d][%d] = %g", v2 + 1, r, i, w[r * 8 + i]);
        pl_safetensors_free(st);
        pl_qt_list_free(&l);
    }
    /* compressed-tensors 4-bit asymmetric, N = 8, K = 8, channel: weight_packed row r word
     * holds input i at bits 4i: stored i + 4 (signed i - 4); zero points packed along the
     * outputs: row r's stored zero r (signed r - 8); scale 2 (bf16). */
    {
        struct pl_qt_list l = {0};
        struct pl_qt_tensor *t = pl_qt_add(&l, "m.weight_packed", PL_DTYPE_I32, 2, 8, 1);
        for (int r = 0; r < 8; r++) {
            uint32_t wd = 0;
            for (int i = 0; i < 8; i++)
                wd |= (uint32_t)(i + 4) << (4 * i);
            ((uint32_t *)t->data)[r] = wd;
        }
        t = pl_qt_add(&l, "m.weight_zero_point", PL_DTYPE_I32, 2, 1, 1);
        ((uint32_t *)t->data)[0] = 0x76543210u;
        t = pl_qt_add(&l, "m.weight_scale", PL_DTYPE_BF16, 2, 8, 1);
        for (int j = 0; j < 8; j++)
            ((uint16_t *)t->data)[j] = pl_f32_to_bf16(2.0f);
        t = pl_qt_add(&l, "m.weight_shape", PL_DTYPE_I64, 1, 2, 0);
        ((int64_t *)t->data)[0] = 8;
        ((int64_t *)t->data)[1] = 8;
        struct pl_safetensors *st = open_list(dir, &l);
        struct pl_quant_config q = parse_ok(
            "{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", "
            "\"config_groups\": {\"g\": {\"targets\": [\"Linear\"], \"weights\": {\"num_bits\": "
            "4, \"type\": \"int\", \"strategy\": \"channel\", \"symmetric\": false}}}}");
        float w[64];
        REQUIRE(pl_quant_dequant(&q, st, "m", 8, 8, 0, 8, w, &err) == PL_STATUS_OK);
        for (int r = 0; r < 8; r++)
            for (int i = 0; i < 8; i++)
                CHECKF(w[r * 8 + i] == 2.0f * (float)((i - 4) - (r - 8)), "CT [%d][%d] = %g", r,
                       i, w[r * 8 + i]);
        pl_safetensors_free(st);
        pl_qt_list_free(&l);
    }
    (void)out;
    char path[512];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    unlink(path);
    rmdir(dir);
}

/* ---- whole models ----------------------------------------------------------------------- */

static const int32_t PROMPT_A[] = {1, 17, 230, 5, 88, 301, 42, 7, 19, 400, 11, 3};
static const int32_t PROMPT_B[] = {2, 99, 100, 101, 7};

static pl_status open_runner(const char *dir, const char *quantization,
                             struct pl_model_runner **r, struct pl_err *err)
{
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.model_dir = dir;
    p.n_threads = 1;
    p.num_kv_blocks = 16;
    p.max_num_seqs = 4;
    p.max_num_batched_tokens = 64;
    p.max_model_len = 64;
    p.quantization = quantization;
    return pl_model_runner_new(&p, r, err);
}

/* Greedy tokens and top-5 logprobs of two prompts. */
static bool run_model(const char *dir, const char *quantization, struct pl_greedy_seq s[2])
{
    struct pl_model_runner *r = NULL;
    struct pl_err err = {0};
    pl_status st = open_runner(dir, quantization, &r, &err);
    CHECKF(st == PL_STATUS_OK, "%s: %s", dir, err.msg);
    if (st != PL_STATUS_OK)
        return false;
    memset(s, 0, 2 * sizeof(*s));
    s[0] = (struct pl_greedy_seq){.prompt = PROMPT_A, .n_prompt = 12, .max_tokens = 10,
                                  .n_logprobs = 5};
    s[1] = (struct pl_greedy_seq){.prompt = PROMPT_B, .n_prompt = 5, .max_tokens = 8,
                                  .n_logprobs = 5};
    st = pl_greedy_generate(r, s, 2, 0, &err);
    CHECKF(st == PL_STATUS_OK, "%s: %s", dir, err.msg);
    pl_model_runner_free(r);
    return st == PL_STATUS_OK;
}

/* a and b agree: tokens exactly, logprobs within tol. */
static void compare_runs(const char *what, struct pl_greedy_seq a[2], struct pl_greedy_seq b[2],
                         float tol)
{
    for (int i = 0; i < 2; i++) {
        CHECKF(a[i].n_out == b[i].n_out, "%s prompt %d: %d vs %d tokens", what, i, a[i].n_out,
               b[i].n_out);
        for (int t = 0; t < a[i].n_out && t < b[i].n_out; t++) {
            CHECKF(a[i].out_tokens[t] == b[i].out_tokens[t], "%s prompt %d token %d: %d vs %d",
                   what, i, t, a[i].out_tokens[t], b[i].out_tokens[t]);
            for (int k = 0; k < 5; k++)
                CHECKF(fabsf(a[i].top_logprobs[t * 5 + k] - b[i].top_logprobs[t * 5 + k]) <= tol,
                       "%s prompt %d token %d top %d: %g vs %g", what, i, t, k,
                       a[i].top_logprobs[t * 5 + k], b[i].top_logprobs[t * 5 + k]);
        }
    }
}

static char *g_root;

/* Every format on the dense preset and on the MoE one (whose int4 experts the CPU keeps
 * packed and multiplies in the moe op's products) against the same model with the weights
 * dequantized into its checkpoint. */
static void test_formats_match_dequantized_reference(void)
{
    int n = 0;
    const char *const *formats = pl_quant_format_list(&n);
    static const char *const presets[2] = {"llama-quant", "qwen3moe-quant"};
    for (int f = 0; f < 2 * n; f++) {
        const char *preset = presets[f / n], *format = formats[f % n];
        char qdir[512], ddir[520];
        /* the dense preset's at <root>/<format>, which the tests below reuse */
        snprintf(qdir, sizeof(qdir), "%s/%s%s", g_root, f < n ? "" : "moe-", format);
        snprintf(ddir, sizeof(ddir), "%s.dense", qdir);
        struct pl_err err = {0};
        pl_status st = pl_quant_write_model(preset, format, qdir, ddir, &err);
        CHECKF(st == PL_STATUS_OK, "%s %s: %s", preset, format, err.msg);
        if (st != PL_STATUS_OK)
            continue;
        struct pl_greedy_seq q[2], d[2];
        if (run_model(qdir, NULL, q)) {
            if (run_model(ddir, NULL, d)) {
                /* both compute in fp32 over the same fp32 weights: the same bits */
                compare_runs(qdir, q, d, 0.0f);
                for (int i = 0; i < 2; i++)
                    pl_greedy_seq_fini(&d[i]);
            }
            for (int i = 0; i < 2; i++)
                pl_greedy_seq_fini(&q[i]);
        }
    }
}

/* The int4 device layout (pl_quant_repack_int4, what a backend's packed matmul reads) gives
 * back the reference's weights exactly, for every int4 format. */
static void test_int4_repack_matches_reference(void)
{
    int n = 0;
    const char *const *formats = pl_quant_format_list(&n);
    for (int f = 0; f < n; f++) {
        struct pl_quant_config q = parse_ok(pl_quant_format_config(formats[f]));
        if (!pl_quant_is_int4(&q))
            continue;
        char path[600];
        snprintf(path, sizeof(path), "%s/%s/model.safetensors", g_root, formats[f]);
        struct pl_safetensors *st = NULL;
        struct pl_err err = {0};
        REQUIRE(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK);
        static const struct {
            const char *module;
            int64_t n, k;
        } mods[] = {{"model.layers.0.mlp.down_proj", 256, 512},
                    {"model.layers.1.self_attn.k_proj", 128, 256}};
        for (int m = 0; m < 2; m++) {
            const int64_t N = mods[m].n, K = mods[m].k, r0 = 8, r1 = N - 8;
            float *ref = malloc(sizeof(float) * (size_t)(N * K));
            uint32_t *codes = malloc(sizeof(uint32_t) * (size_t)(N * K / 8));
            uint8_t *zeros = malloc((size_t)(N * K / 8));
            float *scales = malloc(sizeof(float) * (size_t)(N * K / 8));
            int32_t *gidx = malloc(sizeof(int32_t) * (size_t)K);
            bool has_gidx = false;
            int group = 0;
            int64_t groups = 0;
            REQUIRE(ref && codes && zeros && scales && gidx);
            CHECK(pl_quant_dequant(&q, st, mods[m].module, N, K, 0, N, ref, &err) == PL_STATUS_OK);
            CHECKF(pl_quant_repack_int4(&q, st, mods[m].module, N, K, r0, r1, codes, zeros, scales,
                                        gidx, &has_gidx, &group, &groups, &err) == PL_STATUS_OK,
                   "%s: %s", formats[f], err.msg);
            CHECK(has_gidx == q.desc_act);
            int bad = 0;
            for (int64_t r = r0; r < r1 && !bad; r++)
                for (int64_t k = 0; k < K; k++) {
                    int64_t g = has_gidx ? gidx[k] : k / group;
                    int code = (int)((codes[(r - r0) * (K / 8) + k / 8] >> (4 * (k % 8))) & 15u);
                    float w = (float)(code - zeros[(r - r0) * groups + g]) *
                              scales[(r - r0) * groups + g];
                    if (w != ref[r * K + k]) {
                        CHECKF(0, "%s %s [%lld][%lld]: %g, reference %g", formats[f],
                               mods[m].module, (long long)r, (long long)k, w, ref[r * K + k]);
                        bad = 1;
                        break;
                    }
                }
            free(ref);
            free(codes);
            free(zeros);
            free(scales);
            free(gidx);
        }
        pl_safetensors_free(st);
    }
}

/* A compressed-tensors weight_g_idx that equals k / group (stored without act-order) is
 * dropped by the repack (the same groups), and a scrambled one is kept. */
static void test_int4_trivial_g_idx(void)
{
    struct pl_quant_config q = parse_ok(pl_quant_format_config("ct_w4a16_g128"));
    const int64_t N = 16, K = 512;
    float *w = malloc(sizeof(float) * N * K), *ref = malloc(sizeof(float) * N * K);
    uint32_t *codes = malloc(sizeof(uint32_t) * N * K / 8);
    uint8_t *zeros = malloc(N * 4);
    float *scales = malloc(sizeof(float) * N * 4);
    int32_t *gidx = malloc(sizeof(int32_t) * K);
    REQUIRE(w && ref && codes && zeros && scales && gidx);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = (float)((i * 7919) % 101) / 1000.0f - 0.05f;
    for (int scrambled = 0; scrambled < 2; scrambled++) {
        struct pl_err err = {0};
        struct pl_qt_list l = {0};
        REQUIRE(pl_quant_pack(&q, "m", w, N, K, PL_DTYPE_BF16, 3, &l, ref, &err) ==
                PL_STATUS_OK);
        struct pl_qt_tensor *t = pl_qt_add(&l, "m.weight_g_idx", PL_DTYPE_I32, 1, K, 0);
        REQUIRE(t);
        for (int64_t k = 0; k < K; k++) /* scrambled: groups swapped in pairs */
            ((int32_t *)t->data)[k] = (int32_t)(scrambled ? (k / 128) ^ 1 : k / 128);
        char path[600];
        snprintf(path, sizeof(path), "%s/gidx_%d.safetensors", g_root, scrambled);
        REQUIRE(pl_qt_write_safetensors(path, &l, &err) == PL_STATUS_OK);
        pl_qt_list_free(&l);
        struct pl_safetensors *st = NULL;
        REQUIRE(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK);
        bool has_gidx = true;
        int group = 0;
        int64_t groups = 0;
        CHECK(pl_quant_dequant(&q, st, "m", N, K, 0, N, ref, &err) == PL_STATUS_OK);
        CHECKF(pl_quant_repack_int4(&q, st, "m", N, K, 0, N, codes, zeros, scales, gidx,
                                    &has_gidx, &group, &groups, &err) == PL_STATUS_OK,
               "%s", err.msg);
        CHECK(has_gidx == (scrambled == 1) && group == 128 && groups == 4);
        int bad = 0;
        for (int64_t r = 0; r < N && !bad; r++)
            for (int64_t k = 0; k < K && !bad; k++) {
                const int64_t g = has_gidx ? gidx[k] : k / group;
                const int code = (int)((codes[r * (K / 8) + k / 8] >> (4 * (k % 8))) & 15u);
                const float v = (float)(code - zeros[r * groups + g]) * scales[r * groups + g];
                bad = v != ref[r * K + k];
            }
        CHECKF(!bad, "g_idx %s: the repacked weights differ from the reference",
               scrambled ? "scrambled" : "trivial");
        pl_safetensors_free(st);
    }
    free(w);
    free(ref);
    free(codes);
    free(zeros);
    free(scales);
    free(gidx);
}

/* The quantization is real: a 4-bit model's logprobs move away from the bf16 model's. */
static void test_quantized_differs_from_dense(void)
{
    char dense[512], qdir[512];
    snprintf(dense, sizeof(dense), "%s/awq_g128.dense", g_root);
    snprintf(qdir, sizeof(qdir), "%s/plain", g_root);
    struct pl_err err = {0};
    REQUIRE(pl_tiny_model_write("llama-quant", qdir, &err) == PL_STATUS_OK);
    struct pl_greedy_seq a[2], b[2];
    REQUIRE(run_model(qdir, NULL, a));
    if (!run_model(dense, NULL, b)) {
        for (int i = 0; i < 2; i++)
            pl_greedy_seq_fini(&a[i]);
        return;
    }
    float max_diff = 0;
    for (int t = 0; t < a[0].n_out && t < b[0].n_out; t++)
        max_diff = fmaxf(max_diff, fabsf(a[0].top_logprobs[t * 5] - b[0].top_logprobs[t * 5]));
    CHECKF(max_diff > 1e-4f, "AWQ int4 logprobs equal the bf16 model's (%g)", max_diff);
    for (int i = 0; i < 2; i++) {
        pl_greedy_seq_fini(&a[i]);
        pl_greedy_seq_fini(&b[i]);
    }
}

/* --quantization fp8 on the bf16 model: equals the model whose weights were rounded
 * through e4m3 with one scale per tensor, computed here independently. */
static void test_online_fp8(void)
{
    char plain[512], ref[512];
    snprintf(plain, sizeof(plain), "%s/plain", g_root);
    snprintf(ref, sizeof(ref), "%s/fp8_dynamic.dense", g_root);
    struct pl_greedy_seq a[2], b[2];
    REQUIRE(run_model(plain, "fp8", a));
    /* fp8_dynamic packs every linear per tensor with scale max|w| / 448: the same numbers */
    if (!run_model(ref, NULL, b)) {
        for (int i = 0; i < 2; i++)
            pl_greedy_seq_fini(&a[i]);
        return;
    }
    compare_runs("--quantization fp8", a, b, 0.0f);
    for (int i = 0; i < 2; i++) {
        pl_greedy_seq_fini(&a[i]);
        pl_greedy_seq_fini(&b[i]);
    }
    struct pl_model_runner *r = NULL;
    struct pl_err err = {0};
    CHECK(open_runner(plain, "awq", &r, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "not quantized") != NULL);
    char awq[512];
    snprintf(awq, sizeof(awq), "%s/awq_g32", g_root);
    CHECK(open_runner(awq, "gptq", &r, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(open_runner(awq, "awq_marlin", &r, &err) == PL_STATUS_OK);
    pl_model_runner_free(r);
}

/* The FP8 KV cache's specification: attention over an e4m3 cache equals attention over an
 * fp32 cache holding the same values rounded through e4m3 (scale 1, saturating). */
static void test_kv_cache_fp8_attention(void)
{
    struct pl_backend *a = NULL, *b = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_backend_cpu_new(1, &a, &err) == PL_STATUS_OK);
    REQUIRE(pl_backend_cpu_new(1, &b, &err) == PL_STATUS_OK);
    CHECK(pl_backend_kv_dtype(b) == PL_DTYPE_F32);
    REQUIRE(b->ops->set_kv_dtype(b, PL_DTYPE_F8_E4M3, 1.0f, 1.0f) == PL_STATUS_OK);
    CHECK(pl_backend_kv_dtype(b) == PL_DTYPE_F8_E4M3);
    CHECK(b->ops->set_kv_dtype(b, PL_DTYPE_BF16, 1.0f, 1.0f) == PL_STATUS_UNSUPPORTED);
    enum { T = 20, NH = 4, NKV = 2, HD = 16, BS = 8, NB = 4 };
    const int kv_dim = NKV * HD;
    static float q[T * NH * HD], k[T * NKV * HD], v[T * NKV * HD], kr[T * NKV * HD],
        vr[T * NKV * HD], oa[T * NH * HD], ob[T * NH * HD];
    uint64_t seed = 1;
    for (int i = 0; i < T * NKV * HD; i++) {
        k[i] = 600.0f * (pl_fill_uniform(seed, (uint64_t)i) - 0.5f); /* some beyond 448 */
        v[i] = 4.0f * (pl_fill_uniform(seed + 1, (uint64_t)i) - 0.5f);
        kr[i] = pl_f8e4m3_to_f32(pl_f32_to_f8e4m3(k[i]));
        vr[i] = pl_f8e4m3_to_f32(pl_f32_to_f8e4m3(v[i]));
    }
    for (int i = 0; i < T * NH * HD; i++)
        q[i] = 0.01f * (pl_fill_uniform(seed + 2, (uint64_t)i) - 0.5f);
    float *kc_a = a->ops->alloc(a, sizeof(float) * NB * BS * kv_dim);
    float *vc_a = a->ops->alloc(a, sizeof(float) * NB * BS * kv_dim);
    uint8_t *kc_b = b->ops->alloc(b, (size_t)NB * BS * kv_dim);
    uint8_t *vc_b = b->ops->alloc(b, (size_t)NB * BS * kv_dim);
    int32_t slots[T], cu[2] = {0, T}, ctx[1] = {T}, table[NB] = {2, 0, 3, 1};
    for (int t = 0; t < T; t++)
        slots[t] = table[t / BS] * BS + t % BS;
    a->ops->store_kv(a, kc_a, vc_a, kr, vr, slots, T, kv_dim);
    b->ops->store_kv(b, kc_b, vc_b, k, v, slots, T, kv_dim);
    struct pl_attn_meta m = {.n_seqs = 1, .n_tokens = T, .cu_seqlens_q = cu, .context_lens = ctx,
                             .block_tables = table, .max_blocks_per_seq = NB, .max_q_len = T,
                             .max_context_len = T, .block_size = BS, .n_heads = NH,
                             .n_kv_heads = NKV, .head_dim = HD, .scale = 0.25f};
    a->ops->attention(a, oa, q, kc_a, vc_a, &m);
    b->ops->attention(b, ob, q, kc_b, vc_b, &m);
    CHECK(!memcmp(oa, ob, sizeof(oa)));
    CHECK(kc_b[slots[3] * kv_dim + 5] == pl_f32_to_f8e4m3(k[3 * kv_dim + 5]));
    a->ops->free(a, kc_a);
    a->ops->free(a, vc_a);
    b->ops->free(b, kc_b);
    b->ops->free(b, vc_b);
    pl_backend_free(a);
    pl_backend_free(b);
}

/* --kv-cache-dtype fp8 on the CPU backend: the same budget holds 4x the fp32 tokens, and
 * greedy generation runs over the e4m3 cache near the fp32 one. */
static void test_kv_cache_fp8_runner(void)
{
    char plain[512];
    snprintf(plain, sizeof(plain), "%s/plain", g_root);
    struct pl_model_runner *r[2] = {NULL, NULL};
    struct pl_greedy_seq s[2][1];
    for (int i = 0; i < 2; i++) {
        struct pl_model_runner_params p;
        pl_model_runner_params_default(&p);
        p.model_dir = plain;
        p.n_threads = 1;
        p.kv_cache_bytes = 1u << 20;
        p.max_model_len = 64;
        p.max_num_seqs = 256;
        p.kv_cache_dtype = i ? PL_KV_CACHE_FP8_E4M3 : PL_KV_CACHE_AUTO;
        struct pl_err err = {0};
        pl_status st = pl_model_runner_new(&p, &r[i], &err);
        CHECKF(st == PL_STATUS_OK, "%s", err.msg);
        if (st != PL_STATUS_OK)
            goto out;
        s[i][0] = (struct pl_greedy_seq){.prompt = PROMPT_A, .n_prompt = 12, .max_tokens = 6,
                                         .n_logprobs = 5};
        st = pl_greedy_generate(r[i], s[i], 1, 0, &err);
        CHECKF(st == PL_STATUS_OK, "%s", err.msg);
    }
    CHECK(pl_model_runner_num_blocks(r[1]) == 4 * pl_model_runner_num_blocks(r[0]));
    CHECK(s[1][0].n_out == 6);
    /* e4m3 keeps 3 mantissa bits: the first step's logprobs move, but only by the rounding's
     * reach (a sanity bound; the op-level test above is the exact specification) */
    float d0 = fabsf(s[0][0].top_logprobs[0] - s[1][0].top_logprobs[0]);
    CHECKF(d0 > 0.0f && d0 < 0.5f, "first step's top logprob moved by %g", d0);
    for (int i = 0; i < 2; i++)
        pl_greedy_seq_fini(&s[i][0]);
out:
    pl_model_runner_free(r[0]);
    pl_model_runner_free(r[1]);
}

/* ---- bad files ------------------------------------------------------------------------- */

/* Copies dir's model.safetensors into a list, lets `edit` change it, writes it back. */
static void rewrite(const char *dir, void (*edit)(struct pl_qt_list *l))
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    struct pl_safetensors *st = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK);
    struct pl_qt_list l = {0};
    for (int i = 0; i < pl_safetensors_count(st); i++) {
        const struct pl_tensor_info *ti = pl_safetensors_at(st, i);
        struct pl_qt_tensor *t = pl_qt_add(&l, ti->name, ti->dtype, ti->n_dims, ti->shape[0],
                                           ti->n_dims > 1 ? ti->shape[1] : 0);
        REQUIRE(t);
        memcpy(t->data, ti->data, ti->n_bytes);
    }
    pl_safetensors_free(st);
    edit(&l);
    REQUIRE(pl_qt_write_safetensors(path, &l, &err) == PL_STATUS_OK);
    pl_qt_list_free(&l);
}

static struct pl_qt_tensor *find_t(struct pl_qt_list *l, const char *name)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->t[i].name, name))
            return &l->t[i];
    return NULL;
}

static void drop_scales(struct pl_qt_list *l)
{
    struct pl_qt_tensor *t = find_t(l, "model.layers.1.mlp.up_proj.scales");
    REQUIRE(t);
    snprintf(t->name, sizeof(t->name), "model.layers.1.mlp.up_proj.scales_gone");
}

static void reshape_qweight(struct pl_qt_list *l)
{
    struct pl_qt_tensor *t = find_t(l, "model.layers.0.self_attn.k_proj.qweight");
    REQUIRE(t);
    t->shape[1] = t->shape[1] / 2; /* same bytes, twice the rows */
    t->shape[0] *= 2;
}

static void poke_g_idx(struct pl_qt_list *l)
{
    struct pl_qt_tensor *t = find_t(l, "model.layers.0.mlp.down_proj.g_idx");
    REQUIRE(t);
    ((int32_t *)t->data)[77] = 99;
}

static void nan_scale(struct pl_qt_list *l)
{
    struct pl_qt_tensor *t = find_t(l, "model.layers.0.self_attn.o_proj.weight_scale");
    REQUIRE(t);
    ((float *)t->data)[3] = NAN;
}

static void expect_load_error(const char *format, void (*edit)(struct pl_qt_list *),
                              pl_status want, const char *tensor, const char *what)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/bad_%s", g_root, format);
    struct pl_err err = {0};
    REQUIRE(pl_quant_write_model("llama-quant", format, dir, NULL, &err) == PL_STATUS_OK);
    rewrite(dir, edit);
    struct pl_model_runner *r = NULL;
    pl_status st = open_runner(dir, NULL, &r, &err);
    CHECKF(st == want, "%s: status %d, want %d (%s)", format, st, want, err.msg);
    CHECKF(strstr(err.msg, tensor) && strstr(err.msg, what), "%s: '%s' lacks '%s' / '%s'",
           format, err.msg, tensor, what);
    pl_model_runner_free(r);
}

static void test_bad_files(void)
{
    expect_load_error("awq_g64", drop_scales, PL_STATUS_NOT_FOUND,
                      "model.layers.1.mlp.up_proj.scales", "missing");
    expect_load_error("awq_g32", reshape_qweight, PL_STATUS_FORMAT,
                      "model.layers.0.self_attn.k_proj.qweight", "shape");
    expect_load_error("gptq_g32_act", poke_g_idx, PL_STATUS_FORMAT,
                      "model.layers.0.mlp.down_proj.g_idx", "g_idx[77] = 99 is out of range");
    expect_load_error("ct_fp8_channel_dynamic", nan_scale, PL_STATUS_FORMAT,
                      "model.layers.0.self_attn.o_proj.weight_scale", "non-finite");
}

int main(void)
{
    PL_RUN(test_parse_producers);
    PL_RUN(test_parse_refusals);
    PL_RUN(test_targets_and_flags);
    PL_RUN(test_fp8_e4m3);
    PL_RUN(test_layouts_by_hand);
    char tmpl[] = "/tmp/pl_quant_models_XXXXXX";
    g_root = mkdtemp(tmpl);
    if (!g_root)
        return 1;
    PL_RUN(test_formats_match_dequantized_reference);
    PL_RUN(test_int4_repack_matches_reference);
    PL_RUN(test_int4_trivial_g_idx);
    PL_RUN(test_quantized_differs_from_dense);
    PL_RUN(test_online_fp8);
    PL_RUN(test_kv_cache_fp8_attention);
    PL_RUN(test_kv_cache_fp8_runner);
    PL_RUN(test_bad_files);
    pl_test_rm_tree(g_root);
    return pl_test_summary();
}
