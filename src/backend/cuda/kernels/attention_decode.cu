/*
 * attention_decode.cu -- paged decode attention over the bf16 or e4m3 KV cache (rules:
 * backend.h).
 *
 * Owns: the decode kernel (rows of sequences with q_len == 1), the reduce
 * kernel of the split path and pl_cuk_attention_supported. The prefill
 * kernel (attention_prefill.cu) is launched for the same batch and returns at
 * once for the sequences this one owns, and the other way round, so a mixed
 * decode + prefill batch is two launches with no host knowledge of
 * per-sequence q_len.
 *
 * Grid: (kv head x head chunk, sequence, split); 4 warps per CTA. A CTA
 * serves GM query heads of one kv head's GQA group (GM = 1, 2, 4 or 8; a
 * group of more than 8 heads takes several chunks, each reading K/V again),
 * so each K row loaded feeds GM dot products from registers.
 * Memory is the bound, so the kernel is built to keep bytes in flight:
 *   - a token row (head_dim bf16) is read by LPT = head_dim/8 lanes (rounded up
 *     to a power of two; the extra lanes idle: head_dim 96 takes 16), 16 bytes
 *     each; a warp covers 32/LPT tokens per 16-byte copy ("slot") and U slots
 *     per round (head_dim 128: 2 tokens per slot, 8 tokens = 4 KB of K+V per
 *     round);
 *   - each warp owns its rounds (round r of the split goes to warp r mod 4)
 *     and streams them with cp.async through its own 3-stage ring in shared
 *     memory, two rounds ahead of the math; a lane reads back only what it
 *     copied, so there is no barrier in the loop; the block-table entries of
 *     a round are read one round before its copies are issued;
 *   - q (pre-multiplied by scale * log2(e), so the softmax works in base 2)
 *     and the GM x 8 accumulators live in registers; each warp runs its own
 *     online softmax;
 *   - at the end the token groups of a warp are summed by xor shuffles and
 *     the 4 warps are merged through shared memory in a fixed order, so the
 *     result does not depend on timing (deterministic).
 * Resources (head_dim 128, GM 4): 128 registers, 48 KB of shared memory,
 * 4 CTAs (16 warps) per SM.
 * An e4m3 cache (KV8, a.kv_fp8): the same lanes and rounds, each lane copying the 8 bytes
 * of its 8 elements (cp.async of 8 bytes into the low half of its 16-byte ring slot) and
 * converting them to fp32 in registers; k_scale is folded into q's prescale and v_scale
 * into the final normalisation, so the scores and outputs are those of the dequantized
 * values e4m3(byte) * scale.
 *
 * Graph safety (CUDA graphs replay one launch with new device arrays): the
 * grid and every by-value parameter may be upper bounds. n_splits is fixed by
 * the caller and each sequence divides its own context_lens[s] among the
 * splits; a split with no tokens writes a neutral partial (out 0, m -inf,
 * l 0) that the reduce ignores; a sequence with context_len <= 0 (a padding
 * row) reads no K/V and no q and writes zeros. a.max_context_len is not read
 * here; a.max_blocks_per_seq is only the block table's row stride.
 * Partials (n_splits > 1): per (sequence, head, split) head_dim floats of
 * normalised output, then m (the running max, base-2 units) and l (the sum).
 */
#include "attention_common.cuh"
#include "bf16_vec.cuh"
#include "fp8_vec.cuh"
#include "pdl.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>

#define DEC_WARPS 4
#define DEC_THREADS (DEC_WARPS * 32)
#define LOG2E 1.4426950408889634f

extern "C" int pl_cuk_attention_supported(int head_dim, int group)
{
    bool ok = head_dim >= 8 && head_dim <= MAX_HD && head_dim % 8 == 0;
    return ok && group >= 1 && group <= 16;
}

/* ---- decode ------------------------------------------------------------------------ */

extern "C" size_t pl_cuk_attention_partial_floats(int n_seqs, int n_heads, int head_dim,
                                                  int n_splits)
{
    /* per (seq, head, split): head_dim outputs + m + l */
    return (size_t)n_seqs * (size_t)n_heads * (size_t)n_splits * (size_t)(head_dim + 2);
}

