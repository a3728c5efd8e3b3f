/*
 * config.h -- a Hugging Face model's config.json and generation_config.json.
 *
 * Owns: struct pl_model_config, the plain description of a decoder-only model
 * (every family in the registry, model/registry.c) that everything downstream reads.
 * Invariants after a successful pl_model_config_load:
 *   - hidden_size, intermediate_size, n_layers, n_heads, n_kv_heads, head_dim,
 *     vocab_size are > 0; n_heads % n_kv_heads == 0; head_dim is even;
 *   - n_layers <= PL_MAX_LAYERS; layer_sliding_window[l] is 0 (full attention)
 *     or the window length in tokens for layer l;
 *   - arch is the record of a registered architecture; layer_moe[l] only when
 *     n_experts > 0, and then 1 <= n_experts_per_tok <= n_experts;
 *   - anything the loader does not support was refused with a message naming it.
 */
#ifndef PL_MODEL_CONFIG_H
#define PL_MODEL_CONFIG_H

#include "model/quant.h"
#include "util/dtype.h"
#include "util/err.h"

#include <stdbool.h>

#define PL_MAX_LAYERS 512
#define PL_MAX_EOS_IDS 16

struct pl_arch; /* model/arch.h: the architecture record (registry.c lists them) */

/* The MLP's activation (hidden_act / hidden_activation). */
enum pl_act {
    PL_ACT_SILU = 0,  /* "silu", "swish" */
    PL_ACT_GELU_TANH  /* "gelu_pytorch_tanh" (Gemma) */
};

enum pl_rope_type {
    PL_ROPE_DEFAULT = 0,
    PL_ROPE_LINEAR,  /* positions / factor */
    PL_ROPE_DYNAMIC, /* NTK-aware base growth past original max positions */
    PL_ROPE_YARN,
    PL_ROPE_LLAMA3,
    PL_ROPE_LONGROPE /* Phi-3 "longrope" / "su": short and long per-pair factors */
};

#define PL_MAX_ROPE_PAIRS 256 /* head_dim / 2 at most, for per-pair factors */

struct pl_rope_config {
    enum pl_rope_type type;
    double theta;                 /* rope_theta (base) */
    double factor;                /* scaling factor (linear, dynamic, yarn, llama3) */
    double low_freq_factor;       /* llama3 */
    double high_freq_factor;      /* llama3 */
    int original_max_position;    /* llama3, yarn, dynamic: original_max_position_embeddings */
    double beta_fast, beta_slow;  /* yarn (defaults 32, 1) */
    double attention_factor;      /* yarn: multiplies cos/sin; 0 = derive from factor */
    double mscale, mscale_all_dim;/* yarn (deepseek-style), 0 when absent */
    bool truncate;                /* yarn: truncate correction range (default true) */
    double partial_rotary_factor; /* fraction of head_dim rotated (1.0 default) */
    /* longrope: per-pair factors ([rot_dim / 2] each); tokens of a sequence longer than
     * original_max_position use the long ones; attention_factor as in yarn (0: derive) */
    double short_factor[PL_MAX_ROPE_PAIRS], long_factor[PL_MAX_ROPE_PAIRS];
    int n_factors;
};

/* Fields of generation_config.json; has_* says whether the file set it. */
struct pl_generation_config {
    bool has_temperature, has_top_p, has_top_k, has_min_p, has_repetition_penalty,
        has_max_new_tokens, has_do_sample;
    float temperature, top_p, min_p, repetition_penalty;
    int top_k, max_new_tokens;
    bool do_sample;
    int eos_token_ids[PL_MAX_EOS_IDS]; /* eos ids from generation_config (may differ from config.json) */
    int n_eos_token_ids;
    int bos_token_id; /* -1 when absent */
};

