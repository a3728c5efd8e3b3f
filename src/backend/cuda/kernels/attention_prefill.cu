/*
 * attention_prefill.cu -- paged prefill / chunked-prefill attention (rules: backend.h).
 *
 * Owns: the prefill kernels (rows of sequences with q_len > 1),
 * pl_cuk_attention_prefill, pl_cuk_attention_prefill_force and
 * pl_cuk_attention_init. Launched for every batch; each CTA returns at once
 * for decode sequences (q_len == 1, attention_decode.cu owns those).
 *
 * Two kernels:
 *
 * - tc_prefill_kernel<HD, NW, MT> (head_dim 64 and 128): flash-attention-2 on
 *   the tensor cores. One CTA per (query head, sequence, tile of BM = 16 * MT *
 *   NW query rows); warp w owns rows [16 MT w, 16 MT (w + 1)) of the tile. Q is
 *   staged once in shared memory (and, with MT == 1, kept in registers as mma
 *   A fragments); K/V tiles of 64 context tokens are gathered through the
 *   block table by cp.async into a two-stage shared-memory ring (the copy of
 *   tile t+1 runs while tile t is computed; one barrier per tile). S = Q K^T and O += P V are
 *   mma.sync.m16n8k16 bf16 with fp32 accumulators; K fragments come from
 *   ldmatrix, V fragments from ldmatrix.trans, P goes from the S accumulators
 *   to A fragments without touching shared memory. The online softmax runs in
 *   registers in the log2 domain (scores prescaled by scale * log2(e), exp2).
 *   Invariants: shared rows are padded to HD + 8 elements (ldmatrix rows of one
 *   8x8 matrix fall in distinct banks); context tokens past the tile's last
 *   position are zero-filled, never read; tiles no row of the CTA can see are
 *   not loaded, tiles no row of a warp can see are skipped by that warp; a row
 *   with nothing visible yet keeps m = -inf and uses 0 as its exp reference, so
 *   no NaN arises. Query tiles are walked last-first (blockIdx.z reversed) so
 *   the longest causal tiles start in the first wave. Variants (auto_variant
 *   picks; pl_cuk_attention_prefill_force overrides): 64 x 16 (NW 4, MT 1),
 *   128 x 16 (NW 8, MT 1), 128 x 32 (NW 4, MT 2) as rows x rows-per-warp.
 *
 * - cc_prefill_kernel (every other power-of-two head_dim, 8..256): tiled flash
 *   attention on CUDA cores: one CTA per (16 query rows, head, sequence), K/V
 *   tiles of 32 tokens staged in shared memory as fp32, online softmax per row.
 *
 * Both compute masks from positions: row j of a sequence sits at position
 * p = context_len - q_len + j and sees c <= p, and c > p - window when
 * window > 0; GQA maps query head h to kv head h / (n_heads / n_kv_heads).
 *
 * An e4m3 KV cache (a.kv_fp8): K/V are converted when they are staged in shared memory.
 * The tensor-core kernel (KV8) loads each thread's 8-byte pieces of a tile into registers
 * (a batch of loads in flight, then the conversions), converts them exactly to bf16 and
 * stores them where cp.async would have put bf16 rows, so ldmatrix and the mma see the
 * same layout; k_scale goes into the score prescale, v_scale into the final
 * normalisation. The CUDA-core kernel converts to fp32 and scales while staging.
 */
#include "attention_common.cuh"
#include "bf16_vec.cuh"
#include "fp8_vec.cuh"
#include "mma.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

