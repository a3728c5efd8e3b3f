/*
 * test_scheduler.c -- the continuous-batching scheduler driven step by step
 * with a fake model (engine_fake_model.h) that reads its "KV" back through
 * the batch's block tables: admission and the sequence state machine, chunked
 * prefill, decode-first ordering, preemption of the most recently admitted
 * group (and self-preemption) with exact recovery, aborts, admission
 * refusals, the max_num_seqs cap, parallel sampling over shared blocks, prefix
 * hits, chunked prefill off. Outputs are compared with fake_reference, which
 * runs each request alone without any pool.
 */
#include "test.h"
#include "engine_fake_model.h"

struct rig {
    struct pl_scheduler *s;
    struct pl_batch_builder *bb;
    struct fake_model m;
    struct pl_sched_plan plan;
    struct pl_batch batch;
    struct pl_scheduler_params p;
};

static void rig_params(struct pl_scheduler_params *p, int n_blocks, int bs, int budget,
                       int max_seqs, int max_len)
{
    pl_scheduler_params_default(p);
    p->n_blocks = n_blocks;
    p->block_size = bs;
    p->max_num_batched_tokens = budget;
    p->max_num_seqs = max_seqs;
    p->max_model_len = max_len;
}

static bool rig_init(struct rig *r, const struct pl_scheduler_params *p)
{
    memset(r, 0, sizeof(*r));
    r->p = *p;
    struct pl_err err;
    if (pl_scheduler_new(p, &r->s, &err) != PL_STATUS_OK) {
        fprintf(stderr, "scheduler: %s\n", err.msg);
        return false;
    }
    struct pl_batch_builder_params bp = {p->block_size, p->max_num_batched_tokens,
                                         p->max_num_seqs,
                                         (p->max_model_len + p->block_size - 1) / p->block_size};
    if (pl_batch_builder_new(&bp, &r->bb, &err) != PL_STATUS_OK)
        return false;
    fake_init(&r->m, p->n_blocks, p->block_size, p->max_model_len, p->max_num_seqs);
    return true;
}

static void rig_fini(struct rig *r)
{
    struct pl_seq_group *g;
    while ((g = pl_scheduler_pop_finished(r->s)))
        pl_seq_group_free(g);
    pl_scheduler_free(r->s);
    pl_batch_builder_free(r->bb);
    fake_fini(&r->m);
}

static bool sched_ok(struct rig *r)
{
    struct pl_err err;
    if (pl_scheduler_check(r->s, &err) != PL_STATUS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return false;
    }
    return true;
}

/* schedule only; the plan stays in r->plan */
static bool rig_schedule(struct rig *r)
{
    struct pl_err err;
    if (pl_scheduler_schedule(r->s, &r->plan, &err) != PL_STATUS_OK)
        return false;
    return sched_ok(r);
}

/* build + fake run + update for the plan in r->plan */
static bool rig_finish_step(struct rig *r)
{
    struct pl_err err;
    if (pl_batch_builder_build(r->bb, &r->plan, &r->batch, &err) != PL_STATUS_OK) {
        fprintf(stderr, "build: %s\n", err.msg);
        return false;
    }
    if (!fake_run(&r->m, &r->plan, &r->batch))
        return false;
    if (pl_scheduler_update(r->s, &r->plan, r->m.sampled, r->m.stop, &err) != PL_STATUS_OK) {
        fprintf(stderr, "update: %s\n", err.msg);
        return false;
    }
    return sched_ok(r);
}

static bool rig_step(struct rig *r)
{
    return rig_schedule(r) && rig_finish_step(r);
}

static struct pl_seq_group *add(struct rig *r, uint64_t id, const int32_t *prompt, int n_prompt,
                                int max_tokens, int n)
{
    struct pl_seq_group_params gp;
    pl_seq_group_params_default(&gp);
    gp.request_id = id;
    gp.prompt = prompt;
    gp.n_prompt = n_prompt;
    gp.max_tokens = max_tokens;
    gp.n = n;
    struct pl_seq_group *g = NULL;
    struct pl_err err;
    if (pl_scheduler_add(r->s, &gp, &g, &err) != PL_STATUS_OK)
        fprintf(stderr, "add: %s\n", err.msg);
    return g;
}

