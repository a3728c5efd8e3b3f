/*
 * attention.cu -- paged attention over the bf16 KV cache (rules: backend.h).
 *
 * Owns: two kernels that together cover any batch, and the reduce kernel of
 * the split decode path. Both read the cache only through block tables.
 *
 * 1. Decode (rows of sequences with q_len == 1). One CTA per (kv head,
 *    sequence, split): the GQA group of G query heads shares every K/V load.
 *    Threads are laid out as token groups of LPT = head_dim/8 lanes; a lane
 *    loads 16 bytes (8 bf16) of a K or V row. Context is walked in tiles of
 *    DEC_TILE tokens: scores -> shared memory, online softmax in fp32 per
 *    query head (running max m, sum l), then P.V accumulated in registers
 *    (G x 8 floats per thread). The token groups' partial outputs are summed
 *    in a fixed order at the end (deterministic). For few sequences and long
 *    contexts the context is split (flash-decoding): each split writes its
 *    normalised output with (m, l), and decode_reduce combines them.
 * 2. Prefill (rows of sequences with q_len > 1): a tiled flash-attention
 *    kernel on CUDA cores (this milestone; the tensor-core version replaces
 *    it): one CTA per (16 query rows, head, sequence), K/V tiles of 32 tokens
 *    staged in shared memory as fp32, online softmax per row, causal and
 *    sliding-window masks from the rows' positions.
 * Both kernels launch for every sequence of the batch and return at once for
 * the sequences the other one owns, so a mixed decode + prefill batch is two
 * launches and needs no host knowledge of per-sequence q_len.
 */
#include "kernels.h"
#include "bf16_vec.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#define DEC_THREADS 128
#define DEC_TILE 64
#define MAX_HD 256

#define PF_THREADS 128
#define PF_BM 16
#define PF_BN 32


/* Row offset (in elements) of context token c of a sequence for kv head kvh. */
static __device__ __forceinline__ int64_t kv_offset(const int32_t *table, int block_size, int c,
                                                    int n_kv_heads, int kvh, int head_dim)
{
    int64_t slot = (int64_t)table[c / block_size] * block_size + c % block_size;
    return (slot * n_kv_heads + kvh) * head_dim;
}

extern "C" int pl_cuk_attention_supported(int head_dim, int group)
{
    bool pow2 = head_dim >= 8 && head_dim <= MAX_HD && (head_dim & (head_dim - 1)) == 0;
    return pow2 && group >= 1 && group <= 16;
}

/* ---- decode ------------------------------------------------------------------------ */

extern "C" size_t pl_cuk_attention_partial_floats(int n_seqs, int n_heads, int head_dim,
                                                  int n_splits)
{
    /* per (seq, head, split): head_dim outputs + m + l */
    return (size_t)n_seqs * (size_t)n_heads * (size_t)n_splits * (size_t)(head_dim + 2);
}

