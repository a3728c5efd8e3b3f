/* test_util.c -- status names, error messages and dtype conversions. */
#include "test.h"
#include "util/dtype.h"
#include "util/err.h"

#include <stdint.h>

static void test_err_messages(void)
{
    struct pl_err e;
    pl_err_clear(&e);
    CHECK(e.status == PL_STATUS_OK);
    pl_status s = pl_err_set(&e, PL_STATUS_FORMAT, "tensor %s: bad", "x");
    CHECK(s == PL_STATUS_FORMAT);
    CHECK(!strcmp(e.msg, "tensor x: bad"));
    pl_err_prefix(&e, "file %s", "m.safetensors");
    CHECK(!strcmp(e.msg, "file m.safetensors: tensor x: bad"));
    CHECK(!strcmp(pl_status_str(PL_STATUS_UNSUPPORTED), "unsupported"));
    CHECK(pl_err_set(NULL, PL_STATUS_IO, "ignored") == PL_STATUS_IO);
}

static void test_bf16_round_trip(void)
{
    /* every bf16 bit pattern that is not NaN survives bf16 -> f32 -> bf16 */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pl_bf16_to_f32((uint16_t)h);
        if (f != f)
            continue;
        CHECKF(pl_f32_to_bf16(f) == h, "bf16 %04x", h);
    }
    /* round to nearest even: 1 + 2^-8 is halfway between 1 and 1+2^-7 -> 1 */
    CHECK(pl_f32_to_bf16(1.0f + 1.0f / 256.0f) == pl_f32_to_bf16(1.0f));
    CHECK(pl_bf16_to_f32(pl_f32_to_bf16(1.0f + 3.0f / 256.0f)) == 1.0f + 4.0f / 256.0f);
}

static void test_f16_round_trip(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = pl_f16_to_f32((uint16_t)h);
        if (f != f)
            continue;
        CHECKF(pl_f32_to_f16(f) == h, "f16 %04x -> %g -> %04x", h, f, pl_f32_to_f16(f));
    }
    CHECK(pl_f16_to_f32(0x3c00) == 1.0f);
    CHECK(pl_f16_to_f32(0xc000) == -2.0f);
    CHECK(pl_f32_to_f16(65520.0f) == 0x7c00); /* overflow rounds to inf */
}

/* vLLM's --dtype spellings */
static void test_dtype_names(void)
{
    enum pl_dtype t = PL_DTYPE_I32;
    CHECK(pl_dtype_parse_torch("bfloat16", &t) && t == PL_DTYPE_BF16);
    CHECK(pl_dtype_parse_torch("float16", &t) && t == PL_DTYPE_F16);
    CHECK(pl_dtype_parse_torch("half", &t) && t == PL_DTYPE_F16);
    CHECK(pl_dtype_parse_torch("float32", &t) && t == PL_DTYPE_F32);
    CHECK(pl_dtype_parse_torch("float", &t) && t == PL_DTYPE_F32);
    CHECK(!pl_dtype_parse_torch("auto", &t));
    CHECK(!pl_dtype_parse_torch("fp8", &t));
    CHECK(!pl_dtype_parse_torch("", &t));
    CHECK(!pl_dtype_parse_torch(NULL, &t));
    CHECK(!strcmp(pl_dtype_torch_name(PL_DTYPE_BF16), "bfloat16"));
}

/* Whole-buffer conversion: widening exact, narrowing to nearest even, as torch. */
static void test_dtype_convert(void)
{
    /* bf16 -> f32 -> bf16 is the identity on every finite bf16 */
    uint16_t b[4] = {0x3f80, 0xc049, 0x0001, 0x7f7f}; /* 1, -3.140625, tiny, max */
    float f[4];
    uint16_t back[4];
    REQUIRE(pl_dtype_convert(f, PL_DTYPE_F32, b, PL_DTYPE_BF16, 4));
    CHECK(f[0] == 1.0f && f[1] == -3.140625f);
    REQUIRE(pl_dtype_convert(back, PL_DTYPE_BF16, f, PL_DTYPE_F32, 4));
    CHECK(memcmp(b, back, sizeof(b)) == 0);
    /* f32 -> bf16 ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7 */
    float ties[2] = {1.0f + 1.0f / 256.0f, 1.0f + 3.0f / 256.0f};
    uint16_t r[2];
    REQUIRE(pl_dtype_convert(r, PL_DTYPE_BF16, ties, PL_DTYPE_F32, 2));
    CHECK(r[0] == 0x3f80); /* down to the even 1.0 */
    CHECK(r[1] == 0x3f82); /* up to the even 1 + 2^-6 */
    /* bf16 -> f16: through f32, rounded once; out of range -> inf */
    uint16_t big = 0x4780; /* 65536 in bf16: above f16's 65504 */
    uint16_t h;
    REQUIRE(pl_dtype_convert(&h, PL_DTYPE_F16, &big, PL_DTYPE_BF16, 1));
    CHECK(h == 0x7c00);
    uint16_t one = 0x3f80;
    REQUIRE(pl_dtype_convert(&h, PL_DTYPE_F16, &one, PL_DTYPE_BF16, 1));
    CHECK(h == 0x3c00);
    /* NaN stays NaN */
    float nan = NAN;
    REQUIRE(pl_dtype_convert(&h, PL_DTYPE_BF16, &nan, PL_DTYPE_F32, 1));
    CHECK((h & 0x7f80) == 0x7f80 && (h & 0x7f) != 0);
    /* same dtype: a copy; integer dtypes: refused */
    float g[4];
    REQUIRE(pl_dtype_convert(g, PL_DTYPE_F32, f, PL_DTYPE_F32, 4));
    CHECK(memcmp(g, f, sizeof(f)) == 0);
    int32_t ints[1] = {3};
    CHECK(!pl_dtype_convert(g, PL_DTYPE_F32, ints, PL_DTYPE_I32, 1));
}

int main(void)
{
    PL_RUN(test_err_messages);
    PL_RUN(test_bf16_round_trip);
    PL_RUN(test_f16_round_trip);
    PL_RUN(test_dtype_names);
    PL_RUN(test_dtype_convert);
    return pl_test_summary();
}
