/*
 * json_schema.c -- JSON Schema -> GBNF rules (the one grammar form).
 *
 * Owns: the schema translator. Every schema node becomes a rule
 * "<prefix>s<N>"; shared primitives (whitespace, string, number, any value)
 * are emitted once. Coverage:
 *   - type (one or a list), properties, required, additionalProperties (absent
 *     means false, as in OpenAI's strict mode and xgrammar's default; true or a
 *     schema allows extra keys after the listed ones), unevaluatedProperties false;
 *   - enum, const (the values' compact JSON text);
 *   - items, prefixItems, minItems, maxItems;
 *   - anyOf, oneOf (as anyOf: exclusivity is not enforced), allOf with one entry;
 *   - $ref into the same document ("#", "#/$defs/x", any "#/..." pointer),
 *     recursive references included;
 *   - string: minLength, maxLength, pattern (matched against the whole decoded
 *     string), format date-time, date, time, uuid, email, ipv4, hostname, uri;
 *   - integer: minimum, maximum, exclusiveMinimum, exclusiveMaximum (digit
 *     ranges); number: integer-valued minimum >= 0 and maximum;
 *   - annotations (title, description, default, examples, $schema, $id, ...)
 *     are ignored. Any other keyword is refused naming it and where it is.
 * Properties are generated in the schema's order; numbers have at most 16
 * integer digits, 16 fraction digits and a 2-digit exponent (1e99 fits a double), so that a
 * constrained output cannot run on forever inside one number.
 */
#include "grammar/grammar_internal.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INT_DIGITS 16

struct refmemo {
    const json_t *node;
    int id;
};

struct js {
    struct gr_buf out;
    const char *px; /* rule prefix */
    const json_t *root;
    int n_rules;
    struct refmemo *memo;
    int n_memo, cap_memo;
    bool have_ws, have_string, have_char, have_number, have_integer, have_value;
    const char *ws_pattern;
    struct pl_err *err;
    pl_status st;
    int depth;
    char path[400];
};

static bool jfail(struct js *j, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool jfail(struct js *j, const char *fmt, ...)
{
    if (j->st == PL_STATUS_OK) {
        char msg[PL_ERR_MSG_MAX - 64];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        j->st = pl_err_set(j->err, PL_STATUS_INVALID_ARGUMENT, "json schema at '%s': %s",
                           j->path[0] ? j->path : "/", msg);
    }
    return false;
}

/* ---- primitives ---- */

static void need_ws(struct js *j)
{
    if (j->have_ws)
        return;
    j->have_ws = true;
    gr_buf_printf(&j->out, "%sws ::= ", j->px);
    if (j->ws_pattern) {
        pl_status st = gr_regex_expr(j->ws_pattern, false, &j->out, j->err);
        if (st != PL_STATUS_OK && j->st == PL_STATUS_OK) {
            j->st = st;
            pl_err_prefix(j->err, "whitespace pattern");
        }
    } else {
        gr_buf_puts(&j->out, "\" \"?");
    }
    gr_buf_puts(&j->out, "\n");
}

static void need_char(struct js *j)
{
    if (j->have_char)
        return;
    j->have_char = true;
    /* escapes of code points only: \uXXXX outside the surrogates, or a surrogate pair */
    const char *p = j->px;
    gr_buf_printf(&j->out, "%shex ::= [0-9a-fA-F]\n", p);
    gr_buf_printf(&j->out,
                  "%schar ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" "
                  "([0-9a-cA-CefEF] %shex %shex %shex | [dD] [0-7] %shex %shex | [dD] [89abAB] "
                  "%shex %shex \"\\\\u\" [dD] [c-fC-F] %shex %shex))\n",
                  p, p, p, p, p, p, p, p, p, p);
}

static void need_string(struct js *j)
{
    if (j->have_string)
        return;
    j->have_string = true;
    need_char(j);
    gr_buf_printf(&j->out, "%sstring ::= \"\\\"\" %schar* \"\\\"\"\n", j->px, j->px);
}

static void need_integer(struct js *j)
{
    if (j->have_integer)
        return;
    j->have_integer = true;
    gr_buf_printf(&j->out, "%sinteger ::= \"-\"? (\"0\" | [1-9] [0-9]{0,%d})\n", j->px,
                  MAX_INT_DIGITS - 1);
}

static void need_number(struct js *j)
{
    if (j->have_number)
        return;
    j->have_number = true;
    need_integer(j);
    gr_buf_printf(&j->out,
                  "%snumber ::= %sinteger (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,2})?\n",
                  j->px, j->px);
}

static void need_value(struct js *j)
{
    if (j->have_value)
        return;
    j->have_value = true;
    need_ws(j);
    need_string(j);
    need_number(j);
    const char *p = j->px;
    gr_buf_printf(&j->out,
                  "%svalue ::= %sobject | %sarray | %sstring | %snumber | \"true\" | \"false\" | "
                  "\"null\"\n",
                  p, p, p, p, p);
    gr_buf_printf(&j->out,
                  "%sobject ::= \"{\" %sws (%sstring %sws \":\" %sws %svalue (%sws \",\" %sws "
                  "%sstring %sws \":\" %sws %svalue)*)? %sws \"}\"\n",
                  p, p, p, p, p, p, p, p, p, p, p, p, p);
    gr_buf_printf(&j->out,
                  "%sarray ::= \"[\" %sws (%svalue (%sws \",\" %sws %svalue)*)? %sws \"]\"\n", p,
                  p, p, p, p, p, p);
}

/* ---- helpers ---- */

static int new_id(struct js *j)
{
    return j->n_rules++;
}

static void rule_name(struct js *j, int id, char *name, size_t cap)
{
    snprintf(name, cap, "%ss%d", j->px, id);
}

/* Appends the JSON text of v as a GBNF literal ("..."). */
static bool literal_json(struct js *j, const json_t *v, struct gr_buf *b)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!s) {
        j->st = pl_err_set(j->err, PL_STATUS_NO_MEMORY, "json schema: out of memory");
        return false;
    }
    gr_buf_puts(b, "\"");
    gr_buf_literal(b, s, strlen(s));
    gr_buf_puts(b, "\"");
    free(s);
    return true;
}

