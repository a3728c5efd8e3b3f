/*
 * engine_test_model.h -- a deterministic fake model and detokenizer behind
 * the engine's interfaces (struct pl_engine_model / pl_engine_detok), for the
 * engine tests.
 *
 * The fake keeps a paged "KV pool" holding, per slot, the token id and
 * position written there. run(batch): store every token through
 * slot_mapping, then for every logits row read the row's sequence history
 * back through its block table (failing when a slot holds the wrong position)
 * and write logits that are a pure function of that history: noise in [0, 2)
 * for every token plus TM_BOOST on one preferred token (the eos id when the
 * preferred token is a multiple of TM_EOS_MOD). So greedy decoding follows
 * tm_preferred, and a run's outputs are right only if block tables, slot
 * mapping, copy-on-write copies and prefix-cache reuse are right.
 * tm_logits computes the same logits from a history alone, with no pool: the
 * independent reference for greedy tokens, logprobs and prompt logprobs.
 *
 * tm_run_sample is the optional run_sample entry: tm_run's logits handed to
 * the CPU backend's sample op (what a GPU runner does with device logits), so
 * engine tests can run every step through backend sampling.
 *
 * The detokenizer maps token t to two lowercase letters ('a' + t % 26,
 * 'a' + t / 26 % 26); the eos token is special and decodes to nothing.
 */
#ifndef PL_TEST_ENGINE_TEST_MODEL_H
#define PL_TEST_ENGINE_TEST_MODEL_H

#include "backend/backend.h"
#include "engine/engine.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TM_VOCAB 600
#define TM_EOS 3
#define TM_EOS_MOD 37
#define TM_BOOST 6.0f

static inline uint64_t tm_hash(const int32_t *hist, int n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)hist[i] + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdULL;
    }
    h ^= h >> 33;
    return h;
}

static inline int32_t tm_preferred(const int32_t *hist, int n)
{
    int32_t t = (int32_t)(4 + tm_hash(hist, n) % (TM_VOCAB - 4));
    return t % TM_EOS_MOD == 0 ? TM_EOS : t;
}

/* The logits after history hist[0..n). */
static inline void tm_logits(const int32_t *hist, int n, float *out)
{
    uint64_t h = tm_hash(hist, n);
    for (int v = 0; v < TM_VOCAB; v++) {
        uint64_t x = (h ^ ((uint64_t)v * 0x632be59bd9b4e019ULL)) * 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 31;
        out[v] = (float)(x % 2000) / 1000.0f;
    }
    out[tm_preferred(hist, n)] += TM_BOOST;
}

