/*
 * async_engine.h -- the engine thread and the thread-safe queues between it and servers.
 *
 * Owns: one thread that owns an engine (any struct pl_engine_ops implementation:
 * the real pl_llm adapter in production, fakes in tests), an inbox of commands
 * (add, abort) that any thread may post, and one outbox per request that the
 * engine thread fills with deltas. Nothing outside the engine thread ever calls
 * the engine; other threads see it only through request handles, counters and
 * the heartbeat.
 *
 * The loop (engine thread):
 *
 *     lock; wait on the condition variable while the inbox is empty and the
 *     engine has no unfinished work; take the inbox; unlock
 *     apply adds and aborts -> ops.step -> ops.poll -> route each delta to its
 *     request's outbox -> hand the routed requests to the notifier thread, which
 *     calls their notify while the engine thread goes on -> heartbeat = (now, ++steps)
 *
 * Request handle life cycle: pl_async_engine_submit returns a handle with two
 * references, the caller's and the engine's. The engine drops its reference
 * after routing the request's finished delta (or its refusal); the caller
 * drops its own with pl_async_request_release, after which notify is never
 * called again. pl_async_request_abort may be called any time before release
 * (a client went away): the engine aborts the request at its next iteration,
 * which frees its KV blocks, and the request still ends with a finished delta.
 *
 * Faults: the deltas of a step's ends are routed right after that step (a
 * request's end is never held until another request arrives); a failed step
 * ends only the requests the engine failed, with an error delta; a failed poll
 * is retried without waiting for new work.
 *
 * Invariants: every submitted request gets exactly one finished delta;
 * notify runs on the notifier thread (the engine thread when that thread could
 * not start or memory ran out) with the request's lock held, after the delta it
 * announces is in the outbox, so it must only signal (e.g. resume an HTTP
 * connection) and never call back into this module; a wake-up may come late or
 * cover several deltas, never before its delta; deltas of one request arrive in
 * engine order; every notify is delivered before the engine thread exits.
 * Why a notifier: waking an HTTP connection costs a syscall and a thread
 * wake-up per request per step, which the device would otherwise wait for
 * between steps (PAGELLM_PROFILE=1 logs that gap when the thread exits).
 *
 * Liveness (GET /health): the engine thread stamps a heartbeat (monotonic
 * time, step counter) after every iteration. pl_async_engine_is_healthy is
 * false when work is pending and the heartbeat is older than the stall
 * timeout, or the thread has stopped. Test hook: when the environment names a
 * file in PAGELLM_TEST_STALL_FILE, the loop sleeps while that file exists
 * (without stamping the heartbeat), which is how tests stall it.
 */
#ifndef PL_ENGINE_ASYNC_ENGINE_H
#define PL_ENGINE_ASYNC_ENGINE_H

#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Logprobs at one position (the sampled token plus the n_top most likely ones). */
struct pl_async_logprob {
    int32_t token_id;
    float logprob;
    int rank;                            /* >= 1 */
    int n_top;                           /* entries in top_* (-1: none, e.g. first prompt token) */
    int32_t top_ids[PL_MAX_LOGPROBS];    /* [n_top], descending logprob */
    float top_logprobs[PL_MAX_LOGPROBS]; /* [n_top] */
};

enum pl_async_finish {
    PL_ASYNC_FINISH_NONE = 0, /* still running */
    PL_ASYNC_FINISH_STOP,     /* eos, stop token or stop string */
    PL_ASYNC_FINISH_LENGTH,   /* max_tokens or the context length */
    PL_ASYNC_FINISH_ABORT,    /* aborted (client gone, shutdown) */
    PL_ASYNC_FINISH_ERROR     /* the engine refused or failed the request: see error_msg */
};

/* "stop", "length", "abort", "error"; NULL for NONE. */
const char *pl_async_finish_str(enum pl_async_finish f);

/* What one sample of a request produced since its previous delta. */
struct pl_async_sample {
    int index;                         /* sample 0..n-1 */
    char *text;                        /* [text_len] + NUL: new text (malloc'ed, may be NULL) */
    size_t text_len;
    int32_t *token_ids;                /* [n_token_ids] new tokens (malloc'ed) */
    int n_token_ids;
    struct pl_async_logprob *logprobs; /* [n_token_ids] when logprobs were asked, else NULL */
    enum pl_async_finish finish;
    char *stop_str;                    /* the stop string that matched, or NULL */
    int32_t stop_token_id;             /* the stop token that matched, or -1 */
};

