/*
 * value.c -- runtime values of the chat template interpreter, with Python's semantics.
 *
 * Owns: value constructors, lists and insertion-ordered dicts, conversion from
 * jansson, truth, equality (1 == 1.0 == True; [1] != (1,)), ordering, str() and
 * repr() as Python prints them (True, None, 1.0, 1e-05, {'a': [1, 2]}), and
 * json.dumps as transformers' tojson filter calls it (ensure_ascii=False).
 * Invariants: every string value is valid UTF-8 (context strings are checked on
 * entry, template literals at parse); containers live in the render arena.
 */
#include "tokenizer/chat_template/ct_vm.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

struct ct_val ct_undef(const char *hint)
{
    struct ct_val v = {.type = CT_UNDEF};
    v.u.s = hint;
    v.n = hint ? strlen(hint) : 0;
    return v;
}
struct ct_val ct_str(const char *s, size_t n)
{
    struct ct_val v = {.type = CT_STR};
    v.u.s = s;
    v.n = n;
    return v;
}
struct ct_val ct_cstr(const char *s) { return ct_str(s, strlen(s)); }
struct ct_val ct_int(int64_t i)
{
    struct ct_val v = {.type = CT_INT};
    v.u.i = i;
    return v;
}
struct ct_val ct_float(double f)
{
    struct ct_val v = {.type = CT_FLOAT};
    v.u.f = f;
    return v;
}
struct ct_val ct_bool(bool b)
{
    struct ct_val v = {.type = CT_BOOL};
    v.u.b = b;
    return v;
}
struct ct_val ct_none(void) { return (struct ct_val){.type = CT_NONE}; }

void ct_charge(struct ct_vm *vm, uint64_t units, size_t pos)
{
    vm->work += units;
    if (vm->work > vm->work_max)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos,
                   "template exceeded its work budget (%" PRIu64 " steps)", vm->work_max);
}

struct ct_buf ct_tmp_buf(struct ct_vm *vm)
{
    return (struct ct_buf){.limit = vm->limits.max_output_bytes};
}

struct ct_list *ct_list_new(struct ct_vm *vm, size_t cap)
{
    struct ct_list *l = ct_alloc(&vm->fail, sizeof(*l));
    if (cap) {
        if (cap > SIZE_MAX / sizeof(struct ct_val))
            ct_fail_at(&vm->fail, PL_STATUS_LIMIT, CT_NO_POS, "list too large");
        l->v = ct_alloc(&vm->fail, cap * sizeof(*l->v));
        l->cap = cap;
    }
    return l;
}

void ct_list_push(struct ct_vm *vm, struct ct_list *l, struct ct_val v)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        struct ct_val *nv = ct_alloc(&vm->fail, cap * sizeof(*nv));
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof(*nv));
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

struct ct_dict *ct_dict_new(struct ct_vm *vm) { return ct_alloc(&vm->fail, sizeof(struct ct_dict)); }

struct ct_val *ct_dict_getn(struct ct_dict *d, const char *key, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].type == CT_STR && d->k[i].n == n && memcmp(d->k[i].u.s, key, n) == 0)
            return &d->v[i];
    return NULL;
}

struct ct_val *ct_dict_get(struct ct_dict *d, struct ct_val key)
{
    if (key.type == CT_STR)
        return ct_dict_getn(d, key.u.s, key.n);
    for (size_t i = 0; i < d->n; i++)
        if (ct_equal(d->k[i], key))
            return &d->v[i];
    return NULL;
}

void ct_dict_set(struct ct_vm *vm, struct ct_dict *d, struct ct_val key, struct ct_val v)
{
    struct ct_val *slot = ct_dict_get(d, key);
    if (slot) {
        *slot = v;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        struct ct_val *nk = ct_alloc(&vm->fail, cap * sizeof(*nk));
        struct ct_val *nv = ct_alloc(&vm->fail, cap * sizeof(*nv));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(*nk));
            memcpy(nv, d->v, d->n * sizeof(*nv));
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = v;
}

