/*
 * quant.h -- quantized checkpoints: config.json's quantization_config, the
 * --quantization and --kv-cache-dtype flags, and the dequantizing reference
 * loader of packed weights.
 *
 * Owns: struct pl_quant_config (the plain description of how a checkpoint's
 * quantizable weights are stored: enum pl_quant_method plus the few numbers
 * each format needs) and its parser, which reads quantization_config exactly
 * as the producers write it:
 *   - AutoAWQ (quant_method "awq", version "gemm"): qweight/qzeros int32
 *     [in, out/8] with AutoAWQ's nibble order, fp16 scales [in/group, out];
 *   - AutoGPTQ / GPTQModel (quant_method "gptq", checkpoint_format "gptq" or
 *     "gptq_v2"): qweight int32 [in*bits/32, out], qzeros int32
 *     [groups, out*bits/32], scales [groups, out], g_idx int32 [in];
 *   - compressed-tensors (llm-compressor): format "pack-quantized" (W4A16 /
 *     W8A16: weight_packed, weight_scale, weight_zero_point, weight_shape,
 *     weight_g_idx) and "float-quantized" / "naive-quantized" FP8 W8A8
 *     (weight F8_E4M3, weight_scale, input_scale), with its `ignore` list;
 *   - FP8 checkpoints (quant_method "fp8": weight F8_E4M3 with weight_scale,
 *     or weight_scale_inv per weight_block_size block; input_scale when
 *     activation_scheme is static);
 *   - --quantization fp8 on an unquantized checkpoint: every quantizable
 *     weight quantized to e4m3 at load with one scale per tensor (vLLM's
 *     online FP8).
 * A backend that multiplies packed weights itself gets them in its layouts
 * (backend.h): int4 (pl_quant_q4_buffer) and FP8 W8A8 (pl_quant_f8w_buffer).
 * Anything else is refused naming the method and the fields found.
 * Invariants after a successful parse: method != PL_QUANT_NONE implies bits,
 * group_size and the strategies hold a combination the loader implements.
 *
 * The dequantizing reference (quant.c, pl_quant_dequant): the specification
 * the backends' kernels are tested against. A quantizable slot's packed
 * tensors are read, checked (present, exact shapes, g_idx within range) and
 * dequantized to fp32 w[out, in] exactly as the producer's own dequantizer
 * defines it (scale * (q - zero)); errors name the tensor at fault.
 */
#ifndef PL_MODEL_QUANT_H
#define PL_MODEL_QUANT_H

#include "model/safetensors.h"
#include "util/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum pl_quant_method {
    PL_QUANT_NONE = 0,
    PL_QUANT_AWQ,        /* AutoAWQ GEMM: 4-bit, zero point, groups */
    PL_QUANT_GPTQ,       /* AutoGPTQ / GPTQModel: 4 or 8 bits, groups or per channel */
    PL_QUANT_CT_PACKED,  /* compressed-tensors pack-quantized (int4/int8 weights, fp acts) */
    PL_QUANT_CT_FP8,     /* compressed-tensors float-quantized FP8 W8A8 */
    PL_QUANT_FP8,        /* quant_method fp8 (serialized), or --quantization fp8 (online) */
};

/* How a scale is shared (compressed-tensors' strategy names). */
enum pl_quant_strategy {
    PL_QSTRAT_TENSOR = 0, /* one scale per tensor */
    PL_QSTRAT_CHANNEL,    /* one per output row */
    PL_QSTRAT_GROUP,      /* one per output row and group of group_size inputs */
    PL_QSTRAT_BLOCK,      /* one per [block_n, block_k] tile (fp8 weight_block_size) */
    PL_QSTRAT_TOKEN,      /* activations: one per token, computed on the fly */
};

#define PL_QUANT_MAX_IGNORE 64
#define PL_QUANT_NAME_LEN 160

