/*
 * sequence.h -- requests as sequence groups of sequences, and their states.
 *
 * Owns: struct pl_seq_group (one request: its prompt, limits, and the
 * sequences sampling from it) and struct pl_seq (one token stream with its
 * progress and block table). A group starts with one sequence; a group with
 * n > 1 forks into n sequences when the prompt's first token is sampled, the
 * children sharing the prompt's KV blocks (copy-on-write). Beam search may
 * fork further, up to n_seqs_cap sequences.
 *
 * Sequence states (transitions asserted by pl_seq_set_status):
 *
 *                 admit (blocks allocated)
 *   WAITING ------------------------------> RUNNING ----+----> FINISHED_STOPPED
 *      |                                     |   ^      |      (stop token/string)
 *      |                     preempt: blocks |   | admit +----> FINISHED_LENGTH
 *      |                     freed, KV to be |   |      |      (max_tokens)
 *      |                     recomputed      v   |      |
 *      |                                   PREEMPTED    +----> FINISHED_ABORTED
 *      |                                     |                   ^
 *      +-------------------------------------+-------------------+
 *                       abort
 *
 * WAITING and PREEMPTED sequences sit in the scheduler's waiting queue and
 * hold no blocks; RUNNING ones hold blocks for every token position they have
 * computed or are computing; finished ones hold none. A preempted sequence
 * keeps its tokens (prompt + outputs so far) and recomputes all of them.
 * Invariants: 0 <= n_computed <= n_tokens <= max_len; n_prompt <= n_tokens;
 * tokens[0..n_prompt) is the group's prompt.
 */
#ifndef PL_ENGINE_SEQUENCE_H
#define PL_ENGINE_SEQUENCE_H

#include "engine/block_manager.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pl_seq_status {
    PL_SEQ_WAITING,
    PL_SEQ_RUNNING,
    PL_SEQ_PREEMPTED,
    PL_SEQ_FINISHED_STOPPED,
    PL_SEQ_FINISHED_LENGTH,
    PL_SEQ_FINISHED_ABORTED
};

/* "waiting", "running", ... for logs and messages. */
const char *pl_seq_status_str(enum pl_seq_status s);

static inline bool pl_seq_status_is_finished(enum pl_seq_status s)
{
    return s >= PL_SEQ_FINISHED_STOPPED;
}

struct pl_seq_group;

struct pl_seq {
    int64_t seq_id;             /* unique within the scheduler */
    int index;                  /* position in the group: 0 = the original, then fork order */
    struct pl_seq_group *group; /* back pointer (borrowed) */
    enum pl_seq_status status;
    int32_t *tokens;            /* [max_len] prompt then generated tokens */
    int n_tokens;               /* tokens known (prompt + outputs) */
    int n_prompt;               /* = group's prompt length */
    int max_len;                /* n_prompt + max_tokens: the capacity of tokens */
    int n_computed;             /* leading tokens whose KV is in the pool (0 unless RUNNING) */
    struct pl_block_table table; /* blocks while RUNNING, empty otherwise */
};

static inline int pl_seq_num_outputs(const struct pl_seq *s)
{
    return s->n_tokens - s->n_prompt;
}

static inline bool pl_seq_is_finished(const struct pl_seq *s)
{
    return pl_seq_status_is_finished(s->status);
}

/* What a request asks for; the scheduler validates it against its limits. */
struct pl_seq_group_params {
    uint64_t request_id;        /* the caller's id; unique among live requests */
    const int32_t *prompt;      /* [n_prompt] (copied) */
    int n_prompt;               /* >= 1 */
    int max_tokens;             /* generated tokens at most, >= 1 */
    int n;                      /* parallel samples, >= 1 (default 1) */
    int n_seqs_cap;             /* sequences the group may hold (beam search); 0 = n */
    const void *cache_salt;     /* extra prefix-cache key bytes (NULL = shared cache) */
    size_t n_cache_salt;
    void *user;                 /* the engine's per-request data, untouched here */
};

void pl_seq_group_params_default(struct pl_seq_group_params *p);

/* Which scheduler list a group is on. */
enum pl_seq_group_queue {
    PL_SEQ_GROUP_NONE,
    PL_SEQ_GROUP_IN_WAITING,
    PL_SEQ_GROUP_IN_RUNNING,
    PL_SEQ_GROUP_IN_FINISHED
};

struct pl_seq_group {
    uint64_t request_id;
    uint64_t arrival;           /* admission order into the scheduler (FCFS) */
    int n;                      /* samples requested */
    int max_tokens;
    int n_prompt;
    struct pl_seq *seqs;        /* [n_seqs_cap]; the first n_seqs are live */
    int n_seqs;
    int n_seqs_cap;
    int n_cached_tokens;        /* prefix-cache hit of the first admission (tokens) */
    int n_preemptions;          /* times this group was preempted */
    bool is_abort_requested;    /* set by abort; acted on at the next schedule */
    enum pl_seq_group_queue queue;
    struct pl_seq_group *prev, *next; /* links of the list named by queue */
    void *user;
};

/*
 * Creates a group with one WAITING sequence holding the prompt. Every
 * sequence's tokens and block table are allocated here (n_seqs_cap of them)
 * so forks during a step never allocate. PL_STATUS_INVALID_ARGUMENT for an
 * empty prompt, n < 1, max_tokens < 1 or n_seqs_cap < n.
 */
pl_status pl_seq_group_new(const struct pl_seq_group_params *p, int block_size,
                           struct pl_seq_group **out, struct pl_err *err);

/* Frees the group and its sequences; they must hold no blocks. NULL is a no-op. */
void pl_seq_group_free(struct pl_seq_group *g);

/* True when every live sequence is finished. */
bool pl_seq_group_is_finished(const struct pl_seq_group *g);

/*
 * Moves s to status `to`, asserting the transition is one the diagram allows
 * (a bug otherwise, never outside data).
 */
void pl_seq_set_status(struct pl_seq *s, enum pl_seq_status to);

/*
 * Adds a sequence copying parent's tokens, progress and status (block sharing
 * is the block manager's part: see pl_scheduler_fork). PL_STATUS_LIMIT when
 * the group already holds n_seqs_cap sequences.
 */
pl_status pl_seq_group_add_fork(struct pl_seq_group *g, const struct pl_seq *parent,
                                int64_t seq_id, struct pl_seq **child, struct pl_err *err);

#endif
