/*
 * responses.c -- /v1/responses, the OpenAI Responses API (text, structured output,
 * function tools).
 *
 * Owns: the responses request kind behind the generation interface
 * (openai_ext.h). A request becomes one chat request of the server's own, in the
 * Responses layout (PL_OPENAI_LAYOUT_RESPONSES): input -> messages (function_call
 * items -> an assistant message's tool_calls, function_call_output items -> role
 * "tool" messages with their tool_call_id), instructions -> a system message first,
 * max_output_tokens -> max_tokens, text.format -> response_format, tools,
 * tool_choice and parallel_tool_calls as sent; temperature, top_p and vLLM's
 * sampling extras passed on. So chat templates, validation, structured-output
 * grammars, the tool rules and parsers (tool_call.h), the reasoning parser and the
 * engine path are the chat route's, and their errors name the Responses fields.
 * Its answers are turned into the Responses shapes:
 *   full: the response object (output: a "reasoning" item when the reasoning
 *   parser found some, the "message" item with one output_text part when there
 *   is content or no call, then one "function_call" item per call {id fc_...,
 *   call_id (the chat call's id: call_..., or the mistral parser's nine
 *   characters), name, arguments}; status "completed",
 *   or "incomplete" with reason max_output_tokens);
 *   stream: the chat chunks (read back from the chat request's SSE text) as
 *   the Responses event sequence -- response.created, response.in_progress,
 *   then per item as it opens response.output_item.added (a message or reasoning
 *   item also response.content_part.added), its deltas
 *   (response.output_text.delta, response.reasoning_text.delta,
 *   response.function_call_arguments.delta), and at the end for every item in
 *   output order its done events (response.output_text.done or
 *   response.reasoning_text.done and response.content_part.done, or
 *   response.function_call_arguments.done; then response.output_item.done),
 *   then response.completed (or response.incomplete; an engine failure: error
 *   then response.failed) -- each as "event: <type>" plus "data: <json>" with
 *   a sequence_number. Items are numbered in the order they open.
 * Nothing is stored: previous_response_id, conversation and background are
 * refused, store is accepted and reported false; a function_call_output must
 * answer a function_call earlier in the same input; reasoning items in the
 * input are skipped.
 */
#include "server/openai_ext.h"

#include "util/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One function call of the answer. */
struct fcall {
    char id[64];          /* the output item's: fc_<hex> */
    char call_id[64];     /* the chat call's id (tool_call.h): call_<hex> */
    char name[256];
    struct pl_sbuf args;  /* the arguments text so far */
    int index;            /* its output index */
};

struct resp {
    struct pl_openai *o;
    struct pl_openai_gen *chat; /* the chat request doing the work */
    char id[64], msg_id[64], rs_id[64];
    long long created;
    char *model;
    json_t *echo;               /* request fields the response object reports */
    bool stream;
    /* stream state */
    long long seq;              /* the next sequence_number */
    bool started, ended, chat_done;
    int msg_index, rs_index;    /* output indexes, -1: not opened */
    int n_items;
    struct pl_sbuf pending;     /* chat SSE bytes not yet read */
    struct pl_sbuf text, reasoning;
    struct fcall *calls;        /* [n_calls] in the answer's order */
    int n_calls;
    char finish[16];            /* the chat finish_reason */
    json_t *usage;              /* the chat usage */
    bool failed;
    struct pl_openai_error err;
};

/* The fields a Responses body may have (anything else is ignored with a warning). */
static const char *const resp_keys[] = {
    "model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream",
    "store", "metadata", "user", "previous_response_id", "tools", "tool_choice",
    "parallel_tool_calls", "reasoning", "text", "truncation", "include", "background",
    "service_tier", "top_logprobs", "prompt", "conversation", "safety_identifier",
    "prompt_cache_key", "stream_options", "max_tool_calls",
    /* vLLM's sampling extras, passed to the chat request */
    "top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "seed",
    "stop", "ignore_eos", "min_tokens", "skip_special_tokens", "request_id", "priority",
    "chat_template_kwargs", NULL};

/* The fields the chat request gets as they are (the tool fields in the Responses layout,
 * which the chat parser reads as such: openai_ext.h). */
static const char *const passed_keys[] = {
    "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "presence_penalty",
    "frequency_penalty", "seed", "stop", "ignore_eos", "min_tokens", "skip_special_tokens",
    "request_id", "priority", "chat_template_kwargs", "model", "tools", "tool_choice",
    "parallel_tool_calls", NULL};

