/*
 * test_config.c -- config.json / generation_config.json -> struct pl_model_config.
 *
 * References:
 *   - Base configs are the published config.json files of
 *     meta-llama/Llama-3.2-1B, mistralai/Mistral-7B-v0.1, Qwen/Qwen2.5-0.5B-Instruct
 *     and Qwen/Qwen3-0.6B (and their generation_config.json), copied field for field.
 *   - Defaults and derived values follow transformers' sources:
 *     models/llama/configuration_llama.py (kv heads = heads, head_dim = hidden/heads,
 *       bos 1, eos 2, max_position_embeddings 2048, attention_bias -> q/k/v/o in
 *       modeling_llama.py), models/mistral/configuration_mistral.py (num_key_value_heads
 *       defaults to 8, sliding_window to 4096, applied to every layer),
 *     models/qwen2/configuration_qwen2.py and models/qwen3/configuration_qwen3.py
 *       (__post_init__: sliding_window only with use_sliding_window, layer_types
 *       "sliding_attention" for i >= max_window_layers; Qwen3 head_dim defaults to 128),
 *     models/qwen2/modular_qwen2.py (q/k/v bias=True, o bias=False),
 *     models/qwen3/modular_qwen3.py (Qwen3Attention = LlamaAttention + q_norm/k_norm),
 *     modeling_rope_utils.py (rope_scaling wins over rope_parameters; rope_theta from
 *       the rope dict, then the top level, then 10000; yarn beta_fast/beta_slow 32/1,
 *       truncate true, factor = max_pos / original_max when missing; "type" is the
 *       old spelling of "rope_type").
 */
#include "model/config.h"
#include "test_archs.h"

#include "st_write.h"
#include "test.h"

#include <jansson.h>

static const char *LLAMA32_1B =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, "
    "\"attention_dropout\": 0.0, \"bos_token_id\": 128000, \"eos_token_id\": 128001, "
    "\"head_dim\": 64, \"hidden_act\": \"silu\", \"hidden_size\": 2048, "
    "\"initializer_range\": 0.02, \"intermediate_size\": 8192, "
    "\"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\", "
    "\"num_attention_heads\": 32, \"num_hidden_layers\": 16, \"num_key_value_heads\": 8, "
    "\"pretraining_tp\": 1, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 32.0, "
    "\"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
    "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, "
    "\"rope_theta\": 500000.0, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.45.0.dev0\", \"use_cache\": true, \"vocab_size\": 128256}";

/* Phi-3-mini-128k-instruct's shape (factors shortened to simple values). */
static const char *PHI3_MINI_128K =
    "{\"architectures\": [\"Phi3ForCausalLM\"], \"attention_dropout\": 0.0, "
    "\"bos_token_id\": 1, \"embd_pdrop\": 0.0, \"eos_token_id\": 32000, \"hidden_act\": \"silu\", "
    "\"hidden_size\": 3072, \"initializer_range\": 0.02, \"intermediate_size\": 8192, "
    "\"max_position_embeddings\": 131072, \"model_type\": \"phi3\", \"num_attention_heads\": 32, "
    "\"num_hidden_layers\": 32, \"num_key_value_heads\": 32, "
    "\"original_max_position_embeddings\": 4096, \"pad_token_id\": 32000, "
    "\"resid_pdrop\": 0.0, \"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"long_factor\": [1.00, 1.25, 1.50, 1.75, 2.00, 2.25, 2.50, 2.75, 3.00, 3.25, 3.50, 3.75, 4.00, 4.25, 4.50, 4.75, 5.00, 5.25, 5.50, 5.75, 6.00, 6.25, 6.50, 6.75, 7.00, 7.25, 7.50, 7.75, 8.00, 8.25, 8.50, 8.75, 9.00, 9.25, 9.50, 9.75, 10.00, 10.25, 10.50, 10.75, 11.00, 11.25, 11.50, 11.75, 12.00, 12.25, 12.50, 12.75], "
    "\"short_factor\": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], \"type\": \"longrope\"}, \"rope_theta\": 10000.0, "
    "\"sliding_window\": 262144, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
    "\"use_cache\": true, \"vocab_size\": 32064}";

static const char *LLAMA32_GEN =
    "{\"bos_token_id\": 128000, \"do_sample\": true, \"eos_token_id\": [128001, 128008, 128009], "
    "\"temperature\": 0.6, \"top_p\": 0.9, \"transformers_version\": \"4.45.0.dev0\"}";

static const char *MISTRAL_7B =
    "{\"architectures\": [\"MistralForCausalLM\"], \"bos_token_id\": 1, \"eos_token_id\": 2, "
    "\"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02, "
    "\"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\", "
    "\"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, "
    "\"rms_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"sliding_window\": 4096, "
    "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.34.0.dev0\", \"use_cache\": true, \"vocab_size\": 32000}";

static const char *QWEN25_05B =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, "
    "\"bos_token_id\": 151643, \"eos_token_id\": 151645, \"hidden_act\": \"silu\", "
    "\"hidden_size\": 896, \"initializer_range\": 0.02, \"intermediate_size\": 4864, "
    "\"max_position_embeddings\": 32768, \"max_window_layers\": 21, \"model_type\": \"qwen2\", "
    "\"num_attention_heads\": 14, \"num_hidden_layers\": 24, \"num_key_value_heads\": 2, "
    "\"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"sliding_window\": 32768, "
    "\"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.43.1\", \"use_cache\": true, \"use_sliding_window\": false, "
    "\"vocab_size\": 151936}";

static const char *QWEN3_06B =
    "{\"architectures\": [\"Qwen3ForCausalLM\"], \"attention_bias\": false, "
    "\"attention_dropout\": 0.0, \"bos_token_id\": 151643, \"eos_token_id\": 151645, "
    "\"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 1024, "
    "\"initializer_range\": 0.02, \"intermediate_size\": 3072, \"max_position_embeddings\": 40960, "
    "\"max_window_layers\": 28, \"model_type\": \"qwen3\", \"num_attention_heads\": 16, "
    "\"num_hidden_layers\": 28, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-06, "
    "\"rope_scaling\": null, \"rope_theta\": 1000000, \"sliding_window\": null, "
    "\"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\", "
    "\"transformers_version\": \"4.51.0\", \"use_cache\": true, \"use_sliding_window\": false, "
    "\"vocab_size\": 151936}";

