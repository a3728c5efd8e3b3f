/*
 * test_async_engine.c -- the engine thread and its queues, driven with the fake engine:
 * deltas reach the right request in order and concatenate to the fake's text,
 * submissions from many threads, aborts end requests with "abort" and free their
 * blocks, admission control, refusals, the stall hook and the heartbeat.
 */
#include "engine/async_engine.h"
#include "fake_engine.h"
#include "server/metrics.h"
#include "test.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

/* Hang guard of every wait for a condition (polls of 5 ms): only a hang or a defect takes
 * this long; no check here depends on how fast the machine is. */
#define GUARD_POLLS 12000 /* 60 s */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int notified;
};

static void notify(void *user)
{
    struct waiter *w = user;
    pthread_mutex_lock(&w->mu);
    w->notified++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Collects a request's deltas until the finished one; returns the text of sample j. */
struct collected {
    char text[16][4096];
    int n_tokens[16];
    enum pl_finish_reason finish[16];
    int n_deltas;
    bool saw_error;
    int n_prompt_tokens;
    enum pl_finish_reason request_finish; /* the last delta's stamped reason */
    bool timed_out;                      /* no last delta within the hang guard */
};

static void collect(struct pl_async_request *r, struct waiter *w, struct collected *c)
{
    memset(c, 0, sizeof(*c));
    for (;;) {
        struct pl_request_output *o = pl_async_request_pop(r);
        if (!o) {
            /* a hang guard only: a request's end must come without more traffic */
            struct timespec deadline;
            clock_gettime(CLOCK_REALTIME, &deadline);
            deadline.tv_sec += 120;
            pthread_mutex_lock(&w->mu);
            int rc = 0;
            while (w->notified == 0 && rc == 0)
                rc = pthread_cond_timedwait(&w->cv, &w->mu, &deadline);
            w->notified = 0;
            pthread_mutex_unlock(&w->mu);
            if (rc != 0 && !pl_async_request_is_finished(r)) {
                c->timed_out = true;
                return;
            }
            continue;
        }
        c->n_deltas++;
        c->saw_error |= o->error != NULL;
        if (o->prompt_token_ids)
            c->n_prompt_tokens = o->n_prompt_token_ids;
        for (int i = 0; i < o->n_outputs; i++) {
            struct pl_completion_output *s = &o->outputs[i];
            if (s->text)
                strncat(c->text[s->index], s->text, sizeof(c->text[0]) - strlen(c->text[s->index]) - 1);
            c->n_tokens[s->index] += s->n_token_ids;
            if (s->finish_reason)
                c->finish[s->index] = s->finish_reason;
        }
        bool fin = o->finished;
        if (fin)
            c->request_finish = o->finish_reason;
        pl_request_output_free(o);
        if (fin)
            return;
    }
}

static struct pl_async_engine *start(struct fake_engine *f, int max_pending, double stall_s)
{
    struct pl_async_engine_params p;
    pl_async_engine_params_default(&p);
    p.max_pending = max_pending;
    p.stall_timeout_s = stall_s;
    struct pl_async_engine *ae = NULL;
    struct pl_err err = {0};
    if (pl_async_engine_new(&fake_engine_ops, f, &p, &ae, &err) != PL_STATUS_OK)
        fprintf(stderr, "%s\n", err.msg);
    return ae;
}

static void test_one_request(void)
{
    struct fake_engine f = {0};
    struct pl_async_engine *ae = start(&f, 16, 10);
    REQUIRE(ae);
    int32_t prompt[] = {5, 6, 7};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 5;
    sp.n = 2;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct pl_async_request *r = NULL;
    REQUIRE(pl_async_engine_submit(ae, prompt, 3, &sp, notify, &w, &r, NULL) == PL_STATUS_OK);
    struct collected c;
    collect(r, &w, &c);
    char want[256];
    for (int j = 0; j < 2; j++) {
        fake_expected_text(prompt, 3, j, 5, want, sizeof(want));
        CHECKF(!strcmp(c.text[j], want), "sample %d: '%s' vs '%s'", j, c.text[j], want);
        CHECK(c.n_tokens[j] == 5);
        CHECK(c.finish[j] == PL_FINISH_LENGTH);
    }
    CHECK(c.n_deltas == 5); /* one per step: the fake makes one token per step */
    CHECK(c.n_prompt_tokens == 3);
    CHECK(pl_async_request_is_finished(r));
    pl_async_request_release(r);
    CHECK(pl_async_engine_num_unfinished(ae) == 0);
    pl_async_engine_free(ae);
}

struct client_arg {
    struct pl_async_engine *ae;
    int id;
    atomic_int *failures;
};

static void *client(void *arg)
{
    struct client_arg *a = arg;
    for (int k = 0; k < 10; k++) {
        int32_t prompt[4] = {a->id, a->id + 1, k, 100};
        struct pl_sampling_params sp;
        pl_sampling_params_default(&sp);
        sp.max_tokens = 1 + (a->id + k) % 7;
        struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
        struct pl_async_request *r = NULL;
        if (pl_async_engine_submit(a->ae, prompt, 4, &sp, notify, &w, &r, NULL) != PL_STATUS_OK) {
            atomic_fetch_add(a->failures, 1);
            continue;
        }
        struct collected *c = malloc(sizeof(*c));
        collect(r, &w, c);
        char want[512];
        fake_expected_text(prompt, 4, 0, sp.max_tokens, want, sizeof(want));
        if (strcmp(c->text[0], want) || c->finish[0] != PL_FINISH_LENGTH)
            atomic_fetch_add(a->failures, 1);
        free(c);
        pl_async_request_release(r);
    }
    return NULL;
}

static void test_many_threads(void)
{
    struct fake_engine f = {0};
    struct pl_async_engine *ae = start(&f, 1024, 10);
    REQUIRE(ae);
    atomic_int failures = 0;
    pthread_t th[16];
    struct client_arg args[16];
    for (int i = 0; i < 16; i++) {
        args[i] = (struct client_arg){ae, i * 10, &failures};
        pthread_create(&th[i], NULL, client, &args[i]);
    }
    for (int i = 0; i < 16; i++)
        pthread_join(th[i], NULL);
    CHECK(atomic_load(&failures) == 0);
    CHECK(pl_async_engine_num_unfinished(ae) == 0);
    pl_async_engine_free(ae);
}

static void test_abort_frees_blocks(void)
{
    struct fake_engine f = {0};
    f.step_delay_us = 2000;
    struct pl_async_engine *ae = start(&f, 16, 10);
    REQUIRE(ae);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = i;
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 100000;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct pl_async_request *r = NULL;
    REQUIRE(pl_async_engine_submit(ae, prompt, 40, &sp, notify, &w, &r, NULL) == PL_STATUS_OK);
    struct pl_llm_stats st;
    for (int i = 0; i < GUARD_POLLS; i++) {
        pl_async_engine_stats(ae, &st);
        if (st.kv_blocks_used > 0)
            break;
        sleep_ms(5);
    }
    CHECK(st.kv_blocks_used >= 3); /* 40 prompt tokens: 3 blocks of 16 */
    pl_async_request_abort(r);
    struct collected c;
    collect(r, &w, &c);
    CHECK(c.finish[0] == PL_FINISH_ABORT);
    CHECK(c.n_tokens[0] < 100000);
    pl_async_request_release(r);
    for (int i = 0; i < GUARD_POLLS; i++) {
        pl_async_engine_stats(ae, &st);
        if (st.kv_blocks_used == 0)
            break;
        sleep_ms(5);
    }
    CHECK(st.kv_blocks_used == 0);
    pl_async_engine_free(ae);
}

static void test_release_without_waiting(void)
{
    /* a client that vanishes: abort + release at once; the engine must clean up alone */
    struct fake_engine f = {0};
    f.step_delay_us = 500;
    struct pl_async_engine *ae = start(&f, 64, 10);
    REQUIRE(ae);
    int32_t prompt[] = {1, 2};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 1000;
    for (int i = 0; i < 32; i++) {
        struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
        struct pl_async_request *r = NULL;
        REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, notify, &w, &r, NULL) == PL_STATUS_OK);
        if (i % 2)
            sleep_ms(1);
        pl_async_request_abort(r);
        pl_async_request_release(r); /* w goes out of scope: notify must never run again */
    }
    for (int i = 0; i < GUARD_POLLS && pl_async_engine_num_unfinished(ae) > 0; i++)
        sleep_ms(5);
    CHECK(pl_async_engine_num_unfinished(ae) == 0);
    pl_async_engine_free(ae);
}

