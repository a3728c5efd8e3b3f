/*
 * openai.c -- OpenAI-compatible routes over the async engine (see openai.h).
 *
 * Reference for names, defaults and shapes: the OpenAI API reference and
 * vLLM's entrypoints/openai/protocol.py and serving_{completion,chat}.py.
 * Defaults: completions max_tokens 16; chat max_tokens (or
 * max_completion_tokens) the rest of the context; a null field means "not
 * given". Errors are 400 naming the field, 404 for an unknown model.
 *
 * A generation request's life (struct pl_openai_gen, one per HTTP request or
 * RunPod job; nothing in it knows the transport):
 *   gen_new: parse -> gen_submit: one engine request per prompt; engine
 *   thread: deltas -> notify (the HTTP route wakes its connection, the worker
 *   its job thread); caller's thread: gen_produce()/gen_result() drain deltas
 *   into per-choice state and format SSE chunks or the final object;
 *   gen_free: abort what is unfinished (the client went away: the engine frees
 *   its blocks), release, free.
 */
#include "engine/sampling_params.h"
#include "server/openai.h"
#include "grammar/grammar.h"

#include "server/openai_ext.h"
#include "server/reasoning.h"
#include "server/serving_log.h"
#include "server/tool_call.h"
#include "engine/vocab_check.h"
#include "tokenizer/chat_template/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "util/json.h"
#include "util/log.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct pl_openai {
    char **names;
    int n_names;
    char *model_root;
    int max_model_len;
    const struct pl_tokenizer *tok;
    struct pl_chat_template *tmpl; /* NULL when neither the tokenizer nor the flag has one */
    char *tmpl_error;              /* why tmpl is NULL */
    struct pl_sampling_params defaults;
    int vocab_size;
    struct pl_async_engine *ae;
    struct pl_metrics *metrics;
    char *role;                    /* of chat answers */
    enum pl_reasoning_kind reasoning; /* --reasoning-parser */
    enum pl_tool_parser_kind tool_parser; /* tool_choice "auto"'s parser; NONE: "auto" refused */
    enum pl_tool_parser_kind tool_format; /* the template's call format (ids follow it) */
    struct pl_pooling_params pooling; /* /v1/embeddings */
    bool log_requests;             /* --enable-log-requests */
    int max_log_len;               /* --max-log-len (-1: no prompt text) */
    time_t created;
    atomic_ullong next_id;
    unsigned long long id_salt;
};

/* ---- errors ---------------------------------------------------------------- */

static pl_status vfail(struct pl_openai_error *e, int status, const char *param, const char *fmt,
                       va_list ap)
{
    e->status = status;
    e->type = NULL;
    snprintf(e->param, sizeof(e->param), "%s", param ? param : "");
    vsnprintf(e->message, sizeof(e->message), fmt, ap);
    return status == 404 ? PL_STATUS_NOT_FOUND : PL_STATUS_INVALID_ARGUMENT;
}

__attribute__((format(printf, 4, 5))) static pl_status fail(struct pl_openai_error *e, int status,
                                                             const char *param,
                                                             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pl_status st = vfail(e, status, param, fmt, ap);
    va_end(ap);
    return st;
}

pl_status pl_openai_fail(struct pl_openai_error *e, int status, const char *param,
                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pl_status st = vfail(e, status, param, fmt, ap);
    va_end(ap);
    return st;
}

/* The field a sampling-params message names, for "param": the quoted name of
 * "unknown field 'x'", else the first sampling field named as a whole word. */
static void param_from_message(const char *msg, char *param, size_t cap)
{
    static const char *const fields[] = {
        "n", "presence_penalty", "frequency_penalty", "repetition_penalty", "temperature",
        "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
        "include_stop_str_in_output", "ignore_eos", "max_tokens", "max_completion_tokens",
        "min_tokens", "logprobs", "top_logprobs", "prompt_logprobs", "skip_special_tokens",
        "spaces_between_special_tokens", "logit_bias", "allowed_token_ids", "use_beam_search",
        "beam_width", "length_penalty", "early_stopping", "best_of", NULL};
    param[0] = '\0';
    const char *q = strstr(msg, "unknown field '");
    if (q) {
        q += strlen("unknown field '");
        const char *end = strchr(q, '\'');
        if (end && (size_t)(end - q) < cap) {
            memcpy(param, q, (size_t)(end - q));
            param[end - q] = '\0';
        }
        return;
    }
    const char *best = NULL;
    const char *best_name = NULL;
    for (int i = 0; fields[i]; i++) {
        size_t n = strlen(fields[i]);
        for (const char *p = strstr(msg, fields[i]); p; p = strstr(p + 1, fields[i])) {
            bool word_start = p == msg || !(p[-1] == '_' || (p[-1] >= 'a' && p[-1] <= 'z'));
            char c = p[n];
            bool word_end = !(c == '_' || (c >= 'a' && c <= 'z') || c == '(');
            if (word_start && word_end) {
                if (!best || p < best || (p == best && n > strlen(best_name))) {
                    best = p;
                    best_name = fields[i];
                }
                break;
            }
        }
    }
    if (best_name && strlen(best_name) < cap)
        strcpy(param, best_name);
}

/* ---- setup ------------------------------------------------------------------- */

pl_status pl_openai_new(const struct pl_openai_params *p, struct pl_openai **out,
                        struct pl_err *err)
{
    *out = NULL;
    if (!p || p->n_served_names < 1 || p->max_model_len < 1)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "openai: need a served model name and max_model_len");
    struct pl_openai *o = calloc(1, sizeof(*o));
    if (!o)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    pl_sampling_params_default(&o->defaults);
    o->names = calloc((size_t)p->n_served_names, sizeof(char *));
    if (!o->names)
        goto oom;
    o->n_names = p->n_served_names;
    for (int i = 0; i < p->n_served_names; i++)
        if (!(o->names[i] = strdup(p->served_names[i])))
            goto oom;
    if (!(o->model_root = strdup(p->model_root ? p->model_root : "")) ||
        !(o->role = strdup(p->response_role ? p->response_role : "assistant")))
        goto oom;
    o->max_model_len = p->max_model_len;
    o->tok = p->tok;
    o->vocab_size = p->vocab_size > 0 ? p->vocab_size
                    : p->tok          ? pl_tokenizer_vocab_size(p->tok)
                                      : 0;
    o->ae = p->ae;
    o->metrics = p->metrics;
    if (!pl_reasoning_kind_from_name(p->reasoning_parser, &o->reasoning)) {
        pl_openai_free(o);
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "--reasoning-parser: '%s' is not one of %s", p->reasoning_parser,
                          pl_reasoning_kind_names());
    }
    pl_pooling_params_default(&o->pooling);
    if (p->pooling.type)
        o->pooling = p->pooling;
    o->log_requests = p->log_requests;
    o->max_log_len = p->log_requests && p->max_log_len > 0 ? p->max_log_len : -1;
    o->created = time(NULL);
    o->id_salt = ((unsigned long long)getpid() << 32) ^ (unsigned long long)o->created;
    if (p->defaults && pl_sampling_params_copy(&o->defaults, p->defaults, err) != PL_STATUS_OK) {
        pl_openai_free(o);
        return PL_STATUS_NO_MEMORY;
    }
    const char *src = p->chat_template ? p->chat_template
                      : p->tok         ? pl_tokenizer_chat_template(p->tok)
                                       : NULL;
    if (p->tool_call_parser && !p->enable_auto_tool_choice) {
        pl_openai_free(o);
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "--tool-call-parser needs --enable-auto-tool-choice");
    }
    if (!pl_tool_parser_kind_from_name(p->tool_call_parser, &o->tool_parser)) {
        pl_openai_free(o);
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "--tool-call-parser: '%s' is not one of %s", p->tool_call_parser,
                          pl_tool_parser_kind_names());
    }
    o->tool_format = o->tool_parser ? o->tool_parser : pl_tool_parser_detect(src);
    if (p->enable_auto_tool_choice && o->tool_parser == PL_TOOL_PARSER_NONE) {
        o->tool_parser = pl_tool_parser_detect(src);
        if (o->tool_parser == PL_TOOL_PARSER_NONE) {
            pl_openai_free(o);
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "--enable-auto-tool-choice: the chat template shows no tool-call "
                              "format (<tool_call>, [TOOL_CALLS] or <|python_tag|>): pass "
                              "--tool-call-parser (%s)",
                              pl_tool_parser_kind_names());
        }
    }
    if (src) {
        struct pl_err terr = {0};
        if (pl_chat_template_parse(src, strlen(src), &o->tmpl, &terr) != PL_STATUS_OK) {
            if (p->chat_template) { /* the operator's own template: say so at start-up */
                pl_openai_free(o);
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "--chat-template: %s",
                                  terr.msg);
            }
            o->tmpl = NULL;
            o->tmpl_error = strdup(terr.msg);
        }
    }
    *out = o;
    return PL_STATUS_OK;
oom:
    pl_openai_free(o);
    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
}

void pl_openai_free(struct pl_openai *o)
{
    if (!o)
        return;
    for (int i = 0; o->names && i < o->n_names; i++)
        free(o->names[i]);
    free(o->names);
    free(o->model_root);
    free(o->role);
    pl_chat_template_free(o->tmpl);
    free(o->tmpl_error);
    pl_sampling_params_fini(&o->defaults);
    free(o);
}

void pl_openai_request_fini(struct pl_openai_request *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].ids);
        free(r->prompts[i].text);
    }
    free(r->prompts);
    free(r->model);
    pl_sampling_params_fini(&r->sp);
    memset(r, 0, sizeof(*r));
}

/* ---- parsing ------------------------------------------------------------------ */

static const char *const completion_keys[] = {
    "model", "prompt", "echo", "stream", "stream_options", "suffix", "user",
    "add_special_tokens", "request_id", "priority", "response_format", NULL};

static const char *const chat_keys[] = {
    "model", "messages", "stream", "stream_options", "user", "add_generation_prompt",
    "continue_final_message", "chat_template", "chat_template_kwargs", "add_special_tokens",
    "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
    "function_call", "request_id", "priority", "documents", "echo", NULL};

/* Whether the sampling-params reader knows key (asked with the key alone, so that the
 * reader stays the one list of sampling fields: only an unknown key gets "unknown field"). */
