/*
 * test_greedy.c -- the interim greedy driver on a tiny in-memory model.
 *
 * Checks: the same tokens and logprobs alone, batched and with chunked
 * prefill (and with other block sizes); each generated token is the argmax
 * of an independent full forward of prompt + previous outputs (one batch,
 * logits at every position) and the top-K logprobs equal the log_softmax of
 * those logits computed here in double, sorted with ties to the lower id;
 * generation stops right after a stop id; the KV pool check refuses too many
 * prompts; bad prompts are refused with a message.
 */
#include "backend/backend.h"
#include "engine/greedy.h"
#include "test.h"
#include "tiny_model.h"

static struct tiny_model tm;
static struct pl_backend *be;

static struct pl_model_runner *new_runner(int block_size, int n_blocks, int max_tokens)
{
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.block_size = block_size;
    p.num_kv_blocks = n_blocks;
    p.max_num_batched_tokens = max_tokens;
    p.max_num_seqs = 8;
    p.max_model_len = 96;
    struct pl_model_runner *r = NULL;
    struct pl_err err;
    if (pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err) != PL_STATUS_OK)
        fprintf(stderr, "runner: %s\n", err.msg);
    return r;
}

static const int32_t prompt_a[5] = {3, 17, 44, 9, 60};
static const int32_t prompt_b[17] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 63};
static int32_t prompt_c[30];

static void setup_seqs(struct pl_greedy_seq *s, int which_mask, int max_tokens, int k,
                       const int32_t *stop, int n_stop)
{
    const int32_t *prompts[3] = {prompt_a, prompt_b, prompt_c};
    const int lens[3] = {5, 17, 30};
    int n = 0;
    for (int i = 0; i < 3; i++)
        if (which_mask & (1 << i))
            s[n++] = (struct pl_greedy_seq){.prompt = prompts[i], .n_prompt = lens[i],
                                            .max_tokens = max_tokens, .n_logprobs = k,
                                            .stop_ids = stop, .n_stop_ids = n_stop};
}

static bool same_output(const struct pl_greedy_seq *a, const struct pl_greedy_seq *b, int k)
{
    if (a->n_out != b->n_out || memcmp(a->out_tokens, b->out_tokens, sizeof(int32_t) * a->n_out))
        return false;
    for (int i = 0; i < a->n_out * k; i++)
        if (a->top_ids[i] != b->top_ids[i] || fabs(a->top_logprobs[i] - b->top_logprobs[i]) > 1e-4)
            return false;
    return fabs(a->cumulative_logprob - b->cumulative_logprob) < 1e-3;
}

