/* test_sha256.c -- SHA-256 against the FIPS 180-2 / NIST example vectors. */
#include "test.h"
#include "util/sha256.h"

#include <stdint.h>

static void hex_of(const char *msg, size_t len, char hex[PL_SHA256_HEX_LEN])
{
    uint8_t d[PL_SHA256_DIGEST_LEN];
    pl_sha256(msg, len, d);
    pl_sha256_hex(d, hex);
}

static void test_standard_vectors(void)
{
    char hex[PL_SHA256_HEX_LEN];
    hex_of("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    hex_of("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(m896, strlen(m896), hex);
    CHECK(!strcmp(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"));
}

static void test_million_a(void)
{
    /* fed in uneven pieces so every buffering path of update() runs */
    struct pl_sha256 s;
    pl_sha256_init(&s);
    char chunk[997];
    memset(chunk, 'a', sizeof(chunk));
    size_t left = 1000000;
    size_t step = 1;
    while (left) {
        size_t n = step < left ? step : left;
        if (n > sizeof(chunk))
            n = sizeof(chunk);
        pl_sha256_update(&s, chunk, n);
        left -= n;
        step = step * 3 + 1;
        if (step > sizeof(chunk))
            step = 1;
    }
    uint8_t d[PL_SHA256_DIGEST_LEN];
    char hex[PL_SHA256_HEX_LEN];
    pl_sha256_final(&s, d);
    pl_sha256_hex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

static void test_padding_boundaries(void)
{
    /* lengths around the 55/56/64-byte padding edges: one-shot equals byte-by-byte */
    char msg[130];
    for (int i = 0; i < 130; i++)
        msg[i] = (char)('A' + i % 26);
    for (size_t len = 50; len <= 130; len++) {
        uint8_t a[PL_SHA256_DIGEST_LEN], b[PL_SHA256_DIGEST_LEN];
        pl_sha256(msg, len, a);
        struct pl_sha256 s;
        pl_sha256_init(&s);
        for (size_t i = 0; i < len; i++)
            pl_sha256_update(&s, msg + i, 1);
        pl_sha256_final(&s, b);
        CHECKF(!memcmp(a, b, sizeof(a)), "len %zu", len);
    }
}

static void test_file(void)
{
    char path[] = "/tmp/pl_sha256_XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    REQUIRE(f);
    fputs("abc", f);
    fclose(f);
    char hex[PL_SHA256_HEX_LEN];
    struct pl_err err;
    CHECK(pl_sha256_file_hex(path, hex, &err) == PL_STATUS_OK);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    remove(path);
    CHECK(pl_sha256_file_hex(path, hex, &err) == PL_STATUS_IO);
    CHECK(strstr(err.msg, path) != NULL);
}

int main(void)
{
    PL_RUN(test_standard_vectors);
    PL_RUN(test_million_a);
    PL_RUN(test_padding_boundaries);
    PL_RUN(test_file);
    return pl_test_summary();
}
