/* generate.c -- `pagellm generate` (placeholder until the forward pass lands). */
#include "cli/cli.h"

#include <stdio.h>

int pl_cli_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "pagellm generate: not built yet\n");
    return 1;
}
