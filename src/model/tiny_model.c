/*
 * tiny_model.c -- the preset table and the model-directory writer (see tiny_model.h).
 *
 * Owns: the presets (shapes, dtypes, rope and attention variants), the
 * deterministic weight generator, the safetensors writer and the config files.
 *
 * Reproducibility (why the arithmetic looks the way it does):
 *   - randomness is splitmix64, seeded per tensor from the preset seed and an
 *     FNV-1a hash of the tensor name, so a tensor's values do not depend on
 *     the order tensors are written in;
 *   - a normal-like value is the Irwin-Hall sum of four 32-bit uniforms,
 *     centred: an exact integer in [-2^33, 2^33]. The only floating point
 *     step per value is one multiply by a per-tensor scale, correctly rounded
 *     under IEEE 754 (norm weights 1 + noise add an integer offset, 1/scale,
 *     before that multiply), so there is no multiply-add a compiler could fuse
 *     into an FMA differently on another machine;
 *   - JSON is emitted as fixed text (numbers from the table as strings), and
 *     the safetensors header lists tensors sorted by name, so no library's
 *     formatting or hash order leaks into the bytes.
 *
 * Weight scales: every projection's std is gain/sqrt(fan_in), so activations
 * stay O(1) through the layers; q/k use gain 1.5 (attention scores with std
 * ~2, neither uniform nor one-hot) and lm_head gain 5 (logits with std ~5, so
 * the top-1 / top-2 logit gap is usually far above 1e-3 and greedy tokens are
 * stable under fp32 reordering); tied presets scale o_proj/down_proj by 4 (see
 * build_tensors). Norm weights are 1 + N(0, 0.1^2); biases N(0, 0.2^2).
 */
#include "model/tiny_model.h"

#include "model/tiny_json.h"
#include "model/tiny_tokenizer.h"
#include "util/dtype.h"

#include <jansson.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

enum arch {
    ARCH_LLAMA,
    ARCH_MISTRAL,
    ARCH_QWEN2,
    ARCH_QWEN3,
    ARCH_PHI3,
    ARCH_GEMMA2,
    ARCH_GEMMA3,
    ARCH_MIXTRAL,
    ARCH_QWEN2_MOE,
    ARCH_QWEN3_MOE
};

struct preset {
    const char *name;
    const char *about;
    enum arch arch;
    int hidden, n_layers, n_heads, n_kv_heads;
    int head_dim;           /* written to config.json when > 0 (else hidden / n_heads) */
    int intermediate, vocab;
    int max_pos;
    const char *rope_theta; /* JSON number text */
    const char *rope_scaling; /* JSON object text (sorted keys) or NULL */
    bool v5_style;          /* transformers 5 spelling: "dtype" and "rope_parameters" */
    const char *rms_eps;
    enum pl_dtype dtype;
    bool tied;
    int sliding_window;     /* mistral: the window; qwen2: sliding_window value */
    bool use_sliding_window;/* qwen2/qwen3 */
    int max_window_layers;  /* qwen2/qwen3 */
    int n_shards;           /* 1 or 2 */
    bool golden;            /* has golden prompts */
    bool tokenizer;         /* trains and writes the default tokenizer */
    uint64_t seed;
    /* newer families: config.json keys to add or replace ("key", "JSON text" pairs,
     * NULL-terminated; NULL: none) */
    const char *const *extra;
    /* mixture of experts: experts, expert width, shared expert width (0: none), the
     * layers with a sparse block (bit l), whether q/k/v have biases */
    int n_experts, moe_inter, shared_inter;
    unsigned moe_layers;
    bool qkv_bias;
    int vocab_pad_to;       /* tokenizer presets: config vocab_size (embedding and lm_head
                               rows) rounded up to a multiple of this, past the tokenizer's
                               ids, as Qwen pads 151670 tokens to 151936 rows (0: no pad) */
};

#define NO_SCALING NULL

/* Phi-3: longrope over head_dim 24 (12 pairs), original length 16 so the longer prompts
 * and generations switch to the long factors; no sliding window. */
static const char *const PHI3_EXTRA[] = {
    "original_max_position_embeddings", "16",
    "pad_token_id", "0", /* Phi3Config's default 32000 is outside this vocabulary */
    "sliding_window", "null",
    "embd_pdrop", "0.0",
    "resid_pdrop", "0.0",
    NULL};
/* Phi-4-mini-like: half of each head rotated, tied embeddings. */
static const char *const PHI3_PARTIAL_EXTRA[] = {
    "partial_rotary_factor", "0.5",
    "pad_token_id", "0",
    "sliding_window", "null",
    NULL};

/* Gemma 2: sandwich norms, gelu_pytorch_tanh, query_pre_attn_scalar 24 (not head_dim),
 * soft-capping small enough to bite, layers sliding / global / sliding (transformers'
 * default pattern), window 8. */
static const char *const GEMMA2_EXTRA[] = {
    "hidden_act", "\"gelu_pytorch_tanh\"",
    "hidden_activation", "\"gelu_pytorch_tanh\"",
    "query_pre_attn_scalar", "24",
    "attn_logit_softcapping", "5.0",
    "final_logit_softcapping", "10.0",
    "sliding_window", "8",
    "attention_bias", "false",
    "pad_token_id", "0",
    NULL};
/* Gemma 3 text: q/k norms, MQA, one global layer in two (pattern 2), the global rope
 * 1e6 with linear scaling 2, the local rope 10000, window 8. */
static const char *const GEMMA3_EXTRA[] = {
    "hidden_act", "\"gelu_pytorch_tanh\"",
    "hidden_activation", "\"gelu_pytorch_tanh\"",
    "query_pre_attn_scalar", "32",
    "sliding_window", "8",
    "sliding_window_pattern", "2",
    "rope_local_base_freq", "10000.0",
    "attention_bias", "false",
    "final_logit_softcapping", "null",
    "attn_logit_softcapping", "null",
    "pad_token_id", "0",
    NULL};

