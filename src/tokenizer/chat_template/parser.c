/*
 * parser.c -- tokens -> AST for the chat template interpreter.
 *
 * Owns: the AST of one template (struct ct_node, in the template arena).
 * A recursive-descent parser following jinja2's grammar and precedence:
 *   condexpr  := or ('if' or ('else' condexpr)?)*
 *   or        := and ('or' and)*        and := not ('and' not)*
 *   not       := 'not' not | compare    compare := math1 (cmpop math1)*
 *   math1     := concat (('+'|'-') concat)*   concat := math2 ('~' math2)*
 *   math2     := pow (('*'|'/'|'//'|'%') pow)* pow := unary ('**' unary)*  (left-assoc)
 *   unary     := ('-'|'+') unary | primary postfix* (filter | test | call)*
 * Filters therefore bind tighter than binary operators: a + b|trim == a + (b|trim).
 * Invariants: nesting depth is bounded (CT_MAX_NEST) so hostile input cannot
 * exhaust the C stack; every node records the byte offset of its first token.
 */
#include "tokenizer/chat_template/ct_internal.h"

#include <string.h>

#define CT_MAX_NEST 200

struct parser {
    struct ct_fail *f;
    struct ct_token *t;
    size_t n_t, i;
    int nest;      /* expression / statement nesting */
    int loop_depth; /* enclosing for-loops (break/continue allowed) */
    int uses_varargs; /* names seen: bit 1 varargs, bit 2 kwargs (for macros) */
};

/* growable node list */
struct nlist {
    struct ct_node **v;
    size_t n, cap;
};

static void nl_push(struct parser *P, struct nlist *l, struct ct_node *x)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct ct_node **v = ct_alloc(P->f, cap * sizeof(*v));
        if (l->n)
            memcpy(v, l->v, l->n * sizeof(*v));
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = x;
}

static struct ct_token *cur(struct parser *P) { return &P->t[P->i]; }
static struct ct_token *peek(struct parser *P, size_t k)
{
    return P->i + k < P->n_t ? &P->t[P->i + k] : &P->t[P->n_t - 1];
}
static void adv(struct parser *P)
{
    if (P->i + 1 < P->n_t)
        P->i++;
}

static bool is_op(struct ct_token *t, int op) { return t->type == TK_OP && t->op == op; }
static bool is_name(struct ct_token *t, const char *s)
{
    return t->type == TK_NAME && t->n == strlen(s) && memcmp(t->s, s, t->n) == 0;
}

static const char *tok_desc(struct ct_token *t)
{
    switch (t->type) {
    case TK_EOF: return "end of template";
    case TK_DATA: return "template data";
    case TK_VAR_BEGIN: return "'{{'";
    case TK_VAR_END: return "end of print statement '}}'";
    case TK_BLOCK_BEGIN: return "'{%'";
    case TK_BLOCK_END: return "end of statement block '%}'";
    case TK_NAME: return "a name";
    case TK_STRING: return "a string";
    case TK_INT: return "an integer";
    case TK_FLOAT: return "a float";
    case TK_OP: return "an operator";
    }
    return "token";
}

_Noreturn static void unexpected(struct parser *P, const char *expected)
{
    struct ct_token *t = cur(P);
    if (t->type == TK_NAME)
        ct_fail_at(P->f, PL_STATUS_FORMAT, t->pos, "expected %s, got '%.*s'", expected,
                   (int)t->n, t->s);
    ct_fail_at(P->f, PL_STATUS_FORMAT, t->pos, "expected %s, got %s", expected, tok_desc(t));
}

static void expect_op(struct parser *P, int op, const char *what)
{
    if (!is_op(cur(P), op))
        unexpected(P, what);
    adv(P);
}

static struct ct_token *expect_name(struct parser *P)
{
    struct ct_token *t = cur(P);
    if (t->type != TK_NAME)
        unexpected(P, "a name");
    adv(P);
    return t;
}

static void expect_block_end(struct parser *P)
{
    if (cur(P)->type != TK_BLOCK_END)
        unexpected(P, "end of statement block '%}'");
    adv(P);
}

static struct ct_node *mk(struct parser *P, enum ct_kind kind, size_t pos)
{
    struct ct_node *x = ct_alloc(P->f, sizeof(*x));
    x->kind = kind;
    x->pos = pos;
    return x;
}

static void enter(struct parser *P)
{
    if (++P->nest > CT_MAX_NEST)
        ct_fail_at(P->f, PL_STATUS_LIMIT, cur(P)->pos, "template nested too deeply");
}
static void leave(struct parser *P) { P->nest--; }

