/*
 * fuzz_generation_override.c -- libFuzzer target for --override-generation-config /
 * OVERRIDE_GENERATION_CONFIG text (pl_generation_config_parse_override), which the
 * worker reads from its environment.
 *
 * A successful parse must hold only values the parser promises (config.h), and
 * applying it to sampling defaults must keep them within what validation accepts
 * for the fields it sets; a violation aborts so that the fuzzer reports it.
 */
#include "engine/sampling_params.h"
#include "model/config.h"
#include "pagellm.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *buf, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, buf, size);
    text[size] = '\0';
    struct pl_generation_config g;
    struct pl_err err;
    pl_status st = pl_generation_config_parse_override(text, "x", &g, &err);
    free(text);
    if (st != PL_STATUS_OK) {
        if (st != PL_STATUS_INVALID_ARGUMENT || !err.msg[0])
            abort();
        return 0;
    }
    if ((g.has_temperature && !(g.temperature >= 0)) ||
        (g.has_top_p && !(g.top_p > 0 && g.top_p <= 1)) ||
        (g.has_min_p && !(g.min_p >= 0 && g.min_p <= 1)) ||
        (g.has_repetition_penalty && !(g.repetition_penalty > 0)) ||
        (g.has_top_k && g.top_k < -1) || (g.has_max_new_tokens && g.max_new_tokens < 1))
        abort();
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    pl_sampling_params_apply_generation_override(&p, &g);
    (void)pl_sampling_params_validate(&p, 0, &err); /* may refuse (temperature > 2): no crash */
    return 0;
}
