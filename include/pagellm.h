/*
 * pagellm.h -- the public C API of pagellm.
 *
 * Owns: the status codes every action returns, and (from the engine issue on)
 * the LLM handle, sampling params and outputs that mirror vLLM's offline API.
 * Conventions: actions return pl_status; details go to a per-handle message
 * (pl_llm_errmsg); handles are opaque; the creator frees; *_free(NULL) is a no-op.
 */
#ifndef PAGELLM_H
#define PAGELLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PAGELLM_VERSION "0.1.0"

/*
 * PL_API marks the functions libpagellm.so exports. The library is built
 * with -fvisibility=hidden, so everything else (the engine's internals)
 * stays out of its dynamic symbol table.
 */
#if defined(__GNUC__) || defined(__clang__)
#define PL_API __attribute__((visibility("default")))
#else
#define PL_API
#endif

typedef enum pl_status {
    PL_STATUS_OK = 0,
    PL_STATUS_INVALID_ARGUMENT, /* a caller passed a bad value (request data included) */
    PL_STATUS_IO,               /* open/read/mmap/write failed */
    PL_STATUS_FORMAT,           /* outside data (file, JSON, template) is malformed */
    PL_STATUS_UNSUPPORTED,      /* well-formed but not supported (architecture, dtype, feature) */
    PL_STATUS_NO_MEMORY,        /* allocation failed or a pool is exhausted */
    PL_STATUS_NOT_FOUND,        /* a named thing (tensor, file, token, request) does not exist */
    PL_STATUS_LIMIT,            /* a bound was hit (size, depth, loop count, length) */
    PL_STATUS_ABORTED,          /* the operation was cancelled */
    PL_STATUS_INTERNAL          /* a bug or backend failure */
} pl_status;

/* A static English name for a status ("ok", "invalid argument", ...). */
PL_API const char *pl_status_str(pl_status s);

/* ------------------------------------------------------------------------ */
/* Sampling parameters (vLLM's SamplingParams, same names and defaults)      */
/* ------------------------------------------------------------------------ */


/* vLLM's default --max-logprobs: the most logprobs a request may ask for. */
#define PL_MAX_LOGPROBS 20
/* vLLM's VLLM_MAX_N_SEQUENCES default: the largest n. */
#define PL_MAX_N_SEQUENCES 16384

/* One logit_bias entry: added to the token's logit before sampling. */
struct pl_logit_bias {
    int32_t token_id;
    float bias;
};

/*
 * Structured output (vLLM's StructuredOutputsParams / guided_*): what the output must
 * match. Every kind is compiled to one grammar (src/grammar/grammar.h) and enforced
 * by masking the logits before each token is sampled; eos is allowed only where the
 * grammar accepts.
 */
enum pl_constraint_kind {
    PL_CONSTRAINT_NONE = 0,
    PL_CONSTRAINT_JSON,        /* constraint: a JSON Schema (JSON text) */
    PL_CONSTRAINT_JSON_OBJECT, /* any JSON object (response_format json_object); text unused */
    PL_CONSTRAINT_REGEX,       /* constraint: a regular expression the whole output matches */
    PL_CONSTRAINT_CHOICE,      /* constraint: JSON text of an array of strings, one of which
                                  is the output */
    PL_CONSTRAINT_GRAMMAR      /* constraint: GBNF / EBNF grammar text, start rule "root" */
};

/*
 * Per-request sampling parameters, field for field vLLM's SamplingParams
 * (vllm/sampling_params.py); pl_sampling_params_default gives vLLM's defaults.
 *
 * Memory: the arrays (stop, stop_token_ids, logit_bias, allowed_token_ids) are
 * borrowed pointers with counts unless the params own them. A params struct
 * owns its arrays only when the library made it (pl_llm_default_sampling_params
 * gives borrowed ones): then `owned` points at the single allocation holding
 * every array and string, and pl_sampling_params_fini frees it. For borrowed
 * params fini is a no-op, so calling it is always safe.
 *
 * Optional values: seed has has_seed; max_tokens, logprobs and
 * prompt_logprobs use -1 for vLLM's None; allowed_token_ids uses NULL for
 * None (a non-NULL pointer with a count of 0 is vLLM's empty list, which
 * validation refuses).
 */
