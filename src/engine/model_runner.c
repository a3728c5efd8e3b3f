/*
 * model_runner.c -- backend + weights + decoder + paged KV pool (see model_runner.h).
 *
 * Owns: struct pl_model_runner and the memory plan of a CPU run. The KV pool
 * is n_blocks blocks of block_size tokens for every layer; one block costs
 * 2 (K and V) * n_layers * block_size * kv_dim * sizeof(activation) bytes.
 * Invariants after a successful _new:
 *   - block_size is 8, 16 or 32;
 *   - max_model_len <= n_blocks * block_size (one sequence of the longest
 *     allowed length fits the pool) and the decoder's block tables hold
 *     ceil(max_model_len / block_size) blocks;
 *   - the runner owns what it opened (safetensors, weights, backend) and
 *     borrows what _new_from_parts was given.
 */
#include "engine/model_runner.h"
#ifdef PL_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

#include "engine/block_manager.h"
#include "model/safetensors.h"
#include "util/clock.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pl_model_runner {
    struct pl_model_config cfg;
    struct pl_safetensors *st;   /* owned; NULL when built from parts */
    struct pl_weights *w_owned;  /* owned; NULL when built from parts */
    const struct pl_weights *w;
    struct pl_backend *be_owned; /* owned; NULL when built from parts */
    struct pl_backend *be;
    struct pl_llama *model;
    struct pl_kv_cache kv;
    bool has_kv;
    int block_size, n_blocks, max_model_len, max_tokens, max_seqs;
};

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
    p->device = "cpu";
    p->gpu_memory_utilization = 0.9;
    p->load_format = "auto";
    p->seed = 0;
    p->convert_dtype = false;
    p->dtype = PL_DTYPE_F32;
    p->allow_long_max_model_len = false;
}

static double mib(double bytes) { return bytes / (1024.0 * 1024.0); }

/* The weights' dtype for the memory plan: the matrices' (q_proj of layer 0). */
static const char *weights_dtype_name(const struct pl_weights *w)
{
    return w->n_layers > 0 && w->layers ? pl_dtype_torch_name(w->layers[0].wq.dtype) : "?";
}

/* The longest sequence the model supports, as vLLM derives it: rope scaling
 * that stretches positions (linear, dynamic NTK, yarn) multiplies the trained
 * length by its factor; llama3 already states the extended length. */
static long long derived_max_len(const struct pl_model_config *c)
{
    double len = c->max_position_embeddings;
    switch (c->rope.type) {
    case PL_ROPE_LINEAR:
    case PL_ROPE_DYNAMIC:
        len *= c->rope.factor;
        break;
    case PL_ROPE_YARN:
        len = (double)(c->rope.original_max_position > 0 ? c->rope.original_max_position
                                                         : c->max_position_embeddings) *
              c->rope.factor;
        break;
    case PL_ROPE_DEFAULT:
    case PL_ROPE_LLAMA3:
        break;
    }
    return len > (double)INT32_MAX ? INT32_MAX : (long long)len;
}

void pl_kv_pool_plan(double budget_bytes, size_t block_bytes, int block_size,
                     long long max_model_len, int max_num_seqs, struct pl_kv_pool_plan *out)
{
    memset(out, 0, sizeof(*out));
    double nb = block_bytes > 0 && budget_bytes > 0 ? budget_bytes / (double)block_bytes : 0;
    out->budget_blocks = nb >= 9e18 ? (long long)9e18 : (long long)nb;
    long long n = out->budget_blocks;
    out->limit = PL_KV_POOL_LIMIT_MEMORY;
    if (max_model_len > 0 && max_num_seqs > 0 && block_size > 0) {
        out->seq_blocks = (long long)max_num_seqs * ((max_model_len + block_size - 1) / block_size);
        if (n > out->seq_blocks) {
            n = out->seq_blocks;
            out->limit = PL_KV_POOL_LIMIT_SEQS;
        }
    }
    if (n > PL_KV_MAX_BLOCKS) {
        n = PL_KV_MAX_BLOCKS;
        out->limit = PL_KV_POOL_LIMIT_BLOCK_IDS;
    }
    out->n_blocks = (int)n;
}

