/*
 * hash.c -- SipHash-2-4 (128-bit output) and an open-addressing map keyed by
 * its digests. See hash.h for the contracts.
 */
#include "util/hash.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static inline uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static inline void sip_round(struct pl_hasher *h)
{
    h->v0 += h->v1;
    h->v1 = rotl64(h->v1, 13);
    h->v1 ^= h->v0;
    h->v0 = rotl64(h->v0, 32);
    h->v2 += h->v3;
    h->v3 = rotl64(h->v3, 16);
    h->v3 ^= h->v2;
    h->v0 += h->v3;
    h->v3 = rotl64(h->v3, 21);
    h->v3 ^= h->v0;
    h->v2 += h->v1;
    h->v1 = rotl64(h->v1, 17);
    h->v1 ^= h->v2;
    h->v2 = rotl64(h->v2, 32);
}

static inline void sip_compress(struct pl_hasher *h, uint64_t m)
{
    h->v3 ^= m;
    sip_round(h);
    sip_round(h);
    h->v0 ^= m;
}

void pl_hasher_init(struct pl_hasher *h, uint64_t k0, uint64_t k1)
{
    /* the initialization constants spell "somepseudorandomlygeneratedbytes" */
    h->v0 = k0 ^ 0x736f6d6570736575ULL;
    h->v1 = k1 ^ 0x646f72616e646f6dULL ^ 0xee; /* 0xee selects the 128-bit output variant */
    h->v2 = k0 ^ 0x6c7967656e657261ULL;
    h->v3 = k1 ^ 0x7465646279746573ULL;
    h->tail = 0;
    h->n_tail = 0;
    h->n_bytes = 0;
}

void pl_hasher_add(struct pl_hasher *h, const void *data, size_t n)
{
    const unsigned char *p = data;
    h->n_bytes += n;
    for (size_t i = 0; i < n; i++) {
        h->tail |= (uint64_t)p[i] << (8 * h->n_tail);
        if (++h->n_tail == 8) {
            sip_compress(h, h->tail);
            h->tail = 0;
            h->n_tail = 0;
        }
    }
}

void pl_hasher_add_u32(struct pl_hasher *h, uint32_t x)
{
    unsigned char b[4] = {(unsigned char)x, (unsigned char)(x >> 8), (unsigned char)(x >> 16),
                          (unsigned char)(x >> 24)};
    pl_hasher_add(h, b, 4);
}

void pl_hasher_add_u64(struct pl_hasher *h, uint64_t x)
{
    pl_hasher_add_u32(h, (uint32_t)x);
    pl_hasher_add_u32(h, (uint32_t)(x >> 32));
}

struct pl_hash128 pl_hasher_finish(struct pl_hasher *h)
{
    uint64_t last = h->tail | ((h->n_bytes & 0xff) << 56);
    sip_compress(h, last);
    struct pl_hash128 out;
    h->v2 ^= 0xee;
    for (int i = 0; i < 4; i++)
        sip_round(h);
    out.lo = h->v0 ^ h->v1 ^ h->v2 ^ h->v3;
    h->v1 ^= 0xdd;
    for (int i = 0; i < 4; i++)
        sip_round(h);
    out.hi = h->v0 ^ h->v1 ^ h->v2 ^ h->v3;
    return out;
}

struct pl_hash128 pl_hash128_bytes(const void *data, size_t n, uint64_t k0, uint64_t k1)
{
    struct pl_hasher h;
    pl_hasher_init(&h, k0, k1);
    pl_hasher_add(&h, data, n);
    return pl_hasher_finish(&h);
}

pl_status pl_hmap128_init(struct pl_hmap128 *m, size_t max_entries, struct pl_err *err)
{
    memset(m, 0, sizeof(*m));
    size_t cap = 8;
    while (cap < 2 * max_entries)
        cap *= 2;
    m->slots = malloc(cap * sizeof(*m->slots));
    if (!m->slots)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "hash map: cannot allocate %zu slots", cap);
    for (size_t i = 0; i < cap; i++)
        m->slots[i].value = -1;
    m->cap = cap;
    m->max_entries = max_entries;
    return PL_STATUS_OK;
}

void pl_hmap128_fini(struct pl_hmap128 *m)
{
    if (!m)
        return;
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

/* The digest is uniformly distributed already, so its low bits index directly. */
static inline size_t home_slot(const struct pl_hmap128 *m, struct pl_hash128 key)
{
    return (size_t)key.lo & (m->cap - 1);
}

int32_t pl_hmap128_get(const struct pl_hmap128 *m, struct pl_hash128 key)
{
    for (size_t i = home_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
        const struct pl_hmap128_slot *s = &m->slots[i];
        if (s->value < 0)
            return -1;
        if (pl_hash128_eq(s->key, key))
            return s->value;
    }
}

bool pl_hmap128_insert(struct pl_hmap128 *m, struct pl_hash128 key, int32_t value)
{
    assert(value >= 0);
    if (m->n >= m->max_entries)
        return false;
    for (size_t i = home_slot(m, key);; i = (i + 1) & (m->cap - 1)) {
        struct pl_hmap128_slot *s = &m->slots[i];
        if (s->value < 0) {
            s->key = key;
            s->value = value;
            m->n++;
            return true;
        }
        if (pl_hash128_eq(s->key, key))
            return false;
    }
}

bool pl_hmap128_remove(struct pl_hmap128 *m, struct pl_hash128 key)
{
    size_t mask = m->cap - 1;
    size_t i = home_slot(m, key);
    for (;; i = (i + 1) & mask) {
        if (m->slots[i].value < 0)
            return false;
        if (pl_hash128_eq(m->slots[i].key, key))
            break;
    }
    /*
     * Backward-shift deletion: walk the run after the hole and move back every
     * entry whose home slot does not lie cyclically in (hole, j], so lookups
     * never meet a premature empty slot and no tombstones accumulate.
     */
    size_t hole = i;
    for (size_t j = (hole + 1) & mask; m->slots[j].value >= 0; j = (j + 1) & mask) {
        size_t home = home_slot(m, m->slots[j].key);
        bool home_in_range = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
        if (!home_in_range) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].value = -1;
    m->n--;
    return true;
}