template <int GM>
__global__ void __launch_bounds__(DEC_THREADS)
decode_kernel(struct pl_cuk_attn a, int n_splits, float *partial)
{
    __shared__ float q_s[GM * MAX_HD];
    __shared__ float p_s[GM][DEC_TILE];
    __shared__ float alpha_s[GM];
    __shared__ float m_s[GM], l_s[GM];

    const int kvh = blockIdx.x, s = blockIdx.y, split = blockIdx.z;
    const int q0 = a.cu_seqlens_q[s];
    if (a.cu_seqlens_q[s + 1] - q0 != 1)
        return; /* a prefill sequence: the prefill kernel owns it */
    const int HD = a.head_dim, G = a.n_heads / a.n_kv_heads;
    const int ctx = a.context_lens[s];
    const int pos = ctx - 1;
    int lo = 0;
    if (a.window > 0 && pos - a.window + 1 > 0)
        lo = pos - a.window + 1;
    const int span = ctx - lo;
    const int per_split = ((span + n_splits - 1) / n_splits + DEC_TILE - 1) / DEC_TILE * DEC_TILE;
    const int c_begin = lo + split * per_split;
    const int c_end = min(ctx, c_begin + per_split);

    const int LPT = HD / 8;                 /* lanes per token row */
    const int TPG = DEC_THREADS / LPT;      /* token groups */
    const int tg = threadIdx.x / LPT, lane = threadIdx.x % LPT;
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const __nv_bfloat16 *kc = (const __nv_bfloat16 *)a.k_cache;
    const __nv_bfloat16 *vc = (const __nv_bfloat16 *)a.v_cache;

    const __nv_bfloat16 *q = (const __nv_bfloat16 *)a.q + ((int64_t)q0 * a.n_heads + kvh * G) * HD;
    for (int i = threadIdx.x; i < G * HD; i += DEC_THREADS)
        q_s[i] = __bfloat162float(q[i]);
    if (threadIdx.x < GM) {
        m_s[threadIdx.x] = -INFINITY;
        l_s[threadIdx.x] = 0.0f;
    }
    __syncthreads();

    float acc[GM][8];
#pragma unroll
    for (int g = 0; g < GM; g++)
#pragma unroll
        for (int j = 0; j < 8; j++)
            acc[g][j] = 0.0f;

    for (int t0 = c_begin; t0 < c_end; t0 += DEC_TILE) {
        /* scores of this tile */
        for (int t = tg; t < DEC_TILE; t += TPG) {
            const int c = t0 + t;
            float part[GM];
            if (c < c_end) {
                float k[8];
                bf16x8_to_f32(((const uint4 *)(kc + kv_offset(table, a.block_size, c,
                                                                a.n_kv_heads, kvh, HD)))[lane],
                              k);
#pragma unroll
                for (int g = 0; g < GM; g++) {
                    float d = 0.0f;
                    if (g < G) {
                        const float *qg = q_s + g * HD + lane * 8;
#pragma unroll
                        for (int j = 0; j < 8; j++)
                            d += qg[j] * k[j];
                    }
                    part[g] = d;
                }
            } else {
#pragma unroll
                for (int g = 0; g < GM; g++)
                    part[g] = 0.0f;
            }
#pragma unroll
            for (int g = 0; g < GM; g++) {
                for (int o = LPT / 2; o > 0; o >>= 1)
                    part[g] += __shfl_xor_sync(0xffffffffu, part[g], o);
            }
            if (lane == 0) {
#pragma unroll
                for (int g = 0; g < GM; g++)
                    p_s[g][t] = c < c_end ? part[g] * a.scale : -INFINITY;
            }
        }
        __syncthreads();
        /* online softmax, one warp per query head */
        const int warp = threadIdx.x >> 5, wl = threadIdx.x & 31;
        for (int g = warp; g < G; g += DEC_THREADS / 32) {
            float mx = -INFINITY;
            for (int t = wl; t < DEC_TILE; t += 32)
                mx = fmaxf(mx, p_s[g][t]);
            for (int o = 16; o > 0; o >>= 1)
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
            const float m_old = m_s[g];
            const float m_new = fmaxf(m_old, mx); /* finite: the tile holds a valid token */
            float sum = 0.0f;
            for (int t = wl; t < DEC_TILE; t += 32) {
                float p = expf(p_s[g][t] - m_new);
                p_s[g][t] = p;
                sum += p;
            }
            for (int o = 16; o > 0; o >>= 1)
                sum += __shfl_xor_sync(0xffffffffu, sum, o);
            __syncwarp(); /* every lane has read m_s[g] before lane 0 rewrites it */
            if (wl == 0) {
                float alpha = expf(m_old - m_new); /* 0 on the first tile */
                alpha_s[g] = alpha;
                l_s[g] = l_s[g] * alpha + sum;
                m_s[g] = m_new;
            }
        }
        __syncthreads();
        /* P.V */
#pragma unroll
        for (int g = 0; g < GM; g++) {
            const float al = g < G ? alpha_s[g] : 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++)
                acc[g][j] *= al;
        }
        for (int t = tg; t < DEC_TILE && t0 + t < c_end; t += TPG) {
            float v[8];
            bf16x8_to_f32(((const uint4 *)(vc + kv_offset(table, a.block_size, t0 + t,
                                                            a.n_kv_heads, kvh, HD)))[lane],
                          v);
#pragma unroll
            for (int g = 0; g < GM; g++) {
                const float p = g < G ? p_s[g][t] : 0.0f;
#pragma unroll
                for (int j = 0; j < 8; j++)
                    acc[g][j] += p * v[j];
            }
        }
        __syncthreads(); /* p_s is rewritten by the next tile */
    }

    /* sum the token groups' accumulators in a fixed order (q_s is free now) */
    float *red = q_s;
    for (int r = 0; r < TPG; r++) {
        if (tg == r) {
#pragma unroll
            for (int g = 0; g < GM; g++) {
                if (g < G) {
#pragma unroll
                    for (int j = 0; j < 8; j++) {
                        float *dst = red + g * HD + lane * 8 + j;
                        *dst = r == 0 ? acc[g][j] : *dst + acc[g][j];
                    }
                }
            }
        }
        __syncthreads();
    }

    const int64_t row = (int64_t)q0 * a.n_heads + kvh * G; /* first head of the group */
    if (n_splits == 1) {
        __nv_bfloat16 *out = (__nv_bfloat16 *)a.out + row * HD;
        for (int i = threadIdx.x; i < G * LPT; i += DEC_THREADS) {
            const int g = i / LPT, c8 = i % LPT;
            const float inv = 1.0f / l_s[g];
            float f[8];
#pragma unroll
            for (int j = 0; j < 8; j++)
                f[j] = red[g * HD + c8 * 8 + j] * inv;
            ((uint4 *)(out + (int64_t)g * HD))[c8] = f32_to_bf16x8(f);
        }
    } else {
        for (int i = threadIdx.x; i < G * (HD + 2); i += DEC_THREADS) {
            const int g = i / (HD + 2), d = i % (HD + 2);
            const int h = kvh * G + g;
            float *p = partial + (((int64_t)s * a.n_heads + h) * n_splits + split) * (HD + 2);
            const float l = l_s[g];
            if (d < HD)
                p[d] = l > 0.0f ? red[g * HD + d] / l : 0.0f;
            else if (d == HD)
                p[d] = m_s[g];
            else
                p[d] = l;
        }
    }
}

