/*
 * llm.c -- the public C API (include/pagellm.h): struct pl_llm, vLLM's LLM
 * class in C.
 *
 * Owns: the model runner, the tokenizer (when the model directory has one),
 * the parsed default chat template, the engine with its interface adapters
 * (pl_model_runner behind struct pl_engine_model, pl_detok behind struct
 * pl_engine_detok), the sampling defaults (vLLM's, then
 * generation_config.json under "auto") and the handle's last error message.
 *
 * Request ids: generate/chat number their requests from a counter (like
 * vLLM's LLM); the request interface takes the caller's string ids and the
 * engine keeps them with each request. generate refuses to run while
 * requests of the request interface are pending, so neither steals the
 * other's outputs.
 * Threading: a recursive mutex (mu) guards the engine: every call that
 * touches it holds mu, generate/chat for their whole run. pl_llm_submit
 * starts the handle's engine thread (the async engine, over llm_ops below);
 * from then on that thread steps and polls the engine (each op under mu), the
 * request interface (add_request / step / poll / abort) is refused so nobody
 * else takes its outputs, and generate/chat run only while no submitted
 * request is unfinished. Error messages are kept per thread (tl_err).
 */
#include "engine/sampling_params.h"
#include "pagellm.h"

#include "backend/backend.h"
#include "engine/async_engine.h"
#include "engine/beam_search.h"
#include "engine/engine.h"
#include "engine/llm_internal.h"
#include "engine/model_runner.h"
#include "engine/vocab_check.h"
#include "grammar/grammar.h"
#include "tokenizer/chat_template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/debug_env.h"
#include "util/err.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pl_llm {
    char errmsg[PL_ERR_MSG_MAX];       /* a failed open's message (every thread sees it) */
    pthread_mutex_t mu;                /* recursive: guards the engine (see the top) */
    struct pl_async_engine *ae;        /* the engine thread, or NULL before pl_llm_submit */
    struct pl_model_runner *runner;
    struct pl_tokenizer *tok;
    struct pl_grammar_vocab *gvocab;   /* structured output: the tokenizer's bytes (with tok) */
    struct pl_chat_template *tmpl;     /* the tokenizer's template, parsed on first use */
    struct pl_engine *engine;
    struct pl_engine_model im;
    struct pl_engine_detok dt;
    struct pl_sampling_params defaults;
    struct pl_generation_config override; /* override_generation_config (has_* all false: none) */
    int vocab, max_model_len;
    int32_t eos_id;                    /* the primary eos (beam search), -1: none */
    uint64_t next_id;
    pl_llm_progress_fn progress;
    void *progress_user;
    char *fail_file;                   /* PAGELLM_TEST_FAIL_STEP_FILE (test hook), or NULL */
};

void pl_free(void *p)
{
    free(p);
}

void pl_llm_params_default(struct pl_llm_params *p)
{
    memset(p, 0, sizeof(*p));
    p->dtype = "auto";
    p->max_num_seqs = 256;
    p->max_num_batched_tokens = 2048;
    p->block_size = 16;
    p->kv_cache_bytes = (size_t)256 << 20;
    p->enable_prefix_caching = true;
    p->enable_chunked_prefill = true;
    p->device = "auto";
    p->gpu_memory_utilization = 0.9;
    p->load_format = "auto";
    p->tensor_parallel_size = 1;
    p->generation_config = "auto";
}

void pl_chat_options_default(struct pl_chat_options *o)
{
    memset(o, 0, sizeof(*o));
    o->add_generation_prompt = true;
}

/* The calling thread's last message, and the handle it belongs to. */
static _Thread_local struct {
    const struct pl_llm *llm;
    char msg[PL_ERR_MSG_MAX];
} tl_err;

/* Records err's message for this thread and handle and returns its status. */
static pl_status fail(struct pl_llm *llm, const struct pl_err *err, pl_status st)
{
    tl_err.llm = llm;
    snprintf(tl_err.msg, sizeof(tl_err.msg), "%s", err->msg);
    return st;
}

static pl_status ok(struct pl_llm *llm)
{
    if (tl_err.llm == llm)
        tl_err.msg[0] = '\0';
    return PL_STATUS_OK;
}

const char *pl_llm_errmsg(const struct pl_llm *llm)
{
    if (!llm)
        return "out of memory";
    return tl_err.llm == llm ? tl_err.msg : llm->errmsg;
}

static void lock(const struct pl_llm *llm)
{
    pthread_mutex_lock((pthread_mutex_t *)&llm->mu);
}

static void unlock(const struct pl_llm *llm)
{
    pthread_mutex_unlock((pthread_mutex_t *)&llm->mu);
}

/* ---- adapters ---- */

/*
 * Test hook (like the async engine's PAGELLM_TEST_STALL_FILE): while the file
 * named by PAGELLM_TEST_FAIL_STEP_FILE exists, model runs fail as a broken
 * backend's would -- every run when the file holds no number, else only runs
 * whose batch holds that token id (so a test can fail one prompt's steps and
 * not another's). Black-box tests use it to check how failures reach clients.
 */
static pl_status test_hook_fail(const struct pl_llm *llm, const struct pl_batch *b,
                                struct pl_err *err)
{
    if (!llm->fail_file)
        return PL_STATUS_OK;
    FILE *f = fopen(llm->fail_file, "r");
    if (!f)
        return PL_STATUS_OK;
    long id = -1;
    bool fail = fscanf(f, "%ld", &id) != 1;
    fclose(f);
    for (int t = 0; !fail && b && t < b->n_tokens; t++)
        fail = b->token_ids[t] == id;
    return fail ? pl_err_set(err, PL_STATUS_INTERNAL,
                             "backend failure (test hook PAGELLM_TEST_FAIL_STEP_FILE)")
                : PL_STATUS_OK;
}

static pl_status runner_run(void *ctx, const struct pl_batch *b, float *logits,
                            struct pl_err *err)
{
    struct pl_llm *llm = ctx;
    pl_status st = test_hook_fail(llm, b, err);
    return st != PL_STATUS_OK ? st : pl_model_runner_run(llm->runner, b, logits, err);
}

static pl_status runner_run_sample(void *ctx, const struct pl_batch *b, const int32_t *row_src,
                                   int n_rows, const struct pl_sampler_row *rows,
                                   const double *uniforms, struct pl_sample_result *results,
                                   struct pl_err *err)
{
    struct pl_llm *llm = ctx;
    pl_status st = test_hook_fail(llm, b, err);
    return st != PL_STATUS_OK ? st
                              : pl_model_runner_run_sample(llm->runner, b, row_src, n_rows, rows,
                                                           uniforms, results, err);
}