struct pl_sampling_params {
    int n;                     /* outputs per prompt (1) */
    float presence_penalty;    /* [-2, 2] (0): subtracted once from every token in the output */
    float frequency_penalty;   /* [-2, 2] (0): subtracted per occurrence in the output */
    float repetition_penalty;  /* > 0 (1): tokens in prompt or output: positive logits /=, negative *= */
    float temperature;         /* [0, 2] (1); below 1e-5 means greedy */
    float top_p;               /* (0, 1] (1) */
    int top_k;                 /* 0 or -1: off (0); else keep the k most likely */
    float min_p;               /* [0, 1] (0): drop tokens below min_p * the top probability */
    bool has_seed;             /* false (vLLM seed=None): draw from the engine's generator */
    uint64_t seed;             /* the request's own generator seed when has_seed */
    const char *const *stop;   /* [n_stop] NUL-terminated stop strings (none) */
    int n_stop;
    const int32_t *stop_token_ids; /* [n_stop_token_ids] (none) */
    int n_stop_token_ids;
    bool include_stop_str_in_output; /* false */
    bool ignore_eos;           /* false */
    int max_tokens;            /* >= 1 (16); -1: None, i.e. up to the context length */
    int min_tokens;            /* >= 0 (0): eos and stop_token_ids are masked until reached */
    int logprobs;              /* -1: None (-1); else 0..PL_MAX_LOGPROBS top logprobs per token */
    int prompt_logprobs;       /* -1: None (-1); else 0..PL_MAX_LOGPROBS per prompt token */
    bool skip_special_tokens;  /* true */
    bool spaces_between_special_tokens; /* true */
    const struct pl_logit_bias *logit_bias; /* [n_logit_bias] (none) */
    int n_logit_bias;
    const int32_t *allowed_token_ids; /* [n_allowed_token_ids]; NULL: every token allowed */
    int n_allowed_token_ids;
    /* Beam search (vLLM's BeamSearchParams; the OpenAI server's use_beam_search). */
    bool use_beam_search;      /* false */
    int beam_width;            /* beams when use_beam_search; 0: take n (vLLM's server does) */
    float length_penalty;      /* 1.0 */
    bool early_stopping;       /* false */
    /* Structured output (enum pl_constraint_kind). */
    enum pl_constraint_kind constraint_kind; /* PL_CONSTRAINT_NONE */
    const char *constraint;    /* NUL-terminated text of the constraint (see the kinds) */
    const char *whitespace_pattern; /* JSON kinds: a regex for the whitespace between JSON
                                  tokens (vLLM's guided_whitespace_pattern); NULL: at most
                                  one space */

    void *owned;               /* the allocation behind the arrays, or NULL when borrowed */
};

/* Fills p with vLLM's SamplingParams defaults (borrowed, empty arrays). */
PL_API void pl_sampling_params_default(struct pl_sampling_params *p);




/* Frees what p owns (if anything) and leaves p with empty borrowed arrays. */
PL_API void pl_sampling_params_fini(struct pl_sampling_params *p);



/* ------------------------------------------------------------------------ */
/* Pooling (vLLM's --task embed on decoder models)                           */
/* ------------------------------------------------------------------------ */

/*
 * A pooling request runs its prompt through the model (prefill only, batched
 * with other requests) and returns one vector built from the final hidden
 * states, after the model's final norm (the rows the LM head would read):
 * the last prompt token's (LAST) or the mean over every prompt token (MEAN),
 * then L2-normalized when normalize is set. vLLM's embed task for decoder
 * models defaults to LAST with normalize.
 */
enum pl_pooling_type {
    PL_POOLING_LAST = 1,
    PL_POOLING_MEAN
};

struct pl_pooling_params {
    enum pl_pooling_type type;
    bool normalize;
};

