/*
 * quant_dequant.c -- the dequantizing reference: packed checkpoint tensors ->
 * fp32 weights (see quant.h). The specification the backends' quantized
 * kernels are tested against.
 *
 * Owns the bit layouts, one function per format, each following the
 * producer's public definition:
 *   AWQ (AutoAWQ GEMM): qweight int32 [K, N/8], qzeros int32 [K/G, N/8],
 *     scales [K/G, N]. The 8 nibbles of a word hold output columns in the
 *     order 0 2 4 6 1 3 5 7 (nibble i holds column 8c + ORDER[i]), so column j
 *     sits at nibble REVERSE[j]. w[n][k] = (q - z) * s, group k / G.
 *   GPTQ: qweight int32 [K*b/32, N] packed along the inputs (input k at bits
 *     (k % (32/b)) * b of row k / (32/b)), qzeros int32 [groups, N*b/32]
 *     packed along the outputs the same way, scales [groups, N], g_idx int32
 *     [K] (input k's group; act-order). w = (q - z) * s with z = stored + 1
 *     for checkpoint_format gptq (v1 stores zero - 1, unmasked on read as
 *     every v1 reader does) and z = stored for gptq_v2. Without act-order
 *     the group is k / G.
 *   compressed-tensors pack-quantized: weight_packed int32 [N, ceil(K*b/32)]
 *     (input k at bits (k % (32/b)) * b), values stored as q + 2^(b-1);
 *     weight_scale [N, groups]; weight_zero_point (asymmetric only) int32
 *     [ceil(N*b/32), groups] packed along the outputs, stored the same
 *     offset way; weight_shape [2] = {N, K}; weight_g_idx [K] with actorder
 *     "group". w = (q - zp) * s.
 *   FP8 (compressed-tensors float-quantized, quant_method fp8): weight
 *     F8_E4M3 [N, K]; weight_scale of one element (per tensor) or [N, 1]
 *     (per channel), or weight_scale_inv [ceil(N/bn), ceil(K/bk)] (blocks).
 *     w = e4m3(q) * s.
 *   Online FP8 (--quantization fp8): the float weight [N, K] of the checkpoint,
 *     s = max|w| / 448 over the whole checkpoint tensor (1 when all zero),
 *     q = e4m3(w / s), w = e4m3(q) * s.
 * Every product is one fp32 rounding of exact operands, so any faithful
 * dequantizer (numpy's, torch's) gives the same bits.
 * The packed device layouts are written by the same readers: int4 modules into
 * backend.h's pl_q4_layout (ctx.rp), FP8 W8A8 modules (per tensor or channel) into
 * pl_f8w_layout (ctx.f8): the checkpoint's e4m3 bytes as they are, scales per row.
 */
#include "model/quant.h"

#include "backend/backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int AWQ_REVERSE[8] = {0, 4, 1, 5, 2, 6, 3, 7};

struct ctx {
    const struct pl_safetensors *st;
    const char *module;
    struct pl_err *err;
    const struct repack *rp; /* non-NULL: write the int4 device layout instead of floats */
    const struct f8pack *f8; /* non-NULL: write the FP8 device layout instead of floats */
};

/* pl_quant_f8w_buffer's outputs: rows [r0, r1) of the module. */
struct f8pack {
    uint8_t *codes;     /* [r1 - r0, k] */
    float *scales;      /* [r1 - r0] */
    float *input_scale; /* static activation scale, 0 = dynamic */
};

/* pl_quant_repack_int4's outputs. */
struct repack {
    uint32_t *codes;
    uint8_t *zeros;
    float *scales;
    int32_t *gidx;
    bool *has_gidx;
    int *group;
    int64_t *n_groups;
};

/* Whether g_idx names the groups the layout gives without it (k / group): compressed-tensors
 * may store such a table without act-order. */
static bool gidx_trivial(const int32_t *g, int64_t k, int64_t group)
{
    for (int64_t i = 0; i < k; i++)
        if (g[i] != i / group)
            return false;
    return true;
}

