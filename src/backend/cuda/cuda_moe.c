/*
 * cuda_moe.c -- the CUDA backend's moe op (rules: backend.h, struct pl_moe_args).
 *
 * Owns: the op's plan over its scratch and the order of its launches. Tokens are
 * grouped by expert and each expert's group runs through its three products.
 *
 * The grouped path (bf16 experts, the usual case): no host synchronisation, so MoE
 * decode steps record into graphs.
 *   1. router logits in fp32 (the logits op: x @ router^T);
 *   2. routing on the device: softmax, top-k, renormalisation, counts per expert
 *      (kernels/moe.cu);
 *   3. the tile plan and the grouping: offsets per expert, (expert, tile) pairs,
 *      each entry's row in its expert's group (kernels/moe_gemm.cu, moe.cu);
 *   4. one launch for every expert's gate and up products with the activation as
 *      the epilogue (reading the hidden states through the grouped rows' tokens),
 *      one for every expert's down product (kernels/moe_gemm.cu: tensor cores; a
 *      decode step reads only the chosen experts' weights);
 *   5. the shared expert (Qwen2-MoE) over every token, its sigmoid gate through the
 *      logits op;
 *   6. out[t] = the weighted sum of its choices' rows (+ the gated shared output).
 * The decode path (bf16 experts, at most 16 (token, choice) entries by default): steps 1-2,
 * the shared expert, then two GEMV launches (kernels/gemv.cu): every entry's gate and up
 * rows with the activation, then every token's down products summed with their routing
 * weights (and the gated shared output) into out. At one token per expert a GEMM's tiles
 * are mostly empty rows; the GEMVs stream just the chosen experts' weights over every SM,
 * with no tile plan, no grouping and no combination launch.
 * The host path (other expert dtypes: the float32 mode): steps 1-3, then the counts
 * come to the host (one synchronisation per MoE layer) and each expert with tokens
 * runs its products as ordinary matmul ops over its gathered rows. It cannot be
 * recorded; models with such weights run without decode graphs (model_runner.c
 * records graphs only when every matmul weight is bf16 or packed int4).
 * Activations are the backend's (bf16, or fp32 in the float32 mode); router logits and
 * weights stay fp32.
 */
#include "backend/cuda/cuda_backend.h"

#include "backend/cuda/kernels/gemv.h"
#include "backend/cuda/kernels/kernels.h"

#include <cuda_runtime.h>
#include <stdint.h>

_Static_assert(PL_CUK_MOE_MAX_EXPERTS == PL_CUDA_MOE_MAX_EXPERTS, "one expert bound");

/* A cursor over the op's scratch: sections aligned to 256 bytes. */
struct carve {
    char *at, *end;
};

static void *take(struct carve *c, size_t bytes)
{
    uintptr_t p = ((uintptr_t)c->at + 255) & ~(uintptr_t)255;
    char *r = (char *)p;
    if (r + bytes > c->end)
        return NULL;
    c->at = r + bytes;
    return r;
}

#define EXPERT(w, e) ((const struct pl_weight *)((const char *)(w) + (size_t)(e) * a->expert_stride))

/* gate / up / act / down of one expert (or the shared one) over rows [0, n) of x into y. */
static void expert_rows(struct pl_backend *be, void *y, const void *x, int n, int hidden,
                        const struct pl_weight *wg, const struct pl_weight *wu,
                        const struct pl_weight *wd, int inter, bool gelu, void *g, void *u)
{
    const struct pl_backend_ops *op = be->ops;
    if (op->gate_up_act) {
        op->gate_up_act(be, g, x, wg, wu, NULL, NULL, n, inter, gelu);
    } else {
        op->matmul(be, g, inter, x, wg, NULL, n);
        op->matmul(be, u, inter, x, wu, NULL, n);
        if (gelu)
            op->gelu_tanh_mul(be, g, g, u, n, inter);
        else
            op->silu_mul(be, g, g, u, n, inter);
    }
    op->matmul(be, y, hidden, g, wd, NULL, n);
}

/* The kernels' expert weight tables (by value in their parameters): gate and up, then down. */
static void table_gate_up(struct pl_cuk_moe_gemm *p, const struct pl_moe_args *a)
{
    for (int x_e = 0; x_e < a->n_experts; x_e++) {
        p->w0[x_e] = EXPERT(a->w_gate, x_e)->data;
        p->w1[x_e] = EXPERT(a->w_up, x_e)->data;
    }
}

static void table_down(struct pl_cuk_moe_gemm *p, const struct pl_moe_args *a)
{
    for (int x_e = 0; x_e < a->n_experts; x_e++) {
        p->w0[x_e] = EXPERT(a->w_down, x_e)->data;
        p->w1[x_e] = NULL;
    }
}

