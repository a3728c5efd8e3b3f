/*
 * scheduler.c -- waiting/running/finished queues, the per-step token budget,
 * chunked prefill and preemption by recompute (policy in scheduler.h).
 *
 * The queues are intrusive doubly linked lists through pl_seq_group.prev/next;
 * the running list is in admission order, so its tail is the most recently
 * admitted group (the preemption victim). Each running group reserves
 * n_seqs_cap sequence places against max_num_seqs from admission until it
 * finishes or is preempted, so forks never push a step past the cap and every
 * plan buffer (sized max_num_seqs) is large enough.
 */
#include "engine/scheduler.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct group_list {
    struct pl_seq_group *head, *tail;
    int n;
};

struct pl_scheduler {
    struct pl_scheduler_params p;
    struct pl_block_manager *bm;
    struct group_list waiting, running, finished;
    int n_reserved;                 /* sum of n_seqs_cap over running groups */
    int n_abort_pending;
    uint64_t next_arrival;
    int64_t next_seq_id;
    uint64_t n_steps;
    uint64_t n_preemptions;
    uint64_t n_prompt_tokens;
    uint64_t n_generation_tokens;
    /* plan buffers, [max_num_seqs] each */
    struct pl_sched_seq *plan_seqs;
    struct pl_block_copy *plan_copies;
    struct pl_seq_group **plan_preempted;
    const struct pl_block_table **tables; /* scratch for check / kv_waste */
};

/*
 * Debug builds verify every invariant after each schedule and update (O(pool +
 * running sequences) per step); release builds skip it.
 */
#ifndef NDEBUG
static void debug_check(const struct pl_scheduler *s)
{
    struct pl_err e;
    pl_status st = pl_scheduler_check(s, &e);
    if (st != PL_STATUS_OK)
        fprintf(stderr, "pagellm: %s\n", e.msg);
    assert(st == PL_STATUS_OK);
}
#define DEBUG_CHECK(s) debug_check(s)
#else
#define DEBUG_CHECK(s) ((void)0)
#endif

/* ---- lists ---- */

static void list_push_back(struct group_list *l, struct pl_seq_group *g,
                           enum pl_seq_group_queue q)
{
    assert(g->queue == PL_SEQ_GROUP_NONE);
    g->prev = l->tail;
    g->next = NULL;
    if (l->tail)
        l->tail->next = g;
    else
        l->head = g;
    l->tail = g;
    l->n++;
    g->queue = q;
}

static void list_push_front(struct group_list *l, struct pl_seq_group *g,
                            enum pl_seq_group_queue q)
{
    assert(g->queue == PL_SEQ_GROUP_NONE);
    g->prev = NULL;
    g->next = l->head;
    if (l->head)
        l->head->prev = g;
    else
        l->tail = g;
    l->head = g;
    l->n++;
    g->queue = q;
}

static void list_remove(struct group_list *l, struct pl_seq_group *g)
{
    if (g->prev)
        g->prev->next = g->next;
    else
        l->head = g->next;
    if (g->next)
        g->next->prev = g->prev;
    else
        l->tail = g->prev;
    g->prev = g->next = NULL;
    l->n--;
    g->queue = PL_SEQ_GROUP_NONE;
}

static struct group_list *list_of(struct pl_scheduler *s, enum pl_seq_group_queue q)
{
    switch (q) {
    case PL_SEQ_GROUP_IN_WAITING: return &s->waiting;
    case PL_SEQ_GROUP_IN_RUNNING: return &s->running;
    case PL_SEQ_GROUP_IN_FINISHED: return &s->finished;
    default: return NULL;
    }
}

static void unlink_group(struct pl_scheduler *s, struct pl_seq_group *g)
{
    if (g->queue == PL_SEQ_GROUP_IN_RUNNING)
        s->n_reserved -= g->n_seqs_cap;
    if (g->queue != PL_SEQ_GROUP_NONE)
        list_remove(list_of(s, g->queue), g);
}

/* ---- creation ---- */

void pl_scheduler_params_default(struct pl_scheduler_params *p)
{
    memset(p, 0, sizeof(*p));
    p->block_size = 16;
    p->max_num_batched_tokens = 2048;
    p->max_num_seqs = 256;
    p->enable_chunked_prefill = true;
    p->enable_prefix_caching = true;
}