/* Writes the device layout of rows [r0, r1): code(r, k), zero(r, g), scale(r, g) come from
 * the format's accessors (expressions of r, i (the input) and gg (the group)); gk NULL
 * means group i / group_. A trivial gk is dropped (the same groups; the CUDA kernels take
 * their faster path without a table). */
#define REPACK_ROWS(c, r0, r1, k, G, group_, gk, CODE, ZERO, SCALE)                             \
    do {                                                                                          \
        const struct repack *rp_ = (c)->rp;                                                       \
        const int32_t *gk_ = (gk) && !gidx_trivial((gk), (k), (group_)) ? (gk) : NULL;            \
        *rp_->group = (int)(group_);                                                              \
        *rp_->n_groups = (G);                                                                     \
        *rp_->has_gidx = gk_ != NULL;                                                             \
        if (gk_)                                                                                  \
            memcpy(rp_->gidx, gk_, sizeof(int32_t) * (size_t)(k));                               \
        for (int64_t r = (r0); r < (r1); r++) {                                                   \
            uint32_t *cw = rp_->codes + (r - (r0)) * ((k) / 8);                                   \
            for (int64_t i = 0; i < (k); i++) {                                                   \
                if (i % 8 == 0)                                                                   \
                    cw[i / 8] = 0;                                                                \
                cw[i / 8] |= (uint32_t)(CODE) << (4 * (i % 8));                                   \
            }                                                                                     \
            for (int64_t gg = 0; gg < (G); gg++) {                                                \
                rp_->zeros[(r - (r0)) * (G) + gg] = (uint8_t)(ZERO);                              \
                rp_->scales[(r - (r0)) * (G) + gg] = (SCALE);                                     \
            }                                                                                     \
        }                                                                                         \
    } while (0)

static void shape_text(const struct pl_tensor_info *ti, char *out, size_t cap)
{
    int at = snprintf(out, cap, "[");
    for (int d = 0; d < ti->n_dims && at > 0 && (size_t)at < cap; d++)
        at += snprintf(out + at, cap - (size_t)at, "%s%lld", d ? ", " : "",
                       (long long)ti->shape[d]);
    if (at > 0 && (size_t)at < cap)
        snprintf(out + at, cap - (size_t)at, "]");
}

static bool is_float(enum pl_dtype t)
{
    return t == PL_DTYPE_F32 || t == PL_DTYPE_F16 || t == PL_DTYPE_BF16;
}

/* module.suffix, or NULL (and *st set) when it is missing or has another dtype class. */
static const struct pl_tensor_info *find(struct ctx *c, const char *suffix, bool required,
                                         bool want_float, enum pl_dtype want, pl_status *st)
{
    char name[256];
    snprintf(name, sizeof(name), "%s.%s", c->module, suffix);
    const struct pl_tensor_info *ti = pl_safetensors_find(c->st, name);
    *st = PL_STATUS_OK;
    if (!ti) {
        if (required)
            *st = pl_err_set(c->err, PL_STATUS_NOT_FOUND,
                             "tensor '%s' is missing from the checkpoint (the quantization_config "
                             "stores %s packed)", name, c->module);
        return NULL;
    }
    if (want_float ? !is_float(ti->dtype) : ti->dtype != want) {
        *st = pl_err_set(c->err, PL_STATUS_FORMAT, "%s: tensor '%s' has dtype %s, expected %s",
                         ti->file, name, pl_dtype_name(ti->dtype),
                         want_float ? "F32, F16 or BF16" : pl_dtype_name(want));
        return NULL;
    }
    return ti;
}

/* Checks ti's shape is exactly [d0, d1] (d1 < 0: the 1-d [d0]). */
static pl_status check_shape(struct ctx *c, const struct pl_tensor_info *ti, int64_t d0,
                             int64_t d1)
{
    bool ok = d1 < 0 ? ti->n_dims == 1 && ti->shape[0] == d0
                     : ti->n_dims == 2 && ti->shape[0] == d0 && ti->shape[1] == d1;
    if (ok)
        return PL_STATUS_OK;
    char got[128];
    shape_text(ti, got, sizeof(got));
    if (d1 < 0)
        return pl_err_set(c->err, PL_STATUS_FORMAT,
                          "%s: tensor '%s' has shape %s, the config and quantization_config "
                          "need [%lld]", ti->file, ti->name, got, (long long)d0);
    return pl_err_set(c->err, PL_STATUS_FORMAT,
                      "%s: tensor '%s' has shape %s, the config and quantization_config need "
                      "[%lld, %lld]", ti->file, ti->name, got, (long long)d0, (long long)d1);
}

