/*
 * elementwise.cu -- the CUDA backend's row-wise kernels: embed, rmsnorm (with
 * the fused residual add), rope (every pl_rope variant), silu_mul, row copies
 * (store_kv, get_rows), copy_blocks, fill (dummy weights) and the conversions of the
 * fp16 matmul path.
 *
 * Owns: kernels and their extern "C" launch wrappers (kernels.h).
 * Conventions: activations are bf16 (the _f32 wrappers: fp32, the backend's float32
 * mode, through the same templated kernels), arithmetic is fp32. Where a row is a
 * multiple of 8 elements and 16-byte aligned, threads move 16 bytes (8 bf16) at
 * a time; otherwise a scalar loop does the same work. Each output element is
 * written by exactly one thread, and every reduction runs in a fixed order, so
 * results do not depend on the batch around a row.
 */
#include "kernels.h"
#include "bf16_vec.cuh"
#include "pdl.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define DT_F32 0
#define DT_F16 1
#define DT_BF16 2

static __device__ __forceinline__ float load_w(const void *p, int dtype, int64_t i)
{
    if (dtype == DT_BF16)
        return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dtype == DT_F16)
        return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}


/* Activation element access: the kernels below that serve both activation types
 * (bf16, and fp32 for the backend's float32 mode) read and write through these. */
static __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
static __device__ __forceinline__ float ld(float v) { return v; }
template <typename T> static __device__ __forceinline__ T st(float f);
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float f)
{
    return __float2bfloat16(f);
}
template <> __device__ __forceinline__ float st<float>(float f) { return f; }

static inline bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

static inline int launch_status(void) { return (int)cudaGetLastError(); }

/* pdl.cuh: programmatic dependent launch of the decode path's kernels */
extern "C" {
int pl_cuk_pdl_on = 0;
void pl_cuk_set_pdl(int on) { pl_cuk_pdl_on = on != 0; }
}

/* ---- embed ------------------------------------------------------------------------- */

template <typename T>
__global__ void embed_kernel(T *out, const void *table, int dtype, int64_t dim, const int32_t *ids)
{
    pdl_enter();
    const int64_t row = blockIdx.x;
    const int64_t src = (int64_t)ids[row] * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) /* id < 0: zeros (backend.h) */
        out[row * dim + c] = ids[row] < 0 ? st<T>(0.0f) : st<T>(load_w(table, dtype, src + c));
}

/* bf16 tables with 16-byte rows: a row gather 8 elements at a time, zeros for id < 0. */
__global__ void embed_bf16_vec_kernel(uint4 *out, const uint4 *table, const int32_t *ids,
                                      int64_t row_vecs)
{
    pdl_enter();
    const int64_t row = blockIdx.x;
    const int64_t id = ids[row];
    for (int64_t c = threadIdx.x; c < row_vecs; c += blockDim.x)
        out[row * row_vecs + c] = id < 0 ? make_uint4(0, 0, 0, 0) : table[id * row_vecs + c];
}

extern "C" int pl_cuk_embed(pl_cuda_stream s, void *out, const void *table, int table_dtype,
                            int64_t dim, const int32_t *ids, int n)
{
    if (n <= 0)
        return 0;
    if (table_dtype == DT_BF16 && dim % 8 == 0 && aligned16(out) && aligned16(table)) {
        pdl_launch(embed_bf16_vec_kernel, dim3(n), dim3(128), 0, s, (uint4 *)out, (const uint4 *)table, ids, dim / 8);
        return launch_status();
    }
    pdl_launch(embed_kernel<__nv_bfloat16>, dim3(n), dim3(256), 0, s, (__nv_bfloat16 *)out, table, table_dtype, dim, ids);
    return launch_status();
}

extern "C" int pl_cuk_embed_f32(pl_cuda_stream s, void *out, const void *table, int table_dtype,
                                int64_t dim, const int32_t *ids, int n)
{
    if (n <= 0)
        return 0;
    pdl_launch(embed_kernel<float>, dim3(n), dim3(256), 0, s, (float *)out, table, table_dtype, dim, ids);
    return launch_status();
}

/* ---- rmsnorm ----------------------------------------------------------------------- */

