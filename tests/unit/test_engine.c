/*
 * test_engine.c -- the engine loop against the fake paged model of
 * engine_test_model.h, whose logits are a pure function of the history it
 * reads back through the block tables, so its greedy reference
 * (tm_reference) and logits (tm_logits) are independent of the engine.
 *
 * Checks: greedy outputs equal the reference alone, batched, under a tiny pool
 * (preemption), with small prefill chunks and with prefix-cache hits; seeded
 * sampling is reproducible and independent of batch composition, and sample k
 * of a seeded n > 1 request equals the n = 1 request with seed + k; n > 1
 * shares prompt blocks (block counts) and copies on write; stop strings across
 * token boundaries, streamed deltas concatenating to the final text; logprobs
 * and prompt logprobs equal log_softmax of the reference logits; aborts free
 * blocks; a randomized soak ends with no leaked block.
 * The whole suite runs twice: with the host sampler on downloaded logits, and
 * with the model's run_sample entry (the fake's logits through the CPU
 * backend's sample op). test_backend_sampling_matches_host runs one mixed
 * workload (seeded and unseeded rows, penalties, top-k/top-p/min-p, logprobs,
 * n > 1) both ways and requires identical outputs, and checks which steps
 * fall back to the host path (min_tokens, logit_bias, prompt_logprobs).
 */
#include "test.h"
#include "engine_test_model.h"

#include "engine/scheduler.h"
#include "model/tiny_tokenizer.h"
#include "tokenizer/tokenizer.h"

#include <math.h>
#include <unistd.h>

struct cfg {
    int n_blocks, bs, budget, max_seqs, max_len;
    bool caching;
};

static const struct cfg CFG_BIG = {256, 16, 512, 32, 256, true};

/* whether harnesses give the engine the model's run_sample entry */
static bool g_backend_sampling;

struct harness {
    struct test_model m;
    struct pl_engine *e;
    struct pl_engine_model im;
    struct pl_engine_detok dt;
};

/* Creates the engine over im / dt (NULL: the fake model's own interfaces). */
static bool h_init_with(struct harness *h, const struct cfg *c, uint64_t seed,
                        const struct pl_engine_model *im, const struct pl_engine_detok *dt)
{
    tm_init(&h->m, c->n_blocks, c->bs, c->max_len + 8);
    h->im = im ? *im : tm_interface_ex(&h->m, g_backend_sampling);
    h->dt = dt ? *dt : tm_detok_interface();
    struct pl_engine_params p;
    pl_engine_params_default(&p);
    p.sched.n_blocks = c->n_blocks;
    p.sched.block_size = c->bs;
    p.sched.max_num_batched_tokens = c->budget;
    p.sched.max_num_seqs = c->max_seqs;
    p.sched.max_model_len = c->max_len;
    p.sched.enable_prefix_caching = c->caching;
    p.seed = seed;
    int32_t eos = TM_EOS;
    p.eos_ids = &eos;
    p.n_eos = 1;
    struct pl_err err;
    if (pl_engine_new(&p, &h->im, &h->dt, &h->e, &err) != PL_STATUS_OK) {
        fprintf(stderr, "engine: %s\n", err.msg);
        tm_fini(&h->m);
        return false;
    }
    return true;
}

static bool h_init(struct harness *h, const struct cfg *c, uint64_t seed)
{
    return h_init_with(h, c, seed, NULL, NULL);
}

static void h_fini(struct harness *h)
{
    pl_engine_free(h->e);
    tm_fini(&h->m);
}

static bool h_add(struct harness *h, uint64_t id, const int32_t *prompt, int n,
                  const struct pl_sampling_params *sp)
{
    struct pl_engine_request r = {0};
    r.request_id = id;
    r.prompt = prompt;
    r.n_prompt = n;
    r.params = sp;
    struct pl_err err;
    if (pl_engine_add(h->e, &r, &err) != PL_STATUS_OK) {
        fprintf(stderr, "add %llu: %s\n", (unsigned long long)id, err.msg);
        return false;
    }
    return true;
}

/* Steps until everything finished; collects complete outputs. */
static bool h_run(struct harness *h, struct pl_outputs *out)
{
    struct pl_err err;
    int guard = 0;
    while (pl_engine_has_unfinished(h->e)) {
        if (pl_engine_step(h->e, &err) != PL_STATUS_OK) {
            fprintf(stderr, "step: %s\n", err.msg);
            return false;
        }
        if (pl_scheduler_check(pl_engine_scheduler(h->e), &err) != PL_STATUS_OK) {
            fprintf(stderr, "check: %s\n", err.msg);
            return false;
        }
        if (++guard > 100000)
            return false;
    }
    return pl_engine_poll(h->e, false, out, &err) == PL_STATUS_OK;
}

static const struct pl_request_output *find_out(const struct pl_outputs *o, const char *id)
{
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->items[i].request_id, id))
            return &o->items[i];
    return NULL;
}

static void greedy_params(struct pl_sampling_params *sp, int max_tokens)
{
    pl_sampling_params_default(sp);
    sp->temperature = 0;
    sp->max_tokens = max_tokens;
}

#define N_PROMPTS 8
static int32_t prompts[N_PROMPTS][80];
static int prompt_len[N_PROMPTS];

static void make_prompts(void)
{
    uint64_t x = 12345;
    for (int i = 0; i < N_PROMPTS; i++) {
        prompt_len[i] = 5 + i * 9;
        for (int j = 0; j < prompt_len[i]; j++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            prompts[i][j] = (int32_t)(4 + (x >> 33) % (TM_VOCAB - 4));
        }
        /* prompts 4..7 share a 32-token prefix with prompt 3 (prefix-cache hits) */
        if (i >= 4)
            memcpy(prompts[i], prompts[3], sizeof(int32_t) * 32);
    }
}

