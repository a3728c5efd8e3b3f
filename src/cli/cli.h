/*
 * cli.h -- the pagellm subcommands. Each takes argc/argv after the subcommand
 * name and returns the process exit code; src/cli is the only place that exits.
 * Exit codes: 0 ok, 1 runtime error, 2 bad flags or values.
 */
#ifndef PL_CLI_H
#define PL_CLI_H

#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int pl_cli_generate(int argc, char **argv);
int pl_cli_chat(int argc, char **argv);
int pl_cli_tokenize(int argc, char **argv);
int pl_cli_detokenize(int argc, char **argv);
int pl_cli_serve(int argc, char **argv);
int pl_cli_bench(int argc, char **argv);
int pl_cli_worker(int argc, char **argv);
int pl_cli_download(int argc, char **argv);

/* ---- download.c: models by name ---- */

/* --model NAME -> a model directory: an existing directory as is, else a Hub
 * repo id (org/name) at revision (NULL: main), downloaded into the cache
 * (download_dir, NULL: $HF_HUB_CACHE or ~/.cache/huggingface/hub) or found
 * there; tokenizer_only fetches just the tokenizer and config files.
 * *path_out is malloc'ed. Prints the error as "pagellm CMD: ..." (also into
 * err when not NULL) and returns 1; 0 on success. */
int pl_cli_hub_model(const char *cmd, const char *name, const char *revision,
                     const char *download_dir, bool tokenizer_only, char **path_out,
                     struct pl_err *err);

/* ---- flags.c: sampling and engine flags shared by generate and chat ---- */

struct pl_cli_flags {
    struct pl_llm_params llm;     /* engine flags on top of pl_llm_params_default */
    struct pl_sampling_params sp; /* sampling flags as given (see *_set) */
    bool sp_set;
    bool float_set[7];            /* temperature, top_p, min_p, presence, frequency,
                                     repetition, length_penalty */
    bool int_set[7];              /* n, top_k, max_tokens, min_tokens, logprobs,
                                     prompt_logprobs, beam_width */
    bool seed_set;
    const char **stop;            /* [n_stop] borrowed from argv */
    int n_stop;
    int32_t *stop_ids;            /* [n_stop_ids] */
    int n_stop_ids;
    const char *revision;         /* --revision: the Hub revision of --model */
    const char *download_dir;     /* --download-dir: the Hub cache root */
};

/* "--name=value" -> returns "--name" (copied into buf of n bytes) and sets *val to
 * "value"; any other argument is returned as is and *val is left alone. */
const char *pl_cli_split_flag(const char *arg, char *buf, size_t n, const char **val);

/* Parses a token-id list: "1,2,3", "1 2 3" or "[1, 2, 3]" (non-negative ints).
 * *out is malloc'ed (may hold 0 ids); false on anything else. */
bool pl_cli_parse_ids(const char *s, int32_t **out, int *n_out);

void pl_cli_flags_init(struct pl_cli_flags *f);
void pl_cli_flags_fini(struct pl_cli_flags *f);
/* A flag without a value: 1 when it is one of ours (applied), 0 otherwise. */
int pl_cli_flags_bool(struct pl_cli_flags *f, const char *flag);
/* A flag with a value: 1 applied, 0 not ours, -1 bad value (message printed, exit 2). */
int pl_cli_flags_value(struct pl_cli_flags *f, const char *cmd, const char *flag,
                       const char *val);
/* The LLM's defaults with the given sampling flags on top (arrays borrowed from f). */
void pl_cli_flags_sampling(struct pl_cli_flags *f, const struct pl_llm *llm,
                           struct pl_sampling_params *out);
/* Help text for the shared flags. */
const char *pl_cli_flags_help(void);

/* ---- progress.c: a progress bar on stderr (vLLM's use_tqdm) ---- */

struct pl_cli_progress {
    bool enabled;      /* stderr is a terminal and --no-progress was not given */
    double t_start, t_last;
    int last_done;
};

void pl_cli_progress_init(struct pl_cli_progress *p, bool no_progress);
/* Redraws at most 10 times a second (and always when done == total). */
void pl_cli_progress_update(struct pl_cli_progress *p, int done, int total,
                            uint64_t prompt_tokens, uint64_t generation_tokens);
/* Ends the bar's line. */
void pl_cli_progress_finish(struct pl_cli_progress *p);

#endif
