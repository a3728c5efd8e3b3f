/*
 * gemv.cu -- skinny GEMMs for decode: out[n, M] = x[n, K] @ W[M, K]^T, n <= 8.
 *
 * Owns: the kernels behind pl_cuk_gemv and pl_cuk_gemv_gate_up_act (gemv.h). At n <= 8
 * a weight GEMM is a stream over the weight (each byte is used n times: 8 FLOP per 2 bytes
 * at most, far under the tensor-core ridge), so the kernel is built to keep the memory
 * system full, not to use tensor cores:
 *
 *   - one CTA of NW warps owns R consecutive weight rows (a "row group") and walks the
 *     whole K once: K is cut into 256-element chunks (32 lanes x 8 bf16 = one 16-byte load
 *     per lane), warp w takes the w-th contiguous slice of chunks, so a warp reads 512
 *     contiguous bytes of a row per load instruction;
 *   - each warp issues U chunks x R rows of 16-byte weight loads before using any
 *     (ld.global.nc.L1::no_allocate: streamed, never cached in L1), so R x U x 512 bytes per
 *     warp are in flight; x is read through L1 (__ldg; at most 8 x K bf16, shared by every
 *     CTA of the SM) once per chunk and reused by the R rows;
 *   - fp32 FMAs per lane in a fixed order, then an xor-shuffle tree per (row, x row), then
 *     the NW warp partials summed in warp order through shared memory: deterministic;
 *   - the K % 256 tail (a multiple of 8) is read by the last warp, lanes past it idle.
 *
 * Forms: up to 3 weights sharing x in one launch (the q, k, v projections: row groups of
 * the weights are numbered one after another, each CTA finds its weight by the running
 * group counts), fp32 out (the LM head), and gate-up-act: a CTA owns R/2 rows of the gate
 * weight and the same R/2 rows of the up weight, and writes act(g + bg) * (u + bu) for them
 * (act: SiLU, or GELU-tanh for Gemma),
 * so gate and up never touch device memory (and are not rounded to bf16 on the way).
 * Rows past the end of a weight (M % R) read the weight's last row and store nothing.
 */
#include "backend/cuda/kernels/gemv.h"
#include "backend/cuda/kernels/pdl.cuh"
#include "backend/cuda/kernels/bf16_vec.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

/* MODE_GLU: gate-up with SiLU; MODE_GEGLU: gate-up with GELU-tanh (Gemma) */
enum { MODE_BF16 = 0, MODE_F32 = 1, MODE_GLU = 2, MODE_GEGLU = 3 };

struct gemv_params {
    struct pl_gemv_mat m[PL_GEMV_MAX_MATS];
    int64_t group_end[PL_GEMV_MAX_MATS]; /* running row-group counts */
    const uint4 *x;                      /* [n, K / 8] */
    int k8;                              /* K / 8: 16-byte vectors per row */
    int n_mats;
};

/* Routed by default up to n = 4: on the H100 a Llama-3-8B layer's weights took 148 / 157 /
 * 185 us at n = 1 / 4 / 8 against cuBLASLt's 174 / 175 / 176 us (docs/cuda.md), so n = 8
 * goes back to cuBLASLt. The kernels themselves take n up to PL_GEMV_MAX_N (tests). */
#define GEMV_ROUTE_N 4
int g_max_n = GEMV_ROUTE_N;
int g_variant = 0;

/* GELU with the tanh approximation (the formula of elementwise.cu's gelu_tanh_mul). */
__device__ __forceinline__ float gelu_tanh(float g)
{
    const float k0 = 0.7978845608028654f, k1 = 0.044715f;
    return 0.5f * g * (1.0f + tanhf(k0 * (g + k1 * g * g * g)));
}


__device__ __forceinline__ float lo_f(uint32_t u) { return __uint_as_float(u << 16); }
__device__ __forceinline__ float hi_f(uint32_t u) { return __uint_as_float(u & 0xffff0000u); }

