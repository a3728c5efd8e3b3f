/*
 * quant_pack.c -- round-to-nearest quantizers and packers for the quantized
 * formats, and the quantized test-model writer (see quant_pack.h).
 *
 * Quantization (deterministic, no libm transcendental functions):
 *   integer formats, per output row and group: asymmetric: scale = (max - min)
 *   / (2^b - 1), zero = round(-min / scale) (GPTQ v1 keeps zero >= 1 so that its
 *   zero - 1 storage is exact); symmetric: scale = 2 max|w| / (2^b - 1), zero =
 *   2^(b-1); the scale is rounded to its storage dtype first and q = clamp(
 *   round(w / scale) + zero, 0, 2^b - 1) uses the stored scale;
 *   FP8: scale = max|w| / 448 per tensor, channel or block (fp32), q = e4m3(w /
 *   scale).
 * Act-order (GPTQ desc_act, compressed-tensors actorder "group"): inputs are
 * visited in a seeded permutation and the i-th visited input joins group i / G,
 * which is what g_idx records.
 */
#include "model/quant_pack.h"

#include "model/arch.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- tensor lists and the writer ------------------------------------------------------- */

struct pl_qt_tensor *pl_qt_add(struct pl_qt_list *l, const char *name, enum pl_dtype dtype,
                               int n_dims, int64_t d0, int64_t d1)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        struct pl_qt_tensor *g = realloc(l->t, sizeof(*g) * (size_t)cap);
        if (!g)
            return NULL;
        l->t = g;
        l->cap = cap;
    }
    const int64_t n = n_dims == 0 ? 1 : n_dims == 1 ? d0 : d0 * d1;
    struct pl_qt_tensor *t = &l->t[l->n];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->shape[0] = d0;
    t->shape[1] = d1;
    t->n_bytes = (size_t)n * pl_dtype_size(dtype);
    t->data = calloc(1, t->n_bytes ? t->n_bytes : 1);
    if (!t->data)
        return NULL;
    l->n++;
    return t;
}

void pl_qt_list_free(struct pl_qt_list *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->t[i].data);
    free(l->t);
    memset(l, 0, sizeof(*l));
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct pl_qt_tensor *)a)->name, ((const struct pl_qt_tensor *)b)->name);
}

pl_status pl_qt_write_safetensors(const char *path, struct pl_qt_list *l, struct pl_err *err)
{
    qsort(l->t, (size_t)l->n, sizeof(*l->t), cmp_name);
    size_t cap = 256 + (size_t)l->n * 320, at = 0;
    char *h = malloc(cap);
    if (!h)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "safetensors header");
    at += (size_t)snprintf(h + at, cap - at, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (int i = 0; i < l->n; i++) {
        const struct pl_qt_tensor *t = &l->t[i];
        at += (size_t)snprintf(h + at, cap - at, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t->name,
                               pl_dtype_name(t->dtype));
        for (int d = 0; d < t->n_dims; d++)
            at += (size_t)snprintf(h + at, cap - at, "%s%lld", d ? "," : "",
                                   (long long)t->shape[d]);
        at += (size_t)snprintf(h + at, cap - at, "],\"data_offsets\":[%llu,%llu]}",
                               (unsigned long long)off, (unsigned long long)(off + t->n_bytes));
        off += t->n_bytes;
    }
    at += (size_t)snprintf(h + at, cap - at, "}");
    while (at % 8 && at + 1 < cap)
        h[at++] = ' ';
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(h);
        return pl_err_set(err, PL_STATUS_IO, "%s: %s", path, strerror(errno));
    }
    unsigned char len8[8];
    for (int b = 0; b < 8; b++)
        len8[b] = (unsigned char)((uint64_t)at >> (8 * b));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h, 1, at, f) == at;
    for (int i = 0; ok && i < l->n; i++)
        ok = fwrite(l->t[i].data, 1, l->t[i].n_bytes, f) == l->t[i].n_bytes;
    ok = fclose(f) == 0 && ok;
    free(h);
    return ok ? PL_STATUS_OK : pl_err_set(err, PL_STATUS_IO, "%s: write failed", path);
}

