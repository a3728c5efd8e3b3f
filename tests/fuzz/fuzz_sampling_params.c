/*
 * fuzz_sampling_params.c -- request bodies through pl_sampling_params_from_json,
 * then validation and a deep copy: no crash, no leak, and the invariants that
 * a successful parse owns its arrays and that an error leaves the input as is.
 */
#include "engine/sampling_params.h"
#include "pagellm.h"
#include "util/err.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *root = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (!root)
        return 0;
    static const char *const extra[] = {"model", "prompt", "messages", "stream", NULL};
    struct pl_sampling_params p;
    pl_sampling_params_default(&p);
    struct pl_err err;
    pl_status st = pl_sampling_params_from_json(root, (size & 1) ? extra : NULL, &p, &err);
    if (st == PL_STATUS_OK) {
        if (!p.owned)
            abort();
        for (int i = 0; i < p.n_stop; i++)
            (void)strlen(p.stop[i]);
        struct pl_sampling_params q = p;
        if (pl_sampling_params_validate(&q, 1000, &err) == PL_STATUS_OK) {
            struct pl_sampling_params c;
            if (pl_sampling_params_copy(&c, &q, &err) == PL_STATUS_OK)
                pl_sampling_params_fini(&c);
        }
        /* a second body on top of the first replaces the owned block */
        if (pl_sampling_params_from_json(root, extra, &p, &err) != PL_STATUS_OK && !p.owned)
            abort();
    } else if (p.owned || p.n != 1 || p.temperature != 1.0f) {
        abort(); /* an error must leave p unchanged */
    }
    pl_sampling_params_fini(&p);
    json_decref(root);
    return 0;
}
