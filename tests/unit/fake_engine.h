/*
 * fake_engine.h -- a deterministic stand-in engine for the async engine and
 * server tests (header-only, test-only).
 *
 * Owns: struct fake_engine, implementing struct pl_engine_ops. Sample j of a
 * request emits, at its k-th step, the token prompt[(k + j) % n_prompt] with
 * the text " t<id>", so every test can compute the expected output on its
 * own. A request finishes with "length" after max_tokens tokens, or "stop"
 * when the token is in stop_token_ids; aborts finish with "abort". KV usage
 * is modelled as ceil(tokens / 16) blocks per sample out of 1024, so tests can
 * watch blocks being freed. step_delay_us slows each step (disconnect tests).
 * Pooling requests finish at their first step with the embedding
 * fake_embedding(prompt) (FAKE_EMBED_DIM values) and no tokens.
 * Faults: while fail_steps > 0 a step fails; it ends every unfinished request
 * with an error, as the real engine ends the requests of a failed step, or
 * (fail_silently) ends nothing, leaving the async engine to fail them.
 * split_finish reports a request's last sample finish one poll before its
 * finished delta, which then carries no sample. n_added counts add_request.
 * Deltas are what the real engine's are: the prompt ids in the first, the
 * request's finish_reason and metrics (arrival, token and finish times) set.
 * script: when set, every sample's text is this string instead, script_piece
 * bytes per step (token ids count up from 1), finishing "stop" when it is all
 * out (or "length" at max_tokens). last_* record the sampling params of the
 * latest request added (the server's constraint, skip_special_tokens).
 */
#ifndef PL_TEST_FAKE_ENGINE_H
#define PL_TEST_FAKE_ENGINE_H

#include "engine/async_engine.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAKE_MAX_REQS 4096
#define FAKE_BLOCKS 1024
#define FAKE_EMBED_DIM 4

struct fake_req {
    uint64_t id;
    int32_t *prompt;
    int n_prompt;
    int n, max_tokens, logprobs, prompt_logprobs;
    int32_t stop_ids[8];
    int n_stop_ids;
    int n_out[16];
    size_t script_at[16];
    enum pl_finish_reason finish[16];
    bool aborted;
    bool sent_first;
    bool pooling;
    bool split_sent;                 /* split_finish: the finishes went out, not yet finished */
    enum pl_finish_reason req_finish; /* the first sample finish polled */
    double t_arrival, t_first, t_last;
    struct pl_request_output *pending; /* news since the last poll */
};

struct fake_engine {
    struct fake_req *reqs[FAKE_MAX_REQS];
    int n_reqs;
    unsigned step_delay_us;
    uint64_t steps;
    int max_n;                       /* add_request refuses n above this (error path) */
    int fail_steps;                  /* the next fail_steps steps fail (see above) */
    bool fail_silently;
    bool split_finish;
    atomic_int n_added;
    const char *script;
    int script_piece;
    int last_constraint_kind;
    char last_constraint[4096];
    bool last_skip_special;
};

static int fake_blocks_used(const struct fake_engine *f)
{
    int used = 0;
    for (int i = 0; i < f->n_reqs; i++)
        for (int j = 0; j < f->reqs[i]->n; j++)
            used += (f->reqs[i]->n_prompt + f->reqs[i]->n_out[j] + 15) / 16;
    return used;
}

