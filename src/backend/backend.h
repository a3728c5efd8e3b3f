/*
 * backend.h -- the op table every compute backend fills.
 *
 * Owns: struct pl_backend_ops (versioned), struct pl_weight (a weight matrix
 * living in backend memory) and struct pl_attn_meta (the flat, paged attention
 * metadata of one batch), the device layer (selection by name, memory info, the
 * error text, the load-time check of a model's shapes) and the ops' registry
 * pl_backend_new (backend.c). The model code (src/model/) and the model runner
 * (src/engine/model_runner.c) are written only against these, so a new backend
 * adds kernels and a line in backend.c, and nothing else names it.
 *
 * Memory: every pointer an op takes is backend memory (from alloc/map_weight,
 * or offsets into such buffers). On the CPU backend that is host memory; on
 * CUDA it is device memory. Activations have the backend's act_dtype (F32 on CPU,
 * BF16 on CUDA), the KV cache too unless set_kv_dtype made it FP8; weights have their
 * own dtype.
 * Ops are enqueued in order; results are visible to the host after sync().
 *
 * Shapes are row-major; "[n, d]" means n rows of d contiguous elements.
 *
 * KV cache layout (one buffer for K and one for V per layer, elements of the kv dtype):
 *   [n_blocks, block_size, n_kv_heads, head_dim]; token slot s lives at row s,
 *   slot = block_id * block_size + offset_in_block. slot_mapping[t] < 0 means
 *   "do not store" (padding).
 *
 * Attention over a batch (one op for prefill, chunked prefill and decode):
 *   sequence s owns query rows [cu_seqlens_q[s], cu_seqlens_q[s+1]) of q/out;
 *   its context (cached + new tokens) has context_lens[s] tokens, read through
 *   block_tables[s * max_blocks_per_seq + i]. Query row j of sequence s
 *   (j counted from the sequence's first query row) sits at position
 *   p = context_lens[s] - q_len_s + j and attends to context positions
 *   c <= p (causal) and, when window > 0, c > p - window.
 */
#ifndef PL_BACKEND_H
#define PL_BACKEND_H

#include "core/types.h"
#include "util/dtype.h"
#include "util/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PL_BACKEND_OPS_VERSION 3

struct pl_backend; /* opaque; each backend defines it and puts `ops` first */

/* A weight matrix [rows, cols] (out_features x in_features, as HF stores it),
 * or a vector [cols] with rows == 1. data is backend memory.
 * PL_DTYPE_Q4 (packed int4 weights, only where supports(PL_OP_MATMUL, PL_DTYPE_Q4)): data
 * is one buffer laid out as pl_q4_layout says. PL_DTYPE_F8W (FP8 W8A8 weights, only where
 * supports(PL_OP_MATMUL, PL_DTYPE_F8W)): one buffer laid out as pl_f8w_layout says. */
struct pl_weight {
    const void *data;
    enum pl_dtype dtype;
    int64_t rows;
    int64_t cols;
};

/* The PL_DTYPE_Q4 buffer of a [rows, cols] weight (cols % 8 == 0) with n_groups scale
 * groups per row, every section 16-byte aligned:
 *   header int32[4] = {group, n_groups, has_gidx, 0} at 0;
 *   codes  uint32 [rows, cols / 8] at 16: input k at bits 4 (k % 8) of word k / 8;
 *   scales fp32 [rows, n_groups] at scale_off;
 *   zeros  uint8 [rows, n_groups] at zero_off;
 *   gidx   int32 [cols] at gidx_off when has_gidx (act-order: input k's group), else the
 *          group of k is k / group.
 * w[r][k] = (code - zero) * scale, exactly model/quant.h's dequantizing reference. */
struct pl_q4_layout {
    int64_t scale_off, zero_off, gidx_off, n_bytes;
};