/* ---- quantizers ------------------------------------------------------------------------- */

static float round_to(float x, enum pl_dtype t)
{
    if (t == PL_DTYPE_F16)
        return pl_f16_to_f32(pl_f32_to_f16(x));
    if (t == PL_DTYPE_BF16)
        return pl_bf16_to_f32(pl_f32_to_bf16(x));
    return x;
}

static void store(void *p, enum pl_dtype t, int64_t i, float x)
{
    if (t == PL_DTYPE_F16)
        ((uint16_t *)p)[i] = pl_f32_to_f16(x);
    else if (t == PL_DTYPE_BF16)
        ((uint16_t *)p)[i] = pl_f32_to_bf16(x);
    else
        ((float *)p)[i] = x;
}

static int rnd(float x) { return (int)lrintf(x); } /* nearest, ties to even */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

struct int_layout {
    int bits, group;         /* group -1: one group */
    bool sym, zero_min_one;  /* GPTQ v1 asymmetric: zero >= 1 */
    enum pl_dtype scale_dtype;
    int32_t *g_idx;          /* [k] or NULL (k / group) */
    int64_t n_groups;
};

/* q[n, k] (unsigned codes), zero[n, groups], scale[n, groups] (stored values) for w. */
static void quantize_int(const struct int_layout *L, const float *w, int64_t n, int64_t k,
                         uint8_t *q, int32_t *zero, float *scale, float *deq)
{
    const int maxq = (1 << L->bits) - 1;
    float *lo = malloc(sizeof(float) * 3 * (size_t)L->n_groups), *hi = lo + L->n_groups,
          *amax = hi + L->n_groups;
    if (!lo)
        abort(); /* a few floats per group: a test tool's allocation */
    for (int64_t r = 0; r < n; r++) {
        /* one pass over the row: each group's range (always holding 0, as GPTQ's) */
        for (int64_t g = 0; g < L->n_groups; g++)
            lo[g] = hi[g] = amax[g] = 0.0f;
        for (int64_t i = 0; i < k; i++) {
            const int64_t g = L->g_idx ? L->g_idx[i] : (L->group < 0 ? 0 : i / L->group);
            const float x = w[r * k + i];
            lo[g] = fminf(lo[g], x);
            hi[g] = fmaxf(hi[g], x);
            amax[g] = fmaxf(amax[g], fabsf(x));
        }
        for (int64_t g = 0; g < L->n_groups; g++) {
            float s;
            int z;
            if (L->sym) {
                s = round_to(amax[g] > 0 ? 2.0f * amax[g] / (float)maxq : 1e-3f, L->scale_dtype);
                z = (maxq + 1) / 2;
            } else {
                s = round_to(hi[g] > lo[g] ? (hi[g] - lo[g]) / (float)maxq : 1e-3f,
                             L->scale_dtype);
                z = rnd(-lo[g] / s);
                z = z < (L->zero_min_one ? 1 : 0) ? (L->zero_min_one ? 1 : 0) : z > maxq ? maxq : z;
            }
            scale[r * L->n_groups + g] = s;
            zero[r * L->n_groups + g] = z;
        }
        for (int64_t i = 0; i < k; i++) {
            int64_t g = L->g_idx ? L->g_idx[i] : (L->group < 0 ? 0 : i / L->group);
            const float s = scale[r * L->n_groups + g];
            const int z = zero[r * L->n_groups + g];
            int v = rnd(w[r * k + i] / s) + z;
            v = v < 0 ? 0 : v > maxq ? maxq : v;
            q[r * k + i] = (uint8_t)v;
            deq[r * k + i] = (float)(v - z) * s;
        }
    }
    free(lo);
}