static pl_status fake_add_params(void *e, uint64_t id, const int32_t *prompt, int n_prompt,
                                 const struct pl_sampling_params *sp, struct pl_err *err)
{
    struct fake_engine *f = e;
    if (f->n_reqs == FAKE_MAX_REQS)
        return pl_err_set(err, PL_STATUS_LIMIT, "fake engine full");
    if (n_prompt < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompt: empty");
    if (sp->n > (f->max_n ? f->max_n : 16))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "n: too large for the fake engine");
    struct fake_req *r = calloc(1, sizeof(*r));
    r->id = id;
    r->prompt = malloc(sizeof(int32_t) * (size_t)n_prompt);
    memcpy(r->prompt, prompt, sizeof(int32_t) * (size_t)n_prompt);
    r->n_prompt = n_prompt;
    r->n = sp->n;
    r->max_tokens = sp->max_tokens > 0 ? sp->max_tokens : 16;
    r->logprobs = sp->logprobs;
    r->prompt_logprobs = sp->prompt_logprobs;
    for (int i = 0; i < sp->n_stop_token_ids && i < 8; i++)
        r->stop_ids[r->n_stop_ids++] = sp->stop_token_ids[i];
    f->reqs[f->n_reqs] = r;
    __atomic_store_n(&f->n_reqs, f->n_reqs + 1, __ATOMIC_SEQ_CST); /* tests poll it */
    f->last_constraint_kind = (int)sp->constraint_kind;
    snprintf(f->last_constraint, sizeof(f->last_constraint), "%s",
             sp->constraint ? sp->constraint : "");
    f->last_skip_special = sp->skip_special_tokens;
    atomic_fetch_add(&f->n_added, 1);
    return PL_STATUS_OK;
}

/* The fake's embedding of a prompt: v[k] = prompt[k % n] + k / 2. */
static void fake_embedding(const int32_t *prompt, int n_prompt, float *v)
{
    for (int k = 0; k < FAKE_EMBED_DIM; k++)
        v[k] = (float)prompt[k % n_prompt] + 0.5f * (float)k;
}

static pl_status fake_add(void *e, const struct pl_engine_request *rq, struct pl_err *err)
{
    struct fake_engine *f = e;
    struct pl_sampling_params pool_sp;
    pl_sampling_params_default(&pool_sp);
    pool_sp.max_tokens = 1;
    pl_status st = fake_add_params(e, rq->request_id, rq->prompt, rq->n_prompt,
                                   rq->pooling ? &pool_sp : rq->params, err);
    if (st == PL_STATUS_OK) {
        f->reqs[f->n_reqs - 1]->pooling = rq->pooling != NULL;
        f->reqs[f->n_reqs - 1]->t_arrival = rq->arrival_time;
    }
    return st;
}

static struct pl_completion_output *fake_sample(struct fake_req *r, int j)
{
    if (!r->pending) {
        r->pending = calloc(1, sizeof(*r->pending));
        r->pending->request_num = r->id;
        r->pending->outputs = calloc((size_t)r->n, sizeof(struct pl_completion_output));
    }
    struct pl_request_output *o = r->pending;
    for (int i = 0; i < o->n_outputs; i++)
        if (o->outputs[i].index == j)
            return &o->outputs[i];
    struct pl_completion_output *s = &o->outputs[o->n_outputs++];
    s->index = j;
    s->stop_token_id = -1;
    return s;
}

