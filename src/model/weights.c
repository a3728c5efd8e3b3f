/*
 * weights.c -- Hugging Face tensors -> struct pl_weights slots, driven by the
 * architecture's tensor-spec table (see weights.h and model/arch.h).
 *
 * Owns the walk over one table: for each spec, each layer (and expert) it
 * applies to, the HF name, the shape the config implies, the backend mapping.
 * The same walk loads a checkpoint, makes dummy weights and frees.
 * Invariants:
 *   1. A slot is either {NULL} (the config does not use it) or holds a pointer
 *      the backend returned for exactly one slot (map_weight, or alloc for dummy
 *      and PL_TENSOR_PLUS_ONE slots); the only shared pointer is lm_head == embed
 *      when the embeddings are tied, and pl_weights_free releases every pointer
 *      exactly once.
 *   2. A filled slot's tensor had exactly the shape the config implies and a
 *      dtype the backend supports for the op that reads it.
 * Conversion (vLLM's --dtype): with a target dtype, a tensor stored in another
 * dtype is converted on the host one tensor (or fused row range) at a time in
 * load_slot and copied into memory from the backend's alloc; its pointer is
 * listed in `converted` so that free releases it with the backend's free
 * instead of unmapping it. (1 + w) norms stay fp32 whatever the target.
 * Fused checkpoint tensors (Phi-3's qkv_proj, gate_up_proj): each slot maps its
 * own row range of the tensor, so the model sees plain q/k/v and gate/up weights
 * (matmul_group runs q, k, v as one launch on CUDA at decode sizes anyway).
 * Tensor parallelism (model/shard.h): with a shard, cfg is the rank's config and
 * the checkpoint's shapes are the full config's; a column-parallel slot maps its
 * contiguous row range of the tensor (no copy on the CPU), a row-parallel slot
 * gathers its columns on the host into backend memory (listed in `converted`,
 * like a conversion), so each rank reads only its share of the mmap.
 * Quantized checkpoints: a quantizable module the quantization_config stores packed is
 * kept packed in the backend's own layout where the backend runs it (int4: PL_DTYPE_Q4;
 * FP8 W8A8: PL_DTYPE_F8W; packed_dtype decides, for checkpoints and dummy weights alike),
 * and dequantized at load otherwise (the reference path, model/quant.h).
 * Tied embeddings: transformers' tie_weights() makes the output projection
 * share the input embedding's parameter, so when tie_word_embeddings is true
 * the embedding is used even if the checkpoint also carries lm_head.weight.
 */
#include "model/weights.h"

#include "model/arch.h"
#include "model/shard.h"
#include "model/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct loader {
    const struct pl_safetensors *st; /* NULL: dummy weights */
    struct pl_backend *be;
    struct pl_weights *w;
    const struct pl_model_config *cfg;
    struct pl_err *err;
    enum pl_dtype dummy_dtype;
    uint64_t seed;                   /* dummy: advanced once per tensor */
    int want;                        /* target dtype, or PL_WEIGHTS_DTYPE_AS_STORED */
    int cap_converted;               /* capacity of w->converted */
    const struct pl_shard *shard;    /* tensor parallelism: the rank's share; NULL: whole */
};

static void spec_name(const struct pl_tensor_spec *t, int l, int e, char *out, size_t cap)
{
    pl_tensor_spec_name(t, l, e, out, cap);
}

static struct pl_weight *spec_slot(const struct pl_tensor_spec *t, struct pl_weights *w, int l,
                                   int e)
{
    char *base;
    switch (t->scope) {
    case PL_SCOPE_MODEL: base = (char *)w; break;
    case PL_SCOPE_LAYER: base = (char *)&w->layers[l]; break;
    default:
        if (!w->layers[l].experts)
            return NULL;
        base = (char *)&w->layers[l].experts[e];
        break;
    }
    return (struct pl_weight *)(base + t->slot);
}

/* Whether the tensor is 1 + w in fp32 (a Gemma norm): stored F32, allocated, not mapped. */
static bool plus_one(const struct pl_tensor_spec *t) { return t->flags & PL_TENSOR_PLUS_ONE; }

static void dummy_range(enum pl_op op, const struct pl_tensor_spec *t, int64_t cols, float *lo,
                        float *hi)
{
    /* norm weights 1 (a real model's start), embeddings U(-1, 1), matrices and biases
     * U(-a, a) with a = 1/sqrt(in_features), so activations keep their scale layer to
     * layer and the logits stay finite */
    if (op == PL_OP_RMSNORM) {
        *lo = *hi = 1.0f;
    } else if (op == PL_OP_EMBED) {
        *lo = -1.0f;
        *hi = 1.0f;
    } else {
        *hi = 1.0f / sqrtf((float)cols);
        *lo = -*hi;
    }
}

static pl_status convert_from(struct loader *L, const char *file, enum pl_dtype from,
                              const char *name, const void *src, size_t n, enum pl_dtype to,
                              void **out, size_t *out_bytes);