/* ---- CUDA-core kernel (fallback head dims) ------------------------------------------ */

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
cc_prefill_kernel(struct pl_cuk_attn a)
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
    const uint8_t *kc8 = (const uint8_t *)a.k_cache, *vc8 = (const uint8_t *)a.v_cache;
    const bool kv8 = a.kv_fp8 != 0;

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
            if (c <= p_last && kv8) {
                const int64_t off = kv_offset(table, a.block_size, c, a.n_kv_heads, kvh, HD);
                f8x8_to_f32(((const uint2 *)(kc8 + off))[c8], kf);
                f8x8_to_f32(((const uint2 *)(vc8 + off))[c8], vf);
#pragma unroll
                for (int j = 0; j < 8; j++) {
                    kf[j] *= a.k_scale;
                    vf[j] *= a.v_scale;
                }
            } else if (c <= p_last) {
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
                if (a.softcap > 0.0f)
                    d = a.softcap * tanhf(d / a.softcap);
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

/* ---- tensor-core kernel (head_dim 64 and 128) ---------------------------------------- */

#define TC_BN 64 /* context tokens per K/V tile */

static __device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* Rows of a CTA's query tile: NW warps of MT m16 tiles each. */
template <int HD, int NW, int MT> static constexpr size_t tc_smem(void)
{
    /* q [BM][HD+8], k [2][BN][HD+8], v [2][BN][HD+8], bf16 */
    return sizeof(__nv_bfloat16) * (size_t)(HD + 8) * (size_t)(16 * MT * NW + 4 * TC_BN);
}

/*
 * (Fragment layouts: mma.cuh.)
 *
 * A warp owns MT m16 tiles (16 * MT rows). With MT == 1 its Q fragments stay in
 * registers for the whole kernel; with MT == 2 every K/V fragment read from
 * shared memory feeds two mma (half the shared-memory traffic per FLOP) and Q
 * fragments are re-read per tile to leave registers for the second tile's
 * accumulators.
 */
template <int HD, int NW, int MT, bool KV8>
__global__ void __launch_bounds__(NW * 32, NW == 4 ? 2 : 1)
tc_prefill_kernel(struct pl_cuk_attn a)
{
    constexpr int WR = 16 * MT, BM = WR * NW, BN = TC_BN, LD = HD + 8, CH = HD / 8;
    constexpr int T = NW * 32, STAGE_BYTES = BN * LD * 2;
    constexpr bool QREG = MT == 1;
    static_assert(T % CH == 0 && (BN * CH) % T == 0 && (BM * CH) % T == 0, "copy layout");
    extern __shared__ __align__(16) unsigned char tc_sm[];
    const uint32_t q_base = smem_addr(tc_sm);
    const uint32_t k_base = q_base + BM * LD * 2;
    const uint32_t v_base = k_base + 2 * STAGE_BYTES;

    const int h = blockIdx.x, s = blockIdx.y;
    const int qt = (int)gridDim.z - 1 - (int)blockIdx.z;
    const int q0 = a.cu_seqlens_q[s];
    const int q_len = a.cu_seqlens_q[s + 1] - q0;
    const int row0 = qt * BM;
    if (q_len <= 1 || row0 >= q_len)
        return;
    const int ctx = a.context_lens[s];
    const int W = a.window;
    const int kvh = h / (a.n_heads / a.n_kv_heads);
    const int n_rows = min(BM, q_len - row0);
    const int p_first = ctx - q_len + row0; /* position of the tile's first row */
    const int p_last = p_first + n_rows - 1;
    const int lo = (W > 0 && p_first - W + 1 > 0) ? p_first - W + 1 : 0;
    const int t_begin = lo / BN;
    const int t_end = p_last >= 0 ? p_last / BN : 0;
    const int32_t *table = a.block_tables + (int64_t)s * a.max_blocks_per_seq;
    const __nv_bfloat16 *kc = (const __nv_bfloat16 *)a.k_cache;
    const __nv_bfloat16 *vc = (const __nv_bfloat16 *)a.v_cache;
    const uint8_t *kc8 = (const uint8_t *)a.k_cache, *vc8 = (const uint8_t *)a.v_cache;
    const int tid = threadIdx.x;

    /* Q tile (rows past q_len zero-filled) */
#pragma unroll
    for (int i = tid; i < BM * CH; i += T) {
        const int r = i / CH, c8 = i % CH;
        const bool ok = r < n_rows;
        const __nv_bfloat16 *src = (const __nv_bfloat16 *)a.q +
                                   ((int64_t)(q0 + row0 + (ok ? r : 0)) * a.n_heads + h) * HD +
                                   c8 * 8;
        cp_async16(q_base + (r * LD + c8 * 8) * 2, src, ok);
    }
    /* K/V tile `tile` into ring stage `stage`: a thread copies the same 16-byte
     * column of rows r0, r0 + T/CH, ... (one table lookup per row) */
    auto load_kv = [&](int tile, int stage) {
        const int n0 = tile * BN;
        if constexpr (KV8) {
            /* e4m3: LB pieces of K and V loaded (in flight together), then converted to
             * bf16 and stored; a piece past p_last is stored as zeros */
            constexpr int PER = BN * CH / T, LB = PER < 4 ? PER : 4;
            static_assert(PER % LB == 0, "load batches");
            unsigned char *smem = tc_sm;
#pragma unroll
            for (int j0 = 0; j0 < PER; j0 += LB) {
                uint2 kr[LB], vr[LB];
#pragma unroll
                for (int j = 0; j < LB; j++) {
                    const int i = tid + (j0 + j) * T, r = i / CH, c8 = i % CH;
                    const int c = n0 + r;
                    kr[j] = vr[j] = make_uint2(0u, 0u);
                    if (c <= p_last) {
                        const int64_t off =
                            kv_offset(table, a.block_size, c, a.n_kv_heads, kvh, HD) + c8 * 8;
                        kr[j] = __ldg((const uint2 *)(kc8 + off));
                        vr[j] = __ldg((const uint2 *)(vc8 + off));
                    }
                }
#pragma unroll
                for (int j = 0; j < LB; j++) {
                    const int i = tid + (j0 + j) * T, r = i / CH, c8 = i % CH;
                    const int dst = stage * STAGE_BYTES + (r * LD + c8 * 8) * 2;
                    *(uint4 *)(smem + BM * LD * 2 + dst) = f8x8_to_bf16x8(kr[j]);
                    *(uint4 *)(smem + BM * LD * 2 + 2 * STAGE_BYTES + dst) =
                        f8x8_to_bf16x8(vr[j]);
                }
            }
        } else {
#pragma unroll
            for (int i = tid; i < BN * CH; i += T) {
                const int r = i / CH, c8 = i % CH;
                const int c = n0 + r;
                const bool ok = c <= p_last;
                const int64_t off =
                    ok ? kv_offset(table, a.block_size, c, a.n_kv_heads, kvh, HD) + c8 * 8 : 0;
                const uint32_t dst = (uint32_t)(stage * STAGE_BYTES + (r * LD + c8 * 8) * 2);
                cp_async16(k_base + dst, kc + off, ok);
                cp_async16(v_base + dst, vc + off, ok);
            }
        }
    };

    load_kv(t_begin, 0);
    cp_async_commit();

    const int warp = tid / 32, lane = tid % 32;
    const int g = lane / 4, tq = lane % 4;
    const int wrow0 = warp * WR;
    const bool warp_live = wrow0 < n_rows;
    const int pw_first = p_first + wrow0, pw_last = pw_first + WR - 1;
    const float sl2 = a.scale * 1.4426950408889634f * (KV8 ? a.k_scale : 1.0f);
    /* A-fragment address of this lane in Q (row wrow0 + lane % 16, k-half lane / 16) */
    const uint32_t q_lane = q_base + ((wrow0 + (lane & 15)) * LD + (lane >> 4) * 8) * 2;

    uint32_t qf[QREG ? HD / 16 : 1][4];
    float o[MT][HD / 8][4];
    float m[MT][2], l[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        m[mt][0] = m[mt][1] = -INFINITY;
        l[mt][0] = l[mt][1] = 0.0f;
#pragma unroll
        for (int j = 0; j < HD / 8; j++)
            o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
    }

    for (int t = t_begin; t <= t_end; t++) {
        cp_async_wait_all();
        /* tile t (and Q) visible to all; every warp is done with tile t - 1, whose
         * stage the copy below overwrites */
        __syncthreads();
        if (QREG && t == t_begin) {
#pragma unroll
            for (int kk = 0; kk < (QREG ? HD / 16 : 1); kk++)
                ldmatrix_x4(qf[kk], q_lane + kk * 32);
        }
        if (t < t_end) {
            load_kv(t + 1, (t + 1 - t_begin) & 1);
            cp_async_commit();
        }
        const int n0 = t * BN;
        if (!warp_live || n0 > pw_last || (W > 0 && n0 + BN - 1 <= pw_first - W))
            continue;
        const uint32_t st_off = (uint32_t)(((t - t_begin) & 1) * STAGE_BYTES);

        /* S = Q K^T: WR rows x 64 tokens per warp; one K fragment feeds MT mma */
        float sc[MT][BN / 8][4];
#pragma unroll
        for (int mt = 0; mt < MT; mt++)
#pragma unroll
            for (int j = 0; j < BN / 8; j++)
                sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) {
            uint32_t qa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                if (QREG) {
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        qa[mt][i] = qf[QREG ? kk : 0][i];
                } else {
                    ldmatrix_x4(qa[mt], q_lane + (mt * 16 * LD + kk * 16) * 2);
                }
            }
#pragma unroll
            for (int np = 0; np < BN / 16; np++) {
                uint32_t b[4];
                const int n = np * 16 + (lane >> 4) * 8 + (lane & 7);
                const int k = kk * 16 + ((lane >> 3) & 1) * 8;
                ldmatrix_x4(b, k_base + st_off + (n * LD + k) * 2);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(sc[mt][2 * np], qa[mt], b[0], b[1]);
                    mma_bf16(sc[mt][2 * np + 1], qa[mt], b[2], b[3]);
                }
            }
        }
        const bool need_mask = n0 + BN - 1 > pw_first || (W > 0 && n0 <= pw_last - W);
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            const int pr0 = pw_first + mt * 16 + g, pr1 = pr0 + 8; /* this thread's rows */
            if (need_mask) {
#pragma unroll
                for (int j = 0; j < BN / 8; j++) {
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        const int c = n0 + j * 8 + 2 * tq + (e & 1);
                        const int p = e < 2 ? pr0 : pr1;
                        if (c > p || (W > 0 && c <= p - W))
                            sc[mt][j][e] = -INFINITY;
                    }
                }
            }
            /* online softmax in the log2 domain: a row's 64 scores live in the 4
             * lanes of its quad; p = 2^(s * scale * log2e - m) */
            float mx0 = -INFINITY, mx1 = -INFINITY;
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                mx0 = fmaxf(mx0, fmaxf(sc[mt][j][0], sc[mt][j][1]));
                mx1 = fmaxf(mx1, fmaxf(sc[mt][j][2], sc[mt][j][3]));
            }