static struct ct_node *parse_expression(struct parser *P);
static struct ct_node *parse_or(struct parser *P);
static struct ct_node *parse_unary(struct parser *P, bool with_filter);
static struct ct_node *parse_primary(struct parser *P);
static struct ct_node *parse_postfix(struct parser *P, struct ct_node *node);

/* Call arguments "(a, b, k=v)" into x->list / x->names / x->list2. */
static void parse_call_args(struct parser *P, struct ct_node *x)
{
    struct nlist args = {0}, kwvals = {0};
    const char **names = NULL;
    size_t *lens = NULL, n_names = 0, cap_names = 0;
    expect_op(P, OP_LPAREN, "'('");
    while (!is_op(cur(P), OP_RPAREN)) {
        if (args.n || n_names) {
            expect_op(P, OP_COMMA, "',' or ')'");
            if (is_op(cur(P), OP_RPAREN))
                break;
        }
        if (is_op(cur(P), OP_MUL) || is_op(cur(P), OP_POW))
            ct_fail_at(P->f, PL_STATUS_UNSUPPORTED, cur(P)->pos,
                       "*args / **kwargs in calls are not supported");
        if (cur(P)->type == TK_NAME && is_op(peek(P, 1), OP_ASSIGN)) {
            struct ct_token *nt = cur(P);
            adv(P);
            adv(P);
            if (n_names == cap_names) {
                cap_names = cap_names ? cap_names * 2 : 4;
                const char **nn = ct_alloc(P->f, cap_names * sizeof(*nn));
                size_t *nl = ct_alloc(P->f, cap_names * sizeof(*nl));
                if (n_names) {
                    memcpy(nn, names, n_names * sizeof(*nn));
                    memcpy(nl, lens, n_names * sizeof(*nl));
                }
                names = nn;
                lens = nl;
            }
            names[n_names] = nt->s;
            lens[n_names++] = nt->n;
            nl_push(P, &kwvals, parse_expression(P));
        } else {
            if (n_names)
                ct_fail_at(P->f, PL_STATUS_FORMAT, cur(P)->pos,
                           "positional argument follows keyword argument");
            nl_push(P, &args, parse_expression(P));
        }
    }
    adv(P);
    x->list = args.v;
    x->n_list = args.n;
    x->list2 = kwvals.v;
    x->n_list2 = kwvals.n;
    x->names = names;
    x->name_lens = lens;
    x->n_names = n_names;
}

/* tuple := expr (',' expr)* ','?  -- a single expression without a comma is itself */
static struct ct_node *parse_tuple(struct parser *P, bool with_condexpr, bool explicit_parens,
                                   const char *extra_end)
{
    size_t pos = cur(P)->pos;
    struct nlist items = {0};
    bool is_tuple = false;
    for (;;) {
        if (items.n)
            expect_op(P, OP_COMMA, "','");
        struct ct_token *t = cur(P);
        if (t->type == TK_VAR_END || t->type == TK_BLOCK_END || t->type == TK_EOF ||
            is_op(t, OP_RPAREN) || (extra_end && is_name(t, extra_end)))
            break;
        nl_push(P, &items, with_condexpr ? parse_expression(P) : parse_or(P));
        if (is_op(cur(P), OP_COMMA))
            is_tuple = true;
        else
            break;
    }
    if (!is_tuple) {
        if (items.n)
            return items.v[0];
        if (!explicit_parens)
            unexpected(P, "an expression");
    }
    struct ct_node *x = mk(P, N_TUPLE, pos);
    x->list = items.v;
    x->n_list = items.n;
    return x;
}

