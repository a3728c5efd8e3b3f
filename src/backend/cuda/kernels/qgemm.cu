/*
 * qgemm.cu -- the int4 weight-only GEMM on tensor cores (W4A16, in the spirit of Marlin):
 * out bf16 [n, ld_out] = x bf16 [n, K] @ dequant(w)^T (+ bias) for batches above the int4
 * GEMV's (qgemv.cu), reading the weights packed, so a step streams a quarter of the bf16
 * bytes and never writes a bf16 copy of the weight.
 *
 * Owns: the kernel (q4_gemm_kernel), its tile and split choice, and the launch.
 * Rules: qgemm.h.
 *
 * Tiles. A CTA of 4 warps computes BM rows of x (BM = 16 MT) by BN = 128 weight rows
 * (output columns); each warp owns 32 of the columns (four n8 tiles) for all BM rows. The
 * warps split the columns only, so each weight value is dequantized exactly once per CTA;
 * a warp's A (x) fragments come from shared memory by ldmatrix, as in moe_gemm.cu. MT
 * grows with n: 1 (n <= 16), 2 (<= 32), 4 (<= 64), 8 (above: 128 rows, the largest tile
 * whose accumulators (128 fp32 a thread) still leave registers for two CTAs an SM). Small
 * n is bound by the weight stream and a tile covering every row reads it once; large n is
 * bound by the tensor cores, where the dequantization cost per product falls as 1/BM.
 *
 * Pipeline. K advances in steps of BK = 64 through a ring of STAGES shared-memory stages
 * filled by cp.async (moe_gemm.cu's scheme: one __syncthreads a step, the copies of step
 * t + STAGES - 1 in flight while step t is computed). A stage holds
 *   A: BM x 64 bf16 of x, rows padded to 72 elements (conflict-free ldmatrix);
 *   W: 128 rows x 8 code words (32 bytes a row), the two 16-byte halves of a row swapped
 *      on rows 4..7 of every 8 (row r's half h sits at h ^ ((r >> 2) & 1)), so the eight
 *      rows a warp reads at once hit eight distinct bank groups;
 *   S, Z: the scale (fp32) and the 32-bit word holding the zero byte of each (row, 32-k
 *      half) (group sizes are multiples of 32, so a half lies in one group), copied 4
 *      bytes at a time;
 *   G: the stage's 64 g_idx entries (act-order only).
 * Rows past N, rows past n and k past K are zero-filled by the copies, so every edge is
 * handled by the same code; only the epilogue masks.
 *
 * Dequantization, in registers, straight into mma fragments (no bf16 copy of the weight in
 * shared memory). mma.m16n8k16's B fragment gives thread (g, tq) (lane = 4 g + tq) weight
 * row g at k = 2tq, 2tq+1 (b0) and 8+2tq, 8+2tq+1 (b1) of the k16 step: exactly byte tq of
 * code word 2 kk (b0) and of word 2 kk + 1 (b1), low nibble first. For each 32-k half a
 * thread reads its row's four words with one 16-byte shared load (the four tq lanes read
 * the same words: a broadcast), gathers byte tq of each into one register (__byte_perm),
 * and turns each nibble c into fp32 c - zero exactly (one byte permute makes the bits
 * 0x4B000000 | c, which are 2^23 + c; minus 2^23 + zero), multiplies by the fp32 scale and
 * rounds to bf16: the same fp32 product and rounding as pl_cuk_q4_dequant, so the products
 * equal the dequantize + GEMM path's up to fp32 accumulation order. That is about four
 * instructions a value: at small n the dequantization bounds the kernel about as much as
 * the weight stream does. Act-order (g_idx), group sizes that are not a multiple of 32 and
 * K % 32 != 0 take a per-value path (out of line) that looks each value's scale and zero
 * up through L1 and copies the codes a word at a time (slower; the same arithmetic).
 *
 * Split K. When the output tiles are fewer than the GPU holds at once (decode-sized n,
 * N = 4096 projections), K is cut into up to 8 slices (at least 8 steps each) over
 * gridDim.z; each CTA writes its fp32 accumulators to the caller's scratch, and the last
 * CTA of a tile to arrive (an atomic counter per tile, reset by that CTA) sums the slices
 * in slice order, so the result does not depend on which CTA finished last.
 */
