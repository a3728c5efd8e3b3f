/*
 * tiny_model.h -- pagellm's own tiny Hugging Face models, generated on demand.
 *
 * Owns: the table of presets (small random-weight Llama / Mistral / Qwen2 /
 * Qwen3 models for the golden tests, a ~100M-parameter benchmark shape, and the
 * built-in "default" model with a byte-level BPE tokenizer) and the writer that
 * turns a preset into a complete model directory: config.json,
 * generation_config.json, model.safetensors (or two shards + index) and, for
 * "default", tokenizer.json + tokenizer_config.json; golden presets also get
 * pagellm_prompts.json (their test prompts as token ids).
 * Invariants:
 *   - the output is a pure function of the preset name: byte-for-byte the same
 *     on every machine and every run (own PRNG, integer-only noise, no libm
 *     transcendental functions, fixed JSON text, sorted safetensors headers);
 *   - transformers 5 loads every directory with no missing or unexpected weights.
 */
#ifndef PL_MODEL_TINY_MODEL_H
#define PL_MODEL_TINY_MODEL_H

#include "util/err.h"

#include <stdbool.h>
#include <stdint.h>

/* One golden-test prompt of a preset. */
struct pl_tiny_prompt {
    int32_t ids[64]; /* prompt token ids, [n_ids] */
    int n_ids;
    int max_tokens;  /* tokens to generate greedily in the golden test */
};

#define PL_TINY_MAX_PROMPTS 8

/* Writes the preset into out_dir (created, with parents, when missing; files
 * that exist are overwritten). PL_STATUS_NOT_FOUND for an unknown preset,
 * PL_STATUS_IO when a file cannot be written. */
pl_status pl_tiny_model_write(const char *preset, const char *out_dir, struct pl_err *err);

/* The preset names, in table order; *n receives the count. */
const char *const *pl_tiny_model_list_presets(int *n);

/* A one-line description of a preset (NULL when unknown). */
const char *pl_tiny_model_describe(const char *preset);

/* The preset's family: the model_type its config.json carries ("llama", "phi3", ...);
 * NULL when unknown. Golden fixtures are made per family (tools/golden_refs.py --family). */
const char *pl_tiny_model_family(const char *preset);

/* True for the presets the golden tests use (they have prompts and no tokenizer). */
bool pl_tiny_model_is_golden(const char *preset);

/* The golden prompts of a preset: fills out[0..*n) (at most PL_TINY_MAX_PROMPTS).
 * PL_STATUS_NOT_FOUND for an unknown or non-golden preset. */
pl_status pl_tiny_model_prompts(const char *preset, struct pl_tiny_prompt *out, int *n,
                                struct pl_err *err);

/* True when model_dir/config.json carries "pagellm_tiny_test_model": true, i.e. the
 * directory was written by pl_tiny_model_write (the CLI says so before generating,
 * since such a model's text is random by design). False when unreadable. */
bool pl_tiny_model_dir_is_tiny(const char *model_dir);

#endif
