/*
 * openai_ext.h -- what the OpenAI layer (openai.c) shares with its other
 * request kinds: /v1/embeddings (embeddings.c) and /v1/responses
 * (responses.c). Private to src/server.
 *
 * Owns: struct pl_openai_gen_ops, the operations a request kind implements
 * behind the transport-independent generation interface of openai.h
 * (pl_openai_gen_*: the HTTP routes and the RunPod worker drive every kind the
 * same way), and the helpers those kinds reuse so that model checks, prompt
 * parsing, unknown-field handling, errors and ids are the server's own.
 */
#ifndef PL_SERVER_OPENAI_EXT_H
#define PL_SERVER_OPENAI_EXT_H

#include "server/openai.h"

#include <jansson.h>

/* One request of another kind; state is the kind's own. Same contract as the
 * pl_openai_gen_* functions of the same names (openai.h). */
struct pl_openai_gen_ops {
    const char *route; /* "/v1/embeddings", for logs */
    pl_status (*submit)(void *state, pl_async_notify_fn notify, void *user,
                        struct pl_openai_error *e);
    bool (*is_stream)(const void *state);
    bool (*produce)(void *state, struct pl_sbuf *out);
    bool (*result)(void *state, json_t **resp, struct pl_openai_error *e);
    bool (*failed)(const void *state, struct pl_openai_error *e);
    void (*abort)(void *state);
    void (*free)(void *state);
};

/* Constructors: parse body; on success *state and *ops are set, nothing is submitted. */
pl_status pl_openai_embedding_new(struct pl_openai *o, const char *body, size_t len,
                                  void **state, const struct pl_openai_gen_ops **ops,
                                  struct pl_openai_error *e);
pl_status pl_openai_responses_new(struct pl_openai *o, const char *body, size_t len,
                                  void **state, const struct pl_openai_gen_ops **ops,
                                  struct pl_openai_error *e);

/*
 * How a chat request spells its structured-output and tool fields. CHAT is chat
 * completions' own layout. RESPONSES is the one responses.c hands a /v1/responses
 * request over in: "response_format" holds text.format as the Responses API writes it
 * ({"type": "json_schema", "name", "schema", "strict"}, no json_schema wrapper), tools
 * and a named tool_choice are flat (tool_call.h), and errors name the Responses fields
 * (text.format, tools[i].name). The rules behind the fields are the same code either way.
 */
enum pl_openai_layout { PL_OPENAI_LAYOUT_CHAT, PL_OPENAI_LAYOUT_RESPONSES };

/* pl_openai_gen_new of a PL_OPENAI_CHAT request whose fields come in layout. */
pl_status pl_openai_gen_new_chat(struct pl_openai *o, enum pl_openai_layout layout,
                                 const char *body, size_t len, struct pl_openai_gen **out,
                                 struct pl_openai_error *e);

/* ---- helpers of openai.c ---- */

/* Sets e (status, param or NULL, message) and returns the matching pl_status. */
pl_status pl_openai_fail(struct pl_openai_error *e, int status, const char *param,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* A JSON object body, or NULL with e set (400). */
json_t *pl_openai_load_body(const char *body, size_t len, struct pl_openai_error *e);

/*
 * Removes from root (an object) every key that is neither in keys
 * (NULL-terminated) nor, when sampling is set, a sampling parameter
 * (pl_sampling_params_from_json's), and logs them in one warning, as vLLM:
 * "The following fields were present in the request but ignored: {...}".
 */
void pl_openai_ignore_unknown(json_t *root, const char *const *keys, bool sampling);

/* root's "model": a served name (404 otherwise), or the first served name when absent.
 * *model is malloc'd. */
pl_status pl_openai_check_model_field(const struct pl_openai *o, const json_t *root,
                                      char **model, struct pl_openai_error *e);

/*
 * A prompt value as the completions route reads "prompt": a string, a list of
 * strings, a list of token ids or a list of token-id lists. field names it in
 * errors. Appends one prompt per input to r (r->prompts; free with
 * pl_openai_request_fini). Lengths are not checked here.
 */
pl_status pl_openai_parse_input(const struct pl_openai *o, const json_t *value, bool add_special,
                                const char *field, struct pl_openai_request *r,
                                struct pl_openai_error *e);

/* "<prefix>-<unique hex>" into buf. */
void pl_openai_make_id(struct pl_openai *o, const char *prefix, char *buf, size_t cap);

int pl_openai_max_model_len(const struct pl_openai *o);
struct pl_async_engine *pl_openai_engine(const struct pl_openai *o);
/* The server's pooling for /v1/embeddings (the default filled in). */
struct pl_pooling_params pl_openai_pooling(const struct pl_openai *o);
/* Per-request logs on? *max_log_len: prompt bytes to show (-1: none). */
bool pl_openai_log_requests(const struct pl_openai *o, int *max_log_len);

/* Serialises the params of a request for the per-request log (malloc'd). */
char *pl_openai_params_text(const struct pl_sampling_params *sp);

/* Gives g (a chat gen used by another kind) the id and route its log lines show. */
void pl_openai_gen_set_label(struct pl_openai_gen *g, const char *id, const char *route);

#endif
