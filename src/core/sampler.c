/*
 * sampler.c -- the host sampler (see sampler.h for the per-row pipeline).
 *
 * Owns: the scratch buffers of struct pl_sampler, each sized for one row of
 * vocab_size entries and reused row after row:
 *   work   [vocab] float   the row's logits as they are processed
 *   cand   [vocab] struct  (logit, id, unnormalized probability) candidates
 *   mark   [vocab] uint8   membership flags; all zero between uses
 *   counts [vocab] int32   output-token counts; all zero between uses
 * Invariant: mark and counts are returned to all-zero before a row ends,
 * so no per-row clearing of vocab-sized memory is needed.
 *
 *   uniforms [max_rows] double  pl_sampler_sample's draws
 *
 * Cost per random row: O(V) for the copy, the filters and one exp per
 * candidate; top_k, top_p and the inversion use selection (quickselect, and
 * a mass-weighted quickselect for top_p and the draw), never a full
 * O(V log V) sort.
 */
#include "core/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLING_EPS PL_SAMPLER_GREEDY_EPS
/* below this many candidates, selection switches to insertion sort */
#define SMALL_RANGE 16

struct cand {
    float logit; /* processed, temperature-scaled logit */
    int32_t id;
    float e;     /* exp(logit - max logit): unnormalized probability */
};

struct pl_sampler {
    int max_rows;
    int vocab;
    struct pl_rng rng; /* generator of requests without a seed */
    float *work;
    struct cand *cand;
    uint8_t *mark;
    int32_t *counts;
    double *uniforms;
};

pl_status pl_sampler_new(int max_rows, int vocab_size, uint64_t seed, struct pl_sampler **out,
                         struct pl_err *err)
{
    *out = NULL;
    if (max_rows < 1 || vocab_size < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "sampler: max_rows (%d) and vocab_size (%d) must be positive", max_rows,
                          vocab_size);
    struct pl_sampler *s = calloc(1, sizeof(*s));
    if (!s)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "sampler: out of memory");
    s->max_rows = max_rows;
    s->vocab = vocab_size;
    pl_rng_seed(&s->rng, seed);
    size_t v = (size_t)vocab_size;
    s->work = malloc(v * sizeof(*s->work));
    s->cand = malloc(v * sizeof(*s->cand));
    s->mark = calloc(v, sizeof(*s->mark));
    s->counts = calloc(v, sizeof(*s->counts));
    s->uniforms = malloc((size_t)max_rows * sizeof(*s->uniforms));
    if (!s->work || !s->cand || !s->mark || !s->counts || !s->uniforms) {
        pl_sampler_free(s);
        return pl_err_set(err, PL_STATUS_NO_MEMORY,
                          "sampler: out of memory for scratch of %d tokens", vocab_size);
    }
    *out = s;
    return PL_STATUS_OK;
}

void pl_sampler_free(struct pl_sampler *s)
{
    if (!s)
        return;
    free(s->work);
    free(s->cand);
    free(s->mark);
    free(s->counts);
    free(s->uniforms);
    free(s);
}

/* ---- logprobs --------------------------------------------------------------- */

static float sanitize(float x)
{
    return isnan(x) ? -INFINITY : x;
}

