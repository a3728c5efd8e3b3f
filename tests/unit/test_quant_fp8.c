/*
 * test_quant_fp8.c -- the host side of FP8 on accelerators, checked on the CPU (CI has no
 * GPU): everything the CUDA FP8 paths rely on that does not need the device.
 *
 *   1. the e4m3 conversion the KV cache store and the activation quantization specify
 *      (util/dtype.h's pl_f32_to_f8e4m3), exhaustively on every bf16 value times the
 *      scales' reciprocals, against a brute-force nearest-even search of the e4m3 table;
 *   2. the PL_DTYPE_F8W layout (backend.h): offsets, alignment, the shape rule;
 *   3. pl_quant_f8w_buffer on every FP8 W8A8 test format (per channel and per tensor
 *      scales, static and dynamic activations) and on --quantization fp8: e4m3(code) * scale
 *      equals the dequantizing reference bit for bit, row ranges included (fused tensors);
 *      the static input_scale is carried; block-wise, W8A16 and odd shapes are refused;
 *   4. the loader's decision through a fake backend (the CPU backend with FP8 matmuls
 *      claimed): quantizable modules come packed (PL_DTYPE_F8W, the buffer above), the rest
 *      as stored, ignored modules dense, the bytes counted; the plain CPU backend still
 *      dequantizes; dummy weights are packed FP8 with the documented values;
 *   5. the W8A8 emulation (fp8_ref.h, which the GPU test holds CUDA to) against the
 *      dequantized reference: the difference is the activation rounding's, within its
 *      bound; saturation under a static scale;
 *   6. the memory plan with an e4m3 KV cache on a bf16 backend: twice the blocks of the
 *      bf16 cache from the same budget.
 */
#include "test.h"

#include "fp8_ref.h"

#include "backend/backend.h"
#include "engine/model_runner.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/quant.h"
#include "model/quant_pack.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"
#include "model/weights.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_root[64];
static struct pl_backend *g_cpu;

static uint64_t g_rng = 0x5eed5eed1234ull;
static float frand(void) /* uniform in [-0.5, 0.5) */
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

static struct pl_quant_config config_of(const char *text)
{
    struct pl_quant_config q;
    struct pl_err err = {0};
    pl_status st = pl_quant_config_parse_text(text, strlen(text), &q, &err);
    CHECKF(st == PL_STATUS_OK, "%s: %s", text, err.msg);
    return q;
}

/* ---- 1. the conversion ------------------------------------------------------------------ */

/* The e4m3fn value nearest to y (ties to the even code), saturating at +-448. */
static uint8_t brute_e4m3(float y)
{
    if (isnan(y))
        return (uint8_t)(signbit(y) ? 0xff : 0x7f);
    const uint8_t sign = signbit(y) ? 0x80 : 0x00;
    const double a = fabs((double)y);
    if (a >= 448.0)
        return (uint8_t)(sign | 0x7e);
    int best = 0;
    double best_d = INFINITY;
    for (int c = 0; c <= 0x7e; c++) {
        const double d = fabs((double)pl_f8e4m3_to_f32((uint8_t)c) - a);
        if (d < best_d || (d == best_d && (c & 1) == 0 && (best & 1))) {
            best = c;
            best_d = d;
        }
    }
    return (uint8_t)(sign | best);
}

