/*
 * generate.c -- `pagellm generate`: offline generation for one or more prompts
 * through the continuous-batching engine (pl_llm_generate).
 *
 * Owns: the generate subcommand's flags (prompts, output, and the shared
 * sampling/engine flags of flags.c), prompt collection (token-id lists, text,
 * a file of JSON strings), the output (vLLM-shaped JSON lines with --json, a
 * readable form otherwise), the progress bar and --stats. Exit codes: 0 ok,
 * 2 bad flags or values (the message names the flag or field), 1 runtime
 * errors (with the library's message).
 */
#include "engine/sampling_params.h"
#include "cli/cli.h"
#include "model/hub.h"
#include "model/tiny_model.h"
#include "util/err.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>

struct prompt {
    char *text;     /* NULL for a token-id prompt */
    int32_t *ids;   /* token ids of a token-id prompt */
    int n_ids;
};

struct gen_opts {
    struct prompt *prompts;
    int n_prompts, cap_prompts;
    bool json, stats, no_progress;
    struct pl_cli_flags fl;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm generate [--model DIR] (--prompt-ids IDS | --prompt TEXT | "
            "--prompts-file F)... [options]\n\n"
            "Generates for every prompt through the continuous-batching engine.\n\n"
            "prompts (repeatable, any mix, kept in order):\n"
            "  --prompt-ids IDS            comma-separated token ids, e.g. \"1,2,3\"\n"
            "  --prompt TEXT               text, encoded with the model's tokenizer\n"
            "  --prompts-file F            one JSON string per line (text prompts)\n\n"
            "output:\n"
            "  --json                      one JSON line per prompt (vLLM's RequestOutput "
            "fields)\n"
            "  --stats                     engine statistics as one JSON object on stderr\n"
            "  --no-progress               no progress bar (it shows only on a terminal)\n\n"
            "model:\n"
            "  --model DIR|ORG/NAME        model directory or Hugging Face Hub id (default:\n"
            "                              $PAGELLM_MODEL, else models/default)\n"
            "  --override-generation-config JSON  sampling defaults over generation_config.json\n"
            "                              (keys: temperature, top_p, top_k, min_p,\n"
            "                              repetition_penalty, max_new_tokens)\n\n"
            "%s%s",
            pl_cli_flags_help_sampling(), pl_cli_flags_help_engine());
}

static int bad(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "pagellm generate: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n(see pagellm generate --help)\n");
    return 2;
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
    return pl_cli_parse_ids(s, &p->ids, &p->n_ids);
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
            fprintf(stderr, "pagellm generate: --prompts-file %s:%d: expected a JSON string per "
                            "line\n",
                    path, line_no);
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
    pl_cli_flags_fini(&o->fl);
}

/* Parses argv into o; returns 0, or the exit code (2 for bad flags, -1 for --help). */
static int parse_args(int argc, char **argv, struct gen_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        char name[64];
        const char *flag = pl_cli_split_flag(argv[i], name, sizeof(name), &val);
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help"))
            return -1;
        bool *bools[] = {&o->json, &o->stats, &o->no_progress};
        const char *bool_names[] = {"--json", "--stats", "--no-progress"};
        bool done = false;
        for (int k = 0; k < 3 && !done; k++)
            if (!strcmp(flag, bool_names[k])) {
                if (val)
                    return bad("%s takes no value%s", flag, "");
                *bools[k] = true;
                done = true;
            }
        if (done)
            continue;
        if (!val && pl_cli_flags_bool(&o->fl, flag))
            continue;
        if (strncmp(flag, "--", 2))
            return bad("unexpected argument '%s'%s", argv[i], "");
        if (!val) {
            if (i + 1 >= argc)
                return bad("%s needs a value (or is unknown)%s", flag, "");
            val = argv[++i];
        }
        if (!strcmp(flag, "--prompt-ids")) {
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
        } else {
            int r = pl_cli_flags_value(&o->fl, "generate", flag, val);
            if (r < 0)
                return 2;
            if (r == 0)
                return bad("unknown option '%s'%s", flag, "");
        }
    }
    if (o->n_prompts == 0)
        return bad("no prompt: give --prompt-ids, --prompt or --prompts-file%s%s", "", "");
    return pl_cli_flags_check(&o->fl, "generate", PL_CLI_SAMPLING_REQUEST);
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

