/*
 * normalizer.c -- tokenizer.json "normalizer": text -> normalized text.
 *
 * Owns: parsing and running NFC, NFD, NFKC, NFKD (utf8proc), Lowercase,
 * Strip, StripAccents, Prepend, Replace (string or regex) and Sequence.
 * BertNormalizer, Precompiled (SentencePiece charsmaps), Nmt and the rest are
 * refused at load time with PL_STATUS_UNSUPPORTED.
 * Semantics follow HF tokenizers: Lowercase maps each character on its own
 * (no final-sigma context), Prepend adds nothing to an empty string, Strip
 * removes White_Space characters, StripAccents drops combining marks.
 * We only need the normalized text, not HF's alignment bookkeeping.
 */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static bool get_bool(const struct tok_json *obj, const char *key, bool dflt)
{
    const struct tok_json *v = tok_json_get(obj, key);
    if (!v || v->type == TJ_NULL)
        return dflt;
    return v->type == TJ_TRUE;
}

static pl_status dup_string(const struct tok_json *v, const char *where, char **out, size_t *len,
                            struct pl_err *err)
{
    if (!v || v->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: expected a string", where);
    *out = malloc(v->n + 1);
    if (!*out)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    memcpy(*out, v->u.str, v->n + 1);
    *len = v->n;
    return PL_STATUS_OK;
}

void tok_normalizer_free(struct tok_normalizer *n)
{
    if (!n)
        return;
    for (int i = 0; i < n->n_items; i++)
        tok_normalizer_free(n->items[i]);
    free(n->items);
    free(n->content);
    tok_pattern_fini(&n->pattern);
    free(n);
}

pl_status tok_normalizer_parse(const struct tok_json *v, const char *where,
                               struct tok_normalizer **out, struct pl_err *err)
{
    *out = NULL;
    if (!v || v->type != TJ_OBJECT)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: expected an object", where);
    const struct tok_json *t = tok_json_get(v, "type");
    if (!t || t->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.type: expected a string", where);
    struct tok_normalizer *n = calloc(1, sizeof(*n));
    if (!n)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    char sub[256];
    pl_status st = PL_STATUS_OK;
    const char *ty = t->u.str;
    if (!strcmp(ty, "NFC"))
        n->type = TOK_NORM_NFC;
    else if (!strcmp(ty, "NFD"))
        n->type = TOK_NORM_NFD;
    else if (!strcmp(ty, "NFKC"))
        n->type = TOK_NORM_NFKC;
    else if (!strcmp(ty, "NFKD"))
        n->type = TOK_NORM_NFKD;
    else if (!strcmp(ty, "Lowercase"))
        n->type = TOK_NORM_LOWERCASE;
    else if (!strcmp(ty, "StripAccents"))
        n->type = TOK_NORM_STRIP_ACCENTS;
    else if (!strcmp(ty, "Strip")) {
        n->type = TOK_NORM_STRIP;
        n->strip_left = get_bool(v, "strip_left", true);
        n->strip_right = get_bool(v, "strip_right", true);
    } else if (!strcmp(ty, "Prepend")) {
        n->type = TOK_NORM_PREPEND;
        snprintf(sub, sizeof(sub), "%s.prepend", where);
        st = dup_string(tok_json_get(v, "prepend"), sub, &n->content, &n->content_len, err);
    } else if (!strcmp(ty, "Replace")) {
        n->type = TOK_NORM_REPLACE;
        snprintf(sub, sizeof(sub), "%s.pattern", where);
        st = tok_pattern_parse(tok_json_get(v, "pattern"), sub, &n->pattern, err);
        if (st == PL_STATUS_OK) {
            snprintf(sub, sizeof(sub), "%s.content", where);
            st = dup_string(tok_json_get(v, "content"), sub, &n->content, &n->content_len, err);
        }
    } else if (!strcmp(ty, "Sequence")) {
        n->type = TOK_NORM_SEQUENCE;
        const struct tok_json *items = tok_json_get(v, "normalizers");
        if (!items || items->type != TJ_ARRAY) {
            st = pl_err_set(err, PL_STATUS_FORMAT, "%s.normalizers: expected an array", where);
        } else {
            n->items = calloc(items->n ? items->n : 1, sizeof(*n->items));
            if (!n->items)
                st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            for (uint32_t i = 0; st == PL_STATUS_OK && i < items->n; i++) {
                snprintf(sub, sizeof(sub), "%s.normalizers[%u]", where, i);
                st = tok_normalizer_parse(&items->u.items[i], sub, &n->items[i], err);
                if (st == PL_STATUS_OK)
                    n->n_items++;
            }
        }
    } else {
        st = pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s.type: normalizer '%s' is not supported",
                        where, ty);
    }
    if (st != PL_STATUS_OK) {
        tok_normalizer_free(n);
        return st;
    }
    *out = n;
    return PL_STATUS_OK;
}

static pl_status set_result(struct tok_buf *s, struct tok_buf *r)
{
    tok_buf_free(s);
    *s = *r;
    return PL_STATUS_OK;
}

static pl_status run_utf8proc(struct tok_buf *s, utf8proc_option_t opts, struct pl_err *err)
{
    /* ASCII text is invariant under all four forms: skip the copy. */
    size_t i = 0;
    while (i < s->n && (unsigned char)s->p[i] < 0x80)
        i++;
    if (i == s->n)
        return PL_STATUS_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s->p, (utf8proc_ssize_t)s->n, &dst,
                                      UTF8PROC_STABLE | opts);
    if (r < 0)
        return pl_err_set(err, PL_STATUS_INTERNAL, "unicode normalization failed: %s",
                          utf8proc_errmsg(r));
    struct tok_buf out = {0};
    bool ok = tok_buf_add(&out, dst, (size_t)r);
    free(dst);
    if (!ok)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    return set_result(s, &out);
}

