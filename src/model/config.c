/*
 * config.c -- config.json + generation_config.json -> struct pl_model_config (see config.h).
 *
 * Owns the translation from Hugging Face's config files to pagellm's plain
 * model description, with the defaults and derivations transformers applies,
 * read from transformers' own sources (src/transformers/models/<family>/
 * configuration_<family>.py and modeling_<family>.py / modular_<family>.py,
 * src/transformers/modeling_rope_utils.py, transformers 4.5x and 5.x):
 *
 * The keys every family shares are read here, with the family's defaults taken
 * from its architecture record (model/arch.h: struct pl_arch_defaults); the
 * family's own keys (biases, q/k norms, soft-capping, experts...) are read by
 * the record's fix-up, which runs last. The per-family tables of defaults are in
 * the model files (llama.c, phi3.c, gemma.c, moe.c). The architecture is found
 * in the registry (registry.c) by `architectures`, else by model_type.
 *
 * RoPE: "rope_scaling" (older files) wins over "rope_parameters" (transformers 5)
 * when both are set, as RotaryEmbeddingConfigMixin.convert_rope_params_to_dict
 * does; rope_theta and partial_rotary_factor are read from that dict first,
 * then from the top level. Per-layer-type dicts ({"full_attention": {...},
 * "sliding_attention": {...}}) are accepted for records that say so (Gemma 3).
 * longrope ("su") reads short_factor / long_factor (one per rotary pair).
 *
 * Unlike transformers, the five core sizes (hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads, vocab_size) are required: every real
 * checkpoint states them, and defaulting them would only turn a broken file
 * into a confusing shape error later.
 *
 * Invariant: every refusal names the field at fault and the file it is in.
 */
#include "model/config.h"

#include "model/arch.h"
#include "model/config_json.h"

#include "util/fs.h"

#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONFIG_FILE "config.json"
#define GEN_FILE "generation_config.json"
#define MAX_CONFIG_BYTES (16u * 1024u * 1024u)

const char *pl_arch_name(const struct pl_arch *arch)
{
    return arch && arch->hf_names && arch->hf_names[0] ? arch->hf_names[0] : "unknown";
}

/* ---- typed field access. "Absent" means missing or JSON null: transformers
 * treats an explicit null like a missing key for every field read here. ---- */

static const json_t *field(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* Reads an integer that fits in int. *present says whether the key was set. */
pl_status pl_cfg_get_int(const char *file, const char *prefix, const json_t *obj, const char *key,
                         int *out, bool *present, struct pl_err *err)
{
    const json_t *v = field(obj, key);
    *present = v != NULL;
    if (!v)
        return PL_STATUS_OK;
    if (!json_is_integer(v))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s is not an integer", file, prefix, key);
    json_int_t i = json_integer_value(v);
    if (i < INT_MIN || i > INT_MAX)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s = %lld is out of range", file, prefix,
                          key, (long long)i);
    *out = (int)i;
    return PL_STATUS_OK;
}

/* A finite number (integer or real). */
pl_status pl_cfg_get_num(const char *file, const char *prefix, const json_t *obj, const char *key,
                         double *out, bool *present, struct pl_err *err)
{
    const json_t *v = field(obj, key);
    *present = v != NULL;
    if (!v)
        return PL_STATUS_OK;
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s is not a number", file, prefix, key);
    *out = json_number_value(v);
    return PL_STATUS_OK;
}

pl_status pl_cfg_get_bool(const char *file, const char *prefix, const json_t *obj,
                          const char *key, bool *out, bool *present, struct pl_err *err)
{
    const json_t *v = field(obj, key);
    *present = v != NULL;
    if (!v)
        return PL_STATUS_OK;
    if (!json_is_boolean(v))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s is not a boolean", file, prefix, key);
    *out = json_is_true(v);
    return PL_STATUS_OK;
}

pl_status pl_cfg_get_str(const char *file, const char *prefix, const json_t *obj, const char *key,
                         const char **out, struct pl_err *err)
{
    const json_t *v = field(obj, key);
    *out = NULL;
    if (!v)
        return PL_STATUS_OK;
    if (!json_is_string(v))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s is not a string", file, prefix, key);
    *out = json_string_value(v);
    return PL_STATUS_OK;
}

/* Narrows a finite double to float without leaving float's range. */
static float to_float(double v)
{
    if (v > FLT_MAX)
        return FLT_MAX;
    if (v < -FLT_MAX)
        return -FLT_MAX;
    return (float)v;
}