static const char *const annotations[] = {
    "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated",
    "readOnly", "writeOnly", "$defs", "definitions", "contentMediaType", "contentEncoding",
    "strict", "$anchor", "discriminator", "example", NULL};

static bool is_annotation(const char *k)
{
    for (int i = 0; annotations[i]; i++)
        if (!strcmp(k, annotations[i]))
            return true;
    return false;
}

static bool visit(struct js *j, const json_t *s, int id);

/* The rule id of schema s (visited on first use; $ref targets memoized). */
static int sub(struct js *j, const json_t *s, const char *seg)
{
    size_t plen = strlen(j->path);
    snprintf(j->path + plen, sizeof(j->path) - plen, "%s", seg);
    int id = new_id(j);
    bool ok = visit(j, s, id);
    j->path[plen] = 0;
    return ok ? id : -1;
}

static const json_t *resolve_ref(struct js *j, const char *ref)
{
    if (ref[0] != '#')
        return jfail(j, "$ref '%.200s': only references into the same document (#...) are "
                        "supported", ref),
               NULL;
    const json_t *cur = j->root;
    const char *p = ref + 1;
    if (*p && *p != '/')
        return jfail(j, "$ref '%.200s': anchors are not supported", ref), NULL;
    while (*p == '/') {
        p++;
        char seg[256];
        size_t n = 0;
        while (*p && *p != '/' && n + 1 < sizeof(seg)) {
            if (p[0] == '~' && p[1] == '0')
                seg[n++] = '~', p += 2;
            else if (p[0] == '~' && p[1] == '1')
                seg[n++] = '/', p += 2;
            else
                seg[n++] = *p++;
        }
        seg[n] = 0;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur)) {
            char *end;
            long k = strtol(seg, &end, 10);
            cur = *end || k < 0 ? NULL : json_array_get(cur, (size_t)k);
        } else {
            cur = NULL;
        }
        if (!cur)
            return jfail(j, "$ref '%.200s' does not resolve", ref), NULL;
    }
    return cur;
}

static int ref_rule(struct js *j, const json_t *target)
{
    for (int i = 0; i < j->n_memo; i++)
        if (j->memo[i].node == target)
            return j->memo[i].id;
    if (j->n_memo == j->cap_memo) {
        int cap = j->cap_memo ? j->cap_memo * 2 : 16;
        struct refmemo *m = realloc(j->memo, (size_t)cap * sizeof(*m));
        if (!m) {
            j->st = pl_err_set(j->err, PL_STATUS_NO_MEMORY, "json schema: out of memory");
            return -1;
        }
        j->memo = m;
        j->cap_memo = cap;
    }
    int id = new_id(j);
    j->memo[j->n_memo].node = target;
    j->memo[j->n_memo].id = id;
    j->n_memo++;
    size_t plen = strlen(j->path);
    snprintf(j->path + plen, sizeof(j->path) - plen, "/$ref");
    bool ok = visit(j, target, id);
    j->path[plen] = 0;
    return ok ? id : -1;
}

static void emit_rule(struct js *j, int id, const struct gr_buf *body)
{
    char name[96];
    rule_name(j, id, name, sizeof(name));
    gr_buf_printf(&j->out, "%s ::= ", name);
    gr_buf_add(&j->out, body->p ? body->p : "\"\"", body->p ? body->n : 2);
    gr_buf_puts(&j->out, "\n");
}

static void ref_text(struct js *j, int id, struct gr_buf *b)
{
    char name[96];
    rule_name(j, id, name, sizeof(name));
    gr_buf_puts(b, name);
}

static bool get_count(struct js *j, const json_t *s, const char *key, long *out, long dflt)
{
    const json_t *v = json_object_get(s, key);
    *out = dflt;
    if (!v)
        return true;
    if (!json_is_number(v) || json_number_value(v) < 0 ||
        json_number_value(v) != floor(json_number_value(v)))
        return jfail(j, "%s must be a non-negative integer", key);
    double d = json_number_value(v);
    *out = d > (double)GR_MAX_REPEAT ? GR_MAX_REPEAT + 1 : (long)d;
    return true;
}