/* MoE presets: routers with a large gain (decisive top-k, no near-tied routing). */
static const char *const MIXTRAL_EXTRA[] = {
    "num_local_experts", "4",
    "num_experts_per_tok", "2",
    "sliding_window", "null",
    "output_router_logits", "false",
    "router_aux_loss_coef", "0.02",
    NULL};
static const char *const QWEN2_MOE_EXTRA[] = {
    "num_experts", "8",
    "num_experts_per_tok", "2",
    "moe_intermediate_size", "48",
    "shared_expert_intermediate_size", "64",
    "norm_topk_prob", "false",
    "decoder_sparse_step", "1",
    "mlp_only_layers", "[\n    1\n  ]",
    "use_sliding_window", "false",
    "sliding_window", "null",
    "max_window_layers", "2",
    "output_router_logits", "false",
    NULL};
static const char *const QWEN3_MOE_EXTRA[] = {
    "num_experts", "8",
    "num_experts_per_tok", "3",
    "moe_intermediate_size", "40",
    "norm_topk_prob", "true",
    "decoder_sparse_step", "2",
    "mlp_only_layers", "[\n    3\n  ]",
    "use_sliding_window", "false",
    "sliding_window", "null",
    "max_window_layers", "2",
    "attention_bias", "false",
    "output_router_logits", "false",
    NULL};

/* Qwen3-MoE wide enough for every quantized format's groups (experts of 256 x 256). */
static const char *const QWEN3_MOE_QUANT_EXTRA[] = {
    "num_experts", "4",
    "num_experts_per_tok", "2",
    "moe_intermediate_size", "256",
    "norm_topk_prob", "true",
    "decoder_sparse_step", "1",
    "mlp_only_layers", "[]",
    "use_sliding_window", "false",
    "sliding_window", "null",
    "max_window_layers", "2",
    "attention_bias", "false",
    "output_router_logits", "false",
    NULL};

