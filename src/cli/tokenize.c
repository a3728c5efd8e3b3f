/* tokenize.c -- `pagellm tokenize` and `pagellm detokenize` (placeholder). */
#include "cli/cli.h"

#include <stdio.h>

int pl_cli_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "pagellm tokenize: not built yet\n");
    return 1;
}

int pl_cli_detokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "pagellm detokenize: not built yet\n");
    return 1;
}