/* Block-wide sum of v in a fixed order (warp shuffles, then warp 0 over the warps). */
static __device__ float block_sum(float v, float *red)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    const int n_warps = (blockDim.x + 31) >> 5;
    float t = lane < n_warps ? red[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1)
        t += __shfl_xor_sync(0xffffffffu, t, o);
    return t; /* every thread holds the total */
}

/* One block per row, 8 elements per thread per step (16-byte loads). The
 * summed row (x + residual, rounded to bf16 as it is stored) is what the norm
 * reads: the same values the next layer's residual add will see. */
__global__ void rmsnorm_vec_kernel(__nv_bfloat16 *out, __nv_bfloat16 *residual,
                                   const __nv_bfloat16 *x, const void *w, int w_dtype, int dim,
                                   float eps)
{
    pdl_enter();
    __shared__ float red[32];
    const int64_t base = (int64_t)blockIdx.x * dim;
    const int n_vec = dim / 8;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
        float f[8];
        bf16x8_to_f32(((const uint4 *)(x + base))[i], f);
        if (residual) {
            float r[8];
            bf16x8_to_f32(((const uint4 *)(residual + base))[i], r);
#pragma unroll
            for (int j = 0; j < 8; j++)
                r[j] += f[j];
            uint4 packed = f32_to_bf16x8(r);
            ((uint4 *)(residual + base))[i] = packed;
            bf16x8_to_f32(packed, f);
        }
#pragma unroll
        for (int j = 0; j < 8; j++)
            ss += f[j] * f[j];
    }
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)dim + eps);
    const __nv_bfloat16 *src = residual ? residual : x;
    for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
        float f[8];
        bf16x8_to_f32(((const uint4 *)(src + base))[i], f);
#pragma unroll
        for (int j = 0; j < 8; j++)
            f[j] = load_w(w, w_dtype, (int64_t)i * 8 + j) * (f[j] * inv);
        ((uint4 *)(out + base))[i] = f32_to_bf16x8(f);
    }
}

/* Gemma's sandwich between two blocks, one block per row: h = rmsnorm(h) * w_post (rounded,
 * stored), residual += h (rounded, stored), out = rmsnorm(residual) * w_pre: exactly
 * rmsnorm_vec_kernel on (h, no residual) then on (h, residual), the same threads walking the
 * same vectors, so the two phases need no exchange but the reduction buffer's. */
__global__ void norm_add_norm_kernel(__nv_bfloat16 *out, __nv_bfloat16 *residual,
                                     __nv_bfloat16 *h, const void *w_post, const void *w_pre,
                                     int w_dtype, int dim, float eps)
{
    pdl_enter();
    __shared__ float red[32];
    const int64_t base = (int64_t)blockIdx.x * dim;
    const int n_vec = dim / 8;
    uint4 *hv = (uint4 *)(h + base), *rv = (uint4 *)(residual + base);
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
        float f[8];
        bf16x8_to_f32(hv[i], f);
#pragma unroll
        for (int j = 0; j < 8; j++)
            ss += f[j] * f[j];
    }
    ss = block_sum(ss, red);
    float inv = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
        float f[8];
        bf16x8_to_f32(hv[i], f);
#pragma unroll
        for (int j = 0; j < 8; j++)
            f[j] = load_w(w_post, w_dtype, (int64_t)i * 8 + j) * (f[j] * inv);
        hv[i] = f32_to_bf16x8(f);
    }
    __syncthreads(); /* red is reused */
    ss = 0.0f;
    for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
        float f[8], r[8];
        bf16x8_to_f32(hv[i], f);
        bf16x8_to_f32(rv[i], r);
#pragma unroll
        for (int j = 0; j < 8; j++)
            r[j] += f[j];
        const uint4 packed = f32_to_bf16x8(r);
        rv[i] = packed;
        bf16x8_to_f32(packed, f);