static void test_alone_batched_chunked(void)
{
    const int K = 4, N = 12;
    struct pl_greedy_seq alone[3], batch[3];
    struct pl_err err;
    struct pl_model_runner *r = new_runner(16, 64, 256);
    REQUIRE(r);
    for (int i = 0; i < 3; i++) {
        setup_seqs(&alone[i], 1 << i, N, K, NULL, 0);
        REQUIRE(pl_greedy_generate(r, &alone[i], 1, 0, &err) == PL_STATUS_OK);
        CHECK(alone[i].n_out == N && !alone[i].finished_by_stop);
    }
    /* the same prompts together, with whole, chunked and token-by-token prefill,
     * on pools with other block sizes and a small per-step token budget */
    const int chunks[4] = {0, 4, 1, 7};
    const int bss[4] = {16, 8, 32, 8};
    const int budgets[4] = {256, 256, 256, 9};
    for (int v = 0; v < 4; v++) {
        struct pl_model_runner *r2 = new_runner(bss[v], 64, budgets[v]);
        REQUIRE(r2);
        setup_seqs(batch, 7, N, K, NULL, 0);
        REQUIRE(pl_greedy_generate(r2, batch, 3, chunks[v], &err) == PL_STATUS_OK);
        for (int i = 0; i < 3; i++) {
            CHECKF(same_output(&alone[i], &batch[i], K), "variant %d prompt %d", v, i);
            pl_greedy_seq_fini(&batch[i]);
        }
        pl_model_runner_free(r2);
    }

    /* independent check: one forward over prompt + outputs, logits everywhere */
    for (int i = 0; i < 3; i++) {
        const struct pl_greedy_seq *s = &alone[i];
        int len = s->n_prompt + s->n_out - 1, V = tm.cfg.vocab_size, bs = 16;
        int32_t ids[64], pos[64], slots[64], rows[64], cu[2] = {0, len}, ctx[1] = {len};
        int32_t table[6];
        for (int b = 0; b < 6; b++)
            table[b] = b;
        for (int t = 0; t < len; t++) {
            ids[t] = t < s->n_prompt ? s->prompt[t] : s->out_tokens[t - s->n_prompt];
            pos[t] = t, slots[t] = table[t / bs] * bs + t % bs, rows[t] = t;
        }
        struct pl_batch b = {.n_tokens = len, .n_seqs = 1, .token_ids = ids, .positions = pos,
                             .slot_mapping = slots, .cu_seqlens_q = cu, .context_lens = ctx,
                             .block_tables = table, .max_blocks_per_seq = 6, .max_q_len = len,
                             .max_context_len = len, .logits_rows = rows, .n_logits = len};
        float *lg = malloc(sizeof(float) * len * V);
        REQUIRE(pl_model_runner_run(r, &b, lg, &err) == PL_STATUS_OK);
        double cum = 0;
        for (int o = 0; o < s->n_out; o++) {
            const float *row = lg + (size_t)(s->n_prompt - 1 + o) * V;
            double mx = -1e300, sum = 0;
            for (int v = 0; v < V; v++)
                mx = fmax(mx, row[v]);
            for (int v = 0; v < V; v++)
                sum += exp(row[v] - mx);
            double lse = mx + log(sum);
            /* the token: the highest logit, lowest id among equals */
            int best = 0;
            for (int v = 1; v < V; v++)
                if (row[v] > row[best])
                    best = v;
            CHECKF(s->out_tokens[o] == best, "prompt %d step %d: %d vs argmax %d", i, o,
                   s->out_tokens[o], best);
            cum += row[best] - lse;
            /* top-K: every listed id beats or ties every unlisted id, sorted */
            for (int j = 0; j < K; j++) {
                int id = s->top_ids[o * K + j];
                CHECK_NEAR(s->top_logprobs[o * K + j], row[id] - lse, 1e-5);
                if (j > 0) {
                    int prev = s->top_ids[o * K + j - 1];
                    CHECK(row[prev] > row[id] || (row[prev] == row[id] && prev < id));
                }
                for (int v = 0; v < V; v++) {
                    bool listed = false;
                    for (int jj = 0; jj < K; jj++)
                        listed |= s->top_ids[o * K + jj] == v;
                    if (!listed)
                        CHECK(row[v] < row[id] || (row[v] == row[id] && v > id));
                }
            }
            CHECK(s->top_ids[o * K] == best);
        }
        CHECK_NEAR(s->cumulative_logprob, cum, 1e-4);
        free(lg);
    }
    for (int i = 0; i < 3; i++)
        pl_greedy_seq_fini(&alone[i]);
    pl_model_runner_free(r);
}

