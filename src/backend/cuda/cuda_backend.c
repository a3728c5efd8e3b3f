/*
 * cuda_backend.c -- the CUDA backend: device memory, the op table, errors.
 *
 * Owns: struct cuda_backend (the device, its one stream, the cuBLASLt state
 * of cuda_matmul.c, the preallocated split-decode scratch, the sticky error)
 * and the dispatch of every op of struct pl_backend_ops to the kernels in
 * kernels/ (launch wrappers declared in kernels/kernels.h).
 * Invariants:
 *   - every op is enqueued on `stream`, in call order, and allocates nothing
 *     (the only exception is the fp16-weight matmul scratch, see
 *     cuda_matmul.c), so a step can later be captured as a CUDA graph;
 *   - activations are bf16; the KV cache is bf16, or e4m3 bytes after set_kv_dtype
 *     (store_kv quantizes, the attention kernels convert while reading); weights keep
 *     their dtype (packed FP8 and int4 ones in backend.h's layouts);
 *   - the first failure (a launch error, a cuBLAS status, an unsupported
 *     shape) is kept in err_msg and every later sync() returns
 *     PL_STATUS_INTERNAL: ops have no status of their own, and a sticky CUDA
 *     error poisons the context anyway.
 */
#include "backend/cuda/cuda_backend.h"

#include "backend/cuda/kernels/gemv.h"
#include "backend/cuda/kernels/kernels.h"
#include "backend/cuda/kernels/sampling.h"
#include "core/sampler.h"
#include "util/debug_env.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Programmatic dependent launch of the decode path's kernels (kernels/pdl.cuh) and the fused
 * qk_rope_store / norm_add_norm kernels, where PAGELLM_CUDA_PDL / PAGELLM_CUDA_FUSE do not
 * say: both on since their H100 run of 2026-12-08 (every golden fixture passes with them;
 * batch 1 1.02-1.07x, docs/results.md). */
#define PL_CUDA_PDL_DEFAULT true
#define PL_CUDA_FUSE_DEFAULT true

/* Split-decode partial results: (seq, head, split) x (head_dim + 2) floats. */
#define PARTIAL_BYTES ((size_t)32 << 20)
#define MAX_SPLITS 32
/* Context tokens below which a split is not worth its reduce (measured: at
 * batch 1, ctx 128 one split beats two; ctx 384 wants 4 to 6). */
#define MIN_TOKENS_PER_SPLIT 96
/* CTAs wanted per SM before splitting further (the kernel keeps 4 resident
 * per SM). Measured on the H100 (docs/cuda.md): 8 x 4096 runs best at 4
 * splits (256 CTAs), 64 x 1024 at 1 (512 CTAs); more splits lose to their
 * partial traffic and the reduce. */
#define DECODE_CTAS_PER_SM 2

/* One chunk of the sub-allocator: bump-allocated, freed when its last block is. */
struct pool_chunk {
    char *base;
    size_t used;
    int live;
};

struct cuda_backend {
    struct pl_backend base; /* must be first */
    int device;
    int n_sms;
    char device_name[256];
    cudaStream_t stream;
    struct pl_cuda_matmul *mm;
    float *partial;
    int forced_splits; /* 0 = choose from the shape */
    struct pl_cuda_profile *prof; /* PAGELLM_CUDA_PROFILE; NULL otherwise */
    bool capturing;               /* between graph_begin and graph_end: no profile events */
    struct cuda_sampling *smp; /* the sample op's buffers, made at its first call */
    int32_t *moe_counts; /* pinned [PL_CUDA_MOE_MAX_EXPERTS]: the moe op's counts per expert */
    bool f32; /* the float32 mode: fp32 activations, KV cache and weights (cuda_ops_f32) */
    struct pool_chunk *chunks; /* the sub-allocator's chunks, sorted by base (see cuda_alloc) */
    int n_chunks, cap_chunks, cur_chunk;
    bool kv_fp8;            /* set_kv_dtype(F8_E4M3): the KV cache holds e4m3 bytes */
    bool no_fuse;           /* qk_rope_store / norm_add_norm run the kernels they stand for */
    float k_scale, v_scale; /* ... stored = e4m3(x / scale), read = stored * scale */
    bool failed;
    char err_msg[512];
};

static struct cuda_backend *cb(struct pl_backend *be) { return (struct cuda_backend *)be; }

static pl_cuda_stream st(struct pl_backend *be) { return (pl_cuda_stream)cb(be)->stream; }

/* Profile label of the op about to be enqueued (nothing unless profiling, and never
 * inside a graph being recorded). */
#define PROF(be, ...)                                                                          \
    do {                                                                                       \
        if (cb(be)->prof && !cb(be)->capturing)                                                \
            pl_cuda_profile_mark(cb(be)->prof, __VA_ARGS__);                                   \
    } while (0)

void pl_cuda_fail(struct pl_backend *be, const char *fmt, ...)
{
    struct cuda_backend *c = cb(be);
    if (c->failed)
        return;
    c->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err_msg, sizeof(c->err_msg), fmt, ap);
    va_end(ap);
}

/* Records a launch wrapper's result (0 = fine). */
static void check_launch(struct pl_backend *be, const char *op, int e)
{
    if (e)
        pl_cuda_fail(be, "cuda %s: %s", op, cudaGetErrorString((cudaError_t)e));
}

int pl_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver: not an error of anyone's context */
        return 0;
    }
    return n;
}

/* ---- memory --------------------------------------------------------------------------- */

/*
 * The sub-allocator. cudaMalloc hands out memory in 2 MiB pages, so a 3 MiB tensor takes
 * 4 MiB: a MoE checkpoint's 18,432 expert tensors of 3 MiB (Qwen3-30B-A3B) would lose
 * 18 GiB to the rounding. Blocks of POOL_MIN..POOL_MAX bytes that would waste more than
 * an eighth of themselves are carved (256-byte aligned) from POOL_CHUNK chunks instead;
 * a chunk is bump-allocated and goes back to the driver when its last block is freed.
 * Blocks are allocated at load and freed at teardown (no op allocates), so the space of
 * a block freed early is not reused.
 */
#define POOL_CHUNK ((size_t)128 << 20)
#define POOL_MIN ((size_t)64 << 10)
#define POOL_MAX ((size_t)16 << 20)
#define PAGE ((size_t)2 << 20)

static bool pooled(size_t n)
{
    const size_t paged = (n + PAGE - 1) / PAGE * PAGE;
    return n >= POOL_MIN && n <= POOL_MAX && paged - n > n / 8;
}

/* The chunk holding p, or -1 (binary search over the bases). */
static int chunk_of(const struct cuda_backend *c, const void *p)
{
    int lo = 0, hi = c->n_chunks - 1;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        const char *b = c->chunks[mid].base;
        if ((const char *)p < b)
            hi = mid - 1;
        else if ((const char *)p >= b + POOL_CHUNK)
            lo = mid + 1;
        else
            return mid;
    }
    return -1;
}