/* Refuses a max_model_len beyond what the model was trained for (vLLM's rule), unless
 * the caller opted in; then it only warns. */
static pl_status check_long_max_model_len(const struct pl_model_config *c,
                                          const struct pl_model_runner_params *p,
                                          struct pl_err *err)
{
    const long long derived = derived_max_len(c);
    if (p->max_model_len <= 0 || derived <= 0 || p->max_model_len <= derived)
        return PL_STATUS_OK;
    char source[160];
    if (derived != c->max_position_embeddings)
        snprintf(source, sizeof(source), "max_position_embeddings %d with rope scaling",
                 c->max_position_embeddings);
    else
        snprintf(source, sizeof(source), "max_position_embeddings in config.json");
    if (p->allow_long_max_model_len) {
        PL_WARN("max_model_len %d is above the model's length %lld (%s): positions past it "
                "were never trained, so the output may be wrong (allowed by "
                "--allow-long-max-model-len / VLLM_ALLOW_LONG_MAX_MODEL_LEN)",
                p->max_model_len, derived, source);
        return PL_STATUS_OK;
    }
    return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                      "max_model_len %d is above the model's length %lld (%s); positions past "
                      "it were never trained, so the output may be wrong. To use it anyway, "
                      "pass --allow-long-max-model-len or set VLLM_ALLOW_LONG_MAX_MODEL_LEN=1",
                      p->max_model_len, derived, source);
}

/* The memory plan's note on a capped pool ("" when the budget alone set it). */
static void cap_note(const struct pl_kv_pool_plan *pl, int max_num_seqs, long long len,
                     char *buf, size_t n)
{
    if (pl->limit == PL_KV_POOL_LIMIT_SEQS)
        snprintf(buf, n, " (capped: the budget holds %lld blocks, but %d sequences x %lld "
                 "tokens use at most %lld)", pl->budget_blocks, max_num_seqs, len,
                 pl->seq_blocks);
    else if (pl->limit == PL_KV_POOL_LIMIT_BLOCK_IDS)
        snprintf(buf, n, " (capped at the block-id limit %d; the budget holds %lld blocks)",
                 PL_KV_MAX_BLOCKS, pl->budget_blocks);
    else
        buf[0] = '\0';
}

/* Sizes the pool, checks max_model_len, builds the decoder and the KV cache. */
static pl_status runner_setup(struct pl_model_runner *r, const struct pl_model_runner_params *p,
                              struct pl_err *err)
{
    const struct pl_model_config *c = &r->cfg;
    if (p->block_size != 8 && p->block_size != 16 && p->block_size != 32)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "block size %d is not supported (use 8, 16 or 32)", p->block_size);
    if (p->num_kv_blocks < 0 || p->max_num_batched_tokens < 0 || p->max_num_seqs < 0 ||
        p->max_model_len < 0)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "num_kv_blocks, max_num_batched_tokens, max_num_seqs and max_model_len "
                          "must not be negative");
    if (p->num_kv_blocks > PL_KV_MAX_BLOCKS)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "num_kv_blocks %d is above the most a pool may have (%d)",
                          p->num_kv_blocks, PL_KV_MAX_BLOCKS);
    pl_status st = check_long_max_model_len(c, p, err);
    if (st != PL_STATUS_OK)
        return st;
    r->block_size = p->block_size;
    r->max_tokens = p->max_num_batched_tokens > 0 ? p->max_num_batched_tokens : 2048;
    r->max_seqs = p->max_num_seqs > 0 ? p->max_num_seqs : 256;

    const size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim;
    const size_t elem = pl_dtype_size(r->be->ops->act_dtype);
    const size_t block_bytes = 2 * (size_t)c->n_layers * (size_t)r->block_size * kv_dim * elem;
    /* the longest sequence asked for (or the model's): what one sequence may need */
    long long want_len = p->max_model_len > 0 ? p->max_model_len : derived_max_len(c);
    if (want_len <= 0)
        want_len = c->max_position_embeddings;
    /* On a GPU with no explicit pool size, the KV pool gets the memory that the weights
     * and the decoder's activations (allocated by pl_llama_new: the activation peak)
     * leave under gpu_memory_utilization, so the decoder is built first. */
    const bool gpu_sized = p->num_kv_blocks <= 0 && !strcmp(r->be->ops->name, "cuda");
    struct pl_kv_pool_plan plan = {0};
    if (gpu_sized) {
        int mbps = (int)((want_len + r->block_size - 1) / r->block_size);
        st = pl_llama_new(&r->cfg, r->w, r->be, r->max_tokens, r->max_seqs, mbps, &r->model,
                          err);
        if (st != PL_STATUS_OK)
            return st;
        double util = p->gpu_memory_utilization > 0 ? p->gpu_memory_utilization : 0.9;
        if (util > 1.0)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "gpu_memory_utilization %.2f is above 1", util);
        size_t free_b = 0, total_b = 0;
