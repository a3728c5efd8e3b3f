/*
 * sampling.cu -- sampling rows of fp32 logits on the GPU: one CTA of 1024 threads per row.
 *
 * Owns: the kernel behind the backend's sample op. It computes what pl_sampler_sample_rows
 * (core/sampler.c, the specification) computes, from the same uniforms, up to float
 * rounding; the logits are only read.
 *
 * Order of candidates: the host's total order (value descending, id ascending) is the
 * order of the 64-bit key (ord(value) << 32 | ~id) descending, ord being the monotone
 * map of a float's bits to an unsigned (with -0 folded into +0). Every argmax here is a
 * max of keys, so ties go to the lowest id as on the host.
 *
 * Per row:
 *   0. structured output: a row with a token mask (mask_row >= 0) reads every token whose
 *      bit is clear as -inf in every sampling pass (not in the logprobs, which are raw).
 *   1. penalties: the row's distinct penalised tokens (host-deduplicated, with their
 *      output counts) get their penalised values in pen_val and a bit in a shared-memory
 *      bitmap; every pass reads the row skipping marked ids and then the pen_val list, so
 *      rows that share one logits row (n > 1) never see each other's penalties.
 *   2. greedy (temperature < 1e-5): one pass, the max key.
 *   3. random: one pass for the max m of w = value / temperature; min_p gives the floor
 *      lo = m + log(min_p). Then up to three cuts, each the first candidate in the total
 *      order at which a running count or mass reaches a target: top_k (count k; ties
 *      with the k-th value kept, as vLLM), top_p (mass top_p of the candidates' total),
 *      the draw (mass exceeding u times the kept total). A cut is found by narrowing a
 *      value window: one pass builds a 32-bin histogram of counts and masses
 *      (e = exp(w - m)) over the window (warp ballots and shuffle-sums into per-lane
 *      accumulators, then a fixed-order reduction: deterministic), picks the bin where
 *      the target is reached, and repeats inside it until the window holds at most CAP
 *      candidates; those are compacted into shared memory, sorted by key (bitonic) and
 *      scanned in double from the mass/count above the window. When all remaining
 *      candidates fit (the usual case after top_k), they are compacted once and every
 *      later cut is done on the sorted set. A window that cannot be narrowed (more than
 *      CAP equal values) falls back to bisection on the key (one reduction per bit).
 *   4. logprobs (raw, as the host): top-n by n rounds of max key below the previous one,
 *      then one pass for the log-sum-exp (double sum) and the rank (count of values >= the
 *      token's).
 * All sums are in a fixed order, so a row's result does not depend on timing or on the
 * other rows.
 */
#include "backend/cuda/kernels/sampling.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>

#define THREADS 1024
#define NWARPS (THREADS / 32)
#define CAP 2048
#define NBINS 32
#define MAX_LEVELS 16
#define GREEDY_EPS 1e-5f
#define FULL 0xffffffffu

typedef unsigned long long u64;

struct Shared {
    u64 keys[CAP];
    double scan[CAP];
    float bnd[NBINS + 1];
    unsigned bin_cnt[NWARPS][NBINS];
    float bin_mass[NWARPS][NBINS];
    u64 red_k[NWARPS + 1];
    double red_d[NWARPS + 1];
    float red_f[NWARPS + 1];
    unsigned long long red_c[NWARPS + 1];
    int n_keys;
    int first;
};

/* ---- keys ------------------------------------------------------------------------------- */

__device__ __forceinline__ float sanitize(float v) { return v != v ? -INFINITY : v; }

__device__ __forceinline__ unsigned ord_of(float f)
{
    if (f == 0.0f)
        f = 0.0f; /* -0 == +0 on the host: one key */
    unsigned b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float float_of_ord(unsigned o)
{
    unsigned b = (o & 0x80000000u) ? (o & 0x7fffffffu) : ~o;
    return __uint_as_float(b);
}

__device__ __forceinline__ u64 key_of(float w, int id)
{
    return ((u64)ord_of(w) << 32) | (u64)(~(unsigned)id);
}

__device__ __forceinline__ float key_val(u64 k) { return float_of_ord((unsigned)(k >> 32)); }
__device__ __forceinline__ int key_id(u64 k) { return (int)(~(unsigned)(k & 0xffffffffu)); }

/* ---- block reductions (every thread calls; fixed order, so deterministic) --------------- */

__device__ u64 block_max_key(u64 v, Shared &sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o; o >>= 1) {
        u64 t = __shfl_xor_sync(FULL, v, o);
        v = t > v ? t : v;
    }
    __syncthreads();
    if (lane == 0)
        sh.red_k[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = sh.red_k[lane];
        for (int o = 16; o; o >>= 1) {
            u64 t = __shfl_xor_sync(FULL, v, o);
            v = t > v ? t : v;
        }
        if (lane == 0)
            sh.red_k[NWARPS] = v;
    }
    __syncthreads();
    return sh.red_k[NWARPS];
}

