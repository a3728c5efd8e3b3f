/*
 * test_sampler.c -- the host sampler against direct formulas.
 *
 * References computed here, independently of sampler.c: softmax and
 * log_softmax in double, full sorts for top-k / top-p / min-p keep sets, the
 * HF/vLLM penalty formulas written out per token (vllm apply_penalties:
 * repetition on prompt+output tokens, positive logits divided and negative
 * multiplied; logits -= frequency * output count; logits -= presence * seen),
 * and a chi-square statistic for sampled frequencies (a bound that passes at
 * ~1e-4 significance and that the wrong distribution fails by far, which the
 * temperature test demonstrates).
 */
#include "core/sampler.h"
#include "test.h"
#include "util/rng.h"

#include <stdint.h>

#define MAXV 64
#define BATCH 64

/* ---- helpers ---------------------------------------------------------------- */

static void softmax(const double *x, int n, double *p)
{
    double m = -INFINITY, s = 0.0;
    for (int i = 0; i < n; i++)
        if (x[i] > m)
            m = x[i];
    for (int i = 0; i < n; i++) {
        p[i] = x[i] == -INFINITY ? 0.0 : exp(x[i] - m);
        s += p[i];
    }
    for (int i = 0; i < n; i++)
        p[i] /= s;
}

/* Samples n_draws tokens of one row's params (unseeded, batches of BATCH rows). */
static void draw_counts(struct pl_sampler *s, const float *logits, int V,
                        const struct pl_sampling_params *p, int n_draws, long *counts)
{
    static float buf[BATCH * 4096];
    struct pl_sampler_row rows[BATCH];
    struct pl_sample_result out[BATCH];
    memset(rows, 0, sizeof(rows));
    for (int r = 0; r < BATCH; r++) {
        memcpy(buf + (size_t)r * V, logits, (size_t)V * sizeof(float));
        rows[r].params = p;
    }
    memset(counts, 0, (size_t)V * sizeof(long));
    for (int done = 0; done < n_draws; done += BATCH) {
        int n = n_draws - done < BATCH ? n_draws - done : BATCH;
        struct pl_err e;
        if (pl_sampler_sample(s, buf, n, rows, out, &e) != PL_STATUS_OK) {
            fprintf(stderr, "sample failed: %s\n", e.msg);
            return;
        }
        for (int r = 0; r < n; r++)
            counts[out[r].token_id]++;
    }
}

/* Pearson chi-square of counts against probabilities; -1 if a zero-probability token occurred. */
static double chi_square(const long *counts, const double *prob, int V, long n, int *df)
{
    double stat = 0.0;
    int cats = 0;
    *df = 0;
    for (int i = 0; i < V; i++) {
        if (prob[i] <= 0.0) {
            if (counts[i])
                return -1.0;
            continue;
        }
        double e = prob[i] * (double)n;
        stat += ((double)counts[i] - e) * ((double)counts[i] - e) / e;
        cats++;
    }
    *df = cats - 1;
    return stat;
}

/* ~1e-4 upper tail bound for chi-square with df degrees of freedom (generous). */
static double chi_bound(int df)
{
    return df + 6.0 * sqrt(2.0 * df) + 10.0;
}

static bool fits(const long *counts, const double *prob, int V, long n, const char *what)
{
    int df;
    double stat = chi_square(counts, prob, V, n, &df);
    bool ok = stat >= 0.0 && stat <= chi_bound(df);
    if (!ok)
        fprintf(stderr, "%s: chi-square %.1f (df %d, bound %.1f)\n", what, stat, df,
                chi_bound(df));
    return ok;
}

static struct pl_sampler *new_sampler(int rows, int V, uint64_t seed)
{
    struct pl_sampler *s = NULL;
    struct pl_err e;
    if (pl_sampler_new(rows, V, seed, &s, &e) != PL_STATUS_OK)
        fprintf(stderr, "pl_sampler_new: %s\n", e.msg);
    return s;
}

