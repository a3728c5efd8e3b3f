/*
 * sbuf.h -- a growable byte buffer for building HTTP bodies, SSE frames and
 * metrics text. Invariant: data is NUL-terminated when non-NULL; once an
 * allocation fails, `failed` sticks and further appends are no-ops, so
 * callers check once at the end.
 */
#ifndef PL_SERVER_SBUF_H
#define PL_SERVER_SBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct pl_sbuf {
    char *data; /* [len] + NUL, malloc'ed */
    size_t len;
    size_t cap;
    bool failed;
};

void pl_sbuf_append(struct pl_sbuf *b, const char *s, size_t n);
void pl_sbuf_puts(struct pl_sbuf *b, const char *s);
void pl_sbuf_printf(struct pl_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops the first n bytes. */
void pl_sbuf_consume(struct pl_sbuf *b, size_t n);
void pl_sbuf_fini(struct pl_sbuf *b);
/* Hands the data over (caller frees; "" when empty); b is left empty. NULL if failed. */
char *pl_sbuf_take(struct pl_sbuf *b, size_t *len);

#endif