/* Combines the splits of one (sequence, head): weights l_i * exp(m_i - M). */
__global__ void decode_reduce_kernel(struct pl_cuk_attn a, int n_splits, const float *partial)
{
    const int h = blockIdx.x, s = blockIdx.y;
    const int q0 = a.cu_seqlens_q[s];
    if (a.cu_seqlens_q[s + 1] - q0 != 1)
        return;
    const int HD = a.head_dim;
    const float *p = partial + ((int64_t)s * a.n_heads + h) * n_splits * (HD + 2);
    float M = -INFINITY;
    for (int i = 0; i < n_splits; i++)
        if (p[i * (HD + 2) + HD + 1] > 0.0f)
            M = fmaxf(M, p[i * (HD + 2) + HD]);
    float wsum = 0.0f;
    for (int i = 0; i < n_splits; i++) {
        float l = p[i * (HD + 2) + HD + 1];
        if (l > 0.0f)
            wsum += l * expf(p[i * (HD + 2) + HD] - M);
    }
    __nv_bfloat16 *out = (__nv_bfloat16 *)a.out + ((int64_t)q0 * a.n_heads + h) * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < n_splits; i++) {
            float l = p[i * (HD + 2) + HD + 1];
            if (l > 0.0f)
                acc += p[i * (HD + 2) + d] * (l * expf(p[i * (HD + 2) + HD] - M));
        }
        out[d] = __float2bfloat16(acc / wsum);
    }
}