#pragma unroll
        for (int j = 0; j < 8; j++)
            ss += f[j] * f[j];
    }
    ss = block_sum(ss, red);
    inv = rsqrtf(ss / (float)dim + eps);
    for (int i = threadIdx.x; i < n_vec; i += blockDim.x) {
        float f[8];
        bf16x8_to_f32(rv[i], f);
#pragma unroll
        for (int j = 0; j < 8; j++)
            f[j] = load_w(w_pre, w_dtype, (int64_t)i * 8 + j) * (f[j] * inv);
        ((uint4 *)(out + base))[i] = f32_to_bf16x8(f);
    }
}

extern "C" int pl_cuk_norm_add_norm(pl_cuda_stream s, void *out, void *residual, void *h,
                                    const void *w_post, const void *w_pre, int w_dtype,
                                    int n_rows, int dim, float eps)
{
    if (n_rows <= 0)
        return 0;
    if (dim % 8 != 0 || !aligned16(out) || !aligned16(residual) || !aligned16(h))
        return (int)cudaErrorInvalidValue;
    int threads = (dim / 8 + 31) / 32 * 32;
    threads = threads < 32 ? 32 : threads > 256 ? 256 : threads;
    pdl_launch(norm_add_norm_kernel, dim3(n_rows), dim3(threads), 0, s, (__nv_bfloat16 *)out,
               (__nv_bfloat16 *)residual, (__nv_bfloat16 *)h, w_post, w_pre, w_dtype, dim, eps);
    return launch_status();
}

template <typename T>
__global__ void rmsnorm_scalar_kernel(T *out, T *residual, const T *x, const void *w, int w_dtype,
                                      int dim, float eps)
{
    pdl_enter();
    __shared__ float red[32];
    const int64_t base = (int64_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float f = ld(x[base + i]);
        if (residual) {
            T r = st<T>(ld(residual[base + i]) + f);
            residual[base + i] = r;
            f = ld(r);
        }
        ss += f * f;
    }
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)dim + eps);
    const T *src = residual ? residual : x;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[base + i] = st<T>(load_w(w, w_dtype, i) * (ld(src[base + i]) * inv));
}

extern "C" int pl_cuk_rmsnorm(pl_cuda_stream s, void *out, void *residual, const void *x,
                              const void *w, int w_dtype, int n_rows, int dim, float eps)
{
    if (n_rows <= 0)
        return 0;
    bool vec = dim % 8 == 0 && aligned16(out) && aligned16(x) &&
               (residual == NULL || aligned16(residual));
    int work = vec ? dim / 8 : dim;
    int threads = (work + 31) / 32 * 32;
    threads = threads < 32 ? 32 : threads > 256 ? 256 : threads;
    if (vec)
        pdl_launch(rmsnorm_vec_kernel, dim3(n_rows), dim3(threads), 0, s, (__nv_bfloat16 *)out,
                                                     (__nv_bfloat16 *)residual,
                                                     (const __nv_bfloat16 *)x, w, w_dtype, dim,
                                                     eps);
    else
        pdl_launch(rmsnorm_scalar_kernel<__nv_bfloat16>, dim3(n_rows), dim3(threads), 0, s, (__nv_bfloat16 *)out,
                                                        (__nv_bfloat16 *)residual,
                                                        (const __nv_bfloat16 *)x, w, w_dtype,
                                                        dim, eps);
    return launch_status();
}

extern "C" int pl_cuk_rmsnorm_f32(pl_cuda_stream s, void *out, void *residual, const void *x,
                                  const void *w, int w_dtype, int n_rows, int dim, float eps)
{
    if (n_rows <= 0)
        return 0;
    int threads = (dim + 31) / 32 * 32;
    threads = threads < 32 ? 32 : threads > 256 ? 256 : threads;
    pdl_launch(rmsnorm_scalar_kernel<float>, dim3(n_rows), dim3(threads), 0, s, (float *)out, (float *)residual,
                                                    (const float *)x, w, w_dtype, dim, eps);
    return launch_status();
}

/* ---- rope -------------------------------------------------------------------------- */

/* Token t's rotation, by the whole block: the cos/sin of each rotated pair computed once
 * into cs (shared, rot_dim floats), then every (head, pair) of q and k rotated. */