#include "backend/cuda/kernels/mma.cuh"
#include "backend/cuda/kernels/q4.cuh"
#include "backend/cuda/kernels/qgemm.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#define QG_BN 128        /* weight rows (output columns) per CTA */
#define QG_BK 64         /* k per stage */
#define QG_LDA 72        /* A's shared row stride in elements: QG_BK + 8 */
#define QG_THREADS 128   /* 4 warps, 32 columns each */
#define QG_NT 4          /* n8 tiles per warp */
#define QG_W_STAGE (QG_BN * QG_BK / 2) /* code bytes per stage */
#define QG_SZ_STAGE (QG_BN * 2 * 4)    /* one 4-byte entry per (row, 32-k half) */
#define QG_G_STAGE (QG_BK * 4)         /* g_idx entries */
#define QG_MIN_KSTEPS 8  /* a split slice covers at least this many k steps */
#define QG_MAX_SPLITS 8

template <int MT> struct qg_cfg {
    static constexpr int BM = 16 * MT;
    /* small tiles are bound by the weight stream: more stages, more bytes in flight */
    static constexpr int STAGES = MT >= 4 ? 4 : 5;
    static constexpr int A_STAGE = BM * QG_LDA * 2;
    static constexpr int STAGE = A_STAGE + QG_W_STAGE + 2 * QG_SZ_STAGE + QG_G_STAGE;
    static constexpr int SMEM = STAGES * STAGE;
    /* CTAs an SM is meant to hold (registers: 128 accumulators a thread at MT 8) */
    static constexpr int MIN_BLOCKS = MT >= 8 ? 2 : MT >= 4 ? 3 : 4;
    /* CTAs an SM should get before K is split further: one where the tensor cores bound the
     * tile (two would only share them), two where the weight stream does (more bytes in
     * flight); more only lengthen the last CTA's sum of the slices */
    static constexpr int SPLIT_PER_SM = MT >= 8 ? 1 : 2;
};

struct qg_args {
    const void *w;
    int64_t N, K;              /* weight rows, columns */
    const __nv_bfloat16 *x;
    int n;                     /* rows of x */
    const void *bias;
    int bias_dtype;
    __nv_bfloat16 *out;
    int64_t ld_out;
    int pair_ok;               /* out rows 4-byte aligned: bf16 pairs may be stored */
    int splits;                /* gridDim.z */
    float *partial;            /* splits > 1: [tiles * splits, ACC, QG_THREADS] fp32 */
    int32_t *counters;         /* splits > 1: one per tile */
};

static __device__ __forceinline__ float bias_at(const void *bias, int dtype, int64_t i)
{
    return dtype == 0   ? ((const float *)bias)[i]
           : dtype == 1 ? __half2float(((const __half *)bias)[i])
                        : __bfloat162float(((const __nv_bfloat16 *)bias)[i]);
}

/* Byte tq of each of four code words, in one register (word 0 in the low byte). */
static __device__ __forceinline__ uint32_t gather_bytes(uint4 wv, uint32_t sel)
{
    const uint32_t lo = __byte_perm(wv.x, wv.y, sel);
    const uint32_t hi = __byte_perm(wv.z, wv.w, sel);
    return __byte_perm(lo, hi, 0x5410);
}

/* The fp32 2^23 + (byte b of x), x's bytes below 256: one byte permute. */
static __device__ __forceinline__ float magic_byte(uint32_t x, int b)
{
    return __uint_as_float(__byte_perm(x, 0x4B000000u, 0x7440u | (uint32_t)b));
}

/* fp32 (code e) - zero, exact: (2^23 + c) - (2^23 + zero). Code e is nibble e of the
 * gathered register, given as its low nibbles ql (bytes & 15) and high nibbles qh. */
static __device__ __forceinline__ float code_minus(uint32_t ql, uint32_t qh, int e, float mz)
{
    return __fsub_rn(magic_byte(e & 1 ? qh : ql, e >> 1), mz);
}

/* SLOW: the per-value path (act-order, group sizes not a multiple of 32, code rows not
 * 16-byte aligned); otherwise 16-byte code copies and one scale per (row, 32-k half). */
