/*
 * batch.h -- one engine step's work as flat arrays (host side).
 *
 * Owns: struct pl_batch, the device-ready description of a step: the tokens
 * to run, where their K/V go, and what each sequence attends to. The engine
 * (scheduler + batch.c) fills it; the model runner uploads it and runs it.
 * Sequences appear in the order of cu_seqlens_q; a sequence's query tokens
 * are contiguous. Invariants (checked by pl_batch_validate):
 *   - 0 = cu_seqlens_q[0] <= ... <= cu_seqlens_q[n_seqs] = n_tokens;
 *   - q_len_s = cu_seqlens_q[s+1] - cu_seqlens_q[s] >= 1 and <= context_lens[s];
 *   - positions of sequence s's tokens are context_lens[s]-q_len_s .. context_lens[s]-1;
 *   - slot_mapping[t] = block_tables[s][pos / block_size] * block_size + pos % block_size;
 *   - logits_rows are token indices (usually each sequence's last token);
 *   - hidden_rows are token indices too (pooling requests: the rows whose final
 *     hidden state, after the final norm, the run also returns in `hidden`).
 */
#ifndef PL_ENGINE_BATCH_H
#define PL_ENGINE_BATCH_H

#include "util/err.h"

#include <stdint.h>

struct pl_batch {
    int n_tokens;
    int n_seqs;
    int32_t *token_ids;      /* [n_tokens] */
    int32_t *positions;      /* [n_tokens] */
    int32_t *seq_lens;       /* [n_tokens]: context length of the token's sequence (dynamic rope) */
    int32_t *slot_mapping;   /* [n_tokens] */
    int32_t *cu_seqlens_q;   /* [n_seqs + 1] */
    int32_t *context_lens;   /* [n_seqs] */
    int32_t *block_tables;   /* [n_seqs, max_blocks_per_seq], unused entries -1 */
    int max_blocks_per_seq;
    int max_q_len;
    int max_context_len;
    int32_t *logits_rows;    /* [n_logits] token indices whose logits are wanted */
    int n_logits;
    /* Pooling (engine.h): rows whose final hidden state is wanted, and where the run
     * writes them: hidden [n_hidden, hidden_size] fp32 host memory, rows in
     * hidden_rows order. n_hidden 0 (the default): none. */
    int32_t *hidden_rows;    /* [n_hidden] token indices */
    int n_hidden;
    float *hidden;           /* output, [n_hidden, hidden_size] */
};

/* Checks the invariants above (block_size > 0); PL_STATUS_INTERNAL with a message if broken. */
pl_status pl_batch_validate(const struct pl_batch *b, int block_size, struct pl_err *err);

#endif
