/*
 * request_output.c -- the memory of struct pl_request_output (include/pagellm.h).
 *
 * Owns: freeing outputs (pl_request_output_fini / _free, pl_outputs_free) and
 * pl_request_output_append, which concatenates a request's deltas into its
 * cumulative output. Every output the library hands out -- pl_llm_generate's,
 * pl_llm_poll's, a stream's deltas, the server's -- is this one struct, built
 * by the engine (engine.c) and moved, never converted.
 * Invariant of append: it either applies the whole delta or, out of memory,
 * leaves acc untouched (everything is allocated before anything is changed).
 */
#include "pagellm.h"

#include <stdlib.h>
#include <string.h>

static void completion_fini(struct pl_completion_output *c)
{
    free(c->text);
    free(c->token_ids);
    free(c->logprobs);
    free(c->stop_str);
}

void pl_request_output_fini(struct pl_request_output *o)
{
    if (!o)
        return;
    free(o->embedding);
    for (int i = 0; i < o->n_outputs; i++)
        completion_fini(&o->outputs[i]);
    free(o->outputs);
    free(o->request_id);
    free(o->prompt);
    free(o->prompt_token_ids);
    free(o->prompt_logprobs);
    free(o->error);
    memset(o, 0, sizeof(*o));
}

void pl_request_output_free(struct pl_request_output *o)
{
    if (!o)
        return;
    pl_request_output_fini(o);
    free(o);
}

void pl_outputs_free(struct pl_outputs *o)
{
    if (!o)
        return;
    for (int i = 0; i < o->n; i++)
        pl_request_output_fini(&o->items[i]);
    free(o->items);
    o->items = NULL;
    o->n = 0;
}

/* dst = a ++ b (either may be empty); NULL when memory runs out. */
static void *cat(const void *a, size_t na, const void *b, size_t nb, size_t extra)
{
    char *d = malloc(na + nb + extra > 0 ? na + nb + extra : 1);
    if (!d)
        return NULL;
    if (na)
        memcpy(d, a, na);
    if (nb)
        memcpy(d + na, b, nb);
    return d;
}

static char *dup_str(const char *s)
{
    return s ? cat(s, strlen(s) + 1, NULL, 0, 0) : NULL;
}

/* One sample's new buffers, built before anything in acc changes. */
struct staged {
    int slot;                       /* index into the new outputs array */
    char *text;
    int32_t *token_ids;
    struct pl_logprob_entry *logprobs;
    char *stop_str;
};

static int find_index(const struct pl_completion_output *outs, int n, int index)
{
    for (int i = 0; i < n; i++)
        if (outs[i].index == index)
            return i;
    return -1;
}