/* One input content value (a string or a list of text parts; input[i].<field>) as text. */
static pl_status content_text(const json_t *c, size_t i, const char *field, struct pl_sbuf *b,
                              struct pl_openai_error *e)
{
    if (json_is_string(c)) {
        pl_sbuf_append(b, json_string_value(c), json_string_length(c));
        return PL_STATUS_OK;
    }
    if (!json_is_array(c))
        return pl_openai_fail(e, 400, "input",
                              "input[%zu].%s: expected a string or a list of content parts", i,
                              field);
    size_t k;
    json_t *part;
    json_array_foreach(c, k, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        json_t *text = json_object_get(part, "text");
        if (!type || !json_is_string(text) ||
            (strcmp(type, "input_text") && strcmp(type, "output_text") && strcmp(type, "text")))
            return pl_openai_fail(e, 400, "input",
                                  "input[%zu].%s[%zu]: content parts of type '%s' are not "
                                  "supported (text only)",
                                  i, field, k, type ? type : "?");
        if (b->len)
            pl_sbuf_append(b, "\n", 1);
        pl_sbuf_append(b, json_string_value(text), json_string_length(text));
    }
    return PL_STATUS_OK;
}

/* input[i]'s string field key, or NULL with e set. */
static const char *item_string(const json_t *item, size_t i, const char *key,
                               struct pl_openai_error *e)
{
    const json_t *v = json_object_get(item, key);
    if (!json_is_string(v)) {
        pl_openai_fail(e, 400, "input", "input[%zu].%s: %s", i, key,
                       v && !json_is_null(v) ? "expected a string" : "field required");
        return NULL;
    }
    return json_string_value(v);
}

/*
 * A function_call item (an earlier call of the model) into msgs: a call of the assistant
 * message that ends msgs (the text it came with, or the calls before it), else of a new
 * one. calls (call_id -> true) records it for the outputs that answer it.
 */
static pl_status input_call(json_t *msgs, const json_t *item, size_t i, json_t *calls,
                            struct pl_openai_error *e)
{
    const char *call_id = item_string(item, i, "call_id", e);
    const char *name = call_id ? item_string(item, i, "name", e) : NULL;
    const char *args = name ? item_string(item, i, "arguments", e) : NULL;
    if (!args)
        return PL_STATUS_INVALID_ARGUMENT;
    if (*args) {
        /* the template gets the arguments as a value (chat_template.h): say here which item
         * is at fault rather than which chat message */
        json_error_t je;
        json_t *v = json_loads(args, JSON_DECODE_ANY, &je);
        if (!v)
            return pl_openai_fail(e, 400, "input", "input[%zu].arguments: not valid JSON: %s", i,
                                  je.text);
        json_decref(v);
    }
    json_t *call = json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", call_id, "type", "function",
                             "function", "name", name, "arguments", args);
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *role = json_string_value(json_object_get(last, "role"));
    if (!last || !role || strcmp(role, "assistant")) {
        last = json_pack("{s:s, s:n}", "role", "assistant", "content");
        json_array_append_new(msgs, last);
    }
    json_t *list = json_object_get(last, "tool_calls");
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(last, "tool_calls", list);
    }
    json_array_append_new(list, call);
    json_object_set_new(calls, call_id, json_true());
    return PL_STATUS_OK;
}

/* A function_call_output item (a tool's result) into msgs: a "tool" message answering a
 * call of calls. */
static pl_status input_call_output(json_t *msgs, const json_t *item, size_t i,
                                   const json_t *calls, struct pl_openai_error *e)
{
    const char *call_id = item_string(item, i, "call_id", e);
    if (!call_id)
        return PL_STATUS_INVALID_ARGUMENT;
    if (!json_object_get(calls, call_id))
        return pl_openai_fail(e, 400, "input",
                              "input[%zu].call_id: no function_call item before it has call_id "
                              "'%.200s' (responses are not stored: send the call too)",
                              i, call_id);
    const json_t *output = json_object_get(item, "output");
    if (!output || json_is_null(output))
        return pl_openai_fail(e, 400, "input", "input[%zu].output: field required", i);
    struct pl_sbuf b = {0};
    if (content_text(output, i, "output", &b, e) != PL_STATUS_OK) {
        pl_sbuf_fini(&b);
        return PL_STATUS_INVALID_ARGUMENT;
    }
    json_t *m = json_pack("{s:s, s:s, s:s%}", "role", "tool", "tool_call_id", call_id, "content",
                          b.data ? b.data : "", b.len);
    pl_sbuf_fini(&b);
    json_array_append_new(msgs, m);
    return PL_STATUS_OK;
}