static const int AWQ_ORDER[8] = {0, 2, 4, 6, 1, 3, 5, 7}; /* nibble i holds column ORDER[i] */

static int32_t *act_order(int64_t k, int group, uint64_t seed)
{
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)k), *g = malloc(sizeof(int32_t) * (size_t)k);
    if (!perm || !g) {
        free(perm);
        free(g);
        return NULL;
    }
    for (int64_t i = 0; i < k; i++)
        perm[i] = (int32_t)i;
    uint64_t s = seed;
    for (int64_t i = k - 1; i > 0; i--) {
        int64_t j = (int64_t)(splitmix(&s) % (uint64_t)(i + 1));
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int64_t i = 0; i < k; i++)
        g[perm[i]] = (int32_t)(group < 0 ? 0 : i / group);
    free(perm);
    return g;
}

static pl_status oom(struct pl_err *err) { return pl_err_set(err, PL_STATUS_NO_MEMORY, "quant pack: out of memory"); }

static pl_status pack_int(const struct pl_quant_config *q, const char *m, const float *w, int64_t n,
                          int64_t k, enum pl_dtype ct_scale_dtype, uint64_t seed,
                          struct pl_qt_list *out, float *deq, struct pl_err *err)
{
    struct int_layout L = {.bits = q->bits, .group = q->group_size, .sym = q->sym};
    const bool awq = q->method == PL_QUANT_AWQ, gptq = q->method == PL_QUANT_GPTQ;
    L.scale_dtype = gptq || awq ? PL_DTYPE_F16 : ct_scale_dtype;
    L.zero_min_one = gptq && !q->gptq_v2 && !q->sym;
    L.n_groups = q->group_size < 0 ? 1 : (k + q->group_size - 1) / q->group_size;
    const int pack = 32 / q->bits;
    if ((awq && (n % 8 || k % q->group_size)) || (gptq && (k % pack || n % pack)) ||
        (q->group_size > 0 && k % q->group_size))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: [%lld, %lld] does not fit the "
                          "format's packing or group size", m, (long long)n, (long long)k);
    if (q->desc_act && !(L.g_idx = act_order(k, q->group_size, seed)))
        return oom(err);
    uint8_t *qv = malloc((size_t)(n * k));
    int32_t *zero = malloc(sizeof(int32_t) * (size_t)(n * L.n_groups));
    float *scale = malloc(sizeof(float) * (size_t)(n * L.n_groups));
    pl_status st = PL_STATUS_OK;
    if (!qv || !zero || !scale) {
        st = oom(err);
        goto out;
    }
    quantize_int(&L, w, n, k, qv, zero, scale, deq);
    char name[256];
    const int64_t G = L.n_groups;
    struct pl_qt_tensor *t;