static void *pool_alloc(struct cuda_backend *c, size_t n)
{
    n = (n + 255) & ~(size_t)255;
    struct pool_chunk *k = c->cur_chunk >= 0 ? &c->chunks[c->cur_chunk] : NULL;
    if (!k || k->used + n > POOL_CHUNK) {
        if (c->n_chunks == c->cap_chunks) {
            const int cap = c->cap_chunks ? 2 * c->cap_chunks : 64;
            struct pool_chunk *g = realloc(c->chunks, sizeof(*g) * (size_t)cap);
            if (!g)
                return NULL;
            c->chunks = g;
            c->cap_chunks = cap;
        }
        char *base = NULL;
        if (cudaMalloc((void **)&base, POOL_CHUNK) != cudaSuccess) {
            cudaGetLastError();
            return NULL;
        }
        int at = c->n_chunks;
        while (at > 0 && c->chunks[at - 1].base > base) {
            c->chunks[at] = c->chunks[at - 1];
            at--;
        }
        c->chunks[at] = (struct pool_chunk){.base = base};
        c->n_chunks++;
        c->cur_chunk = at;
        k = &c->chunks[at];
    }
    void *p = k->base + k->used;
    k->used += n;
    k->live++;
    return p;
}

static void *cuda_alloc(struct pl_backend *be, size_t n_bytes)
{
    void *p = NULL;
    if (pooled(n_bytes) && (p = pool_alloc(cb(be), n_bytes)))
        return p;
    if (cudaMalloc(&p, n_bytes ? n_bytes : 256) != cudaSuccess) {
        cudaGetLastError(); /* out of memory is reported by the NULL, not sticky */
        return NULL;
    }
    return p;
}

static void cuda_free(struct pl_backend *be, void *p)
{
    if (!p)
        return;
    struct cuda_backend *c = cb(be);
    const int i = chunk_of(c, p);
    if (i < 0) {
        cudaFree(p);
        return;
    }
    if (--c->chunks[i].live > 0)
        return;
    cudaFree(c->chunks[i].base);
    memmove(&c->chunks[i], &c->chunks[i + 1], sizeof(*c->chunks) * (size_t)(c->n_chunks - i - 1));
    c->n_chunks--;
    if (c->cur_chunk == i)
        c->cur_chunk = -1;
    else if (c->cur_chunk > i)
        c->cur_chunk--;
}