/* Greedy outputs of prompt alone: returns the count; *eos says whether it ended on eos. */
static inline int tm_reference(const int32_t *prompt, int n_prompt, int max_tokens, int32_t *out,
                               bool ignore_eos, bool *eos)
{
    int32_t *h = malloc(sizeof(int32_t) * (size_t)(n_prompt + max_tokens));
    memcpy(h, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int n = n_prompt, n_out = 0;
    *eos = false;
    while (n_out < max_tokens) {
        int32_t t = tm_preferred(h, n);
        h[n++] = t;
        out[n_out++] = t;
        if (t == TM_EOS && !ignore_eos) {
            *eos = true;
            break;
        }
    }
    free(h);
    return n_out;
}

struct tm_slot {
    int32_t token;
    int32_t pos; /* -1: never written */
};

struct test_model {
    int n_blocks, bs;
    struct tm_slot *kv;   /* [n_blocks * bs] */
    int32_t *hist;        /* [max_len] */
    int n_errors;
    int n_runs;
    int max_logits_seen;
    struct pl_backend *be; /* tm_run_sample's CPU backend, made at its first call */
    int n_sample_runs;     /* tm_run_sample calls */
};

static inline void tm_init(struct test_model *m, int n_blocks, int bs, int max_len)
{
    memset(m, 0, sizeof(*m));
    m->n_blocks = n_blocks;
    m->bs = bs;
    m->kv = malloc(sizeof(*m->kv) * (size_t)n_blocks * (size_t)bs);
    for (int i = 0; i < n_blocks * bs; i++)
        m->kv[i].pos = -1;
    m->hist = malloc(sizeof(int32_t) * (size_t)max_len);
}

static inline void tm_fini(struct test_model *m)
{
    pl_backend_free(m->be);
    free(m->kv);
    free(m->hist);
}

static pl_status tm_run(void *ctx, const struct pl_batch *b, float *logits, struct pl_err *err)
{
    struct test_model *m = ctx;
    int bs = m->bs;
    m->n_runs++;
    if (b->n_logits > m->max_logits_seen)
        m->max_logits_seen = b->n_logits;
    /* like the CPU runner: at most one logits row per token */
    if (b->n_logits > b->n_tokens) {
        m->n_errors++;
        return pl_err_set(err, PL_STATUS_INTERNAL, "%d logits rows for %d tokens", b->n_logits,
                          b->n_tokens);
    }
    for (int t = 0; t < b->n_tokens; t++) {
        int slot = b->slot_mapping[t];
        if (slot < 0 || slot >= m->n_blocks * bs) {
            m->n_errors++;
            return pl_err_set(err, PL_STATUS_INTERNAL, "slot %d outside the pool", slot);
        }
        m->kv[slot].token = b->token_ids[t];
        m->kv[slot].pos = b->positions[t];
    }
    for (int r = 0; r < b->n_logits; r++) {
        int t = b->logits_rows[r];
        int s = 0;
        while (s < b->n_seqs && b->cu_seqlens_q[s + 1] <= t)
            s++;
        if (s == b->n_seqs || t < 0) {
            m->n_errors++;
            return pl_err_set(err, PL_STATUS_INTERNAL, "logits row %d -> token %d", r, t);
        }
        int ctx_len = b->positions[t] + 1;
        const int32_t *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
        for (int p = 0; p < ctx_len; p++) {
            const struct tm_slot *kv = &m->kv[bt[p / bs] * bs + p % bs];
            if (kv->pos != p) {
                m->n_errors++;
                return pl_err_set(err, PL_STATUS_INTERNAL, "position %d: slot holds %d", p,
                                  kv->pos);
            }
            m->hist[p] = kv->token;
        }
        tm_logits(m->hist, ctx_len, logits + (size_t)r * TM_VOCAB);
    }
    return PL_STATUS_OK;
}

static pl_status tm_copy(void *ctx, const struct pl_block_copy *c, int n, struct pl_err *err)
{
    struct test_model *m = ctx;
    for (int i = 0; i < n; i++)
        memcpy(m->kv + (size_t)c[i].dst * m->bs, m->kv + (size_t)c[i].src * m->bs,
               sizeof(*m->kv) * (size_t)m->bs);
    return PL_STATUS_OK;
}

static pl_status tm_run_sample(void *ctx, const struct pl_batch *b, const int32_t *row_src,
                               int n_rows, const struct pl_sampler_row *rows,
                               const double *uniforms, struct pl_sample_result *results,
                               struct pl_err *err)
{
    struct test_model *m = ctx;
    m->n_sample_runs++;
    if (!m->be) {
        pl_status st = pl_backend_cpu_new(1, &m->be, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    int n = b->n_logits > 0 ? b->n_logits : 1;
    float *logits = m->be->ops->alloc(m->be, sizeof(float) * (size_t)n * TM_VOCAB);
    if (!logits)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "tm_run_sample: out of memory");
    pl_status st = tm_run(ctx, b, logits, err);
    if (st == PL_STATUS_OK && n_rows > 0)
        st = m->be->ops->sample(m->be, logits, b->n_logits, TM_VOCAB, row_src, n_rows, rows,
                                uniforms, results, err);
    m->be->ops->free(m->be, logits);
    return st;
}

/* The model interface; backend_sampling adds tm_run_sample. */
static inline struct pl_engine_model tm_interface_ex(struct test_model *m, bool backend_sampling)
{
    struct pl_engine_model im = {m, TM_VOCAB, 0, tm_run, tm_copy,
                                 backend_sampling ? tm_run_sample : NULL, 0};
    return im;
}

static inline struct pl_engine_model tm_interface(struct test_model *m)
{
    return tm_interface_ex(m, false);
}

/* ---- detokenizer ---- */

static inline void tm_token_text(int32_t t, char out[3])
{
    if (t == TM_EOS) {
        out[0] = '\0';
        return;
    }
    out[0] = (char)('a' + t % 26);
    out[1] = (char)('a' + t / 26 % 26);
    out[2] = '\0';
}

struct tm_detok_state {
    bool skip_special;
};

static pl_status tm_detok_init(void *ctx, const int32_t *prompt, int n_prompt, bool skip,
                               void **state, struct pl_err *err)
{
    struct tm_detok_state *s = malloc(sizeof(*s));
    if (!s)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "oom");
    s->skip_special = skip;
    *state = s;
    return PL_STATUS_OK;
}

static pl_status tm_detok_push(void *state, int32_t id, char **text, size_t *len,
                               struct pl_err *err)
{
    char piece[3];
    tm_token_text(id, piece);
    size_t n = strlen(piece);
    char *p = realloc(*text, *len + n + 1);
    if (!p)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "oom");
    memcpy(p + *len, piece, n + 1);
    *text = p;
    *len += n;
    return PL_STATUS_OK;
}

static pl_status tm_detok_flush(void *state, char **text, size_t *len, struct pl_err *err)
{
    return PL_STATUS_OK;
}

static void tm_detok_fini(void *state)
{
    free(state);
}

static inline struct pl_engine_detok tm_detok_interface(void)
{
    struct pl_engine_detok d = {NULL, tm_detok_init, tm_detok_push, tm_detok_flush,
                                tm_detok_fini};
    return d;
}

/* The text of ids (what the detokenizer must produce). */
static inline void tm_text(const int32_t *ids, int n, char *out)
{
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        char piece[3];
        tm_token_text(ids[i], piece);
        strcat(out, piece);
    }
}

#endif