template <typename T>
static __device__ void rope_token(T *q, T *k, int t, const int32_t *positions,
                                  const int32_t *seq_lens, int n_heads, int n_kv_heads,
                                  int head_dim, const struct pl_cuk_rope &r, float *cs)
{
    const int half = r.rot_dim / 2;
    const float pos = (float)positions[t] * r.pos_scale;
    const int32_t L = seq_lens ? seq_lens[t] : 0;
    const bool dyn = r.dyn_original_max > 0 && L > r.dyn_original_max;
    double base = 0.0;
    if (dyn) {
        double d = (double)r.rot_dim, f = (double)r.dyn_factor;
        base = (double)r.dyn_theta *
               pow(f * (double)L / (double)r.dyn_original_max - (f - 1.0), d / (d - 2.0));
    }
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float inv;
        if (dyn) {
            float expo = (float)(2 * i) / (float)r.rot_dim;
            inv = (float)(1.0 / pow(base, (double)expo));
        } else if (r.long_original_max > 0 && L > r.long_original_max) {
            inv = r.long_inv_freq[i]; /* longrope, a sequence past the original length */
        } else {
            inv = r.inv_freq[i];
        }
        float angle = pos * inv;
        cs[i] = cosf(angle) * r.attn_scale;
        cs[half + i] = sinf(angle) * r.attn_scale;
    }
    __syncthreads();
    const int total = (n_heads + n_kv_heads) * half;
    for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
        int h = idx / half, i = idx % half;
        T *v = h < n_heads ? q + ((int64_t)t * n_heads + h) * head_dim
                           : k + ((int64_t)t * n_kv_heads + (h - n_heads)) * head_dim;
        float x1 = ld(v[i]), x2 = ld(v[i + half]);
        float c = cs[i], sn = cs[half + i];
        v[i] = st<T>(x1 * c - x2 * sn);
        v[i + half] = st<T>(x2 * c + x1 * sn);
    }
}

/* One block per token (the fp32 angle = position * inv_freq, as the CPU backend and HF
 * compute it). */
template <typename T>
__global__ void rope_kernel(T *q, T *k, const int32_t *positions,
                            const int32_t *seq_lens, int n_heads, int n_kv_heads, int head_dim,
                            struct pl_cuk_rope r)
{
    pdl_enter();
    extern __shared__ float cs[]; /* [half] cos, then [half] sin */
    rope_token(q, k, blockIdx.x, positions, seq_lens, n_heads, n_kv_heads, head_dim, r, cs);
}

extern "C" int pl_cuk_rope(pl_cuda_stream s, void *q, void *k, const int32_t *positions,
                           const int32_t *seq_lens, int n, int n_heads, int n_kv_heads,
                           int head_dim, struct pl_cuk_rope r)
{
    if (n <= 0 || r.rot_dim <= 0)
        return 0;
    size_t smem = sizeof(float) * (size_t)r.rot_dim;
    pdl_launch(rope_kernel<__nv_bfloat16>, dim3(n), dim3(128), smem, s, (__nv_bfloat16 *)q, (__nv_bfloat16 *)k, positions, seq_lens,
                                     n_heads, n_kv_heads, head_dim, r);
    return launch_status();
}

extern "C" int pl_cuk_rope_f32(pl_cuda_stream s, void *q, void *k, const int32_t *positions,
                               const int32_t *seq_lens, int n, int n_heads, int n_kv_heads,
                               int head_dim, struct pl_cuk_rope r)
{
    if (n <= 0 || r.rot_dim <= 0)
        return 0;
    size_t smem = sizeof(float) * (size_t)r.rot_dim;
    pdl_launch(rope_kernel<float>, dim3(n), dim3(128), smem, s, (float *)q, (float *)k, positions, seq_lens, n_heads,
                                     n_kv_heads, head_dim, r);
    return launch_status();
}

/* ---- q/k norms, rope and the KV store in one launch --------------------------------- */

/*
 * One block per token, computing exactly what rmsnorm_vec_kernel (q_norm, k_norm over
 * head_dim-wide rows), rope_kernel and two copy_rows_vec_kernel launches compute, in one
 * launch: (1) with norms, a warp per head, lane i holding the head's 16-byte vector i,
 * the same per-lane sum of squares and the same xor-shuffle tree as rmsnorm_vec_kernel's
 * one-warp block (head_dim <= 256), the normed head rounded to bf16 in place; (2) rope_token,
 * rope_kernel's rotation; (3) k and v rows into the caches at slots[t] (none
 * when < 0). Global writes of one phase are read by other threads of the block in the
 * next, after __syncthreads.
 */