/* ---- integers ---- */

/* Same-length decimal strings lo <= hi (leading zeros allowed): GBNF for [lo, hi]. */
static void digits_same_len(struct gr_buf *b, const char *lo, const char *hi, int n)
{
    if (n == 0) {
        gr_buf_puts(b, "\"\"");
        return;
    }
    if (n == 1) {
        gr_buf_printf(b, "[%c-%c]", lo[0], hi[0]);
        return;
    }
    if (lo[0] == hi[0]) {
        gr_buf_printf(b, "\"%c\" (", lo[0]);
        digits_same_len(b, lo + 1, hi + 1, n - 1);
        gr_buf_puts(b, ")");
        return;
    }
    char nines[32], zeros[32];
    memset(nines, '9', (size_t)n);
    memset(zeros, '0', (size_t)n);
    bool lo_zero = !memcmp(lo + 1, zeros, (size_t)n - 1);
    bool hi_nine = !memcmp(hi + 1, nines, (size_t)n - 1);
    char a = lo_zero ? lo[0] : (char)(lo[0] + 1);
    char z = hi_nine ? hi[0] : (char)(hi[0] - 1);
    gr_buf_puts(b, "(");
    bool first = true;
    if (!lo_zero) {
        gr_buf_printf(b, "\"%c\" (", lo[0]);
        digits_same_len(b, lo + 1, nines, n - 1);
        gr_buf_puts(b, ")");
        first = false;
    }
    if (a <= z) {
        gr_buf_printf(b, "%s[%c-%c] [0-9]{%d}", first ? "" : " | ", a, z, n - 1);
        first = false;
    }
    if (!hi_nine) {
        gr_buf_printf(b, "%s\"%c\" (", first ? "" : " | ", hi[0]);
        digits_same_len(b, zeros, hi + 1, n - 1);
        gr_buf_puts(b, ")");
    }
    gr_buf_puts(b, ")");
}