pl_status pl_scheduler_new(const struct pl_scheduler_params *p, struct pl_scheduler **out,
                           struct pl_err *err)
{
    *out = NULL;
    if (p->max_model_len < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "max_model_len must be >= 1, got %d",
                          p->max_model_len);
    if (p->max_num_seqs < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "max_num_seqs must be >= 1, got %d",
                          p->max_num_seqs);
    if (p->max_num_batched_tokens < p->max_num_seqs)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "max_num_batched_tokens (%d) must be >= max_num_seqs (%d)",
                          p->max_num_batched_tokens, p->max_num_seqs);
    if (!p->enable_chunked_prefill && p->max_num_batched_tokens < p->max_model_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "without chunked prefill max_num_batched_tokens (%d) must be >= "
                          "max_model_len (%d)",
                          p->max_num_batched_tokens, p->max_model_len);
    if (p->long_prefill_token_threshold < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "long_prefill_token_threshold must be >= 0, got %d",
                          p->long_prefill_token_threshold);
    struct pl_scheduler *s = calloc(1, sizeof(*s));
    if (!s)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "scheduler: out of memory");
    s->p = *p;
    struct pl_block_manager_params bp;
    pl_block_manager_params_default(&bp);
    bp.n_blocks = p->n_blocks;
    bp.block_size = p->block_size;
    bp.enable_prefix_caching = p->enable_prefix_caching;
    pl_status st = pl_block_manager_new(&bp, &s->bm, err);
    if (st != PL_STATUS_OK) {
        pl_scheduler_free(s);
        return st;
    }
    size_t n = (size_t)p->max_num_seqs;
    s->plan_seqs = malloc(n * sizeof(*s->plan_seqs));
    s->plan_copies = malloc(n * sizeof(*s->plan_copies));
    s->plan_preempted = malloc(n * sizeof(*s->plan_preempted));
    s->tables = malloc(n * sizeof(*s->tables));
    if (!s->plan_seqs || !s->plan_copies || !s->plan_preempted || !s->tables) {
        pl_scheduler_free(s);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "scheduler: out of memory for %d sequences",
                          p->max_num_seqs);
    }
    s->next_arrival = 1;
    s->next_seq_id = 1;
    *out = s;
    return PL_STATUS_OK;
}

static void release_seq_blocks(struct pl_scheduler *s, struct pl_seq *q)
{
    pl_block_manager_free_table(s->bm, &q->table);
    q->n_computed = 0;
}

static void free_list(struct pl_scheduler *s, struct group_list *l)
{
    while (l->head) {
        struct pl_seq_group *g = l->head;
        unlink_group(s, g);
        for (int i = 0; i < g->n_seqs; i++)
            release_seq_blocks(s, &g->seqs[i]);
        pl_seq_group_free(g);
    }
}

void pl_scheduler_free(struct pl_scheduler *s)
{
    if (!s)
        return;
    if (s->bm) {
        free_list(s, &s->waiting);
        free_list(s, &s->running);
        free_list(s, &s->finished);
    }
    pl_block_manager_free(s->bm);
    free(s->plan_seqs);
    free(s->plan_copies);
    free(s->plan_preempted);
    free(s->tables);
    free(s);
}

const struct pl_scheduler_params *pl_scheduler_get_params(const struct pl_scheduler *s)
{
    return &s->p;
}

struct pl_block_manager *pl_scheduler_block_manager(struct pl_scheduler *s)
{
    return s->bm;
}

/* ---- requests ---- */