static bool sampling_key(const char *key, json_t *value)
{
    json_t *one = json_object();
    if (!one || json_object_set(one, key, value) != 0) {
        json_decref(one);
        return true; /* out of memory: keep the key, the real parse will say what it is */
    }
    struct pl_sampling_params sp;
    pl_sampling_params_default(&sp);
    struct pl_err err = {0};
    pl_status st = pl_sampling_params_from_json(one, NULL, &sp, &err);
    pl_sampling_params_fini(&sp);
    json_decref(one);
    return st == PL_STATUS_OK || strncmp(err.msg, "unknown field '", 15) != 0;
}

void pl_openai_ignore_unknown(json_t *root, const char *const *keys, bool sampling)
{
    struct pl_sbuf names = {0};
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(root, tmp, k, v)
    {
        bool known = false;
        for (int i = 0; keys && keys[i] && !known; i++)
            known = !strcmp(keys[i], k);
        if (known || (sampling && sampling_key(k, v)))
            continue;
        pl_sbuf_printf(&names, "%s'%.64s'", names.len ? ", " : "", k);
        json_object_del(root, k);
    }
    if (names.len)
        PL_WARN("The following fields were present in the request but ignored: {%s}",
                names.data);
    pl_sbuf_fini(&names);
}

json_t *pl_openai_load_body(const char *body, size_t len, struct pl_openai_error *e)
{
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        fail(e, 400, NULL, "invalid JSON body: %s (line %d, column %d)", je.text, je.line,
             je.column);
        return NULL;
    }
    if (!json_is_object(root)) {
        fail(e, 400, NULL, "the request body must be a JSON object, got %s",
             pl_json_type_name(root));
        json_decref(root);
        return NULL;
    }
    return root;
}

static bool get_bool(const json_t *root, const char *key, bool dflt, bool *out,
                     struct pl_openai_error *e)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return true;
    }
    if (!json_is_boolean(v)) {
        fail(e, 400, key, "%s: expected a boolean, got %s", key, pl_json_type_name(v));
        return false;
    }
    *out = json_is_true(v);
    return true;
}

static pl_status check_model(const struct pl_openai *o, const json_t *root,
                             struct pl_openai_request *r, struct pl_openai_error *e)
{
    json_t *m = json_object_get(root, "model");
    const char *name = o->names[0];
    if (m && !json_is_null(m)) {
        if (!json_is_string(m))
            return fail(e, 400, "model", "model: expected a string, got %s", pl_json_type_name(m));
        name = json_string_value(m);
        bool known = false;
        for (int i = 0; i < o->n_names && !known; i++)
            known = !strcmp(o->names[i], name);
        if (!known) {
            fail(e, 404, "model", "The model `%s` does not exist.", name);
            e->type = "NotFoundError";
            return PL_STATUS_NOT_FOUND;
        }
    }
    r->model = strdup(name);
    return r->model ? PL_STATUS_OK : fail(e, 503, NULL, "out of memory");
}

pl_status pl_openai_check_model_field(const struct pl_openai *o, const json_t *root,
                                      char **model, struct pl_openai_error *e)
{
    struct pl_openai_request r;
    memset(&r, 0, sizeof(r));
    pl_status st = check_model(o, root, &r, e);
    *model = r.model;
    return st;
}

static struct pl_openai_prompt *add_prompt(struct pl_openai_request *r)
{
    struct pl_openai_prompt *p =
        realloc(r->prompts, sizeof(*p) * (size_t)(r->n_prompts + 1));
    if (!p)
        return NULL;
    r->prompts = p;
    p = &r->prompts[r->n_prompts++];
    memset(p, 0, sizeof(*p));
    return p;
}

static pl_status encode_text(const struct pl_openai *o, const char *text, size_t len,
                             bool add_special, struct pl_openai_prompt *p, const char *param,
                             struct pl_openai_error *e)
{
    if (!o->tok)
        return fail(e, 400, param, "%s: this model has no tokenizer; send token ids", param);
    struct pl_err err = {0};
    if (pl_tokenizer_encode(o->tok, text, len, add_special, &p->ids, &p->n_ids, &err) !=
        PL_STATUS_OK)
        return fail(e, 400, param, "%s: %s", param, err.msg);
    p->text = malloc(len + 1);
    if (!p->text)
        return fail(e, 503, NULL, "out of memory");
    memcpy(p->text, text, len);
    p->text[len] = '\0';
    return PL_STATUS_OK;
}

/* A list of token ids (field: "prompt", or "tokens" for /detokenize) into p->ids. */
static pl_status read_ids(const struct pl_openai *o, const json_t *arr, const char *field,
                          struct pl_openai_prompt *p, struct pl_openai_error *e)
{
    size_t n = json_array_size(arr);
    p->ids = malloc(sizeof(int32_t) * (n ? n : 1));
    if (!p->ids)
        return fail(e, 503, NULL, "out of memory");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v))
            return fail(e, 400, field, "%s: token ids must be integers, got %s", field,
                        pl_json_type_name(v));
        json_int_t id = json_integer_value(v);
        struct pl_vocab_check vc = {o->vocab_size, o->tok};
        struct pl_err err = {0};
        char what[32];
        snprintf(what, sizeof(what), "%s:", field);
        if (pl_vocab_check_id(&vc, id, what, &err) != PL_STATUS_OK)
            return fail(e, 400, field, "%s", err.msg);
        p->ids[i] = (int32_t)id;
    }
    p->n_ids = (int)n;
    return PL_STATUS_OK;
}

/* A prompt value (see pl_openai_parse_input); field names it in errors. */
static pl_status parse_input(const struct pl_openai *o, const json_t *pr, bool add_special,
                             const char *field, struct pl_openai_request *r,
                             struct pl_openai_error *e)
{
    if (!pr || json_is_null(pr))
        return fail(e, 400, field, "%s: field required", field);
    if (json_is_string(pr)) {
        struct pl_openai_prompt *p = add_prompt(r);
        if (!p)
            return fail(e, 503, NULL, "out of memory");
        return encode_text(o, json_string_value(pr), json_string_length(pr), add_special, p,
                           field, e);
    }
    if (!json_is_array(pr))
        return fail(e, 400, field,
                    "%s: expected a string, a list of strings, a list of token ids or a "
                    "list of token-id lists, got %s",
                    field, pl_json_type_name(pr));
    size_t n = json_array_size(pr);
    if (n == 0)
        return fail(e, 400, field, "%s: must not be empty", field);
    json_t *first = json_array_get(pr, 0);
    if (json_is_integer(first)) {
        struct pl_openai_prompt *p = add_prompt(r);
        if (!p)
            return fail(e, 503, NULL, "out of memory");
        return read_ids(o, pr, field, p, e);
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(pr, i);
        bool want_str = json_is_string(first);
        if (want_str ? !json_is_string(v) : !json_is_array(v))
            return fail(e, 400, field, "%s[%zu]: expected %s like %s[0], got %s", field, i,
                        want_str ? "a string" : "a list of token ids", field,
                        pl_json_type_name(v));
        struct pl_openai_prompt *p = add_prompt(r);
        if (!p)
            return fail(e, 503, NULL, "out of memory");
        pl_status st = want_str ? encode_text(o, json_string_value(v), json_string_length(v),
                                              add_special, p, field, e)
                                : read_ids(o, v, field, p, e);
        if (st != PL_STATUS_OK)
            return st;
        if (!want_str && p->n_ids == 0)
            return fail(e, 400, field, "%s[%zu]: must not be empty", field, i);
    }
    return PL_STATUS_OK;
}

pl_status pl_openai_parse_input(const struct pl_openai *o, const json_t *value, bool add_special,
                                const char *field, struct pl_openai_request *r,
                                struct pl_openai_error *e)
{
    return parse_input(o, value, add_special, field, r, e);
}

static pl_status parse_prompts(const struct pl_openai *o, const json_t *root,
                               struct pl_openai_request *r, struct pl_openai_error *e)
{
    bool add_special;
    if (!get_bool(root, "add_special_tokens", true, &add_special, e))
        return PL_STATUS_INVALID_ARGUMENT;
    return parse_input(o, json_object_get(root, "prompt"), add_special, "prompt", r, e);
}

/*
 * OpenAI's response_format (text, json_object, json_schema with its schema and
 * strict) onto the params' constraint, after vLLM's guided_* / structured_outputs
 * were read; a constraint from those is checked here too, so that a schema or
 * grammar the compiler refuses is a 400 naming the keyword. In the Responses layout
 * the field is text.format: json_schema's name, schema and strict sit beside its type,
 * and name and schema are required (as that API has them).
 */
static bool parse_response_format(const json_t *root, enum pl_openai_layout layout,
                                  struct pl_sampling_params *sp, struct pl_openai_error *e)
{
    struct pl_err err;
    bool is_flat = layout == PL_OPENAI_LAYOUT_RESPONSES;
    const char *field = is_flat ? "text.format" : "response_format";
    json_t *v = json_object_get(root, "response_format");
    if (v && !json_is_null(v)) {
        json_t *t = json_object_get(v, "type");
        if (!json_is_object(v) || !json_is_string(t))
            return fail(e, 400, field, "%s: expected {\"type\": ...}", field), false;
        const char *type = json_string_value(t);
        if (!strcmp(type, "text"))
            goto check;
        if (sp->constraint_kind != PL_CONSTRAINT_NONE)
            return fail(e, 400, field,
                        "%s: a structured output constraint is already given "
                        "(guided_* or structured_outputs)",
                        field),
                   false;
        pl_status st;
        if (!strcmp(type, "json_object")) {
            st = pl_sampling_params_set_constraint(sp, PL_CONSTRAINT_JSON_OBJECT, NULL,
                                                   sp->whitespace_pattern, &err);
        } else if (!strcmp(type, "json_schema")) {
            json_t *js = is_flat ? v : json_object_get(v, "json_schema");
            const char *js_field = is_flat ? "text.format" : "response_format.json_schema";
            if (!json_is_object(js))
                return fail(e, 400, field, "%s: type json_schema needs a json_schema object",
                            field),
                       false;
            json_t *strict = json_object_get(js, "strict");
            if (strict && !json_is_null(strict) && !json_is_boolean(strict))
                return fail(e, 400, field, "%s.strict: expected a boolean", js_field), false;
            json_t *schema = json_object_get(js, "schema");
            if (is_flat && !json_is_string(json_object_get(js, "name")))
                return fail(e, 400, field, "%s.name: expected a string", js_field), false;
            if (is_flat && !json_is_object(schema))
                return fail(e, 400, field, "%s.schema: expected a JSON Schema object", js_field),
                       false;
            if (!schema || json_is_null(schema))
                schema = json_object_get(js, "json_schema"); /* some clients nest it so */
            char *text = schema && !json_is_null(schema)
                             ? json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY)
                             : strdup("{}");
            if (!text)
                return fail(e, 503, NULL, "out of memory"), false;
            st = pl_sampling_params_set_constraint(sp, PL_CONSTRAINT_JSON, text,
                                                   sp->whitespace_pattern, &err);
            free(text);
        } else {
            return fail(e, 400, field,
                        "%s type '%s' is not supported (text, json_object, json_schema)", field,
                        type),
                   false;
        }
        if (st != PL_STATUS_OK)
            return fail(e, st == PL_STATUS_NO_MEMORY ? 503 : 400, field, "%s: %s", field,
                        err.msg),
                   false;
        return true;
    }