__device__ float block_max_f(float v, Shared &sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    __syncthreads();
    if (lane == 0)
        sh.red_f[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = sh.red_f[lane];
        for (int o = 16; o; o >>= 1)
            v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
        if (lane == 0)
            sh.red_f[NWARPS] = v;
    }
    __syncthreads();
    return sh.red_f[NWARPS];
}

__device__ double block_sum_d(double v, Shared &sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if (lane == 0)
        sh.red_d[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = sh.red_d[lane];
        for (int o = 16; o; o >>= 1)
            v += __shfl_xor_sync(FULL, v, o);
        if (lane == 0)
            sh.red_d[NWARPS] = v;
    }
    __syncthreads();
    return sh.red_d[NWARPS];
}

__device__ u64 block_sum_c(u64 v, Shared &sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o; o >>= 1)
        v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    if (lane == 0)
        sh.red_c[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = sh.red_c[lane];
        for (int o = 16; o; o >>= 1)
            v += __shfl_xor_sync(FULL, v, o);
        if (lane == 0)
            sh.red_c[NWARPS] = v;
    }
    __syncthreads();
    return sh.red_c[NWARPS];
}

/* ---- visiting a row --------------------------------------------------------------------- */

struct Row {
    const float *x;          /* the raw logits row */
    int V;
    const int32_t *pen_ids;  /* [pen_n] distinct penalised ids */
    const float *pen_val;    /* [pen_n] their penalised values */
    int pen_n;
    const unsigned *bitmap;  /* shared: bit id set when id is penalised */
    const unsigned *mask;    /* structured output: bit id clear = id is -inf; NULL: none */
};

__device__ __forceinline__ bool masked_out(const Row &r, int id)
{
    return r.mask && !((__ldg(r.mask + (id >> 5)) >> (id & 31)) & 1u);
}

template <bool PEN, class F>
__device__ __forceinline__ void visit_one(const Row &r, F &f, bool ok, float v, int id)
{
    if (PEN && ok && ((r.bitmap[id >> 5] >> (id & 31)) & 1u))
        ok = false; /* its penalised value comes from the pen list */
    if (ok && masked_out(r, id))
        v = -INFINITY;
    f(ok, sanitize(v), id);
}

/*
 * Calls f(valid, value, id) for every element of the row (NaN as -inf); with PEN the
 * penalised ids are replaced by their penalised values. Loops are warp-uniform, so f may
 * use warp collectives; invalid lanes call f with valid = false.
 */
template <bool PEN, class F> __device__ void visit(const Row &r, F &f)
{
    const int lane = threadIdx.x & 31, wbase = threadIdx.x - lane, V = r.V;
    int done = 0;
    if ((((uintptr_t)r.x) & 15) == 0) {
        const float4 *x4 = (const float4 *)r.x;
        const int nv = V >> 2;
        for (int base = wbase; base < nv; base += THREADS) {
            int i = base + lane;
            bool ok = i < nv;
            float4 q = ok ? __ldg(x4 + i) : make_float4(0.f, 0.f, 0.f, 0.f);
            visit_one<PEN>(r, f, ok, q.x, 4 * i);
            visit_one<PEN>(r, f, ok, q.y, 4 * i + 1);
            visit_one<PEN>(r, f, ok, q.z, 4 * i + 2);
            visit_one<PEN>(r, f, ok, q.w, 4 * i + 3);
        }
        done = nv << 2;
    }
    for (int base = done + wbase; base < V; base += THREADS) {
        int i = base + lane;
        bool ok = i < V;
        visit_one<PEN>(r, f, ok, ok ? __ldg(r.x + i) : 0.f, i);
    }
    if (PEN)
        for (int base = wbase; base < r.pen_n; base += THREADS) {
            int j = base + lane;
            bool ok = j < r.pen_n;
            int id = ok ? r.pen_ids[j] : 0;
            f(ok, ok ? (masked_out(r, id) ? -INFINITY : r.pen_val[j]) : 0.f, id);
        }
}