static pl_status runner_copy(void *ctx, const struct pl_block_copy *c, int n, struct pl_err *err)
{
    struct pl_llm *llm = ctx;
    return pl_model_runner_copy_blocks(llm->runner, c, n, err);
}

static pl_status detok_init(void *ctx, const int32_t *prompt, int n_prompt, bool skip,
                            void **state, struct pl_err *err)
{
    struct pl_detok *d = calloc(1, sizeof(*d));
    if (!d)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory for a detokenizer");
    pl_status st = pl_detok_init(d, ctx, prompt, n_prompt, skip, err);
    if (st != PL_STATUS_OK) {
        free(d);
        return st;
    }
    *state = d;
    return PL_STATUS_OK;
}

static pl_status detok_push(void *state, int32_t id, char **text, size_t *len, struct pl_err *err)
{
    return pl_detok_push(state, id, text, len, err);
}

static pl_status detok_flush(void *state, char **text, size_t *len, struct pl_err *err)
{
    return pl_detok_flush(state, text, len, err);
}

static void detok_fini(void *state)
{
    pl_detok_fini(state);
    free(state);
}

/* ---- creation ---- */

static bool file_exists(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return access(path, R_OK) == 0;
}

static void add_eos(int32_t *eos, int *n, int id)
{
    if (id < 0)
        return;
    for (int i = 0; i < *n; i++)
        if (eos[i] == id)
            return;
    if (*n < 2 * PL_MAX_EOS_IDS + 1)
        eos[(*n)++] = id;
}

static pl_status llm_open(struct pl_llm *llm, const struct pl_llm_params *p, struct pl_err *err)
{
    if (!p->model || !*p->model)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "model: no model directory given");
    const char *dev = p->device ? p->device : "auto";
    if (!pl_backend_name_known(dev))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "device: '%s' is not one of %s", dev,
                          pl_backend_names());
    enum pl_dtype dtype = PL_DTYPE_F32;
    const bool convert_dtype = p->dtype && strcmp(p->dtype, "auto");
    if (convert_dtype && !pl_dtype_parse_torch(p->dtype, &dtype))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "dtype: '%s' is not one of auto, bfloat16, float16, half, float32, "
                          "float",
                          p->dtype);
    pl_status st = pl_generation_config_parse_override(p->override_generation_config,
                                                       "override_generation_config",
                                                       &llm->override, err);
    if (st != PL_STATUS_OK)
        return st;
    const char *gc = p->generation_config ? p->generation_config : "auto";
    if (strcmp(gc, "auto") && strcmp(gc, "vllm"))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "generation_config: '%s' is not auto or vllm", gc);
    if (p->block_size != 8 && p->block_size != 16 && p->block_size != 32)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "block_size: %d is not 8, 16 or 32", p->block_size);
    if (p->max_num_seqs < 1 || p->max_num_batched_tokens < 1 || p->num_kv_blocks < 0 ||
        p->max_model_len < 0 || p->n_threads < 0 || p->long_prefill_token_threshold < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "max_num_seqs, max_num_batched_tokens must be positive; "
                          "num_kv_blocks, max_model_len, n_threads, "
                          "long_prefill_token_threshold not negative");
    if (p->max_num_batched_tokens < p->max_num_seqs)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "max_num_batched_tokens (%d) must be >= max_num_seqs (%d)",
                          p->max_num_batched_tokens, p->max_num_seqs);

    struct pl_model_runner_params rp;
    pl_model_runner_params_default(&rp);
    rp.model_dir = p->model;
    rp.n_threads = p->n_threads;
    rp.block_size = p->block_size;
    rp.num_kv_blocks = p->num_kv_blocks;
    if (p->kv_cache_bytes)
        rp.kv_cache_bytes = p->kv_cache_bytes;
    rp.max_num_batched_tokens = p->max_num_batched_tokens;
    rp.max_num_seqs = p->max_num_seqs;
    rp.max_model_len = p->max_model_len;
    rp.device = dev;
    rp.tensor_parallel_size = p->tensor_parallel_size > 0 ? p->tensor_parallel_size : 1;
    if (p->gpu_memory_utilization <= 0.0 || p->gpu_memory_utilization > 1.0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "gpu_memory_utilization must be in (0, 1], got %g",
                          p->gpu_memory_utilization);
    rp.gpu_memory_utilization = p->gpu_memory_utilization;
    rp.load_format = p->load_format ? p->load_format : "auto";
    rp.seed = p->seed;
    rp.convert_dtype = convert_dtype;
    rp.dtype = dtype;
    rp.allow_long_max_model_len = p->allow_long_max_model_len;
    rp.enforce_eager = p->enforce_eager;
    rp.cpu_scalar_kernels = p->cpu_scalar_kernels;
    rp.cuda_cublas_only = p->cuda_cublas_only;
    rp.quantization = p->quantization;
    if (!pl_quant_flag_known(p->quantization))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "quantization: '%s' is not one of %s", p->quantization,
                          pl_quant_flag_values());
    if (p->kv_cache_dtype && !pl_kv_cache_dtype_parse(p->kv_cache_dtype, &rp.kv_cache_dtype))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "kv_cache_dtype: '%s' is not one of auto, fp8, fp8_e4m3",
                          p->kv_cache_dtype);
    st = pl_model_runner_new(&rp, &llm->runner, err);
    if (st != PL_STATUS_OK)
        return st;
    const struct pl_model_config *cfg = pl_model_runner_config(llm->runner);

    const char *tdir = p->tokenizer ? p->tokenizer : p->model;
    if (p->tokenizer || file_exists(tdir, "tokenizer.json")) {
        st = pl_tokenizer_load(tdir, &llm->tok, err);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "tokenizer");
    }

    llm->vocab = cfg->vocab_size;
    llm->max_model_len = pl_model_runner_max_model_len(llm->runner);
    pl_sampling_params_default(&llm->defaults);
    if (!strcmp(gc, "auto"))
        pl_sampling_params_apply_generation_config(&llm->defaults, &cfg->gen);
    pl_sampling_params_apply_generation_override(&llm->defaults, &llm->override);
    if (p->override_generation_config) {
        /* the operator's values must make valid requests (ids unchecked: none here) */
        struct pl_sampling_params check = llm->defaults;
        if (pl_sampling_params_validate(&check, cfg->vocab_size, err) != PL_STATUS_OK)
            return pl_err_prefix(err, "override_generation_config");
    }

    /* eos: the tokenizer's (vLLM's primary), then config.json's, then
       generation_config.json's extra ids (vLLM adds those to stop_token_ids) */
    int32_t eos[2 * PL_MAX_EOS_IDS + 1];
    int n_eos = 0;
    if (llm->tok)
        add_eos(eos, &n_eos, pl_tokenizer_eos_id(llm->tok));
    for (int i = 0; i < cfg->n_eos_token_ids; i++)
        add_eos(eos, &n_eos, cfg->eos_token_ids[i]);
    for (int i = 0; i < cfg->gen.n_eos_token_ids; i++)
        add_eos(eos, &n_eos, cfg->gen.eos_token_ids[i]);
    for (int i = 0; i < n_eos; i++)
        if (eos[i] >= llm->vocab) /* an eos the model cannot emit is no stop condition */
            eos[i--] = eos[--n_eos];

    llm->eos_id = n_eos > 0 ? eos[0] : -1;
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    if (dbg.test_fail_step_file && !(llm->fail_file = strdup(dbg.test_fail_step_file)))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    llm->im.ctx = llm;
    llm->im.vocab_size = llm->vocab;
    llm->im.hidden_size = cfg->hidden_size; /* the runner returns hidden rows (pooling) */
    llm->im.max_logits_rows = 0;
    llm->im.run = runner_run;
    llm->im.copy_blocks = runner_copy;
    /* sampling on the backend unless host_sampling asks for the host sampler on
     * downloaded logits (the reference path, for comparisons) */
    llm->im.run_sample = pl_model_runner_can_sample(llm->runner) && !p->host_sampling
                             ? runner_run_sample
                             : NULL;
    llm->dt.ctx = llm->tok;
    llm->dt.init = detok_init;
    llm->dt.push = detok_push;
    llm->dt.flush = detok_flush;
    llm->dt.fini = detok_fini;

    struct pl_engine_params ep;
    pl_engine_params_default(&ep);
    ep.sched.n_blocks = pl_model_runner_num_blocks(llm->runner);
    ep.sched.block_size = pl_model_runner_block_size(llm->runner);
    ep.sched.max_num_batched_tokens = pl_model_runner_max_tokens(llm->runner);
    ep.sched.max_num_seqs = pl_model_runner_max_seqs(llm->runner);
    ep.sched.max_model_len = llm->max_model_len;
    ep.sched.enable_prefix_caching = p->enable_prefix_caching;
    ep.sched.enable_chunked_prefill = p->enable_chunked_prefill;
    ep.sched.long_prefill_token_threshold = p->long_prefill_token_threshold;
    ep.seed = p->seed;
    ep.eos_ids = eos;
    ep.n_eos = n_eos;
    if (llm->tok) {
        pl_status gst = pl_grammar_vocab_from_tokenizer(llm->tok, llm->vocab, eos, n_eos,
                                                        &llm->gvocab, err);
        if (gst != PL_STATUS_OK)
            return pl_err_prefix(err, "structured output vocabulary");
        ep.grammar_vocab = llm->gvocab;
    }
    return pl_engine_new(&ep, &llm->im, llm->tok ? &llm->dt : NULL, &llm->engine, err);
}