static pl_status run_lowercase(struct tok_buf *s, struct pl_err *err)
{
    struct tok_buf out = {0};
    if (!tok_buf_reserve(&out, s->n))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        i += tok_utf8_decode(s->p + i, &cp);
        char u8[8];
        int l;
        if (cp == 0x130) {
            /* The one unconditional multi-character lowercase mapping. */
            memcpy(u8, "i\xCC\x87", 3);
            l = 3;
        } else
            l = tok_utf8_encode(utf8proc_tolower(cp), u8);
        if (!tok_buf_add(&out, u8, l)) {
            tok_buf_free(&out);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    }
    return set_result(s, &out);
}

static pl_status run_strip(struct tok_buf *s, bool left, bool right)
{
    size_t a = 0, b = s->n;
    if (left) {
        while (a < b) {
            int32_t cp;
            int l = tok_utf8_decode(s->p + a, &cp);
            if (!tok_cp_is_whitespace(cp))
                break;
            a += l;
        }
    }
    if (right) {
        while (b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s->p[k] & 0xC0) == 0x80)
                k--;
            int32_t cp;
            tok_utf8_decode(s->p + k, &cp);
            if (!tok_cp_is_whitespace(cp))
                break;
            b = k;
        }
    }
    memmove(s->p, s->p + a, b - a);
    s->n = b - a;
    if (s->p)
        s->p[s->n] = 0;
    return PL_STATUS_OK;
}

static pl_status run_strip_accents(struct tok_buf *s)
{
    size_t w = 0;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        int l = tok_utf8_decode(s->p + i, &cp);
        utf8proc_category_t c = utf8proc_category(cp);
        if (c != UTF8PROC_CATEGORY_MN && c != UTF8PROC_CATEGORY_MC && c != UTF8PROC_CATEGORY_ME) {
            memmove(s->p + w, s->p + i, l);
            w += l;
        }
        i += l;
    }
    s->n = w;
    if (s->p)
        s->p[w] = 0;
    return PL_STATUS_OK;
}

static pl_status run_replace(const struct tok_normalizer *n, struct tok_buf *s, struct pl_err *err)
{
    struct tok_matches m = {0};
    pl_status st = tok_pattern_find(&n->pattern, s->p ? s->p : "", s->n, &m, err);
    if (st != PL_STATUS_OK)
        return st;
    struct tok_buf out = {0};
    bool ok = tok_buf_reserve(&out, s->n);
    for (size_t i = 0; ok && i < m.n; i++) {
        if (m.v[i].is_match)
            ok = tok_buf_add(&out, n->content, n->content_len);
        else
            ok = tok_buf_add(&out, s->p + m.v[i].start, m.v[i].end - m.v[i].start);
    }
    tok_matches_free(&m);
    if (!ok) {
        tok_buf_free(&out);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    }
    return set_result(s, &out);
}

pl_status tok_normalize(const struct tok_normalizer *n, struct tok_buf *s, struct pl_err *err)
{
    switch (n->type) {
    case TOK_NORM_NFC:
        return run_utf8proc(s, UTF8PROC_COMPOSE, err);
    case TOK_NORM_NFD:
        return run_utf8proc(s, UTF8PROC_DECOMPOSE, err);
    case TOK_NORM_NFKC:
        return run_utf8proc(s, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, err);
    case TOK_NORM_NFKD:
        return run_utf8proc(s, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, err);
    case TOK_NORM_LOWERCASE:
        return run_lowercase(s, err);
    case TOK_NORM_STRIP:
        return run_strip(s, n->strip_left, n->strip_right);
    case TOK_NORM_STRIP_ACCENTS:
        return run_strip_accents(s);
    case TOK_NORM_PREPEND: {
        if (s->n == 0)
            return PL_STATUS_OK;
        struct tok_buf out = {0};
        if (!tok_buf_add(&out, n->content, n->content_len) || !tok_buf_add(&out, s->p, s->n)) {
            tok_buf_free(&out);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
        return set_result(s, &out);
    }
    case TOK_NORM_REPLACE:
        return run_replace(n, s, err);
    case TOK_NORM_SEQUENCE:
        for (int i = 0; i < n->n_items; i++) {
            pl_status st = tok_normalize(n->items[i], s, err);
            if (st != PL_STATUS_OK)
                return st;
        }
        return PL_STATUS_OK;
    }
    return pl_err_set(err, PL_STATUS_INTERNAL, "unknown normalizer");
}
