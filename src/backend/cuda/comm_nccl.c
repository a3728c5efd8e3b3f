/*
 * comm_nccl.c -- the NCCL communicator of the CUDA backend (see backend/comm.h),
 * with NCCL loaded at run time.
 *
 * Owns: finding and loading libnccl.so.2 (dlopen), the handful of NCCL C
 * declarations pagellm uses (NCCL's C ABI is stable across 2.x: the enum values
 * and signatures below are those of nccl.h), the group's communicators
 * (ncclCommInitAll: one process, one communicator per device) and the
 * all-reduce, enqueued on the rank's backend stream, so that it runs in order
 * with the ops around it and is recorded into the decode graphs like any op.
 * Why dlopen: Debian has no NCCL package, and the GPU machines carry NCCL inside
 * PyTorch's pip wheels (nvidia-nccl-cu*); linking at build time would make the
 * binary unusable where NCCL is absent even at TP=1.
 * Where it looks, in order: $PAGELLM_NCCL_LIBRARY (a path), the dynamic loader's
 * search (libnccl.so.2: LD_LIBRARY_PATH, ldconfig), then, as a documented
 * fallback, the nvidia-nccl wheels of Python installations
 * (<prefix>/lib/python3.X/{site,dist}-packages/nvidia/nccl/lib/libnccl.so.2).
 * Failure handling: an NCCL error is recorded on the rank (and on its backend,
 * so the forward's sync fails with NCCL's words); pl_comm_group_abort calls
 * ncclCommAbort on every communicator, which ends collectives stuck waiting
 * for a dead rank. NCCL itself has no timeout: the model runner's step deadline
 * calls the abort (docs/parallel.md).
 */
#include "backend/comm_impl.h"
#include "backend/cuda/cuda_backend.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the NCCL C ABI (nccl.h, 2.x) ---------------------------------------------------- */

typedef struct ncclComm *ncclComm_t;
typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7
} ncclResult_t;
typedef enum { ncclFloat16 = 6, ncclFloat32 = 7, ncclBfloat16 = 9 } ncclDataType_t;
typedef enum { ncclSum = 0 } ncclRedOp_t;

struct nccl_api {
    void *lib;
    char path[1024];
    int version;
    ncclResult_t (*GetVersion)(int *);
    const char *(*GetErrorString)(ncclResult_t);
    ncclResult_t (*CommInitAll)(ncclComm_t *, int, const int *);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    ncclResult_t (*CommAbort)(ncclComm_t);
    ncclResult_t (*CommGetAsyncError)(ncclComm_t, ncclResult_t *);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t,
                              ncclComm_t, cudaStream_t);
    ncclResult_t (*Send)(const void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Recv)(void *, size_t, ncclDataType_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
};

static struct nccl_api g_nccl;
static pthread_mutex_t g_nccl_mu = PTHREAD_MUTEX_INITIALIZER;

/* The wheels' layout: nvidia/nccl/lib (nvidia-nccl-cu12) and nvidia/cu13/lib (cu13). */
static const char *const WHEEL_GLOBS[] = {
    "/usr/local/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
    "/usr/local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
    "/usr/lib/python3*/dist-packages/nvidia/nccl/lib/libnccl.so.2",
    "/usr/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
    "/opt/conda/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
    "/usr/local/lib/python3*/dist-packages/nvidia/cu*/lib/libnccl.so.2",
    "/usr/local/lib/python3*/site-packages/nvidia/cu*/lib/libnccl.so.2",
};

static void *try_open(const char *path, char *tried, size_t cap)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    size_t at = strlen(tried);
    if (!h && at + 4 < cap)
        snprintf(tried + at, cap - at, "%s%s", at ? ", " : "", path);
    return h;
}

/* Globs pattern (with $HOME or $VIRTUAL_ENV in front when prefix is set). */
static void *try_glob(const char *prefix, const char *pattern, char *path, size_t path_cap,
                      char *tried, size_t cap)
{
    char pat[1024];
    snprintf(pat, sizeof(pat), "%s%s", prefix ? prefix : "", pattern);
    glob_t gl;
    void *h = NULL;
    if (glob(pat, 0, NULL, &gl) == 0) {
        for (size_t i = gl.gl_pathc; i-- > 0 && !h;) /* the newest Python first */
            if ((h = try_open(gl.gl_pathv[i], tried, cap)))
                snprintf(path, path_cap, "%s", gl.gl_pathv[i]);
        globfree(&gl);
    }
    return h;
}

