/*
 * cpu_backend.c -- the CPU backend: the readable specification of every op.
 *
 * Owns: struct cpu_backend (the op table, a persistent thread pool, the
 * kernels' ISA and matmul mode with the BF16 mode's scratch) and every op of struct pl_backend_ops except
 * the matmul kernels (cpu_matmul.c). Activations and the KV cache are fp32
 * host memory; weights are host memory in F32, F16 or BF16.
 *
 * Memory placement (decode streams every weight once per step, so where the
 * bytes live decides how much of the memory bandwidth a step gets): allocations
 * of HUGE_MIN_BYTES or more are 2 MiB-aligned and madvised for transparent huge
 * pages, and map_weight copies checkpoint weights out of the file mapping into
 * such memory (PAGELLM_CPU_WEIGHTS=copy, the default) while the copies stay
 * within half the free memory at creation; past that, or with
 * PAGELLM_CPU_WEIGHTS=mmap, it borrows the mapping (4 KiB page-cache pages:
 * one TLB entry and one stop of the hardware prefetchers per 4 KiB).
 *
 * Each op is written to be read first: one loop nest that says what it
 * computes, split over threads by rows (contiguous ranges of tokens; for
 * attention, (token, head) pairs handed out dearest first from a shared
 * counter). The per-row vector loops (rmsnorm, residual add, silu/gelu_tanh,
 * rope's rotation, attention's p*v) are cpu_vec.c's, in the backend's ISA;
 * attention's q.k is cpu_matmul.c's pl_cpu_dot. Every output element is
 * computed by exactly one thread, in an order that depends only on its row
 * and the ISA, never on the batch or the thread split, so results are
 * batch-invariant and deterministic within one ISA.
 * Ops run synchronously: sync() has nothing to wait for.
 */
#include "backend/cpu/cpu_backend.h"

#include "core/sampler.h"
#include "util/debug_env.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Transparent huge pages for large buffers (see the header comment). */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN_BYTES ((size_t)4 << 20)

struct cpu_backend {
    struct pl_backend base; /* must be first */
    struct pl_threadpool *pool;
    enum pl_cpu_isa isa;        /* the kernels in use (cpu_backend.h) */
    enum pl_cpu_isa isa_cap;    /* PAGELLM_CPU_ISA: the most set_simd turns on */
    enum pl_cpu_matmul_mode matmul_mode;
    uint16_t **mm_scratch;      /* [pool threads] PL_CPU_MM_SCRATCH_BYTES: the BF16 mode's
                                   bf16 activations (NULL without AVX512-BF16) */
    float **q4_rows;            /* [pool threads] PL_CPU_Q4_TILE_ROWS x q4_cols floats, made at
                                   the first product of a packed int4 weight, grown for a
                                   wider one (pl_cpu_mm) */
    int64_t q4_cols;
    struct pl_sampler *sampler; /* sample()'s scratch, made at the first call for its vocab */
    int sampler_vocab;
    /* map_weight: copies made (freed by unmap_weight), their bytes and the budget */
    bool copy_weights;
    size_t copy_budget, copied_bytes;
    void **copies; /* [n_copies] */
    size_t n_copies, cap_copies;
    bool kv_fp8;                /* the KV cache holds e4m3 (set_kv_dtype), else fp32 */
    float k_scale, v_scale;     /* fp8: stored = e4m3(x / scale), read = stored * scale */
};

static struct cpu_backend *cpu(struct pl_backend *be) { return (struct cpu_backend *)be; }

/* Rows below which an elementwise op is not worth waking the pool. */
#define PAR_MIN_ELEMS 16384

/* ---- a parallel-for over rows --------------------------------------------------------- */

struct par_rows {
    void (*fn)(void *ctx, int r0, int r1);
    void *ctx;
    int n;
};

static void par_rows_worker(void *ctx, int ith, int nth)
{
    struct par_rows *p = ctx;
    int r0 = (int)((int64_t)p->n * ith / nth);
    int r1 = (int)((int64_t)p->n * (ith + 1) / nth);
    if (r0 < r1)
        p->fn(p->ctx, r0, r1);
}