static struct ct_node *parse_primary(struct parser *P)
{
    struct ct_token *t = cur(P);
    struct ct_node *x;
    enter(P);
    switch (t->type) {
    case TK_NAME:
        adv(P);
        x = mk(P, N_CONST, t->pos);
        if (is_name(t, "true") || is_name(t, "True")) {
            x->val.type = CT_BOOL, x->val.u.b = 1;
        } else if (is_name(t, "false") || is_name(t, "False")) {
            x->val.type = CT_BOOL, x->val.u.b = 0;
        } else if (is_name(t, "none") || is_name(t, "None")) {
            x->val.type = CT_NONE;
        } else {
            x->kind = N_NAME;
            x->str = t->s;
            x->n = t->n;
            if (is_name(t, "varargs"))
                P->uses_varargs |= 1;
            else if (is_name(t, "kwargs"))
                P->uses_varargs |= 2;
        }
        break;
    case TK_STRING: {
        /* adjacent literals concatenate: 'a' 'b' == 'ab' */
        size_t total = 0, k = P->i;
        while (k < P->n_t && P->t[k].type == TK_STRING)
            total += P->t[k++].n;
        char *s = ct_alloc(P->f, total + 1);
        size_t off = 0;
        while (cur(P)->type == TK_STRING) {
            memcpy(s + off, cur(P)->s, cur(P)->n);
            off += cur(P)->n;
            adv(P);
        }
        x = mk(P, N_CONST, t->pos);
        x->val.type = CT_STR;
        x->val.u.s = s;
        x->val.n = total;
        break;
    }
    case TK_INT:
        adv(P);
        x = mk(P, N_CONST, t->pos);
        x->val.type = CT_INT;
        x->val.u.i = t->i;
        break;
    case TK_FLOAT:
        adv(P);
        x = mk(P, N_CONST, t->pos);
        x->val.type = CT_FLOAT;
        x->val.u.f = t->f;
        break;
    case TK_OP:
        if (t->op == OP_LPAREN) {
            adv(P);
            x = parse_tuple(P, true, true, NULL);
            expect_op(P, OP_RPAREN, "')'");
            break;
        }
        if (t->op == OP_LBRACKET) {
            adv(P);
            struct nlist items = {0};
            while (!is_op(cur(P), OP_RBRACKET)) {
                if (items.n) {
                    expect_op(P, OP_COMMA, "',' or ']'");
                    if (is_op(cur(P), OP_RBRACKET))
                        break;
                }
                nl_push(P, &items, parse_expression(P));
            }
            adv(P);
            x = mk(P, N_LIST, t->pos);
            x->list = items.v;
            x->n_list = items.n;
            break;
        }
        if (t->op == OP_LBRACE) {
            adv(P);
            struct nlist keys = {0}, vals = {0};
            while (!is_op(cur(P), OP_RBRACE)) {
                if (keys.n) {
                    expect_op(P, OP_COMMA, "',' or '}'");
                    if (is_op(cur(P), OP_RBRACE))
                        break;
                }
                nl_push(P, &keys, parse_expression(P));
                expect_op(P, OP_COLON, "':'");
                nl_push(P, &vals, parse_expression(P));
            }
            adv(P);
            x = mk(P, N_DICT, t->pos);
            x->list = keys.v;
            x->n_list = keys.n;
            x->list2 = vals.v;
            x->n_list2 = vals.n;
            break;
        }
        unexpected(P, "an expression");
    default:
        unexpected(P, "an expression");
    }
    leave(P);
    return x;
}

/* [a], [a:b:c], [a, b] inside brackets */
static struct ct_node *parse_subscribed(struct parser *P)
{
    size_t pos = cur(P)->pos;
    struct ct_node *parts[3] = {NULL, NULL, NULL};
    if (is_op(cur(P), OP_COLON)) {
        adv(P);
    } else {
        struct ct_node *e = parse_expression(P);
        if (!is_op(cur(P), OP_COLON))
            return e;
        adv(P);
        parts[0] = e;
    }
    if (!is_op(cur(P), OP_COLON) && !is_op(cur(P), OP_RBRACKET) && !is_op(cur(P), OP_COMMA))
        parts[1] = parse_expression(P);
    if (is_op(cur(P), OP_COLON)) {
        adv(P);
        if (!is_op(cur(P), OP_RBRACKET) && !is_op(cur(P), OP_COMMA))
            parts[2] = parse_expression(P);
    }
    struct ct_node *x = mk(P, N_SLICE, pos);
    x->b = parts[0];
    x->c = parts[1];
    x->d = parts[2];
    return x;
}