static void test_e4m3_of_scaled_bf16(void)
{
    /* the KV store's scale 1, a calibrated-looking one, a token scale (absmax / 448) */
    const float scales[] = {1.0f, 0.0421f, 3.0f / 448.0f};
    long bad = 0;
    for (size_t si = 0; si < sizeof(scales) / sizeof(scales[0]); si++) {
        const float inv = 1.0f / scales[si];
        for (uint32_t h = 0; h < 65536; h++) {
            const float x = pl_bf16_to_f32((uint16_t)h);
            if (isinf(x))
                continue;
            const float y = x * inv;
            const uint8_t got = pl_f32_to_f8e4m3(y), want = brute_e4m3(y);
            if (got != want && bad++ < 5)
                CHECKF(0, "bf16 0x%04x * %g = %g: e4m3 0x%02x, nearest-even 0x%02x", h,
                       (double)inv, (double)y, got, want);
        }
    }
    CHECKF(bad == 0, "%ld values differ", bad);
    /* the bf16 -> e4m3 -> bf16 trip of a stored K value is exact where it is representable */
    for (int c = 0; c < 256; c++) {
        if ((c & 0x7f) == 0x7f)
            continue;
        const float v = pl_f8e4m3_to_f32((uint8_t)c);
        CHECK(pl_bf16_to_f32(pl_f32_to_bf16(v)) == v);
        CHECK(pl_f32_to_f8e4m3(v) == (c == 0x80 ? 0x80 : c));
    }
}

/* ---- 2. the layout ------------------------------------------------------------------------ */

static void test_f8w_layout(void)
{
    const int64_t shapes[][2] = {{16, 16}, {48, 64}, {4096, 4096}, {14336, 4096}, {4096, 14336},
                                 {1024, 4096}, {304, 1008}};
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        const int64_t R = shapes[i][0], C = shapes[i][1];
        const struct pl_f8w_layout l = pl_f8w_layout_of(R, C);
        CHECK(pl_f8w_shape_ok(R, C));
        CHECK(l.scale_off >= R * C && l.scale_off % 16 == 0 && l.scale_off - R * C < 16);
        CHECK(l.head_off >= l.scale_off + R * 4 && l.head_off % 16 == 0);
        CHECK(l.n_bytes == l.head_off + 16);
    }
    CHECK(!pl_f8w_shape_ok(300, 4096) && !pl_f8w_shape_ok(4096, 4104) && !pl_f8w_shape_ok(0, 16));
    CHECK(pl_dtype_size(PL_DTYPE_F8W) == 0 && !strcmp(pl_dtype_name(PL_DTYPE_F8W), "F8W"));
}

/* ---- 3. the buffer ------------------------------------------------------------------------ */

/* A safetensors file of module "m" packed as `format` from random weights [n, k]. */
static struct pl_safetensors *packed_file(const struct pl_quant_config *q, int64_t n, int64_t k,
                                          const char *tag)
{
    float *w = malloc(sizeof(float) * (size_t)(n * k)), *deq = malloc(sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n * k; i++)
        w[i] = frand() * (1.0f + (float)(i % 7)); /* rows of different ranges */
    struct pl_qt_list l = {0};
    struct pl_err err = {0};
    pl_status st = q->online ? PL_STATUS_OK
                             : pl_quant_pack(q, "m", w, n, k, PL_DTYPE_BF16, 3, &l, deq, &err);
    if (q->online) { /* the float checkpoint tensor itself */
        struct pl_qt_tensor *t = pl_qt_add(&l, "m.weight", PL_DTYPE_BF16, 2, n, k);
        for (int64_t i = 0; i < n * k; i++)
            ((uint16_t *)t->data)[i] = pl_f32_to_bf16(w[i]);
    }
    char path[256];
    snprintf(path, sizeof(path), "%s/%s.safetensors", g_root, tag);
    if (st == PL_STATUS_OK)
        st = pl_qt_write_safetensors(path, &l, &err);
    pl_qt_list_free(&l);
    free(w);
    free(deq);
    struct pl_safetensors *sts = NULL;
    if (st == PL_STATUS_OK)
        st = pl_safetensors_open_file(path, &sts, &err);
    CHECKF(st == PL_STATUS_OK, "%s: %s", tag, err.msg);
    return sts;
}