static struct pl_sample_result sample_one(struct pl_sampler *s, const float *logits,
                                          const struct pl_sampler_row *row)
{
    struct pl_sample_result r;
    memset(&r, 0, sizeof(r));
    r.token_id = -1;
    struct pl_err e;
    if (pl_sampler_sample(s, logits, 1, row, &r, &e) != PL_STATUS_OK)
        fprintf(stderr, "sample failed: %s\n", e.msg);
    return r;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_rng_reference(void)
{
    /* splitmix64 from state 0 yields e220a8397b1dcdaf, 6e789e6aa1b965f4,
     * 06c45d188009454f, f88bb8a8724c81ec (the published sequence); xoshiro256**
     * outputs below were computed with an independent Python rendering of the
     * published recurrence from that state. */
    struct pl_rng r;
    pl_rng_seed(&r, 0);
    CHECK(r.s[0] == 0xe220a8397b1dcdafULL && r.s[1] == 0x6e789e6aa1b965f4ULL &&
          r.s[2] == 0x06c45d188009454fULL && r.s[3] == 0xf88bb8a8724c81ecULL);
    CHECK(pl_rng_next(&r) == 0x99ec5f36cb75f2b4ULL);
    CHECK(pl_rng_next(&r) == 0xbf6e1f784956452aULL);
    /* uniform draws are in [0, 1) with mean ~1/2 */
    double sum = 0.0;
    bool in_range = true;
    for (int i = 0; i < 100000; i++) {
        double u = pl_rng_uniform(&r);
        in_range &= u >= 0.0 && u < 1.0;
        sum += u;
    }
    CHECK(in_range);
    CHECK_NEAR(sum / 100000.0, 0.5, 0.005);
}

static void test_greedy_argmax_lowest_id(void)
{
    struct pl_sampler *s = new_sampler(4, 8, 1);
    REQUIRE(s);
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.temperature = 0.0f;
    struct pl_sampler_row row = {.params = &p};
    float a[8] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, 3.0f, NAN, 0.0f};
    CHECK(sample_one(s, a, &row).token_id == 1);
    float b[8] = {-INFINITY, -5.0f, -5.0f, -6.0f, -7.0f, -5.0f, -8.0f, -9.0f};
    CHECK(sample_one(s, b, &row).token_id == 1);
    /* random rows against a direct argmax */
    struct pl_rng g;
    pl_rng_seed(&g, 99);
    for (int t = 0; t < 200; t++) {
        float x[8];
        int best = 0;
        for (int i = 0; i < 8; i++) {
            x[i] = (float)(int)(pl_rng_uniform(&g) * 6.0); /* many ties */
            if (x[i] > x[best])
                best = i;
        }
        CHECK(sample_one(s, x, &row).token_id == best);
    }
    /* greedy draws nothing: the unseeded generator is untouched, so the next
     * random sample equals that of a fresh sampler with the same seed */
    struct pl_sampler *fresh = new_sampler(4, 8, 1);
    REQUIRE(fresh);
    struct pl_sampling_params q;
    pl_sampling_params_default(&q);
    struct pl_sampler_row rq = {.params = &q};
    float flat[8] = {0};
    int same = 0;
    for (int t = 0; t < 20; t++)
        same += sample_one(s, flat, &rq).token_id == sample_one(fresh, flat, &rq).token_id;
    CHECK(same == 20);
    pl_sampler_free(fresh);
    pl_sampler_free(s);
}

static void test_temperature_statistics(void)
{
    enum { V = 6, N = 24000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 7);
    REQUIRE(s);
    const float logits[V] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f};
    const float temps[] = {0.5f, 1.0f, 1.7f};
    for (int ti = 0; ti < 3; ti++) {
        struct pl_sampling_params p;
        pl_sampling_params_default(&p);
        p.temperature = temps[ti];
        long counts[V];
        draw_counts(s, logits, V, &p, N, counts);
        double x[V], prob[V], wrong[V];
        for (int i = 0; i < V; i++)
            x[i] = (double)logits[i] / temps[ti];
        softmax(x, V, prob);
        CHECKF(fits(counts, prob, V, N, "temperature"), "T=%g", temps[ti]);
        /* the test has power: the untempered softmax is rejected when T != 1 */
        if (temps[ti] != 1.0f) {
            for (int i = 0; i < V; i++)
                x[i] = logits[i];
            softmax(x, V, wrong);
            int df;
            CHECK(chi_square(counts, wrong, V, N, &df) > 3.0 * chi_bound(df));
        }
    }
    pl_sampler_free(s);
}

static int desc_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* probabilities as logits: log(p) */
static void log_probs(const double *p, int n, float *logits)
{
    for (int i = 0; i < n; i++)
        logits[i] = (float)log(p[i]);
}