/* Every scale finite (a NaN or inf scale would poison every output silently). */
static pl_status check_scales(struct ctx *c, const struct pl_tensor_info *ti)
{
    for (int64_t i = 0; i < ti->n_elements; i++) {
        float s = pl_dtype_get_f32(ti->data, ti->dtype, (size_t)i);
        if (!isfinite(s))
            return pl_err_set(c->err, PL_STATUS_FORMAT,
                              "%s: tensor '%s' holds a non-finite scale at element %lld",
                              ti->file, ti->name, (long long)i);
    }
    return PL_STATUS_OK;
}

/* Reads g_idx (int32 [K]) and checks each entry is a group index below n_groups. */
static pl_status check_g_idx(struct ctx *c, const struct pl_tensor_info *gi, int64_t k_in,
                             int64_t n_groups)
{
    pl_status st = check_shape(c, gi, k_in, -1);
    if (st)
        return st;
    const int32_t *g = gi->data;
    for (int64_t k = 0; k < k_in; k++)
        if (g[k] < 0 || g[k] >= n_groups)
            return pl_err_set(c->err, PL_STATUS_FORMAT,
                              "%s: tensor '%s': g_idx[%lld] = %d is out of range (%lld groups)",
                              gi->file, gi->name, (long long)k, g[k], (long long)n_groups);
    return PL_STATUS_OK;
}

static inline uint32_t word(const void *p, int64_t i) { return ((const uint32_t *)p)[i]; }

static float scale_at(const struct pl_tensor_info *s, int64_t i)
{
    return pl_dtype_get_f32(s->data, s->dtype, (size_t)i);
}

static int64_t n_groups_of(int group_size, int64_t k_in)
{
    return group_size == -1 ? 1 : (k_in + group_size - 1) / group_size;
}

static pl_status groups_divide(struct ctx *c, const struct pl_quant_config *q, int64_t k_in)
{
    if (q->group_size > 0 && k_in % q->group_size)
        return pl_err_set(c->err, PL_STATUS_FORMAT,
                          "%s: %lld inputs are not a multiple of group_size %d", c->module,
                          (long long)k_in, q->group_size);
    return PL_STATUS_OK;
}

static pl_status dequant_awq(struct ctx *c, const struct pl_quant_config *q, int64_t n, int64_t k,
                             int64_t r0, int64_t r1, float *out)
{
    pl_status st;
    if (n % 8)
        return pl_err_set(c->err, PL_STATUS_FORMAT,
                          "%s: AWQ packs 8 outputs per int32 but the layer has %lld outputs",
                          c->module, (long long)n);
    if ((st = groups_divide(c, q, k)))
        return st;
    const int64_t g = k / q->group_size, np = n / 8;
    const struct pl_tensor_info *qw, *qz, *sc;
    if (!(qw = find(c, "qweight", true, false, PL_DTYPE_I32, &st)) || (st = check_shape(c, qw, k, np)))
        return st;
    if (!(qz = find(c, "qzeros", true, false, PL_DTYPE_I32, &st)) || (st = check_shape(c, qz, g, np)))
        return st;
    if (!(sc = find(c, "scales", true, true, 0, &st)) || (st = check_shape(c, sc, g, n)) ||
        (st = check_scales(c, sc)))
        return st;
    if (c->rp) {
        const int32_t *no_gidx = NULL;
        REPACK_ROWS(c, r0, r1, k, g, q->group_size, no_gidx,
                    (word(qw->data, i * np + r / 8) >> (4 * AWQ_REVERSE[r % 8])) & 15u,
                    (word(qz->data, gg * np + r / 8) >> (4 * AWQ_REVERSE[r % 8])) & 15u,
                    scale_at(sc, gg * n + r));
        return PL_STATUS_OK;
    }
    for (int64_t r = r0; r < r1; r++) {
        const int shift = 4 * AWQ_REVERSE[r % 8];
        float *o = out + (r - r0) * k;
        for (int64_t i = 0; i < k; i++) {
            const int64_t gi = i / q->group_size;
            const int qv = (int)((word(qw->data, i * np + r / 8) >> shift) & 15u);
            const int zv = (int)((word(qz->data, gi * np + r / 8) >> shift) & 15u);
            o[i] = (float)(qv - zv) * scale_at(sc, gi * n + r);
        }
    }
    return PL_STATUS_OK;
}

