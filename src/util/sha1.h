/*
 * sha1.h -- SHA-1 (FIPS 180-4), incremental, for git object ids.
 *
 * Owns: struct pl_sha1, a streaming hash state. Used only to check files the
 * Hugging Face Hub serves outside Git LFS: their ETag is the git blob id,
 * sha1("blob <size>\0" + content). Not for anything security-sensitive on its
 * own (LFS files are checked with SHA-256).
 * Invariant: buf holds n_buf < 64 pending bytes; n_bytes counts all input.
 */
#ifndef PL_UTIL_SHA1_H
#define PL_UTIL_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define PL_SHA1_DIGEST_LEN 20
#define PL_SHA1_HEX_LEN 41 /* 40 hex digits + NUL */

struct pl_sha1 {
    uint32_t h[5];
    uint8_t buf[64];
    size_t n_buf;
    uint64_t n_bytes;
};

void pl_sha1_init(struct pl_sha1 *s);
void pl_sha1_update(struct pl_sha1 *s, const void *data, size_t len);
/* Writes the 20-byte digest; s must be re-initialised before reuse. */
void pl_sha1_final(struct pl_sha1 *s, uint8_t out[PL_SHA1_DIGEST_LEN]);
/* Lower-case hex of a digest into hex[PL_SHA1_HEX_LEN]. */
void pl_sha1_hex(const uint8_t digest[PL_SHA1_DIGEST_LEN], char hex[PL_SHA1_HEX_LEN]);

#endif
