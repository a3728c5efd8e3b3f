/*
 * config_json.h -- config.c's typed readers of config.json, for the architecture
 * records' fix-ups (model/arch.h).
 *
 * "Absent" means missing or JSON null (transformers treats an explicit null like a
 * missing key). Each reader sets *present and leaves *out alone when absent; a value
 * of the wrong type is refused naming file, prefix and key.
 */
#ifndef PL_MODEL_CONFIG_JSON_H
#define PL_MODEL_CONFIG_JSON_H

#include "model/config.h"

#include <jansson.h>

pl_status pl_cfg_get_int(const char *file, const char *prefix, const json_t *obj,
                         const char *key, int *out, bool *present, struct pl_err *err);
pl_status pl_cfg_get_num(const char *file, const char *prefix, const json_t *obj,
                         const char *key, double *out, bool *present, struct pl_err *err);
pl_status pl_cfg_get_bool(const char *file, const char *prefix, const json_t *obj,
                          const char *key, bool *out, bool *present, struct pl_err *err);
pl_status pl_cfg_get_str(const char *file, const char *prefix, const json_t *obj,
                         const char *key, const char **out, struct pl_err *err);

/* Reads one rope dict d (may be NULL: the top-level keys alone) into *r, with the
 * top-level fallbacks of root (rope_theta, partial_rotary_factor,
 * original_max_position_embeddings). c gives head_dim and max_position_embeddings. */
pl_status pl_cfg_parse_rope(const char *file, const json_t *root, const json_t *d,
                            const char *prefix, const struct pl_model_config *c,
                            struct pl_rope_config *r, struct pl_err *err);

/* Assigns per-layer windows from layer_types (a list of "full_attention" /
 * "sliding_attention"), window for the sliding ones. *present: whether the key was set. */
pl_status pl_cfg_layer_types(const json_t *root, struct pl_model_config *c, int window,
                             bool *present, struct pl_err *err);

#define PL_CONFIG_FILE "config.json"

#endif