static void test_admission_and_refusal(void)
{
    struct fake_engine f = {0};
    f.step_delay_us = 20000;
    f.max_n = 2;
    struct pl_async_engine *ae = start(&f, 2, 10);
    REQUIRE(ae);
    int32_t prompt[] = {1};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 1000000; /* a and b cannot finish before c is refused, however slow the
                                test thread; they are aborted right after */
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct pl_async_request *a = NULL, *b = NULL, *c = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_async_engine_submit(ae, prompt, 1, &sp, NULL, NULL, &a, &err) == PL_STATUS_OK);
    REQUIRE(pl_async_engine_submit(ae, prompt, 1, &sp, NULL, NULL, &b, &err) == PL_STATUS_OK);
    CHECK(pl_async_engine_submit(ae, prompt, 1, &sp, NULL, NULL, &c, &err) == PL_STATUS_LIMIT);
    CHECK(c == NULL);
    CHECK(strstr(err.msg, "overloaded") != NULL);
    pl_async_request_abort(a);
    pl_async_request_abort(b);
    pl_async_request_release(a);
    pl_async_request_release(b);
    for (int i = 0; i < GUARD_POLLS && pl_async_engine_num_unfinished(ae) > 0; i++)
        sleep_ms(5);
    REQUIRE(pl_async_engine_num_unfinished(ae) == 0);
    /* the engine refuses n = 3: the request ends with an error delta */
    sp.max_tokens = 50;
    sp.n = 3;
    REQUIRE(pl_async_engine_submit(ae, prompt, 1, &sp, notify, &w, &c, &err) == PL_STATUS_OK);
    struct collected col;
    collect(c, &w, &col);
    CHECK(col.saw_error);
    pl_async_request_release(c);
    pl_async_engine_free(ae);
}

