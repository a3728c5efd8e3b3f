/*
 * beam_search.c -- vLLM's offline beam search over the engine (see
 * beam_search.h for the algorithm and scoring).
 *
 * Memory: each beam owns its token array (prompt + outputs) and its logprob
 * entries; candidates are built in a scratch array per prompt and the losers
 * freed at once. Allocation here is per beam step, outside the engine step.
 */
#include "engine/beam_search.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct beam {
    int32_t *tokens;                 /* [n_tokens] prompt + outputs */
    int n_tokens;
    double cum;                      /* cumulative logprob of the outputs */
    struct pl_logprob_entry *lp;     /* [n_tokens - n_prompt] */
    bool ended_eos;                  /* finished on eos */
};

struct inst {
    const struct pl_beam_prompt *p;
    int width, max_tokens;
    struct beam *live;               /* [n_live] */
    int n_live;
    struct beam *done;               /* [n_done] */
    int n_done, cap_done;
    int64_t *req_of_live;            /* [width] engine request of each live beam this step */
};

static void beam_free(struct beam *b)
{
    free(b->tokens);
    free(b->lp);
    memset(b, 0, sizeof(*b));
}

static double score(const struct beam *b, int32_t eos_id, float length_penalty)
{
    int len = b->n_tokens;
    if (b->ended_eos || (len > 0 && b->tokens[len - 1] == eos_id))
        len--;
    if (len < 1)
        len = 1;
    return b->cum / pow((double)len, (double)length_penalty);
}

struct sort_ctx {
    int32_t eos;
    float lp;
};
static struct sort_ctx g_sort; /* qsort has no context argument in C11 */

static int cmp_beam(const void *a, const void *b)
{
    double sa = score(a, g_sort.eos, g_sort.lp), sb = score(b, g_sort.eos, g_sort.lp);
    return sa > sb ? -1 : sa < sb ? 1 : 0;
}

static void sort_beams(struct beam *b, int n, int32_t eos, float length_penalty)
{
    g_sort.eos = eos;
    g_sort.lp = length_penalty;
    qsort(b, (size_t)n, sizeof(*b), cmp_beam);
}

/* A new beam: parent extended by tok (or not, for an eos left out). */
static bool extend(const struct beam *parent, int n_prompt, int32_t tok, bool append,
                   const struct pl_logprob_entry *step, float tok_lp, struct beam *out)
{
    int n_out = parent->n_tokens - n_prompt;
    out->tokens = malloc(sizeof(int32_t) * (size_t)(parent->n_tokens + 1));
    out->lp = malloc(sizeof(*out->lp) * (size_t)(n_out + 1));
    if (!out->tokens || !out->lp) {
        beam_free(out);
        return false;
    }
    memcpy(out->tokens, parent->tokens, sizeof(int32_t) * (size_t)parent->n_tokens);
    if (n_out > 0)
        memcpy(out->lp, parent->lp, sizeof(*out->lp) * (size_t)n_out);
    out->n_tokens = parent->n_tokens;
    out->cum = parent->cum + tok_lp;
    if (append) {
        out->tokens[out->n_tokens++] = tok;
        struct pl_logprob_entry *e = &out->lp[n_out];
        *e = *step;
        e->token_id = tok;
        e->logprob = tok_lp;
        e->rank = 1;
        for (int k = 0; k < step->n_top; k++)
            if (step->top_ids[k] == tok)
                e->rank = k + 1;
    }
    out->ended_eos = false;
    return true;
}

static bool push_done(struct inst *in, struct beam *b)
{
    if (in->n_done == in->cap_done) {
        int cap = in->cap_done ? in->cap_done * 2 : 8;
        struct beam *g = realloc(in->done, sizeof(*g) * (size_t)cap);
        if (!g)
            return false;
        in->done = g;
        in->cap_done = cap;
    }
    in->done[in->n_done++] = *b;
    return true;
}

