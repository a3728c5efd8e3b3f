/*
 * grammar_internal.h -- what the grammar files share: the compiled form of a
 * grammar (struct pl_grammar) and a growable text buffer for the translators.
 *
 * Compiled form: el[] holds every alternative of every rule as a run of
 * elements ending with GR_END. An element is a byte class (GR_BYTES, arg = index
 * into sets[], a 256-bit set) or a rule reference (GR_REF, arg = rule index).
 * Rule r's alternatives start at el[alt_start[rule_alt0[r] .. rule_alt0[r + 1])].
 * No rule is left-recursive (checked at compile time), so expanding references
 * always terminates; a reference followed by GR_END is a tail call (matcher.c
 * does not push its continuation). The derived arrays (first, nullable, follow)
 * are computed once at compile time (gbnf.c).
 */
#ifndef PL_GRAMMAR_INTERNAL_H
#define PL_GRAMMAR_INTERNAL_H

#include "grammar/grammar.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

enum { GR_END = 0, GR_BYTES = 1, GR_REF = 2 };

struct gr_elem {
    int32_t kind; /* GR_END, GR_BYTES, GR_REF */
    int32_t arg;  /* GR_BYTES: set index; GR_REF: rule index */
};

struct pl_grammar {
    struct gr_elem *el;  /* [n_el] */
    int n_el;
    uint32_t (*sets)[8]; /* [n_sets] bit b of set s: sets[s][b >> 5] >> (b & 31) & 1 */
    int n_sets;
    int32_t *alt_start;  /* [n_alts] element index of each alternative's first element */
    int n_alts;
    int32_t *rule_alt0;  /* [n_rules + 1] first alternative of each rule */
    int n_rules;
    int root;            /* the start rule */
    /* derived (the matcher's pruning): per element position p, the bytes that can come
     * first in the rest of its alternative from p (first[p]) and whether that rest can
     * match nothing (tail_nullable[p]); per rule, whether it can match nothing */
    uint32_t (*first)[8];  /* [n_el] */
    bool *tail_nullable;   /* [n_el] */
    bool *rule_nullable;   /* [n_rules] */
    /* derived (matcher.c's position tables): per rule, the bytes that can come right after
     * it in some derivation (its FOLLOW set; a rule called in tail position inherits its
     * caller's), so whatever stack lies below a position of rule r can consume first only
     * bytes of follow[r]; and per element, the rule whose alternative holds it */
    uint32_t (*follow)[8]; /* [n_rules] */
    int32_t *el_rule;      /* [n_el] */
};

static inline bool gr_set_has(const uint32_t *set, unsigned b)
{
    return (set[b >> 5] >> (b & 31)) & 1u;
}

/* Limits that keep a request from asking for unbounded work at compile time. */
#define GR_MAX_TEXT (1 << 20)      /* bytes of grammar / schema / regex text */
#define GR_MAX_ELEMENTS (1 << 19)  /* elements of a compiled grammar */
#define GR_MAX_REPEAT 10000        /* the largest {m,n} bound */
#define GR_MAX_DEPTH 200           /* nesting of groups / schemas */

/* Compiles GBNF text (gbnf.c). */
pl_status gr_compile_gbnf(const char *text, struct pl_grammar **out, struct pl_err *err);

/* ---- a growable text buffer (the translators' output) ---- */

struct gr_buf {
    char *p;
    size_t n, cap;
    bool oom; /* an append failed: the text is incomplete */
};

void gr_buf_free(struct gr_buf *b);
void gr_buf_add(struct gr_buf *b, const char *s, size_t n);
void gr_buf_puts(struct gr_buf *b, const char *s);
void gr_buf_printf(struct gr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a GBNF string literal body (without the quotes), escaping what needs it. */
void gr_buf_literal(struct gr_buf *b, const char *s, size_t n);
/* Appends a codepoint inside a GBNF character class, escaped. */
void gr_buf_class_char(struct gr_buf *b, uint32_t cp);

/* Code point ranges [lo, hi] (the character classes of GBNF and regexes; grammar.c).
 * normalize sorts r and merges overlapping or adjacent ranges in place, and returns the
 * new count. complement writes the ranges of [0, 0x10FFFF] that n normalized ranges leave
 * out into out, which must have room for n + 1, and returns their count. */
int gr_ranges_normalize(uint32_t (*r)[2], int n);
int gr_ranges_complement(const uint32_t (*r)[2], int n, uint32_t (*out)[2]);

/*
 * Regex -> GBNF expression (regex.c), appended to b. json_string: the regex
 * describes the decoded content of a JSON string: characters that JSON escapes
 * (" and \) are emitted as their escapes and control characters are left out.
 * Helper rules (none today) would be named with prefix.
 */
pl_status gr_regex_expr(const char *re, bool json_string, struct gr_buf *b, struct pl_err *err);

#endif