static void make_prompt(int32_t *p, int n, int base)
{
    for (int i = 0; i < n; i++)
        p[i] = 1 + (base * 131 + i * 7) % (FAKE_VOCAB - 1);
}

/* A base whose prompt generates max_tokens tokens without a stop token, for every index < n. */
static int base_without_stop(int n_prompt, int max_tokens, int n, int from)
{
    int32_t p[512], out[512];
    for (int base = from;; base++) {
        make_prompt(p, n_prompt, base);
        bool ok = true;
        for (int k = 0; k < n && ok; k++) {
            bool stopped;
            ok = fake_reference(p, n_prompt, max_tokens, k, out, &stopped) == max_tokens;
        }
        if (ok)
            return base;
    }
}

/* Every sequence of g equals its lone reference, with the matching finish status. */
static bool matches_reference(const struct pl_seq_group *g)
{
    bool ok = true;
    for (int k = 0; k < g->n_seqs; k++) {
        const struct pl_seq *q = &g->seqs[k];
        int32_t out[512];
        bool stopped;
        int n = fake_reference(q->tokens, g->n_prompt, g->max_tokens, q->index, out, &stopped);
        if (n != pl_seq_num_outputs(q) ||
            memcmp(out, q->tokens + g->n_prompt, sizeof(int32_t) * (size_t)n) != 0) {
            fprintf(stderr, "request %llu seq %d: %d outputs, reference %d\n",
                    (unsigned long long)g->request_id, k, pl_seq_num_outputs(q), n);
            ok = false;
        }
        enum pl_seq_status want = stopped ? PL_SEQ_FINISHED_STOPPED : PL_SEQ_FINISHED_LENGTH;
        if (q->status != want) {
            fprintf(stderr, "request %llu seq %d: status %s, want %s\n",
                    (unsigned long long)g->request_id, k, pl_seq_status_str(q->status),
                    pl_seq_status_str(want));
            ok = false;
        }
    }
    return ok;
}

static int run_to_end(struct rig *r, int max_steps)
{
    int steps = 0;
    while (pl_scheduler_has_unfinished(r->s) && steps < max_steps) {
        if (!rig_step(r))
            return -1;
        steps++;
    }
    return steps;
}