/* Checks one finished greedy output against the reference. */
static bool check_greedy(const struct pl_request_output *o, int i, int max_tokens)
{
    if (!o || o->n_outputs != 1 || !o->finished)
        return false;
    int32_t ref[256];
    bool eos;
    int n = tm_reference(prompts[i], prompt_len[i], max_tokens, ref, false, &eos);
    const struct pl_completion_output *c = &o->outputs[0];
    bool ok = c->n_token_ids == n && !memcmp(c->token_ids, ref, sizeof(int32_t) * (size_t)n);
    ok = ok && c->finish_reason == (eos ? PL_FINISH_STOP : PL_FINISH_LENGTH);
    ok = ok && c->stop_reason_kind == PL_STOP_REASON_NONE;
    char text[600];
    tm_text(ref, n, text);
    ok = ok && !strcmp(c->text, text) && c->text_len == strlen(text);
    ok = ok && o->n_prompt_token_ids == prompt_len[i] &&
         !memcmp(o->prompt_token_ids, prompts[i], sizeof(int32_t) * (size_t)prompt_len[i]);
    if (!ok)
        fprintf(stderr, "prompt %d: %d tokens (reference %d), finish %d\n", i, c->n_token_ids, n,
                c->finish_reason);
    return ok;
}

/* Runs all prompts under cfg, together or one by one; checks against the reference. */
static void run_greedy(const struct cfg *c, bool together, int max_tokens,
                       struct pl_engine_stats *stats_out)
{
    struct harness h;
    REQUIRE(h_init(&h, c, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, max_tokens);
    struct pl_outputs out = {0};
    for (int i = 0; i < N_PROMPTS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "%d", i);
        CHECK(h_add(&h, (uint64_t)i, prompts[i], prompt_len[i], &sp));
        if (!together)
            CHECK(h_run(&h, &out));
    }
    CHECK(h_run(&h, &out));
    CHECK(out.n == N_PROMPTS);
    for (int i = 0; i < N_PROMPTS; i++) {
        char name[16];
        snprintf(name, sizeof(name), "%d", i);
        CHECKF(check_greedy(find_out(&out, name), i, max_tokens), "prompt %d", i);
    }
    CHECK(h.m.n_errors == 0);
    pl_engine_get_stats(h.e, stats_out);
    CHECK(stats_out->sched.blocks.n_blocks_used == 0);
    CHECK(!pl_engine_has_pending(h.e));
    pl_outputs_free(&out);
    h_fini(&h);
}

static void test_greedy_alone_and_batched(void)
{
    struct pl_engine_stats st;
    run_greedy(&CFG_BIG, false, 40, &st);
    CHECK(st.sched.n_preemptions == 0);
    run_greedy(&CFG_BIG, true, 40, &st);
    CHECK(st.n_generation_tokens > 0);
    CHECK(st.n_requests_finished == N_PROMPTS);
}

static void test_greedy_preemption(void)
{
    /* 12 blocks of 8: the longest request alone needs 14 blocks of... keep it within
       the pool: prompt 68 + 40 tokens = 108 tokens = 14 blocks of 8 */
    struct cfg c = {16, 8, 512, 16, 256, true};
    struct pl_engine_stats st;
    run_greedy(&c, true, 40, &st);
    CHECK(st.sched.n_preemptions > 0);
}

static void test_greedy_small_chunks(void)
{
    struct cfg c = {256, 16, 8, 4, 256, true};
    struct pl_engine_stats st;
    run_greedy(&c, true, 30, &st);
    c.caching = false;
    run_greedy(&c, true, 30, &st);
}

static void test_prefix_cache_hits(void)
{
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, 20);
    struct pl_outputs a = {0}, b = {0};
    CHECK(h_add(&h, 1, prompts[7], prompt_len[7], &sp));
    CHECK(h_run(&h, &a));
    CHECK(h_add(&h, 2, prompts[7], prompt_len[7], &sp));
    CHECK(h_add(&h, 3, prompts[5], prompt_len[5], &sp)); /* shares 32 tokens with 7 */
    CHECK(h_run(&h, &b));
    const struct pl_request_output *o1 = find_out(&a, "1"), *o2 = find_out(&b, "2"),
                                   *o3 = find_out(&b, "3");
    REQUIRE(o1 && o2 && o3);
    CHECK(o1->num_cached_tokens == 0);
    /* 68 prompt tokens: 4 full blocks of 16, all cached */
    CHECK(o2->num_cached_tokens == 64);
    CHECK(o3->num_cached_tokens == 32);
    CHECK(check_greedy(o1, 7, 20) && check_greedy(o2, 7, 20) && check_greedy(o3, 5, 20));
    struct pl_engine_stats st;
    pl_engine_get_stats(h.e, &st);
    CHECK(st.sched.blocks.prefix_hit_tokens == 96);
    CHECK(h.m.n_errors == 0);
    pl_outputs_free(&a);
    pl_outputs_free(&b);
    h_fini(&h);
}

/* Runs one sampled request with extra random traffic; returns its outputs (n samples). */
static void sampled_run(int extra, uint64_t engine_seed, int n, uint64_t seed, int32_t *out,
                        int *n_out, struct cfg c)
{
    struct harness h;
    REQUIRE(h_init(&h, &c, engine_seed));
    struct pl_sampling_params sp, other;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 24;
    sp.n = n;
    sp.has_seed = true;
    sp.seed = seed;
    sp.ignore_eos = true;
    pl_sampling_params_default(&other);
    other.max_tokens = 17;
    for (int i = 0; i < extra; i++)
        CHECK(h_add(&h, 100 + (uint64_t)i, prompts[i % N_PROMPTS], prompt_len[i % N_PROMPTS],
                    &other));
    CHECK(h_add(&h, 1, prompts[2], prompt_len[2], &sp));
    for (int i = 0; i < extra; i++)
        CHECK(h_add(&h, 200 + (uint64_t)i, prompts[(i + 3) % N_PROMPTS],
                    prompt_len[(i + 3) % N_PROMPTS], &other));
    struct pl_outputs o = {0};
    CHECK(h_run(&h, &o));
    const struct pl_request_output *r = find_out(&o, "1");
    REQUIRE(r && r->n_outputs == n);
    for (int k = 0; k < n; k++) {
        CHECK(r->outputs[k].index == k);
        CHECK(r->outputs[k].n_token_ids == 24);
        n_out[k] = r->outputs[k].n_token_ids;
        memcpy(out + k * 24, r->outputs[k].token_ids, sizeof(int32_t) * 24);
    }
    CHECK(h.m.n_errors == 0);
    pl_outputs_free(&o);
    h_fini(&h);
}

