/*
 * scheduler.h -- continuous batching: which sequences run in the next step,
 * and with how many tokens.
 *
 * Owns: struct pl_scheduler, its waiting / running / finished queues of
 * sequence groups, the block manager (KV pool bookkeeping), and the per-step
 * plan buffers (allocated at creation; scheduling never allocates).
 *
 * One engine step:
 *
 *   pl_scheduler_schedule  -> plan (entries, CoW copies, preempted groups)
 *   pl_batch_builder_build -> struct pl_batch from the plan
 *   runner: perform plan->copies, run the batch -> plan->n_samples logits rows
 *   sampler: one token per row, rows in plan order (entry by entry)
 *   pl_scheduler_update    -> tokens appended, progress advanced, prefix cache
 *                             updated, length limits applied, n > 1 groups forked
 *   engine: stop strings etc. -> pl_scheduler_finish_seq; outputs;
 *   pl_scheduler_pop_finished -> groups the caller now owns and frees
 *
 * Policy (vLLM's, with chunked prefill):
 *   1. aborted groups are released (their blocks freed);
 *   2. decodes: every running sequence with one token left to compute gets it,
 *      oldest group first. When the pool has no block for one, the most
 *      recently admitted running group is preempted by recompute (blocks freed,
 *      status PREEMPTED, moved to the front of waiting), repeatedly, down to
 *      preempting the group being served itself. Never an error;
 *   3. running sequences part-way through their prompt get the next chunk;
 *   4. unless step 2 preempted (and something still runs), waiting groups
 *      are admitted in order (preempted ones first, they went to
 *      the front) while the token budget, the sequence cap and the pool allow:
 *      all blocks for the group's known tokens are allocated at admission
 *      (prefix-cache hits reused), then their first chunk is scheduled. The
 *      first group that does not fit stops admission (no overtaking).
 * A chunk is min(tokens left, budget left, long_prefill_token_threshold);
 * with chunked prefill off, a prompt runs whole or waits. A sequence samples
 * when its chunk reaches its last known token.
 *
 * Invariants (pl_scheduler_check): a group is on exactly the list its queue
 * field names; sequences of waiting groups are WAITING, PREEMPTED or finished
 * and hold no blocks; RUNNING sequences belong to running groups and hold
 * slots for every computed token; the running groups reserve at most
 * max_num_seqs sequences; the block manager's invariants hold over all
 * RUNNING sequences' tables.
 */
#ifndef PL_ENGINE_SCHEDULER_H
#define PL_ENGINE_SCHEDULER_H

#include "engine/block_manager.h"
#include "engine/sequence.h"
#include "util/err.h"

#include <stdbool.h>
#include <stdint.h>

struct pl_scheduler_params {
    int n_blocks;                    /* KV pool size in blocks (from the model runner) */
    int block_size;                  /* 8, 16 or 32 (default 16) */
    int max_num_batched_tokens;      /* token budget per step (default 2048) */
    int max_num_seqs;                /* sequences per step (default 256) */
    int max_model_len;               /* prompt + generated tokens limit, required */
    bool enable_chunked_prefill;     /* default true */
    int long_prefill_token_threshold; /* max prefill tokens per sequence per step, 0 = no cap */
    bool enable_prefix_caching;      /* default true */
};

void pl_scheduler_params_default(struct pl_scheduler_params *p);

/* One scheduled sequence of a plan. */
struct pl_sched_seq {
    struct pl_seq *seq;
    int start_pos;   /* first position computed this step (= seq->n_computed before the step) */
    int n_new;       /* tokens run: positions start_pos .. start_pos + n_new - 1, >= 1 */
    int n_samples;   /* logits rows wanted after this step: 0 for a chunk short of the end,
                        1 normally, group n for the first sample of an n > 1 group */
    bool is_decode;  /* scheduled as a decode (one token, after the prompt was computed) */
};

/* A step's plan. Valid until the next pl_scheduler_schedule. */
struct pl_sched_plan {
    uint64_t step;                  /* 1 for the first plan */
    struct pl_sched_seq *seqs;      /* [n_seqs]: decodes first, then prefill chunks */
    int n_seqs;
    int n_decodes;                  /* the first n_decodes entries are decodes */
    int n_tokens;                   /* sum of n_new (<= max_num_batched_tokens) */
    int n_samples;                  /* sum of n_samples: logits rows of the batch */
    struct pl_block_copy *copies;   /* [n_copies] copy-on-write pairs, perform before running */
    int n_copies;
    struct pl_seq_group **preempted; /* [n_preempted] groups preempted by this call */
    int n_preempted;
    int n_aborted;                  /* aborted groups released by this call (now finished) */
};

struct pl_scheduler_stats {
    int n_waiting_groups;
    int n_running_groups;
    int n_running_seqs;              /* RUNNING sequences */
    uint64_t n_steps;                /* plans produced */
    uint64_t n_preemptions;          /* group preemptions */
    uint64_t n_prompt_tokens;        /* tokens computed by prefill chunks (prompts and
                                        recomputation after preemption), cache hits excluded */
    uint64_t n_generation_tokens;    /* tokens sampled and appended */
    double kv_waste;                 /* pl_block_manager_kv_waste over running sequences */
    struct pl_block_manager_stats blocks;
};