static void test_state_machine(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 64, 16, 256, 8, 256);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t prompt[20];
    make_prompt(prompt, 20, base_without_stop(20, 5, 1, 1));
    struct pl_seq_group *a = add(&r, 1, prompt, 20, 5, 1);
    REQUIRE(a);
    CHECK(a->seqs[0].status == PL_SEQ_WAITING && a->queue == PL_SEQ_GROUP_IN_WAITING);
    CHECK(pl_scheduler_has_unfinished(r.s));
    REQUIRE(rig_schedule(&r));
    CHECK(a->seqs[0].status == PL_SEQ_RUNNING && a->queue == PL_SEQ_GROUP_IN_RUNNING);
    REQUIRE(r.plan.n_seqs == 1);
    CHECK(r.plan.seqs[0].start_pos == 0 && r.plan.seqs[0].n_new == 20);
    CHECK(r.plan.seqs[0].n_samples == 1 && !r.plan.seqs[0].is_decode);
    REQUIRE(rig_finish_step(&r));
    CHECK(a->seqs[0].n_tokens == 21 && a->seqs[0].n_computed == 20);
    /* four decodes: the fifth output ends it by length */
    for (int i = 0; i < 4; i++) {
        REQUIRE(rig_schedule(&r));
        REQUIRE(r.plan.n_seqs == 1);
        CHECK(r.plan.seqs[0].is_decode && r.plan.seqs[0].start_pos == 20 + i);
        CHECK(r.plan.n_decodes == 1 && r.plan.n_tokens == 1);
        REQUIRE(rig_finish_step(&r));
    }
    CHECK(a->seqs[0].status == PL_SEQ_FINISHED_LENGTH && a->queue == PL_SEQ_GROUP_IN_FINISHED);
    CHECK(a->seqs[0].table.n_blocks == 0);
    CHECK(matches_reference(a));
    CHECK(!pl_scheduler_has_unfinished(r.s));
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_seqs == 0);
    CHECK(pl_scheduler_pop_finished(r.s) == a);
    CHECK(pl_scheduler_pop_finished(r.s) == NULL);
    pl_seq_group_free(a);
    struct pl_scheduler_stats st;
    pl_scheduler_get_stats(r.s, &st);
    CHECK(st.n_prompt_tokens == 20 && st.n_generation_tokens == 5);
    CHECK(st.blocks.n_blocks_used == 0 && st.n_running_seqs == 0);

    /* a stop token ends a sequence as FINISHED_STOPPED */
    int32_t sp[8];
    int base = 1;
    for (;; base++) {
        make_prompt(sp, 8, base);
        if (fake_is_stop(fake_next(sp, 8, 0)))
            break;
    }
    struct pl_seq_group *b = add(&r, 2, sp, 8, 10, 1);
    REQUIRE(b);
    REQUIRE(rig_step(&r));
    CHECK(b->seqs[0].status == PL_SEQ_FINISHED_STOPPED && pl_seq_num_outputs(&b->seqs[0]) == 1);
    CHECK(matches_reference(b));
    rig_fini(&r);
}

static void test_chunked_prefill(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 64, 16, 16, 4, 128);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t prompt[40];
    make_prompt(prompt, 40, base_without_stop(40, 3, 1, 1));
    struct pl_seq_group *a = add(&r, 1, prompt, 40, 3, 1);
    REQUIRE(a);
    int expect[3][3] = {{0, 16, 0}, {16, 16, 0}, {32, 8, 1}};
    for (int i = 0; i < 3; i++) {
        REQUIRE(rig_schedule(&r));
        REQUIRE(r.plan.n_seqs == 1);
        CHECK(r.plan.seqs[0].start_pos == expect[i][0] && r.plan.seqs[0].n_new == expect[i][1]);
        CHECK(r.plan.seqs[0].n_samples == expect[i][2]);
        REQUIRE(rig_finish_step(&r));
        /* a partial prefill keeps its blocks (all 3 allocated at admission) */
        CHECK(a->seqs[0].table.n_blocks == 3);
    }
    CHECK(a->seqs[0].n_tokens == 41);
    CHECK(run_to_end(&r, 10) == 2);
    CHECK(matches_reference(a));
    rig_fini(&r);

    /* long_prefill_token_threshold caps a sequence's chunk below the budget */
    rig_params(&p, 64, 16, 64, 4, 128);
    p.long_prefill_token_threshold = 10;
    REQUIRE(rig_init(&r, &p));
    a = add(&r, 1, prompt, 40, 3, 1);
    for (int i = 0; i < 4; i++) {
        REQUIRE(rig_schedule(&r));
        CHECK(r.plan.seqs[0].start_pos == 10 * i && r.plan.seqs[0].n_new == 10);
        REQUIRE(rig_finish_step(&r));
    }
    CHECK(run_to_end(&r, 10) == 2);
    CHECK(matches_reference(a));
    rig_fini(&r);
}

