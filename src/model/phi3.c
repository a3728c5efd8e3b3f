/*
 * phi3.c -- the Phi-3 / Phi-3.5 / Phi-4-mini architecture record (Phi3ForCausalLM).
 *
 * Owns: the record. Phi-3 is the Llama decoder (model/llama.c's forward) with
 *   - fused checkpoint tensors: self_attn.qkv_proj [q + 2 kv, hidden] (q, then k,
 *     then v rows) and mlp.gate_up_proj [2 * intermediate, hidden] (gate rows,
 *     then up rows; modeling_phi3.py: `gate, up = gate_up.chunk(2, dim=-1)`,
 *     `up * act(gate)`); the tensor table maps each row range to its own slot, so
 *     the forward sees plain q/k/v and gate/up weights (see weights.c);
 *   - longrope ("su") rope scaling with short and long factors (config.c,
 *     rope.c; the rope op picks the long table per token from its sequence
 *     length, as transformers' longrope_frequency_update does per forward);
 *   - partial rotary (partial_rotary_factor, Phi-4-mini 0.75);
 *   - a sliding window on every layer when sliding_window is set (Phi3Model
 *     builds a sliding-window mask then), none when it is null or missing.
 * Config defaults (configuration_phi3.py): num_key_value_heads = heads,
 * max_position_embeddings 4096, bos 1, eos 32000, tie_word_embeddings false,
 * no biases.
 */
#include "model/llama.h"

#include <stddef.h>

#define W(field) offsetof(struct pl_weights, field)
#define LW(field) offsetof(struct pl_layer_weights, field)
#define Q PL_TENSOR_QUANTIZABLE

static const struct pl_tensor_spec PHI3_TENSORS[] = {
    {"model.embed_tokens.weight", PL_SCOPE_MODEL, W(embed), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0,
     PL_OP_EMBED, NULL, 0},
    {"model.layers.{L}.input_layernorm.weight", PL_SCOPE_LAYER, LW(attn_norm), PL_DIM_NONE,
     PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, 0},
    {"model.layers.{L}.self_attn.qkv_proj.weight", PL_SCOPE_LAYER, LW(wq), PL_DIM_Q,
     PL_DIM_HIDDEN, PL_DIM_QKV, PL_DIM_NONE, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.qkv_proj.weight", PL_SCOPE_LAYER, LW(wk), PL_DIM_KV,
     PL_DIM_HIDDEN, PL_DIM_QKV, PL_DIM_Q, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.qkv_proj.weight", PL_SCOPE_LAYER, LW(wv), PL_DIM_KV,
     PL_DIM_HIDDEN, PL_DIM_QKV, PL_DIM_Q_KV, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.self_attn.o_proj.weight", PL_SCOPE_LAYER, LW(wo), PL_DIM_HIDDEN, PL_DIM_Q,
     0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.post_attention_layernorm.weight", PL_SCOPE_LAYER, LW(ffn_norm),
     PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0, PL_OP_RMSNORM, NULL, 0},
    {"model.layers.{L}.mlp.gate_up_proj.weight", PL_SCOPE_LAYER, LW(w_gate), PL_DIM_INTER,
     PL_DIM_HIDDEN, PL_DIM_GATE_UP, PL_DIM_NONE, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.gate_up_proj.weight", PL_SCOPE_LAYER, LW(w_up), PL_DIM_INTER,
     PL_DIM_HIDDEN, PL_DIM_GATE_UP, PL_DIM_INTER, PL_OP_MATMUL, NULL, Q},
    {"model.layers.{L}.mlp.down_proj.weight", PL_SCOPE_LAYER, LW(w_down), PL_DIM_HIDDEN,
     PL_DIM_INTER, 0, 0, PL_OP_MATMUL, NULL, Q},
    {"model.norm.weight", PL_SCOPE_MODEL, W(final_norm), PL_DIM_NONE, PL_DIM_HIDDEN, 0, 0,
     PL_OP_RMSNORM, NULL, 0},
    {"lm_head.weight", PL_SCOPE_MODEL, W(lm_head), PL_DIM_VOCAB, PL_DIM_HIDDEN, 0, 0, PL_OP_LOGITS,
     NULL, PL_TENSOR_TIED},
};

static const char *const PHI3_NAMES[] = {"Phi3ForCausalLM", NULL};
static const char *const PHI3_TYPES[] = {"phi3", NULL};

const struct pl_arch pl_arch_phi3 = {
    .name = "phi3",
    .hf_names = PHI3_NAMES,
    .model_type = "phi3",
    .model_types = PHI3_TYPES,
    .defaults = {.max_position_embeddings = 4096, .bos_token_id = 1, .eos_token_id = 32000,
                 .window_rule = PL_WINDOW_ALL, .sliding_window = 0},
    .tensors = PHI3_TENSORS,
    .n_tensors = (int)(sizeof(PHI3_TENSORS) / sizeof(PHI3_TENSORS[0])),
    .scratch = pl_llama_scratch,
    .forward = pl_llama_forward,
};