/* A backend's matmul (and matmul_group, gate_up_act) runs packed int4 weights of up to
 * this many rows without allocating (CUDA: its int4 GEMV up to 8 rows; its int4
 * tensor-core GEMM allocates nothing either and serves 9..128 rows, but decode graphs of
 * more than 8 rows of an int4 model have not run end to end on a GPU yet),
 * so decode graphs may record them; larger products may dequantize into a scratch sized
 * lazily and run eagerly.
 * (PL_DTYPE_F8W products allocate nothing at any number of rows: their activation scratch
 * is made with the backend.) */
#define PL_Q4_SCRATCHLESS_N 8

static inline int64_t pl_q4_align16(int64_t x) { return (x + 15) & ~(int64_t)15; }

static inline struct pl_q4_layout pl_q4_layout_of(int64_t rows, int64_t cols, int64_t n_groups,
                                                  int has_gidx)
{
    struct pl_q4_layout l;
    l.scale_off = 16 + pl_q4_align16(rows * (cols / 8) * 4);
    l.zero_off = l.scale_off + pl_q4_align16(rows * n_groups * 4);
    l.gidx_off = l.zero_off + pl_q4_align16(rows * n_groups);
    l.n_bytes = l.gidx_off + (has_gidx ? pl_q4_align16(cols * 4) : 0);
    return l;
}

/* The PL_DTYPE_F8W buffer of a [rows, cols] FP8 weight (pl_f8w_shape_ok: rows and cols
 * multiples of 16, cuBLASLt's FP8 operand rule), every section 16-byte aligned:
 *   codes  uint8 [rows, cols] at 0: e4m3fn bytes (util/dtype.h), the checkpoint's as stored;
 *          first, so the GEMM operand keeps the allocation's own alignment;
 *   scales fp32 [rows] at scale_off: one per output channel (a per-tensor scale repeated);
 *   header fp32[4] = {input_scale, 0, 0, 0} at head_off: input_scale > 0 is a static
 *          per-tensor activation scale (the checkpoint's input_scale, vLLM's static
 *          scheme), 0 asks for dynamic per-token scales.
 * The weight is w[r][k] = e4m3(code[r][k]) * scale[r], exactly model/quant.h's dequantizing
 * reference (up to the fp32 rounding of that product). A matmul with it is W8A8: row t of
 * x is quantized to e4m3 with the scale
 *   s_t = input_scale when > 0, else max(max_k |x[t][k]| / 448, PL_F8_MIN_SCALE),
 *   xq[t][k] = e4m3_sat(x[t][k] * (1 / s_t))   (fp32 product, round to nearest even,
 *                                               saturating at +-448: util/dtype.h's
 *                                               pl_f32_to_f8e4m3),
 * and out[t][r] = s_t * scale[r] * sum_k e4m3(xq[t][k]) e4m3(code[r][k]) (+ bias[r]),
 * accumulated in fp32 and rounded once to the activation dtype. */
struct pl_f8w_layout {
    int64_t scale_off, head_off, n_bytes;
};

/* The smallest dynamic activation scale (vLLM's 1 / (448 * 512)): an all-zero row
 * quantizes to zeros instead of dividing by zero. */
#define PL_F8_MIN_SCALE (1.0f / (448.0f * 512.0f))

static inline bool pl_f8w_shape_ok(int64_t rows, int64_t cols)
{
    return rows > 0 && cols > 0 && rows % 16 == 0 && cols % 16 == 0;
}

static inline struct pl_f8w_layout pl_f8w_layout_of(int64_t rows, int64_t cols)
{
    struct pl_f8w_layout l;
    l.scale_off = pl_q4_align16(rows * cols);
    l.head_off = l.scale_off + pl_q4_align16(rows * 4);
    l.n_bytes = l.head_off + 16;
    return l;
}

enum pl_op {
    PL_OP_EMBED,
    PL_OP_RMSNORM,
    PL_OP_MATMUL,
    PL_OP_ROPE,
    PL_OP_SILU_MUL,
    PL_OP_STORE_KV,
    PL_OP_ATTENTION,
    PL_OP_GET_ROWS,
    PL_OP_LOGITS,
    PL_OP_COPY_BLOCKS,
    PL_OP_FILL,
    PL_OP_GELU_TANH_MUL,
    PL_OP_SCALE,
    PL_OP_SOFTCAP,
    PL_OP_MOE,
    PL_OP_COUNT
};

