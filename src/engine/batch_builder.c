/*
 * batch_builder.c -- plan -> pl_batch. All arrays come from one arena whose
 * capacity is the worst case for the limits, so a valid plan always fits.
 */
#include "engine/batch_builder.h"

#include "util/arena.h"

#include <stdlib.h>
#include <string.h>

struct pl_batch_builder {
    struct pl_batch_builder_params p;
    struct pl_arena arena;
};

#define ALIGN 64

pl_status pl_batch_builder_new(const struct pl_batch_builder_params *p,
                               struct pl_batch_builder **out, struct pl_err *err)
{
    *out = NULL;
    if (p->block_size < 1 || p->max_num_batched_tokens < 1 || p->max_num_seqs < 1 ||
        p->max_blocks_per_seq < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "batch builder: block_size %d, max_num_batched_tokens %d, max_num_seqs "
                          "%d and max_blocks_per_seq %d must all be >= 1",
                          p->block_size, p->max_num_batched_tokens, p->max_num_seqs,
                          p->max_blocks_per_seq);
    struct pl_batch_builder *bb = calloc(1, sizeof(*bb));
    if (!bb)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "batch builder: out of memory");
    bb->p = *p;
    size_t t = (size_t)p->max_num_batched_tokens, s = (size_t)p->max_num_seqs;
    size_t e = sizeof(int32_t);
    size_t cap = 4 * pl_arena_size_for(t, e, ALIGN)       /* ids, positions, seq_lens, slots */
                 + pl_arena_size_for(s + 1, e, ALIGN)     /* cu_seqlens_q */
                 + pl_arena_size_for(s, e, ALIGN)         /* context_lens */
                 + pl_arena_size_for(s * (size_t)p->max_blocks_per_seq, e, ALIGN)
                 + pl_arena_size_for(s, e, ALIGN);        /* logits_rows */
    pl_status st = pl_arena_init(&bb->arena, cap, err);
    if (st != PL_STATUS_OK) {
        free(bb);
        return st;
    }
    *out = bb;
    return PL_STATUS_OK;
}

void pl_batch_builder_free(struct pl_batch_builder *bb)
{
    if (!bb)
        return;
    pl_arena_fini(&bb->arena);
    free(bb);
}

size_t pl_batch_builder_peak_bytes(const struct pl_batch_builder *bb)
{
    return bb->arena.peak;
}

static int32_t *take(struct pl_arena *a, size_t n)
{
    return pl_arena_alloc(a, n * sizeof(int32_t), ALIGN);
}

pl_status pl_batch_builder_build(struct pl_batch_builder *bb, const struct pl_sched_plan *plan,
                                 struct pl_batch *b, struct pl_err *err)
{
    const struct pl_batch_builder_params *p = &bb->p;
    memset(b, 0, sizeof(*b));
    if (plan->n_seqs > p->max_num_seqs || plan->n_tokens > p->max_num_batched_tokens ||
        plan->n_samples > p->max_num_seqs)
        return pl_err_set(err, PL_STATUS_INTERNAL,
                          "batch builder: plan of %d sequences, %d tokens, %d samples exceeds "
                          "the limits (%d, %d, %d)",
                          plan->n_seqs, plan->n_tokens, plan->n_samples, p->max_num_seqs,
                          p->max_num_batched_tokens, p->max_num_seqs);
    struct pl_arena *a = &bb->arena;
    pl_arena_reset(a);
    int nt = plan->n_tokens, ns = plan->n_seqs, mb = p->max_blocks_per_seq;
    b->token_ids = take(a, (size_t)nt);
    b->positions = take(a, (size_t)nt);
    b->seq_lens = take(a, (size_t)nt);
    b->slot_mapping = take(a, (size_t)nt);
    b->cu_seqlens_q = take(a, (size_t)ns + 1);
    b->context_lens = take(a, (size_t)ns);
    b->block_tables = take(a, (size_t)ns * (size_t)mb);
    b->logits_rows = take(a, (size_t)plan->n_samples);
    if (!b->token_ids || !b->positions || !b->seq_lens || !b->slot_mapping || !b->cu_seqlens_q ||
        !b->context_lens || !b->block_tables || !b->logits_rows)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch builder: arena exhausted");
    b->max_blocks_per_seq = mb;
    int bs = p->block_size;
    int t = 0, r = 0;
    b->cu_seqlens_q[0] = 0;
    for (int s = 0; s < ns; s++) {
        const struct pl_sched_seq *e = &plan->seqs[s];
        const struct pl_seq *q = e->seq;
        const struct pl_block_table *tab = &q->table;
        int ctx = e->start_pos + e->n_new;
        if (e->n_new < 1 || ctx > tab->n_slots || ctx > q->n_tokens || tab->n_blocks > mb ||
            t + e->n_new > nt)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch builder: sequence %lld entry (start %d, %d tokens) vs %d "
                              "slots, %d tokens, %d blocks",
                              (long long)q->seq_id, e->start_pos, e->n_new, tab->n_slots,
                              q->n_tokens, tab->n_blocks);
        for (int i = 0; i < e->n_new; i++, t++) {
            int pos = e->start_pos + i;
            b->token_ids[t] = q->tokens[pos];
            b->positions[t] = pos;
            b->seq_lens[t] = ctx;
            b->slot_mapping[t] = pl_block_table_slot(tab, pos, bs);
        }
        b->cu_seqlens_q[s + 1] = t;
        b->context_lens[s] = ctx;
        int32_t *row = b->block_tables + (size_t)s * mb;
        memcpy(row, tab->ids, (size_t)tab->n_blocks * sizeof(*row));
        for (int i = tab->n_blocks; i < mb; i++)
            row[i] = -1;
        for (int k = 0; k < e->n_samples; k++)
            b->logits_rows[r++] = t - 1;
        if (e->n_new > b->max_q_len)
            b->max_q_len = e->n_new;
        if (ctx > b->max_context_len)
            b->max_context_len = ctx;
    }
    if (t != nt || r != plan->n_samples)
        return pl_err_set(err, PL_STATUS_INTERNAL,
                          "batch builder: plan says %d tokens / %d samples, entries give %d / %d",
                          nt, plan->n_samples, t, r);
    b->n_tokens = nt;
    b->n_seqs = ns;
    b->n_logits = r;
    return PL_STATUS_OK;
}