static struct ct_val checked_str(struct ct_vm *vm, const char *s, size_t n)
{
    if (!ct_utf8_valid(s, n))
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, CT_NO_POS, "context string is not valid UTF-8");
    return ct_str(s, n);
}

struct ct_val ct_from_json(struct ct_vm *vm, const json_t *j, int depth)
{
    if (depth > 512)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, CT_NO_POS, "context nested too deeply");
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        struct ct_dict *d = ct_dict_new(vm);
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v) {
            ct_charge(vm, 1, CT_NO_POS);
            ct_dict_set(vm, d, checked_str(vm, k, strlen(k)), ct_from_json(vm, v, depth + 1));
        }
        return (struct ct_val){.type = CT_DICT, .u.d = d};
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        struct ct_list *l = ct_list_new(vm, n);
        for (size_t i = 0; i < n; i++) {
            ct_charge(vm, 1, CT_NO_POS);
            l->v[l->n++] = ct_from_json(vm, json_array_get(j, i), depth + 1);
        }
        return (struct ct_val){.type = CT_LIST, .u.l = l};
    }
    case JSON_STRING:
        return checked_str(vm, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return ct_int(json_integer_value(j));
    case JSON_REAL:
        return ct_float(json_real_value(j));
    case JSON_TRUE:
        return ct_bool(true);
    case JSON_FALSE:
        return ct_bool(false);
    case JSON_NULL:
    default:
        return ct_none();
    }
}

bool ct_truthy(struct ct_val v)
{
    switch (v.type) {
    case CT_UNDEF:
    case CT_NONE: return false;
    case CT_BOOL: return v.u.b;
    case CT_INT: return v.u.i != 0;
    case CT_FLOAT: return v.u.f != 0.0;
    case CT_STR: return v.n != 0;
    case CT_LIST: return v.u.l->is_gen || v.u.l->n != 0;
    case CT_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

static bool is_num(struct ct_val v) { return v.type == CT_BOOL || v.type == CT_INT || v.type == CT_FLOAT; }
static double num(struct ct_val v)
{
    return v.type == CT_FLOAT ? v.u.f : v.type == CT_INT ? (double)v.u.i : (double)v.u.b;
}

bool ct_equal(struct ct_val a, struct ct_val b)
{
    if (is_num(a) && is_num(b)) {
        if (a.type != CT_FLOAT && b.type != CT_FLOAT) {
            int64_t x = a.type == CT_INT ? a.u.i : a.u.b, y = b.type == CT_INT ? b.u.i : b.u.b;
            return x == y;
        }
        return num(a) == num(b);
    }
    if (a.type != b.type)
        return false;
    switch (a.type) {
    case CT_UNDEF:
    case CT_NONE: return true;
    case CT_STR: return a.n == b.n && memcmp(a.u.s, b.u.s, a.n) == 0;
    case CT_LIST:
        if (a.u.l->is_tuple != b.u.l->is_tuple || a.u.l->n != b.u.l->n)
            return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!ct_equal(a.u.l->v[i], b.u.l->v[i]))
                return false;
        return true;
    case CT_DICT:
        if (a.u.d->n != b.u.d->n)
            return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            struct ct_val *o = ct_dict_get(b.u.d, a.u.d->k[i]);
            if (!o || !ct_equal(a.u.d->v[i], *o))
                return false;
        }
        return true;
    case CT_NS: return a.u.d == b.u.d;
    case CT_MACRO: return a.u.m == b.u.m;
    case CT_FUNC: return a.u.fn == b.u.fn;
    case CT_LOOP: return a.u.loop == b.u.loop;
    default: return false;
    }
}

const char *ct_type_name(struct ct_val v)
{
    switch (v.type) {
    case CT_UNDEF: return "Undefined";
    case CT_NONE: return "NoneType";
    case CT_BOOL: return "bool";
    case CT_INT: return "int";
    case CT_FLOAT: return "float";
    case CT_STR: return "str";
    case CT_LIST: return v.u.l->is_tuple ? "tuple" : "list";
    case CT_DICT: return "dict";
    case CT_NS: return "Namespace";
    case CT_MACRO: return "Macro";
    case CT_FUNC: return "function";
    case CT_LOOP: return "LoopContext";
    }
    return "object";
}

