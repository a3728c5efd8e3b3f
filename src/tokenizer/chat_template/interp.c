/*
 * interp.c -- evaluates a parsed chat template: statements, expressions, scopes,
 * loops and macros, with jinja2's semantics.
 *
 * Owns: the tree walk of one render (struct ct_vm). Scoping follows jinja2:
 * if-blocks share their scope; each for-loop iteration and each macro call runs
 * in a fresh child scope, so `set` inside a loop never leaks out (that is what
 * namespace() is for); a name not found in any scope falls back to the context
 * variables, then to the globals (range, namespace, dict, raise_exception,
 * strftime_now), else it is undefined.
 * Limits: loop iterations and macro calls count against
 * limits.max_loop_iterations, macro nesting against limits.max_depth, every
 * expression against the work budget (ct_vm.h), output against
 * limits.max_output_bytes.
 */
#include "tokenizer/chat_template/ct_vm.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum ctl { CTL_NONE, CTL_BREAK, CTL_CONTINUE };

static struct ct_val eval(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *x);
static enum ctl exec_body(struct ct_vm *vm, struct ct_scope *sc, struct ct_node *const *body, size_t n);

static struct ct_scope *scope_new(struct ct_vm *vm, struct ct_scope *parent)
{
    struct ct_scope *s = ct_alloc(&vm->fail, sizeof(*s));
    s->parent = parent;
    return s;
}

static void scope_set(struct ct_vm *vm, struct ct_scope *sc, const char *name, size_t n, struct ct_val v)
{
    ct_dict_set(vm, &sc->vars, ct_str(name, n), v);
}

static char *fmt_hint(struct ct_vm *vm, const char *fmt, const char *a, size_t an, const char *b, size_t bn)
{
    size_t cap = strlen(fmt) + (an > 200 ? 200 : an) + (bn > 200 ? 200 : bn) + 8;
    char *s = ct_alloc(&vm->fail, cap);
    snprintf(s, cap, fmt, (int)(an > 200 ? 200 : an), a, (int)(bn > 200 ? 200 : bn), b);
    return s;
}

_Noreturn void ct_fail_undefined(struct ct_vm *vm, struct ct_val u, size_t pos)
{
    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos, "%.*s", (int)u.n,
               u.u.s ? u.u.s : "value is undefined");
}

static struct ct_func *mkfunc(struct ct_vm *vm, enum ct_func_id id)
{
    struct ct_func *fn = ct_alloc(&vm->fail, sizeof(*fn));
    fn->id = id;
    return fn;
}

static struct ct_val lookup(struct ct_vm *vm, struct ct_scope *sc, const char *name, size_t n)
{
    for (; sc; sc = sc->parent) {
        struct ct_val *v = ct_dict_getn(&sc->vars, name, n);
        if (v)
            return *v;
    }
    static const struct {
        const char *name;
        enum ct_func_id id;
    } globals[] = {
        {"range", FN_RANGE}, {"namespace", FN_NAMESPACE}, {"dict", FN_DICT},
        {"raise_exception", FN_RAISE}, {"strftime_now", FN_STRFTIME},
    };
    for (size_t i = 0; i < sizeof(globals) / sizeof(globals[0]); i++) {
        if (strlen(globals[i].name) == n && memcmp(globals[i].name, name, n) == 0) {
            struct ct_val v = {.type = CT_FUNC};
            v.u.fn = mkfunc(vm, globals[i].id);
            return v;
        }
    }
    return ct_undef(fmt_hint(vm, "'%.*s' is undefined%.*s", name, n, "", 0));
}

/* ---- arithmetic --------------------------------------------------------- */

static bool is_num(struct ct_val v) { return v.type == CT_BOOL || v.type == CT_INT || v.type == CT_FLOAT; }
static bool is_intlike(struct ct_val v) { return v.type == CT_BOOL || v.type == CT_INT; }
static int64_t ival(struct ct_val v) { return v.type == CT_INT ? v.u.i : v.u.b; }
static double fval(struct ct_val v) { return v.type == CT_FLOAT ? v.u.f : (double)ival(v); }

