/*
 * ct_vm.h -- render-time state of the chat template interpreter.
 *
 * Owns: struct ct_vm (one render), scopes, macros, builtin callables and loop
 * objects. Everything here lives in the render arena (vm->fail.arena).
 * Budgets: vm->iterations counts loop iterations and macro calls against
 * limits.max_loop_iterations (the contract's bound); vm->work counts elementary
 * steps (expression evaluations, elements touched by filters, string bytes / 64)
 * against a budget of CT_WORK_PER_ITERATION x that bound, so no template can
 * run for long even without loops.
 */
#ifndef PL_CT_VM_H
#define PL_CT_VM_H

#include "tokenizer/chat_template/ct_internal.h"

#define CT_WORK_PER_ITERATION 100

struct ct_scope {
    struct ct_scope *parent;
    struct ct_dict vars;
};

struct ct_macro {
    const struct ct_node *def;   /* N_MACRO, or N_CALLBLOCK for a caller */
    struct ct_scope *closure;    /* scope the macro was defined in */
    struct ct_val caller;        /* for call blocks: the caller macro passed to the callee */
};

enum ct_func_id {
    FN_RANGE, FN_NAMESPACE, FN_DICT, FN_RAISE, FN_STRFTIME, FN_LOOP_CYCLE, FN_METHOD
};

struct ct_func {
    enum ct_func_id id;
    struct ct_val self;   /* bound object (methods, loop.cycle) */
    const char *name;     /* method name */
    size_t n;
};

struct ct_loop {
    struct ct_list *items;
    size_t index0;
};

struct ct_vm {
    struct ct_fail fail;
    struct ct_arena arena;
    const struct pl_chat_template *t;
    struct pl_chat_template_limits limits;
    long iterations;
    uint64_t work, work_max;
    int depth;
    struct ct_buf *out;       /* where output goes now (main output or a capture) */
    struct ct_scope *globals; /* the context object's variables */
};

/* ---- value.c ---- */
struct ct_val ct_undef(const char *hint);
struct ct_val ct_str(const char *s, size_t n);
struct ct_val ct_cstr(const char *s);
struct ct_val ct_int(int64_t i);
struct ct_val ct_float(double f);
struct ct_val ct_bool(bool b);
struct ct_val ct_none(void);
struct ct_list *ct_list_new(struct ct_vm *vm, size_t cap);
void ct_list_push(struct ct_vm *vm, struct ct_list *l, struct ct_val v);
struct ct_dict *ct_dict_new(struct ct_vm *vm);
struct ct_val *ct_dict_get(struct ct_dict *d, struct ct_val key);
struct ct_val *ct_dict_getn(struct ct_dict *d, const char *key, size_t n);
void ct_dict_set(struct ct_vm *vm, struct ct_dict *d, struct ct_val key, struct ct_val v);
struct ct_val ct_from_json(struct ct_vm *vm, const json_t *j, int depth);
bool ct_truthy(struct ct_val v);
bool ct_equal(struct ct_val a, struct ct_val b);
/* -1/0/1; fails (TypeError) for unorderable operands */
int ct_compare(struct ct_vm *vm, struct ct_val a, struct ct_val b, size_t pos);
const char *ct_type_name(struct ct_val v);
/* str(v) and repr(v) appended to b */
void ct_write_str(struct ct_vm *vm, struct ct_buf *b, struct ct_val v);
void ct_write_repr(struct ct_vm *vm, struct ct_buf *b, struct ct_val v);
struct ct_val ct_to_str(struct ct_vm *vm, struct ct_val v); /* str(v) as a value */
void ct_write_float(struct ct_vm *vm, struct ct_buf *b, double f);
/* Python json.dumps(v, ensure_ascii=False, indent, separators, sort_keys) */
void ct_write_json(struct ct_vm *vm, struct ct_buf *b, struct ct_val v, const char *indent,
                   size_t indent_n, const char *item_sep, const char *key_sep, bool sort_keys,
                   int level, size_t pos);
void ct_charge(struct ct_vm *vm, uint64_t units, size_t pos);
struct ct_buf ct_tmp_buf(struct ct_vm *vm);

/* ---- filters.c ---- */
struct ct_args {
    struct ct_val *pos;
    size_t n_pos;
    const char **names;
    size_t *name_lens;
    struct ct_val *kw;
    size_t n_kw;
};
struct ct_val ct_apply_filter(struct ct_vm *vm, int id, const char *name, size_t name_n,
                              struct ct_val v, struct ct_args *a, size_t pos);
bool ct_apply_test(struct ct_vm *vm, int id, const char *name, size_t name_n, struct ct_val v,
                   struct ct_args *a, size_t pos);
/* getattr(obj, name) jinja2-style: methods, then items / namespace attributes */
struct ct_val ct_getattr(struct ct_vm *vm, struct ct_val obj, const char *name, size_t n, size_t pos);
/* obj[key] jinja2-style: items first, then attributes for string keys */
struct ct_val ct_getitem(struct ct_vm *vm, struct ct_val obj, struct ct_val key, size_t pos);
struct ct_val ct_call_func(struct ct_vm *vm, struct ct_func *fn, struct ct_args *a, size_t pos);
/* list(v) for iteration: NULL for undefined, fails for non-iterables */
struct ct_list *ct_iterate(struct ct_vm *vm, struct ct_val v, size_t pos);
struct ct_val ct_slice(struct ct_vm *vm, struct ct_val obj, struct ct_val start, struct ct_val stop,
                       struct ct_val step, size_t pos);
bool ct_contains(struct ct_vm *vm, struct ct_val container, struct ct_val item, size_t pos);

/* ---- interp.c ---- */
struct ct_val ct_call_macro(struct ct_vm *vm, struct ct_macro *m, struct ct_args *a, size_t pos);
/* Fails with a TypeError-like message on an undefined value used as an object. */
_Noreturn void ct_fail_undefined(struct ct_vm *vm, struct ct_val u, size_t pos);

#endif
