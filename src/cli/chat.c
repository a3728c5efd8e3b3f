/*
 * chat.c -- `pagellm chat --model DIR`: an interactive chat on the terminal.
 *
 * Owns: the conversation (a JSON array of messages), the read-eval loop and
 * streaming the reply. Each user line is appended to the conversation, the
 * model's chat template renders it (with the generation prompt), the prompt
 * is tokenized without adding special tokens (the template places them) and
 * runs through the request interface (pl_llm_add_request / step / poll), the
 * text deltas printed as they come. "/exit", "/quit" or end of input end the
 * chat; "/reset" starts a new conversation. Sampling flags are generate's.
 */
#include "cli/cli.h"
#include "util/err.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm chat --model DIR [--system TEXT] [options]\n\n"
            "Interactive chat using the model's chat template; the reply streams as it is\n"
            "generated. Type /exit (or end the input) to leave, /reset to start over.\n\n"
            "  --system TEXT               a system message opening the conversation\n"
            "  --chat-template FILE        a Jinja chat template overriding the model's\n"
            "  (max_tokens defaults to the rest of the context)\n\n%s",
            pl_cli_flags_help());
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            char *g = realloc(buf, cap);
            if (!g) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = g;
        }
        size_t r = fread(buf + n, 1, 4096, f);
        n += r;
        if (r < 4096)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static void add_message(json_t *msgs, const char *role, const char *content)
{
    json_t *m = json_object();
    json_object_set_new(m, "role", json_string(role));
    json_object_set_new(m, "content", json_string(content));
    json_array_append_new(msgs, m);
}

/* Runs one reply; appends its text to *reply. 0, or an exit code. */
static int reply_once(struct pl_llm *llm, const char *rid, const int32_t *ids, int n_ids,
                      const struct pl_sampling_params *sp, char **reply, size_t *reply_len)
{
    struct pl_prompt p = {NULL, ids, n_ids};
    if (pl_llm_add_request(llm, rid, &p, sp) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm chat: %s\n", pl_llm_errmsg(llm));
        return 1;
    }
    bool done = false;
    while (!done) {
        if (pl_llm_step(llm) != PL_STATUS_OK) {
            fprintf(stderr, "\npagellm chat: %s\n", pl_llm_errmsg(llm));
            return 1;
        }
        struct pl_outputs o;
        if (pl_llm_poll(llm, &o) != PL_STATUS_OK) {
            fprintf(stderr, "\npagellm chat: %s\n", pl_llm_errmsg(llm));
            return 1;
        }
        for (int i = 0; i < o.n; i++) {
            for (int k = 0; k < o.items[i].n_outputs; k++) {
                const struct pl_completion_output *c = &o.items[i].outputs[k];
                if (c->index != 0 || !c->text_len)
                    continue;
                fwrite(c->text, 1, c->text_len, stdout);
                char *g = realloc(*reply, *reply_len + c->text_len + 1);
                if (g) {
                    memcpy(g + *reply_len, c->text, c->text_len);
                    *reply_len += c->text_len;
                    g[*reply_len] = '\0';
                    *reply = g;
                }
            }
            done = done || o.items[i].finished;
        }
        fflush(stdout);
        pl_outputs_free(&o);
        if (!pl_llm_has_unfinished(llm) && o.n == 0)
            done = true;
    }
    fputc('\n', stdout);
    fflush(stdout);
    return 0;
}

