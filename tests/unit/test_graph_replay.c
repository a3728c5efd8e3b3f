/*
 * test_graph_replay.c -- the model runner's decode graphs, on any machine.
 *
 * The CUDA backend replays recorded decode steps (CUDA graphs): the kernels keep the
 * arguments they were recorded with, device buffers are read at replay. The model runner
 * decides when a graph may be replayed and when it must be recorded again (batch size,
 * context bucket, block-table width, the KV cache it was recorded over). A wrong decision
 * gives wrong tokens on the GPU only, which CI cannot run. Here the CPU backend's op
 * table is patched with a recorder that has the same contract as the CUDA graphs (record
 * the op calls with their arguments by value, replay them later against the same
 * buffers), so the runner's decisions are checked against eager runs of the same model,
 * bit for bit:
 *   - decode steps through graphs equal eager steps (padding rows included);
 *   - a forward over another KV cache (the previous one still allocated, so elsewhere)
 *     records again instead of replaying kernels that name the previous cache.
 */
#include "backend/backend.h"
#include "engine/model_runner.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/tiny_model.h"
#include "model/weights.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the recorder ---------------------------------------------------------------------- */

enum rec_kind { R_EMBED, R_RMSNORM, R_MATMUL, R_ROPE, R_SILU, R_GELU, R_SCALE, R_STORE, R_ATTN };

struct rec {
    enum rec_kind kind;
    void *out, *res, *a, *b, *c;
    const void *x;
    const struct pl_weight *w, *bias;
    const int32_t *i0, *i1;
    const struct pl_rope *rope;
    struct pl_attn_meta meta;
    int n, d0, d1, d2, d3;
    size_t sz;
    float f;
};

struct graph {
    struct rec *r;
    int n, cap;
};

static struct pl_backend_ops g_ops;   /* the CPU table with the recorder's overrides */
static struct pl_backend_ops g_real;  /* the CPU table */
static struct graph *g_rec;           /* the graph being recorded, or NULL */
static int g_recorded, g_launched, g_recorded_ops;

static bool record(const struct rec *r)
{
    if (!g_rec)
        return false;
    if (g_rec->n == g_rec->cap) {
        g_rec->cap = g_rec->cap ? 2 * g_rec->cap : 64;
        struct rec *grown = realloc(g_rec->r, sizeof(struct rec) * (size_t)g_rec->cap);
        if (!grown)
            abort();
        g_rec->r = grown;
    }
    g_rec->r[g_rec->n++] = *r;
    g_recorded_ops++;
    return true;
}

static void run_rec(struct pl_backend *be, const struct rec *r)
{
    switch (r->kind) {
    case R_EMBED:
        g_real.embed(be, r->out, r->w, r->i0, r->n);
        break;
    case R_RMSNORM:
        g_real.rmsnorm(be, r->out, r->res, r->x, r->w, r->n, r->d0, r->f);
        break;
    case R_MATMUL:
        g_real.matmul(be, r->out, r->d0, r->x, r->w, r->bias, r->n);
        break;
    case R_ROPE:
        g_real.rope(be, r->a, r->b, r->i0, r->i1, r->n, r->d0, r->d1, r->d2, r->rope);
        break;
    case R_SILU:
        g_real.silu_mul(be, r->out, r->x, r->a, r->n, r->d0);
        break;
    case R_GELU:
        g_real.gelu_tanh_mul(be, r->out, r->x, r->a, r->n, r->d0);
        break;
    case R_SCALE:
        g_real.scale(be, r->out, r->sz, r->f);
        break;
    case R_STORE:
        g_real.store_kv(be, r->a, r->b, r->x, r->c, r->i0, r->n, r->d0);
        break;
    case R_ATTN:
        g_real.attention(be, r->out, r->x, r->a, r->b, &r->meta);
        break;
    }
}

#define RECORD_OR_RUN(...)                                                                   \
    do {                                                                                     \
        struct rec r_ = {__VA_ARGS__};                                                      \
        if (!record(&r_))                                                                    \
            run_rec(be, &r_);                                                                \
    } while (0)