check:
    if (sp->constraint_kind != PL_CONSTRAINT_NONE &&
        pl_grammar_check(sp->constraint_kind, sp->constraint, sp->whitespace_pattern, &err) !=
            PL_STATUS_OK)
        return fail(e, 400, "structured_outputs", "%s", err.msg), false;
    return true;
}

static pl_status parse_chat_prompt(const struct pl_openai *o, const json_t *root,
                                   enum pl_openai_layout layout, struct pl_openai_request *r,
                                   struct pl_openai_error *e)
{
    bool add_gen, cont, add_special;
    if (!get_bool(root, "add_generation_prompt", true, &add_gen, e) ||
        !get_bool(root, "continue_final_message", false, &cont, e) ||
        !get_bool(root, "add_special_tokens", false, &add_special, e))
        return PL_STATUS_INVALID_ARGUMENT;
    if (cont && add_gen)
        return fail(e, 400, "continue_final_message",
                    "continue_final_message and add_generation_prompt cannot both be true");
    json_t *v;
    if ((v = json_object_get(root, "functions")) && !json_is_null(v))
        return fail(e, 400, "functions", "functions: deprecated and not supported; use tools");
    if ((v = json_object_get(root, "function_call")) && !json_is_null(v))
        return fail(e, 400, "function_call",
                    "function_call: deprecated and not supported; use tool_choice");
    if ((v = json_object_get(root, "echo")) && !json_is_null(v) && !json_is_false(v))
        return fail(e, 400, "echo", "echo: not supported for chat completions");
    if ((v = json_object_get(root, "documents")) && !json_is_null(v))
        return fail(e, 400, "documents", "documents: not supported");

    struct pl_tool_request tools;
    if (pl_tool_request_parse(root, layout, o->tool_parser, &r->sp, &tools, e) != PL_STATUS_OK)
        return PL_STATUS_INVALID_ARGUMENT;
    r->tool_parser = tools.parser;
    r->tool_max_calls = tools.max_calls;
    memcpy(r->tool_named, tools.named, sizeof(r->tool_named));

    pl_status st = PL_STATUS_INVALID_ARGUMENT;
    struct pl_chat_template *own = NULL;
    const struct pl_chat_template *t = o->tmpl;
    json_t *tv = json_object_get(root, "chat_template");
    char *rendered = NULL;
    if (tv && !json_is_null(tv)) {
        struct pl_err err = {0};
        if (!json_is_string(tv)) {
            fail(e, 400, "chat_template", "chat_template: expected a string");
            goto out;
        }
        if (pl_chat_template_parse(json_string_value(tv), json_string_length(tv), &own, &err) !=
            PL_STATUS_OK) {
            fail(e, 400, "chat_template", "chat_template: %s", err.msg);
            goto out;
        }
        t = own;
    }
    if (!t) {
        if (o->tmpl_error)
            fail(e, 400, "chat_template", "the model's chat template does not parse: %s",
                 o->tmpl_error);
        else
            fail(e, 400, "chat_template",
                 "this model has no chat template: pass chat_template or start the server "
                 "with --chat-template");
        goto out;
    }
    size_t len = 0;
    json_t *kw = json_object_get(root, "chat_template_kwargs");
    const char *param = NULL;
    struct pl_err err = {0};
    const struct pl_chat_apply apply = {
        .bos_token = o->tok ? pl_tokenizer_bos_token(o->tok) : NULL,
        .eos_token = o->tok ? pl_tokenizer_eos_token(o->tok) : NULL,
        .add_generation_prompt = add_gen,
        .continue_final_message = cont,
        .kwargs = json_is_null(kw) ? NULL : kw,
        .tools = tools.tools,
    };
    if (pl_apply_chat_template(t, json_object_get(root, "messages"), &apply, &rendered, &len,
                               &param, &err) != PL_STATUS_OK) {
        fail(e, err.status == PL_STATUS_NO_MEMORY ? 503 : 400, param, "%s", err.msg);
        goto out;
    }
    struct pl_openai_prompt *p = add_prompt(r);
    if (!p) {
        fail(e, 503, NULL, "out of memory");
        goto out;
    }
    st = encode_text(o, rendered, len, add_special, p, "messages", e);
out:
    free(rendered);
    pl_chat_template_free(own);
    pl_tool_request_fini(&tools);
    return st;
}

/* pl_openai_parse, with a chat request's fields in layout. */
static pl_status parse_request(const struct pl_openai *o, enum pl_openai_kind kind,
                               enum pl_openai_layout layout, const char *body, size_t len,
                               struct pl_openai_request *r, struct pl_openai_error *e)
{
    memset(r, 0, sizeof(*r));
    memset(e, 0, sizeof(*e));
    r->kind = kind;
    pl_sampling_params_default(&r->sp);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    pl_status st = PL_STATUS_INVALID_ARGUMENT;
    if (!root) {
        fail(e, 400, NULL, "invalid JSON body: %s (line %d, column %d)", je.text, je.line,
             je.column);
        goto out;
    }
    if (!json_is_object(root)) {
        fail(e, 400, NULL, "the request body must be a JSON object, got %s",
             pl_json_type_name(root));
        goto out;
    }
    /* fields neither the route nor the sampling parameters know: ignored, as vLLM */
    pl_openai_ignore_unknown(root, kind == PL_OPENAI_CHAT ? chat_keys : completion_keys, true);
    if ((st = check_model(o, root, r, e)) != PL_STATUS_OK)
        goto out;
    st = PL_STATUS_INVALID_ARGUMENT;

    /* sampling fields first: they name type errors */
    struct pl_err err = {0};
    if (pl_sampling_params_copy(&r->sp, &o->defaults, &err) != PL_STATUS_OK) {
        fail(e, 503, NULL, "out of memory");
        goto out;
    }
    json_t *lp = json_object_get(root, "logprobs");
    if (lp && !json_is_null(lp) &&
        (kind == PL_OPENAI_CHAT ? !json_is_boolean(lp) : !json_is_integer(lp))) {
        fail(e, 400, "logprobs", "logprobs: expected %s, got %s",
             kind == PL_OPENAI_CHAT ? "a boolean" : "an integer", pl_json_type_name(lp));
        goto out;
    }
    if (kind == PL_OPENAI_COMPLETION && json_object_get(root, "top_logprobs")) {
        fail(e, 400, "top_logprobs", "top_logprobs: unknown field for completions (use logprobs)");
        goto out;
    }
    if (kind == PL_OPENAI_COMPLETION && json_object_get(root, "max_completion_tokens")) {
        fail(e, 400, "max_completion_tokens",
             "max_completion_tokens: unknown field for completions (use max_tokens)");
        goto out;
    }
    /* chat's max_tokens default is "the rest of the context" (None), not 16 */
    bool max_given = false;
    const char *mk[] = {"max_tokens", "max_completion_tokens"};
    for (int i = 0; i < 2; i++) {
        json_t *mv = json_object_get(root, mk[i]);
        max_given |= mv && !json_is_null(mv);
    }
    if (kind == PL_OPENAI_CHAT && r->sp.max_tokens == 16)
        r->sp.max_tokens = -1;
    st = pl_sampling_params_from_json(root, kind == PL_OPENAI_CHAT ? chat_keys : completion_keys,
                                      &r->sp, &err);
    if (st != PL_STATUS_OK) {
        param_from_message(err.msg, e->param, sizeof(e->param));
        e->status = 400;
        snprintf(e->message, sizeof(e->message), "%s", err.msg);
        st = PL_STATUS_INVALID_ARGUMENT;
        goto out;
    }
    st = PL_STATUS_INVALID_ARGUMENT;
    if (r->sp.use_beam_search) {
        fail(e, 400, "use_beam_search", "use_beam_search: not supported by the server yet");
        goto out;
    }
    if (!parse_response_format(root, layout, &r->sp, e))
        goto out;
    if (!max_given && kind == PL_OPENAI_COMPLETION) {
        json_t *mv = json_object_get(root, "max_tokens");
        if (mv && json_is_null(mv))
            r->sp.max_tokens = -1; /* explicit null: the rest of the context, as vLLM */
    }
    struct pl_vocab_check vc = {o->vocab_size, o->tok};
    if (pl_sampling_params_validate(&r->sp, o->vocab_size, &err) != PL_STATUS_OK ||
        pl_vocab_check_params(&vc, &r->sp, &err) != PL_STATUS_OK) {
        param_from_message(err.msg, e->param, sizeof(e->param));
        e->status = 400;
        snprintf(e->message, sizeof(e->message), "%s", err.msg);
        goto out;
    }
    r->logprobs = r->sp.logprobs;
    r->skip_special_tokens = r->sp.skip_special_tokens;

    if (!get_bool(root, "stream", false, &r->stream, e))
        goto out;
    json_t *so = json_object_get(root, "stream_options");
    if (so && !json_is_null(so)) {
        if (!r->stream) {
            fail(e, 400, "stream_options",
                 "Stream options can only be defined when `stream=True`.");
            goto out;
        }
        if (!json_is_object(so)) {
            fail(e, 400, "stream_options", "stream_options: expected an object");
            goto out;
        }
        static const char *const so_keys[] = {"include_usage", "continuous_usage_stats", NULL};
        pl_openai_ignore_unknown(so, so_keys, false);
        if (!get_bool(so, "include_usage", false, &r->include_usage, e) ||
            !get_bool(so, "continuous_usage_stats", false, &r->continuous_usage, e))
            goto out;
    }
    json_t *v;
    if ((v = json_object_get(root, "user")) && !json_is_null(v) && !json_is_string(v)) {
        fail(e, 400, "user", "user: expected a string");
        goto out;
    }