/* Builds the request output of one finished instance. */
static pl_status fill_output(const struct inst *in, const struct pl_tokenizer *tok,
                             struct pl_request_output *o, uint64_t id, struct pl_err *err)
{
    const struct pl_beam_prompt *p = in->p;
    const struct pl_sampling_params *sp = p->params;
    memset(o, 0, sizeof(*o));
    char num[32];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)id);
    o->request_id = strdup(num);
    o->prompt = p->prompt_text ? strdup(p->prompt_text) : NULL;
    o->prompt_token_ids = malloc(sizeof(int32_t) * (size_t)p->n_prompt);
    int n = in->n_done < in->width ? in->n_done : in->width;
    o->outputs = calloc((size_t)(n > 0 ? n : 1), sizeof(*o->outputs));
    if (!o->request_id || (p->prompt_text && !o->prompt) || !o->prompt_token_ids || !o->outputs)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
    memcpy(o->prompt_token_ids, p->prompt, sizeof(int32_t) * (size_t)p->n_prompt);
    o->n_prompt_token_ids = p->n_prompt;
    o->finished = true;
    for (int i = 0; i < n; i++) {
        const struct beam *b = &in->done[i];
        struct pl_completion_output *c = &o->outputs[o->n_outputs++];
        c->index = i;
        c->n_token_ids = b->n_tokens - p->n_prompt;
        c->token_ids = malloc(sizeof(int32_t) * (size_t)(c->n_token_ids + 1));
        if (!c->token_ids)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
        memcpy(c->token_ids, b->tokens + p->n_prompt, sizeof(int32_t) * (size_t)c->n_token_ids);
        c->cumulative_logprob = b->cum;
        c->has_logprobs = sp->logprobs >= 0;
        if (c->has_logprobs) {
            c->logprobs = malloc(sizeof(*c->logprobs) * (size_t)(c->n_token_ids + 1));
            if (!c->logprobs)
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
            memcpy(c->logprobs, b->lp, sizeof(*c->logprobs) * (size_t)c->n_token_ids);
            for (int t = 0; t < c->n_token_ids; t++)
                if (c->logprobs[t].n_top > sp->logprobs)
                    c->logprobs[t].n_top = sp->logprobs;
        }
        c->finish_reason = b->ended_eos ? PL_FINISH_STOP : PL_FINISH_LENGTH;
        c->stop_reason_kind = PL_STOP_REASON_NONE;
        c->stop_token_id = -1;
        size_t len = 0;
        if (tok) {
            pl_status st = pl_tokenizer_decode(tok, c->token_ids, c->n_token_ids,
                                               sp->skip_special_tokens, &c->text, &len, err);
            if (st != PL_STATUS_OK)
                return st;
        } else {
            c->text = calloc(1, 1);
            if (!c->text)
                return pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
        }
        c->text_len = len;
    }
    return PL_STATUS_OK;
}

/* Drains the engine after a failure so nothing stays pending. */
static void drain(struct pl_engine *e)
{
    struct pl_err err;
    struct pl_outputs o = {0};
    /* a failed step ends the requests it ran, so every step makes progress */
    for (int guard = 0; pl_engine_has_unfinished(e) && guard < 1000; guard++)
        pl_engine_step(e, &err);
    pl_engine_poll(e, false, &o, &err);
    pl_outputs_free(&o);
}

