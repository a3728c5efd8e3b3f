/*
 * test_pooling.c -- pooling requests (embeddings) through the real engine, model
 * runner and decoder on the CPU backend, against the independent naive forward
 * of ref_forward.h (double, no paging).
 *
 * 1. MEAN and LAST vectors, normalized or not, equal the mean / last of the
 *    reference's final hidden states (after the final norm) while the prompts
 *    are prefilled in chunks of 16 tokens and batched with a generation
 *    request; the generation request's tokens are unchanged by its
 *    companions (equal to its run alone) and the pooling requests report no
 *    tokens and count none.
 * 2. LAST reads the shared prefix cache (a hit, same vector); MEAN never does
 *    (every position is computed).
 * 3. An aborted pooling request ends with finish "abort" and no vector.
 * 4. Refusals: a model without hidden states, a prompt as long as the context.
 */
#include "engine/engine.h"
#include "engine/model_runner.h"
#include "engine_test_model.h"
#include "ref_forward.h"
#include "test.h"
#include "tiny_model.h"

#include <math.h>

static struct tiny_model tm;
static struct pl_backend *be;

static pl_status run(void *ctx, const struct pl_batch *b, float *logits, struct pl_err *err)
{
    return pl_model_runner_run(ctx, b, logits, err);
}

static pl_status copy(void *ctx, const struct pl_block_copy *c, int n, struct pl_err *err)
{
    return pl_model_runner_copy_blocks(ctx, c, n, err);
}

static pl_status run_sample(void *ctx, const struct pl_batch *b, const int32_t *row_src,
                            int n_rows, const struct pl_sampler_row *rows,
                            const double *uniforms, struct pl_sample_result *results,
                            struct pl_err *err)
{
    return pl_model_runner_run_sample(ctx, b, row_src, n_rows, rows, uniforms, results, err);
}

struct rig {
    struct pl_model_runner *runner;
    struct pl_engine_model im;
    struct pl_engine *e;
};

/* chunk: max_num_batched_tokens (prefill chunks); backend_sampling: run_sample steps */
static bool rig_init(struct rig *r, int chunk, bool backend_sampling)
{
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.block_size = 16;
    p.num_kv_blocks = 64;
    p.max_num_batched_tokens = chunk;
    p.max_num_seqs = 8;
    p.max_model_len = 96;
    struct pl_err err;
    if (pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r->runner, &err) !=
        PL_STATUS_OK) {
        fprintf(stderr, "runner: %s\n", err.msg);
        return false;
    }
    r->im = (struct pl_engine_model){.ctx = r->runner,
                                     .vocab_size = tm.cfg.vocab_size,
                                     .run = run,
                                     .copy_blocks = copy,
                                     .run_sample = backend_sampling ? run_sample : NULL,
                                     .hidden_size = tm.cfg.hidden_size};
    struct pl_engine_params ep;
    pl_engine_params_default(&ep);
    ep.sched.n_blocks = pl_model_runner_num_blocks(r->runner);
    ep.sched.block_size = 16;
    ep.sched.max_num_batched_tokens = chunk;
    ep.sched.max_num_seqs = 8;
    ep.sched.max_model_len = 96;
    ep.sched.enable_prefix_caching = true;
    ep.sched.enable_chunked_prefill = true;
    if (pl_engine_new(&ep, &r->im, NULL, &r->e, &err) != PL_STATUS_OK) {
        fprintf(stderr, "engine: %s\n", err.msg);
        return false;
    }
    return true;
}

static void rig_fini(struct rig *r)
{
    pl_engine_free(r->e);
    pl_model_runner_free(r->runner);
}

static pl_status add_pool(struct rig *r, uint64_t id, const int32_t *prompt, int n,
                          enum pl_pooling_type type, bool normalize, struct pl_err *err)
{
    struct pl_pooling_params pp = {type, normalize};
    struct pl_engine_request rq = {0};
    rq.request_id = id;
    rq.prompt = prompt;
    rq.n_prompt = n;
    rq.pooling = &pp;
    return pl_engine_add(r->e, &rq, err);
}

