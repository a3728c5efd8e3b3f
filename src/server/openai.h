/*
 * openai.h -- the OpenAI-compatible routes: requests in, engine requests out,
 * OpenAI response and stream objects back.
 *
 * Owns: parsing and validation of /v1/completions and /v1/chat/completions
 * bodies (vLLM's protocol: OpenAI fields plus vLLM's sampling extras; fields
 * neither knows, such as store, metadata or service_tier, are ignored with
 * one logged warning per request, as vLLM does, while known fields of the
 * wrong type are a 400 naming them), prompt preparation (chat template rendering,
 * tokenization: done here, on the HTTP threads, as vLLM's API server does, so
 * the engine receives token ids), the response objects (text_completion,
 * chat.completion, their chunks, usage, logprobs in both formats), Server-Sent
 * Events framing, the reasoning parser applied to chat answers
 * (message.reasoning_content / delta.reasoning_content, see reasoning.h),
 * optional per-request log lines (serving_log.h), and the small routes
 * (/v1/models, /v1/models/{id}, /tokenize, /detokenize, /version, /health,
 * /metrics). /v1/embeddings (embeddings.c) and /v1/responses (responses.c)
 * are request kinds of their own behind the same generation interface.
 *
 * Threads: handlers run on the transport's threads (those of requests with a
 * body on its handler pool, off the event loop); the tokenizer and chat
 * template are immutable and shared; the engine is reached only through the
 * async engine. One HTTP request may become several engine requests (a list
 * of prompts); choice index = prompt index * n + sample index.
 *
 * Two layers: pl_openai_gen_* below is one generation request independent of
 * any transport (parse, submit, drain deltas into SSE text or the response
 * object, abort); the HTTP routes (pl_openai_register) and the RunPod
 * worker's OpenAI-route jobs (src/worker/handlers.c) both drive it, so their
 * validation, errors and shapes are the same by construction.
 */
#ifndef PL_SERVER_OPENAI_H
#define PL_SERVER_OPENAI_H

#include "engine/async_engine.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/sbuf.h"

#include <stdbool.h>
#include <stdint.h>

struct pl_tokenizer;

struct pl_openai_params {
    const char *const *served_names; /* [n_served_names] model names clients may use (>= 1) */
    int n_served_names;
    const char *model_root;          /* the model directory (reported by /v1/models) */
    int max_model_len;               /* context length: prompt + output tokens */
    const struct pl_tokenizer *tok;  /* borrowed; NULL: only token-id prompts */
    const char *chat_template;       /* template source overriding the tokenizer's, or NULL */
    const struct pl_sampling_params *defaults; /* the model's sampling defaults, or NULL */
    int vocab_size;                  /* bounds token ids in prompts */
    struct pl_async_engine *ae;      /* borrowed; NULL only in parsing tests */
    struct pl_metrics *metrics;      /* borrowed, may be NULL */
    const char *response_role;       /* role of chat answers (vLLM's --response-role); NULL:
                                        "assistant" */
    const char *reasoning_parser;    /* "qwen3", "deepseek_r1" (--reasoning-parser) or NULL */
    bool enable_auto_tool_choice;    /* tool_choice "auto" is served (--enable-auto-tool-choice) */
    const char *tool_call_parser;    /* "hermes", "llama3_json", "mistral"
                                        (--tool-call-parser) or NULL: the one the chat
                                        template shows (tool_parser.h) */
    struct pl_pooling_params pooling; /* /v1/embeddings' pooling; type 0: the default (LAST,
                                        normalize) */
    bool log_requests;               /* per-request log lines (--enable-log-requests) */
    int max_log_len;                 /* prompt bytes in those lines (--max-log-len); <= 0:
                                        no prompt text */
};

struct pl_openai;

pl_status pl_openai_new(const struct pl_openai_params *p, struct pl_openai **out,
                        struct pl_err *err);
void pl_openai_free(struct pl_openai *o); /* NULL is a no-op */

/* Registers every route on s (the API key guards the /v1/ ones and /tokenize, /detokenize). */
pl_status pl_openai_register(struct pl_openai *o, struct pl_http_server *s, struct pl_err *err);

/* ---- parsing (exposed for tests and fuzzing) ---- */

/* COMPLETION and CHAT are parsed by pl_openai_parse; EMBEDDING (embeddings.c) and
 * RESPONSES (responses.c) only run through the generation interface below. */
enum pl_openai_kind {
    PL_OPENAI_COMPLETION,
    PL_OPENAI_CHAT,
    PL_OPENAI_EMBEDDING,
    PL_OPENAI_RESPONSES
};

struct pl_openai_prompt {
    int32_t *ids;   /* [n_ids] */
    int n_ids;
    char *text;     /* the prompt text (echo), NULL for token-id prompts */
    int max_tokens; /* resolved for this prompt: >= 1 */
};