/* input (+ instructions) -> chat messages. */
static json_t *messages(const json_t *root, struct pl_openai_error *e)
{
    json_t *msgs = json_array();
    json_t *calls = json_object(); /* the call_ids of the function_call items so far */
    json_t *ins = json_object_get(root, "instructions");
    if (ins && !json_is_null(ins)) {
        if (!json_is_string(ins)) {
            pl_openai_fail(e, 400, "instructions", "instructions: expected a string");
            goto bad;
        }
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("system"));
        json_object_set(m, "content", ins);
        json_array_append_new(msgs, m);
    }
    json_t *in = json_object_get(root, "input");
    if (!in || json_is_null(in)) {
        pl_openai_fail(e, 400, "input", "input: field required");
        goto bad;
    }
    if (json_is_string(in)) {
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string("user"));
        json_object_set(m, "content", in);
        json_array_append_new(msgs, m);
        json_decref(calls);
        return msgs;
    }
    if (!json_is_array(in)) {
        pl_openai_fail(e, 400, "input", "input: expected a string or a list of input items, got %s",
                       pl_json_type_name(in));
        goto bad;
    }
    size_t i;
    json_t *item;
    json_array_foreach(in, i, item)
    {
        if (!json_is_object(item)) {
            pl_openai_fail(e, 400, "input", "input[%zu]: expected an object", i);
            goto bad;
        }
        const char *type = json_string_value(json_object_get(item, "type"));
        if (type && !strcmp(type, "reasoning"))
            continue; /* the model's earlier thoughts: chat templates leave them out too */
        if (type && !strcmp(type, "function_call")) {
            if (input_call(msgs, item, i, calls, e) != PL_STATUS_OK)
                goto bad;
            continue;
        }
        if (type && !strcmp(type, "function_call_output")) {
            if (input_call_output(msgs, item, i, calls, e) != PL_STATUS_OK)
                goto bad;
            continue;
        }
        if (type && strcmp(type, "message")) {
            pl_openai_fail(e, 400, "input",
                           "input[%zu]: items of type '%s' are not supported (message, "
                           "function_call, function_call_output and reasoning items only)",
                           i, type);
            goto bad;
        }
        const char *role = json_string_value(json_object_get(item, "role"));
        if (!role) {
            pl_openai_fail(e, 400, "input", "input[%zu].role: expected a string", i);
            goto bad;
        }
        struct pl_sbuf b = {0};
        if (content_text(json_object_get(item, "content"), i, "content", &b, e) != PL_STATUS_OK) {
            pl_sbuf_fini(&b);
            goto bad;
        }
        json_t *m = json_object();
        json_object_set_new(m, "role", json_string(role));
        json_object_set_new(m, "content", json_stringn(b.data ? b.data : "", b.len));
        pl_sbuf_fini(&b);
        json_array_append_new(msgs, m);
    }
    json_decref(calls);
    return msgs;
bad:
    json_decref(calls);
    json_decref(msgs);
    return NULL;
}

/* The refusals and the chat body. */
static json_t *chat_body(const json_t *root, bool *stream, struct pl_openai_error *e)
{
    json_t *v;
    if ((v = json_object_get(root, "previous_response_id")) && !json_is_null(v)) {
        pl_openai_fail(e, 400, "previous_response_id",
                       "previous_response_id: responses are not stored by this server; send "
                       "the whole conversation in input");
        return NULL;
    }
    if ((v = json_object_get(root, "conversation")) && !json_is_null(v)) {
        pl_openai_fail(e, 400, "conversation",
                       "conversation: conversations are not stored by this server; send the "
                       "whole conversation in input");
        return NULL;
    }
    if ((v = json_object_get(root, "background")) && !json_is_null(v) && !json_is_false(v)) {
        pl_openai_fail(e, 400, "background", "background: background responses are not supported");
        return NULL;
    }
    if ((v = json_object_get(root, "prompt")) && !json_is_null(v)) {
        pl_openai_fail(e, 400, "prompt", "prompt: stored prompt templates are not supported");
        return NULL;
    }
    if ((v = json_object_get(root, "text")) && !json_is_null(v) && !json_is_object(v)) {
        pl_openai_fail(e, 400, "text", "text: expected an object");
        return NULL;
    }
    if ((v = json_object_get(root, "top_logprobs")) && !json_is_null(v) &&
        !(json_is_integer(v) && json_integer_value(v) == 0)) {
        pl_openai_fail(e, 400, "top_logprobs", "top_logprobs: not supported by /v1/responses");
        return NULL;
    }
    if ((v = json_object_get(root, "store")) && !json_is_null(v) && !json_is_boolean(v)) {
        pl_openai_fail(e, 400, "store", "store: expected a boolean");
        return NULL;
    }
    if ((v = json_object_get(root, "metadata")) && !json_is_null(v) && !json_is_object(v)) {
        pl_openai_fail(e, 400, "metadata", "metadata: expected an object");
        return NULL;
    }
    if ((v = json_object_get(root, "user")) && !json_is_null(v) && !json_is_string(v)) {
        pl_openai_fail(e, 400, "user", "user: expected a string");
        return NULL;
    }
    *stream = false;
    if ((v = json_object_get(root, "stream")) && !json_is_null(v)) {
        if (!json_is_boolean(v)) {
            pl_openai_fail(e, 400, "stream", "stream: expected a boolean");
            return NULL;
        }
        *stream = json_is_true(v);
    }
    json_t *msgs = messages(root, e);
    if (!msgs)
        return NULL;
    json_t *body = json_object();
    json_object_set_new(body, "messages", msgs);
    for (int i = 0; passed_keys[i]; i++)
        if ((v = json_object_get(root, passed_keys[i])))
            json_object_set(body, passed_keys[i], v);
    if ((v = json_object_get(root, "max_output_tokens")))
        json_object_set(body, "max_tokens", v);
    /* text.format as it is: the chat parser reads it in the Responses layout */
    if ((v = json_object_get(json_object_get(root, "text"), "format")))
        json_object_set(body, "response_format", v);
    if (*stream) {
        json_object_set_new(body, "stream", json_true());
        json_t *so = json_object();
        json_object_set_new(so, "include_usage", json_true());
        json_object_set_new(body, "stream_options", so);
    }
    return body;
}