pl_status pl_scheduler_add(struct pl_scheduler *s, const struct pl_seq_group_params *p,
                           struct pl_seq_group **out, struct pl_err *err)
{
    if (out)
        *out = NULL;
    unsigned long long id = (unsigned long long)p->request_id;
    if (p->n_prompt > s->p.max_model_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "request %llu: the prompt has %d tokens, more than max_model_len %d", id,
                          p->n_prompt, s->p.max_model_len);
    if (p->n_prompt >= 1 && p->max_tokens >= 1 &&
        (int64_t)p->n_prompt + p->max_tokens > s->p.max_model_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "request %llu: prompt (%d tokens) + max_tokens (%d) = %lld exceeds "
                          "max_model_len %d",
                          id, p->n_prompt, p->max_tokens,
                          (long long)p->n_prompt + p->max_tokens, s->p.max_model_len);
    int cap = p->n_seqs_cap ? p->n_seqs_cap : p->n;
    if (cap > s->p.max_num_seqs)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "request %llu: %d sequences exceed max_num_seqs %d", id, cap,
                          s->p.max_num_seqs);
    if (p->n_prompt >= 1 && p->max_tokens >= 1 && cap >= 1) {
        int bs = s->p.block_size;
        int64_t per_seq = ((int64_t)p->n_prompt + p->max_tokens + bs - 1) / bs;
        if (per_seq * cap > s->p.n_blocks)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "request %llu: %d sequence(s) of prompt %d + max_tokens %d tokens "
                              "need up to %lld KV blocks of %d tokens, but the pool has %d",
                              id, cap, p->n_prompt, p->max_tokens, (long long)(per_seq * cap), bs,
                              s->p.n_blocks);
    }
    struct pl_seq_group *g;
    pl_status st = pl_seq_group_new(p, s->p.block_size, &g, err);
    if (st != PL_STATUS_OK)
        return st;
    g->arrival = s->next_arrival++;
    g->seqs[0].seq_id = s->next_seq_id++;
    list_push_back(&s->waiting, g, PL_SEQ_GROUP_IN_WAITING);
    if (out)
        *out = g;
    return PL_STATUS_OK;
}

static struct pl_seq_group *find_group(struct group_list *l, uint64_t request_id)
{
    for (struct pl_seq_group *g = l->head; g; g = g->next)
        if (g->request_id == request_id)
            return g;
    return NULL;
}

pl_status pl_scheduler_abort(struct pl_scheduler *s, uint64_t request_id, struct pl_err *err)
{
    struct pl_seq_group *g = find_group(&s->waiting, request_id);
    if (!g)
        g = find_group(&s->running, request_id);
    if (!g)
        return pl_err_set(err, PL_STATUS_NOT_FOUND, "request %llu is not waiting or running",
                          (unsigned long long)request_id);
    if (!g->is_abort_requested) {
        g->is_abort_requested = true;
        s->n_abort_pending++;
    }
    return PL_STATUS_OK;
}

/* Moves a group whose sequences are all finished to the finished list. */
static void retire_group(struct pl_scheduler *s, struct pl_seq_group *g)
{
    assert(pl_seq_group_is_finished(g));
    if (g->is_abort_requested) {
        g->is_abort_requested = false;
        s->n_abort_pending--;
    }
    unlink_group(s, g);
    list_push_back(&s->finished, g, PL_SEQ_GROUP_IN_FINISHED);
}

void pl_scheduler_finish_seq(struct pl_scheduler *s, struct pl_seq *seq,
                             enum pl_seq_status status)
{
    assert(pl_seq_status_is_finished(status));
    if (pl_seq_is_finished(seq))
        return;
    pl_seq_set_status(seq, status);
    release_seq_blocks(s, seq);
    struct pl_seq_group *g = seq->group;
    if (pl_seq_group_is_finished(g) && g->queue != PL_SEQ_GROUP_IN_FINISHED)
        retire_group(s, g);
}

static void release_aborted(struct pl_scheduler *s, struct pl_sched_plan *plan)
{
    struct group_list *lists[2] = {&s->waiting, &s->running};
    for (int k = 0; k < 2 && s->n_abort_pending > 0; k++) {
        struct pl_seq_group *g = lists[k]->head;
        while (g && s->n_abort_pending > 0) {
            struct pl_seq_group *next = g->next;
            if (g->is_abort_requested) {
                for (int i = 0; i < g->n_seqs; i++) {
                    struct pl_seq *q = &g->seqs[i];
                    if (!pl_seq_is_finished(q)) {
                        pl_seq_set_status(q, PL_SEQ_FINISHED_ABORTED);
                        release_seq_blocks(s, q);
                    }
                }
                retire_group(s, g);
                plan->n_aborted++;
            }
            g = next;
        }
    }
}

