/*
 * tool_call.c -- tools, tool_choice and parallel_tool_calls on the chat route (in chat
 * completions' layout or, for /v1/responses, the Responses API's), and the tool_calls
 * objects of answers (see tool_call.h).
 */
#include "server/tool_call.h"

#include "grammar/grammar.h"
#include "server/openai_ext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One tool as vLLM's ChatCompletionToolsParam.model_dump() writes it, from the chat
 * form or (is_flat) the Responses API's flat one. */
static json_t *normalize_tool(const json_t *t, size_t i, bool is_flat, struct pl_openai_error *e)
{
    char where[64], fn_where[80];
    snprintf(where, sizeof(where), "tools[%zu]", i);
    snprintf(fn_where, sizeof(fn_where), is_flat ? "%s" : "%s.function", where);
    if (!json_is_object(t)) {
        pl_openai_fail(e, 400, "tools", "%s: expected an object", where);
        return NULL;
    }
    json_t *type = json_object_get(t, "type");
    if (type && !json_is_null(type) &&
        !(json_is_string(type) && !strcmp(json_string_value(type), "function"))) {
        if (json_is_string(type))
            pl_openai_fail(e, 400, "tools",
                           "%s.type: '%.64s' tools are not supported (only \"function\" tools)",
                           where, json_string_value(type));
        else
            pl_openai_fail(e, 400, "tools", "%s.type: expected \"function\"", where);
        return NULL;
    }
    const json_t *fn = is_flat ? t : json_object_get(t, "function");
    if (!json_is_object(fn)) {
        pl_openai_fail(e, 400, "tools", "%s.function: expected an object", where);
        return NULL;
    }
    const json_t *name = json_object_get(fn, "name");
    if (!json_is_string(name) || json_string_length(name) == 0 ||
        json_string_length(name) >= 256 ||
        strlen(json_string_value(name)) != json_string_length(name)) {
        pl_openai_fail(e, 400, "tools", "%s.name: expected a non-empty string", fn_where);
        return NULL;
    }
    const json_t *desc = json_object_get(fn, "description");
    if (desc && !json_is_null(desc) && !json_is_string(desc)) {
        pl_openai_fail(e, 400, "tools", "%s.description: expected a string", fn_where);
        return NULL;
    }
    const json_t *params = json_object_get(fn, "parameters");
    if (params && !json_is_null(params) && !json_is_object(params)) {
        pl_openai_fail(e, 400, "tools", "%s.parameters: expected a JSON Schema object", fn_where);
        return NULL;
    }
    json_t *f = json_object();
    json_object_set(f, "name", (json_t *)name);
    json_object_set_new(f, "description", desc ? json_deep_copy(desc) : json_null());
    json_object_set_new(f, "parameters", params ? json_deep_copy(params) : json_null());
    const char *k;
    json_t *v;
    /* the function's other keys (strict, ...) after those three; flat, every key but type */
    json_object_foreach((json_t *)fn, k, v)
    if (!json_object_get(f, k) && !(is_flat && !strcmp(k, "type")))
        json_object_set_new(f, k, json_deep_copy(v));
    json_t *out = json_object();
    json_object_set_new(out, "type", json_string("function"));
    json_object_set_new(out, "function", f);
    if (!is_flat)
        json_object_foreach((json_t *)t, k, v)
        if (!json_object_get(out, k))
            json_object_set_new(out, k, json_deep_copy(v));
    return out;
}

static const char *tool_name(const json_t *tool)
{
    return json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
}

/* A tool's parameter schema: its parameters, or an object with no properties. */
static json_t *tool_params(const json_t *tool)
{
    json_t *p = json_object_get(json_object_get(tool, "function"), "parameters");
    return json_is_object(p) ? json_deep_copy(p) : json_pack("{s:s, s:{}}", "type", "object",
                                                             "properties");
}