static void rec_embed(struct pl_backend *be, void *out, const struct pl_weight *t,
                      const int32_t *ids, int n)
{
    RECORD_OR_RUN(.kind = R_EMBED, .out = out, .w = t, .i0 = ids, .n = n);
}
static void rec_rmsnorm(struct pl_backend *be, void *out, void *res, const void *x,
                        const struct pl_weight *w, int n, int dim, float eps)
{
    RECORD_OR_RUN(.kind = R_RMSNORM, .out = out, .res = res, .x = x, .w = w, .n = n, .d0 = dim,
                  .f = eps);
}
static void rec_matmul(struct pl_backend *be, void *out, int ld, const void *x,
                       const struct pl_weight *w, const struct pl_weight *bias, int n)
{
    RECORD_OR_RUN(.kind = R_MATMUL, .out = out, .d0 = ld, .x = x, .w = w, .bias = bias, .n = n);
}
static void rec_rope(struct pl_backend *be, void *q, void *k, const int32_t *pos,
                     const int32_t *lens, int n, int nh, int nkv, int hd, const struct pl_rope *r)
{
    RECORD_OR_RUN(.kind = R_ROPE, .a = q, .b = k, .i0 = pos, .i1 = lens, .n = n, .d0 = nh,
                  .d1 = nkv, .d2 = hd, .rope = r);
}
static void rec_silu(struct pl_backend *be, void *out, const void *g, const void *u, int n,
                     int dim)
{
    RECORD_OR_RUN(.kind = R_SILU, .out = out, .x = g, .a = (void *)u, .n = n, .d0 = dim);
}
static void rec_gelu(struct pl_backend *be, void *out, const void *g, const void *u, int n,
                     int dim)
{
    RECORD_OR_RUN(.kind = R_GELU, .out = out, .x = g, .a = (void *)u, .n = n, .d0 = dim);
}
static void rec_scale(struct pl_backend *be, void *x, size_t n, float s)
{
    RECORD_OR_RUN(.kind = R_SCALE, .out = x, .sz = n, .f = s);
}
static void rec_store(struct pl_backend *be, void *kc, void *vc, const void *k, const void *v,
                      const int32_t *slots, int n, int kv_dim)
{
    RECORD_OR_RUN(.kind = R_STORE, .a = kc, .b = vc, .x = k, .c = (void *)v, .i0 = slots, .n = n,
                  .d0 = kv_dim);
}
static void rec_attn(struct pl_backend *be, void *out, const void *q, const void *kc,
                     const void *vc, const struct pl_attn_meta *m)
{
    /* the meta by value, as the CUDA kernels take their parameters */
    RECORD_OR_RUN(.kind = R_ATTN, .out = out, .x = q, .a = (void *)kc, .b = (void *)vc,
                  .meta = *m);
}
/* An op the recorder does not know must not be called while recording. */
static void rec_moe(struct pl_backend *be, void *out, const void *x, int n, int hidden,
                    const struct pl_moe_args *a, void *scratch)
{
    REQUIRE(!g_rec);
    g_real.moe(be, out, x, n, hidden, a, scratch);
}

static pl_status rec_begin(struct pl_backend *be)
{
    (void)be;
    CHECK(!g_rec);
    free(g_rec);
    g_rec = calloc(1, sizeof(*g_rec));
    return g_rec ? PL_STATUS_OK : PL_STATUS_NO_MEMORY;
}
static pl_status rec_end(struct pl_backend *be, void **graph)
{
    (void)be;
    *graph = g_rec;
    g_rec = NULL;
    g_recorded++;
    return PL_STATUS_OK;
}
static pl_status rec_launch(struct pl_backend *be, void *graph)
{
    const struct graph *g = graph;
    for (int i = 0; i < g->n; i++)
        run_rec(be, &g->r[i]);
    g_launched++;
    return PL_STATUS_OK;
}
static void rec_free(struct pl_backend *be, void *graph)
{
    (void)be;
    struct graph *g = graph;
    free(g->r);
    free(g);
}

/* A CPU backend whose op table records between graph_begin and graph_end. */
static struct pl_backend *recording_cpu(void)
{
    struct pl_backend *be = NULL;
    struct pl_err err;
    if (pl_backend_cpu_new(1, &be, &err) != PL_STATUS_OK)
        return NULL;
    g_real = *be->ops;
    g_ops = g_real;
    g_ops.embed = rec_embed;
    g_ops.rmsnorm = rec_rmsnorm;
    g_ops.matmul = rec_matmul;
    g_ops.rope = rec_rope;
    g_ops.silu_mul = rec_silu;
    g_ops.gelu_tanh_mul = g_real.gelu_tanh_mul ? rec_gelu : NULL;
    g_ops.scale = g_real.scale ? rec_scale : NULL;
    g_ops.store_kv = rec_store;
    g_ops.attention = rec_attn;
    g_ops.moe = g_real.moe ? rec_moe : NULL;
    g_ops.graph_begin = rec_begin;
    g_ops.graph_end = rec_end;
    g_ops.graph_launch = rec_launch;
    g_ops.graph_free = rec_free;
    be->ops = &g_ops;
    return be;
}