__global__ void qk_rope_store_kernel(__nv_bfloat16 *q, __nv_bfloat16 *k, const uint4 *v,
                                     const void *qn, const void *kn, int norm_dtype, float eps,
                                     const int32_t *positions, const int32_t *seq_lens,
                                     int n_heads, int n_kv_heads, int head_dim,
                                     struct pl_cuk_rope r, uint4 *k_cache, uint4 *v_cache,
                                     const int32_t *slots)
{
    pdl_enter();
    extern __shared__ float cs[]; /* [half] cos, then [half] sin */
    const int t = blockIdx.x;
    if (qn) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        const int nv = head_dim / 8;
        for (int h = warp; h < n_heads + n_kv_heads; h += (int)(blockDim.x >> 5)) {
            __nv_bfloat16 *x = h < n_heads ? q + ((int64_t)t * n_heads + h) * head_dim
                                           : k + ((int64_t)t * n_kv_heads + (h - n_heads)) * head_dim;
            const void *w = h < n_heads ? qn : kn;
            float f[8];
            float ss = 0.0f;
            if (lane < nv) {
                bf16x8_to_f32(((const uint4 *)x)[lane], f);
#pragma unroll
                for (int j = 0; j < 8; j++)
                    ss += f[j] * f[j];
            }
            for (int o = 16; o > 0; o >>= 1)
                ss += __shfl_xor_sync(0xffffffffu, ss, o);
            const float inv = rsqrtf(ss / (float)head_dim + eps);
            if (lane < nv) {
#pragma unroll
                for (int j = 0; j < 8; j++)
                    f[j] = load_w(w, norm_dtype, (int64_t)lane * 8 + j) * (f[j] * inv);
                ((uint4 *)x)[lane] = f32_to_bf16x8(f);
            }
        }
    }
    rope_token(q, k, t, positions, seq_lens, n_heads, n_kv_heads, head_dim, r, cs);
    const int64_t slot = slots[t];
    if (slot < 0)
        return;
    __syncthreads();
    const int64_t row_vecs = (int64_t)n_kv_heads * head_dim / 8;
    const uint4 *kr = (const uint4 *)(k + (int64_t)t * n_kv_heads * head_dim);
    for (int64_t c = threadIdx.x; c < row_vecs; c += blockDim.x) {
        k_cache[slot * row_vecs + c] = kr[c];
        v_cache[slot * row_vecs + c] = v[(int64_t)t * row_vecs + c];
    }
}

extern "C" int pl_cuk_qk_rope_store(pl_cuda_stream s, void *q, void *k, const void *v,
                                    const void *q_norm, const void *k_norm, int norm_dtype,
                                    float eps, const int32_t *positions, const int32_t *seq_lens,
                                    int n, int n_heads, int n_kv_heads, int head_dim,
                                    struct pl_cuk_rope r, void *k_cache, void *v_cache,
                                    const int32_t *slots)
{
    if (n <= 0)
        return 0;
    if (head_dim % 8 != 0 || head_dim > 256 || r.rot_dim <= 0 || r.rot_dim > head_dim ||
        (q_norm == NULL) != (k_norm == NULL) || !aligned16(q) || !aligned16(k) ||
        !aligned16(v) || !aligned16(k_cache) || !aligned16(v_cache))
        return (int)cudaErrorInvalidValue;
    size_t smem = sizeof(float) * (size_t)r.rot_dim;
    pdl_launch(qk_rope_store_kernel, dim3(n), dim3(128), smem, s, (__nv_bfloat16 *)q,
               (__nv_bfloat16 *)k, (const uint4 *)v, q_norm, k_norm, norm_dtype, eps, positions,
               seq_lens, n_heads, n_kv_heads, head_dim, r, (uint4 *)k_cache, (uint4 *)v_cache,
               slots);
    return launch_status();
}

/* ---- silu_mul ---------------------------------------------------------------------- */