static pl_status nccl_load(struct pl_err *err)
{
    pthread_mutex_lock(&g_nccl_mu);
    if (g_nccl.lib) {
        pthread_mutex_unlock(&g_nccl_mu);
        return PL_STATUS_OK;
    }
    char tried[2048] = "";
    char path[1024] = "";
    void *h = NULL;
    const char *env = getenv("PAGELLM_NCCL_LIBRARY");
    if (env && env[0]) {
        if ((h = try_open(env, tried, sizeof(tried))))
            snprintf(path, sizeof(path), "%s", env);
    } else {
        if ((h = try_open("libnccl.so.2", tried, sizeof(tried))))
            snprintf(path, sizeof(path), "libnccl.so.2 (the loader's path)");
        for (size_t i = 0; !h && i < sizeof(WHEEL_GLOBS) / sizeof(WHEEL_GLOBS[0]); i++)
            h = try_glob(NULL, WHEEL_GLOBS[i], path, sizeof(path), tried, sizeof(tried));
        const char *home = getenv("HOME"), *venv = getenv("VIRTUAL_ENV");
        if (!h && venv)
            h = try_glob(venv, "/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2", path,
                         sizeof(path), tried, sizeof(tried));
        if (!h && home)
            h = try_glob(home, "/.local/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.2",
                         path, sizeof(path), tried, sizeof(tried));
    }
    if (!h) {
        pthread_mutex_unlock(&g_nccl_mu);
        return pl_err_set(err, PL_STATUS_UNSUPPORTED,
                          "tensor parallelism on CUDA needs NCCL (libnccl.so.2), which was not "
                          "found (tried %s): install NVIDIA's libnccl2, or pip's nvidia-nccl-cu12, "
                          "or set PAGELLM_NCCL_LIBRARY to the library's path",
                          tried[0] ? tried : "nothing");
    }
    struct nccl_api a = {.lib = h};
    snprintf(a.path, sizeof(a.path), "%s", path);
#define SYM(field, name)                                                                      \
    do {                                                                                      \
        *(void **)&a.field = dlsym(h, name);                                                  \
        if (!a.field) {                                                                       \
            dlclose(h);                                                                       \
            pthread_mutex_unlock(&g_nccl_mu);                                                 \
            return pl_err_set(err, PL_STATUS_UNSUPPORTED, "NCCL at %s has no %s", path, name); \
        }                                                                                     \
    } while (0)
    SYM(GetVersion, "ncclGetVersion");
    SYM(GetErrorString, "ncclGetErrorString");
    SYM(CommInitAll, "ncclCommInitAll");
    SYM(CommDestroy, "ncclCommDestroy");
    SYM(CommAbort, "ncclCommAbort");
    SYM(CommGetAsyncError, "ncclCommGetAsyncError");
    SYM(AllReduce, "ncclAllReduce");
    SYM(Send, "ncclSend");
    SYM(Recv, "ncclRecv");
    SYM(GroupStart, "ncclGroupStart");
    SYM(GroupEnd, "ncclGroupEnd");
#undef SYM
    if (a.GetVersion(&a.version) != ncclSuccess)
        a.version = 0;
    g_nccl = a; /* kept loaded for the life of the process */
    pthread_mutex_unlock(&g_nccl_mu);
    return PL_STATUS_OK;
}

/* ---- the group ------------------------------------------------------------------------ */

struct nccl_rank {
    ncclComm_t comm;
    bool aborted;
};

static struct nccl_rank *nr(struct pl_comm *c) { return c->impl; }

static void nccl_all_reduce(struct pl_comm *c, struct pl_backend *be, void *x, size_t n,
                            enum pl_dtype dt)
{
    ncclDataType_t t = dt == PL_DTYPE_BF16 ? ncclBfloat16
                     : dt == PL_DTYPE_F16  ? ncclFloat16
                                           : ncclFloat32;
    if (dt != PL_DTYPE_BF16 && dt != PL_DTYPE_F16 && dt != PL_DTYPE_F32) {
        pl_comm_fail(c, "NCCL all_reduce of %s is not supported", pl_dtype_name(dt));
        return;
    }
    ncclResult_t r = g_nccl.AllReduce(x, x, n, t, ncclSum, nr(c)->comm,
                                      (cudaStream_t)pl_backend_cuda_stream(be));
    if (r != ncclSuccess) {
        ncclResult_t async = ncclSuccess;
        g_nccl.CommGetAsyncError(nr(c)->comm, &async);
        pl_comm_fail(c, "ncclAllReduce: %s%s%s", g_nccl.GetErrorString(r),
                     async != ncclSuccess ? "; asynchronous error: " : "",
                     async != ncclSuccess ? g_nccl.GetErrorString(async) : "");
        pl_cuda_fail(be, "%s", c->msg);
    }
}

/* Rank 0 receives every other rank's buffer (point-to-point in one group call) and copies
 * its own on the stream. */