static pl_status dequant_gptq(struct ctx *c, const struct pl_quant_config *q, int64_t n,
                              int64_t k, int64_t r0, int64_t r1, float *out)
{
    pl_status st;
    const int bits = q->bits, pack = 32 / bits;
    const uint32_t mask = (1u << bits) - 1u;
    if (k % pack || n % pack)
        return pl_err_set(c->err, PL_STATUS_FORMAT,
                          "%s: GPTQ packs %d values per int32 but the layer is [%lld, %lld]",
                          c->module, pack, (long long)n, (long long)k);
    if (!q->desc_act && (st = groups_divide(c, q, k)))
        return st;
    const int64_t g = n_groups_of(q->group_size, k);
    const struct pl_tensor_info *qw, *qz, *sc, *gi = NULL;
    if (!(qw = find(c, "qweight", true, false, PL_DTYPE_I32, &st)) ||
        (st = check_shape(c, qw, k / pack, n)))
        return st;
    if (!(qz = find(c, "qzeros", true, false, PL_DTYPE_I32, &st)) ||
        (st = check_shape(c, qz, g, n / pack)))
        return st;
    if (!(sc = find(c, "scales", true, true, 0, &st)) || (st = check_shape(c, sc, g, n)) ||
        (st = check_scales(c, sc)))
        return st;
    if (q->desc_act) {
        if (!(gi = find(c, "g_idx", true, false, PL_DTYPE_I32, &st)) ||
            (st = check_g_idx(c, gi, k, g)))
            return st;
    }
    const int zero_add = q->gptq_v2 ? 0 : 1;
    if (c->rp) {
        const int32_t *gk = gi ? (const int32_t *)gi->data : NULL;
        REPACK_ROWS(c, r0, r1, k, g, q->group_size == -1 ? k : q->group_size, gk,
                    (word(qw->data, (i / pack) * n + r) >> ((i % pack) * bits)) & mask,
                    ((word(qz->data, gg * (n / pack) + r / pack) >> ((int)(r % pack) * bits)) &
                     mask) + (uint32_t)zero_add,
                    scale_at(sc, gg * n + r));
        return PL_STATUS_OK;
    }
    for (int64_t r = r0; r < r1; r++) {
        float *o = out + (r - r0) * k;
        const int zshift = (int)(r % pack) * bits;
        for (int64_t i = 0; i < k; i++) {
            const int64_t grp = gi ? ((const int32_t *)gi->data)[i]
                                   : (q->group_size == -1 ? 0 : i / q->group_size);
            const int qv = (int)((word(qw->data, (i / pack) * n + r) >> ((i % pack) * bits)) & mask);
            const int zv = (int)((word(qz->data, grp * (n / pack) + r / pack) >> zshift) & mask) +
                           zero_add;
            o[i] = (float)(qv - zv) * scale_at(sc, grp * n + r);
        }
    }
    return PL_STATUS_OK;
}