    if (kind == PL_OPENAI_COMPLETION) {
        if ((v = json_object_get(root, "suffix")) && !json_is_null(v)) {
            fail(e, 400, "suffix", "suffix is not currently supported");
            goto out;
        }
        if (!get_bool(root, "echo", false, &r->echo, e))
            goto out;
        /* echo with logprobs reports the prompt's logprobs too (vLLM asks for them) */
        if (r->echo && r->logprobs >= 0 && r->sp.prompt_logprobs < r->logprobs)
            r->sp.prompt_logprobs = r->logprobs;
        if (parse_prompts(o, root, r, e) != PL_STATUS_OK)
            goto out;
    } else {
        if (parse_chat_prompt(o, root, layout, r, e) != PL_STATUS_OK)
            goto out;
    }

    /* lengths: every prompt must leave room for its output (vLLM's messages) */
    for (int i = 0; i < r->n_prompts; i++) {
        struct pl_openai_prompt *p = &r->prompts[i];
        const char *field = kind == PL_OPENAI_CHAT ? "messages" : "prompt";
        if (p->n_ids == 0) {
            fail(e, 400, field, "%s: the prompt is empty (no tokens)", field);
            goto out;
        }
        if (p->n_ids >= o->max_model_len) {
            fail(e, 400, field,
                 "This model's maximum context length is %d tokens. However, your request has "
                 "%d input tokens. Please reduce the length of the input.",
                 o->max_model_len, p->n_ids);
            goto out;
        }
        int room = o->max_model_len - p->n_ids;
        if (r->sp.max_tokens < 0) {
            p->max_tokens = room;
        } else if (r->sp.max_tokens > room) {
            fail(e, 400, kind == PL_OPENAI_CHAT && json_object_get(root, "max_completion_tokens")
                             ? "max_completion_tokens"
                             : "max_tokens",
                 "This model's maximum context length is %d tokens. However, you requested %d "
                 "tokens (%d in the %s, %d in the completion). Please reduce the length of the "
                 "%s or completion.",
                 o->max_model_len, p->n_ids + r->sp.max_tokens, p->n_ids,
                 kind == PL_OPENAI_CHAT ? "messages" : "prompt", r->sp.max_tokens,
                 kind == PL_OPENAI_CHAT ? "messages" : "prompt");
            goto out;
        } else {
            p->max_tokens = r->sp.max_tokens;
        }
    }
    st = PL_STATUS_OK;
out:
    json_decref(root);
    if (st != PL_STATUS_OK) {
        if (!e->status)
            fail(e, 400, NULL, "invalid request");
        pl_openai_request_fini(r);
    }
    return st;
}

pl_status pl_openai_parse(const struct pl_openai *o, enum pl_openai_kind kind, const char *body,
                          size_t len, struct pl_openai_request *r, struct pl_openai_error *e)
{
    return parse_request(o, kind, PL_OPENAI_LAYOUT_CHAT, body, len, r, e);
}

pl_status pl_openai_prepare_prompt(const struct pl_openai *o, enum pl_openai_kind kind,
                                   const json_t *root, struct pl_openai_prompt *out,
                                   struct pl_openai_error *e)
{
    struct pl_openai_request r;
    memset(&r, 0, sizeof(r));
    memset(e, 0, sizeof(*e));
    memset(out, 0, sizeof(*out));
    pl_sampling_params_default(&r.sp);
    r.kind = kind;
    pl_status st = kind == PL_OPENAI_CHAT
                       ? parse_chat_prompt(o, root, PL_OPENAI_LAYOUT_CHAT, &r, e)
                       : parse_prompts(o, root, &r, e);
    if (st == PL_STATUS_OK && r.n_prompts != 1)
        st = fail(e, 400, "prompt", "prompt: expected one prompt");
    if (st == PL_STATUS_OK) {
        *out = r.prompts[0]; /* moved */
        r.n_prompts = 0;
    }
    pl_openai_request_fini(&r);
    return st;
}

char *pl_openai_error_text(const struct pl_openai_error *e)
{
    char *full = pl_http_error_json(e->status ? e->status : 400, e->type,
                                    e->param[0] ? e->param : NULL, e->message, NULL);
    json_t *root = full ? json_loads(full, 0, NULL) : NULL;
    free(full);
    char *s = root ? json_dumps(json_object_get(root, "error"), JSON_COMPACT | JSON_PRESERVE_ORDER)
                   : NULL;
    json_decref(root);
    return s;
}

/* ---- SSE ----------------------------------------------------------------------- */

void pl_openai_sse_data(struct pl_sbuf *b, const char *payload, size_t len)
{
    /* one "data:" line per payload line, so a payload never breaks the framing */
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || payload[i] == '\n') {
            size_t end = i;
            if (end > start && payload[end - 1] == '\r')
                end--;
            pl_sbuf_puts(b, "data: ");
            pl_sbuf_append(b, payload + start, end - start);
            pl_sbuf_append(b, "\n", 1);
            start = i + 1;
        }
    }
    pl_sbuf_append(b, "\n", 1);
}

/* ---- generation: per-request state ------------------------------------------------- */

struct choice {
    bool started;            /* its first sample arrived (echo goes before it) */
    struct pl_sbuf text;     /* all text so far (deferred replies) */
    int n_tokens;
    size_t text_offset;      /* completions logprobs: characters before the next token */
    json_t *lp;              /* completions: {tokens, token_logprobs, top_logprobs,
                                text_offset}; chat: {content: [...]} (deferred replies) */
    enum pl_finish_reason finish;
    json_t *stop_reason;     /* string, integer or null */
    struct pl_reasoning rp;  /* chat with --reasoning-parser: the stream's splitter */
    struct pl_tool_parser *tp; /* chat with tool calls to split out: the stream's splitter */
};

struct sub {
    struct pl_async_request *r;
    int prompt_index;
    bool finished;
    struct pl_logprob_entry *prompt_lp; /* [n_prompt_lp] from the first delta, or NULL */
    int n_prompt_lp;
};

struct pl_openai_gen {
    struct pl_openai *o;
    struct pl_openai_request req;
    enum pl_openai_layout layout; /* how the body spelt its fields (call ids follow it) */
    struct sub *subs;        /* [n_subs]: one engine request per prompt */
    int n_subs;
    struct choice *choices;  /* [n_choices] = n_prompts * n */
    int n_choices;
    char id[48];
    long long created;
    long long prompt_tokens, completion_tokens;
    int fail_status;         /* 0, or the status of an engine refusal */
    char *fail_msg;
    bool started;            /* stream: role chunks sent */
    bool ended;              /* stream: [DONE] sent */
    /* another request kind (openai_ext.h): every gen function goes to ext */
    const struct pl_openai_gen_ops *ext;
    void *ext_state;
    /* per-request log lines (--enable-log-requests) */
    const char *route;       /* "/v1/chat/completions", ... */
    bool logged;             /* "Received" was logged: "Finished" follows in gen_free */
    double t_submit;
};

void pl_openai_gen_abort(struct pl_openai_gen *g)
{
    if (g && g->ext) {
        g->ext->abort(g->ext_state);
        return;
    }
    for (int i = 0; g && i < g->n_subs; i++)
        if (!g->subs[i].finished)
            pl_async_request_abort(g->subs[i].r);
}

static void log_finished(struct pl_openai_gen *g);

void pl_openai_gen_free(struct pl_openai_gen *g)
{
    if (!g)
        return;
    if (g->ext) {
        g->ext->free(g->ext_state);
        free(g);
        return;
    }
    if (g->logged)
        log_finished(g);
    pl_openai_gen_abort(g);
    for (int i = 0; i < g->n_subs; i++) {
        pl_async_request_release(g->subs[i].r);
        free(g->subs[i].prompt_lp);
    }
    free(g->subs);
    for (int i = 0; i < g->n_choices; i++) {
        pl_sbuf_fini(&g->choices[i].text);
        pl_tool_parser_free(g->choices[i].tp);
        json_decref(g->choices[i].lp);
        json_decref(g->choices[i].stop_reason);
    }
    free(g->choices);
    free(g->fail_msg);
    pl_openai_request_fini(&g->req);
    free(g);
}

static json_t *jreal(double v)
{
    /* JSON has no infinities: vLLM reports -9999.0 for a -inf logprob */
    if (!(v > -9999.0))
        v = -9999.0;
    return json_real(v);
}

/* The text of one token, for logprobs (special tokens included, as vLLM shows them). */
static json_t *token_str(const struct pl_openai *o, int32_t id, size_t *n_chars)
{
    char buf[32];
    json_t *j = NULL;
    if (o->tok) {
        char *text = NULL;
        size_t len = 0;
        if (pl_tokenizer_decode(o->tok, &id, 1, false, &text, &len, NULL) == PL_STATUS_OK)
            j = pl_http_json_string_lossy(text, len);
        free(text);
    }
    if (!j) {
        snprintf(buf, sizeof(buf), "token_id:%d", (int)id);
        j = json_string(buf);
    }
    if (n_chars) {
        /* Python's len(): code points */
        size_t n = 0;
        for (const unsigned char *c = (const unsigned char *)json_string_value(j); c && *c; c++)
            n += (*c & 0xC0) != 0x80;
        *n_chars = n;
    }
    return j;
}

static json_t *utf8_bytes(const json_t *s)
{
    json_t *a = json_array();
    const unsigned char *c = (const unsigned char *)json_string_value(s);
    for (size_t i = 0; c && i < json_string_length(s); i++)
        json_array_append_new(a, json_integer(c[i]));
    return a;
}