/* A packed weight's one buffer (host memory, freed here whatever happens) into backend
 * memory as the slot of a [rows, cols] weight of `dtype` (PL_DTYPE_Q4 or PL_DTYPE_F8W).
 * st: the status of making buf; anything but OK is passed on. */
static pl_status upload_packed(struct loader *L, pl_status st, const char *file, const char *name,
                               void *buf, size_t len, enum pl_dtype dtype, int64_t rows,
                               int64_t cols, struct pl_weight *slot)
{
    void *p = NULL;
    size_t n_bytes = 0;
    /* bytes as they are: U8 to U8 is a plain copy */
    if (st == PL_STATUS_OK)
        st = convert_from(L, file, PL_DTYPE_U8, name, buf, len, PL_DTYPE_U8, &p, &n_bytes);
    free(buf);
    if (st != PL_STATUS_OK)
        return st;
    *slot = (struct pl_weight){.data = p, .dtype = dtype, .rows = rows, .cols = cols};
    L->w->n_bytes += n_bytes;
    return PL_STATUS_OK;
}

/* A packed int4 dummy weight (PL_DTYPE_Q4) for a quantization_config the backend runs
 * packed: random codes, zero 8 and scales a / 7.5 per group (weights within +-a, a =
 * 1/sqrt(in_features) as the dense dummies), no act-order; built on the host. */
static pl_status dummy_q4_slot(struct loader *L, const char *name, int64_t rows, int64_t cols,
                               struct pl_weight *slot)
{
    const int group = L->cfg->quant.group_size > 0 ? L->cfg->quant.group_size : (int)cols;
    const int64_t n_groups = (cols + group - 1) / group;
    const struct pl_q4_layout lay = pl_q4_layout_of(rows, cols, n_groups, 0);
    char *buf = malloc((size_t)lay.n_bytes);
    if (!buf)
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "dummy tensor '%s': out of memory", name);
    const int32_t head[4] = {group, (int32_t)n_groups, 0, 0};
    memcpy(buf, head, sizeof(head));
    uint32_t *codes = (uint32_t *)(buf + 16);
    uint64_t s = L->seed++ * 0x632BE59BD9B4E019ull;
    for (int64_t i = 0; i < rows * (cols / 8); i += 2) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        codes[i] = (uint32_t)z;
        if (i + 1 < rows * (cols / 8))
            codes[i + 1] = (uint32_t)(z >> 32);
    }
    const float sc = 1.0f / sqrtf((float)cols) / 7.5f;
    for (int64_t i = 0; i < rows * n_groups; i++) {
        ((float *)(buf + lay.scale_off))[i] = sc;
        ((uint8_t *)(buf + lay.zero_off))[i] = 8;
    }
    return upload_packed(L, PL_STATUS_OK, "dummy", name, buf, (size_t)lay.n_bytes, PL_DTYPE_Q4,
                         rows, cols, slot);
}

/* A packed FP8 dummy weight (PL_DTYPE_F8W) for an FP8 W8A8 quantization_config the backend
 * runs packed: codes e4m3(448 u) for u uniform over 256 levels in (-1, 1) (a table of the
 * 256 codes indexed by random bytes: the per-element conversion took over two minutes for
 * an 8B model's 7e9 weights) and every row's scale a / 448, so the weights are those of the
 * dense dummies (within +-a, a = 1/sqrt(in_features)) rounded through e4m3; dynamic
 * activation scales; built on the host. */
static pl_status dummy_f8w_slot(struct loader *L, const char *name, int64_t rows, int64_t cols,
                                int64_t full_cols, struct pl_weight *slot)
{
    const struct pl_f8w_layout lay = pl_f8w_layout_of(rows, cols);
    char *buf = calloc(1, (size_t)lay.n_bytes);
    if (!buf)
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "dummy tensor '%s': out of memory", name);
    uint8_t code[256];
    for (int b = 0; b < 256; b++)
        code[b] = pl_f32_to_f8e4m3(448.0f * (((float)b + 0.5f) / 128.0f - 1.0f));
    uint64_t s = L->seed++ * 0x632BE59BD9B4E019ull;
    uint8_t *c = (uint8_t *)buf;
    const int64_t n = rows * cols;
    for (int64_t i = 0; i < n; i += 8) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull); /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        for (int j = 0; j < 8 && i + j < n; j++)
            c[i + j] = code[(z >> (8 * j)) & 255u];
    }
    const float sc = 1.0f / sqrtf((float)full_cols) / 448.0f;
    for (int64_t r = 0; r < rows; r++)
        ((float *)(buf + lay.scale_off))[r] = sc;
    return upload_packed(L, PL_STATUS_OK, "dummy", name, buf, (size_t)lay.n_bytes,
                         PL_DTYPE_F8W, rows, cols, slot);
}

/* A dummy tensor: allocated on the backend and filled there (no host copy); each
 * tensor gets its own seed so no two tensors repeat each other. */