static void nccl_gather(struct pl_comm *c, struct pl_backend *be, const void *send, void *recv,
                        size_t n, enum pl_dtype dt)
{
    if (dt != PL_DTYPE_F32 && dt != PL_DTYPE_BF16 && dt != PL_DTYPE_F16) {
        pl_comm_fail(c, "NCCL gather of %s is not supported", pl_dtype_name(dt));
        return;
    }
    const ncclDataType_t t = dt == PL_DTYPE_BF16 ? ncclBfloat16
                           : dt == PL_DTYPE_F16  ? ncclFloat16
                                                 : ncclFloat32;
    cudaStream_t s = (cudaStream_t)pl_backend_cuda_stream(be);
    const size_t bytes = n * pl_dtype_size(dt);
    ncclResult_t r = ncclSuccess;
    if (c->rank == 0) {
        cudaError_t e = cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, s);
        if (e != cudaSuccess) {
            pl_comm_fail(c, "gather: %s", cudaGetErrorString(e));
            pl_cuda_fail(be, "%s", c->msg);
            return;
        }
        r = g_nccl.GroupStart();
        for (int k = 1; k < c->group->n && r == ncclSuccess; k++)
            r = g_nccl.Recv((char *)recv + (size_t)k * bytes, n, t, k, nr(c)->comm, s);
        ncclResult_t r2 = g_nccl.GroupEnd();
        if (r == ncclSuccess)
            r = r2;
    } else {
        r = g_nccl.Send(send, n, t, 0, nr(c)->comm, s);
    }
    if (r != ncclSuccess) {
        pl_comm_fail(c, "NCCL gather: %s", g_nccl.GetErrorString(r));
        pl_cuda_fail(be, "%s", c->msg);
    }
}

static void nccl_on_abort(struct pl_comm_group *g)
{
    for (int r = 0; r < g->n; r++) {
        struct nccl_rank *k = g->ranks[r].impl;
        if (k && k->comm && !k->aborted) {
            g_nccl.CommAbort(k->comm);
            k->aborted = true;
        }
    }
}

static void nccl_free_impl(struct pl_comm_group *g)
{
    for (int r = 0; r < g->n; r++) {
        struct nccl_rank *k = g->ranks[r].impl;
        if (k && k->comm && !k->aborted)
            g_nccl.CommDestroy(k->comm);
        free(k);
    }
}

static const struct pl_comm_vt NCCL_VT = {
    .all_reduce = nccl_all_reduce,
    .gather = nccl_gather,
    .on_abort = nccl_on_abort,
    .free_impl = nccl_free_impl,
    .graph_safe = true,
};

static pl_status nccl_group_new(const struct pl_comm_params *p, struct pl_comm_group **out,
                                struct pl_err *err)
{
    pl_status st = nccl_load(err);
    if (st != PL_STATUS_OK)
        return st;
    int n_dev = pl_cuda_device_count();
    int *devs = malloc(sizeof(int) * (size_t)p->n_ranks);
    ncclComm_t *comms = calloc((size_t)p->n_ranks, sizeof(ncclComm_t));
    if (!devs || !comms) {
        free(devs);
        free(comms);
        return pl_err_set(err, PL_STATUS_NO_MEMORY, "communicator: out of memory");
    }
    for (int r = 0; r < p->n_ranks; r++) {
        devs[r] = p->devices ? p->devices[r] : r;
        if (devs[r] < 0 || devs[r] >= n_dev) {
            const char *vis = getenv("CUDA_VISIBLE_DEVICES");
            st = pl_err_set(err, PL_STATUS_INVALID_ARGUMENT,
                            "tensor_parallel_size %d needs %d GPUs, %d visible%s%s%s",
                            p->n_ranks, p->n_ranks, n_dev, vis ? " (CUDA_VISIBLE_DEVICES=" : "",
                            vis ? vis : "", vis ? ")" : "");
            free(devs);
            free(comms);
            return st;
        }
    }
    int prev = 0;
    cudaGetDevice(&prev);
    ncclResult_t r = g_nccl.CommInitAll(comms, p->n_ranks, devs);
    cudaSetDevice(prev);
    free(devs);
    if (r != ncclSuccess) {
        free(comms);
        return pl_err_set(err, PL_STATUS_INTERNAL, "ncclCommInitAll (%d GPUs, NCCL %d at %s): %s",
                          p->n_ranks, g_nccl.version, g_nccl.path, g_nccl.GetErrorString(r));
    }
    st = pl_comm_group_alloc(&NCCL_VT, p, out, err);
    for (int k = 0; st == PL_STATUS_OK && k < p->n_ranks; k++) {
        struct nccl_rank *nk = calloc(1, sizeof(*nk));
        if (!nk) {
            st = pl_err_set(err, PL_STATUS_NO_MEMORY, "communicator: out of memory");
            break;
        }
        nk->comm = comms[k];
        comms[k] = NULL;
        (*out)->ranks[k].impl = nk;
    }
    if (st != PL_STATUS_OK) {
        for (int k = 0; k < p->n_ranks; k++)
            if (comms[k])
                g_nccl.CommDestroy(comms[k]);
        pl_comm_group_free(*out);
        *out = NULL;
    } else {
        snprintf((*out)->desc, sizeof((*out)->desc), "nccl %d.%d.%d (%.160s), %d ranks",
                 g_nccl.version / 10000, g_nccl.version / 100 % 100, g_nccl.version % 100,
                 g_nccl.path, p->n_ranks);
    }
    free(comms);
    return st;
}

const struct pl_comm_impl pl_comm_nccl_impl = {"nccl", nccl_group_new};
