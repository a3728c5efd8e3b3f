/*
 * test_llama.c -- the decoder on tiny in-memory models.
 *
 * 1. Against the independent naive forward of ref_forward.h (double: full
 *    causal attention over contiguous K/V, no paging, no KV cache, rope from
 *    the textbook formula), for Llama (bf16), Qwen2 biases (f16), Qwen3 q/k
 *    norms (f32), Mistral sliding window and tied embeddings.
 * 2. Batch invariance: one sequence's logits at every position are the same
 *    (within 1e-4) when run alone, batched with other sequences, prefilled in
 *    chunks of various sizes, decoded one token at a time, with shuffled block
 *    assignments and block sizes 8, 16 and 32.
 *    The same forward also returns the final hidden states of chosen rows
 *    (pooling), checked against the reference's, for every architecture.
 * 3. Bad batches (out-of-range block or token id, more hidden rows than
 *    tokens) are refused, not run.
 */
#include "backend/backend.h"
#include "engine/model_runner.h"
#include "test.h"
#include "tiny_model.h"
#include "ref_forward.h"

#define MAX_T 256
#define MAX_S 8
#define MBPS 16

/* ---- a tiny paged driver ---------------------------------------------------------------- */

struct tseq {
    const int32_t *toks;
    int len;
    int n_cached;          /* tokens whose K/V are in the cache */
    int32_t table[MBPS];
    int n_blocks;
};

struct tpool {
    int32_t free_ids[512];
    int n_free;
};

static uint64_t trng = 12345;
static int trand(int n)
{
    trng = trng * 6364136223846793005ull + 1442695040888963407ull;
    return (int)((trng >> 33) % (uint64_t)n);
}

static void tpool_init(struct tpool *p, int n_blocks, bool shuffle)
{
    p->n_free = n_blocks;
    for (int i = 0; i < n_blocks; i++)
        p->free_ids[i] = n_blocks - 1 - i; /* pops 0, 1, 2, ... */
    if (shuffle)
        for (int i = n_blocks - 1; i > 0; i--) {
            int j = trand(i + 1);
            int32_t t = p->free_ids[i];
            p->free_ids[i] = p->free_ids[j], p->free_ids[j] = t;
        }
}

/* What a step also asks for: the final hidden states of batch rows (pooling). */
struct thidden {
    const int32_t *rows;
    int n;
    float *out; /* [n, hidden] */
};

/* One forward over seqs[i] advancing by n_new[i] tokens; logits for every new token, and
 * hidden states when hid is not NULL. */
static pl_status tstep(struct pl_model *m, struct pl_kv_cache *kv, struct tpool *pool,
                       struct tseq **seqs, const int *n_new, int n, float *logits,
                       const struct thidden *hid)
{
    static int32_t ids[MAX_T], pos[MAX_T], slots[MAX_T], lens[MAX_T], rows[MAX_T];
    static int32_t cu[MAX_S + 1], ctx[MAX_S], tables[MAX_S * MBPS];
    int bs = kv->block_size, T = 0, max_q = 0, max_ctx = 0;
    cu[0] = 0;
    for (int s = 0; s < n; s++) {
        struct tseq *q = seqs[s];
        int end = q->n_cached + n_new[s];
        while (q->n_blocks * bs < end)
            q->table[q->n_blocks++] = pool->free_ids[--pool->n_free];
        for (int p = q->n_cached; p < end; p++, T++) {
            ids[T] = q->toks[p];
            pos[T] = p;
            lens[T] = end;
            slots[T] = q->table[p / bs] * bs + p % bs;
            rows[T] = T;
        }
        cu[s + 1] = T;
        ctx[s] = end;
        for (int i = 0; i < MBPS; i++)
            tables[s * MBPS + i] = i < q->n_blocks ? q->table[i] : -1;
        if (n_new[s] > max_q)
            max_q = n_new[s];
        if (end > max_ctx)
            max_ctx = end;
        q->n_cached = end;
    }
    struct pl_batch b = {
        .n_tokens = T, .n_seqs = n, .token_ids = ids, .positions = pos, .seq_lens = lens,
        .slot_mapping = slots, .cu_seqlens_q = cu, .context_lens = ctx, .block_tables = tables,
        .max_blocks_per_seq = MBPS, .max_q_len = max_q, .max_context_len = max_ctx,
        .logits_rows = rows, .n_logits = T,
    };
    if (hid) {
        b.hidden_rows = (int32_t *)hid->rows;
        b.n_hidden = hid->n;
        b.hidden = hid->out;
    }
    struct pl_err err;
    pl_status st = pl_model_forward(m, &b, kv, logits, &err);
    if (st != PL_STATUS_OK)
        fprintf(stderr, "forward: %s\n", err.msg);
    return st;
}