/* acc[r][j] += dot(w[r], x[j]) over the 8 bf16 of one 16-byte vector, pairs in order. */
template <int N, int R>
__device__ __forceinline__ void fma_vec(float (&acc)[R][N], const uint4 (&w)[R], const uint4 (&x)[N])
{
#pragma unroll
    for (int p = 0; p < 4; p++) {
        float xl[N], xh[N];
#pragma unroll
        for (int j = 0; j < N; j++) {
            const uint32_t u = p == 0 ? x[j].x : p == 1 ? x[j].y : p == 2 ? x[j].z : x[j].w;
            xl[j] = lo_f(u);
            xh[j] = hi_f(u);
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            const uint32_t u = p == 0 ? w[r].x : p == 1 ? w[r].y : p == 2 ? w[r].z : w[r].w;
            const float wl = lo_f(u), wh = hi_f(u);
#pragma unroll
            for (int j = 0; j < N; j++) {
                acc[r][j] = fmaf(wl, xl[j], acc[r][j]);
                acc[r][j] = fmaf(wh, xh[j], acc[r][j]);
            }
        }
    }
}

/* One 256-element chunk c of every row (one 16-byte load per lane per row), no loads ahead. */
template <int N, int R>
__device__ __forceinline__ void chunk_fma(float (&acc)[R][N], const uint4 *(&wrow)[R],
                                          const uint4 *xp, size_t k8, int c)
{
    uint4 wv[R], xv[N];
#pragma unroll
    for (int r = 0; r < R; r++)
        wv[r] = ld_stream16(wrow[r] + (size_t)c * 32);
#pragma unroll
    for (int j = 0; j < N; j++)
        xv[j] = __ldg(xp + (size_t)j * k8 + (size_t)c * 32);
    fma_vec<N, R>(acc, wv, xv);
}

/* acc[r][j] = the part of dot(row r, x row j) that warp `warp` of `nw` owns: its slice of
 * K's 256-element chunks, U chunks of loads in flight, and the K % 256 tail when it is the
 * last warp (lanes past the tail idle). wrow / xp point at the lane's first vector. */
template <int N, int R, int U>
__device__ __forceinline__ void dot_rows(float (&acc)[R][N], const uint4 *(&wrow)[R],
                                         const uint4 *xp, size_t k8, int warp, int nw, int lane)
{
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < N; j++)
            acc[r][j] = 0.0f;
    const int n_chunks = (int)(k8 >> 5); /* full 256-element chunks */
    const int c_end = (int)((int64_t)(warp + 1) * n_chunks / nw);
    int c = (int)((int64_t)warp * n_chunks / nw);
    for (; c + U <= c_end; c += U) {
        uint4 wv[U][R];
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int r = 0; r < R; r++)
                wv[u][r] = ld_stream16(wrow[r] + (size_t)(c + u) * 32);
#pragma unroll
        for (int u = 0; u < U; u++) {
            uint4 xv[N];
#pragma unroll
            for (int j = 0; j < N; j++)
                xv[j] = __ldg(xp + (size_t)j * k8 + (size_t)(c + u) * 32);
            fma_vec<N, R>(acc, wv[u], xv);
        }
    }
    for (; c < c_end; c++)
        chunk_fma<N, R>(acc, wrow, xp, k8, c);
    if (warp == nw - 1 && (size_t)n_chunks * 32 + lane < k8) /* the K % 256 tail */
        chunk_fma<N, R>(acc, wrow, xp, k8, n_chunks);
}

/* The warp's sums (xor-shuffle tree) into part[r * N + j] (lane 0 stores). */
template <int N, int R>
__device__ __forceinline__ void warp_sum_to(float (&acc)[R][N], float *part, int lane)
{
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int j = 0; j < N; j++) {
            float v = acc[r][j];
#pragma unroll
            for (int off = 16; off > 0; off >>= 1)
                v += __shfl_xor_sync(0xffffffffu, v, off);
            acc[r][j] = v;
        }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
#pragma unroll
            for (int j = 0; j < N; j++)
                part[r * N + j] = acc[r][j];
    }
}

__device__ __forceinline__ float bias_at(const void *b, int dtype, int64_t i)
{
    if (!b)
        return 0.0f;
    if (dtype == 0)
        return ((const float *)b)[i];
    if (dtype == 1)
        return __half2float(((const __half *)b)[i]);
    return __bfloat162float(((const __nv_bfloat16 *)b)[i]);
}

/* Field f of weight i of the launch, without indexing the parameter array at run time
 * (which would copy it to local memory). */