#pragma unroll
            for (int off = 1; off <= 2; off <<= 1) {
                mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, off));
                mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, off));
            }
            const float mn0 = fmaxf(m[mt][0], mx0 * sl2), mn1 = fmaxf(m[mt][1], mx1 * sl2);
            const float ref0 = mn0 == -INFINITY ? 0.0f : mn0;
            const float ref1 = mn1 == -INFINITY ? 0.0f : mn1;
            const float al0 = fast_exp2(m[mt][0] - ref0), al1 = fast_exp2(m[mt][1] - ref1);
            m[mt][0] = mn0;
            m[mt][1] = mn1;
            float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
            for (int j = 0; j < BN / 8; j++) {
                sc[mt][j][0] = fast_exp2(fmaf(sc[mt][j][0], sl2, -ref0));
                sc[mt][j][1] = fast_exp2(fmaf(sc[mt][j][1], sl2, -ref0));
                sc[mt][j][2] = fast_exp2(fmaf(sc[mt][j][2], sl2, -ref1));
                sc[mt][j][3] = fast_exp2(fmaf(sc[mt][j][3], sl2, -ref1));
                sum0 += sc[mt][j][0] + sc[mt][j][1];
                sum1 += sc[mt][j][2] + sc[mt][j][3];
            }
            l[mt][0] = l[mt][0] * al0 + sum0;
            l[mt][1] = l[mt][1] * al1 + sum1;
