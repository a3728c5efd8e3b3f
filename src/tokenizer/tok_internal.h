/*
 * tok_internal.h -- shared internals of the tokenizer (not part of the contract).
 *
 * Owns: the building blocks every tokenizer file uses -- a growable byte
 * buffer, an arena for strings that live as long as the tokenizer, hash maps
 * (string -> id, token pair -> merge), a small JSON DOM (tok_json.c) fast
 * enough for a 33 MB tokenizer.json, UTF-8 helpers, and the component structs
 * (normalizer, pre-tokenizer, BPE model, decoder, post-processor) with their
 * run functions.
 * Invariants: every string handed between stages is valid UTF-8 (encode
 * sanitises its input first); components are immutable after load, so one
 * tokenizer may serve many threads; per-call scratch lives in the caller.
 */
#ifndef PL_TOK_INTERNAL_H
#define PL_TOK_INTERNAL_H

#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- growable byte buffer (always NUL-terminated when p != NULL) ---- */
struct tok_buf {
    char *p;
    size_t n, cap;
};
bool tok_buf_reserve(struct tok_buf *b, size_t extra);
bool tok_buf_add(struct tok_buf *b, const void *s, size_t n);
bool tok_buf_addc(struct tok_buf *b, char c);
void tok_buf_free(struct tok_buf *b);

/* ---- arena for tokenizer-lifetime strings ---- */
struct tok_arena_block;
struct tok_arena {
    struct tok_arena_block *head;
};
/* Copies n bytes and a NUL; NULL on allocation failure. */
char *tok_arena_strdup(struct tok_arena *a, const char *s, size_t n);
void tok_arena_free(struct tok_arena *a);

/* ---- string -> int32 map (open addressing; keys are borrowed) ---- */
struct tok_strmap_slot {
    const char *key; /* NULL: empty */
    uint32_t len;
    int32_t val;
    uint32_t hash;   /* low 32 bits of tok_hash */
};
struct tok_strmap {
    struct tok_strmap_slot *slots;
    size_t mask, n;
};
uint64_t tok_hash(const void *s, size_t n);
bool tok_strmap_init(struct tok_strmap *m, size_t expected);
/* Inserts or overwrites. */
bool tok_strmap_put(struct tok_strmap *m, const char *key, size_t len, int32_t val);
/* -1 when absent. */
int32_t tok_strmap_get(const struct tok_strmap *m, const char *key, size_t len);
void tok_strmap_free(struct tok_strmap *m);

/* ---- (left id, right id) -> (rank, merged id) ---- */
struct tok_merge_slot {
    uint64_t key; /* UINT64_MAX: empty */
    int32_t rank, new_id;
};
struct tok_mergemap {
    struct tok_merge_slot *slots;
    size_t mask, n;
};
bool tok_mergemap_init(struct tok_mergemap *m, size_t expected);
bool tok_mergemap_put(struct tok_mergemap *m, int32_t a, int32_t b, int32_t rank, int32_t new_id);
const struct tok_merge_slot *tok_mergemap_get(const struct tok_mergemap *m, int32_t a, int32_t b);
void tok_mergemap_free(struct tok_mergemap *m);

/* ---- UTF-8 ---- */
/* Length of the valid UTF-8 sequence at s (1..4), 0 when invalid (per Unicode
 * "maximal subpart": *bad_len receives how many bytes one U+FFFD replaces). */
int tok_utf8_valid_len(const unsigned char *s, size_t n, int *bad_len);
/* Decodes one code point from valid UTF-8; returns its length. */
int tok_utf8_decode(const char *s, int32_t *cp);
int tok_utf8_encode(int32_t cp, char out[4]);
/* Appends s with invalid sequences replaced by U+FFFD (as Rust's
 * String::from_utf8_lossy and WHATWG's decoder do). */
bool tok_utf8_lossy_append(struct tok_buf *out, const char *s, size_t n);
bool tok_utf8_is_valid(const char *s, size_t n);
/* Unicode properties as the Rust std / regex crates define them. */
bool tok_cp_is_whitespace(int32_t cp);
bool tok_cp_is_word(int32_t cp);
bool tok_cp_is_punct(int32_t cp);

/* ---- JSON DOM (tok_json.c) ---- */
enum tok_json_type { TJ_NULL, TJ_FALSE, TJ_TRUE, TJ_NUMBER, TJ_STRING, TJ_ARRAY, TJ_OBJECT };
struct tok_json {
    enum tok_json_type type;
    uint32_t n;           /* string bytes, array items or object members */
    union {
        double num;
        const char *str;  /* NUL-terminated, may contain NULs (use n) */
        struct tok_json *items; /* arrays: n items; objects: 2n (key, value) */
    } u;
};
struct tok_json_doc;
/* Parses text in place (strings are decoded inside it, so it must stay alive
 * and unchanged while the doc is used); on failure writes
 * "line L, column C: why" into err. */