/* A required positive size. */
static pl_status get_size(const char *file, const json_t *obj, const char *key, int *out,
                          struct pl_err *err)
{
    bool present;
    pl_status st = pl_cfg_get_int(file, "", obj, key, out, &present, err);
    if (st != PL_STATUS_OK)
        return st;
    if (!present)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s is missing", file, key);
    if (*out <= 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s = %d must be positive", file, key, *out);
    return PL_STATUS_OK;
}

/* eos_token_id: an integer or a list of integers (all >= 0). */
static pl_status get_token_ids(const char *file, const json_t *obj, const char *key, int *ids,
                               int *n_ids, bool *present, struct pl_err *err)
{
    const json_t *v = field(obj, key);
    *present = v != NULL;
    if (!v)
        return PL_STATUS_OK;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0 || i > INT_MAX)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s = %lld is not a valid token id",
                              file, key, (long long)i);
        ids[0] = (int)i;
        *n_ids = 1;
        return PL_STATUS_OK;
    }
    if (!json_is_array(v))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s is not an integer or a list of integers",
                          file, key);
    size_t n = json_array_size(v);
    if (n > PL_MAX_EOS_IDS)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s lists %zu ids, more than the %d supported",
                          file, key, n, PL_MAX_EOS_IDS);
    for (size_t k = 0; k < n; k++) {
        const json_t *e = json_array_get(v, k);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT_MAX)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s[%zu] is not a valid token id", file,
                              key, k);
        ids[k] = (int)json_integer_value(e);
    }
    *n_ids = (int)n;
    return PL_STATUS_OK;
}

/* bos_token_id / pad_token_id: one integer. Negative values (some old Llama
 * conversions write pad_token_id = -1) mean "none". */
static pl_status get_token_id(const char *file, const json_t *obj, const char *key, int *out,
                              struct pl_err *err)
{
    bool present;
    int v = -1;
    pl_status st = pl_cfg_get_int(file, "", obj, key, &v, &present, err);
    if (st != PL_STATUS_OK)
        return st;
    if (present)
        *out = v < 0 ? -1 : v;
    return PL_STATUS_OK;
}

/* ---- pieces of the config ---- */

static pl_status parse_arch(const char *file, const json_t *root, struct pl_model_config *c,
                            struct pl_err *err)
{
    const char *model_type;
    pl_status st = pl_cfg_get_str(file, "", root, "model_type", &model_type, err);
    if (st != PL_STATUS_OK)
        return st;
    if (model_type)
        snprintf(c->model_type, sizeof(c->model_type), "%s", model_type);

    const json_t *archs = field(root, "architectures");
    if (archs) {
        if (!json_is_array(archs) || json_array_size(archs) == 0 ||
            !json_is_string(json_array_get(archs, 0)))
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: architectures is not a non-empty list of strings", file);
        const char *name = json_string_value(json_array_get(archs, 0));
        c->arch = pl_arch_find(name, false);
        if (!c->arch)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s: architecture '%s' is not supported (%s)", file, name,
                              pl_arch_supported_names());
        snprintf(c->arch_name, sizeof(c->arch_name), "%s", name);
        if (!model_type)
            snprintf(c->model_type, sizeof(c->model_type), "%s", c->arch->model_type);
        return PL_STATUS_OK;
    }
    /* No architectures list: AutoModelForCausalLM picks the class from model_type. */
    if (!model_type)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: neither architectures nor model_type is set",
                          file);
    c->arch = pl_arch_find(model_type, true);
    if (!c->arch)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s: model_type '%s' is not supported", file,
                          model_type);
    snprintf(c->arch_name, sizeof(c->arch_name), "%s", pl_arch_name(c->arch));
    return PL_STATUS_OK;
}

/* Whether the architecture's tensor table has experts (it reads the MoE keys). */
static bool arch_has_experts(const struct pl_arch *a)
{
    for (int i = 0; i < a->n_tensors; i++)
        if (a->tensors[i].scope == PL_SCOPE_EXPERT)
            return true;
    return false;
}

/* Features pagellm does not run, refused by name before anything else (and
 * quantization_config, read by model/quant.c, which refuses what it does not load). */
static pl_status refuse_unsupported(const char *file, const json_t *root,
                                    struct pl_model_config *c, struct pl_err *err)
{
    const json_t *q = field(root, "quantization_config");
    if (q) {
        pl_status st = pl_quant_config_parse(file, q, &c->quant, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    static const char *const moe_keys[] = {"num_experts", "num_local_experts", "n_routed_experts"};
    for (size_t i = 0; !arch_has_experts(c->arch) && i < sizeof(moe_keys) / sizeof(moe_keys[0]);
         i++) {
        int n = 0;
        bool present;
        pl_status st = pl_cfg_get_int(file, "", root, moe_keys[i], &n, &present, err);
        if (st != PL_STATUS_OK)
            return st;
        if (present && n > 0)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s: %s = %d: %s has no mixture-of-experts support", file,
                              moe_keys[i], n, c->arch_name);
    }
    /* hidden_act (Gemma's configs also carry hidden_activation, which wins there) */
    const char *act;
    pl_status st = pl_cfg_get_str(file, "", root, "hidden_activation", &act, err);
    if (st == PL_STATUS_OK && !act)
        st = pl_cfg_get_str(file, "", root, "hidden_act", &act, err);
    if (st != PL_STATUS_OK)
        return st;
    const char *const *acts = c->arch->defaults.hidden_acts;
    static const char *const silu_only[] = {"silu", NULL};
    if (!acts)
        acts = silu_only;
    if (!act)
        act = acts[0];
    bool known = false;
    for (int i = 0; acts[i] && !known; i++)
        known = !strcmp(act, acts[i]);
    /* transformers' ACT2FN maps both "silu" and "swish" to SiLU. */
    if (!known && !strcmp(act, "swish"))
        known = !strcmp(acts[0], "silu"), act = "silu";
    if (!known)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "%s: hidden_act '%s' is not supported for %s (%s)", file, act,
                          c->arch_name, acts[0]);
    c->act = !strcmp(act, "gelu_pytorch_tanh") ? PL_ACT_GELU_TANH : PL_ACT_SILU;
    return PL_STATUS_OK;
}

