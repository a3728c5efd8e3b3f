/*
 * tokenize.c -- `pagellm tokenize` and `pagellm detokenize`.
 *
 * Owns: argument parsing and output for the two commands. Text is encoded as
 * transformers' tokenizer(text) does (add_special_tokens unless
 * --no-special-tokens). Chat messages are rendered with the model's chat
 * template (or --chat-template FILE) against {messages, add_generation_prompt,
 * bos_token, eos_token}, and the rendered text is encoded with
 * add_special_tokens=false, so special tokens written by the template are
 * parsed as special tokens and no second BOS is added -- what
 * apply_chat_template(tokenize=True) does. Exit status: 0 ok, 1 failure
 * (message on stderr), 2 bad usage.
 */
#include "cli/cli.h"
#include "tokenizer/chat_template/chat_template.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void tokenize_usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm tokenize --model DIR --text TEXT [--no-special-tokens] [--json]\n"
            "       pagellm tokenize --model DIR --messages JSON_OR_FILE [--no-generation-prompt]\n"
            "                        [--chat-template FILE] [--json]\n\n"
            "  --model DIR             folder with tokenizer.json (and tokenizer_config.json),\n"
            "                          or a Hub id ORG/NAME (only its tokenizer files are fetched)\n"
            "  --revision R            Hub branch, tag or commit (main)\n"
            "  --download-dir DIR      Hub cache root\n"
            "  --text TEXT             text to encode\n"
            "  --no-special-tokens     do not add BOS/EOS (add_special_tokens=False)\n"
            "  --messages JSON_OR_FILE chat messages: a JSON array, or a file holding one\n"
            "  --no-generation-prompt  render without add_generation_prompt\n"
            "  --chat-template FILE    use this Jinja template instead of the model's\n"
            "  --json                  print {\"tokens\": [...], \"count\": N} (and \"prompt\")\n");
}

static void detokenize_usage(FILE *f)
{
    fprintf(f, "usage: pagellm detokenize --model DIR --ids \"1,2,3\" [--skip-special-tokens] [--json]\n\n"
               "  --model DIR             folder with tokenizer.json (and tokenizer_config.json),\n"
               "                          or a Hub id ORG/NAME (only its tokenizer files are fetched)\n"
               "  --revision R            Hub branch, tag or commit (main)\n"
               "  --download-dir DIR      Hub cache root\n"
               "  --ids LIST              token ids separated by commas or spaces\n"
               "  --skip-special-tokens   leave special tokens out of the text\n"
               "  --json                  print {\"text\": ...}\n");
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        *len = n;
    }
    return buf;
}

static int print_json(json_t *obj)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    json_decref(obj);
    if (!s) {
        fprintf(stderr, "pagellm: output is not valid UTF-8\n");
        return 1;
    }
    printf("%s\n", s);
    free(s);
    return 0;
}

