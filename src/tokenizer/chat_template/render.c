/*
 * render.c -- apply_chat_template: messages + options -> the prompt text (see
 * chat_template.h, pl_apply_chat_template).
 *
 * Owns the one rendering of a conversation that every front end uses (the C
 * API's pl_llm_apply_chat_template and pl_llm_chat, the CLI, the OpenAI server
 * and through it the RunPod worker): how messages are normalised, in which
 * order the context variables are set, and transformers' continue_final_message
 * cut. Before this file the C API and the server disagreed on all three.
 * Invariant: the template sees exactly the context described in chat_template.h;
 * nothing here depends on which front end called.
 */
#include "tokenizer/chat_template/chat_template.h"

#include <stdlib.h>
#include <string.h>

/* Python's str.isspace() for the code point starting at s (n bytes left); returns its
 * length in bytes, 0 when it is not whitespace. transformers strips with str.strip(). */
static size_t py_space_at(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f))
        return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2;
    if (c == 0xe1 && n >= 3 && s[1] == 0x9a && s[2] == 0x80) /* U+1680 */
        return 3;
    if (c == 0xe2 && n >= 3) {
        unsigned cp = ((unsigned)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
        cp |= 0x2000;
        if ((s[1] == 0x80 && (cp <= 0x200a || cp == 0x2028 || cp == 0x2029 || cp == 0x202f)) ||
            (s[1] == 0x81 && cp == 0x205f))
            return 3;
    }
    if (c == 0xe3 && n >= 3 && s[1] == 0x80 && s[2] == 0x80) /* U+3000 */
        return 3;
    return 0;
}

/* Whitespace at the end of s[0, n): the length of the trailing run, in bytes. */
static size_t trailing_space(const char *s, size_t n)
{
    size_t end = n;
    while (end > 0) {
        size_t k = 0;
        for (size_t back = 1; back <= 3 && back <= end && !k; back++) {
            size_t w = py_space_at((const unsigned char *)s + end - back, back);
            if (w == back)
                k = back;
        }
        if (!k)
            break;
        end -= k;
    }
    return n - end;
}

static size_t leading_space(const char *s, size_t n)
{
    size_t i = 0, k;
    while (i < n && (k = py_space_at((const unsigned char *)s + i, n - i)) > 0)
        i += k;
    return i;
}

/* The last occurrence of needle[0, nn) in hay[0, nh), or NULL. */
static const char *last_occurrence(const char *hay, size_t nh, const char *needle, size_t nn)
{
    if (nn > nh)
        return NULL;
    for (size_t i = nh - nn + 1; i-- > 0;)
        if (!memcmp(hay + i, needle, nn))
            return hay + i;
    return NULL;
}

/* transformers' continue_final_message: with m the final message's text,
 *   loc = rendered.rindex(m.strip())
 *   keep m.lstrip()'s length if rendered[loc : loc + len(m.lstrip())] == m, else m.strip()'s
 * (a template that kept the message's trailing whitespace keeps it; one that trimmed it
 * does not get it back). A message that is only whitespace leaves the render whole. */
static pl_status cut_after_final(char *rendered, size_t *len, const char *m, size_t mn,
                                 struct pl_err *err)
{
    size_t lead = leading_space(m, mn);
    size_t trail = lead == mn ? 0 : trailing_space(m, mn);
    const char *core = m + lead;
    size_t n_strip = mn - lead - trail, n_lstrip = mn - lead;
    if (n_strip == 0)
        return PL_STATUS_OK;
    const char *loc = last_occurrence(rendered, *len, core, n_strip);
    if (!loc)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "continue_final_message: the final message's content does not appear "
                          "in the rendered chat");
    size_t at = (size_t)(loc - rendered);
    size_t keep = n_strip;
    if (at + n_lstrip <= *len && n_lstrip == mn && !memcmp(loc, m, mn))
        keep = n_lstrip;
    *len = at + keep;
    rendered[*len] = '\0';
    return PL_STATUS_OK;
}

/* An assistant message's tool_calls (m is the message's own copy): each
 * function.arguments given as JSON text becomes its value, a missing, null or empty one
 * {} (vLLM parses them so that templates see a mapping, as transformers documents). A
 * null tool_calls is dropped. */
static pl_status normalize_tool_calls(json_t *m, size_t i, struct pl_err *err)
{
    json_t *calls = json_object_get(m, "tool_calls");
    if (!calls)
        return PL_STATUS_OK;
    if (json_is_null(calls)) {
        json_object_del(m, "tool_calls");
        return PL_STATUS_OK;
    }
    if (!json_is_array(calls))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "messages[%zu].tool_calls: expected a list", i);
    json_t *own = json_deep_copy(calls);
    if (!own)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "messages: out of memory");
    json_object_set_new(m, "tool_calls", own);
    size_t k;
    json_t *call;
    json_array_foreach(own, k, call)
    {
        json_t *fn = json_object_get(call, "function");
        if (!json_is_object(call) || !json_is_object(fn) ||
            !json_is_string(json_object_get(fn, "name")))
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "messages[%zu].tool_calls[%zu]: expected {\"function\": "
                              "{\"name\": ..., \"arguments\": ...}}",
                              i, k);
        json_t *args = json_object_get(fn, "arguments");
        if (!args || json_is_null(args) ||
            (json_is_string(args) && json_string_length(args) == 0)) {
            json_object_set_new(fn, "arguments", json_object());
        } else if (json_is_string(args)) {
            json_error_t je;
            json_t *v = json_loadb(json_string_value(args), json_string_length(args),
                                   JSON_DECODE_ANY, &je);
            if (!v)
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                                  "messages[%zu].tool_calls[%zu].function.arguments: not valid "
                                  "JSON: %s",
                                  i, k, je.text);
            json_object_set_new(fn, "arguments", v);
        }
    }
    return PL_STATUS_OK;
}