static void *cuda_map_weight(struct pl_backend *be, const void *host, size_t n_bytes)
{
    void *p = cuda_alloc(be, n_bytes);
    if (!p)
        return NULL;
    if (n_bytes && cudaMemcpy(p, host, n_bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
        pl_cuda_fail(be, "cuda map_weight: %s", cudaGetErrorString(cudaGetLastError()));
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_unmap_weight(struct pl_backend *be, void *p) { cuda_free(be, p); }

static pl_status status_of(struct pl_backend *be) { return cb(be)->failed ? PL_STATUS_INTERNAL : PL_STATUS_OK; }

static pl_status cuda_upload(struct pl_backend *be, void *dst, const void *src, size_t n_bytes)
{
    if (n_bytes == 0)
        return status_of(be);
    PROF(be, "upload");
    cudaError_t e = cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyHostToDevice, cb(be)->stream);
    if (e != cudaSuccess)
        pl_cuda_fail(be, "cuda upload of %zu bytes: %s", n_bytes, cudaGetErrorString(e));
    return status_of(be);
}

static pl_status cuda_sync(struct pl_backend *be)
{
    if (!cb(be)->capturing)
        pl_cuda_profile_flush(cb(be)->prof);
    cudaError_t e = cudaStreamSynchronize(cb(be)->stream);
    if (e == cudaSuccess)
        e = cudaGetLastError();
    if (e != cudaSuccess)
        pl_cuda_fail(be, "cuda: %s", cudaGetErrorString(e));
    return status_of(be);
}

static pl_status cuda_download(struct pl_backend *be, void *dst, const void *src, size_t n_bytes)
{
    if (n_bytes) {
        PROF(be, "download");
        cudaError_t e = cudaMemcpyAsync(dst, src, n_bytes, cudaMemcpyDeviceToHost, cb(be)->stream);
        if (e != cudaSuccess)
            pl_cuda_fail(be, "cuda download of %zu bytes: %s", n_bytes, cudaGetErrorString(e));
    }
    return cuda_sync(be);
}

static bool cuda_supports(struct pl_backend *be, enum pl_op op, enum pl_dtype dtype)
{
    if (cb(be)->f32) { /* fp32 products (cuBLASLt 32F) and fp32 activation kernels */
        if (op == PL_OP_EMBED || op == PL_OP_RMSNORM || op == PL_OP_FILL)
            return dtype == PL_DTYPE_F32 || dtype == PL_DTYPE_F16 || dtype == PL_DTYPE_BF16;
        return op < PL_OP_COUNT && dtype == PL_DTYPE_F32;
    }
    switch (op) {
    case PL_OP_EMBED:
    case PL_OP_RMSNORM:
    case PL_OP_FILL:
        return dtype == PL_DTYPE_F32 || dtype == PL_DTYPE_F16 || dtype == PL_DTYPE_BF16;
    case PL_OP_MATMUL:
        /* packed int4 (quantized checkpoints): cuda_matmul.c's int4 GEMV (n <= 8), int4
         * tensor-core GEMM and dequant + GEMM above; test_cuda_quant's parity (148 GEMV and
         * 63 GEMM cases, every int4 format and group size, H100, 2026-12-07) passed before
         * this was turned on. Packed FP8 W8A8: per-token e4m3 activations and a cuBLASLt
         * FP8 GEMM (cuda_matmul.c; Hopper or later) */
        if (dtype == PL_DTYPE_Q4 || dtype == PL_DTYPE_F8W)
            return true;
        /* fall through */
    case PL_OP_LOGITS:
        /* cuBLASLt runs bf16 x bf16 and fp16 x fp16; F32 weights are refused at load */
        return dtype == PL_DTYPE_F16 || dtype == PL_DTYPE_BF16;
    case PL_OP_STORE_KV:
    case PL_OP_ATTENTION:
    case PL_OP_COPY_BLOCKS:
        /* the KV cache: bf16, or e4m3 (set_kv_dtype) */
        return dtype == PL_DTYPE_BF16 || dtype == PL_DTYPE_F8_E4M3;
    case PL_OP_ROPE:
    case PL_OP_SILU_MUL:
    case PL_OP_GET_ROWS:
        return dtype == PL_DTYPE_BF16;
    case PL_OP_GELU_TANH_MUL:
    case PL_OP_SCALE:
        return dtype == PL_DTYPE_BF16;
    case PL_OP_SOFTCAP:
        return dtype == PL_DTYPE_F32;
    case PL_OP_MOE:
        return dtype == PL_DTYPE_BF16;
    case PL_OP_COUNT:
        break;
    }
    return false;
}

/* ---- ops ------------------------------------------------------------------------------ */

static void cuda_embed(struct pl_backend *be, void *out, const struct pl_weight *table,
                       const int32_t *ids, int n)
{
    PROF(be, "embed");
    check_launch(be, "embed",
                 (cb(be)->f32 ? pl_cuk_embed_f32 : pl_cuk_embed)(st(be), out, table->data,
                                                                 (int)table->dtype, table->cols,
                                                                 ids, n));
}

static void cuda_rmsnorm(struct pl_backend *be, void *out, void *residual, const void *x,
                         const struct pl_weight *w, int n_rows, int dim, float eps)
{
    PROF(be, "rmsnorm%s", residual ? " +residual" : "");
    check_launch(be, "rmsnorm",
                 (cb(be)->f32 ? pl_cuk_rmsnorm_f32 : pl_cuk_rmsnorm)(
                     st(be), out, residual, x, w->data, (int)w->dtype, n_rows, dim, eps));
}

static void cuda_matmul(struct pl_backend *be, void *out, int ld_out, const void *x,
                        const struct pl_weight *w, const struct pl_weight *bias, int n)
{
    PROF(be, "matmul %lldx%lld n=%d", (long long)w->rows, (long long)w->cols, n);
    if (cb(be)->f32)
        pl_cuda_matmul_run_f32(be, cb(be)->mm, out, ld_out, x, w, bias, n);
    else
        pl_cuda_matmul_run(be, cb(be)->mm, out, ld_out, false, x, w, bias, n);
}

static void cuda_logits(struct pl_backend *be, float *out, const void *x, const struct pl_weight *w,
                        int n)
{
    PROF(be, "logits %lldx%lld n=%d", (long long)w->rows, (long long)w->cols, n);
    if (cb(be)->f32)
        pl_cuda_matmul_run_f32(be, cb(be)->mm, out, (int)w->rows, x, w, NULL, n);
    else
        pl_cuda_matmul_run(be, cb(be)->mm, out, (int)w->rows, true, x, w, NULL, n);
}

static void cuda_matmul_group(struct pl_backend *be, int n_mats, void *outs[], const int ld_outs[],
                              const void *x, const struct pl_weight *ws[],
                              const struct pl_weight *biases[], int n)
{
    PROF(be, "matmul_group %d x %lld n=%d", n_mats, n_mats > 0 ? (long long)ws[0]->cols : 0LL, n);
    pl_cuda_matmul_group_run(be, cb(be)->mm, n_mats, outs, ld_outs, x, ws, biases, n);
}

static void cuda_gate_up_act(struct pl_backend *be, void *out, const void *x,
                             const struct pl_weight *wg, const struct pl_weight *wu,
                             const struct pl_weight *bg, const struct pl_weight *bu, int n, int dim,
                             bool gelu_tanh)
{
    PROF(be, "gate_up_%s %dx%lld n=%d", gelu_tanh ? "gelu" : "silu", dim, (long long)wg->cols, n);
    pl_cuda_gate_up_act_run(be, cb(be)->mm, out, x, wg, wu, bg, bu, n, dim, gelu_tanh);
}

/* The kernels' rope parameters; false (the backend failed with the reason) when the rope
 * needs per-token sequence lengths the caller did not give. */
static bool cuk_rope_of(struct pl_backend *be, const struct pl_rope *rope,
                        const int32_t *seq_lens, struct pl_cuk_rope *r)
{
    if ((rope->dyn_original_max > 0 || rope->long_original_max > 0) && !seq_lens) {
        pl_cuda_fail(be, "cuda rope: dynamic NTK and longrope need per-token sequence lengths");
        return false;
    }
    *r = (struct pl_cuk_rope){
        .rot_dim = rope->rot_dim,
        .inv_freq = rope->inv_freq,
        .attn_scale = rope->attn_scale,
        .pos_scale = rope->pos_scale,
        .dyn_original_max = rope->dyn_original_max,
        .dyn_factor = rope->dyn_factor,
        .dyn_theta = rope->dyn_theta,
        .long_original_max = rope->long_original_max,
        .long_inv_freq = rope->long_inv_freq,
    };
    return true;
}

static void cuda_rope(struct pl_backend *be, void *q, void *k, const int32_t *positions,
                      const int32_t *seq_lens, int n, int n_heads, int n_kv_heads, int head_dim,
                      const struct pl_rope *rope)
{
    struct pl_cuk_rope r;
    if (!cuk_rope_of(be, rope, seq_lens, &r))
        return;
    PROF(be, "rope");
    check_launch(be, "rope", (cb(be)->f32 ? pl_cuk_rope_f32 : pl_cuk_rope)(
                                 st(be), q, k, positions, seq_lens, n, n_heads, n_kv_heads,
                                 head_dim, r));
}

static void cuda_silu_mul(struct pl_backend *be, void *out, const void *gate, const void *up,
                          int n, int dim)
{
    PROF(be, "silu_mul");
    check_launch(be, "silu_mul", (cb(be)->f32 ? pl_cuk_silu_mul_f32 : pl_cuk_silu_mul)(
                                     st(be), out, gate, up, (int64_t)n * dim));
}

static void cuda_gelu_tanh_mul(struct pl_backend *be, void *out, const void *gate, const void *up,
                               int n, int dim)
{
    PROF(be, "gelu_tanh_mul");
    check_launch(be, "gelu_tanh_mul",
                 (cb(be)->f32 ? pl_cuk_gelu_tanh_mul_f32 : pl_cuk_gelu_tanh_mul)(
                     st(be), out, gate, up, (int64_t)n * dim));
}

static void cuda_scale(struct pl_backend *be, void *x, size_t n, float s)
{
    PROF(be, "scale");
    check_launch(be, "scale",
                 (cb(be)->f32 ? pl_cuk_scale_f32 : pl_cuk_scale)(st(be), x, (int64_t)n, s));
}

static void cuda_softcap(struct pl_backend *be, float *x, size_t n, float cap)
{
    PROF(be, "softcap");
    check_launch(be, "softcap", pl_cuk_softcap(st(be), x, (int64_t)n, cap));
}

static void cuda_store_kv(struct pl_backend *be, void *k_cache, void *v_cache, const void *k,
                          const void *v, const int32_t *slot_mapping, int n, int kv_dim)
{
    struct cuda_backend *c = cb(be);
    if (c->kv_fp8) { /* as the CPU reference: x times the reciprocal computed in fp32 */
        PROF(be, "store_kv fp8");
        check_launch(be, "store_kv (fp8)",
                     pl_cuk_store_kv_f8(st(be), k_cache, v_cache, k, v, slot_mapping, n, kv_dim,
                                        1.0f / c->k_scale, 1.0f / c->v_scale));
        return;
    }
    size_t row = (size_t)kv_dim * (c->f32 ? 4 : 2);
    PROF(be, "store_kv");
    check_launch(be, "store_kv", pl_cuk_copy_rows(st(be), k_cache, slot_mapping, k, NULL, n, row));
    check_launch(be, "store_kv", pl_cuk_copy_rows(st(be), v_cache, slot_mapping, v, NULL, n, row));
}

/* The bf16 table's norm_add_norm: one launch (kernels.h), or the two rmsnorm launches it
 * stands for where the fused kernel does not take the shape. */
static void cuda_norm_add_norm(struct pl_backend *be, void *out, void *residual, void *h,
                               const struct pl_weight *w_post, const struct pl_weight *w_pre,
                               int n_rows, int dim, float eps)
{
    if (cb(be)->no_fuse || w_post->dtype != w_pre->dtype || dim % 8 != 0 ||
        (((uintptr_t)out | (uintptr_t)residual | (uintptr_t)h) & 15u) != 0) {
        cuda_rmsnorm(be, h, NULL, h, w_post, n_rows, dim, eps);
        cuda_rmsnorm(be, out, residual, h, w_pre, n_rows, dim, eps);
        return;
    }
    PROF(be, "norm_add_norm");
    check_launch(be, "norm_add_norm",
                 pl_cuk_norm_add_norm(st(be), out, residual, h, w_post->data, w_pre->data,
                                      (int)w_post->dtype, n_rows, dim, eps));
}

/* The bf16 table's qk_rope_store: one launch (kernels.h); an e4m3 cache or a shape the fused
 * kernel does not take runs the four ops it stands for. */
static void cuda_qk_rope_store(struct pl_backend *be, void *q, void *k, const void *v,
                               const struct pl_weight *q_norm, const struct pl_weight *k_norm,
                               float eps, const int32_t *positions, const int32_t *seq_lens, int n,
                               int n_heads, int n_kv_heads, int head_dim,
                               const struct pl_rope *rope, void *k_cache, void *v_cache,
                               const int32_t *slot_mapping)
{
    const bool norms = q_norm && k_norm;
    const bool fused = !cb(be)->no_fuse && !cb(be)->kv_fp8 && head_dim % 8 == 0 && head_dim <= 256 &&
                       (q_norm == NULL) == (k_norm == NULL) &&
                       (!norms || q_norm->dtype == k_norm->dtype) &&
                       rope->rot_dim > 0 && rope->rot_dim <= head_dim &&
                       (((uintptr_t)q | (uintptr_t)k | (uintptr_t)v | (uintptr_t)k_cache |
                         (uintptr_t)v_cache) & 15u) == 0;
    if (!fused) {
        if (q_norm)
            cuda_rmsnorm(be, q, NULL, q, q_norm, n * n_heads, head_dim, eps);
        if (k_norm)
            cuda_rmsnorm(be, k, NULL, k, k_norm, n * n_kv_heads, head_dim, eps);
        cuda_rope(be, q, k, positions, seq_lens, n, n_heads, n_kv_heads, head_dim, rope);
        cuda_store_kv(be, k_cache, v_cache, k, v, slot_mapping, n, n_kv_heads * head_dim);
        return;
    }
    struct pl_cuk_rope r;
    if (!cuk_rope_of(be, rope, seq_lens, &r))
        return;
    PROF(be, "qk_rope_store%s", norms ? " +norms" : "");
    check_launch(be, "qk_rope_store",
                 pl_cuk_qk_rope_store(st(be), q, k, v, norms ? q_norm->data : NULL,
                                      norms ? k_norm->data : NULL,
                                      norms ? (int)q_norm->dtype : 0, eps, positions, seq_lens, n,
                                      n_heads, n_kv_heads, head_dim, r, k_cache, v_cache,
                                      slot_mapping));
}

static void cuda_get_rows(struct pl_backend *be, void *out, const void *x, const int32_t *rows,
                          int n, int dim)
{
    PROF(be, "get_rows");
    check_launch(be, "get_rows", pl_cuk_copy_rows(st(be), out, NULL, x, rows, n,
                                                  (size_t)dim * (cb(be)->f32 ? 4 : 2)));
}

static void cuda_copy_blocks(struct pl_backend *be, void *k_cache, void *v_cache,
                             const int32_t *src_dst, int n_pairs, size_t block_bytes)
{
    check_launch(be, "copy_blocks",
                 pl_cuk_copy_blocks(st(be), k_cache, v_cache, src_dst, n_pairs, block_bytes));
}

static void cuda_copy_2d(struct pl_backend *be, void *dst, size_t dst_pitch, const void *src,
                         size_t src_pitch, size_t width, size_t height)
{
    if (width == 0 || height == 0)
        return;
    cudaError_t e = cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, width, height,
                                      cudaMemcpyDeviceToDevice, cb(be)->stream);
    if (e != cudaSuccess)
        pl_cuda_fail(be, "cuda copy_2d: %s", cudaGetErrorString(e));
}

static void cuda_fill(struct pl_backend *be, void *dst, enum pl_dtype dtype, size_t n,
                      uint64_t seed, float lo, float hi)
{
    if (dtype != PL_DTYPE_F32 && dtype != PL_DTYPE_F16 && dtype != PL_DTYPE_BF16) {
        pl_cuda_fail(be, "cuda fill: dtype %s is not supported", pl_dtype_name(dtype));
        return;
    }
    check_launch(be, "fill", pl_cuk_fill(st(be), dst, (int)dtype, n, seed, lo, hi));
}

/* ---- pinned staging and graphs ------------------------------------------------------- */

static void *cuda_host_alloc(struct pl_backend *be, size_t n_bytes)
{
    void *p = NULL;
    if (cudaHostAlloc(&p, n_bytes ? n_bytes : 64, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    return p;
}

static void cuda_host_free(struct pl_backend *be, void *p)
{
    if (p)
        cudaFreeHost(p);
}

static pl_status cuda_graph_begin(struct pl_backend *be)
{
    struct cuda_backend *c = cb(be);
    if (c->failed)
        return PL_STATUS_INTERNAL;
    /* thread-local: other threads (HTTP workers) may still call the CUDA runtime */
    pl_cuda_profile_flush(c->prof); /* no recorded events may be pending in a capture */
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        pl_cuda_fail(be, "cuda graph capture: %s", cudaGetErrorString(e));
        return PL_STATUS_INTERNAL;
    }
    c->capturing = true;
    return PL_STATUS_OK;
}

static pl_status cuda_graph_end(struct pl_backend *be, void **graph)
{
    struct cuda_backend *c = cb(be);
    *graph = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &g);
    c->capturing = false;
    if (e == cudaSuccess && !c->failed) {
        cudaGraphExec_t x = NULL;
        e = cudaGraphInstantiate(&x, g, 0);
        if (e == cudaSuccess)
            *graph = x;
    }
    if (g)
        cudaGraphDestroy(g);
    if (e != cudaSuccess)
        pl_cuda_fail(be, "cuda graph capture: %s", cudaGetErrorString(e));
    return status_of(be);
}

static pl_status cuda_graph_launch(struct pl_backend *be, void *graph)
{
    PROF(be, "decode graph replay");
    cudaError_t e = cudaGraphLaunch((cudaGraphExec_t)graph, cb(be)->stream);
    if (e != cudaSuccess)
        pl_cuda_fail(be, "cuda graph launch: %s", cudaGetErrorString(e));
    return status_of(be);
}

static void cuda_graph_free(struct pl_backend *be, void *graph)
{
    if (graph)
        cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

/* Splits of the decode context: about DECODE_CTAS_PER_SM CTAs per SM, each
 * split at least MIN_TOKENS_PER_SPLIT tokens of max_context_len, within the
 * partial scratch. Reads only host values (n_seqs, max_context_len), so a CUDA
 * graph captured with upper bounds keeps one split count for every replay;
 * the kernel divides each sequence's own context among the splits. */
static int decode_splits(const struct cuda_backend *c, const struct pl_attn_meta *m)
{
    int splits;
    if (c->forced_splits > 0) {
        splits = c->forced_splits;
    } else {
        int ctas = m->n_kv_heads * m->n_seqs;
        int by_sms = DECODE_CTAS_PER_SM * c->n_sms / ctas;
        int by_len = m->max_context_len / MIN_TOKENS_PER_SPLIT;
        splits = by_sms < by_len ? by_sms : by_len;
    }
    if (splits > MAX_SPLITS)
        splits = MAX_SPLITS;
    while (splits > 1 && pl_cuk_attention_partial_floats(m->n_seqs, m->n_heads, m->head_dim,
                                                         splits) * sizeof(float) > PARTIAL_BYTES)
        splits--;
    return splits < 1 ? 1 : splits;
}

static void cuda_attention(struct pl_backend *be, void *out, const void *q, const void *k_cache,
                           const void *v_cache, const struct pl_attn_meta *m)
{
    struct cuda_backend *c = cb(be);
    if (m->n_seqs <= 0 || m->n_tokens <= 0)
        return;
    if (m->n_kv_heads <= 0 || m->n_heads % m->n_kv_heads != 0 ||
        !pl_cuk_attention_supported(m->head_dim, m->n_heads / m->n_kv_heads)) {
        pl_cuda_fail(be, "cuda attention: head_dim %d with %d query heads per kv head is not "
                         "supported (head_dim must be a multiple of 8 in [8, 256], at most 16 "
                         "heads per group)",
                     m->head_dim, m->n_kv_heads > 0 ? m->n_heads / m->n_kv_heads : 0);
        return;
    }
    struct pl_cuk_attn a = {
        .out = out,
        .q = q,
        .k_cache = k_cache,
        .v_cache = v_cache,
        .cu_seqlens_q = m->cu_seqlens_q,
        .context_lens = m->context_lens,
        .block_tables = m->block_tables,
        .n_seqs = m->n_seqs,
        .max_blocks_per_seq = m->max_blocks_per_seq,
        .max_q_len = m->max_q_len,
        .max_context_len = m->max_context_len,
        .block_size = m->block_size,
        .n_heads = m->n_heads,
        .n_kv_heads = m->n_kv_heads,
        .head_dim = m->head_dim,
        .scale = m->scale,
        .window = m->window,
        .softcap = m->softcap,
        .kv_fp8 = c->kv_fp8,
        .k_scale = c->k_scale,
        .v_scale = c->v_scale,
    };
    if (c->f32) {
        PROF(be, "attention f32");
        check_launch(be, "attention (f32)", pl_cuk_attention_f32(st(be), &a));
        return;
    }
    /* decode rows whenever some sequence may have q_len == 1; prefill rows when
     * some sequence has more (each kernel skips the other's sequences) */
    if (m->n_tokens < m->n_seqs * m->max_q_len || m->max_q_len == 1) {
        PROF(be, "attention decode");
        check_launch(be, "attention (decode)",
                     pl_cuk_attention_decode(st(be), &a, decode_splits(c, m), c->partial));
    }
    if (m->max_q_len > 1) {
        PROF(be, "attention prefill");
        check_launch(be, "attention (prefill)", pl_cuk_attention_prefill(st(be), &a));
    }
}

/* ---- sampling ------------------------------------------------------------------------- */

/*
 * The sample op's buffers, grown (never shrunk) when a call needs more, so a steady state
 * allocates nothing: per row the kernel's parameters and result (pinned host staging and
 * device copies), and the rows' penalised tokens packed as one flat array of distinct ids
 * followed by their output counts (pinned and device), plus the kernel's pen_val scratch.
 * seen[vocab] (host) maps a token to 1 + its entry in the row being packed; it is all zero
 * between rows.
 */
struct cuda_sampling {
    int vocab;
    int32_t *seen;
    int cap_rows;
    struct pl_cuk_sample_row *h_rows, *d_rows;
    struct pl_cuk_sample_out *h_out, *d_out;
    size_t cap_pen;
    int32_t *h_pen, *d_pen; /* [2 * cap_pen]: ids, then counts */
    float *d_pen_val;       /* [cap_pen] */
    int cap_masks;          /* token masks (structured output) of as many rows */
    uint32_t *h_masks, *d_masks; /* [cap_masks][ceil(vocab / 32)] */
};

static void sampling_free(struct cuda_sampling *m)
{
    if (!m)
        return;
    free(m->seen);
    cudaFreeHost(m->h_rows);
    cudaFree(m->d_rows);
    cudaFreeHost(m->h_out);
    cudaFree(m->d_out);
    cudaFreeHost(m->h_pen);
    cudaFree(m->d_pen);
    cudaFree(m->d_pen_val);
    cudaFreeHost(m->h_masks);
    cudaFree(m->d_masks);
    free(m);
}

/* Makes room for n_rows rows and n_pen penalty entries over vocab tokens. */
static pl_status sampling_reserve(struct cuda_backend *c, int vocab, int n_rows, size_t n_pen,
                                  int n_masks, struct pl_err *err)
{
    if (!c->smp && !(c->smp = calloc(1, sizeof(*c->smp))))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cuda sample: out of memory");
    struct cuda_sampling *m = c->smp;
    cudaError_t e = cudaSuccess;
    if (m->vocab != vocab) {
        cudaFreeHost(m->h_masks);
        cudaFree(m->d_masks);
        m->h_masks = NULL, m->d_masks = NULL;
        m->cap_masks = 0;
        free(m->seen);
        m->seen = calloc((size_t)vocab, sizeof(int32_t));
        m->vocab = m->seen ? vocab : 0;
        if (!m->seen)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "cuda sample: out of memory");
    }
    if (n_rows > m->cap_rows) {
        int cap = n_rows > 2 * m->cap_rows ? n_rows : 2 * m->cap_rows;
        cudaFreeHost(m->h_rows);
        cudaFree(m->d_rows);
        cudaFreeHost(m->h_out);
        cudaFree(m->d_out);
        m->h_rows = NULL, m->d_rows = NULL, m->h_out = NULL, m->d_out = NULL;
        m->cap_rows = 0;
        size_t rb = sizeof(*m->h_rows) * (size_t)cap, ob = sizeof(*m->h_out) * (size_t)cap;
        if ((e = cudaMallocHost((void **)&m->h_rows, rb)) == cudaSuccess &&
            (e = cudaMalloc((void **)&m->d_rows, rb)) == cudaSuccess &&
            (e = cudaMallocHost((void **)&m->h_out, ob)) == cudaSuccess &&
            (e = cudaMalloc((void **)&m->d_out, ob)) == cudaSuccess)
            m->cap_rows = cap;
    }
    if (e == cudaSuccess && n_pen > m->cap_pen) {
        size_t cap = n_pen > 2 * m->cap_pen ? n_pen : 2 * m->cap_pen;
        cudaFreeHost(m->h_pen);
        cudaFree(m->d_pen);
        cudaFree(m->d_pen_val);
        m->h_pen = NULL, m->d_pen = NULL, m->d_pen_val = NULL;
        m->cap_pen = 0;
        if ((e = cudaMallocHost((void **)&m->h_pen, 2 * sizeof(int32_t) * cap)) == cudaSuccess &&
            (e = cudaMalloc((void **)&m->d_pen, 2 * sizeof(int32_t) * cap)) == cudaSuccess &&
            (e = cudaMalloc((void **)&m->d_pen_val, sizeof(float) * cap)) == cudaSuccess)
            m->cap_pen = cap;
    }
    if (e == cudaSuccess && n_masks > m->cap_masks) {
        int cap = n_masks > 2 * m->cap_masks ? n_masks : 2 * m->cap_masks;
        size_t bytes = (size_t)cap * ((size_t)vocab + 31) / 32 * sizeof(uint32_t);
        cudaFreeHost(m->h_masks);
        cudaFree(m->d_masks);
        m->h_masks = NULL, m->d_masks = NULL;
        m->cap_masks = 0;
        if ((e = cudaMallocHost((void **)&m->h_masks, bytes)) == cudaSuccess &&
            (e = cudaMalloc((void **)&m->d_masks, bytes)) == cudaSuccess)
            m->cap_masks = cap;
    }
    if (e != cudaSuccess) {
        cudaGetLastError(); /* out of memory is reported here, not sticky */
        return pl_err_set(err, PL_STATUS_NO_MEMORY,
                          "cuda sample: cannot allocate buffers for %d rows, %zu penalised tokens "
                          "(%s)",
                          n_rows, n_pen, cudaGetErrorString(e));
    }
    return PL_STATUS_OK;
}

static pl_status check_ids(const int32_t *ids, int n, int vocab, int r, const char *what,
                           struct pl_err *err)
{
    if (n < 0 || (n > 0 && !ids))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "cuda sample row %d: bad %s", r, what);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "cuda sample row %d: %s[%d] = %d is outside the vocabulary (%d)", r,
                              what, i, (int)ids[i], vocab);
    return PL_STATUS_OK;
}