static int ndigits(long long v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

/* Non-negative integers in [lo, hi] without leading zeros; hi < 0: unbounded. */
static void uint_range(struct gr_buf *b, long long lo, long long hi)
{
    static const long long p10[] = {1LL, 10LL, 100LL, 1000LL, 10000LL, 100000LL, 1000000LL,
                                    10000000LL, 100000000LL, 1000000000LL, 10000000000LL,
                                    100000000000LL, 1000000000000LL, 10000000000000LL,
                                    100000000000000LL, 1000000000000000LL, 10000000000000000LL};
    int dlo = ndigits(lo), dhi = hi < 0 ? MAX_INT_DIGITS : ndigits(hi);
    gr_buf_puts(b, "(");
    bool first = true;
    for (int d = dlo; d <= dhi; d++) {
        long long a = d == 1 ? 0 : p10[d - 1];
        long long z = p10[d] - 1;
        if (a < lo)
            a = lo;
        if (hi >= 0 && z > hi)
            z = hi;
        if (a > z)
            continue;
        char sa[32], sz[32];
        for (int i = d - 1; i >= 0; i--, a /= 10, z /= 10) {
            sa[i] = (char)('0' + a % 10);
            sz[i] = (char)('0' + z % 10);
        }
        if (!first)
            gr_buf_puts(b, " | ");
        first = false;
        digits_same_len(b, sa, sz, d);
    }
    if (first)
        gr_buf_puts(b, "[^\\x00-\\U0010FFFF]"); /* empty: cannot happen when lo <= hi */
    gr_buf_puts(b, ")");
}

static bool bound(struct js *j, const json_t *s, const char *key, bool *has, double *v)
{
    const json_t *x = json_object_get(s, key);
    *has = false;
    if (!x)
        return true;
    if (json_is_boolean(x))
        return true; /* draft 4 exclusive flags: read by the caller */
    if (!json_is_number(x))
        return jfail(j, "%s must be a number", key);
    *has = true;
    *v = json_number_value(x);
    return true;
}

/* Reads minimum / maximum with exclusive forms into inclusive integer bounds. */
static bool int_bounds(struct js *j, const json_t *s, bool *has_lo, long long *lo, bool *has_hi,
                       long long *hi)
{
    bool h1, h2, h3, h4;
    double mn = 0, mx = 0, xmn = 0, xmx = 0;
    if (!bound(j, s, "minimum", &h1, &mn) || !bound(j, s, "maximum", &h2, &mx) ||
        !bound(j, s, "exclusiveMinimum", &h3, &xmn) || !bound(j, s, "exclusiveMaximum", &h4, &xmx))
        return false;
    bool d4min = json_is_true(json_object_get(s, "exclusiveMinimum"));
    bool d4max = json_is_true(json_object_get(s, "exclusiveMaximum"));
    const double LIM = 1e15;
    *has_lo = false;
    *has_hi = false;
    if (h1) {
        double v = d4min ? floor(mn) + 1 : ceil(mn);
        *lo = (long long)fmax(fmin(v, LIM), -LIM);
        *has_lo = true;
    }
    if (h3) {
        long long v = (long long)fmax(fmin(floor(xmn) + 1, LIM), -LIM);
        if (!*has_lo || v > *lo)
            *lo = v;
        *has_lo = true;
    }
    if (h2) {
        double v = d4max ? ceil(mx) - 1 : floor(mx);
        *hi = (long long)fmax(fmin(v, LIM), -LIM);
        *has_hi = true;
    }
    if (h4) {
        long long v = (long long)fmax(fmin(ceil(xmx) - 1, LIM), -LIM);
        if (!*has_hi || v < *hi)
            *hi = v;
        *has_hi = true;
    }
    if (*has_lo && *has_hi && *lo > *hi)
        return jfail(j, "no integer lies between the minimum and the maximum");
    return true;
}

static bool integer_body(struct js *j, const json_t *s, struct gr_buf *b)
{
    bool hl, hh;
    long long lo = 0, hi = 0;
    if (!int_bounds(j, s, &hl, &lo, &hh, &hi))
        return false;
    if (json_object_get(s, "multipleOf"))
        return jfail(j, "multipleOf is not supported");
    if (!hl && !hh) {
        need_integer(j);
        gr_buf_printf(b, "%sinteger", j->px);
        return true;
    }
    gr_buf_puts(b, "(");
    bool first = true;
    /* negative part: -[max(1, -hi), -lo] */
    if (!hl || lo < 0) {
        long long nlo = hh && hi < 0 ? -hi : 1;
        long long nhi = hl ? -lo : -1;
        gr_buf_puts(b, "\"-\" ");
        uint_range(b, nlo, nhi);
        first = false;
    }
    if (!hh || hi >= 0) {
        long long plo = hl && lo > 0 ? lo : 0;
        long long phi = hh ? hi : -1;
        if (!first)
            gr_buf_puts(b, " | ");
        uint_range(b, plo, phi);
    }
    gr_buf_puts(b, ")");
    return true;
}

static bool number_body(struct js *j, const json_t *s, struct gr_buf *b)
{
    if (json_object_get(s, "multipleOf"))
        return jfail(j, "multipleOf is not supported");
    bool h1, h2, h3, h4;
    double mn = 0, mx = 0, t = 0;
    if (!bound(j, s, "minimum", &h1, &mn) || !bound(j, s, "maximum", &h2, &mx) ||
        !bound(j, s, "exclusiveMinimum", &h3, &t) || !bound(j, s, "exclusiveMaximum", &h4, &t))
        return false;
    if (h3 || h4 || json_is_boolean(json_object_get(s, "exclusiveMinimum")) ||
        json_is_boolean(json_object_get(s, "exclusiveMaximum")))
        return jfail(j, "exclusiveMinimum / exclusiveMaximum on a number (not an integer) are "
                        "not supported");
    need_number(j);
    if (!h1 && !h2) {
        gr_buf_printf(b, "%snumber", j->px);
        return true;
    }
    if (!h1 || mn < 0 || mn != floor(mn) || (h2 && (mx != floor(mx) || mx < mn)) || mn > 1e15 ||
        (h2 && mx > 1e15))
        return jfail(j, "number bounds are supported only as integer values with minimum >= 0 "
                        "(minimum %g%s)",
                     h1 ? mn : 0.0, h2 ? ", maximum given" : "");
    long long lo = (long long)mn;
    gr_buf_puts(b, "(");
    if (h2) {
        long long hi = (long long)mx;
        if (hi > lo) {
            uint_range(b, lo, hi - 1);
            gr_buf_puts(b, " (\".\" [0-9]{1,16})? | ");
        }
        gr_buf_printf(b, "\"%lld\" (\".\" \"0\"{1,16})?", hi);
    } else {
        uint_range(b, lo, -1);
        gr_buf_puts(b, " (\".\" [0-9]{1,16})?");
    }
    gr_buf_puts(b, ")");
    return true;
}

/* ---- strings ---- */

static const struct {
    const char *name, *re;
} formats[] = {
    {"date", "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"},
    {"time", "([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):"
             "[0-5][0-9])"},
    {"date-time", "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5]"
                  "[0-9]:[0-5][0-9](\\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"},
    {"uuid", "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"},
    {"email", "[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(\\.[A-Za-z0-9-]{1,63}){0,8}\\.[A-Za-z]"
              "{2,24}"},
    {"ipv4", "((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]"
             "[0-9]|[1-9]?[0-9])"},
    {"hostname", "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                 "[A-Za-z0-9])?){0,8}"},
    {"uri", "[A-Za-z][A-Za-z0-9+.-]{0,31}:[^ \\x00-\\x1F\"\\\\<>{}|^`]{1,2000}"},
};

