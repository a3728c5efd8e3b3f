/*
 * tiny_json.c -- the byte-exact JSON text buffer (see tiny_json.h).
 */
#include "model/tiny_json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pl_tjson_init(struct pl_tjson *b)
{
    b->p = NULL;
    b->n = 0;
    b->cap = 0;
    b->oom = false;
}

void pl_tjson_fini(struct pl_tjson *b)
{
    free(b->p);
    pl_tjson_init(b);
}

static bool reserve(struct pl_tjson *b, size_t extra)
{
    if (b->oom)
        return false;
    if (b->n + extra + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void pl_tjson_putn(struct pl_tjson *b, const char *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void pl_tjson_put(struct pl_tjson *b, const char *s) { pl_tjson_putn(b, s, strlen(s)); }

void pl_tjson_printf(struct pl_tjson *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (len < 0) {
        b->oom = true;
        return;
    }
    if ((size_t)len < sizeof(small)) {
        pl_tjson_putn(b, small, (size_t)len);
        return;
    }
    if (!reserve(b, (size_t)len))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)len + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)len;
}

void pl_tjson_str(struct pl_tjson *b, const char *s, size_t n)
{
    pl_tjson_putn(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            pl_tjson_putn(b, "\\\"", 2);
        else if (c == '\\')
            pl_tjson_putn(b, "\\\\", 2);
        else if (c == '\n')
            pl_tjson_putn(b, "\\n", 2);
        else if (c == '\r')
            pl_tjson_putn(b, "\\r", 2);
        else if (c == '\t')
            pl_tjson_putn(b, "\\t", 2);
        else if (c < 0x20)
            pl_tjson_printf(b, "\\u%04x", c);
        else
            pl_tjson_putn(b, (const char *)&s[i], 1);
    }
    pl_tjson_putn(b, "\"", 1);
}

bool pl_tjson_failed(const struct pl_tjson *b) { return b->oom; }

pl_status pl_tjson_write_file(const struct pl_tjson *b, const char *dir, const char *name,
                              struct pl_err *err)
{
    if (b->oom)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory building the text", name);
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s/%s: path too long", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return pl_err_set(err, PL_STATUS_IO, "%s: %s", path, strerror(errno));
    size_t wrote = b->n ? fwrite(b->p, 1, b->n, f) : 0;
    int close_failed = fclose(f);
    if (wrote != b->n || close_failed)
        return pl_err_set(err, PL_STATUS_IO, "%s: write failed", path);
    return PL_STATUS_OK;
}
