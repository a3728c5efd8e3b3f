/*
 * decoder.c -- tokenizer.json "decoder": token strings -> text.
 *
 * Owns: parsing and running ByteLevel, Metaspace, Replace, ByteFallback,
 * Fuse, Strip and Sequence as HF tokenizers' decode_chain does: each decoder
 * maps the list of token strings to a new list, and the final list is
 * concatenated. Details that matter for exactness:
 *  - ByteLevel maps each token's chars back to bytes (a token with a char
 *    outside the table keeps its own UTF-8 bytes), joins everything and
 *    replaces invalid UTF-8 with U+FFFD per maximal subpart (from_utf8_lossy).
 *  - ByteFallback turns runs of "<0xNN>" tokens into their bytes; a run that
 *    is not valid UTF-8 becomes one U+FFFD per byte token.
 *  - Strip removes up to `start` leading and `stop` trailing copies of one
 *    character from every token.
 *  - Metaspace turns the replacement into a space, dropping it from the first
 *    token unless prepend_scheme is "never".
 * Others (WordPiece, BPEDecoder, CTC) are refused at load time.
 */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool tok_strlist_push(struct tok_strlist *l, const char *s, size_t n)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        struct tok_buf *v = realloc(l->v, cap * sizeof(*v));
        if (!v)
            return false;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n] = (struct tok_buf){0};
    if (!tok_buf_add(&l->v[l->n], s, n)) {
        tok_buf_free(&l->v[l->n]);
        return false;
    }
    l->n++;
    return true;
}

void tok_strlist_free(struct tok_strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        tok_buf_free(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof(*l));
}

void tok_decoder_free(struct tok_decoder *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->n_items; i++)
        tok_decoder_free(d->items[i]);
    free(d->items);
    free(d->content);
    tok_pattern_fini(&d->pattern);
    free(d);
}

static pl_status get_int(const struct tok_json *obj, const char *key, const char *where, int *out,
                         struct pl_err *err)
{
    const struct tok_json *v = tok_json_get(obj, key);
    if (tok_json_is_null(v)) {
        *out = 0;
        return PL_STATUS_OK;
    }
    if (v->type != TJ_NUMBER || v->u.num < 0 || v->u.num > 1e6 || v->u.num != (int)v->u.num)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.%s: expected a small non-negative integer",
                          where, key);
    *out = (int)v->u.num;
    return PL_STATUS_OK;
}