static void test_decode_first(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 64, 16, 16, 4, 128);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pa[8], pb[40];
    make_prompt(pa, 8, base_without_stop(8, 10, 1, 1));
    make_prompt(pb, 40, base_without_stop(40, 4, 1, 100));
    struct pl_seq_group *a = add(&r, 1, pa, 8, 10, 1);
    REQUIRE(rig_step(&r));
    struct pl_seq_group *b = add(&r, 2, pb, 40, 4, 1);
    REQUIRE(a && b);
    /* A's decode comes first and B's chunks take what is left of the 16 tokens */
    int b_start[3] = {0, 15, 30}, b_len[3] = {15, 15, 10};
    for (int i = 0; i < 3; i++) {
        REQUIRE(rig_schedule(&r));
        REQUIRE(r.plan.n_seqs == 2);
        CHECK(r.plan.n_decodes == 1);
        CHECK(r.plan.seqs[0].seq == &a->seqs[0] && r.plan.seqs[0].is_decode);
        CHECK(r.plan.seqs[1].seq == &b->seqs[0] && !r.plan.seqs[1].is_decode);
        CHECK(r.plan.seqs[1].start_pos == b_start[i] && r.plan.seqs[1].n_new == b_len[i]);
        CHECK(r.plan.seqs[1].n_samples == (i == 2));
        CHECK(r.plan.n_samples == 1 + (i == 2));
        REQUIRE(rig_finish_step(&r));
    }
    CHECK(run_to_end(&r, 20) > 0);
    CHECK(matches_reference(a) && matches_reference(b));
    rig_fini(&r);
}

static void test_preemption(void)
{
    /* pool of 7 blocks of 8: three 16-token prompts take 6; each may grow to 4 blocks */
    struct pl_scheduler_params p;
    rig_params(&p, 7, 8, 64, 4, 64);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pr[3][16];
    struct pl_seq_group *g[3];
    int base = 1;
    for (int i = 0; i < 3; i++) {
        base = base_without_stop(16, 16, 1, base) + 1;
        make_prompt(pr[i], 16, base - 1);
        g[i] = add(&r, (uint64_t)i + 1, pr[i], 16, 16, 1);
        REQUIRE(g[i]);
    }
    REQUIRE(rig_step(&r)); /* all three prefilled */
    CHECK(r.plan.n_seqs == 3 && r.plan.n_preempted == 0);
    /* step 2: A takes the last free block, B needs one: the newest group (C) is preempted */
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_preempted == 1 && r.plan.preempted[0] == g[2]);
    CHECK(g[2]->seqs[0].status == PL_SEQ_PREEMPTED && g[2]->queue == PL_SEQ_GROUP_IN_WAITING);
    CHECK(g[2]->seqs[0].table.n_blocks == 0 && g[2]->seqs[0].n_computed == 0);
    CHECK(r.plan.n_seqs == 2 && r.plan.seqs[0].seq == &g[0]->seqs[0] &&
          r.plan.seqs[1].seq == &g[1]->seqs[0]);
    REQUIRE(rig_finish_step(&r));
    /* positions 17..23 fit in the blocks A and B hold; position 24 needs one block each:
       A gets the only free one and B, now the newest running group, preempts itself */
    for (int step = 3; step <= 9; step++) {
        REQUIRE(rig_step(&r));
        CHECK(r.plan.n_preempted == 0 && r.plan.n_seqs == 2);
    }
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_preempted == 1 && r.plan.preempted[0] == g[1]);
    CHECK(r.plan.n_seqs == 1 && r.plan.seqs[0].seq == &g[0]->seqs[0] && r.plan.n_copies == 0);
    CHECK(g[1]->queue == PL_SEQ_GROUP_IN_WAITING && g[1]->prev == NULL);
    REQUIRE(rig_finish_step(&r));
    CHECK(run_to_end(&r, 200) > 0);
    for (int i = 0; i < 3; i++)
        CHECK(matches_reference(g[i]));
    CHECK(g[0]->n_preemptions == 0 && g[1]->n_preemptions == 1 && g[2]->n_preemptions >= 1);
    struct pl_scheduler_stats st;
    pl_scheduler_get_stats(r.s, &st);
    CHECK(st.n_preemptions == (uint64_t)(g[1]->n_preemptions + g[2]->n_preemptions));
    CHECK(st.blocks.n_blocks_used == 0 && st.blocks.n_blocks_peak_used == 7);
    rig_fini(&r);
}

