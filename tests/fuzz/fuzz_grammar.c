/*
 * fuzz_grammar.c -- schemas, regexes, GBNF grammars and choice lists from arbitrary
 * bytes through the compiler, then the automaton: no crash, no leak, no hang, and
 * the invariants that every token a mask allows is accepted by the matcher and that
 * the masks from position tables (the default, and keyed as deep as they go) equal
 * the full walk's. A step whose automaton scratch overflowed (a grammar so ambiguous
 * that stacks were dropped: tokens may then be refused on one path and not another)
 * is not held to either.
 * Input: the first byte picks the kind (JSON Schema, regex, GBNF, choice, json_object
 * with the rest as the whitespace pattern); the rest is the text.
 */
#include "grammar/grammar.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define V 300

static struct pl_grammar_vocab *g_vocab;
static struct pl_grammar_cache *g_cache, *g_deep;

/* Operations so far whose scratch overflowed, in both caches. */
static uint64_t overflows(void)
{
    struct pl_grammar_table_stats a, b;
    pl_grammar_cache_table_stats(g_cache, &a);
    pl_grammar_cache_table_stats(g_deep, &b);
    return a.n_overflows + b.n_overflows;
}

static void init(void)
{
    static const char *words[] = {"{", "}", "\"", ":", ",", "[", "]", " ", "a", "0", "1", "-",
                                  ".", "e", "true", "null", "\\", "u", "\xc3", "\xa9", "\"a\":",
                                  "ab", "\n", "x", "Z"};
    char *toks[V];
    int lens[V];
    char buf[V][8];
    for (int i = 0; i < V; i++) {
        if (i < 256) {
            buf[i][0] = (char)i;
            lens[i] = 1;
        } else {
            const char *w = words[(i - 256) % (int)(sizeof(words) / sizeof(words[0]))];
            lens[i] = (int)strlen(w);
            memcpy(buf[i], w, (size_t)lens[i]);
        }
        toks[i] = buf[i];
    }
    int32_t eos = 0;
    struct pl_err err;
    if (pl_grammar_vocab_new(V, (const char *const *)toks, lens, &eos, 1, &g_vocab, &err) ||
        pl_grammar_cache_new(g_vocab, 4, &g_cache, &err) ||
        pl_grammar_cache_new(g_vocab, 4, &g_deep, &err))
        abort();
    pl_grammar_cache_set_table_limits(g_deep, (size_t)1 << 20, -1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!g_cache)
        init();
    if (size < 1 || size > 4096)
        return 0;
    static const enum pl_constraint_kind kinds[] = {PL_CONSTRAINT_JSON, PL_CONSTRAINT_REGEX,
                                                    PL_CONSTRAINT_GRAMMAR, PL_CONSTRAINT_CHOICE,
                                                    PL_CONSTRAINT_JSON_OBJECT};
    enum pl_constraint_kind kind = kinds[data[0] % 5];
    char *text = malloc(size);
    if (!text)
        return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = 0;
    const char *t = kind == PL_CONSTRAINT_JSON_OBJECT ? NULL : text;
    const char *ws = kind == PL_CONSTRAINT_JSON_OBJECT ? text : NULL;
    struct pl_err err;
    struct pl_grammar_matcher *m, *deep;
    if (pl_grammar_matcher_new(g_cache, kind, t, ws, &m, &err) == PL_STATUS_OK) {
        if (pl_grammar_matcher_new(g_deep, kind, t, ws, &deep, &err) != PL_STATUS_OK)
            abort();
        uint32_t mask[(V + 31) / 32], full[(V + 31) / 32], other[(V + 31) / 32];
        uint32_t h = 2166136261u;
        for (size_t i = 0; i < size; i++)
            h = (h ^ data[i]) * 16777619u;
        for (int step = 0; step < 24; step++) {
            uint64_t ov = overflows();
            pl_grammar_matcher_fill_mask(m, mask);
            pl_grammar_matcher_compute_mask(m, PL_GRAMMAR_MASK_FULL_WALK, full);
            pl_grammar_matcher_compute_mask(deep, PL_GRAMMAR_MASK_TABLES, other);
            if (overflows() == ov &&
                (memcmp(mask, full, sizeof(mask)) || memcmp(other, full, sizeof(full))))
                abort();
            int32_t allowed[V];
            int n = 0;
            for (int i = 0; i < V; i++)
                if ((mask[i >> 5] >> (i & 31)) & 1u)
                    allowed[n++] = i;
            /* a sample of allowed tokens must be accepted (on copies) */
            for (int k = 0; k < n && k < 8; k++) {
                struct pl_grammar_matcher *c;
                if (pl_grammar_matcher_clone(m, &c, &err) != PL_STATUS_OK)
                    break;
                if (!pl_grammar_matcher_accept_token(c, allowed[(k * 37 + step) % n]) &&
                    overflows() == ov)
                    abort();
                pl_grammar_matcher_free(c);
            }
            if (n == 0)
                break;
            h = h * 1103515245u + 12345u;
            if (!pl_grammar_matcher_accept_token(m, allowed[h % (uint32_t)n]) ||
                !pl_grammar_matcher_accept_token(deep, allowed[h % (uint32_t)n])) {
                if (overflows() == ov)
                    abort();
                break;
            }
            if (pl_grammar_matcher_is_complete(m))
                break;
        }
        pl_grammar_matcher_free(m);
        pl_grammar_matcher_free(deep);
    }
    free(text);
    return 0;
}
