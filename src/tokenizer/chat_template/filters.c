/*
 * filters.c -- jinja2 filters and tests, Python string/dict methods, the global
 * functions (range, namespace, dict, raise_exception, strftime_now) and
 * jinja2's attribute / item lookup rules, for the chat template interpreter.
 *
 * Owns: the filter and test tables (ids resolved at parse time; an unknown
 * name fails when evaluated, as jinja2 does inside conditional blocks).
 * Semantics follow jinja2 3.1 in transformers' ImmutableSandboxedEnvironment:
 *   - obj.name tries Python attributes (methods) first, then obj['name'];
 *     obj['k'] tries the item first, then the attribute; misses are undefined;
 *   - mutating methods (list.append, dict.update, ...) are refused as the
 *     sandbox refuses them; range() is capped at 100000 items;
 *   - map / select / reject / selectattr / rejectattr / unique / reverse /
 *     items return Python iterators: marked is_gen here, they are always true
 *     and have no len(), as in Python;
 *   - tojson is transformers' json.dumps(x, ensure_ascii=False, indent=None,
 *     separators=None, sort_keys=False): no HTML escaping, key order kept.
 * Strings are indexed, sliced and measured in code points as Python does.
 */
#include "tokenizer/chat_template/ct_vm.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

#define FAIL(vm, pos, ...) ct_fail_at(&(vm)->fail, PL_STATUS_INVALID_ARGUMENT, pos, __VA_ARGS__)

static bool name_is(const char *name, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(name, lit, n) == 0;
}

/* ---- tables ------------------------------------------------------------- */

enum {
    F_ABS, F_ATTR, F_CAPITALIZE, F_COUNT, F_DEFAULT, F_DICTSORT, F_ESCAPE, F_FIRST, F_FLOAT,
    F_INDENT, F_INT, F_ITEMS, F_JOIN, F_LAST, F_LENGTH, F_LIST, F_LOWER, F_MAP, F_MAX, F_MIN,
    F_REJECT, F_REJECTATTR, F_REPLACE, F_REVERSE, F_ROUND, F_SAFE, F_SELECT, F_SELECTATTR,
    F_SORT, F_STRING, F_SUM, F_TITLE, F_TOJSON, F_TRIM, F_UNIQUE, F_UPPER, F_WORDCOUNT,
    F_TRUNCATE, F_CENTER
};

static const struct {
    const char *name;
    int id;
} FILTERS[] = {
    {"abs", F_ABS}, {"attr", F_ATTR}, {"capitalize", F_CAPITALIZE}, {"count", F_COUNT},
    {"d", F_DEFAULT}, {"default", F_DEFAULT}, {"dictsort", F_DICTSORT}, {"e", F_ESCAPE},
    {"escape", F_ESCAPE}, {"first", F_FIRST}, {"float", F_FLOAT}, {"indent", F_INDENT},
    {"int", F_INT}, {"items", F_ITEMS}, {"join", F_JOIN}, {"last", F_LAST}, {"length", F_LENGTH},
    {"list", F_LIST}, {"lower", F_LOWER}, {"map", F_MAP}, {"max", F_MAX}, {"min", F_MIN},
    {"reject", F_REJECT}, {"rejectattr", F_REJECTATTR}, {"replace", F_REPLACE},
    {"reverse", F_REVERSE}, {"round", F_ROUND}, {"safe", F_SAFE}, {"select", F_SELECT},
    {"selectattr", F_SELECTATTR}, {"sort", F_SORT}, {"string", F_STRING}, {"sum", F_SUM},
    {"title", F_TITLE}, {"tojson", F_TOJSON}, {"trim", F_TRIM}, {"unique", F_UNIQUE},
    {"upper", F_UPPER}, {"wordcount", F_WORDCOUNT}, {"truncate", F_TRUNCATE}, {"center", F_CENTER},
};

enum {
    T_BOOLEAN, T_CALLABLE, T_DEFINED, T_DIVISIBLEBY, T_EQ, T_ESCAPED, T_EVEN, T_FALSE, T_FILTER,
    T_FLOAT, T_GE, T_GT, T_IN, T_INTEGER, T_ITERABLE, T_LE, T_LOWER, T_LT, T_MAPPING, T_NE,
    T_NONE, T_NUMBER, T_ODD, T_SAMEAS, T_SEQUENCE, T_STRING, T_TEST, T_TRUE, T_UNDEFINED, T_UPPER
};

static const struct {
    const char *name;
    int id;
} TESTS[] = {
    {"boolean", T_BOOLEAN}, {"callable", T_CALLABLE}, {"defined", T_DEFINED},
    {"divisibleby", T_DIVISIBLEBY}, {"eq", T_EQ}, {"equalto", T_EQ}, {"==", T_EQ},
    {"escaped", T_ESCAPED}, {"even", T_EVEN}, {"false", T_FALSE}, {"filter", T_FILTER},
    {"float", T_FLOAT}, {"ge", T_GE}, {">=", T_GE}, {"gt", T_GT}, {"greaterthan", T_GT},
    {">", T_GT}, {"in", T_IN}, {"integer", T_INTEGER}, {"iterable", T_ITERABLE}, {"le", T_LE},
    {"<=", T_LE}, {"lower", T_LOWER}, {"lt", T_LT}, {"lessthan", T_LT}, {"<", T_LT},
    {"mapping", T_MAPPING}, {"ne", T_NE}, {"!=", T_NE}, {"none", T_NONE}, {"number", T_NUMBER},
    {"odd", T_ODD}, {"sameas", T_SAMEAS}, {"sequence", T_SEQUENCE}, {"string", T_STRING},
    {"test", T_TEST}, {"true", T_TRUE}, {"undefined", T_UNDEFINED}, {"upper", T_UPPER},
};

int ct_filter_id(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(FILTERS) / sizeof(FILTERS[0]); i++)
        if (name_is(name, n, FILTERS[i].name))
            return FILTERS[i].id;
    return -1;
}

int ct_test_id(const char *name, size_t n)
{
    for (size_t i = 0; i < sizeof(TESTS) / sizeof(TESTS[0]); i++)
        if (name_is(name, n, TESTS[i].name))
            return TESTS[i].id;
    return -1;
}

/* ---- argument binding ------------------------------------------------------ */

/* Binds a->pos / a->kw to the parameter names (NULL-terminated), Python style.
 * out[i].type == CT_UNDEF with u.s == NULL marks "not given". */
static void bind(struct ct_vm *vm, struct ct_args *a, const char *fname, const char *const *params,
                 struct ct_val *out, size_t pos)
{
    size_t np = 0;
    while (params[np])
        np++;
    for (size_t i = 0; i < np; i++)
        out[i] = ct_undef(NULL);
    if (a->n_pos > np)
        FAIL(vm, pos, "%s() takes at most %zu argument(s) (%zu given)", fname, np, a->n_pos);
    for (size_t i = 0; i < a->n_pos; i++)
        out[i] = a->pos[i];
    for (size_t k = 0; k < a->n_kw; k++) {
        size_t i = 0;
        while (i < np && !name_is(a->names[k], a->name_lens[k], params[i]))
            i++;
        if (i == np)
            FAIL(vm, pos, "%s() got an unexpected keyword argument '%.*s'", fname,
                 (int)a->name_lens[k], a->names[k]);
        if (i < a->n_pos)
            FAIL(vm, pos, "%s() got multiple values for argument '%s'", fname, params[i]);
        out[i] = a->kw[k];
    }
}

static bool given(struct ct_val v) { return !(v.type == CT_UNDEF && v.u.s == NULL); }

static struct ct_val list_val(struct ct_list *l) { return (struct ct_val){.type = CT_LIST, .u.l = l}; }

static bool is_intlike(struct ct_val v) { return v.type == CT_INT || v.type == CT_BOOL; }
static int64_t ival(struct ct_val v) { return v.type == CT_INT ? v.u.i : v.u.b; }

static int64_t want_int(struct ct_vm *vm, struct ct_val v, const char *what, size_t pos)
{
    if (!is_intlike(v))
        FAIL(vm, pos, "%s must be an integer, not %s", what, ct_type_name(v));
    return ival(v);
}

static struct ct_val want_str(struct ct_vm *vm, struct ct_val v, const char *what, size_t pos)
{
    if (v.type != CT_STR)
        FAIL(vm, pos, "%s must be a string, not %s", what, ct_type_name(v));
    return v;
}

/* ---- code point helpers ---------------------------------------------------- */

/* Byte offsets of each code point of s, plus n at the end (arena). */
static size_t *cp_offsets(struct ct_vm *vm, const char *s, size_t n, size_t *count)
{
    size_t c = ct_utf8_count(s, n);
    size_t *off = ct_alloc(&vm->fail, (c + 1) * sizeof(*off));
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            off[k++] = i;
    off[k] = n;
    *count = c;
    return off;
}

typedef uint32_t (*cp_map)(uint32_t);
static uint32_t cp_lower(uint32_t c) { return (uint32_t)utf8proc_tolower((utf8proc_int32_t)c); }
static uint32_t cp_upper(uint32_t c) { return (uint32_t)utf8proc_toupper((utf8proc_int32_t)c); }
static uint32_t cp_title(uint32_t c) { return (uint32_t)utf8proc_totitle((utf8proc_int32_t)c); }

static bool cp_cased(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT;
}

/* Python's full case mappings where one code point becomes several
 * (SpecialCasing.txt, unconditional entries for the common Latin letters and
 * ligatures); everything else uses the simple mapping. */
static const char *special_case(uint32_t cp, cp_map f)
{
    static const struct {
        uint32_t cp;
        const char *upper, *title, *lower;
    } SC[] = {
        {0x00DF, "SS", "Ss", NULL},       {0x0130, NULL, NULL, "i\xCC\x87"},
        {0x0149, "\xCA\xBCN", "\xCA\xBCN", NULL}, {0x01F0, "J\xCC\x8C", "J\xCC\x8C", NULL},
        {0xFB00, "FF", "Ff", NULL},       {0xFB01, "FI", "Fi", NULL},
        {0xFB02, "FL", "Fl", NULL},       {0xFB03, "FFI", "Ffi", NULL},
        {0xFB04, "FFL", "Ffl", NULL},     {0xFB05, "ST", "St", NULL},
        {0xFB06, "ST", "St", NULL},
    };
    for (size_t i = 0; i < sizeof(SC) / sizeof(SC[0]); i++)
        if (SC[i].cp == cp)
            return f == cp_upper ? SC[i].upper : f == cp_title ? SC[i].title : SC[i].lower;
    return NULL;
}