pl_status pl_llm_new(const struct pl_llm_params *p, struct pl_llm **out)
{
    struct pl_llm *llm = calloc(1, sizeof(*llm));
    *out = llm;
    if (!llm)
        return PL_STATUS_NO_MEMORY;
    if (tl_err.llm == llm) /* a message of a freed handle that had this address */
        tl_err.llm = NULL;
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&llm->mu, &ma);
    pthread_mutexattr_destroy(&ma);
    struct pl_err err;
    pl_err_clear(&err);
    pl_status st = llm_open(llm, p, &err);
    if (st != PL_STATUS_OK) {
        /* keep only the message: the handle is in its failed state */
        pl_engine_free(llm->engine);
        pl_grammar_vocab_free(llm->gvocab);
        pl_tokenizer_free(llm->tok);
        pl_model_runner_free(llm->runner);
        llm->gvocab = NULL;
        llm->engine = NULL;
        llm->tok = NULL;
        llm->runner = NULL;
        snprintf(llm->errmsg, sizeof(llm->errmsg), "%s", err.msg);
        return st;
    }
    return ok(llm);
}

void pl_llm_free(struct pl_llm *llm)
{
    if (!llm)
        return;
    pl_async_engine_free(llm->ae); /* stops the engine thread first */
    pl_engine_free(llm->engine);
    pthread_mutex_destroy(&llm->mu);
    if (tl_err.llm == llm)
        tl_err.llm = NULL;
    pl_grammar_vocab_free(llm->gvocab);
    pl_chat_template_free(llm->tmpl);
    pl_tokenizer_free(llm->tok);
    pl_model_runner_free(llm->runner);
    free(llm->fail_file);
    free(llm);
}

static pl_status not_open(struct pl_llm *llm)
{
    if (llm->engine)
        return PL_STATUS_OK;
    /* keep the message of the failed open */
    return PL_STATUS_INVALID_ARGUMENT;
}

void pl_llm_default_sampling_params(const struct pl_llm *llm, struct pl_sampling_params *p)
{
    if (llm && llm->engine)
        *p = llm->defaults;
    else
        pl_sampling_params_default(p);
}

void pl_llm_override_sampling_params(const struct pl_llm *llm, struct pl_sampling_params *p)
{
    if (llm && llm->engine)
        pl_sampling_params_apply_generation_override(p, &llm->override);
}

void pl_llm_set_progress(struct pl_llm *llm, pl_llm_progress_fn fn, void *user)
{
    llm->progress = fn;
    llm->progress_user = user;
}

bool pl_llm_has_tokenizer(const struct pl_llm *llm)
{
    return llm && llm->tok;
}

int pl_llm_vocab_size(const struct pl_llm *llm)
{
    return llm ? llm->vocab : 0;
}

int pl_llm_max_model_len(const struct pl_llm *llm)
{
    return llm ? llm->max_model_len : 0;
}

/* The token ids requests may name (vocab_check.h): one rule for every entry point. */
static struct pl_vocab_check vocab_of(const struct pl_llm *llm)
{
    struct pl_vocab_check v = {llm->vocab, llm->tok};
    return v;
}

