/*
 * grammar.h -- structured output: constraints compiled to one grammar form, run as a
 * pushdown automaton over bytes, and turned into per-token masks for the sampler.
 *
 * Owns: struct pl_grammar (a compiled grammar, immutable, shareable), struct
 * pl_grammar_vocab (a tokenizer's vocabulary as byte strings, sorted for the mask
 * walk: built once per tokenizer), struct pl_grammar_matcher (one sequence's
 * automaton state plus the mask cache it shares with its grammar) and struct
 * pl_grammar_cache (compiled grammars keyed by their text).
 *
 * The one grammar form is GBNF text (llama.cpp's, with EBNF operators * + ? {m,n},
 * character classes, string literals, rule references, comments; the start rule is
 * "root"). A JSON Schema, a regular expression and a choice list are each translated
 * to GBNF text (pl_grammar_*_to_gbnf) and the GBNF is compiled; so callers can compose
 * grammars as text (a tool call wrapper around a schema's rules) and compile them with
 * PL_CONSTRAINT_GRAMMAR.
 *
 * The automaton: rules are alternatives of sequences of byte classes and rule
 * references (characters outside ASCII are compiled to their UTF-8 byte sequences);
 * a state is a set of stacks of positions (tail calls do not grow a stack, so the
 * repetitions of a rule loop at a fixed depth). A state accepts when some stack has
 * emptied. A token is allowed when the automaton can consume all its bytes; EOS
 * (the tokens given as eos ids) only where the state accepts.
 *
 * Masks are packed bitmasks: word i / 32, bit i % 32 set = token i allowed,
 * ceil(vocab / 32) uint32 words (PL_GRAMMAR_MASK_WORDS).
 */
#ifndef PL_GRAMMAR_H
#define PL_GRAMMAR_H

#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_GRAMMAR_MASK_WORDS(vocab) (((size_t)(vocab) + 31) / 32)

/* ---- translation to GBNF (malloc'ed text in *gbnf; the caller frees) ---------------- */

/*
 * JSON Schema (JSON text) -> GBNF rules. Every rule name starts with rule_prefix
 * (NULL or "": none) and the schema's start rule is "<prefix>root", so several
 * schemas can live in one grammar. ws: the JSON whitespace as a regular expression
 * (vLLM's guided_whitespace_pattern); NULL: the default (at most one space between
 * tokens). Keywords the compiler cannot express are refused with
 * PL_STATUS_INVALID_ARGUMENT and a message naming the keyword and where it is.
 */
pl_status pl_grammar_json_schema_to_gbnf(const char *schema, const char *ws,
                                         const char *rule_prefix, char **gbnf,
                                         struct pl_err *err);

/* Any JSON object (response_format json_object). */
pl_status pl_grammar_json_object_to_gbnf(const char *ws, const char *rule_prefix, char **gbnf,
                                         struct pl_err *err);

/* A regular expression (the whole output must match) -> GBNF rules. */
pl_status pl_grammar_regex_to_gbnf(const char *regex, const char *rule_prefix, char **gbnf,
                                   struct pl_err *err);

/* Choice (JSON text of a non-empty array of strings): the output is one of them. */
pl_status pl_grammar_choice_to_gbnf(const char *choices_json, const char *rule_prefix,
                                    char **gbnf, struct pl_err *err);

/* ---- compiled grammars ------------------------------------------------------------ */

struct pl_grammar;

/*
 * Compiles a constraint (kind and text as in struct pl_sampling_params; ws is
 * the whitespace pattern of the JSON kinds) to an automaton. Errors:
 * PL_STATUS_INVALID_ARGUMENT naming what is wrong (the keyword, the rule, the
 * offset in the text).
 */
pl_status pl_grammar_compile(enum pl_constraint_kind kind, const char *text, const char *ws,
                             struct pl_grammar **out, struct pl_err *err);
void pl_grammar_free(struct pl_grammar *g);

/* Compiles and frees: the check request parsers run to answer 400 early. */
pl_status pl_grammar_check(enum pl_constraint_kind kind, const char *text, const char *ws,
                           struct pl_err *err);

/*
 * Sets p's constraint (text and ws are copied: afterwards p owns its arrays, as
 * after pl_sampling_params_copy, and the old arrays are freed). kind
 * PL_CONSTRAINT_NONE clears it. The constraint is checked (pl_grammar_check).
 */
pl_status pl_sampling_params_set_constraint(struct pl_sampling_params *p,
                                            enum pl_constraint_kind kind, const char *text,
                                            const char *ws, struct pl_err *err);

/* ---- vocabulary ------------------------------------------------------------------- */

struct pl_tokenizer;
struct pl_grammar_vocab;

/*
 * A vocabulary of n_tokens ids: token i's bytes are tokens[i][0, lens[i]); a
 * negative length means "never allowed" (special tokens, holes, padding ids).
 * eos ids are allowed exactly where the grammar accepts. Copies what it needs.
 */
pl_status pl_grammar_vocab_new(int n_tokens, const char *const *tokens, const int *lens,
                               const int32_t *eos_ids, int n_eos, struct pl_grammar_vocab **out,
                               struct pl_err *err);