static const char *QWEN3_GEN =
    "{\"bos_token_id\": 151643, \"do_sample\": true, \"eos_token_id\": [151645, 151643], "
    "\"pad_token_id\": 151643, \"temperature\": 0.6, \"top_k\": 20, \"top_p\": 0.95, "
    "\"transformers_version\": \"4.51.0\"}";

/* base with `patch` merged in (top-level keys replaced); a patch value of
 * "__delete__" removes the key. Returns a malloc'ed string. */
static char *edit(const char *base, const char *patch)
{
    json_t *b = json_loads(base, 0, NULL);
    json_t *p = json_loads(patch, 0, NULL);
    if (!b || !p) {
        fprintf(stderr, "bad test JSON: %s\n", b ? patch : base);
        exit(2);
    }
    const char *k;
    json_t *v;
    json_object_foreach(p, k, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), "__delete__") == 0)
            json_object_del(b, k);
        else
            json_object_set(b, k, v);
    }
    char *s = json_dumps(b, 0);
    json_decref(b);
    json_decref(p);
    return s;
}

static pl_status parse(const char *cfg, const char *gen, struct pl_model_config *c,
                       struct pl_err *err)
{
    return pl_model_config_parse(cfg, strlen(cfg), gen, gen ? strlen(gen) : 0, c, err);
}

/* Parses base+patch; must succeed. */
static bool parse_ok(const char *base, const char *patch, struct pl_model_config *c)
{
    char *s = patch ? edit(base, patch) : strdup(base);
    struct pl_err err = {0};
    pl_status st = parse(s, NULL, c, &err);
    if (st != PL_STATUS_OK)
        fprintf(stderr, "  unexpected failure for patch %s: %s\n", patch ? patch : "-", err.msg);
    free(s);
    return st == PL_STATUS_OK;
}

/* Parses base+patch; must fail with `want` and a message containing `needle`. */
static void expect_fail(const char *base, const char *patch, pl_status want, const char *needle)
{
    char *s = edit(base, patch);
    struct pl_model_config c;
    struct pl_err err = {0};
    pl_status st = parse(s, NULL, &c, &err);
    CHECKF(st == want, "patch %s: status %d want %d (%s)", patch, st, want, err.msg);
    CHECKF(strstr(err.msg, needle) != NULL, "patch %s: message lacks '%s': %s", patch, needle,
           err.msg);
    CHECKF(strstr(err.msg, "config.json") != NULL, "patch %s: message lacks the file: %s", patch,
           err.msg);
    free(s);
}

static struct pl_model_config cfg; /* large (per-layer arrays): keep off the stack */

static void test_llama32(void)
{
    struct pl_err err = {0};
    REQUIRE(parse(LLAMA32_1B, LLAMA32_GEN, &cfg, &err) == PL_STATUS_OK);
    CHECK(cfg.arch == PL_TEST_ARCH_LLAMA);
    CHECK(strcmp(cfg.arch_name, "LlamaForCausalLM") == 0 && strcmp(cfg.model_type, "llama") == 0);
    CHECK(strcmp(pl_arch_name(PL_TEST_ARCH_LLAMA), "LlamaForCausalLM") == 0);
    CHECK(cfg.hidden_size == 2048 && cfg.intermediate_size == 8192 && cfg.n_layers == 16);
    CHECK(cfg.n_heads == 32 && cfg.n_kv_heads == 8 && cfg.head_dim == 64);
    CHECK(cfg.vocab_size == 128256 && cfg.max_position_embeddings == 131072);
    CHECK_NEAR(cfg.rms_norm_eps, 1e-5, 1e-12);
    CHECK(cfg.rope.type == PL_ROPE_LLAMA3);
    CHECK(cfg.rope.theta == 500000.0 && cfg.rope.factor == 32.0);
    CHECK(cfg.rope.low_freq_factor == 1.0 && cfg.rope.high_freq_factor == 4.0);
    CHECK(cfg.rope.original_max_position == 8192 && cfg.rope.partial_rotary_factor == 1.0);
    CHECK(cfg.tie_word_embeddings && !cfg.attention_bias && !cfg.o_bias && !cfg.mlp_bias);
    CHECK(!cfg.qk_norm && cfg.dtype == PL_DTYPE_BF16);
    CHECK(cfg.sliding_window == 0);
    for (int l = 0; l < cfg.n_layers; l++)
        CHECK(cfg.layer_sliding_window[l] == 0);
    CHECK(cfg.bos_token_id == 128000 && cfg.n_eos_token_ids == 1 && cfg.eos_token_ids[0] == 128001);
    CHECK(cfg.pad_token_id == -1);
    /* generation_config.json */
    CHECK(cfg.gen.has_temperature && cfg.gen.temperature == 0.6f);
    CHECK(cfg.gen.has_top_p && cfg.gen.top_p == 0.9f);
    CHECK(cfg.gen.has_do_sample && cfg.gen.do_sample);
    CHECK(!cfg.gen.has_top_k && !cfg.gen.has_min_p && !cfg.gen.has_repetition_penalty &&
          !cfg.gen.has_max_new_tokens);
    CHECK(cfg.gen.n_eos_token_ids == 3 && cfg.gen.eos_token_ids[0] == 128001 &&
          cfg.gen.eos_token_ids[1] == 128008 && cfg.gen.eos_token_ids[2] == 128009);
    CHECK(cfg.gen.bos_token_id == 128000);
}