template <int MT, bool SLOW>
static __device__ __forceinline__ void qg_body(const qg_args &p, const q4_view v,
                                               unsigned char *sm)
{
    using C = qg_cfg<MT>;
    constexpr int STAGES = C::STAGES;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, tq = lane & 3;
    const int m0 = blockIdx.x * C::BM;
    const int64_t n0 = (int64_t)blockIdx.y * QG_BN;
    const int64_t K = p.K, N = p.N, wpr = K / 8; /* code words per weight row */
    const int KT = (int)((K + QG_BK - 1) / QG_BK);
    const int split = blockIdx.z;
    const int kt0 = (int)((int64_t)KT * split / p.splits);
    const int nkt = (int)((int64_t)KT * (split + 1) / p.splits) - kt0;
    const bool w16 = !SLOW || K % 32 == 0; /* code rows 16-byte aligned */
    const uint32_t base = smem_addr(sm);
    /* input k's group without g_idx: a shift for the formats' power-of-two sizes (and for
     * one group per row), a 32-bit division otherwise (k < 2^31: K is an int on the host) */
    const int gshift = v.n_groups == 1                  ? 31
                       : (v.group & (v.group - 1)) == 0 ? __ffs(v.group) - 1
                                                        : -1;
    auto group_of = [&](int k) { return gshift >= 0 ? k >> gshift : k / v.group; };

    /* this thread's weight rows (local to the tile) and, for the zero bytes, the low two
     * bits of row * n_groups (the byte's place in its aligned word) */
    int wrow[QG_NT], rowq[QG_NT];
#pragma unroll
    for (int j = 0; j < QG_NT; j++) {
        wrow[j] = warp * 32 + j * 8 + g;
        rowq[j] = (int)((((n0 + wrow[j]) & 3) * (v.n_groups & 3)) & 3);
    }

    auto load = [&](int stage, int kt) {
        const uint32_t st = base + stage * C::STAGE;
        const int64_t k0 = (int64_t)kt * QG_BK;
#pragma unroll
        for (int i = 0; i < MT; i++) { /* A: BM rows x 8 chunks of 16 bytes */
            const int c = tid + i * QG_THREADS, r = c >> 3, c8 = c & 7;
            const bool ok = m0 + r < p.n && k0 + c8 * 8 < K;
            cp_async16(st + (r * QG_LDA + c8 * 8) * 2,
                       ok ? p.x + (int64_t)(m0 + r) * K + k0 + c8 * 8 : p.x, ok);
        }
        const uint32_t ws = st + C::A_STAGE;
        if (w16) {
#pragma unroll
            for (int i = 0; i < 2; i++) { /* W: 128 rows x 2 halves of 16 bytes */
                const int c = tid + i * QG_THREADS, r = c >> 1, h = c & 1;
                const bool ok = n0 + r < N && k0 + h * 32 < K;
                cp_async16(ws + r * 32 + ((h ^ ((r >> 2) & 1)) << 4),
                           ok ? v.codes + (n0 + r) * wpr + k0 / 8 + h * 4 : v.codes, ok);
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) { /* rows only 4-byte aligned: one word at a time */
                const int c = tid + i * QG_THREADS, r = c >> 3, w8 = c & 7;
                const bool ok = n0 + r < N && k0 + w8 * 8 < K;
                cp_async4(ws + r * 32 + ((((w8 >> 2) ^ ((r >> 2) & 1)) << 4) | ((w8 & 3) << 2)),
                          ok ? v.codes + (n0 + r) * wpr + k0 / 8 + w8 : v.codes, ok);
            }
        }
        if (!SLOW) {
            const uint32_t ss = ws + QG_W_STAGE, zs = ss + QG_SZ_STAGE;
#pragma unroll
            for (int i = 0; i < 2; i++) { /* S, Z: 128 rows x 2 halves */
                const int e = tid + i * QG_THREADS, r = e >> 1, h = e & 1;
                const int grp = group_of((int)k0 + h * 32);
                const bool ok = n0 + r < N && grp < v.n_groups;
                const int64_t idx = ok ? (n0 + r) * v.n_groups + grp : 0;
                cp_async4(ss + e * 4, v.scales + idx, ok);
                cp_async4(zs + e * 4, v.zeros + (idx & ~(int64_t)3), ok);
            }
        } else if (v.gidx && tid < QG_BK / 4) {
            const uint32_t gs = ws + QG_W_STAGE + 2 * QG_SZ_STAGE;
            const bool ok = k0 + tid * 4 < K;
            cp_async16(gs + tid * 16, ok ? v.gidx + k0 + tid * 4 : v.gidx, ok);
        }
    };

    float acc[MT][QG_NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < QG_NT; j++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                acc[i][j][q] = 0.0f;

    const uint32_t sel = (uint32_t)tq | ((uint32_t)(tq + 4) << 4);
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nkt)
            load(s, kt0 + s);
        cp_async_commit();
    }
    for (int t = 0; t < nkt; t++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {
            const int next = t + STAGES - 1;
            if (next < nkt)
                load(next % STAGES, kt0 + next);
            cp_async_commit();
        }
        const int stage = t % STAGES;
        const int64_t k0 = (int64_t)(kt0 + t) * QG_BK;
        const unsigned char *st = sm + stage * C::STAGE;
        const unsigned char *wsm = st + C::A_STAGE;
        const uint32_t a_st = base + stage * C::STAGE;
#pragma unroll
        for (int h = 0; h < 2; h++) { /* 32-k halves: two k16 mma steps each */
            uint32_t bq[QG_NT][4]; /* [n8 tile][kk 2h: b0 b1, kk 2h+1: b0 b1] */
            if (!SLOW) {
                const float *ss = (const float *)(wsm + QG_W_STAGE);
                const uint32_t *zs = (const uint32_t *)(wsm + QG_W_STAGE + QG_SZ_STAGE);
                const int grp = group_of((int)k0 + h * 32);
#pragma unroll
                for (int j = 0; j < QG_NT; j++) {
                    const int r = wrow[j];
                    const uint4 wv =
                        *(const uint4 *)(wsm + r * 32 + ((h ^ ((r >> 2) & 1)) << 4));
                    const float s = ss[r * 2 + h];
                    const float mz = magic_byte(zs[r * 2 + h], (rowq[j] + grp) & 3);
                    const uint32_t q = gather_bytes(wv, sel);
                    const uint32_t ql = q & 0x0F0F0F0Fu, qh = (q >> 4) & 0x0F0F0F0Fu;
#pragma unroll
                    for (int m = 0; m < 4; m++)
                        bq[j][m] = pack_bf16(__fmul_rn(code_minus(ql, qh, 2 * m, mz), s),
                                             __fmul_rn(code_minus(ql, qh, 2 * m + 1, mz), s));
                }
            } else {
                /* value e of a half: word e / 2, nibble 2 tq + e % 2, k = 8 (e / 2) + 2 tq
                 * + e % 2 within the half */
                int gk[8];
                const int32_t *gs = (const int32_t *)(wsm + QG_W_STAGE + 2 * QG_SZ_STAGE);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    const int kl = h * 32 + (e >> 1) * 8 + 2 * tq + (e & 1);
                    if (v.gidx) {
                        gk[e] = gs[kl];
                    } else {
                        const int gg = group_of((int)k0 + kl);
                        gk[e] = gg < v.n_groups ? gg : v.n_groups - 1;
                    }
                }
#pragma unroll
                for (int j = 0; j < QG_NT; j++) {
                    const int r = wrow[j];
                    const int64_t row = n0 + r < N ? n0 + r : N - 1;
                    const float *sc = v.scales + row * v.n_groups;
                    const uint8_t *zr = v.zeros + row * v.n_groups;
                    const uint4 wv =
                        *(const uint4 *)(wsm + r * 32 + ((h ^ ((r >> 2) & 1)) << 4));
                    const uint32_t q = gather_bytes(wv, sel);
                    const uint32_t ql = q & 0x0F0F0F0Fu, qh = (q >> 4) & 0x0F0F0F0Fu;
                    float w[8];
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        const float mz = __uint_as_float(0x4B000000u | (uint32_t)__ldg(zr + gk[e]));
                        w[e] = __fmul_rn(code_minus(ql, qh, e, mz), __ldg(sc + gk[e]));
                    }
#pragma unroll
                    for (int m = 0; m < 4; m++)
                        bq[j][m] = pack_bf16(w[2 * m], w[2 * m + 1]);
                }
            }