static void test_seeded_sampling(void)
{
    int32_t a[24 * 4], b[24 * 4], c[24 * 4];
    int na[4], nb[4], nc[4];
    sampled_run(0, 1, 1, 777, a, na, CFG_BIG);
    sampled_run(0, 1, 1, 777, b, nb, CFG_BIG);
    CHECK(!memcmp(a, b, sizeof(int32_t) * 24)); /* reproducible */
    sampled_run(6, 99, 1, 777, c, nc, CFG_BIG);
    CHECK(!memcmp(a, c, sizeof(int32_t) * 24)); /* independent of the batch and engine seed */
    struct cfg tiny = {20, 8, 24, 8, 256, true};
    sampled_run(6, 5, 1, 777, c, nc, tiny);
    CHECK(!memcmp(a, c, sizeof(int32_t) * 24)); /* ... and of preemption, chunking */
    sampled_run(0, 1, 1, 778, b, nb, CFG_BIG);
    CHECK(memcmp(a, b, sizeof(int32_t) * 24) != 0); /* the seed matters */

    /* n = 3 with seed s: sample k equals the n = 1 request with seed s + k */
    int32_t multi[24 * 3];
    int nm[3];
    sampled_run(4, 3, 3, 777, multi, nm, CFG_BIG);
    CHECK(!memcmp(multi, a, sizeof(int32_t) * 24));
    CHECK(!memcmp(multi + 24, b, sizeof(int32_t) * 24));
    sampled_run(0, 1, 1, 779, c, nc, CFG_BIG);
    CHECK(!memcmp(multi + 48, c, sizeof(int32_t) * 24));
}

static void test_n_shares_prompt_blocks(void)
{
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.n = 4;
    sp.max_tokens = 10;
    sp.ignore_eos = true;
    sp.has_seed = true;
    sp.seed = 5;
    /* prompt 5 has 50 tokens: blocks 0..2 full, block 3 holds 2 tokens */
    CHECK(h_add(&h, 1, prompts[5], prompt_len[5], &sp));
    struct pl_err err;
    struct pl_engine_stats st;
    REQUIRE(pl_engine_step(h.e, &err) == PL_STATUS_OK); /* prefill + first samples + fork */
    pl_engine_get_stats(h.e, &st);
    CHECK(st.sched.n_running_seqs == 4);
    CHECK(st.sched.blocks.n_blocks_used == 4); /* shared, not 16 */
    REQUIRE(pl_engine_step(h.e, &err) == PL_STATUS_OK); /* 4 decodes write into block 3 */
    pl_engine_get_stats(h.e, &st);
    CHECK(st.sched.blocks.n_cow_copies == 3);   /* three copy, the last keeps it */
    CHECK(st.sched.blocks.n_blocks_used == 7);
    struct pl_outputs o = {0};
    CHECK(h_run(&h, &o));
    CHECK(o.n == 1 && o.items[0].n_outputs == 4);
    CHECK(h.m.n_errors == 0);
    pl_outputs_free(&o);
    h_fini(&h);
}

/* Streams one request with stop strings; returns the concatenated deltas. */
static void stream_stop(const char *stop, bool include, char *final_text, char *streamed,
                        struct pl_completion_output *last)
{
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, 60);
    sp.ignore_eos = true;
    const char *stops[2] = {"zzzzzzzzzz", stop};
    sp.stop = stops;
    sp.n_stop = 2;
    sp.include_stop_str_in_output = include;
    CHECK(h_add(&h, 1, prompts[1], prompt_len[1], &sp));
    struct pl_err err;
    streamed[0] = '\0';
    bool finished = false;
    int n_tok = 0;
    while (!finished) {
        REQUIRE(pl_engine_step(h.e, &err) == PL_STATUS_OK);
        struct pl_outputs o = {0};
        REQUIRE(pl_engine_poll(h.e, true, &o, &err) == PL_STATUS_OK);
        for (int i = 0; i < o.n; i++) {
            for (int k = 0; k < o.items[i].n_outputs; k++) {
                struct pl_completion_output *c = &o.items[i].outputs[k];
                strcat(streamed, c->text);
                n_tok += c->n_token_ids;
                /* what was released never contains the stop string unless asked */
                if (!include)
                    CHECK(strstr(streamed, stop) == NULL);
                if (c->finish_reason != PL_FINISH_NONE) {
                    *last = *c;
                    last->stop_str = NULL;
                    last->n_token_ids = n_tok;
                    CHECK(c->stop_str && !strcmp(c->stop_str, stop));
                }
            }
            finished = finished || o.items[i].finished;
        }
        pl_outputs_free(&o);
    }
    (void)final_text;
    h_fini(&h);
}

static void test_stop_strings_streaming(void)
{
    int32_t ref[60];
    bool eos;
    int n = tm_reference(prompts[1], prompt_len[1], 60, ref, true, &eos);
    char text[200];
    tm_text(ref, n, text);
    /* a stop string straddling a token boundary: last char of token k, first of k+1,
       whose first occurrence is exactly there */
    int k = -1;
    char stop[3] = {0};
    for (int t = 5; t < 40; t++) {
        stop[0] = text[2 * t + 1];
        stop[1] = text[2 * t + 2];
        if (strstr(text, stop) == text + 2 * t + 1) {
            k = t;
            break;
        }
    }
    REQUIRE(k >= 0);
    char streamed[200];
    struct pl_completion_output last;
    stream_stop(stop, false, NULL, streamed, &last);
    CHECK(strlen(streamed) == (size_t)(2 * k + 1));
    CHECK(!strncmp(streamed, text, (size_t)(2 * k + 1)));
    CHECK(last.finish_reason == PL_FINISH_STOP);
    CHECK(last.stop_reason_kind == PL_STOP_REASON_STRING);
    CHECK(last.n_token_ids == k + 2); /* the token completing the stop string is generated */
    stream_stop(stop, true, NULL, streamed, &last);
    CHECK(strlen(streamed) == (size_t)(2 * k + 3));
    CHECK(!strncmp(streamed, text, (size_t)(2 * k + 3)));
}

