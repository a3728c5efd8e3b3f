/*
 * test_llm_submit_all.c -- pl_llm_submit_all, the streaming API's batch
 * submission, on the CPU runner with the built-in tiny model:
 *   - unseeded sampling (the engine's generator): a batch submitted with
 *     pl_llm_submit_all on a fresh handle gives, token for token, what
 *     pl_llm_generate gives for the same prompts on another fresh handle with
 *     the same seed (the requests are admitted together), twice over;
 *   - per-prompt params; request names;
 *   - all or none: a bad prompt or params set is refused naming the prompt,
 *     no stream is returned and nothing runs; a params count that is neither 1
 *     nor one per prompt is refused.
 */
#include "test.h"

#include "model/tiny_model.h"
#include "pagellm.h"

#include <stdint.h>
#include <stdlib.h>

#define HANG_GUARD_S 300.0
#define N 4

static char g_dir[] = "/tmp/pl_llm_submit_all_XXXXXX";

static const char *const PROMPTS[N] = {"The capital of France is", "Once upon a time",
                                       "San Francisco is a city known for",
                                       "Write a poem about"};

static struct pl_llm *open_llm(void)
{
    struct pl_llm_params lp;
    pl_llm_params_default(&lp);
    lp.model = g_dir;
    lp.device = "cpu";
    lp.n_threads = 1;
    lp.max_model_len = 256;
    lp.kv_cache_bytes = (size_t)16 << 20;
    lp.seed = 7;
    struct pl_llm *llm = NULL;
    if (pl_llm_new(&lp, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "%s\n", llm ? pl_llm_errmsg(llm) : "out of memory");
        pl_llm_free(llm);
        return NULL;
    }
    return llm;
}

static void params_for(struct pl_llm *llm, int k, struct pl_sampling_params *sp)
{
    pl_llm_default_sampling_params(llm, sp);
    sp->temperature = 1.0f; /* unseeded: the engine's generator */
    sp->max_tokens = 8 + k;
    sp->ignore_eos = true;
}

/* Reads every stream to its end into acc[] (cumulative). False on a hang or error. */
static bool drain(struct pl_llm_stream **s, struct pl_request_output *acc)
{
    for (int i = 0; i < N; i++) {
        memset(&acc[i], 0, sizeof(acc[i]));
        for (;;) {
            struct pl_request_output *d = NULL;
            if (pl_llm_stream_next(s[i], HANG_GUARD_S, &d) != PL_STATUS_OK || !d)
                return false;
            bool fin = d->finished;
            pl_status st = pl_request_output_append(&acc[i], d);
            pl_request_output_free(d);
            if (st != PL_STATUS_OK)
                return false;
            if (fin)
                break;
        }
    }
    return true;
}

static void test_batch_matches_generate(void)
{
    struct pl_prompt pr[N];
    struct pl_sampling_params sp[N];
    struct pl_llm *gen = open_llm();
    REQUIRE(gen != NULL);
    for (int k = 0; k < N; k++) {
        pr[k] = (struct pl_prompt){PROMPTS[k], NULL, 0};
        params_for(gen, k, &sp[k]);
    }
    struct pl_outputs ref = {0};
    REQUIRE(pl_llm_generate(gen, pr, N, sp, N, &ref) == PL_STATUS_OK);
    pl_llm_free(gen);

    for (int round = 0; round < 2; round++) {
        struct pl_llm *llm = open_llm();
        REQUIRE(llm != NULL);
        const char *names[N] = {"a", "b", "c", "d"};
        struct pl_llm_stream *s[N];
        REQUIRE(pl_llm_submit_all(llm, names, pr, N, sp, N, s) == PL_STATUS_OK);
        struct pl_request_output acc[N];
        CHECK(drain(s, acc));
        for (int k = 0; k < N; k++) {
            CHECK(acc[k].finished);
            CHECK(strcmp(acc[k].request_id, names[k]) == 0);
            REQUIRE(acc[k].n_outputs == 1 && ref.items[k].n_outputs == 1);
            const struct pl_completion_output *a = &acc[k].outputs[0], *r = &ref.items[k].outputs[0];
            CHECKF(a->n_token_ids == r->n_token_ids && a->n_token_ids == 8 + k,
                   "prompt %d: %d tokens, generate %d", k, a->n_token_ids, r->n_token_ids);
            CHECKF(a->n_token_ids == r->n_token_ids &&
                       !memcmp(a->token_ids, r->token_ids, sizeof(int32_t) * (size_t)a->n_token_ids),
                   "round %d prompt %d: tokens differ from pl_llm_generate's", round, k);
            pl_request_output_fini(&acc[k]);
            pl_llm_stream_free(s[k]);
        }
        pl_llm_free(llm);
    }
    pl_outputs_free(&ref);
}

static void test_all_or_none(void)
{
    struct pl_llm *llm = open_llm();
    REQUIRE(llm != NULL);
    struct pl_prompt pr[N];
    struct pl_sampling_params sp[N];
    for (int k = 0; k < N; k++) {
        pr[k] = (struct pl_prompt){PROMPTS[k], NULL, 0};
        params_for(llm, k, &sp[k]);
    }
    sp[2].temperature = -1.0f;
    struct pl_llm_stream *s[N] = {(void *)1, (void *)1, (void *)1, (void *)1};
    CHECK(pl_llm_submit_all(llm, NULL, pr, N, sp, N, s) == PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(pl_llm_errmsg(llm), "prompt 2: ") && strstr(pl_llm_errmsg(llm), "temperature"),
           "message: %s", pl_llm_errmsg(llm));
    for (int k = 0; k < N; k++)
        CHECK(s[k] == NULL);
    sp[2].temperature = 1.0f;
    int32_t bad_ids[] = {1, 2, 100000};
    pr[1] = (struct pl_prompt){NULL, bad_ids, 3};
    CHECK(pl_llm_submit_all(llm, NULL, pr, N, sp, N, s) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "prompt 1: ") != NULL);
    pr[1] = (struct pl_prompt){PROMPTS[1], NULL, 0};
    CHECK(pl_llm_submit_all(llm, NULL, pr, N, sp, 2, s) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "params") != NULL);
    struct pl_llm_stats st;
    pl_llm_get_stats(llm, &st);
    CHECK(st.generation_tokens == 0 && st.prompt_tokens == 0);
    /* one shared set is fine, and the handle still works */
    REQUIRE(pl_llm_submit_all(llm, NULL, pr, N, sp, 1, s) == PL_STATUS_OK);
    struct pl_request_output acc[N];
    CHECK(drain(s, acc));
    for (int k = 0; k < N; k++) {
        CHECK(acc[k].n_outputs == 1 && acc[k].outputs[0].n_token_ids == 8);
        pl_request_output_fini(&acc[k]);
        pl_llm_stream_free(s[k]);
    }
    pl_llm_free(llm);
}

int main(void)
{
    if (!mkdtemp(g_dir))
        return 1;
    struct pl_err err;
    if (pl_tiny_model_write("default", g_dir, &err) != PL_STATUS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    PL_RUN(test_batch_matches_generate);
    PL_RUN(test_all_or_none);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    return pl_test_summary();
}
