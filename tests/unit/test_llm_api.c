/*
 * test_llm_api.c -- the public C API (pl_llm_*) end to end on the CPU runner,
 * against the golden fixtures (Hugging Face transformers references in
 * tests/fixtures/golden/, written by tools/golden_refs.py).
 *
 * For each fixture: write its preset with pl_tiny_model_write, then run its
 * prompts through pl_llm_generate (token-id prompts, temperature 0,
 * logprobs 5, ignore_eos since the references generate max_tokens tokens) in
 * several engine shapes and require the reference greedy ids and top-5
 * logprobs (within LOGPROB_TOL):
 *   - all prompts submitted together (per-prompt params);
 *   - one by one;
 *   - a KV pool so small that running them together preempts (checked:
 *     num_preemptions > 0 in the stats);
 *   - a tiny token budget (chunked prefill; skipped for dynamic-NTK rope,
 *     whose numbers depend on the forward's length);
 *   - submitted twice on one LLM: the second run hits the prefix cache
 *     (num_cached_tokens > 0 for prompts longer than a block).
 * A step whose reference top-1/top-2 gap is below NEAR_TIE may flip under a
 * different summation order; the comparison of that prompt stops there.
 * Also: the request interface (add/step/poll deltas concatenate to the
 * generate output; abort), errmsg on bad input, chat on the default model.
 */
#include "test.h"

#include "model/config.h"
#include "model/tiny_model.h"
#include "pagellm.h"

#include <dirent.h>
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOP_K 5
#define LOGPROB_TOL 1e-3
#define NEAR_TIE 1e-4

struct ref_prompt {
    int32_t *prompt;
    int n_prompt;
    int max_tokens;
    int32_t *tokens;  /* [max_tokens] */
    int32_t *top_ids; /* [max_tokens * TOP_K] */
    double *top_lps;
};

struct fixture {
    char name[256];
    char preset[64];
    struct ref_prompt *p;
    int n;
};

static int32_t *ints(json_t *a, int *n)
{
    if (!json_is_array(a) || !json_array_size(a))
        return NULL;
    *n = (int)json_array_size(a);
    int32_t *out = malloc(sizeof(int32_t) * (size_t)*n);
    for (int i = 0; out && i < *n; i++)
        out[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    return out;
}

static bool load_fixture(const char *path, struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    json_t *root = json_load_file(path, 0, NULL);
    json_t *prompts = root ? json_object_get(root, "prompts") : NULL;
    json_t *preset = root ? json_object_get(root, "preset") : NULL;
    if (!json_is_array(prompts) || !json_is_string(preset)) {
        json_decref(root);
        return false;
    }
    snprintf(f->preset, sizeof(f->preset), "%s", json_string_value(preset));
    f->n = (int)json_array_size(prompts);
    f->p = calloc((size_t)f->n, sizeof(*f->p));
    bool ok = f->p != NULL;
    for (int i = 0; ok && i < f->n; i++) {
        json_t *p = json_array_get(prompts, (size_t)i);
        struct ref_prompt *r = &f->p[i];
        int n_tok = 0;
        r->prompt = ints(json_object_get(p, "prompt_token_ids"), &r->n_prompt);
        r->tokens = ints(json_object_get(p, "token_ids"), &n_tok);
        r->max_tokens = n_tok;
        json_t *tops = json_object_get(p, "top_logprobs");
        r->top_ids = malloc(sizeof(int32_t) * (size_t)(n_tok * TOP_K + 1));
        r->top_lps = malloc(sizeof(double) * (size_t)(n_tok * TOP_K + 1));
        ok = r->prompt && r->tokens && r->top_ids && r->top_lps && json_is_array(tops) &&
             (int)json_array_size(tops) == n_tok;
        for (int s = 0; ok && s < n_tok; s++)
            for (int k = 0; k < TOP_K; k++) {
                json_t *pair = json_array_get(json_array_get(tops, (size_t)s), (size_t)k);
                r->top_ids[s * TOP_K + k] = (int32_t)json_integer_value(json_array_get(pair, 0));
                r->top_lps[s * TOP_K + k] = json_number_value(json_array_get(pair, 1));
            }
    }
    json_decref(root);
    return ok;
}

static void fixture_fini(struct fixture *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->p[i].prompt);
        free(f->p[i].tokens);
        free(f->p[i].top_ids);
        free(f->p[i].top_lps);
    }
    free(f->p);
}

