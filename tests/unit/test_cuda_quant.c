/*
 * test_cuda_quant.c -- the CUDA backend's packed int4 matmul (PL_DTYPE_Q4: the int4 GEMV for
 * 1..8 rows, dequantize + cuBLASLt above) against the dequantizing reference
 * (model/quant.h) on every int4 format, group size and shape class, including the odd
 * sizes of real models (14336, 28672).
 *
 * Each case packs a random weight with pl_quant_pack (the producer's layout), reads it back
 * through pl_quant_q4_buffer (the loader's device layout), runs the CUDA matmul on random
 * bf16 x, and compares with an fp64 product of the reference's fp32 weights and the same
 * bf16 x. The bound is a bf16 emulation's: |out - ref| <= 2^-7 (sum_k |w x| ) + 2^-7 |ref|
 * (the dequantize path rounds weights to bf16, and every output is rounded to bf16); the
 * largest normalised error seen is printed per path.
 *
 * Exit code 77 (CTest: skipped) when no CUDA device is present.
 */
#include "test.h"

#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "model/quant.h"
#include "model/quant_pack.h"
#include "model/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct pl_backend *g_gpu;
static char g_dir[64];
static double g_max_err[2]; /* normalised error: GEMV, dequantize + GEMM */
static int g_cases[2];

static uint64_t g_rng = 0x1234567u;
static float frand(void)
{
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((g_rng >> 40) & 0xffffff) / 16777216.0f - 0.5f;
}

static void run_case(const char *format, int64_t N, int64_t K, const int *ns, int n_ns)
{
    struct pl_quant_config q;
    struct pl_err err = {0};
    const char *text = pl_quant_format_config(format);
    REQUIRE(pl_quant_config_parse_text(text, strlen(text), &q, &err) == PL_STATUS_OK);
    float *w = malloc(sizeof(float) * (size_t)(N * K)), *deq = malloc(sizeof(float) * (size_t)(N * K));
    REQUIRE(w && deq);
    for (int64_t i = 0; i < N * K; i++)
        w[i] = frand() * 0.1f;
    struct pl_qt_list l = {0};
    REQUIRE(pl_quant_pack(&q, "m", w, N, K, PL_DTYPE_BF16, 7, &l, deq, &err) == PL_STATUS_OK);
    char path[128];
    snprintf(path, sizeof(path), "%s/w.safetensors", g_dir);
    REQUIRE(pl_qt_write_safetensors(path, &l, &err) == PL_STATUS_OK);
    pl_qt_list_free(&l);
    struct pl_safetensors *st = NULL;
    REQUIRE(pl_safetensors_open_file(path, &st, &err) == PL_STATUS_OK);
    /* the reference's weights, and the device buffer */
    CHECK(pl_quant_dequant(&q, st, "m", N, K, 0, N, deq, &err) == PL_STATUS_OK);
    void *buf = NULL;
    size_t len = 0;
    REQUIRE(pl_quant_q4_buffer(&q, st, "m", N, K, 0, N, &buf, &len, &err) == PL_STATUS_OK);
    pl_safetensors_free(st);
    const struct pl_backend_ops *o = g_gpu->ops;
    void *dw = o->alloc(g_gpu, len);
    REQUIRE(dw && o->upload(g_gpu, dw, buf, len) == PL_STATUS_OK);
    free(buf);
    const struct pl_weight W = {dw, PL_DTYPE_Q4, N, K};
    int max_n = 0;
    for (int i = 0; i < n_ns; i++)
        max_n = ns[i] > max_n ? ns[i] : max_n;
    uint16_t *x = malloc(sizeof(uint16_t) * (size_t)(max_n * K));
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)(max_n * N));
    float *bias = malloc(sizeof(float) * (size_t)N);
    REQUIRE(x && out && bias);
    for (int64_t i = 0; i < max_n * K; i++)
        x[i] = pl_f32_to_bf16(frand() * 4.0f);
    for (int64_t i = 0; i < N; i++)
        bias[i] = frand();
    void *dx = o->alloc(g_gpu, sizeof(uint16_t) * (size_t)(max_n * K));
    void *dout = o->alloc(g_gpu, sizeof(uint16_t) * (size_t)(max_n * N));
    void *dbias = o->alloc(g_gpu, sizeof(float) * (size_t)N);
    REQUIRE(dx && dout && dbias);
    REQUIRE(o->upload(g_gpu, dx, x, sizeof(uint16_t) * (size_t)(max_n * K)) == PL_STATUS_OK);
    REQUIRE(o->upload(g_gpu, dbias, bias, sizeof(float) * (size_t)N) == PL_STATUS_OK);
    const struct pl_weight B = {dbias, PL_DTYPE_F32, 1, N};
    for (int c = 0; c < n_ns; c++) {
        const int n = ns[c];
        const bool with_bias = c % 2 == 1;
        o->matmul(g_gpu, dout, (int)N, dx, &W, with_bias ? &B : NULL, n);
        REQUIRE(o->sync(g_gpu) == PL_STATUS_OK);
        REQUIRE(o->download(g_gpu, out, dout, sizeof(uint16_t) * (size_t)(n * N)) ==
                PL_STATUS_OK);
        const int path_i = n <= 8 ? 0 : 1;
        int bad = 0;
        for (int j = 0; j < n && bad < 3; j++)
            for (int64_t r = 0; r < N && bad < 3; r++) {
                double ref = with_bias ? bias[r] : 0.0, mag = 1e-6;
                for (int64_t k = 0; k < K; k++) {
                    double p = (double)deq[r * K + k] * (double)pl_bf16_to_f32(x[j * K + k]);
                    ref += p;
                    mag += fabs(p);
                }
                const double got = pl_bf16_to_f32(out[j * N + r]);
                const double e = fabs(got - ref);
                const double norm = e / (mag + fabs(ref));
                if (norm > g_max_err[path_i])
                    g_max_err[path_i] = norm;
                if (e > (mag + fabs(ref)) / 128.0) {
                    CHECKF(0, "%s [%lld x %lld] n=%d row %d out %lld: %g, reference %g", format,
                           (long long)N, (long long)K, n, j, (long long)r, got, ref);
                    bad++;
                }
            }
        g_cases[path_i]++;
    }
    o->free(g_gpu, dw);
    o->free(g_gpu, dx);
    o->free(g_gpu, dout);
    o->free(g_gpu, dbias);
    free(w);
    free(deq);
    free(x);
    free(out);
    free(bias);
}

