/*
 * rng.c -- xoshiro256** seeded through splitmix64 (see rng.h).
 *
 * Both algorithms are public-domain designs by Blackman and Vigna; this is
 * our own rendering of the published recurrences. splitmix64 expands one
 * 64-bit seed into the 256-bit state so that nearby seeds (0, 1, 2, ...)
 * give unrelated streams.
 */
#include "util/rng.h"

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void pl_rng_seed(struct pl_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

uint64_t pl_rng_next(struct pl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double pl_rng_uniform(struct pl_rng *r)
{
    /* the top 53 bits as a multiple of 2^-53: exactly representable, < 1 */
    return (double)(pl_rng_next(r) >> 11) * 0x1.0p-53;
}
