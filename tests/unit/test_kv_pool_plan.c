/*
 * test_kv_pool_plan.c -- sizing the KV pool from a memory budget (model_runner.c):
 * a small model with a huge budget (issue 11: a tiny Qwen2 on an H100 asked for
 * 73,912,614 blocks, more than block ids allow) is capped at what max_num_seqs
 * sequences of max_model_len can use and at PL_KV_MAX_BLOCKS; a runner built with a
 * made-up huge budget gets the capped pool, and max_model_len above the model's
 * length is refused unless allowed.
 */
#include "backend/backend.h"
#include "engine/block_manager.h"
#include "engine/model_runner.h"
#include "test.h"
#include "tiny_model.h"

/* The figure: the budget alone holds 73,912,614 blocks. */
static void test_huge_budget_capped_by_sequences(void)
{
    struct pl_kv_pool_plan pl;
    const size_t block_bytes = 24576; /* a 24-layer, 2 x 64-dim KV, bf16, block 16 model */
    const double budget = 73912614.0 * (double)block_bytes;
    pl_kv_pool_plan(budget, block_bytes, 16, 32768, 256, &pl);
    CHECK(pl.budget_blocks == 73912614);
    CHECK(pl.seq_blocks == 256LL * 2048);
    CHECK(pl.n_blocks == 256 * 2048);
    CHECK(pl.limit == PL_KV_POOL_LIMIT_SEQS);
    /* the block manager takes the capped pool (it refused the uncapped one) */
    struct pl_block_manager_params bp;
    pl_block_manager_params_default(&bp);
    bp.block_size = 16;
    bp.n_blocks = pl.n_blocks;
    struct pl_block_manager *bm = NULL;
    struct pl_err err;
    CHECKF(pl_block_manager_new(&bp, &bm, &err) == PL_STATUS_OK, "%s", err.msg);
    pl_block_manager_free(bm);
    bp.n_blocks = (int)(pl.budget_blocks > PL_KV_MAX_BLOCKS ? PL_KV_MAX_BLOCKS + 1LL
                                                            : pl.budget_blocks);
    CHECK(pl_block_manager_new(&bp, &bm, &err) == PL_STATUS_INVALID_ARGUMENT);
}

/* Sequences that could use more than block ids allow: the block-id cap. */
static void test_capped_at_block_ids(void)
{
    struct pl_kv_pool_plan pl;
    pl_kv_pool_plan(1e18, 1024, 16, 1LL << 30, 1024, &pl);
    CHECK(pl.n_blocks == PL_KV_MAX_BLOCKS);
    CHECK(pl.limit == PL_KV_POOL_LIMIT_BLOCK_IDS);
    /* no sequence cap (unknown length): block ids still cap it */
    pl_kv_pool_plan(1e18, 1024, 16, 0, 256, &pl);
    CHECK(pl.n_blocks == PL_KV_MAX_BLOCKS && pl.seq_blocks == 0);
    CHECK(pl.limit == PL_KV_POOL_LIMIT_BLOCK_IDS);
}

/* An ordinary budget: memory decides; partial blocks round down; none fit -> 0. */
static void test_memory_limited(void)
{
    struct pl_kv_pool_plan pl;
    pl_kv_pool_plan(10.5 * 4096, 4096, 16, 2048, 256, &pl);
    CHECK(pl.n_blocks == 10 && pl.limit == PL_KV_POOL_LIMIT_MEMORY);
    pl_kv_pool_plan(4095, 4096, 16, 2048, 256, &pl);
    CHECK(pl.n_blocks == 0);
    pl_kv_pool_plan(-1e9, 4096, 16, 2048, 256, &pl); /* utilization below what is used */
    CHECK(pl.n_blocks == 0);
    /* a length that is not a multiple of the block size rounds up per sequence */
    pl_kv_pool_plan(1e12, 4096, 16, 17, 3, &pl);
    CHECK(pl.n_blocks == 6 && pl.limit == PL_KV_POOL_LIMIT_SEQS);
}

static struct tiny_model tm;

/* A runner given a made-up huge CPU budget allocates only the capped pool. */
static void test_runner_huge_budget(void)
{
    struct pl_backend *be = NULL;
    struct pl_err err;
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.kv_cache_bytes = (size_t)1 << 60; /* far more than any machine: only a cap makes it fit */
    p.max_num_seqs = 4;
    p.max_num_batched_tokens = 64;
    p.max_model_len = 100;
    struct pl_model_runner *r = NULL;
    pl_status st = pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err);
    CHECKF(st == PL_STATUS_OK, "%s", err.msg);
    if (r) {
        CHECK(pl_model_runner_num_blocks(r) == 4 * 7); /* 4 sequences x ceil(100 / 16) */
        CHECK(pl_model_runner_max_model_len(r) == 100);
    }
    pl_model_runner_free(r);

    /* max_model_len above the model's 512 positions: refused, then allowed on request */
    p.kv_cache_bytes = (size_t)64 << 20;
    p.max_model_len = 600;
    r = NULL;
    st = pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err);
    CHECK(st == PL_STATUS_INVALID_ARGUMENT && r == NULL);
    CHECKF(strstr(err.msg, "max_model_len 600 is above the model's length 512") &&
               strstr(err.msg, "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1"),
           "%s", err.msg);
    p.allow_long_max_model_len = true;
    st = pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err);
    CHECKF(st == PL_STATUS_OK, "%s", err.msg);
    if (r)
        CHECK(pl_model_runner_max_model_len(r) == 600);
    pl_model_runner_free(r);

    /* an explicit pool beyond block ids is refused by name */
    p.num_kv_blocks = PL_KV_MAX_BLOCKS + 1;
    p.allow_long_max_model_len = false;
    p.max_model_len = 100;
    st = pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err);
    CHECK(st == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "num_kv_blocks") != NULL);
    pl_backend_free(be);
}

int main(void)
{
    struct tiny_opts o = {.arch = PL_TEST_ARCH_LLAMA, .dtype = PL_DTYPE_F32};
    tiny_model_init(&tm, &o, 11);
    PL_RUN(test_huge_budget_capped_by_sequences);
    PL_RUN(test_capped_at_block_ids);
    PL_RUN(test_memory_limited);
    PL_RUN(test_runner_huge_budget);
    tiny_model_fini(&tm);
    return pl_test_summary();
}
