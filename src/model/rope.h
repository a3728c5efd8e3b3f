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
 * Fills *out (rot_dim, attn_scale, pos_scale, dynamic-NTK fields) and writes
 * rot_dim / 2 inverse frequencies to inv_freq (host, at least head_dim / 2
 * floats). out->inv_freq is left NULL: the caller places the table in backend
 * memory and points at it. PL_STATUS_UNSUPPORTED for a rotary dimension that
 * is odd or zero, or scaling parameters that make no sense (factor <= 0, ...).
 */
pl_status pl_rope_build(const struct pl_model_config *cfg, float *inv_freq, struct pl_rope *out,
                        struct pl_err *err);

#endif