bool pl_llm_token_id_exists(const struct pl_llm *llm, int32_t id)
{
    if (!llm || !llm->engine)
        return false;
    struct pl_vocab_check v = vocab_of(llm);
    return pl_vocab_check_has(&v, id);
}

/* ---- tokenizer access ---- */

pl_status pl_llm_encode(struct pl_llm *llm, const char *text, bool add_special_tokens,
                        int32_t **ids, int *n_ids)
{
    struct pl_err err;
    *ids = NULL;
    *n_ids = 0;
    if (!llm->tok) {
        pl_err_set(&err, PL_STATUS_UNSUPPORTED, "the model has no tokenizer (tokenizer.json)");
        return fail(llm, &err, err.status);
    }
    pl_status st = pl_tokenizer_encode(llm->tok, text, strlen(text), add_special_tokens, ids,
                                       n_ids, &err);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

pl_status pl_llm_decode(struct pl_llm *llm, const int32_t *ids, int n_ids,
                        bool skip_special_tokens, char **text)
{
    struct pl_err err;
    *text = NULL;
    if (!llm->tok) {
        pl_err_set(&err, PL_STATUS_UNSUPPORTED, "the model has no tokenizer (tokenizer.json)");
        return fail(llm, &err, err.status);
    }
    size_t len;
    pl_status st = pl_tokenizer_decode(llm->tok, ids, n_ids, skip_special_tokens, text, &len,
                                       &err);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

/* ---- requests ---- */

/* Tokenizes a prompt when it is text; *owned receives ids to free. */
static pl_status prompt_ids(struct pl_llm *llm, const struct pl_prompt *p, bool add_special,
                            const int32_t **ids, int *n, int32_t **owned, struct pl_err *err)
{
    *owned = NULL;
    if (p->token_ids) {
        *ids = p->token_ids;
        *n = p->n_token_ids;
        return PL_STATUS_OK;
    }
    if (!p->text)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompt: neither text nor token ids");
    if (!llm->tok)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "prompt: text prompts need a tokenizer (tokenizer.json); "
                          "give token ids");
    pl_status st = pl_tokenizer_encode(llm->tok, p->text, strlen(p->text), add_special, owned, n,
                                       err);
    *ids = *owned;
    return st;
}

/* Adds r to the engine after the vocabulary checks (params NULL: the defaults). */
static pl_status add_checked(struct pl_llm *llm, const struct pl_engine_request *r,
                             struct pl_err *err)
{
    struct pl_engine_request rq = *r;
    if (!rq.params && !rq.pooling)
        rq.params = &llm->defaults;
    /* ids the model has rows for but the tokenizer no token: refused here, at
     * admission, rather than sampled around later */
    struct pl_vocab_check v = vocab_of(llm);
    pl_status st = pl_vocab_check_prompt(&v, rq.prompt, rq.n_prompt, err);
    if (st == PL_STATUS_OK && rq.params)
        st = pl_vocab_check_params(&v, rq.params, err);
    if (st != PL_STATUS_OK)
        return st;
    lock(llm);
    st = pl_engine_add(llm->engine, &rq, err);
    unlock(llm);
    return st;
}

static pl_status add_one(struct pl_llm *llm, uint64_t id, const char *name,
                         const struct pl_prompt *p, bool add_special,
                         const struct pl_sampling_params *sp,
                         const struct pl_pooling_params *pooling, struct pl_err *err)
{
    const int32_t *ids = NULL;
    int n = 0;
    int32_t *owned;
    pl_status st = prompt_ids(llm, p, add_special, &ids, &n, &owned, err);
    if (st != PL_STATUS_OK)
        return st;
    struct pl_engine_request r = {0};
    r.request_id = id;
    r.name = name;
    r.prompt_text = p->token_ids ? NULL : p->text;
    r.prompt = ids;
    r.n_prompt = n;
    r.params = sp;
    r.pooling = pooling;
    st = add_checked(llm, &r, err);
    free(owned);
    return st;
}

/* True (with the message in err) once the engine thread owns the request interface. */
static bool threaded(struct pl_llm *llm, struct pl_err *err)
{
    lock(llm);
    bool has_thread = llm->ae != NULL;
    unlock(llm);
    if (!has_thread)
        return false;
    pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
               "the request interface is closed: this handle streams its requests "
               "(pl_llm_submit) on its engine thread");
    return true;
}

