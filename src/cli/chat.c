/*
 * chat.c -- `pagellm chat --model DIR`: an interactive chat on the terminal.
 *
 * Owns: the conversation (a JSON array of messages), the read-eval loop and
 * streaming the reply. Each user line is appended to the conversation, the
 * model's chat template renders it (with the generation prompt), the prompt
 * is tokenized without adding special tokens (the template places them) and
 * runs through the request interface (pl_llm_add_request / step / poll), the
 * text deltas printed as they come. "/exit", "/quit" or end of input end the
 * chat; "/reset" starts a new conversation. Sampling flags are generate's,
 * less those that ask for more than one streamed reply (--n, --beam-width) or
 * for logprobs chat cannot show: those are refused before the model loads.
 *
 * Ctrl-C: once the model is loaded, SIGINT only sets a flag (the handler is
 * this command's: the library installs none). The reply loop checks it after
 * every engine step and aborts the request, so Ctrl-C ends the reply, not the
 * session; at the prompt it prints how to leave. Notes about the session
 * ("[conversation reset]", "[cut at --max-tokens N]", "[interrupted]") go to
 * stderr, after stdout is flushed, so stdout holds only the replies.
 */
#include "engine/sampling_params.h"
#include "cli/cli.h"
#include "util/err.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;
/* The handler also writes a byte here, so a prompt waiting in poll() wakes whatever
 * thread the signal was delivered to (the engine's threads do not block SIGINT). */
static int sigint_pipe[2] = {-1, -1};

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
    if (sigint_pipe[1] >= 0) {
        int saved = errno;
        ssize_t w = write(sigint_pipe[1], "", 1); /* full pipe: already signalled */
        (void)w;
        errno = saved;
    }
}

/* Discards Ctrl-Cs that arrived before now (during a reply or before a prompt). */
static void drain_sigint_pipe(void)
{
    char buf[64];
    while (sigint_pipe[0] >= 0 && read(sigint_pipe[0], buf, sizeof(buf)) > 0)
        ;
}

/* Waits until stdin has a line or Ctrl-C comes; true for Ctrl-C. A Ctrl-C between the
 * prompt and the read is seen too (the pipe keeps it), unlike an EINTR from read. */
static bool wait_line_or_sigint(void)
{
    struct pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sigint_pipe[0], POLLIN, 0}};
    for (;;) {
        int n = poll(fds, 2, -1);
        if (n < 0 && errno == EINTR)
            continue; /* the handler ran here; the pipe says so on the next poll */
        if (n < 0)
            return false; /* let getline report what is wrong */
        if (fds[1].revents & POLLIN) {
            drain_sigint_pipe();
            return true;
        }
        return false;
    }
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pagellm chat --model DIR [--system TEXT] [options]\n\n"
            "Interactive chat using the model's chat template; the reply streams as it is\n"
            "generated. Type /exit or /quit (or end the input: Ctrl-D) to leave, /reset to\n"
            "start over; Ctrl-C stops the reply being generated.\n\n"
            "  --model DIR|ORG/NAME        model directory or Hugging Face Hub id (required)\n"
            "  --system TEXT               a system message opening the conversation\n"
            "  --chat-template FILE        a Jinja chat template overriding the model's\n"
            "  --override-generation-config JSON  sampling defaults over generation_config.json\n"
            "  (max_tokens defaults to the rest of the context; --n, --beam-width,\n"
            "  --length-penalty, --early-stopping, --logprobs and --prompt-logprobs are\n"
            "  generate's: chat streams one reply and shows no logprobs)\n\n%s%s",
            pl_cli_flags_help_sampling(), pl_cli_flags_help_engine());
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

/* A note about the session on stderr, after the reply text already written. */
static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
    fflush(stdout);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

/* Runs one reply; appends its text to *reply. 0, -1 when the request was refused (the
 * session goes on), or an exit code. */
