/*
 * generate.c -- `pagellm generate`: offline greedy generation for one or more prompts.
 *
 * Owns: the generate subcommand's flags, prompt collection (token-id lists,
 * text, a file of JSON strings), and the output (vLLM-shaped JSON lines with
 * --json, a readable form otherwise). Every prompt runs in ONE static batch
 * through the interim greedy driver (src/engine/greedy.c). Exit codes: 0 ok,
 * 2 bad flags or values, 1 runtime errors (with the library's message).
 */
#include "cli/cli.h"
#include "engine/greedy.h"
#include "engine/model_runner.h"
#include "tokenizer/tokenizer.h"
#include "util/log.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct prompt {
    char *text;     /* NULL for a token-id prompt */
    int32_t *ids;   /* token ids (parsed or encoded) */
    int n_ids;
};

struct gen_opts {
    const char *model;
    struct prompt *prompts;
    int n_prompts, cap_prompts;
    int max_tokens, logprobs, threads, prefill_chunk;
    bool json, ignore_eos, has_logprobs;
    struct pl_model_runner_params rp;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm generate [--model DIR] (--prompt-ids IDS | --prompt TEXT | "
            "--prompts-file F)... [options]\n\n"
            "Greedy generation for every prompt, all prompts in one batch.\n\n"
            "prompts (repeatable, any mix, kept in order):\n"
            "  --prompt-ids IDS            comma-separated token ids, e.g. \"1,2,3\"\n"
            "  --prompt TEXT               text, encoded with the model's tokenizer\n"
            "  --prompts-file F            one JSON string per line (text prompts)\n\n"
            "options:\n"
            "  --model DIR                 Hugging Face model directory (default: $PAGELLM_MODEL,\n"
            "                              else models/default)\n"
            "  --max-tokens N              tokens to generate per prompt (default 16)\n"
            "  --temperature T             only 0 (greedy) for now (default 0)\n"
            "  --logprobs K                top-K logprobs for every generated token\n"
            "  --ignore-eos                do not stop at the model's eos ids\n"
            "  --json                      one JSON line per prompt (vLLM's output fields)\n"
            "  --block-size N              KV cache block size: 8, 16 or 32 (default 16)\n"
            "  --num-kv-blocks N           KV cache blocks (default: from a 256 MiB budget)\n"
            "  --max-num-batched-tokens N  tokens per forward pass (default 2048)\n"
            "  --max-model-len N           longest sequence (default: the model's, capped to "
            "the KV cache)\n"
            "  --prefill-chunk N           prefill prompts in chunks of N tokens (default: whole)\n"
            "  --threads N                 CPU threads (default: one per core)\n"
            "  -h, --help                  this help\n");
}

static int bad(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "pagellm generate: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(see pagellm generate --help)\n");
    return 2;
}

static bool parse_int(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static struct prompt *add_prompt(struct gen_opts *o)
{
    if (o->n_prompts == o->cap_prompts) {
        int cap = o->cap_prompts ? 2 * o->cap_prompts : 8;
        struct prompt *p = realloc(o->prompts, sizeof(*p) * (size_t)cap);
        if (!p)
            return NULL;
        o->prompts = p;
        o->cap_prompts = cap;
    }
    struct prompt *p = &o->prompts[o->n_prompts++];
    memset(p, 0, sizeof(*p));
    return p;
}

/* "1, 2,3" -> ids; false on anything that is not a non-negative int list. */
static bool parse_ids(const char *s, struct prompt *p)
{
    int cap = 16, n = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    const char *c = s;
    while (ids) {
        while (*c == ' ')
            c++;
        char *end;
        errno = 0;
        long v = strtol(c, &end, 10);
        if (errno || end == c || v < 0 || v > INT32_MAX)
            break;
        if (n == cap) {
            int32_t *grown = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (!grown)
                break;
            ids = grown;
        }
        ids[n++] = (int32_t)v;
        c = end;
        while (*c == ' ')
            c++;
        if (*c == '\0') {
            p->ids = ids;
            p->n_ids = n;
            return true;
        }
        if (*c != ',')
            break;
        c++;
    }
    free(ids);
    return false;
}

/* Appends one text prompt per line of F (each a JSON string). 0, or an exit code. */
static int read_prompts_file(struct gen_opts *o, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "pagellm generate: cannot read %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int line_no = 0, rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)len, JSON_DECODE_ANY, &jerr);
        if (!j || !json_is_string(j)) {
            fprintf(stderr, "pagellm generate: %s:%d: expected a JSON string per line\n", path,
                    line_no);
            json_decref(j);
            rc = 2;
            break;
        }
        struct prompt *p = add_prompt(o);
        if (!p || !(p->text = strdup(json_string_value(j)))) {
            json_decref(j);
            rc = 1;
            break;
        }
        json_decref(j);
    }
    free(line);
    fclose(f);
    return rc;
}

