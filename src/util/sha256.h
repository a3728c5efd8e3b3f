/*
 * sha256.h -- SHA-256 (FIPS 180-4), incremental and one-shot.
 *
 * Owns: struct pl_sha256, a streaming hash state. Used to fingerprint the
 * generated tiny models (the golden fixtures record the digest of every file
 * so a drifting generator is caught before any token is compared).
 * Invariant: buf holds n_buf < 64 pending bytes; n_bytes counts all input.
 */
#ifndef PL_UTIL_SHA256_H
#define PL_UTIL_SHA256_H

#include "util/err.h"

#include <stddef.h>
#include <stdint.h>

#define PL_SHA256_DIGEST_LEN 32
#define PL_SHA256_HEX_LEN 65 /* 64 hex digits + NUL */

struct pl_sha256 {
    uint32_t h[8];      /* chaining state */
    uint8_t buf[64];    /* pending partial block */
    size_t n_buf;       /* bytes in buf */
    uint64_t n_bytes;   /* total message length so far */
};

void pl_sha256_init(struct pl_sha256 *s);
void pl_sha256_update(struct pl_sha256 *s, const void *data, size_t len);
/* Writes the 32-byte digest; s must be re-initialised before reuse. */
void pl_sha256_final(struct pl_sha256 *s, uint8_t out[PL_SHA256_DIGEST_LEN]);

/* One-shot digest of a buffer. */
void pl_sha256(const void *data, size_t len, uint8_t out[PL_SHA256_DIGEST_LEN]);

/* Lower-case hex of a digest into hex[PL_SHA256_HEX_LEN]. */
void pl_sha256_hex(const uint8_t digest[PL_SHA256_DIGEST_LEN], char hex[PL_SHA256_HEX_LEN]);

/* Hex digest of a whole file; PL_STATUS_IO when it cannot be read. */
pl_status pl_sha256_file_hex(const char *path, char hex[PL_SHA256_HEX_LEN], struct pl_err *err);

#endif
