/*
 * test_engine_oom.c -- a request's end is never lost for lack of memory.
 *
 * The test binary interposes malloc / calloc / realloc (glibc lets a program
 * replace them) so that, while g_fail_allocs is set, every allocation fails.
 * With that on, the engine's poll must still report each finished request:
 * built from memory reserved when the request was added, with its samples'
 * finish reasons, finish_reason PL_FINISH_ERROR and error "out of memory for
 * the request's output" (PL_STATUS_NO_MEMORY). A request that is still running
 * loses nothing either: its news waits for a later poll. The async engine does
 * the same with what it routes: with allocations failing, a non-final delta is
 * dropped but the last one arrives, in the struct and outbox slot reserved at
 * submit. Under AddressSanitizer or ThreadSanitizer (which own malloc) the test skips.
 */
#include "test.h"

#include "engine_test_model.h"
#include "engine/async_engine.h"
#include "engine/engine.h"

#include <stdatomic.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define PL_TEST_SANITIZER_MALLOC 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PL_TEST_SANITIZER_MALLOC 1
#endif

#ifndef PL_TEST_SANITIZER_MALLOC
static atomic_bool g_fail_allocs;

extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

void *malloc(size_t n)
{
    return atomic_load(&g_fail_allocs) ? NULL : __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    return atomic_load(&g_fail_allocs) ? NULL : __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    return atomic_load(&g_fail_allocs) ? NULL : __libc_realloc(p, n);
}

static struct pl_engine *engine_new(struct test_model *m, struct pl_engine_model *im)
{
    tm_init(m, 64, 16, 256);
    *im = tm_interface_ex(m, false);
    struct pl_engine_params p;
    pl_engine_params_default(&p);
    p.sched.n_blocks = 64;
    p.sched.block_size = 16;
    p.sched.max_num_batched_tokens = 256;
    p.sched.max_num_seqs = 8;
    p.sched.max_model_len = 200;
    int32_t eos = TM_EOS;
    p.eos_ids = &eos;
    p.n_eos = 1;
    struct pl_engine *e = NULL;
    struct pl_err err;
    if (pl_engine_new(&p, im, NULL, &e, &err) != PL_STATUS_OK)
        fprintf(stderr, "engine: %s\n", err.msg);
    return e;
}

static void test_finish_survives_oom(void)
{
    struct test_model m;
    struct pl_engine_model im;
    struct pl_engine *e = engine_new(&m, &im);
    REQUIRE(e);
    const int32_t done_prompt[] = {5, 6, 7, 8};
    const int32_t long_prompt[] = {9, 10, 11};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.has_seed = true; /* n > 1 wants sampling; seeded: reproducible */
    sp.seed = 1;
    sp.ignore_eos = true;
    sp.n = 2;
    sp.max_tokens = 3;
    struct pl_engine_request r = {.request_id = 7, .name = "short", .prompt = done_prompt,
                                  .n_prompt = 4, .params = &sp};
    struct pl_err err;
    pl_status ast = pl_engine_add(e, &r, &err);
    CHECKF(ast == PL_STATUS_OK, "%s", err.msg);
    REQUIRE(ast == PL_STATUS_OK);
    struct pl_sampling_params sp_long = sp;
    sp_long.n = 1;
    sp_long.temperature = 0;
    sp_long.max_tokens = 100;
    struct pl_engine_request r2 = {.request_id = 8, .prompt = long_prompt, .n_prompt = 3,
                                   .params = &sp_long};
    REQUIRE(pl_engine_add(e, &r2, &err) == PL_STATUS_OK);
    for (int i = 0; i < 3; i++)
        REQUIRE(pl_engine_step(e, &err) == PL_STATUS_OK);

    struct pl_request_output items[4];
    atomic_store(&g_fail_allocs, true);
    int n = pl_engine_poll_into(e, true, items, 4);
    atomic_store(&g_fail_allocs, false);

    /* only the finished request is reported, from its reserve */
    REQUIRE(n == 1);
    struct pl_request_output *o = &items[0];
    CHECK(o->finished);
    CHECK(o->request_num == 7);
    CHECK(o->request_id && !strcmp(o->request_id, "short"));
    CHECK(o->finish_reason == PL_FINISH_ERROR);
    CHECK(o->error_status == PL_STATUS_NO_MEMORY);
    CHECK(o->error && strstr(o->error, "out of memory"));
    REQUIRE(o->n_outputs == 2);
    for (int i = 0; i < 2; i++) {
        CHECK(o->outputs[i].index == i);
        CHECK(o->outputs[i].finish_reason == PL_FINISH_LENGTH); /* what really ended it */
        CHECK(o->outputs[i].n_token_ids == 0);
    }
    CHECK(o->metrics.finished_time >= o->metrics.arrival_time && o->metrics.arrival_time > 0);
    pl_request_output_fini(o);

    /* the running request lost nothing: its first poll with memory has all 3 tokens */
    n = pl_engine_poll_into(e, true, items, 4);
    REQUIRE(n == 1);
    CHECK(items[0].request_num == 8 && !items[0].finished);
    REQUIRE(items[0].n_outputs == 1);
    CHECK(items[0].outputs[0].n_token_ids == 3);
    CHECK(items[0].n_prompt_token_ids == 3 && items[0].prompt_token_ids);
    pl_request_output_fini(&items[0]);
    pl_engine_abort(e, 8, &err);
    while (pl_engine_has_unfinished(e))
        REQUIRE(pl_engine_step(e, &err) == PL_STATUS_OK);
    n = pl_engine_poll_into(e, true, items, 4);
    REQUIRE(n == 1);
    CHECK(items[0].finished && items[0].finish_reason == PL_FINISH_ABORT && !items[0].error);
    pl_request_output_fini(&items[0]);
    CHECK(!pl_engine_has_pending(e));
    pl_engine_free(e);
    tm_fini(&m);
}