/* One delta of one request. */
struct pl_async_output {
    uint64_t request_id;
    int n_prompt_tokens;       /* prompt length (every delta) */
    int num_cached_tokens;     /* prompt tokens served by the prefix cache (first delta) */
    struct pl_async_logprob *prompt_logprobs; /* [n_prompt_tokens] in the first delta when
                                  prompt_logprobs was asked, else NULL; n_top -1 = None */
    struct pl_async_sample *samples; /* [n_samples]: samples with news */
    int n_samples;
    bool finished;             /* the request's last delta */
    enum pl_async_finish finish; /* on the last delta: how the request ended, stamped by the
                                  async engine -- the first sample finish any of its deltas
                                  carried (the last delta may carry none), ERROR when
                                  error_msg is set; NONE on other deltas */
    char *error_msg;           /* set when the engine refused or failed the request */
    pl_status error_status;    /* its status (PL_STATUS_OK otherwise) */
    float *embedding;          /* pooling requests: the pooled vector in the finished delta
                                  (malloc'ed, [n_embedding]); NULL otherwise or when aborted */
    int n_embedding;
    /* stamped by the async engine (monotonic seconds) */
    double t_arrival;          /* submit() */
    double t_first_token;      /* when the first token was routed (0: none yet) */
    double t_prev_token;       /* when the previous delta with tokens was routed (0: none) */
    double t_step_start;       /* start of the engine step that produced this delta */
    double t_now;              /* when this delta was routed */
    bool is_first;             /* the request's first routed delta */
};

void pl_async_output_free(struct pl_async_output *o); /* NULL is a no-op */

/* Engine counters sampled after each step (vLLM's scheduler stats). */
struct pl_engine_stats {
    int num_running;
    int num_waiting;
    int kv_blocks_total;
    int kv_blocks_used;
    uint64_t num_preemptions;   /* since start */
    uint64_t num_steps;
};

/*
 * What the engine thread drives. Every function is called on the engine
 * thread only. poll hands over a malloc'ed array of malloc'ed outputs (*outs, each
 * element's contents; the async engine frees them).
 * Faults: a step that fails should have finished the requests the failure
 * touched with an error (a delta with error_msg at the next poll) and only
 * those; when a failed step ends no request, the async engine fails every
 * request it holds, with the step's error. An engine whose has_unfinished is
 * false after a successful poll must have delivered every request's last
 * delta; requests it did not are ended with an error ("lost").
 */
struct pl_engine_ops {
    pl_status (*add_request)(void *engine, uint64_t request_id, const int32_t *prompt_ids,
                             int n_prompt, const struct pl_sampling_params *params,
                             struct pl_err *err);
    pl_status (*step)(void *engine, struct pl_err *err);
    bool (*has_unfinished)(void *engine);
    pl_status (*poll)(void *engine, struct pl_async_output ***outs, int *n_outs,
                      struct pl_err *err);
    void (*abort_request)(void *engine, uint64_t request_id);
    void (*get_stats)(void *engine, struct pl_engine_stats *out);
    /* Optional (NULL: pooling requests are refused): queues a pooling request
     * (pagellm.h's struct pl_pooling_params); its finished delta carries the embedding. */
    pl_status (*add_pooling_request)(void *engine, uint64_t request_id, const int32_t *prompt_ids,
                                     int n_prompt, const struct pl_pooling_params *params,
                                     struct pl_err *err);
};

struct pl_async_engine;
struct pl_async_request;

/* Called on the engine thread, with the request's lock held, after a delta was queued. */
typedef void (*pl_async_notify_fn)(void *user);

/* Called on the engine thread for every routed delta before it is queued (metrics). */
typedef void (*pl_async_observe_fn)(void *user, const struct pl_async_output *o);

