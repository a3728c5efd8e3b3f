/*
 * lexer.c -- chat template source -> tokens, with jinja2's whitespace control.
 *
 * Owns: the token array of one parse (in the template arena).
 * Mirrors jinja2's Lexer as transformers configures it (trim_blocks=True,
 * lstrip_blocks=True, default delimiters):
 *   - "{%-" / "{{-" / "{#-" strip all whitespace (Python's unicode \s) before the tag;
 *     "-%}" / "-}}" / "-#}" strip all whitespace after it;
 *   - lstrip_blocks: spaces and tabs between a line start and "{%" or "{#" are
 *     removed unless the tag opens with "+"; never before "{{";
 *   - trim_blocks: one "\n" right after "%}" or "#}" is removed unless "+%}";
 *   - "%}" / "}}" close a tag only when brackets are balanced ({{ {'a': 1}}}).
 * The source handed in is already newline-normalized (see chat_template.c).
 */
#include "tokenizer/chat_template/ct_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lexer {
    struct ct_fail *f;
    const char *s;
    size_t n;
    struct ct_token *toks;
    size_t n_toks, cap;
};

static struct ct_token *emit(struct lexer *L, enum ct_tok type, size_t pos)
{
    if (L->n_toks == L->cap) {
        size_t cap = L->cap ? L->cap * 2 : 256;
        struct ct_token *t = ct_alloc(L->f, cap * sizeof(*t));
        if (L->n_toks)
            memcpy(t, L->toks, L->n_toks * sizeof(*t));
        L->toks = t;
        L->cap = cap;
    }
    struct ct_token *t = &L->toks[L->n_toks++];
    memset(t, 0, sizeof(*t));
    t->type = type;
    t->pos = pos;
    return t;
}

static void emit_data(struct lexer *L, size_t from, size_t to)
{
    if (to > from) {
        struct ct_token *t = emit(L, TK_DATA, from);
        t->s = L->s + from;
        t->n = to - from;
    }
}

/* Length of the Python whitespace character at i, 0 if none. */
static int space_at(const struct lexer *L, size_t i)
{
    if (i >= L->n)
        return 0;
    uint32_t cp;
    int len = ct_utf8_dec(L->s, L->n, i, &cp);
    return ct_py_isspace(cp) ? len : 0;
}

static size_t skip_space(const struct lexer *L, size_t i)
{
    int k;
    while ((k = space_at(L, i)) > 0)
        i += (size_t)k;
    return i;
}

/* End of text [from, to) with trailing Python whitespace removed. */
static size_t rstrip_space(const struct lexer *L, size_t from, size_t to)
{
    while (to > from) {
        size_t i = to - 1;
        while (i > from && ((unsigned char)L->s[i] & 0xC0) == 0x80)
            i--;
        uint32_t cp;
        ct_utf8_dec(L->s, L->n, i, &cp);
        if (!ct_py_isspace(cp))
            break;
        to = i;
    }
    return to;
}

/* Applies the opening tag's whitespace rules to the text [from, to) before it. */
static size_t strip_before_tag(const struct lexer *L, size_t from, size_t to, char sign,
                               bool can_lstrip, bool line_starting)
{
    if (sign == '-')
        return rstrip_space(L, from, to);
    if (sign == '+' || !can_lstrip)
        return to;
    size_t l_pos = from;
    bool has_nl = false;
    for (size_t i = to; i > from; i--) {
        if (L->s[i - 1] == '\n') {
            l_pos = i;
            has_nl = true;
            break;
        }
    }
    if (!has_nl && !line_starting)
        return to;
    for (size_t i = l_pos; i < to; i++)
        if (L->s[i] != ' ' && L->s[i] != '\t')
            return to;
    return l_pos;
}

static bool at(const struct lexer *L, size_t i, const char *lit)
{
    size_t k = strlen(lit);
    return i <= L->n && L->n - i >= k && memcmp(L->s + i, lit, k) == 0;
}

/* Matches "{%[-+]?\s*<word>\s*" at i, then a block end; returns the position
 * after the whole tag (with trim rules) or 0 when no match. *sign receives the
 * opening sign. */
static size_t match_word_tag(const struct lexer *L, size_t i, const char *word, char *sign,
                             bool trim_newline)
{
    if (!at(L, i, "{%"))
        return 0;
    i += 2;
    *sign = 0;
    if (i < L->n && (L->s[i] == '-' || L->s[i] == '+'))
        *sign = L->s[i++];
    i = skip_space(L, i);
    if (!at(L, i, word))
        return 0;
    i = skip_space(L, i + strlen(word));
    if (trim_newline && at(L, i, "+%}"))
        return i + 3;
    if (at(L, i, "-%}"))
        return skip_space(L, i + 3);
    if (at(L, i, "%}")) {
        i += 2;
        if (trim_newline && i < L->n && L->s[i] == '\n')
            i++;
        return i;
    }
    return 0;
}

