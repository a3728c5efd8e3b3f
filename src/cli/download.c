/*
 * download.c -- models by name on the command line: `pagellm download
 * org/name` (as `huggingface-cli download`), and pl_cli_hub_model, the one
 * place where every command turns its --model value (or the worker's
 * MODEL_NAME) into a model directory.
 *
 * The Hub client itself is src/model/hub.c; this file only maps flags onto
 * struct pl_hub_opts and prints what goes wrong.
 */
#include "cli/cli.h"
#include "model/hub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pl_cli_hub_model(const char *cmd, const char *name, const char *revision,
                     const char *download_dir, bool tokenizer_only, char **path_out,
                     struct pl_err *err_out)
{
    static const char *const tokenizer_files[] = {
        "tokenizer.json",      "tokenizer_config.json", "special_tokens_map.json",
        "tokenizer.model",     "chat_template.jinja",   "chat_template.json",
        "config.json",         "generation_config.json"};
    char who[64];
    snprintf(who, sizeof(who), "pagellm %s", cmd);
    struct pl_hub_opts o;
    pl_hub_opts_default(&o);
    o.cache_dir = download_dir;
    o.who = who;
    if (tokenizer_only) {
        o.include = tokenizer_files;
        o.n_include = (int)(sizeof(tokenizer_files) / sizeof(tokenizer_files[0]));
    }
    struct pl_err err = {0};
    if (pl_hub_resolve_model(name, revision, &o, path_out, &err) != PL_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", who, err.msg);
        if (err_out)
            *err_out = err;
        return 1;
    }
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm download ORG/NAME [FILE...] [options]\n\n"
            "Downloads a model from the Hugging Face Hub into the shared cache\n"
            "(huggingface_hub's layout: $HF_HUB_CACHE, else $HF_HOME/hub, else\n"
            "~/.cache/huggingface/hub) and prints the snapshot directory. Without FILE or\n"
            "--include: config.json, generation_config.json, the tokenizer files and the\n"
            "safetensors weights (never .bin/.pt/.pth pickles).\n\n"
            "  --revision R          branch, tag or commit (default main)\n"
            "  --include GLOB        only files matching GLOB (repeatable; FILE... the same)\n"
            "  --exclude GLOB        leave out files matching GLOB (repeatable)\n"
            "  --local-dir DIR       also copy the files into DIR (a plain model directory)\n"
            "                        and print DIR\n"
            "  --download-dir DIR    the cache root instead of the default (vLLM's flag;\n"
            "                        --cache-dir is the same)\n"
            "  --token TOKEN         access token (default: $HF_TOKEN, then $HF_HOME/token)\n"
            "  --max-workers N       parallel transfers (default 4)\n"
            "  --progress            the progress bar even when stderr is not a terminal\n"
            "  --no-progress         one line per file instead of the bar\n"
            "  --quiet               only errors (and the path on stdout)\n\n"
            "Environment: HF_ENDPOINT (https://huggingface.co), HF_HUB_OFFLINE=1 (cache only),\n"
            "HF_TOKEN, HF_HOME, HF_HUB_CACHE. See docs/models.md.\n");
}

int pl_cli_download(int argc, char **argv)
{
    const char *repo = NULL, *revision = NULL;
    const char **inc = calloc((size_t)argc + 1, sizeof(char *));
    const char **exc = calloc((size_t)argc + 1, sizeof(char *));
    int n_inc = 0, n_exc = 0, rc = 0;
    struct pl_hub_opts o;
    pl_hub_opts_default(&o);
    o.who = "pagellm download";
    if (!inc || !exc) {
        fprintf(stderr, "pagellm download: out of memory\n");
        rc = 1;
        goto out;
    }
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        char name[64];
        const char *flag = pl_cli_split_flag(argv[i], name, sizeof(name), &val);
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            usage(stdout);
            goto out;
        }
        if (flag[0] != '-') {
            if (!repo)
                repo = flag;
            else
                inc[n_inc++] = flag; /* FILE...: as --include */
            continue;
        }
        if (!strcmp(flag, "--progress")) {
            o.progress = PL_HUB_PROGRESS_BAR;
            continue;
        }
        if (!strcmp(flag, "--no-progress")) {
            o.progress = PL_HUB_PROGRESS_LINES;
            continue;
        }
        if (!strcmp(flag, "--quiet")) {
            o.progress = PL_HUB_PROGRESS_QUIET;
            continue;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pagellm download: %s needs a value (or is unknown)\n", flag);
                rc = 2;
                goto out;
            }
            val = argv[++i];
        }
        if (!strcmp(flag, "--revision")) {
            revision = val;
        } else if (!strcmp(flag, "--include")) {
            inc[n_inc++] = val;
        } else if (!strcmp(flag, "--exclude")) {
            exc[n_exc++] = val;
        } else if (!strcmp(flag, "--local-dir")) {
            o.local_dir = val;
        } else if (!strcmp(flag, "--download-dir") || !strcmp(flag, "--cache-dir")) {
            o.cache_dir = val;
        } else if (!strcmp(flag, "--token")) {
            o.token = val;
        } else if (!strcmp(flag, "--max-workers")) {
            char *end;
            errno = 0;
            long n = strtol(val, &end, 10);
            if (errno || *end || n < 1 || n > 16) {
                fprintf(stderr, "pagellm download: --max-workers '%s' is not a count (1..16)\n",
                        val);
                rc = 2;
                goto out;
            }
            o.max_workers = (int)n;
        } else {
            fprintf(stderr, "pagellm download: unknown option '%s'\n(see pagellm download --help)\n",
                    flag);
            rc = 2;
            goto out;
        }
    }
    if (!repo) {
        fprintf(stderr, "pagellm download: which model? give a Hub id, e.g. "
                        "pagellm download Qwen/Qwen3-0.6B\n");
        rc = 2;
        goto out;
    }
    if (!pl_hub_is_repo_id(repo)) {
        fprintf(stderr, "pagellm download: '%s' is not a Hub model id of the form org/name\n",
                repo);
        rc = 2;
        goto out;
    }
    if (revision && !pl_hub_is_revision(revision)) {
        fprintf(stderr, "pagellm download: --revision '%s' is not a branch, tag or commit\n",
                revision);
        rc = 2;
        goto out;
    }
    o.include = inc;
    o.n_include = n_inc;
    o.exclude = exc;
    o.n_exclude = n_exc;
    char *path = NULL;
    struct pl_err err = {0};
    if (pl_hub_download(repo, revision, &o, &path, &err) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm download: %s\n", err.msg);
        rc = 1;
        goto out;
    }
    printf("%s\n", path);
    free(path);
out:
    free(inc);
    free(exc);
    return rc;
}