/* 16 bytes global -> shared, bypassing L1; zero-filled when !ok (nothing read). */
static __device__ __forceinline__ void cp_async16(uint4 *dst, const void *src, bool ok)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

/* 8 bytes global -> shared (through L1: .cg takes 16-byte copies only); zero-filled when
 * !ok. */
static __device__ __forceinline__ void cp_async8(void *dst, const void *src, bool ok)
{
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;" ::"r"(d), "l"(src),
                 "r"(ok ? 8 : 0)
                 : "memory");
}

static __device__ __forceinline__ void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;" ::: "memory");
}

template <int N> static __device__ __forceinline__ void cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* 2^x for x <= 0 (one MUFU op; results below 2^-126 flush to 0, harmless here). */
static __device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

/*
 * GM: query heads per CTA (template, registers); HDT: head_dim when
 * specialised, 0 = read a.head_dim at run time; U: slots per warp round;
 * STAGES: depth of each warp's shared-memory ring; MINB: CTAs per SM the
 * register budget is cut for; KV8: the caches hold e4m3 bytes.
 */
template <int GM, int HDT, int U, int MINB, int STAGES, bool KV8>
__global__ void __launch_bounds__(DEC_THREADS, MINB)
decode_kernel(struct pl_cuk_attn a, int n_splits, int n_chunks, float *partial)
{
    constexpr int ES = KV8 ? 1 : 2; /* bytes per cache element */
    pdl_enter();
    constexpr int HDS = HDT ? HDT : MAX_HD; /* shared-memory row size */
    constexpr int RING_U4 = DEC_WARPS * STAGES * U * 2 * 32;
    constexpr int MERGE_F = DEC_WARPS * GM * (HDS + 2);
    constexpr int SMEM_U4 = RING_U4 * 4 > MERGE_F ? RING_U4 : (MERGE_F + 3) / 4;
    /* the rings during the loop, then the warps' (acc, m, l) for the merge */
    __shared__ uint4 smem_u4[SMEM_U4];
    float(*acc_s)[GM][HDS] = (float(*)[GM][HDS])smem_u4;
    float(*m_s)[GM] = (float(*)[GM])((float *)smem_u4 + DEC_WARPS * GM * HDS);
    float(*l_s)[GM] = m_s + DEC_WARPS;

    const int kvh = blockIdx.x / n_chunks, chunk = blockIdx.x % n_chunks;
    const int s = blockIdx.y, split = blockIdx.z;
    const int q0 = a.cu_seqlens_q[s];
    if (a.cu_seqlens_q[s + 1] - q0 != 1)
        return; /* a prefill sequence (or none): the prefill kernel owns it */
    const int HD = HDT ? HDT : a.head_dim;
    /* lanes per token row: HD / 8 rounded up to a power of two; the lanes past HD / 8
     * (head_dim 96, 40, ...) hold zeros and read nothing */
    const int LPT = HDT ? HDT / 8 : (HD <= 64 ? (HD <= 32 ? (HD <= 16 ? (HD <= 8 ? 1 : 2) : 4) : 8)
                                                : (HD <= 128 ? 16 : 32));
    const int TPS = 32 / LPT; /* tokens per slot (one load instruction of the warp) */
    const int TPR = U * TPS;  /* tokens per warp round */
    const int G = a.n_heads / a.n_kv_heads;
    const int h0 = kvh * G + chunk * GM; /* first query head of this CTA */
    const int gn = min(GM, G - chunk * GM);

    const int ctx = max(a.context_lens[s], 0);
    const int lo = a.window > 0 ? max(ctx - a.window, 0) : 0;
    const int span = ctx - lo;
    const int per_split = ((span + n_splits - 1) / n_splits + TPR - 1) / TPR * TPR;
    const int c_begin = lo + split * per_split;
    const int c_end = min(ctx, c_begin + per_split);

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int tg = lane / LPT, li = lane % LPT;
    const bool lane_ok = li * 8 < HD;
    const float cap = a.softcap;

    float acc[GM][8], m[GM], l[GM];
#pragma unroll
    for (int g = 0; g < GM; g++) {
        m[g] = -INFINITY;
        l[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < 8; j++)
            acc[g][j] = 0.0f;
    }

    if (c_begin < c_end) {
        float q[GM][8];
        const __nv_bfloat16 *qp =
            (const __nv_bfloat16 *)a.q + ((int64_t)q0 * a.n_heads + h0) * HD + li * 8;
        /* with soft-capping the scores are capped in natural units, then moved to base 2 */
        const float qscale = (cap > 0.0f ? a.scale : a.scale * LOG2E) * (KV8 ? a.k_scale : 1.0f);
#pragma unroll
        for (int g = 0; g < GM; g++) {
            if (g < gn && lane_ok) {
                bf16x8_to_f32(*(const uint4 *)(qp + (int64_t)g * HD), q[g]);
#pragma unroll
                for (int j = 0; j < 8; j++)
                    q[g][j] *= qscale;
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++)
                    q[g][j] = 0.0f;
            }
        }

        const int bs = a.block_size;
        const bool bs_pow2 = (bs & (bs - 1)) == 0;
        const int bs_shift = __ffs(bs) - 1;
        const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
        const int64_t row = (int64_t)a.n_kv_heads * HD; /* elements per cache slot */
        /* this lane's 8 elements of kv head kvh in slot 0 (bytes) */
        const char *kb = (const char *)a.k_cache + ((int64_t)kvh * HD + li * 8) * ES;
        const char *vb = (const char *)a.v_cache + ((int64_t)kvh * HD + li * 8) * ES;
        const int stride = DEC_WARPS * TPR;

        int blk[U];
        int c0 = c_begin + warp * TPR;
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = c0 + u * TPS + tg;
            blk[u] = c < c_end ? table[bs_pow2 ? c >> bs_shift : c / bs] : 0;
        }
        /* Each warp streams its rounds through its own STAGES-deep ring
         * of shared memory with cp.async, STAGES - 1 rounds ahead of the math.
         * A lane reads back only the 16-byte slots it copied itself, so
         * cp.async.wait_group orders everything: no barrier in the loop. */
        uint4 *ring = smem_u4 + warp * (STAGES * U * 2 * 32);
        const int n_rounds = c0 < c_end ? (c_end - c0 + stride - 1) / stride : 0;
        auto issue = [&](int r) {
            const int cr = c0 + r * stride;
            uint4 *dst = ring + (r % STAGES) * (U * 2 * 32) + lane;
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int c = cr + u * TPS + tg;
                const bool ok = c < c_end && lane_ok;
                const int off = bs_pow2 ? c & (bs - 1) : c % bs;
                const int64_t at = ok ? ((int64_t)blk[u] * bs + off) * row * ES : 0;
                if (KV8) {
                    cp_async8(dst + (u * 2) * 32, kb + at, ok);
                    cp_async8(dst + (u * 2 + 1) * 32, vb + at, ok);
                } else {
                    cp_async16(dst + (u * 2) * 32, kb + at, ok);
                    cp_async16(dst + (u * 2 + 1) * 32, vb + at, ok);
                }
            }
            /* the block ids of the round after, while these copies fly */