struct pl_openai_request {
    enum pl_openai_kind kind;
    char *model;                     /* the name responses report */
    struct pl_openai_prompt *prompts; /* [n_prompts] */
    int n_prompts;
    struct pl_sampling_params sp;    /* owned, validated; max_tokens per prompt above */
    bool stream;
    bool include_usage;              /* stream_options.include_usage */
    bool continuous_usage;           /* stream_options.continuous_usage_stats */
    bool echo;                       /* completions */
    int logprobs;                    /* -1: none; else top-k per token */
    bool skip_special_tokens;        /* for token strings in logprobs */
    /* chat tool calling (tool_call.h) */
    int tool_parser;                 /* enum pl_tool_parser_kind: how answers are split
                                        into content and tool_calls; 0: not at all */
    char tool_named[256];            /* a named tool_choice's function */
    int tool_max_calls;              /* 1 with parallel_tool_calls false, else 0 */
};

struct pl_openai_error {
    int status;                      /* 400, 404, ... */
    const char *type;                /* NULL: from the status */
    char param[64];                  /* the field at fault, "" when none */
    char message[PL_ERR_MSG_MAX];
};

/* Parses and validates a request body. On failure e says the status, field and why. */
pl_status pl_openai_parse(const struct pl_openai *o, enum pl_openai_kind kind, const char *body,
                          size_t len, struct pl_openai_request *out, struct pl_openai_error *e);
void pl_openai_request_fini(struct pl_openai_request *r);

/*
 * Tokenizes one prompt as the routes do, for callers that build engine
 * requests themselves (the worker's native forms). CHAT renders root's
 * "messages" with the chat template (root's add_generation_prompt,
 * chat_template, chat_template_kwargs ... honoured; no special tokens added);
 * COMPLETION encodes root's "prompt" string (special tokens added unless
 * root says add_special_tokens: false). out->max_tokens is left 0; free out
 * with free(out->ids), free(out->text).
 */
pl_status pl_openai_prepare_prompt(const struct pl_openai *o, enum pl_openai_kind kind,
                                   const struct json_t *root, struct pl_openai_prompt *out,
                                   struct pl_openai_error *e);

/* The /v1/models answer: {"object": "list", "data": [one model per served name]}. */
struct json_t *pl_openai_models_json(const struct pl_openai *o);

/* The /v1/models/{id} answer: the model object of a served name, or NULL with e a 404
 * ("The model `x` does not exist."). */
struct json_t *pl_openai_model_json(const struct pl_openai *o, const char *id,
                                    struct pl_openai_error *e);
/* The HTTP status an engine refusal or failure answers: 400 for a refused request,
 * 503 for overload, shutdown or memory, 500 when the engine failed it. */
int pl_openai_status_of(pl_status st);

/* The error as its OpenAI JSON object {"message", "type", "param", "code"} (malloc'd text). */
char *pl_openai_error_text(const struct pl_openai_error *e);

/* ---- one generation request, transport-independent ---- */

/*
 * Life: gen_new (parse) -> gen_submit -> [notify on the engine thread] ->
 * gen_produce (stream) or gen_result (not stream) until done -> gen_free.
 * gen_abort any time (the client left, the job was stopped). Only one thread
 * at a time calls a gen's functions; notify may run on the engine thread
 * concurrently with them (it must only signal).
 */
struct pl_openai_gen;

/* Parses and validates body (as pl_openai_parse for COMPLETION and CHAT; embeddings.c and
 * responses.c for the other kinds). Nothing is submitted yet. */
pl_status pl_openai_gen_new(struct pl_openai *o, enum pl_openai_kind kind, const char *body,
                            size_t len, struct pl_openai_gen **out, struct pl_openai_error *e);

/*
 * Submits one engine request per prompt, all or none (pl_async_engine_submit_all);
 * notify(user) is called on the engine thread after each delta. On failure
 * nothing was submitted and e says why (400 for a refused request or more
 * prompts than the server ever admits at once, 503 when the engine is full or
 * stopping).
 */
pl_status pl_openai_gen_submit(struct pl_openai_gen *g, pl_async_notify_fn notify, void *user,
                               struct pl_openai_error *e);

bool pl_openai_gen_is_stream(const struct pl_openai_gen *g);

/*
 * Streaming: appends the SSE events for everything that arrived since the
 * last call (the chat role chunks first; at the end an error event or the
 * usage chunk, then "data: [DONE]"). Returns false once [DONE] was written.
 */
bool pl_openai_gen_produce(struct pl_openai_gen *g, struct pl_sbuf *out);

/*
 * Non-streaming: false while engine requests are unfinished. Then true and
 * either *resp is the response object (the caller owns it) or, when the
 * engine failed the request, *resp is NULL and e says why.
 */
bool pl_openai_gen_result(struct pl_openai_gen *g, struct json_t **resp,
                          struct pl_openai_error *e);

/* True when the engine failed a request of g (e filled); meaningful once it is done. */
bool pl_openai_gen_failed(const struct pl_openai_gen *g, struct pl_openai_error *e);

/* Asks the engine to abort every unfinished request of g (their KV blocks are freed). */
void pl_openai_gen_abort(struct pl_openai_gen *g);

/* Aborts what is unfinished, releases g's engine requests and frees g. */
void pl_openai_gen_free(struct pl_openai_gen *g); /* NULL is a no-op */

/* Appends one Server-Sent Event: "data: <payload>\n\n" (payload has no newlines). */
void pl_openai_sse_data(struct pl_sbuf *b, const char *payload, size_t len);

#endif
