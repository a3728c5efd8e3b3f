/*
 * kernels.h -- the launch wrappers of the CUDA backend's kernels (C linkage).
 *
 * Owns: the contract between the host side (the .c files of src/backend/cuda, C11) and
 * the kernels (the .cu files here). Every wrapper enqueues on `stream` and returns
 * the launch's cudaError_t as an int (0 = success); none synchronises, none
 * allocates. Pointers are device memory. "act" buffers are bf16; weights are
 * typed by a pl_dtype code (F32 = 0, F16 = 1, BF16 = 2, as util/dtype.h); FP8 buffers hold
 * e4m3fn bytes.
 * Shapes follow backend.h exactly.
 */
#ifndef PL_BACKEND_CUDA_KERNELS_H
#define PL_BACKEND_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The CUDA stream type without including cuda_runtime.h in C headers. */
typedef struct CUstream_st *pl_cuda_stream;

/* Launches the decode path's kernels with programmatic dependent launch (pdl.cuh) when on:
 * each may be scheduled while the one before it drains. Process-wide; set by the backend
 * at creation (compute capability 9.0 and up, unless PAGELLM_CUDA_PDL=0). */
void pl_cuk_set_pdl(int on);

int pl_cuk_embed(pl_cuda_stream s, void *out, const void *table, int table_dtype, int64_t dim,
                 const int32_t *ids, int n);

/* out = rmsnorm(x (+ residual, stored back into residual)) * w. out may alias x. */
int pl_cuk_rmsnorm(pl_cuda_stream s, void *out, void *residual, const void *x, const void *w,
                   int w_dtype, int n_rows, int dim, float eps);

/* rope: see struct pl_rope; inv_freq device fp32 [rot_dim/2]. */
struct pl_cuk_rope {
    int rot_dim;
    const float *inv_freq;
    float attn_scale;
    float pos_scale;
    int dyn_original_max;
    float dyn_factor;
    float dyn_theta;
    int long_original_max;      /* longrope: > 0 picks long_inv_freq for longer sequences */
    const float *long_inv_freq; /* device fp32 [rot_dim/2] */
};
int pl_cuk_rope(pl_cuda_stream s, void *q, void *k, const int32_t *positions,
                const int32_t *seq_lens, int n, int n_heads, int n_kv_heads, int head_dim,
                struct pl_cuk_rope r);

/* Gemma's sandwich norms between two blocks in one launch: h = rmsnorm(h) * w_post, residual
 * += h, out = rmsnorm(residual) * w_pre (w_post and w_pre of one dtype), the values of two
 * pl_cuk_rmsnorm calls. bf16, dim a multiple of 8, 16-byte aligned (cudaErrorInvalidValue
 * otherwise). */
int pl_cuk_norm_add_norm(pl_cuda_stream s, void *out, void *residual, void *h, const void *w_post,
                         const void *w_pre, int w_dtype, int n_rows, int dim, float eps);

/* One launch for a layer's q/k per-head RMSNorm (q_norm, k_norm: both NULL for none; dtype
 * norm_dtype), rope and the store of k and v rows [n, n_kv_heads * head_dim] into the
 * caches at slots (skip < 0): the same values as pl_cuk_rmsnorm (twice), pl_cuk_rope and
 * pl_cuk_copy_rows (twice). bf16; head_dim a multiple of 8 up to 256, 16-byte aligned
 * buffers (cudaErrorInvalidValue otherwise: use the separate kernels). */
int pl_cuk_qk_rope_store(pl_cuda_stream s, void *q, void *k, const void *v, const void *q_norm,
                         const void *k_norm, int norm_dtype, float eps, const int32_t *positions,
                         const int32_t *seq_lens, int n, int n_heads, int n_kv_heads,
                         int head_dim, struct pl_cuk_rope r, void *k_cache, void *v_cache,
                         const int32_t *slots);

