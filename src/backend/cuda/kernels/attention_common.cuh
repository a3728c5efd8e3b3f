/*
 * attention_common.cuh -- what the decode and prefill attention kernels share.
 *
 * Owns: the head-dim limit and the paged-cache addressing (rules: backend.h).
 */
#ifndef PL_CUDA_ATTENTION_COMMON_CUH
#define PL_CUDA_ATTENTION_COMMON_CUH

#include "kernels.h"

#include <stdint.h>

#define MAX_HD 256

/* Row offset (in elements) of context token c of a sequence for kv head kvh. */
static __device__ __forceinline__ int64_t kv_offset(const int32_t *table, int block_size, int c,
                                                    int n_kv_heads, int kvh, int head_dim)
{
    int64_t slot = (int64_t)table[c / block_size] * block_size + c % block_size;
    return (slot * n_kv_heads + kvh) * head_dim;
}

#endif
