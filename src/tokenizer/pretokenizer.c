/*
 * pretokenizer.c -- tokenizer.json "pre_tokenizer": normalized text -> pieces.
 *
 * Owns: parsing and running Split (regex or string; Removed, Isolated,
 * MergedWithPrevious, MergedWithNext, Contiguous; invert), ByteLevel
 * (add_prefix_space, the GPT-2 regex, bytes -> printable chars), Metaspace
 * (replacement, prepend_scheme first/always/never, split), Digits,
 * Whitespace, WhitespaceSplit, Punctuation and Sequence. Others (Bert,
 * CharDelimiterSplit, UnicodeScripts ...) are refused at load time.
 * Semantics follow HF tokenizers' PreTokenizedString::split: each step maps
 * every piece to sub-pieces, and empty pieces are dropped. "at_origin" marks
 * a piece that starts at offset 0 of the original input; Metaspace's "first"
 * scheme prepends only there (HF checks offsets_original().0 == 0).
 */
#include "tokenizer/tok_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char WHITESPACE_PATTERN[] = "\\w+|[^\\w\\s]+";

/* ---- pieces ---- */

bool tok_pieces_push(struct tok_pieces *p, const char *s, size_t n, bool at_origin)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        size_t *st = realloc(p->start, cap * sizeof(*st));
        if (!st)
            return false;
        p->start = st;
        size_t *ln = realloc(p->len, cap * sizeof(*ln));
        if (!ln)
            return false;
        p->len = ln;
        bool *ao = realloc(p->at_origin, cap * sizeof(*ao));
        if (!ao)
            return false;
        p->at_origin = ao;
        p->cap = cap;
    }
    p->start[p->n] = p->text.n;
    p->len[p->n] = n;
    p->at_origin[p->n] = at_origin;
    p->n++;
    return tok_buf_add(&p->text, s, n);
}

void tok_pieces_clear(struct tok_pieces *p)
{
    p->n = 0;
    p->text.n = 0;
}

void tok_pieces_free(struct tok_pieces *p)
{
    tok_buf_free(&p->text);
    free(p->start);
    free(p->len);
    free(p->at_origin);
    memset(p, 0, sizeof(*p));
}

/* ---- byte-level table (GPT-2's bytes_to_unicode) ---- */

static int32_t byte_to_cp(unsigned char b)
{
    if (b <= 32)
        return 256 + b;
    if (b >= 127 && b <= 160)
        return 256 + 33 + (b - 127);
    if (b == 173)
        return 256 + 67;
    return b;
}

static char byte_table[256][2];
static int byte_lens[256];
static pthread_once_t byte_table_once = PTHREAD_ONCE_INIT;

static void build_byte_table(void)
{
    for (int i = 0; i < 256; i++) {
        char u8[4];
        byte_lens[i] = tok_utf8_encode(byte_to_cp((unsigned char)i), u8);
        memcpy(byte_table[i], u8, 2);
    }
}

/* The table is built once by tok_pretokenizer_parse, before any encode can run. */
const char *tok_byte_level_char(unsigned char b, int *len)
{
    *len = byte_lens[b];
    return byte_table[b];
}