static void put_mapped(struct ct_vm *vm, struct ct_buf *b, uint32_t cp, cp_map f)
{
    const char *sp = special_case(cp, f);
    if (sp) {
        ct_buf_put(&vm->fail, b, sp, strlen(sp), CT_NO_POS);
        return;
    }
    char tmp[4];
    ct_buf_put(&vm->fail, b, tmp, (size_t)ct_utf8_enc(f(cp), tmp), CT_NO_POS);
}

static struct ct_val map_str(struct ct_vm *vm, struct ct_val s, cp_map f)
{
    struct ct_buf b = ct_tmp_buf(vm);
    ct_charge(vm, s.n / 64, CT_NO_POS);
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
        put_mapped(vm, &b, cp, f);
        i += (size_t)len;
    }
    return ct_str(b.p ? b.p : "", b.n);
}

/* Python str.title() (mode 0) and str.capitalize() (mode 1). */
static struct ct_val title_str(struct ct_vm *vm, struct ct_val s, int mode)
{
    struct ct_buf b = ct_tmp_buf(vm);
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s.n;) {
        uint32_t cp;
        int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
        cp_map f = mode == 0 ? (prev_cased ? cp_lower : cp_title) : (first ? cp_title : cp_lower);
        /* Python decides "previous is cased" on the original character */
        prev_cased = cp_cased(cp) || cp == 0xDF;
        first = false;
        put_mapped(vm, &b, cp, f);
        i += (size_t)len;
    }
    return ct_str(b.p ? b.p : "", b.n);
}

static bool in_set(uint32_t cp, struct ct_val chars)
{
    if (chars.type != CT_STR)
        return ct_py_isspace(cp);
    for (size_t i = 0; i < chars.n;) {
        uint32_t c;
        i += (size_t)ct_utf8_dec(chars.u.s, chars.n, i, &c);
        if (c == cp)
            return true;
    }
    return false;
}

/* str.strip / lstrip / rstrip; chars: CT_STR set or anything else for whitespace */
static struct ct_val strip_str(struct ct_val s, struct ct_val chars, bool left, bool right)
{
    size_t a = 0, b = s.n;
    if (left) {
        while (a < b) {
            uint32_t cp;
            int len = ct_utf8_dec(s.u.s, s.n, a, &cp);
            if (!in_set(cp, chars))
                break;
            a += (size_t)len;
        }
    }
    if (right) {
        while (b > a) {
            size_t i = b - 1;
            while (i > a && ((unsigned char)s.u.s[i] & 0xC0) == 0x80)
                i--;
            uint32_t cp;
            ct_utf8_dec(s.u.s, s.n, i, &cp);
            if (!in_set(cp, chars))
                break;
            b = i;
        }
    }
    return ct_str(s.u.s + a, b - a);
}

static const char *find_sub(const char *h, size_t hn, const char *nd, size_t nn)
{
    if (nn == 0)
        return h;
    if (nn > hn)
        return NULL;
    return memmem(h, hn, nd, nn);
}

static struct ct_val replace_str(struct ct_vm *vm, struct ct_val s, struct ct_val old, struct ct_val new_,
                                 int64_t count, size_t pos)
{
    struct ct_buf b = ct_tmp_buf(vm);
    ct_charge(vm, s.n / 64 + 1, pos);
    if (old.n == 0) {
        /* Python inserts `new` before every code point and at the end */
        size_t i = 0;
        int64_t done = 0;
        while (count < 0 || done < count) {
            ct_buf_put(&vm->fail, &b, new_.u.s, new_.n, pos);
            done++;
            if (i >= s.n)
                break;
            uint32_t cp;
            int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
            ct_buf_put(&vm->fail, &b, s.u.s + i, (size_t)len, pos);
            i += (size_t)len;
        }
        ct_buf_put(&vm->fail, &b, s.u.s + i, s.n - i, pos);
        return ct_str(b.p ? b.p : "", b.n);
    }
    size_t i = 0;
    int64_t done = 0;
    while (count < 0 || done < count) {
        const char *hit = find_sub(s.u.s + i, s.n - i, old.u.s, old.n);
        if (!hit)
            break;
        size_t at = (size_t)(hit - s.u.s);
        ct_buf_put(&vm->fail, &b, s.u.s + i, at - i, pos);
        ct_buf_put(&vm->fail, &b, new_.u.s, new_.n, pos);
        i = at + old.n;
        done++;
    }
    ct_buf_put(&vm->fail, &b, s.u.s + i, s.n - i, pos);
    return ct_str(b.p ? b.p : "", b.n);
}

/* Python str.split(sep, maxsplit) */
static struct ct_val split_str(struct ct_vm *vm, struct ct_val s, struct ct_val sep, int64_t maxsplit,
                               size_t pos)
{
    struct ct_list *l = ct_list_new(vm, 0);
    ct_charge(vm, s.n / 64 + 1, pos);
    if (sep.type == CT_STR) {
        if (sep.n == 0)
            FAIL(vm, pos, "empty separator");
        size_t i = 0;
        int64_t done = 0;
        for (;;) {
            const char *hit = (maxsplit < 0 || done < maxsplit) ? find_sub(s.u.s + i, s.n - i, sep.u.s, sep.n) : NULL;
            if (!hit) {
                ct_list_push(vm, l, ct_str(s.u.s + i, s.n - i));
                break;
            }
            size_t at = (size_t)(hit - s.u.s);
            ct_list_push(vm, l, ct_str(s.u.s + i, at - i));
            i = at + sep.n;
            done++;
        }
        return list_val(l);
    }
    size_t i = 0;
    int64_t done = 0;
    for (;;) {
        while (i < s.n) {
            uint32_t cp;
            int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
            if (!ct_py_isspace(cp))
                break;
            i += (size_t)len;
        }
        if (i >= s.n)
            break;
        if (maxsplit >= 0 && done >= maxsplit) {
            ct_list_push(vm, l, ct_str(s.u.s + i, s.n - i));
            break;
        }
        size_t start = i;
        while (i < s.n) {
            uint32_t cp;
            int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
            if (ct_py_isspace(cp))
                break;
            i += (size_t)len;
        }
        ct_list_push(vm, l, ct_str(s.u.s + start, i - start));
        done++;
    }
    return list_val(l);
}

static struct ct_list *splitlines(struct ct_vm *vm, struct ct_val s, bool keepends)
{
    struct ct_list *l = ct_list_new(vm, 0);
    size_t start = 0, i = 0;
    while (i < s.n) {
        uint32_t cp;
        int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
        if (ct_py_islinebreak(cp)) {
            size_t end = i + (size_t)len;
            if (cp == '\r' && end < s.n && s.u.s[end] == '\n')
                end++;
            ct_list_push(vm, l, ct_str(s.u.s + start, (keepends ? end : i) - start));
            start = i = end;
        } else {
            i += (size_t)len;
        }
    }
    if (start < s.n)
        ct_list_push(vm, l, ct_str(s.u.s + start, s.n - start));
    return l;
}

/* ---- iteration, membership, slicing, lookup --------------------------------- */

struct ct_list *ct_iterate(struct ct_vm *vm, struct ct_val v, size_t pos)
{
    switch (v.type) {
    case CT_UNDEF: return NULL;
    case CT_LIST: return v.u.l;
    case CT_DICT: {
        struct ct_list *l = ct_list_new(vm, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++)
            l->v[l->n++] = v.u.d->k[i];
        return l;
    }
    case CT_STR: {
        size_t c;
        size_t *off = cp_offsets(vm, v.u.s, v.n, &c);
        struct ct_list *l = ct_list_new(vm, c);
        for (size_t i = 0; i < c; i++)
            l->v[l->n++] = ct_str(v.u.s + off[i], off[i + 1] - off[i]);
        return l;
    }
    case CT_LOOP: return v.u.loop->items;
    default: FAIL(vm, pos, "'%s' object is not iterable", ct_type_name(v));
    }
}

bool ct_contains(struct ct_vm *vm, struct ct_val c, struct ct_val item, size_t pos)
{
    switch (c.type) {
    case CT_STR:
        if (item.type != CT_STR)
            FAIL(vm, pos, "'in <string>' requires string as left operand, not %s", ct_type_name(item));
        ct_charge(vm, c.n / 64, pos);
        return find_sub(c.u.s, c.n, item.u.s, item.n) != NULL;
    case CT_LIST:
        ct_charge(vm, c.u.l->n, pos);
        for (size_t i = 0; i < c.u.l->n; i++)
            if (ct_equal(c.u.l->v[i], item))
                return true;
        return false;
    case CT_DICT:
        ct_charge(vm, c.u.d->n, pos);
        return ct_dict_get(c.u.d, item) != NULL;
    case CT_UNDEF: return false;
    default: FAIL(vm, pos, "argument of type '%s' is not iterable", ct_type_name(c));
    }
}

static int64_t slice_bound(struct ct_vm *vm, struct ct_val v, int64_t len, int64_t dflt, int64_t lo,
                           int64_t hi, size_t pos)
{
    if (v.type == CT_NONE)
        return dflt;
    int64_t x = want_int(vm, v, "slice index", pos);
    if (x < 0) {
        x += len;
        if (x < lo)
            x = lo;
    } else if (x > hi) {
        x = hi;
    }
    return x;
}

