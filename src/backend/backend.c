/*
 * backend.c -- backend selection by name, and helpers shared by every backend.
 *
 * Owns: the table of backends this build knows (the only place outside a
 * backend's own directory that names one), "auto" (the first accelerator with
 * a device present, else the CPU), and the moe op's scratch size.
 * Invariant: code outside src/backend never tests for a backend by name or by
 * build flag; it asks the op table (device_memory, mem_info, check_model...).
 */
#include "backend/backend.h"

#ifdef PL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/kernels/gemv.h"
#endif

#include <string.h>

struct backend_entry {
    const char *name;
    bool accelerator;
    /* NULL when this build lacks it */
    pl_status (*create)(const struct pl_backend_params *p, struct pl_backend **out,
                        struct pl_err *err);
    int (*n_devices)(void);
    const char *missing; /* why it is absent from this build */
};

static pl_status cpu_create(const struct pl_backend_params *p, struct pl_backend **out,
                            struct pl_err *err)
{
    pl_status st = pl_backend_cpu_new(p ? p->n_threads : 0, out, err);
    if (st == PL_STATUS_OK && p && p->cpu_scalar_kernels)
        pl_backend_cpu_use_simd(*out, false);
    return st;
}

#ifdef PL_HAVE_CUDA
static pl_status cuda_create(const struct pl_backend_params *p, struct pl_backend **out,
                             struct pl_err *err)
{
    if (p && p->cuda_cublas_only)
        pl_cuk_gemv_force(0, 0);
    return pl_backend_cuda_new_act(p ? p->device : 0, p && p->float32 ? PL_DTYPE_F32 : PL_DTYPE_BF16,
                                   out, err);
}
#define CUDA_CREATE cuda_create
#define CUDA_COUNT pl_cuda_device_count
#else
#define CUDA_CREATE NULL
#define CUDA_COUNT NULL
#endif

/* Accelerators first: "auto" takes the first one with a device. */
static const struct backend_entry BACKENDS[] = {
    {"cuda", true, CUDA_CREATE, CUDA_COUNT, "this build has no CUDA backend (built without nvcc)"},
    {"cpu", false, cpu_create, NULL, NULL},
};
#define N_BACKENDS (sizeof(BACKENDS) / sizeof(BACKENDS[0]))

const char *pl_backend_names(void) { return "auto, cpu, cuda"; }

bool pl_backend_name_known(const char *name)
{
    if (!name)
        return false;
    if (!strcmp(name, "auto"))
        return true;
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (!strcmp(name, BACKENDS[i].name))
            return true;
    return false;
}

pl_status pl_backend_new(const char *name, const struct pl_backend_params *p,
                         struct pl_backend **out, struct pl_err *err)
{
    *out = NULL;
    const char *n = name ? name : "cpu";
    if (!strcmp(n, "auto")) {
        for (size_t i = 0; i < N_BACKENDS; i++) {
            const struct backend_entry *b = &BACKENDS[i];
            if (b->create && (!b->accelerator || (b->n_devices && b->n_devices() > 0)))
                return b->create(p, out, err);
        }
        return pl_err_set(err, PL_STATUS_UNSUPPORTED, "device: no backend is available");
    }
    for (size_t i = 0; i < N_BACKENDS; i++) {
        const struct backend_entry *b = &BACKENDS[i];
        if (strcmp(n, b->name))
            continue;
        if (!b->create)
            return pl_err_set(err, PL_STATUS_UNSUPPORTED, "device: %s", b->missing);
        return b->create(p, out, err);
    }
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "device: '%s' is not one of %s", n,
                      pl_backend_names());
}

const char *pl_backend_resolve(const char *name)
{
    const char *n = name ? name : "cpu";
    if (strcmp(n, "auto"))
        return n;
    for (size_t i = 0; i < N_BACKENDS; i++) {
        const struct backend_entry *b = &BACKENDS[i];
        if (b->create && (!b->accelerator || (b->n_devices && b->n_devices() > 0)))
            return b->name;
    }
    return "cpu";
}

int pl_backend_device_count(const char *name)
{
    const char *n = pl_backend_resolve(name);
    for (size_t i = 0; i < N_BACKENDS; i++)
        if (!strcmp(n, BACKENDS[i].name))
            return BACKENDS[i].accelerator ? (BACKENDS[i].n_devices ? BACKENDS[i].n_devices() : 0)
                                           : 1;
    return 0;
}

size_t pl_moe_scratch_elems(const struct pl_moe_args *a, int n)
{
    /* per token, the larger of two layouts:
     *  - the reference's (CPU): router probabilities [n_experts], then one expert's (or
     *    the shared expert's) gate and up;
     *  - a grouped one (CUDA, bf16 elements): fp32 router logits, the choices' ids,
     *    weights, rows (4 x top_k 32-bit values), per choice the gathered input and the
     *    expert's output [hidden] and its gate and up [inter], the shared expert's gate,
     *    up and output, its fp32 gate logit, and a tile list of at most top_k +
     *    n_experts int32 entries;
     * plus, once, three [n_experts] int32 arrays and room to align each of 20 sections. */
    size_t w = (size_t)(a->inter > a->sh_inter ? a->inter : a->sh_inter);
    size_t ref = (size_t)a->n_experts + 2 * w + 1;
    size_t k = (size_t)(a->top_k > 0 ? a->top_k : 1), hid = (size_t)(a->hidden > 0 ? a->hidden : 0);
    size_t grouped = 2 * (size_t)a->n_experts + 8 * k + k * (2 * hid + 2 * (size_t)a->inter) +
                     2 * (size_t)a->sh_inter + hid + 2 + 2 * (k + (size_t)a->n_experts);
    /* the once-only part is counted per token as well, so that n tokens need exactly n
     * times one token's scratch: the CPU reference strides its rows by
     * pl_moe_scratch_elems(a, 1), and the model sizes its scratch per token */
    size_t per = (ref > grouped ? ref : grouped) + 6 * (size_t)a->n_experts + 20 * 128;
    return per * (size_t)(n > 0 ? n : 1);
}