/* Runs fn over [0, n) split in contiguous ranges; inline when the work is small. */
static void parallel_rows(struct cpu_backend *be, int n, size_t elems_per_row,
                          void (*fn)(void *ctx, int r0, int r1), void *ctx)
{
    if (n <= 0)
        return;
    if ((size_t)n * elems_per_row < PAR_MIN_ELEMS || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    struct par_rows p = {fn, ctx, n};
    pl_threadpool_run(be->pool, par_rows_worker, &p);
}

/* ---- memory --------------------------------------------------------------------------- */

static void *cpu_alloc(struct pl_backend *be, size_t n_bytes)
{
    void *p = NULL;
    /* 64-byte alignment: whole cache lines for the kernels' vector loads; large
     * buffers on 2 MiB boundaries, so that whole huge pages cover them */
    const size_t align = n_bytes >= HUGE_MIN_BYTES ? HUGE_PAGE : 64;
    if (posix_memalign(&p, align, n_bytes ? n_bytes : 64) != 0)
        return NULL;
#ifdef MADV_HUGEPAGE
    if (align == HUGE_PAGE) /* advice only: without THP the memory is the same memory */
        madvise(p, n_bytes / HUGE_PAGE * HUGE_PAGE, MADV_HUGEPAGE);
#endif
    return p;
}

static void cpu_free(struct pl_backend *be, void *p) { free(p); }

/* A copy of host in huge-page memory while the budget allows; else the mapping itself
 * (borrowed: the caller's mapping must outlive its use). */
static void *cpu_map_weight(struct pl_backend *be, const void *host, size_t n_bytes)
{
    struct cpu_backend *c = cpu(be);
    if (!c->copy_weights || n_bytes < HUGE_MIN_BYTES || c->copied_bytes + n_bytes > c->copy_budget)
        return (void *)host;
    if (c->n_copies == c->cap_copies) {
        size_t cap = c->cap_copies ? 2 * c->cap_copies : 64;
        void **v = realloc(c->copies, sizeof(*v) * cap);
        if (!v)
            return (void *)host;
        c->copies = v;
        c->cap_copies = cap;
    }
    void *p = cpu_alloc(be, n_bytes);
    if (!p)
        return (void *)host;
    memcpy(p, host, n_bytes);
    c->copies[c->n_copies++] = p;
    c->copied_bytes += n_bytes;
    return p;
}

static void cpu_unmap_weight(struct pl_backend *be, void *p)
{
    struct cpu_backend *c = cpu(be);
    for (size_t i = c->n_copies; i-- > 0;) {
        if (c->copies[i] == p) {
            free(p);
            c->copies[i] = c->copies[--c->n_copies];
            return;
        }
    }
}

static pl_status cpu_copy(struct pl_backend *be, void *dst, const void *src, size_t n_bytes)
{
    if (n_bytes)
        memmove(dst, src, n_bytes);
    return PL_STATUS_OK;
}

static pl_status cpu_sync(struct pl_backend *be) { return PL_STATUS_OK; }

static bool cpu_supports(struct pl_backend *be, enum pl_op op, enum pl_dtype dtype)
{
    switch (op) {
    case PL_OP_MATMUL: /* packed int4 too (pl_cpu_matmul) */
        return dtype == PL_DTYPE_F32 || dtype == PL_DTYPE_F16 || dtype == PL_DTYPE_BF16 ||
               dtype == PL_DTYPE_Q4;
    case PL_OP_EMBED:
    case PL_OP_RMSNORM:
    case PL_OP_LOGITS:
    case PL_OP_FILL:
        return dtype == PL_DTYPE_F32 || dtype == PL_DTYPE_F16 || dtype == PL_DTYPE_BF16;
    case PL_OP_STORE_KV:
    case PL_OP_ATTENTION:
    case PL_OP_COPY_BLOCKS:
        return dtype == PL_DTYPE_F32 || dtype == PL_DTYPE_F8_E4M3; /* the KV cache's types */
    case PL_OP_ROPE:
    case PL_OP_SILU_MUL:
    case PL_OP_GET_ROWS:
    case PL_OP_GELU_TANH_MUL:
    case PL_OP_SCALE:
    case PL_OP_SOFTCAP:
        return dtype == PL_DTYPE_F32;
    case PL_OP_MOE: /* the experts' products are matmuls: packed int4 experts too */
        return dtype == PL_DTYPE_F32 || dtype == PL_DTYPE_F16 || dtype == PL_DTYPE_BF16 ||
               dtype == PL_DTYPE_Q4;
    case PL_OP_COUNT:
        break;
    }
    return false;
}

/* ---- embed ---------------------------------------------------------------------------- */

struct embed_job {
    float *out;
    const struct pl_weight *table;
    const int32_t *ids;
};

static void embed_rows(void *ctx, int r0, int r1)
{
    struct embed_job *j = ctx;
    size_t d = (size_t)j->table->cols;
    for (int i = r0; i < r1; i++) {
        if (j->ids[i] < 0) { /* a row another tensor-parallel rank holds */
            memset(j->out + (size_t)i * d, 0, sizeof(float) * d);
            continue;
        }
        size_t base = (size_t)j->ids[i] * d;
        for (size_t c = 0; c < d; c++)
            j->out[(size_t)i * d + c] = pl_dtype_get_f32(j->table->data, j->table->dtype, base + c);
    }
}

static void cpu_embed(struct pl_backend *be, void *out, const struct pl_weight *table,
                      const int32_t *ids, int n)
{
    struct embed_job j = {out, table, ids};
    parallel_rows(cpu(be), n, (size_t)table->cols, embed_rows, &j);
}

/* ---- rmsnorm -------------------------------------------------------------------------- */

struct rmsnorm_job {
    float *out;
    float *residual;
    const float *x;
    const struct pl_weight *w;
    int dim;
    float eps;
    enum pl_cpu_isa isa;
};

/* Per row: residual += x (when given), then out = w * norm(residual or x); the vector
 * loops are cpu_vec.c's. */
static void rmsnorm_rows(void *ctx, int r0, int r1)
{
    struct rmsnorm_job *j = ctx;
    size_t d = (size_t)j->dim;
    for (int r = r0; r < r1; r++) {
        const float *x = j->x + (size_t)r * d;
        float *out = j->out + (size_t)r * d;
        const float *src = x;
        if (j->residual) {
            float *res = j->residual + (size_t)r * d;
            pl_cpu_vec_add(j->isa, res, x, j->dim);
            src = res;
        }
        pl_cpu_vec_rmsnorm(j->isa, out, src, j->w, j->dim, j->eps);
    }
}

static void cpu_rmsnorm(struct pl_backend *be, void *out, void *residual, const void *x,
                        const struct pl_weight *w, int n_rows, int dim, float eps)
{
    struct rmsnorm_job j = {out, residual, x, w, dim, eps, cpu(be)->isa};
    parallel_rows(cpu(be), n_rows, (size_t)dim, rmsnorm_rows, &j);
}

/* ---- matmul / logits ------------------------------------------------------------------ */

static struct pl_cpu_mm mm_of(const struct cpu_backend *c)
{
    return (struct pl_cpu_mm){
        .isa = c->isa,
        .bf16_dot = c->matmul_mode == PL_CPU_MATMUL_BF16 && c->isa == PL_CPU_ISA_AVX512 &&
                    c->mm_scratch != NULL,
        .scratch = c->mm_scratch,
        .q4_rows = c->q4_rows,
        .q4_cols = c->q4_cols,
    };
}

/* The packed int4 tiles' scratch for weights of `cols` inputs: made (or grown) once, at the
 * first product that needs it; where memory is short the old one stays and such products
 * take the slower path without it (pl_cpu_matmul). */
static void q4_scratch(struct cpu_backend *c, int64_t cols)
{
    if (c->q4_rows && c->q4_cols >= cols)
        return;
    const int n = pl_threadpool_size(c->pool);
    if (!c->q4_rows && !(c->q4_rows = calloc((size_t)n, sizeof(*c->q4_rows))))
        return;
    const size_t bytes = sizeof(float) * PL_CPU_Q4_TILE_ROWS * (size_t)cols;
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, bytes) != 0)
            return; /* q4_cols unchanged: every buffer still holds the old width */
        free(c->q4_rows[i]);
        c->q4_rows[i] = p;
    }
    c->q4_cols = cols;
}