static const struct preset PRESETS[] = {
    {"llama", "Llama, GQA 4:2, untied, bf16", ARCH_LLAMA, 64, 2, 4, 2, 0, 128, 512, 512,
     "10000.0", NO_SCALING, false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, true, false,
     0x1001, NULL, 0, 0, 0, 0, false, 0},
    {"llama-mha-tied", "Llama, MHA 4:4, tied embeddings, bf16", ARCH_LLAMA, 64, 2, 4, 4, 0, 128,
     512, 512, "10000.0", NO_SCALING, false, "1e-05", PL_DTYPE_BF16, true, 0, false, 0, 1, true,
     false, 0x1002, NULL, 0, 0, 0, 0, false, 0},
    {"llama3-rope", "Llama, llama3 rope scaling (original 64), head_dim 32 != 64/4", ARCH_LLAMA,
     64, 2, 4, 2, 32, 128, 512, 512, "10000.0",
     "{\"factor\": 8.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
     "\"original_max_position_embeddings\": 64, \"rope_type\": \"llama3\"}",
     false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, true, false, 0x1003, NULL, 0, 0, 0, 0, false, 0},
    {"llama-linear-rope", "Llama, linear rope scaling factor 2", ARCH_LLAMA, 64, 2, 4, 2, 0, 128,
     512, 512, "10000.0", "{\"factor\": 2.0, \"rope_type\": \"linear\"}", false, "1e-05",
     PL_DTYPE_BF16, false, 0, false, 0, 1, true, false, 0x1004, NULL, 0, 0, 0, 0, false, 0},
    {"llama-yarn-rope", "Llama, yarn rope scaling factor 4 (original 32, max 128)", ARCH_LLAMA, 64,
     2, 4, 2, 0, 128, 512, 128, "10000.0",
     "{\"factor\": 4.0, \"original_max_position_embeddings\": 32, \"rope_type\": \"yarn\"}",
     false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, true, false, 0x1005, NULL, 0, 0, 0, 0, false, 0},
    {"llama-dynamic-rope", "Llama, dynamic NTK rope factor 4, max positions 32 (prompts exceed it)",
     ARCH_LLAMA, 64, 2, 4, 2, 0, 128, 512, 32, "10000.0",
     "{\"factor\": 4.0, \"rope_type\": \"dynamic\"}", false, "1e-05", PL_DTYPE_BF16, false, 0,
     false, 0, 1, true, false, 0x1006, NULL, 0, 0, 0, 0, false, 0},
    {"llama-f16", "Llama, float16 weights", ARCH_LLAMA, 64, 2, 4, 2, 0, 128, 512, 512, "10000.0",
     NO_SCALING, false, "1e-05", PL_DTYPE_F16, false, 0, false, 0, 1, true, false, 0x1007, NULL, 0, 0, 0, 0, false, 0},
    {"llama-f32", "Llama, float32 weights", ARCH_LLAMA, 64, 2, 4, 2, 0, 128, 512, 512, "10000.0",
     NO_SCALING, false, "1e-05", PL_DTYPE_F32, false, 0, false, 0, 1, true, false, 0x1008, NULL, 0, 0, 0, 0, false, 0},
    {"llama-quant", "Llama, hidden 256 / MLP 512 (every quantized format's groups fit), bf16; "
     "pl-mkmodel --quant packs it", ARCH_LLAMA, 256, 2, 4, 2, 0, 512, 512, 512, "10000.0",
     NO_SCALING, false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, false, false, 0x1101, NULL,
     0, 0, 0, 0, false, 0},
    {"llama-sharded", "Llama, 3 layers in 2 safetensors shards + index", ARCH_LLAMA, 64, 3, 4, 2,
     0, 128, 512, 512, "10000.0", NO_SCALING, false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0,
     2, true, false, 0x1009, NULL, 0, 0, 0, 0, false, 0},
    {"mistral-swa", "Mistral, sliding window 8, GQA 8:2", ARCH_MISTRAL, 128, 2, 8, 2, 0, 256, 512,
     512, "10000.0", NO_SCALING, false, "1e-05", PL_DTYPE_BF16, false, 8, false, 0, 1, true,
     false, 0x100a, NULL, 0, 0, 0, 0, false, 0},
    {"qwen2", "Qwen2, q/k/v biases, tied, GQA 4:2, window 16 configured but off", ARCH_QWEN2, 64, 2,
     4, 2, 0, 128, 512, 512, "1000000.0", NO_SCALING, false, "1e-06", PL_DTYPE_BF16, true, 16,
     false, 1, 1, true, false, 0x100b, NULL, 0, 0, 0, 0, false, 0},
    {"qwen3", "Qwen3, q_norm/k_norm, head_dim 32, GQA 4:2, transformers 5 config spelling",
     ARCH_QWEN3, 64, 2, 4, 2, 32, 128, 512, 512, "1000000.0", NO_SCALING, true, "1e-06",
     PL_DTYPE_BF16, false, 0, false, 2, 1, true, false, 0x100c, NULL, 0, 0, 0, 0, false, 0},
    {"qwen2-swa", "Qwen2, sliding window 8 on layers >= max_window_layers 1 of 3", ARCH_QWEN2, 64,
     3, 4, 2, 0, 128, 512, 512, "1000000.0", NO_SCALING, false, "1e-06", PL_DTYPE_BF16, true, 8,
     true, 1, 1, true, false, 0x100d, NULL, 0, 0, 0, 0, false, 0},
    {"phi3", "Phi-3, fused qkv/gate_up, head_dim 24, longrope (original 16, max 64)", ARCH_PHI3,
     96, 2, 4, 2, 0, 160, 512, 64, "10000.0",
     "{\"long_factor\": [1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0], \"short_factor\": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1], \"type\": \"longrope\"}",
     false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, true, false, 0x100e, PHI3_EXTRA, 0, 0, 0, 0, false, 0},
    {"phi3-partial", "Phi-4-mini-like Phi-3: partial_rotary_factor 0.5 of head_dim 32, tied",
     ARCH_PHI3, 128, 2, 4, 2, 0, 192, 512, 512, "10000.0", NO_SCALING, false, "1e-05",
     PL_DTYPE_BF16, true, 0, false, 0, 1, true, false, 0x100f, PHI3_PARTIAL_EXTRA, 0, 0, 0, 0, false, 0},
    {"gemma2", "Gemma 2: sandwich norms, gelu-tanh, soft-capping, sliding/global, head_dim 32, "
               "untied (a tied tiny model only repeats its input)",
     ARCH_GEMMA2, 64, 3, 4, 2, 32, 128, 512, 512, "10000.0", NO_SCALING, false, "1e-06",
     PL_DTYPE_BF16, false, 0, false, 0, 1, true, false, 0x1010, GEMMA2_EXTRA, 0, 0, 0, 0, false, 0},
    {"gemma3", "Gemma 3 text: q/k norms, MQA, local and global rope (linear 2), pattern 2",
     ARCH_GEMMA3, 64, 3, 4, 1, 32, 128, 512, 512, "1000000.0",
     "{\"factor\": 2.0, \"rope_type\": \"linear\"}", false, "1e-06", PL_DTYPE_BF16, false,
     0, false, 0, 1, true, false, 0x1011, GEMMA3_EXTRA, 0, 0, 0, 0, false, 0},
    {"mixtral", "Mixtral: 4 experts top-2 (renormalised), block_sparse_moe w1/w2/w3", ARCH_MIXTRAL,
     64, 2, 4, 2, 0, 96, 512, 512, "1000000.0", NO_SCALING, false, "1e-05", PL_DTYPE_BF16, false,
     0, false, 0, 1, true, false, 0x1012, MIXTRAL_EXTRA, 4, 96, 0, 0x3, false, 0},
    {"qwen2moe", "Qwen2-MoE: 8 experts top-2 (not renormalised), gated shared expert, layer 1 "
                 "dense (mlp_only_layers), q/k/v biases",
     ARCH_QWEN2_MOE, 64, 2, 4, 2, 0, 128, 512, 512, "1000000.0", NO_SCALING, false, "1e-06",
     PL_DTYPE_BF16, false, 0, false, 2, 1, true, false, 0x1013, QWEN2_MOE_EXTRA, 8, 48, 64, 0x1,
     true, 0},
    {"qwen3moe", "Qwen3-MoE: 8 experts top-3 (norm_topk_prob), decoder_sparse_step 2 and "
                 "mlp_only_layers [3] (only layer 1 of 4 sparse), q/k norms, head_dim 32",
     ARCH_QWEN3_MOE, 64, 4, 4, 2, 32, 128, 512, 512, "1000000.0", NO_SCALING, false, "1e-06",
     PL_DTYPE_BF16, false, 0, false, 2, 1, true, false, 0x1014, QWEN3_MOE_EXTRA, 8, 40, 0, 0x2,
     false, 0},
    {"qwen3moe-quant", "Qwen3-MoE, hidden 256, 4 experts of width 256 top-2 in both layers, "
                       "bf16 (every quantized format's groups fit; test_quant packs it)",
     ARCH_QWEN3_MOE, 256, 2, 4, 2, 64, 512, 512, 512, "1000000.0", NO_SCALING, false, "1e-06",
     PL_DTYPE_BF16, false, 0, false, 2, 1, false, false, 0x1102, QWEN3_MOE_QUANT_EXTRA, 4, 256, 0,
     0x3, false, 0},
    {"bench-100m", "Llama ~100M parameters (768 x 12 layers, vocab 32000), bf16, for CPU benchmarks",
     ARCH_LLAMA, 768, 12, 12, 4, 0, 2048, 32000, 2048, "10000.0", NO_SCALING, false, "1e-05",
     PL_DTYPE_BF16, true, 0, false, 0, 1, false, false, 0x2001, NULL, 0, 0, 0, 0, false, 0},
    {"default", "the built-in default model: Llama 256 x 4 layers, 8:4 heads, byte-level BPE "
                "tokenizer (960 ids), ChatML template",
     ARCH_LLAMA, 256, 4, 8, 4, 32, 768, 0 /* from the tokenizer */, 2048, "500000.0", NO_SCALING,
     false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, false, true, 0x3001, NULL, 0, 0, 0, 0, false, 0},
    {"default-padded", "the default model with its vocab padded past the tokenizer: 1024 "
                       "embedding rows for 960 token ids (ids 960..1023 have no token), as "
                       "Qwen checkpoints are",
     ARCH_LLAMA, 256, 4, 8, 4, 32, 768, 0 /* from the tokenizer */, 2048, "500000.0", NO_SCALING,
     false, "1e-05", PL_DTYPE_BF16, false, 0, false, 0, 1, false, true, 0x3001, NULL, 0, 0, 0, 0,
     false, 128},
};

