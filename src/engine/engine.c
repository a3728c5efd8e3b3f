/*
 * engine.c -- the engine loop (contract and invariants in engine.h).
 *
 * Per request the engine keeps a struct req on one doubly linked list, from
 * pl_engine_add until the poll that reports it finished; the scheduler's
 * group points back at it through group->user. Per sequence (indexed by the
 * sequence's index in its group, so state for the samples of an n > 1 group
 * exists before the scheduler forks them) a struct seq_st holds the
 * generator, logprobs, detokenizer and text cursors:
 *
 *   text[0, text_len)   everything detokenized (cut at a stop string)
 *   text[0, visible)    final: may be released to the client
 *   text[0, text_sent)  already released by a delta poll
 *   text_sent <= visible <= text_len; visible == text_len once finished.
 */
#include "engine/sampling_params.h"
#include "engine/engine.h"

#include "engine/batch_builder.h"
#include "core/sampler.h"
#include "engine/stop.h"
#include "grammar/grammar.h"
#include "util/clock.h"
#include "util/debug_env.h"
#include "util/log.h"
#include "util/rng.h"

#include <assert.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct seq_st {
    struct pl_rng rng;                 /* the sample's own generator (seeded requests) */
    double cum_logprob;
    struct pl_logprob_entry *lp;       /* [cap_lp], n_lp used (one per output token) */
    int n_lp, cap_lp;
    void *detok;                       /* detokenizer state, NULL until the first token */
    char *text;                        /* see the file comment */
    size_t text_len, visible, checked, text_sent;
    bool text_final;                   /* flushed or cut at a stop string */
    enum pl_stop_token_result pending; /* this step's stop-token verdict */
    enum pl_finish_reason finish;
    enum pl_stop_reason_kind stop_kind;
    int stop_index;
    int32_t stop_token;
    struct pl_grammar_matcher *gm;     /* structured output: the sample's automaton, or NULL */
    int n_tok_sent;                    /* output tokens (and logprobs) released by polls */
    bool finish_sent;
};

struct req {
    uint64_t id;
    char *name;
    char *prompt_text;
    int32_t *prompt;                   /* [n_prompt] */
    int n_prompt;
    struct pl_sampling_params params;  /* owned copy */
    struct pl_seq_group *group;        /* scheduler's until finished, then ours */
    struct seq_st *st;                 /* [n_st] by sequence index */
    int n_st;
    struct pl_logprob_entry *plp;      /* [n_prompt] when prompt_logprobs was asked */
    int plp_next;                      /* logits of positions < plp_next are recorded */
    bool prompt_sent, plp_sent;
    bool finished;                     /* the group left the scheduler */
    bool dirty;                        /* news since the last poll */
    bool failed;                       /* req_fail ran: error and error_status say why */
    pl_status error_status;
    char *error;                       /* NULL when failed but out of memory for the text */
    uint8_t salt[16];                  /* private cache salt (prompt_logprobs, MEAN pooling) */
    /* pooling requests (engine.h) */
    bool pooling;
    struct pl_pooling_params pool;
    double *pool_acc;                  /* [hidden_size]: the sum (MEAN) or the last row (LAST) */
    int pool_next;                     /* prompt positions < pool_next are in pool_acc */
    /* metrics (pl_request_metrics; monotonic seconds, 0: not yet) */
    double t_arrival, t_first_sched, t_first_tok, t_last_tok, t_prev_tok;
    enum pl_finish_reason first_finish; /* the first sample finish a poll reported */
    /* Reserved at admission so that the finished output can always be built,
     * even when memory runs out then (fill_reserved): moved into it, or freed
     * with the request. */
    struct pl_completion_output *res_outputs; /* [n_st] zeroed */
    char *res_id;                      /* request_id text */
    char *res_error;                   /* the out-of-memory message */
    struct req *prev, *next;
};

/* A prompt-logprobs logits row (or a pooling hidden row) of the current step. */
struct plp_row {
    struct req *r;
    int pos;                           /* prompt position whose logits (hidden state) the row holds */
};

struct pl_engine {
    struct pl_engine_params p;
    int32_t *eos;                      /* [n_eos] copy */
    struct pl_engine_model model;
    struct pl_engine_detok detok;
    bool has_detok;
    struct pl_scheduler *sched;
    struct pl_batch_builder *bb;
    struct pl_sampler *sampler;
    int vocab;
    int max_rows;                      /* sampling rows per step: max_num_seqs */
    /* step buffers */
    float *logits;                     /* [cap_logit_rows][vocab] */
    int cap_logit_rows;
    int32_t *logits_rows;              /* [max_rows + max_num_batched_tokens] */
    struct plp_row *plp_rows;          /* [max_num_batched_tokens] */
    struct pl_sampler_row *rows;       /* [max_rows] */
    struct pl_sample_result *results;  /* [max_rows] */
    double *uniforms;                  /* [max_rows] the draws of a backend-sampled step */
    int32_t *sampled;                  /* [max_rows] */
    bool *stop;                        /* [max_rows] */
    int *row_index;                    /* [max_rows] sample index of each row */
    int *row_src;                      /* [max_rows] model logits row of each sampler row */
    /* structured output: made with the first constrained request (outside the step loop) */
    struct pl_grammar_cache *gcache;
    uint32_t *masks;                   /* [max_rows][mask_words] token masks of this step */
    size_t mask_words;
    /* this step's constrained rows whose masks are still to compute (fill_masks) */
    struct pl_grammar_matcher **mask_gm; /* [max_rows] */
    int *mask_row;                       /* [max_rows] */
    int n_masks_pending;
    /* pooling: allocated with the first pooling request */
    float *hidden;                     /* [max_num_batched_tokens][hidden_size] */
    int32_t *hidden_rows;              /* [max_num_batched_tokens] token index of each row */
    struct plp_row *pool_rows;         /* [max_num_batched_tokens] request and position */
    /* requests */
    struct req *head, *tail;
    int n_reqs;
    uint64_t salt_counter;
    /* stats */
    double waste_slots, reserved_slots, seconds;
    /* PAGELLM_PROFILE=1: wall time per phase of pl_engine_step, printed by pl_engine_free */
    bool profile;
    double prof_sched, prof_model, prof_post;
    long prof_steps;
    uint64_t n_steps_backend_sampling, n_steps_host_sampling;
    uint64_t n_prompt_tokens, n_generation_tokens, n_added, n_finished, n_pooling;
};

void pl_engine_params_default(struct pl_engine_params *p)
{
    memset(p, 0, sizeof(*p));
    pl_scheduler_params_default(&p->sched);
}

const char *pl_finish_reason_str(enum pl_finish_reason r)
{
    switch (r) {
    case PL_FINISH_STOP:
        return "stop";
    case PL_FINISH_LENGTH:
        return "length";
    case PL_FINISH_ABORT:
        return "abort";
    case PL_FINISH_ERROR:
        return "error";
    default:
        return NULL;
    }
}

/* ---- requests ---- */

static void seq_st_fini(struct pl_engine *e, struct seq_st *st)
{
    if (st->detok && e->has_detok)
        e->detok.fini(st->detok);
    st->detok = NULL;
    free(st->lp);
    free(st->text);
    pl_grammar_matcher_free(st->gm);
    st->gm = NULL;
}