/* Compares one output with the reference; returns false on a mismatch. */
static bool compare(const struct fixture *f, int i, const struct pl_request_output *o,
                    const char *shape)
{
    const struct ref_prompt *r = &f->p[i];
    if (!o || o->n_outputs != 1) {
        fprintf(stderr, "%s %s prompt %d: no output\n", f->preset, shape, i);
        return false;
    }
    const struct pl_completion_output *c = &o->outputs[0];
    if (c->n_token_ids != r->max_tokens || !c->has_logprobs ||
        c->finish_reason != PL_FINISH_LENGTH) {
        fprintf(stderr, "%s %s prompt %d: %d tokens, finish %d\n", f->preset, shape, i,
                c->n_token_ids, c->finish_reason);
        return false;
    }
    for (int s = 0; s < r->max_tokens; s++) {
        const double *ref = &r->top_lps[s * TOP_K];
        if (c->token_ids[s] != r->tokens[s]) {
            if (ref[0] - ref[1] < NEAR_TIE)
                return true; /* a legitimate flip at a near tie: stop comparing */
            fprintf(stderr, "%s %s prompt %d step %d: token %d, reference %d\n", f->preset,
                    shape, i, s, c->token_ids[s], r->tokens[s]);
            return false;
        }
        const struct pl_logprob_entry *e = &c->logprobs[s];
        if (e->n_top != TOP_K)
            return false;
        for (int k = 0; k < TOP_K; k++) {
            /* compare by id: the reference's logprob of our k-th id, where listed */
            for (int j = 0; j < TOP_K; j++)
                if (r->top_ids[s * TOP_K + j] == e->top_ids[k] &&
                    fabs(ref[j] - e->top_logprobs[k]) > LOGPROB_TOL) {
                    fprintf(stderr, "%s %s prompt %d step %d: logprob of %d %.5f vs %.5f\n",
                            f->preset, shape, i, s, e->top_ids[k], e->top_logprobs[k], ref[j]);
                    return false;
                }
        }
        if (fabs(e->top_logprobs[0] - ref[0]) > LOGPROB_TOL)
            return false;
    }
    return true;
}

static struct pl_llm *open_llm(const char *dir, int block_size, int num_kv_blocks, int budget,
                               int max_seqs, int max_model_len)
{
    struct pl_llm_params p;
    pl_llm_params_default(&p);
    p.model = dir;
    p.block_size = block_size;
    p.num_kv_blocks = num_kv_blocks;
    p.max_num_batched_tokens = budget;
    p.max_num_seqs = max_seqs;
    p.max_model_len = max_model_len;
    p.kv_cache_bytes = (size_t)4 << 20; /* plenty for these models, quick to allocate */
    p.n_threads = 1;
    struct pl_llm *llm;
    if (pl_llm_new(&p, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "pl_llm_new(%s): %s\n", dir, pl_llm_errmsg(llm));
        pl_llm_free(llm);
        return NULL;
    }
    return llm;
}

/* Runs prompts [lo, hi) in one generate call and compares each. */
static bool run_range(struct pl_llm *llm, const struct fixture *f, int lo, int hi,
                      const char *shape, int *n_cached)
{
    int n = hi - lo;
    struct pl_prompt *pr = calloc((size_t)n, sizeof(*pr));
    struct pl_sampling_params *sp = calloc((size_t)n, sizeof(*sp));
    for (int i = 0; i < n; i++) {
        pr[i].token_ids = f->p[lo + i].prompt;
        pr[i].n_token_ids = f->p[lo + i].n_prompt;
        pl_sampling_params_default(&sp[i]);
        sp[i].temperature = 0;
        sp[i].logprobs = TOP_K;
        sp[i].ignore_eos = true;
        sp[i].max_tokens = f->p[lo + i].max_tokens;
    }
    struct pl_outputs out;
    bool ok = pl_llm_generate(llm, pr, n, sp, n, &out) == PL_STATUS_OK;
    if (!ok)
        fprintf(stderr, "%s %s: %s\n", f->preset, shape, pl_llm_errmsg(llm));
    for (int i = 0; ok && i < n; i++) {
        ok = compare(f, lo + i, &out.items[i], shape);
        if (n_cached)
            n_cached[lo + i] = out.items[i].num_cached_tokens;
    }
    if (ok)
        pl_outputs_free(&out);
    free(pr);
    free(sp);
    return ok;
}