/* A finished request's outputs, by id (ids < 16). */
struct got {
    bool finished;
    float *emb;
    int n_emb;
    int n_tokens;          /* summed over its deltas */
    int32_t tokens[64];
    enum pl_finish_reason finish;
    int cached;
};

static void run_all(struct rig *r, struct got *got)
{
    struct pl_err err;
    for (int guard = 0; guard < 1000 && pl_engine_has_pending(r->e); guard++) {
        REQUIRE(pl_engine_step(r->e, &err) == PL_STATUS_OK);
        struct pl_outputs out = {0};
        REQUIRE(pl_engine_poll(r->e, true, &out, &err) == PL_STATUS_OK);
        for (int i = 0; i < out.n; i++) {
            struct pl_request_output *o = &out.items[i];
            int id = atoi(o->request_id);
            REQUIRE(id >= 0 && id < 16);
            struct got *g = &got[id];
            if (o->num_cached_tokens > g->cached)
                g->cached = o->num_cached_tokens;
            for (int k = 0; k < o->n_outputs; k++) {
                for (int t = 0; t < o->outputs[k].n_token_ids && g->n_tokens < 64; t++)
                    g->tokens[g->n_tokens++] = o->outputs[k].token_ids[t];
                if (o->outputs[k].finish_reason != PL_FINISH_NONE)
                    g->finish = o->outputs[k].finish_reason;
            }
            if (o->finished) {
                g->finished = true;
                g->emb = o->embedding;
                g->n_emb = o->n_embedding;
                o->embedding = NULL;
            }
        }
        pl_outputs_free(&out);
    }
}

/* The reference vector: mean or last of the naive forward's hidden rows, maybe normalized. */
static void ref_pool(const int32_t *toks, int n, enum pl_pooling_type type, bool normalize,
                     double *v)
{
    int H = tm.cfg.hidden_size;
    double *hid = malloc(sizeof(double) * (size_t)n * (size_t)H);
    ref_forward_ex(&tm, toks, n, NULL, hid);
    for (int k = 0; k < H; k++) {
        double s = 0;
        if (type == PL_POOLING_MEAN) {
            for (int t = 0; t < n; t++)
                s += hid[(size_t)t * H + k];
            s /= n;
        } else {
            s = hid[(size_t)(n - 1) * H + k];
        }
        v[k] = s;
    }
    if (normalize) {
        double norm = 0;
        for (int k = 0; k < H; k++)
            norm += v[k] * v[k];
        norm = sqrt(norm);
        for (int k = 0; k < H; k++)
            v[k] /= norm;
    }
    free(hid);
}

static void check_vec(const struct got *g, const int32_t *toks, int n, enum pl_pooling_type type,
                      bool normalize, const char *what)
{
    int H = tm.cfg.hidden_size;
    CHECKF(g->finished && g->emb && g->n_emb == H, "%s: finished %d, vector %p of %d", what,
           g->finished, (void *)g->emb, g->n_emb);
    if (!g->emb)
        return;
    double ref[64];
    ref_pool(toks, n, type, normalize, ref);
    double scale = 0, max_err = 0, norm = 0;
    for (int k = 0; k < H; k++) {
        scale = fmax(scale, fabs(ref[k]));
        max_err = fmax(max_err, fabs(g->emb[k] - ref[k]));
        norm += (double)g->emb[k] * g->emb[k];
    }
    CHECKF(max_err <= 1e-4 * (1.0 + scale), "%s: max error %g (scale %g)", what, max_err, scale);
    if (normalize)
        CHECKF(fabs(sqrt(norm) - 1.0) < 1e-5, "%s: norm %g", what, sqrt(norm));
    CHECKF(g->n_tokens == 0, "%s: %d tokens reported", what, g->n_tokens);
    CHECKF(g->finish == PL_FINISH_LENGTH, "%s: finish %d", what, (int)g->finish);
}

static int32_t prompt_a[37], prompt_b[20], prompt_c[11], prompt_long[80];

static void free_got(struct got *got, int n)
{
    for (int i = 0; i < n; i++)
        free(got[i].emb);
}