static int digits_run(const struct lexer *L, size_t *i)
{
    /* (\d+_)*\d+ */
    size_t j = *i;
    if (j >= L->n || !isdigit((unsigned char)L->s[j]))
        return 0;
    while (j < L->n) {
        if (isdigit((unsigned char)L->s[j])) {
            j++;
        } else if (L->s[j] == '_' && j + 1 < L->n && isdigit((unsigned char)L->s[j + 1])) {
            j++;
        } else {
            break;
        }
    }
    *i = j;
    return 1;
}

static void copy_digits(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++)
        if (s[i] != '_')
            out[k++] = s[i];
    out[k] = '\0';
}

static void lex_number(struct lexer *L, size_t *pi)
{
    size_t start = *pi, i = *pi;
    /* 0x / 0o / 0b integers */
    if (L->s[i] == '0' && i + 1 < L->n && strchr("xXoObB", L->s[i + 1]) && L->s[i + 1]) {
        int base = strchr("xX", L->s[i + 1]) ? 16 : strchr("oO", L->s[i + 1]) ? 8 : 2;
        size_t j = i + 2;
        uint64_t v = 0;
        bool any = false;
        while (j < L->n) {
            char c = L->s[j];
            int d = isdigit((unsigned char)c) ? c - '0'
                    : (c >= 'a' && c <= 'f')  ? c - 'a' + 10
                    : (c >= 'A' && c <= 'F')  ? c - 'A' + 10
                    : c == '_'                ? -2
                                              : -1;
            if (d == -2) {
                j++;
                continue;
            }
            if (d < 0 || d >= base)
                break;
            if (v > (uint64_t)INT64_MAX / (uint64_t)base)
                ct_fail_at(L->f, PL_STATUS_UNSUPPORTED, start, "integer literal too large");
            v = v * (uint64_t)base + (uint64_t)d;
            any = true;
            j++;
        }
        if (any && v <= (uint64_t)INT64_MAX) {
            struct ct_token *t = emit(L, TK_INT, start);
            t->i = (int64_t)v;
            *pi = j;
            return;
        }
    }
    digits_run(L, &i);
    size_t int_end = i;
    bool is_float = false;
    bool after_dot = start > 0 && L->s[start - 1] == '.';
    if (!after_dot) {
        size_t j = i;
        if (j + 1 < L->n && L->s[j] == '.' && isdigit((unsigned char)L->s[j + 1])) {
            j++;
            digits_run(L, &j);
            is_float = true;
            i = j;
        }
        if (i < L->n && (L->s[i] == 'e' || L->s[i] == 'E')) {
            size_t k = i + 1;
            if (k < L->n && (L->s[k] == '+' || L->s[k] == '-'))
                k++;
            if (digits_run(L, &k)) {
                is_float = true;
                i = k;
            }
        }
    }
    char buf[512];
    if (is_float) {
        copy_digits(L->s + start, i - start, buf, sizeof(buf));
        struct ct_token *t = emit(L, TK_FLOAT, start);
        t->f = strtod(buf, NULL);
        *pi = i;
        return;
    }
    copy_digits(L->s + start, int_end - start, buf, sizeof(buf));
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno == ERANGE)
        ct_fail_at(L->f, PL_STATUS_UNSUPPORTED, start, "integer literal too large");
    struct ct_token *t = emit(L, TK_INT, start);
    t->i = v;
    *pi = int_end;
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

