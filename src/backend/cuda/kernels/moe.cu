/*
 * moe.cu -- the device side of the CUDA moe op (host side: cuda_moe.c).
 *
 * Owns: routing (softmax over the router logits in fp32, top-k with ties to the
 * lower expert id, renormalisation), the grouping of (token, choice) entries by
 * expert, and the weighted combination of the experts' outputs. Rules: backend.h
 * (struct pl_moe_args), the same as the CPU reference's.
 * Determinism: entries are placed into their expert's group with atomics, so the
 * order inside a group depends on timing; every output row of the experts' GEMMs
 * depends on its own input row only, and the combination reads a token's choices
 * in choice order, so the result does not.
 */
#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <float.h>
#include <math.h>

static int launch_status(void) { return (int)cudaGetLastError(); }

/* One warp per token: probs over `E` experts into logits (in place), the top k
 * into ids / w, and counts[expert]++ for each choice. */
__global__ void moe_route_kernel(float *logits, int n, int E, int k, int norm, int32_t *ids,
                                 float *w, int32_t *counts)
{
    const int t = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, lane = threadIdx.x & 31;
    if (t >= n)
        return;
    float *p = logits + (int64_t)t * E;
    float mx = -FLT_MAX;
    for (int e = lane; e < E; e += 32)
        mx = fmaxf(mx, p[e]);
    for (int o = 16; o > 0; o >>= 1)
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    float sum = 0.0f;
    for (int e = lane; e < E; e += 32) {
        float v = expf(p[e] - mx);
        p[e] = v;
        sum += v;
    }
    for (int o = 16; o > 0; o >>= 1)
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    __syncwarp();
    for (int e = lane; e < E; e += 32)
        p[e] /= sum;
    __syncwarp();
    float wsum = 0.0f;
    for (int i = 0; i < k; i++) {
        float bp = -1.0f;
        int be = 0x7fffffff;
        for (int e = lane; e < E; e += 32)
            if (p[e] > bp || (p[e] == bp && e < be)) {
                bp = p[e];
                be = e;
            }
        for (int o = 16; o > 0; o >>= 1) {
            float op = __shfl_xor_sync(0xffffffffu, bp, o);
            int oe = __shfl_xor_sync(0xffffffffu, be, o);
            if (op > bp || (op == bp && oe < be)) {
                bp = op;
                be = oe;
            }
        }
        /* only NaN probabilities (an overflowed hidden state) leave no candidate: take
         * expert i rather than an id past the expert tables and the counts */
        if (be >= E)
            be = i;
        if (lane == 0) {
            ids[t * k + i] = be;
            w[t * k + i] = bp;
            p[be] = -2.0f; /* taken (probabilities are >= 0) */
            atomicAdd(&counts[be], 1);
        }
        wsum += bp;
        __syncwarp();
    }
    if (norm && lane == 0)
        for (int i = 0; i < k; i++)
            w[t * k + i] /= wsum;
}

/* One block: offsets = exclusive scan of counts, cursor = offsets. */
__global__ void moe_scan_kernel(const int32_t *counts, int E, int32_t *offsets, int32_t *cursor)
{
    if (threadIdx.x != 0)
        return;
    int acc = 0;
    for (int e = 0; e < E; e++) {
        offsets[e] = acc;
        cursor[e] = acc;
        acc += counts[e];
    }
}

/* Entry i (token i / k, choice i % k) gets row pos of its expert's group:
 * src[pos] = token, inv[i] = pos. */
__global__ void moe_place_kernel(const int32_t *ids, int n_entries, int k, int32_t *cursor,
                                 int32_t *src, int32_t *inv)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n_entries)
        return;
    const int pos = atomicAdd(&cursor[ids[i]], 1);
    src[pos] = i / k;
    inv[i] = pos;
}

/* out[t] = sum_i w[t, i] * y[inv[t, i]] (+ sigmoid(gl[t]) * sh[t]), fp32 sums in choice
 * order, rounded once. */
