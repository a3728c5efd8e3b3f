/*
 * regex.c -- regular expressions -> GBNF (the one grammar form).
 *
 * Owns: the regex parser (the subset a grammar can express): alternation,
 * groups ((...), (?:...), named groups), the quantifiers * + ? {m} {m,} {m,n}
 * (a lazy '?' after them changes nothing: every match is allowed), classes
 * [...] with ranges, negation and \d \w \s \D \W \S, '.', escapes (\n \t \r \f
 * \v \xHH \uHHHH and escaped punctuation), '^' at the start and '$' at the end
 * (the whole output matches anyway). Backreferences, lookaround and other
 * anchors are refused with a message naming them.
 *
 * Character classes are computed as code point range sets and written as GBNF
 * classes. In JSON-string mode (a JSON Schema "pattern") the regex matches the
 * decoded string, so '"' and '\' are produced as their JSON escapes and control
 * characters, which JSON must escape, are left out of the language.
 */
#include "grammar/grammar_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RANGES 512

struct rcls {
    uint32_t r[MAX_RANGES][2];
    int n;
};

struct rx {
    const char *s;
    size_t pos, len;
    bool json;
    int depth;
    struct gr_buf *b;
    struct pl_err *err;
    pl_status st;
};

static bool rfail(struct rx *x, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static bool rfail(struct rx *x, const char *fmt, ...)
{
    if (x->st == PL_STATUS_OK) {
        char msg[PL_ERR_MSG_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        x->st = pl_err_set(x->err, PL_STATUS_INVALID_ARGUMENT, "regex: %s", msg);
    }
    return false;
}

static bool cadd(struct rx *x, struct rcls *c, uint32_t lo, uint32_t hi)
{
    if (c->n >= MAX_RANGES)
        return rfail(x, "a character class with more than %d ranges", MAX_RANGES);
    c->r[c->n][0] = lo;
    c->r[c->n][1] = hi;
    c->n++;
    return true;
}

static void cnorm(struct rcls *c) { c->n = gr_ranges_normalize(c->r, c->n); }

/* c = its complement; false (the error set) when that has more than MAX_RANGES ranges */
static bool cneg(struct rx *x, struct rcls *c)
{
    cnorm(c);
    if (c->n >= MAX_RANGES) /* the complement may have c->n + 1 */
        return rfail(x, "a negated character class with more than %d ranges", MAX_RANGES - 1);
    struct rcls o;
    o.n = gr_ranges_complement((const uint32_t(*)[2])c->r, c->n, o.r);
    *c = o;
    return true;
}

/* c minus [lo, hi] */
static bool csub(struct rx *x, struct rcls *c, uint32_t lo, uint32_t hi)
{
    struct rcls o;
    o.n = 0;
    for (int i = 0; i < c->n; i++) {
        uint32_t a = c->r[i][0], b = c->r[i][1];
        if (b < lo || a > hi) {
            if (!cadd(x, &o, a, b))
                return false;
            continue;
        }
        if (a < lo && !cadd(x, &o, a, lo - 1))
            return false;
        if (b > hi && !cadd(x, &o, hi + 1, b))
            return false;
    }
    *c = o;
    return true;
}

static bool chas(const struct rcls *c, uint32_t cp)
{
    for (int i = 0; i < c->n; i++)
        if (cp >= c->r[i][0] && cp <= c->r[i][1])
            return true;
    return false;
}

/* \d \w \s and their complements into c; false when e is not one of them. */
static bool shorthand(struct rx *x, char e, struct rcls *c, bool *ok)
{
    struct rcls t;
    t.n = 0;
    *ok = true;
    switch (e) {
    case 'd':
    case 'D':
        cadd(x, &t, '0', '9');
        break;
    case 'w':
    case 'W':
        cadd(x, &t, '0', '9');
        cadd(x, &t, 'A', 'Z');
        cadd(x, &t, '_', '_');
        cadd(x, &t, 'a', 'z');
        break;
    case 's':
    case 'S':
        cadd(x, &t, '\t', '\r'); /* \t \n \v \f \r */
        cadd(x, &t, ' ', ' ');
        break;
    default:
        return false;
    }
    if ((e == 'D' || e == 'W' || e == 'S') && !cneg(x, &t)) {
        *ok = false;
        return true;
    }
    for (int i = 0; i < t.n && *ok; i++)
        *ok = cadd(x, c, t.r[i][0], t.r[i][1]);
    return true;
}

static int hexv(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One literal code point (escape or UTF-8) at x->pos (escapes other than classes). */
static bool read_cp(struct rx *x, uint32_t *cp)
{
    unsigned char c = (unsigned char)x->s[x->pos];
    if (c == '\\') {
        if (x->pos + 1 >= x->len)
            return rfail(x, "a '\\' ends the pattern");
        char e = x->s[x->pos + 1];
        x->pos += 2;
        int nd = 0;
        switch (e) {
        case 'n': *cp = '\n'; return true;
        case 'r': *cp = '\r'; return true;
        case 't': *cp = '\t'; return true;
        case 'f': *cp = '\f'; return true;
        case 'v': *cp = '\v'; return true;
        case '0': *cp = 0; return true;
        case 'x': nd = 2; break;
        case 'u': nd = 4; break;
        default:
            if (e >= '1' && e <= '9')
                return rfail(x, "backreferences (\\%c) are not supported", e);
            if (e == 'b' || e == 'B' || e == 'A' || e == 'Z' || e == 'z' || e == 'G')
                return rfail(x, "the anchor \\%c is not supported", e);
            if ((unsigned char)e < 0x80 &&
                !((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))) {
                *cp = (unsigned char)e;
                return true;
            }
            return rfail(x, "unknown escape \\%c", e);
        }
        uint32_t v = 0;
        for (int i = 0; i < nd; i++) {
            int h = x->pos < x->len ? hexv((unsigned char)x->s[x->pos]) : -1;
            if (h < 0)
                return rfail(x, "bad hex escape at offset %zu", x->pos);
            v = v * 16 + (uint32_t)h;
            x->pos++;
        }
        *cp = v;
        return true;
    }
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (!n || x->pos + (size_t)n > x->len)
        return rfail(x, "invalid UTF-8 at offset %zu", x->pos);
    uint32_t v = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int i = 1; i < n; i++) {
        unsigned char d = (unsigned char)x->s[x->pos + (size_t)i];
        if ((d & 0xC0) != 0x80)
            return rfail(x, "invalid UTF-8 at offset %zu", x->pos);
        v = (v << 6) | (d & 0x3Fu);
    }
    x->pos += (size_t)n;
    *cp = v;
    return true;
}

/* Writes class c (already in JSON form when json) as a GBNF atom. */
static bool emit_class(struct rx *x, struct rcls *c)
{
    cnorm(c);
    bool quote = false, bslash = false;
    if (x->json) {
        quote = chas(c, '"');
        bslash = chas(c, '\\');
        if (!csub(x, c, 0, 0x1F) || !csub(x, c, '"', '"') || !csub(x, c, '\\', '\\'))
            return false;
    }
    int alts = (c->n > 0) + quote + bslash;
    if (alts == 0) /* matches nothing: an empty class */
        return rfail(x, "a character class that matches nothing");
    if (alts > 1)
        gr_buf_puts(x->b, "(");
    bool first = true;
    if (c->n > 0) {
        gr_buf_puts(x->b, "[");
        for (int i = 0; i < c->n; i++) {
            gr_buf_class_char(x->b, c->r[i][0]);
            if (c->r[i][1] != c->r[i][0]) {
                gr_buf_puts(x->b, "-");
                gr_buf_class_char(x->b, c->r[i][1]);
            }
        }
        gr_buf_puts(x->b, "]");
        first = false;
    }
    if (quote) {
        gr_buf_puts(x->b, first ? "\"\\\\\\\"\"" : " | \"\\\\\\\"\"");
        first = false;
    }
    if (bslash)
        gr_buf_puts(x->b, first ? "\"\\\\\\\\\"" : " | \"\\\\\\\\\"");
    if (alts > 1)
        gr_buf_puts(x->b, ")");
    return true;
}

static bool emit_char(struct rx *x, uint32_t cp)
{
    struct rcls c;
    c.n = 0;
    if (x->json && (cp < 0x20 || cp == '"' || cp == '\\')) {
        if (cp == '"')
            gr_buf_puts(x->b, "\"\\\\\\\"\"");
        else if (cp == '\\')
            gr_buf_puts(x->b, "\"\\\\\\\\\"");
        else
            gr_buf_printf(x->b, "\"\\\\u%04X\"", (unsigned)cp); /* JSON's \u00XX escape */
        return true;
    }
    cadd(x, &c, cp, cp);
    return emit_class(x, &c);
}

static bool parse_class(struct rx *x)
{
    size_t start = x->pos++;
    struct rcls c;
    c.n = 0;
    bool neg = false;
    if (x->pos < x->len && x->s[x->pos] == '^') {
        neg = true;
        x->pos++;
    }
    bool first = true;
    for (;;) {
        if (x->pos >= x->len)
            return rfail(x, "unterminated character class at offset %zu", start);
        char ch = x->s[x->pos];
        if (ch == ']' && !first) {
            x->pos++;
            break;
        }
        first = false;
        if (ch == '[' && x->pos + 1 < x->len && x->s[x->pos + 1] == ':')
            return rfail(x, "POSIX classes ([:name:]) are not supported");
        if (ch == '\\' && x->pos + 1 < x->len) {
            bool ok;
            if (shorthand(x, x->s[x->pos + 1], &c, &ok)) {
                if (!ok)
                    return false;
                x->pos += 2;
                continue;
            }
        }
        uint32_t lo, hi;
        if (!read_cp(x, &lo))
            return false;
        hi = lo;
        if (x->pos + 1 < x->len && x->s[x->pos] == '-' && x->s[x->pos + 1] != ']') {
            x->pos++;
            if (!read_cp(x, &hi))
                return false;
            if (hi < lo)
                return rfail(x, "class range out of order at offset %zu", start);
        }
        if (!cadd(x, &c, lo, hi))
            return false;
    }
    if (neg && !cneg(x, &c))
        return false;
    return emit_class(x, &c);
}

static bool parse_alt(struct rx *x);

static bool parse_quant(struct rx *x)
{
    if (x->pos >= x->len)
        return true;
    char c = x->s[x->pos];
    if (c == '*' || c == '+' || c == '?') {
        gr_buf_add(x->b, &c, 1);
        x->pos++;
    } else if (c == '{') {
        size_t p = x->pos + 1;
        long lo = -1, hi = -1;
        char *end;
        lo = strtol(x->s + p, &end, 10);
        if (end == x->s + p) /* a literal '{' */
            return true;
        p = (size_t)(end - x->s);
        bool comma = false;
        if (p < x->len && x->s[p] == ',') {
            comma = true;
            p++;
            if (p < x->len && x->s[p] != '}') {
                hi = strtol(x->s + p, &end, 10);
                if (end == x->s + p)
                    return rfail(x, "bad repetition at offset %zu", x->pos);
                p = (size_t)(end - x->s);
            }
        } else {
            hi = lo;
        }
        if (p >= x->len || x->s[p] != '}')
            return rfail(x, "bad repetition at offset %zu", x->pos);
        if (lo < 0 || lo > GR_MAX_REPEAT || hi > GR_MAX_REPEAT || (hi >= 0 && hi < lo))
            return rfail(x, "repetition bounds out of range at offset %zu (at most %d)", x->pos,
                         GR_MAX_REPEAT);
        if (comma && hi < 0)
            gr_buf_printf(x->b, "{%ld,}", lo);
        else
            gr_buf_printf(x->b, "{%ld,%ld}", lo, hi);
        x->pos = p + 1;
    } else {
        return true;
    }
    if (x->pos < x->len && x->s[x->pos] == '?')
        x->pos++; /* lazy: the same language */
    else if (x->pos < x->len && x->s[x->pos] == '+')
        return rfail(x, "possessive quantifiers are not supported");
    if (x->pos < x->len && strchr("*+?", x->s[x->pos]))
        return rfail(x, "a quantifier follows a quantifier at offset %zu", x->pos);
    return true;
}

static bool parse_seq(struct rx *x)
{
    bool empty = true;
    while (x->pos < x->len) {
        char c = x->s[x->pos];
        if (c == '|' || c == ')')
            break;
        if (c == '^') {
            if (x->pos != 0)
                return rfail(x, "'^' is supported only at the start of the pattern");
            x->pos++;
            continue;
        }
        if (c == '$') {
            if (x->pos + 1 != x->len)
                return rfail(x, "'$' is supported only at the end of the pattern");
            x->pos++;
            continue;
        }
        if (c == '*' || c == '+' || c == '?')
            return rfail(x, "nothing to repeat at offset %zu", x->pos);
        if (!empty)
            gr_buf_puts(x->b, " ");
        empty = false;
        if (c == '(') {
            size_t start = x->pos++;
            if (x->pos < x->len && x->s[x->pos] == '?') {
                if (x->pos + 1 < x->len && x->s[x->pos + 1] == ':') {
                    x->pos += 2;
                } else if (x->pos + 2 < x->len && x->s[x->pos + 1] == 'P' &&
                           x->s[x->pos + 2] == '<') {
                    const char *e = memchr(x->s + x->pos, '>', x->len - x->pos);
                    if (!e)
                        return rfail(x, "bad group name at offset %zu", start);
                    x->pos = (size_t)(e - x->s) + 1;
                } else if (x->pos + 2 < x->len && x->s[x->pos + 1] == '<' &&
                           x->s[x->pos + 2] != '=' && x->s[x->pos + 2] != '!') {
                    const char *e = memchr(x->s + x->pos, '>', x->len - x->pos);
                    if (!e)
                        return rfail(x, "bad group name at offset %zu", start);
                    x->pos = (size_t)(e - x->s) + 1;
                } else {
                    return rfail(x, "group syntax (?%c at offset %zu (lookaround, flags) is not "
                                    "supported",
                                 x->pos + 1 < x->len ? x->s[x->pos + 1] : ' ', start);
                }
            }
            if (++x->depth > GR_MAX_DEPTH)
                return rfail(x, "groups nested deeper than %d", GR_MAX_DEPTH);
            gr_buf_puts(x->b, "(");
            if (!parse_alt(x))
                return false;
            x->depth--;
            if (x->pos >= x->len || x->s[x->pos] != ')')
                return rfail(x, "unclosed '(' at offset %zu", start);
            x->pos++;
            gr_buf_puts(x->b, ")");
        } else if (c == '[') {
            if (!parse_class(x))
                return false;
        } else if (c == '.') {
            x->pos++;
            struct rcls a;
            a.n = 0;
            cadd(x, &a, '\n', '\n');
            if (!cneg(x, &a) || !emit_class(x, &a))
                return false;
        } else if (c == '\\' && x->pos + 1 < x->len) {
            struct rcls a;
            a.n = 0;
            bool ok;
            if (shorthand(x, x->s[x->pos + 1], &a, &ok)) {
                if (!ok || !emit_class(x, &a))
                    return false;
                x->pos += 2;
            } else {
                uint32_t cp;
                if (!read_cp(x, &cp) || !emit_char(x, cp))
                    return false;
            }
        } else {
            uint32_t cp;
            if (!read_cp(x, &cp) || !emit_char(x, cp))
                return false;
        }
        if (!parse_quant(x))
            return false;
    }
    if (empty)
        gr_buf_puts(x->b, "\"\"");
    return true;
}

static bool parse_alt(struct rx *x)
{
    if (!parse_seq(x))
        return false;
    while (x->pos < x->len && x->s[x->pos] == '|') {
        x->pos++;
        gr_buf_puts(x->b, " | ");
        if (!parse_seq(x))
            return false;
    }
    return true;
}

pl_status gr_regex_expr(const char *re, bool json_string, struct gr_buf *b, struct pl_err *err)
{
    struct rx x = {0};
    x.s = re;
    x.len = strlen(re);
    x.json = json_string;
    x.b = b;
    x.err = err;
    if (x.len > GR_MAX_TEXT)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "regex: the pattern is too long");
    gr_buf_puts(b, "(");
    if (parse_alt(&x) && x.pos < x.len)
        rfail(&x, "unmatched ')' at offset %zu", x.pos);
    gr_buf_puts(b, ")");
    if (x.st == PL_STATUS_OK && b->oom)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "regex: out of memory");
    return x.st;
}

pl_status pl_grammar_regex_to_gbnf(const char *regex, const char *rule_prefix, char **gbnf,
                                   struct pl_err *err)
{
    *gbnf = NULL;
    struct gr_buf b = {0};
    gr_buf_printf(&b, "%sroot ::= ", rule_prefix ? rule_prefix : "");
    pl_status st = gr_regex_expr(regex, false, &b, err);
    gr_buf_puts(&b, "\n");
    if (st == PL_STATUS_OK && b.oom)
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "regex: out of memory");
    if (st != PL_STATUS_OK) {
        gr_buf_free(&b);
        return st;
    }
    *gbnf = b.p;
    return PL_STATUS_OK;
}