#define ADD(suffix, dt, nd, a, b)                                                                 \
    do {                                                                                          \
        snprintf(name, sizeof(name), "%s.%s", m, suffix);                                         \
        if (!(t = pl_qt_add(out, name, dt, nd, a, b))) {                                          \
            st = oom(err);                                                                        \
            goto out;                                                                             \
        }                                                                                         \
    } while (0)
    if (awq) {
        ADD("qweight", PL_DTYPE_I32, 2, k, n / 8);
        uint32_t *qw = t->data;
        for (int64_t i = 0; i < k; i++)
            for (int64_t c = 0; c < n / 8; c++)
                for (int nib = 0; nib < 8; nib++)
                    qw[i * (n / 8) + c] |= (uint32_t)qv[(c * 8 + AWQ_ORDER[nib]) * k + i]
                                           << (4 * nib);
        ADD("qzeros", PL_DTYPE_I32, 2, G, n / 8);
        uint32_t *qz = t->data;
        for (int64_t g = 0; g < G; g++)
            for (int64_t c = 0; c < n / 8; c++)
                for (int nib = 0; nib < 8; nib++)
                    qz[g * (n / 8) + c] |= (uint32_t)zero[(c * 8 + AWQ_ORDER[nib]) * G + g]
                                           << (4 * nib);
        ADD("scales", PL_DTYPE_F16, 2, G, n);
        for (int64_t g = 0; g < G; g++)
            for (int64_t r = 0; r < n; r++)
                store(t->data, PL_DTYPE_F16, g * n + r, scale[r * G + g]);
    } else if (gptq) {
        const uint32_t mask = (1u << q->bits) - 1u;
        ADD("qweight", PL_DTYPE_I32, 2, k / pack, n);
        uint32_t *qw = t->data;
        for (int64_t i = 0; i < k; i++)
            for (int64_t r = 0; r < n; r++)
                qw[(i / pack) * n + r] |= (uint32_t)qv[r * k + i] << ((i % pack) * q->bits);
        ADD("qzeros", PL_DTYPE_I32, 2, G, n / pack);
        uint32_t *qz = t->data;
        for (int64_t g = 0; g < G; g++)
            for (int64_t r = 0; r < n; r++) {
                uint32_t z = (uint32_t)(zero[r * G + g] - (q->gptq_v2 ? 0 : 1)) & mask;
                qz[g * (n / pack) + r / pack] |= z << ((r % pack) * q->bits);
            }
        ADD("scales", PL_DTYPE_F16, 2, G, n);
        for (int64_t g = 0; g < G; g++)
            for (int64_t r = 0; r < n; r++)
                store(t->data, PL_DTYPE_F16, g * n + r, scale[r * G + g]);
        ADD("g_idx", PL_DTYPE_I32, 1, k, 0); /* GPTQ writes it with or without act-order */
        for (int64_t i = 0; i < k; i++)
            ((int32_t *)t->data)[i] =
                L.g_idx ? L.g_idx[i] : (int32_t)(q->group_size < 0 ? 0 : i / q->group_size);
    } else {
        const int64_t kp = (k + pack - 1) / pack;
        ADD("weight_packed", PL_DTYPE_I32, 2, n, kp);
        uint32_t *wp = t->data;
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < k; i++)
                wp[r * kp + i / pack] |= (uint32_t)qv[r * k + i] << ((i % pack) * q->bits);
        ADD("weight_scale", ct_scale_dtype, 2, n, G);
        for (int64_t i = 0; i < n * G; i++)
            store(t->data, ct_scale_dtype, i, scale[i]);
        ADD("weight_shape", PL_DTYPE_I64, 1, 2, 0);
        ((int64_t *)t->data)[0] = n;
        ((int64_t *)t->data)[1] = k;
        if (!q->sym) {
            ADD("weight_zero_point", PL_DTYPE_I32, 2, (n + pack - 1) / pack, G);
            uint32_t *zp = t->data;
            for (int64_t r = 0; r < n; r++)
                for (int64_t g = 0; g < G; g++)
                    zp[(r / pack) * G + g] |= (uint32_t)zero[r * G + g] << ((r % pack) * q->bits);
        }
        if (L.g_idx) {
            ADD("weight_g_idx", PL_DTYPE_I32, 1, k, 0);
            memcpy(t->data, L.g_idx, sizeof(int32_t) * (size_t)k);
        }
    }
#undef ADD
out:
    free(qv);
    free(zero);
    free(scale);
    free(L.g_idx);
    return st;
}

