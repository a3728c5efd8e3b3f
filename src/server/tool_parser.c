/*
 * tool_parser.c -- the tool-call splitter behind --tool-call-parser (see tool_parser.h).
 *
 * One byte at a time through a state machine; a byte a state cannot take is
 * handed to the next state ("re-processed"). pending holds the bytes since a
 * possible call began (a marker, whitespace, an object's head): they become
 * content if it turns out not to be a call, and are dropped once it is one.
 *
 *   TEXT --marker--> OPEN --'{'--> OBJ --closed--> (per format) CLOSE / LNEXT / ANEXT / TEXT
 *     ^                |  '['--> AELEM --'{'--> OBJ                     |
 *     |                |  name --> MNAME --[ARGS]--> MARGS --value end--+
 *     +--- failure: pending released as content ------------------------+
 *   LEAD (llama3_json, json_array: the answer's start) --'{' / <|python_tag|> / '['--> ...
 *   FINAL: content to the end.   NAMED: every byte is argument text.
 *
 * Inside OBJ an object goes HEAD (its head {"name": "N", "arguments": not yet
 * complete) -> ARGS (the value streams out) -> TAIL (the rest of the object
 * is dropped) or, when the head does not match, WHOLE (held until the object
 * closes, then parsed).
 */
#include "server/tool_parser.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

enum {
    ST_TEXT,   /* content; looking for the format's marker */
    ST_LEAD,   /* llama3_json / json_array: the answer's leading whitespace */
    ST_TAG,    /* llama3_json: inside <|python_tag|> */
    ST_OPEN,   /* after a marker (or ';'): whitespace, then the call's first byte */
    ST_OBJ,    /* inside a call object */
    ST_CLOSE,  /* hermes: after the object, dropping bytes up to </tool_call> */
    ST_LNEXT,  /* llama3_json: after a call: ';' or '{' continue */
    ST_AELEM,  /* a list of calls: whitespace, then '{' */
    ST_ANEXT,  /* a list of calls: after an element: ',' or ']' */
    ST_MNAME,  /* mistral v11: the name up to [ARGS] or [CALL_ID] */
    ST_MCALLID, /* mistral v11: the call id up to [ARGS] */
    ST_MARGS,  /* mistral v11: the arguments value */
    ST_FINAL,  /* content to the end */
    ST_NAMED,  /* named tool_choice: all argument text */
    ST_DONE    /* finished */
};

enum { OBJ_HEAD, OBJ_ARGS, OBJ_TAIL, OBJ_WHOLE };
enum { HEAD_MORE, HEAD_MATCH, HEAD_FAIL };

/* A JSON value read byte by byte: where it ends. */
struct vscan {
    bool started, done, in_str, esc;
    char kind; /* its first byte: '{', '[', '"' or that of a literal */
    int depth;
};

struct pl_tool_parser {
    enum pl_tool_parser_kind kind;
    char named[256];
    int max_calls;
    int state;
    bool skip_ws;          /* drop whitespace (right after a call) */
    const char *marker;    /* the format's marker, NULL when it has none */
    size_t n_matched;      /* TEXT / CLOSE / TAG: bytes of the marker matched */
    struct pl_sbuf pending;
    /* the object in OBJ */
    struct pl_sbuf raw;
    int obj_phase;
    int depth;
    bool in_str, esc;
    struct vscan v;        /* the arguments value (OBJ's ARGS, MARGS) */
    struct pl_sbuf name;   /* MNAME / MCALLID */
    bool in_array;         /* OBJ was opened from AELEM */
    /* calls */
    int n_calls;           /* opened and kept */
    bool muted;            /* the current call is past max_calls */
};

static const char HERMES_OPEN[] = "<tool_call>";
static const char HERMES_CLOSE[] = "</tool_call>";
static const char MISTRAL_MARK[] = "[TOOL_CALLS]";
static const char PYTHON_TAG[] = "<|python_tag|>";