#define MAT(p, i, f) ((i) == 0 ? (p).m[0].f : (i) == 1 ? (p).m[1].f : (p).m[2].f)

template <int N, int MODE, int NW, int R, int U>
__global__ void __launch_bounds__(NW * 32) gemv_kernel(const gemv_params p)
{
    static_assert(MODE < MODE_GLU || R % 2 == 0, "gate-up needs gate and up rows in pairs");
    pdl_enter();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int64_t g = blockIdx.x;

    /* which weight and which rows this CTA owns */
    int mi = 0;
    if (MODE < MODE_GLU) {
        if (p.n_mats > 1 && g >= p.group_end[0])
            mi = 1;
        if (p.n_mats > 2 && g >= p.group_end[1])
            mi = 2;
    }
    const int64_t g0 = mi == 0 ? 0 : mi == 1 ? p.group_end[0] : p.group_end[1];
    constexpr int RPM = MODE >= MODE_GLU ? R / 2 : R; /* rows per CTA of each weight */
    const int64_t row0 = (g - g0) * RPM;
    const int64_t rows = MAT(p, mi, rows);
    const size_t k8 = (size_t)p.k8;

    const uint4 *wrow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int src = MODE >= MODE_GLU ? (r < RPM ? 0 : 1) : mi;
        const int64_t row = row0 + (r % RPM) < rows ? row0 + (r % RPM) : rows - 1;
        wrow[r] = (const uint4 *)MAT(p, src, w) + (size_t)row * k8 + lane;
    }
    const uint4 *xp = p.x + lane;

    float acc[R][N];
    dot_rows<N, R, U>(acc, wrow, xp, k8, warp, NW, lane);
    __shared__ float part[NW][R * N];
    warp_sum_to<N, R>(acc, part[warp], lane);
    __syncthreads();

    /* thread t writes x row j = t / RPM, weight row r = t % RPM: neighbours store neighbours */
    const int t = threadIdx.x;
    if (t >= RPM * N)
        return;
    const int j = t / RPM, r = t % RPM;
    const int64_t row = row0 + r;
    if (row >= rows)
        return;
    float s = 0.0f;
#pragma unroll
    for (int w = 0; w < NW; w++)
        s += part[w][r * N + j];
    if (MODE >= MODE_GLU) {
        float u = 0.0f;
#pragma unroll
        for (int w = 0; w < NW; w++)
            u += part[w][(r + RPM) * N + j];
        s += bias_at(p.m[0].bias, p.m[0].bias_dtype, row);
        u += bias_at(p.m[1].bias, p.m[1].bias_dtype, row);
        const float y = MODE == MODE_GEGLU ? gelu_tanh(s) * u : s / (1.0f + __expf(-s)) * u;
        ((__nv_bfloat16 *)p.m[0].out)[(size_t)j * (size_t)p.m[0].ld_out + (size_t)row] =
            __float2bfloat16_rn(y);
    } else if (MODE == MODE_F32) {
        ((float *)MAT(p, mi, out))[(size_t)j * (size_t)MAT(p, mi, ld_out) + (size_t)row] = s;
    } else {
        s += bias_at(MAT(p, mi, bias), MAT(p, mi, bias_dtype), row);
        ((__nv_bfloat16 *)MAT(p, mi, out))[(size_t)j * (size_t)MAT(p, mi, ld_out) + (size_t)row] =
            __float2bfloat16_rn(s);
    }
}

/* The default tile: 4 warps, 4 rows, 2 chunks in flight (8 x 16 B per lane). */
constexpr int D_NW = PL_GEMV_WARPS, D_R = 4, D_U = 2;

template <int NW, int R, int U, int N, int MODE>
cudaError_t launch_tile(cudaStream_t s, gemv_params &p)
{
    constexpr int RPM = MODE >= MODE_GLU ? R / 2 : R;
    int64_t groups = 0;
    if (MODE >= MODE_GLU) {
        groups = (p.m[0].rows + RPM - 1) / RPM;
    } else {
        for (int i = 0; i < p.n_mats; i++) {
            groups += (p.m[i].rows + RPM - 1) / RPM;
            p.group_end[i] = groups;
        }
    }
    if (groups <= 0)
        return cudaSuccess;
    if (groups > 0x7fffffff)
        return cudaErrorInvalidValue;
    pdl_launch(gemv_kernel<N, MODE, NW, R, U>, dim3((unsigned)groups), dim3(NW * 32), 0, s, p);
    return cudaGetLastError();
}