/* Whether every expert's three weights are bf16 (the grouped path's kernels). */
static bool grouped_path(const struct pl_moe_args *a, size_t es, int hidden)
{
    if (es != 2 || hidden % 8 || a->inter % 8)
        return false;
    for (int x_e = 0; x_e < a->n_experts; x_e++)
        if (EXPERT(a->w_gate, x_e)->dtype != PL_DTYPE_BF16 ||
            EXPERT(a->w_up, x_e)->dtype != PL_DTYPE_BF16 ||
            EXPERT(a->w_down, x_e)->dtype != PL_DTYPE_BF16)
            return false;
    return true;
}

/* Steps 3-4 of the grouped path: ids / counts routed, y [nk, hidden] in grouped order
 * out, inv set. g: [nk, inter] scratch. */
static int grouped_experts(pl_cuda_stream s, const struct pl_moe_args *a, const void *x, int n,
                           int hidden, const int32_t *ids, const int32_t *counts,
                           int32_t *offsets, int32_t *cursor, int32_t *tiles, int32_t *src,
                           int32_t *inv, void *g, void *y)
{
    const int E = a->n_experts, nk = n * a->top_k;
    const int bm = pl_cuk_moe_tile_rows(nk, E), max_tiles = pl_cuk_moe_max_tiles(nk, E, bm);
    int e = pl_cuk_moe_tiles(s, counts, E, bm, max_tiles, offsets, cursor, tiles);
    if (!e)
        e = pl_cuk_moe_place(s, ids, nk, a->top_k, cursor, src, inv);
    /* kernel parameters (by value: a recorded graph keeps them) */
    struct pl_cuk_moe_gemm p = {.a = x, .a_rows = src, .offsets = offsets, .counts = counts,
                                 .tiles = tiles, .out = g, .k = hidden, .n = a->inter};
    table_gate_up(&p, a);
    if (!e)
        e = pl_cuk_moe_gemm(s, &p, bm, max_tiles, 1, a->gelu_tanh);
    p.a = g;
    p.a_rows = NULL;
    p.out = y;
    p.k = a->inter;
    p.n = hidden;
    table_down(&p, a);
    if (!e)
        e = pl_cuk_moe_gemm(s, &p, bm, max_tiles, 0, 0);
    return e;
}

/* Steps 3-4 of the host path: the counts to the host, one expert's products at a time
 * over its gathered rows (xg). false: failed (the error is set). */
static bool host_experts(struct pl_backend *be, const struct pl_moe_args *a, const void *x,
                         size_t nk, int hidden, const int32_t *ids, const int32_t *counts,
                         int32_t *offsets, int32_t *cursor, int32_t *src, int32_t *inv,
                         char *xg, char *y, char *g, char *u)
{
    pl_cuda_stream s = (pl_cuda_stream)pl_cuda_stream_of(be);
    const int E = a->n_experts;
    const size_t es = be->ops->act_dtype == PL_DTYPE_F32 ? 4 : 2;
    int e = pl_cuk_moe_group(s, ids, counts, (int)nk, E, a->top_k, offsets, cursor, src, inv);
    if (!e)
        e = pl_cuk_copy_rows(s, xg, NULL, x, src, (int)nk, es * (size_t)hidden);
    int32_t *host = pl_cuda_moe_host_counts(be);
    if (!e)
        e = (int)cudaMemcpyAsync(host, counts, sizeof(int32_t) * (size_t)E,
                                 cudaMemcpyDeviceToHost, (cudaStream_t)s);
    if (!e)
        e = (int)cudaStreamSynchronize((cudaStream_t)s);
    if (e) {
        pl_cuda_fail(be, "cuda moe routing: %s", cudaGetErrorString((cudaError_t)e));
        return false;
    }
    size_t at = 0;
    for (int x_e = 0; x_e < E; x_e++) {
        const int cnt = host[x_e];
        if (cnt <= 0)
            continue;
        if (at + (size_t)cnt > nk) {
            pl_cuda_fail(be, "cuda moe: expert counts exceed the %zu choices", nk);
            return false;
        }
        expert_rows(be, y + es * at * (size_t)hidden, xg + es * at * (size_t)hidden, cnt, hidden,
                    EXPERT(a->w_gate, x_e), EXPERT(a->w_up, x_e), EXPERT(a->w_down, x_e),
                    a->inter, a->gelu_tanh, g + es * at * (size_t)a->inter,
                    u + es * at * (size_t)a->inter);
        at += (size_t)cnt;
    }
    return true;
}