static pl_status dequant_ct_packed(struct ctx *c, const struct pl_quant_config *q, int64_t n,
                                   int64_t k, int64_t r0, int64_t r1, float *out)
{
    pl_status st;
    const int bits = q->bits, pack = 32 / bits, offset = 1 << (bits - 1);
    const uint32_t mask = (1u << bits) - 1u;
    const int64_t g = n_groups_of(q->group_size, k), kp = (k + pack - 1) / pack;
    const struct pl_tensor_info *wp, *ws, *sc, *zp = NULL, *gi = NULL;
    if (!(wp = find(c, "weight_packed", true, false, PL_DTYPE_I32, &st)) ||
        (st = check_shape(c, wp, n, kp)))
        return st;
    if (!(ws = find(c, "weight_shape", true, false, PL_DTYPE_I64, &st))) {
        if (st != PL_STATUS_FORMAT || !(ws = find(c, "weight_shape", true, false, PL_DTYPE_I32, &st)))
            return st;
    }
    if ((st = check_shape(c, ws, 2, -1)))
        return st;
    int64_t shape[2];
    for (int d = 0; d < 2; d++)
        shape[d] = ws->dtype == PL_DTYPE_I64 ? ((const int64_t *)ws->data)[d]
                                             : ((const int32_t *)ws->data)[d];
    if (shape[0] != n || shape[1] != k)
        return pl_err_set(c->err, PL_STATUS_FORMAT,
                          "%s: tensor '%s' says [%lld, %lld], the config needs [%lld, %lld]",
                          ws->file, ws->name, (long long)shape[0], (long long)shape[1],
                          (long long)n, (long long)k);
    if (!(sc = find(c, "weight_scale", true, true, 0, &st)) || (st = check_shape(c, sc, n, g)) ||
        (st = check_scales(c, sc)))
        return st;
    if (!q->sym) {
        if (!(zp = find(c, "weight_zero_point", true, false, PL_DTYPE_I32, &st)) ||
            (st = check_shape(c, zp, (n + pack - 1) / pack, g)))
            return st;
    }
    if (q->desc_act) {
        if (!(gi = find(c, "weight_g_idx", true, false, PL_DTYPE_I32, &st)) ||
            (st = check_g_idx(c, gi, k, g)))
            return st;
    } else if ((gi = find(c, "weight_g_idx", false, false, PL_DTYPE_I32, &st))) {
        if ((st = check_g_idx(c, gi, k, g)))
            return st;
    } else if (st) {
        return st;
    }
    if (c->rp) {
        const int32_t *gk = gi ? (const int32_t *)gi->data : NULL;
        REPACK_ROWS(c, r0, r1, k, g, q->group_size == -1 ? k : q->group_size, gk,
                    (word(wp->data, r * kp + i / pack) >> ((i % pack) * bits)) & mask,
                    zp ? (word(zp->data, (r / pack) * g + gg) >> ((r % pack) * bits)) & mask
                       : (uint32_t)offset,
                    scale_at(sc, r * g + gg));
        return PL_STATUS_OK;
    }
    for (int64_t r = r0; r < r1; r++) {
        float *o = out + (r - r0) * k;
        for (int64_t i = 0; i < k; i++) {
            const int64_t grp = gi ? ((const int32_t *)gi->data)[i]
                                   : (q->group_size == -1 ? 0 : i / q->group_size);
            const int qv = (int)((word(wp->data, r * kp + i / pack) >> ((i % pack) * bits)) & mask) -
                           offset;
            const int zv = zp ? (int)((word(zp->data, (r / pack) * g + grp) >> ((r % pack) * bits)) &
                                      mask) - offset
                              : 0;
            o[i] = (float)(qv - zv) * scale_at(sc, r * g + grp);
        }
    }
    return PL_STATUS_OK;
}

