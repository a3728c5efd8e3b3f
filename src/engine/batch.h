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
 *   - logits_rows are token indices (usually each sequence's last token).
 */
#ifndef PL_ENGINE_BATCH_H
#define PL_ENGINE_BATCH_H

#include "core/types.h"
#include "util/err.h"

#include <stdint.h>

/* struct pl_batch lives in core/types.h (shared with the model runner and backends). */

/* Checks the invariants above (block_size > 0); PL_STATUS_INTERNAL with a message if broken. */
pl_status pl_batch_validate(const struct pl_batch *b, int block_size, struct pl_err *err);

#endif