static void test_abort(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 32, 16, 64, 1, 128);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pa[40];
    make_prompt(pa, 40, 3);
    struct pl_seq_group *a = add(&r, 10, pa, 40, 50, 1);
    struct pl_seq_group *b = add(&r, 11, pa, 20, 50, 1);
    struct pl_seq_group *c = add(&r, 12, pa, 30, 50, 1);
    REQUIRE(a && b && c);
    REQUIRE(rig_step(&r)); /* max_num_seqs 1: only A runs */
    CHECK(a->queue == PL_SEQ_GROUP_IN_RUNNING && b->queue == PL_SEQ_GROUP_IN_WAITING);
    struct pl_err err;
    CHECK(pl_scheduler_abort(r.s, 999, &err) == PL_STATUS_NOT_FOUND);
    CHECK(strstr(err.msg, "999") != NULL);
    CHECK(pl_scheduler_abort(r.s, 10, &err) == PL_STATUS_OK);
    CHECK(pl_scheduler_abort(r.s, 12, &err) == PL_STATUS_OK);
    /* nothing is released before the next schedule */
    CHECK(a->seqs[0].table.n_blocks == 3 && a->seqs[0].status == PL_SEQ_RUNNING);
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_aborted == 2);
    CHECK(a->seqs[0].status == PL_SEQ_FINISHED_ABORTED && a->seqs[0].table.n_blocks == 0);
    CHECK(c->seqs[0].status == PL_SEQ_FINISHED_ABORTED);
    /* B took A's place in the same step */
    CHECK(r.plan.n_seqs == 1 && r.plan.seqs[0].seq == &b->seqs[0]);
    struct pl_scheduler_stats st;
    pl_scheduler_get_stats(r.s, &st);
    CHECK(st.blocks.n_blocks_used == 2); /* B's 20 tokens; A's are freed */
    REQUIRE(rig_finish_step(&r));
    struct pl_seq_group *f1 = pl_scheduler_pop_finished(r.s);
    struct pl_seq_group *f2 = pl_scheduler_pop_finished(r.s);
    CHECK((f1 == a && f2 == c) || (f1 == c && f2 == a));
    pl_seq_group_free(a);
    pl_seq_group_free(c);
    CHECK(pl_scheduler_abort(r.s, 10, &err) == PL_STATUS_NOT_FOUND);
    /* a sequence finished by the engine (e.g. a stop string) frees its blocks at once */
    pl_scheduler_finish_seq(r.s, &b->seqs[0], PL_SEQ_FINISHED_STOPPED);
    CHECK(b->queue == PL_SEQ_GROUP_IN_FINISHED && b->seqs[0].table.n_blocks == 0);
    CHECK(sched_ok(&r));
    CHECK(!pl_scheduler_has_unfinished(r.s));
    rig_fini(&r);
}