/* Appends row r's distinct penalised tokens (with their output counts) at m->h_pen[*n]. */
static void pack_penalties(struct cuda_sampling *m, const struct pl_sampler_row *row, bool rep,
                           size_t *n)
{
    size_t off = *n, cap = m->cap_pen;
    int32_t *ids = m->h_pen, *cnt = m->h_pen + cap;
    for (int pass = 0; pass < 2; pass++) {
        const int32_t *src = pass ? row->output_ids : row->prompt_ids;
        int ns = pass ? row->n_output : row->n_prompt;
        if (pass == 0 && !rep)
            continue; /* prompt tokens matter only to the repetition penalty */
        for (int i = 0; i < ns; i++) {
            int32_t id = src[i];
            if (!m->seen[id]) {
                ids[*n] = id;
                cnt[*n] = 0;
                m->seen[id] = (int32_t)(*n - off) + 1;
                (*n)++;
            }
            if (pass == 1)
                cnt[off + (size_t)m->seen[id] - 1]++;
        }
    }
    for (size_t j = off; j < *n; j++)
        m->seen[ids[j]] = 0;
}

static pl_status cuda_sample(struct pl_backend *be, const float *logits, int n_logits, int vocab,
                             const int32_t *row_map, int n_rows, const struct pl_sampler_row *rows,
                             const double *uniforms, struct pl_sample_result *out,
                             struct pl_err *err)
{
    _Static_assert(PL_CUK_MAX_LOGPROBS == PL_MAX_LOGPROBS, "logprob array sizes");
    struct cuda_backend *c = cb(be);
    if (n_rows <= 0)
        return status_of(be);
    if (vocab < 1 || vocab > PL_CUK_SAMPLE_MAX_VOCAB)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "cuda sample: a vocabulary of %d tokens (at most %d)", vocab,
                          PL_CUK_SAMPLE_MAX_VOCAB);
    size_t n_pen_max = 0;
    int n_masks = 0;
    for (int r = 0; r < n_rows; r++) {
        const struct pl_sampler_row *row = &rows[r];
        const struct pl_sampling_params *p = row->params;
        if (!p || !pl_sampler_row_is_basic(row))
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "cuda sample row %d: %s", r,
                              p ? "needs allowed_token_ids, logit_bias or min_tokens (host only)"
                                : "no params");
        if (row_map[r] < 0 || row_map[r] >= n_logits)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "cuda sample: row %d reads logits row %d of %d", r,
                              (int)row_map[r], n_logits);
        bool rep = p->repetition_penalty != 1.0f;
        bool fp = p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
        pl_status ps = PL_STATUS_OK;
        if (rep)
            ps = check_ids(row->prompt_ids, row->n_prompt, vocab, r, "prompt_ids", err);
        if (ps == PL_STATUS_OK && (rep || fp))
            ps = check_ids(row->output_ids, row->n_output, vocab, r, "output_ids", err);
        if (ps != PL_STATUS_OK)
            return ps;
        n_pen_max += (size_t)(rep ? row->n_prompt : 0) + (size_t)(rep || fp ? row->n_output : 0);
        n_masks += row->token_mask != NULL;
    }
    pl_status ps = sampling_reserve(c, vocab, n_rows, n_pen_max > 0 ? n_pen_max : 1, n_masks, err);
    if (ps != PL_STATUS_OK)
        return ps;
    struct cuda_sampling *m = c->smp;
    size_t n_pen = 0, W = ((size_t)vocab + 31) / 32;
    int n_mask_rows = 0;
    for (int r = 0; r < n_rows; r++) {
        const struct pl_sampler_row *row = &rows[r];
        const struct pl_sampling_params *p = row->params;
        bool rep = p->repetition_penalty != 1.0f;
        bool fp = p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
        struct pl_cuk_sample_row *k = &m->h_rows[r];
        size_t off = n_pen;
        if (rep || fp)
            pack_penalties(m, row, rep, &n_pen);
        int nl = p->logprobs;
        if (nl > PL_MAX_LOGPROBS)
            nl = PL_MAX_LOGPROBS;
        if (nl > vocab)
            nl = vocab;
        *k = (struct pl_cuk_sample_row){
            .logits_row = row_map[r],
            .temperature = p->temperature,
            .top_k = p->top_k > 0 && p->top_k < vocab ? p->top_k : 0,
            .top_p = p->top_p,
            .min_p = p->min_p,
            .rep = p->repetition_penalty,
            .freq = p->frequency_penalty,
            .pres = p->presence_penalty,
            .pen_off = (int32_t)off,
            .pen_n = (int32_t)(n_pen - off),
            .n_logprobs = nl < 0 ? -1 : nl,
            .mask_row = row->token_mask ? n_mask_rows : -1,
            .u = uniforms[r],
        };
        if (row->token_mask)
            memcpy(m->h_masks + (size_t)n_mask_rows++ * W, row->token_mask,
                   W * sizeof(uint32_t));
    }
    cudaStream_t s = c->stream;
    cudaError_t e = cudaMemcpyAsync(m->d_rows, m->h_rows, sizeof(*m->h_rows) * (size_t)n_rows,
                                    cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess && n_pen > 0) {
        /* ids, then the counts moved up against them: one copy of 2 * n_pen entries */
        memmove(m->h_pen + n_pen, m->h_pen + m->cap_pen, sizeof(int32_t) * n_pen);
        e = cudaMemcpyAsync(m->d_pen, m->h_pen, 2 * sizeof(int32_t) * n_pen,
                            cudaMemcpyHostToDevice, s);
    }
    if (e == cudaSuccess && n_mask_rows > 0)
        e = cudaMemcpyAsync(m->d_masks, m->h_masks, (size_t)n_mask_rows * W * sizeof(uint32_t),
                            cudaMemcpyHostToDevice, s);
    if (e == cudaSuccess)
        e = (cudaError_t)pl_cuk_sample(st(be), logits, vocab, m->d_rows, n_rows, m->d_pen,
                                       m->d_pen + n_pen, m->d_pen_val, m->d_masks, m->d_out);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(m->h_out, m->d_out, sizeof(*m->h_out) * (size_t)n_rows,
                            cudaMemcpyDeviceToHost, s);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(s);
    if (e != cudaSuccess) {
        pl_cuda_fail(be, "cuda sample: %s", cudaGetErrorString(e));
        return pl_err_set(err, PL_STATUS_INTERNAL, "cuda sample: %s", cudaGetErrorString(e));
    }
    for (int r = 0; r < n_rows; r++) {
        const struct pl_cuk_sample_out *o = &m->h_out[r];
        struct pl_sample_result *res = &out[r];
        res->token_id = o->token;
        res->logprob = o->logprob;
        res->rank = o->rank;
        res->n_top = o->n_top;
        memcpy(res->top_ids, o->top_ids, sizeof(int32_t) * (size_t)o->n_top);
        memcpy(res->top_logprobs, o->top_lp, sizeof(float) * (size_t)o->n_top);
    }
    return status_of(be);
}

