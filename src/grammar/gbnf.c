/*
 * gbnf.c -- GBNF text -> the compiled grammar form (grammar_internal.h).
 *
 * Owns: the GBNF parser and compiler, and the text buffer helpers.
 *
 * Syntax (llama.cpp's GBNF, with EBNF quantifiers): rules `name ::= alternatives`;
 * an alternative is a sequence of "string literals", [character classes] ([^...]
 * negated, a-z ranges), `.` (any character), rule names and ( groups ), each
 * optionally followed by * + ? {m} {m,} {m,n}. Escapes: \n \r \t \\ \" \[ \] \- \^
 * \xHH \uHHHH \UHHHHHHHH (and any other escaped ASCII punctuation as itself). `#`
 * starts a comment. Newlines are whitespace: a rule ends where the next `name ::=`
 * begins. The start rule is "root".
 *
 * Compilation: characters are Unicode code points; a class becomes its UTF-8 byte
 * sequences (a class of ASCII only is one byte set; others become a helper rule
 * with one alternative per byte-range sequence). Quantifiers become helper rules:
 * X* = R where R ::= X R | (empty) (right recursion: a tail call, so repetition
 * runs at a fixed stack depth); X+ = X X*; X? = R ::= X | (empty); X{m,n} = m
 * copies of X, then n - m nested optionals. Undefined rules, a missing root and
 * left recursion are refused with a message naming the rule.
 */
#include "grammar/grammar_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- text buffer ---- */