/* ---- scheduling ---- */

static void preempt(struct pl_scheduler *s, struct pl_seq_group *g, struct pl_sched_plan *plan)
{
    assert(g->queue == PL_SEQ_GROUP_IN_RUNNING);
    for (int i = 0; i < g->n_seqs; i++) {
        struct pl_seq *q = &g->seqs[i];
        if (pl_seq_is_finished(q))
            continue;
        pl_seq_set_status(q, PL_SEQ_PREEMPTED);
        release_seq_blocks(s, q);
    }
    unlink_group(s, g);
    list_push_front(&s->waiting, g, PL_SEQ_GROUP_IN_WAITING);
    g->n_preemptions++;
    s->n_preemptions++;
    assert(plan->n_preempted < s->p.max_num_seqs);
    plan->preempted[plan->n_preempted++] = g;
}

/* Logits rows a sequence needs when its chunk reaches its last token. */
static int samples_for(const struct pl_seq *q)
{
    const struct pl_seq_group *g = q->group;
    if (g->n > 1 && g->n_seqs == 1 && q->n_tokens == g->n_prompt)
        return g->n;
    return 1;
}

static void add_entry(struct pl_scheduler *s, struct pl_sched_plan *plan, struct pl_seq *q,
                      int n_new, bool is_decode)
{
    assert(plan->n_seqs < s->p.max_num_seqs);
    struct pl_sched_seq *e = &plan->seqs[plan->n_seqs++];
    e->seq = q;
    e->start_pos = q->n_computed;
    e->n_new = n_new;
    e->n_samples = q->n_computed + n_new == q->n_tokens ? samples_for(q) : 0;
    e->is_decode = is_decode;
    plan->n_tokens += n_new;
    plan->n_samples += e->n_samples;
    if (is_decode)
        plan->n_decodes++;
}

/*
 * Decode pass for group g. Returns false when g preempted itself (its entries
 * and copies from this pass are rolled back).
 */
static bool schedule_decodes(struct pl_scheduler *s, struct pl_seq_group *g,
                             struct pl_sched_plan *plan, int *budget, struct pl_err *err)
{
    int mark_seqs = plan->n_seqs, mark_copies = plan->n_copies;
    int mark_budget = *budget, mark_tokens = plan->n_tokens, mark_samples = plan->n_samples;
    int mark_decodes = plan->n_decodes;
    for (int i = 0; i < g->n_seqs; i++) {
        struct pl_seq *q = &g->seqs[i];
        if (q->status != PL_SEQ_RUNNING || q->n_tokens - q->n_computed != 1)
            continue;
        if (*budget < 1)
            return true;
        if (q->table.n_slots < q->n_tokens) {
            while (!pl_block_manager_can_append(s->bm, &q->table)) {
                struct pl_seq_group *victim = s->running.tail;
                preempt(s, victim, plan);
                if (victim == g) {
                    plan->n_seqs = mark_seqs;
                    plan->n_copies = mark_copies;
                    plan->n_tokens = mark_tokens;
                    plan->n_samples = mark_samples;
                    plan->n_decodes = mark_decodes;
                    *budget = mark_budget;
                    return false;
                }
            }
            int32_t slot;
            struct pl_block_copy copy;
            bool has_copy;
            pl_status st =
                pl_block_manager_append_slot(s->bm, &q->table, &slot, &copy, &has_copy, err);
            /* can_append said yes and the table capacity covers max_len */
            assert(st == PL_STATUS_OK);
            (void)st;
            if (has_copy)
                plan->copies[plan->n_copies++] = copy;
        }
        add_entry(s, plan, q, 1, true);
        (*budget)--;
    }
    return true;
}

static int chunk_for(const struct pl_scheduler *s, const struct pl_seq *q, int budget)
{
    int left = q->n_tokens - q->n_computed;
    if (!s->p.enable_chunked_prefill)
        return left <= budget ? left : 0;
    int c = left < budget ? left : budget;
    if (s->p.long_prefill_token_threshold > 0 && c > s->p.long_prefill_token_threshold)
        c = s->p.long_prefill_token_threshold;
    return c;
}