#pragma unroll
            for (int kq = 0; kq < 2; kq++) {
                const int kk = 2 * h + kq;
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    uint32_t af[4];
                    ldmatrix_x4(af, a_st + ((i * 16 + (lane & 15)) * QG_LDA + kk * 16 +
                                            (lane >> 4) * 8) * 2);
#pragma unroll
                    for (int j = 0; j < QG_NT; j++)
                        mma_bf16(acc[i][j], af, bq[j][2 * kq], bq[j][2 * kq + 1]);
                }
            }
        }
    }
    cp_async_wait_all();

    if (p.splits > 1) {
        /* this slice's accumulators out; the tile's last CTA sums every slice in order */
        constexpr int ACC = MT * QG_NT * 4;
        const int tile = blockIdx.y * gridDim.x + blockIdx.x;
        float *mine = p.partial + ((size_t)tile * p.splits + split) * ACC * QG_THREADS + tid;
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < QG_NT; j++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                    __stcg(mine + ((i * QG_NT + j) * 4 + q) * QG_THREADS, acc[i][j][q]);
        __threadfence();
        __syncthreads(); /* also: every warp is done with the stages (sm is reused below) */
        volatile int *last = (volatile int *)sm;
        if (tid == 0) {
            const int prev = atomicAdd(p.counters + tile, 1);
            *last = prev == p.splits - 1;
            if (prev == p.splits - 1)
                p.counters[tile] = 0; /* every slice has arrived: ready for the next launch */
        }
        __syncthreads();
        if (!*last)
            return;
        __threadfence();
        const float *all = p.partial + (size_t)tile * p.splits * ACC * QG_THREADS + tid;
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < QG_NT; j++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                    acc[i][j][q] = 0.0f;
        /* four slices' loads in flight at a time, added in slice order (a missing slice
         * adds 0, which changes no sum) */
        constexpr size_t SLICE = (size_t)ACC * QG_THREADS;
        for (int s0 = 0; s0 < p.splits; s0 += 4) {
            const int ns = p.splits - s0;
            const float *ps = all + (size_t)s0 * SLICE;
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < QG_NT; j++)
#pragma unroll
                    for (int q = 0; q < 4; q++) {
                        const float *pa = ps + ((i * QG_NT + j) * 4 + q) * QG_THREADS;
                        const float v0 = __ldcg(pa);
                        const float v1 = ns > 1 ? __ldcg(pa + SLICE) : 0.0f;
                        const float v2 = ns > 2 ? __ldcg(pa + 2 * SLICE) : 0.0f;
                        const float v3 = ns > 3 ? __ldcg(pa + 3 * SLICE) : 0.0f;
                        acc[i][j][q] = (((acc[i][j][q] + v0) + v1) + v2) + v3;
                    }
        }
    }

    /* epilogue: bias in fp32, one rounding; rows past n and columns past N masked */