/* Rows [r0, r1) of module m: the buffer's e4m3(code) * scale equal the reference's weights. */
static void check_buffer(const struct pl_quant_config *q, const struct pl_safetensors *st,
                         int64_t n, int64_t k, int64_t r0, int64_t r1, float want_input_scale,
                         const char *what)
{
    struct pl_err err = {0};
    void *buf = NULL;
    size_t len = 0;
    pl_status s = pl_quant_f8w_buffer(q, st, "m", n, k, r0, r1, &buf, &len, &err);
    CHECKF(s == PL_STATUS_OK, "%s: %s", what, err.msg);
    if (s != PL_STATUS_OK)
        return;
    const int64_t rows = r1 - r0;
    const struct pl_f8w_layout lay = pl_f8w_layout_of(rows, k);
    CHECK(len == (size_t)lay.n_bytes);
    float *ref = malloc(sizeof(float) * (size_t)(rows * k));
    REQUIRE(pl_quant_dequant(q, st, "m", n, k, r0, r1, ref, &err) == PL_STATUS_OK);
    const uint8_t *codes = buf;
    const float *sc = (const float *)((char *)buf + lay.scale_off);
    long bad = 0;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < k; i++) {
            const float v = pl_f8e4m3_to_f32(codes[r * k + i]) * sc[r];
            bad += memcmp(&v, &ref[r * k + i], 4) != 0;
        }
    CHECKF(bad == 0, "%s: %ld weights differ from the dequantizing reference", what, bad);
    const float is = *(const float *)((char *)buf + lay.head_off);
    CHECKF(is == want_input_scale, "%s: input_scale %g, want %g", what, (double)is,
           (double)want_input_scale);
    free(ref);
    free(buf);
}

static void test_f8w_buffer_formats(void)
{
    static const struct {
        const char *format;
        float input_scale; /* quant_pack.c writes 0.0625 for static schemes */
    } cases[] = {{"ct_fp8_channel_dynamic", 0.0f}, {"ct_fp8_tensor_static", 0.0625f},
                 {"fp8_dynamic", 0.0f}, {"fp8_static", 0.0625f}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct pl_quant_config q = config_of(pl_quant_format_config(cases[i].format));
        CHECKF(pl_quant_is_fp8_w8a8(&q), "%s", cases[i].format);
        struct pl_safetensors *st = packed_file(&q, 96, 64, cases[i].format);
        REQUIRE(st);
        char what[96];
        snprintf(what, sizeof(what), "%s all rows", cases[i].format);
        check_buffer(&q, st, 96, 64, 0, 96, cases[i].input_scale, what);
        snprintf(what, sizeof(what), "%s rows 32..80 (a fused tensor's slot)", cases[i].format);
        check_buffer(&q, st, 96, 64, 32, 80, cases[i].input_scale, what);
        /* a row range that is not a multiple of 16 has no FP8 layout */
        void *buf = NULL;
        size_t len = 0;
        struct pl_err err = {0};
        CHECK(pl_quant_f8w_buffer(&q, st, "m", 96, 64, 0, 40, &buf, &len, &err) ==
              PL_STATUS_INVALID_ARGUMENT);
        CHECK(buf == NULL);
        pl_safetensors_free(st);
    }
}

static void test_f8w_buffer_online(void)
{
    struct pl_quant_config q;
    memset(&q, 0, sizeof(q));
    struct pl_err err = {0};
    REQUIRE(pl_quant_config_apply_flag(&q, "fp8", &err) == PL_STATUS_OK);
    CHECK(pl_quant_is_fp8_w8a8(&q) && q.online);
    struct pl_safetensors *st = packed_file(&q, 80, 48, "online");
    REQUIRE(st);
    check_buffer(&q, st, 80, 48, 0, 80, 0.0f, "online all rows");
    check_buffer(&q, st, 80, 48, 16, 64, 0.0f, "online rows 16..64");
    /* the reference's values are the per-tensor round trip of the whole checkpoint tensor */
    const struct pl_tensor_info *ti = pl_safetensors_find(st, "m.weight");
    REQUIRE(ti);
    float *w = malloc(sizeof(float) * 80 * 48), *ref = malloc(sizeof(float) * 80 * 48);
    pl_dtype_convert(w, PL_DTYPE_F32, ti->data, ti->dtype, 80 * 48);
    pl_quant_fp8_roundtrip(w, 80 * 48);
    REQUIRE(pl_quant_dequant(&q, st, "m", 80, 48, 0, 80, ref, &err) == PL_STATUS_OK);
    CHECK(memcmp(w, ref, sizeof(float) * 80 * 48) == 0);
    free(w);
    free(ref);
    pl_safetensors_free(st);
}