static int reply_once(struct pl_llm *llm, const char *rid, const int32_t *ids, int n_ids,
                      const struct pl_sampling_params *sp, char **reply, size_t *reply_len)
{
    struct pl_prompt p = {NULL, ids, n_ids};
    if (pl_llm_add_request(llm, rid, &p, sp) != PL_STATUS_OK) {
        note("pagellm chat: %s\n", pl_llm_errmsg(llm));
        return -1;
    }
    bool done = false, aborted = false;
    enum pl_finish_reason finish = PL_FINISH_NONE;
    long n_tokens = 0;
    while (!done) {
        if (interrupted && !aborted) {
            /* Ctrl-C: end this reply; its last delta comes with finish_reason abort */
            aborted = true;
            pl_llm_abort(llm, rid);
        }
        if (pl_llm_step(llm) != PL_STATUS_OK) {
            note("\npagellm chat: %s\n", pl_llm_errmsg(llm));
            return 1;
        }
        struct pl_outputs o;
        if (pl_llm_poll(llm, &o) != PL_STATUS_OK) {
            note("\npagellm chat: %s\n", pl_llm_errmsg(llm));
            return 1;
        }
        for (int i = 0; i < o.n; i++) {
            for (int k = 0; k < o.items[i].n_outputs; k++) {
                const struct pl_completion_output *c = &o.items[i].outputs[k];
                if (c->index != 0)
                    continue;
                n_tokens += c->n_token_ids;
                if (c->finish_reason != PL_FINISH_NONE)
                    finish = c->finish_reason;
                if (!c->text_len)
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
    if (finish == PL_FINISH_ABORT || aborted)
        note("[interrupted after %ld tokens]\n", n_tokens);
    else if (finish == PL_FINISH_LENGTH && sp->max_tokens > 0 && n_tokens >= sp->max_tokens)
        note("[cut at --max-tokens %d]\n", sp->max_tokens);
    else if (finish == PL_FINISH_LENGTH)
        note("[cut: the conversation fills the context (max_model_len %d); /reset to start "
             "over]\n",
             pl_llm_max_model_len(llm));
    fflush(stdout);
    interrupted = 0;
    return 0;
}

/* Flags that ask for what chat cannot show: refused before anything loads. */
static int refuse_flags(const struct pl_cli_flags *fl)
{
    static const struct {
        int index;
        const char *flag;
    } ints[] = {{PL_CLI_N, "--n"},
                {PL_CLI_BEAM_WIDTH, "--beam-width"},
                {PL_CLI_LOGPROBS, "--logprobs"},
                {PL_CLI_PROMPT_LOGPROBS, "--prompt-logprobs"}};
    const char *bad = NULL;
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]) && !bad; i++)
        if (fl->int_set[ints[i].index])
            bad = ints[i].flag;
    if (!bad && fl->float_set[PL_CLI_LENGTH_PENALTY])
        bad = "--length-penalty";
    if (!bad && fl->sp.early_stopping)
        bad = "--early-stopping";
    if (!bad)
        return 0;
    fprintf(stderr,
            "pagellm chat: %s is not supported by chat, which streams one sampled reply per "
            "turn and shows no logprobs (use pagellm generate)\n",
            bad);
    return 2;
}

/* Ctrl-C sets `interrupted`, wakes the prompt (the pipe) and interrupts a blocking read
 * (no SA_RESTART). */
