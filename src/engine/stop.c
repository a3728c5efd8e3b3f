/*
 * stop.c -- stop strings across token boundaries and stop tokens (see stop.h).
 *
 * Owns: nothing. Invariant kept for callers: the bytes this module says may
 * be released (len - hold_back) never need to be taken back later: a later
 * match cannot start before them, because the longest held tail was a
 * maximal stop-string prefix.
 */
#include "engine/stop.h"

#include <string.h>

/* First occurrence of needle in hay[from, len), or -1. */
static long find(const char *hay, size_t len, size_t from, const char *needle, size_t nlen)
{
    if (nlen == 0 || len < nlen || from > len - nlen)
        return -1;
    const char *p = memmem(hay + from, len - from, needle, nlen);
    return p ? (long)(p - hay) : -1;
}

void pl_stop_check_strings(const char *text, size_t len, size_t checked,
                           const char *const *stop, int n_stop, bool include_stop_str_in_output,
                           struct pl_stop_match *m)
{
    m->matched = false;
    m->stop_index = -1;
    m->text_len = len;
    m->hold_back = 0;
    if (checked > len)
        checked = len;
    long best = -1;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        if (!sl)
            continue;
        /* an occurrence must end after `checked`: start at checked - (sl - 1) or later */
        size_t from = checked >= sl - 1 ? checked - (sl - 1) : 0;
        long pos = find(text, len, from, stop[i], sl);
        if (pos >= 0 && (best < 0 || pos < best)) {
            best = pos;
            m->stop_index = i;
        }
    }
    if (best >= 0) {
        m->matched = true;
        m->text_len = (size_t)best;
        if (include_stop_str_in_output)
            m->text_len += strlen(stop[m->stop_index]);
        return;
    }
    if (include_stop_str_in_output)
        return; /* a partial stop string would be output anyway */
    size_t hold = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        size_t l = sl ? sl - 1 : 0;
        if (l > len)
            l = len;
        for (; l > hold; l--)
            if (!memcmp(text + len - l, stop[i], l)) {
                hold = l;
                break;
            }
    }
    m->hold_back = hold;
}

enum pl_stop_token_result pl_stop_check_token(const struct pl_sampling_params *p,
                                              const int32_t *eos_ids, int n_eos, int32_t token,
                                              int n_output, int total_len, int max_model_len)
{
    if ((p->max_tokens != -1 && n_output >= p->max_tokens) ||
        (max_model_len > 0 && total_len >= max_model_len))
        return PL_STOP_TOKEN_LENGTH;
    if (n_output < p->min_tokens)
        return PL_STOP_TOKEN_NONE;
    if (!p->ignore_eos) {
        if (n_eos > 0 && token == eos_ids[0])
            return PL_STOP_TOKEN_EOS;
        for (int i = 1; i < n_eos; i++)
            if (token == eos_ids[i])
                return PL_STOP_TOKEN_STOP_ID;
    }
    for (int i = 0; i < p->n_stop_token_ids; i++)
        if (token == p->stop_token_ids[i])
            return PL_STOP_TOKEN_STOP_ID;
    return PL_STOP_TOKEN_NONE;
}