int pl_cli_chat(int argc, char **argv)
{
    struct pl_cli_flags fl;
    pl_cli_flags_init(&fl);
    const char *system = NULL, *template_path = NULL;
    int rc = 0;
    char *model_dir = NULL; /* the directory --model names (a Hub id resolved) */
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            usage(stdout);
            pl_cli_flags_fini(&fl);
            return 0;
        }
        if (pl_cli_flags_bool(&fl, flag))
            continue;
        if (strncmp(flag, "--", 2)) {
            fprintf(stderr, "pagellm chat: unexpected argument '%s'\n", flag);
            rc = 2;
            goto out;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "pagellm chat: %s needs a value (or is unknown)\n", flag);
            rc = 2;
            goto out;
        }
        const char *val = argv[++i];
        if (!strcmp(flag, "--system")) {
            system = val;
            continue;
        }
        if (!strcmp(flag, "--chat-template")) {
            template_path = val;
            continue;
        }
        int r = pl_cli_flags_value(&fl, "chat", flag, val);
        if (r < 0) {
            rc = 2;
            goto out;
        }
        if (r == 0) {
            fprintf(stderr, "pagellm chat: unknown option '%s'\n", flag);
            rc = 2;
            goto out;
        }
    }
    if (!fl.llm.model) {
        fprintf(stderr, "pagellm chat: --model DIR is required\n");
        rc = 2;
        goto out;
    }
    if (pl_cli_hub_model("chat", fl.llm.model, fl.revision, fl.download_dir, false, &model_dir,
                         NULL)) {
        rc = 1;
        goto out;
    }
    fl.llm.model = model_dir;

    char *tmpl = NULL;
    if (template_path && !(tmpl = read_file(template_path))) {
        fprintf(stderr, "pagellm chat: cannot read %s\n", template_path);
        rc = 1;
        goto out;
    }
    struct pl_llm *llm;
    if (pl_llm_new(&fl.llm, &llm) != PL_STATUS_OK) {
        fprintf(stderr, "pagellm chat: %s\n", pl_llm_errmsg(llm));
        pl_llm_free(llm);
        free(tmpl);
        rc = 1;
        goto out;
    }
    struct pl_sampling_params sp;
    pl_cli_flags_sampling(&fl, llm, &sp);
    if (!fl.int_set[2])
        sp.max_tokens = -1; /* the rest of the context, as the OpenAI chat API does */
    struct pl_sampling_params check;
    if (pl_sampling_params_copy(&check, &sp, NULL) == PL_STATUS_OK) {
        struct pl_err e;
        pl_status st = pl_sampling_params_validate(&check, pl_llm_vocab_size(llm), &e);
        pl_sampling_params_fini(&check);
        if (st != PL_STATUS_OK) {
            fprintf(stderr, "pagellm chat: %s\n", e.msg);
            rc = 2;
            goto done;
        }
    }
    if (!pl_llm_has_tokenizer(llm)) {
        fprintf(stderr, "pagellm chat: the model has no tokenizer (tokenizer.json)\n");
        rc = 1;
        goto done;
    }
    struct pl_chat_options co;
    pl_chat_options_default(&co);
    co.chat_template = tmpl;
    json_t *msgs = json_array();
    if (system)
        add_message(msgs, "system", system);
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    int turn = 0;
    for (;;) {
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0)
            break;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
            break;
        if (!strcmp(line, "/reset")) {
            json_array_clear(msgs);
            if (system)
                add_message(msgs, "system", system);
            continue;
        }
        if (len == 0)
            continue;
        add_message(msgs, "user", line);
        char *mj = json_dumps(msgs, JSON_COMPACT);
        char *prompt = NULL;
        int32_t *ids = NULL;
        int n_ids = 0;
        if (!mj || pl_llm_apply_chat_template(llm, mj, &co, &prompt) != PL_STATUS_OK ||
            pl_llm_encode(llm, prompt, false, &ids, &n_ids) != PL_STATUS_OK) {
            fprintf(stderr, "pagellm chat: %s\n", pl_llm_errmsg(llm));
            free(mj);
            pl_free(prompt);
            rc = 1;
            break;
        }
        free(mj);
        pl_free(prompt);
        char rid[32];
        snprintf(rid, sizeof(rid), "chat-%d", ++turn);
        char *reply = NULL;
        size_t reply_len = 0;
        rc = reply_once(llm, rid, ids, n_ids, &sp, &reply, &reply_len);
        pl_free(ids);
        if (rc) {
            free(reply);
            break;
        }
        add_message(msgs, "assistant", reply ? reply : "");
        free(reply);
    }
    free(line);
    json_decref(msgs);
done:
    pl_llm_free(llm);
    free(tmpl);
out:
    pl_cli_flags_fini(&fl);
    free(model_dir);
    return rc;
}