static pl_status dummy_slot(struct loader *L, const struct pl_tensor_spec *t, const char *name,
                            int64_t rows, int64_t cols, int64_t full_cols, struct pl_weight *slot)
{
    const bool is_vector = rows == 0;
    const enum pl_dtype dt = plus_one(t) ? PL_DTYPE_F32 : L->dummy_dtype;
    const size_t n = (size_t)(is_vector ? 1 : rows) * (size_t)cols;
    const size_t n_bytes = n * pl_dtype_size(dt);
    void *p = L->be->ops->alloc(L->be, n_bytes);
    if (!p)
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY,
                          "dummy tensor '%s': the backend could not allocate %zu bytes", name,
                          n_bytes);
    float lo, hi;
    dummy_range(t->op, t, full_cols, &lo, &hi); /* the full fan-in, sharded or not */
    L->be->ops->fill(L->be, p, dt, n, L->seed++ * 0x632BE59BD9B4E019ull, lo, hi);
    *slot = (struct pl_weight){.data = p, .dtype = dt, .rows = is_vector ? 1 : rows, .cols = cols};
    L->w->n_bytes += n_bytes;
    return PL_STATUS_OK;
}

static void shape_text(const struct pl_tensor_info *ti, char *got, size_t cap)
{
    int at = snprintf(got, cap, "[");
    for (int d = 0; d < ti->n_dims && at > 0 && (size_t)at < cap; d++)
        at += snprintf(got + at, cap - (size_t)at, "%s%lld", d ? ", " : "",
                       (long long)ti->shape[d]);
    if (at > 0 && (size_t)at < cap)
        snprintf(got + at, cap - (size_t)at, "]");
}

/* An fp32 copy of 1 + w (computed in fp32, as Gemma's RMSNorm does) in backend memory. */
static pl_status plus_one_slot(struct loader *L, const struct pl_tensor_info *ti, const char *name,
                               int64_t off, int64_t cols, struct pl_weight *slot)
{
    float *h = malloc(sizeof(float) * (size_t)cols);
    void *p = h ? L->be->ops->alloc(L->be, sizeof(float) * (size_t)cols) : NULL;
    if (!p) {
        free(h);
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "tensor '%s': out of memory", name);
    }
    for (int64_t i = 0; i < cols; i++)
        h[i] = 1.0f + pl_dtype_get_f32(ti->data, ti->dtype, (size_t)(off + i));
    pl_status st = L->be->ops->upload(L->be, p, h, sizeof(float) * (size_t)cols);
    if (st == PL_STATUS_OK)
        st = L->be->ops->sync(L->be);
    free(h);
    if (st != PL_STATUS_OK) {
        L->be->ops->free(L->be, p);
        return pl_err_set(L->err, st, "tensor '%s': the backend could not take it", name);
    }
    *slot = (struct pl_weight){.data = p, .dtype = PL_DTYPE_F32, .rows = 1, .cols = cols};
    L->w->n_bytes += sizeof(float) * (size_t)cols; /* what the backend holds */
    return PL_STATUS_OK;
}

/* n elements of type `from` at src (host memory; a tensor of `file`, or dequantized
 * weights), converted to `to` into backend memory (see the top). */
static pl_status convert_from(struct loader *L, const char *file, enum pl_dtype from,
                              const char *name, const void *src, size_t n, enum pl_dtype to,
                              void **out, size_t *out_bytes)
{
    const struct pl_backend_ops *ops = L->be->ops;
    struct pl_weights *w = L->w;
    const size_t n_bytes = n * pl_dtype_size(to);
    if (w->n_converted == L->cap_converted) {
        int cap = L->cap_converted ? 2 * L->cap_converted : 64;
        const void **grown = realloc(w->converted, sizeof(*grown) * (size_t)cap);
        if (!grown)
            return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "weights: out of memory");
        w->converted = grown;
        L->cap_converted = cap;
    }
    void *host = malloc(n_bytes ? n_bytes : 1);
    void *p = host ? ops->alloc(L->be, n_bytes) : NULL;
    if (!p) {
        free(host);
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY,
                          "tensor '%s': out of memory converting %zu bytes to %s", name, n_bytes,
                          pl_dtype_torch_name(to));
    }
    pl_status st = PL_STATUS_OK;
    if (from == to) /* a plain copy (the int4 layout's bytes) */
        memcpy(host, src, n_bytes);
    if (from != to && !pl_dtype_convert(host, to, src, from, n))
        st = pl_err_set(L->err, PL_STATUS_UNSUPPORTED, "%s: tensor '%s' of dtype %s cannot be "
                        "converted to %s", file, name, pl_dtype_name(from),
                        pl_dtype_torch_name(to));
    /* sync: the host copy is freed next, so the upload must have read it */
    else if (ops->upload(L->be, p, host, n_bytes) != PL_STATUS_OK ||
             ops->sync(L->be) != PL_STATUS_OK)
        st = pl_err_set(L->err, PL_STATUS_INTERNAL, "tensor '%s': the %s backend failed to take "
                        "%zu bytes", name, ops->name, n_bytes);
    free(host);
    if (st != PL_STATUS_OK) {
        ops->free(L->be, p);
        return st;
    }
    w->converted[w->n_converted++] = p;
    *out = p;
    *out_bytes = n_bytes;
    return PL_STATUS_OK;
}

