/*
 * flags.c -- the sampling and engine flags shared by `pagellm generate`,
 * `chat`, `serve` and `worker`, named as vLLM names them, and the checks every
 * model command runs before loading (model directory, exit codes).
 *
 * Owns: struct pl_cli_flags (the parsed values plus the storage behind the
 * sampling params' arrays: stop strings, stop token ids, the merged
 * override). A value is checked here as far as it can be without the model:
 * syntax (an integer, a number, a list), enums and engine ranges in
 * pl_cli_flags_value; sampling ranges through pl_sampling_params_validate in
 * pl_cli_flags_check (its messages name the field, ours the flag). What needs
 * the model (vocabulary, max_position_embeddings, KV memory) is checked by
 * pl_llm_new after loading.
 */
#include "engine/sampling_params.h"
#include "cli/cli.h"
#include "util/fs.h"
#include "grammar/grammar.h"
#include "backend/backend.h"
#include "engine/block_manager.h"
#include "model/config.h"
#include "model/hub.h"
#include "model/quant.h"
#include "util/dtype.h"

#include <jansson.h>
#include <sys/stat.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An environment switch: set and not "0" / "false" (vLLM reads its env flags so). */
static bool env_true(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") && strcasecmp(v, "false");
}

/* An environment variable set to exactly `value`. */
static bool env_is(const char *name, const char *value)
{
    const char *v = getenv(name);
    return v && !strcmp(v, value);
}

void pl_cli_llm_params_from_env(struct pl_llm_params *p)
{
    /* vLLM's variable, so a deployment's environment carries over */
    p->allow_long_max_model_len = env_true("VLLM_ALLOW_LONG_MAX_MODEL_LEN");
    /* pagellm's former engine variables (now pl_llm_params fields): the programs
     * still read them, so scripts and deployments that set them keep working */
    p->enforce_eager = env_is("PAGELLM_CUDA_GRAPHS", "0");
    p->host_sampling = env_is("PAGELLM_SAMPLER", "host");
    p->cpu_scalar_kernels = env_is("PAGELLM_CPU_SIMD", "0");
    p->cuda_cublas_only = env_is("PAGELLM_CUDA_GEMV", "0");
}

void pl_cli_flags_init(struct pl_cli_flags *f)
{
    memset(f, 0, sizeof(*f));
    pl_llm_params_default(&f->llm);
    pl_sampling_params_default(&f->sp);
    pl_cli_llm_params_from_env(&f->llm);
}

void pl_cli_flags_fini(struct pl_cli_flags *f)
{
    free(f->stop);
    free(f->stop_ids);
    free(f->override_owned);
    free(f->constraint);
    memset(f, 0, sizeof(*f));
}

/* Records the first sampling flag a server cannot take as a default. */
static void per_request(struct pl_cli_flags *f, const char *flag)
{
    if (!f->per_request_flag)
        f->per_request_flag = flag;
}

static bool parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || isnan(v) || isinf(v))
        return false;
    *out = (float)v;
    return true;
}

static int bad_value(const char *cmd, const char *flag, const char *val, const char *what)
{
    fprintf(stderr, "pagellm %s: %s '%s' is not %s\n", cmd, flag, val, what);
    return -1;
}

int pl_cli_flags_bool(struct pl_cli_flags *f, const char *flag)
{
    if (!strcmp(flag, "--enable-prefix-caching")) {
        f->llm.enable_prefix_caching = true;
        return 1;
    }
    if (!strcmp(flag, "--no-enable-prefix-caching")) {
        f->llm.enable_prefix_caching = false;
        return 1;
    }
    if (!strcmp(flag, "--allow-long-max-model-len")) {
        f->llm.allow_long_max_model_len = true;
        return 1;
    }
    if (!strcmp(flag, "--enforce-eager")) {
        f->llm.enforce_eager = true;
        return 1;
    }
    if (!strcmp(flag, "--ignore-eos"))
        f->sp.ignore_eos = true;
    else if (!strcmp(flag, "--include-stop-str-in-output"))
        f->sp.include_stop_str_in_output = true;
    else if (!strcmp(flag, "--no-skip-special-tokens"))
        f->sp.skip_special_tokens = false;
    else if (!strcmp(flag, "--early-stopping"))
        f->sp.early_stopping = true;
    else
        return 0;
    f->sp_set = true;
    per_request(f, flag);
    return 1;
}

