/*
 * quant.c -- quantization_config as the producers write it, the --quantization
 * and --kv-cache-dtype values, and module targeting (see quant.h).
 *
 * Owns the parser: one reader per method, each taking only the combinations the
 * dequantizing reference (quant_dequant.c) implements and refusing the rest by
 * name. Producers write many informational keys (damp_percent, true_sequential,
 * observer, version stamps): unknown keys are ignored; a known key with a value
 * pagellm does not load is refused.
 */
#include "model/quant.h"

#include "model/config_json.h"

#include <regex.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define P "quantization_config."

/* Present and not JSON null. */
static const json_t *get(const json_t *o, const char *key)
{
    const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return v && !json_is_null(v) ? v : NULL;
}

/* "a, b, c": the keys of o, for messages. */
static void list_keys(const json_t *o, char *out, size_t cap)
{
    size_t at = 0;
    const char *k;
    json_t *v;
    out[0] = '\0';
    if (!json_is_object(o))
        return;
    json_object_foreach((json_t *)o, k, v)
    {
        int n = snprintf(out + at, cap - at, "%s%s", at ? ", " : "", k);
        if (n < 0 || (size_t)n >= cap - at) {
            if (cap > 4)
                memcpy(out + cap - 4, "...", 4);
            return;
        }
        at += (size_t)n;
    }
}

static pl_status refuse(const char *file, const json_t *q, const char *what, struct pl_err *err)
{
    char keys[512];
    list_keys(q, keys, sizeof(keys));
    const json_t *m = get(q, "quant_method");
    return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                      "%s: quantization_config (quant_method %s; fields: %s): %s", file,
                      json_is_string(m) ? json_string_value(m) : "missing", keys, what);
}

/* Whether a "re:" pattern is one pagellm compiles: POSIX ERE that regcomp accepts, with at
 * most 16 repetition operators, counts ("{m,n}") of at most 64, no operator repeating
 * another ("a++", "a*{3}") and repetitions nested at most two deep ("(a*)*" but not "((a*)*)*"): glibc's regcomp copies
 * a subtree per nested repetition and its epsilon closures grow exponentially with the
 * nesting, so a hostile pattern could exhaust memory or time (a fuzzer's
 * "((((((((((a*)*)*)*)*)*)*..." ran for minutes). Bracket expressions are skipped: their
 * '*' and '(' are literal. The producers' patterns (".*mlp\\.gate$",
 * "model.layers.[0-9]+.mlp", "model\\.layers\\.[0-9]+\\.(self_attn|mlp)\\..*") pass. */
#define REGEX_MAX_GROUPS 32

static bool regex_ok(const char *pat)
{
    int n_rep = 0, top = 0;
    int depth[REGEX_MAX_GROUPS + 1] = {0}; /* per open group: its deepest repetition nesting */
    int last = 0;                          /* the nesting inside the atom just read */
    bool prev_rep = false;
    for (const char *p = pat; *p; p++) {
        if (*p == '\\' && p[1]) {
            p++;
        } else if (*p == '[') { /* to the closing ']' ("[]" and "[^]" start with a literal ']') */
            p += p[1] == '^' ? 2 : 1;
            if (*p == ']')
                p++;
            while (*p && *p != ']')
                p++;
            if (!*p)
                return false;
        } else if (*p == '(') {
            if (++top > REGEX_MAX_GROUPS)
                return false;
            depth[top] = 0;
        } else if (*p == ')' && top > 0) {
            last = depth[top--];
            if (depth[top] < last)
                depth[top] = last;
            prev_rep = false;
            continue;
        } else if (*p == '*' || *p == '+' || *p == '?' || *p == '{') {
            const int d = last + 1;
            if (prev_rep || ++n_rep > 16 || d > 2)
                return false;
            if (depth[top] < d)
                depth[top] = d;
            if (*p == '{') { /* counts at most 64: regcomp copies the operand per count */
                for (int v = 0; p[1] && *p != '}'; p++) {
                    if (p[1] < '0' || p[1] > '9')
                        v = 0;
                    else if ((v = v * 10 + (p[1] - '0')) > 64)
                        return false;
                }
            }
            prev_rep = true;
            continue;
        }
        last = 0;
        prev_rep = false;
    }
    regex_t re;
    char full[PL_QUANT_NAME_LEN + 8];
    snprintf(full, sizeof(full), "^(%s)", pat);
    if (regcomp(&re, full, REG_EXTENDED | REG_NOSUB))
        return false;
    regfree(&re);
    return true;
}

