/* greedy.c -- placeholder (the CPU forward pass work replaces it). */
#include "engine/greedy.h"

pl_status pl_greedy_generate(struct pl_model_runner *r, struct pl_greedy_seq *seqs, int n_seqs,
                             int prefill_chunk, struct pl_err *err)
{
    return pl_err_set(err, PL_STATUS_UNSUPPORTED, "greedy generation is not built yet");
}
void pl_greedy_seq_fini(struct pl_greedy_seq *s) {}