static pl_status convert_slot(struct loader *L, const struct pl_tensor_info *ti, const char *name,
                              const void *src, size_t n, enum pl_dtype to, void **out,
                              size_t *out_bytes)
{
    return convert_from(L, ti->file, ti->dtype, name, src, n, to, out, out_bytes);
}

/* The packed dtype a quantizable slot keeps on this backend: PL_DTYPE_Q4 (int4 formats)
 * or PL_DTYPE_F8W (FP8 W8A8, per tensor or channel) where the backend multiplies that
 * layout itself (backend.h) and the shape fits it; PL_DTYPE_COUNT: dequantized at load.
 * One rule for checkpoints and dummy weights. MoE experts (the moe op's slots) stay packed
 * where the backend's moe op takes int4 experts (the CPU's), else dense. */
static enum pl_dtype packed_dtype(const struct loader *L, const struct pl_tensor_spec *t,
                                  int64_t rows, int64_t cols)
{
    const struct pl_quant_config *q = &L->cfg->quant;
    struct pl_backend *be = L->be;
    if (pl_quant_is_int4(q) && cols % 8 == 0 && be->ops->supports(be, t->op, PL_DTYPE_Q4))
        return PL_DTYPE_Q4;
    if (pl_quant_is_fp8_w8a8(q) && pl_f8w_shape_ok(rows, cols) &&
        be->ops->supports(be, t->op, PL_DTYPE_F8W))
        return PL_DTYPE_F8W;
    return PL_DTYPE_COUNT;
}

/* A module kept packed (packed_dtype): the checkpoint's codes and scales in the backend
 * layout's one buffer (int4: pl_q4_layout_of, act-order kept as a g_idx table, so no
 * permutation of the inputs; FP8: pl_f8w_layout_of, the e4m3 bytes as stored). */
static pl_status packed_slot(struct loader *L, enum pl_dtype dtype, const char *name,
                             const char *module, int64_t rows, int64_t cols, int64_t src_rows,
                             int64_t row_off, struct pl_weight *slot)
{
    void *buf = NULL;
    size_t len = 0;
    pl_status st = dtype == PL_DTYPE_Q4
                       ? pl_quant_q4_buffer(&L->cfg->quant, L->st, module, src_rows, cols, row_off,
                                            row_off + rows, &buf, &len, L->err)
                       : pl_quant_f8w_buffer(&L->cfg->quant, L->st, module, src_rows, cols,
                                             row_off, row_off + rows, &buf, &len, L->err);
    return upload_packed(L, st, "packed", name, buf, len, dtype, rows, cols, slot);
}

/* The dtype dequantized weights are held in: the target dtype when converting, else fp32
 * where the backend computes in fp32 (the CPU: the reference is exact), else the
 * checkpoint's dtype where the backend's matmul runs it, else bf16. */
static enum pl_dtype dequant_dtype(const struct loader *L)
{
    struct pl_backend *be = L->be;
    if (L->want >= 0)
        return (enum pl_dtype)L->want;
    if (be->ops->act_dtype == PL_DTYPE_F32 && be->ops->supports(be, PL_OP_MATMUL, PL_DTYPE_F32))
        return PL_DTYPE_F32;
    if (be->ops->supports(be, PL_OP_MATMUL, L->cfg->dtype))
        return L->cfg->dtype;
    return PL_DTYPE_BF16;
}

/* A quantizable slot the quantization_config stores packed (module: the HF name without
 * ".weight"): kept packed where the backend runs the layout (packed_dtype), else the
 * dequantizing reference (model/quant.h) makes the slot's rows in fp32 on the host, which
 * are converted and copied into backend memory as a --dtype conversion is. --quantization
 * fp8 (online) rounds the float tensor through e4m3 with one scale per checkpoint tensor,
 * packed or not. */
static pl_status quant_slot(struct loader *L, const struct pl_tensor_spec *t, const char *name,
                            const char *module, int64_t rows, int64_t cols, int64_t src_rows,
                            int64_t row_off, struct pl_weight *slot)
{
    const struct pl_quant_config *q = &L->cfg->quant;
    const enum pl_dtype packed = packed_dtype(L, t, rows, cols);
    if (packed != PL_DTYPE_COUNT)
        return packed_slot(L, packed, name, module, rows, cols, src_rows, row_off, slot);
    const enum pl_dtype to = dequant_dtype(L);
    if (!L->be->ops->supports(L->be, t->op, to))
        return pl_err_set(L->err, PL_STATUS_UNSUPPORTED,
                          "tensor '%s': the %s backend does not run %s weights", name,
                          L->be->ops->name, pl_dtype_torch_name(to));
    const size_t n = (size_t)rows * (size_t)cols;
    float *host = malloc(sizeof(float) * (n ? n : 1));
    if (!host)
        return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "tensor '%s': out of memory", name);
    pl_status st = pl_quant_dequant(q, L->st, module, src_rows, cols, row_off, row_off + rows,
                                    host, L->err);
    void *p = NULL;
    size_t n_bytes = 0;
    if (st == PL_STATUS_OK)
        st = convert_from(L, "dequantized", PL_DTYPE_F32, name, host, n, to, &p, &n_bytes);
    free(host);
    if (st != PL_STATUS_OK)
        return st;
    *slot = (struct pl_weight){.data = p, .dtype = to, .rows = rows, .cols = cols};
    L->w->n_bytes += n_bytes;
    return PL_STATUS_OK;
}

