/*
 * batch.h -- one engine step's work as flat arrays (host side).
 *
 * Owns: struct pl_batch, the device-ready description of a step: the tokens
 * to run, where their K/V go, and what each sequence attends to. The engine
 * (scheduler + batch.c) fills it; the model runner uploads it and runs it.
 * Its fields and invariants are stated once, in core/types.h (next to the
 * struct); pl_batch_validate checks them.
 */
#ifndef PL_ENGINE_BATCH_H
#define PL_ENGINE_BATCH_H

#include "core/types.h"
#include "util/err.h"

#include <stdint.h>

/* struct pl_batch lives in core/types.h (shared with the model runner and backends). */

/* Checks the invariants (core/types.h; block_size > 0); PL_STATUS_INTERNAL with a
 * message if broken. */
pl_status pl_batch_validate(const struct pl_batch *b, int block_size, struct pl_err *err);

#endif