/* RoPE parameters in backend-ready form (built once by the model from its config). */
struct pl_rope {
    int rot_dim;            /* number of rotated dims (head_dim * partial factor), even */
    const float *inv_freq;  /* backend memory, [rot_dim / 2]: per-pair inverse frequency */
    float attn_scale;       /* multiplies cos and sin (YaRN's mscale; 1 otherwise) */
    float pos_scale;        /* positions are multiplied by this (1/factor for linear) */
    /* dynamic NTK (HF semantics): when > 0, a token whose sequence length L exceeds
     * dyn_original_max uses base' = theta * ((factor*L/orig) - (factor-1))^(d/(d-2)).
     * Needs per-token sequence lengths (seq_lens argument of rope()). */
    int dyn_original_max;
    float dyn_factor;
    float dyn_theta;
    /* longrope: when > 0, a token whose sequence length exceeds long_original_max uses
     * long_inv_freq (backend memory, [rot_dim / 2]) instead of inv_freq. Needs seq_lens. */
    int long_original_max;
    const float *long_inv_freq;
};

struct pl_attn_meta {
    int n_seqs;
    int n_tokens;                  /* query rows in the batch */
    const int32_t *cu_seqlens_q;   /* backend memory, [n_seqs + 1] */
    const int32_t *context_lens;   /* backend memory, [n_seqs] */
    const int32_t *block_tables;   /* backend memory, [n_seqs, max_blocks_per_seq] */
    int max_blocks_per_seq;
    int max_q_len;                 /* max over sequences of q_len (host-known) */
    int max_context_len;           /* max over sequences of context_lens (host-known) */
    int block_size;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    float scale;                   /* softmax scale, usually 1/sqrt(head_dim) */
    int window;                    /* sliding window in tokens, 0 = none */
    float softcap;                 /* scores = softcap * tanh(scores / softcap) after the
                                      scale, before the mask (Gemma 2); 0 = none */
};

/* What a model needs from a backend beyond its weights' dtypes, checked once at load
 * (check_model): the attention shapes and the optional ops its forward calls. */
struct pl_model_needs {
    int head_dim, n_heads, n_kv_heads;
    bool attn_softcap;   /* attention soft-capping */
    bool long_rope;      /* rope with long_inv_freq */
    bool partial_rope;   /* rot_dim < head_dim */
    bool ops[PL_OP_COUNT]; /* ops the forward calls (the optional ones are checked by the
                              model runner against NULL before check_model runs) */
};

/* One MoE block's arguments (the moe op). Routing as transformers does it: softmax over
 * the router logits in fp32, the top_k largest (ties to the lower expert id), renormalised
 * to sum 1 when norm_topk_prob; out[t] = sum_k p_k * down_e(act(gate_e x) * up_e x)
 * (+ sigmoid(x . sh_router) * shared(x) when the shared expert is present). */
struct pl_moe_args {
    int n_experts, top_k;
    int hidden;                         /* the model's width (sizes the op's scratch) */
    bool norm_topk_prob;
    bool gelu_tanh;                     /* the experts' activation: gelu_tanh, else silu */
    const struct pl_weight *router;     /* [n_experts, hidden] */
    /* expert e's weights are at (const char *)w_x + e * expert_stride: [inter, hidden] gate
     * and up, [hidden, inter] down */
    const struct pl_weight *w_gate, *w_up, *w_down;
    size_t expert_stride;
    int inter;                          /* one expert's width */
    const struct pl_weight *sh_gate, *sh_up, *sh_down, *sh_router; /* NULL: none */
    int sh_inter;
};

struct pl_backend_ops {
    int version; /* PL_BACKEND_OPS_VERSION */
    const char *name;
    enum pl_dtype act_dtype;

    void (*destroy)(struct pl_backend *be);

