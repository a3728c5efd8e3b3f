/*
 * model_runner.h -- runs an architecture's forward on a backend: the model runner.
 *
 * Owns: struct pl_model (a bound model: config, weights, backend, the scratch
 * the architecture asks for, the batch arrays in backend memory and their
 * host staging, the decode graphs, the logits chunks) and struct
 * pl_model_runner (a pl_model plus what it opened: config.json, the
 * safetensors, the backend, and the paged KV pool).
 * The runner's work, for every architecture: load-time checks of the weights
 * and of the backend (check_model), pinned staging and upload of each batch,
 * CUDA-graph capture and bucket choice for decode batches, the logits section
 * (final norm on the logits rows, LM head in chunks, soft-capping) and sampling
 * on the device. The architecture (model/arch.h) contributes only its layers'
 * math. The block manager (engine) decides which blocks a batch uses; the
 * runner only provides the pool.
 */
#ifndef PL_ENGINE_MODEL_RUNNER_H
#define PL_ENGINE_MODEL_RUNNER_H

#include "backend/backend.h"
#include "core/types.h"
#include "model/arch.h"
#include "model/config.h"
#include "model/weights.h"

#include <stdbool.h>
#include <stddef.h>

/* ---- a bound model (no KV pool, no files) ---------------------------------------------- */

struct pl_model;

/* Binds cfg (its architecture record), w and be, checking every weight the table needs
 * (present, shaped, a dtype the backend runs) and the backend's check_model; sizes scratch
 * for max_tokens tokens, max_seqs sequences and block tables of max_blocks_per_seq.
 * Borrowed: cfg, w, be (must outlive it). */
pl_status pl_model_new(const struct pl_model_config *cfg, const struct pl_weights *w,
                       struct pl_backend *be, int max_tokens, int max_seqs,
                       int max_blocks_per_seq, struct pl_model **out, struct pl_err *err);
void pl_model_free(struct pl_model *m);
/* Runs every step eagerly from now on: no CUDA graph is recorded or replayed (vLLM's
 * enforce_eager). */
void pl_model_set_eager(struct pl_model *m);

/* Makes m one tensor-parallel rank's model (model/shard.h): its forward sums over comm
 * after the row-parallel products, its cfg->vocab_size rows are [vocab_start, ...) of
 * vocab_full (token ids are checked against vocab_full, the embedding reads the rank's
 * rows, and pl_model_forward writes the rank's columns of [n_logits, vocab_full] host
 * logits); the hidden rows of pooling requests are written by rank 0 only. With the
 * backend's sample and copy_2d ops, pl_model_forward_sample gathers every rank's logits on
 * rank 0, which alone samples (and writes out); the other ranks only send. comm is
 * borrowed. */
pl_status pl_model_set_tp(struct pl_model *m, struct pl_comm *comm, int vocab_start,
                          int vocab_full, struct pl_err *err);

/* Runs batch b through the model. logits: host [b->n_logits, vocab]. When b->n_hidden > 0,
 * also writes the final hidden states (after the final norm, fp32) of b->hidden_rows to
 * b->hidden ([n_hidden, hidden_size]), whatever the architecture; pl_model_forward_sample
 * does the same. */
pl_status pl_model_forward(struct pl_model *m, const struct pl_batch *b,
                           const struct pl_kv_cache *kv, float *logits, struct pl_err *err);

/* Whether the backend has a sample op (pl_model_forward_sample works). */
bool pl_model_can_sample(const struct pl_model *m);

/*
 * Runs batch b like pl_model_forward, but samples on the backend instead of
 * returning logits: sampler row r (of n_rows) reads logits row row_src[r] of
 * the batch (row_src nondecreasing, each < b->n_logits; rows may share one)
 * and is sampled with rows[r] and uniforms[r] by the backend's sample op
 * (backend.h); out: host [n_rows]. Only the results cross to the host.
 * PL_STATUS_UNSUPPORTED when the backend has no sample op.
 */