/* One position's logprobs: the top entries, then the chosen token when not among them
   (vLLM's dict holds both). */
static json_t *json_logprob_entry(const struct pl_logprob_entry *e)
{
    json_t *a = json_array();
    bool chosen_in = false;
    for (int k = 0; k < e->n_top; k++) {
        json_t *o = json_object();
        json_object_set_new(o, "token_id", json_integer(e->top_ids[k]));
        json_object_set_new(o, "logprob", json_real(e->top_logprobs[k]));
        json_array_append_new(a, o);
        chosen_in |= e->top_ids[k] == e->token_id;
    }
    if (!chosen_in) {
        json_t *o = json_object();
        json_object_set_new(o, "token_id", json_integer(e->token_id));
        json_object_set_new(o, "logprob", json_real(e->logprob));
        json_array_append_new(a, o);
    }
    return a;
}

static json_t *json_stop_reason(const struct pl_completion_output *c)
{
    if (c->stop_reason_kind == PL_STOP_REASON_STRING)
        return json_text_or_null(c->stop_str);
    if (c->stop_reason_kind == PL_STOP_REASON_TOKEN)
        return json_integer(c->stop_token_id);
    return json_null();
}

static void print_json(const struct pl_request_output *r, bool has_tokenizer)
{
    json_t *line = json_object();
    json_object_set_new(line, "prompt", json_text_or_null(r->prompt));
    json_object_set_new(line, "prompt_token_ids",
                        json_ids(r->prompt_token_ids, r->n_prompt_token_ids));
    if (r->has_prompt_logprobs) {
        json_t *pl = json_array();
        for (int i = 0; i < r->n_prompt_token_ids; i++)
            json_array_append_new(pl, r->prompt_logprobs[i].n_top < 0
                                          ? json_null()
                                          : json_logprob_entry(&r->prompt_logprobs[i]));
        json_object_set_new(line, "prompt_logprobs", pl);
    }
    json_object_set_new(line, "num_cached_tokens", json_integer(r->num_cached_tokens));
    json_t *outs = json_array();
    for (int k = 0; k < r->n_outputs; k++) {
        const struct pl_completion_output *c = &r->outputs[k];
        json_t *out = json_object();
        json_object_set_new(out, "index", json_integer(c->index));
        /* without a tokenizer there is no text: null, as the interim driver printed */
        json_object_set_new(out, "text", json_text_or_null(has_tokenizer ? c->text : NULL));
        json_object_set_new(out, "token_ids", json_ids(c->token_ids, c->n_token_ids));
        if (c->has_logprobs) {
            json_t *steps = json_array();
            for (int t = 0; t < c->n_token_ids; t++)
                json_array_append_new(steps, json_logprob_entry(&c->logprobs[t]));
            json_object_set_new(out, "logprobs", steps);
            json_object_set_new(out, "cumulative_logprob", json_real(c->cumulative_logprob));
        } else {
            json_object_set_new(out, "logprobs", json_null());
            json_object_set_new(out, "cumulative_logprob", json_null());
        }
        const char *fr = pl_finish_reason_str(c->finish_reason);
        json_object_set_new(out, "finish_reason", fr ? json_string(fr) : json_null());
        json_object_set_new(out, "stop_reason", json_stop_reason(c));
        json_array_append_new(outs, out);
    }
    json_object_set_new(line, "outputs", outs);
    if (r->error) /* the engine failed this prompt: its outputs end with finish_reason "error" */
        json_object_set_new(line, "error", json_text_or_null(r->error));
    /* 17 significant digits: every double (and so every float) round-trips */
    char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(line);
}