pl_status tok_decoder_parse(const struct tok_json *v, const char *where, struct tok_decoder **out,
                            struct pl_err *err)
{
    *out = NULL;
    if (!v || v->type != TJ_OBJECT)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: expected an object", where);
    const struct tok_json *t = tok_json_get(v, "type");
    if (!t || t->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.type: expected a string", where);
    struct tok_decoder *d = calloc(1, sizeof(*d));
    if (!d)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    char sub[256];
    pl_status st = PL_STATUS_OK;
    const char *ty = t->u.str;
    if (!strcmp(ty, "ByteLevel")) {
        d->type = TOK_DEC_BYTE_LEVEL;
    } else if (!strcmp(ty, "ByteFallback")) {
        d->type = TOK_DEC_BYTE_FALLBACK;
    } else if (!strcmp(ty, "Fuse")) {
        d->type = TOK_DEC_FUSE;
    } else if (!strcmp(ty, "Metaspace")) {
        d->type = TOK_DEC_METASPACE;
        char rep[8];
        int rl;
        st = tok_metaspace_replacement(v, where, rep, &rl, err);
        if (st == PL_STATUS_OK) {
            tok_utf8_decode(rep, &d->replacement);
            const struct tok_json *ps = tok_json_get(v, "prepend_scheme");
            if (!tok_json_is_null(ps)) {
                if (ps->type != TJ_STRING)
                    st = pl_err_set(err, PL_STATUS_FORMAT, "%s.prepend_scheme: expected a string",
                                    where);
                else if (!strcmp(ps->u.str, "never"))
                    d->prepend_scheme = TOK_PREPEND_NEVER;
                else if (!strcmp(ps->u.str, "first"))
                    d->prepend_scheme = TOK_PREPEND_FIRST;
                else if (!strcmp(ps->u.str, "always"))
                    d->prepend_scheme = TOK_PREPEND_ALWAYS;
                else
                    st = pl_err_set(err, PL_STATUS_FORMAT, "%s.prepend_scheme: unknown scheme '%s'",
                                    where, ps->u.str);
            } else {
                const struct tok_json *aps = tok_json_get(v, "add_prefix_space");
                d->prepend_scheme = (aps && aps->type == TJ_FALSE) ? TOK_PREPEND_NEVER
                                                                   : TOK_PREPEND_ALWAYS;
            }
        }
    } else if (!strcmp(ty, "Replace")) {
        d->type = TOK_DEC_REPLACE;
        snprintf(sub, sizeof(sub), "%s.pattern", where);
        st = tok_pattern_parse(tok_json_get(v, "pattern"), sub, &d->pattern, err);
        if (st == PL_STATUS_OK) {
            const struct tok_json *c = tok_json_get(v, "content");
            if (!c || c->type != TJ_STRING) {
                st = pl_err_set(err, PL_STATUS_FORMAT, "%s.content: expected a string", where);
            } else {
                d->content = malloc(c->n + 1);
                if (!d->content)
                    st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
                else {
                    memcpy(d->content, c->u.str, c->n + 1);
                    d->content_len = c->n;
                }
            }
        }
    } else if (!strcmp(ty, "Strip")) {
        d->type = TOK_DEC_STRIP;
        const struct tok_json *c = tok_json_get(v, "content");
        if (!c || c->type != TJ_STRING || c->n == 0) {
            st = pl_err_set(err, PL_STATUS_FORMAT, "%s.content: expected a one-character string",
                            where);
        } else {
            int l = tok_utf8_decode(c->u.str, &d->strip_char);
            if ((uint32_t)l != c->n)
                st = pl_err_set(err, PL_STATUS_FORMAT,
                                "%s.content: expected a one-character string", where);
        }
        if (st == PL_STATUS_OK)
            st = get_int(v, "start", where, &d->strip_start, err);
        if (st == PL_STATUS_OK)
            st = get_int(v, "stop", where, &d->strip_stop, err);
    } else if (!strcmp(ty, "Sequence")) {
        d->type = TOK_DEC_SEQUENCE;
        const struct tok_json *items = tok_json_get(v, "decoders");
        if (!items || items->type != TJ_ARRAY) {
            st = pl_err_set(err, PL_STATUS_FORMAT, "%s.decoders: expected an array", where);
        } else {
            d->items = calloc(items->n ? items->n : 1, sizeof(*d->items));
            if (!d->items)
                st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            for (uint32_t i = 0; st == PL_STATUS_OK && i < items->n; i++) {
                snprintf(sub, sizeof(sub), "%s.decoders[%u]", where, i);
                st = tok_decoder_parse(&items->u.items[i], sub, &d->items[i], err);
                if (st == PL_STATUS_OK)
                    d->n_items++;
            }
        }
    } else {
        st = pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s.type: decoder '%s' is not supported", where,
                        ty);
    }
    if (st != PL_STATUS_OK) {
        tok_decoder_free(d);
        return st;
    }
    *out = d;
    return PL_STATUS_OK;
}

static void swap_lists(struct tok_strlist *a, struct tok_strlist *b)
{
    struct tok_strlist t = *a;
    *a = *b;
    *b = t;
    tok_strlist_free(b);
}

static pl_status oom(struct tok_strlist *tmp, struct pl_err *err)
{
    tok_strlist_free(tmp);
    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
}