static void test_stop_token_ids_and_min_tokens(void)
{
    int32_t ref[60];
    bool eos;
    int n = tm_reference(prompts[2], prompt_len[2], 30, ref, true, &eos);
    REQUIRE(n == 30);
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, 30);
    sp.ignore_eos = true;
    int32_t stop_id = ref[6];
    sp.stop_token_ids = &stop_id;
    sp.n_stop_token_ids = 1;
    CHECK(h_add(&h, 1, prompts[2], prompt_len[2], &sp));
    struct pl_outputs o = {0};
    CHECK(h_run(&h, &o));
    REQUIRE(o.n == 1);
    const struct pl_completion_output *c = &o.items[0].outputs[0];
    int first = 0;
    while (ref[first] != stop_id)
        first++;
    CHECK(c->n_token_ids == first + 1);
    CHECK(c->finish_reason == PL_FINISH_STOP && c->stop_reason_kind == PL_STOP_REASON_TOKEN &&
          c->stop_token_id == stop_id);
    char text[200];
    tm_text(ref, first, text); /* the stop token's text is left out */
    CHECK(!strcmp(c->text, text));
    pl_outputs_free(&o);
    h_fini(&h);
}

static double log_softmax_at(const float *l, int v, int tok)
{
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < v; i++)
        mx = l[i] > mx ? l[i] : mx;
    for (int i = 0; i < v; i++)
        s += exp((double)l[i] - mx);
    return (double)l[tok] - mx - log(s);
}

static void test_logprobs(void)
{
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, 12);
    sp.logprobs = 3;
    sp.prompt_logprobs = 2;
    /* first a plain run of the same prompt fills the prefix cache ... */
    struct pl_sampling_params plain;
    greedy_params(&plain, 4);
    struct pl_outputs o = {0};
    CHECK(h_add(&h, 1, prompts[6], prompt_len[6], &plain));
    CHECK(h_run(&h, &o));
    pl_outputs_free(&o);
    /* ... which a prompt_logprobs request must not use (every position is needed) */
    CHECK(h_add(&h, 2, prompts[6], prompt_len[6], &sp));
    CHECK(h_run(&h, &o));
    REQUIRE(o.n == 1);
    const struct pl_request_output *r = &o.items[0];
    CHECK(r->num_cached_tokens == 0);
    REQUIRE(r->has_prompt_logprobs && r->prompt_logprobs);
    int np = prompt_len[6];
    float logits[TM_VOCAB];
    CHECK(r->prompt_logprobs[0].n_top == -1);
    for (int p = 1; p < np; p++) {
        tm_logits(prompts[6], p, logits);
        const struct pl_logprob_entry *en = &r->prompt_logprobs[p];
        CHECK(en->token_id == prompts[6][p]);
        CHECK_NEAR(en->logprob, log_softmax_at(logits, TM_VOCAB, prompts[6][p]), 1e-4);
        CHECK(en->n_top == 2);
        CHECK(en->top_ids[0] == tm_preferred(prompts[6], p));
    }
    const struct pl_completion_output *c = &r->outputs[0];
    REQUIRE(c->has_logprobs && c->logprobs);
    int32_t hist[200];
    memcpy(hist, prompts[6], sizeof(int32_t) * (size_t)np);
    double cum = 0;
    for (int i = 0; i < c->n_token_ids; i++) {
        tm_logits(hist, np + i, logits);
        double lp = log_softmax_at(logits, TM_VOCAB, c->token_ids[i]);
        CHECK_NEAR(c->logprobs[i].logprob, lp, 1e-4);
        CHECK(c->logprobs[i].token_id == c->token_ids[i]);
        CHECK(c->logprobs[i].n_top == 3 && c->logprobs[i].top_ids[0] == c->token_ids[i]);
        CHECK(c->logprobs[i].rank == 1);
        cum += lp;
        hist[np + i] = c->token_ids[i];
    }
    CHECK_NEAR(c->cumulative_logprob, cum, 1e-3);
    pl_outputs_free(&o);

    /* prompt logprobs survive small chunks */
    struct harness h2;
    struct cfg small = {64, 8, 8, 4, 256, true};
    REQUIRE(h_init(&h2, &small, 0));
    CHECK(h_add(&h2, 3, prompts[6], prompt_len[6], &sp));
    CHECK(h_run(&h2, &o));
    REQUIRE(o.n == 1 && o.items[0].has_prompt_logprobs);
    for (int p = 1; p < np; p++) {
        tm_logits(prompts[6], p, logits);
        CHECK_NEAR(o.items[0].prompt_logprobs[p].logprob,
                   log_softmax_at(logits, TM_VOCAB, prompts[6][p]), 1e-4);
    }
    pl_outputs_free(&o);
    h_fini(&h2);
    h_fini(&h);
}

static void test_abort_frees_blocks(void)
{
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, 50);
    sp.ignore_eos = true;
    CHECK(h_add(&h, 1, prompts[7], prompt_len[7], &sp));
    CHECK(h_add(&h, 2, prompts[6], prompt_len[6], &sp));
    struct pl_err err;
    for (int i = 0; i < 5; i++)
        REQUIRE(pl_engine_step(h.e, &err) == PL_STATUS_OK);
    struct pl_engine_stats st;
    pl_engine_get_stats(h.e, &st);
    CHECK(st.sched.blocks.n_blocks_used > 0);
    CHECK(pl_engine_abort(h.e, 1, &err) == PL_STATUS_OK);
    CHECK(pl_engine_abort(h.e, 42, &err) == PL_STATUS_NOT_FOUND);
    struct pl_outputs o = {0};
    CHECK(h_run(&h, &o));
    const struct pl_request_output *a = find_out(&o, "1"), *b = find_out(&o, "2");
    REQUIRE(a && b);
    CHECK(a->outputs[0].finish_reason == PL_FINISH_ABORT);
    CHECK(a->outputs[0].n_token_ids >= 4 && a->outputs[0].n_token_ids < 50);
    CHECK(b->outputs[0].finish_reason == PL_FINISH_LENGTH && b->outputs[0].n_token_ids == 50);
    pl_engine_get_stats(h.e, &st);
    CHECK(st.sched.blocks.n_blocks_used == 0);
    pl_outputs_free(&o);
    h_fini(&h);
}

