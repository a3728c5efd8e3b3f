/*
 * attention_f32.cu -- paged attention over an fp32 KV cache: the CUDA backend's float32
 * mode (rules: backend.h; the same masks, window and soft-capping as the bf16 kernels).
 *
 * Owns: one plain kernel for decode and prefill rows alike. The float32 mode exists to
 * compare pagellm with transformers token for token, so this kernel is written for
 * clarity and fp32 exactness, not speed: one block per (query row, head); the context in
 * tiles of ATT_T tokens, one score per thread; an online softmax in natural units; the
 * output accumulated in shared memory in a fixed order (deterministic).
 */
#include "attention_common.cuh"

#include <cuda_runtime.h>
#include <math.h>

#define ATT_T 128

static __device__ float block_reduce(float v, float *red, bool is_max)
{
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, w) : v + w;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); /* red is free again */
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float t = is_max ? -INFINITY : 0.0f;
    for (int w = 0; w < ATT_T / 32; w++)
        t = is_max ? fmaxf(t, red[w]) : t + red[w];
    return t;
}

__global__ void __launch_bounds__(ATT_T) attention_f32_kernel(struct pl_cuk_attn a)
{
    __shared__ float q_s[MAX_HD], o_s[MAX_HD], p_s[ATT_T], red[ATT_T / 32];
    const int qi = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const int q0 = a.cu_seqlens_q[s], q_len = a.cu_seqlens_q[s + 1] - q0;
    if (qi >= q_len)
        return;
    const int HD = a.head_dim, tid = threadIdx.x;
    float *out = (float *)a.out + ((int64_t)(q0 + qi) * a.n_heads + h) * HD;
    const int ctx = a.context_lens[s];
    if (ctx <= 0) { /* a padding row: zeros, nothing read */
        for (int d = tid; d < HD; d += ATT_T)
            out[d] = 0.0f;
        return;
    }
    const int pos = ctx - q_len + qi; /* this row's position: it sees tokens [lo, pos] */
    const int lo = a.window > 0 && pos - a.window + 1 > 0 ? pos - a.window + 1 : 0;
    const int kvh = h / (a.n_heads / a.n_kv_heads);
    const float *qr = (const float *)a.q + ((int64_t)(q0 + qi) * a.n_heads + h) * HD;
    for (int d = tid; d < HD; d += ATT_T) {
        q_s[d] = qr[d];
        o_s[d] = 0.0f;
    }
    __syncthreads();
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const float *kc = (const float *)a.k_cache, *vc = (const float *)a.v_cache;
    float m = -INFINITY, l = 0.0f;
    for (int c0 = lo; c0 <= pos; c0 += ATT_T) {
        const int c = c0 + tid;
        float sc = -INFINITY;
        if (c <= pos) {
            const float *kr = kc + kv_offset(table, a.block_size, c, a.n_kv_heads, kvh, HD);
            float d = 0.0f;
            for (int e = 0; e < HD; e++)
                d += q_s[e] * kr[e];
            d *= a.scale;
            if (a.softcap > 0.0f)
                d = a.softcap * tanhf(d / a.softcap);
            sc = d;
        }
        const float m_new = fmaxf(m, block_reduce(sc, red, true)); /* finite: c0 <= pos */
        const float p = c <= pos ? expf(sc - m_new) : 0.0f;
        const float alpha = expf(m - m_new); /* 0 on the first tile */
        const float sum = block_reduce(p, red, false);
        p_s[tid] = p;
        __syncthreads();
        l = l * alpha + sum;
        m = m_new;
        const int n_t = min(ATT_T, pos - c0 + 1);
        for (int d = tid; d < HD; d += ATT_T) {
            float acc = o_s[d] * alpha;
            for (int j = 0; j < n_t; j++)
                acc += p_s[j] *
                       vc[kv_offset(table, a.block_size, c0 + j, a.n_kv_heads, kvh, HD) + d];
            o_s[d] = acc;
        }
        __syncthreads(); /* p_s and o_s are read before the next tile writes them */
    }
    for (int d = tid; d < HD; d += ATT_T)
        out[d] = o_s[d] / l;
}

extern "C" int pl_cuk_attention_f32(pl_cuda_stream st, const struct pl_cuk_attn *a)
{
    if (a->n_seqs <= 0 || a->max_q_len <= 0)
        return 0;
    dim3 grid((unsigned)a->max_q_len, (unsigned)a->n_heads, (unsigned)a->n_seqs);
    attention_f32_kernel<<<grid, ATT_T, 0, st>>>(*a);
    return (int)cudaGetLastError();
}