static bool string_body(struct js *j, const json_t *s, struct gr_buf *b)
{
    const json_t *pat = json_object_get(s, "pattern");
    const json_t *fmt = json_object_get(s, "format");
    long mn, mx;
    if (!get_count(j, s, "minLength", &mn, 0) || !get_count(j, s, "maxLength", &mx, -1))
        return false;
    if (mx > GR_MAX_REPEAT || mn > GR_MAX_REPEAT)
        return jfail(j, "minLength / maxLength above %d are not supported", GR_MAX_REPEAT);
    if (mx >= 0 && mx < mn)
        return jfail(j, "maxLength is below minLength");
    bool has_len = json_object_get(s, "minLength") || json_object_get(s, "maxLength");
    const char *re = NULL;
    if (pat) {
        if (!json_is_string(pat))
            return jfail(j, "pattern must be a string");
        re = json_string_value(pat);
    }
    if (fmt) {
        if (!json_is_string(fmt))
            return jfail(j, "format must be a string");
        if (re)
            return jfail(j, "pattern together with format is not supported");
        size_t k;
        for (k = 0; k < sizeof(formats) / sizeof(formats[0]); k++)
            if (!strcmp(formats[k].name, json_string_value(fmt)))
                break;
        if (k == sizeof(formats) / sizeof(formats[0]))
            return jfail(j, "format '%.100s' is not supported", json_string_value(fmt));
        re = formats[k].re;
    }
    if (re && has_len)
        return jfail(j, "minLength / maxLength together with %s are not supported",
                     pat ? "pattern" : "format");
    gr_buf_puts(b, "\"\\\"\" ");
    if (re) {
        pl_status st = gr_regex_expr(re, true, b, j->err);
        if (st != PL_STATUS_OK) {
            if (j->st == PL_STATUS_OK) {
                j->st = st;
                pl_err_prefix(j->err, "json schema at '%s': pattern", j->path[0] ? j->path : "/");
            }
            return false;
        }
    } else {
        need_char(j);
        if (mx >= 0)
            gr_buf_printf(b, "%schar{%ld,%ld}", j->px, mn, mx);
        else if (mn > 0)
            gr_buf_printf(b, "%schar{%ld,}", j->px, mn);
        else
            gr_buf_printf(b, "%schar*", j->px);
    }
    gr_buf_puts(b, " \"\\\"\"");
    return true;
}

/* ---- objects and arrays ---- */

static bool object_body(struct js *j, const json_t *s, int id, struct gr_buf *b)
{
    const json_t *props = json_object_get(s, "properties");
    const json_t *req = json_object_get(s, "required");
    const json_t *addl = json_object_get(s, "additionalProperties");
    const json_t *uneval = json_object_get(s, "unevaluatedProperties");
    if (props && !json_is_object(props))
        return jfail(j, "properties must be an object");
    if (req && !json_is_array(req))
        return jfail(j, "required must be an array of strings");
    for (size_t i = 0; req && i < json_array_size(req); i++)
        if (!json_is_string(json_array_get(req, i)))
            return jfail(j, "required[%zu] must be a string", i);
    for (size_t i = 0; req && i < json_array_size(req); i++)
        if (!props || !json_object_get(props, json_string_value(json_array_get(req, i))))
            return jfail(j, "required property '%.100s' is not in properties",
                         json_string_value(json_array_get(req, i)));
    if (json_object_get(s, "patternProperties"))
        return jfail(j, "patternProperties is not supported");
    if (json_object_get(s, "propertyNames"))
        return jfail(j, "propertyNames is not supported");
    const json_t *minp = json_object_get(s, "minProperties");
    if (minp && !(json_is_integer(minp) && json_integer_value(minp) == 0))
        return jfail(j, "minProperties is not supported");
    if (json_object_get(s, "maxProperties"))
        return jfail(j, "maxProperties is not supported");
    if (uneval && !json_is_false(uneval))
        return jfail(j, "unevaluatedProperties other than false is not supported");
    int extra = -1; /* rule id of extra values; -2: any value */
    if (addl && !json_is_false(addl)) {
        if (json_is_true(addl)) {
            extra = -2;
        } else if (json_is_object(addl)) {
            extra = sub(j, addl, "/additionalProperties");
            if (extra < 0)
                return false;
        } else {
            return jfail(j, "additionalProperties must be a boolean or a schema");
        }
    }
    need_ws(j);
    size_t n = props ? json_object_size(props) : 0;
    int *vid = calloc(n ? n : 1, sizeof(int));
    const char **keys = calloc(n ? n : 1, sizeof(char *));
    bool *isreq = calloc(n ? n : 1, sizeof(bool));
    if (!vid || !keys || !isreq) {
        free(vid);
        free(keys);
        free(isreq);
        j->st = pl_err_set(j->err, PL_STATUS_NO_MEMORY, "json schema: out of memory");
        return false;
    }
    bool ok = true;
    size_t i = 0;
    const char *key;
    json_t *ps;
    json_object_foreach((json_t *)props, key, ps)
    {
        char seg[160];
        snprintf(seg, sizeof(seg), "/properties/%.120s", key);
        keys[i] = key;
        for (size_t r = 0; req && r < json_array_size(req); r++)
            if (!strcmp(json_string_value(json_array_get(req, r)), key))
                isreq[i] = true;
        vid[i] = sub(j, ps, seg);
        if (vid[i] < 0) {
            ok = false;
            break;
        }
        i++;
    }
    if (ok) {
        need_string(j);
        if (extra == -2)
            need_value(j);
        /* kv rules, then S_i / R_i (see the file comment of object rules below) */
        char base[96];
        rule_name(j, id, base, sizeof(base));
        const char *p = j->px;
        for (size_t k = 0; k < n; k++) {
            gr_buf_printf(&j->out, "%s-kv%zu ::= ", base, k);
            json_t *ks = json_string(keys[k]);
            ok = ks && literal_json(j, ks, &j->out);
            json_decref(ks);
            if (!ok)
                break;
            gr_buf_printf(&j->out, " %sws \":\" %sws ", p, p);
            ref_text(j, vid[k], &j->out);
            gr_buf_puts(&j->out, "\n");
        }
        if (ok && extra != -1) {
            gr_buf_printf(&j->out, "%s-kvx ::= %sstring %sws \":\" %sws ", base, p, p, p);
            if (extra == -2)
                gr_buf_printf(&j->out, "%svalue", p);
            else
                ref_text(j, extra, &j->out);
            gr_buf_puts(&j->out, "\n");
        }
        /*
         * S_k: properties k.. when none was written yet; R_k: when one was (each
         * starts with a comma). Required ones must appear, optional ones may be
         * skipped; extra keys (additionalProperties) come after the listed ones.
         */
        for (size_t k = 0; ok && k <= n; k++) {
            if (k == n) {
                if (extra != -1) {
                    gr_buf_printf(&j->out, "%s-s%zu ::= (%s-kvx (%sws \",\" %sws %s-kvx)*)?\n",
                                  base, k, base, p, p, base);
                    gr_buf_printf(&j->out, "%s-r%zu ::= (%sws \",\" %sws %s-kvx)*\n", base, k, p,
                                  p, base);
                } else {
                    gr_buf_printf(&j->out, "%s-s%zu ::= \"\"\n%s-r%zu ::= \"\"\n", base, k, base,
                                  k);
                }
                break;
            }
            gr_buf_printf(&j->out, "%s-s%zu ::= %s-kv%zu %s-r%zu", base, k, base, k, base, k + 1);
            if (!isreq[k])
                gr_buf_printf(&j->out, " | %s-s%zu", base, k + 1);
            gr_buf_printf(&j->out, "\n%s-r%zu ::= %sws \",\" %sws %s-kv%zu %s-r%zu", base, k, p, p,
                          base, k, base, k + 1);
            if (!isreq[k])
                gr_buf_printf(&j->out, " | %s-r%zu", base, k + 1);
            gr_buf_puts(&j->out, "\n");
        }
        if (ok)
            gr_buf_printf(b, "\"{\" %sws %s-s0 %sws \"}\"", p, base, p);
    }
    free(vid);
    free(keys);
    free(isreq);
    return ok;
}