static void test_refusals(void)
{
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 0));
    struct pl_sampling_params sp;
    greedy_params(&sp, 10);
    struct pl_engine_request r = {0};
    struct pl_err err;
    int32_t bad[2] = {5, TM_VOCAB};
    r.request_id = 1;
    r.prompt = bad;
    r.n_prompt = 2;
    r.params = &sp;
    CHECK(pl_engine_add(h.e, &r, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "vocabulary") != NULL);
    sp.temperature = -1;
    r.prompt = prompts[0];
    CHECK(pl_engine_add(h.e, &r, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "temperature") != NULL);
    greedy_params(&sp, 300); /* beyond max_model_len */
    CHECK(pl_engine_add(h.e, &r, &err) == PL_STATUS_INVALID_ARGUMENT);
    greedy_params(&sp, -1); /* None: up to the context */
    CHECK(pl_engine_add(h.e, &r, &err) == PL_STATUS_OK);
    CHECK(pl_engine_add(h.e, &r, &err) == PL_STATUS_INVALID_ARGUMENT); /* duplicate id */
    h_fini(&h); /* frees the unfinished request */
}

/* Randomized soak: params, aborts, streaming; no leak at the end. */
static void test_soak(void)
{
    struct cfg c = {40, 8, 64, 16, 160, true};
    struct harness h;
    REQUIRE(h_init(&h, &c, 7));
    uint64_t x = 99;
#define RND() (x = x * 6364136223846793005ULL + 1442695040888963407ULL, (x >> 33))
    struct pl_err err;
    int n_added = 0, n_done = 0, n_aborted = 0;
    const char *stop_pool[3] = {"ab", "qq", "xyz"};
    struct live {
        uint64_t id;
        int n_tok;
        size_t n_text;
        bool greedy;
        int prompt;
        int max_tokens;
        int32_t toks[160];
    } *live = calloc(400, sizeof(*live));
    int steps = 0;
    while ((n_added < 400 || pl_engine_has_unfinished(h.e)) && steps < 20000) {
        steps++;
        for (int a = 0; a < (int)(RND() % 3) && n_added < 400; a++) {
            struct pl_sampling_params sp;
            pl_sampling_params_default(&sp);
            int pi = (int)(RND() % N_PROMPTS);
            struct live *L = &live[n_added];
            L->id = (uint64_t)n_added;
            L->prompt = pi;
            L->greedy = RND() % 2;
            sp.temperature = L->greedy ? 0.0f : 0.5f + (float)(RND() % 100) / 100.0f;
            sp.max_tokens = 1 + (int)(RND() % 40);
            L->max_tokens = sp.max_tokens;
            if (!L->greedy) {
                sp.n = 1 + (int)(RND() % 3);
                sp.top_p = RND() % 2 ? 0.9f : 1.0f;
                sp.top_k = RND() % 2 ? 20 : 0;
                if (RND() % 2) {
                    sp.has_seed = true;
                    sp.seed = RND();
                }
                sp.presence_penalty = RND() % 3 == 0 ? 0.5f : 0.0f;
            }
            if (RND() % 4 == 0) {
                sp.stop = stop_pool;
                sp.n_stop = 3;
            }
            if (RND() % 5 == 0)
                sp.logprobs = 2;
            if (RND() % 7 == 0)
                sp.prompt_logprobs = 1;
            n_added++;
            CHECK(h_add(&h, L->id, prompts[pi], prompt_len[pi], &sp));
        }
        if (RND() % 20 == 0 && n_added > 0) {
            uint64_t id = RND() % (uint64_t)n_added;
            if (pl_engine_abort(h.e, id, &err) == PL_STATUS_OK)
                n_aborted++;
        }
        if (pl_engine_step(h.e, &err) != PL_STATUS_OK) {
            fprintf(stderr, "soak step %d: %s\n", steps, err.msg);
            CHECK(0);
            break;
        }
        struct pl_outputs o = {0};
        CHECK(pl_engine_poll(h.e, true, &o, &err) == PL_STATUS_OK);
        for (int i = 0; i < o.n; i++) {
            const struct pl_request_output *r = &o.items[i];
            struct live *L = &live[atoi(r->request_id)];
            for (int k = 0; k < r->n_outputs; k++) {
                const struct pl_completion_output *cc = &r->outputs[k];
                if (cc->index != 0)
                    continue;
                for (int t = 0; t < cc->n_token_ids && L->n_tok < 160; t++)
                    L->toks[L->n_tok++] = cc->token_ids[t];
                L->n_text += cc->text_len;
                if (cc->finish_reason != PL_FINISH_NONE && L->greedy &&
                    cc->finish_reason != PL_FINISH_ABORT) {
                    /* greedy: a prefix of the reference (stop strings may cut it) */
                    int32_t ref[64];
                    bool eos;
                    int nr = tm_reference(prompts[L->prompt], prompt_len[L->prompt],
                                          L->max_tokens, ref, false, &eos);
                    CHECKF(L->n_tok <= nr &&
                               !memcmp(ref, L->toks, sizeof(int32_t) * (size_t)L->n_tok),
                           "request %llu", (unsigned long long)L->id);
                    if (cc->stop_reason_kind == PL_STOP_REASON_NONE)
                        CHECK(L->n_tok == nr);
                }
            }
            if (r->finished)
                n_done++;
        }
        pl_outputs_free(&o);
        if (pl_scheduler_check(pl_engine_scheduler(h.e), &err) != PL_STATUS_OK) {
            fprintf(stderr, "soak: %s\n", err.msg);
            CHECK(0);
            break;
        }
    }
    CHECK(n_done == n_added);
    CHECK(!pl_engine_has_pending(h.e));
    struct pl_engine_stats st;
    pl_engine_get_stats(h.e, &st);
    CHECK(st.sched.blocks.n_blocks_used == 0);
    CHECK(st.sched.blocks.n_blocks_free == c.n_blocks);
    CHECK(st.sched.n_preemptions > 0);
    CHECK(h.m.n_errors == 0);
    CHECK(n_aborted > 0);
    free(live);
    h_fini(&h);
}