    /* Memory. alloc returns NULL on failure. map_weight makes host weight bytes
     * usable by ops: the CPU backend returns `host` itself (no copy, the mmap
     * stays borrowed); others allocate and upload. unmap_weight undoes it. */
    void *(*alloc)(struct pl_backend *be, size_t n_bytes);
    void (*free)(struct pl_backend *be, void *p);
    void *(*map_weight)(struct pl_backend *be, const void *host, size_t n_bytes);
    void (*unmap_weight)(struct pl_backend *be, void *p);
    pl_status (*upload)(struct pl_backend *be, void *dst, const void *src, size_t n_bytes);
    pl_status (*download)(struct pl_backend *be, void *dst, const void *src, size_t n_bytes);
    pl_status (*sync)(struct pl_backend *be);

    /* Whether `op` works with weights (or KV/activations) of `dtype`. Checked at load. */
    bool (*supports)(struct pl_backend *be, enum pl_op op, enum pl_dtype dtype);

    /* The device layer (version 3). */

    /* Whether the backend's memory is a device's own (the KV pool is then sized from
     * mem_info and gpu_memory_utilization rather than a host budget). */
    bool device_memory;
    /* Free and total bytes of the memory the backend allocates from. */
    pl_status (*mem_info)(struct pl_backend *be, size_t *free_bytes, size_t *total_bytes);
    /* The text of the first failure since creation ("" when none): what a failed sync()
     * or op means, for the user's message. NULL: the backend keeps none. */
    const char *(*last_error)(struct pl_backend *be);
    /* Whether the backend can run a model with these needs; PL_STATUS_UNSUPPORTED with the
     * shape or op named otherwise. NULL: everything the op table has. */
    pl_status (*check_model)(struct pl_backend *be, const struct pl_model_needs *needs,
                             struct pl_err *err);

    /* out[n, table.cols] = table[ids[i]] (rows of the embedding matrix); a row of zeros
     * where ids[i] < 0 (a vocab-parallel shard's rows held by another rank). */
    void (*embed)(struct pl_backend *be, void *out, const struct pl_weight *table,
                  const int32_t *ids, int n);

    /* RMSNorm over rows of `dim` elements: y = x / sqrt(mean(x^2) + eps) * w.
     * If residual != NULL: residual += x first and the norm reads the sum
     * (fused residual add); out may alias x. w has `dim` elements. */
    void (*rmsnorm)(struct pl_backend *be, void *out, void *residual, const void *x,
                    const struct pl_weight *w, int n_rows, int dim, float eps);

    /* out[n, w.rows] (row stride ld_out elements) = x[n, w.cols] @ w^T (+ bias[w.rows]).
     * bias may be NULL. */
    void (*matmul)(struct pl_backend *be, void *out, int ld_out, const void *x,
                   const struct pl_weight *w, const struct pl_weight *bias, int n);

    /* Rotates q [n, n_heads, head_dim] and k [n, n_kv_heads, head_dim] in place,
     * HF rotate-half layout over the first rot_dim dims of each head, at positions[i].
     * seq_lens (per token; may be NULL unless rope->dyn_original_max > 0). */
    void (*rope)(struct pl_backend *be, void *q, void *k, const int32_t *positions,
                 const int32_t *seq_lens, int n, int n_heads, int n_kv_heads, int head_dim,
                 const struct pl_rope *rope);

    /* out[n, dim] = silu(gate[n, dim]) * up[n, dim]. */
    void (*silu_mul)(struct pl_backend *be, void *out, const void *gate, const void *up,
                     int n, int dim);

    /* Optional ops of the newer families (NULL where the backend lacks them: a model that
     * needs one is refused at load). */