/* Appends one position's logprobs to lp (creating it): completions or chat format. */
static void add_logprob(struct pl_openai_gen *g, struct choice *c,
                        const struct pl_logprob_entry *e, json_t **lp)
{
    const struct pl_openai *o = g->o;
    int k = g->req.logprobs;
    if (g->req.kind == PL_OPENAI_COMPLETION) {
        if (!*lp) {
            *lp = json_object();
            json_object_set_new(*lp, "text_offset", json_array());
            json_object_set_new(*lp, "token_logprobs", json_array());
            json_object_set_new(*lp, "tokens", json_array());
            json_object_set_new(*lp, "top_logprobs", json_array());
        }
        size_t n_chars = 0;
        json_t *tok = token_str(o, e->token_id, &n_chars);
        if (e->n_top < 0) { /* the first prompt token has no logprob (None) */
            json_array_append_new(json_object_get(*lp, "text_offset"),
                                  json_integer((json_int_t)c->text_offset));
            json_array_append_new(json_object_get(*lp, "token_logprobs"), json_null());
            json_array_append_new(json_object_get(*lp, "tokens"), tok);
            json_array_append_new(json_object_get(*lp, "top_logprobs"), json_null());
            c->text_offset += n_chars;
            return;
        }
        json_t *top = json_object();
        for (int i = 0; i < e->n_top && i < k; i++) {
            json_t *t = token_str(o, e->top_ids[i], NULL);
            json_object_set_new(top, json_string_value(t), jreal(e->top_logprobs[i]));
            json_decref(t);
        }
        json_object_set_new(top, json_string_value(tok), jreal(e->logprob));
        json_array_append_new(json_object_get(*lp, "text_offset"),
                              json_integer((json_int_t)c->text_offset));
        json_array_append_new(json_object_get(*lp, "token_logprobs"), jreal(e->logprob));
        json_array_append_new(json_object_get(*lp, "tokens"), tok);
        json_array_append_new(json_object_get(*lp, "top_logprobs"), top);
        c->text_offset += n_chars;
    } else {
        if (!*lp) {
            *lp = json_object();
            json_object_set_new(*lp, "content", json_array());
        }
        json_t *tok = token_str(o, e->token_id, NULL);
        json_t *entry = json_object();
        json_object_set_new(entry, "token", tok);
        json_object_set_new(entry, "logprob", jreal(e->logprob));
        json_object_set_new(entry, "bytes", utf8_bytes(tok));
        json_t *top = json_array();
        for (int i = 0; i < e->n_top && i < k; i++) {
            json_t *t = token_str(o, e->top_ids[i], NULL);
            json_t *te = json_object();
            json_object_set_new(te, "token", t);
            json_object_set_new(te, "logprob", jreal(e->top_logprobs[i]));
            json_object_set_new(te, "bytes", utf8_bytes(t));
            json_array_append_new(top, te);
        }
        json_object_set_new(entry, "top_logprobs", top);
        json_array_append_new(json_object_get(*lp, "content"), entry);
    }
}

/* vLLM's prompt_logprobs: [null, {"<id>": {logprob, rank, decoded_token}}, ...]. */
static json_t *prompt_logprobs_json(const struct pl_openai_gen *g, const struct sub *sb)
{
    if (!sb->prompt_lp)
        return json_null();
    json_t *a = json_array();
    for (int i = 0; i < sb->n_prompt_lp; i++) {
        const struct pl_logprob_entry *e = &sb->prompt_lp[i];
        if (e->n_top < 0) {
            json_array_append_new(a, json_null());
            continue;
        }
        json_t *d = json_object();
        for (int k = -1; k < e->n_top; k++) {
            int32_t id = k < 0 ? e->token_id : e->top_ids[k];
            char key[16];
            snprintf(key, sizeof(key), "%d", (int)id);
            if (json_object_get(d, key))
                continue;
            json_t *v = json_object();
            json_object_set_new(v, "logprob", jreal(k < 0 ? e->logprob : e->top_logprobs[k]));
            json_object_set_new(v, "rank", json_integer(k < 0 ? e->rank : k + 1));
            json_object_set_new(v, "decoded_token", token_str(g->o, id, NULL));
            json_object_set_new(d, key, v);
        }
        json_array_append_new(a, d);
    }
    return a;
}

static json_t *usage_json(const struct pl_openai_gen *g)
{
    json_t *u = json_object();
    json_object_set_new(u, "prompt_tokens", json_integer(g->prompt_tokens));
    json_object_set_new(u, "total_tokens", json_integer(g->prompt_tokens + g->completion_tokens));
    json_object_set_new(u, "completion_tokens", json_integer(g->completion_tokens));
    return u;
}

static json_t *chunk_base(const struct pl_openai_gen *g)
{
    json_t *c = json_object();
    json_object_set_new(c, "id", json_string(g->id));
    json_object_set_new(c, "object", json_string(g->req.kind == PL_OPENAI_CHAT
                                                     ? "chat.completion.chunk"
                                                     : "text_completion"));
    json_object_set_new(c, "created", json_integer(g->created));
    json_object_set_new(c, "model", json_string(g->req.model));
    return c;
}

static void emit(struct pl_sbuf *out, json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s) {
        out->failed = true;
        return;
    }
    pl_openai_sse_data(out, s, strlen(s));
    free(s);
}

/* A choice's finish_reason: "tool_calls" when auto or required tool calling made calls and
 * the output stopped on its own (tool_call.h). NULL while unfinished. */
static const char *choice_finish(const struct pl_openai_gen *g, enum pl_finish_reason f,
                                 int n_calls)
{
    if (f == PL_FINISH_STOP && n_calls > 0 && g->req.tool_parser != PL_TOOL_PARSER_NAMED)
        return "tool_calls";
    return pl_finish_reason_str(f);
}

/* One stream chunk for one choice's news. */
static void emit_choice_chunk(struct pl_openai_gen *g, int index, const char *text, size_t text_len,
                              const struct pl_sbuf *reasoning, json_t *tool_calls, json_t *lp,
                              const char *finish, json_t *stop_reason, struct pl_sbuf *out)
{
    json_t *c = chunk_base(g);
    json_t *ch = json_object();
    json_object_set_new(ch, "index", json_integer(index));
    json_t *jt = pl_http_json_string_lossy(text ? text : "", text_len);
    if (g->req.kind == PL_OPENAI_CHAT) {
        json_t *delta = json_object();
        bool has_reasoning = reasoning && reasoning->len > 0;
        if (has_reasoning) /* vLLM's DeltaMessage.reasoning_content */
            json_object_set_new(delta, "reasoning_content",
                                pl_http_json_string_lossy(reasoning->data, reasoning->len));
        if (text_len > 0 || (!finish && !has_reasoning && !tool_calls))
            json_object_set_new(delta, "content", jt);
        else
            json_decref(jt);
        if (tool_calls)
            json_object_set_new(delta, "tool_calls", tool_calls);
        json_object_set_new(ch, "delta", delta);
        json_object_set_new(ch, "logprobs", lp ? lp : json_null());
    } else {
        json_object_set_new(ch, "text", jt);
        json_object_set_new(ch, "logprobs", lp ? lp : json_null());
    }
    json_object_set_new(ch, "finish_reason", finish ? json_string(finish) : json_null());
    json_object_set_new(ch, "stop_reason", stop_reason ? json_incref(stop_reason) : json_null());
    json_t *arr = json_array();
    json_array_append_new(arr, ch);
    json_object_set_new(c, "choices", arr);
    if (g->req.continuous_usage)
        json_object_set_new(c, "usage", usage_json(g));
    emit(out, c);
}

static json_t *stop_reason_json(const struct pl_completion_output *s)
{
    if (s->stop_str)
        return pl_http_json_string_lossy(s->stop_str, strlen(s->stop_str));
    if (s->stop_token_id >= 0 && s->finish_reason == PL_FINISH_STOP)
        return json_integer(s->stop_token_id);
    return json_null();
}

/* The prompt as echo shows it: its text, or its ids decoded. */
static void echo_text(const struct pl_openai_gen *g, const struct pl_openai_prompt *p,
                      struct pl_sbuf *b)
{
    if (p->text) {
        pl_sbuf_puts(b, p->text);
    } else if (g->o->tok) {
        char *pt = NULL;
        size_t len = 0;
        if (pl_tokenizer_decode(g->o->tok, p->ids, p->n_ids, g->req.skip_special_tokens, &pt,
                                &len, NULL) == PL_STATUS_OK)
            pl_sbuf_append(b, pt, len);
        free(pt);
    }
}

int pl_openai_status_of(pl_status st)
{
    switch (st) {
    case PL_STATUS_INVALID_ARGUMENT:
    case PL_STATUS_UNSUPPORTED:
        return 400;
    case PL_STATUS_ABORTED:
    case PL_STATUS_LIMIT:
    case PL_STATUS_NO_MEMORY:
        return 503;
    default:
        return 500; /* the engine failed (backend, internal): vLLM's InternalServerError */
    }
}

static void take_error(struct pl_openai_gen *g, const struct pl_request_output *o)
{
    if (g->fail_status)
        return;
    g->fail_status = pl_openai_status_of(o->error_status);
    g->fail_msg = strdup(o->error);
}

/* One sample's news into its choice; streams append a chunk to out. */
static void take_sample(struct pl_openai_gen *g, struct sub *sb, const struct pl_completion_output *s,
                        struct pl_sbuf *out)
{
    int n = g->req.sp.n > 0 ? g->req.sp.n : 1;
    if (s->index < 0 || s->index >= n)
        return;
    int ci = sb->prompt_index * n + s->index;
    struct choice *c = &g->choices[ci];
    bool first = !c->started;
    c->started = true;
    c->n_tokens += s->n_token_ids;
    g->completion_tokens += s->n_token_ids;
    json_t *lp_delta = NULL;
    json_t **lp = out ? &lp_delta : &c->lp;
    if (first && g->req.echo && g->req.logprobs >= 0 && sb->prompt_lp)
        for (int t = 0; t < sb->n_prompt_lp; t++)
            add_logprob(g, c, &sb->prompt_lp[t], lp);
    if (g->req.logprobs >= 0 && s->logprobs)
        for (int t = 0; t < s->n_token_ids; t++)
            add_logprob(g, c, &s->logprobs[t], lp);
    /* a failed sample gets no finish_reason: the request ends with an error
     * (the response object, or the stream's error event), never "abort" */
    enum pl_finish_reason finish = s->finish_reason == PL_FINISH_ERROR ? PL_FINISH_NONE
                                                                      : s->finish_reason;
    if (finish != PL_FINISH_NONE) {
        c->finish = finish;
        json_decref(c->stop_reason);
        c->stop_reason = stop_reason_json(s);
    }
    if (!out) {
        if (s->text_len)
            pl_sbuf_append(&c->text, s->text, s->text_len);
        return;
    }
    struct pl_sbuf text = {0}, reasoning = {0};
    if (first && g->req.echo)
        echo_text(g, &g->req.prompts[sb->prompt_index], &text);
    if (g->req.kind == PL_OPENAI_CHAT && g->o->reasoning != PL_REASONING_NONE) {
        /* the splitter holds back what may begin a tag; the last delta releases it */
        pl_reasoning_feed(&c->rp, s->text ? s->text : "", s->text_len, &reasoning, &text);
        if (s->finish_reason != PL_FINISH_NONE)
            pl_reasoning_finish(&c->rp, &reasoning, &text);
    } else {
        pl_sbuf_append(&text, s->text ? s->text : "", s->text_len);
    }
    json_t *calls = NULL;
    if (c->tp) {
        /* the content goes on through the tool-call splitter (it holds back what may be
         * a call until it knows) */
        struct pl_tool_out to = {0};
        pl_tool_parser_feed(c->tp, text.data ? text.data : "", text.len, &to);
        if (s->finish_reason != PL_FINISH_NONE)
            pl_tool_parser_finish(c->tp, &to);
        pl_sbuf_fini(&text);
        text = to.content;
        memset(&to.content, 0, sizeof(to.content));
        for (int k = 0; k < to.n_calls; k++) {
            char id[64] = "";
            if (to.calls[k].is_first)
                pl_tool_call_id(g->o, g->o->tool_format, g->layout, id, sizeof(id));
            if (!calls)
                calls = json_array();
            json_array_append_new(calls, pl_tool_call_delta_json(&to.calls[k], id));
        }
        pl_tool_out_fini(&to);
    }
    const char *fin = finish == PL_FINISH_NONE
                          ? NULL
                          : choice_finish(g, finish, pl_tool_parser_n_calls(c->tp));
    if (text.len > 0 || reasoning.len > 0 || fin || lp_delta || calls)
        emit_choice_chunk(g, ci, text.data, text.len, &reasoning, calls, lp_delta, fin,
                          c->stop_reason, out);
    else
        json_decref(lp_delta);
    pl_sbuf_fini(&text);
    pl_sbuf_fini(&reasoning);
}