static bool array_body(struct js *j, const json_t *s, struct gr_buf *b)
{
    const json_t *items = json_object_get(s, "items");
    const json_t *prefix = json_object_get(s, "prefixItems");
    if (json_object_get(s, "contains"))
        return jfail(j, "contains is not supported");
    const json_t *uniq = json_object_get(s, "uniqueItems");
    if (uniq && !json_is_false(uniq))
        return jfail(j, "uniqueItems is not supported");
    if (json_object_get(s, "unevaluatedItems"))
        return jfail(j, "unevaluatedItems is not supported");
    if (prefix && !json_is_array(prefix))
        return jfail(j, "prefixItems must be an array of schemas");
    if (json_is_array(items))
        return jfail(j, "items as an array (draft 4 tuples) is not supported: use prefixItems");
    long mn, mx;
    if (!get_count(j, s, "minItems", &mn, 0) || !get_count(j, s, "maxItems", &mx, -1))
        return false;
    long k = prefix ? (long)json_array_size(prefix) : 0;
    if (k > GR_MAX_DEPTH / 2)
        return jfail(j, "more than %d prefixItems", GR_MAX_DEPTH / 2);
    bool items_false = json_is_false(items);
    if (items_false && (mx < 0 || mx > k))
        mx = k;
    if (mx > GR_MAX_REPEAT || mn > GR_MAX_REPEAT)
        return jfail(j, "minItems / maxItems above %d are not supported", GR_MAX_REPEAT);
    if (mx >= 0 && mx < mn)
        return jfail(j, "maxItems is below minItems%s", items_false ? " (items is false)" : "");
    int item_id = -1;
    if (items && !json_is_true(items) && !items_false) {
        if (!json_is_object(items))
            return jfail(j, "items must be a schema");
        item_id = sub(j, items, "/items");
        if (item_id < 0)
            return false;
    }
    int *pid = calloc((size_t)(k ? k : 1), sizeof(int));
    if (!pid) {
        j->st = pl_err_set(j->err, PL_STATUS_NO_MEMORY, "json schema: out of memory");
        return false;
    }
    for (long i = 0; i < k; i++) {
        char seg[64];
        snprintf(seg, sizeof(seg), "/prefixItems/%ld", i);
        pid[i] = sub(j, json_array_get(prefix, (size_t)i), seg);
        if (pid[i] < 0) {
            free(pid);
            return false;
        }
    }
    need_ws(j);
    const char *p = j->px;
    struct gr_buf el = {0}; /* the uniform item */
    if (item_id >= 0) {
        ref_text(j, item_id, &el);
    } else {
        need_value(j);
        gr_buf_printf(&el, "%svalue", p);
    }
    gr_buf_printf(b, "\"[\" %sws ", p);
    if (mx != 0) {
        if (mn == 0)
            gr_buf_puts(b, "(");
        /* element 0, then tail(1) */
        if (k > 0)
            ref_text(j, pid[0], b);
        else
            gr_buf_add(b, el.p, el.n);
        int opened = 0;
        long jx = 1;
        while (!(mx >= 0 && jx >= mx)) {
            if (jx >= k) {
                if (jx < mn) {
                    gr_buf_printf(b, " (%sws \",\" %sws ", p, p);
                    gr_buf_add(b, el.p, el.n);
                    gr_buf_printf(b, "){%ld}", mn - jx);
                    jx = mn;
                    continue;
                }
                gr_buf_printf(b, " (%sws \",\" %sws ", p, p);
                gr_buf_add(b, el.p, el.n);
                if (mx < 0)
                    gr_buf_puts(b, ")*");
                else
                    gr_buf_printf(b, "){0,%ld}", mx - jx);
                break;
            }
            if (jx < mn) {
                gr_buf_printf(b, " %sws \",\" %sws ", p, p);
                ref_text(j, pid[jx], b);
            } else {
                gr_buf_printf(b, " (%sws \",\" %sws ", p, p);
                ref_text(j, pid[jx], b);
                opened++;
            }
            jx++;
        }
        for (int i = 0; i < opened; i++)
            gr_buf_puts(b, ")?");
        if (mn == 0)
            gr_buf_puts(b, ")?");
    }
    gr_buf_printf(b, " %sws \"]\"", p);
    gr_buf_free(&el);
    free(pid);
    return true;
}