static pl_status parse_sizes(const char *file, const json_t *root, struct pl_model_config *c,
                             struct pl_err *err)
{
    pl_status st;
    if ((st = get_size(file, root, "hidden_size", &c->hidden_size, err)) ||
        (st = get_size(file, root, "intermediate_size", &c->intermediate_size, err)) ||
        (st = get_size(file, root, "num_hidden_layers", &c->n_layers, err)) ||
        (st = get_size(file, root, "num_attention_heads", &c->n_heads, err)) ||
        (st = get_size(file, root, "vocab_size", &c->vocab_size, err)))
        return st;
    if (c->n_layers > PL_MAX_LAYERS)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: num_hidden_layers = %d exceeds the %d supported",
                          file, c->n_layers, PL_MAX_LAYERS);

    bool present;
    const json_t *kv = json_object_get(root, "num_key_value_heads");
    if (!kv) /* key missing: the class default */
        c->n_kv_heads = c->arch->defaults.n_kv_heads > 0 ? c->arch->defaults.n_kv_heads
                                                         : c->n_heads;
    else
        c->n_kv_heads = c->n_heads; /* null, or overwritten just below */
    if ((st = pl_cfg_get_int(file, "", root, "num_key_value_heads", &c->n_kv_heads, &present, err)))
        return st;
    if (c->n_kv_heads <= 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: num_key_value_heads = %d must be positive",
                          file, c->n_kv_heads);
    if (c->n_heads % c->n_kv_heads != 0)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: num_key_value_heads = %d does not divide num_attention_heads = %d",
                          file, c->n_kv_heads, c->n_heads);

    const json_t *hd = json_object_get(root, "head_dim");
    if ((st = pl_cfg_get_int(file, "", root, "head_dim", &c->head_dim, &present, err)))
        return st;
    if (!present) {
        if (!hd && c->arch->defaults.head_dim > 0) {
            c->head_dim = c->arch->defaults.head_dim; /* e.g. Qwen3Config's 128 */
        } else {
            if (c->hidden_size % c->n_heads != 0)
                return pl_err_set(err, PL_STATUS_FORMAT,
                                  "%s: hidden_size = %d is not divisible by num_attention_heads = "
                                  "%d (and head_dim is not set)",
                                  file, c->hidden_size, c->n_heads);
            c->head_dim = c->hidden_size / c->n_heads;
        }
    }
    if (c->head_dim <= 0 || c->head_dim % 2 != 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: head_dim = %d must be positive and even",
                          file, c->head_dim);

    double eps = 1e-6;
    if ((st = pl_cfg_get_num(file, "", root, "rms_norm_eps", &eps, &present, err)))
        return st;
    if (!(eps > 0) || eps > 1)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: rms_norm_eps = %g must be in (0, 1]", file,
                          eps);
    c->rms_norm_eps = (float)eps;

    c->max_position_embeddings = c->arch->defaults.max_position_embeddings;
    if ((st = pl_cfg_get_int(file, "", root, "max_position_embeddings", &c->max_position_embeddings,
                      &present, err)))
        return st;
    if (c->max_position_embeddings <= 0)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: max_position_embeddings = %d must be positive", file,
                          c->max_position_embeddings);
    return PL_STATUS_OK;
}

static bool is_layer_type_name(const char *k)
{
    return strcmp(k, "full_attention") == 0 || strcmp(k, "sliding_attention") == 0;
}

/* One longrope factor list: rot_dim / 2 positive numbers. */
static pl_status longrope_factors(const char *file, const char *prefix, const json_t *d,
                                  const char *key, int n_pairs, double *out, struct pl_err *err)
{
    const json_t *a = field(d, key);
    if (!a || !json_is_array(a))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s is missing or not a list for "
                          "rope_type 'longrope'", file, prefix, key);
    if (json_array_size(a) != (size_t)n_pairs)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: %s%s has %zu entries, the rotary dimension needs %d", file, prefix,
                          key, json_array_size(a), n_pairs);
    for (int i = 0; i < n_pairs; i++) {
        const json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_number(v) || !(json_number_value(v) > 0) || !isfinite(json_number_value(v)))
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s[%d] is not a positive number",
                              file, prefix, key, i);
        out[i] = json_number_value(v);
    }
    return PL_STATUS_OK;
}