const char *pl_cli_split_flag(const char *arg, char *buf, size_t n, const char **val)
{
    const char *eq = strchr(arg, '=');
    if (strncmp(arg, "--", 2) || !eq || (size_t)(eq - arg) >= n)
        return arg;
    memcpy(buf, arg, (size_t)(eq - arg));
    buf[eq - arg] = '\0';
    *val = eq + 1;
    return buf;
}

bool pl_cli_parse_ids(const char *s, int32_t **out, int *n_out)
{
    int cap = 16, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids)
        return false;
    const char *c = s;
    while (*c == ' ' || *c == '\t' || *c == '[')
        c++;
    for (;;) {
        char *end;
        errno = 0;
        long v = strtol(c, &end, 10);
        if (end == c)
            break;
        if (errno || v < 0 || v > INT32_MAX || !(*c >= '0' && *c <= '9')) {
            free(ids);
            return false;
        }
        if (n == cap) {
            int32_t *g = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!g) {
                free(ids);
                return false;
            }
            ids = g;
        }
        ids[n++] = (int32_t)v;
        c = end;
        while (*c == ' ' || *c == '\t' || *c == '\n')
            c++;
        if (*c == ',') {
            c++;
            while (*c == ' ' || *c == '\t' || *c == '\n')
                c++;
            if (!(*c >= '0' && *c <= '9')) {
                free(ids);
                return false;
            }
        }
    }
    while (*c == ' ' || *c == '\t' || *c == '\n' || *c == ']')
        c++;
    if (*c) {
        free(ids);
        return false;
    }
    *out = ids;
    *n_out = n;
    return true;
}

