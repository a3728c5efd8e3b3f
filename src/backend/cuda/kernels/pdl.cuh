/*
 * pdl.cuh -- programmatic dependent launch (Hopper and later) for the decode path's kernels.
 *
 * Owns: the launch helper pdl_launch and the two device calls every kernel it launches
 * makes first. A kernel launched with the programmatic-serialization attribute may be
 * scheduled while the kernel before it on the stream is still finishing: its CTAs are
 * placed on the SMs the earlier grid frees, so the launch latency and the ramp of one
 * small kernel overlap the tail of the previous one (at batch 1 a decode step is a few
 * hundred kernels of a few microseconds each). Correctness rests on one rule:
 *
 *   a kernel launched by pdl_launch calls pdl_enter() before it touches global memory.
 *
 * pdl_enter waits (griddepcontrol.wait) until every grid it depends on has completed and
 * its writes are visible, exactly what stream order gives, and then allows the next
 * kernel to be launched early (griddepcontrol.launch_dependents), which itself waits the
 * same way. Kernels launched without the attribute (cuBLASLt's, memcpys) keep ordinary
 * stream order on both sides. CUDA graphs captured from the stream keep these edges.
 * The attribute is used only when pl_cuk_pdl_on is set (the backend sets it for compute
 * capability 9.0 and up unless PAGELLM_CUDA_PDL=0); on older cards both instructions are
 * compiled out.
 */
#ifndef PL_BACKEND_CUDA_PDL_CUH
#define PL_BACKEND_CUDA_PDL_CUH

#include <cuda_runtime.h>

extern "C" int pl_cuk_pdl_on; /* elementwise.cu; set by pl_cuk_set_pdl */

static __device__ __forceinline__ void pdl_enter(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* kernel<<<grid, block, smem, stream>>>(args...), with programmatic serialization allowed
 * when pl_cuk_pdl_on. The kernel must begin with pdl_enter(). */
template <typename... P, typename... A>
static inline void pdl_launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                              cudaStream_t stream, A... args)
{
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    if (pl_cuk_pdl_on) {
        attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attr[0].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
    }
    cudaLaunchKernelEx(&cfg, kernel, static_cast<P>(args)...);
}

#endif