/* ---- dispatch ---- */

static bool body_for_type(struct js *j, const json_t *s, const char *type, int id,
                          struct gr_buf *b)
{
    if (!strcmp(type, "string"))
        return string_body(j, s, b);
    if (!strcmp(type, "integer"))
        return integer_body(j, s, b);
    if (!strcmp(type, "number"))
        return number_body(j, s, b);
    if (!strcmp(type, "boolean")) {
        gr_buf_puts(b, "(\"true\" | \"false\")");
        return true;
    }
    if (!strcmp(type, "null")) {
        gr_buf_puts(b, "\"null\"");
        return true;
    }
    if (!strcmp(type, "object"))
        return object_body(j, s, id, b);
    if (!strcmp(type, "array"))
        return array_body(j, s, b);
    return jfail(j, "unknown type '%.100s'", type);
}

static const char *const handled[] = {
    "type", "properties", "required", "additionalProperties", "unevaluatedProperties", "enum",
    "const", "items", "prefixItems", "minItems", "maxItems", "anyOf", "oneOf", "allOf", "$ref",
    "pattern", "format", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "nullable", "uniqueItems", "minProperties", NULL};

static bool visit_inner(struct js *j, const json_t *s, int id, struct gr_buf *b)
{
    if (json_is_true(s)) {
        need_value(j);
        gr_buf_printf(b, "%svalue", j->px);
        return true;
    }
    if (json_is_false(s))
        return jfail(j, "the schema false matches nothing");
    if (!json_is_object(s))
        return jfail(j, "a schema must be an object or a boolean");
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)s, key, v)
    {
        bool known = is_annotation(key);
        for (int i = 0; !known && handled[i]; i++)
            known = !strcmp(key, handled[i]);
        if (!known)
            return jfail(j, "keyword '%.100s' is not supported", key);
    }
    const json_t *nullable = json_object_get(s, "nullable");
    bool or_null = json_is_true(nullable);
    if (or_null)
        gr_buf_puts(b, "(\"null\" | ");
    bool ok = true;
    const json_t *x;
    if ((x = json_object_get(s, "$ref"))) {
        if (!json_is_string(x))
            return jfail(j, "$ref must be a string");
        const json_t *t = resolve_ref(j, json_string_value(x));
        int rid = t ? ref_rule(j, t) : -1;
        if (rid < 0)
            return false;
        ref_text(j, rid, b);
    } else if ((x = json_object_get(s, "const"))) {
        ok = literal_json(j, x, b);
    } else if ((x = json_object_get(s, "enum"))) {
        if (!json_is_array(x) || json_array_size(x) == 0)
            return jfail(j, "enum must be a non-empty array");
        gr_buf_puts(b, "(");
        for (size_t i = 0; ok && i < json_array_size(x); i++) {
            if (i)
                gr_buf_puts(b, " | ");
            ok = literal_json(j, json_array_get(x, i), b);
        }
        gr_buf_puts(b, ")");
    } else if ((x = json_object_get(s, "anyOf")) || (x = json_object_get(s, "oneOf"))) {
        const char *kw = json_object_get(s, "anyOf") ? "anyOf" : "oneOf";
        if (json_object_get(s, "anyOf") && json_object_get(s, "oneOf"))
            return jfail(j, "anyOf together with oneOf is not supported");
        if (!json_is_array(x) || json_array_size(x) == 0)
            return jfail(j, "%s must be a non-empty array of schemas", kw);
        if (json_object_get(s, "type") || json_object_get(s, "properties"))
            return jfail(j, "%s together with type / properties is not supported", kw);
        gr_buf_puts(b, "(");
        for (size_t i = 0; i < json_array_size(x); i++) {
            char seg[64];
            snprintf(seg, sizeof(seg), "/%s/%zu", kw, i);
            int sid = sub(j, json_array_get(x, i), seg);
            if (sid < 0)
                return false;
            if (i)
                gr_buf_puts(b, " | ");
            ref_text(j, sid, b);
        }
        gr_buf_puts(b, ")");
    } else if ((x = json_object_get(s, "allOf"))) {
        if (!json_is_array(x) || json_array_size(x) != 1)
            return jfail(j, "allOf is supported only with a single schema");
        int sid = sub(j, json_array_get(x, 0), "/allOf/0");
        if (sid < 0)
            return false;
        ref_text(j, sid, b);
    } else {
        const json_t *type = json_object_get(s, "type");
        if (!type) {
            if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
                json_object_get(s, "required"))
                ok = object_body(j, s, id, b);
            else if (json_object_get(s, "items") || json_object_get(s, "prefixItems"))
                ok = array_body(j, s, b);
            else if (json_object_get(s, "pattern") || json_object_get(s, "format") ||
                     json_object_get(s, "minLength") || json_object_get(s, "maxLength"))
                ok = string_body(j, s, b);
            else {
                need_value(j);
                gr_buf_printf(b, "%svalue", j->px);
            }
        } else if (json_is_string(type)) {
            ok = body_for_type(j, s, json_string_value(type), id, b);
        } else if (json_is_array(type) && json_array_size(type) > 0) {
            gr_buf_puts(b, "(");
            for (size_t i = 0; ok && i < json_array_size(type); i++) {
                const json_t *t = json_array_get(type, i);
                if (!json_is_string(t))
                    return jfail(j, "type[%zu] must be a string", i);
                if (i)
                    gr_buf_puts(b, " | ");
                /* object rules are named after the schema's id: one object type per list */
                ok = body_for_type(j, s, json_string_value(t), id, b);
            }
            gr_buf_puts(b, ")");
        } else {
            return jfail(j, "type must be a string or a non-empty array of strings");
        }
    }
    if (or_null)
        gr_buf_puts(b, ")");
    return ok;
}