template <int N, int MODE>
cudaError_t launch_n(cudaStream_t s, gemv_params &p)
{
    if constexpr (MODE == MODE_BF16 && (N == 1 || N == 4 || N == 8)) {
        switch (g_variant) {
        case 1: return launch_tile<4, 2, 4, N, MODE>(s, p);
        case 2: return launch_tile<8, 4, 2, N, MODE>(s, p);
        case 3: return launch_tile<4, 8, 1, N, MODE>(s, p);
        default: break;
        }
    }
    return launch_tile<D_NW, D_R, D_U, N, MODE>(s, p);
}

template <int MODE>
cudaError_t launch(cudaStream_t s, gemv_params &p, int n)
{
    switch (n) {
    case 1: return launch_n<1, MODE>(s, p);
    case 2: return launch_n<2, MODE>(s, p);
    case 3: return launch_n<3, MODE>(s, p);
    case 4: return launch_n<4, MODE>(s, p);
    case 5: return launch_n<5, MODE>(s, p);
    case 6: return launch_n<6, MODE>(s, p);
    case 7: return launch_n<7, MODE>(s, p);
    case 8: return launch_n<8, MODE>(s, p);
    default: return cudaErrorInvalidValue;
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* ---- MoE decode: the chosen experts' products as GEMVs ----------------------------------
 * Gate-up: CTA (row group, entry): entry i = (token i / top_k, choice i % top_k) reads its
 * expert's R/2 gate rows and the same R/2 up rows over the token's hidden state and writes
 * act(g) * u, rounded once, to g[i, row]. */
template <int GELU, int NW, int R, int U>
__global__ void __launch_bounds__(NW * 32)
    moe_gemv_gate_up_kernel(const __grid_constant__ struct pl_cuk_moe_gemm p, const int32_t *ids,
                            int top_k)
{
    constexpr int RPM = R / 2;
    pdl_enter();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int entry = blockIdx.y;
    const int e = ids[entry];
    const size_t k8 = (size_t)p.k / 8;
    const int64_t rows = p.n, row0 = (int64_t)blockIdx.x * RPM;
    const uint4 *wg = (const uint4 *)p.w0[e], *wu = (const uint4 *)p.w1[e];
    const uint4 *wrow[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        const int64_t row = row0 + (r % RPM) < rows ? row0 + (r % RPM) : rows - 1;
        wrow[r] = (r < RPM ? wg : wu) + (size_t)row * k8 + lane;
    }
    const uint4 *xp = (const uint4 *)p.a + (size_t)(entry / top_k) * k8 + lane;
    float acc[R][1];
    dot_rows<1, R, U>(acc, wrow, xp, k8, warp, NW, lane);
    __shared__ float part[NW][R];
    warp_sum_to<1, R>(acc, part[warp], lane);
    __syncthreads();
    const int r = threadIdx.x;
    if (r >= RPM || row0 + r >= rows)
        return;
    float gs = 0.0f, us = 0.0f;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        gs += part[w][r];
        us += part[w][r + RPM];
    }
    const float y = GELU ? gelu_tanh(gs) * us : gs / (1.0f + __expf(-gs)) * us;
    ((__nv_bfloat16 *)p.out)[(size_t)entry * (size_t)rows + (size_t)(row0 + r)] =
        __float2bfloat16_rn(y);
}

/* Down and combination: CTA (row group of R output columns, token t). Warp w takes the
 * choices w, w + NW, ... of the token, each over the whole K (the expert's row of g);
 * then out[t, row] = sum_i wt[t, i] * dot_i in choice order (+ sigmoid(gl[t]) * sh[t, row]),
 * rounded once: the combination needs no expert rows in memory. */
template <int NW, int R, int U>
__global__ void __launch_bounds__(NW * 32)
    moe_gemv_down_kernel(const __grid_constant__ struct pl_cuk_moe_gemm p, const int32_t *ids,
                         const float *wt, int top_k, const float *gl,
                         const __nv_bfloat16 *sh)
{
    pdl_enter();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int t = blockIdx.y;
    const size_t k8 = (size_t)p.k / 8;
    const int64_t rows = p.n, row0 = (int64_t)blockIdx.x * R;
    __shared__ float part[64][R];
    for (int i = warp; i < top_k; i += NW) {
        const int entry = t * top_k + i;
        const uint4 *wd = (const uint4 *)p.w0[ids[entry]];
        const uint4 *wrow[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            const int64_t row = row0 + r < rows ? row0 + r : rows - 1;
            wrow[r] = wd + (size_t)row * k8 + lane;
        }
        const uint4 *xp = (const uint4 *)p.a + (size_t)entry * k8 + lane;
        float acc[R][1];
        dot_rows<1, R, U>(acc, wrow, xp, k8, 0, 1, lane);
        warp_sum_to<1, R>(acc, part[i], lane);
    }
    __syncthreads();
    const int r = threadIdx.x;
    if (r >= R || row0 + r >= rows)
        return;
    float s = 0.0f;
    for (int i = 0; i < top_k; i++)
        s += wt[t * top_k + i] * part[i][r];
    if (sh)
        s += 1.0f / (1.0f + expf(-gl[t])) *
             __bfloat162float(sh[(size_t)t * (size_t)rows + (size_t)(row0 + r)]);
    ((__nv_bfloat16 *)p.out)[(size_t)t * (size_t)rows + (size_t)(row0 + r)] =
        __float2bfloat16_rn(s);
}

/* Up to 16 entries (top 8 of two tokens, top 2 of eight) by default: above, the grouped
 * GEMMs read an expert chosen twice once (docs/cuda.md has the measurements). */
#define MOE_GEMV_ENTRIES 16
int g_moe_max_entries = MOE_GEMV_ENTRIES;
int g_moe_variant = 0;

template <int NW, int R, int U>
cudaError_t launch_moe_gate_up(cudaStream_t s, const struct pl_cuk_moe_gemm *p, const int32_t *ids,
                               int n_entries, int top_k, int gelu)
{
    const dim3 grid((unsigned)((p->n + R / 2 - 1) / (R / 2)), (unsigned)n_entries);
    if (gelu)
        pdl_launch(moe_gemv_gate_up_kernel<1, NW, R, U>, grid, dim3(NW * 32), 0, s, *p, ids, top_k);
    else
        pdl_launch(moe_gemv_gate_up_kernel<0, NW, R, U>, grid, dim3(NW * 32), 0, s, *p, ids, top_k);
    return cudaGetLastError();
}

template <int NW, int R, int U>
cudaError_t launch_moe_down(cudaStream_t s, const struct pl_cuk_moe_gemm *p, const int32_t *ids,
                            const float *wt, int n_tokens, int top_k, const float *gl,
                            const void *sh)
{
    const dim3 grid((unsigned)((p->n + R - 1) / R), (unsigned)n_tokens);
    pdl_launch(moe_gemv_down_kernel<NW, R, U>, grid, dim3(NW * 32), 0, s, *p, ids, wt, top_k, gl,
               (const __nv_bfloat16 *)sh);
    return cudaGetLastError();
}

} /* namespace */

