/*
 * test_engine_soak.c -- a seeded randomized soak of scheduler + block manager
 * + batch builder against the paged fake model (engine_fake_model.h).
 *
 * Thousands of requests with random prompt lengths, max_tokens, n, cache
 * salts, shared prefixes, aborts and engine-side stops arrive over time into a
 * tiny KV pool that forces preemption. Every step: the scheduler's and block
 * manager's invariants hold, the batch satisfies batch.h's invariants, KV waste
 * stays under one block per running sequence. Every finished sequence equals
 * what the fake model produces for it alone (aborted and engine-stopped ones:
 * a prefix of it). At the end no block is leaked: nothing is in use, and the
 * pool is all free or cached-free. PL_SOAK_SEED overrides the seed.
 */
#include "test.h"
#include "engine_fake_model.h"

#include <stdlib.h>

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static int rnd_in(int lo, int hi) /* inclusive */
{
    return lo + (int)(rnd() % (uint64_t)(hi - lo + 1));
}

#define ENGINE_STOP_AT 3 /* requests with id % 13 == 0 are stopped by the "engine" here */
#define MAX_LIVE 48
#define MAX_PROMPT 100

struct soak_cfg {
    const char *name;
    int n_requests;
    int n_blocks, block_size, budget, max_seqs, max_len;
    bool chunked, caching;
    int threshold;
};

struct soak_counts {
    int n_done, n_refused, n_aborted_seqs, n_engine_stopped, n_forked;
};

static bool is_engine_stopped(const struct pl_seq_group *g)
{
    return g->request_id % 13 == 0;
}

/* Checks a finished group against the lone reference of each of its sequences. */
static bool verify_group(const struct pl_seq_group *g, struct soak_counts *c)
{
    bool ok = true;
    for (int k = 0; k < g->n_seqs; k++) {
        const struct pl_seq *q = &g->seqs[k];
        int32_t ref[256];
        bool stopped;
        int n_ref = fake_reference(q->tokens, g->n_prompt, g->max_tokens, q->index, ref, &stopped);
        int n = pl_seq_num_outputs(q);
        bool prefix = n <= n_ref && !memcmp(ref, q->tokens + g->n_prompt, sizeof(int32_t) * (size_t)n);
        bool exact = prefix && n == n_ref;
        bool good = false;
        switch (q->status) {
        case PL_SEQ_FINISHED_LENGTH:
            good = exact && !stopped && n == g->max_tokens;
            break;
        case PL_SEQ_FINISHED_STOPPED:
            good = (exact && stopped) || (is_engine_stopped(g) && prefix && n == ENGINE_STOP_AT);
            if (good && !(exact && stopped))
                c->n_engine_stopped++;
            break;
        case PL_SEQ_FINISHED_ABORTED:
            good = prefix;
            c->n_aborted_seqs++;
            break;
        default:
            good = false;
        }
        if (!good) {
            fprintf(stderr, "request %llu seq %d: %s with %d outputs (reference %d, %s)\n",
                    (unsigned long long)g->request_id, k, pl_seq_status_str(q->status), n, n_ref,
                    stopped ? "stops" : "length");
            ok = false;
        }
    }
    if (g->n_seqs > 1)
        c->n_forked++;
    return ok;
}

