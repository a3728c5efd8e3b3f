/* weights.c -- placeholder (model loading issue replaces it). */
#include "model/weights.h"

pl_status pl_weights_load(const struct pl_model_config *cfg, const struct pl_safetensors *st,
                          struct pl_backend *be, struct pl_weights **out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "weights loading is not built yet");
}

void pl_weights_free(struct pl_weights *w) {}