int ct_compare(struct ct_vm *vm, struct ct_val a, struct ct_val b, size_t pos)
{
    if (is_num(a) && is_num(b)) {
        if (a.type != CT_FLOAT && b.type != CT_FLOAT) {
            int64_t x = a.type == CT_INT ? a.u.i : a.u.b, y = b.type == CT_INT ? b.u.i : b.u.b;
            return x < y ? -1 : x > y;
        }
        double x = num(a), y = num(b);
        return x < y ? -1 : x > y;
    }
    if (a.type == CT_STR && b.type == CT_STR) {
        size_t n = a.n < b.n ? a.n : b.n;
        int c = n ? memcmp(a.u.s, b.u.s, n) : 0;
        if (c)
            return c < 0 ? -1 : 1;
        return a.n < b.n ? -1 : a.n > b.n;
    }
    if (a.type == CT_LIST && b.type == CT_LIST && a.u.l->is_tuple == b.u.l->is_tuple) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (ct_equal(a.u.l->v[i], b.u.l->v[i]))
                continue;
            return ct_compare(vm, a.u.l->v[i], b.u.l->v[i], pos);
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
               "'<' not supported between instances of '%s' and '%s'", ct_type_name(a),
               ct_type_name(b));
}

/* ---- str / repr ------------------------------------------------------------ */

static void put(struct ct_vm *vm, struct ct_buf *b, const char *s, size_t n)
{
    ct_buf_put(&vm->fail, b, s, n, CT_NO_POS);
}
static void puts_(struct ct_vm *vm, struct ct_buf *b, const char *s) { put(vm, b, s, strlen(s)); }

/* Python float repr: shortest round-trip digits; exponent form below 1e-4 and from 1e16. */
void ct_write_float(struct ct_vm *vm, struct ct_buf *b, double f)
{
    if (isnan(f)) {
        puts_(vm, b, "nan");
        return;
    }
    if (isinf(f)) {
        puts_(vm, b, f < 0 ? "-inf" : "inf");
        return;
    }
    if (f == 0) {
        puts_(vm, b, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    char tmp[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof(tmp), "%.*e", p - 1, f);
        if (strtod(tmp, NULL) == f)
            break;
    }
    /* tmp: [-]d[.ddd]e[+-]XX */
    char digits[24] = {0};
    size_t nd = 0;
    const char *s = tmp;
    bool neg = *s == '-';
    if (neg)
        s++;
    for (; *s && *s != 'e'; s++)
        if (*s != '.')
            digits[nd++] = *s;
    int e = atoi(s + 1);
    char out[64];
    size_t k = 0;
    if (neg)
        out[k++] = '-';
    if (e >= -5 + 1 && e < 16) {
        if (e >= 0) {
            for (int i = 0; i <= e; i++)
                out[k++] = (size_t)i < nd ? digits[i] : '0';
            out[k++] = '.';
            if ((size_t)e + 1 < nd) {
                for (size_t i = (size_t)e + 1; i < nd; i++)
                    out[k++] = digits[i];
            } else {
                out[k++] = '0';
            }
        } else {
            out[k++] = '0';
            out[k++] = '.';
            for (int i = 0; i < -e - 1; i++)
                out[k++] = '0';
            for (size_t i = 0; i < nd; i++)
                out[k++] = digits[i];
        }
    } else {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            for (size_t i = 1; i < nd; i++)
                out[k++] = digits[i];
        }
        k += (size_t)snprintf(out + k, sizeof(out) - k, "e%c%02d", e < 0 ? '-' : '+', abs(e));
    }
    put(vm, b, out, k);
}