#pragma unroll
            for (int j = 0; j < HD / 8; j++) {
                o[mt][j][0] *= al0;
                o[mt][j][1] *= al0;
                o[mt][j][2] *= al1;
                o[mt][j][3] *= al1;
            }
        }
        /* O += P V: the S accumulators of token tiles 2kk, 2kk+1 are the A
         * fragment of k-step kk; one V fragment feeds MT mma */
#pragma unroll
        for (int kk = 0; kk < BN / 16; kk++) {
            uint32_t pa[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++) {
                pa[mt][0] = pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
                pa[mt][1] = pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
                pa[mt][2] = pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
                pa[mt][3] = pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < HD / 16; dp++) {
                uint32_t b[4];
                const int tok = kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
                const int d = dp * 16 + (lane >> 4) * 8;
                ldmatrix_x4_trans(b, v_base + st_off + (tok * LD + d) * 2);
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    mma_bf16(o[mt][2 * dp], pa[mt], b[0], b[1]);
                    mma_bf16(o[mt][2 * dp + 1], pa[mt], b[2], b[3]);
                }
            }
        }
    }
    if (!warp_live)
        return;
    __nv_bfloat16 *out = (__nv_bfloat16 *)a.out;
#pragma unroll
    for (int mt = 0; mt < MT; mt++) {
        float l0 = l[mt][0], l1 = l[mt][1];
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
            l0 += __shfl_xor_sync(0xffffffffu, l0, off);
            l1 += __shfl_xor_sync(0xffffffffu, l1, off);
        }
        const float vs = KV8 ? a.v_scale : 1.0f;
        const float inv0 = l0 > 0.0f ? vs / l0 : 0.0f;
        const float inv1 = l1 > 0.0f ? vs / l1 : 0.0f;
        const int r0 = wrow0 + mt * 16 + g, r1 = r0 + 8;
        __nv_bfloat16 *o0 = out + ((int64_t)(q0 + row0 + r0) * a.n_heads + h) * HD + 2 * tq;
        __nv_bfloat16 *o1 = out + ((int64_t)(q0 + row0 + r1) * a.n_heads + h) * HD + 2 * tq;
