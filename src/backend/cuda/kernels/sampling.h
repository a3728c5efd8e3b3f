/*
 * sampling.h -- the launch wrapper of the sampling kernel (kernels/sampling.cu), C linkage.
 *
 * Owns: the device-side layout of one sampling row and of its result. The host side
 * (cuda_backend.c) turns struct pl_sampler_row into struct pl_cuk_sample_row, packs each
 * row's penalised tokens (deduplicated, with their output counts) into one flat array,
 * uploads, launches, downloads the results. Semantics are those of
 * pl_sampler_sample_rows (core/sampler.h); the kernel file's header says how.
 */
#ifndef PL_BACKEND_CUDA_KERNELS_SAMPLING_H
#define PL_BACKEND_CUDA_KERNELS_SAMPLING_H

#include "backend/cuda/kernels/kernels.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PL_CUK_MAX_LOGPROBS 20 /* = PL_MAX_LOGPROBS (checked in cuda_backend.c) */

struct pl_cuk_sample_row {
    int32_t logits_row;  /* row of the logits buffer */
    float temperature;   /* < 1e-5: greedy */
    int32_t top_k;       /* 0: off (normalised on the host: k <= 0 or k >= vocab) */
    float top_p;         /* >= 1: off */
    float min_p;         /* <= 0: off */
    float rep;           /* repetition penalty (1: off) */
    float freq, pres;    /* frequency / presence penalties */
    int32_t pen_off;     /* this row's entries in pen_ids / pen_cnt / pen_val */
    int32_t pen_n;       /* distinct penalised tokens (0: no penalty) */
    int32_t n_logprobs;  /* -1: none; else top-n (<= PL_CUK_MAX_LOGPROBS, <= vocab) */
    int32_t mask_row;    /* row of masks (structured output), -1: no mask */
    double u;            /* the row's uniform in [0, 1) (random rows) */
};

struct pl_cuk_sample_out {
    int32_t token;
    float logprob;       /* raw log_softmax of token (when n_logprobs >= 0) */
    int32_t rank;
    int32_t n_top;
    int32_t top_ids[PL_CUK_MAX_LOGPROBS];
    float top_lp[PL_CUK_MAX_LOGPROBS];
};

/* Largest vocabulary the kernel takes (its penalty bitmap lives in shared memory: 64 KiB
 * at 2^19 ids; Gemma 3's 262,208 ids are past 2^18). */
#define PL_CUK_SAMPLE_MAX_VOCAB (1 << 19)

/*
 * Samples n_rows rows: row r reads logits + rows[r].logits_row * vocab (fp32, not
 * modified). pen_ids / pen_cnt: the rows' distinct penalised tokens and their counts in
 * the output (0: prompt only); pen_val: scratch of the same length. masks: packed token
 * masks, ceil(vocab / 32) words per row, read at rows[r].mask_row (may be NULL when no
 * row has one). All device memory.
 */
int pl_cuk_sample(pl_cuda_stream s, const float *logits, int vocab,
                  const struct pl_cuk_sample_row *rows, int n_rows, const int32_t *pen_ids,
                  const int32_t *pen_cnt, float *pen_val, const uint32_t *masks,
                  struct pl_cuk_sample_out *out);

#ifdef __cplusplus
}
#endif

#endif
