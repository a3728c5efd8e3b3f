/*
 * llama.h -- the decoder for Llama / Mistral / Qwen2 / Qwen3, on backend ops.
 *
 * Owns: struct pl_llama, which binds a config, its weights, the backend and
 * the scratch activations sized for at most max_tokens tokens per forward.
 * It owns no KV cache: the caller passes per-layer K/V cache pointers
 * (backend memory, layout in backend.h) so the block manager can own them.
 * forward() runs one flat batch (any mix of prefill chunks and decodes)
 * and writes fp32 logits for the batch's logits_rows to host memory;
 * forward_sample() instead samples those rows on the backend and returns
 * only the sampled tokens (and requested logprobs).
 * No allocation happens inside forward().
 */
#ifndef PL_MODEL_LLAMA_H
#define PL_MODEL_LLAMA_H

#include "backend/backend.h"
#include "engine/batch.h"
#include "model/config.h"
#include "model/weights.h"

struct pl_llama;

struct pl_kv_cache {
    int n_layers;
    int n_blocks;
    int block_size;
    int kv_dim;        /* n_kv_heads * head_dim */
    void **k;          /* [n_layers] backend pointers, each [n_blocks, block_size, kv_dim] */
    void **v;          /* [n_layers] */
};

/* max_tokens: the most tokens one forward may carry; max_seqs: the most sequences;
 * max_blocks_per_seq: block-table width. Borrowed: cfg, w, be (must outlive it). */
pl_status pl_llama_new(const struct pl_model_config *cfg, const struct pl_weights *w,
                       struct pl_backend *be, int max_tokens, int max_seqs,
                       int max_blocks_per_seq, struct pl_llama **out, struct pl_err *err);
void pl_llama_free(struct pl_llama *m);

/* Runs batch b through the model. logits: host [b->n_logits, vocab]. When b->n_hidden > 0,
 * also writes the final hidden states (after the final norm, fp32) of b->hidden_rows to
 * b->hidden ([n_hidden, hidden_size]); pl_llama_forward_sample does the same. */
pl_status pl_llama_forward(struct pl_llama *m, const struct pl_batch *b,
                           const struct pl_kv_cache *kv, float *logits, struct pl_err *err);

/* Whether the backend has a sample op (pl_llama_forward_sample works). */
bool pl_llama_can_sample(const struct pl_llama *m);

/*
 * Runs batch b like pl_llama_forward, but samples on the backend instead of
 * returning logits: sampler row r (of n_rows) reads logits row row_src[r] of
 * the batch (row_src nondecreasing, each < b->n_logits; rows may share one)
 * and is sampled with rows[r] and uniforms[r] by the backend's sample op
 * (backend.h); out: host [n_rows]. Only the results cross to the host.
 * PL_STATUS_UNSUPPORTED when the backend has no sample op.
 */
pl_status pl_llama_forward_sample(struct pl_llama *m, const struct pl_batch *b,
                                  const struct pl_kv_cache *kv, const int32_t *row_src,
                                  int n_rows, const struct pl_sampler_row *rows,
                                  const double *uniforms, struct pl_sample_result *out,
                                  struct pl_err *err);

/* Allocates a KV cache of n_blocks blocks in backend memory (act dtype). */
pl_status pl_kv_cache_init(struct pl_kv_cache *kv, struct pl_backend *be,
                           const struct pl_model_config *cfg, int n_blocks, int block_size,
                           struct pl_err *err);
void pl_kv_cache_fini(struct pl_kv_cache *kv, struct pl_backend *be);

#endif