/* A list of module names (or null) appended to q->ignore. */
static pl_status read_ignore(const char *file, const json_t *q, const char *key,
                             struct pl_quant_config *out, struct pl_err *err)
{
    const json_t *l = get(q, key);
    if (!l)
        return PL_STATUS_OK;
    if (!json_is_array(l))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: " P "%s is not a list", file, key);
    size_t i;
    const json_t *v;
    json_array_foreach(l, i, v)
    {
        if (!json_is_string(v))
            return pl_err_set(err, PL_STATUS_FORMAT, "%s: " P "%s[%zu] is not a string", file,
                              key, i);
        const char *s = json_string_value(v);
        if (strlen(s) >= PL_QUANT_NAME_LEN)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s: " P "%s[%zu] is longer than %d "
                              "characters", file, key, i, PL_QUANT_NAME_LEN - 1);
        if (out->n_ignore == PL_QUANT_MAX_IGNORE)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s: " P "%s lists more than %d modules", file, key,
                              PL_QUANT_MAX_IGNORE);
        if (!strncmp(s, "re:", 3) && !regex_ok(s + 3))
            return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                              "%s: " P "%s[%zu] '%s' is not a regular expression pagellm "
                              "reads (POSIX extended, at most 16 repetitions of counts up to "
                              "64, nested at most two deep)",
                              file, key, i, s);
        snprintf(out->ignore[out->n_ignore++], PL_QUANT_NAME_LEN, "%s", s);
    }
    return PL_STATUS_OK;
}

static pl_status get_int(const char *file, const json_t *q, const char *key, int *out,
                         bool *present, struct pl_err *err)
{
    return pl_cfg_get_int(file, P, q, key, out, present, err);
}

static pl_status get_bool(const char *file, const json_t *q, const char *key, bool *out,
                          bool *present, struct pl_err *err)
{
    return pl_cfg_get_bool(file, P, q, key, out, present, err);
}

static bool group_ok(int g) { return g == -1 || g == 32 || g == 64 || g == 128; }

/* ---- AutoAWQ ------------------------------------------------------------------------ */

static pl_status parse_awq(const char *file, const json_t *q, struct pl_quant_config *o,
                           struct pl_err *err)
{
    bool has;
    pl_status st;
    o->method = PL_QUANT_AWQ;
    o->bits = 4;
    o->group_size = 128;
    bool zero_point = true;
    /* AutoAWQ's own quant_config.json spells them w_bit / q_group_size */
    if ((st = get_int(file, q, "bits", &o->bits, &has, err)) ||
        (!has && (st = get_int(file, q, "w_bit", &o->bits, &has, err))) ||
        (st = get_int(file, q, "group_size", &o->group_size, &has, err)) ||
        (!has && (st = get_int(file, q, "q_group_size", &o->group_size, &has, err))) ||
        (st = get_bool(file, q, "zero_point", &zero_point, &has, err)))
        return st;
    const char *version = NULL, *backend = NULL;
    if ((st = pl_cfg_get_str(file, P, q, "version", &version, err)) ||
        (st = pl_cfg_get_str(file, P, q, "backend", &backend, err)))
        return st;
    if (version && strcasecmp(version, "gemm"))
        return refuse(file, q, "AWQ version must be \"gemm\" (AutoAWQ's GEMM layout); "
                      "re-export the model with version=\"gemm\"", err);
    if (backend && strcasecmp(backend, "autoawq"))
        return refuse(file, q, "AWQ backend must be \"autoawq\"", err);
    if (o->bits != 4)
        return refuse(file, q, "AWQ bits must be 4", err);
    if (!zero_point)
        return refuse(file, q, "AWQ without zero points (zero_point false) is not supported",
                      err);
    if (o->group_size != 32 && o->group_size != 64 && o->group_size != 128)
        return refuse(file, q, "AWQ group_size must be 32, 64 or 128", err);
    o->sym = false;
    o->weight_strategy = PL_QSTRAT_GROUP;
    return read_ignore(file, q, "modules_to_not_convert", o, err);
}

