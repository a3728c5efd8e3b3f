/*
 * cli.h -- the pagellm subcommands. Each takes argc/argv after the subcommand
 * name and returns the process exit code; src/cli is the only place that exits.
 * Exit codes (docs/engine.md "Exit codes"; `pagellm --help` says the same):
 *   0  success;
 *   1  a runtime failure: the model directory is missing or unreadable, a model
 *      or file pagellm cannot use, out of memory, an engine or network failure;
 *   2  the command line is wrong: an unknown flag, a missing or malformed value,
 *      a value out of range, or one the model refuses (--max-model-len above the
 *      model's length, a token id outside the vocabulary, ...). The message names
 *      the flag or field.
 * Values are checked before the model loads wherever they can be.
 */
#ifndef PL_CLI_H
#define PL_CLI_H

#include "pagellm.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

/* ---- flags.c: sampling and engine flags shared by the model commands ---- */

/* Indices of float_set / int_set. */
enum pl_cli_float_flag {
    PL_CLI_TEMPERATURE, PL_CLI_TOP_P, PL_CLI_MIN_P, PL_CLI_PRESENCE_PENALTY,
    PL_CLI_FREQUENCY_PENALTY, PL_CLI_REPETITION_PENALTY, PL_CLI_LENGTH_PENALTY,
    PL_CLI_N_FLOAT_FLAGS
};
enum pl_cli_int_flag {
    PL_CLI_N, PL_CLI_TOP_K, PL_CLI_MAX_TOKENS, PL_CLI_MIN_TOKENS, PL_CLI_LOGPROBS,
    PL_CLI_PROMPT_LOGPROBS, PL_CLI_BEAM_WIDTH, PL_CLI_N_INT_FLAGS
};

struct pl_cli_flags {
    struct pl_llm_params llm;     /* engine flags on top of pl_llm_params_default */
    struct pl_sampling_params sp; /* sampling flags as given (see *_set) */
    bool sp_set;
    bool float_set[PL_CLI_N_FLOAT_FLAGS];
    bool int_set[PL_CLI_N_INT_FLAGS];
    bool seed_set;
    const char **stop;            /* [n_stop] borrowed from argv */
    int n_stop;
    int32_t *stop_ids;            /* [n_stop_ids] */
    int n_stop_ids;
    const char *revision;         /* --revision: the Hub revision of --model */
    const char *download_dir;     /* --download-dir: the Hub cache root */
    /* the first sampling flag given that has no generation_config key (--n, --stop,
       --ignore-eos, ...): a server cannot take it as a default (messages) */
    const char *per_request_flag;
    const char *override_json;    /* --override-generation-config, borrowed from argv */
    char *override_owned;         /* the merged override (pl_cli_flags_check), owned */
};

/* "--name=value" -> returns "--name" (copied into buf of n bytes) and sets *val to
 * "value"; any other argument is returned as is and *val is left alone. */
const char *pl_cli_split_flag(const char *arg, char *buf, size_t n, const char **val);

/* Parses a token-id list: "1,2,3", "1 2 3" or "[1, 2, 3]" (non-negative ints).
 * *out is malloc'ed (may hold 0 ids); false on anything else. */
bool pl_cli_parse_ids(const char *s, int32_t **out, int *n_out);

void pl_cli_flags_init(struct pl_cli_flags *f);
/* The environment's engine settings (VLLM_ALLOW_LONG_MAX_MODEL_LEN=1; PAGELLM_CUDA_GRAPHS=0
 * -> enforce_eager, PAGELLM_SAMPLER=host -> host_sampling, PAGELLM_CPU_SIMD=0 ->
 * cpu_scalar_kernels, PAGELLM_CUDA_GEMV=0 -> cuda_cublas_only) over p: the one place
 * the programs (CLI, benchmarks) read them; the library never does. */