    /* out[n, dim] = gelu_tanh(gate) * up, gelu_tanh(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x +
     * 0.044715 x^3))) (PyTorch's gelu approximate="tanh"). */
    void (*gelu_tanh_mul)(struct pl_backend *be, void *out, const void *gate, const void *up,
                          int n, int dim);
    /* x[n_elems] (activations) *= s, rounded to act_dtype. */
    void (*scale)(struct pl_backend *be, void *x, size_t n_elems, float s);
    /* x[n_elems] (fp32) = cap * tanh(x / cap). */
    void (*softcap)(struct pl_backend *be, float *x, size_t n_elems, float cap);
    /* out[n, hidden] = the MoE block of x[n, hidden] (struct pl_moe_args). scratch: backend
     * memory of at least moe_scratch_elems(args, n) activation elements. */
    void (*moe)(struct pl_backend *be, void *out, const void *x, int n, int hidden,
                const struct pl_moe_args *args, void *scratch);

    /* Writes k/v rows [n, kv_dim] into the caches at slot_mapping[i] (skip < 0). */
    void (*store_kv)(struct pl_backend *be, void *k_cache, void *v_cache, const void *k,
                     const void *v, const int32_t *slot_mapping, int n, int kv_dim);

    /* out[n_tokens, n_heads * head_dim] = softmax(q k^T * scale) v over the paged
     * cache, per the rules at the top of this file. q is [n_tokens, n_heads, head_dim]. */
    void (*attention)(struct pl_backend *be, void *out, const void *q, const void *k_cache,
                      const void *v_cache, const struct pl_attn_meta *m);

    /* out[i] = x[rows[i]] for rows of `dim` elements (i < n). */
    void (*get_rows)(struct pl_backend *be, void *out, const void *x, const int32_t *rows,
                     int n, int dim);

    /* logits (F32, [n, w.rows]) = x[n, w.cols] @ w^T: the LM head, always fp32 out. */
    void (*logits)(struct pl_backend *be, float *out, const void *x, const struct pl_weight *w,
                   int n);

    /* Copies whole KV blocks (every row of the block) src_dst[2i] -> src_dst[2i+1]
     * in one layer's caches; used by copy-on-write. block_bytes = block_size*kv_dim*elem. */
    void (*copy_blocks)(struct pl_backend *be, void *k_cache, void *v_cache,
                        const int32_t *src_dst, int n_pairs, size_t block_bytes);

    /* dst[i] (n elements of dtype F32, F16 or BF16) = lo + (hi - lo) * pl_fill_uniform(seed, i),
     * rounded to dtype: every backend produces the same bits (dummy weights, tests). */
    void (*fill)(struct pl_backend *be, void *dst, enum pl_dtype dtype, size_t n, uint64_t seed,
                 float lo, float hi);

    /* Samples n_rows rows from fp32 logits in backend memory ([n_logits, vocab],
     * not modified): row r reads logits row row_map[r] (< n_logits) with the
     * params and token history of rows[r] and the uniform uniforms[r], exactly
     * as pl_sampler_sample_rows (core/sampler.h, the specification) does, up
     * to float rounding. row_map, rows, uniforms and out are host memory; out
     * is written when the call returns (it synchronises). Backends other than
     * the CPU take only rows for which pl_sampler_row_is_basic holds
     * (PL_STATUS_UNSUPPORTED otherwise). Added in version 2. */
    pl_status (*sample)(struct pl_backend *be, const float *logits, int n_logits, int vocab,
                        const int32_t *row_map, int n_rows, const struct pl_sampler_row *rows,
                        const double *uniforms, struct pl_sample_result *out,
                        struct pl_err *err);

    /* Optional (NULL where the backend has none; the CPU backend has none). */

    /* Host memory the backend copies from fastest (CUDA: pinned), for upload staging. */
    void *(*host_alloc)(struct pl_backend *be, size_t n_bytes);
    void (*host_free)(struct pl_backend *be, void *p);

