/*
 * hash.h -- a strong 128-bit keyed hash and a 128-bit-key -> int32 hash map.
 *
 * Owns: struct pl_hasher (streaming SipHash-2-4 with 128-bit output, written
 * from the published algorithm description: four 64-bit lanes, two
 * compression rounds per 8-byte word, four finalization rounds per output
 * half) and struct pl_hmap128 (open addressing, linear probing,
 * backward-shift deletion, fixed capacity chosen at init).
 * The prefix cache keys KV blocks with these hashes; with 128 bits an
 * accidental collision among even 2^40 blocks has probability ~2^-49, and the
 * cache still compares token ids on a hit.
 * Invariants of the map: capacity is a power of two >= 2 * max_entries so a
 * probe always ends at an empty slot; no key appears twice; an empty slot has
 * value -1; every entry sits in the probe run that starts at its home slot.
 */
#ifndef PL_UTIL_HASH_H
#define PL_UTIL_HASH_H

#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pl_hash128 {
    uint64_t lo, hi;
};

static inline bool pl_hash128_eq(struct pl_hash128 a, struct pl_hash128 b)
{
    return a.lo == b.lo && a.hi == b.hi;
}

struct pl_hasher {
    uint64_t v0, v1, v2, v3; /* SipHash state */
    uint64_t tail;           /* bytes not yet compressed, little-endian */
    int n_tail;              /* bytes in tail (0..7) */
    uint64_t n_bytes;        /* total bytes absorbed (the length goes into the last word) */
};

/* Starts a hash with the 128-bit key (k0, k1). */
void pl_hasher_init(struct pl_hasher *h, uint64_t k0, uint64_t k1);
/* Absorbs n bytes. */
void pl_hasher_add(struct pl_hasher *h, const void *data, size_t n);
/* Absorbs integers as little-endian bytes (the hash does not depend on host byte order). */
void pl_hasher_add_u32(struct pl_hasher *h, uint32_t x);
void pl_hasher_add_u64(struct pl_hasher *h, uint64_t x);
/* Finishes and returns the 128-bit digest; h must be re-initialized before reuse. */
struct pl_hash128 pl_hasher_finish(struct pl_hasher *h);

/* One-shot SipHash-2-4-128 of n bytes under key (k0, k1). */
struct pl_hash128 pl_hash128_bytes(const void *data, size_t n, uint64_t k0, uint64_t k1);

struct pl_hmap128_slot {
    struct pl_hash128 key;
    int32_t value; /* -1: empty */
};

struct pl_hmap128 {
    struct pl_hmap128_slot *slots; /* [cap] */
    size_t cap;                    /* power of two */
    size_t n;                      /* entries */
    size_t max_entries;            /* the limit given at init */
};

/* Allocates a map for up to max_entries entries. PL_STATUS_NO_MEMORY on failure. */
pl_status pl_hmap128_init(struct pl_hmap128 *m, size_t max_entries, struct pl_err *err);
void pl_hmap128_fini(struct pl_hmap128 *m);

/* The value stored under key, or -1. */
int32_t pl_hmap128_get(const struct pl_hmap128 *m, struct pl_hash128 key);

/*
 * Stores key -> value (value >= 0). Returns false, changing nothing, when the
 * key is already present or the map holds max_entries entries.
 */
bool pl_hmap128_insert(struct pl_hmap128 *m, struct pl_hash128 key, int32_t value);

/* Removes key; returns false when it was absent. */
bool pl_hmap128_remove(struct pl_hmap128 *m, struct pl_hash128 key);

#endif