static void test_f8w_refusals(void)
{
    const struct pl_quant_config blk = config_of(pl_quant_format_config("fp8_block"));
    CHECK(!pl_quant_is_fp8_w8a8(&blk)); /* block-wise scales: dequantized at load */
    const struct pl_quant_config awq = config_of(pl_quant_format_config("awq_g128"));
    CHECK(!pl_quant_is_fp8_w8a8(&awq));
    /* compressed-tensors FP8 weights with float activations (W8A16): dequantized */
    const struct pl_quant_config w8a16 = config_of(
        "{\"config_groups\": {\"group_0\": {\"input_activations\": null, \"targets\": "
        "[\"Linear\"], \"weights\": {\"dynamic\": false, \"num_bits\": 8, \"strategy\": "
        "\"channel\", \"symmetric\": true, \"type\": \"float\"}}}, \"format\": "
        "\"float-quantized\", \"ignore\": [\"lm_head\"], \"quant_method\": "
        "\"compressed-tensors\"}");
    CHECK(w8a16.method == PL_QUANT_CT_FP8 && !w8a16.act_quant && !pl_quant_is_fp8_w8a8(&w8a16));
    /* a block-wise checkpoint asked for the layout is refused naming the module */
    struct pl_safetensors *st = packed_file(&blk, 128, 128, "block");
    REQUIRE(st);
    struct pl_quant_config forced = blk;
    forced.weight_strategy = PL_QSTRAT_TENSOR; /* pretend: the file has block scales */
    void *buf = NULL;
    size_t len = 0;
    struct pl_err err = {0};
    CHECK(pl_quant_f8w_buffer(&forced, st, "m", 128, 128, 0, 128, &buf, &len, &err) != PL_STATUS_OK);
    CHECK(buf == NULL);
    pl_safetensors_free(st);
}

/* ---- 4. the loader, through a fake backend ------------------------------------------------- */

/* The CPU backend behind a table that claims packed FP8 matmuls (and can be given a bf16
 * activation dtype and an e4m3 KV cache for the memory plan): only the memory ops and
 * supports are forwarded; nothing here runs a forward. */
struct fake_backend {
    struct pl_backend base;
    struct pl_backend *cpu;
    struct pl_backend_ops ops;
    bool f8w;      /* supports(MATMUL, F8W) */
    bool kv_fp8;
};

static struct pl_backend *inner(struct pl_backend *be) { return ((struct fake_backend *)be)->cpu; }
static void *fk_alloc(struct pl_backend *be, size_t n) { return g_cpu->ops->alloc(inner(be), n); }
static void fk_free(struct pl_backend *be, void *p) { g_cpu->ops->free(inner(be), p); }
static void *fk_map(struct pl_backend *be, const void *h, size_t n)
{
    return g_cpu->ops->map_weight(inner(be), h, n);
}
static void fk_unmap(struct pl_backend *be, void *p) { g_cpu->ops->unmap_weight(inner(be), p); }
static pl_status fk_upload(struct pl_backend *be, void *d, const void *s, size_t n)
{
    return g_cpu->ops->upload(inner(be), d, s, n);
}
static pl_status fk_download(struct pl_backend *be, void *d, const void *s, size_t n)
{
    return g_cpu->ops->download(inner(be), d, s, n);
}
static pl_status fk_sync(struct pl_backend *be) { return g_cpu->ops->sync(inner(be)); }
static void fk_fill(struct pl_backend *be, void *dst, enum pl_dtype t, size_t n, uint64_t seed,
                    float lo, float hi)
{
    g_cpu->ops->fill(inner(be), dst, t, n, seed, lo, hi);
}
static bool fk_supports(struct pl_backend *be, enum pl_op op, enum pl_dtype t)
{
    if (op == PL_OP_MATMUL && t == PL_DTYPE_F8W)
        return ((struct fake_backend *)be)->f8w;
    if (t == PL_DTYPE_F8W || t == PL_DTYPE_Q4)
        return false;
    return g_cpu->ops->supports(inner(be), op, t);
}
static pl_status fk_set_kv_dtype(struct pl_backend *be, enum pl_dtype t, float ks, float vs)
{
    ((struct fake_backend *)be)->kv_fp8 = t == PL_DTYPE_F8_E4M3;
    return ks > 0 && vs > 0 ? PL_STATUS_OK : PL_STATUS_INVALID_ARGUMENT;
}
static enum pl_dtype fk_kv_dtype(struct pl_backend *be)
{
    return ((struct fake_backend *)be)->kv_fp8 ? PL_DTYPE_F8_E4M3 : be->ops->act_dtype;
}
static void fk_destroy(struct pl_backend *be) { free(be); }