static json_t *ids_json(const int32_t *ids, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* Parses --messages: inline JSON when it looks like JSON, else a file. */
static json_t *load_messages(const char *arg)
{
    json_error_t je;
    const char *p = arg;
    while (*p == ' ' || *p == '\t' || *p == '\n')
        p++;
    json_t *m = NULL;
    if (*p == '[' || *p == '{') {
        m = json_loads(arg, 0, &je);
    } else {
        size_t len;
        char *text = read_all(arg, &len);
        if (!text) {
            fprintf(stderr, "pagellm tokenize: --messages: cannot read %s: %s\n", arg,
                    strerror(errno));
            return NULL;
        }
        m = json_loadb(text, len, 0, &je);
        free(text);
    }
    if (!m) {
        fprintf(stderr, "pagellm tokenize: --messages: invalid JSON (line %d): %s\n", je.line,
                je.text);
        return NULL;
    }
    if (json_is_object(m) && json_is_array(json_object_get(m, "messages"))) {
        json_t *inner = json_incref(json_object_get(m, "messages"));
        json_decref(m);
        m = inner;
    }
    if (!json_is_array(m)) {
        fprintf(stderr, "pagellm tokenize: --messages: expected a JSON array of messages\n");
        json_decref(m);
        return NULL;
    }
    return m;
}

/* Renders the conversation; returns the prompt (malloc'ed) or NULL after a message. */
static char *render_chat(const struct pl_tokenizer *tok, json_t *messages, bool gen_prompt,
                         const char *template_file, size_t *len)
{
    char *file_src = NULL;
    const char *src = NULL;
    size_t src_len = 0;
    if (template_file) {
        file_src = read_all(template_file, &src_len);
        if (!file_src) {
            fprintf(stderr, "pagellm tokenize: --chat-template: cannot read %s: %s\n",
                    template_file, strerror(errno));
            return NULL;
        }
        src = file_src;
    } else {
        src = pl_tokenizer_chat_template(tok);
        if (!src) {
            fprintf(stderr, "pagellm tokenize: the model has no chat template in "
                            "tokenizer_config.json; pass --chat-template FILE\n");
            return NULL;
        }
        src_len = strlen(src);
    }
    struct pl_err err = {0};
    struct pl_chat_template *tpl = NULL;
    char *out = NULL;
    if (pl_chat_template_parse(src, src_len, &tpl, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm tokenize: chat template: %s\n", err.msg);
        free(file_src);
        return NULL;
    }
    const struct pl_chat_apply apply = {
        .bos_token = pl_tokenizer_bos_token(tok),
        .eos_token = pl_tokenizer_eos_token(tok),
        .add_generation_prompt = gen_prompt,
    };
    if (pl_apply_chat_template(tpl, messages, &apply, &out, len, NULL, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm tokenize: %s\n", err.msg);
        out = NULL;
    }
    pl_chat_template_free(tpl);
    free(file_src);
    return out;
}

/* --model (a directory or a Hub id: only its tokenizer files are fetched) -> tokenizer */
static struct pl_tokenizer *load_model(const char *cmd, const char *name, const char *revision,
                                       const char *download_dir)
{
    struct pl_err err = {0};
    struct pl_tokenizer *tok = NULL;
    char *dir = NULL;
    if (pl_cli_check_model_dir(cmd, name) ||
        pl_cli_hub_model(cmd, name, revision, download_dir, true, &dir, NULL))
        return NULL;
    if (pl_tokenizer_load(dir, &tok, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm %s: %s\n", cmd, err.msg);
        tok = NULL;
    }
    free(dir);
    return tok;
}

/* Returns the value after a flag, or NULL (with a message) when missing. */
static const char *flag_value(const char *cmd, int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "pagellm %s: %s needs a value\n", cmd, argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int pl_cli_tokenize(int argc, char **argv)
{
    const char *model = NULL, *text = NULL, *messages_arg = NULL, *template_file = NULL;
    const char *revision = NULL, *download_dir = NULL;
    bool special = true, gen_prompt = true, as_json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            tokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            if (!(model = flag_value("tokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--revision")) {
            if (!(revision = flag_value("tokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--download-dir")) {
            if (!(download_dir = flag_value("tokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--text")) {
            if (!(text = flag_value("tokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--messages")) {
            if (!(messages_arg = flag_value("tokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--chat-template")) {
            if (!(template_file = flag_value("tokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--no-special-tokens")) {
            special = false;
        } else if (!strcmp(a, "--no-generation-prompt")) {
            gen_prompt = false;
        } else if (!strcmp(a, "--json")) {
            as_json = true;
        } else {
            fprintf(stderr, "pagellm tokenize: unknown option '%s'\n", a);
            tokenize_usage(stderr);
            return 2;
        }
    }
    if (!model || (!text == !messages_arg)) {
        fprintf(stderr, "pagellm tokenize: need --model and exactly one of --text / --messages\n");
        tokenize_usage(stderr);
        return 2;
    }
    struct pl_tokenizer *tok = load_model("tokenize", model, revision, download_dir);
    if (!tok)
        return 1;
    char *prompt = NULL;
    size_t prompt_len = 0;
    if (messages_arg) {
        json_t *msgs = load_messages(messages_arg);
        if (msgs) {
            prompt = render_chat(tok, msgs, gen_prompt, template_file, &prompt_len);
            json_decref(msgs);
        }
        if (!prompt) {
            pl_tokenizer_free(tok);
            return 1;
        }
        special = false; /* the template already wrote the special tokens */
    }
    const char *src = prompt ? prompt : text;
    size_t src_len = prompt ? prompt_len : strlen(text);
    struct pl_err err = {0};
    int32_t *ids = NULL;
    int n = 0;
    int rc = 0;
    if (pl_tokenizer_encode(tok, src, src_len, special, &ids, &n, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm tokenize: %s\n", err.msg);
        rc = 1;
    } else if (as_json) {
        json_t *o = json_object();
        if (prompt)
            json_object_set_new(o, "prompt", json_stringn(prompt, prompt_len));
        json_object_set_new(o, "tokens", ids_json(ids, n));
        json_object_set_new(o, "count", json_integer(n));
        rc = print_json(o);
    } else {
        if (prompt)
            printf("%.*s\n", (int)prompt_len, prompt);
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    free(ids);
    free(prompt);
    pl_tokenizer_free(tok);
    return rc;
}

/* Parses "1,2,3" or "1 2 3" (or a JSON-style "[1, 2]"). */
static int parse_ids(const char *s, int32_t **out, int *n)
{
    *out = NULL;
    return pl_cli_parse_ids(s, out, n) ? 0 : -1;
}

int pl_cli_detokenize(int argc, char **argv)
{
    const char *model = NULL, *ids_arg = NULL;
    const char *revision = NULL, *download_dir = NULL;
    bool skip = false, as_json = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            detokenize_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            if (!(model = flag_value("detokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--revision")) {
            if (!(revision = flag_value("detokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--download-dir")) {
            if (!(download_dir = flag_value("detokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--ids")) {
            if (!(ids_arg = flag_value("detokenize", argc, argv, &i)))
                return 2;
        } else if (!strcmp(a, "--skip-special-tokens")) {
            skip = true;
        } else if (!strcmp(a, "--json")) {
            as_json = true;
        } else {
            fprintf(stderr, "pagellm detokenize: unknown option '%s'\n", a);
            detokenize_usage(stderr);
            return 2;
        }
    }
    if (!model || !ids_arg) {
        fprintf(stderr, "pagellm detokenize: need --model and --ids\n");
        detokenize_usage(stderr);
        return 2;
    }
    int32_t *ids = NULL;
    int n = 0;
    if (parse_ids(ids_arg, &ids, &n) != 0) {
        fprintf(stderr, "pagellm detokenize: --ids: expected non-negative integers separated by "
                        "commas\n");
        free(ids);
        return 2;
    }
    struct pl_tokenizer *tok = load_model("detokenize", model, revision, download_dir);
    if (!tok) {
        free(ids);
        return 1;
    }
    struct pl_err err = {0};
    char *text = NULL;
    size_t len = 0;
    int rc = 0;
    /* decode gives "" for an id past the tokenizer (a model's padded vocab, as
     * transformers does); asked to detokenize one, say it is no token */
    for (int i = 0; i < n && rc == 0; i++)
        if (!pl_tokenizer_has_id(tok, ids[i])) {
            fprintf(stderr, "pagellm detokenize: token id %d (position %d) is not in the "
                            "tokenizer (%d ids)\n",
                    (int)ids[i], i, pl_tokenizer_vocab_size(tok));
            rc = 1;
        }
    if (rc != 0) {
        /* refused above */
    } else if (pl_tokenizer_decode(tok, ids, n, skip, &text, &len, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm detokenize: %s\n", err.msg);
        rc = 1;
    } else if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "text", json_stringn(text, len));
        rc = print_json(o);
    } else {
        fwrite(text, 1, len, stdout);
        printf("\n");
    }
    free(text);
    free(ids);
    pl_tokenizer_free(tok);
    return rc;
}