static void cpu_matmul(struct pl_backend *be, void *out, int ld_out, const void *x,
                       const struct pl_weight *w, const struct pl_weight *bias, int n)
{
    if (w->dtype == PL_DTYPE_Q4)
        q4_scratch(cpu(be), w->cols);
    struct pl_cpu_mm mm = mm_of(cpu(be));
    pl_cpu_matmul(cpu(be)->pool, &mm, out, ld_out, x, w, bias, n);
}

static void cpu_logits(struct pl_backend *be, float *out, const void *x, const struct pl_weight *w,
                       int n)
{
    if (w->dtype == PL_DTYPE_Q4)
        q4_scratch(cpu(be), w->cols);
    struct pl_cpu_mm mm = mm_of(cpu(be));
    pl_cpu_matmul(cpu(be)->pool, &mm, out, (int)w->rows, x, w, NULL, n);
}

/* ---- rope ----------------------------------------------------------------------------- */

struct rope_job {
    float *q, *k;
    const int32_t *positions;
    const int32_t *seq_lens;
    int n_heads, n_kv_heads, head_dim;
    const struct pl_rope *rope;
    enum pl_cpu_isa isa;
};

/* rope_rows' cos/sin tables on the stack: pairs of a token in pieces of this many. */
#define ROPE_MAX_HALF 512

/* The inverse frequency of pair i for a token: the table's, unless dynamic NTK
 * applies to this token's sequence length L (HF's dynamic rule: a larger base), or
 * longrope's long table for a sequence longer than its original length. */
static float rope_inv_freq(const struct pl_rope *r, int i, int32_t seq_len)
{
    if (r->long_original_max > 0 && seq_len > r->long_original_max) /* longrope */
        return r->long_inv_freq[i];
    if (r->dyn_original_max > 0 && seq_len > r->dyn_original_max) {
        double d = (double)r->rot_dim;
        double f = (double)r->dyn_factor;
        double base = (double)r->dyn_theta *
                      pow(f * (double)seq_len / (double)r->dyn_original_max - (f - 1.0),
                          d / (d - 2.0));
        float expo = (float)(2 * i) / (float)r->rot_dim;
        return (float)(1.0 / pow(base, (double)expo));
    }
    return r->inv_freq[i];
}

/* Every head's pairs (v[i0 + i], v[i0 + i + half]), i < m, rotated by (c[i], s[i]). */
static void rotate_heads(enum pl_cpu_isa isa, float *x, int n_heads, int head_dim, int half,
                         int i0, int m, const float *c, const float *s)
{
    for (int h = 0; h < n_heads; h++) {
        float *v = x + (size_t)h * (size_t)head_dim + i0;
        pl_cpu_vec_rotate(isa, v, v + half, c, s, m);
    }
}

static void rope_rows(void *ctx, int r0, int r1)
{
    struct rope_job *j = ctx;
    const struct pl_rope *r = j->rope;
    int half = r->rot_dim / 2;
    float cos_t[ROPE_MAX_HALF], sin_t[ROPE_MAX_HALF];
    for (int t = r0; t < r1; t++) {
        float pos = (float)j->positions[t] * r->pos_scale;
        int32_t L = j->seq_lens ? j->seq_lens[t] : 0;
        float *qt = j->q + (size_t)t * (size_t)j->n_heads * (size_t)j->head_dim;
        float *kt = j->k + (size_t)t * (size_t)j->n_kv_heads * (size_t)j->head_dim;
        /* pairs in pieces of the tables' size (any head size; each pair on its own) */
        for (int i0 = 0; i0 < half; i0 += ROPE_MAX_HALF) {
            const int m = half - i0 < ROPE_MAX_HALF ? half - i0 : ROPE_MAX_HALF;
            for (int i = 0; i < m; i++) {
                /* fp32, as HF computes freqs */
                float angle = pos * rope_inv_freq(r, i0 + i, L);
                cos_t[i] = cosf(angle) * r->attn_scale;
                sin_t[i] = sinf(angle) * r->attn_scale;
            }
            rotate_heads(j->isa, qt, j->n_heads, j->head_dim, half, i0, m, cos_t, sin_t);
            rotate_heads(j->isa, kt, j->n_kv_heads, j->head_dim, half, i0, m, cos_t, sin_t);
        }
    }
}

static void cpu_rope(struct pl_backend *be, void *q, void *k, const int32_t *positions,
                     const int32_t *seq_lens, int n, int n_heads, int n_kv_heads, int head_dim,
                     const struct pl_rope *rope)
{
    struct rope_job j = {q,       k,          positions, seq_lens, n_heads,
                         n_kv_heads, head_dim, rope,      cpu(be)->isa};
    parallel_rows(cpu(be), n, (size_t)(n_heads + n_kv_heads) * (size_t)rope->rot_dim * 4,
                  rope_rows, &j);
}

/* ---- silu_mul ------------------------------------------------------------------------- */

struct silu_job {
    float *out;
    const float *gate, *up;
    int dim;
    enum pl_cpu_isa isa;
};

/* One call per row (cpu_vec.c), so an element's result never depends on where a thread's
 * range starts. */
static void silu_rows(void *ctx, int r0, int r1)
{
    struct silu_job *j = ctx;
    for (int r = r0; r < r1; r++) {
        size_t at = (size_t)r * (size_t)j->dim;
        pl_cpu_vec_silu_mul(j->isa, j->out + at, j->gate + at, j->up + at, j->dim);
    }
}