static struct pl_backend *fake_new(bool f8w, enum pl_dtype act)
{
    struct fake_backend *f = calloc(1, sizeof(*f));
    f->cpu = g_cpu;
    f->f8w = f8w;
    f->ops = (struct pl_backend_ops){
        .version = PL_BACKEND_OPS_VERSION, .name = "fake-fp8", .act_dtype = act,
        .destroy = fk_destroy, .alloc = fk_alloc, .free = fk_free, .map_weight = fk_map,
        .unmap_weight = fk_unmap, .upload = fk_upload, .download = fk_download,
        .sync = fk_sync, .supports = fk_supports, .fill = fk_fill,
        .set_kv_dtype = fk_set_kv_dtype, .kv_dtype = fk_kv_dtype,
        /* attention and the rest are never called; model_new checks these are present */
        .embed = g_cpu->ops->embed, .rmsnorm = g_cpu->ops->rmsnorm, .matmul = g_cpu->ops->matmul,
        .rope = g_cpu->ops->rope, .silu_mul = g_cpu->ops->silu_mul,
        .store_kv = g_cpu->ops->store_kv, .attention = g_cpu->ops->attention,
        .get_rows = g_cpu->ops->get_rows, .logits = g_cpu->ops->logits,
        .copy_blocks = g_cpu->ops->copy_blocks};
    f->base.ops = &f->ops;
    return &f->base;
}

struct slot_seen {
    const struct pl_model_config *cfg;
    const struct pl_safetensors *st;
    int n_f8w, n_quantizable_dense, n_other;
    int64_t f8w_bytes;
    bool dummy;
    long bad;
};

static void on_slot(void *ctx, const struct pl_tensor_spec *t, int layer, int expert,
                    const struct pl_weight *w)
{
    struct slot_seen *s = ctx;
    char name[192], module[192];
    pl_tensor_spec_name(t, layer, expert, name, sizeof(name));
    if (!w || !w->data)
        return;
    if (w->dtype != PL_DTYPE_F8W) {
        if (t->flags & PL_TENSOR_QUANTIZABLE)
            s->n_quantizable_dense++;
        else
            s->n_other++;
        return;
    }
    s->n_f8w++;
    CHECKF(t->flags & PL_TENSOR_QUANTIZABLE, "%s packed but not quantizable", name);
    const struct pl_f8w_layout lay = pl_f8w_layout_of(w->rows, w->cols);
    s->f8w_bytes += lay.n_bytes;
    const char *buf = w->data; /* CPU memory behind the fake */
    const float *sc = (const float *)(buf + lay.scale_off);
    if (s->dummy) { /* codes e4m3(448 u), scale a / 448: |w| <= a */
        const float a = 1.0f / sqrtf((float)w->cols);
        for (int64_t r = 0; r < w->rows; r++)
            s->bad += sc[r] != a / 448.0f;
        for (int64_t i = 0; i < w->rows * w->cols; i++)
            s->bad += !(fabsf(pl_f8e4m3_to_f32((uint8_t)buf[i])) <= 448.0f);
        s->bad += *(const float *)(buf + lay.head_off) != 0.0f;
        return;
    }
    /* the loader's buffer is exactly pl_quant_f8w_buffer's */
    snprintf(module, sizeof(module), "%.*s", (int)(strlen(name) - strlen(".weight")), name);
    void *want = NULL;
    size_t len = 0;
    struct pl_err err = {0};
    CHECKF(pl_quant_f8w_buffer(&s->cfg->quant, s->st, module, w->rows, w->cols, 0, w->rows,
                               &want, &len, &err) == PL_STATUS_OK, "%s: %s", name, err.msg);
    s->bad += !want || len != (size_t)lay.n_bytes || memcmp(want, buf, len) != 0;
    free(want);
}