static void schedule_prefills(struct pl_scheduler *s, struct pl_seq_group *g,
                              struct pl_sched_plan *plan, int *budget)
{
    for (int i = 0; i < g->n_seqs && *budget > 0; i++) {
        struct pl_seq *q = &g->seqs[i];
        if (q->status != PL_SEQ_RUNNING || q->n_tokens - q->n_computed < 2)
            continue;
        int c = chunk_for(s, q, *budget);
        if (c < 1)
            continue;
        add_entry(s, plan, q, c, false);
        *budget -= c;
    }
}

/* Allocates blocks for every unfinished sequence of g, all or nothing. */
static bool admit(struct pl_scheduler *s, struct pl_seq_group *g)
{
    for (int i = 0; i < g->n_seqs; i++) {
        struct pl_seq *q = &g->seqs[i];
        if (pl_seq_is_finished(q))
            continue;
        int n_cached = 0;
        if (pl_block_manager_allocate(s->bm, &q->table, q->tokens, q->n_tokens, &n_cached,
                                      NULL) != PL_STATUS_OK) {
            for (int j = 0; j < i; j++)
                release_seq_blocks(s, &g->seqs[j]);
            return false;
        }
        q->n_computed = n_cached;
    }
    for (int i = 0; i < g->n_seqs; i++) {
        struct pl_seq *q = &g->seqs[i];
        if (pl_seq_is_finished(q))
            continue;
        if (g->n_preemptions == 0 && i == 0)
            g->n_cached_tokens = q->n_computed;
        pl_seq_set_status(q, PL_SEQ_RUNNING);
    }
    unlink_group(s, g);
    list_push_back(&s->running, g, PL_SEQ_GROUP_IN_RUNNING);
    s->n_reserved += g->n_seqs_cap;
    return true;
}

pl_status pl_scheduler_schedule(struct pl_scheduler *s, struct pl_sched_plan *plan,
                                struct pl_err *err)
{
    memset(plan, 0, sizeof(*plan));
    plan->step = ++s->n_steps;
    plan->seqs = s->plan_seqs;
    plan->copies = s->plan_copies;
    plan->preempted = s->plan_preempted;
    if (s->n_abort_pending > 0)
        release_aborted(s, plan);

    int budget = s->p.max_num_batched_tokens;
    /* 1. decodes, oldest group first; victims come off the tail, after g */
    for (struct pl_seq_group *g = s->running.head; g;) {
        if (!schedule_decodes(s, g, plan, &budget, err))
            break; /* g preempted itself, so it was the tail: nothing follows */
        g = g->next;
    }
    /* 2. running sequences part-way through their prompt */
    for (struct pl_seq_group *g = s->running.head; g && budget > 0; g = g->next)
        schedule_prefills(s, g, plan, &budget);
    /*
     * 3. admissions in order; the first group that does not fit stops them. After a
     * preemption nothing is admitted while something still runs: the victims would
     * otherwise be re-admitted at once and preempted again next step (thrashing).
     */
    bool may_admit = plan->n_preempted == 0 || s->running.n == 0;
    while (may_admit && s->waiting.head && budget > 0) {
        struct pl_seq_group *g = s->waiting.head;
        if (s->n_reserved + g->n_seqs_cap > s->p.max_num_seqs)
            break;
        if (!s->p.enable_chunked_prefill) {
            /* the group's first sequence must run whole this step */
            int need = 0;
            for (int i = 0; i < g->n_seqs && !need; i++)
                if (!pl_seq_is_finished(&g->seqs[i]))
                    need = g->seqs[i].n_tokens;
            if (need > budget)
                break;
        }
        if (!admit(s, g))
            break;
        for (int i = 0; i < g->n_seqs && budget > 0; i++) {
            struct pl_seq *q = &g->seqs[i];
            if (q->status != PL_SEQ_RUNNING)
                continue;
            int c = chunk_for(s, q, budget);
            if (c < 1)
                continue;
            add_entry(s, plan, q, c, false);
            budget -= c;
        }
    }
    assert(plan->n_tokens <= s->p.max_num_batched_tokens);
    DEBUG_CHECK(s);
    return PL_STATUS_OK;
}

/* ---- after the step ---- */