static void cpu_silu_mul(struct pl_backend *be, void *out, const void *gate, const void *up,
                         int n, int dim)
{
    struct silu_job j = {out, gate, up, dim, cpu(be)->isa};
    parallel_rows(cpu(be), n, (size_t)dim, silu_rows, &j);
}

/* gelu_tanh(x) * up, PyTorch's gelu(approximate="tanh"), one row per call. */
static void gelu_rows(void *ctx, int r0, int r1)
{
    struct silu_job *j = ctx;
    for (int r = r0; r < r1; r++) {
        size_t at = (size_t)r * (size_t)j->dim;
        pl_cpu_vec_gelu_tanh_mul(j->isa, j->out + at, j->gate + at, j->up + at, j->dim);
    }
}

static void cpu_gelu_tanh_mul(struct pl_backend *be, void *out, const void *gate, const void *up,
                              int n, int dim)
{
    struct silu_job j = {out, gate, up, dim, cpu(be)->isa};
    parallel_rows(cpu(be), n, (size_t)dim, gelu_rows, &j);
}

static void cpu_scale(struct pl_backend *be, void *x, size_t n, float s)
{
    float *v = x;
    for (size_t i = 0; i < n; i++)
        v[i] *= s;
}

static void cpu_softcap(struct pl_backend *be, float *x, size_t n, float cap)
{
    for (size_t i = 0; i < n; i++)
        x[i] = tanhf(x[i] / cap) * cap;
}

/* ---- moe: the MoE block ---------------------------------------------------------------
 *
 * As transformers computes it, in products of the matmul kernels:
 *   1. the router's logits of every token in one product, then per token a softmax in
 *      fp32 and the top-k by probability (ties to the lower expert id, torch.topk's
 *      order), renormalised when norm_topk_prob;
 *   2. the (token, choice) pairs grouped by expert (a counting sort, tokens in order), the
 *      tokens' inputs gathered, and each chosen expert's gate and up as products over its
 *      tokens, the activation over all rows at once, then each expert's down product;
 *   3. per token, out = sum of weight * down output in its top-k order, then + sigmoid
 *      gate * the shared expert (Qwen2-MoE), itself three products over all tokens.
 * A product row's sum has the matmul's order whatever other rows share the product, so a
 * token's result does not depend on the batch; with the scalar kernels every sum is the
 * plain k-ascending loop of the reference. Products run threaded over the weight rows,
 * with packed int4 experts kept packed. */

struct moe_combine {
    float *out;
    const float *d, *ws, *sh_out, *sh_logit;
    const int32_t *row;
    int hid, k;
    enum pl_cpu_isa isa;
};

static void moe_combine_rows(void *ctx, int t0, int t1)
{
    const struct moe_combine *j = ctx;
    for (int t = t0; t < t1; t++) {
        float *o = j->out + (size_t)t * (size_t)j->hid;
        memset(o, 0, sizeof(float) * (size_t)j->hid);
        for (int i = 0; i < j->k; i++)
            pl_cpu_vec_axpy(j->isa, o, j->ws[t * j->k + i],
                            j->d + (size_t)j->row[t * j->k + i] * (size_t)j->hid, j->hid);
        if (j->sh_out) {
            const float gate = 1.0f / (1.0f + expf(-j->sh_logit[t]));
            pl_cpu_vec_axpy(j->isa, o, gate, j->sh_out + (size_t)t * (size_t)j->hid, j->hid);
        }
    }
}

/* act(gate) * up into gate: [n, dim] rows. */
static void moe_act(struct pl_backend *be, const struct pl_moe_args *a, float *g,
                    const float *u, int n, int dim)
{
    if (a->gelu_tanh)
        cpu_gelu_tanh_mul(be, g, g, u, n, dim);
    else
        cpu_silu_mul(be, g, g, u, n, dim);
}