int tok_byte_level_byte(int32_t cp)
{
    if ((cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || (cp >= 174 && cp <= 255))
        return cp;
    if (cp >= 256 && cp <= 288)
        return cp - 256;
    if (cp >= 289 && cp <= 322)
        return cp - 289 + 127;
    if (cp == 323)
        return 173;
    return -1;
}

/* ---- parsing ---- */

void tok_pretokenizer_free(struct tok_pretokenizer *p)
{
    if (!p)
        return;
    for (int i = 0; i < p->n_items; i++)
        tok_pretokenizer_free(p->items[i]);
    free(p->items);
    tok_pattern_fini(&p->pattern);
    free(p);
}

static bool get_bool(const struct tok_json *obj, const char *key, bool dflt)
{
    const struct tok_json *v = tok_json_get(obj, key);
    if (!v || v->type == TJ_NULL)
        return dflt;
    return v->type == TJ_TRUE;
}

static pl_status parse_behavior(const struct tok_json *v, const char *where,
                                enum tok_split_behavior dflt, enum tok_split_behavior *out,
                                struct pl_err *err)
{
    if (tok_json_is_null(v)) {
        *out = dflt;
        return PL_STATUS_OK;
    }
    if (v->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.behavior: expected a string", where);
    static const struct {
        const char *name;
        enum tok_split_behavior b;
    } names[] = {{"Removed", TOK_SPLIT_REMOVED},
                 {"Isolated", TOK_SPLIT_ISOLATED},
                 {"MergedWithPrevious", TOK_SPLIT_MERGED_WITH_PREVIOUS},
                 {"MergedWithNext", TOK_SPLIT_MERGED_WITH_NEXT},
                 {"Contiguous", TOK_SPLIT_CONTIGUOUS}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!strcmp(v->u.str, names[i].name)) {
            *out = names[i].b;
            return PL_STATUS_OK;
        }
    }
    return pl_err_set(err, PL_STATUS_FORMAT, "%s.behavior: unknown behavior '%s'", where, v->u.str);
}

static pl_status parse_prepend_scheme(const struct tok_json *v, const char *where,
                                      enum tok_prepend *out, struct pl_err *err)
{
    const struct tok_json *ps = tok_json_get(v, "prepend_scheme");
    if (!tok_json_is_null(ps)) {
        if (ps->type != TJ_STRING)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s.prepend_scheme: expected a string", where);
        if (!strcmp(ps->u.str, "always"))
            *out = TOK_PREPEND_ALWAYS;
        else if (!strcmp(ps->u.str, "first"))
            *out = TOK_PREPEND_FIRST;
        else if (!strcmp(ps->u.str, "never"))
            *out = TOK_PREPEND_NEVER;
        else
            return pl_err_set(err, PL_STATUS_FORMAT, "%s.prepend_scheme: unknown scheme '%s'",
                              where, ps->u.str);
        return PL_STATUS_OK;
    }
    /* Older files: add_prefix_space (default true). */
    *out = get_bool(v, "add_prefix_space", true) ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
    return PL_STATUS_OK;
}

/* Metaspace's replacement must be exactly one character. */
pl_status tok_metaspace_replacement(const struct tok_json *v, const char *where, char *out,
                                    int *out_len, struct pl_err *err)
{
    const struct tok_json *r = tok_json_get(v, "replacement");
    if (tok_json_is_null(r)) {
        memcpy(out, "\xE2\x96\x81", 3);
        *out_len = 3;
        return PL_STATUS_OK;
    }
    if (r->type != TJ_STRING || r->n == 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.replacement: expected a one-character string",
                          where);
    int32_t cp;
    int l = tok_utf8_decode(r->u.str, &cp);
    if ((uint32_t)l != r->n)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.replacement: expected a one-character string",
                          where);
    memcpy(out, r->u.str, l);
    *out_len = l;
    return PL_STATUS_OK;
}