/* longrope (Phi-3's "su"), as transformers' _compute_longrope_parameters: short and long
 * per-pair factors; the scaling factor is max_position_embeddings /
 * original_max_position_embeddings when the config has the latter at the top level (Phi-3
 * stretches max_position_embeddings), else the dict's factor (default that same ratio);
 * attention_factor defaults to sqrt(1 + ln(factor) / ln(original)) when factor > 1. */
static pl_status parse_longrope(const char *file, const json_t *root, const json_t *d,
                                const char *prefix, const struct pl_model_config *c,
                                struct pl_rope_config *r, int rot_dim, struct pl_err *err)
{
    pl_status st;
    bool present;
    int n_pairs = rot_dim / 2;
    if (n_pairs > PL_MAX_ROPE_PAIRS)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s: longrope over %d rotary dims (at most "
                          "%d)", file, rot_dim, 2 * PL_MAX_ROPE_PAIRS);
    if ((st = longrope_factors(file, prefix, d, "short_factor", n_pairs, r->short_factor, err)) ||
        (st = longrope_factors(file, prefix, d, "long_factor", n_pairs, r->long_factor, err)))
        return st;
    r->n_factors = n_pairs;
    int orig = 0;
    bool top = false;
    if ((st = pl_cfg_get_int(file, "", root, "original_max_position_embeddings", &orig, &top,
                             err)))
        return st;
    present = top;
    if (!present && (st = pl_cfg_get_int(file, prefix, d, "original_max_position_embeddings",
                                         &orig, &present, err)))
        return st;
    if (!present)
        orig = c->max_position_embeddings;
    if (orig <= 0)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: original_max_position_embeddings = %d must be positive", file, orig);
    r->original_max_position = orig;
    bool has_factor = false;
    if ((st = pl_cfg_get_num(file, prefix, d, "factor", &r->factor, &has_factor, err)))
        return st;
    if (top || !has_factor)
        r->factor = (double)c->max_position_embeddings / orig;
    if (!(r->factor > 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %sfactor = %g must be positive", file,
                          prefix, r->factor);
    double v = 0;
    if ((st = pl_cfg_get_num(file, prefix, d, "attention_factor", &v, &present, err)))
        return st;
    if (present && !(v > 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %sattention_factor = %g must be positive",
                          file, prefix, v);
    r->attention_factor = present ? v : 0.0;
    return PL_STATUS_OK;
}

static pl_status parse_rope(const char *file, const json_t *root, struct pl_model_config *c,
                            struct pl_err *err)
{
    const json_t *scaling = field(root, "rope_scaling");
    const json_t *params = field(root, "rope_parameters");
    if (scaling && !json_is_object(scaling))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: rope_scaling is not an object", file);
    if (params && !json_is_object(params))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: rope_parameters is not an object", file);
    const json_t *d = NULL;
    const char *prefix = "";
    if (scaling && json_object_size(scaling) > 0) {
        d = scaling;
        prefix = "rope_scaling.";
    } else if (params) {
        d = params;
        prefix = "rope_parameters.";
    }
    if (d) {
        const char *k;
        const json_t *v;
        bool per_type = false;
        json_object_foreach((json_t *)d, k, v) {
            if (is_layer_type_name(k) && json_is_object(v))
                per_type = true;
            if (per_type && !c->arch->defaults.layer_type_rope)
                return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                                  "%s: %s%s: per-layer-type RoPE parameters are not supported "
                                  "for %s",
                                  file, prefix, k, c->arch_name);
        }
        if (per_type) { /* the global layers' dict; the fix-up reads the sliding one */
            d = field(d, "full_attention");
            prefix = "rope_parameters.full_attention.";
            if (d && !json_is_object(d))
                return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s is not an object", file, prefix);
        }
    }
    return pl_cfg_parse_rope(file, root, d, prefix, c, &c->rope, err);
}

pl_status pl_cfg_parse_rope(const char *file, const json_t *root, const json_t *d,
                            const char *prefix, const struct pl_model_config *c,
                            struct pl_rope_config *r, struct pl_err *err)
{
    pl_status st;
    bool present;
    const char *type = NULL;
    if (d) {
        if ((st = pl_cfg_get_str(file, prefix, d, "rope_type", &type, err)))
            return st;
        if (!type && (st = pl_cfg_get_str(file, prefix, d, "type", &type, err)))
            return st;
    }
    if (!type || strcmp(type, "default") == 0)
        r->type = PL_ROPE_DEFAULT;
    else if (strcmp(type, "linear") == 0)
        r->type = PL_ROPE_LINEAR;
    else if (strcmp(type, "dynamic") == 0)
        r->type = PL_ROPE_DYNAMIC;
    else if (strcmp(type, "yarn") == 0)
        r->type = PL_ROPE_YARN;
    else if (strcmp(type, "llama3") == 0)
        r->type = PL_ROPE_LLAMA3;
    else if (strcmp(type, "longrope") == 0 || strcmp(type, "su") == 0)
        r->type = PL_ROPE_LONGROPE;
    else
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "%s: %srope_type '%s' is not supported (default, linear, dynamic, yarn, "
                          "llama3, longrope)",
                          file, prefix, type);