struct ct_val ct_slice(struct ct_vm *vm, struct ct_val obj, struct ct_val start, struct ct_val stop,
                       struct ct_val step, size_t pos)
{
    if (obj.type != CT_LIST && obj.type != CT_STR)
        FAIL(vm, pos, "'%s' object is not subscriptable", ct_type_name(obj));
    if (obj.type == CT_LIST && (obj.u.l->is_gen || obj.u.l->view))
        FAIL(vm, pos, "'%s' object is not subscriptable", obj.u.l->view ? obj.u.l->view : "generator");
    size_t *off = NULL, count;
    if (obj.type == CT_STR)
        off = cp_offsets(vm, obj.u.s, obj.n, &count);
    else
        count = obj.u.l->n;
    int64_t len = (int64_t)count;
    int64_t st = step.type == CT_NONE ? 1 : want_int(vm, step, "slice step", pos);
    if (st == 0)
        FAIL(vm, pos, "slice step cannot be zero");
    int64_t lo = st > 0 ? 0 : -1, hi = st > 0 ? len : len - 1;
    int64_t a = slice_bound(vm, start, len, st > 0 ? lo : hi, lo, hi, pos);
    int64_t b = slice_bound(vm, stop, len, st > 0 ? hi : lo, lo, hi, pos);
    ct_charge(vm, (uint64_t)len / 8 + 1, pos);
    if (obj.type == CT_LIST) {
        struct ct_list *l = ct_list_new(vm, 0);
        l->is_tuple = obj.u.l->is_tuple;
        for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
            ct_list_push(vm, l, obj.u.l->v[i]);
        return list_val(l);
    }
    if (st == 1) {
        if (b <= a)
            return ct_str("", 0);
        return ct_str(obj.u.s + off[a], off[b] - off[a]);
    }
    struct ct_buf buf = ct_tmp_buf(vm);
    for (int64_t i = a; st > 0 ? i < b : i > b; i += st)
        ct_buf_put(&vm->fail, &buf, obj.u.s + off[i], off[i + 1] - off[i], pos);
    return ct_str(buf.p ? buf.p : "", buf.n);
}

static const char *const STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "count", "join", "splitlines", "isdigit",
    "isalpha", "isalnum", "isspace", "islower", "isupper", "index", "swapcase", NULL};
static const char *const DICT_METHODS[] = {"get", "items", "keys", "values", "copy", NULL};
static const char *const LIST_METHODS[] = {"count", "index", "copy", NULL};
static const char *const LIST_UNSAFE[] = {"append", "extend", "insert", "pop", "remove", "reverse",
                                          "sort", "clear", NULL};
static const char *const DICT_UNSAFE[] = {"pop", "popitem", "setdefault", "update", "clear", NULL};

static bool in_names(const char *const *names, const char *s, size_t n)
{
    for (; *names; names++)
        if (name_is(s, n, *names))
            return true;
    return false;
}

static char *hint2(struct ct_vm *vm, const char *fmt, const char *a, size_t an)
{
    size_t cap = strlen(fmt) + (an > 200 ? 200 : an) + 32;
    char *s = ct_alloc(&vm->fail, cap);
    snprintf(s, cap, fmt, (int)(an > 200 ? 200 : an), a);
    return s;
}

/* jinja2's object_type_repr for messages */
static const char *obj_desc(struct ct_val v)
{
    switch (v.type) {
    case CT_NONE: return "None";
    case CT_DICT: return "'dict object'";
    case CT_LIST: return v.u.l->is_tuple ? "'tuple object'" : "'list object'";
    case CT_STR: return "'str object'";
    case CT_INT: return "'int object'";
    case CT_FLOAT: return "'float object'";
    case CT_BOOL: return "'bool object'";
    case CT_NS: return "'jinja2.utils.Namespace object'";
    case CT_LOOP: return "'jinja2.runtime.LoopContext object'";
    default: return "'object'";
    }
}

static struct ct_val no_attr(struct ct_vm *vm, struct ct_val obj, const char *name, size_t n)
{
    char fmt[96];
    snprintf(fmt, sizeof(fmt), "%s has no attribute '%%.*s'", obj_desc(obj));
    return ct_undef(hint2(vm, fmt, name, n));
}

static struct ct_val bound(struct ct_vm *vm, enum ct_func_id id, struct ct_val self, const char *name, size_t n)
{
    struct ct_func *fn = ct_alloc(&vm->fail, sizeof(*fn));
    fn->id = id;
    fn->self = self;
    fn->name = name;
    fn->n = n;
    return (struct ct_val){.type = CT_FUNC, .u.fn = fn};
}

static struct ct_val loop_attr(struct ct_vm *vm, struct ct_val lv, const char *name, size_t n)
{
    struct ct_loop *lp = lv.u.loop;
    int64_t len = (int64_t)lp->items->n, i = (int64_t)lp->index0;
    if (name_is(name, n, "index")) return ct_int(i + 1);
    if (name_is(name, n, "index0")) return ct_int(i);
    if (name_is(name, n, "revindex")) return ct_int(len - i);
    if (name_is(name, n, "revindex0")) return ct_int(len - i - 1);
    if (name_is(name, n, "first")) return ct_bool(i == 0);
    if (name_is(name, n, "last")) return ct_bool(i == len - 1);
    if (name_is(name, n, "length")) return ct_int(len);
    if (name_is(name, n, "depth")) return ct_int(1);
    if (name_is(name, n, "depth0")) return ct_int(0);
    if (name_is(name, n, "previtem"))
        return i > 0 ? lp->items->v[i - 1] : ct_undef("there is no previous item");
    if (name_is(name, n, "nextitem"))
        return i + 1 < len ? lp->items->v[i + 1] : ct_undef("there is no next item");
    if (name_is(name, n, "cycle"))
        return bound(vm, FN_LOOP_CYCLE, lv, name, n);
    return no_attr(vm, lv, name, n);
}

struct ct_val ct_getattr(struct ct_vm *vm, struct ct_val obj, const char *name, size_t n, size_t pos)
{
    switch (obj.type) {
    case CT_DICT: {
        if (in_names(DICT_METHODS, name, n))
            return bound(vm, FN_METHOD, obj, name, n);
        if (in_names(DICT_UNSAFE, name, n))
            return ct_undef(hint2(vm, "access to attribute '%.*s' of 'dict' object is unsafe.", name, n));
        struct ct_val *v = ct_dict_getn(obj.u.d, name, n);
        return v ? *v : no_attr(vm, obj, name, n);
    }
    case CT_NS: {
        struct ct_val *v = ct_dict_getn(obj.u.d, name, n);
        return v ? *v : no_attr(vm, obj, name, n);
    }
    case CT_LOOP: return loop_attr(vm, obj, name, n);
    case CT_STR:
        if (in_names(STR_METHODS, name, n))
            return bound(vm, FN_METHOD, obj, name, n);
        return no_attr(vm, obj, name, n);
    case CT_LIST:
        if (in_names(LIST_METHODS, name, n))
            return bound(vm, FN_METHOD, obj, name, n);
        if (in_names(LIST_UNSAFE, name, n))
            return ct_undef(hint2(vm, "access to attribute '%.*s' of 'list' object is unsafe.", name, n));
        return no_attr(vm, obj, name, n);
    default:
        return no_attr(vm, obj, name, n);
    }
}

struct ct_val ct_getitem(struct ct_vm *vm, struct ct_val obj, struct ct_val key, size_t pos)
{
    if (obj.type == CT_DICT) {
        struct ct_val *v = ct_dict_get(obj.u.d, key);
        if (v)
            return *v;
    } else if ((obj.type == CT_LIST || obj.type == CT_STR) && is_intlike(key)) {
        if (obj.type == CT_LIST && (obj.u.l->is_gen || obj.u.l->view))
            FAIL(vm, pos, "'%s' object is not subscriptable", obj.u.l->view ? obj.u.l->view : "generator");
        int64_t i = ival(key);
        if (obj.type == CT_LIST) {
            int64_t len = (int64_t)obj.u.l->n;
            if (i < 0)
                i += len;
            if (i >= 0 && i < len)
                return obj.u.l->v[i];
        } else {
            size_t count;
            size_t *off = cp_offsets(vm, obj.u.s, obj.n, &count);
            int64_t len = (int64_t)count;
            if (i < 0)
                i += len;
            if (i >= 0 && i < len)
                return ct_str(obj.u.s + off[i], off[i + 1] - off[i]);
        }
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "%lld", (long long)ival(key));
        char fmt[96];
        snprintf(fmt, sizeof(fmt), "%s has no element %%.*s", obj_desc(obj));
        return ct_undef(hint2(vm, fmt, tmp, strlen(tmp)));
    }
    if (key.type == CT_STR && obj.type != CT_DICT)
        return ct_getattr(vm, obj, key.u.s, key.n, pos);
    if (key.type == CT_STR) {
        struct ct_val m = ct_getattr(vm, obj, key.u.s, key.n, pos);
        if (m.type == CT_FUNC)
            return m;
        return no_attr(vm, obj, key.u.s, key.n);
    }
    struct ct_buf b = ct_tmp_buf(vm);
    ct_write_repr(vm, &b, key);
    char fmt[96];
    snprintf(fmt, sizeof(fmt), "%s has no element %%.*s", obj_desc(obj));
    return ct_undef(hint2(vm, fmt, b.p ? b.p : "", b.n));
}

/* make_attrgetter: "a.b.0" path (or an int) into item */
static struct ct_val attr_path(struct ct_vm *vm, struct ct_val item, struct ct_val attr, size_t pos)
{
    if (attr.type != CT_STR)
        return item.type == CT_UNDEF ? (ct_fail_undefined(vm, item, pos), item)
                                     : ct_getitem(vm, item, attr, pos);
    size_t i = 0;
    for (;;) {
        size_t j = i;
        while (j < attr.n && attr.u.s[j] != '.')
            j++;
        struct ct_val key = ct_str(attr.u.s + i, j - i);
        bool digits = j > i;
        for (size_t k = i; k < j; k++)
            digits = digits && isdigit((unsigned char)attr.u.s[k]);
        if (digits)
            key = ct_int(strtoll(attr.u.s + i, NULL, 10));
        if (item.type == CT_UNDEF)
            ct_fail_undefined(vm, item, pos);
        item = ct_getitem(vm, item, key, pos);
        if (j >= attr.n)
            return item;
        i = j + 1;
    }
}

/* ---- globals and methods ----------------------------------------------------- */

static struct ct_val do_range(struct ct_vm *vm, struct ct_args *a, size_t pos)
{
    if (a->n_kw)
        FAIL(vm, pos, "range() takes no keyword arguments");
    if (a->n_pos < 1 || a->n_pos > 3)
        FAIL(vm, pos, "range expected 1 to 3 arguments, got %zu", a->n_pos);
    int64_t start = 0, stop, step = 1;
    if (a->n_pos == 1) {
        stop = want_int(vm, a->pos[0], "range() argument", pos);
    } else {
        start = want_int(vm, a->pos[0], "range() argument", pos);
        stop = want_int(vm, a->pos[1], "range() argument", pos);
        if (a->n_pos == 3)
            step = want_int(vm, a->pos[2], "range() argument", pos);
    }
    if (step == 0)
        FAIL(vm, pos, "range() arg 3 must not be zero");
    /* item count, computed without overflow */
    double span = step > 0 ? (double)stop - (double)start : (double)start - (double)stop;
    double cnt = span <= 0 ? 0 : ceil(span / fabs((double)step));
    if (cnt > 100000)
        ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos,
                   "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
    struct ct_list *l = ct_list_new(vm, (size_t)cnt);
    ct_charge(vm, (uint64_t)cnt, pos);
    for (int64_t k = 0; k < (int64_t)cnt; k++)
        l->v[l->n++] = ct_int(start + k * step);
    return list_val(l);
}