static void append_token(struct pl_scheduler *s, struct pl_seq *q, int32_t tok, bool is_stop)
{
    assert(q->n_tokens < q->max_len);
    q->tokens[q->n_tokens++] = tok;
    s->n_generation_tokens++;
    if (is_stop)
        pl_scheduler_finish_seq(s, q, PL_SEQ_FINISHED_STOPPED);
    else if (pl_seq_num_outputs(q) >= q->group->max_tokens)
        pl_scheduler_finish_seq(s, q, PL_SEQ_FINISHED_LENGTH);
}

pl_status pl_scheduler_update(struct pl_scheduler *s, const struct pl_sched_plan *plan,
                              const int32_t *sampled, const bool *stop, struct pl_err *err)
{
    int row = 0;
    for (int k = 0; k < plan->n_seqs; k++) {
        const struct pl_sched_seq *e = &plan->seqs[k];
        struct pl_seq *q = e->seq;
        int r0 = row;
        row += e->n_samples;
        if (q->status != PL_SEQ_RUNNING)
            continue;
        if (q->n_computed != e->start_pos || e->start_pos + e->n_new > q->table.n_slots)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "sequence %lld: plan entry (start %d, %d tokens) does not match "
                              "its progress (%d computed, %d slots)",
                              (long long)q->seq_id, e->start_pos, e->n_new, q->n_computed,
                              q->table.n_slots);
        q->n_computed += e->n_new;
        if (!e->is_decode)
            s->n_prompt_tokens += (uint64_t)e->n_new;
        pl_block_manager_commit(s->bm, &q->table, q->tokens, q->n_computed);
        if (e->n_samples == 0)
            continue;
        /* children fork from the parent before it appends, so each starts from the prompt */
        for (int j = 1; j < e->n_samples; j++) {
            struct pl_seq *child;
            pl_status st = pl_scheduler_fork(s, q, &child, err);
            if (st != PL_STATUS_OK)
                return st;
            append_token(s, child, sampled[r0 + j], stop && stop[r0 + j]);
        }
        append_token(s, q, sampled[r0], stop && stop[r0]);
    }
    if (row != plan->n_samples)
        return pl_err_set(err, PL_STATUS_INTERNAL, "plan has %d sample rows, entries name %d",
                          plan->n_samples, row);
    DEBUG_CHECK(s);
    return PL_STATUS_OK;
}

pl_status pl_scheduler_fork(struct pl_scheduler *s, struct pl_seq *parent, struct pl_seq **child,
                            struct pl_err *err)
{
    if (parent->status != PL_SEQ_RUNNING)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "sequence %lld is %s, not running",
                          (long long)parent->seq_id, pl_seq_status_str(parent->status));
    struct pl_seq_group *g = parent->group;
    pl_status st = pl_seq_group_add_fork(g, parent, s->next_seq_id, child, err);
    if (st != PL_STATUS_OK)
        return st;
    s->next_seq_id++;
    pl_block_manager_fork(s->bm, &parent->table, &(*child)->table);
    return PL_STATUS_OK;
}

struct pl_seq_group *pl_scheduler_pop_finished(struct pl_scheduler *s)
{
    struct pl_seq_group *g = s->finished.head;
    if (g)
        list_remove(&s->finished, g);
    return g;
}

bool pl_scheduler_has_unfinished(const struct pl_scheduler *s)
{
    return s->waiting.n > 0 || s->running.n > 0;
}

/* Collects the tables of RUNNING sequences into s->tables; returns their count. */
static int running_tables(const struct pl_scheduler *s)
{
    int n = 0;
    for (const struct pl_seq_group *g = s->running.head; g; g = g->next)
        for (int i = 0; i < g->n_seqs; i++)
            if (g->seqs[i].status == PL_SEQ_RUNNING && n < s->p.max_num_seqs)
                s->tables[n++] = &g->seqs[i].table;
    return n;
}

void pl_scheduler_get_stats(const struct pl_scheduler *s, struct pl_scheduler_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->n_waiting_groups = s->waiting.n;
    out->n_running_groups = s->running.n;
    out->n_running_seqs = running_tables(s);
    out->n_steps = s->n_steps;
    out->n_preemptions = s->n_preemptions;
    out->n_prompt_tokens = s->n_prompt_tokens;
    out->n_generation_tokens = s->n_generation_tokens;
    out->kv_waste = pl_block_manager_kv_waste(s->bm, s->tables, out->n_running_seqs);
    pl_block_manager_get_stats(s->bm, &out->blocks);
}