static void req_free(struct pl_engine *e, struct req *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_st; i++)
        seq_st_fini(e, &r->st[i]);
    free(r->st);
    free(r->plp);
    free(r->pool_acc);
    free(r->prompt);
    free(r->name);
    free(r->prompt_text);
    free(r->error);
    free(r->res_outputs);
    free(r->res_id);
    free(r->res_error);
    pl_sampling_params_fini(&r->params);
    free(r);
}

static void req_unlink(struct pl_engine *e, struct req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        e->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        e->tail = r->prev;
    r->prev = r->next = NULL;
    e->n_reqs--;
}

static struct req *req_find(struct pl_engine *e, uint64_t id)
{
    for (struct req *r = e->head; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

/* ---- creation ---- */

pl_status pl_engine_new(const struct pl_engine_params *p, const struct pl_engine_model *model,
                        const struct pl_engine_detok *detok, struct pl_engine **out,
                        struct pl_err *err)
{
    *out = NULL;
    if (!model || !model->run || !model->copy_blocks || model->vocab_size < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "engine: the model interface is incomplete");
    if (p->n_eos < 0 || (p->n_eos > 0 && !p->eos_ids))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "engine: bad eos ids");
    struct pl_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "engine: out of memory");
    e->p = *p;
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    e->profile = dbg.profile;
    e->model = *model;
    if (detok && detok->init && detok->push && detok->flush && detok->fini) {
        e->detok = *detok;
        e->has_detok = true;
    }
    e->vocab = model->vocab_size;
    pl_status st = pl_scheduler_new(&p->sched, &e->sched, err);
    if (st != PL_STATUS_OK)
        goto fail;
    struct pl_batch_builder_params bp = {
        p->sched.block_size, p->sched.max_num_batched_tokens, p->sched.max_num_seqs,
        (p->sched.max_model_len + p->sched.block_size - 1) / p->sched.block_size};
    st = pl_batch_builder_new(&bp, &e->bb, err);
    if (st != PL_STATUS_OK)
        goto fail;
    e->max_rows = p->sched.max_num_seqs;
    st = pl_sampler_new(e->max_rows, e->vocab, p->seed, &e->sampler, err);
    if (st != PL_STATUS_OK)
        goto fail;
    size_t mr = (size_t)e->max_rows, mt = (size_t)p->sched.max_num_batched_tokens;
    e->cap_logit_rows = e->max_rows;
    e->logits = malloc(mr * (size_t)e->vocab * sizeof(float));
    e->logits_rows = malloc((mr + mt) * sizeof(int32_t));
    e->plp_rows = malloc(mt * sizeof(*e->plp_rows));
    e->rows = malloc(mr * sizeof(*e->rows));
    e->results = malloc(mr * sizeof(*e->results));
    e->uniforms = malloc(mr * sizeof(*e->uniforms));
    e->sampled = malloc(mr * sizeof(int32_t));
    e->stop = malloc(mr * sizeof(bool));
    e->row_index = malloc(mr * sizeof(int));
    e->row_src = malloc(mr * sizeof(int));
    e->eos = malloc(sizeof(int32_t) * (size_t)(p->n_eos > 0 ? p->n_eos : 1));
    if (!e->logits || !e->logits_rows || !e->plp_rows || !e->rows || !e->results || !e->uniforms ||
        !e->sampled || !e->stop || !e->row_index || !e->row_src || !e->eos) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY,
                        "engine: out of memory for step buffers (%d rows of %d logits)",
                        e->max_rows, e->vocab);
        goto fail;
    }
    if (p->n_eos > 0)
        memcpy(e->eos, p->eos_ids, sizeof(int32_t) * (size_t)p->n_eos);
    e->p.eos_ids = e->eos;
    *out = e;
    return PL_STATUS_OK;
fail:
    pl_engine_free(e);
    return st;
}

void pl_engine_free(struct pl_engine *e)
{
    if (!e)
        return;
    if (e->profile && e->prof_steps > 0)
        PL_INFO("engine profile: %ld steps (%llu sampled on the backend, %llu on the host), "
                "%.3f s in steps: schedule+batch %.1f%%, model+sampling %.1f%%, "
                "update+detokenize %.1f%% (%.3f ms/step)",
                e->prof_steps, (unsigned long long)e->n_steps_backend_sampling,
                (unsigned long long)e->n_steps_host_sampling, e->seconds,
                100 * e->prof_sched / e->seconds, 100 * e->prof_model / e->seconds,
                100 * e->prof_post / e->seconds, 1e3 * e->seconds / (double)e->prof_steps);
    if (e->profile && e->gcache) {
        uint64_t hits = 0, misses = 0;
        pl_grammar_cache_stats(e->gcache, &hits, &misses);
        PL_INFO("engine profile: grammar masks %llu from the cache, %llu computed",
                (unsigned long long)hits, (unsigned long long)misses);
    }
    struct req *r = e->head;
    while (r) {
        struct req *next = r->next;
        /* groups still in the scheduler are freed by it; finished ones are ours */
        if (r->finished)
            pl_seq_group_free(r->group);
        req_free(e, r);
        r = next;
    }
    pl_scheduler_free(e->sched);
    pl_batch_builder_free(e->bb);
    pl_sampler_free(e->sampler);
    free(e->logits);
    free(e->logits_rows);
    free(e->plp_rows);
    free(e->rows);
    free(e->results);
    free(e->uniforms);
    free(e->sampled);
    free(e->stop);
    free(e->row_index);
    free(e->row_src);
    free(e->masks);
    free(e->mask_gm);
    free(e->mask_row);
    pl_grammar_cache_free(e->gcache);
    free(e->hidden);
    free(e->hidden_rows);
    free(e->pool_rows);
    free(e->eos);
    free(e);
}

struct pl_scheduler *pl_engine_scheduler(struct pl_engine *e)
{
    return e->sched;
}

static char *str_dup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d)
        memcpy(d, s, n + 1);
    return d;
}

/* ---- add / abort ---- */

void pl_pooling_params_default(struct pl_pooling_params *p)
{
    p->type = PL_POOLING_LAST;
    p->normalize = true;
}

/* A pooling request's checks and, with the first one, the hidden-state buffers (outside the
 * step loop). *params becomes the one-greedy-token params it is scheduled with. */