pl_status pl_model_forward_sample(struct pl_model *m, const struct pl_batch *b,
                                  const struct pl_kv_cache *kv, const int32_t *row_src,
                                  int n_rows, const struct pl_sampler_row *rows,
                                  const double *uniforms, struct pl_sample_result *out,
                                  struct pl_err *err);

/* Allocates a KV cache of n_blocks blocks in backend memory (act dtype). */
pl_status pl_kv_cache_init(struct pl_kv_cache *kv, struct pl_backend *be,
                           const struct pl_model_config *cfg, int n_blocks, int block_size,
                           struct pl_err *err);
void pl_kv_cache_fini(struct pl_kv_cache *kv, struct pl_backend *be);

/* ---- the runner ---------------------------------------------------------------------- */

struct pl_model_runner_params {
    const char *model_dir;
    int n_threads;              /* CPU backend threads, 0 = one per core */
    int block_size;             /* tokens per KV block (default 16) */
    int num_kv_blocks;          /* 0 = from kv_cache_bytes */
    size_t kv_cache_bytes;      /* CPU KV budget when num_kv_blocks == 0 (default 256 MiB) */
    int max_num_batched_tokens; /* tokens per forward (default 2048) */
    int max_num_seqs;           /* sequences per forward (default 256) */
    int max_model_len;          /* 0 = the config's max_position_embeddings */
    const char *device;         /* "cpu" (default), "cuda", or "auto" (cuda when a GPU is present) */
    double gpu_memory_utilization; /* CUDA: share of the card's memory the process may use (0.9);
                                      the KV pool gets what weights and activations leave */
    const char *load_format;    /* "auto" / "safetensors" (the checkpoint), "dummy" (random
                                   weights made on the backend from config.json alone) */
    uint64_t seed;              /* seeds the dummy weights */
    bool convert_dtype;         /* false: weights as stored (vLLM's --dtype auto) */
    enum pl_dtype dtype;        /* when convert_dtype: every weight in this dtype,
                                   converted at load (vLLM's --dtype bfloat16, ...) */
    bool allow_long_max_model_len; /* max_model_len may exceed the model's length (vLLM's
                                      VLLM_ALLOW_LONG_MAX_MODEL_LEN); else it is refused */
    bool enforce_eager;         /* vLLM's: no CUDA graphs, every step eager */
    bool cpu_scalar_kernels;    /* backend params (backend.h) */
    bool cuda_cublas_only;
    int tensor_parallel_size;   /* ranks (GPUs 0..N-1 of the visible ones, or CPU backends
                                   of n_threads / N threads each) the model is sharded over
                                   (vLLM's --tensor-parallel-size; default 1); see
                                   engine/tensor_parallel.h */
    const char *quantization;   /* vLLM's --quantization (model/quant.h's
                                   pl_quant_config_apply_flag); NULL: the checkpoint's */
    enum pl_kv_cache_dtype kv_cache_dtype; /* vLLM's --kv-cache-dtype; FP8 is refused by a
                                   backend without an FP8 KV cache */
};

#define PL_TP_MAX_RANKS 64

/* What set the KV pool's size (the memory plan reports it). */
enum pl_kv_pool_limit {
    PL_KV_POOL_LIMIT_MEMORY = 0, /* the memory budget */
    PL_KV_POOL_LIMIT_SEQS,       /* max_num_seqs sequences of max_model_len tokens: the
                                    scheduler never holds more, so more blocks would idle */
    PL_KV_POOL_LIMIT_BLOCK_IDS   /* PL_KV_MAX_BLOCKS (block ids, global slot numbers) */
};

struct pl_kv_pool_plan {
    int n_blocks;              /* the pool's size; 0 when the budget holds no block */
    long long budget_blocks;   /* blocks the budget alone would hold */
    long long seq_blocks;      /* max_num_seqs x ceil(max_model_len / block_size); 0: no cap */
    enum pl_kv_pool_limit limit;
};

/*
 * Sizes a KV pool from a memory budget: the blocks of block_bytes that fit
 * budget_bytes, capped at what max_num_seqs sequences of max_model_len tokens
 * can ever hold at once (max_model_len <= 0: no such cap) and at
 * PL_KV_MAX_BLOCKS. Pure arithmetic (no backend): the runner's GPU and CPU
 * sizing both go through it.
 */