/* The request interface's add: a generation request (params) or a pooling request. */
static pl_status add_named(struct pl_llm *llm, const char *request_id,
                           const struct pl_prompt *prompt, const struct pl_sampling_params *params,
                           const struct pl_pooling_params *pooling)
{
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (threaded(llm, &err))
        return fail(llm, &err, err.status);
    if (!request_id || !*request_id) {
        pl_err_set(&err, PL_STATUS_INVALID_ARGUMENT, "request_id: empty");
        return fail(llm, &err, err.status);
    }
    uint64_t id;
    bool fin;
    lock(llm);
    pl_status st = PL_STATUS_OK;
    if (pl_engine_lookup(llm->engine, request_id, &id, &fin))
        st = pl_err_set(&err, PL_STATUS_INVALID_ARGUMENT, "request_id: '%s' is already in use",
                        request_id);
    else
        st = add_one(llm, ++llm->next_id, request_id, prompt, true, params, pooling, &err);
    unlock(llm);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

pl_status pl_llm_add_request(struct pl_llm *llm, const char *request_id,
                             const struct pl_prompt *prompt,
                             const struct pl_sampling_params *params)
{
    return add_named(llm, request_id, prompt, params, NULL);
}

pl_status pl_llm_add_pooling_request(struct pl_llm *llm, const char *request_id,
                                     const struct pl_prompt *prompt,
                                     const struct pl_pooling_params *params)
{
    struct pl_pooling_params dflt;
    pl_pooling_params_default(&dflt);
    return add_named(llm, request_id, prompt, NULL, params ? params : &dflt);
}

int pl_llm_hidden_size(const struct pl_llm *llm)
{
    return llm && llm->runner ? pl_model_runner_config(llm->runner)->hidden_size : 0;
}

pl_status pl_llm_step(struct pl_llm *llm)
{
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (threaded(llm, &err))
        return fail(llm, &err, err.status);
    lock(llm);
    pl_status st = pl_engine_step(llm->engine, &err);
    unlock(llm);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

bool pl_llm_has_unfinished(const struct pl_llm *llm)
{
    if (!llm || !llm->engine)
        return false;
    lock(llm);
    bool u = pl_engine_has_unfinished(llm->engine);
    unlock(llm);
    return u;
}

pl_status pl_llm_poll(struct pl_llm *llm, struct pl_outputs *out)
{
    out->items = NULL;
    out->n = 0;
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (threaded(llm, &err))
        return fail(llm, &err, err.status);
    lock(llm);
    pl_status st = pl_engine_poll(llm->engine, true, out, &err);
    unlock(llm);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

pl_status pl_llm_abort(struct pl_llm *llm, const char *request_id)
{
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (threaded(llm, &err))
        return fail(llm, &err, err.status);
    uint64_t id;
    bool fin;
    lock(llm);
    pl_status st;
    if (!request_id || !pl_engine_lookup(llm->engine, request_id, &id, &fin) || fin)
        st = pl_err_set(&err, PL_STATUS_NOT_FOUND, "request_id: no unfinished request '%s'",
                        request_id ? request_id : "(null)");
    else
        st = pl_engine_abort(llm->engine, id, &err);
    unlock(llm);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

void pl_llm_get_stats(const struct pl_llm *llm, struct pl_llm_stats *out)
{
    memset(out, 0, sizeof(*out));
    if (!llm || !llm->engine)
        return;
    struct pl_engine_stats es;
    lock(llm);
    pl_engine_get_stats(llm->engine, &es);
    unlock(llm);
    const struct pl_block_manager_stats *b = &es.sched.blocks;
    out->kv_blocks_total = b->n_blocks_total;
    out->kv_blocks_used = b->n_blocks_used;
    out->kv_blocks_peak_used = b->n_blocks_peak_used;
    out->kv_blocks_cached_free = b->n_blocks_cached_free;
    out->kv_waste = es.kv_waste_avg;
    out->prefix_cache_hit_rate =
        b->prefix_query_tokens > 0 ? (double)b->prefix_hit_tokens / (double)b->prefix_query_tokens
                                   : 0.0;
    out->num_preemptions = es.sched.n_preemptions;
    out->num_steps = es.sched.n_steps;
    out->prompt_tokens = es.n_prompt_tokens;
    out->generation_tokens = es.n_generation_tokens;
    out->num_waiting = es.sched.n_waiting_groups;
    out->num_running = es.sched.n_running_groups;
    out->seconds = es.seconds;
    out->tokens_per_second = es.seconds > 0 ? (double)es.n_generation_tokens / es.seconds : 0.0;
}

/* ---- generate / chat ---- */

/* Beam search for every prompt (vLLM's LLM.beam_search): see beam_search.h. */
static pl_status generate_beam(struct pl_llm *llm, const struct pl_prompt *prompts, int n_prompts,
                               const struct pl_sampling_params *params, int n_params,
                               bool add_special, struct pl_outputs *out, struct pl_err *err)
{
    size_t n = (size_t)(n_prompts > 0 ? n_prompts : 1);
    struct pl_beam_prompt *bp = calloc(n, sizeof(*bp));
    int32_t **owned = calloc(n, sizeof(*owned));
    struct pl_sampling_params *sp = calloc(n, sizeof(*sp));
    struct pl_request_output *items = calloc(n, sizeof(*items));
    pl_status st = PL_STATUS_OK;
    if (!bp || !owned || !sp || !items)
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; i < n_prompts && st == PL_STATUS_OK; i++) {
        st = pl_sampling_params_copy(&sp[i], &params[n_params == 1 ? 0 : i], err);
        if (st == PL_STATUS_OK)
            st = pl_sampling_params_validate(&sp[i], llm->vocab, err);
        if (st == PL_STATUS_OK)
            st = prompt_ids(llm, &prompts[i], add_special, &bp[i].prompt, &bp[i].n_prompt,
                            &owned[i], err);
        if (st == PL_STATUS_OK) {
            struct pl_vocab_check v = vocab_of(llm);
            st = pl_vocab_check_prompt(&v, bp[i].prompt, bp[i].n_prompt, err);
            if (st == PL_STATUS_OK)
                st = pl_vocab_check_params(&v, &sp[i], err);
        }
        if (st != PL_STATUS_OK)
            pl_err_prefix(err, "prompt %d", i);
        bp[i].prompt_text = prompts[i].token_ids ? NULL : prompts[i].text;
        bp[i].params = &sp[i];
    }
    if (st == PL_STATUS_OK)
        st = pl_beam_search(llm->engine, llm->tok, llm->eos_id, llm->max_model_len, bp, n_prompts,
                            items, &llm->next_id, err);
    out->items = items;
    out->n = items ? n_prompts : 0;
    if (st != PL_STATUS_OK)
        pl_outputs_free(out);
    for (int i = 0; i < n_prompts; i++) {
        free(owned ? owned[i] : NULL);
        if (sp)
            pl_sampling_params_fini(&sp[i]);
    }
    free(owned);
    free(sp);
    free(bp);
    return st;
}

static pl_status generate(struct pl_llm *llm, const struct pl_prompt *prompts, int n_prompts,
                          const struct pl_sampling_params *params, int n_params, bool add_special,
                          struct pl_outputs *out, struct pl_err *err)
{
    out->items = NULL;
    out->n = 0;
    if (n_prompts < 0 || (n_prompts > 0 && !prompts))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompts: none given");
    if (params && n_params != 1 && n_params != n_prompts)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "params: %d sets for %d prompts (give 1 or one per prompt)", n_params,
                          n_prompts);
    if (pl_engine_has_pending(llm->engine))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          llm->ae ? "generate: requests submitted with pl_llm_submit are still "
                                    "unfinished"
                                  : "generate: requests added with pl_llm_add_request are "
                                    "still pending");
    /* validate everything before anything runs */
    for (int i = 0; i < (params ? n_params : 0); i++) {
        struct pl_sampling_params copy;
        pl_status st = pl_sampling_params_copy(&copy, &params[i], err);
        if (st != PL_STATUS_OK)
            return st;
        st = pl_sampling_params_validate(&copy, llm->vocab, err);
        if (st == PL_STATUS_OK) {
            struct pl_vocab_check v = vocab_of(llm);
            st = pl_vocab_check_params(&v, &copy, err);
        }
        pl_sampling_params_fini(&copy);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "params[%d]", i);
    }
    int n_beam = 0;
    for (int i = 0; params && i < n_prompts; i++)
        n_beam += params[n_params == 1 ? 0 : i].use_beam_search;
    if (n_beam > 0 && n_beam < n_prompts)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "use_beam_search: one generate call runs beam search for all prompts "
                          "or for none");
    if (n_beam > 0)
        return generate_beam(llm, prompts, n_prompts, params, n_params, add_special, out, err);
    struct pl_request_output *items = calloc((size_t)(n_prompts > 0 ? n_prompts : 1),
                                             sizeof(*items));
    bool *have = calloc((size_t)(n_prompts > 0 ? n_prompts : 1), sizeof(bool));
    if (!items || !have) {
        free(items);
        free(have);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory for outputs");
    }
    out->items = items;
    out->n = n_prompts;
    uint64_t base = llm->next_id + 1;
    llm->next_id += (uint64_t)n_prompts;
    pl_status st = PL_STATUS_OK;
    for (int i = 0; i < n_prompts && st == PL_STATUS_OK; i++) {
        const struct pl_sampling_params *sp = params ? &params[n_params == 1 ? 0 : i] : NULL;
        char name[32];
        snprintf(name, sizeof(name), "%llu", (unsigned long long)(base + (uint64_t)i));
        st = add_one(llm, base + (uint64_t)i, name, &prompts[i], add_special, sp, NULL, err);
        if (st != PL_STATUS_OK)
            pl_err_prefix(err, "prompt %d", i);
    }
    int n_done = 0;
    struct pl_outputs got = {0};
    while (st == PL_STATUS_OK && n_done < n_prompts) {
        /* a failed step has failed the requests it ran (their outputs say so,
         * below); the others go on, so this loop goes on too */
        struct pl_err step_err;
        pl_status step_st = pl_engine_step(llm->engine, &step_err);
        st = pl_engine_poll(llm->engine, false, &got, err);
        if (st == PL_STATUS_OK && step_st != PL_STATUS_OK && got.n == 0) {
            /* a failed step that ended nothing would fail again for ever: give up */
            st = pl_err_set(err, step_st, "%s", step_err.msg);
        }
        for (int k = 0; k < got.n; k++) {
            uint64_t id = got.items[k].request_num;
            int i = (int)(id - base);
            if (id >= base && i < n_prompts && !have[i]) {
                items[i] = got.items[k];
                memset(&got.items[k], 0, sizeof(got.items[k])); /* moved */
                have[i] = true;
                n_done++;
            }
        }
        pl_outputs_free(&got);
        if (llm->progress) {
            struct pl_engine_stats es;
            pl_engine_get_stats(llm->engine, &es);
            llm->progress(llm->progress_user, n_done, n_prompts, es.sched.n_prompt_tokens,
                          es.n_generation_tokens);
        }
        if (!pl_engine_has_unfinished(llm->engine) && n_done < n_prompts &&
            !pl_engine_has_pending(llm->engine))
            break;
    }
    if (st != PL_STATUS_OK) {
        /* abort what is left so the engine is clean for the next call */
        for (int i = 0; i < n_prompts; i++)
            if (!have[i])
                pl_engine_abort(llm->engine, base + (uint64_t)i, NULL);
        /* aborts take effect at the next schedule, failed steps end their
         * requests too: each step makes progress, the guard is only a guard */
        struct pl_err e2;
        for (int guard = 0; pl_engine_has_unfinished(llm->engine) && guard < 1000; guard++)
            pl_engine_step(llm->engine, &e2);
        pl_engine_poll(llm->engine, false, &got, &e2);
        pl_outputs_free(&got);
        for (int i = 0; i < n_prompts; i++)
            if (!have[i])
                memset(&items[i], 0, sizeof(items[i]));
        pl_outputs_free(out);
    }
    free(have);
    if (st == PL_STATUS_OK) {
        /* every prompt has its output; the first that failed makes the status */
        for (int i = 0; i < n_prompts; i++)
            if (items[i].error)
                return pl_err_set(err, items[i].error_status, "prompt %d: %s", i,
                                  items[i].error);
    }
    return st;
}