/* ---- AutoGPTQ / GPTQModel ---------------------------------------------------------- */

static pl_status parse_gptq(const char *file, const json_t *q, struct pl_quant_config *o,
                            struct pl_err *err)
{
    bool has;
    pl_status st;
    o->method = PL_QUANT_GPTQ;
    o->bits = 4;
    o->group_size = 128;
    o->sym = true;
    bool lm_head = false;
    if ((st = get_int(file, q, "bits", &o->bits, &has, err)) ||
        (st = get_int(file, q, "group_size", &o->group_size, &has, err)) ||
        (st = get_bool(file, q, "desc_act", &o->desc_act, &has, err)) ||
        (st = get_bool(file, q, "sym", &o->sym, &has, err)) ||
        (st = get_bool(file, q, "lm_head", &lm_head, &has, err)))
        return st;
    const char *fmt = NULL, *pack = NULL;
    if ((st = pl_cfg_get_str(file, P, q, "checkpoint_format", &fmt, err)))
        return st;
    if (!fmt && (st = pl_cfg_get_str(file, P, q, "format", &fmt, err)))
        return st;
    if ((st = pl_cfg_get_str(file, P, q, "pack_dtype", &pack, err)))
        return st;
    if (fmt && strcmp(fmt, "gptq") && strcmp(fmt, "gptq_v2"))
        return refuse(file, q, "GPTQ checkpoint_format must be \"gptq\" or \"gptq_v2\"", err);
    o->gptq_v2 = fmt && !strcmp(fmt, "gptq_v2");
    if (pack && strcmp(pack, "int32"))
        return refuse(file, q, "GPTQ pack_dtype must be \"int32\"", err);
    if (o->bits != 4 && o->bits != 8)
        return refuse(file, q, "GPTQ bits must be 4 or 8", err);
    if (!group_ok(o->group_size))
        return refuse(file, q, "GPTQ group_size must be 32, 64, 128 or -1", err);
    if (lm_head)
        return refuse(file, q, "a quantized lm_head (lm_head true) is not supported", err);
    const json_t *dyn = get(q, "dynamic");
    if (dyn && (!json_is_object(dyn) || json_object_size(dyn)))
        return refuse(file, q, "GPTQModel per-module overrides (dynamic) are not supported", err);
    o->weight_strategy = o->group_size == -1 ? PL_QSTRAT_CHANNEL : PL_QSTRAT_GROUP;
    return read_ignore(file, q, "modules_to_not_convert", o, err);
}

/* ---- compressed-tensors ------------------------------------------------------------ */

static pl_status ct_strategy(const char *file, const char *what, const json_t *a,
                             enum pl_quant_strategy *out, struct pl_err *err)
{
    const char *s = NULL;
    pl_status st = pl_cfg_get_str(file, what, a, "strategy", &s, err);
    if (st)
        return st;
    static const struct {
        const char *name;
        enum pl_quant_strategy v;
    } names[] = {{"tensor", PL_QSTRAT_TENSOR}, {"channel", PL_QSTRAT_CHANNEL},
                 {"group", PL_QSTRAT_GROUP},   {"block", PL_QSTRAT_BLOCK},
                 {"token", PL_QSTRAT_TOKEN}};
    for (size_t i = 0; s && i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(s, names[i].name)) {
            *out = names[i].v;
            return PL_STATUS_OK;
        }
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "%s: %sstrategy '%s' is not supported", file,
                      what, s ? s : "(missing)");
}

