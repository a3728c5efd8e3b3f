/*
 * cli.h -- the pagellm subcommands. Each takes argc/argv after the subcommand
 * name and returns the process exit code; src/cli is the only place that exits.
 */
#ifndef PL_CLI_H
#define PL_CLI_H

int pl_cli_generate(int argc, char **argv);
int pl_cli_tokenize(int argc, char **argv);
int pl_cli_detokenize(int argc, char **argv);
int pl_cli_bench(int argc, char **argv);

#endif