void pl_cuda_moe(struct pl_backend *be, void *out, const void *x, int n, int hidden,
                 const struct pl_moe_args *a, void *scratch)
{
    if (n <= 0)
        return;
    const int E = a->n_experts, k = a->top_k;
    if (E <= 0 || E > PL_CUDA_MOE_MAX_EXPERTS || k <= 0 || k > 64 || k > E) {
        pl_cuda_fail(be, "cuda moe: %d experts, top %d: at most %d experts and 64 choices",
                     E, k, PL_CUDA_MOE_MAX_EXPERTS);
        return;
    }
    pl_cuda_stream s = (pl_cuda_stream)pl_cuda_stream_of(be);
    const size_t nk = (size_t)n * (size_t)k;
    /* bytes of an activation element: 2 (bf16), 4 in the float32 mode */
    const size_t es = be->ops->act_dtype == PL_DTYPE_F32 ? 4 : 2;
    struct carve c = {scratch, (char *)scratch + es * pl_moe_scratch_elems(a, n)};
    float *logits = take(&c, sizeof(float) * (size_t)n * (size_t)E);
    int32_t *ids = take(&c, sizeof(int32_t) * nk);
    float *w = take(&c, sizeof(float) * nk);
    int32_t *src = take(&c, sizeof(int32_t) * nk);
    int32_t *inv = take(&c, sizeof(int32_t) * nk);
    int32_t *counts = take(&c, sizeof(int32_t) * (size_t)E);
    int32_t *offsets = take(&c, sizeof(int32_t) * (size_t)E);
    int32_t *cursor = take(&c, sizeof(int32_t) * (size_t)E);
    char *xg = take(&c, es * nk * (size_t)hidden);
    char *y = take(&c, es * nk * (size_t)hidden);
    char *g = take(&c, es * nk * (size_t)a->inter);
    char *u = take(&c, es * nk * (size_t)a->inter);
    float *sh_logit = NULL;
    char *sh_g = NULL, *sh_u = NULL, *sh_y = NULL;
    if (a->sh_gate) {
        sh_logit = take(&c, sizeof(float) * (size_t)n);
        sh_g = take(&c, es * (size_t)n * (size_t)a->sh_inter);
        sh_u = take(&c, es * (size_t)n * (size_t)a->sh_inter);
        sh_y = take(&c, es * (size_t)n * (size_t)hidden);
    }
    if (!u || (a->sh_gate && !sh_y)) {
        pl_cuda_fail(be, "cuda moe: the scratch is too small for %d tokens", n);
        return;
    }

    const bool grouped = grouped_path(a, es, hidden);
    int32_t *tiles = take(&c, sizeof(int32_t) * (size_t)n * (size_t)(k + E));
    if (!tiles) {
        pl_cuda_fail(be, "cuda moe: the scratch is too small for %d tokens", n);
        return;
    }
    if (!grouped && pl_cuda_capturing(be)) {
        pl_cuda_fail(be, "cuda moe: %s experts need the host's counts and cannot be recorded "
                         "into a graph", pl_dtype_name(EXPERT(a->w_gate, 0)->dtype));
        return;
    }

    be->ops->logits(be, logits, x, a->router, n);
    int e = pl_cuk_moe_route(s, logits, n, E, k, a->norm_topk_prob, ids, w, counts);
    if (e) {
        pl_cuda_fail(be, "cuda moe routing: %s", cudaGetErrorString((cudaError_t)e));
        return;
    }
    if (a->sh_gate) {
        expert_rows(be, sh_y, x, n, hidden, a->sh_gate, a->sh_up, a->sh_down, a->sh_inter,
                    a->gelu_tanh, sh_g, sh_u);
        be->ops->logits(be, sh_logit, x, a->sh_router, n);
    }
    if (grouped && pl_cuk_moe_gemv_ok(x, n, k, hidden, a->inter)) {
        struct pl_cuk_moe_gemm p = {.a = x, .out = g, .k = hidden, .n = a->inter};
        table_gate_up(&p, a);
        e = pl_cuk_moe_gemv_gate_up(s, &p, ids, (int)nk, k, a->gelu_tanh);
        p.a = g;
        p.out = out;
        p.k = a->inter;
        p.n = hidden;
        table_down(&p, a);
        if (!e)
            e = pl_cuk_moe_gemv_down(s, &p, ids, w, n, k, sh_logit, sh_y);
        if (e)
            pl_cuda_fail(be, "cuda moe experts: %s", cudaGetErrorString((cudaError_t)e));
        return;
    }
    if (grouped) {
        e = grouped_experts(s, a, x, n, hidden, ids, counts, offsets, cursor, tiles, src, inv,
                            g, y);
        if (e) {
            pl_cuda_fail(be, "cuda moe experts: %s", cudaGetErrorString((cudaError_t)e));
            return;
        }
    } else if (!host_experts(be, a, x, nk, hidden, ids, counts, offsets, cursor, src, inv, xg,
                             y, g, u)) {
        return;
    }
    e = (es == 4 ? pl_cuk_moe_combine_f32 : pl_cuk_moe_combine)(s, out, y, w, inv, n, k, hidden,
                                                                sh_logit, sh_y);
    if (e)
        pl_cuda_fail(be, "cuda moe combine: %s", cudaGetErrorString((cudaError_t)e));
}
