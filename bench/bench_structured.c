/*
 * bench_structured.c -- the cost of structured output (docs/structured-output.md):
 *
 *   1. per output token: --batch requests of --output-len tokens each, free and then
 *      constrained by a nested JSON schema (one whose minItems keeps it open past
 *      --output-len, so both runs make exactly the same number of tokens), alternated
 *      --rounds times in one process on one engine; the first constrained round (cold
 *      mask cache) is reported apart, the rest as medians;
 *   2. grammar compilation of a 50-property schema (median of 20), and the same plus
 *      the first token mask over the model's vocabulary;
 *   3. the host's mask work alone (no model): --batch sequences of --output-len tokens
 *      through the nested schema on one grammar cache, each token drawn uniformly from
 *      those its mask allows (as a random-weight model does), one engine step being one
 *      mask per sequence; a cold round (empty caches) then a warm one (new draws, same
 *      caches): masks computed per step, time per computed mask (a cache miss) and per
 *      step. --grammar-only 1 stops there (no model needed, only --tokenizer).
 *
 * Usage: bench_structured --model DIR [--tokenizer DIR] [--device cpu|cuda|auto]
 *        [--load-format auto|dummy] [--batch 64] [--input-len 32] [--output-len 128]
 *        [--rounds 3] [--threads N] [--gpu-memory-utilization F] [--max-model-len N]
 *        [--grammar-only 0|1]
 * The last lines are markdown rows for docs/results.md.
 */
#include "grammar/grammar.h"
#include "tokenizer/tokenizer.h"
#include "pagellm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static const char *nested_schema =
    "{\"type\":\"object\",\"properties\":{"
    "\"user\":{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"integer\",\"minimum\":0},"
    "\"name\":{\"type\":\"string\",\"maxLength\":24},\"email\":{\"type\":\"string\",\"format\":"
    "\"email\"},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"maxLength\":12},"
    "\"maxItems\":4}},\"required\":[\"id\",\"name\",\"email\",\"tags\"]},"
    "\"orders\":{\"type\":\"array\",\"minItems\":100,\"items\":{\"type\":\"object\","
    "\"properties\":{\"sku\":{\"type\":\"string\",\"pattern\":\"[A-Z]{3}-[0-9]{4}\"},"
    "\"qty\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":99},\"price\":{\"type\":\"number\"},"
    "\"status\":{\"enum\":[\"new\",\"paid\",\"shipped\"]},\"meta\":{\"type\":\"object\","
    "\"properties\":{\"gift\":{\"type\":\"boolean\"},\"note\":{\"type\":[\"string\",\"null\"],"
    "\"maxLength\":40}},\"required\":[\"gift\",\"note\"]}},\"required\":[\"sku\",\"qty\","
    "\"price\",\"status\",\"meta\"]}}},\"required\":[\"user\",\"orders\"]}";