static void test_top_k(void)
{
    enum { V = 10, N = 12000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 11);
    REQUIRE(s);
    const float logits[V] = {0.1f, 2.0f, -1.0f, 1.2f, 0.7f, 1.9f, -3.0f, 0.0f, 1.0f, 0.5f};
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.top_k = 3; /* keeps ids 1, 5, 3 */
    long counts[V];
    draw_counts(s, logits, V, &p, N, counts);
    double x[V], prob[V];
    for (int i = 0; i < V; i++)
        x[i] = (i == 1 || i == 5 || i == 3) ? logits[i] : -INFINITY;
    softmax(x, V, prob);
    int distinct = 0;
    for (int i = 0; i < V; i++)
        distinct += counts[i] > 0;
    CHECK(distinct == 3);
    CHECK(fits(counts, prob, V, N, "top_k=3"));

    /* top_k = 1 is greedy; top_k >= V and -1 change nothing */
    p.top_k = 1;
    draw_counts(s, logits, V, &p, 500, counts);
    CHECK(counts[1] == 500);
    for (int i = 0; i < V; i++)
        x[i] = logits[i];
    softmax(x, V, prob);
    int ks[] = {V, V + 5, -1};
    for (int j = 0; j < 3; j++) {
        p.top_k = ks[j];
        draw_counts(s, logits, V, &p, N, counts);
        CHECKF(fits(counts, prob, V, N, "top_k off"), "top_k=%d", ks[j]);
    }

    /* vLLM keeps every token tied with the k-th largest logit */
    const float tied[V] = {3.0f, 1.0f, 2.0f, 1.0f, 0.0f, 1.0f, -1.0f, -2.0f, 0.5f, -3.0f};
    p.top_k = 3; /* 3.0, 2.0, then 1.0 three times */
    draw_counts(s, tied, V, &p, N, counts);
    for (int i = 0; i < V; i++)
        x[i] = tied[i] >= 1.0f ? tied[i] : -INFINITY;
    softmax(x, V, prob);
    CHECK(fits(counts, prob, V, N, "top_k ties"));
    pl_sampler_free(s);

    /* a large vocabulary (selection beyond the small-range path): only the
     * k largest by a full sort ever appear */
    enum { BV = 4096 };
    static float big[BV];
    struct pl_rng g;
    pl_rng_seed(&g, 5);
    for (int i = 0; i < BV; i++)
        big[i] = (float)(pl_rng_uniform(&g) * 8.0);
    static float sorted[BV];
    memcpy(sorted, big, sizeof(big));
    qsort(sorted, BV, sizeof(float), desc_float); /* the reference order */
    s = new_sampler(BATCH, BV, 12);
    REQUIRE(s);
    p.top_k = 50;
    static long bc[BV];
    draw_counts(s, big, BV, &p, 4000, bc);
    int outside = 0, seen = 0;
    for (int i = 0; i < BV; i++) {
        if (bc[i] && big[i] < sorted[49])
            outside++;
        seen += bc[i] > 0;
    }
    CHECK(outside == 0);
    CHECK(seen >= 45); /* 4000 draws over 50 tokens of comparable mass */
    /* a k past the heap's range (full selection) */
    p.top_k = 2000;
    draw_counts(s, big, BV, &p, 1000, bc);
    outside = 0;
    for (int i = 0; i < BV; i++)
        outside += bc[i] && big[i] < sorted[1999];
    CHECK(outside == 0);
    pl_sampler_free(s);

    /* ties at the k-th value on both selection paths: 1200 tokens at 0 and 800
     * at -1; any k up to 1200 keeps exactly the 1200 zeros, k above keeps all */
    enum { TV = 2000, TN = 2000 };
    static float tv[TV];
    for (int i = 0; i < TV; i++)
        tv[i] = (i % 5 < 3) ? 0.0f : -1.0f;
    s = new_sampler(BATCH, TV, 14);
    REQUIRE(s);
    static long tc[TV];
    const int tks[] = {1000, 1100, 1200, 1300};
    for (int j = 0; j < 4; j++) {
        p.top_k = tks[j];
        draw_counts(s, tv, TV, &p, TN, tc);
        long at_minus1 = 0;
        for (int i = 0; i < TV; i++)
            at_minus1 += tv[i] < 0.0f ? tc[i] : 0;
        if (tks[j] <= 1200) {
            CHECKF(at_minus1 == 0, "top_k=%d: %ld draws below the k-th value", tks[j], at_minus1);
        } else {
            double want = 800.0 * exp(-1.0) / (1200.0 + 800.0 * exp(-1.0)) * TN;
            CHECKF(fabs(at_minus1 - want) < 5.0 * sqrt(want), "top_k=%d: %ld vs %.0f", tks[j],
                   at_minus1, want);
        }
    }
    pl_sampler_free(s);
}

