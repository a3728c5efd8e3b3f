/*
 * engine_fake_model.h -- a deterministic stand-in for the model runner and
 * sampler, for the scheduler and soak tests.
 *
 * The fake keeps a paged "KV pool" holding, per slot, the token id and
 * position written there. Running a batch: perform the plan's copy-on-write
 * copies, store every token through slot_mapping, then for every logits row
 * read the sequence's whole context back through its block table (failing if
 * a slot holds the wrong position or nothing) and pick the next token as a
 * hash of that history and the sample index. A token divisible by
 * FAKE_STOP_MOD is a stop token. So the outputs are right only if block
 * tables, slot mapping, copies and prefix-cache reuse are right; and
 * fake_reference computes what a request must produce when run alone, with no
 * pool at all.
 */
#ifndef PL_TEST_ENGINE_FAKE_MODEL_H
#define PL_TEST_ENGINE_FAKE_MODEL_H

#include "engine/batch_builder.h"
#include "engine/scheduler.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAKE_VOCAB 5000
#define FAKE_STOP_MOD 41

struct fake_slot {
    int32_t token;
    int32_t pos; /* -1: never written */
};

struct fake_model {
    int n_blocks, bs;
    struct fake_slot *kv;   /* [n_blocks * bs] */
    int32_t *hist;          /* [max_len] scratch */
    int32_t *sampled;       /* [max rows] */
    bool *stop;             /* [max rows] */
    int n_errors;
    char last_error[256];
};

static inline int32_t fake_next(const int32_t *hist, int n, int sample_index)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)sample_index * 0x632be5abULL);
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)(uint32_t)hist[i] + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdULL;
    }
    h ^= h >> 33;
    return (int32_t)(1 + h % (FAKE_VOCAB - 1));
}

static inline bool fake_is_stop(int32_t tok)
{
    return tok % FAKE_STOP_MOD == 0;
}

/* What sample `index` of a request produces alone; returns the number of outputs. */
static inline int fake_reference(const int32_t *prompt, int n_prompt, int max_tokens, int index,
                                 int32_t *out, bool *stopped)
{
    int32_t *h = malloc(sizeof(int32_t) * (size_t)(n_prompt + max_tokens));
    memcpy(h, prompt, sizeof(int32_t) * (size_t)n_prompt);
    int n = n_prompt, n_out = 0;
    *stopped = false;
    while (n_out < max_tokens) {
        int32_t t = fake_next(h, n, index);
        h[n++] = t;
        out[n_out++] = t;
        if (fake_is_stop(t)) {
            *stopped = true;
            break;
        }
    }
    free(h);
    return n_out;
}

static inline void fake_init(struct fake_model *m, int n_blocks, int bs, int max_len, int max_rows)
{
    memset(m, 0, sizeof(*m));
    m->n_blocks = n_blocks;
    m->bs = bs;
    m->kv = malloc(sizeof(*m->kv) * (size_t)n_blocks * (size_t)bs);
    for (int i = 0; i < n_blocks * bs; i++)
        m->kv[i].pos = -1;
    m->hist = malloc(sizeof(int32_t) * (size_t)max_len);
    m->sampled = malloc(sizeof(int32_t) * (size_t)max_rows);
    m->stop = malloc(sizeof(bool) * (size_t)max_rows);
}

static inline void fake_fini(struct fake_model *m)
{
    free(m->kv);
    free(m->hist);
    free(m->sampled);
    free(m->stop);
}

#define FAKE_FAIL(m, ...)                                                          \
    do {                                                                           \
        (m)->n_errors++;                                                           \
        snprintf((m)->last_error, sizeof((m)->last_error), __VA_ARGS__);          \
        fprintf(stderr, "fake model: %s\n", (m)->last_error);                     \
        return false;                                                              \
    } while (0)