/* The module a quantizable weight belongs to ("model.layers.0.mlp.up_proj" for
 * "...up_proj.weight") when the quantization_config stores it quantized; false else. */
static bool quantized_module(const struct loader *L, const struct pl_tensor_spec *t,
                             const char *name, char *module, size_t cap)
{
    if (L->cfg->quant.method == PL_QUANT_NONE || !(t->flags & PL_TENSOR_QUANTIZABLE))
        return false;
    const size_t len = strlen(name), suf = strlen(".weight");
    if (len <= suf || len - suf >= cap || strcmp(name + len - suf, ".weight"))
        return false;
    memcpy(module, name, len - suf);
    module[len - suf] = '\0';
    return pl_quant_module_is_quantized(&L->cfg->quant, module);
}

/* Fills one slot of spec t: from the checkpoint after checking its shape ([rows, cols]
 * for a matrix, [cols] for a vector when rows == 0, in the full config's dimensions; a
 * fused tensor is [src_rows, cols] and the slot takes rows [row_off, row_off + rows))
 * and that the backend runs t->op on its dtype (the target dtype when converting: then
 * converted here); or with dummy values. With a shard, the slot takes the rank's rows
 * (column-parallel) or columns (row-parallel, gathered) of the tensor. */
static pl_status load_slot(struct loader *L, const struct pl_tensor_spec *t, const char *name,
                           struct pl_weight *slot)
{
    const struct pl_model_config *c = L->cfg;
    const struct pl_model_config *F = L->shard ? L->shard->full : c; /* the checkpoint's */
    const int64_t rows = t->rows == PL_DIM_NONE ? 0 : pl_arch_dim(c, t->rows);
    const int64_t cols = pl_arch_dim(c, t->cols);
    const int64_t full_cols = pl_arch_dim(F, t->cols);
    const bool fused = t->src_rows != PL_DIM_NONE;
    const int64_t src_rows = fused ? pl_arch_dim(F, t->src_rows)
                             : rows ? pl_arch_dim(F, t->rows) : 0;
    const int64_t row_off = (fused ? pl_arch_dim(F, t->row_off) : 0) +
                            (rows ? pl_shard_start(L->shard, c, t->rows) : 0);
    const int64_t col_off = pl_shard_start(L->shard, c, t->cols);
    char module[192];
    const bool quantized = quantized_module(L, t, name, module, sizeof(module));
    if (quantized && L->shard)
        return pl_err_set(L->err, PL_STATUS_UNSUPPORTED,
                          "tensor '%s': quantized weights (%s) are not sharded for tensor "
                          "parallelism yet; run this model with tensor_parallel_size 1",
                          name, c->quant.method_name);
    const enum pl_dtype packed = quantized ? packed_dtype(L, t, rows, cols) : PL_DTYPE_COUNT;
    if (!L->st && packed == PL_DTYPE_Q4)
        return dummy_q4_slot(L, name, rows, cols, slot);
    if (!L->st && packed == PL_DTYPE_F8W)
        return dummy_f8w_slot(L, name, rows, cols, full_cols, slot);
    if (!L->st)
        return dummy_slot(L, t, name, rows, cols, full_cols, slot);
    if (quantized)
        return quant_slot(L, t, name, module, rows, cols, src_rows, row_off, slot);
    const struct pl_tensor_info *ti = pl_safetensors_find(L->st, name);
    if (!ti)
        return pl_err_set(L->err, PL_STATUS_NOT_FOUND, "tensor '%s' is missing from the checkpoint",
                          name);
    const bool is_vector = rows == 0;
    bool ok = is_vector ? (ti->n_dims == 1 && ti->shape[0] == full_cols)
                        : (ti->n_dims == 2 && ti->shape[0] == src_rows && ti->shape[1] == full_cols);
    if (!ok) {
        char got[160];
        shape_text(ti, got, sizeof(got));
        if (is_vector)
            return pl_err_set(L->err, PL_STATUS_FORMAT,
                              "%s: tensor '%s' has shape %s, the config needs [%lld]", ti->file,
                              name, got, (long long)full_cols);
        return pl_err_set(L->err, PL_STATUS_FORMAT,
                          "%s: tensor '%s' has shape %s, the config needs [%lld, %lld]", ti->file,
                          name, got, (long long)src_rows, (long long)full_cols);
    }
    const struct pl_backend_ops *ops = L->be->ops;
    if (plus_one(t))
        return plus_one_slot(L, ti, name, col_off, cols, slot);
    const enum pl_dtype dtype = L->want >= 0 ? (enum pl_dtype)L->want : ti->dtype;
    if (!ops->supports(L->be, t->op, dtype)) {
        if (dtype != ti->dtype)
            return pl_err_set(L->err, PL_STATUS_UNSUPPORTED,
                              "dtype %s: the %s backend does not run %s weights (tensor '%s')",
                              pl_dtype_torch_name(dtype), ops->name ? ops->name : "?",
                              pl_dtype_torch_name(dtype), name);
        return pl_err_set(L->err, PL_STATUS_UNSUPPORTED,
                          "%s: tensor '%s' has dtype %s, which the %s backend does not support "
                          "for this op (--dtype can convert it at load)",
                          ti->file, name, pl_dtype_name(ti->dtype), ops->name ? ops->name : "?");
    }
    const size_t esize = pl_dtype_size(ti->dtype);
    const size_t n_elems = (size_t)(is_vector ? 1 : rows) * (size_t)cols;
    size_t n_bytes = n_elems * esize;
    const void *src = (const char *)ti->data +
                      (is_vector ? (size_t)col_off : (size_t)row_off * (size_t)full_cols) * esize;
    void *gathered = NULL;
    if (!is_vector && cols != full_cols) { /* row-parallel: the rank's columns of each row */
        gathered = malloc(n_bytes ? n_bytes : 1);
        if (!gathered)
            return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "tensor '%s': out of memory", name);
        for (int64_t r = 0; r < rows; r++)
            memcpy((char *)gathered + (size_t)r * (size_t)cols * esize,
                   (const char *)ti->data +
                       ((size_t)(row_off + r) * (size_t)full_cols + (size_t)col_off) * esize,
                   (size_t)cols * esize);
        src = gathered;
    }
    void *p = NULL;
    pl_status st = PL_STATUS_OK;
    if (dtype != ti->dtype || gathered) {
        st = convert_slot(L, ti, name, src, n_elems, dtype, &p, &n_bytes);
    } else if (!(p = ops->map_weight(L->be, src, n_bytes))) {
        st = pl_err_set(L->err, PL_STATUS_NO_MEMORY, "tensor '%s': the backend could not map %zu "
                        "bytes", name, n_bytes);
    }
    free(gathered);
    if (st != PL_STATUS_OK)
        return st;
    *slot = (struct pl_weight){
        .data = p, .dtype = dtype, .rows = is_vector ? 1 : rows, .cols = cols};
    L->w->n_bytes += n_bytes;
    return PL_STATUS_OK;
}

