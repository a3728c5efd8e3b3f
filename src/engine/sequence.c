/*
 * sequence.c -- sequence groups, sequences and the state machine drawn in
 * sequence.h. Memory for every sequence a group may hold is allocated when
 * the group is created.
 */
#include "engine/sequence.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

const char *pl_seq_status_str(enum pl_seq_status s)
{
    switch (s) {
    case PL_SEQ_WAITING: return "waiting";
    case PL_SEQ_RUNNING: return "running";
    case PL_SEQ_PREEMPTED: return "preempted";
    case PL_SEQ_FINISHED_STOPPED: return "finished_stopped";
    case PL_SEQ_FINISHED_LENGTH: return "finished_length";
    case PL_SEQ_FINISHED_ABORTED: return "finished_aborted";
    }
    return "?";
}

void pl_seq_group_params_default(struct pl_seq_group_params *p)
{
    memset(p, 0, sizeof(*p));
    p->max_tokens = 16;
    p->n = 1;
}

pl_status pl_seq_group_new(const struct pl_seq_group_params *p, int block_size,
                           struct pl_seq_group **out, struct pl_err *err)
{
    *out = NULL;
    if (p->n_prompt < 1 || !p->prompt)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "request %llu: the prompt is empty",
                          (unsigned long long)p->request_id);
    if (p->n < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "request %llu: n must be >= 1, got %d",
                          (unsigned long long)p->request_id, p->n);
    if (p->max_tokens < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "request %llu: max_tokens must be >= 1, got %d",
                          (unsigned long long)p->request_id, p->max_tokens);
    int cap = p->n_seqs_cap ? p->n_seqs_cap : p->n;
    if (cap < p->n)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "request %llu: sequence capacity %d is below n = %d",
                          (unsigned long long)p->request_id, cap, p->n);
    if (p->n_prompt > INT32_MAX / 2 - p->max_tokens)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "request %llu: length overflows",
                          (unsigned long long)p->request_id);
    struct pl_seq_group *g = calloc(1, sizeof(*g));
    if (!g)
        goto oom;
    g->request_id = p->request_id;
    g->n = p->n;
    g->max_tokens = p->max_tokens;
    g->n_prompt = p->n_prompt;
    g->user = p->user;
    g->seqs = calloc((size_t)cap, sizeof(*g->seqs));
    if (!g->seqs)
        goto oom;
    g->n_seqs_cap = cap;
    struct pl_hash128 root = pl_block_hash_root(p->cache_salt, p->n_cache_salt);
    int max_len = p->n_prompt + p->max_tokens;
    for (int i = 0; i < cap; i++) {
        struct pl_seq *s = &g->seqs[i];
        s->index = i;
        s->group = g;
        s->n_prompt = p->n_prompt;
        s->max_len = max_len;
        s->status = PL_SEQ_WAITING;
        s->tokens = malloc((size_t)max_len * sizeof(*s->tokens));
        if (!s->tokens)
            goto oom;
        if (pl_block_table_init(&s->table, max_len, block_size, root, err) != PL_STATUS_OK)
            goto fail;
    }
    memcpy(g->seqs[0].tokens, p->prompt, (size_t)p->n_prompt * sizeof(*p->prompt));
    g->seqs[0].n_tokens = p->n_prompt;
    g->n_seqs = 1;
    *out = g;
    return PL_STATUS_OK;
oom:
    pl_err_set(err, PL_STATUS_NO_MEMORY, "request %llu: out of memory",
               (unsigned long long)p->request_id);
fail:
    pl_seq_group_free(g);
    return PL_STATUS_NO_MEMORY;
}

void pl_seq_group_free(struct pl_seq_group *g)
{
    if (!g)
        return;
    if (g->seqs) {
        for (int i = 0; i < g->n_seqs_cap; i++) {
            free(g->seqs[i].tokens);
            pl_block_table_fini(&g->seqs[i].table);
        }
    }
    free(g->seqs);
    free(g);
}

bool pl_seq_group_is_finished(const struct pl_seq_group *g)
{
    for (int i = 0; i < g->n_seqs; i++)
        if (!pl_seq_is_finished(&g->seqs[i]))
            return false;
    return true;
}

static bool transition_ok(enum pl_seq_status from, enum pl_seq_status to)
{
    switch (from) {
    case PL_SEQ_WAITING:
    case PL_SEQ_PREEMPTED:
        return to == PL_SEQ_RUNNING || to == PL_SEQ_FINISHED_ABORTED;
    case PL_SEQ_RUNNING:
        return to == PL_SEQ_PREEMPTED || pl_seq_status_is_finished(to);
    default:
        return false;
    }
}

void pl_seq_set_status(struct pl_seq *s, enum pl_seq_status to)
{
    assert(transition_ok(s->status, to));
    (void)transition_ok;
    s->status = to;
}

pl_status pl_seq_group_add_fork(struct pl_seq_group *g, const struct pl_seq *parent,
                                int64_t seq_id, struct pl_seq **child, struct pl_err *err)
{
    *child = NULL;
    if (g->n_seqs >= g->n_seqs_cap)
        return pl_err_set(err, PL_STATUS_LIMIT, "request %llu: already holds %d sequences",
                          (unsigned long long)g->request_id, g->n_seqs_cap);
    assert(parent->group == g);
    struct pl_seq *c = &g->seqs[g->n_seqs++];
    c->seq_id = seq_id;
    c->status = parent->status;
    memcpy(c->tokens, parent->tokens, (size_t)parent->n_tokens * sizeof(*c->tokens));
    c->n_tokens = parent->n_tokens;
    c->n_computed = parent->n_computed;
    *child = c;
    return PL_STATUS_OK;
}
