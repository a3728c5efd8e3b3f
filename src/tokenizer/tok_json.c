/*
 * tok_json.c -- a small, fast JSON reader for tokenizer files.
 *
 * Owns: struct tok_json_doc, an arena holding a read-only DOM. Why not
 * jansson: a 33 MB tokenizer.json (Gemma 3: 262k vocab entries, 514k merges)
 * takes jansson ~1.5 s because every value is a separately allocated,
 * reference-counted object and every object a hash table; here values are
 * plain structs carved out of big blocks and objects are member arrays, which
 * loads the same file several times faster.
 * Strings are decoded in place in the caller's buffer (no copies: the page
 * faults of copying tens of MB dominated the load time), so the text must be
 * writable and outlive the doc.
 * Invariants: strict RFC 8259 syntax (one value, optional surrounding
 * whitespace); strings are decoded (escapes, surrogate pairs) and must be
 * valid UTF-8; nesting is limited to 512 levels. Errors say
 * "line L, column C: what".
 */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TJ_MAX_DEPTH 512

struct tj_block {
    struct tj_block *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

struct tok_json_doc {
    struct tj_block *blocks;
    struct tok_json root;
};

struct tj_parser {
    char *s;
    size_t n, i;
    struct tok_json_doc *doc;
    struct tok_json *stack; /* children of the open containers */
    size_t n_stack, cap_stack;
    struct pl_err *err;
    pl_status status;
};

static void *tj_alloc(struct tok_json_doc *d, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct tj_block *b = d->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (4u << 20) ? n : (4u << 20);
        b = malloc(sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = d->blocks;
        d->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    return p;
}

static pl_status tj_fail(struct tj_parser *p, pl_status st, const char *what)
{
    if (p->status != PL_STATUS_OK)
        return p->status;
    size_t line = 1, col = 1;
    for (size_t k = 0; k < p->i && k < p->n; k++) {
        if (p->s[k] == '\n') {
            line++;
            col = 1;
        } else
            col++;
    }
    p->status = st;
    return pl_err_set(p->err, st, "line %zu, column %zu: %s", line, col, what);
}

static void tj_ws(struct tj_parser *p)
{
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->i++;
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static bool tj_hex4(struct tj_parser *p, int32_t *out)
{
    if (p->n - p->i < 4)
        return false;
    int32_t v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(p->s[p->i + k]);
        if (h < 0)
            return false;
        v = v * 16 + h;
    }
    p->i += 4;
    *out = v;
    return true;
}

/* Parses the string at p->i (which is at '"') in place: escapes are decoded
 * over the raw text (never longer) and a NUL replaces the closing quote. */
static pl_status tj_string(struct tj_parser *p, const char **out, uint32_t *out_len)
{
    char *s = p->s;
    p->i++;
    size_t start = p->i, w = p->i;
    for (;;) {
        /* Copy a run of plain bytes. */
        size_t run = p->i;
        while (p->i < p->n) {
            unsigned char c = (unsigned char)s[p->i];
            if (c == '"' || c == '\\' || c < 0x20)
                break;
            p->i++;
        }
        if (w != run)
            memmove(s + w, s + run, p->i - run);
        w += p->i - run;
        if (p->i >= p->n)
            return tj_fail(p, PL_STATUS_FORMAT, "unterminated string");
        unsigned char c = (unsigned char)s[p->i];
        if (c == '"')
            break;
        if (c < 0x20)
            return tj_fail(p, PL_STATUS_FORMAT, "control character in string");
        p->i++;
        if (p->i >= p->n)
            return tj_fail(p, PL_STATUS_FORMAT, "unterminated string");
        char e = s[p->i++];
        char ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            int32_t cp;
            if (!tj_hex4(p, &cp))
                return tj_fail(p, PL_STATUS_FORMAT, "bad \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                int32_t lo;
                if (p->n - p->i < 6 || s[p->i] != '\\' || s[p->i + 1] != 'u')
                    return tj_fail(p, PL_STATUS_FORMAT, "unpaired surrogate in \\u escape");
                p->i += 2;
                if (!tj_hex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF)
                    return tj_fail(p, PL_STATUS_FORMAT, "unpaired surrogate in \\u escape");
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF)
                return tj_fail(p, PL_STATUS_FORMAT, "unpaired surrogate in \\u escape");
            /* 6 (or 12) escape bytes always hold the 1..4 UTF-8 bytes. */
            w += tok_utf8_encode(cp, s + w);
            continue;
        }
        default:
            p->i--;
            return tj_fail(p, PL_STATUS_FORMAT, "bad escape in string");
        }
        s[w++] = ch;
    }
    size_t len = w - start;
    if (len > UINT32_MAX - 1)
        return tj_fail(p, PL_STATUS_LIMIT, "string too long");
    if (!tok_utf8_is_valid(s + start, len))
        return tj_fail(p, PL_STATUS_FORMAT, "invalid UTF-8 in string");
    s[w] = 0; /* w <= p->i, the closing quote */
    p->i++;
    *out = s + start;
    *out_len = (uint32_t)len;
    return PL_STATUS_OK;
}