static pl_status pack_fp8(const struct pl_quant_config *q, const char *m, const float *w, int64_t n,
                          int64_t k, struct pl_qt_list *out, float *deq, struct pl_err *err)
{
    char name[256];
    snprintf(name, sizeof(name), "%s.weight", m);
    struct pl_qt_tensor *wt = pl_qt_add(out, name, PL_DTYPE_F8_E4M3, 2, n, k), *st;
    if (!wt)
        return oom(err);
    const bool block = q->weight_strategy == PL_QSTRAT_BLOCK;
    const bool channel = q->weight_strategy == PL_QSTRAT_CHANNEL;
    const int64_t bn = block ? q->block_n : channel ? 1 : n, bk = block ? q->block_k : k;
    const int64_t sn = (n + bn - 1) / bn, sk = (k + bk - 1) / bk;
    snprintf(name, sizeof(name), "%s.%s", m, block ? "weight_scale_inv" : "weight_scale");
    /* per tensor: a scalar for quant_method fp8 (AutoFP8), [1] for compressed-tensors */
    if (block)
        st = pl_qt_add(out, name, PL_DTYPE_F32, 2, sn, sk);
    else if (channel)
        st = pl_qt_add(out, name, PL_DTYPE_F32, 2, n, 1);
    else
        st = pl_qt_add(out, name, PL_DTYPE_F32, q->method == PL_QUANT_FP8 ? 0 : 1, 1, 0);
    if (!st)
        return oom(err);
    float *scale = st->data;
    uint8_t *qv = wt->data;
    for (int64_t a = 0; a < sn; a++)
        for (int64_t b = 0; b < sk; b++) {
            float amax = 0.0f;
            for (int64_t r = a * bn; r < (a + 1) * bn && r < n; r++)
                for (int64_t i = b * bk; i < (b + 1) * bk && i < k; i++)
                    amax = fmaxf(amax, fabsf(w[r * k + i]));
            const float s = amax > 0 ? amax / 448.0f : 1.0f;
            scale[a * sk + b] = s;
            for (int64_t r = a * bn; r < (a + 1) * bn && r < n; r++)
                for (int64_t i = b * bk; i < (b + 1) * bk && i < k; i++) {
                    qv[r * k + i] = pl_f32_to_f8e4m3(w[r * k + i] / s);
                    deq[r * k + i] = pl_f8e4m3_to_f32(qv[r * k + i]) * s;
                }
        }
    if (q->act_quant && !q->act_dynamic) {
        snprintf(name, sizeof(name), "%s.input_scale", m);
        struct pl_qt_tensor *is = pl_qt_add(out, name, PL_DTYPE_F32, q->method == PL_QUANT_FP8 ? 0 : 1, 1, 0);
        if (!is)
            return oom(err);
        ((float *)is->data)[0] = 0.0625f; /* what a calibration might give; the reference
                                             path does not read it */
    }
    return PL_STATUS_OK;
}

pl_status pl_quant_pack(const struct pl_quant_config *q, const char *module, const float *w,
                        int64_t n, int64_t k, enum pl_dtype scale_dtype, uint64_t seed,
                        struct pl_qt_list *out, float *deq, struct pl_err *err)
{
    switch (q->method) {
    case PL_QUANT_AWQ:
    case PL_QUANT_GPTQ:
    case PL_QUANT_CT_PACKED:
        return pack_int(q, module, w, n, k, scale_dtype, seed, out, deq, err);
    case PL_QUANT_CT_FP8:
    case PL_QUANT_FP8:
        if (!q->online)
            return pack_fp8(q, module, w, n, k, out, deq, err);
        break;
    case PL_QUANT_NONE: break;
    }
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: not a packed format", module);
}

/* ---- the test formats ------------------------------------------------------------------- */

#define CT_INT(bits, strategy, group, sym, actorder)                                              \
    "{\"config_groups\": {\"group_0\": {\"input_activations\": null, \"output_activations\": "    \
    "null, \"targets\": [\"Linear\"], \"weights\": {\"actorder\": " actorder ", "                 \
    "\"block_structure\": null, \"dynamic\": false, \"group_size\": " group ", \"num_bits\": "    \
    bits ", \"observer\": \"minmax\", \"observer_kwargs\": {}, \"strategy\": \"" strategy "\", "  \
    "\"symmetric\": " sym ", \"type\": \"int\"}}}, \"format\": \"pack-quantized\", "              \
    "\"ignore\": [\"lm_head\"], \"kv_cache_scheme\": null, \"quant_method\": "                    \
    "\"compressed-tensors\", \"quantization_status\": \"compressed\", \"sparsity_config\": {}}"