#define FAIL(...) return pl_err_set(err, PL_STATUS_INTERNAL, "scheduler invariant: " __VA_ARGS__)

static pl_status check_list(const struct group_list *l, enum pl_seq_group_queue q,
                            struct pl_err *err)
{
    int n = 0;
    const struct pl_seq_group *prev = NULL;
    for (const struct pl_seq_group *g = l->head; g; g = g->next) {
        if (g->queue != q)
            FAIL("request %llu is on list %d but says %d", (unsigned long long)g->request_id, q,
                 g->queue);
        if (g->prev != prev)
            FAIL("broken back link at request %llu", (unsigned long long)g->request_id);
        prev = g;
        n++;
    }
    if (prev != l->tail || n != l->n)
        FAIL("list %d holds %d groups, counter %d", q, n, l->n);
    return PL_STATUS_OK;
}

pl_status pl_scheduler_check(const struct pl_scheduler *s, struct pl_err *err)
{
    if (check_list(&s->waiting, PL_SEQ_GROUP_IN_WAITING, err) ||
        check_list(&s->running, PL_SEQ_GROUP_IN_RUNNING, err) ||
        check_list(&s->finished, PL_SEQ_GROUP_IN_FINISHED, err))
        return PL_STATUS_INTERNAL;
    int reserved = 0, n_running = 0;
    for (const struct pl_seq_group *g = s->running.head; g; g = g->next) {
        reserved += g->n_seqs_cap;
        for (int i = 0; i < g->n_seqs; i++) {
            const struct pl_seq *q = &g->seqs[i];
            if (q->status == PL_SEQ_RUNNING) {
                n_running++;
                if (q->table.n_slots < q->n_computed || q->table.n_slots > q->n_tokens ||
                    q->n_computed >= q->n_tokens)
                    FAIL("sequence %lld: %d computed, %d slots, %d tokens", (long long)q->seq_id,
                         q->n_computed, q->table.n_slots, q->n_tokens);
            } else if (!pl_seq_is_finished(q)) {
                FAIL("sequence %lld of a running group is %s", (long long)q->seq_id,
                     pl_seq_status_str(q->status));
            } else if (q->table.n_blocks != 0) {
                FAIL("finished sequence %lld holds %d blocks", (long long)q->seq_id,
                     q->table.n_blocks);
            }
        }
        if (pl_seq_group_is_finished(g))
            FAIL("finished request %llu is still running", (unsigned long long)g->request_id);
    }
    if (reserved != s->n_reserved || reserved > s->p.max_num_seqs)
        FAIL("running groups reserve %d sequences, counter %d, cap %d", reserved, s->n_reserved,
             s->p.max_num_seqs);
    for (const struct pl_seq_group *g = s->waiting.head; g; g = g->next) {
        for (int i = 0; i < g->n_seqs; i++) {
            const struct pl_seq *q = &g->seqs[i];
            if (q->status == PL_SEQ_RUNNING || q->table.n_blocks != 0 || q->n_computed != 0)
                FAIL("waiting sequence %lld is %s with %d blocks", (long long)q->seq_id,
                     pl_seq_status_str(q->status), q->table.n_blocks);
        }
    }
    for (const struct pl_seq_group *g = s->finished.head; g; g = g->next)
        for (int i = 0; i < g->n_seqs; i++)
            if (!pl_seq_is_finished(&g->seqs[i]) || g->seqs[i].table.n_blocks != 0)
                FAIL("sequence %lld of finished request %llu is %s with %d blocks",
                     (long long)g->seqs[i].seq_id, (unsigned long long)g->request_id,
                     pl_seq_status_str(g->seqs[i].status), g->seqs[i].table.n_blocks);
    int n = running_tables(s);
    if (n != n_running)
        FAIL("%d running sequences exceed max_num_seqs %d", n_running, s->p.max_num_seqs);
    return pl_block_manager_check(s->bm, s->tables, n, err);
}