static __device__ __forceinline__ float silu_mul1(float g, float u)
{
    return g / (1.0f + expf(-g)) * u;
}

__global__ void silu_mul_vec_kernel(uint4 *out, const uint4 *gate, const uint4 *up, int64_t n_vec)
{
    pdl_enter();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n_vec;
         i += (int64_t)gridDim.x * blockDim.x) {
        float g[8], u[8];
        bf16x8_to_f32(gate[i], g);
        bf16x8_to_f32(up[i], u);
#pragma unroll
        for (int j = 0; j < 8; j++)
            g[j] = silu_mul1(g[j], u[j]);
        out[i] = f32_to_bf16x8(g);
    }
}

template <typename T>
__global__ void silu_mul_kernel(T *out, const T *gate, const T *up, int64_t n)
{
    pdl_enter();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = st<T>(silu_mul1(ld(gate[i]), ld(up[i])));
}

static int grid_for(int64_t work, int threads)
{
    int64_t b = (work + threads - 1) / threads;
    return (int)(b < 1 ? 1 : b > 65535 ? 65535 : b);
}

extern "C" int pl_cuk_silu_mul(pl_cuda_stream s, void *out, const void *gate, const void *up,
                               int64_t n_elems)
{
    if (n_elems <= 0)
        return 0;
    if (n_elems % 8 == 0 && aligned16(out) && aligned16(gate) && aligned16(up))
        pdl_launch(silu_mul_vec_kernel, dim3(grid_for(n_elems / 8, 256)), dim3(256), 0, s, 
            (uint4 *)out, (const uint4 *)gate, (const uint4 *)up, n_elems / 8);
    else
        pdl_launch(silu_mul_kernel<__nv_bfloat16>, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, 
            (__nv_bfloat16 *)out, (const __nv_bfloat16 *)gate, (const __nv_bfloat16 *)up,
            n_elems);
    return launch_status();
}

extern "C" int pl_cuk_silu_mul_f32(pl_cuda_stream s, void *out, const void *gate, const void *up,
                                   int64_t n_elems)
{
    if (n_elems <= 0)
        return 0;
    pdl_launch(silu_mul_kernel<float>, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, (float *)out, (const float *)gate,
                                                           (const float *)up, n_elems);
    return launch_status();
}

/* ---- gelu_tanh_mul, scale, softcap (Gemma) ----------------------------------------- */

static __device__ __forceinline__ float gelu_tanh_mul1(float g, float u)
{
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * g * (1.0f + tanhf(k0 * (g + k1 * g * g * g))) * u;
}

template <typename T>
__global__ void gelu_tanh_mul_kernel(T *out, const T *gate, const T *up, int64_t n)
{
    pdl_enter();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = st<T>(gelu_tanh_mul1(ld(gate[i]), ld(up[i])));
}

extern "C" int pl_cuk_gelu_tanh_mul(pl_cuda_stream s, void *out, const void *gate, const void *up,
                                    int64_t n_elems)
{
    if (n_elems <= 0)
        return 0;
    pdl_launch(gelu_tanh_mul_kernel<__nv_bfloat16>, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, 
        (__nv_bfloat16 *)out, (const __nv_bfloat16 *)gate, (const __nv_bfloat16 *)up, n_elems);
    return launch_status();
}

extern "C" int pl_cuk_gelu_tanh_mul_f32(pl_cuda_stream s, void *out, const void *gate,
                                        const void *up, int64_t n_elems)
{
    if (n_elems <= 0)
        return 0;
    pdl_launch(gelu_tanh_mul_kernel<float>, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, 
        (float *)out, (const float *)gate, (const float *)up, n_elems);
    return launch_status();
}

template <typename T> __global__ void scale_kernel(T *x, int64_t n, float scale)
{
    pdl_enter();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = st<T>(ld(x[i]) * scale);
}

extern "C" int pl_cuk_scale(pl_cuda_stream s, void *x, int64_t n_elems, float scale)
{
    if (n_elems <= 0)
        return 0;
    pdl_launch(scale_kernel<__nv_bfloat16>, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, (__nv_bfloat16 *)x, n_elems, scale);
    return launch_status();
}