#define CT_FP8(wstrategy, input)                                                                  \
    "{\"config_groups\": {\"group_0\": {\"input_activations\": " input ", \"output_activations\": " \
    "null, \"targets\": [\"Linear\"], \"weights\": {\"actorder\": null, \"block_structure\": "    \
    "null, \"dynamic\": false, \"group_size\": null, \"num_bits\": 8, \"observer\": \"minmax\", " \
    "\"strategy\": \"" wstrategy "\", \"symmetric\": true, \"type\": \"float\"}}}, \"format\": "  \
    "\"float-quantized\", \"ignore\": [\"lm_head\"], \"kv_cache_scheme\": null, "                 \
    "\"quant_method\": \"compressed-tensors\", \"quantization_status\": \"compressed\"}"

static const struct {
    const char *name, *config;
} FORMATS[] = {
    {"awq_g32", "{\"bits\": 4, \"group_size\": 32, \"modules_to_not_convert\": null, "
                "\"quant_method\": \"awq\", \"version\": \"gemm\", \"zero_point\": true}"},
    {"awq_g64", "{\"bits\": 4, \"group_size\": 64, \"modules_to_not_convert\": null, "
                "\"quant_method\": \"awq\", \"version\": \"gemm\", \"zero_point\": true}"},
    {"awq_g128", "{\"bits\": 4, \"group_size\": 128, \"modules_to_not_convert\": null, "
                 "\"quant_method\": \"awq\", \"version\": \"gemm\", \"zero_point\": true}"},
    {"gptq_g128", "{\"bits\": 4, \"checkpoint_format\": \"gptq\", \"damp_percent\": 0.01, "
                  "\"desc_act\": false, \"group_size\": 128, \"quant_method\": \"gptq\", "
                  "\"static_groups\": false, \"sym\": true, \"true_sequential\": true}"},
    {"gptq_g32_act", "{\"bits\": 4, \"checkpoint_format\": \"gptq\", \"desc_act\": true, "
                     "\"group_size\": 32, \"quant_method\": \"gptq\", \"sym\": true}"},
    {"gptq_g64_asym", "{\"bits\": 4, \"checkpoint_format\": \"gptq\", \"desc_act\": false, "
                      "\"group_size\": 64, \"quant_method\": \"gptq\", \"sym\": false}"},
    {"gptq_v2_g128_asym_act", "{\"bits\": 4, \"checkpoint_format\": \"gptq_v2\", \"desc_act\": "
                              "true, \"group_size\": 128, \"lm_head\": false, \"pack_dtype\": "
                              "\"int32\", \"quant_method\": \"gptq\", \"sym\": false}"},
    {"gptq8_channel", "{\"bits\": 8, \"checkpoint_format\": \"gptq\", \"desc_act\": false, "
                      "\"group_size\": -1, \"quant_method\": \"gptq\", \"sym\": true}"},
    {"gptq8_g128_v2", "{\"bits\": 8, \"checkpoint_format\": \"gptq_v2\", \"desc_act\": false, "
                      "\"group_size\": 128, \"quant_method\": \"gptq\", \"sym\": false}"},
    {"ct_w4a16_g128", CT_INT("4", "group", "128", "true", "null")},
    {"ct_w4a16_g32_asym_act", CT_INT("4", "group", "32", "false", "\"group\"")},
    {"ct_w4a16_channel", CT_INT("4", "channel", "null", "true", "null")},
    {"ct_w8a16_g64", CT_INT("8", "group", "64", "true", "null")},
    {"ct_fp8_channel_dynamic",
     CT_FP8("channel", "{\"dynamic\": true, \"num_bits\": 8, \"strategy\": \"token\", "
                       "\"symmetric\": true, \"type\": \"float\"}")},
    {"ct_fp8_tensor_static",
     CT_FP8("tensor", "{\"dynamic\": false, \"num_bits\": 8, \"strategy\": \"tensor\", "
                      "\"symmetric\": true, \"type\": \"float\"}")},
    {"fp8_dynamic", "{\"activation_scheme\": \"dynamic\", \"quant_method\": \"fp8\"}"},
    {"fp8_static", "{\"activation_scheme\": \"static\", \"ignored_layers\": "
                   "[\"model.layers.1.mlp.down_proj\"], \"quant_method\": \"fp8\"}"},
    {"fp8_block", "{\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": "
                  "\"fp8\", \"weight_block_size\": [64, 64]}"},
};
#define N_FORMATS ((int)(sizeof(FORMATS) / sizeof(FORMATS[0])))

