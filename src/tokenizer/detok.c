/*
 * detok.c -- incremental detokenization for streaming (struct pl_detok).
 *
 * Owns: vLLM's detokenize_incrementally algorithm over token ids. Two windows
 * of the id list are decoded on every new token:
 *
 *   ids:  ... [prefix_offset ........ read_offset ....... n_ids)
 *              \___ prefix_text ___/
 *              \___________________ new_text __________________/
 *
 * and new_text minus prefix_text is emitted only when new_text is longer and
 * does not end in U+FFFD (an incomplete UTF-8 sequence that later tokens may
 * finish); then prefix_offset = read_offset and read_offset = n_ids. Decoding
 * a window that starts a few tokens back gives decoders their context (a
 * leading space, a Strip of the first token, bytes of one character split
 * over tokens). The prompt's last 5 ids seed the window, as vLLM does.
 * Invariants: 0 <= prefix_offset <= read_offset <= n_ids; ids before
 * prefix_offset are dropped from memory (they no longer affect output).
 */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

#define DETOK_INITIAL_OFFSET 5

static bool push_id(struct pl_detok *d, int32_t id)
{
    if (d->n_ids == d->cap_ids) {
        int cap = d->cap_ids ? d->cap_ids * 2 : 32;
        int32_t *v = realloc(d->ids, (size_t)cap * sizeof(*v));
        if (!v)
            return false;
        d->ids = v;
        d->cap_ids = cap;
    }
    d->ids[d->n_ids++] = id;
    return true;
}

pl_status pl_detok_init(struct pl_detok *d, const struct pl_tokenizer *tok,
                        const int32_t *prompt_ids, int n_prompt, bool skip_special_tokens,
                        struct pl_err *err)
{
    memset(d, 0, sizeof(*d));
    if (!tok || n_prompt < 0 || (n_prompt && !prompt_ids))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "detok: bad arguments");
    d->tok = tok;
    d->skip_special_tokens = skip_special_tokens;
    int start = n_prompt > DETOK_INITIAL_OFFSET ? n_prompt - DETOK_INITIAL_OFFSET : 0;
    for (int i = start; i < n_prompt; i++) {
        if (prompt_ids[i] < 0) {
            pl_detok_fini(d);
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "detok: prompt token id %d is negative", prompt_ids[i]);
        }
        if (!push_id(d, prompt_ids[i])) {
            pl_detok_fini(d);
            return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
        }
    }
    d->n_prompt = d->n_ids;
    d->prefix_offset = 0;
    d->read_offset = d->n_ids;
    return PL_STATUS_OK;
}

static bool append_out(char **out, size_t *out_len, const char *s, size_t n)
{
    size_t cur = *out ? *out_len : 0;
    char *p = realloc(*out, cur + n + 1);
    if (!p)
        return false;
    memcpy(p + cur, s, n);
    p[cur + n] = 0;
    *out = p;
    *out_len = cur + n;
    return true;
}

/* Decodes both windows and emits the difference (when final or stable). */
static pl_status step(struct pl_detok *d, bool final, char **out, size_t *out_len,
                      struct pl_err *err)
{
    struct tok_buf prefix = {0}, full = {0};
    pl_status st = tok_decode_ids(d->tok, d->ids + d->prefix_offset,
                                  d->read_offset - d->prefix_offset, d->skip_special_tokens,
                                  &prefix, err);
    if (st == PL_STATUS_OK)
        st = tok_decode_ids(d->tok, d->ids + d->prefix_offset, d->n_ids - d->prefix_offset,
                            d->skip_special_tokens, &full, err);
    if (st != PL_STATUS_OK)
        goto done;
    bool incomplete = full.n >= 3 && !memcmp(full.p + full.n - 3, "\xEF\xBF\xBD", 3);
    if (full.n > prefix.n && (final || !incomplete)) {
        size_t cut = prefix.n;
        /* Never split a character if the windows disagree on the prefix. */
        while (cut < full.n && ((unsigned char)full.p[cut] & 0xC0) == 0x80)
            cut++;
        if (!append_out(out, out_len, full.p + cut, full.n - cut)) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
            goto done;
        }
        d->emitted += full.n - cut;
        d->prefix_offset = d->read_offset;
        d->read_offset = d->n_ids;
    }
    if (final)
        d->read_offset = d->n_ids;
    /* Forget ids that no window can reach any more. */
    if (d->prefix_offset >= 256) {
        int drop = d->prefix_offset;
        memmove(d->ids, d->ids + drop, (size_t)(d->n_ids - drop) * sizeof(int32_t));
        d->n_ids -= drop;
        d->prefix_offset -= drop;
        d->read_offset -= drop;
        d->n_prompt = d->n_prompt > drop ? d->n_prompt - drop : 0;
    }
done:
    tok_buf_free(&prefix);
    tok_buf_free(&full);
    return st;
}

pl_status pl_detok_push(struct pl_detok *d, int32_t id, char **out, size_t *out_len,
                        struct pl_err *err)
{
    if (!d || !d->tok || !out || !out_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "detok: bad arguments");
    /* an id past the tokenizer (a padded model vocab) has no token: it stays in the
     * window and decodes to "" there, as in transformers and vLLM */
    if (id < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "detok: token id %d is negative", id);
    if (!push_id(d, id))
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "out of memory");
    return step(d, false, out, out_len, err);
}

pl_status pl_detok_flush(struct pl_detok *d, char **out, size_t *out_len, struct pl_err *err)
{
    if (!d || !d->tok || !out || !out_len)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "detok: bad arguments");
    if (d->read_offset >= d->n_ids)
        return PL_STATUS_OK;
    return step(d, true, out, out_len, err);
}

void pl_detok_fini(struct pl_detok *d)
{
    if (!d)
        return;
    free(d->ids);
    memset(d, 0, sizeof(*d));
}
