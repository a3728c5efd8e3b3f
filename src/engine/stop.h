/*
 * stop.h -- stop conditions of a sequence: stop strings matched in the
 * detokenized text while it streams, and stop tokens (eos, stop_token_ids).
 *
 * Owns: nothing; pure functions over the caller's text and params.
 *
 * Streaming contract (per sequence, text = all output text decoded so far):
 *   after each new delta, call pl_stop_check_strings(text, len, checked, ...)
 *   where `checked` is the text length at the previous call (0 at first);
 *   - on a match, the output is text[0, m.text_len) and the sequence
 *     finishes with stop_reason = the stop string m.stop_index;
 *   - otherwise text[0, len - m.hold_back) may be released to the client;
 *     the last m.hold_back bytes are a proper prefix of some stop string and
 *     must wait for more text (or for the end of the sequence, when they
 *     are released as they are).
 * Matching is on bytes of UTF-8 text; because a stop string starts with a
 * UTF-8 lead byte, a match or a held-back tail never begins inside a
 * character of valid UTF-8 text.
 */
#ifndef PL_ENGINE_STOP_H
#define PL_ENGINE_STOP_H

#include "pagellm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct pl_stop_match {
    bool matched;      /* a stop string occurs in the text */
    int stop_index;    /* which one (index into stop[]), -1 when none */
    size_t text_len;   /* the output text to keep: all of it when !matched; else the
                          text before the stop string (include: through its end) */
    size_t hold_back;  /* when !matched: trailing bytes that may still become a stop
                          string (0 when include_stop_str_in_output) */
};

/*
 * Looks for stop strings in text[0, len) that end after byte `checked` (the
 * part of the text already checked by earlier calls cannot hold a match, or
 * the sequence would have stopped). When several match, the one that starts
 * earliest in the text wins (at the same start, the lower index). Note: vLLM
 * instead takes the first matching string in list order; the two differ only
 * when one delta completes several stop strings.
 */
void pl_stop_check_strings(const char *text, size_t len, size_t checked,
                           const char *const *stop, int n_stop, bool include_stop_str_in_output,
                           struct pl_stop_match *m);

enum pl_stop_token_result {
    PL_STOP_TOKEN_NONE = 0, /* keep going */
    PL_STOP_TOKEN_EOS,      /* finish_reason "stop", stop_reason None */
    PL_STOP_TOKEN_STOP_ID,  /* finish_reason "stop", stop_reason = the token id */
    PL_STOP_TOKEN_LENGTH    /* finish_reason "length" */
};

/*
 * vLLM's check_stop for the token just appended (the n_output-th): length
 * first (n_output >= max_tokens, or total_len >= max_model_len when
 * max_model_len > 0), nothing before min_tokens, then eos (unless
 * ignore_eos), then stop_token_ids. eos_ids[0] is the primary eos id (the
 * tokenizer's / config.json's); further entries are generation_config.json's
 * extra eos ids, which vLLM merges into stop_token_ids (skipped under
 * ignore_eos, reported with stop_reason = the id).
 */
enum pl_stop_token_result pl_stop_check_token(const struct pl_sampling_params *p,
                                              const int32_t *eos_ids, int n_eos, int32_t token,
                                              int n_output, int total_len, int max_model_len);

#endif