static pl_status tj_number(struct tj_parser *p, double *out)
{
    size_t st = p->i;
    if (p->i < p->n && p->s[p->i] == '-')
        p->i++;
    if (p->i >= p->n)
        return tj_fail(p, PL_STATUS_FORMAT, "bad number");
    if (p->s[p->i] == '0')
        p->i++;
    else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    } else
        return tj_fail(p, PL_STATUS_FORMAT, "bad number");
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (d == p->i)
            return tj_fail(p, PL_STATUS_FORMAT, "bad number");
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        size_t d = p->i;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
        if (d == p->i)
            return tj_fail(p, PL_STATUS_FORMAT, "bad number");
    }
    char tmp[64];
    size_t len = p->i - st;
    if (len >= sizeof(tmp)) {
        /* Very long numbers are legal JSON; only their magnitude matters here. */
        *out = p->s[st] == '-' ? -1e300 : 1e300;
        return PL_STATUS_OK;
    }
    memcpy(tmp, p->s + st, len);
    tmp[len] = 0;
    *out = strtod(tmp, NULL);
    return PL_STATUS_OK;
}

static bool tj_push(struct tj_parser *p, const struct tok_json *v)
{
    if (p->n_stack == p->cap_stack) {
        size_t cap = p->cap_stack ? p->cap_stack * 2 : 1024;
        struct tok_json *s = realloc(p->stack, cap * sizeof(*s));
        if (!s)
            return false;
        p->stack = s;
        p->cap_stack = cap;
    }
    p->stack[p->n_stack++] = *v;
    return true;
}

static pl_status tj_value(struct tj_parser *p, struct tok_json *out, int depth);

