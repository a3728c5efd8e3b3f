/*
 * util.c -- arena, error exit, UTF-8 helpers and buffers for the chat template
 * interpreter.
 *
 * Owns: struct ct_arena chunks (freed together by ct_arena_fini) and the
 * ct_fail exit. Invariants: ct_alloc never returns NULL (it leaves through
 * ct_fail with PL_STATUS_NO_MEMORY or PL_STATUS_LIMIT); arena memory is zeroed
 * and max_align_t-aligned; arena use never exceeds arena->cap.
 */
#include "util/utf8.h"
#include "tokenizer/chat_template/ct_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ct_chunk {
    struct ct_chunk *next;
    size_t size, off;
    max_align_t data[];
};

#define CT_CHUNK_MIN ((size_t)64 * 1024)

void *ct_alloc(struct ct_fail *f, size_t n)
{
    struct ct_arena *a = f->arena;
    size_t align = sizeof(max_align_t);
    n = n ? (n + align - 1) / align * align : align;
    if (n > a->cap || a->used > a->cap - n)
        ct_fail_at(f, PL_STATUS_LIMIT, CT_NO_POS, "template memory limit (%zu bytes) exceeded",
                   a->cap);
    struct ct_chunk *c = a->head;
    if (!c || c->size - c->off < n) {
        size_t size = n > CT_CHUNK_MIN ? n : CT_CHUNK_MIN;
        c = malloc(sizeof(*c) + size);
        if (!c)
            ct_fail_at(f, PL_STATUS_NO_MEMORY, CT_NO_POS, "out of memory");
        c->size = size;
        c->off = 0;
        /* A large one-off allocation goes behind the current chunk so the
         * current chunk's free space stays usable. */
        if (a->head && size > CT_CHUNK_MIN) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = (char *)c->data + c->off;
    c->off += n;
    a->used += n;
    memset(p, 0, n);
    return p;
}

char *ct_strdup(struct ct_fail *f, const char *s, size_t n)
{
    char *p = ct_alloc(f, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void ct_arena_fini(struct ct_arena *a)
{
    struct ct_chunk *c = a->head;
    while (c) {
        struct ct_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

void ct_line_col(const char *src, size_t len, size_t pos, int *line, int *col)
{
    int l = 1, c = 1;
    if (pos > len)
        pos = len;
    for (size_t i = 0; i < pos; i++) {
        if (src[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)src[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *col = c;
}

_Noreturn void ct_fail_at(struct ct_fail *f, pl_status st, size_t pos, const char *fmt, ...)
{
    char msg[PL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (pos != CT_NO_POS && f->src) {
        int line, col;
        ct_line_col(f->src, f->src_len, pos, &line, &col);
        pl_err_set(f->err, st, "line %d, column %d: %s", line, col, msg);
    } else {
        pl_err_set(f->err, st, "%s", msg);
    }
    f->status = st;
    longjmp(f->jb, 1);
}

/* ---- UTF-8 ----------------------------------------------------------------- */

int ct_utf8_dec(const char *s, size_t n, size_t i, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s + i;
    size_t left = n - i;
    if (u[0] < 0x80 || left < 2) {
        *cp = u[0];
        return 1;
    }
    if ((u[0] & 0xE0) == 0xC0) {
        *cp = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        return 2;
    }
    if ((u[0] & 0xF0) == 0xE0 && left >= 3) {
        *cp = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        return 3;
    }
    if (left >= 4) {
        *cp = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
              ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        return 4;
    }
    *cp = u[0];
    return 1;
}

int ct_utf8_enc(uint32_t cp, char out[4])
{
    return pl_utf8_encode((uint32_t)cp, out);
}

bool ct_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned char c = u[i];
        size_t len;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((u[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (u[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += len;
    }
    return true;
}

size_t ct_utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Python's str.isspace() (and re's \s for str patterns). */
bool ct_py_isspace(uint32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool ct_py_islinebreak(uint32_t cp)
{
    return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
           cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

/* ---- buffers ------------------------------------------------------------- */

void ct_buf_put(struct ct_fail *f, struct ct_buf *b, const char *s, size_t n, size_t pos)
{
    if (!n)
        return;
    if (b->limit && (n > b->limit || b->n > b->limit - n))
        ct_fail_at(f, PL_STATUS_LIMIT, pos, "output exceeds the limit of %zu bytes", b->limit);
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p;
        if (b->is_heap) {
            p = realloc(b->p, cap);
            if (!p)
                ct_fail_at(f, PL_STATUS_NO_MEMORY, pos, "out of memory");
        } else {
            p = ct_alloc(f, cap);
            if (b->n)
                memcpy(p, b->p, b->n);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void ct_buf_putc(struct ct_fail *f, struct ct_buf *b, char c)
{
    ct_buf_put(f, b, &c, 1, CT_NO_POS);
}