static const char *op_name(int op)
{
    switch (op) {
    case OP_ADD: return "+";
    case OP_SUB: return "-";
    case OP_MUL: return "*";
    case OP_DIV: return "/";
    case OP_FLOORDIV: return "//";
    case OP_MOD: return "%";
    case OP_POW: return "**";
    default: return "?";
    }
}

_Noreturn static void overflow(struct ct_vm *vm, size_t pos)
{
    ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "integer overflow (integers are 64-bit)");
}

static struct ct_val repeat(struct ct_vm *vm, struct ct_val seq, int64_t times, size_t pos)
{
    if (times < 0)
        times = 0;
    if (seq.type == CT_STR) {
        if (seq.n && (uint64_t)times > vm->limits.max_output_bytes / seq.n)
            ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "string repetition exceeds the output limit");
        size_t total = seq.n * (size_t)times;
        ct_charge(vm, total / 64, pos);
        char *s = ct_alloc(&vm->fail, total + 1);
        for (int64_t i = 0; i < times; i++)
            memcpy(s + (size_t)i * seq.n, seq.u.s, seq.n);
        return ct_str(s, total);
    }
    struct ct_list *src = seq.u.l;
    if (src->n && (uint64_t)times > (vm->limits.max_output_bytes / 16) / src->n)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "list repetition too large");
    struct ct_list *l = ct_list_new(vm, src->n * (size_t)times);
    l->is_tuple = src->is_tuple;
    ct_charge(vm, src->n * (size_t)times, pos);
    for (int64_t i = 0; i < times; i++)
        for (size_t k = 0; k < src->n; k++)
            l->v[l->n++] = src->v[k];
    return (struct ct_val){.type = CT_LIST, .u.l = l};
}

static struct ct_val arith(struct ct_vm *vm, int op, struct ct_val a, struct ct_val b, size_t pos)
{
    if (a.type == CT_UNDEF)
        ct_fail_undefined(vm, a, pos);
    if (b.type == CT_UNDEF)
        ct_fail_undefined(vm, b, pos);
    if (is_num(a) && is_num(b)) {
        bool ints = is_intlike(a) && is_intlike(b);
        int64_t x = ints ? ival(a) : 0, y = ints ? ival(b) : 0, r;
        double fx = fval(a), fy = fval(b);
        switch (op) {
        case OP_ADD:
            if (!ints)
                return ct_float(fx + fy);
            if (__builtin_add_overflow(x, y, &r))
                overflow(vm, pos);
            return ct_int(r);
        case OP_SUB:
            if (!ints)
                return ct_float(fx - fy);
            if (__builtin_sub_overflow(x, y, &r))
                overflow(vm, pos);
            return ct_int(r);
        case OP_MUL:
            if (!ints)
                return ct_float(fx * fy);
            if (__builtin_mul_overflow(x, y, &r))
                overflow(vm, pos);
            return ct_int(r);
        case OP_DIV:
            if (fy == 0)
                ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos, "division by zero");
            return ct_float(fx / fy);
        case OP_FLOORDIV:
        case OP_MOD:
            if (ints) {
                if (y == 0)
                    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos, "integer division or modulo by zero");
                if (x == INT64_MIN && y == -1)
                    overflow(vm, pos);
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q -= 1;
                    m += y;
                }
                return ct_int(op == OP_MOD ? m : q);
            } else {
                if (fy == 0)
                    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos, "float division by zero");
                /* Python's float divmod */
                double m = fmod(fx, fy), div = (fx - m) / fy;
                if (m != 0) {
                    if ((fy < 0) != (m < 0)) {
                        m += fy;
                        div -= 1.0;
                    }
                } else {
                    m = copysign(0.0, fy);
                }
                if (op == OP_MOD)
                    return ct_float(m);
                double fd;
                if (div != 0) {
                    fd = floor(div);
                    if (div - fd > 0.5)
                        fd += 1.0;
                } else {
                    fd = copysign(0.0, fx / fy);
                }
                return ct_float(fd);
            }
        case OP_POW:
            if (ints && y >= 0) {
                int64_t acc = 1, base = x;
                int64_t e = y;
                while (e > 0) {
                    if (e & 1)
                        if (__builtin_mul_overflow(acc, base, &acc))
                            overflow(vm, pos);
                    e >>= 1;
                    if (e && __builtin_mul_overflow(base, base, &base))
                        overflow(vm, pos);
                }
                return ct_int(acc);
            }
            if (fx == 0 && fy < 0)
                ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                           "0.0 cannot be raised to a negative power");
            return ct_float(pow(fx, fy));
        }
    }
    if (op == OP_ADD && a.type == CT_STR && b.type == CT_STR) {
        if (a.n + b.n > vm->limits.max_output_bytes)
            ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "string exceeds the output limit");
        ct_charge(vm, (a.n + b.n) / 64, pos);
        char *s = ct_alloc(&vm->fail, a.n + b.n + 1);
        memcpy(s, a.u.s, a.n);
        memcpy(s + a.n, b.u.s, b.n);
        return ct_str(s, a.n + b.n);
    }
    if (op == OP_ADD && a.type == CT_LIST && b.type == CT_LIST && a.u.l->is_tuple == b.u.l->is_tuple) {
        struct ct_list *l = ct_list_new(vm, a.u.l->n + b.u.l->n);
        l->is_tuple = a.u.l->is_tuple;
        ct_charge(vm, a.u.l->n + b.u.l->n, pos);
        for (size_t i = 0; i < a.u.l->n; i++)
            l->v[l->n++] = a.u.l->v[i];
        for (size_t i = 0; i < b.u.l->n; i++)
            l->v[l->n++] = b.u.l->v[i];
        return (struct ct_val){.type = CT_LIST, .u.l = l};
    }
    if (op == OP_MUL) {
        if ((a.type == CT_STR || a.type == CT_LIST) && is_intlike(b))
            return repeat(vm, a, ival(b), pos);
        if ((b.type == CT_STR || b.type == CT_LIST) && is_intlike(a))
            return repeat(vm, b, ival(a), pos);
    }
    if (op == OP_MOD && a.type == CT_STR)
        ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "printf-style string formatting is not supported");
    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
               "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op), ct_type_name(a),
               ct_type_name(b));
}