extern "C" int pl_cuk_attention_decode(pl_cuda_stream st, const struct pl_cuk_attn *a,
                                       int n_splits, float *partial)
{
    if (a->n_seqs <= 0)
        return 0;
    const int group = a->n_heads / a->n_kv_heads;
    dim3 grid((unsigned)a->n_kv_heads, (unsigned)a->n_seqs, (unsigned)n_splits);
    if (group <= 1)
        decode_kernel<1><<<grid, DEC_THREADS, 0, st>>>(*a, n_splits, partial);
    else if (group <= 2)
        decode_kernel<2><<<grid, DEC_THREADS, 0, st>>>(*a, n_splits, partial);
    else if (group <= 4)
        decode_kernel<4><<<grid, DEC_THREADS, 0, st>>>(*a, n_splits, partial);
    else if (group <= 8)
        decode_kernel<8><<<grid, DEC_THREADS, 0, st>>>(*a, n_splits, partial);
    else
        decode_kernel<16><<<grid, DEC_THREADS, 0, st>>>(*a, n_splits, partial);
    int err = (int)cudaGetLastError();
    if (err || n_splits == 1)
        return err;
    dim3 rgrid((unsigned)a->n_heads, (unsigned)a->n_seqs);
    decode_reduce_kernel<<<rgrid, 128, 0, st>>>(*a, n_splits, partial);
    return (int)cudaGetLastError();
}

/* ---- prefill ----------------------------------------------------------------------- */

static size_t prefill_smem(int hd)
{
    /* q [BM][hd+1], k [BN][hd+1], v [BN][hd], o [BM][hd+8], s [BM][BN+1] */
    return sizeof(float) * ((size_t)PF_BM * (hd + 1) + (size_t)PF_BN * (hd + 1) +
                            (size_t)PF_BN * hd + (size_t)PF_BM * (hd + 8) +
                            (size_t)PF_BM * (PF_BN + 1));
}

/* Thread layout: 8 threads per query row (16 rows); a thread scores 4 keys
 * (columns lane8, lane8+8, ...) and owns output dims lane8, lane8+8, ... of its
 * row. A row's 8 threads sit in one warp, so the row's softmax statistics
 * travel by shuffles. */