static pl_status pooling_prepare(struct pl_engine *e, const struct pl_engine_request *rq,
                                 struct pl_sampling_params *params, struct pl_err *err)
{
    const struct pl_pooling_params *pp = rq->pooling;
    if (e->model.hidden_size < 1)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "pooling: this model returns no hidden states");
    if (pp->type != PL_POOLING_LAST && pp->type != PL_POOLING_MEAN)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "pooling: unknown pooling type %d",
                          (int)pp->type);
    if (rq->n_prompt >= e->p.sched.max_model_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "the input (%d tokens) must be shorter than max_model_len (%d)",
                          rq->n_prompt, e->p.sched.max_model_len);
    if (!e->hidden) {
        size_t mt = (size_t)e->p.sched.max_num_batched_tokens;
        e->hidden = malloc(mt * (size_t)e->model.hidden_size * sizeof(float));
        e->hidden_rows = malloc(mt * sizeof(int32_t));
        e->pool_rows = malloc(mt * sizeof(*e->pool_rows));
        if (!e->hidden || !e->hidden_rows || !e->pool_rows) {
            free(e->hidden), free(e->hidden_rows), free(e->pool_rows);
            e->hidden = NULL, e->hidden_rows = NULL, e->pool_rows = NULL;
            return pl_err_set(err, PL_STATUS_NO_MEMORY,
                              "pooling: out of memory for %zu hidden-state rows", mt);
        }
    }
    pl_sampling_params_default(params);
    params->temperature = 0.0f;
    params->max_tokens = 1;
    params->ignore_eos = true;
    params->skip_special_tokens = false;
    return PL_STATUS_OK;
}

/*
 * Structured output: the grammar cache and the step's mask rows (with the first
 * constrained request), then one matcher per sample, compiled through the cache.
 */
static pl_status constraint_prepare(struct pl_engine *e, struct req *r, struct pl_err *err)
{
    if (!e->p.grammar_vocab)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "structured outputs need the model's tokenizer");
    pl_status st;
    if (!e->gcache) {
        e->mask_words = PL_GRAMMAR_MASK_WORDS(e->vocab);
        e->masks = malloc((size_t)e->max_rows * e->mask_words * sizeof(uint32_t));
        e->mask_gm = malloc((size_t)e->max_rows * sizeof(*e->mask_gm));
        e->mask_row = malloc((size_t)e->max_rows * sizeof(*e->mask_row));
        if (!e->masks || !e->mask_gm || !e->mask_row)
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory for token masks");
        if ((st = pl_grammar_cache_new(e->p.grammar_vocab, 64, &e->gcache, err)))
            return st;
    }
    const struct pl_sampling_params *pp = &r->params;
    st = pl_grammar_matcher_new(e->gcache, pp->constraint_kind, pp->constraint,
                                pp->whitespace_pattern, &r->st[0].gm, err);
    for (int k = 1; st == PL_STATUS_OK && k < r->n_st; k++)
        st = pl_grammar_matcher_clone(r->st[0].gm, &r->st[k].gm, err);
    return st;
}

pl_status pl_engine_add(struct pl_engine *e, const struct pl_engine_request *rq,
                        struct pl_err *err)
{
    const struct pl_scheduler_params *sp = &e->p.sched;
    struct pl_sampling_params pool_params;
    const struct pl_sampling_params *params = rq->params;
    if (rq->pooling) {
        pl_status pst = pooling_prepare(e, rq, &pool_params, err);
        if (pst != PL_STATUS_OK)
            return pst;
        params = &pool_params;
    }
    if (!params)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "request has no sampling params");
    if (rq->n_prompt < 1 || !rq->prompt)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "the prompt is empty");
    for (int i = 0; i < rq->n_prompt; i++)
        if (rq->prompt[i] < 0 || rq->prompt[i] >= e->vocab)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "prompt token %d (id %d) is outside the vocabulary (size %d)", i,
                              (int)rq->prompt[i], e->vocab);
    if (rq->n_prompt >= sp->max_model_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "the prompt (%d tokens) leaves no room to generate within "
                          "max_model_len (%d)",
                          rq->n_prompt, sp->max_model_len);
    if (req_find(e, rq->request_id))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "request id %s is already in use",
                          rq->name ? rq->name : "(number)");

    struct req *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory for a request");
    pl_status st = pl_sampling_params_copy(&r->params, params, err);
    if (st != PL_STATUS_OK) {
        free(r);
        return st;
    }
    struct pl_sampling_params *pp = &r->params;
    st = pl_sampling_params_validate(pp, e->vocab, err);
    if (st != PL_STATUS_OK)
        goto fail;
    if (pp->use_beam_search) {
        st = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                        "use_beam_search: beam search runs through generate (pl_llm_generate), "
                        "not as a streamed request");
        goto fail;
    }
    if (pp->max_tokens < 0)
        pp->max_tokens = sp->max_model_len - rq->n_prompt;
    r->id = rq->request_id;
    r->t_arrival = rq->arrival_time > 0 ? rq->arrival_time : pl_clock_seconds();
    r->n_prompt = rq->n_prompt;
    r->prompt = malloc(sizeof(int32_t) * (size_t)rq->n_prompt);
    r->name = str_dup(rq->name);
    r->prompt_text = str_dup(rq->prompt_text);
    r->n_st = pp->n;
    r->st = calloc((size_t)r->n_st, sizeof(*r->st));
    if (pp->prompt_logprobs >= 0)
        r->plp = calloc((size_t)rq->n_prompt, sizeof(*r->plp));
    if (rq->pooling) {
        r->pooling = true;
        r->pool = *rq->pooling;
        r->pool_acc = calloc((size_t)e->model.hidden_size, sizeof(double));
    }
    char num[32];
    snprintf(num, sizeof(num), "%llu", (unsigned long long)r->id);
    r->res_outputs = calloc((size_t)r->n_st, sizeof(*r->res_outputs));
    r->res_id = str_dup(rq->name ? rq->name : num);
    r->res_error = str_dup("out of memory for the request's output");
    if (!r->prompt || (rq->name && !r->name) || (rq->prompt_text && !r->prompt_text) || !r->st ||
        (pp->prompt_logprobs >= 0 && !r->plp) || (r->pooling && !r->pool_acc) ||
        !r->res_outputs || !r->res_id || !r->res_error) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory for a request");
        goto fail;
    }
    memcpy(r->prompt, rq->prompt, sizeof(int32_t) * (size_t)rq->n_prompt);
    for (int k = 0; k < r->n_st; k++) {
        /* vLLM's parallel sampling: child k of a seeded request uses seed + k */
        if (pp->has_seed)
            pl_rng_seed(&r->st[k].rng, pp->seed + (uint64_t)k);
        r->st[k].stop_index = -1;
    }
    if (r->plp) {
        r->plp[0].token_id = r->prompt[0];
        r->plp[0].n_top = -1;
    }
    if (pp->constraint_kind != PL_CONSTRAINT_NONE &&
        (st = constraint_prepare(e, r, err)) != PL_STATUS_OK)
        goto fail;

    struct pl_seq_group_params gp;
    pl_seq_group_params_default(&gp);
    gp.request_id = rq->request_id;
    gp.prompt = rq->prompt;
    gp.n_prompt = rq->n_prompt;
    gp.max_tokens = pp->max_tokens;
    gp.n = pp->n;
    gp.cache_salt = rq->cache_salt;
    gp.n_cache_salt = rq->n_cache_salt;
    if (r->plp || (r->pooling && r->pool.type == PL_POOLING_MEAN)) {
        /* a private salt: no cache hit may skip a prompt position whose logits (or hidden
         * state) we need */
        uint64_t c = ++e->salt_counter;
        memcpy(r->salt, "\x01plp-salt", 8);
        memcpy(r->salt + 8, &c, 8);
        gp.cache_salt = r->salt;
        gp.n_cache_salt = sizeof(r->salt);
    }
    gp.user = r;
    st = pl_scheduler_add(e->sched, &gp, &r->group, err);
    if (st != PL_STATUS_OK)
        goto fail;
    r->prev = e->tail;
    if (e->tail)
        e->tail->next = r;
    else
        e->head = r;
    e->tail = r;
    e->n_reqs++;
    e->n_added++;
    e->n_pooling += r->pooling;
    e->n_prompt_tokens += (uint64_t)rq->n_prompt;
    return PL_STATUS_OK;
