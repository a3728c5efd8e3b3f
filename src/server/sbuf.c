/*
 * sbuf.c -- the growable byte buffer of sbuf.h.
 */
#include "server/sbuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(struct pl_sbuf *b, size_t extra)
{
    if (b->failed)
        return false;
    if (b->len + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) {
        if (cap > ((size_t)-1) / 2) {
            b->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return false;
    }
    b->data = d;
    b->cap = cap;
    return true;
}

void pl_sbuf_append(struct pl_sbuf *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    if (n)
        memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void pl_sbuf_puts(struct pl_sbuf *b, const char *s)
{
    pl_sbuf_append(b, s, strlen(s));
}

void pl_sbuf_printf(struct pl_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || !reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void pl_sbuf_consume(struct pl_sbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = '\0';
}

void pl_sbuf_fini(struct pl_sbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

char *pl_sbuf_take(struct pl_sbuf *b, size_t *len)
{
    if (b->failed) {
        pl_sbuf_fini(b);
        return NULL;
    }
    if (!b->data && reserve(b, 0))
        b->data[0] = '\0';
    if (b->failed)
        return NULL;
    char *d = b->data;
    if (len)
        *len = b->len;
    memset(b, 0, sizeof(*b));
    return d;
}