/* 50 properties of mixed kinds. */
static char *schema_50(void)
{
    static const char *kinds[] = {
        "{\"type\":\"string\",\"maxLength\":32}",
        "{\"type\":\"integer\",\"minimum\":-1000,\"maximum\":1000000}",
        "{\"type\":\"number\"}",
        "{\"type\":\"boolean\"}",
        "{\"enum\":[\"low\",\"medium\",\"high\",\"critical\"]}",
        "{\"type\":\"array\",\"items\":{\"type\":\"string\"},\"maxItems\":8}",
        "{\"type\":\"string\",\"format\":\"date-time\"}",
        ("{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"integer\"},\"b\":{\"type\":"
         "[\"string\",\"null\"]}},\"required\":[\"a\"]}"),
        "{\"anyOf\":[{\"type\":\"string\",\"format\":\"uuid\"},{\"type\":\"null\"}]}",
        "{\"type\":\"string\",\"pattern\":\"[a-z]{2,8}(-[a-z]{2,8})*\"}",
    };
    size_t cap = 16384, n = 0;
    char *s = malloc(cap);
    n += (size_t)snprintf(s + n, cap - n, "{\"type\":\"object\",\"properties\":{");
    for (int i = 0; i < 50; i++)
        n += (size_t)snprintf(s + n, cap - n, "%s\"field_%02d\":%s", i ? "," : "", i,
                              kinds[i % 10]);
    n += (size_t)snprintf(s + n, cap - n, "},\"required\":[");
    for (int i = 0; i < 50; i += 2)
        n += (size_t)snprintf(s + n, cap - n, "%s\"field_%02d\"", i ? "," : "", i);
    snprintf(s + n, cap - n, "],\"additionalProperties\":false}");
    return s;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* 3. One round of the mask simulation: stats of the masks computed (cache misses). */
struct sim_stats {
    double total_s;   /* all fill_mask calls */
    double miss_s;    /* the calls that computed their mask */
    double miss_max_s;
    double miss_p50_s;
    long n_masks, n_misses;
    int n_steps;
    uint64_t draws; /* a hash of the tokens drawn: equal masks give equal draws */
};

static uint64_t xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int sim_round(struct pl_grammar_cache *c, int V, int32_t eos, int batch, int steps,
                     uint64_t seed, struct sim_stats *st)
{
    struct pl_err err;
    size_t W = PL_GRAMMAR_MASK_WORDS(V);
    uint32_t *mask = malloc(W * sizeof(uint32_t));
    struct pl_grammar_matcher **m = calloc((size_t)batch, sizeof(*m));
    double *miss_t = malloc(sizeof(double) * (size_t)batch * (size_t)steps);
    if (!mask || !m || !miss_t)
        return 1;
    for (int i = 0; i < batch; i++)
        if (pl_grammar_matcher_new(c, PL_CONSTRAINT_JSON, nested_schema, NULL, &m[i], &err) !=
            PL_STATUS_OK) {
            fprintf(stderr, "bench_structured: matcher: %s\n", err.msg);
            return 1;
        }
    memset(st, 0, sizeof(*st));
    uint64_t x = seed | 1;
    for (int s = 0; s < steps; s++) {
        for (int i = 0; i < batch; i++) {
            if (!m[i])
                continue;
            uint64_t h0, m0, h1, m1;
            pl_grammar_cache_stats(c, &h0, &m0);
            double t0 = now_s();
            pl_grammar_matcher_fill_mask(m[i], mask);
            double dt = now_s() - t0;
            pl_grammar_cache_stats(c, &h1, &m1);
            st->total_s += dt;
            st->n_masks++;
            if (m1 != m0) {
                st->miss_s += dt;
                miss_t[st->n_misses++] = dt;
                if (dt > st->miss_max_s)
                    st->miss_max_s = dt;
            }
            /* a uniform draw among the allowed tokens, eos left out (ignore_eos) */
            if (eos >= 0 && eos < V)
                mask[eos >> 5] &= ~(1u << (eos & 31));
            long n_allowed = 0;
            for (size_t w = 0; w < W; w++)
                n_allowed += __builtin_popcount(mask[w]);
            int32_t pick = -1;
            if (n_allowed > 0) {
                long k = (long)(xorshift(&x) % (uint64_t)n_allowed);
                size_t w = 0;
                while (k >= __builtin_popcount(mask[w]))
                    k -= __builtin_popcount(mask[w++]);
                uint32_t bits = mask[w];
                while (k-- > 0)
                    bits &= bits - 1;
                pick = (int32_t)(w * 32 + (size_t)__builtin_ctz(bits));
            }
            st->draws = (st->draws ^ (uint64_t)(pick + 2)) * 0x100000001b3ull;
            if (pick < 0 || !pl_grammar_matcher_accept_token(m[i], pick) ||
                pl_grammar_matcher_is_complete(m[i])) {
                pl_grammar_matcher_free(m[i]);
                m[i] = NULL;
            }
        }
        st->n_steps++;
    }
    if (st->n_misses > 0)
        st->miss_p50_s = median(miss_t, (int)st->n_misses);
    for (int i = 0; i < batch; i++)
        pl_grammar_matcher_free(m[i]);
    free(m);
    free(mask);
    free(miss_t);
    return 0;
}

static double per_miss(const struct sim_stats *st)
{
    return st->n_misses ? st->miss_s / (double)st->n_misses : 0.0;
}

static void sim_print(const char *what, const struct sim_stats *st, int batch)
{
    printf("masks, %s: %d steps x %d sequences: %.2f masks computed per step, %.3f ms per "
           "computed mask (median %.3f, max %.2f), %.3f ms of mask work per step\n",
           what, st->n_steps, batch, (double)st->n_misses / st->n_steps,
           1e3 * per_miss(st), 1e3 * st->miss_p50_s,
           1e3 * st->miss_max_s, 1e3 * st->total_s / st->n_steps);
}

static int usage(void)
{
    fprintf(stderr, "usage: bench_structured --model DIR [--tokenizer DIR] [--device D] "
                    "[--load-format F] [--batch N] [--input-len N] [--output-len N] "
                    "[--rounds N] [--threads N] [--gpu-memory-utilization F] "
                    "[--max-model-len N] [--grammar-only 0|1]\n");
    return 2;
}

/* One timed generate: seconds, and the tokens made in *n_tok. */
static double run(struct pl_llm *llm, const struct pl_prompt *prompts, int n,
                  const struct pl_sampling_params *sp, long *n_tok, int *n_json_ok)
{
    struct pl_outputs out = {0};
    double t0 = now_s();
    pl_status st = pl_llm_generate(llm, prompts, n, sp, 1, &out);
    double t = now_s() - t0;
    if (st != PL_STATUS_OK) {
        fprintf(stderr, "bench_structured: generate: %s\n", pl_llm_errmsg(llm));
        exit(1);
    }
    *n_tok = 0;
    *n_json_ok = 0;
    for (int i = 0; i < out.n; i++) {
        *n_tok += out.items[i].outputs[0].n_token_ids;
        *n_json_ok += out.items[i].outputs[0].text[0] == '{';
    }
    pl_outputs_free(&out);
    return t;
}

int main(int argc, char **argv)
{
    struct pl_llm_params lp;
    pl_llm_params_default(&lp);
    int batch = 64, input_len = 32, output_len = 128, rounds = 3, grammar_only = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return usage();
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--model"))
            lp.model = v;
        else if (!strcmp(a, "--tokenizer"))
            lp.tokenizer = v;
        else if (!strcmp(a, "--device"))
            lp.device = v;
        else if (!strcmp(a, "--load-format"))
            lp.load_format = v;
        else if (!strcmp(a, "--batch"))
            batch = atoi(v);
        else if (!strcmp(a, "--input-len"))
            input_len = atoi(v);
        else if (!strcmp(a, "--output-len"))
            output_len = atoi(v);
        else if (!strcmp(a, "--rounds"))
            rounds = atoi(v);
        else if (!strcmp(a, "--threads"))
            lp.n_threads = atoi(v);
        else if (!strcmp(a, "--gpu-memory-utilization"))
            lp.gpu_memory_utilization = atof(v);
        else if (!strcmp(a, "--max-model-len"))
            lp.max_model_len = atoi(v);
        else if (!strcmp(a, "--grammar-only"))
            grammar_only = atoi(v);
        else
            return usage();
    }
    if ((!lp.model && !(grammar_only && lp.tokenizer)) || batch < 1 || input_len < 1 ||
        output_len < 1 || rounds < 1)
        return usage();
    if (lp.max_model_len == 0)
        lp.max_model_len = input_len + output_len + 16;
    lp.max_num_seqs = batch;

    /* 2. compilation, with and without the first mask */
    char *s50 = schema_50();
    double tc[20], tm[20];
    struct pl_err err;
    struct pl_tokenizer *tok = NULL;
    const char *tdir = lp.tokenizer ? lp.tokenizer : lp.model;
    if (pl_tokenizer_load(tdir, &tok, &err) != PL_STATUS_OK) {
        fprintf(stderr, "bench_structured: tokenizer %s: %s\n", tdir, err.msg);
        return 1;
    }
    int V = pl_tokenizer_vocab_size(tok);
    int32_t eos = pl_tokenizer_eos_id(tok);
    struct pl_grammar_vocab *gv = NULL;
    double tv0 = now_s();
    if (pl_grammar_vocab_from_tokenizer(tok, V, &eos, eos >= 0, &gv, &err) != PL_STATUS_OK) {
        fprintf(stderr, "bench_structured: vocab: %s\n", err.msg);
        return 1;
    }
    double t_vocab = now_s() - tv0;
    uint32_t *mask = malloc(PL_GRAMMAR_MASK_WORDS(V) * sizeof(uint32_t));
    for (int k = 0; k < 20; k++) {
        double t0 = now_s();
        struct pl_grammar *g;
        if (pl_grammar_compile(PL_CONSTRAINT_JSON, s50, NULL, &g, &err) != PL_STATUS_OK) {
            fprintf(stderr, "bench_structured: compile: %s\n", err.msg);
            return 1;
        }
        tc[k] = now_s() - t0;
        pl_grammar_free(g);
        /* a fresh cache each time: compile + the start state's mask, nothing cached */
        struct pl_grammar_cache *c;
        struct pl_grammar_matcher *m;
        if (pl_grammar_cache_new(gv, 4, &c, &err) != PL_STATUS_OK)
            return 1;
        t0 = now_s();
        if (pl_grammar_matcher_new(c, PL_CONSTRAINT_JSON, s50, NULL, &m, &err) != PL_STATUS_OK)
            return 1;
        pl_grammar_matcher_fill_mask(m, mask);
        tm[k] = now_s() - t0;
        pl_grammar_matcher_free(m);
        pl_grammar_cache_free(c);
    }
    /* the costliest common state: inside a string, where most tokens are allowed; its
     * mask on a fresh cache (position tables built), again from the tables, and by the
     * full walk (the reference) */
    double ts[20], tt[20], tw[20];
    for (int k = 0; k < 20; k++) {
        struct pl_grammar_cache *c;
        struct pl_grammar_matcher *m;
        if (pl_grammar_cache_new(gv, 4, &c, &err) != PL_STATUS_OK ||
            pl_grammar_matcher_new(c, PL_CONSTRAINT_JSON, s50, NULL, &m, &err) != PL_STATUS_OK)
            return 1;
        const char *pre = "{\"field_00\": \"ab";
        if (!pl_grammar_matcher_accept_bytes(m, pre, strlen(pre)))
            return 1;
        double t0 = now_s();
        pl_grammar_matcher_fill_mask(m, mask);
        ts[k] = now_s() - t0;
        t0 = now_s();
        pl_grammar_matcher_compute_mask(m, PL_GRAMMAR_MASK_TABLES, mask);
        tt[k] = now_s() - t0;
        t0 = now_s();
        pl_grammar_matcher_compute_mask(m, PL_GRAMMAR_MASK_FULL_WALK, mask);
        tw[k] = now_s() - t0;
        pl_grammar_matcher_free(m);
        pl_grammar_cache_free(c);
    }
    double s_med = median(ts, 20), t_med = median(tt, 20), w_med = median(tw, 20);
    int n_allowed = 0;
    for (int i = 0; i < V; i++)
        n_allowed += (mask[i >> 5] >> (i & 31)) & 1u;
    double c_med = median(tc, 20), m_med = median(tm, 20);
    free(mask);

    /* 3. the masks alone: a cold round, then a warm one on the same caches; the full
     * walk (the baseline) and then the position tables, each on a fresh cache, the same
     * draws (both compute the same masks) */
    struct sim_stats cold_st[2], warm_st[2];
    struct pl_grammar_table_stats tab_st;
    for (int mode = 0; mode < 2; mode++) {
        struct pl_grammar_cache *sc;
        if (pl_grammar_cache_new(gv, 64, &sc, &err) != PL_STATUS_OK)
            return 1;
        pl_grammar_cache_set_mask_mode(sc, mode ? PL_GRAMMAR_MASK_TABLES
                                                : PL_GRAMMAR_MASK_FULL_WALK);
        if (sim_round(sc, V, eos, batch, output_len, 1, &cold_st[mode]) ||
            sim_round(sc, V, eos, batch, output_len, 2, &warm_st[mode]))
            return 1;
        pl_grammar_cache_table_stats(sc, &tab_st);
        pl_grammar_cache_free(sc);
    }
    pl_grammar_vocab_free(gv);
    pl_tokenizer_free(tok);
    printf("grammar: 50-property schema (%zu bytes) compiles in %.2f ms (median of 20); with "
           "the first mask over %d tokens %.2f ms; vocabulary preparation %.1f ms\n",
           strlen(s50), 1e3 * c_med, V, 1e3 * m_med, 1e3 * t_vocab);
    printf("grammar: an uncached mask inside a string (%d of %d tokens allowed): %.2f ms on "
           "a fresh cache (position tables built), %.3f ms from the tables, %.2f ms by the full "
           "walk (medians of 20); cached masks are a lookup and a copy\n",
           n_allowed, V, 1e3 * s_med, 1e3 * t_med, 1e3 * w_med);
    sim_print("full walk, cold caches", &cold_st[0], batch);
    sim_print("full walk, warm caches", &warm_st[0], batch);
    sim_print("position tables, cold caches", &cold_st[1], batch);
    sim_print("position tables, warm caches", &warm_st[1], batch);
    printf("the same tokens drawn with either: %s\n",
           cold_st[0].draws == cold_st[1].draws && warm_st[0].draws == warm_st[1].draws
               ? "yes"
               : "NO (the masks differ)");
    printf("position tables after both rounds: %zu tables, %.1f MiB, %llu built, %llu "
           "uncertain tokens walked\n",
           tab_st.n_tables, (double)tab_st.bytes / (1 << 20),
           (unsigned long long)tab_st.n_built, (unsigned long long)tab_st.n_uncertain_walked);
    printf("| masks, nested schema, %d x %d tokens, position tables (warm caches) | %.3f ms per "
           "computed mask, %.3f ms per step | full walk %.3f ms, %.3f ms | %.2f masks computed "
           "per step |\n",
           batch, output_len, 1e3 * per_miss(&warm_st[1]),
           1e3 * warm_st[1].total_s / warm_st[1].n_steps, 1e3 * per_miss(&warm_st[0]),
           1e3 * warm_st[0].total_s / warm_st[0].n_steps,
           (double)warm_st[1].n_misses / warm_st[1].n_steps);
    if (grammar_only) {
        free(s50);
        return 0;
    }

    /* 1. per output token */
    struct pl_llm *llm;
    if (pl_llm_new(&lp, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "bench_structured: %s\n", pl_llm_errmsg(llm));
        return 1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)batch * (size_t)input_len);
    struct pl_prompt *prompts = calloc((size_t)batch, sizeof(*prompts));
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < batch * input_len; i++) {
        int32_t id;
        do {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            id = (int32_t)(x % 30000u) + 100;
        } while (!pl_llm_token_id_exists(llm, id));
        ids[i] = id;
    }
    for (int i = 0; i < batch; i++) {
        prompts[i].token_ids = ids + (size_t)i * input_len;
        prompts[i].n_token_ids = input_len;
    }
    struct pl_sampling_params free_sp, json_sp;
    pl_llm_default_sampling_params(llm, &free_sp);
    free_sp.temperature = 1.0f;
    free_sp.top_p = 1.0f;
    free_sp.top_k = 0;
    free_sp.ignore_eos = true;
    free_sp.max_tokens = output_len;
    json_sp = free_sp;
    json_sp.constraint_kind = PL_CONSTRAINT_JSON;
    json_sp.constraint = nested_schema;
    long nt;
    int nj;
    run(llm, prompts, batch, &free_sp, &nt, &nj); /* warm-up: one-time costs out */
    double *tf = calloc((size_t)rounds, sizeof(double)), *tj = calloc((size_t)rounds, sizeof(double));
    double cold = 0;
    long tok_free = 0, tok_json = 0;
    int json_ok = 0;
    for (int r = 0; r <= rounds; r++) {
        double t = run(llm, prompts, batch, &json_sp, &nt, &nj);
        tok_json = nt;
        json_ok = nj;
        if (r == 0) {
            cold = t / (double)nt;
            continue;
        }
        tj[r - 1] = t / (double)nt;
        tf[r - 1] = run(llm, prompts, batch, &free_sp, &nt, &nj) / (double)nt;
        tok_free = nt;
    }
    struct pl_llm_stats stats;
    pl_llm_get_stats(llm, &stats);
    double f = median(tf, rounds), j = median(tj, rounds);
    printf("batch %d x %d tokens (prompt %d): free %.3f ms/token, nested JSON schema %.3f "
           "ms/token (%+.1f%%), first constrained round (cold mask cache) %.3f ms/token "
           "(%+.1f%%); tokens free %ld, constrained %ld; outputs starting with '{' %d/%d\n",
           batch, output_len, input_len, 1e3 * f, 1e3 * j, 100.0 * (j / f - 1.0), 1e3 * cold,
           100.0 * (cold / f - 1.0), tok_free, tok_json, json_ok, batch);
    printf("| per output token, batch %d, nested JSON schema vs free | %.3f ms | %.3f ms | "
           "%+.1f%% |\n",
           batch, 1e3 * j, 1e3 * f, 100.0 * (j / f - 1.0));
    printf("| grammar compile, 50-property schema (+ first mask, %d tokens) | %.2f ms (%.2f ms) "
           "| - | - |\n",
           V, 1e3 * c_med, 1e3 * m_med);
    free(tf);
    free(tj);
    free(ids);
    free(prompts);
    free(s50);
    pl_llm_free(llm);
    return 0;
}