#define N_PRESETS ((int)(sizeof(PRESETS) / sizeof(PRESETS[0])))

/* The default tokenizer's merged tokens: 256 + 700 + 4 specials = 960 ids. */
#define DEFAULT_TOKENIZER_MERGES 700

/* Golden prompt shapes: lengths 1..40 (three beyond sliding window 8). */
static const int PROMPT_LENS[] = {1, 6, 13, 24, 40};
static const int PROMPT_MAX_TOKENS[] = {16, 12, 16, 10, 16};
#define N_PROMPTS ((int)(sizeof(PROMPT_LENS) / sizeof(PROMPT_LENS[0])))

static const struct preset *find_preset(const char *name)
{
    if (!name)
        return NULL;
    for (int i = 0; i < N_PRESETS; i++)
        if (!strcmp(PRESETS[i].name, name))
            return &PRESETS[i];
    return NULL;
}

const char *const *pl_tiny_model_list_presets(int *n)
{
    static const char *names[sizeof(PRESETS) / sizeof(PRESETS[0]) + 1];
    for (int i = 0; i < N_PRESETS; i++)
        names[i] = PRESETS[i].name;
    names[N_PRESETS] = NULL;
    if (n)
        *n = N_PRESETS;
    return names;
}

const char *pl_tiny_model_describe(const char *preset)
{
    const struct preset *p = find_preset(preset);
    return p ? p->about : NULL;
}

static const char *const MODEL_TYPE_OF[] = {"llama", "mistral", "qwen2", "qwen3", "phi3",
                                            "gemma2", "gemma3_text", "mixtral", "qwen2_moe",
                                            "qwen3_moe"};

const char *pl_tiny_model_family(const char *preset)
{
    const struct preset *p = find_preset(preset);
    return p ? MODEL_TYPE_OF[p->arch] : NULL;
}

bool pl_tiny_model_is_golden(const char *preset)
{
    const struct preset *p = find_preset(preset);
    return p && p->golden;
}

/* ---- deterministic randomness ---------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Irwin-Hall(4) centred: an integer with mean 0 and std 2^32 / sqrt(3). */
static int64_t irwin_hall4(uint64_t *state)
{
    uint64_t a = splitmix64(state), b = splitmix64(state);
    int64_t s = (int64_t)(a >> 32) + (int64_t)(a & 0xffffffffu) + (int64_t)(b >> 32) +
                (int64_t)(b & 0xffffffffu);
    return s - ((int64_t)1 << 33);
}

/* The multiplier that turns irwin_hall4() into a value of standard deviation std. */
static double noise_scale(double std) { return std * sqrt(3.0) / 4294967296.0; }

/* ---- tensors ---------------------------------------------------------------------------- */

/* INIT_NORMAL: N(0, std^2); INIT_ONE_PLUS: 1 + N(0, std^2); INIT_THREE_PLUS: 3 + N(0, std^2)
 * (Gemma's post-sublayer norms, applied as 1 + w: about 4, so that the layers' updates
 * are not drowned by the sqrt(hidden)-scaled embedding in the residual stream). */
enum init { INIT_NORMAL, INIT_ONE_PLUS, INIT_THREE_PLUS };

struct tensor {
    char name[96];
    int64_t shape[2];
    int n_dims;
    enum init init;
    double std;
    uint64_t offset; /* within its shard's data section */
    uint64_t n_bytes;
    int shard;
};

struct tensor_list {
    struct tensor *t;
    int n, cap;
};

static bool add_tensor(struct tensor_list *l, const char *name, int64_t d0, int64_t d1,
                       enum init init, double std)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        struct tensor *t = realloc(l->t, sizeof(*t) * (size_t)cap);
        if (!t)
            return false;
        l->t = t;
        l->cap = cap;
    }
    struct tensor *t = &l->t[l->n++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->n_dims = d1 > 0 ? 2 : 1;
    t->init = init;
    t->std = std;
    return true;
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const struct tensor *)a)->name, ((const struct tensor *)b)->name);
}

static int head_dim_of(const struct preset *p)
{
    return p->head_dim > 0 ? p->head_dim : p->hidden / p->n_heads;
}