pl_status tok_json_parse(char *text, size_t len, struct tok_json_doc **out, struct pl_err *err);
const struct tok_json *tok_json_root(const struct tok_json_doc *d);
void tok_json_free(struct tok_json_doc *d);
/* Object member by key (NULL when absent or not an object). */
const struct tok_json *tok_json_get(const struct tok_json *obj, const char *key);
bool tok_json_is_null(const struct tok_json *v); /* absent or null */

/* ---- patterns (Split, Replace) ---- */
struct tok_pattern {
    bool is_regex;
    char *str; /* literal or regex source */
    size_t len;
    pcre2_code *re;
};
pl_status tok_pattern_parse(const struct tok_json *v, const char *where, struct tok_pattern *p,
                            struct pl_err *err);
pl_status tok_regex_compile(const char *src, size_t len, const char *where, pcre2_code **out,
                            struct pl_err *err);
void tok_pattern_fini(struct tok_pattern *p);
/* One piece of a find_matches() result: [start, end) and whether it matched. */
struct tok_match {
    size_t start, end;
    bool is_match;
};
struct tok_matches {
    struct tok_match *v;
    size_t n, cap;
};
/* Covers s with alternating non-match/match pieces as HF's Pattern::find_matches. */
pl_status tok_pattern_find(const struct tok_pattern *p, const char *s, size_t n,
                           struct tok_matches *out, struct pl_err *err);
pl_status tok_regex_find(const pcre2_code *re, const char *s, size_t n, struct tok_matches *out,
                         struct pl_err *err);
void tok_matches_free(struct tok_matches *m);

/* ---- normalizers (normalizer.c) ---- */
enum tok_norm_type {
    TOK_NORM_NFC, TOK_NORM_NFD, TOK_NORM_NFKC, TOK_NORM_NFKD, TOK_NORM_LOWERCASE,
    TOK_NORM_STRIP, TOK_NORM_STRIP_ACCENTS, TOK_NORM_PREPEND, TOK_NORM_REPLACE,
    TOK_NORM_SEQUENCE
};
struct tok_normalizer {
    enum tok_norm_type type;
    bool strip_left, strip_right;  /* Strip */
    char *content;                 /* Prepend text / Replace content */
    size_t content_len;
    struct tok_pattern pattern;    /* Replace */
    struct tok_normalizer **items; /* Sequence */
    int n_items;
};
pl_status tok_normalizer_parse(const struct tok_json *v, const char *where,
                               struct tok_normalizer **out, struct pl_err *err);
void tok_normalizer_free(struct tok_normalizer *n);
/* Replaces *s (valid UTF-8) with its normalized form. */
pl_status tok_normalize(const struct tok_normalizer *n, struct tok_buf *s, struct pl_err *err);

/* ---- pre-tokenizers (pretokenizer.c) ---- */
enum tok_split_behavior {
    TOK_SPLIT_REMOVED, TOK_SPLIT_ISOLATED, TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT, TOK_SPLIT_CONTIGUOUS
};
enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER };
enum tok_pre_type {
    TOK_PRE_SPLIT, TOK_PRE_BYTE_LEVEL, TOK_PRE_METASPACE, TOK_PRE_DIGITS, TOK_PRE_WHITESPACE,
    TOK_PRE_WHITESPACE_SPLIT, TOK_PRE_PUNCTUATION, TOK_PRE_SEQUENCE
};
struct tok_pretokenizer {
    enum tok_pre_type type;
    struct tok_pattern pattern;           /* Split */
    enum tok_split_behavior behavior;     /* Split, Punctuation */
    bool invert;                          /* Split */
    bool add_prefix_space, use_regex;     /* ByteLevel */
    char replacement[8];                  /* Metaspace (UTF-8 of one char) */
    int replacement_len;
    enum tok_prepend prepend_scheme;      /* Metaspace */
    bool split;                           /* Metaspace */
    bool individual_digits;               /* Digits */
    struct tok_pretokenizer **items;      /* Sequence */
    int n_items;
};
/* The pieces of one segment while it is being pre-tokenized. */
struct tok_pieces {
    struct tok_buf text;  /* all pieces back to back */
    size_t *start, *len;
    bool *at_origin;      /* piece begins at offset 0 of the original input */
    size_t n, cap;
};
bool tok_pieces_push(struct tok_pieces *p, const char *s, size_t n, bool at_origin);
void tok_pieces_clear(struct tok_pieces *p);
void tok_pieces_free(struct tok_pieces *p);
pl_status tok_pretokenizer_parse(const struct tok_json *v, const char *where,
                                 struct tok_pretokenizer **out, struct pl_err *err);
void tok_pretokenizer_free(struct tok_pretokenizer *p);
/* Splits every piece of *in; the result replaces *in (tmp is scratch). */
pl_status tok_pretokenize(const struct tok_pretokenizer *p, struct tok_pieces *in,
                          struct tok_pieces *tmp, struct pl_err *err);
/* Metaspace's "replacement" (default U+2581), which must be one character. */
pl_status tok_metaspace_replacement(const struct tok_json *v, const char *where, char *out,
                                    int *out_len, struct pl_err *err);
