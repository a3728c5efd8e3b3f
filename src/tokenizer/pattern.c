/*
 * pattern.c -- the {"String": ...} / {"Regex": ...} patterns of Split and Replace.
 *
 * Owns: compiling regexes with PCRE2 (UTF + UCP, so \p{L}, \s and \w are
 * Unicode-aware like Oniguruma in HF tokenizers; JIT when available) and
 * find_matches: covering a string with pieces flagged match / non-match in
 * order, exactly as HF's Pattern::find_matches does (an empty input gives one
 * empty non-match piece; an empty regex match is reported and the search
 * moves on by one character).
 * Invariants: inputs are valid UTF-8 (matching skips PCRE2's UTF check).
 */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

pl_status tok_regex_compile(const char *src, size_t len, const char *where, pcre2_code **out,
                            struct pl_err *err)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)src, len, PCRE2_UTF | PCRE2_UCP, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s: regex not supported at offset %zu: %s",
                          where, (size_t)off, (const char *)msg);
    }
    /* JIT is an optimisation only: interpretation gives the same matches. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return PL_STATUS_OK;
}

pl_status tok_pattern_parse(const struct tok_json *v, const char *where, struct tok_pattern *p,
                            struct pl_err *err)
{
    memset(p, 0, sizeof(*p));
    if (!v || v->type != TJ_OBJECT || v->n != 1)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: expected an object {\"String\": ...} or {\"Regex\": ...}", where);
    const struct tok_json *s = tok_json_get(v, "String");
    const struct tok_json *r = tok_json_get(v, "Regex");
    const struct tok_json *x = s ? s : r;
    if (!x || x->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: expected an object {\"String\": ...} or {\"Regex\": ...}", where);
    p->is_regex = r != NULL;
    p->str = malloc(x->n + 1);
    if (!p->str)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    memcpy(p->str, x->u.str, x->n + 1);
    p->len = x->n;
    if (p->is_regex) {
        pl_status st = tok_regex_compile(p->str, p->len, where, &p->re, err);
        if (st != PL_STATUS_OK) {
            free(p->str);
            p->str = NULL;
            return st;
        }
    }
    return PL_STATUS_OK;
}

void tok_pattern_fini(struct tok_pattern *p)
{
    free(p->str);
    pcre2_code_free(p->re);
    memset(p, 0, sizeof(*p));
}

void tok_matches_free(struct tok_matches *m)
{
    free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}

static bool push_match(struct tok_matches *m, size_t s, size_t e, bool is_match)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct tok_match *v = realloc(m->v, cap * sizeof(*v));
        if (!v)
            return false;
        m->v = v;
        m->cap = cap;
    }
    m->v[m->n++] = (struct tok_match){s, e, is_match};
    return true;
}

pl_status tok_regex_find(const pcre2_code *re, const char *s, size_t n, struct tok_matches *out,
                         struct pl_err *err)
{
    out->n = 0;
    if (n == 0) {
        if (!push_match(out, 0, 0, false))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        return PL_STATUS_OK;
    }
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    if (!md)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    size_t prev = 0, pos = 0;
    pl_status st = PL_STATUS_OK;
    while (pos < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof(msg));
            st = pl_err_set(err, PL_STATUS_LIMIT, "regex match failed: %s", (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms < prev || me < ms) /* \K or lookbehind tricks: treat as no further match */
            break;
        if (prev != ms && !push_match(out, prev, ms, false))
            goto oom;
        if (!push_match(out, ms, me, true))
            goto oom;
        prev = me;
        if (me == ms) {
            /* Empty match: step over one character. */
            size_t step = 1;
            while (me + step < n && ((unsigned char)s[me + step] & 0xC0) == 0x80)
                step++;
            pos = me + step;
        } else
            pos = me;
    }
    if (st == PL_STATUS_OK && prev != n && !push_match(out, prev, n, false))
        goto oom;
    pcre2_match_data_free(md);
    return st;
oom:
    pcre2_match_data_free(md);
    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
}

pl_status tok_pattern_find(const struct tok_pattern *p, const char *s, size_t n,
                           struct tok_matches *out, struct pl_err *err)
{
    if (p->is_regex)
        return tok_regex_find(p->re, s, n, out, err);
    out->n = 0;
    if (n == 0 || p->len == 0) {
        if (!push_match(out, 0, n, false))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        return PL_STATUS_OK;
    }
    size_t prev = 0, pos = 0;
    while (pos + p->len <= n) {
        const char *hit = memmem(s + pos, n - pos, p->str, p->len);
        if (!hit)
            break;
        size_t ms = (size_t)(hit - s);
        if (prev != ms && !push_match(out, prev, ms, false))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        if (!push_match(out, ms, ms + p->len, true))
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        prev = pos = ms + p->len;
    }
    if (prev != n && !push_match(out, prev, n, false))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    return PL_STATUS_OK;
}
