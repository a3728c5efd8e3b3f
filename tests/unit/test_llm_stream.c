/*
 * test_llm_stream.c -- the streaming C API (pl_llm_submit / pl_llm_stream_*)
 * on the CPU runner with the built-in tiny model:
 *   - seeded requests streamed from several threads at once: each one's
 *     deltas, concatenated with pl_request_output_append, equal the same
 *     request run alone through pl_llm_generate (text, ids, logprobs,
 *     finish), and carry the request's name, number, finish_reason and
 *     ordered metrics;
 *   - refusals (bad params, beam search) leave no stream and a message for the
 *     calling thread only;
 *   - abort: the stream still ends with one finished delta, "abort";
 *   - while a streamed request is unfinished pl_llm_generate refuses, and the
 *     request interface is closed once the engine thread runs; generate works
 *     again when nothing is unfinished.
 */
#include "test.h"

#include "model/tiny_model.h"
#include "pagellm.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define N_THREADS 4
#define PER_THREAD 2
#define HANG_GUARD_S 300.0

static struct pl_llm *g_llm;
static struct pl_outputs g_ref; /* one pl_llm_generate output per seed */

static const char *const PROMPTS[] = {"The capital of France is", "Once upon a time",
                                      "San Francisco is a city known for",
                                      "Write a poem about"};

static void params_for(int k, struct pl_sampling_params *sp)
{
    pl_llm_default_sampling_params(g_llm, sp);
    sp->temperature = 0.9f;
    sp->has_seed = true;
    sp->seed = 100 + (uint64_t)k;
    sp->max_tokens = 12 + k;
    sp->ignore_eos = true;
    sp->logprobs = 2;
}

/* Streams request k to its end; its cumulative output goes to *acc. False on a hang. */
static bool stream_one(int k, const char *name, struct pl_request_output *acc, uint64_t *num,
                       int *n_deltas)
{
    struct pl_sampling_params sp;
    params_for(k, &sp);
    struct pl_prompt pr = {PROMPTS[k % 4], NULL, 0};
    struct pl_llm_stream *s = NULL;
    if (pl_llm_submit(g_llm, name, &pr, &sp, &s) != PL_STATUS_OK || !s)
        return false;
    *num = pl_llm_stream_request_num(s);
    memset(acc, 0, sizeof(*acc));
    *n_deltas = 0;
    bool ok = false;
    for (;;) {
        struct pl_request_output *d = NULL;
        if (pl_llm_stream_next(s, HANG_GUARD_S, &d) != PL_STATUS_OK || !d)
            break;
        (*n_deltas)++;
        bool fin = d->finished;
        pl_status st = pl_request_output_append(acc, d);
        pl_request_output_free(d);
        if (st != PL_STATUS_OK)
            break;
        if (fin) {
            ok = pl_llm_stream_is_finished(s);
            break;
        }
    }
    struct pl_request_output *none = (struct pl_request_output *)1;
    pl_llm_stream_next(s, 0, &none); /* after the end: nothing */
    ok &= none == NULL;
    pl_llm_stream_free(s);
    return ok;
}

struct worker {
    int t;
    int n_ok;
    int n_match;
};