/* One delta of one engine request into the choices (takes o). */
static void take_output(struct pl_openai_gen *g, struct sub *sb, struct pl_request_output *o,
                        struct pl_sbuf *out)
{
    if (o->error)
        take_error(g, o);
    if ((o->prompt_token_ids != NULL) && !o->error)
        g->prompt_tokens += o->n_prompt_token_ids;
    if (o->prompt_logprobs && !sb->prompt_lp) {
        sb->prompt_lp = o->prompt_logprobs;
        sb->n_prompt_lp = o->n_prompt_token_ids;
        o->prompt_logprobs = NULL;
    }
    for (int k = 0; k < o->n_outputs; k++)
        take_sample(g, sb, &o->outputs[k], out);
    if (o->finished)
        sb->finished = true;
    pl_request_output_free(o);
}

/* Drains every engine request's deltas into the choices; streams append chunks to out. */
static void drain(struct pl_openai_gen *g, struct pl_sbuf *out)
{
    for (int si = 0; si < g->n_subs; si++) {
        struct sub *sb = &g->subs[si];
        while (!sb->finished) {
            struct pl_request_output *o = pl_async_request_pop(sb->r);
            if (o) {
                take_output(g, sb, o, out);
                continue;
            }
            if (!pl_async_request_is_finished(sb->r))
                break;
            /* finished: its last deltas may have landed after the pop above; look again,
             * and if there is none (the engine ran out of memory) it ends here */
            o = pl_async_request_pop(sb->r);
            if (!o) {
                sb->finished = true;
                break;
            }
            take_output(g, sb, o, out);
        }
    }
}

static bool all_finished(const struct pl_openai_gen *g)
{
    for (int i = 0; i < g->n_subs; i++)
        if (!g->subs[i].finished)
            return false;
    return true;
}

bool pl_openai_gen_is_stream(const struct pl_openai_gen *g)
{
    return g->ext ? g->ext->is_stream(g->ext_state) : g->req.stream;
}

/* An engine refusal or failure as the error the routes answer. */
static void fail_error(const struct pl_openai_gen *g, struct pl_openai_error *e)
{
    memset(e, 0, sizeof(*e));
    e->status = g->fail_status;
    snprintf(e->message, sizeof(e->message), "%s", g->fail_msg ? g->fail_msg : "engine error");
}

bool pl_openai_gen_failed(const struct pl_openai_gen *g, struct pl_openai_error *e)
{
    if (g->ext)
        return g->ext->failed(g->ext_state, e);
    if (!g->fail_status)
        return false;
    fail_error(g, e);
    return true;
}

bool pl_openai_gen_produce(struct pl_openai_gen *g, struct pl_sbuf *out)
{
    if (g->ext)
        return g->ext->produce(g->ext_state, out);
    if (g->ended)
        return false;
    if (!g->started) {
        g->started = true;
        if (g->req.kind == PL_OPENAI_CHAT) {
            for (int i = 0; i < g->n_choices; i++) {
                json_t *c = chunk_base(g);
                json_t *ch = json_object();
                json_object_set_new(ch, "index", json_integer(i));
                json_t *delta = json_object();
                json_object_set_new(delta, "role", json_string(g->o->role));
                json_object_set_new(delta, "content", json_string(""));
                json_object_set_new(ch, "delta", delta);
                json_object_set_new(ch, "logprobs", json_null());
                json_object_set_new(ch, "finish_reason", json_null());
                json_t *arr = json_array();
                json_array_append_new(arr, ch);
                json_object_set_new(c, "choices", arr);
                emit(out, c);
            }
        }
    }
    drain(g, out);
    if (!all_finished(g))
        return true;
    if (g->fail_status) {
        struct pl_openai_error e;
        fail_error(g, &e);
        size_t len = 0;
        char *t = pl_http_error_json(e.status, NULL, NULL, e.message, &len);
        if (t)
            pl_openai_sse_data(out, t, len);
        free(t);
    } else if (g->req.include_usage) {
        json_t *c = chunk_base(g);
        json_object_set_new(c, "choices", json_array());
        json_object_set_new(c, "usage", usage_json(g));
        emit(out, c);
    }
    pl_sbuf_puts(out, "data: [DONE]\n\n");
    g->ended = true;
    return false;
}

bool pl_openai_gen_result(struct pl_openai_gen *g, json_t **resp, struct pl_openai_error *e)
{
    if (g->ext)
        return g->ext->result(g->ext_state, resp, e);
    *resp = NULL;
    drain(g, NULL);
    if (!all_finished(g))
        return false;
    if (g->fail_status) {
        fail_error(g, e);
        return true;
    }
    json_t *root = json_object();
    bool chat = g->req.kind == PL_OPENAI_CHAT;
    json_object_set_new(root, "id", json_string(g->id));
    json_object_set_new(root, "object", json_string(chat ? "chat.completion" : "text_completion"));
    json_object_set_new(root, "created", json_integer(g->created));
    json_object_set_new(root, "model", json_string(g->req.model));
    json_t *choices = json_array();
    int n = g->req.sp.n > 0 ? g->req.sp.n : 1;
    for (int i = 0; i < g->n_choices; i++) {
        struct choice *c = &g->choices[i];
        json_t *ch = json_object();
        json_object_set_new(ch, "index", json_integer(i));
        struct pl_sbuf text = {0};
        if (g->req.echo)
            echo_text(g, &g->req.prompts[i / n], &text);
        pl_sbuf_append(&text, c->text.data ? c->text.data : "", c->text.len);
        json_t *jt = pl_http_json_string_lossy(text.data ? text.data : "", text.len);
        pl_sbuf_fini(&text);
        int n_calls = 0;
        if (chat) {
            /* the same splitters as the stream, over the whole text */
            json_decref(jt);
            struct pl_sbuf rs = {0}, ct = {0};
            if (g->o->reasoning != PL_REASONING_NONE)
                pl_reasoning_split(g->o->reasoning, c->text.data ? c->text.data : "",
                                   c->text.len, &rs, &ct);
            else
                pl_sbuf_append(&ct, c->text.data ? c->text.data : "", c->text.len);
            json_t *calls = NULL;
            if (g->req.tool_parser != PL_TOOL_PARSER_NONE) {
                struct pl_tool_parser *tp = pl_tool_parser_new(
                    g->req.tool_parser, g->req.tool_named, g->req.tool_max_calls);
                struct pl_tool_out to = {0};
                pl_tool_parser_feed(tp, ct.data ? ct.data : "", ct.len, &to);
                pl_tool_parser_finish(tp, &to);
                n_calls = pl_tool_parser_n_calls(tp);
                pl_tool_parser_free(tp);
                pl_sbuf_fini(&ct);
                ct = to.content;
                memset(&to.content, 0, sizeof(to.content));
                for (int k = 0; k < to.n_calls; k++) {
                    char id[64];
                    pl_tool_call_id(g->o, g->o->tool_format, g->layout, id, sizeof(id));
                    if (!calls)
                        calls = json_array();
                    json_array_append_new(calls, pl_tool_call_json(id, to.calls[k].name,
                                                                   to.calls[k].args.data,
                                                                   to.calls[k].args.len));
                }
                pl_tool_out_fini(&to);
            }
            json_t *msg = json_object();
            json_object_set_new(msg, "role", json_string(g->o->role));
            /* vLLM: content None when the answer is all reasoning or all tool calls */
            json_object_set_new(msg, "content",
                                ct.len > 0 || (rs.len == 0 && !calls)
                                    ? pl_http_json_string_lossy(ct.data ? ct.data : "", ct.len)
                                    : json_null());
            if (g->o->reasoning != PL_REASONING_NONE)
                json_object_set_new(msg, "reasoning_content",
                                    rs.len > 0 ? pl_http_json_string_lossy(rs.data, rs.len)
                                               : json_null());
            if (calls)
                json_object_set_new(msg, "tool_calls", calls);
            json_object_set_new(ch, "message", msg);
            pl_sbuf_fini(&rs);
            pl_sbuf_fini(&ct);
        } else {
            json_object_set_new(ch, "text", jt);
        }
        json_object_set_new(ch, "logprobs", c->lp ? json_incref(c->lp) : json_null());
        const char *fin = choice_finish(g, c->finish, n_calls);
        json_object_set_new(ch, "finish_reason", fin ? json_string(fin) : json_null());
        json_object_set_new(ch, "stop_reason",
                            c->stop_reason ? json_incref(c->stop_reason) : json_null());
        if (!chat)
            json_object_set_new(ch, "prompt_logprobs",
                                g->req.sp.prompt_logprobs >= 0
                                    ? prompt_logprobs_json(g, &g->subs[i / n])
                                    : json_null());
        json_array_append_new(choices, ch);
    }
    json_object_set_new(root, "choices", choices);
    if (chat)
        json_object_set_new(root, "prompt_logprobs", g->req.sp.prompt_logprobs >= 0 && g->n_subs
                                                         ? prompt_logprobs_json(g, &g->subs[0])
                                                         : json_null());
    json_object_set_new(root, "usage", usage_json(g));
    *resp = root;
    return true;
}

