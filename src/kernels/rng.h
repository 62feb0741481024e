/* Deterministic random numbers (splitmix64 seeding, xoshiro-style mixing).
 * The whole state is one uint64, so it is trivial to checkpoint. Streams are
 * derived from (seed, purpose, index) so that a resumed run draws the same
 * numbers as an uninterrupted one without saving any generator state. */
#ifndef PN_RNG_H
#define PN_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct { uint64_t s; } pn_rng;

static inline uint64_t pn_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
/* A generator for stream (seed, a, b): e.g. (seed, PURPOSE_SHUFFLE, epoch). */
static inline pn_rng pn_rng_stream(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = seed;
    uint64_t h = pn_splitmix64(&x);
    x = h ^ (a * 0xD6E8FEB86659FD93ULL);
    h = pn_splitmix64(&x);
    x = h ^ (b * 0xA0761D6478BD642FULL);
    pn_rng r = { pn_splitmix64(&x) };
    return r;
}
static inline uint64_t pn_rng_u64(pn_rng *r) { return pn_splitmix64(&r->s); }
/* Uniform in [0, 1). */
static inline double pn_rng_uniform(pn_rng *r) { return (pn_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }
/* Uniform integer in [0, n), n > 0 (tiny modulo bias is irrelevant here). */
static inline uint32_t pn_rng_below(pn_rng *r, uint32_t n) { return (uint32_t)((pn_rng_u64(r) >> 32) % n); }
/* Standard normal (Box-Muller, one value per call). */
static inline double pn_rng_normal(pn_rng *r)
{
    double u1 = pn_rng_uniform(r), u2 = pn_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

enum { PN_STREAM_INIT = 1, PN_STREAM_SHUFFLE = 2, PN_STREAM_AUGMENT = 3, PN_STREAM_DATA = 4 };

#endif