static void test_admission_refusals(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 10, 16, 256, 4, 100);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pr[200];
    make_prompt(pr, 200, 1);
    struct pl_seq_group_params gp;
    pl_seq_group_params_default(&gp);
    gp.prompt = pr;
    struct pl_err err;
    struct {
        int n_prompt, max_tokens, n;
        const char *words[3];
    } cases[] = {
        {101, 1, 1, {"101", "max_model_len 100", NULL}},
        {60, 41, 1, {"60", "41", "max_model_len 100"}},
        {0, 5, 1, {"empty", NULL, NULL}},
        {10, 0, 1, {"max_tokens", NULL, NULL}},
        {10, 5, 0, {"n must", NULL, NULL}},
        {10, 5, 5, {"max_num_seqs 4", NULL, NULL}},
        /* 3 samples x ceil(70 / 16) = 15 blocks > 10 */
        {50, 20, 3, {"15 KV blocks", "pool has 10", NULL}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        gp.n_prompt = cases[i].n_prompt;
        gp.max_tokens = cases[i].max_tokens;
        gp.n = cases[i].n;
        struct pl_seq_group *g = (void *)1;
        CHECK(pl_scheduler_add(r.s, &gp, &g, &err) == PL_STATUS_INVALID_ARGUMENT);
        CHECK(g == NULL);
        for (int w = 0; w < 3 && cases[i].words[w]; w++)
            CHECKF(strstr(err.msg, cases[i].words[w]) != NULL, "case %zu: %s", i, err.msg);
    }
    CHECK(!pl_scheduler_has_unfinished(r.s));
    /* exactly at the limits it is accepted: 60 + 40 = max_model_len, 7 of 10 blocks */
    gp.n_prompt = 60;
    gp.max_tokens = 40;
    gp.n = 1;
    CHECK(pl_scheduler_add(r.s, &gp, NULL, &err) == PL_STATUS_OK);
    rig_fini(&r);

    /* bad scheduler parameters */
    struct pl_scheduler *s;
    rig_params(&p, 10, 16, 8, 16, 100);
    CHECK(pl_scheduler_new(&p, &s, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "max_num_batched_tokens") != NULL);
    rig_params(&p, 10, 16, 64, 16, 100);
    p.enable_chunked_prefill = false;
    CHECK(pl_scheduler_new(&p, &s, &err) == PL_STATUS_INVALID_ARGUMENT);
    rig_params(&p, 10, 12, 64, 16, 100);
    CHECK(pl_scheduler_new(&p, &s, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "block_size 12") != NULL);
}

static void test_max_num_seqs(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 64, 16, 256, 2, 128);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pr[3][10];
    struct pl_seq_group *g[3];
    for (int i = 0; i < 3; i++) {
        make_prompt(pr[i], 10, base_without_stop(10, 3 + i, 1, 50 * (i + 1)));
        g[i] = add(&r, (uint64_t)i, pr[i], 10, 3 + i, 1);
    }
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_seqs == 2 && g[2]->queue == PL_SEQ_GROUP_IN_WAITING);
    REQUIRE(rig_finish_step(&r));
    int max_seen = 0, steps = 0;
    while (pl_scheduler_has_unfinished(r.s) && steps++ < 50) {
        REQUIRE(rig_schedule(&r));
        if (r.plan.n_seqs > max_seen)
            max_seen = r.plan.n_seqs;
        REQUIRE(rig_finish_step(&r));
    }
    CHECK(max_seen == 2);
    for (int i = 0; i < 3; i++)
        CHECK(matches_reference(g[i]));
    /* an n = 2 group reserves two places: it waits while one sequence runs */
    int32_t q[10];
    make_prompt(q, 10, 7);
    struct pl_seq_group *one = add(&r, 20, q, 10, 30, 1);
    struct pl_seq_group *two = add(&r, 21, q, 10, 30, 2);
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_seqs == 1 && one->queue == PL_SEQ_GROUP_IN_RUNNING &&
          two->queue == PL_SEQ_GROUP_IN_WAITING);
    REQUIRE(rig_finish_step(&r));
    rig_fini(&r);
}

static void test_parallel_sampling_shares_blocks(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 64, 16, 256, 8, 128);
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pr[40];
    make_prompt(pr, 40, base_without_stop(40, 6, 4, 1));
    struct pl_seq_group *g = add(&r, 1, pr, 40, 6, 4);
    REQUIRE(g);
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_seqs == 1 && r.plan.seqs[0].n_samples == 4 && r.plan.n_samples == 4);
    REQUIRE(rig_finish_step(&r));
    CHECK(r.batch.n_logits == 4);
    /* forked into 4 sequences sharing the prompt's 3 blocks */
    REQUIRE(g->n_seqs == 4);
    struct pl_scheduler_stats st;
    pl_scheduler_get_stats(r.s, &st);
    CHECK(st.blocks.n_blocks_used == 3 && st.n_running_seqs == 4);
    for (int k = 0; k < 4; k++) {
        CHECK(g->seqs[k].index == k && g->seqs[k].n_tokens == 41);
        CHECK(g->seqs[k].tokens[40] == fake_next(pr, 40, k));
        for (int b = 0; b < 3; b++)
            CHECK(g->seqs[k].table.ids[b] == g->seqs[0].table.ids[b]);
    }
    /* first divergent write: three copies of the shared last block */
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_copies == 3 && r.plan.n_decodes == 4);
    pl_scheduler_get_stats(r.s, &st);
    CHECK(st.blocks.n_blocks_used == 6);
    REQUIRE(rig_finish_step(&r));
    CHECK(run_to_end(&r, 20) > 0);
    CHECK(matches_reference(g));
    rig_fini(&r);
}