static void cpu_moe(struct pl_backend *be, void *out, const void *x, int n, int hidden,
                    const struct pl_moe_args *a, void *scratch)
{
    if (n <= 0)
        return;
    const int E = a->n_experts, k = a->top_k, hid = hidden, I = a->inter;
    const int nk = n * k;
    /* the scratch, within pl_moe_scratch_elems(a, n) floats (its grouped layout's count) */
    float *probs = scratch;                          /* [n, E] */
    float *ws = probs + (size_t)n * E;               /* [n, k] the choices' weights */
    int32_t *ids = (int32_t *)(ws + nk);             /* [n, k] the choices' experts */
    int32_t *row = ids + nk;                         /* [n, k] each choice's grouped row */
    int32_t *src = row + nk;                         /* [n * k] each grouped row's token */
    int32_t *start = src + nk;                       /* [E + 1] each expert's first row */
    float *xg = (float *)(start + E + 1);            /* [n * k, hid] gathered inputs */
    float *g = xg + (size_t)nk * hid;                /* [n * k, I] gate, then act * up */
    float *u = g + (size_t)nk * I;                   /* [n * k, I] */
    float *d = u + (size_t)nk * I;                   /* [n * k, hid] down outputs */
    float *sg = d + (size_t)nk * hid;                /* [n, sh_inter] shared gate, up */
    float *su = sg + (size_t)n * a->sh_inter;
    float *so = su + (size_t)n * a->sh_inter;        /* [n, hid] shared output */
    float *sl = so + (size_t)n * hid;                /* [n] shared gate logits */
    assert((size_t)(sl + n - probs) <= pl_moe_scratch_elems(a, n));

    /* 1. routing */
    cpu_matmul(be, probs, E, x, a->router, NULL, n);
    for (int t = 0; t < n; t++) {
        float *p = probs + (size_t)t * E, mx = -FLT_MAX, sum = 0.0f, wsum = 0.0f;
        for (int e = 0; e < E; e++)
            mx = p[e] > mx ? p[e] : mx;
        for (int e = 0; e < E; e++)
            sum += (p[e] = expf(p[e] - mx));
        for (int e = 0; e < E; e++)
            p[e] /= sum;
        int32_t *id = ids + (size_t)t * k;
        float *w = ws + (size_t)t * k;
        for (int i = 0; i < k; i++) {
            int best = -1;
            for (int e = 0; e < E; e++) {
                bool taken = false;
                for (int q = 0; q < i && !taken; q++)
                    taken = id[q] == e;
                if (!taken && (best < 0 || p[e] > p[best]))
                    best = e;
            }
            id[i] = best;
            w[i] = p[best];
            wsum += p[best];
        }
        if (a->norm_topk_prob)
            for (int i = 0; i < k; i++)
                w[i] /= wsum;
    }

    /* 2. grouped by expert */
    memset(start, 0, sizeof(int32_t) * (size_t)(E + 1));
    for (int c = 0; c < nk; c++)
        start[ids[c] + 1]++;
    for (int e = 0; e < E; e++)
        start[e + 1] += start[e];
    for (int c = 0; c < nk; c++) { /* start[e] walks to the next expert's start, then back */
        row[c] = start[ids[c]]++;
        src[row[c]] = c / k;
    }
    for (int e = E; e > 0; e--)
        start[e] = start[e - 1];
    start[0] = 0;
    for (int r = 0; r < nk; r++)
        memcpy(xg + (size_t)r * hid, (const float *)x + (size_t)src[r] * hid,
               sizeof(float) * (size_t)hid);
#define EXPERT(w, e) ((const struct pl_weight *)((const char *)(w) + (size_t)(e) * a->expert_stride))
    for (int e = 0; e < E; e++) {
        const int r0 = start[e], m = start[e + 1] - r0;
        if (m == 0)
            continue;
        cpu_matmul(be, g + (size_t)r0 * I, I, xg + (size_t)r0 * hid, EXPERT(a->w_gate, e), NULL, m);
        cpu_matmul(be, u + (size_t)r0 * I, I, xg + (size_t)r0 * hid, EXPERT(a->w_up, e), NULL, m);
    }
    moe_act(be, a, g, u, nk, I);
    for (int e = 0; e < E; e++) {
        const int r0 = start[e], m = start[e + 1] - r0;
        if (m > 0)
            cpu_matmul(be, d + (size_t)r0 * hid, hid, g + (size_t)r0 * I, EXPERT(a->w_down, e),
                       NULL, m);
    }
#undef EXPERT

    /* 3. the shared expert, and each token's sum */
    if (a->sh_gate) {
        cpu_matmul(be, sl, 1, x, a->sh_router, NULL, n);
        cpu_matmul(be, sg, a->sh_inter, x, a->sh_gate, NULL, n);
        cpu_matmul(be, su, a->sh_inter, x, a->sh_up, NULL, n);
        moe_act(be, a, sg, su, n, a->sh_inter);
        cpu_matmul(be, so, hid, sg, a->sh_down, NULL, n);
    }
    struct moe_combine j = {.out = out, .d = d, .ws = ws, .sh_out = a->sh_gate ? so : NULL,
                            .sh_logit = sl, .row = row, .hid = hid, .k = k,
                            .isa = cpu(be)->isa};
    parallel_rows(cpu(be), n, (size_t)hid * (size_t)k, moe_combine_rows, &j);
}

static pl_status cpu_mem_info(struct pl_backend *be, size_t *free_bytes, size_t *total_bytes)
{
    long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || avail < 0 || page <= 0)
        return PL_STATUS_INTERNAL;
    *total_bytes = (size_t)pages * (size_t)page;
    *free_bytes = (size_t)avail * (size_t)page;
    return PL_STATUS_OK;
}

/* ---- store_kv / copy_blocks / get_rows ------------------------------------------------ */

/* An fp8 KV row: e4m3(x / scale), saturating at +-448 as vLLM's scaled conversion does. */
static void store_fp8_row(uint8_t *dst, const float *x, int n, float scale)
{
    const float inv = 1.0f / scale;
    for (int i = 0; i < n; i++)
        dst[i] = pl_f32_to_f8e4m3(x[i] * inv);
}

static void cpu_store_kv(struct pl_backend *be, void *k_cache, void *v_cache, const void *k,
                         const void *v, const int32_t *slot_mapping, int n, int kv_dim)
{
    const struct cpu_backend *c = cpu(be);
    if (c->kv_fp8) {
        for (int i = 0; i < n; i++) {
            int32_t slot = slot_mapping[i];
            if (slot < 0)
                continue;
            store_fp8_row((uint8_t *)k_cache + (size_t)slot * (size_t)kv_dim,
                          (const float *)k + (size_t)i * (size_t)kv_dim, kv_dim, c->k_scale);
            store_fp8_row((uint8_t *)v_cache + (size_t)slot * (size_t)kv_dim,
                          (const float *)v + (size_t)i * (size_t)kv_dim, kv_dim, c->v_scale);
        }
        return;
    }
    size_t row = (size_t)kv_dim * sizeof(float);
    for (int i = 0; i < n; i++) {
        int32_t slot = slot_mapping[i];
        if (slot < 0)
            continue; /* padding: nothing to store */
        memcpy((char *)k_cache + (size_t)slot * row, (const char *)k + (size_t)i * row, row);
        memcpy((char *)v_cache + (size_t)slot * row, (const char *)v + (size_t)i * row, row);
    }
}

static void cpu_copy_2d(struct pl_backend *be, void *dst, size_t dst_pitch, const void *src,
                        size_t src_pitch, size_t width, size_t height)
{
    (void)be;
    for (size_t r = 0; r < height; r++)
        memcpy((char *)dst + r * dst_pitch, (const char *)src + r * src_pitch, width);
}