static void install_sigint(void)
{
    if (sigint_pipe[0] < 0 && pipe2(sigint_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        sigint_pipe[0] = sigint_pipe[1] = -1; /* then only EINTR reports it */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, NULL);
}

int pl_cli_chat(int argc, char **argv)
{
    struct pl_cli_flags fl;
    pl_cli_flags_init(&fl);
    const char *system = NULL, *template_path = NULL;
    int rc = 0;
    char *model_dir = NULL; /* the directory --model names (a Hub id resolved) */
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        char name[64];
        const char *flag = pl_cli_split_flag(argv[i], name, sizeof(name), &val);
        if (!strcmp(flag, "-h") || !strcmp(flag, "--help")) {
            usage(stdout);
            pl_cli_flags_fini(&fl);
            return 0;
        }
        if (!val && pl_cli_flags_bool(&fl, flag))
            continue;
        if (strncmp(flag, "--", 2)) {
            fprintf(stderr, "pagellm chat: unexpected argument '%s'\n", flag);
            rc = 2;
            goto out;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pagellm chat: %s needs a value (or is unknown)\n", flag);
                rc = 2;
                goto out;
            }
            val = argv[++i];
        }
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
    if ((rc = refuse_flags(&fl)) || (rc = pl_cli_flags_check(&fl, "chat", PL_CLI_SAMPLING_REQUEST)))
        goto out;
    if (!fl.llm.model) {
        fprintf(stderr, "pagellm chat: no model: pass --model DIR\n");
        rc = 2;
        goto out;
    }
    if ((rc = pl_cli_check_model_dir("chat", fl.llm.model)))
        goto out;
    if (pl_cli_hub_model("chat", fl.llm.model, fl.revision, fl.download_dir, false, &model_dir,
                         NULL)) {
        rc = 1;
        goto out;
    }
    fl.llm.model = model_dir;

    char *tmpl = NULL;
    if (template_path && !(tmpl = read_file(template_path))) {
        fprintf(stderr, "pagellm chat: cannot read --chat-template %s: %s\n", template_path,
                strerror(errno));
        rc = 1;
        goto out;
    }
    struct pl_llm *llm;
    pl_status lst = pl_llm_new(&fl.llm, &llm);
    if (lst != PL_STATUS_OK) {
        fprintf(stderr, "pagellm chat: %s\n", pl_llm_errmsg(llm));
        pl_llm_free(llm);
        free(tmpl);
        rc = pl_cli_exit_code(lst);
        goto out;
    }
    struct pl_sampling_params sp;
    pl_cli_flags_sampling(&fl, llm, &sp);
    if (!fl.int_set[PL_CLI_MAX_TOKENS])
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
    install_sigint();
    for (;;) {
        drain_sigint_pipe(); /* a Ctrl-C that came as the reply ended is spent */
        if (tty) {
            fputs("> ", stdout);
            fflush(stdout);
        }
        interrupted = 0;
        errno = 0;
        /* on a terminal each read returns one line, so stdin's buffer is empty here and
         * poll sees what getline would read; piped input is read as it comes */
        if (tty && wait_line_or_sigint()) {
            /* Ctrl-C at the prompt: nothing to stop; say how to leave */
            interrupted = 0;
            note("\n(/exit or Ctrl-D leaves the chat)\n");
            continue;
        }
        ssize_t len = getline(&line, &cap, stdin);
        if (len < 0 && errno == EINTR && interrupted) {
            clearerr(stdin);
            interrupted = 0;
            note("\n(/exit or Ctrl-D leaves the chat)\n");
            continue;
        }
        if (len < 0) {
            if (tty)
                fputc('\n', stdout); /* end the prompt's line: the shell's starts clean */
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit"))
            break;
        if (!strcmp(line, "/reset")) {
            json_array_clear(msgs);
            if (system)
                add_message(msgs, "system", system);
            note("[conversation reset%s]\n", system ? "; the system message is kept" : "");
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
        int r = reply_once(llm, rid, ids, n_ids, &sp, &reply, &reply_len);
        pl_free(ids);
        if (r < 0) {
            /* refused (e.g. the conversation no longer fits): drop the message, go on */
            json_array_remove(msgs, json_array_size(msgs) - 1);
            free(reply);
            continue;
        }
        if (r) {
            free(reply);
            rc = r;
            break;
        }
        /* an interrupted reply stays as far as it was shown, so roles keep alternating */
        add_message(msgs, "assistant", reply ? reply : "");
        free(reply);
    }
    signal(SIGINT, SIG_DFL);
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