/* An engine for the async engine whose one request yields a delta and its last
 * delta in one poll, turning allocation failure on as it hands them over (the
 * observer turns it off once the last one is routed). */
struct oom_engine {
    uint64_t id;
    bool added, done;
};

static pl_status oe_add(void *e, const struct pl_engine_request *r, struct pl_err *err)
{
    struct oom_engine *o = e;
    o->id = r->request_id;
    o->added = true;
    return PL_STATUS_OK;
}

static pl_status oe_step(void *e, struct pl_err *err)
{
    return PL_STATUS_OK;
}

static bool oe_has_unfinished(void *e)
{
    struct oom_engine *o = e;
    return o->added && !o->done;
}

static int oe_poll(void *e, struct pl_request_output *items, int cap)
{
    struct oom_engine *o = e;
    if (!o->added || o->done || cap < 2)
        return 0;
    o->done = true;
    memset(items, 0, 2 * sizeof(*items));
    items[0].request_num = items[1].request_num = o->id;
    items[1].finished = true;
    items[1].finish_reason = PL_FINISH_LENGTH;
    atomic_store(&g_fail_allocs, true);
    return 2;
}

static void oe_abort(void *e, uint64_t id) {}

static void oe_stats(void *e, struct pl_llm_stats *out) {}

static const struct pl_engine_ops oom_ops = {oe_add,   oe_step,  oe_has_unfinished,
                                             oe_poll,  oe_abort, oe_stats};

static void observe_end(void *user, const struct pl_request_output *o)
{
    if (o->finished)
        atomic_store(&g_fail_allocs, false);
}

static void test_async_last_delta_reserved(void)
{
    struct oom_engine oe = {0};
    struct pl_async_engine_params p;
    pl_async_engine_params_default(&p);
    p.observe = observe_end;
    struct pl_async_engine *ae = NULL;
    struct pl_err err;
    REQUIRE(pl_async_engine_new(&oom_ops, &oe, &p, &ae, &err) == PL_STATUS_OK);
    int32_t prompt[] = {1, 2};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    struct pl_async_request *r = NULL;
    REQUIRE(pl_async_engine_submit(ae, prompt, 2, &sp, NULL, NULL, &r, &err) == PL_STATUS_OK);
    struct pl_request_output *d = pl_async_request_wait(r, 120.0); /* hang guard only */
    atomic_store(&g_fail_allocs, false);
    REQUIRE(d);
    CHECK(d->finished && d->finish_reason == PL_FINISH_LENGTH); /* the first was dropped */
    pl_request_output_free(d);
    CHECK(pl_async_request_wait(r, 0) == NULL);
    CHECK(pl_async_request_is_finished(r));
    pl_async_request_release(r);
    pl_async_engine_free(ae);
}

#endif /* !PL_TEST_SANITIZER_MALLOC */

int main(void)
{
#ifdef PL_TEST_SANITIZER_MALLOC
    fprintf(stderr, "SKIP: the sanitizer owns malloc; no allocation-failure hook\n");
    return 0;
#else
    PL_RUN(test_finish_survives_oom);
    PL_RUN(test_async_last_delta_reserved);
    return pl_test_summary();
#endif
}