static bool py_printable(uint32_t cp)
{
    if (cp == ' ')
        return true;
    if (cp < 0x20 || cp == 0x7F)
        return false;
    if (cp < 0x7F)
        return true;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return !(c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF || c == UTF8PROC_CATEGORY_CS ||
             c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CN || c == UTF8PROC_CATEGORY_ZL ||
             c == UTF8PROC_CATEGORY_ZP || c == UTF8PROC_CATEGORY_ZS);
}

static void write_str_repr(struct ct_vm *vm, struct ct_buf *b, const char *s, size_t n)
{
    bool has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    ct_charge(vm, n / 64, CT_NO_POS);
    ct_buf_putc(&vm->fail, b, q);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = ct_utf8_dec(s, n, i, &cp);
        char tmp[16];
        if (cp == (uint32_t)q || cp == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)cp;
            put(vm, b, tmp, 2);
        } else if (cp == '\n') {
            puts_(vm, b, "\\n");
        } else if (cp == '\r') {
            puts_(vm, b, "\\r");
        } else if (cp == '\t') {
            puts_(vm, b, "\\t");
        } else if (py_printable(cp)) {
            put(vm, b, s + i, (size_t)len);
        } else if (cp < 0x100) {
            snprintf(tmp, sizeof(tmp), "\\x%02x", cp);
            puts_(vm, b, tmp);
        } else if (cp < 0x10000) {
            snprintf(tmp, sizeof(tmp), "\\u%04x", cp);
            puts_(vm, b, tmp);
        } else {
            snprintf(tmp, sizeof(tmp), "\\U%08x", cp);
            puts_(vm, b, tmp);
        }
        i += (size_t)len;
    }
    ct_buf_putc(&vm->fail, b, q);
}

static void write_container(struct ct_vm *vm, struct ct_buf *b, struct ct_val v, int depth)
{
    if (depth > 256)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, CT_NO_POS, "value nested too deeply to print");
    if (v.type == CT_LIST && v.u.l->is_gen) {
        puts_(vm, b, "<generator object>");
        return;
    }
    if (v.type == CT_LIST && v.u.l->view) {
        struct ct_list plain = *v.u.l;
        plain.view = NULL;
        puts_(vm, b, v.u.l->view);
        ct_buf_putc(&vm->fail, b, '(');
        write_container(vm, b, (struct ct_val){.type = CT_LIST, .u.l = &plain}, depth + 1);
        ct_buf_putc(&vm->fail, b, ')');
        return;
    }
    if (v.type == CT_LIST) {
        struct ct_list *l = v.u.l;
        ct_buf_putc(&vm->fail, b, l->is_tuple ? '(' : '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                puts_(vm, b, ", ");
            ct_charge(vm, 1, CT_NO_POS);
            if (l->v[i].type == CT_LIST || l->v[i].type == CT_DICT)
                write_container(vm, b, l->v[i], depth + 1);
            else
                ct_write_repr(vm, b, l->v[i]);
        }
        if (l->is_tuple && l->n == 1)
            ct_buf_putc(&vm->fail, b, ',');
        ct_buf_putc(&vm->fail, b, l->is_tuple ? ')' : ']');
        return;
    }
    struct ct_dict *d = v.u.d;
    ct_buf_putc(&vm->fail, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i)
            puts_(vm, b, ", ");
        ct_charge(vm, 1, CT_NO_POS);
        ct_write_repr(vm, b, d->k[i]);
        puts_(vm, b, ": ");
        if (d->v[i].type == CT_LIST || d->v[i].type == CT_DICT)
            write_container(vm, b, d->v[i], depth + 1);
        else
            ct_write_repr(vm, b, d->v[i]);
    }
    ct_buf_putc(&vm->fail, b, '}');
}