static void check_fixture(const char *path)
{
    struct fixture f;
    REQUIRE(load_fixture(path, &f));
    char tmpl[] = "/tmp/pl_llm_api_XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    struct pl_err err;
    REQUIRE(pl_tiny_model_write(f.preset, tmpl, &err) == PL_STATUS_OK);
    /* the model's own length bounds max_model_len (phi3's presets have 64) but for
     * dynamic NTK, which grows past it by design (its prompts do); length-dependent ropes
     * (dynamic NTK, longrope) are not chunked, as test_golden does */
    struct pl_model_config mc;
    REQUIRE(pl_model_config_load(tmpl, &mc, &err) == PL_STATUS_OK);
    const bool dynamic = mc.rope.type == PL_ROPE_DYNAMIC || mc.rope.type == PL_ROPE_LONGROPE;
    const int mml = mc.rope.type != PL_ROPE_DYNAMIC && mc.max_position_embeddings < 128
                        ? mc.max_position_embeddings
                        : 128;

    /* together, then again on the same LLM: prefix-cache hits */
    struct pl_llm *llm = open_llm(tmpl, 8, 0, 256, 16, mml);
    REQUIRE(llm);
    CHECKF(run_range(llm, &f, 0, f.n, "together", NULL), "%s", f.preset);
    int cached[64] = {0};
    CHECKF(run_range(llm, &f, 0, f.n, "cached", cached), "%s", f.preset);
    for (int i = 0; i < f.n && i < 64; i++)
        if (f.p[i].n_prompt > 8)
            CHECKF(cached[i] > 0, "%s prompt %d (%d tokens): no cache hit", f.preset, i,
                   f.p[i].n_prompt);
    struct pl_llm_stats st;
    pl_llm_get_stats(llm, &st);
    CHECK(st.kv_blocks_used == 0);
    CHECK(st.prefix_cache_hit_rate > 0);
    pl_llm_free(llm);

    /* one by one */
    llm = open_llm(tmpl, 16, 0, 256, 16, mml);
    REQUIRE(llm);
    for (int i = 0; i < f.n; i++)
        CHECKF(run_range(llm, &f, i, i + 1, "alone", NULL), "%s", f.preset);
    pl_llm_free(llm);

    /* a pool that fits the largest request alone but not all together */
    int need = 0, total = 0;
    for (int i = 0; i < f.n; i++) {
        int b = (f.p[i].n_prompt + f.p[i].max_tokens + 7) / 8;
        need = b > need ? b : need;
        total += b;
    }
    if (total > need) {
        llm = open_llm(tmpl, 8, need, 256, 16, need * 8);
        REQUIRE(llm);
        CHECKF(run_range(llm, &f, 0, f.n, "preempt", NULL), "%s", f.preset);
        pl_llm_get_stats(llm, &st);
        CHECKF(st.num_preemptions > 0, "%s: no preemption with %d blocks", f.preset, need);
        pl_llm_free(llm);
    }

    /* chunked prefill under a tiny budget */
    if (!dynamic) {
        llm = open_llm(tmpl, 16, 0, 4, 4, mml);
        REQUIRE(llm);
        CHECKF(run_range(llm, &f, 0, f.n, "chunked", NULL), "%s", f.preset);
        pl_llm_free(llm);
    }
    pl_test_rm_tree(tmpl);
    fixture_fini(&f);
}

