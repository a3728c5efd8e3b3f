/* config.c -- placeholder (model loading issue replaces it). */
#include "model/config.h"

pl_status pl_model_config_parse(const char *config_json, size_t config_len, const char *gen_json,
                                size_t gen_len, struct pl_model_config *out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "config parsing is not built yet");
}

pl_status pl_model_config_load(const char *model_dir, struct pl_model_config *out,
                               struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "config loading is not built yet");
}

const char *pl_arch_name(enum pl_arch arch) { return "?"; }