/* Whether spec t applies to layer l of this config (model-scope specs: l = -1). */
static bool spec_applies(const struct pl_tensor_spec *t, const struct pl_model_config *c, int l)
{
    if (t->flags & PL_TENSOR_TIED && c->tie_word_embeddings)
        return false; /* the embedding serves */
    return !t->when || t->when(c, l);
}

/* Loads every slot of spec t (each layer, each expert). */
static pl_status load_spec(struct loader *L, const struct pl_tensor_spec *t)
{
    const struct pl_model_config *c = L->cfg;
    struct pl_weights *w = L->w;
    char name[192];
    pl_status st;
    if (t->scope == PL_SCOPE_MODEL) {
        if (!spec_applies(t, c, -1))
            return PL_STATUS_OK;
        spec_name(t, 0, 0, name, sizeof(name));
        return load_slot(L, t, name, spec_slot(t, w, 0, 0));
    }
    for (int l = 0; l < c->n_layers; l++) {
        if (!spec_applies(t, c, l))
            continue;
        if (t->scope == PL_SCOPE_LAYER) {
            spec_name(t, l, 0, name, sizeof(name));
            if ((st = load_slot(L, t, name, spec_slot(t, w, l, 0))))
                return st;
            continue;
        }
        if (!w->layers[l].experts) {
            w->layers[l].experts = calloc((size_t)c->n_experts, sizeof(struct pl_expert_weights));
            if (!w->layers[l].experts)
                return pl_err_set(L->err, PL_STATUS_NO_MEMORY, "weights: out of memory");
        }
        for (int e = 0; e < c->n_experts; e++) {
            spec_name(t, l, e, name, sizeof(name));
            if ((st = load_slot(L, t, name, spec_slot(t, w, l, e))))
                return st;
        }
    }
    return PL_STATUS_OK;
}

