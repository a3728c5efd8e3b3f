/*
 * test_cli_progress.c -- the offline progress bar (src/cli/progress.c): the text of
 * one line, the erase after every redraw, and the two speeds' definitions, on made-up
 * clocks (nothing here depends on how fast the test runs).
 */
#include "cli/cli.h"
#include "test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The speeds: input over the prefill steps' time, output over all the elapsed time. */
static void test_format_speeds(void)
{
    char line[256];
    /* 1000 prompt tokens computed in 2 s of prefill steps, 300 tokens in 10 s elapsed */
    pl_cli_progress_format(line, sizeof(line), 1, 4, 10.0, 2.0, 1000, 300);
    CHECKF(strstr(line, "est. speed input: 500.00 toks/s, output: 30.00 toks/s]") != NULL,
           "%s", line);
    CHECKF(strstr(line, " 1/4 [00:10<00:30, ") != NULL, "%s", line);
    CHECKF(strncmp(line, "Processed prompts:  25%|#######       ", 38) == 0, "%s", line);
    /* one closing bracket, at the end */
    CHECK(strchr(line, ']') == line + strlen(line) - 1);
    /* nothing computed yet: zero speeds, unknown time left */
    pl_cli_progress_format(line, sizeof(line), 0, 3, 0.0, 0.0, 0, 0);
    CHECKF(strstr(line, "0/3 [00:00<?, est. speed input: 0.00 toks/s, output: 0.00 toks/s]"),
           "%s", line);
    /* done == total: a full bar */
    pl_cli_progress_format(line, sizeof(line), 3, 3, 4.0, 1.0, 30, 40);
    CHECKF(strstr(line, "100%|##############################| 3/3 [00:04<00:00") != NULL, "%s",
           line);
}

/* Every redraw ends with an erase to the end of the line, so a shorter line leaves no
 * characters of a longer one behind ("toks/s]]"). */
static void test_redraw_erases(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != NULL);
    struct pl_cli_progress p;
    pl_cli_progress_init_at(&p, true, f, 100.0);
    /* a long line (big speeds) then a shorter one */
    pl_cli_progress_update_at(&p, 101.0, 0, 2, 123456789, 98765432);
    pl_cli_progress_update_at(&p, 102.0, 1, 2, 123456789, 98765432);
    pl_cli_progress_update_at(&p, 200.0, 2, 2, 123456789, 98765433);
    pl_cli_progress_finish(&p);
    fclose(f);
    int draws = 0;
    for (char *s = buf; (s = strchr(s, '\r')) != NULL; s++) {
        draws++;
        char *end = strstr(s, "\033[K");
        CHECKF(end != NULL, "a redraw without an erase: %s", s);
        char *next = strchr(s + 1, '\r');
        CHECK(end && (!next || end < next));
    }
    CHECK(draws == 3);
    CHECK(len > 0 && buf[len - 1] == '\n');
    free(buf);
}

/* The prefill time is the time of the steps whose prompt-token count grew; the input
 * speed holds still after the prompts are done instead of decaying. */
static void test_input_speed_holds(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != NULL);
    struct pl_cli_progress p;
    pl_cli_progress_init_at(&p, true, f, 0.0);
    pl_cli_progress_update_at(&p, 1.0, 0, 1, 400, 1);   /* prefill step: 1 s, 400 tokens */
    pl_cli_progress_update_at(&p, 2.0, 0, 1, 400, 2);   /* decode steps from here */
    pl_cli_progress_update_at(&p, 30.0, 0, 1, 400, 30);
    CHECK_NEAR(p.prefill_seconds, 1.0, 1e-9);
    pl_cli_progress_update_at(&p, 40.0, 1, 1, 400, 40);
    pl_cli_progress_finish(&p);
    fclose(f);
    /* the last line: input 400 tokens over 1 s of prefill; output 40 over 40 s */
    char *last = strrchr(buf, '\r');
    REQUIRE(last != NULL);
    CHECKF(strstr(last, "input: 400.00 toks/s, output: 1.00 toks/s]") != NULL, "%s", last);
    free(buf);
}

/* Disabled (not a terminal, or --no-progress): nothing is written. */
static void test_disabled_writes_nothing(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    REQUIRE(f != NULL);
    struct pl_cli_progress p;
    pl_cli_progress_init_at(&p, false, f, 0.0);
    pl_cli_progress_update_at(&p, 1.0, 1, 1, 10, 10);
    pl_cli_progress_finish(&p);
    fclose(f);
    CHECK(len == 0);
    free(buf);
}

int main(void)
{
    PL_RUN(test_format_speeds);
    PL_RUN(test_redraw_erases);
    PL_RUN(test_input_speed_holds);
    PL_RUN(test_disabled_writes_nothing);
    return pl_test_summary();
}