struct rig {
    struct tiny_model tm;
    struct pl_backend *be;
    struct pl_model *m;
    struct pl_kv_cache kv;
    struct tpool pool;
};

static bool rig_init(struct rig *r, const struct tiny_opts *o, uint64_t seed, int bs, bool shuffle)
{
    struct pl_err err;
    tiny_model_init(&r->tm, o, seed);
    if (pl_backend_cpu_new(2, &r->be, &err) != PL_STATUS_OK ||
        pl_model_new(&r->tm.cfg, &r->tm.w, r->be, MAX_T, MAX_S, MBPS, &r->m, &err) != PL_STATUS_OK ||
        pl_kv_cache_init(&r->kv, r->be, &r->tm.cfg, 96, bs, &err) != PL_STATUS_OK) {
        fprintf(stderr, "rig: %s\n", err.msg);
        return false;
    }
    tpool_init(&r->pool, 96, shuffle);
    return true;
}

static void rig_fini(struct rig *r)
{
    pl_kv_cache_fini(&r->kv, r->be);
    pl_model_free(r->m);
    pl_backend_free(r->be);
    tiny_model_fini(&r->tm);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void check_against_naive(const struct tiny_opts *o, const char *name)
{
    struct rig r;
    REQUIRE(rig_init(&r, o, 7, 16, true));
    int32_t toks[37];
    for (int i = 0; i < 37; i++)
        toks[i] = trand(r.tm.cfg.vocab_size);
    int V = r.tm.cfg.vocab_size;
    float *got = malloc(sizeof(float) * 37 * V);
    double *ref = malloc(sizeof(double) * 37 * V);
    struct tseq s = {toks, 37, 0, {0}, 0};
    struct tseq *sp = &s;
    int n_new = 37;
    /* pooling rows in the same forward: any order, repeats allowed */
    const int H = r.tm.cfg.hidden_size;
    const int32_t hrows[5] = {36, 0, 17, 5, 36};
    float *got_h = malloc(sizeof(float) * 5 * (size_t)H);
    double *ref_h = malloc(sizeof(double) * 37 * (size_t)H);
    for (int i = 0; i < 5 * H; i++)
        got_h[i] = NAN;
    const struct thidden hid = {hrows, 5, got_h};
    REQUIRE(tstep(r.m, &r.kv, &r.pool, &sp, &n_new, 1, got, &hid) == PL_STATUS_OK);
    ref_forward_ex(&r.tm, toks, 37, ref, ref_h);
    double max_err = 0;
    for (int i = 0; i < 37 * V; i++) {
        double e = fabs(got[i] - ref[i]) / (1.0 + fabs(ref[i]));
        if (e > max_err)
            max_err = e;
    }
    CHECKF(max_err < 1e-4, "%s: max relative logit error %g", name, max_err);
    /* the final hidden states come from the runner's shared final-norm path, for every
     * architecture (pooling requests, embeddings) */
    double max_h = 0;
    for (int k = 0; k < 5; k++)
        for (int i = 0; i < H; i++) {
            double want = ref_h[(size_t)hrows[k] * H + i], g = got_h[(size_t)k * H + i];
            double e = isnan(g) ? INFINITY : fabs(g - want) / (1.0 + fabs(want));
            if (e > max_h)
                max_h = e;
        }
    CHECKF(max_h < 1e-4, "%s: max relative hidden-state error %g", name, max_h);
    free(got), free(ref), free(got_h), free(ref_h);
    rig_fini(&r);
}

static void test_forward_against_naive(void)
{
    struct tiny_opts llama = {PL_TEST_ARCH_LLAMA, PL_DTYPE_BF16, false, 0, 2};
    struct tiny_opts qwen2 = {PL_TEST_ARCH_QWEN2, PL_DTYPE_F16, false, 0, 2};
    struct tiny_opts qwen3 = {PL_TEST_ARCH_QWEN3, PL_DTYPE_F32, true, 0, 3};
    struct tiny_opts mistral = {PL_TEST_ARCH_MISTRAL, PL_DTYPE_BF16, false, 5, 2};
    check_against_naive(&llama, "llama bf16");
    check_against_naive(&qwen2, "qwen2 f16 biases");
    check_against_naive(&qwen3, "qwen3 f32 qk-norm tied");
    check_against_naive(&mistral, "mistral sliding window 5");
    struct tiny_opts gemma2 = {PL_TEST_ARCH_GEMMA2, PL_DTYPE_BF16, false, 5, 3};
    struct tiny_opts gemma3 = {PL_TEST_ARCH_GEMMA3, PL_DTYPE_F32, true, 6, 3};
    check_against_naive(&gemma2, "gemma2 sandwich softcap gelu window 5");
    check_against_naive(&gemma3, "gemma3 qk-norm local rope window 6 tied");
    struct tiny_opts mixtral = {PL_TEST_ARCH_MIXTRAL, PL_DTYPE_BF16, false, 0, 2};
    struct tiny_opts qwen2moe = {PL_TEST_ARCH_QWEN2_MOE, PL_DTYPE_F16, false, 0, 2};
    struct tiny_opts qwen3moe = {PL_TEST_ARCH_QWEN3_MOE, PL_DTYPE_F32, false, 0, 3};
    check_against_naive(&mixtral, "mixtral top-2 renormalised");
    check_against_naive(&qwen2moe, "qwen2-moe shared expert, dense layer 1");
    check_against_naive(&qwen3moe, "qwen3-moe top-3 norm_topk_prob, dense layers 0 and 2");
}

/* Runs the target (and optional companions) with per-step chunk sizes; collects the
 * target's logits for every position into out [len, vocab]. */
static bool run_schedule(const struct tiny_opts *o, int bs, bool shuffle, const int32_t *toks,
                         int len, int n_comp, int chunk, float *out)
{
    struct rig r;
    if (!rig_init(&r, o, 99, bs, shuffle))
        return false;
    int V = r.tm.cfg.vocab_size;
    static int32_t comp_toks[3][64];
    struct tseq seqs[4];
    int comp_len[3] = {23, 9, 41};
    for (int c = 0; c < n_comp; c++) {
        for (int i = 0; i < comp_len[c]; i++)
            comp_toks[c][i] = trand(V);
        seqs[c] = (struct tseq){comp_toks[c], comp_len[c], 0, {0}, 0};
    }
    int target = n_comp > 0 ? trand(n_comp + 1) : 0; /* the target sits anywhere in the batch */
    struct tseq tgt = {toks, len, 0, {0}, 0};
    float *lg = malloc(sizeof(float) * MAX_T * V);
    bool ok = true;
    for (;;) {
        struct tseq *order[4];
        int n_new[4], n = 0, tgt_row = -1, row = 0;
        for (int i = 0, c = 0; i < n_comp + 1; i++) {
            struct tseq *q = i == target ? &tgt : &seqs[c++];
            int left = q->len - q->n_cached;
            if (left <= 0)
                continue;
            /* companions use other chunk sizes so batches mix prefill and decode rows */
            int want = q == &tgt ? chunk : (chunk <= 0 ? left : chunk + 2 * (i + 1));
            int k = want <= 0 || want > left ? left : want;
            if (q == &tgt)
                tgt_row = row;
            order[n] = q;
            n_new[n++] = k;
            row += k;
        }
        if (n == 0)
            break;
        int tgt_start = tgt.n_cached, tgt_new = 0;
        for (int i = 0; i < n; i++)
            if (order[i] == &tgt)
                tgt_new = n_new[i];
        if (tstep(r.m, &r.kv, &r.pool, order, n_new, n, lg, NULL) != PL_STATUS_OK) {
            ok = false;
            break;
        }
        if (tgt_row >= 0)
            memcpy(out + (size_t)tgt_start * V, lg + (size_t)tgt_row * V, sizeof(float) * tgt_new * V);
    }
    free(lg);
    rig_fini(&r);
    return ok;
}

static void check_invariance(const struct tiny_opts *o, const char *name)
{
    int len = 45, V = 64;
    int32_t toks[45];
    for (int i = 0; i < len; i++)
        toks[i] = trand(V);
    float *ref = malloc(sizeof(float) * len * V), *got = malloc(sizeof(float) * len * V);
    REQUIRE(run_schedule(o, 16, false, toks, len, 0, 0, ref)); /* alone, whole prompt */
    const int bss[3] = {8, 16, 32};
    const int chunks[5] = {0, 1, 3, 7, 16}; /* 0 = whole prompt; 1 = token-by-token decode */
    for (int bi = 0; bi < 3; bi++)
        for (int ci = 0; ci < 5; ci++)
            for (int n_comp = 0; n_comp <= 3; n_comp += 3) {
                REQUIRE(run_schedule(o, bss[bi], true, toks, len, n_comp, chunks[ci], got));
                double max_diff = 0;
                for (int i = 0; i < len * V; i++)
                    max_diff = fmax(max_diff, fabs((double)got[i] - ref[i]));
                CHECKF(max_diff <= 1e-4, "%s: block %d chunk %d companions %d: max diff %g", name,
                       bss[bi], chunks[ci], n_comp, max_diff);
            }
    free(ref), free(got);
}

static void test_batch_invariance(void)
{
    struct tiny_opts qwen2 = {PL_TEST_ARCH_QWEN2, PL_DTYPE_BF16, false, 0, 2};
    struct tiny_opts mistral = {PL_TEST_ARCH_MISTRAL, PL_DTYPE_F16, true, 6, 2};
    check_invariance(&qwen2, "qwen2");
    check_invariance(&mistral, "mistral window 6");
}

static void test_bad_batches_refused(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_LLAMA, PL_DTYPE_F32, false, 0, 1};
    struct rig r;
    REQUIRE(rig_init(&r, &o, 3, 16, false));
    int32_t ids[2] = {5, 6}, pos[2] = {0, 1}, slots[2] = {0, 1}, cu[2] = {0, 2}, ctx[1] = {2};
    int32_t table[MBPS], rows[1] = {1};
    for (int i = 0; i < MBPS; i++)
        table[i] = -1;
    table[0] = 0;
    struct pl_batch b = {
        .n_tokens = 2, .n_seqs = 1, .token_ids = ids, .positions = pos, .slot_mapping = slots,
        .cu_seqlens_q = cu, .context_lens = ctx, .block_tables = table, .max_blocks_per_seq = MBPS,
        .max_q_len = 2, .max_context_len = 2, .logits_rows = rows, .n_logits = 1,
    };
    float logits[64];
    struct pl_err err;
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_OK);
    ids[1] = 64; /* outside the vocabulary */
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INVALID_ARGUMENT);
    ids[1] = 6;
    table[0] = 96, slots[0] = 96 * 16, slots[1] = 96 * 16 + 1; /* past the pool */
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INVALID_ARGUMENT);
    table[0] = 0, slots[0] = 0, slots[1] = 2; /* slot does not match the block table */
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INTERNAL);
    CHECK(strstr(err.msg, "slot") != NULL);
    slots[1] = 1;
    /* more hidden rows than tokens: the row indices would overrun the runner's row buffer */
    int32_t hrows[3] = {0, 1, 1};
    float hidden[3 * 64];
    b.hidden_rows = hrows, b.hidden = hidden, b.n_hidden = 3;
    CHECK(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(err.msg, "hidden rows") != NULL, "%s", err.msg);
    b.n_hidden = 2;
    CHECKF(pl_model_forward(r.m, &b, &r.kv, logits, &err) == PL_STATUS_OK, "%s", err.msg);
    rig_fini(&r);
}

static void test_missing_weight_refused(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_QWEN3, PL_DTYPE_BF16, false, 0, 1};
    struct tiny_model tm;
    tiny_model_init(&tm, &o, 1);
    tm.layers[0].k_norm.data = NULL;
    struct pl_backend *be;
    struct pl_model *m = NULL;
    struct pl_err err;
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    CHECK(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "k_norm") != NULL);
    tm.layers[0].k_norm.data = tm.layers[0].q_norm.data;
    tm.layers[0].wq.rows = 31;
    CHECK(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_FORMAT);
    CHECK(m == NULL);
    pl_backend_free(be);
    tiny_model_fini(&tm);
}

int main(void)
{
    PL_RUN(test_forward_against_naive);
    PL_RUN(test_batch_invariance);
    PL_RUN(test_bad_batches_refused);
    PL_RUN(test_missing_weight_refused);
    return pl_test_summary();
}