static void test_loader_packs_fp8(void)
{
    static const char *const formats[] = {"ct_fp8_channel_dynamic", "fp8_static"};
    for (int fi = 0; fi < 2; fi++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/model_%s", g_root, formats[fi]);
        struct pl_err err = {0};
        REQUIRE(pl_quant_write_model("llama-quant", formats[fi], dir, NULL, &err) ==
                PL_STATUS_OK);
        struct pl_model_config cfg;
        REQUIRE(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_OK);
        struct pl_safetensors *st = NULL;
        REQUIRE(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_OK);
        for (int bi = 0; bi < 2; bi++) {
            /* bi 0: the fake claims FP8 matmuls -> packed; bi 1: the plain CPU backend */
            struct pl_backend *be = bi == 0 ? fake_new(true, PL_DTYPE_F32) : g_cpu;
            struct pl_weights *w = NULL;
            pl_status s = pl_weights_load(&cfg, st, be, &w, &err);
            CHECKF(s == PL_STATUS_OK, "%s: %s", formats[fi], err.msg);
            if (s == PL_STATUS_OK) {
                struct slot_seen seen = {.cfg = &cfg, .st = st};
                pl_weights_foreach(&cfg, w, on_slot, &seen);
                CHECKF(seen.bad == 0, "%s: %ld packed slots differ", formats[fi], seen.bad);
                /* llama-quant: 2 layers x 7 projections; fp8_static ignores one */
                const int want = fi == 1 ? 13 : 14;
                if (bi == 0) {
                    CHECKF(seen.n_f8w == want && seen.n_quantizable_dense == 14 - want,
                           "%s: %d packed, %d dense", formats[fi], seen.n_f8w,
                           seen.n_quantizable_dense);
                    /* every packed byte counted, about a quarter of the fp32 matrices */
                    CHECK(w->n_bytes >= (size_t)seen.f8w_bytes);
                } else {
                    CHECK(seen.n_f8w == 0 && seen.n_quantizable_dense == 14);
                    CHECK(w->layers[0].wq.dtype == PL_DTYPE_F32);
                }
                CHECK(seen.n_other > 0); /* embeddings, norms, lm_head as stored */
            }
            pl_weights_free(w);
            if (bi == 0)
                pl_backend_free(be);
        }
        pl_safetensors_free(st);
        pl_test_rm_tree(dir);
    }
}