    /* Op graphs (CUDA graphs): graph_begin starts recording the ops that follow instead
     * of running them; graph_end stops and returns a replayable graph (NULL and a failure
     * status when recording failed: the ops did not run). graph_launch replays every
     * recorded op with the arguments it was recorded with; backend memory named by those
     * arguments is read at replay time, so callers change inputs by uploading into the
     * same buffers. A recorded sequence must not allocate or sync. */
    pl_status (*graph_begin)(struct pl_backend *be);
    pl_status (*graph_end)(struct pl_backend *be, void **graph);
    pl_status (*graph_launch)(struct pl_backend *be, void *graph);
    void (*graph_free)(struct pl_backend *be, void *graph);

    /* Fused weight products for small batches (decode). Optional like the ops above: where
     * NULL, callers use matmul (and silu_mul), which compute the same functions. Neither
     * allocates, so both may be recorded into op graphs; both serve any n >= 1. */

    /* For i < n_mats (1..3): outs[i][n, ws[i].rows] (row stride ld_outs[i]) =
     * x[n, K] @ ws[i]^T (+ biases[i]); every ws[i] has cols == K. biases (the array) or any
     * biases[i] may be NULL. Equals n_mats matmul calls; on CUDA one launch at small n
     * (the q, k, v projections, each into its own buffer). */
    void (*matmul_group)(struct pl_backend *be, int n_mats, void *outs[], const int ld_outs[],
                         const void *x, const struct pl_weight *ws[],
                         const struct pl_weight *biases[], int n);

    /* out[n, dim] = act(x[n, K] @ wg^T (+ bg)) * (x @ wu^T (+ bu)), act silu, or gelu-tanh
     * when gelu_tanh; wg and wu are [dim, K], bg and bu may be NULL. Equals matmul (gate),
     * matmul (up), silu_mul / gelu_tanh_mul, except that a backend may keep gate and up in
     * fp32 instead of rounding them to act_dtype first. */
    void (*gate_up_act)(struct pl_backend *be, void *out, const void *x,
                        const struct pl_weight *wg, const struct pl_weight *wu,
                        const struct pl_weight *bg, const struct pl_weight *bu, int n, int dim,
                        bool gelu_tanh);

    /* A layer's attention inputs in one op: q [n, n_heads, head_dim] and k [n, n_kv_heads,
     * head_dim] normed per head by q_norm / k_norm (both NULL: no norms; rows of head_dim,
     * eps), rotated by rope at positions, then the k and v rows [n, n_kv_heads * head_dim]
     * stored at slot_mapping (skip < 0). Equals rmsnorm (q), rmsnorm (k), rope, store_kv.
     * Optional like the fused products above (NULL: callers use those four); on CUDA one
     * launch per layer instead of five. */
    /* Gemma's sandwich norms where one block ends and the next begins: h = rmsnorm(h) * w_post
     * (in place), residual += h, out = rmsnorm(residual) * w_pre. Equals rmsnorm(h, NULL, h,
     * w_post) then rmsnorm(out, residual, h, w_pre). Optional (NULL: those two calls). */
    void (*norm_add_norm)(struct pl_backend *be, void *out, void *residual, void *h,
                          const struct pl_weight *w_post, const struct pl_weight *w_pre,
                          int n_rows, int dim, float eps);

    void (*qk_rope_store)(struct pl_backend *be, void *q, void *k, const void *v,
                          const struct pl_weight *q_norm, const struct pl_weight *k_norm,
                          float eps, const int32_t *positions, const int32_t *seq_lens, int n,
                          int n_heads, int n_kv_heads, int head_dim, const struct pl_rope *rope,
                          void *k_cache, void *v_cache, const int32_t *slot_mapping);