/* LAST, normalize (vLLM's defaults for the embed task of decoder models). */
PL_API void pl_pooling_params_default(struct pl_pooling_params *p);

/* ------------------------------------------------------------------------ */
/* Outputs (vLLM's RequestOutput / CompletionOutput)                         */
/* ------------------------------------------------------------------------ */

/*
 * Logprobs at one position: the token there (sampled, or the prompt's token
 * for prompt_logprobs) with its raw logprob and rank, plus the n_top most
 * likely tokens (vLLM's dict of Logprob, split into arrays). For the first
 * prompt position, which has no logprob (vLLM's None), n_top is -1.
 */
struct pl_logprob_entry {
    int32_t token_id;
    float logprob;                       /* log_softmax of the raw logits */
    int rank;                            /* tokens with logprob >= this one's (>= 1) */
    int n_top;                           /* -1: None; else entries in top_* */
    int32_t top_ids[PL_MAX_LOGPROBS];    /* [n_top] descending logprob, ties by id */
    float top_logprobs[PL_MAX_LOGPROBS]; /* [n_top] */
};

enum pl_finish_reason {
    PL_FINISH_NONE = 0, /* still running */
    PL_FINISH_STOP,     /* eos, a stop token id or a stop string */
    PL_FINISH_LENGTH,   /* max_tokens or max_model_len */
    PL_FINISH_ABORT,    /* aborted */
    PL_FINISH_ERROR     /* the engine failed this request: its output is incomplete and the
                           request output's error says why */
};

/* "stop", "length", "abort", "error"; NULL for PL_FINISH_NONE. */
PL_API const char *pl_finish_reason_str(enum pl_finish_reason r);

enum pl_stop_reason_kind {
    PL_STOP_REASON_NONE = 0, /* vLLM's stop_reason None (eos, length, abort, running) */
    PL_STOP_REASON_STRING,   /* stop_str holds the stop string that matched */
    PL_STOP_REASON_TOKEN     /* stop_token_id holds the stop token id */
};

/*
 * A request's times (vLLM's RequestMetrics) as of one output, in seconds of
 * CLOCK_MONOTONIC (clock_gettime); 0 where it has not happened yet.
 */
struct pl_request_metrics {
    double arrival_time;          /* the request was added (submitted) */
    double first_scheduled_time;  /* the step that first produced output for it began
                                     (time in queue = first_scheduled_time - arrival_time) */
    double first_token_time;      /* its first output token was reported */
    double last_token_time;       /* this output's tokens were reported (vLLM's
                                     last_token_time); the latest earlier one if it has none */
    double prev_token_time;       /* the output before this one with tokens was reported (0:
                                     none): inter-token latency = last - prev */
    double finished_time;         /* the request finished (its last output) */
};

/* One sample of a request (vLLM's CompletionOutput). */
struct pl_completion_output {
    int index;                     /* sample index 0..n-1 */
    char *text;                    /* [text_len] + NUL: generated text (detokenized) */
    size_t text_len;
    int32_t *token_ids;            /* [n_token_ids] generated ids */
    int n_token_ids;
    bool has_logprobs;             /* logprobs were requested (vLLM: else None) */
    double cumulative_logprob;     /* sum of the chosen tokens' logprobs (when has_logprobs) */
    struct pl_logprob_entry *logprobs; /* [n_token_ids] when has_logprobs, else NULL */
    enum pl_finish_reason finish_reason;
    enum pl_stop_reason_kind stop_reason_kind;
    char *stop_str;                /* the matched stop string (PL_STOP_REASON_STRING) */
    int32_t stop_token_id;         /* the stop token (PL_STOP_REASON_TOKEN) */
};

/*
 * One request's output (vLLM's RequestOutput). From pl_llm_generate / chat it
 * is complete; from pl_llm_poll it is a delta: outputs[] hold only the tokens,
 * logprobs and text produced since the previous poll (only samples with news
 * appear), and the prompt fields are filled only in a request's first delta.
 */