static void test_stall_hook(void)
{
    char path[] = "/tmp/pl_stall_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    setenv("PAGELLM_TEST_STALL_FILE", path, 1);
    struct fake_engine f = {0};
    const double stall_s = 0.5;
    struct pl_async_engine *ae = start(&f, 16, stall_s);
    unsetenv("PAGELLM_TEST_STALL_FILE");
    REQUIRE(ae);
    CHECK(pl_async_engine_is_healthy(ae, NULL)); /* idle: healthy even though stalled */
    int32_t prompt[] = {1, 2, 3};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 3;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct pl_async_request *r = NULL;
    double t_submit = now_s();
    REQUIRE(pl_async_engine_submit(ae, prompt, 3, &sp, notify, &w, &r, NULL) == PL_STATUS_OK);
    bool healthy = pl_async_engine_is_healthy(ae, NULL);
    /* work just arrived: healthy -- asserted only when this thread provably asked within
     * the stall timeout (a loaded machine may have paused it longer) */
    if (now_s() - t_submit < stall_s)
        CHECK(healthy);
    double age = 0;
    for (int i = 0; i < GUARD_POLLS && pl_async_engine_is_healthy(ae, &age); i++)
        sleep_ms(5);
    CHECK(!pl_async_engine_is_healthy(ae, &age));
    CHECK(age >= stall_s);
    CHECK(now_s() - t_submit >= stall_s); /* not declared stalled early */
    CHECK(!pl_async_request_is_finished(r));
    unlink(path);
    struct collected c;
    collect(r, &w, &c);
    CHECK(c.finish[0] == PL_FINISH_LENGTH);
    CHECK(pl_async_engine_is_healthy(ae, NULL));
    pl_async_request_release(r);
    pl_async_engine_free(ae);
}

