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
const char *pl_status_str(pl_status s);

/* ------------------------------------------------------------------------ */
/* Sampling parameters (vLLM's SamplingParams, same names and defaults)      */
/* ------------------------------------------------------------------------ */

struct pl_err;               /* src/util/err.h: a status plus a message buffer */
struct pl_generation_config; /* src/model/config.h: generation_config.json fields */
struct json_t;               /* jansson's json_t */

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
 * Per-request sampling parameters, field for field vLLM's SamplingParams
 * (vllm/sampling_params.py); pl_sampling_params_default gives vLLM's defaults.
 *
 * Memory: the arrays (stop, stop_token_ids, logit_bias, allowed_token_ids) are
 * borrowed pointers with counts unless the params own them. A params struct
 * owns its arrays only when it came from pl_sampling_params_copy or
 * pl_sampling_params_from_json: then `owned` points at the single allocation
 * holding every array and string, and pl_sampling_params_fini frees it. For
 * borrowed params fini is a no-op, so calling it is always safe.
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

    void *owned;               /* the allocation behind the arrays, or NULL when borrowed */
};

/* Fills p with vLLM's SamplingParams defaults (borrowed, empty arrays). */
void pl_sampling_params_default(struct pl_sampling_params *p);

/*
 * Checks p against vLLM's rules (SamplingParams._verify_args and verify(),
 * with max_logprobs = PL_MAX_LOGPROBS) and applies vLLM's normalizations:
 * a temperature in (0, 0.01) is raised to 0.01, and greedy requests
 * (temperature < 1e-5) get top_p = 1, top_k = 0, min_p = 0.
 * vocab_size bounds the token ids of stop_token_ids, logit_bias and
 * allowed_token_ids (pass <= 0 to skip those checks).
 * Returns PL_STATUS_INVALID_ARGUMENT with a message naming the field.
 */
pl_status pl_sampling_params_validate(struct pl_sampling_params *p, int vocab_size,
                                      struct pl_err *err);

/*
 * Applies a model's generation_config.json defaults the way vLLM does with
 * --generation-config auto (ModelConfig.get_diff_sampling_param): temperature,
 * top_p, top_k, min_p, repetition_penalty and max_new_tokens (-> max_tokens),
 * each only when the file sets it to a value other than transformers'
 * GenerationConfig default (vLLM reads to_diff_dict()). Call it on defaults,
 * before the request's own fields are read (pl_sampling_params_from_json).
 * gen may be NULL (nothing to apply).
 */
void pl_sampling_params_apply_generation_config(struct pl_sampling_params *p,
                                                const struct pl_generation_config *gen);

/*
 * Applies an operator's override (vLLM's --override-generation-config, parsed
 * by pl_generation_config_parse_override): every field it sets replaces p's,
 * as given (unlike the file's defaults, a value equal to transformers' default
 * still counts); max_new_tokens sets max_tokens. gen may be NULL.
 */
void pl_sampling_params_apply_generation_override(struct pl_sampling_params *p,
                                                  const struct pl_generation_config *gen);

/*
 * Deep-copies src into *dst as one allocation (dst owns it; free it with
 * pl_sampling_params_fini). dst may not alias src. PL_STATUS_NO_MEMORY on
 * allocation failure (dst is then left borrowed and empty of arrays).
 */
pl_status pl_sampling_params_copy(struct pl_sampling_params *dst,
                                  const struct pl_sampling_params *src, struct pl_err *err);

/* Frees what p owns (if anything) and leaves p with empty borrowed arrays. */
void pl_sampling_params_fini(struct pl_sampling_params *p);

/*
 * Reads the sampling fields of a vLLM / OpenAI request body (completions or
 * chat) into *p, which the caller has initialized (defaults, then the
 * generation config): only the keys present change p; JSON null means "not
 * given" as in vLLM's request models. Names: every pl_sampling_params field,
 * plus "max_completion_tokens" (chat, preferred over max_tokens),
 * "top_logprobs" with boolean "logprobs" (chat), and "beam_width".
 * Keys listed in extra_keys (NULL-terminated, may be NULL) are the caller's
 * and skipped; any other key is an error naming it. On success p owns its
 * arrays (pl_sampling_params_fini). Types are checked, not ranges: call
 * pl_sampling_params_validate afterwards. Errors: PL_STATUS_INVALID_ARGUMENT
 * naming the key and what was wrong; PL_STATUS_UNSUPPORTED for vLLM fields
 * pagellm does not implement (bad_words, structured outputs, ...); on error
 * *p is unchanged.
 */
pl_status pl_sampling_params_from_json(const struct json_t *obj, const char *const *extra_keys,
                                       struct pl_sampling_params *p, struct pl_err *err);


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
void pl_pooling_params_default(struct pl_pooling_params *p);

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
const char *pl_finish_reason_str(enum pl_finish_reason r);

enum pl_stop_reason_kind {
    PL_STOP_REASON_NONE = 0, /* vLLM's stop_reason None (eos, length, abort, running) */
    PL_STOP_REASON_STRING,   /* stop_str holds the stop string that matched */
    PL_STOP_REASON_TOKEN     /* stop_token_id holds the stop token id */
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
};

struct pl_outputs {
    struct pl_request_output *items; /* [n] */
    int n;
};

/* Frees what *o holds and zeroes it. NULL is a no-op. */
void pl_outputs_free(struct pl_outputs *o);