struct pl_request_output {
    char *request_id;
    char *prompt;                  /* the text prompt, or NULL (token-id prompt / later delta) */
    int32_t *prompt_token_ids;     /* [n_prompt_token_ids] */
    int n_prompt_token_ids;
    int num_cached_tokens;         /* prompt tokens served by the prefix cache */
    bool has_prompt_logprobs;
    struct pl_logprob_entry *prompt_logprobs; /* [n_prompt_token_ids] when has_prompt_logprobs */
    struct pl_completion_output *outputs;     /* [n_outputs], by index */
    int n_outputs;
    bool finished;                 /* every sample finished (last delta of the request) */
    /* pooling requests: the pooled vector in the finished output ([n_embedding] =
     * the model's hidden size), NULL otherwise (and when the request was aborted);
     * their outputs[] carry no tokens, only the finish reason */
    float *embedding;
    int n_embedding;
    /* Set (with finished) when the engine failed the request, e.g. a backend failure
     * in a step that ran it: its unfinished samples end with PL_FINISH_ERROR. Other
     * requests are not affected. NULL and PL_STATUS_OK otherwise. */
    char *error;
    pl_status error_status;
    /* Appended in round 2 (the fields above keep their layout): */
    uint64_t request_num;          /* the engine's number for the request: unique per handle,
                                      the key servers route deltas by (request_id is the
                                      caller's name for it) */
    enum pl_finish_reason finish_reason; /* with finished: how the request ended: ERROR when
                                      error is set, else the first finish one of its samples
                                      reported (the last delta may carry no sample), ABORT
                                      when none; PL_FINISH_NONE before */
    struct pl_request_metrics metrics;
};

struct pl_outputs {
    struct pl_request_output *items; /* [n] */
    int n;
};

/* Frees what *o holds and zeroes it. NULL is a no-op. */
PL_API void pl_outputs_free(struct pl_outputs *o);

/* Frees memory the API returned (encode ids, decoded text, rendered prompts). */
PL_API void pl_free(void *p);

/* ------------------------------------------------------------------------ */
/* The LLM handle (vLLM's LLM class)                                         */
/* ------------------------------------------------------------------------ */

struct pl_llm_params {
    const char *model;             /* model directory (config.json, safetensors, tokenizer) */
    const char *tokenizer;         /* tokenizer directory; NULL: the model directory */
    const char *dtype;             /* vLLM's --dtype: "auto" (the checkpoint's dtype),
                                      "bfloat16", "float16" / "half", "float32" / "float":
                                      the weights are converted at load; activations have
                                      the backend's dtype (CPU float32, CUDA bfloat16, so
                                      CUDA refuses float32) */
    int max_model_len;             /* 0: the config's max_position_embeddings */
    int max_num_seqs;              /* sequences per step (256) */
    int max_num_batched_tokens;    /* tokens per step (2048) */
    int block_size;                /* KV block tokens: 8, 16 or 32 (16) */
    int num_kv_blocks;             /* KV pool blocks; 0: from kv_cache_bytes */
    size_t kv_cache_bytes;         /* KV memory budget when num_kv_blocks is 0 (256 MiB) */
    bool enable_prefix_caching;    /* true */
    bool enable_chunked_prefill;   /* true */
    int long_prefill_token_threshold; /* most prefill tokens per sequence per step; 0: no cap */
    uint64_t seed;                 /* seeds the generator of unseeded requests (0) */
    const char *device;            /* "auto" (cuda when a GPU is present), "cpu" or "cuda" */
    double gpu_memory_utilization; /* CUDA: share of GPU memory to use; KV gets the rest (0.9) */
    int n_threads;                 /* CPU threads, 0: one per core */
    const char *generation_config; /* "auto": defaults from generation_config.json; "vllm" */
    const char *load_format;       /* "auto" (safetensors); "dummy": random weights made on the
                                      device from config.json alone, for benchmarks (vLLM's) */
    const char *override_generation_config; /* vLLM's --override-generation-config: JSON
                                      text of an object with any of temperature, top_p,
                                      top_k, min_p, repetition_penalty, max_new_tokens; each
                                      replaces the default of requests that do not set the
                                      field (after generation_config.json). NULL: none */
    bool allow_long_max_model_len; /* max_model_len above the model's length (max_position_
                                      embeddings, rope-scaled) is refused unless true (vLLM's
                                      VLLM_ALLOW_LONG_MAX_MODEL_LEN=1) */
    /* Appended in round 2 (the fields above keep their layout). Each is false by
     * default; the pagellm CLI also reads them from PAGELLM_* variables
     * (docs/library.md, "Engine parameters that were environment variables"). */
    bool enforce_eager;            /* vLLM's: run every step eagerly, no CUDA graphs for
                                      decode */
    bool host_sampling;            /* sample on the host from downloaded logits (the
                                      reference path) instead of on the backend */
    bool cpu_scalar_kernels;       /* CPU: the plain scalar kernels (the reference
                                      implementation) instead of AVX-512 / AVX2 ones */
    bool cuda_cublas_only;         /* CUDA: every matmul through cuBLASLt, none through the
                                      small-batch GEMV kernels (process-wide) */
    int tensor_parallel_size;      /* vLLM's --tensor-parallel-size (1): the model is sharded
                                      over this many GPUs (the first of CUDA_VISIBLE_DEVICES),
                                      or CPU ranks; docs/parallel.md */
    /* Appended in round 2, after the fields above (quantized models). */
    const char *quantization;      /* vLLM's --quantization: NULL / "none": the checkpoint's
                                      quantization_config; its method name (awq, gptq,
                                      compressed-tensors, fp8 and vLLM's *_marlin aliases) must
                                      match it; "fp8" on an unquantized checkpoint quantizes
                                      the weights to FP8 at load (docs/quantization.md) */
    const char *kv_cache_dtype;    /* vLLM's --kv-cache-dtype: NULL / "auto"; "fp8" /
                                      "fp8_e4m3" where the backend has an FP8 KV cache */
};

