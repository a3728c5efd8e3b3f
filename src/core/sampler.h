/*
 * sampler.h -- logits -> token ids, vLLM's V1 sampler on the host (the specification the
 * backends' sample ops follow; in core/ so that backends and the engine both use it).
 *
 * Owns: struct pl_sampler, a handle holding the scratch buffers for rows of
 * vocab_size logits (reserved at creation; sampling allocates nothing) and
 * the engine-wide generator that requests without a seed draw from.
 *
 * Per row, in vLLM's order (vllm/v1/sample/sampler.py):
 *   0. logprobs, when requested, come from the raw logits: log_softmax of the
 *      logits as passed in (vLLM's default logprobs_mode "raw_logprobs");
 *   1. allowed_token_ids: every other token -> -inf; then the row's token_mask
 *      (structured output): every token whose bit is clear -> -inf;
 *   2. min_tokens: while fewer than min_tokens tokens were generated, the eos
 *      ids and stop_token_ids -> -inf;
 *   3. logit_bias: bias added to the token's logit;
 *   4. penalties: repetition (tokens of prompt or output: positive logits
 *      divided, negative multiplied), then frequency (minus penalty times the
 *      count in the output), then presence (minus penalty once per token in
 *      the output);
 *   5. temperature < 1e-5: greedy argmax, ties to the lowest id, no draw;
 *   6. otherwise: divide by temperature, then min_p (drop p < min_p * p_max),
 *      then top_k (keep tokens whose logit is >= the k-th largest: ties with
 *      the k-th stay, as in vLLM), then top_p (keep the smallest set of most
 *      likely tokens whose mass reaches top_p, renormalized over what top_k
 *      kept), then invert the cumulative distribution of the kept tokens at
 *      the row's uniform u: the token is the first, in candidate order
 *      (probability descending, id ascending), at which the kept mass summed
 *      in that order exceeds u times the kept total.
 *
 * Randomness is split from the arithmetic so that other samplers (the
 * backend's sample op on a GPU) give the same tokens from the same draws:
 * pl_sampler_draw takes each row's one uniform from its generator, and
 * pl_sampler_sample_rows samples rows given their uniforms. pl_sampler_sample
 * is the two in sequence.
 *
 * Invariants:
 *   - a row draws exactly one value from its generator when it is sampled
 *     randomly (temperature >= PL_SAMPLER_GREEDY_EPS) and none when greedy;
 *     a seeded row (row.rng != NULL) touches no other generator, so its
 *     tokens do not depend on its position in the batch or on the other rows.
 *     Unseeded rows draw from the sampler's generator in row order.
 *   - candidate selection and the inversion follow a total order (logit
 *     descending, id ascending), so the result is a deterministic function of
 *     (logits, params, uniform) and does not depend on how the candidates
 *     happen to be arranged in memory.
 *   - NaN logits are treated as -inf. When every token of a row is masked
 *     (e.g. min_tokens masked every allowed token) the row falls back to the
 *     argmax of its raw logits rather than failing the batch (a random row
 *     has still consumed its draw).
 */
#ifndef PL_CORE_SAMPLER_H
#define PL_CORE_SAMPLER_H

#include "core/types.h"
#include "pagellm.h"
#include "util/err.h"
#include "util/rng.h"

#include <stdbool.h>
#include <stdint.h>

/* vLLM's _SAMPLING_EPS: temperatures below it mean greedy (no draw) */
#define PL_SAMPLER_GREEDY_EPS 1e-5f

struct pl_sampler;

/* struct pl_sampler_row and struct pl_sample_result live in core/types.h. */

/*
 * Creates a sampler for batches of up to max_rows rows of vocab_size logits;
 * seed seeds the generator of unseeded requests (the engine seed).
 */
pl_status pl_sampler_new(int max_rows, int vocab_size, uint64_t seed, struct pl_sampler **out,
                         struct pl_err *err);
void pl_sampler_free(struct pl_sampler *s);

/*
 * Samples one token per row. logits: [n_rows][vocab_size] fp32, row-major,
 * not modified. rows: [n_rows]; out: [n_rows]. Returns
 * PL_STATUS_INVALID_ARGUMENT when n_rows exceeds max_rows, a row has no
 * params, or a prompt/output/eos id is outside the vocabulary (the message
 * names the row); every random row has then consumed its draw.
 */
pl_status pl_sampler_sample(struct pl_sampler *s, const float *logits, int n_rows,
                            const struct pl_sampler_row *rows, struct pl_sample_result *out,
                            struct pl_err *err);

/*
 * Draws the uniform in [0, 1) of every random row, in row order, from the
 * row's own generator (row.rng) or the sampler's; greedy rows and rows
 * without params get 0 and draw nothing. uniforms: [n_rows].
 */
void pl_sampler_draw(struct pl_sampler *s, const struct pl_sampler_row *rows, int n_rows,
                     double *uniforms);

/*
 * Samples rows given their uniforms (pl_sampler_draw), touching no generator.
 * Row r reads logits row row_map[r] (row_map NULL: row r) of logits
 * [..][vocab_size]; out: [n_rows]. Any number of rows; errors as
 * pl_sampler_sample. This is the specification the backend sample ops follow.
 */
pl_status pl_sampler_sample_rows(struct pl_sampler *s, const float *logits,
                                 const int32_t *row_map, int n_rows,
                                 const struct pl_sampler_row *rows, const double *uniforms,
                                 struct pl_sample_result *out, struct pl_err *err);

/*
 * True when the row uses only what every backend sample op implements:
 * temperature, top_k, top_p, min_p, the three penalties, logprobs and the
 * token_mask of structured output. False when it needs allowed_token_ids,
 * logit_bias or an active min_tokens mask
 * (those rows go through the host sampler).
 */
bool pl_sampler_row_is_basic(const struct pl_sampler_row *row);

/*
 * Logprobs of token_id and the n_top most likely tokens from raw logits
 * [vocab_size] (the same numbers the sampler reports; used for prompt_logprobs,
 * where token_id is the next prompt token). n_top is clamped to
 * [0, min(PL_MAX_LOGPROBS, vocab_size)]; token_id must be in range.
 */
void pl_sampler_logprobs(const float *logits, int vocab_size, int32_t token_id, int n_top,
                         struct pl_sample_result *out);

#endif