static void print_ids(const int32_t *ids, int n)
{
    printf("[");
    for (int i = 0; i < n; i++)
        printf("%s%d", i ? ", " : "", ids[i]);
    printf("]");
}

static void print_readable(int index, const struct pl_request_output *r)
{
    printf("prompt %d: ", index);
    if (r->prompt)
        printf("\"%s\" ", r->prompt);
    print_ids(r->prompt_token_ids, r->n_prompt_token_ids);
    printf("\n");
    for (int k = 0; k < r->n_outputs; k++) {
        const struct pl_completion_output *c = &r->outputs[k];
        printf("  output %d: \"%s\" ", c->index, c->text);
        print_ids(c->token_ids, c->n_token_ids);
        const char *fr = pl_finish_reason_str(c->finish_reason);
        printf("\n  finish:   %s, %d tokens", fr ? fr : "none", c->n_token_ids);
        if (c->stop_reason_kind == PL_STOP_REASON_STRING)
            printf(", stop string \"%s\"", c->stop_str);
        else if (c->stop_reason_kind == PL_STOP_REASON_TOKEN)
            printf(", stop token %d", c->stop_token_id);
        if (c->has_logprobs)
            printf(", cumulative logprob %.4f", c->cumulative_logprob);
        printf("\n");
        for (int t = 0; c->has_logprobs && t < c->n_token_ids; t++) {
            const struct pl_logprob_entry *e = &c->logprobs[t];
            printf("  step %3d: %d(%.4f) |", t, e->token_id, (double)e->logprob);
            for (int j = 0; j < e->n_top; j++)
                printf(" %d(%.4f)", e->top_ids[j], (double)e->top_logprobs[j]);
            printf("\n");
        }
    }
    if (r->num_cached_tokens > 0)
        printf("  cached:   %d prompt tokens\n", r->num_cached_tokens);
    if (r->error)
        printf("  error:    %s\n", r->error);
}

static void progress_cb(void *user, int done, int total, uint64_t in, uint64_t out)
{
    pl_cli_progress_update(user, done, total, in, out);
}

static void print_stats(const struct pl_llm *llm)
{
    struct pl_llm_stats s;
    pl_llm_get_stats(llm, &s);
    json_t *j = json_object();
    json_object_set_new(j, "kv_blocks_total", json_integer(s.kv_blocks_total));
    json_object_set_new(j, "kv_blocks_peak_used", json_integer(s.kv_blocks_peak_used));
    json_object_set_new(j, "kv_waste", json_real(s.kv_waste));
    json_object_set_new(j, "prefix_cache_hit_rate", json_real(s.prefix_cache_hit_rate));
    json_object_set_new(j, "num_preemptions", json_integer((json_int_t)s.num_preemptions));
    json_object_set_new(j, "prompt_tokens", json_integer((json_int_t)s.prompt_tokens));
    json_object_set_new(j, "generation_tokens", json_integer((json_int_t)s.generation_tokens));
    json_object_set_new(j, "seconds", json_real(s.seconds));
    json_object_set_new(j, "tokens_per_second", json_real(s.tokens_per_second));
    json_object_set_new(j, "num_steps", json_integer((json_int_t)s.num_steps));
    char *txt = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (txt)
        fprintf(stderr, "%s\n", txt);
    free(txt);
    json_decref(j);
}