fail:
    req_free(e, r);
    return st;
}

pl_status pl_engine_abort(struct pl_engine *e, uint64_t request_id, struct pl_err *err)
{
    struct req *r = req_find(e, request_id);
    if (!r || r->finished)
        return pl_err_set(err, PL_STATUS_NOT_FOUND, "no unfinished request has this id");
    return pl_scheduler_abort(e->sched, request_id, err);
}

bool pl_engine_lookup(const struct pl_engine *e, const char *name, uint64_t *request_id,
                      bool *finished)
{
    for (const struct req *r = e->head; r; r = r->next)
        if (r->name && !strcmp(r->name, name)) {
            *request_id = r->id;
            *finished = r->finished;
            return true;
        }
    return false;
}

bool pl_engine_has_unfinished(const struct pl_engine *e)
{
    return pl_scheduler_has_unfinished(e->sched);
}

bool pl_engine_has_pending(const struct pl_engine *e)
{
    return e->head != NULL;
}

/* Computes the token masks of this step's constrained rows (the grammar matchers' states
 * after their last token): called by the model run once the forward is launched, so the
 * host's mask work overlaps the GPU's (vLLM / xgrammar do the same), or before sampling
 * on the host. Allocates nothing. */
static void fill_masks(struct pl_engine *e)
{
    for (int i = 0; i < e->n_masks_pending; i++)
        pl_grammar_matcher_fill_mask(e->mask_gm[i],
                                     e->masks + (size_t)e->mask_row[i] * e->mask_words);
    e->n_masks_pending = 0;
}

static void fill_masks_cb(void *user) { fill_masks(user); }

/* ---- post-processing ---- */

/* One logprobs entry from a sampler result: entries past n_top are zeroed, so
 * outputs never carry bytes the sampler left unwritten (and compare equal
 * whichever path sampled them). */
static void lp_entry(struct pl_logprob_entry *en, int32_t token_id,
                     const struct pl_sample_result *res)
{
    memset(en, 0, sizeof(*en));
    en->token_id = token_id;
    en->logprob = res->logprob;
    en->rank = res->rank;
    en->n_top = res->n_top;
    int n = res->n_top < 0 ? 0 : res->n_top > PL_MAX_LOGPROBS ? PL_MAX_LOGPROBS : res->n_top;
    memcpy(en->top_ids, res->top_ids, sizeof(en->top_ids[0]) * (size_t)n);
    memcpy(en->top_logprobs, res->top_logprobs, sizeof(en->top_logprobs[0]) * (size_t)n);
}

static pl_status lp_append(struct seq_st *st, const struct pl_sample_result *res)
{
    if (st->n_lp == st->cap_lp) {
        int cap = st->cap_lp ? st->cap_lp * 2 : 16;
        void *p = realloc(st->lp, sizeof(*st->lp) * (size_t)cap);
        if (!p)
            return PL_STATUS_NO_MEMORY;
        st->lp = p;
        st->cap_lp = cap;
    }
    lp_entry(&st->lp[st->n_lp++], res->token_id, res);
    return PL_STATUS_OK;
}

/* Sets a sequence's finish reason from its scheduler status (first reason wins). */
static void note_finish(struct seq_st *st, const struct pl_seq *q)
{
    if (st->finish != PL_FINISH_NONE)
        return;
    switch (q->status) {
    case PL_SEQ_FINISHED_STOPPED:
        st->finish = PL_FINISH_STOP;
        break;
    case PL_SEQ_FINISHED_LENGTH:
        st->finish = PL_FINISH_LENGTH;
        break;
    case PL_SEQ_FINISHED_ABORTED:
        st->finish = PL_FINISH_ABORT;
        break;
    default:
        break;
    }
}

/*
 * After pl_scheduler_update appended tok to q: finish reasons, text, stop
 * strings. A stop string found in this token's text wins over a length
 * finish in the same step (vLLM's output processor does the same).
 */
static pl_status process_token(struct pl_engine *e, struct req *r, struct pl_seq *q, int32_t tok,
                               struct pl_err *err)
{
    struct seq_st *st = &r->st[q->index];
    const struct pl_sampling_params *pp = &r->params;
    bool by_token = q->status == PL_SEQ_FINISHED_STOPPED;
    if (by_token && st->finish == PL_FINISH_NONE && st->pending == PL_STOP_TOKEN_STOP_ID) {
        st->stop_kind = PL_STOP_REASON_TOKEN;
        st->stop_token = tok;
    }
    note_finish(st, q);
    r->dirty = true;
    if (!e->has_detok || st->text_final || r->pooling) /* a pooling request's token is no text */
        return PL_STATUS_OK;
    pl_status s;
    if (!st->detok) {
        s = e->detok.init(e->detok.ctx, r->prompt, r->n_prompt, pp->skip_special_tokens,
                          &st->detok, err);
        if (s != PL_STATUS_OK)
            return s;
    }
    /* vLLM leaves the stop token's text out unless include_stop_str_in_output */
    if (!by_token || pp->include_stop_str_in_output) {
        s = e->detok.push(st->detok, tok, &st->text, &st->text_len, err);
        if (s != PL_STATUS_OK)
            return s;
    }
    bool finished = pl_seq_is_finished(q);
    if (finished) {
        s = e->detok.flush(st->detok, &st->text, &st->text_len, err);
        if (s != PL_STATUS_OK)
            return s;
    }
    size_t hold = 0;
    if (pp->n_stop > 0) {
        if (pl_seq_num_outputs(q) > pp->min_tokens) { /* vLLM: strictly more */
            struct pl_stop_match m;
            pl_stop_check_strings(st->text, st->text_len, st->checked, pp->stop, pp->n_stop,
                                  pp->include_stop_str_in_output, &m);
            if (m.matched) {
                st->text_len = m.text_len;
                st->finish = PL_FINISH_STOP;
                st->stop_kind = PL_STOP_REASON_STRING;
                st->stop_index = m.stop_index;
                st->stop_token = -1;
                if (!finished)
                    pl_scheduler_finish_seq(e->sched, q, PL_SEQ_FINISHED_STOPPED);
                finished = true;
            } else {
                hold = m.hold_back;
            }
        }
        st->checked = st->text_len;
    }
    if (finished) {
        st->text_final = true;
        hold = 0;
        if (st->detok) {
            e->detok.fini(st->detok);
            st->detok = NULL;
        }
    }
    st->visible = st->text_len - hold;
    if (st->text_sent > st->visible) /* never: released text was checked already */
        st->text_sent = st->visible;
    return PL_STATUS_OK;
}