/* ---- candidate sets --------------------------------------------------------------------- */

/* What is in play for a cut: candidates (w finite from below, w >= lo) with key >= rkey. */
struct Play {
    float t;      /* temperature: w = value / t */
    float m;      /* max w */
    float lo;     /* floor (min_p, top_k) */
    u64 rkey;     /* restriction: keys below it are out (0: none) */
};

__device__ __forceinline__ bool in_play(const Play &p, float w, int id)
{
    return w != -INFINITY && w >= p.lo && key_of(w, id) >= p.rkey;
}

/* Compacts the in-play elements with lo_excl < w <= hi into sh.keys, sorted descending
 * (the candidate order). Returns their count (<= CAP by the caller's histogram). */
template <bool PEN>
__device__ int compact_sorted(const Row &r, const Play &p, float lo_excl, float hi, Shared &sh)
{
    if (threadIdx.x == 0)
        sh.n_keys = 0;
    __syncthreads();
    auto f = [&](bool ok, float v, int id) {
        if (!ok)
            return;
        float w = v / p.t;
        if (in_play(p, w, id) && w > lo_excl && w <= hi) {
            int slot = atomicAdd(&sh.n_keys, 1);
            if (slot < CAP)
                sh.keys[slot] = key_of(w, id);
        }
    };
    visit<PEN>(r, f);
    __syncthreads();
    int n = sh.n_keys < CAP ? sh.n_keys : CAP;
    for (int i = n + threadIdx.x; i < CAP; i += THREADS)
        sh.keys[i] = 0; /* sorts last */
    __syncthreads();
    /* bitonic sort, descending */
    for (int size = 2; size <= CAP; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < CAP; i += THREADS) {
                int j = i ^ stride;
                if (j > i) {
                    bool desc = (i & size) == 0;
                    u64 a = sh.keys[i], b = sh.keys[j];
                    if (desc ? a < b : a > b) {
                        sh.keys[i] = b;
                        sh.keys[j] = a;
                    }
                }
            }
            __syncthreads();
        }
    return n;
}

/* sh.scan[i] = inclusive prefix sum of exp(w_i - m) over the sorted keys [0, n), in double
 * (a fixed-order block scan). */
__device__ void scan_mass(int n, float m, Shared &sh)
{
    for (int i = threadIdx.x; i < CAP; i += THREADS)
        sh.scan[i] = i < n ? (double)expf(key_val(sh.keys[i]) - m) : 0.0;
    __syncthreads();
    for (int off = 1; off < CAP; off <<= 1) {
        double a[CAP / THREADS];
#pragma unroll
        for (int q = 0; q < CAP / THREADS; q++) {
            int i = threadIdx.x + q * THREADS;
            a[q] = i >= off ? sh.scan[i - off] : 0.0;
        }
        __syncthreads();
#pragma unroll
        for (int q = 0; q < CAP / THREADS; q++)
            sh.scan[threadIdx.x + q * THREADS] += a[q];
        __syncthreads();
    }
}

/* The first index i < n with pred(i) (pred monotone in i); n when none. */
template <class P> __device__ int first_index(int n, P pred, Shared &sh)
{
    if (threadIdx.x == 0)
        sh.first = n;
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += THREADS)
        if (pred(i) && (i == 0 || !pred(i - 1)))
            atomicMin(&sh.first, i);
    __syncthreads();
    int f = sh.first;
    __syncthreads();
    return f;
}

__device__ __forceinline__ bool reaches(double acc, double target, bool strict)
{
    return strict ? acc > target : acc >= target;
}

/* ---- cuts ------------------------------------------------------------------------------- */

enum { CUT_COUNT, CUT_MASS };

struct CutResult {
    int status;   /* CUT_FOUND, CUT_FITS (all in play fit CAP), CUT_NONE (count never reached) */
    u64 key;      /* CUT_FOUND: the cut element's key */
    long n_kept;  /* CUT_FOUND: elements kept by the cut (-1: not known) */
};
enum { CUT_FOUND, CUT_FITS, CUT_NONE };

/*
 * Bisection on the key for windows that cannot be narrowed by value: the largest key K
 * of an in-play window element with reach(above + S(keys >= K)). One reduction per step.
 */