void pl_cli_llm_params_from_env(struct pl_llm_params *p);
void pl_cli_flags_fini(struct pl_cli_flags *f);
/* A flag without a value: 1 when it is one of ours (applied), 0 otherwise. */
int pl_cli_flags_bool(struct pl_cli_flags *f, const char *flag);
/* A flag with a value: 1 applied, 0 not ours, -1 bad value (message printed, exit 2). */
int pl_cli_flags_value(struct pl_cli_flags *f, const char *cmd, const char *flag,
                       const char *val);

/* How a command uses the sampling flags (pl_cli_flags_check). */
enum pl_cli_sampling_use {
    PL_CLI_SAMPLING_REQUEST, /* generate, chat: the flags are the requests' params */
    PL_CLI_SAMPLING_SERVER   /* serve, worker: the generation_config ones are server-wide
                                defaults (merged into --override-generation-config); the
                                others are refused as per-request fields */
};

/*
 * Checks what can be checked before the model loads, once every flag is parsed:
 * engine flag combinations, each sampling flag and then all of them together on
 * vLLM's defaults, --override-generation-config; for servers, merges the default
 * flags into f->llm.override_generation_config. 0, or 2 with a message naming the
 * flag.
 */
int pl_cli_flags_check(struct pl_cli_flags *f, const char *cmd, enum pl_cli_sampling_use use);

/* The LLM's defaults with the given sampling flags on top (arrays borrowed from f). */
void pl_cli_flags_sampling(struct pl_cli_flags *f, const struct pl_llm *llm,
                           struct pl_sampling_params *out);

/* Help texts: the sampling flags (generate, chat), the server-default sampling flags
 * (serve, worker), the engine flags (all four). None lists --model: each command says
 * how it takes the model. */
const char *pl_cli_flags_help_sampling(void);
const char *pl_cli_flags_help_server_sampling(void);
const char *pl_cli_flags_help_engine(void);

/*
 * A command's model directory: 0 when `model` is a directory, else a message on
 * stderr and exit code 1. A value shaped like a Hugging Face Hub id ("org/name")
 * that is no local path is told that downloading is not supported yet.
 */
int pl_cli_check_model_dir(const char *cmd, const char *model);

/* The exit code for a library failure: 2 for PL_STATUS_INVALID_ARGUMENT (a value
 * the caller passed), 1 for everything else. */
int pl_cli_exit_code(pl_status st);

/* ---- progress.c: a progress bar on stderr (vLLM's use_tqdm) ---- */

struct pl_cli_progress {
    bool enabled;              /* stderr is a terminal and --no-progress was not given */
    FILE *out;                 /* stderr (tests: a memory stream) */
    double t_start, t_last_draw, t_prev;
    double prefill_seconds;    /* time of the steps that computed prompt tokens */
    uint64_t last_prompt_tokens;
    int last_done;             /* -1 until the first draw */
};

void pl_cli_progress_init(struct pl_cli_progress *p, bool no_progress);
/* The same with everything given (tests): enabled or not, the stream, the start time. */
void pl_cli_progress_init_at(struct pl_cli_progress *p, bool enabled, FILE *out, double t);
/* Called after every engine step with the totals so far (pl_llm_progress_fn's meaning);
 * redraws at most 10 times a second, and always when done == total. */
void pl_cli_progress_update(struct pl_cli_progress *p, int done, int total,
                            uint64_t prompt_tokens, uint64_t generation_tokens);
/* The same at time t (seconds on the clock of init_at). */
void pl_cli_progress_update_at(struct pl_cli_progress *p, double t, int done, int total,
                               uint64_t prompt_tokens, uint64_t generation_tokens);
/* The bar's text, without "\r" and the erase (see progress.c for the two speeds). */
void pl_cli_progress_format(char *buf, size_t n, int done, int total, double elapsed,
                            double prefill_seconds, uint64_t prompt_tokens,
                            uint64_t generation_tokens);
/* Ends the bar's line. */
void pl_cli_progress_finish(struct pl_cli_progress *p);

#endif