/* ---- the runs ---------------------------------------------------------------------------- */

#define MAX_SEQS 3
#define BS 16
#define MAX_BLOCKS 4 /* 64 tokens a sequence */

struct run {
    int n_prompt[MAX_SEQS];
    int32_t toks[MAX_SEQS][64];
    int n_known[MAX_SEQS]; /* tokens written to the cache + 1 pending */
    int n_cached[MAX_SEQS];
};

/* One step of every sequence (its whole prompt on the first step, then one token), with
 * logits of each sequence's last row into logits [MAX_SEQS, vocab]; the next token of
 * sequence i is the argmax of its row (the same on both models when their logits are). */
static void step(struct pl_model *m, const struct pl_kv_cache *kv, struct run *r, int n_seqs,
                 int vocab, float *logits)
{
    int32_t tok[MAX_SEQS * 64], pos[MAX_SEQS * 64], slot[MAX_SEQS * 64], cu[MAX_SEQS + 1],
        ctx[MAX_SEQS], tables[MAX_SEQS * MAX_BLOCKS], rows[MAX_SEQS];
    int nt = 0, max_q = 0, max_c = 0;
    cu[0] = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int q = r->n_known[s] - r->n_cached[s];
        for (int j = 0; j < q; j++) {
            const int p = r->n_cached[s] + j;
            tok[nt] = r->toks[s][p];
            pos[nt] = p;
            /* sequence s owns blocks 3 s + 1 .. (block 0 and others unused) in reverse */
            const int blk = 1 + s * MAX_BLOCKS + (MAX_BLOCKS - 1 - p / BS);
            slot[nt] = blk * BS + p % BS;
            nt++;
        }
        for (int b = 0; b < MAX_BLOCKS; b++)
            tables[s * MAX_BLOCKS + b] = 1 + s * MAX_BLOCKS + (MAX_BLOCKS - 1 - b);
        ctx[s] = r->n_known[s];
        rows[s] = nt - 1;
        max_q = q > max_q ? q : max_q;
        max_c = ctx[s] > max_c ? ctx[s] : max_c;
        cu[s + 1] = nt;
    }
    struct pl_batch b;
    memset(&b, 0, sizeof(b));
    b.n_tokens = nt;
    b.n_seqs = n_seqs;
    b.token_ids = tok;
    b.positions = pos;
    b.slot_mapping = slot;
    b.cu_seqlens_q = cu;
    b.context_lens = ctx;
    b.block_tables = tables;
    b.max_blocks_per_seq = MAX_BLOCKS;
    b.max_q_len = max_q;
    b.max_context_len = max_c;
    b.logits_rows = rows;
    b.n_logits = n_seqs;
    struct pl_err err = {0};
    pl_status st = pl_model_forward(m, &b, kv, logits, &err);
    CHECKF(st == PL_STATUS_OK, "forward: %s", err.msg);
    for (int s = 0; s < n_seqs; s++) {
        r->n_cached[s] = r->n_known[s];
        const float *row = logits + (size_t)s * (size_t)vocab;
        int best = 0;
        for (int v = 1; v < vocab; v++)
            if (row[v] > row[best])
                best = v;
        r->toks[s][r->n_known[s]++] = best;
    }
}