    /* rope_theta: the rope dict, then the top level, then the class default (10000). */
    r->theta = c->arch && c->arch->defaults.rope_theta > 0 ? c->arch->defaults.rope_theta
                                                           : 10000.0;
    present = false;
    if (d && (st = pl_cfg_get_num(file, prefix, d, "rope_theta", &r->theta, &present, err)))
        return st;
    if (!present && (st = pl_cfg_get_num(file, "", root, "rope_theta", &r->theta, &present, err)))
        return st;
    if (!(r->theta > 1.0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: rope_theta = %g must be greater than 1", file,
                          r->theta);

    r->partial_rotary_factor = 1.0;
    present = false;
    if (d && (st = pl_cfg_get_num(file, prefix, d, "partial_rotary_factor", &r->partial_rotary_factor,
                           &present, err)))
        return st;
    if (!present && (st = pl_cfg_get_num(file, "", root, "partial_rotary_factor",
                                  &r->partial_rotary_factor, &present, err)))
        return st;
    /* Range first: converting an out-of-range double to int is undefined. */
    bool prf_ok = r->partial_rotary_factor > 0 && r->partial_rotary_factor <= 1;
    int rot_dim = prf_ok ? (int)(c->head_dim * r->partial_rotary_factor) : 0;
    if (!prf_ok || rot_dim < 2 || rot_dim % 2 != 0)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: partial_rotary_factor = %g must be in (0, 1] and rotate an even "
                          "number of head dims (head_dim %d)",
                          file, r->partial_rotary_factor, c->head_dim);

    r->factor = 1.0;
    r->beta_fast = 32.0;
    r->beta_slow = 1.0;
    r->truncate = true;
    r->original_max_position = c->max_position_embeddings;
    if (r->type == PL_ROPE_DEFAULT)
        return PL_STATUS_OK;

    if (r->type == PL_ROPE_LONGROPE)
        return parse_longrope(file, root, d, prefix, c, r, rot_dim, err);

    bool has_factor = false;
    if ((st = pl_cfg_get_num(file, prefix, d, "factor", &r->factor, &has_factor, err)))
        return st;
    if (!has_factor && r->type != PL_ROPE_YARN)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %sfactor is missing for rope_type '%s'",
                          file, prefix, type);
    if (has_factor && !(r->factor > 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %sfactor = %g must be positive", file,
                          prefix, r->factor);
    if (r->type == PL_ROPE_LINEAR || r->type == PL_ROPE_DYNAMIC)
        return PL_STATUS_OK; /* dynamic scales against max_position_embeddings itself */

    /* llama3 / yarn: original_max_position_embeddings at the top level wins
     * (standardize_rope_params), then the rope dict, then max_position_embeddings. */
    int orig = 0;
    if ((st = pl_cfg_get_int(file, "", root, "original_max_position_embeddings", &orig, &present, err)))
        return st;
    if (!present && (st = pl_cfg_get_int(file, prefix, d, "original_max_position_embeddings", &orig,
                                  &present, err)))
        return st;
    if (present) {
        if (orig <= 0)
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: %soriginal_max_position_embeddings = %d must be positive", file,
                              prefix, orig);
        r->original_max_position = orig;
    }

    if (r->type == PL_ROPE_LLAMA3) {
        bool has_lo, has_hi;
        if ((st = pl_cfg_get_num(file, prefix, d, "low_freq_factor", &r->low_freq_factor, &has_lo, err)) ||
            (st = pl_cfg_get_num(file, prefix, d, "high_freq_factor", &r->high_freq_factor, &has_hi, err)))
            return st;
        if (!has_lo || !has_hi)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: %s%s is missing for rope_type 'llama3'",
                              file, prefix, has_lo ? "high_freq_factor" : "low_freq_factor");
        /* The smoothing divides by (high - low). */
        if (!(r->low_freq_factor > 0) || !(r->high_freq_factor > r->low_freq_factor))
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: %slow_freq_factor = %g and high_freq_factor = %g must satisfy "
                              "0 < low < high",
                              file, prefix, r->low_freq_factor, r->high_freq_factor);
        return PL_STATUS_OK;
    }

    /* yarn */
    if (!has_factor)
        r->factor = (double)c->max_position_embeddings / r->original_max_position;
    double v = 0;
    if ((st = pl_cfg_get_num(file, prefix, d, "attention_factor", &v, &present, err)))
        return st;
    if (present) {
        if (!(v > 0))
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: %sattention_factor = %g must be positive", file, prefix, v);
        r->attention_factor = v;
    }
    /* transformers reads beta_fast/beta_slow with `or`: 0 falls back to the default too. */
    if ((st = pl_cfg_get_num(file, prefix, d, "beta_fast", &v, &present, err)))
        return st;
    if (present && v != 0)
        r->beta_fast = v;
    if ((st = pl_cfg_get_num(file, prefix, d, "beta_slow", &v, &present, err)))
        return st;
    if (present && v != 0)
        r->beta_slow = v;
    if ((st = pl_cfg_get_num(file, prefix, d, "mscale", &r->mscale, &present, err)) ||
        (st = pl_cfg_get_num(file, prefix, d, "mscale_all_dim", &r->mscale_all_dim, &present, err)) ||
        (st = pl_cfg_get_bool(file, prefix, d, "truncate", &r->truncate, &present, err)))
        return st;
    return PL_STATUS_OK;
}