PL_API void pl_llm_params_default(struct pl_llm_params *p);

struct pl_llm;

/*
 * Loads the model, tokenizer (when the directory has one) and chat template,
 * and sizes the KV pool. Like sqlite3_open, *out receives a handle even on
 * failure (unless memory ran out: then NULL), so pl_llm_errmsg can say what
 * went wrong; free it with pl_llm_free either way.
 */
PL_API pl_status pl_llm_new(const struct pl_llm_params *p, struct pl_llm **out);
PL_API void pl_llm_free(struct pl_llm *llm);

/* The message of the calling thread's last failed call on this handle ("" after
 * success; a failed pl_llm_new's message in any thread). Never NULL. */
PL_API const char *pl_llm_errmsg(const struct pl_llm *llm);

/*
 * Fills p with the sampling defaults this LLM applies: vLLM's defaults, then
 * (generation_config "auto") the model's generation_config.json.
 */
PL_API void pl_llm_default_sampling_params(const struct pl_llm *llm, struct pl_sampling_params *p);

/*
 * Applies the operator's override_generation_config (pl_llm_params) to p: for
 * callers that put defaults of their own over pl_llm_default_sampling_params
 * (the RunPod worker's per-mode defaults) so that the operator's values still
 * win. No-op without an override.
 */
PL_API void pl_llm_override_sampling_params(const struct pl_llm *llm, struct pl_sampling_params *p);

/* A prompt: text (tokenized with special tokens) or token ids (token_ids non-NULL wins). */
struct pl_prompt {
    const char *text;
    const int32_t *token_ids;
    int n_token_ids;
};

/* Called by generate/chat after each step (progress bars); may be NULL.
 * prompt_tokens: prompt tokens computed by prefill so far (prefix-cache hits
 * excluded); generation_tokens: tokens sampled so far. Both count from the
 * handle's creation, as pl_llm_get_stats does. */
typedef void (*pl_llm_progress_fn)(void *user, int n_done, int n_total,
                                   uint64_t prompt_tokens, uint64_t generation_tokens);
PL_API void pl_llm_set_progress(struct pl_llm *llm, pl_llm_progress_fn fn, void *user);