#ifdef PL_HAVE_CUDA
        st = pl_backend_cuda_mem_info(r->be, &free_b, &total_b);
        if (st != PL_STATUS_OK)
            return pl_err_set(err, st, "could not read the GPU's free memory");
#endif
        double budget = (double)free_b - (1.0 - util) * (double)total_b;
        pl_kv_pool_plan(budget, block_bytes, r->block_size, want_len, r->max_seqs, &plan);
        if (plan.n_blocks < 1)
            return pl_err_set(err, PL_STATUS_NO_MEMORY,
                              "gpu_memory_utilization %.2f leaves no memory for the KV cache "
                              "(card %.1f GiB, %.1f GiB free after weights %.1f GiB and "
                              "activations): raise it or use a smaller model",
                              util, total_b / 1073741824.0, free_b / 1073741824.0,
                              r->w->n_bytes / 1073741824.0);
    } else if (p->num_kv_blocks > 0) {
        plan.n_blocks = plan.budget_blocks = p->num_kv_blocks;
    } else {
        pl_kv_pool_plan((double)p->kv_cache_bytes, block_bytes, r->block_size, want_len,
                        r->max_seqs, &plan);
        if (plan.n_blocks < 1)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "a KV cache budget of %zu bytes holds no block (one block of %d "
                              "tokens takes %zu bytes)",
                              p->kv_cache_bytes, r->block_size, block_bytes);
    }
    r->n_blocks = plan.n_blocks;
    const long long capacity = (long long)r->n_blocks * r->block_size;
    if (p->max_model_len > 0) {
        if (p->max_model_len > capacity)
            return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                              "max_model_len %d does not fit the KV cache: %d blocks of %d tokens "
                              "hold %lld tokens, so the largest max_model_len that fits is %lld "
                              "(raise --num-kv-blocks, the KV budget or "
                              "--gpu-memory-utilization, or lower --max-model-len)",
                              p->max_model_len, r->n_blocks, r->block_size, capacity, capacity);
        r->max_model_len = p->max_model_len;
    } else {
        long long len = derived_max_len(c);
        if (len <= 0)
            len = capacity;
        if (len > capacity) {
            PL_WARN("max_model_len: the model allows %lld tokens but the KV cache holds %lld; "
                    "using %lld (set --max-model-len or --num-kv-blocks to choose)",
                    len, capacity, capacity);
            len = capacity;
        }
        r->max_model_len = (int)len;
    }
    if (!gpu_sized) {
        int max_blocks_per_seq = (r->max_model_len + r->block_size - 1) / r->block_size;
        st = pl_llama_new(&r->cfg, r->w, r->be, r->max_tokens, r->max_seqs, max_blocks_per_seq,
                          &r->model, err);
        if (st != PL_STATUS_OK)
            return st;
    }
    st = pl_kv_cache_init(&r->kv, r->be, &r->cfg, r->n_blocks, r->block_size, err);
    if (st != PL_STATUS_OK)
        return st;
    r->has_kv = true;

    double kv_bytes = (double)block_bytes * r->n_blocks;
    char note[200];
    cap_note(&plan, r->max_seqs, want_len, note, sizeof(note));
    PL_INFO("memory plan (%s backend): weights %.1f MiB (%s), KV cache %.1f MiB = %d blocks x "
            "%d tokens = %lld tokens (%.1f KiB/token)%s, max_model_len %d, max concurrency at "
            "max_model_len %.2f",
            r->be->ops->name, mib((double)r->w->n_bytes), weights_dtype_name(r->w),
            mib(kv_bytes), r->n_blocks, r->block_size, capacity,
            (double)block_bytes / r->block_size / 1024.0, note, r->max_model_len,
            (double)capacity / r->max_model_len);
    return PL_STATUS_OK;
}