static void run_soak(const struct soak_cfg *cfg, uint64_t seed)
{
    rng_state = seed;
    struct pl_scheduler_params p;
    pl_scheduler_params_default(&p);
    p.n_blocks = cfg->n_blocks;
    p.block_size = cfg->block_size;
    p.max_num_batched_tokens = cfg->budget;
    p.max_num_seqs = cfg->max_seqs;
    p.max_model_len = cfg->max_len;
    p.enable_chunked_prefill = cfg->chunked;
    p.enable_prefix_caching = cfg->caching;
    p.long_prefill_token_threshold = cfg->threshold;
    struct pl_err err;
    struct pl_scheduler *s;
    REQUIRE(pl_scheduler_new(&p, &s, &err) == PL_STATUS_OK);
    struct pl_batch_builder_params bp = {p.block_size, p.max_num_batched_tokens, p.max_num_seqs,
                                         (p.max_model_len + p.block_size - 1) / p.block_size};
    struct pl_batch_builder *bb;
    REQUIRE(pl_batch_builder_new(&bp, &bb, &err) == PL_STATUS_OK);
    struct fake_model m;
    fake_init(&m, p.n_blocks, p.block_size, p.max_model_len, p.max_num_seqs);

    /* a few shared prefixes so requests hit each other's cached blocks */
    int32_t prefixes[4][64];
    int prefix_len[4] = {16, 24, 40, 64};
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 64; j++)
            prefixes[i][j] = rnd_in(1, FAKE_VOCAB - 1);
    const char *salts[3] = {NULL, "alpha", "beta"};

    struct pl_seq_group *live[MAX_LIVE];
    int n_live = 0, n_added = 0;
    uint64_t next_id = 1;
    struct soak_counts c = {0};
    struct pl_sched_plan plan;
    struct pl_batch batch;
    int steps = 0;
    bool failed = false;
    while (!failed && (n_added < cfg->n_requests || pl_scheduler_has_unfinished(s))) {
        /* arrivals */
        int n_new = rnd_in(0, 3);
        for (int a = 0; a < n_new && n_added < cfg->n_requests && n_live < MAX_LIVE; a++) {
            int32_t prompt[MAX_PROMPT];
            int n_prompt = rnd_in(1, MAX_PROMPT);
            int fam = rnd_in(-1, 3);
            for (int i = 0; i < n_prompt; i++)
                prompt[i] = rnd_in(1, FAKE_VOCAB - 1);
            if (fam >= 0) {
                int k = prefix_len[fam] < n_prompt ? prefix_len[fam] : n_prompt;
                memcpy(prompt, prefixes[fam], sizeof(int32_t) * (size_t)k);
            }
            struct pl_seq_group_params gp;
            pl_seq_group_params_default(&gp);
            gp.request_id = next_id++;
            gp.prompt = prompt;
            gp.n_prompt = n_prompt;
            gp.max_tokens = rnd_in(1, 40);
            gp.n = rnd() % 4 == 0 ? rnd_in(2, 3) : 1;
            const char *salt = salts[rnd() % 8 == 0 ? rnd_in(1, 2) : 0];
            gp.cache_salt = salt;
            gp.n_cache_salt = salt ? strlen(salt) : 0;
            n_added++;
            struct pl_seq_group *g;
            pl_status st = pl_scheduler_add(s, &gp, &g, &err);
            int64_t need = (int64_t)gp.n * ((n_prompt + gp.max_tokens + p.block_size - 1) /
                                            p.block_size);
            bool must_refuse = n_prompt + gp.max_tokens > p.max_model_len || need > p.n_blocks;
            if (st != PL_STATUS_OK) {
                CHECKF(must_refuse && st == PL_STATUS_INVALID_ARGUMENT, "refused: %s", err.msg);
                c.n_refused++;
                continue;
            }
            CHECK(!must_refuse);
            live[n_live++] = g;
        }
        /* aborts */
        if (n_live > 0 && rnd() % 25 == 0) {
            struct pl_seq_group *g = live[rnd() % (uint64_t)n_live];
            CHECK(pl_scheduler_abort(s, g->request_id, &err) == PL_STATUS_OK);
        }
        /* one step */
        if (pl_scheduler_schedule(s, &plan, &err) != PL_STATUS_OK ||
            pl_scheduler_check(s, &err) != PL_STATUS_OK) {
            fprintf(stderr, "step %d: %s\n", steps, err.msg);
            failed = true;
            break;
        }
        CHECK(plan.n_seqs > 0 || !pl_scheduler_has_unfinished(s));
        CHECK(plan.n_tokens <= p.max_num_batched_tokens && plan.n_seqs <= p.max_num_seqs);
        struct pl_scheduler_stats st;
        pl_scheduler_get_stats(s, &st);
        double waste_slots = st.kv_waste * st.blocks.n_blocks_used * p.block_size;
        CHECKF(waste_slots <= st.n_running_seqs * (p.block_size - 1) + 1e-6,
               "waste %.1f slots over %d sequences", waste_slots, st.n_running_seqs);
        if (pl_batch_builder_build(bb, &plan, &batch, &err) != PL_STATUS_OK ||
            !fake_run(&m, &plan, &batch)) {
            fprintf(stderr, "step %d: build/run failed: %s\n", steps, err.msg);
            failed = true;
            break;
        }
        if (pl_scheduler_update(s, &plan, m.sampled, m.stop, &err) != PL_STATUS_OK) {
            fprintf(stderr, "step %d: update: %s\n", steps, err.msg);
            failed = true;
            break;
        }
        /* engine-side stops (a stop string, say) */
        for (int i = 0; i < n_live; i++) {
            struct pl_seq_group *g = live[i];
            if (!is_engine_stopped(g))
                continue;
            for (int k = 0; k < g->n_seqs; k++)
                if (g->seqs[k].status == PL_SEQ_RUNNING &&
                    pl_seq_num_outputs(&g->seqs[k]) >= ENGINE_STOP_AT)
                    pl_scheduler_finish_seq(s, &g->seqs[k], PL_SEQ_FINISHED_STOPPED);
        }
        if (pl_scheduler_check(s, &err) != PL_STATUS_OK) {
            fprintf(stderr, "step %d after update: %s\n", steps, err.msg);
            failed = true;
            break;
        }
        struct pl_seq_group *g;
        while ((g = pl_scheduler_pop_finished(s))) {
            CHECK(verify_group(g, &c));
            c.n_done++;
            for (int i = 0; i < n_live; i++) {
                if (live[i] == g) {
                    live[i] = live[--n_live];
                    break;
                }
            }
            pl_seq_group_free(g);
        }
        steps++;
        if (steps > 200000) {
            fprintf(stderr, "no progress\n");
            failed = true;
        }
    }
    CHECK(!failed);
    CHECK(c.n_done + c.n_refused == cfg->n_requests);
    struct pl_scheduler_stats st;
    pl_scheduler_get_stats(s, &st);
    /* no leak: nothing in use, every block free or cached-free and consistent */
    CHECK(st.blocks.n_blocks_used == 0 && st.blocks.n_blocks_free == p.n_blocks);
    CHECK(pl_block_manager_check(pl_scheduler_block_manager(s), NULL, 0, &err) == PL_STATUS_OK);
    /* the soak exercised what it is meant to */
    CHECK(st.n_preemptions > 0);
    CHECK(st.blocks.n_cow_copies > 0);
    CHECK(c.n_aborted_seqs > 0 && c.n_engine_stopped > 0 && c.n_forked > 0);
    if (cfg->caching)
        CHECK(st.blocks.prefix_hit_tokens > 0);
    else
        CHECK(st.blocks.prefix_hit_tokens == 0 && st.blocks.n_blocks_cached_free == 0);
    fprintf(stderr,
            "  %s: %d requests (%d refused), %d steps, %llu preemptions, %lld CoW copies, "
            "%lld/%lld prefix hit tokens, %d aborted seqs, peak %d/%d blocks, batch arena %zu B\n",
            cfg->name, cfg->n_requests, c.n_refused, steps,
            (unsigned long long)st.n_preemptions, (long long)st.blocks.n_cow_copies,
            (long long)st.blocks.prefix_hit_tokens, (long long)st.blocks.prefix_query_tokens,
            c.n_aborted_seqs, st.blocks.n_blocks_peak_used, p.n_blocks,
            pl_batch_builder_peak_bytes(bb));
    pl_scheduler_free(s);
    pl_batch_builder_free(bb);
    fake_fini(&m);
}

static uint64_t seed_from_env(void)
{
    const char *e = getenv("PL_SOAK_SEED");
    return e ? strtoull(e, NULL, 0) | 1 : 0x5eed1234abcdULL;
}

static void test_soak_chunked_prefix_cache(void)
{
    struct soak_cfg cfg = {"chunked+prefix cache, block 8", 5000, 48, 8, 64, 8, 160,
                           true, true, 24};
    run_soak(&cfg, seed_from_env());
}

static void test_soak_block16_small_budget(void)
{
    struct soak_cfg cfg = {"chunked+prefix cache, block 16", 3000, 24, 16, 32, 6, 160,
                           true, true, 0};
    run_soak(&cfg, seed_from_env() * 3 + 1);
}

static void test_soak_no_chunking_no_cache(void)
{
    struct soak_cfg cfg = {"no chunking, no prefix cache, block 32", 3000, 16, 32, 160, 8, 160,
                           false, false, 0};
    run_soak(&cfg, seed_from_env() * 5 + 3);
}

int main(void)
{
    PL_RUN(test_soak_chunked_prefix_cache);
    PL_RUN(test_soak_block16_small_budget);
    PL_RUN(test_soak_no_chunking_no_cache);
    return pl_test_summary();
}
