/*
 * debug_env.c -- the one reader of the library's PAGELLM_* debugging and test
 * variables (see debug_env.h).
 */
#include "util/debug_env.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Set and not "0". */
static bool on(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0");
}

static const char *nonempty(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A number in [0, INT_MAX], else -1. */
static int count(const char *name)
{
    const char *v = nonempty(name);
    if (!v)
        return -1;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    return *end || n < 0 || n > INT_MAX ? -1 : (int)n;
}

void pl_debug_env_read(struct pl_debug_env *out)
{
    out->log_level = nonempty("PAGELLM_LOG_LEVEL");
    out->profile = on("PAGELLM_PROFILE");
    out->cuda_profile = on("PAGELLM_CUDA_PROFILE");
    out->test_stall_file = nonempty("PAGELLM_TEST_STALL_FILE");
    out->test_fail_step_file = nonempty("PAGELLM_TEST_FAIL_STEP_FILE");
    const char *w = getenv("PAGELLM_CPU_WEIGHTS");
    out->cpu_weights_mmap = w && !strcmp(w, "mmap");
    out->cpu_affinity = on("PAGELLM_CPU_AFFINITY");
    out->cpu_matmul = nonempty("PAGELLM_CPU_MATMUL");
    out->cpu_isa = nonempty("PAGELLM_CPU_ISA");
    out->q4_gemm_max_n = count("PAGELLM_Q4_GEMM_MAX_N");
    out->moe_gemv_entries = count("PAGELLM_MOE_GEMV_ENTRIES");
    const char *red = nonempty("PAGELLM_CUBLASLT_REDUCTION");
    out->cublaslt_any_reduction = red && !strcmp(red, "any");
    const char *pdl = nonempty("PAGELLM_CUDA_PDL");
    out->cuda_pdl = pdl ? strcmp(pdl, "0") != 0 : -1;
    const char *fuse = nonempty("PAGELLM_CUDA_FUSE");
    out->cuda_fuse = fuse ? strcmp(fuse, "0") != 0 : -1;
}
