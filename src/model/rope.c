/*
 * rope.c -- rotary embedding parameters from a config (see rope.h).
 *
 * Formulas (transformers' modeling_rope_utils; d = rotated dims, i = pair):
 *   default  inv[i] = 1 / theta^(2i/d)
 *   linear   inv[i] = default / factor
 *   dynamic  default table; tokens of a sequence longer than L0 =
 *            max_position_embeddings use base' = theta*((f*L/L0) - (f-1))^(d/(d-2))
 *            (applied per token by the rope op from the dyn_* fields)
 *   yarn     blend of inv/f (interpolation) and inv (extrapolation) by a ramp
 *            over pairs between the correction dims of beta_fast / beta_slow;
 *            cos and sin are multiplied by the attention factor (mscale)
 *   llama3   low frequencies (wavelength > L0/low_freq_factor) divided by f,
 *            high ones (wavelength < L0/high_freq_factor) kept, a smooth
 *            interpolation between
 *   longrope inv[i] = 1 / (ext[i] * theta^(2i/d)), ext = short_factor, or
 *            long_factor for tokens of a sequence longer than L0 (the op picks
 *            per token from seq_lens); cos and sin times the attention factor
 *            sqrt(1 + ln(f) / ln(L0)) (f = max_position_embeddings / L0)
 * Like torch, the exponent 2i/d, the powers and the table are fp32.
 */
#include "model/rope.h"

#include <math.h>

static double yarn_get_mscale(double scale, double mscale)
{
    if (scale <= 1.0)
        return 1.0;
    return 0.1 * mscale * log(scale) + 1.0;
}

/* The (fractional) pair dimension at which a wavelength makes n_rot turns in max_pos. */
static double yarn_correction_dim(double n_rot, int dim, double base, int max_pos)
{
    return ((double)dim * log((double)max_pos / (n_rot * 2.0 * M_PI))) / (2.0 * log(base));
}

