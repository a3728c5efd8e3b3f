/*
 * test_archs.h -- the registered architecture records by name, for tests.
 */
#ifndef PL_TEST_ARCHS_H
#define PL_TEST_ARCHS_H

#include "model/arch.h"

#define PL_TEST_ARCH_LLAMA pl_arch_find("LlamaForCausalLM", false)
#define PL_TEST_ARCH_MISTRAL pl_arch_find("MistralForCausalLM", false)
#define PL_TEST_ARCH_QWEN2 pl_arch_find("Qwen2ForCausalLM", false)
#define PL_TEST_ARCH_QWEN3 pl_arch_find("Qwen3ForCausalLM", false)
#define PL_TEST_ARCH_GEMMA2 pl_arch_find("Gemma2ForCausalLM", false)
#define PL_TEST_ARCH_GEMMA3 pl_arch_find("Gemma3ForCausalLM", false)
#define PL_TEST_ARCH_MIXTRAL pl_arch_find("MixtralForCausalLM", false)
#define PL_TEST_ARCH_QWEN2_MOE pl_arch_find("Qwen2MoeForCausalLM", false)
#define PL_TEST_ARCH_QWEN3_MOE pl_arch_find("Qwen3MoeForCausalLM", false)

#endif