static void fill_dict(struct ct_vm *vm, struct ct_dict *d, struct ct_args *a, const char *fname, size_t pos)
{
    if (a->n_pos > 1)
        FAIL(vm, pos, "%s() expected at most 1 positional argument", fname);
    if (a->n_pos == 1) {
        struct ct_val src = a->pos[0];
        if (src.type != CT_DICT && src.type != CT_NS)
            FAIL(vm, pos, "%s() argument must be a mapping, not %s", fname, ct_type_name(src));
        for (size_t i = 0; i < src.u.d->n; i++)
            ct_dict_set(vm, d, src.u.d->k[i], src.u.d->v[i]);
    }
    for (size_t k = 0; k < a->n_kw; k++)
        ct_dict_set(vm, d, ct_str(a->names[k], a->name_lens[k]), a->kw[k]);
}

static struct ct_val strftime_now(struct ct_vm *vm, struct ct_args *a, size_t pos)
{
    static const char *const P[] = {"format", NULL};
    struct ct_val v[1];
    bind(vm, a, "strftime_now", P, v, pos);
    struct ct_val fmt = want_str(vm, v[0], "strftime_now format", pos);
    char *f = ct_strdup(&vm->fail, fmt.u.s, fmt.n);
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    for (size_t cap = 256; cap <= 65536; cap *= 4) {
        char *out = ct_alloc(&vm->fail, cap);
        size_t n = strftime(out, cap, f, &tm);
        if (n > 0 || fmt.n == 0)
            return ct_str(out, n);
    }
    return ct_str("", 0);
}

static struct ct_val str_method(struct ct_vm *vm, struct ct_val s, const char *m, size_t mn,
                                struct ct_args *a, size_t pos)
{
    struct ct_val v[3];
    if (name_is(m, mn, "strip") || name_is(m, mn, "lstrip") || name_is(m, mn, "rstrip")) {
        static const char *const P[] = {"chars", NULL};
        bind(vm, a, "strip", P, v, pos);
        if (given(v[0]) && v[0].type != CT_NONE)
            want_str(vm, v[0], "strip arg", pos);
        return strip_str(s, v[0], m[0] != 'r', m[0] != 'l');
    }
    if (name_is(m, mn, "split") || name_is(m, mn, "rsplit")) {
        static const char *const P[] = {"sep", "maxsplit", NULL};
        bind(vm, a, "split", P, v, pos);
        if (given(v[0]) && v[0].type != CT_NONE)
            want_str(vm, v[0], "separator", pos);
        int64_t maxsplit = given(v[1]) ? want_int(vm, v[1], "maxsplit", pos) : -1;
        if (m[0] == 'r' && maxsplit >= 0) {
            /* rsplit with a limit: split fully, then rejoin the leading part */
            struct ct_val all = split_str(vm, s, v[0], -1, pos);
            struct ct_list *l = all.u.l;
            if ((int64_t)l->n <= maxsplit + 1)
                return all;
            if (v[0].type != CT_STR)
                ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "rsplit(None, maxsplit) is not supported");
            size_t keep = l->n - (size_t)maxsplit;
            struct ct_val last_head = l->v[keep - 1];
            size_t head_len = (size_t)(last_head.u.s + last_head.n - s.u.s);
            struct ct_list *r = ct_list_new(vm, (size_t)maxsplit + 1);
            r->v[r->n++] = ct_str(s.u.s, head_len);
            for (size_t i = keep; i < l->n; i++)
                r->v[r->n++] = l->v[i];
            return list_val(r);
        }
        return split_str(vm, s, v[0], maxsplit, pos);
    }
    if (name_is(m, mn, "startswith") || name_is(m, mn, "endswith")) {
        static const char *const P[] = {"prefix", NULL};
        bind(vm, a, m, P, v, pos);
        bool ends = m[0] == 'e';
        struct ct_val p = v[0];
        size_t np = 1;
        struct ct_val *items = &p;
        if (p.type == CT_LIST && p.u.l->is_tuple) {
            items = p.u.l->v;
            np = p.u.l->n;
        }
        for (size_t i = 0; i < np; i++) {
            struct ct_val x = want_str(vm, items[i], "startswith/endswith argument", pos);
            if (x.n <= s.n && memcmp(ends ? s.u.s + s.n - x.n : s.u.s, x.u.s, x.n) == 0)
                return ct_bool(true);
        }
        return ct_bool(false);
    }
    if (name_is(m, mn, "upper") || name_is(m, mn, "lower") || name_is(m, mn, "title") ||
        name_is(m, mn, "capitalize") || name_is(m, mn, "splitlines") || name_is(m, mn, "swapcase") ||
        (mn > 2 && m[0] == 'i' && m[1] == 's')) {
        if (name_is(m, mn, "splitlines")) {
            static const char *const P[] = {"keepends", NULL};
            bind(vm, a, "splitlines", P, v, pos);
            return list_val(splitlines(vm, s, ct_truthy(v[0])));
        }
        if (a->n_pos || a->n_kw)
            FAIL(vm, pos, "%.*s() takes no arguments", (int)mn, m);
        if (name_is(m, mn, "upper")) return map_str(vm, s, cp_upper);
        if (name_is(m, mn, "lower")) return map_str(vm, s, cp_lower);
        if (name_is(m, mn, "title")) return title_str(vm, s, 0);
        if (name_is(m, mn, "capitalize")) return title_str(vm, s, 1);
        if (name_is(m, mn, "swapcase"))
            ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "str.swapcase is not supported");
        /* is* predicates */
        bool any = false, all = true, any_cased = false, all_lower = true, all_upper = true;
        for (size_t i = 0; i < s.n;) {
            uint32_t cp;
            i += (size_t)ct_utf8_dec(s.u.s, s.n, i, &cp);
            utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
            bool alpha = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
            bool digit = c == UTF8PROC_CATEGORY_ND;
            bool ok = name_is(m, mn, "isdigit")   ? digit
                      : name_is(m, mn, "isalpha") ? alpha
                      : name_is(m, mn, "isalnum") ? alpha || digit ||
                                                        c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO
                      : name_is(m, mn, "isspace") ? ct_py_isspace(cp)
                                                  : true;
            any = true;
            all = all && ok;
            if (cp_cased(cp)) {
                any_cased = true;
                all_lower = all_lower && c == UTF8PROC_CATEGORY_LL;
                all_upper = all_upper && c == UTF8PROC_CATEGORY_LU;
            }
        }
        if (name_is(m, mn, "islower")) return ct_bool(any_cased && all_lower);
        if (name_is(m, mn, "isupper")) return ct_bool(any_cased && all_upper);
        return ct_bool(any && all);
    }
    if (name_is(m, mn, "replace")) {
        static const char *const P[] = {"old", "new", "count", NULL};
        bind(vm, a, "replace", P, v, pos);
        want_str(vm, v[0], "replace() argument 1", pos);
        want_str(vm, v[1], "replace() argument 2", pos);
        int64_t count = given(v[2]) ? want_int(vm, v[2], "count", pos) : -1;
        return replace_str(vm, s, v[0], v[1], count, pos);
    }
    if (name_is(m, mn, "find") || name_is(m, mn, "rfind") || name_is(m, mn, "index") ||
        name_is(m, mn, "count")) {
        static const char *const P[] = {"sub", NULL};
        bind(vm, a, m, P, v, pos);
        struct ct_val sub = want_str(vm, v[0], "substring", pos);
        ct_charge(vm, s.n / 64, pos);
        if (m[0] == 'c') {
            if (sub.n == 0)
                return ct_int((int64_t)ct_utf8_count(s.u.s, s.n) + 1);
            int64_t c = 0;
            size_t i = 0;
            const char *hit;
            while ((hit = find_sub(s.u.s + i, s.n - i, sub.u.s, sub.n))) {
                c++;
                i = (size_t)(hit - s.u.s) + sub.n;
            }
            return ct_int(c);
        }
        const char *hit = NULL;
        if (m[0] == 'r') {
            for (size_t i = s.n + 1; i-- > 0;)
                if (i + sub.n <= s.n && memcmp(s.u.s + i, sub.u.s, sub.n) == 0) {
                    hit = s.u.s + i;
                    break;
                }
        } else {
            hit = find_sub(s.u.s, s.n, sub.u.s, sub.n);
        }
        if (!hit) {
            if (m[0] == 'i')
                FAIL(vm, pos, "substring not found");
            return ct_int(-1);
        }
        return ct_int((int64_t)ct_utf8_count(s.u.s, (size_t)(hit - s.u.s)));
    }
    if (name_is(m, mn, "join")) {
        static const char *const P[] = {"iterable", NULL};
        bind(vm, a, "join", P, v, pos);
        struct ct_list *items = ct_iterate(vm, v[0], pos);
        struct ct_buf b = ct_tmp_buf(vm);
        for (size_t i = 0; items && i < items->n; i++) {
            if (items->v[i].type != CT_STR)
                FAIL(vm, pos, "sequence item %zu: expected str instance, %s found", i, ct_type_name(items->v[i]));
            if (i)
                ct_buf_put(&vm->fail, &b, s.u.s, s.n, pos);
            ct_buf_put(&vm->fail, &b, items->v[i].u.s, items->v[i].n, pos);
        }
        return ct_str(b.p ? b.p : "", b.n);
    }
    ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "str.%.*s is not supported", (int)mn, m);
}

static struct ct_list *pairs_of(struct ct_vm *vm, struct ct_dict *d)
{
    struct ct_list *l = ct_list_new(vm, d->n);
    for (size_t i = 0; i < d->n; i++) {
        struct ct_list *t = ct_list_new(vm, 2);
        t->is_tuple = true;
        t->v[t->n++] = d->k[i];
        t->v[t->n++] = d->v[i];
        l->v[l->n++] = list_val(t);
    }
    return l;
}