static const struct {
    const char *name;
    enum pl_tool_parser_kind kind;
} NAMES[] = {
    {"hermes", PL_TOOL_PARSER_HERMES},       {"llama3_json", PL_TOOL_PARSER_LLAMA3_JSON},
    {"mistral", PL_TOOL_PARSER_MISTRAL},     {"llama3", PL_TOOL_PARSER_LLAMA3_JSON},
    {"llama", PL_TOOL_PARSER_LLAMA3_JSON},
};

bool pl_tool_parser_kind_from_name(const char *name, enum pl_tool_parser_kind *out)
{
    if (!name || !*name) {
        *out = PL_TOOL_PARSER_NONE;
        return true;
    }
    for (size_t i = 0; i < sizeof(NAMES) / sizeof(NAMES[0]); i++)
        if (!strcmp(name, NAMES[i].name)) {
            *out = NAMES[i].kind;
            return true;
        }
    return false;
}

const char *pl_tool_parser_kind_names(void)
{
    return "hermes, llama3_json, mistral";
}

const char *pl_tool_parser_kind_name(enum pl_tool_parser_kind kind)
{
    switch (kind) {
    case PL_TOOL_PARSER_HERMES:
        return "hermes";
    case PL_TOOL_PARSER_LLAMA3_JSON:
        return "llama3_json";
    case PL_TOOL_PARSER_MISTRAL:
        return "mistral";
    case PL_TOOL_PARSER_JSON_ARRAY:
        return "json_array";
    case PL_TOOL_PARSER_NAMED:
        return "named";
    default:
        return "";
    }
}

enum pl_tool_parser_kind pl_tool_parser_detect(const char *src)
{
    if (!src)
        return PL_TOOL_PARSER_NONE;
    if (strstr(src, HERMES_OPEN))
        return PL_TOOL_PARSER_HERMES;
    if (strstr(src, MISTRAL_MARK))
        return PL_TOOL_PARSER_MISTRAL;
    if (strstr(src, PYTHON_TAG))
        return PL_TOOL_PARSER_LLAMA3_JSON;
    return PL_TOOL_PARSER_NONE;
}

/* ---- output -------------------------------------------------------------------------- */

void pl_tool_out_reset(struct pl_tool_out *out)
{
    out->content.len = 0;
    if (out->content.data)
        out->content.data[0] = '\0';
    for (int i = 0; i < out->n_calls; i++)
        pl_sbuf_fini(&out->calls[i].args);
    out->n_calls = 0;
}

void pl_tool_out_fini(struct pl_tool_out *out)
{
    pl_tool_out_reset(out);
    pl_sbuf_fini(&out->content);
    free(out->calls);
    memset(out, 0, sizeof(*out));
}

/* The delta of call `index` to append to: the last one when it is that call's. */
static struct pl_tool_call_delta *out_call(struct pl_tool_out *out, int index, bool is_first)
{
    if (!is_first && out->n_calls > 0 && out->calls[out->n_calls - 1].index == index)
        return &out->calls[out->n_calls - 1];
    if (out->n_calls == out->cap) {
        int cap = out->cap ? out->cap * 2 : 4;
        struct pl_tool_call_delta *c = realloc(out->calls, sizeof(*c) * (size_t)cap);
        if (!c) {
            out->content.failed = true;
            return NULL;
        }
        out->calls = c;
        out->cap = cap;
    }
    struct pl_tool_call_delta *d = &out->calls[out->n_calls++];
    memset(d, 0, sizeof(*d));
    d->index = index;
    d->is_first = is_first;
    return d;
}

/* ---- the parser ---------------------------------------------------------------------- */

