/*
 * grammar.c -- constraints (enum pl_constraint_kind + text) -> compiled grammars.
 *
 * Owns: the dispatch from a constraint kind to its GBNF translation, the choice
 * translation, pl_grammar_check and pl_sampling_params_set_constraint, and the code
 * point range helpers both class parsers share (gr_ranges_*).
 */
#include "grammar/grammar_internal.h"
#include "engine/sampling_params.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int cmp_range(const void *a, const void *b)
{
    const uint32_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

int gr_ranges_normalize(uint32_t (*r)[2], int n)
{
    if (n <= 0)
        return 0;
    qsort(r, (size_t)n, sizeof(r[0]), cmp_range);
    int m = 0;
    for (int i = 1; i < n; i++) {
        if (r[i][0] <= r[m][1] + 1) {
            if (r[i][1] > r[m][1])
                r[m][1] = r[i][1];
        } else {
            m++;
            r[m][0] = r[i][0];
            r[m][1] = r[i][1];
        }
    }
    return m + 1;
}

int gr_ranges_complement(const uint32_t (*r)[2], int n, uint32_t (*out)[2])
{
    int k = 0;
    uint32_t next = 0;
    for (int i = 0; i < n; i++) {
        if (r[i][0] > next) {
            out[k][0] = next;
            out[k][1] = r[i][0] - 1;
            k++;
        }
        next = r[i][1] + 1;
    }
    if (next <= 0x10FFFF) {
        out[k][0] = next;
        out[k][1] = 0x10FFFF;
        k++;
    }
    return k;
}

pl_status pl_grammar_choice_to_gbnf(const char *choices_json, const char *rule_prefix,
                                    char **gbnf, struct pl_err *err)
{
    *gbnf = NULL;
    json_error_t je;
    json_t *a = json_loads(choices_json, 0, &je);
    if (!a || !json_is_array(a) || json_array_size(a) == 0) {
        json_decref(a);
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "choice: expected a non-empty JSON array of strings");
    }
    struct gr_buf b = {0};
    gr_buf_printf(&b, "%sroot ::= ", rule_prefix ? rule_prefix : "");
    for (size_t i = 0; i < json_array_size(a); i++) {
        const json_t *e = json_array_get(a, i);
        if (!json_is_string(e)) {
            json_decref(a);
            gr_buf_free(&b);
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "choice[%zu]: expected a string",
                              i);
        }
        gr_buf_puts(&b, i ? " | \"" : "\"");
        gr_buf_literal(&b, json_string_value(e), json_string_length(e));
        gr_buf_puts(&b, "\"");
    }
    gr_buf_puts(&b, "\n");
    json_decref(a);
    if (b.oom) {
        gr_buf_free(&b);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "choice: out of memory");
    }
    *gbnf = b.p;
    return PL_STATUS_OK;
}

pl_status pl_grammar_compile(enum pl_constraint_kind kind, const char *text, const char *ws,
                             struct pl_grammar **out, struct pl_err *err)
{
    *out = NULL;
    char *gbnf = NULL;
    pl_status st;
    if (kind != PL_CONSTRAINT_JSON_OBJECT && !text)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "structured outputs: no constraint text");
    switch (kind) {
    case PL_CONSTRAINT_JSON:
        st = pl_grammar_json_schema_to_gbnf(text, ws, NULL, &gbnf, err);
        break;
    case PL_CONSTRAINT_JSON_OBJECT:
        st = pl_grammar_json_object_to_gbnf(ws, NULL, &gbnf, err);
        break;
    case PL_CONSTRAINT_REGEX:
        st = pl_grammar_regex_to_gbnf(text, NULL, &gbnf, err);
        break;
    case PL_CONSTRAINT_CHOICE:
        st = pl_grammar_choice_to_gbnf(text, NULL, &gbnf, err);
        break;
    case PL_CONSTRAINT_GRAMMAR:
        return gr_compile_gbnf(text, out, err);
    default:
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "structured outputs: unknown constraint kind %d", (int)kind);
    }
    if (st != PL_STATUS_OK)
        return st;
    st = gr_compile_gbnf(gbnf, out, err);
    free(gbnf);
    return st;
}

pl_status pl_grammar_check(enum pl_constraint_kind kind, const char *text, const char *ws,
                           struct pl_err *err)
{
    if (kind == PL_CONSTRAINT_NONE)
        return PL_STATUS_OK;
    struct pl_grammar *g;
    pl_status st = pl_grammar_compile(kind, text, ws, &g, err);
    pl_grammar_free(g);
    return st;
}

pl_status pl_sampling_params_set_constraint(struct pl_sampling_params *p,
                                            enum pl_constraint_kind kind, const char *text,
                                            const char *ws, struct pl_err *err)
{
    pl_status st = pl_grammar_check(kind, text, ws, err);
    if (st != PL_STATUS_OK)
        return st;
    struct pl_sampling_params t = *p;
    t.constraint_kind = kind;
    t.constraint = kind == PL_CONSTRAINT_NONE ? NULL : text;
    t.whitespace_pattern = kind == PL_CONSTRAINT_NONE ? NULL : ws;
    struct pl_sampling_params copy;
    if ((st = pl_sampling_params_copy(&copy, &t, err)))
        return st;
    pl_sampling_params_fini(p);
    *p = copy;
    return PL_STATUS_OK;
}