static bool build_tensors(const struct preset *p, int vocab, struct tensor_list *l)
{
    const double H = p->hidden, I = p->intermediate;
    const int hd = head_dim_of(p);
    const int q_dim = p->n_heads * hd, kv_dim = p->n_kv_heads * hd;
    const double lm_std = 5.0 / sqrt(H);
    /* With tied embeddings the current token's own embedding, carried by the residual
     * stream, scores itself |e|^2 ~ 25 at the output and the model just repeats its
     * input. Larger residual updates from the layers (o_proj, down_proj) dilute that
     * self-match to about one standard deviation of the logits. */
    const double out_gain = p->tied ? 4.0 : 1.0;
    bool ok = add_tensor(l, "model.embed_tokens.weight", vocab, p->hidden, INIT_NORMAL,
                         p->tied ? lm_std : 1.0);
    ok = ok && add_tensor(l, "model.norm.weight", p->hidden, 0,
                          p->arch == ARCH_GEMMA2 || p->arch == ARCH_GEMMA3 ? INIT_NORMAL
                                                                           : INIT_ONE_PLUS,
                          0.1);
    if (!p->tied)
        ok = ok && add_tensor(l, "lm_head.weight", vocab, p->hidden, INIT_NORMAL, lm_std);
    for (int i = 0; ok && i < p->n_layers; i++) {
        char n[96];
#define LAYER(suffix, d0, d1, init, std)                                                      \
    (snprintf(n, sizeof(n), "model.layers.%d.%s", i, suffix),                                 \
     add_tensor(l, n, d0, d1, init, std))
        const bool gemma = p->arch == ARCH_GEMMA2 || p->arch == ARCH_GEMMA3;
        /* Gemma stores w and applies 1 + w: small noise around 0 */
        const enum init norm_init = gemma ? INIT_NORMAL : INIT_ONE_PLUS;
        ok = ok && LAYER("input_layernorm.weight", p->hidden, 0, norm_init, 0.1);
        ok = ok && LAYER("post_attention_layernorm.weight", p->hidden, 0,
                         gemma ? INIT_THREE_PLUS : INIT_ONE_PLUS, 0.1);
        if (gemma) {
            ok = ok && LAYER("pre_feedforward_layernorm.weight", p->hidden, 0, norm_init, 0.1);
            ok = ok && LAYER("post_feedforward_layernorm.weight", p->hidden, 0, INIT_THREE_PLUS,
                             0.1);
        }
        if (p->arch == ARCH_PHI3) { /* fused q|k|v rows */
            ok = ok && LAYER("self_attn.qkv_proj.weight", q_dim + 2 * kv_dim, p->hidden,
                             INIT_NORMAL, 1.5 / sqrt(H));
        } else {
            ok = ok && LAYER("self_attn.q_proj.weight", q_dim, p->hidden, INIT_NORMAL,
                             1.5 / sqrt(H));
            ok = ok && LAYER("self_attn.k_proj.weight", kv_dim, p->hidden, INIT_NORMAL,
                             1.5 / sqrt(H));
            ok = ok && LAYER("self_attn.v_proj.weight", kv_dim, p->hidden, INIT_NORMAL,
                             1.0 / sqrt(H));
        }
        ok = ok && LAYER("self_attn.o_proj.weight", p->hidden, q_dim, INIT_NORMAL,
                         out_gain / sqrt((double)q_dim));
        if (p->arch == ARCH_QWEN2 || p->qkv_bias) {
            ok = ok && LAYER("self_attn.q_proj.bias", q_dim, 0, INIT_NORMAL, 0.2);
            ok = ok && LAYER("self_attn.k_proj.bias", kv_dim, 0, INIT_NORMAL, 0.2);
            ok = ok && LAYER("self_attn.v_proj.bias", kv_dim, 0, INIT_NORMAL, 0.2);
        }
        if (p->arch == ARCH_QWEN3 || p->arch == ARCH_GEMMA3 || p->arch == ARCH_QWEN3_MOE) {
            ok = ok && LAYER("self_attn.q_norm.weight", hd, 0, norm_init, 0.1);
            ok = ok && LAYER("self_attn.k_norm.weight", hd, 0, norm_init, 0.1);
        }
        const bool sparse = p->n_experts > 0 && (p->moe_layers >> i & 1u);
        if (sparse) { /* the Hub's per-expert layout */
            const bool mixtral = p->arch == ARCH_MIXTRAL;
            const char *blk = mixtral ? "block_sparse_moe" : "mlp";
            char nm[64];
            const double MI = p->moe_inter;
            snprintf(nm, sizeof(nm), "%s.gate.weight", blk);
            ok = ok && LAYER(nm, p->n_experts, p->hidden, INIT_NORMAL, 4.0 / sqrt(H));
            for (int e = 0; ok && e < p->n_experts; e++) {
                snprintf(nm, sizeof(nm), "%s.experts.%d.%s.weight", blk, e,
                         mixtral ? "w1" : "gate_proj");
                ok = ok && LAYER(nm, p->moe_inter, p->hidden, INIT_NORMAL, 1.0 / sqrt(H));
                snprintf(nm, sizeof(nm), "%s.experts.%d.%s.weight", blk, e,
                         mixtral ? "w3" : "up_proj");
                ok = ok && LAYER(nm, p->moe_inter, p->hidden, INIT_NORMAL, 1.0 / sqrt(H));
                snprintf(nm, sizeof(nm), "%s.experts.%d.%s.weight", blk, e,
                         mixtral ? "w2" : "down_proj");
                ok = ok && LAYER(nm, p->hidden, p->moe_inter, INIT_NORMAL, out_gain / sqrt(MI));
            }
            if (p->shared_inter > 0) {
                const double SI = p->shared_inter;
                ok = ok && LAYER("mlp.shared_expert.gate_proj.weight", p->shared_inter, p->hidden,
                                 INIT_NORMAL, 1.0 / sqrt(H));
                ok = ok && LAYER("mlp.shared_expert.up_proj.weight", p->shared_inter, p->hidden,
                                 INIT_NORMAL, 1.0 / sqrt(H));
                ok = ok && LAYER("mlp.shared_expert.down_proj.weight", p->hidden, p->shared_inter,
                                 INIT_NORMAL, out_gain / sqrt(SI));
                ok = ok && LAYER("mlp.shared_expert_gate.weight", 1, p->hidden, INIT_NORMAL,
                                 2.0 / sqrt(H));
            }
        } else if (p->arch == ARCH_PHI3) { /* fused gate|up rows */
            ok = ok && LAYER("mlp.gate_up_proj.weight", 2 * p->intermediate, p->hidden,
                             INIT_NORMAL, 1.0 / sqrt(H));
        } else {
            ok = ok && LAYER("mlp.gate_proj.weight", p->intermediate, p->hidden, INIT_NORMAL,
                             1.0 / sqrt(H));
            ok = ok && LAYER("mlp.up_proj.weight", p->intermediate, p->hidden, INIT_NORMAL,
                             1.0 / sqrt(H));
        }
        if (!sparse)
            ok = ok && LAYER("mlp.down_proj.weight", p->hidden, p->intermediate, INIT_NORMAL,
                             out_gain / sqrt(I));
#undef LAYER
    }
    if (!ok)
        return false;
    qsort(l->t, (size_t)l->n, sizeof(*l->t), cmp_tensor);
    size_t esize = pl_dtype_size(p->dtype);
    uint64_t total = 0;
    for (int i = 0; i < l->n; i++) {
        struct tensor *t = &l->t[i];
        t->n_bytes = (uint64_t)t->shape[0] * (uint64_t)(t->n_dims == 2 ? t->shape[1] : 1) * esize;
        total += t->n_bytes;
    }
    /* Shards split the sorted list where the running byte count passes half. */
    uint64_t run = 0, offs[2] = {0, 0};
    for (int i = 0; i < l->n; i++) {
        struct tensor *t = &l->t[i];
        t->shard = (p->n_shards == 2 && run * 2 >= total) ? 1 : 0;
        run += t->n_bytes;
        t->offset = offs[t->shard];
        offs[t->shard] += t->n_bytes;
    }
    return true;
}