/* ---- the KV cache's dtype ------------------------------------------------------------ */

/* bf16 (the float32 mode: fp32) or, in the bf16 mode, e4m3 with vLLM's scales. */
static pl_status cuda_set_kv_dtype(struct pl_backend *be, enum pl_dtype dtype, float k_scale,
                                   float v_scale)
{
    struct cuda_backend *c = cb(be);
    if (dtype != be->ops->act_dtype && (dtype != PL_DTYPE_F8_E4M3 || c->f32))
        return PL_STATUS_UNSUPPORTED;
    if (!(k_scale > 0.0f) || !(v_scale > 0.0f) || !isfinite(k_scale) || !isfinite(v_scale))
        return PL_STATUS_INVALID_ARGUMENT;
    c->kv_fp8 = dtype == PL_DTYPE_F8_E4M3;
    c->k_scale = k_scale;
    c->v_scale = v_scale;
    return PL_STATUS_OK;
}

static enum pl_dtype cuda_kv_dtype(struct pl_backend *be)
{
    return cb(be)->kv_fp8 ? PL_DTYPE_F8_E4M3 : be->ops->act_dtype;
}

/* ---- creation ------------------------------------------------------------------------- */

static void cuda_destroy(struct pl_backend *be)
{
    struct cuda_backend *c = cb(be);
    if (c->stream)
        cudaStreamSynchronize(c->stream);
    pl_cuda_profile_free(c->prof);
    pl_cuda_matmul_free(c->mm);
    sampling_free(c->smp);
    cudaFree(c->partial);
    if (c->moe_counts)
        cudaFreeHost(c->moe_counts);
    for (int i = 0; i < c->n_chunks; i++) /* blocks their owners did not free */
        cudaFree(c->chunks[i].base);
    free(c->chunks);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    free(c);
}