pl_status tok_pretokenizer_parse(const struct tok_json *v, const char *where,
                                 struct tok_pretokenizer **out, struct pl_err *err)
{
    *out = NULL;
    if (!v || v->type != TJ_OBJECT)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: expected an object", where);
    const struct tok_json *t = tok_json_get(v, "type");
    if (!t || t->type != TJ_STRING)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s.type: expected a string", where);
    struct tok_pretokenizer *p = calloc(1, sizeof(*p));
    if (!p)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    pthread_once(&byte_table_once, build_byte_table);
    char sub[256];
    pl_status st = PL_STATUS_OK;
    const char *ty = t->u.str;
    if (!strcmp(ty, "Split")) {
        p->type = TOK_PRE_SPLIT;
        snprintf(sub, sizeof(sub), "%s.pattern", where);
        st = tok_pattern_parse(tok_json_get(v, "pattern"), sub, &p->pattern, err);
        if (st == PL_STATUS_OK)
            st = parse_behavior(tok_json_get(v, "behavior"), where, TOK_SPLIT_ISOLATED,
                                &p->behavior, err);
        p->invert = get_bool(v, "invert", false);
    } else if (!strcmp(ty, "ByteLevel")) {
        p->type = TOK_PRE_BYTE_LEVEL;
        p->add_prefix_space = get_bool(v, "add_prefix_space", true);
        p->use_regex = get_bool(v, "use_regex", true);
        if (p->use_regex) {
            p->pattern.is_regex = true;
            st = tok_regex_compile(GPT2_PATTERN, sizeof(GPT2_PATTERN) - 1, where, &p->pattern.re,
                                   err);
        }
    } else if (!strcmp(ty, "Metaspace")) {
        p->type = TOK_PRE_METASPACE;
        st = tok_metaspace_replacement(v, where, p->replacement, &p->replacement_len, err);
        if (st == PL_STATUS_OK)
            st = parse_prepend_scheme(v, where, &p->prepend_scheme, err);
        p->split = get_bool(v, "split", true);
    } else if (!strcmp(ty, "Digits")) {
        p->type = TOK_PRE_DIGITS;
        p->individual_digits = get_bool(v, "individual_digits", false);
    } else if (!strcmp(ty, "Whitespace")) {
        p->type = TOK_PRE_WHITESPACE;
        p->pattern.is_regex = true;
        st = tok_regex_compile(WHITESPACE_PATTERN, sizeof(WHITESPACE_PATTERN) - 1, where,
                               &p->pattern.re, err);
    } else if (!strcmp(ty, "WhitespaceSplit")) {
        p->type = TOK_PRE_WHITESPACE_SPLIT;
    } else if (!strcmp(ty, "Punctuation")) {
        p->type = TOK_PRE_PUNCTUATION;
        st = parse_behavior(tok_json_get(v, "behavior"), where, TOK_SPLIT_ISOLATED, &p->behavior,
                            err);
    } else if (!strcmp(ty, "Sequence")) {
        p->type = TOK_PRE_SEQUENCE;
        const struct tok_json *items = tok_json_get(v, "pretokenizers");
        if (!items || items->type != TJ_ARRAY) {
            st = pl_err_set(err, PL_STATUS_FORMAT, "%s.pretokenizers: expected an array", where);
        } else {
            p->items = calloc(items->n ? items->n : 1, sizeof(*p->items));
            if (!p->items)
                st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            for (uint32_t i = 0; st == PL_STATUS_OK && i < items->n; i++) {
                snprintf(sub, sizeof(sub), "%s.pretokenizers[%u]", where, i);
                st = tok_pretokenizer_parse(&items->u.items[i], sub, &p->items[i], err);
                if (st == PL_STATUS_OK)
                    p->n_items++;
            }
        }
    } else {
        st = pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s.type: pre-tokenizer '%s' is not supported",
                        where, ty);
    }
    if (st != PL_STATUS_OK) {
        tok_pretokenizer_free(p);
        return st;
    }
    *out = p;
    return PL_STATUS_OK;
}

/* ---- running ---- */

/* Applies HF's SplitDelimiterBehavior to the find_matches pieces of one input
 * piece s and appends the kept, non-empty results to out. */
static bool split_by_matches(const char *s, bool at_origin, struct tok_matches *m,
                             enum tok_split_behavior b, struct tok_pieces *out)
{
    size_t k = 0; /* m->v[0..k) holds the computed splits, is_match meaning "remove" */
    bool prev_match = false;
    switch (b) {
    case TOK_SPLIT_REMOVED:
        k = m->n;
        break;
    case TOK_SPLIT_ISOLATED:
        for (size_t i = 0; i < m->n; i++)
            m->v[i].is_match = false;
        k = m->n;
        break;
    case TOK_SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < m->n; i++) {
            bool im = m->v[i].is_match;
            if (im == prev_match && k > 0)
                m->v[k - 1].end = m->v[i].end;
            else
                m->v[k++] = (struct tok_match){m->v[i].start, m->v[i].end, false};
            prev_match = im;
        }
        break;
    case TOK_SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < m->n; i++) {
            bool im = m->v[i].is_match;
            if (im && !prev_match && k > 0)
                m->v[k - 1].end = m->v[i].end;
            else
                m->v[k++] = (struct tok_match){m->v[i].start, m->v[i].end, false};
            prev_match = im;
        }
        break;
    case TOK_SPLIT_MERGED_WITH_NEXT: {
        /* Walk backwards, merging a match into the piece after it. */
        size_t w = m->n;
        for (size_t i = m->n; i-- > 0;) {
            bool im = m->v[i].is_match;
            if (im && !prev_match && w < m->n)
                m->v[w].start = m->v[i].start;
            else {
                w--;
                m->v[w] = (struct tok_match){m->v[i].start, m->v[i].end, false};
            }
            prev_match = im;
        }
        memmove(m->v, m->v + w, (m->n - w) * sizeof(*m->v));
        k = m->n - w;
        break;
    }
    }
    for (size_t i = 0; i < k; i++) {
        if (m->v[i].is_match || m->v[i].end == m->v[i].start)
            continue;
        if (!tok_pieces_push(out, s + m->v[i].start, m->v[i].end - m->v[i].start,
                             at_origin && m->v[i].start == 0))
            return false;
    }
    return true;
}