static struct ct_val call_method(struct ct_vm *vm, struct ct_func *fn, struct ct_args *a, size_t pos)
{
    struct ct_val self = fn->self;
    const char *m = fn->name;
    size_t mn = fn->n;
    if (self.type == CT_STR)
        return str_method(vm, self, m, mn, a, pos);
    struct ct_val v[2];
    if (self.type == CT_DICT) {
        struct ct_dict *d = self.u.d;
        ct_charge(vm, d->n, pos);
        if (name_is(m, mn, "get")) {
            static const char *const P[] = {"key", "default", NULL};
            bind(vm, a, "get", P, v, pos);
            if (!given(v[0]))
                FAIL(vm, pos, "get expected at least 1 argument, got 0");
            struct ct_val *x = ct_dict_get(d, v[0]);
            return x ? *x : given(v[1]) ? v[1] : ct_none();
        }
        if (a->n_pos || a->n_kw)
            FAIL(vm, pos, "dict.%.*s() takes no arguments", (int)mn, m);
        if (name_is(m, mn, "items")) {
            struct ct_list *l = pairs_of(vm, d);
            l->view = "dict_items";
            return list_val(l);
        }
        if (name_is(m, mn, "copy")) {
            struct ct_dict *c = ct_dict_new(vm);
            for (size_t i = 0; i < d->n; i++)
                ct_dict_set(vm, c, d->k[i], d->v[i]);
            return (struct ct_val){.type = CT_DICT, .u.d = c};
        }
        struct ct_list *l = ct_list_new(vm, d->n);
        l->view = m[0] == 'k' ? "dict_keys" : "dict_values";
        for (size_t i = 0; i < d->n; i++)
            l->v[l->n++] = m[0] == 'k' ? d->k[i] : d->v[i];
        return list_val(l);
    }
    /* list methods */
    struct ct_list *l = self.u.l;
    ct_charge(vm, l->n, pos);
    if (name_is(m, mn, "copy")) {
        struct ct_list *c = ct_list_new(vm, l->n);
        memcpy(c->v, l->v, l->n * sizeof(*c->v));
        c->n = l->n;
        return list_val(c);
    }
    static const char *const P[] = {"value", NULL};
    bind(vm, a, m, P, v, pos);
    int64_t count = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (ct_equal(l->v[i], v[0])) {
            if (m[0] == 'i')
                return ct_int((int64_t)i);
            count++;
        }
    }
    if (m[0] == 'i')
        FAIL(vm, pos, "value is not in list");
    return ct_int(count);
}

struct ct_val ct_call_func(struct ct_vm *vm, struct ct_func *fn, struct ct_args *a, size_t pos)
{
    switch (fn->id) {
    case FN_RANGE: return do_range(vm, a, pos);
    case FN_NAMESPACE: {
        struct ct_dict *d = ct_dict_new(vm);
        fill_dict(vm, d, a, "namespace", pos);
        return (struct ct_val){.type = CT_NS, .u.d = d};
    }
    case FN_DICT: {
        struct ct_dict *d = ct_dict_new(vm);
        fill_dict(vm, d, a, "dict", pos);
        return (struct ct_val){.type = CT_DICT, .u.d = d};
    }
    case FN_RAISE: {
        struct ct_val msg = a->n_pos ? ct_to_str(vm, a->pos[0]) : ct_str("", 0);
        ct_fail_at(&vm->fail, PL_STATUS_INVALID_ARGUMENT, pos, "%.*s", (int)msg.n, msg.u.s);
    }
    case FN_STRFTIME: return strftime_now(vm, a, pos);
    case FN_LOOP_CYCLE:
        if (!a->n_pos)
            FAIL(vm, pos, "no items for cycling given");
        return a->pos[fn->self.u.loop->index0 % a->n_pos];
    case FN_METHOD: return call_method(vm, fn, a, pos);
    }
    FAIL(vm, pos, "bad function");
}

/* ---- filters ----------------------------------------------------------------- */

static struct ct_list *gen(struct ct_vm *vm)
{
    struct ct_list *l = ct_list_new(vm, 0);
    l->is_gen = true;
    return l;
}

static struct ct_val lowered(struct ct_vm *vm, struct ct_val v, bool case_sensitive)
{
    return !case_sensitive && v.type == CT_STR ? map_str(vm, v, cp_lower) : v;
}

struct sort_ctx {
    struct ct_vm *vm;
    struct ct_val *keys;
    bool reverse;
    size_t pos;
};

static int sort_cmp(struct sort_ctx *c, size_t i, size_t j)
{
    int r = ct_compare(c->vm, c->keys[i], c->keys[j], c->pos);
    return c->reverse ? -r : r;
}

/* stable merge sort of index array idx[0..n) */
static void merge_sort(struct sort_ctx *c, size_t *idx, size_t *tmp, size_t n)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(c, idx, tmp, h);
    merge_sort(c, idx + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = sort_cmp(c, idx[j], idx[i]) < 0 ? idx[j++] : idx[i++];
    while (i < h)
        tmp[k++] = idx[i++];
    while (j < n)
        tmp[k++] = idx[j++];
    memcpy(idx, tmp, n * sizeof(*idx));
}

static struct ct_list *sorted(struct ct_vm *vm, struct ct_list *items, struct ct_val *keys, bool reverse,
                              size_t pos)
{
    size_t n = items->n;
    size_t *idx = ct_alloc(&vm->fail, (n + 1) * sizeof(*idx));
    size_t *tmp = ct_alloc(&vm->fail, (n + 1) * sizeof(*tmp));
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    struct sort_ctx c = {vm, keys, reverse, pos};
    ct_charge(vm, n * 8, pos);
    merge_sort(&c, idx, tmp, n);
    struct ct_list *out = ct_list_new(vm, n);
    for (size_t i = 0; i < n; i++)
        out->v[out->n++] = items->v[idx[i]];
    return out;
}

static int64_t py_len(struct ct_vm *vm, struct ct_val v, size_t pos)
{
    switch (v.type) {
    case CT_UNDEF: return 0;
    case CT_STR: return (int64_t)ct_utf8_count(v.u.s, v.n);
    case CT_LIST:
        if (v.u.l->is_gen)
            FAIL(vm, pos, "object of type 'generator' has no len()");
        return (int64_t)v.u.l->n;
    case CT_DICT: return (int64_t)v.u.d->n;
    case CT_LOOP: return (int64_t)v.u.loop->items->n;
    default: FAIL(vm, pos, "object of type '%s' has no len()", ct_type_name(v));
    }
}

/* Python int(str) / float(str) parsing (whitespace, sign, underscores) */
static bool parse_py_int(struct ct_val s, int base, int64_t *out)
{
    size_t i = 0, n = s.n;
    const char *p = s.u.s;
    while (i < n && ct_py_isspace((unsigned char)p[i]))
        i++;
    while (n > i && ct_py_isspace((unsigned char)p[n - 1]))
        n--;
    bool neg = false;
    if (i < n && (p[i] == '+' || p[i] == '-'))
        neg = p[i++] == '-';
    /* int("0x1A", 16) accepts the prefix of its own base */
    if (n - i > 2 && p[i] == '0') {
        char c = (char)tolower((unsigned char)p[i + 1]);
        if ((c == 'x' && base == 16) || (c == 'o' && base == 8) || (c == 'b' && base == 2)) {
            i += 2;
            if (i < n && p[i] == '_')
                i++;
        }
    }
    if (i >= n)
        return false;
    uint64_t v = 0;
    bool last_us = true;
    for (; i < n; i++) {
        if (p[i] == '_') {
            if (last_us)
                return false;
            last_us = true;
            continue;
        }
        int d = isdigit((unsigned char)p[i]) ? p[i] - '0'
                : isalpha((unsigned char)p[i]) ? tolower((unsigned char)p[i]) - 'a' + 10 : 99;
        if (d >= base)
            return false;
        if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
            return false;
        v = v * (uint64_t)base + (uint64_t)d;
        last_us = false;
    }
    if (last_us || v > (uint64_t)INT64_MAX + neg)
        return false;
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

static bool parse_py_float(struct ct_vm *vm, struct ct_val s, double *out)
{
    char *buf = ct_alloc(&vm->fail, s.n + 1);
    size_t k = 0;
    size_t i = 0, n = s.n;
    while (i < n && ct_py_isspace((unsigned char)s.u.s[i]))
        i++;
    while (n > i && ct_py_isspace((unsigned char)s.u.s[n - 1]))
        n--;
    for (; i < n; i++) {
        char c = s.u.s[i];
        if (c == '_') {
            if (!k || !isdigit((unsigned char)buf[k - 1]) || i + 1 >= n || !isdigit((unsigned char)s.u.s[i + 1]))
                return false;
            continue;
        }
        if (!(isalnum((unsigned char)c) || c == '.' || c == '+' || c == '-'))
            return false;
        if (c == 'x' || c == 'X' || c == 'p' || c == 'P')
            return false; /* strtod would accept hex floats; Python does not */
        buf[k++] = c;
    }
    buf[k] = '\0';
    if (!k)
        return false;
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end)
        return false;
    *out = d;
    return true;
}

static struct ct_val do_round(struct ct_vm *vm, struct ct_val x, int64_t prec, struct ct_val method, size_t pos)
{
    if (x.type != CT_INT && x.type != CT_FLOAT && x.type != CT_BOOL)
        FAIL(vm, pos, "type %s doesn't define __round__ method", ct_type_name(x));
    const char *m = method.type == CT_STR ? method.u.s : "common";
    size_t mn = method.type == CT_STR ? method.n : 6;
    if (!name_is(m, mn, "common") && !name_is(m, mn, "ceil") && !name_is(m, mn, "floor"))
        FAIL(vm, pos, "method must be common, ceil or floor");
    double f = x.type == CT_FLOAT ? x.u.f : (double)ival(x);
    if (name_is(m, mn, "common")) {
        if (x.type != CT_FLOAT)
            return ct_int(ival(x));
        if (prec > 300 || prec < -300 || !isfinite(f))
            return ct_float(f);
        if (prec >= 0) {
            /* correctly rounded decimal, half to even on the exact binary value: as Python */
            char buf[400];
            snprintf(buf, sizeof(buf), "%.*f", (int)prec, f);
            return ct_float(strtod(buf, NULL));
        }
        double p = pow(10.0, (double)-prec);
        return ct_float(nearbyint(f / p) * p);
    }
    double p = pow(10.0, (double)prec);
    return ct_float((name_is(m, mn, "ceil") ? ceil(f * p) : floor(f * p)) / p);
}