pl_status pl_cfg_layer_types(const json_t *root, struct pl_model_config *c, int window,
                             bool *present, struct pl_err *err)
{
    const char *file = CONFIG_FILE;
    const json_t *types = field(root, "layer_types");
    *present = types != NULL;
    if (!types)
        return PL_STATUS_OK;
    if (!json_is_array(types) || json_array_size(types) != (size_t)c->n_layers)
        return pl_err_set(err, PL_STATUS_FORMAT,
                          "%s: layer_types is not a list of num_hidden_layers = %d strings", file,
                          c->n_layers);
    for (int l = 0; l < c->n_layers; l++) {
        const json_t *t = json_array_get(types, (size_t)l);
        const char *s = json_is_string(t) ? json_string_value(t) : NULL;
        if (!s)
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: layer_types[%d] is not a string", file,
                              l);
        if (strcmp(s, "sliding_attention") == 0)
            c->layer_sliding_window[l] = window;
        else if (strcmp(s, "full_attention") == 0)
            c->layer_sliding_window[l] = 0;
        else
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s: layer_types[%d] = '%s' is not supported (full_attention, "
                              "sliding_attention)",
                              file, l, s);
    }
    return PL_STATUS_OK;
}

/* Per-layer sliding windows. Sources: configuration_mistral.py / modeling_mistral.py
 * (every layer uses config.sliding_window), configuration_qwen2.py and
 * configuration_qwen3.py (__post_init__: sliding_window = sliding_window if
 * use_sliding_window else None; layer_types defaults to "sliding_attention" for
 * layers i >= max_window_layers when a window is set), modular_qwen2.py /
 * modular_qwen3.py (a layer uses config.sliding_window iff its layer type is
 * "sliding_attention"). Llama has no sliding window. */
static pl_status parse_sliding(const char *file, const json_t *root, struct pl_model_config *c,
                               struct pl_err *err)
{
    pl_status st;
    bool present;
    const enum pl_window_rule rule = c->arch->defaults.window_rule;
    if (rule == PL_WINDOW_NONE)
        return PL_STATUS_OK;

    const json_t *sw_key = json_object_get(root, "sliding_window");
    int window = c->arch->defaults.sliding_window; /* the class default when missing */
    if ((st = pl_cfg_get_int(file, "", root, "sliding_window", &window, &present, err)))
        return st;
    if (sw_key && !present)
        window = 0; /* explicit null: no window */
    if (present && window <= 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: sliding_window = %d must be positive or null",
                          file, window);

    if (rule == PL_WINDOW_ALL) {
        /* MistralConfig only warns about layer_types; the model ignores it. */
        c->sliding_window = window;
        for (int l = 0; l < c->n_layers; l++)
            c->layer_sliding_window[l] = window;
        return PL_STATUS_OK;
    }

    bool use_sw = false;
    if ((st = pl_cfg_get_bool(file, "", root, "use_sliding_window", &use_sw, &present, err)))
        return st;
    if (!use_sw)
        window = 0;
    c->sliding_window = window;

    bool have_types;
    if ((st = pl_cfg_layer_types(root, c, window, &have_types, err)) || have_types)
        return st;
    int max_window_layers = c->arch->defaults.max_window_layers;
    if ((st = pl_cfg_get_int(file, "", root, "max_window_layers", &max_window_layers, &present, err)))
        return st;
    for (int l = 0; l < c->n_layers; l++)
        c->layer_sliding_window[l] = l >= max_window_layers ? window : 0;
    return PL_STATUS_OK;
}

/* Biases, tying, qk-norm: modeling_llama.py (LlamaAttention q/k/v/o use
 * attention_bias, LlamaMLP uses mlp_bias), modular_qwen2.py (q/k/v bias=True,
 * o bias=False, MLP without bias), modular_qwen3.py (Qwen3Attention is
 * LlamaAttention plus q_norm/k_norm; MLP without bias), modeling_mistral.py
 * (no biases). */