void gr_buf_free(struct gr_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void gr_buf_add(struct gr_buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void gr_buf_puts(struct gr_buf *b, const char *s)
{
    gr_buf_add(b, s, strlen(s));
}

void gr_buf_printf(struct gr_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        gr_buf_add(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    gr_buf_add(b, big, (size_t)n);
    free(big);
}

void gr_buf_literal(struct gr_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            gr_buf_add(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            gr_buf_printf(b, "\\x%02X", c);
        } else {
            gr_buf_add(b, (const char *)&s[i], 1);
        }
    }
}

void gr_buf_class_char(struct gr_buf *b, uint32_t cp)
{
    if (cp < 0x20 || cp == 0x7f)
        gr_buf_printf(b, "\\x%02X", (unsigned)cp);
    else if (cp == ']' || cp == '[' || cp == '\\' || cp == '-' || cp == '^')
        gr_buf_printf(b, "\\%c", (char)cp);
    else if (cp < 0x80)
        gr_buf_printf(b, "%c", (char)cp);
    else if (cp <= 0xffff)
        gr_buf_printf(b, "\\u%04X", (unsigned)cp);
    else
        gr_buf_printf(b, "\\U%08X", (unsigned)cp);
}

/* ---- build state ---- */

struct item {
    int32_t kind, arg;
};

struct alt {
    struct item *it;
    int n, cap;
};

struct rule {
    char *name;      /* NULL: a helper rule */
    struct alt *alts;
    int n_alts, cap_alts;
    bool defined;
    int first_use;   /* text offset of the first reference (for messages) */
};

struct gb {
    const char *s;
    size_t pos, len;
    struct rule *rules;
    int n_rules, cap_rules;
    uint32_t (*sets)[8];
    int n_sets, cap_sets;
    long n_items;    /* all items made (a size limit) */
    int depth;
    struct pl_err *err;
    pl_status st;
};

static pl_status fail(struct gb *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static pl_status fail(struct gb *g, const char *fmt, ...)
{
    if (g->st != PL_STATUS_OK)
        return g->st;
    char msg[PL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    g->st = pl_err_set(g->err, PL_STATUS_INVALID_ARGUMENT, "grammar: %s", msg);
    return g->st;
}

static pl_status oom(struct gb *g)
{
    if (g->st == PL_STATUS_OK)
        g->st = pl_err_set(g->err, PL_STATUS_NO_MEMORY, "grammar: out of memory");
    return g->st;
}

static int new_rule(struct gb *g, const char *name, size_t name_len)
{
    if (g->n_rules == g->cap_rules) {
        int cap = g->cap_rules ? g->cap_rules * 2 : 64;
        struct rule *r = realloc(g->rules, (size_t)cap * sizeof(*r));
        if (!r)
            return oom(g), -1;
        g->rules = r;
        g->cap_rules = cap;
    }
    struct rule *r = &g->rules[g->n_rules];
    memset(r, 0, sizeof(*r));
    if (name) {
        r->name = malloc(name_len + 1);
        if (!r->name)
            return oom(g), -1;
        memcpy(r->name, name, name_len);
        r->name[name_len] = 0;
    }
    r->first_use = -1;
    return g->n_rules++;
}

static int find_rule(struct gb *g, const char *name, size_t len)
{
    for (int i = 0; i < g->n_rules; i++)
        if (g->rules[i].name && strlen(g->rules[i].name) == len &&
            !memcmp(g->rules[i].name, name, len))
            return i;
    return -1;
}

/* Adds an empty alternative to rule r; returns its index or -1. */
static int new_alt(struct gb *g, int r)
{
    struct rule *ru = &g->rules[r];
    if (ru->n_alts == ru->cap_alts) {
        int cap = ru->cap_alts ? ru->cap_alts * 2 : 4;
        struct alt *a = realloc(ru->alts, (size_t)cap * sizeof(*a));
        if (!a)
            return oom(g), -1;
        ru->alts = a;
        ru->cap_alts = cap;
    }
    memset(&ru->alts[ru->n_alts], 0, sizeof(struct alt));
    return ru->n_alts++;
}

static bool push_item(struct gb *g, int r, int a, int32_t kind, int32_t arg)
{
    struct alt *al = &g->rules[r].alts[a];
    if (++g->n_items > GR_MAX_ELEMENTS) {
        fail(g, "the grammar is too large (more than %d elements)", GR_MAX_ELEMENTS);
        return false;
    }
    if (al->n == al->cap) {
        int cap = al->cap ? al->cap * 2 : 8;
        struct item *it = realloc(al->it, (size_t)cap * sizeof(*it));
        if (!it)
            return oom(g), false;
        al->it = it;
        al->cap = cap;
    }
    al->it[al->n++] = (struct item){kind, arg};
    return true;
}

static int add_set(struct gb *g, const uint32_t set[8])
{
    for (int i = 0; i < g->n_sets; i++)
        if (!memcmp(g->sets[i], set, 32))
            return i;
    if (g->n_sets == g->cap_sets) {
        int cap = g->cap_sets ? g->cap_sets * 2 : 32;
        uint32_t(*s)[8] = realloc(g->sets, (size_t)cap * sizeof(*s));
        if (!s)
            return oom(g), -1;
        g->sets = s;
        g->cap_sets = cap;
    }
    memcpy(g->sets[g->n_sets], set, 32);
    return g->n_sets++;
}

static bool push_byte_range(struct gb *g, int r, int a, unsigned lo, unsigned hi)
{
    uint32_t set[8] = {0};
    for (unsigned b = lo; b <= hi; b++)
        set[b >> 5] |= 1u << (b & 31);
    int s = add_set(g, set);
    return s >= 0 && push_item(g, r, a, GR_BYTES, s);
}

/* ---- UTF-8 ranges ---- */

static int utf8_encode(uint32_t cp, unsigned char *o)
{
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/*
 * Emits [lo, hi] (same encoded length) as alternatives of rule r, each a sequence
 * of byte ranges: split until every continuation position spans a whole aligned
 * block, so that the per-byte ranges describe exactly the code points.
 */
static bool utf8_same_len(struct gb *g, int r, uint32_t lo, uint32_t hi)
{
    unsigned char a[4], b[4];
    int n = utf8_encode(lo, a);
    for (int i = 1; i < n; i++) {
        uint32_t m = (1u << (6 * i)) - 1;
        if ((lo & ~m) != (hi & ~m)) {
            if ((lo & m) != 0)
                return utf8_same_len(g, r, lo, lo | m) && utf8_same_len(g, r, (lo | m) + 1, hi);
            if ((hi & m) != m)
                return utf8_same_len(g, r, lo, (hi & ~m) - 1) && utf8_same_len(g, r, hi & ~m, hi);
        }
    }
    utf8_encode(hi, b);
    int al = new_alt(g, r);
    if (al < 0)
        return false;
    for (int i = 0; i < n; i++)
        if (!push_byte_range(g, r, al, a[i], b[i]))
            return false;
    return true;
}

static bool utf8_range(struct gb *g, int r, uint32_t lo, uint32_t hi)
{
    static const uint32_t bounds[][2] = {
        {0x80, 0x7FF}, {0x800, 0xD7FF}, {0xE000, 0xFFFF}, {0x10000, 0x10FFFF}};
    for (size_t k = 0; k < sizeof(bounds) / sizeof(bounds[0]); k++) {
        uint32_t a = lo > bounds[k][0] ? lo : bounds[k][0];
        uint32_t b = hi < bounds[k][1] ? hi : bounds[k][1];
        if (a <= b && !utf8_same_len(g, r, a, b))
            return false;
    }
    return true;
}

/* A class: sorted, merged code point ranges. */
struct cls {
    uint32_t (*r)[2];
    int n, cap;
};

static bool cls_add(struct gb *g, struct cls *c, uint32_t lo, uint32_t hi)
{
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 8;
        uint32_t(*r)[2] = realloc(c->r, (size_t)cap * sizeof(*r));
        if (!r)
            return oom(g), false;
        c->r = r;
        c->cap = cap;
    }
    c->r[c->n][0] = lo;
    c->r[c->n][1] = hi;
    c->n++;
    return true;
}

static void cls_normalize(struct cls *c) { c->n = gr_ranges_normalize(c->r, c->n); }

static bool cls_negate(struct gb *g, struct cls *c)
{
    cls_normalize(c);
    uint32_t(*o)[2] = malloc((size_t)(c->n + 1) * sizeof(*o));
    if (!o)
        return oom(g), false;
    const int n = gr_ranges_complement((const uint32_t(*)[2])c->r, c->n, o);
    free(c->r);
    *c = (struct cls){.r = o, .n = n, .cap = c->n + 1};
    return true;
}

/* Pushes class c as one item of (r, a): a byte set when ASCII only, else a helper rule. */
static bool push_class(struct gb *g, int r, int a, struct cls *c)
{
    cls_normalize(c);
    bool ascii = c->n == 0 || c->r[c->n - 1][1] < 0x80;
    uint32_t set[8] = {0};
    for (int i = 0; i < c->n; i++)
        for (uint32_t b = c->r[i][0]; b <= c->r[i][1] && b < 0x80; b++)
            set[b >> 5] |= 1u << (b & 31);
    if (ascii) {
        int s = add_set(g, set);
        return s >= 0 && push_item(g, r, a, GR_BYTES, s);
    }
    int h = new_rule(g, NULL, 0);
    if (h < 0)
        return false;
    g->rules[h].defined = true;
    bool any_ascii = false;
    for (int i = 0; i < 4; i++)
        any_ascii = any_ascii || set[i];
    if (any_ascii) {
        int al = new_alt(g, h);
        int s = al < 0 ? -1 : add_set(g, set);
        if (s < 0 || !push_item(g, h, al, GR_BYTES, s))
            return false;
    }
    for (int i = 0; i < c->n; i++) {
        uint32_t lo = c->r[i][0] < 0x80 ? 0x80 : c->r[i][0];
        if (lo <= c->r[i][1] && !utf8_range(g, h, lo, c->r[i][1]))
            return false;
    }
    return push_item(g, r, a, GR_REF, h);
}

/* ---- lexing ---- */

static int peek(struct gb *g)
{
    return g->pos < g->len ? (unsigned char)g->s[g->pos] : -1;
}

static void skip_space(struct gb *g)
{
    while (g->pos < g->len) {
        char c = g->s[g->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            g->pos++;
        } else if (c == '#') {
            while (g->pos < g->len && g->s[g->pos] != '\n')
                g->pos++;
        } else {
            break;
        }
    }
}

static bool is_name_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static size_t name_len_at(struct gb *g, size_t pos)
{
    size_t n = 0;
    while (pos + n < g->len && is_name_char((unsigned char)g->s[pos + n]))
        n++;
    return n;
}

/* True when a rule definition (`name ::=`) starts at pos. */
static bool rule_def_at(struct gb *g, size_t pos)
{
    size_t n = name_len_at(g, pos);
    if (n == 0)
        return false;
    size_t p = pos + n;
    while (p < g->len && (g->s[p] == ' ' || g->s[p] == '\t' || g->s[p] == '\n' || g->s[p] == '\r'))
        p++;
    return p + 3 <= g->len && !memcmp(g->s + p, "::=", 3);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads one code point (an escape or a UTF-8 character) at g->pos. */
static bool read_char(struct gb *g, uint32_t *cp)
{
    if (g->pos >= g->len)
        return fail(g, "unexpected end of text at offset %zu", g->pos), false;
    unsigned char c = (unsigned char)g->s[g->pos];
    if (c == '\\') {
        if (g->pos + 1 >= g->len)
            return fail(g, "a '\\' ends the text"), false;
        char e = g->s[g->pos + 1];
        g->pos += 2;
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
        case 'U': nd = 8; break;
        default:
            if ((unsigned char)e < 0x80 && !((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') ||
                                              (e >= '0' && e <= '9'))) {
                *cp = (unsigned char)e;
                return true;
            }
            return fail(g, "unknown escape '\\%c' at offset %zu", e, g->pos - 2), false;
        }
        uint32_t v = 0;
        for (int i = 0; i < nd; i++) {
            int h = g->pos < g->len ? hexval((unsigned char)g->s[g->pos]) : -1;
            if (h < 0)
                return fail(g, "bad hex escape at offset %zu", g->pos), false;
            v = v * 16 + (uint32_t)h;
            g->pos++;
        }
        if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
            return fail(g, "escape U+%X is not a Unicode scalar value", (unsigned)v), false;
        *cp = v;
        return true;
    }
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || g->pos + (size_t)n > g->len)
        return fail(g, "invalid UTF-8 at offset %zu", g->pos), false;
    uint32_t v = n == 1 ? c : n == 2 ? (c & 0x1Fu) : n == 3 ? (c & 0x0Fu) : (c & 0x07u);
    for (int i = 1; i < n; i++) {
        unsigned char d = (unsigned char)g->s[g->pos + (size_t)i];
        if ((d & 0xC0) != 0x80)
            return fail(g, "invalid UTF-8 at offset %zu", g->pos), false;
        v = (v << 6) | (d & 0x3Fu);
    }
    static const uint32_t min_of[] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min_of[n] || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return fail(g, "invalid UTF-8 at offset %zu", g->pos), false;
    g->pos += (size_t)n;
    *cp = v;
    return true;
}

/* ---- parsing ---- */

static bool parse_alternates(struct gb *g, int r, bool nested);

/* Wraps items [from, to) of (r, a) into a helper rule referenced in their place. */
static bool wrap(struct gb *g, int r, int a, int from)
{
    int h = new_rule(g, NULL, 0);
    if (h < 0)
        return false;
    g->rules[h].defined = true;
    int ha = new_alt(g, h);
    if (ha < 0)
        return false;
    struct alt *al = &g->rules[r].alts[a];
    for (int i = from; i < al->n; i++) {
        struct item it = g->rules[r].alts[a].it[i];
        if (!push_item(g, h, ha, it.kind, it.arg))
            return false;
        al = &g->rules[r].alts[a];
    }
    al->n = from;
    return push_item(g, r, a, GR_REF, h);
}

/* X* as a rule: R ::= X R | (empty). */
static int star_rule(struct gb *g, struct item x)
{
    int h = new_rule(g, NULL, 0);
    if (h < 0)
        return -1;
    g->rules[h].defined = true;
    int a0 = new_alt(g, h);
    if (a0 < 0 || !push_item(g, h, a0, x.kind, x.arg) || !push_item(g, h, a0, GR_REF, h))
        return -1;
    if (new_alt(g, h) < 0)
        return -1;
    return h;
}

static bool apply_quantifier(struct gb *g, int r, int a, int from)
{
    skip_space(g);
    int c = peek(g);
    long lo, hi; /* hi -1: unbounded */
    if (c == '*') {
        lo = 0, hi = -1;
        g->pos++;
    } else if (c == '+') {
        lo = 1, hi = -1;
        g->pos++;
    } else if (c == '?') {
        lo = 0, hi = 1;
        g->pos++;
    } else if (c == '{') {
        size_t start = g->pos++;
        char *end;
        skip_space(g);
        lo = strtol(g->s + g->pos, &end, 10);
        if (end == g->s + g->pos)
            return fail(g, "expected a number after '{' at offset %zu", start), false;
        g->pos = (size_t)(end - g->s);
        skip_space(g);
        hi = lo;
        if (peek(g) == ',') {
            g->pos++;
            skip_space(g);
            if (peek(g) == '}') {
                hi = -1;
            } else {
                hi = strtol(g->s + g->pos, &end, 10);
                if (end == g->s + g->pos)
                    return fail(g, "bad repetition at offset %zu", start), false;
                g->pos = (size_t)(end - g->s);
                skip_space(g);
            }
        }
        if (peek(g) != '}')
            return fail(g, "expected '}' closing the repetition at offset %zu", start), false;
        g->pos++;
        if (lo < 0 || lo > GR_MAX_REPEAT || hi > GR_MAX_REPEAT || (hi >= 0 && hi < lo))
            return fail(g, "repetition {%ld,%ld} at offset %zu is out of range (bounds up to %d)",
                        lo, hi, start, GR_MAX_REPEAT),
                   false;
    } else {
        return true;
    }
    if (g->rules[r].alts[a].n - from != 1 && !wrap(g, r, a, from))
        return false;
    struct alt *al = &g->rules[r].alts[a];
    struct item x = al->it[al->n - 1];
    al->n--;
    for (long i = 0; i < lo; i++)
        if (!push_item(g, r, a, x.kind, x.arg))
            return false;
    if (hi < 0) {
        int h = star_rule(g, x);
        return h >= 0 && push_item(g, r, a, GR_REF, h);
    }
    if (hi == lo)
        return true;
    /* n - m nested optionals, innermost first: O1 ::= X | (); Ok ::= X O(k-1) | () */
    int inner = -1;
    for (long k = 0; k < hi - lo; k++) {
        int h = new_rule(g, NULL, 0);
        if (h < 0)
            return false;
        g->rules[h].defined = true;
        int a0 = new_alt(g, h);
        if (a0 < 0 || !push_item(g, h, a0, x.kind, x.arg))
            return false;
        if (inner >= 0 && !push_item(g, h, a0, GR_REF, inner))
            return false;
        if (new_alt(g, h) < 0)
            return false;
        inner = h;
    }
    return push_item(g, r, a, GR_REF, inner);
}

static bool parse_class(struct gb *g, int r, int a)
{
    size_t start = g->pos++;
    struct cls c = {0};
    bool neg = false;
    if (peek(g) == '^') {
        neg = true;
        g->pos++;
    }
    bool ok = true;
    while (ok) {
        if (g->pos >= g->len) {
            fail(g, "unterminated character class at offset %zu", start);
            ok = false;
            break;
        }
        if (g->s[g->pos] == ']') {
            g->pos++;
            break;
        }
        uint32_t lo, hi;
        if (!read_char(g, &lo)) {
            ok = false;
            break;
        }
        hi = lo;
        if (g->pos + 1 < g->len && g->s[g->pos] == '-' && g->s[g->pos + 1] != ']') {
            g->pos++;
            if (!read_char(g, &hi)) {
                ok = false;
                break;
            }
            if (hi < lo) {
                fail(g, "character class range out of order at offset %zu", start);
                ok = false;
                break;
            }
        }
        ok = cls_add(g, &c, lo, hi);
    }
    if (ok && neg)
        ok = cls_negate(g, &c);
    if (ok)
        ok = push_class(g, r, a, &c);
    free(c.r);
    return ok;
}

static bool parse_sequence(struct gb *g, int r, int a, bool nested)
{
    for (;;) {
        skip_space(g);
        int c = peek(g);
        if (c < 0 || c == '|' || c == ')')
            return true;
        if (!nested && rule_def_at(g, g->pos))
            return true;
        int from = g->rules[r].alts[a].n;
        if (c == '"') {
            size_t start = g->pos++;
            for (;;) {
                if (g->pos >= g->len)
                    return fail(g, "unterminated string at offset %zu", start), false;
                if (g->s[g->pos] == '"') {
                    g->pos++;
                    break;
                }
                uint32_t cp;
                if (!read_char(g, &cp))
                    return false;
                unsigned char u[4];
                int n = utf8_encode(cp, u);
                for (int i = 0; i < n; i++)
                    if (!push_byte_range(g, r, a, u[i], u[i]))
                        return false;
            }
            if (g->rules[r].alts[a].n == from) {
                /* "" is the empty sequence: nothing to quantify */
                skip_space(g);
                c = peek(g);
                if (c == '*' || c == '+' || c == '?' || c == '{')
                    return fail(g, "a quantifier after an empty string at offset %zu", g->pos),
                           false;
                continue;
            }
        } else if (c == '[') {
            if (!parse_class(g, r, a))
                return false;
        } else if (c == '.') {
            g->pos++;
            struct cls any = {0};
            bool ok = cls_add(g, &any, 0, 0x10FFFF) && push_class(g, r, a, &any);
            free(any.r);
            if (!ok)
                return false;
        } else if (c == '(') {
            size_t start = g->pos++;
            if (++g->depth > GR_MAX_DEPTH)
                return fail(g, "groups nested deeper than %d", GR_MAX_DEPTH), false;
            int h = new_rule(g, NULL, 0);
            if (h < 0)
                return false;
            g->rules[h].defined = true;
            if (!parse_alternates(g, h, true))
                return false;
            g->depth--;
            skip_space(g);
            if (peek(g) != ')')
                return fail(g, "unclosed '(' at offset %zu", start), false;
            g->pos++;
            if (!push_item(g, r, a, GR_REF, h))
                return false;
        } else if (is_name_char(c)) {
            size_t n = name_len_at(g, g->pos);
            int ref = find_rule(g, g->s + g->pos, n);
            if (ref < 0) {
                ref = new_rule(g, g->s + g->pos, n);
                if (ref < 0)
                    return false;
            }
            if (g->rules[ref].first_use < 0)
                g->rules[ref].first_use = (int)g->pos;
            g->pos += n;
            if (!push_item(g, r, a, GR_REF, ref))
                return false;
        } else {
            return fail(g, "unexpected '%c' at offset %zu", c, g->pos), false;
        }
        if (!apply_quantifier(g, r, a, from))
            return false;
    }
}

static bool parse_alternates(struct gb *g, int r, bool nested)
{
    for (;;) {
        int a = new_alt(g, r);
        if (a < 0 || !parse_sequence(g, r, a, nested))
            return false;
        skip_space(g);
        if (peek(g) != '|')
            return true;
        g->pos++;
    }
}

static bool parse_rules(struct gb *g)
{
    for (;;) {
        skip_space(g);
        if (g->pos >= g->len)
            return true;
        size_t n = name_len_at(g, g->pos);
        if (n == 0 || !rule_def_at(g, g->pos))
            return fail(g, "expected a rule definition (name ::= ...) at offset %zu", g->pos),
                   false;
        int r = find_rule(g, g->s + g->pos, n);
        if (r >= 0 && g->rules[r].defined)
            return fail(g, "rule '%.*s' is defined twice", (int)n, g->s + g->pos), false;
        if (r < 0 && (r = new_rule(g, g->s + g->pos, n)) < 0)
            return false;
        g->rules[r].defined = true;
        g->pos += n;
        skip_space(g);
        g->pos += 3; /* ::= */
        if (!parse_alternates(g, r, false))
            return false;
        skip_space(g);
        if (peek(g) == ')')
            return fail(g, "unmatched ')' at offset %zu", g->pos), false;
    }
}

/* ---- checks and flattening ---- */

static const char *rule_label(const struct gb *g, int r)
{
    return g->rules[r].name ? g->rules[r].name : "(a group or repetition)";
}

/*
 * Left recursion: rule r reaches itself through references each preceded only
 * by nullable items. Found by a depth-first search over "can start with" edges.
 */
static bool find_left_cycle(struct gb *g, const bool *nullable, int r, char *mark, int *cyc)
{
    mark[r] = 1;
    struct rule *ru = &g->rules[r];
    for (int a = 0; a < ru->n_alts; a++) {
        for (int i = 0; i < ru->alts[a].n; i++) {
            struct item it = ru->alts[a].it[i];
            if (it.kind != GR_REF)
                break;
            if (mark[it.arg] == 1) {
                *cyc = it.arg;
                return true;
            }
            if (mark[it.arg] == 0 && find_left_cycle(g, nullable, it.arg, mark, cyc))
                return true;
            if (!nullable[it.arg])
                break;
        }
    }
    mark[r] = 2;
    return false;
}

/*
 * first[] / tail_nullable[] / rule_nullable[] by a fixpoint: each alternative is
 * walked backwards (an element's tail is the element then the next one's tail), and
 * the rules' sets grow until nothing changes.
 */
static bool derive_first(struct pl_grammar *G)
{
    G->first = calloc((size_t)G->n_el, sizeof(*G->first));
    G->tail_nullable = calloc((size_t)G->n_el, sizeof(bool));
    G->rule_nullable = calloc((size_t)G->n_rules, sizeof(bool));
    uint32_t(*rfirst)[8] = calloc((size_t)G->n_rules, sizeof(*rfirst));
    if (!G->first || !G->tail_nullable || !G->rule_nullable || !rfirst) {
        free(rfirst);
        return false;
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int r = 0; r < G->n_rules; r++) {
            for (int a = G->rule_alt0[r]; a < G->rule_alt0[r + 1]; a++) {
                int p0 = G->alt_start[a], end = p0;
                while (G->el[end].kind != GR_END)
                    end++;
                G->tail_nullable[end] = true;
                for (int p = end - 1; p >= p0; p--) {
                    uint32_t f[8];
                    bool nul;
                    if (G->el[p].kind == GR_BYTES) {
                        memcpy(f, G->sets[G->el[p].arg], sizeof(f));
                        nul = false;
                    } else {
                        int q = G->el[p].arg;
                        memcpy(f, rfirst[q], sizeof(f));
                        nul = G->rule_nullable[q] && G->tail_nullable[p + 1];
                        if (G->rule_nullable[q])
                            for (int w = 0; w < 8; w++)
                                f[w] |= G->first[p + 1][w];
                    }
                    if (memcmp(f, G->first[p], sizeof(f)) || nul != G->tail_nullable[p]) {
                        memcpy(G->first[p], f, sizeof(f));
                        G->tail_nullable[p] = nul;
                        changed = true;
                    }
                }
                for (int w = 0; w < 8; w++) {
                    uint32_t v = rfirst[r][w] | G->first[p0][w];
                    if (v != rfirst[r][w]) {
                        rfirst[r][w] = v;
                        changed = true;
                    }
                }
                if (G->tail_nullable[p0] && !G->rule_nullable[r]) {
                    G->rule_nullable[r] = true;
                    changed = true;
                }
            }
        }
    }
    free(rfirst);
    return true;
}

/*
 * follow[] / el_rule[]: for each reference to rule x at position q of an alternative of
 * rule y, follow[x] gets first[q + 1], and follow[y] too when the rest from q + 1 can be
 * empty (a tail call's continuation is its caller's); grown until nothing changes.
 */
static bool derive_follow(struct pl_grammar *G)
{
    G->follow = calloc((size_t)(G->n_rules ? G->n_rules : 1), sizeof(*G->follow));
    G->el_rule = malloc((size_t)(G->n_el ? G->n_el : 1) * sizeof(int32_t));
    if (!G->follow || !G->el_rule)
        return false;
    for (int r = 0; r < G->n_rules; r++)
        for (int a = G->rule_alt0[r]; a < G->rule_alt0[r + 1]; a++)
            for (int p = G->alt_start[a];; p++) {
                G->el_rule[p] = r;
                if (G->el[p].kind == GR_END)
                    break;
            }
    for (bool changed = true; changed;) {
        changed = false;
        for (int p = 0; p < G->n_el; p++) {
            if (G->el[p].kind != GR_REF)
                continue;
            uint32_t *fx = G->follow[G->el[p].arg];
            const uint32_t *fy = G->follow[G->el_rule[p]];
            for (int w = 0; w < 8; w++) {
                uint32_t v = fx[w] | G->first[p + 1][w] | (G->tail_nullable[p + 1] ? fy[w] : 0);
                if (v != fx[w]) {
                    fx[w] = v;
                    changed = true;
                }
            }
        }
    }
    return true;
}

static pl_status finish(struct gb *g, struct pl_grammar **out)
{
    for (int r = 0; r < g->n_rules; r++)
        if (!g->rules[r].defined)
            return fail(g, "rule '%s' is used (offset %d) but not defined", g->rules[r].name,
                        g->rules[r].first_use);
    int root = find_rule(g, "root", 4);
    if (root < 0)
        return fail(g, "no rule named 'root' (the start rule)");
    bool *nullable = calloc((size_t)g->n_rules, sizeof(bool));
    char *mark = calloc((size_t)g->n_rules, 1);
    if (!nullable || !mark) {
        free(nullable);
        free(mark);
        return oom(g);
    }
    for (bool changed = true; changed;) {
        changed = false;
        for (int r = 0; r < g->n_rules; r++) {
            if (nullable[r])
                continue;
            for (int a = 0; a < g->rules[r].n_alts && !nullable[r]; a++) {
                bool all = true;
                for (int i = 0; i < g->rules[r].alts[a].n && all; i++) {
                    struct item it = g->rules[r].alts[a].it[i];
                    all = it.kind == GR_REF && nullable[it.arg];
                }
                if (all)
                    nullable[r] = changed = true;
            }
        }
    }
    int cyc = -1;
    for (int r = 0; r < g->n_rules && cyc < 0; r++)
        if (!mark[r])
            find_left_cycle(g, nullable, r, mark, &cyc);
    free(nullable);
    free(mark);
    if (cyc >= 0)
        return fail(g, "rule '%s' is left-recursive (it can reach itself before any character)",
                    rule_label(g, cyc));

    struct pl_grammar *G = calloc(1, sizeof(*G));
    if (!G)
        return oom(g);
    long n_el = 0, n_alts = 0;
    for (int r = 0; r < g->n_rules; r++) {
        n_alts += g->rules[r].n_alts;
        for (int a = 0; a < g->rules[r].n_alts; a++)
            n_el += g->rules[r].alts[a].n + 1;
    }
    G->el = malloc((size_t)(n_el ? n_el : 1) * sizeof(*G->el));
    G->alt_start = malloc((size_t)(n_alts ? n_alts : 1) * sizeof(int32_t));
    G->rule_alt0 = malloc((size_t)(g->n_rules + 1) * sizeof(int32_t));
    G->sets = malloc((size_t)(g->n_sets ? g->n_sets : 1) * sizeof(*G->sets));
    if (!G->el || !G->alt_start || !G->rule_alt0 || !G->sets) {
        pl_grammar_free(G);
        return oom(g);
    }
    if (g->n_sets > 0)
        memcpy(G->sets, g->sets, (size_t)g->n_sets * sizeof(*G->sets));
    G->n_sets = g->n_sets;
    int e = 0, k = 0;
    for (int r = 0; r < g->n_rules; r++) {
        G->rule_alt0[r] = k;
        for (int a = 0; a < g->rules[r].n_alts; a++) {
            G->alt_start[k++] = e;
            for (int i = 0; i < g->rules[r].alts[a].n; i++)
                G->el[e++] = (struct gr_elem){g->rules[r].alts[a].it[i].kind,
                                              g->rules[r].alts[a].it[i].arg};
            G->el[e++] = (struct gr_elem){GR_END, 0};
        }
    }
    G->rule_alt0[g->n_rules] = k;
    G->n_el = e;
    G->n_alts = k;
    G->n_rules = g->n_rules;
    G->root = root;
    if (!derive_first(G) || !derive_follow(G)) {
        pl_grammar_free(G);
        return oom(g);
    }
    *out = G;
    return PL_STATUS_OK;
}

pl_status gr_compile_gbnf(const char *text, struct pl_grammar **out, struct pl_err *err)
{
    *out = NULL;
    struct gb g = {0};
    g.s = text;
    g.len = strlen(text);
    g.err = err;
    if (g.len > GR_MAX_TEXT)
        fail(&g, "the grammar text is too long (%zu bytes, at most %d)", g.len, GR_MAX_TEXT);
    else if (parse_rules(&g))
        finish(&g, out);
    for (int r = 0; r < g.n_rules; r++) {
        for (int a = 0; a < g.rules[r].n_alts; a++)
            free(g.rules[r].alts[a].it);
        free(g.rules[r].alts);
        free(g.rules[r].name);
    }
    free(g.rules);
    free(g.sets);
    return g.st;
}

void pl_grammar_free(struct pl_grammar *G)
{
    if (!G)
        return;
    free(G->el);
    free(G->alt_start);
    free(G->rule_alt0);
    free(G->sets);
    free(G->first);
    free(G->tail_nullable);
    free(G->rule_nullable);
    free(G->follow);
    free(G->el_rule);
    free(G);
}