static bool same_output(const struct pl_request_output *a, const struct pl_request_output *ref)
{
    if (a->n_outputs != 1 || ref->n_outputs != 1)
        return false;
    const struct pl_completion_output *x = &a->outputs[0], *y = &ref->outputs[0];
    if (x->n_token_ids != y->n_token_ids || strcmp(x->text, y->text) ||
        memcmp(x->token_ids, y->token_ids, sizeof(int32_t) * (size_t)x->n_token_ids) ||
        x->finish_reason != y->finish_reason || !x->has_logprobs)
        return false;
    for (int t = 0; t < x->n_token_ids; t++)
        if (x->logprobs[t].token_id != y->logprobs[t].token_id ||
            fabsf(x->logprobs[t].logprob - y->logprobs[t].logprob) > 1e-4f ||
            x->logprobs[t].n_top != 2)
            return false;
    return a->n_prompt_token_ids == ref->n_prompt_token_ids && a->prompt &&
           !strcmp(a->prompt, ref->prompt);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        int k = w->t * PER_THREAD + i;
        char name[32];
        snprintf(name, sizeof(name), "req-%d", k);
        struct pl_request_output acc;
        uint64_t num = 0;
        int n_deltas = 0;
        if (!stream_one(k, name, &acc, &num, &n_deltas))
            continue;
        w->n_ok++;
        const struct pl_request_metrics *m = &acc.metrics;
        bool meta = acc.finished && acc.request_id && !strcmp(acc.request_id, name) &&
                    acc.request_num == num && acc.finish_reason == PL_FINISH_LENGTH &&
                    !acc.error && n_deltas >= 2 && m->arrival_time > 0 &&
                    m->first_scheduled_time >= m->arrival_time &&
                    m->first_token_time >= m->first_scheduled_time &&
                    m->finished_time >= m->first_token_time;
        if (meta && same_output(&acc, &g_ref.items[k]))
            w->n_match++;
        pl_request_output_fini(&acc);
    }
    return NULL;
}

static void test_threads_match_generate(void)
{
    struct pl_sampling_params sp[N_THREADS * PER_THREAD];
    struct pl_prompt pr[N_THREADS * PER_THREAD];
    for (int k = 0; k < N_THREADS * PER_THREAD; k++) {
        params_for(k, &sp[k]);
        pr[k] = (struct pl_prompt){PROMPTS[k % 4], NULL, 0};
    }
    REQUIRE(pl_llm_generate(g_llm, pr, N_THREADS * PER_THREAD, sp, N_THREADS * PER_THREAD,
                            &g_ref) == PL_STATUS_OK);
    pthread_t th[N_THREADS];
    struct worker w[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        w[t] = (struct worker){t, 0, 0};
        REQUIRE(pthread_create(&th[t], NULL, worker_main, &w[t]) == 0);
    }
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        CHECKF(w[t].n_ok == PER_THREAD, "thread %d: %d streams ended", t, w[t].n_ok);
        CHECKF(w[t].n_match == PER_THREAD, "thread %d: %d of %d match generate", t,
               w[t].n_match, PER_THREAD);
    }
}

static void *refuse_main(void *arg)
{
    (void)arg;
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(g_llm, &sp);
    sp.temperature = -1;
    struct pl_prompt pr = {"hello", NULL, 0};
    struct pl_llm_stream *s = (struct pl_llm_stream *)1;
    pl_status st = pl_llm_submit(g_llm, NULL, &pr, &sp, &s);
    bool ok = st == PL_STATUS_INVALID_ARGUMENT && s == NULL &&
              strstr(pl_llm_errmsg(g_llm), "temperature") != NULL;
    return ok ? (void *)1 : NULL;
}

static void test_refusals(void)
{
    /* a refusal in another thread leaves this thread's message alone */
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(g_llm, &sp);
    sp.use_beam_search = true;
    sp.beam_width = 2;
    sp.temperature = 0;
    struct pl_prompt pr = {"hello", NULL, 0};
    struct pl_llm_stream *s = NULL;
    CHECK(pl_llm_submit(g_llm, NULL, &pr, &sp, &s) == PL_STATUS_UNSUPPORTED && !s);
    CHECK(strstr(pl_llm_errmsg(g_llm), "beam") != NULL);
    pthread_t th;
    void *ok = NULL;
    REQUIRE(pthread_create(&th, NULL, refuse_main, NULL) == 0);
    pthread_join(th, &ok);
    CHECK(ok != NULL);
    CHECK(strstr(pl_llm_errmsg(g_llm), "beam") != NULL);
    struct pl_prompt none = {NULL, NULL, 0};
    pl_llm_default_sampling_params(g_llm, &sp);
    CHECK(pl_llm_submit(g_llm, NULL, &none, &sp, &s) == PL_STATUS_INVALID_ARGUMENT && !s);
}

