/*
 * flags.c -- the sampling and engine flags shared by `pagellm generate` and
 * `pagellm chat`, named as vLLM names them.
 *
 * Owns: struct pl_cli_flags (the parsed values plus the storage behind the
 * sampling params' arrays: stop strings, stop token ids). Values are checked
 * for syntax here (an integer, a number, a list); ranges are checked by
 * pl_sampling_params_validate and pl_llm_new, whose messages name the field.
 */
#include "cli/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pl_cli_flags_init(struct pl_cli_flags *f)
{
    memset(f, 0, sizeof(*f));
    pl_llm_params_default(&f->llm);
    pl_sampling_params_default(&f->sp);
}

void pl_cli_flags_fini(struct pl_cli_flags *f)
{
    free(f->stop);
    free(f->stop_ids);
    memset(f, 0, sizeof(*f));
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

/* The flags that take no value; *is_bool set when flag is one. */
int pl_cli_flags_bool(struct pl_cli_flags *f, const char *flag)
{
    if (!strcmp(flag, "--ignore-eos"))
        f->sp.ignore_eos = true;
    else if (!strcmp(flag, "--include-stop-str-in-output"))
        f->sp.include_stop_str_in_output = true;
    else if (!strcmp(flag, "--no-skip-special-tokens"))
        f->sp.skip_special_tokens = false;
    else if (!strcmp(flag, "--enable-prefix-caching"))
        f->llm.enable_prefix_caching = true;
    else if (!strcmp(flag, "--no-enable-prefix-caching"))
        f->llm.enable_prefix_caching = false;
    else if (!strcmp(flag, "--early-stopping"))
        f->sp.early_stopping = true;
    else
        return 0;
    f->sp_set = true;
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
    struct {
        const char *name;
        float *dst;
    } floats[] = {
        {"--temperature", &sp->temperature},
        {"--top-p", &sp->top_p},
        {"--min-p", &sp->min_p},
        {"--presence-penalty", &sp->presence_penalty},
        {"--frequency-penalty", &sp->frequency_penalty},
        {"--repetition-penalty", &sp->repetition_penalty},
        {"--length-penalty", &sp->length_penalty},
    };
    for (size_t k = 0; k < sizeof(floats) / sizeof(floats[0]); k++) {
        if (strcmp(flag, floats[k].name))
            continue;
        if (!parse_float(val, floats[k].dst))
            return bad_value(cmd, flag, val, "a number");
        f->sp_set = true;
        f->float_set[k] = true;
        return 1;
    }
    struct {
        const char *name;
        int *dst;
        long lo, hi;
        bool sampling;
    } ints[] = {
        {"--n", &sp->n, INT_MIN, INT_MAX, true},
        {"--top-k", &sp->top_k, INT_MIN, INT_MAX, true},
        {"--max-tokens", &sp->max_tokens, INT_MIN, INT_MAX, true},
        {"--min-tokens", &sp->min_tokens, INT_MIN, INT_MAX, true},
        {"--logprobs", &sp->logprobs, INT_MIN, INT_MAX, true},
        {"--prompt-logprobs", &sp->prompt_logprobs, INT_MIN, INT_MAX, true},
        {"--beam-width", &sp->beam_width, INT_MIN, INT_MAX, true},
        {"--max-num-seqs", &lp->max_num_seqs, 1, INT_MAX, false},
        {"--max-num-batched-tokens", &lp->max_num_batched_tokens, 1, INT_MAX, false},
        {"--block-size", &lp->block_size, 1, INT_MAX, false},
        {"--num-kv-blocks", &lp->num_kv_blocks, 1, INT_MAX, false},
        {"--max-model-len", &lp->max_model_len, 1, INT_MAX, false},
        {"--threads", &lp->n_threads, 0, 4096, false},
        {"--long-prefill-token-threshold", &lp->long_prefill_token_threshold, 0, INT_MAX, false},
        {"--prefill-chunk", &lp->long_prefill_token_threshold, 1, INT_MAX, false},
    };
    for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
        if (strcmp(flag, ints[k].name))
            continue;
        if (!parse_long(val, ints[k].lo, ints[k].hi, &v))
            return bad_value(cmd, flag, val,
                             ints[k].lo > 0 ? "a positive integer" : "an integer in range");
        *ints[k].dst = (int)v;
        if (ints[k].sampling) {
            f->sp_set = true;
            f->int_set[k] = true;
        }
        if (ints[k].dst == &sp->beam_width)
            sp->use_beam_search = true;
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
        const char **g = realloc(f->stop, sizeof(char *) * (size_t)(f->n_stop + 1));
        if (!g)
            return -1;
        f->stop = g;
        f->stop[f->n_stop++] = val;
        if (!*val)
            return bad_value(cmd, flag, val, "a non-empty string");
        return 1;
    }
    if (!strcmp(flag, "--stop-token-ids")) {
        free(f->stop_ids);
        f->stop_ids = NULL;
        if (!pl_cli_parse_ids(val, &f->stop_ids, &f->n_stop_ids))
            return bad_value(cmd, flag, val, "a comma-separated list of token ids");
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
        lp->dtype = val;
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

/*
 * The request's sampling params: the LLM's defaults (vLLM's, then the
 * generation config) with every flag given on the command line on top.
 */
void pl_cli_flags_sampling(struct pl_cli_flags *f, const struct pl_llm *llm,
                           struct pl_sampling_params *out)
{
    pl_llm_default_sampling_params(llm, out);
    const struct pl_sampling_params *sp = &f->sp;
    float *const out_floats[] = {&out->temperature,      &out->top_p,
                                 &out->min_p,            &out->presence_penalty,
                                 &out->frequency_penalty, &out->repetition_penalty,
                                 &out->length_penalty};
    const float in_floats[] = {sp->temperature,       sp->top_p,
                               sp->min_p,             sp->presence_penalty,
                               sp->frequency_penalty, sp->repetition_penalty,
                               sp->length_penalty};
    for (int k = 0; k < 7; k++)
        if (f->float_set[k])
            *out_floats[k] = in_floats[k];
    int *const out_ints[] = {&out->n,        &out->top_k,           &out->max_tokens,
                             &out->min_tokens, &out->logprobs,        &out->prompt_logprobs,
                             &out->beam_width};
    const int in_ints[] = {sp->n,        sp->top_k,           sp->max_tokens, sp->min_tokens,
                           sp->logprobs, sp->prompt_logprobs, sp->beam_width};
    for (int k = 0; k < 7; k++)
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
}

const char *pl_cli_flags_help(void)
{
    return "sampling (vLLM's SamplingParams; defaults: vLLM's, then the model's\n"
           "generation_config.json unless --generation-config vllm):\n"
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
           "engine:\n"
           "  --model DIR|ORG/NAME        a model directory, or a Hugging Face Hub model id\n"
           "                              (downloaded into the cache; docs/models.md)\n"
           "  --revision R                Hub branch, tag or commit of --model (main)\n"
           "  --download-dir DIR          Hub cache root (default $HF_HUB_CACHE, else\n"
           "                              ~/.cache/huggingface/hub)\n"
           "  --max-num-seqs N            sequences per step (256)\n"
           "  --max-num-batched-tokens N  tokens per step (2048)\n"
           "  --block-size N              KV block size: 8, 16 or 32 (16)\n"
           "  --num-kv-blocks N           KV blocks (default: from --kv-cache-bytes)\n"
           "  --kv-cache-bytes B          KV memory budget on CPU (268435456)\n"
           "  --max-model-len N           longest sequence (default: the model's, capped to\n"
           "                              what the KV cache holds)\n"
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
           "  --load-format F       auto | safetensors | dummy (random weights from config.json)\n"
           "  --dtype auto                (auto: the checkpoint's)\n";
}
