/*
 * ct_internal.h -- shared internals of the chat template interpreter.
 *
 * Owns: the arena every parse and every render allocates from, the error exit
 * (ct_fail), tokens, AST nodes and runtime values. Files:
 *   util.c     arena, error exit, UTF-8 and Python whitespace helpers, buffers
 *   lexer.c    source -> tokens, applying jinja2's whitespace control
 *   parser.c   tokens -> AST (struct ct_node)
 *   value.c    values: JSON conversion, truth, equality, ordering, str/repr, tojson
 *   interp.c   statements and expressions, scopes, loops, macros, limits
 *   filters.c  filters, tests, string/dict methods, global functions
 *
 * Memory and errors: a parse allocates from the template's arena, a render from
 * a render arena; nothing is freed individually. Errors leave through
 * ct_fail (a longjmp back to the public entry point), which then frees the whole
 * arena: no error path can leak, and the deep recursive evaluator needs no
 * status plumbing. Invariant: between setjmp and ct_fail no code holds memory
 * outside an arena except the buffers the entry point itself owns.
 */
#ifndef PL_CT_INTERNAL_H
#define PL_CT_INTERNAL_H

#include "tokenizer/chat_template/chat_template.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CT_NO_POS ((size_t)-1)

/* ---- arena -------------------------------------------------------------- */

struct ct_chunk;
struct ct_arena {
    struct ct_chunk *head; /* newest chunk first */
    size_t used;           /* bytes handed out, all chunks */
    size_t cap;            /* ct_alloc fails (ct_fail, LIMIT) past this */
};

/* ---- the error exit ------------------------------------------------------ */

struct ct_fail {
    jmp_buf jb;
    struct pl_err *err;
    pl_status status;
    const char *src; /* the normalized template source, for line/column */
    size_t src_len;
    struct ct_arena *arena; /* where ct_alloc takes memory */
};