static void test_golden_fixtures(void)
{
    const char *dir = pl_test_path("tests/fixtures/golden");
    char d[4096];
    snprintf(d, sizeof(d), "%s", dir);
    DIR *dd = opendir(d);
    REQUIRE(dd);
    int n = 0;
    struct dirent *e;
    char paths[64][4400];
    while ((e = readdir(dd)) && n < 64) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".json"))
            snprintf(paths[n++], sizeof(paths[0]), "%s/%.255s", d, e->d_name);
    }
    closedir(dd);
    CHECK(n > 0);
    for (int i = 0; i < n; i++)
        check_fixture(paths[i]);
}

/* The default model: text prompts, streaming deltas equal generate's output, abort, chat. */
static void test_default_model(void)
{
    char tmpl[] = "/tmp/pl_llm_api_XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    struct pl_err err;
    REQUIRE(pl_tiny_model_write("default", tmpl, &err) == PL_STATUS_OK);
    struct pl_llm *llm = open_llm(tmpl, 16, 0, 256, 16, 128);
    REQUIRE(llm);
    REQUIRE(pl_llm_has_tokenizer(llm));

    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(llm, &sp);
    sp.temperature = 0.8f;
    sp.has_seed = true;
    sp.seed = 42;
    sp.max_tokens = 24;
    sp.ignore_eos = true;
    struct pl_prompt pr = {"The capital of France is", NULL, 0};
    struct pl_outputs full;
    REQUIRE(pl_llm_generate(llm, &pr, 1, &sp, 1, &full) == PL_STATUS_OK);
    REQUIRE(full.n == 1 && full.items[0].n_outputs == 1);
    CHECK(!strcmp(full.items[0].prompt, pr.text));
    /* the text is the decode of the ids */
    char *dec = NULL;
    const struct pl_completion_output *fc = &full.items[0].outputs[0];
    CHECK(pl_llm_decode(llm, fc->token_ids, fc->n_token_ids, true, &dec) == PL_STATUS_OK);
    CHECK(dec && !strcmp(dec, fc->text));
    pl_free(dec);

    /* the same seeded request through add/step/poll, beside another one that is aborted */
    CHECK(pl_llm_add_request(llm, "a", &pr, &sp) == PL_STATUS_OK);
    CHECK(pl_llm_add_request(llm, "a", &pr, &sp) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "request_id") != NULL);
    struct pl_prompt other = {"San Francisco is a city known for", NULL, 0};
    CHECK(pl_llm_add_request(llm, "b", &other, &sp) == PL_STATUS_OK);
    char text[4096] = "";
    int32_t ids[64];
    int n_ids = 0, steps = 0;
    bool a_done = false, b_done = false;
    enum pl_finish_reason b_reason = PL_FINISH_NONE;
    while (pl_llm_has_unfinished(llm) || !a_done || !b_done) {
        REQUIRE(pl_llm_step(llm) == PL_STATUS_OK);
        if (++steps == 3)
            CHECK(pl_llm_abort(llm, "b") == PL_STATUS_OK);
        struct pl_outputs o;
        REQUIRE(pl_llm_poll(llm, &o) == PL_STATUS_OK);
        for (int i = 0; i < o.n; i++) {
            const struct pl_request_output *r = &o.items[i];
            bool is_a = !strcmp(r->request_id, "a");
            for (int k = 0; k < r->n_outputs; k++) {
                if (!is_a) {
                    if (r->outputs[k].finish_reason != PL_FINISH_NONE)
                        b_reason = r->outputs[k].finish_reason;
                    continue;
                }
                strcat(text, r->outputs[k].text);
                for (int t = 0; t < r->outputs[k].n_token_ids && n_ids < 64; t++)
                    ids[n_ids++] = r->outputs[k].token_ids[t];
            }
            if (r->finished)
                *(is_a ? &a_done : &b_done) = true;
        }
        pl_outputs_free(&o);
        REQUIRE(steps < 1000);
    }
    CHECK(b_reason == PL_FINISH_ABORT);
    CHECK(n_ids == fc->n_token_ids && !memcmp(ids, fc->token_ids, sizeof(int32_t) * 24));
    CHECK(!strcmp(text, fc->text));
    CHECK(pl_llm_abort(llm, "b") == PL_STATUS_NOT_FOUND);
    pl_outputs_free(&full);

    /* chat: the template renders, generation runs */
    const char *conv = "[{\"role\":\"user\",\"content\":\"What is the capital of France?\"}]";
    char *rendered = NULL;
    CHECK(pl_llm_apply_chat_template(llm, conv, NULL, &rendered) == PL_STATUS_OK);
    CHECK(rendered && strstr(rendered, "What is the capital of France?"));
    /* the same conversation as text parts renders the same (one apply_chat_template for
     * the C API and the server: parts joined with a newline) */
    const char *parts = "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
                        "\"What is the capital\"},{\"type\":\"text\",\"text\":\"of France?\"}]}]";
    char *rendered_parts = NULL;
    CHECK(pl_llm_apply_chat_template(llm, parts, NULL, &rendered_parts) == PL_STATUS_OK);
    CHECK(rendered_parts && strstr(rendered_parts, "What is the capital\nof France?"));
    pl_free(rendered_parts);
    pl_free(rendered);
    struct pl_outputs co;
    sp.max_tokens = 8;
    CHECK(pl_llm_chat(llm, &conv, 1, &sp, 1, NULL, &co) == PL_STATUS_OK);
    CHECK(co.n == 1 && co.items[0].outputs[0].n_token_ids == 8);
    pl_outputs_free(&co);
    CHECK(pl_llm_chat(llm, (const char *const[]){"not json"}, 1, &sp, 1, NULL, &co) ==
          PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "messages") != NULL);

    /* bad params are named */
    sp.top_p = 2;
    CHECK(pl_llm_generate(llm, &pr, 1, &sp, 1, &co) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "top_p") != NULL);
    pl_llm_free(llm);

    /* a failed open still answers errmsg */
    struct pl_llm_params p;
    pl_llm_params_default(&p);
    p.model = "/nonexistent/model";
    CHECK(pl_llm_new(&p, &llm) != PL_STATUS_OK);
    CHECK(strlen(pl_llm_errmsg(llm)) > 0);
    pl_llm_free(llm);
    pl_test_rm_tree(tmpl);
}