/* A string literal body with Python's unicode-escape rules (as jinja2 decodes it). */
static void lex_string(struct lexer *L, size_t *pi)
{
    size_t start = *pi;
    char q = L->s[start];
    size_t i = start + 1;
    while (i < L->n && L->s[i] != q) {
        if (L->s[i] == '\\')
            i++;
        i++;
    }
    if (i >= L->n)
        ct_fail_at(L->f, PL_STATUS_FORMAT, start, "unterminated string literal");
    size_t body = start + 1, end = i;
    char *out = ct_alloc(L->f, end - body + 1);
    size_t k = 0;
    for (size_t j = body; j < end;) {
        char c = L->s[j];
        if (c != '\\') {
            out[k++] = c;
            j++;
            continue;
        }
        char e = L->s[j + 1];
        j += 2;
        uint32_t cp;
        int nhex = 0;
        switch (e) {
        case '\n': continue;
        case '\\': out[k++] = '\\'; continue;
        case '\'': out[k++] = '\''; continue;
        case '"': out[k++] = '"'; continue;
        case 'a': out[k++] = '\a'; continue;
        case 'b': out[k++] = '\b'; continue;
        case 'f': out[k++] = '\f'; continue;
        case 'n': out[k++] = '\n'; continue;
        case 'r': out[k++] = '\r'; continue;
        case 't': out[k++] = '\t'; continue;
        case 'v': out[k++] = '\v'; continue;
        case 'x': nhex = 2; break;
        case 'u': nhex = 4; break;
        case 'U': nhex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                cp = (uint32_t)(e - '0');
                for (int d = 0; d < 2 && j < end && L->s[j] >= '0' && L->s[j] <= '7'; d++)
                    cp = cp * 8 + (uint32_t)(L->s[j++] - '0');
                k += (size_t)ct_utf8_enc(cp, out + k);
                continue;
            }
            /* unknown escape: kept as written */
            out[k++] = '\\';
            j--;
            continue;
        }
        cp = 0;
        for (int d = 0; d < nhex; d++) {
            int h = j < end ? hexval(L->s[j]) : -1;
            if (h < 0)
                ct_fail_at(L->f, PL_STATUS_FORMAT, j, "truncated \\%c escape in string literal", e);
            cp = cp * 16 + (uint32_t)h;
            j++;
        }
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            ct_fail_at(L->f, PL_STATUS_FORMAT, j, "invalid code point in string escape");
        k += (size_t)ct_utf8_enc(cp, out + k);
    }
    struct ct_token *t = emit(L, TK_STRING, start);
    t->s = out;
    t->n = k;
    *pi = end + 1;
}