#pragma unroll
        for (int j = 0; j < HD / 8; j++) {
            if (r0 < n_rows)
                *(__nv_bfloat162 *)(o0 + j * 8) =
                    __floats2bfloat162_rn(o[mt][j][0] * inv0, o[mt][j][1] * inv0);
            if (r1 < n_rows)
                *(__nv_bfloat162 *)(o1 + j * 8) =
                    __floats2bfloat162_rn(o[mt][j][2] * inv1, o[mt][j][3] * inv1);
        }
    }
}

/* ---- launch --------------------------------------------------------------------------- */

/* 0 = automatic; 1 = CUDA cores; 2 / 3 / 4 = tensor cores, see kernels.h */
static int g_force_variant;
static int g_n_sms = 132; /* read from the device by pl_cuk_attention_init */

/* Tensor-core variant for head_dim 64 / 128 (measured on the H100, docs/cuda.md):
 * 128-row tiles of 4 warps x 32 rows (half the shared-memory reads per FLOP)
 * when they make at least one full wave at 2 CTAs per SM; otherwise 128-row
 * tiles of 8 warps x 16 rows, which beat both others on a lone chunk of a few
 * hundred tokens (fewer registers per row, 8 warps per CTA). */
static int auto_variant(const struct pl_cuk_attn *a)
{
    const long ctas = (long)a->n_heads * a->n_seqs * ((a->max_q_len + 127) / 128);
    return ctas >= 2L * g_n_sms ? 4 : 3;
}