static pl_status parse_ct(const char *file, const json_t *q, struct pl_quant_config *o,
                          struct pl_err *err)
{
    pl_status st;
    bool has;
    const char *fmt = NULL, *status = NULL;
    if ((st = pl_cfg_get_str(file, P, q, "format", &fmt, err)) ||
        (st = pl_cfg_get_str(file, P, q, "quantization_status", &status, err)))
        return st;
    if (status && strcmp(status, "compressed"))
        return refuse(file, q, "compressed-tensors quantization_status must be \"compressed\"",
                      err);
    const json_t *sp = get(q, "sparsity_config");
    if (sp && (!json_is_object(sp) || json_object_size(sp)))
        return refuse(file, q, "compressed-tensors sparsity (sparsity_config) is not supported",
                      err);
    if (get(q, "kv_cache_scheme"))
        return refuse(file, q, "compressed-tensors kv_cache_scheme (calibrated KV scales) is "
                      "not supported; use --kv-cache-dtype fp8 for dynamic scales", err);
    if (get(q, "transform_config"))
        return refuse(file, q, "compressed-tensors transforms are not supported", err);
    const json_t *groups = get(q, "config_groups");
    if (!json_is_object(groups) || json_object_size(groups) != 1)
        return refuse(file, q, "compressed-tensors config_groups must hold exactly one scheme",
                      err);
    const char *gname = NULL;
    json_t *g = NULL;
    json_object_foreach((json_t *)groups, gname, g) break;
    if (!gname || !g)
        return refuse(file, q, "compressed-tensors config_groups must hold exactly one scheme",
                      err);
    char pre[96];
    snprintf(pre, sizeof(pre), P "config_groups.%s.", gname);
    if (!json_is_object(g))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: %.*s is not an object", file,
                          (int)strlen(pre) - 1, pre);
    const char *gfmt = NULL;
    if ((st = pl_cfg_get_str(file, pre, g, "format", &gfmt, err)))
        return st;
    if (gfmt)
        fmt = gfmt;
    if (!fmt)
        return refuse(file, q, "compressed-tensors format is missing", err);
    /* targets */
    const json_t *t = get(g, "targets");
    if (!json_is_array(t) || !json_array_size(t))
        return refuse(file, q, "compressed-tensors targets must be a non-empty list", err);
    size_t i;
    const json_t *tv;
    bool linear = false;
    json_array_foreach(t, i, tv)
    {
        const char *s = json_is_string(tv) ? json_string_value(tv) : NULL;
        if (s && !strcmp(s, "Linear")) {
            linear = true;
        } else if (s && !strncmp(s, "re:", 3) && strlen(s) < PL_QUANT_NAME_LEN &&
                   o->n_targets < 8 && regex_ok(s + 3)) {
            snprintf(o->targets[o->n_targets++], PL_QUANT_NAME_LEN, "%s", s);
        } else {
            char what[256];
            snprintf(what, sizeof(what), "compressed-tensors target '%s' is not supported "
                     "(\"Linear\" or \"re:\" names)", s ? s : "(not a string)");
            return refuse(file, q, what, err);
        }
    }
    if (linear)
        o->n_targets = 0; /* every Linear: the regexes add nothing */
    if (get(g, "output_activations"))
        return refuse(file, q, "compressed-tensors output_activations are not supported", err);
    /* weights */
    const json_t *w = get(g, "weights");
    char wpre[128];
    snprintf(wpre, sizeof(wpre), "%sweights.", pre);
    if (!json_is_object(w))
        return refuse(file, q, "compressed-tensors scheme without weights", err);
    const char *type = NULL, *actorder = NULL;
    bool dynamic = false;
    o->sym = true;
    if ((st = pl_cfg_get_int(file, wpre, w, "num_bits", &o->bits, &has, err)) ||
        (st = pl_cfg_get_str(file, wpre, w, "type", &type, err)) ||
        (st = pl_cfg_get_bool(file, wpre, w, "symmetric", &o->sym, &has, err)) ||
        (st = pl_cfg_get_bool(file, wpre, w, "dynamic", &dynamic, &has, err)) ||
        (st = ct_strategy(file, wpre, w, &o->weight_strategy, err)))
        return st;
    const json_t *ao = get(w, "actorder");
    if (ao && json_is_string(ao))
        actorder = json_string_value(ao);
    else if (ao && !json_is_false(ao))
        return pl_err_set(err, PL_STATUS_FORMAT, "%sactorder is not a string", wpre);
    if (dynamic)
        return refuse(file, q, "compressed-tensors dynamic weight quantization is not supported",
                      err);
    const json_t *gs = get(w, "group_size");
    o->group_size = -1;
    if (gs && (st = pl_cfg_get_int(file, wpre, w, "group_size", &o->group_size, &has, err)))
        return st;
    const json_t *in = get(g, "input_activations");
    if (!strcmp(fmt, "pack-quantized")) {
        o->method = PL_QUANT_CT_PACKED;
        if (!type || strcmp(type, "int") || (o->bits != 4 && o->bits != 8))
            return refuse(file, q, "compressed-tensors pack-quantized weights must be int 4 or "
                          "8 bits", err);
        if (in)
            return refuse(file, q, "compressed-tensors pack-quantized with quantized "
                          "activations is not supported (W4A16 / W8A16 only)", err);
        if (o->weight_strategy == PL_QSTRAT_GROUP) {
            if (!group_ok(o->group_size) || o->group_size == -1)
                return refuse(file, q, "compressed-tensors group_size must be 32, 64 or 128",
                              err);
        } else if (o->weight_strategy == PL_QSTRAT_CHANNEL) {
            o->group_size = -1;
        } else {
            return refuse(file, q, "compressed-tensors pack-quantized strategy must be group or "
                          "channel", err);
        }
        o->desc_act = actorder && !strcmp(actorder, "group");
        if (actorder && strcmp(actorder, "group") && strcmp(actorder, "weight"))
            return refuse(file, q, "compressed-tensors actorder must be null, group or weight",
                          err);
    } else if (!strcmp(fmt, "float-quantized") || !strcmp(fmt, "naive-quantized")) {
        o->method = PL_QUANT_CT_FP8;
        if (!type || strcmp(type, "float") || o->bits != 8 || !o->sym)
            return refuse(file, q, "compressed-tensors float-quantized weights must be "
                          "symmetric float 8 bits (FP8 e4m3)", err);
        if (o->weight_strategy != PL_QSTRAT_TENSOR && o->weight_strategy != PL_QSTRAT_CHANNEL)
            return refuse(file, q, "compressed-tensors FP8 weight strategy must be tensor or "
                          "channel", err);
        o->group_size = -1;
        if (in) {
            char apre[128];
            snprintf(apre, sizeof(apre), "%sinput_activations.", pre);
            int abits = 0;
            const char *atype = NULL;
            bool asym = true;
            if ((st = pl_cfg_get_int(file, apre, in, "num_bits", &abits, &has, err)) ||
                (st = pl_cfg_get_str(file, apre, in, "type", &atype, err)) ||
                (st = pl_cfg_get_bool(file, apre, in, "symmetric", &asym, &has, err)) ||
                (st = pl_cfg_get_bool(file, apre, in, "dynamic", &o->act_dynamic, &has, err)) ||
                (st = ct_strategy(file, apre, in, &o->act_strategy, err)))
                return st;
            if (abits != 8 || !atype || strcmp(atype, "float") || !asym)
                return refuse(file, q, "compressed-tensors FP8 activations must be symmetric "
                              "float 8 bits", err);
            if (o->act_dynamic ? o->act_strategy != PL_QSTRAT_TOKEN &&
                                     o->act_strategy != PL_QSTRAT_TENSOR
                               : o->act_strategy != PL_QSTRAT_TENSOR)
                return refuse(file, q, "compressed-tensors FP8 activations must be dynamic per "
                              "token or tensor, or static per tensor", err);
            o->act_quant = true;
        }
    } else {
        char what[160];
        snprintf(what, sizeof(what), "compressed-tensors format '%s' is not supported "
                 "(pack-quantized, float-quantized)", fmt);
        return refuse(file, q, what, err);
    }
    return read_ignore(file, q, "ignore", o, err);
}