#pragma unroll
            for (int u = 0; u < U; u++) {
                const int c = cr + stride + u * TPS + tg;
                blk[u] = c < c_end ? table[bs_pow2 ? c >> bs_shift : c / bs] : 0;
            }
        };
#pragma unroll
        for (int r = 0; r < STAGES - 1; r++) {
            if (r < n_rounds)
                issue(r);
            cp_async_commit();
        }
        for (int r = 0; r < n_rounds; r++) {
            /* one commit group per round (empty ones too), so waiting until at
             * most STAGES - 1 are pending means round r has landed */
            if (r + STAGES - 1 < n_rounds)
                issue(r + STAGES - 1);
            cp_async_commit();
            cp_async_wait<STAGES - 1>();
            uint4 kr[U], vr[U];
            const uint4 *src = ring + (r % STAGES) * (U * 2 * 32) + lane;
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (KV8) { /* the low 8 bytes of the slot: what cp_async8 wrote */
                    const uint2 k2 = *(const uint2 *)&src[(u * 2) * 32];
                    const uint2 v2 = *(const uint2 *)&src[(u * 2 + 1) * 32];
                    kr[u] = make_uint4(k2.x, k2.y, 0u, 0u);
                    vr[u] = make_uint4(v2.x, v2.y, 0u, 0u);
                } else {
                    kr[u] = src[(u * 2) * 32];
                    vr[u] = src[(u * 2 + 1) * 32];
                }
            }
            const int cr = c0 + r * stride;

            float sc[U][GM];