extern "C" void pl_cuk_attention_prefill_force(int variant)
{
    g_force_variant = variant;
}

template <int HD, int NW, int MT>
static int launch_tc(pl_cuda_stream st, const struct pl_cuk_attn *a)
{
    constexpr int BM = 16 * MT * NW;
    dim3 grid((unsigned)a->n_heads, (unsigned)a->n_seqs, (unsigned)((a->max_q_len + BM - 1) / BM));
    if (a->kv_fp8)
        tc_prefill_kernel<HD, NW, MT, true><<<grid, NW * 32, tc_smem<HD, NW, MT>(), st>>>(*a);
    else
        tc_prefill_kernel<HD, NW, MT, false><<<grid, NW * 32, tc_smem<HD, NW, MT>(), st>>>(*a);
    return (int)cudaGetLastError();
}

template <int HD> static int launch_tc_variant(pl_cuda_stream st, const struct pl_cuk_attn *a, int v)
{
    if (v == 2)
        return launch_tc<HD, 4, 1>(st, a);
    if (v == 3)
        return launch_tc<HD, 8, 1>(st, a);
    return launch_tc<HD, 4, 2>(st, a);
}

extern "C" int pl_cuk_attention_prefill(pl_cuda_stream st, const struct pl_cuk_attn *a)
{
    if (a->n_seqs <= 0 || a->max_q_len <= 1)
        return 0;
    /* the tensor-core kernel: head_dim 64 / 128 without soft-capping */
    const bool tc_ok = (a->head_dim == 128 || a->head_dim == 64) && !(a->softcap > 0.0f);
    int v = g_force_variant;
    if (v == 0 || (v >= 2 && !tc_ok))
        v = tc_ok ? auto_variant(a) : 1;
    if (v >= 2)
        return a->head_dim == 128 ? launch_tc_variant<128>(st, a, v)
                                  : launch_tc_variant<64>(st, a, v);
    dim3 grid((unsigned)((a->max_q_len + PF_BM - 1) / PF_BM), (unsigned)a->n_heads,
              (unsigned)a->n_seqs);
    cc_prefill_kernel<<<grid, PF_THREADS, prefill_smem(a->head_dim), st>>>(*a);
    return (int)cudaGetLastError();
}

template <int HD, int NW, int MT> static cudaError_t tc_init(void)
{
    cudaError_t e = cudaFuncSetAttribute(tc_prefill_kernel<HD, NW, MT, false>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)tc_smem<HD, NW, MT>());
    if (e == cudaSuccess)
        e = cudaFuncSetAttribute(tc_prefill_kernel<HD, NW, MT, true>,
                                 cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)tc_smem<HD, NW, MT>());
    return e;
}

extern "C" int pl_cuk_attention_init(void)
{
    cudaError_t e = cudaFuncSetAttribute(
        cc_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)prefill_smem(MAX_HD));
    cudaError_t (*const inits[])(void) = {tc_init<128, 4, 1>, tc_init<128, 8, 1>, tc_init<128, 4, 2>,
                                          tc_init<64, 4, 1>,  tc_init<64, 8, 1>,  tc_init<64, 4, 2>};
    for (size_t i = 0; e == cudaSuccess && i < sizeof(inits) / sizeof(inits[0]); i++)
        e = inits[i]();
    int dev = 0, n_sms = 0;
    if (e == cudaSuccess)
        e = cudaGetDevice(&dev);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, dev);
    if (e == cudaSuccess && n_sms > 0)
        g_n_sms = n_sms;
    return (int)e;
}
