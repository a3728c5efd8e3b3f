/*
 * moe_gemm.cu -- the grouped expert products of the CUDA moe op: every expert's
 * rows in one launch, on tensor cores, with no host synchronisation (so decode
 * steps of MoE models record into graphs).
 *
 * Owns: the tile plan (moe_tiles_kernel) and the grouped GEMM (moe_gemm_kernel).
 * Rules: kernels.h (pl_cuk_moe_tiles, pl_cuk_moe_gemm).
 *
 * Layout: the (token, choice) entries are grouped by expert (moe.cu's place step):
 * expert e owns rows [offsets[e], offsets[e] + counts[e]) of the grouped
 * activations. The tile plan cuts each group into tiles of BM rows and lists them
 * as (expert, tile) pairs; a launch has one CTA column per possible tile (at most
 * ceil(entries / BM) + n_experts, and at most one per entry: known on the host
 * without reading the counts),
 * and CTAs past the plan's end return at once. A CTA computes BM rows x 64 output
 * columns of its expert:
 *   gated:  out = act(bf16(x We_gate^T)) * bf16(x We_up^T), both products in the
 *           same CTA so the activation is an epilogue (act: silu or gelu-tanh, the
 *           same formula and roundings as the unfused path's silu_mul kernels);
 *   plain:  out = x We^T.
 * A's rows are read through a_rows (the token of each grouped row: the first
 * product reads the hidden states in place, without a gathered copy) or directly
 * (the second product reads the first's output in grouped order).
 * Pipeline: 4 warps, K in steps of 64 through a 3-stage cp.async ring in shared
 * memory (rows padded by 8 elements, conflict-free for ldmatrix), mma.sync
 * m16n8k16 with fp32 accumulators. BM 16 serves decode (one m16 tile, the warps
 * split the columns: weight-bandwidth bound), BM 64 prefill (2 x 2 warps).
 * Each output row depends only on its own input row and the accumulation order
 * is fixed, so the result does not depend on the order rows were grouped in.
 */
#include "kernels.h"
#include "mma.cuh"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

static int launch_status(void) { return (int)cudaGetLastError(); }

/* ---- the tile plan ----------------------------------------------------------------- */

/* One block of MOE_SCAN_THREADS threads: offsets / cursor = exclusive scan of counts (as
 * moe_scan_kernel), and tiles[] = (expert << 16 | tile) for each BM-row tile of each
 * group, -1 past the end (up to max_tiles). Both scans run over the block at once: each
 * thread owns MOE_PER_THREAD consecutive experts, warp shuffles scan the threads' sums,
 * shared memory the warps'. */
#define MOE_SCAN_THREADS 256
#define MOE_PER_THREAD (PL_CUK_MOE_MAX_EXPERTS / MOE_SCAN_THREADS)

__global__ void __launch_bounds__(MOE_SCAN_THREADS)
moe_tiles_kernel(const int32_t *counts, int E, int bm, int max_tiles, int32_t *offsets,
                 int32_t *cursor, int32_t *tiles)
{
    __shared__ int warp_rows[MOE_SCAN_THREADS / 32], warp_tiles[MOE_SCAN_THREADS / 32];
    __shared__ int total_tiles;
    const int t = threadIdx.x, lane = t & 31, w = t >> 5;
    int c[MOE_PER_THREAD], rows = 0, ntiles = 0;
#pragma unroll
    for (int i = 0; i < MOE_PER_THREAD; i++) {
        const int e = t * MOE_PER_THREAD + i;
        c[i] = e < E ? counts[e] : 0;
        rows += c[i];
        ntiles += (c[i] + bm - 1) / bm;
    }
    /* inclusive scans of (rows, ntiles) over the warp, then over the warps */
    int r_inc = rows, t_inc = ntiles;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int ro = __shfl_up_sync(0xffffffffu, r_inc, o);
        const int to = __shfl_up_sync(0xffffffffu, t_inc, o);
        if (lane >= o) {
            r_inc += ro;
            t_inc += to;
        }
    }
    if (lane == 31) {
        warp_rows[w] = r_inc;
        warp_tiles[w] = t_inc;
    }
    __syncthreads();
    if (t == 0) {
        int ra = 0, ta = 0;
        for (int i = 0; i < MOE_SCAN_THREADS / 32; i++) {
            const int r = warp_rows[i], tt = warp_tiles[i];
            warp_rows[i] = ra;
            warp_tiles[i] = ta;
            ra += r;
            ta += tt;
        }
        total_tiles = ta;
    }
    __syncthreads();
    int r_at = warp_rows[w] + r_inc - rows, t_at = warp_tiles[w] + t_inc - ntiles;