struct pl_quant_config {
    enum pl_quant_method method;
    int bits;                 /* weight bits: 4 or 8 (8 for FP8) */
    int group_size;           /* inputs per scale group; -1: the whole row (per channel) */
    bool sym;                 /* symmetric (GPTQ: zeros still stored; CT: none stored) */
    bool gptq_v2;             /* GPTQ checkpoint_format gptq_v2: zeros stored as is (v1
                                 stores zero - 1) */
    bool desc_act;            /* GPTQ act-order: g_idx maps each input to its group */
    bool online;              /* --quantization fp8 on an unquantized checkpoint */
    enum pl_quant_strategy weight_strategy; /* CT / FP8: TENSOR, CHANNEL, GROUP or BLOCK */
    int block_n, block_k;     /* PL_QSTRAT_BLOCK: weight_block_size [n, k] */
    bool act_quant;           /* FP8 W8A8: activations are quantized too */
    bool act_dynamic;         /* ... with scales computed on the fly (else input_scale) */
    enum pl_quant_strategy act_strategy; /* TENSOR or TOKEN */
    char method_name[32];     /* as written: "awq", "gptq", "compressed-tensors", "fp8" */
    /* Modules left unquantized: compressed-tensors `ignore`, AWQ
     * modules_to_not_convert, fp8 ignored_layers. An entry is a module name
     * ("lm_head", "model.layers.0.mlp.down_proj") matching that module or any
     * module under it (a name component prefix, as the producers apply them), or
     * "re:<regex>" matched from the start of the module name (Python re.match). */
    char ignore[PL_QUANT_MAX_IGNORE][PL_QUANT_NAME_LEN];
    int n_ignore;
    /* compressed-tensors targets other than "Linear" ("re:..." names), same rules */
    char targets[8][PL_QUANT_NAME_LEN];
    int n_targets;
};

/* The KV cache's element type (vLLM's --kv-cache-dtype). */
enum pl_kv_cache_dtype {
    PL_KV_CACHE_AUTO = 0, /* the backend's activation dtype */
    PL_KV_CACHE_FP8_E4M3, /* "fp8", "fp8_e4m3" */
};

/* Reads config.json's quantization_config object q (file names config.json in
 * messages) into *out. PL_STATUS_UNSUPPORTED for a method, version or field value
 * pagellm does not load (the message names the method and the fields found),
 * PL_STATUS_FORMAT for a field of the wrong type. */
pl_status pl_quant_config_parse(const char *file, const json_t *q, struct pl_quant_config *out,
                                struct pl_err *err);

/* Same, from JSON text (the fuzz target's entry). */
pl_status pl_quant_config_parse_text(const char *json, size_t len, struct pl_quant_config *out,
                                     struct pl_err *err);

/* vLLM's --quantization value against what the checkpoint says (*q, from its
 * config): NULL, "" or "none" keeps *q; the checkpoint's own method name (or vLLM's
 * kernel-specific aliases awq_marlin, gptq_marlin, marlin, compressed_tensors) is
 * accepted; "fp8" on an unquantized checkpoint turns on online FP8; anything else is
 * refused with PL_STATUS_INVALID_ARGUMENT naming the flag. */
pl_status pl_quant_config_apply_flag(struct pl_quant_config *q, const char *flag,
                                     struct pl_err *err);

/* Whether `value` is a --quantization value pagellm knows (the flag's syntax check). */
bool pl_quant_flag_known(const char *value);
/* "awq, awq_marlin, ..." (static). */
const char *pl_quant_flag_values(void);

/* vLLM's --kv-cache-dtype: "auto", "fp8", "fp8_e4m3" -> *out; false for anything else
 * (fp8_e5m2 included: pagellm stores e4m3 only). */
bool pl_kv_cache_dtype_parse(const char *value, enum pl_kv_cache_dtype *out);

/* "AWQ int4 group 128", "GPTQ int4 group 128 act-order (gptq_v2)", ... for logs. */
void pl_quant_describe(const struct pl_quant_config *q, char *out, size_t cap);

/* Whether the module named `module` (a weight's name without ".weight") is stored
 * quantized under *q: the method is not NONE, it is targeted and not ignored. */
bool pl_quant_module_is_quantized(const struct pl_quant_config *q, const char *module);