static void test_llama_defaults_and_biases(void)
{
    /* LlamaConfig: num_key_value_heads None -> heads, head_dim None -> hidden/heads,
     * bos 1, eos 2, max_position_embeddings 2048, rope_theta 10000, no tie. */
    REQUIRE(parse_ok(LLAMA32_1B,
                     "{\"num_key_value_heads\": \"__delete__\", \"head_dim\": \"__delete__\", "
                     "\"bos_token_id\": \"__delete__\", \"eos_token_id\": \"__delete__\", "
                     "\"max_position_embeddings\": \"__delete__\", \"rope_scaling\": \"__delete__\", "
                     "\"rope_theta\": \"__delete__\", \"tie_word_embeddings\": \"__delete__\", "
                     "\"torch_dtype\": \"__delete__\", \"rms_norm_eps\": \"__delete__\"}",
                     &cfg));
    CHECK(cfg.n_kv_heads == 32 && cfg.head_dim == 64);
    CHECK(cfg.bos_token_id == 1 && cfg.n_eos_token_ids == 1 && cfg.eos_token_ids[0] == 2);
    CHECK(cfg.max_position_embeddings == 2048);
    CHECK(cfg.rope.type == PL_ROPE_DEFAULT && cfg.rope.theta == 10000.0);
    CHECK(!cfg.tie_word_embeddings && cfg.dtype == PL_DTYPE_F32);
    CHECK_NEAR(cfg.rms_norm_eps, 1e-6, 1e-12);
    /* null means "not set" too */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"num_key_value_heads\": null, \"head_dim\": null}", &cfg));
    CHECK(cfg.n_kv_heads == 32 && cfg.head_dim == 64);
    /* explicit head_dim differing from hidden/heads */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"head_dim\": 128}", &cfg));
    CHECK(cfg.head_dim == 128);
    /* attention_bias=true: q, k, v and o biases; mlp_bias on gate/up/down */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"attention_bias\": true, \"mlp_bias\": true}", &cfg));
    CHECK(cfg.attention_bias && cfg.o_bias && cfg.mlp_bias);
    /* eos as a list; explicit null eos means none; transformers 5's "dtype" key */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"eos_token_id\": [128001, 128008, 128009], \"dtype\": "
                                 "\"float16\", \"pad_token_id\": 128004}",
                     &cfg));
    CHECK(cfg.n_eos_token_ids == 3 && cfg.eos_token_ids[2] == 128009);
    CHECK(cfg.dtype == PL_DTYPE_F16 && cfg.pad_token_id == 128004);
    REQUIRE(parse_ok(LLAMA32_1B, "{\"eos_token_id\": null, \"bos_token_id\": null, "
                                 "\"pad_token_id\": -1}",
                     &cfg));
    CHECK(cfg.n_eos_token_ids == 0 && cfg.bos_token_id == -1 && cfg.pad_token_id == -1);
    /* no architectures list: model_type picks the class */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"architectures\": \"__delete__\"}", &cfg));
    CHECK(cfg.arch == PL_TEST_ARCH_LLAMA && strcmp(cfg.arch_name, "LlamaForCausalLM") == 0);
    /* "swish" is SiLU in transformers' ACT2FN */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"hidden_act\": \"swish\"}", &cfg));
    /* layer_types means nothing to Llama */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"sliding_window\": 16, \"use_sliding_window\": true}", &cfg));
    CHECK(cfg.sliding_window == 0 && cfg.layer_sliding_window[15] == 0);
}

static void test_mistral(void)
{
    REQUIRE(parse_ok(MISTRAL_7B, NULL, &cfg));
    CHECK(cfg.arch == PL_TEST_ARCH_MISTRAL && strcmp(cfg.model_type, "mistral") == 0);
    CHECK(cfg.n_heads == 32 && cfg.n_kv_heads == 8 && cfg.head_dim == 128);
    CHECK(cfg.sliding_window == 4096);
    for (int l = 0; l < 32; l++)
        CHECK(cfg.layer_sliding_window[l] == 4096);
    CHECK(!cfg.attention_bias && !cfg.o_bias && !cfg.mlp_bias && !cfg.qk_norm);
    CHECK(!cfg.tie_word_embeddings && cfg.rope.type == PL_ROPE_DEFAULT);
    CHECK(cfg.bos_token_id == 1 && cfg.n_eos_token_ids == 1 && cfg.eos_token_ids[0] == 2);
    /* Mistral 7B v0.2 style: sliding_window null = full attention everywhere */
    REQUIRE(parse_ok(MISTRAL_7B, "{\"sliding_window\": null, \"rope_theta\": 1000000.0}", &cfg));
    CHECK(cfg.sliding_window == 0 && cfg.rope.theta == 1e6);
    for (int l = 0; l < 32; l++)
        CHECK(cfg.layer_sliding_window[l] == 0);
    /* key missing: MistralConfig's default 4096; kv heads missing: default 8;
     * head_dim null: hidden/heads; max_position_embeddings missing: 4096*32 */
    REQUIRE(parse_ok(MISTRAL_7B, "{\"sliding_window\": \"__delete__\", \"num_key_value_heads\": "
                                 "\"__delete__\", \"head_dim\": null, "
                                 "\"max_position_embeddings\": \"__delete__\"}",
                     &cfg));
    CHECK(cfg.sliding_window == 4096 && cfg.layer_sliding_window[31] == 4096);
    CHECK(cfg.n_kv_heads == 8 && cfg.head_dim == 128 && cfg.max_position_embeddings == 131072);
    /* Mistral ignores layer_types and attention_bias */
    REQUIRE(parse_ok(MISTRAL_7B, "{\"layer_types\": [\"full_attention\"], \"attention_bias\": true}",
                     &cfg));
    CHECK(cfg.layer_sliding_window[0] == 4096 && !cfg.attention_bias);
}

static void test_qwen2(void)
{
    REQUIRE(parse_ok(QWEN25_05B, NULL, &cfg));
    CHECK(cfg.arch == PL_TEST_ARCH_QWEN2);
    CHECK(cfg.hidden_size == 896 && cfg.n_heads == 14 && cfg.n_kv_heads == 2 && cfg.head_dim == 64);
    CHECK(cfg.attention_bias && !cfg.o_bias && !cfg.mlp_bias && !cfg.qk_norm);
    CHECK(cfg.tie_word_embeddings && cfg.rope.theta == 1e6);
    /* use_sliding_window false: no layer slides although sliding_window is set */
    CHECK(cfg.sliding_window == 0);
    for (int l = 0; l < 24; l++)
        CHECK(cfg.layer_sliding_window[l] == 0);
    CHECK(cfg.bos_token_id == 151643 && cfg.eos_token_ids[0] == 151645);
    /* use_sliding_window true: layers >= max_window_layers (21) slide */
    REQUIRE(parse_ok(QWEN25_05B, "{\"use_sliding_window\": true, \"sliding_window\": 4096}", &cfg));
    CHECK(cfg.sliding_window == 4096);
    for (int l = 0; l < 24; l++)
        CHECKF(cfg.layer_sliding_window[l] == (l >= 21 ? 4096 : 0), "layer %d", l);
    /* max_window_layers missing: Qwen2Config default 28 > 24 layers: none slides */
    REQUIRE(parse_ok(QWEN25_05B, "{\"use_sliding_window\": true, \"max_window_layers\": "
                                 "\"__delete__\"}",
                     &cfg));
    for (int l = 0; l < 24; l++)
        CHECK(cfg.layer_sliding_window[l] == 0);
    /* Qwen2 ignores attention_bias: q/k/v always have biases, o never */
    REQUIRE(parse_ok(QWEN25_05B, "{\"attention_bias\": false}", &cfg));
    CHECK(cfg.attention_bias && !cfg.o_bias);
    /* no bos/eos keys: Qwen2Config has none */
    REQUIRE(parse_ok(QWEN25_05B, "{\"bos_token_id\": \"__delete__\", \"eos_token_id\": "
                                 "\"__delete__\", \"num_key_value_heads\": \"__delete__\", "
                                 "\"num_attention_heads\": 32, \"hidden_size\": 2048}",
                     &cfg));
    CHECK(cfg.bos_token_id == -1 && cfg.n_eos_token_ids == 0);
    CHECK(cfg.n_kv_heads == 32); /* Qwen2Config's default, not "= heads" */
}

