/*
 * engine.h -- the engine loop: add_request / step / abort / outputs.
 *
 * Owns: struct pl_engine, the only engine loop (docs/architecture.md, "One engine step"). It
 * holds the scheduler (and through it the block manager), the batch builder,
 * the sampler, every request's per-sequence state (generator, logprobs,
 * incremental detokenizer, text and its stop-string cursor) and the step
 * buffers, all sized at creation. The model and the detokenizer sit behind
 * small interfaces (struct pl_engine_model, struct pl_engine_detok) so tests
 * plug in deterministic fakes and production plugs in pl_model_runner and
 * pl_detok.
 *
 * One step (pl_engine_step), vLLM's order:
 *   schedule -> build batch -> copy-on-write copies -> run -> sample (rows in
 *   plan order, per-row params and state) -> stop tokens -> scheduler update
 *   -> detokenize incrementally, stop strings (pl_scheduler_finish_seq) ->
 *   finished groups collected -> outputs ready for pl_engine_poll.
 * "run -> sample" is one call to model.run_sample when the model has it and
 * every row of the step is basic (pl_sampler_row_is_basic) and no request of
 * the step wants prompt logprobs: the engine draws the rows' uniforms and the
 * model samples where the logits live. Otherwise the whole step takes the
 * host path: model.run returns logits and the host sampler samples. Both
 * paths consume the same draws, so seeded requests give the same tokens
 * either way (up to float rounding on a GPU).
 *
 * Threading: one thread owns an engine; nothing here locks.
 *
 * Allocation: the plan, batch, sampler rows, sampled ids and logits buffer are
 * sized at creation, so a steady-state step allocates only for output data
 * that grows with the request (detokenized text, logprob arrays, doubling).
 * The logits buffer grows once when prompt_logprobs asks for more rows.
 *
 * Sampling with n > 1 and a seed: sample k draws from its own generator
 * seeded with seed + k (vLLM's parallel sampling gives child k seed + k), so
 * sample 0 of an n > 1 request equals the n = 1 request with the same seed.
 * Seeded rows touch no other generator, so their tokens do not depend on the
 * batch. Unseeded rows draw from the engine generator (engine seed).
 *
 * prompt_logprobs: the batch asks for logits at every prompt position the
 * step computes (after the sampling rows). Such requests get a private
 * prefix-cache salt so that no prompt position is skipped by a cache hit
 * (vLLM skips cache reads for them); positions already reported are not
 * reported again after a preemption recomputes them.
 *
 * Pooling requests (struct pl_engine_request.pooling, vLLM's embed task): a
 * prefill-only request. It is scheduled like a generation request of one
 * greedy output token, so it shares steps, chunked prefill, preemption and
 * the KV pool with everything else; the steps that compute its prompt
 * positions also ask the model for those rows' final hidden states (struct
 * pl_batch's hidden_rows: every position for MEAN, the last for LAST), which
 * are accumulated in double on the host. The one sampled token only ends the
 * request: it is never detokenized, counted or reported. The finished output
 * carries the pooled (and, if asked, L2-normalized) vector. MEAN requests get
 * a private prefix-cache salt (a cache hit would skip positions whose hidden
 * states are needed) and, like prompt logprobs, count positions recomputed
 * after a preemption once. The hidden-state buffer ([max_num_batched_tokens,
 * hidden_size] fp32) is allocated when the first pooling request is added.
 * Faults: no error while handling one request's output ends another request.
 * A failure that concerns one request (its detokenizer, memory for its
 * logprobs or text, its prompt_logprobs rows) fails that request alone: its
 * sequences leave the scheduler (blocks freed) and its unfinished samples end
 * with PL_FINISH_ERROR, the request output carrying error and error_status. A
 * failure of the step itself (batch building, the model run, the sampler, the
 * scheduler update) fails exactly the requests that step ran, the same way;
 * waiting requests are untouched and the next step runs as usual (if the
 * backend is broken for good, every request fails in turn: none hangs). A
 * sampled id with no token (a vocab padded past the tokenizer) is no failure:
 * it decodes to "" (tokenizer.h).
 *
 * Invariants: every live request is on the engine's list exactly once, from
 * pl_engine_add until the poll that reports it finished; its group is owned
 * by the scheduler until finished, then by the engine until reported.
 */