/* The loader behind pl_weights_load (st != NULL) and pl_weights_dummy (st == NULL). */
static pl_status weights_build(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                               struct pl_backend *be, uint64_t seed, int want,
                               const struct pl_shard *shard, struct pl_weights **out,
                               struct pl_err *err)
{
    *out = NULL;
    if (want != PL_WEIGHTS_DTYPE_AS_STORED && want != PL_DTYPE_F32 && want != PL_DTYPE_F16 &&
        want != PL_DTYPE_BF16)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: dtype %d is not a float type",
                          want);
    if (cfg->n_layers <= 0 || cfg->n_layers > PL_MAX_LAYERS || !cfg->arch)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "weights: config has %d layers%s", cfg->n_layers,
                          cfg->arch ? "" : " and no architecture");
    if (cfg->n_experts < 0 || cfg->n_experts > 4096)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: %d experts", cfg->n_experts);
    struct pl_weights *w = calloc(1, sizeof(*w));
    if (!w)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "weights: out of memory");
    w->be = be;
    w->layers = calloc((size_t)cfg->n_layers, sizeof(*w->layers));
    if (!w->layers) {
        free(w);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "weights: out of memory");
    }
    /* Set before loading so that pl_weights_free can undo a partial load. */
    w->n_layers = cfg->n_layers;
    w->n_experts = cfg->n_experts;
    w->arch = cfg->arch;
    w->allocated = st == NULL;
    struct loader L = {
        .st = st, .be = be, .w = w, .cfg = cfg, .err = err, .seed = seed, .want = want,
        .shard = shard && shard->size > 1 ? shard : NULL};
    pl_status status = PL_STATUS_OK;
    if (want != PL_WEIGHTS_DTYPE_AS_STORED) {
        /* refuse up front, before converting anything, a dtype the backend cannot run */
        static const enum pl_op ops[] = {PL_OP_EMBED, PL_OP_RMSNORM, PL_OP_MATMUL, PL_OP_LOGITS};
        for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
            if (!be->ops->supports(be, ops[i], (enum pl_dtype)want)) {
                status = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                    "dtype %s: the %s backend does not run %s weights (it "
                                    "computes in %s)",
                                    pl_dtype_torch_name((enum pl_dtype)want), be->ops->name,
                                    pl_dtype_torch_name((enum pl_dtype)want),
                                    pl_dtype_torch_name(be->ops->act_dtype));
                goto fail;
            }
    }
    if (!st && want != PL_WEIGHTS_DTYPE_AS_STORED) {
        L.dummy_dtype = (enum pl_dtype)want;
        if (!be->ops->supports(be, PL_OP_FILL, L.dummy_dtype)) {
            status = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                "dummy weights: the %s backend cannot fill %s tensors",
                                be->ops->name, pl_dtype_torch_name(L.dummy_dtype));
            goto fail;
        }
    } else if (!st) {
        /* the checkpoint's dtype where the backend's matmul runs it, else bf16 */
        L.dummy_dtype = cfg->dtype;
        if (!be->ops->supports(be, PL_OP_MATMUL, L.dummy_dtype) ||
            !be->ops->supports(be, PL_OP_FILL, L.dummy_dtype))
            L.dummy_dtype = PL_DTYPE_BF16;
        if (!be->ops->supports(be, PL_OP_FILL, L.dummy_dtype)) {
            status = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                "dummy weights: the %s backend cannot fill %s tensors",
                                be->ops->name, pl_dtype_name(L.dummy_dtype));
            goto fail;
        }
    }
    const struct pl_arch *a = cfg->arch;
    for (int i = 0; i < a->n_tensors; i++)
        if ((status = load_spec(&L, &a->tensors[i])))
            goto fail;
    if (cfg->tie_word_embeddings) {
        if (!be->ops->supports(be, PL_OP_LOGITS, w->embed.dtype)) {
            status = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                "tensor 'model.embed_tokens.weight' (tied lm_head) has dtype %s, "
                                "which the %s backend does not support for logits",
                                pl_dtype_name(w->embed.dtype),
                                be->ops->name ? be->ops->name : "?");
            goto fail;
        }
        w->lm_head = w->embed;
    }
    *out = w;
    return PL_STATUS_OK;
fail:
    pl_weights_free(w);
    return status;
}

pl_status pl_weights_load(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                          struct pl_backend *be, struct pl_weights **out, struct pl_err *err)
{
    if (!st) {
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: no checkpoint");
    }
    return weights_build(cfg, st, be, 0, PL_WEIGHTS_DTYPE_AS_STORED, NULL, out, err);
}

pl_status pl_weights_load_as(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                             struct pl_backend *be, int dtype, struct pl_weights **out,
                             struct pl_err *err)
{
    if (!st) {
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: no checkpoint");
    }
    return weights_build(cfg, st, be, 0, dtype, NULL, out, err);
}

pl_status pl_weights_dummy(const struct pl_model_config *cfg, struct pl_backend *be,
                           uint64_t seed, struct pl_weights **out, struct pl_err *err)
{
    return pl_weights_dummy_as(cfg, be, seed, PL_WEIGHTS_DTYPE_AS_STORED, out, err);
}

pl_status pl_weights_dummy_as(const struct pl_model_config *cfg, struct pl_backend *be,
                              uint64_t seed, int dtype, struct pl_weights **out,
                              struct pl_err *err)
{
    pl_status st = weights_build(cfg, NULL, be, seed, dtype, NULL, out, err);
    if (st == PL_STATUS_OK && be->ops->sync(be) != PL_STATUS_OK) {
        pl_weights_free(*out);
        *out = NULL;
        const char *why = be->ops->last_error ? be->ops->last_error(be) : "";
        return pl_err_set(err, PL_STATUS_INTERNAL, "dummy weights: the %s backend failed%s%s",
                          be->ops->name, why[0] ? ": " : "", why);
    }
    return st;
}