static void cpu_copy_blocks(struct pl_backend *be, void *k_cache, void *v_cache,
                            const int32_t *src_dst, int n_pairs, size_t block_bytes)
{
    for (int i = 0; i < n_pairs; i++) {
        size_t src = (size_t)src_dst[2 * i] * block_bytes;
        size_t dst = (size_t)src_dst[2 * i + 1] * block_bytes;
        memmove((char *)k_cache + dst, (const char *)k_cache + src, block_bytes);
        memmove((char *)v_cache + dst, (const char *)v_cache + src, block_bytes);
    }
}

static void cpu_get_rows(struct pl_backend *be, void *out, const void *x, const int32_t *rows,
                         int n, int dim)
{
    size_t row = (size_t)dim * sizeof(float);
    for (int i = 0; i < n; i++)
        memmove((char *)out + (size_t)i * row, (const char *)x + (size_t)rows[i] * row, row);
}

static void cpu_fill(struct pl_backend *be, void *dst, enum pl_dtype dtype, size_t n,
                     uint64_t seed, float lo, float hi)
{
    const float span = hi - lo;
    for (size_t i = 0; i < n; i++) {
        /* product and sum rounded separately (two statements: never contracted to an
         * fma), as the CUDA kernel does */
        float prod = span * pl_fill_uniform(seed, i);
        float x = lo + prod;
        switch (dtype) {
        case PL_DTYPE_F32: ((float *)dst)[i] = x; break;
        case PL_DTYPE_F16: ((uint16_t *)dst)[i] = pl_f32_to_f16(x); break;
        case PL_DTYPE_BF16: ((uint16_t *)dst)[i] = pl_f32_to_bf16(x); break;
        default: assert(!"fill: dtype not supported"); return;
        }
    }
}

/* ---- attention ------------------------------------------------------------------------ */

/* Keys scored per softmax chunk (the running max is updated once per chunk). */
#define ATTN_CHUNK 32

struct attn_job {
    float *out;
    const float *q, *k_cache, *v_cache; /* fp32 caches; or e4m3 ones when fp8 */
    const struct pl_attn_meta *m;
    enum pl_cpu_isa isa;
    bool fp8;
    float k_scale, v_scale;
    int n_items, grain;  /* (row, head) items, and how many a thread takes at once */
    atomic_int next;     /* items handed out so far (attn_worker) */
};

#define ATTN_MAX_HEAD_DIM 1024