/* find_matches for a per-character predicate: every matching char is its own match. */
static bool char_matches(const char *s, size_t n, int kind, struct tok_matches *m)
{
    m->n = 0;
    size_t last = 0;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int l = tok_utf8_decode(s + i, &cp);
        bool hit = kind == 0   ? (cp >= '0' && cp <= '9')
                   : kind == 1 ? tok_cp_is_whitespace(cp)
                               : tok_cp_is_punct(cp);
        if (hit) {
            if (m->n + 2 > m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 16;
                while (cap < m->n + 2)
                    cap *= 2;
                struct tok_match *v = realloc(m->v, cap * sizeof(*v));
                if (!v)
                    return false;
                m->v = v;
                m->cap = cap;
            }
            if (last < i)
                m->v[m->n++] = (struct tok_match){last, i, false};
            m->v[m->n++] = (struct tok_match){i, i + l, true};
            last = i + l;
        }
        i += l;
    }
    if (n == 0 || last < n) {
        if (m->n + 1 > m->cap) {
            size_t cap = m->cap ? m->cap * 2 : 16;
            struct tok_match *v = realloc(m->v, cap * sizeof(*v));
            if (!v)
                return false;
            m->v = v;
            m->cap = cap;
        }
        m->v[m->n++] = (struct tok_match){last, n, false};
    }
    return true;
}