static void test_layer_types(void)
{
    /* layer_types decides per layer when present */
    char types[2048] = "{\"use_sliding_window\": true, \"sliding_window\": 512, \"layer_types\": [";
    for (int l = 0; l < 24; l++)
        strcat(types, l % 2 ? "\"sliding_attention\"," : "\"full_attention\",");
    types[strlen(types) - 1] = '\0';
    strcat(types, "]}");
    REQUIRE(parse_ok(QWEN25_05B, types, &cfg));
    for (int l = 0; l < 24; l++)
        CHECKF(cfg.layer_sliding_window[l] == (l % 2 ? 512 : 0), "layer %d", l);
    /* the same layer_types without use_sliding_window: sliding_window is None, so no window */
    char *p = strstr(types, "true");
    memcpy(p, "null", 4);
    REQUIRE(parse_ok(QWEN25_05B, types, &cfg));
    for (int l = 0; l < 24; l++)
        CHECK(cfg.layer_sliding_window[l] == 0);
    /* Qwen3 reads layer_types too */
    REQUIRE(parse_ok(QWEN3_06B,
                     "{\"use_sliding_window\": true, \"sliding_window\": 128, \"num_hidden_layers\": "
                     "2, \"layer_types\": [\"sliding_attention\", \"full_attention\"]}",
                     &cfg));
    CHECK(cfg.layer_sliding_window[0] == 128 && cfg.layer_sliding_window[1] == 0);
    expect_fail(QWEN25_05B, "{\"layer_types\": [\"full_attention\"]}", PL_STATUS_FORMAT,
                "layer_types");
    expect_fail(QWEN3_06B,
                "{\"num_hidden_layers\": 2, \"layer_types\": [\"full_attention\", 3]}",
                PL_STATUS_FORMAT, "layer_types[1]");
    expect_fail(QWEN3_06B,
                "{\"num_hidden_layers\": 2, \"layer_types\": [\"full_attention\", "
                "\"linear_attention\"]}",
                PL_STATUS_UNSUPPORTED, "linear_attention");
}

static void test_qwen3(void)
{
    struct pl_err err = {0};
    REQUIRE(parse(QWEN3_06B, QWEN3_GEN, &cfg, &err) == PL_STATUS_OK);
    CHECK(cfg.arch == PL_TEST_ARCH_QWEN3);
    CHECK(cfg.hidden_size == 1024 && cfg.n_heads == 16 && cfg.n_kv_heads == 8);
    CHECK(cfg.head_dim == 128); /* explicit, not 1024/16 */
    CHECK(cfg.qk_norm && !cfg.attention_bias && !cfg.o_bias && !cfg.mlp_bias);
    CHECK(cfg.rope.type == PL_ROPE_DEFAULT && cfg.rope.theta == 1e6); /* integer theta */
    CHECK(cfg.sliding_window == 0 && cfg.max_position_embeddings == 40960);
    CHECK(cfg.gen.has_temperature && cfg.gen.temperature == 0.6f);
    CHECK(cfg.gen.has_top_k && cfg.gen.top_k == 20);
    CHECK(cfg.gen.has_top_p && cfg.gen.top_p == 0.95f);
    CHECK(cfg.gen.has_do_sample && cfg.gen.do_sample);
    CHECK(cfg.gen.n_eos_token_ids == 2 && cfg.gen.eos_token_ids[0] == 151645 &&
          cfg.gen.eos_token_ids[1] == 151643);
    CHECK(cfg.gen.bos_token_id == 151643);
    /* head_dim missing: Qwen3Config's default is 128 whatever hidden/heads is */
    REQUIRE(parse_ok(QWEN3_06B, "{\"head_dim\": \"__delete__\", \"hidden_size\": 512}", &cfg));
    CHECK(cfg.head_dim == 128);
    /* attention_bias on Qwen3 (LlamaAttention): q, k, v and o */
    REQUIRE(parse_ok(QWEN3_06B, "{\"attention_bias\": true}", &cfg));
    CHECK(cfg.attention_bias && cfg.o_bias);
}