static void test_shutdown_aborts(void)
{
    struct fake_engine f = {0};
    f.step_delay_us = 1000;
    struct pl_async_engine *ae = start(&f, 16, 10);
    REQUIRE(ae);
    int32_t prompt[] = {9};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 1000000;
    struct pl_async_request *r = NULL;
    REQUIRE(pl_async_engine_submit(ae, prompt, 1, &sp, NULL, NULL, &r, NULL) == PL_STATUS_OK);
    sleep_ms(10);
    pl_async_engine_free(ae); /* must not hang on the endless request */
    CHECK(pl_async_request_is_finished(r));
    struct pl_request_output *o, *last = NULL;
    while ((o = pl_async_request_pop(r)) != NULL) {
        pl_request_output_free(last);
        last = o;
    }
    REQUIRE(last);
    CHECK(last->finished);
    pl_request_output_free(last);
    pl_async_request_release(r);
}

/* A failed step's requests end with the engine's error: error delta, "error" finish. */
static void test_step_failure_errors(void)
{
    for (int silent = 0; silent < 2; silent++) {
        struct fake_engine f = {0};
        f.fail_steps = 1;
        /* silent: the engine ends nothing on its failure; the async engine must */
        f.fail_silently = silent;
        struct pl_async_engine *ae = start(&f, 16, 10);
        REQUIRE(ae);
        int32_t prompt[] = {4, 5};
        struct pl_sampling_params sp;
        pl_sampling_params_default(&sp);
        sp.max_tokens = 3;
        struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
        struct pl_async_request *r = NULL;
        REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, notify, &w, &r, NULL) ==
                PL_STATUS_OK);
        struct collected *c = malloc(sizeof(*c));
        collect(r, &w, c);
        CHECKF(!c->timed_out && c->saw_error, "silent %d: no error delta", silent);
        CHECKF(c->request_finish == PL_FINISH_ERROR, "silent %d: ended with '%s'", silent,
               pl_finish_reason_str(c->request_finish));
        CHECK(c->finish[0] != PL_FINISH_ABORT && c->finish[0] != PL_FINISH_LENGTH);
        pl_async_request_release(r);
        /* the engine goes on: the next request runs normally */
        REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, notify, &w, &r, NULL) ==
                PL_STATUS_OK);
        collect(r, &w, c);
        CHECK(!c->timed_out && !c->saw_error && c->finish[0] == PL_FINISH_LENGTH &&
              c->request_finish == PL_FINISH_LENGTH);
        pl_async_request_release(r);
        free(c);
        for (int i = 0; i < 400 && pl_async_engine_num_unfinished(ae) > 0; i++)
            sleep_ms(5);
        CHECK(pl_async_engine_num_unfinished(ae) == 0);
        pl_async_engine_free(ae);
    }
}

/*
 * A request whose samples' finishes arrive a delta before its (empty) last
 * delta: the last delta still names the reason the client saw, and /metrics
 * counts it under that reason, not as an abort.
 */