/* True (with the message in err) while requests from pl_llm_submit are unfinished. A
 * request counts from pl_llm_submit's return (the engine thread may not have taken it
 * yet), so the answer does not depend on that thread's pace. Called without llm's lock:
 * the engine thread takes its own lock, then llm's (through the ops). */
static bool submitted_unfinished(struct pl_llm *llm, struct pl_err *err)
{
    lock(llm);
    struct pl_async_engine *ae = llm->ae;
    unlock(llm);
    if (!ae || pl_async_engine_num_unfinished(ae) == 0)
        return false;
    pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
               "generate: requests submitted with pl_llm_submit are still unfinished");
    return true;
}

pl_status pl_llm_generate(struct pl_llm *llm, const struct pl_prompt *prompts, int n_prompts,
                          const struct pl_sampling_params *params, int n_params,
                          struct pl_outputs *out)
{
    out->items = NULL;
    out->n = 0;
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (submitted_unfinished(llm, &err))
        return fail(llm, &err, PL_STATUS_INVALID_ARGUMENT);
    lock(llm);
    pl_status st = generate(llm, prompts, n_prompts, params, n_params, true, out, &err);
    unlock(llm);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

static pl_status render_chat(struct pl_llm *llm, const char *messages_json,
                             const struct pl_chat_options *opts, char **prompt,
                             struct pl_err *err)
{
    *prompt = NULL;
    struct pl_chat_options defaults;
    if (!opts) {
        pl_chat_options_default(&defaults);
        opts = &defaults;
    }
    struct pl_chat_template *own = NULL;
    const struct pl_chat_template *t = NULL;
    pl_status st;
    if (opts->chat_template) {
        st = pl_chat_template_parse(opts->chat_template, strlen(opts->chat_template), &own, err);
        if (st != PL_STATUS_OK)
            return pl_err_prefix(err, "chat_template");
        t = own;
    } else {
        if (!llm->tmpl) {
            const char *src = llm->tok ? pl_tokenizer_chat_template(llm->tok) : NULL;
            if (!src)
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                                  "chat_template: the model has none; pass one");
            st = pl_chat_template_parse(src, strlen(src), &llm->tmpl, err);
            if (st != PL_STATUS_OK)
                return pl_err_prefix(err, "the model's chat template");
        }
        t = llm->tmpl;
    }
    json_error_t je;
    json_t *msgs = json_loads(messages_json ? messages_json : "", 0, &je);
    json_t *kw = NULL;
    st = PL_STATUS_OK;
    if (!msgs || !json_is_array(msgs)) {
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "messages: not a JSON array of messages%s%s", msgs ? "" : ": ",
                        msgs ? "" : je.text);
        goto out;
    }
    if (opts->chat_template_kwargs) {
        kw = json_loads(opts->chat_template_kwargs, 0, &je);
        if (!kw || !json_is_object(kw)) {
            st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                            "chat_template_kwargs: not a JSON object");
            goto out;
        }
    }
    const struct pl_chat_apply apply = {
        .bos_token = llm->tok ? pl_tokenizer_bos_token(llm->tok) : NULL,
        .eos_token = llm->tok ? pl_tokenizer_eos_token(llm->tok) : NULL,
        .add_generation_prompt = opts->add_generation_prompt,
        .continue_final_message = opts->continue_final_message,
        .kwargs = kw,
    };
    st = pl_apply_chat_template(t, msgs, &apply, prompt, NULL, NULL, err);