#pragma unroll
    for (int i = 0; i < MOE_PER_THREAD; i++) {
        const int e = t * MOE_PER_THREAD + i;
        if (e >= E)
            break;
        offsets[e] = r_at;
        cursor[e] = r_at;
        const int nt = (c[i] + bm - 1) / bm;
        for (int j = 0; j < nt && t_at + j < max_tiles; j++)
            tiles[t_at + j] = (e << 16) | j;
        r_at += c[i];
        t_at += nt;
    }
    for (int j = total_tiles + t; j < max_tiles; j += MOE_SCAN_THREADS)
        tiles[j] = -1;
}

/* ---- the grouped GEMM ---------------------------------------------------------------- */

#define MG_BN 64     /* output columns per CTA (per matrix) */
#define MG_BK 64     /* K per stage */
#define MG_LDS 72    /* shared row stride in elements: MG_BK + 8 */
#define MG_STAGES 3
#define MG_THREADS 128

template <int BM, bool GATED> static constexpr size_t mg_smem(void)
{
    return sizeof(__nv_bfloat16) * (size_t)MG_STAGES * (size_t)MG_LDS *
           (size_t)(BM + (GATED ? 2 : 1) * MG_BN);
}

static __device__ __forceinline__ float act_silu(float g) { return g / (1.0f + expf(-g)); }

static __device__ __forceinline__ float act_gelu_tanh(float g)
{
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * g * (1.0f + tanhf(k0 * (g + k1 * g * g * g)));
}

static __device__ __forceinline__ float round_bf16(float v)
{
    return __bfloat162float(__float2bfloat16(v));
}