int pl_cuk_silu_mul(pl_cuda_stream s, void *out, const void *gate, const void *up, int64_t n_elems);

/* out = gelu_tanh(gate) * up (PyTorch's gelu approximate="tanh"), bf16. */
int pl_cuk_gelu_tanh_mul(pl_cuda_stream s, void *out, const void *gate, const void *up,
                         int64_t n_elems);

/* x (bf16) *= scale. */
int pl_cuk_scale(pl_cuda_stream s, void *x, int64_t n_elems, float scale);

/* x (fp32) = cap * tanh(x / cap). */
int pl_cuk_softcap(pl_cuda_stream s, float *x, int64_t n_elems, float cap);

/* The float32 mode's versions of the activation kernels above (fp32 activations, the same
 * arithmetic; rmsnorm's residual sum is not rounded). */
int pl_cuk_embed_f32(pl_cuda_stream s, void *out, const void *table, int table_dtype,
                     int64_t dim, const int32_t *ids, int n);
int pl_cuk_rmsnorm_f32(pl_cuda_stream s, void *out, void *residual, const void *x, const void *w,
                       int w_dtype, int n_rows, int dim, float eps);
int pl_cuk_rope_f32(pl_cuda_stream s, void *q, void *k, const int32_t *positions,
                    const int32_t *seq_lens, int n, int n_heads, int n_kv_heads, int head_dim,
                    struct pl_cuk_rope r);
int pl_cuk_silu_mul_f32(pl_cuda_stream s, void *out, const void *gate, const void *up,
                        int64_t n_elems);
int pl_cuk_gelu_tanh_mul_f32(pl_cuda_stream s, void *out, const void *gate, const void *up,
                             int64_t n_elems);
int pl_cuk_scale_f32(pl_cuda_stream s, void *x, int64_t n_elems, float scale);
/* Paged attention over an fp32 KV cache (attention_f32.cu; struct pl_cuk_attn below, every
 * rule of backend.h): one block per (query row, head), the context in tiles. */
struct pl_cuk_attn;
int pl_cuk_attention_f32(pl_cuda_stream s, const struct pl_cuk_attn *a);

/* Row copies of row_bytes bytes: dst[dst_idx[i] or i] = src[src_idx[i] or i]; a
 * negative index skips the row. Serves store_kv (twice) and get_rows. */
int pl_cuk_copy_rows(pl_cuda_stream s, void *dst, const int32_t *dst_idx, const void *src,
                     const int32_t *src_idx, int n, size_t row_bytes);

/* dst[i] = lo + (hi - lo) * uniform(seed, i) in dtype (0 f32, 1 f16, 2 bf16); see
 * pl_fill_uniform in backend.h. */
int pl_cuk_fill(pl_cuda_stream s, void *dst, int dtype, uint64_t n, uint64_t seed, float lo,
                float hi);

int pl_cuk_copy_blocks(pl_cuda_stream s, void *k_cache, void *v_cache, const int32_t *src_dst,
                       int n_pairs, size_t block_bytes);

/* Conversions for the fp16-weight matmul path. */
int pl_cuk_bf16_to_f16(pl_cuda_stream s, void *out, const void *in, int64_t n_elems);
/* out (bf16, row stride ld_out) = in (fp32 [n, cols]) + bias (dtype, [cols] or NULL). */
int pl_cuk_f32_to_bf16_bias(pl_cuda_stream s, void *out, int ld_out, const float *in,
                            const void *bias, int bias_dtype, int n, int cols);
/* out[i, :cols] (+)= bias for a bf16 [n, ld] matrix (the epilogue-less fallback). */
int pl_cuk_add_bias(pl_cuda_stream s, void *out, int ld_out, const void *bias, int bias_dtype,
                    int n, int cols);