/* PAGELLM_TEST_STALL_FILE (set in main): while the file exists the engine thread applies
 * commands (submit, abort) but runs no step, so "unfinished" does not depend on how fast
 * the engine is next to this thread (a loaded CI machine finished the request first). */
static char g_stall[64];

static void stall(bool on)
{
    if (on) {
        FILE *f = fopen(g_stall, "w");
        REQUIRE(f);
        fclose(f);
    } else {
        unlink(g_stall);
    }
}

static void test_abort_and_modes(void)
{
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(g_llm, &sp);
    sp.max_tokens = 1000; /* more than max_model_len allows: refused here */
    sp.ignore_eos = true;
    struct pl_prompt pr = {"Tell me everything", NULL, 0};
    struct pl_llm_stream *s = NULL;
    CHECK(pl_llm_submit(g_llm, "long", &pr, &sp, &s) == PL_STATUS_INVALID_ARGUMENT && !s);
    CHECK(strstr(pl_llm_errmsg(g_llm), "max_tokens") != NULL);
    sp.max_tokens = 200;

    /* a streamed request is unfinished (the engine is held): generate refuses, the request
     * interface is closed; an abort ends it with finish_reason abort, no error */
    stall(true);
    REQUIRE(pl_llm_submit(g_llm, "long", &pr, &sp, &s) == PL_STATUS_OK);
    struct pl_outputs out;
    struct pl_sampling_params short_sp = sp;
    short_sp.max_tokens = 2;
    CHECK(pl_llm_generate(g_llm, &pr, 1, &short_sp, 1, &out) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(g_llm), "pl_llm_submit") != NULL);
    CHECK(pl_llm_add_request(g_llm, "x", &pr, &short_sp) == PL_STATUS_INVALID_ARGUMENT);
    struct pl_outputs polled;
    CHECK(pl_llm_poll(g_llm, &polled) == PL_STATUS_INVALID_ARGUMENT);
    pl_llm_stream_abort(s);
    /* the abort is queued before the engine may step again: it is applied first */
    stall(false);
    struct pl_request_output *d = NULL;
    int n_after = 0;
    bool fin = false;
    while (!fin && pl_llm_stream_next(s, HANG_GUARD_S, &d) == PL_STATUS_OK && d) {
        fin = d->finished;
        if (fin) {
            CHECK(d->finish_reason == PL_FINISH_ABORT && !d->error);
            CHECK(d->request_id && !strcmp(d->request_id, "long"));
        }
        pl_request_output_free(d);
        n_after++;
    }
    CHECK(fin && n_after >= 1);
    pl_llm_stream_free(s);

    /* the first delta of a running request: unfinished (one delta per step, 200 to go),
     * with the prompt's ids; then it runs to its length */
    REQUIRE(pl_llm_submit(g_llm, "long2", &pr, &sp, &s) == PL_STATUS_OK);
    REQUIRE(pl_llm_stream_next(s, HANG_GUARD_S, &d) == PL_STATUS_OK && d);
    CHECK(!d->finished && d->prompt_token_ids && d->n_outputs == 1);
    pl_request_output_free(d);
    fin = false;
    while (!fin && pl_llm_stream_next(s, HANG_GUARD_S, &d) == PL_STATUS_OK && d) {
        fin = d->finished;
        if (fin)
            CHECK(d->finish_reason == PL_FINISH_LENGTH && !d->error);
        pl_request_output_free(d);
    }
    CHECK(fin);
    pl_llm_stream_free(s);

    /* nothing unfinished: generate runs again */
    for (int i = 0; i < 1000 && pl_llm_has_unfinished(g_llm); i++)
        usleep(1000);
    CHECK(pl_llm_generate(g_llm, &pr, 1, &short_sp, 1, &out) == PL_STATUS_OK);
    CHECK(out.n == 1 && out.items[0].outputs[0].n_token_ids == 2);
    pl_outputs_free(&out);

    /* freeing an unfinished stream aborts it */
    REQUIRE(pl_llm_submit(g_llm, NULL, &pr, &sp, &s) == PL_STATUS_OK);
    pl_llm_stream_free(s);
}