/* ---- calls ------------------------------------------------------------- */

static void eval_args(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *x, struct ct_args *a)
{
    memset(a, 0, sizeof(*a));
    if (x->n_list) {
        a->pos = ct_alloc(&vm->fail, x->n_list * sizeof(*a->pos));
        for (size_t i = 0; i < x->n_list; i++)
            a->pos[i] = eval(vm, sc, x->list[i]);
        a->n_pos = x->n_list;
    }
    if (x->n_names) {
        a->kw = ct_alloc(&vm->fail, x->n_names * sizeof(*a->kw));
        for (size_t i = 0; i < x->n_names; i++)
            a->kw[i] = eval(vm, sc, x->list2[i]);
        a->names = x->names;
        a->name_lens = x->name_lens;
        a->n_kw = x->n_names;
    }
}

static struct ct_val call_macro_with(struct ct_vm *vm, struct ct_macro *m, struct ct_args *a,
                                     struct ct_val caller, size_t pos)
{
    const struct ct_node *def = m->def;
    const char *mname = def->kind == N_MACRO ? def->str : "caller";
    int mname_n = def->kind == N_MACRO ? (int)def->n : 6;
    if (vm->depth >= vm->limits.max_depth)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "macro calls nested deeper than %d", vm->limits.max_depth);
    if (++vm->iterations > vm->limits.max_loop_iterations)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "loop iterations and macro calls exceed %ld",
                   vm->limits.max_loop_iterations);
    bool va = def->kind == N_MACRO && (def->op & 1), kwa = def->kind == N_MACRO && (def->op & 2);
    if (a->n_pos > def->n_names && !va)
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                   "macro '%.*s' takes not more than %zu argument(s)", mname_n, mname, def->n_names);
    struct ct_scope *sc = scope_new(vm, m->closure);
    bool *given = ct_alloc(&vm->fail, (def->n_names + 1) * sizeof(*given));
    struct ct_list *extra = ct_list_new(vm, 0);
    extra->is_tuple = true;
    struct ct_dict *extra_kw = ct_dict_new(vm);
    for (size_t i = 0; i < a->n_pos; i++) {
        if (i >= def->n_names) {
            ct_list_push(vm, extra, a->pos[i]);
            continue;
        }
        scope_set(vm, sc, def->names[i], def->name_lens[i], a->pos[i]);
        given[i] = true;
    }
    for (size_t k = 0; k < a->n_kw; k++) {
        size_t i = 0;
        while (i < def->n_names &&
               !(def->name_lens[i] == a->name_lens[k] && memcmp(def->names[i], a->names[k], a->name_lens[k]) == 0))
            i++;
        if (i == def->n_names && kwa) {
            ct_dict_set(vm, extra_kw, ct_str(a->names[k], a->name_lens[k]), a->kw[k]);
            continue;
        }
        if (i == def->n_names)
            ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                       "macro '%.*s' takes no keyword argument '%.*s'", mname_n, mname,
                       (int)a->name_lens[k], a->names[k]);
        if (given[i])
            ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                       "macro '%.*s' got multiple values for argument '%.*s'", mname_n, mname,
                       (int)a->name_lens[k], a->names[k]);
        scope_set(vm, sc, def->names[i], def->name_lens[i], a->kw[k]);
        given[i] = true;
    }
    for (size_t i = 0; i < def->n_names; i++) {
        if (given[i])
            continue;
        struct ct_val v;
        if (i < def->n_list2 && def->list2[i])
            v = eval(vm, sc, def->list2[i]);
        else
            v = ct_undef(fmt_hint(vm, "parameter '%.*s' was not provided%.*s", def->names[i],
                                  def->name_lens[i], "", 0));
        scope_set(vm, sc, def->names[i], def->name_lens[i], v);
    }
    if (caller.type != CT_UNDEF)
        scope_set(vm, sc, "caller", 6, caller);
    if (va)
        scope_set(vm, sc, "varargs", 7, (struct ct_val){.type = CT_LIST, .u.l = extra});
    if (kwa)
        scope_set(vm, sc, "kwargs", 6, (struct ct_val){.type = CT_DICT, .u.d = extra_kw});
    struct ct_buf buf = ct_tmp_buf(vm);
    struct ct_buf *saved = vm->out;
    vm->out = &buf;
    vm->depth++;
    exec_body(vm, sc, def->list, def->n_list);
    vm->depth--;
    vm->out = saved;
    return ct_str(buf.p ? buf.p : "", buf.n);
}

