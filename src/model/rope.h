/*
 * rope.h -- a config's rotary embedding -> struct pl_rope (backend.h).
 *
 * Owns: pl_rope_build, the host-side computation of the per-pair inverse
 * frequencies and cos/sin scaling for every rope_type the config loader
 * accepts (default, linear, dynamic, yarn, llama3), following the formulas
 * of transformers' modeling_rope_utils (inv_freq in fp32, as torch computes
 * it, so angles match the reference model).
 */
#ifndef PL_MODEL_ROPE_H
#define PL_MODEL_ROPE_H

#include "backend/backend.h"
#include "model/config.h"

/*
 * Fills *out from rc (cfg->rope, or cfg->rope_local for sliding layers; cfg gives
 * head_dim and max_position_embeddings) and writes rot_dim / 2 inverse
 * frequencies to inv_freq (host, at least head_dim / 2 floats); longrope also
 * writes its long table to long_inv_freq (same size; may be NULL otherwise).
 * out->inv_freq and out->long_inv_freq are left NULL: the caller places the
 * tables in backend memory and points at them. PL_STATUS_UNSUPPORTED for a rotary dimension that
 * is odd or zero, or scaling parameters that make no sense (factor <= 0, ...).
 */
pl_status pl_rope_build(const struct pl_model_config *cfg, const struct pl_rope_config *rc,
                        float *inv_freq, float *long_inv_freq, struct pl_rope *out,
                        struct pl_err *err);

#endif