extern "C" int pl_cuk_scale_f32(pl_cuda_stream s, void *x, int64_t n_elems, float scale)
{
    if (n_elems <= 0)
        return 0;
    pdl_launch(scale_kernel<float>, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, (float *)x, n_elems, scale);
    return launch_status();
}

__global__ void softcap_kernel(float *x, int64_t n, float cap)
{
    pdl_enter();
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        x[i] = tanhf(x[i] / cap) * cap;
}

extern "C" int pl_cuk_softcap(pl_cuda_stream s, float *x, int64_t n_elems, float cap)
{
    if (n_elems <= 0)
        return 0;
    pdl_launch(softcap_kernel, dim3(grid_for(n_elems, 256)), dim3(256), 0, s, x, n_elems, cap);
    return launch_status();
}

/* ---- row copies, block copies ------------------------------------------------------ */

__global__ void copy_rows_vec_kernel(uint4 *dst, const int32_t *dst_idx, const uint4 *src,
                                     const int32_t *src_idx, int64_t row_vecs)
{
    pdl_enter();
    const int i = blockIdx.x;
    const int64_t d = dst_idx ? dst_idx[i] : i;
    const int64_t sr = src_idx ? src_idx[i] : i;
    if (d < 0 || sr < 0)
        return;
    for (int64_t c = threadIdx.x; c < row_vecs; c += blockDim.x)
        dst[d * row_vecs + c] = src[sr * row_vecs + c];
}

__global__ void copy_rows_kernel(unsigned char *dst, const int32_t *dst_idx,
                                 const unsigned char *src, const int32_t *src_idx,
                                 int64_t row_bytes)
{
    pdl_enter();
    const int i = blockIdx.x;
    const int64_t d = dst_idx ? dst_idx[i] : i;
    const int64_t sr = src_idx ? src_idx[i] : i;
    if (d < 0 || sr < 0)
        return;
    for (int64_t c = threadIdx.x; c < row_bytes; c += blockDim.x)
        dst[d * row_bytes + c] = src[sr * row_bytes + c];
}

extern "C" int pl_cuk_copy_rows(pl_cuda_stream s, void *dst, const int32_t *dst_idx,
                                const void *src, const int32_t *src_idx, int n, size_t row_bytes)
{
    if (n <= 0 || row_bytes == 0)
        return 0;
    if (row_bytes % 16 == 0 && aligned16(dst) && aligned16(src)) {
        int64_t vecs = (int64_t)(row_bytes / 16);
        int threads = vecs >= 256 ? 256 : (int)((vecs + 31) / 32 * 32);
        pdl_launch(copy_rows_vec_kernel, dim3(n), dim3(threads), 0, s, (uint4 *)dst, dst_idx, (const uint4 *)src,
                                                   src_idx, vecs);
    } else {
        pdl_launch(copy_rows_kernel, dim3(n), dim3(256), 0, s, (unsigned char *)dst, dst_idx,
                                           (const unsigned char *)src, src_idx,
                                           (int64_t)row_bytes);
    }
    return launch_status();
}

/* blockIdx.y: 0 = K, 1 = V. Pairs are independent (copy-on-write targets are
 * fresh blocks), so they run in parallel. */
__global__ void copy_blocks_kernel(unsigned char *k_cache, unsigned char *v_cache,
                                   const int32_t *src_dst, int64_t block_bytes)
{
    unsigned char *cache = blockIdx.y == 0 ? k_cache : v_cache;
    const int64_t src = (int64_t)src_dst[2 * blockIdx.x] * block_bytes;
    const int64_t dst = (int64_t)src_dst[2 * blockIdx.x + 1] * block_bytes;
    if (block_bytes % 16 == 0) {
        const uint4 *a = (const uint4 *)(cache + src);
        uint4 *b = (uint4 *)(cache + dst);
        for (int64_t c = threadIdx.x; c < block_bytes / 16; c += blockDim.x)
            b[c] = a[c];
    } else {
        for (int64_t c = threadIdx.x; c < block_bytes; c += blockDim.x)
            cache[dst + c] = cache[src + c];
    }
}