#pragma unroll
            for (int u = 0; u < U; u++) {
                float k[8];
                if (KV8)
                    f8x8_to_f32(make_uint2(kr[u].x, kr[u].y), k);
                else
                    bf16x8_to_f32(kr[u], k);
#pragma unroll
                for (int g = 0; g < GM; g++) {
                    float d = 0.0f;
#pragma unroll
                    for (int j = 0; j < 8; j++)
                        d = fmaf(q[g][j], k[j], d);
                    sc[u][g] = d;
                }
            }
#pragma unroll
            for (int o = LPT / 2; o > 0; o >>= 1)
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int g = 0; g < GM; g++)
                        sc[u][g] += __shfl_xor_sync(0xffffffffu, sc[u][g], o);
            if (cap > 0.0f)
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int g = 0; g < GM; g++)
                        sc[u][g] = cap * tanhf(sc[u][g] / cap) * LOG2E;
#pragma unroll
            for (int u = 0; u < U; u++)
                if (cr + u * TPS + tg >= c_end)
#pragma unroll
                    for (int g = 0; g < GM; g++)
                        sc[u][g] = -INFINITY;

            /* online softmax: the warp's max over the round (finite: token c0 is valid) */
#pragma unroll
            for (int g = 0; g < GM; g++) {
                float mx = sc[0][g];
#pragma unroll
                for (int u = 1; u < U; u++)
                    mx = fmaxf(mx, sc[u][g]);
#pragma unroll
                for (int o = LPT; o < 32; o <<= 1)
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
                const float m_new = fmaxf(m[g], mx);
                const float alpha = fast_exp2(m[g] - m_new); /* 0 on the first round */
                m[g] = m_new;
                l[g] *= alpha;
#pragma unroll
                for (int j = 0; j < 8; j++)
                    acc[g][j] *= alpha;
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                float v[8];
                if (KV8)
                    f8x8_to_f32(make_uint2(vr[u].x, vr[u].y), v);
                else
                    bf16x8_to_f32(vr[u], v);
#pragma unroll
                for (int g = 0; g < GM; g++) {
                    const float p = fast_exp2(sc[u][g] - m[g]);
                    l[g] += p;
#pragma unroll
                    for (int j = 0; j < 8; j++)
                        acc[g][j] = fmaf(p, v[j], acc[g][j]);
                }
            }
        }
        /* sum the warp's token groups (they share m) */
#pragma unroll
        for (int o = LPT; o < 32; o <<= 1)
#pragma unroll
            for (int g = 0; g < GM; g++) {
                l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
                for (int j = 0; j < 8; j++)
                    acc[g][j] += __shfl_xor_sync(0xffffffffu, acc[g][j], o);
            }
    }

    /* merge the warps in a fixed order (after every warp is done with its ring) */
    cp_async_wait<0>();
    __syncthreads();
    if (tg == 0 && lane_ok) {
#pragma unroll
        for (int g = 0; g < GM; g++)
#pragma unroll
            for (int j = 0; j < 8; j++)
                acc_s[warp][g][li * 8 + j] = acc[g][j];
    }
    if (lane == 0) {
#pragma unroll
        for (int g = 0; g < GM; g++) {
            m_s[warp][g] = m[g];
            l_s[warp][g] = l[g];
        }
    }
    __syncthreads();
    const int64_t row0 = (int64_t)q0 * a.n_heads + h0; /* output row of head h0 */
    for (int i = threadIdx.x; i < gn * HD; i += DEC_THREADS) {
        const int g = i / HD, d = i % HD;
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++)
            if (l_s[w][g] > 0.0f)
                M = fmaxf(M, m_s[w][g]);
        float L = 0.0f, O = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) {
            if (l_s[w][g] > 0.0f) {
                const float wt = exp2f(m_s[w][g] - M);
                L += l_s[w][g] * wt;
                O += acc_s[w][g][d] * wt;
            }
        }
        const float o = L > 0.0f ? O / L * (KV8 ? a.v_scale : 1.0f) : 0.0f;
        if (n_splits == 1) {
            ((__nv_bfloat16 *)a.out)[(row0 + g) * HD + d] = __float2bfloat16(o);
        } else {
            float *p = partial + (((int64_t)s * a.n_heads + h0 + g) * n_splits + split) * (HD + 2);
            p[d] = o;
            if (d == 0) {
                p[HD] = L > 0.0f ? M : -INFINITY;
                p[HD + 1] = L;
            }
        }
    }
}