static pl_status byte_level(struct tok_strlist *l, struct pl_err *err)
{
    struct tok_buf bytes = {0};
    for (size_t i = 0; i < l->n; i++) {
        const struct tok_buf *t = &l->v[i];
        size_t mark = bytes.n;
        bool all = true;
        for (size_t k = 0; k < t->n;) {
            int32_t cp;
            k += tok_utf8_decode(t->p + k, &cp);
            int b = tok_byte_level_byte(cp);
            if (b < 0) {
                all = false;
                break;
            }
            char c = (char)b;
            if (!tok_buf_add(&bytes, &c, 1))
                goto fail;
        }
        if (!all) {
            bytes.n = mark;
            if (!tok_buf_add(&bytes, t->p, t->n))
                goto fail;
        }
    }
    struct tok_buf text = {0};
    if (!tok_utf8_lossy_append(&text, bytes.p ? bytes.p : "", bytes.n)) {
        tok_buf_free(&text);
        goto fail;
    }
    tok_buf_free(&bytes);
    struct tok_strlist out = {0};
    if (!tok_strlist_push(&out, text.p ? text.p : "", text.n)) {
        tok_buf_free(&text);
        return oom(&out, err);
    }
    tok_buf_free(&text);
    swap_lists(l, &out);
    return PL_STATUS_OK;
fail:
    tok_buf_free(&bytes);
    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
}

static int byte_token(const struct tok_buf *t)
{
    if (t->n != 6 || memcmp(t->p, "<0x", 3) || t->p[5] != '>')
        return -1;
    int v = 0;
    for (int k = 3; k < 5; k++) {
        char c = t->p[k];
        int h = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                         : -1;
        if (h < 0) {
            /* Rust's u8::from_str_radix also takes a leading '+'. */
            if (k == 3 && c == '+')
                continue;
            return -1;
        }
        v = v * 16 + h;
    }
    return v;
}

static bool flush_bytes(struct tok_strlist *out, struct tok_buf *bytes, size_t n_tokens)
{
    if (n_tokens == 0)
        return true;
    bool ok;
    if (tok_utf8_is_valid(bytes->p, bytes->n))
        ok = tok_strlist_push(out, bytes->p, bytes->n);
    else {
        ok = true;
        for (size_t k = 0; ok && k < n_tokens; k++)
            ok = tok_strlist_push(out, "\xEF\xBF\xBD", 3);
    }
    bytes->n = 0;
    return ok;
}

static pl_status byte_fallback(struct tok_strlist *l, struct pl_err *err)
{
    struct tok_strlist out = {0};
    struct tok_buf bytes = {0};
    size_t n_byte_tokens = 0;
    for (size_t i = 0; i < l->n; i++) {
        int b = byte_token(&l->v[i]);
        if (b >= 0) {
            char c = (char)b;
            if (!tok_buf_add(&bytes, &c, 1))
                goto fail;
            n_byte_tokens++;
            continue;
        }
        if (!flush_bytes(&out, &bytes, n_byte_tokens))
            goto fail;
        n_byte_tokens = 0;
        if (!tok_strlist_push(&out, l->v[i].p, l->v[i].n))
            goto fail;
    }
    if (!flush_bytes(&out, &bytes, n_byte_tokens))
        goto fail;
    tok_buf_free(&bytes);
    swap_lists(l, &out);
    return PL_STATUS_OK;
fail:
    tok_buf_free(&bytes);
    return oom(&out, err);
}