static void free_opts(struct gen_opts *o)
{
    for (int i = 0; i < o->n_prompts; i++) {
        free(o->prompts[i].text);
        free(o->prompts[i].ids);
    }
    free(o->prompts);
}

/* Parses argv into o; returns 0, or the exit code (2 for bad flags, -1 for --help). */
static int parse_args(int argc, char **argv, struct gen_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        const char *val = NULL;
        char name[64];
        const char *eq = strchr(flag, '=');
        if (!strncmp(flag, "--", 2) && eq && (size_t)(eq - flag) < sizeof(name)) {
            memcpy(name, flag, (size_t)(eq - flag));
            name[eq - flag] = '\0';
            flag = name;
            val = eq + 1;
        }
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help"))
            return -1;
        if (!strcmp(flag, "--json") || !strcmp(flag, "--ignore-eos")) {
            if (val)
                return bad("%s takes no value%s", flag, "");
            if (!strcmp(flag, "--json"))
                o->json = true;
            else
                o->ignore_eos = true;
            continue;
        }
        static const char *const with_value[] = {
            "--model", "--prompt-ids", "--prompt", "--prompts-file", "--max-tokens",
            "--temperature", "--logprobs", "--block-size", "--num-kv-blocks",
            "--max-num-batched-tokens", "--max-model-len", "--threads", "--prefill-chunk"};
        bool known = false;
        for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
            known |= !strcmp(flag, with_value[k]);
        if (!known)
            return bad("unknown option '%s'%s", argv[i], "");
        if (!val) {
            if (i + 1 >= argc)
                return bad("%s needs a value%s", flag, "");
            val = argv[++i];
        }
        if (!strcmp(flag, "--model")) {
            o->model = val;
        } else if (!strcmp(flag, "--prompt-ids")) {
            struct prompt *p = add_prompt(o);
            if (!p)
                return 1;
            if (!parse_ids(val, p) || p->n_ids == 0)
                return bad("--prompt-ids '%s' is not a comma-separated list of token ids%s", val,
                           "");
        } else if (!strcmp(flag, "--prompt")) {
            struct prompt *p = add_prompt(o);
            if (!p || !(p->text = strdup(val)))
                return 1;
        } else if (!strcmp(flag, "--prompts-file")) {
            int rc = read_prompts_file(o, val);
            if (rc)
                return rc;
        } else if (!strcmp(flag, "--temperature")) {
            char *end;
            double t = strtod(val, &end);
            if (end == val || *end || t != t)
                return bad("--temperature '%s' is not a number%s", val, "");
            if (t != 0.0)
                return bad("--temperature %s: only 0 (greedy) is supported for now; sampling "
                           "arrives with the engine%s",
                           val, "");
        } else {
            struct {
                const char *name;
                int *dst;
                long lo, hi;
            } ints[] = {
                {"--max-tokens", &o->max_tokens, 0, INT32_MAX},
                {"--logprobs", &o->logprobs, 0, 1000000},
                {"--block-size", &o->rp.block_size, 1, 1 << 20},
                {"--num-kv-blocks", &o->rp.num_kv_blocks, 1, INT32_MAX},
                {"--max-num-batched-tokens", &o->rp.max_num_batched_tokens, 1, 1 << 24},
                {"--max-model-len", &o->rp.max_model_len, 1, INT32_MAX},
                {"--threads", &o->threads, 0, 4096},
                {"--prefill-chunk", &o->prefill_chunk, 1, INT32_MAX},
            };
            for (size_t k = 0; k < sizeof(ints) / sizeof(ints[0]); k++) {
                if (strcmp(flag, ints[k].name))
                    continue;
                if (!parse_int(val, ints[k].lo, ints[k].hi, ints[k].dst))
                    return bad("%s '%s' is not a valid integer in range", flag, val);
                if (ints[k].dst == &o->logprobs)
                    o->has_logprobs = true;
            }
        }
    }
    if (o->n_prompts == 0)
        return bad("no prompt: give --prompt-ids, --prompt or --prompts-file%s%s", "", "");
    return 0;
}