struct ct_val ct_call_macro(struct ct_vm *vm, struct ct_macro *m, struct ct_args *a, size_t pos)
{
    return call_macro_with(vm, m, a, ct_undef(NULL), pos);
}

static struct ct_val call_value(struct ct_vm *vm, struct ct_val callee, struct ct_args *a,
                                struct ct_val caller, size_t pos)
{
    if (callee.type == CT_MACRO)
        return call_macro_with(vm, callee.u.m, a, caller, pos);
    if (callee.type == CT_FUNC)
        return ct_call_func(vm, callee.u.fn, a, pos);
    if (callee.type == CT_UNDEF)
        ct_fail_undefined(vm, callee, pos);
    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos, "'%s' object is not callable",
               ct_type_name(callee));
}

/* Applies a filter chain (N_FILTER nodes, innermost operand NULL) to v. */
static struct ct_val apply_chain(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *f,
                                 struct ct_val v)
{
    if (!f)
        return v;
    v = apply_chain(vm, sc, f->a, v);
    struct ct_args a;
    eval_args(vm, sc, f, &a);
    return ct_apply_filter(vm, f->id, f->str, f->n, v, &a, f->pos);
}

/* ---- expressions -------------------------------------------------------- */

static struct ct_val eval(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *x)
{
    ct_charge(vm, 1, x->pos);
    switch (x->kind) {
    case N_CONST:
        return x->val;
    case N_NAME:
        return lookup(vm, sc, x->str, x->n);
    case N_LIST:
    case N_TUPLE: {
        struct ct_list *l = ct_list_new(vm, x->n_list);
        l->is_tuple = x->kind == N_TUPLE;
        for (size_t i = 0; i < x->n_list; i++)
            l->v[l->n++] = eval(vm, sc, x->list[i]);
        return (struct ct_val){.type = CT_LIST, .u.l = l};
    }
    case N_DICT: {
        struct ct_dict *d = ct_dict_new(vm);
        for (size_t i = 0; i < x->n_list; i++) {
            struct ct_val k = eval(vm, sc, x->list[i]);
            if (k.type == CT_LIST && !k.u.l->is_tuple)
                ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, x->list[i]->pos, "unhashable type: 'list'");
            if (k.type == CT_DICT || k.type == CT_UNDEF)
                ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, x->list[i]->pos, "unhashable type: '%s'",
                           ct_type_name(k));
            ct_dict_set(vm, d, k, eval(vm, sc, x->list2[i]));
        }
        return (struct ct_val){.type = CT_DICT, .u.d = d};
    }
    case N_GETATTR: {
        struct ct_val o = eval(vm, sc, x->a);
        if (o.type == CT_UNDEF)
            ct_fail_undefined(vm, o, x->pos);
        return ct_getattr(vm, o, x->str, x->n, x->pos);
    }
    case N_GETITEM: {
        struct ct_val o = eval(vm, sc, x->a);
        struct ct_val k = eval(vm, sc, x->b);
        if (o.type == CT_UNDEF)
            ct_fail_undefined(vm, o, x->pos);
        return ct_getitem(vm, o, k, x->pos);
    }
    case N_SLICE: {
        struct ct_val o = eval(vm, sc, x->a);
        struct ct_val s[3];
        const struct ct_node *parts[3] = {x->b, x->c, x->d};
        for (int i = 0; i < 3; i++)
            s[i] = parts[i] ? eval(vm, sc, parts[i]) : ct_none();
        if (o.type == CT_UNDEF)
            ct_fail_undefined(vm, o, x->pos);
        return ct_slice(vm, o, s[0], s[1], s[2], x->pos);
    }
    case N_CALL: {
        struct ct_val callee = eval(vm, sc, x->a);
        struct ct_args a;
        eval_args(vm, sc, x, &a);
        return call_value(vm, callee, &a, ct_undef(NULL), x->pos);
    }
    case N_FILTER: {
        struct ct_val v = eval(vm, sc, x->a);
        struct ct_args a;
        eval_args(vm, sc, x, &a);
        return ct_apply_filter(vm, x->id, x->str, x->n, v, &a, x->pos);
    }
    case N_TEST: {
        struct ct_val v = eval(vm, sc, x->a);
        struct ct_args a;
        eval_args(vm, sc, x, &a);
        return ct_bool(ct_apply_test(vm, x->id, x->str, x->n, v, &a, x->pos));
    }
    case N_UNARY: {
        struct ct_val v = eval(vm, sc, x->a);
        if (x->op == OP_NOT)
            return ct_bool(!ct_truthy(v));
        if (v.type == CT_UNDEF)
            ct_fail_undefined(vm, v, x->pos);
        if (v.type == CT_FLOAT)
            return ct_float(x->op == OP_NEG ? -v.u.f : v.u.f);
        if (is_intlike(v)) {
            if (x->op == OP_NEG && ival(v) == INT64_MIN)
                overflow(vm, x->pos);
            return ct_int(x->op == OP_NEG ? -ival(v) : ival(v));
        }
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, x->pos, "bad operand type for unary %s: '%s'",
                   x->op == OP_NEG ? "-" : "+", ct_type_name(v));
    }
    case N_BINARY: {
        struct ct_val l = eval(vm, sc, x->a);
        if (x->op == OP_AND)
            return ct_truthy(l) ? eval(vm, sc, x->b) : l;
        if (x->op == OP_OR)
            return ct_truthy(l) ? l : eval(vm, sc, x->b);
        return arith(vm, x->op, l, eval(vm, sc, x->b), x->pos);
    }
    case N_CONCAT: {
        struct ct_buf b = ct_tmp_buf(vm);
        for (size_t i = 0; i < x->n_list; i++)
            ct_write_str(vm, &b, eval(vm, sc, x->list[i]));
        return ct_str(b.p ? b.p : "", b.n);
    }
    case N_COMPARE: {
        struct ct_val l = eval(vm, sc, x->a);
        for (size_t i = 0; i < x->n_list; i++) {
            struct ct_val r = eval(vm, sc, x->list[i]);
            bool ok;
            switch (x->ops[i]) {
            case OP_EQ: ok = ct_equal(l, r); break;
            case OP_NE: ok = !ct_equal(l, r); break;
            case OP_LT: ok = ct_compare(vm, l, r, x->pos) < 0; break;
            case OP_LTEQ: ok = ct_compare(vm, l, r, x->pos) <= 0; break;
            case OP_GT: ok = ct_compare(vm, l, r, x->pos) > 0; break;
            case OP_GTEQ: ok = ct_compare(vm, l, r, x->pos) >= 0; break;
            case OP_IN: ok = ct_contains(vm, r, l, x->pos); break;
            default: ok = !ct_contains(vm, r, l, x->pos); break;
            }
            if (!ok)
                return ct_bool(false);
            l = r;
        }
        return ct_bool(true);
    }
    case N_COND:
        if (ct_truthy(eval(vm, sc, x->a)))
            return eval(vm, sc, x->b);
        if (x->c)
            return eval(vm, sc, x->c);
        return ct_undef("the inline if-expression evaluated to false and no else section was defined");
    default:
        ct_fail_at(&vm->fail, PL_STATUS_INTERNAL, x->pos, "bad expression node %d", (int)x->kind);
    }
}