/*
 * Generates for n_prompts prompts and waits for all of them (vLLM's
 * LLM.generate). params: one shared set (n_params 1) or one per prompt
 * (n_params == n_prompts); NULL means pl_llm_default_sampling_params. Each
 * set and prompt is validated first; nothing runs when one is invalid (the
 * message names the prompt and field; out stays empty). out->items are in
 * prompt order; free with pl_outputs_free. Requests already added through
 * pl_llm_add_request keep running alongside (their deltas stay queued for
 * pl_llm_poll).
 * When the engine fails some requests while running (a backend failure in a
 * step), the others still run to their end: the call returns the first
 * failure's status (pl_llm_errmsg names the prompt) and out holds every
 * prompt's output anyway, the failed ones with error set and finish_reason
 * PL_FINISH_ERROR. So free out whatever the status.
 */
PL_API pl_status pl_llm_generate(struct pl_llm *llm, const struct pl_prompt *prompts, int n_prompts,
                          const struct pl_sampling_params *params, int n_params,
                          struct pl_outputs *out);

/* Options of chat / apply_chat_template (vLLM's LLM.chat keyword arguments). */
struct pl_chat_options {
    bool add_generation_prompt;    /* true */
    bool continue_final_message;   /* false: when true, the last (assistant) message is
                                      left open for the model to continue */
    const char *chat_template;     /* template source overriding the model's; NULL: model's */
    const char *chat_template_kwargs; /* JSON object text of extra template variables, or NULL */
};

PL_API void pl_chat_options_default(struct pl_chat_options *o);

/*
 * Renders a conversation (JSON text of an array of {"role", "content"}
 * messages) with the chat template into *prompt (free with pl_free).
 */
PL_API pl_status pl_llm_apply_chat_template(struct pl_llm *llm, const char *messages_json,
                                     const struct pl_chat_options *opts, char **prompt);

/*
 * vLLM's LLM.chat: renders each conversation, tokenizes it without adding
 * special tokens (the template places them) and generates as pl_llm_generate.
 * opts may be NULL (defaults).
 */
PL_API pl_status pl_llm_chat(struct pl_llm *llm, const char *const *conversations, int n_conversations,
                      const struct pl_sampling_params *params, int n_params,
                      const struct pl_chat_options *opts, struct pl_outputs *out);

/* ---- the request interface (servers): one thread drives these ---------- */

/*
 * Queues a request. request_id must be unique among unfinished requests.
 * params NULL: the defaults. Invalid params or prompts are refused with
 * PL_STATUS_INVALID_ARGUMENT and a message naming the field; token ids (the
 * prompt's, logit_bias', allowed_token_ids') must be ids that exist
 * (pl_llm_token_id_exists).
 */
PL_API pl_status pl_llm_add_request(struct pl_llm *llm, const char *request_id,
                             const struct pl_prompt *prompt,
                             const struct pl_sampling_params *params);

/*
 * Queues a pooling request (see struct pl_pooling_params): it runs as part of
 * the same steps as generation requests and its finished output carries the
 * embedding. params NULL: pl_pooling_params_default. The prompt must be
 * shorter than max_model_len. PL_STATUS_UNSUPPORTED when the model returns no
 * hidden states.
 */
PL_API pl_status pl_llm_add_pooling_request(struct pl_llm *llm, const char *request_id,
                                     const struct pl_prompt *prompt,
                                     const struct pl_pooling_params *params);

/* The width of the pooled vectors (the model's hidden size); 0 when not open. */
PL_API int pl_llm_hidden_size(const struct pl_llm *llm);

/*
 * Runs one engine step (no-op when nothing is queued). A failure (backend,
 * internal) is returned, and the requests that step ran are already finished
 * with an error (their last delta, at the next poll, has error set); the rest
 * keep running, so keep stepping and polling.
 */
PL_API pl_status pl_llm_step(struct pl_llm *llm);

/* True while a request is waiting or running. */
PL_API bool pl_llm_has_unfinished(const struct pl_llm *llm);