static void test_top_p(void)
{
    enum { V = 5, N = 12000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 13);
    REQUIRE(s);
    /* ids shuffled: probabilities 0.1, 0.4, 0.05, 0.3, 0.15 */
    const double pr[V] = {0.1, 0.4, 0.05, 0.3, 0.15};
    float logits[V];
    log_probs(pr, V, logits);
    struct {
        float top_p;
        int keep[V]; /* the smallest most-likely set with mass >= top_p */
    } cases[] = {
        {0.35f, {0, 1, 0, 0, 0}}, /* 0.4 >= 0.35 */
        {0.65f, {0, 1, 0, 1, 0}}, /* 0.4 + 0.3 */
        {0.75f, {0, 1, 0, 1, 1}}, /* + 0.15 */
        {0.9f, {1, 1, 0, 1, 1}},  /* + 0.1 = 0.95 */
        {0.99f, {1, 1, 1, 1, 1}},
    };
    for (int c = 0; c < 5; c++) {
        struct pl_sampling_params p;
        pl_sampling_params_default(&p);
        p.top_p = cases[c].top_p;
        long counts[V];
        draw_counts(s, logits, V, &p, N, counts);
        double x[V], prob[V];
        for (int i = 0; i < V; i++)
            x[i] = cases[c].keep[i] ? log(pr[i]) : -INFINITY;
        softmax(x, V, prob);
        CHECKF(fits(counts, prob, V, N, "top_p"), "top_p=%g", cases[c].top_p);
    }

    /* top_k first, then top_p over the renormalized top-k mass: with top_k=2
     * the kept masses are 0.4/0.7 = 0.571 and 0.429, so top_p=0.5 keeps only
     * id 1 (applied to the full distribution it would keep ids 1 and 3) */
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.top_k = 2;
    p.top_p = 0.5f;
    long counts[V];
    draw_counts(s, logits, V, &p, 1000, counts);
    CHECK(counts[1] == 1000);
    pl_sampler_free(s);

    /* a large shuffled vocabulary with a geometric profile: the kept set must
     * equal the full-sort reference exactly (every kept token has >= ~1% mass,
     * and the first dropped ones ~1% too, so a wrong cut shows) */
    enum { BV = 1000, BN = 12000 };
    static float big[BV];
    static int rank_of[BV];
    struct pl_rng g;
    pl_rng_seed(&g, 17);
    for (int i = 0; i < BV; i++)
        rank_of[i] = i;
    for (int i = BV - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)(pl_rng_uniform(&g) * (i + 1));
        int t = rank_of[i];
        rank_of[i] = rank_of[j];
        rank_of[j] = t;
    }
    for (int i = 0; i < BV; i++)
        big[i] = -(float)rank_of[i] / 8.0f;
    /* reference: probabilities by rank, cut at mass 0.9 */
    double z = 0.0;
    for (int r = 0; r < BV; r++)
        z += exp(-(double)r / 8.0);
    int cut = 0;
    double acc = 0.0;
    while (acc < 0.9 * z)
        acc += exp(-(double)cut++ / 8.0);
    s = new_sampler(BATCH, BV, 19);
    REQUIRE(s);
    pl_sampling_params_default(&p);
    p.top_p = 0.9f;
    static long bc[BV];
    draw_counts(s, big, BV, &p, BN, bc);
    int wrong = 0, missing = 0;
    static double prob[BV];
    for (int i = 0; i < BV; i++) {
        bool kept = rank_of[i] < cut;
        wrong += bc[i] && !kept;
        missing += kept && !bc[i];
        prob[i] = kept ? exp(-(double)rank_of[i] / 8.0) / acc : 0.0;
    }
    CHECKF(wrong == 0 && missing == 0, "cut %d: %d outside, %d missing", cut, wrong, missing);
    CHECK(fits(bc, prob, BV, BN, "top_p large vocab"));
    pl_sampler_free(s);
}

static void test_min_p(void)
{
    enum { V = 5, N = 12000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 23);
    REQUIRE(s);
    const double pr[V] = {0.15, 0.05, 0.5, 0.1, 0.2};
    float logits[V];
    log_probs(pr, V, logits);
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.min_p = 0.25f; /* threshold 0.125: keeps 0.15, 0.5, 0.2 */
    long counts[V];
    draw_counts(s, logits, V, &p, N, counts);
    double x[V], prob[V];
    for (int i = 0; i < V; i++)
        x[i] = pr[i] >= 0.125 ? log(pr[i]) : -INFINITY;
    softmax(x, V, prob);
    CHECK(fits(counts, prob, V, N, "min_p"));

    /* min_p applies to the tempered distribution: at T=2 the probabilities
     * become proportional to sqrt(p), so 0.1 (ratio sqrt(0.2)=0.447 >= 0.4)
     * stays and 0.05 (0.316) goes */
    p.temperature = 2.0f;
    p.min_p = 0.4f;
    draw_counts(s, logits, V, &p, N, counts);
    for (int i = 0; i < V; i++)
        x[i] = sqrt(pr[i] / 0.5) >= 0.4 ? log(pr[i]) / 2.0 : -INFINITY;
    softmax(x, V, prob);
    CHECK(prob[3] > 0.0 && prob[1] == 0.0);
    CHECK(fits(counts, prob, V, N, "min_p tempered"));
    pl_sampler_free(s);
}

/* The penalty formulas written out per token (vLLM apply_penalties). */
static void penalize_ref(const float *logits, int V, const int32_t *prompt, int n_prompt,
                         const int32_t *out, int n_out, double rep, double freq, double pres,
                         double *x)
{
    for (int t = 0; t < V; t++) {
        int in_prompt = 0, count = 0;
        for (int i = 0; i < n_prompt; i++)
            in_prompt |= prompt[i] == t;
        for (int i = 0; i < n_out; i++)
            count += out[i] == t;
        double v = logits[t];
        if (in_prompt || count)
            v = v > 0 ? v / rep : v * rep;
        v -= freq * count;
        v -= pres * (count > 0);
        x[t] = v;
    }
}