const char *const *pl_quant_format_list(int *n)
{
    static const char *names[N_FORMATS];
    for (int i = 0; i < N_FORMATS; i++)
        names[i] = FORMATS[i].name;
    *n = N_FORMATS;
    return names;
}

const char *pl_quant_format_config(const char *format)
{
    for (int i = 0; format && i < N_FORMATS; i++)
        if (!strcmp(format, FORMATS[i].name))
            return FORMATS[i].config;
    return NULL;
}

/* ---- the model writer ------------------------------------------------------------------- */

static uint64_t fnv(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Whether `name` is the checkpoint name of a quantizable spec of c's table. */
static bool is_quantizable(const struct pl_model_config *c, const char *name)
{
    const struct pl_arch *a = c->arch;
    char buf[256];
    for (int i = 0; i < a->n_tensors; i++) {
        const struct pl_tensor_spec *t = &a->tensors[i];
        if (!(t->flags & PL_TENSOR_QUANTIZABLE) || t->scope == PL_SCOPE_MODEL)
            continue;
        for (int l = 0; l < c->n_layers; l++)
            for (int e = 0; e < (t->scope == PL_SCOPE_EXPERT ? c->n_experts : 1); e++) {
                pl_tensor_spec_name(t, l, e, buf, sizeof(buf));
                if (!strcmp(buf, name))
                    return true;
            }
    }
    return false;
}

static pl_status remove_weights(const char *dir, const struct pl_safetensors *st,
                                struct pl_err *err)
{
    /* the preset's files: model.safetensors or shards + index */
    char path[4096];
    snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
    unlink(path);
    for (int i = 0; i < pl_safetensors_count(st); i++)
        if (unlink(pl_safetensors_at(st, i)->file) && errno != ENOENT)
            return pl_err_set(err, PL_STATUS_IO, "%s: %s", pl_safetensors_at(st, i)->file,
                              strerror(errno));
    return PL_STATUS_OK;
}

static pl_status add_quant_config(const char *dir, const char *qtext, struct pl_err *err)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *q = json_loads(qtext, 0, &je);
    pl_status st = PL_STATUS_OK;
    if (!root || !q || json_object_set(root, "quantization_config", q) ||
        json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS))
        st = pl_err_set(err, PL_STATUS_IO, "%s: cannot rewrite", path);
    json_decref(root);
    json_decref(q);
    return st;
}

