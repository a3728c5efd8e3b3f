/*
 * test_cli_env.c -- the programs' mapping of environment variables onto
 * struct pl_llm_params (pl_cli_llm_params_from_env, the one place they are
 * read): each former PAGELLM_* engine variable sets its field only for the
 * value that asked for it, and unset variables leave the defaults.
 */
#include "test.h"

#include "cli/cli.h"
#include "pagellm.h"

#include <stdlib.h>

static const char *const VARS[] = {"PAGELLM_CUDA_GRAPHS", "PAGELLM_SAMPLER", "PAGELLM_CPU_SIMD",
                                   "PAGELLM_CUDA_GEMV", "VLLM_ALLOW_LONG_MAX_MODEL_LEN"};

static void clear(void)
{
    for (size_t i = 0; i < sizeof(VARS) / sizeof(VARS[0]); i++)
        unsetenv(VARS[i]);
}

static void test_unset_keeps_defaults(void)
{
    clear();
    struct pl_llm_params p;
    pl_llm_params_default(&p);
    pl_cli_llm_params_from_env(&p);
    CHECK(!p.enforce_eager && !p.host_sampling && !p.cpu_scalar_kernels && !p.cuda_cublas_only &&
          !p.allow_long_max_model_len);
}

static void test_each_variable(void)
{
    clear();
    setenv("PAGELLM_CUDA_GRAPHS", "0", 1);
    setenv("PAGELLM_SAMPLER", "host", 1);
    setenv("PAGELLM_CPU_SIMD", "0", 1);
    setenv("PAGELLM_CUDA_GEMV", "0", 1);
    setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1", 1);
    struct pl_llm_params p;
    pl_llm_params_default(&p);
    pl_cli_llm_params_from_env(&p);
    CHECK(p.enforce_eager && p.host_sampling && p.cpu_scalar_kernels && p.cuda_cublas_only &&
          p.allow_long_max_model_len);
    /* other values keep the default behaviour */
    setenv("PAGELLM_CUDA_GRAPHS", "1", 1);
    setenv("PAGELLM_SAMPLER", "backend", 1);
    setenv("PAGELLM_CPU_SIMD", "1", 1);
    setenv("PAGELLM_CUDA_GEMV", "", 1);
    setenv("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "0", 1);
    pl_llm_params_default(&p);
    pl_cli_llm_params_from_env(&p);
    CHECK(!p.enforce_eager && !p.host_sampling && !p.cpu_scalar_kernels && !p.cuda_cublas_only &&
          !p.allow_long_max_model_len);
    clear();
}

int main(void)
{
    PL_RUN(test_unset_keeps_defaults);
    PL_RUN(test_each_variable);
    return pl_test_summary();
}
