/*
 * registry.c -- the architectures pagellm runs, and the dimension names of the
 * tensor-spec tables (model/arch.h).
 *
 * Owns: the list of architecture records. A new architecture is its model file
 * (which defines `const struct pl_arch pl_arch_<name>`) plus one line in each of
 * the two places below.
 */
#include "model/arch.h"

#include <stdio.h>
#include <string.h>

extern const struct pl_arch pl_arch_llama, pl_arch_mistral, pl_arch_qwen2, pl_arch_qwen3,
    pl_arch_phi3, pl_arch_gemma2, pl_arch_gemma3, pl_arch_mixtral, pl_arch_qwen2_moe,
    pl_arch_qwen3_moe;

static const struct pl_arch *const ARCHS[] = {
    &pl_arch_llama,
    &pl_arch_mistral,
    &pl_arch_qwen2,
    &pl_arch_qwen3,
    &pl_arch_phi3,
    &pl_arch_gemma2,
    &pl_arch_gemma3,
    &pl_arch_mixtral,
    &pl_arch_qwen2_moe,
    &pl_arch_qwen3_moe,
};
#define N_ARCHS ((int)(sizeof(ARCHS) / sizeof(ARCHS[0])))

const struct pl_arch *const *pl_arch_list(int *n)
{
    if (n)
        *n = N_ARCHS;
    return ARCHS;
}

static bool listed(const char *const *names, const char *name)
{
    for (int i = 0; names && names[i]; i++)
        if (!strcmp(names[i], name))
            return true;
    return false;
}

const struct pl_arch *pl_arch_find(const char *name, bool by_model_type)
{
    for (int i = 0; name && i < N_ARCHS; i++)
        if (listed(by_model_type ? ARCHS[i]->model_types : ARCHS[i]->hf_names, name))
            return ARCHS[i];
    return NULL;
}

const char *pl_arch_supported_names(void)
{
    static char buf[1024];
    if (buf[0])
        return buf;
    size_t o = 0;
    for (int i = 0; i < N_ARCHS; i++)
        for (int k = 0; ARCHS[i]->hf_names[k] && o < sizeof(buf); k++) {
            int w = snprintf(buf + o, sizeof(buf) - o, "%s%s", o ? ", " : "",
                             ARCHS[i]->hf_names[k]);
            o += w > 0 ? (size_t)w : 0;
        }
    return buf;
}

int64_t pl_arch_dim(const struct pl_model_config *c, enum pl_dim d)
{
    const int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    switch (d) {
    case PL_DIM_NONE: return 0;
    case PL_DIM_ONE: return 1;
    case PL_DIM_HIDDEN: return c->hidden_size;
    case PL_DIM_VOCAB: return c->vocab_size;
    case PL_DIM_HEAD: return c->head_dim;
    case PL_DIM_Q: return q;
    case PL_DIM_KV: return kv;
    case PL_DIM_Q_KV: return q + kv;
    case PL_DIM_QKV: return q + 2 * kv;
    case PL_DIM_INTER: return c->intermediate_size;
    case PL_DIM_GATE_UP: return 2 * (int64_t)c->intermediate_size;
    case PL_DIM_EXPERTS: return c->n_experts;
    case PL_DIM_MOE_INTER: return c->moe_intermediate_size;
    case PL_DIM_SHARED_INTER: return c->shared_expert_intermediate_size;
    }
    return 0;
}

void pl_tensor_spec_name(const struct pl_tensor_spec *t, int layer, int expert, char *out,
                         size_t cap)
{
    size_t o = 0;
    for (const char *p = t->name; *p && o + 1 < cap; p++) {
        if (p[0] == '{' && (p[1] == 'L' || p[1] == 'E') && p[2] == '}') {
            int n = snprintf(out + o, cap - o, "%d", p[1] == 'L' ? layer : expert);
            o += n > 0 ? (size_t)n : 0;
            p += 2;
        } else {
            out[o++] = *p;
        }
    }
    out[o < cap ? o : cap - 1] = '\0';
}