static void test_penalties(void)
{
    enum { V = 8, N = 24000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 29);
    REQUIRE(s);
    const float logits[V] = {1.0f, -0.5f, 0.8f, 2.0f, -1.2f, 0.3f, 1.5f, 0.0f};
    const int32_t prompt[] = {0, 1, 1, 4};
    const int32_t out[] = {3, 3, 3, 1, 6, 7};
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.repetition_penalty = 1.3f;
    p.frequency_penalty = 0.4f;
    p.presence_penalty = 0.25f;
    static float buf[BATCH * V];
    struct pl_sampler_row rows[BATCH];
    for (int r = 0; r < BATCH; r++) {
        memcpy(buf + r * V, logits, sizeof(logits));
        rows[r] = (struct pl_sampler_row){.params = &p, .prompt_ids = prompt, .n_prompt = 4,
                                          .output_ids = out, .n_output = 6};
    }
    long counts[V] = {0};
    struct pl_sample_result res[BATCH];
    struct pl_err e;
    for (int done = 0; done < N; done += BATCH) {
        REQUIRE(pl_sampler_sample(s, buf, BATCH, rows, res, &e) == PL_STATUS_OK);
        for (int r = 0; r < BATCH; r++)
            counts[res[r].token_id]++;
    }
    double x[V], prob[V];
    penalize_ref(logits, V, prompt, 4, out, 6, 1.3, 0.4, 0.25, x);
    softmax(x, V, prob);
    int n_total = (N + BATCH - 1) / BATCH * BATCH;
    CHECK(fits(counts, prob, V, n_total, "penalties"));

    /* crisp greedy boundaries of each formula */
    p.temperature = 0.0f;
    p.frequency_penalty = p.presence_penalty = 0.0f;
    float g[V] = {2.0f, 1.4f, -9, -9, -9, -9, -9, -9};
    const int32_t seen0[] = {0};
    struct pl_sampler_row row = {.params = &p, .prompt_ids = seen0, .n_prompt = 1};
    p.repetition_penalty = 1.5f; /* 2.0 / 1.5 = 1.33 < 1.4 */
    CHECK(sample_one(s, g, &row).token_id == 1);
    p.repetition_penalty = 1.4f; /* 2.0 / 1.4 = 1.43 > 1.4 */
    CHECK(sample_one(s, g, &row).token_id == 0);
    p.repetition_penalty = 0.5f; /* < 1 rewards repeats: 4.0 */
    CHECK(sample_one(s, g, &row).token_id == 0);
    /* negative logits are multiplied: -1 * 2 = -2 < -1.5 */
    float neg[V] = {-1.0f, -1.5f, -9, -9, -9, -9, -9, -9};
    p.repetition_penalty = 2.0f;
    CHECK(sample_one(s, neg, &row).token_id == 1);
    p.repetition_penalty = 1.4f; /* -1.4 > -1.5 */
    CHECK(sample_one(s, neg, &row).token_id == 0);
    /* frequency counts occurrences in the output only (the prompt is ignored) */
    p.repetition_penalty = 1.0f;
    p.frequency_penalty = 0.2f;
    const int32_t three[] = {0, 0, 0};
    struct pl_sampler_row frow = {.params = &p, .prompt_ids = three, .n_prompt = 3};
    CHECK(sample_one(s, g, &frow).token_id == 0);
    frow.output_ids = three;
    frow.n_output = 3; /* 2.0 - 0.6 = 1.4: tie with id 1, lowest id wins */
    CHECK(sample_one(s, g, &frow).token_id == 0);
    p.frequency_penalty = 0.21f; /* 2.0 - 0.63 < 1.4 */
    CHECK(sample_one(s, g, &frow).token_id == 1);
    /* presence subtracts once whatever the count */
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.59f;
    CHECK(sample_one(s, g, &frow).token_id == 0);
    p.presence_penalty = 0.61f;
    CHECK(sample_one(s, g, &frow).token_id == 1);
    pl_sampler_free(s);
}

static void test_logit_bias_and_allowed(void)
{
    enum { V = 6, N = 12000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 31);
    REQUIRE(s);
    const float logits[V] = {3.0f, 1.0f, 0.5f, 0.0f, -1.0f, 2.0f};
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.temperature = 0.0f;
    struct pl_sampler_row row = {.params = &p};
    CHECK(sample_one(s, logits, &row).token_id == 0);
    const struct pl_logit_bias b1[] = {{4, 4.5f}}; /* -1 + 4.5 = 3.5 > 3 */
    p.logit_bias = b1;
    p.n_logit_bias = 1;
    CHECK(sample_one(s, logits, &row).token_id == 4);
    const struct pl_logit_bias b2[] = {{4, 3.9f}, {0, -100.0f}}; /* 2.9 vs 2.0 */
    p.logit_bias = b2;
    p.n_logit_bias = 2;
    CHECK(sample_one(s, logits, &row).token_id == 4);

    /* sampled: biased distribution */
    p.temperature = 1.0f;
    long counts[V];
    draw_counts(s, logits, V, &p, N, counts);
    double x[V], prob[V];
    for (int i = 0; i < V; i++)
        x[i] = logits[i] + (i == 4 ? 3.9 : i == 0 ? -100.0 : 0.0);
    softmax(x, V, prob);
    CHECK(fits(counts, prob, V, N, "logit_bias"));

    /* allowed_token_ids: only those, renormalized */
    const int32_t allowed[] = {2, 5, 3};
    pl_sampling_params_default(&p);
    p.allowed_token_ids = allowed;
    p.n_allowed_token_ids = 3;
    draw_counts(s, logits, V, &p, N, counts);
    for (int i = 0; i < V; i++)
        x[i] = (i == 2 || i == 5 || i == 3) ? logits[i] : -INFINITY;
    softmax(x, V, prob);
    CHECK(fits(counts, prob, V, N, "allowed_token_ids"));
    p.temperature = 0.0f;
    CHECK(sample_one(s, logits, &row).token_id == 5); /* greedy within the allowed set */
    pl_sampler_free(s);
}