/* Writes n elements of tensor t, generated on the fly, in the preset's dtype. */
static bool write_tensor_data(FILE *f, const struct tensor *t, enum pl_dtype dtype, uint64_t seed)
{
    uint64_t state = seed ^ fnv1a64(t->name);
    splitmix64(&state); /* decorrelate nearby seeds */
    const double scale = noise_scale(t->std);
    /* 1 + noise as (one + k) * scale: an integer add, then the single rounding */
    const int64_t one = t->init == INIT_ONE_PLUS     ? llround(1.0 / scale)
                        : t->init == INIT_THREE_PLUS ? llround(3.0 / scale)
                                                     : 0;
    const size_t esize = pl_dtype_size(dtype);
    const uint64_t n = t->n_bytes / esize;
    unsigned char buf[8192];
    size_t nb = 0;
    for (uint64_t i = 0; i < n; i++) {
        double v = (double)(irwin_hall4(&state) + one) * scale;
        float x = (float)v;
        if (dtype == PL_DTYPE_F32) {
            uint32_t u;
            memcpy(&u, &x, 4);
            for (int k = 0; k < 4; k++)
                buf[nb++] = (unsigned char)(u >> (8 * k)); /* safetensors is little-endian */
        } else {
            uint16_t h = dtype == PL_DTYPE_BF16 ? pl_f32_to_bf16(x) : pl_f32_to_f16(x);
            buf[nb++] = (unsigned char)h;
            buf[nb++] = (unsigned char)(h >> 8);
        }
        if (nb + 4 > sizeof(buf)) {
            if (fwrite(buf, 1, nb, f) != nb)
                return false;
            nb = 0;
        }
    }
    return nb == 0 || fwrite(buf, 1, nb, f) == nb;
}

static const char *st_dtype(enum pl_dtype d)
{
    return d == PL_DTYPE_F32 ? "F32" : d == PL_DTYPE_F16 ? "F16" : "BF16";
}

static const char *torch_dtype(enum pl_dtype d)
{
    return d == PL_DTYPE_F32 ? "float32" : d == PL_DTYPE_F16 ? "float16" : "bfloat16";
}

static void shard_name(const struct preset *p, int shard, char *out, size_t cap)
{
    if (p->n_shards == 1)
        snprintf(out, cap, "model.safetensors");
    else
        snprintf(out, cap, "model-%05d-of-%05d.safetensors", shard + 1, p->n_shards);
}

static pl_status write_safetensors(const struct preset *p, const struct tensor_list *l,
                                   const char *dir, int shard, struct pl_err *err)
{
    struct pl_tjson h;
    pl_tjson_init(&h);
    pl_tjson_put(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < l->n; i++) {
        const struct tensor *t = &l->t[i];
        if (t->shard != shard)
            continue;
        pl_tjson_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", t->name,
                        st_dtype(p->dtype), (long long)t->shape[0]);
        if (t->n_dims == 2)
            pl_tjson_printf(&h, ",%lld", (long long)t->shape[1]);
        pl_tjson_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t->offset,
                        (unsigned long long)(t->offset + t->n_bytes));
    }
    pl_tjson_put(&h, "}");
    /* pad with spaces so the data section starts 8-byte aligned (8 + header) */
    while (h.n % 8)
        pl_tjson_put(&h, " ");
    if (pl_tjson_failed(&h)) {
        pl_tjson_fini(&h);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "safetensors header");
    }
    char name[64], path[4096];
    shard_name(p, shard, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        pl_tjson_fini(&h);
        return pl_err_set(err, PL_STATUS_IO, "%s: %s", path, strerror(errno));
    }
    unsigned char len8[8];
    uint64_t hl = h.n;
    for (int k = 0; k < 8; k++)
        len8[k] = (unsigned char)(hl >> (8 * k));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
    pl_tjson_fini(&h);
    for (int i = 0; ok && i < l->n; i++)
        if (l->t[i].shard == shard)
            ok = write_tensor_data(f, &l->t[i], p->dtype, p->seed);
    if (fclose(f) != 0)
        ok = false;
    if (!ok)
        return pl_err_set(err, PL_STATUS_IO, "%s: write failed", path);
    return PL_STATUS_OK;
}