/* ---- fp8 ---------------------------------------------------------------------------- */

static pl_status parse_fp8(const char *file, const json_t *q, struct pl_quant_config *o,
                           struct pl_err *err)
{
    pl_status st;
    const char *scheme = NULL, *fmt = NULL;
    if ((st = pl_cfg_get_str(file, P, q, "activation_scheme", &scheme, err)) ||
        (st = pl_cfg_get_str(file, P, q, "fmt", &fmt, err)))
        return st;
    o->method = PL_QUANT_FP8;
    o->bits = 8;
    o->group_size = -1;
    o->sym = true;
    o->weight_strategy = PL_QSTRAT_TENSOR;
    o->act_quant = true;
    o->act_strategy = PL_QSTRAT_TENSOR;
    if (fmt && strcmp(fmt, "e4m3"))
        return refuse(file, q, "fp8 fmt must be \"e4m3\"", err);
    if (!scheme || !strcmp(scheme, "dynamic"))
        o->act_dynamic = true;
    else if (strcmp(scheme, "static"))
        return refuse(file, q, "fp8 activation_scheme must be \"dynamic\" or \"static\"", err);
    const json_t *b = get(q, "weight_block_size");
    if (b) {
        if (!json_is_array(b) || json_array_size(b) != 2 ||
            !json_is_integer(json_array_get(b, 0)) || !json_is_integer(json_array_get(b, 1)))
            return pl_err_set(err, PL_STATUS_FORMAT,
                              "%s: " P "weight_block_size is not a list of two integers", file);
        json_int_t bn = json_integer_value(json_array_get(b, 0));
        json_int_t bk = json_integer_value(json_array_get(b, 1));
        if (bn < 1 || bk < 1 || bn > 65536 || bk > 65536)
            return refuse(file, q, "fp8 weight_block_size entries must be in 1..65536", err);
        o->weight_strategy = PL_QSTRAT_BLOCK;
        o->block_n = (int)bn;
        o->block_k = (int)bk;
        o->act_strategy = PL_QSTRAT_GROUP; /* per token and block of inputs */
        if (!o->act_dynamic)
            return refuse(file, q, "fp8 block-wise weights need activation_scheme dynamic", err);
    }
    if ((st = read_ignore(file, q, "ignored_layers", o, err)))
        return st;
    return read_ignore(file, q, "modules_to_not_convert", o, err);
}