static void test_finish_reason_across_deltas(void)
{
    struct fake_engine f = {0};
    f.split_finish = true;
    struct pl_metrics *m = pl_metrics_new("tiny");
    REQUIRE(m);
    struct pl_async_engine_params p;
    pl_async_engine_params_default(&p);
    p.observe = pl_metrics_observe;
    p.observe_user = m;
    struct pl_async_engine *ae = NULL;
    REQUIRE(pl_async_engine_new(&fake_engine_ops, &f, &p, &ae, NULL) == PL_STATUS_OK);
    int32_t prompt[] = {3, 8};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 2;
    struct waiter w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct pl_async_request *r = NULL;
    REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, notify, &w, &r, NULL) == PL_STATUS_OK);
    struct collected c;
    collect(r, &w, &c);
    CHECK(!c.timed_out && c.finish[0] == PL_FINISH_LENGTH);
    CHECK(c.request_finish == PL_FINISH_LENGTH);
    pl_async_request_release(r);
    struct pl_llm_stats st = {0};
    char *text = NULL;
    size_t len = 0;
    REQUIRE(pl_metrics_render(m, &st, &text, &len, NULL) == PL_STATUS_OK);
    CHECKF(strstr(text, "finished_reason=\"length\"} 1") &&
               strstr(text, "finished_reason=\"abort\"} 0"),
           "metrics:\n%s", text);
    free(text);
    pl_async_engine_free(ae);
    pl_metrics_free(m);
}

/* Several requests are admitted all together or not at all. */
static void test_submit_all_or_nothing(void)
{
    char path[] = "/tmp/pl_stall_all_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    close(fd);
    setenv("PAGELLM_TEST_STALL_FILE", path, 1); /* admitted requests stay unfinished */
    struct fake_engine f = {0};
    struct pl_async_engine *ae = start(&f, 4, 1000);
    unsetenv("PAGELLM_TEST_STALL_FILE");
    REQUIRE(ae);
    int32_t prompt[] = {1, 2};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.max_tokens = 2;
    struct pl_async_submission subs[5];
    for (int i = 0; i < 5; i++)
        subs[i] = (struct pl_async_submission){prompt, 2, &sp, NULL, NULL, NULL};
    struct pl_async_request *rs[5];
    struct pl_err err = {0};
    /* more than the limit can ever admit: refused as a bad request, nothing queued */
    CHECK(pl_async_engine_submit_all(ae, subs, 5, NULL, NULL, rs, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "5 prompts") && strstr(err.msg, "4"));
    CHECK(rs[0] == NULL && rs[4] == NULL);
    CHECK(pl_async_engine_num_unfinished(ae) == 0);
    struct pl_async_request *a = NULL, *b = NULL;
    REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, NULL, NULL, &a, NULL) == PL_STATUS_OK);
    REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, NULL, NULL, &b, NULL) == PL_STATUS_OK);
    for (int i = 0; i < 4000 && atomic_load(&f.n_added) < 2; i++)
        sleep_ms(5);
    REQUIRE(atomic_load(&f.n_added) == 2);
    /* three more do not fit beside two: none is queued (overload) */
    CHECK(pl_async_engine_submit_all(ae, subs, 3, NULL, NULL, rs, &err) == PL_STATUS_LIMIT);
    CHECK(rs[0] == NULL && rs[1] == NULL && rs[2] == NULL);
    CHECK(pl_async_engine_num_unfinished(ae) == 2);
    /* two do */
    CHECK(pl_async_engine_submit_all(ae, subs, 2, NULL, NULL, rs, &err) == PL_STATUS_OK);
    CHECK(pl_async_engine_num_unfinished(ae) == 4);
    unlink(path);
    for (int i = 0; i < 4000 && pl_async_engine_num_unfinished(ae) > 0; i++)
        sleep_ms(5);
    CHECK(pl_async_engine_num_unfinished(ae) == 0);
    CHECK(atomic_load(&f.n_added) == 4);
    pl_async_request_release(a);
    pl_async_request_release(b);
    pl_async_request_release(rs[0]);
    pl_async_request_release(rs[1]);
    pl_async_engine_free(ae);
}

int main(void)
{
    PL_RUN(test_one_request);
    PL_RUN(test_many_threads);
    PL_RUN(test_abort_frees_blocks);
    PL_RUN(test_release_without_waiting);
    PL_RUN(test_admission_and_refusal);
    PL_RUN(test_stall_hook);
    PL_RUN(test_shutdown_aborts);
    PL_RUN(test_step_failure_errors);
    PL_RUN(test_finish_reason_across_deltas);
    PL_RUN(test_submit_all_or_nothing);
    return pl_test_summary();
}