_Noreturn void ct_fail_at(struct ct_fail *f, pl_status st, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void *ct_alloc(struct ct_fail *f, size_t n); /* zeroed; never returns NULL */
char *ct_strdup(struct ct_fail *f, const char *s, size_t n); /* NUL-terminated copy */
void ct_arena_fini(struct ct_arena *a);
/* Line and column (1-based, column in code points) of byte offset pos. */
void ct_line_col(const char *src, size_t len, size_t pos, int *line, int *col);

/* ---- UTF-8 and Python character classes ---------------------------------- */

/* Decodes the code point at s[i] (valid UTF-8 assumed); returns its length. */
int ct_utf8_dec(const char *s, size_t n, size_t i, uint32_t *cp);
int ct_utf8_enc(uint32_t cp, char out[4]);
bool ct_utf8_valid(const char *s, size_t n);
size_t ct_utf8_count(const char *s, size_t n);
bool ct_py_isspace(uint32_t cp);
bool ct_py_islinebreak(uint32_t cp); /* str.splitlines boundaries */

/* ---- growable byte buffer ------------------------------------------------ */

struct ct_buf {
    char *p;
    size_t n, cap;
    bool is_heap;  /* malloc'ed (the render's main output) vs arena */
    size_t limit;  /* ct_fail with PL_STATUS_LIMIT beyond this many bytes */
};
void ct_buf_put(struct ct_fail *f, struct ct_buf *b, const char *s, size_t n, size_t pos);
void ct_buf_putc(struct ct_fail *f, struct ct_buf *b, char c);

/* ---- tokens -------------------------------------------------------------- */

enum ct_tok {
    TK_EOF, TK_DATA, TK_VAR_BEGIN, TK_VAR_END, TK_BLOCK_BEGIN, TK_BLOCK_END,
    TK_NAME, TK_STRING, TK_INT, TK_FLOAT, TK_OP
};

enum ct_op {
    OP_ADD, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
    OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE,
    OP_EQ, OP_NE, OP_GT, OP_GTEQ, OP_LT, OP_LTEQ, OP_ASSIGN, OP_DOT, OP_COLON,
    OP_PIPE, OP_COMMA, OP_SEMICOLON,
    /* not produced by the lexer: node operators */
    OP_AND, OP_OR, OP_NOT, OP_IN, OP_NOTIN, OP_NEG, OP_POS
};

struct ct_token {
    enum ct_tok type;
    int op;         /* TK_OP: enum ct_op */
    size_t pos;     /* byte offset in the normalized source */
    const char *s;  /* TK_DATA, TK_NAME, TK_STRING (unescaped): bytes */
    size_t n;
    int64_t i;      /* TK_INT */
    double f;       /* TK_FLOAT */
};

/* Tokenizes src (already newline-normalized) into *toks (arena). */
void ct_lex(struct ct_fail *f, const char *src, size_t n, struct ct_token **toks, size_t *n_toks);

/* ---- values -------------------------------------------------------------- */

enum ct_type {
    CT_UNDEF, CT_NONE, CT_BOOL, CT_INT, CT_FLOAT, CT_STR, CT_LIST, CT_DICT,
    CT_NS, CT_MACRO, CT_FUNC, CT_LOOP
};

struct ct_list;
struct ct_dict;
struct ct_macro;
struct ct_func;
struct ct_loop;

/* A value is a small by-value tagged union; containers are shared by pointer
 * (Python reference semantics). Strings are immutable byte ranges, valid UTF-8. */
struct ct_val {
    enum ct_type type;
    union {
        int b;
        int64_t i;
        double f;
        const char *s; /* CT_STR; CT_UNDEF: hint for error messages (may be NULL) */
        struct ct_list *l;
        struct ct_dict *d; /* CT_DICT and CT_NS */
        struct ct_macro *m;
        struct ct_func *fn;
        struct ct_loop *loop;
    } u;
    size_t n; /* CT_STR / CT_UNDEF hint: byte length */
};

struct ct_list {
    struct ct_val *v;
    size_t n, cap;
    bool is_tuple;
    bool is_gen; /* a Python iterator (map, select, ...): always true, no len() */
    const char *view; /* "dict_items" / "dict_keys" / "dict_values" for dict views, else NULL */
};

struct ct_dict {
    struct ct_val *k, *v; /* insertion order */
    size_t n, cap;
};

/* ---- AST ----------------------------------------------------------------- */

enum ct_kind {
    /* statements */
    N_DATA, N_PRINT, N_FOR, N_IF, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK,
    N_BREAK, N_CONTINUE, N_SCOPE,
    /* expressions */
    N_CONST, N_NAME, N_LIST, N_TUPLE, N_DICT, N_GETATTR, N_GETITEM, N_SLICE, N_CALL,
    N_FILTER, N_TEST, N_UNARY, N_BINARY, N_CONCAT, N_COMPARE, N_COND, N_NSREF
};

/* One fat node; fields are used per kind as noted.
 *   N_DATA        str/n: text
 *   N_PRINT       a: expression
 *   N_FOR         a: target (N_NAME / N_TUPLE of N_NAME), b: iterable, c: filter or NULL,
 *                 list: body, list2: else body
 *   N_IF          a: condition, list: body, list2: else body (elif = nested N_IF)
 *   N_SET         a: target (N_NAME, N_TUPLE, N_NSREF), b: value
 *   N_SETBLOCK    a: target, list: body, c: filter chain applied to the capture (N_FILTER with
 *                 a == NULL at its innermost operand) or NULL
 *   N_MACRO       str: name, names/n_names: params, list2: defaults (NULL entries = none),
 *                 list: body, op: bit 1 the body uses `varargs`, bit 2 `kwargs` (then extra
 *                 arguments are collected instead of refused, as jinja2 does)
 *   N_CALLBLOCK   a: the call expression, names/list2: caller params and defaults, list: body
 *   N_FILTERBLOCK c: filter chain as in N_SETBLOCK, list: body
 *   N_SCOPE       list: body run in a child scope; names/list2: assignments first (with)
 *   N_CONST       val
 *   N_NAME        str: name
 *   N_LIST/TUPLE  list: items;  N_DICT: list: keys, list2: values
 *   N_GETATTR     a: object, str: attribute
 *   N_GETITEM     a: object, b: key
 *   N_SLICE       a: object, b/c/d: start/stop/step or NULL
 *   N_CALL        a: callee, list: positional, names/list2: keyword args
 *   N_FILTER      a: operand (NULL inside filter blocks), str: name, id: filter id,
 *                 list/names/list2 as N_CALL
 *   N_TEST        a: operand, str: name, id: test id, list/names/list2 as N_CALL
 *   N_UNARY       op: OP_NEG / OP_POS / OP_NOT, a
 *   N_BINARY      op, a, b (OP_AND / OP_OR short-circuit)
 *   N_CONCAT      list: operands (~)
 *   N_COMPARE     a: first operand, list: operands, ops: operator per operand
 *   N_COND        a: condition, b: then, c: else or NULL
 *   N_NSREF       str: namespace variable, str2: attribute (only as a set target) */
struct ct_node {
    enum ct_kind kind;
    int op;
    int id;
    size_t pos;
    struct ct_node *a, *b, *c, *d;
    struct ct_node **list;
    size_t n_list;
    struct ct_node **list2;
    size_t n_list2;
    const char **names;
    size_t *name_lens;
    size_t n_names;
    const char *str, *str2;
    size_t n, n2;
    int *ops;
    struct ct_val val;
};

struct pl_chat_template {
    struct ct_arena arena; /* owns the source copy, tokens and the AST */
    const char *src;       /* normalized source */
    size_t src_len;
    struct ct_node **body;
    size_t n_body;
};

/* Parses src (normalized) into t->body. */
void ct_parse(struct ct_fail *f, struct pl_chat_template *t);

/* ---- filters and tests by name (ids resolved at parse time, -1 unknown) -- */

int ct_filter_id(const char *name, size_t n);
int ct_test_id(const char *name, size_t n);

#endif