void pl_kv_pool_plan(double budget_bytes, size_t block_bytes, int block_size,
                     long long max_model_len, int max_num_seqs, struct pl_kv_pool_plan *out);

void pl_model_runner_params_default(struct pl_model_runner_params *p);

struct pl_model_runner;

pl_status pl_model_runner_new(const struct pl_model_runner_params *p,
                              struct pl_model_runner **out, struct pl_err *err);

/* Builds a runner over a model already in memory (tests, benchmarks): cfg is
 * copied; w and be are borrowed and must outlive the runner; p->model_dir and
 * p->n_threads are ignored. Sizing, checks and logging are those of _new. */
pl_status pl_model_runner_new_from_parts(const struct pl_model_runner_params *p,
                                         const struct pl_model_config *cfg,
                                         const struct pl_weights *w, struct pl_backend *be,
                                         struct pl_model_runner **out, struct pl_err *err);
void pl_model_runner_free(struct pl_model_runner *r);

/* ---- tensor parallelism's ranks (engine/tensor_parallel.c; not for other callers) ---- */

/* One rank's runner: full sharded by comm's rank and size (pl_shard_config), its backend
 * on accelerator `device` (CPU: n_threads threads), its share of the weights from st_files
 * (borrowed; unused with load_format dummy), its own KV pool sized as a whole runner's.
 * Call it on the thread that will run the rank (a CUDA device is per thread). */
struct pl_comm;
pl_status pl_model_runner_new_rank(const struct pl_model_runner_params *p,
                                   const struct pl_model_config *full,
                                   const struct pl_safetensors *st_files, struct pl_comm *comm,
                                   int device, int n_threads, struct pl_model_runner **out,
                                   struct pl_err *err);
/* Shrinks the rank's pool to n_blocks (<= its own) and max_model_len (<= its own): the
 * pool of every rank is sized on the smallest card. */
pl_status pl_model_runner_resize_pool(struct pl_model_runner *r, int n_blocks, int max_model_len,
                                      struct pl_err *err);
/* The coordinator of the runner's ranks (NULL: not tensor parallel); for tests. */
struct pl_tp *pl_model_runner_tp(struct pl_model_runner *r);
/* The number of ranks the model runs on (1: not sharded). */
int pl_model_runner_tensor_parallel_size(const struct pl_model_runner *r);

const struct pl_model_config *pl_model_runner_config(const struct pl_model_runner *r);
int pl_model_runner_num_blocks(const struct pl_model_runner *r);
int pl_model_runner_block_size(const struct pl_model_runner *r);
int pl_model_runner_max_model_len(const struct pl_model_runner *r);
int pl_model_runner_max_tokens(const struct pl_model_runner *r); /* max_num_batched_tokens */
int pl_model_runner_max_seqs(const struct pl_model_runner *r);
const struct pl_weights *pl_model_runner_weights(const struct pl_model_runner *r);

/* Runs one batch; logits: host [b->n_logits, vocab_size]. */
pl_status pl_model_runner_run(struct pl_model_runner *r, const struct pl_batch *b,
                              float *logits, struct pl_err *err);

/* Whether the backend samples (pl_model_runner_run_sample works). */
bool pl_model_runner_can_sample(const struct pl_model_runner *r);

/* Runs one batch and samples on the backend (pl_model_forward_sample):
 * sampler row i reads logits row row_src[i]; out: host [n_rows]. */
pl_status pl_model_runner_run_sample(struct pl_model_runner *r, const struct pl_batch *b,
                                     const int32_t *row_src, int n_rows,
                                     const struct pl_sampler_row *rows, const double *uniforms,
                                     struct pl_sample_result *out, struct pl_err *err);

/*
 * Copies whole KV blocks (every layer, K and V) src -> dst for each pair, in
 * order: the engine's copy-on-write before a step runs.
 */
struct pl_block_copy;
pl_status pl_model_runner_copy_blocks(struct pl_model_runner *r, const struct pl_block_copy *copies,
                                      int n_copies, struct pl_err *err);

#endif