/* One mixed workload; outputs appended to *o, stats of the engine in *es. */
static void mixed_run(bool backend, bool host_only_row, struct pl_outputs *o,
                      struct pl_engine_stats *es)
{
    bool saved = g_backend_sampling;
    g_backend_sampling = backend;
    struct harness h;
    REQUIRE(h_init(&h, &CFG_BIG, 4242));
    g_backend_sampling = saved;
    struct pl_sampling_params sp[6];
    for (int i = 0; i < 6; i++) {
        pl_sampling_params_default(&sp[i]);
        sp[i].max_tokens = 20;
        sp[i].ignore_eos = true;
    }
    sp[0].temperature = 0; /* greedy with penalties and logprobs */
    sp[0].repetition_penalty = 1.3f;
    sp[0].logprobs = 3;
    sp[1].temperature = 0.8f; /* unseeded, top-k + top-p */
    sp[1].top_k = 20;
    sp[1].top_p = 0.9f;
    sp[2].temperature = 1.2f; /* seeded n = 3 with penalties */
    sp[2].has_seed = true;
    sp[2].seed = 99;
    sp[2].n = 3;
    sp[2].frequency_penalty = 0.5f;
    sp[2].presence_penalty = 0.3f;
    sp[3].min_p = 0.2f; /* unseeded, min-p, logprobs */
    sp[3].logprobs = 5;
    sp[4].temperature = 2.0f; /* flat: the draw lands deep in the distribution */
    sp[4].has_seed = true;
    sp[4].seed = 7;
    sp[5].temperature = 0.5f;
    if (host_only_row) {
        static const struct pl_logit_bias bias = {5, 1.0f};
        sp[5].logit_bias = &bias;
        sp[5].n_logit_bias = 1;
    }
    for (int i = 0; i < 6; i++)
        CHECK(h_add(&h, 1 + (uint64_t)i, prompts[i], prompt_len[i], &sp[i]));
    CHECK(h_run(&h, o));
    CHECK(h.m.n_errors == 0);
    pl_engine_get_stats(h.e, es);
    if (backend)
        CHECK(h.m.n_sample_runs == (int)es->n_steps_backend_sampling);
    else
        CHECK(h.m.n_sample_runs == 0);
    h_fini(&h);
}

static void test_backend_sampling_matches_host(void)
{
    for (int host_only = 0; host_only < 2; host_only++) {
        struct pl_outputs a = {0}, b = {0};
        struct pl_engine_stats sa, sb;
        mixed_run(false, host_only, &a, &sa);
        mixed_run(true, host_only, &b, &sb);
        CHECK(sa.n_steps_backend_sampling == 0 && sa.n_steps_host_sampling > 0);
        if (host_only) /* the logit_bias row keeps every step of its life on the host */
            CHECK(sb.n_steps_host_sampling > 0);
        else
            CHECK(sb.n_steps_host_sampling == 0 && sb.n_steps_backend_sampling > 0);
        REQUIRE(a.n == 6 && b.n == 6);
        for (int i = 0; i < 6; i++) {
            const struct pl_request_output *x = &a.items[i];
            const struct pl_request_output *y = find_out(&b, x->request_id);
            REQUIRE(y && x->n_outputs == y->n_outputs);
            for (int k = 0; k < x->n_outputs; k++) {
                const struct pl_completion_output *cx = &x->outputs[k], *cy = &y->outputs[k];
                CHECKF(cx->n_token_ids == cy->n_token_ids &&
                           !memcmp(cx->token_ids, cy->token_ids,
                                   sizeof(int32_t) * (size_t)cx->n_token_ids),
                       "request %s sample %d: tokens differ between host and backend sampling",
                       x->request_id, k);
                CHECK(cx->has_logprobs == cy->has_logprobs);
                if (cx->has_logprobs && cy->has_logprobs) {
                    CHECK(cx->cumulative_logprob == cy->cumulative_logprob);
                    for (int t = 0; t < cx->n_token_ids; t++)
                        CHECK(!memcmp(&cx->logprobs[t], &cy->logprobs[t],
                                      sizeof(cx->logprobs[t])));
                }
            }
        }
        pl_outputs_free(&a);
        pl_outputs_free(&b);
    }
}

/* ---- fault isolation ---- */

/*
 * A detokenizer that fails on the second token of any sequence whose prompt
 * starts with POISON (out of memory, a bug: a failure of that request alone),
 * and otherwise is the fake model's.
 */
#define POISON 7
struct poison_state {
    void *inner;
    bool poison;
    int n_pushed;
};

static pl_status poison_init(void *ctx, const int32_t *prompt, int n_prompt, bool skip,
                             void **state, struct pl_err *err)
{
    struct poison_state *s = calloc(1, sizeof(*s));
    s->poison = n_prompt > 0 && prompt[0] == POISON;
    pl_status st = tm_detok_init(ctx, prompt, n_prompt, skip, &s->inner, err);
    if (st != PL_STATUS_OK)
        free(s);
    else
        *state = s;
    return st;
}

static pl_status poison_push(void *state, int32_t id, char **text, size_t *len,
                             struct pl_err *err)
{
    struct poison_state *s = state;
    if (s->poison && ++s->n_pushed == 2)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "poisoned detokenizer");
    return tm_detok_push(s->inner, id, text, len, err);
}

static pl_status poison_flush(void *state, char **text, size_t *len, struct pl_err *err)
{
    return tm_detok_flush(((struct poison_state *)state)->inner, text, len, err);
}

static void poison_fini(void *state)
{
    struct poison_state *s = state;
    tm_detok_fini(s->inner);
    free(s);
}

/* Steps once and takes the deltas; the step's status goes to *step_st. */
static void step_poll(struct harness *h, pl_status *step_st, struct pl_outputs *out)
{
    struct pl_err err;
    *step_st = pl_engine_step(h->e, &err);
    REQUIRE(pl_scheduler_check(pl_engine_scheduler(h->e), &err) == PL_STATUS_OK);
    REQUIRE(pl_engine_poll(h->e, true, out, &err) == PL_STATUS_OK);
}

/*
 * One request's detokenizer fails in the very step where another request ends
 * (max_tokens): that step still succeeds, the failing request alone ends with an
 * error, the other's end ("length") is in the poll right after that step -- not
 * held for a later step -- and a third request runs on to its reference output.
 */