static pl_status fake_step(void *e, struct pl_err *err)
{
    struct fake_engine *f = e;
    if (f->step_delay_us)
        usleep(f->step_delay_us);
    f->steps++;
    /* a test may arm it from its own thread */
    const int fail = __atomic_load_n(&f->fail_steps, __ATOMIC_SEQ_CST);
    if (fail > 0) {
        __atomic_store_n(&f->fail_steps, fail - 1, __ATOMIC_SEQ_CST);
        for (int i = 0; i < f->n_reqs && !f->fail_silently; i++) {
            struct fake_req *r = f->reqs[i];
            for (int j = 0; j < r->n; j++) {
                if (r->finish[j] != PL_FINISH_NONE)
                    continue;
                r->finish[j] = fake_sample(r, j)->finish_reason = PL_FINISH_ERROR;
                if (!r->pending->error) {
                    r->pending->error = strdup("device lost (fake)");
                    r->pending->error_status = PL_STATUS_INTERNAL;
                }
            }
        }
        return pl_err_set(err, PL_STATUS_INTERNAL, "device lost (fake)");
    }
    for (int i = 0; i < f->n_reqs; i++) {
        struct fake_req *r = f->reqs[i];
        for (int j = 0; j < r->n; j++) {
            if (r->finish[j] != PL_FINISH_NONE)
                continue;
            struct pl_completion_output *s = fake_sample(r, j);
            if (r->aborted) {
                r->finish[j] = s->finish_reason = PL_FINISH_ABORT;
                continue;
            }
            if (r->pooling) {
                r->finish[j] = s->finish_reason = PL_FINISH_LENGTH;
                r->pending->embedding = malloc(sizeof(float) * FAKE_EMBED_DIM);
                r->pending->n_embedding = FAKE_EMBED_DIM;
                fake_embedding(r->prompt, r->n_prompt, r->pending->embedding);
                continue;
            }
            if (f->script) {
                size_t n = strlen(f->script), at = r->script_at[j];
                size_t k = f->script_piece > 0 ? (size_t)f->script_piece : n;
                if (k > n - at)
                    k = n - at;
                s->token_ids = realloc(s->token_ids, sizeof(int32_t) * (size_t)(s->n_token_ids + 1));
                s->token_ids[s->n_token_ids++] = ++r->n_out[j];
                s->text = realloc(s->text, s->text_len + k + 1);
                memcpy(s->text + s->text_len, f->script + at, k);
                s->text_len += k;
                s->text[s->text_len] = '\0';
                r->script_at[j] = at + k;
                if (r->script_at[j] == n)
                    r->finish[j] = s->finish_reason = PL_FINISH_STOP;
                else if (r->n_out[j] >= r->max_tokens)
                    r->finish[j] = s->finish_reason = PL_FINISH_LENGTH;
                continue;
            }
            int32_t tok = r->prompt[(r->n_out[j] + j) % r->n_prompt];
            r->n_out[j]++;
            s->token_ids = realloc(s->token_ids, sizeof(int32_t) * (size_t)(s->n_token_ids + 1));
            s->token_ids[s->n_token_ids] = tok;
            if (r->logprobs >= 0) {
                s->logprobs = realloc(s->logprobs,
                                      sizeof(struct pl_logprob_entry) * (size_t)(s->n_token_ids + 1));
                struct pl_logprob_entry *lp = &s->logprobs[s->n_token_ids];
                memset(lp, 0, sizeof(*lp));
                lp->token_id = tok;
                lp->logprob = -0.25f;
                lp->rank = 1;
                lp->n_top = r->logprobs;
                for (int k = 0; k < r->logprobs; k++) {
                    lp->top_ids[k] = tok + k;
                    lp->top_logprobs[k] = -0.25f * (float)(k + 1);
                }
            }
            s->n_token_ids++;
            char piece[24];
            int len = snprintf(piece, sizeof(piece), " t%d", (int)tok);
            s->text = realloc(s->text, s->text_len + (size_t)len + 1);
            memcpy(s->text + s->text_len, piece, (size_t)len + 1);
            s->text_len += (size_t)len;
            for (int k = 0; k < r->n_stop_ids; k++)
                if (r->stop_ids[k] == tok) {
                    r->finish[j] = s->finish_reason = PL_FINISH_STOP;
                    s->stop_token_id = tok;
                }
            if (r->finish[j] == PL_FINISH_NONE && r->n_out[j] >= r->max_tokens)
                r->finish[j] = s->finish_reason = PL_FINISH_LENGTH;
        }
    }
    return PL_STATUS_OK;
}

static bool fake_has_unfinished(void *e)
{
    struct fake_engine *f = e;
    return f->n_reqs > 0;
}

/* The request-level fields the real engine fills (engine.c's finish_output). */
static void fake_stamp(struct fake_req *r, struct pl_request_output *o)
{
    double now = pl_async_now();
    int n_tok = 0;
    for (int i = 0; i < o->n_outputs; i++) {
        n_tok += o->outputs[i].n_token_ids;
        if (r->req_finish == PL_FINISH_NONE)
            r->req_finish = o->outputs[i].finish_reason;
    }
    o->metrics.arrival_time = r->t_arrival;
    o->metrics.first_scheduled_time = r->t_arrival;
    o->metrics.prev_token_time = n_tok ? r->t_last : 0;
    if (n_tok)
        r->t_last = now;
    if (n_tok && !r->t_first)
        r->t_first = now;
    o->metrics.first_token_time = r->t_first;
    o->metrics.last_token_time = r->t_last;
    if (o->finished) {
        o->metrics.finished_time = now;
        o->finish_reason = o->error ? PL_FINISH_ERROR
                           : r->req_finish ? r->req_finish : PL_FINISH_ABORT;
    }
}