static struct ct_val do_indent(struct ct_vm *vm, struct ct_val s, struct ct_val width, bool first, bool blank,
                               size_t pos)
{
    struct ct_val ind;
    if (width.type == CT_STR) {
        ind = width;
    } else {
        int64_t w = given(width) ? want_int(vm, width, "indent width", pos) : 4;
        if (w < 0)
            w = 0;
        if ((uint64_t)w > vm->limits.max_output_bytes)
            ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "indent width too large");
        char *sp = ct_alloc(&vm->fail, (size_t)w + 1);
        memset(sp, ' ', (size_t)w);
        ind = ct_str(sp, (size_t)w);
    }
    /* s += "\n" then splitlines(), as jinja2 does */
    char *t = ct_alloc(&vm->fail, s.n + 2);
    memcpy(t, s.u.s, s.n);
    t[s.n] = '\n';
    struct ct_list *lines = splitlines(vm, ct_str(t, s.n + 1), false);
    struct ct_buf b = ct_tmp_buf(vm);
    for (size_t i = 0; i < lines->n; i++) {
        struct ct_val ln = lines->v[i];
        if (i)
            ct_buf_putc(&vm->fail, &b, '\n');
        if (i && (blank || ln.n))
            ct_buf_put(&vm->fail, &b, ind.u.s, ind.n, pos);
        ct_buf_put(&vm->fail, &b, ln.u.s, ln.n, pos);
    }
    struct ct_val r = ct_str(b.p ? b.p : "", b.n);
    if (first) {
        struct ct_buf b2 = ct_tmp_buf(vm);
        ct_buf_put(&vm->fail, &b2, ind.u.s, ind.n, pos);
        ct_buf_put(&vm->fail, &b2, r.u.s, r.n, pos);
        r = ct_str(b2.p ? b2.p : "", b2.n);
    }
    return r;
}

/* select / reject / selectattr / rejectattr */
static struct ct_val select_filter(struct ct_vm *vm, struct ct_val seq, struct ct_args *a, bool attr,
                                   bool keep_if, size_t pos)
{
    size_t off = 0;
    struct ct_val attr_name = ct_none();
    if (attr) {
        if (!a->n_pos)
            FAIL(vm, pos, "Missing parameter for attribute name");
        attr_name = a->pos[0];
        off = 1;
    }
    struct ct_list *items = ct_iterate(vm, seq, pos);
    struct ct_list *out = gen(vm);
    bool has_test = a->n_pos > off;
    struct ct_args targs = {0};
    int tid = -1;
    const char *tname = NULL;
    size_t tn = 0;
    if (has_test) {
        struct ct_val t = want_str(vm, a->pos[off], "test name", pos);
        tname = t.u.s;
        tn = t.n;
        tid = ct_test_id(tname, tn);
        targs.pos = a->pos + off + 1;
        targs.n_pos = a->n_pos - off - 1;
        targs.names = a->names;
        targs.name_lens = a->name_lens;
        targs.kw = a->kw;
        targs.n_kw = a->n_kw;
    }
    for (size_t i = 0; items && i < items->n; i++) {
        ct_charge(vm, 1, pos);
        struct ct_val x = attr ? attr_path(vm, items->v[i], attr_name, pos) : items->v[i];
        bool ok = has_test ? ct_apply_test(vm, tid, tname, tn, x, &targs, pos) : ct_truthy(x);
        if (ok == keep_if)
            ct_list_push(vm, out, items->v[i]);
    }
    return list_val(out);
}

static struct ct_val map_filter(struct ct_vm *vm, struct ct_val seq, struct ct_args *a, size_t pos)
{
    struct ct_list *items = ct_iterate(vm, seq, pos);
    struct ct_list *out = gen(vm);
    if (a->n_pos == 0) {
        struct ct_val attr = ct_undef(NULL), dflt = ct_undef(NULL);
        for (size_t k = 0; k < a->n_kw; k++) {
            if (name_is(a->names[k], a->name_lens[k], "attribute"))
                attr = a->kw[k];
            else if (name_is(a->names[k], a->name_lens[k], "default"))
                dflt = a->kw[k];
            else
                FAIL(vm, pos, "Unexpected keyword argument '%.*s'", (int)a->name_lens[k], a->names[k]);
        }
        if (!given(attr))
            FAIL(vm, pos, "map requires a filter argument");
        for (size_t i = 0; items && i < items->n; i++) {
            ct_charge(vm, 1, pos);
            struct ct_val x = attr_path(vm, items->v[i], attr, pos);
            if (x.type == CT_UNDEF && given(dflt))
                x = dflt;
            ct_list_push(vm, out, x);
        }
        return list_val(out);
    }
    struct ct_val fname = want_str(vm, a->pos[0], "filter name", pos);
    struct ct_args fargs = *a;
    fargs.pos++;
    fargs.n_pos--;
    int id = ct_filter_id(fname.u.s, fname.n);
    for (size_t i = 0; items && i < items->n; i++) {
        ct_charge(vm, 1, pos);
        ct_list_push(vm, out, ct_apply_filter(vm, id, fname.u.s, fname.n, items->v[i], &fargs, pos));
    }
    return list_val(out);
}

static struct ct_val escape_html(struct ct_vm *vm, struct ct_val s)
{
    struct ct_buf b = ct_tmp_buf(vm);
    for (size_t i = 0; i < s.n; i++) {
        const char *r = NULL;
        switch (s.u.s[i]) {
        case '&': r = "&amp;"; break;
        case '<': r = "&lt;"; break;
        case '>': r = "&gt;"; break;
        case '"': r = "&#34;"; break;
        case '\'': r = "&#39;"; break;
        }
        if (r)
            ct_buf_put(&vm->fail, &b, r, strlen(r), CT_NO_POS);
        else
            ct_buf_putc(&vm->fail, &b, s.u.s[i]);
    }
    return ct_str(b.p ? b.p : "", b.n);
}

static struct ct_val do_tojson(struct ct_vm *vm, struct ct_val x, struct ct_args *a, size_t pos)
{
    static const char *const P[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    struct ct_val v[4];
    bind(vm, a, "tojson", P, v, pos);
    if (given(v[0]) && ct_truthy(v[0]))
        ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "tojson(ensure_ascii=True) is not supported");
    const char *indent = NULL;
    size_t indent_n = 0;
    if (given(v[1]) && v[1].type != CT_NONE) {
        if (v[1].type == CT_STR) {
            indent = v[1].u.s;
            indent_n = v[1].n;
        } else {
            int64_t w = want_int(vm, v[1], "indent", pos);
            if (w < 0)
                w = 0;
            if (w > 1024)
                ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "tojson indent too large");
            char *sp = ct_alloc(&vm->fail, (size_t)w + 1);
            memset(sp, ' ', (size_t)w);
            indent = sp;
            indent_n = (size_t)w;
        }
    }
    const char *item_sep = indent ? "," : ", ", *key_sep = ": ";
    if (given(v[2]) && v[2].type != CT_NONE) {
        struct ct_list *l = v[2].type == CT_LIST ? v[2].u.l : NULL;
        if (!l || l->n != 2 || l->v[0].type != CT_STR || l->v[1].type != CT_STR)
            FAIL(vm, pos, "tojson separators must be a pair of strings");
        item_sep = ct_strdup(&vm->fail, l->v[0].u.s, l->v[0].n);
        key_sep = ct_strdup(&vm->fail, l->v[1].u.s, l->v[1].n);
    }
    if (x.type == CT_LIST && x.u.l->is_gen)
        FAIL(vm, pos, "Object of type generator is not JSON serializable");
    struct ct_buf b = ct_tmp_buf(vm);
    ct_write_json(vm, &b, x, indent, indent_n, item_sep, key_sep, given(v[3]) && ct_truthy(v[3]), 0, pos);
    return ct_str(b.p ? b.p : "", b.n);
}