static void write_misc(struct ct_vm *vm, struct ct_buf *b, struct ct_val v)
{
    char tmp[64];
    switch (v.type) {
    case CT_NONE: puts_(vm, b, "None"); break;
    case CT_BOOL: puts_(vm, b, v.u.b ? "True" : "False"); break;
    case CT_INT:
        snprintf(tmp, sizeof(tmp), "%" PRId64, v.u.i);
        puts_(vm, b, tmp);
        break;
    case CT_FLOAT: ct_write_float(vm, b, v.u.f); break;
    case CT_NS: {
        puts_(vm, b, "<Namespace ");
        struct ct_val d = {.type = CT_DICT, .u.d = v.u.d};
        write_container(vm, b, d, 0);
        puts_(vm, b, ">");
        break;
    }
    case CT_MACRO:
        puts_(vm, b, "<Macro '");
        if (v.u.m->def->kind == N_MACRO)
            put(vm, b, v.u.m->def->str, v.u.m->def->n);
        else
            puts_(vm, b, "caller");
        puts_(vm, b, "'>");
        break;
    case CT_FUNC: puts_(vm, b, "<built-in function>"); break;
    case CT_LOOP:
        snprintf(tmp, sizeof(tmp), "<LoopContext %zu/%zu>", v.u.loop->index0 + 1, v.u.loop->items->n);
        puts_(vm, b, tmp);
        break;
    default: break;
    }
}

void ct_write_str(struct ct_vm *vm, struct ct_buf *b, struct ct_val v)
{
    if (v.type == CT_UNDEF)
        return;
    if (v.type == CT_STR)
        put(vm, b, v.u.s, v.n);
    else if (v.type == CT_LIST || v.type == CT_DICT)
        write_container(vm, b, v, 0);
    else
        write_misc(vm, b, v);
}

void ct_write_repr(struct ct_vm *vm, struct ct_buf *b, struct ct_val v)
{
    if (v.type == CT_UNDEF)
        puts_(vm, b, "Undefined");
    else if (v.type == CT_STR)
        write_str_repr(vm, b, v.u.s, v.n);
    else
        ct_write_str(vm, b, v);
}

struct ct_val ct_to_str(struct ct_vm *vm, struct ct_val v)
{
    if (v.type == CT_STR)
        return v;
    if (v.type == CT_UNDEF)
        return ct_str("", 0);
    struct ct_buf b = ct_tmp_buf(vm);
    ct_write_str(vm, &b, v);
    return ct_str(b.p ? b.p : "", b.n);
}

/* ---- json.dumps ------------------------------------------------------------- */

static void write_json_str(struct ct_vm *vm, struct ct_buf *b, const char *s, size_t n)
{
    ct_charge(vm, n / 64, CT_NO_POS);
    ct_buf_putc(&vm->fail, b, '"');
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(vm, b, s + run, i - run);
        run = i + 1;
        char tmp[8];
        switch (c) {
        case '"': puts_(vm, b, "\\\""); break;
        case '\\': puts_(vm, b, "\\\\"); break;
        case '\n': puts_(vm, b, "\\n"); break;
        case '\r': puts_(vm, b, "\\r"); break;
        case '\t': puts_(vm, b, "\\t"); break;
        case '\b': puts_(vm, b, "\\b"); break;
        case '\f': puts_(vm, b, "\\f"); break;
        default:
            snprintf(tmp, sizeof(tmp), "\\u%04x", c);
            puts_(vm, b, tmp);
        }
    }
    put(vm, b, s + run, n - run);
    ct_buf_putc(&vm->fail, b, '"');
}

static void json_float(struct ct_vm *vm, struct ct_buf *b, double f)
{
    if (isnan(f))
        puts_(vm, b, "NaN");
    else if (isinf(f))
        puts_(vm, b, f < 0 ? "-Infinity" : "Infinity");
    else
        ct_write_float(vm, b, f);
}

static void json_newline(struct ct_vm *vm, struct ct_buf *b, const char *indent, size_t indent_n,
                         int level)
{
    ct_buf_putc(&vm->fail, b, '\n');
    for (int i = 0; i < level; i++)
        put(vm, b, indent, indent_n);
}