/* Takes finished groups off the scheduler and marks their requests. */
static void collect_finished(struct pl_engine *e)
{
    struct pl_seq_group *g;
    while ((g = pl_scheduler_pop_finished(e->sched)) != NULL) {
        struct req *r = g->user;
        assert(r && r->group == g);
        r->finished = true;
        r->dirty = true;
        for (int i = 0; i < g->n_seqs; i++) {
            struct seq_st *st = &r->st[g->seqs[i].index];
            note_finish(st, &g->seqs[i]);
            st->visible = st->text_len; /* aborted: release what was held back */
            st->text_final = true;
            if (st->detok && e->has_detok) {
                e->detok.fini(st->detok);
                st->detok = NULL;
            }
        }
    }
}

static pl_status ensure_logit_rows(struct pl_engine *e, int n, struct pl_err *err)
{
    if (n <= e->cap_logit_rows)
        return PL_STATUS_OK;
    float *p = realloc(e->logits, (size_t)n * (size_t)e->vocab * sizeof(float));
    if (!p)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "engine: out of memory for %d logits rows",
                          n);
    e->logits = p;
    e->cap_logit_rows = n;
    return PL_STATUS_OK;
}

/* The sequence that sampler row k of plan entry en feeds after the update. */
static struct pl_seq *row_seq(const struct pl_sched_seq *en, int k)
{
    if (en->n_samples > 1) {
        struct pl_seq *q = &en->seq->group->seqs[k];
        assert(q->index == k);
        return q;
    }
    return en->seq;
}

/*
 * The host path of a step: the model returns logits rows (n_uniq sampling
 * rows, then n_plp prompt-logprobs rows); prompt logprobs are read, the
 * sampling rows expanded in place to one row per sampler row (row_src[r] <= r,
 * so a backward pass is safe) and sampled by the host sampler.
 */
static pl_status host_sample_step(struct pl_engine *e, struct pl_batch *b, int n_uniq, int n_plp,
                                  int n_rows, struct pl_err *err)
{
    pl_status st = ensure_logit_rows(e, n_uniq + n_plp, err);
    if (st != PL_STATUS_OK)
        return st;
    b->logits_rows = e->logits_rows;
    b->n_logits = n_uniq + n_plp;
    st = e->model.run(e->model.ctx, b, e->logits, err);
    if (st != PL_STATUS_OK)
        return pl_err_prefix(err, "model");
    size_t V = (size_t)e->vocab;
    for (int i = 0; i < n_plp; i++) {
        struct req *r = e->plp_rows[i].r;
        int pos = e->plp_rows[i].pos;
        struct pl_sample_result res;
        pl_sampler_logprobs(e->logits + (size_t)(n_uniq + i) * V, e->vocab, r->prompt[pos + 1],
                            r->params.prompt_logprobs, &res);
        lp_entry(&r->plp[pos + 1], r->prompt[pos + 1], &res);
        if (pos + 1 > r->plp_next)
            r->plp_next = pos + 1;
    }
    for (int r = n_rows - 1; r >= 0; r--)
        if (e->row_src[r] != r)
            memcpy(e->logits + (size_t)r * V, e->logits + (size_t)e->row_src[r] * V,
                   V * sizeof(float));
    st = pl_sampler_sample(e->sampler, e->logits, n_rows, e->rows, e->results, err);
    if (st != PL_STATUS_OK)
        return pl_err_prefix(err, "sampler");
    return PL_STATUS_OK;
}

/*
 * Fails one request (and only it): its sequences leave the scheduler (their
 * blocks are freed), and every sample whose text is not final -- still
 * running, or finished in this step but not yet detokenized -- ends with
 * PL_FINISH_ERROR; samples that had already ended keep their reason. The
 * first failure's status and message are kept. The request is reported
 * finished by the next poll, like any other (collect_finished).
 */
static void req_fail(struct pl_engine *e, struct req *r, pl_status st, const char *msg)
{
    if (r->failed || r->finished)
        return;
    r->failed = true;
    r->error_status = st != PL_STATUS_OK ? st : PL_STATUS_INTERNAL;
    r->error = str_dup(msg && *msg ? msg : pl_status_str(r->error_status));
    struct pl_seq_group *g = r->group;
    for (int i = 0; i < g->n_seqs; i++) {
        struct pl_seq *q = &g->seqs[i];
        struct seq_st *sst = &r->st[q->index];
        if (!sst->text_final) {
            sst->finish = PL_FINISH_ERROR;
            sst->stop_kind = PL_STOP_REASON_NONE;
            sst->stop_token = -1;
        }
        if (!pl_seq_is_finished(q))
            pl_scheduler_finish_seq(e->sched, q, PL_SEQ_FINISHED_ABORTED);
    }
    r->dirty = true;
    PL_WARN("engine: request %s failed: %s", r->name ? r->name : "(unnamed)",
            r->error ? r->error : pl_status_str(r->error_status));
}

/* A failed step ends the requests it was running (each once), no others. */
static void fail_plan(struct pl_engine *e, const struct pl_sched_plan *plan, pl_status st,
                      const char *msg)
{
    for (int s = 0; s < plan->n_seqs; s++)
        req_fail(e, plan->seqs[s].seq->group->user, st, msg);
}

/* A failure before any plan exists (a scheduler bug): every unfinished request. */
static void fail_unfinished(struct pl_engine *e, pl_status st, const char *msg)
{
    for (struct req *r = e->head; r; r = r->next)
        req_fail(e, r, st, msg);
}

/*
 * The body of a step after schedule produced plan. A failure that concerns
 * one request (its detokenizer, its logprob memory, its prompt_logprobs rows)
 * fails that request here and the step goes on; a returned error concerns
 * the whole step (batch, model, sampler, scheduler update).
 */
static pl_status run_plan(struct pl_engine *e, struct pl_sched_plan *plan, double t0,
                          struct pl_err *err)
{
    struct pl_batch b;
    {
        struct pl_scheduler_stats ss;
        pl_scheduler_get_stats(e->sched, &ss);
        double reserved = (double)ss.blocks.n_blocks_used * e->p.sched.block_size;
        e->reserved_slots += reserved;
        e->waste_slots += ss.kv_waste * reserved;
    }