/* The generation request's tokens alone (reference for the batched run). */
static void gen_alone(int32_t *toks, int *n)
{
    struct rig r;
    *n = 0;
    REQUIRE(rig_init(&r, 16, false));
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.temperature = 0;
    sp.max_tokens = 6;
    sp.ignore_eos = true;
    struct pl_engine_request rq = {0};
    rq.request_id = 3;
    rq.prompt = prompt_c;
    rq.n_prompt = 11;
    rq.params = &sp;
    struct pl_err err;
    REQUIRE(pl_engine_add(r.e, &rq, &err) == PL_STATUS_OK);
    struct got got[16] = {{0}};
    run_all(&r, got);
    memcpy(toks, got[3].tokens, sizeof(int32_t) * (size_t)got[3].n_tokens);
    *n = got[3].n_tokens;
    rig_fini(&r);
}

static void check_batched(bool backend_sampling)
{
    int32_t alone[64];
    int n_alone = 0;
    gen_alone(alone, &n_alone);
    REQUIRE(n_alone == 6);

    struct rig r;
    REQUIRE(rig_init(&r, 16, backend_sampling));
    struct pl_err err;
    struct got got[16] = {{0}};
    /* round 1: MEAN, LAST (normalized), a generation request, LAST over A's first 33 tokens */
    REQUIRE(add_pool(&r, 1, prompt_a, 37, PL_POOLING_MEAN, false, &err) == PL_STATUS_OK);
    REQUIRE(add_pool(&r, 2, prompt_b, 20, PL_POOLING_LAST, true, &err) == PL_STATUS_OK);
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.temperature = 0;
    sp.max_tokens = 6;
    sp.ignore_eos = true;
    struct pl_engine_request rq = {0};
    rq.request_id = 3;
    rq.prompt = prompt_c;
    rq.n_prompt = 11;
    rq.params = &sp;
    REQUIRE(pl_engine_add(r.e, &rq, &err) == PL_STATUS_OK);
    REQUIRE(add_pool(&r, 4, prompt_a, 33, PL_POOLING_LAST, false, &err) == PL_STATUS_OK);
    run_all(&r, got);
    check_vec(&got[1], prompt_a, 37, PL_POOLING_MEAN, false, "mean");
    check_vec(&got[2], prompt_b, 20, PL_POOLING_LAST, true, "last normalized");
    check_vec(&got[4], prompt_a, 33, PL_POOLING_LAST, false, "last of a prefix");
    CHECKF(got[3].finished && got[3].n_tokens == 6 &&
               !memcmp(got[3].tokens, alone, sizeof(int32_t) * 6),
           "generation beside pooling: %d tokens", got[3].n_tokens);
    struct pl_engine_stats st;
    pl_engine_get_stats(r.e, &st);
    CHECKF(st.n_generation_tokens == 6, "generation tokens %llu (pooling counted?)",
           (unsigned long long)st.n_generation_tokens);
    CHECK(st.n_pooling_requests == 3);

    /* round 2: LAST over A reuses request 4's cached blocks; MEAN over A computes all */
    REQUIRE(add_pool(&r, 5, prompt_a, 37, PL_POOLING_LAST, true, &err) == PL_STATUS_OK);
    REQUIRE(add_pool(&r, 6, prompt_a, 37, PL_POOLING_MEAN, true, &err) == PL_STATUS_OK);
    run_all(&r, got);
    check_vec(&got[5], prompt_a, 37, PL_POOLING_LAST, true, "last with a cache hit");
    check_vec(&got[6], prompt_a, 37, PL_POOLING_MEAN, true, "mean again");
    CHECKF(got[5].cached == 32, "last: %d cached tokens, want 32", got[5].cached);
    CHECKF(got[6].cached == 0, "mean: %d cached tokens, want 0", got[6].cached);
    free_got(got, 16);
    rig_fini(&r);
}

static void test_batched_host_sampling(void)
{
    check_batched(false);
}

static void test_batched_backend_sampling(void)
{
    check_batched(true);
}

