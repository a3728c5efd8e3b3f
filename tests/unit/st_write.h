/*
 * st_write.h -- test-only helpers: temporary directories and a safetensors
 * writer that follows the format's published description
 * (https://github.com/huggingface/safetensors#format): an 8-byte little-endian
 * header length N, N bytes of JSON, then the data section; data_offsets are
 * relative to the data section. Like the reference writer, the header is padded
 * with spaces to a multiple of 8 bytes so that the data section is aligned.
 *
 * It deliberately shares no code with src/model/safetensors.c.
 */
#ifndef PL_TEST_ST_WRITE_H
#define PL_TEST_ST_WRITE_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* mkdtemp, nftw */
#endif
#include <ftw.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- temporary directories ---- */

static inline char *tw_mkdtemp(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/pl_test_XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static inline int tw_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything under it, then frees the string. */
static inline void tw_rmdir(char *dir)
{
    if (!dir)
        return;
    nftw(dir, tw_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/* dir/name in a static rotating buffer (4 slots). */
static inline const char *tw_path(const char *dir, const char *name)
{
    static char bufs[4][1024];
    static int next;
    char *b = bufs[next++ & 3];
    snprintf(b, sizeof(bufs[0]), "%s/%s", dir, name);
    return b;
}

static inline int tw_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = len ? fwrite(data, 1, len, f) : 0;
    int rc = fclose(f);
    return (w == len && rc == 0) ? 0 : -1;
}

static inline int tw_write_text(const char *path, const char *text)
{
    return tw_write_file(path, text, strlen(text));
}

/* ---- safetensors ---- */

/* Writes [le64 declared_len][header][data]. Pass declared_len = UINT64_MAX
 * to use the header's real (space-padded to 8) length. */
static inline int tw_write_raw(const char *path, const char *header, uint64_t declared_len,
                               const void *data, size_t data_len)
{
    size_t hl = strlen(header);
    size_t padded = (hl + 7) / 8 * 8;
    uint64_t n = declared_len == UINT64_MAX ? padded : declared_len;
    size_t total = 8 + padded + data_len;
    unsigned char *buf = malloc(total);
    if (!buf)
        return -1;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(n >> (8 * i));
    memcpy(buf + 8, header, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    if (data_len)
        memcpy(buf + 8 + padded, data, data_len);
    int rc = tw_write_file(path, buf, total);
    free(buf);
    return rc;
}

struct tw_tensor {
    const char *name;
    const char *dtype;   /* "F32", "F16", "BF16", ... */
    int n_dims;
    int64_t shape[8];
    const void *data;    /* n_bytes bytes */
    size_t n_bytes;
};

/* Writes a well-formed file: tensors laid out back to back in order. */
static inline int tw_write_tensors(const char *path, const struct tw_tensor *t, int n)
{
    size_t cap = 256, len = 0, data_len = 0;
    for (int i = 0; i < n; i++) {
        cap += strlen(t[i].name) + 200;
        data_len += t[i].n_bytes;
    }
    char *h = malloc(cap);
    unsigned char *data = malloc(data_len ? data_len : 1);
    if (!h || !data) {
        free(h);
        free(data);
        return -1;
    }
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].n_dims; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "",
                                    (long long)t[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%zu,%zu]}", off,
                                off + t[i].n_bytes);
        if (t[i].n_bytes)
            memcpy(data + off, t[i].data, t[i].n_bytes);
        off += t[i].n_bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    int rc = tw_write_raw(path, h, UINT64_MAX, data, data_len);
    free(h);
    free(data);
    return rc;
}

#endif
