/*
 * progress.c -- `Processed prompts` progress bar on stderr for offline
 * batches, in the spirit of vLLM's use_tqdm: done/total, elapsed, estimated
 * time left and input/output token throughput. Drawn only when stderr is a
 * terminal and --no-progress was not given, so pipes and logs stay clean.
 */
#include "cli/cli.h"
#include "util/clock.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

void pl_cli_progress_init(struct pl_cli_progress *p, bool no_progress)
{
    p->enabled = !no_progress && isatty(STDERR_FILENO);
    p->t_start = p->t_last = pl_clock_seconds();
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

void pl_cli_progress_update(struct pl_cli_progress *p, int done, int total,
                            uint64_t prompt_tokens, uint64_t generation_tokens)
{
    if (!p->enabled || total <= 0)
        return;
    double t = pl_clock_seconds();
    if (done != total && t - p->t_last < 0.1)
        return;
    p->t_last = t;
    p->last_done = done;
    double el = t - p->t_start;
    int width = 30, fill = (int)((double)width * done / total);
    char bar[64];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : ' ';
    bar[width] = '\0';
    char e[24], left[24];
    hms(el, e, sizeof(e));
    if (done > 0)
        hms(el / done * (total - done), left, sizeof(left));
    else
        snprintf(left, sizeof(left), "?");
    double in = el > 0 ? (double)prompt_tokens / el : 0;
    double out = el > 0 ? (double)generation_tokens / el : 0;
    fprintf(stderr, "\rProcessed prompts: %3d%%|%s| %d/%d [%s<%s, est. speed input: %.2f toks/s, "
                    "output: %.2f toks/s]",
            100 * done / total, bar, done, total, e, left, in, out);
    fflush(stderr);
}

void pl_cli_progress_finish(struct pl_cli_progress *p)
{
    if (p->enabled && p->last_done >= 0)
        fputc('\n', stderr);
}