static pl_status gen_new(struct pl_openai *o, enum pl_openai_kind kind,
                         enum pl_openai_layout layout, const char *body, size_t len,
                         struct pl_openai_gen **out, struct pl_openai_error *e)
{
    *out = NULL;
    struct pl_openai_gen *g = calloc(1, sizeof(*g));
    if (!g) {
        memset(e, 0, sizeof(*e));
        return fail(e, 503, NULL, "out of memory");
    }
    g->o = o;
    if (kind == PL_OPENAI_EMBEDDING || kind == PL_OPENAI_RESPONSES) {
        memset(e, 0, sizeof(*e));
        g->req.kind = kind;
        pl_status st = kind == PL_OPENAI_EMBEDDING
                           ? pl_openai_embedding_new(o, body, len, &g->ext_state, &g->ext, e)
                           : pl_openai_responses_new(o, body, len, &g->ext_state, &g->ext, e);
        if (st != PL_STATUS_OK) {
            free(g);
            return st;
        }
        *out = g;
        return PL_STATUS_OK;
    }
    g->route = kind == PL_OPENAI_CHAT ? "/v1/chat/completions" : "/v1/completions";
    g->layout = layout;
    pl_status st = parse_request(o, kind, layout, body, len, &g->req, e);
    if (st != PL_STATUS_OK) {
        free(g);
        return st;
    }
    int n = g->req.sp.n > 0 ? g->req.sp.n : 1;
    g->n_choices = g->req.n_prompts * n;
    g->choices = calloc((size_t)g->n_choices, sizeof(*g->choices));
    g->subs = calloc((size_t)g->req.n_prompts, sizeof(*g->subs));
    if (!g->choices || !g->subs) {
        pl_openai_gen_free(g);
        return fail(e, 503, NULL, "out of memory");
    }
    unsigned long long seq = atomic_fetch_add(&o->next_id, 1);
    snprintf(g->id, sizeof(g->id), "%s-%016llx%08llx", kind == PL_OPENAI_CHAT ? "chatcmpl" : "cmpl",
             o->id_salt, seq);
    g->created = (long long)time(NULL);
    for (int i = 0; i < g->n_choices; i++) {
        pl_reasoning_init(&g->choices[i].rp, kind == PL_OPENAI_CHAT ? o->reasoning
                                                                    : PL_REASONING_NONE);
        if (g->req.tool_parser != PL_TOOL_PARSER_NONE && g->req.stream &&
            !(g->choices[i].tp = pl_tool_parser_new(g->req.tool_parser, g->req.tool_named,
                                                     g->req.tool_max_calls))) {
            pl_openai_gen_free(g);
            return fail(e, 503, NULL, "out of memory");
        }
    }
    *out = g;
    return PL_STATUS_OK;
}

pl_status pl_openai_gen_new(struct pl_openai *o, enum pl_openai_kind kind, const char *body,
                            size_t len, struct pl_openai_gen **out, struct pl_openai_error *e)
{
    return gen_new(o, kind, PL_OPENAI_LAYOUT_CHAT, body, len, out, e);
}

pl_status pl_openai_gen_new_chat(struct pl_openai *o, enum pl_openai_layout layout,
                                 const char *body, size_t len, struct pl_openai_gen **out,
                                 struct pl_openai_error *e)
{
    return gen_new(o, PL_OPENAI_CHAT, layout, body, len, out, e);
}

void pl_openai_make_id(struct pl_openai *o, const char *prefix, char *buf, size_t cap)
{
    unsigned long long seq = atomic_fetch_add(&o->next_id, 1);
    snprintf(buf, cap, "%s-%016llx%08llx", prefix, o->id_salt, seq);
}

void pl_openai_gen_set_label(struct pl_openai_gen *g, const char *id, const char *route)
{
    if (g->ext)
        return;
    snprintf(g->id, sizeof(g->id), "%s", id);
    g->route = route;
}

int pl_openai_max_model_len(const struct pl_openai *o)
{
    return o->max_model_len;
}

struct pl_async_engine *pl_openai_engine(const struct pl_openai *o)
{
    return o->ae;
}

struct pl_pooling_params pl_openai_pooling(const struct pl_openai *o)
{
    return o->pooling;
}

bool pl_openai_log_requests(const struct pl_openai *o, int *max_log_len)
{
    if (max_log_len)
        *max_log_len = o->max_log_len;
    return o->log_requests;
}

char *pl_openai_params_text(const struct pl_sampling_params *sp)
{
    json_t *j = json_object();
    json_object_set_new(j, "n", json_integer(sp->n));
    json_object_set_new(j, "temperature", json_real(sp->temperature));
    json_object_set_new(j, "top_p", json_real(sp->top_p));
    json_object_set_new(j, "top_k", json_integer(sp->top_k));
    json_object_set_new(j, "min_p", json_real(sp->min_p));
    json_object_set_new(j, "presence_penalty", json_real(sp->presence_penalty));
    json_object_set_new(j, "frequency_penalty", json_real(sp->frequency_penalty));
    json_object_set_new(j, "repetition_penalty", json_real(sp->repetition_penalty));
    json_object_set_new(j, "seed", sp->has_seed ? json_integer((json_int_t)sp->seed) : json_null());
    json_object_set_new(j, "max_tokens", sp->max_tokens >= 0 ? json_integer(sp->max_tokens)
                                                             : json_null());
    json_object_set_new(j, "min_tokens", json_integer(sp->min_tokens));
    json_object_set_new(j, "n_stop", json_integer(sp->n_stop));
    json_object_set_new(j, "ignore_eos", json_boolean(sp->ignore_eos));
    json_object_set_new(j, "logprobs", sp->logprobs >= 0 ? json_integer(sp->logprobs)
                                                         : json_null());
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    json_decref(j);
    return s;
}

/* The "Received request" line (stop strings and the prompt text stay out unless asked). */
static void log_received(struct pl_openai_gen *g)
{
    long long n_tokens = 0;
    for (int i = 0; i < g->req.n_prompts; i++)
        n_tokens += g->req.prompts[i].n_ids;
    char *params = pl_openai_params_text(&g->req.sp);
    const struct pl_openai_prompt *p0 = g->req.n_prompts ? &g->req.prompts[0] : NULL;
    pl_serving_log_received(g->id, g->route, g->req.n_prompts, n_tokens, params,
                            p0 ? p0->text : NULL, p0 && p0->text ? strlen(p0->text) : 0,
                            g->o->max_log_len);
    free(params);
    g->logged = true;
    g->t_submit = pl_async_now();
}

static void log_finished(struct pl_openai_gen *g)
{
    bool done = true, aborted = false;
    for (int i = 0; i < g->n_subs; i++)
        done &= g->subs[i].finished;
    for (int i = 0; i < g->n_choices; i++)
        aborted |= g->choices[i].finish == PL_FINISH_ABORT;
    const char *outcome = g->fail_status ? "failed"
                          : !done || aborted ? "aborted"
                                             : "completed";
    pl_serving_log_finished(g->id, outcome, g->prompt_tokens, g->completion_tokens,
                            pl_async_now() - g->t_submit);
}

pl_status pl_openai_gen_submit(struct pl_openai_gen *g, pl_async_notify_fn notify, void *user,
                               struct pl_openai_error *e)
{
    if (g->ext)
        return g->ext->submit(g->ext_state, notify, user, e);
    int n = g->req.n_prompts;
    struct pl_async_submission *subs = calloc((size_t)(n > 0 ? n : 1), sizeof(*subs));
    struct pl_sampling_params *sps = calloc((size_t)(n > 0 ? n : 1), sizeof(*sps));
    struct pl_async_request **reqs = calloc((size_t)(n > 0 ? n : 1), sizeof(*reqs));
    struct pl_err err = {0};
    pl_status st = PL_STATUS_OK;
    if (!subs || !sps || !reqs)
        st = pl_err_set(&err, PL_STATUS_NO_MEMORY, "out of memory");
    for (int i = 0; st == PL_STATUS_OK && i < n; i++) {
        const struct pl_openai_prompt *p = &g->req.prompts[i];
        sps[i] = g->req.sp;
        sps[i].owned = NULL;
        sps[i].max_tokens = p->max_tokens;
        subs[i] = (struct pl_async_submission){.prompt_ids = p->ids, .n_prompt = p->n_ids,
                                               .params = &sps[i]};
    }
    /* every prompt is admitted at once or none is: more prompts than the server
     * admits is refused here, before anything runs (pl_async_engine_submit_all) */
    if (st == PL_STATUS_OK)
        st = g->o->ae ? pl_async_engine_submit_all(g->o->ae, subs, n, notify, user, reqs, &err)
                      : pl_err_set(&err, PL_STATUS_ABORTED, "no engine");
    if (st == PL_STATUS_OK) {
        for (int i = 0; i < n; i++) {
            g->subs[i].r = reqs[i];
            g->subs[i].prompt_index = i;
        }
        g->n_subs = n;
    }
    free(subs);
    free(sps);
    free(reqs);
    if (st != PL_STATUS_OK) {
        memset(e, 0, sizeof(*e));
        return fail(e, st == PL_STATUS_INVALID_ARGUMENT ? 400 : 503,
                    st == PL_STATUS_INVALID_ARGUMENT ? "prompt" : NULL, "%s", err.msg);
    }
    if (g->o->log_requests)
        log_received(g);
    return PL_STATUS_OK;
}

/* ---- the HTTP routes' adapter ------------------------------------------------------ */

static bool http_produce(void *user, struct pl_sbuf *out)
{
    return pl_openai_gen_produce(user, out);
}

static void set_parse_error(struct pl_http_response *resp, const struct pl_openai_error *e)
{
    pl_http_set_error(resp, e->status ? e->status : 400, e->type, e->param[0] ? e->param : NULL,
                      e->message);
}

static bool http_result(void *user, struct pl_http_response *resp)
{
    json_t *root;
    struct pl_openai_error e;
    if (!pl_openai_gen_result(user, &root, &e))
        return false;
    if (!root) {
        set_parse_error(resp, &e);
        return true;
    }
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    pl_http_set_json(resp, 200, s, s ? strlen(s) : 0);
    return true;
}

static void http_closed(void *user, bool completed_ok)
{
    pl_openai_gen_free(user); /* aborts what is unfinished: the client left, free its KV blocks */
}

static const struct pl_http_async_ops gen_stream_ops = {NULL, http_produce, http_closed};
static const struct pl_http_async_ops gen_deferred_ops = {http_result, NULL, http_closed};

static void on_engine_news(void *user)
{
    pl_http_async_wake(user);
}