static const struct {
    const char *s;
    int op;
} OPS[] = {
    {"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GTEQ},
    {"<=", OP_LTEQ}, {"+", OP_ADD}, {"-", OP_SUB}, {"/", OP_DIV}, {"*", OP_MUL},
    {"%", OP_MOD}, {"~", OP_TILDE}, {"[", OP_LBRACKET}, {"]", OP_RBRACKET},
    {"(", OP_LPAREN}, {")", OP_RPAREN}, {"{", OP_LBRACE}, {"}", OP_RBRACE},
    {">", OP_GT}, {"<", OP_LT}, {"=", OP_ASSIGN}, {".", OP_DOT}, {":", OP_COLON},
    {"|", OP_PIPE}, {",", OP_COMMA}, {";", OP_SEMICOLON},
};

/* Lexes the inside of a "{{" or "{%" tag from *pi up to and including its end;
 * returns whether the end consumed a trailing newline (line_starting). */
static bool lex_tag(struct lexer *L, size_t *pi, char kind, size_t tag_pos)
{
    size_t i = *pi;
    char stack[64];
    int depth = 0;
    for (;;) {
        if (i >= L->n)
            ct_fail_at(L->f, PL_STATUS_FORMAT, tag_pos, "unexpected end of template: %s not closed",
                       kind == '%' ? "block tag '{%'" : "print tag '{{'");
        if (depth == 0) {
            size_t end = 0;
            if (kind == '%') {
                if (at(L, i, "+%}")) {
                    end = i + 3;
                } else if (at(L, i, "-%}")) {
                    end = skip_space(L, i + 3);
                } else if (at(L, i, "%}")) {
                    end = i + 2;
                    if (end < L->n && L->s[end] == '\n')
                        end++;
                }
            } else {
                if (at(L, i, "-}}"))
                    end = skip_space(L, i + 3);
                else if (at(L, i, "}}"))
                    end = i + 2;
            }
            if (end) {
                emit(L, kind == '%' ? TK_BLOCK_END : TK_VAR_END, i);
                *pi = end;
                return L->s[end - 1] == '\n';
            }
        }
        int sp = space_at(L, i);
        if (sp) {
            i = skip_space(L, i);
            continue;
        }
        unsigned char c = (unsigned char)L->s[i];
        if (isdigit(c)) {
            lex_number(L, &i);
            continue;
        }
        if (isalpha(c) || c == '_') {
            size_t j = i;
            while (j < L->n && (isalnum((unsigned char)L->s[j]) || L->s[j] == '_'))
                j++;
            struct ct_token *t = emit(L, TK_NAME, i);
            t->s = L->s + i;
            t->n = j - i;
            i = j;
            continue;
        }
        if (c == '\'' || c == '"') {
            lex_string(L, &i);
            continue;
        }
        int op = -1;
        size_t oplen = 0;
        for (size_t k = 0; k < sizeof(OPS) / sizeof(OPS[0]); k++) {
            if (at(L, i, OPS[k].s)) {
                op = OPS[k].op;
                oplen = strlen(OPS[k].s);
                break;
            }
        }
        if (op < 0) {
            uint32_t cp;
            ct_utf8_dec(L->s, L->n, i, &cp);
            ct_fail_at(L->f, PL_STATUS_FORMAT, i, "unexpected character U+%04X in tag", cp);
        }
        if (op == OP_LPAREN || op == OP_LBRACKET || op == OP_LBRACE) {
            if (depth == (int)sizeof(stack))
                ct_fail_at(L->f, PL_STATUS_LIMIT, i, "brackets nested too deeply");
            stack[depth++] = op == OP_LPAREN ? ')' : op == OP_LBRACKET ? ']' : '}';
        } else if (op == OP_RPAREN || op == OP_RBRACKET || op == OP_RBRACE) {
            if (depth == 0)
                ct_fail_at(L->f, PL_STATUS_FORMAT, i, "unexpected '%c'", c);
            if (stack[depth - 1] != (char)c)
                ct_fail_at(L->f, PL_STATUS_FORMAT, i, "unexpected '%c', expected '%c'", c,
                           stack[depth - 1]);
            depth--;
        }
        struct ct_token *t = emit(L, TK_OP, i);
        t->op = op;
        i += oplen;
    }
}

void ct_lex(struct ct_fail *f, const char *src, size_t n, struct ct_token **toks, size_t *n_toks)
{
    struct lexer L = {.f = f, .s = src, .n = n};
    size_t pos = 0;
    bool line_starting = true;
    while (pos < n) {
        size_t q = pos;
        const char *hit = NULL;
        while (q + 1 < n) {
            hit = memchr(src + q, '{', n - q - 1);
            if (!hit)
                break;
            q = (size_t)(hit - src);
            char k = src[q + 1];
            if (k == '{' || k == '%' || k == '#')
                break;
            q++;
            hit = NULL;
        }
        if (!hit) {
            emit_data(&L, pos, n);
            break;
        }
        char kind = src[q + 1];
        size_t after = q + 2;
        char sign = 0;
        if (after < n && (src[after] == '-' || src[after] == '+'))
            sign = src[after++];
        char raw_sign;
        size_t raw_end = kind == '%' ? match_word_tag(&L, q, "raw", &raw_sign, false) : 0;
        size_t text_end = strip_before_tag(&L, pos, q, sign, kind != '{', line_starting);
        emit_data(&L, pos, text_end);
        if (raw_end) {
            /* body up to the first {% endraw %}, itself subject to the tag rules */
            size_t j = raw_end, body_end = 0, end = 0;
            for (; j + 1 < n; j++) {
                if (src[j] == '{' && src[j + 1] == '%') {
                    end = match_word_tag(&L, j, "endraw", &raw_sign, true);
                    if (end) {
                        body_end = j;
                        break;
                    }
                }
            }
            if (!end)
                ct_fail_at(f, PL_STATUS_FORMAT, q, "missing end of raw directive");
            bool ls = raw_end > 0 && src[raw_end - 1] == '\n';
            emit_data(&L, raw_end, strip_before_tag(&L, raw_end, body_end, raw_sign, true, ls));
            pos = end;
            line_starting = src[end - 1] == '\n';
            continue;
        }
        if (kind == '#') {
            size_t j = after, end = 0;
            for (; j + 1 < n; j++) {
                if (src[j] == '+' && at(&L, j, "+#}")) {
                    end = j + 3;
                } else if (src[j] == '-' && at(&L, j, "-#}")) {
                    end = skip_space(&L, j + 3);
                } else if (src[j] == '#' && src[j + 1] == '}') {
                    end = j + 2;
                    if (end < n && src[end] == '\n')
                        end++;
                }
                if (end)
                    break;
            }
            if (!end)
                ct_fail_at(f, PL_STATUS_FORMAT, q, "missing end of comment tag");
            pos = end;
            line_starting = src[end - 1] == '\n';
            continue;
        }
        emit(&L, kind == '%' ? TK_BLOCK_BEGIN : TK_VAR_BEGIN, q);
        pos = after;
        line_starting = lex_tag(&L, &pos, kind, q);
    }
    emit(&L, TK_EOF, n);
    *toks = L.toks;
    *n_toks = L.n_toks;
}
