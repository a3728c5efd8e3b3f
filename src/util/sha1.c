/*
 * sha1.c -- SHA-1 as specified in FIPS 180-4 section 6.1 (see sha1.h).
 *
 * 512-bit blocks of sixteen big-endian words, expanded to 80 by a rotate-by-one
 * of the xor of four earlier words, mixed into five chaining words by 80
 * rounds in four groups of twenty (Ch, Parity, Maj, Parity). Padding as SHA-256.
 */
#include "util/sha1.h"

#include <string.h>

static inline uint32_t rotl(uint32_t x, unsigned n) { return (x << n) | (x >> (32 - n)); }

static void compress(uint32_t h[5], const uint8_t block[64])
{
    uint32_t w[80];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)block[4 * t] << 24 | (uint32_t)block[4 * t + 1] << 16 |
               (uint32_t)block[4 * t + 2] << 8 | (uint32_t)block[4 * t + 3];
    for (int t = 16; t < 80; t++)
        w[t] = rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int t = 0; t < 80; t++) {
        uint32_t f, k;
        if (t < 20) {
            f = (b & c) | (~b & d);
            k = 0x5a827999u;
        } else if (t < 40) {
            f = b ^ c ^ d;
            k = 0x6ed9eba1u;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8f1bbcdcu;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6u;
        }
        uint32_t tmp = rotl(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rotl(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void pl_sha1_init(struct pl_sha1 *s)
{
    static const uint32_t iv[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u,
                                   0xc3d2e1f0u};
    memcpy(s->h, iv, sizeof(iv));
    s->n_buf = 0;
    s->n_bytes = 0;
}

void pl_sha1_update(struct pl_sha1 *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    s->n_bytes += len;
    if (s->n_buf) {
        size_t take = 64 - s->n_buf < len ? 64 - s->n_buf : len;
        memcpy(s->buf + s->n_buf, p, take);
        s->n_buf += take;
        p += take;
        len -= take;
        if (s->n_buf < 64)
            return;
        compress(s->h, s->buf);
        s->n_buf = 0;
    }
    for (; len >= 64; p += 64, len -= 64)
        compress(s->h, p);
    memcpy(s->buf, p, len);
    s->n_buf = len;
}

void pl_sha1_final(struct pl_sha1 *s, uint8_t out[PL_SHA1_DIGEST_LEN])
{
    uint64_t bits = s->n_bytes * 8;
    s->buf[s->n_buf++] = 0x80;
    if (s->n_buf > 56) {
        memset(s->buf + s->n_buf, 0, 64 - s->n_buf);
        compress(s->h, s->buf);
        s->n_buf = 0;
    }
    memset(s->buf + s->n_buf, 0, 56 - s->n_buf);
    for (int i = 0; i < 8; i++)
        s->buf[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    compress(s->h, s->buf);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
}

void pl_sha1_hex(const uint8_t digest[PL_SHA1_DIGEST_LEN], char hex[PL_SHA1_HEX_LEN])
{
    static const char d[] = "0123456789abcdef";
    for (int i = 0; i < PL_SHA1_DIGEST_LEN; i++) {
        hex[2 * i] = d[digest[i] >> 4];
        hex[2 * i + 1] = d[digest[i] & 15];
    }
    hex[40] = '\0';
}