static struct ct_node *parse_postfix(struct parser *P, struct ct_node *node)
{
    for (;;) {
        struct ct_token *t = cur(P);
        if (is_op(t, OP_DOT)) {
            adv(P);
            struct ct_token *a = cur(P);
            if (a->type == TK_NAME) {
                adv(P);
                struct ct_node *x = mk(P, N_GETATTR, t->pos);
                x->a = node;
                x->str = a->s;
                x->n = a->n;
                node = x;
            } else if (a->type == TK_INT) {
                adv(P);
                struct ct_node *k = mk(P, N_CONST, a->pos);
                k->val.type = CT_INT;
                k->val.u.i = a->i;
                struct ct_node *x = mk(P, N_GETITEM, t->pos);
                x->a = node;
                x->b = k;
                node = x;
            } else {
                unexpected(P, "an attribute name");
            }
        } else if (is_op(t, OP_LBRACKET)) {
            adv(P);
            struct nlist args = {0};
            while (!is_op(cur(P), OP_RBRACKET)) {
                if (args.n) {
                    expect_op(P, OP_COMMA, "',' or ']'");
                    if (is_op(cur(P), OP_RBRACKET))
                        break;
                }
                nl_push(P, &args, parse_subscribed(P));
            }
            adv(P);
            if (args.n == 0)
                ct_fail_at(P->f, PL_STATUS_FORMAT, t->pos, "empty subscript");
            struct ct_node *key;
            if (args.n == 1) {
                key = args.v[0];
            } else {
                for (size_t k = 0; k < args.n; k++)
                    if (args.v[k]->kind == N_SLICE)
                        ct_fail_at(P->f, PL_STATUS_UNSUPPORTED, args.v[k]->pos,
                                   "slices inside a tuple subscript are not supported");
                key = mk(P, N_TUPLE, t->pos);
                key->list = args.v;
                key->n_list = args.n;
            }
            if (key->kind == N_SLICE) {
                key->a = node;
                node = key;
            } else {
                struct ct_node *x = mk(P, N_GETITEM, t->pos);
                x->a = node;
                x->b = key;
                node = x;
            }
        } else if (is_op(t, OP_LPAREN)) {
            /* a call's position is its callee's: raise_exception(...) reports where it starts */
            struct ct_node *x = mk(P, N_CALL, node->pos);
            x->a = node;
            parse_call_args(P, x);
            node = x;
        } else {
            return node;
        }
    }
}

static void dotted_name(struct parser *P, struct ct_node *x)
{
    struct ct_token *nt = expect_name(P);
    x->str = nt->s;
    x->n = nt->n;
    if (is_op(cur(P), OP_DOT))
        ct_fail_at(P->f, PL_STATUS_UNSUPPORTED, cur(P)->pos, "dotted filter/test names are not supported");
}

/* '|' name ('(' args ')')?  -- operand may be NULL (filter blocks) */
static struct ct_node *parse_filter(struct parser *P, struct ct_node *operand, bool start_inline)
{
    for (;;) {
        size_t pos = cur(P)->pos;
        if (!start_inline) {
            if (!is_op(cur(P), OP_PIPE))
                return operand;
            adv(P);
        }
        start_inline = false;
        struct ct_node *x = mk(P, N_FILTER, pos);
        x->a = operand;
        pos = cur(P)->pos;
        dotted_name(P, x);
        x->pos = pos;
        x->id = ct_filter_id(x->str, x->n);
        if (is_op(cur(P), OP_LPAREN))
            parse_call_args(P, x);
        operand = x;
    }
}

static struct ct_node *parse_test(struct parser *P, struct ct_node *operand)
{
    size_t pos = cur(P)->pos;
    adv(P); /* 'is' */
    bool negated = false;
    if (is_name(cur(P), "not")) {
        adv(P);
        negated = true;
    }
    struct ct_node *x = mk(P, N_TEST, pos);
    x->a = operand;
    dotted_name(P, x);
    x->id = ct_test_id(x->str, x->n);
    struct ct_token *t = cur(P);
    if (is_op(t, OP_LPAREN)) {
        parse_call_args(P, x);
    } else if ((t->type == TK_NAME || t->type == TK_STRING || t->type == TK_INT ||
                t->type == TK_FLOAT || is_op(t, OP_LBRACKET) || is_op(t, OP_LBRACE)) &&
               !is_name(t, "else") && !is_name(t, "or") && !is_name(t, "and")) {
        if (is_name(t, "is"))
            ct_fail_at(P->f, PL_STATUS_FORMAT, t->pos, "you cannot chain multiple tests with is");
        struct ct_node *arg = parse_postfix(P, parse_primary(P));
        x->list = ct_alloc(P->f, sizeof(*x->list));
        x->list[0] = arg;
        x->n_list = 1;
    }
    if (negated) {
        struct ct_node *n = mk(P, N_UNARY, pos);
        n->op = OP_NOT;
        n->a = x;
        return n;
    }
    return x;
}

static struct ct_node *parse_filter_expr(struct parser *P, struct ct_node *node)
{
    for (;;) {
        if (is_op(cur(P), OP_PIPE)) {
            node = parse_filter(P, node, false);
        } else if (is_name(cur(P), "is")) {
            node = parse_test(P, node);
        } else if (is_op(cur(P), OP_LPAREN)) {
            struct ct_node *x = mk(P, N_CALL, node->pos);
            x->a = node;
            parse_call_args(P, x);
            node = x;
        } else {
            return node;
        }
    }
}