/* The sequence owning query row t: the s with cu[s] <= t < cu[s+1] (binary search). */
static int seq_of_row(const int32_t *cu, int n_seqs, int t)
{
    int lo = 0, hi = n_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (cu[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* One (query row, head): online softmax over the allowed context positions,
 * accumulating straight into the output row (rescaled when the max grows). */
static void attend_one(const struct attn_job *j, int t, int h)
{
    const struct pl_attn_meta *m = j->m;
    const int hd = m->head_dim;
    const int s = seq_of_row(m->cu_seqlens_q, m->n_seqs, t);
    const int q_len = m->cu_seqlens_q[s + 1] - m->cu_seqlens_q[s];
    const int pos = m->context_lens[s] - q_len + (t - m->cu_seqlens_q[s]);
    const int kvh = h / (m->n_heads / m->n_kv_heads);
    const int32_t *table = m->block_tables + (size_t)s * (size_t)m->max_blocks_per_seq;
    const size_t kv_row = (size_t)m->n_kv_heads * (size_t)hd;

    const float *q = j->q + ((size_t)t * (size_t)m->n_heads + (size_t)h) * (size_t)hd;
    float *o = j->out + ((size_t)t * (size_t)m->n_heads + (size_t)h) * (size_t)hd;
    memset(o, 0, sizeof(float) * (size_t)hd);

    int lo = 0;
    if (m->window > 0 && pos - m->window + 1 > 0)
        lo = pos - m->window + 1;
    float run_max = -FLT_MAX, run_sum = 0.0f;
    float score[ATTN_CHUNK];
    const float *vrow[ATTN_CHUNK];
    const uint8_t *v8[ATTN_CHUNK];
    float kbuf[ATTN_MAX_HEAD_DIM];
    assert(hd <= ATTN_MAX_HEAD_DIM);
    for (int c0 = lo; c0 <= pos; c0 += ATTN_CHUNK) {
        int cn = pos - c0 + 1 < ATTN_CHUNK ? pos - c0 + 1 : ATTN_CHUNK;
        float chunk_max = -FLT_MAX;
        for (int i = 0; i < cn; i++) {
            int c = c0 + i;
            size_t slot = (size_t)table[c / m->block_size] * (size_t)m->block_size +
                          (size_t)(c % m->block_size);
            const size_t at = slot * kv_row + (size_t)kvh * (size_t)hd;
            if (j->fp8) { /* the stored e4m3 values times the scale, in fp32 */
                const uint8_t *k8 = (const uint8_t *)j->k_cache + at;
                for (int d = 0; d < hd; d++)
                    kbuf[d] = pl_f8e4m3_to_f32(k8[d]) * j->k_scale;
                v8[i] = (const uint8_t *)j->v_cache + at;
                score[i] = pl_cpu_dot(j->isa, q, kbuf, hd) * m->scale;
            } else {
                vrow[i] = j->v_cache + at;
                score[i] = pl_cpu_dot(j->isa, q, j->k_cache + at, hd) * m->scale;
            }
            if (m->softcap > 0) /* Gemma 2: the scaled score, soft-capped */
                score[i] = tanhf(score[i] / m->softcap) * m->softcap;
            if (score[i] > chunk_max)
                chunk_max = score[i];
        }
        if (chunk_max > run_max) {
            float alpha = expf(run_max - chunk_max); /* 0 on the first chunk */
            run_sum *= alpha;
            pl_cpu_vec_scale(j->isa, o, alpha, hd);
            run_max = chunk_max;
        }
        for (int i = 0; i < cn; i++) {
            float p = expf(score[i] - run_max);
            run_sum += p;
            if (j->fp8) { /* widened, then the same p*v as an fp32 cache's */
                for (int d = 0; d < hd; d++)
                    kbuf[d] = pl_f8e4m3_to_f32(v8[i][d]) * j->v_scale;
                pl_cpu_vec_axpy(j->isa, o, p, kbuf, hd);
                continue;
            }
            pl_cpu_vec_axpy(j->isa, o, p, vrow[i], hd);
        }
    }
    float inv = 1.0f / run_sum; /* run_sum >= 1: the max position contributes exp(0) */
    pl_cpu_vec_scale(j->isa, o, inv, hd);
}

/* Work items are (query row, head) pairs, handed out from a shared counter in grains, last
 * item first: in a causal prefill a row's cost grows with its position, so the dearest
 * rows go first and the cheap ones fill in at the end, and a thread the OS slows down
 * simply takes fewer grains. Which thread computes an item never changes its result. */
static void attn_worker(void *ctx, int ith, int nth)
{
    struct attn_job *j = ctx;
    const int nh = j->m->n_heads;
    (void)ith, (void)nth;
    for (;;) {
        int k0 = atomic_fetch_add_explicit(&j->next, j->grain, memory_order_relaxed);
        if (k0 >= j->n_items)
            return;
        int k1 = k0 + j->grain < j->n_items ? k0 + j->grain : j->n_items;
        for (int k = k0; k < k1; k++) {
            int item = j->n_items - 1 - k;
            attend_one(j, item / nh, item % nh);
        }
    }
}

static void cpu_attention(struct pl_backend *be, void *out, const void *q, const void *k_cache,
                          const void *v_cache, const struct pl_attn_meta *m)
{
    struct cpu_backend *c = cpu(be);
    struct attn_job j = {.out = out, .q = q, .k_cache = k_cache, .v_cache = v_cache, .m = m,
                         .isa = c->isa, .fp8 = c->kv_fp8, .k_scale = c->k_scale,
                         .v_scale = c->v_scale, .n_items = m->n_tokens * m->n_heads};
    if (j.n_items <= 0)
        return;
    int nth = pl_threadpool_size(c->pool);
    /* about 8 grains a thread: few enough atomics, small enough a last grain */
    j.grain = j.n_items / (8 * nth) > 1 ? j.n_items / (8 * nth) : 1;
    atomic_init(&j.next, 0);
    size_t per_item = (size_t)m->head_dim * (size_t)(m->max_context_len > 0 ? m->max_context_len : 1);
    if (nth == 1 || j.n_items == 1 || (size_t)j.n_items * per_item < PAR_MIN_ELEMS)
        attn_worker(&j, 0, 1);
    else
        pl_threadpool_run(c->pool, attn_worker, &j);
}

static pl_status cpu_set_kv_dtype(struct pl_backend *be, enum pl_dtype dtype, float k_scale,
                                  float v_scale)
{
    if (dtype != PL_DTYPE_F32 && dtype != PL_DTYPE_F8_E4M3)
        return PL_STATUS_UNSUPPORTED;
    if (!(k_scale > 0.0f) || !(v_scale > 0.0f) || !isfinite(k_scale) || !isfinite(v_scale))
        return PL_STATUS_INVALID_ARGUMENT;
    struct cpu_backend *c = cpu(be);
    c->kv_fp8 = dtype == PL_DTYPE_F8_E4M3;
    c->k_scale = k_scale;
    c->v_scale = v_scale;
    return PL_STATUS_OK;
}

static enum pl_dtype cpu_kv_dtype(struct pl_backend *be)
{
    return cpu(be)->kv_fp8 ? PL_DTYPE_F8_E4M3 : PL_DTYPE_F32;
}

/* ---- sampling ------------------------------------------------------------------------- */

/* The host sampler itself: given the same uniforms it is the specification. */
static pl_status cpu_sample(struct pl_backend *be, const float *logits, int n_logits, int vocab,
                            const int32_t *row_map, int n_rows, const struct pl_sampler_row *rows,
                            const double *uniforms, struct pl_sample_result *out,
                            struct pl_err *err)
{
    struct cpu_backend *c = cpu(be);
    for (int r = 0; r < n_rows; r++)
        if (row_map[r] < 0 || row_map[r] >= n_logits)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "cpu sample: row %d reads logits row %d of %d", r, (int)row_map[r],
                              n_logits);
    if (!c->sampler || c->sampler_vocab != vocab) {
        pl_sampler_free(c->sampler);
        c->sampler = NULL;
        /* the seed is unused: sample_rows draws nothing */
        pl_status st = pl_sampler_new(1, vocab, 0, &c->sampler, err);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "cpu sample");
        c->sampler_vocab = vocab;
    }
    return pl_sampler_sample_rows(c->sampler, logits, row_map, n_rows, rows, uniforms, out, err);
}

/* ---- the table ------------------------------------------------------------------------ */

static void free_scratch(struct cpu_backend *c)
{
    if (!c->mm_scratch)
        return;
    for (int i = 0; i < pl_threadpool_size(c->pool); i++)
        free(c->mm_scratch[i]);
    free(c->mm_scratch);
    c->mm_scratch = NULL;
}

static void cpu_destroy(struct pl_backend *be)
{
    struct cpu_backend *c = cpu(be);
    pl_sampler_free(c->sampler);
    free_scratch(c);
    for (int i = 0; c->q4_rows && i < pl_threadpool_size(c->pool); i++)
        free(c->q4_rows[i]);
    free(c->q4_rows);
    pl_threadpool_free(c->pool);
    for (size_t i = 0; i < c->n_copies; i++) /* weights never unmapped */
        free(c->copies[i]);
    free(c->copies);
    free(c);
}

static const struct pl_backend_ops cpu_ops = {
    .version = PL_BACKEND_OPS_VERSION,
    .name = "cpu",
    .act_dtype = PL_DTYPE_F32,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .map_weight = cpu_map_weight,
    .unmap_weight = cpu_unmap_weight,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .supports = cpu_supports,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .rope = cpu_rope,
    .silu_mul = cpu_silu_mul,
    .store_kv = cpu_store_kv,
    .attention = cpu_attention,
    .get_rows = cpu_get_rows,
    .logits = cpu_logits,
    .copy_blocks = cpu_copy_blocks,
    .copy_2d = cpu_copy_2d,
    .set_kv_dtype = cpu_set_kv_dtype,
    .kv_dtype = cpu_kv_dtype,
    .fill = cpu_fill,
    .sample = cpu_sample,
    .device_memory = false,
    .mem_info = cpu_mem_info,
    .gelu_tanh_mul = cpu_gelu_tanh_mul,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .moe = cpu_moe,
};

void pl_backend_cpu_use_simd(struct pl_backend *be, bool on)
{
    pl_backend_cpu_set_simd(be, on);
}

/* PAGELLM_CPU_ISA / PAGELLM_CPU_MATMUL values; false for an unknown one. */
static bool parse_isa(const char *v, enum pl_cpu_isa *out)
{
    static const enum pl_cpu_isa all[] = {PL_CPU_ISA_SCALAR, PL_CPU_ISA_AVX2, PL_CPU_ISA_AVX512};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (!strcmp(v, pl_cpu_isa_name(all[i]))) {
            *out = all[i];
            return true;
        }
    }
    return false;
}