/* ---- entry points -------------------------------------------------------------------- */

pl_status pl_quant_config_parse(const char *file, const json_t *q, struct pl_quant_config *out,
                                struct pl_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!json_is_object(q))
        return pl_err_set(err, PL_STATUS_FORMAT, "%s: quantization_config is not an object",
                          file);
    const char *m = NULL;
    pl_status st = pl_cfg_get_str(file, P, q, "quant_method", &m, err);
    if (st)
        return st;
    if (!m)
        return refuse(file, q, "quant_method is missing", err);
    snprintf(out->method_name, sizeof(out->method_name), "%s", m);
    if (!strcmp(m, "awq"))
        st = parse_awq(file, q, out, err);
    else if (!strcmp(m, "gptq"))
        st = parse_gptq(file, q, out, err);
    else if (!strcmp(m, "compressed-tensors"))
        st = parse_ct(file, q, out, err);
    else if (!strcmp(m, "fp8"))
        st = parse_fp8(file, q, out, err);
    else
        st = refuse(file, q, "this quantization method is not supported (awq, gptq, "
                    "compressed-tensors, fp8)", err);
    if (st != PL_STATUS_OK)
        memset(out, 0, sizeof(*out));
    return st;
}

pl_status pl_quant_config_parse_text(const char *json, size_t len, struct pl_quant_config *out,
                                     struct pl_err *err)
{
    memset(out, 0, sizeof(*out));
    json_error_t jerr;
    json_t *q = json_loadb(json, len, 0, &jerr);
    if (!q)
        return pl_err_set(err, PL_STATUS_FORMAT, "quantization_config: not valid JSON: %s",
                          jerr.text);
    pl_status st = pl_quant_config_parse("config.json", q, out, err);
    json_decref(q);
    return st;
}