struct pl_async_engine_params {
    int max_pending;            /* unfinished requests admitted at once; more: PL_STATUS_LIMIT */
    double stall_timeout_s;     /* heartbeat age that makes /health fail while work is pending */
    pl_async_observe_fn observe; /* may be NULL */
    void *observe_user;
};

void pl_async_engine_params_default(struct pl_async_engine_params *p);

/* Starts the engine thread over (ops, engine); both stay borrowed until _free. */
pl_status pl_async_engine_new(const struct pl_engine_ops *ops, void *engine,
                              const struct pl_async_engine_params *params,
                              struct pl_async_engine **out, struct pl_err *err);

/* Stops the thread (requests still running are aborted first) and frees. NULL is a no-op. */
void pl_async_engine_free(struct pl_async_engine *ae);

/*
 * Queues a request (prompt ids and params are copied). On success *out is a
 * handle the caller must release. PL_STATUS_LIMIT when max_pending requests
 * are unfinished (admission control: the server answers 503), PL_STATUS_ABORTED
 * while shutting down.
 */
pl_status pl_async_engine_submit(struct pl_async_engine *ae, const int32_t *prompt_ids,
                                 int n_prompt, const struct pl_sampling_params *params,
                                 pl_async_notify_fn notify, void *notify_user,
                                 struct pl_async_request **out, struct pl_err *err);

/*
 * Queues a pooling request (embeddings; see pagellm.h), otherwise exactly as
 * pl_async_engine_submit: the same admission control, handle and deltas; its
 * finished delta carries the embedding (or error_msg when the engine refused it,
 * e.g. an engine without add_pooling_request).
 */
pl_status pl_async_engine_submit_pooling(struct pl_async_engine *ae, const int32_t *prompt_ids,
                                         int n_prompt, const struct pl_pooling_params *params,
                                         pl_async_notify_fn notify, void *notify_user,
                                         struct pl_async_request **out, struct pl_err *err);
/* One request of pl_async_engine_submit_all (everything is copied). */
struct pl_async_submission {
    const int32_t *prompt_ids;
    int n_prompt;
    const struct pl_sampling_params *params;
    const struct pl_pooling_params *pooling; /* non-NULL: a pooling request (params unused) */
};

/*
 * Queues n requests all or nothing (one HTTP request with several prompts):
 * they are admitted together, under one lock, or none is, so a big request
 * neither half-runs nor refuses others while it is being queued. out[n]
 * receives the handles (all NULL on failure). PL_STATUS_INVALID_ARGUMENT when n
 * (> 1) exceeds max_pending (it could never be admitted: the server answers
 * 400), PL_STATUS_LIMIT when the n do not fit beside the unfinished ones (503),
 * PL_STATUS_ABORTED while shutting down.
 */
pl_status pl_async_engine_submit_all(struct pl_async_engine *ae,
                                     const struct pl_async_submission *subs, int n,
                                     pl_async_notify_fn notify, void *notify_user,
                                     struct pl_async_request **out, struct pl_err *err);

/* Asks the engine to abort every unfinished request (shutdown past its grace period). */
void pl_async_engine_abort_all(struct pl_async_engine *ae);

/* Unfinished requests (submitted, finished delta not yet routed). */
int pl_async_engine_num_unfinished(struct pl_async_engine *ae);

/* Latest engine stats (copied after each step). */
void pl_async_engine_stats(struct pl_async_engine *ae, struct pl_engine_stats *out);

/* See the header comment. age_s (may be NULL) receives the heartbeat's age. */
bool pl_async_engine_is_healthy(struct pl_async_engine *ae, double *age_s);

uint64_t pl_async_request_id(const struct pl_async_request *r);

/* Takes the next delta, or NULL when none is queued. The caller frees it. */
struct pl_async_output *pl_async_request_pop(struct pl_async_request *r);

/* True once the finished delta has been routed (it may still be queued). */
bool pl_async_request_is_finished(struct pl_async_request *r);

/* Asks the engine to abort the request (idempotent; no-op once finished). */
void pl_async_request_abort(struct pl_async_request *r);

/* Drops the caller's reference; notify is never called after this returns. */
void pl_async_request_release(struct pl_async_request *r);

/* Monotonic seconds (CLOCK_MONOTONIC). */
double pl_async_now(void);

#endif