static pl_status cuda_mem_info_op(struct pl_backend *be, size_t *free_bytes, size_t *total_bytes);
static const char *cuda_last_error_op(struct pl_backend *be);
static pl_status cuda_check_model(struct pl_backend *be, const struct pl_model_needs *n,
                                  struct pl_err *err);

/* The op table's entries shared by both modes (the bf16 default and the float32 mode). */
#define CUDA_OPS_COMMON \
    .version = PL_BACKEND_OPS_VERSION, \
    .name = "cuda", \
    .destroy = cuda_destroy, \
    .alloc = cuda_alloc, \
    .free = cuda_free, \
    .map_weight = cuda_map_weight, \
    .unmap_weight = cuda_unmap_weight, \
    .upload = cuda_upload, \
    .download = cuda_download, \
    .sync = cuda_sync, \
    .supports = cuda_supports, \
    .embed = cuda_embed, \
    .rmsnorm = cuda_rmsnorm, \
    .matmul = cuda_matmul, \
    .rope = cuda_rope, \
    .silu_mul = cuda_silu_mul, \
    .store_kv = cuda_store_kv, \
    .attention = cuda_attention, \
    .get_rows = cuda_get_rows, \
    .logits = cuda_logits, \
    .copy_blocks = cuda_copy_blocks, \
    .fill = cuda_fill, \
    .host_alloc = cuda_host_alloc, \
    .host_free = cuda_host_free, \
    .graph_begin = cuda_graph_begin, \
    .graph_end = cuda_graph_end, \
    .graph_launch = cuda_graph_launch, \
    .graph_free = cuda_graph_free, \
    .sample = cuda_sample, \
    .copy_2d = cuda_copy_2d, \
    .gelu_tanh_mul = cuda_gelu_tanh_mul, \
    .scale = cuda_scale, \
    .softcap = cuda_softcap, \
    .moe = pl_cuda_moe, \
    .set_kv_dtype = cuda_set_kv_dtype, \
    .kv_dtype = cuda_kv_dtype, \
    .device_memory = true, \
    .mem_info = cuda_mem_info_op, \
    .last_error = cuda_last_error_op, \
    .check_model = cuda_check_model,