    /* Optional: height rows of width bytes from src (row pitch src_pitch bytes) to dst (row
     * pitch dst_pitch), backend memory both; enqueued like an op. Tensor parallelism places
     * each rank's vocabulary columns of the gathered logits with it (NULL: the host samples
     * at TP > 1). */
    void (*copy_2d)(struct pl_backend *be, void *dst, size_t dst_pitch, const void *src,
                    size_t src_pitch, size_t width, size_t height);
    /* The KV cache's element type (vLLM's --kv-cache-dtype). Optional: where NULL, the KV
     * cache has act_dtype. set_kv_dtype, called before any KV buffer is sized, makes
     * store_kv, attention and copy_blocks use `dtype` for every KV buffer from then on
     * (PL_DTYPE_F8_E4M3: the stored byte is e4m3_sat(x * (1 / scale)) (fp32 product,
     * round to nearest even, pl_f32_to_f8e4m3), read back as e4m3(byte) * scale, vLLM's
     * k_scale / v_scale; the KV layout above with one byte per element); set_kv_dtype back
     * to act_dtype undoes it; PL_STATUS_UNSUPPORTED for a dtype the backend cannot hold,
     * PL_STATUS_INVALID_ARGUMENT for a scale that is not finite and > 0. */
    pl_status (*set_kv_dtype)(struct pl_backend *be, enum pl_dtype dtype, float k_scale,
                              float v_scale);
    enum pl_dtype (*kv_dtype)(struct pl_backend *be);
};


/* The fill op's uniform in [0, 1): the top 24 bits of splitmix64(seed + i * golden gamma).
 * Backends implement exactly this (CUDA has a device copy in kernels/elementwise.cu). */
static inline float pl_fill_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

struct pl_backend {
    const struct pl_backend_ops *ops;
};

/* The KV cache's element type on this backend (act_dtype unless set_kv_dtype changed it). */
static inline enum pl_dtype pl_backend_kv_dtype(struct pl_backend *be)
{
    return be->ops->kv_dtype ? be->ops->kv_dtype(be) : be->ops->act_dtype;
}

/* Creates the CPU backend with n_threads worker threads (0 = one per core). */
pl_status pl_backend_cpu_new(int n_threads, struct pl_backend **out, struct pl_err *err);
/* on: the best SIMD kernels the CPU has (AVX-512, else AVX2/FMA; the default); off: the
 * plain scalar kernels, the reference implementation benchmarks compare against. */
void pl_backend_cpu_use_simd(struct pl_backend *be, bool on);

/* ---- selection by name (backend.c) ---- */

struct pl_backend_params {
    int n_threads;  /* CPU threads, 0 = one per core */
    int device;     /* accelerator index */
    bool float32;   /* compute in float32: an accelerator's float32 mode (CUDA: fp32
                       activations, KV cache and products); the CPU always does */
    bool cpu_scalar_kernels; /* CPU: scalar reference kernels only (no AVX-512 / AVX2) */
    bool cuda_cublas_only;   /* CUDA: no small-batch GEMV kernels (process-wide switch) */
};

/* Creates the backend named `name`: "cpu", an accelerator backend built in ("cuda"), or
 * "auto" (the first built-in accelerator with a device present, else the CPU).
 * PL_STATUS_INVALID_ARGUMENT for an unknown name (the message lists the known ones),
 * PL_STATUS_UNSUPPORTED for one this build lacks. */
pl_status pl_backend_new(const char *name, const struct pl_backend_params *p,
                         struct pl_backend **out, struct pl_err *err);
/* Whether `name` is a backend name pl_backend_new knows ("auto" included), built or not. */
bool pl_backend_name_known(const char *name);
/* "auto, cpu, cuda" (static storage). */
const char *pl_backend_names(void);
/* The backend "auto" stands for here ("cuda" when a GPU is present, else "cpu"); other
 * names unchanged (static storage or `name` itself). */
const char *pl_backend_resolve(const char *name);
/* Devices the backend `name` ("auto" resolved) can use: accelerators visible to this
 * process (CUDA_VISIBLE_DEVICES applies), 1 for the CPU, 0 for one not built in. */
int pl_backend_device_count(const char *name);
/* Elements of the moe op's scratch for n tokens: exactly n times one token's (the CPU
 * reference strides its rows by pl_moe_scratch_elems(a, 1)). */
size_t pl_moe_scratch_elems(const struct pl_moe_args *a, int n);

/* Destroys any backend (NULL is a no-op). */
static inline void pl_backend_free(struct pl_backend *be)
{
    if (be)
        be->ops->destroy(be);
}

#endif
