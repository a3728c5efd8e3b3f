/*
 * tensor_parallel.h -- tensor parallelism's process model: one process, one
 * thread per rank (GPU), each rank an ordinary model runner over its share of
 * the model (model/shard.h), joined by a communicator (backend/comm.h).
 *
 * Owns: struct pl_tp, the coordinator behind a model runner whose
 * tensor_parallel_size > 1: the rank threads, the communicator group, the KV
 * pool's size (the smallest rank's), and the dispatch of every call (run a
 * batch, copy blocks) to all ranks at once. docs/parallel.md says why threads
 * and not processes.
 * Each rank thread creates its runner (its backend: a CUDA device is per thread)
 * and runs every command for it, so a rank's device work always comes from the
 * same thread. A step: the caller posts the batch, every rank runs the same
 * forward on its share (the collectives meet inside) and the caller returns when
 * all are done. The logits are either written into the caller's host matrix,
 * each rank its columns (vocab-parallel LM head), for the host sampler; or
 * gathered on rank 0's device, which samples with the rows and uniforms the
 * engine drew (one random stream, the engine's).
 * Failure: a rank whose command fails aborts the communicator, so the others
 * stop at their next collective instead of waiting; a step not done within the
 * step timeout (PAGELLM_TP_TIMEOUT_S, default 300 s) aborts it too. Either way
 * the coordinator is then broken: this and every later call fail with the first
 * rank's message (the engine stops with it), never a hang.
 */
#ifndef PL_ENGINE_TENSOR_PARALLEL_H
#define PL_ENGINE_TENSOR_PARALLEL_H

#include "engine/model_runner.h"

struct pl_tp;

/* Starts p->tensor_parallel_size rank threads and builds every rank (cfg: the full
 * config; st: the checkpoint, borrowed, NULL with load_format dummy). */
pl_status pl_tp_new(const struct pl_model_runner_params *p, const struct pl_model_config *cfg,
                    const struct pl_safetensors *st, struct pl_tp **out, struct pl_err *err);
void pl_tp_free(struct pl_tp *tp);
int pl_tp_size(const struct pl_tp *tp);
/* Rank r's runner (for sizes; its calls belong to its thread). */
const struct pl_model_runner *pl_tp_rank_runner(const struct pl_tp *tp, int r);
/* Runs b on every rank; logits: host [b->n_logits, vocab_size] (each rank fills its
 * columns). */
pl_status pl_tp_run(struct pl_tp *tp, const struct pl_batch *b, float *logits,
                    struct pl_err *err);
/* Runs b on every rank and samples on rank 0 (pl_model_runner_run_sample's arguments; out
 * written by rank 0). */
pl_status pl_tp_run_sample(struct pl_tp *tp, const struct pl_batch *b, const int32_t *row_src,
                           int n_rows, const struct pl_sampler_row *rows, const double *uniforms,
                           struct pl_sample_result *out, struct pl_err *err);
pl_status pl_tp_copy_blocks(struct pl_tp *tp, const struct pl_block_copy *copies, int n_copies,
                            struct pl_err *err);

/* Test hook: rank r fails its next step with an error (before its collectives), as a
 * rank whose device failed. */
void pl_tp_fail_rank_once(struct pl_tp *tp, int r);
/* Test hook: rank r's collectives never complete (as a hung GPU), CPU communicator only. */
void pl_tp_hang_rank(struct pl_tp *tp, int r);

#endif