#ifndef PL_ENGINE_ENGINE_H
#define PL_ENGINE_ENGINE_H

#include "engine/batch.h"
#include "engine/block_manager.h"
#include "core/sampler.h"
#include "engine/scheduler.h"
#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The model behind the engine (production: pl_model_runner; tests: fakes). */
struct pl_engine_model {
    void *ctx;
    int vocab_size;
    int max_logits_rows;   /* most logits rows one run returns (0: no limit) */
    /* Runs b; logits: [b->n_logits][vocab_size] fp32, rows in logits_rows order. */
    pl_status (*run)(void *ctx, const struct pl_batch *b, float *logits, struct pl_err *err);
    /* Copies the KV of whole blocks (all layers, K and V), pairs in order. */
    pl_status (*copy_blocks)(void *ctx, const struct pl_block_copy *copies, int n,
                             struct pl_err *err);
    /* Optional (NULL: run + host sampler). Runs b and samples where the logits
     * live: sampler row i reads logits row row_src[i] (nondecreasing, <
     * b->n_logits) with rows[i] and the uniform uniforms[i] drawn by the
     * engine (pl_sampler_draw); results: [n_rows]. The engine calls it only
     * for steps whose rows are all basic (pl_sampler_row_is_basic) and that
     * need no prompt logprobs; its tokens equal the host sampler's up to float
     * rounding. */
    pl_status (*run_sample)(void *ctx, const struct pl_batch *b, const int32_t *row_src,
                            int n_rows, const struct pl_sampler_row *rows,
                            const double *uniforms, struct pl_sample_result *results,
                            struct pl_err *err);
    /* Width of the final hidden states run / run_sample write for b->hidden_rows
     * (struct pl_batch); 0: the model returns none (pooling requests are refused). */
    int hidden_size;
};

/*
 * Incremental detokenizer (production: pl_detok over a pl_tokenizer). NULL
 * ops in the engine params: outputs carry token ids and empty text, and stop
 * strings never match.
 */
struct pl_engine_detok {
    void *ctx;
    /* Creates per-sequence state with the prompt as context. */
    pl_status (*init)(void *ctx, const int32_t *prompt, int n_prompt, bool skip_special_tokens,
                      void **state, struct pl_err *err);
    /* Appends the text that token id makes final to *text (realloc'ed, *len updated). */
    pl_status (*push)(void *state, int32_t id, char **text, size_t *len, struct pl_err *err);
    /* Appends what is left at the end of the sequence. */
    pl_status (*flush)(void *state, char **text, size_t *len, struct pl_err *err);
    void (*fini)(void *state);
};

struct pl_engine_params {
    struct pl_scheduler_params sched; /* n_blocks, block_size, budgets, max_model_len, caching */
    uint64_t seed;                    /* engine generator (unseeded requests) */
    const int32_t *eos_ids;           /* [n_eos] eos_ids[0] the primary one (copied) */
    int n_eos;
};

void pl_engine_params_default(struct pl_engine_params *p);

/* A request to add. Everything is copied. */
struct pl_engine_request {
    uint64_t request_id;        /* unique among unfinished requests */
    const char *name;           /* the caller's request id string (NULL: the number) */
    const char *prompt_text;    /* echoed in outputs (may be NULL) */
    const int32_t *prompt;      /* [n_prompt] */
    int n_prompt;
    const struct pl_sampling_params *params; /* validated against the vocabulary */
    const void *cache_salt;     /* extra prefix-cache key (NULL: the shared cache) */
    size_t n_cache_salt;
    const struct pl_pooling_params *pooling; /* non-NULL: a pooling request (params is then
                                                ignored and may be NULL) */
    double arrival_time;        /* pl_clock_seconds() when it arrived (0: now) */
};