/* Chat's names for the fields of a refused request, as the Responses body names them (the
 * structured-output and tool fields are named so by the parser already). */
static void rename_param(struct pl_openai_error *e)
{
    if (!strcmp(e->param, "max_tokens"))
        snprintf(e->param, sizeof(e->param), "max_output_tokens");
    else if (!strcmp(e->param, "messages"))
        snprintf(e->param, sizeof(e->param), "input");
    char *p = strstr(e->message, "max_tokens");
    if (p && !strncmp(e->message, "max_tokens", 10)) { /* "max_tokens must be ..." */
        char rest[PL_ERR_MSG_MAX];
        snprintf(rest, sizeof(rest), "%s", e->message + 10);
        snprintf(e->message, sizeof(e->message), "max_output_tokens%.1000s", rest);
    }
}

static json_t *echo_or_null(const json_t *root, const char *key)
{
    json_t *v = json_object_get(root, key);
    return v ? json_incref(v) : json_null();
}

/* The request fields the response object reports. */
static json_t *echo_fields(const json_t *root)
{
    json_t *m = json_object();
    json_object_set_new(m, "instructions", echo_or_null(root, "instructions"));
    json_object_set_new(m, "max_output_tokens", echo_or_null(root, "max_output_tokens"));
    json_object_set_new(m, "temperature", echo_or_null(root, "temperature"));
    json_object_set_new(m, "top_p", echo_or_null(root, "top_p"));
    json_object_set_new(m, "user", echo_or_null(root, "user"));
    json_t *md = json_object_get(root, "metadata");
    json_object_set_new(m, "metadata", json_is_object(md) ? json_incref(md) : json_object());
    json_t *tc = json_object_get(root, "tool_choice");
    json_object_set_new(m, "tool_choice",
                        tc && !json_is_null(tc) ? json_incref(tc) : json_string("auto"));
    json_t *tools = json_object_get(root, "tools");
    json_object_set_new(m, "tools", json_is_array(tools) ? json_incref(tools) : json_array());
    json_t *text = json_object_get(root, "text");
    text = json_is_object(text) ? json_deep_copy(text) : json_object();
    json_t *fmt = json_object_get(text, "format");
    if (!fmt || json_is_null(fmt))
        json_object_set_new(text, "format", json_pack("{s:s}", "type", "text"));
    json_object_set_new(m, "text", text);
    json_t *ptc = json_object_get(root, "parallel_tool_calls");
    json_object_set_new(m, "parallel_tool_calls",
                        json_is_boolean(ptc) ? json_incref(ptc) : json_true());
    json_t *tr = json_object_get(root, "truncation");
    json_object_set_new(m, "truncation",
                        json_is_string(tr) ? json_incref(tr) : json_string("disabled"));
    json_t *rs = json_object_get(root, "reasoning");
    json_object_set_new(m, "reasoning", json_is_object(rs) ? json_incref(rs) : json_null());
    return m;
}

/* ---- the response object ---- */

static json_t *text_part(const char *type, const char *text, size_t len)
{
    json_t *p = json_object();
    json_object_set_new(p, "type", json_string(type));
    json_object_set_new(p, "text", pl_http_json_string_lossy(text ? text : "", len));
    if (!strcmp(type, "output_text")) {
        json_object_set_new(p, "annotations", json_array());
        json_object_set_new(p, "logprobs", json_array());
    }
    return p;
}

static json_t *message_item(const struct resp *r, const char *status, const char *text,
                            size_t len, bool with_part)
{
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(r->msg_id));
    json_object_set_new(m, "type", json_string("message"));
    json_object_set_new(m, "status", json_string(status));
    json_object_set_new(m, "role", json_string("assistant"));
    json_t *content = json_array();
    if (with_part)
        json_array_append_new(content, text_part("output_text", text, len));
    json_object_set_new(m, "content", content);
    return m;
}

static json_t *reasoning_item(const struct resp *r, const char *status, const char *text,
                              size_t len, bool with_part)
{
    json_t *m = json_object();
    json_object_set_new(m, "id", json_string(r->rs_id));
    json_object_set_new(m, "type", json_string("reasoning"));
    json_object_set_new(m, "summary", json_array());
    json_t *content = json_array();
    if (with_part)
        json_array_append_new(content, text_part("reasoning_text", text, len));
    json_object_set_new(m, "content", content);
    json_object_set_new(m, "encrypted_content", json_null());
    json_object_set_new(m, "status", json_string(status));
    return m;
}