static const struct pl_backend_ops cuda_ops = {
    CUDA_OPS_COMMON
    .act_dtype = PL_DTYPE_BF16,
    .matmul_group = cuda_matmul_group,
    .gate_up_act = cuda_gate_up_act,
    .qk_rope_store = cuda_qk_rope_store,
    .norm_add_norm = cuda_norm_add_norm,
};

/* The float32 mode's table: the same ops, fp32 activations; no fused small-batch products
 * (their kernels are bf16), so callers use matmul and silu_mul. */
static const struct pl_backend_ops cuda_ops_f32 = {
    CUDA_OPS_COMMON
    .act_dtype = PL_DTYPE_F32,
};

pl_status pl_backend_cuda_new(int device, struct pl_backend **out, struct pl_err *err)
{
    return pl_backend_cuda_new_act(device, PL_DTYPE_BF16, out, err);
}

pl_status pl_backend_cuda_new_act(int device, enum pl_dtype act, struct pl_backend **out,
                                  struct pl_err *err)
{
    int n = pl_cuda_device_count();
    if (n <= 0)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "cuda backend: no CUDA device is available");
    if (device < 0 || device >= n)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "cuda backend: device %d does not exist (%d present)", device, n);
    struct cuda_backend *c = calloc(1, sizeof(*c));
    if (!c)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cuda backend: out of memory");
    c->cur_chunk = -1;
    if (act != PL_DTYPE_BF16 && act != PL_DTYPE_F32) {
        free(c);
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "cuda backend: activations in %s are not supported (bfloat16, float32)",
                          pl_dtype_torch_name(act));
    }
    c->f32 = act == PL_DTYPE_F32;
    c->k_scale = c->v_scale = 1.0f;
    c->base.ops = c->f32 ? &cuda_ops_f32 : &cuda_ops;
    c->device = device;
    struct cudaDeviceProp prop;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess)
        e = cudaGetDeviceProperties(&prop, device);
    if (e == cudaSuccess) {
        c->n_sms = prop.multiProcessorCount;
        snprintf(c->device_name, sizeof(c->device_name), "%s", prop.name);
        /* programmatic dependent launch of the decode path's kernels (kernels/pdl.cuh, Hopper
         * and later) and the fused kernels: PAGELLM_CUDA_PDL / PAGELLM_CUDA_FUSE, else the
         * defaults above */
        struct pl_debug_env dbg;
        pl_debug_env_read(&dbg);
        const bool pdl = dbg.cuda_pdl >= 0 ? dbg.cuda_pdl != 0 : PL_CUDA_PDL_DEFAULT;
        pl_cuk_set_pdl(prop.major >= 9 && pdl);
        c->no_fuse = !(dbg.cuda_fuse >= 0 ? dbg.cuda_fuse != 0 : PL_CUDA_FUSE_DEFAULT);
        e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    }
    if (e == cudaSuccess)
        e = (cudaError_t)pl_cuk_attention_init();
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&c->partial, PARTIAL_BYTES);
    if (e == cudaSuccess)
        e = cudaHostAlloc((void **)&c->moe_counts, sizeof(int32_t) * PL_CUDA_MOE_MAX_EXPERTS,
                          cudaHostAllocDefault);
    if (e != cudaSuccess) {
        pl_status st_ = pl_err_set(err, PL_STATUS_INTERNAL, "cuda backend: device %d: %s", device,
                                   cudaGetErrorString(e));
        cudaGetLastError();
        cuda_destroy(&c->base);
        return st_;
    }
    c->prof = pl_cuda_profile_new(c->stream);
    pl_status s = pl_cuda_matmul_new(c->stream, &c->mm, err);
    if (s != PL_STATUS_OK) {
        cuda_destroy(&c->base);
        return s;
    }
    *out = &c->base;
    return PL_STATUS_OK;
}