static pl_status write_index(const struct preset *p, const struct tensor_list *l, const char *dir,
                             struct pl_err *err)
{
    uint64_t total = 0;
    for (int i = 0; i < l->n; i++)
        total += l->t[i].n_bytes;
    struct pl_tjson b;
    pl_tjson_init(&b);
    pl_tjson_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {\n",
                    (unsigned long long)total);
    for (int i = 0; i < l->n; i++) {
        char name[64];
        shard_name(p, l->t[i].shard, name, sizeof(name));
        pl_tjson_printf(&b, "    \"%s\": \"%s\"%s\n", l->t[i].name, name, i + 1 < l->n ? "," : "");
    }
    pl_tjson_put(&b, "  }\n}\n");
    pl_status st = pl_tjson_write_file(&b, dir, "model.safetensors.index.json", err);
    pl_tjson_fini(&b);
    return st;
}

/* ---- config files ----------------------------------------------------------------------- */

struct kv {
    const char *key;
    char value[512];
};

static int cmp_kv(const void *a, const void *b)
{
    return strcmp(((const struct kv *)a)->key, ((const struct kv *)b)->key);
}

struct config_ids {
    int vocab, bos, eos;
    int eos_list[2];
    int n_eos_list; /* generation_config eos list when > 0 */
};

static pl_status write_config(const struct preset *p, const struct config_ids *ids,
                              const char *dir, struct pl_err *err)
{
    static const char *const ARCH_NAMES[] = {"LlamaForCausalLM", "MistralForCausalLM",
                                             "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                                             "Phi3ForCausalLM", "Gemma2ForCausalLM",
                                             "Gemma3ForCausalLM", "MixtralForCausalLM",
                                             "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM"};
    struct kv kv[48];
    int n = 0;
#define SET(k, ...) (kv[n].key = (k), snprintf(kv[n].value, sizeof(kv[n].value), __VA_ARGS__), n++)
    SET("architectures", "[\n    \"%s\"\n  ]", ARCH_NAMES[p->arch]);
    SET("attention_dropout", "0.0");
    SET("bos_token_id", "%d", ids->bos);
    SET("eos_token_id", "%d", ids->eos);
    SET("hidden_act", "\"silu\"");
    SET("hidden_size", "%d", p->hidden);
    SET("initializer_range", "0.02");
    SET("intermediate_size", "%d", p->intermediate);
    SET("max_position_embeddings", "%d", p->max_pos);
    SET("model_type", "\"%s\"", MODEL_TYPE_OF[p->arch]);
    SET("num_attention_heads", "%d", p->n_heads);
    SET("num_hidden_layers", "%d", p->n_layers);
    SET("num_key_value_heads", "%d", p->n_kv_heads);
    SET("pagellm_tiny_test_model", "true");
    SET("rms_norm_eps", "%s", p->rms_eps);
    SET("tie_word_embeddings", "%s", p->tied ? "true" : "false");
    SET("use_cache", "true");
    SET("vocab_size", "%d", ids->vocab);
    SET(p->v5_style ? "dtype" : "torch_dtype", "\"%s\"", torch_dtype(p->dtype));
    if (p->head_dim > 0)
        SET("head_dim", "%d", p->head_dim);
    if (p->v5_style) {
        if (p->rope_scaling) /* a scaled rope in v5 spelling is not used by any preset yet */
            return pl_err_set(err, PL_STATUS_INTERNAL, "preset %s: v5 rope scaling", p->name);
        SET("rope_parameters", "{\n    \"rope_theta\": %s,\n    \"rope_type\": \"default\"\n  }",
            p->rope_theta);
    } else {
        SET("rope_theta", "%s", p->rope_theta);
        SET("rope_scaling", "%s", p->rope_scaling ? p->rope_scaling : "null");
    }
    switch (p->arch) {
    case ARCH_LLAMA:
        SET("attention_bias", "false");
        SET("mlp_bias", "false");
        break;
    case ARCH_MISTRAL:
        SET("sliding_window", "%d", p->sliding_window);
        break;
    case ARCH_QWEN2:
    case ARCH_QWEN3:
        if (p->arch == ARCH_QWEN3)
            SET("attention_bias", "false");
        SET("use_sliding_window", "%s", p->use_sliding_window ? "true" : "false");
        if (p->sliding_window > 0)
            SET("sliding_window", "%d", p->sliding_window);
        else
            SET("sliding_window", "null");
        SET("max_window_layers", "%d", p->max_window_layers);
        break;
    case ARCH_PHI3:
    case ARCH_GEMMA2:
    case ARCH_GEMMA3:
    case ARCH_MIXTRAL:
        break;
    case ARCH_QWEN2_MOE:
    case ARCH_QWEN3_MOE:
        break; /* their keys are all in the preset's extra list */
    }
    for (int e = 0; p->extra && p->extra[e]; e += 2) { /* add, or replace a key set above */
        int at = n;
        for (int i = 0; i < n; i++)
            if (!strcmp(kv[i].key, p->extra[e]))
                at = i;
        if (at == n && n == (int)(sizeof(kv) / sizeof(kv[0])))
            return pl_err_set(err, PL_STATUS_INTERNAL, "preset %s: too many config keys", p->name);
        kv[at].key = p->extra[e];
        snprintf(kv[at].value, sizeof(kv[at].value), "%s", p->extra[e + 1]);
        if (at == n)
            n++;
    }
#undef SET
    qsort(kv, (size_t)n, sizeof(kv[0]), cmp_kv);
    struct pl_tjson b;
    pl_tjson_init(&b);
    pl_tjson_put(&b, "{\n");
    for (int i = 0; i < n; i++)
        pl_tjson_printf(&b, "  \"%s\": %s%s\n", kv[i].key, kv[i].value, i + 1 < n ? "," : "");
    pl_tjson_put(&b, "}\n");
    pl_status st = pl_tjson_write_file(&b, dir, "config.json", err);
    pl_tjson_fini(&b);
    if (st != PL_STATUS_OK)
        return st;

    pl_tjson_init(&b);
    pl_tjson_printf(&b, "{\n  \"bos_token_id\": %d,\n", ids->bos);
    if (ids->n_eos_list == 2)
        pl_tjson_printf(&b, "  \"eos_token_id\": [\n    %d,\n    %d\n  ]\n}\n", ids->eos_list[0],
                        ids->eos_list[1]);
    else
        pl_tjson_printf(&b, "  \"eos_token_id\": %d\n}\n", ids->eos);
    st = pl_tjson_write_file(&b, dir, "generation_config.json", err);
    pl_tjson_fini(&b);
    return st;
}