extern "C" int pl_cuk_gemv_ok(const void *x, const void *w, int64_t K, int n)
{
    return n >= 1 && n <= PL_GEMV_MAX_N && K > 0 && K % 8 == 0 && K / 8 <= 0x7fffffff &&
           aligned16(x) && aligned16(w);
}

extern "C" int pl_cuk_gemv(pl_cuda_stream s, const struct pl_gemv_mat *mats, int n_mats,
                           const void *x, int64_t K, int n, int out_f32)
{
    if (n_mats < 1 || n_mats > PL_GEMV_MAX_MATS)
        return (int)cudaErrorInvalidValue;
    gemv_params p = {};
    for (int i = 0; i < n_mats; i++) {
        if (!pl_cuk_gemv_ok(x, mats[i].w, K, n))
            return (int)cudaErrorInvalidValue;
        p.m[i] = mats[i];
    }
    p.x = (const uint4 *)x;
    p.k8 = (int)(K / 8);
    p.n_mats = n_mats;
    cudaStream_t st = (cudaStream_t)s;
    return (int)(out_f32 ? launch<MODE_F32>(st, p, n) : launch<MODE_BF16>(st, p, n));
}

extern "C" int pl_cuk_gemv_gate_up_act(pl_cuda_stream s, void *out, int64_t ld_out,
                                       const struct pl_gemv_mat *gate,
                                       const struct pl_gemv_mat *up, const void *x, int64_t K,
                                       int n, int gelu_tanh)
{
    if (!pl_cuk_gemv_ok(x, gate->w, K, n) || !pl_cuk_gemv_ok(x, up->w, K, n) ||
        gate->rows != up->rows)
        return (int)cudaErrorInvalidValue;
    gemv_params p = {};
    p.m[0] = *gate;
    p.m[1] = *up;
    p.m[0].out = out;
    p.m[0].ld_out = ld_out;
    p.x = (const uint4 *)x;
    p.k8 = (int)(K / 8);
    p.n_mats = 2;
    return (int)(gelu_tanh ? launch<MODE_GEGLU>((cudaStream_t)s, p, n)
                           : launch<MODE_GLU>((cudaStream_t)s, p, n));
}