out:
    json_decref(msgs);
    json_decref(kw);
    pl_chat_template_free(own);
    return st;
}

pl_status pl_llm_apply_chat_template(struct pl_llm *llm, const char *messages_json,
                                     const struct pl_chat_options *opts, char **prompt)
{
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    lock(llm); /* the model's template is parsed on first use */
    pl_status st = render_chat(llm, messages_json, opts, prompt, &err);
    unlock(llm);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

pl_status pl_llm_chat(struct pl_llm *llm, const char *const *conversations, int n_conversations,
                      const struct pl_sampling_params *params, int n_params,
                      const struct pl_chat_options *opts, struct pl_outputs *out)
{
    out->items = NULL;
    out->n = 0;
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    pl_status st = PL_STATUS_OK;
    if (n_conversations < 0 || (n_conversations > 0 && !conversations)) {
        pl_err_set(&err, PL_STATUS_INVALID_ARGUMENT, "conversations: none given");
        return fail(llm, &err, err.status);
    }
    size_t nc = (size_t)(n_conversations > 0 ? n_conversations : 1);
    char **texts = calloc(nc, sizeof(char *));
    struct pl_prompt *prompts = calloc(nc, sizeof(*prompts));
    if (!texts || !prompts) {
        st = pl_err_set(&err, PL_STATUS_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < n_conversations && st == PL_STATUS_OK; i++) {
        lock(llm);
        st = render_chat(llm, conversations[i], opts, &texts[i], &err);
        unlock(llm);
        if (st != PL_STATUS_OK)
            pl_err_prefix(&err, "conversation %d", i);
        prompts[i].text = texts[i];
    }
    /* the template placed the special tokens: tokenize without adding more */
    if (st == PL_STATUS_OK && submitted_unfinished(llm, &err))
        st = PL_STATUS_INVALID_ARGUMENT;
    if (st == PL_STATUS_OK) {
        lock(llm);
        st = generate(llm, prompts, n_conversations, params, n_params, false, out, &err);
        unlock(llm);
    }
done:
    for (int i = 0; texts && i < n_conversations; i++)
        free(texts[i]);
    free(texts);
    free(prompts);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

/* ---- the engine thread: struct pl_engine_ops over the handle's engine ---- */

static pl_status ops_add(void *h, const struct pl_engine_request *r, struct pl_err *err)
{
    return add_checked(h, r, err);
}

static pl_status ops_step(void *h, struct pl_err *err)
{
    struct pl_llm *llm = h;
    lock(llm);
    pl_status st = pl_engine_step(llm->engine, err);
    unlock(llm);
    return st;
}

static bool ops_has_unfinished(void *h)
{
    return pl_llm_has_unfinished(h);
}

static int ops_poll(void *h, struct pl_request_output *items, int cap)
{
    struct pl_llm *llm = h;
    lock(llm);
    int n = pl_engine_poll_into(llm->engine, true, items, cap);
    unlock(llm);
    return n;
}

static void ops_abort(void *h, uint64_t request_id)
{
    struct pl_llm *llm = h;
    lock(llm);
    pl_engine_abort(llm->engine, request_id, NULL); /* already finished: nothing to do */
    unlock(llm);
}

static void ops_stats(void *h, struct pl_llm_stats *out)
{
    pl_llm_get_stats(h, out);
}

static const struct pl_engine_ops llm_ops = {
    ops_add, ops_step, ops_has_unfinished, ops_poll, ops_abort, ops_stats};

pl_status pl_llm_start_async(struct pl_llm *llm, const struct pl_async_engine_params *params,
                             struct pl_async_engine **out, struct pl_err *err)
{
    *out = NULL;
    if (!llm->engine)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "the model is not open: %s",
                          llm->errmsg);
    lock(llm);
    pl_status st = PL_STATUS_OK;
    if (llm->ae)
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "the engine thread already runs");
    else if (pl_engine_has_pending(llm->engine))
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "requests added with pl_llm_add_request are still pending");
    else
        st = pl_async_engine_new(&llm_ops, llm, params, &llm->ae, err);
    *out = llm->ae;
    unlock(llm);
    return st;
}

void pl_llm_stop_async(struct pl_llm *llm)
{
    /* not under mu: the engine thread takes it while it winds down */
    lock(llm);
    struct pl_async_engine *ae = llm->ae;
    unlock(llm);
    pl_async_engine_free(ae);
    lock(llm);
    llm->ae = NULL;
    unlock(llm);
}

/* ---- streams ---- */

struct pl_llm_stream {
    struct pl_async_request *req;
    bool finished;                     /* the finished delta was taken */
};

/* The engine thread of the library's own streams (started on the first submit). */
static pl_status stream_engine(struct pl_llm *llm, struct pl_async_engine **ae,
                               struct pl_err *err)
{
    lock(llm);
    pl_status st = PL_STATUS_OK;
    if (!llm->ae) {
        struct pl_async_engine_params ap;
        pl_async_engine_params_default(&ap);
        ap.max_pending = 1 << 20; /* the library queues what it is given */
        st = pl_llm_start_async(llm, &ap, ae, err);
    }
    *ae = llm->ae;
    unlock(llm);
    return st;
}

/* One request of a submission, checked in the caller's thread. */
struct prepared {
    struct pl_sampling_params sp; /* an owned copy */
    const int32_t *ids;
    int n;
    int32_t *owned;                /* ids when they were encoded here */
};

static void prepared_fini(struct prepared *p)
{
    free(p->owned);
    pl_sampling_params_fini(&p->sp);
}

/* Everything a refusal can be found here, in the caller's thread. On failure p
 * holds nothing (no fini needed). */