static pl_status parse_layout(const char *file, const json_t *root, struct pl_model_config *c,
                              struct pl_err *err)
{
    pl_status st;
    bool present, attn_bias = false, mlp_bias = false;
    c->tie_word_embeddings = c->arch->defaults.tie_word_embeddings;
    if ((st = pl_cfg_get_bool(file, "", root, "tie_word_embeddings", &c->tie_word_embeddings, &present,
                       err)) ||
        (st = pl_cfg_get_bool(file, "", root, "attention_bias", &attn_bias, &present, err)) ||
        (st = pl_cfg_get_bool(file, "", root, "mlp_bias", &mlp_bias, &present, err)))
        return st;
    (void)attn_bias, (void)mlp_bias; /* read again by the architecture's fix-up */
    /* transformers 5 writes "dtype", older versions "torch_dtype". Absent means
     * transformers' own default, float32. */
    const char *dt;
    if ((st = pl_cfg_get_str(file, "", root, "dtype", &dt, err)))
        return st;
    if (!dt && (st = pl_cfg_get_str(file, "", root, "torch_dtype", &dt, err)))
        return st;
    if (!dt || strcmp(dt, "float32") == 0)
        c->dtype = PL_DTYPE_F32;
    else if (strcmp(dt, "bfloat16") == 0)
        c->dtype = PL_DTYPE_BF16;
    else if (strcmp(dt, "float16") == 0)
        c->dtype = PL_DTYPE_F16;
    else
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "%s: dtype '%s' is not supported (bfloat16, float16, float32)", file, dt);
    return PL_STATUS_OK;
}

static pl_status parse_tokens(const char *file, const json_t *root, struct pl_model_config *c,
                              struct pl_err *err)
{
    pl_status st;
    bool present;
    const struct pl_arch_defaults *d = &c->arch->defaults;
    c->bos_token_id = d->bos_token_id;
    c->pad_token_id = -1;
    c->n_eos_token_ids = 0;
    if (d->eos_token_id >= 0 && !json_object_get(root, "eos_token_id")) {
        c->eos_token_ids[0] = d->eos_token_id;
        c->n_eos_token_ids = 1;
    }
    if (json_is_null(json_object_get(root, "bos_token_id")))
        c->bos_token_id = -1;
    if ((st = get_token_id(file, root, "bos_token_id", &c->bos_token_id, err)) ||
        (st = get_token_id(file, root, "pad_token_id", &c->pad_token_id, err)) ||
        (st = get_token_ids(file, root, "eos_token_id", c->eos_token_ids, &c->n_eos_token_ids,
                            &present, err)))
        return st;
    return PL_STATUS_OK;
}

/* The sampling fields of a generation config object (the file's, or an override when
 * `file` names the override: then top_k may be -1, vLLM's "off"). */
static pl_status parse_generation_sampling(const char *file, bool is_override, const json_t *root,
                                           struct pl_generation_config *g, struct pl_err *err)
{
    pl_status st;
    double v = 0;
    if ((st = pl_cfg_get_num(file, "", root, "temperature", &v, &g->has_temperature, err)))
        return st;
    if (g->has_temperature && v < 0)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: temperature = %g is negative", file, v);
    g->temperature = to_float(v);
    if ((st = pl_cfg_get_num(file, "", root, "top_p", &v, &g->has_top_p, err)))
        return st;
    /* checked as stored (a float): 1e-99 is positive, its float is not */
    if (g->has_top_p && !(to_float(v) > 0 && v <= 1))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: top_p = %g is not in (0, 1]", file, v);
    g->top_p = to_float(v);
    if ((st = pl_cfg_get_num(file, "", root, "min_p", &v, &g->has_min_p, err)))
        return st;
    if (g->has_min_p && !(v >= 0 && v <= 1))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: min_p = %g is not in [0, 1]", file, v);
    g->min_p = to_float(v);
    if ((st = pl_cfg_get_num(file, "", root, "repetition_penalty", &v,
                             &g->has_repetition_penalty, err)))
        return st;
    if (g->has_repetition_penalty && !(to_float(v) > 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: repetition_penalty = %g must be positive",
                          file, v);
    g->repetition_penalty = to_float(v);
    if ((st = pl_cfg_get_int(file, "", root, "top_k", &g->top_k, &g->has_top_k, err)))
        return st;
    if (g->has_top_k && g->top_k < (is_override ? -1 : 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: top_k = %d is negative", file, g->top_k);
    if ((st = pl_cfg_get_int(file, "", root, "max_new_tokens", &g->max_new_tokens,
                             &g->has_max_new_tokens, err)))
        return st;
    if (g->has_max_new_tokens && g->max_new_tokens < (is_override ? 1 : 0))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: max_new_tokens = %d is %s", file,
                          g->max_new_tokens, is_override ? "not positive" : "negative");
    return PL_STATUS_OK;
}

static pl_status parse_generation(const char *gen_json, size_t gen_len,
                                  struct pl_generation_config *g, struct pl_err *err)
{
    const char *file = GEN_FILE;
    memset(g, 0, sizeof(*g));
    g->bos_token_id = -1;
    if (!gen_json)
        return PL_STATUS_OK;
    json_error_t jerr;
    json_t *root = json_loadb(gen_json, gen_len, 0, &jerr);
    if (!root)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: not valid JSON: %s (line %d, column %d)",
                          file, jerr.text, jerr.line, jerr.column);
    pl_status st = PL_STATUS_OK;
    if (!json_is_object(root)) {
        st = pl_err_set(err, PL_STATUS_FORMAT, "%s: not a JSON object", file);
        goto out;
    }
    if ((st = parse_generation_sampling(file, false, root, g, err)))
        goto out;
    if ((st = pl_cfg_get_bool(file, "", root, "do_sample", &g->do_sample, &g->has_do_sample, err)))
        goto out;
    bool present;
    if ((st = get_token_ids(file, root, "eos_token_id", g->eos_token_ids, &g->n_eos_token_ids,
                            &present, err)))
        goto out;
    st = get_token_id(file, root, "bos_token_id", &g->bos_token_id, err);
out:
    json_decref(root);
    return st;
}

pl_status pl_generation_config_parse_override(const char *json, const char *what,
                                              struct pl_generation_config *g, struct pl_err *err)
{
    static const char *const keys[] = {"temperature", "top_p",          "top_k",
                                       "min_p",       "repetition_penalty", "max_new_tokens"};
    memset(g, 0, sizeof(*g));
    g->bos_token_id = -1;
    if (!json)
        return PL_STATUS_OK;
    json_error_t jerr;
    json_t *root = json_loads(json, 0, &jerr);
    if (!root)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: not valid JSON: %s (column %d)",
                          what, jerr.text, jerr.column);
    pl_status st = PL_STATUS_OK;
    if (!json_is_object(root)) {
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: not a JSON object", what);
        goto out;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            known |= !strcmp(k, keys[i]);
        if (!known) {
            st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                            "%s: unknown key '%s' (pagellm applies temperature, top_p, top_k, "
                            "min_p, repetition_penalty and max_new_tokens)",
                            what, k);
            goto out;
        }
    }
    if ((st = parse_generation_sampling(what, true, root, g, err)))
        st = err ? (err->status = PL_STATUS_INVALID_ARGUMENT) : PL_STATUS_INVALID_ARGUMENT;