struct ct_val ct_apply_filter(struct ct_vm *vm, int id, const char *name, size_t name_n,
                              struct ct_val x, struct ct_args *a, size_t pos)
{
    struct ct_val v[4];
    ct_charge(vm, 1, pos);
    switch (id) {
    case F_ABS:
        bind(vm, a, "abs", (const char *const[]){NULL}, v, pos);
        if (x.type == CT_FLOAT)
            return ct_float(fabs(x.u.f));
        if (is_intlike(x)) {
            if (ival(x) == INT64_MIN)
                ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "integer overflow");
            return ct_int(ival(x) < 0 ? -ival(x) : ival(x));
        }
        FAIL(vm, pos, "bad operand type for abs(): '%s'", ct_type_name(x));
    case F_ATTR: {
        static const char *const P[] = {"name", NULL};
        bind(vm, a, "attr", P, v, pos);
        struct ct_val nm = want_str(vm, v[0], "attribute name", pos);
        if (x.type == CT_UNDEF)
            ct_fail_undefined(vm, x, pos);
        if (x.type == CT_DICT) {
            if (in_names(DICT_METHODS, nm.u.s, nm.n))
                return bound(vm, FN_METHOD, x, nm.u.s, nm.n);
            return no_attr(vm, x, nm.u.s, nm.n);
        }
        return ct_getattr(vm, x, nm.u.s, nm.n, pos);
    }
    case F_CAPITALIZE:
    case F_LOWER:
    case F_UPPER:
    case F_TITLE: {
        bind(vm, a, name, (const char *const[]){NULL}, v, pos);
        struct ct_val s = ct_to_str(vm, x);
        if (id == F_LOWER)
            return map_str(vm, s, cp_lower);
        if (id == F_UPPER)
            return map_str(vm, s, cp_upper);
        if (id == F_CAPITALIZE)
            return title_str(vm, s, 1);
        /* jinja2 title: words split at [-\s({[<]+; first char upper, rest lower */
        struct ct_buf b = ct_tmp_buf(vm);
        bool word_start = true;
        for (size_t i = 0; i < s.n;) {
            uint32_t cp;
            int len = ct_utf8_dec(s.u.s, s.n, i, &cp);
            bool sep = ct_py_isspace(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<';
            if (sep)
                ct_buf_put(&vm->fail, &b, s.u.s + i, (size_t)len, pos);
            else
                put_mapped(vm, &b, cp, word_start ? cp_upper : cp_lower);
            word_start = sep;
            i += (size_t)len;
        }
        return ct_str(b.p ? b.p : "", b.n);
    }
    case F_COUNT:
    case F_LENGTH:
        bind(vm, a, name, (const char *const[]){NULL}, v, pos);
        return ct_int(py_len(vm, x, pos));
    case F_DEFAULT: {
        static const char *const P[] = {"default_value", "boolean", NULL};
        bind(vm, a, "default", P, v, pos);
        bool use = x.type == CT_UNDEF || (given(v[1]) && ct_truthy(v[1]) && !ct_truthy(x));
        if (!use)
            return x;
        return given(v[0]) ? v[0] : ct_str("", 0);
    }
    case F_DICTSORT: {
        static const char *const P[] = {"case_sensitive", "by", "reverse", NULL};
        bind(vm, a, "dictsort", P, v, pos);
        if (x.type != CT_DICT)
            FAIL(vm, pos, "dictsort: expected a mapping");
        bool by_value = v[1].type == CT_STR && name_is(v[1].u.s, v[1].n, "value");
        struct ct_list *items = pairs_of(vm, x.u.d);
        struct ct_val *keys = ct_alloc(&vm->fail, (items->n + 1) * sizeof(*keys));
        for (size_t i = 0; i < items->n; i++)
            keys[i] = lowered(vm, x.u.d->v[i].type == CT_UNDEF ? x.u.d->v[i] : (by_value ? x.u.d->v[i] : x.u.d->k[i]),
                              ct_truthy(v[0]));
        return list_val(sorted(vm, items, keys, ct_truthy(v[2]), pos));
    }
    case F_ESCAPE:
        bind(vm, a, "escape", (const char *const[]){NULL}, v, pos);
        return escape_html(vm, ct_to_str(vm, x));
    case F_FIRST:
    case F_LAST: {
        bind(vm, a, name, (const char *const[]){NULL}, v, pos);
        if (x.type == CT_UNDEF)
            return ct_undef("No first item, sequence was empty.");
        if (id == F_LAST && x.type == CT_LIST && x.u.l->is_gen)
            FAIL(vm, pos, "'generator' object is not reversible");
        struct ct_list *items = ct_iterate(vm, x, pos);
        if (!items || !items->n)
            return ct_undef(id == F_FIRST ? "No first item, sequence was empty."
                                          : "No last item, sequence was empty.");
        return items->v[id == F_FIRST ? 0 : items->n - 1];
    }
    case F_FLOAT: {
        static const char *const P[] = {"default", NULL};
        bind(vm, a, "float", P, v, pos);
        struct ct_val dflt = given(v[0]) ? v[0] : ct_float(0.0);
        double d;
        if (x.type == CT_FLOAT)
            return x;
        if (is_intlike(x))
            return ct_float((double)ival(x));
        if (x.type == CT_STR && parse_py_float(vm, x, &d))
            return ct_float(d);
        return dflt;
    }
    case F_INDENT: {
        static const char *const P[] = {"width", "first", "blank", NULL};
        bind(vm, a, "indent", P, v, pos);
        return do_indent(vm, ct_to_str(vm, x), v[0], ct_truthy(v[1]), ct_truthy(v[2]), pos);
    }
    case F_INT: {
        static const char *const P[] = {"default", "base", NULL};
        bind(vm, a, "int", P, v, pos);
        struct ct_val dflt = given(v[0]) ? v[0] : ct_int(0);
        int64_t base = given(v[1]) ? want_int(vm, v[1], "base", pos) : 10;
        if (base < 2 || base > 36)
            FAIL(vm, pos, "int() base must be >= 2 and <= 36");
        int64_t r;
        double d;
        if (is_intlike(x))
            return ct_int(ival(x));
        if (x.type == CT_FLOAT || (x.type == CT_STR && !parse_py_int(x, (int)base, &r) && parse_py_float(vm, x, &d))) {
            double f = x.type == CT_FLOAT ? x.u.f : d;
            if (!isfinite(f) || fabs(f) >= 9.2e18)
                FAIL(vm, pos, "cannot convert float %s to integer", isnan(f) ? "NaN" : "infinity or a huge value");
            return ct_int((int64_t)f);
        }
        if (x.type == CT_STR && parse_py_int(x, (int)base, &r))
            return ct_int(r);
        return dflt;
    }
    case F_ITEMS: {
        bind(vm, a, "items", (const char *const[]){NULL}, v, pos);
        if (x.type == CT_UNDEF)
            return list_val(gen(vm));
        if (x.type != CT_DICT)
            FAIL(vm, pos, "Can only get item pairs from a mapping.");
        struct ct_list *l = pairs_of(vm, x.u.d);
        l->is_gen = true;
        return list_val(l);
    }
    case F_JOIN: {
        static const char *const P[] = {"d", "attribute", NULL};
        bind(vm, a, "join", P, v, pos);
        struct ct_val sep = given(v[0]) ? ct_to_str(vm, v[0]) : ct_str("", 0);
        struct ct_list *items = ct_iterate(vm, x, pos);
        struct ct_buf b = ct_tmp_buf(vm);
        for (size_t i = 0; items && i < items->n; i++) {
            ct_charge(vm, 1, pos);
            if (i)
                ct_buf_put(&vm->fail, &b, sep.u.s, sep.n, pos);
            struct ct_val it = given(v[1]) ? attr_path(vm, items->v[i], v[1], pos) : items->v[i];
            ct_write_str(vm, &b, it);
        }
        return ct_str(b.p ? b.p : "", b.n);
    }
    case F_LIST: {
        bind(vm, a, "list", (const char *const[]){NULL}, v, pos);
        struct ct_list *items = ct_iterate(vm, x, pos);
        struct ct_list *l = ct_list_new(vm, items ? items->n : 0);
        for (size_t i = 0; items && i < items->n; i++)
            l->v[l->n++] = items->v[i];
        ct_charge(vm, l->n, pos);
        return list_val(l);
    }
    case F_MAP: return map_filter(vm, x, a, pos);
    case F_MAX:
    case F_MIN: {
        static const char *const P[] = {"case_sensitive", "attribute", NULL};
        bind(vm, a, name, P, v, pos);
        struct ct_list *items = ct_iterate(vm, x, pos);
        if (!items || !items->n)
            return ct_undef(id == F_MAX ? "No largest item, sequence was empty."
                                        : "No smallest item, sequence was empty.");
        size_t best = 0;
        struct ct_val bk = ct_none();
        for (size_t i = 0; i < items->n; i++) {
            struct ct_val k = given(v[1]) ? attr_path(vm, items->v[i], v[1], pos) : items->v[i];
            k = lowered(vm, k, ct_truthy(v[0]));
            if (i == 0) {
                bk = k;
                continue;
            }
            int c = ct_compare(vm, k, bk, pos);
            if (id == F_MAX ? c > 0 : c < 0) {
                best = i;
                bk = k;
            }
        }
        return items->v[best];
    }
    case F_REJECT: return select_filter(vm, x, a, false, false, pos);
    case F_REJECTATTR: return select_filter(vm, x, a, true, false, pos);
    case F_SELECT: return select_filter(vm, x, a, false, true, pos);
    case F_SELECTATTR: return select_filter(vm, x, a, true, true, pos);
    case F_REPLACE: {
        static const char *const P[] = {"old", "new", "count", NULL};
        bind(vm, a, "replace", P, v, pos);
        int64_t count = given(v[2]) && v[2].type != CT_NONE ? want_int(vm, v[2], "count", pos) : -1;
        return replace_str(vm, ct_to_str(vm, x), ct_to_str(vm, v[0]), ct_to_str(vm, v[1]), count, pos);
    }
    case F_REVERSE: {
        bind(vm, a, "reverse", (const char *const[]){NULL}, v, pos);
        if (x.type == CT_STR)
            return ct_slice(vm, x, ct_none(), ct_none(), ct_int(-1), pos);
        struct ct_list *items = ct_iterate(vm, x, pos);
        struct ct_list *l = gen(vm);
        for (size_t i = items ? items->n : 0; i-- > 0;)
            ct_list_push(vm, l, items->v[i]);
        return list_val(l);
    }
    case F_ROUND: {
        static const char *const P[] = {"precision", "method", NULL};
        bind(vm, a, "round", P, v, pos);
        int64_t prec = given(v[0]) ? want_int(vm, v[0], "precision", pos) : 0;
        return do_round(vm, x, prec, v[1], pos);
    }
    case F_SAFE:
    case F_STRING:
        bind(vm, a, name, (const char *const[]){NULL}, v, pos);
        return ct_to_str(vm, x);
    case F_SORT: {
        static const char *const P[] = {"reverse", "case_sensitive", "attribute", NULL};
        bind(vm, a, "sort", P, v, pos);
        struct ct_list *items = ct_iterate(vm, x, pos);
        if (!items)
            return list_val(ct_list_new(vm, 0));
        struct ct_val *keys = ct_alloc(&vm->fail, (items->n + 1) * sizeof(*keys));
        /* attribute="a,b": the key is the tuple of those attributes */
        struct ct_list *attrs = NULL;
        if (v[2].type == CT_STR && memchr(v[2].u.s, ',', v[2].n))
            attrs = split_str(vm, v[2], ct_cstr(","), -1, pos).u.l;
        for (size_t i = 0; i < items->n; i++) {
            if (attrs) {
                struct ct_list *t = ct_list_new(vm, attrs->n);
                t->is_tuple = true;
                for (size_t k = 0; k < attrs->n; k++)
                    t->v[t->n++] = lowered(vm, attr_path(vm, items->v[i], attrs->v[k], pos), ct_truthy(v[1]));
                keys[i] = list_val(t);
                continue;
            }
            struct ct_val k = given(v[2]) ? attr_path(vm, items->v[i], v[2], pos) : items->v[i];
            keys[i] = lowered(vm, k, ct_truthy(v[1]));
        }
        return list_val(sorted(vm, items, keys, ct_truthy(v[0]), pos));
    }
    case F_SUM: {
        static const char *const P[] = {"attribute", "start", NULL};
        bind(vm, a, "sum", P, v, pos);
        struct ct_list *items = ct_iterate(vm, x, pos);
        bool is_f = false;
        int64_t si = 0;
        double sf = 0;
        struct ct_val start = given(v[1]) ? v[1] : ct_int(0);
        for (size_t i = 0; items && i <= items->n; i++) {
            struct ct_val it = i == 0 ? start
                               : given(v[0]) ? attr_path(vm, items->v[i - 1], v[0], pos)
                                             : items->v[i - 1];
            if (it.type == CT_FLOAT) {
                if (!is_f)
                    sf = (double)si;
                is_f = true;
                sf += it.u.f;
            } else if (is_intlike(it)) {
                if (is_f)
                    sf += (double)ival(it);
                else if (__builtin_add_overflow(si, ival(it), &si))
                    ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "integer overflow");
            } else {
                FAIL(vm, pos, "unsupported operand type(s) for +: 'int' and '%s'", ct_type_name(it));
            }
        }
        return is_f ? ct_float(sf) : ct_int(si);
    }
    case F_TOJSON: return do_tojson(vm, x, a, pos);
    case F_TRIM: {
        static const char *const P[] = {"chars", NULL};
        bind(vm, a, "trim", P, v, pos);
        return strip_str(ct_to_str(vm, x), v[0].type == CT_STR ? v[0] : ct_none(), true, true);
    }
    case F_UNIQUE: {
        static const char *const P[] = {"case_sensitive", "attribute", NULL};
        bind(vm, a, "unique", P, v, pos);
        struct ct_list *items = ct_iterate(vm, x, pos);
        struct ct_list *out = gen(vm);
        struct ct_list *seen = ct_list_new(vm, 0);
        for (size_t i = 0; items && i < items->n; i++) {
            struct ct_val k = given(v[1]) ? attr_path(vm, items->v[i], v[1], pos) : items->v[i];
            k = lowered(vm, k, ct_truthy(v[0]));
            struct ct_val sv = list_val(seen);
            if (!ct_contains(vm, sv, k, pos)) {
                ct_list_push(vm, seen, k);
                ct_list_push(vm, out, items->v[i]);
            }
        }
        return list_val(out);
    }
    case F_TRUNCATE: {
        static const char *const P[] = {"length", "killwords", "end", "leeway", NULL};
        bind(vm, a, "truncate", P, v, pos);
        struct ct_val s = ct_to_str(vm, x);
        int64_t length = given(v[0]) ? want_int(vm, v[0], "length", pos) : 255;
        struct ct_val end = given(v[2]) ? want_str(vm, v[2], "end", pos) : ct_cstr("...");
        int64_t leeway = given(v[3]) && v[3].type != CT_NONE ? want_int(vm, v[3], "leeway", pos) : 5;
        int64_t end_len = (int64_t)ct_utf8_count(end.u.s, end.n), len = (int64_t)ct_utf8_count(s.u.s, s.n);
        if (length < end_len || leeway < 0)
            FAIL(vm, pos, "expected length >= %lld, got %lld", (long long)end_len, (long long)length);
        if (len <= length + leeway)
            return s;
        struct ct_val head = ct_slice(vm, s, ct_none(), ct_int(length - end_len), ct_none(), pos);
        if (!ct_truthy(v[1])) {
            const char *sp = NULL;
            for (size_t k = head.n; k-- > 0;)
                if (head.u.s[k] == ' ') {
                    sp = head.u.s + k;
                    break;
                }
            if (sp)
                head.n = (size_t)(sp - head.u.s);
        }
        struct ct_buf b = ct_tmp_buf(vm);
        ct_buf_put(&vm->fail, &b, head.u.s, head.n, pos);
        ct_buf_put(&vm->fail, &b, end.u.s, end.n, pos);
        return ct_str(b.p ? b.p : "", b.n);
    }
    case F_CENTER: {
        static const char *const P[] = {"width", NULL};
        bind(vm, a, "center", P, v, pos);
        struct ct_val s = ct_to_str(vm, x);
        int64_t width = given(v[0]) ? want_int(vm, v[0], "width", pos) : 80;
        int64_t len = (int64_t)ct_utf8_count(s.u.s, s.n);
        if (width <= len)
            return s;
        if ((uint64_t)width > vm->limits.max_output_bytes)
            ct_fail_at(&vm->fail, PL_STATUS_LIMIT, pos, "center width too large");
        int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
        struct ct_buf b = ct_tmp_buf(vm);
        for (int64_t k = 0; k < left; k++)
            ct_buf_putc(&vm->fail, &b, ' ');
        ct_buf_put(&vm->fail, &b, s.u.s, s.n, pos);
        for (int64_t k = 0; k < pad - left; k++)
            ct_buf_putc(&vm->fail, &b, ' ');
        return ct_str(b.p ? b.p : "", b.n);
    }
    case F_WORDCOUNT: {
        bind(vm, a, "wordcount", (const char *const[]){NULL}, v, pos);
        struct ct_val s = ct_to_str(vm, x);
        int64_t c = 0;
        bool in_word = false;
        for (size_t i = 0; i < s.n;) {
            uint32_t cp;
            i += (size_t)ct_utf8_dec(s.u.s, s.n, i, &cp);
            utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
            bool w = cp == '_' || (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_NO);
            if (w && !in_word)
                c++;
            in_word = w;
        }
        return ct_int(c);
    }
    default:
        ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "no filter named '%.*s'", (int)name_n, name);
    }
}