static void test_loader_online_and_dummy(void)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/plain", g_root);
    struct pl_err err = {0};
    REQUIRE(pl_tiny_model_write("llama-quant", dir, &err) == PL_STATUS_OK);
    struct pl_model_config cfg;
    REQUIRE(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_OK);
    REQUIRE(pl_quant_config_apply_flag(&cfg.quant, "fp8", &err) == PL_STATUS_OK);
    struct pl_safetensors *st = NULL;
    REQUIRE(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_OK);
    struct pl_backend *be = fake_new(true, PL_DTYPE_F32);
    /* --quantization fp8: packed from the float checkpoint */
    struct pl_weights *w = NULL;
    pl_status s = pl_weights_load(&cfg, st, be, &w, &err);
    CHECKF(s == PL_STATUS_OK, "%s", err.msg);
    if (s == PL_STATUS_OK) {
        struct slot_seen seen = {.cfg = &cfg, .st = st};
        pl_weights_foreach(&cfg, w, on_slot, &seen);
        CHECK(seen.bad == 0 && seen.n_f8w == 14 && seen.n_quantizable_dense == 0);
        CHECK(w->lm_head.data == NULL || w->lm_head.dtype != PL_DTYPE_F8W);
    }
    pl_weights_free(w);
    /* --load-format dummy with an FP8 config: packed dummies */
    w = NULL;
    s = pl_weights_dummy(&cfg, be, 7, &w, &err);
    CHECKF(s == PL_STATUS_OK, "%s", err.msg);
    if (s == PL_STATUS_OK) {
        struct slot_seen seen = {.cfg = &cfg, .dummy = true};
        pl_weights_foreach(&cfg, w, on_slot, &seen);
        CHECKF(seen.bad == 0 && seen.n_f8w == 14, "dummy: %d packed, %ld bad", seen.n_f8w,
               seen.bad);
    }
    pl_weights_free(w);
    /* without the claim: dense dummies */
    w = NULL;
    s = pl_weights_dummy(&cfg, g_cpu, 7, &w, &err);
    CHECK(s == PL_STATUS_OK && w && w->layers[0].wq.dtype != PL_DTYPE_F8W);
    pl_weights_free(w);
    pl_backend_free(be);
    pl_safetensors_free(st);
    pl_test_rm_tree(dir);
}

/* ---- 5. the W8A8 emulation ---------------------------------------------------------------- */

static void test_emulation_vs_reference(void)
{
    const struct pl_quant_config q = config_of(pl_quant_format_config("ct_fp8_channel_dynamic"));
    const int64_t M = 64, K = 256;
    const int n = 5;
    struct pl_safetensors *st = packed_file(&q, M, K, "emu");
    REQUIRE(st);
    void *buf = NULL;
    size_t len = 0;
    struct pl_err err = {0};
    REQUIRE(pl_quant_f8w_buffer(&q, st, "m", M, K, 0, M, &buf, &len, &err) == PL_STATUS_OK);
    float *deq = malloc(sizeof(float) * (size_t)(M * K)), *x = malloc(sizeof(float) * (size_t)(n * K));
    REQUIRE(pl_quant_dequant(&q, st, "m", M, K, 0, M, deq, &err) == PL_STATUS_OK);
    for (int64_t i = 0; i < n * K; i++) /* bf16 activations; row 3 all zero, row 4 one spike */
        x[i] = i / K == 3 ? 0.0f : pl_bf16_to_f32(pl_f32_to_bf16(frand() * 6.0f));
    x[4 * K + 17] = 300.0f;
    double *out = malloc(sizeof(double) * (size_t)(n * M)), *mag = malloc(sizeof(double) * (size_t)(n * M));
    pl_fp8_ref_matmul(buf, M, K, x, n, NULL, out, mag);
    /* the dequantized reference with unrounded activations: e4m3 keeps 3 mantissa bits,
     * so each activation moves by at most 2^-4 of itself (and a spike's row loses its small
     * values to the subnormal range: a looser bound there) */
    double worst = 0;
    for (int t = 0; t < n; t++)
        for (int64_t r = 0; r < M; r++) {
            double ref = 0, m = 1e-30;
            for (int64_t k = 0; k < K; k++) {
                ref += (double)deq[r * K + k] * x[t * K + k];
                m += fabs((double)deq[r * K + k] * x[t * K + k]);
            }
            const double e = fabs(out[t * M + r] - ref) / m;
            worst = t < 4 && e > worst ? e : worst;
            CHECKF(e <= (t == 4 ? 0.25 : 1.0 / 16), "row %d out %lld: %g vs %g", t, (long long)r,
                   out[t * M + r], ref);
            if (t == 3)
                CHECK(out[t * M + r] == 0.0);
        }
    printf("W8A8 emulation vs the dequantized reference: max normalised error %.3g\n", worst);
    /* a static scale saturates: x / s beyond 448 is 448 */
    float *b2 = (float *)((char *)buf + pl_f8w_layout_of(M, K).head_off);
    *b2 = 0.001f; /* 300 / 0.001 > 448 */
    const float s = pl_fp8_ref_token_scale(x + 4 * K, K, *b2);
    uint8_t *qr = malloc((size_t)K);
    pl_fp8_ref_quant_row(x + 4 * K, K, s, qr);
    CHECK(s == 0.001f && qr[17] == 0x7e);
    CHECK(pl_fp8_ref_token_scale(x + 3 * K, K, 0.0f) == PL_F8_MIN_SCALE);
    free(qr);
    free(buf);
    free(deq);
    free(x);
    free(out);
    free(mag);
    pl_safetensors_free(st);
}