static bool visit(struct js *j, const json_t *s, int id)
{
    if (++j->depth > GR_MAX_DEPTH)
        return jfail(j, "schemas nested deeper than %d", GR_MAX_DEPTH);
    struct gr_buf body = {0};
    bool ok = visit_inner(j, s, id, &body);
    if (ok && body.oom) {
        j->st = pl_err_set(j->err, PL_STATUS_NO_MEMORY, "json schema: out of memory");
        ok = false;
    }
    if (ok)
        emit_rule(j, id, &body);
    gr_buf_free(&body);
    j->depth--;
    return ok && j->st == PL_STATUS_OK;
}

static pl_status finish(struct js *j, char **gbnf)
{
    free(j->memo);
    if (j->st == PL_STATUS_OK && j->out.oom)
        j->st = pl_err_set(j->err, PL_STATUS_NO_MEMORY, "json schema: out of memory");
    if (j->st != PL_STATUS_OK) {
        gr_buf_free(&j->out);
        return j->st;
    }
    *gbnf = j->out.p;
    return PL_STATUS_OK;
}

pl_status pl_grammar_json_schema_to_gbnf(const char *schema, const char *ws,
                                         const char *rule_prefix, char **gbnf,
                                         struct pl_err *err)
{
    *gbnf = NULL;
    if (strlen(schema) > GR_MAX_TEXT)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "json schema: the schema is too long (at most %d bytes)", GR_MAX_TEXT);
    json_error_t je;
    json_t *root = json_loads(schema, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "json schema: not valid JSON (line %d column %d: %s)", je.line,
                          je.column, je.text);
    struct js j = {0};
    j.px = rule_prefix ? rule_prefix : "";
    j.root = root;
    j.err = err;
    j.ws_pattern = ws;
    int id = new_id(&j);
    if (visit(&j, root, id)) {
        char name[96];
        rule_name(&j, id, name, sizeof(name));
        gr_buf_printf(&j.out, "%sroot ::= %s\n", j.px, name);
    }
    json_decref(root);
    return finish(&j, gbnf);
}

pl_status pl_grammar_json_object_to_gbnf(const char *ws, const char *rule_prefix, char **gbnf,
                                         struct pl_err *err)
{
    *gbnf = NULL;
    struct js j = {0};
    j.px = rule_prefix ? rule_prefix : "";
    j.err = err;
    j.ws_pattern = ws;
    need_value(&j);
    gr_buf_printf(&j.out, "%sroot ::= %sobject\n", j.px, j.px);
    return finish(&j, gbnf);
}
