/*
 * arena.h -- a per-step bump allocator.
 *
 * Owns: struct pl_arena, one heap buffer of fixed capacity sized at start-up
 * from the engine's limits. Step code takes memory from it with
 * pl_arena_alloc and gives all of it back at once with pl_arena_reset at the
 * start of the next step, so the steady-state step never calls malloc.
 * Invariants: 0 <= used <= cap; peak is the largest `used` seen; every
 * returned pointer is aligned as asked and lies inside [base, base + cap).
 * Exhaustion is not fatal: pl_arena_alloc returns NULL and the caller reports
 * PL_STATUS_NO_MEMORY (a sizing bug, since capacity comes from the limits).
 */
#ifndef PL_UTIL_ARENA_H
#define PL_UTIL_ARENA_H

#include "util/err.h"

#include <stddef.h>

struct pl_arena {
    unsigned char *base; /* [cap] bytes, malloc'ed by pl_arena_init */
    size_t cap;          /* bytes */
    size_t used;         /* bytes handed out since the last reset (including padding) */
    size_t peak;         /* high-water mark of used */
};

/* Allocates the buffer (cap bytes, cap 0 allowed). PL_STATUS_NO_MEMORY on failure. */
pl_status pl_arena_init(struct pl_arena *a, size_t cap, struct pl_err *err);

/* Releases the buffer; the arena is zeroed. Safe on a zeroed or already finalized arena. */
void pl_arena_fini(struct pl_arena *a);

/*
 * Returns size bytes aligned to align (a power of two, <= 64), or NULL when
 * the arena cannot hold them. size 0 returns a valid non-NULL pointer.
 * The memory is not cleared.
 */
void *pl_arena_alloc(struct pl_arena *a, size_t size, size_t align);

/* Makes all memory handed out since the last reset available again. */
void pl_arena_reset(struct pl_arena *a);

/* Bytes needed to hold `count` objects of `size` bytes each after worst-case alignment padding. */
size_t pl_arena_size_for(size_t count, size_t size, size_t align);

#endif