/* dict keys as json.dumps coerces them (str, int, float, bool, None) */
static struct ct_val json_key(struct ct_vm *vm, struct ct_val k, size_t pos)
{
    switch (k.type) {
    case CT_STR: return k;
    case CT_BOOL: return ct_cstr(k.u.b ? "true" : "false");
    case CT_NONE: return ct_cstr("null");
    case CT_INT:
    case CT_FLOAT: {
        struct ct_buf t = ct_tmp_buf(vm);
        if (k.type == CT_FLOAT)
            json_float(vm, &t, k.u.f);
        else
            ct_write_str(vm, &t, k);
        return ct_str(t.p, t.n);
    }
    default:
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                   "tojson: keys must be str, int, float, bool or None, not %s", ct_type_name(k));
    }
}

static int key_cmp(const void *a, const void *b)
{
    const struct ct_val *x = a, *y = b;
    size_t n = x[0].n < y[0].n ? x[0].n : y[0].n;
    int c = n ? memcmp(x[0].u.s, y[0].u.s, n) : 0;
    if (c)
        return c;
    return x[0].n < y[0].n ? -1 : x[0].n > y[0].n;
}

void ct_write_json(struct ct_vm *vm, struct ct_buf *b, struct ct_val v, const char *indent,
                   size_t indent_n, const char *item_sep, const char *key_sep, bool sort_keys,
                   int level, size_t pos)
{
    if (level > 256)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "tojson: value nested too deeply");
    ct_charge(vm, 1, pos);
    switch (v.type) {
    case CT_NONE: puts_(vm, b, "null"); return;
    case CT_BOOL: puts_(vm, b, v.u.b ? "true" : "false"); return;
    case CT_INT: ct_write_str(vm, b, v); return;
    case CT_FLOAT: json_float(vm, b, v.u.f); return;
    case CT_STR: write_json_str(vm, b, v.u.s, v.n); return;
    case CT_LIST: {
        struct ct_list *l = v.u.l;
        if (l->view || l->is_gen)
            ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                       "tojson: Object of type %s is not JSON serializable", l->view ? l->view : "generator");
        if (!l->n) {
            puts_(vm, b, "[]");
            return;
        }
        ct_buf_putc(&vm->fail, b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i)
                puts_(vm, b, item_sep);
            if (indent)
                json_newline(vm, b, indent, indent_n, level + 1);
            ct_write_json(vm, b, l->v[i], indent, indent_n, item_sep, key_sep, sort_keys, level + 1, pos);
        }
        if (indent)
            json_newline(vm, b, indent, indent_n, level);
        ct_buf_putc(&vm->fail, b, ']');
        return;
    }
    case CT_DICT: {
        struct ct_dict *d = v.u.d;
        if (!d->n) {
            puts_(vm, b, "{}");
            return;
        }
        /* pairs (key as json string, value) in output order */
        struct ct_val *pairs = ct_alloc(&vm->fail, 2 * d->n * sizeof(*pairs));
        for (size_t i = 0; i < d->n; i++) {
            pairs[2 * i] = json_key(vm, d->k[i], pos);
            pairs[2 * i + 1] = d->v[i];
        }
        if (sort_keys) {
            for (size_t i = 0; i < d->n; i++)
                if (d->k[i].type != CT_STR)
                    ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                               "tojson: sort_keys needs string keys");
            qsort(pairs, d->n, 2 * sizeof(*pairs), key_cmp);
        }
        ct_buf_putc(&vm->fail, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i)
                puts_(vm, b, item_sep);
            if (indent)
                json_newline(vm, b, indent, indent_n, level + 1);
            write_json_str(vm, b, pairs[2 * i].u.s, pairs[2 * i].n);
            puts_(vm, b, key_sep);
            ct_write_json(vm, b, pairs[2 * i + 1], indent, indent_n, item_sep, key_sep, sort_keys,
                          level + 1, pos);
        }
        if (indent)
            json_newline(vm, b, indent, indent_n, level);
        ct_buf_putc(&vm->fail, b, '}');
        return;
    }
    default:
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos,
                   "tojson: Object of type %s is not JSON serializable", ct_type_name(v));
    }
}