static struct ct_node *parse_unary(struct parser *P, bool with_filter)
{
    struct ct_token *t = cur(P);
    struct ct_node *node;
    enter(P);
    if (is_op(t, OP_SUB) || is_op(t, OP_ADD)) {
        adv(P);
        node = mk(P, N_UNARY, t->pos);
        node->op = t->op == OP_SUB ? OP_NEG : OP_POS;
        node->a = parse_unary(P, false);
    } else {
        node = parse_primary(P);
    }
    node = parse_postfix(P, node);
    if (with_filter)
        node = parse_filter_expr(P, node);
    leave(P);
    return node;
}

static struct ct_node *binary(struct parser *P, int op, size_t pos, struct ct_node *a,
                              struct ct_node *b)
{
    struct ct_node *x = mk(P, N_BINARY, pos);
    x->op = op;
    x->a = a;
    x->b = b;
    return x;
}

static struct ct_node *parse_pow(struct parser *P)
{
    struct ct_node *l = parse_unary(P, true);
    while (is_op(cur(P), OP_POW)) {
        size_t pos = cur(P)->pos;
        adv(P);
        l = binary(P, OP_POW, pos, l, parse_unary(P, true));
    }
    return l;
}

static struct ct_node *parse_math2(struct parser *P)
{
    struct ct_node *l = parse_pow(P);
    for (;;) {
        struct ct_token *t = cur(P);
        if (!(is_op(t, OP_MUL) || is_op(t, OP_DIV) || is_op(t, OP_FLOORDIV) || is_op(t, OP_MOD)))
            return l;
        adv(P);
        l = binary(P, t->op, t->pos, l, parse_pow(P));
    }
}

static struct ct_node *parse_concat(struct parser *P)
{
    struct ct_node *first = parse_math2(P);
    if (!is_op(cur(P), OP_TILDE))
        return first;
    struct nlist items = {0};
    nl_push(P, &items, first);
    while (is_op(cur(P), OP_TILDE)) {
        adv(P);
        nl_push(P, &items, parse_math2(P));
    }
    struct ct_node *x = mk(P, N_CONCAT, first->pos);
    x->list = items.v;
    x->n_list = items.n;
    return x;
}

static struct ct_node *parse_math1(struct parser *P)
{
    struct ct_node *l = parse_concat(P);
    for (;;) {
        struct ct_token *t = cur(P);
        if (!(is_op(t, OP_ADD) || is_op(t, OP_SUB)))
            return l;
        adv(P);
        l = binary(P, t->op, t->pos, l, parse_concat(P));
    }
}

static struct ct_node *parse_compare(struct parser *P)
{
    size_t pos = cur(P)->pos;
    struct ct_node *first = parse_math1(P);
    struct nlist operands = {0};
    int *ops = NULL;
    size_t cap = 0;
    for (;;) {
        struct ct_token *t = cur(P);
        int op;
        if (t->type == TK_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == OP_LT ||
                                 t->op == OP_LTEQ || t->op == OP_GT || t->op == OP_GTEQ)) {
            op = t->op;
            adv(P);
        } else if (is_name(t, "in")) {
            op = OP_IN;
            adv(P);
        } else if (is_name(t, "not") && is_name(peek(P, 1), "in")) {
            op = OP_NOTIN;
            adv(P);
            adv(P);
        } else {
            break;
        }
        if (operands.n == cap) {
            cap = cap ? cap * 2 : 2;
            int *o = ct_alloc(P->f, cap * sizeof(*o));
            if (operands.n)
                memcpy(o, ops, operands.n * sizeof(*o));
            ops = o;
        }
        ops[operands.n] = op;
        nl_push(P, &operands, parse_math1(P));
    }
    if (!operands.n)
        return first;
    struct ct_node *x = mk(P, N_COMPARE, pos);
    x->a = first;
    x->list = operands.v;
    x->n_list = operands.n;
    x->ops = ops;
    return x;
}

static struct ct_node *parse_not(struct parser *P)
{
    if (is_name(cur(P), "not")) {
        struct ct_node *x = mk(P, N_UNARY, cur(P)->pos);
        adv(P);
        enter(P);
        x->op = OP_NOT;
        x->a = parse_not(P);
        leave(P);
        return x;
    }
    return parse_compare(P);
}