static void test_prefix_cache_through_scheduler(void)
{
    for (int caching = 1; caching >= 0; caching--) {
        struct pl_scheduler_params p;
        rig_params(&p, 64, 16, 256, 8, 128);
        p.enable_prefix_caching = caching;
        struct rig r;
        REQUIRE(rig_init(&r, &p));
        int32_t pa[40], pb[45];
        make_prompt(pa, 40, 5);
        make_prompt(pb, 45, 5); /* same first 40 tokens */
        pb[40] = 1;
        struct pl_seq_group *a = add(&r, 1, pa, 40, 2, 1);
        CHECK(run_to_end(&r, 10) > 0);
        struct pl_seq_group *b = add(&r, 2, pb, 45, 3, 1);
        REQUIRE(rig_schedule(&r));
        REQUIRE(r.plan.n_seqs == 1);
        CHECK(b->n_cached_tokens == (caching ? 32 : 0));
        CHECK(r.plan.seqs[0].start_pos == (caching ? 32 : 0));
        CHECK(r.plan.seqs[0].n_new == (caching ? 13 : 45));
        REQUIRE(rig_finish_step(&r));
        CHECK(run_to_end(&r, 10) > 0);
        /* B's outputs read A's cached KV through the fake pool: they must still be right */
        CHECK(matches_reference(a) && matches_reference(b));
        struct pl_scheduler_stats st;
        pl_scheduler_get_stats(r.s, &st);
        CHECK(st.blocks.prefix_hit_tokens == (caching ? 32 : 0));
        rig_fini(&r);
    }
}

static void test_chunked_prefill_off(void)
{
    struct pl_scheduler_params p;
    rig_params(&p, 64, 16, 64, 4, 64);
    p.enable_chunked_prefill = false;
    struct rig r;
    REQUIRE(rig_init(&r, &p));
    int32_t pa[40], pb[40];
    make_prompt(pa, 40, base_without_stop(40, 4, 1, 1));
    make_prompt(pb, 40, base_without_stop(40, 4, 1, 300));
    struct pl_seq_group *a = add(&r, 1, pa, 40, 4, 1);
    struct pl_seq_group *b = add(&r, 2, pb, 40, 4, 1);
    REQUIRE(rig_schedule(&r));
    /* both prompts cannot fit the 64-token budget whole: B waits, unsplit */
    CHECK(r.plan.n_seqs == 1 && r.plan.seqs[0].n_new == 40 && b->queue == PL_SEQ_GROUP_IN_WAITING);
    REQUIRE(rig_finish_step(&r));
    REQUIRE(rig_schedule(&r));
    CHECK(r.plan.n_seqs == 2 && r.plan.seqs[0].is_decode && r.plan.seqs[1].n_new == 40);
    REQUIRE(rig_finish_step(&r));
    CHECK(run_to_end(&r, 20) > 0);
    CHECK(matches_reference(a) && matches_reference(b));
    rig_fini(&r);
}

int main(void)
{
    PL_RUN(test_state_machine);
    PL_RUN(test_chunked_prefill);
    PL_RUN(test_decode_first);
    PL_RUN(test_preemption);
    PL_RUN(test_abort);
    PL_RUN(test_admission_refusals);
    PL_RUN(test_max_num_seqs);
    PL_RUN(test_parallel_sampling_shares_blocks);
    PL_RUN(test_prefix_cache_through_scheduler);
    PL_RUN(test_chunked_prefill_off);
    return pl_test_summary();
}