/* The dequantizing reference. Reads the packed tensors of `module` (e.g.
 * "model.layers.0.self_attn.q_proj") from st, checks them against the slot's logical
 * shape [n_out, n_in] (for a fused checkpoint tensor, n_out is the fused tensor's rows)
 * and writes w[r - row_begin, k] for output rows [row_begin, row_end) as fp32 into out
 * ([row_end - row_begin, n_in]). Errors name the tensor (missing, mis-shaped, wrong
 * dtype, g_idx out of range, non-finite scale). Online FP8 (q->online) reads the float
 * tensor module.weight and rounds it through e4m3 with one scale for the whole checkpoint
 * tensor (pl_quant_fp8_tensor_scale). */
pl_status pl_quant_dequant(const struct pl_quant_config *q, const struct pl_safetensors *st,
                           const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                           int64_t row_end, float *out, struct pl_err *err);

/* The int4 device layout (a backend's packed weights, PL_DTYPE_Q4 in backend.h): for
 * output rows [row_begin, row_end) of an int4 module (AWQ, GPTQ 4-bit, compressed-tensors
 * pack-quantized 4-bit), codes uint32 [rows, n_in / 8] (input k at bits 4 (k % 8) of word
 * k / 8, unsigned codes), zeros uint8 [rows, groups] and scales fp32 [rows, groups] such
 * that w[r][k] = (code - zero) * scale of group g(k) exactly as pl_quant_dequant gives it;
 * g(k) = gidx[k] when *has_gidx (act-order: gidx int32 [n_in] written), else k / *group
 * (also when the checkpoint's g_idx equals k / group: such a table is dropped).
 * *n_groups receives the groups per row. Whether a config has this layout:
 * pl_quant_is_int4. */
bool pl_quant_is_int4(const struct pl_quant_config *q);
pl_status pl_quant_repack_int4(const struct pl_quant_config *q, const struct pl_safetensors *st,
                               const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                               int64_t row_end, uint32_t *codes, uint8_t *zeros, float *scales,
                               int32_t *gidx, bool *has_gidx, int *group, int64_t *n_groups,
                               struct pl_err *err);

/* The whole PL_DTYPE_Q4 buffer (backend.h's pl_q4_layout_of: header, codes, scales,
 * zeros, g_idx) of rows [row_begin, row_end) of an int4 module, malloc'ed into *out
 * (*n_bytes long; the caller frees it), ready to copy into backend memory. */
pl_status pl_quant_q4_buffer(const struct pl_quant_config *q, const struct pl_safetensors *st,
                             const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                             int64_t row_end, void **out, size_t *n_bytes, struct pl_err *err);

/* The FP8 W8A8 device layout (backend.h's pl_f8w_layout, PL_DTYPE_F8W). Whether a config
 * has it: compressed-tensors float-quantized and quant_method fp8 checkpoints (online
 * --quantization fp8 included) with quantized activations and weight scales per tensor or
 * per channel (block-wise scales and W8A16 are dequantized at load instead). */
bool pl_quant_is_fp8_w8a8(const struct pl_quant_config *q);
/* The whole PL_DTYPE_F8W buffer of rows [row_begin, row_end) of such a module (the
 * rows and n_in pl_f8w_shape_ok), malloc'ed into *out (*n_bytes long; the caller frees
 * it): the checkpoint's e4m3 bytes as stored (online: e4m3(w / s) with the tensor's
 * scale), each row's scale (a per-tensor scale repeated) and the static input_scale (0
 * when activations are dynamic), checked as pl_quant_dequant checks them, so that
 * e4m3(code) * scale is exactly its weight. */
pl_status pl_quant_f8w_buffer(const struct pl_quant_config *q, const struct pl_safetensors *st,
                              const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                              int64_t row_end, void **out, size_t *n_bytes, struct pl_err *err);

/* Online FP8's per-tensor scale (vLLM's): max|w| / 448 over w[n], 1 when w is all zero. */
float pl_quant_fp8_tensor_scale(const float *w, size_t n);

/* Online FP8 (--quantization fp8) of one float weight w[n, k] in place, as vLLM's
 * per-tensor dynamic quantization does: scale = pl_quant_fp8_tensor_scale(w, n),
 * w = e4m3(w / scale) * scale. Returns the scale. */
float pl_quant_fp8_roundtrip(float *w, size_t n);

#endif