static pl_status fuse(struct tok_strlist *l, struct pl_err *err)
{
    struct tok_buf all = {0};
    for (size_t i = 0; i < l->n; i++)
        if (!tok_buf_add(&all, l->v[i].p, l->v[i].n)) {
            tok_buf_free(&all);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    struct tok_strlist out = {0};
    bool ok = tok_strlist_push(&out, all.p ? all.p : "", all.n);
    tok_buf_free(&all);
    if (!ok)
        return oom(&out, err);
    swap_lists(l, &out);
    return PL_STATUS_OK;
}

static pl_status replace(const struct tok_decoder *d, struct tok_strlist *l, struct pl_err *err)
{
    struct tok_matches m = {0};
    for (size_t i = 0; i < l->n; i++) {
        struct tok_buf *t = &l->v[i];
        pl_status st = tok_pattern_find(&d->pattern, t->p ? t->p : "", t->n, &m, err);
        if (st != PL_STATUS_OK) {
            tok_matches_free(&m);
            return st;
        }
        struct tok_buf r = {0};
        bool ok = true;
        for (size_t k = 0; ok && k < m.n; k++)
            ok = m.v[k].is_match ? tok_buf_add(&r, d->content, d->content_len)
                                 : tok_buf_add(&r, t->p + m.v[k].start, m.v[k].end - m.v[k].start);
        if (!ok) {
            tok_buf_free(&r);
            tok_matches_free(&m);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
        tok_buf_free(t);
        *t = r;
    }
    tok_matches_free(&m);
    return PL_STATUS_OK;
}

static pl_status strip(const struct tok_decoder *d, struct tok_strlist *l)
{
    for (size_t i = 0; i < l->n; i++) {
        struct tok_buf *t = &l->v[i];
        size_t a = 0;
        for (int k = 0; k < d->strip_start && a < t->n; k++) {
            int32_t cp;
            int cl = tok_utf8_decode(t->p + a, &cp);
            if (cp != d->strip_char)
                break;
            a += cl;
        }
        size_t b = t->n;
        for (int k = 0; k < d->strip_stop && b > a; k++) {
            size_t j = b - 1;
            while (j > a && ((unsigned char)t->p[j] & 0xC0) == 0x80)
                j--;
            int32_t cp;
            tok_utf8_decode(t->p + j, &cp);
            if (cp != d->strip_char)
                break;
            b = j;
        }
        memmove(t->p, t->p + a, b - a);
        t->n = b - a;
        if (t->p)
            t->p[t->n] = 0;
    }
    return PL_STATUS_OK;
}

static pl_status metaspace(const struct tok_decoder *d, struct tok_strlist *l, struct pl_err *err)
{
    for (size_t i = 0; i < l->n; i++) {
        struct tok_buf *t = &l->v[i];
        struct tok_buf r = {0};
        bool ok = tok_buf_reserve(&r, t->n);
        for (size_t k = 0; ok && k < t->n;) {
            int32_t cp;
            int cl = tok_utf8_decode(t->p + k, &cp);
            if (cp == d->replacement) {
                if (!(i == 0 && d->prepend_scheme != TOK_PREPEND_NEVER))
                    ok = tok_buf_addc(&r, ' ');
            } else
                ok = tok_buf_add(&r, t->p + k, cl);
            k += cl;
        }
        if (!ok) {
            tok_buf_free(&r);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
        tok_buf_free(t);
        *t = r;
    }
    return PL_STATUS_OK;
}

pl_status tok_decode_chain(const struct tok_decoder *d, struct tok_strlist *l, struct pl_err *err)
{
    switch (d->type) {
    case TOK_DEC_BYTE_LEVEL:
        return byte_level(l, err);
    case TOK_DEC_BYTE_FALLBACK:
        return byte_fallback(l, err);
    case TOK_DEC_FUSE:
        return fuse(l, err);
    case TOK_DEC_REPLACE:
        return replace(d, l, err);
    case TOK_DEC_STRIP:
        return strip(d, l);
    case TOK_DEC_METASPACE:
        return metaspace(d, l, err);
    case TOK_DEC_SEQUENCE:
        for (int i = 0; i < d->n_items; i++) {
            pl_status st = tok_decode_chain(d->items[i], l, err);
            if (st != PL_STATUS_OK)
                return st;
        }
        return PL_STATUS_OK;
    }
    return pl_err_set(err, PL_STATUS_INTERNAL, "unknown decoder");
}