static void test_rope_variants(void)
{
    /* old "type" spelling, linear */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}", &cfg));
    CHECK(cfg.rope.type == PL_ROPE_LINEAR && cfg.rope.factor == 2.0 && cfg.rope.theta == 500000.0);
    REQUIRE(parse_ok(LLAMA32_1B, "{\"rope_scaling\": {\"rope_type\": \"dynamic\", \"factor\": 4}}",
                     &cfg));
    CHECK(cfg.rope.type == PL_ROPE_DYNAMIC && cfg.rope.factor == 4.0);
    CHECK(cfg.rope.original_max_position == 131072); /* dynamic scales against max_position */
    /* Qwen2.5's documented YaRN block: defaults for the rest */
    REQUIRE(parse_ok(QWEN25_05B,
                     "{\"rope_scaling\": {\"factor\": 4.0, \"original_max_position_embeddings\": "
                     "32768, \"type\": \"yarn\"}}",
                     &cfg));
    CHECK(cfg.rope.type == PL_ROPE_YARN && cfg.rope.factor == 4.0);
    CHECK(cfg.rope.original_max_position == 32768);
    CHECK(cfg.rope.beta_fast == 32.0 && cfg.rope.beta_slow == 1.0 && cfg.rope.truncate);
    CHECK(cfg.rope.attention_factor == 0.0 && cfg.rope.mscale == 0.0 &&
          cfg.rope.mscale_all_dim == 0.0);
    /* every yarn field set */
    REQUIRE(parse_ok(QWEN25_05B,
                     "{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 8, "
                     "\"original_max_position_embeddings\": 4096, \"beta_fast\": 64, "
                     "\"beta_slow\": 2, \"attention_factor\": 1.25, \"mscale\": 0.5, "
                     "\"mscale_all_dim\": 0.75, \"truncate\": false}}",
                     &cfg));
    CHECK(cfg.rope.factor == 8.0 && cfg.rope.original_max_position == 4096);
    CHECK(cfg.rope.beta_fast == 64.0 && cfg.rope.beta_slow == 2.0);
    CHECK(cfg.rope.attention_factor == 1.25 && cfg.rope.mscale == 0.5 &&
          cfg.rope.mscale_all_dim == 0.75 && !cfg.rope.truncate);
    /* yarn without factor: max_position / original_max */
    REQUIRE(parse_ok(QWEN25_05B,
                     "{\"max_position_embeddings\": 131072, \"rope_scaling\": {\"rope_type\": "
                     "\"yarn\", \"original_max_position_embeddings\": 32768}}",
                     &cfg));
    CHECK(cfg.rope.factor == 4.0);
    /* yarn/llama3 without original_max_position_embeddings: max_position_embeddings */
    REQUIRE(parse_ok(QWEN25_05B, "{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 2}}",
                     &cfg));
    CHECK(cfg.rope.original_max_position == 32768);
    /* transformers 5: rope_parameters carries rope_theta */
    REQUIRE(parse_ok(QWEN3_06B, "{\"rope_theta\": \"__delete__\", \"rope_scaling\": "
                                "\"__delete__\", \"rope_parameters\": {\"rope_type\": \"default\", "
                                "\"rope_theta\": 5000000}}",
                     &cfg));
    CHECK(cfg.rope.type == PL_ROPE_DEFAULT && cfg.rope.theta == 5e6);
    REQUIRE(parse_ok(LLAMA32_1B, "{\"rope_theta\": \"__delete__\", \"rope_scaling\": "
                                 "\"__delete__\", \"rope_parameters\": {\"rope_type\": \"llama3\", "
                                 "\"rope_theta\": 500000.0, \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                                 "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": "
                                 "8192}}",
                     &cfg));
    CHECK(cfg.rope.type == PL_ROPE_LLAMA3 && cfg.rope.theta == 500000.0 && cfg.rope.factor == 8.0);
    /* rope_parameters without theta: top-level rope_theta */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"rope_scaling\": \"__delete__\", \"rope_parameters\": "
                                 "{\"rope_type\": \"linear\", \"factor\": 2.0}}",
                     &cfg));
    CHECK(cfg.rope.type == PL_ROPE_LINEAR && cfg.rope.theta == 500000.0);
    /* both: rope_scaling wins */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": 3.0}, "
                                 "\"rope_parameters\": {\"rope_type\": \"dynamic\", \"factor\": 5.0}}",
                     &cfg));
    CHECK(cfg.rope.type == PL_ROPE_LINEAR && cfg.rope.factor == 3.0);
    /* partial rotary factor, top level or in the rope dict */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"partial_rotary_factor\": 0.5}", &cfg));
    CHECK(cfg.rope.partial_rotary_factor == 0.5);
    REQUIRE(parse_ok(LLAMA32_1B, "{\"rope_scaling\": null, \"rope_parameters\": {\"rope_type\": "
                                 "\"default\", \"partial_rotary_factor\": 0.25}}",
                     &cfg));
    CHECK(cfg.rope.partial_rotary_factor == 0.25 && cfg.rope.type == PL_ROPE_DEFAULT);

    /* longrope needs one factor per rotary pair (head_dim 64: 32) */
    expect_fail(LLAMA32_1B,
                "{\"rope_scaling\": {\"rope_type\": \"longrope\", \"short_factor\": [1], "
                "\"long_factor\": [1]}}",
                PL_STATUS_FORMAT, "short_factor has 1 entries");
    expect_fail(LLAMA32_1B, "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                            "\"high_freq_factor\": 4.0}}",
                PL_STATUS_FORMAT, "low_freq_factor");
    expect_fail(LLAMA32_1B, "{\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, "
                            "\"low_freq_factor\": 4.0, \"high_freq_factor\": 4.0}}",
                PL_STATUS_FORMAT, "high_freq_factor");
    expect_fail(LLAMA32_1B, "{\"rope_scaling\": {\"rope_type\": \"linear\"}}", PL_STATUS_FORMAT,
                "factor");
    expect_fail(LLAMA32_1B, "{\"rope_scaling\": {\"rope_type\": \"linear\", \"factor\": \"2\"}}",
                PL_STATUS_FORMAT, "rope_scaling.factor");
    expect_fail(LLAMA32_1B, "{\"rope_scaling\": 2.0}", PL_STATUS_FORMAT, "rope_scaling");
    expect_fail(LLAMA32_1B, "{\"rope_theta\": \"big\", \"rope_scaling\": null}", PL_STATUS_FORMAT,
                "rope_theta");
    expect_fail(LLAMA32_1B, "{\"rope_theta\": 0, \"rope_scaling\": null}", PL_STATUS_FORMAT,
                "rope_theta");
    expect_fail(LLAMA32_1B, "{\"partial_rotary_factor\": 1.5}", PL_STATUS_FORMAT,
                "partial_rotary_factor");
    expect_fail(LLAMA32_1B, "{\"partial_rotary_factor\": 1e300}", PL_STATUS_FORMAT,
                "partial_rotary_factor");
    expect_fail(LLAMA32_1B, "{\"rope_parameters\": {\"full_attention\": {\"rope_type\": "
                            "\"default\"}}, \"rope_scaling\": null}",
                PL_STATUS_UNSUPPORTED, "full_attention");
}