static json_t *call_item(const struct fcall *c, const char *status, bool with_args)
{
    json_t *m = json_object();
    json_object_set_new(m, "type", json_string("function_call"));
    json_object_set_new(m, "id", json_string(c->id));
    json_object_set_new(m, "call_id", json_string(c->call_id));
    json_object_set_new(m, "name", json_string(c->name));
    json_object_set_new(m, "arguments", with_args ? pl_http_json_string_lossy(
                                                        c->args.data ? c->args.data : "",
                                                        c->args.len)
                                                  : json_string(""));
    json_object_set_new(m, "status", json_string(status));
    return m;
}

/* A new call of the answer, the next output item; NULL when out of memory. */
static struct fcall *add_call(struct resp *r, const char *call_id, const char *name)
{
    struct fcall *grown = realloc(r->calls, sizeof(*grown) * (size_t)(r->n_calls + 1));
    if (!grown)
        return NULL;
    r->calls = grown;
    struct fcall *c = &r->calls[r->n_calls++];
    memset(c, 0, sizeof(*c));
    pl_openai_make_id(r->o, "fc", c->id, sizeof(c->id));
    c->id[2] = '_'; /* fc_<hex>, as OpenAI's item ids look */
    snprintf(c->call_id, sizeof(c->call_id), "%s", call_id ? call_id : "");
    snprintf(c->name, sizeof(c->name), "%s", name ? name : "");
    c->index = r->n_items++;
    return c;
}

static bool incomplete(const struct resp *r)
{
    return !strcmp(r->finish, "length");
}

/* Output item i (items are numbered in the order they opened) in its final state. */
static json_t *item_at(const struct resp *r, int i)
{
    const char *st = incomplete(r) ? "incomplete" : "completed";
    if (i == r->rs_index)
        return reasoning_item(r, st, r->reasoning.data, r->reasoning.len, true);
    if (i == r->msg_index)
        return message_item(r, st, r->text.data, r->text.len, true);
    for (int k = 0; k < r->n_calls; k++)
        if (r->calls[k].index == i)
            return call_item(&r->calls[k], st, true);
    return json_null(); /* every index is one of the above */
}

/* The response object: status "in_progress" (stream start), or final from r's text. */
static json_t *response_object(const struct resp *r, const char *status, json_t *output,
                               json_t *usage)
{
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "object", json_string("response"));
    json_object_set_new(o, "created_at", json_integer(r->created));
    json_object_set_new(o, "status", json_string(status));
    json_object_set_new(o, "background", json_false());
    json_t *err = json_null();
    if (!strcmp(status, "failed")) {
        err = json_object();
        json_object_set_new(err, "code", json_string("server_error"));
        json_object_set_new(err, "message", json_string(r->err.message));
    }
    json_object_set_new(o, "error", err);
    json_t *inc = json_null();
    if (!strcmp(status, "incomplete")) {
        inc = json_object();
        json_object_set_new(inc, "reason", json_string("max_output_tokens"));
    }
    json_object_set_new(o, "incomplete_details", inc);
    json_object_update(o, r->echo); /* instructions, max_output_tokens, metadata, ... */
    json_object_set_new(o, "max_tool_calls", json_null());
    json_object_set_new(o, "model", json_string(r->model));
    json_object_set_new(o, "output", output ? output : json_array());
    json_object_set_new(o, "previous_response_id", json_null());
    json_object_set_new(o, "service_tier", json_string("auto"));
    json_object_set_new(o, "store", json_false());
    json_object_set_new(o, "top_logprobs", json_integer(0));
    json_object_set_new(o, "usage", usage ? usage : json_null());
    return o;
}

/* Responses usage from chat usage ({prompt_tokens, completion_tokens, total_tokens}). */
static json_t *usage_of(const json_t *u)
{
    if (!json_is_object(u))
        return NULL;
    json_int_t in = json_integer_value(json_object_get(u, "prompt_tokens"));
    json_int_t out = json_integer_value(json_object_get(u, "completion_tokens"));
    json_t *r = json_object();
    json_object_set_new(r, "input_tokens", json_integer(in));
    json_t *d = json_object();
    json_object_set_new(d, "cached_tokens", json_integer(0));
    json_object_set_new(r, "input_tokens_details", d);
    json_object_set_new(r, "output_tokens", json_integer(out));
    d = json_object();
    json_object_set_new(d, "reasoning_tokens", json_integer(0));
    json_object_set_new(r, "output_tokens_details", d);
    json_object_set_new(r, "total_tokens", json_integer(in + out));
    return r;
}

/* The final output list (full responses and response.completed). */
static json_t *final_output(const struct resp *r)
{
    json_t *out = json_array();
    for (int i = 0; i < r->n_items; i++)
        json_array_append_new(out, item_at(r, i));
    return out;
}

/* ---- the gen operations ---- */

static pl_status r_submit(void *state, pl_async_notify_fn notify, void *user,
                          struct pl_openai_error *e)
{
    struct resp *r = state;
    return pl_openai_gen_submit(r->chat, notify, user, e);
}

static bool r_is_stream(const void *state)
{
    return ((const struct resp *)state)->stream;
}