char *pl_tool_required_schema(const json_t *tools, int max_calls, struct pl_openai_error *e)
{
    json_t *any = json_array(), *defs = json_object();
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        json_t *params = tool_params(t);
        /* $refs point at the root's $defs: each tool's definitions move there (vLLM) */
        json_t *d = json_object_get(params, "$defs");
        const char *k;
        json_t *v;
        json_object_foreach(d, k, v)
        {
            json_t *have = json_object_get(defs, k);
            if (have && !json_equal(have, v)) {
                pl_openai_fail(e, 400, "tools",
                               "tools: the $defs entry '%s' differs between tools (tool_choice "
                               "\"required\" merges them)",
                               k);
                json_decref(params);
                json_decref(any);
                json_decref(defs);
                return NULL;
            }
            json_object_set(defs, k, v);
        }
        json_object_del(params, "$defs");
        json_t *branch = json_pack("{s:s, s:{s:{s:s, s:[s]}, s:o}, s:[s, s], s:b}", "type",
                                   "object", "properties", "name", "type", "string", "enum",
                                   tool_name(t), "parameters", params, "required", "name",
                                   "parameters", "additionalProperties", 0);
        json_array_append_new(any, branch);
    }
    /* vLLM also writes "type": "object" beside anyOf; each branch says it instead */
    json_t *schema = json_pack("{s:s, s:i, s:{s:o}}", "type", "array", "minItems", 1, "items",
                               "anyOf", any);
    if (max_calls > 0)
        json_object_set_new(schema, "maxItems", json_integer(max_calls));
    if (json_object_size(defs))
        json_object_set(schema, "$defs", defs);
    json_decref(defs);
    char *s = json_dumps(schema, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(schema);
    if (!s)
        pl_openai_fail(e, 503, NULL, "out of memory");
    return s;
}

/* sp with a JSON-schema constraint, checked by the grammar compiler (a keyword it cannot
 * express is a 400 naming it). */
static pl_status constrain(struct pl_sampling_params *sp, const char *schema,
                           struct pl_openai_error *e)
{
    struct pl_err err = {0};
    pl_status st = pl_sampling_params_set_constraint(sp, PL_CONSTRAINT_JSON, schema,
                                                     sp->whitespace_pattern, &err);
    if (st == PL_STATUS_NO_MEMORY)
        return pl_openai_fail(e, 503, NULL, "out of memory");
    if (st != PL_STATUS_OK)
        return pl_openai_fail(e, 400, "tools", "tools: a parameter schema cannot be enforced: %s",
                              err.msg);
    return PL_STATUS_OK;
}

