/*
 * chat_template.c -- the public entry points: parse, free, render.
 *
 * Owns: the setjmp frames that ct_fail returns to, the source normalization
 * jinja2 applies before lexing ("\r\n" and "\r" become "\n"; one trailing
 * newline is dropped, keep_trailing_newline being off), the default limits and
 * the render's output buffer. Invariant: on every error path the arena of the
 * failed parse or render and the output buffer are freed before returning.
 */
#include "tokenizer/chat_template/ct_vm.h"

#include <stdlib.h>
#include <string.h>

#define CT_DEFAULT_ITERATIONS 1000000L
#define CT_DEFAULT_DEPTH 64
#define CT_DEFAULT_OUTPUT ((size_t)16 << 20)

void ct_render_run(struct ct_vm *vm, const json_t *context);

pl_status pl_chat_template_parse(const char *source, size_t len, struct pl_chat_template **out,
                                 struct pl_err *err)
{
    *out = NULL;
    if (!source && len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "NULL source");
    if (len > ((size_t)64 << 20))
        return pl_err_set(err, PL_STATUS_LIMIT, "source larger than 64 MiB");
    if (!ct_utf8_valid(source, len))
        return pl_err_set(err, PL_STATUS_FORMAT, "source is not valid UTF-8");
    struct pl_chat_template *t = calloc(1, sizeof(*t));
    if (!t)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    /* tokens and nodes are a bounded multiple of the source size */
    t->arena.cap = ((size_t)8 << 20) + len * 512;
    struct ct_fail f = {.err = err, .arena = &t->arena};
    if (setjmp(f.jb)) {
        pl_status st = f.status;
        ct_arena_fini(&t->arena);
        free(t);
        return st;
    }
    char *src = ct_alloc(&f, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (source[i] == '\r') {
            src[n++] = '\n';
            if (i + 1 < len && source[i + 1] == '\n')
                i++;
        } else {
            src[n++] = source[i];
        }
    }
    if (n && src[n - 1] == '\n')
        n--;
    src[n] = '\0';
    t->src = src;
    t->src_len = n;
    f.src = src;
    f.src_len = n;
    ct_parse(&f, t);
    *out = t;
    return PL_STATUS_OK;
}

void pl_chat_template_free(struct pl_chat_template *t)
{
    if (!t)
        return;
    ct_arena_fini(&t->arena);
    free(t);
}

pl_status pl_chat_template_render(const struct pl_chat_template *t, const json_t *context,
                                  const struct pl_chat_template_limits *limits, char **out,
                                  size_t *out_len, struct pl_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (!t)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "NULL template");
    if (context && !json_is_object(context))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "context must be a JSON object");
    struct ct_vm *vm = calloc(1, sizeof(*vm));
    if (!vm)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    vm->t = t;
    vm->limits.max_loop_iterations = limits && limits->max_loop_iterations > 0
                                         ? limits->max_loop_iterations : CT_DEFAULT_ITERATIONS;
    vm->limits.max_depth = limits && limits->max_depth > 0 ? limits->max_depth : CT_DEFAULT_DEPTH;
    vm->limits.max_output_bytes = limits && limits->max_output_bytes > 0
                                      ? limits->max_output_bytes : CT_DEFAULT_OUTPUT;
    vm->work_max = (uint64_t)vm->limits.max_loop_iterations * CT_WORK_PER_ITERATION;
    /* all intermediate values: a generous multiple of the output bound */
    size_t out_cap = vm->limits.max_output_bytes;
    vm->arena.cap = ((size_t)64 << 20) + (out_cap > ((size_t)1 << 40) ? ((size_t)1 << 40) : out_cap) * 8;
    vm->fail.err = err;
    vm->fail.arena = &vm->arena;
    vm->fail.src = t->src;
    vm->fail.src_len = t->src_len;
    struct ct_buf main_out = {.is_heap = true, .limit = vm->limits.max_output_bytes};
    vm->out = &main_out;
    if (setjmp(vm->fail.jb)) {
        pl_status st = vm->fail.status;
        free(main_out.p);
        ct_arena_fini(&vm->arena);
        free(vm);
        return st;
    }
    json_t *empty = NULL;
    if (!context) {
        empty = json_object();
        if (!empty)
            ct_fail_at(&vm->fail, PL_STATUS_NO_MEMORY, CT_NO_POS, "out of memory");
    }
    ct_render_run(vm, context ? context : empty);
    json_decref(empty);
    if (!main_out.p) {
        main_out.p = malloc(1);
        if (!main_out.p)
            ct_fail_at(&vm->fail, PL_STATUS_NO_MEMORY, CT_NO_POS, "out of memory");
        main_out.p[0] = '\0';
    }
    *out = main_out.p;
    if (out_len)
        *out_len = main_out.n;
    ct_arena_fini(&vm->arena);
    free(vm);
    return PL_STATUS_OK;
}
