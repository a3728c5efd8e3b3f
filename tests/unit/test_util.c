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

int main(void)
{
    PL_RUN(test_err_messages);
    PL_RUN(test_bf16_round_trip);
    PL_RUN(test_f16_round_trip);
    return pl_test_summary();
}
