/*
 * cuda_profile.c -- per-op GPU time of the CUDA backend (PAGELLM_CUDA_PROFILE=1).
 *
 * Owns: struct pl_cuda_profile, a ring of CUDA events recorded on the backend's
 * stream before every op (and graph replay), the per-label totals, and the
 * table printed when the backend is destroyed. The time of op i is the time
 * from its event to the next one, so it includes any gap in which the GPU
 * waited for the host's next launch: in eager mode that gap is launch
 * overhead, which is the point of comparing with graph replays. Labels are
 * formatted ("matmul 6144x4096 n=1") and interned; at most MAX_LABELS.
 * Invariant: events are read only after the stream was synchronised
 * (pl_cuda_profile_flush is called from the backend's sync).
 */
#include "backend/cuda/cuda_backend.h"
#include "util/debug_env.h"

#include "util/log.h"

#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 4096
#define MAX_LABELS 128
#define LABEL_LEN 48

struct pl_cuda_profile {
    cudaStream_t stream;
    cudaEvent_t ev[MAX_EVENTS + 1];
    int label_of[MAX_EVENTS];
    int n;
    char labels[MAX_LABELS][LABEL_LEN];
    double ms[MAX_LABELS];
    long calls[MAX_LABELS];
    int n_labels;
};

struct pl_cuda_profile *pl_cuda_profile_new(void *stream)
{
    struct pl_debug_env dbg;
    pl_debug_env_read(&dbg);
    if (!dbg.cuda_profile)
        return NULL;
    struct pl_cuda_profile *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->stream = (cudaStream_t)stream;
    for (int i = 0; i <= MAX_EVENTS; i++)
        if (cudaEventCreate(&p->ev[i]) != cudaSuccess) {
            cudaGetLastError();
            pl_cuda_profile_free(p);
            return NULL;
        }
    return p;
}

static int intern(struct pl_cuda_profile *p, const char *label)
{
    for (int i = 0; i < p->n_labels; i++)
        if (!strcmp(p->labels[i], label))
            return i;
    if (p->n_labels == MAX_LABELS)
        return MAX_LABELS - 1; /* the last label collects the overflow */
    snprintf(p->labels[p->n_labels], LABEL_LEN, "%s", label);
    return p->n_labels++;
}

void pl_cuda_profile_flush(struct pl_cuda_profile *p)
{
    if (!p || p->n == 0)
        return;
    cudaEventRecord(p->ev[p->n], p->stream);
    cudaEventSynchronize(p->ev[p->n]);
    for (int i = 0; i < p->n; i++) {
        float ms = 0.0f;
        if (cudaEventElapsedTime(&ms, p->ev[i], p->ev[i + 1]) == cudaSuccess) {
            p->ms[p->label_of[i]] += ms;
            p->calls[p->label_of[i]]++;
        }
    }
    cudaGetLastError();
    p->n = 0;
}

void pl_cuda_profile_mark(struct pl_cuda_profile *p, const char *fmt, ...)
{
    if (!p)
        return;
    if (p->n == MAX_EVENTS)
        pl_cuda_profile_flush(p);
    char label[LABEL_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(label, sizeof(label), fmt, ap);
    va_end(ap);
    p->label_of[p->n] = intern(p, label);
    cudaEventRecord(p->ev[p->n], p->stream);
    p->n++;
}

void pl_cuda_profile_free(struct pl_cuda_profile *p)
{
    if (!p)
        return;
    pl_cuda_profile_flush(p);
    double total = 0.0;
    for (int i = 0; i < p->n_labels; i++)
        total += p->ms[i];
    int order[MAX_LABELS];
    for (int i = 0; i < p->n_labels; i++)
        order[i] = i;
    for (int i = 1; i < p->n_labels; i++) /* insertion sort by time, descending */
        for (int j = i; j > 0 && p->ms[order[j]] > p->ms[order[j - 1]]; j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    PL_INFO("cuda profile: %.1f ms of GPU time between op starts (incl. launch gaps)", total);
    for (int k = 0; k < p->n_labels; k++) {
        int i = order[k];
        if (p->calls[i] == 0)
            continue;
        PL_INFO("  %-40s %8ld calls %10.2f ms %5.1f%% %9.1f us/call", p->labels[i], p->calls[i],
                p->ms[i], total > 0 ? 100.0 * p->ms[i] / total : 0.0,
                1e3 * p->ms[i] / (double)p->calls[i]);
    }
    for (int i = 0; i <= MAX_EVENTS; i++)
        if (p->ev[i])
            cudaEventDestroy(p->ev[i]);
    free(p);
}