void *pl_cuda_stream_of(struct pl_backend *be) { return cb(be)->stream; }

bool pl_cuda_capturing(struct pl_backend *be)
{
    enum cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    return cudaStreamIsCapturing(cb(be)->stream, &st) == cudaSuccess &&
           st != cudaStreamCaptureStatusNone;
}

int32_t *pl_cuda_moe_host_counts(struct pl_backend *be) { return cb(be)->moe_counts; }

static pl_status cuda_mem_info_op(struct pl_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    return pl_backend_cuda_mem_info(be, free_bytes, total_bytes);
}

static const char *cuda_last_error_op(struct pl_backend *be) { return cb(be)->err_msg; }

/* The shapes and ops the kernels take (kernels.h); everything else is refused at load,
 * naming what is missing, instead of failing at the first forward. */
static pl_status cuda_check_model(struct pl_backend *be, const struct pl_model_needs *n,
                                  struct pl_err *err)
{
    int group = n->n_kv_heads > 0 ? n->n_heads / n->n_kv_heads : 0;
    if (n->n_kv_heads <= 0 || n->n_heads % n->n_kv_heads != 0 ||
        !pl_cuk_attention_supported(n->head_dim, group))
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "attention with head_dim %d and %d query heads per kv head is not "
                          "supported by the CUDA kernels (head_dim must be a multiple of 8 in "
                          "[8, 256], at most 16 heads per group)",
                          n->head_dim, group);
    return PL_STATUS_OK;
}

pl_status pl_backend_cuda_mem_info(struct pl_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    cudaError_t e = cudaMemGetInfo(free_bytes, total_bytes);
    if (e != cudaSuccess) {
        pl_cuda_fail(be, "cudaMemGetInfo: %s", cudaGetErrorString(e));
        return PL_STATUS_INTERNAL;
    }
    return PL_STATUS_OK;
}

const char *pl_backend_cuda_last_error(const struct pl_backend *be)
{
    return ((const struct cuda_backend *)be)->err_msg;
}

const char *pl_backend_cuda_device_name(const struct pl_backend *be)
{
    return ((const struct cuda_backend *)be)->device_name;
}

void pl_backend_cuda_set_decode_splits(struct pl_backend *be, int n_splits)
{
    cb(be)->forced_splits = n_splits > 0 ? n_splits : 0;
}

void pl_backend_cuda_set_fused(struct pl_backend *be, bool on)
{
    cb(be)->no_fuse = !on;
}

bool pl_backend_cuda_fused(const struct pl_backend *be)
{
    return !((const struct cuda_backend *)be)->no_fuse;
}

void pl_backend_cuda_set_fp8_epilogue(struct pl_backend *be, bool on)
{
    pl_cuda_matmul_set_fp8_epilogue(cb(be)->mm, on);
}

long pl_backend_cuda_fp8_epilogue_count(const struct pl_backend *be)
{
    return pl_cuda_matmul_fp8_epilogue_count(((const struct cuda_backend *)be)->mm);
}

void pl_backend_cuda_set_q4_gemm(struct pl_backend *be, int max_n, int splits)
{
    pl_cuda_matmul_set_q4_gemm(cb(be)->mm, max_n, splits);
}

void *pl_backend_cuda_stream(struct pl_backend *be) { return cb(be)->stream; }
int pl_backend_cuda_device(const struct pl_backend *be)
{
    return ((const struct cuda_backend *)be)->device;
}