__global__ void __launch_bounds__(PF_THREADS)
prefill_kernel(struct pl_cuk_attn a)
{
    extern __shared__ float sm[];
    const int HD = a.head_dim;
    float *q_s = sm;
    float *k_s = q_s + PF_BM * (HD + 1);
    float *v_s = k_s + PF_BN * (HD + 1);
    float *o_s = v_s + PF_BN * HD;
    float *s_s = o_s + PF_BM * (HD + 8);

    const int qt = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const int q0 = a.cu_seqlens_q[s];
    const int q_len = a.cu_seqlens_q[s + 1] - q0;
    if (q_len <= 1 || qt * PF_BM >= q_len)
        return;
    const int ctx = a.context_lens[s];
    const int G = a.n_heads / a.n_kv_heads, kvh = h / G;
    const int row0 = qt * PF_BM;                  /* first query row of the tile (in the seq) */
    const int n_rows = min(PF_BM, q_len - row0);
    const int p_first = ctx - q_len + row0;       /* position of the tile's first row */
    const int p_last = p_first + n_rows - 1;
    int lo = 0;
    if (a.window > 0 && p_first - a.window + 1 > 0)
        lo = p_first - a.window + 1;
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const __nv_bfloat16 *kc = (const __nv_bfloat16 *)a.k_cache;
    const __nv_bfloat16 *vc = (const __nv_bfloat16 *)a.v_cache;

    const int r = threadIdx.x / 8, l8 = threadIdx.x % 8;
    const int my_pos = p_first + r;
    const bool row_ok = r < n_rows;
    const int LPR = HD / 8; /* 16-byte chunks per row */

    for (int i = threadIdx.x; i < PF_BM * LPR; i += PF_THREADS) {
        const int rr = i / LPR, c8 = i % LPR;
        float f[8];
        if (rr < n_rows) {
            const __nv_bfloat16 *qrow =
                (const __nv_bfloat16 *)a.q + ((int64_t)(q0 + row0 + rr) * a.n_heads + h) * HD;
            bf16x8_to_f32(((const uint4 *)qrow)[c8], f);
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++)
                f[j] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            q_s[rr * (HD + 1) + c8 * 8 + j] = f[j];
            o_s[rr * (HD + 8) + c8 * 8 + j] = 0.0f;
        }
    }
    float m_run = -INFINITY, l_run = 0.0f;

    for (int n0 = lo; n0 <= p_last; n0 += PF_BN) {
        __syncthreads(); /* previous tile's k_s / v_s / s_s are consumed */
        for (int i = threadIdx.x; i < PF_BN * LPR; i += PF_THREADS) {
            const int t = i / LPR, c8 = i % LPR;
            const int c = n0 + t;
            float kf[8], vf[8];
            if (c <= p_last) {
                const int64_t off = kv_offset(table, a.block_size, c, a.n_kv_heads, kvh, HD);
                bf16x8_to_f32(((const uint4 *)(kc + off))[c8], kf);
                bf16x8_to_f32(((const uint4 *)(vc + off))[c8], vf);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++)
                    kf[j] = vf[j] = 0.0f;
            }
#pragma unroll
            for (int j = 0; j < 8; j++) {
                k_s[t * (HD + 1) + c8 * 8 + j] = kf[j];
                v_s[t * HD + c8 * 8 + j] = vf[j];
            }
        }
        __syncthreads();

        float sc[PF_BN / 8];
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < PF_BN / 8; j++) {
            const int col = l8 + 8 * j;
            const int c = n0 + col;
            const bool ok = row_ok && c <= my_pos && (a.window <= 0 || c > my_pos - a.window);
            float d = -INFINITY;
            if (ok) {
                d = 0.0f;
                const float *qr = q_s + r * (HD + 1);
                const float *kr = k_s + col * (HD + 1);
                for (int e = 0; e < HD; e++)
                    d += qr[e] * kr[e];
                d *= a.scale;
            }
            sc[j] = d;
            mx = fmaxf(mx, d);
        }
        for (int o = 4; o > 0; o >>= 1)
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float m_new = fmaxf(m_run, mx);
        /* a row with nothing valid in this tile so far keeps m = -inf: use 0 as the
         * reference so exp() gives 0, never NaN */
        const float m_ref = m_new == -INFINITY ? 0.0f : m_new;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < PF_BN / 8; j++) {
            float p = expf(sc[j] - m_ref);
            s_s[r * (PF_BN + 1) + l8 + 8 * j] = p;
            sum += p;
        }
        for (int o = 4; o > 0; o >>= 1)
            sum += __shfl_xor_sync(0xffffffffu, sum, o);
        const float alpha = expf(m_run - m_ref);
        l_run = l_run * alpha + sum;
        m_run = m_new;
        __syncwarp();
        for (int d = l8; d < HD; d += 8) {
            float acc = o_s[r * (HD + 8) + d] * alpha;
            for (int t = 0; t < PF_BN; t++)
                acc += s_s[r * (PF_BN + 1) + t] * v_s[t * HD + d];
            o_s[r * (HD + 8) + d] = acc;
        }
    }
    __syncwarp();
    if (row_ok) {
        __nv_bfloat16 *orow =
            (__nv_bfloat16 *)a.out + ((int64_t)(q0 + row0 + r) * a.n_heads + h) * HD;
        const float inv = 1.0f / l_run;
        for (int d = l8; d < HD; d += 8)
            orow[d] = __float2bfloat16(o_s[r * (HD + 8) + d] * inv);
    }
}

extern "C" int pl_cuk_attention_prefill(pl_cuda_stream st, const struct pl_cuk_attn *a)
{
    if (a->n_seqs <= 0 || a->max_q_len <= 1)
        return 0;
    dim3 grid((unsigned)((a->max_q_len + PF_BM - 1) / PF_BM), (unsigned)a->n_heads,
              (unsigned)a->n_seqs);
    prefill_kernel<<<grid, PF_THREADS, prefill_smem(a->head_dim), st>>>(*a);
    return (int)cudaGetLastError();
}

extern "C" int pl_cuk_attention_init(void)
{
    return (int)cudaFuncSetAttribute(prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     (int)prefill_smem(MAX_HD));
}