static void test_request_failure_is_isolated(void)
{
    struct pl_engine_detok dt = {NULL, poison_init, poison_push, poison_flush, poison_fini};
    struct harness h;
    REQUIRE(h_init_with(&h, &CFG_BIG, 0, NULL, &dt));
    int32_t poisoned[6];
    memcpy(poisoned, prompts[1], sizeof(poisoned));
    poisoned[0] = POISON;
    REQUIRE(prompts[0][0] != POISON && prompts[2][0] != POISON);
    struct pl_sampling_params sp_x, sp_y, sp_z;
    greedy_params(&sp_x, 2);
    sp_x.ignore_eos = true;
    greedy_params(&sp_y, 10);
    sp_y.ignore_eos = true;
    greedy_params(&sp_z, 12);
    CHECK(h_add(&h, 1, prompts[0], prompt_len[0], &sp_x));
    CHECK(h_add(&h, 2, poisoned, 6, &sp_y));
    CHECK(h_add(&h, 3, prompts[2], prompt_len[2], &sp_z));
    struct pl_outputs out = {0};
    pl_status st;
    step_poll(&h, &st, &out); /* prefill: each samples its first token */
    CHECK(st == PL_STATUS_OK);
    pl_outputs_free(&out);
    step_poll(&h, &st, &out); /* x's second (last) token; y's detokenizer fails */
    CHECKF(st == PL_STATUS_OK, "a request's failure failed the step (%d)", st);
    const struct pl_request_output *x = find_out(&out, "1");
    const struct pl_request_output *y = find_out(&out, "2");
    CHECKF(x && x->finished && x->n_outputs == 1 &&
               x->outputs[0].finish_reason == PL_FINISH_LENGTH && !x->error,
           "the request that ended in the failing step is not reported ended after it");
    CHECK(y && y->finished && y->error && strstr(y->error, "poisoned detokenizer") &&
          y->error_status == PL_STATUS_NO_MEMORY && y->n_outputs == 1 &&
          y->outputs[0].finish_reason == PL_FINISH_ERROR);
    const struct pl_request_output *z = find_out(&out, "3");
    CHECK(!z || (!z->finished && !z->error));
    pl_outputs_free(&out);
    struct pl_outputs rest = {0};
    CHECK(h_run(&h, &rest));
    CHECK(rest.n == 1 && check_greedy(find_out(&rest, "3"), 2, 12));
    struct pl_engine_stats es;
    pl_engine_get_stats(h.e, &es);
    CHECK(es.sched.blocks.n_blocks_used == 0);
    CHECK(!pl_engine_has_pending(h.e));
    pl_outputs_free(&rest);
    h_fini(&h);
}

/* A model whose runs fail while fail_runs > 0 (a broken backend), else the fake's. */
struct failing_model {
    struct test_model *m;
    int fail_runs;
};

static pl_status failing_run(void *ctx, const struct pl_batch *b, float *logits,
                             struct pl_err *err)
{
    struct failing_model *f = ctx;
    if (f->fail_runs > 0) {
        f->fail_runs--;
        return pl_err_set(err, PL_STATUS_INTERNAL, "device lost (injected)");
    }
    return tm_run(f->m, b, logits, err);
}

static pl_status failing_run_sample(void *ctx, const struct pl_batch *b, const int32_t *row_src,
                                    int n_rows, const struct pl_sampler_row *rows,
                                    const double *uniforms, struct pl_sample_result *results,
                                    struct pl_err *err)
{
    struct failing_model *f = ctx;
    if (f->fail_runs > 0) {
        f->fail_runs--;
        return pl_err_set(err, PL_STATUS_INTERNAL, "device lost (injected)");
    }
    return tm_run_sample(f->m, b, row_src, n_rows, rows, uniforms, results, err);
}

static pl_status failing_copy(void *ctx, const struct pl_block_copy *c, int n, struct pl_err *err)
{
    return tm_copy(((struct failing_model *)ctx)->m, c, n, err);
}

/*
 * A step whose model run fails ends exactly the requests that step ran, with an
 * error (not "abort", not a normal finish), in the poll right after it; a request
 * still waiting is untouched and later runs to its reference output; the blocks
 * of the failed ones are freed. An n > 1 request failed before its samples were
 * forked ends cleanly too.
 */
static void test_step_failure_fails_its_requests(void)
{
    struct cfg c = CFG_BIG;
    c.max_seqs = 2; /* two run, the third waits */
    struct failing_model fm = {0};
    struct pl_engine_model im = {&fm, TM_VOCAB, 0, failing_run, failing_copy,
                                 g_backend_sampling ? failing_run_sample : NULL, 0};
    struct harness h;
    REQUIRE(h_init_with(&h, &c, 0, &im, NULL));
    fm.m = &h.m;
    struct pl_sampling_params sp;
    greedy_params(&sp, 8);
    CHECK(h_add(&h, 1, prompts[0], prompt_len[0], &sp));
    CHECK(h_add(&h, 2, prompts[1], prompt_len[1], &sp));
    CHECK(h_add(&h, 3, prompts[2], prompt_len[2], &sp));
    struct pl_outputs out = {0};
    pl_status st;
    step_poll(&h, &st, &out);
    CHECK(st == PL_STATUS_OK);
    CHECK(!find_out(&out, "3")); /* waiting */
    pl_outputs_free(&out);
    fm.fail_runs = 1;
    step_poll(&h, &st, &out);
    CHECK(st == PL_STATUS_INTERNAL);
    for (int i = 1; i <= 2; i++) {
        char name[8];
        snprintf(name, sizeof(name), "%d", i);
        const struct pl_request_output *o = find_out(&out, name);
        CHECKF(o && o->finished && o->error && strstr(o->error, "device lost") &&
                   o->error_status == PL_STATUS_INTERNAL && o->n_outputs == 1 &&
                   o->outputs[0].finish_reason == PL_FINISH_ERROR,
               "request %d: not ended with the step's error", i);
    }
    CHECK(!find_out(&out, "3"));
    pl_outputs_free(&out);
    struct pl_outputs rest = {0};
    CHECK(h_run(&h, &rest));
    CHECK(rest.n == 1 && check_greedy(find_out(&rest, "3"), 2, 8));
    pl_outputs_free(&rest);
    struct pl_engine_stats es;
    pl_engine_get_stats(h.e, &es);
    CHECK(es.sched.blocks.n_blocks_used == 0);

    /* n = 2, failing at its first (prefill) step, before the fork */
    struct pl_sampling_params sn;
    pl_sampling_params_default(&sn);
    sn.n = 2;
    sn.has_seed = true;
    sn.seed = 5;
    sn.max_tokens = 4;
    CHECK(h_add(&h, 4, prompts[3], prompt_len[3], &sn));
    fm.fail_runs = 1;
    step_poll(&h, &st, &out);
    CHECK(st == PL_STATUS_INTERNAL);
    const struct pl_request_output *o = find_out(&out, "4");
    CHECK(o && o->finished && o->error && o->n_outputs >= 1);
    for (int k = 0; o && k < o->n_outputs; k++)
        CHECK(o->outputs[k].finish_reason == PL_FINISH_ERROR);
    pl_outputs_free(&out);
    CHECK(!pl_engine_has_unfinished(h.e) && !pl_engine_has_pending(h.e));
    pl_engine_get_stats(h.e, &es);
    CHECK(es.sched.blocks.n_blocks_used == 0);
    h_fini(&h);
}