static pl_status dequant_fp8(struct ctx *c, const struct pl_quant_config *q, int64_t n, int64_t k,
                             int64_t r0, int64_t r1, float *out)
{
    pl_status st;
    const struct pl_tensor_info *w, *sc, *is = NULL;
    if (!(w = find(c, "weight", true, false, PL_DTYPE_F8_E4M3, &st)) ||
        (st = check_shape(c, w, n, k)))
        return st;
    const bool block = q->weight_strategy == PL_QSTRAT_BLOCK;
    const int64_t bn = block ? q->block_n : 1, bk = block ? q->block_k : 1;
    const int64_t sn = block ? (n + bn - 1) / bn : n, sk = block ? (k + bk - 1) / bk : 1;
    if (!(sc = find(c, block ? "weight_scale_inv" : "weight_scale", true, true, 0, &st)))
        return st;
    bool per_tensor = false;
    if (block) {
        if ((st = check_shape(c, sc, sn, sk)))
            return st;
    } else if (sc->n_elements == 1 && sc->n_dims <= 2) {
        per_tensor = true; /* [], [1] or [1, 1] */
    } else if (q->weight_strategy == PL_QSTRAT_CHANNEL) {
        if (!(sc->n_dims == 2 && sc->shape[0] == n && sc->shape[1] == 1) &&
            (st = check_shape(c, sc, n, -1)))
            return st;
    } else {
        char got[128];
        shape_text(sc, got, sizeof(got));
        return pl_err_set(c->err, PL_STATUS_FORMAT,
                          "%s: tensor '%s' has shape %s, a per-tensor scale has one element",
                          sc->file, sc->name, got);
    }
    if ((st = check_scales(c, sc)))
        return st;
    if (q->act_quant && !q->act_dynamic) {
        if (!(is = find(c, "input_scale", true, true, 0, &st)))
            return st;
        if (is->n_elements != 1) {
            char got[128];
            shape_text(is, got, sizeof(got));
            return pl_err_set(c->err, PL_STATUS_FORMAT,
                              "%s: tensor '%s' has shape %s, a static per-tensor input scale "
                              "has one element", is->file, is->name, got);
        }
        if ((st = check_scales(c, is)))
            return st;
    }
    const uint8_t *qv = w->data;
    if (c->f8) {
        if (block)
            return pl_err_set(c->err, PL_STATUS_INVALID_ARGUMENT,
                              "%s: block-wise FP8 scales have no per-channel layout", c->module);
        memcpy(c->f8->codes, qv + r0 * k, (size_t)((r1 - r0) * k));
        for (int64_t r = r0; r < r1; r++)
            c->f8->scales[r - r0] = per_tensor ? scale_at(sc, 0) : scale_at(sc, r);
        *c->f8->input_scale = q->act_quant && !q->act_dynamic ? scale_at(is, 0) : 0.0f;
        return PL_STATUS_OK;
    }
    for (int64_t r = r0; r < r1; r++) {
        float *o = out + (r - r0) * k;
        for (int64_t i = 0; i < k; i++) {
            const float s = per_tensor ? scale_at(sc, 0)
                            : block    ? scale_at(sc, (r / bn) * sk + i / bk)
                                       : scale_at(sc, r);
            o[i] = pl_f8e4m3_to_f32(qv[r * k + i]) * s;
        }
    }
    return PL_STATUS_OK;
}

float pl_quant_fp8_tensor_scale(const float *w, size_t n)
{
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++)
        amax = fmaxf(amax, fabsf(w[i]));
    return amax > 0.0f ? amax / 448.0f : 1.0f;
}

/* Online FP8 (--quantization fp8) of rows [r0, r1) of the float tensor module.weight [n, k]:
 * one scale for the whole checkpoint tensor (a fused one included), as fp32 weights (out)
 * or the FP8 layout (c->f8). */
static pl_status online_fp8(struct ctx *c, int64_t n, int64_t k, int64_t r0, int64_t r1,
                            float *out)
{
    char name[256];
    snprintf(name, sizeof(name), "%s.weight", c->module);
    const struct pl_tensor_info *ti = pl_safetensors_find(c->st, name);
    if (!ti)
        return pl_err_set(c->err, PL_STATUS_NOT_FOUND, "tensor '%s' is missing from the checkpoint",
                          name);
    if (!is_float(ti->dtype))
        return pl_err_set(c->err, PL_STATUS_UNSUPPORTED,
                          "%s: tensor '%s' has dtype %s; --quantization fp8 quantizes float "
                          "checkpoints", ti->file, name, pl_dtype_name(ti->dtype));
    pl_status st = check_shape(c, ti, n, k);
    if (st)
        return st;
    const size_t all = (size_t)n * (size_t)k;
    float *w = malloc(sizeof(float) * (all ? all : 1));
    if (!w)
        return pl_err_set(c->err, PL_STATUS_NO_MEMORY, "tensor '%s': out of memory", name);
    pl_dtype_convert(w, PL_DTYPE_F32, ti->data, ti->dtype, all);
    const float s = pl_quant_fp8_tensor_scale(w, all);
    for (int64_t r = r0; r < r1; r++)
        for (int64_t i = 0; i < k; i++) {
            const uint8_t q = pl_f32_to_f8e4m3(w[r * k + i] / s);
            if (c->f8)
                c->f8->codes[(r - r0) * k + i] = q;
            else
                out[(r - r0) * k + i] = pl_f8e4m3_to_f32(q) * s;
        }
    if (c->f8) {
        for (int64_t r = r0; r < r1; r++)
            c->f8->scales[r - r0] = s;
        *c->f8->input_scale = 0.0f; /* dynamic per token */
    }
    free(w);
    return PL_STATUS_OK;
}