    pl_status st = pl_batch_builder_build(e->bb, plan, &b, err);
    if (st != PL_STATUS_OK)
        return pl_err_prefix(err, "batch");
    if (plan->n_copies > 0) {
        st = e->model.copy_blocks(e->model.ctx, plan->copies, plan->n_copies, err);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "model: copy blocks");
    }

    /*
     * logits rows: each sampling entry's last token once (an n > 1 group's
     * first sample repeats it in the batch; a model returns at most one row
     * per token), then the prompt-logprobs positions. row_src maps each
     * sampler row to its logits row (several rows of an n > 1 group share one).
     */
    int n_rows = b.n_logits, n_uniq = 0;
    assert(n_rows == plan->n_samples && n_rows <= e->max_rows);
    for (int r = 0; r < n_rows; r++) {
        if (n_uniq == 0 || e->logits_rows[n_uniq - 1] != b.logits_rows[r])
            e->logits_rows[n_uniq++] = b.logits_rows[r];
        e->row_src[r] = n_uniq - 1;
    }
    int n_plp = 0;
    for (int s = 0; s < plan->n_seqs; s++) {
        const struct pl_sched_seq *en = &plan->seqs[s];
        struct req *r = en->seq->group->user;
        if (!r->plp || en->is_decode || r->failed)
            continue;
        int p0 = en->start_pos > r->plp_next ? en->start_pos : r->plp_next;
        int p1 = en->start_pos + en->n_new;
        if (p1 > r->n_prompt - 1)
            p1 = r->n_prompt - 1;
        int mark = n_plp;
        for (int p = p0; p < p1; p++) {
            if (e->model.max_logits_rows > 0 && n_uniq + n_plp >= e->model.max_logits_rows) {
                /* this request's rows do not fit: it fails, the step goes on without
                 * them (the model still computes its tokens; they are dropped) */
                char msg[160];
                snprintf(msg, sizeof(msg),
                         "prompt_logprobs: the model returns at most %d logits rows per step",
                         e->model.max_logits_rows);
                n_plp = mark;
                req_fail(e, r, PL_STATUS_LIMIT, msg);
                break;
            }
            e->logits_rows[n_uniq + n_plp] = b.cu_seqlens_q[s] + (p - en->start_pos);
            e->plp_rows[n_plp].r = r;
            e->plp_rows[n_plp].pos = p;
            n_plp++;
        }
    }
    /* pooling: the prompt positions of pooling requests this step computes, not yet pooled */
    int n_hid = 0;
    for (int s = 0; e->hidden && s < plan->n_seqs; s++) {
        const struct pl_sched_seq *en = &plan->seqs[s];
        struct req *r = en->seq->group->user;
        if (!r->pooling || en->is_decode)
            continue;
        int end = en->start_pos + en->n_new < r->n_prompt ? en->start_pos + en->n_new
                                                          : r->n_prompt;
        int p0 = r->pool.type == PL_POOLING_LAST ? r->n_prompt - 1 : en->start_pos;
        if (p0 < r->pool_next)
            p0 = r->pool_next;
        if (p0 < en->start_pos)
            p0 = en->start_pos;
        for (int p = p0; p < end; p++) {
            e->hidden_rows[n_hid] = b.cu_seqlens_q[s] + (p - en->start_pos);
            e->pool_rows[n_hid].r = r;
            e->pool_rows[n_hid].pos = p;
            n_hid++;
        }
    }
    b.hidden_rows = e->hidden_rows;
    b.n_hidden = n_hid;
    b.hidden = n_hid ? e->hidden : NULL;
    /* sampler rows in plan order */
    int row = 0;
    bool basic = true;
    e->n_masks_pending = 0;
    for (int s = 0; s < plan->n_seqs; s++) {
        const struct pl_sched_seq *en = &plan->seqs[s];
        const struct pl_seq *q = en->seq;
        struct req *r = q->group->user;
        for (int k = 0; k < en->n_samples; k++, row++) {
            int idx = en->n_samples > 1 ? k : q->index;
            struct pl_sampler_row *sr = &e->rows[row];
            sr->params = &r->params;
            sr->prompt_ids = q->tokens;
            sr->n_prompt = q->n_prompt;
            sr->output_ids = q->tokens + q->n_prompt;
            sr->n_output = pl_seq_num_outputs(q);
            sr->eos_ids = r->params.ignore_eos ? NULL : e->eos;
            sr->n_eos = r->params.ignore_eos ? 0 : e->p.n_eos;
            sr->rng = r->params.has_seed ? &r->st[idx].rng : NULL;
            sr->token_mask = NULL;
            if (r->st[idx].gm) {
                /* computed by fill_masks, after the forward is launched */
                sr->token_mask = e->masks + (size_t)row * e->mask_words;
                e->mask_gm[e->n_masks_pending] = r->st[idx].gm;
                e->mask_row[e->n_masks_pending++] = row;
            }
            e->row_index[row] = idx;
            basic = basic && pl_sampler_row_is_basic(sr);
        }
    }

    double t_model = pl_clock_seconds();
    b.before_sample = NULL;
    if (e->model.run_sample && n_plp == 0 && basic) {
        /*
         * Sampling where the logits live: the engine draws the uniforms (the
         * same draws, in the same order, as the host sampler would take), the
         * model samples each row from its source logits row, and only the
         * results come back.
         */
        pl_sampler_draw(e->sampler, e->rows, n_rows, e->uniforms);
        b.logits_rows = e->logits_rows;
        b.n_logits = n_uniq;
        if (e->n_masks_pending) { /* host work beside the GPU's */
            b.before_sample = fill_masks_cb;
            b.before_sample_user = e;
        }
        st = e->model.run_sample(e->model.ctx, &b, e->row_src, n_rows, e->rows, e->uniforms,
                                 e->results, err);
        fill_masks(e); /* none left unless the run sampled nothing */
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "model");
        e->n_steps_backend_sampling++;
    } else {
        fill_masks(e);
        st = host_sample_step(e, &b, n_uniq, n_plp, n_rows, err);
        if (st != PL_STATUS_OK)
            return st;
        e->n_steps_host_sampling++;
    }
    double t_post = pl_clock_seconds();
    for (int i = 0; i < n_hid; i++) { /* positions in order: a deterministic sum */
        struct req *r = e->pool_rows[i].r;
        const float *h = e->hidden + (size_t)i * (size_t)e->model.hidden_size;
        for (int k = 0; k < e->model.hidden_size; k++)
            r->pool_acc[k] = r->pool.type == PL_POOLING_MEAN ? r->pool_acc[k] + h[k] : h[k];
        r->pool_next = e->pool_rows[i].pos + 1;
    }
    row = 0;
    int n_applied = 0;
    for (int s = 0; s < plan->n_seqs; s++) {
        const struct pl_sched_seq *en = &plan->seqs[s];
        const struct pl_seq *q = en->seq;
        struct req *r = q->group->user;
        for (int k = 0; k < en->n_samples; k++, row++) {
            struct seq_st *sst = &r->st[e->row_index[row]];
            int32_t tok = e->results[row].token_id;
            e->sampled[row] = tok;
            e->stop[row] = false;
            if (r->failed) /* its sequences left the scheduler: update skips the row */
                continue;
            /* the model's side of the contract: ids it returns index its vocab */
            if (tok < 0 || tok >= e->vocab)
                return pl_err_set(err, PL_STATUS_INTERNAL,
                                  "model: sampled token id %d is outside the vocabulary (%d)",
                                  (int)tok, e->vocab);
            sst->pending = pl_stop_check_token(&r->params, e->eos, e->p.n_eos, tok,
                                               pl_seq_num_outputs(q) + 1, q->n_tokens + 1,
                                               e->p.sched.max_model_len);
            if (sst->gm && !pl_grammar_matcher_accept_token(sst->gm, tok) &&
                sst->pending == PL_STOP_TOKEN_NONE) {
                /* only when no token was allowed (the sampler's all-masked fallback, e.g.
                 * ignore_eos after the grammar completed): the output ends here */
                sst->pending = PL_STOP_TOKEN_EOS;
            }
            e->stop[row] = sst->pending == PL_STOP_TOKEN_EOS ||
                           sst->pending == PL_STOP_TOKEN_STOP_ID;
            if (r->params.logprobs >= 0) {
                if (lp_append(sst, &e->results[row]) != PL_STATUS_OK) {
                    req_fail(e, r, PL_STATUS_NO_MEMORY, "out of memory for logprobs");
                    continue;
                }
                sst->cum_logprob += e->results[row].logprob;
            }
            n_applied += !r->pooling; /* a pooling request's one token is never reported */
        }
    }
    st = pl_scheduler_update(e->sched, plan, e->sampled, e->stop, err);
    if (st != PL_STATUS_OK)
        return pl_err_prefix(err, "scheduler update");
    e->n_generation_tokens += (uint64_t)n_applied;

    row = 0;
    for (int s = 0; s < plan->n_seqs; s++) {
        const struct pl_sched_seq *en = &plan->seqs[s];
        struct req *r = en->seq->group->user;
        for (int k = 0; k < en->n_samples; k++, row++) {
            if (r->failed) /* an n > 1 group failed before its fork has no sequence k */
                continue;
            struct pl_err rerr;
            pl_err_clear(&rerr);
            if (process_token(e, r, row_seq(en, k), e->sampled[row], &rerr) != PL_STATUS_OK)
                req_fail(e, r, rerr.status, rerr.msg); /* its detokenizer: only its problem */
        }
    }
    if (e->profile) {
        double t_end = pl_clock_seconds();
        e->prof_sched += t_model - t0;
        e->prof_model += t_post - t_model;
        e->prof_post += t_end - t_post;
        e->prof_steps++;
    }
    return PL_STATUS_OK;
}