static struct ct_node *parse_and(struct parser *P)
{
    struct ct_node *l = parse_not(P);
    while (is_name(cur(P), "and")) {
        size_t pos = cur(P)->pos;
        adv(P);
        l = binary(P, OP_AND, pos, l, parse_not(P));
    }
    return l;
}

static struct ct_node *parse_or(struct parser *P)
{
    struct ct_node *l = parse_and(P);
    while (is_name(cur(P), "or")) {
        size_t pos = cur(P)->pos;
        adv(P);
        l = binary(P, OP_OR, pos, l, parse_and(P));
    }
    return l;
}

static struct ct_node *parse_expression(struct parser *P)
{
    enter(P);
    struct ct_node *e = parse_or(P);
    while (is_name(cur(P), "if")) {
        struct ct_node *x = mk(P, N_COND, cur(P)->pos);
        adv(P);
        x->b = e;
        x->a = parse_or(P);
        if (is_name(cur(P), "else")) {
            adv(P);
            x->c = parse_expression(P);
        }
        e = x;
    }
    leave(P);
    return e;
}

/* ---- statements ------------------------------------------------------------ */

/* Parses nodes until a block tag whose name is one of `ends` (NULL-terminated);
 * leaves the parser on that name. ends == NULL: until end of template. */
static void subparse(struct parser *P, const char *const *ends, const char *innermost,
                     struct nlist *out);

static bool is_end(struct ct_token *t, const char *const *ends)
{
    for (; ends && *ends; ends++)
        if (is_name(t, *ends))
            return true;
    return false;
}

/* target := name | name '.' name | name (',' name)* */
static struct ct_node *parse_assign_target(struct parser *P, bool allow_ns)
{
    size_t pos = cur(P)->pos;
    struct ct_token *nt = expect_name(P);
    if (allow_ns && is_op(cur(P), OP_DOT)) {
        adv(P);
        struct ct_token *attr = expect_name(P);
        struct ct_node *x = mk(P, N_NSREF, pos);
        x->str = nt->s;
        x->n = nt->n;
        x->str2 = attr->s;
        x->n2 = attr->n;
        return x;
    }
    struct ct_node *first = mk(P, N_NAME, pos);
    first->str = nt->s;
    first->n = nt->n;
    if (!is_op(cur(P), OP_COMMA))
        return first;
    struct nlist items = {0};
    nl_push(P, &items, first);
    while (is_op(cur(P), OP_COMMA)) {
        adv(P);
        if (cur(P)->type != TK_NAME)
            break;
        struct ct_token *t = expect_name(P);
        struct ct_node *x = mk(P, N_NAME, t->pos);
        x->str = t->s;
        x->n = t->n;
        nl_push(P, &items, x);
    }
    struct ct_node *tup = mk(P, N_TUPLE, pos);
    tup->list = items.v;
    tup->n_list = items.n;
    return tup;
}

/* Appends a name to x's name list, growing it in the parse arena (*cap tracks its size). */
static void push_name(struct parser *P, struct ct_node *x, size_t *cap, const struct ct_token *nt)
{
    if (x->n_names == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        const char **nn = ct_alloc(P->f, *cap * sizeof(*nn));
        size_t *nl = ct_alloc(P->f, *cap * sizeof(*nl));
        if (x->n_names) {
            memcpy(nn, x->names, x->n_names * sizeof(*nn));
            memcpy(nl, x->name_lens, x->n_names * sizeof(*nl));
        }
        x->names = nn;
        x->name_lens = nl;
    }
    x->names[x->n_names] = nt->s;
    x->name_lens[x->n_names++] = nt->n;
}

/* Macro / caller parameters "(a, b=1)". */
static void parse_params(struct parser *P, struct ct_node *x)
{
    struct nlist defs = {0};
    size_t cap = 0;
    expect_op(P, OP_LPAREN, "'('");
    while (!is_op(cur(P), OP_RPAREN)) {
        if (x->n_names)
            expect_op(P, OP_COMMA, "',' or ')'");
        struct ct_token *nt = expect_name(P);
        push_name(P, x, &cap, nt);
        if (is_op(cur(P), OP_ASSIGN)) {
            adv(P);
            nl_push(P, &defs, parse_expression(P));
        } else {
            if (defs.n && defs.v[defs.n - 1])
                ct_fail_at(P->f, PL_STATUS_FORMAT, nt->pos, "non-default argument follows default argument");
            nl_push(P, &defs, NULL);
        }
    }
    adv(P);
    x->list2 = defs.v;
    x->n_list2 = defs.n;
}

