/*
 * async_engine.h -- the engine thread and the thread-safe queues between it and its
 * callers (the server, the worker, the library's streams).
 *
 * Owns: one thread that owns an engine (any struct pl_engine_ops implementation:
 * a pl_llm handle's ops in production (engine/llm.c, started by pl_llm_submit or
 * pl_llm_start_async), fakes in tests), an inbox of commands
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
 *     request's outbox and call the request's notify -> heartbeat = (now, ++steps)
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
 * ends only the requests the engine failed, with an error delta. Memory for a
 * request's last delta (the struct and its outbox slot) is reserved at
 * submit, so running out of memory may drop a delta's news but never a
 * request's end.
 *
 * Invariants: every submitted request gets exactly one finished delta;
 * notify runs on the engine thread with the request's lock held, so it must
 * only signal (e.g. resume an HTTP connection) and never call back into this
 * module; deltas of one request arrive in engine order.
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

#include "engine/engine.h"
#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * What the engine thread drives. Every function is called on the engine
 * thread only. The deltas are the engine's own struct pl_request_output
 * (engine.h), routed to their request by request_num and handed to the
 * request's reader unchanged.
 * Faults: a step that fails should have finished the requests the failure
 * touched with an error (a delta with error set at the next poll) and only
 * those; when a failed step ends no request, the async engine fails every
 * request it holds, with the step's error. An engine whose has_unfinished is
 * false after polling everything must have delivered every request's last
 * delta; requests it did not are ended with an error ("lost").
 */
struct pl_engine_ops {
    /* Queues r (r->request_id: the async engine's number; r->pooling non-NULL
     * for a pooling request, which an engine may refuse: PL_STATUS_UNSUPPORTED). */
    pl_status (*add_request)(void *engine, const struct pl_engine_request *r,
                             struct pl_err *err);
    pl_status (*step)(void *engine, struct pl_err *err);
    bool (*has_unfinished)(void *engine);
    /* pl_engine_poll_into's contract: up to cap deltas into items[] (contents
     * malloc'ed, taken over by the async engine), no array allocated, a
     * finished request's last delta never lost. */
    int (*poll)(void *engine, struct pl_request_output *items, int cap);
    void (*abort_request)(void *engine, uint64_t request_id);
    void (*get_stats)(void *engine, struct pl_llm_stats *out);
};

struct pl_async_engine;
struct pl_async_request;

/* Called on the engine thread, with the request's lock held, after a delta was queued. */
typedef void (*pl_async_notify_fn)(void *user);

/* Called on the engine thread for every routed delta before it is queued (metrics). */
typedef void (*pl_async_observe_fn)(void *user, const struct pl_request_output *o);

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
 * finished delta carries the embedding (or error when the engine refused it).
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
    const char *name;        /* request_id of its outputs (NULL: the number in decimal) */
    const char *prompt_text; /* echoed as the first delta's prompt (may be NULL) */
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
void pl_async_engine_stats(struct pl_async_engine *ae, struct pl_llm_stats *out);

/* See the header comment. age_s (may be NULL) receives the heartbeat's age. */
bool pl_async_engine_is_healthy(struct pl_async_engine *ae, double *age_s);

uint64_t pl_async_request_id(const struct pl_async_request *r);

/* Takes the next delta, or NULL when none is queued. The caller frees it
 * (pl_request_output_free). */
struct pl_request_output *pl_async_request_pop(struct pl_async_request *r);

/* pl_async_request_pop, waiting up to timeout_s seconds for a delta (< 0: no
 * limit); NULL when none came or the finished delta was already taken. */
struct pl_request_output *pl_async_request_wait(struct pl_async_request *r, double timeout_s);

/* True once the finished delta has been routed (it may still be queued). */
bool pl_async_request_is_finished(struct pl_async_request *r);

/* Asks the engine to abort the request (idempotent; no-op once finished). */
void pl_async_request_abort(struct pl_async_request *r);

/* Drops the caller's reference; notify is never called after this returns. */
void pl_async_request_release(struct pl_async_request *r);

/* Monotonic seconds (CLOCK_MONOTONIC). */
double pl_async_now(void);

#endif