int pl_cli_flags_value(struct pl_cli_flags *f, const char *cmd, const char *flag, const char *val)
{
    struct pl_sampling_params *sp = &f->sp;
    struct pl_llm_params *lp = &f->llm;
    long v;
    /* server: the flag is a generation_config key a server may take as a default */
    struct {
        const char *name;
        float *dst;
        bool server;
    } floats[PL_CLI_N_FLOAT_FLAGS] = {
        [PL_CLI_TEMPERATURE] = {"--temperature", &sp->temperature, true},
        [PL_CLI_TOP_P] = {"--top-p", &sp->top_p, true},
        [PL_CLI_MIN_P] = {"--min-p", &sp->min_p, true},
        [PL_CLI_PRESENCE_PENALTY] = {"--presence-penalty", &sp->presence_penalty, false},
        [PL_CLI_FREQUENCY_PENALTY] = {"--frequency-penalty", &sp->frequency_penalty, false},
        [PL_CLI_REPETITION_PENALTY] = {"--repetition-penalty", &sp->repetition_penalty, true},
        [PL_CLI_LENGTH_PENALTY] = {"--length-penalty", &sp->length_penalty, false},
    };
    for (size_t k = 0; k < PL_CLI_N_FLOAT_FLAGS; k++) {
        if (strcmp(flag, floats[k].name))
            continue;
        if (!parse_float(val, floats[k].dst))
            return bad_value(cmd, flag, val, "a number");
        f->sp_set = true;
        f->float_set[k] = true;
        if (!floats[k].server)
            per_request(f, floats[k].name);
        return 1;
    }
    struct {
        const char *name;
        int *dst;
        bool server;
    } sampling_ints[PL_CLI_N_INT_FLAGS] = {
        [PL_CLI_N] = {"--n", &sp->n, false},
        [PL_CLI_TOP_K] = {"--top-k", &sp->top_k, true},
        [PL_CLI_MAX_TOKENS] = {"--max-tokens", &sp->max_tokens, true},
        [PL_CLI_MIN_TOKENS] = {"--min-tokens", &sp->min_tokens, false},
        [PL_CLI_LOGPROBS] = {"--logprobs", &sp->logprobs, false},
        [PL_CLI_PROMPT_LOGPROBS] = {"--prompt-logprobs", &sp->prompt_logprobs, false},
        [PL_CLI_BEAM_WIDTH] = {"--beam-width", &sp->beam_width, false},
    };
    for (size_t k = 0; k < PL_CLI_N_INT_FLAGS; k++) {
        if (strcmp(flag, sampling_ints[k].name))
            continue;
        if (!parse_long(val, INT_MIN, INT_MAX, &v))
            return bad_value(cmd, flag, val, "an integer");
        *sampling_ints[k].dst = (int)v;
        f->sp_set = true;
        f->int_set[k] = true;
        if (!sampling_ints[k].server)
            per_request(f, sampling_ints[k].name);
        if (k == PL_CLI_BEAM_WIDTH)
            sp->use_beam_search = true;
        return 1;
    }
    struct {
        const char *name;
        int *dst;
        long lo, hi;
        const char *what;
    } ints[] = {
        {"--max-num-seqs", &lp->max_num_seqs, 1, INT_MAX, "a positive integer"},
        {"--max-num-batched-tokens", &lp->max_num_batched_tokens, 1, INT_MAX,
         "a positive integer"},
        {"--block-size", &lp->block_size, 8, 32, "one of 8, 16, 32"},
        {"--num-kv-blocks", &lp->num_kv_blocks, 1, PL_KV_MAX_BLOCKS, NULL},
        {"--max-model-len", &lp->max_model_len, 1, INT_MAX, "a positive integer"},
        {"--threads", &lp->n_threads, 0, 4096, "an integer in 0..4096 (0: one per core)"},
        {"--tensor-parallel-size", &lp->tensor_parallel_size, 1, 64, "an integer in 1..64"},
        {"--long-prefill-token-threshold", &lp->long_prefill_token_threshold, 0, INT_MAX,
         "a non-negative integer"},
        {"--prefill-chunk", &lp->long_prefill_token_threshold, 1, INT_MAX, "a positive integer"},
    };
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        if (strcmp(flag, ints[k].name))
            continue;
        if (!parse_long(val, ints[k].lo, ints[k].hi, &v) ||
            (ints[k].dst == &lp->block_size && v != 8 && v != 16 && v != 32)) {
            char what[64];
            snprintf(what, sizeof(what), "an integer in %ld..%ld", ints[k].lo, ints[k].hi);
            return bad_value(cmd, flag, val, ints[k].what ? ints[k].what : what);
        }
        *ints[k].dst = (int)v;
        return 1;
    }
    if (!strcmp(flag, "--seed")) {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(val, &end, 10);
        if (errno || end == val || *end || val[0] == '-')
            return bad_value(cmd, flag, val, "a non-negative integer");
        sp->has_seed = true;
        sp->seed = s;
        lp->seed = s;
        f->seed_set = true;
        return 1;
    }
    if (!strcmp(flag, "--stop")) {
        if (!*val)
            return bad_value(cmd, flag, val, "a non-empty string");
        const char **g = realloc(f->stop, sizeof(char *) * (size_t)(f->n_stop + 1));
        if (!g)
            return -1;
        f->stop = g;
        f->stop[f->n_stop++] = val;
        f->sp_set = true;
        per_request(f, "--stop");
        return 1;
    }
    if (!strcmp(flag, "--stop-token-ids")) {
        free(f->stop_ids);
        f->stop_ids = NULL;
        if (!pl_cli_parse_ids(val, &f->stop_ids, &f->n_stop_ids))
            return bad_value(cmd, flag, val, "a comma-separated list of token ids");
        f->sp_set = true;
        per_request(f, "--stop-token-ids");
        return 1;
    }
    if (!strcmp(flag, "--json-schema") || !strcmp(flag, "--regex") ||
        !strcmp(flag, "--choice") || !strcmp(flag, "--grammar")) {
        if (f->constraint_flag) {
            fprintf(stderr, "pagellm %s: %s and %s: give one structured output constraint\n",
                    cmd, f->constraint_flag, flag);
            return -1;
        }
        char *text = NULL;
        enum pl_constraint_kind kind;
        if (!strcmp(flag, "--regex")) {
            kind = PL_CONSTRAINT_REGEX;
            text = strdup(val);
        } else if (!strcmp(flag, "--choice")) {
            kind = PL_CONSTRAINT_CHOICE;
            json_t *a = json_array();
            for (const char *p = val; a;) {
                const char *c = strchr(p, ',');
                size_t n = c ? (size_t)(c - p) : strlen(p);
                if (json_array_append_new(a, json_stringn(p, n)) != 0) {
                    json_decref(a);
                    a = NULL;
                }
                if (!c)
                    break;
                p = c + 1;
            }
            text = a ? json_dumps(a, JSON_COMPACT) : NULL;
            json_decref(a);
        } else {
            kind = !strcmp(flag, "--json-schema") ? PL_CONSTRAINT_JSON : PL_CONSTRAINT_GRAMMAR;
            struct pl_err err;
            size_t len;
            if (pl_fs_read_file(val, (size_t)1 << 20, &text, &len, &err) != PL_STATUS_OK) {
                fprintf(stderr, "pagellm %s: %s %s: %s\n", cmd, flag, val, err.msg);
                return -1;
            }
        }
        if (!text)
            return -1;
        struct pl_err err;
        if (pl_grammar_check(kind, text, NULL, &err) != PL_STATUS_OK) {
            fprintf(stderr, "pagellm %s: %s: %s\n", cmd, flag, err.msg);
            free(text);
            return -1;
        }
        f->constraint_kind = kind;
        f->constraint = text;
        f->constraint_flag = flag;
        f->sp_set = true;
        per_request(f, flag);
        return 1;
    }
    if (!strcmp(flag, "--override-generation-config")) {
        f->override_json = val;
        return 1;
    }
    if (!strcmp(flag, "--generation-config")) {
        if (strcmp(val, "auto") && strcmp(val, "vllm"))
            return bad_value(cmd, flag, val, "auto or vllm");
        lp->generation_config = val;
        return 1;
    }
    if (!strcmp(flag, "--model")) {
        lp->model = val;
        return 1;
    }
    if (!strcmp(flag, "--revision")) {
        f->revision = val;
        return 1;
    }
    if (!strcmp(flag, "--download-dir")) {
        f->download_dir = val;
        return 1;
    }
    if (!strcmp(flag, "--device")) {
        if (!pl_backend_name_known(val)) {
            char what[96];
            snprintf(what, sizeof(what), "one of %s", pl_backend_names());
            return bad_value(cmd, flag, val, what);
        }
        lp->device = val;
        return 1;
    }
    if (!strcmp(flag, "--gpu-memory-utilization")) {
        float u;
        if (!parse_float(val, &u) || u <= 0.0f || u > 1.0f)
            return bad_value(cmd, flag, val, "a number in (0, 1]");
        lp->gpu_memory_utilization = u;
        return 1;
    }
    if (!strcmp(flag, "--load-format")) {
        if (strcmp(val, "auto") && strcmp(val, "safetensors") && strcmp(val, "dummy"))
            return bad_value(cmd, flag, val, "auto, safetensors or dummy");
        lp->load_format = val;
        return 1;
    }
    if (!strcmp(flag, "--dtype")) {
        enum pl_dtype t;
        if (strcmp(val, "auto") && !pl_dtype_parse_torch(val, &t))
            return bad_value(cmd, flag, val,
                             "one of auto, bfloat16, float16, half, float32, float");
        lp->dtype = val;
        return 1;
    }
    if (!strcmp(flag, "--quantization")) {
        if (!pl_quant_flag_known(val)) {
            char what[160];
            snprintf(what, sizeof(what), "one of %s", pl_quant_flag_values());
            return bad_value(cmd, flag, val, what);
        }
        lp->quantization = val;
        return 1;
    }
    if (!strcmp(flag, "--kv-cache-dtype")) {
        enum pl_kv_cache_dtype kd;
        if (!pl_kv_cache_dtype_parse(val, &kd))
            return bad_value(cmd, flag, val, "one of auto, fp8, fp8_e4m3");
        lp->kv_cache_dtype = val;
        return 1;
    }
    if (!strcmp(flag, "--kv-cache-bytes")) {
        long long b;
        char *end;
        errno = 0;
        b = strtoll(val, &end, 10);
        if (errno || end == val || *end || b < 1)
            return bad_value(cmd, flag, val, "a positive byte count");
        lp->kv_cache_bytes = (size_t)b;
        return 1;
    }
    return 0;
}