template <int BM, bool GATED, bool GELU>
__global__ void __launch_bounds__(MG_THREADS)
moe_gemm_kernel(const __grid_constant__ struct pl_cuk_moe_gemm p)
{
    constexpr int NB = (GATED ? 2 : 1) * MG_BN;      /* B rows per stage */
    constexpr int WARPS_M = BM >= 64 ? 2 : 1, WARPS_N = 4 / WARPS_M;
    constexpr int WM = BM / WARPS_M, MT = WM / 16;   /* rows per warp, m16 tiles */
    constexpr int WN = MG_BN / WARPS_N, NT = WN / 8; /* columns per warp, n8 tiles */
    constexpr int NMAT = GATED ? 2 : 1;
    constexpr int A_CH = BM * (MG_BK / 8) / MG_THREADS; /* 16-byte chunks per thread */
    constexpr int B_CH = NB * (MG_BK / 8) / MG_THREADS;
    constexpr int A_STAGE = BM * MG_LDS * 2, B_STAGE = NB * MG_LDS * 2; /* bytes */
    static_assert(MT >= 1 && NT % 2 == 0 && A_CH >= 1 && B_CH >= 1, "tile shape");

    const int tile = p.tiles[blockIdx.x];
    if (tile < 0)
        return;
    const int e = tile >> 16, mt_idx = tile & 0xffff;
    const int row0 = p.offsets[e] + mt_idx * BM;
    const int rows = min(BM, p.offsets[e] + p.counts[e] - row0);
    const int n0 = blockIdx.y * MG_BN;
    const int K = p.k, N = p.n;
    const __nv_bfloat16 *w0 = (const __nv_bfloat16 *)p.w0[e];
    const __nv_bfloat16 *w1 = GATED ? (const __nv_bfloat16 *)p.w1[e] : w0;
    const __nv_bfloat16 *a = (const __nv_bfloat16 *)p.a;

    extern __shared__ __align__(16) unsigned char mg_sm[];
    const uint32_t a_base = smem_addr(mg_sm);
    const uint32_t b_base = a_base + MG_STAGES * A_STAGE;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int warp_m = warp / WARPS_N, warp_n = warp % WARPS_N;

    /* this thread's copy sources (row pointers; the k offset is added per stage) */
    const __nv_bfloat16 *a_src[A_CH];
    bool a_ok[A_CH];
#pragma unroll
    for (int i = 0; i < A_CH; i++) {
        const int c = tid + i * MG_THREADS, r = c / (MG_BK / 8);
        a_ok[i] = r < rows;
        const int64_t src = a_ok[i] ? (p.a_rows ? p.a_rows[row0 + r] : row0 + r) : 0;
        a_src[i] = a + src * K + (c % (MG_BK / 8)) * 8;
    }
    const __nv_bfloat16 *b_src[B_CH];
    bool b_ok[B_CH];
#pragma unroll
    for (int i = 0; i < B_CH; i++) {
        const int c = tid + i * MG_THREADS, r = c / (MG_BK / 8);
        const int n = n0 + r % MG_BN;
        b_ok[i] = n < N;
        b_src[i] = (r < MG_BN ? w0 : w1) + (int64_t)(b_ok[i] ? n : 0) * K + (c % (MG_BK / 8)) * 8;
    }

    const int KT = (K + MG_BK - 1) / MG_BK;
    auto load = [&](int stage, int kt) {
        const int k0 = kt * MG_BK;
#pragma unroll
        for (int i = 0; i < A_CH; i++) {
            const int c = tid + i * MG_THREADS, r = c / (MG_BK / 8), c8 = c % (MG_BK / 8);
            const bool ok = a_ok[i] && k0 + c8 * 8 < K;
            cp_async16(a_base + stage * A_STAGE + (r * MG_LDS + c8 * 8) * 2,
                       ok ? a_src[i] + k0 : a, ok);
        }
#pragma unroll
        for (int i = 0; i < B_CH; i++) {
            const int c = tid + i * MG_THREADS, r = c / (MG_BK / 8), c8 = c % (MG_BK / 8);
            const bool ok = b_ok[i] && k0 + c8 * 8 < K;
            cp_async16(b_base + stage * B_STAGE + (r * MG_LDS + c8 * 8) * 2,
                       ok ? b_src[i] + k0 : w0, ok);
        }
    };

    float acc[NMAT][MT][NT][4];
#pragma unroll
    for (int m = 0; m < NMAT; m++)
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int q = 0; q < 4; q++)
                    acc[m][i][j][q] = 0.0f;

#pragma unroll
    for (int s = 0; s < MG_STAGES - 1; s++) {
        if (s < KT)
            load(s, s);
        cp_async_commit();
    }
    for (int kt = 0; kt < KT; kt++) {
        cp_async_wait<MG_STAGES - 2>();
        __syncthreads();
        {
            const int next = kt + MG_STAGES - 1;
            if (next < KT)
                load(next % MG_STAGES, next);
            cp_async_commit();
        }
        const int stage = kt % MG_STAGES;
        const uint32_t as = a_base + stage * A_STAGE, bs = b_base + stage * B_STAGE;
#pragma unroll
        for (int kk = 0; kk < MG_BK / 16; kk++) {
            uint32_t af[MT][4];
#pragma unroll
            for (int i = 0; i < MT; i++)
                ldmatrix_x4(af[i], as + ((warp_m * WM + i * 16 + (lane & 15)) * MG_LDS + kk * 16 +
                                         (lane >> 4) * 8) * 2);
#pragma unroll
            for (int m = 0; m < NMAT; m++)
#pragma unroll
                for (int np = 0; np < NT / 2; np++) {
                    uint32_t bf[4];
                    const int brow = m * MG_BN + warp_n * WN + np * 16 + (lane >> 4) * 8 + (lane & 7);
                    ldmatrix_x4(bf, bs + (brow * MG_LDS + kk * 16 + ((lane >> 3) & 1) * 8) * 2);
#pragma unroll
                    for (int i = 0; i < MT; i++) {
                        mma_bf16(acc[m][i][2 * np], af[i], bf[0], bf[1]);
                        mma_bf16(acc[m][i][2 * np + 1], af[i], bf[2], bf[3]);
                    }
                }
        }
    }
    cp_async_wait_all();

    /* epilogue: rows past the group and columns past N are not written */
    __nv_bfloat16 *out = (__nv_bfloat16 *)p.out;
    const int g = lane >> 2, tq = lane & 3;
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++) {
            const int col = n0 + warp_n * WN + j * 8 + 2 * tq;
            if (col >= N)
                continue;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int r = warp_m * WM + i * 16 + g + 8 * h;
                if (r >= rows)
                    continue;
                float v0 = acc[0][i][j][2 * h], v1 = acc[0][i][j][2 * h + 1];
                if (GATED) {
                    const float u0 = round_bf16(acc[NMAT - 1][i][j][2 * h]);
                    const float u1 = round_bf16(acc[NMAT - 1][i][j][2 * h + 1]);
                    v0 = round_bf16(v0);
                    v1 = round_bf16(v1);
                    v0 = (GELU ? act_gelu_tanh(v0) : act_silu(v0)) * u0;
                    v1 = (GELU ? act_gelu_tanh(v1) : act_silu(v1)) * u1;
                }
                *(__nv_bfloat162 *)(out + (int64_t)(row0 + r) * N + col) =
                    __floats2bfloat162_rn(v0, v1);
            }
        }
}