static bool parse_matmul_mode(const char *v, enum pl_cpu_matmul_mode *out)
{
    if (!strcmp(v, "fp32"))
        *out = PL_CPU_MATMUL_FP32;
    else if (!strcmp(v, "bf16"))
        *out = PL_CPU_MATMUL_BF16;
    else
        return false;
    return true;
}

/* One PL_CPU_MM_SCRATCH_BYTES buffer per pool thread, where the CPU can use them. */
static pl_status alloc_scratch(struct cpu_backend *c, struct pl_err *err)
{
    if (!pl_cpu_has_avx512_bf16())
        return PL_STATUS_OK;
    int n = pl_threadpool_size(c->pool);
    c->mm_scratch = calloc((size_t)n, sizeof(*c->mm_scratch));
    if (!c->mm_scratch)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cpu backend: out of memory");
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        if (posix_memalign(&p, 64, PL_CPU_MM_SCRATCH_BYTES) != 0) {
            free_scratch(c);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "cpu backend: out of memory");
        }
        c->mm_scratch[i] = p;
    }
    return PL_STATUS_OK;
}

pl_status pl_backend_cpu_new(int n_threads, struct pl_backend **out, struct pl_err *err)
{
    if (n_threads < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "cpu backend: %d threads", n_threads);
    if (n_threads == 0)
        n_threads = pl_cpu_count();
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    enum pl_cpu_isa isa_cap = PL_CPU_ISA_AVX512;
    enum pl_cpu_matmul_mode mode = PL_CPU_MATMUL_FP32;
    if (dbg.cpu_isa && !parse_isa(dbg.cpu_isa, &isa_cap))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "cpu backend: PAGELLM_CPU_ISA=%s (expected scalar, avx2 or avx512)",
                          dbg.cpu_isa);
    if (dbg.cpu_matmul && !parse_matmul_mode(dbg.cpu_matmul, &mode))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "cpu backend: PAGELLM_CPU_MATMUL=%s (expected fp32 or bf16)",
                          dbg.cpu_matmul);
    struct cpu_backend *c = calloc(1, sizeof(*c));
    if (!c)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "cpu backend: out of memory");
    c->base.ops = &cpu_ops;
    c->isa_cap = isa_cap;
    c->isa = pl_cpu_best_isa() < isa_cap ? pl_cpu_best_isa() : isa_cap;
    c->matmul_mode = mode;
    c->copy_weights = !dbg.cpu_weights_mmap;
    size_t free_b = 0, total_b = 0;
    if (cpu_mem_info(&c->base, &free_b, &total_b) == PL_STATUS_OK)
        c->copy_budget = free_b / 2;
    pl_status st = pl_threadpool_new(n_threads, &c->pool, err);
    if (st != PL_STATUS_OK) {
        free(c);
        return pl_err_prefix(err, "cpu backend");
    }
    st = alloc_scratch(c, err);
    if (st != PL_STATUS_OK) {
        pl_threadpool_free(c->pool);
        free(c);
        return st;
    }
    *out = &c->base;
    return PL_STATUS_OK;
}

bool pl_backend_cpu_set_simd(struct pl_backend *be, bool enable)
{
    struct cpu_backend *c = cpu(be);
    enum pl_cpu_isa best = pl_cpu_best_isa() < c->isa_cap ? pl_cpu_best_isa() : c->isa_cap;
    c->isa = enable ? best : PL_CPU_ISA_SCALAR;
    return c->isa != PL_CPU_ISA_SCALAR;
}

enum pl_cpu_isa pl_backend_cpu_set_isa(struct pl_backend *be, enum pl_cpu_isa isa)
{
    struct cpu_backend *c = cpu(be);
    c->isa = pl_cpu_best_isa() < isa ? pl_cpu_best_isa() : isa;
    return c->isa;
}

enum pl_cpu_matmul_mode pl_backend_cpu_set_matmul_mode(struct pl_backend *be,
                                                       enum pl_cpu_matmul_mode mode)
{
    struct cpu_backend *c = cpu(be);
    c->matmul_mode = mode;
    return mm_of(c).bf16_dot ? PL_CPU_MATMUL_BF16 : PL_CPU_MATMUL_FP32;
}

enum pl_cpu_isa pl_backend_cpu_isa(const struct pl_backend *be)
{
    return ((const struct cpu_backend *)be)->isa;
}

enum pl_cpu_matmul_mode pl_backend_cpu_matmul_mode(const struct pl_backend *be)
{
    return mm_of((const struct cpu_backend *)be).bf16_dot ? PL_CPU_MATMUL_BF16
                                                          : PL_CPU_MATMUL_FP32;
}

int pl_backend_cpu_n_threads(const struct pl_backend *be)
{
    return pl_threadpool_size(((const struct cpu_backend *)be)->pool);
}