/* ---- flags --------------------------------------------------------------------------- */

static const struct {
    const char *flag;
    enum pl_quant_method a, b; /* the checkpoint methods the value accepts */
} FLAGS[] = {
    {"awq", PL_QUANT_AWQ, PL_QUANT_AWQ},
    {"awq_marlin", PL_QUANT_AWQ, PL_QUANT_AWQ},
    {"gptq", PL_QUANT_GPTQ, PL_QUANT_GPTQ},
    {"gptq_marlin", PL_QUANT_GPTQ, PL_QUANT_GPTQ},
    {"marlin", PL_QUANT_GPTQ, PL_QUANT_AWQ},
    {"compressed-tensors", PL_QUANT_CT_PACKED, PL_QUANT_CT_FP8},
    {"compressed_tensors", PL_QUANT_CT_PACKED, PL_QUANT_CT_FP8},
    {"fp8", PL_QUANT_FP8, PL_QUANT_FP8},
};
#define N_FLAGS (sizeof(FLAGS) / sizeof(FLAGS[0]))

bool pl_quant_flag_known(const char *value)
{
    if (!value || !*value || !strcmp(value, "none"))
        return true;
    for (size_t i = 0; i < N_FLAGS; i++)
        if (!strcmp(value, FLAGS[i].flag))
            return true;
    return false;
}

const char *pl_quant_flag_values(void)
{
    return "none, awq, awq_marlin, gptq, gptq_marlin, marlin, compressed-tensors, fp8";
}

pl_status pl_quant_config_apply_flag(struct pl_quant_config *q, const char *flag,
                                     struct pl_err *err)
{
    if (!flag || !*flag || !strcmp(flag, "none"))
        return PL_STATUS_OK;
    for (size_t i = 0; i < N_FLAGS; i++) {
        if (strcmp(flag, FLAGS[i].flag))
            continue;
        if (q->method == PL_QUANT_NONE) {
            if (FLAGS[i].a != PL_QUANT_FP8)
                return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                                  "--quantization %s: the checkpoint is not quantized (no "
                                  "quantization_config); only fp8 quantizes at load", flag);
            memset(q, 0, sizeof(*q));
            q->method = PL_QUANT_FP8;
            q->online = true;
            q->bits = 8;
            q->group_size = -1;
            q->sym = true;
            q->weight_strategy = PL_QSTRAT_TENSOR;
            q->act_quant = true;
            q->act_dynamic = true;
            q->act_strategy = PL_QSTRAT_TENSOR;
            snprintf(q->method_name, sizeof(q->method_name), "fp8");
            /* vLLM leaves the LM head unquantized */
            snprintf(q->ignore[q->n_ignore++], PL_QUANT_NAME_LEN, "lm_head");
            return PL_STATUS_OK;
        }
        if (q->method == FLAGS[i].a || q->method == FLAGS[i].b)
            return PL_STATUS_OK;
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "--quantization %s does not match the checkpoint's "
                          "quantization_config (quant_method %s)", flag, q->method_name);
    }
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                      "--quantization '%s' is not one of %s", flag, pl_quant_flag_values());
}

bool pl_kv_cache_dtype_parse(const char *value, enum pl_kv_cache_dtype *out)
{
    if (!value)
        return false;
    if (!strcmp(value, "auto")) {
        *out = PL_KV_CACHE_AUTO;
        return true;
    }
    if (!strcmp(value, "fp8") || !strcmp(value, "fp8_e4m3")) {
        *out = PL_KV_CACHE_FP8_E4M3;
        return true;
    }
    return false;
}