template <bool PEN>
__device__ u64 bisect_cut(const Row &r, const Play &p, float lo_excl, float hi, int mode,
                          double above, double target, bool strict, Shared &sh)
{
    u64 lo_k = 0, hi_k = ~0ull;
    while (lo_k < hi_k) {
        u64 mid = lo_k + (hi_k - lo_k) / 2 + 1;
        double s = 0.0;
        auto f = [&](bool ok, float v, int id) {
            if (!ok)
                return;
            float w = v / p.t;
            if (in_play(p, w, id) && w > lo_excl && w <= hi && key_of(w, id) >= mid)
                s += mode == CUT_COUNT ? 1.0 : (double)expf(w - p.m);
        };
        visit<PEN>(r, f);
        s = block_sum_d(s, sh);
        if (reaches(above + s, target, strict))
            lo_k = mid;
        else
            hi_k = mid - 1;
    }
    return lo_k;
}

/*
 * The cut of the in-play set: the first element (candidate order) at which the count
 * (mode COUNT: reaching `count`) or the mass (mode MASS: reaching frac * total in-play
 * mass; strict: exceeding it) is reached. CUT_FITS when the whole in-play set has at most
 * CAP elements (the caller then works on it in shared memory); CUT_NONE when fewer than
 * `count` elements are in play.
 */
