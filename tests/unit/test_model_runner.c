/*
 * test_model_runner.c -- the model runner's load-time checks and error paths.
 *
 * The runner (engine/model_runner.c) must refuse at load, with the reason in
 * the message, a model the backend cannot run (a shape its kernels lack, an op
 * it does not have), and must put the backend's own error text into the
 * message of a failed forward (not "backend sync failed"). The backends here
 * are the CPU backend with some ops of its table replaced, so that a GPU-only
 * refusal can be provoked on any machine. Backend selection by name is checked
 * too.
 */
#include "backend/backend.h"
#include "engine/model_runner.h"
#include "test.h"
#include "tiny_model.h"

static struct pl_backend_ops g_ops; /* the CPU table with overrides */
static int g_seen_head_dim;

static pl_status refuse_head_dim(struct pl_backend *be, const struct pl_model_needs *n,
                                 struct pl_err *err)
{
    g_seen_head_dim = n->head_dim;
    return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                      "attention with head_dim %d is not supported by these kernels",
                      n->head_dim);
}

static pl_status failing_sync(struct pl_backend *be) { return PL_STATUS_INTERNAL; }

static const char *device_error(struct pl_backend *be)
{
    return "cuda attention (decode): an illegal memory access was encountered";
}

/* A CPU backend whose op table is g_ops (a copy of the CPU's, to be overridden). */
static struct pl_backend *patched_cpu(void)
{
    struct pl_backend *be = NULL;
    struct pl_err err;
    if (pl_backend_cpu_new(1, &be, &err) != PL_STATUS_OK)
        return NULL;
    g_ops = *be->ops;
    be->ops = &g_ops;
    return be;
}

static void test_unsupported_shape_refused_at_load(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_LLAMA, PL_DTYPE_F32, false, 0, 1};
    struct tiny_model tm;
    tiny_model_init(&tm, &o, 3);
    struct pl_backend *be = patched_cpu();
    REQUIRE(be);
    g_ops.check_model = refuse_head_dim;
    struct pl_model *m = NULL;
    struct pl_err err = {0};
    pl_status st = pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err);
    CHECK(st == PL_STATUS_UNSUPPORTED && m == NULL);
    CHECK(g_seen_head_dim == tm.cfg.head_dim);
    CHECKF(strstr(err.msg, "head_dim 8") && strstr(err.msg, "LlamaForCausalLM"), "%s", err.msg);

    /* the same refusal through the runner, before any KV pool is made */
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.num_kv_blocks = 8;
    p.max_num_batched_tokens = 8;
    p.max_num_seqs = 2;
    p.max_model_len = 32;
    struct pl_model_runner *r = NULL;
    pl_err_clear(&err);
    st = pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err);
    CHECK(st == PL_STATUS_UNSUPPORTED && r == NULL);
    CHECKF(strstr(err.msg, "head_dim 8") != NULL, "%s", err.msg);
    pl_backend_free(be);
    tiny_model_fini(&tm);
}

static void test_missing_op_refused_at_load(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_LLAMA, PL_DTYPE_F32, false, 0, 1};
    struct tiny_model tm;
    tiny_model_init(&tm, &o, 4);
    tm.cfg.act = PL_ACT_GELU_TANH; /* needs the gelu_tanh_mul op */
    struct pl_backend *be = patched_cpu();
    REQUIRE(be);
    struct pl_model *m = NULL;
    struct pl_err err = {0};
    REQUIRE(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_OK);
    pl_model_free(m);
    m = NULL;
    g_ops.gelu_tanh_mul = NULL;
    CHECK(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_UNSUPPORTED);
    CHECKF(strstr(err.msg, "gelu_tanh_mul") != NULL, "%s", err.msg);
    tm.cfg.final_softcap = 30.0f;
    tm.cfg.act = PL_ACT_SILU;
    g_ops.softcap = NULL;
    CHECK(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_UNSUPPORTED);
    CHECKF(strstr(err.msg, "softcap") != NULL, "%s", err.msg);
    CHECK(m == NULL);
    pl_backend_free(be);
    tiny_model_fini(&tm);
}

/* A forward whose backend fails carries the backend's own words. */
static void test_backend_error_reaches_the_message(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_QWEN2, PL_DTYPE_F32, false, 0, 1};
    struct tiny_model tm;
    tiny_model_init(&tm, &o, 5);
    struct pl_backend *be = patched_cpu();
    REQUIRE(be);
    struct pl_model *m = NULL;
    struct pl_kv_cache kv;
    struct pl_err err = {0};
    REQUIRE(pl_model_new(&tm.cfg, &tm.w, be, 8, 2, 4, &m, &err) == PL_STATUS_OK);
    REQUIRE(pl_kv_cache_init(&kv, be, &tm.cfg, 4, 16, &err) == PL_STATUS_OK);
    int32_t ids[2] = {5, 6}, pos[2] = {0, 1}, slots[2] = {0, 1}, cu[2] = {0, 2}, ctx[1] = {2};
    int32_t table[4] = {0, -1, -1, -1}, rows[1] = {1};
    struct pl_batch b = {
        .n_tokens = 2, .n_seqs = 1, .token_ids = ids, .positions = pos, .slot_mapping = slots,
        .cu_seqlens_q = cu, .context_lens = ctx, .block_tables = table, .max_blocks_per_seq = 4,
        .max_q_len = 2, .max_context_len = 2, .logits_rows = rows, .n_logits = 1,
    };
    float logits[64];
    CHECK(pl_model_forward(m, &b, &kv, logits, &err) == PL_STATUS_OK);
    g_ops.sync = failing_sync;
    g_ops.last_error = device_error;
    CHECK(pl_model_forward(m, &b, &kv, logits, &err) == PL_STATUS_INTERNAL);
    CHECKF(strstr(err.msg, "an illegal memory access was encountered") != NULL, "%s", err.msg);
    CHECKF(strstr(err.msg, "sync failed") == NULL, "%s", err.msg);
    pl_kv_cache_fini(&kv, be);
    pl_model_free(m);
    pl_backend_free(be);
    tiny_model_fini(&tm);
}

static void test_backend_by_name(void)
{
    struct pl_backend *be = NULL;
    struct pl_err err = {0};
    const struct pl_backend_params p = {.n_threads = 1};
    REQUIRE(pl_backend_new("cpu", &p, &be, &err) == PL_STATUS_OK);
    CHECK(!strcmp(be->ops->name, "cpu") && !be->ops->device_memory);
    size_t free_b = 0, total_b = 0;
    CHECK(be->ops->mem_info && be->ops->mem_info(be, &free_b, &total_b) == PL_STATUS_OK);
    CHECK(total_b > 0 && free_b <= total_b);
    pl_backend_free(be);
    be = NULL;
    CHECK(pl_backend_new("tpu", &p, &be, &err) == PL_STATUS_INVALID_ARGUMENT && be == NULL);
    CHECKF(strstr(err.msg, "'tpu'") && strstr(err.msg, "cpu"), "%s", err.msg);
    CHECK(pl_backend_name_known("auto") && pl_backend_name_known("cuda") &&
          !pl_backend_name_known("tpu"));
    /* auto always gives a backend (the CPU when no accelerator is present) */
    REQUIRE(pl_backend_new("auto", &p, &be, &err) == PL_STATUS_OK);
    pl_backend_free(be);
}

int main(void)
{
    PL_RUN(test_unsupported_shape_refused_at_load);
    PL_RUN(test_missing_op_refused_at_load);
    PL_RUN(test_backend_error_reaches_the_message);
    PL_RUN(test_backend_by_name);
    return pl_test_summary();
}