struct pl_engine_stats {
    struct pl_scheduler_stats sched;
    double kv_waste_avg;        /* sum over steps of wasted slots / reserved slots */
    uint64_t n_prompt_tokens;   /* prompt tokens of added requests */
    uint64_t n_generation_tokens;
    uint64_t n_requests_added;
    uint64_t n_requests_finished; /* reported finished by poll */
    double seconds;             /* wall time inside pl_engine_step */
    uint64_t n_pooling_requests;       /* pooling requests added */
    uint64_t n_steps_backend_sampling; /* steps sampled by the model (run_sample) */
    uint64_t n_steps_host_sampling;    /* steps sampled on the host from downloaded logits */
};

struct pl_engine;

/*
 * Creates an engine over model (borrowed; must outlive the engine) and detok
 * (nullable, borrowed). PL_STATUS_INVALID_ARGUMENT for bad limits (named).
 */
pl_status pl_engine_new(const struct pl_engine_params *p, const struct pl_engine_model *model,
                        const struct pl_engine_detok *detok, struct pl_engine **out,
                        struct pl_err *err);

/* Frees everything, unfinished and unreported requests included. NULL: no-op. */
void pl_engine_free(struct pl_engine *e);

/*
 * Validates and queues a request. max_tokens -1 (None) becomes max_model_len -
 * prompt length. PL_STATUS_INVALID_ARGUMENT (named field / limit) when the
 * request cannot run: bad params, prompt too long, a duplicate id, too many
 * blocks; PL_STATUS_UNSUPPORTED for beam search.
 */
pl_status pl_engine_add(struct pl_engine *e, const struct pl_engine_request *r,
                        struct pl_err *err);

/* Asks for the abort of an unfinished request (takes effect at the next step). */
pl_status pl_engine_abort(struct pl_engine *e, uint64_t request_id, struct pl_err *err);

/*
 * Finds an unfinished or unreported request by the name it was added with;
 * *finished says whether it already finished. False when there is none.
 */
bool pl_engine_lookup(const struct pl_engine *e, const char *name, uint64_t *request_id,
                      bool *finished);

/*
 * Runs one step. Every request the step ends is collected before it returns,
 * so the poll that follows reports it (its end is never a step late).
 * Failures are isolated (see "Faults" above): a request-level failure fails
 * that request and the step returns PL_STATUS_OK; a step-level failure (batch,
 * model, sampler, scheduler) fails the requests of that step, which the next
 * poll reports finished with error set, and is returned. Either way the engine
 * stays usable and the other requests go on.
 */
pl_status pl_engine_step(struct pl_engine *e, struct pl_err *err);

/* True while a request is waiting or running. */
bool pl_engine_has_unfinished(const struct pl_engine *e);

/* True while some request has news not yet polled (or is unfinished). */
bool pl_engine_has_pending(const struct pl_engine *e);

/*
 * Writes up to cap outputs into items[] (their contents malloc'ed: free each
 * with pl_request_output_fini) and returns how many. delta: every request
 * with news since its last poll, as a delta (see struct pl_request_output).
 * !delta: only finished requests, each complete. A request is forgotten after
 * it was reported finished; the rest wait for the next poll (so do requests
 * whose output could not be copied for lack of memory: nothing is lost).
 * Allocates no array, and never loses a finish: when memory for a finished
 * request's output runs out, its output is built from memory reserved when
 * it was added, with its finish reasons, no new text, and error "out of
 * memory for the request's output" (PL_STATUS_NO_MEMORY).
 */
int pl_engine_poll_into(struct pl_engine *e, bool delta, struct pl_request_output *items,
                        int cap);

/* pl_engine_poll_into appending to *out (items realloc'ed; free with pl_outputs_free).
 * PL_STATUS_NO_MEMORY when the array cannot grow (nothing is lost: retry). */
pl_status pl_engine_poll(struct pl_engine *e, bool delta, struct pl_outputs *out,
                         struct pl_err *err);

void pl_engine_get_stats(const struct pl_engine *e, struct pl_engine_stats *out);

/* The scheduler (tests check invariants through it). */
struct pl_scheduler *pl_engine_scheduler(struct pl_engine *e);

#endif