static struct ct_node *parse_statement(struct parser *P)
{
    struct ct_token *begin = cur(P);
    adv(P); /* '{%' */
    struct ct_token *t = cur(P);
    if (t->type != TK_NAME)
        unexpected(P, "a statement name");
    adv(P);
    struct ct_node *x;
    enter(P);
    if (is_name(t, "for")) {
        x = mk(P, N_FOR, begin->pos);
        x->a = parse_assign_target(P, false);
        if (!is_name(cur(P), "in"))
            unexpected(P, "'in'");
        adv(P);
        x->b = parse_tuple(P, false, false, "recursive");
        if (is_name(cur(P), "if")) {
            adv(P);
            x->c = parse_expression(P);
        }
        if (is_name(cur(P), "recursive"))
            ct_fail_at(P->f, PL_STATUS_UNSUPPORTED, cur(P)->pos, "recursive for loops are not supported");
        expect_block_end(P);
        static const char *const e1[] = {"endfor", "else", NULL};
        static const char *const e2[] = {"endfor", NULL};
        struct nlist body = {0}, other = {0};
        P->loop_depth++;
        subparse(P, e1, "for", &body);
        P->loop_depth--;
        if (is_name(cur(P), "else")) {
            adv(P);
            expect_block_end(P);
            subparse(P, e2, "for", &other);
        }
        adv(P);
        expect_block_end(P);
        x->list = body.v;
        x->n_list = body.n;
        x->list2 = other.v;
        x->n_list2 = other.n;
    } else if (is_name(t, "if")) {
        x = mk(P, N_IF, begin->pos);
        struct ct_node *node = x;
        node->a = parse_tuple(P, false, false, NULL);
        expect_block_end(P);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        static const char *const e2[] = {"endif", NULL};
        for (;;) {
            struct nlist body = {0};
            subparse(P, ends, "if", &body);
            node->list = body.v;
            node->n_list = body.n;
            if (is_name(cur(P), "elif")) {
                size_t pos = cur(P)->pos;
                adv(P);
                struct ct_node *n2 = mk(P, N_IF, pos);
                n2->a = parse_tuple(P, false, false, NULL);
                expect_block_end(P);
                node->list2 = ct_alloc(P->f, sizeof(*node->list2));
                node->list2[0] = n2;
                node->n_list2 = 1;
                node = n2;
                continue;
            }
            if (is_name(cur(P), "else")) {
                adv(P);
                expect_block_end(P);
                struct nlist other = {0};
                subparse(P, e2, "if", &other);
                node->list2 = other.v;
                node->n_list2 = other.n;
            }
            adv(P);
            expect_block_end(P);
            break;
        }
    } else if (is_name(t, "set")) {
        struct ct_node *target = parse_assign_target(P, true);
        if (is_op(cur(P), OP_ASSIGN)) {
            adv(P);
            x = mk(P, N_SET, begin->pos);
            x->a = target;
            x->b = parse_tuple(P, true, false, NULL);
            expect_block_end(P);
        } else {
            x = mk(P, N_SETBLOCK, begin->pos);
            x->a = target;
            x->c = is_op(cur(P), OP_PIPE) ? parse_filter(P, NULL, false) : NULL;
            expect_block_end(P);
            static const char *const ends[] = {"endset", NULL};
            struct nlist body = {0};
            subparse(P, ends, "set", &body);
            adv(P);
            expect_block_end(P);
            x->list = body.v;
            x->n_list = body.n;
        }
    } else if (is_name(t, "macro")) {
        x = mk(P, N_MACRO, begin->pos);
        struct ct_token *nt = expect_name(P);
        x->str = nt->s;
        x->n = nt->n;
        parse_params(P, x);
        expect_block_end(P);
        static const char *const ends[] = {"endmacro", NULL};
        struct nlist body = {0};
        int saved = P->loop_depth, saved_va = P->uses_varargs;
        P->loop_depth = 0;
        P->uses_varargs = 0;
        subparse(P, ends, "macro", &body);
        x->op = P->uses_varargs;
        P->loop_depth = saved;
        P->uses_varargs = saved_va;
        adv(P);
        expect_block_end(P);
        x->list = body.v;
        x->n_list = body.n;
    } else if (is_name(t, "call")) {
        x = mk(P, N_CALLBLOCK, begin->pos);
        if (is_op(cur(P), OP_LPAREN))
            parse_params(P, x);
        x->a = parse_expression(P);
        if (x->a->kind != N_CALL)
            ct_fail_at(P->f, PL_STATUS_FORMAT, x->a->pos, "expected a call in a call block");
        expect_block_end(P);
        static const char *const ends[] = {"endcall", NULL};
        struct nlist body = {0};
        int saved = P->loop_depth;
        P->loop_depth = 0;
        subparse(P, ends, "call", &body);
        P->loop_depth = saved;
        adv(P);
        expect_block_end(P);
        x->list = body.v;
        x->n_list = body.n;
    } else if (is_name(t, "filter")) {
        x = mk(P, N_FILTERBLOCK, begin->pos);
        x->c = parse_filter(P, NULL, true);
        expect_block_end(P);
        static const char *const ends[] = {"endfilter", NULL};
        struct nlist body = {0};
        subparse(P, ends, "filter", &body);
        adv(P);
        expect_block_end(P);
        x->list = body.v;
        x->n_list = body.n;
    } else if (is_name(t, "with")) {
        x = mk(P, N_SCOPE, begin->pos);
        struct nlist vals = {0};
        size_t cap = 0;
        while (cur(P)->type != TK_BLOCK_END) {
            if (x->n_names)
                expect_op(P, OP_COMMA, "','");
            struct ct_token *nt = expect_name(P);
            expect_op(P, OP_ASSIGN, "'='");
            push_name(P, x, &cap, nt);
            nl_push(P, &vals, parse_expression(P));
        }
        expect_block_end(P);
        x->list2 = vals.v;
        x->n_list2 = vals.n;
        static const char *const ends[] = {"endwith", NULL};
        struct nlist body = {0};
        subparse(P, ends, "with", &body);
        adv(P);
        expect_block_end(P);
        x->list = body.v;
        x->n_list = body.n;
    } else if (is_name(t, "generation")) {
        /* transformers' AssistantTracker: the body renders unchanged */
        x = mk(P, N_SCOPE, begin->pos);
        x->op = 1; /* no new scope */
        expect_block_end(P);
        static const char *const ends[] = {"endgeneration", NULL};
        struct nlist body = {0};
        subparse(P, ends, "generation", &body);
        adv(P);
        expect_block_end(P);
        x->list = body.v;
        x->n_list = body.n;
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        if (!P->loop_depth)
            ct_fail_at(P->f, PL_STATUS_FORMAT, t->pos, "'%.*s' outside of a loop", (int)t->n, t->s);
        x = mk(P, is_name(t, "break") ? N_BREAK : N_CONTINUE, begin->pos);
        expect_block_end(P);
    } else {
        ct_fail_at(P->f, t->n > 3 && memcmp(t->s, "end", 3) == 0 ? PL_STATUS_FORMAT : PL_STATUS_UNSUPPORTED,
                   t->pos, "unknown or unexpected tag '%.*s'", (int)t->n, t->s);
    }
    leave(P);
    return x;
}