/* ---- statements ----------------------------------------------------------- */

static void assign(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *target, struct ct_val v)
{
    if (target->kind == N_NAME) {
        scope_set(vm, sc, target->str, target->n, v);
        return;
    }
    if (target->kind == N_NSREF) {
        struct ct_val ns = lookup(vm, sc, target->str, target->n);
        if (ns.type != CT_NS)
            ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, target->pos,
                       "cannot assign attribute on non-namespace object");
        ct_dict_set(vm, ns.u.d, ct_str(target->str2, target->n2), v);
        return;
    }
    /* tuple unpacking */
    struct ct_list *items = v.type == CT_UNDEF ? NULL : ct_iterate(vm, v, target->pos);
    size_t have = items ? items->n : 0;
    if (have != target->n_list)
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, target->pos,
                   have > target->n_list ? "too many values to unpack (expected %zu)"
                                         : "not enough values to unpack (expected %zu)",
                   target->n_list);
    for (size_t i = 0; i < have; i++)
        assign(vm, sc, target->list[i], items->v[i]);
}

static enum ctl exec_for(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *x)
{
    struct ct_val seq = eval(vm, sc, x->b);
    struct ct_list *items = ct_iterate(vm, seq, x->b->pos);
    struct ct_scope *it = scope_new(vm, sc);
    if (items && x->c) {
        struct ct_list *kept = ct_list_new(vm, items->n);
        for (size_t i = 0; i < items->n; i++) {
            it->vars.n = 0;
            assign(vm, it, x->a, items->v[i]);
            if (ct_truthy(eval(vm, it, x->c)))
                kept->v[kept->n++] = items->v[i];
        }
        items = kept;
    }
    if (!items || !items->n)
        return exec_body(vm, sc, x->list2, x->n_list2);
    struct ct_loop *loop = ct_alloc(&vm->fail, sizeof(*loop));
    loop->items = items;
    struct ct_val lv = {.type = CT_LOOP, .u.loop = loop};
    for (size_t i = 0; i < items->n; i++) {
        if (++vm->iterations > vm->limits.max_loop_iterations)
            ct_fail_at(&vm->fail, PL_STATUS_LIMIT, x->pos, "loop iterations and macro calls exceed %ld",
                       vm->limits.max_loop_iterations);
        loop->index0 = i;
        /* a fresh scope per iteration: variables set in the body start over */
        it->vars.n = 0;
        assign(vm, it, x->a, items->v[i]);
        scope_set(vm, it, "loop", 4, lv);
        if (exec_body(vm, it, x->list, x->n_list) == CTL_BREAK)
            break;
    }
    return CTL_NONE;
}