static void test_phi3(void)
{
    REQUIRE(parse_ok(PHI3_MINI_128K, NULL, &cfg));
    CHECK(cfg.arch == pl_arch_find("Phi3ForCausalLM", false) && !strcmp(cfg.model_type, "phi3"));
    CHECK(cfg.head_dim == 96 && cfg.n_kv_heads == 32 && !cfg.tie_word_embeddings);
    CHECK(cfg.rope.type == PL_ROPE_LONGROPE && cfg.rope.n_factors == 48);
    CHECK(cfg.rope.original_max_position == 4096 && cfg.rope.factor == 32.0);
    CHECK(cfg.rope.short_factor[0] == 1.0 && cfg.rope.long_factor[47] == 1.0 + 0.25 * 47);
    CHECK(cfg.layer_sliding_window[0] == 262144 && cfg.layer_sliding_window[31] == 262144);
    CHECK(!cfg.attention_bias && !cfg.mlp_bias && cfg.act == PL_ACT_SILU);
    /* no sliding_window: none; missing keys take Phi3Config's defaults */
    REQUIRE(parse_ok(PHI3_MINI_128K,
                     "{\"sliding_window\": \"__delete__\", \"num_key_value_heads\": "
                     "\"__delete__\", \"eos_token_id\": \"__delete__\", \"rope_scaling\": null}",
                     &cfg));
    CHECK(cfg.layer_sliding_window[0] == 0 && cfg.n_kv_heads == 32);
    CHECK(cfg.n_eos_token_ids == 1 && cfg.eos_token_ids[0] == 32000);
    CHECK(cfg.rope.type == PL_ROPE_DEFAULT);
    /* Phi-4-mini: partial rotary 0.75 of head_dim 128 -> 48 pairs of factors */
    REQUIRE(parse_ok(PHI3_MINI_128K,
                     "{\"partial_rotary_factor\": 0.75, \"hidden_size\": 4096, "
                     "\"tie_word_embeddings\": true}",
                     &cfg));
    CHECK(cfg.head_dim == 128 && cfg.rope.partial_rotary_factor == 0.75 &&
          cfg.rope.n_factors == 48 && cfg.tie_word_embeddings);
    expect_fail(PHI3_MINI_128K, "{\"partial_rotary_factor\": 0.5}", PL_STATUS_FORMAT,
                "short_factor has 48 entries, the rotary dimension needs 24");
    expect_fail(PHI3_MINI_128K, "{\"num_local_experts\": 8}", PL_STATUS_UNSUPPORTED,
                "mixture-of-experts");
}

/* Qwen3-30B-A3B's config (the MoE shape of the H100 figures). */
static void test_moe_configs(void)
{
    const char *q3 =
        "{\"architectures\": [\"Qwen3MoeForCausalLM\"], \"attention_bias\": false, "
        "\"bos_token_id\": 151643, \"decoder_sparse_step\": 1, \"eos_token_id\": 151645, "
        "\"head_dim\": 128, \"hidden_act\": \"silu\", \"hidden_size\": 2048, "
        "\"intermediate_size\": 6144, \"max_position_embeddings\": 40960, "
        "\"max_window_layers\": 48, \"mlp_only_layers\": [], \"model_type\": \"qwen3_moe\", "
        "\"moe_intermediate_size\": 768, \"norm_topk_prob\": true, \"num_attention_heads\": 32, "
        "\"num_experts\": 128, \"num_experts_per_tok\": 8, \"num_hidden_layers\": 48, "
        "\"num_key_value_heads\": 4, \"rms_norm_eps\": 1e-06, \"rope_scaling\": null, "
        "\"rope_theta\": 1000000.0, \"sliding_window\": null, \"tie_word_embeddings\": false, "
        "\"torch_dtype\": \"bfloat16\", \"use_sliding_window\": false, \"vocab_size\": 151936}";
    REQUIRE(parse_ok(q3, NULL, &cfg));
    CHECK(cfg.arch == pl_arch_find("Qwen3MoeForCausalLM", false) && cfg.qk_norm);
    CHECK(cfg.n_experts == 128 && cfg.n_experts_per_tok == 8 && cfg.norm_topk_prob);
    CHECK(cfg.moe_intermediate_size == 768 && cfg.shared_expert_intermediate_size == 0);
    CHECK(cfg.layer_moe[0] && cfg.layer_moe[47]);
    REQUIRE(parse_ok(q3, "{\"mlp_only_layers\": [0, 3], \"decoder_sparse_step\": 2}", &cfg));
    CHECK(!cfg.layer_moe[0] && cfg.layer_moe[1] && !cfg.layer_moe[2] && !cfg.layer_moe[3] &&
          cfg.layer_moe[5]);
    expect_fail(q3, "{\"num_experts_per_tok\": 129}", PL_STATUS_UNSUPPORTED,
                "num_experts_per_tok");
    /* Mixtral: every layer sparse, the experts intermediate_size wide, renormalised */
    REQUIRE(parse_ok(MISTRAL_7B, "{\"architectures\": [\"MixtralForCausalLM\"], "
                                 "\"model_type\": \"mixtral\", \"num_local_experts\": 8, "
                                 "\"num_experts_per_tok\": 2, \"sliding_window\": null}",
                     &cfg));
    CHECK(cfg.n_experts == 8 && cfg.n_experts_per_tok == 2 && cfg.norm_topk_prob);
    CHECK(cfg.moe_intermediate_size == cfg.intermediate_size && cfg.layer_moe[31]);
    CHECK(cfg.layer_sliding_window[0] == 0);
}

/* Gemma 3 in transformers 5's spelling: per-layer-type rope parameters. */
static void test_gemma3_v5(void)
{
    const char *g3 =
        "{\"architectures\": [\"Gemma3ForCausalLM\"], \"model_type\": \"gemma3_text\", "
        "\"hidden_size\": 1152, \"intermediate_size\": 6912, \"num_hidden_layers\": 26, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 1, \"head_dim\": 256, "
        "\"vocab_size\": 262144, \"query_pre_attn_scalar\": 256, \"sliding_window\": 512, "
        "\"rope_parameters\": {\"full_attention\": {\"rope_type\": \"linear\", \"factor\": 8.0, "
        "\"rope_theta\": 1000000.0}, \"sliding_attention\": {\"rope_type\": \"default\", "
        "\"rope_theta\": 10000.0}}, \"hidden_activation\": \"gelu_pytorch_tanh\", "
        "\"final_logit_softcapping\": null, \"attn_logit_softcapping\": null, "
        "\"dtype\": \"bfloat16\"}";
    REQUIRE(parse_ok(g3, NULL, &cfg));
    CHECK(cfg.rope.type == PL_ROPE_LINEAR && cfg.rope.factor == 8.0 && cfg.rope.theta == 1e6);
    CHECK(cfg.has_local_rope && cfg.rope_local.type == PL_ROPE_DEFAULT &&
          cfg.rope_local.theta == 10000.0);
    CHECK(cfg.act == PL_ACT_GELU_TANH && cfg.tie_word_embeddings && cfg.qk_norm);
    CHECK(cfg.bos_token_id == 2 && cfg.eos_token_ids[0] == 1);
    /* sliding_window_pattern 6 by default: layers 5, 11, ... global */
    CHECK(cfg.layer_sliding_window[4] == 512 && cfg.layer_sliding_window[5] == 0 &&
          cfg.layer_sliding_window[11] == 0 && cfg.layer_sliding_window[12] == 512);
    CHECK(cfg.attn_softcap == 0 && cfg.final_softcap == 0 && cfg.embed_scale > 33.9f);
}

