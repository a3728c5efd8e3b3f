/* model_runner.c -- placeholder (the CPU forward pass work replaces it). */
#include "engine/model_runner.h"

#include <stddef.h>

void pl_model_runner_params_default(struct pl_model_runner_params *p)
{
    p->model_dir = NULL;
    p->n_threads = 0;
    p->block_size = 16;
    p->num_kv_blocks = 0;
    p->kv_cache_bytes = 256u << 20;
    p->max_num_batched_tokens = 2048;
    p->max_num_seqs = 256;
    p->max_model_len = 0;
}
pl_status pl_model_runner_new(const struct pl_model_runner_params *p,
                              struct pl_model_runner **out, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "the model runner is not built yet");
}
void pl_model_runner_free(struct pl_model_runner *r) {}
const struct pl_model_config *pl_model_runner_config(const struct pl_model_runner *r) { return NULL; }
int pl_model_runner_num_blocks(const struct pl_model_runner *r) { return 0; }
int pl_model_runner_block_size(const struct pl_model_runner *r) { return 0; }
int pl_model_runner_max_model_len(const struct pl_model_runner *r) { return 0; }
int pl_model_runner_max_tokens(const struct pl_model_runner *r) { return 0; }
int pl_model_runner_max_seqs(const struct pl_model_runner *r) { return 0; }
pl_status pl_model_runner_run(struct pl_model_runner *r, const struct pl_batch *b, float *logits,
                              struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "the model runner is not built yet");
}
pl_status pl_model_runner_copy_blocks(struct pl_model_runner *r, const struct pl_block_copy *copies,
                                      int n_copies, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "the model runner is not built yet");
}
