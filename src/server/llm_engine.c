/*
 * llm_engine.c -- struct pl_engine_ops over the public pl_llm request interface.
 *
 * Faults: a failed pl_llm_step has already finished the requests it ran with
 * an error (pagellm.h); llm_poll turns that error into the delta's error_msg
 * and error_status, and PL_FINISH_ERROR into PL_ASYNC_FINISH_ERROR, so the
 * clients of exactly those requests see an error, never a normal finish.
 */
#include "server/llm_engine.h"

#include "util/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void id_str(uint64_t id, char buf[24])
{
    snprintf(buf, 24, "%" PRIu64, id);
}

static pl_status llm_add(void *engine, uint64_t request_id, const int32_t *prompt_ids,
                         int n_prompt, const struct pl_sampling_params *params,
                         struct pl_err *err)
{
    struct pl_llm *llm = engine;
    char id[24];
    id_str(request_id, id);
    struct pl_prompt p = {.text = NULL, .token_ids = prompt_ids, .n_token_ids = n_prompt};
    pl_status st = pl_llm_add_request(llm, id, &p, params);
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "%s", pl_llm_errmsg(llm));
    return PL_STATUS_OK;
}

static pl_status llm_add_pooling(void *engine, uint64_t request_id, const int32_t *prompt_ids,
                                 int n_prompt, const struct pl_pooling_params *params,
                                 struct pl_err *err)
{
    struct pl_llm *llm = engine;
    char id[24];
    id_str(request_id, id);
    struct pl_prompt p = {.text = NULL, .token_ids = prompt_ids, .n_token_ids = n_prompt};
    pl_status st = pl_llm_add_pooling_request(llm, id, &p, params);
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "%s", pl_llm_errmsg(llm));
    return PL_STATUS_OK;
}

static pl_status llm_step(void *engine, struct pl_err *err)
{
    struct pl_llm *llm = engine;
    pl_status st = pl_llm_step(llm);
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "%s", pl_llm_errmsg(llm));
    return PL_STATUS_OK;
}

static bool llm_has_unfinished(void *engine)
{
    return pl_llm_has_unfinished(engine);
}

static enum pl_async_finish finish_of(enum pl_finish_reason r)
{
    switch (r) {
    case PL_FINISH_STOP: return PL_ASYNC_FINISH_STOP;
    case PL_FINISH_LENGTH: return PL_ASYNC_FINISH_LENGTH;
    case PL_FINISH_ABORT: return PL_ASYNC_FINISH_ABORT;
    case PL_FINISH_ERROR: return PL_ASYNC_FINISH_ERROR;
    default: return PL_ASYNC_FINISH_NONE;
    }
}

static void copy_logprob(struct pl_async_logprob *dst, const struct pl_logprob_entry *src)
{
    dst->token_id = src->token_id;
    dst->logprob = src->logprob;
    dst->rank = src->rank;
    dst->n_top = src->n_top;
    for (int k = 0; k < src->n_top && k < PL_MAX_LOGPROBS; k++) {
        dst->top_ids[k] = src->top_ids[k];
        dst->top_logprobs[k] = src->top_logprobs[k];
    }
}