static pl_status prepare(struct pl_llm *llm, const struct pl_prompt *prompt,
                         const struct pl_sampling_params *params, struct prepared *p,
                         struct pl_err *err)
{
    memset(p, 0, sizeof(*p));
    if (!prompt)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompt: none given");
    pl_status st = pl_sampling_params_copy(&p->sp, params ? params : &llm->defaults, err);
    if (st != PL_STATUS_OK)
        return st;
    st = pl_sampling_params_validate(&p->sp, llm->vocab, err);
    if (st == PL_STATUS_OK && p->sp.use_beam_search)
        st = pl_err_set(err, PL_STATUS_UNSUPPORTED,
                        "use_beam_search: beam search runs through pl_llm_generate, not as a "
                        "streamed request");
    if (st == PL_STATUS_OK)
        st = prompt_ids(llm, prompt, true, &p->ids, &p->n, &p->owned, err);
    struct pl_vocab_check v = vocab_of(llm);
    if (st == PL_STATUS_OK)
        st = pl_vocab_check_prompt(&v, p->ids, p->n, err);
    if (st == PL_STATUS_OK)
        st = pl_vocab_check_params(&v, &p->sp, err);
    if (st == PL_STATUS_OK && p->n >= llm->max_model_len)
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "the prompt (%d tokens) leaves no room to generate within "
                        "max_model_len (%d)", p->n, llm->max_model_len);
    if (st == PL_STATUS_OK && p->sp.max_tokens >= 1 &&
        (int64_t)p->n + p->sp.max_tokens > llm->max_model_len)
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "max_tokens: the prompt (%d tokens) + max_tokens (%d) exceeds "
                        "max_model_len (%d)", p->n, p->sp.max_tokens, llm->max_model_len);
    if (st != PL_STATUS_OK)
        prepared_fini(p);
    return st;
}

/* Checks n requests, then queues them together (pl_async_engine_submit_all: the
 * engine thread admits them in one iteration) or none. */
static pl_status submit(struct pl_llm *llm, const char *const *request_ids,
                        const struct pl_prompt *prompts, int n,
                        const struct pl_sampling_params *params, int n_params,
                        struct pl_llm_stream **out, struct pl_err *err)
{
    if (n < 1 || !prompts)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "prompts: none given");
    if (params && n_params != 1 && n_params != n)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "params: %d sets for %d prompts (give 1 or one per prompt)",
                          n_params, n);
    struct prepared *preps = calloc((size_t)n, sizeof(*preps));
    struct pl_async_submission *subs = calloc((size_t)n, sizeof(*subs));
    struct pl_async_request **reqs = calloc((size_t)n, sizeof(*reqs));
    pl_status st = preps && subs && reqs ? PL_STATUS_OK
                                         : pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    int n_prep = 0;
    for (; st == PL_STATUS_OK && n_prep < n; n_prep++) {
        int i = n_prep;
        const struct pl_sampling_params *p = params ? &params[n_params == 1 ? 0 : i] : NULL;
        st = prepare(llm, &prompts[i], p, &preps[i], err);
        if (st != PL_STATUS_OK) {
            if (n > 1)
                pl_err_prefix(err, "prompt %d", i);
            break;
        }
        subs[i] = (struct pl_async_submission){
            preps[i].ids, preps[i].n, &preps[i].sp, NULL, request_ids ? request_ids[i] : NULL,
            prompts[i].token_ids ? NULL : prompts[i].text};
    }
    struct pl_async_engine *ae = NULL;
    if (st == PL_STATUS_OK)
        st = stream_engine(llm, &ae, err);
    for (int i = 0; st == PL_STATUS_OK && i < n; i++)
        if (!(out[i] = calloc(1, sizeof(*out[i]))))
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    if (st == PL_STATUS_OK)
        st = pl_async_engine_submit_all(ae, subs, n, NULL, NULL, reqs, err);
    for (int i = 0; i < n; i++) {
        if (st == PL_STATUS_OK) {
            out[i]->req = reqs[i];
        } else {
            free(out[i]);
            out[i] = NULL;
        }
    }
    for (int i = 0; i < n_prep; i++) /* the async engine copied what it kept */
        prepared_fini(&preps[i]);
    free(preps);
    free(subs);
    free(reqs);
    return st;
}

pl_status pl_llm_submit(struct pl_llm *llm, const char *request_id,
                        const struct pl_prompt *prompt, const struct pl_sampling_params *params,
                        struct pl_llm_stream **out)
{
    *out = NULL;
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (!prompt)
        return fail(llm, &err, pl_err_set(&err, PL_STATUS_INVALID_ARGUMENT,
                                          "prompt: none given"));
    pl_status st = submit(llm, request_id ? &request_id : NULL, prompt, 1, params, 1, out,
                          &err);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

pl_status pl_llm_submit_all(struct pl_llm *llm, const char *const *request_ids,
                            const struct pl_prompt *prompts, int n_prompts,
                            const struct pl_sampling_params *params, int n_params,
                            struct pl_llm_stream **out)
{
    for (int i = 0; out && i < n_prompts; i++)
        out[i] = NULL;
    if (not_open(llm))
        return PL_STATUS_INVALID_ARGUMENT;
    struct pl_err err;
    if (!out)
        return fail(llm, &err, pl_err_set(&err, PL_STATUS_INVALID_ARGUMENT,
                                          "out: no array for the streams"));
    pl_status st = submit(llm, request_ids, prompts, n_prompts, params, n_params, out, &err);
    return st == PL_STATUS_OK ? ok(llm) : fail(llm, &err, st);
}

pl_status pl_llm_stream_next(struct pl_llm_stream *s, double timeout_s,
                             struct pl_request_output **out)
{
    *out = NULL;
    if (s->finished)
        return PL_STATUS_OK;
    *out = pl_async_request_wait(s->req, timeout_s);
    if (*out && (*out)->finished)
        s->finished = true;
    return PL_STATUS_OK;
}

bool pl_llm_stream_is_finished(const struct pl_llm_stream *s)
{
    return s->finished;
}

uint64_t pl_llm_stream_request_num(const struct pl_llm_stream *s)
{
    return pl_async_request_id(s->req);
}

void pl_llm_stream_abort(struct pl_llm_stream *s)
{
    pl_async_request_abort(s->req);
}

void pl_llm_stream_free(struct pl_llm_stream *s)
{
    if (!s)
        return;
    if (!s->finished)
        pl_async_request_abort(s->req);
    pl_async_request_release(s->req);
    free(s);
}