/*
 * Takes the deltas produced since the last poll (see struct pl_request_output)
 * into *out (free with pl_outputs_free). Streaming text holds back bytes that
 * may still become a stop string; a request's deltas concatenate to its final
 * output. A request is forgotten after the delta with finished = true.
 */
PL_API pl_status pl_llm_poll(struct pl_llm *llm, struct pl_outputs *out);

/* Aborts an unfinished request: its last delta has finish_reason "abort". */
PL_API pl_status pl_llm_abort(struct pl_llm *llm, const char *request_id);

/* ---- streaming: thread-safe, one request at a time per stream ---------- */

/*
 * The streaming interface (what the Python package and servers built on the
 * library use; vLLM's AsyncLLMEngine.generate in C). pl_llm_submit hands a
 * request to the handle's engine thread, started on the first submit; the
 * returned stream yields the request's deltas (struct pl_request_output, as
 * pl_llm_poll's: new tokens, text and logprobs only; the prompt fields in the
 * first) until the one with finished = true. Concatenating a request's deltas
 * (pl_request_output_append does it) gives its complete output.
 *
 * Threads: any number of threads may submit, and read, abort and free
 * streams, each stream used by one thread at a time. Once the engine thread
 * runs, the synchronous calls (pl_llm_generate, pl_llm_chat, and the request
 * interface above) still work: they wait while the engine thread steps, and
 * refuse with PL_STATUS_INVALID_ARGUMENT while streamed requests are
 * unfinished.
 *
 * Every submitted request ends with exactly one finished delta, whatever
 * happens (abort, an engine failure: error set; memory for it is reserved
 * when the request is admitted).
 *
 *     struct pl_llm_stream *s;
 *     if (pl_llm_submit(llm, NULL, &prompt, &params, &s) != PL_STATUS_OK)
 *         fprintf(stderr, "%s\n", pl_llm_errmsg(llm));   // s is NULL
 *     struct pl_request_output *d;
 *     while (pl_llm_stream_next(s, -1, &d) == PL_STATUS_OK && d) {
 *         fwrite(d->outputs[0].text, 1, d->outputs[0].text_len, stdout); // if n_outputs > 0
 *         bool done = d->finished;
 *         pl_request_output_free(d);
 *         if (done) break;
 *     }
 *     pl_llm_stream_free(s);
 */
struct pl_llm_stream;

/*
 * Validates and queues a request on the engine thread. request_id: the name
 * its outputs carry (NULL: the engine's number in decimal); streams are told
 * apart by the engine's number, so names need not be unique. params NULL:
 * pl_llm_default_sampling_params. Refusals (bad params or prompt, or prompt +
 * max_tokens beyond max_model_len: PL_STATUS_INVALID_ARGUMENT naming the
 * field; beam search: PL_STATUS_UNSUPPORTED) leave *out NULL, with the
 * message in pl_llm_errmsg (which is per thread, so concurrent callers each
 * read their own).
 */
PL_API pl_status pl_llm_submit(struct pl_llm *llm, const char *request_id,
                               const struct pl_prompt *prompt,
                               const struct pl_sampling_params *params,
                               struct pl_llm_stream **out);

/*
 * pl_llm_submit for n_prompts requests at once, all or none: each is checked
 * first (a refusal names the prompt: "prompt 2: ..."), then they are queued
 * together, so the engine thread admits them in the same iteration, as
 * pl_llm_generate does with its prompts. That keeps unseeded sampling (the
 * engine's generator) reproducible for a batch, whatever the timing.
 * request_ids: [n_prompts] names, or NULL (the engine's numbers). params: one
 * set (n_params 1), one per prompt (n_params == n_prompts), or NULL (the
 * defaults). out: [n_prompts] streams, all NULL on failure.
 */
PL_API pl_status pl_llm_submit_all(struct pl_llm *llm, const char *const *request_ids,
                                   const struct pl_prompt *prompts, int n_prompts,
                                   const struct pl_sampling_params *params, int n_params,
                                   struct pl_llm_stream **out);