static pl_status step(const struct tok_pretokenizer *p, struct tok_pieces *in,
                      struct tok_pieces *out, struct tok_matches *m, struct tok_buf *tmp,
                      struct tok_buf *map, struct pl_err *err)
{
    tok_pieces_clear(out);
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->text.p + in->start[i];
        size_t n = in->len[i];
        bool origin = in->at_origin[i];
        pl_status st = PL_STATUS_OK;
        switch (p->type) {
        case TOK_PRE_SPLIT:
            st = tok_pattern_find(&p->pattern, s, n, m, err);
            if (st != PL_STATUS_OK)
                return st;
            if (p->invert)
                for (size_t k = 0; k < m->n; k++)
                    m->v[k].is_match = !m->v[k].is_match;
            if (!split_by_matches(s, origin, m, p->behavior, out))
                goto oom;
            break;
        case TOK_PRE_BYTE_LEVEL: {
            tmp->n = 0;
            if (p->add_prefix_space && (n == 0 || s[0] != ' ') && !tok_buf_addc(tmp, ' '))
                goto oom;
            if (!tok_buf_add(tmp, s, n))
                goto oom;
            if (p->use_regex) {
                st = tok_regex_find(p->pattern.re, tmp->p, tmp->n, m, err);
                if (st != PL_STATUS_OK)
                    return st;
            } else {
                m->n = 0;
                if (!tok_buf_reserve(tmp, 0))
                    goto oom;
                struct tok_match one = {0, tmp->n, false};
                if (m->cap == 0) {
                    m->v = malloc(16 * sizeof(*m->v));
                    if (!m->v)
                        goto oom;
                    m->cap = 16;
                }
                m->v[m->n++] = one;
            }
            /* Every piece is kept (Isolated); map its bytes to printable chars. */
            for (size_t k = 0; k < m->n; k++) {
                if (m->v[k].end == m->v[k].start)
                    continue;
                map->n = 0;
                const unsigned char *b = (const unsigned char *)tmp->p;
                for (size_t j = m->v[k].start; j < m->v[k].end; j++) {
                    int l;
                    const char *c = tok_byte_level_char(b[j], &l);
                    if (!tok_buf_add(map, c, l))
                        goto oom;
                }
                if (!tok_pieces_push(out, map->p, map->n, origin && m->v[k].start == 0))
                    goto oom;
            }
            break;
        }
        case TOK_PRE_METASPACE: {
            tmp->n = 0;
            /* HF replaces spaces first, then checks for a leading replacement. */
            bool starts = n > 0 && (s[0] == ' ' || (n >= (size_t)p->replacement_len &&
                                                    !memcmp(s, p->replacement,
                                                            p->replacement_len)));
            bool prepend = (p->prepend_scheme == TOK_PREPEND_ALWAYS && !starts) ||
                           (p->prepend_scheme == TOK_PREPEND_FIRST && !starts && origin);
            if (prepend && !tok_buf_add(tmp, p->replacement, p->replacement_len))
                goto oom;
            for (size_t j = 0; j < n; j++) {
                bool ok = s[j] == ' ' ? tok_buf_add(tmp, p->replacement, p->replacement_len)
                                      : tok_buf_addc(tmp, s[j]);
                if (!ok)
                    goto oom;
            }
            if (p->split) {
                struct tok_pattern lit = {.str = (char *)p->replacement,
                                          .len = (size_t)p->replacement_len};
                st = tok_pattern_find(&lit, tmp->p ? tmp->p : "", tmp->n, m, err);
                if (st != PL_STATUS_OK)
                    return st;
                if (!split_by_matches(tmp->p ? tmp->p : "", origin, m, TOK_SPLIT_MERGED_WITH_NEXT,
                                      out))
                    goto oom;
            } else if (tmp->n && !tok_pieces_push(out, tmp->p, tmp->n, origin))
                goto oom;
            break;
        }
        case TOK_PRE_DIGITS:
            if (!char_matches(s, n, 0, m) ||
                !split_by_matches(s, origin, m,
                                  p->individual_digits ? TOK_SPLIT_ISOLATED : TOK_SPLIT_CONTIGUOUS,
                                  out))
                goto oom;
            break;
        case TOK_PRE_WHITESPACE:
            st = tok_regex_find(p->pattern.re, s, n, m, err);
            if (st != PL_STATUS_OK)
                return st;
            for (size_t k = 0; k < m->n; k++)
                m->v[k].is_match = !m->v[k].is_match;
            if (!split_by_matches(s, origin, m, TOK_SPLIT_REMOVED, out))
                goto oom;
            break;
        case TOK_PRE_WHITESPACE_SPLIT:
            if (!char_matches(s, n, 1, m) || !split_by_matches(s, origin, m, TOK_SPLIT_REMOVED, out))
                goto oom;
            break;
        case TOK_PRE_PUNCTUATION:
            if (!char_matches(s, n, 2, m) || !split_by_matches(s, origin, m, p->behavior, out))
                goto oom;
            break;
        case TOK_PRE_SEQUENCE:
            return pl_err_set(err, PL_STATUS_INTERNAL, "nested sequence in step");
        }
    }
    return PL_STATUS_OK;
oom:
    return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
}

static pl_status run(const struct tok_pretokenizer *p, struct tok_pieces *in, struct tok_pieces *tmp,
                     struct tok_matches *m, struct tok_buf *scratch, struct tok_buf *map,
                     struct pl_err *err)
{
    if (p->type == TOK_PRE_SEQUENCE) {
        for (int i = 0; i < p->n_items; i++) {
            pl_status st = run(p->items[i], in, tmp, m, scratch, map, err);
            if (st != PL_STATUS_OK)
                return st;
        }
        return PL_STATUS_OK;
    }
    pl_status st = step(p, in, tmp, m, scratch, map, err);
    if (st != PL_STATUS_OK)
        return st;
    struct tok_pieces t = *in;
    *in = *tmp;
    *tmp = t;
    return PL_STATUS_OK;
}

pl_status tok_pretokenize(const struct tok_pretokenizer *p, struct tok_pieces *in,
                          struct tok_pieces *tmp, struct pl_err *err)
{
    struct tok_matches m = {0};
    struct tok_buf scratch = {0}, map = {0};
    pl_status st = run(p, in, tmp, &m, &scratch, &map, err);
    tok_matches_free(&m);
    tok_buf_free(&scratch);
    tok_buf_free(&map);
    return st;
}