/* Frees memory the API returned (encode ids, decoded text, rendered prompts). */
void pl_free(void *p);

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
    const char *quantization;      /* vLLM's --quantization: NULL / "none": the checkpoint's
                                      quantization_config; its method name (awq, gptq,
                                      compressed-tensors, fp8 and vLLM's *_marlin aliases) must
                                      match it; "fp8" on an unquantized checkpoint quantizes
                                      the weights to FP8 at load (docs/quantization.md) */
    const char *kv_cache_dtype;    /* vLLM's --kv-cache-dtype: NULL / "auto"; "fp8" /
                                      "fp8_e4m3" where the backend has an FP8 KV cache */
};

void pl_llm_params_default(struct pl_llm_params *p);

struct pl_llm;

/*
 * Loads the model, tokenizer (when the directory has one) and chat template,
 * and sizes the KV pool. Like sqlite3_open, *out receives a handle even on
 * failure (unless memory ran out: then NULL), so pl_llm_errmsg can say what
 * went wrong; free it with pl_llm_free either way.
 */
pl_status pl_llm_new(const struct pl_llm_params *p, struct pl_llm **out);
void pl_llm_free(struct pl_llm *llm);

/* The message of the last failed call on this handle ("" after success). Never NULL. */
const char *pl_llm_errmsg(const struct pl_llm *llm);

/*
 * Fills p with the sampling defaults this LLM applies: vLLM's defaults, then
 * (generation_config "auto") the model's generation_config.json.
 */
void pl_llm_default_sampling_params(const struct pl_llm *llm, struct pl_sampling_params *p);

/*
 * Applies the operator's override_generation_config (pl_llm_params) to p: for
 * callers that put defaults of their own over pl_llm_default_sampling_params
 * (the RunPod worker's per-mode defaults) so that the operator's values still
 * win. No-op without an override.
 */
void pl_llm_override_sampling_params(const struct pl_llm *llm, struct pl_sampling_params *p);

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
void pl_llm_set_progress(struct pl_llm *llm, pl_llm_progress_fn fn, void *user);

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
pl_status pl_llm_generate(struct pl_llm *llm, const struct pl_prompt *prompts, int n_prompts,
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

void pl_chat_options_default(struct pl_chat_options *o);

/*
 * Renders a conversation (JSON text of an array of {"role", "content"}
 * messages) with the chat template into *prompt (free with pl_free).
 */
pl_status pl_llm_apply_chat_template(struct pl_llm *llm, const char *messages_json,
                                     const struct pl_chat_options *opts, char **prompt);

/*
 * vLLM's LLM.chat: renders each conversation, tokenizes it without adding
 * special tokens (the template places them) and generates as pl_llm_generate.
 * opts may be NULL (defaults).
 */
pl_status pl_llm_chat(struct pl_llm *llm, const char *const *conversations, int n_conversations,
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
pl_status pl_llm_add_request(struct pl_llm *llm, const char *request_id,
                             const struct pl_prompt *prompt,
                             const struct pl_sampling_params *params);

/*
 * Queues a pooling request (see struct pl_pooling_params): it runs as part of
 * the same steps as generation requests and its finished output carries the
 * embedding. params NULL: pl_pooling_params_default. The prompt must be
 * shorter than max_model_len. PL_STATUS_UNSUPPORTED when the model returns no
 * hidden states.
 */
pl_status pl_llm_add_pooling_request(struct pl_llm *llm, const char *request_id,
                                     const struct pl_prompt *prompt,
                                     const struct pl_pooling_params *params);

/* The width of the pooled vectors (the model's hidden size); 0 when not open. */
int pl_llm_hidden_size(const struct pl_llm *llm);

/*
 * Runs one engine step (no-op when nothing is queued). A failure (backend,
 * internal) is returned, and the requests that step ran are already finished
 * with an error (their last delta, at the next poll, has error set); the rest
 * keep running, so keep stepping and polling.
 */
pl_status pl_llm_step(struct pl_llm *llm);

/* True while a request is waiting or running. */
bool pl_llm_has_unfinished(const struct pl_llm *llm);

/*
 * Takes the deltas produced since the last poll (see struct pl_request_output)
 * into *out (free with pl_outputs_free). Streaming text holds back bytes that
 * may still become a stop string; a request's deltas concatenate to its final
 * output. A request is forgotten after the delta with finished = true.
 */
pl_status pl_llm_poll(struct pl_llm *llm, struct pl_outputs *out);

/* Aborts an unfinished request: its last delta has finish_reason "abort". */
pl_status pl_llm_abort(struct pl_llm *llm, const char *request_id);

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

void pl_llm_get_stats(const struct pl_llm *llm, struct pl_llm_stats *out);

/* ---- tokenizer access --------------------------------------------------- */

/* Encodes text; *ids is allocated (pl_free). PL_STATUS_UNSUPPORTED without a tokenizer. */
pl_status pl_llm_encode(struct pl_llm *llm, const char *text, bool add_special_tokens,
                        int32_t **ids, int *n_ids);
/* Decodes ids; *text is allocated, NUL-terminated (pl_free). */
pl_status pl_llm_decode(struct pl_llm *llm, const int32_t *ids, int n_ids,
                        bool skip_special_tokens, char **text);
bool pl_llm_has_tokenizer(const struct pl_llm *llm);
int pl_llm_vocab_size(const struct pl_llm *llm);
/* True when requests may name token id: below the model's vocab_size (config.json,
 * the embedding rows) and, with a tokenizer, an id the tokenizer has a token for. A
 * model's vocab is often padded past its tokenizer (Qwen2: 151936 rows, ~151670
 * tokens): ids in that gap are refused in requests, and decode to "" when sampled. */
bool pl_llm_token_id_exists(const struct pl_llm *llm, int32_t id);
int pl_llm_max_model_len(const struct pl_llm *llm);

#ifdef __cplusplus
}
#endif
#endif
