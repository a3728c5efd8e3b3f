/*
 * fuzz_safetensors.c -- libFuzzer target for the safetensors header parser.
 *
 * Input layout mirrors a file: [8-byte LE header length N][header][data].
 * N is clamped to the bytes present so that most inputs reach the JSON parser.
 * The data section is copied into its own allocation (so ASan sees its exact
 * bounds) and every accepted tensor is read at its first and last byte and
 * looked up by name. Nothing is written to disk.
 */
#include "model/safetensors.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | buf[i];
    size_t header_len = n < size - 8 ? (size_t)n : size - 8;
    const char *header = (const char *)buf + 8;
    size_t data_len = size - 8 - header_len;
    unsigned char *data = malloc(data_len ? data_len : 1);
    if (!data)
        return 0;
    if (data_len)
        memcpy(data, buf + 8 + header_len, data_len);

    struct pl_err err = {0};
    struct pl_safetensors *st = NULL;
    if (pl_safetensors_parse_header(header, header_len, data, data_len, "fuzz", &st, &err) ==
        PL_STATUS_OK) {
        volatile unsigned sum = 0;
        for (int i = 0; i < pl_safetensors_count(st); i++) {
            const struct pl_tensor_info *t = pl_safetensors_at(st, i);
            if (pl_safetensors_find(st, t->name) != t)
                abort();
            if (t->n_bytes) {
                const unsigned char *p = t->data;
                sum += p[0] + p[t->n_bytes - 1];
            }
        }
        (void)sum;
        pl_safetensors_free(st);
    }
    /* validation only, without data */
    pl_safetensors_parse_header(header, header_len, NULL, data_len, NULL, NULL, &err);
    free(data);
    return 0;
}
