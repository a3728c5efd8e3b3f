/*
 * beam_search.h -- vLLM's beam search (LLM.beam_search / BeamSearchParams)
 * over the engine.
 *
 * Owns: pl_beam_search, which runs beam search for a batch of prompts the
 * way vLLM's offline beam search does: every step, each live beam of every
 * prompt becomes a one-token engine request asking for 2 * beam_width
 * logprobs (the engine batches them and the prefix cache serves the shared
 * history); every beam x candidate extension is scored, an extension ending
 * in eos (unless ignore_eos) is collected as finished, the others are sorted
 * by score and the best beam_width kept. At the end the finished and live
 * beams are sorted by score and the best beam_width returned.
 *
 * Score (vLLM's get_beam_search_score): cumulative_logprob / seq_len **
 * length_penalty, seq_len counting prompt and output tokens, less one when
 * the last token is eos. The eos token is not part of a finished beam's
 * tokens unless include_stop_str_in_output. Candidate logprobs are the raw
 * logprobs of the step (temperature is the request's; beam search is
 * normally greedy). early_stopping is accepted and, as in vLLM's offline
 * beam search, has no effect. beam_width (0: n) is at most PL_MAX_LOGPROBS/2.
 */
#ifndef PL_ENGINE_BEAM_SEARCH_H
#define PL_ENGINE_BEAM_SEARCH_H

#include "engine/engine.h"
#include "pagellm.h"
#include "tokenizer/tokenizer.h"

struct pl_beam_prompt {
    const int32_t *prompt;        /* [n_prompt] */
    int n_prompt;
    const char *prompt_text;      /* echoed (may be NULL) */
    const struct pl_sampling_params *params; /* use_beam_search set; validated */
};

/*
 * Runs beam search for prompts[0..n) on an engine with nothing pending;
 * fills items[0..n) (complete outputs, n_outputs = beam width, best first).
 * Request ids are taken from *next_id upward. tok may be NULL (empty text);
 * eos_id < 0: no eos. On error the engine is left with nothing pending.
 */
pl_status pl_beam_search(struct pl_engine *e, const struct pl_tokenizer *tok, int32_t eos_id,
                         int max_model_len, const struct pl_beam_prompt *prompts, int n,
                         struct pl_request_output *items, uint64_t *next_id, struct pl_err *err);

#endif