static void test_formats_small(void)
{
    static const char *const formats[] = {"awq_g32", "awq_g64", "awq_g128", "gptq_g128",
                                          "gptq_g32_act", "gptq_g64_asym", "gptq_v2_g128_asym_act",
                                          "ct_w4a16_g128", "ct_w4a16_g32_asym_act",
                                          "ct_w4a16_channel"};
    static const int ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 16, 33};
    for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
        run_case(formats[f], 256, 512, ns, 10);
        run_case(formats[f], 136, 1024, ns, 10); /* rows not a multiple of the GEMV's 4 warps */
    }
}

static void test_real_shapes(void)
{
    static const int ns[] = {1, 8, 16};
    /* Llama-3-8B: q/o 4096x4096, MLP 14336x4096 and 4096x14336; 70B: 28672x8192 */
    run_case("awq_g128", 4096, 4096, ns, 3);
    run_case("gptq_g32_act", 14336, 4096, ns, 3);
    run_case("ct_w4a16_g32_asym_act", 4096, 14336, ns, 3);
    run_case("awq_g128", 28672, 8192, ns, 2);
}

int main(void)
{
    if (pl_cuda_device_count() <= 0) {
        fprintf(stderr, "no CUDA device: skipped\n");
        return 77;
    }
    struct pl_err err = {0};
    if (pl_backend_cuda_new(0, &g_gpu, &err) != PL_STATUS_OK) {
        fprintf(stderr, "cuda backend: %s\n", err.msg);
        return 1;
    }
    snprintf(g_dir, sizeof(g_dir), "/tmp/pl_cuda_quant_XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    PL_RUN(test_formats_small);
    PL_RUN(test_real_shapes);
    printf("---- int4 parity (%s): gemv %d cases, max normalised error %.3g; dequant+gemm %d "
           "cases, %.3g ----\n",
           pl_backend_cuda_device_name(g_gpu), g_cases[0], g_max_err[0], g_cases[1],
           g_max_err[1]);
    char path[128];
    snprintf(path, sizeof(path), "%s/w.safetensors", g_dir);
    unlink(path);
    rmdir(g_dir);
    pl_backend_free(g_gpu);
    return pl_test_summary();
}