pl_status pl_request_output_append(struct pl_request_output *acc,
                                   const struct pl_request_output *d)
{
    int n_new = 0;
    for (int i = 0; i < d->n_outputs; i++)
        n_new += find_index(acc->outputs, acc->n_outputs, d->outputs[i].index) < 0;
    int n_all = acc->n_outputs + n_new;
    struct pl_completion_output *outs = calloc((size_t)(n_all > 0 ? n_all : 1), sizeof(*outs));
    struct staged *sg = calloc((size_t)(d->n_outputs > 0 ? d->n_outputs : 1), sizeof(*sg));
    char *id = !acc->request_id ? dup_str(d->request_id) : NULL;
    char *prompt = !acc->prompt ? dup_str(d->prompt) : NULL;
    bool take_ids = !acc->prompt_token_ids && d->prompt_token_ids;
    int32_t *pids = take_ids ? cat(d->prompt_token_ids,
                                   sizeof(int32_t) * (size_t)d->n_prompt_token_ids, NULL, 0, 0)
                             : NULL;
    bool take_plp = !acc->has_prompt_logprobs && d->has_prompt_logprobs && d->prompt_logprobs;
    struct pl_logprob_entry *plp =
        take_plp ? cat(d->prompt_logprobs,
                       sizeof(*plp) * (size_t)d->n_prompt_token_ids, NULL, 0, 0)
                 : NULL;
    float *emb = d->embedding && !acc->embedding
                     ? cat(d->embedding, sizeof(float) * (size_t)d->n_embedding, NULL, 0, 0)
                     : NULL;
    char *error = d->error && !acc->error ? dup_str(d->error) : NULL;
    bool ok = outs && sg && (id || !d->request_id || acc->request_id) &&
              (prompt || !d->prompt || acc->prompt) && (pids || !take_ids) &&
              (plp || !take_plp) && (emb || !d->embedding || acc->embedding) &&
              (error || !d->error || acc->error);

    /* the samples: old ones keep their place, new indexes are appended */
    if (outs && acc->n_outputs)
        memcpy(outs, acc->outputs, sizeof(*outs) * (size_t)acc->n_outputs);
    int n_used = acc->n_outputs;
    for (int i = 0; ok && i < d->n_outputs; i++) {
        const struct pl_completion_output *c = &d->outputs[i];
        int slot = find_index(outs, n_used, c->index);
        if (slot < 0) {
            slot = n_used++;
            outs[slot].index = c->index;
            outs[slot].stop_token_id = -1;
        }
        const struct pl_completion_output *a = &outs[slot];
        sg[i].slot = slot;
        sg[i].text = cat(a->text, a->text_len, c->text, c->text_len, 1);
        sg[i].token_ids = cat(a->token_ids, sizeof(int32_t) * (size_t)a->n_token_ids,
                              c->token_ids, sizeof(int32_t) * (size_t)c->n_token_ids, 0);
        ok = sg[i].text && sg[i].token_ids;
        if (ok && c->has_logprobs) {
            sg[i].logprobs = cat(a->logprobs, sizeof(*a->logprobs) * (size_t)a->n_token_ids,
                                 c->logprobs, sizeof(*c->logprobs) * (size_t)c->n_token_ids, 0);
            ok = sg[i].logprobs != NULL;
        }
        if (ok && c->stop_str && !a->stop_str) {
            sg[i].stop_str = dup_str(c->stop_str);
            ok = sg[i].stop_str != NULL;
        }
    }
    if (!ok) {
        for (int i = 0; sg && i < d->n_outputs; i++) {
            free(sg[i].text);
            free(sg[i].token_ids);
            free(sg[i].logprobs);
            free(sg[i].stop_str);
        }
        free(sg), free(outs), free(id), free(prompt), free(pids), free(plp), free(emb);
        free(error);
        return PL_STATUS_NO_MEMORY;
    }

    /* commit: nothing below allocates */
    for (int i = 0; i < d->n_outputs; i++) {
        const struct pl_completion_output *c = &d->outputs[i];
        struct pl_completion_output *a = &outs[sg[i].slot];
        free(a->text);
        a->text = sg[i].text;
        a->text_len += c->text_len;
        a->text[a->text_len] = '\0';
        free(a->token_ids);
        a->token_ids = sg[i].token_ids;
        if (c->has_logprobs) {
            free(a->logprobs);
            a->logprobs = sg[i].logprobs;
            a->has_logprobs = true;
            a->cumulative_logprob = c->cumulative_logprob; /* already the running sum */
        }
        a->n_token_ids += c->n_token_ids;
        if (c->finish_reason != PL_FINISH_NONE) {
            a->finish_reason = c->finish_reason;
            a->stop_reason_kind = c->stop_reason_kind;
            a->stop_token_id = c->stop_token_id;
        }
        if (sg[i].stop_str)
            a->stop_str = sg[i].stop_str;
    }
    free(sg);
    free(acc->outputs);
    acc->outputs = outs;
    acc->n_outputs = n_used;
    if (id)
        acc->request_id = id;
    if (prompt)
        acc->prompt = prompt;
    if (pids) {
        acc->prompt_token_ids = pids;
        acc->n_prompt_token_ids = d->n_prompt_token_ids;
    }
    if (plp) {
        acc->prompt_logprobs = plp;
        acc->has_prompt_logprobs = true;
    }
    if (emb) {
        acc->embedding = emb;
        acc->n_embedding = d->n_embedding;
    }
    if (error) {
        acc->error = error;
        acc->error_status = d->error_status;
    }
    acc->request_num = d->request_num;
    acc->num_cached_tokens = d->num_cached_tokens;
    acc->finished = acc->finished || d->finished;
    if (d->finish_reason != PL_FINISH_NONE)
        acc->finish_reason = d->finish_reason;
    acc->metrics = d->metrics;
    return PL_STATUS_OK;
}