pl_status pl_tool_request_parse(const json_t *root, enum pl_openai_layout layout,
                                enum pl_tool_parser_kind server_parser,
                                struct pl_sampling_params *sp, struct pl_tool_request *out,
                                struct pl_openai_error *e)
{
    memset(out, 0, sizeof(*out));
    bool is_flat = layout == PL_OPENAI_LAYOUT_RESPONSES;
    const json_t *tools = json_object_get(root, "tools");
    const json_t *choice = json_object_get(root, "tool_choice");
    const json_t *ptc = json_object_get(root, "parallel_tool_calls");
    if (tools && json_is_null(tools))
        tools = NULL;
    if (choice && json_is_null(choice))
        choice = NULL;
    if (tools && !json_is_array(tools))
        return pl_openai_fail(e, 400, "tools", "tools: expected a list of tools");
    if (ptc && !json_is_null(ptc) && !json_is_boolean(ptc))
        return pl_openai_fail(e, 400, "parallel_tool_calls",
                              "parallel_tool_calls: expected a boolean");
    out->max_calls = ptc && json_is_false(ptc) ? 1 : 0;
    if (tools) {
        out->tools = json_array();
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            json_t *n = normalize_tool(t, i, is_flat, e);
            if (!n) {
                pl_tool_request_fini(out);
                return PL_STATUS_INVALID_ARGUMENT;
            }
            json_array_append_new(out->tools, n);
        }
    }
    size_t n_tools = tools ? json_array_size(tools) : 0;
    /* vLLM's check_tool_usage */
    if (choice && !json_is_string(choice) && !json_is_object(choice)) {
        pl_tool_request_fini(out);
        return pl_openai_fail(e, 400, "tool_choice",
                              "tool_choice: expected \"none\", \"auto\", \"required\" or %s",
                              is_flat ? "{\"type\": \"function\", \"name\": ...}"
                                      : "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    }
    const char *mode = choice ? json_string_value(choice) : n_tools ? "auto" : "none";
    if (mode && !strcmp(mode, "none"))
        return PL_STATUS_OK;
    if (is_flat && n_tools == 0 && mode && !strcmp(mode, "auto"))
        return PL_STATUS_OK; /* the Responses API: auto with nothing to call is plain text */
    pl_status st = PL_STATUS_INVALID_ARGUMENT;
    if (!tools) {
        pl_openai_fail(e, 400, "tool_choice", "When using `tool_choice`, `tools` must be set.");
        goto bad;
    }
    if (mode && !strcmp(mode, "required") && n_tools == 0)
        return PL_STATUS_OK; /* OpenAI: required with no tools behaves as none */
    if (mode && strcmp(mode, "auto") && strcmp(mode, "required")) {
        pl_openai_fail(e, 400, "tool_choice",
                       "Invalid value for `tool_choice`: %s! Only named tools, \"none\", "
                       "\"auto\" or \"required\" are supported.",
                       mode);
        goto bad;
    }
    bool constrained = !mode || !strcmp(mode, "required");
    if (constrained && sp->constraint_kind != PL_CONSTRAINT_NONE) {
        pl_openai_fail(e, 400, "tool_choice",
                       "tool_choice \"required\" or a named function cannot be combined with "
                       "another structured output constraint (%s)",
                       is_flat ? "text.format" : "response_format, guided_*");
        goto bad;
    }
    if (!mode) { /* a named function */
        static const char usage[] =
            "Correct usage: `{\"type\": \"function\", \"function\": {\"name\": \"my_function\"}}`";
        static const char flat_usage[] =
            "Correct usage: `{\"type\": \"function\", \"name\": \"my_function\"}`";
        const json_t *type = json_object_get(choice, "type");
        if (is_flat && !(json_is_string(type) && !strcmp(json_string_value(type), "function"))) {
            pl_openai_fail(e, 400, "tool_choice",
                           "tool_choice.type: '%.64s' is not supported (function tools only)! %s",
                           json_is_string(type) ? json_string_value(type) : "?", flat_usage);
            goto bad;
        }
        const json_t *fn = is_flat ? choice : json_object_get(choice, "function");
        const json_t *name = json_object_get(fn, "name");
        if (is_flat && (!json_is_string(name) || json_string_length(name) == 0)) {
            pl_openai_fail(e, 400, "tool_choice",
                           "tool_choice.name: expected a non-empty string! %s", flat_usage);
            goto bad;
        }
        if (!json_is_object(fn)) {
            pl_openai_fail(e, 400, "tool_choice",
                           "Invalid value for `function` in `tool_choice`! %s", usage);
            goto bad;
        }
        if (!json_is_string(name) || json_string_length(name) == 0) {
            pl_openai_fail(e, 400, "tool_choice",
                           "Expected a non-empty string `name` in `function` in `tool_choice`! "
                           "%s",
                           usage);
            goto bad;
        }
        const json_t *tool = NULL;
        for (size_t i = 0; i < n_tools && !tool; i++)
            if (!strcmp(tool_name(json_array_get(out->tools, i)), json_string_value(name)))
                tool = json_array_get(out->tools, i);
        if (!tool) {
            pl_openai_fail(e, 400, "tool_choice",
                           "The tool specified in `tool_choice` does not match any of the "
                           "specified `tools`");
            goto bad;
        }
        json_t *params = tool_params(tool);
        char *schema = json_dumps(params, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(params);
        st = schema ? constrain(sp, schema, e) : pl_openai_fail(e, 503, NULL, "out of memory");
        free(schema);
        if (st != PL_STATUS_OK)
            goto bad;
        out->parser = PL_TOOL_PARSER_NAMED;
        snprintf(out->named, sizeof(out->named), "%s", json_string_value(name));
        return PL_STATUS_OK;
    }
    if (!strcmp(mode, "required")) {
        char *schema = pl_tool_required_schema(out->tools, out->max_calls, e);
        if (!schema)
            goto bad;
        st = constrain(sp, schema, e);
        free(schema);
        if (st != PL_STATUS_OK)
            goto bad;
        out->parser = PL_TOOL_PARSER_JSON_ARRAY;
        return PL_STATUS_OK;
    }
    /* auto */
    if (server_parser == PL_TOOL_PARSER_NONE) {
        pl_openai_fail(e, 400, "tool_choice",
                       "\"auto\" tool choice requires --enable-auto-tool-choice and "
                       "--tool-call-parser to be set");
        goto bad;
    }
    out->parser = server_parser;
    sp->skip_special_tokens = false;
    return PL_STATUS_OK;
bad:
    pl_tool_request_fini(out);
    return st == PL_STATUS_OK ? PL_STATUS_INVALID_ARGUMENT : st;
}

void pl_tool_request_fini(struct pl_tool_request *t)
{
    if (!t)
        return;
    json_decref(t->tools);
    memset(t, 0, sizeof(*t));
}

void pl_tool_call_id(struct pl_openai *o, enum pl_tool_parser_kind parser,
                     enum pl_openai_layout layout, char *buf, size_t cap)
{
    char full[64];
    bool is_flat = layout == PL_OPENAI_LAYOUT_RESPONSES;
    pl_openai_make_id(o, is_flat ? "call" : "chatcmpl-tool", full, sizeof(full));
    if (is_flat)
        full[4] = '_'; /* call_<hex>, as OpenAI's Responses ids look */
    if (parser != PL_TOOL_PARSER_MISTRAL) {
        snprintf(buf, cap, "%s", full);
        return;
    }
    /* nine letters and digits from the unique part (FNV-1a of it, base 62) */
    static const char digits[] =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    unsigned long long h = 1469598103934665603ull;
    for (const char *c = full; *c; c++)
        h = (h ^ (unsigned char)*c) * 1099511628211ull;
    char id[10];
    for (int i = 0; i < 9; i++) {
        id[i] = digits[h % 62];
        h /= 62;
        if (!h)
            h = 0x9e3779b97f4a7c15ull + (unsigned long long)i;
    }
    id[9] = '\0';
    snprintf(buf, cap, "%s", id);
}

json_t *pl_tool_call_json(const char *id, const char *name, const char *args, size_t n_args)
{
    json_t *fn = json_object();
    json_object_set_new(fn, "name", json_string(name));
    json_object_set_new(fn, "arguments", pl_http_json_string_lossy(args ? args : "", n_args));
    json_t *c = json_object();
    json_object_set_new(c, "id", json_string(id));
    json_object_set_new(c, "type", json_string("function"));
    json_object_set_new(c, "function", fn);
    return c;
}

json_t *pl_tool_call_delta_json(const struct pl_tool_call_delta *d, const char *id)
{
    json_t *fn = json_object();
    if (d->is_first)
        json_object_set_new(fn, "name", json_string(d->name));
    json_object_set_new(fn, "arguments",
                        pl_http_json_string_lossy(d->args.data ? d->args.data : "", d->args.len));
    json_t *c = json_object();
    json_object_set_new(c, "index", json_integer(d->index));
    if (d->is_first) {
        json_object_set_new(c, "id", json_string(id));
        json_object_set_new(c, "type", json_string("function"));
    }
    json_object_set_new(c, "function", fn);
    return c;
}