static void subparse(struct parser *P, const char *const *ends, const char *innermost,
                     struct nlist *out)
{
    for (;;) {
        struct ct_token *t = cur(P);
        switch (t->type) {
        case TK_EOF:
            if (ends)
                ct_fail_at(P->f, PL_STATUS_FORMAT, t->pos,
                           "unexpected end of template: the '%s' block is not closed (expected '%s')",
                           innermost, ends[0]);
            return;
        case TK_DATA: {
            struct ct_node *x = mk(P, N_DATA, t->pos);
            x->str = t->s;
            x->n = t->n;
            nl_push(P, out, x);
            adv(P);
            break;
        }
        case TK_VAR_BEGIN: {
            struct ct_node *x = mk(P, N_PRINT, t->pos);
            adv(P);
            x->a = parse_tuple(P, true, false, NULL);
            if (cur(P)->type != TK_VAR_END)
                unexpected(P, "end of print statement '}}'");
            adv(P);
            nl_push(P, out, x);
            break;
        }
        case TK_BLOCK_BEGIN:
            if (is_end(peek(P, 1), ends)) {
                adv(P);
                return;
            }
            nl_push(P, out, parse_statement(P));
            break;
        default:
            unexpected(P, "template data or a tag");
        }
    }
}

void ct_parse(struct ct_fail *f, struct pl_chat_template *t)
{
    struct parser P = {.f = f};
    ct_lex(f, t->src, t->src_len, &P.t, &P.n_t);
    struct nlist body = {0};
    subparse(&P, NULL, NULL, &body);
    t->body = body.v;
    t->n_body = body.n;
}
