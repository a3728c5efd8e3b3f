/*
 * mma.cuh -- the tensor-core building blocks the CUDA kernels share (device code only):
 * shared-memory addresses, cp.async copies (16 and 4 bytes), ldmatrix and mma.sync
 * m16n8k16 in bf16 with fp32 accumulators.
 *
 * Fragment layouts (PTX ISA, mma.m16n8k16 and ldmatrix), lane = 4 g + tq:
 *   A (16x16): a0 (row g, k 2tq..2tq+1), a1 (row g+8), a2 (k + 8), a3 (row g+8, k + 8)
 *   B (16x8):  b0 (k 2tq..2tq+1, col g), b1 (k + 8)
 *   C (16x8):  c0 c1 (row g, cols 2tq, 2tq+1), c2 c3 (row g+8)
 * ldmatrix.x4: lane l gives the address of row (l % 8) of matrix l / 8; matrix i
 * lands in register i, thread t holding row t / 4, columns 2(t % 4), +1 (or the
 * transpose with .trans).
 */
#ifndef PL_BACKEND_CUDA_MMA_CUH
#define PL_BACKEND_CUDA_MMA_CUH

#include <cuda_bf16.h>
#include <stdint.h>

static __device__ __forceinline__ uint32_t smem_addr(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* 16-byte global -> shared copy; copies nothing and zero-fills when !ok (src
 * must still be a valid address). */
static __device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

/* 4-byte global -> shared copy through L1 (src and dst 4-byte aligned), zero-filling
 * when !ok like cp_async16. */
static __device__ __forceinline__ void cp_async4(uint32_t dst, const void *src, bool ok)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
                 "r"(ok ? 4 : 0)
                 : "memory");
}

static __device__ __forceinline__ void cp_async_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

static __device__ __forceinline__ void cp_async_wait_all(void)
{
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

/* Wait until at most N committed groups are still in flight. */
template <int N> static __device__ __forceinline__ void cp_async_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* d[16x8] += a[16x16] (row) * b[16x8] (col), bf16 in, fp32 accumulate. */
static __device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0,
                                                uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

#endif