static void test_malformed(void)
{
    expect_fail(LLAMA32_1B, "{\"hidden_size\": \"2048\"}", PL_STATUS_FORMAT, "hidden_size");
    expect_fail(LLAMA32_1B, "{\"hidden_size\": 2048.0}", PL_STATUS_FORMAT, "hidden_size");
    expect_fail(LLAMA32_1B, "{\"hidden_size\": 0}", PL_STATUS_FORMAT, "hidden_size");
    expect_fail(LLAMA32_1B, "{\"hidden_size\": \"__delete__\"}", PL_STATUS_FORMAT, "hidden_size");
    expect_fail(LLAMA32_1B, "{\"hidden_size\": 99999999999}", PL_STATUS_FORMAT, "hidden_size");
    expect_fail(LLAMA32_1B, "{\"intermediate_size\": -1}", PL_STATUS_FORMAT, "intermediate_size");
    expect_fail(LLAMA32_1B, "{\"vocab_size\": null}", PL_STATUS_FORMAT, "vocab_size");
    expect_fail(LLAMA32_1B, "{\"num_attention_heads\": 0}", PL_STATUS_FORMAT,
                "num_attention_heads");
    expect_fail(LLAMA32_1B, "{\"num_hidden_layers\": 513}", PL_STATUS_FORMAT, "num_hidden_layers");
    expect_fail(LLAMA32_1B, "{\"num_key_value_heads\": 3}", PL_STATUS_FORMAT,
                "num_key_value_heads");
    expect_fail(LLAMA32_1B, "{\"num_key_value_heads\": 0}", PL_STATUS_FORMAT,
                "num_key_value_heads");
    expect_fail(LLAMA32_1B, "{\"head_dim\": 63}", PL_STATUS_FORMAT, "head_dim");
    expect_fail(LLAMA32_1B, "{\"head_dim\": -64}", PL_STATUS_FORMAT, "head_dim");
    expect_fail(LLAMA32_1B, "{\"head_dim\": null, \"hidden_size\": 2050}", PL_STATUS_FORMAT,
                "num_attention_heads");
    expect_fail(LLAMA32_1B, "{\"rms_norm_eps\": \"1e-5\"}", PL_STATUS_FORMAT, "rms_norm_eps");
    expect_fail(LLAMA32_1B, "{\"rms_norm_eps\": 0}", PL_STATUS_FORMAT, "rms_norm_eps");
    expect_fail(LLAMA32_1B, "{\"max_position_embeddings\": 0}", PL_STATUS_FORMAT,
                "max_position_embeddings");
    expect_fail(LLAMA32_1B, "{\"tie_word_embeddings\": \"yes\"}", PL_STATUS_FORMAT,
                "tie_word_embeddings");
    expect_fail(LLAMA32_1B, "{\"attention_bias\": 1}", PL_STATUS_FORMAT, "attention_bias");
    expect_fail(LLAMA32_1B,
                "{\"eos_token_id\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}",
                PL_STATUS_FORMAT, "eos_token_id");
    expect_fail(LLAMA32_1B, "{\"eos_token_id\": \"</s>\"}", PL_STATUS_FORMAT, "eos_token_id");
    expect_fail(LLAMA32_1B, "{\"eos_token_id\": [1, -2]}", PL_STATUS_FORMAT, "eos_token_id");
    expect_fail(LLAMA32_1B, "{\"bos_token_id\": \"<s>\"}", PL_STATUS_FORMAT, "bos_token_id");
    expect_fail(LLAMA32_1B, "{\"architectures\": \"LlamaForCausalLM\"}", PL_STATUS_FORMAT,
                "architectures");
    expect_fail(LLAMA32_1B, "{\"architectures\": []}", PL_STATUS_FORMAT, "architectures");
    expect_fail(LLAMA32_1B, "{\"architectures\": \"__delete__\", \"model_type\": \"__delete__\"}",
                PL_STATUS_FORMAT, "model_type");
    expect_fail(MISTRAL_7B, "{\"sliding_window\": 0}", PL_STATUS_FORMAT, "sliding_window");
    expect_fail(MISTRAL_7B, "{\"sliding_window\": \"4k\"}", PL_STATUS_FORMAT, "sliding_window");
    expect_fail(QWEN25_05B, "{\"use_sliding_window\": \"true\"}", PL_STATUS_FORMAT,
                "use_sliding_window");
    expect_fail(QWEN25_05B, "{\"max_window_layers\": 2.5}", PL_STATUS_FORMAT, "max_window_layers");

    /* not JSON / not an object */
    struct pl_err err = {0};
    CHECK(parse("{\"hidden_size\": ", NULL, &cfg, &err) == PL_STATUS_FORMAT);
    CHECK(strstr(err.msg, "config.json") != NULL);
    CHECK(parse("[1, 2]", NULL, &cfg, &err) == PL_STATUS_FORMAT);
    CHECK(parse("", NULL, &cfg, &err) == PL_STATUS_FORMAT);
    /* an embedded NUL ends nothing early: the whole buffer must be valid JSON */
    CHECK(pl_model_config_parse("{}\0{", 4, NULL, 0, &cfg, &err) == PL_STATUS_FORMAT);
}