/* FP8 (fp8.cu; the rules: backend.h's pl_f8w_layout and set_kv_dtype).
 * quant_rows: row t of x (bf16 [n, K], K % 8 == 0; x8 16-byte aligned) -> x8[t] (e4m3
 * [n, K]) and sx[t], with the static scale *static_scale (device memory, read by the kernel)
 * when static_scale is not NULL and it is > 0, else the row's dynamic scale
 * max(absmax / 448, 1 / (448 * 512)).
 * scale_out: out (bf16 [n, cols], row stride ld_out) = out * sx[t] * sw[c] (+ bias, of
 * bias_dtype), in place: the epilogue of an FP8 product made with unit scales.
 * store_kv_f8: rows [n, kv_dim] of k and v (bf16) -> the e4m3 caches at slots[i] (skip < 0)
 * as e4m3(x * inv), inv = 1 / k_scale or 1 / v_scale; kv_dim % 8 == 0. */
int pl_cuk_f8_quant_rows(pl_cuda_stream s, uint8_t *x8, float *sx, const void *x, int n,
                         int64_t K, const float *static_scale);
int pl_cuk_f8_scale_out(pl_cuda_stream s, void *out, int ld_out, const float *sx,
                        const float *sw, const void *bias, int bias_dtype, int n, int cols);
int pl_cuk_store_kv_f8(pl_cuda_stream s, void *k_cache, void *v_cache, const void *k,
                       const void *v, const int32_t *slots, int n, int kv_dim, float inv_k,
                       float inv_v);

/* The moe op's device side (moe.cu; host side cuda_moe.c). route: logits (fp32 [n,
 * n_experts], overwritten with the probabilities) -> ids / w ([n, top_k]: the choices in
 * order, weights renormalised when norm_topk_prob) and counts[n_experts] (zeroed first).
 * group: offsets = exclusive scan of counts; entry i = (token i / top_k, choice i % top_k)
 * gets row inv[i] of its expert's group, src[row] = its token (cursor: scratch [n_experts]).
 * combine: out[t] = sum_i w[t, i] * y[inv[t, i]] (+ sigmoid(shared_gate_logit[t]) *
 * shared_out[t] when shared_out != NULL), bf16 rows of `hidden`; top_k <= 64. */
int pl_cuk_moe_route(pl_cuda_stream s, float *logits, int n, int n_experts, int top_k,
                     int norm_topk_prob, int32_t *ids, float *w, int32_t *counts);
int pl_cuk_moe_group(pl_cuda_stream s, const int32_t *ids, const int32_t *counts, int n_entries,
                     int n_experts, int top_k, int32_t *offsets, int32_t *cursor, int32_t *src,
                     int32_t *inv);
int pl_cuk_moe_combine(pl_cuda_stream s, void *out, const void *y, const float *w,
                       const int32_t *inv, int n, int top_k, int hidden,
                       const float *shared_gate_logit, const void *shared_out);
/* combine with fp32 rows (the float32 mode). */
int pl_cuk_moe_combine_f32(pl_cuda_stream s, void *out, const void *y, const float *w,
                           const int32_t *inv, int n, int top_k, int hidden,
                           const float *shared_gate_logit, const void *shared_out);

/* The grouped expert products (moe_gemm.cu). Entries grouped by expert (offsets /
 * counts per expert, as the group step leaves them) are cut into tiles of tile_rows
 * rows: tile_rows = pl_cuk_moe_tile_rows(entries, experts) (16 or 64), and a launch
 * covers max_tiles = pl_cuk_moe_max_tiles(...) tile slots, both known on the host
 * without the counts. moe_tiles: offsets / cursor (the group step's scan) and the
 * tile list. moe_gemm: out[row, :n] for every grouped row: gated, act(a W0e^T) *
 * (a W1e^T) with act gelu-tanh or silu; else a W0e^T; a's row is a_rows[row] when
 * a_rows is set, else row; bf16 everywhere, k and n multiples of 8, w0 / w1 the
 * experts' [n, k] weights (device pointers, by expert). */