struct pl_scheduler;

/*
 * Creates a scheduler and its block manager. PL_STATUS_INVALID_ARGUMENT names
 * the bad parameter: non-positive limits, max_num_batched_tokens <
 * max_num_seqs, or (chunked prefill off) max_num_batched_tokens < max_model_len.
 */
pl_status pl_scheduler_new(const struct pl_scheduler_params *p, struct pl_scheduler **out,
                           struct pl_err *err);

/* Frees the scheduler and every group it still holds (waiting, running, finished). */
void pl_scheduler_free(struct pl_scheduler *s);

const struct pl_scheduler_params *pl_scheduler_get_params(const struct pl_scheduler *s);
struct pl_block_manager *pl_scheduler_block_manager(struct pl_scheduler *s);

/*
 * Validates a request and queues it (WAITING, at the back). Refused with
 * PL_STATUS_INVALID_ARGUMENT and a message naming the numbers: an empty
 * prompt, max_tokens < 1, n < 1, n above max_num_seqs, a prompt longer than
 * max_model_len, prompt + max_tokens beyond max_model_len, or a request whose
 * sequences could not fit the whole pool even alone (n_seqs_cap *
 * ceil((prompt + max_tokens) / block_size) blocks: the worst case after a
 * recompute, so a lone request always makes progress). *out (may be NULL)
 * receives the group, owned by the scheduler until popped from the finished
 * list.
 */
pl_status pl_scheduler_add(struct pl_scheduler *s, const struct pl_seq_group_params *p,
                           struct pl_seq_group **out, struct pl_err *err);

/*
 * Requests the abort of a waiting or running request: at the next
 * pl_scheduler_schedule its unfinished sequences become FINISHED_ABORTED, its
 * blocks are freed and it moves to the finished list. PL_STATUS_NOT_FOUND
 * when no waiting or running group has this id.
 */
pl_status pl_scheduler_abort(struct pl_scheduler *s, uint64_t request_id, struct pl_err *err);

/*
 * Plans the next step into *plan (pointers into scheduler-owned buffers, valid
 * until the next call). The plan is empty (n_seqs 0) exactly when no request
 * is waiting or running: the admission checks guarantee that a lone request
 * always fits. Errors only on internal bugs (PL_STATUS_INTERNAL).
 */
pl_status pl_scheduler_schedule(struct pl_scheduler *s, struct pl_sched_plan *plan,
                                struct pl_err *err);

/*
 * Applies a step's results. sampled[plan->n_samples] holds the sampled
 * tokens, rows in plan order; stop (nullable, same shape) marks rows whose
 * token ends its sequence (stop token): that sequence becomes
 * FINISHED_STOPPED after appending it. For every entry: n_computed +=
 * n_new, newly full computed blocks enter the prefix cache; for sampling
 * entries the token is appended (an n > 1 group's first sample forks the
 * sequence into n, row k going to sequence k) and a sequence reaching
 * max_tokens becomes FINISHED_LENGTH. Finished sequences free their blocks;
 * finished groups move to the finished list. Entries whose sequence was
 * finished in between (pl_scheduler_finish_seq) are skipped.
 */
pl_status pl_scheduler_update(struct pl_scheduler *s, const struct pl_sched_plan *plan,
                              const int32_t *sampled, const bool *stop, struct pl_err *err);

/*
 * Finishes a RUNNING, WAITING or PREEMPTED sequence now (status must be a
 * FINISHED_* value; WAITING/PREEMPTED ones only as FINISHED_ABORTED), freeing
 * its blocks; a group left with no unfinished sequence moves to the finished
 * list. Call between update and the next schedule. Finishing an already
 * finished sequence is a no-op.
 */
void pl_scheduler_finish_seq(struct pl_scheduler *s, struct pl_seq *seq,
                             enum pl_seq_status status);

/*
 * Forks a RUNNING sequence (beam search): the child shares all its blocks and
 * tokens. Call between update and the next schedule. PL_STATUS_LIMIT when its
 * group holds n_seqs_cap sequences.
 */
pl_status pl_scheduler_fork(struct pl_scheduler *s, struct pl_seq *parent, struct pl_seq **child,
                            struct pl_err *err);

/* Takes the oldest finished group off the finished list (the caller frees it), or NULL. */
struct pl_seq_group *pl_scheduler_pop_finished(struct pl_scheduler *s);

/* True while some group is waiting or running. */
bool pl_scheduler_has_unfinished(const struct pl_scheduler *s);

void pl_scheduler_get_stats(const struct pl_scheduler *s, struct pl_scheduler_stats *out);

/*
 * Checks the invariants above (and the block manager's). PL_STATUS_INTERNAL on a
 * violation. Debug builds (no NDEBUG) also run it, asserting, after every
 * schedule and update.
 */
pl_status pl_scheduler_check(const struct pl_scheduler *s, struct pl_err *err);

#endif
