/*
 * batch.c -- checks a struct pl_batch against the invariants of batch.h.
 *
 * Owns: pl_batch_validate, the guard between whoever builds a batch (the
 * greedy driver now, the scheduler later) and the kernels, which index the
 * KV cache through these arrays without further checks. Every broken
 * invariant is reported with the sequence/token at fault and both values.
 */
#include "engine/batch.h"

#include <stddef.h>

pl_status pl_batch_validate(const struct pl_batch *b, int block_size, struct pl_err *err)
{
    if (block_size <= 0)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: block_size %d must be > 0", block_size);
    if (b->n_tokens < 0 || b->n_seqs < 0)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: n_tokens %d / n_seqs %d negative",
                          b->n_tokens, b->n_seqs);
    if (b->n_seqs == 0 || b->n_tokens == 0) {
        if (b->n_seqs != 0 || b->n_tokens != 0)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: %d tokens for %d sequences (both or neither must be 0)",
                              b->n_tokens, b->n_seqs);
        if (b->n_logits != 0 || b->n_hidden != 0)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: %d logits rows / %d hidden rows in an empty batch",
                              b->n_logits, b->n_hidden);
        return PL_STATUS_OK;
    }
    if (!b->token_ids || !b->positions || !b->slot_mapping || !b->cu_seqlens_q ||
        !b->context_lens || !b->block_tables)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: an array is missing");
    if (b->max_blocks_per_seq <= 0)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: max_blocks_per_seq %d must be > 0",
                          b->max_blocks_per_seq);
    if (b->cu_seqlens_q[0] != 0)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: cu_seqlens_q[0] = %d, expected 0",
                          b->cu_seqlens_q[0]);
    if (b->cu_seqlens_q[b->n_seqs] != b->n_tokens)
        return pl_err_set(err, PL_STATUS_INTERNAL,
                          "batch: cu_seqlens_q[n_seqs=%d] = %d, expected n_tokens %d", b->n_seqs,
                          b->cu_seqlens_q[b->n_seqs], b->n_tokens);
    int max_q = 0, max_ctx = 0;
    for (int s = 0; s < b->n_seqs; s++) {
        int q_len = b->cu_seqlens_q[s + 1] - b->cu_seqlens_q[s];
        int ctx = b->context_lens[s];
        if (q_len < 1)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: sequence %d has q_len %d (cu_seqlens_q %d..%d), must be >= 1",
                              s, q_len, b->cu_seqlens_q[s], b->cu_seqlens_q[s + 1]);
        if (q_len > ctx)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: sequence %d has q_len %d > context_lens %d", s, q_len, ctx);
        int n_blocks_needed = (ctx + block_size - 1) / block_size;
        if (n_blocks_needed > b->max_blocks_per_seq)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: sequence %d needs %d blocks for %d tokens, table holds %d", s,
                              n_blocks_needed, ctx, b->max_blocks_per_seq);
        const int32_t *table = b->block_tables + (size_t)s * (size_t)b->max_blocks_per_seq;
        for (int i = 0; i < n_blocks_needed; i++)
            if (table[i] < 0)
                return pl_err_set(err, PL_STATUS_INTERNAL,
                                  "batch: sequence %d block_tables[%d] = %d for a used block", s,
                                  i, table[i]);
        for (int t = b->cu_seqlens_q[s]; t < b->cu_seqlens_q[s + 1]; t++) {
            int pos = ctx - q_len + (t - b->cu_seqlens_q[s]);
            if (b->positions[t] != pos)
                return pl_err_set(err, PL_STATUS_INTERNAL,
                                  "batch: token %d (sequence %d) has position %d, expected %d", t,
                                  s, b->positions[t], pos);
            int64_t slot = (int64_t)table[pos / block_size] * block_size + pos % block_size;
            if (b->slot_mapping[t] != slot)
                return pl_err_set(err, PL_STATUS_INTERNAL,
                                  "batch: token %d (sequence %d, position %d) has slot %d, "
                                  "expected %lld",
                                  t, s, pos, b->slot_mapping[t], (long long)slot);
            if (b->seq_lens && b->seq_lens[t] != ctx)
                return pl_err_set(err, PL_STATUS_INTERNAL,
                                  "batch: token %d has seq_lens %d, expected context length %d", t,
                                  b->seq_lens[t], ctx);
        }
        if (q_len > max_q)
            max_q = q_len;
        if (ctx > max_ctx)
            max_ctx = ctx;
    }
    if (b->max_q_len != max_q)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: max_q_len %d, expected %d",
                          b->max_q_len, max_q);
    if (b->max_context_len != max_ctx)
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: max_context_len %d, expected %d",
                          b->max_context_len, max_ctx);
    if (b->n_logits < 0 || (b->n_logits > 0 && !b->logits_rows))
        return pl_err_set(err, PL_STATUS_INTERNAL, "batch: %d logits rows without an array",
                          b->n_logits);
    for (int i = 0; i < b->n_logits; i++)
        if (b->logits_rows[i] < 0 || b->logits_rows[i] >= b->n_tokens)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: logits_rows[%d] = %d outside the %d tokens", i,
                              b->logits_rows[i], b->n_tokens);
    if (b->n_hidden < 0 || (b->n_hidden > 0 && (!b->hidden_rows || !b->hidden)))
        return pl_err_set(err, PL_STATUS_INTERNAL,
                          "batch: %d hidden rows without the row or output array", b->n_hidden);
    for (int i = 0; i < b->n_hidden; i++)
        if (b->hidden_rows[i] < 0 || b->hidden_rows[i] >= b->n_tokens)
            return pl_err_set(err, PL_STATUS_INTERNAL,
                              "batch: hidden_rows[%d] = %d outside the %d tokens", i,
                              b->hidden_rows[i], b->n_tokens);
    return PL_STATUS_OK;
}