template <bool PEN>
__device__ CutResult find_cut(const Row &r, const Play &p, int mode, int count, double frac,
                              bool strict, Shared &sh)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float hi = p.m;
    float lo_excl = p.lo == -INFINITY ? -INFINITY : nextafterf(p.lo, -INFINITY);
    double above_cnt = 0.0, above_mass = 0.0, target = 0.0;
    for (int level = 0; level < MAX_LEVELS; level++) {
        if (threadIdx.x == 0) {
            float step = lo_excl == -INFINITY ? 1.0f : (hi - lo_excl) / NBINS;
            sh.bnd[0] = hi;
            for (int j = 1; j < NBINS; j++)
                sh.bnd[j] = fmaxf(hi - (float)j * step, lo_excl);
            sh.bnd[NBINS] = lo_excl;
        }
        __syncthreads();
        const float step = lo_excl == -INFINITY ? 1.0f : (hi - lo_excl) / NBINS;
        unsigned my_cnt = 0; /* lane j: bin j of this warp */
        float my_mass = 0.0f;
        auto f = [&](bool ok, float v, int id) {
            float w = v / p.t;
            int b = -1;
            if (ok && in_play(p, w, id) && w > lo_excl && w <= hi) {
                float g = (hi - w) / step;
                b = g < (float)NBINS ? (int)g : NBINS - 1;
                while (b < NBINS - 1 && w <= sh.bnd[b + 1])
                    b++;
                while (b > 0 && w > sh.bnd[b])
                    b--;
            }
            unsigned present = __reduce_or_sync(FULL, b >= 0 ? 1u << b : 0u);
            float e = b >= 0 ? expf(w - p.m) : 0.0f;
            while (present) {
                int j = __ffs(present) - 1;
                present &= present - 1;
                unsigned mask = __ballot_sync(FULL, b == j);
                float s = b == j ? e : 0.0f;
                for (int o = 16; o; o >>= 1)
                    s += __shfl_xor_sync(FULL, s, o);
                if (lane == j) {
                    my_cnt += __popc(mask);
                    my_mass += s;
                }
            }
        };
        visit<PEN>(r, f);
        sh.bin_cnt[warp][lane] = my_cnt;
        sh.bin_mass[warp][lane] = my_mass;
        __syncthreads();
        /* bins summed over warps in a fixed order; thread j of warp 0 holds bin j */
        unsigned cnt = 0;
        double mass = 0.0;
        if (warp == 0)
            for (int w = 0; w < NWARPS; w++) {
                cnt += sh.bin_cnt[w][lane];
                mass += (double)sh.bin_mass[w][lane];
            }
        /* warp 0 decides; results through shared memory */
        if (warp == 0) {
            unsigned tot_c = cnt;
            double tot_m = mass;
            for (int o = 16; o; o >>= 1) {
                tot_c += __shfl_xor_sync(FULL, tot_c, o);
                tot_m += __shfl_xor_sync(FULL, tot_m, o);
            }
            /* inclusive prefix over bins (bin 0 = highest values) */
            unsigned pc = cnt;
            double pm = mass;
            for (int o = 1; o < 32; o <<= 1) {
                unsigned tc = __shfl_up_sync(FULL, pc, o);
                double tm = __shfl_up_sync(FULL, pm, o);
                if (lane >= o) {
                    pc += tc;
                    pm += tm;
                }
            }
            double tgt = target;
            int status = -1;
            if (level == 0) {
                tgt = mode == CUT_COUNT ? (double)count : frac * tot_m;
                if (mode == CUT_COUNT && (double)tot_c < tgt)
                    status = CUT_NONE;
                else if (tot_c <= CAP)
                    status = CUT_FITS;
            }
            bool hit = mode == CUT_COUNT ? above_cnt + (double)pc >= tgt
                                         : reaches(above_mass + pm, tgt, strict);
            unsigned hits = __ballot_sync(FULL, hit && cnt > 0);
            unsigned nonempty = __ballot_sync(FULL, cnt > 0);
            int b = hits ? __ffs(hits) - 1 : (nonempty ? 31 - __clz(nonempty) : 0);
            unsigned bc = __shfl_sync(FULL, cnt, b);
            unsigned pc_b = __shfl_sync(FULL, pc, b);
            double pm_b = __shfl_sync(FULL, pm, b), m_b = __shfl_sync(FULL, mass, b);
            if (lane == 0) {
                sh.red_d[0] = tgt;
                sh.red_d[1] = above_cnt + (double)(pc_b - bc);
                sh.red_d[2] = above_mass + (pm_b - m_b);
                sh.red_c[0] = (u64)status + 1;
                sh.red_c[1] = (u64)b;
                sh.red_c[2] = (u64)bc;
            }
        }
        __syncthreads();
        int status = (int)sh.red_c[0] - 1;
        int b = (int)sh.red_c[1];
        u64 bc = sh.red_c[2];
        target = sh.red_d[0];
        double new_above_cnt = sh.red_d[1], new_above_mass = sh.red_d[2];
        float nhi = sh.bnd[b], nlo = sh.bnd[b + 1];
        __syncthreads();
        if (status == CUT_NONE || status == CUT_FITS)
            return CutResult{status, 0, -1};
        above_cnt = new_above_cnt;
        above_mass = new_above_mass;
        bool stuck = nhi == hi && nlo == lo_excl;
        hi = nhi;
        lo_excl = nlo;
        if (bc <= CAP) {
            int n = compact_sorted<PEN>(r, p, lo_excl, hi, sh);
            int i;
            if (mode == CUT_COUNT) {
                double ac = above_cnt;
                i = first_index(n, [&](int k) { return ac + (double)(k + 1) >= target; }, sh);
            } else {
                scan_mass(n, p.m, sh);
                double am = above_mass;
                i = first_index(n, [&](int k) { return reaches(am + sh.scan[k], target, strict); },
                                sh);
            }
            if (i >= n)
                i = n - 1; /* rounding: the last of the window */
            if (i < 0)
                i = 0;
            u64 key = sh.keys[i];
            long kept = (long)above_cnt + i + 1;
            if (mode == CUT_COUNT) { /* top_k keeps every tie of the k-th value */
                float kv = key_val(key);
                kept = (long)above_cnt +
                       first_index(n, [&](int k) { return key_val(sh.keys[k]) < kv; }, sh);
            }
            return CutResult{CUT_FOUND, key, kept};
        }
        if (stuck)
            break;
    }
    double above = mode == CUT_COUNT ? above_cnt : above_mass;
    return CutResult{CUT_FOUND,
                     bisect_cut<PEN>(r, p, lo_excl, hi, mode, above, target, strict, sh), -1};
}

/* ---- the random path -------------------------------------------------------------------- */

enum { STAGE_TOPK, STAGE_TOPP, STAGE_DRAW };

/*
 * Everything in play fits shared memory: compact it once, then the remaining stages on
 * the sorted set, as the host does them.
 */
