/*
 * attention_prefill.cu -- paged prefill / chunked-prefill attention (rules: backend.h).
 *
 * Owns: the prefill kernel (rows of sequences with q_len > 1) and
 * pl_cuk_attention_init. Launched for every sequence of a batch; returns at
 * once for decode sequences (attention_decode.cu owns those).
 *
 * A tiled flash-attention kernel on CUDA cores: one CTA per (16 query rows,
 * head, sequence), K/V tiles of 32 tokens staged in shared memory as fp32,
 * online softmax per row, causal and sliding-window masks from the rows'
 * positions, earlier context read from the paged cache.
 */
#include "attention_common.cuh"
#include "bf16_vec.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#define PF_THREADS 128
#define PF_BM 16
#define PF_BN 32

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
