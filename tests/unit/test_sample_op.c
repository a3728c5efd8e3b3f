/*
 * test_sample_op.c -- the backend sample op (CPU backend) against the host sampler.
 *
 * The op must give, row by row, what pl_sampler_sample gives on the same logits with the
 * same generators: the engine draws uniforms with pl_sampler_draw and hands them to the
 * op, whose rows read their logits through a row map (several rows may share one logits
 * row, as the samples of an n > 1 request do). Checked over random parameter combinations
 * (greedy, temperature, top_k, top_p, min_p, the three penalties with repeated tokens,
 * logprobs with ranks and tops), seeded rows at every batch position, rows whose logits
 * are all NaN / -inf (the raw-argmax fallback). Independently of sampler.c, the inversion
 * is checked against a full sort: the token is the first, in (logit descending, id
 * ascending) order, whose cumulative probability exceeds the uniform.
 */
#include "backend/backend.h"
#include "core/sampler.h"
#include "test.h"
#include "util/rng.h"

#include <stdint.h>
#include <stdlib.h>

#define V 1000
#define ROWS 48
#define NL 12 /* logits rows */

static uint64_t g_x = 0x1234567887654321ull;
static uint64_t rnd(void)
{
    g_x ^= g_x << 13;
    g_x ^= g_x >> 7;
    g_x ^= g_x << 17;
    return g_x;
}
static double unif(void) { return (double)(rnd() >> 11) * (1.0 / 9007199254740992.0); }

static void fill_logits(float *x, int kind)
{
    for (int i = 0; i < V; i++) {
        /* a peaked head over a flat tail, with exact ties (multiples of 1/8) */
        float v = (float)(int)(unif() * 64.0) / 8.0f - 4.0f;
        if (i % 97 == 5)
            v += 6.0f;
        x[i] = v;
    }
    if (kind == 1) /* masked row */
        for (int i = 0; i < V; i++)
            x[i] = i % 3 ? -INFINITY : NAN;
    if (kind == 2) /* a few NaNs */
        for (int i = 0; i < V; i += 50)
            x[i] = NAN;
}

struct rowdata {
    struct pl_sampling_params p;
    int32_t prompt[40], output[40];
    struct pl_rng rng;
};

static void random_row(struct rowdata *d, struct pl_sampler_row *row, bool seeded)
{
    struct pl_sampling_params *p = &d->p;
    pl_sampling_params_default(p);
    int mode = (int)(rnd() % 4);
    p->temperature = mode == 0 ? 0.0f : (float)(0.3 + 1.5 * unif());
    if (rnd() % 2)
        p->top_k = 1 + (int)(rnd() % 60);
    if (rnd() % 2)
        p->top_p = (float)(0.2 + 0.8 * unif());
    if (rnd() % 3 == 0)
        p->min_p = (float)(0.3 * unif());
    if (rnd() % 2)
        p->repetition_penalty = (float)(0.7 + unif());
    if (rnd() % 2)
        p->frequency_penalty = (float)(4.0 * unif() - 2.0);
    if (rnd() % 2)
        p->presence_penalty = (float)(4.0 * unif() - 2.0);
    p->logprobs = rnd() % 3 ? (int)(rnd() % (PL_MAX_LOGPROBS + 1)) : -1;
    if (p->temperature < 1e-5f) { /* as validation normalises greedy requests */
        p->top_p = 1.0f;
        p->top_k = 0;
        p->min_p = 0.0f;
    }
    int np = (int)(rnd() % 40), no = (int)(rnd() % 40);
    for (int i = 0; i < np; i++)
        d->prompt[i] = (int32_t)(rnd() % 200) * 5; /* repeats, and hits the boosted ids */
    for (int i = 0; i < no; i++)
        d->output[i] = (int32_t)(rnd() % 150) * 5;
    pl_rng_seed(&d->rng, rnd());
    memset(row, 0, sizeof(*row));
    row->params = p;
    row->prompt_ids = d->prompt;
    row->n_prompt = np;
    row->output_ids = d->output;
    row->n_output = no;
    row->rng = seeded ? &d->rng : NULL;
}