pl_status pl_engine_step(struct pl_engine *e, struct pl_err *err)
{
    struct pl_err local;
    if (!err)
        err = &local;
    double t0 = pl_clock_seconds();
    struct pl_sched_plan plan;
    pl_status st = pl_scheduler_schedule(e->sched, &plan, err);
    if (st != PL_STATUS_OK) {
        fail_unfinished(e, st, err->msg);
    } else {
        collect_finished(e);
        for (int i = 0; i < plan.n_seqs; i++) {
            struct req *r = plan.seqs[i].seq->group->user;
            if (r->t_first_sched == 0)
                r->t_first_sched = t0;
        }
        if (plan.n_seqs > 0) {
            st = run_plan(e, &plan, t0, err);
            if (st != PL_STATUS_OK)
                fail_plan(e, &plan, st, err->msg);
        }
    }
    /* every request this step ended -- normally, by a stop string, by a failure --
     * is reported by the poll that follows it, never a step later */
    collect_finished(e);
    e->seconds += pl_clock_seconds() - t0;
    return st;
}

/* ---- outputs ---- */

static void *mem_dup(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);
    if (d && n)
        memcpy(d, p, n);
    return d;
}

/* Fills c with sequence q's output since its cursors (delta) or all of it. */
static bool fill_completion(const struct req *r, const struct pl_seq *q, const struct seq_st *st,
                            bool delta, struct pl_completion_output *c)
{
    memset(c, 0, sizeof(*c));
    c->index = q->index;
    int n_out = r->pooling ? 0 : pl_seq_num_outputs(q); /* a pooling request's token is no output */
    int t0 = delta && !r->pooling ? st->n_tok_sent : 0;
    size_t x0 = delta ? st->text_sent : 0;
    c->n_token_ids = n_out - t0;
    c->token_ids = mem_dup(q->tokens + q->n_prompt + t0, sizeof(int32_t) * (size_t)c->n_token_ids);
    c->text_len = st->visible - x0;
    c->text = malloc(c->text_len + 1);
    if (!c->token_ids || !c->text)
        return false;
    if (c->text_len)
        memcpy(c->text, st->text + x0, c->text_len);
    c->text[c->text_len] = '\0';
    c->has_logprobs = r->params.logprobs >= 0;
    c->cumulative_logprob = c->has_logprobs ? st->cum_logprob : 0.0;
    if (c->has_logprobs) {
        /* a request failed between sampling and its update may hold one more */
        assert(st->n_lp >= n_out);
        c->logprobs = mem_dup(st->lp ? st->lp + t0 : NULL,
                              sizeof(*st->lp) * (size_t)c->n_token_ids);
        if (!c->logprobs)
            return false;
    }
    c->finish_reason = st->finish;
    c->stop_reason_kind = st->stop_kind;
    c->stop_token_id = st->stop_kind == PL_STOP_REASON_TOKEN ? st->stop_token : -1;
    if (st->stop_kind == PL_STOP_REASON_STRING) {
        c->stop_str = str_dup(r->params.stop[st->stop_index]);
        if (!c->stop_str)
            return false;
    }
    return true;
}

static bool has_news(const struct pl_seq *q, const struct seq_st *st)
{
    return pl_seq_num_outputs(q) > st->n_tok_sent || st->visible > st->text_sent ||
           (st->finish != PL_FINISH_NONE && !st->finish_sent);
}

/* A finished pooling request's vector (NULL when it did not pool every position it needed:
 * aborted). MEAN divides by the prompt length; normalize divides by the L2 norm. */
static float *pooled_vector(const struct pl_engine *e, const struct req *r)
{
    if (r->pool_next < r->n_prompt)
        return NULL;
    int H = e->model.hidden_size;
    float *v = malloc(sizeof(float) * (size_t)H);
    if (!v)
        return NULL;
    double scale = r->pool.type == PL_POOLING_MEAN ? 1.0 / r->n_prompt : 1.0;
    double norm = 0;
    for (int k = 0; k < H; k++)
        norm += (r->pool_acc[k] * scale) * (r->pool_acc[k] * scale);
    norm = sqrt(norm);
    if (r->pool.normalize && norm > 0) /* vLLM's F.normalize: x / max(||x||, eps) */
        scale /= norm > 1e-12 ? norm : 1e-12;
    for (int k = 0; k < H; k++)
        v[k] = (float)(r->pool_acc[k] * scale);
    return v;
}

/* Marks every sample's finish as sent and advances the cursors (a poll reported r). */
static void advance_cursors(struct req *r)
{
    const struct pl_seq_group *g = r->group;
    for (int i = 0; i < g->n_seqs; i++) {
        const struct pl_seq *q = &g->seqs[i];
        struct seq_st *st = &r->st[q->index];
        st->n_tok_sent = pl_seq_num_outputs(q);
        st->text_sent = st->visible;
        if (st->finish != PL_FINISH_NONE)
            st->finish_sent = true;
    }
    r->dirty = false;
}

