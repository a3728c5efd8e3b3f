/* safetensors.c -- placeholder (model loading issue replaces it). */
#include "model/safetensors.h"

#include <stddef.h>

pl_status pl_safetensors_open_dir(const char *model_dir, struct pl_safetensors **out,
                                  struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "safetensors is not built yet");
}

pl_status pl_safetensors_open_file(const char *path, struct pl_safetensors **out,
                                   struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "safetensors is not built yet");
}

pl_status pl_safetensors_parse_header(const char *header, size_t header_len, const void *data,
                                      uint64_t data_len, const char *file_name,
                                      struct pl_safetensors **out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "safetensors is not built yet");
}

void pl_safetensors_free(struct pl_safetensors *st) {}
int pl_safetensors_count(const struct pl_safetensors *st) { return 0; }
const struct pl_tensor_info *pl_safetensors_at(const struct pl_safetensors *st, int i) { return NULL; }
const struct pl_tensor_info *pl_safetensors_find(const struct pl_safetensors *st, const char *name)
{
    return NULL;
}
