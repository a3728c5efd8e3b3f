/*
 * cuda_moe.c -- the CUDA backend's moe op (rules: backend.h, struct pl_moe_args).
 *
 * Owns: the op's plan over its scratch and the order of its launches. Tokens are
 * grouped by expert, so each expert with tokens runs its three products once over its
 * group as ordinary GEMMs (tensor cores through cuBLASLt; the GEMV path for a group of
 * one or a few rows): prefill batches get grouped GEMMs, and a decode step reads only
 * the weights of the experts its tokens chose.
 *   1. router logits in fp32 (the logits op: x @ router^T);
 *   2. routing on the device: softmax, top-k, renormalisation, counts per expert
 *      (kernels/moe.cu);
 *   3. the counts come to the host (one synchronisation per MoE layer: the reason the
 *      MoE records set no_graphs), the groups are laid out on the device and the
 *      chosen rows gathered;
 *   4. per expert with tokens: gate, up, act * up, down over its rows;
 *   5. the shared expert (Qwen2-MoE) over every token, its sigmoid gate through the
 *      logits op;
 *   6. out[t] = the weighted sum of its choices' rows (+ the gated shared output).
 * Activations are the backend's (bf16, or fp32 in the float32 mode); router logits and
 * weights stay fp32.
 */
#include "backend/cuda/cuda_backend.h"

#include "backend/cuda/kernels/kernels.h"

#include <cuda_runtime.h>
#include <stdint.h>

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
    if (!gelu && op->gate_up_silu) {
        op->gate_up_silu(be, g, x, wg, wu, NULL, NULL, n, inter);
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

    be->ops->logits(be, logits, x, a->router, n);
    int e = pl_cuk_moe_route(s, logits, n, E, k, a->norm_topk_prob, ids, w, counts);
    if (!e)
        e = pl_cuk_moe_group(s, ids, counts, (int)nk, E, k, offsets, cursor, src, inv);
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
        return;
    }
    size_t at = 0;
    for (int x_e = 0; x_e < E; x_e++) {
        const int cnt = host[x_e];
        if (cnt <= 0)
            continue;
        if (at + (size_t)cnt > nk) {
            pl_cuda_fail(be, "cuda moe: expert counts exceed the %zu choices", nk);
            return;
        }
        expert_rows(be, y + es * at * (size_t)hidden, xg + es * at * (size_t)hidden, cnt, hidden,
                    EXPERT(a->w_gate, x_e), EXPERT(a->w_up, x_e), EXPERT(a->w_down, x_e),
                    a->inter, a->gelu_tanh, g + es * at * (size_t)a->inter,
                    u + es * at * (size_t)a->inter);
        at += (size_t)cnt;
    }
    if (a->sh_gate) {
        expert_rows(be, sh_y, x, n, hidden, a->sh_gate, a->sh_up, a->sh_down, a->sh_inter,
                    a->gelu_tanh, sh_g, sh_u);
        be->ops->logits(be, sh_logit, x, a->sh_router, n);
    }
    e = (es == 4 ? pl_cuk_moe_combine_f32 : pl_cuk_moe_combine)(s, out, y, w, inv, n, k, hidden,
                                                                sh_logit, sh_y);
    if (e)
        pl_cuda_fail(be, "cuda moe combine: %s", cudaGetErrorString((cudaError_t)e));
}