/* Moves one request's delta (its pointers are taken and cleared in src). */
static struct pl_async_output *convert(struct pl_request_output *src)
{
    struct pl_async_output *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->request_id = strtoull(src->request_id ? src->request_id : "0", NULL, 10);
    o->n_prompt_tokens = src->n_prompt_token_ids;
    o->num_cached_tokens = src->num_cached_tokens;
    o->finished = src->finished;
    if (src->error) {
        /* the engine failed this request (only it): its last delta says why */
        o->error_msg = src->error;
        o->error_status = src->error_status != PL_STATUS_OK ? src->error_status
                                                             : PL_STATUS_INTERNAL;
        src->error = NULL;
    }
    if (src->has_prompt_logprobs && src->prompt_logprobs && src->n_prompt_token_ids > 0) {
        o->prompt_logprobs = calloc((size_t)src->n_prompt_token_ids, sizeof(*o->prompt_logprobs));
        for (int i = 0; o->prompt_logprobs && i < src->n_prompt_token_ids; i++)
            copy_logprob(&o->prompt_logprobs[i], &src->prompt_logprobs[i]);
    }
    if (src->n_outputs > 0) {
        o->samples = calloc((size_t)src->n_outputs, sizeof(*o->samples));
        if (!o->samples) {
            /* the news is lost, but a last delta must still end its request */
            if (!o->finished) {
                pl_async_output_free(o);
                return NULL;
            }
            if (!o->error_msg) {
                o->error_msg = strdup("out of memory for the request's output");
                o->error_status = PL_STATUS_NO_MEMORY;
            }
            return o;
        }
    }
    o->embedding = src->embedding; /* moved */
    o->n_embedding = src->n_embedding;
    src->embedding = NULL;
    for (int i = 0; i < src->n_outputs; i++) {
        struct pl_completion_output *c = &src->outputs[i];
        struct pl_async_sample *s = &o->samples[o->n_samples++];
        s->index = c->index;
        s->text = c->text;
        s->text_len = c->text_len;
        c->text = NULL;
        s->token_ids = c->token_ids;
        s->n_token_ids = c->n_token_ids;
        c->token_ids = NULL;
        if (c->has_logprobs && c->logprobs && c->n_token_ids > 0) {
            s->logprobs = calloc((size_t)s->n_token_ids, sizeof(*s->logprobs));
            for (int t = 0; s->logprobs && t < s->n_token_ids; t++)
                copy_logprob(&s->logprobs[t], &c->logprobs[t]);
        }
        s->finish = finish_of(c->finish_reason);
        s->stop_token_id = -1;
        if (c->stop_reason_kind == PL_STOP_REASON_STRING && c->stop_str) {
            s->stop_str = c->stop_str;
            c->stop_str = NULL;
        } else if (c->stop_reason_kind == PL_STOP_REASON_TOKEN) {
            s->stop_token_id = c->stop_token_id;
        }
    }
    return o;
}

static pl_status llm_poll(void *engine, struct pl_async_output ***outs, int *n_outs,
                          struct pl_err *err)
{
    struct pl_llm *llm = engine;
    struct pl_outputs got = {0};
    *outs = NULL;
    *n_outs = 0;
    pl_status st = pl_llm_poll(llm, &got);
    if (st != PL_STATUS_OK)
        return pl_err_set(err, st, "%s", pl_llm_errmsg(llm));
    if (got.n > 0) {
        *outs = calloc((size_t)got.n, sizeof(**outs));
        if (!*outs) {
            pl_outputs_free(&got);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
        for (int i = 0; i < got.n; i++) {
            struct pl_async_output *o = convert(&got.items[i]);
            if (o)
                (*outs)[(*n_outs)++] = o;
            else
                pl_log(PL_LOG_ERROR, "server: out of memory converting a delta");
        }
    }
    pl_outputs_free(&got);
    return PL_STATUS_OK;
}

static void llm_abort(void *engine, uint64_t request_id)
{
    char id[24];
    id_str(request_id, id);
    pl_llm_abort(engine, id); /* an already finished request is not an error worth a log */
}

static void llm_stats(void *engine, struct pl_engine_stats *out)
{
    struct pl_llm_stats st;
    memset(&st, 0, sizeof(st));
    pl_llm_get_stats(engine, &st);
    out->num_running = st.num_running;
    out->num_waiting = st.num_waiting;
    out->kv_blocks_total = st.kv_blocks_total;
    out->kv_blocks_used = st.kv_blocks_used;
    out->num_preemptions = st.num_preemptions;
    out->num_steps = st.num_steps;
}

const struct pl_engine_ops pl_llm_engine_ops = {
    llm_add, llm_step, llm_has_unfinished, llm_poll, llm_abort, llm_stats, llm_add_pooling};