/* Structured output's token mask: masked tokens never come, the rest keep their
 * renormalized probabilities, and logprobs stay raw (computed before the mask). */
static void test_token_mask(void)
{
    enum { V = 40, N = 12000 };
    struct pl_sampler *s = new_sampler(BATCH, V, 41);
    REQUIRE(s);
    float logits[V];
    for (int i = 0; i < V; i++)
        logits[i] = (float)((i * 7) % 11) * 0.3f;
    uint32_t mask[2] = {0, 0};
    const int keep[] = {1, 4, 33, 38};
    for (int k = 0; k < 4; k++)
        mask[keep[k] >> 5] |= 1u << (keep[k] & 31);
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    struct pl_sampler_row rows[BATCH];
    static float buf[BATCH * V];
    struct pl_sample_result out[BATCH];
    memset(rows, 0, sizeof(rows));
    for (int r = 0; r < BATCH; r++) {
        memcpy(buf + (size_t)r * V, logits, sizeof(logits));
        rows[r].params = &p;
        rows[r].token_mask = r % 2 ? mask : NULL; /* masked and free rows in one batch */
    }
    long counts[V] = {0}, n_masked = 0;
    for (int done = 0; done < N; done += BATCH) {
        struct pl_err e;
        REQUIRE(pl_sampler_sample(s, buf, BATCH, rows, out, &e) == PL_STATUS_OK);
        for (int r = 1; r < BATCH; r += 2) {
            counts[out[r].token_id]++;
            n_masked++;
        }
    }
    double x[V], prob[V];
    for (int i = 0; i < V; i++)
        x[i] = (mask[i >> 5] >> (i & 31)) & 1u ? logits[i] : -INFINITY;
    softmax(x, V, prob);
    CHECK(fits(counts, prob, V, n_masked, "token_mask"));
    /* greedy picks the best allowed token; logprobs are the unmasked ones */
    p.temperature = 0.0f;
    p.logprobs = 2;
    struct pl_sampler_row row = {.params = &p, .token_mask = mask};
    struct pl_sample_result a = sample_one(s, logits, &row);
    row.token_mask = NULL;
    struct pl_sample_result b = sample_one(s, logits, &row);
    int best = keep[0];
    for (int k = 1; k < 4; k++)
        if (logits[keep[k]] > logits[best])
            best = keep[k];
    CHECK(a.token_id == best);
    CHECK(a.n_top == 2 && a.top_ids[0] == b.top_ids[0] && a.top_logprobs[0] == b.top_logprobs[0]);
    pl_sampler_free(s);
}

static void test_min_tokens(void)
{
    enum { V = 6 };
    struct pl_sampler *s = new_sampler(4, V, 37);
    REQUIRE(s);
    const float logits[V] = {0.0f, 1.0f, 9.0f, 8.0f, 7.0f, 0.5f}; /* eos 2 and stop id 3 lead */
    const int32_t eos[] = {2};
    const int32_t stop_ids[] = {3};
    const int32_t out[] = {1, 1, 1, 1};
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.temperature = 0.0f;
    p.min_tokens = 3;
    p.stop_token_ids = stop_ids;
    p.n_stop_token_ids = 1;
    struct pl_sampler_row row = {.params = &p, .output_ids = out, .eos_ids = eos, .n_eos = 1};
    for (int n = 0; n < 3; n++) {
        row.n_output = n;
        CHECKF(sample_one(s, logits, &row).token_id == 4, "n_output %d", n);
    }
    row.n_output = 3;
    CHECK(sample_one(s, logits, &row).token_id == 2);
    /* sampled rows never draw a masked token */
    p.temperature = 1.0f;
    row.n_output = 1;
    int bad = 0;
    for (int t = 0; t < 2000; t++) {
        int32_t tok = sample_one(s, logits, &row).token_id;
        bad += tok == 2 || tok == 3;
    }
    CHECK(bad == 0);
    /* everything masked (allowed = the eos only): falls back to the raw argmax */
    const int32_t only_eos[] = {2};
    p.allowed_token_ids = only_eos;
    p.n_allowed_token_ids = 1;
    CHECK(sample_one(s, logits, &row).token_id == 2);
    p.temperature = 0.0f;
    CHECK(sample_one(s, logits, &row).token_id == 2);
    pl_sampler_free(s);
}