static bool same_result(const struct pl_sample_result *a, const struct pl_sample_result *b)
{
    if (a->token_id != b->token_id || a->n_top != b->n_top || a->rank != b->rank ||
        memcmp(&a->logprob, &b->logprob, sizeof(float)))
        return false;
    return !memcmp(a->top_ids, b->top_ids, sizeof(int32_t) * (size_t)a->n_top) &&
           !memcmp(a->top_logprobs, b->top_logprobs, sizeof(float) * (size_t)a->n_top);
}

static void test_op_equals_host_sampler(void)
{
    struct pl_err err;
    struct pl_backend *be;
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    REQUIRE(be->ops->version == PL_BACKEND_OPS_VERSION && be->ops->sample);
    struct pl_sampler *ref, *drawer;
    REQUIRE(pl_sampler_new(ROWS, V, 77, &ref, &err) == PL_STATUS_OK);
    REQUIRE(pl_sampler_new(ROWS, V, 77, &drawer, &err) == PL_STATUS_OK);
    float *logits = be->ops->alloc(be, sizeof(float) * NL * V);
    float *expanded = malloc(sizeof(float) * ROWS * V);
    static struct rowdata d[ROWS], d2[ROWS];
    struct pl_sampler_row rows[ROWS], rows2[ROWS];
    struct pl_sample_result a[ROWS], b[ROWS];
    int32_t map[ROWS];
    double u[ROWS];
    for (int round = 0; round < 40; round++) {
        for (int l = 0; l < NL; l++)
            fill_logits(logits + (size_t)l * V, l == 3 ? 1 : l == 7 ? 2 : 0);
        for (int r = 0; r < ROWS; r++) {
            map[r] = (int32_t)(rnd() % NL);
            random_row(&d[r], &rows[r], rnd() % 2);
            d2[r] = d[r]; /* the same generator state for the op's draws */
            rows2[r] = rows[r];
            rows2[r].params = &d2[r].p;
            rows2[r].prompt_ids = d2[r].prompt;
            rows2[r].output_ids = d2[r].output;
            rows2[r].rng = rows[r].rng ? &d2[r].rng : NULL;
            memcpy(expanded + (size_t)r * V, logits + (size_t)map[r] * V, sizeof(float) * V);
        }
        REQUIRE(pl_sampler_sample(ref, expanded, ROWS, rows, a, &err) == PL_STATUS_OK);
        pl_sampler_draw(drawer, rows2, ROWS, u);
        REQUIRE(be->ops->sample(be, logits, NL, V, map, ROWS, rows2, u, b, &err) ==
                PL_STATUS_OK);
        for (int r = 0; r < ROWS; r++) {
            CHECKF(same_result(&a[r], &b[r]), "round %d row %d: token %d vs %d", round, r,
                   a[r].token_id, b[r].token_id);
            if (map[r] == 3)
                CHECK(b[r].token_id == 0); /* all masked: the raw argmax, id 0 */
        }
        /* the generators advanced alike: one draw per random row */
        for (int r = 0; r < ROWS; r++)
            if (rows[r].rng)
                CHECK(!memcmp(&d[r].rng, &d2[r].rng, sizeof(d[r].rng)));
    }
    /* a row index outside the logits is refused */
    map[0] = NL;
    CHECK(be->ops->sample(be, logits, NL, V, map, 1, rows2, u, b, &err) ==
          PL_STATUS_INVALID_ARGUMENT);
    be->ops->free(be, logits);
    free(expanded);
    pl_sampler_free(ref);
    pl_sampler_free(drawer);
    pl_backend_free(be);
}