/* pl_detok behind the engine's interface (as llm.c plugs it in). */
static pl_status real_detok_init(void *ctx, const int32_t *prompt, int n_prompt, bool skip,
                                 void **state, struct pl_err *err)
{
    struct pl_detok *d = calloc(1, sizeof(*d));
    pl_status st = pl_detok_init(d, ctx, prompt, n_prompt, skip, err);
    if (st != PL_STATUS_OK)
        free(d);
    else
        *state = d;
    return st;
}

static pl_status real_detok_push(void *state, int32_t id, char **text, size_t *len,
                                 struct pl_err *err)
{
    return pl_detok_push(state, id, text, len, err);
}

static pl_status real_detok_flush(void *state, char **text, size_t *len, struct pl_err *err)
{
    return pl_detok_flush(state, text, len, err);
}

static void real_detok_fini(void *state)
{
    pl_detok_fini(state);
    free(state);
}

/* Runs request 2 greedily (ignore_eos) under dt, alone or beside request 1, which
 * can only sample the gap id; returns the outputs. */
static void run_gap_batch(const struct pl_engine_detok *dt, bool with_gap, int32_t gap,
                          struct pl_outputs *out)
{
    struct harness h;
    REQUIRE(h_init_with(&h, &CFG_BIG, 0, NULL, dt));
    struct pl_sampling_params sb;
    greedy_params(&sb, 10);
    sb.ignore_eos = true;
    if (with_gap) {
        struct pl_sampling_params sa;
        pl_sampling_params_default(&sa);
        sa.temperature = 1.0f;
        sa.max_tokens = 6;
        sa.ignore_eos = true;
        sa.allowed_token_ids = &gap;
        sa.n_allowed_token_ids = 1;
        CHECK(h_add(&h, 1, prompts[0], prompt_len[0], &sa));
    }
    CHECK(h_add(&h, 2, prompts[1], prompt_len[1], &sb));
    CHECK(h_run(&h, out));
    CHECK(h.m.n_errors == 0);
    h_fini(&h);
}

/*
 * The model's vocab (TM_VOCAB rows) is padded past the tokenizer (a byte-level
 * BPE of fewer ids), as Qwen's is: a request forced onto an id in the gap
 * (allowed_token_ids; random weights or logit_bias reach it the same way) gets
 * "" for it and ends normally, and the request beside it finishes exactly as it
 * does alone.
 */
static void test_gap_token_decodes_empty(void)
{
    char dir[] = "/tmp/pl_engine_gap_XXXXXX";
    REQUIRE(mkdtemp(dir));
    struct pl_tiny_tokenizer_info info;
    struct pl_err err;
    struct pl_tokenizer *tok = NULL;
    REQUIRE(pl_tiny_tokenizer_write(dir, 100, &info, &err) == PL_STATUS_OK);
    REQUIRE(pl_tokenizer_load(dir, &tok, &err) == PL_STATUS_OK);
    char path[600];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    unlink(path);
    rmdir(dir);
    int n_tok = pl_tokenizer_vocab_size(tok);
    REQUIRE(n_tok < TM_VOCAB - 10);
    int32_t gap = (int32_t)n_tok + 5;
    struct pl_engine_detok dt = {tok, real_detok_init, real_detok_push, real_detok_flush,
                                 real_detok_fini};
    struct pl_outputs both = {0}, alone = {0};
    run_gap_batch(&dt, true, gap, &both);
    run_gap_batch(&dt, false, gap, &alone);
    const struct pl_request_output *a = find_out(&both, "1");
    CHECKF(a && a->finished && !a->error && a->n_outputs == 1, "gap request: %s",
           a && a->error ? a->error : "missing");
    if (a && a->n_outputs == 1) {
        const struct pl_completion_output *c = &a->outputs[0];
        CHECK(c->finish_reason == PL_FINISH_LENGTH && c->n_token_ids == 6);
        for (int t = 0; t < c->n_token_ids; t++)
            CHECK(c->token_ids[t] == gap);
        CHECK(c->text_len == 0 && !strcmp(c->text, ""));
    }
    const struct pl_request_output *b = find_out(&both, "2");
    const struct pl_request_output *b1 = find_out(&alone, "2");
    REQUIRE(b && b1 && b->n_outputs == 1 && b1->n_outputs == 1);
    const struct pl_completion_output *cb = &b->outputs[0], *cb1 = &b1->outputs[0];
    CHECK(!b->error && cb->finish_reason == PL_FINISH_LENGTH && cb->n_token_ids == 10);
    CHECK(cb->n_token_ids == cb1->n_token_ids &&
          !memcmp(cb->token_ids, cb1->token_ids, sizeof(int32_t) * (size_t)cb->n_token_ids));
    CHECK(cb->text_len == cb1->text_len && !strcmp(cb->text, cb1->text));
    pl_outputs_free(&both);
    pl_outputs_free(&alone);
    pl_tokenizer_free(tok);
}

static void run_suite(void)
{
    PL_RUN(test_greedy_alone_and_batched);
    PL_RUN(test_greedy_preemption);
    PL_RUN(test_greedy_small_chunks);
    PL_RUN(test_prefix_cache_hits);
    PL_RUN(test_seeded_sampling);
    PL_RUN(test_n_shares_prompt_blocks);
    PL_RUN(test_stop_strings_streaming);
    PL_RUN(test_stop_token_ids_and_min_tokens);
    PL_RUN(test_logprobs);
    PL_RUN(test_abort_frees_blocks);
    PL_RUN(test_refusals);
    PL_RUN(test_soak);
    PL_RUN(test_request_failure_is_isolated);
    PL_RUN(test_step_failure_fails_its_requests);
    PL_RUN(test_gap_token_decodes_empty);
}

int main(void)
{
    make_prompts();
    g_backend_sampling = false;
    run_suite();
    g_backend_sampling = true;
    run_suite();
    PL_RUN(test_backend_sampling_matches_host);
    return pl_test_summary();
}