/* Deterministic pseudo-logits for step t (independent of the sampler's generators). */
static void step_logits(int t, int salt, float *x, int V)
{
    uint64_t h = (uint64_t)t * 0x9e3779b97f4a7c15ULL + (uint64_t)salt * 0xbf58476d1ce4e5b9ULL;
    for (int i = 0; i < V; i++) {
        h ^= h >> 29;
        h *= 0x94d049bb133111ebULL;
        h ^= h >> 32;
        x[i] = (float)((double)(h >> 11) * 0x1.0p-53 * 4.0);
    }
}

static void test_seed_independent_of_batch(void)
{
    enum { V = 40, STEPS = 100, ROWS = 5, TARGET = 3 };
    struct pl_sampling_params seeded;
    pl_sampling_params_default(&seeded);
    seeded.has_seed = true;
    seeded.seed = 4242;
    seeded.temperature = 0.9f;
    seeded.top_k = 20;
    seeded.top_p = 0.9f;
    seeded.repetition_penalty = 1.1f;

    /* alone */
    struct pl_sampler *s = new_sampler(ROWS, V, 1);
    REQUIRE(s);
    struct pl_rng rng;
    pl_rng_seed(&rng, seeded.seed);
    int32_t alone[STEPS];
    const int32_t prompt[] = {1, 2, 3};
    float x[V];
    for (int t = 0; t < STEPS; t++) {
        step_logits(t, 0, x, V);
        struct pl_sampler_row row = {.params = &seeded, .prompt_ids = prompt, .n_prompt = 3,
                                     .output_ids = alone, .n_output = t, .rng = &rng};
        alone[t] = sample_one(s, x, &row).token_id;
    }
    pl_sampler_free(s);

    /* at row 3 of 5, beside unseeded, greedy and other-seeded rows, another engine seed */
    s = new_sampler(ROWS, V, 999);
    REQUIRE(s);
    struct pl_sampling_params other[ROWS];
    for (int r = 0; r < ROWS; r++)
        pl_sampling_params_default(&other[r]);
    other[0].temperature = 1.3f;
    other[1].temperature = 0.0f;
    other[2].has_seed = true;
    other[2].seed = 4243;
    other[2].min_p = 0.1f;
    other[4].top_k = 5;
    other[4].frequency_penalty = 0.5f;
    other[TARGET] = seeded;
    struct pl_rng rngs[ROWS];
    for (int r = 0; r < ROWS; r++)
        pl_rng_seed(&rngs[r], other[r].seed);
    static int32_t outs[ROWS][STEPS];
    static float batch[ROWS * V];
    for (int t = 0; t < STEPS; t++) {
        struct pl_sampler_row rows[ROWS];
        for (int r = 0; r < ROWS; r++) {
            step_logits(t, r == TARGET ? 0 : r + 10, batch + r * V, V);
            rows[r] = (struct pl_sampler_row){.params = &other[r], .prompt_ids = prompt,
                                              .n_prompt = 3, .output_ids = outs[r],
                                              .n_output = t,
                                              .rng = other[r].has_seed ? &rngs[r] : NULL};
        }
        struct pl_sample_result res[ROWS];
        struct pl_err e;
        REQUIRE(pl_sampler_sample(s, batch, ROWS, rows, res, &e) == PL_STATUS_OK);
        for (int r = 0; r < ROWS; r++)
            outs[r][t] = res[r].token_id;
    }
    int same = 0;
    for (int t = 0; t < STEPS; t++)
        same += outs[TARGET][t] == alone[t];
    CHECKF(same == STEPS, "%d of %d steps equal", same, STEPS);
    /* the test can fail: another seed gives another sequence */
    s = s ? s : NULL;
    struct pl_rng other_rng;
    pl_rng_seed(&other_rng, 4244);
    int32_t diff[STEPS];
    for (int t = 0; t < STEPS; t++) {
        step_logits(t, 0, x, V);
        struct pl_sampler_row row = {.params = &seeded, .prompt_ids = prompt, .n_prompt = 3,
                                     .output_ids = diff, .n_output = t, .rng = &other_rng};
        diff[t] = sample_one(s, x, &row).token_id;
    }
    int equal = 0;
    for (int t = 0; t < STEPS; t++)
        equal += diff[t] == alone[t];
    CHECK(equal < STEPS / 2);
    pl_sampler_free(s);
}