static void test_whole_prompt_one_step(void)
{
    /* no chunking: the 80-token prompt in one step, MEAN over 80 hidden rows */
    struct rig r;
    REQUIRE(rig_init(&r, 96, false));
    struct pl_err err;
    struct got got[16] = {{0}};
    REQUIRE(add_pool(&r, 1, prompt_long, 80, PL_POOLING_MEAN, true, &err) == PL_STATUS_OK);
    REQUIRE(add_pool(&r, 2, prompt_long, 80, PL_POOLING_LAST, true, &err) == PL_STATUS_OK);
    run_all(&r, got);
    check_vec(&got[1], prompt_long, 80, PL_POOLING_MEAN, true, "mean, one step");
    check_vec(&got[2], prompt_long, 80, PL_POOLING_LAST, true, "last, one step");
    free_got(got, 16);
    rig_fini(&r);
}

static void test_abort(void)
{
    struct rig r;
    REQUIRE(rig_init(&r, 16, false));
    struct pl_err err;
    struct got got[16] = {{0}};
    REQUIRE(add_pool(&r, 1, prompt_long, 80, PL_POOLING_MEAN, true, &err) == PL_STATUS_OK);
    REQUIRE(pl_engine_step(r.e, &err) == PL_STATUS_OK); /* the first chunk of 5 */
    REQUIRE(pl_engine_abort(r.e, 1, &err) == PL_STATUS_OK);
    run_all(&r, got);
    CHECK(got[1].finished);
    CHECK(got[1].emb == NULL && got[1].n_emb == 0);
    CHECK(got[1].finish == PL_FINISH_ABORT);
    free_got(got, 16);
    rig_fini(&r);
}

static void test_refusals(void)
{
    struct rig r;
    REQUIRE(rig_init(&r, 16, false));
    struct pl_err err;
    int32_t toolong[96] = {0};
    CHECK(add_pool(&r, 1, toolong, 96, PL_POOLING_MEAN, true, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(err.msg, "shorter than max_model_len") != NULL, "%s", err.msg);
    CHECK(add_pool(&r, 1, prompt_a, 37, (enum pl_pooling_type)7, true, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
    rig_fini(&r);

    /* a model interface without hidden states */
    struct test_model m;
    tm_init(&m, 64, 16, 96);
    struct pl_engine_model im = tm_interface(&m);
    struct pl_engine_params ep;
    pl_engine_params_default(&ep);
    ep.sched.n_blocks = 64;
    ep.sched.max_model_len = 96;
    struct pl_engine *e = NULL;
    REQUIRE(pl_engine_new(&ep, &im, NULL, &e, &err) == PL_STATUS_OK);
    struct pl_pooling_params pp;
    pl_pooling_params_default(&pp);
    CHECK(pp.type == PL_POOLING_LAST && pp.normalize);
    struct pl_engine_request rq = {0};
    rq.request_id = 1;
    rq.prompt = prompt_a;
    rq.n_prompt = 5;
    rq.pooling = &pp;
    CHECK(pl_engine_add(e, &rq, &err) == PL_STATUS_UNSUPPORTED);
    CHECKF(strstr(err.msg, "hidden states") != NULL, "%s", err.msg);
    pl_engine_free(e);
    tm_fini(&m);
}

int main(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_QWEN3, PL_DTYPE_BF16, false, 0, 2};
    tiny_model_init(&tm, &o, 77);
    for (int i = 0; i < 37; i++)
        prompt_a[i] = (i * 29 + 5) % 64;
    for (int i = 0; i < 20; i++)
        prompt_b[i] = (i * 13 + 7) % 64;
    for (int i = 0; i < 11; i++)
        prompt_c[i] = (i * 17 + 3) % 64;
    for (int i = 0; i < 80; i++)
        prompt_long[i] = (i * 41 + 9) % 64;
    struct pl_err err;
    if (pl_backend_cpu_new(2, &be, &err) != PL_STATUS_OK)
        return 1;
    PL_RUN(test_batched_host_sampling);
    PL_RUN(test_batched_backend_sampling);
    PL_RUN(test_whole_prompt_one_step);
    PL_RUN(test_abort);
    PL_RUN(test_refusals);
    pl_backend_free(be);
    tiny_model_fini(&tm);
    return pl_test_summary();
}