static struct ct_val capture(struct ct_vm *vm, struct ct_scope *sc, struct ct_node *const *body, size_t n)
{
    struct ct_buf buf = ct_tmp_buf(vm);
    struct ct_buf *saved = vm->out;
    vm->out = &buf;
    exec_body(vm, sc, body, n);
    vm->out = saved;
    return ct_str(buf.p ? buf.p : "", buf.n);
}

static enum ctl exec_node(struct ct_vm *vm, struct ct_scope *sc, const struct ct_node *x)
{
    switch (x->kind) {
    case N_DATA:
        ct_buf_put(&vm->fail, vm->out, x->str, x->n, x->pos);
        return CTL_NONE;
    case N_PRINT:
        ct_write_str(vm, vm->out, eval(vm, sc, x->a));
        return CTL_NONE;
    case N_FOR:
        return exec_for(vm, sc, x);
    case N_IF:
        if (ct_truthy(eval(vm, sc, x->a)))
            return exec_body(vm, sc, x->list, x->n_list);
        return exec_body(vm, sc, x->list2, x->n_list2);
    case N_SET:
        assign(vm, sc, x->a, eval(vm, sc, x->b));
        return CTL_NONE;
    case N_SETBLOCK:
        assign(vm, sc, x->a, apply_chain(vm, sc, x->c, capture(vm, sc, x->list, x->n_list)));
        return CTL_NONE;
    case N_MACRO: {
        struct ct_macro *m = ct_alloc(&vm->fail, sizeof(*m));
        m->def = x;
        m->closure = sc;
        scope_set(vm, sc, x->str, x->n, (struct ct_val){.type = CT_MACRO, .u.m = m});
        return CTL_NONE;
    }
    case N_CALLBLOCK: {
        struct ct_macro *m = ct_alloc(&vm->fail, sizeof(*m));
        m->def = x;
        m->closure = sc;
        struct ct_val caller = {.type = CT_MACRO, .u.m = m};
        struct ct_val callee = eval(vm, sc, x->a->a);
        struct ct_args a;
        eval_args(vm, sc, x->a, &a);
        ct_write_str(vm, vm->out, call_value(vm, callee, &a, caller, x->a->pos));
        return CTL_NONE;
    }
    case N_FILTERBLOCK:
        ct_write_str(vm, vm->out, apply_chain(vm, sc, x->c, capture(vm, sc, x->list, x->n_list)));
        return CTL_NONE;
    case N_BREAK:
        return CTL_BREAK;
    case N_CONTINUE:
        return CTL_CONTINUE;
    case N_SCOPE: {
        if (x->op == 1)
            return exec_body(vm, sc, x->list, x->n_list);
        struct ct_scope *inner = scope_new(vm, sc);
        for (size_t i = 0; i < x->n_names; i++)
            scope_set(vm, inner, x->names[i], x->name_lens[i], eval(vm, sc, x->list2[i]));
        return exec_body(vm, inner, x->list, x->n_list);
    }
    default:
        ct_fail_at(&vm->fail, PL_STATUS_INTERNAL, x->pos, "bad statement node %d", (int)x->kind);
    }
}

static enum ctl exec_body(struct ct_vm *vm, struct ct_scope *sc, struct ct_node *const *body, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        enum ctl c = exec_node(vm, sc, body[i]);
        if (c != CTL_NONE)
            return c;
    }
    return CTL_NONE;
}

/* Runs the template; called by pl_chat_template_render under its setjmp. */
void ct_render_run(struct ct_vm *vm, const json_t *context);
void ct_render_run(struct ct_vm *vm, const json_t *context)
{
    vm->globals = scope_new(vm, NULL);
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)context, k, v)
        scope_set(vm, vm->globals, k, strlen(k), ct_from_json(vm, v, 0));
    struct ct_scope *root = scope_new(vm, vm->globals);
    exec_body(vm, root, vm->t->body, vm->t->n_body);
}