/*
 * Beam search on the llama preset: width 1 is greedy; with width 3 the outputs
 * come best first by vLLM's score, and every output token's logprob equals the
 * prompt logprob an independent prefill of prompt + outputs reports.
 */
static void test_beam_search(void)
{
    char tmpl[] = "/tmp/pl_llm_api_XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    struct pl_err err;
    REQUIRE(pl_tiny_model_write("llama", tmpl, &err) == PL_STATUS_OK);
    struct pl_llm *llm = open_llm(tmpl, 16, 0, 256, 16, 128);
    REQUIRE(llm);
    int32_t prompt[5] = {11, 22, 33, 44, 55};
    struct pl_prompt pr = {NULL, prompt, 5};
    struct pl_sampling_params g, b;
    pl_sampling_params_default(&g);
    g.temperature = 0;
    g.max_tokens = 6;
    g.ignore_eos = true;
    g.logprobs = 1;
    b = g;
    b.use_beam_search = true;
    b.beam_width = 1;
    b.logprobs = 3;
    struct pl_outputs go, bo;
    REQUIRE(pl_llm_generate(llm, &pr, 1, &g, 1, &go) == PL_STATUS_OK);
    REQUIRE(pl_llm_generate(llm, &pr, 1, &b, 1, &bo) == PL_STATUS_OK);
    REQUIRE(bo.n == 1 && bo.items[0].n_outputs == 1);
    const struct pl_completion_output *gc = &go.items[0].outputs[0], *bc = &bo.items[0].outputs[0];
    CHECK(bc->n_token_ids == 6 && !memcmp(bc->token_ids, gc->token_ids, sizeof(int32_t) * 6));
    CHECK_NEAR(bc->cumulative_logprob, gc->cumulative_logprob, 1e-4);
    pl_outputs_free(&bo);

    b.beam_width = 3;
    b.length_penalty = 0.7f;
    REQUIRE(pl_llm_generate(llm, &pr, 1, &b, 1, &bo) == PL_STATUS_OK);
    REQUIRE(bo.n == 1 && bo.items[0].n_outputs == 3);
    double prev = INFINITY;
    for (int k = 0; k < 3; k++) {
        const struct pl_completion_output *c = &bo.items[0].outputs[k];
        CHECK(c->index == k && c->n_token_ids == 6 && c->finish_reason == PL_FINISH_LENGTH);
        double sc = c->cumulative_logprob / pow(5.0 + c->n_token_ids, 0.7);
        CHECK(sc <= prev + 1e-9);
        prev = sc;
        /* independent: prefill prompt + outputs, read the prompt logprobs */
        int32_t full[11];
        memcpy(full, prompt, sizeof(prompt));
        memcpy(full + 5, c->token_ids, sizeof(int32_t) * 6);
        struct pl_prompt fp = {NULL, full, 11};
        struct pl_sampling_params q = g;
        q.max_tokens = 1;
        q.prompt_logprobs = 1;
        q.logprobs = -1;
        struct pl_outputs qo;
        REQUIRE(pl_llm_generate(llm, &fp, 1, &q, 1, &qo) == PL_STATUS_OK);
        double cum = 0;
        for (int t = 0; t < 6; t++) {
            CHECK_NEAR(c->logprobs[t].logprob, qo.items[0].prompt_logprobs[5 + t].logprob, 1e-3);
            cum += c->logprobs[t].logprob;
        }
        CHECK_NEAR(c->cumulative_logprob, cum, 1e-4);
        pl_outputs_free(&qo);
    }
    /* distinct beams */
    CHECK(memcmp(bo.items[0].outputs[0].token_ids, bo.items[0].outputs[1].token_ids,
                 sizeof(int32_t) * 6) != 0);
    pl_outputs_free(&bo);
    pl_outputs_free(&go);
    pl_llm_free(llm);
    pl_test_rm_tree(tmpl);
}