static void test_append(void)
{
    /* deltas of two samples, the second sample appearing late */
    int32_t a1[] = {1, 2}, a2[] = {3}, b1[] = {9};
    struct pl_completion_output d1o[] = {{.index = 0, .text = "ab", .text_len = 2,
                                          .token_ids = a1, .n_token_ids = 2,
                                          .stop_token_id = -1}};
    struct pl_completion_output d2o[] = {
        {.index = 1, .text = "z", .text_len = 1, .token_ids = b1, .n_token_ids = 1,
         .finish_reason = PL_FINISH_LENGTH, .stop_token_id = -1},
        {.index = 0, .text = "c", .text_len = 1, .token_ids = a2, .n_token_ids = 1,
         .finish_reason = PL_FINISH_STOP, .stop_reason_kind = PL_STOP_REASON_STRING,
         .stop_str = "END", .stop_token_id = -1}};
    int32_t pids[] = {7, 8};
    struct pl_request_output d1 = {.request_id = "r", .prompt_token_ids = pids,
                                   .n_prompt_token_ids = 2, .outputs = d1o, .n_outputs = 1};
    struct pl_request_output d2 = {.request_id = "r", .outputs = d2o, .n_outputs = 2,
                                   .finished = true, .finish_reason = PL_FINISH_STOP};
    struct pl_request_output acc;
    memset(&acc, 0, sizeof(acc));
    REQUIRE(pl_request_output_append(&acc, &d1) == PL_STATUS_OK);
    REQUIRE(pl_request_output_append(&acc, &d2) == PL_STATUS_OK);
    CHECK(acc.finished && acc.finish_reason == PL_FINISH_STOP && acc.n_prompt_token_ids == 2);
    REQUIRE(acc.n_outputs == 2);
    CHECK(acc.outputs[0].index == 0 && !strcmp(acc.outputs[0].text, "abc") &&
          acc.outputs[0].n_token_ids == 3 && acc.outputs[0].token_ids[2] == 3 &&
          acc.outputs[0].finish_reason == PL_FINISH_STOP &&
          !strcmp(acc.outputs[0].stop_str, "END"));
    CHECK(acc.outputs[1].index == 1 && !strcmp(acc.outputs[1].text, "z") &&
          acc.outputs[1].finish_reason == PL_FINISH_LENGTH);
    pl_request_output_fini(&acc);
    CHECK(acc.outputs == NULL && acc.n_outputs == 0);
}

int main(void)
{
    char dir[] = "/tmp/pl_llm_stream_XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    struct pl_err err;
    if (pl_tiny_model_write("default", dir, &err) != PL_STATUS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    snprintf(g_stall, sizeof(g_stall), "/tmp/pl_llm_stream_stall_%d", (int)getpid());
    unlink(g_stall);
    setenv("PAGELLM_TEST_STALL_FILE", g_stall, 1); /* read when the engine starts */
    struct pl_llm_params lp;
    pl_llm_params_default(&lp);
    lp.model = dir;
    lp.device = "cpu";
    lp.n_threads = 1;
    lp.max_model_len = 256;
    lp.kv_cache_bytes = (size_t)16 << 20;
    if (pl_llm_new(&lp, &g_llm) != PL_STATUS_OK) {
        fprintf(stderr, "%s\n", pl_llm_errmsg(g_llm));
        return 1;
    }
    PL_RUN(test_append);
    PL_RUN(test_threads_match_generate);
    PL_RUN(test_refusals);
    PL_RUN(test_abort_and_modes);
    pl_outputs_free(&g_ref);
    pl_llm_free(g_llm);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return pl_test_summary();
}
