/*
 * fuzz_config.c -- libFuzzer target for config.json + generation_config.json parsing.
 *
 * The input is config.json text, optionally followed by a NUL byte and
 * generation_config.json text. A successful parse must satisfy the invariants
 * config.h promises; a violation aborts so that the fuzzer reports it.
 */
#include "model/config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

static struct pl_model_config cfg; /* large: keep off the stack */

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    const char *text = (const char *)buf;
    const char *nul = memchr(text, '\0', size);
    size_t cfg_len = nul ? (size_t)(nul - text) : size;
    const char *gen = nul ? nul + 1 : NULL;
    size_t gen_len = nul ? size - cfg_len - 1 : 0;

    struct pl_err err = {0};
    if (pl_model_config_parse(text, cfg_len, gen, gen_len, &cfg, &err) != PL_STATUS_OK)
        return 0;
    if (cfg.hidden_size <= 0 || cfg.intermediate_size <= 0 || cfg.n_layers <= 0 ||
        cfg.n_layers > PL_MAX_LAYERS || cfg.n_heads <= 0 || cfg.n_kv_heads <= 0 ||
        cfg.n_heads % cfg.n_kv_heads != 0 || cfg.head_dim <= 0 || cfg.head_dim % 2 != 0 ||
        cfg.vocab_size <= 0 || cfg.n_eos_token_ids < 0 || cfg.n_eos_token_ids > PL_MAX_EOS_IDS ||
        cfg.gen.n_eos_token_ids < 0 || cfg.gen.n_eos_token_ids > PL_MAX_EOS_IDS)
        abort();
    for (int l = 0; l < cfg.n_layers; l++)
        if (cfg.layer_sliding_window[l] < 0 || (cfg.layer_moe[l] && cfg.n_experts <= 0))
            abort();
    if (!cfg.arch || cfg.n_experts < 0 ||
        (cfg.n_experts > 0 && (cfg.n_experts_per_tok < 1 || cfg.n_experts_per_tok > cfg.n_experts)))
        abort();
    if (cfg.rope.n_factors < 0 || cfg.rope.n_factors > PL_MAX_ROPE_PAIRS ||
        (cfg.rope.type == PL_ROPE_LONGROPE && cfg.rope.n_factors * 2 > cfg.head_dim))
        abort();
    return 0;
}