/*
 * n > 1 on the real runner: the samples share the prompt's blocks and copy the
 * partly filled last one on write (pl_model_runner_copy_blocks). Sample k of a
 * seeded n = 3 request must equal the n = 1 request with seed + k run alone,
 * which only holds if every copy carried the right KV.
 */
static void test_parallel_sampling_cow(void)
{
    char tmpl[] = "/tmp/pl_llm_api_XXXXXX";
    REQUIRE(mkdtemp(tmpl));
    struct pl_err err;
    REQUIRE(pl_tiny_model_write("llama", tmpl, &err) == PL_STATUS_OK);
    struct pl_llm *llm = open_llm(tmpl, 8, 0, 256, 16, 128);
    REQUIRE(llm);
    int32_t prompt[11] = {7, 70, 170, 270, 370, 17, 117, 217, 317, 417, 27}; /* 1 block + 3 */
    struct pl_prompt pr = {NULL, prompt, 11};
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    sp.n = 3;
    sp.has_seed = true;
    sp.seed = 1234;
    sp.max_tokens = 12;
    sp.ignore_eos = true;
    struct pl_outputs multi;
    REQUIRE(pl_llm_generate(llm, &pr, 1, &sp, 1, &multi) == PL_STATUS_OK);
    REQUIRE(multi.n == 1 && multi.items[0].n_outputs == 3);
    struct pl_llm_stats st;
    pl_llm_get_stats(llm, &st);
    CHECK(st.kv_blocks_peak_used < 3 * 3); /* shared: not three private copies of each block */
    for (int k = 0; k < 3; k++) {
        struct pl_sampling_params one = sp;
        one.n = 1;
        one.seed = sp.seed + (uint64_t)k;
        struct pl_outputs o;
        REQUIRE(pl_llm_generate(llm, &pr, 1, &one, 1, &o) == PL_STATUS_OK);
        const struct pl_completion_output *a = &multi.items[0].outputs[k], *b = &o.items[0].outputs[0];
        CHECKF(a->n_token_ids == 12 && b->n_token_ids == 12 &&
                   !memcmp(a->token_ids, b->token_ids, sizeof(int32_t) * 12),
               "sample %d differs from its lone twin", k);
        pl_outputs_free(&o);
    }
    pl_outputs_free(&multi);
    pl_llm_free(llm);
    pl_test_rm_tree(tmpl);
}