void pl_quant_describe(const struct pl_quant_config *q, char *out, size_t cap)
{
    switch (q->method) {
    case PL_QUANT_NONE: snprintf(out, cap, "unquantized"); return;
    case PL_QUANT_AWQ: snprintf(out, cap, "AWQ int4 group %d", q->group_size); return;
    case PL_QUANT_GPTQ:
        snprintf(out, cap, "GPTQ int%d %s%s%s (%s)", q->bits,
                 q->group_size == -1 ? "per channel" : "group ",
                 q->group_size == -1 ? "" : (q->group_size == 32 ? "32" : q->group_size == 64
                                                                        ? "64" : "128"),
                 q->desc_act ? " act-order" : "", q->gptq_v2 ? "gptq_v2" : "gptq");
        return;
    case PL_QUANT_CT_PACKED:
        if (q->group_size == -1)
            snprintf(out, cap, "compressed-tensors W%dA16 per channel%s", q->bits,
                     q->sym ? "" : " asymmetric");
        else
            snprintf(out, cap, "compressed-tensors W%dA16 group %d%s%s", q->bits, q->group_size,
                     q->sym ? "" : " asymmetric", q->desc_act ? " act-order" : "");
        return;
    case PL_QUANT_CT_FP8:
        snprintf(out, cap, "compressed-tensors FP8 W8A%s (weights per %s%s%s)",
                 q->act_quant ? "8" : "16",
                 q->weight_strategy == PL_QSTRAT_CHANNEL ? "channel" : "tensor",
                 q->act_quant ? (q->act_dynamic ? ", activations dynamic per " : ", activations "
                                                                                 "static per ")
                              : "",
                 q->act_quant ? (q->act_strategy == PL_QSTRAT_TOKEN ? "token" : "tensor") : "");
        return;
    case PL_QUANT_FP8:
        if (q->weight_strategy == PL_QSTRAT_BLOCK)
            snprintf(out, cap, "FP8 block %dx%d", q->block_n, q->block_k);
        else
            snprintf(out, cap, "FP8%s (per-tensor weights, %s activations)",
                     q->online ? " quantized at load" : "", q->act_dynamic ? "dynamic" : "static");
        return;
    }
    snprintf(out, cap, "?");
}

/* ---- targeting ----------------------------------------------------------------------- */

/* Whether one ignore/target entry names `module`: a plain name matches the module or a
 * module under it; "re:" is matched from the start (Python's re.match) in POSIX ERE,
 * with \d, \w and \. written the Python way accepted. */
static bool entry_matches(const char *entry, const char *module)
{
    if (strncmp(entry, "re:", 3)) {
        size_t n = strlen(entry);
        if (!strncmp(module, entry, n) && (module[n] == '\0' || module[n] == '.'))
            return true;
        /* transformers names modules under the model ("model.layers.0..."): the producers'
         * ignore lists sometimes name them from the layers down */
        const char *dot = strchr(module, '.');
        return dot && !strncmp(dot + 1, entry, n) && (dot[1 + n] == '\0' || dot[1 + n] == '.');
    }
    char pat[3 * PL_QUANT_NAME_LEN + 8];
    size_t o = 0;
    pat[o++] = '^';
    pat[o++] = '(';
    for (const char *p = entry + 3; *p && o + 16 < sizeof(pat); p++) {
        if (p[0] == '\\' && p[1] == 'd') {
            memcpy(pat + o, "[0-9]", 5);
            o += 5;
            p++;
        } else if (p[0] == '\\' && p[1] == 'w') {
            memcpy(pat + o, "[A-Za-z0-9_]", 12);
            o += 12;
            p++;
        } else {
            pat[o++] = *p;
        }
    }
    pat[o++] = ')';
    pat[o] = '\0';
    regex_t re;
    if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB))
        return false;
    bool hit = regexec(&re, module, 0, NULL, 0) == 0;
    regfree(&re);
    return hit;
}

bool pl_quant_module_is_quantized(const struct pl_quant_config *q, const char *module)
{
    if (q->method == PL_QUANT_NONE)
        return false;
    for (int i = 0; i < q->n_ignore; i++)
        if (entry_matches(q->ignore[i], module))
            return false;
    if (q->n_targets == 0)
        return true;
    for (int i = 0; i < q->n_targets; i++)
        if (entry_matches(q->targets[i], module))
            return true;
    return false;
}
