/*
 * progress.c -- `Processed prompts` progress bar on stderr for offline
 * batches, in the spirit of vLLM's use_tqdm: done/total, elapsed, estimated
 * time left and input/output token throughput. Drawn only when stderr is a
 * terminal and --no-progress was not given, so pipes and logs stay clean.
 *
 * The two speeds (docs/engine.md):
 *   input  = prompt tokens computed by prefill / seconds of the engine steps
 *            that computed prompt tokens. Dividing by all the elapsed time
 *            instead would make the figure fall once the prompts are done
 *            while nothing about prefill changed.
 *   output = tokens generated / seconds since the bar started (vLLM's
 *            definition: the average generation rate of the run).
 * A step's time is the time between two updates (the engine calls back after
 * every step), counted as prefill time when the prompt-token count grew.
 *
 * Each redraw is "\r" + the line + "\033[K" (erase to the end of the line), so
 * a line shorter than the one before leaves nothing of it behind.
 */
#include "cli/cli.h"
#include "util/clock.h"

#include <stdio.h>
#include <unistd.h>

void pl_cli_progress_init(struct pl_cli_progress *p, bool no_progress)
{
    pl_cli_progress_init_at(p, !no_progress && isatty(STDERR_FILENO), stderr,
                            pl_clock_seconds());
}

void pl_cli_progress_init_at(struct pl_cli_progress *p, bool enabled, FILE *out, double t)
{
    p->enabled = enabled;
    p->out = out;
    p->t_start = p->t_last_draw = p->t_prev = t;
    p->prefill_seconds = 0;
    p->last_prompt_tokens = 0;
    p->last_done = -1;
}

static void hms(double s, char *buf, size_t n)
{
    int t = s < 0 ? 0 : s > 359999 ? 359999 : (int)(s + 0.5); /* 99:59:59 at most */
    if (t >= 3600)
        snprintf(buf, n, "%d:%02d:%02d", t / 3600 % 100, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%02d:%02d", t / 60, t % 60);
}

void pl_cli_progress_format(char *buf, size_t n, int done, int total, double elapsed,
                            double prefill_seconds, uint64_t prompt_tokens,
                            uint64_t generation_tokens)
{
    if (total <= 0)
        total = 1;
    done = done < 0 ? 0 : done > total ? total : done;
    enum { WIDTH = 30 };
    int fill = (int)((double)WIDTH * done / total);
    char bar[WIDTH + 1];
    for (int i = 0; i < WIDTH; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[WIDTH] = '\0';
    char e[24], left[24];
    hms(elapsed, e, sizeof(e));
    if (done > 0)
        hms(elapsed / done * (total - done), left, sizeof(left));
    else
        snprintf(left, sizeof(left), "?");
    double in = prefill_seconds > 0 ? (double)prompt_tokens / prefill_seconds : 0;
    double out = elapsed > 0 ? (double)generation_tokens / elapsed : 0;
    snprintf(buf, n,
             "Processed prompts: %3d%%|%s| %d/%d [%s<%s, est. speed input: %.2f toks/s, "
             "output: %.2f toks/s]",
             100 * done / total, bar, done, total, e, left, in, out);
}

void pl_cli_progress_update_at(struct pl_cli_progress *p, double t, int done, int total,
                               uint64_t prompt_tokens, uint64_t generation_tokens)
{
    if (!p->enabled || total <= 0)
        return;
    /* every call ends one engine step: attribute its time before throttling draws */
    if (prompt_tokens > p->last_prompt_tokens)
        p->prefill_seconds += t - p->t_prev;
    p->last_prompt_tokens = prompt_tokens;
    p->t_prev = t;
    if (done != total && p->last_done >= 0 && t - p->t_last_draw < 0.1)
        return;
    p->t_last_draw = t;
    p->last_done = done;
    char line[256];
    pl_cli_progress_format(line, sizeof(line), done, total, t - p->t_start, p->prefill_seconds,
                           prompt_tokens, generation_tokens);
    fprintf(p->out, "\r%s\033[K", line);
    fflush(p->out);
}

void pl_cli_progress_update(struct pl_cli_progress *p, int done, int total,
                            uint64_t prompt_tokens, uint64_t generation_tokens)
{
    pl_cli_progress_update_at(p, pl_clock_seconds(), done, total, prompt_tokens,
                              generation_tokens);
}

void pl_cli_progress_finish(struct pl_cli_progress *p)
{
    if (p->enabled && p->last_done >= 0)
        fputc('\n', p->out);
}