pl_status pl_quant_write_model(const char *preset, const char *format, const char *out_dir,
                               const char *dequant_dir, struct pl_err *err)
{
    const char *qtext = pl_quant_format_config(format);
    if (!qtext)
        return pl_err_set(err, PL_STATUS_NOT_FOUND, "unknown quantized format '%s'",
                          format ? format : "(null)");
    struct pl_quant_config q;
    pl_status st = pl_quant_config_parse_text(qtext, strlen(qtext), &q, err);
    if (st)
        return st;
    if ((st = pl_tiny_model_write(preset, out_dir, err)) ||
        (dequant_dir && (st = pl_tiny_model_write(preset, dequant_dir, err))))
        return st;
    struct pl_model_config *cfg = calloc(1, sizeof(*cfg));
    struct pl_safetensors *sf = NULL;
    struct pl_qt_list packed = {0}, dense = {0};
    float *w = NULL, *deq = NULL;
    if (!cfg) {
        st = oom(err);
        goto out;
    }
    if ((st = pl_model_config_load(out_dir, cfg, err)) ||
        (st = pl_safetensors_open_dir(out_dir, &sf, err)))
        goto out;
    for (int i = 0; i < pl_safetensors_count(sf); i++) {
        const struct pl_tensor_info *ti = pl_safetensors_at(sf, i);
        char module[256];
        const size_t len = strlen(ti->name);
        bool quant = is_quantizable(cfg, ti->name) && len > 7 && len - 7 < sizeof(module) &&
                     !strcmp(ti->name + len - 7, ".weight");
        if (quant) {
            memcpy(module, ti->name, len - 7);
            module[len - 7] = '\0';
            quant = pl_quant_module_is_quantized(&q, module);
        }
        struct pl_qt_tensor *d;
        if (!quant) {
            struct pl_qt_tensor *p = pl_qt_add(&packed, ti->name, ti->dtype, ti->n_dims,
                                               ti->shape[0], ti->n_dims > 1 ? ti->shape[1] : 0);
            d = dequant_dir ? pl_qt_add(&dense, ti->name, ti->dtype, ti->n_dims, ti->shape[0],
                                        ti->n_dims > 1 ? ti->shape[1] : 0)
                            : NULL;
            if (!p || (dequant_dir && !d)) {
                st = oom(err);
                goto out;
            }
            memcpy(p->data, ti->data, ti->n_bytes);
            if (d)
                memcpy(d->data, ti->data, ti->n_bytes);
            continue;
        }
        const int64_t n = ti->shape[0], k = ti->shape[1];
        free(w);
        free(deq);
        w = malloc(sizeof(float) * (size_t)(n * k));
        deq = malloc(sizeof(float) * (size_t)(n * k));
        if (!w || !deq) {
            st = oom(err);
            goto out;
        }
        if (!pl_dtype_convert(w, PL_DTYPE_F32, ti->data, ti->dtype, (size_t)(n * k))) {
            st = pl_err_set(err, PL_STATUS_INTERNAL, "%s: not a float tensor", ti->name);
            goto out;
        }
        if ((st = pl_quant_pack(&q, module, w, n, k, cfg->dtype, fnv(ti->name), &packed, deq,
                                err)))
            goto out;
        if (dequant_dir) {
            if (!(d = pl_qt_add(&dense, ti->name, PL_DTYPE_F32, 2, n, k))) {
                st = oom(err);
                goto out;
            }
            memcpy(d->data, deq, sizeof(float) * (size_t)(n * k));
        }
    }
    char path[4096];
    if ((st = remove_weights(out_dir, sf, err)))
        goto out;
    snprintf(path, sizeof(path), "%s/model.safetensors", out_dir);
    if ((st = pl_qt_write_safetensors(path, &packed, err)) ||
        (st = add_quant_config(out_dir, qtext, err)))
        goto out;
    if (dequant_dir) {
        pl_safetensors_free(sf);
        sf = NULL;
        if ((st = pl_safetensors_open_dir(dequant_dir, &sf, err)) ||
            (st = remove_weights(dequant_dir, sf, err)))
            goto out;
        snprintf(path, sizeof(path), "%s/model.safetensors", dequant_dir);
        st = pl_qt_write_safetensors(path, &dense, err);
    }
out:
    pl_safetensors_free(sf);
    pl_qt_list_free(&packed);
    pl_qt_list_free(&dense);
    free(w);
    free(deq);
    free(cfg);
    return st;
}