extern "C" void pl_cuk_gemv_force(int max_n, int variant)
{
    g_max_n = max_n < 0 ? GEMV_ROUTE_N : max_n > PL_GEMV_MAX_N ? PL_GEMV_MAX_N : max_n;
    g_variant = variant;
}

extern "C" int pl_cuk_gemv_max_n(void) { return g_max_n; }

extern "C" int pl_cuk_moe_gemv_ok(const void *x, int n_tokens, int top_k, int hidden, int inter)
{
    const int64_t entries = (int64_t)n_tokens * top_k;
    return aligned16(x) && n_tokens >= 1 && top_k >= 1 && top_k <= 64 && entries <= g_moe_max_entries &&
           entries <= 65535 && hidden > 0 && hidden % 8 == 0 && inter > 0 && inter % 8 == 0;
}

extern "C" int pl_cuk_moe_gemv_gate_up(pl_cuda_stream st, const struct pl_cuk_moe_gemm *p,
                                       const int32_t *ids, int n_entries, int top_k, int gelu)
{
    if (n_entries <= 0 || p->n <= 0)
        return 0;
    if (p->k <= 0 || p->k % 8 || p->n % 8 || n_entries > 65535 || !aligned16(p->a))
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)st;
    switch (g_moe_variant) {
    case 1: return (int)launch_moe_gate_up<4, 8, 2>(s, p, ids, n_entries, top_k, gelu);
    case 2: return (int)launch_moe_gate_up<8, 4, 2>(s, p, ids, n_entries, top_k, gelu);
    default: return (int)launch_moe_gate_up<4, 4, 2>(s, p, ids, n_entries, top_k, gelu);
    }
}

extern "C" int pl_cuk_moe_gemv_down(pl_cuda_stream st, const struct pl_cuk_moe_gemm *p,
                                    const int32_t *ids, const float *wt, int n_tokens, int top_k,
                                    const float *shared_gate_logit, const void *shared_out)
{
    if (n_tokens <= 0 || p->n <= 0)
        return 0;
    if (p->k <= 0 || p->k % 8 || p->n % 8 || top_k > 64 || n_tokens > 65535 ||
        !aligned16(p->a))
        return (int)cudaErrorInvalidValue;
    cudaStream_t s = (cudaStream_t)st;
    switch (g_moe_variant) {
    case 1: return (int)launch_moe_down<8, 4, 2>(s, p, ids, wt, n_tokens, top_k,
                                                 shared_gate_logit, shared_out);
    case 2: return (int)launch_moe_down<8, 2, 3>(s, p, ids, wt, n_tokens, top_k,
                                                 shared_gate_logit, shared_out);
    default: return (int)launch_moe_down<4, 4, 2>(s, p, ids, wt, n_tokens, top_k,
                                                  shared_gate_logit, shared_out);
    }
}

extern "C" void pl_cuk_moe_gemv_force(int max_entries, int variant)
{
    g_moe_max_entries = max_entries < 0 ? MOE_GEMV_ENTRIES : max_entries;
    g_moe_variant = variant;
}