pl_status pl_rope_build(const struct pl_model_config *cfg, const struct pl_rope_config *rc,
                        float *inv_freq, float *long_inv_freq, struct pl_rope *out,
                        struct pl_err *err)
{
    double prf = rc->partial_rotary_factor > 0.0 ? rc->partial_rotary_factor : 1.0;
    int dim = (int)((double)cfg->head_dim * prf);
    if (dim <= 0 || dim % 2 != 0 || dim > cfg->head_dim)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "rope: rotary dimension %d (head_dim %d x partial_rotary_factor %g) "
                          "must be even and in 2..head_dim",
                          dim, cfg->head_dim, prf);
    if (!(rc->theta > 0.0))
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "rope: rope_theta %g must be > 0", rc->theta);
    bool scaled = rc->type != PL_ROPE_DEFAULT;
    if (scaled && !(rc->factor > 0.0))
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "rope: scaling factor %g must be > 0",
                          rc->factor);

    *out = (struct pl_rope){.rot_dim = dim, .inv_freq = NULL, .attn_scale = 1.0f, .pos_scale = 1.0f};
    const int half = dim / 2;
    const float theta = (float)rc->theta;
    /* pos_freqs[i] = theta^(2i/d) in fp32, the shared start of every variant */
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)dim;
        inv_freq[i] = 1.0f / powf(theta, expo);
    }

    switch (rc->type) {
    case PL_ROPE_DEFAULT:
        break;
    case PL_ROPE_LINEAR:
        for (int i = 0; i < half; i++)
            inv_freq[i] /= (float)rc->factor;
        break;
    case PL_ROPE_DYNAMIC:
        if (cfg->max_position_embeddings <= 0)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "rope: dynamic scaling needs max_position_embeddings > 0");
        if (dim <= 2)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "rope: dynamic scaling needs a rotary dimension > 2");
        out->dyn_original_max = cfg->max_position_embeddings;
        out->dyn_factor = (float)rc->factor;
        out->dyn_theta = (float)rc->theta;
        break;
    case PL_ROPE_YARN: {
        double f = rc->factor;
        int orig = rc->original_max_position > 0 ? rc->original_max_position
                                                 : cfg->max_position_embeddings;
        if (orig <= 0)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "rope: yarn needs original_max_position_embeddings > 0");
        double attn = rc->attention_factor;
        if (!(attn > 0.0)) {
            if (rc->mscale != 0.0 && rc->mscale_all_dim != 0.0)
                attn = yarn_get_mscale(f, rc->mscale) / yarn_get_mscale(f, rc->mscale_all_dim);
            else
                attn = yarn_get_mscale(f, 1.0);
        }
        double beta_fast = rc->beta_fast != 0.0 ? rc->beta_fast : 32.0;
        double beta_slow = rc->beta_slow != 0.0 ? rc->beta_slow : 1.0;
        double low = yarn_correction_dim(beta_fast, dim, rc->theta, orig);
        double high = yarn_correction_dim(beta_slow, dim, rc->theta, orig);
        if (rc->truncate) {
            low = floor(low);
            high = ceil(high);
        }
        if (low < 0.0)
            low = 0.0;
        if (high > dim - 1)
            high = dim - 1;
        if (low == high)
            high += 0.001; /* avoid a zero-width ramp */
        for (int i = 0; i < half; i++) {
            float pos_freq = powf(theta, (float)(2 * i) / (float)dim);
            float extra = 1.0f / pos_freq;
            float inter = 1.0f / ((float)f * pos_freq);
            float ramp = (float)(((double)i - low) / (high - low));
            ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
            float extra_w = 1.0f - ramp; /* weight of extrapolation */
            inv_freq[i] = inter * (1.0f - extra_w) + extra * extra_w;
        }
        out->attn_scale = (float)attn;
        break;
    }
    case PL_ROPE_LONGROPE: {
        if (rc->n_factors != half)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "rope: longrope has %d factors for %d rotary pairs", rc->n_factors,
                              half);
        int orig = rc->original_max_position;
        if (orig <= 0)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "rope: longrope needs original_max_position_embeddings > 0");
        for (int i = 0; i < half; i++) {
            float pos_freq = powf(theta, (float)(2 * i) / (float)dim); /* base ** (2i/d), fp32 */
            inv_freq[i] = 1.0f / ((float)rc->short_factor[i] * pos_freq);
            if (long_inv_freq)
                long_inv_freq[i] = 1.0f / ((float)rc->long_factor[i] * pos_freq);
        }
        double attn = rc->attention_factor;
        if (!(attn > 0.0))
            attn = rc->factor <= 1.0 ? 1.0 : sqrt(1.0 + log(rc->factor) / log((double)orig));
        out->attn_scale = (float)attn;
        out->long_original_max = orig;
        break;
    }
    case PL_ROPE_LLAMA3: {
        double f = rc->factor;
        double lo_f = rc->low_freq_factor, hi_f = rc->high_freq_factor;
        double old_ctx = rc->original_max_position;
        if (!(old_ctx > 0.0) || !(lo_f > 0.0) || !(hi_f > lo_f))
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "rope: llama3 needs original_max_position_embeddings > 0 and "
                              "high_freq_factor > low_freq_factor > 0 (got %g, %g, %g)",
                              old_ctx, lo_f, hi_f);
        double low_wavelen = old_ctx / lo_f;
        double high_wavelen = old_ctx / hi_f;
        for (int i = 0; i < half; i++) {
            float inv = inv_freq[i];
            float wavelen = (float)(2.0 * M_PI) / inv;
            if ((double)wavelen > low_wavelen) {
                inv_freq[i] = inv / (float)f;
            } else if ((double)wavelen >= high_wavelen) {
                float smooth = (float)((old_ctx / (double)wavelen - lo_f) / (hi_f - lo_f));
                inv_freq[i] = (1.0f - smooth) * inv / (float)f + smooth * inv;
            }
        }
        break;
    }
    }
    return PL_STATUS_OK;
}