extern "C" int pl_cuk_copy_blocks(pl_cuda_stream s, void *k_cache, void *v_cache,
                                  const int32_t *src_dst, int n_pairs, size_t block_bytes)
{
    if (n_pairs <= 0 || block_bytes == 0)
        return 0;
    dim3 grid((unsigned)n_pairs, 2);
    copy_blocks_kernel<<<grid, 256, 0, s>>>((unsigned char *)k_cache, (unsigned char *)v_cache,
                                            src_dst, (int64_t)block_bytes);
    return launch_status();
}

/* ---- conversions for the fp16-weight matmul path ----------------------------------- */

__global__ void bf16_to_f16_kernel(__half *out, const __nv_bfloat16 *in, int64_t n)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = __float2half(__bfloat162float(in[i]));
}

extern "C" int pl_cuk_bf16_to_f16(pl_cuda_stream s, void *out, const void *in, int64_t n_elems)
{
    if (n_elems <= 0)
        return 0;
    bf16_to_f16_kernel<<<grid_for(n_elems, 256), 256, 0, s>>>((__half *)out,
                                                              (const __nv_bfloat16 *)in, n_elems);
    return launch_status();
}

__global__ void f32_to_bf16_bias_kernel(__nv_bfloat16 *out, int ld_out, const float *in,
                                        const void *bias, int bias_dtype, int cols)
{
    pdl_enter();
    const int64_t r = blockIdx.x;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = in[r * cols + c];
        if (bias)
            v += load_w(bias, bias_dtype, c);
        out[r * ld_out + c] = __float2bfloat16(v);
    }
}

extern "C" int pl_cuk_f32_to_bf16_bias(pl_cuda_stream s, void *out, int ld_out, const float *in,
                                       const void *bias, int bias_dtype, int n, int cols)
{
    if (n <= 0)
        return 0;
    pdl_launch(f32_to_bf16_bias_kernel, dim3(n), dim3(256), 0, s, (__nv_bfloat16 *)out, ld_out, in, bias, bias_dtype,
                                              cols);
    return launch_status();
}

__global__ void add_bias_kernel(__nv_bfloat16 *out, int ld_out, const void *bias, int bias_dtype,
                                int cols)
{
    pdl_enter();
    const int64_t r = blockIdx.x;
    for (int c = threadIdx.x; c < cols; c += blockDim.x)
        out[r * ld_out + c] =
            __float2bfloat16(__bfloat162float(out[r * ld_out + c]) + load_w(bias, bias_dtype, c));
}

extern "C" int pl_cuk_add_bias(pl_cuda_stream s, void *out, int ld_out, const void *bias,
                               int bias_dtype, int n, int cols)
{
    if (n <= 0)
        return 0;
    pdl_launch(add_bias_kernel, dim3(n), dim3(256), 0, s, (__nv_bfloat16 *)out, ld_out, bias, bias_dtype, cols);
    return launch_status();
}

/* The device copy of pl_fill_uniform (backend.h): bit-identical by construction. */
static __device__ __forceinline__ float fill_uniform(uint64_t seed, uint64_t i)
{
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

__global__ void fill_kernel(void *dst, int dtype, uint64_t n, uint64_t seed, float lo, float span)
{
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        /* no fused multiply-add: the host computes a rounded product, then the sum */
        float x = __fadd_rn(lo, __fmul_rn(span, fill_uniform(seed, i)));
        if (dtype == DT_BF16)
            ((__nv_bfloat16 *)dst)[i] = __float2bfloat16(x);
        else if (dtype == DT_F16)
            ((__half *)dst)[i] = __float2half(x);
        else
            ((float *)dst)[i] = x;
    }
}

extern "C" int pl_cuk_fill(pl_cuda_stream s, void *dst, int dtype, uint64_t n, uint64_t seed,
                           float lo, float hi)
{
    if (n == 0)
        return 0;
    uint64_t blocks = (n + 255) / 256;
    if (blocks > 132 * 64)
        blocks = 132 * 64;
    fill_kernel<<<(unsigned)blocks, 256, 0, s>>>(dst, dtype, n, seed, lo, hi - lo);
    return (int)cudaGetLastError();
}