/* The backend p->device names: cpu, cuda, or auto (cuda when this build has it and a GPU
 * is present). */
static pl_status make_backend(const struct pl_model_runner_params *p, struct pl_backend **out,
                              struct pl_err *err)
{
    const char *dev = p->device ? p->device : "cpu";
    bool want_cuda = !strcmp(dev, "cuda");
    if (!want_cuda && strcmp(dev, "cpu") && strcmp(dev, "auto"))
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                          "device: '%s' is not one of auto, cpu, cuda", dev);
#ifdef PL_HAVE_CUDA
    if (want_cuda || (!strcmp(dev, "auto") && pl_cuda_device_count() > 0))
        return pl_backend_cuda_new(0, out, err);
#else
    if (want_cuda)
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "device: this build has no CUDA backend (built without nvcc)");
#endif
    return pl_backend_cpu_new(p->n_threads, out, err);
}

pl_status pl_model_runner_new(const struct pl_model_runner_params *p,
                              struct pl_model_runner **out, struct pl_err *err)
{
    if (!p->model_dir)
        return pl_err_set(err, PL_STATUS_INVALID_ARGUMENT, "model runner: no model directory");
    struct pl_model_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model runner: out of memory");
    pl_status st = pl_model_config_load(p->model_dir, &r->cfg, err);
    const char *fmt = p->load_format ? p->load_format : "auto";
    const bool dummy = !strcmp(fmt, "dummy");
    if (st == PL_STATUS_OK && !dummy && strcmp(fmt, "auto") && strcmp(fmt, "safetensors"))
        st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                        "load_format: '%s' is not one of auto, safetensors, dummy", fmt);
    if (st == PL_STATUS_OK && !dummy)
        st = pl_safetensors_open_dir(p->model_dir, &r->st, err);
    if (st == PL_STATUS_OK)
        st = make_backend(p, &r->be_owned, err);
    if (st == PL_STATUS_OK) {
        r->be = r->be_owned;
        double t0 = pl_clock_seconds();
        const int dtype = p->convert_dtype ? (int)p->dtype : PL_WEIGHTS_DTYPE_AS_STORED;
        st = dummy ? pl_weights_dummy_as(&r->cfg, r->be, p->seed, dtype, &r->w_owned, err)
                   : pl_weights_load_as(&r->cfg, r->st, r->be, dtype, &r->w_owned, err);
        if (st == PL_STATUS_OK)
            PL_INFO("weights: %.2f GiB %s on the %s backend in %.2f s (%s%s%s)",
                    r->w_owned->n_bytes / 1073741824.0, dummy ? "generated (dummy)" : "loaded",
                    r->be->ops->name, pl_clock_seconds() - t0, weights_dtype_name(r->w_owned),
                    r->w_owned->n_converted ? ", converted from the checkpoint's " : "",
                    r->w_owned->n_converted ? pl_dtype_torch_name(r->cfg.dtype) : "");
    }
    if (st == PL_STATUS_OK) {
        r->w = r->w_owned;
        st = runner_setup(r, p, err);
    }
    if (st != PL_STATUS_OK) {
        pl_model_runner_free(r);
        return st;
    }
    *out = r;
    return PL_STATUS_OK;
}