static void run_init(struct run *r, const int *lens, uint64_t seed, int vocab)
{
    memset(r, 0, sizeof(*r));
    for (int s = 0; s < MAX_SEQS; s++) {
        r->n_prompt[s] = lens[s];
        r->n_known[s] = lens[s];
        for (int i = 0; i < lens[s]; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            r->toks[s][i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
        }
    }
}

/* Prefill and `n_decode` decode steps of n_seqs sequences, on the graphed model over kv_g and
 * the eager one over kv_e: every step's logits bit-identical. */
static void compare_runs(struct pl_model *mg, const struct pl_kv_cache *kv_g, struct pl_model *me,
                         const struct pl_kv_cache *kv_e, const int *lens, uint64_t seed,
                         int n_seqs, int n_decode, int vocab, const char *what)
{
    struct run rg, re;
    run_init(&rg, lens, seed, vocab);
    run_init(&re, lens, seed, vocab);
    float *lg = malloc(sizeof(float) * (size_t)MAX_SEQS * (size_t)vocab);
    float *le = malloc(sizeof(float) * (size_t)MAX_SEQS * (size_t)vocab);
    REQUIRE(lg && le);
    for (int t = 0; t <= n_decode; t++) {
        step(mg, kv_g, &rg, n_seqs, vocab, lg);
        step(me, kv_e, &re, n_seqs, vocab, le);
        size_t diff = 0;
        for (size_t i = 0; i < (size_t)n_seqs * (size_t)vocab; i++)
            diff += memcmp(&lg[i], &le[i], sizeof(float)) != 0;
        CHECKF(diff == 0, "%s, step %d: %zu of %d logits differ from the eager run", what, t, diff,
               n_seqs * vocab);
        if (diff)
            break;
    }
    free(lg);
    free(le);
}

static void check_preset(const char *preset)
{
    char tmp[] = "/tmp/pl_graph_replay_XXXXXX";
    REQUIRE(mkdtemp(tmp) != NULL);
    char dir[256];
    snprintf(dir, sizeof(dir), "%s/%s", tmp, preset);
    struct pl_err err = {0};
    REQUIRE(pl_tiny_model_write(preset, dir, &err) == PL_STATUS_OK);
    struct pl_backend *be = recording_cpu();
    REQUIRE(be);
    struct pl_model_config cfg;
    struct pl_safetensors *sts = NULL;
    struct pl_weights *w = NULL;
    struct pl_model *mg = NULL, *me = NULL;
    pl_status st = pl_model_config_load(dir, &cfg, &err);
    if (st == PL_STATUS_OK)
        st = pl_safetensors_open_dir(dir, &sts, &err);
    if (st == PL_STATUS_OK)
        st = pl_weights_load(&cfg, sts, be, &w, &err);
    if (st == PL_STATUS_OK)
        st = pl_model_new(&cfg, w, be, 256, 4, MAX_BLOCKS, &mg, &err);
    if (st == PL_STATUS_OK)
        st = pl_model_new(&cfg, w, be, 256, 4, MAX_BLOCKS, &me, &err);
    REQUIRE(st == PL_STATUS_OK);
    pl_model_set_eager(me);
    const int n_blocks = 1 + MAX_SEQS * MAX_BLOCKS;
    struct pl_kv_cache kv_a, kv_b, kv_e;
    REQUIRE(pl_kv_cache_init(&kv_a, be, &cfg, n_blocks, BS, &err) == PL_STATUS_OK);
    REQUIRE(pl_kv_cache_init(&kv_e, be, &cfg, n_blocks, BS, &err) == PL_STATUS_OK);
    char what[128];

    /* 1. three sequences (decode batch 3: padded to 4) and then one (batch 1) */
    const int lens1[MAX_SEQS] = {5, 11, 2};
    g_recorded = g_launched = 0;
    snprintf(what, sizeof(what), "%s, cache A", preset);
    compare_runs(mg, &kv_a, me, &kv_e, lens1, 1, 3, 8, cfg.vocab_size, what);
    CHECKF(g_recorded >= 1 && g_launched >= 8, "%s: %d graphs recorded, %d launched", preset,
           g_recorded, g_launched);
    const int rec_a = g_recorded;
    compare_runs(mg, &kv_a, me, &kv_e, lens1, 2, 1, 4, cfg.vocab_size, what);

    /* 2. the same model over cache B, made while A still holds the first run's K/V: the
     * graphs recorded over A must not be replayed */
    REQUIRE(pl_kv_cache_init(&kv_b, be, &cfg, n_blocks, BS, &err) == PL_STATUS_OK);
    CHECK(kv_b.k[0] != kv_a.k[0]);
    const int lens2[MAX_SEQS] = {7, 3, 9};
    snprintf(what, sizeof(what), "%s, cache B after A", preset);
    compare_runs(mg, &kv_b, me, &kv_e, lens2, 3, 3, 8, cfg.vocab_size, what);
    CHECKF(g_recorded > rec_a, "%s: no graph recorded again over cache B (%d, %d)", preset,
           rec_a, g_recorded);

    /* 3. back to A: recorded again once more, still exact */
    snprintf(what, sizeof(what), "%s, cache A again", preset);
    compare_runs(mg, &kv_a, me, &kv_e, lens2, 4, 3, 6, cfg.vocab_size, what);

    pl_kv_cache_fini(&kv_a, be);
    pl_kv_cache_fini(&kv_b, be);
    pl_kv_cache_fini(&kv_e, be);
    pl_model_free(mg);
    pl_model_free(me);
    pl_weights_free(w);
    pl_safetensors_free(sts);
    pl_backend_free(be);
    pl_test_rm_tree(tmp);
}

static void test_llama(void) { check_preset("llama"); }
static void test_gemma2(void) { check_preset("gemma2"); }
static void test_qwen3(void) { check_preset("qwen3"); }

int main(void)
{
    PL_RUN(test_llama);
    PL_RUN(test_gemma2);
    PL_RUN(test_qwen3);
    return pl_test_summary();
}
