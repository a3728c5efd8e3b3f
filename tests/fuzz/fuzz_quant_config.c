/*
 * fuzz_quant_config.c -- libFuzzer target for config.json's quantization_config
 * (pl_quant_config_parse), the --quantization values applied to it and the module
 * targeting (ignore lists, "re:" patterns).
 *
 * A successful parse must hold only what quant.h promises: a method, bits 4 or 8,
 * a group size the loader implements, bounded lists of NUL-terminated names. A
 * refusal must carry a message. A violation aborts so that the fuzzer reports it.
 */
#include "model/quant.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

static void check(const struct pl_quant_config *q)
{
    if (q->method == PL_QUANT_NONE || (q->bits != 4 && q->bits != 8))
        abort();
    if (q->group_size != -1 && q->group_size != 32 && q->group_size != 64 &&
        q->group_size != 128)
        abort();
    if (q->n_ignore < 0 || q->n_ignore > PL_QUANT_MAX_IGNORE || q->n_targets < 0 ||
        q->n_targets > 8)
        abort();
    for (int i = 0; i < q->n_ignore; i++)
        if (!memchr(q->ignore[i], '\0', PL_QUANT_NAME_LEN))
            abort();
    if (q->weight_strategy == PL_QSTRAT_BLOCK && (q->block_n < 1 || q->block_k < 1))
        abort();
    if (q->method == PL_QUANT_AWQ && (q->bits != 4 || q->group_size == -1))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    struct pl_quant_config q;
    struct pl_err err = {0};
    pl_status st = pl_quant_config_parse_text((const char *)buf, size, &q, &err);
    if (st != PL_STATUS_OK) {
        if (!err.msg[0] || q.method != PL_QUANT_NONE)
            abort();
        return 0;
    }
    check(&q);
    char text[256];
    pl_quant_describe(&q, text, sizeof(text));
    if (!memchr(text, '\0', sizeof(text)))
        abort();
    static const char *const modules[] = {"lm_head", "model.layers.0.self_attn.q_proj",
                                          "model.layers.31.mlp.down_proj", "model.layers.1.mlp.gate",
                                          ""};
    for (size_t i = 0; i < sizeof(modules) / sizeof(modules[0]); i++)
        (void)pl_quant_module_is_quantized(&q, modules[i]);
    static const char *const flags[] = {"awq", "gptq_marlin", "compressed-tensors", "fp8",
                                        "none", "bogus"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        struct pl_quant_config c = q;
        st = pl_quant_config_apply_flag(&c, flags[i], &err);
        if (st == PL_STATUS_OK)
            check(&c);
        else if (st != PL_STATUS_INVALID_ARGUMENT)
            abort();
    }
    return 0;
}