/* ---- 6. the memory plan ------------------------------------------------------------------ */

static void test_plan_kv_fp8_on_bf16(void)
{
    char dir[512];
    snprintf(dir, sizeof(dir), "%s/plan", g_root);
    struct pl_err err = {0};
    REQUIRE(pl_tiny_model_write("llama-quant", dir, &err) == PL_STATUS_OK);
    struct pl_model_config cfg;
    REQUIRE(pl_model_config_load(dir, &cfg, &err) == PL_STATUS_OK);
    struct pl_safetensors *st = NULL;
    REQUIRE(pl_safetensors_open_dir(dir, &st, &err) == PL_STATUS_OK);
    int blocks[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        struct pl_backend *be = fake_new(false, PL_DTYPE_BF16);
        if (i)
            REQUIRE(be->ops->set_kv_dtype(be, PL_DTYPE_F8_E4M3, 1.0f, 1.0f) == PL_STATUS_OK);
        struct pl_weights *w = NULL;
        pl_status s = pl_weights_load(&cfg, st, be, &w, &err);
        CHECKF(s == PL_STATUS_OK, "%s", err.msg);
        struct pl_model_runner_params p;
        pl_model_runner_params_default(&p);
        p.kv_cache_bytes = 3u << 20;
        p.max_model_len = 64;
        p.max_num_seqs = 4096;
        p.max_num_batched_tokens = 64;
        struct pl_model_runner *r = NULL;
        if (s == PL_STATUS_OK)
            s = pl_model_runner_new_from_parts(&p, &cfg, w, be, &r, &err);
        CHECKF(s == PL_STATUS_OK, "%s", err.msg);
        if (r)
            blocks[i] = pl_model_runner_num_blocks(r);
        pl_model_runner_free(r);
        pl_weights_free(w);
        pl_backend_free(be);
    }
    /* one bf16 block: 2 x 2 layers x 16 tokens x 128 x 2 bytes = 16 KiB; e4m3: 8 KiB */
    CHECKF(blocks[0] == 192 && blocks[1] == 2 * blocks[0], "bf16 %d blocks, e4m3 %d", blocks[0],
           blocks[1]);
    pl_safetensors_free(st);
    pl_test_rm_tree(dir);
}

int main(void)
{
    struct pl_err err = {0};
    if (pl_backend_cpu_new(1, &g_cpu, &err) != PL_STATUS_OK) {
        fprintf(stderr, "cpu backend: %s\n", err.msg);
        return 1;
    }
    snprintf(g_root, sizeof(g_root), "/tmp/pl_quant_fp8_XXXXXX");
    if (!mkdtemp(g_root))
        return 1;
    PL_RUN(test_e4m3_of_scaled_bf16);
    PL_RUN(test_f8w_layout);
    PL_RUN(test_f8w_buffer_formats);
    PL_RUN(test_f8w_buffer_online);
    PL_RUN(test_f8w_refusals);
    PL_RUN(test_loader_packs_fp8);
    PL_RUN(test_loader_online_and_dummy);
    PL_RUN(test_emulation_vs_reference);
    PL_RUN(test_plan_kv_fp8_on_bf16);
    pl_test_rm_tree(g_root);
    pl_backend_free(g_cpu);
    return pl_test_summary();
}