/* Combines the splits of one (sequence, head): weights l_i * 2^(m_i - M). */
__global__ void decode_reduce_kernel(struct pl_cuk_attn a, int n_splits, const float *partial)
{
    pdl_enter();
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
        const float l = p[i * (HD + 2) + HD + 1];
        if (l > 0.0f)
            wsum += l * exp2f(p[i * (HD + 2) + HD] - M);
    }
    __nv_bfloat16 *out = (__nv_bfloat16 *)a.out + ((int64_t)q0 * a.n_heads + h) * HD;
    for (int d = threadIdx.x; d < HD; d += blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < n_splits; i++) {
            const float l = p[i * (HD + 2) + HD + 1];
            if (l > 0.0f)
                acc += p[i * (HD + 2) + d] * (l * exp2f(p[i * (HD + 2) + HD] - M));
        }
        /* wsum == 0: a padding sequence (context 0), every split empty */
        out[d] = __float2bfloat16(wsum > 0.0f ? acc / wsum : 0.0f);
    }
}

template <int GM, int HDT>
static void launch_decode(dim3 grid, pl_cuda_stream st, const struct pl_cuk_attn *a,
                          int n_splits, int n_chunks, float *partial)
{
    /* fewer slots for 8 heads: q, the accumulators and the scores share the registers */
    constexpr int U = GM >= 8 ? 2 : 4;
    constexpr int MINB = GM >= 8 ? 1 : HDT ? 4 : 3;
    if (a->kv_fp8)
        pdl_launch(decode_kernel<GM, HDT, U, MINB, 3, true>, grid, dim3(DEC_THREADS), 0, st, *a,
                   n_splits, n_chunks, partial);
    else
        pdl_launch(decode_kernel<GM, HDT, U, MINB, 3, false>, grid, dim3(DEC_THREADS), 0, st, *a,
                   n_splits, n_chunks, partial);
}

template <int GM>
static void launch_hd(dim3 grid, pl_cuda_stream st, const struct pl_cuk_attn *a, int n_splits,
                      int n_chunks, float *partial)
{
    if (a->head_dim == 128)
        launch_decode<GM, 128>(grid, st, a, n_splits, n_chunks, partial);
    else if (a->head_dim == 64)
        launch_decode<GM, 64>(grid, st, a, n_splits, n_chunks, partial);
    else
        launch_decode<GM, 0>(grid, st, a, n_splits, n_chunks, partial);
}

extern "C" int pl_cuk_attention_decode(pl_cuda_stream st, const struct pl_cuk_attn *a,
                                       int n_splits, float *partial)
{
    if (a->n_seqs <= 0)
        return 0;
    const int group = a->n_heads / a->n_kv_heads;
    const int gm = group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8;
    const int n_chunks = (group + gm - 1) / gm;
    dim3 grid((unsigned)(a->n_kv_heads * n_chunks), (unsigned)a->n_seqs, (unsigned)n_splits);
    if (gm == 1)
        launch_hd<1>(grid, st, a, n_splits, n_chunks, partial);
    else if (gm == 2)
        launch_hd<2>(grid, st, a, n_splits, n_chunks, partial);
    else if (gm == 4)
        launch_hd<4>(grid, st, a, n_splits, n_chunks, partial);
    else
        launch_hd<8>(grid, st, a, n_splits, n_chunks, partial);
    int err = (int)cudaGetLastError();
    if (err || n_splits == 1)
        return err;
    dim3 rgrid((unsigned)a->n_heads, (unsigned)a->n_seqs);
    pdl_launch(decode_reduce_kernel, rgrid, dim3(128), 0, st, *a, n_splits, partial);
    return (int)cudaGetLastError();
}