static void test_logprobs_raw(void)
{
    enum { V = 300 };
    struct pl_sampler *s = new_sampler(2, V, 41);
    REQUIRE(s);
    static float x[V];
    struct pl_rng g;
    pl_rng_seed(&g, 3);
    for (int i = 0; i < V; i++)
        x[i] = (float)(pl_rng_uniform(&g) * 10.0 - 5.0);
    x[17] = x[200]; /* a tie */
    double ref[V], m = -INFINITY, sum = 0.0;
    for (int i = 0; i < V; i++)
        m = fmax(m, x[i]);
    for (int i = 0; i < V; i++)
        sum += exp((double)x[i] - m);
    for (int i = 0; i < V; i++)
        ref[i] = (double)x[i] - m - log(sum);

    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    p.logprobs = 20;
    /* processing must not leak into logprobs (vLLM raw_logprobs) */
    p.temperature = 0.5f;
    p.repetition_penalty = 1.7f;
    const struct pl_logit_bias bias[] = {{5, 50.0f}};
    p.logit_bias = bias;
    p.n_logit_bias = 1;
    const int32_t out[] = {3, 9};
    struct pl_sampler_row row = {.params = &p, .output_ids = out, .n_output = 2};
    for (int t = 0; t < 50; t++) {
        struct pl_sample_result r = sample_one(s, x, &row);
        REQUIRE(r.token_id >= 0 && r.token_id < V);
        CHECK(r.token_id == 5); /* +50 bias at T=0.5 dominates */
        CHECK_NEAR(r.logprob, ref[r.token_id], 1e-6);
        int rank = 0;
        for (int i = 0; i < V; i++)
            rank += ref[i] >= ref[r.token_id];
        CHECK(r.rank == rank);
        REQUIRE(r.n_top == 20);
        for (int j = 0; j < 20; j++) {
            CHECK_NEAR(r.top_logprobs[j], ref[r.top_ids[j]], 1e-6);
            if (j > 0)
                CHECK(r.top_logprobs[j] <= r.top_logprobs[j - 1]);
        }
        /* the 20 reported are the 20 largest: nothing outside beats the last */
        int beats = 0;
        for (int i = 0; i < V; i++) {
            bool listed = false;
            for (int j = 0; j < 20; j++)
                listed |= r.top_ids[j] == i;
            beats += !listed && ref[i] > ref[r.top_ids[19]];
        }
        CHECK(beats == 0);
    }
    /* logprobs = 0: the chosen token only; not requested: nothing */
    p.logprobs = 0;
    struct pl_sample_result r = sample_one(s, x, &row);
    CHECK(r.n_top == 0 && fabs(r.logprob - ref[r.token_id]) <= 1e-6);
    p.logprobs = -1;
    r = sample_one(s, x, &row);
    CHECK(r.n_top == 0 && r.logprob == 0.0f && r.rank == 0);
    /* prompt logprobs helper: clamps n_top to the vocabulary */
    float small[3] = {0.0f, 1.0f, 2.0f};
    pl_sampler_logprobs(small, 3, 0, 20, &r);
    CHECK(r.n_top == 3 && r.top_ids[0] == 2 && r.top_ids[2] == 0 && r.rank == 3);
    CHECK_NEAR(r.logprob, -2.0 - log(1.0 + exp(-1.0) + exp(-2.0)), 1e-6);
    pl_sampler_free(s);
}

static void test_errors(void)
{
    struct pl_sampler *s = NULL;
    struct pl_err e;
    CHECK(pl_sampler_new(0, 10, 1, &s, &e) == PL_STATUS_INVALID_ARGUMENT && s == NULL);
    s = new_sampler(2, 10, 1);
    REQUIRE(s);
    float x[30] = {0};
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    struct pl_sampler_row rows[3] = {{.params = &p}, {.params = &p}, {.params = &p}};
    struct pl_sample_result res[3];
    CHECK(pl_sampler_sample(s, x, 3, rows, res, &e) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(e.msg, "at most 2") != NULL);
    rows[1].params = NULL;
    CHECK(pl_sampler_sample(s, x, 2, rows, res, &e) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(e.msg, "row 1") != NULL);
    const int32_t bad_out[] = {3, 10};
    p.presence_penalty = 0.5f;
    rows[1] = (struct pl_sampler_row){.params = &p, .output_ids = bad_out, .n_output = 2};
    CHECK(pl_sampler_sample(s, x, 2, rows, res, &e) == PL_STATUS_INVALID_ARGUMENT);
    CHECK(strstr(e.msg, "row 1") && strstr(e.msg, "output_ids[1] = 10"));
    pl_sampler_free(s);
    pl_sampler_free(NULL);
}

int main(void)
{
    PL_RUN(test_rng_reference);
    PL_RUN(test_greedy_argmax_lowest_id);
    PL_RUN(test_temperature_statistics);
    PL_RUN(test_top_k);
    PL_RUN(test_top_p);
    PL_RUN(test_min_p);
    PL_RUN(test_penalties);
    PL_RUN(test_logit_bias_and_allowed);
    PL_RUN(test_token_mask);
    PL_RUN(test_min_tokens);
    PL_RUN(test_seed_independent_of_batch);
    PL_RUN(test_logprobs_raw);
    PL_RUN(test_errors);
    return pl_test_summary();
}