#define PL_CUK_MOE_MAX_EXPERTS 1024
struct pl_cuk_moe_gemm {
    const void *a;          /* bf16 [.., k] */
    const int32_t *a_rows;  /* NULL: a is in grouped order */
    const int32_t *offsets; /* [n_experts] */
    const int32_t *counts;  /* [n_experts] */
    const int32_t *tiles;   /* [max_tiles] */
    void *out;              /* bf16 [entries, n] in grouped order */
    int k, n;
    const void *w0[PL_CUK_MOE_MAX_EXPERTS];
    const void *w1[PL_CUK_MOE_MAX_EXPERTS];
};
int pl_cuk_moe_tile_rows(int n_entries, int n_experts);
int pl_cuk_moe_max_tiles(int n_entries, int n_experts, int tile_rows);
int pl_cuk_moe_tiles(pl_cuda_stream s, const int32_t *counts, int n_experts, int tile_rows,
                     int max_tiles, int32_t *offsets, int32_t *cursor, int32_t *tiles);
int pl_cuk_moe_gemm(pl_cuda_stream s, const struct pl_cuk_moe_gemm *p, int tile_rows,
                    int max_tiles, int gated, int gelu);
/* the place half of moe_group (offsets / cursor already set, e.g. by moe_tiles) */
int pl_cuk_moe_place(pl_cuda_stream s, const int32_t *ids, int n_entries, int top_k,
                     int32_t *cursor, int32_t *src, int32_t *inv);

/* Paged attention, per backend.h. */
struct pl_cuk_attn {
    void *out;
    const void *q;
    const void *k_cache;
    const void *v_cache;
    const int32_t *cu_seqlens_q;
    const int32_t *context_lens;
    const int32_t *block_tables;
    int n_seqs;
    int max_blocks_per_seq;
    int max_q_len;
    int max_context_len;
    int block_size;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    float scale;
    int window;
    float softcap; /* scores = softcap * tanh(scores / softcap) after the scale; 0 = none */
    /* the caches hold e4m3 bytes (set_kv_dtype): K = e4m3(byte) * k_scale, V likewise;
     * 0: bf16 caches (the float32 mode: fp32 ones) and the scales are not read */
    int kv_fp8;
    float k_scale, v_scale;
};

/* Whether the attention kernels handle this shape (head_dim a multiple of 8 in
 * [8, 256], n_heads / n_kv_heads <= 16). */
int pl_cuk_attention_supported(int head_dim, int group);

/* Decode rows (q_len == 1): one CTA per (kv head, sequence, split). When
 * n_splits > 1 the partial results go to `partial` (fp32, at least
 * pl_cuk_attention_partial_floats(...) floats) and a reduce kernel finishes. */
size_t pl_cuk_attention_partial_floats(int n_seqs, int n_heads, int head_dim, int n_splits);
int pl_cuk_attention_decode(pl_cuda_stream s, const struct pl_cuk_attn *a, int n_splits,
                            float *partial);

/* Rows of sequences with q_len > 1 (prefill, chunked prefill). */
int pl_cuk_attention_prefill(pl_cuda_stream s, const struct pl_cuk_attn *a);

/* Test and benchmark knob: the prefill kernel every later launch uses.
 * 0 = automatic (tensor cores for head_dim 64 / 128, CUDA cores otherwise),
 * 1 = CUDA cores, 2 = tensor cores with 64-row query tiles (4 warps x 16 rows),
 * 3 = tensor cores with 128-row tiles (8 warps x 16 rows), 4 = tensor cores with
 * 128-row tiles (4 warps x 32 rows). 2..4 fall back to CUDA cores for other
 * head dims. Not thread-safe; process-wide. */
void pl_cuk_attention_prefill_force(int variant);

/* One-time set-up (raises dynamic shared-memory limits); call at backend creation. */
int pl_cuk_attention_init(void);

#ifdef __cplusplus
}
#endif

#endif