static __device__ __forceinline__ float ldf(__nv_bfloat16 v) { return __bfloat162float(v); }
static __device__ __forceinline__ float ldf(float v) { return v; }
static __device__ __forceinline__ void stf(__nv_bfloat16 *p, float f) { *p = __float2bfloat16(f); }
static __device__ __forceinline__ void stf(float *p, float f) { *p = f; }

template <typename T>
__global__ void moe_combine_kernel(T *out, const T *y, const float *w, const int32_t *inv, int k,
                                   int hidden, const float *gl, const T *sh)
{
    const int t = blockIdx.x;
    __shared__ int rows[64];
    __shared__ float ws[64];
    __shared__ float gate;
    if (threadIdx.x < k) {
        rows[threadIdx.x] = inv[t * k + threadIdx.x];
        ws[threadIdx.x] = w[t * k + threadIdx.x];
    }
    if (threadIdx.x == 0)
        gate = gl ? 1.0f / (1.0f + expf(-gl[t])) : 0.0f;
    __syncthreads();
    for (int d = threadIdx.x; d < hidden; d += blockDim.x) {
        float acc = 0.0f;
        for (int i = 0; i < k; i++)
            acc += ws[i] * ldf(y[(int64_t)rows[i] * hidden + d]);
        if (sh)
            acc += gate * ldf(sh[(int64_t)t * hidden + d]);
        stf(&out[(int64_t)t * hidden + d], acc);
    }
}

extern "C" int pl_cuk_moe_route(pl_cuda_stream s, float *logits, int n, int n_experts, int top_k,
                                int norm_topk_prob, int32_t *ids, float *w, int32_t *counts)
{
    if (n <= 0)
        return 0;
    cudaError_t e = cudaMemsetAsync(counts, 0, sizeof(int32_t) * (size_t)n_experts, s);
    if (e != cudaSuccess)
        return (int)e;
    const int warps = 8;
    moe_route_kernel<<<(n + warps - 1) / warps, warps * 32, 0, s>>>(logits, n, n_experts, top_k,
                                                                   norm_topk_prob, ids, w, counts);
    return launch_status();
}

extern "C" int pl_cuk_moe_group(pl_cuda_stream s, const int32_t *ids, const int32_t *counts,
                                int n_entries, int n_experts, int top_k, int32_t *offsets,
                                int32_t *cursor, int32_t *src, int32_t *inv)
{
    if (n_entries <= 0)
        return 0;
    moe_scan_kernel<<<1, 32, 0, s>>>(counts, n_experts, offsets, cursor);
    moe_place_kernel<<<(n_entries + 255) / 256, 256, 0, s>>>(ids, n_entries, top_k, cursor, src,
                                                             inv);
    return launch_status();
}

extern "C" int pl_cuk_moe_place(pl_cuda_stream s, const int32_t *ids, int n_entries, int top_k,
                                int32_t *cursor, int32_t *src, int32_t *inv)
{
    if (n_entries <= 0)
        return 0;
    moe_place_kernel<<<(n_entries + 255) / 256, 256, 0, s>>>(ids, n_entries, top_k, cursor, src,
                                                             inv);
    return launch_status();
}

extern "C" int pl_cuk_moe_combine(pl_cuda_stream s, void *out, const void *y, const float *w,
                                  const int32_t *inv, int n, int top_k, int hidden,
                                  const float *shared_gate_logit, const void *shared_out)
{
    if (n <= 0)
        return 0;
    if (top_k > 64)
        return (int)cudaErrorInvalidValue;
    moe_combine_kernel<<<n, 256, 0, s>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)y, w, inv,
                                         top_k, hidden, shared_gate_logit,
                                         (const __nv_bfloat16 *)shared_out);
    return launch_status();
}

extern "C" int pl_cuk_moe_combine_f32(pl_cuda_stream s, void *out, const void *y, const float *w,
                                      const int32_t *inv, int n, int top_k, int hidden,
                                      const float *shared_gate_logit, const void *shared_out)
{
    if (n <= 0)
        return 0;
    if (top_k > 64)
        return (int)cudaErrorInvalidValue;
    moe_combine_kernel<<<n, 256, 0, s>>>((float *)out, (const float *)y, w, inv, top_k, hidden,
                                         shared_gate_logit, (const float *)shared_out);
    return launch_status();
}