static void handle_generate(struct pl_openai *o, enum pl_openai_kind kind,
                            const struct pl_http_request *hreq, struct pl_http_response *resp)
{
    struct pl_openai_error e;
    struct pl_openai_gen *g;
    if (pl_openai_gen_new(o, kind, hreq->body, hreq->body_len, &g, &e) != PL_STATUS_OK) {
        set_parse_error(resp, &e);
        return;
    }
    bool stream = pl_openai_gen_is_stream(g);
    struct pl_http_async *a = pl_http_async_new(stream ? &gen_stream_ops : &gen_deferred_ops, g,
                                                stream, "text/event-stream");
    if (!a) {
        pl_openai_gen_free(g);
        pl_http_set_error(resp, 503, NULL, NULL, "out of memory");
        return;
    }
    if (pl_openai_gen_submit(g, on_engine_news, a, &e) != PL_STATUS_OK) {
        pl_openai_gen_free(g); /* nothing submitted: no wake-up after this */
        pl_http_async_discard(a);
        set_parse_error(resp, &e);
        return;
    }
    resp->async = a;
}

static void h_completions(void *user, const struct pl_http_request *req,
                          struct pl_http_response *resp)
{
    handle_generate(user, PL_OPENAI_COMPLETION, req, resp);
}

static void h_chat(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    handle_generate(user, PL_OPENAI_CHAT, req, resp);
}

static void h_embeddings(void *user, const struct pl_http_request *req,
                         struct pl_http_response *resp)
{
    handle_generate(user, PL_OPENAI_EMBEDDING, req, resp);
}

static void h_responses(void *user, const struct pl_http_request *req,
                        struct pl_http_response *resp)
{
    handle_generate(user, PL_OPENAI_RESPONSES, req, resp);
}

static void reply_json(struct pl_http_response *resp, int status, json_t *root)
{
    char *s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    pl_http_set_json(resp, status, s, s ? strlen(s) : 0);
}

static json_t *model_object(const struct pl_openai *o, int i)
{
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(o->names[i]));
    json_object_set_new(m, "object", json_string("model"));
    json_object_set_new(m, "created", json_integer((json_int_t)o->created));
    json_object_set_new(m, "owned_by", json_string("pagellm"));
    json_object_set_new(m, "root", pl_http_json_string_lossy(o->model_root,
                                                             strlen(o->model_root)));
    json_object_set_new(m, "parent", json_null());
    json_object_set_new(m, "max_model_len", json_integer(o->max_model_len));
    return m;
}

json_t *pl_openai_models_json(const struct pl_openai *o)
{
    json_t *data = json_array();
    for (int i = 0; i < o->n_names; i++)
        json_array_append_new(data, model_object(o, i));
    json_t *root = json_object();
    json_object_set_new(root, "object", json_string("list"));
    json_object_set_new(root, "data", data);
    return root;
}

json_t *pl_openai_model_json(const struct pl_openai *o, const char *id, struct pl_openai_error *e)
{
    for (int i = 0; i < o->n_names; i++)
        if (!strcmp(o->names[i], id))
            return model_object(o, i);
    memset(e, 0, sizeof(*e));
    fail(e, 404, "model", "The model `%.200s` does not exist.", id);
    e->type = "NotFoundError";
    return NULL;
}

static void h_models(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    reply_json(resp, 200, pl_openai_models_json(user));
}

/* GET /v1/models/{id}: the id is the rest of the (decoded) path; names may hold slashes. */
static void h_model(void *user, const struct pl_http_request *req, struct pl_http_response *resp)
{
    const char *id = req->path + strlen("/v1/models/");
    struct pl_openai_error e;
    json_t *m = pl_openai_model_json(user, id, &e);
    if (!m) {
        set_parse_error(resp, &e);
        return;
    }
    reply_json(resp, 200, m);
}

static json_t *load_object(const struct pl_http_request *req, struct pl_http_response *resp)
{
    json_error_t je;
    json_t *root = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!root || !json_is_object(root)) {
        char msg[256];
        snprintf(msg, sizeof(msg), "the request body must be a JSON object%s%s",
                 root ? "" : ": ", root ? "" : je.text);
        pl_http_set_error(resp, 400, NULL, NULL, msg);
        json_decref(root);
        return NULL;
    }
    return root;
}

static void h_tokenize(void *user, const struct pl_http_request *req,
                       struct pl_http_response *resp)
{
    struct pl_openai *o = user;
    json_t *root = load_object(req, resp);
    if (!root)
        return;
    static const char *const keys[] = {"model", "prompt", "messages", "add_special_tokens",
                                       "add_generation_prompt", "continue_final_message",
                                       "chat_template", "chat_template_kwargs",
                                       "return_token_strs", "tools", NULL};
    struct pl_openai_request r;
    struct pl_openai_error e;
    memset(&r, 0, sizeof(r));
    memset(&e, 0, sizeof(e));
    pl_sampling_params_default(&r.sp);
    bool strs = false;
    pl_openai_ignore_unknown(root, keys, false);
    /* tools only shape the prompt here (vLLM's TokenizeChatRequest): no tool_choice rules */
    json_object_set_new(root, "tool_choice", json_string("none"));
    if (!get_bool(root, "return_token_strs", false, &strs, &e) ||
        check_model(o, root, &r, &e) != PL_STATUS_OK) {
        set_parse_error(resp, &e);
        goto out;
    }
    pl_status st;
    if (json_object_get(root, "messages")) {
        st = parse_chat_prompt(o, root, PL_OPENAI_LAYOUT_CHAT, &r, &e);
    } else {
        json_t *pr = json_object_get(root, "prompt");
        if (!json_is_string(pr)) {
            pl_http_set_error(resp, 400, NULL, "prompt", "prompt: expected a string");
            goto out;
        }
        st = parse_prompts(o, root, &r, &e);
    }
    if (st != PL_STATUS_OK) {
        set_parse_error(resp, &e);
        goto out;
    }
    json_t *ids = json_array();
    json_t *ts = strs ? json_array() : json_null();
    for (int i = 0; i < r.prompts[0].n_ids; i++) {
        json_array_append_new(ids, json_integer(r.prompts[0].ids[i]));
        if (strs) {
            const char *t = pl_tokenizer_id_to_token(o->tok, r.prompts[0].ids[i]);
            json_array_append_new(ts, t ? pl_http_json_string_lossy(t, strlen(t)) : json_null());
        }
    }
    json_t *out = json_object();
    json_object_set_new(out, "count", json_integer(r.prompts[0].n_ids));
    json_object_set_new(out, "max_model_len", json_integer(o->max_model_len));
    json_object_set_new(out, "tokens", ids);
    json_object_set_new(out, "token_strs", ts);
    reply_json(resp, 200, out);
out:
    pl_openai_request_fini(&r);
    json_decref(root);
}

static void h_detokenize(void *user, const struct pl_http_request *req,
                         struct pl_http_response *resp)
{
    struct pl_openai *o = user;
    json_t *root = load_object(req, resp);
    if (!root)
        return;
    static const char *const keys[] = {"model", "tokens", NULL};
    struct pl_openai_request r;
    struct pl_openai_error e;
    memset(&r, 0, sizeof(r));
    memset(&e, 0, sizeof(e));
    pl_sampling_params_default(&r.sp);
    struct pl_openai_prompt p = {0};
    pl_openai_ignore_unknown(root, keys, false);
    if (check_model(o, root, &r, &e) != PL_STATUS_OK) {
        set_parse_error(resp, &e);
        goto out;
    }
    json_t *toks = json_object_get(root, "tokens");
    if (!json_is_array(toks)) {
        pl_http_set_error(resp, 400, NULL, "tokens", "tokens: expected a list of token ids");
        goto out;
    }
    if (read_ids(o, toks, "tokens", &p, &e) != PL_STATUS_OK) {
        set_parse_error(resp, &e);
        goto out;
    }
    if (!o->tok) {
        pl_http_set_error(resp, 400, NULL, NULL, "this model has no tokenizer");
        goto out;
    }
    char *text = NULL;
    size_t len = 0;
    struct pl_err err = {0};
    if (pl_tokenizer_decode(o->tok, p.ids, p.n_ids, false, &text, &len, &err) != PL_STATUS_OK) {
        pl_http_set_error(resp, 400, NULL, "tokens", err.msg);
        goto out;
    }
    json_t *out = json_object();
    json_object_set_new(out, "prompt", pl_http_json_string_lossy(text, len));
    free(text);
    reply_json(resp, 200, out);
out:
    free(p.ids);
    pl_openai_request_fini(&r);
    json_decref(root);
}

static void h_version(void *user, const struct pl_http_request *req,
                      struct pl_http_response *resp)
{
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string(PAGELLM_VERSION));
    reply_json(resp, 200, root);
}

static void h_health(void *user, const struct pl_http_request *req,
                     struct pl_http_response *resp)
{
    struct pl_openai *o = user;
    double age = 0;
    if (o->ae && !pl_async_engine_is_healthy(o->ae, &age)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "the engine loop is not making progress (last step %.1f s ago "
                                   "with requests pending)",
                 age);
        pl_http_set_error(resp, 503, NULL, NULL, msg);
        return;
    }
    resp->status = 200; /* an empty body, as vLLM answers */
    resp->content_type = NULL;
    resp->body = NULL;
    resp->body_len = 0;
}

static void h_metrics(void *user, const struct pl_http_request *req,
                      struct pl_http_response *resp)
{
    struct pl_openai *o = user;
    struct pl_llm_stats st;
    memset(&st, 0, sizeof(st));
    if (o->ae)
        pl_async_engine_stats(o->ae, &st);
    char *text = NULL;
    size_t len = 0;
    struct pl_err err = {0};
    if (!o->metrics || pl_metrics_render(o->metrics, &st, &text, &len, &err) != PL_STATUS_OK) {
        pl_http_set_error(resp, 503, NULL, NULL, "metrics unavailable");
        return;
    }
    resp->status = 200;
    resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
    resp->body = text;
    resp->body_len = len;
}

pl_status pl_openai_register(struct pl_openai *o, struct pl_http_server *s, struct pl_err *err)
{
    struct {
        const char *method, *path;
        bool auth;
        pl_http_handler_fn fn;
    } routes[] = {
        {"POST", "/v1/completions", true, h_completions},
        {"POST", "/v1/chat/completions", true, h_chat},
        {"GET", "/v1/models", true, h_models},
        {"GET", "/v1/models/*", true, h_model},
        {"POST", "/v1/embeddings", true, h_embeddings},
        {"POST", "/v1/responses", true, h_responses},
        {"POST", "/tokenize", true, h_tokenize},
        {"POST", "/detokenize", true, h_detokenize},
        {"GET", "/version", false, h_version},
        {"GET", "/health", false, h_health},
        {"GET", "/metrics", false, h_metrics},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        pl_status st = pl_http_server_route(s, routes[i].method, routes[i].path, routes[i].auth,
                                            routes[i].fn, o, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    return PL_STATUS_OK;
}
