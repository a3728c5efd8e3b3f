/*
 * utf8.h -- UTF-8 encoding shared by the tokenizer, the chat templates and the servers.
 *
 * Owns: pl_utf8_encode, the one encoder of a code point. The caller guarantees
 * cp <= 0x10FFFF (callers validate or substitute U+FFFD first).
 */
#ifndef PL_UTIL_UTF8_H
#define PL_UTIL_UTF8_H

#include <stdint.h>

/* Writes cp as 1-4 bytes into out and returns the byte count. */
static inline int pl_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

#endif