static bool is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* True when config.json says "pagellm_tiny_test_model": true. */
static bool is_tiny_test_model(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    bool tiny = root && json_is_true(json_object_get(root, "pagellm_tiny_test_model"));
    json_decref(root);
    return tiny;
}

static json_t *json_ids(const int32_t *ids, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

static json_t *json_text_or_null(const char *s)
{
    json_t *j = s ? json_string(s) : NULL;
    return j ? j : json_null(); /* invalid UTF-8 cannot be a JSON string */
}

static void print_json(const struct prompt *p, const struct pl_greedy_seq *s, const char *text,
                       bool with_logprobs)
{
    json_t *out = json_object();
    json_object_set_new(out, "index", json_integer(0));
    json_object_set_new(out, "text", json_text_or_null(text));
    json_object_set_new(out, "token_ids", json_ids(s->out_tokens, s->n_out));
    if (with_logprobs) {
        json_t *steps = json_array();
        for (int t = 0; t < s->n_out; t++) {
            json_t *top = json_array();
            for (int k = 0; k < s->n_logprobs; k++) {
                json_t *e = json_object();
                json_object_set_new(e, "token_id",
                                    json_integer(s->top_ids[(size_t)t * s->n_logprobs + k]));
                json_object_set_new(e, "logprob",
                                    json_real(s->top_logprobs[(size_t)t * s->n_logprobs + k]));
                json_array_append_new(top, e);
            }
            json_array_append_new(steps, top);
        }
        json_object_set_new(out, "logprobs", steps);
    } else {
        json_object_set_new(out, "logprobs", json_null());
    }
    json_object_set_new(out, "cumulative_logprob", json_real(s->cumulative_logprob));
    json_object_set_new(out, "finish_reason", json_string(s->finished_by_stop ? "stop" : "length"));

    json_t *line = json_object();
    json_object_set_new(line, "prompt", json_text_or_null(p->text));
    json_object_set_new(line, "prompt_token_ids", json_ids(p->ids, p->n_ids));
    json_t *outs = json_array();
    json_array_append_new(outs, out);
    json_object_set_new(line, "outputs", outs);
    /* 17 significant digits: every double (and so every float) round-trips */
    char *s_line = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (s_line)
        printf("%s\n", s_line);
    free(s_line);
    json_decref(line);
}

static void print_ids(const int32_t *ids, int n)
{
    printf("[");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("]");
}

static void print_readable(int index, const struct prompt *p, const struct pl_greedy_seq *s,
                           const char *text)
{
    printf("prompt %d: ", index);
    if (p->text)
        printf("\"%s\" ", p->text);
    print_ids(p->ids, p->n_ids);
    printf("\n  output:   ");
    if (text)
        printf("\"%s\" ", text);
    print_ids(s->out_tokens, s->n_out);
    printf("\n  finish:   %s, %d tokens, cumulative logprob %.4f\n",
           s->finished_by_stop ? "stop" : "length", s->n_out, s->cumulative_logprob);
    for (int t = 0; t < s->n_out && s->n_logprobs > 0; t++) {
        printf("  step %3d:", t);
        for (int k = 0; k < s->n_logprobs; k++)
            printf(" %d(%.4f)", s->top_ids[(size_t)t * s->n_logprobs + k],
                   (double)s->top_logprobs[(size_t)t * s->n_logprobs + k]);
        printf("\n");
    }
}

int pl_cli_generate(int argc, char **argv)
{
    struct gen_opts o;
    memset(&o, 0, sizeof(o));
    pl_model_runner_params_default(&o.rp);
    o.max_tokens = 16;
    int rc = parse_args(argc, argv, &o);
    if (rc == -1) {
        usage(stdout);
        free_opts(&o);
        return 0;
    }
    if (rc) {
        free_opts(&o);
        return rc;
    }

    const char *model = o.model ? o.model : getenv("PAGELLM_MODEL");
    if (!model || !*model)
        model = "models/default";
    if (!is_dir(model)) {
        fprintf(stderr,
                "pagellm generate: no model directory at '%s'.\n"
                "  Create pagellm's built-in tiny test model there with ./scripts/run-default.sh,\n"
                "  or run a real Hugging Face model with --model DIR (or $PAGELLM_MODEL=DIR).\n",
                model);
        free_opts(&o);
        return 1;
    }
    if (is_tiny_test_model(model))
        fprintf(stderr,
                "pagellm generate: note: %s is a tiny random-weight test model; its output is "
                "gibberish by design (run a real model with --model DIR)\n",
                model);

    struct pl_err err = {0};
    struct pl_tokenizer *tok = NULL;
    struct pl_model_runner *runner = NULL;
    struct pl_greedy_seq *seqs = NULL;
    char **texts = NULL;
    int32_t *stop_ids = NULL;
    rc = 1;

    bool need_tok = false;
    for (int i = 0; i < o.n_prompts; i++)
        need_tok |= o.prompts[i].text != NULL;
    if (pl_tokenizer_load(model, &tok, &err) != PL_STATUS_OK) {
        tok = NULL;
        if (need_tok) {
            fprintf(stderr, "pagellm generate: text prompts need the tokenizer: %s\n", err.msg);
            goto out;
        }
    }
    for (int i = 0; i < o.n_prompts; i++) {
        struct prompt *p = &o.prompts[i];
        if (p->text && pl_tokenizer_encode(tok, p->text, strlen(p->text), true, &p->ids,
                                           &p->n_ids, &err) != PL_STATUS_OK) {
            fprintf(stderr, "pagellm generate: prompt %d: %s\n", i, err.msg);
            goto out;
        }
    }

    o.rp.model_dir = model;
    o.rp.n_threads = o.threads;
    if (pl_model_runner_new(&o.rp, &runner, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm generate: %s: %s\n", model, err.msg);
        goto out;
    }
    const struct pl_model_config *cfg = pl_model_runner_config(runner);
    const int *eos = cfg->gen.n_eos_token_ids > 0 ? cfg->gen.eos_token_ids : cfg->eos_token_ids;
    int n_eos = o.ignore_eos ? 0
                : cfg->gen.n_eos_token_ids > 0 ? cfg->gen.n_eos_token_ids
                                               : cfg->n_eos_token_ids;
    stop_ids = malloc(sizeof(int32_t) * (size_t)(n_eos + 1));
    seqs = calloc((size_t)o.n_prompts, sizeof(*seqs));
    texts = calloc((size_t)o.n_prompts, sizeof(*texts));
    if (!stop_ids || !seqs || !texts) {
        fprintf(stderr, "pagellm generate: out of memory\n");
        goto out;
    }
    for (int i = 0; i < n_eos; i++)
        stop_ids[i] = eos[i];
    if (o.has_logprobs && o.logprobs > cfg->vocab_size) {
        fprintf(stderr, "pagellm generate: --logprobs %d exceeds the vocabulary (%d)\n",
                o.logprobs, cfg->vocab_size);
        rc = 2;
        goto out;
    }
    for (int i = 0; i < o.n_prompts; i++)
        seqs[i] = (struct pl_greedy_seq){.prompt = o.prompts[i].ids,
                                         .n_prompt = o.prompts[i].n_ids,
                                         .max_tokens = o.max_tokens,
                                         .n_logprobs = o.has_logprobs ? o.logprobs : 0,
                                         .stop_ids = stop_ids,
                                         .n_stop_ids = n_eos};
    if (pl_greedy_generate(runner, seqs, o.n_prompts, o.prefill_chunk, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm generate: %s\n", err.msg);
        goto out;
    }
    for (int i = 0; i < o.n_prompts; i++) {
        size_t len;
        if (tok && pl_tokenizer_decode(tok, seqs[i].out_tokens, seqs[i].n_out, true, &texts[i],
                                       &len, &err) != PL_STATUS_OK)
            texts[i] = NULL;
        if (o.json)
            print_json(&o.prompts[i], &seqs[i], texts[i], o.has_logprobs);
        else
            print_readable(i, &o.prompts[i], &seqs[i], texts[i]);
    }
    rc = 0;
out:
    if (seqs)
        for (int i = 0; i < o.n_prompts; i++)
            pl_greedy_seq_fini(&seqs[i]);
    if (texts)
        for (int i = 0; i < o.n_prompts; i++)
            free(texts[i]);
    free(texts);
    free(seqs);
    free(stop_ids);
    pl_model_runner_free(runner);
    pl_tokenizer_free(tok);
    free_opts(&o);
    return rc;
}