int pl_cli_generate(int argc, char **argv)
{
    struct gen_opts o;
    memset(&o, 0, sizeof(o));
    pl_cli_flags_init(&o.fl);
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
    const char *model = o.fl.llm.model ? o.fl.llm.model : getenv("PAGELLM_MODEL");
    const bool default_model = !model || !*model;
    if (default_model) {
        /* the implicit default is a local path, never a Hub id */
        model = "models/default";
        struct stat sb;
        if (stat(model, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "pagellm generate: no model directory at 'models/default'.\n"
                            "  No --model or $PAGELLM_MODEL was given, so generate looked for "
                            "models/default:\n  ./scripts/run-default.sh creates pagellm's "
                            "built-in tiny test model there.\n");
            free_opts(&o);
            return 1;
        }
    } else if (pl_cli_check_model_dir("generate", model)) {
        free_opts(&o);
        return 1;
    }
    char *model_dir = NULL;
    if (pl_cli_hub_model("generate", model, o.fl.revision, o.fl.download_dir, false,
                         &model_dir, NULL)) {
        free_opts(&o);
        return 1;
    }
    if (pl_tiny_model_dir_is_tiny(model_dir))
        fprintf(stderr,
                "pagellm generate: note: %s is a tiny random-weight test model; its output is "
                "gibberish by design (run a real model with --model DIR)\n",
                model);
    o.fl.llm.model = model_dir;

    struct pl_llm *llm = NULL;
    struct pl_prompt *prompts = NULL;
    struct pl_outputs out = {0};
    struct pl_cli_progress prog;
    rc = 1;
    pl_status st = pl_llm_new(&o.fl.llm, &llm);
    if (st != PL_STATUS_OK) {
        /* the library's messages name the file or field at fault */
        fprintf(stderr, "pagellm generate: %s\n", pl_llm_errmsg(llm));
        rc = pl_cli_exit_code(st);
        goto out;
    }
    struct pl_sampling_params sp;
    pl_cli_flags_sampling(&o.fl, llm, &sp);
    {
        /* bad values exit 2 before anything runs; the message names the field */
        struct pl_sampling_params check;
        struct pl_err err;
        if (pl_sampling_params_copy(&check, &sp, &err) == PL_STATUS_OK) {
            st = pl_sampling_params_validate(&check, pl_llm_vocab_size(llm), &err);
            pl_sampling_params_fini(&check);
            if (st != PL_STATUS_OK) {
                fprintf(stderr, "pagellm generate: %s\n", err.msg);
                rc = 2;
                goto out;
            }
        }
    }
    prompts = calloc((size_t)o.n_prompts, sizeof(*prompts));
    if (!prompts) {
        fprintf(stderr, "pagellm generate: out of memory\n");
        goto out;
    }
    for (int i = 0; i < o.n_prompts; i++)
        prompts[i] = (struct pl_prompt){o.prompts[i].text, o.prompts[i].ids, o.prompts[i].n_ids};
    pl_cli_progress_init(&prog, o.no_progress);
    pl_llm_set_progress(llm, progress_cb, &prog);
    st = pl_llm_generate(llm, prompts, o.n_prompts, &sp, 1, &out);
    pl_cli_progress_finish(&prog);
    if (st != PL_STATUS_OK && out.n == 0) { /* refused before anything ran */
        fprintf(stderr, "pagellm generate: %s\n", pl_llm_errmsg(llm));
        rc = pl_cli_exit_code(st);
        goto out;
    }
    /* The engine failed some prompts while running (a backend failure): the others
     * completed. Every output is printed, the failed ones marked, and the failures
     * are named on stderr: a runtime error (exit 1). */
    for (int i = 0; i < out.n; i++) {
        if (o.json)
            print_json(&out.items[i], pl_llm_has_tokenizer(llm));
        else
            print_readable(i, &out.items[i]);
    }
    fflush(stdout);
    for (int i = 0; i < out.n; i++)
        if (out.items[i].error)
            fprintf(stderr, "pagellm generate: prompt %d failed: %s\n", i, out.items[i].error);
    if (o.stats)
        print_stats(llm);
    rc = st == PL_STATUS_OK ? 0 : 1;
out:
    pl_outputs_free(&out);
    free(prompts);
    pl_llm_free(llm);
    free_opts(&o);
    free(model_dir);
    return rc;
}