static void test_unsupported(void)
{
    expect_fail(LLAMA32_1B, "{\"architectures\": [\"GPT2LMHeadModel\"]}", PL_STATUS_UNSUPPORTED,
                "GPT2LMHeadModel");
    expect_fail(LLAMA32_1B, "{\"architectures\": [\"DeepseekV3ForCausalLM\"]}",
                PL_STATUS_UNSUPPORTED, "DeepseekV3ForCausalLM");
    expect_fail(LLAMA32_1B, "{\"architectures\": \"__delete__\", \"model_type\": \"gpt2\"}",
                PL_STATUS_UNSUPPORTED, "gpt2");
    expect_fail(LLAMA32_1B, "{\"hidden_act\": \"gelu\"}", PL_STATUS_UNSUPPORTED, "hidden_act");
    expect_fail(LLAMA32_1B,
                "{\"quantization_config\": {\"quant_method\": \"bitsandbytes\", "
                "\"load_in_4bit\": true}}",
                PL_STATUS_UNSUPPORTED, "quant_method bitsandbytes; fields: quant_method, load_in_4bit");
    expect_fail(LLAMA32_1B, "{\"quantization_config\": {\"quant_method\": \"awq\", \"bits\": 3}}",
                PL_STATUS_UNSUPPORTED, "AWQ bits must be 4");
    expect_fail(LLAMA32_1B, "{\"num_experts\": 8}", PL_STATUS_UNSUPPORTED, "num_experts");
    expect_fail(MISTRAL_7B, "{\"num_local_experts\": 8}", PL_STATUS_UNSUPPORTED,
                "num_local_experts");
    expect_fail(LLAMA32_1B, "{\"torch_dtype\": \"float64\"}", PL_STATUS_UNSUPPORTED, "float64");
    expect_fail(LLAMA32_1B, "{\"torch_dtype\": 16}", PL_STATUS_FORMAT, "torch_dtype");
    /* MoE fields that are zero describe a dense model */
    REQUIRE(parse_ok(LLAMA32_1B, "{\"num_experts\": 0}", &cfg));
}

static void test_generation_config(void)
{
    struct pl_err err = {0};
    /* absent: nothing set */
    REQUIRE(parse(QWEN3_06B, NULL, &cfg, &err) == PL_STATUS_OK);
    CHECK(!cfg.gen.has_temperature && !cfg.gen.has_top_p && !cfg.gen.has_top_k &&
          !cfg.gen.has_do_sample && cfg.gen.n_eos_token_ids == 0 && cfg.gen.bos_token_id == -1);
    /* every field, eos as an int */
    REQUIRE(parse(QWEN3_06B,
                  "{\"temperature\": 0.7, \"top_p\": 0.8, \"top_k\": 40, \"min_p\": 0.05, "
                  "\"repetition_penalty\": 1.1, \"max_new_tokens\": 256, \"do_sample\": false, "
                  "\"eos_token_id\": 7, \"bos_token_id\": 3}",
                  &cfg, &err) == PL_STATUS_OK);
    CHECK(cfg.gen.temperature == 0.7f && cfg.gen.top_p == 0.8f && cfg.gen.top_k == 40);
    CHECK(cfg.gen.has_min_p && cfg.gen.min_p == 0.05f);
    CHECK(cfg.gen.has_repetition_penalty && cfg.gen.repetition_penalty == 1.1f);
    CHECK(cfg.gen.has_max_new_tokens && cfg.gen.max_new_tokens == 256);
    CHECK(cfg.gen.has_do_sample && !cfg.gen.do_sample);
    CHECK(cfg.gen.n_eos_token_ids == 1 && cfg.gen.eos_token_ids[0] == 7 && cfg.gen.bos_token_id == 3);
    /* null values are "not set" */
    REQUIRE(parse(QWEN3_06B, "{\"min_p\": null, \"max_new_tokens\": null}", &cfg, &err) ==
            PL_STATUS_OK);
    CHECK(!cfg.gen.has_min_p && !cfg.gen.has_max_new_tokens);

    static const struct {
        const char *gen, *field;
    } bad[] = {
        {"{\"temperature\": \"hot\"}", "temperature"},
        {"{\"temperature\": -1}", "temperature"},
        {"{\"top_p\": 0}", "top_p"},
        {"{\"top_k\": 2.5}", "top_k"},
        {"{\"min_p\": 2}", "min_p"},
        {"{\"repetition_penalty\": 0}", "repetition_penalty"},
        {"{\"max_new_tokens\": -5}", "max_new_tokens"},
        {"{\"do_sample\": 1}", "do_sample"},
        {"{\"eos_token_id\": [1, \"x\"]}", "eos_token_id"},
        {"{\"bos_token_id\": []}", "bos_token_id"},
        {"[]", "generation_config.json"},
        {"{", "generation_config.json"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        pl_status st = parse(QWEN3_06B, bad[i].gen, &cfg, &err);
        CHECKF(st == PL_STATUS_FORMAT, "%s: %d", bad[i].gen, st);
        CHECKF(strstr(err.msg, bad[i].field) && strstr(err.msg, "generation_config.json"),
               "%s: %s", bad[i].gen, err.msg);
    }
}

static void test_load_from_dir(void)
{
    char *dir = tw_mkdtemp();
    REQUIRE(dir);
    struct pl_err err = {0};
    CHECK(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_IO);
    CHECK(strstr(err.msg, "config.json") != NULL);
    REQUIRE(tw_write_text(tw_path(dir, "config.json"), QWEN3_06B) == 0);
    CHECK(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_OK);
    CHECK(cfg.arch == PL_TEST_ARCH_QWEN3 && !cfg.gen.has_temperature);
    REQUIRE(tw_write_text(tw_path(dir, "generation_config.json"), QWEN3_GEN) == 0);
    CHECK(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_OK);
    CHECK(cfg.gen.has_top_k && cfg.gen.top_k == 20);
    REQUIRE(tw_write_text(tw_path(dir, "config.json"), "{\"architectures\": [\"BertModel\"]}") == 0);
    CHECK(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_UNSUPPORTED);
    CHECK(strstr(err.msg, "BertModel") && strstr(err.msg, dir));
    tw_rmdir(dir);
}

int main(void)
{
    PL_RUN(test_llama32);
    PL_RUN(test_llama_defaults_and_biases);
    PL_RUN(test_mistral);
    PL_RUN(test_qwen2);
    PL_RUN(test_layer_types);
    PL_RUN(test_qwen3);
    PL_RUN(test_rope_variants);
    PL_RUN(test_phi3);
    PL_RUN(test_moe_configs);
    PL_RUN(test_gemma3_v5);
    PL_RUN(test_malformed);
    PL_RUN(test_unsupported);
    PL_RUN(test_generation_config);
    PL_RUN(test_load_from_dir);
    return pl_test_summary();
}