/* GPT-2's byte <-> printable char table. */
const char *tok_byte_level_char(unsigned char b, int *len);
/* Inverse: the byte a code point stands for, -1 when it is not in the table. */
int tok_byte_level_byte(int32_t cp);

/* ---- BPE model (bpe.c) ---- */
struct tok_bpe {
    struct tok_strmap vocab;  /* token -> id */
    const char **id_to_token; /* [n_ids], NULL in gaps */
    uint32_t *token_len;      /* [n_ids] */
    int32_t n_ids;            /* max id + 1 */
    struct tok_mergemap merges;
    int32_t unk_id;           /* -1: none */
    char *unk_token;          /* NULL: no unk configured */
    bool fuse_unk, byte_fallback, ignore_merges;
    char *prefix, *suffix;    /* continuing_subword_prefix / end_of_word_suffix (NULL: none) */
    size_t prefix_len, suffix_len;
    int32_t byte_ids[256];    /* "<0xNN>" ids for byte_fallback, -1 when absent */
};
/* Per-call scratch for the merge loop. */
struct tok_bpe_scratch {
    struct tok_bpe_sym *syms;
    size_t cap_syms;
    struct tok_bpe_heap_item *heap;
    size_t cap_heap;
    struct tok_buf tmp;
};
pl_status tok_bpe_encode_word(const struct tok_bpe *m, const char *w, size_t n,
                              struct tok_bpe_scratch *sc, int32_t **ids, size_t *n_ids,
                              size_t *cap_ids, struct pl_err *err);
void tok_bpe_scratch_free(struct tok_bpe_scratch *sc);

/* ---- decoders (decoder.c) ---- */
enum tok_dec_type {
    TOK_DEC_BYTE_LEVEL, TOK_DEC_METASPACE, TOK_DEC_REPLACE, TOK_DEC_BYTE_FALLBACK, TOK_DEC_FUSE,
    TOK_DEC_STRIP, TOK_DEC_SEQUENCE
};
struct tok_decoder {
    enum tok_dec_type type;
    struct tok_pattern pattern; /* Replace */
    char *content;              /* Replace content */
    size_t content_len;
    int32_t strip_char;         /* Strip content (one char) */
    int strip_start, strip_stop;
    int32_t replacement;        /* Metaspace */
    enum tok_prepend prepend_scheme;
    struct tok_decoder **items; /* Sequence */
    int n_items;
};
/* A list of token strings flowing through the decoder chain. */
struct tok_strlist {
    struct tok_buf *v;
    size_t n, cap;
};
bool tok_strlist_push(struct tok_strlist *l, const char *s, size_t n);
void tok_strlist_free(struct tok_strlist *l);
pl_status tok_decoder_parse(const struct tok_json *v, const char *where,
                            struct tok_decoder **out, struct pl_err *err);
void tok_decoder_free(struct tok_decoder *d);
/* Runs decode_chain over *l in place. */
pl_status tok_decode_chain(const struct tok_decoder *d, struct tok_strlist *l, struct pl_err *err);

/* ---- the tokenizer ---- */
struct tok_added {
    char *content;
    size_t len;
    int32_t id;
    bool special, normalized, lstrip, rstrip, single_word;
    char *match;     /* what is searched for: content, or its normalized form */
    size_t match_len;
};
/* Leftmost-longest matcher over a set of added tokens (a byte trie). */
struct tok_trie_node;
struct tok_trie {
    struct tok_trie_node *nodes;
    size_t n, cap;
};
struct tok_template_piece {
    bool is_sequence;   /* $A */
    int32_t *ids;       /* special token ids */
    int n_ids;
};
struct pl_tokenizer {
    struct tok_arena arena;
    struct tok_normalizer *normalizer;     /* NULL: none */
    struct tok_pretokenizer *pretokenizer; /* NULL: none */
    struct tok_bpe bpe;
    struct tok_decoder *decoder;           /* NULL: join with " " */
    bool has_template;                     /* TemplateProcessing single (else: ids as is) */
    struct tok_template_piece *tmpl;
    int n_tmpl;

    struct tok_added *added;               /* all added tokens */
    int n_added;
    struct tok_strmap added_by_content;    /* content -> index into added */
    int32_t *added_index_by_id;            /* [n_ids] -> index into added or -1 */
    struct tok_trie trie_raw, trie_norm;   /* non-normalized / normalized tokens */
    bool split_special_tokens;             /* config: specials are not matched */

    int32_t n_ids;                         /* vocab size incl. added tokens */
    char *bos_token, *eos_token;
    int32_t bos_id, eos_id;
    char *chat_template;
    bool clean_up_tokenization_spaces;
};

/* Decodes without range checks on the per-token path (callers validate). */
pl_status tok_decode_ids(const struct pl_tokenizer *t, const int32_t *ids, int n, bool skip_special,
                         struct tok_buf *out, struct pl_err *err);

#endif