static pl_status tj_container(struct tj_parser *p, struct tok_json *out, int depth, bool is_obj)
{
    if (depth >= TJ_MAX_DEPTH)
        return tj_fail(p, PL_STATUS_LIMIT, "nesting too deep");
    char close = is_obj ? '}' : ']';
    size_t base = p->n_stack;
    p->i++;
    tj_ws(p);
    uint32_t count = 0;
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
    } else {
        for (;;) {
            struct tok_json v;
            if (is_obj) {
                tj_ws(p);
                if (p->i >= p->n || p->s[p->i] != '"')
                    return tj_fail(p, PL_STATUS_FORMAT, "expected a string key");
                v.type = TJ_STRING;
                if (tj_string(p, &v.u.str, &v.n) != PL_STATUS_OK)
                    return p->status;
                if (!tj_push(p, &v))
                    return tj_fail(p, PL_STATUS_NO_MEMORY, "out of memory");
                tj_ws(p);
                if (p->i >= p->n || p->s[p->i] != ':')
                    return tj_fail(p, PL_STATUS_FORMAT, "expected ':'");
                p->i++;
            }
            if (tj_value(p, &v, depth + 1) != PL_STATUS_OK)
                return p->status;
            if (!tj_push(p, &v))
                return tj_fail(p, PL_STATUS_NO_MEMORY, "out of memory");
            if (count == UINT32_MAX - 1)
                return tj_fail(p, PL_STATUS_LIMIT, "too many items");
            count++;
            tj_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == close) {
                p->i++;
                break;
            }
            return tj_fail(p, PL_STATUS_FORMAT, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    size_t n_items = p->n_stack - base;
    out->type = is_obj ? TJ_OBJECT : TJ_ARRAY;
    out->n = count;
    out->u.items = NULL;
    if (n_items) {
        out->u.items = tj_alloc(p->doc, n_items * sizeof(struct tok_json));
        if (!out->u.items)
            return tj_fail(p, PL_STATUS_NO_MEMORY, "out of memory");
        memcpy(out->u.items, p->stack + base, n_items * sizeof(struct tok_json));
    }
    p->n_stack = base;
    return PL_STATUS_OK;
}

static bool tj_lit(struct tj_parser *p, const char *w)
{
    size_t l = strlen(w);
    if (p->n - p->i < l || memcmp(p->s + p->i, w, l))
        return false;
    p->i += l;
    return true;
}

static pl_status tj_value(struct tj_parser *p, struct tok_json *out, int depth)
{
    tj_ws(p);
    if (p->i >= p->n)
        return tj_fail(p, PL_STATUS_FORMAT, "unexpected end of input");
    memset(out, 0, sizeof(*out));
    char c = p->s[p->i];
    switch (c) {
    case '{':
        return tj_container(p, out, depth, true);
    case '[':
        return tj_container(p, out, depth, false);
    case '"':
        out->type = TJ_STRING;
        return tj_string(p, &out->u.str, &out->n);
    case 't':
        if (!tj_lit(p, "true"))
            break;
        out->type = TJ_TRUE;
        return PL_STATUS_OK;
    case 'f':
        if (!tj_lit(p, "false"))
            break;
        out->type = TJ_FALSE;
        return PL_STATUS_OK;
    case 'n':
        if (!tj_lit(p, "null"))
            break;
        out->type = TJ_NULL;
        return PL_STATUS_OK;
    default:
        if (c == '-' || (c >= '0' && c <= '9')) {
            out->type = TJ_NUMBER;
            return tj_number(p, &out->u.num);
        }
        break;
    }
    return tj_fail(p, PL_STATUS_FORMAT, "unexpected character");
}

pl_status tok_json_parse(char *text, size_t len, struct tok_json_doc **out, struct pl_err *err)
{
    *out = NULL;
    struct tok_json_doc *d = calloc(1, sizeof(*d));
    if (!d)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    struct tj_parser p = {.s = text, .n = len, .doc = d, .err = err};
    if (tj_value(&p, &d->root, 0) == PL_STATUS_OK) {
        tj_ws(&p);
        if (p.i != p.n)
            tj_fail(&p, PL_STATUS_FORMAT, "trailing characters after the JSON value");
    }
    free(p.stack);
    if (p.status != PL_STATUS_OK) {
        tok_json_free(d);
        return p.status;
    }
    *out = d;
    return PL_STATUS_OK;
}

const struct tok_json *tok_json_root(const struct tok_json_doc *d) { return &d->root; }

void tok_json_free(struct tok_json_doc *d)
{
    if (!d)
        return;
    struct tj_block *b = d->blocks;
    while (b) {
        struct tj_block *next = b->next;
        free(b);
        b = next;
    }
    free(d);
}

const struct tok_json *tok_json_get(const struct tok_json *obj, const char *key)
{
    if (!obj || obj->type != TJ_OBJECT)
        return NULL;
    size_t kl = strlen(key);
    for (uint32_t i = 0; i < obj->n; i++) {
        const struct tok_json *k = &obj->u.items[2 * i];
        if (k->n == kl && !memcmp(k->u.str, key, kl))
            return &obj->u.items[2 * i + 1];
    }
    return NULL;
}

bool tok_json_is_null(const struct tok_json *v) { return !v || v->type == TJ_NULL; }