pl_status pl_quant_dequant(const struct pl_quant_config *q, const struct pl_safetensors *st,
                           const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                           int64_t row_end, float *out, struct pl_err *err)
{
    struct ctx c = {.st = st, .module = module, .err = err};
    if (row_begin < 0 || row_end > n_out || row_begin > row_end || n_in <= 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: rows [%lld, %lld) of %lld",
                          module, (long long)row_begin, (long long)row_end, (long long)n_out);
    switch (q->method) {
    case PL_QUANT_AWQ: return dequant_awq(&c, q, n_out, n_in, row_begin, row_end, out);
    case PL_QUANT_GPTQ: return dequant_gptq(&c, q, n_out, n_in, row_begin, row_end, out);
    case PL_QUANT_CT_PACKED: return dequant_ct_packed(&c, q, n_out, n_in, row_begin, row_end, out);
    case PL_QUANT_CT_FP8:
    case PL_QUANT_FP8:
        if (q->online)
            return online_fp8(&c, n_out, n_in, row_begin, row_end, out);
        return dequant_fp8(&c, q, n_out, n_in, row_begin, row_end, out);
    case PL_QUANT_NONE: break;
    }
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: not a packed format", module);
}

bool pl_quant_is_fp8_w8a8(const struct pl_quant_config *q)
{
    return (q->method == PL_QUANT_CT_FP8 || q->method == PL_QUANT_FP8) && q->act_quant &&
           (q->weight_strategy == PL_QSTRAT_TENSOR || q->weight_strategy == PL_QSTRAT_CHANNEL);
}

pl_status pl_quant_f8w_buffer(const struct pl_quant_config *q, const struct pl_safetensors *st,
                              const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                              int64_t row_end, void **out, size_t *n_bytes, struct pl_err *err)
{
    *out = NULL;
    *n_bytes = 0;
    const int64_t rows = row_end - row_begin;
    if (!pl_quant_is_fp8_w8a8(q) || !pl_f8w_shape_ok(rows, n_in))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "%s: not an FP8 W8A8 layout of [%lld, %lld]", module, (long long)rows,
                          (long long)n_in);
    if (row_begin < 0 || row_end > n_out || row_begin > row_end)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: rows [%lld, %lld) of %lld",
                          module, (long long)row_begin, (long long)row_end, (long long)n_out);
    const struct pl_f8w_layout lay = pl_f8w_layout_of(rows, n_in);
    char *buf = calloc(1, (size_t)lay.n_bytes);
    if (!buf)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", module);
    const struct f8pack f8 = {(uint8_t *)buf, (float *)(buf + lay.scale_off),
                              (float *)(buf + lay.head_off)};
    struct ctx c = {.st = st, .module = module, .err = err, .f8 = &f8};
    pl_status s = q->online ? online_fp8(&c, n_out, n_in, row_begin, row_end, NULL)
                            : dequant_fp8(&c, q, n_out, n_in, row_begin, row_end, NULL);
    if (s != PL_STATUS_OK) {
        free(buf);
        return s;
    }
    *out = buf;
    *n_bytes = (size_t)lay.n_bytes;
    return PL_STATUS_OK;
}

bool pl_quant_is_int4(const struct pl_quant_config *q)
{
    return q->bits == 4 && (q->method == PL_QUANT_AWQ || q->method == PL_QUANT_GPTQ ||
                            q->method == PL_QUANT_CT_PACKED);
}