/* messages -> the template's messages (see chat_template.h). */
static json_t *normalize_messages(const json_t *msgs, struct pl_err *err)
{
    if (!msgs || !json_is_array(msgs)) {
        pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "messages: expected a list of messages");
        return NULL;
    }
    if (json_array_size(msgs) == 0) {
        pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "messages: must not be empty");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        if (!json_is_object(m)) {
            pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "messages[%zu]: expected an object", i);
            goto bad;
        }
        if (!json_is_string(json_object_get(m, "role"))) {
            pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "messages[%zu].role: expected a string",
                       i);
            goto bad;
        }
        json_t *content = json_object_get(m, "content");
        json_t *copy = json_copy(m);
        if (content && json_is_array(content)) {
            char *text = NULL;
            size_t n = 0, k;
            json_t *part;
            json_array_foreach(content, k, part)
            {
                json_t *type = json_object_get(part, "type");
                json_t *t = json_object_get(part, "text");
                if (!json_is_object(part) || !json_is_string(type)) {
                    pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                               "messages[%zu].content[%zu]: expected an object with a \"type\"", i,
                               k);
                } else if (strcmp(json_string_value(type), "text") || !json_is_string(t)) {
                    pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                               "messages[%zu].content[%zu]: content parts of type '%s' are not "
                               "supported (text only)",
                               i, k, json_string_value(type));
                } else {
                    size_t tn = json_string_length(t);
                    char *grown = realloc(text, n + tn + 2);
                    if (grown) {
                        text = grown;
                        if (n)
                            text[n++] = '\n';
                        memcpy(text + n, json_string_value(t), tn);
                        n += tn;
                        continue;
                    }
                    pl_err_set(err, PL_STATUS_NO_MEMORY, "messages: out of memory");
                }
                free(text);
                json_decref(copy);
                goto bad;
            }
            json_object_set_new(copy, "content", json_stringn(text ? text : "", n));
            free(text);
        } else if (content && !json_is_string(content) && !json_is_null(content)) {
            pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                       "messages[%zu].content: expected a string or a list of content parts", i);
            json_decref(copy);
            goto bad;
        } else if (!content || json_is_null(content)) {
            json_object_set_new(copy, "content", json_string(""));
        }
        if (!strcmp(json_string_value(json_object_get(m, "role")), "assistant") &&
            normalize_tool_calls(copy, i, err) != PL_STATUS_OK) {
            json_decref(copy);
            goto bad;
        }
        json_array_append_new(out, copy);
    }
    return out;
bad:
    json_decref(out);
    return NULL;
}

/* The final message's text for continue_final_message: its string content, or (a list of
 * parts) the last text part's, as transformers takes it. */
static const char *final_text(const json_t *msgs, size_t *n)
{
    const json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const json_t *c = json_object_get(last, "content");
    if (json_is_string(c)) {
        *n = json_string_length(c);
        return json_string_value(c);
    }
    for (size_t k = json_array_size(c); json_is_array(c) && k-- > 0;) {
        const json_t *t = json_object_get(json_array_get(c, k), "text");
        if (json_is_string(t)) {
            *n = json_string_length(t);
            return json_string_value(t);
        }
    }
    return NULL;
}

pl_status pl_apply_chat_template(const struct pl_chat_template *t, const json_t *messages,
                                 const struct pl_chat_apply *o, char **out, size_t *out_len,
                                 const char **param, struct pl_err *err)
{
    *out = NULL;
    const char *unused;
    if (!param)
        param = &unused;
    *param = NULL;
    if (o->continue_final_message && o->add_generation_prompt) {
        *param = "continue_final_message";
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "continue_final_message and add_generation_prompt cannot both be true");
    }
    if (o->kwargs && !json_is_object(o->kwargs)) {
        *param = "chat_template_kwargs";
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "chat_template_kwargs: expected an object");
    }
    json_t *msgs = normalize_messages(messages, err);
    if (!msgs) {
        *param = "messages";
        return err ? err->status : PL_STATUS_INVALID_ARGUMENT;
    }
    json_t *ctx = json_object();
    json_object_set_new(ctx, "bos_token", json_string(o->bos_token ? o->bos_token : ""));
    json_object_set_new(ctx, "eos_token", json_string(o->eos_token ? o->eos_token : ""));
    json_object_set_new(ctx, "add_generation_prompt", json_boolean(o->add_generation_prompt));
    json_object_set_new(ctx, "tools", json_null());
    json_object_set_new(ctx, "documents", json_null());
    if (o->kwargs)
        json_object_update(ctx, (json_t *)o->kwargs);
    if (o->tools && !json_is_null(o->tools))
        json_object_set(ctx, "tools", (json_t *)o->tools);
    json_object_set(ctx, "messages", msgs);
    size_t len = 0;
    pl_status st = pl_chat_template_render(t, ctx, NULL, out, &len, err);
    if (st != PL_STATUS_OK) {
        *param = "messages";
        pl_err_prefix(err, "chat template");
    } else if (o->continue_final_message) {
        size_t mn = 0;
        const char *m = final_text(messages, &mn);
        *param = "continue_final_message";
        st = m ? cut_after_final(*out, &len, m, mn, err)
               : pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                            "continue_final_message: the final message has no text content");
        if (st == PL_STATUS_OK)
            *param = NULL;
    }
    if (st != PL_STATUS_OK) {
        free(*out);
        *out = NULL;
    } else if (out_len) {
        *out_len = len;
    }
    json_decref(ctx);
    json_decref(msgs);
    return st;
}
