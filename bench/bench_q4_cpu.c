/*
 * bench_q4_cpu.c -- the CPU backend's packed int4 matmul against the same weight dense.
 *
 * Usage: bench_q4_cpu [--threads N] [--reps R] [--group G]
 *
 * For the Llama-3-8B projections (q/o 4096 x 4096, gate/up 14336 x 4096, down 4096 x
 * 14336) at 1, 4 and 16 tokens, times one product of a PL_DTYPE_Q4 weight (random codes,
 * group G, default 128), the same weight with an act-order g_idx (input k in group
 * (k * 7) mod n_groups, so every group's inputs are scattered), and the bf16 weight of
 * the same shape (the dense baseline a model without quantization runs). Milliseconds per
 * product, the best of R runs (default 5) after one warm-up; the ratios are bf16 / int4.
 * The int4 results are bit-identical to the dequantized weight's (test_cpu_matmul), so
 * only speed is measured here.
 */
#include "backend/backend.h"
#include "util/dtype.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t next_u32(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}

/* A PL_DTYPE_Q4 buffer (backend.h's layout) of random codes, zeros and scales. */
static void *make_q4(int64_t rows, int64_t K, int group, int gidx)
{
    const int64_t G = K / group;
    const struct pl_q4_layout lay = pl_q4_layout_of(rows, K, G, gidx);
    char *buf = calloc(1, (size_t)lay.n_bytes);
    if (!buf)
        return NULL;
    int32_t *h = (int32_t *)buf;
    h[0] = group, h[1] = (int32_t)G, h[2] = gidx;
    uint32_t *codes = (uint32_t *)(buf + 16);
    for (int64_t i = 0; i < rows * (K / 8); i++)
        codes[i] = next_u32();
    float *sc = (float *)(buf + lay.scale_off);
    uint8_t *z = (uint8_t *)(buf + lay.zero_off);
    for (int64_t i = 0; i < rows * G; i++)
        sc[i] = 0.001f + (float)(next_u32() % 1000) * 1e-5f, z[i] = (uint8_t)(next_u32() & 15);
    if (gidx)
        for (int64_t k = 0; k < K; k++)
            ((int32_t *)(buf + lay.gidx_off))[k] = (int32_t)((k * 7) % G);
    return buf;
}

static double time_product(struct pl_backend *be, float *out, const float *x,
                           const struct pl_weight *w, int n, int reps)
{
    be->ops->matmul(be, out, (int)w->rows, x, w, NULL, n);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        const double t0 = now_s();
        be->ops->matmul(be, out, (int)w->rows, x, w, NULL, n);
        const double t = now_s() - t0;
        best = t < best ? t : best;
    }
    return best * 1e3;
}

int main(int argc, char **argv)
{
    int threads = 0, reps = 5, group = 128;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--group") && i + 1 < argc)
            group = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_q4_cpu [--threads N] [--reps R] [--group G]\n");
            return 2;
        }
    }
    if (reps < 1 || group < 16 || group % 16) {
        fprintf(stderr, "bench_q4_cpu: --reps >= 1, --group a multiple of 16\n");
        return 2;
    }
    struct pl_backend *be = NULL;
    struct pl_err err = {0};
    if (pl_backend_cpu_new(threads, &be, &err) != PL_STATUS_OK) {
        fprintf(stderr, "bench_q4_cpu: %s\n", err.msg);
        return 1;
    }
    static const struct {
        const char *name;
        int64_t rows, cols;
    } shapes[3] = {{"q/o 4096x4096", 4096, 4096},
                   {"gate/up 14336x4096", 14336, 4096},
                   {"down 4096x14336", 4096, 14336}};
    static const int tokens[3] = {1, 4, 16};
    char tn[32] = "one per core";
    if (threads > 0)
        snprintf(tn, sizeof(tn), "%d", threads);
    printf("bench_q4_cpu: group %d, threads: %s, ms per product (best of %d)\n", group, tn,
           reps);
    printf("%-20s %3s %9s %9s %9s %8s %8s\n", "shape", "n", "int4", "act-ord", "bf16",
           "bf16/i4", "bf16/ao");
    for (int s = 0; s < 3; s++) {
        const int64_t R = shapes[s].rows, K = shapes[s].cols;
        void *q = make_q4(R, K, group, 0), *qa = make_q4(R, K, group, 1);
        uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)(R * K));
        float *x = malloc(sizeof(float) * 16 * (size_t)K);
        float *out = malloc(sizeof(float) * 16 * (size_t)R);
        if (!q || !qa || !wb || !x || !out) {
            fprintf(stderr, "bench_q4_cpu: out of memory\n");
            return 1;
        }
        for (int64_t i = 0; i < R * K; i++)
            wb[i] = pl_f32_to_bf16((float)((int)(next_u32() % 2001) - 1000) * 1e-5f);
        for (int64_t i = 0; i < 16 * K; i++)
            x[i] = (float)((int)(next_u32() % 2001) - 1000) * 1e-3f;
        const struct pl_weight wq = {q, PL_DTYPE_Q4, R, K}, wa = {qa, PL_DTYPE_Q4, R, K};
        const struct pl_weight wd = {wb, PL_DTYPE_BF16, R, K};
        for (int t = 0; t < 3; t++) {
            const int n = tokens[t];
            const double a = time_product(be, out, x, &wq, n, reps);
            const double b = time_product(be, out, x, &wa, n, reps);
            const double c = time_product(be, out, x, &wd, n, reps);
            printf("%-20s %3d %9.3f %9.3f %9.3f %7.2fx %7.2fx\n", shapes[s].name, n, a, b, c,
                   c / a, c / b);
        }
        free(q), free(qa), free(wb), free(x), free(out);
    }
    pl_backend_free(be);
    return 0;
}