/* ---- tests ---------------------------------------------------------------------- */

bool ct_apply_test(struct ct_vm *vm, int id, const char *name, size_t name_n, struct ct_val x,
                   struct ct_args *a, size_t pos)
{
    struct ct_val v[1];
    static const char *const ONE[] = {"other", NULL};
    static const char *const NONE_[] = {NULL};
    if (id < 0)
        ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "no test named '%.*s'", (int)name_n, name);
    switch (id) {
    case T_DIVISIBLEBY:
    case T_EQ:
    case T_NE:
    case T_LT:
    case T_LE:
    case T_GT:
    case T_GE:
    case T_IN:
    case T_SAMEAS:
        bind(vm, a, name, ONE, v, pos);
        if (!given(v[0]))
            FAIL(vm, pos, "test '%.*s' needs an argument", (int)name_n, name);
        break;
    default:
        bind(vm, a, name, NONE_, v, pos);
    }
    switch (id) {
    case T_DEFINED: return x.type != CT_UNDEF;
    case T_UNDEFINED: return x.type == CT_UNDEF;
    case T_NONE: return x.type == CT_NONE;
    case T_BOOLEAN: return x.type == CT_BOOL;
    case T_TRUE: return x.type == CT_BOOL && x.u.b;
    case T_FALSE: return x.type == CT_BOOL && !x.u.b;
    case T_INTEGER: return x.type == CT_INT;
    case T_FLOAT: return x.type == CT_FLOAT;
    case T_NUMBER: return x.type == CT_INT || x.type == CT_FLOAT || x.type == CT_BOOL;
    case T_STRING: return x.type == CT_STR;
    case T_MAPPING: return x.type == CT_DICT;
    case T_ITERABLE:
        return x.type == CT_STR || x.type == CT_LIST || x.type == CT_DICT || x.type == CT_UNDEF ||
               x.type == CT_LOOP;
    case T_SEQUENCE:
        return x.type == CT_STR || (x.type == CT_LIST && !x.u.l->is_gen) || x.type == CT_DICT ||
               x.type == CT_UNDEF;
    case T_CALLABLE: return x.type == CT_MACRO || x.type == CT_FUNC || x.type == CT_UNDEF;
    case T_ESCAPED: return false;
    case T_FILTER: return x.type == CT_STR && ct_filter_id(x.u.s, x.n) >= 0;
    case T_TEST: return x.type == CT_STR && ct_test_id(x.u.s, x.n) >= 0;
    case T_LOWER:
    case T_UPPER: {
        struct ct_val s = ct_to_str(vm, x);
        struct ct_args none = {0};
        return ct_truthy(str_method(vm, s, id == T_LOWER ? "islower" : "isupper", 7, &none, pos));
    }
    case T_ODD:
    case T_EVEN:
    case T_DIVISIBLEBY: {
        struct ct_val d = id == T_DIVISIBLEBY ? v[0] : ct_int(2);
        if (x.type == CT_UNDEF)
            ct_fail_undefined(vm, x, pos);
        if (is_intlike(x) && is_intlike(d)) {
            int64_t n = ival(x), m = ival(d);
            if (m == 0)
                FAIL(vm, pos, "integer division or modulo by zero");
            int64_t r = m == -1 ? 0 : n % m;
            if (id == T_ODD)
                return r != 0;
            return r == 0;
        }
        if ((x.type == CT_FLOAT || is_intlike(x)) && (d.type == CT_FLOAT || is_intlike(d))) {
            double fx = x.type == CT_FLOAT ? x.u.f : (double)ival(x);
            double fd = d.type == CT_FLOAT ? d.u.f : (double)ival(d);
            if (fd == 0)
                FAIL(vm, pos, "float modulo");
            double r = fmod(fx, fd);
            if (r != 0 && ((r < 0) != (fd < 0)))
                r += fd;
            return id == T_ODD ? r == 1 : r == 0;
        }
        FAIL(vm, pos, "unsupported operand type(s) for %%: '%s' and '%s'", ct_type_name(x), ct_type_name(d));
    }
    case T_EQ: return ct_equal(x, v[0]);
    case T_NE: return !ct_equal(x, v[0]);
    case T_LT: return ct_compare(vm, x, v[0], pos) < 0;
    case T_LE: return ct_compare(vm, x, v[0], pos) <= 0;
    case T_GT: return ct_compare(vm, x, v[0], pos) > 0;
    case T_GE: return ct_compare(vm, x, v[0], pos) >= 0;
    case T_IN: return ct_contains(vm, v[0], x, pos);
    case T_SAMEAS:
        if (x.type != v[0].type)
            return false;
        if (x.type == CT_LIST)
            return x.u.l == v[0].u.l;
        if (x.type == CT_DICT || x.type == CT_NS)
            return x.u.d == v[0].u.d;
        return ct_equal(x, v[0]);
    }
    ct_fail_at(&vm->fail, PL_STATUS_UNSUPPORTED, pos, "no test named '%.*s'", (int)name_n, name);
}