/* A seeded row gives the same token wherever it sits in the batch and whatever surrounds it. */
static void test_seeded_row_any_position(void)
{
    struct pl_err err;
    struct pl_backend *be;
    REQUIRE(pl_backend_cpu_new(1, &be, &err) == PL_STATUS_OK);
    struct pl_sampler *drawer;
    REQUIRE(pl_sampler_new(ROWS, V, 5, &drawer, &err) == PL_STATUS_OK);
    float *logits = be->ops->alloc(be, sizeof(float) * NL * V);
    for (int l = 0; l < NL; l++)
        fill_logits(logits + (size_t)l * V, 0);
    static struct rowdata d[ROWS];
    struct pl_sampler_row rows[ROWS];
    struct pl_sample_result res[ROWS];
    int32_t map[ROWS];
    double u[ROWS];
    struct rowdata seeded;
    struct pl_sampler_row srow;
    random_row(&seeded, &srow, true);
    seeded.p.temperature = 1.0f;
    seeded.p.top_k = 0;
    seeded.p.top_p = 1.0f;
    seeded.p.min_p = 0.0f;
    struct pl_rng start = seeded.rng;
    int32_t alone = -1;
    for (int pos = 0; pos < ROWS; pos += 7) {
        for (int r = 0; r < ROWS; r++) {
            random_row(&d[r], &rows[r], rnd() % 2);
            map[r] = (int32_t)(rnd() % NL);
        }
        seeded.rng = start;
        rows[pos] = srow;
        rows[pos].params = &seeded.p;
        rows[pos].rng = &seeded.rng;
        map[pos] = 2;
        pl_sampler_draw(drawer, rows, ROWS, u);
        REQUIRE(be->ops->sample(be, logits, NL, V, map, ROWS, rows, u, res, &err) ==
                PL_STATUS_OK);
        if (alone < 0) {
            seeded.rng = start;
            double u1;
            pl_sampler_draw(drawer, &rows[pos], 1, &u1);
            struct pl_sample_result one;
            int32_t m2 = 2;
            REQUIRE(be->ops->sample(be, logits, NL, V, &m2, 1, &rows[pos], &u1, &one, &err) ==
                    PL_STATUS_OK);
            alone = one.token_id;
        }
        CHECKF(res[pos].token_id == alone, "position %d: %d, alone %d", pos, res[pos].token_id,
               alone);
    }
    be->ops->free(be, logits);
    pl_sampler_free(drawer);
    pl_backend_free(be);
}

struct sc {
    float v;
    int32_t id;
};
static int sc_cmp(const void *a, const void *b)
{
    const struct sc *x = a, *y = b;
    if (x->v != y->v)
        return x->v > y->v ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The inversion follows the total order: a full sort as the reference. */
static void test_inversion_order(void)
{
    struct pl_err err;
    struct pl_sampler *s;
    REQUIRE(pl_sampler_new(1, V, 1, &s, &err) == PL_STATUS_OK);
    float x[V];
    struct sc c[V];
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    struct pl_sampler_row row = {0};
    row.params = &p;
    int agree = 0, n = 0;
    for (int round = 0; round < 300; round++) {
        fill_logits(x, 0);
        p.temperature = (float)(0.5 + unif());
        double total = 0.0;
        float m = -INFINITY;
        for (int i = 0; i < V; i++)
            if (x[i] / p.temperature > m)
                m = x[i] / p.temperature;
        for (int i = 0; i < V; i++) {
            c[i].v = x[i] / p.temperature;
            c[i].id = i;
        }
        qsort(c, V, sizeof(c[0]), sc_cmp);
        for (int i = 0; i < V; i++)
            total += (double)expf(c[i].v - m);
        double uu = unif(), acc = 0.0;
        int32_t want = c[V - 1].id;
        for (int i = 0; i < V; i++) {
            acc += (double)expf(c[i].v - m);
            if (acc > uu * total) {
                want = c[i].id;
                break;
            }
        }
        struct pl_sample_result res;
        REQUIRE(pl_sampler_sample_rows(s, x, NULL, 1, &row, &uu, &res, &err) == PL_STATUS_OK);
        n++;
        agree += res.token_id == want;
    }
    /* summation order may move a boundary by one rounding step: practically never here */
    CHECKF(agree >= n - 1, "%d of %d draws agree with the sorted reference", agree, n);
    pl_sampler_free(s);
}

int main(void)
{
    PL_RUN(test_op_equals_host_sampler);
    PL_RUN(test_seeded_row_any_position);
    PL_RUN(test_inversion_order);
    return pl_test_summary();
}