/* Removes a model directory written by pl_tiny_model_write (flat). */
static void rm_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

/*
 * A model whose vocab (1024 rows) is padded past its tokenizer (960 ids), as
 * Qwen's: ids in the gap are no ids requests may name -- refused in prompts,
 * logit_bias and allowed_token_ids by generate and the request interface alike,
 * with the field and id named -- while ids the tokenizer has are fine, and a
 * gap id decodes to "".
 */
static void test_padded_vocab(void)
{
    char dir[] = "/tmp/pl_llm_padded_XXXXXX";
    REQUIRE(mkdtemp(dir));
    struct pl_err err;
    REQUIRE(pl_tiny_model_write("default-padded", dir, &err) == PL_STATUS_OK);
    struct pl_llm *llm = open_llm(dir, 16, 0, 256, 16, 128);
    REQUIRE(llm);
    CHECK(pl_llm_vocab_size(llm) == 1024);
    CHECK(pl_llm_token_id_exists(llm, 0) && pl_llm_token_id_exists(llm, 959));
    CHECK(!pl_llm_token_id_exists(llm, 960) && !pl_llm_token_id_exists(llm, 1023) &&
          !pl_llm_token_id_exists(llm, 1024) && !pl_llm_token_id_exists(llm, -1));
    char *text = NULL;
    CHECK(pl_llm_decode(llm, (const int32_t[]){1000}, 1, true, &text) == PL_STATUS_OK);
    CHECK(text && !strcmp(text, ""));
    pl_free(text);

    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(llm, &sp);
    sp.temperature = 0;
    sp.max_tokens = 2;
    struct pl_outputs out;
    int32_t gap_prompt[] = {5, 1000};
    struct pl_prompt pr = {NULL, gap_prompt, 2};
    CHECK(pl_llm_generate(llm, &pr, 1, &sp, 1, &out) == PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(pl_llm_errmsg(llm), "prompt") && strstr(pl_llm_errmsg(llm), "1000"), "%s",
           pl_llm_errmsg(llm));
    CHECK(out.n == 0);
    CHECK(pl_llm_add_request(llm, "g", &pr, &sp) == PL_STATUS_INVALID_ARGUMENT);
    struct pl_prompt hi = {"hi", NULL, 0};
    struct pl_logit_bias bias = {1000, 100.0f};
    sp.logit_bias = &bias;
    sp.n_logit_bias = 1;
    CHECK(pl_llm_generate(llm, &hi, 1, &sp, 1, &out) == PL_STATUS_INVALID_ARGUMENT);
    CHECKF(strstr(pl_llm_errmsg(llm), "logit_bias") && strstr(pl_llm_errmsg(llm), "1000"), "%s",
           pl_llm_errmsg(llm));
    CHECK(pl_llm_add_request(llm, "g", &hi, &sp) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "logit_bias") != NULL);
    sp.logit_bias = NULL;
    sp.n_logit_bias = 0;
    int32_t allowed[] = {7, 1023};
    sp.allowed_token_ids = allowed;
    sp.n_allowed_token_ids = 2;
    CHECK(pl_llm_generate(llm, &hi, 1, &sp, 1, &out) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(pl_llm_errmsg(llm), "allowed_token_ids") &&
          strstr(pl_llm_errmsg(llm), "1023"));
    /* ids the tokenizer has */
    allowed[1] = 959;
    bias.token_id = 959;
    sp.logit_bias = &bias;
    sp.n_logit_bias = 1;
    gap_prompt[1] = 959;
    CHECK(pl_llm_generate(llm, &pr, 1, &sp, 1, &out) == PL_STATUS_OK);
    CHECK(out.n == 1 && out.items[0].n_outputs == 1 && !out.items[0].error);
    pl_outputs_free(&out);
    pl_llm_free(llm);
    rm_dir(dir);
}

