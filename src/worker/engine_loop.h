/*
 * engine_loop.h -- the one thread that owns a pl_llm for the worker.
 *
 * Owns: the engine thread, its submission/abort queues, and the routing of
 * each request's deltas to the mailbox (struct pl_wbox) of the job that made
 * it. Job threads never touch the pl_llm's mutable state: they queue requests
 * here and read deltas from their mailbox, so decoding never waits on a slow
 * HTTP post.
 * Invariant: a box is freed only after every request submitted through it
 * has delivered its finished delta (or its submission error); pl_wbox_free
 * aborts and waits for that.
 */
#ifndef PL_WORKER_ENGINE_LOOP_H
#define PL_WORKER_ENGINE_LOOP_H

#include "pagellm.h"

#include <stdbool.h>

struct pl_weng;
struct pl_wbox;

/* Starts the engine thread over llm (borrowed; outlives the thread). NULL on failure. */
struct pl_weng *pl_weng_start(struct pl_llm *llm);
/* Stops and joins the thread. NULL is a no-op. */
void pl_weng_stop(struct pl_weng *e);

struct pl_wbox *pl_wbox_new(struct pl_weng *e);
/* Aborts what is unfinished, waits for it, frees. NULL is a no-op. */
void pl_wbox_free(struct pl_wbox *b);

/*
 * Queues a request. Exactly one of text (tokenized with special tokens) or
 * messages_json (rendered with the chat template, chat_template overriding
 * the model's when non-NULL, then tokenized without special tokens) is set.
 * params are copied.
 */
pl_status pl_wbox_submit(struct pl_wbox *b, const char *request_id, const char *text,
                         const char *messages_json, const char *chat_template,
                         const struct pl_sampling_params *params);

/*
 * Waits for the next event of the box's requests. Returns 1 with *out holding
 * one delta (moved; free with pl_outputs_free on a struct pl_outputs of one
 * item or the helper below), 0 when every submitted request has finished, -1
 * when a request failed (message in errbuf; that request counts as finished).
 */
int pl_wbox_next(struct pl_wbox *b, struct pl_request_output *out, char *errbuf, size_t n);
/* Frees one moved delta. */
void pl_request_output_fini(struct pl_request_output *o);
/* Aborts every unfinished request of the box (their finished deltas still come). */
void pl_wbox_abort(struct pl_wbox *b);

#endif