pl_status pl_quant_repack_int4(const struct pl_quant_config *q, const struct pl_safetensors *st,
                               const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                               int64_t row_end, uint32_t *codes, uint8_t *zeros, float *scales,
                               int32_t *gidx, bool *has_gidx, int *group, int64_t *n_groups,
                               struct pl_err *err)
{
    const struct repack rp = {codes, zeros, scales, gidx, has_gidx, group, n_groups};
    struct ctx c = {.st = st, .module = module, .err = err, .rp = &rp};
    if (!pl_quant_is_int4(q) || n_in % 8)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: not an int4 layout with %lld "
                          "inputs", module, (long long)n_in);
    if (row_begin < 0 || row_end > n_out || row_begin > row_end)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: rows [%lld, %lld) of %lld",
                          module, (long long)row_begin, (long long)row_end, (long long)n_out);
    switch (q->method) {
    case PL_QUANT_AWQ: return dequant_awq(&c, q, n_out, n_in, row_begin, row_end, NULL);
    case PL_QUANT_GPTQ: return dequant_gptq(&c, q, n_out, n_in, row_begin, row_end, NULL);
    default: return dequant_ct_packed(&c, q, n_out, n_in, row_begin, row_end, NULL);
    }
}

pl_status pl_quant_q4_buffer(const struct pl_quant_config *q, const struct pl_safetensors *st,
                             const char *module, int64_t n_out, int64_t n_in, int64_t row_begin,
                             int64_t row_end, void **out, size_t *n_bytes, struct pl_err *err)
{
    *out = NULL;
    *n_bytes = 0;
    const int64_t rows = row_end - row_begin, max_groups = n_in / 8 > 0 ? n_in / 8 : 1;
    uint32_t *codes = malloc(sizeof(uint32_t) * (size_t)(rows * (n_in / 8) + 1));
    uint8_t *zeros = malloc((size_t)(rows * max_groups + 1));
    float *scales = malloc(sizeof(float) * (size_t)(rows * max_groups + 1));
    int32_t *gidx = malloc(sizeof(int32_t) * (size_t)(n_in + 1));
    char *buf = NULL;
    bool has_gidx = false;
    int group = 0;
    int64_t n_groups = 0;
    pl_status s = PL_STATUS_OK;
    if (!codes || !zeros || !scales || !gidx)
        s = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", module);
    if (s == PL_STATUS_OK)
        s = pl_quant_repack_int4(q, st, module, n_out, n_in, row_begin, row_end, codes, zeros,
                                 scales, gidx, &has_gidx, &group, &n_groups, err);
    if (s == PL_STATUS_OK && (n_groups < 1 || n_groups > max_groups))
        s = pl_err_set(err, PL_STATUS_FORMAT, "%s: %lld groups per row", module,
                       (long long)n_groups);
    const struct pl_q4_layout lay = pl_q4_layout_of(rows, n_in, n_groups, has_gidx);
    if (s == PL_STATUS_OK && !(buf = calloc(1, (size_t)lay.n_bytes)))
        s = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", module);
    if (s == PL_STATUS_OK) {
        const int32_t head[4] = {group, (int32_t)n_groups, has_gidx, 0};
        memcpy(buf, head, sizeof(head));
        memcpy(buf + 16, codes, sizeof(uint32_t) * (size_t)(rows * (n_in / 8)));
        memcpy(buf + lay.scale_off, scales, sizeof(float) * (size_t)(rows * n_groups));
        memcpy(buf + lay.zero_off, zeros, (size_t)(rows * n_groups));
        if (has_gidx)
            memcpy(buf + lay.gidx_off, gidx, sizeof(int32_t) * (size_t)n_in);
        *out = buf;
        *n_bytes = (size_t)lay.n_bytes;
    }
    free(codes);
    free(zeros);
    free(scales);
    free(gidx);
    return s;
}

float pl_quant_fp8_roundtrip(float *w, size_t n)
{
    const float scale = pl_quant_fp8_tensor_scale(w, n);
    for (size_t i = 0; i < n; i++)
        w[i] = pl_f8e4m3_to_f32(pl_f32_to_f8e4m3(w[i] / scale)) * scale;
    return scale;
}