template <int BM, bool GATED, bool GELU>
static int launch_gemm(pl_cuda_stream s, const struct pl_cuk_moe_gemm *p, int max_tiles)
{
    constexpr size_t smem = mg_smem<BM, GATED>();
    cudaError_t e = cudaFuncSetAttribute(moe_gemm_kernel<BM, GATED, GELU>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess)
        return (int)e;
    const dim3 grid((unsigned)max_tiles, (unsigned)((p->n + MG_BN - 1) / MG_BN));
    moe_gemm_kernel<BM, GATED, GELU><<<grid, MG_THREADS, smem, s>>>(*p);
    return launch_status();
}

extern "C" int pl_cuk_moe_tile_rows(int n_entries, int n_experts)
{
    /* decode-sized groups (a few rows per expert on average) take 16-row tiles */
    return n_entries >= 16 * n_experts ? 64 : 16;
}

extern "C" int pl_cuk_moe_max_tiles(int n_entries, int n_experts, int tile_rows)
{
    /* each expert adds at most one partial tile, and every tile holds a row */
    const int bound = (n_entries + tile_rows - 1) / tile_rows + n_experts;
    return bound < n_entries ? bound : n_entries;
}

extern "C" int pl_cuk_moe_tiles(pl_cuda_stream s, const int32_t *counts, int n_experts,
                                int tile_rows, int max_tiles, int32_t *offsets, int32_t *cursor,
                                int32_t *tiles)
{
    if (n_experts <= 0 || n_experts > PL_CUK_MOE_MAX_EXPERTS || max_tiles <= 0)
        return (int)cudaErrorInvalidValue;
    moe_tiles_kernel<<<1, MOE_SCAN_THREADS, 0, s>>>(counts, n_experts, tile_rows, max_tiles,
                                                    offsets, cursor, tiles);
    return launch_status();
}

extern "C" int pl_cuk_moe_gemm(pl_cuda_stream s, const struct pl_cuk_moe_gemm *p, int tile_rows,
                               int max_tiles, int gated, int gelu)
{
    if (max_tiles <= 0 || p->n <= 0)
        return 0;
    if (p->k <= 0 || p->k % 8 || p->n % 8 || (tile_rows != 16 && tile_rows != 64))
        return (int)cudaErrorInvalidValue;
    if (tile_rows == 16)
        return !gated ? launch_gemm<16, false, false>(s, p, max_tiles)
               : gelu ? launch_gemm<16, true, true>(s, p, max_tiles)
                      : launch_gemm<16, true, false>(s, p, max_tiles);
    return !gated ? launch_gemm<64, false, false>(s, p, max_tiles)
           : gelu ? launch_gemm<64, true, true>(s, p, max_tiles)
                  : launch_gemm<64, true, false>(s, p, max_tiles);
}