template <bool PEN>
__device__ int finish_in_shared(const Row &r, const Play &p, int stage, int top_k, float top_p,
                                double u, Shared &sh)
{
    int n = compact_sorted<PEN>(r, p, -INFINITY, INFINITY, sh);
    if (n == 0)
        return -1;
    if (stage <= STAGE_TOPK && top_k > 0 && n > top_k) {
        float kth = key_val(sh.keys[top_k - 1]);
        n = first_index(n, [&](int k) { return key_val(sh.keys[k]) < kth; }, sh);
    }
    scan_mass(n, p.m, sh);
    if (stage <= STAGE_TOPP && top_p < 1.0f) {
        double target = (double)top_p * sh.scan[n - 1];
        int i = first_index(n, [&](int k) { return sh.scan[k] >= target; }, sh);
        n = i < n ? i + 1 : n;
    }
    double t = u * sh.scan[n - 1];
    int i = first_index(n, [&](int k) { return sh.scan[k] > t; }, sh);
    if (i >= n)
        i = n - 1;
    return key_id(sh.keys[i]);
}

template <bool PEN>
__device__ int sample_random(const Row &r, float t, int top_k, float top_p, float min_p,
                             double u, Shared &sh)
{
    float m = -INFINITY;
    auto fm = [&](bool ok, float v, int id) {
        if (ok)
            m = fmaxf(m, v / t);
    };
    visit<PEN>(r, fm);
    m = block_max_f(m, sh);
    if (m == -INFINITY)
        return 0; /* all masked: the host's raw argmax of an all -inf row */
    Play p = {t, m, -INFINITY, 0};
    if (min_p > 0.0f) {
        p.lo = m + logf(min_p);
        if (p.lo > m)
            p.lo = m;
    }
    if (top_k > 0) {
        CutResult c = find_cut<PEN>(r, p, CUT_COUNT, top_k, 0.0, false, sh);
        if (c.status == CUT_FITS)
            return finish_in_shared<PEN>(r, p, STAGE_TOPK, top_k, top_p, u, sh);
        if (c.status == CUT_FOUND) {
            float kth = key_val(c.key);
            if (kth > p.lo)
                p.lo = kth;
            /* the kept set fits: no histogram pass for the later cuts */
            if (c.n_kept >= 0 && c.n_kept <= CAP)
                return finish_in_shared<PEN>(r, p, STAGE_TOPP, 0, top_p, u, sh);
        }
    }
    if (top_p < 1.0f) {
        CutResult c = find_cut<PEN>(r, p, CUT_MASS, 0, (double)top_p, false, sh);
        if (c.status == CUT_FITS)
            return finish_in_shared<PEN>(r, p, STAGE_TOPP, 0, top_p, u, sh);
        p.rkey = c.key;
        if (c.n_kept >= 0 && c.n_kept <= CAP)
            return finish_in_shared<PEN>(r, p, STAGE_DRAW, 0, 1.0f, u, sh);
    }
    CutResult c = find_cut<PEN>(r, p, CUT_MASS, 0, u, true, sh);
    if (c.status == CUT_FITS)
        return finish_in_shared<PEN>(r, p, STAGE_DRAW, 0, 1.0f, u, sh);
    return key_id(c.key);
}

template <bool PEN> __device__ int sample_greedy(const Row &r, Shared &sh)
{
    u64 best = 0;
    auto f = [&](bool ok, float v, int id) {
        if (ok) {
            u64 k = key_of(v, id);
            best = k > best ? k : best;
        }
    };
    visit<PEN>(r, f);
    best = block_max_key(best, sh);
    if (key_val(best) == -INFINITY)
        return 0; /* all masked: the raw argmax of an all -inf row */
    return key_id(best);
}

/* ---- the kernel ------------------------------------------------------------------------- */