struct pl_model_config {
    const struct pl_arch *arch;  /* the architecture record (never NULL after a load) */
    char arch_name[64];          /* "LlamaForCausalLM", ... as written in the file */
    char model_type[32];         /* "llama", "mistral", "qwen2", "qwen3", ... */
    int hidden_size;             /* d_model */
    int intermediate_size;       /* MLP hidden width */
    int n_layers;                /* num_hidden_layers */
    int n_heads;                 /* num_attention_heads */
    int n_kv_heads;              /* num_key_value_heads (defaults to n_heads) */
    int head_dim;                /* explicit head_dim, else hidden_size / n_heads */
    int vocab_size;
    float rms_norm_eps;
    struct pl_rope_config rope;
    int max_position_embeddings;
    int sliding_window;          /* the configured window (0 = none) */
    int layer_sliding_window[PL_MAX_LAYERS]; /* per layer: 0 = full attention, else window */
    bool tie_word_embeddings;
    bool attention_bias;         /* q/k/v (and o when o_bias) biases present (Qwen2: true) */
    bool o_bias;                 /* o_proj has a bias (attention_bias=true on Llama) */
    bool mlp_bias;               /* gate/up/down biases (Llama mlp_bias) */
    bool qk_norm;                /* Qwen3, Gemma 3: RMSNorm over each head of q and k before RoPE */
    enum pl_act act;             /* the MLP's activation */
    float embed_scale;           /* embeddings multiplied by this (Gemma: sqrt(hidden)); 0: none */
    float attn_scale;            /* softmax scale (Gemma: query_pre_attn_scalar^-0.5); 0:
                                    head_dim^-0.5 */
    float attn_softcap;          /* Gemma 2: scores = cap * tanh(scores / cap); 0: none */
    float final_softcap;         /* Gemma 2: logits = cap * tanh(logits / cap); 0: none */
    bool has_local_rope;         /* Gemma 3: sliding layers use rope_local */
    struct pl_rope_config rope_local;
    /* mixture of experts (0 experts: dense) */
    int n_experts;               /* num_local_experts / num_experts */
    int n_experts_per_tok;       /* top-k */
    int moe_intermediate_size;   /* one expert's MLP width */
    int shared_expert_intermediate_size; /* Qwen2-MoE's gated shared expert; 0: none */
    bool norm_topk_prob;         /* renormalise the top-k routing weights to sum 1 */
    bool layer_moe[PL_MAX_LAYERS]; /* per layer: sparse MoE block (else the dense MLP) */
    enum pl_dtype dtype;         /* torch_dtype / dtype (the checkpoint's compute dtype) */
    int bos_token_id;            /* -1 when absent */
    int eos_token_ids[PL_MAX_EOS_IDS]; /* config.json eos ids (single or list) */
    int n_eos_token_ids;
    int pad_token_id;            /* -1 when absent */
    struct pl_generation_config gen; /* generation_config.json (all has_* false when absent) */
    struct pl_quant_config quant; /* quantization_config (method PL_QUANT_NONE when absent; the
                                     --quantization flag may change it: model/quant.h) */
};

/*
 * Reads <model_dir>/config.json and, if present, <model_dir>/generation_config.json.
 * Returns PL_STATUS_IO when config.json cannot be read, PL_STATUS_FORMAT when it
 * is not valid JSON or a field has the wrong type/range, PL_STATUS_UNSUPPORTED for
 * an architecture or feature pagellm does not run; err names the field.
 */
/*
 * vLLM's --override-generation-config: a JSON object whose keys are the
 * generation_config.json fields pagellm applies (temperature, top_p, top_k,
 * min_p, repetition_penalty, max_new_tokens; null means not set) -> *out
 * (has_* say which). Values are checked as in generation_config.json (top_k
 * may also be -1, vLLM's "off"); any other key, or a text that is not a JSON
 * object, is refused with PL_STATUS_INVALID_ARGUMENT naming it. Messages
 * start with `what`, the caller's name for the text (a flag, a field).
 */
pl_status pl_generation_config_parse_override(const char *json, const char *what,
                                              struct pl_generation_config *out,
                                              struct pl_err *err);

pl_status pl_model_config_load(const char *model_dir, struct pl_model_config *out,
                               struct pl_err *err);

/* Same, from JSON text already in memory (gen_json may be NULL). */
pl_status pl_model_config_parse(const char *config_json, size_t config_len,
                                const char *gen_json, size_t gen_len,
                                struct pl_model_config *out, struct pl_err *err);

/* The canonical `architectures` name of an architecture ("LlamaForCausalLM", ...). */
const char *pl_arch_name(const struct pl_arch *arch);

#endif