out:
    json_decref(root);
    return st;
}

pl_status pl_model_config_parse(const char *config_json, size_t config_len, const char *gen_json,
                                size_t gen_len, struct pl_model_config *out, struct pl_err *err)
{
    const char *file = CONFIG_FILE;
    memset(out, 0, sizeof(*out));
    if (!config_json)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "%s: no text", file);
    json_error_t jerr;
    json_t *root = json_loadb(config_json, config_len, 0, &jerr);
    if (!root)
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: not valid JSON: %s (line %d, column %d)",
                          file, jerr.text, jerr.line, jerr.column);
    pl_status st;
    if (!json_is_object(root)) {
        st = pl_err_set(err, PL_STATUS_FORMAT, "%s: not a JSON object", file);
        goto out;
    }
    /* Each step runs only when the ones before it succeeded. */
    st = parse_arch(file, root, out, err);
    if (st == PL_STATUS_OK)
        st = refuse_unsupported(file, root, out, err);
    if (st == PL_STATUS_OK)
        st = parse_sizes(file, root, out, err);
    if (st == PL_STATUS_OK)
        st = parse_rope(file, root, out, err);
    if (st == PL_STATUS_OK)
        st = parse_sliding(file, root, out, err);
    if (st == PL_STATUS_OK)
        st = parse_layout(file, root, out, err);
    if (st == PL_STATUS_OK)
        st = parse_tokens(file, root, out, err);
    if (st == PL_STATUS_OK && out->arch->fixup)
        st = out->arch->fixup(root, out, err);
    if (st == PL_STATUS_OK)
        st = parse_generation(gen_json, gen_len, &out->gen, err);
out:
    json_decref(root);
    if (st != PL_STATUS_OK)
        memset(out, 0, sizeof(*out));
    return st;
}

pl_status pl_model_config_load(const char *model_dir, struct pl_model_config *out,
                               struct pl_err *err)
{
    memset(out, 0, sizeof(*out));
    char *cfg_path = pl_fs_path_join(model_dir, CONFIG_FILE);
    char *gen_path = pl_fs_path_join(model_dir, GEN_FILE);
    char *cfg = NULL, *gen = NULL;
    size_t cfg_len = 0, gen_len = 0;
    pl_status st;
    if (!cfg_path || !gen_path) {
        st = pl_err_set(err, PL_STATUS_NO_MEMORY, "%s: out of memory", model_dir);
        goto out;
    }
    st = pl_fs_read_file(cfg_path, MAX_CONFIG_BYTES, &cfg, &cfg_len, err);
    if (st != PL_STATUS_OK) {
        if (st == PL_STATUS_NOT_FOUND)
            st = PL_STATUS_IO; /* config.h: unreadable config.json is an I/O error */
        if (err)
            err->status = st;
        goto out;
    }
    if (pl_fs_is_file(gen_path)) {
        st = pl_fs_read_file(gen_path, MAX_CONFIG_BYTES, &gen, &gen_len, err);
        if (st != PL_STATUS_OK)
            goto out;
    }
    st = pl_model_config_parse(cfg, cfg_len, gen, gen_len, out, err);
    if (st != PL_STATUS_OK)
        pl_err_prefix(err, "%s", model_dir);
out:
    free(cfg);
    free(gen);
    free(cfg_path);
    free(gen_path);
    return st;
}