/* Validates p (vLLM's defaults plus some flags) without a vocabulary; prints
 * "pagellm CMD: WHAT: message" and returns false when it is refused. */
static bool sampling_ok(const char *cmd, const char *what, const struct pl_sampling_params *p)
{
    struct pl_sampling_params check = *p; /* validate normalizes: work on a copy */
    struct pl_err err;
    if (pl_sampling_params_validate(&check, 0, &err) == PL_STATUS_OK)
        return true;
    fprintf(stderr, "pagellm %s: %s: %s\n", cmd, what, err.msg);
    return false;
}

/* The defaults a flag is checked against: vLLM's, with max_tokens None, since the
 * real default (16, generation_config, or chat's "rest of the context") is not known
 * before loading and must not make e.g. --min-tokens 20 look wrong. */
static void check_base(struct pl_sampling_params *p)
{
    pl_sampling_params_default(p);
    p->max_tokens = -1;
}

/* --override-generation-config plus, for servers, the default flags -> one JSON text
 * in f->override_owned. 0 or 2. */
static int merge_override(struct pl_cli_flags *f, const char *cmd, bool server)
{
    json_t *o = NULL;
    if (f->override_json) {
        json_error_t je;
        o = json_loads(f->override_json, 0, &je);
        if (!json_is_object(o)) {
            fprintf(stderr, "pagellm %s: --override-generation-config: %s%s\n", cmd,
                    o ? "not a JSON object" : "not valid JSON: ", o ? "" : je.text);
            json_decref(o);
            return 2;
        }
    } else if (server && f->sp_set) {
        o = json_object();
    }
    if (!o)
        return 0;
    if (server) {
        const struct pl_sampling_params *sp = &f->sp;
        if (f->float_set[PL_CLI_TEMPERATURE])
            json_object_set_new(o, "temperature", json_real(sp->temperature));
        if (f->float_set[PL_CLI_TOP_P])
            json_object_set_new(o, "top_p", json_real(sp->top_p));
        if (f->float_set[PL_CLI_MIN_P])
            json_object_set_new(o, "min_p", json_real(sp->min_p));
        if (f->float_set[PL_CLI_REPETITION_PENALTY])
            json_object_set_new(o, "repetition_penalty", json_real(sp->repetition_penalty));
        if (f->int_set[PL_CLI_TOP_K])
            json_object_set_new(o, "top_k", json_integer(sp->top_k));
        if (f->int_set[PL_CLI_MAX_TOKENS])
            json_object_set_new(o, "max_new_tokens", json_integer(sp->max_tokens));
    }
    /* float values: 9 significant digits give the float back exactly */
    f->override_owned = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(o);
    if (!f->override_owned) {
        fprintf(stderr, "pagellm %s: out of memory\n", cmd);
        return 1;
    }
    struct pl_generation_config g;
    struct pl_err err;
    const char *what = f->override_json ? "--override-generation-config" : "sampling defaults";
    if (pl_generation_config_parse_override(f->override_owned, what, &g, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm %s: %s\n", cmd, err.msg);
        return 2;
    }
    struct pl_sampling_params p;
    check_base(&p);
    pl_sampling_params_apply_generation_override(&p, &g);
    if (!sampling_ok(cmd, what, &p))
        return 2;
    f->llm.override_generation_config = f->override_owned;
    return 0;
}

int pl_cli_flags_check(struct pl_cli_flags *f, const char *cmd, enum pl_cli_sampling_use use)
{
    const struct pl_llm_params *lp = &f->llm;
    if (lp->max_num_batched_tokens < lp->max_num_seqs) {
        fprintf(stderr,
                "pagellm %s: --max-num-batched-tokens (%d) must be at least --max-num-seqs "
                "(%d)\n",
                cmd, lp->max_num_batched_tokens, lp->max_num_seqs);
        return 2;
    }
    const bool server = use == PL_CLI_SAMPLING_SERVER;
    if (server && f->per_request_flag) {
        fprintf(stderr,
                "pagellm %s: %s is a per-request sampling field, not a server option (server "
                "defaults: --temperature, --top-p, --top-k, --min-p, --repetition-penalty, "
                "--max-tokens, --override-generation-config)\n",
                cmd, f->per_request_flag);
        return 2;
    }
    int rc = merge_override(f, cmd, server);
    if (rc || server)
        return rc;
    /* each flag alone on the defaults: a refusal names the flag */
    static const char *const float_names[PL_CLI_N_FLOAT_FLAGS] = {
        "--temperature", "--top-p", "--min-p", "--presence-penalty", "--frequency-penalty",
        "--repetition-penalty", "--length-penalty"};
    static const char *const int_names[PL_CLI_N_INT_FLAGS] = {
        "--n", "--top-k", "--max-tokens", "--min-tokens", "--logprobs", "--prompt-logprobs",
        "--beam-width"};
    struct pl_sampling_params all;
    pl_cli_flags_sampling(f, NULL, &all);
    if (!f->int_set[PL_CLI_MAX_TOKENS])
        all.max_tokens = -1;
    for (int k = 0; k < PL_CLI_N_FLOAT_FLAGS; k++) {
        if (!f->float_set[k])
            continue;
        struct pl_sampling_params p;
        check_base(&p);
        float *dst[PL_CLI_N_FLOAT_FLAGS] = {&p.temperature,       &p.top_p,
                                            &p.min_p,             &p.presence_penalty,
                                            &p.frequency_penalty, &p.repetition_penalty,
                                            &p.length_penalty};
        const float src[PL_CLI_N_FLOAT_FLAGS] = {all.temperature,       all.top_p,
                                                 all.min_p,             all.presence_penalty,
                                                 all.frequency_penalty, all.repetition_penalty,
                                                 all.length_penalty};
        *dst[k] = src[k];
        p.use_beam_search = k == PL_CLI_LENGTH_PENALTY;
        if (!sampling_ok(cmd, float_names[k], &p))
            return 2;
    }
    for (int k = 0; k < PL_CLI_N_INT_FLAGS; k++) {
        if (!f->int_set[k])
            continue;
        struct pl_sampling_params p;
        check_base(&p);
        int *dst[PL_CLI_N_INT_FLAGS] = {&p.n,        &p.top_k,           &p.max_tokens,
                                        &p.min_tokens, &p.logprobs,      &p.prompt_logprobs,
                                        &p.beam_width};
        const int src[PL_CLI_N_INT_FLAGS] = {all.n,        all.top_k,           all.max_tokens,
                                             all.min_tokens, all.logprobs,      all.prompt_logprobs,
                                             all.beam_width};
        *dst[k] = src[k];
        p.use_beam_search = k == PL_CLI_BEAM_WIDTH;
        if (k == PL_CLI_BEAM_WIDTH && (src[k] < 1 || src[k] > PL_MAX_LOGPROBS / 2)) {
            /* beam search reads 2 x beam_width logprobs per step (beam_search.c) */
            fprintf(stderr, "pagellm %s: --beam-width: must be in 1..%d, got %d\n", cmd,
                    PL_MAX_LOGPROBS / 2, src[k]);
            return 2;
        }
        if (!sampling_ok(cmd, int_names[k], &p))
            return 2;
    }
    /* then together (min_tokens <= max_tokens, greedy with n > 1, ...) */
    if (!sampling_ok(cmd, "sampling flags", &all))
        return 2;
    return 0;
}

int pl_cli_exit_code(pl_status st)
{
    return st == PL_STATUS_INVALID_ARGUMENT ? 2 : 1;
}

int pl_cli_check_model_dir(const char *cmd, const char *model)
{
    struct stat sb;
    if (stat(model, &sb) == 0 && S_ISDIR(sb.st_mode))
        return 0;
    if (errno == ENOENT && pl_hub_is_repo_id(model))
        return 0; /* a Hub id: pl_cli_hub_model resolves it (download.c) */
    if (stat(model, &sb) == 0)
        fprintf(stderr, "pagellm %s: model '%s' is not a directory (pass the folder that holds "
                        "config.json)\n", cmd, model);
    else
        fprintf(stderr, "pagellm %s: no model directory at '%s': %s\n", cmd, model,
                strerror(errno));
    return 1;
}

/*
 * The request's sampling params: the LLM's defaults (vLLM's, then the
 * generation config) with every flag given on the command line on top.
 */
void pl_cli_flags_sampling(struct pl_cli_flags *f, const struct pl_llm *llm,
                           struct pl_sampling_params *out)
{
    pl_llm_default_sampling_params(llm, out);
    const struct pl_sampling_params *sp = &f->sp;
    float *const out_floats[PL_CLI_N_FLOAT_FLAGS] = {&out->temperature,      &out->top_p,
                                 &out->min_p,            &out->presence_penalty,
                                 &out->frequency_penalty, &out->repetition_penalty,
                                 &out->length_penalty};
    const float in_floats[PL_CLI_N_FLOAT_FLAGS] = {sp->temperature,       sp->top_p,
                               sp->min_p,             sp->presence_penalty,
                               sp->frequency_penalty, sp->repetition_penalty,
                               sp->length_penalty};
    for (int k = 0; k < PL_CLI_N_FLOAT_FLAGS; k++)
        if (f->float_set[k])
            *out_floats[k] = in_floats[k];
    int *const out_ints[PL_CLI_N_INT_FLAGS] = {&out->n,        &out->top_k,           &out->max_tokens,
                             &out->min_tokens, &out->logprobs,        &out->prompt_logprobs,
                             &out->beam_width};
    const int in_ints[PL_CLI_N_INT_FLAGS] = {sp->n,        sp->top_k,           sp->max_tokens, sp->min_tokens,
                           sp->logprobs, sp->prompt_logprobs, sp->beam_width};
    for (int k = 0; k < PL_CLI_N_INT_FLAGS; k++)
        if (f->int_set[k])
            *out_ints[k] = in_ints[k];
    if (f->seed_set) {
        out->has_seed = true;
        out->seed = sp->seed;
    }
    out->ignore_eos = sp->ignore_eos;
    out->include_stop_str_in_output = sp->include_stop_str_in_output;
    out->skip_special_tokens = sp->skip_special_tokens;
    out->early_stopping = sp->early_stopping;
    out->use_beam_search = sp->use_beam_search;
    out->stop = f->stop;
    out->n_stop = f->n_stop;
    out->stop_token_ids = f->stop_ids;
    out->n_stop_token_ids = f->n_stop_ids;
    if (f->constraint_flag) {
        out->constraint_kind = f->constraint_kind;
        out->constraint = f->constraint;
    }
}

const char *pl_cli_flags_help_sampling(void)
{
    return "sampling (vLLM's SamplingParams; defaults: vLLM's, then the model's\n"
           "generation_config.json unless --generation-config vllm, then\n"
           "--override-generation-config):\n"
           "  --n N                       samples per prompt (1)\n"
           "  --temperature T             0 = greedy (1.0)\n"
           "  --top-p P                   nucleus mass (1.0)\n"
           "  --top-k K                   keep the K most likely, 0 or -1 = off (0)\n"
           "  --min-p P                   drop tokens below P * the top probability (0)\n"
           "  --presence-penalty X        [-2, 2] (0)\n"
           "  --frequency-penalty X       [-2, 2] (0)\n"
           "  --repetition-penalty X      > 0 (1.0)\n"
           "  --seed S                    the request's seed (and the engine's); sample k of\n"
           "                              n uses seed S + k\n"
           "  --stop STR                  stop string (repeatable)\n"
           "  --include-stop-str-in-output keep the stop string in the text\n"
           "  --stop-token-ids IDS        comma-separated stop token ids\n"
           "  --ignore-eos                do not stop at eos\n"
           "  --max-tokens N              tokens to generate (16 for generate)\n"
           "  --min-tokens N              no eos/stop before N tokens (0)\n"
           "  --logprobs K                top-K logprobs per generated token (0..20)\n"
           "  --prompt-logprobs K         top-K logprobs per prompt token (0..20)\n"
           "  --no-skip-special-tokens    keep special tokens in the text\n"
           "  --beam-width N              beam search with N beams (1..10), N outputs\n"
           "  --length-penalty X          beam search length penalty (1.0)\n"
           "  --early-stopping            accepted; no effect (as vLLM's offline beam search)\n"
           "  --json-schema FILE          structured output: the text is JSON matching the\n"
           "                              schema in FILE (docs/structured-output.md)\n"
           "  --regex R                   the text matches the regular expression R\n"
           "  --choice A,B,...            the text is one of the comma-separated choices\n"
           "  --grammar FILE              the text matches the GBNF grammar in FILE\n";
}

const char *pl_cli_flags_help_server_sampling(void)
{
    return "sampling defaults (for requests that do not set the field; replace the\n"
           "model's generation_config.json values, as vLLM's --override-generation-config):\n"
           "  --override-generation-config JSON  e.g. '{\"temperature\": 0.5}'; keys:\n"
           "                              temperature, top_p, top_k, min_p,\n"
           "                              repetition_penalty, max_new_tokens\n"
           "  --temperature T, --top-p P, --top-k K, --min-p P, --repetition-penalty X,\n"
           "  --max-tokens N              the same, one key each (a flag wins over the JSON)\n"
           "  (other sampling fields are per request: set them in the request body)\n";
}

const char *pl_cli_flags_help_engine(void)
{
    return "engine:\n"
           "  --revision R                Hub branch, tag or commit of --model ORG/NAME (main)\n"
           "  --download-dir DIR          Hub cache root (default $HF_HUB_CACHE, else\n"
           "                              ~/.cache/huggingface/hub)\n"
           "  --max-num-seqs N            sequences per step (256)\n"
           "  --max-num-batched-tokens N  tokens per step, >= --max-num-seqs (2048)\n"
           "  --block-size N              KV block size: 8, 16 or 32 (16)\n"
           "  --num-kv-blocks N           KV blocks (default: from --kv-cache-bytes, or on\n"
           "                              CUDA from --gpu-memory-utilization)\n"
           "  --kv-cache-bytes B          KV memory budget on CPU (268435456)\n"
           "  --max-model-len N           longest sequence (default: the model's, capped to\n"
           "                              what the KV cache holds); above the model's\n"
           "                              max_position_embeddings only with:\n"
           "  --allow-long-max-model-len  (or VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)\n"
           "  --enforce-eager             no CUDA graphs: every step eager (or\n"
           "                              PAGELLM_CUDA_GRAPHS=0)\n"
           "  --long-prefill-token-threshold N  prefill at most N tokens of a prompt per step\n"
           "                              (0 = only the step budget limits it)\n"
           "  --prefill-chunk N           the same (the interim driver's name)\n"
           "  --enable-prefix-caching     automatic prefix caching (on)\n"
           "  --no-enable-prefix-caching  turn it off\n"
           "  --generation-config auto|vllm  sampling defaults from generation_config.json\n"
           "                              (auto) or vLLM's alone (vllm)\n"
           "  --threads N                 CPU threads, 0 = one per core (0)\n"
           "  --device auto|cpu|cuda      (auto: cuda when a GPU is present)\n"
           "  --gpu-memory-utilization F  CUDA: share of GPU memory to use (0.9)\n"
           "  --tensor-parallel-size N    shard the model over N GPUs (of CUDA_VISIBLE_DEVICES)\n"
           "                              or N CPU ranks (1; docs/parallel.md)\n"
           "  --load-format F             auto | safetensors | dummy (random weights from\n"
           "                              config.json)\n"
           "  --dtype D                   weights' dtype, converted at load: auto (the\n"
           "                              checkpoint's; a float32 one runs in bfloat16 on\n"
           "                              CUDA), bfloat16, float16 (half), float32 (float:\n"
           "                              on CUDA the float32 mode, every op in fp32, for\n"
           "                              comparing with transformers; the CPU always\n"
           "                              computes in float32)\n"
           "  --quantization Q            none (the checkpoint's quantization_config), awq,\n"
           "                              gptq, compressed-tensors, fp8 (fp8 also quantizes an\n"
           "                              unquantized checkpoint at load); docs/quantization.md\n"
           "  --kv-cache-dtype D          auto | fp8 | fp8_e4m3 (an FP8 KV cache where the\n"
           "                              backend has one)\n";
}