#pragma unroll
    for (int j = 0; j < QG_NT; j++) {
        const int64_t col = n0 + warp * 32 + j * 8 + 2 * tq;
        if (col >= N)
            continue;
        const bool two = col + 1 < N;
        const float b0 = p.bias ? bias_at(p.bias, p.bias_dtype, col) : 0.0f;
        const float b1 = p.bias && two ? bias_at(p.bias, p.bias_dtype, col + 1) : 0.0f;
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int hh = 0; hh < 2; hh++) {
                const int row = m0 + i * 16 + g + 8 * hh;
                if (row >= p.n)
                    continue;
                const float v0 = acc[i][j][2 * hh] + b0, v1 = acc[i][j][2 * hh + 1] + b1;
                __nv_bfloat16 *o = p.out + (int64_t)row * p.ld_out + col;
                if (two && p.pair_ok) {
                    *(__nv_bfloat162 *)o = __floats2bfloat162_rn(v0, v1);
                } else {
                    o[0] = __float2bfloat16(v0);
                    if (two)
                        o[1] = __float2bfloat16(v1);
                }
            }
    }
}

/* The slow path out of line: its registers and spills stay out of the fast path's. */
template <int MT>
static __device__ __noinline__ void qg_body_slow(const qg_args &p, const q4_view v,
                                                 unsigned char *sm)
{
    qg_body<MT, true>(p, v, sm);
}

template <int MT>
__global__ void __launch_bounds__(QG_THREADS, qg_cfg<MT>::MIN_BLOCKS)
q4_gemm_kernel(const __grid_constant__ qg_args p)
{
    extern __shared__ __align__(16) unsigned char qg_sm[];
    const q4_view v = q4_view_of(p.w, p.N, p.K);
    /* uniform over the grid: the header and K decide the path */
    if (v.gidx || (v.n_groups > 1 && v.group % 32 != 0) || p.K % 32 != 0)
        qg_body_slow<MT>(p, v, qg_sm);
    else
        qg_body<MT, false>(p, v, qg_sm);
}