pl_status pl_weights_load_shard(const struct pl_model_config *cfg, const struct pl_shard *shard,
                                const struct pl_safetensors *st, struct pl_backend *be, int dtype,
                                uint64_t seed, struct pl_weights **out, struct pl_err *err)
{
    if (shard && shard->size > 1 && !shard->full) {
        *out = NULL;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "weights: a shard without its config");
    }
    /* dummy shards: each rank's own stream of values */
    const uint64_t rank_seed = seed + (shard ? (uint64_t)shard->rank : 0) * 0x9E3779B97F4A7C15ull;
    pl_status s = weights_build(cfg, st, be, st ? 0 : rank_seed, dtype, shard, out, err);
    if (s == PL_STATUS_OK && !st && be->ops->sync(be) != PL_STATUS_OK) {
        pl_weights_free(*out);
        *out = NULL;
        const char *why = be->ops->last_error ? be->ops->last_error(be) : "";
        return pl_err_set(err, PL_STATUS_INTERNAL, "dummy weights: the %s backend failed%s%s",
                          be->ops->name, why[0] ? ": " : "", why);
    }
    return s;
}

static int cmp_ptr(const void *a, const void *b)
{
    const char *x = *(const char *const *)a, *y = *(const char *const *)b;
    return x < y ? -1 : x > y;
}

/* Whether p came from a dtype conversion (w->converted, sorted by pl_weights_free). */
static bool was_converted(const struct pl_weights *w, const void *p)
{
    return w->n_converted > 0 &&
           bsearch(&p, w->converted, (size_t)w->n_converted, sizeof(*w->converted), cmp_ptr);
}

static void release(struct pl_weights *w, bool allocated, struct pl_weight *s)
{
    struct pl_backend *be = w->be;
    if (s->data && (allocated || was_converted(w, s->data)))
        be->ops->free(be, (void *)s->data);
    else if (s->data)
        be->ops->unmap_weight(be, (void *)s->data);
    *s = (struct pl_weight){0};
}

void pl_weights_free(struct pl_weights *w)
{
    if (!w)
        return;
    if (w->n_converted > 1) /* a MoE checkpoint converts thousands: bsearch, not a scan */
        qsort(w->converted, (size_t)w->n_converted, sizeof(*w->converted), cmp_ptr);
    if (w->lm_head.data && w->lm_head.data == w->embed.data) /* tied: one mapping */
        w->lm_head = (struct pl_weight){0};
    const struct pl_arch *a = w->arch;
    for (int i = 0; a && i < a->n_tensors; i++) {
        const struct pl_tensor_spec *t = &a->tensors[i];
        bool alloc = w->allocated || plus_one(t);
        if (t->scope == PL_SCOPE_MODEL) {
            release(w, alloc, spec_slot(t, w, 0, 0));
            continue;
        }
        for (int l = 0; w->layers && l < w->n_layers; l++) {
            if (t->scope == PL_SCOPE_LAYER)
                release(w, alloc, spec_slot(t, w, l, 0));
            else
                for (int e = 0; w->layers[l].experts && e < w->n_experts; e++)
                    release(w, alloc, spec_slot(t, w, l, e));
        }
    }
    for (int l = 0; w->layers && l < w->n_layers; l++)
        free(w->layers[l].experts);
    free(w->converted);
    free(w->layers);
    free(w);
}

/* ---- the table's other readers --------------------------------------------------------- */

void pl_weights_foreach(const struct pl_model_config *c, const struct pl_weights *w,
                        void (*fn)(void *ctx, const struct pl_tensor_spec *t, int layer,
                                   int expert, const struct pl_weight *slot),
                        void *ctx)
{
    const struct pl_arch *a = c->arch;
    struct pl_weights *ww = (struct pl_weights *)w; /* spec_slot's type; nothing is written */
    for (int i = 0; a && i < a->n_tensors; i++) {
        const struct pl_tensor_spec *t = &a->tensors[i];
        if (t->scope == PL_SCOPE_MODEL) {
            if (spec_applies(t, c, -1))
                fn(ctx, t, -1, 0, spec_slot(t, ww, 0, 0));
            continue;
        }
        for (int l = 0; l < c->n_layers && l < w->n_layers; l++) {
            if (!spec_applies(t, c, l))
                continue;
            if (t->scope == PL_SCOPE_LAYER) {
                fn(ctx, t, l, 0, spec_slot(t, ww, l, 0));
                continue;
            }
            if (!w->layers[l].experts)
                fn(ctx, t, l, 0, NULL); /* expected but absent */
            for (int e = 0; w->layers[l].experts && e < c->n_experts; e++)
                fn(ctx, t, l, e, spec_slot(t, ww, l, e));
        }
    }
}