__global__ void __launch_bounds__(THREADS)
    sample_kernel(const float *logits, int V, const struct pl_cuk_sample_row *rows,
                  const int32_t *pen_ids, const int32_t *pen_cnt, float *pen_val,
                  const unsigned *masks, struct pl_cuk_sample_out *out)
{
    __shared__ Shared sh;
    extern __shared__ unsigned bitmap[];
    const struct pl_cuk_sample_row R = rows[blockIdx.x];
    const float *x = logits + (size_t)R.logits_row * (size_t)V;
    const unsigned *mask =
        R.mask_row >= 0 ? masks + (size_t)R.mask_row * (size_t)((V + 31) / 32) : nullptr;
    Row row = {x, V, pen_ids + R.pen_off, pen_val + R.pen_off, R.pen_n, bitmap, mask};

    if (R.pen_n > 0) {
        for (int i = threadIdx.x; i < (V + 31) / 32; i += THREADS)
            bitmap[i] = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < R.pen_n; j += THREADS) {
            int id = row.pen_ids[j];
            int c = pen_cnt[R.pen_off + j];
            float v = sanitize(x[id]);
            if (R.rep != 1.0f)
                v = v > 0.0f ? v / R.rep : v * R.rep;
            if ((R.freq != 0.0f || R.pres != 0.0f) && c > 0) {
                v -= R.freq * (float)c;
                v -= R.pres;
            }
            pen_val[R.pen_off + j] = v;
            atomicOr(&bitmap[id >> 5], 1u << (id & 31));
        }
        __syncthreads();
    }

    int tok;
    bool pen = R.pen_n > 0;
    if (R.temperature < GREEDY_EPS)
        tok = pen ? sample_greedy<true>(row, sh) : sample_greedy<false>(row, sh);
    else
        tok = pen ? sample_random<true>(row, R.temperature, R.top_k, R.top_p, R.min_p, R.u, sh)
                  : sample_random<false>(row, R.temperature, R.top_k, R.top_p, R.min_p, R.u, sh);
    if (tok < 0)
        tok = 0;

    struct pl_cuk_sample_out *o = &out[blockIdx.x];
    if (R.n_logprobs < 0) {
        if (threadIdx.x == 0) {
            o->token = tok;
            o->logprob = 0.0f;
            o->rank = 0;
            o->n_top = 0;
        }
        return;
    }
    /* raw logprobs (before any mask, as the host): top-n rounds, then log-sum-exp and rank
     * in one pass */
    row.mask = nullptr;
    u64 prev = ~0ull;
    float mx = -INFINITY;
    for (int k = 0; k < R.n_logprobs; k++) {
        u64 best = 0;
        auto f = [&](bool ok, float v, int id) {
            if (ok) {
                u64 kk = key_of(v, id);
                if (kk < prev && kk > best)
                    best = kk;
            }
        };
        visit<false>(row, f);
        best = block_max_key(best, sh);
        if (threadIdx.x == 0)
            o->top_ids[k] = key_id(best);
        if (k == 0)
            mx = key_val(best);
        prev = best;
    }
    if (R.n_logprobs == 0) {
        float m = -INFINITY;
        auto f = [&](bool ok, float v, int id) {
            if (ok)
                m = fmaxf(m, v);
        };
        visit<false>(row, f);
        mx = block_max_f(m, sh);
    }
    const float xt = sanitize(x[tok]);
    double s = 0.0;
    u64 rank = 0;
    auto f = [&](bool ok, float v, int id) {
        if (ok) {
            if (mx > -INFINITY)
                s += (double)expf(v - mx);
            rank += v >= xt;
        }
    };
    visit<false>(row, f);
    s = block_sum_d(s, sh);
    rank = block_sum_c(rank, sh);
    if (threadIdx.x == 0) {
        double lse = mx > -INFINITY ? (double)mx + log(s) : -INFINITY;
        o->token = tok;
        o->logprob = (float)((double)xt - lse);
        o->rank = (int32_t)rank;
        o->n_top = R.n_logprobs;
        for (int k = 0; k < R.n_logprobs; k++)
            o->top_lp[k] = (float)((double)sanitize(x[o->top_ids[k]]) - lse);
    }
}

extern "C" int pl_cuk_sample(pl_cuda_stream s, const float *logits, int vocab,
                             const struct pl_cuk_sample_row *rows, int n_rows,
                             const int32_t *pen_ids, const int32_t *pen_cnt, float *pen_val,
                             const uint32_t *masks, struct pl_cuk_sample_out *out)
{
    if (n_rows <= 0)
        return 0;
    if (vocab <= 0 || vocab > PL_CUK_SAMPLE_MAX_VOCAB)
        return (int)cudaErrorInvalidValue;
    size_t bitmap_bytes = (size_t)(vocab + 31) / 32 * 4;
    static bool attr_set;
    if (!attr_set) {
        cudaError_t e = cudaFuncSetAttribute(sample_kernel,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)(PL_CUK_SAMPLE_MAX_VOCAB / 8));
        if (e != cudaSuccess)
            return (int)e;
        attr_set = true;
    }
    sample_kernel<<<n_rows, THREADS, bitmap_bytes, (cudaStream_t)s>>>(logits, vocab, rows, pen_ids,
                                                                     pen_cnt, pen_val,
                                                                     (const unsigned *)masks, out);
    return (int)cudaGetLastError();
}