/*
 * Takes the stream's next delta, waiting up to timeout_s seconds for one
 * (< 0: as long as it takes; 0: no wait). *out: the delta (free with
 * pl_request_output_free), or NULL when none came in time or the finished
 * delta was already taken (pl_llm_stream_is_finished). Returns PL_STATUS_OK;
 * errors of the request itself arrive in its last delta (error, error_status).
 */
PL_API pl_status pl_llm_stream_next(struct pl_llm_stream *s, double timeout_s,
                                    struct pl_request_output **out);

/* True once the finished delta has been taken by pl_llm_stream_next. */
PL_API bool pl_llm_stream_is_finished(const struct pl_llm_stream *s);

/* The engine's number for the stream's request (request_num of its outputs). */
PL_API uint64_t pl_llm_stream_request_num(const struct pl_llm_stream *s);

/* Asks for the request's abort (idempotent): it still ends with a finished
 * delta, finish_reason PL_FINISH_ABORT. */
PL_API void pl_llm_stream_abort(struct pl_llm_stream *s);

/* Aborts the request if unfinished and frees the stream and its queued deltas. NULL: no-op. */
PL_API void pl_llm_stream_free(struct pl_llm_stream *s);

/* Frees a delta of pl_llm_stream_next (the struct and what it holds). NULL: no-op. */
PL_API void pl_request_output_free(struct pl_request_output *o);

/*
 * Appends delta to acc, making acc the request's cumulative output (vLLM's
 * RequestOutputKind.CUMULATIVE): text, token ids and logprobs concatenate per
 * sample index, the prompt fields and finish state are taken from the delta
 * when it has them. acc starts zeroed (memset) and is freed with
 * pl_request_output_fini. PL_STATUS_NO_MEMORY leaves acc as it was.
 */
PL_API pl_status pl_request_output_append(struct pl_request_output *acc,
                                          const struct pl_request_output *delta);

/* Frees what o holds (not o itself) and zeroes it. */
PL_API void pl_request_output_fini(struct pl_request_output *o);

struct pl_llm_stats {
    int kv_blocks_total;
    int kv_blocks_used;            /* now */
    int kv_blocks_peak_used;
    int kv_blocks_cached_free;     /* free blocks still holding a prefix-cache entry */
    double kv_waste;               /* time-averaged over steps: unused reserved slots / reserved */
    double prefix_cache_hit_rate;  /* prompt tokens served from the cache / looked up */
    uint64_t num_preemptions;
    uint64_t num_steps;
    uint64_t prompt_tokens;        /* prompt tokens of the requests added */
    uint64_t generation_tokens;    /* tokens sampled */
    int num_waiting;
    int num_running;
    double seconds;                /* time spent inside steps */
    double tokens_per_second;      /* generation_tokens / seconds */
};

PL_API void pl_llm_get_stats(const struct pl_llm *llm, struct pl_llm_stats *out);

/* ---- tokenizer access --------------------------------------------------- */

/* Encodes text; *ids is allocated (pl_free). PL_STATUS_UNSUPPORTED without a tokenizer. */
PL_API pl_status pl_llm_encode(struct pl_llm *llm, const char *text, bool add_special_tokens,
                        int32_t **ids, int *n_ids);
/* Decodes ids; *text is allocated, NUL-terminated (pl_free). */
PL_API pl_status pl_llm_decode(struct pl_llm *llm, const int32_t *ids, int n_ids,
                        bool skip_special_tokens, char **text);
PL_API bool pl_llm_has_tokenizer(const struct pl_llm *llm);
PL_API int pl_llm_vocab_size(const struct pl_llm *llm);
/* True when requests may name token id: below the model's vocab_size (config.json,
 * the embedding rows) and, with a tokenizer, an id the tokenizer has a token for. A
 * model's vocab is often padded past its tokenizer (Qwen2: 151936 rows, ~151670
 * tokens): ids in that gap are refused in requests, and decode to "" when sampled. */
PL_API bool pl_llm_token_id_exists(const struct pl_llm *llm, int32_t id);
PL_API int pl_llm_max_model_len(const struct pl_llm *llm);

#ifdef __cplusplus
}
#endif
#endif