/* The same from a tokenizer: every non-special token's bytes; vocab_size may exceed
 * the tokenizer's (padded model vocabularies: those ids are never allowed). */
pl_status pl_grammar_vocab_from_tokenizer(const struct pl_tokenizer *tok, int vocab_size,
                                          const int32_t *eos_ids, int n_eos,
                                          struct pl_grammar_vocab **out, struct pl_err *err);
void pl_grammar_vocab_free(struct pl_grammar_vocab *v);
int pl_grammar_vocab_size(const struct pl_grammar_vocab *v);

/* ---- the grammar cache (one thread: the engine's) ----------------------------------- */

struct pl_grammar_cache;

/* A cache of compiled grammars with their mask caches for one vocabulary (borrowed):
 * every grammar a matcher uses, plus up to max_grams unused ones (least recently used
 * go first). */
pl_status pl_grammar_cache_new(const struct pl_grammar_vocab *vocab, int max_grammars,
                               struct pl_grammar_cache **out, struct pl_err *err);
void pl_grammar_cache_free(struct pl_grammar_cache *c);
/* Mask lookups answered from the cache, and masks computed (benchmarks, tests). */
void pl_grammar_cache_stats(const struct pl_grammar_cache *c, uint64_t *hits, uint64_t *misses);

/* How a mask that is not in the cache is computed. */
enum pl_grammar_mask_mode {
    /* the default: per grammar position, the tokens it decides whatever the stack below
     * (built once per position), and a walk of the few others from the state */
    PL_GRAMMAR_MASK_TABLES,
    /* the reference: the whole vocabulary walked from the state */
    PL_GRAMMAR_MASK_FULL_WALK,
};
/* Test and benchmark hooks: the mode of computed masks; the byte budget of the position
 * tables (64 MiB by default; least recently used tables go first, those of the state
 * being computed stay) and how many uncertain tokens a table may leave before deeper
 * stacks key it one frame deeper (256 by default; -1: always, INT_MAX: never). Tables
 * built before keep their keys: every combination gives the same masks. */
void pl_grammar_cache_set_mask_mode(struct pl_grammar_cache *c, enum pl_grammar_mask_mode mode);
void pl_grammar_cache_set_table_limits(struct pl_grammar_cache *c, size_t bytes, int refine_unc);

struct pl_grammar_table_stats {
    uint64_t n_built;            /* tables built (a rebuilt evicted one counts again) */
    uint64_t n_evicted;
    uint64_t n_uncertain_walked; /* uncertain tokens walked from a state, in all */
    uint64_t n_overflows;        /* operations whose scratch overflowed (a very ambiguous
                                  * grammar: stacks were dropped, some tokens refused) */
    size_t n_tables;             /* tables held now */
    size_t bytes;                /* their size */
};
void pl_grammar_cache_table_stats(const struct pl_grammar_cache *c,
                                  struct pl_grammar_table_stats *out);

/* ---- matchers: one per constrained sequence ----------------------------------------- */

struct pl_grammar_matcher;

/*
 * A matcher at the start of the constraint's grammar, compiled through the cache
 * (a grammar already compiled for the same kind, text and ws is reused).
 */
pl_status pl_grammar_matcher_new(struct pl_grammar_cache *c, enum pl_constraint_kind kind,
                                 const char *text, const char *ws,
                                 struct pl_grammar_matcher **out, struct pl_err *err);
/* A matcher in the same state as m (n > 1 samples of one request). */
pl_status pl_grammar_matcher_clone(const struct pl_grammar_matcher *m,
                                   struct pl_grammar_matcher **out, struct pl_err *err);
void pl_grammar_matcher_free(struct pl_grammar_matcher *m);

/* Writes the mask of the tokens allowed next into mask[PL_GRAMMAR_MASK_WORDS(vocab)].
 * Allocates nothing (the state's mask usually comes from the cache). */
void pl_grammar_matcher_fill_mask(struct pl_grammar_matcher *m, uint32_t *mask);
/* The same mask computed in the given mode, bypassing the mask cache (tests compare the
 * modes; the position tables it builds are kept). */
void pl_grammar_matcher_compute_mask(struct pl_grammar_matcher *m,
                                     enum pl_grammar_mask_mode mode, uint32_t *mask);
/* Advances by one token; false (state unchanged) when the token is not allowed. An
 * eos id is accepted where the state accepts and ends the matcher. */
bool pl_grammar_matcher_accept_token(struct pl_grammar_matcher *m, int32_t token);
/* Advances by bytes (tests, prefixes); false (state unchanged) when refused. */
bool pl_grammar_matcher_accept_bytes(struct pl_grammar_matcher *m, const char *s, size_t n);
/* True when the grammar accepts what was consumed so far. */
bool pl_grammar_matcher_is_accepting(const struct pl_grammar_matcher *m);
/* True when nothing but eos can follow (accepting and no byte can continue). */
bool pl_grammar_matcher_is_complete(const struct pl_grammar_matcher *m);

#endif