/* The struct pl_batch invariants of batch.h, checked independently of batch.c. */
static inline bool fake_validate_batch(struct fake_model *m, const struct pl_batch *b)
{
    if (b->cu_seqlens_q[0] != 0 || b->cu_seqlens_q[b->n_seqs] != b->n_tokens)
        FAKE_FAIL(m, "cu_seqlens ends %d..%d for %d tokens", b->cu_seqlens_q[0],
                  b->cu_seqlens_q[b->n_seqs], b->n_tokens);
    for (int s = 0; s < b->n_seqs; s++) {
        int q0 = b->cu_seqlens_q[s], q1 = b->cu_seqlens_q[s + 1], ctx = b->context_lens[s];
        if (q1 - q0 < 1 || q1 - q0 > ctx || q1 - q0 > b->max_q_len || ctx > b->max_context_len)
            FAKE_FAIL(m, "seq %d: q_len %d, context %d", s, q1 - q0, ctx);
        const int32_t *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
        int nb = (ctx + m->bs - 1) / m->bs;
        for (int i = 0; i < nb; i++)
            if (bt[i] < 0 || bt[i] >= m->n_blocks)
                FAKE_FAIL(m, "seq %d: block table entry %d is %d", s, i, bt[i]);
        for (int t = q0; t < q1; t++) {
            int pos = ctx - (q1 - q0) + (t - q0);
            if (b->positions[t] != pos || b->seq_lens[t] != ctx)
                FAKE_FAIL(m, "token %d: position %d, expected %d", t, b->positions[t], pos);
            if (b->slot_mapping[t] != bt[pos / m->bs] * m->bs + pos % m->bs)
                FAKE_FAIL(m, "token %d: slot %d", t, b->slot_mapping[t]);
        }
    }
    for (int r = 0; r < b->n_logits; r++)
        if (b->logits_rows[r] < 0 || b->logits_rows[r] >= b->n_tokens)
            FAKE_FAIL(m, "logits row %d -> token %d", r, b->logits_rows[r]);
    return true;
}

/*
 * Runs one step: copies, store, then one sampled token per logits row (into
 * m->sampled / m->stop). The plan gives each row its sample index.
 */
static inline bool fake_run(struct fake_model *m, const struct pl_sched_plan *plan,
                            const struct pl_batch *b)
{
    int bs = m->bs;
    for (int i = 0; i < plan->n_copies; i++)
        memcpy(m->kv + (size_t)plan->copies[i].dst * bs, m->kv + (size_t)plan->copies[i].src * bs,
               sizeof(*m->kv) * (size_t)bs);
    if (!fake_validate_batch(m, b))
        return false;
    for (int t = 0; t < b->n_tokens; t++) {
        int slot = b->slot_mapping[t];
        if (slot < 0 || slot >= m->n_blocks * bs)
            FAKE_FAIL(m, "slot %d outside the pool", slot);
        m->kv[slot].token = b->token_ids[t];
        m->kv[slot].pos = b->positions[t];
    }
    int r = 0;
    for (int s = 0; s < plan->n_seqs; s++) {
        const struct pl_sched_seq *e = &plan->seqs[s];
        for (int k = 0; k < e->n_samples; k++, r++) {
            int t = b->logits_rows[r];
            if (t != b->cu_seqlens_q[s + 1] - 1)
                FAKE_FAIL(m, "row %d is token %d, not seq %d's last", r, t, s);
            int ctx = b->positions[t] + 1;
            const int32_t *bt = b->block_tables + (size_t)s * b->max_blocks_per_seq;
            for (int p = 0; p < ctx; p++) {
                const struct fake_slot *kv = &m->kv[bt[p / bs] * bs + p % bs];
                if (kv->pos != p)
                    FAKE_FAIL(m, "seq %lld position %d: slot holds position %d",
                              (long long)e->seq->seq_id, p, kv->pos);
                m->hist[p] = kv->token;
            }
            int index = e->n_samples > 1 ? k : e->seq->index;
            m->sampled[r] = fake_next(m->hist, ctx, index);
            m->stop[r] = fake_is_stop(m->sampled[r]);
        }
    }
    return true;
}

#endif