static void test_stop_ids(void)
{
    struct pl_err err;
    struct pl_model_runner *r = new_runner(16, 64, 256);
    REQUIRE(r);
    struct pl_greedy_seq s[3];
    setup_seqs(s, 4, 10, 0, NULL, 0);
    REQUIRE(pl_greedy_generate(r, s, 1, 0, &err) == PL_STATUS_OK);
    REQUIRE(s[0].n_out == 10);
    /* stop on the first occurrence of the 4th output token */
    int32_t stop = s[0].out_tokens[3];
    int first = 3;
    for (int i = 0; i < 3; i++)
        if (s[0].out_tokens[i] == stop && first == 3)
            first = i;
    int32_t expect[10];
    memcpy(expect, s[0].out_tokens, sizeof(expect));
    pl_greedy_seq_fini(&s[0]);
    int32_t stops[2] = {63, stop};
    setup_seqs(s, 7, 10, 0, stops, 2);
    REQUIRE(pl_greedy_generate(r, s, 3, 3, &err) == PL_STATUS_OK);
    CHECK(s[2].n_out == first + 1 && s[2].finished_by_stop);
    CHECK(!memcmp(s[2].out_tokens, expect, sizeof(int32_t) * (first + 1)));
    for (int i = 0; i < 2; i++) /* the others either stop on a stop id or run to length */
        CHECK(s[i].finished_by_stop ? (s[i].out_tokens[s[i].n_out - 1] == 63 ||
                                       s[i].out_tokens[s[i].n_out - 1] == stop)
                                    : s[i].n_out == 10);
    for (int i = 0; i < 3; i++)
        pl_greedy_seq_fini(&s[i]);
    pl_model_runner_free(r);
}

static void test_refusals(void)
{
    struct pl_err err;
    struct pl_greedy_seq s[3];
    struct pl_model_runner *r = new_runner(8, 12, 256); /* 96 tokens of KV, 15 blocks needed */
    REQUIRE(r);
    setup_seqs(s, 7, 20, 0, NULL, 0);
    CHECK(pl_greedy_generate(r, s, 3, 0, &err) == PL_STATUS_NO_MEMORY);
    CHECK(strstr(err.msg, "num-kv-blocks") != NULL);
    setup_seqs(s, 1, 5, 0, NULL, 0);
    int32_t bad[2] = {5, 64};
    s[0].prompt = bad, s[0].n_prompt = 2;
    CHECK(pl_greedy_generate(r, s, 1, 0, &err) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(err.msg, "vocabulary") != NULL);
    pl_model_runner_free(r);

    /* runner sizing */
    struct pl_model_runner_params p;
    pl_model_runner_params_default(&p);
    p.block_size = 12;
    CHECK(pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
    p.block_size = 16, p.num_kv_blocks = 4, p.max_model_len = 65;
    CHECK(pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(err.msg, "largest max_model_len that fits is 64") != NULL, "%s", err.msg);
    p.max_model_len = 64;
    REQUIRE(pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err) == PL_STATUS_OK);
    CHECK(pl_model_runner_max_model_len(r) == 64 && pl_model_runner_num_blocks(r) == 4);
    pl_model_runner_free(r);
    /* from a byte budget: one block = 2 * layers * block_size * kv_dim * 4 bytes */
    p.num_kv_blocks = 0, p.max_model_len = 0;
    size_t block_bytes = 2 * (size_t)tm.cfg.n_layers * 16 * (tm.cfg.n_kv_heads * tm.cfg.head_dim) * 4;
    p.kv_cache_bytes = block_bytes * 10 + 5;
    REQUIRE(pl_model_runner_new_from_parts(&p, &tm.cfg, &tm.w, be, &r, &err) == PL_STATUS_OK);
    CHECK(pl_model_runner_num_blocks(r) == 10);
    CHECK(pl_model_runner_max_model_len(r) == 160); /* config allows 512: capped to the pool */
    pl_model_runner_free(r);
    pl_model_runner_free(NULL);
}

int main(void)
{
    struct tiny_opts o = {PL_TEST_ARCH_QWEN2, PL_DTYPE_BF16, false, 0, 2};
    tiny_model_init(&tm, &o, 2024);
    for (int i = 0; i < 30; i++)
        prompt_c[i] = (i * 37 + 11) % 64;
    struct pl_err err;
    if (pl_backend_cpu_new(2, &be, &err) != PL_STATUS_OK)
        return 1;
    PL_RUN(test_alone_batched_chunked);
    PL_RUN(test_stop_ids);
    PL_RUN(test_refusals);
    pl_backend_free(be);
    tiny_model_fini(&tm);
    return pl_test_summary();
}