/* Slices of K: enough CTAs to give every SM per_sm of them, each slice at least
 * QG_MIN_KSTEPS steps, and the partials within the caller's scratch. */
static int choose_splits(int tiles, int KT, int per_sm, int tile_floats,
                         const struct pl_cuk_q4_gemm_ws *ws)
{
    if (!ws || !ws->partial || !ws->counters || tiles > ws->n_counters)
        return 1;
    int s;
    if (ws->forced_splits > 0) {
        s = ws->forced_splits < KT ? ws->forced_splits : KT;
    } else {
        const int slots = (ws->n_sms > 0 ? ws->n_sms : 1) * per_sm;
        s = tiles >= slots ? 1 : slots / tiles;
        const int by_k = KT / QG_MIN_KSTEPS;
        s = s < by_k ? s : by_k;
    }
    s = s < QG_MAX_SPLITS ? s : QG_MAX_SPLITS;
    const size_t fit = ws->n_partial / ((size_t)tiles * (size_t)tile_floats);
    if ((size_t)s > fit)
        s = (int)fit;
    return s > 1 ? s : 1;
}

template <int MT>
static int launch(cudaStream_t st, qg_args p, const struct pl_cuk_q4_gemm_ws *ws)
{
    using C = qg_cfg<MT>;
    const int m_tiles = (p.n + C::BM - 1) / C::BM;
    const int64_t n_tiles = (p.N + QG_BN - 1) / QG_BN;
    if (n_tiles > 65535 || (int64_t)m_tiles * n_tiles > 0x7fffffff)
        return (int)cudaErrorInvalidValue;
    const int KT = (int)((p.K + QG_BK - 1) / QG_BK);
    p.splits = choose_splits(m_tiles * (int)n_tiles, KT, C::SPLIT_PER_SM, C::BM * QG_BN, ws);
    p.partial = p.splits > 1 ? ws->partial : nullptr;
    p.counters = p.splits > 1 ? ws->counters : nullptr;
    const dim3 grid((unsigned)m_tiles, (unsigned)n_tiles, (unsigned)p.splits);
    q4_gemm_kernel<MT><<<grid, QG_THREADS, C::SMEM, st>>>(p);
    return (int)cudaGetLastError();
}

template <int MT> static cudaError_t init_kernel(void)
{
    return cudaFuncSetAttribute(q4_gemm_kernel<MT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                qg_cfg<MT>::SMEM);
}

extern "C" int pl_cuk_q4_gemm_init(void)
{
    cudaError_t e = init_kernel<1>();
    if (e == cudaSuccess)
        e = init_kernel<2>();
    if (e == cudaSuccess)
        e = init_kernel<4>();
    if (e == cudaSuccess)
        e = init_kernel<8>();
    return (int)e;
}

extern "C" int pl_cuk_q4_gemm_ok(const void *w, const void *x, int64_t K, int n)
{
    return n >= 1 && K > 0 && K % 8 == 0 && K <= 0x7fffffff - QG_BK && ((uintptr_t)w & 15) == 0 &&
           ((uintptr_t)x & 15) == 0;
}

extern "C" int pl_cuk_q4_gemm(pl_cuda_stream s, const void *w, int64_t rows, int64_t K,
                              const void *x, int n, const void *bias, int bias_dtype, void *out,
                              int64_t ld_out, const struct pl_cuk_q4_gemm_ws *ws)
{
    if (n <= 0 || rows <= 0)
        return 0;
    if (!pl_cuk_q4_gemm_ok(w, x, K, n) || ld_out < rows)
        return (int)cudaErrorInvalidValue;
    qg_args p = {};
    p.w = w;
    p.N = rows;
    p.K = K;
    p.x = (const __nv_bfloat16 *)x;
    p.n = n;
    p.bias = bias;
    p.bias_dtype = bias_dtype;
    p.out = (__nv_bfloat16 *)out;
    p.ld_out = ld_out;
    p.pair_ok = ((uintptr_t)out & 3) == 0 && ld_out % 2 == 0;
    cudaStream_t st = (cudaStream_t)s;
    if (n <= 16)
        return launch<1>(st, p, ws);
    if (n <= 32)
        return launch<2>(st, p, ws);
    if (n <= 64)
        return launch<4>(st, p, ws);
    return launch<8>(st, p, ws);
}
