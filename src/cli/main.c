/*
 * main.c -- the pagellm command line: dispatches to one file per subcommand.
 */
#include "cli/cli.h"
#include "pagellm.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f,
            "pagellm %s -- LLM inference with a paged KV cache\n\n"
            "usage: pagellm <command> [options]\n\n"
            "commands:\n"
            "  generate     offline generation for one or more prompts\n"
            "  chat         interactive chat with the model's chat template\n"
            "  tokenize     text or chat messages -> token ids\n"
            "  detokenize   token ids -> text\n"
            "  serve        an OpenAI-compatible HTTP server\n"
            "  bench        benchmarks: 'bench serve' (HTTP serving latency/throughput)\n"
            "  worker       RunPod Serverless worker (docs/runpod.md)\n"
            "  download     fetch a model from the Hugging Face Hub into the cache\n"
            "  version      print the version\n\n"
            "Run 'pagellm <command> --help' for a command's options.\n\n"
            "exit status: 0 success; 1 a runtime failure (missing or unusable model or file,\n"
            "out of memory, engine or network failure); 2 a wrong command line (unknown flag,\n"
            "bad or out-of-range value, or a value the model refuses), named in the message\n",
            PAGELLM_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "generate"))
        return pl_cli_generate(argc - 1, argv + 1);
    if (!strcmp(cmd, "chat"))
        return pl_cli_chat(argc - 1, argv + 1);
    if (!strcmp(cmd, "tokenize"))
        return pl_cli_tokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "detokenize"))
        return pl_cli_detokenize(argc - 1, argv + 1);
    if (!strcmp(cmd, "serve"))
        return pl_cli_serve(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return pl_cli_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "worker"))
        return pl_cli_worker(argc - 1, argv + 1);
    if (!strcmp(cmd, "download"))
        return pl_cli_download(argc - 1, argv + 1);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("pagellm %s\n", PAGELLM_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "pagellm: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