/* the candidate order: higher logit first, lower id on ties */
static int before(float va, int32_t ia, float vb, int32_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

void pl_sampler_logprobs(const float *logits, int vocab_size, int32_t token_id, int n_top,
                         struct pl_sample_result *out)
{
    if (n_top < 0)
        n_top = 0;
    if (n_top > PL_MAX_LOGPROBS)
        n_top = PL_MAX_LOGPROBS;
    if (n_top > vocab_size)
        n_top = vocab_size;
    float top_v[PL_MAX_LOGPROBS];
    int32_t top_i[PL_MAX_LOGPROBS];
    int n_kept = 0;
    float m = -INFINITY;
    for (int i = 0; i < vocab_size; i++) {
        float x = sanitize(logits[i]);
        if (x > m)
            m = x;
        if (n_top == 0)
            continue;
        /* keep the n_top first in candidate order, sorted (insertion) */
        if (n_kept == n_top && !before(x, i, top_v[n_kept - 1], top_i[n_kept - 1]))
            continue;
        int j = n_kept < n_top ? n_kept++ : n_top - 1;
        while (j > 0 && before(x, i, top_v[j - 1], top_i[j - 1])) {
            top_v[j] = top_v[j - 1];
            top_i[j] = top_i[j - 1];
            j--;
        }
        top_v[j] = x;
        top_i[j] = i;
    }
    double lse = -INFINITY;
    if (m > -INFINITY) {
        double sum = 0.0;
        /* float exponentials, double sum: ~1e-7 relative, well inside fp32 output */
        for (int i = 0; i < vocab_size; i++)
            sum += (double)expf(sanitize(logits[i]) - m);
        lse = (double)m + log(sum);
    }
    float xt = sanitize(logits[token_id]);
    int rank = 0;
    for (int i = 0; i < vocab_size; i++)
        rank += sanitize(logits[i]) >= xt;
    out->logprob = (float)((double)xt - lse);
    out->rank = rank;
    out->n_top = n_kept;
    for (int j = 0; j < n_kept; j++) {
        out->top_ids[j] = top_i[j];
        out->top_logprobs[j] = (float)((double)top_v[j] - lse);
    }
}

/* ---- selection -------------------------------------------------------------- */

static int cand_before(const struct cand *a, const struct cand *b)
{
    return before(a->logit, a->id, b->logit, b->id);
}

static void swap_cand(struct cand *a, struct cand *b)
{
    struct cand t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(struct cand *c, int lo, int hi)
{
    for (int i = lo + 1; i < hi; i++) {
        struct cand x = c[i];
        int j = i;
        while (j > lo && cand_before(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/*
 * Partitions c[lo, hi) (hi - lo >= 3) around a median-of-three pivot: on
 * return c[lo, p) come before c[p] in candidate order and c[p+1, hi) after.
 */
static int partition(struct cand *c, int lo, int hi)
{
    int mid = lo + (hi - lo) / 2;
    if (cand_before(&c[mid], &c[lo]))
        swap_cand(&c[mid], &c[lo]);
    if (cand_before(&c[hi - 1], &c[lo]))
        swap_cand(&c[hi - 1], &c[lo]);
    if (cand_before(&c[hi - 1], &c[mid]))
        swap_cand(&c[hi - 1], &c[mid]);
    swap_cand(&c[mid], &c[hi - 1]); /* the median is the pivot, parked at the end */
    struct cand pivot = c[hi - 1];
    int store = lo;
    for (int i = lo; i < hi - 1; i++)
        if (cand_before(&c[i], &pivot))
            swap_cand(&c[i], &c[store++]);
    swap_cand(&c[store], &c[hi - 1]);
    return store;
}

/* Rearranges c[0, n) so that c[0, k) are its first k in candidate order (0 < k < n). */
static void select_first_k(struct cand *c, int n, int k)
{
    int lo = 0, hi = n;
    while (hi - lo > SMALL_RANGE) {
        int p = partition(c, lo, hi);
        if (p == k || p == k - 1)
            return;
        if (p > k)
            hi = p;
        else
            lo = p + 1;
    }
    insertion_sort(c, lo, hi);
}

/* whether accumulated mass acc has reached target: >= for top_p, > for the draw */
static bool reaches(double acc, double target, bool strict)
{
    return strict ? acc > target : acc >= target;
}

/*
 * Rearranges c[0, n) and returns cut such that c[0, cut) is the smallest set
 * of first candidates (in candidate order) whose mass e reaches target
 * (reaches(); strict: exceeds it), and c[cut - 1] is the last of them in
 * candidate order. top_p keeps c[0, cut); the draw takes c[cut - 1]. The set
 * is what a full sort would give, found in O(n) expected.
 */
static int select_mass(struct cand *c, int n, double target, bool strict)
{
    int lo = 0, hi = n;
    double acc = 0.0; /* mass of c[0, lo), all of which is kept; acc has not reached target */
    while (hi - lo > SMALL_RANGE) {
        int p = partition(c, lo, hi);
        double before_p = 0.0;
        for (int i = lo; i < p; i++)
            before_p += c[i].e;
        if (reaches(acc + before_p, target, strict)) {
            hi = p; /* the cut falls inside c[lo, p) */
        } else if (reaches(acc + before_p + c[p].e, target, strict)) {
            return p + 1;
        } else {
            acc += before_p + c[p].e;
            lo = p + 1;
        }
    }
    insertion_sort(c, lo, hi);
    for (int i = lo; i < hi; i++) {
        acc += c[i].e;
        if (reaches(acc, target, strict))
            return i + 1;
    }
    return hi; /* rounding: the whole remaining range */
}

/* ---- one row ---------------------------------------------------------------- */

static int32_t argmax(const float *w, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (w[i] > w[best])
            best = i;
    return best;
}

static int32_t argmax_raw(const float *x, int n)
{
    int32_t best = 0;
    float bv = sanitize(x[0]);
    for (int i = 1; i < n; i++) {
        float v = sanitize(x[i]);
        if (v > bv) {
            bv = v;
            best = i;
        }
    }
    return best;
}

static pl_status check_ids(const int32_t *ids, int n, int vocab, int row, const char *what,
                           struct pl_err *err)
{
    if (n > 0 && !ids)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "sampler row %d: %s is NULL", row,
                          what);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "sampler row %d: %s[%d] = %d is outside the vocabulary (%d)", row,
                              what, i, (int)ids[i], vocab);
    return PL_STATUS_OK;
}

/* Steps 1-4 of the pipeline on s->work. */
static pl_status process_logits(struct pl_sampler *s, const struct pl_sampler_row *row, int r,
                                struct pl_err *err)
{
    const struct pl_sampling_params *p = row->params;
    float *w = s->work;
    int V = s->vocab;
    pl_status st;

    if (p->allowed_token_ids) {
        if ((st = check_ids(p->allowed_token_ids, p->n_allowed_token_ids, V, r,
                            "allowed_token_ids", err)))
            return st;
        for (int i = 0; i < p->n_allowed_token_ids; i++)
            s->mark[p->allowed_token_ids[i]] = 1;
        for (int i = 0; i < V; i++) {
            if (!s->mark[i])
                w[i] = -INFINITY;
            s->mark[i] = 0;
        }
    }
    if (row->token_mask) {
        const uint32_t *m = row->token_mask;
        for (int i = 0; i < V; i++)
            if (!((m[i >> 5] >> (i & 31)) & 1u))
                w[i] = -INFINITY;
    }
    if (row->n_output < p->min_tokens) {
        if ((st = check_ids(row->eos_ids, row->n_eos, V, r, "eos_ids", err)) ||
            (st = check_ids(p->stop_token_ids, p->n_stop_token_ids, V, r, "stop_token_ids", err)))
            return st;
        for (int i = 0; i < row->n_eos; i++)
            w[row->eos_ids[i]] = -INFINITY;
        for (int i = 0; i < p->n_stop_token_ids; i++)
            w[p->stop_token_ids[i]] = -INFINITY;
    }
    for (int i = 0; i < p->n_logit_bias; i++) {
        int32_t id = p->logit_bias[i].token_id;
        if (id < 0 || id >= V)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "sampler row %d: logit_bias token %d is outside the vocabulary (%d)",
                              r, (int)id, V);
        w[id] += p->logit_bias[i].bias;
    }

    bool rep = p->repetition_penalty != 1.0f;
    bool freq_pres = p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
    if (rep || freq_pres) {
        if ((st = check_ids(row->output_ids, row->n_output, V, r, "output_ids", err)))
            return st;
    }
    if (rep) {
        if ((st = check_ids(row->prompt_ids, row->n_prompt, V, r, "prompt_ids", err)))
            return st;
        /* each distinct token of prompt + output once: mark on first sight */
        float rp = p->repetition_penalty;
        for (int pass = 0; pass < 2; pass++) {
            const int32_t *ids = pass ? row->output_ids : row->prompt_ids;
            int n = pass ? row->n_output : row->n_prompt;
            for (int i = 0; i < n; i++) {
                int32_t id = ids[i];
                if (s->mark[id])
                    continue;
                s->mark[id] = 1;
                w[id] = w[id] > 0.0f ? w[id] / rp : w[id] * rp;
            }
        }
        for (int i = 0; i < row->n_prompt; i++)
            s->mark[row->prompt_ids[i]] = 0;
        for (int i = 0; i < row->n_output; i++)
            s->mark[row->output_ids[i]] = 0;
    }
    if (freq_pres) {
        for (int i = 0; i < row->n_output; i++)
            s->counts[row->output_ids[i]]++;
        for (int i = 0; i < row->n_output; i++) {
            int32_t id = row->output_ids[i];
            int c = s->counts[id];
            if (!c)
                continue; /* already applied for this token */
            w[id] -= p->frequency_penalty * (float)c;
            w[id] -= p->presence_penalty;
            s->counts[id] = 0;
        }
    }
    return PL_STATUS_OK;
}

/*
 * The k-th value of w in candidate order among entries >= lo, or -inf when
 * fewer than k qualify. A min-heap of the k best so far (root = the weakest
 * kept) rejects almost every entry with one comparison: O(V log k) worst case,
 * about O(V) on real logits. heap has room for k entries.
 */
static float kth_value(const float *w, int V, float lo, int k, struct cand *heap)
{
    int n = 0;
    for (int i = 0; i < V; i++) {
        float x = w[i];
        if (x == -INFINITY || x < lo)
            continue;
        int j;
        if (n < k) {
            /* sift up: the parent must not come before the child */
            j = n++;
            while (j > 0 && before(heap[(j - 1) / 2].logit, heap[(j - 1) / 2].id, x, i)) {
                heap[j] = heap[(j - 1) / 2];
                j = (j - 1) / 2;
            }
        } else {
            if (!before(x, i, heap[0].logit, heap[0].id))
                continue;
            /* replace the root, sift down */
            j = 0;
            for (;;) {
                int a = 2 * j + 1, b = a + 1, w_ = j;
                float wv = x;
                int32_t wi = i;
                if (a < n && before(wv, wi, heap[a].logit, heap[a].id)) {
                    w_ = a;
                    wv = heap[a].logit;
                    wi = heap[a].id;
                }
                if (b < n && before(wv, wi, heap[b].logit, heap[b].id))
                    w_ = b;
                if (w_ == j)
                    break;
                heap[j] = heap[w_];
                j = w_;
            }
        }
        heap[j].logit = x;
        heap[j].id = i;
    }
    return n < k ? -INFINITY : heap[0].logit;
}

/* top_k values up to this use the heap; larger ones quickselect all candidates */
#define HEAP_TOP_K_MAX 1024

/* Step 6: temperature, min_p, top_k, top_p and the draw. Returns -1 when all is masked. */
static int32_t sample_random(struct pl_sampler *s, const struct pl_sampling_params *p, double u)
{
    float *w = s->work;
    int V = s->vocab;
    float t = p->temperature;
    float m = -INFINITY;
    for (int i = 0; i < V; i++) {
        w[i] /= t;
        if (w[i] > m)
            m = w[i];
    }
    if (m == -INFINITY)
        return -1;
    /* min_p: p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p) */
    float lo = p->min_p > 0.0f ? m + logf(p->min_p) : -INFINITY;
    if (lo > m)
        lo = m; /* rounding must not drop the top token */
    struct cand *c = s->cand;
    int k = p->top_k > 0 && p->top_k < V ? p->top_k : 0;
    if (k && k <= HEAP_TOP_K_MAX) {
        /* vLLM masks logits < the k-th largest: ties with the k-th stay */
        float kth = kth_value(w, V, lo, k, c);
        if (kth > lo)
            lo = kth;
        k = 0;
    }
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (w[i] == -INFINITY || w[i] < lo)
            continue;
        c[n].logit = w[i];
        c[n].id = i;
        n++;
    }
    if (k && k < n) {
        select_first_k(c, n, k);
        float kth = c[0].logit;
        for (int i = 1; i < k; i++)
            if (c[i].logit < kth)
                kth = c[i].logit;
        int kept = k;
        for (int i = k; i < n; i++)
            if (c[i].logit == kth)
                swap_cand(&c[i], &c[kept++]);
        n = kept;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++) {
        c[i].e = expf(c[i].logit - m);
        total += c[i].e;
    }
    if (p->top_p < 1.0f) {
        /*
         * Exact pre-filter: the candidates with e < tiny hold less than
         * n * tiny <= (1 - top_p) * total of the mass, so those with e >= tiny
         * already reach top_p * total and contain the top-p set. On peaked
         * distributions this leaves few candidates for the selection.
         */
        double target = (double)p->top_p * total;
        double tiny = 0.5 * (total - target) / (double)n;
        int kept = 0;
        for (int i = 0; i < n; i++)
            if (c[i].e >= tiny)
                c[kept++] = c[i];
        n = select_mass(c, kept, target, false);
        total = 0.0;
        for (int i = 0; i < n; i++)
            total += c[i].e;
    }
    /* the inversion in candidate order: the first candidate whose cumulative
     * mass exceeds u * total (a u on the rounding gap at the end takes the last) */
    int cut = select_mass(c, n, u * total, true);
    return c[cut - 1].id;
}

static pl_status sample_row(struct pl_sampler *s, const float *x, const struct pl_sampler_row *row,
                            int r, double u, struct pl_sample_result *res, struct pl_err *err)
{
    const struct pl_sampling_params *p = row->params;
    int V = s->vocab;
    if (!p)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "sampler row %d: no params", r);
    if (row->n_prompt < 0 || row->n_output < 0 || row->n_eos < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "sampler row %d: negative count", r);
    for (int i = 0; i < V; i++)
        s->work[i] = sanitize(x[i]);
    pl_status st = process_logits(s, row, r, err);
    if (st)
        return st;

    int32_t tok;
    if (p->temperature < SAMPLING_EPS) {
        tok = argmax(s->work, V);
        if (s->work[tok] == -INFINITY)
            tok = -1;
    } else {
        tok = sample_random(s, p, u);
    }
    if (tok < 0)
        tok = argmax_raw(x, V);

    res->token_id = tok;
    res->logprob = 0.0f;
    res->rank = 0;
    res->n_top = 0;
    if (p->logprobs >= 0)
        pl_sampler_logprobs(x, V, tok, p->logprobs, res);
    return PL_STATUS_OK;
}

void pl_sampler_draw(struct pl_sampler *s, const struct pl_sampler_row *rows, int n_rows,
                     double *uniforms)
{
    for (int r = 0; r < n_rows; r++) {
        const struct pl_sampling_params *p = rows[r].params;
        uniforms[r] = p && !(p->temperature < SAMPLING_EPS)
                          ? pl_rng_uniform(rows[r].rng ? rows[r].rng : &s->rng)
                          : 0.0;
    }
}

pl_status pl_sampler_sample_rows(struct pl_sampler *s, const float *logits,
                                 const int32_t *row_map, int n_rows,
                                 const struct pl_sampler_row *rows, const double *uniforms,
                                 struct pl_sample_result *out, struct pl_err *err)
{
    for (int r = 0; r < n_rows; r++) {
        size_t src = row_map ? (size_t)row_map[r] : (size_t)r;
        pl_status st = sample_row(s, logits + src * (size_t)s->vocab, &rows[r], r, uniforms[r],
                                  &out[r], err);
        if (st)
            return st;
    }
    return PL_STATUS_OK;
}

pl_status pl_sampler_sample(struct pl_sampler *s, const float *logits, int n_rows,
                            const struct pl_sampler_row *rows, struct pl_sample_result *out,
                            struct pl_err *err)
{
    if (n_rows < 0 || n_rows > s->max_rows)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "sampler: %d rows, but it was created for at most %d", n_rows,
                          s->max_rows);
    pl_sampler_draw(s, rows, n_rows, s->uniforms);
    return pl_sampler_sample_rows(s, logits, NULL, n_rows, rows, s->uniforms, out, err);
}

bool pl_sampler_row_is_basic(const struct pl_sampler_row *row)
{
    const struct pl_sampling_params *p = row->params;
    if (!p)
        return false;
    bool min_tokens_mask =
        row->n_output < p->min_tokens && (row->n_eos > 0 || p->n_stop_token_ids > 0);
    return !p->allowed_token_ids && p->n_logit_bias == 0 && !min_tokens_mask;
}