/*
 * A backend failure in the steps of one prompt (the test hook fails runs whose
 * batch holds token 77; one sequence per step keeps the prompts apart): generate
 * returns the failure, naming the prompt, yet every prompt has its output -- the
 * failed one with the error and finish "error", the other complete and equal to
 * what it gives alone. The request interface reports the failure the same way.
 */
static void test_backend_failure_isolated(void)
{
    char dir[] = "/tmp/pl_llm_fail_XXXXXX";
    REQUIRE(mkdtemp(dir));
    struct pl_err err;
    REQUIRE(pl_tiny_model_write("default", dir, &err) == PL_STATUS_OK);
    char hook[600];
    snprintf(hook, sizeof(hook), "%s/fail-step", dir);
    FILE *f = fopen(hook, "w");
    REQUIRE(f);
    fputs("77\n", f);
    fclose(f);
    setenv("PAGELLM_TEST_FAIL_STEP_FILE", hook, 1);
    struct pl_llm *llm = open_llm(dir, 16, 0, 256, 1, 128);
    unsetenv("PAGELLM_TEST_FAIL_STEP_FILE");
    REQUIRE(llm);
    struct pl_sampling_params sp;
    pl_llm_default_sampling_params(llm, &sp);
    sp.temperature = 0;
    sp.max_tokens = 6;
    sp.ignore_eos = true;
    int32_t pa[] = {10, 77, 12}, pb[] = {10, 11, 12};
    struct pl_prompt prs[2] = {{NULL, pa, 3}, {NULL, pb, 3}};
    struct pl_outputs alone;
    REQUIRE(pl_llm_generate(llm, &prs[1], 1, &sp, 1, &alone) == PL_STATUS_OK);
    struct pl_outputs out;
    CHECK(pl_llm_generate(llm, prs, 2, &sp, 1, &out) == PL_STATUS_INTERNAL);
    CHECKF(strstr(pl_llm_errmsg(llm), "prompt 0") &&
               strstr(pl_llm_errmsg(llm), "backend failure"),
           "%s", pl_llm_errmsg(llm));
    REQUIRE(out.n == 2);
    const struct pl_request_output *a = &out.items[0], *b = &out.items[1];
    CHECK(a->finished && a->error && strstr(a->error, "backend failure") &&
          a->error_status == PL_STATUS_INTERNAL && a->n_outputs == 1 &&
          a->outputs[0].finish_reason == PL_FINISH_ERROR);
    CHECK(b->finished && !b->error && b->n_outputs == 1 &&
          b->outputs[0].finish_reason == PL_FINISH_LENGTH);
    const struct pl_completion_output *cb = &b->outputs[0], *c1 = &alone.items[0].outputs[0];
    CHECK(cb->n_token_ids == 6 && cb->n_token_ids == c1->n_token_ids &&
          !memcmp(cb->token_ids, c1->token_ids, sizeof(int32_t) * 6) &&
          !strcmp(cb->text, c1->text));
    pl_outputs_free(&out);
    pl_outputs_free(&alone);

    /* the request interface: the failed step says so, and its request ends with the error */
    CHECK(pl_llm_add_request(llm, "x", &prs[0], &sp) == PL_STATUS_OK);
    CHECK(pl_llm_step(llm) == PL_STATUS_INTERNAL);
    CHECK(!pl_llm_has_unfinished(llm));
    struct pl_outputs d;
    REQUIRE(pl_llm_poll(llm, &d) == PL_STATUS_OK);
    CHECK(d.n == 1 && d.items[0].finished && d.items[0].error &&
          d.items[0].n_outputs == 1 && d.items[0].outputs[0].finish_reason == PL_FINISH_ERROR);
    pl_outputs_free(&d);
    pl_llm_free(llm);
    rm_dir(dir);
}

int main(void)
{
    PL_RUN(test_golden_fixtures);
    PL_RUN(test_default_model);
    PL_RUN(test_beam_search);
    PL_RUN(test_parallel_sampling_cow);
    PL_RUN(test_padded_vocab);
    PL_RUN(test_backend_failure_isolated);
    return pl_test_summary();
}