static bool r_result(void *state, json_t **resp, struct pl_openai_error *e)
{
    struct resp *r = state;
    json_t *chat = NULL;
    if (!pl_openai_gen_result(r->chat, &chat, e))
        return false;
    *resp = NULL;
    if (!chat)
        return true; /* e says why */
    json_t *choice = json_array_get(json_object_get(chat, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    const char *fr = json_string_value(json_object_get(choice, "finish_reason"));
    snprintf(r->finish, sizeof(r->finish), "%s", fr ? fr : "stop");
    json_t *c = json_object_get(msg, "content"), *rc = json_object_get(msg, "reasoning_content");
    json_t *tcs = json_object_get(msg, "tool_calls");
    if (json_is_string(c))
        pl_sbuf_append(&r->text, json_string_value(c), json_string_length(c));
    if (json_is_string(rc))
        pl_sbuf_append(&r->reasoning, json_string_value(rc), json_string_length(rc));
    /* the items in the order a stream opens them: reasoning, content, calls */
    if (r->reasoning.len > 0)
        r->rs_index = r->n_items++;
    if (r->text.len > 0 || json_array_size(tcs) == 0)
        r->msg_index = r->n_items++;
    size_t k;
    json_t *tc;
    json_array_foreach(tcs, k, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        json_t *args = json_object_get(fn, "arguments");
        struct fcall *call = add_call(r, json_string_value(json_object_get(tc, "id")),
                                      json_string_value(json_object_get(fn, "name")));
        if (!call) {
            json_decref(chat);
            pl_openai_fail(e, 503, NULL, "out of memory");
            return true;
        }
        pl_sbuf_append(&call->args, json_string_value(args), json_string_length(args));
    }
    *resp = response_object(r, incomplete(r) ? "incomplete" : "completed", final_output(r),
                            usage_of(json_object_get(chat, "usage")));
    json_decref(chat);
    return true;
}

static bool r_failed(const void *state, struct pl_openai_error *e)
{
    const struct resp *r = state;
    return pl_openai_gen_failed(r->chat, e);
}

static void r_abort(void *state)
{
    pl_openai_gen_abort(((struct resp *)state)->chat);
}

static void r_free(void *state)
{
    struct resp *r = state;
    if (!r)
        return;
    pl_openai_gen_free(r->chat);
    json_decref(r->echo);
    json_decref(r->usage);
    free(r->model);
    pl_sbuf_fini(&r->pending);
    pl_sbuf_fini(&r->text);
    pl_sbuf_fini(&r->reasoning);
    for (int i = 0; i < r->n_calls; i++)
        pl_sbuf_fini(&r->calls[i].args);
    free(r->calls);
    free(r);
}

/* ---- streaming ---- */

static void event(struct resp *r, struct pl_sbuf *out, const char *type, json_t *data)
{
    json_t *obj = json_object();
    json_object_set_new(obj, "type", json_string(type));
    json_object_update(obj, data);
    json_decref(data);
    json_object_set_new(obj, "sequence_number", json_integer(r->seq++));
    char *s = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    if (!s) {
        out->failed = true;
        return;
    }
    pl_sbuf_printf(out, "event: %s\n", type);
    pl_openai_sse_data(out, s, strlen(s));
    free(s);
}

static json_t *obj2(const char *k1, json_t *v1, const char *k2, json_t *v2)
{
    json_t *o = json_object();
    json_object_set_new(o, k1, v1);
    if (k2)
        json_object_set_new(o, k2, v2);
    return o;
}

/* Opens the reasoning (is_msg false) or message item: output_item.added, content_part.added. */
static void open_item(struct resp *r, struct pl_sbuf *out, bool is_msg)
{
    int *idx = is_msg ? &r->msg_index : &r->rs_index;
    *idx = r->n_items++;
    json_t *item = is_msg ? message_item(r, "in_progress", "", 0, false)
                          : reasoning_item(r, "in_progress", "", 0, false);
    event(r, out, "response.output_item.added",
          obj2("output_index", json_integer(*idx), "item", item));
    json_t *d = obj2("item_id", json_string(is_msg ? r->msg_id : r->rs_id), "output_index",
                     json_integer(*idx));
    json_object_set_new(d, "content_index", json_integer(0));
    json_object_set_new(d, "part", text_part(is_msg ? "output_text" : "reasoning_text", "", 0));
    event(r, out, "response.content_part.added", d);
}

static void delta_event(struct resp *r, struct pl_sbuf *out, bool is_msg, const json_t *text)
{
    if ((is_msg ? r->msg_index : r->rs_index) < 0)
        open_item(r, out, is_msg);
    struct pl_sbuf *acc = is_msg ? &r->text : &r->reasoning;
    pl_sbuf_append(acc, json_string_value(text), json_string_length(text));
    json_t *d = obj2("item_id", json_string(is_msg ? r->msg_id : r->rs_id), "output_index",
                     json_integer(is_msg ? r->msg_index : r->rs_index));
    json_object_set_new(d, "content_index", json_integer(0));
    json_object_set_new(d, "delta", json_incref((json_t *)text));
    if (is_msg)
        json_object_set_new(d, "logprobs", json_array());
    event(r, out, is_msg ? "response.output_text.delta" : "response.reasoning_text.delta", d);
}

/* The done events of one item. */
static void close_item(struct resp *r, struct pl_sbuf *out, bool is_msg)
{
    const char *st = incomplete(r) ? "incomplete" : "completed";
    struct pl_sbuf *acc = is_msg ? &r->text : &r->reasoning;
    int idx = is_msg ? r->msg_index : r->rs_index;
    const char *item_id = is_msg ? r->msg_id : r->rs_id;
    json_t *d = obj2("item_id", json_string(item_id), "output_index", json_integer(idx));
    json_object_set_new(d, "content_index", json_integer(0));
    json_object_set_new(d, "text", pl_http_json_string_lossy(acc->data ? acc->data : "", acc->len));
    if (is_msg)
        json_object_set_new(d, "logprobs", json_array());
    event(r, out, is_msg ? "response.output_text.done" : "response.reasoning_text.done", d);
    d = obj2("item_id", json_string(item_id), "output_index", json_integer(idx));
    json_object_set_new(d, "content_index", json_integer(0));
    json_object_set_new(d, "part", text_part(is_msg ? "output_text" : "reasoning_text", acc->data,
                                             acc->len));
    event(r, out, "response.content_part.done", d);
    json_t *item = is_msg ? message_item(r, st, acc->data, acc->len, true)
                          : reasoning_item(r, st, acc->data, acc->len, true);
    event(r, out, "response.output_item.done",
          obj2("output_index", json_integer(idx), "item", item));
}

/* One chat tool_calls delta ({index, id, type, function: {name, arguments}} opening a call,
 * {index, function: {arguments}} after): the call's item opens, its arguments stream. */
static void call_delta_event(struct resp *r, struct pl_sbuf *out, const json_t *d)
{
    json_t *idx = json_object_get(d, "index");
    json_t *fn = json_object_get(d, "function");
    json_t *args = json_object_get(fn, "arguments");
    if (!json_is_integer(idx))
        return;
    json_int_t k = json_integer_value(idx);
    if (k == r->n_calls) {
        struct fcall *c = add_call(r, json_string_value(json_object_get(d, "id")),
                                   json_string_value(json_object_get(fn, "name")));
        if (!c) {
            out->failed = true;
            return;
        }
        event(r, out, "response.output_item.added",
              obj2("output_index", json_integer(c->index), "item",
                   call_item(c, "in_progress", false)));
    } else if (k < 0 || k > r->n_calls) {
        return; /* the chat layer numbers calls 0, 1, ... */
    }
    if (!json_is_string(args) || json_string_length(args) == 0)
        return;
    struct fcall *c = &r->calls[k];
    pl_sbuf_append(&c->args, json_string_value(args), json_string_length(args));
    json_t *ev = obj2("item_id", json_string(c->id), "output_index", json_integer(c->index));
    json_object_set_new(ev, "delta", json_incref(args));
    event(r, out, "response.function_call_arguments.delta", ev);
}

/* The done events of a call's item. */
static void close_call(struct resp *r, struct pl_sbuf *out, const struct fcall *c)
{
    json_t *d = obj2("item_id", json_string(c->id), "output_index", json_integer(c->index));
    json_object_set_new(d, "name", json_string(c->name));
    json_object_set_new(d, "arguments",
                        pl_http_json_string_lossy(c->args.data ? c->args.data : "", c->args.len));
    event(r, out, "response.function_call_arguments.done", d);
    event(r, out, "response.output_item.done",
          obj2("output_index", json_integer(c->index), "item", item_at(r, c->index)));
}

/* The done events of output item i. */
static void close_at(struct resp *r, struct pl_sbuf *out, int i)
{
    if (i == r->rs_index || i == r->msg_index) {
        close_item(r, out, i == r->msg_index);
        return;
    }
    for (int k = 0; k < r->n_calls; k++)
        if (r->calls[k].index == i)
            close_call(r, out, &r->calls[k]);
}

/* One chat SSE payload. */
static void take_chunk(struct resp *r, struct pl_sbuf *out, const char *payload, size_t len)
{
    if (len == 6 && !memcmp(payload, "[DONE]", 6)) {
        r->chat_done = true;
        return;
    }
    json_t *c = json_loadb(payload, len, 0, NULL);
    if (!c)
        return;
    json_t *err = json_object_get(c, "error");
    if (err) {
        r->failed = true;
        memset(&r->err, 0, sizeof(r->err));
        json_int_t code = json_integer_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        pl_openai_fail(&r->err, code >= 400 ? (int)code : 500, NULL, "%s",
                       msg ? msg : "engine error");
        json_decref(c);
        return;
    }
    json_t *u = json_object_get(c, "usage");
    if (json_is_object(u)) {
        json_decref(r->usage);
        r->usage = json_incref(u);
    }
    json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
    json_t *delta = json_object_get(choice, "delta");
    json_t *rc = json_object_get(delta, "reasoning_content");
    json_t *ct = json_object_get(delta, "content");
    if (json_is_string(rc) && json_string_length(rc) > 0)
        delta_event(r, out, false, rc);
    if (json_is_string(ct) && json_string_length(ct) > 0)
        delta_event(r, out, true, ct);
    size_t k;
    json_t *tc;
    json_array_foreach(json_object_get(delta, "tool_calls"), k, tc)
        call_delta_event(r, out, tc);
    const char *fr = json_string_value(json_object_get(choice, "finish_reason"));
    if (fr)
        snprintf(r->finish, sizeof(r->finish), "%s", fr);
    json_decref(c);
}

/* The complete events in r->pending ("data: ...\n\n", one line each: the chat layer's). */
static void take_pending(struct resp *r, struct pl_sbuf *out)
{
    size_t used = 0;
    while (used < r->pending.len) {
        const char *start = r->pending.data + used;
        const char *end = strstr(start, "\n\n");
        if (!end)
            break;
        if (!strncmp(start, "data: ", 6))
            take_chunk(r, out, start + 6, (size_t)(end - start - 6));
        used = (size_t)(end - r->pending.data) + 2;
    }
    pl_sbuf_consume(&r->pending, used);
}

static bool r_produce(void *state, struct pl_sbuf *out)
{
    struct resp *r = state;
    if (r->ended)
        return false;
    if (!r->started) {
        r->started = true;
        event(r, out, "response.created",
              obj2("response", response_object(r, "in_progress", NULL, NULL), NULL, NULL));
        event(r, out, "response.in_progress",
              obj2("response", response_object(r, "in_progress", NULL, NULL), NULL, NULL));
    }
    if (!r->chat_done) {
        pl_openai_gen_produce(r->chat, &r->pending);
        take_pending(r, out);
        if (!r->chat_done)
            return true;
    }
    if (r->failed) {
        json_t *d = obj2("code", json_string("server_error"), "message",
                         json_string(r->err.message));
        json_object_set_new(d, "param", json_null());
        event(r, out, "error", d);
        event(r, out, "response.failed",
              obj2("response", response_object(r, "failed", NULL, usage_of(r->usage)), NULL,
                   NULL));
    } else {
        if (r->msg_index < 0 && r->n_calls == 0)
            open_item(r, out, true); /* an empty answer still has its message */
        for (int i = 0; i < r->n_items; i++)
            close_at(r, out, i);
        const char *st = incomplete(r) ? "incomplete" : "completed";
        event(r, out, incomplete(r) ? "response.incomplete" : "response.completed",
              obj2("response", response_object(r, st, final_output(r), usage_of(r->usage)), NULL,
                   NULL));
    }
    r->ended = true;
    return false;
}

static const struct pl_openai_gen_ops resp_ops = {"/v1/responses", r_submit, r_is_stream,
                                                  r_produce,       r_result, r_failed,
                                                  r_abort,         r_free};

pl_status pl_openai_responses_new(struct pl_openai *o, const char *body, size_t len,
                                  void **state, const struct pl_openai_gen_ops **ops,
                                  struct pl_openai_error *e)
{
    *state = NULL;
    *ops = &resp_ops;
    struct resp *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_openai_fail(e, 503, NULL, "out of memory");
    r->o = o;
    r->msg_index = r->rs_index = -1;
    json_t *root = pl_openai_load_body(body, len, e);
    pl_status st = root ? PL_STATUS_OK : PL_STATUS_INVALID_ARGUMENT;
    json_t *cb = NULL;
    if (st == PL_STATUS_OK) {
        pl_openai_ignore_unknown(root, resp_keys, false);
        st = pl_openai_check_model_field(o, root, &r->model, e);
    }
    if (st == PL_STATUS_OK && !(cb = chat_body(root, &r->stream, e)))
        st = PL_STATUS_INVALID_ARGUMENT;
    if (st == PL_STATUS_OK) {
        char *text = json_dumps(cb, JSON_COMPACT);
        st = text ? pl_openai_gen_new_chat(o, PL_OPENAI_LAYOUT_RESPONSES, text, strlen(text),
                                           &r->chat, e)
                  : pl_openai_fail(e, 503, NULL, "out of memory");
        free(text);
        if (st != PL_STATUS_OK)
            rename_param(e);
    }
    if (st == PL_STATUS_OK)
        r->echo = echo_fields(root);
    json_decref(cb);
    json_decref(root);
    if (st != PL_STATUS_OK) {
        r_free(r);
        return st;
    }
    pl_openai_make_id(o, "resp", r->id, sizeof(r->id));
    snprintf(r->msg_id, sizeof(r->msg_id), "msg_%s", r->id + 5);
    snprintf(r->rs_id, sizeof(r->rs_id), "rs_%s", r->id + 5);
    r->id[4] = '_'; /* resp_<hex>, as OpenAI's ids look */
    r->created = (long long)time(NULL);
    pl_openai_gen_set_label(r->chat, r->id, "/v1/responses");
    *state = r;
    return PL_STATUS_OK;
}