pl_status pl_beam_search(struct pl_engine *e, const struct pl_tokenizer *tok, int32_t eos_id,
                         int max_model_len, const struct pl_beam_prompt *prompts, int n,
                         struct pl_request_output *items, uint64_t *next_id, struct pl_err *err)
{
    pl_status st = PL_STATUS_OK;
    struct inst *ins = calloc((size_t)(n > 0 ? n : 1), sizeof(*ins));
    struct beam *cand = NULL;
    int max_width = 1;
    if (!ins)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
    for (int i = 0; i < n && st == PL_STATUS_OK; i++) {
        struct inst *in = &ins[i];
        const struct pl_sampling_params *sp = prompts[i].params;
        in->p = &prompts[i];
        in->width = sp->beam_width > 0 ? sp->beam_width : sp->n;
        if (in->width < 1 || 2 * in->width > PL_MAX_LOGPROBS) {
            st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                            "beam_width must be between 1 and %d, got %d", PL_MAX_LOGPROBS / 2,
                            in->width);
            break;
        }
        max_width = in->width > max_width ? in->width : max_width;
        in->max_tokens = sp->max_tokens >= 0 ? sp->max_tokens : max_model_len - prompts[i].n_prompt;
        if (prompts[i].n_prompt + in->max_tokens > max_model_len)
            in->max_tokens = max_model_len - prompts[i].n_prompt;
        in->live = calloc((size_t)in->width, sizeof(*in->live));
        in->req_of_live = calloc((size_t)in->width, sizeof(*in->req_of_live));
        if (!in->live || !in->req_of_live) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
            break;
        }
        in->live[0].tokens = malloc(sizeof(int32_t) * (size_t)prompts[i].n_prompt);
        if (!in->live[0].tokens) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
            break;
        }
        memcpy(in->live[0].tokens, prompts[i].prompt, sizeof(int32_t) * (size_t)prompts[i].n_prompt);
        in->live[0].n_tokens = prompts[i].n_prompt;
        in->n_live = in->max_tokens > 0 ? 1 : 0;
        if (in->max_tokens <= 0) {
            st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                            "prompt %d (%d tokens) leaves no room within max_model_len %d", i,
                            prompts[i].n_prompt, max_model_len);
        }
    }
    cand = st == PL_STATUS_OK ? calloc((size_t)(max_width * 2 * max_width), sizeof(*cand)) : NULL;
    if (st == PL_STATUS_OK && !cand)
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
    uint64_t base = *next_id + 1;
    for (int step = 0; st == PL_STATUS_OK; step++) {
        /* one request per live beam */
        int n_req = 0;
        for (int i = 0; i < n && st == PL_STATUS_OK; i++) {
            struct inst *in = &ins[i];
            if (step >= in->max_tokens)
                continue;
            struct pl_sampling_params sp = *in->p->params;
            sp.use_beam_search = false;
            sp.n = 1;
            sp.max_tokens = 1;
            sp.logprobs = 2 * in->width;
            sp.prompt_logprobs = -1;
            sp.ignore_eos = true;
            sp.n_stop = 0;
            sp.min_tokens = 0;
            sp.owned = NULL;
            for (int b = 0; b < in->n_live && st == PL_STATUS_OK; b++) {
                struct pl_engine_request r = {0};
                r.request_id = ++*next_id;
                r.prompt = in->live[b].tokens;
                r.n_prompt = in->live[b].n_tokens;
                r.params = &sp;
                in->req_of_live[b] = (int64_t)r.request_id;
                st = pl_engine_add(e, &r, err);
                n_req++;
            }
        }
        if (st != PL_STATUS_OK || n_req == 0)
            break;
        while (pl_engine_has_unfinished(e) && st == PL_STATUS_OK)
            st = pl_engine_step(e, err);
        struct pl_outputs got = {0};
        if (st == PL_STATUS_OK)
            st = pl_engine_poll(e, false, &got, err);
        if (st != PL_STATUS_OK) {
            pl_outputs_free(&got);
            break;
        }
        for (int i = 0; i < n && st == PL_STATUS_OK; i++) {
            struct inst *in = &ins[i];
            if (step >= in->max_tokens || in->n_live == 0)
                continue;
            bool ignore_eos = in->p->params->ignore_eos;
            int n_cand = 0;
            for (int b = 0; b < in->n_live && st == PL_STATUS_OK; b++) {
                const struct pl_request_output *o = NULL;
                for (int k = 0; k < got.n; k++)
                    if (strtoull(got.items[k].request_id, NULL, 10) ==
                        (uint64_t)in->req_of_live[b])
                        o = &got.items[k];
                if (o && o->error) { /* the engine failed this beam's request */
                    st = pl_err_set(err, o->error_status, "beam search: %s", o->error);
                    break;
                }
                if (!o || o->n_outputs != 1 || !o->outputs[0].logprobs) {
                    st = pl_err_set(err, PL_STATUS_INTERNAL, "beam search: a beam got no output");
                    break;
                }
                const struct pl_logprob_entry *step_lp = &o->outputs[0].logprobs[0];
                for (int k = 0; k < step_lp->n_top; k++) {
                    int32_t t = step_lp->top_ids[k];
                    bool is_eos = t == eos_id && !ignore_eos;
                    struct beam nb;
                    bool append = !is_eos || in->p->params->include_stop_str_in_output;
                    if (!extend(&in->live[b], in->p->n_prompt, t, append, step_lp,
                                step_lp->top_logprobs[k], &nb)) {
                        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
                        break;
                    }
                    nb.ended_eos = is_eos;
                    if (is_eos) {
                        if (!push_done(in, &nb)) {
                            beam_free(&nb);
                            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
                        }
                    } else {
                        cand[n_cand++] = nb;
                    }
                }
            }
            for (int b = 0; b < in->n_live; b++)
                beam_free(&in->live[b]);
            sort_beams(cand, n_cand, eos_id, in->p->params->length_penalty);
            in->n_live = n_cand < in->width ? n_cand : in->width;
            for (int c = 0; c < n_cand; c++) {
                if (c < in->n_live)
                    in->live[c] = cand[c];
                else
                    beam_free(&cand[c]);
            }
        }
        pl_outputs_free(&got);
    }
    if (st != PL_STATUS_OK)
        drain(e);
    for (int i = 0; i < n && st == PL_STATUS_OK; i++) {
        struct inst *in = &ins[i];
        for (int b = 0; b < in->n_live && st == PL_STATUS_OK; b++) {
            if (!push_done(in, &in->live[b]))
                st = pl_err_set(err, PL_STATUS_NO_MEMORY, "beam search: out of memory");
            else
                memset(&in->live[b], 0, sizeof(in->live[b]));
        }
        in->n_live = 0;
        sort_beams(in->done, in->n_done, eos_id, in->p->params->length_penalty);
        if (st == PL_STATUS_OK)
            st = fill_output(in, tok, &items[i], base + (uint64_t)i, err);
    }
    for (int i = 0; i < n; i++) {
        for (int b = 0; b < ins[i].n_live; b++)
            beam_free(&ins[i].live[b]);
        for (int b = 0; b < ins[i].n_done; b++)
            beam_free(&ins[i].done[b]);
        free(ins[i].live);
        free(ins[i].done);
        free(ins[i].req_of_live);
    }
    free(ins);
    free(cand);
    return st;
}
