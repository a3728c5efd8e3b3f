/*
 * arena.c -- a per-step bump allocator (see arena.h for the contract).
 *
 * Allocation rounds `used` up to the requested alignment relative to the
 * buffer's address, so alignment holds for any base malloc returns.
 */
#include "util/arena.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

pl_status pl_arena_init(struct pl_arena *a, size_t cap, struct pl_err *err)
{
    memset(a, 0, sizeof(*a));
    /* one extra byte keeps base non-NULL for cap 0 so zero-size allocations have an address */
    a->base = malloc(cap + 1);
    if (!a->base)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "arena: cannot allocate %zu bytes", cap);
    a->cap = cap;
    return PL_STATUS_OK;
}

void pl_arena_fini(struct pl_arena *a)
{
    if (!a)
        return;
    free(a->base);
    memset(a, 0, sizeof(*a));
}

void *pl_arena_alloc(struct pl_arena *a, size_t size, size_t align)
{
    assert(align > 0 && align <= 64 && (align & (align - 1)) == 0);
    if (!a->base)
        return NULL;
    uintptr_t p = (uintptr_t)a->base + a->used;
    size_t pad = (size_t)((align - (p & (align - 1))) & (align - 1));
    if (pad > a->cap - a->used || size > a->cap - a->used - pad)
        return NULL;
    void *out = a->base + a->used + pad;
    a->used += pad + size;
    if (a->used > a->peak)
        a->peak = a->used;
    return out;
}

void pl_arena_reset(struct pl_arena *a)
{
    a->used = 0;
}

size_t pl_arena_size_for(size_t count, size_t size, size_t align)
{
    return count * size + align - 1;
}
