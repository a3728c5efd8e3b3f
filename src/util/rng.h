/*
 * rng.h -- a small seedable pseudo-random generator (xoshiro256**).
 *
 * Owns: struct pl_rng, 32 bytes of state that a request (or the engine)
 * embeds by value. The sequence of values is a pure function of the seed:
 * nothing global, nothing time-dependent, so a seeded request reproduces its
 * tokens whatever else runs beside it.
 * Invariant: the state is never all zero (seeding goes through splitmix64,
 * which cannot produce four zero words from one 64-bit seed).
 */
#ifndef PL_UTIL_RNG_H
#define PL_UTIL_RNG_H

#include <stdint.h>

struct pl_rng {
    uint64_t s[4]; /* xoshiro256** state */
};

/* Seeds the generator; every seed (0 included) gives a distinct valid state. */
void pl_rng_seed(struct pl_rng *r, uint64_t seed);

/* The next 64 random bits. */
uint64_t pl_rng_next(struct pl_rng *r);

/* A uniform double in [0, 1) with 53 random bits. */
double pl_rng_uniform(struct pl_rng *r);

#endif