/* ---- prompts ---------------------------------------------------------------------------- */

pl_status pl_tiny_model_prompts(const char *preset, struct pl_tiny_prompt *out, int *n,
                                struct pl_err *err)
{
    const struct preset *p = find_preset(preset);
    if (!p || !p->golden)
        return pl_err_set(err, PL_STATUS_NOT_FOUND, "no golden prompts for preset '%s'",
                          preset ? preset : "(null)");
    uint64_t state = p->seed ^ 0x70726f6d707473ull; /* "prompts" */
    for (int i = 0; i < N_PROMPTS; i++) {
        memset(&out[i], 0, sizeof(out[i]));
        out[i].n_ids = PROMPT_LENS[i];
        out[i].max_tokens = PROMPT_MAX_TOKENS[i];
        for (int k = 0; k < PROMPT_LENS[i]; k++)
            out[i].ids[k] = (int32_t)(splitmix64(&state) % (uint64_t)p->vocab);
    }
    *n = N_PROMPTS;
    return PL_STATUS_OK;
}

static pl_status write_prompts(const struct preset *p, const char *dir, struct pl_err *err)
{
    struct pl_tiny_prompt prompts[PL_TINY_MAX_PROMPTS];
    int n = 0;
    pl_status st = pl_tiny_model_prompts(p->name, prompts, &n, err);
    if (st != PL_STATUS_OK)
        return st;
    struct pl_tjson b;
    pl_tjson_init(&b);
    pl_tjson_printf(&b, "{\n  \"preset\": \"%s\",\n  \"prompts\": [\n", p->name);
    for (int i = 0; i < n; i++) {
        pl_tjson_printf(&b, "    {\"max_tokens\": %d, \"prompt_token_ids\": [", prompts[i].max_tokens);
        for (int k = 0; k < prompts[i].n_ids; k++)
            pl_tjson_printf(&b, "%s%d", k ? ", " : "", (int)prompts[i].ids[k]);
        pl_tjson_printf(&b, "]}%s\n", i + 1 < n ? "," : "");
    }
    pl_tjson_put(&b, "  ]\n}\n");
    st = pl_tjson_write_file(&b, dir, "pagellm_prompts.json", err);
    pl_tjson_fini(&b);
    return st;
}

/* ---- the writer ------------------------------------------------------------------------- */

static pl_status make_dirs(const char *dir, struct pl_err *err)
{
    char path[4096];
    size_t len = strlen(dir);
    if (len == 0 || len >= sizeof(path))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "bad output directory '%s'", dir);
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST)
            return pl_err_set(err, PL_STATUS_IO, "mkdir %s: %s", path, strerror(errno));
        path[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return pl_err_set(err, PL_STATUS_IO, "%s is not a directory", dir);
    return PL_STATUS_OK;
}

pl_status pl_tiny_model_write(const char *preset, const char *out_dir, struct pl_err *err)
{
    const struct preset *p = find_preset(preset);
    if (!p)
        return pl_err_set(err, PL_STATUS_NOT_FOUND,
                          "unknown tiny model preset '%s' (pl-mkmodel --list shows them)",
                          preset ? preset : "(null)");
    if (!out_dir)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "no output directory");
    pl_status st = make_dirs(out_dir, err);
    if (st != PL_STATUS_OK)
        return st;

    struct config_ids ids = {.vocab = p->vocab, .bos = 1, .eos = 2};
    if (p->tokenizer) {
        struct pl_tiny_tokenizer_info info;
        st = pl_tiny_tokenizer_write(out_dir, DEFAULT_TOKENIZER_MERGES, &info, err);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "preset %s", p->name);
        ids.vocab = info.n_vocab;
        if (p->vocab_pad_to > 0)
            ids.vocab = (info.n_vocab + p->vocab_pad_to - 1) / p->vocab_pad_to * p->vocab_pad_to;
        ids.bos = info.bos_id;
        ids.eos = info.eos_id;
        ids.eos_list[0] = info.eos_id;
        ids.eos_list[1] = info.im_end_id;
        ids.n_eos_list = 2;
    }

    struct tensor_list l = {0};
    if (!build_tensors(p, ids.vocab, &l)) {
        free(l.t);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "preset %s: tensor list", p->name);
    }
    for (int s = 0; st == PL_STATUS_OK && s < p->n_shards; s++)
        st = write_safetensors(p, &l, out_dir, s, err);
    if (st == PL_STATUS_OK && p->n_shards > 1)
        st = write_index(p, &l, out_dir, err);
    free(l.t);
    if (st == PL_STATUS_OK)
        st = write_config(p, &ids, out_dir, err);
    if (st == PL_STATUS_OK && p->golden)
        st = write_prompts(p, out_dir, err);
    return st;
}

bool pl_tiny_model_dir_is_tiny(const char *model_dir)
{
    char path[4096];
    if (!model_dir || snprintf(path, sizeof(path), "%s/config.json", model_dir) >= (int)sizeof(path))
        return false;
    json_t *cfg = json_load_file(path, 0, NULL);
    bool tiny = json_is_true(json_object_get(cfg, "pagellm_tiny_test_model"));
    json_decref(cfg);
    return tiny;
}