/* The request-level fields of an output about to be reported: its finish and its times. */
static void finish_output(struct req *r, struct pl_request_output *o, double now)
{
    bool has_tokens = false;
    for (int i = 0; i < o->n_outputs; i++) {
        has_tokens |= o->outputs[i].n_token_ids > 0;
        if (r->first_finish == PL_FINISH_NONE)
            r->first_finish = o->outputs[i].finish_reason;
    }
    if (has_tokens) {
        if (r->t_first_tok == 0)
            r->t_first_tok = now;
        r->t_prev_tok = r->t_last_tok;
        r->t_last_tok = now;
    }
    if (o->finished)
        o->finish_reason = r->failed ? PL_FINISH_ERROR
                           : r->first_finish != PL_FINISH_NONE ? r->first_finish
                                                               : PL_FINISH_ABORT;
    o->metrics.arrival_time = r->t_arrival;
    o->metrics.first_scheduled_time = r->t_first_sched;
    o->metrics.first_token_time = r->t_first_tok;
    o->metrics.last_token_time = r->t_last_tok;
    o->metrics.prev_token_time = r->t_prev_tok;
    o->metrics.finished_time = o->finished ? now : 0;
}

/*
 * r's finished output built from what was reserved at admission only (no
 * allocation): every sample whose finish was not reported yet, without the
 * text and tokens the failed fill could not copy, and the error saying why.
 * So a finish is never lost to a lack of memory.
 */
static void fill_reserved(struct req *r, struct pl_request_output *o, double now)
{
    memset(o, 0, sizeof(*o));
    const struct pl_seq_group *g = r->group;
    o->request_num = r->id;
    o->request_id = r->res_id;
    o->outputs = r->res_outputs;
    r->res_id = NULL;
    r->res_outputs = NULL;
    for (int i = 0; i < g->n_seqs; i++) {
        const struct pl_seq *q = &g->seqs[i];
        const struct seq_st *st = &r->st[q->index];
        if (st->finish_sent)
            continue;
        struct pl_completion_output *c = &o->outputs[o->n_outputs++];
        c->index = q->index;
        c->finish_reason = st->finish != PL_FINISH_NONE ? st->finish : PL_FINISH_ERROR;
        c->stop_token_id = -1;
    }
    o->num_cached_tokens = g->n_cached_tokens;
    o->finished = true;
    if (r->failed && r->error) {
        o->error = r->error; /* the first failure's message wins */
        r->error = NULL;
    } else {
        o->error = r->res_error;
        r->res_error = NULL;
    }
    o->error_status = r->failed ? r->error_status : PL_STATUS_NO_MEMORY;
    r->failed = true;
    finish_output(r, o, now);
    advance_cursors(r);
}

/* Builds r's output into o; on success advances the cursors (delta). */
static bool fill_request(const struct pl_engine *e, struct req *r, bool delta,
                         struct pl_request_output *o, double now)
{
    memset(o, 0, sizeof(*o));
    const struct pl_seq_group *g = r->group;
    o->request_num = r->id;
    o->request_id = str_dup(r->res_id);
    if (!o->request_id)
        return false;
    bool send_prompt = !delta || !r->prompt_sent;
    if (send_prompt) {
        o->prompt = str_dup(r->prompt_text);
        o->prompt_token_ids = mem_dup(r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
        o->n_prompt_token_ids = r->n_prompt;
        if ((r->prompt_text && !o->prompt) || !o->prompt_token_ids)
            return false;
    }
    o->num_cached_tokens = g->n_cached_tokens;
    bool plp_ready = r->plp && r->plp_next >= r->n_prompt - 1;
    bool send_plp = plp_ready && (!delta || !r->plp_sent);
    if (send_plp) {
        o->has_prompt_logprobs = true;
        o->prompt_logprobs = mem_dup(r->plp, sizeof(*r->plp) * (size_t)r->n_prompt);
        if (!o->prompt_logprobs)
            return false;
        if (!o->prompt_token_ids) { /* the array's length comes with the ids */
            o->prompt_token_ids = mem_dup(r->prompt, sizeof(int32_t) * (size_t)r->n_prompt);
            o->n_prompt_token_ids = r->n_prompt;
            if (!o->prompt_token_ids)
                return false;
        }
    }
    o->outputs = calloc((size_t)(g->n_seqs > 0 ? g->n_seqs : 1), sizeof(*o->outputs));
    if (!o->outputs)
        return false;
    for (int i = 0; i < g->n_seqs; i++) {
        const struct pl_seq *q = &g->seqs[i];
        const struct seq_st *st = &r->st[q->index];
        if (delta && !has_news(q, st))
            continue;
        if (!fill_completion(r, q, st, delta, &o->outputs[o->n_outputs++]))
            return false;
    }
    o->finished = r->finished;
    if (r->failed && r->finished) {
        o->error_status = r->error_status;
        o->error = str_dup(r->error ? r->error : pl_status_str(r->error_status));
        if (!o->error)
            return false;
    } else if (r->pooling && r->finished) {
        o->embedding = pooled_vector(e, r);
        o->n_embedding = o->embedding ? e->model.hidden_size : 0;
        if (!o->embedding && r->pool_next >= r->n_prompt)
            return false; /* out of memory: the poll is retried */
    }
    /* success: advance the cursors */
    finish_output(r, o, now);
    r->prompt_sent = true;
    if (send_plp)
        r->plp_sent = true;
    advance_cursors(r);
    return true;
}

int pl_engine_poll_into(struct pl_engine *e, bool delta, struct pl_request_output *items,
                        int cap)
{
    int n = 0;
    double now = pl_clock_seconds();
    struct req *r = e->head;
    while (r && n < cap) {
        struct req *next = r->next;
        if (delta ? r->dirty : r->finished) {
            struct pl_request_output *o = &items[n];
            bool reported = fill_request(e, r, delta, o, now);
            if (!reported) {
                pl_request_output_fini(o);
                if (r->finished) { /* its end is never lost: the reserve carries it */
                    fill_reserved(r, o, now);
                    reported = true;
                }
                /* else: nothing was taken; its news waits for the next poll */
            }
            n += reported;
            if (reported && r->finished) {
                req_unlink(e, r);
                pl_seq_group_free(r->group);
                req_free(e, r);
                e->n_finished++;
            }
        }
        r = next;
    }
    return n;
}

pl_status pl_engine_poll(struct pl_engine *e, bool delta, struct pl_outputs *out,
                         struct pl_err *err)
{
    int n_new = 0;
    for (struct req *r = e->head; r; r = r->next)
        if (delta ? r->dirty : r->finished)
            n_new++;
    if (n_new == 0)
        return PL_STATUS_OK;
    struct pl_request_output *items =
        realloc(out->items, sizeof(*items) * (size_t)(out->n + n_new));
    if (!items)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory for outputs");
    out->items = items;
    out->n += pl_engine_poll_into(e, delta, items + out->n, n_new);
    return PL_STATUS_OK;
}

void pl_engine_get_stats(const struct pl_engine *e, struct pl_engine_stats *out)
{
    memset(out, 0, sizeof(*out));
    pl_scheduler_get_stats(e->sched, &out->sched);
    out->kv_waste_avg = e->reserved_slots > 0 ? e->waste_slots / e->reserved_slots : 0.0;
    out->n_prompt_tokens = e->n_prompt_tokens;
    out->n_generation_tokens = e->n_generation_tokens;
    out->n_requests_added = e->n_added;
    out->n_requests_finished = e->n_finished;
    out->n_pooling_requests = e->n_pooling;
    out->seconds = e->seconds;
    out->n_steps_backend_sampling = e->n_steps_backend_sampling;
    out->n_steps_host_sampling = e->n_steps_host_sampling;
}