struct pl_tool_parser *pl_tool_parser_new(enum pl_tool_parser_kind kind, const char *named,
                                          int max_calls)
{
    if (kind == PL_TOOL_PARSER_NONE)
        return NULL;
    struct pl_tool_parser *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->kind = kind;
    p->max_calls = max_calls;
    if (named)
        snprintf(p->named, sizeof(p->named), "%s", named);
    switch (kind) {
    case PL_TOOL_PARSER_HERMES:
        p->marker = HERMES_OPEN;
        p->state = ST_TEXT;
        break;
    case PL_TOOL_PARSER_MISTRAL:
        p->marker = MISTRAL_MARK;
        p->state = ST_TEXT;
        break;
    case PL_TOOL_PARSER_NAMED:
        p->state = ST_NAMED;
        break;
    default:
        p->state = ST_LEAD;
        break;
    }
    return p;
}

void pl_tool_parser_free(struct pl_tool_parser *p)
{
    if (!p)
        return;
    pl_sbuf_fini(&p->pending);
    pl_sbuf_fini(&p->raw);
    pl_sbuf_fini(&p->name);
    free(p);
}

int pl_tool_parser_n_calls(const struct pl_tool_parser *p)
{
    return p ? p->n_calls : 0;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void clear(struct pl_sbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

/* A call opens: its first delta carries the name. */
static void begin_call(struct pl_tool_parser *p, const char *name, struct pl_tool_out *out)
{
    clear(&p->pending);
    p->muted = p->max_calls > 0 && p->n_calls >= p->max_calls;
    if (p->muted)
        return;
    struct pl_tool_call_delta *d = out_call(out, p->n_calls++, true);
    if (d)
        snprintf(d->name, sizeof(d->name), "%s", name);
}

static void emit_args(struct pl_tool_parser *p, const char *s, size_t n, struct pl_tool_out *out)
{
    if (p->muted || p->n_calls == 0)
        return;
    struct pl_tool_call_delta *d = out_call(out, p->n_calls - 1, false);
    if (d)
        pl_sbuf_append(&d->args, s, n);
}

/* Where content goes on: formats that may open calls later look for their marker again. */
static int content_state(const struct pl_tool_parser *p)
{
    return p->marker ? ST_TEXT : ST_FINAL;
}

/* The state after a call (or a list of calls) ended, per format. */
static int after_call_state(const struct pl_tool_parser *p)
{
    switch (p->kind) {
    case PL_TOOL_PARSER_HERMES:
        return ST_CLOSE;
    case PL_TOOL_PARSER_LLAMA3_JSON:
        return ST_LNEXT;
    default:
        return p->in_array ? ST_ANEXT : content_state(p);
    }
}

/* What looked like a call is not one: its bytes are content. */
static void fail(struct pl_tool_parser *p, struct pl_tool_out *out)
{
    pl_sbuf_append(&out->content, p->pending.data ? p->pending.data : "", p->pending.len);
    clear(&p->pending);
    clear(&p->raw);
    p->n_matched = 0;
    p->skip_ws = false;
    p->state = content_state(p);
}

/* One more byte of the marker search: mk[0, *m) is what is held. Returns how many of
 * the held bytes plus c are released (they are the first bytes of mk[0, *m) + c). */
static size_t marker_step(const char *mk, size_t *m, char c)
{
    if (mk[*m] == c) {
        (*m)++;
        return 0;
    }
    /* the longest suffix of mk[0, m) + c that is a prefix of mk */
    size_t n = *m + 1;
    for (size_t k = *m; k > 0; k--) {
        size_t start = n - k; /* suffix of length k of the held bytes plus c */
        if (memcmp(mk + start, mk, k - 1) == 0 && mk[k - 1] == c) {
            *m = k;
            return n - k;
        }
    }
    *m = 0;
    return n;
}

/* Releases the first n bytes of mk[0, m) + c as content. */
static void release_marker(const char *mk, size_t m, char c, size_t n, struct pl_sbuf *to)
{
    if (n <= m) {
        pl_sbuf_append(to, mk, n);
    } else {
        pl_sbuf_append(to, mk, m);
        pl_sbuf_append(to, &c, 1);
    }
}

/* ---- values and objects ---------------------------------------------------------------- */

/* 1: c belongs to the value, 0: it does not (leading whitespace, or the byte ending a
 * literal: v->done is then set and the byte is the caller's). */
static int vscan_byte(struct vscan *v, char c)
{
    if (v->done)
        return 0;
    if (!v->started) {
        if (is_ws(c))
            return 0;
        v->started = true;
        v->kind = c;
        if (c == '"')
            v->in_str = true;
        else if (c == '{' || c == '[')
            v->depth = 1;
        return 1;
    }
    if (v->kind == '{' || v->kind == '[' || v->kind == '"') {
        if (v->in_str) {
            if (v->esc)
                v->esc = false;
            else if (c == '\\')
                v->esc = true;
            else if (c == '"') {
                v->in_str = false;
                if (v->kind == '"')
                    v->done = true;
            }
        } else if (c == '"') {
            v->in_str = true;
        } else if (c == '{' || c == '[') {
            v->depth++;
        } else if ((c == '}' || c == ']') && --v->depth == 0) {
            v->done = true;
        }
        return 1;
    }
    if (is_ws(c) || c == ',' || c == '}' || c == ']' || c == '[') {
        v->done = true;
        return 0;
    }
    return 1;
}

static size_t skip_spaces(const char *s, size_t n, size_t i)
{
    while (i < n && is_ws(s[i]))
        i++;
    return i;
}

/* The end (past the closing quote) of the JSON string starting at s[i], or 0. */
static size_t string_end(const char *s, size_t n, size_t i)
{
    for (size_t j = i + 1; j < n; j++) {
        if (s[j] == '\\')
            j++;
        else if (s[j] == '"')
            return j + 1;
    }
    return 0;
}

/* A key at s[i]: HEAD_MATCH when it is one of keys (its end in *e), HEAD_MORE when it may
 * still become one. */
static int head_key(const char *s, size_t n, size_t i, const char *const *keys, size_t *e)
{
    if (s[i] != '"')
        return HEAD_FAIL;
    *e = string_end(s, n, i);
    if (!*e)
        return n - i > 16 ? HEAD_FAIL : HEAD_MORE;
    for (int k = 0; keys[k]; k++)
        if (*e - i == strlen(keys[k]) + 2 && !memcmp(s + i + 1, keys[k], *e - i - 2))
            return HEAD_MATCH;
    return HEAD_FAIL;
}

/* s[0, n) starts with '{': does it open {"name": "N", "arguments"|"parameters": V? */
static int head_scan(const char *s, size_t n, size_t *name_at, size_t *name_n, size_t *val_at)
{
    static const char *const name_key[] = {"name", NULL};
    static const char *const args_keys[] = {"arguments", "parameters", NULL};
    size_t i = skip_spaces(s, n, 1), e = 0;
    int r;
    if (i == n)
        return HEAD_MORE;
    if ((r = head_key(s, n, i, name_key, &e)) != HEAD_MATCH)
        return r;
    if ((i = skip_spaces(s, n, e)) == n)
        return HEAD_MORE;
    if (s[i] != ':')
        return HEAD_FAIL;
    if ((i = skip_spaces(s, n, i + 1)) == n)
        return HEAD_MORE;
    if (s[i] != '"')
        return HEAD_FAIL;
    if (!(e = string_end(s, n, i)))
        return n - i > 512 ? HEAD_FAIL : HEAD_MORE;
    *name_at = i;
    *name_n = e - i;
    if ((i = skip_spaces(s, n, e)) == n)
        return HEAD_MORE;
    if (s[i] != ',')
        return HEAD_FAIL;
    if ((i = skip_spaces(s, n, i + 1)) == n)
        return HEAD_MORE;
    if ((r = head_key(s, n, i, args_keys, &e)) != HEAD_MATCH)
        return r;
    if ((i = skip_spaces(s, n, e)) == n)
        return HEAD_MORE;
    if (s[i] != ':')
        return HEAD_FAIL;
    if ((i = skip_spaces(s, n, i + 1)) == n)
        return HEAD_MORE;
    *val_at = i;
    return HEAD_MATCH;
}

/* A function name: a JSON string of 1..255 bytes without NUL. */
static bool good_name(const json_t *v)
{
    return json_is_string(v) && json_string_length(v) > 0 && json_string_length(v) < 256 &&
           strlen(json_string_value(v)) == json_string_length(v);
}

/* The closed object in raw, not in head order: a call when it has a good name. */
static bool take_whole(struct pl_tool_parser *p, struct pl_tool_out *out)
{
    json_t *o = json_loadb(p->raw.data ? p->raw.data : "", p->raw.len, 0, NULL);
    json_t *name = json_object_get(o, "name");
    if (!json_is_object(o) || !good_name(name)) {
        json_decref(o);
        return false;
    }
    json_t *args = json_object_get(o, "arguments");
    if (!args)
        args = json_object_get(o, "parameters");
    char *text = args ? json_dumps(args, JSON_ENCODE_ANY | JSON_PRESERVE_ORDER) : NULL;
    begin_call(p, json_string_value(name), out);
    emit_args(p, text ? text : "{}", text ? strlen(text) : 2, out);
    free(text);
    json_decref(o);
    return true;
}

static void start_obj(struct pl_tool_parser *p, bool in_array)
{
    clear(&p->raw);
    pl_sbuf_append(&p->raw, "{", 1);
    pl_sbuf_append(&p->pending, "{", 1);
    p->obj_phase = OBJ_HEAD;
    p->depth = 1;
    p->in_str = p->esc = false;
    p->in_array = in_array;
    p->state = ST_OBJ;
}

/* The object's arguments value: bytes from the value's first one, through the scanner. */
static void args_bytes(struct pl_tool_parser *p, const char *s, size_t n, struct pl_tool_out *out)
{
    size_t from = 0;
    for (size_t i = 0; i < n && p->obj_phase == OBJ_ARGS; i++) {
        int part = vscan_byte(&p->v, s[i]);
        if (!part) {
            emit_args(p, s + from, i - from, out);
            from = i + 1;
        }
        if (p->v.done) {
            if (part)
                emit_args(p, s + from, i + 1 - from, out);
            from = n;
            p->obj_phase = OBJ_TAIL;
        }
    }
    if (from < n && p->obj_phase == OBJ_ARGS)
        emit_args(p, s + from, n - from, out);
}

static void obj_byte(struct pl_tool_parser *p, char c, struct pl_tool_out *out)
{
    pl_sbuf_append(&p->raw, &c, 1);
    if (p->obj_phase == OBJ_HEAD || p->obj_phase == OBJ_WHOLE)
        pl_sbuf_append(&p->pending, &c, 1);
    if (p->in_str) {
        if (p->esc)
            p->esc = false;
        else if (c == '\\')
            p->esc = true;
        else if (c == '"')
            p->in_str = false;
    } else if (c == '"') {
        p->in_str = true;
    } else if (c == '{' || c == '[') {
        p->depth++;
    } else if (c == '}' || c == ']') {
        p->depth--;
    }
    if (p->obj_phase == OBJ_HEAD) {
        size_t name_at = 0, name_n = 0, val_at = 0;
        int r = head_scan(p->raw.data, p->raw.len, &name_at, &name_n, &val_at);
        json_t *name = NULL;
        if (r == HEAD_MATCH) {
            name = json_loadb(p->raw.data + name_at, name_n, JSON_DECODE_ANY, NULL);
            if (!good_name(name))
                r = HEAD_FAIL;
        }
        if (r == HEAD_MATCH) {
            begin_call(p, json_string_value(name), out);
            memset(&p->v, 0, sizeof(p->v));
            p->obj_phase = OBJ_ARGS;
            args_bytes(p, p->raw.data + val_at, p->raw.len - val_at, out);
        } else if (r == HEAD_FAIL) {
            p->obj_phase = OBJ_WHOLE;
        }
        json_decref(name);
    } else if (p->obj_phase == OBJ_ARGS) {
        args_bytes(p, &c, 1, out);
    }
    if (p->depth > 0)
        return;
    /* the object closed */
    if (p->obj_phase == OBJ_HEAD || p->obj_phase == OBJ_WHOLE) {
        if (!take_whole(p, out)) {
            fail(p, out);
            return;
        }
    }
    clear(&p->pending);
    p->n_matched = 0;
    p->state = after_call_state(p);
    p->skip_ws = true;
}

/* ---- the states ------------------------------------------------------------------------ */

/* One byte in the current state: false when the state did not take it (the next state
 * gets it). */
static bool step(struct pl_tool_parser *p, char c, struct pl_tool_out *out)
{
    if (p->skip_ws && (p->state == ST_TEXT || p->state == ST_FINAL)) {
        if (is_ws(c))
            return true;
        p->skip_ws = false;
    }
    switch (p->state) {
    case ST_TEXT: {
        size_t m = p->n_matched, n = marker_step(p->marker, &p->n_matched, c);
        if (n)
            release_marker(p->marker, m, c, n, &out->content);
        if (p->marker[p->n_matched] == '\0') {
            clear(&p->pending);
            pl_sbuf_puts(&p->pending, p->marker);
            p->n_matched = 0;
            p->state = ST_OPEN;
        }
        return true;
    }
    case ST_FINAL:
        pl_sbuf_append(&out->content, &c, 1);
        return true;
    case ST_LEAD:
        if (is_ws(c)) {
            pl_sbuf_append(&p->pending, &c, 1);
            return true;
        }
        if (c == '{') {
            start_obj(p, false);
            return true;
        }
        if (c == '[' && p->kind == PL_TOOL_PARSER_JSON_ARRAY) {
            pl_sbuf_append(&p->pending, &c, 1);
            p->state = ST_AELEM;
            return true;
        }
        if (c == '<' && p->kind == PL_TOOL_PARSER_LLAMA3_JSON) {
            pl_sbuf_append(&p->pending, &c, 1);
            p->n_matched = 1;
            p->state = ST_TAG;
            return true;
        }
        fail(p, out);
        return false;
    case ST_TAG:
        if (PYTHON_TAG[p->n_matched] != c) {
            fail(p, out);
            return false;
        }
        pl_sbuf_append(&p->pending, &c, 1);
        if (PYTHON_TAG[++p->n_matched] == '\0') {
            p->n_matched = 0;
            p->state = ST_OPEN;
        }
        return true;
    case ST_OPEN:
        if (is_ws(c)) {
            pl_sbuf_append(&p->pending, &c, 1);
            return true;
        }
        if (c == '{') {
            start_obj(p, false);
            return true;
        }
        if (p->kind == PL_TOOL_PARSER_MISTRAL) {
            if (c == '[') {
                pl_sbuf_append(&p->pending, &c, 1);
                p->state = ST_AELEM;
                return true;
            }
            clear(&p->name);
            p->state = ST_MNAME;
            return false;
        }
        fail(p, out);
        return false;
    case ST_OBJ:
        obj_byte(p, c, out);
        return true;
    case ST_CLOSE: {
        marker_step(HERMES_CLOSE, &p->n_matched, c);
        if (HERMES_CLOSE[p->n_matched] == '\0') {
            p->n_matched = 0;
            p->state = ST_TEXT;
            p->skip_ws = true;
        }
        return true;
    }
    case ST_LNEXT:
        if (is_ws(c))
            return true;
        if (c == ';') {
            pl_sbuf_append(&p->pending, &c, 1);
            p->state = ST_OPEN;
            return true;
        }
        if (c == '{') {
            start_obj(p, false);
            return true;
        }
        p->state = ST_FINAL;
        return false;
    case ST_AELEM:
        if (is_ws(c)) {
            pl_sbuf_append(&p->pending, &c, 1);
            return true;
        }
        if (c == '{') {
            start_obj(p, true);
            return true;
        }
        fail(p, out);
        return false;
    case ST_ANEXT:
        if (is_ws(c))
            return true;
        if (c == ',') {
            pl_sbuf_append(&p->pending, &c, 1);
            p->state = ST_AELEM;
            return true;
        }
        p->in_array = false;
        p->state = content_state(p);
        p->skip_ws = true;
        return c != ']' ? false : true;
    case ST_MNAME:
    case ST_MCALLID: {
        static const char ARGS[] = "[ARGS]", CALL_ID[] = "[CALL_ID]";
        pl_sbuf_append(&p->pending, &c, 1);
        pl_sbuf_append(&p->name, &c, 1);
        size_t n = p->name.len;
        const char *s = p->name.data;
        bool args = n >= 6 && !memcmp(s + n - 6, ARGS, 6);
        bool id = p->state == ST_MNAME && n >= 9 && !memcmp(s + n - 9, CALL_ID, 9);
        if (n > 320) {
            fail(p, out);
            return true;
        }
        if (!args && !id)
            return true;
        if (p->state == ST_MCALLID) { /* name, '\x01', the id, [ARGS]: the call opens */
            char *sep = strchr(p->name.data, '\x01');
            if (sep)
                *sep = '\0';
            begin_call(p, p->name.data, out);
            memset(&p->v, 0, sizeof(p->v));
            p->state = ST_MARGS;
            return true;
        }
        size_t nn = n - (args ? 6 : 9);
        bool good = nn > 0 && nn < 256;
        for (size_t i = 0; i < nn && good; i++)
            good = (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                   (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-' || s[i] == '.';
        if (!good) {
            fail(p, out);
            return true;
        }
        char name[256];
        memcpy(name, s, nn);
        name[nn] = '\0';
        if (args) {
            begin_call(p, name, out);
            memset(&p->v, 0, sizeof(p->v));
            p->state = ST_MARGS;
        } else {
            /* the call opens at [ARGS]: until then a failure gives the bytes back */
            clear(&p->name);
            pl_sbuf_puts(&p->name, name);
            pl_sbuf_puts(&p->name, "\x01");
            p->state = ST_MCALLID;
        }
        return true;
    }
    case ST_MARGS: {
        int part = vscan_byte(&p->v, c);
        if (part)
            emit_args(p, &c, 1, out);
        if (p->v.done) {
            p->state = ST_TEXT;
            p->skip_ws = true;
            return part == 1;
        }
        return true;
    }
    case ST_NAMED:
        if (p->n_calls == 0 && !p->muted)
            begin_call(p, p->named, out);
        emit_args(p, &c, 1, out);
        return true;
    default:
        return true;
    }
}

void pl_tool_parser_feed(struct pl_tool_parser *p, const char *text, size_t len,
                         struct pl_tool_out *out)
{
    if (!p || p->state == ST_DONE)
        return;
    for (size_t i = 0; i < len; i++) {
        /* a byte passes through at most a few states before one takes it */
        for (int k = 0; k < 8 && !step(p, text[i], out); k++)
            ;
    }
}

void pl_tool_parser_finish(struct pl_tool_parser *p, struct pl_tool_out *out)
{
    if (!p || p->state == ST_DONE)
        return;
    switch (p->state) {
    case ST_TEXT:
        pl_sbuf_append(&out->content, p->marker, p->n_matched);
        break;
    case ST_OBJ:
        if (p->obj_phase == OBJ_HEAD || p->obj_phase == OBJ_WHOLE)
            fail(p, out);
        break;
    case ST_LEAD:
    case ST_TAG:
    case ST_OPEN:
    case ST_AELEM:
    case ST_MNAME:
    case ST_MCALLID:
        fail(p, out);
        break;
    case ST_NAMED:
        if (p->n_calls == 0)
            begin_call(p, p->named, out);
        break;
    default:
        break;
    }
    p->state = ST_DONE;
}