static int fake_poll(void *e, struct pl_request_output *items, int cap)
{
    struct fake_engine *f = e;
    int n_outs = 0;
    for (int i = 0; i < f->n_reqs && n_outs < cap;) {
        struct fake_req *r = f->reqs[i];
        bool done = true;
        for (int j = 0; j < r->n; j++)
            done &= r->finish[j] != PL_FINISH_NONE;
        if (f->split_finish && done && !r->split_sent) {
            /* the finishes now, the finished delta (empty) at the next poll */
            r->split_sent = true;
            done = false;
        } else if (f->split_finish && done && !r->pending) {
            r->pending = calloc(1, sizeof(*r->pending));
            r->pending->request_num = r->id;
        }
        if (r->pending) {
            r->pending->finished = done;
            if (!r->sent_first && r->prompt_logprobs >= 0) {
                /* position 0 has none (None); position i: the prompt token at -1.0 and
                 * ids token+1.. at -1.5, -2.0, ... */
                struct pl_logprob_entry *pl = calloc((size_t)r->n_prompt, sizeof(*pl));
                for (int k = 0; k < r->n_prompt; k++) {
                    pl[k].token_id = r->prompt[k];
                    pl[k].n_top = k == 0 ? -1 : r->prompt_logprobs;
                    pl[k].logprob = k == 0 ? 0.0f : -1.0f;
                    pl[k].rank = 1;
                    for (int t = 0; t < pl[k].n_top; t++) {
                        pl[k].top_ids[t] = r->prompt[k] + t + 1;
                        pl[k].top_logprobs[t] = -1.5f - 0.5f * (float)t;
                    }
                }
                r->pending->prompt_logprobs = pl;
                r->pending->has_prompt_logprobs = true;
            }
            if (!r->sent_first) {
                r->pending->prompt_token_ids = malloc(sizeof(int32_t) * (size_t)r->n_prompt);
                memcpy(r->pending->prompt_token_ids, r->prompt,
                       sizeof(int32_t) * (size_t)r->n_prompt);
                r->pending->n_prompt_token_ids = r->n_prompt;
            }
            r->sent_first = true;
            fake_stamp(r, r->pending);
            items[n_outs++] = *r->pending;
            free(r->pending);
            r->pending = NULL;
        }
        if (done) {
            free(r->prompt);
            free(r);
            f->reqs[i] = f->reqs[f->n_reqs - 1];
            __atomic_store_n(&f->n_reqs, f->n_reqs - 1, __ATOMIC_SEQ_CST); /* tests poll it */
        } else {
            i++;
        }
    }
    return n_outs;
}

static void fake_abort(void *e, uint64_t id)
{
    struct fake_engine *f = e;
    for (int i = 0; i < f->n_reqs; i++)
        if (f->reqs[i]->id == id)
            f->reqs[i]->aborted = true;
}

static void fake_stats(void *e, struct pl_llm_stats *st)
{
    struct fake_engine *f = e;
    st->num_running = f->n_reqs;
    st->num_waiting = 0;
    st->kv_blocks_total = FAKE_BLOCKS;
    st->kv_blocks_used = fake_blocks_used(f);
    st->num_steps = f->steps;
}

static const struct pl_engine_ops fake_engine_ops = {
    fake_add, fake_step, fake_has_unfinished, fake_poll, fake_abort, fake_stats};

/* The fake's text for sample j of a prompt after n_tokens tokens. */
static inline void fake_expected_text(const int32_t *prompt, int n_prompt, int j, int n_tokens, char *out,
                               size_t cap)
{
    size_t len = 0;
    out[0] = '\0';
    for (int k = 0; k < n_tokens && len < cap; k++)
        len += (size_t)snprintf(out + len, cap - len, " t%d", (int)prompt[(k + j) % n_prompt]);
}

#endif
