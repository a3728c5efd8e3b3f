/*
 * attention_decode.cu -- paged decode attention over the bf16 KV cache (rules: backend.h).
 *
 * Owns: the decode kernel (rows of sequences with q_len == 1), the reduce
 * kernel of the split path and pl_cuk_attention_supported. The prefill
 * kernel (attention_prefill.cu) is launched for the same batch and returns at
 * once for the sequences this one owns, and the other way round, so a mixed
 * decode + prefill batch is two launches with no host knowledge of
 * per-sequence q_len.
 *
 * One CTA per (kv head, sequence, split): the GQA group of G query heads
 * shares every K/V load. Threads are laid out as token groups of
 * LPT = head_dim/8 lanes; a lane loads 16 bytes (8 bf16) of a K or V row.
 * Context is walked in tiles of DEC_TILE tokens: scores -> shared memory,
 * online softmax in fp32 per query head (running max m, sum l), then P.V
 * accumulated in registers (G x 8 floats per thread). The token groups'
 * partial outputs are summed in a fixed order at the end (deterministic).
 * For few sequences and long contexts the context is split
 * (flash-decoding): each split writes its normalised output with (m, l), and
 * decode_reduce combines them.
 */
#include "attention_common.cuh"
#include "bf16_vec.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#define DEC_THREADS 128
#define DEC_TILE 64

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