pl_status pl_model_runner_new_from_parts(const struct pl_model_runner_params *p,
                                         const struct pl_model_config *cfg,
                                         const struct pl_weights *w, struct pl_backend *be,
                                         struct pl_model_runner **out, struct pl_err *err)
{
    struct pl_model_runner *r = calloc(1, sizeof(*r));
    if (!r)
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "model runner: out of memory");
    r->cfg = *cfg;
    r->w = w;
    r->be = be;
    pl_status st = runner_setup(r, p, err);
    if (st != PL_STATUS_OK) {
        pl_model_runner_free(r);
        return st;
    }
    *out = r;
    return PL_STATUS_OK;
}

void pl_model_runner_free(struct pl_model_runner *r)
{
    if (!r)
        return;
    if (r->has_kv)
        pl_kv_cache_fini(&r->kv, r->be);
    pl_llama_free(r->model);
    pl_weights_free(r->w_owned); /* before the backend and the mmaps it borrows from */
    pl_backend_free(r->be_owned);
    pl_safetensors_free(r->st);
    free(r);
}

const struct pl_model_config *pl_model_runner_config(const struct pl_model_runner *r)
{
    return &r->cfg;
}
int pl_model_runner_num_blocks(const struct pl_model_runner *r) { return r->n_blocks; }
int pl_model_runner_block_size(const struct pl_model_runner *r) { return r->block_size; }
int pl_model_runner_max_model_len(const struct pl_model_runner *r) { return r->max_model_len; }
int pl_model_runner_max_tokens(const struct pl_model_runner *r) { return r->max_tokens; }
int pl_model_runner_max_seqs(const struct pl_model_runner *r) { return r->max_seqs; }
const struct pl_weights *pl_model_runner_weights(const struct pl_model_runner *r) { return r->w; }

pl_status pl_model_runner_run(struct pl_model_runner *r, const struct pl_batch *b, float *logits,
                              struct pl_err *err)
{
    return pl_llama_forward(r->model, b, &r->kv, logits, err);
}
bool pl_model_runner_can_sample(const struct pl_model_runner *r)
{
    return pl_llama_can_sample(r->model);
}

pl_status pl_model_runner_run_sample(struct pl_model_runner *r, const struct pl_batch *b,
                                     const int32_t *row_src, int n_rows,
                                     const struct pl_sampler_row *rows, const double *uniforms,
                                     struct pl_sample_result *out, struct pl_err *err)
{
    return pl_llama_forward_sample(r->model, b, &r->kv, row_src, n_rows, rows, uniforms, out,
                                   err);
}
/*
 * Copy-on-write for the engine: whole blocks, every layer, K and V. The pairs
 * go to the backend in groups of COPY_GROUP so no allocation is needed.
 */
#define COPY_GROUP 64
pl_status pl_model_runner_copy_blocks(struct pl_model_runner *r, const struct pl_block_copy *copies,
                                      int n_copies, struct pl_err *err)
{
    if (!r->has_kv)
        return pl_err_set(err, PL_STATUS_INTERNAL, "copy_blocks: the runner has no KV cache");
    size_t block_bytes = (size_t)r->block_size * (size_t)r->kv.kv_dim *
                         pl_dtype_size(r->be->ops->act_dtype);
    int32_t pairs[2 * COPY_GROUP];
    for (int i0 = 0; i0 < n_copies; i0 += COPY_GROUP) {
        int n = n_copies - i0 < COPY_GROUP ? n_copies - i0 : COPY_GROUP;
        for (int i = 0; i < n; i++) {
            const struct pl_block_copy *c = &copies[i0 + i];
            if (c->src < 0 || c->src >= r->n_blocks || c->dst < 0 || c->dst >= r->n_blocks)
                return pl_err_set(err, PL_STATUS_INTERNAL, "copy_blocks: pair %d -> %d outside "
                                  "the pool of %d blocks", c->src, c->dst, r->n_blocks);
            pairs[2 * i] = c->src;
            pairs[2 * i + 1] = c->dst;
        }
        for (int l = 0; l < r->kv.n_layers; l++)
            r->be->ops->copy_blocks(r->be, r->kv.k[l], r->kv.v[l], pairs, n, block_bytes);
    }
    return PL_STATUS_OK;
}
